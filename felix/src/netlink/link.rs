//! Links and their addresses: what felix reads ([`Link`]) and the messages that create veth,
//! VXLAN and IPIP devices, set MTU, state and MAC, and add or remove addresses.

use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{LinkIpIp, LinkUnspec, LinkVeth, LinkVxlan, LinkWireguard};

/// A 48-bit Ethernet address.
pub type Mac = [u8; 6];

/// A network interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `IFLA_INFO_KIND` ("veth", "vxlan", "ipip", "bridge"...), if any.
    pub kind: Option<String>,
    pub mtu: u32,
    /// Administratively up (IFF_UP).
    pub up: bool,
    pub mac: Option<Mac>,
    /// `IFLA_IFALIAS` (`ip link set NAME alias TEXT`), if set.
    pub alias: Option<String>,
}

impl Link {
    pub(crate) fn from_message(msg: &LinkMessage) -> Option<Link> {
        let mut name = None;
        let mut mtu = 0;
        let mut kind = None;
        let mut mac = None;
        let mut alias = None;
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => name = Some(n.clone()),
                LinkAttribute::IfAlias(a) => alias = Some(a.clone()),
                LinkAttribute::Mtu(m) => mtu = *m,
                LinkAttribute::Address(a) if a.len() == 6 => {
                    let mut m = [0u8; 6];
                    m.copy_from_slice(a);
                    mac = Some(m);
                }
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        if let LinkInfo::Kind(k) = info {
                            kind = Some(k.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        Some(Link {
            index: msg.header.index,
            name: name?,
            kind,
            mtu,
            up: msg.header.flags.contains(LinkFlags::Up),
            mac,
            alias,
        })
    }
}

/// What the VXLAN device looks like (`ip link add NAME type vxlan id VNI dstport PORT local
/// LOCAL nolearning`); an IPv6 `local` makes an IPv6 device (`vxlan-v6.margay`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSpec {
    pub name: String,
    pub vni: u32,
    pub port: u16,
    pub local: IpAddr,
    pub mac: Option<Mac>,
    pub mtu: Option<u32>,
}

/// A VXLAN link's VNI and UDP port (`ip -d link show`), from its link info.
pub(crate) fn vxlan_id_port(msg: &LinkMessage) -> Option<(u32, u16)> {
    use netlink_packet_route::link::InfoVxlan;
    let (mut id, mut port) = (None, None);
    for attr in &msg.attributes {
        let LinkAttribute::LinkInfo(infos) = attr else {
            continue;
        };
        for info in infos {
            if let LinkInfo::Data(InfoData::Vxlan(items)) = info {
                for item in items {
                    match item {
                        InfoVxlan::Id(v) => id = Some(*v),
                        InfoVxlan::Port(p) => port = Some(*p),
                        _ => {}
                    }
                }
            }
        }
    }
    Some((id?, port?))
}

pub(crate) fn dump_request() -> RouteNetlinkMessage {
    RouteNetlinkMessage::GetLink(LinkMessage::default())
}

/// `RTM_GETLINK` of one link by name (`ip link show NAME`).
pub(crate) fn get_by_name(name: &str) -> RouteNetlinkMessage {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.to_string()));
    RouteNetlinkMessage::GetLink(m)
}

pub(crate) fn veth(name: &str, peer: &str) -> RouteNetlinkMessage {
    RouteNetlinkMessage::NewLink(LinkVeth::new(name, peer).build())
}

/// A veth pair whose host side `name` stays here (with `mac` and `mtu`) and whose peer `peer`
/// is created directly in the namespace of `peer_netns_fd` with the same MTU
/// (`ip link add NAME mtu M address MAC type veth peer name PEER mtu M netns NS`).
pub(crate) fn veth_into_netns(
    name: &str,
    mac: Mac,
    mtu: u32,
    peer: &str,
    peer_netns_fd: i32,
) -> RouteNetlinkMessage {
    let peer_msg = LinkUnspec::new_with_name(peer)
        .mtu(mtu)
        .setns_by_fd(peer_netns_fd)
        .build();
    let msg = LinkVeth::new(name, peer)
        .mtu(mtu)
        .address(mac.to_vec())
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
        .build();
    RouteNetlinkMessage::NewLink(msg)
}

pub(crate) fn vxlan(spec: &VxlanSpec) -> RouteNetlinkMessage {
    let b = LinkVxlan::new(&spec.name, spec.vni).port(spec.port);
    let mut b = match spec.local {
        IpAddr::V4(a) => b.local(a),
        IpAddr::V6(a) => b.local6(a),
    }
    .learning(false);
    if let Some(mac) = spec.mac {
        b = b.address(mac.to_vec());
    }
    if let Some(mtu) = spec.mtu {
        b = b.mtu(mtu);
    }
    RouteNetlinkMessage::NewLink(b.build())
}

pub(crate) fn ipip(name: &str) -> RouteNetlinkMessage {
    RouteNetlinkMessage::NewLink(LinkIpIp::new(name).build())
}

pub(crate) fn wireguard(name: &str) -> RouteNetlinkMessage {
    RouteNetlinkMessage::NewLink(LinkWireguard::new(name).build())
}

pub(crate) fn delete(index: u32) -> RouteNetlinkMessage {
    RouteNetlinkMessage::DelLink(LinkUnspec::new_with_index(index).build())
}

/// Sets state, MTU and MAC of link `index` (each only when given).
pub(crate) fn set(
    index: u32,
    up: Option<bool>,
    mtu: Option<u32>,
    mac: Option<Mac>,
) -> RouteNetlinkMessage {
    let mut b = LinkUnspec::new_with_index(index);
    match up {
        Some(true) => b = b.up(),
        Some(false) => b = b.down(),
        None => {}
    }
    if let Some(mtu) = mtu {
        b = b.mtu(mtu);
    }
    if let Some(mac) = mac {
        b = b.address(mac.to_vec());
    }
    RouteNetlinkMessage::SetLink(b.build())
}

/// Sets the alias of link `index` (`ip link set dev NAME alias TEXT`).
pub(crate) fn set_alias(index: u32, alias: &str) -> RouteNetlinkMessage {
    let mut msg = LinkUnspec::new_with_index(index).build();
    msg.attributes
        .push(LinkAttribute::IfAlias(alias.to_string()));
    RouteNetlinkMessage::SetLink(msg)
}

/// RTM_NEWADDR / RTM_DELADDR for `addr` on link `index` (IPv4: local = address).
pub(crate) fn address(index: u32, addr: IpNet, add: bool) -> RouteNetlinkMessage {
    let mut msg = AddressMessage::default();
    msg.header.index = index;
    msg.header.prefix_len = addr.prefix_len();
    msg.header.family = match addr {
        IpNet::V4(_) => AddressFamily::Inet,
        IpNet::V6(_) => AddressFamily::Inet6,
    };
    let ip = addr.addr();
    if ip.is_ipv4() {
        msg.attributes.push(AddressAttribute::Local(ip));
    }
    msg.attributes.push(AddressAttribute::Address(ip));
    if add {
        RouteNetlinkMessage::NewAddress(msg)
    } else {
        RouteNetlinkMessage::DelAddress(msg)
    }
}

pub(crate) fn address_dump_request() -> RouteNetlinkMessage {
    RouteNetlinkMessage::GetAddress(AddressMessage::default())
}

/// Reads (link index, address) from an RTM_NEWADDR message.
pub(crate) fn address_of(msg: &AddressMessage) -> Option<(u32, IpNet)> {
    let ip = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    let ip = ip.or_else(|| {
        msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })?;
    Some((
        msg.header.index,
        IpNet::new(ip, msg.header.prefix_len).ok()?,
    ))
}
