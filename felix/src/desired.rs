//! The pure core: from a [`Model`] to the [`Desired`] dataplane (routes, tunnel devices, VXLAN
//! neighbours and FDB entries, workload interfaces, prefixes to originate). No I/O here: the
//! same model always gives the same answer, and every pool mode has a unit test.
//!
//! Routes, by where the destination is:
//! - a local workload address: `IP/32 dev caliX scope link`;
//! - a block affine to this node: `blackhole BLOCK` (more specific /32s win for local pods);
//! - a remote block, by its pool's mode: Never → `via NODE`; IPIP Always → `via NODE dev tunl0
//!   onlink`; VXLAN Always → `via VTEP dev vxlan.margay onlink`; CrossSubnet → encapsulated only
//!   when the next hop is outside this node's subnet, `via NODE` otherwise.
//!
//! A route learned from BGP never takes the place of what is this node's own: one for exactly a
//! local workload's address or exactly a block affine to this node is left out (and listed in
//! [`Desired::shadowed`]); a more specific one inside an own block (an address another node
//! borrowed from it) is programmed as any remote route.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;

use crate::model::{EncapMode, Model, parse_mac};

/// The VXLAN device felix owns.
pub const VXLAN_DEVICE: &str = "vxlan.margay";
/// Its default VNI (Calico's; FelixConfiguration `vxlanVNI`).
pub const VXLAN_VNI: u32 = 4096;
/// Its default UDP port (IANA VXLAN; FelixConfiguration `vxlanPort`).
pub const VXLAN_PORT: u16 = 4789;
/// The IP-in-IP device.
pub const IPIP_DEVICE: &str = "tunl0";
/// Bytes VXLAN adds (outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14).
pub const VXLAN_OVERHEAD: u32 = 50;
/// Bytes IP-in-IP adds (outer IPv4 header).
pub const IPIP_OVERHEAD: u32 = 20;

/// What a route is for: the label of the "routes by kind" metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RouteClass {
    /// A local pod's address on its cali interface.
    Workload,
    /// The blackhole of a block affine to this node.
    Blackhole,
    /// A remote block through the underlay, no encapsulation.
    Direct,
    /// A remote block through tunl0.
    Ipip,
    /// A remote block through vxlan.margay.
    Vxlan,
}

impl RouteClass {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteClass::Workload => "workload",
            RouteClass::Blackhole => "blackhole",
            RouteClass::Direct => "direct",
            RouteClass::Ipip => "ipip",
            RouteClass::Vxlan => "vxlan",
        }
    }

    pub const ALL: [RouteClass; 5] = [
        RouteClass::Workload,
        RouteClass::Blackhole,
        RouteClass::Direct,
        RouteClass::Ipip,
        RouteClass::Vxlan,
    ];
}

/// Where a route sends packets, with interfaces by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `dev IF scope link`.
    Device { ifname: String },
    /// `via GW [dev IF] [onlink]`.
    Gateway {
        via: IpAddr,
        dev: Option<String>,
        onlink: bool,
    },
    /// `blackhole`.
    Blackhole,
}

impl Target {
    /// The interface the route needs, if it names one.
    pub fn device(&self) -> Option<&str> {
        match self {
            Target::Device { ifname } => Some(ifname),
            Target::Gateway { dev, .. } => dev.as_deref(),
            Target::Blackhole => None,
        }
    }
}

/// One route felix wants in the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredRoute {
    pub dst: IpNet,
    pub class: RouteClass,
    pub target: Target,
}

/// The VXLAN device felix wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanDevice {
    /// FelixConfiguration `vxlanVNI` and `vxlanPort` (a device with others is re-created).
    pub vni: u32,
    pub port: u16,
    /// Underlay source address (the node's address).
    pub local: Ipv4Addr,
    /// The tunnel address, as a /32 on the device.
    pub tunnel_addr: Option<Ipv4Addr>,
    pub mac: Option<[u8; 6]>,
    /// Configured MTU; derived from the host interface when `None`.
    pub mtu: Option<u32>,
}

/// The IP-in-IP device felix wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpipDevice {
    pub tunnel_addr: Option<Ipv4Addr>,
    pub mtu: Option<u32>,
}

/// A remote VTEP: its ARP entry (tunnel IP → MAC) and FDB entry (MAC → node IP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Vtep {
    pub tunnel_ip: Ipv4Addr,
    pub mac: [u8; 6],
    pub node_ip: Ipv4Addr,
}

/// The whole desired dataplane.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// This node's underlay address (its interface's MTU is the base of tunnel MTUs).
    pub node_address: Option<Ipv4Addr>,
    pub routes: BTreeMap<IpNet, DesiredRoute>,
    pub vxlan: Option<VxlanDevice>,
    pub ipip: Option<IpipDevice>,
    pub vteps: Vec<Vtep>,
    /// Host sides of workload veths (they get the per-interface sysctls).
    pub workload_interfaces: BTreeSet<String>,
    /// Prefixes bgpd should originate for this node.
    pub originate: BTreeSet<IpNet>,
    /// Inputs left out, and why (shown in logs and /readiness).
    pub problems: Vec<String>,
    /// Routes learned from BGP left out because they are exactly a local workload's address
    /// or a block affine to this node.
    pub shadowed: BTreeSet<IpNet>,
    /// The natOutgoing tables.
    pub nat: crate::nat::DesiredNat,
}

/// Computes the desired dataplane for `model`.
pub fn compute(model: &Model) -> Desired {
    let mut d = Desired {
        node_address: Some(model.node.address.addr()),
        nat: crate::nat::desired(&model.pools),
        ..Desired::default()
    };
    let enabled = model.pools.iter().filter(|p| !p.disabled);
    let cfg = &model.settings;
    // FelixConfiguration vxlanEnabled / ipipEnabled override what the pools call for.
    let wants_vxlan = cfg
        .vxlan_enabled
        .unwrap_or_else(|| enabled.clone().any(|p| p.vxlan_mode != EncapMode::Never));
    let wants_ipip = cfg.ipip_enabled.unwrap_or_else(|| {
        enabled
            .clone()
            .any(|p| p.vxlan_mode == EncapMode::Never && p.ipip_mode != EncapMode::Never)
    });

    if wants_vxlan {
        let mac = match model.node.vxlan_tunnel_mac.as_deref().map(parse_mac) {
            Some(Ok(m)) => Some(m),
            Some(Err(e)) => {
                d.problems.push(format!("node {}: {e}", model.node.name));
                None
            }
            None => None,
        };
        d.vxlan = Some(VxlanDevice {
            vni: cfg.vxlan_vni,
            port: cfg.vxlan_port,
            local: model.node.address.addr(),
            tunnel_addr: model.node.vxlan_tunnel_addr,
            mac,
            mtu: cfg.vxlan_mtu.or(model.node.mtu),
        });
        for v in &model.vteps {
            if v.node_ip == model.node.address.addr() {
                continue;
            }
            match parse_mac(&v.mac) {
                Ok(mac) => d.vteps.push(Vtep {
                    tunnel_ip: v.tunnel_ip,
                    mac,
                    node_ip: v.node_ip,
                }),
                Err(e) => d.problems.push(format!("VTEP of node {}: {e}", v.node)),
            }
        }
        d.vteps.sort();
        d.vteps.dedup();
    }
    if wants_ipip {
        d.ipip = Some(IpipDevice {
            tunnel_addr: model.node.ipip_tunnel_addr,
            mtu: cfg.ipip_mtu.or(model.node.mtu),
        });
    }

    // Remote blocks, except what is this node's own: its blocks and its workloads' addresses.
    let own: BTreeSet<IpNet> = model
        .affine_blocks
        .iter()
        .copied()
        .chain(
            model
                .endpoints
                .iter()
                .flat_map(|ep| ep.ips.iter().map(host_of)),
        )
        .collect();
    for r in &model.remote_routes {
        if r.next_hop == IpAddr::V4(model.node.address.addr()) {
            continue;
        }
        if own.contains(&r.prefix.trunc()) {
            d.shadowed.insert(r.prefix);
            continue;
        }
        match remote_route(model, &d, r.prefix, r.next_hop) {
            Ok(route) => {
                d.routes.insert(r.prefix, route);
            }
            Err(why) => d.problems.push(why),
        }
    }

    // BGPPeer `reachableBy`: the peer's address through the given gateway, as Calico's static
    // route; it takes the place of a learned route for the same prefix, not of our own.
    for r in &model.peer_routes {
        d.routes.insert(
            r.prefix,
            DesiredRoute {
                dst: r.prefix,
                class: RouteClass::Direct,
                target: Target::Gateway {
                    via: r.next_hop,
                    dev: None,
                    onlink: false,
                },
            },
        );
    }

    for block in &model.affine_blocks {
        d.originate.insert(*block);
        d.routes.insert(
            *block,
            DesiredRoute {
                dst: *block,
                class: RouteClass::Blackhole,
                target: Target::Blackhole,
            },
        );
    }

    for ep in &model.endpoints {
        d.workload_interfaces.insert(ep.interface.clone());
        for ip in &ep.ips {
            let host = host_of(ip);
            if !model.affine_blocks.iter().any(|b| b.contains(&host)) {
                // A borrowed address: the /32 is ours to originate.
                d.originate.insert(host);
            }
            d.routes.insert(
                host,
                DesiredRoute {
                    dst: host,
                    class: RouteClass::Workload,
                    target: Target::Device {
                        ifname: ep.interface.clone(),
                    },
                },
            );
        }
    }
    d
}

/// The host route of an endpoint address (`/32`, `/128`).
fn host_of(ip: &IpNet) -> IpNet {
    IpNet::new(ip.addr(), ip.max_prefix_len()).unwrap_or(*ip)
}

/// The route to a remote prefix through `next_hop`, by its pool's mode.
fn remote_route(
    model: &Model,
    d: &Desired,
    prefix: IpNet,
    next_hop: IpAddr,
) -> Result<DesiredRoute, String> {
    let direct = DesiredRoute {
        dst: prefix,
        class: RouteClass::Direct,
        target: Target::Gateway {
            via: next_hop,
            dev: None,
            onlink: false,
        },
    };
    let (Some(pool), IpAddr::V4(nh4)) = (model.pool_of(&prefix), next_hop) else {
        return Ok(direct);
    };
    let same_subnet = model.node.address.contains(&nh4);
    let encap = |mode: EncapMode| match mode {
        EncapMode::Never => false,
        EncapMode::Always => true,
        EncapMode::CrossSubnet => !same_subnet,
    };
    if pool.vxlan_mode != EncapMode::Never {
        if !encap(pool.vxlan_mode) {
            return Ok(direct);
        }
        let vtep = d.vteps.iter().find(|v| v.node_ip == nh4).ok_or_else(|| {
            format!("route {prefix} via {nh4}: no VXLAN tunnel endpoint known for that node")
        })?;
        return Ok(DesiredRoute {
            dst: prefix,
            class: RouteClass::Vxlan,
            target: Target::Gateway {
                via: IpAddr::V4(vtep.tunnel_ip),
                dev: Some(VXLAN_DEVICE.to_string()),
                onlink: true,
            },
        });
    }
    if encap(pool.ipip_mode) {
        return Ok(DesiredRoute {
            dst: prefix,
            class: RouteClass::Ipip,
            target: Target::Gateway {
                via: next_hop,
                dev: Some(IPIP_DEVICE.to_string()),
                onlink: true,
            },
        });
    }
    Ok(direct)
}

#[cfg(test)]
#[path = "desired_tests.rs"]
mod tests;
