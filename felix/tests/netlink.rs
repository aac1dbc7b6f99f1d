//! The netlink handle on its own, in a lab namespace: a thread `setns`es into it before
//! opening the socket (the library-level way to run felix's dataplane code in a namespace).

use margay_felix::netlink::{
    Dataplane, KernelRoute, RouteKind, RouteOp, SCOPE_LINK, SCOPE_UNIVERSE, TABLE_MAIN, enter_netns,
};
use margay_lab::Lab;

/// Runs `f` with a dataplane handle opened inside namespace `ns`.
fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce(&mut Dataplane) -> T + Send + 'static,
) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        enter_netns(&path).unwrap();
        let mut dp = Dataplane::new().unwrap();
        f(&mut dp)
    })
    .join()
    .unwrap()
}

fn route(dst: &str, proto: u8) -> KernelRoute {
    KernelRoute {
        dst: dst.parse().unwrap(),
        table: TABLE_MAIN,
        protocol: proto,
        kind: RouteKind::Blackhole,
        scope: SCOPE_UNIVERSE,
        gateway: None,
        oif: None,
        onlink: false,
        priority: 0,
        multipath: Vec::new(),
        src: None,
    }
}

#[test]
fn delete_with_our_protocol_never_removes_another_protocols_route() {
    let lab = Lab::new("delete_with_our_protocol_never_removes_another_protocols_route").unwrap();
    let ns = lab.netns("n").unwrap();
    ns.ip(&[
        "route",
        "add",
        "blackhole",
        "10.77.0.0/24",
        "proto",
        "static",
    ])
    .unwrap();
    let (res, left) = in_netns(ns.name(), |dp| {
        let res = dp.delete_route(&route("10.77.0.0/24", 81));
        (
            res.map_err(|e| e.errno()),
            dp.routes(Some(TABLE_MAIN), Some(4)).unwrap(),
        )
    });
    assert_eq!(res, Err(Some(libc::ESRCH)));
    assert_eq!(left, vec![route("10.77.0.0/24", 4)]);
}

#[test]
fn batch_reports_each_result_in_order_and_lists_by_protocol() {
    let lab = Lab::new("batch_reports_each_result_in_order_and_lists_by_protocol").unwrap();
    let ns = lab.netns("n").unwrap();
    ns.ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"])
        .unwrap();
    ns.ip(&["link", "set", "v0", "up"]).unwrap();
    let (results, ours, v0) = in_netns(ns.name(), |dp| {
        let v0 = dp.link("v0").unwrap().index;
        let dev = KernelRoute {
            kind: RouteKind::Unicast,
            scope: SCOPE_LINK,
            oif: Some(v0),
            ..route("10.78.0.5/32", 81)
        };
        let ops = vec![
            RouteOp::Create(route("10.78.1.0/24", 81)),
            RouteOp::Create(route("10.78.1.0/24", 81)), // EEXIST
            RouteOp::Create(dev.clone()),
            RouteOp::Delete(route("10.78.2.0/24", 81)), // ESRCH
        ];
        let results: Vec<Option<i32>> = dp
            .apply_routes(&ops)
            .unwrap()
            .into_iter()
            .map(|r| r.err().and_then(|e| e.errno()))
            .collect();
        let mut ours = dp.routes(Some(TABLE_MAIN), Some(81)).unwrap();
        ours.sort_by_key(|r| r.dst);
        (results, ours, v0)
    });
    assert_eq!(
        results,
        vec![None, Some(libc::EEXIST), None, Some(libc::ESRCH)]
    );
    assert_eq!(ours.len(), 2, "{ours:?}");
    assert_eq!(ours[0].dst.to_string(), "10.78.0.5/32");
    assert_eq!(ours[0].oif, Some(v0));
    assert_eq!(ours[0].scope, SCOPE_LINK);
    assert_eq!(ours[1].kind, RouteKind::Blackhole);
    let shown = ns.ip(&["route", "show", "proto", "81"]).unwrap();
    assert!(shown.contains("10.78.0.5 dev v0 scope link"), "{shown}");
}

#[test]
fn creating_ipip_on_a_kernel_without_it_is_unsupported() {
    let lab = Lab::new("creating_ipip_on_a_kernel_without_it_is_unsupported").unwrap();
    let ns = lab.netns("n").unwrap();
    let supported = ns.ip(&["link", "add", "probe0", "type", "ipip"]).is_ok();
    let res = in_netns(ns.name(), |dp| {
        dp.create_ipip("tunl0").map_err(|e| e.to_string())
    });
    if supported {
        // tunl0 appeared with the module; creating it again says it exists.
        assert!(
            res.is_ok() || res.as_ref().unwrap_err().contains("exists"),
            "{res:?}"
        );
    } else {
        let err = res.unwrap_err();
        assert!(
            err.contains("this kernel cannot create ipip devices (tunl0)"),
            "{err}"
        );
    }
}

#[test]
fn creates_veth_sets_mtu_and_address_and_deletes_it() {
    let lab = Lab::new("creates_veth_sets_mtu_and_address_and_deletes_it").unwrap();
    let ns = lab.netns("n").unwrap();
    let (link, addrs, after) = in_netns(ns.name(), |dp| {
        dp.create_veth("calitest0", "peertest0").unwrap();
        let l = dp.link("calitest0").unwrap();
        dp.set_mtu(l.index, 1400).unwrap();
        dp.set_mac(l.index, [0xee; 6]).unwrap();
        dp.set_link_up(l.index, true).unwrap();
        dp.add_address(l.index, "10.79.0.1/32".parse().unwrap())
            .unwrap();
        let link = dp.link("calitest0").unwrap();
        let addrs = dp.addresses(l.index).unwrap();
        dp.delete_link(l.index).unwrap();
        let after = dp
            .links()
            .unwrap()
            .into_iter()
            .map(|l| l.name)
            .collect::<Vec<_>>();
        (link, addrs, after)
    });
    assert_eq!(link.mtu, 1400);
    assert_eq!(link.mac, Some([0xee; 6]));
    assert!(link.up);
    assert_eq!(link.kind.as_deref(), Some("veth"));
    assert!(
        addrs.contains(&"10.79.0.1/32".parse().unwrap()),
        "{addrs:?}"
    );
    assert!(
        !after.iter().any(|n| n == "calitest0" || n == "peertest0"),
        "{after:?}"
    );
}

#[test]
fn link_is_found_by_name_and_a_missing_one_is_no_such_link() {
    let lab = Lab::new("link_is_found_by_name_and_a_missing_one_is_no_such_link").unwrap();
    let ns = lab.netns("n").unwrap();
    ns.ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"])
        .unwrap();
    let shown: serde_json::Value =
        serde_json::from_str(&ns.ip(&["-j", "link", "show", "v1"]).unwrap()).unwrap();
    let want = shown[0]["ifindex"].as_u64().expect("ifindex") as u32;
    let (v1, missing) = in_netns(ns.name(), |dp| {
        (
            dp.link("v1").map(|l| (l.name, l.index)),
            dp.link("v9").map(|l| l.name),
        )
    });
    let (name, index) = v1.unwrap();
    assert_eq!((name.as_str(), index), ("v1", want));
    assert!(
        matches!(
            missing,
            Err(margay_felix::netlink::NetlinkError::NoSuchLink(ref n)) if n == "v9"
        ),
        "{missing:?}"
    );
}

/// WireGuard's rule (`not fwmark M/M lookup T`) and its table's routes, written and read back
/// through the netlink handle in a namespace (the device itself needs the wireguard module,
/// tested in the VM; a veth stands in for the routes' output device here).
#[test]
fn wireguard_rule_and_table_routes_round_trip_through_the_kernel() {
    use margay_felix::netlink::Rule;
    let lab = Lab::new("wireguard_rule_and_table_routes_round_trip").unwrap();
    let ns = lab.netns("n").unwrap();
    ns.ip(&[
        "link", "add", "wgd0", "type", "veth", "peer", "name", "wgd1",
    ])
    .unwrap();
    ns.ip(&["link", "set", "wgd0", "up"]).unwrap();
    let rule = Rule {
        v6: false,
        priority: 99,
        table: 1,
        fwmark: Some((0x100000, 0x100000)),
        invert: true,
    };
    let (added, rules, routes, deleted) = in_netns(ns.name(), move |dp| {
        let added = dp.add_rule(rule).map_err(|e| e.to_string());
        let rules = dp.rules().unwrap();
        let index = dp.link("wgd0").unwrap().index;
        let via = KernelRoute {
            dst: "10.244.2.0/26".parse().unwrap(),
            table: 1,
            protocol: 81,
            kind: RouteKind::Unicast,
            scope: SCOPE_LINK,
            gateway: None,
            oif: Some(index),
            onlink: false,
            priority: 0,
            multipath: Vec::new(),
            src: None,
        };
        let throw = KernelRoute {
            dst: "10.244.2.9/32".parse().unwrap(),
            kind: RouteKind::Other(9),
            scope: SCOPE_UNIVERSE,
            oif: None,
            ..via.clone()
        };
        let res = dp
            .apply_routes(&[
                RouteOp::Replace(via.clone()),
                RouteOp::Replace(throw.clone()),
            ])
            .unwrap();
        for r in res {
            r.unwrap();
        }
        let mut routes = dp.routes(Some(1), Some(81)).unwrap();
        routes.sort_by_key(|r| r.dst);
        assert_eq!(routes, vec![via, throw], "read back as written");
        let deleted = dp.delete_rule(rule).map_err(|e| e.to_string());
        (added, rules, routes.len(), deleted)
    });
    assert_eq!(added, Ok(()));
    assert!(rules.contains(&rule), "{rules:?}");
    assert_eq!(routes, 2);
    assert_eq!(deleted, Ok(()));
    let shown = ns.ip(&["rule", "show"]).unwrap();
    assert!(!shown.contains("lookup 1"), "{shown}");
}
