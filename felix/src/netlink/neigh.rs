//! Neighbour (ARP / NDP) and bridge FDB entries: the two tables a VXLAN device needs per remote
//! VTEP (`ip neigh replace VTEP_IP lladdr MAC dev vxlan.margay nud permanent` and
//! `bridge fdb replace MAC dev vxlan.margay dst NODE_IP self permanent`), for the IPv4 device
//! and the IPv6 one (`vxlan-v6.margay`) alike.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::RouteType;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::link::Mac;

/// A permanent ARP (IPv4) or NDP (IPv6) entry on a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Neighbour {
    pub ifindex: u32,
    pub ip: IpAddr,
    pub mac: Mac,
}

/// A forwarding-database entry of a VXLAN device: frames to `mac` go to VTEP `dst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FdbEntry {
    pub ifindex: u32,
    pub mac: Mac,
    pub dst: IpAddr,
}

fn neighbour_address(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(a) => NeighbourAddress::Inet(a),
        IpAddr::V6(a) => NeighbourAddress::Inet6(a),
    }
}

fn family_of(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn base(family: AddressFamily, ifindex: u32) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = family;
    m.header.ifindex = ifindex;
    m.header.state = NeighbourState::Permanent;
    m.header.kind = RouteType::Unspec;
    m
}

impl Neighbour {
    pub(crate) fn to_message(self, add: bool) -> RouteNetlinkMessage {
        let mut m = base(family_of(self.ip), self.ifindex);
        m.attributes
            .push(NeighbourAttribute::Destination(neighbour_address(self.ip)));
        if add {
            m.attributes
                .push(NeighbourAttribute::LinkLayerAddress(self.mac.to_vec()));
            RouteNetlinkMessage::NewNeighbour(m)
        } else {
            RouteNetlinkMessage::DelNeighbour(m)
        }
    }

    /// A permanent IPv4 or IPv6 neighbour from a dump; `None` for learned or incomplete
    /// entries.
    pub(crate) fn from_message(m: &NeighbourMessage) -> Option<Neighbour> {
        let ip_family = matches!(m.header.family, AddressFamily::Inet | AddressFamily::Inet6);
        if !ip_family || m.header.state != NeighbourState::Permanent {
            return None;
        }
        let mut ip = None;
        let mut mac = None;
        for a in &m.attributes {
            match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                    ip = Some(IpAddr::V4(*v4))
                }
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                    ip = Some(IpAddr::V6(*v6))
                }
                NeighbourAttribute::LinkLayerAddress(l) => mac = mac_of(l),
                _ => {}
            }
        }
        Some(Neighbour {
            ifindex: m.header.ifindex,
            ip: ip?,
            mac: mac?,
        })
    }
}

impl FdbEntry {
    pub(crate) fn to_message(self, add: bool) -> RouteNetlinkMessage {
        let mut m = base(AddressFamily::Bridge, self.ifindex);
        m.header.flags = NeighbourFlags::Own;
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(self.mac.to_vec()));
        m.attributes
            .push(NeighbourAttribute::Destination(neighbour_address(self.dst)));
        if add {
            RouteNetlinkMessage::NewNeighbour(m)
        } else {
            RouteNetlinkMessage::DelNeighbour(m)
        }
    }

    /// A unicast FDB entry with an IPv4 or IPv6 destination; `None` for anything else (the
    /// all-zero default entry, the device's own address).
    pub(crate) fn from_message(m: &NeighbourMessage) -> Option<FdbEntry> {
        if m.header.family != AddressFamily::Bridge {
            return None;
        }
        let mut dst = None;
        let mut mac = None;
        for a in &m.attributes {
            match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                    dst = Some(IpAddr::V4(*v4))
                }
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                    dst = Some(IpAddr::V6(*v6))
                }
                NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
                    dst = <[u8; 4]>::try_from(b.as_slice())
                        .map(|a| IpAddr::V4(Ipv4Addr::from(a)))
                        .or_else(|_| {
                            <[u8; 16]>::try_from(b.as_slice())
                                .map(|a| IpAddr::V6(Ipv6Addr::from(a)))
                        })
                        .ok()
                }
                NeighbourAttribute::LinkLayerAddress(l) => mac = mac_of(l),
                _ => {}
            }
        }
        let mac = mac?;
        if mac == [0; 6] {
            return None;
        }
        Some(FdbEntry {
            ifindex: m.header.ifindex,
            mac,
            dst: dst?,
        })
    }
}

fn mac_of(l: &[u8]) -> Option<Mac> {
    <[u8; 6]>::try_from(l).ok()
}

/// A dump of one neighbour table: ARP (`Inet`), NDP (`Inet6`) or the bridge FDB (`Bridge`).
pub(crate) fn dump_request(family: AddressFamily) -> RouteNetlinkMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = family;
    RouteNetlinkMessage::GetNeighbour(m)
}
