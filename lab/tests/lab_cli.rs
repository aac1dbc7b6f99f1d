//! `margay-lab` end to end: the real binary builds a lab of namespaces (etcd, margay-bgpd and
//! margay-felix per node, a BIRD ToR, pods through the CNI plugin), reports on it, keeps it or
//! removes it. Each test points the command at its own
//! state file, so they run in parallel and never touch an operator's kept lab.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use std::time::{Duration, Instant};

use margay_lab::labctl::PoolMode;
use margay_lab::labctl::down::alive;
use margay_lab::labctl::fabric::Sessions;
use margay_lab::labctl::ping;
use margay_lab::labctl::state::{LabState, NodeState, PodState, STATE_ENV};
use margay_lab::{BirdProtocol, list_namespaces};

const LAB: &str = env!("CARGO_BIN_EXE_margay-lab");

/// Runs `margay-lab ARGS...` with its state file at `state`.
fn lab(state: &Path, args: &[&str]) -> Output {
    Command::new(LAB)
        .args(args)
        .env(STATE_ENV, state)
        .output()
        .expect("running margay-lab")
}

/// stdout and stderr, for assertion messages.
fn shown(o: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A lab kept by `margay-lab up --keep ARGS...` (asserted to succeed) with its state file in
/// a directory of its own, taken down when the test ends: the directory, the state file, the
/// guard, `up`'s output.
struct KeptLab {
    _dir: tempfile::TempDir,
    state_file: PathBuf,
    _down: DownOnDrop,
    up: Output,
}

fn up_kept(args: &[&str]) -> KeptLab {
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("state.json");
    let down = DownOnDrop(state_file.clone());
    let mut all = vec!["up", "--keep"];
    all.extend_from_slice(args);
    let up = lab(&state_file, &all);
    assert!(up.status.success(), "{}", shown(&up));
    KeptLab {
        _dir: dir,
        state_file,
        _down: down,
        up,
    }
}

/// Runs `margay-lab down` for a kept lab if the test ends before doing so itself.
struct DownOnDrop(PathBuf);

impl Drop for DownOnDrop {
    fn drop(&mut self) {
        if self.0.exists() {
            let o = lab(&self.0, &["down"]);
            eprintln!("cleanup: margay-lab down: {}", shown(&o));
        }
    }
}

/// One row of a `margayctl node status` table.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PeerRow {
    address: String,
    peer_type: String,
    state: String,
    info: String,
}

/// The report's sections: `==== NAME...` header → the text of each command under it, keyed by
/// the command line.
fn sections(report: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let (mut section, mut command) = (String::new(), String::new());
    for line in report.lines() {
        if let Some(h) = line.strip_prefix("==== ") {
            section = h.split([' ', ':']).next().unwrap_or_default().to_string();
            command.clear();
        } else if let Some(c) = line.strip_prefix("$ ") {
            command = c.to_string();
        } else if !section.is_empty() && !command.is_empty() {
            let text = out
                .entry(section.clone())
                .or_default()
                .entry(command.clone())
                .or_default();
            text.push_str(line);
            text.push('\n');
        }
    }
    out
}

/// The text a command whose line contains `needle` printed in `section`.
fn command_output<'a>(
    s: &'a BTreeMap<String, BTreeMap<String, String>>,
    section: &str,
    needle: &str,
) -> &'a str {
    s.get(section)
        .and_then(|cmds| cmds.iter().find(|(c, _)| c.contains(needle)))
        .map(|(_, t)| t.as_str())
        .unwrap_or_else(|| panic!("no `{needle}` in section {section}: {s:#?}"))
}

/// The peer rows of a `margayctl node status` table.
fn peer_rows(status: &str) -> Vec<PeerRow> {
    status
        .lines()
        .filter(|l| l.starts_with("| ") && !l.contains("PEER ADDRESS"))
        .map(|l| {
            let c: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            PeerRow {
                address: c[0].into(),
                peer_type: c[1].into(),
                state: c[2].into(),
                info: c[4].into(),
            }
        })
        .collect()
}

fn tor_protocols(s: &BTreeMap<String, BTreeMap<String, String>>) -> Vec<BirdProtocol> {
    let text = command_output(s, "tor", "show protocols");
    margay_lab::bird::parse_protocols(text).expect("birdc show protocols in the report")
}

/// Asserts a node's table: every row `up`/Established, and the peer types expected.
fn assert_all_up_with_types(
    s: &BTreeMap<String, BTreeMap<String, String>>,
    node: &str,
    types: &[&str],
) {
    let rows = peer_rows(command_output(s, node, "node status"));
    for r in &rows {
        assert_eq!(
            (r.state.as_str(), r.info.as_str()),
            ("up", "Established"),
            "{node}: {r:?}"
        );
    }
    let mut got: Vec<&str> = rows.iter().map(|r| r.peer_type.as_str()).collect();
    got.sort();
    let mut want = types.to_vec();
    want.sort();
    assert_eq!(got, want, "{node}: {rows:?}");
}

fn namespaces_with(prefix: &str) -> Vec<String> {
    list_namespaces()
        .expect("ip netns list")
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// `margayctl node status -o json` of every node of a kept lab, run in its namespace as an
/// operator would: every peer the plan expects is there and Established, with the given
/// peer-type labels per node.
fn assert_every_peer_established(state: &LabState, types: &[(&str, &[&str])]) {
    let ctl = margay_lab::margay_binary("margayctl", "cargo build -p margay-ctl").unwrap();
    for node in &state.nodes {
        let out = Command::new("ip")
            .args(["netns", "exec", &node.netns])
            .arg(&ctl)
            .args(["node", "status", "-o", "json", "--socket"])
            .arg(&node.socket)
            .output()
            .expect("margayctl");
        assert!(out.status.success(), "{}: {}", node.name, shown(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        let peers = v["ipv4_peers"].as_array().expect("ipv4_peers");
        let mut addrs: Vec<String> = peers
            .iter()
            .map(|p| p["peer_address"].as_str().unwrap_or_default().to_string())
            .collect();
        addrs.sort();
        let mut want: Vec<String> = node.peers.iter().map(|a| a.to_string()).collect();
        want.sort();
        assert_eq!(addrs, want, "{}: {v}", node.name);
        for p in peers {
            assert_eq!(p["info"], "Established", "{}: {p}", node.name);
        }
        if let Some((_, t)) = types.iter().find(|(n, _)| *n == node.name) {
            let mut got: Vec<&str> = peers
                .iter()
                .map(|p| p["peer_type"].as_str().unwrap_or_default())
                .collect();
            got.sort();
            let mut t = t.to_vec();
            t.sort();
            assert_eq!(got, t, "{}: {v}", node.name);
        }
    }
}

/// Every pod answers a ping from every other pod and from the ToR, asked again from this
/// process through the library (not the lab's own report).
fn assert_every_ping_answered(state: &LabState) {
    let results = ping::matrix(state, 2);
    assert_eq!(results.len(), state.pods.len() * state.pods.len());
    let failed: Vec<_> = results.iter().filter(|r| !r.reached()).collect();
    assert!(failed.is_empty(), "unanswered pings: {failed:#?}");
}

/// After `down`: no namespace with the lab's prefix, no process it recorded, no etcd data dir,
/// no lab directory, no state file, no link in this namespace carrying the prefix.
fn assert_nothing_left(state: &LabState, state_file: &Path) {
    let prefix = state.name_prefix();
    assert_eq!(namespaces_with(&prefix), Vec::<String>::new());
    for p in state.processes() {
        assert!(!alive(p.pid), "{} (PID {}) still runs", p.name, p.pid);
    }
    assert!(!state.etcd.data_dir.exists(), "{:?}", state.etcd.data_dir);
    assert!(!state.dir.exists(), "{:?}", state.dir);
    assert!(!state_file.exists());
    let links = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .expect("ip link");
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(!links.contains(&prefix), "links left: {links}");
}

/// felix's routes on `node` (`ip -j route show proto 81`).
fn felix_routes(node: &NodeState) -> Vec<serde_json::Value> {
    let out = Command::new("ip")
        .args(["-n", &node.netns, "-j", "route", "show", "proto", "81"])
        .output()
        .expect("ip route");
    serde_json::from_slice(&out.stdout).expect("ip -j prints JSON")
}

/// No route of felix's on `node` covers any of `pods` (they left with their node).
fn assert_no_felix_route<'a>(node: &NodeState, pods: impl IntoIterator<Item = &'a PodState>) {
    let routes = felix_routes(node);
    for p in pods {
        assert!(
            !routes.iter().any(|r| r["dst"]
                .as_str()
                .and_then(|d| d.parse::<ipnet::IpNet>().ok())
                .is_some_and(|n| n.contains(&p.ip))),
            "{}: still routes {}: {routes:?}",
            node.name,
            p.ip
        );
    }
}

/// The route on `node` to the block holding `pod`'s address.
fn block_route(node: &NodeState, pod: &PodState) -> serde_json::Value {
    route_to_block_of(node, pod.ip)
}

/// `up --keep` then `status` then `down`, with a lab as the README shows it (three nodes,
/// mesh, no encapsulation): the report, the sessions and pings checked from outside, the
/// library's restart API on a kept lab's state, and nothing left after `down`.
#[test]
fn never_mode_mesh_lab_converges_reports_and_down_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("state.json");
    let _down = DownOnDrop(state_file.clone());

    let up = lab(&state_file, &["up", "--keep"]);
    assert!(up.status.success(), "{}", shown(&up));
    let text = stdout(&up);
    for step in 1..=14 {
        assert!(text.contains(&format!("[{step}/14] ")), "{text}");
    }
    assert!(text.contains("36 of 36 reached"), "{text}");
    let s = sections(&text);
    for node in ["node1", "node2", "node3"] {
        assert_all_up_with_types(
            &s,
            node,
            &["node-to-node mesh", "node-to-node mesh", "global"],
        );
        let routes = command_output(&s, node, "route show proto 81");
        assert!(routes.contains("blackhole 10.100."), "{node}: {routes}");
        // The two other nodes' blocks, and the ToR's prefix.
        assert_eq!(routes.matches(" via 10.99.").count(), 3, "{node}: {routes}");
        assert!(
            routes.contains("198.51.100.0/24 via 10.99."),
            "{node}: {routes}"
        );
    }
    // The policy: the ToR holds the pool's blocks with the community, its own prefix only as
    // its static route (no node sent it back), and node1 holds that prefix on one path only.
    let pool = command_output(&s, "policy", "show route where net");
    assert_eq!(
        pool.matches("BGP.community: (64512,100)").count(),
        pool.matches("BGP.as_path:").count(),
        "every pool route the ToR holds carries the community:\n{pool}"
    );
    assert!(pool.matches("BGP.as_path:").count() >= 3, "{pool}");
    let back = command_output(&s, "policy", "show route 198.51.100.0/24");
    assert!(back.contains("static4"), "{back}");
    assert!(
        !back.contains("BGP.as_path"),
        "a node sent the ToR's prefix back: {back}"
    );
    let held = command_output(&s, "policy", "node routes --all");
    assert_eq!(held.matches("198.51.100.0/24").count(), 1, "{held}");
    let tor = tor_protocols(&s);
    assert_eq!(
        tor.iter().filter(|p| p.is_established()).count(),
        3,
        "{tor:?}"
    );
    // IPAM's leak collection: one felix elected, every node alive, nothing leaked.
    let ipam = command_output(&s, "IPAM", "ipam show --show-configuration");
    assert!(
        ipam.contains("LiveNodes") && ipam.contains("node1,node2,node3"),
        "{ipam}"
    );
    let elected = text
        .lines()
        .find_map(|l| l.strip_prefix("IPAM collector elected: "))
        .unwrap_or_else(|| panic!("no collector line: {text}"));
    assert!(elected.starts_with("node"), "{elected}");
    assert!(ipam.contains(elected.split(';').next().unwrap()), "{ipam}");

    let state = LabState::load(&state_file)
        .unwrap()
        .expect("state recorded");
    assert_eq!(state.pods.len(), 6);
    assert_eq!(state.pool_mode, PoolMode::Never);
    assert_every_peer_established(&state, &[]);
    assert_every_ping_answered(&state);
    let (n1, pod3) = (&state.nodes[0], &state.pods[4]);
    let r = block_route(n1, pod3);
    assert_eq!(r["gateway"], state.nodes[2].address4.to_string(), "{r}");

    let status = lab(&state_file, &["status"]);
    assert!(status.status.success(), "{}", shown(&status));
    let again = stdout(&status);
    assert!(again.contains("36 of 36 reached"), "{again}");
    assert!(again.contains("all 6 BGP sessions Established"), "{again}");

    let down = lab(&state_file, &["down"]);
    assert!(down.status.success(), "{}", shown(&down));
    assert_nothing_left(&state, &state_file);
}

/// VXLAN with node1 as the route reflector: clients peer only with node1 and the ToR, remote
/// blocks go through `vxlan.margay`, and every pod still reaches every other.
#[test]
fn vxlan_route_reflector_lab_routes_through_the_tunnel_and_pods_reach_each_other() {
    let kept = up_kept(&["--pool-mode", "vxlan", "--mode", "route-reflectors"]);
    let state_file = kept.state_file.clone();
    let state = LabState::load(&state_file)
        .unwrap()
        .expect("state recorded");
    assert_every_peer_established(
        &state,
        &[
            (
                "node1",
                &["route reflector client", "route reflector client", "global"],
            ),
            ("node2", &["route reflector", "global"]),
            ("node3", &["route reflector", "global"]),
        ],
    );
    assert_every_ping_answered(&state);
    for (node, pod) in [(0, 2), (1, 4), (2, 0)] {
        let r = block_route(&state.nodes[node], &state.pods[pod]);
        assert_eq!(r["dev"], "vxlan.margay", "{r}");
    }
    let down = lab(&state_file, &["down"]);
    assert!(down.status.success(), "{}", shown(&down));
    assert_nothing_left(&state, &state_file);
}

/// A mixed cluster: two margay nodes and two Calico nodes (BIRD on confd's configuration,
/// Calico's keys imported). The margay nodes mesh with the Calico nodes, each side routes the
/// other's blocks (felix's routes on margay's side, BIRD's on Calico's), every pod reaches
/// every other, the report shows the Calico nodes, and `down` removes them too.
#[test]
fn calico_nodes_mesh_with_margay_nodes_and_pods_reach_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("state.json");
    let _down = DownOnDrop(state_file.clone());

    let up = lab(
        &state_file,
        &["up", "--keep", "--nodes", "2", "--calico-nodes", "2"],
    );
    assert!(up.status.success(), "{}", shown(&up));
    let text = stdout(&up);
    let state = LabState::load(&state_file)
        .unwrap()
        .expect("state recorded");
    assert_eq!(state.calico.len(), 2);
    let report = sections(&text);
    for c in &state.calico {
        let s = &report[&c.name];
        let protocols = s
            .iter()
            .find(|(cmd, _)| cmd.ends_with("show protocols"))
            .map(|(_, t)| margay_lab::bird::parse_protocols(t).unwrap())
            .unwrap_or_else(|| panic!("{}: no BIRD section: {s:?}", c.name));
        for name in &c.protocols {
            assert!(
                protocols
                    .iter()
                    .any(|p| &p.name == name && p.is_established()),
                "{}: {name} not Established: {protocols:?}",
                c.name
            );
        }
        // Calico's BIRD programs the margay nodes' blocks (protocol bird).
        let out = Command::new("ip")
            .args(["-n", &c.netns, "-j", "route", "show", "proto", "bird"])
            .output()
            .expect("ip route");
        let routes: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        for (pod, node) in state
            .pods
            .iter()
            .filter(|p| p.node != c.name)
            .filter_map(|p| state.node(&p.node).map(|n| (p, n)))
        {
            let found = routes.iter().any(|r| {
                r["gateway"] == node.address4.to_string().as_str()
                    && r["dst"]
                        .as_str()
                        .and_then(|d| d.parse::<ipnet::IpNet>().ok())
                        .is_some_and(|n| n.contains(&pod.ip))
            });
            assert!(
                found,
                "{}: no BIRD route to {}: {routes:?}",
                c.name, pod.name
            );
        }
    }
    // margay's felix routes the Calico nodes' blocks through them.
    for node in &state.nodes {
        for pod in state.pods.iter().filter(|p| p.node.starts_with("calico")) {
            let r = block_route(node, pod);
            let c = state.calico.iter().find(|c| c.name == pod.node).unwrap();
            assert_eq!(r["gateway"], c.address4.to_string().as_str(), "{r}");
        }
    }
    assert_every_peer_established(&state, &[]);
    assert_every_ping_answered(&state);

    // calico1 moves to margay as the runbook says, its pod pinging every other at 100/s.
    let migrate = lab(&state_file, &["node", "migrate", "calico1"]);
    assert!(migrate.status.success(), "{}", shown(&migrate));
    let text = stdout(&migrate);
    let pings: Vec<&str> = text.lines().filter(|l| l.contains("ping -> ")).collect();
    assert_eq!(pings.len(), state.pods.len() - 1, "{text}");
    for l in pings {
        assert!(l.contains(" 0% packet loss"), "{l}");
    }
    let moved = LabState::load(&state_file).unwrap().unwrap();
    assert_eq!(moved.calico.len(), 1);
    let node = moved.node("calico1").expect("calico1 is a margay node now");
    assert!(alive(node.pid) && alive(node.felix_pid), "{node:?}");
    assert!(
        felix_routes(node)
            .iter()
            .any(|r| r["type"] == "blackhole" && r["dst"] == "10.100.240.0/26"),
        "calico1's blackhole is felix's: {:?}",
        felix_routes(node)
    );
    assert_every_peer_established(&moved, &[]);
    assert_every_ping_answered(&moved);
    let status = lab(&state_file, &["status"]);
    assert!(status.status.success(), "{}", shown(&status));

    let down = lab(&state_file, &["down"]);
    assert!(down.status.success(), "{}", shown(&down));
    assert_nothing_left(&state, &state_file);
    assert_nothing_left(&moved, &state_file);
}

/// Every peer of every node, by family, from `margayctl node status -o json`: the address
/// and its state, for the IPv4 and the IPv6 table.
/// (peer address, state) rows of one family's table.
type PeerStates = Vec<(String, String)>;

fn peers_by_family(node: &NodeState) -> (PeerStates, PeerStates) {
    let v = node_status(node);
    let rows = |key: &str| -> PeerStates {
        let mut r: PeerStates = v[key]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                (
                    p["peer_address"].as_str().unwrap_or_default().to_string(),
                    p["info"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        r.sort();
        r
    };
    (rows("ipv4_peers"), rows("ipv6_peers"))
}

/// Every pod has the addresses of the lab's `family` (`dual`: IPv4 then IPv6; `ipv6`: IPv6).
fn assert_pod_families<'a>(pods: impl Iterator<Item = &'a PodState>, family: &str) {
    let want = if family == "dual" {
        vec![false, true]
    } else {
        vec![true]
    };
    for pod in pods {
        let fams: Vec<bool> = pod.addresses().iter().map(|a| a.is_ipv6()).collect();
        assert_eq!(fams, want, "{family}: {pod:?}");
    }
}

/// `--ip-family dual` and `ipv6`: every session the plan expects (one per family) is up in
/// `node status`'s table of its family, every pod has the families asked for, and every pod
/// reaches every other pod and is reached from the BIRD ToR over each family.
#[test]
fn dual_stack_and_ipv6_only_labs_route_every_family_between_nodes_and_the_tor() {
    for family in ["dual", "ipv6"] {
        let dir = tempfile::tempdir().unwrap();
        let state_file = dir.path().join("state.json");
        let _down = DownOnDrop(state_file.clone());
        let up = lab(
            &state_file,
            &["up", "--keep", "--nodes", "2", "--ip-family", family],
        );
        assert!(up.status.success(), "{family}: {}", shown(&up));
        let state = LabState::load(&state_file)
            .unwrap()
            .expect("state recorded");
        for node in &state.nodes {
            let (v4, v6) = peers_by_family(node);
            let want = |v6: bool| -> Vec<String> {
                let mut w: Vec<String> = node
                    .peers
                    .iter()
                    .filter(|a| a.is_ipv6() == v6)
                    .map(|a| a.to_string())
                    .collect();
                w.sort();
                w
            };
            assert_eq!(
                v4.iter().map(|p| p.0.clone()).collect::<Vec<_>>(),
                want(false)
            );
            assert_eq!(
                v6.iter().map(|p| p.0.clone()).collect::<Vec<_>>(),
                want(true)
            );
            assert_eq!(v6.len(), 2, "{family} {}: {v6:?}", node.name);
            assert!(
                v4.iter().chain(&v6).all(|p| p.1 == "Established"),
                "{family} {}: {v4:?} {v6:?}",
                node.name
            );
        }
        assert_pod_families(state.pods.iter(), family);
        let results = ping::matrix(&state, 2);
        let per_pair = if family == "dual" { 2 } else { 1 };
        assert_eq!(
            results.len(),
            per_pair * state.pods.len() * state.pods.len()
        );
        assert!(results.iter().any(|r| r.dst.is_ipv6()));
        let failed: Vec<_> = results.iter().filter(|r| !r.reached()).collect();
        assert!(failed.is_empty(), "{family}: unanswered pings: {failed:#?}");
        let down = lab(&state_file, &["down"]);
        assert!(down.status.success(), "{}", shown(&down));
        assert_nothing_left(&state, &state_file);
    }
}

/// Cross-subnet: node1 and node2 on rack a, node3 on rack b behind the ToR. Within a rack the
/// route is direct, between racks it goes through VXLAN, and every pod reaches every other.
#[test]
fn cross_subnet_lab_goes_direct_within_a_rack_and_through_vxlan_between_racks() {
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("state.json");
    let _down = DownOnDrop(state_file.clone());

    let up = lab(
        &state_file,
        &["up", "--keep", "--pool-mode", "cross-subnet"],
    );
    assert!(up.status.success(), "{}", shown(&up));
    let state = LabState::load(&state_file)
        .unwrap()
        .expect("state recorded");
    let racks: Vec<char> = state.nodes.iter().map(|n| n.rack).collect();
    assert_eq!(racks, ['a', 'a', 'b']);
    assert_ne!(state.subnets[0], state.subnets[1]);
    assert_every_peer_established(&state, &[]);
    assert_every_ping_answered(&state);
    let direct = block_route(&state.nodes[0], &state.pods[2]);
    assert_eq!(
        direct["gateway"],
        state.nodes[1].address4.to_string(),
        "{direct}"
    );
    assert_ne!(direct["dev"], "vxlan.margay", "{direct}");
    let tunnel = block_route(&state.nodes[0], &state.pods[4]);
    assert_eq!(tunnel["dev"], "vxlan.margay", "{tunnel}");
    let down = lab(&state_file, &["down"]);
    assert!(down.status.success(), "{}", shown(&down));
    assert_nothing_left(&state, &state_file);
}

/// `up` killed half-way (SIGKILL, so none of its guards run) leaves daemons and namespaces
/// behind; `down` removes them from what `up` recorded after each step.
#[test]
fn down_removes_what_a_killed_up_left_behind() {
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("state.json");
    let _down = DownOnDrop(state_file.clone());
    let mut child = Command::new(LAB)
        .args(["up", "--keep"])
        .env(STATE_ENV, &state_file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("margay-lab up");
    // Killed once bgpd runs on every node: etcd, BIRD and three bgpd are up by then.
    let deadline = Instant::now() + Duration::from_secs(60);
    let state = loop {
        let s = LabState::load(&state_file).ok().flatten();
        if let Some(s) = s.filter(|s| s.nodes.iter().all(|n| n.pid != 0)) {
            break s;
        }
        assert!(Instant::now() < deadline, "up never started its bgpds");
        assert!(child.try_wait().unwrap().is_none(), "up ended early");
        std::thread::sleep(Duration::from_millis(50));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let running: Vec<u32> = state
        .processes()
        .iter()
        .map(|p| p.pid)
        .filter(|p| alive(*p))
        .collect();
    assert!(
        running.len() >= 5,
        "etcd, BIRD and bgpds outlive up: {running:?}"
    );
    assert!(!namespaces_with(&state.name_prefix()).is_empty());

    let down = lab(&state_file, &["down"]);
    assert!(down.status.success(), "{}", shown(&down));
    assert_nothing_left(&state, &state_file);
}

/// `--pool-mode ipip` needs the ipip module: where `modprobe ipip` fails (this project's CI
/// kernel) `up` says so before creating anything; where it loads, the lab comes up.
#[test]
fn ipip_mode_fails_up_front_without_the_module_and_builds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("state.json");
    let _down = DownOnDrop(state_file.clone());
    let module = Command::new("modprobe")
        .arg("ipip")
        .status()
        .expect("modprobe");
    let up = lab(&state_file, &["up", "--pool-mode", "ipip"]);
    if module.success() {
        assert!(up.status.success(), "{}", shown(&up));
    } else {
        assert!(!up.status.success(), "{}", shown(&up));
        let err = String::from_utf8_lossy(&up.stderr);
        assert!(err.contains("modprobe ipip"), "{err}");
        assert!(!stdout(&up).contains("[1/"), "{}", shown(&up));
        assert!(!state_file.exists());
    }
}

#[test]
fn down_and_status_without_a_lab_say_so() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let state_file = tmp.path().join("state.json");
    let down = lab(&state_file, &["down"]);
    assert!(down.status.success(), "{}", shown(&down));
    assert!(
        stdout(&down).contains("no lab is running"),
        "{}",
        shown(&down)
    );
    let status = lab(&state_file, &["status"]);
    assert!(!status.status.success(), "{}", shown(&status));
    assert!(
        stdout(&status).contains("no lab is running"),
        "{}",
        shown(&status)
    );
}

/// The milliseconds a line of `node add`'s report starting with `label` shows.
fn report_ms(text: &str, label: &str) -> u64 {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .and_then(|rest| rest.trim().strip_suffix(" ms"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {label:?} in {text}"))
}

/// `margayctl node status -o json` of `node`, run in its namespace.
fn node_status(node: &NodeState) -> serde_json::Value {
    let ctl = margay_lab::margay_binary("margayctl", "cargo build -p margay-ctl").unwrap();
    let out = Command::new("ip")
        .args(["netns", "exec", &node.netns])
        .arg(&ctl)
        .args(["node", "status", "-o", "json", "--socket"])
        .arg(&node.socket)
        .output()
        .expect("margayctl");
    assert!(out.status.success(), "{}: {}", node.name, shown(&out));
    serde_json::from_slice(&out.stdout).expect("JSON")
}

/// After `node remove`: `node`'s namespaces (its own, its pods') and daemons are gone.
fn assert_node_gone(left: &LabState, node: &NodeState) {
    let names = namespaces_with(&left.name_prefix());
    assert!(
        !names
            .iter()
            .any(|n| *n == node.netns || n.starts_with(&format!("{}p", node.netns))),
        "{names:?}"
    );
    assert!(!alive(node.pid) && !alive(node.felix_pid));
}

/// Every session of node1..3 with either ToR Established `before` still is, since the same
/// moment, `after` node4 joined or left: none was reset. One that BFD dropped meanwhile (3 ×
/// 100 ms on this loaded machine can) counts as kept only if its ToR logged that and logged
/// no restart of it: a reconfiguration that touched it logs `Restarting protocol NAME`.
fn assert_sessions_kept(state: &LabState, before: &Sessions, after: &Sessions) {
    let (kept, dropped) = before.kept_by(after, "node4");
    let log = |tor: &str| {
        std::fs::read_to_string(state.dir.join(format!("{tor}.stderr"))).unwrap_or_default()
    };
    for d in &dropped {
        let mut words = d.split_whitespace();
        let (tor, proto) = (
            words.next().unwrap(),
            words.next().unwrap().trim_end_matches(':'),
        );
        let text = log(tor);
        let lines: Vec<&str> = text.lines().filter(|l| l.contains(proto)).collect();
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!("{proto}: BFD session down")))
                && !lines.iter().any(|l| {
                    l.contains(&format!("Restarting protocol {proto}"))
                        || l.contains(&format!("Removing protocol {proto}"))
                }),
            "reset: {d}\n{}",
            lines.join("\n")
        );
        eprintln!("dropped by BFD meanwhile, not reset by the reconfiguration: {d}");
    }
    assert_eq!(kept + dropped.len(), 6, "{before:?} {after:?}");
}

/// `margay-lab status` once it succeeds (all sessions up, every route, every ping), within
/// 90 s: BFD at 3 × 100 ms on a 2-core machine that other builds load can see a late packet
/// and drop a session, which comes back in seconds.
fn status_ok(state_file: &Path) -> Output {
    let start = Instant::now();
    loop {
        let o = lab(state_file, &["status"]);
        if o.status.success() {
            return o;
        }
        assert!(start.elapsed() < Duration::from_secs(90), "{}", shown(&o));
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// Waits up to 60 s for `check` to hold; fails with its last complaint.
fn eventually(what: &str, mut check: impl FnMut() -> Result<(), String>) {
    let start = Instant::now();
    loop {
        match check() {
            Ok(()) => return,
            Err(e) if start.elapsed() > Duration::from_secs(60) => panic!("{what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// `node remove node4` on a lab of four nodes, its report saying `says`; the lab left.
fn remove_node4(state_file: &Path, says: &str) -> LabState {
    let remove = lab(state_file, &["node", "remove", "node4"]);
    assert!(remove.status.success(), "{}", shown(&remove));
    assert!(stdout(&remove).contains(says), "{}", shown(&remove));
    let left = LabState::load(state_file).unwrap().expect("state");
    assert_eq!(left.nodes.len(), 3);
    assert_eq!(left.pods.len(), 6);
    left
}

/// A node joins a running lab whose nodes all have a BGPPeer that never answers (a ToR under
/// maintenance), then leaves. The joining node is ready without waiting for that peer, the
/// ToR takes it from its listen range, its pods reach every other pod; every node's status
/// says why the dead peer is not up and that it holds nothing back. After `node remove`, no
/// kernel routes to its pods, no node lists it, its namespaces are gone, the rest converges.
#[test]
fn a_node_joins_and_leaves_a_running_lab_with_a_dead_peer_configured() {
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("state.json");
    let _down = DownOnDrop(state_file.clone());
    let up = lab(&state_file, &["up", "--keep"]);
    assert!(up.status.success(), "{}", shown(&up));
    let state = LabState::load(&state_file).unwrap().expect("state");

    // A global BGPPeer on the rack's subnet that nobody answers.
    let dead: std::net::Ipv4Addr = {
        let o = state.subnets[0].network().octets();
        std::net::Ipv4Addr::new(o[0], o[1], o[2], 250)
    };
    let yaml = dir.path().join("dead.yaml");
    std::fs::write(
        &yaml,
        format!(
            "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: dead-peer\n\
             spec:\n  peerIP: {dead}\n  asNumber: 65010\n"
        ),
    )
    .unwrap();
    let ctl = margay_lab::margay_binary("margayctl", "cargo build -p margay-ctl").unwrap();
    let applied = Command::new("ip")
        .args(["netns", "exec", &state.etcd.netns])
        .arg(&ctl)
        .args(["--etcd-endpoints", &state.etcd.endpoint, "apply", "-f"])
        .arg(&yaml)
        .output()
        .unwrap();
    assert!(applied.status.success(), "{}", shown(&applied));

    let add = lab(&state_file, &["node", "add"]);
    assert!(add.status.success(), "{}", shown(&add));
    let text = stdout(&add);
    // Not the 10 s a configured peer that never comes up used to cost.
    let ready = report_ms(&text, "margay-bgpd start -> margay-felix ready");
    assert!(ready < 5000, "{text}");
    report_ms(&text, "first pod ADD returned -> routed in every kernel");

    let joined = LabState::load(&state_file).unwrap().expect("state");
    assert_eq!(joined.nodes.len(), 4);
    assert_eq!(joined.pods.len(), 8);
    let new = joined.node("node4").expect("node4 recorded").clone();
    assert!(
        text.contains(&format!("Neighbor address: {}", new.address4))
            && text.contains("listen range, as session joined_a"),
        "{text}"
    );
    let tor = margay_lab::bird::birdc(&joined.tor.socket, &["show", "protocols"]).unwrap();
    let tor = margay_lab::bird::parse_protocols(&tor).unwrap();
    assert!(
        tor.iter()
            .any(|p| p.name.starts_with("joined_a") && p.is_established()),
        "{tor:?}"
    );

    // Every node: the peers it should have up, the dead one down and, once the joining node's
    // first attempt to reach it is over (within a second), holding nothing back.
    let deadline = Instant::now() + Duration::from_secs(5);
    for node in &joined.nodes {
        loop {
            let v = node_status(node);
            let peers = v["ipv4_peers"].as_array().expect("ipv4_peers").clone();
            for want in &node.peers {
                let p = peers
                    .iter()
                    .find(|p| p["peer_address"] == want.to_string())
                    .unwrap_or_else(|| panic!("{}: no peer {want}: {v}", node.name));
                assert_eq!(p["info"], "Established", "{}: {p}", node.name);
            }
            let d = peers
                .iter()
                .find(|p| p["peer_address"] == dead.to_string())
                .unwrap_or_else(|| panic!("{}: no dead peer: {v}", node.name));
            assert_eq!(d["state"], "start", "{}: {d}", node.name);
            if d["info"]
                .as_str()
                .is_some_and(|i| i.contains("holds nothing back"))
            {
                break;
            }
            assert!(Instant::now() < deadline, "{}: {d}", node.name);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    assert_every_ping_answered(&joined);
    let r = block_route(&new, &joined.pods[0]);
    assert_eq!(r["gateway"], joined.nodes[0].address4.to_string(), "{r}");
    let status = lab(&state_file, &["status"]);
    assert!(status.status.success(), "{}", shown(&status));
    assert!(
        stdout(&status).contains("64 of 64 reached"),
        "{}",
        shown(&status)
    );

    let left = remove_node4(&state_file, "Node deleted -> gone from every kernel");
    let gone: Vec<&PodState> = joined.pods.iter().filter(|p| p.node == "node4").collect();
    assert_eq!(gone.len(), 2);
    for node in &left.nodes {
        assert_no_felix_route(node, gone.iter().copied());
        let v = node_status(node);
        assert!(
            !v.to_string().contains(&format!("\"{}\"", new.address4)),
            "{}: still lists node4: {v}",
            node.name
        );
    }
    assert_node_gone(&left, &new);
    assert_every_ping_answered(&left);
    let status = lab(&state_file, &["status"]);
    assert!(status.status.success(), "{}", shown(&status));

    let down = lab(&state_file, &["down"]);
    assert!(down.status.success(), "{}", shown(&down));
    assert_nothing_left(&left, &state_file);
}

/// Network policy in a kept lab: `policy apply` of Kubernetes policies, `policy label` of a
/// pod, and the expected reachability (`policy matrix`, `policy explain`, the status report)
/// following the label.
#[test]
fn policies_and_pod_labels_show_in_the_matrix_explain_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("state.json");
    let _down = DownOnDrop(state_file.clone());
    let up = lab(&state_file, &["up", "--keep", "--nodes", "2"]);
    assert!(up.status.success(), "{}", shown(&up));
    assert!(
        stdout(&up).contains("no policy: every pod reaches every pod"),
        "{}",
        stdout(&up)
    );

    let policies = dir.path().join("policies.yaml");
    std::fs::write(
        &policies,
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny-ingress}
spec: {podSelector: {}, policyTypes: [Ingress]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-clients}
spec:
  podSelector: {}
  ingress: [{from: [{podSelector: {matchLabels: {role: client}}}], ports: [{port: 80}]}]
",
    )
    .unwrap();
    let o = lab(
        &state_file,
        &["policy", "apply", &policies.to_string_lossy()],
    );
    assert!(o.status.success(), "{}", shown(&o));
    let o = lab(&state_file, &["policy", "label", "web-1-1", "role=client"]);
    assert!(o.status.success(), "{}", shown(&o));

    let o = lab(&state_file, &["policy", "matrix", "--port", "80/tcp"]);
    assert!(o.status.success(), "{}", shown(&o));
    let m = stdout(&o);
    let rows: Vec<&str> = m.lines().skip(1).collect();
    assert_eq!(rows.len(), 4, "{m}");
    for row in rows {
        let cells: String = row.split_whitespace().skip(2).collect();
        let want = if row.contains("default/web-1-1") {
            "...."
        } else {
            "XXXX"
        };
        assert_eq!(cells, want, "{m}");
    }
    let o = lab(
        &state_file,
        &[
            "policy", "explain", "web-2-1", "web-1-2", "--port", "80/tcp",
        ],
    );
    let text = stdout(&o);
    assert!(text.contains("DENIED"), "{}", shown(&o));
    assert!(text.contains("Deny at the end of tier 'default'"), "{text}");
    let o = lab(
        &state_file,
        &[
            "policy", "explain", "web-1-1", "web-2-2", "--port", "80/tcp",
        ],
    );
    let text = stdout(&o);
    assert!(
        text.contains("ALLOWED")
            && text.contains("default/knp.default.from-clients ingress rule 1"),
        "{text}"
    );

    let status = lab(&state_file, &["status"]);
    let report = stdout(&status);
    assert!(
        report.contains("==== network policy (expected reachability, from the model) ====")
            && report.contains("networkpolicies.networking.k8s.io 2")
            && report.contains("icmp (. allowed, X denied):"),
        "{report}"
    );

    let down = lab(&state_file, &["down"]);
    assert!(down.status.success(), "{}", shown(&down));
}

/// `--tors 2`: every node on two ToRs, each session with BFD Up, every remote block one
/// multipath route over both ToRs in the kernel and in the report. `node add` joins a fourth
/// node the same way (a link and a BFD session to each ToR, both ToRs reconfigured without
/// resetting any other session, multipath both ways, pods reachable); `node remove` withdraws
/// it everywhere, again resetting nothing else; `down` leaves nothing, the second ToR included.
#[test]
fn two_tor_lab_routes_every_block_over_both_tors_with_bfd() {
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("state.json");
    let _down = DownOnDrop(state_file.clone());

    let up = lab(&state_file, &["up", "--keep", "--tors", "2"]);
    assert!(up.status.success(), "{}", shown(&up));
    let state = LabState::load(&state_file)
        .unwrap()
        .expect("state recorded");
    let tor2 = state.tor2.clone().expect("a second ToR recorded");
    assert_eq!(tor2.protocols.len(), 3);
    // BFD at 3 x 100 ms on a 2-core machine that other builds load can see a late packet and
    // drop a session (it comes back in seconds): check once `status` (the same report as
    // `up`'s, every ping answered) says all is up again.
    let report = stdout(&status_ok(&state_file));
    assert!(report.contains("36 of 36 reached"), "{report}");
    eventually("every session Established again", || {
        for node in &state.nodes {
            let v = node_status(node);
            let peers = v["ipv4_peers"].as_array().cloned().unwrap_or_default();
            if !peers.iter().all(|p| p["info"] == "Established") {
                return Err(format!("{}: {v}", node.name));
            }
        }
        Ok(())
    });
    assert_every_peer_established(
        &state,
        &[
            ("node1", &["global", "global"]),
            ("node2", &["global", "global"]),
            ("node3", &["global", "global"]),
        ],
    );
    let gw = |t: &[std::net::Ipv4Addr]| serde_json::Value::from(t[0].to_string());
    for (node, pod) in [(0, 2), (1, 4), (2, 0)] {
        let r = block_route(&state.nodes[node], &state.pods[pod]);
        let hops: Vec<&serde_json::Value> = r["nexthops"]
            .as_array()
            .map(|h| h.iter().map(|x| &x["gateway"]).collect())
            .unwrap_or_default();
        assert_eq!(
            hops,
            [&gw(&state.tor.addresses), &gw(&tor2.addresses)],
            "{r}"
        );
    }
    for node in ["node1", "node2", "node3"] {
        assert!(
            report.contains(&format!("{node}: 3 multipath route(s)")),
            "{report}"
        );
    }
    assert!(report.contains("show bfd sessions"), "{report}");
    assert!(report.contains("Up 100ms/300ms"), "{report}");

    // A node joins: dual-homed like the others, and no other session is reset.
    let before = Sessions::of(&state).unwrap();
    let add = lab(&state_file, &["node", "add"]);
    assert!(add.status.success(), "{}", shown(&add));
    let text = stdout(&add);
    assert!(
        text.contains("both ToRs reconfigured in place (birdc configure) with session node4")
            && text.contains("restarted none"),
        "{text}"
    );
    let joined = LabState::load(&state_file).unwrap().expect("state");
    assert_eq!(joined.nodes.len(), 4);
    assert_eq!(joined.pods.len(), 8);
    let new = joined.node("node4").expect("node4 recorded").clone();
    let new_b = new.address_b.expect("node4's plane b address recorded");
    assert_eq!(
        new.peers,
        [
            std::net::IpAddr::V4(joined.tor.addresses[0]),
            std::net::IpAddr::V4(tor2.addresses[0])
        ]
    );
    assert_ne!(new.address4, new_b);
    let new_pods: Vec<PodState> = joined
        .pods
        .iter()
        .filter(|p| p.node == "node4")
        .cloned()
        .collect();
    assert_eq!(new_pods.len(), 2);
    assert_sessions_kept(&joined, &before, &Sessions::of(&joined).unwrap());
    // BFD at 3 x 100 ms on this loaded machine can drop a session for a moment (`up` above
    // waits the same way): each check holds once `status` says all is up, or soon after.
    let report = stdout(&status_ok(&state_file));
    for node in ["node1", "node2", "node3", "node4"] {
        assert!(
            report.contains(&format!("{node}: 4 multipath route(s)")),
            "{report}"
        );
    }
    assert!(report.contains("64 of 64 reached"), "{report}");
    assert!(
        report.contains(&format!("rack a, {}, plane b {new_b}", new.address4)),
        "{report}"
    );
    let hops = |r: &serde_json::Value| -> Vec<serde_json::Value> {
        r["nexthops"]
            .as_array()
            .map(|h| h.iter().map(|x| x["gateway"].clone()).collect())
            .unwrap_or_default()
    };
    let both = [gw(&state.tor.addresses), gw(&tor2.addresses)];
    eventually("node4 dual-homed like the others", || {
        for (tor, addr) in joined.tors().zip([new.address4, new_b]) {
            if !tor.protocols.contains(&"node4".to_string()) {
                return Err(format!("{tor:?}"));
            }
            let protocols = margay_lab::bird::birdc(&tor.socket, &["show", "protocols"]).unwrap();
            let protocols = margay_lab::bird::parse_protocols(&protocols).unwrap();
            if !protocols
                .iter()
                .any(|p| p.name == "node4" && p.is_established())
            {
                return Err(format!("{}: {protocols:?}", tor.name));
            }
            let bfd = margay_lab::bird::birdc(&tor.socket, &["show", "bfd", "sessions"]).unwrap();
            if !bfd.lines().any(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.first() == Some(&addr.to_string().as_str()) && w.get(2) == Some(&"Up")
            }) {
                return Err(format!("{}: {bfd}", tor.name));
            }
            let routes = margay_lab::bird::birdc(&tor.socket, &["show", "route", "all"]).unwrap();
            let routes = margay_lab::bird::parse_routes(&routes).unwrap();
            for p in &new_pods {
                if !routes
                    .iter()
                    .any(|r| r.prefix.contains(&p.ip) && r.is_bgp())
                {
                    return Err(format!("{}: no route to {}: {routes:?}", tor.name, p.ip));
                }
            }
        }
        // margay's side: node4's sessions Established, BFD Up, with both ToRs.
        let v = node_status(&new);
        let peers = v["ipv4_peers"].as_array().cloned().unwrap_or_default();
        if peers.len() != 2
            || !peers
                .iter()
                .all(|p| p["info"] == "Established" && p["bfd"]["state"] == "Up")
        {
            return Err(format!("node4's peers: {v}"));
        }
        // Multipath both ways: every other node to node4's block, node4 to every other block.
        for node in joined.nodes.iter().filter(|n| n.name != "node4") {
            let r = block_route(node, &new_pods[0]);
            if hops(&r) != both {
                return Err(format!("{} to node4: {r}", node.name));
            }
            let mine = joined.pods.iter().find(|p| p.node == node.name).unwrap();
            let r = block_route(&new, mine);
            if hops(&r) != both {
                return Err(format!("node4 to {}: {r}", node.name));
            }
        }
        Ok(())
    });

    // It leaves: withdrawn everywhere, both ToRs without its session, the others untouched.
    let before = Sessions::of(&joined).unwrap();
    let left = remove_node4(&state_file, "without session node4: BIRD kept the other");
    for tor in left.tors() {
        assert!(!tor.protocols.contains(&"node4".to_string()), "{tor:?}");
        let protocols = margay_lab::bird::birdc(&tor.socket, &["show", "protocols"]).unwrap();
        assert!(!protocols.contains("node4"), "{}: {protocols}", tor.name);
        let routes = margay_lab::bird::birdc(&tor.socket, &["show", "route", "all"]).unwrap();
        let routes = margay_lab::bird::parse_routes(&routes).unwrap();
        for p in &new_pods {
            assert!(
                !routes.iter().any(|r| r.prefix.contains(&p.ip)),
                "{}: still routes {}",
                tor.name,
                p.ip
            );
        }
    }
    for node in &left.nodes {
        assert_no_felix_route(node, &new_pods);
    }
    assert_sessions_kept(&left, &before, &Sessions::of(&left).unwrap());
    assert_node_gone(&left, &new);
    // Every pod left reaches every other (the ToRs' included: 36 pings).
    assert!(
        stdout(&status_ok(&state_file)).contains("36 of 36 reached"),
        "after node remove"
    );

    let down = lab(&state_file, &["down"]);
    assert!(down.status.success(), "{}", shown(&down));
    assert_nothing_left(&left, &state_file);
}

/// `up --simulated 50` beside three real nodes (mesh): every real node's margay-bgpd holds a
/// session with every simulated node and felix routes every simulated block via its node's
/// address; every speaker holds every real node's block and no session was reset; the report
/// and `status` count them; `down` removes the fleet's process and namespace too.
#[test]
fn simulated_nodes_mesh_with_every_real_node_and_down_removes_them() {
    use margay_lab::sim::fleet::{self, FleetStatus};
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("state.json");
    let _down = DownOnDrop(state_file.clone());

    let up = lab(
        &state_file,
        &["up", "--keep", "--simulated", "50", "--timeout", "180"],
    );
    assert!(up.status.success(), "{}", shown(&up));
    let text = stdout(&up);
    assert!(
        text.contains("registered 50 of 50; sessions Established 150 of 150"),
        "{text}"
    );
    assert!(
        text.contains("50 simulated node(s): every session"),
        "{text}"
    );
    let state = LabState::load(&state_file)
        .unwrap()
        .expect("state recorded");
    let sim = state.simulated.clone().expect("the fleet is recorded");
    assert_eq!(sim.count, 50);
    assert!(alive(sim.pid));

    // Checked here from the kernel and the fleet's own record, not from the report.
    let planned = fleet::plan(50, "10.100.0.0/16".parse().unwrap());
    for node in &state.nodes {
        let routes = felix_routes(node);
        for n in &planned {
            let r = routes
                .iter()
                .find(|r| r["dst"] == n.block.to_string())
                .unwrap_or_else(|| panic!("{}: no route to {}: {routes:?}", node.name, n.block));
            assert_eq!(r["gateway"], n.addr.to_string(), "{r}");
        }
    }
    let s = FleetStatus::load(&sim.status_file).unwrap();
    assert_eq!(
        (s.sessions_up, s.speakers_up, s.downs),
        (150, 50, 0),
        "{s:?}"
    );
    for pod in &state.pods {
        assert!(
            s.held_by_all
                .iter()
                .any(|b| ipnet::IpNet::V4(*b).contains(&pod.ip)),
            "not every speaker holds {} ({}): {s:?}",
            pod.name,
            pod.ip
        );
    }
    assert_every_ping_answered(&state);

    let status = lab(&state_file, &["status"]);
    assert!(status.status.success(), "{}", shown(&status));
    assert!(
        stdout(&status).contains("node2: sessions to simulated nodes expected 50; simulated blocks in its kernel 50 of 50"),
        "{}",
        shown(&status)
    );
    let down = lab(&state_file, &["down"]);
    assert!(down.status.success(), "{}", shown(&down));
    assert_nothing_left(&state, &state_file);
}

/// felix's IPv6 routes on `node` (`ip -6 -j route show proto 81`).
fn felix_routes6(node: &NodeState) -> Vec<serde_json::Value> {
    let out = Command::new("ip")
        .args([
            "-n",
            &node.netns,
            "-6",
            "-j",
            "route",
            "show",
            "proto",
            "81",
        ])
        .output()
        .expect("ip -6 route");
    serde_json::from_slice(&out.stdout).expect("ip -j prints JSON")
}

/// On `node`, the route to the block holding `addr` (a remote pod's), of either family.
fn route_to_block_of(node: &NodeState, addr: std::net::IpAddr) -> serde_json::Value {
    let routes = if addr.is_ipv6() {
        felix_routes6(node)
    } else {
        felix_routes(node)
    };
    let host = if addr.is_ipv6() { 128 } else { 32 };
    routes
        .iter()
        .find(|r| {
            r["dst"]
                .as_str()
                .and_then(|d| d.parse::<ipnet::IpNet>().ok())
                .is_some_and(|n| n.prefix_len() < host && n.contains(&addr))
                && r["type"] != "blackhole"
        })
        .cloned()
        .unwrap_or_else(|| panic!("{}: no route to {addr}'s block: {routes:?}", node.name))
}

/// Every pod of another node is routed from every node through the VXLAN device of its
/// family: IPv4 blocks through vxlan.margay, IPv6 blocks through vxlan-v6.margay.
fn assert_blocks_through_vxlan_of_their_family(state: &LabState) {
    for node in &state.nodes {
        for pod in state.pods.iter().filter(|p| p.node != node.name) {
            for addr in pod.addresses() {
                let want = if addr.is_ipv6() {
                    "vxlan-v6.margay"
                } else {
                    "vxlan.margay"
                };
                let r = route_to_block_of(node, addr);
                assert_eq!(r["dev"], want, "{} to {addr}: {r}", node.name);
            }
        }
    }
}

/// `--ip-family dual|ipv6 --pool-mode vxlan`: the pools in VXLAN mode, each family through
/// its own device (Calico's `vxlan.calico` and `vxlan-v6.calico`), every pod reaching every
/// other over each family, the report showing the IPv6 device's VTEPs; then `node add` joins a
/// node of the lab's families (IPv6 mesh and ToR sessions included) whose pods are routed the
/// same way and reached, and `node remove` takes it out again.
#[test]
fn dual_stack_and_ipv6_vxlan_labs_route_each_family_through_its_device_and_a_node_joins() {
    for family in ["dual", "ipv6"] {
        let kept = up_kept(&[
            "--nodes",
            "2",
            "--ip-family",
            family,
            "--pool-mode",
            "vxlan",
        ]);
        let state_file = kept.state_file.clone();
        let report = stdout(&kept.up);
        assert!(
            report.contains("fdb show dev vxlan-v6.margay")
                && report.contains("dev vxlan-v6.margay"),
            "{family}: {report}"
        );
        let state = LabState::load(&state_file).unwrap().expect("state");
        assert_blocks_through_vxlan_of_their_family(&state);
        let results = ping::matrix(&state, 2);
        assert!(results.iter().any(|r| r.dst.is_ipv6()));
        let failed: Vec<_> = results.iter().filter(|r| !r.reached()).collect();
        assert!(failed.is_empty(), "{family}: unanswered pings: {failed:#?}");

        let add = lab(&state_file, &["node", "add"]);
        assert!(add.status.success(), "{family}: {}", shown(&add));
        let state = LabState::load(&state_file).unwrap().expect("state");
        assert_eq!(state.nodes.len(), 3);
        let joined = state.nodes.last().unwrap().clone();
        assert!(joined.address6.is_some(), "{joined:?}");
        assert_pod_families(state.pods.iter().filter(|p| p.node == joined.name), family);
        // Its sessions, of each family the lab runs, Established, as recorded.
        let (v4, v6) = peers_by_family(&joined);
        assert_eq!(v6.len(), 3, "{family}: {v6:?}");
        assert_eq!(v4.len(), if family == "dual" { 3 } else { 0 }, "{v4:?}");
        assert!(
            v4.iter().chain(&v6).all(|p| p.1 == "Established"),
            "{family}: {v4:?} {v6:?}"
        );
        assert_blocks_through_vxlan_of_their_family(&state);
        let results = ping::matrix(&state, 2);
        let failed: Vec<_> = results.iter().filter(|r| !r.reached()).collect();
        assert!(failed.is_empty(), "{family} after node add: {failed:#?}");

        let remove = lab(&state_file, &["node", "remove", &joined.name]);
        assert!(remove.status.success(), "{family}: {}", shown(&remove));
        let down = lab(&state_file, &["down"]);
        assert!(down.status.success(), "{}", shown(&down));
        assert_nothing_left(&state, &state_file);
    }
}

/// `--no-bgp --ip-family dual --pool-mode vxlan`: no bgpd anywhere, felix registers both of
/// each Node's addresses and routes every block of each family from IPAM through the VXLAN
/// device of that family; the report shows both devices' VTEPs, every pod reaches every other
/// over both families.
#[test]
fn dual_stack_vxlan_lab_without_bgp_routes_both_families_from_ipam() {
    let kept = up_kept(&[
        "--nodes",
        "2",
        "--ip-family",
        "dual",
        "--pool-mode",
        "vxlan",
        "--no-bgp",
    ]);
    let report = stdout(&kept.up);
    assert!(
        report.contains("fdb show dev vxlan-v6.margay")
            && report.contains("fdb show dev vxlan.margay")
            && report.contains("vxlan.margay / vxlan-v6.margay"),
        "{report}"
    );
    let state = LabState::load(&kept.state_file).unwrap().expect("state");
    assert!(state.no_bgp);
    assert_blocks_through_vxlan_of_their_family(&state);
    let results = ping::matrix(&state, 2);
    assert!(results.iter().any(|r| r.dst.is_ipv6()));
    let failed: Vec<_> = results.iter().filter(|r| !r.reached()).collect();
    assert!(failed.is_empty(), "unanswered pings: {failed:#?}");
    let down = lab(&kept.state_file, &["down"]);
    assert!(down.status.success(), "{}", shown(&down));
    assert_nothing_left(&state, &kept.state_file);
}

/// `--etcd-proxies 2`: every node's bgpd and felix (and the CNI plugin's IPAM through felix)
/// talk to etcd's gRPC proxies. The lab converges, the report names the proxies and the
/// watchers etcd serves, a node added later joins through a proxy, `status` stays converged,
/// and `down` stops the proxies with everything else.
#[test]
fn daemons_behind_etcd_grpc_proxies_converge_and_a_node_joins_through_one() {
    let kept = up_kept(&["--nodes", "2", "--etcd-proxies", "2"]);
    let state_file = kept.state_file.clone();
    let state = LabState::load(&state_file).unwrap().expect("state");
    assert_eq!(state.etcd.proxies.len(), 2, "{:?}", state.etcd);
    let report = stdout(&kept.up);
    assert!(
        report.contains("2 gRPC proxies in front") && report.contains("watchers etcd serves: "),
        "{report}"
    );
    for p in &state.etcd.proxies {
        assert!(alive(p.pid), "proxy {p:?} is not running");
    }
    assert_every_ping_answered(&state);

    let add = lab(&state_file, &["node", "add"]);
    assert!(add.status.success(), "{}", shown(&add));
    let joined = LabState::load(&state_file).unwrap().expect("state");
    assert_eq!(joined.nodes.len(), 3);
    // node3 is the third node: proxy (3 - 1) mod 2 = 0 serves it.
    let felix_cmdline = std::fs::read(format!("/proc/{}/cmdline", joined.nodes[2].felix_pid))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default();
    assert!(
        felix_cmdline.contains(&state.etcd.proxies[0].endpoint),
        "node3's felix does not talk to proxy 0: {felix_cmdline}"
    );
    let status = status_ok(&state_file);
    assert!(
        stdout(&status).contains("serving node1, node3"),
        "{}",
        shown(&status)
    );
    assert_every_ping_answered(&joined);

    let down = lab(&state_file, &["down"]);
    assert!(down.status.success(), "{}", shown(&down));
    for p in &state.etcd.proxies {
        assert!(!alive(p.pid), "proxy {p:?} outlived down");
    }
    assert_nothing_left(&joined, &state_file);
}
