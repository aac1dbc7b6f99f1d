//! A multipath (ECMP) route in the real kernel, through felix's agent: a remote block learned
//! over two equal paths is one route `nexthop via A nexthop via B`; when one path goes, the
//! route is replaced by the remaining one in a single RTM_NEWROUTE (NLM_F_REPLACE), so the
//! kernel never reports it deleted (watched with `ip monitor route` the whole time); when the
//! path comes back, the same in reverse.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use margay_felix::agent::{Agent, AgentConfig};
use margay_felix::health::{Health, Metrics};
use margay_felix::model::{IpPool, Model, NodeInfo, RemoteRoute};
use margay_felix::reconcile::ReconcileConfig;
use margay_lab::{Lab, block4, block6, wait_for};

fn felix_route(ns: &str, dst: &str) -> String {
    let family = if dst.contains(':') { "-6" } else { "-4" };
    let out = Command::new("ip")
        .args(["-n", ns, family, "route", "show", dst, "proto", "81"])
        .output()
        .expect("ip route");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ip monitor route` in a namespace, killed (by its own PID) when dropped.
struct RouteMonitor {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl RouteMonitor {
    fn start(ns: &str, log: std::path::PathBuf) -> RouteMonitor {
        let file = std::fs::File::create(&log).expect("monitor log");
        let child = Command::new("ip")
            .args(["-n", ns, "monitor", "route"])
            .stdout(Stdio::from(file))
            .stderr(Stdio::null())
            .spawn()
            .expect("ip monitor");
        RouteMonitor { child, log }
    }

    /// Returns once the monitor reports a change: a marker route added (and removed) in `ns`.
    fn wait_listening(&self, ns: &str) {
        let marker = "192.0.2.77";
        wait_for("ip monitor listening", Duration::from_secs(5), &[], || {
            // Added and deleted each round: a change the monitor reports once it listens.
            for op in ["add", "del"] {
                let _ = Command::new("ip")
                    .args(["-n", ns, "route", op, "blackhole", marker])
                    .status();
            }
            std::thread::sleep(Duration::from_millis(50));
            if self.text().contains(marker) {
                Ok(())
            } else {
                Err(self.text())
            }
        })
        .unwrap();
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for RouteMonitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn multipath_route_shrinks_and_grows_by_replace_never_deleted() {
    shrink_and_grow(false);
}

#[test]
fn ipv6_multipath_route_shrinks_and_grows_by_replace_never_deleted() {
    shrink_and_grow(true);
}

/// The scenario, over IPv4 or IPv6 next hops and prefix.
fn shrink_and_grow(v6: bool) {
    let lab = Lab::new(if v6 {
        "multipath_route6"
    } else {
        "multipath_route"
    })
    .unwrap();
    let node = lab.netns("node").unwrap();
    let tor1 = lab.netns("tor1").unwrap();
    let tor2 = lab.netns("tor2").unwrap();
    let l1 = lab.link(&node, &tor1).unwrap();
    let l2 = lab.link(&node, &tor2).unwrap();
    let (a, b): (std::net::IpAddr, std::net::IpAddr) = if v6 {
        (l1.b.ip6().into(), l2.b.ip6().into())
    } else {
        (l1.b.ip4().into(), l2.b.ip4().into())
    };
    let remote: ipnet::IpNet = if v6 { block6().into() } else { block4().into() };
    let model = |also: Vec<std::net::IpAddr>, first: std::net::IpAddr| Model {
        node: NodeInfo {
            name: "node1".into(),
            address: Some(l1.a.v4),
            address_v6: Some(l1.a.v6),
            vxlan_tunnel_addr: None,
            vxlan_tunnel_mac: None,
            ipip_tunnel_addr: None,
            mtu: None,
            ..Default::default()
        },
        pools: vec![IpPool {
            cidr: "10.0.0.0/8".parse().unwrap(),
            ipip_mode: Default::default(),
            vxlan_mode: Default::default(),
            disabled: false,
            nat_outgoing: false,
        }],
        endpoints: vec![],
        affine_blocks: vec![],
        remote_routes: vec![RemoteRoute {
            prefix: remote,
            next_hop: first,
            also_via: also,
        }],
        vteps: vec![],
        peer_routes: vec![],
        settings: Default::default(),
    };
    let monitor = RouteMonitor::start(node.name(), lab.dir().join("monitor.txt"));
    monitor.wait_listening(node.name());
    let agent = Agent::spawn(
        AgentConfig {
            reconcile: ReconcileConfig::default(),
            resync_interval: Duration::from_secs(3600),
            netns: Some(format!("/var/run/netns/{}", node.name())),
        },
        Arc::new(Health::new(Duration::from_secs(10))),
        Arc::new(Metrics::new()),
    )
    .unwrap();
    let name = node.name().to_string();
    let dst = remote.to_string();
    let until = |what: &str, want: &dyn Fn(&str) -> bool| {
        wait_for(what, Duration::from_secs(5), &[], || {
            let r = felix_route(&name, &dst);
            if want(&r) { Ok(()) } else { Err(r) }
        })
        .unwrap()
    };
    let both = |r: &str| {
        r.contains(&format!("nexthop via {a} ")) && r.contains(&format!("nexthop via {b} "))
    };

    agent.update(model(vec![b], a));
    until("the multipath route through both ToRs", &both);
    // The path through `a` goes: `b` alone is left.
    agent.update(model(vec![], b));
    until("the route through b alone", &|r| {
        r.contains(&format!("{dst} via {b} ")) && !r.contains("nexthop")
    });
    // It comes back.
    agent.update(model(vec![a], b));
    until("the multipath route again", &both);
    // And the other one goes.
    agent.update(model(vec![], a));
    until("the route through a alone", &|r| {
        r.contains(&format!("{dst} via {a} ")) && !r.contains("nexthop")
    });
    agent.stop().unwrap();
    // Let the monitor print what it saw, then check it.
    std::thread::sleep(Duration::from_millis(200));
    let seen = monitor.text();
    let about: Vec<&str> = seen.lines().filter(|l| l.contains(&dst)).collect();
    assert!(
        about.iter().filter(|l| !l.starts_with("Deleted")).count() >= 4,
        "the monitor saw each of the four routes installed: {seen}"
    );
    assert!(
        !about.iter().any(|l| l.starts_with("Deleted")),
        "the route was deleted at some point (a delete-then-add): {seen}"
    );
}
