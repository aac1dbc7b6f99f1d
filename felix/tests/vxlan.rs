//! VXLAN end to end on this machine's kernel: two node namespaces on one switch, a pod
//! namespace behind each (veth made here with `ip`, as the CNI plugin will later), felix in each
//! node in VXLAN Always mode; the pods ping each other across `vxlan.margay`.

mod common;

use std::time::Duration;

use common::*;
use ipnet::Ipv4Net;
use margay_lab::{Lab, Netns, block4, wait_for};
use serde_json::json;

struct Pod {
    ns: Netns,
    ip: String,
    cali: String,
}

/// A pod behind `node`, wired as [`wire_pod`] does.
fn pod(lab: &Lab, node: &Netns, role: &str, ip: &str, index: u8) -> Pod {
    let ns = lab.netns(role).unwrap();
    let cali = format!("cali{}{:07}", lab.tag(), index);
    wire_pod(node, &ns, &cali, ip);
    Pod {
        ns,
        ip: ip.to_string(),
        cali,
    }
}

fn host(block: Ipv4Net, i: u32) -> String {
    std::net::Ipv4Addr::from(u32::from(block.network()) + i).to_string()
}

#[test]
fn pods_on_two_nodes_ping_across_vxlan() {
    let lab = Lab::new("pods_on_two_nodes_ping_across_vxlan").unwrap();
    let sw = lab.switch("sw").unwrap();
    let n1 = lab.netns("n1").unwrap();
    let n2 = lab.netns("n2").unwrap();
    let a1 = sw.attach(&n1).unwrap();
    let a2 = sw.attach(&n2).unwrap();
    // A node's default route: proxy ARP answers for 169.254.1.1 only when the host routes that
    // address somewhere other than the asking interface.
    let gw = sw.subnet().host(254).ip4().to_string();
    n1.ip(&["route", "add", "default", "via", &gw]).unwrap();
    n2.ip(&["route", "add", "default", "via", &gw]).unwrap();

    let (b1, b2) = (block4(), block4());
    let p1 = pod(&lab, &n1, "p1", &host(b1, 5), 1);
    let p2 = pod(&lab, &n2, "p2", &host(b2, 5), 2);
    let (mac1, mac2) = ("66:00:00:00:01:01", "66:00:00:00:01:02");
    let vteps = json!([
        {"node": "n1", "nodeIp": a1.ip4().to_string(), "tunnelIp": b1.network().to_string(), "mac": mac1},
        {"node": "n2", "nodeIp": a2.ip4().to_string(), "tunnelIp": b2.network().to_string(), "mac": mac2},
    ]);
    let state = |name: &str,
                 addr: Ipv4Net,
                 block: Ipv4Net,
                 mac: &str,
                 p: &Pod,
                 rb: Ipv4Net,
                 rnh: &str| {
        json!({
            "node": {"name": name, "address": addr.to_string(),
                     "vxlanTunnelAddr": block.network().to_string(), "vxlanTunnelMac": mac},
            "pools": [{"cidr": "10.100.0.0/16", "vxlanMode": "Always"}],
            "endpoints": [{"name": format!("default/{name}"), "interface": p.cali, "ips": [format!("{}/32", p.ip)]}],
            "affineBlocks": [block.to_string()],
            "remoteRoutes": [{"prefix": rb.to_string(), "nextHop": rnh}],
            "vteps": vteps,
        })
    };
    let f1 = start_felix(
        &lab,
        &n1,
        "n1",
        &state("n1", a1.v4, b1, mac1, &p1, b2, &a2.ip4().to_string()),
        "a",
    );
    let f2 = start_felix(
        &lab,
        &n2,
        "n2",
        &state("n2", a2.v4, b2, mac2, &p2, b1, &a1.ip4().to_string()),
        "a",
    );
    wait_routes(&n1, &f1, "n1 routes to n2's block", |all| {
        route_to(all, &b2.to_string())
            .filter(|r| r["dev"] == "vxlan.margay")
            .map(|_| ())
            .ok_or_else(|| "no vxlan route".to_string())
    });
    wait_routes(&n2, &f2, "n2 routes to n1's block", |all| {
        route_to(all, &b1.to_string())
            .filter(|r| r["dev"] == "vxlan.margay")
            .map(|_| ())
            .ok_or_else(|| "no vxlan route".to_string())
    });

    wait_for(
        "p1 pings p2",
        Duration::from_secs(15),
        &[&f1.proc, &f2.proc],
        || {
            p1.ns
                .exec("ping", &["-c", "1", "-W", "1", &p2.ip])
                .map(|_| ())
                .map_err(|e| e.to_string())
        },
    )
    .unwrap();
    let out = p2
        .ns
        .exec("ping", &["-c", "3", "-i", "0.2", "-W", "1", &p1.ip])
        .unwrap();
    assert!(out.contains("3 received"), "{out}");

    // The packets did cross the VXLAN device.
    let stats = &ip_json(&n1, &["-s", "link", "show", "vxlan.margay"])[0];
    assert!(
        stats["stats64"]["tx"]["packets"].as_u64().unwrap_or(0) >= 3,
        "{stats}"
    );
}
