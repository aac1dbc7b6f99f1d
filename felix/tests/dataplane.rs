//! felix in network namespaces, with the real kernel: the route set of each pool mode, drift
//! repair, ownership, restart without churn, stale-route removal.
//!
//! Each test builds a "node" namespace joined to a gateway namespace by a veth (its uplink,
//! 10.99.N.1/24, gateway .2), adds workload veths named like Calico's (`cali` + 11 characters)
//! with both ends in the node, and runs the `margay-felix` binary inside the node with
//! `ip netns exec` from a state file (standalone mode).

mod common;

use std::time::Duration;

use common::*;
use ipnet::Ipv4Net;
use margay_lab::{Lab, LinkAddrs, Netns, Process, block4, holds_for, wait_for};
use serde_json::{Value, json};

struct Node {
    ns: Netns,
    _gw: Netns,
    link: LinkAddrs,
}

impl Node {
    fn ip(&self) -> String {
        self.link.a.ip4().to_string()
    }
    fn gw(&self) -> String {
        self.link.b.ip4().to_string()
    }
    /// Another address of the uplink subnet (a node that does not exist; fine for `via`).
    fn neighbour(&self, host: u8) -> String {
        let [a, b, c, _] = self.link.a.ip4().octets();
        format!("{a}.{b}.{c}.{host}")
    }
}

fn node(lab: &Lab) -> Node {
    let ns = lab.netns("node").unwrap();
    let gw = lab.netns("gw").unwrap();
    let link = lab.link(&ns, &gw).unwrap();
    Node { ns, _gw: gw, link }
}

fn host(block: Ipv4Net, i: u32) -> String {
    std::net::Ipv4Addr::from(u32::from(block.network()) + i).to_string()
}

fn model(
    node: &Node,
    pool_mode: (&str, &str),
    endpoints: Value,
    blocks: Value,
    remote: Value,
    vteps: Value,
) -> Value {
    json!({
        "node": {
            "name": "node1",
            "address": node.link.a.v4.to_string(),
        },
        "pools": [{"cidr": "10.100.0.0/16", "ipipMode": pool_mode.0, "vxlanMode": pool_mode.1}],
        "endpoints": endpoints,
        "affineBlocks": blocks,
        "remoteRoutes": remote,
        "vteps": vteps,
    })
}

fn endpoint(iface: &str, ip: &str) -> Value {
    json!({"name": format!("default/{iface}"), "interface": iface, "ips": [format!("{ip}/32")]})
}

fn remote(prefix: Ipv4Net, nh: &str) -> Value {
    json!({"prefix": prefix.to_string(), "nextHop": nh})
}

fn is(r: Option<&Value>, field: &str, want: &str) -> Result<(), String> {
    match r {
        None => Err(format!("no route (wanted {field}={want})")),
        Some(r) if r[field] == want => Ok(()),
        Some(r) => Err(format!("route {r} has {field}={}, wanted {want}", r[field])),
    }
}

fn has_flag(r: Option<&Value>, flag: &str) -> Result<(), String> {
    let r = r.ok_or("no route")?;
    let flags = r["flags"].as_array().cloned().unwrap_or_default();
    if flags.iter().any(|f| f == flag) {
        Ok(())
    } else {
        Err(format!("route {r} lacks flag {flag}"))
    }
}

/// A standard Never-mode scene: one workload, one affine block, two remote blocks.
struct Scene {
    block: Ipv4Net,
    pod: String,
    r1: Ipv4Net,
    r2: Ipv4Net,
    cali: String,
}

fn scene(lab: &Lab, n: &Node) -> Scene {
    let cali = format!("cali{}0000001", lab.tag());
    veth(&n.ns, &cali, "pod1", None);
    let block = block4();
    Scene {
        pod: host(block, 5),
        block,
        r1: block4(),
        r2: block4(),
        cali,
    }
}

fn never_model(n: &Node, s: &Scene) -> Value {
    model(
        n,
        ("Never", "Never"),
        json!([endpoint(&s.cali, &s.pod)]),
        json!([s.block.to_string()]),
        json!([remote(s.r1, &n.gw()), remote(s.r2, &n.neighbour(3))]),
        json!([]),
    )
}

fn never_routes_ok(n: &Node, s: &Scene, all: &[Value]) -> Result<(), String> {
    let pod = route_to(all, &s.pod);
    is(pod, "dev", &s.cali)?;
    is(pod, "scope", "link")?;
    is(pod, "protocol", PROTO)?;
    let bh = route_to(all, &s.block.to_string());
    is(bh, "type", "blackhole")?;
    is(bh, "protocol", PROTO)?;
    is(route_to(all, &s.r1.to_string()), "gateway", &n.gw())?;
    is(route_to(all, &s.r2.to_string()), "gateway", &n.neighbour(3))?;
    is(route_to(all, &s.r2.to_string()), "protocol", PROTO)
}

#[test]
fn never_mode_programs_workload_blackhole_and_direct_routes() {
    let lab = Lab::new("never_mode_programs_workload_blackhole_and_direct_routes").unwrap();
    let n = node(&lab);
    let s = scene(&lab, &n);
    let felix = start_felix(&lab, &n.ns, "node1", &never_model(&n, &s), "a");
    let all = wait_routes(&n.ns, &felix, "Never-mode routes", |all| {
        never_routes_ok(&n, &s, all)
    });
    assert_eq!(
        felix_routes(&n.ns).len(),
        4,
        "exactly felix's four routes:\n{}",
        show(&all)
    );
    assert_eq!(
        n.ns.exec("sysctl", &["-n", "net.ipv4.ip_forward"])
            .unwrap()
            .trim(),
        "1"
    );
    let proxy =
        n.ns.exec(
            "cat",
            &[&format!("/proc/sys/net/ipv4/conf/{}/proxy_arp", s.cali)],
        )
        .unwrap();
    assert_eq!(proxy.trim(), "1");
    let metrics = wait_for("metrics", Duration::from_secs(5), &[&felix.proc], || {
        let (code, body) = http_get(&n.ns, felix.port, "/metrics")?;
        (code == 200 && body.contains("margay_felix_routes{kind=\"direct\"} 2"))
            .then_some(body.clone())
            .ok_or(body)
    })
    .unwrap();
    assert!(
        metrics.contains("margay_felix_routes{kind=\"workload\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("margay_felix_routes{kind=\"blackhole\"} 1"),
        "{metrics}"
    );
    let (code, body) = http_get(&n.ns, felix.port, "/readiness").unwrap();
    assert_eq!((code, body.trim()), (200, "ready"));
}

#[test]
fn a_learned_route_never_takes_the_place_of_a_local_workload_or_an_own_block() {
    let lab = Lab::new("a_learned_route_never_takes_the_place_of_a_local_workload").unwrap();
    let n = node(&lab);
    let s = scene(&lab, &n);
    let pod32: Ipv4Net = format!("{}/32", s.pod).parse().unwrap();
    let borrowed = host(s.block, 9);
    let borrowed32: Ipv4Net = format!("{borrowed}/32").parse().unwrap();
    let mut m = never_model(&n, &s);
    let remote_routes = m["remoteRoutes"].as_array_mut().unwrap();
    // A peer announces exactly the pod's /32 and exactly this node's block: both are ours.
    remote_routes.push(remote(pod32, &n.gw()));
    remote_routes.push(remote(s.block, &n.neighbour(3)));
    // An address of our block that another node borrowed: its /32 is that node's.
    remote_routes.push(remote(borrowed32, &n.neighbour(4)));
    let felix = start_felix(&lab, &n.ns, "node1", &m, "a");
    let all = wait_routes(
        &n.ns,
        &felix,
        "own routes kept, borrowed /32 programmed",
        |all| {
            never_routes_ok(&n, &s, all)?;
            is(route_to(all, &borrowed), "gateway", &n.neighbour(4))
        },
    );
    assert_eq!(
        felix_routes(&n.ns).len(),
        5,
        "workload, blackhole, two remote blocks and the borrowed /32:\n{}",
        show(&all)
    );
    wait_for(
        "shadowed metric",
        Duration::from_secs(5),
        &[&felix.proc],
        || {
            let (code, body) = http_get(&n.ns, felix.port, "/metrics")?;
            (code == 200 && body.contains("margay_felix_shadowed_routes 2"))
                .then_some(())
                .ok_or(body)
        },
    )
    .unwrap();
    // Over several periodic resyncs (1 s) the learned routes stay out, and the skip was
    // logged once for each.
    holds_for(
        "own routes kept",
        Duration::from_secs(3),
        &[&felix.proc],
        || never_routes_ok(&n, &s, &ip_json(&n.ns, &["route", "show", "table", "main"])),
    )
    .unwrap();
    let log = felix.proc.log_tail(400);
    for p in [pod32, s.block] {
        let needle = format!("route={p}");
        assert_eq!(
            log.lines()
                .filter(|l| l.contains("not programmed") && l.trim_end().ends_with(&needle))
                .count(),
            1,
            "one log line for {p}:\n{log}"
        );
    }
}

#[test]
fn a_bgp_peer_reachable_by_a_gateway_gets_its_host_route() {
    let lab = Lab::new("a_bgp_peer_reachable_by_a_gateway_gets_its_host_route").unwrap();
    let n = node(&lab);
    let s = scene(&lab, &n);
    let mut m = never_model(&n, &s);
    // BGPPeer `peerIP: 192.0.2.77`, `reachableBy: <the uplink's gateway>`.
    m["peerRoutes"] = json!([{"prefix": "192.0.2.77/32", "nextHop": n.gw()}]);
    let felix = start_felix(&lab, &n.ns, "node1", &m, "a");
    wait_routes(&n.ns, &felix, "peer host route via the gateway", |all| {
        never_routes_ok(&n, &s, all)?;
        let r = route_to(all, "192.0.2.77");
        is(r, "gateway", &n.gw())?;
        is(r, "protocol", PROTO)
    });
}

#[test]
fn vxlan_mode_programs_device_routes_neighbours_and_fdb() {
    let lab = Lab::new("vxlan_mode_programs_device_routes_neighbours_and_fdb").unwrap();
    let n = node(&lab);
    let s = scene(&lab, &n);
    let mut m = model(
        &n,
        ("Never", "Always"),
        json!([endpoint(&s.cali, &s.pod)]),
        json!([s.block.to_string()]),
        json!([remote(s.r1, &n.gw())]),
        json!([{"node": "node2", "nodeIp": n.gw(), "tunnelIp": s.r1.network().to_string(), "mac": "66:00:00:00:00:02"}]),
    );
    m["node"]["vxlanTunnelAddr"] = json!(s.block.network().to_string());
    m["node"]["vxlanTunnelMac"] = json!("66:00:00:00:00:01");
    let felix = start_felix(&lab, &n.ns, "node1", &m, "a");
    wait_routes(&n.ns, &felix, "VXLAN routes", |all| {
        let r = route_to(all, &s.r1.to_string());
        is(r, "gateway", &s.r1.network().to_string())?;
        is(r, "dev", "vxlan.margay")?;
        has_flag(r, "onlink")?;
        is(route_to(all, &s.pod), "dev", &s.cali)?;
        is(route_to(all, &s.block.to_string()), "type", "blackhole")
    });
    let link = &ip_json(&n.ns, &["-d", "link", "show", "vxlan.margay"])[0];
    let info = &link["linkinfo"]["info_data"];
    assert_eq!(info["id"], 4096, "{link}");
    assert_eq!(info["port"], 4789, "{link}");
    assert_eq!(info["local"], n.ip(), "{link}");
    assert_eq!(info["learning"], false, "{link}");
    assert_eq!(link["mtu"], 1450, "uplink MTU 1500 minus 50: {link}");
    assert_eq!(link["address"], "66:00:00:00:00:01", "{link}");
    let addrs =
        n.ns.ip(&["-4", "addr", "show", "dev", "vxlan.margay"])
            .unwrap();
    assert!(
        addrs.contains(&format!("{}/32", s.block.network())),
        "{addrs}"
    );
    let neigh = ip_json(&n.ns, &["neigh", "show", "dev", "vxlan.margay"]);
    assert!(
        neigh.iter().any(|e| e["dst"] == s.r1.network().to_string()
            && e["lladdr"] == "66:00:00:00:00:02"
            && e["state"][0] == "PERMANENT"),
        "{neigh:?}"
    );
    let fdb =
        n.ns.exec("bridge", &["fdb", "show", "dev", "vxlan.margay"])
            .unwrap();
    assert!(
        fdb.contains(&format!("66:00:00:00:00:02 dst {}", n.gw())),
        "{fdb}"
    );
}

/// Whether this kernel can make an ipip device (it cannot on the development machine).
fn kernel_has_ipip(lab: &Lab) -> bool {
    let probe = lab.netns("probe").unwrap();
    probe
        .ip(&["link", "add", "ipprobe", "type", "ipip"])
        .is_ok()
}

#[test]
fn ipip_mode_without_kernel_support_is_not_ready_and_programs_the_rest() {
    let lab =
        Lab::new("ipip_mode_without_kernel_support_is_not_ready_and_programs_the_rest").unwrap();
    let supported = kernel_has_ipip(&lab);
    let n = node(&lab);
    let s = scene(&lab, &n);
    let mut m = never_model(&n, &s);
    m["pools"][0]["ipipMode"] = json!("Always");
    let felix = start_felix(&lab, &n.ns, "node1", &m, "a");
    wait_routes(&n.ns, &felix, "local routes", |all| {
        is(route_to(all, &s.pod), "dev", &s.cali)?;
        is(route_to(all, &s.block.to_string()), "type", "blackhole")
    });
    if supported {
        wait_routes(&n.ns, &felix, "IPIP routes", |all| {
            is(route_to(all, &s.r1.to_string()), "dev", "tunl0")
        });
        return;
    }
    let body = wait_for(
        "not ready because of ipip",
        Duration::from_secs(5),
        &[&felix.proc],
        || {
            let (code, body) = http_get(&n.ns, felix.port, "/readiness")?;
            (code == 503 && body.contains("cannot create ipip devices (tunl0)"))
                .then_some(body.clone())
                .ok_or(format!("{code} {body}"))
        },
    )
    .unwrap();
    assert!(
        body.contains("routes through tunl0 are not programmed"),
        "{body}"
    );
    let routes = felix_routes(&n.ns);
    assert!(
        route_to(&routes, &s.r1.to_string()).is_none(),
        "{}",
        show(&routes)
    );
    let (_, stderr) = felix.proc.log_paths();
    let log = std::fs::read_to_string(stderr).unwrap();
    assert!(log.contains("cannot create ipip devices"), "{log}");
    // Liveness is unaffected: a missing feature is not a dead process.
    assert_eq!(http_get(&n.ns, felix.port, "/liveness").unwrap().0, 200);
}

/// Writes `state` and starts felix with a resync period long enough that only netlink
/// notifications can explain a repair seen within the test.
fn start_felix_slow_resync(lab: &Lab, ns: &Netns, state: &Value) -> Felix {
    let path = lab.dir().join("node1.state.json");
    std::fs::write(&path, serde_json::to_string_pretty(state).unwrap()).unwrap();
    spawn_felix(lab, ns, "node1", path, "a", "600")
}

/// Waits at most 3 s (the resync period is 600 s: the repair comes from a notification).
fn repaired(n: &Node, felix: &Felix, what: &str, check: impl Fn(&[Value]) -> Result<(), String>) {
    wait_for(what, Duration::from_secs(3), &[&felix.proc], || {
        let all = ip_json(&n.ns, &["route", "show"]);
        check(&all).map_err(|e| format!("{e}\n{}", show(&all)))
    })
    .unwrap();
}

#[test]
fn restores_deleted_and_changed_routes_from_notifications() {
    let lab = Lab::new("restores_deleted_and_changed_routes_from_notifications").unwrap();
    let n = node(&lab);
    let s = scene(&lab, &n);
    let felix = start_felix_slow_resync(&lab, &n.ns, &never_model(&n, &s));
    wait_routes(&n.ns, &felix, "Never-mode routes", |all| {
        never_routes_ok(&n, &s, all)
    });

    n.ns.ip(&["route", "del", &s.pod]).unwrap();
    repaired(&n, &felix, "the deleted pod route back", |all| {
        is(route_to(all, &s.pod), "dev", &s.cali)
    });

    n.ns.ip(&[
        "route",
        "replace",
        &s.block.to_string(),
        "via",
        &n.gw(),
        "proto",
        PROTO,
    ])
    .unwrap();
    repaired(&n, &felix, "the blackhole restored", |all| {
        is(route_to(all, &s.block.to_string()), "type", "blackhole")
    });

    n.ns.ip(&[
        "route",
        "replace",
        &s.r1.to_string(),
        "via",
        &n.neighbour(9),
        "proto",
        PROTO,
    ])
    .unwrap();
    repaired(&n, &felix, "the changed gateway restored", |all| {
        is(route_to(all, &s.r1.to_string()), "gateway", &n.gw())
    });

    // The interface going down drops its routes silently (IPv4 sends no notification); felix
    // re-adds the pod route when the link comes back up.
    n.ns.ip(&["link", "set", &s.cali, "down"]).unwrap();
    n.ns.ip(&["link", "set", &s.cali, "up"]).unwrap();
    repaired(&n, &felix, "the pod route back after link down/up", |all| {
        is(route_to(all, &s.pod), "dev", &s.cali)
    });
}

#[test]
fn never_touches_routes_of_other_protocols_over_resyncs() {
    let lab = Lab::new("never_touches_routes_of_other_protocols_over_resyncs").unwrap();
    let n = node(&lab);
    let s = scene(&lab, &n);
    // A static route elsewhere in the table, and one holding a destination felix wants.
    let other = block4().to_string();
    n.ns.ip(&["route", "add", &other, "via", &n.gw(), "proto", "static"])
        .unwrap();
    let taken = block4();
    n.ns.ip(&[
        "route",
        "add",
        &taken.to_string(),
        "via",
        &n.neighbour(7),
        "proto",
        "static",
    ])
    .unwrap();
    let mut m = never_model(&n, &s);
    m["remoteRoutes"]
        .as_array_mut()
        .unwrap()
        .push(remote(taken, &n.gw()));
    let statics = || ip_json(&n.ns, &["route", "show", "proto", "static"]);
    let before = statics();
    assert_eq!(before.len(), 2);

    let felix = start_felix(&lab, &n.ns, "node1", &m, "a");
    wait_routes(&n.ns, &felix, "Never-mode routes", |all| {
        never_routes_ok(&n, &s, all)
    });
    // Over several periodic resyncs (1 s), the static routes stay exactly as they were.
    holds_for(
        "static routes untouched",
        Duration::from_secs(3),
        &[&felix.proc],
        || {
            let now = statics();
            (now == before).then_some(()).ok_or(show(&now))
        },
    )
    .unwrap();
    let metrics = http_get(&n.ns, felix.port, "/metrics").unwrap().1;
    assert!(
        !metrics.contains("margay_felix_route_conflicts_total 0\n"),
        "the held destination counts as a conflict: {metrics}"
    );
}

#[test]
fn restart_with_nothing_changed_makes_no_route_changes() {
    let lab = Lab::new("restart_with_nothing_changed_makes_no_route_changes").unwrap();
    let n = node(&lab);
    let s = scene(&lab, &n);
    let mut felix = start_felix(&lab, &n.ns, "node1", &never_model(&n, &s), "a");
    wait_routes(&n.ns, &felix, "Never-mode routes", |all| {
        never_routes_ok(&n, &s, all)
    });
    let state = felix.state.clone();
    felix.proc.stop();

    // IPv4 only: felix programs IPv4 here, and IPv6 link-local routes come and go on their own
    // as the veths finish DAD.
    let mut monitor = Process::spawn(
        &n.ns,
        "monitor",
        "ip",
        ["-4", "monitor", "route"],
        lab.dir(),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let felix = spawn_felix(&lab, &n.ns, "node1", state, "b", "1");
    wait_for(
        "second felix ready",
        Duration::from_secs(10),
        &[&felix.proc],
        || {
            let (code, body) = http_get(&n.ns, felix.port, "/readiness")?;
            (code == 200).then_some(()).ok_or(body)
        },
    )
    .unwrap();
    // Two more periodic resyncs.
    std::thread::sleep(Duration::from_millis(2500));
    // The kernel hides a replace by an identical route, so also ask felix: it wrote nothing.
    let metrics = http_get(&n.ns, felix.port, "/metrics").unwrap().1;
    assert!(
        !metrics.contains("margay_felix_route_writes_total{"),
        "route writes after restart:\n{metrics}"
    );
    let (stdout, _) = monitor.log_paths();
    let seen = std::fs::read_to_string(stdout).unwrap();

    // The monitor does see changes (so the empty log above means something).
    n.ns.ip(&["route", "add", "10.250.0.0/24", "via", &n.gw()])
        .unwrap();
    wait_for(
        "monitor sees a change",
        Duration::from_secs(5),
        &[&monitor],
        || {
            let text = std::fs::read_to_string(stdout).map_err(|e| e.to_string())?;
            text.contains("10.250.0.0/24").then_some(()).ok_or(text)
        },
    )
    .unwrap();
    monitor.stop();
    assert_eq!(seen, "", "route events during the restart");
    never_routes_ok(&n, &s, &ip_json(&n.ns, &["route", "show"])).unwrap();
}

#[test]
fn removes_its_stale_routes_when_an_endpoint_or_remote_block_goes_away() {
    let lab =
        Lab::new("removes_its_stale_routes_when_an_endpoint_or_remote_block_goes_away").unwrap();
    let n = node(&lab);
    let s = scene(&lab, &n);
    let cali2 = format!("cali{}0000002", lab.tag());
    veth(&n.ns, &cali2, "pod2", None);
    let pod2 = host(s.block, 6);
    let mut m = never_model(&n, &s);
    m["endpoints"]
        .as_array_mut()
        .unwrap()
        .push(endpoint(&cali2, &pod2));
    let felix = start_felix(&lab, &n.ns, "node1", &m, "a");
    wait_routes(&n.ns, &felix, "all routes", |all| {
        never_routes_ok(&n, &s, all)?;
        is(route_to(all, &pod2), "dev", &cali2)
    });

    felix.update(
        &never_model(&n, &s)
            .as_object()
            .map(|o| {
                let mut o = o.clone();
                o["remoteRoutes"] = json!([remote(s.r1, &n.gw())]);
                Value::Object(o)
            })
            .unwrap(),
    );
    wait_routes(&n.ns, &felix, "pod2 and r2 gone", |all| {
        if route_to(all, &pod2).is_some() {
            return Err("pod2 still routed".into());
        }
        if route_to(all, &s.r2.to_string()).is_some() {
            return Err("r2 still routed".into());
        }
        is(route_to(all, &s.pod), "dev", &s.cali)?;
        is(route_to(all, &s.r1.to_string()), "gateway", &n.gw())
    });
    assert_eq!(felix_routes(&n.ns).len(), 3);
}

/// The route writes felix counted so far, as its /metrics lists them.
fn route_writes(n: &Node, felix: &Felix) -> Vec<String> {
    http_get(&n.ns, felix.port, "/metrics")
        .unwrap()
        .1
        .lines()
        .filter(|l| l.starts_with("margay_felix_route_writes_total{"))
        .map(String::from)
        .collect()
}

/// IPv6 routes on a dual-stack node: the pod's /128 on its veth, the block's blackhole, a
/// remote block via the node's IPv6 neighbour; periodic resyncs rewrite none of them (the
/// kernel reports IPv6 routes with metric 1024 and scope universe whatever felix wrote), and
/// a remote block that goes from the model goes from the kernel.
#[test]
fn ipv6_routes_are_programmed_never_rewritten_and_removed_when_stale() {
    let lab = Lab::new("ipv6_routes_are_programmed_never_rewritten").unwrap();
    let n = node(&lab);
    let cali = format!("cali{}0000001", lab.tag());
    veth(&n.ns, &cali, "pod1", None);
    let gw6 = n.link.b.ip6().to_string();
    let state = |remote: bool| {
        let mut routes = vec![json!({"prefix": "fd00:100::40/122", "nextHop": gw6})];
        if !remote {
            routes.clear();
        }
        json!({
            "node": {"name": "node1", "address": n.link.a.v4.to_string(),
                     "addressV6": n.link.a.v6.to_string()},
            "pools": [{"cidr": "fd00:100::/48"}],
            "endpoints": [{"name": "default/p", "interface": cali, "ips": ["fd00:100::5/128"]}],
            "affineBlocks": ["fd00:100::/122"],
            "remoteRoutes": routes,
        })
    };
    let felix = start_felix(&lab, &n.ns, "node1", &state(true), "a");
    let v6 = || ip_json(&n.ns, &["-6", "route", "show", "proto", "81"]);
    wait_for(
        "IPv6 routes",
        Duration::from_secs(10),
        &[&felix.proc],
        || {
            let all = v6();
            is(route_to(&all, "fd00:100::5"), "dev", &cali)
                .and_then(|()| is(route_to(&all, "fd00:100::/122"), "type", "blackhole"))
                .and_then(|()| is(route_to(&all, "fd00:100::40/122"), "gateway", &gw6))
                .map_err(|e| format!("{e}\n{}", show(&all)))
        },
    )
    .unwrap();
    assert_eq!(
        sysctl(&n.ns, "net.ipv6.conf.all.forwarding"),
        "1",
        "IPv6 forwarding on"
    );
    // Settled: two more periodic resyncs write nothing.
    std::thread::sleep(Duration::from_millis(1500));
    let before = route_writes(&n, &felix);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(route_writes(&n, &felix), before, "resyncs rewrote routes");

    felix.update(&state(false));
    wait_for(
        "the stale IPv6 block removed",
        Duration::from_secs(10),
        &[&felix.proc],
        || {
            let all = v6();
            match route_to(&all, "fd00:100::40/122") {
                None => Ok(()),
                Some(r) => Err(format!("still there: {r}")),
            }
        },
    )
    .unwrap();
    assert!(route_to(&v6(), "fd00:100::5").is_some());
}

fn sysctl(ns: &Netns, name: &str) -> String {
    ns.exec("sysctl", &["-n", name]).unwrap().trim().to_string()
}
