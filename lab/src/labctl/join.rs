//! `margay-lab node add [NAME]` and `margay-lab node remove NAME` on a kept lab: a node joins
//! the running cluster (its namespace on rack a's switch, margay-bgpd and margay-felix with the
//! flags every lab node gets, its Node resource, its pods through the CNI plugin) or leaves it
//! (Node deleted, daemons stopped, pods and namespaces gone), and the command reports how long
//! each step took as the rest of the cluster sees it.
//!
//! The ToR learns a joining node the way a fabric learns an autoscaled one: from the BGP listen
//! range of the node's rack (BIRD 2's `neighbor range`, see [`super::topology::Plan::tor_config`]),
//! without a change to its configuration; the report names the session BIRD spawned. On a
//! `--tors 2` lab the node is dual-homed as `up` makes every node there: a second link on plane
//! b, and a configured BFD session on each ToR, both ToRs reconfigured in place
//! ([`super::fabric`]).

use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::LabCtlError;
use super::down::alive;
use super::fabric::{self, Configured, Outcome, Sessions, TorSession};
use super::pods::{self, Sandbox};
use super::state::{LabState, NodeState, PodState};
use super::topology::{
    JOINED_PREFIX, Mode, NODE_AS, PODS_PER_NODE, Plan, RACK_LABEL, fabric_protocol,
};
use crate::bgpd::{Bgpd, ClusterArgs, margay_binary};
use crate::bird::birdc;
use crate::felix::{Felix, FelixArgs};
use crate::netns::{Netns, Switch, list_namespaces, require_root};
use crate::process::wait_for_every;

/// How often the kernels are looked at while a timing runs.
const POLL: Duration = Duration::from_millis(5);

/// How long each step of a join took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinTimings {
    /// margay-bgpd started → it answers on its socket.
    pub bgpd_answers: Duration,
    /// margay-bgpd started → margay-felix ready (both daemons started from nothing).
    pub ready: Duration,
    /// margay-bgpd started → the first route to another node's pods in the node's kernel
    /// (`None` if none came within the timeout).
    pub first_remote_route: Option<Duration>,
    /// The first pod's CNI ADD, from its start until it returned.
    pub first_add: Duration,
    /// The first pod's ADD returned → its address routed in every other node's kernel and the
    /// ToR's.
    pub first_pod_routed: Duration,
}

/// What `node add` did.
#[derive(Debug, Clone)]
pub struct Joined {
    pub node: NodeState,
    pub pods: Vec<PodState>,
    /// The ToRs' sessions with the node: on a one-ToR lab the one its listen range spawned
    /// (per family), on a `--tors 2` lab each ToR's configured one with its BFD session.
    pub tor_sessions: Vec<TorSession>,
    /// `--tors 2`: what the ToRs' reconfiguration did to their other sessions.
    pub fabric: Option<Outcome>,
    pub timings: JoinTimings,
}

/// What `node remove` did.
#[derive(Debug, Clone)]
pub struct Left {
    pub node: String,
    /// `--tors 2`: what removing its session from both ToRs did to their other sessions.
    pub fabric: Option<Outcome>,
    /// The Node resource deleted → no kernel of the lab (other nodes, the ToR) routes to the
    /// node's pods any more and no other margay-bgpd lists it as a peer.
    pub gone_everywhere: Duration,
}

fn no_lab(state_file: &Path) -> LabCtlError {
    LabCtlError::Usage(format!(
        "no lab is running (no {}); start one with `margay-lab up --keep`",
        state_file.display()
    ))
}

/// The lowest `k` whose `node{k}` name and `n{k}` namespace the lab does not use yet.
fn next_index(state: &LabState, existing: &[String]) -> usize {
    let prefix = state.name_prefix();
    (1..)
        .find(|k| {
            let name = format!("node{k}");
            let ns = format!("{prefix}n{k}");
            state.node(&name).is_none() && !existing.contains(&ns)
        })
        .expect("an unused index")
}

/// The lowest host address on `subnet` that no node, ToR port or etcd of the lab holds.
pub fn free_address(state: &LabState, subnet: Ipv4Net) -> Result<Ipv4Net, LabCtlError> {
    let etcd: Option<Ipv4Addr> = state
        .etcd
        .endpoint
        .trim_start_matches("http://")
        .split(':')
        .next()
        .and_then(|a| a.parse().ok());
    let used: Vec<Ipv4Addr> = state
        .nodes
        .iter()
        .map(|n| n.address4)
        .chain(state.tor.addresses.iter().copied())
        .chain(etcd)
        .collect();
    lowest_free(subnet, &used)
}

/// The lowest host address on `subnet` not among `used`, with the subnet's length.
pub fn lowest_free(subnet: Ipv4Net, used: &[Ipv4Addr]) -> Result<Ipv4Net, LabCtlError> {
    subnet
        .hosts()
        .find(|a| !used.contains(a))
        .map(|a| Ipv4Net::new(a, subnet.prefix_len()).expect("the subnet's length"))
        .ok_or_else(|| LabCtlError::Usage(format!("no free address left on {subnet}")))
}

/// The IPv6 address of a node joining rack `rack` at IPv4 address `addr`: the same host number
/// on the rack's IPv6 /64 (the ToR's), as [`super::topology::Plan`] numbers the first nodes.
fn address6_beside(state: &LabState, rack: usize, addr: Ipv4Net) -> Result<Ipv6Net, LabCtlError> {
    let tor6 = state.tor.addresses6.get(rack).ok_or_else(|| {
        LabCtlError::Usage(format!(
            "this --ip-family {} lab records no IPv6 address of the ToR",
            state.ip_family
        ))
    })?;
    let mut seg = tor6.segments();
    seg[7] = u16::from(addr.addr().octets()[3]);
    Ok(Ipv6Net::new(Ipv6Addr::from(seg), 64).expect("64 is a valid length"))
}

/// Runs margayctl against the lab's etcd (`endpoint`) from namespace `ns`; its stdout.
pub fn margayctl(ns: &Netns, endpoint: &str, args: &[&str]) -> Result<String, LabCtlError> {
    let ctl = margay_binary("margayctl", "cargo build -p margay-ctl --bin margayctl")?;
    let out = ns
        .command(&ctl)
        .arg("--etcd-endpoints")
        .arg(endpoint)
        .args(args)
        .env_remove("MARGAY_ETCD_ENDPOINTS")
        .output()
        .map_err(|e| LabCtlError::Usage(format!("running margayctl: {e}")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(LabCtlError::Usage(format!(
            "margayctl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Whether the kernel of namespace `netns` has a route (other than a default) covering `ip`.
fn kernel_routes(netns: &str, ip: IpAddr) -> bool {
    let family = if ip.is_ipv4() { "-4" } else { "-6" };
    let out = Command::new("ip")
        .args([
            "-n",
            netns,
            family,
            "route",
            "show",
            "match",
            &ip.to_string(),
        ])
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .any(|l| !l.starts_with("default") && !l.trim().is_empty()),
        _ => false,
    }
}

/// Watches namespace `netns` from `t0` for the first route of felix's (protocol 81) through a
/// gateway, a route to another node's pods; the thread ends with when it came, or `None`.
fn watch_first_remote_route(
    netns: String,
    t0: Instant,
    timeout: Duration,
) -> std::thread::JoinHandle<Option<Duration>> {
    std::thread::spawn(move || {
        while t0.elapsed() < timeout {
            let out = Command::new("ip")
                .args(["-n", &netns, "-4", "route", "show", "proto", "81"])
                .output();
            if let Ok(o) = out
                && String::from_utf8_lossy(&o.stdout).contains(" via ")
            {
                return Some(t0.elapsed());
            }
            std::thread::sleep(POLL);
        }
        None
    })
}

/// The namespaces whose kernels route to other nodes' pods: every node but `except`, and the
/// ToRs.
fn observers(state: &LabState, except: &str) -> Vec<String> {
    state
        .nodes
        .iter()
        .filter(|n| n.name != except)
        .map(|n| n.netns.clone())
        .chain(state.tors().map(|t| t.netns.clone()))
        .collect()
}

/// In `birdc show protocols all` output, the protocol whose neighbour is `addr`: its name
/// and its block of lines.
fn session_with(text: &str, addr: IpAddr) -> Option<(String, String)> {
    let want = format!("Neighbor address: {addr}");
    let mut name = None;
    let mut block = String::new();
    for line in text.lines() {
        let starts_block = line
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
            && !line.starts_with("BIRD ")
            && !line.starts_with("Name ");
        if starts_block {
            if name.is_some() {
                break;
            }
            block.clear();
        }
        block.push_str(line);
        block.push('\n');
        if line.trim() == want {
            name = block.split_whitespace().next().map(str::to_string);
        }
    }
    name.map(|n| (n, block))
}

/// The ToR's Established session with `addr` that its listen range spawned, and its
/// `show protocols all` text.
fn tor_session_of(socket: &Path, addr: IpAddr) -> Result<(String, String), String> {
    let text = birdc(socket, &["show", "protocols", "all"]).map_err(|e| e.to_string())?;
    match session_with(&text, addr) {
        Some((n, block)) if n.starts_with(JOINED_PREFIX) && block.contains("Established") => {
            Ok((n, block))
        }
        Some((n, _)) => Err(format!(
            "the ToR's session {n} with {addr} is not Established"
        )),
        None => Err(format!("the ToR has no session with {addr} yet")),
    }
}

/// `margay-lab node add [NAME]`: a node joins the kept lab on rack a, with its pods. Returns
/// once its pods are routed everywhere and the ToR has a session with it.
pub fn node_add(
    state_file: &Path,
    name: Option<&str>,
    timeout: Duration,
) -> Result<Joined, LabCtlError> {
    require_root()?;
    let mut state = LabState::load(state_file)?.ok_or_else(|| no_lab(state_file))?;
    let dual_homed = state.tor2.is_some();
    if state.no_bgp {
        return Err(LabCtlError::Usage(
            "node add/remove are BGP joins (sessions with the ToR and the mesh); a lab made with \
             --no-bgp does not support them yet (bench/vxlan-join.sh times a join without BGP)"
                .into(),
        ));
    }
    let existing = list_namespaces()?;
    let k = next_index(&state, &existing);
    let name = name.map_or_else(|| format!("node{k}"), str::to_string);
    if state.node(&name).is_some() {
        return Err(LabCtlError::Usage(format!(
            "the lab has a node {name} already"
        )));
    }
    let family = state.ip_family;
    let prefix = state.name_prefix();
    let role = format!("n{k}");
    let rack = 0;
    let subnet = state.subnets[rack];
    let addr = free_address(&state, subnet)?;
    // Its IPv6 address: the same host number on the rack's IPv6 subnet (as `up` numbers them).
    let addr6 = family
        .has_v6()
        .then(|| address6_beside(&state, rack, addr))
        .transpose()?;
    // `--tors 2`: its address on plane b, the second ToR's switch (the last one).
    let addr_b = dual_homed
        .then(|| fabric::free_address_b(&state))
        .transpose()?;
    let endpoint = state.etcd.endpoint_for(state.nodes.len()).to_string();
    let dir = state.dir.clone();

    // The host: its namespace on the rack's switch, routed through the ToR; with two ToRs,
    // its second link on plane b.
    let ns = Netns::create(&format!("{prefix}{role}"))?;
    let switch = Switch::adopt(&state.switches[rack])?;
    let mut nets = vec![IpNet::V4(addr)];
    nets.extend(addr6.map(IpNet::V6));
    let attached = switch.attach(&ns, &nets);
    switch.into_kept();
    attached?;
    if let Some(b) = addr_b {
        let plane = state.switches.last().filter(|_| state.switches.len() > 1);
        let plane = Switch::adopt(plane.ok_or_else(|| {
            LabCtlError::Usage("the --tors 2 lab records no plane b switch".into())
        })?)?;
        let attached = plane.attach(&ns, &[IpNet::V4(b)]);
        plane.into_kept();
        attached?;
    }
    let gw = state.tor.addresses[rack].to_string();
    ns.ip(&["route", "add", "default", "via", &gw])?;
    // Both ToRs get a session with it before its margay-bgpd starts; the other sessions are
    // left running (checked once the node is up).
    let sessions_before = addr_b.map(|_| Sessions::of(&state)).transpose()?;
    let (configured, reconfiguration) = match addr_b {
        Some(b) => {
            let (c, r) = Configured::add(&state, &name, addr.addr(), b.addr())?;
            (Some(c), Some(r))
        }
        None => (None, None),
    };

    let bgpd_socket = dir.join(format!("{name}-bgpd.sock"));
    let felix_socket = dir.join(format!("{name}-felix.sock"));
    let conflist = dir.join(format!("{name}.conflist"));
    let list = pods::conflist_for(
        &name,
        &felix_socket,
        state.pool_mode.mtu_for(family),
        family.has_v4(),
        family.has_v6(),
    );
    let text = serde_json::to_string_pretty(&list).map_err(|e| LabCtlError::state(&conflist, e))?;
    std::fs::write(&conflist, text).map_err(|e| LabCtlError::state(&conflist, e))?;

    // The daemons, as `up` starts them; the clock runs from bgpd's start.
    let t0 = Instant::now();
    let first_remote = watch_first_remote_route(ns.name().to_string(), t0, timeout);
    let mut args = ClusterArgs::new(&name, &endpoint, IpNet::V4(addr)).asn(NODE_AS);
    if let Some(a6) = addr6 {
        args = args.ip6(IpNet::V6(a6));
    }
    if !family.has_v4() {
        // An IPv6-only Node, as `up` makes them: no IPv4 BGP address.
        args.ip = Some("none".into());
    }
    let bgpd = Bgpd::start_cluster_in(&dir, &ns, &format!("{name}-bgpd"), args)?;
    let bgpd_answers = t0.elapsed();
    let mut addresses = String::new();
    if family.has_v4() {
        addresses.push_str(&format!("    ipv4Address: {addr}\n"));
    }
    if let Some(a6) = addr6 {
        addresses.push_str(&format!("    ipv6Address: '{a6}'\n"));
    }
    let node_yaml = format!(
        "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: {name}\n  labels:\n    \
         {RACK_LABEL}: {}\nspec:\n  bgp:\n{addresses}    asNumber: {NODE_AS}\n",
        Plan::rack_name(rack)
    );
    let yaml_path = dir.join(format!("{name}-node.yaml"));
    std::fs::write(&yaml_path, node_yaml).map_err(|e| LabCtlError::state(&yaml_path, e))?;
    margayctl(
        &ns,
        &endpoint,
        &["apply", "-f", &yaml_path.to_string_lossy()],
    )?;
    let fargs = FelixArgs::new(&name, &endpoint, &bgpd_socket, &felix_socket);
    let felix = Felix::start_in(&dir, &ns, &format!("{name}-felix"), fargs)?;
    let ready = t0.elapsed();

    // Its pods, through the plugin; the first one is timed until every kernel routes it.
    let plugin = pods::plugin_binary()?;
    let watchers = observers(&state, &name);
    let mut pod_guards = Vec::new();
    let mut pod_states = Vec::new();
    let mut first_add = Duration::ZERO;
    let mut first_pod_routed = Duration::ZERO;
    for j in 1..=PODS_PER_NODE {
        let pod_ns = Netns::create(&format!("{prefix}{role}p{j}"))?;
        let pod = format!("web-{k}-{j}");
        let container_id = format!("lab{k:0>6}{j:0>2}");
        let sandbox = Sandbox {
            pod: &pod,
            container_id: &container_id,
            netns: pod_ns.name(),
        };
        let t_add = Instant::now();
        let added = pods::add(&plugin, &conflist, &sandbox)?;
        if j == 1 {
            first_add = t_add.elapsed();
            let t_routed = Instant::now();
            wait_for_every(
                &format!("pod {pod} ({}) routed in every kernel", added.ip),
                timeout,
                POLL,
                &[],
                || {
                    let missing: Vec<&String> = watchers
                        .iter()
                        .filter(|w| !kernel_routes(w, added.ip))
                        .collect();
                    if missing.is_empty() {
                        Ok(())
                    } else {
                        Err(format!("no route in {missing:?}"))
                    }
                },
            )?;
            first_pod_routed = t_routed.elapsed();
        }
        pod_states.push(PodState {
            name: pod,
            node: name.clone(),
            netns: pod_ns.name().to_string(),
            container_id,
            ip: added.ip,
            ip6: added.ip6,
            interface: added.interface,
        });
        pod_guards.push(pod_ns);
    }

    // The ToR took the node from its listen range(s): one session per family. With two
    // ToRs: each ToR's configured session, BFD Up, and no other session reset.
    let mut tor_sessions = Vec::new();
    let mut fabric_outcome = None;
    if let (Some(b), Some(before), Some(r)) = (addr_b, &sessions_before, &reconfiguration) {
        tor_sessions = fabric::wait_sessions(&state, &name, addr.addr(), b.addr(), timeout)?;
        let protocol = fabric_protocol(&name);
        let (kept, dropped) = before.kept_by(&Sessions::of(&state)?, &protocol);
        fabric_outcome = Some(Outcome {
            protocol,
            in_place: r.in_place,
            kept,
            dropped,
        });
    } else {
        let session_addrs = [
            family.has_v4().then_some(IpAddr::V4(addr.addr())),
            addr6.map(|a| IpAddr::V6(a.addr())),
        ];
        for a in session_addrs.into_iter().flatten() {
            let (protocol, text) = wait_for_every(
                &format!("the ToR's session with {name} ({a})"),
                timeout,
                Duration::from_millis(50),
                &[],
                || tor_session_of(&state.tor.socket, a),
            )?;
            tor_sessions.push(TorSession {
                tor: state.tor.name.clone(),
                protocol,
                text,
            });
        }
    }

    // Remote routes most likely came long before; a lab with no other pods has none to wait
    // for, so the watch gets a few seconds more at most.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !first_remote.is_finished() && Instant::now() < deadline {
        std::thread::sleep(POLL);
    }
    let first_remote_route = if first_remote.is_finished() {
        first_remote.join().unwrap_or(None)
    } else {
        None
    };

    // Record it: its peers, and it as a peer of the nodes that peer with it (none with two
    // ToRs: the nodes peer with the ToRs only).
    let mut peers: Vec<IpAddr> = Vec::new();
    for other in &mut state.nodes {
        let peers_with = !dual_homed && (state.mode == Mode::Mesh || other.reflector);
        if peers_with && family.has_v4() {
            peers.push(IpAddr::V4(other.address4));
            other.peers.push(IpAddr::V4(addr.addr()));
        }
        if let (true, Some(theirs), Some(ours)) = (peers_with, other.address6, addr6) {
            peers.push(IpAddr::V6(theirs));
            other.peers.push(IpAddr::V6(ours.addr()));
        }
    }
    if family.has_v4() {
        peers.push(IpAddr::V4(state.tor.addresses[rack]));
    }
    if let (Some(_), Some(tor6)) = (addr6, state.tor.addresses6.get(rack)) {
        peers.push(IpAddr::V6(*tor6));
    }
    if let Some(tor2) = &state.tor2 {
        peers.extend(tor2.addresses.iter().map(|a| IpAddr::V4(*a)));
    }
    let node = NodeState {
        name: name.clone(),
        netns: ns.name().to_string(),
        rack: Plan::rack_name(rack),
        pid: bgpd.pid(),
        socket: bgpd_socket,
        felix_pid: felix.pid(),
        felix_socket,
        conflist,
        address4: addr.addr(),
        address6: addr6.map(|a| a.addr()),
        address_b: addr_b.map(|b| b.addr()),
        asn: NODE_AS,
        peers,
        reflector: false,
    };
    state.nodes.push(node.clone());
    state.pods.extend(pod_states.iter().cloned());
    for s in &tor_sessions {
        if let Some(tor) = state.tor2.as_mut().filter(|t| t.name == s.tor) {
            tor.protocols.push(s.protocol.clone());
        } else {
            state.tor.protocols.push(s.protocol.clone());
        }
    }
    state.save(state_file)?;
    if let Some(c) = configured {
        c.keep();
    }
    bgpd.into_kept();
    felix.into_kept();
    ns.into_kept();
    for p in pod_guards {
        p.into_kept();
    }
    Ok(Joined {
        node,
        pods: pod_states,
        tor_sessions,
        fabric: fabric_outcome,
        timings: JoinTimings {
            bgpd_answers,
            ready,
            first_remote_route,
            first_add,
            first_pod_routed,
        },
    })
}

/// Sends `signal` to a recorded daemon that still runs, and waits up to 5 s for it to end.
fn stop_daemon(pid: u32, signal: i32) {
    if pid == 0 || !alive(pid) {
        return;
    }
    // SAFETY: kill(2) on a PID the lab's state file records for this node's daemon.
    unsafe { libc::kill(pid as i32, signal) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if alive(pid) {
        // SAFETY: as above.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
}

/// Every peer address the margay-bgpd at `socket` lists (`margayctl node status -o json`).
fn listed_peers(socket: &Path) -> Result<Vec<IpAddr>, String> {
    let ctl = margay_binary("margayctl", "cargo build -p margay-ctl").map_err(|e| e.to_string())?;
    let out = Command::new(ctl)
        .args(["node", "status", "-o", "json", "--socket"])
        .arg(socket)
        .output()
        .map_err(|e| e.to_string())?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("node status of {}: {e}", socket.display()))?;
    Ok(["ipv4_peers", "ipv6_peers"]
        .iter()
        .filter_map(|k| v[k].as_array())
        .flatten()
        .filter_map(|p| p["peer_address"].as_str()?.parse().ok())
        .collect())
}

/// `margay-lab node remove NAME`: the node leaves the kept lab. Its Node resource is deleted
/// first (as `kubectl delete node` does), then its daemons stop (bgpd with a Cease, leaving
/// for good), its pods and namespaces go. Returns once nothing in the lab routes to it.
pub fn node_remove(state_file: &Path, name: &str, timeout: Duration) -> Result<Left, LabCtlError> {
    require_root()?;
    let mut state = LabState::load(state_file)?.ok_or_else(|| no_lab(state_file))?;
    if state.no_bgp {
        return Err(LabCtlError::Usage(
            "node add/remove are BGP joins (sessions with the ToR and the mesh); a lab made with \
             --no-bgp does not support them yet (bench/vxlan-join.sh times a join without BGP)"
                .into(),
        ));
    }
    let node = state
        .node(name)
        .cloned()
        .ok_or_else(|| LabCtlError::Usage(format!("the lab has no node {name}")))?;
    let pods: Vec<PodState> = state
        .pods
        .iter()
        .filter(|p| p.node == name)
        .cloned()
        .collect();
    // The ToR's sessions with it (one per family), named before they go down; with two ToRs,
    // each ToR's configured session, and every other session as it stands.
    let tor_text = birdc(&state.tor.socket, &["show", "protocols", "all"]).unwrap_or_default();
    let mut tor_protocols: Vec<String> = [
        Some(IpAddr::V4(node.address4)),
        node.address6.map(IpAddr::V6),
    ]
    .into_iter()
    .flatten()
    .filter_map(|a| session_with(&tor_text, a).map(|(n, _)| n))
    .collect();
    let dual_homed = state.tor2.is_some();
    let sessions_before = dual_homed.then(|| Sessions::of(&state)).transpose()?;
    if dual_homed {
        tor_protocols.push(fabric_protocol(name));
    }
    let etcd_ns = Netns::adopt(&state.etcd.netns)?;
    let t0 = Instant::now();
    let deleted = margayctl(&etcd_ns, &state.etcd.endpoint, &["delete", "node", name]);
    etcd_ns.into_kept();
    deleted?;
    stop_daemon(node.felix_pid, libc::SIGTERM);
    stop_daemon(node.pid, libc::SIGINT);
    let watchers = observers(&state, name);
    let others: Vec<PathBuf> = state
        .nodes
        .iter()
        .filter(|n| n.name != name)
        .map(|n| n.socket.clone())
        .collect();
    let addrs: Vec<IpAddr> = [
        Some(IpAddr::V4(node.address4)),
        node.address6.map(IpAddr::V6),
    ]
    .into_iter()
    .flatten()
    .collect();
    wait_for_every(
        &format!("{name} gone from every kernel and every peer list"),
        timeout,
        POLL,
        &[],
        || {
            let mut left = String::new();
            for p in &pods {
                for w in watchers.iter().filter(|w| kernel_routes(w, p.ip)) {
                    let _ = write!(left, "{w} routes {}; ", p.ip);
                }
            }
            for s in &others {
                let listed = listed_peers(s)?;
                for addr in addrs.iter().filter(|a| listed.contains(a)) {
                    let _ = write!(left, "{} lists {addr}; ", s.display());
                }
            }
            if left.is_empty() { Ok(()) } else { Err(left) }
        },
    )?;
    let gone_everywhere = t0.elapsed();

    // Both ToRs forget it: their configurations without it, loaded in place.
    let mut fabric_done = None;
    if let Some(before) = &sessions_before {
        let protocol = fabric_protocol(name);
        let r = fabric::reconfigure(&state, Some(name), None)?;
        let in_place = fabric::check_in_place(&r, &protocol)?;
        fabric::wait_protocols_gone(&state, name, timeout)?;
        let (kept, dropped) = before.kept_by(&Sessions::of(&state)?, &protocol);
        fabric_done = Some(Outcome {
            protocol,
            in_place,
            kept,
            dropped,
        });
    }

    for p in &pods {
        drop(Netns::adopt(&p.netns));
    }
    drop(Netns::adopt(&node.netns));
    for other in &mut state.nodes {
        other.peers.retain(|p| !addrs.contains(p));
    }
    state.nodes.retain(|n| n.name != name);
    state.pods.retain(|p| p.node != name);
    state
        .tor
        .protocols
        .retain(|p| p != name && !tor_protocols.contains(p));
    if let Some(tor2) = state.tor2.as_mut() {
        tor2.protocols.retain(|p| !tor_protocols.contains(p));
    }
    state.save(state_file)?;
    Ok(Left {
        node: name.to_string(),
        fabric: fabric_done,
        gone_everywhere,
    })
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// The report of a join.
pub fn render_joined(j: &Joined) -> String {
    let mut s = String::new();
    let t = &j.timings;
    let _ = writeln!(
        s,
        "node {} joined at {} (namespace {})",
        j.node.name, j.node.address4, j.node.netns
    );
    let _ = writeln!(
        s,
        "  margay-bgpd start -> answering        {}",
        ms(t.bgpd_answers)
    );
    let _ = writeln!(
        s,
        "  margay-bgpd start -> margay-felix ready {}",
        ms(t.ready)
    );
    let _ = writeln!(
        s,
        "  first pod CNI ADD                     {}",
        ms(t.first_add)
    );
    let _ = writeln!(
        s,
        "  first pod ADD returned -> routed in every kernel {}",
        ms(t.first_pod_routed)
    );
    for p in &j.pods {
        let _ = writeln!(s, "  pod {} {} ({})", p.name, p.ip, p.interface);
    }
    if let (Some(b), Some(f)) = (j.node.address_b, &j.fabric) {
        let _ = writeln!(s, "dual-homed: plane b address {b}, BFD on with both ToRs");
        s.push_str(&f.render("with"));
        for t in &j.tor_sessions {
            let _ = writeln!(s, "{}: session {}:", t.tor, t.protocol);
            let mut lines: Vec<&str> = t
                .text
                .lines()
                .filter(|l| !l.starts_with("BIRD ") && !l.starts_with("Name "))
                .take(6)
                .collect();
            lines.extend(t.text.lines().filter(|l| l.starts_with("BFD: ")));
            for line in lines {
                let _ = writeln!(s, "  {line}");
            }
        }
        return s;
    }
    if let Some(t) = j.tor_sessions.first() {
        let _ = writeln!(
            s,
            "the ToR learned it from its listen range, as session {}:",
            t.protocol
        );
        for line in t.text.lines().take(8) {
            let _ = writeln!(s, "  {line}");
        }
    }
    s
}

/// The report of a leave.
pub fn render_left(l: &Left) -> String {
    let mut s = format!(
        "node {} left: Node deleted -> gone from every kernel and peer list in {}\n",
        l.node,
        ms(l.gone_everywhere)
    );
    if let Some(f) = &l.fabric {
        s.push_str(&f.render("without"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_session_a_listen_range_spawned() {
        let text = "BIRD 2.0.12 ready.\n\
            Name       Proto      Table      State  Since         Info\n\
            node1      BGP        ---        up     20:50:01.123  Established\n\
            \x20 BGP state:          Established\n\
            \x20   Neighbor address: 10.99.1.1\n\
            joined_a1  BGP        ---        up     20:51:02.456  Established\n\
            \x20 BGP state:          Established\n\
            \x20   Neighbor address: 10.99.1.7\n\
            \x20   Neighbor AS:      64512\n\
            joined_a2  BGP        ---        start  20:51:03.000  Active\n";
        let (name, block) = session_with(text, "10.99.1.7".parse().unwrap()).unwrap();
        assert_eq!(name, "joined_a1");
        assert!(block.contains("Neighbor AS:      64512"), "{block}");
        assert!(!block.contains("joined_a2"), "{block}");
        assert!(session_with(text, "10.99.1.9".parse().unwrap()).is_none());
    }
}
