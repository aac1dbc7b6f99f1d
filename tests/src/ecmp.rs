//! Helpers of the dual-homed (ECMP over two ToRs) suite and its benchmark: a link cut both ways
//! in a node's namespace, ping flows at 100 per second with their losses and longest silence,
//! the next hops a node's kernel holds for a destination, polling for a change, and the
//! kernel's route notifications read as they come (the time of a change, without polling).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use margay_lab::labctl::{Cluster, state::PodState};
use margay_lab::{Netns, wait_for};

/// The interval between two pings of a flow (100 per second).
pub const PING_INTERVAL: Duration = Duration::from_millis(10);

/// Every packet in and out of some interfaces of a namespace dropped (nftables: the node's own
/// and those it forwards), until dropped.
pub struct Cut<'a> {
    ns: &'a Netns,
    table: String,
}

impl<'a> Cut<'a> {
    pub fn on(ns: &'a Netns, ifnames: &[&str]) -> Cut<'a> {
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
pub struct Flow {
    name: String,
    count: u32,
    child: Child,
    log: PathBuf,
}

/// What a flow saw: how many pings got no answer, and the longest run of them.
#[derive(Debug, Clone)]
pub struct FlowResult {
    pub name: String,
    pub sent: u32,
    pub lost: u32,
    pub longest_gap: Duration,
}

impl Flow {
    pub fn start(dir: &Path, from: &PodState, to: &PodState, count: u32) -> Flow {
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

    pub fn finish(mut self) -> FlowResult {
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
pub fn flows(c: &Cluster, a: &str, b: &str, count: u32) -> Vec<Flow> {
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

pub fn finish(flows: Vec<Flow>) -> Vec<FlowResult> {
    flows.into_iter().map(Flow::finish).collect()
}

pub fn report(what: &str, r: &[FlowResult]) -> String {
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
pub fn hops_to(ns: &Netns, dst: Ipv4Addr) -> Vec<Ipv4Addr> {
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
pub fn tor_routes(c: &Cluster, second: bool, dst: Ipv4Addr) -> bool {
    c.tor_bird(second)
        .and_then(|b| b.routes().ok())
        .is_some_and(|rs| {
            rs.iter()
                .any(|r| r.prefix.contains(&IpAddr::V4(dst)) && r.is_bgp())
        })
}

pub fn bfd_state(c: &Cluster, node: usize, peer: Ipv4Addr) -> String {
    c.bgpd(node)
        .and_then(|b| b.peer(IpAddr::V4(peer)).ok().flatten())
        .and_then(|p| p.bfd)
        .map(|b| b.state)
        .unwrap_or_default()
}

/// Polls `done` every 5 ms from `start` until it holds (or `limit` passes); the time it took.
pub fn time_until(
    start: Instant,
    limit: Duration,
    mut done: impl FnMut() -> bool,
) -> Option<Duration> {
    while start.elapsed() < limit {
        if done() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

pub fn wait_hops(c: &Cluster, node: usize, dst: Ipv4Addr, want: &[Ipv4Addr], what: &str) {
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
pub fn both_paths_back(c: &Cluster, at: [(usize, Ipv4Addr); 2], tors: [Ipv4Addr; 2]) {
    for (node, dst) in at {
        let what = format!("node{}'s route to {dst} over both ToRs again", node + 1);
        wait_hops(c, node, dst, &tors, &what);
    }
}

/// Turns BFD off on the second ToR's sessions at both ends (`--tors 2`): its BIRD reconfigured
/// without `protocol bfd` and `bfd on`, the `margay.io/v1` BGPPeer `tor2` re-applied with
/// `enabled: false`; returns once node1's bgpd has no BFD session with it. What remains to
/// notice a failure there is the hold timer.
pub fn second_tor_without_bfd(c: &Cluster) -> margay_lab::Result<()> {
    let plan = c.plan();
    let (Some(tor2), Some(mut config), Some(t2)) =
        (c.tor_bird(true), plan.tor2_config(), plan.tor2.as_ref())
    else {
        return Err(margay_lab::LabError::Render("the lab has one ToR".into()));
    };
    config.bfd = None;
    for n in &mut config.neighbors {
        n.bfd = false;
    }
    let path = c.dir().join("tor2.conf");
    std::fs::write(&path, config.render())
        .map_err(margay_lab::LabError::io("writing tor2.conf"))?;
    let out = tor2.birdc(&["configure"])?;
    if !out.contains("Reconfigur") {
        return Err(margay_lab::LabError::Render(format!(
            "birdc configure: {out}"
        )));
    }
    let yaml = plan
        .model_yaml()
        .split("---\n")
        .find(|d| d.contains("name: tor2\n"))
        .map(|d| d.replace("enabled: true", "enabled: false"))
        .ok_or_else(|| margay_lab::LabError::Render("no BGPPeer tor2".into()))?;
    c.etcd()
        .ok_or_else(|| margay_lab::LabError::Render("etcd is not running".into()))?
        .apply(&yaml)?;
    let tor_b = t2.addrs[0].ip4();
    wait_for(
        "node1's BFD with the second ToR off",
        Duration::from_secs(60),
        &[],
        || {
            let s = bfd_state(c, 0, tor_b);
            if s.is_empty() { Ok(()) } else { Err(s) }
        },
    )
}

/// `ip monitor route` in a namespace, each line stamped with the moment it was read: the time
/// the kernel's routing table changed, the same way for whoever programs it. Ends its child on
/// drop.
pub struct RouteMonitor {
    child: Child,
    lines: mpsc::Receiver<(Instant, String)>,
}

impl RouteMonitor {
    /// Starts listening; changes from about 100 ms on are seen.
    pub fn start(ns: &Netns) -> std::io::Result<RouteMonitor> {
        let mut child = Command::new("ip")
            .args(["-n", ns.name(), "monitor", "route"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let out = child.stdout.take().expect("piped stdout");
        let lines = margay_lab::process::stamped_lines(out);
        // `ip` subscribes to the notifications once it runs.
        std::thread::sleep(Duration::from_millis(100));
        Ok(RouteMonitor { child, lines })
    }

    /// When the route to `prefix` (as `ip` prints it) first changed at or after `since`
    /// (replaced, or deleted), waiting until `until`.
    pub fn first_change(&self, prefix: &str, since: Instant, until: Instant) -> Option<Instant> {
        let deleted = format!("Deleted {prefix} ");
        let changed = format!("{prefix} ");
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let (at, line) = self.lines.recv_timeout(left).ok()?;
            if at >= since && (line.starts_with(&changed) || line.starts_with(&deleted)) {
                return Some(at);
            }
        }
    }
}

impl Drop for RouteMonitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The destination (as `ip` prints it) of the route felix holds for the block of `dst`.
pub fn block_route(ns: &Netns, dst: Ipv4Addr) -> Option<String> {
    ns.ip_json(&["-4", "route", "show", "proto", "81"])
        .unwrap_or_default()
        .into_iter()
        .filter_map(|r| r["dst"].as_str().map(str::to_string))
        .find(|d| {
            d.parse::<ipnet::Ipv4Net>()
                .is_ok_and(|n| n.prefix_len() < 32 && n.contains(&dst))
        })
}

/// Polls `done` every 2 ms until it holds (the moment it was seen) or `limit` passes.
pub fn seen_at(limit: Duration, mut done: impl FnMut() -> bool) -> Option<Instant> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}
