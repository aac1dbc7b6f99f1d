//! Import through the RIB facade: checks on receipt, counters, treat-as-withdraw, families,
//! the decision process over real paths, and interning refcounts.

mod rib_common;

use margay_bgp::rib::Rib;
use margay_bgp::wire::{Family, MpNextHop};
use rib_common::*;
use std::net::Ipv6Addr;

/// Under `rib` so that `cargo test -p margay-bgp rib` selects these tests.
mod rib {
    use super::*;

    #[test]
    fn as_loop_route_counts_as_received_not_accepted() {
        let mut rib = Rib::new(local());
        rib.peer_up(9, ebgp(9, 65009));
        rib.peer_up(2, ibgp(2));
        let ex = rib.apply_update(
            9,
            &announce4(attrs(&[65009, LOCAL_AS], "10.0.0.9"), &["192.0.2.0/24"]),
        );
        assert!(ex.is_empty());
        assert!(rib.best(&p4("192.0.2.0/24")).is_none());
        let c = rib.counters(9);
        assert_eq!((c.received, c.accepted), (1, 0));
        // Withdrawing it forgets it.
        rib.apply_update(9, &withdraw4(&["192.0.2.0/24"]));
        assert_eq!(rib.counters(9).received, 0);
    }

    /// What `max-prefixes` counts: per family, accepted or not, down again on withdrawal.
    #[test]
    fn counts_received_prefixes_per_family_for_prefix_limits() {
        let mut rib = Rib::new(local());
        rib.peer_up(9, ebgp(9, 65009));
        rib.apply_update(
            9,
            &announce4(
                attrs(&[65009], "10.0.0.9"),
                &["192.0.2.0/24", "198.51.100.0/24"],
            ),
        );
        rib.apply_update(
            9,
            &announce4(attrs(&[65009, LOCAL_AS], "10.0.0.9"), &["203.0.113.0/24"]),
        );
        let nh = MpNextHop::V6 {
            global: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 9),
            link_local: None,
        };
        rib.apply_update(
            9,
            &announce6(attrs(&[65009], "10.0.0.9"), nh, &["fd00:244::/122"]),
        );
        assert_eq!(rib.received_in(9, Family::Ipv4Unicast), 3);
        assert_eq!(rib.received_in(9, Family::Ipv6Unicast), 1);
        rib.apply_update(9, &withdraw4(&["192.0.2.0/24", "203.0.113.0/24"]));
        assert_eq!(rib.received_in(9, Family::Ipv4Unicast), 1);
        assert_eq!(rib.received_in(9, Family::Ipv6Unicast), 1);
        assert_eq!(rib.received_in(8, Family::Ipv4Unicast), 0);
    }

    #[test]
    fn unacceptable_reannouncement_replaces_the_previous_path() {
        let mut rib = Rib::new(local());
        rib.peer_up(9, ebgp(9, 65009));
        rib.peer_up(2, ibgp(2));
        rib.apply_update(
            9,
            &announce4(attrs(&[65009], "10.0.0.9"), &["192.0.2.0/24"]),
        );
        let ex = rib.apply_update(
            9,
            &announce4(attrs(&[65009, LOCAL_AS], "10.0.0.9"), &["192.0.2.0/24"]),
        );
        assert_eq!(withdrawn_from(&ex, 2), vec![p4("192.0.2.0/24")]);
        let c = rib.counters(9);
        assert_eq!((c.received, c.accepted), (1, 0));
    }

    #[test]
    fn drops_reflected_route_we_originated_or_that_looped_our_cluster() {
        let mut rib = Rib::new(local());
        rib.peer_up(2, ibgp(2));
        let mut mine = attrs(&[], "10.0.0.2");
        mine.originator_id = Some(v4("10.0.0.1"));
        rib.apply_update(2, &announce4(mine, &["10.244.0.0/26"]));
        let mut looped = attrs(&[], "10.0.0.2");
        looped.originator_id = Some(v4("10.0.0.7"));
        looped.cluster_list = vec![v4("10.0.0.1")];
        rib.apply_update(2, &announce4(looped, &["10.244.1.0/26"]));
        assert_eq!(rib.prefix_count(Family::Ipv4Unicast), 0);
        let c = rib.counters(2);
        assert_eq!((c.received, c.accepted), (2, 0));
    }

    #[test]
    fn ebgp_local_pref_does_not_influence_the_decision() {
        let mut rib = Rib::new(local());
        rib.peer_up(9, ebgp(9, 65009));
        rib.peer_up(2, ibgp(2));
        let mut pumped = attrs(&[65009], "10.0.0.9");
        pumped.local_pref = Some(1000);
        rib.apply_update(9, &announce4(pumped, &["192.0.2.0/24"]));
        let mut internal = attrs(&[65001], "10.0.0.2");
        internal.local_pref = Some(150);
        rib.apply_update(2, &announce4(internal, &["192.0.2.0/24"]));
        let best = rib.best(&p4("192.0.2.0/24")).expect("route");
        assert_eq!(best.peer, Some(2));
        let paths: Vec<_> = rib.iter_paths(Family::Ipv4Unicast).collect();
        assert_eq!(paths.len(), 2);
        let ebgp_path = paths.iter().find(|r| r.peer == Some(9)).expect("eBGP path");
        assert_eq!(ebgp_path.attrs.local_pref, Some(100));
        assert!(!ebgp_path.best);
    }

    #[test]
    fn ebgp_path_wins_over_equal_ibgp_path() {
        let mut rib = Rib::new(local());
        rib.peer_up(2, ibgp(2));
        rib.peer_up(9, ebgp(9, 65009));
        rib.apply_update(
            2,
            &announce4(attrs(&[65009], "10.0.0.2"), &["192.0.2.0/24"]),
        );
        rib.apply_update(
            9,
            &announce4(attrs(&[65009], "10.0.0.9"), &["192.0.2.0/24"]),
        );
        assert_eq!(rib.best(&p4("192.0.2.0/24")).and_then(|r| r.peer), Some(9));
    }

    #[test]
    fn treat_as_withdraw_removes_the_previous_path() {
        let mut rib = Rib::new(local());
        rib.peer_up(2, ibgp(2));
        rib.apply_update(2, &announce4(attrs(&[], "10.0.0.2"), &["10.244.0.0/26"]));
        let mut bad = announce4(attrs(&[], "10.0.0.2"), &["10.244.0.0/26"]);
        bad.treat_as_withdraw = Some("malformed AS_PATH".into());
        rib.apply_update(2, &bad);
        assert!(rib.best(&p4("10.244.0.0/26")).is_none());
        assert_eq!(rib.counters(2).accepted, 0);
    }

    #[test]
    fn ipv6_routes_take_the_next_hop_from_mp_reach() {
        let mut rib = Rib::new(local());
        rib.peer_up(2, ibgp(2));
        let nh = MpNextHop::V6 {
            global: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2),
            link_local: None,
        };
        rib.apply_update(
            2,
            &announce6(attrs(&[], "10.0.0.2"), nh, &["fd00:244::/122"]),
        );
        let best = rib.best(&p4("fd00:244::/122")).expect("route");
        assert_eq!(best.next_hop, nh.addr());
        assert_eq!(rib.iter_best(Family::Ipv6Unicast).count(), 1);
        assert_eq!(rib.iter_best(Family::Ipv4Unicast).count(), 0);
    }

    #[test]
    fn ignores_families_the_peer_did_not_negotiate() {
        let mut rib = Rib::new(local());
        let mut v4only = ibgp(2);
        v4only.families = vec![Family::Ipv4Unicast];
        rib.peer_up(2, v4only);
        let nh = MpNextHop::V6 {
            global: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2),
            link_local: None,
        };
        rib.apply_update(
            2,
            &announce6(attrs(&[], "10.0.0.2"), nh, &["fd00:244::/122"]),
        );
        assert_eq!(rib.prefix_count(Family::Ipv6Unicast), 0);
    }

    #[test]
    fn attribute_set_is_freed_when_its_last_route_goes() {
        let mut rib = Rib::new(local());
        rib.peer_up(2, ibgp(2));
        rib.peer_up(3, ibgp(3));
        let shared = attrs(&[65001], "10.0.0.2");
        rib.apply_update(
            2,
            &announce4(shared.clone(), &["192.0.2.0/24", "198.51.100.0/24"]),
        );
        rib.apply_update(3, &announce4(shared.clone(), &["203.0.113.0/24"]));
        assert_eq!(rib.attr_sets(), 1, "three routes, one set");
        let a = rib.best(&p4("192.0.2.0/24")).expect("route").attrs;
        let b = rib.best(&p4("203.0.113.0/24")).expect("route").attrs;
        assert!(std::sync::Arc::ptr_eq(&a, &b));

        rib.apply_update(
            2,
            &announce4(attrs(&[65002], "10.0.0.2"), &["192.0.2.0/24"]),
        );
        assert_eq!(rib.attr_sets(), 2);
        rib.apply_update(2, &withdraw4(&["198.51.100.0/24"]));
        assert_eq!(
            rib.attr_sets(),
            2,
            "peer 3's route still uses the first set"
        );
        rib.peer_down(3);
        assert_eq!(rib.attr_sets(), 1, "freed with its last route");
        rib.peer_down(2);
        assert_eq!(rib.attr_sets(), 0);
        assert_eq!(rib.prefix_count(Family::Ipv4Unicast), 0);
    }

    #[test]
    fn peer_paths_can_be_listed_and_counted() {
        let mut rib = Rib::new(local());
        rib.peer_up(2, ibgp(2));
        rib.peer_up(3, ibgp(3));
        rib.apply_update(
            2,
            &announce4(attrs(&[], "10.0.0.2"), &["10.244.0.0/26", "10.244.1.0/26"]),
        );
        rib.apply_update(3, &announce4(attrs(&[], "10.0.0.3"), &["10.244.1.0/26"]));
        assert_eq!(rib.iter_peer_paths(2, Family::Ipv4Unicast).count(), 2);
        assert_eq!(rib.iter_peer_paths(3, Family::Ipv4Unicast).count(), 1);
        assert_eq!(rib.counters(2).accepted, 2);
        assert_eq!(rib.counters(3).accepted, 1);
    }
}
