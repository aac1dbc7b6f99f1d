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
    equal_best(candidates, local_asn)
        .first()
        .copied()
        .unwrap_or(0)
}

/// The candidates that are as good as the best one through step e) of RFC 4271 §9.1.2.2, best
/// first, the rest in the order of the remaining tie breaks: the paths a multipath (ECMP)
/// route may use. `candidates` must not be empty.
///
/// What counts, as BIRD's `merge paths` (`bgp_rte_mergable`) counts it: being locally
/// originated, LOCAL_PREF, AS_PATH length, ORIGIN, MED (among routes from the same neighbour
/// AS), eBGP or iBGP, and the IGP cost to the next hop (equal for every next hop here). What
/// does not: f) the BGP Identifier (ORIGINATOR_ID), RFC 4456's CLUSTER_LIST length and g) the
/// peer address, the tie breaks that only pick one of equals; they order the set instead, so
/// its first element is exactly the path [`best_index`] picks. The neighbour AS need not be
/// the same (two ToRs of a rack in different ASes are the common case). A locally originated
/// best path has no peers to share with: the set is that path alone.
pub fn equal_best(candidates: &[Candidate<'_>], local_asn: u32) -> Vec<usize> {
    let c = candidates;
    let mut alive: Vec<usize> = (0..c.len()).collect();
    if c.len() <= 1 {
        return alive;
    }
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
    // f) lowest BGP Identifier (ORIGINATOR_ID when present, RFC 4456 §9), then RFC 4456 §9's
    // shortest CLUSTER_LIST, then g) lowest peer address: a total order, so sorting by the
    // three keys puts first the one path their elimination would keep.
    alive.sort_by_key(|&i| {
        (
            c[i].identifier(),
            c[i].attrs.cluster_list.len(),
            c[i].address,
        )
    });
    if alive.first().is_some_and(|&i| c[i].local) {
        alive.truncate(1);
    }
    alive
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

    fn ebgp(a: &PathAttributes, id: u8) -> Candidate<'_> {
        let mut x = cand(a, id);
        x.ebgp = true;
        x
    }

    #[test]
    fn equal_best_ignores_router_id_cluster_list_and_peer_address() {
        // Two ToRs in different ASes, equal through step e): both are in the set, the lower
        // router id first.
        let (a, b) = (attrs(&[65001, 64512]), attrs(&[65002, 64512]));
        let (mut x, mut y) = (cand(&a, 9), cand(&b, 3));
        x.ebgp = true;
        y.ebgp = true;
        assert_eq!(equal_best(&[x, y], LOCAL_AS), vec![1, 0]);
        assert_eq!(best_index(&[x, y], LOCAL_AS), 1);
        let mut c = attrs(&[65001, 64512]);
        c.cluster_list = vec![Ipv4Addr::new(7, 7, 7, 7)];
        let mut z = cand(&c, 1);
        z.ebgp = true;
        assert_eq!(equal_best(&[x, y, z], LOCAL_AS), vec![2, 1, 0]);
    }

    #[test]
    fn equal_best_counts_every_step_up_to_igp_cost() {
        let base = attrs(&[65001, 64512]);
        let longer = attrs(&[65002, 65003, 64512]);
        let mut pref = base.clone();
        pref.local_pref = Some(50);
        let mut origin = base.clone();
        origin.origin = Some(Origin::Incomplete);
        let mut med = base.clone();
        med.med = Some(7);
        // Each worse path falls out at its step; the best stays alone.
        for worse in [&longer, &pref, &origin, &med] {
            let set = equal_best(&[ebgp(&base, 5), ebgp(worse, 1)], LOCAL_AS);
            assert_eq!(set, vec![0], "{worse:?}");
        }
        // iBGP does not share with eBGP.
        let ibgp = cand(&base, 1);
        assert_eq!(equal_best(&[ebgp(&base, 5), ibgp], LOCAL_AS), vec![0]);
        // Two iBGP paths do (the mesh, reflected routes).
        assert_eq!(
            equal_best(&[cand(&base, 5), cand(&base, 1)], LOCAL_AS),
            vec![1, 0]
        );
    }

    #[test]
    fn equal_best_compares_med_only_within_a_neighbour_as() {
        let mut a = attrs(&[65001, 64512]);
        a.med = Some(100);
        let mut b = attrs(&[65002, 64512]);
        b.med = Some(5);
        let mut c = attrs(&[65002, 64512]);
        c.med = Some(6);
        let set = equal_best(&[cand(&a, 1), cand(&b, 2), cand(&c, 3)], LOCAL_AS);
        assert_eq!(
            set,
            vec![0, 1],
            "c loses to b on MED, a is not compared with them"
        );
    }

    #[test]
    fn local_best_shares_with_nothing() {
        let (a, b) = (attrs(&[]), attrs(&[]));
        let mut l1 = cand(&a, 1);
        l1.local = true;
        let mut l2 = cand(&b, 2);
        l2.local = true;
        assert_eq!(equal_best(&[cand(&a, 0), l1, l2], LOCAL_AS), vec![1]);
    }
}
