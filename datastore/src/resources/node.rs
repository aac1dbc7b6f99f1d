//! The Node resource: a host's BGP address, AS, tunnel addresses and route reflector role.

use super::bgp::AsNumber;
use super::{Spec, Validator};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `Node.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<NodeBgpSpec>,
    #[serde(
        default,
        rename = "ipv4VXLANTunnelAddr",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_vxlan_tunnel_addr: Option<String>,
    #[serde(
        default,
        rename = "ipv6VXLANTunnelAddr",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv6_vxlan_tunnel_addr: Option<String>,
    #[serde(
        default,
        rename = "vxlanTunnelMACAddr",
        skip_serializing_if = "Option::is_none"
    )]
    pub vxlan_tunnel_mac_addr: Option<String>,
    #[serde(
        default,
        rename = "vxlanTunnelMACAddrV6",
        skip_serializing_if = "Option::is_none"
    )]
    pub vxlan_tunnel_mac_addr_v6: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<NodeAddress>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orch_refs: Vec<OrchRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard: Option<NodeWireguardSpec>,
}

/// One of `Node.spec.orchRefs`: the node's name in an orchestrator.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrchRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(default)]
    pub orchestrator: String,
}

/// `Node.spec.wireguard`: the WireGuard interface addresses.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeWireguardSpec {
    #[serde(
        default,
        rename = "interfaceIPv4Address",
        skip_serializing_if = "Option::is_none"
    )]
    pub interface_ipv4_address: Option<String>,
    #[serde(
        default,
        rename = "interfaceIPv6Address",
        skip_serializing_if = "Option::is_none"
    )]
    pub interface_ipv6_address: Option<String>,
}

/// `Node.spec.bgp`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeBgpSpec {
    /// The node's IPv4 address, with its subnet as Calico writes it (`10.0.0.1/24`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_address: Option<String>,
    /// This node's AS; the cluster's (BGPConfiguration) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_number: Option<AsNumber>,
    #[serde(
        default,
        rename = "ipv4IPIPTunnelAddr",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_ipip_tunnel_addr: Option<String>,
    /// Set on route reflectors: the CLUSTER_ID they reflect with.
    #[serde(
        default,
        rename = "routeReflectorClusterID",
        skip_serializing_if = "Option::is_none"
    )]
    pub route_reflector_cluster_id: Option<String>,
}

/// One of `Node.spec.addresses`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeAddress {
    pub address: String,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

fn address_part(s: &str) -> &str {
    s.split('/').next().unwrap_or(s)
}

impl NodeBgpSpec {
    /// The IPv4 BGP address without its prefix length.
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        address_part(self.ipv4_address.as_deref()?).parse().ok()
    }

    /// The IPv6 BGP address without its prefix length.
    pub fn ipv6(&self) -> Option<Ipv6Addr> {
        address_part(self.ipv6_address.as_deref()?).parse().ok()
    }

    /// The IPv4 address with its subnet (`/32` when none was written).
    pub fn ipv4_net(&self) -> Option<ipnet::Ipv4Net> {
        let s = self.ipv4_address.as_deref()?;
        s.parse()
            .ok()
            .or_else(|| ipnet::Ipv4Net::new(s.parse().ok()?, 32).ok())
    }

    /// The IPv6 address with its subnet (`/128` when none was written).
    pub fn ipv6_net(&self) -> Option<ipnet::Ipv6Net> {
        let s = self.ipv6_address.as_deref()?;
        s.parse()
            .ok()
            .or_else(|| ipnet::Ipv6Net::new(s.parse().ok()?, 128).ok())
    }
}

impl Spec for NodeSpec {
    const KIND: &'static str = "Node";
    const PLURAL: &'static str = "nodes";

    fn validate(&self, v: &mut Validator) {
        if let Some(bgp) = &self.bgp {
            if let Some(a) = &bgp.ipv4_address {
                match a
                    .parse::<IpAddr>()
                    .ok()
                    .or_else(|| a.parse::<ipnet::IpNet>().ok().map(|n| n.addr()))
                {
                    Some(IpAddr::V4(_)) => {}
                    _ => v.problem(
                        "spec.bgp.ipv4Address",
                        format!("'{a}' is not an IPv4 address or CIDR"),
                    ),
                }
            }
            if let Some(a) = &bgp.ipv6_address {
                match a
                    .parse::<IpAddr>()
                    .ok()
                    .or_else(|| a.parse::<ipnet::IpNet>().ok().map(|n| n.addr()))
                {
                    Some(IpAddr::V6(_)) => {}
                    _ => v.problem(
                        "spec.bgp.ipv6Address",
                        format!("'{a}' is not an IPv6 address or CIDR"),
                    ),
                }
            }
            if let Some(a) = &bgp.ipv4_ipip_tunnel_addr {
                v.ip("spec.bgp.ipv4IPIPTunnelAddr", a);
            }
            if let Some(id) = &bgp.route_reflector_cluster_id
                && id.parse::<Ipv4Addr>().is_err()
            {
                v.problem(
                    "spec.bgp.routeReflectorClusterID",
                    format!("'{id}' is not an IPv4 address (a CLUSTER_ID is written as one)"),
                );
            }
        }
        if let Some(a) = &self.ipv4_vxlan_tunnel_addr {
            v.ip("spec.ipv4VXLANTunnelAddr", a);
        }
        if let Some(a) = &self.ipv6_vxlan_tunnel_addr {
            v.ip("spec.ipv6VXLANTunnelAddr", a);
        }
        for (field, mac) in [
            ("spec.vxlanTunnelMACAddr", &self.vxlan_tunnel_mac_addr),
            ("spec.vxlanTunnelMACAddrV6", &self.vxlan_tunnel_mac_addr_v6),
        ] {
            if let Some(m) = mac
                && !is_mac(m)
            {
                v.problem(field, format!("'{m}' is not a MAC address"));
            }
        }
        for (i, a) in self.addresses.iter().enumerate() {
            v.ip_or_cidr(&format!("spec.addresses[{i}].address"), &a.address);
            if let Some(t) = &a.kind
                && !["CalicoNodeIP", "InternalIP", "ExternalIP"].contains(&t.as_str())
            {
                v.problem(
                    format!("spec.addresses[{i}].type"),
                    format!("'{t}' is not CalicoNodeIP, InternalIP or ExternalIP"),
                );
            }
        }
        if let Some(w) = &self.wireguard {
            for (field, a) in [
                (
                    "spec.wireguard.interfaceIPv4Address",
                    &w.interface_ipv4_address,
                ),
                (
                    "spec.wireguard.interfaceIPv6Address",
                    &w.interface_ipv6_address,
                ),
            ] {
                if let Some(a) = a {
                    v.ip(field, a);
                }
            }
        }
    }
}

fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}
