//! Whether a lab has converged: every expected session Established at both ends, every felix
//! ready, every pod's address routed at every other node and at the ToR. Asks the daemons
//! themselves (margay-bgpd over gRPC, felix's /readiness, BIRD through birdc) and names
//! everything that is missing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use margay_proto::bgp::v1::bgp_client::BgpClient;
use margay_proto::bgp::v1::{ListPeersRequest, ListRoutesRequest, Peer, Route};

use super::state::LabState;
use crate::bgpd::connect_unix;
use crate::bird::{birdc, parse_protocols, parse_routes};
use crate::felix::readiness;
use crate::{LabError, Result};

/// The port of every felix's /readiness (on its node's loopback).
pub const FELIX_HTTP_PORT: u16 = 9099;

/// What a probe of the whole lab found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Session ends (a node's peer, a ToR protocol) that are Established.
    pub established_ends: usize,
    /// Session ends configured.
    pub ends: usize,
    /// Everything that is not as it should be, one line each, naming the daemon and the peer
    /// or block.
    pub problems: Vec<String>,
}

impl Health {
    /// Nothing is missing.
    pub fn converged(&self) -> bool {
        self.problems.is_empty()
    }

    /// One line: the good news, or how many things are missing.
    pub fn summary(&self, state: &LabState) -> String {
        let n = state.nodes.len();
        if self.converged() && state.no_bgp {
            let devices = match state.ip_family {
                super::IpFamily::Ipv4 => "vxlan.margay",
                super::IpFamily::Ipv6 => "vxlan-v6.margay",
                super::IpFamily::Dual => "vxlan.margay / vxlan-v6.margay",
            };
            format!(
                "no BGP (vxlan backend): {n} felix ready; every pod's address is routed through \
                 {devices} at the other {} node(s) ({} pods)",
                n.saturating_sub(1),
                state.pods.len()
            )
        } else if self.converged() {
            let sims = state
                .simulated
                .as_ref()
                .map(|s| {
                    format!(
                        "; {} simulated node(s): every session to them Established, every block \
                         in every real node's kernel, every pod's block in every speaker's table",
                        s.count
                    )
                })
                .unwrap_or_default();
            format!(
                "all {} BGP sessions Established, {n} felix ready; every pod's address is routed \
                 at the other {} node(s) and the ToR ({} pods){sims}",
                self.ends / 2,
                n.saturating_sub(1),
                state.pods.len()
            )
        } else {
            format!(
                "not converged: {} of {} session ends Established; missing:\n  {}",
                self.established_ends,
                self.ends,
                self.problems.join("\n  ")
            )
        }
    }
}

/// A node's view from its margay-bgpd.
struct NodeView {
    peers: Vec<Peer>,
    routes: Vec<Route>,
}

/// Asks one margay-bgpd for its peers and IPv4/IPv6 best paths.
fn node_view(rt: &tokio::runtime::Runtime, socket: &Path) -> Result<NodeView> {
    let rpc = |call: &str, status: tonic::Status| LabError::Rpc {
        call: call.into(),
        socket: socket.to_path_buf(),
        status: Box::new(status),
    };
    rt.block_on(async {
        let mut c = BgpClient::new(connect_unix(socket).await?);
        let peers = c
            .list_peers(ListPeersRequest {})
            .await
            .map_err(|s| rpc("ListPeers", s))?
            .into_inner()
            .peers;
        let routes = c
            .list_routes(ListRoutesRequest {
                family: String::new(),
                all: false,
            })
            .await
            .map_err(|s| rpc("ListRoutes", s))?
            .into_inner()
            .routes;
        Ok(NodeView { peers, routes })
    })
}

/// Probes every daemon of the lab once.
/// Without bgpd: whether `node`'s kernel routes every address (both families) of every pod of
/// the other nodes (felix's routes, from IPAM) and its felix is ready; what is missing goes to `problems`.
fn kernel_routes_to_pods(
    state: &LabState,
    node: &super::state::NodeState,
    problems: &mut Vec<String>,
) {
    // felix's routes of both families (`ip -j route` lists IPv4 only).
    let mut routes: Vec<IpNet> = Vec::new();
    for family in ["-4", "-6"] {
        let out = std::process::Command::new("ip")
            .args([
                "-n",
                &node.netns,
                family,
                "-j",
                "route",
                "show",
                "proto",
                "81",
            ])
            .output();
        routes.extend(
            out.ok()
                .and_then(|o| serde_json::from_slice::<Vec<serde_json::Value>>(&o.stdout).ok())
                .unwrap_or_default()
                .iter()
                .filter_map(|r| {
                    let dst = r["dst"].as_str()?;
                    dst.parse::<IpNet>()
                        .ok()
                        .or_else(|| dst.parse::<IpAddr>().ok().map(IpNet::from))
                }),
        );
    }
    for pod in state.pods.iter().filter(|p| p.node != node.name) {
        for ip in pod.addresses() {
            if !routes.iter().any(|r| r.contains(&ip)) {
                problems.push(format!(
                    "{}: no kernel route to pod {} ({ip}) on {}",
                    node.name, pod.name, pod.node
                ));
            }
        }
    }
    if let Err(e) = readiness(&node.netns, FELIX_HTTP_PORT) {
        problems.push(format!("{}: margay-felix is not ready: {e}", node.name));
    }
}

pub fn check(state: &LabState) -> Result<Health> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(LabError::io("building the gRPC client runtime"))?;
    let names: HashMap<IpAddr, String> = state
        .nodes
        .iter()
        .flat_map(|n| {
            std::iter::once((IpAddr::V4(n.address4), n.name.clone()))
                .chain(n.address6.map(|a| (IpAddr::V6(a), n.name.clone())))
        })
        .chain(state.tors().flat_map(|t| {
            t.addresses
                .iter()
                .map(|a| (IpAddr::V4(*a), t.name.clone()))
                .chain(
                    t.addresses6
                        .iter()
                        .map(|a| (IpAddr::V6(*a), t.name.clone())),
                )
        }))
        .collect();
    let name_of = |a: &IpAddr| names.get(a).cloned().unwrap_or_else(|| "?".into());
    let mut h = Health {
        established_ends: 0,
        ends: 0,
        problems: Vec::new(),
    };

    if state.no_bgp {
        // No bgpd, no BGP at the ToR: every pod on another node routed in each node's kernel.
        for node in &state.nodes {
            kernel_routes_to_pods(state, node, &mut h.problems);
        }
        return Ok(h);
    }
    for node in &state.nodes {
        h.ends += node.peers.len();
        let view = match node_view(&rt, &node.socket) {
            Ok(v) => v,
            Err(e) => {
                h.problems
                    .push(format!("{}: margay-bgpd does not answer: {e}", node.name));
                continue;
            }
        };
        for addr in &node.peers {
            let peer = view
                .peers
                .iter()
                .find(|p| p.address.parse::<IpAddr>().ok() == Some(*addr));
            match peer {
                Some(p) if p.state == "Established" => h.established_ends += 1,
                Some(p) => h.problems.push(format!(
                    "{}: session to {} ({addr}) is {}{}",
                    node.name,
                    name_of(addr),
                    p.state,
                    if p.last_error.is_empty() {
                        String::new()
                    } else {
                        format!(" (last error: {})", p.last_error)
                    }
                )),
                None => h.problems.push(format!(
                    "{}: no peer {} ({addr}) in ListPeers",
                    node.name,
                    name_of(addr)
                )),
            }
        }
        let held: Vec<IpNet> = view
            .routes
            .iter()
            .filter(|r| !r.local)
            .filter_map(|r| r.prefix.parse().ok())
            .collect();
        for pod in state.pods.iter().filter(|p| p.node != node.name) {
            for ip in pod.addresses() {
                if !held.iter().any(|p| p.contains(&ip)) {
                    h.problems.push(format!(
                        "{}: no route to pod {} ({ip}) on {}",
                        node.name, pod.name, pod.node
                    ));
                }
            }
        }
        if let Err(e) = readiness(&node.netns, FELIX_HTTP_PORT) {
            h.problems
                .push(format!("{}: margay-felix is not ready: {e}", node.name));
        }
        if let Some(sim) = &state.simulated {
            super::simulated::check_node(state, sim, node, &view.peers, &held, &mut h.problems);
        }
    }
    if let Some(sim) = &state.simulated {
        super::simulated::check_fleet(state, sim, &mut h.problems);
    }

    for c in &state.calico {
        h.ends += c.protocols.len();
        match birdc(&c.socket, &["show", "protocols"]).and_then(|t| parse_protocols(&t)) {
            Ok(protocols) => {
                for name in &c.protocols {
                    match protocols.iter().find(|p| &p.name == name) {
                        Some(p) if p.is_established() => h.established_ends += 1,
                        Some(p) => h.problems.push(format!(
                            "{}: BIRD protocol {name} is {} {}",
                            c.name, p.state, p.info
                        )),
                        None => h
                            .problems
                            .push(format!("{}: no BIRD protocol {name}", c.name)),
                    }
                }
            }
            Err(e) => h
                .problems
                .push(format!("{}: BIRD does not answer: {e}", c.name)),
        }
    }

    for tor in state.tors() {
        check_tor(tor, state, &mut h);
    }
    Ok(h)
}

/// A ToR's sessions and its routes to every pod.
fn check_tor(tor: &super::state::TorState, state: &LabState, h: &mut Health) {
    let t = &tor.name;
    h.ends += tor.protocols.len();
    match birdc(&tor.socket, &["show", "protocols"]).and_then(|t| parse_protocols(&t)) {
        Ok(protocols) => {
            for name in &tor.protocols {
                match protocols.iter().find(|p| &p.name == name) {
                    Some(p) if p.is_established() => h.established_ends += 1,
                    Some(p) => h
                        .problems
                        .push(format!("{t}: protocol {name} is {} {}", p.state, p.info)),
                    None => h.problems.push(format!("{t}: no protocol {name}")),
                }
            }
        }
        Err(e) => h.problems.push(format!("{t}: BIRD does not answer: {e}")),
    }
    match birdc(&tor.socket, &["show", "route", "all"]).and_then(|t| parse_routes(&t)) {
        Ok(routes) => {
            for pod in &state.pods {
                for ip in pod.addresses() {
                    if !routes.iter().any(|r| r.prefix.contains(&ip) && r.is_bgp()) {
                        h.problems.push(format!(
                            "{t}: no route to pod {} ({ip}) on {}",
                            pod.name, pod.node
                        ));
                    }
                }
            }
        }
        Err(e) => h.problems.push(format!("{t}: BIRD does not answer: {e}")),
    }
}
