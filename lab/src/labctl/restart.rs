//! Restarts under traffic: a steady stream of pings between node 1's pods and every pod on the
//! other nodes (both ways) and from the ToR to node 1's pods, while node 1's daemons or the
//! ToR's BIRD restart; then the lost replies, and how long after the sessions returned every
//! route was whole again (in every margay-bgpd's RIB, every node's kernel, and BIRD).

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::LabCtlError;
use super::cluster::{Cluster, Stop};
use super::health;
use super::ping::{PingResult, Stream};
use super::state::LabState;
use crate::bgpd::connect_unix;
use crate::bird::{birdc, parse_protocols};

/// Pings per second and pair (`ping -i 0.01`).
pub const PING_INTERVAL_MS: u32 = 10;
/// How long the stream runs before the restart, so it is flowing when the restart begins.
const LEAD: Duration = Duration::from_secs(1);
/// How often the probes look at the sessions and routes while waiting.
const POLL: Duration = Duration::from_millis(20);

/// What restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// (a) node 1's margay-bgpd: SIGTERM, start again.
    Bgpd,
    /// (b) node 1's margay-felix.
    Felix,
    /// (c) node 1's margay-bgpd and margay-felix together.
    Both,
    /// (d) node 1's margay-bgpd SIGKILLed, start again.
    BgpdKilled,
    /// (e) the ToR's BIRD (killed, started with `-R`).
    Tor,
}

impl Scenario {
    /// Every scenario, in the order.
    pub const ALL: [Scenario; 5] = [
        Scenario::Bgpd,
        Scenario::Felix,
        Scenario::Both,
        Scenario::BgpdKilled,
        Scenario::Tor,
    ];

    /// A short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Bgpd => "bgpd-term",
            Scenario::Felix => "felix",
            Scenario::Both => "bgpd+felix",
            Scenario::BgpdKilled => "bgpd-kill",
            Scenario::Tor => "tor-bird",
        }
    }

    /// Whether a restart without graceful restart ([`Stop::Cease`]) means anything here: felix
    /// alone has no BGP session to lose.
    pub fn has_flush_peer(self) -> bool {
        self != Scenario::Felix
    }
}

/// How the restart's BGP side goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// With graceful restart (RFC 4724).
    Graceful,
    /// Without: the stopping side sends Cease, its peers flush its routes at once.
    Flush,
}

/// What one restart under traffic measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub scenario: Scenario,
    pub mode: Mode,
    /// Every stream of pings, one per pair.
    pub pings: Vec<PingResult>,
    /// From the start of the restart to every session of the restarted daemon Established.
    pub sessions_back: Duration,
    /// From every session Established to every route whole again.
    pub reconverged: Duration,
}

impl Outcome {
    /// Echo requests sent, over every pair.
    pub fn sent(&self) -> u32 {
        self.pings.iter().map(|p| p.sent).sum()
    }

    /// Echo requests without a reply, over every pair.
    pub fn lost(&self) -> u32 {
        self.pings
            .iter()
            .map(|p| p.sent.saturating_sub(p.received))
            .sum()
    }

    /// The pairs that lost replies (or whose ping did not report), one line each.
    pub fn losses(&self) -> Vec<String> {
        self.pings
            .iter()
            .filter(|p| p.received < p.sent || p.error.is_some())
            .map(|p| {
                format!(
                    "{} -> {} ({}): {} of {} lost{}",
                    p.from,
                    p.to,
                    p.dst,
                    p.sent.saturating_sub(p.received),
                    p.sent,
                    p.error
                        .as_ref()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                )
            })
            .collect()
    }
}

/// The ping pairs of a restart on node 1: its pods to every pod elsewhere and back, and the
/// ToR to its pods.
pub fn pairs(state: &LabState) -> Vec<(String, String, String, std::net::IpAddr)> {
    let node1 = &state.nodes[0].name;
    let (mine, others): (Vec<_>, Vec<_>) = state.pods.iter().partition(|p| &p.node == node1);
    let mut v = Vec::new();
    for a in &mine {
        for b in &others {
            v.push((a.name.clone(), a.netns.clone(), b.name.clone(), b.ip));
            v.push((b.name.clone(), b.netns.clone(), a.name.clone(), a.ip));
        }
    }
    for a in &mine {
        v.push((
            state.tor.name.clone(),
            state.tor.netns.clone(),
            a.name.clone(),
            a.ip,
        ));
    }
    v
}

/// Restarts what `scenario` names on a converged lab `c` while pings flow for `window`, and
/// measures. Fails when a step fails, when the sessions or routes do not come back within
/// `timeout`, or when the pings ended before the routes were whole (the window was too short
/// to see the whole restart).
pub fn run(
    c: &mut Cluster,
    scenario: Scenario,
    mode: Mode,
    window: Duration,
    timeout: Duration,
) -> Result<Outcome, LabCtlError> {
    let state = c.state();
    let count = (window.as_millis() / u128::from(PING_INTERVAL_MS)) as u32;
    let stream = Stream::start(pairs(&state), count, PING_INTERVAL_MS);
    let pings_end = Instant::now() + window;
    std::thread::sleep(LEAD);

    let bgp_stop = match mode {
        Mode::Graceful => Stop::Graceful,
        Mode::Flush => Stop::Cease,
    };
    let start = Instant::now();
    match scenario {
        Scenario::Bgpd => c.restart_bgpd(0, bgp_stop)?,
        Scenario::Felix => c.restart_felix(0, Stop::Graceful)?,
        Scenario::Both => {
            c.restart_felix(0, Stop::Graceful)?;
            c.restart_bgpd(0, bgp_stop)?;
        }
        Scenario::BgpdKilled => c.restart_bgpd(
            0,
            if mode == Mode::Graceful {
                Stop::Kill
            } else {
                Stop::Cease
            },
        )?,
        Scenario::Tor => c.restart_tor(bgp_stop)?,
    }
    // The restarted processes have new PIDs and the ToR a new socket path maybe: look again.
    let state = c.state();
    let node1 = state.nodes[0].name.clone();
    let established = poll_until(
        "every session of the restarted daemon Established again",
        timeout,
        || sessions_established(&state, scenario, &node1),
    )?;
    let sessions_back = established.duration_since(start);
    poll_until(
        "every route whole again (RIBs, kernels, BIRD)",
        timeout,
        || routes_whole(&state),
    )?;
    let whole = Instant::now();
    let reconverged = whole.duration_since(established);
    if whole > pings_end {
        return Err(LabCtlError::Restart(format!(
            "the pings ended before the routes were whole again ({:?} after the restart began); \
             give the scenario a longer window than {window:?}",
            whole.duration_since(start)
        )));
    }
    Ok(Outcome {
        scenario,
        mode,
        pings: stream.finish(),
        sessions_back,
        reconverged,
    })
}

/// Probes `condition` every [`POLL`] until it holds; fails after `timeout` with its last
/// observation.
fn poll_until<T>(
    what: &str,
    timeout: Duration,
    mut condition: impl FnMut() -> Result<T, String>,
) -> Result<T, LabCtlError> {
    let start = Instant::now();
    loop {
        match condition() {
            Ok(v) => return Ok(v),
            Err(last) if start.elapsed() >= timeout => {
                return Err(LabCtlError::Restart(format!(
                    "timed out after {timeout:?} waiting for {what}; last seen:\n  {last}"
                )));
            }
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// `Ok(now)` once every session the restart touched is Established: node 1's (as its
/// margay-bgpd shows them) and the ToR's protocol for node 1 (as birdc shows it); on a ToR
/// restart, every ToR protocol; on a felix restart, the sessions never went, so felix ready.
fn sessions_established(
    state: &LabState,
    scenario: Scenario,
    node1: &str,
) -> Result<Instant, String> {
    let tor = birdc(&state.tor.socket, &["show", "protocols"])
        .and_then(|t| parse_protocols(&t))
        .map_err(|e| format!("tor: {e}"))?;
    let tor_wanted: Vec<&str> = match scenario {
        Scenario::Tor => state.tor.protocols.iter().map(String::as_str).collect(),
        _ => vec![node1],
    };
    for name in tor_wanted {
        match tor.iter().find(|p| p.name == name) {
            Some(p) if p.is_established() => {}
            Some(p) => return Err(format!("tor: {name} is {} {}", p.state, p.info)),
            None => return Err(format!("tor: no protocol {name}")),
        }
    }
    let node = &state.nodes[0];
    let peers = node_peers(&node.socket)?;
    for want in &node.peers {
        match peers.iter().find(|(a, _)| a == want) {
            Some((_, s)) if s == "Established" => {}
            Some((_, s)) => return Err(format!("{}: session to {want} is {s}", node.name)),
            None => return Err(format!("{}: no peer {want}", node.name)),
        }
    }
    Ok(Instant::now())
}

/// Node 1's margay-bgpd's peers and their states.
fn node_peers(socket: &std::path::Path) -> Result<Vec<(IpAddr, String)>, String> {
    use margay_proto::bgp::v1::ListPeersRequest;
    use margay_proto::bgp::v1::bgp_client::BgpClient;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let mut c = BgpClient::new(connect_unix(socket).await.map_err(|e| e.to_string())?);
        let peers = c
            .list_peers(ListPeersRequest {})
            .await
            .map_err(|s| s.to_string())?
            .into_inner()
            .peers;
        Ok(peers
            .into_iter()
            .filter_map(|p| Some((p.address.parse().ok()?, p.state)))
            .collect())
    })
}

/// `Ok(())` once the lab is whole: every session up and every pod routed in every margay-bgpd
/// and BIRD ([`health::check`]), and in every node's kernel.
fn routes_whole(state: &LabState) -> Result<(), String> {
    let h = health::check(state).map_err(|e| e.to_string())?;
    if !h.converged() {
        return Err(h.problems.join("\n  "));
    }
    let mut missing = Vec::new();
    for node in &state.nodes {
        let routes = kernel_routes(&node.netns)?;
        // The restart drills run on IPv4 labs; an IPv6 address is checked by health above.
        for pod in &state.pods {
            let std::net::IpAddr::V4(ip) = pod.ip else {
                continue;
            };
            if !forwards(&routes, ip) {
                missing.push(format!(
                    "{}: the kernel has no route to pod {} ({})",
                    node.name, pod.name, pod.ip
                ));
            }
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing.join("\n  "))
    }
}

/// A kernel route: its destination and type (`unicast`, `blackhole`, ...).
struct KernelRoute {
    dst: ipnet::Ipv4Net,
    kind: String,
}

/// The namespace's IPv4 main table, without the default route.
fn kernel_routes(netns: &str) -> Result<Vec<KernelRoute>, String> {
    let out = std::process::Command::new("ip")
        .args(["-n", netns, "-4", "-j", "-d", "route", "show"])
        .output()
        .map_err(|e| format!("ip -n {netns} route show: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ip -n {netns} route show: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let all: Vec<Value> =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("ip -j route show: {e}"))?;
    Ok(all
        .iter()
        .filter_map(|r| {
            let dst = r.get("dst")?.as_str()?;
            let dst = if dst.contains('/') {
                dst.parse().ok()?
            } else {
                ipnet::Ipv4Net::new(dst.parse().ok()?, 32).ok()?
            };
            let kind = r
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("unicast")
                .to_string();
            Some(KernelRoute { dst, kind })
        })
        .collect())
}

/// Whether the most specific route to `ip` forwards (is not a blackhole or unreachable).
fn forwards(routes: &[KernelRoute], ip: Ipv4Addr) -> bool {
    routes
        .iter()
        .filter(|r| r.dst.contains(&ip))
        .max_by_key(|r| r.dst.prefix_len())
        .is_some_and(|r| r.kind == "unicast")
}
