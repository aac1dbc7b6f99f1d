//! Neighbour (ARP) and bridge FDB entries: the two tables a VXLAN device needs per remote VTEP
//! (`ip neigh replace VTEP_IP lladdr MAC dev vxlan.margay nud permanent` and
//! `bridge fdb replace MAC dev vxlan.margay dst NODE_IP self permanent`).

use std::net::Ipv4Addr;

use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::RouteType;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::link::Mac;

/// A permanent ARP entry on a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Neighbour {
    pub ifindex: u32,
    pub ip: Ipv4Addr,
    pub mac: Mac,
}

/// A forwarding-database entry of a VXLAN device: frames to `mac` go to VTEP `dst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FdbEntry {
    pub ifindex: u32,
    pub mac: Mac,
    pub dst: Ipv4Addr,
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
        let mut m = base(AddressFamily::Inet, self.ifindex);
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                self.ip,
            )));
        if add {
            m.attributes
                .push(NeighbourAttribute::LinkLayerAddress(self.mac.to_vec()));
            RouteNetlinkMessage::NewNeighbour(m)
        } else {
            RouteNetlinkMessage::DelNeighbour(m)
        }
    }

    /// A permanent IPv4 neighbour from a dump; `None` for learned or incomplete entries.
    pub(crate) fn from_message(m: &NeighbourMessage) -> Option<Neighbour> {
        if m.header.family != AddressFamily::Inet || m.header.state != NeighbourState::Permanent {
            return None;
        }
        let mut ip = None;
        let mut mac = None;
        for a in &m.attributes {
            match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => ip = Some(*v4),
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
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                self.dst,
            )));
        if add {
            RouteNetlinkMessage::NewNeighbour(m)
        } else {
            RouteNetlinkMessage::DelNeighbour(m)
        }
    }

    /// A unicast FDB entry with an IPv4 destination; `None` for anything else (the all-zero
    /// default entry, the device's own address).
    pub(crate) fn from_message(m: &NeighbourMessage) -> Option<FdbEntry> {
        if m.header.family != AddressFamily::Bridge {
            return None;
        }
        let mut dst = None;
        let mut mac = None;
        for a in &m.attributes {
            match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => dst = Some(*v4),
                NeighbourAttribute::Destination(NeighbourAddress::Other(b)) if b.len() == 4 => {
                    dst = Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
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

pub(crate) fn dump_request(bridge: bool) -> RouteNetlinkMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = if bridge {
        AddressFamily::Bridge
    } else {
        AddressFamily::Inet
    };
    RouteNetlinkMessage::GetNeighbour(m)
}
