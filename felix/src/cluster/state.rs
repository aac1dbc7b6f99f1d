//! The cluster's view as felix needs it (IP pools, Nodes, this node's workload endpoints and
//! block affinities) and the pure assembly of a [`Model`] from it and the routes bgpd learned.
//! No I/O: the datastore and bgpd feeds fill the inputs, the dataplane loop takes the model.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use margay_datastore::resources::{
    self as res, BgpPeerSpec, IpPoolSpec, NodeSpec, WorkloadEndpointSpec,
};

use crate::model::{EncapMode, IpPool, Model, NodeInfo, RemoteRoute, RemoteVtep, WorkloadEndpoint};

/// What the datastore says, reduced to felix's inputs. Keys are etcd names.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterState {
    /// This node's name.
    pub node: String,
    /// Every Node, by name.
    pub nodes: BTreeMap<String, NodeSpec>,
    /// Every IPPool, by name.
    pub pools: BTreeMap<String, IpPoolSpec>,
    /// WorkloadEndpoints whose `spec.node` is this node, by `namespace/name`.
    pub endpoints: BTreeMap<String, WorkloadEndpointSpec>,
    /// This node's block affinities, by affinity key.
    pub affinities: BTreeMap<String, IpNet>,
    /// This node's labels (what BGPPeer `nodeSelector`s match).
    pub labels: BTreeMap<String, String>,
    /// Every BGPPeer, by name (for `reachableBy`).
    pub peers: BTreeMap<String, BgpPeerSpec>,
    /// Every node's block affinities, by key: followed only when no bgpd runs (the remote
    /// blocks come from IPAM then, [`super::ipam_routes`]).
    pub block_affinities: BTreeMap<String, margay_datastore::ipam::Affinity>,
    /// Other nodes' WorkloadEndpoints (node and addresses), by `namespace/name`: followed only
    /// when no bgpd runs, for the addresses they borrowed.
    pub remote_endpoints: BTreeMap<String, RemoteEndpoint>,
    /// The FelixConfigurations this node reads (`default`, `node.<name>`), by name.
    pub felix_configs: BTreeMap<String, margay_datastore::resources::FelixConfigurationSpec>,
    /// The WireGuard public key each Node publishes (`status.wireguardPublicKey`), by node.
    pub wireguard_keys: BTreeMap<String, String>,
    /// The IPv6 device's key each Node publishes (`status.wireguardPublicKeyV6`), by node.
    pub wireguard_keys_v6: BTreeMap<String, String>,
    /// What changed, for readers that take only that: another Node by name, another node's
    /// block affinity or pod (followed only when no bgpd runs), or anything (any other kind,
    /// this node's own Node, blocks or pods, a resync).
    pub changes: crate::changelog::ChangeLog<Changed>,
}

/// One keyed change of a [`ClusterState`], as its change log records it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Changed {
    /// Another Node, by name.
    Node(String),
    /// Another node's block affinity, by key ([`ClusterState::block_affinities`]).
    Affinity(String),
    /// Another node's pod, by `namespace/name` ([`ClusterState::remote_endpoints`]).
    Endpoint(String),
}

/// A pod on another node, reduced to what routing to it needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteEndpoint {
    pub node: String,
    pub ips: Vec<IpAddr>,
}

/// Which tunnel a pool set calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TunnelNeeds {
    pub vxlan: bool,
    pub ipip: bool,
    /// An enabled IPv6 pool has `vxlanMode` (the IPv6 VXLAN device and its tunnel address).
    pub vxlan_v6: bool,
}

fn encap(m: res::EncapMode) -> EncapMode {
    match m {
        res::EncapMode::Never => EncapMode::Never,
        res::EncapMode::Always => EncapMode::Always,
        res::EncapMode::CrossSubnet => EncapMode::CrossSubnet,
    }
}

/// An address written `A.B.C.D/N` or bare (taken as a host address).
fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

impl ClusterState {
    /// An empty view for node `node`.
    pub fn new(node: &str) -> ClusterState {
        ClusterState {
            node: node.to_string(),
            ..ClusterState::default()
        }
    }

    /// This node's Node spec, if it exists.
    pub fn own_node(&self) -> Option<&NodeSpec> {
        self.nodes.get(&self.node)
    }

    /// What this node's tunnel addresses depend on: its own Node and the pools, without the
    /// other nodes (a copy of the whole state per Node change was O(N), issue 12).
    pub fn tunnel_inputs(&self) -> ClusterState {
        let mut s = ClusterState::new(&self.node);
        if let Some(own) = self.own_node() {
            s.nodes.insert(self.node.clone(), own.clone());
        }
        s.pools = self.pools.clone();
        s
    }

    /// Enabled IPv4 pools (the ones tunnels are for).
    fn enabled_v4_pools(&self) -> impl Iterator<Item = (&String, &IpPoolSpec)> {
        self.pools
            .iter()
            .filter(|(_, p)| !p.disabled && matches!(p.net(), Some(IpNet::V4(_))))
    }

    /// Enabled IPv6 pools with `vxlanMode` whose `allowedUses` admit tunnel addresses.
    fn vxlan_v6_pools(&self) -> impl Iterator<Item = (&String, &IpPoolSpec)> {
        self.pools.iter().filter(|(_, p)| {
            !p.disabled
                && matches!(p.net(), Some(IpNet::V6(_)))
                && p.vxlan() != res::EncapMode::Never
        })
    }

    /// Names of the enabled IPv6 VXLAN pools a tunnel address may come from.
    pub fn tunnel_pools_v6(&self) -> Vec<String> {
        self.vxlan_v6_pools()
            .filter(|(_, p)| p.allows(res::AllowedUse::Tunnel))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Whether any enabled pool needs VXLAN or IP-in-IP (VXLAN wins when a pool names both).
    pub fn tunnel_needs(&self) -> TunnelNeeds {
        let mut n = TunnelNeeds {
            vxlan_v6: self.vxlan_v6_pools().next().is_some(),
            ..TunnelNeeds::default()
        };
        for (_, p) in self.enabled_v4_pools() {
            if p.vxlan() != res::EncapMode::Never {
                n.vxlan = true;
            } else if p.ipip() != res::EncapMode::Never {
                n.ipip = true;
            }
        }
        n
    }

    /// Names of the enabled IPv4 pools using VXLAN (`vxlan`) or IP-in-IP whose `allowedUses`
    /// admit tunnel addresses: where a tunnel address is taken from.
    pub fn tunnel_pools(&self, vxlan: bool) -> Vec<String> {
        self.enabled_v4_pools()
            .filter(|(_, p)| p.allows(res::AllowedUse::Tunnel))
            .filter(|(_, p)| {
                if vxlan {
                    p.vxlan() != res::EncapMode::Never
                } else {
                    p.vxlan() == res::EncapMode::Never && p.ipip() != res::EncapMode::Never
                }
            })
            .map(|(n, _)| n.clone())
            .collect()
    }
}

/// Why no model can be built yet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssembleError {
    #[error("Node {0} does not exist yet (margay-bgpd registers it)")]
    NoNode(String),
    #[error("Node {0} has no BGP address yet (spec.bgp.ipv4Address or ipv6Address)")]
    NoAddress(String),
}

/// Builds the dataplane model from the datastore view and bgpd's routes (best paths by prefix).
/// Inputs that do not parse are left out and listed in the second value.
pub fn assemble(
    state: &ClusterState,
    routes: &BTreeMap<IpNet, Vec<IpAddr>>,
) -> Result<(Model, Vec<String>), AssembleError> {
    let mut problems = Vec::new();
    let own = state
        .own_node()
        .ok_or_else(|| AssembleError::NoNode(state.node.clone()))?;
    let address = own.bgp.as_ref().and_then(|b| b.ipv4_net());
    let address_v6 = own.bgp.as_ref().and_then(|b| b.ipv6_net());
    if address.is_none() && address_v6.is_none() {
        return Err(AssembleError::NoAddress(state.node.clone()));
    }
    let ipv4 = |s: &Option<String>| s.as_deref().and_then(|a| a.parse::<Ipv4Addr>().ok());
    let ipv6 = |s: &Option<String>| s.as_deref().and_then(|a| a.parse::<Ipv6Addr>().ok());
    let node = NodeInfo {
        name: state.node.clone(),
        address,
        address_v6,
        vxlan_tunnel_addr: ipv4(&own.ipv4_vxlan_tunnel_addr),
        vxlan_tunnel_mac: own.vxlan_tunnel_mac_addr.clone(),
        vxlan_tunnel_addr_v6: ipv6(&own.ipv6_vxlan_tunnel_addr),
        vxlan_tunnel_mac_v6: own.vxlan_tunnel_mac_addr_v6.clone(),
        ipip_tunnel_addr: ipv4(
            &own.bgp
                .as_ref()
                .and_then(|b| b.ipv4_ipip_tunnel_addr.clone()),
        ),
        mtu: None,
    };

    let pools = state
        .pools
        .iter()
        .filter_map(|(name, p)| match p.net() {
            Some(cidr) => Some(IpPool {
                cidr,
                ipip_mode: encap(p.ipip()),
                vxlan_mode: encap(p.vxlan()),
                disabled: p.disabled,
                nat_outgoing: p.nat_outgoing,
            }),
            None => {
                problems.push(format!("IPPool {name}: cidr {:?} does not parse", p.cidr));
                None
            }
        })
        .collect();

    let mut endpoints = Vec::new();
    for (name, ep) in &state.endpoints {
        if ep.interface_name.is_empty() {
            problems.push(format!("WorkloadEndpoint {name}: no interfaceName"));
            continue;
        }
        let mut ips = Vec::new();
        for s in &ep.ip_networks {
            match parse_net(s) {
                Some(n) => ips.push(n),
                None => problems.push(format!("WorkloadEndpoint {name}: {s:?} is not an address")),
            }
        }
        endpoints.push(WorkloadEndpoint {
            name: name.clone(),
            interface: ep.interface_name.clone(),
            ips,
        });
    }

    let affine: BTreeSet<IpNet> = state.affinities.values().map(|c| c.trunc()).collect();

    let vteps = state
        .nodes
        .iter()
        .filter(|(name, _)| **name != state.node)
        .flat_map(|(name, n)| node_vteps(name, n))
        .collect();

    let peer_routes = peer_routes(state, &mut problems);
    let remote_routes = routes
        .iter()
        .filter_map(|(prefix, hops)| remote_route(*prefix, hops))
        .collect();

    Ok((
        Model {
            node,
            pools,
            endpoints,
            affine_blocks: affine.into_iter().collect(),
            remote_routes,
            vteps,
            peer_routes,
            settings: Default::default(),
        },
        problems,
    ))
}

/// Another node's VTEPs: one per family whose node address, tunnel address and MAC are all
/// known.
pub fn node_vteps(name: &str, n: &NodeSpec) -> Vec<RemoteVtep> {
    let ipv4 = |s: &Option<String>| s.as_deref().and_then(|a| a.parse::<Ipv4Addr>().ok());
    let ipv6 = |s: &Option<String>| s.as_deref().and_then(|a| a.parse::<Ipv6Addr>().ok());
    let v4 = (
        n.bgp.as_ref().and_then(|b| b.ipv4()).map(IpAddr::V4),
        ipv4(&n.ipv4_vxlan_tunnel_addr).map(IpAddr::V4),
        n.vxlan_tunnel_mac_addr.clone(),
    );
    let v6 = (
        n.bgp.as_ref().and_then(|b| b.ipv6()).map(IpAddr::V6),
        ipv6(&n.ipv6_vxlan_tunnel_addr).map(IpAddr::V6),
        n.vxlan_tunnel_mac_addr_v6.clone(),
    );
    [v4, v6]
        .into_iter()
        .filter_map(|family| match family {
            (Some(node_ip), Some(tunnel_ip), Some(mac)) => Some(RemoteVtep {
                node: name.to_string(),
                node_ip,
                tunnel_ip,
                mac,
            }),
            _ => None,
        })
        .collect()
}

/// The model's route for a prefix bgpd learned over `hops` (the best path's first).
pub fn remote_route(prefix: IpNet, hops: &[IpAddr]) -> Option<RemoteRoute> {
    let (first, rest) = hops.split_first()?;
    Some(RemoteRoute {
        prefix,
        next_hop: *first,
        also_via: rest.to_vec(),
    })
}

/// Calico's BGPPeer `reachableBy`: for each peer (`peerIP`) that applies to this node, a host
/// route to it through the given gateway.
fn peer_routes(state: &ClusterState, problems: &mut Vec<String>) -> Vec<RemoteRoute> {
    let mut out = Vec::new();
    for (name, p) in &state.peers {
        let (Some(gw), Some((peer, _))) = (p.reachable_by.as_deref(), p.peer_addr()) else {
            continue;
        };
        let applies = match (&p.node, &p.node_selector) {
            (None, None) => true,
            (Some(n), _) => *n == state.node,
            (None, Some(sel)) => match margay_datastore::selector::Selector::parse(sel) {
                Ok(s) => s.matches(&state.labels),
                Err(_) => false,
            },
        };
        if !applies {
            continue;
        }
        match gw.parse::<IpAddr>() {
            Ok(gw) if gw.is_ipv4() == peer.is_ipv4() => out.push(RemoteRoute {
                prefix: IpNet::from(peer),
                next_hop: gw,
                also_via: Vec::new(),
            }),
            _ => problems.push(format!(
                "BGPPeer {name}: reachableBy {gw:?} is not an address of the peer's family"
            )),
        }
    }
    out
}

/// A stable, locally administered unicast MAC for node `name`'s VXLAN device (FNV-1a of the
/// name; the same name always gives the same MAC, so a restarted node keeps its VTEP).
pub fn vtep_mac(name: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    // Bit 1 of the first octet: locally administered; bit 0 clear: unicast.
    let first = (b[0] & 0xfc) | 0x02;
    format!(
        "{first:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[1], b[2], b[3], b[4], b[5]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use margay_datastore::resources::NodeBgpSpec;

    fn node(addr: &str, vtep: Option<(&str, &str)>) -> NodeSpec {
        NodeSpec {
            bgp: Some(NodeBgpSpec {
                ipv4_address: Some(addr.into()),
                ..Default::default()
            }),
            ipv4_vxlan_tunnel_addr: vtep.map(|v| v.0.to_string()),
            vxlan_tunnel_mac_addr: vtep.map(|v| v.1.to_string()),
            ..Default::default()
        }
    }

    fn pool(cidr: &str, vxlan: res::EncapMode, ipip: res::EncapMode) -> IpPoolSpec {
        IpPoolSpec {
            cidr: cidr.into(),
            vxlan_mode: Some(vxlan),
            ipip_mode: Some(ipip),
            ..Default::default()
        }
    }

    fn state() -> ClusterState {
        let mut s = ClusterState::new("n1");
        s.nodes.insert("n1".into(), node("10.0.0.1/24", None));
        s.nodes.insert(
            "n2".into(),
            node("10.0.0.2/24", Some(("10.244.1.0", "66:00:00:00:00:02"))),
        );
        s.nodes.insert("n3".into(), node("10.0.0.3/24", None));
        s.pools.insert(
            "p".into(),
            pool(
                "10.244.0.0/16",
                res::EncapMode::Never,
                res::EncapMode::Never,
            ),
        );
        s.endpoints.insert(
            "default/web".into(),
            WorkloadEndpointSpec {
                node: "n1".into(),
                interface_name: "cali0123456789a".into(),
                ip_networks: vec!["10.244.0.5/32".into(), "10.244.9.9".into()],
                ..Default::default()
            },
        );
        s.affinities.insert(
            "/margay/ipam/v1/affinities/n1/10.244.0.0-26".into(),
            "10.244.0.0/26".parse().unwrap(),
        );
        s
    }

    #[test]
    fn reachable_by_gives_a_host_route_for_the_peers_of_this_node_only() {
        let mut s = state();
        s.labels.insert("rack".into(), "a".into());
        let peer = |node: Option<&str>, sel: Option<&str>, ip: &str, gw: &str| BgpPeerSpec {
            node: node.map(str::to_string),
            node_selector: sel.map(str::to_string),
            peer_ip: Some(ip.into()),
            reachable_by: Some(gw.into()),
            ..Default::default()
        };
        s.peers
            .insert("global".into(), peer(None, None, "192.0.2.1", "10.0.0.254"));
        s.peers.insert(
            "mine".into(),
            peer(Some("n1"), None, "192.0.2.2:1790", "10.0.0.253"),
        );
        s.peers.insert(
            "other".into(),
            peer(Some("n2"), None, "192.0.2.3", "10.0.0.252"),
        );
        s.peers.insert(
            "rack-a".into(),
            peer(None, Some("rack == 'a'"), "192.0.2.4", "10.0.0.251"),
        );
        s.peers.insert(
            "rack-b".into(),
            peer(None, Some("rack == 'b'"), "192.0.2.5", "10.0.0.250"),
        );
        s.peers
            .insert("bad".into(), peer(None, None, "192.0.2.6", "fd00::1"));
        let (m, problems) = assemble(&s, &BTreeMap::new()).unwrap();
        let got: Vec<(String, String)> = m
            .peer_routes
            .iter()
            .map(|r| (r.prefix.to_string(), r.next_hop.to_string()))
            .collect();
        let want: Vec<(String, String)> = [
            ("192.0.2.1/32", "10.0.0.254"),
            ("192.0.2.2/32", "10.0.0.253"),
            ("192.0.2.4/32", "10.0.0.251"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(got, want);
        assert!(
            problems.iter().any(|p| p.contains("BGPPeer bad")),
            "{problems:?}"
        );
    }

    #[test]
    fn builds_model_from_nodes_pools_endpoints_affinities_and_routes() {
        let s = state();
        let mut routes = BTreeMap::new();
        routes.insert(
            "10.244.1.0/26".parse().unwrap(),
            vec!["10.0.0.2".parse().unwrap()],
        );
        let (m, problems) = assemble(&s, &routes).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(m.node.address.unwrap().to_string(), "10.0.0.1/24");
        assert_eq!(m.affine_blocks, vec!["10.244.0.0/26".parse().unwrap()]);
        assert_eq!(m.endpoints[0].ips[1].to_string(), "10.244.9.9/32");
        // Only nodes with a full VTEP (address and MAC) count.
        assert_eq!(m.vteps.len(), 1);
        assert_eq!(m.vteps[0].tunnel_ip.to_string(), "10.244.1.0");
        assert_eq!(m.remote_routes[0].next_hop.to_string(), "10.0.0.2");
        let d = crate::desired::compute(&m);
        // The borrowed address is originated as a /32 beside the affine block.
        assert!(d.originate.contains(&"10.244.9.9/32".parse().unwrap()));
        assert!(d.originate.contains(&"10.244.0.0/26".parse().unwrap()));
    }

    #[test]
    fn waits_for_its_node_and_its_address() {
        let mut s = state();
        s.nodes.get_mut("n1").unwrap().bgp = None;
        assert_eq!(
            assemble(&s, &BTreeMap::new()).unwrap_err(),
            AssembleError::NoAddress("n1".into())
        );
        s.nodes.remove("n1");
        assert_eq!(
            assemble(&s, &BTreeMap::new()).unwrap_err(),
            AssembleError::NoNode("n1".into())
        );
    }

    #[test]
    fn tunnel_inputs_keep_the_own_node_and_the_pools_only() {
        let s = state();
        let t = s.tunnel_inputs();
        assert_eq!(t.node, "n1");
        assert_eq!(t.own_node(), s.own_node());
        assert_eq!(
            t.nodes.len(),
            1,
            "other nodes are left out: {:?}",
            t.nodes.keys()
        );
        assert_eq!(t.pools, s.pools);
        assert_eq!(t.tunnel_needs(), s.tunnel_needs());
        assert_eq!(t.tunnel_pools(true), s.tunnel_pools(true));
        assert_eq!(t.tunnel_pools(false), s.tunnel_pools(false));
        let mut other = s.clone();
        other.nodes.remove("n3");
        assert_eq!(
            other.tunnel_inputs(),
            t,
            "another node's change does not change the inputs"
        );
        let mut none = s.clone();
        none.nodes.remove("n1");
        assert!(none.tunnel_inputs().own_node().is_none());
    }

    #[test]
    fn tunnel_needs_follow_enabled_pools() {
        let mut s = state();
        assert_eq!(s.tunnel_needs(), TunnelNeeds::default());
        s.pools.insert(
            "v".into(),
            pool(
                "10.245.0.0/16",
                res::EncapMode::CrossSubnet,
                res::EncapMode::Never,
            ),
        );
        assert!(s.tunnel_needs().vxlan && !s.tunnel_needs().ipip);
        assert_eq!(s.tunnel_pools(true), vec!["v".to_string()]);
        s.pools.get_mut("v").unwrap().disabled = true;
        assert!(!s.tunnel_needs().vxlan);
        s.pools.insert(
            "i".into(),
            pool(
                "10.246.0.0/16",
                res::EncapMode::Never,
                res::EncapMode::Always,
            ),
        );
        assert!(s.tunnel_needs().ipip);
        assert_eq!(s.tunnel_pools(false), vec!["i".to_string()]);
        // A pool whose allowedUses leave out Tunnel gives no tunnel address.
        s.pools.get_mut("i").unwrap().allowed_uses = vec![res::AllowedUse::Workload];
        assert!(s.tunnel_pools(false).is_empty());
        s.pools.get_mut("i").unwrap().allowed_uses = vec![res::AllowedUse::Tunnel];
        assert_eq!(s.tunnel_pools(false), vec!["i".to_string()]);
    }

    #[test]
    fn vtep_mac_is_stable_local_and_unicast() {
        let a = vtep_mac("node-1");
        assert_eq!(a, vtep_mac("node-1"));
        assert_ne!(a, vtep_mac("node-2"));
        let first = u8::from_str_radix(&a[..2], 16).unwrap();
        assert_eq!(first & 0x03, 0x02, "{a}");
        assert!(crate::model::parse_mac(&a).is_ok());
    }

    #[test]
    fn assembled_pools_carry_nat_outgoing_to_the_dataplane() {
        let mut s = state();
        s.pools.get_mut("p").unwrap().nat_outgoing = true;
        let (model, _) = assemble(&s, &BTreeMap::new()).expect("the fixture assembles");
        assert!(
            model.pools.iter().all(|p| p.nat_outgoing),
            "{:?}",
            model.pools
        );
        assert!(
            crate::desired::compute(&model).nat.v4.is_some(),
            "felix's NAT table follows the pool"
        );
    }
}
