//! The incremental desired state against [`crate::desired::compute`] of the whole model, over
//! seeded random sequences of VTEP and route changes on random bases (every pool mode, both
//! families, shadowed and configured destinations, shared and bad VTEPs, multipath).

use super::*;
use crate::model::{EncapMode, IpPool, NodeInfo, WorkloadEndpoint};

use crate::test_rng::Rng;

fn mode(rng: &mut Rng) -> EncapMode {
    [EncapMode::Never, EncapMode::Always, EncapMode::CrossSubnet][rng.below(3) as usize]
}

const NODES: u64 = 12;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Node `i`'s IPv4 address: half in this node's subnet, half outside; two share one.
fn node_v4(i: u64) -> IpAddr {
    match i {
        0 => ip("10.0.0.1"),
        11 => ip("10.0.0.3"),
        i if i % 2 == 0 => ip(&format!("10.0.0.{}", i + 1)),
        i => ip(&format!("10.1.0.{}", i + 1)),
    }
}

fn node_v6(i: u64) -> IpAddr {
    ip(&format!("fd00::{:x}", i + 1))
}

fn base(rng: &mut Rng) -> Model {
    let dual = rng.chance(50);
    let mut settings = crate::settings::DataplaneSettings::default();
    if rng.chance(15) {
        settings.vxlan_enabled = Some(rng.chance(50));
    }
    Model {
        node: NodeInfo {
            name: "n0".into(),
            address: Some("10.0.0.1/24".parse().unwrap()),
            address_v6: dual.then(|| "fd00::1/64".parse().unwrap()),
            vxlan_tunnel_addr: Some("10.244.0.0".parse().unwrap()),
            vxlan_tunnel_mac: Some("66:00:00:00:00:01".into()),
            vxlan_tunnel_addr_v6: dual.then(|| "fd10::".parse().unwrap()),
            vxlan_tunnel_mac_v6: dual.then(|| "66:00:00:00:01:01".into()),
            ..Default::default()
        },
        pools: vec![
            IpPool {
                cidr: "10.244.0.0/16".parse().unwrap(),
                ipip_mode: mode(rng),
                vxlan_mode: mode(rng),
                disabled: rng.chance(10),
                nat_outgoing: false,
            },
            IpPool {
                cidr: "fd10::/48".parse().unwrap(),
                ipip_mode: EncapMode::Never,
                vxlan_mode: mode(rng),
                disabled: false,
                nat_outgoing: false,
            },
        ],
        endpoints: vec![WorkloadEndpoint {
            name: "default/web".into(),
            interface: "cali0123456789a".into(),
            ips: vec![
                "10.244.0.5/32".parse().unwrap(),
                "10.244.5.7/32".parse().unwrap(),
            ],
        }],
        affine_blocks: vec!["10.244.0.0/26".parse().unwrap()],
        remote_routes: Vec::new(),
        vteps: Vec::new(),
        peer_routes: vec![RemoteRoute {
            prefix: "10.244.3.0/26".parse().unwrap(),
            next_hop: ip("10.0.0.254"),
            also_via: Vec::new(),
        }],
        settings,
    }
}

/// A random VTEP list for node `i`: IPv4 and / or IPv6, now and then a bad MAC or a tunnel
/// address of the wrong family.
fn vteps(rng: &mut Rng, i: u64) -> Vec<RemoteVtep> {
    let node = format!("n{i}");
    let mac = |rng: &mut Rng| {
        if rng.chance(5) {
            "not-a-mac".to_string()
        } else {
            format!("66:00:00:00:{:02x}:{:02x}", rng.below(3), i)
        }
    };
    let mut out = Vec::new();
    if rng.chance(80) {
        let tunnel = if rng.chance(5) {
            ip("fd10::99")
        } else {
            ip(&format!("10.244.{}.{}", i, rng.below(2)))
        };
        out.push(RemoteVtep {
            node: node.clone(),
            node_ip: node_v4(i),
            tunnel_ip: tunnel,
            mac: mac(rng),
        });
    }
    if rng.chance(50) {
        out.push(RemoteVtep {
            node,
            node_ip: node_v6(i),
            tunnel_ip: ip(&format!("fd10:0:0:{:x}::", i)),
            mac: mac(rng),
        });
    }
    out
}

/// A random learned route: a node's block of either family (this node's own among them), an
/// address borrowed from this node, a configured destination; one to three next hops.
fn route(rng: &mut Rng) -> (IpNet, Option<RemoteRoute>) {
    let v6 = rng.chance(30);
    let prefix: IpNet = match rng.below(10) {
        0 => "10.244.5.7/32".parse().unwrap(),
        1 => "10.244.3.0/26".parse().unwrap(),
        _ if v6 => format!("fd10:0:0:{:x}::/64", rng.below(NODES))
            .parse()
            .unwrap(),
        _ => format!("10.244.{}.0/26", rng.below(NODES)).parse().unwrap(),
    };
    if rng.chance(25) {
        return (prefix, None);
    }
    let hop = |rng: &mut Rng| {
        let i = rng.below(NODES);
        // Mostly of the prefix's family.
        if v6 != rng.chance(10) {
            node_v6(i)
        } else {
            node_v4(i)
        }
    };
    let next_hop = hop(rng);
    let also_via = (0..rng.below(3)).map(|_| hop(rng)).collect();
    (
        prefix,
        Some(RemoteRoute {
            prefix,
            next_hop,
            also_via,
        }),
    )
}

fn change(rng: &mut Rng) -> ModelChange {
    if rng.chance(40) {
        let i = rng.below(NODES);
        ModelChange::Vteps {
            node: format!("n{i}"),
            vteps: vteps(rng, i),
        }
    } else {
        let (prefix, route) = route(rng);
        ModelChange::Route { prefix, route }
    }
}

/// The desired state with its problems sorted (their order is not part of the answer).
fn normal(d: &Desired) -> Desired {
    let mut d = d.clone();
    d.problems.sort();
    d
}

#[test]
fn incremental_matches_compute_over_random_changes() {
    for seed in 0..60u64 {
        let mut rng = Rng(seed);
        let mut model = base(&mut rng);
        // A starting cluster, taken whole.
        for i in 1..NODES {
            if rng.chance(60) {
                model.vteps.extend(vteps(&mut rng, i));
            }
        }
        for _ in 0..8 {
            if let (_, Some(r)) = route(&mut rng) {
                model.remote_routes.retain(|x| x.prefix != r.prefix);
                model.remote_routes.push(r);
            }
        }
        let mut inc = Incremental::new(model.clone());
        assert_eq!(
            normal(inc.desired()),
            normal(&desired::compute(&model)),
            "seed {seed}: the whole model taken at once"
        );
        let mut reconciler_copy = inc.desired().clone();
        for step in 0..150 {
            let changes: Vec<ModelChange> =
                (0..1 + rng.below(3)).map(|_| change(&mut rng)).collect();
            let delta = inc.apply(changes.clone());
            let whole = desired::compute(&inc.model());
            assert_eq!(
                normal(inc.desired()),
                normal(&whole),
                "seed {seed} step {step}: after {changes:?}"
            );
            delta.apply_to(&mut reconciler_copy);
            assert_eq!(
                normal(&reconciler_copy),
                normal(&whole),
                "seed {seed} step {step}: the delta applied to the previous state, after {changes:?}"
            );
        }
    }
}

#[test]
fn one_node_change_touches_only_its_own_entries() {
    let mut rng = Rng(7);
    let mut model = base(&mut rng);
    model.pools[0].vxlan_mode = EncapMode::Always;
    model.pools[0].disabled = false;
    model.settings.vxlan_enabled = None;
    for i in 1..NODES {
        model.vteps.push(RemoteVtep {
            node: format!("n{i}"),
            node_ip: ip(&format!("10.0.1.{i}")),
            tunnel_ip: ip(&format!("10.244.{i}.0")),
            mac: format!("66:00:00:00:00:{i:02x}"),
        });
        model.remote_routes.push(RemoteRoute {
            prefix: format!("10.244.{i}.0/26").parse().unwrap(),
            next_hop: ip(&format!("10.0.1.{i}")),
            also_via: Vec::new(),
        });
    }
    let mut inc = Incremental::new(model);
    let delta = inc.apply(vec![
        ModelChange::Vteps {
            node: "n4".into(),
            vteps: Vec::new(),
        },
        ModelChange::Route {
            prefix: "10.244.4.0/26".parse().unwrap(),
            route: None,
        },
    ]);
    assert_eq!(delta.vteps.len(), 1, "{delta:?}");
    assert!(!delta.vteps[0].1);
    assert_eq!(
        delta.routes,
        vec![("10.244.4.0/26".parse().unwrap(), None)],
        "only the node's block"
    );
    assert!(delta.problems.is_none() && delta.shadowed.is_empty());
    assert!(inc.apply(Vec::new()).is_empty());
}
