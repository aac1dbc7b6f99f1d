//! natOutgoing with the real kernel and the real `nft`: a "node" namespace with a pod behind a
//! cali veth (10.244.1.2/32, pool 10.244.0.0/16) and an "outside" namespace at 192.0.2.1 (the
//! node is 192.0.2.254/24 towards it and routes its default there). tcpdump in the outside
//! namespace shows which source address the pod's pings arrive with.
//!
//! The outside namespace also holds 10.246.0.1 (in another pool) and 10.244.2.1 (a remote block
//! of the pod's own pool), reached through routes felix programs: traffic to them is never
//! masqueraded. A `table ip other` with a rule sits beside felix's table and must stay as it is.

mod common;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};
use std::time::Duration;

use common::*;
use margay_lab::{Lab, Netns, Process, holds_for, wait_for};
use serde_json::{Value, json};

const POD_IP: &str = "10.244.1.2";
const NODE_IP: &str = "192.0.2.254";
const OUTSIDE_IP: &str = "192.0.2.1";
/// In pool 10.246.0.0/16 (no natOutgoing), behind the outside namespace.
const OTHER_POOL_IP: &str = "10.246.0.1";
/// In the pod's own pool (a remote block), behind the outside namespace.
const OWN_POOL_IP: &str = "10.244.2.1";

const OTHER_TABLE: &str = "table ip other {
    chain guard {
        type filter hook forward priority filter; policy accept;
        ip daddr 203.0.113.9 drop
    }
}
";

struct Scene {
    node: Netns,
    pod: Netns,
    outside: Netns,
    cali: String,
    /// `nft list table ip other` as it was before felix started.
    other_table: String,
}

fn scene(lab: &Lab) -> Scene {
    let node = lab.netns("node").unwrap();
    let pod = lab.netns("pod").unwrap();
    let outside = lab.netns("out").unwrap();

    // The pod, wired as Calico wires one.
    let cali = format!("cali{}0000001", lab.tag());
    veth(&node, &cali, "eth0", Some(&pod));
    pod.ip(&["addr", "add", &format!("{POD_IP}/32"), "dev", "eth0"])
        .unwrap();
    pod.ip(&[
        "route",
        "add",
        "169.254.1.1",
        "dev",
        "eth0",
        "scope",
        "link",
    ])
    .unwrap();
    pod.ip(&[
        "route",
        "add",
        "default",
        "via",
        "169.254.1.1",
        "dev",
        "eth0",
    ])
    .unwrap();

    // The world outside every pool.
    veth(&node, "uplink", "eth0", Some(&outside));
    node.ip(&["addr", "add", &format!("{NODE_IP}/24"), "dev", "uplink"])
        .unwrap();
    outside
        .ip(&["addr", "add", &format!("{OUTSIDE_IP}/24"), "dev", "eth0"])
        .unwrap();
    outside.ip(&["link", "set", "lo", "up"]).unwrap();
    for ip in [OTHER_POOL_IP, OWN_POOL_IP] {
        outside
            .ip(&["addr", "add", &format!("{ip}/32"), "dev", "lo"])
            .unwrap();
    }
    // Proxy ARP answers for 169.254.1.1 only when the node routes it elsewhere.
    node.ip(&["route", "add", "default", "via", OUTSIDE_IP])
        .unwrap();

    nft_apply(&node, OTHER_TABLE);
    let other_table = node.exec("nft", &["list", "table", "ip", "other"]).unwrap();
    Scene {
        node,
        pod,
        outside,
        cali,
        other_table,
    }
}

fn pool(cidr: &str, nat: bool) -> Value {
    json!({"cidr": cidr, "natOutgoing": nat})
}

fn model(s: &Scene, pools: Value) -> Value {
    json!({
        "node": {"name": "node1", "address": format!("{NODE_IP}/24")},
        "pools": pools,
        "endpoints": [{"name": "default/pod", "interface": s.cali, "ips": [format!("{POD_IP}/32")]}],
        "affineBlocks": ["10.244.1.0/26"],
        "remoteRoutes": [
            {"prefix": "10.246.0.0/26", "nextHop": OUTSIDE_IP},
            {"prefix": "10.244.2.0/26", "nextHop": OUTSIDE_IP},
        ],
    })
}

fn nft_apply(ns: &Netns, script: &str) {
    use std::io::Write;
    let mut child = ns
        .command("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "nft -f failed:\n{script}");
}

/// `(family, name)` of every table in `ns`.
fn tables(ns: &Netns) -> Vec<(String, String)> {
    let out = ns.exec("nft", &["-j", "list", "tables"]).unwrap();
    let doc: Value = serde_json::from_str(&out).unwrap();
    doc["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i.get("table"))
        .map(|t| {
            (
                t["family"].as_str().unwrap().to_string(),
                t["name"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn has_margay(ns: &Netns, family: &str) -> bool {
    tables(ns).contains(&(family.to_string(), "margay".to_string()))
}

fn wait_margay(ns: &Netns, felix: &Felix, family: &str, present: bool) {
    wait_for(
        &format!("table {family} margay present={present}"),
        Duration::from_secs(10),
        &[&felix.proc],
        || {
            let t = tables(ns);
            (t.contains(&(family.to_string(), "margay".to_string())) == present)
                .then_some(())
                .ok_or_else(|| format!("tables: {t:?}"))
        },
    )
    .unwrap();
}

/// The elements of set `set` in felix's table, as nft prints them.
fn set_elements(ns: &Netns, family: &str, set: &str) -> Vec<Value> {
    let out = ns
        .exec("nft", &["-j", "list", "set", family, "margay", set])
        .unwrap();
    let doc: Value = serde_json::from_str(&out).unwrap();
    doc["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|i| i.get("set"))
        .and_then(|s| s["elem"].as_array().cloned())
        .unwrap_or_default()
}

/// The handle of felix's IPv4 table: a rewrite gives the table a new one.
fn table_handle(ns: &Netns) -> Option<u64> {
    let out = ns
        .exec("nft", &["-j", "list", "table", "ip", "margay"])
        .ok()?;
    let doc: Value = serde_json::from_str(&out).ok()?;
    doc["nftables"]
        .as_array()?
        .iter()
        .find_map(|i| i.get("table"))
        .and_then(|t| t["handle"].as_u64())
}

/// tcpdump in a namespace, ended on drop.
struct Capture(Child);

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Pings `dst` from the pod and returns the source address the echo request arrives with in
/// the outside namespace, and whether the pod got a reply.
fn source_seen(s: &Scene, dst: &str) -> (String, bool) {
    let v6 = dst.contains(':');
    let filter = if v6 {
        format!("icmp6 and ip6[40] == 128 and dst host {dst}")
    } else {
        format!("icmp[icmptype] == icmp-echo and dst host {dst}")
    };
    let child = s
        .outside
        .command("timeout")
        .args([
            "10", "tcpdump", "-l", "-n", "-t", "-c1", "-i", "eth0", &filter,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut cap = Capture(child);
    let mut err = BufReader::new(cap.0.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("listening on") {
        line.clear();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "tcpdump did not start"
        );
    }
    let mut replied = false;
    for _ in 0..5 {
        replied |= s.pod.exec("ping", &["-c", "1", "-W", "1", dst]).is_ok();
        if cap.0.try_wait().unwrap().is_some() {
            break;
        }
    }
    cap.0.wait().unwrap();
    let mut out = String::new();
    cap.0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    // "IP 192.0.2.254 > 192.0.2.1: ICMP echo request, id 1, seq 1, length 64" (IPv6: "IP6")
    let proto = if v6 { "IP6" } else { "IP" };
    let src = out
        .split_whitespace()
        .skip_while(|w| *w != proto)
        .nth(1)
        .unwrap_or_else(|| panic!("no echo request to {dst} captured: {out:?}"))
        .to_string();
    (src, replied)
}

fn assert_other_table_untouched(s: &Scene) {
    let now = s
        .node
        .exec("nft", &["list", "table", "ip", "other"])
        .unwrap();
    assert_eq!(now, s.other_table, "felix changed a table it does not own");
}

fn wait_pod_route(s: &Scene, felix: &Felix) {
    wait_routes(&s.node, felix, "the pod's route", |all| {
        route_to(all, POD_IP)
            .filter(|r| r["dev"] == s.cali.as_str())
            .map(|_| ())
            .ok_or_else(|| "no route to the pod".to_string())
    });
}

#[test]
fn masquerades_pod_traffic_leaving_every_pool_and_stops_when_the_pool_changes_or_goes() {
    let lab = Lab::new("masquerades_pod_traffic_leaving_every_pool").unwrap();
    let s = scene(&lab);
    let nat_on = model(
        &s,
        json!([pool("10.244.0.0/16", true), pool("10.246.0.0/16", false)]),
    );
    let felix = start_felix(&lab, &s.node, "node1", &nat_on, "a");
    wait_pod_route(&s, &felix);
    wait_margay(&s.node, &felix, "ip", true);
    assert!(!has_margay(&s.node, "ip6"), "no IPv6 pool, no ip6 table");

    let (src, replied) = source_seen(&s, OUTSIDE_IP);
    assert_eq!(src, NODE_IP, "leaving every pool: masqueraded");
    assert!(replied, "the reply finds its way back through the NAT");
    assert_eq!(
        source_seen(&s, OTHER_POOL_IP).0,
        POD_IP,
        "to another pool: never masqueraded"
    );
    assert_eq!(
        source_seen(&s, OWN_POOL_IP).0,
        POD_IP,
        "to its own pool: never masqueraded"
    );
    assert_other_table_untouched(&s);

    // natOutgoing off: the table goes, the pod's own address leaves the node.
    felix.update(&model(
        &s,
        json!([pool("10.244.0.0/16", false), pool("10.246.0.0/16", false)]),
    ));
    wait_margay(&s.node, &felix, "ip", false);
    assert_eq!(source_seen(&s, OUTSIDE_IP).0, POD_IP);
    assert_other_table_untouched(&s);

    // On again, then the pool removed.
    felix.update(&nat_on);
    wait_margay(&s.node, &felix, "ip", true);
    assert_eq!(source_seen(&s, OUTSIDE_IP).0, NODE_IP);
    felix.update(&model(&s, json!([pool("10.246.0.0/16", false)])));
    wait_margay(&s.node, &felix, "ip", false);
    assert_eq!(source_seen(&s, OUTSIDE_IP).0, POD_IP);
    assert_other_table_untouched(&s);
    let (code, body) = http_get(&s.node, felix.port, "/readiness").unwrap();
    assert_eq!((code, body.trim()), (200, "ready"));
}

#[test]
fn restores_its_table_after_drift_and_leaves_a_correct_one_alone() {
    let lab = Lab::new("restores_its_table_after_drift").unwrap();
    let s = scene(&lab);
    let state = model(
        &s,
        json!([pool("10.244.0.0/16", true), pool("10.246.0.0/16", false)]),
    );
    let felix = start_felix(&lab, &s.node, "node1", &state, "a");
    wait_margay(&s.node, &felix, "ip", true);

    // Resyncs (every second here) find the table right and do not rewrite it.
    let handle = table_handle(&s.node).unwrap();
    holds_for(
        "the table is not rewritten while it is right",
        Duration::from_secs(3),
        &[&felix.proc],
        || {
            let now = table_handle(&s.node);
            (now == Some(handle))
                .then_some(())
                .ok_or_else(|| format!("handle {now:?}, was {handle}"))
        },
    )
    .unwrap();

    // Someone deletes the table: the next resync puts it back.
    s.node
        .exec("nft", &["delete", "table", "ip", "margay"])
        .unwrap();
    wait_margay(&s.node, &felix, "ip", true);
    assert_eq!(source_seen(&s, OUTSIDE_IP).0, NODE_IP);

    // Someone empties a set: its elements come back.
    s.node
        .exec("nft", &["flush", "set", "ip", "margay", "all-pools"])
        .unwrap();
    wait_for(
        "all-pools refilled",
        Duration::from_secs(10),
        &[&felix.proc],
        || {
            let e = set_elements(&s.node, "ip", "all-pools");
            (e.len() == 2).then_some(()).ok_or(format!("{e:?}"))
        },
    )
    .unwrap();
    assert_other_table_untouched(&s);

    // A restart with nothing changed keeps the table as it is.
    let handle = table_handle(&s.node).unwrap();
    let path = felix.state.clone();
    drop(felix);
    let felix = spawn_felix(&lab, &s.node, "node1", path, "b", "1");
    wait_for(
        "felix restarted and ready",
        Duration::from_secs(10),
        &[&felix.proc],
        || {
            let (code, body) = http_get(&s.node, felix.port, "/readiness")?;
            (code == 200).then_some(()).ok_or(body)
        },
    )
    .unwrap();
    assert_eq!(
        table_handle(&s.node),
        Some(handle),
        "restart rewrote the table"
    );
}

#[test]
fn ipv6_pool_gets_its_own_table() {
    let lab = Lab::new("ipv6_pool_gets_its_own_table").unwrap();
    let s = scene(&lab);
    let felix = start_felix(
        &lab,
        &s.node,
        "node1",
        &model(
            &s,
            json!([pool("fd00:244::/64", true), pool("10.244.0.0/16", false)]),
        ),
        "a",
    );
    wait_margay(&s.node, &felix, "ip6", true);
    assert!(!has_margay(&s.node, "ip"), "no IPv4 pool needs NAT");
    let masq = set_elements(&s.node, "ip6", "masq-pools");
    assert_eq!(
        masq,
        vec![json!({"prefix": {"addr": "fd00:244::", "len": 64}})]
    );
    let rules = s
        .node
        .exec("nft", &["list", "chain", "ip6", "margay", "nat"])
        .unwrap();
    assert!(
        rules.contains("ip6 saddr @masq-pools ip6 daddr != @all-pools masquerade fully-random"),
        "{rules}"
    );
}

const POD_IP6: &str = "fd00:244::2";
const NODE_IP6: &str = "fd00:192::254";
const OUTSIDE_IP6: &str = "fd00:192::1";
/// In pool fd00:246::/64 (no natOutgoing), behind the outside namespace.
const OTHER_POOL_IP6: &str = "fd00:246::1";

/// The scene made dual-stack: the pod gets an IPv6 address and its default route through the
/// host side's link-local address (as Calico's plugin does), the node and the outside an IPv6
/// address on their link, the outside one in another IPv6 pool.
fn add_ipv6(s: &Scene) {
    s.pod
        .ip(&[
            "addr",
            "add",
            &format!("{POD_IP6}/128"),
            "dev",
            "eth0",
            "nodad",
        ])
        .unwrap();
    let ll: Vec<Value> = serde_json::from_str(
        &s.node
            .ip(&["-j", "-6", "addr", "show", "dev", &s.cali])
            .unwrap(),
    )
    .unwrap();
    let gw = ll[0]["addr_info"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["scope"] == "link"))
        .and_then(|i| i["local"].as_str())
        .expect("the host side's link-local address")
        .to_string();
    s.pod
        .ip(&["-6", "route", "add", "default", "via", &gw, "dev", "eth0"])
        .unwrap();
    s.node
        .ip(&[
            "addr",
            "add",
            &format!("{NODE_IP6}/64"),
            "dev",
            "uplink",
            "nodad",
        ])
        .unwrap();
    s.outside
        .ip(&[
            "addr",
            "add",
            &format!("{OUTSIDE_IP6}/64"),
            "dev",
            "eth0",
            "nodad",
        ])
        .unwrap();
    s.outside
        .ip(&["addr", "add", &format!("{OTHER_POOL_IP6}/128"), "dev", "lo"])
        .unwrap();
    s.outside
        .ip(&["-6", "route", "add", "fd00:244::/64", "via", NODE_IP6])
        .unwrap();
    s.node
        .ip(&["-6", "route", "add", "default", "via", OUTSIDE_IP6])
        .unwrap();
}

fn model6(s: &Scene, nat: bool) -> Value {
    json!({
        "node": {"name": "node1", "address": format!("{NODE_IP}/24"), "addressV6": format!("{NODE_IP6}/64")},
        "pools": [pool("fd00:244::/64", nat), pool("fd00:246::/64", false)],
        "endpoints": [{"name": "default/pod", "interface": s.cali,
                       "ips": [format!("{POD_IP}/32"), format!("{POD_IP6}/128")]}],
        "affineBlocks": ["fd00:244::/122"],
        "remoteRoutes": [{"prefix": "fd00:246::/122", "nextHop": OUTSIDE_IP6}],
    })
}

/// IPv6 natOutgoing with traffic: a pod's ping leaving every pool arrives from the node's IPv6
/// address and is answered; one to another pool keeps the pod's address; natOutgoing off, the
/// pod's own address leaves the node.
#[test]
fn masquerades_ipv6_pod_traffic_leaving_every_pool() {
    let lab = Lab::new("masquerades_ipv6_pod_traffic").unwrap();
    let s = scene(&lab);
    add_ipv6(&s);
    let felix = start_felix(&lab, &s.node, "node1", &model6(&s, true), "a");
    wait_routes(&s.node, &felix, "the pod's /128", |_| {
        let all = ip_json(&s.node, &["-6", "route", "show", "proto", "81"]);
        route_to(&all, POD_IP6)
            .filter(|r| r["dev"] == s.cali.as_str())
            .map(|_| ())
            .ok_or_else(|| format!("no /128 to the pod: {}", show(&all)))
    });
    wait_margay(&s.node, &felix, "ip6", true);
    let (src, replied) = source_seen(&s, OUTSIDE_IP6);
    assert_eq!(src, NODE_IP6, "leaving every pool: masqueraded");
    assert!(replied, "the reply finds its way back through the NAT");
    assert_eq!(
        source_seen(&s, OTHER_POOL_IP6).0,
        POD_IP6,
        "to another pool: never masqueraded"
    );
    felix.update(&model6(&s, false));
    wait_margay(&s.node, &felix, "ip6", false);
    assert_eq!(source_seen(&s, OUTSIDE_IP6).0, POD_IP6);
    assert_other_table_untouched(&s);
}

#[test]
fn without_nft_reports_not_ready_and_still_programs_routes() {
    let lab = Lab::new("without_nft_reports_not_ready").unwrap();
    let s = scene(&lab);
    let path = lab.dir().join("node1.state.json");
    let state = model(&s, json!([pool("10.244.0.0/16", true)]));
    std::fs::write(&path, serde_json::to_string(&state).unwrap()).unwrap();
    // felix finds `nft` on PATH; give it a PATH without it.
    let proc = Process::spawn(
        &s.node,
        "felix-node1-nonft",
        "/usr/bin/env",
        [
            OsStr::new("PATH=/nonexistent"),
            felix_bin().as_os_str(),
            OsStr::new("--node"),
            OsStr::new("node1"),
            OsStr::new("--state"),
            path.as_os_str(),
            OsStr::new("--resync-interval"),
            OsStr::new("1"),
        ],
        lab.dir(),
    )
    .unwrap();
    let felix = Felix {
        proc,
        state: path,
        port: 9099,
    };
    wait_pod_route(&s, &felix);
    let body = wait_for(
        "readiness names nft",
        Duration::from_secs(10),
        &[&felix.proc],
        || {
            let (code, body) = http_get(&s.node, felix.port, "/readiness")?;
            (code == 503 && body.contains("nft"))
                .then_some(body.clone())
                .ok_or(body)
        },
    )
    .unwrap();
    assert!(body.contains("natOutgoing"), "{body}");
    assert!(!has_margay(&s.node, "ip"));
    assert_other_table_untouched(&s);
}
