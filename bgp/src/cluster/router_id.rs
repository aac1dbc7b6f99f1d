//! Where this node's BGP identifier comes from, as calico-node chooses it (`CALICO_ROUTER_ID`):
//! an IPv4 address given outright, `hash` (four bytes of SHA-256 of the node name, the first
//! kept out of the multicast and reserved range), or by default the node's IPv4 BGP address.
//!
//! The identifier is four octets even in MP-BGP, so an IPv6-only node needs one of the first
//! two. Calico renders no router id for such a node and BIRD refuses the configuration; margay
//! takes the hash instead and says so once, so an IPv6-only node peers without extra setup and
//! keeps the same identifier across restarts.

use std::net::Ipv4Addr;

/// How the router id is chosen (`--router-id`, `CALICO_ROUTER_ID`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RouterIdSource {
    /// The node's IPv4 BGP address (the hash when it has none).
    #[default]
    NodeIp,
    /// Derived from the node's name.
    Hash,
    /// This address.
    Given(Ipv4Addr),
}

/// A `--router-id` value that is neither an IPv4 address nor `hash`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("router id '{0}' is not an IPv4 address or 'hash'")]
pub struct BadRouterId(pub String);

impl std::str::FromStr for RouterIdSource {
    type Err = BadRouterId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "" => Ok(RouterIdSource::NodeIp),
            "hash" => Ok(RouterIdSource::Hash),
            v => match v.parse::<Ipv4Addr>() {
                Ok(a) if !a.is_unspecified() => Ok(RouterIdSource::Given(a)),
                _ => Err(BadRouterId(v.to_string())),
            },
        }
    }
}

/// What [`choose`] decided, and whether it fell back to the hash for want of an IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chosen {
    pub id: Ipv4Addr,
    pub fell_back: bool,
}

/// The router id of node `name` whose IPv4 BGP address is `ipv4`.
pub fn choose(source: RouterIdSource, name: &str, ipv4: Option<Ipv4Addr>) -> Chosen {
    match (source, ipv4) {
        (RouterIdSource::Given(a), _) => Chosen {
            id: a,
            fell_back: false,
        },
        (RouterIdSource::NodeIp, Some(a)) => Chosen {
            id: a,
            fell_back: false,
        },
        (RouterIdSource::Hash, _) => Chosen {
            id: hash_of(name),
            fell_back: false,
        },
        (RouterIdSource::NodeIp, None) => Chosen {
            id: hash_of(name),
            fell_back: true,
        },
    }
}

/// Four bytes of SHA-256 of `name`; a first octet above 223 (multicast, reserved) is lowered
/// by 32, as calico-node does, so the same name gives the same id under both.
pub fn hash_of(name: &str) -> Ipv4Addr {
    let d = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    let b = d.as_ref();
    let first = if b[0] > 223 { b[0] - 32 } else { b[0] };
    Ipv4Addr::new(first, b[1], b[2], b[3])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_the_first_four_bytes_of_sha256() {
        // `printf node1 | sha256sum` starts ca12f31b.
        assert_eq!(hash_of("node1"), Ipv4Addr::new(0xca, 0x12, 0xf3, 0x1b));
    }

    #[test]
    fn hash_keeps_out_of_multicast() {
        // `printf node16 | sha256sum` starts e8fbf5f4: 232 becomes 200.
        assert_eq!(hash_of("node16"), Ipv4Addr::new(200, 0xfb, 0xf5, 0xf4));
        for i in 0..2000 {
            assert!(hash_of(&format!("n{i}")).octets()[0] <= 223);
        }
    }

    #[test]
    fn ipv6_only_node_falls_back_to_the_hash() {
        let c = choose(RouterIdSource::NodeIp, "v6only", None);
        assert!(c.fell_back);
        assert_eq!(c.id, hash_of("v6only"));
        let a = Ipv4Addr::new(10, 0, 0, 1);
        assert_eq!(choose(RouterIdSource::NodeIp, "x", Some(a)).id, a);
        assert_eq!(
            choose(RouterIdSource::Given(a), "x", None),
            Chosen {
                id: a,
                fell_back: false
            }
        );
        assert_eq!(choose(RouterIdSource::Hash, "x", Some(a)).id, hash_of("x"));
    }

    #[test]
    fn parses_calico_router_id_values() {
        assert_eq!("hash".parse(), Ok(RouterIdSource::Hash));
        assert_eq!("".parse(), Ok(RouterIdSource::NodeIp));
        assert_eq!(
            "192.0.2.7".parse(),
            Ok(RouterIdSource::Given(Ipv4Addr::new(192, 0, 2, 7)))
        );
        assert!("fd00::1".parse::<RouterIdSource>().is_err());
        assert!("0.0.0.0".parse::<RouterIdSource>().is_err());
    }
}
