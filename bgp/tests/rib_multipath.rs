//! Multipath (ECMP) through the RIB facade: which paths share a route, the next hops a best
//! path carries to felix, and the changes recorded when the set grows or shrinks while the best
//! path stays.

mod rib_common;

use margay_bgp::rib::Rib;
use rib_common::*;
use std::net::IpAddr;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

/// Under `rib` so that `cargo test -p margay-bgp rib` selects these tests.
mod rib {
    use super::*;

    const BLOCK: &str = "10.100.3.0/26";

    /// Two ToRs (AS 65001 and 65002) announce a node's block with equal attributes.
    fn two_tors(max_paths: usize) -> Rib {
        let mut rib = Rib::new(local());
        rib.set_max_paths(max_paths);
        rib.peer_up(2, external(2, 65001));
        rib.peer_up(3, external(3, 65002));
        rib.apply_update(2, &announce4(attrs(&[65001, 64513], "10.0.0.2"), &[BLOCK]));
        rib.apply_update(3, &announce4(attrs(&[65002, 64513], "10.0.0.3"), &[BLOCK]));
        rib
    }

    #[test]
    fn equal_external_paths_make_one_multipath_route() {
        let rib = two_tors(2);
        let best = rib.best(&p4(BLOCK)).expect("a route");
        assert_eq!(best.next_hop, ip("10.0.0.2"), "lowest router id first");
        assert_eq!(best.multipath, vec![ip("10.0.0.2"), ip("10.0.0.3")]);
        let listed: Vec<_> = rib
            .iter_best(margay_bgp::wire::Family::Ipv4Unicast)
            .collect();
        assert_eq!(listed[0].multipath.len(), 2);
    }

    #[test]
    fn max_paths_one_keeps_the_best_path_only() {
        let rib = two_tors(1);
        assert!(rib.best(&p4(BLOCK)).expect("a route").multipath.is_empty());
    }

    #[test]
    fn max_paths_caps_the_set_in_tie_break_order() {
        let mut rib = two_tors(2);
        rib.peer_up(4, external(4, 65003));
        rib.apply_update(4, &announce4(attrs(&[65003, 64513], "10.0.0.4"), &[BLOCK]));
        let best = rib.best(&p4(BLOCK)).expect("a route");
        assert_eq!(best.multipath, vec![ip("10.0.0.2"), ip("10.0.0.3")]);
        rib.set_max_paths(8);
        // Takes effect as the prefix changes; a re-announcement is a change.
        rib.apply_update(4, &announce4(attrs(&[65003, 64513], "10.0.0.4"), &[BLOCK]));
        let best = rib.best(&p4(BLOCK)).expect("a route");
        assert_eq!(best.multipath.len(), 3);
    }

    #[test]
    fn a_longer_as_path_does_not_share() {
        let mut rib = Rib::new(local());
        rib.set_max_paths(2);
        rib.peer_up(2, external(2, 65001));
        rib.peer_up(3, external(3, 65002));
        rib.apply_update(2, &announce4(attrs(&[65001, 64513], "10.0.0.2"), &[BLOCK]));
        rib.apply_update(
            3,
            &announce4(attrs(&[65002, 65009, 64513], "10.0.0.3"), &[BLOCK]),
        );
        assert!(rib.best(&p4(BLOCK)).expect("a route").multipath.is_empty());
    }

    #[test]
    fn ibgp_paths_share_too() {
        let mut rib = Rib::new(local());
        rib.set_max_paths(2);
        rib.peer_up(2, ibgp(2));
        rib.peer_up(3, ibgp(3));
        rib.apply_update(2, &announce4(attrs(&[], "10.0.0.2"), &["10.96.0.0/12"]));
        rib.apply_update(3, &announce4(attrs(&[], "10.0.0.3"), &["10.96.0.0/12"]));
        let best = rib.best(&p4("10.96.0.0/12")).expect("a route");
        assert_eq!(best.multipath, vec![ip("10.0.0.2"), ip("10.0.0.3")]);
    }

    #[test]
    fn the_same_next_hop_twice_is_no_multipath() {
        let mut rib = Rib::new(local());
        rib.set_max_paths(2);
        rib.peer_up(2, ibgp(2));
        rib.peer_up(3, ibgp(3));
        rib.apply_update(2, &announce4(attrs(&[], "10.0.0.9"), &[BLOCK]));
        rib.apply_update(3, &announce4(attrs(&[], "10.0.0.9"), &[BLOCK]));
        assert!(rib.best(&p4(BLOCK)).expect("a route").multipath.is_empty());
    }

    #[test]
    fn losing_the_second_path_is_a_change_with_the_best_path_kept() {
        let mut rib = two_tors(2);
        let changes = rib.take_best_changes();
        assert_eq!(
            changes
                .last()
                .and_then(|c| c.route.clone())
                .map(|r| r.multipath.len()),
            Some(2)
        );
        // The path that is not the best goes: peers are sent nothing, felix gets the route
        // with one next hop.
        let exports = rib.peer_down(3);
        assert!(
            exports
                .iter()
                .all(|e| e.announce.is_empty() && e.withdraw.is_empty()),
            "{exports:?}"
        );
        let changes = rib.take_best_changes();
        assert_eq!(changes.len(), 1, "{changes:?}");
        let route = changes[0].route.clone().expect("still routed");
        assert_eq!(route.next_hop, ip("10.0.0.2"));
        assert!(route.multipath.is_empty());
        // It comes back: the set is whole again.
        rib.peer_up(3, external(3, 65002));
        rib.apply_update(3, &announce4(attrs(&[65002, 64513], "10.0.0.3"), &[BLOCK]));
        let changes = rib.take_best_changes();
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(
            changes[0].route.as_ref().map(|r| r.multipath.len()),
            Some(2)
        );
    }

    #[test]
    fn losing_the_best_path_leaves_the_other_alone() {
        let mut rib = two_tors(2);
        rib.take_best_changes();
        rib.peer_down(2);
        let changes = rib.take_best_changes();
        assert_eq!(changes.len(), 1, "{changes:?}");
        let route = changes[0].route.clone().expect("still routed");
        assert_eq!(route.next_hop, ip("10.0.0.3"));
        assert!(route.multipath.is_empty());
    }

    #[test]
    fn changing_max_paths_records_the_prefixes_it_changes() {
        let mut rib = two_tors(2);
        rib.apply_update(
            2,
            &announce4(attrs(&[65001, 64513], "10.0.0.2"), &["10.100.9.0/26"]),
        );
        rib.take_best_changes();
        rib.set_max_paths(1);
        let changes = rib.take_best_changes();
        assert_eq!(
            changes.len(),
            1,
            "only the prefix with two paths: {changes:?}"
        );
        assert_eq!(changes[0].prefix, p4(BLOCK));
        assert!(
            changes[0]
                .route
                .as_ref()
                .is_some_and(|r| r.multipath.is_empty())
        );
        rib.set_max_paths(2);
        let changes = rib.take_best_changes();
        assert_eq!(
            changes[0].route.as_ref().map(|r| r.multipath.len()),
            Some(2)
        );
    }
}
