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
//! - a remote block of an IPv6 VXLAN pool: `via VTEP6 dev vxlan-v6.margay onlink`, the IPv6
//!   device Calico calls `vxlan-v6.calico` (same VNI and port as the IPv4 one; the kernel keeps
//!   the two apart by the family of their local address).
//!
//! FelixConfiguration `deviceRouteSourceAddress(IPv6)` is the `src` of the routes through a
//! device (workloads', VXLAN, IP-in-IP), as Calico's route tables set it.
//!
//! A route bgpd learned over several equal paths (multipath) becomes one route with a next hop
//! per path, each one resolved by the pool's mode as above (`nexthop via A nexthop via B`).
//!
//! A route learned from BGP never takes the place of what is this node's own: one for exactly a
//! local workload's address or exactly a block affine to this node is left out (and listed in
//! [`Desired::shadowed`]); a more specific one inside an own block (an address another node
//! borrowed from it) is programmed as any remote route.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::model::{EncapMode, Model, RemoteRoute, RemoteVtep, parse_mac};

/// The VXLAN device felix owns.
pub const VXLAN_DEVICE: &str = "vxlan.margay";
/// Its default VNI (Calico's; FelixConfiguration `vxlanVNI`).
pub const VXLAN_VNI: u32 = 4096;
/// Its default UDP port (IANA VXLAN; FelixConfiguration `vxlanPort`).
pub const VXLAN_PORT: u16 = 4789;
/// The IPv6 VXLAN device felix owns (Calico: `vxlan-v6.calico`).
pub const VXLAN_V6_DEVICE: &str = "vxlan-v6.margay";
/// Bytes IPv6 VXLAN adds (outer IPv6 40 + UDP 8 + VXLAN 8 + inner Ethernet 14), Calico's.
pub const VXLAN_V6_OVERHEAD: u32 = 70;
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
    /// A remote block through vxlan.margay or vxlan-v6.margay.
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
    /// `nexthop via A [dev IF] [onlink] nexthop via B ...`: a multipath (ECMP) route, two or
    /// more next hops, the best path's first.
    Multipath { hops: Vec<Hop> },
}

/// One next hop of a multipath route: `via GW [dev IF] [onlink]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    pub via: IpAddr,
    pub dev: Option<String>,
    pub onlink: bool,
}

impl Target {
    /// The interface the route needs, if it names one (a multipath route: its first hop's).
    pub fn device(&self) -> Option<&str> {
        self.devices().next()
    }

    /// Every interface the route names.
    pub fn devices(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        match self {
            Target::Device { ifname } => Box::new(std::iter::once(ifname.as_str())),
            Target::Gateway { dev, .. } => Box::new(dev.as_deref().into_iter()),
            Target::Blackhole => Box::new(std::iter::empty()),
            Target::Multipath { hops } => Box::new(hops.iter().filter_map(|h| h.dev.as_deref())),
        }
    }
}

/// One route felix wants in the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredRoute {
    pub dst: IpNet,
    pub class: RouteClass,
    pub target: Target,
    /// The preferred source (FelixConfiguration `deviceRouteSourceAddress`), on routes
    /// through a device: workloads' and the tunnels'.
    pub src: Option<IpAddr>,
}

/// A VXLAN device felix wants (the IPv4 one or the IPv6 one: the family of `local`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanDevice {
    /// FelixConfiguration `vxlanVNI` and `vxlanPort` (a device with others is re-created).
    pub vni: u32,
    pub port: u16,
    /// Underlay source address (the node's address of the device's family).
    pub local: IpAddr,
    /// The tunnel address, as a /32 (/128) on the device.
    pub tunnel_addr: Option<IpAddr>,
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

/// A remote VTEP: its ARP / NDP entry (tunnel IP → MAC) and FDB entry (MAC → node IP), both
/// of the device's family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Vtep {
    pub tunnel_ip: IpAddr,
    pub mac: [u8; 6],
    pub node_ip: IpAddr,
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
    /// This node's IPv6 underlay address (the base of the IPv6 VXLAN device's MTU).
    pub node_address_v6: Option<Ipv6Addr>,
    /// The IPv6 VXLAN device (an enabled IPv6 pool has `vxlanMode`).
    pub vxlan_v6: Option<VxlanDevice>,
    /// Remote IPv6 VTEPs, behind the IPv6 device.
    pub vteps_v6: Vec<Vtep>,
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
    /// FelixConfiguration `interfacePrefix`: interfaces starting with one are workloads'.
    pub workload_prefixes: Vec<String>,
    /// FelixConfiguration `removeExternalRoutes`: routes through a workload interface that
    /// felix did not program are removed (true) or left alone (false).
    pub remove_external_routes: bool,
}

/// Which IPv4 tunnels the model calls for: (VXLAN, IP-in-IP). FelixConfiguration
/// `vxlanEnabled` / `ipipEnabled` override what the enabled IPv4 pools call for (Calico:
/// IP-in-IP is IPv4 only, and an IPv6 pool's VXLAN has a device of its own).
fn wanted_tunnels(model: &Model) -> (bool, bool) {
    let enabled = model
        .pools
        .iter()
        .filter(|p| !p.disabled && p.cidr.addr().is_ipv4());
    let cfg = &model.settings;
    let vxlan = cfg
        .vxlan_enabled
        .unwrap_or_else(|| enabled.clone().any(|p| p.vxlan_mode != EncapMode::Never));
    let ipip = cfg.ipip_enabled.unwrap_or_else(|| {
        enabled
            .clone()
            .any(|p| p.vxlan_mode == EncapMode::Never && p.ipip_mode != EncapMode::Never)
    });
    (vxlan, ipip)
}

/// Whether an enabled IPv6 pool has `vxlanMode` (and `vxlanEnabled` does not turn VXLAN off).
fn wants_vxlan_v6(model: &Model) -> bool {
    model.settings.vxlan_enabled != Some(false)
        && model
            .pools
            .iter()
            .any(|p| !p.disabled && p.cidr.addr().is_ipv6() && p.vxlan_mode != EncapMode::Never)
}

/// The tunnel devices [`compute`] gives for `model`: (VXLAN, IP-in-IP, IPv6 VXLAN). Costs no
/// more than the pools, whatever the number of nodes and routes.
pub fn tunnel_devices(model: &Model) -> (bool, bool, bool) {
    let (vxlan, ipip) = wanted_tunnels(model);
    let v4 = model.node.address.is_some();
    (
        vxlan && v4,
        ipip && v4,
        wants_vxlan_v6(model) && model.node.address_v6.is_some(),
    )
}

/// What bgpd should originate for this node ([`Desired::originate`]): its affine blocks and
/// the addresses of its workloads that no affine block holds (borrowed /32s). Costs only this
/// node's blocks and workloads, whatever the number of nodes and routes.
pub fn originate(model: &Model) -> BTreeSet<IpNet> {
    let mut out: BTreeSet<IpNet> = model.affine_blocks.iter().copied().collect();
    for ep in &model.endpoints {
        for ip in &ep.ips {
            let host = host_of(ip);
            if !model.affine_blocks.iter().any(|b| b.contains(&host)) {
                out.insert(host);
            }
        }
    }
    out
}

/// Computes the desired dataplane for `model`.
pub fn compute(model: &Model) -> Desired {
    let mut d = Desired {
        node_address: model.node.address.map(|a| a.addr()),
        nat: crate::nat::desired_with(&model.pools, &model.settings),
        workload_prefixes: model.settings.interface_prefixes.clone(),
        remove_external_routes: model.settings.remove_external_routes,
        node_address_v6: model.node.address_v6.map(|a| a.addr()),
        originate: originate(model),
        ..Desired::default()
    };
    let cfg = &model.settings;
    let (wants_vxlan, wants_ipip) = wanted_tunnels(model);
    let node_v4 = model.node.address.map(|a| a.addr());
    if (wants_vxlan || wants_ipip) && node_v4.is_none() {
        d.problems.push(format!(
            "node {}: an IPv4 pool needs a tunnel but the node has no IPv4 address",
            model.node.name
        ));
    }

    if let (true, Some(local)) = (wants_vxlan, node_v4) {
        let tunnel = model.node.vxlan_tunnel_addr.map(IpAddr::V4);
        let mac = model.node.vxlan_tunnel_mac.as_deref();
        let mtu = cfg.vxlan_mtu.or(model.node.mtu);
        d.vxlan = Some(vxlan_device(
            model,
            IpAddr::V4(local),
            tunnel,
            mac,
            mtu,
            &mut d.problems,
        ));
        d.vteps = remote_vteps(model, IpAddr::V4(local), &mut d.problems);
    }
    vxlan_v6(model, &mut d);
    if wants_ipip && node_v4.is_some() {
        d.ipip = Some(IpipDevice {
            tunnel_addr: model.node.ipip_tunnel_addr,
            mtu: cfg.ipip_mtu.or(model.node.mtu),
        });
    }

    // Remote blocks, except what is this node's own: its blocks and its workloads' addresses.
    let own = own_prefixes(model);
    // Each node's VTEP by its address (the first in order), looked up once per route: a scan
    // per route made a VXLAN cluster's compute O(N²).
    let mut vtep_at: HashMap<IpAddr, IpAddr> = HashMap::new();
    for v in d.vteps.iter().chain(&d.vteps_v6) {
        vtep_at.entry(v.node_ip).or_insert(v.tunnel_ip);
    }
    for r in &model.remote_routes {
        let out = remote_entry(model, &d, &|ip| vtep_at.get(&ip).copied(), &own, r);
        d.problems.extend(out.problems);
        if out.shadowed {
            d.shadowed.insert(r.prefix);
        }
        if let Some(route) = out.route {
            d.routes.insert(r.prefix, route);
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
                src: None,
            },
        );
    }

    for block in &model.affine_blocks {
        d.routes.insert(
            *block,
            DesiredRoute {
                dst: *block,
                class: RouteClass::Blackhole,
                target: Target::Blackhole,
                src: None,
            },
        );
    }

    for ep in &model.endpoints {
        d.workload_interfaces.insert(ep.interface.clone());
        for ip in &ep.ips {
            let host = host_of(ip);
            d.routes.insert(
                host,
                DesiredRoute {
                    dst: host,
                    class: RouteClass::Workload,
                    target: Target::Device {
                        ifname: ep.interface.clone(),
                    },
                    src: cfg.device_route_source_for(host.addr()),
                },
            );
        }
    }
    d
}

/// What one route bgpd learned gives: the route to program (if any), whether it is left out
/// as this node's own ([`Desired::shadowed`]), and the problems of its next hops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RemoteEntry {
    pub route: Option<DesiredRoute>,
    pub shadowed: bool,
    pub problems: Vec<String>,
}

/// The [`RemoteEntry`] of `r`, with `own` this node's blocks and workload addresses and
/// `vtep_at` each node address's VTEP (its tunnel address); `d` has the devices already.
pub(crate) fn remote_entry(
    model: &Model,
    d: &Desired,
    vtep_at: &dyn Fn(IpAddr) -> Option<IpAddr>,
    own: &BTreeSet<IpNet>,
    r: &RemoteRoute,
) -> RemoteEntry {
    let mut out = RemoteEntry::default();
    if model.node.owns(r.next_hop) {
        return out;
    }
    if own.contains(&r.prefix.trunc()) {
        out.shadowed = true;
        return out;
    }
    let mut routes = Vec::new();
    for nh in r.next_hops().filter(|nh| !model.node.owns(*nh)) {
        match remote_route(model, d, vtep_at, r.prefix, nh) {
            Ok(route) => routes.push(route),
            Err(why) => out.problems.push(why),
        }
    }
    out.route = merge_paths(routes);
    out
}

/// This node's blocks and its workloads' addresses: what a learned route never replaces.
pub(crate) fn own_prefixes(model: &Model) -> BTreeSet<IpNet> {
    model
        .affine_blocks
        .iter()
        .copied()
        .chain(
            model
                .endpoints
                .iter()
                .flat_map(|ep| ep.ips.iter().map(host_of)),
        )
        .collect()
}

/// This node's VXLAN device of `local`'s family, with FelixConfiguration's VNI and port and
/// the Node's tunnel address and MAC (`vxlanTunnelMACAddr` or `...V6`; one that does not
/// parse is a problem, and the kernel picks the MAC).
fn vxlan_device(
    model: &Model,
    local: IpAddr,
    tunnel_addr: Option<IpAddr>,
    mac: Option<&str>,
    mtu: Option<u32>,
    problems: &mut Vec<String>,
) -> VxlanDevice {
    let mac = match mac.map(parse_mac) {
        Some(Ok(m)) => Some(m),
        Some(Err(e)) => {
            problems.push(format!("node {}: {e}", model.node.name));
            None
        }
        None => None,
    };
    VxlanDevice {
        vni: model.settings.vxlan_vni,
        port: model.settings.vxlan_port,
        local,
        tunnel_addr,
        mac,
        mtu,
    }
}

/// The other nodes' VTEPs of `local`'s family, sorted, without this node's own.
fn remote_vteps(model: &Model, local: IpAddr, problems: &mut Vec<String>) -> Vec<Vtep> {
    let mut out = Vec::new();
    for v in &model.vteps {
        match vtep_of(v, local) {
            Some(Ok(vtep)) => out.push(vtep),
            Some(Err(why)) => problems.push(why),
            None => {}
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The VTEP entry of `v` on the device whose local address is `local`: none when `v` is of
/// the other family or this node's own, an error when it does not parse.
pub(crate) fn vtep_of(v: &RemoteVtep, local: IpAddr) -> Option<Result<Vtep, String>> {
    if v.node_ip == local || v.node_ip.is_ipv4() != local.is_ipv4() {
        return None;
    }
    if v.tunnel_ip.is_ipv4() != local.is_ipv4() {
        return Some(Err(format!(
            "VTEP of node {}: tunnel address {} is not of its node address's family",
            v.node, v.tunnel_ip
        )));
    }
    Some(
        parse_mac(&v.mac)
            .map(|mac| Vtep {
                tunnel_ip: v.tunnel_ip,
                mac,
                node_ip: v.node_ip,
            })
            .map_err(|e| format!("VTEP of node {}: {e}", v.node)),
    )
}

/// The IPv6 VXLAN device and its VTEPs, when an enabled IPv6 pool has `vxlanMode` (and
/// FelixConfiguration `vxlanEnabled` does not turn VXLAN off), as Calico's felix runs its
/// second VXLAN manager for IPv6: same VNI and port, `vxlanMTUV6`, the Node's
/// `ipv6VXLANTunnelAddr` and `vxlanTunnelMACAddrV6`.
fn vxlan_v6(model: &Model, d: &mut Desired) {
    let cfg = &model.settings;
    if !wants_vxlan_v6(model) {
        return;
    }
    let Some(local) = d.node_address_v6 else {
        d.problems.push(format!(
            "node {}: an IPv6 VXLAN pool needs the node's IPv6 address (spec.bgp.ipv6Address)",
            model.node.name
        ));
        return;
    };
    let tunnel = model.node.vxlan_tunnel_addr_v6.map(IpAddr::V6);
    let mac = model.node.vxlan_tunnel_mac_v6.as_deref();
    let mtu = cfg.vxlan_mtu_v6.or(model.node.mtu);
    d.vxlan_v6 = Some(vxlan_device(
        model,
        IpAddr::V6(local),
        tunnel,
        mac,
        mtu,
        &mut d.problems,
    ));
    d.vteps_v6 = remote_vteps(model, IpAddr::V6(local), &mut d.problems);
}

/// One route out of the routes through each next hop of a prefix: the first alone, or a
/// multipath route of the distinct gateways (the class is the best path's).
fn merge_paths(routes: Vec<DesiredRoute>) -> Option<DesiredRoute> {
    let mut hops: Vec<Hop> = Vec::with_capacity(routes.len());
    for r in &routes {
        if let Target::Gateway { via, dev, onlink } = &r.target {
            let hop = Hop {
                via: *via,
                dev: dev.clone(),
                onlink: *onlink,
            };
            if !hops.contains(&hop) {
                hops.push(hop);
            }
        }
    }
    let mut first = routes.into_iter().next()?;
    if hops.len() > 1 {
        first.target = Target::Multipath { hops };
    }
    Some(first)
}

/// The host route of an endpoint address (`/32`, `/128`).
fn host_of(ip: &IpNet) -> IpNet {
    IpNet::new(ip.addr(), ip.max_prefix_len()).unwrap_or(*ip)
}

/// The route to a remote prefix through `next_hop`, by its pool's mode.
fn remote_route(
    model: &Model,
    d: &Desired,
    vtep_at: &dyn Fn(IpAddr) -> Option<IpAddr>,
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
        src: None,
    };
    let src = model.settings.device_route_source_for(prefix.addr());
    let Some(pool) = model.pool_of(&prefix) else {
        return Ok(direct);
    };
    let same_subnet = model.node.same_subnet(next_hop);
    let encap = |mode: EncapMode| match mode {
        EncapMode::Never => false,
        EncapMode::Always => true,
        EncapMode::CrossSubnet => !same_subnet,
    };
    let IpAddr::V4(nh4) = next_hop else {
        let encapsulate = encap(pool.vxlan_mode);
        return remote_route_v6(d, vtep_at, pool, prefix, direct, encapsulate, src);
    };
    if pool.vxlan_mode != EncapMode::Never {
        if !encap(pool.vxlan_mode) {
            return Ok(direct);
        }
        let tunnel_ip = vtep_at(IpAddr::V4(nh4)).ok_or_else(|| {
            format!("route {prefix} via {nh4}: no VXLAN tunnel endpoint known for that node")
        })?;
        return Ok(DesiredRoute {
            dst: prefix,
            class: RouteClass::Vxlan,
            target: Target::Gateway {
                via: tunnel_ip,
                dev: Some(VXLAN_DEVICE.to_string()),
                onlink: true,
            },
            src,
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
            src,
        });
    }
    Ok(direct)
}

/// The route to a remote prefix through an IPv6 next hop: direct, or (VXLAN pools) through
/// the IPv6 VXLAN device to the VTEP of the node at that address.
fn remote_route_v6(
    d: &Desired,
    vtep_at: &dyn Fn(IpAddr) -> Option<IpAddr>,
    pool: &crate::model::IpPool,
    prefix: IpNet,
    direct: DesiredRoute,
    encapsulate: bool,
    src: Option<IpAddr>,
) -> Result<DesiredRoute, String> {
    if pool.vxlan_mode == EncapMode::Never || !encapsulate {
        return Ok(direct);
    }
    let Target::Gateway { via: next_hop, .. } = direct.target else {
        return Ok(direct);
    };
    if d.vxlan_v6.is_none() {
        return Err(format!(
            "route {prefix} via {next_hop}: IPv6 VXLAN pool {} but no IPv6 VXLAN device (this \
             node has no IPv6 address, or vxlanEnabled is false)",
            pool.cidr
        ));
    }
    let tunnel_ip = vtep_at(next_hop).ok_or_else(|| {
        format!("route {prefix} via {next_hop}: no IPv6 VXLAN tunnel endpoint known for that node")
    })?;
    Ok(DesiredRoute {
        dst: prefix,
        class: RouteClass::Vxlan,
        target: Target::Gateway {
            via: tunnel_ip,
            dev: Some(VXLAN_V6_DEVICE.to_string()),
            onlink: true,
        },
        src,
    })
}

#[cfg(test)]
#[path = "desired_tests.rs"]
mod tests;
