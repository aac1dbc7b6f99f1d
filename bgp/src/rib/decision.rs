//! The decision process: which of a prefix's paths is the best (RFC 4271 §9.1.2.2, with the
//! route reflection tie breaks of RFC 4456 §9).
//!
//! Written as the RFC describes it, by elimination: each step keeps the candidates that are
//! best for that step only. Comparing MEDs only among paths from the same neighbour AS is not a
//! total order, so a pairwise sort would be wrong; elimination is exact.

use crate::wire::{Origin, PathAttributes};
use std::net::{IpAddr, Ipv4Addr};

/// Local preference assumed when a path carries none.
pub const DEFAULT_LOCAL_PREF: u32 = 100;

/// What the decision process needs to know of one path.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub attrs: &'a PathAttributes,
    /// Originated by this speaker.
    pub local: bool,
    /// Learned over an external session.
    pub ebgp: bool,
    /// The BGP Identifier of the peer it came from (ours for a local path).
    pub router_id: Ipv4Addr,
    /// The peer's address (unspecified for a local path).
    pub address: IpAddr,
}

impl Candidate<'_> {
    fn local_pref(&self) -> u32 {
        self.attrs.local_pref.unwrap_or(DEFAULT_LOCAL_PREF)
    }

    /// ORIGIN, a missing one ranking last.
    fn origin(&self) -> u8 {
        self.attrs.origin.unwrap_or(Origin::Incomplete) as u8
    }

    /// A missing MED counts as 0 (RFC 4271 §9.1.2.2 c).
    fn med(&self) -> u32 {
        self.attrs.med.unwrap_or(0)
    }

    /// RFC 4271 §9.1.2.2 c: the AS the route entered ours from; our own AS when it has none.
    fn neighbor_as(&self, local_asn: u32) -> u32 {
        self.attrs.as_path.neighbor_as().unwrap_or(local_asn)
    }

    /// RFC 4456 §9: the ORIGINATOR_ID stands in for the peer's identifier when present.
    fn identifier(&self) -> Ipv4Addr {
        self.attrs.originator_id.unwrap_or(self.router_id)
    }
}

/// Keeps the candidates whose `key` is the smallest.
fn keep_min<K: Ord>(alive: &mut Vec<usize>, key: impl Fn(usize) -> K) {
    if let Some(min) = alive.iter().map(|&i| key(i)).min() {
        alive.retain(|&i| key(i) == min);
    }
}

/// Keeps the candidates for which `pred` holds, if any does.
fn prefer(alive: &mut Vec<usize>, pred: impl Fn(usize) -> bool) {
    if alive.iter().any(|&i| pred(i)) {
        alive.retain(|&i| pred(i));
    }
}

/// The index of the best candidate. `candidates` must not be empty.
pub fn best_index(candidates: &[Candidate<'_>], local_asn: u32) -> usize {
    if candidates.len() <= 1 {
        return 0;
    }
    let c = candidates;
    let mut alive: Vec<usize> = (0..c.len()).collect();
    // Locally originated routes first, before any attribute is compared: a route received from
    // a peer never takes the place of one this node originates (its workloads' blocks), whatever
    // LOCAL_PREF or AS_PATH the peer sends (import protection).
    prefer(&mut alive, |i| c[i].local);
    // §9.1.1: highest degree of preference (LOCAL_PREF).
    keep_min(&mut alive, |i| std::cmp::Reverse(c[i].local_pref()));
    // a) shortest AS_PATH.
    keep_min(&mut alive, |i| c[i].attrs.as_path.len());
    // b) lowest ORIGIN.
    keep_min(&mut alive, |i| c[i].origin());
    // c) lowest MED among routes from the same neighbour AS.
    let before = alive.clone();
    alive.retain(|&i| {
        let asn = c[i].neighbor_as(local_asn);
        !before
            .iter()
            .any(|&j| c[j].neighbor_as(local_asn) == asn && c[j].med() < c[i].med())
    });
    // d) eBGP over iBGP.
    prefer(&mut alive, |i| c[i].ebgp);
    // e) lowest IGP cost to the next hop: every next hop is equally near here.
    // f) lowest BGP Identifier (ORIGINATOR_ID when present, RFC 4456 §9).
    keep_min(&mut alive, |i| c[i].identifier());
    // RFC 4456 §9: shortest CLUSTER_LIST.
    keep_min(&mut alive, |i| c[i].attrs.cluster_list.len());
    // g) lowest peer address.
    keep_min(&mut alive, |i| c[i].address);
    alive.first().copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{AsPath, AsSegment};

    const LOCAL_AS: u32 = 64500;

    fn attrs(path: &[u32]) -> PathAttributes {
        PathAttributes {
            origin: Some(Origin::Igp),
            as_path: AsPath {
                segments: if path.is_empty() {
                    vec![]
                } else {
                    vec![AsSegment::Sequence(path.to_vec())]
                },
            },
            local_pref: Some(100),
            ..PathAttributes::default()
        }
    }

    fn cand(attrs: &PathAttributes, id: u8) -> Candidate<'_> {
        Candidate {
            attrs,
            local: false,
            ebgp: false,
            router_id: Ipv4Addr::new(10, 0, 0, id),
            address: IpAddr::V4(Ipv4Addr::new(192, 0, 2, id)),
        }
    }

    /// Checks that `better` wins against `worse` whichever comes first.
    fn assert_wins(better: Candidate<'_>, worse: Candidate<'_>) {
        assert_eq!(best_index(&[better, worse], LOCAL_AS), 0);
        assert_eq!(best_index(&[worse, better], LOCAL_AS), 1);
    }

    #[test]
    fn prefers_locally_originated() {
        let (a, b) = (attrs(&[]), attrs(&[]));
        let mut b2 = b.clone();
        b2.local_pref = Some(500);
        let mut local = cand(&a, 9);
        local.local = true;
        assert_wins(local, cand(&b2, 1));
    }

    #[test]
    fn prefers_highest_local_pref() {
        let mut a = attrs(&[1, 2, 3]);
        a.local_pref = Some(200);
        let b = attrs(&[1]);
        assert_wins(cand(&a, 9), cand(&b, 1));
    }

    #[test]
    fn missing_local_pref_counts_as_default() {
        let mut a = attrs(&[1]);
        a.local_pref = None;
        let mut b = attrs(&[1]);
        b.local_pref = Some(99);
        assert_wins(cand(&a, 9), cand(&b, 1));
    }

    #[test]
    fn prefers_shortest_as_path() {
        let a = attrs(&[1]);
        let b = attrs(&[1, 2]);
        assert_wins(cand(&a, 9), cand(&b, 1));
    }

    #[test]
    fn as_set_counts_as_one() {
        let mut a = attrs(&[1]);
        a.as_path.segments.push(AsSegment::Set(vec![5, 6, 7]));
        let b = attrs(&[1, 2, 3]);
        assert_wins(cand(&a, 9), cand(&b, 1));
    }

    #[test]
    fn prefers_lowest_origin() {
        let a = attrs(&[1]);
        let mut b = attrs(&[1]);
        b.origin = Some(Origin::Egp);
        assert_wins(cand(&a, 9), cand(&b, 1));
    }

    #[test]
    fn prefers_lowest_med_from_same_neighbour_as() {
        let mut a = attrs(&[1, 2]);
        a.med = Some(10);
        let mut b = attrs(&[1, 3]);
        b.med = Some(20);
        assert_wins(cand(&a, 9), cand(&b, 1));
    }

    #[test]
    fn missing_med_counts_as_zero() {
        let a = attrs(&[1]);
        let mut b = attrs(&[1]);
        b.med = Some(1);
        assert_wins(cand(&a, 9), cand(&b, 1));
    }

    #[test]
    fn ignores_med_between_different_neighbour_as() {
        // Different neighbour AS: MED is not compared, the lower identifier decides.
        let mut a = attrs(&[1]);
        a.med = Some(500);
        let mut b = attrs(&[2]);
        b.med = Some(5);
        assert_wins(cand(&a, 1), cand(&b, 9));
    }

    #[test]
    fn med_elimination_is_per_neighbour_as() {
        // x (AS 1, MED 0) eliminates y (AS 1, MED 10); z (AS 2, MED 100) survives and wins
        // on identifier, although a pairwise "y beats z on id" would not see it.
        let x = attrs(&[1]);
        let mut y = attrs(&[1]);
        y.med = Some(10);
        let mut z = attrs(&[2]);
        z.med = Some(100);
        let cands = [cand(&x, 5), cand(&y, 1), cand(&z, 3)];
        assert_eq!(best_index(&cands, LOCAL_AS), 2);
    }

    #[test]
    fn prefers_ebgp_over_ibgp() {
        let (a, b) = (attrs(&[1]), attrs(&[1]));
        let mut e = cand(&a, 9);
        e.ebgp = true;
        assert_wins(e, cand(&b, 1));
    }

    #[test]
    fn prefers_lowest_router_id() {
        let (a, b) = (attrs(&[1]), attrs(&[1]));
        let mut x = cand(&a, 1);
        x.address = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 200));
        assert_wins(x, cand(&b, 2));
    }

    #[test]
    fn originator_id_replaces_router_id() {
        let mut a = attrs(&[1]);
        a.originator_id = Some(Ipv4Addr::new(1, 1, 1, 1));
        let b = attrs(&[1]);
        // a's peer has the higher router id, but its ORIGINATOR_ID is lower.
        assert_wins(cand(&a, 9), cand(&b, 2));
    }

    #[test]
    fn prefers_shortest_cluster_list() {
        let mut a = attrs(&[1]);
        a.originator_id = Some(Ipv4Addr::new(1, 1, 1, 1));
        a.cluster_list = vec![Ipv4Addr::new(7, 7, 7, 7)];
        let mut b = a.clone();
        b.cluster_list.push(Ipv4Addr::new(8, 8, 8, 8));
        assert_wins(cand(&a, 9), cand(&b, 1));
    }

    #[test]
    fn prefers_lowest_peer_address() {
        let (a, b) = (attrs(&[1]), attrs(&[1]));
        let mut x = cand(&a, 5);
        let mut y = cand(&b, 5);
        x.address = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        y.address = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
        assert_wins(x, y);
    }
}
