//! Simulated nodes in a lab (`margay-lab up --simulated M`): a namespace of their own on rack a's
//! switch holding one address per node in [`SIM_SUBNET`], the `margay-lab simulate` process
//! serving them there ([`crate::sim::fleet`]), a link route and permanent neighbour entries to
//! them on every real node; and what `status`, the report and the health check say about them.
//!
//! Permanent neighbour entries, because the kernel's ARP table is shared by every namespace
//! (gc_thresh3, 1,024 entries by default): three real nodes learning a thousand addresses each
//! would overflow it and drop connections; permanent entries do not count against it.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net};
use margay_proto::bgp::v1::Peer;
use serde::{Deserialize, Serialize};

use super::LabCtlError;
use super::state::{LabState, NodeState};
use super::topology::{Mode, NODE_AS, POOL_CIDR, PoolMode, Spec};
use crate::lab::{Lab, LabSwitch};
use crate::netns::Netns;
use crate::process::{Process, wait_for};
use crate::sim::fleet::{self, FleetStatus, MAX_SIMULATED, SIM_SUBNET};

/// The fleet namespace's host number on rack a (its address for etcd, far above the nodes').
const FLEET_HOST: u8 = 250;
/// felix's route protocol number.
const FELIX_PROTOCOL: &str = "81";

/// The simulated nodes of a kept lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimulatedState {
    pub count: usize,
    pub netns: String,
    /// The `margay-lab simulate` process.
    pub pid: u32,
    /// Where it writes its [`FleetStatus`] every second.
    pub status_file: PathBuf,
}

/// Fails unless `--simulated count` fits `spec`: one rack, plain IPv4 routing (a simulated
/// node has no VTEP and no tunnel address), one ToR, no Calico nodes.
pub fn validate(spec: &Spec, count: usize, calico_nodes: usize) -> Result<(), LabCtlError> {
    if count == 0 {
        return Ok(());
    }
    if count > MAX_SIMULATED || count + spec.nodes > 1020 {
        return Err(LabCtlError::Usage(format!(
            "--simulated must be at most {MAX_SIMULATED} (and with --nodes at most 1,020: one \
             /26 block each from the pool's 1,024), not {count}"
        )));
    }
    if spec.pool_mode != PoolMode::Never
        || spec.tors != 1
        || spec.no_bgp
        || spec.ip_family.has_v6()
        || calico_nodes > 0
    {
        return Err(LabCtlError::Usage(
            "--simulated runs with --pool-mode never, --ip-family ipv4, one ToR, BGP and no \
             Calico nodes: a simulated node has no VTEP, no tunnel address and no IPv6 session"
                .into(),
        ));
    }
    Ok(())
}

/// The running fleet: the process first, then its namespace (drop order).
#[derive(Debug)]
pub struct Fleet {
    process: Process,
    ns: Netns,
    count: usize,
    status_file: PathBuf,
}

impl Fleet {
    /// Creates the fleet's namespace on `switch` (rack a), puts `count` addresses on it, gives
    /// every real node (`(namespace, interface on rack a)`) a link route and permanent
    /// neighbour entries to them, and starts `margay-lab simulate` there against `etcd`;
    /// returns once every simulated node is registered and listening.
    pub fn start(
        lab: &Lab,
        switch: &LabSwitch,
        real: &[(&Netns, String)],
        etcd: &str,
        count: usize,
        timeout: Duration,
    ) -> Result<Fleet, LabCtlError> {
        let pool: Ipv4Net = POOL_CIDR.parse().expect("POOL_CIDR is a CIDR");
        let nodes = fleet::plan(count, pool);
        let ns = lab.netns("sim")?;
        let host = switch.subnet().host(FLEET_HOST);
        let ifname = switch.switch().attach(&ns, &[IpNet::V4(host.v4)])?;
        let len = fleet::subnet_len();
        let batch: String = nodes
            .iter()
            .map(|n| format!("address add {}/{len} dev {ifname}\n", n.addr))
            .collect();
        run_batch(lab, &ns, "sim-addresses", &batch)?;
        let mac = ns
            .ip_json(&["link", "show", "dev", &ifname])?
            .first()
            .and_then(|l| l["address"].as_str().map(str::to_string))
            .ok_or_else(|| LabCtlError::Usage(format!("no MAC on {ifname}")))?;
        for (node_ns, node_if) in real {
            node_ns.ip(&["route", "add", SIM_SUBNET, "dev", node_if, "scope", "link"])?;
            let batch: String = nodes
                .iter()
                .map(|n| {
                    format!(
                        "neigh replace {} lladdr {mac} dev {node_if} nud permanent\n",
                        n.addr
                    )
                })
                .collect();
            run_batch(
                lab,
                node_ns,
                &format!("{}-sim-neigh", node_ns.name()),
                &batch,
            )?;
        }
        let status_file = lab.dir().join("simulated.json");
        let binary = crate::bgpd::margay_binary("margay-lab", "`cargo build -p margay-lab`")?;
        let args = [
            "simulate".to_string(),
            "--etcd".into(),
            etcd.into(),
            "--count".into(),
            count.to_string(),
            "--pool".into(),
            POOL_CIDR.into(),
            "--asn".into(),
            NODE_AS.to_string(),
            "--status-file".into(),
            status_file.display().to_string(),
        ];
        let mut process = Process::spawn(&ns, "simulated", binary, &args, lab.dir())?;
        wait_for("the simulated nodes registered", timeout, &[], || {
            if let Some(e) = process.exit_status() {
                return Ok(Err(format!(
                    "margay-lab simulate ended ({e}): {}",
                    process.log_tail(5)
                )));
            }
            match FleetStatus::load(&status_file) {
                Ok(s) if s.registered == count => Ok(Ok(())),
                Ok(s) => Err(format!("{} of {count} registered", s.registered)),
                Err(e) => Err(format!("{e:#}")),
            }
        })?
        .map_err(LabCtlError::Usage)?;
        Ok(Fleet {
            process,
            ns,
            count,
            status_file,
        })
    }

    /// The fleet as the state file records it.
    pub fn state(&self) -> SimulatedState {
        SimulatedState {
            count: self.count,
            netns: self.ns.name().to_string(),
            pid: self.process.pid(),
            status_file: self.status_file.clone(),
        }
    }

    /// Lets the process and the namespace outlive this guard.
    pub fn into_kept(self) {
        let Fleet { process, ns, .. } = self;
        process.into_kept();
        ns.into_kept();
    }
}

/// Writes `batch` to the lab's directory and runs it with `ip -batch` in `ns`.
fn run_batch(lab: &Lab, ns: &Netns, name: &str, batch: &str) -> Result<(), LabCtlError> {
    let path = lab.dir().join(format!("{name}.batch"));
    std::fs::write(&path, batch).map_err(|e| LabCtlError::state(&path, e))?;
    ns.ip(&["-batch", &path.display().to_string()])?;
    Ok(())
}

/// How many simulated nodes `node`'s margay-bgpd should have a session with: all of them in the
/// mesh, all of them on the reflector, none on a reflector's other clients.
pub fn expected_sessions(state: &LabState, sim: &SimulatedState, node: &NodeState) -> usize {
    match state.mode {
        Mode::Mesh => sim.count,
        Mode::RouteReflectors if node.reflector => sim.count,
        Mode::RouteReflectors => 0,
    }
}

/// The sessions the whole fleet should hold Established.
pub fn expected_fleet_sessions(state: &LabState, sim: &SimulatedState) -> u64 {
    state
        .nodes
        .iter()
        .map(|n| expected_sessions(state, sim, n) as u64)
        .sum()
}

/// `node`'s kernel routes (felix's) to simulated nodes' blocks: how many.
pub fn kernel_blocks(node: &NodeState) -> Result<usize, String> {
    let out = std::process::Command::new("ip")
        .args(["-n", &node.netns, "-j", "-4", "route", "show", "proto"])
        .args([FELIX_PROTOCOL, "root", POOL_CIDR])
        .output()
        .map_err(|e| format!("ip route: {e}"))?;
    let routes: Vec<serde_json::Value> =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("ip -j route: {e}"))?;
    Ok(routes
        .iter()
        .filter_map(|r| r["gateway"].as_str()?.parse::<IpAddr>().ok())
        .filter(fleet::is_simulated)
        .count())
}

/// Adds to `problems` what is missing between `node` and the fleet: its sessions to the
/// simulated nodes (from its margay-bgpd's `peers`), their blocks in its RIB (`held`) and in
/// its kernel.
pub fn check_node(
    state: &LabState,
    sim: &SimulatedState,
    node: &NodeState,
    peers: &[Peer],
    held: &[IpNet],
    problems: &mut Vec<String>,
) {
    let want = expected_sessions(state, sim, node);
    let up = peers
        .iter()
        .filter(|p| p.state == "Established")
        .filter(|p| p.address.parse().is_ok_and(|a| fleet::is_simulated(&a)))
        .count();
    if up < want {
        problems.push(format!(
            "{}: {up} of {want} sessions to simulated nodes Established",
            node.name
        ));
    }
    let pool: Ipv4Net = POOL_CIDR.parse().expect("POOL_CIDR is a CIDR");
    let planned = fleet::plan(sim.count, pool);
    let missing = planned
        .iter()
        .filter(|n| !held.contains(&IpNet::V4(n.block)))
        .count();
    if missing > 0 {
        problems.push(format!(
            "{}: {missing} of {} simulated nodes' blocks not in margay-bgpd's RIB",
            node.name, sim.count
        ));
    }
    match kernel_blocks(node) {
        Ok(n) if n >= sim.count => {}
        Ok(n) => problems.push(format!(
            "{}: {n} of {} simulated nodes' blocks in the kernel",
            node.name, sim.count
        )),
        Err(e) => problems.push(format!("{}: {e}", node.name)),
    }
}

/// Adds to `problems` what the fleet's own status says is missing: sessions, resets, and
/// every real pod's block in every speaker's table.
pub fn check_fleet(state: &LabState, sim: &SimulatedState, problems: &mut Vec<String>) {
    let s = match FleetStatus::load(&sim.status_file) {
        Ok(s) => s,
        Err(e) => {
            problems.push(format!("simulated nodes: {e:#}"));
            return;
        }
    };
    let want = expected_fleet_sessions(state, sim);
    if s.sessions_up < want {
        problems.push(format!(
            "simulated nodes: {} of {want} sessions Established{}",
            s.sessions_up,
            s.example_error
                .as_deref()
                .map(|e| format!(" (last error: {e})"))
                .unwrap_or_default()
        ));
    }
    if s.downs > 0 {
        problems.push(format!(
            "simulated nodes: {} session(s) reset after Established",
            s.downs
        ));
    }
    for pod in state.pods.iter() {
        if !s
            .held_by_all
            .iter()
            .any(|b| IpNet::V4(*b).contains(&pod.ip))
        {
            problems.push(format!(
                "simulated nodes: not every speaker holds a route to pod {} ({}) on {}",
                pod.name, pod.ip, pod.node
            ));
        }
    }
}

/// The report's section on the fleet: its status, and per real node its sessions to the
/// simulated nodes and their blocks in its kernel.
pub fn report_section(out: &mut String, state: &LabState, sim: &SimulatedState) {
    let _ = writeln!(
        out,
        "\n==== {} simulated nodes: netns {}, addresses in {SIM_SUBNET}, margay-lab simulate \
         (PID {}) ====",
        sim.count, sim.netns, sim.pid
    );
    match FleetStatus::load(&sim.status_file) {
        Ok(s) => {
            let _ = writeln!(
                out,
                "registered {} of {}; sessions Established {} of {} ({} speakers up); resets {}; \
                 prefixes every speaker holds: {} (fewest in one table: {})",
                s.registered,
                s.simulated,
                s.sessions_up,
                expected_fleet_sessions(state, sim),
                s.speakers_up,
                s.downs,
                s.held_by_all.len(),
                s.fewest_routes
            );
        }
        Err(e) => {
            let _ = writeln!(out, "no status: {e:#}");
        }
    }
    let by_node: HashMap<&str, Result<usize, String>> = state
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), kernel_blocks(n)))
        .collect();
    for n in &state.nodes {
        let kernel = match &by_node[n.name.as_str()] {
            Ok(k) => k.to_string(),
            Err(e) => e.clone(),
        };
        let _ = writeln!(
            out,
            "{}: sessions to simulated nodes expected {}; simulated blocks in its kernel {kernel} \
             of {}",
            n.name,
            expected_sessions(state, sim, n),
            sim.count
        );
    }
}

/// `margayctl node status` with the simulated peers' rows left out (the report counts them in
/// its simulated section instead).
pub fn without_simulated_rows(text: &str) -> String {
    let mut left_out = 0usize;
    let mut out: String = text
        .lines()
        .filter(|l| {
            let sim = l
                .split(|c: char| c == '|' || c.is_whitespace())
                .filter_map(|w| w.parse::<Ipv4Addr>().ok())
                .any(|a| fleet::is_simulated(&a.into()));
            left_out += usize::from(sim);
            !sim
        })
        .map(|l| format!("{l}\n"))
        .collect();
    if left_out > 0 {
        let _ = writeln!(out, "({left_out} simulated peers left out)");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_rows_are_left_out_of_node_status() {
        let text = "| 10.99.1.2 | node-to-node mesh | up | Established |\n\
                    | 10.97.0.10 | node-to-node mesh | up | Established |\n\
                    | 10.97.0.11 | node-to-node mesh | up | Established |\n";
        let out = without_simulated_rows(text);
        assert!(out.contains("10.99.1.2"), "{out}");
        assert!(!out.contains("10.97.0.1"), "{out}");
        assert!(out.contains("(2 simulated peers left out)"), "{out}");
    }
}
