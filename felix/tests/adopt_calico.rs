//! felix taking over a node calico-node wired: the pod's `cali` veth and its `/32` device
//! route (protocol `boot`, Calico felix's `deviceRouteProtocol` default), the block's
//! blackhole and a remote block's route (protocol `bird`, from Calico's BIRD). With
//! `--adopt-route-protocols calico` felix replaces each in place, so a ping to the pod through
//! the node loses nothing; a route of a protocol not adopted stays untouched.

mod common;

use std::time::Duration;

use common::*;
use margay_lab::{Lab, Process, block4, wait_for};
use serde_json::{Value, json};

fn host(block: ipnet::Ipv4Net, i: u32) -> String {
    std::net::Ipv4Addr::from(u32::from(block.network()) + i).to_string()
}

fn route_events(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Stops a running `ping` and returns what it printed, its summary included.
fn stop_ping(ping: &Process) -> String {
    // SAFETY: kill(2) on the PID of a child we started and have not reaped.
    unsafe { libc::kill(ping.pid() as i32, libc::SIGINT) };
    wait_for("ping summary", Duration::from_secs(5), &[], || {
        let (out, _) = ping.log_paths();
        let text = std::fs::read_to_string(out).map_err(|e| e.to_string())?;
        text.contains("packet loss")
            .then_some(text.clone())
            .ok_or(text)
    })
    .unwrap()
}

/// A ping's output says 100 or more sent and none lost.
fn assert_no_loss(done: &str) {
    let summary = done
        .lines()
        .find(|l| l.contains("packet loss"))
        .unwrap()
        .to_string();
    assert!(summary.contains(" 0% packet loss"), "{summary}");
    let sent: u32 = summary.split_whitespace().next().unwrap().parse().unwrap();
    assert!(sent >= 100, "{summary}");
}

#[test]
fn felix_adopts_calicos_routes_in_place_without_losing_a_ping() {
    let lab = Lab::new("felix_adopts_calicos_routes_in_place").unwrap();
    let node = lab.netns("node").unwrap();
    let gw = lab.netns("gw").unwrap();
    let pod = lab.netns("pod").unwrap();
    let link = lab.link(&node, &gw).unwrap();
    let (node_ip, gw_ip) = (link.a.ip4().to_string(), link.b.ip4().to_string());

    // What calico-node left: the pod wired as Calico wires it, forwarding and proxy ARP on,
    // the pod's route, the block's blackhole and a remote block from BIRD.
    let block = block4();
    let remote = block4();
    let other = block4();
    let pod_ip = host(block, 5);
    let cali = format!("cali{}0000001", lab.tag());
    calico_pod(&node, &pod, &cali, &pod_ip, &block.to_string());
    let pod32 = format!("{pod_ip}/32");
    for args in [
        vec![
            "route",
            "add",
            &remote.to_string(),
            "via",
            &gw_ip,
            "proto",
            "bird",
        ],
        // A route felix wants but whose protocol it is not told to adopt.
        vec![
            "route",
            "add",
            &other.to_string(),
            "via",
            &gw_ip,
            "proto",
            "static",
        ],
    ] {
        node.ip(&args).unwrap();
    }
    gw.ip(&["route", "add", &block.to_string(), "via", &node_ip])
        .unwrap();
    // The node's default route (proxy ARP answers for 169.254.1.1 through it).
    node.ip(&["route", "add", "default", "via", &gw_ip])
        .unwrap();
    let before = ip_json(&node, &["route", "show", "proto", "boot"]);
    assert!(route_to(&before, &pod_ip).is_some(), "{}", show(&before));

    let state = json!({
        "node": {"name": "node1", "address": link.a.v4.to_string()},
        "pools": [{"cidr": "10.100.0.0/16", "ipipMode": "Never", "vxlanMode": "Never"}],
        "endpoints": [{"name": "default/web", "interface": cali, "ips": [pod32]}],
        "affineBlocks": [block.to_string()],
        "remoteRoutes": [
            {"prefix": remote.to_string(), "nextHop": gw_ip},
            {"prefix": other.to_string(), "nextHop": gw_ip}
        ],
        "vteps": [],
    });
    let state_path = lab.dir().join("node1.state.json");
    std::fs::write(&state_path, serde_json::to_string_pretty(&state).unwrap()).unwrap();

    // Every route event in the node, and 100 pings a second from outside to the pod.
    let mut monitor = Process::spawn(
        &node,
        "monitor",
        "ip",
        ["-4", "monitor", "route"],
        lab.dir(),
    )
    .unwrap();
    let ping = Process::spawn(
        &gw,
        "ping",
        "ping",
        ["-n", "-i", "0.01", "-W", "1", &pod_ip],
        lab.dir(),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));

    let port = 9099;
    let felix = Process::spawn(
        &node,
        "felix",
        felix_bin(),
        [
            "--node",
            "node1",
            "--state",
            state_path.to_str().unwrap(),
            "--http-port",
            &port.to_string(),
            "--resync-interval",
            "1",
            "--adopt-route-protocols",
            "calico",
        ],
        lab.dir(),
    )
    .expect("start felix");
    let all = wait_for("routes adopted", Duration::from_secs(10), &[&felix], || {
        let all = ip_json(&node, &["route", "show"]);
        let ours = |dst: &str| route_to(&all, dst).is_some_and(|r| r["protocol"] == PROTO);
        (ours(&pod_ip) && ours(&block.to_string()) && ours(&remote.to_string()))
            .then_some(all.clone())
            .ok_or(show(&all))
    })
    .unwrap();
    // Two more periodic resyncs, pings still running.
    std::thread::sleep(Duration::from_millis(2500));
    let done = stop_ping(&ping);
    monitor.stop();

    // The routes are felix's now, the same ones, and nothing was ever deleted.
    let pod_route = route_to(&all, &pod_ip).unwrap();
    assert_eq!(
        pod_route["dev"],
        Value::from(cali.as_str()),
        "{}",
        show(&all)
    );
    assert_eq!(pod_route["scope"], "link");
    assert_eq!(
        route_to(&all, &block.to_string()).unwrap()["type"],
        "blackhole"
    );
    assert_eq!(
        route_to(&all, &remote.to_string()).unwrap()["gateway"],
        Value::from(gw_ip.as_str())
    );
    assert_eq!(
        route_to(&all, &other.to_string()).unwrap()["protocol"],
        "static",
        "a protocol not adopted is left alone: {}",
        show(&all)
    );
    let events = route_events(monitor.log_paths().0);
    assert!(
        !events.lines().any(|l| l.starts_with("Deleted")),
        "a route was deleted during the takeover:\n{events}"
    );
    assert!(
        events.contains(&pod_ip),
        "the monitor saw the adoption:\n{events}"
    );
    assert_no_loss(&done);
    drop(felix);
}

/// What calico-node's felix builds for an IPv6 VXLAN pool on node `ns`: `vxlan-v6.calico`
/// (VNI 4096, port 4789, local `local`, MAC `mac`, the tunnel address as a /128), and towards
/// the peer node its NDP entry, FDB entry and block route (Calico felix's protocol 80).
fn calico_vxlan_v6(ns: &margay_lab::Netns, local: &str, mac: &str, tun: &str, peer: [&str; 4]) {
    let [peer_ip, peer_tun, peer_mac, peer_block] = peer;
    let dev = "vxlan-v6.calico";
    for args in [
        vec![
            "link",
            "add",
            dev,
            "address",
            mac,
            "type",
            "vxlan",
            "id",
            "4096",
            "dstport",
            "4789",
            "local",
            local,
            "nolearning",
        ],
        vec!["link", "set", dev, "up"],
        vec![
            "-6",
            "addr",
            "add",
            &format!("{tun}/128"),
            "dev",
            dev,
            "nodad",
        ],
        vec![
            "-6",
            "neigh",
            "replace",
            peer_tun,
            "lladdr",
            peer_mac,
            "dev",
            dev,
            "nud",
            "permanent",
        ],
        vec![
            "-6", "route", "add", peer_block, "via", peer_tun, "dev", dev, "onlink", "proto", "80",
        ],
    ] {
        ns.ip(&args).unwrap();
    }
    ns.exec(
        "bridge",
        &[
            "fdb",
            "replace",
            peer_mac,
            "dev",
            dev,
            "dst",
            peer_ip,
            "self",
            "permanent",
        ],
    )
    .unwrap();
}

#[test]
fn felix_adopts_calicos_vxlan_v6_device_in_place_without_losing_a_ping() {
    let lab = Lab::new("felix_adopts_calicos_vxlan_v6").unwrap();
    let n1 = lab.netns("n1").unwrap();
    let n2 = lab.netns("n2").unwrap();
    let link = lab.link(&n1, &n2).unwrap();
    let (ip1, ip2) = (link.a.ip6().to_string(), link.b.ip6().to_string());
    let (b1, b2) = (margay_lab::block6(), margay_lab::block6());
    let tun = |b: ipnet::Ipv6Net| std::net::Ipv6Addr::from(u128::from(b.network()) + 1).to_string();
    let (t1, t2) = (tun(b1), tun(b2));
    let (m1, m2) = ("66:00:00:00:16:01", "66:00:00:00:16:02");
    calico_vxlan_v6(&n1, &ip1, m1, &t1, [&ip2, &t2, m2, &b2.to_string()]);
    calico_vxlan_v6(&n2, &ip2, m2, &t2, [&ip1, &t1, m1, &b1.to_string()]);

    // 100 pings a second from n1's VTEP to n2's, through Calico's device.
    let ping = Process::spawn(
        &n1,
        "ping",
        "ping",
        ["-6", "-n", "-i", "0.01", "-W", "1", "-I", &t1, &t2],
        lab.dir(),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));

    let state = json!({
        "node": {"name": "n1", "addressV6": link.a.v6.to_string(),
                 "vxlanTunnelAddrV6": t1, "vxlanTunnelMacV6": m1},
        "pools": [{"cidr": "fd00:100::/64", "vxlanMode": "Always"}],
        "affineBlocks": [b1.to_string()],
        "remoteRoutes": [{"prefix": b2.to_string(), "nextHop": ip2}],
        "vteps": [{"node": "n2", "nodeIp": ip2, "tunnelIp": t2, "mac": m2}],
    });
    let state_path = lab.dir().join("n1.state.json");
    std::fs::write(&state_path, serde_json::to_string_pretty(&state).unwrap()).unwrap();
    let felix = Process::spawn(
        &n1,
        "felix",
        felix_bin(),
        [
            "--node",
            "n1",
            "--state",
            state_path.to_str().unwrap(),
            "--http-port",
            "9099",
            "--resync-interval",
            "1",
            "--adopt-route-protocols",
            "calico",
        ],
        lab.dir(),
    )
    .expect("start felix");
    let b2s = b2.to_string();
    wait_for("route adopted", Duration::from_secs(10), &[&felix], || {
        let all = ip_json(&n1, &["-6", "route", "show"]);
        route_to(&all, &b2s)
            .filter(|r| r["protocol"] == PROTO && r["dev"] == "vxlan-v6.calico")
            .map(|_| ())
            .ok_or(show(&all))
    })
    .unwrap();
    // Two more periodic resyncs, pings still running.
    std::thread::sleep(Duration::from_millis(2500));
    let done = stop_ping(&ping);

    // Calico's device carries felix's routes as it is: no vxlan-v6.margay beside it (the
    // kernel would refuse a second IPv6 device on VNI 4096, port 4789), its NDP entry kept.
    assert!(
        n1.ip_json(&["link", "show", "vxlan-v6.margay"]).is_err(),
        "felix made its own IPv6 device beside Calico's"
    );
    let neigh = ip_json(&n1, &["-6", "neigh", "show", "dev", "vxlan-v6.calico"]);
    assert!(
        neigh
            .iter()
            .any(|n| n["dst"] == t2.as_str() && n["lladdr"] == m2),
        "{}",
        show(&neigh)
    );
    assert_no_loss(&done);
    drop(felix);
}
