//! `margay-lab` end to end: the real binary builds a lab of namespaces with margay-bgpd and a
//! BIRD ToR, reports on it, keeps it or removes it. Each test points the command at its own
//! state file, so they run in parallel and never touch an operator's kept lab.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use margay_tests::labctl::down::alive;
use margay_tests::labctl::state::{LabState, STATE_ENV};
use margay_tests::{BirdProtocol, list_namespaces};

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
    margay_tests::bird::parse_protocols(text).expect("birdc show protocols in the report")
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

#[test]
fn up_keep_then_status_then_down_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let state_file = tmp.path().join("run").join("state.json");
    let _cleanup = DownOnDrop(state_file.clone());

    let up = lab(&state_file, &["up", "--nodes", "3", "--keep"]);
    assert!(up.status.success(), "up --keep: {}", shown(&up));
    let state = LabState::load(&state_file)
        .expect("readable state")
        .expect("up --keep writes the state file");
    assert_eq!(state.nodes.len(), 3);
    let prefix = state.name_prefix();
    assert_eq!(namespaces_with(&prefix).len(), 5, "3 nodes, ToR, switch");
    for p in state.processes() {
        assert!(
            alive(p.pid),
            "{} (PID {}) still runs after up",
            p.name,
            p.pid
        );
    }

    let status = lab(&state_file, &["status"]);
    assert!(status.status.success(), "status: {}", shown(&status));
    let s = sections(&stdout(&status));
    for node in ["node1", "node2", "node3"] {
        assert_all_up_with_types(
            &s,
            node,
            &["node-to-node mesh", "node-to-node mesh", "global"],
        );
        let routes = command_output(&s, node, "node routes");
        for k in 1..=3 {
            assert!(
                routes.contains(&format!("10.100.{k}.0/26")),
                "{node}: {routes}"
            );
        }
    }
    let protocols = tor_protocols(&s);
    for node in ["node1", "node2", "node3"] {
        let p = protocols.iter().find(|p| p.name == node);
        assert!(
            p.is_some_and(BirdProtocol::is_established),
            "tor {node}: {protocols:?}"
        );
    }

    let down = lab(&state_file, &["down"]);
    assert!(down.status.success(), "down: {}", shown(&down));
    assert_eq!(namespaces_with(&prefix), Vec::<String>::new());
    for p in state.processes() {
        assert!(!alive(p.pid), "{} (PID {}) survived down", p.name, p.pid);
    }
    assert!(!state_file.exists(), "state file left");
    assert!(!state.dir.exists(), "{} left", state.dir.display());

    let again = lab(&state_file, &["down"]);
    assert!(again.status.success(), "second down: {}", shown(&again));
    assert!(
        stdout(&again).contains("no lab is running"),
        "{}",
        shown(&again)
    );
}

#[test]
fn route_reflector_mode_peers_clients_only_with_node1_and_removes_everything() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let state_file = tmp.path().join("state.json");

    let up = lab(
        &state_file,
        &["up", "--nodes", "3", "--mode", "route-reflectors"],
    );
    assert!(up.status.success(), "up: {}", shown(&up));
    let out = stdout(&up);
    let s = sections(&out);
    assert_all_up_with_types(
        &s,
        "node1",
        &["route reflector client", "route reflector client", "global"],
    );
    for node in ["node2", "node3"] {
        assert_all_up_with_types(&s, node, &["route reflector", "global"]);
        let rows = peer_rows(command_output(&s, node, "node status"));
        let rr = rows.iter().find(|r| r.peer_type == "route reflector");
        let node1 = rr.map(|r| r.address.clone()).unwrap_or_default();
        assert!(
            node1.ends_with(".1"),
            "{node}'s reflector is node1: {rows:?}"
        );
    }
    // Clients learn each other's blocks only through the reflector.
    assert!(
        command_output(&s, "node2", "node routes").contains("10.100.3.0/26"),
        "{out}"
    );
    assert!(
        command_output(&s, "node3", "node routes").contains("10.100.2.0/26"),
        "{out}"
    );
    assert_eq!(
        tor_protocols(&s)
            .iter()
            .filter(|p| p.is_established())
            .count(),
        3,
        "{out}"
    );

    // Without --keep: nothing recorded, nothing left.
    let tag = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("lab "))
        .and_then(|l| l.split(':').next())
        .expect("up names its lab")
        .to_string();
    assert!(tag.starts_with("mg") && tag.len() == 6, "{tag}");
    assert_eq!(namespaces_with(&tag), Vec::<String>::new());
    assert!(!state_file.exists());
    let dirs: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .expect("temp dir listing")
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{tag}-"))
        })
        .collect();
    assert!(dirs.is_empty(), "{dirs:?}");
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
