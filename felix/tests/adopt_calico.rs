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
    // SAFETY: kill(2) on the PID of a child we started and have not reaped.
    unsafe { libc::kill(ping.pid() as i32, libc::SIGINT) };
    let done = wait_for("ping summary", Duration::from_secs(5), &[], || {
        let (out, _) = ping.log_paths();
        let text = std::fs::read_to_string(out).map_err(|e| e.to_string())?;
        text.contains("packet loss")
            .then_some(text.clone())
            .ok_or(text)
    })
    .unwrap();
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
    let summary = done
        .lines()
        .find(|l| l.contains("packet loss"))
        .unwrap()
        .to_string();
    assert!(summary.contains(" 0% packet loss"), "{summary}");
    let sent: u32 = summary.split_whitespace().next().unwrap().parse().unwrap();
    assert!(sent >= 100, "{summary}");
    drop(felix);
}
