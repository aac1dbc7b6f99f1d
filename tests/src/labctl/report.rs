//! The lab's report, as an operator would gather it by hand: for every node `margayctl node
//! status` and `margayctl node routes` run inside its namespace, then the ToR's `birdc show
//! protocols` and `birdc show route`. Each block starts with the command line that produced it.

use std::ffi::OsStr;
use std::fmt::Write;
use std::path::PathBuf;
use std::process::Command;

use super::state::{LabState, NodeState};
use crate::Result;
use crate::bgpd::margay_binary;

/// The programs the report runs.
#[derive(Debug, Clone)]
pub struct Tools {
    pub margayctl: PathBuf,
}

impl Tools {
    /// Finds `margayctl` (`$MARGAY_BIN_DIR`, else next to this binary).
    pub fn locate() -> Result<Tools> {
        Ok(Tools {
            margayctl: margay_binary(
                "margayctl",
                "`cargo build -p margay-ctl`, or `scripts/lab.sh` builds everything",
            )?,
        })
    }
}

/// Runs `cmd` and returns its output; a failure is shown as what it printed and its status.
fn output_of(cmd: &mut Command) -> String {
    match cmd.output() {
        Ok(out) => {
            let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&out.stderr));
            if !out.status.success() {
                let _ = writeln!(s, "({})", out.status);
            }
            s
        }
        Err(e) => format!("(could not run {:?}: {e})\n", cmd.get_program()),
    }
}

/// Runs margayctl inside `node`'s namespace; the line shown names the program without its
/// directory, as an operator types it.
fn margayctl(out: &mut String, tools: &Tools, node: &NodeState, args: &[&str]) {
    let socket = node.socket.display().to_string();
    let _ = writeln!(
        out,
        "$ ip netns exec {} margayctl {} --socket {socket}",
        node.netns,
        args.join(" ")
    );
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &node.netns])
        .arg(&tools.margayctl)
        .args(args)
        .arg("--socket")
        .arg(&node.socket);
    out.push_str(&output_of(&mut cmd));
}

fn birdc(out: &mut String, state: &LabState, args: &[&str]) {
    let socket = state.tor.socket.display().to_string();
    let _ = writeln!(out, "$ birdc -s {socket} {}", args.join(" "));
    let mut cmd = Command::new("birdc");
    cmd.arg("-s").arg(OsStr::new(&state.tor.socket)).args(args);
    out.push_str(&output_of(&mut cmd));
}

/// The header line of a node's section.
fn node_header(node: &NodeState) -> String {
    let role = if node.reflector {
        " (route reflector)"
    } else {
        ""
    };
    let mut blocks = node.block4.to_string();
    if let Some(b) = node.block6 {
        let _ = write!(blocks, ", {b}");
    }
    format!(
        "==== {}{role}: netns {}, {}, AS {}, block {blocks} ====",
        node.name, node.netns, node.address4, node.asn
    )
}

/// The whole report.
pub fn render(state: &LabState, tools: &Tools) -> String {
    let mut out = String::new();
    for node in &state.nodes {
        let _ = writeln!(out, "\n{}", node_header(node));
        margayctl(&mut out, tools, node, &["node", "status"]);
        margayctl(&mut out, tools, node, &["node", "routes"]);
    }
    let _ = writeln!(
        out,
        "\n==== {} (BIRD): netns {}, {}, AS {} ====",
        state.tor.name, state.tor.netns, state.tor.address4, state.tor.asn
    );
    birdc(&mut out, state, &["show", "protocols"]);
    birdc(&mut out, state, &["show", "route"]);
    out
}
