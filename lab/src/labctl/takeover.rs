//! `margay-lab node migrate NAME` on a kept lab: a Calico node (`up --calico-nodes`) moves to
//! margay as the runbook says (README, "Moving a running cluster"): its BIRD is killed (no
//! Cease: its peers keep its routes by graceful restart, its kernel keeps its routes), then
//! margay-bgpd starts as the same speaker and margay-felix with `--adopt-route-protocols
//! calico` replaces Calico's routes in place. Its pod pings every other pod at 100/s
//! throughout; the command reports the losses, the times, and every peer Established again.

use std::fmt::Write;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use super::LabCtlError;
use super::down::alive;
use super::pods;
use super::state::{LabState, NodeState};
use super::topology::NODE_AS;
use crate::bgpd::{Bgpd, ClusterArgs};
use crate::felix::{Felix, FelixArgs};
use crate::netns::{Netns, require_root};
use crate::process::{Process, wait_for_every};

/// What a takeover did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    pub node: NodeState,
    pub stop: BirdStop,
    /// BIRD stopped → margay-felix ready.
    pub ready: Duration,
    /// BIRD killed → every route in the pool on the node is felix's.
    pub adopted: Duration,
    /// felix's routes on the node once adopted.
    pub routes: usize,
    /// Each ping from the node's pod: destination pod and its summary line.
    pings: Vec<(String, String)>,
}

/// A kept lab's namespace, used here and left in place whatever happens (a plain adopted
/// [`Netns`] would delete it when dropped).
pub(super) struct Borrowed(Option<Netns>);

impl Borrowed {
    pub(super) fn new(name: &str) -> Result<Borrowed, LabCtlError> {
        Ok(Borrowed(Some(Netns::adopt(name)?)))
    }

    pub(super) fn ns(&self) -> &Netns {
        self.0.as_ref().expect("held until dropped")
    }
}

impl Drop for Borrowed {
    fn drop(&mut self) {
        if let Some(ns) = self.0.take() {
            ns.into_kept();
        }
    }
}

/// The routes inside the pool on `netns` that are not felix's (protocol 81), and felix's count.
fn not_adopted(netns: &str) -> Result<(Vec<String>, usize), String> {
    let ns = Borrowed::new(netns).map_err(|e| e.to_string())?;
    let all = ns
        .ns()
        .ip_json(&["-4", "route", "show"])
        .map_err(|e| e.to_string())?;
    let in_pool =
        |r: &&serde_json::Value| r["dst"].as_str().is_some_and(|d| d.starts_with("10.100."));
    let theirs: Vec<String> = all
        .iter()
        .filter(in_pool)
        .filter(|r| r["protocol"] != "81")
        .map(|r| r.to_string())
        .collect();
    let ours = all.iter().filter(in_pool).count() - theirs.len();
    Ok((theirs, ours))
}

/// How calico-node's BIRD is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BirdStop {
    /// SIGKILL, as the runbook says: no NOTIFICATION, peers keep the routes (graceful restart).
    Kill,
    /// SIGTERM, as a plain deletion of the calico-node pod: BIRD closes every session with a
    /// Cease and its peers drop the node's routes at once (the comparison).
    Term,
}

/// The takeover of Calico node `name`, its BIRD stopped by `stop`.
pub fn node_migrate(
    state_file: &Path,
    name: &str,
    stop: BirdStop,
    timeout: Duration,
) -> Result<Migrated, LabCtlError> {
    require_root()?;
    let mut state = LabState::load(state_file)?.ok_or_else(|| {
        LabCtlError::Usage(format!(
            "no lab is running (no {}); start one with `margay-lab up --keep --calico-nodes N`",
            state_file.display()
        ))
    })?;
    let Some(at) = state.calico.iter().position(|c| c.name == name) else {
        return Err(LabCtlError::Usage(format!(
            "the lab has no Calico node {name} (Calico nodes: {})",
            state
                .calico
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    let calico = state.calico[at].clone();
    let dir = state.dir.clone();
    let ns = Borrowed::new(&calico.netns)?;

    // Its pod pings every other pod at 100/s from before BIRD goes until felix is done.
    let pings = pings_from(&state, name, &dir)?;
    std::thread::sleep(Duration::from_millis(500));

    // calico-node goes: BIRD stopped, nothing else touched.
    let t0 = Instant::now();
    let signal = match stop {
        BirdStop::Kill => libc::SIGKILL,
        BirdStop::Term => libc::SIGTERM,
    };
    // bird6 too, on a dual-stack node (calico-node runs both).
    let birds = [calico.pid, calico.pid6];
    for pid in birds.into_iter().filter(|p| *p != 0 && alive(*p)) {
        // SAFETY: kill(2) on a PID the lab's state file records for this node's BIRD.
        unsafe { libc::kill(pid as i32, signal) };
    }
    wait_for_every(
        &format!("{name}'s BIRD to end"),
        Duration::from_secs(5),
        Duration::from_millis(10),
        &[],
        || {
            if birds.iter().any(|p| *p != 0 && alive(*p)) {
                Err("running".to_string())
            } else {
                Ok(())
            }
        },
    )?;

    // margay comes up as the same speaker, felix adopting what Calico left.
    let endpoint = state.etcd.endpoint_for(state.nodes.len()).to_string();
    let addr = IpNet::V4(
        ipnet::Ipv4Net::new(calico.address4, state.subnets[0].prefix_len())
            .expect("a rack's prefix length"),
    );
    let mut args = ClusterArgs::new(name, &endpoint, addr).asn(NODE_AS);
    if let Some(a6) = calico.address6 {
        args = args.ip6(IpNet::V6(
            ipnet::Ipv6Net::new(a6, 64).expect("64 is a valid length"),
        ));
    }
    let bgpd = Bgpd::start_cluster_in(&dir, ns.ns(), &format!("{name}-bgpd"), args)?;
    let bgpd_socket = bgpd.config().socket.clone();
    let felix_socket = dir.join(format!("{name}-felix.sock"));
    let conflist = dir.join(format!("{name}.conflist"));
    let list = pods::conflist(name, &felix_socket, state.pool_mode.mtu());
    let text = serde_json::to_string_pretty(&list).map_err(|e| LabCtlError::state(&conflist, e))?;
    std::fs::write(&conflist, text).map_err(|e| LabCtlError::state(&conflist, e))?;
    let mut fargs = FelixArgs::new(name, &endpoint, &bgpd_socket, &felix_socket);
    fargs.adopt_route_protocols = Some("calico".into());
    let felix = Felix::start_in(&dir, ns.ns(), &format!("{name}-felix"), fargs)?;
    let ready = t0.elapsed();
    let routes = wait_for_every(
        &format!("every route in the pool on {name} felix's"),
        timeout,
        Duration::from_millis(20),
        &[],
        || match not_adopted(&calico.netns)? {
            (theirs, ours) if theirs.is_empty() && ours > 0 => Ok(ours),
            (theirs, _) => Err(format!("not felix's yet: {}", theirs.join("; "))),
        },
    )?;
    let adopted = t0.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let pings = summaries(&pings);

    // It is a margay node now: every other node, Calico's too, and the ToR are its peers.
    let peers: Vec<IpAddr> = state
        .nodes
        .iter()
        .map(|n| IpAddr::V4(n.address4))
        .chain(
            state
                .calico
                .iter()
                .filter(|c| c.name != name)
                .map(|c| IpAddr::V4(c.address4)),
        )
        .chain([IpAddr::V4(state.tor.addresses[0])])
        .collect();
    let node = NodeState {
        name: name.to_string(),
        netns: calico.netns.clone(),
        rack: 'a',
        pid: bgpd.pid(),
        socket: bgpd_socket,
        felix_pid: felix.pid(),
        felix_socket,
        conflist,
        address4: calico.address4,
        address6: calico.address6,
        address_b: None,
        asn: NODE_AS,
        peers,
        reflector: false,
    };
    let calico = state.calico.remove(at);
    state.migrated.push(calico);
    state.nodes.push(node.clone());
    state.save(state_file)?;
    bgpd.into_kept();
    felix.into_kept();
    drop(ns);
    Ok(Migrated {
        node,
        stop,
        ready,
        adopted,
        routes,
        pings,
    })
}

/// The pod of node `name` pinging every other pod at 100/s (`migrate-ping-POD-OTHER`), started
/// half a second before this returns; none if the node has no pod.
pub(super) fn pings_from(
    state: &LabState,
    name: &str,
    dir: &Path,
) -> Result<Vec<(String, Process)>, LabCtlError> {
    let mut pings = Vec::new();
    if let Some(pod) = state.pods.iter().find(|p| p.node == name) {
        let pod_ns = Borrowed::new(&pod.netns)?;
        for other in state.pods.iter().filter(|p| p.node != name) {
            // Every address of the other pod: IPv6 too on a dual-stack lab.
            for (k, a) in other.addresses().into_iter().enumerate() {
                let (tag, label) = match k {
                    0 => (String::new(), other.name.clone()),
                    _ => ("-v6".to_string(), format!("{} ({a})", other.name)),
                };
                let p = Process::spawn(
                    pod_ns.ns(),
                    &format!("migrate-ping-{}-{}{tag}", pod.name, other.name),
                    "ping",
                    ["-n", "-i", "0.01", "-W", "1", &a.to_string()],
                    dir,
                )?;
                pings.push((label, p));
            }
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    Ok(pings)
}

/// Stops the pings; each one's destination and summary line.
pub(super) fn summaries(pings: &[(String, Process)]) -> Vec<(String, String)> {
    pings
        .iter()
        .map(|(to, p)| {
            let s = p
                .ping_summary(Duration::from_secs(10))
                .unwrap_or_else(|e| e.to_string());
            (to.clone(), s)
        })
        .collect()
}

pub(super) fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

/// What `node migrate` prints.
pub fn render_migrated(m: &Migrated) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} now runs margay: margay-bgpd (pid {}) as the same speaker ({}, AS {}), margay-felix \
         (pid {}) with --adopt-route-protocols calico",
        m.node.name, m.node.pid, m.node.address4, m.node.asn, m.node.felix_pid
    );
    let how = match m.stop {
        BirdStop::Kill => "BIRD killed (SIGKILL)",
        BirdStop::Term => "BIRD stopped (SIGTERM: a Cease to its peers)",
    };
    let _ = writeln!(out, "  {how} -> felix ready: {}", ms(m.ready));
    let _ = writeln!(
        out,
        "  {how} -> every pool route felix's: {} ({} routes, replaced in place)",
        ms(m.adopted),
        m.routes
    );
    for (to, s) in &m.pings {
        let _ = writeln!(out, "  ping -> {to} at 100/s throughout: {s}");
    }
    out
}

/// Whether every ping of the takeover lost nothing.
pub fn lossless(m: &Migrated) -> bool {
    !m.pings.is_empty() && m.pings.iter().all(|(_, s)| s.contains(" 0% packet loss"))
}
