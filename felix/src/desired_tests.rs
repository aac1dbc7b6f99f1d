//! Unit tests of the desired-state computation, one per pool mode and per override rule.

use super::*;
use crate::model::{IpPool, NodeInfo, RemoteRoute, RemoteVtep, WorkloadEndpoint};

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Node 10.0.0.1/24, pool 10.244.0.0/16 in the given modes, one remote block on a node in the
/// same subnet (10.0.0.2) and one on a node in another subnet (10.1.0.2).
fn model(ipip: EncapMode, vxlan: EncapMode) -> Model {
    Model {
        node: NodeInfo {
            name: "n1".into(),
            address: Some("10.0.0.1/24".parse().unwrap()),
            address_v6: None,
            vxlan_tunnel_addr: Some("10.244.0.0".parse().unwrap()),
            vxlan_tunnel_mac: Some("66:00:00:00:00:01".into()),
            ipip_tunnel_addr: None,
            mtu: None,
            ..Default::default()
        },
        pools: vec![IpPool {
            cidr: net("10.244.0.0/16"),
            ipip_mode: ipip,
            vxlan_mode: vxlan,
            disabled: false,
            nat_outgoing: false,
        }],
        endpoints: vec![WorkloadEndpoint {
            name: "default/a".into(),
            interface: "cali0123456789a".into(),
            ips: vec![net("10.244.0.5/32")],
        }],
        affine_blocks: vec![net("10.244.0.0/26")],
        remote_routes: vec![
            RemoteRoute {
                prefix: net("10.244.1.0/26"),
                next_hop: ip("10.0.0.2"),
                also_via: Vec::new(),
            },
            RemoteRoute {
                prefix: net("10.244.2.0/26"),
                next_hop: ip("10.1.0.2"),
                also_via: Vec::new(),
            },
        ],
        vteps: vec![
            RemoteVtep {
                node: "n2".into(),
                node_ip: "10.0.0.2".parse().unwrap(),
                tunnel_ip: "10.244.1.0".parse().unwrap(),
                mac: "66:00:00:00:00:02".into(),
            },
            RemoteVtep {
                node: "n3".into(),
                node_ip: "10.1.0.2".parse().unwrap(),
                tunnel_ip: "10.244.2.0".parse().unwrap(),
                mac: "66:00:00:00:00:03".into(),
            },
        ],
        peer_routes: vec![],
        settings: Default::default(),
    }
}

fn via(gw: &str, dev: Option<&str>, onlink: bool) -> Target {
    Target::Gateway {
        via: ip(gw),
        dev: dev.map(str::to_string),
        onlink,
    }
}

fn target_of(d: &Desired, dst: &str) -> Target {
    d.routes[&net(dst)].target.clone()
}

#[test]
fn local_workload_gets_device_route_and_block_a_blackhole() {
    let d = compute(&model(EncapMode::Never, EncapMode::Never));
    assert_eq!(
        target_of(&d, "10.244.0.5/32"),
        Target::Device {
            ifname: "cali0123456789a".into()
        }
    );
    assert_eq!(d.routes[&net("10.244.0.5/32")].class, RouteClass::Workload);
    assert_eq!(target_of(&d, "10.244.0.0/26"), Target::Blackhole);
    assert_eq!(
        d.originate.iter().copied().collect::<Vec<_>>(),
        vec![net("10.244.0.0/26")]
    );
    assert!(d.workload_interfaces.contains("cali0123456789a"));
}

#[test]
fn never_mode_routes_via_node_address_without_devices() {
    let d = compute(&model(EncapMode::Never, EncapMode::Never));
    assert_eq!(target_of(&d, "10.244.1.0/26"), via("10.0.0.2", None, false));
    assert_eq!(target_of(&d, "10.244.2.0/26"), via("10.1.0.2", None, false));
    assert_eq!(d.vxlan, None);
    assert_eq!(d.ipip, None);
}

#[test]
fn ipip_always_routes_every_remote_block_through_tunl0_onlink() {
    let d = compute(&model(EncapMode::Always, EncapMode::Never));
    assert_eq!(
        target_of(&d, "10.244.1.0/26"),
        via("10.0.0.2", Some("tunl0"), true)
    );
    assert_eq!(
        target_of(&d, "10.244.2.0/26"),
        via("10.1.0.2", Some("tunl0"), true)
    );
    assert_eq!(d.routes[&net("10.244.2.0/26")].class, RouteClass::Ipip);
    assert!(d.ipip.is_some());
    assert_eq!(d.vxlan, None);
}

#[test]
fn ipip_cross_subnet_encapsulates_only_outside_the_node_subnet() {
    let d = compute(&model(EncapMode::CrossSubnet, EncapMode::Never));
    assert_eq!(target_of(&d, "10.244.1.0/26"), via("10.0.0.2", None, false));
    assert_eq!(
        target_of(&d, "10.244.2.0/26"),
        via("10.1.0.2", Some("tunl0"), true)
    );
}

#[test]
fn vxlan_always_routes_via_remote_vtep_with_neighbour_and_fdb() {
    let d = compute(&model(EncapMode::Never, EncapMode::Always));
    assert_eq!(
        target_of(&d, "10.244.1.0/26"),
        via("10.244.1.0", Some("vxlan.margay"), true)
    );
    assert_eq!(
        target_of(&d, "10.244.2.0/26"),
        via("10.244.2.0", Some("vxlan.margay"), true)
    );
    let dev = d.vxlan.as_ref().unwrap();
    assert_eq!(dev.local, "10.0.0.1".parse::<Ipv4Addr>().unwrap());
    assert_eq!(dev.mac, Some([0x66, 0, 0, 0, 0, 1]));
    assert_eq!(d.vteps.len(), 2);
    assert_eq!(d.vteps[0].mac, [0x66, 0, 0, 0, 0, 2]);
    assert_eq!(d.vteps[0].node_ip, ip("10.0.0.2"));
}

#[test]
fn vxlan_cross_subnet_goes_direct_inside_the_subnet() {
    let d = compute(&model(EncapMode::Never, EncapMode::CrossSubnet));
    assert_eq!(target_of(&d, "10.244.1.0/26"), via("10.0.0.2", None, false));
    assert_eq!(
        target_of(&d, "10.244.2.0/26"),
        via("10.244.2.0", Some("vxlan.margay"), true)
    );
}

#[test]
fn vxlan_route_without_known_vtep_is_left_out_with_a_reason() {
    let mut m = model(EncapMode::Never, EncapMode::Always);
    m.vteps.retain(|v| v.node != "n3");
    let d = compute(&m);
    assert!(!d.routes.contains_key(&net("10.244.2.0/26")));
    assert!(
        d.problems.iter().any(|p| p.contains("10.1.0.2")),
        "{:?}",
        d.problems
    );
}

#[test]
fn disabled_pool_needs_no_device() {
    let mut m = model(EncapMode::Always, EncapMode::Never);
    m.pools[0].disabled = true;
    let d = compute(&m);
    assert_eq!(d.ipip, None);
    assert_eq!(target_of(&d, "10.244.2.0/26"), via("10.1.0.2", None, false));
}

#[test]
fn prefix_outside_every_pool_routes_direct() {
    let mut m = model(EncapMode::Always, EncapMode::Never);
    m.remote_routes.push(RemoteRoute {
        prefix: net("192.168.50.0/24"),
        next_hop: ip("10.1.0.9"),
        also_via: Vec::new(),
    });
    let d = compute(&m);
    assert_eq!(
        target_of(&d, "192.168.50.0/24"),
        via("10.1.0.9", None, false)
    );
}

#[test]
fn local_block_and_pod_win_over_a_remote_announcement() {
    let mut m = model(EncapMode::Never, EncapMode::Never);
    m.remote_routes.push(RemoteRoute {
        prefix: net("10.244.0.0/26"),
        next_hop: ip("10.0.0.2"),
        also_via: Vec::new(),
    });
    m.remote_routes.push(RemoteRoute {
        prefix: net("10.244.0.5/32"),
        next_hop: ip("10.0.0.2"),
        also_via: Vec::new(),
    });
    let d = compute(&m);
    assert_eq!(target_of(&d, "10.244.0.0/26"), Target::Blackhole);
    assert_eq!(d.routes[&net("10.244.0.5/32")].class, RouteClass::Workload);
}

#[test]
fn borrowed_address_is_originated_as_a_host_route() {
    let mut m = model(EncapMode::Never, EncapMode::Never);
    m.endpoints[0].ips.push(net("10.244.9.7/32"));
    let d = compute(&m);
    assert!(d.originate.contains(&net("10.244.9.7/32")));
    assert!(!d.originate.contains(&net("10.244.0.5/32")));
}

#[test]
fn route_through_own_address_is_ignored() {
    let mut m = model(EncapMode::Never, EncapMode::Never);
    m.remote_routes.push(RemoteRoute {
        prefix: net("10.244.7.0/26"),
        next_hop: ip("10.0.0.1"),
        also_via: Vec::new(),
    });
    let d = compute(&m);
    assert!(!d.routes.contains_key(&net("10.244.7.0/26")));
}

#[test]
fn a_peer_reachable_by_a_gateway_gets_a_host_route_through_it_but_never_over_our_own() {
    let mut m = model(EncapMode::Never, EncapMode::Never);
    m.peer_routes = vec![
        RemoteRoute {
            prefix: net("192.0.2.1/32"),
            next_hop: ip("10.0.0.254"),
            also_via: Vec::new(),
        },
        // A learned route for the same prefix loses to the static one, as in Calico's BIRD.
        RemoteRoute {
            prefix: net("10.244.2.0/26"),
            next_hop: ip("10.0.0.253"),
            also_via: Vec::new(),
        },
    ];
    let d = compute(&m);
    assert_eq!(
        target_of(&d, "192.0.2.1/32"),
        via("10.0.0.254", None, false)
    );
    assert_eq!(
        target_of(&d, "10.244.2.0/26"),
        via("10.0.0.253", None, false)
    );
}

#[test]
fn learned_routes_equal_to_own_workloads_or_blocks_are_shadowed_and_borrowed_32s_kept() {
    let mut m = model(EncapMode::Never, EncapMode::Never);
    m.remote_routes.extend([
        RemoteRoute {
            prefix: net("10.244.0.5/32"),
            next_hop: ip("10.0.0.2"),
            also_via: Vec::new(),
        },
        RemoteRoute {
            prefix: net("10.244.0.0/26"),
            next_hop: ip("10.0.0.2"),
            also_via: Vec::new(),
        },
        RemoteRoute {
            prefix: net("10.244.0.9/32"),
            next_hop: ip("10.0.0.2"),
            also_via: Vec::new(),
        },
    ]);
    let d = compute(&m);
    assert_eq!(
        d.shadowed,
        [net("10.244.0.0/26"), net("10.244.0.5/32")]
            .into_iter()
            .collect()
    );
    assert_eq!(d.routes[&net("10.244.0.0/26")].class, RouteClass::Blackhole);
    assert_eq!(d.routes[&net("10.244.0.5/32")].class, RouteClass::Workload);
    assert_eq!(target_of(&d, "10.244.0.9/32"), via("10.0.0.2", None, false));
}

#[test]
fn equal_paths_make_one_multipath_route_each_hop_by_the_pool_mode() {
    let mut m = model(EncapMode::Never, EncapMode::Never);
    m.remote_routes.push(RemoteRoute {
        prefix: net("10.244.9.0/26"),
        next_hop: ip("10.0.0.2"),
        also_via: vec![ip("10.0.0.3"), ip("10.0.0.2")],
    });
    let d = compute(&m);
    let hop = |gw: &str| Hop {
        via: ip(gw),
        dev: None,
        onlink: false,
    };
    assert_eq!(
        target_of(&d, "10.244.9.0/26"),
        Target::Multipath {
            hops: vec![hop("10.0.0.2"), hop("10.0.0.3")]
        },
        "each next hop once, the best path's first"
    );
    assert_eq!(d.routes[&net("10.244.9.0/26")].class, RouteClass::Direct);
    // IPIP Always: every hop through tunl0.
    let mut m = model(EncapMode::Always, EncapMode::Never);
    m.remote_routes.push(RemoteRoute {
        prefix: net("10.244.9.0/26"),
        next_hop: ip("10.0.0.2"),
        also_via: vec![ip("10.0.0.3")],
    });
    let Target::Multipath { hops } = target_of(&compute(&m), "10.244.9.0/26") else {
        panic!("not multipath");
    };
    assert!(
        hops.iter()
            .all(|h| h.dev.as_deref() == Some("tunl0") && h.onlink),
        "{hops:?}"
    );
}

#[test]
fn a_multipath_hop_through_our_own_address_is_left_out() {
    let mut m = model(EncapMode::Never, EncapMode::Never);
    m.remote_routes.push(RemoteRoute {
        prefix: net("10.244.9.0/26"),
        next_hop: ip("10.0.0.2"),
        also_via: vec![ip("10.0.0.1")],
    });
    assert_eq!(
        target_of(&compute(&m), "10.244.9.0/26"),
        via("10.0.0.2", None, false)
    );
}

/// The dual-stack node of [`model`]: fd00:1::1/64 beside 10.0.0.1/24, an IPv6 pool, a pod with
/// both families, and IPv6 blocks learned over the IPv6 mesh.
fn dual(v6_vxlan: EncapMode) -> Model {
    let mut m = model(EncapMode::Never, EncapMode::Never);
    m.node.address_v6 = Some("fd00:1::1/64".parse().unwrap());
    m.pools.push(IpPool {
        cidr: net("fd00:244::/48"),
        ipip_mode: EncapMode::Never,
        vxlan_mode: v6_vxlan,
        disabled: false,
        nat_outgoing: true,
    });
    m.endpoints[0].ips.push(net("fd00:244::5/128"));
    m.affine_blocks.push(net("fd00:244::/122"));
    m.remote_routes.extend([
        RemoteRoute {
            prefix: net("fd00:244::40/122"),
            next_hop: ip("fd00:1::2"),
            also_via: vec![],
        },
        RemoteRoute {
            prefix: net("fd00:244::80/122"),
            next_hop: ip("fd00:1::1"),
            also_via: vec![],
        },
    ]);
    m
}

#[test]
fn dual_stack_pod_gets_both_host_routes_and_ipv6_blocks_route_via_the_ipv6_next_hop() {
    let d = compute(&dual(EncapMode::Never));
    let cali = Target::Device {
        ifname: "cali0123456789a".into(),
    };
    assert_eq!(target_of(&d, "10.244.0.5/32"), cali);
    assert_eq!(target_of(&d, "fd00:244::5/128"), cali);
    assert_eq!(target_of(&d, "fd00:244::/122"), Target::Blackhole);
    assert_eq!(
        target_of(&d, "fd00:244::40/122"),
        via("fd00:1::2", None, false)
    );
    // A route back through this node's own IPv6 address is not programmed.
    assert!(!d.routes.contains_key(&net("fd00:244::80/122")));
    assert!(d.originate.contains(&net("fd00:244::/122")));
    assert!(d.problems.is_empty(), "{:?}", d.problems);
}

/// [`dual`] with an IPv6 VXLAN pool: this node's IPv6 VTEP and n2's.
fn dual_vxlan(mode: EncapMode) -> Model {
    let mut m = dual(mode);
    m.node.vxlan_tunnel_addr_v6 = Some("fd00:244::1".parse().unwrap());
    m.node.vxlan_tunnel_mac_v6 = Some("66:00:00:00:06:01".into());
    m.vteps.push(RemoteVtep {
        node: "n2".into(),
        node_ip: ip("fd00:1::2"),
        tunnel_ip: ip("fd00:244::41"),
        mac: "66:00:00:00:06:02".into(),
    });
    m
}

#[test]
fn ipv6_vxlan_pool_routes_through_the_ipv6_device_to_the_nodes_ipv6_vtep() {
    let d = compute(&dual_vxlan(EncapMode::Always));
    assert_eq!(
        target_of(&d, "fd00:244::40/122"),
        via("fd00:244::41", Some(VXLAN_V6_DEVICE), true)
    );
    assert_eq!(d.routes[&net("fd00:244::40/122")].class, RouteClass::Vxlan);
    let dev = d
        .vxlan_v6
        .clone()
        .expect("IPv6 VXLAN pool: IPv6 device wanted");
    assert_eq!(dev.local, ip("fd00:1::1"));
    assert_eq!(dev.tunnel_addr, Some(ip("fd00:244::1")));
    assert_eq!(dev.mac, Some([0x66, 0, 0, 0, 6, 1]));
    assert_eq!((dev.vni, dev.port), (VXLAN_VNI, VXLAN_PORT));
    // Its neighbour and FDB entries: n2's IPv6 VTEP, reached at n2's IPv6 address; none of
    // the IPv4 VTEPs (those belong to the IPv4 device, not wanted here: no IPv4 VXLAN pool).
    assert_eq!(
        d.vteps_v6,
        vec![Vtep {
            tunnel_ip: ip("fd00:244::41"),
            mac: [0x66, 0, 0, 0, 6, 2],
            node_ip: ip("fd00:1::2"),
        }]
    );
    assert_eq!(d.vxlan, None);
    assert!(d.problems.is_empty(), "{:?}", d.problems);
}

#[test]
fn dual_stack_vxlan_has_a_device_per_family_each_with_its_own_vteps() {
    let mut m = dual_vxlan(EncapMode::Always);
    m.pools[0].vxlan_mode = EncapMode::Always;
    m.settings.vxlan_mtu_v6 = Some(1380);
    let d = compute(&m);
    let v4 = d.vxlan.clone().expect("IPv4 device");
    let v6 = d.vxlan_v6.clone().expect("IPv6 device");
    assert!(v4.local.is_ipv4() && v6.local.is_ipv6());
    assert_eq!(v6.mtu, Some(1380));
    assert!(d.vteps.iter().all(|v| v.node_ip.is_ipv4()));
    assert!(d.vteps_v6.iter().all(|v| v.node_ip.is_ipv6()));
    assert_eq!(
        target_of(&d, "10.244.1.0/26"),
        via("10.244.1.0", Some(VXLAN_DEVICE), true)
    );
    assert_eq!(
        target_of(&d, "fd00:244::40/122"),
        via("fd00:244::41", Some(VXLAN_V6_DEVICE), true)
    );
    // vxlanEnabled: false turns both off.
    m.settings.vxlan_enabled = Some(false);
    let d = compute(&m);
    assert_eq!((d.vxlan, d.vxlan_v6), (None, None));
}

#[test]
fn ipv6_vxlan_cross_subnet_goes_direct_inside_the_ipv6_subnet() {
    let mut m = dual_vxlan(EncapMode::CrossSubnet);
    let d = compute(&m);
    assert_eq!(
        target_of(&d, "fd00:244::40/122"),
        via("fd00:1::2", None, false)
    );
    // The same node seen from another IPv6 subnet: through the tunnel.
    m.node.address_v6 = Some("fd00:9::1/64".parse().unwrap());
    let d = compute(&m);
    assert_eq!(
        target_of(&d, "fd00:244::40/122"),
        via("fd00:244::41", Some(VXLAN_V6_DEVICE), true)
    );
}

#[test]
fn ipv6_vxlan_route_without_a_known_vtep_is_left_out_with_a_reason() {
    let mut m = dual_vxlan(EncapMode::Always);
    m.vteps.retain(|v| v.node_ip.is_ipv4());
    let d = compute(&m);
    assert!(!d.routes.contains_key(&net("fd00:244::40/122")));
    assert!(
        d.problems
            .iter()
            .any(|p| p.contains("no IPv6 VXLAN tunnel endpoint")),
        "{:?}",
        d.problems
    );
}

#[test]
fn ipv6_vxlan_pool_on_a_node_without_ipv6_address_is_a_problem() {
    let mut m = dual_vxlan(EncapMode::Always);
    m.node.address_v6 = None;
    let d = compute(&m);
    assert_eq!(d.vxlan_v6, None);
    assert!(
        d.problems
            .iter()
            .any(|p| p.contains("needs the node's IPv6 address")),
        "{:?}",
        d.problems
    );
}

#[test]
fn ipv6_only_node_routes_ipv6_and_asks_for_no_ipv4_tunnel() {
    let mut m = dual(EncapMode::Never);
    m.node.address = None;
    m.pools.retain(|p| p.cidr.addr().is_ipv6());
    m.remote_routes.retain(|r| r.prefix.addr().is_ipv6());
    m.endpoints[0].ips.retain(|a| a.addr().is_ipv6());
    m.affine_blocks.retain(|b| b.addr().is_ipv6());
    let d = compute(&m);
    assert_eq!(d.node_address, None);
    assert_eq!((d.vxlan.clone(), d.ipip.clone()), (None, None));
    assert_eq!(
        target_of(&d, "fd00:244::40/122"),
        via("fd00:1::2", None, false)
    );
    assert!(d.problems.is_empty(), "{:?}", d.problems);
}

#[test]
fn ipv4_tunnel_pool_on_an_ipv6_only_node_is_a_problem() {
    let mut m = model(EncapMode::Never, EncapMode::Always);
    m.node.address = None;
    m.node.address_v6 = Some("fd00:1::1/64".parse().unwrap());
    let d = compute(&m);
    assert_eq!(d.vxlan, None);
    assert!(d.problems.iter().any(|p| p.contains("no IPv4 address")));
}

#[test]
fn felix_configuration_sets_the_vxlan_device_and_can_force_a_tunnel_off() {
    let mut m = model(EncapMode::Never, EncapMode::Always);
    m.settings.vxlan_vni = 5000;
    m.settings.vxlan_port = 8472;
    m.settings.vxlan_mtu = Some(1400);
    let v = compute(&m).vxlan.expect("VXLAN pool: device wanted");
    assert_eq!((v.vni, v.port, v.mtu), (5000, 8472, Some(1400)));
    m.settings.vxlan_enabled = Some(false);
    assert!(compute(&m).vxlan.is_none());
    let mut m = model(EncapMode::Never, EncapMode::Never);
    m.settings.ipip_enabled = Some(true);
    m.settings.ipip_mtu = Some(1430);
    assert_eq!(compute(&m).ipip.expect("forced on").mtu, Some(1430));
}

#[test]
fn device_route_source_address_is_the_src_of_workload_and_tunnel_routes() {
    let mut m = dual(EncapMode::Never);
    m.settings.device_route_source = Some("192.0.2.1".parse().unwrap());
    m.settings.device_route_source_v6 = Some("fd00::1".parse().unwrap());
    let d = compute(&m);
    let src = |dst: &str| d.routes[&net(dst)].src;
    assert_eq!(src("10.244.0.5/32"), Some(ip("192.0.2.1")));
    assert_eq!(src("fd00:244::5/128"), Some(ip("fd00::1")));
    // Blackholes and plain routes via a node name no device: no src.
    assert_eq!(src("fd00:244::/122"), None);
    assert_eq!(src("fd00:244::40/122"), None);
    assert_eq!(
        compute(&dual(EncapMode::Never)).routes[&net("10.244.0.5/32")].src,
        None
    );
}

#[test]
fn originate_and_tunnel_devices_alone_give_what_the_whole_computation_gives() {
    // What the coordinator asks per change without computing the whole desired state.
    let modes = [EncapMode::Never, EncapMode::Always, EncapMode::CrossSubnet];
    for ipip in modes {
        for vxlan in modes {
            for (borrowed, v6_pool, no_v4, vxlan_off) in [
                (false, false, false, None),
                (true, true, false, Some(false)),
                (true, true, true, None),
                (false, false, true, Some(true)),
            ] {
                let mut m = model(ipip, vxlan);
                if borrowed {
                    m.endpoints[0].ips.push(net("10.244.9.7/32"));
                }
                if v6_pool {
                    m.pools.push(IpPool {
                        cidr: net("fd00:10:244::/48"),
                        ipip_mode: EncapMode::Never,
                        vxlan_mode: vxlan,
                        disabled: false,
                        nat_outgoing: false,
                    });
                    m.node.address_v6 = Some("fd00::1/64".parse().unwrap());
                }
                if no_v4 {
                    m.node.address = None;
                }
                m.settings.vxlan_enabled = vxlan_off;
                let d = compute(&m);
                assert_eq!(originate(&m), d.originate, "{ipip:?} {vxlan:?} {borrowed}");
                assert_eq!(
                    tunnel_devices(&m),
                    (d.vxlan.is_some(), d.ipip.is_some(), d.vxlan_v6.is_some()),
                    "{ipip:?} {vxlan:?} v6 pool {v6_pool} no v4 {no_v4} vxlanEnabled {vxlan_off:?}"
                );
            }
        }
    }
}
