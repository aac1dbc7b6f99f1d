//! This node's tunnel addresses: when an enabled pool needs VXLAN (or IP-in-IP), an address
//! is taken through IPAM from one of this node's blocks in such a pool (handle
//! `vxlan-tunnel-addr-<node>` / `ipip-tunnel-addr-<node>`) and recorded in the Node resource
//! with, for VXLAN, the VTEP MAC derived from the node name. An IPv6 VXLAN pool gets its own,
//! as Calico does: handle `vxlan-v6-tunnel-addr-<node>`, Node `ipv6VXLANTunnelAddr` and
//! `vxlanTunnelMACAddrV6`. When no pool needs it any more, the address is released and the
//! fields cleared.
//!
//! Crash safety: assigning writes IPAM first and the Node second; a restart between the two
//! finds the handle's address and records it. Releasing runs the other way round only as far
//! as the Node still names the address, so a release cut short is finished next time.

use std::collections::BTreeMap;
use std::net::IpAddr;

use margay_datastore::ipam::records::{block_key, handle_key};
use margay_datastore::ipam::{
    Block, Handle, IPIP_HANDLE_PREFIX, Ipam, IpamError, VXLAN_HANDLE_PREFIX,
    VXLAN_V6_HANDLE_PREFIX, Want,
};
use margay_datastore::resources::{AllowedUse, NodeSpec};
use tracing::info;

use super::state::{ClusterState, vtep_mac};

/// Which tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelKind {
    Vxlan,
    Ipip,
    /// The IPv6 VXLAN device's address.
    VxlanV6,
}

impl TunnelKind {
    fn handle(self, node: &str) -> String {
        match self {
            TunnelKind::Vxlan => format!("{VXLAN_HANDLE_PREFIX}{node}"),
            TunnelKind::Ipip => format!("{IPIP_HANDLE_PREFIX}{node}"),
            TunnelKind::VxlanV6 => format!("{VXLAN_V6_HANDLE_PREFIX}{node}"),
        }
    }

    fn attr_type(self) -> &'static str {
        match self {
            TunnelKind::Vxlan => "vxlanTunnelAddress",
            TunnelKind::Ipip => "ipipTunnelAddress",
            TunnelKind::VxlanV6 => "vxlanV6TunnelAddress",
        }
    }

    fn v6(self) -> bool {
        self == TunnelKind::VxlanV6
    }

    /// The address the Node records now (of the kind's family).
    fn recorded(self, n: &NodeSpec) -> Option<IpAddr> {
        let s = match self {
            TunnelKind::Vxlan => n.ipv4_vxlan_tunnel_addr.clone(),
            TunnelKind::Ipip => n.bgp.as_ref().and_then(|b| b.ipv4_ipip_tunnel_addr.clone()),
            TunnelKind::VxlanV6 => n.ipv6_vxlan_tunnel_addr.clone(),
        };
        s?.parse::<IpAddr>()
            .ok()
            .filter(|a| a.is_ipv6() == self.v6())
    }

    /// Whether the Node lacks the VTEP MAC this kind needs.
    fn mac_missing(self, n: &NodeSpec) -> bool {
        match self {
            TunnelKind::Vxlan => n.vxlan_tunnel_mac_addr.is_none(),
            TunnelKind::VxlanV6 => n.vxlan_tunnel_mac_addr_v6.is_none(),
            TunnelKind::Ipip => false,
        }
    }

    /// Writes (or clears) the address (and the VTEP MAC) into the Node.
    fn record(self, n: &mut NodeSpec, node: &str, addr: Option<IpAddr>) {
        match self {
            TunnelKind::VxlanV6 => {
                n.ipv6_vxlan_tunnel_addr = addr.map(|a| a.to_string());
                n.vxlan_tunnel_mac_addr_v6 = match addr {
                    // A MAC of its own, apart from the IPv4 device's.
                    Some(_) => n
                        .vxlan_tunnel_mac_addr_v6
                        .clone()
                        .or_else(|| Some(vtep_mac(&format!("{node}/v6")))),
                    None => None,
                };
            }
            TunnelKind::Vxlan => {
                n.ipv4_vxlan_tunnel_addr = addr.map(|a| a.to_string());
                n.vxlan_tunnel_mac_addr = match addr {
                    Some(_) => n
                        .vxlan_tunnel_mac_addr
                        .clone()
                        .or_else(|| Some(vtep_mac(node))),
                    None => None,
                };
            }
            TunnelKind::Ipip => {
                let bgp = n.bgp.get_or_insert_with(Default::default);
                bgp.ipv4_ipip_tunnel_addr = addr.map(|a| a.to_string());
            }
        }
    }
}

/// Keeps this node's tunnel addresses in line with the pools.
pub struct Tunnels {
    ipam: Ipam,
    node: String,
}

impl Tunnels {
    pub fn new(ipam: Ipam, node: &str) -> Tunnels {
        Tunnels {
            ipam,
            node: node.to_string(),
        }
    }

    /// Assigns or releases tunnel addresses as `state`'s pools call for. Does nothing until
    /// this node's Node exists (bgpd creates it).
    pub async fn reconcile(&self, state: &ClusterState) -> Result<(), IpamError> {
        let Some(own) = state.own_node() else {
            return Ok(());
        };
        let needs = state.tunnel_needs();
        // An IPv6 tunnel address only on a node with an IPv6 address (an IPv4 one likewise):
        // the device needs a local address of its family.
        let has_v4 = own.bgp.as_ref().and_then(|b| b.ipv4()).is_some();
        let has_v6 = own.bgp.as_ref().and_then(|b| b.ipv6()).is_some();
        for (kind, needed) in [
            (TunnelKind::Vxlan, needs.vxlan && has_v4),
            (TunnelKind::Ipip, needs.ipip && has_v4),
            (TunnelKind::VxlanV6, needs.vxlan_v6 && has_v6),
        ] {
            let pools = match kind {
                TunnelKind::VxlanV6 => state.tunnel_pools_v6(),
                k => state.tunnel_pools(k == TunnelKind::Vxlan),
            };
            let in_pools = |a: IpAddr| {
                pools.iter().any(|name| {
                    state
                        .pools
                        .get(name)
                        .and_then(|p| p.net())
                        .is_some_and(|n| n.contains(&a))
                })
            };
            let recorded = kind.recorded(own);
            let mac_missing = kind.mac_missing(own);
            match (needed, recorded) {
                (true, Some(a)) if in_pools(a) && !mac_missing => {}
                (true, _) => {
                    let addr = self.ensure_address(kind, &pools, &in_pools).await?;
                    self.write_node(kind, Some(addr)).await?;
                    info!(?kind, %addr, "tunnel address assigned and recorded in the Node");
                }
                (false, Some(a)) => {
                    match self.ipam.release_by_handle(&kind.handle(&self.node)).await {
                        Ok(_) | Err(IpamError::HandleNotFound(_)) => {}
                        Err(e) => return Err(e),
                    }
                    self.write_node(kind, None).await?;
                    info!(?kind, addr = %a, "no pool needs the tunnel any more: address released");
                }
                (false, None) => {}
            }
        }
        Ok(())
    }

    /// The handle's address if it already holds one in a tunnel pool, else a new one.
    async fn ensure_address(
        &self,
        kind: TunnelKind,
        pools: &[String],
        in_pools: &impl Fn(IpAddr) -> bool,
    ) -> Result<IpAddr, IpamError> {
        let handle = kind.handle(&self.node);
        if let Some(a) = self.held_by(&handle, kind.v6()).await? {
            if in_pools(a) {
                return Ok(a);
            }
            // Left from a pool that no longer uses this tunnel.
            match self.ipam.release_by_handle(&handle).await {
                Ok(_) | Err(IpamError::HandleNotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let attrs = BTreeMap::from([
            ("node".to_string(), self.node.clone()),
            ("type".to_string(), kind.attr_type().to_string()),
        ]);
        let got = self
            .ipam
            .auto_assign_for(
                Want {
                    usage: AllowedUse::Tunnel,
                    num_v4: usize::from(!kind.v6()),
                    num_v6: usize::from(kind.v6()),
                },
                &handle,
                &self.node,
                &attrs,
                pools,
            )
            .await?;
        let (got, family) = if kind.v6() {
            (got.v6.first(), 6)
        } else {
            (got.v4.first(), 4)
        };
        match got {
            Some(a) if a.is_ipv6() == kind.v6() => Ok(*a),
            _ => Err(IpamError::Exhausted {
                family,
                node: self.node.clone(),
            }),
        }
    }

    /// The address of the family (`v6`) `handle` holds, if any.
    async fn held_by(&self, handle: &str, v6: bool) -> Result<Option<IpAddr>, IpamError> {
        let store = self.ipam.store();
        let Some(h) = store.get_json::<Handle>(&handle_key(handle)).await? else {
            return Ok(None);
        };
        for cidr in h.value.blocks.keys() {
            let Some(b) = store.get_json::<Block>(&block_key(cidr)).await? else {
                continue;
            };
            let found = b
                .value
                .allocations
                .iter()
                .find(|(_, a)| a.handle_id == handle)
                .map(|(o, _)| b.value.addr(*o));
            if let Some(a) = found.filter(|a| a.is_ipv6() == v6) {
                return Ok(Some(a));
            }
        }
        Ok(None)
    }

    async fn write_node(&self, kind: TunnelKind, addr: Option<IpAddr>) -> Result<(), IpamError> {
        let node = self.node.clone();
        self.ipam
            .store()
            .modify::<NodeSpec>(&self.node, |n| kind.record(&mut n.spec, &node, addr))
            .await?;
        Ok(())
    }
}
