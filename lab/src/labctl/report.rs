//! The lab's report, as an operator would gather it by hand: for every node `margayctl node
//! status` run inside its namespace and the kernel routes felix programmed there (`ip route
//! show proto 81`), then the ToR's `birdc show protocols` and `birdc show route`, then the
//! BGP policy at work, then the pods. Each block starts with the command line that produced
//! it. The ping matrix is [`super::ping`]'s.

use std::ffi::OsStr;
use std::fmt::Write;
use std::path::PathBuf;
use std::process::Command;

use super::pods::POD_NAMESPACE;
use super::state::{LabState, NodeState};
use super::topology::{POOL_CIDR, POOL_COMMUNITY, TOR_FILTER, TOR_PREFIX};
use crate::Result;
use crate::bgpd::margay_binary;

/// The route protocol felix marks its routes with (its default).
pub const FELIX_PROTOCOL: &str = "81";

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

/// The kernel routes felix programmed in `node`'s namespace (its own route protocol).
fn felix_routes(out: &mut String, node: &NodeState) {
    let _ = writeln!(
        out,
        "$ ip -n {} route show proto {FELIX_PROTOCOL}",
        node.netns
    );
    let mut cmd = Command::new("ip");
    cmd.args(["-n", &node.netns, "route", "show", "proto", FELIX_PROTOCOL]);
    out.push_str(&output_of(&mut cmd));
}

/// The header line of a node's section.
fn node_header(node: &NodeState) -> String {
    let role = if node.reflector {
        " (route reflector)"
    } else {
        ""
    };
    format!(
        "==== {}{role}: netns {}, rack {}, {}, AS {} ====",
        node.name, node.netns, node.rack, node.address4, node.asn
    )
}

/// The policy the lab applies, seen from both sides: the ToR holds the pool's routes with the
/// prefixAdvertisement's community; a node holds the ToR's prefix (the only one the BGPFilter
/// imports) on one path, from the ToR, because no node passes an external route on; and the
/// ToR's own prefix comes back from no node.
fn policy_section(out: &mut String, state: &LabState, tools: &Tools) {
    let _ = writeln!(
        out,
        "\n==== policy: BGPFilter '{TOR_FILTER}' on the ToR's BGPPeers (import {TOR_PREFIX} only, \
         export {POOL_CIDR}); community {POOL_COMMUNITY} on {POOL_CIDR}; routes from the ToR go \
         back out to no one ===="
    );
    let pool = format!("[ {POOL_CIDR}+ ]");
    birdc(
        out,
        state,
        &["show", "route", "where", "net", "~", &pool, "all"],
    );
    birdc(out, state, &["show", "route", TOR_PREFIX, "all"]);
    if let Some(node) = state.nodes.first() {
        margayctl(out, tools, node, &["node", "routes", "--all"]);
    }
}

/// The pods, one line each.
fn pods_table(out: &mut String, state: &LabState) {
    let _ = writeln!(
        out,
        "\n==== pods: created by the CNI plugin, namespace {POD_NAMESPACE} ===="
    );
    let _ = writeln!(
        out,
        "{:<10} {:<8} {:<15} {:<16} {:<15}",
        "POD", "NODE", "IP", "NETNS", "HOST VETH"
    );
    for p in &state.pods {
        let _ = writeln!(
            out,
            "{:<10} {:<8} {:<15} {:<16} {:<15}",
            p.name, p.node, p.ip, p.netns, p.interface
        );
    }
}

/// The whole report (without the ping matrix).
pub fn render(state: &LabState, tools: &Tools) -> String {
    let mut out = String::new();
    for node in &state.nodes {
        let _ = writeln!(out, "\n{}", node_header(node));
        margayctl(&mut out, tools, node, &["node", "status"]);
        felix_routes(&mut out, node);
    }
    let addrs: Vec<String> = state.tor.addresses.iter().map(|a| a.to_string()).collect();
    let _ = writeln!(
        out,
        "\n==== {} (BIRD): netns {}, {}, AS {} ====",
        state.tor.name,
        state.tor.netns,
        addrs.join(", "),
        state.tor.asn
    );
    birdc(&mut out, state, &["show", "protocols"]);
    birdc(&mut out, state, &["show", "route"]);
    policy_section(&mut out, state, tools);
    pods_table(&mut out, state);
    out
}
