//! IPAM's routes kept change by change against [`super::super::ipam_routes::remote_routes`] of
//! the whole state, over seeded random bursts of watch events fed through the datastore feed's
//! own handlers (so the keys its change log records are checked too): Nodes with and without
//! addresses of each family, this node's among them; blocks of both families, claimed twice,
//! under a key of another node or undecodable; pods borrowing addresses, moving between nodes;
//! nested, disabled and non-VXLAN pools; resyncs.

use super::*;
use crate::changelog::Since;
use crate::cluster::datastore::{
    Scope, apply_affinities, apply_endpoint_event, apply_nodes, apply_pools,
};
use crate::cluster::ipam_routes::remote_routes;
use crate::test_rng::Rng;
use margay_datastore::ipam::Affinity;
use margay_datastore::ipam::records::affinity_key;
use margay_datastore::resources::{
    EncapMode, IpPoolSpec, NodeBgpSpec, NodeSpec, Resource, WorkloadEndpointSpec,
};
use margay_datastore::{Versioned, WatchEvent};

const NODES: u64 = 6;
const BLOCKS: u64 = 8;
const PODS: u64 = 10;
const ME: &str = "n0";

/// This node now and then (its blocks and pods are read whole again), mostly another one.
fn node_name(rng: &mut Rng) -> String {
    if rng.chance(5) {
        ME.into()
    } else {
        format!("n{}", 1 + rng.below(NODES - 1))
    }
}

/// A Node with an IPv4 address (one of two), an IPv6 one, both or neither.
fn node(rng: &mut Rng, name: &str) -> Resource<NodeSpec> {
    let i = &name[1..];
    let bgp = (!rng.chance(15)).then(|| NodeBgpSpec {
        ipv4_address: (!rng.chance(25)).then(|| format!("10.0.{}.{i}/16", rng.below(2))),
        ipv6_address: rng
            .chance(60)
            .then(|| format!("fd00::{:x}:{i}/64", rng.below(2))),
        ..Default::default()
    });
    Resource::new(
        name,
        NodeSpec {
            bgp,
            ..Default::default()
        },
    )
}

/// Block `b` of either family (a /26 of 10.244.0.0/16, the last ones outside the nested /20,
/// or a /122 of fd10::/48).
fn block(rng: &mut Rng) -> IpNet {
    let b = rng.below(BLOCKS);
    if rng.chance(25) {
        format!("fd10::{:x}00/122", b).parse().unwrap()
    } else {
        let third = if b >= BLOCKS - 2 { 16 + b } else { b };
        format!("10.244.{third}.0/26").parse().unwrap()
    }
}

fn affinity(rng: &mut Rng) -> WatchEvent<Versioned<Vec<u8>>> {
    let (node, cidr) = (node_name(rng), block(rng));
    // Now and then under another node's key, as no writer should.
    let key = if rng.chance(5) {
        affinity_key(&node_name(rng), &cidr)
    } else {
        affinity_key(&node, &cidr)
    };
    if rng.chance(30) {
        return WatchEvent::Delete {
            name: key.clone(),
            key,
            revision: 0,
        };
    }
    let value = if rng.chance(3) {
        b"not json".to_vec()
    } else {
        serde_json::to_vec(&Affinity { node, cidr }).unwrap()
    };
    WatchEvent::Put(Versioned {
        key,
        value,
        mod_revision: 0,
    })
}

/// An address inside one of the blocks (whoever holds it), outside every pool, or of IPv6.
fn pod_ip(rng: &mut Rng) -> String {
    match rng.below(10) {
        0 => "10.250.0.5".into(),
        1 | 2 => format!("fd10::{:x}{:02x}", rng.below(BLOCKS), 1 + rng.below(60)),
        _ => {
            let b = rng.below(BLOCKS);
            let third = if b >= BLOCKS - 2 { 16 + b } else { b };
            format!("10.244.{third}.{}", 1 + rng.below(60))
        }
    }
}

fn pod(rng: &mut Rng) -> WatchEvent<Resource<WorkloadEndpointSpec>> {
    let name = format!("p{}", rng.below(PODS));
    if rng.chance(25) {
        return WatchEvent::Delete {
            key: String::new(),
            name: format!("default/{name}"),
            revision: 0,
        };
    }
    let mut ips: Vec<String> = (0..1 + rng.below(3)).map(|_| pod_ip(rng)).collect();
    if rng.chance(50) {
        let len = if ips[0].contains(':') { "/128" } else { "/32" };
        ips[0].push_str(len);
    }
    let mut r = Resource::new(
        name.clone(),
        WorkloadEndpointSpec {
            node: node_name(rng),
            interface_name: format!("cali{name}"),
            ip_networks: ips,
            ..Default::default()
        },
    );
    r.metadata.namespace = Some("default".into());
    WatchEvent::Put(r)
}

fn pool(rng: &mut Rng) -> WatchEvent<Resource<IpPoolSpec>> {
    let (name, cidr) = [
        ("v4", "10.244.0.0/16"),
        ("v4-nested", "10.244.0.0/20"),
        ("v6", "fd10::/48"),
    ][rng.below(3) as usize];
    if rng.chance(20) {
        return WatchEvent::Delete {
            key: String::new(),
            name: name.into(),
            revision: 0,
        };
    }
    let vxlan = [EncapMode::Never, EncapMode::Always, EncapMode::CrossSubnet];
    WatchEvent::Put(Resource::new(
        name,
        IpPoolSpec {
            cidr: cidr.into(),
            vxlan_mode: Some(vxlan[rng.below(3) as usize]),
            disabled: rng.chance(15),
            ..Default::default()
        },
    ))
}

/// One watch event of any kind, fed through the datastore feed's handler for it.
fn event(rng: &mut Rng, s: &mut ClusterState) {
    let scope = Scope::Cluster;
    match rng.below(100) {
        0..=24 => {
            let name = node_name(rng);
            let ev = if rng.chance(20) {
                WatchEvent::Delete {
                    key: String::new(),
                    name,
                    revision: 0,
                }
            } else {
                WatchEvent::Put(node(rng, &name))
            };
            apply_nodes(s, ev);
        }
        25..=54 => apply_affinities(s, scope, affinity(rng)),
        55..=95 => {
            apply_endpoint_event(s, scope, pod(rng));
        }
        96 | 97 => apply_pools(s, pool(rng)),
        // A resync of a kind, with what it holds and one item more.
        98 if rng.chance(50) => {
            let mut items: Vec<Resource<NodeSpec>> = s
                .nodes
                .iter()
                .map(|(n, spec)| Resource::new(n.clone(), spec.clone()))
                .collect();
            let name = node_name(rng);
            items.push(node(rng, &name));
            apply_nodes(s, WatchEvent::Resync { items, revision: 0 });
        }
        98 => {
            let mut items: Vec<Versioned<Vec<u8>>> = s
                .block_affinities
                .iter()
                .map(|(k, a)| Versioned {
                    key: k.clone(),
                    value: serde_json::to_vec(a).unwrap(),
                    mod_revision: 0,
                })
                .collect();
            if let WatchEvent::Put(v) = affinity(rng) {
                items.push(v);
            }
            apply_affinities(s, scope, WatchEvent::Resync { items, revision: 0 });
        }
        _ => {
            let items = match pod(rng) {
                WatchEvent::Put(r) => vec![r],
                _ => Vec::new(),
            };
            apply_endpoint_event(s, scope, WatchEvent::Resync { items, revision: 0 });
        }
    }
}

/// An empty state of this node with an IPv4 VXLAN pool.
fn with_vxlan_pool() -> ClusterState {
    let mut s = ClusterState::new(ME);
    s.pools.insert(
        "v4".into(),
        IpPoolSpec {
            cidr: "10.244.0.0/16".into(),
            vxlan_mode: Some(EncapMode::Always),
            ..Default::default()
        },
    );
    s
}

#[test]
fn kept_routes_match_the_whole_computation_over_random_changes() {
    let (mut keyed, mut whole) = (0, 0);
    for seed in 0..80u64 {
        let mut rng = Rng(seed);
        let mut s = with_vxlan_pool();
        for _ in 0..30 {
            event(&mut rng, &mut s);
        }
        let mut kept = IpamRoutes::new(&s);
        let mut seen = s.changes.seq();
        // What the dataplane holds: the deltas applied to the first whole answer.
        let mut dataplane = kept.routes().clone();
        for step in 0..200 {
            for _ in 0..1 + rng.below(4) {
                event(&mut rng, &mut s);
            }
            match s.changes.since(seen) {
                Since::Keys(keys) => {
                    keyed += 1;
                    for (prefix, via) in kept.apply(&s, &keys) {
                        match via {
                            Some(via) => dataplane.insert(prefix, via),
                            None => dataplane.remove(&prefix),
                        };
                    }
                }
                Since::All => {
                    whole += 1;
                    kept = IpamRoutes::new(&s);
                    dataplane = kept.routes().clone();
                }
            }
            seen = s.changes.seq();
            let (routes, problems) = remote_routes(&s);
            assert_eq!(*kept.routes(), routes, "seed {seed} step {step}: routes");
            assert_eq!(
                kept.problems(),
                problems,
                "seed {seed} step {step}: problems"
            );
            assert_eq!(
                dataplane, routes,
                "seed {seed} step {step}: the deltas applied"
            );
        }
    }
    // Most bursts are another node's Node, block or pod: the kept path, not a rebuild.
    assert!(keyed > 2 * whole, "{keyed} kept, {whole} whole");
}

#[test]
fn one_nodes_change_touches_only_its_blocks_and_pods() {
    let mut s = with_vxlan_pool();
    for i in 1..50u32 {
        let name = format!("m{i}");
        apply_nodes(
            &mut s,
            WatchEvent::Put(Resource::new(
                name.clone(),
                NodeSpec {
                    bgp: Some(NodeBgpSpec {
                        ipv4_address: Some(format!("10.0.0.{i}/24")),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )),
        );
        let cidr: IpNet = format!("10.244.{i}.0/26").parse().unwrap();
        apply_affinities(
            &mut s,
            Scope::Cluster,
            WatchEvent::Put(Versioned {
                key: affinity_key(&name, &cidr),
                value: serde_json::to_vec(&Affinity { node: name, cidr }).unwrap(),
                mod_revision: 0,
            }),
        );
    }
    let mut kept = IpamRoutes::new(&s);
    assert_eq!(kept.routes().len(), 49);
    let seen = s.changes.seq();
    apply_nodes(
        &mut s,
        WatchEvent::Delete {
            key: String::new(),
            name: "m7".into(),
            revision: 0,
        },
    );
    let Since::Keys(keys) = s.changes.since(seen) else {
        panic!("another node's Node is a keyed change");
    };
    assert_eq!(keys, [Changed::Node("m7".into())].into());
    assert_eq!(
        kept.apply(&s, &keys),
        vec![("10.244.7.0/26".parse().unwrap(), None)],
        "only the deleted node's block"
    );
    assert!(kept.apply(&s, &BTreeSet::new()).is_empty());
}
