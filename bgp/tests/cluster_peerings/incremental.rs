//! The incremental planner against the full plan: after every replan of a seeded random
//! sequence of events, its configuration and notes are [`plan`]'s for the same model, and its
//! delta applied to the previous configuration gives the new one.

use super::local as local_named;
use margay_bgp::cluster::{Delta, Model, Planner, plan};
use margay_bgp::config::{Config, Neighbor};
use margay_datastore::resources::{
    AsNumber, BgpConfigurationSpec, BgpPassword, BgpPeer, BgpPeerSpec, Node, NodeBgpSpec, NodeSpec,
};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// xorshift64*: a small deterministic generator (the sequences are reproducible by seed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn local() -> margay_bgp::cluster::Local {
    local_named("n0")
}

/// A Node with one IPv4 address.
fn node_with(name: &str, address: &str) -> Node {
    Node::new(
        name,
        NodeSpec {
            bgp: Some(NodeBgpSpec {
                ipv4_address: Some(address.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
}

/// A random Node: an IPv4 address from a small range (so addresses collide now and then), an
/// IPv6 one sometimes, a rack label, sometimes a reflector cluster id or another AS.
fn random_node(rng: &mut Rng, name: &str) -> Node {
    let mut n = Node::new(
        name,
        NodeSpec {
            bgp: Some(NodeBgpSpec {
                ipv4_address: Some(format!("10.0.0.{}/24", 1 + rng.below(40))),
                ipv6_address: (rng.below(4) == 0)
                    .then(|| format!("fd00::{}/64", 1 + rng.below(40))),
                as_number: (rng.below(8) == 0).then_some(AsNumber(65000 + rng.below(2) as u32)),
                route_reflector_cluster_id: (rng.below(10) == 0).then(|| "1.1.1.1".to_string()),
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    n.metadata
        .labels
        .insert("rack".into(), ["a", "b", "c"][rng.below(3) as usize].into());
    n
}

/// BGPPeers of every kind the planner treats apart: a global `peerIP` that is (sometimes) a
/// node's address, a node-specific external one, a `peerSelector` one, and one whose `peerIP`
/// is this node (reverse peerings), one with a password from a missing Secret (a note).
fn peers() -> BTreeMap<String, BgpPeer> {
    let spec = |f: &dyn Fn(&mut BgpPeerSpec)| {
        let mut s = BgpPeerSpec::default();
        f(&mut s);
        s
    };
    let list = [
        (
            "global-node",
            spec(&|s| s.peer_ip = Some("10.0.0.7".into())),
        ),
        (
            "tor",
            spec(&|s| {
                s.node = Some("n0".into());
                s.peer_ip = Some("192.0.2.1".into());
                s.as_number = Some(AsNumber(65100));
            }),
        ),
        (
            "rack-a-to-b",
            spec(&|s| {
                s.node_selector = Some("rack == 'a'".into());
                s.peer_selector = Some("rack == 'b'".into());
            }),
        ),
        (
            "to-me",
            spec(&|s| {
                s.node_selector = Some("rack == 'c'".into());
                s.peer_ip = Some("10.0.0.100".into());
            }),
        ),
        (
            "secret",
            spec(&|s| {
                s.peer_selector = Some("rack == 'c'".into());
                s.password = Some(BgpPassword {
                    secret_key_ref: Some(margay_datastore::resources::SecretKeyRef {
                        name: "missing".into(),
                        key: "k".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
            }),
        ),
    ];
    list.into_iter()
        .map(|(n, s)| (n.to_string(), BgpPeer::new(n, s)))
        .collect()
}

fn me_node() -> Node {
    let mut n = node_with("n0", "10.0.0.100/24");
    n.metadata.labels.insert("rack".into(), "a".into());
    n
}

/// The speaker's view: the previous configuration with `delta` applied.
fn apply_delta(prev: &Config, delta: &Delta) -> Vec<Neighbor> {
    let mut by_addr: BTreeMap<IpAddr, Neighbor> = prev
        .neighbors
        .iter()
        .map(|n| (*n.address.get_ref(), n.clone()))
        .collect();
    for a in &delta.removed {
        assert!(by_addr.remove(a).is_some(), "removed {a}, never planned");
    }
    for n in &delta.changed {
        by_addr.insert(*n.address.get_ref(), n.clone());
    }
    by_addr.into_values().collect()
}

fn check_sequence(seed: u64, with_peers: bool, steps: usize) {
    let mut rng = Rng(seed);
    let mut model = Model::default();
    model.nodes.insert("n0".into(), me_node());
    for i in 1..30 {
        let name = format!("n{i}");
        model
            .nodes
            .insert(name.clone(), random_node(&mut rng, &name));
    }
    if with_peers {
        model.peers = peers();
    }
    let mut planner = Planner::new(model, local());
    let first = planner.replan().expect("the first plan");
    assert!(first.head_changed);
    let mut prev = planner.config().expect("planned");
    for step in 0..steps {
        // Mostly Node events (the incremental path), now and then anything else.
        let events = 1 + rng.below(3);
        for _ in 0..events {
            let name = format!("n{}", 1 + rng.below(40));
            match rng.below(20) {
                0..=9 => {
                    let n = random_node(&mut rng, &name);
                    planner.set_node(&name, Some(n));
                }
                10..=15 => planner.set_node(&name, None),
                16 => {
                    let mut me = me_node();
                    if rng.below(2) == 0 {
                        me.metadata.labels.insert("rack".into(), "c".into());
                    }
                    planner.set_node("n0", Some(me));
                }
                17 => {
                    let mesh = rng.below(3) != 0;
                    planner.edit().bgp = Some(BgpConfigurationSpec {
                        node_to_node_mesh_enabled: Some(mesh),
                        ..Default::default()
                    });
                }
                18 if with_peers => {
                    let m = planner.edit();
                    if m.peers.remove("rack-a-to-b").is_none() {
                        m.peers = peers();
                    }
                }
                _ => planner.replan_all(),
            }
        }
        let delta = planner.replan().expect("n0 always has an address");
        let full = plan(planner.model(), &local()).expect("the full plan");
        let got = planner.config().expect("planned");
        assert_eq!(
            got, full.config,
            "seed {seed} step {step}: incremental and full plans differ"
        );
        assert_eq!(
            planner.notes(),
            full.notes,
            "seed {seed} step {step}: notes"
        );
        if !delta.head_changed {
            assert_eq!(
                apply_delta(&prev, &delta),
                got.neighbors,
                "seed {seed} step {step}: the delta does not lead to the plan"
            );
        }
        prev = got;
    }
}

#[test]
fn incremental_plan_equals_full_plan_after_random_node_events_in_a_mesh() {
    for seed in 1..=20 {
        check_sequence(seed * 7919, false, 200);
    }
}

#[test]
fn incremental_plan_equals_full_plan_with_selector_reverse_and_node_ip_peers() {
    for seed in 1..=20 {
        check_sequence(seed * 104_729, true, 200);
    }
}

#[test]
fn a_node_event_changes_only_that_nodes_session() {
    let mut model = Model::default();
    model.nodes.insert("n0".into(), me_node());
    for i in 1..=100 {
        let name = format!("n{i}");
        let n = node_with(&name, &format!("10.1.{}.{}/16", i / 200, i % 200 + 1));
        model.nodes.insert(name, n);
    }
    let mut planner = Planner::new(model, local());
    assert_eq!(planner.replan().unwrap().changed.len(), 100);
    planner.set_node("n101", Some(node_with("n101", "10.2.0.1/16")));
    let d = planner.replan().unwrap();
    assert!(!d.head_changed);
    assert_eq!(d.changed.len(), 1);
    assert_eq!(d.changed[0].address.get_ref().to_string(), "10.2.0.1");
    assert!(d.removed.is_empty());
    planner.set_node("n101", None);
    let d = planner.replan().unwrap();
    assert_eq!(d.removed, vec!["10.2.0.1".parse::<IpAddr>().unwrap()]);
    assert!(d.changed.is_empty() && !d.head_changed);
    // Nothing changed: nothing to tell the speaker.
    assert!(planner.replan().unwrap().is_empty());
}
