//! Helpers shared by the RIB integration tests: peers, UPDATEs, and what an export sent.
#![allow(dead_code)]

use margay_bgp::policy::Role;
use margay_bgp::rib::{Export, LocalConfig, NextHopMode, PeerId, PeerInfo};
use margay_bgp::wire::{
    AsPath, AsSegment, CodecContext, Family, MpNextHop, MpReach, Origin, PathAttributes, Prefix,
    Prefix4, Update,
};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

pub const LOCAL_AS: u32 = 64512;

pub fn local() -> LocalConfig {
    LocalConfig {
        asn: LOCAL_AS,
        router_id: Ipv4Addr::new(10, 0, 0, 1),
        cluster_id: None,
    }
}

/// A peer at 10.0.0.`n` with router id 10.0.0.`n`, speaking IPv4 and IPv6.
///
/// Its role is `cluster` whatever its AS: these suites test the RFC's export rules (transit
/// between eBGP peers, reflection), which Calico's default export policy lets through only for
/// the cluster's own routes. [`external`] gives a peer outside the cluster.
pub fn peer(n: u8, asn: u32, rr_client: bool) -> PeerInfo {
    let mut info = PeerInfo::new(
        &local(),
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, n)),
        asn,
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        Ipv4Addr::new(10, 0, 0, n),
        vec![Family::Ipv4Unicast, Family::Ipv6Unicast],
    );
    info.rr_client = rr_client;
    info.next_hop = NextHopMode::Auto;
    info.role = Role::Cluster;
    info.ctx = CodecContext {
        four_octet_as: true,
        extended_message: false,
        ibgp: asn == LOCAL_AS,
    };
    info
}

/// An eBGP peer outside the cluster (`role = "external"`).
pub fn external(n: u8, asn: u32) -> PeerInfo {
    let mut info = peer(n, asn, false);
    info.role = Role::External;
    info
}

pub fn ibgp(n: u8) -> PeerInfo {
    peer(n, LOCAL_AS, false)
}

pub fn client(n: u8) -> PeerInfo {
    peer(n, LOCAL_AS, true)
}

pub fn ebgp(n: u8, asn: u32) -> PeerInfo {
    peer(n, asn, false)
}

pub fn p4(s: &str) -> Prefix {
    s.parse().expect("test prefix")
}

pub fn v4(s: &str) -> Ipv4Addr {
    s.parse().expect("test address")
}

/// Attributes with ORIGIN IGP, the given AS_SEQUENCE and NEXT_HOP.
pub fn attrs(path: &[u32], next_hop: &str) -> PathAttributes {
    PathAttributes {
        origin: Some(Origin::Igp),
        as_path: AsPath {
            segments: if path.is_empty() {
                vec![]
            } else {
                vec![AsSegment::Sequence(path.to_vec())]
            },
        },
        next_hop: Some(v4(next_hop)),
        ..PathAttributes::default()
    }
}

pub fn announce4(attributes: PathAttributes, prefixes: &[&str]) -> Update {
    Update {
        attributes,
        nlri: prefixes
            .iter()
            .map(|p| p.parse::<Prefix4>().expect("test prefix"))
            .collect(),
        ..Update::default()
    }
}

pub fn announce6(attributes: PathAttributes, next_hop: MpNextHop, prefixes: &[&str]) -> Update {
    Update {
        attributes,
        mp_reach: Some(MpReach {
            family: Family::Ipv6Unicast,
            next_hop,
            nlri: prefixes.iter().map(|p| p4(p)).collect(),
        }),
        ..Update::default()
    }
}

pub fn withdraw4(prefixes: &[&str]) -> Update {
    Update {
        withdrawn: prefixes
            .iter()
            .map(|p| p.parse::<Prefix4>().expect("test prefix"))
            .collect(),
        ..Update::default()
    }
}

/// What `peer` is sent by `exports`: (prefix, attributes, next hop) per announced prefix.
pub fn announced_to(
    exports: &[Export],
    peer: PeerId,
) -> Vec<(Prefix, Arc<PathAttributes>, MpNextHop)> {
    let mut out = Vec::new();
    for e in exports.iter().filter(|e| e.peers.contains(&peer)) {
        for (a, nh, _, prefixes) in &e.announce {
            for p in prefixes {
                out.push((*p, Arc::clone(a), *nh));
            }
        }
    }
    out
}

/// The prefixes `exports` withdraw from `peer`.
pub fn withdrawn_from(exports: &[Export], peer: PeerId) -> Vec<Prefix> {
    exports
        .iter()
        .filter(|e| e.peers.contains(&peer))
        .flat_map(|e| e.withdraw.iter().flat_map(|(_, v)| v.iter().copied()))
        .collect()
}

/// The one attribute set `peer` is sent for `prefix`; panics unless exactly one.
pub fn only_announcement(
    exports: &[Export],
    peer: PeerId,
    prefix: &str,
) -> (Arc<PathAttributes>, MpNextHop) {
    let found: Vec<_> = announced_to(exports, peer)
        .into_iter()
        .filter(|(p, _, _)| *p == p4(prefix))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "peer {peer} announcements of {prefix}: {found:?}"
    );
    let (_, a, nh) = found.into_iter().next().expect("checked length");
    (a, nh)
}
