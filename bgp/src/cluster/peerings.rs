//! Who this node peers with, computed from the cluster model: the pure heart of cluster mode.
//!
//! Calico's rules, from the Node, BGPConfiguration and BGPPeer resources:
//! - the node-to-node mesh joins every node with a BGP address while `nodeToNodeMeshEnabled`,
//!   except route reflector clients;
//! - a BGPPeer with `peerIP` applies to every node (global), to `spec.node`, or to the nodes
//!   `nodeSelector` picks; one with `peerSelector` peers the nodes `nodeSelector` picks with the
//!   nodes `peerSelector` picks, in both directions;
//! - a node with `routeReflectorClusterID` reflects for the nodes it peers with that are not
//!   reflectors of the same cluster: they are its clients, and clients leave the mesh.
//!
//! Both ends of a node-to-node session connect, so a node that starts reaches its peers at
//! once instead of waiting for their retry timers; when both connections arrive, collision
//! detection (RFC 4271 §6.8) keeps the one the higher BGP identifier opened, on both sides.

use crate::config::{Config, Neighbor, NextHop, PeerType};
use margay_datastore::resources::{BgpConfigurationSpec, BgpPeer, Node, SourceAddress};
use margay_datastore::selector::Selector;
use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use toml::Spanned;

/// The AS of a cluster that sets none (Calico's default).
pub const DEFAULT_AS: u32 = 64512;

/// The resources bgpd follows.
#[derive(Debug, Clone, Default)]
pub struct Model {
    pub nodes: BTreeMap<String, Node>,
    pub peers: BTreeMap<String, BgpPeer>,
    /// The `default` BGPConfiguration, if there is one.
    pub bgp: Option<BgpConfigurationSpec>,
}

/// Settings of the daemon itself, not of the cluster.
#[derive(Debug, Clone)]
pub struct Local {
    pub node: String,
    pub socket: PathBuf,
    pub http_address: IpAddr,
    pub http_port: u16,
    pub listen_address: IpAddr,
    /// Seconds between connection attempts.
    pub connect_retry: u16,
    pub hold_time: u16,
}

/// Why this node cannot peer yet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeeringError {
    #[error("Node '{0}' does not exist in the datastore")]
    NoNode(String),
    #[error("Node '{0}' has no spec.bgp.ipv4Address: it is the router id and the mesh address")]
    NoAddress(String),
    #[error("Node '{node}': spec.bgp.routeReflectorClusterID: '{value}' is not an IPv4 address")]
    BadClusterId { node: String, value: String },
}

fn node_as(model: &Model, node: &Node) -> u32 {
    node.spec
        .bgp
        .as_ref()
        .and_then(|b| b.as_number)
        .map(|a| a.0)
        .or_else(|| model.bgp.as_ref().map(|b| b.as_number().0))
        .unwrap_or(DEFAULT_AS)
}

fn cluster_id(node: &Node) -> Option<&str> {
    node.spec
        .bgp
        .as_ref()?
        .route_reflector_cluster_id
        .as_deref()
}

fn addrs(node: &Node) -> Vec<IpAddr> {
    let Some(b) = node.spec.bgp.as_ref() else {
        return Vec::new();
    };
    b.ipv4()
        .map(IpAddr::V4)
        .into_iter()
        .chain(b.ipv6().map(IpAddr::V6))
        .collect()
}

/// Whether `node` matches a selector given as text (an unparsable one matches nothing).
fn selects(selector: &str, node: &Node) -> bool {
    match Selector::parse(selector) {
        Ok(s) => s.matches(&node.metadata.labels),
        Err(e) => {
            tracing::warn!(selector, error = %e, "ignoring a BGPPeer selector that does not parse");
            false
        }
    }
}

/// Whether the BGPPeer applies to `node` as the local end.
fn applies_to(peer: &BgpPeer, node: &Node) -> bool {
    let s = &peer.spec;
    match (&s.node, &s.node_selector) {
        (None, None) => true,
        (Some(n), _) if n == node.name() => true,
        (_, Some(sel)) => selects(sel, node),
        _ => false,
    }
}

/// One session this node wants, before it becomes a [`Neighbor`].
#[derive(Debug, Clone)]
struct Want {
    address: IpAddr,
    port: Option<u16>,
    asn: u32,
    peer_type: PeerType,
    rr_client: bool,
    passive: bool,
    password: Option<margay_common::Secret>,
    next_hop_keep: bool,
    ttl_security: Option<u8>,
    source_address: Option<IpAddr>,
    description: String,
}

/// The session pairs between nodes that BGPPeers with `peerSelector` create, as (a, b) names.
fn selector_pairs(model: &Model) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (pname, p) in &model.peers {
        let Some(psel) = &p.spec.peer_selector else {
            continue;
        };
        for a in model.nodes.values().filter(|n| applies_to(p, n)) {
            for b in model
                .nodes
                .values()
                .filter(|n| n.name() != a.name() && selects(psel, n))
            {
                out.push((a.name().to_string(), b.name().to_string(), pname.clone()));
            }
        }
    }
    out
}

/// Whether `a` reflects for `b`: `a` is a reflector and `b` is not one of its cluster.
fn reflects_for(a: &Node, b: &Node) -> bool {
    match (cluster_id(a), cluster_id(b)) {
        (Some(ca), Some(cb)) => ca != cb,
        (Some(_), None) => true,
        _ => false,
    }
}

/// The node's speaker configuration: identity, listen port and every neighbour.
pub fn desired_config(model: &Model, local: &Local) -> Result<Config, PeeringError> {
    let me = model
        .nodes
        .get(&local.node)
        .ok_or_else(|| PeeringError::NoNode(local.node.clone()))?;
    let my_v4 = me
        .spec
        .bgp
        .as_ref()
        .and_then(|b| b.ipv4())
        .ok_or_else(|| PeeringError::NoAddress(local.node.clone()))?;
    let my_as = node_as(model, me);
    let my_cluster = match cluster_id(me) {
        Some(c) => Some(
            c.parse::<Ipv4Addr>()
                .map_err(|_| PeeringError::BadClusterId {
                    node: local.node.clone(),
                    value: c.to_string(),
                })?,
        ),
        None => None,
    };

    // Node pairs from selector-based BGPPeers, in both directions.
    let pairs = selector_pairs(model);
    let rr_clients: HashSet<&str> = pairs
        .iter()
        .filter_map(|(a, b, _)| {
            let (na, nb) = (model.nodes.get(a)?, model.nodes.get(b)?);
            if reflects_for(na, nb) {
                Some(b.as_str())
            } else if reflects_for(nb, na) {
                Some(a.as_str())
            } else {
                None
            }
        })
        .collect();

    let mut wants: Vec<Want> = Vec::new();
    let node_session =
        |other: &Node, addr: IpAddr, peer_type: PeerType, rr_client: bool, description: String| {
            let mine = addrs(me)
                .into_iter()
                .find(|a| a.is_ipv4() == addr.is_ipv4());
            Want {
                address: addr,
                port: None,
                asn: node_as(model, other),
                peer_type,
                rr_client,
                passive: false,
                password: model
                    .bgp
                    .as_ref()
                    .and_then(|b| b.node_mesh_password.as_ref())
                    .and_then(|p| p.value.clone()),
                next_hop_keep: false,
                ttl_security: None,
                // From the node's own address, as Calico's BIRD config does: the peer expects it.
                source_address: mine,
                description,
            }
        };

    // The mesh.
    let mesh = model.bgp.as_ref().is_none_or(|b| b.mesh_enabled());
    if mesh && !rr_clients.contains(local.node.as_str()) {
        for other in model.nodes.values() {
            if other.name() == local.node || rr_clients.contains(other.name()) {
                continue;
            }
            for addr in addrs(other) {
                wants.push(node_session(
                    other,
                    addr,
                    PeerType::Mesh,
                    false,
                    format!("mesh: {}", other.name()),
                ));
            }
        }
    }

    // Node-to-node sessions from selector-based BGPPeers.
    for (a, b, pname) in &pairs {
        let other_name = if a == &local.node {
            b
        } else if b == &local.node {
            a
        } else {
            continue;
        };
        let Some(other) = model.nodes.get(other_name) else {
            continue;
        };
        let (peer_type, rr_client) = if reflects_for(me, other) {
            (PeerType::RouteReflectorClient, true)
        } else if reflects_for(other, me) {
            (PeerType::RouteReflector, false)
        } else {
            (PeerType::NodeSpecific, false)
        };
        for addr in addrs(other) {
            let mut w = node_session(
                other,
                addr,
                peer_type,
                rr_client,
                format!("{pname}: {other_name}"),
            );
            if let Some(p) = model.peers.get(pname) {
                apply_peer_options(&mut w, p, my_v4);
            }
            wants.push(w);
        }
    }

    // Sessions to routers outside the cluster (peerIP).
    for (pname, p) in &model.peers {
        let Some((address, port)) = p.spec.peer_addr() else {
            continue;
        };
        if !applies_to(p, me) {
            continue;
        }
        let mut w = Want {
            address,
            port,
            asn: p.spec.as_number.map(|a| a.0).unwrap_or(my_as),
            peer_type: if p.spec.is_global() {
                PeerType::Global
            } else {
                PeerType::NodeSpecific
            },
            rr_client: false,
            passive: false,
            password: None,
            next_hop_keep: false,
            ttl_security: None,
            source_address: None,
            description: pname.clone(),
        };
        apply_peer_options(&mut w, p, my_v4);
        wants.push(w);
    }

    // One session per address: explicit peerings win over the mesh, the first of equals stays.
    let mut seen = HashSet::new();
    wants.sort_by_key(|w| (w.address, w.peer_type == PeerType::Mesh));
    wants.retain(|w| {
        w.address != IpAddr::V4(my_v4)
            && addrs(me).iter().all(|a| *a != w.address)
            && seen.insert(w.address)
    });

    let neighbors = wants.into_iter().map(|w| neighbor(w, local)).collect();
    Ok(Config {
        router_id: Spanned::new(0..0, my_v4),
        asn: Spanned::new(0..0, my_as),
        listen_address: local.listen_address,
        listen_port: model.bgp.as_ref().map(|b| b.listen_port()).unwrap_or(179),
        socket: local.socket.clone(),
        cluster_id: my_cluster.map(|c| Spanned::new(0..0, c)),
        http_address: local.http_address,
        http_port: local.http_port,
        originate: Vec::new(),
        graceful_restart: true,
        restart_time: Spanned::new(0..0, 120),
        neighbors,
        pools: Vec::new(),
        advertise: Vec::new(),
        filters: Vec::new(),
        await_originator: true,
    })
}

fn apply_peer_options(w: &mut Want, p: &BgpPeer, my_v4: Ipv4Addr) {
    if let Some(pw) = &p.spec.password {
        match &pw.value {
            Some(v) => w.password = Some(v.clone()),
            None => tracing::warn!(
                peer = p.name(),
                "BGPPeer password from a Kubernetes secret is not read by margay: set spec.password.value"
            ),
        }
    }
    w.next_hop_keep = p.spec.keep_original_next_hop;
    w.ttl_security = p.spec.ttl_security.filter(|t| *t > 0);
    if matches!(p.spec.source_address, Some(SourceAddress::UseNodeIP)) && w.address.is_ipv4() {
        w.source_address = Some(IpAddr::V4(my_v4));
    }
}

fn neighbor(w: Want, local: &Local) -> Neighbor {
    Neighbor {
        address: Spanned::new(0..0, w.address),
        asn: w.asn,
        port: w.port.unwrap_or(179),
        passive: w.passive,
        password: w.password,
        route_reflector_client: w.rr_client,
        next_hop: w.next_hop_keep.then_some(NextHop::Keep),
        hold_time: Spanned::new(0..0, local.hold_time),
        connect_retry: Spanned::new(0..0, local.connect_retry),
        multihop: None,
        ttl_security: w.ttl_security.map(|t| Spanned::new(0..0, t)),
        source_address: w.source_address,
        description: Some(w.description),
        families: None,
        peer_type: Some(w.peer_type),
        graceful_restart: None,
        restart_time: None,
        // Calico's BGPPeer has no prefix limit.
        max_prefixes: None,
        max_prefix_action: None,
        max_prefix_restart: None,
        filters: Vec::new(),
        role: None,
        local_asn: None,
        allow_own_as: None,
    }
}
