//! Dual-homed nodes (issue 13 §3): `margay-lab`'s `--tors 2` lab (3 nodes, each on its own link
//! to two BIRD ToRs, BFD 3 × 100 ms, every remote block one multipath route over both), with
//! pods pinging across the fabric at 100 per second while links fail. A failed link drops
//! everything both ways (nftables in the node's namespace: no carrier change, no BGP goodbye;
//! this kernel has no netem), so only BFD or the hold timer can notice.
//!
//! One run, in order:
//! 1. node1's link to the first ToR fails: margay's BFD session Down, node2's multipath route to
//!    node1's block reduced to the second ToR, pings restored within 500 ms; restoring the link
//!    brings both paths back with no ping lost.
//! 2. node1 is cut from both ToRs: its blocks withdrawn everywhere (both ToRs, the other
//!    nodes' kernels) within 1 s; restored, both paths come back.
//! 3. The contrast: BFD off on the second ToR's sessions (its BIRD and the BGPPeer), the same
//!    failure on that link is noticed only at the hold timer (9 s).
//!
//! The measured times and lost-ping counts are printed (bench/ecmp-failover.sh collects them).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use margay_lab::labctl::topology::{Mode, PoolMode, Spec};
use margay_lab::labctl::{Cluster, state::PodState};
use margay_lab::{Netns, wait_for};

/// Pings per second per flow, and the interval between them.
const PING_INTERVAL: Duration = Duration::from_millis(10);
const SETTLE: Duration = Duration::from_secs(120);
/// BFD's detection time in this lab (3 × 100 ms).
const DETECTION: Duration = Duration::from_millis(300);
/// What the issue allows between a failure and pings answered again.
const RESTORED_WITHIN: Duration = Duration::from_millis(500);
/// What the issue allows for a cut node's blocks to leave every table.
const WITHDRAWN_WITHIN: Duration = Duration::from_secs(1);
/// The lab's BIRD hold time.
const HOLD: Duration = Duration::from_secs(9);

/// Every packet in and out of some interfaces of a namespace dropped (nftables: the node's own
/// and those it forwards), until dropped.
struct Cut<'a> {
    ns: &'a Netns,
    table: String,
}

impl<'a> Cut<'a> {
    fn on(ns: &'a Netns, ifnames: &[&str]) -> Cut<'a> {
        let table = format!("margay_cut_{}", ifnames.join("_").replace(['.', '-'], "_"));
        let mut rules = format!(
            "add table inet {table}; \
             add chain inet {table} cut_in {{ type filter hook input priority -10; policy accept; }}; \
             add chain inet {table} cut_out {{ type filter hook output priority -10; policy accept; }}; \
             add chain inet {table} cut_fwd {{ type filter hook forward priority -10; policy accept; }}; "
        );
        // The node's own packets (BGP, BFD) and the pods' it forwards, both ways.
        for i in ifnames {
            rules.push_str(&format!(
                "add rule inet {table} cut_in iifname \"{i}\" drop; add rule inet {table} cut_out oifname \"{i}\" drop; \
                 add rule inet {table} cut_fwd iifname \"{i}\" drop; add rule inet {table} cut_fwd oifname \"{i}\" drop; "
            ));
        }
        ns.exec("nft", &[&rules]).expect("nft: cut the link");
        Cut { ns, table }
    }
}

impl Drop for Cut<'_> {
    fn drop(&mut self) {
        let _ = self
            .ns
            .exec("nft", &["delete", "table", "inet", &self.table]);
    }
}

/// One ping flow at 100/s from a pod's namespace, `count` pings; its child is ours to wait for.
struct Flow {
    name: String,
    count: u32,
    child: Child,
    log: PathBuf,
}

/// What a flow saw: how many pings got no answer, and the longest run of them.
#[derive(Debug, Clone)]
struct FlowResult {
    name: String,
    sent: u32,
    lost: u32,
    longest_gap: Duration,
}

impl Flow {
    fn start(dir: &std::path::Path, from: &PodState, to: &PodState, count: u32) -> Flow {
        let name = format!("{}->{}", from.name, to.name);
        let log = dir.join(format!("ping-{}-{}.txt", from.name, to.name));
        let file = std::fs::File::create(&log).expect("ping log");
        let interval = format!("{}", PING_INTERVAL.as_secs_f64());
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &from.netns,
                "ping",
                "-n",
                "-D",
                "-i",
                &interval,
            ])
            .args(["-W", "1", "-c", &count.to_string(), &to.ip.to_string()])
            .stdout(Stdio::from(file))
            .stderr(Stdio::null())
            .spawn()
            .expect("ping");
        Flow {
            name,
            count,
            child,
            log,
        }
    }

    fn finish(mut self) -> FlowResult {
        let _ = self.child.wait();
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        // `[1733500000.123456] 64 bytes from 10.100.0.1: icmp_seq=7 ttl=62 time=0.1 ms`
        let replies: Vec<(f64, u32)> = text
            .lines()
            .filter(|l| l.contains("bytes from"))
            .filter_map(|l| {
                let at = l.strip_prefix('[')?.split(']').next()?.parse().ok()?;
                let seq = l.split("icmp_seq=").nth(1)?.split_whitespace().next()?;
                Some((at, seq.parse().ok()?))
            })
            .collect();
        let answered: BTreeSet<u32> = replies.iter().map(|(_, s)| *s).collect();
        // The longest silence between two replies (wall clock: ping slows down while many
        // requests are unanswered, so counting sequence numbers would understate it).
        let longest = replies
            .windows(2)
            .map(|w| w[1].0 - w[0].0)
            .fold(0.0_f64, f64::max);
        let gap = Duration::from_secs_f64(longest).saturating_sub(PING_INTERVAL);
        FlowResult {
            name: self.name,
            sent: self.count,
            lost: self.count - answered.len().min(self.count as usize) as u32,
            longest_gap: if answered.is_empty() {
                Duration::MAX
            } else {
                gap
            },
        }
    }
}

/// Flows both ways between every pod of node `a` and every pod of node `b`.
fn flows(c: &Cluster, a: &str, b: &str, count: u32) -> Vec<Flow> {
    let pods = c.pods();
    let on = |n: &str| {
        pods.iter()
            .filter(|p| p.node == n)
            .cloned()
            .collect::<Vec<_>>()
    };
    let (pa, pb) = (on(a), on(b));
    let mut v = Vec::new();
    for x in &pa {
        for y in &pb {
            v.push(Flow::start(c.dir(), x, y, count));
            v.push(Flow::start(c.dir(), y, x, count));
        }
    }
    v
}

fn finish(flows: Vec<Flow>) -> Vec<FlowResult> {
    flows.into_iter().map(Flow::finish).collect()
}

fn report(what: &str, r: &[FlowResult]) -> String {
    let lost: u32 = r.iter().map(|f| f.lost).sum();
    let sent: u32 = r.iter().map(|f| f.sent).sum();
    let worst = r.iter().map(|f| f.longest_gap).max().unwrap_or_default();
    let per: Vec<String> = r
        .iter()
        .map(|f| format!("{} {}/{}", f.name, f.lost, f.sent))
        .collect();
    format!(
        "{what}: {lost} of {sent} pings lost, longest gap {} ms ({})",
        worst.as_millis(),
        per.join(", ")
    )
}

/// The next hops node `i`'s kernel holds (felix's routes) for the block of `dst`.
fn hops_to(ns: &Netns, dst: Ipv4Addr) -> Vec<Ipv4Addr> {
    let routes = ns
        .ip_json(&["-4", "route", "show", "proto", "81"])
        .unwrap_or_default();
    for r in routes {
        let Some(net) = r["dst"]
            .as_str()
            .and_then(|d| d.parse::<ipnet::Ipv4Net>().ok())
        else {
            continue;
        };
        if net.prefix_len() == 32 || !net.contains(&dst) {
            continue;
        }
        let gw = |v: &serde_json::Value| v["gateway"].as_str().and_then(|g| g.parse().ok());
        return match r["nexthops"].as_array() {
            Some(hops) => hops.iter().filter_map(gw).collect(),
            None => gw(&r).into_iter().collect(),
        };
    }
    Vec::new()
}

/// Whether a ToR's BIRD has a BGP route to `dst`.
fn tor_routes(c: &Cluster, second: bool, dst: Ipv4Addr) -> bool {
    c.tor_bird(second)
        .and_then(|b| b.routes().ok())
        .is_some_and(|rs| {
            rs.iter()
                .any(|r| r.prefix.contains(&IpAddr::V4(dst)) && r.is_bgp())
        })
}

fn bfd_state(c: &Cluster, node: usize, peer: Ipv4Addr) -> String {
    c.bgpd(node)
        .and_then(|b| b.peer(IpAddr::V4(peer)).ok().flatten())
        .and_then(|p| p.bfd)
        .map(|b| b.state)
        .unwrap_or_default()
}

/// Polls `done` every 5 ms from `start` until it holds (or `limit` passes); the time it took.
fn time_until(start: Instant, limit: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    while start.elapsed() < limit {
        if done() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

fn wait_hops(c: &Cluster, node: usize, dst: Ipv4Addr, want: &[Ipv4Addr], what: &str) {
    let ns = c.node_netns(node);
    let mut want = want.to_vec();
    want.sort();
    wait_for(what, Duration::from_secs(60), &[], || {
        let mut got = hops_to(ns, dst);
        got.sort();
        if got == want {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    })
    .unwrap();
}

/// Waits until each (node, destination) is routed over both ToRs again.
fn both_paths_back(c: &Cluster, at: [(usize, Ipv4Addr); 2], tors: [Ipv4Addr; 2]) {
    for (node, dst) in at {
        let what = format!("node{}'s route to {dst} over both ToRs again", node + 1);
        wait_hops(c, node, dst, &tors, &what);
    }
}

#[test]
fn dual_homed_nodes_fail_over_in_bfd_time_and_at_the_hold_timer_without() {
    let spec = Spec {
        nodes: 3,
        mode: Mode::Mesh,
        pool_mode: PoolMode::Never,
        tors: 2,
    };
    let c = Cluster::build(spec, SETTLE).expect("a converged --tors 2 lab");
    let plan = c.plan().clone();
    let tor_a = plan.tor.addrs[0].ip4();
    let tor_b = plan.tor2.as_ref().expect("two ToRs").addrs[0].ip4();
    let pods = c.pods();
    let pod_on = |n: &str| pods.iter().find(|p| p.node == n).expect("a pod").ip;
    let (n1_pod, n2_pod) = (pod_on("node1"), pod_on("node2"));
    let n1 = c.node_netns(0);
    let (if_a, if_b) = (
        c.node_ifname(0, false).unwrap(),
        c.node_ifname(0, true).unwrap(),
    );
    // Every node holds every other node's blocks over both ToRs.
    for (i, dst) in [(1, n1_pod), (2, n1_pod), (0, n2_pod)] {
        wait_hops(
            &c,
            i,
            dst,
            &[tor_a, tor_b],
            "the multipath route over both ToRs",
        );
    }
    let mut lines = Vec::new();

    // 1. node1's link to the first ToR fails.
    let pings = flows(&c, "node1", "node2", 400);
    std::thread::sleep(Duration::from_millis(1500));
    let cut = Cut::on(n1, &[&if_a]);
    let t0 = Instant::now();
    let bfd_down = time_until(t0, Duration::from_secs(5), || {
        bfd_state(&c, 0, tor_a) != "Up"
    })
    .expect("node1's BFD session with the first ToR goes down");
    let reduced = time_until(t0, Duration::from_secs(5), || {
        hops_to(c.node_netns(1), n1_pod) == [tor_b]
    })
    .expect("node2's route to node1's block reduced to the second ToR");
    let r = finish(pings);
    lines.push(format!(
        "link to ToR 1 fails, BFD 3 x 100 ms: margay BFD Down after {} ms, node2's route reduced \
         after {} ms; {}",
        bfd_down.as_millis(),
        reduced.as_millis(),
        report("pings", &r)
    ));
    // Down by BFD's own detection timer (not by the BGP session closing first), seen by a
    // poll that is slow on a loaded machine: the tight figure is bench/ecmp-failover.sh's.
    let diag = c
        .bgpd(0)
        .and_then(|b| b.peer(IpAddr::V4(tor_a)).ok().flatten())
        .and_then(|p| p.bfd)
        .map(|b| b.local_diagnostic)
        .unwrap_or_default();
    assert_eq!(
        diag,
        "Control Detection Time Expired",
        "{}",
        lines.join("\n")
    );
    assert!(
        bfd_down <= DETECTION + Duration::from_secs(2),
        "BFD Down seen after {bfd_down:?} (detection time {DETECTION:?})"
    );
    assert!(
        reduced <= Duration::from_secs(1),
        "route reduced after {reduced:?}"
    );
    for f in &r {
        assert!(
            f.longest_gap <= RESTORED_WITHIN,
            "{}: pings stopped for {:?}: {}",
            f.name,
            f.longest_gap,
            lines.join("\n")
        );
    }
    // Restored: both paths come back, no ping lost meanwhile.
    let pings = flows(&c, "node1", "node2", 600);
    std::thread::sleep(Duration::from_millis(500));
    drop(cut);
    let t1 = Instant::now();
    both_paths_back(&c, [(1, n1_pod), (0, n2_pod)], [tor_a, tor_b]);
    let back = t1.elapsed();
    let r = finish(pings);
    lines.push(format!(
        "link restored: both paths back after {} ms; {}",
        back.as_millis(),
        report("pings", &r)
    ));
    assert!(
        r.iter().all(|f| f.lost == 0),
        "pings lost while the link came back: {}",
        lines.join("\n")
    );

    // 2. node1 cut from both ToRs: its blocks leave every table within 1 s.
    let cut = Cut::on(n1, &[&if_a, &if_b]);
    let t0 = Instant::now();
    let gone = time_until(t0, Duration::from_secs(10), || {
        hops_to(c.node_netns(1), n1_pod).is_empty()
            && hops_to(c.node_netns(2), n1_pod).is_empty()
            && !tor_routes(&c, false, n1_pod)
            && !tor_routes(&c, true, n1_pod)
    })
    .expect("node1's blocks withdrawn everywhere");
    lines.push(format!(
        "node cut from both ToRs: its blocks gone from both ToRs and both other nodes after {} ms",
        gone.as_millis()
    ));
    assert!(gone <= WITHDRAWN_WITHIN, "withdrawn after {gone:?}");
    drop(cut);
    both_paths_back(&c, [(1, n1_pod), (2, n1_pod)], [tor_a, tor_b]);
    let r = finish(flows(&c, "node1", "node2", 200));
    lines.push(format!("node restored: {}", report("pings after", &r)));
    assert!(r.iter().all(|f| f.lost == 0), "{}", lines.join("\n"));

    eprintln!("{}", lines.join("\n"));

    // 3. The contrast: no BFD with the second ToR (BIRD reconfigured, BGPPeer without bfd).
    let tor2 = c.tor_bird(true).expect("the second ToR");
    let mut config = plan.tor2_config().expect("tor2 config");
    config.bfd = None;
    for n in &mut config.neighbors {
        n.bfd = false;
    }
    let path = c.dir().join("tor2.conf");
    std::fs::write(&path, config.render()).unwrap();
    let out = tor2.birdc(&["configure"]).unwrap();
    assert!(out.contains("Reconfigur"), "{out}");
    let yaml = plan
        .model_yaml()
        .split("---\n")
        .find(|d| d.contains("name: tor2\n"))
        .expect("tor2's BGPPeer")
        .replace("enabled: true", "enabled: false");
    c.etcd().expect("etcd").apply(&yaml).unwrap();
    wait_for(
        "node1's BFD with the second ToR off",
        Duration::from_secs(30),
        &[],
        || {
            let s = bfd_state(&c, 0, tor_b);
            if s.is_empty() { Ok(()) } else { Err(s) }
        },
    )
    .unwrap();
    wait_hops(
        &c,
        1,
        n1_pod,
        &[tor_a, tor_b],
        "node2's route over both ToRs, no BFD on ToR 2",
    );
    let pings = flows(&c, "node1", "node2", 1500);
    std::thread::sleep(Duration::from_millis(1500));
    let cut = Cut::on(n1, &[&if_b]);
    let t0 = Instant::now();
    let reduced = time_until(t0, HOLD + Duration::from_secs(6), || {
        hops_to(c.node_netns(1), n1_pod) == [tor_a]
    })
    .expect("node2's route reduced to the first ToR at the hold timer");
    let r = finish(pings);
    drop(cut);
    lines.push(format!(
        "link to ToR 2 fails, no BFD (hold time {} s): node2's route reduced after {} ms; {}",
        HOLD.as_secs(),
        reduced.as_millis(),
        report("pings", &r)
    ));
    eprintln!("{}", lines.join("\n"));
    assert!(
        reduced > Duration::from_secs(2),
        "without BFD the failure was noticed after {reduced:?}: only the hold timer should"
    );
    assert!(reduced <= HOLD + Duration::from_secs(3), "{reduced:?}");
}
