//! Who this node peers with, computed from the cluster model: the pure heart of cluster mode.
//!
//! Calico's rules (confd's peer computation and its BIRD configuration), from the Node,
//! BGPConfiguration and BGPPeer resources:
//! - the node-to-node mesh, while `nodeToNodeMeshEnabled`: a node that is a route reflector (has
//!   `routeReflectorClusterID`) takes no part in it; every other node meshes with every node
//!   that is not a reflector. Reflector clients stay in the mesh; mesh sessions carry
//!   `nodeMeshPassword` and `nodeMeshMaxRestartTime`;
//! - a BGPPeer with `peerIP` applies to every node (global), to `spec.node`, or to the nodes
//!   `nodeSelector` picks; when `peerIP` is a Calico node's address, that node peers back with
//!   those nodes, the global session is passive on the node with the lower address (as text),
//!   and without a port the session goes to that node's listen port. One with `peerSelector`
//!   peers the nodes `nodeSelector` picks with the nodes `peerSelector` picks, both directions;
//! - on a node with `routeReflectorClusterID`, every session in its own AS to a peer that is not
//!   a reflector of the same cluster is a reflector client;
//! - an explicit peering wins over the mesh for the same address, a global one over a
//!   node-specific one, a forward one over the reverse one.
//!
//! Both ends of a mesh session connect, so a node that starts reaches its peers at once
//! instead of waiting for their retry timers (Calico makes the mesh one-way instead); when both
//! connections arrive, collision detection (RFC 4271 §6.8) keeps the one the higher BGP
//! identifier opened, on both sides.

use super::{policy, secrets};
use crate::config::{Config, Neighbor, NextHop, PeerType};
use crate::policy::Role;
use ipnet::IpNet;
use margay_datastore::resources::{
    BfdSpec, BgpConfigurationSpec, BgpFilter, BgpPassword, BgpPeer, BindMode, IpPool, Node,
    SourceAddress, parse_duration,
};
use margay_datastore::selector::Selector;
use std::collections::{BTreeMap, BTreeSet, HashMap};
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
    pub filters: BTreeMap<String, BgpFilter>,
    pub pools: BTreeMap<String, IpPool>,
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
    /// Where Secrets named by `secretKeyRef` are mounted ([`secrets`]).
    pub secrets_dir: PathBuf,
    /// Where the BGP identifier comes from (`--router-id`, `CALICO_ROUTER_ID`).
    pub router_id: super::router_id::RouterIdSource,
}

/// Why this node cannot peer yet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeeringError {
    #[error("Node '{0}' does not exist in the datastore")]
    NoNode(String),
    #[error("Node '{0}' has neither spec.bgp.ipv4Address nor ipv6Address")]
    NoAddress(String),
    #[error("Node '{node}': spec.bgp.routeReflectorClusterID: '{value}' is not an IPv4 address")]
    BadClusterId { node: String, value: String },
}

/// The speaker configuration, with what the operator should hear about it (a password that
/// cannot be read, a CIDR that does not parse); the caller logs each once.
#[derive(Debug, Clone)]
pub struct Plan {
    pub config: Config,
    pub notes: BTreeSet<String>,
}

fn node_as(model: &Model, node: &Node) -> u32 {
    node.spec
        .bgp
        .as_ref()
        .and_then(|b| b.as_number)
        .map(|a| a.0)
        .unwrap_or_else(|| global_as(model))
}

fn global_as(model: &Model) -> u32 {
    model
        .bgp
        .as_ref()
        .map(|b| b.as_number().0)
        .unwrap_or(DEFAULT_AS)
}

fn cluster_id(node: &Node) -> Option<&str> {
    node.spec
        .bgp
        .as_ref()?
        .route_reflector_cluster_id
        .as_deref()
        .filter(|c| !c.is_empty())
}

pub(super) fn addrs(node: &Node) -> Vec<IpAddr> {
    let Some(b) = node.spec.bgp.as_ref() else {
        return Vec::new();
    };
    b.ipv4()
        .map(IpAddr::V4)
        .into_iter()
        .chain(b.ipv6().map(IpAddr::V6))
        .collect()
}

/// The BGPPeers' `nodeSelector` and `peerSelector`, each text parsed once per computation:
/// the peerings evaluate them for every node, and a parse per node made a reflector's
/// recompute O(N) parses (issue 12). An unparsable selector selects no node.
struct Selectors<'a>(HashMap<&'a str, Option<Selector>>);

impl<'a> Selectors<'a> {
    /// Parses every selector of the model's BGPPeers, noting each that does not parse.
    fn parse(model: &'a Model, notes: &mut BTreeSet<String>) -> Self {
        let mut parsed = HashMap::new();
        for p in model.peers.values() {
            for (field, text) in [
                ("nodeSelector", &p.spec.node_selector),
                ("peerSelector", &p.spec.peer_selector),
            ] {
                let Some(text) = text.as_deref() else {
                    continue;
                };
                let selector = parsed
                    .entry(text)
                    .or_insert_with(|| Selector::parse(text).map_err(|e| e.to_string()));
                if let Err(e) = selector {
                    notes.insert(format!(
                        "BGPPeer {}: {field}: {e}; it selects no node",
                        p.name()
                    ));
                }
            }
        }
        Selectors(parsed.into_iter().map(|(t, s)| (t, s.ok())).collect())
    }

    /// Whether `node` matches the selector `text` (parsed by [`Selectors::parse`]).
    fn selects(&self, text: &str, node: &Node) -> bool {
        self.0
            .get(text)
            .and_then(Option::as_ref)
            .is_some_and(|s| s.matches(&node.metadata.labels))
    }

    /// Whether the BGPPeer applies to `node` as the local end.
    fn applies_to(&self, peer: &BgpPeer, node: &Node) -> bool {
        let s = &peer.spec;
        match (&s.node, &s.node_selector) {
            (None, None) => true,
            (Some(n), _) if n == node.name() => true,
            (_, Some(sel)) => self.selects(sel, node),
            _ => false,
        }
    }
}

/// Seconds of a Calico duration, rounded, as BIRD's `graceful restart time` takes them (at most
/// the 12-bit field's 4095).
fn restart_secs(value: &str) -> Option<u16> {
    parse_duration(value).map(|s| s.round().clamp(0.0, 4095.0) as u16)
}

/// Which peering an address comes from; the lower wins when several give one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Source {
    Global,
    NodeSpecific,
    Selector,
    Reverse,
    Mesh,
}

/// Which peering gives an address, for ties: the source, then the other node's name and the
/// BGPPeer's name (each empty where the peering has none). The lowest wins.
pub(super) type Rank = (Source, String, String);

/// One session this node wants, before it becomes a [`Neighbor`].
#[derive(Debug, Clone)]
pub(super) struct Want {
    source: Source,
    /// The other node this session is to (empty for a `peerIP` session).
    other: String,
    /// The BGPPeer it comes from (empty for the mesh).
    by: String,
    pub(super) address: IpAddr,
    port: Option<u16>,
    asn: u32,
    peer_type: PeerType,
    rr_client: bool,
    passive: bool,
    password: Option<margay_common::Secret>,
    next_hop_keep: bool,
    ttl_security: Option<u8>,
    source_address: Option<IpAddr>,
    restart_time: Option<u16>,
    description: String,
    /// Mesh, reflector and node-to-node peerings are the cluster's; a `peerIP` that is no
    /// node's address is external.
    role: Role,
    /// The BGPPeer's `filters` that exist, in order.
    filters: Vec<Spanned<String>>,
    local_asn: Option<u32>,
    allow_own_as: Option<u8>,
    /// BGPPeer `keepaliveTime`, in seconds.
    keepalive: Option<u16>,
    /// `margay.io/v1` `spec.bfd` when enabled (BGPPeer, or BGPConfiguration for the mesh).
    bfd: Option<BfdSpec>,
}

impl Want {
    /// A session to `address` with every option at its default (Calico's port, no password,
    /// not a client, active); each peering sets what differs.
    fn new(
        source: Source,
        address: IpAddr,
        asn: u32,
        peer_type: PeerType,
        role: Role,
        description: String,
    ) -> Want {
        Want {
            source,
            other: String::new(),
            by: String::new(),
            address,
            port: None,
            asn,
            peer_type,
            rr_client: false,
            passive: false,
            password: None,
            next_hop_keep: false,
            ttl_security: None,
            source_address: None,
            restart_time: None,
            description,
            role,
            filters: Vec::new(),
            local_asn: None,
            allow_own_as: None,
            keepalive: None,
            bfd: None,
        }
    }

    /// Its place among the sessions that give the same address.
    pub(super) fn rank(&self) -> Rank {
        (self.source, self.other.clone(), self.by.clone())
    }
}

/// The settings every mesh session shares.
struct MeshOpts {
    password: Option<margay_common::Secret>,
    restart_time: Option<u16>,
    bfd: Option<BfdSpec>,
}

/// What the whole computation needs to know about this node.
pub(super) struct Me<'a> {
    pub(super) node: &'a Node,
    asn: u32,
    cluster: Option<&'a str>,
    /// The port every node listens on (the BGPConfiguration's `listenPort`).
    listen_port: u16,
    secrets_dir: &'a std::path::Path,
    /// The BGPFilters bgpd applies, by name.
    filters: BTreeSet<String>,
    selectors: Selectors<'a>,
    /// The mesh's shared settings, while this node is in the mesh.
    mesh: Option<MeshOpts>,
}

impl Me<'_> {
    /// This node's address of `peer`'s family: the source of sessions, as Calico's `UseNodeIP`.
    fn address_for(&self, peer: IpAddr) -> Option<IpAddr> {
        addrs(self.node)
            .into_iter()
            .find(|a| a.is_ipv4() == peer.is_ipv4())
    }

    /// Whether a session in `peer_as` to a peer of reflector cluster `peer_cluster` is one of
    /// this node's reflector clients: same AS, this node reflects, the peer is not a reflector
    /// of the same cluster.
    fn reflects_for(&self, peer_as: u32, peer_cluster: Option<&str>) -> bool {
        peer_as == self.asn && self.cluster.is_some() && peer_cluster != self.cluster
    }

    /// The port other nodes listen on, when not BGP's own.
    fn node_port(&self) -> Option<u16> {
        (self.listen_port != 179).then_some(self.listen_port)
    }
}

/// The node whose address is `addr`, if any (the first by name).
fn node_at(model: &Model, addr: IpAddr) -> Option<&Node> {
    model.nodes.values().find(|n| addrs(n).contains(&addr))
}

/// The node's speaker configuration: identity, listen address and port, originated service
/// CIDRs, and every neighbour.
pub fn desired_config(model: &Model, local: &Local) -> Result<Config, PeeringError> {
    plan(model, local).map(|p| p.config)
}

/// [`desired_config`], with the notes the operator should see.
pub fn plan(model: &Model, local: &Local) -> Result<Plan, PeeringError> {
    let mut notes = BTreeSet::new();
    let (me, mut config) = head(model, local, &mut notes)?;
    let mut wants: Vec<Want> = Vec::new();
    for other in model.nodes.values() {
        node_wants(model, &me, other, &mut notes, &mut wants);
    }
    ip_sessions(model, &me, &|a| node_at(model, a), &mut notes, &mut wants);
    // One session per address, by rank: global, node-specific, selector, reverse, then mesh.
    let mine = addrs(me.node);
    wants.retain(|w| !mine.contains(&w.address));
    wants.sort_by_cached_key(|w| (w.address, w.rank()));
    wants.dedup_by_key(|w| w.address);
    config.neighbors = wants.into_iter().map(|w| neighbor(w, local)).collect();
    Ok(Plan { config, notes })
}

/// Everything of the plan but the neighbours: this node's identity and settings and the
/// cluster-wide policy, with what the per-node sessions need to know about this node. It
/// depends on this node, the BGPConfiguration, BGPPeers, BGPFilters and IPPools, never on
/// another Node, so a Node event leaves it as it is.
pub(super) fn head<'a>(
    model: &'a Model,
    local: &'a Local,
    notes: &mut BTreeSet<String>,
) -> Result<(Me<'a>, Config), PeeringError> {
    let node = model
        .nodes
        .get(&local.node)
        .ok_or_else(|| PeeringError::NoNode(local.node.clone()))?;
    let v4 = node.spec.bgp.as_ref().and_then(|b| b.ipv4());
    let v6 = node.spec.bgp.as_ref().and_then(|b| b.ipv6());
    if v4.is_none() && v6.is_none() {
        return Err(PeeringError::NoAddress(local.node.clone()));
    }
    let router_id = super::router_id::choose(local.router_id, &local.node, v4);
    if router_id.fell_back {
        notes.insert(format!(
            "Node {} has no IPv4 address: router id {} from the hash of its name (set --router-id / CALICO_ROUTER_ID to choose one)",
            local.node, router_id.id
        ));
    }
    let my_cluster = match cluster_id(node) {
        Some(c) => Some(
            c.parse::<Ipv4Addr>()
                .map_err(|_| PeeringError::BadClusterId {
                    node: local.node.clone(),
                    value: c.to_string(),
                })?,
        ),
        None => None,
    };
    let bgp = model.bgp.clone().unwrap_or_default();
    let mut me = Me {
        node,
        asn: node_as(model, node),
        cluster: cluster_id(node),
        listen_port: bgp.listen_port(),
        secrets_dir: &local.secrets_dir,
        filters: BTreeSet::new(),
        selectors: Selectors::parse(model, notes),
        mesh: None,
    };
    let filters = policy::filters(model, notes);
    me.filters = filters.iter().map(|f| f.name.get_ref().clone()).collect();
    if bgp.mesh_enabled() && me.cluster.is_none() {
        me.mesh = Some(MeshOpts {
            password: bgp.node_mesh_password.as_ref().and_then(|p| {
                resolve_password(&me, p, "BGPConfiguration default nodeMeshPassword", notes)
            }),
            restart_time: bgp
                .node_mesh_max_restart_time
                .as_deref()
                .and_then(restart_secs),
            bfd: bgp.bfd.clone().filter(|b| b.enabled),
        });
    }

    let listen_address = match bgp.bind_mode {
        Some(BindMode::NodeIP) => {
            if v4.is_some() && v6.is_some() {
                notes.insert(
                    "bindMode NodeIP: bgpd listens on the node's IPv4 address only, so IPv6 peers cannot connect in (bgpd connects out to them)".to_string(),
                );
            }
            match (v4, v6) {
                (Some(a), _) => IpAddr::V4(a),
                (None, Some(a)) => IpAddr::V6(a),
                (None, None) => local.listen_address,
            }
        }
        _ => local.listen_address,
    };

    let config = Config {
        router_id: Spanned::new(0..0, router_id.id),
        asn: Spanned::new(0..0, me.asn),
        listen_address,
        listen_port: me.listen_port,
        bfd_port: crate::bfd::udp::CONTROL_PORT,
        socket: local.socket.clone(),
        cluster_id: my_cluster.map(|c| Spanned::new(0..0, c)),
        http_address: local.http_address,
        http_port: local.http_port,
        originate: service_cidrs(&bgp, notes),
        graceful_restart: true,
        restart_time: Spanned::new(0..0, 120),
        max_paths: Spanned::new(
            0..0,
            bgp.max_paths.unwrap_or(crate::config::DEFAULT_MAX_PATHS),
        ),
        neighbors: Vec::new(),
        pools: policy::pools(model, notes),
        advertise: policy::advertise(&bgp),
        filters,
        await_originator: true,
        originate_wait: None,
    };
    Ok((me, config))
}

/// The sessions this node wants with `other` (the mesh, BGPPeers with `peerSelector`, and
/// reverse peerings): they depend on `other` and on [`head`]'s view of this node only, so a
/// Node event recomputes them for that one node.
pub(super) fn node_wants(
    model: &Model,
    me: &Me,
    other: &Node,
    notes: &mut BTreeSet<String>,
    wants: &mut Vec<Want>,
) {
    if other.name() == me.node.name() {
        return;
    }
    mesh(model, me, other, wants);
    selector_sessions(model, me, other, notes, wants);
    reverse_sessions(model, me, other, notes, wants);
}

/// `serviceClusterIPs`, `serviceExternalIPs` and `serviceLoadBalancerIPs`: every node
/// originates each CIDR, as calico-node does without reading Services.
fn service_cidrs(bgp: &BgpConfigurationSpec, notes: &mut BTreeSet<String>) -> Vec<Spanned<IpNet>> {
    let mut out = BTreeSet::new();
    for (field, list) in [
        ("serviceClusterIPs", &bgp.service_cluster_ips),
        ("serviceExternalIPs", &bgp.service_external_ips),
        ("serviceLoadBalancerIPs", &bgp.service_load_balancer_ips),
    ] {
        for e in list {
            match e.cidr.parse::<IpNet>() {
                Ok(n) => {
                    out.insert(n.trunc());
                }
                Err(_) => {
                    notes.insert(format!(
                        "BGPConfiguration {field}: '{}' is not a CIDR; not announced",
                        e.cidr
                    ));
                }
            }
        }
    }
    out.into_iter().map(|n| Spanned::new(0..0, n)).collect()
}

/// A password, inline or from a mounted Secret; an unreadable one becomes a note and no
/// password (the peer that expects one refuses the session, which names the problem).
fn resolve_password(
    me: &Me,
    p: &BgpPassword,
    what: &str,
    notes: &mut BTreeSet<String>,
) -> Option<margay_common::Secret> {
    match secrets::password(me.secrets_dir, p) {
        Ok(s) => s,
        Err(e) => {
            notes.insert(format!("{what}: {e}; the session runs without a password"));
            None
        }
    }
}

/// The node-to-node mesh: a session to each of `other`'s addresses, unless either end is a
/// route reflector.
fn mesh(model: &Model, me: &Me, other: &Node, wants: &mut Vec<Want>) {
    let Some(opts) = &me.mesh else {
        return;
    };
    if cluster_id(other).is_some() {
        return;
    }
    for addr in addrs(other) {
        wants.push(Want {
            other: other.name().to_string(),
            port: me.node_port(),
            password: opts.password.clone(),
            source_address: me.address_for(addr),
            restart_time: opts.restart_time,
            bfd: opts.bfd.clone(),
            ..Want::new(
                Source::Mesh,
                addr,
                node_as(model, other),
                PeerType::Mesh,
                Role::Cluster,
                format!("mesh: {}", other.name()),
            )
        });
    }
}

/// A session to another node, by a BGPPeer (selector or reverse).
fn node_session(
    model: &Model,
    me: &Me,
    other: &Node,
    addr: IpAddr,
    source: Source,
    p: &BgpPeer,
    notes: &mut BTreeSet<String>,
) -> Want {
    let asn = node_as(model, other);
    let rr_client = me.reflects_for(asn, cluster_id(other));
    let peer_type = if rr_client {
        PeerType::RouteReflectorClient
    } else if cluster_id(other).is_some() && me.cluster.is_none() && asn == me.asn {
        PeerType::RouteReflector
    } else {
        PeerType::NodeSpecific
    };
    let mut w = Want {
        other: other.name().to_string(),
        by: p.name().to_string(),
        port: me.node_port(),
        rr_client,
        ..Want::new(
            source,
            addr,
            asn,
            peer_type,
            Role::Cluster,
            format!("{}: {}", p.name(), other.name()),
        )
    };
    apply_peer_options(&mut w, p, me, notes);
    w
}

/// Node-to-node sessions from BGPPeers with `peerSelector`: this node peers with `other` when
/// a BGPPeer pairs them, in either direction (it applies to this node and `peerSelector` picks
/// the other, or the reverse). O(1) per BGPPeer.
fn selector_sessions(
    model: &Model,
    me: &Me,
    other: &Node,
    notes: &mut BTreeSet<String>,
    wants: &mut Vec<Want>,
) {
    for p in model.peers.values() {
        let Some(psel) = &p.spec.peer_selector else {
            continue;
        };
        let paired = (me.selectors.applies_to(p, me.node) && me.selectors.selects(psel, other))
            || (me.selectors.selects(psel, me.node) && me.selectors.applies_to(p, other));
        if !paired {
            continue;
        }
        for addr in addrs(other) {
            wants.push(node_session(
                model,
                me,
                other,
                addr,
                Source::Selector,
                p,
                notes,
            ));
        }
    }
}

/// Sessions from BGPPeers with `peerIP` that apply to this node; `node_at` finds the node
/// that has an address (the first by name), if any.
pub(super) fn ip_sessions<'m>(
    model: &'m Model,
    me: &Me,
    node_at: &dyn Fn(IpAddr) -> Option<&'m Node>,
    notes: &mut BTreeSet<String>,
    wants: &mut Vec<Want>,
) {
    for (pname, p) in &model.peers {
        let Some((address, port)) = p.spec.peer_addr() else {
            continue;
        };
        if !me.selectors.applies_to(p, me.node) {
            continue;
        }
        let asn = p.spec.as_number.map(|a| a.0).unwrap_or(me.asn);
        // A peerIP that is a Calico node's address: that node's listen port, its cluster id,
        // and (global peers) the session is one-way, from the higher address to the lower.
        let calico_node = node_at(address);
        let port = port.or_else(|| {
            calico_node
                .filter(|n| node_as(model, n) == asn)
                .and_then(|_| me.node_port())
        });
        let passive = p.spec.is_global()
            && calico_node.is_some()
            && me
                .address_for(address)
                .is_some_and(|mine| address.to_string() > mine.to_string());
        let rr_client = me.reflects_for(asn, calico_node.and_then(cluster_id));
        let (source, peer_type) = if p.spec.is_global() {
            (Source::Global, PeerType::Global)
        } else {
            (Source::NodeSpecific, PeerType::NodeSpecific)
        };
        let role = if calico_node.is_some() {
            Role::Cluster
        } else {
            Role::External
        };
        let mut w = Want {
            by: pname.clone(),
            port,
            rr_client,
            passive,
            ..Want::new(source, address, asn, peer_type, role, pname.clone())
        };
        apply_peer_options(&mut w, p, me, notes);
        wants.push(w);
    }
}

/// Calico's reverse peerings: a BGPPeer whose `peerIP` is this node (address and AS, and port
/// when given) makes this node peer with `other` when the BGPPeer applies to it.
fn reverse_sessions(
    model: &Model,
    me: &Me,
    other: &Node,
    notes: &mut BTreeSet<String>,
    wants: &mut Vec<Want>,
) {
    for p in model.peers.values() {
        let Some((address, port)) = p.spec.peer_addr() else {
            continue;
        };
        let asn = p.spec.as_number.map(|a| a.0).unwrap_or(me.asn);
        if !addrs(me.node).contains(&address)
            || asn != me.asn
            || port.is_some_and(|port| port != me.listen_port)
            || !me.selectors.applies_to(p, other)
        {
            continue;
        }
        for addr in addrs(other)
            .into_iter()
            .filter(|a| a.is_ipv4() == address.is_ipv4())
        {
            wants.push(node_session(
                model,
                me,
                other,
                addr,
                Source::Reverse,
                p,
                notes,
            ));
        }
    }
}

/// A BGPPeer's session settings, as Calico's BIRD configuration applies them.
fn apply_peer_options(w: &mut Want, p: &BgpPeer, me: &Me, notes: &mut BTreeSet<String>) {
    if let Some(pw) = &p.spec.password {
        w.password = resolve_password(me, pw, &format!("BGPPeer {} password", p.name()), notes);
    }
    // The AS this session presents: `localASNumber`, else the node's.
    w.local_asn = p.spec.local_as_number.map(|a| a.0).filter(|a| *a != 0);
    let local_as = w.local_asn.unwrap_or(me.asn);
    // `next hop keep` only towards eBGP peers, as the template writes it.
    w.next_hop_keep = p.spec.keep_original_next_hop && w.asn != local_as;
    // A reflector's clients are iBGP as this session presents itself.
    w.rr_client &= w.asn == local_as;
    w.ttl_security = p.spec.ttl_security.filter(|t| *t > 0);
    // sourceAddress defaults to UseNodeIP.
    w.source_address = match p.spec.source_address {
        Some(SourceAddress::None) => None,
        Some(SourceAddress::UseNodeIP) | None => me.address_for(w.address),
    };
    if let Some(t) = &p.spec.max_restart_time {
        w.restart_time = restart_secs(t);
    }
    w.keepalive = p
        .spec
        .keepalive_time
        .as_deref()
        .and_then(parse_duration)
        .map(|s| s.round().clamp(1.0, f64::from(u16::MAX)) as u16);
    w.bfd = p.spec.bfd.clone().filter(|b| b.enabled);
    w.filters = policy::peer_filters(p.name(), &p.spec.filters, &me.filters, notes);
    w.allow_own_as = p
        .spec
        .num_allowed_local_as_numbers
        .filter(|n| *n > 0)
        .map(|n| u8::try_from(n).unwrap_or(u8::MAX));
}

pub(super) fn neighbor(w: Want, local: &Local) -> Neighbor {
    Neighbor {
        address: Spanned::new(0..0, w.address),
        asn: w.asn,
        port: w.port.unwrap_or(179),
        passive: w.passive,
        password: w.password,
        route_reflector_client: w.rr_client,
        next_hop: w.next_hop_keep.then_some(NextHop::Keep),
        hold_time: Spanned::new(0..0, local.hold_time),
        keepalive_time: w.keepalive.map(|k| Spanned::new(0..0, k)),
        connect_retry: Spanned::new(0..0, local.connect_retry),
        multihop: None,
        ttl_security: w.ttl_security.map(|t| Spanned::new(0..0, t)),
        source_address: w.source_address,
        description: Some(w.description),
        families: None,
        peer_type: Some(w.peer_type),
        graceful_restart: None,
        restart_time: w.restart_time.map(|t| Spanned::new(0..0, t)),
        // Calico's BGPPeer has no prefix limit.
        max_prefixes: None,
        max_prefix_action: None,
        max_prefix_restart: None,
        filters: w.filters,
        role: Some(w.role),
        local_asn: w.local_asn.map(|a| Spanned::new(0..0, a)),
        allow_own_as: w.allow_own_as.map(|n| Spanned::new(0..0, n)),
        bfd: w.bfd.is_some(),
        bfd_min_tx_ms: w.bfd.as_ref().and_then(BfdSpec::min_tx_ms),
        bfd_min_rx_ms: w.bfd.as_ref().and_then(BfdSpec::min_rx_ms),
        bfd_multiplier: w.bfd.as_ref().and_then(|b| b.multiplier),
    }
}
