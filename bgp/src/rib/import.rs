//! Checks on receipt: what a path must pass before it enters the Adj-RIB-In, and the form its
//! attributes are stored in (RFC 4271 §9.1, RFC 4456 §8).

use super::decision::DEFAULT_LOCAL_PREF;
use super::{LocalConfig, PeerInfo};
use crate::wire::{Family, MpNextHop, PathAttributes};
use std::net::Ipv4Addr;
use thiserror::Error;

/// Why a received path was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ImportError {
    /// RFC 4271 §9.1.2: our AS already appears in the AS_PATH of an external route (more
    /// often than the peer's `allow-own-as` permits).
    #[error("AS_PATH contains our AS {0}")]
    AsLoop(u32),
    /// RFC 4456 §8: the route was originated by this speaker.
    #[error("ORIGINATOR_ID {0} is our router id")]
    OriginatorIsSelf(Ipv4Addr),
    /// RFC 4456 §8: the route already went through our cluster.
    #[error("CLUSTER_LIST contains our cluster id {0}")]
    ClusterLoop(Ipv4Addr),
    /// No usable next hop for the family (NEXT_HOP for IPv4, MP_REACH_NLRI for IPv6).
    #[error("no next hop for {0}")]
    MissingNextHop(Family),
    /// RFC 4271 §6.3 (kept by RFC 7606 §7.3): a next hop that is the receiving speaker's own
    /// address is semantically incorrect; the route is ignored (it would loop back here).
    #[error("NEXT_HOP {0} is our own address")]
    NextHopIsSelf(std::net::IpAddr),
}

/// Checks a path received from `peer` and returns the attributes to store for it:
/// - eBGP: LOCAL_PREF is ignored and set to 100; ORIGINATOR_ID and CLUSTER_LIST (meaningful
///   inside one AS only) are dropped;
/// - iBGP: a missing LOCAL_PREF becomes 100;
/// - the NEXT_HOP attribute is kept for IPv4 paths only, so equal IPv6 paths intern once.
pub fn import(
    local: &LocalConfig,
    peer: &PeerInfo,
    received: &PathAttributes,
    family: Family,
    next_hop: Option<MpNextHop>,
) -> Result<(PathAttributes, MpNextHop), ImportError> {
    let ebgp = peer.asn != peer.local_asn;
    if ebgp && received.as_path.count(peer.local_asn) > usize::from(peer.allow_own_as) {
        return Err(ImportError::AsLoop(peer.local_asn));
    }
    if !ebgp {
        if received.originator_id == Some(local.router_id) {
            return Err(ImportError::OriginatorIsSelf(local.router_id));
        }
        let cluster_id = local.effective_cluster_id();
        if received.cluster_list.contains(&cluster_id) {
            return Err(ImportError::ClusterLoop(cluster_id));
        }
    }
    let next_hop = match (family, next_hop) {
        (Family::Ipv4Unicast, Some(MpNextHop::V4(a))) => MpNextHop::V4(a),
        (Family::Ipv6Unicast, Some(nh @ MpNextHop::V6 { .. })) => nh,
        _ => return Err(ImportError::MissingNextHop(family)),
    };
    if next_hop.addr() == peer.local_address {
        return Err(ImportError::NextHopIsSelf(peer.local_address));
    }
    let mut attrs = received.clone();
    if ebgp {
        attrs.local_pref = Some(DEFAULT_LOCAL_PREF);
        attrs.originator_id = None;
        attrs.cluster_list.clear();
    } else if attrs.local_pref.is_none() {
        attrs.local_pref = Some(DEFAULT_LOCAL_PREF);
    }
    attrs.next_hop = match next_hop {
        MpNextHop::V4(a) => Some(a),
        MpNextHop::V6 { .. } => None,
    };
    Ok((attrs, next_hop))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{AsPath, AsSegment, Origin};
    use std::net::{IpAddr, Ipv6Addr};

    fn local() -> LocalConfig {
        LocalConfig {
            asn: 64500,
            router_id: Ipv4Addr::new(10, 0, 0, 1),
            cluster_id: Some(Ipv4Addr::new(10, 255, 0, 1)),
        }
    }

    fn peer(asn: u32) -> PeerInfo {
        PeerInfo::new(
            &local(),
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
            asn,
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            Ipv4Addr::new(10, 0, 0, 2),
            vec![Family::Ipv4Unicast, Family::Ipv6Unicast],
        )
    }

    fn attrs(path: &[u32]) -> PathAttributes {
        PathAttributes {
            origin: Some(Origin::Igp),
            as_path: AsPath {
                segments: vec![AsSegment::Sequence(path.to_vec())],
            },
            next_hop: Some(Ipv4Addr::new(10, 0, 0, 2)),
            ..PathAttributes::default()
        }
    }

    fn nh4() -> Option<MpNextHop> {
        Some(MpNextHop::V4(Ipv4Addr::new(10, 0, 0, 2)))
    }

    #[test]
    fn rejects_ebgp_route_with_our_as_in_path() {
        let r = import(
            &local(),
            &peer(65001),
            &attrs(&[65001, 64500, 7]),
            Family::Ipv4Unicast,
            nh4(),
        );
        assert_eq!(r, Err(ImportError::AsLoop(64500)));
    }

    #[test]
    fn the_loop_check_uses_the_as_presented_on_the_session() {
        let mut p = peer(65001);
        p.local_asn = 65010;
        let through_us = attrs(&[65001, 65010, 7]);
        assert_eq!(
            import(&local(), &p, &through_us, Family::Ipv4Unicast, nh4()),
            Err(ImportError::AsLoop(65010))
        );
        // Towards a neighbour in the presented AS the session is iBGP: LOCAL_PREF is kept.
        let mut ibgp = peer(65010);
        ibgp.local_asn = 65010;
        let mut a = attrs(&[7]);
        a.local_pref = Some(300);
        let (stored, _) = import(&local(), &ibgp, &a, Family::Ipv4Unicast, nh4()).unwrap();
        assert_eq!(stored.local_pref, Some(300));
    }

    #[test]
    fn allow_own_as_accepts_our_as_up_to_the_count() {
        let mut p = peer(65001);
        p.allow_own_as = 1;
        let once = attrs(&[65001, 64500, 7]);
        assert!(import(&local(), &p, &once, Family::Ipv4Unicast, nh4()).is_ok());
        let twice = attrs(&[65001, 64500, 64500, 7]);
        assert_eq!(
            import(&local(), &p, &twice, Family::Ipv4Unicast, nh4()),
            Err(ImportError::AsLoop(64500))
        );
        p.allow_own_as = 2;
        assert!(import(&local(), &p, &twice, Family::Ipv4Unicast, nh4()).is_ok());
    }

    #[test]
    fn ebgp_local_pref_is_replaced_by_default() {
        let mut a = attrs(&[65001]);
        a.local_pref = Some(900);
        let (stored, _) = import(&local(), &peer(65001), &a, Family::Ipv4Unicast, nh4()).unwrap();
        assert_eq!(stored.local_pref, Some(100));
    }

    #[test]
    fn ibgp_route_without_local_pref_gets_default() {
        let (stored, _) = import(
            &local(),
            &peer(64500),
            &attrs(&[65001]),
            Family::Ipv4Unicast,
            nh4(),
        )
        .unwrap();
        assert_eq!(stored.local_pref, Some(100));
        let mut a = attrs(&[65001]);
        a.local_pref = Some(250);
        let (stored, _) = import(&local(), &peer(64500), &a, Family::Ipv4Unicast, nh4()).unwrap();
        assert_eq!(stored.local_pref, Some(250));
    }

    #[test]
    fn drops_route_whose_originator_is_us() {
        let mut a = attrs(&[65001]);
        a.originator_id = Some(Ipv4Addr::new(10, 0, 0, 1));
        let r = import(&local(), &peer(64500), &a, Family::Ipv4Unicast, nh4());
        assert_eq!(
            r,
            Err(ImportError::OriginatorIsSelf(Ipv4Addr::new(10, 0, 0, 1)))
        );
    }

    #[test]
    fn drops_route_whose_cluster_list_holds_our_cluster() {
        let mut a = attrs(&[65001]);
        a.cluster_list = vec![Ipv4Addr::new(1, 2, 3, 4), Ipv4Addr::new(10, 255, 0, 1)];
        let r = import(&local(), &peer(64500), &a, Family::Ipv4Unicast, nh4());
        assert_eq!(
            r,
            Err(ImportError::ClusterLoop(Ipv4Addr::new(10, 255, 0, 1)))
        );
    }

    #[test]
    fn cluster_id_defaults_to_router_id() {
        let mut l = local();
        l.cluster_id = None;
        let mut a = attrs(&[65001]);
        a.cluster_list = vec![Ipv4Addr::new(10, 0, 0, 1)];
        let r = import(&l, &peer(64500), &a, Family::Ipv4Unicast, nh4());
        assert_eq!(r, Err(ImportError::ClusterLoop(Ipv4Addr::new(10, 0, 0, 1))));
    }

    #[test]
    fn ipv6_next_hop_comes_from_mp_reach() {
        let nh = MpNextHop::V6 {
            global: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2),
            link_local: None,
        };
        let (stored, got) = import(
            &local(),
            &peer(64500),
            &attrs(&[1]),
            Family::Ipv6Unicast,
            Some(nh),
        )
        .unwrap();
        assert_eq!(got, nh);
        assert_eq!(stored.next_hop, None);
        let r = import(
            &local(),
            &peer(64500),
            &attrs(&[1]),
            Family::Ipv6Unicast,
            nh4(),
        );
        assert_eq!(r, Err(ImportError::MissingNextHop(Family::Ipv6Unicast)));
    }

    #[test]
    fn ignores_a_route_whose_next_hop_is_our_own_address() {
        let local = LocalConfig {
            asn: 64512,
            router_id: "10.0.0.1".parse().unwrap(),
            cluster_id: None,
        };
        let mut p = peer(65001);
        p.local_address = "10.0.0.1".parse().unwrap();
        let attrs = PathAttributes {
            as_path: crate::wire::AsPath {
                segments: vec![crate::wire::AsSegment::Sequence(vec![65001])],
            },
            ..Default::default()
        };
        let own = Some(MpNextHop::V4("10.0.0.1".parse().unwrap()));
        assert_eq!(
            import(&local, &p, &attrs, Family::Ipv4Unicast, own).unwrap_err(),
            ImportError::NextHopIsSelf("10.0.0.1".parse().unwrap())
        );
        let other = Some(MpNextHop::V4("10.0.0.7".parse().unwrap()));
        assert!(import(&local, &p, &attrs, Family::Ipv4Unicast, other).is_ok());
    }
}
