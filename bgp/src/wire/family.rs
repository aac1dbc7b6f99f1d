//! Address families (AFI/SAFI, RFC 4760) and the prefixes that belong to them.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Address Family Identifier (IANA).
pub const AFI_IPV4: u16 = 1;
/// Address Family Identifier (IANA).
pub const AFI_IPV6: u16 = 2;
/// Subsequent Address Family Identifier: unicast.
pub const SAFI_UNICAST: u8 = 1;

/// The address families margay routes: IPv4 and IPv6 unicast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    Ipv4Unicast,
    Ipv6Unicast,
}

impl Family {
    /// The AFI/SAFI pair on the wire.
    pub fn afi_safi(self) -> (u16, u8) {
        match self {
            Family::Ipv4Unicast => (AFI_IPV4, SAFI_UNICAST),
            Family::Ipv6Unicast => (AFI_IPV6, SAFI_UNICAST),
        }
    }

    /// The family for an AFI/SAFI pair, if margay routes it.
    pub fn from_afi_safi(afi: u16, safi: u8) -> Option<Family> {
        match (afi, safi) {
            (AFI_IPV4, SAFI_UNICAST) => Some(Family::Ipv4Unicast),
            (AFI_IPV6, SAFI_UNICAST) => Some(Family::Ipv6Unicast),
            _ => None,
        }
    }

    /// The family a prefix belongs to.
    pub fn of(prefix: &IpNet) -> Family {
        match prefix {
            IpNet::V4(_) => Family::Ipv4Unicast,
            IpNet::V6(_) => Family::Ipv6Unicast,
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Family::Ipv4Unicast => "ipv4-unicast",
            Family::Ipv6Unicast => "ipv6-unicast",
        })
    }
}

/// A prefix of either family. `ipnet`'s types keep host bits as given; the codec always yields
/// prefixes with host bits cleared (`trunc()`), so equal routes compare equal.
pub type Prefix = IpNet;
/// An IPv4 prefix.
pub type Prefix4 = Ipv4Net;
/// An IPv6 prefix.
pub type Prefix6 = Ipv6Net;
