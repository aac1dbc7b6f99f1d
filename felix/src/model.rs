//! felix's inputs: what the datastore and bgpd tell it about this node and the cluster.
//!
//! The shapes follow the cluster model (IPPool `cidr` / `ipipMode` / `vxlanMode`, the Node's
//! address and VXLAN tunnel address and MAC, WorkloadEndpoints with their interface and IPs),
//! reduced to what the dataplane needs. In standalone mode the daemon reads a [`Model`] from a
//! JSON or YAML file; later it is assembled from the datastore and bgpd watchers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

/// When traffic to a pool's remote blocks is encapsulated (IPPool `ipipMode` / `vxlanMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum EncapMode {
    #[default]
    Never,
    Always,
    /// Only towards nodes outside this node's subnet.
    CrossSubnet,
}

/// An IP pool (the fields of an IPPool felix acts on).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpPool {
    pub cidr: IpNet,
    #[serde(default)]
    pub ipip_mode: EncapMode,
    #[serde(default)]
    pub vxlan_mode: EncapMode,
    #[serde(default)]
    pub disabled: bool,
    /// Masquerade traffic from this pool to destinations outside every pool.
    #[serde(default)]
    pub nat_outgoing: bool,
}

/// This node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    pub name: String,
    /// The node's IPv4 address with its subnet length (Node `spec.bgp.ipv4Address`); none on
    /// an IPv6-only node.
    #[serde(default)]
    pub address: Option<Ipv4Net>,
    /// The node's IPv6 address with its subnet length (Node `spec.bgp.ipv6Address`); none on
    /// an IPv4-only node.
    #[serde(default)]
    pub address_v6: Option<Ipv6Net>,
    /// The VXLAN tunnel address (Node `ipv4VXLANTunnelAddr`), when a VXLAN pool is in use.
    #[serde(default)]
    pub vxlan_tunnel_addr: Option<Ipv4Addr>,
    /// The VXLAN device's MAC (Node `vxlanTunnelMACAddr`), "aa:bb:cc:dd:ee:ff".
    #[serde(default)]
    pub vxlan_tunnel_mac: Option<String>,
    /// The IPv6 VXLAN tunnel address (Node `ipv6VXLANTunnelAddr`), when an IPv6 VXLAN pool
    /// is in use.
    #[serde(default)]
    pub vxlan_tunnel_addr_v6: Option<Ipv6Addr>,
    /// The IPv6 VXLAN device's MAC (Node `vxlanTunnelMACAddrV6`).
    #[serde(default)]
    pub vxlan_tunnel_mac_v6: Option<String>,
    /// The IPIP tunnel address (Node `ipv4IPIPTunnelAddr`).
    #[serde(default)]
    pub ipip_tunnel_addr: Option<Ipv4Addr>,
    /// Tunnel MTU; derived from the host interface (minus 20 / 50) when absent.
    #[serde(default)]
    pub mtu: Option<u32>,
}

impl NodeInfo {
    /// Whether `ip` is one of this node's own addresses.
    pub fn owns(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => self.address.is_some_and(|n| n.addr() == a),
            IpAddr::V6(a) => self.address_v6.is_some_and(|n| n.addr() == a),
        }
    }

    /// Whether `ip` is on this node's subnet of the same family (CrossSubnet's test).
    pub fn same_subnet(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => self.address.is_some_and(|n| n.contains(&a)),
            IpAddr::V6(a) => self.address_v6.is_some_and(|n| n.contains(&a)),
        }
    }
}

/// A pod on this node: its host-side interface and addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadEndpoint {
    /// `namespace/pod` (or any stable name), for logs.
    pub name: String,
    /// The host side of its veth (`cali` + 11 hex characters).
    pub interface: String,
    pub ips: Vec<IpNet>,
}

/// A route bgpd learned: a remote block (or /32) and the node (or router) it leads to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteRoute {
    pub prefix: IpNet,
    /// The best path's next hop.
    pub next_hop: IpAddr,
    /// The other next hops of a multipath (ECMP) route, after `next_hop`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also_via: Vec<IpAddr>,
}

impl RemoteRoute {
    /// Every next hop, the best path's first.
    pub fn next_hops(&self) -> impl Iterator<Item = IpAddr> + '_ {
        std::iter::once(self.next_hop).chain(self.also_via.iter().copied())
    }
}

/// A remote node's VXLAN endpoint (from its Node resource), of one family: an IPv4 VTEP
/// (`ipv4VXLANTunnelAddr`, `vxlanTunnelMACAddr`, reached at `ipv4Address`) or an IPv6 one
/// (`ipv6VXLANTunnelAddr`, `vxlanTunnelMACAddrV6`, reached at `ipv6Address`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteVtep {
    pub node: String,
    /// The node's underlay address: where VXLAN packets are sent.
    pub node_ip: IpAddr,
    /// Its VXLAN tunnel address: the next hop of routes through vxlan.margay (IPv4) or
    /// vxlan-v6.margay (IPv6).
    pub tunnel_ip: IpAddr,
    /// Its VXLAN device's MAC.
    pub mac: String,
}

/// Everything felix programs from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Model {
    pub node: NodeInfo,
    #[serde(default)]
    pub pools: Vec<IpPool>,
    #[serde(default)]
    pub endpoints: Vec<WorkloadEndpoint>,
    /// IPAM blocks affine to this node.
    #[serde(default)]
    pub affine_blocks: Vec<IpNet>,
    #[serde(default)]
    pub remote_routes: Vec<RemoteRoute>,
    #[serde(default)]
    pub vteps: Vec<RemoteVtep>,
    /// Host routes to BGP peers through a gateway (BGPPeer `reachableBy`): `prefix` is the
    /// peer's address, `next_hop` the gateway.
    #[serde(default)]
    pub peer_routes: Vec<RemoteRoute>,
    /// What FelixConfiguration sets for the dataplane (tunnel VNI, port, MTUs).
    #[serde(default)]
    pub settings: crate::settings::DataplaneSettings,
}

/// A bad input: felix leaves the affected item out and says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("MAC {0:?} is not six hex bytes separated by ':'")]
    BadMac(String),
    #[error("reading the model: {0}")]
    Parse(String),
}

/// Parses "aa:bb:cc:dd:ee:ff".
pub fn parse_mac(s: &str) -> Result<[u8; 6], ModelError> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in out.iter_mut() {
        let p = parts.next().ok_or_else(|| ModelError::BadMac(s.into()))?;
        if p.len() != 2 {
            return Err(ModelError::BadMac(s.into()));
        }
        *b = u8::from_str_radix(p, 16).map_err(|_| ModelError::BadMac(s.into()))?;
    }
    if parts.next().is_some() {
        return Err(ModelError::BadMac(s.into()));
    }
    Ok(out)
}

impl Model {
    /// Reads a model from JSON (if the text starts with `{`) or YAML.
    pub fn from_text(text: &str) -> Result<Model, ModelError> {
        if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| ModelError::Parse(e.to_string()))
        } else {
            serde_norway::from_str(text).map_err(|e| ModelError::Parse(e.to_string()))
        }
    }

    /// The enabled pool containing `prefix`, the most specific one if pools nest.
    pub fn pool_of(&self, prefix: &IpNet) -> Option<&IpPool> {
        self.pools
            .iter()
            .filter(|p| !p.disabled && p.cidr.contains(prefix))
            .max_by_key(|p| p.cidr.prefix_len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_calico_style_yaml() {
        let m = Model::from_text(
            "node: {name: n1, address: 10.0.0.1/24}\n\
             pools:\n- {cidr: 10.244.0.0/16, vxlanMode: CrossSubnet}\n",
        )
        .unwrap();
        assert_eq!(m.pools[0].vxlan_mode, EncapMode::CrossSubnet);
        assert_eq!(m.pools[0].ipip_mode, EncapMode::Never);
        assert_eq!(m.node.address.unwrap().prefix_len(), 24);
        assert_eq!(m.node.address_v6, None);
    }

    #[test]
    fn readme_example_state_parses() {
        let readme = include_str!("../README.md");
        let yaml = readme
            .split("```yaml\n")
            .nth(1)
            .and_then(|r| r.split("```").next())
            .unwrap();
        let m = Model::from_text(yaml).unwrap();
        assert_eq!(m.vteps[0].tunnel_ip.to_string(), "10.244.1.0");
        assert_eq!(m.endpoints[0].interface, "cali1234567890a");
        assert!(m.pools[0].nat_outgoing);
    }

    #[test]
    fn rejects_short_mac() {
        assert!(parse_mac("ee:ee:ee:ee:ee").is_err());
        assert_eq!(parse_mac("ee:ee:ee:ee:ee:0a").unwrap()[5], 0x0a);
    }

    #[test]
    fn most_specific_enabled_pool_wins() {
        let mut m = Model::from_text("node: {name: n1, address: 10.0.0.1/24}").unwrap();
        m.pools = vec![
            IpPool {
                cidr: "10.0.0.0/8".parse().unwrap(),
                ipip_mode: EncapMode::Always,
                vxlan_mode: EncapMode::Never,
                disabled: false,
                nat_outgoing: false,
            },
            IpPool {
                cidr: "10.244.0.0/16".parse().unwrap(),
                ipip_mode: EncapMode::Never,
                vxlan_mode: EncapMode::Always,
                disabled: false,
                nat_outgoing: false,
            },
        ];
        let p = m.pool_of(&"10.244.1.0/26".parse().unwrap()).unwrap();
        assert_eq!(p.vxlan_mode, EncapMode::Always);
        m.pools[1].disabled = true;
        let p = m.pool_of(&"10.244.1.0/26".parse().unwrap()).unwrap();
        assert_eq!(p.ipip_mode, EncapMode::Always);
    }
}
