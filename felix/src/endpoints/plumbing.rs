//! The kernel side of an endpoint: the veth pair, the container end's address and routes, the
//! host end's sysctls and /32 route; tearing it down; and reading back what is there for CHECK.
//! Blocking netlink calls: run them off the async runtime. Container-side work happens on a
//! dedicated thread inside the container's namespace ([`netlink::in_netns`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::netlink::{
    self, Dataplane, KernelRoute, Mac, NetlinkError, RouteKind, SCOPE_LINK, SCOPE_UNIVERSE,
    TABLE_MAIN, sysctl,
};

/// The host side's MAC (Calico's): every pod sees the same gateway MAC.
pub const HOST_MAC: Mac = [0xee; 6];
/// The pods' IPv4 gateway, answered by proxy ARP on the host side.
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The pods' IPv6 gateway: the host side's link-local address (from [`HOST_MAC`]).
pub const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0xecee, 0xeeff, 0xfeee, 0xeeee);
/// rtm_protocol of the routes inside the container (`boot`, what `ip route add` uses).
const CONTAINER_PROTO: u8 = 3;

/// What to build.
#[derive(Debug, Clone)]
pub struct Plan {
    pub netns: String,
    pub host_ifname: String,
    pub container_ifname: String,
    /// The container end's MAC.
    pub container_mac: Mac,
    pub mtu: u32,
    /// The pod's addresses as host prefixes (/32, /128).
    pub addresses: Vec<IpNet>,
    /// felix's route protocol (the host /32 routes carry it).
    pub protocol: u8,
}

/// The container-side routes ADD makes for `addresses` on link `oif`.
pub fn container_routes(addresses: &[IpNet], oif: u32) -> Vec<KernelRoute> {
    let mut out = Vec::new();
    let base = |dst: IpNet, scope, gateway| KernelRoute {
        dst,
        table: TABLE_MAIN,
        protocol: CONTAINER_PROTO,
        kind: RouteKind::Unicast,
        scope,
        gateway,
        oif: Some(oif),
        onlink: false,
        priority: 0,
        multipath: Vec::new(),
        src: None,
    };
    if addresses.iter().any(|a| a.addr().is_ipv4()) {
        out.push(base(IpNet::from(IpAddr::V4(GATEWAY_V4)), SCOPE_LINK, None));
        out.push(base(
            "0.0.0.0/0".parse().expect("literal"),
            SCOPE_UNIVERSE,
            Some(IpAddr::V4(GATEWAY_V4)),
        ));
    }
    if addresses.iter().any(|a| a.addr().is_ipv6()) {
        out.push(base(
            "::/0".parse().expect("literal"),
            SCOPE_UNIVERSE,
            Some(IpAddr::V6(GATEWAY_V6)),
        ));
    }
    out
}

/// The host route to one pod address.
pub fn host_route(addr: IpNet, oif: u32, protocol: u8) -> KernelRoute {
    KernelRoute {
        dst: addr,
        table: TABLE_MAIN,
        protocol,
        kind: RouteKind::Unicast,
        scope: SCOPE_LINK,
        gateway: None,
        oif: Some(oif),
        onlink: false,
        priority: 0,
        multipath: Vec::new(),
        src: None,
    }
}

/// Creates the veth and configures the container end (with the plan's MAC).
/// On failure the host side is removed again (which removes the peer too).
pub fn build_container_side(plan: &Plan) -> Result<(), NetlinkError> {
    let ns = netlink::open_netns(&plan.netns)?;
    let mut dp = Dataplane::new()?;
    dp.create_veth_into_netns(
        &plan.host_ifname,
        HOST_MAC,
        plan.mtu,
        &plan.container_ifname,
        &ns,
    )?;
    let configured = (|| {
        let host = dp.link(&plan.host_ifname)?;
        dp.set_alias(host.index, crate::cluster::orphans::ENDPOINT_ALIAS)?;
        sysctl::workload_interface(&plan.host_ifname)?;
        dp.set_link_up(host.index, true)?;
        let p = plan.clone();
        netlink::in_netns(&plan.netns, move || {
            let mut c = Dataplane::new()?;
            let link = c.link(&p.container_ifname)?;
            c.set_mac(link.index, p.container_mac)?;
            if p.addresses.iter().any(|a| a.addr().is_ipv6()) {
                sysctl::container_ipv6(&p.container_ifname)?;
            }
            for a in &p.addresses {
                c.add_address(link.index, *a)?;
            }
            c.set_link_up(link.index, true)?;
            for r in container_routes(&p.addresses, link.index) {
                c.add_route(&r)?;
            }
            Ok(())
        })
    })();
    if configured.is_err() {
        let _ = remove_host_side(&plan.host_ifname);
    }
    configured
}

/// Programs the host /32 (/128) routes to the pod on the host side (replace: idempotent).
pub fn program_host_routes(plan: &Plan) -> Result<(), NetlinkError> {
    let mut dp = Dataplane::new()?;
    let host = dp.link(&plan.host_ifname)?;
    for a in &plan.addresses {
        dp.replace_route(&host_route(*a, host.index, plan.protocol))?;
    }
    Ok(())
}

/// Whether every host route of `plan` is in the kernel, on the host side, with felix's
/// protocol. Reads only felix's routes through the host side, of the plan's families (ADD
/// calls this after each of the reconciler's flushes: a dump of every route of the node, pod
/// veths' IPv6 link-local routes included, was most of felix's CPU per ADD).
pub fn host_routes_present(plan: &Plan) -> Result<bool, NetlinkError> {
    let mut dp = Dataplane::new()?;
    let host = dp.link(&plan.host_ifname)?;
    let v4 = plan.addresses.iter().any(|a| a.addr().is_ipv4());
    let v6 = plan.addresses.iter().any(|a| a.addr().is_ipv6());
    let routes = dp.routes_via(host.index, TABLE_MAIN, plan.protocol, v4, v6)?;
    Ok(plan
        .addresses
        .iter()
        .all(|a| routes.iter().any(|r| r.dst == *a)))
}

/// Deletes the host side of the veth (the kernel removes the peer and every route through
/// either end). Returns whether it existed.
pub fn remove_host_side(host_ifname: &str) -> Result<bool, NetlinkError> {
    let mut dp = Dataplane::new()?;
    match dp.link(host_ifname) {
        Ok(l) => match dp.delete_link(l.index) {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(e),
        },
        Err(NetlinkError::NoSuchLink(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes a container interface left without its host side (a half-done ADD), if the
/// namespace still exists.
pub fn remove_container_side(netns: &str, ifname: &str) -> Result<(), NetlinkError> {
    if netns.is_empty() || !std::path::Path::new(netns).exists() {
        return Ok(());
    }
    let ifname = ifname.to_string();
    netlink::in_netns(netns, move || {
        let mut c = Dataplane::new()?;
        match c.link(&ifname) {
            Ok(l) => c.delete_link(l.index),
            Err(NetlinkError::NoSuchLink(_)) => Ok(()),
            Err(e) => Err(e),
        }
    })
}

/// What the container end looks like now.
#[derive(Debug, Clone, Default)]
pub struct ContainerView {
    /// `None` when the interface is missing.
    pub link: Option<netlink::Link>,
    pub addresses: Vec<IpNet>,
    /// Routes through the interface (main table).
    pub routes: Vec<KernelRoute>,
}

/// Reads the container end of an endpoint.
pub fn read_container(netns: &str, ifname: &str) -> Result<ContainerView, NetlinkError> {
    let ifname = ifname.to_string();
    netlink::in_netns(netns, move || {
        let mut c = Dataplane::new()?;
        let link = match c.link(&ifname) {
            Ok(l) => l,
            Err(NetlinkError::NoSuchLink(_)) => return Ok(ContainerView::default()),
            Err(e) => return Err(e),
        };
        let addresses = c.addresses(link.index)?;
        let routes = c
            .routes(Some(TABLE_MAIN), None)?
            .into_iter()
            .filter(|r| r.oif == Some(link.index))
            .collect();
        Ok(ContainerView {
            link: Some(link),
            addresses,
            routes,
        })
    })
}

/// The host end (`None` when missing) and felix's routes through it.
pub fn read_host(
    host_ifname: &str,
    protocol: u8,
) -> Result<(Option<netlink::Link>, Vec<KernelRoute>), NetlinkError> {
    let mut dp = Dataplane::new()?;
    let link = match dp.link(host_ifname) {
        Ok(l) => l,
        Err(NetlinkError::NoSuchLink(_)) => return Ok((None, Vec::new())),
        Err(e) => return Err(e),
    };
    let routes = dp
        .routes(Some(TABLE_MAIN), Some(protocol))?
        .into_iter()
        .filter(|r| r.oif == Some(link.index))
        .collect();
    Ok((Some(link), routes))
}

/// "ee:ee:ee:ee:ee:ee".
pub fn mac_string(m: &Mac) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
