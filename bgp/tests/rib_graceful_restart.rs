//! Graceful restart in the RIB, helper side (RFC 4724 §4.2): a lost session's paths stay as
//! stale best paths, are refreshed by the next session, swept after its End-of-RIB, and
//! flushed when the restart time runs out.

mod rib_common;

use margay_bgp::rib::Rib;
use margay_bgp::wire::{Family, MpNextHop};
use rib_common::*;
use std::net::Ipv6Addr;

/// Under `rib` so that `cargo test -p margay-bgp rib` selects these tests.
mod rib {
    use super::*;

    /// Peer 9 (eBGP) sends two prefixes; peer 2 (iBGP) receives them.
    fn rib_with_two_routes() -> Rib {
        let mut rib = Rib::new(local());
        rib.peer_up(9, ebgp(9, 65009));
        rib.peer_up(2, ibgp(2));
        rib.apply_update(
            9,
            &announce4(
                attrs(&[65009], "10.0.0.9"),
                &["192.0.2.0/24", "198.51.100.0/24"],
            ),
        );
        rib
    }

    #[test]
    fn lost_session_keeps_its_paths_as_best_and_withdraws_nothing() {
        let mut rib = rib_with_two_routes();
        let ex = rib.peer_lost(9, &[Family::Ipv4Unicast]);
        assert!(ex.is_empty(), "nothing withdrawn from peer 2: {ex:?}");
        let best = rib.best(&p4("192.0.2.0/24")).expect("kept");
        assert_eq!(best.peer, Some(9));
        assert_eq!(rib.stale_count(9), 2);
        assert!(rib.is_waiting(9) && !rib.is_up(9));
        assert_eq!(rib.iter_best(Family::Ipv4Unicast).count(), 2);
    }

    #[test]
    fn families_without_graceful_restart_are_flushed_at_once() {
        let mut rib = rib_with_two_routes();
        rib.apply_update(
            9,
            &announce6(
                attrs(&[65009], "10.0.0.9"),
                MpNextHop::V6 {
                    global: "2001:db8::9".parse::<Ipv6Addr>().unwrap(),
                    link_local: None,
                },
                &["2001:db8:1::/48"],
            ),
        );
        let ex = rib.peer_lost(9, &[Family::Ipv4Unicast]);
        assert_eq!(withdrawn_from(&ex, 2), vec![p4("2001:db8:1::/48")]);
        assert!(rib.best(&p4("2001:db8:1::/48")).is_none());
        assert_eq!(rib.stale_count(9), 2);
    }

    #[test]
    fn end_of_rib_sweeps_only_the_paths_not_refreshed() {
        let mut rib = rib_with_two_routes();
        rib.peer_lost(9, &[Family::Ipv4Unicast]);
        let table = rib.peer_up(9, ebgp(9, 65009));
        assert!(
            announced_to(&table, 9).is_empty(),
            "its own routes are not sent back"
        );
        // The same attributes again: no change for anyone.
        let ex = rib.apply_update(
            9,
            &announce4(attrs(&[65009], "10.0.0.9"), &["192.0.2.0/24"]),
        );
        assert!(
            ex.is_empty(),
            "a refresh with equal attributes is silent: {ex:?}"
        );
        assert_eq!(rib.stale_count(9), 1);
        let ex = rib.sweep_stale(9, Family::Ipv4Unicast);
        assert_eq!(withdrawn_from(&ex, 2), vec![p4("198.51.100.0/24")]);
        assert!(rib.best(&p4("192.0.2.0/24")).is_some());
        assert!(rib.best(&p4("198.51.100.0/24")).is_none());
        assert_eq!(rib.stale_count(9), 0);
        assert_eq!(rib.counters(9).accepted, 1);
    }

    #[test]
    fn restart_timer_expiry_flushes_everything_and_forgets_the_peer() {
        let mut rib = rib_with_two_routes();
        rib.peer_lost(9, &[Family::Ipv4Unicast]);
        let ex = rib.sweep_stale(9, Family::Ipv4Unicast);
        let mut gone = withdrawn_from(&ex, 2);
        gone.sort();
        assert_eq!(gone, vec![p4("192.0.2.0/24"), p4("198.51.100.0/24")]);
        assert!(!rib.is_waiting(9), "nothing left of the peer");
        assert_eq!(rib.iter_best(Family::Ipv4Unicast).count(), 0);
    }

    #[test]
    fn changed_attributes_on_refresh_are_exported_and_no_longer_stale() {
        let mut rib = rib_with_two_routes();
        rib.peer_lost(9, &[Family::Ipv4Unicast]);
        rib.peer_up(9, ebgp(9, 65009));
        let ex = rib.apply_update(
            9,
            &announce4(attrs(&[65009, 65010], "10.0.0.9"), &["192.0.2.0/24"]),
        );
        assert_eq!(announced_to(&ex, 2).len(), 1);
        assert_eq!(rib.stale_count(9), 1);
        rib.sweep_stale(9, Family::Ipv4Unicast);
        let best = rib.best(&p4("192.0.2.0/24")).expect("refreshed path stays");
        assert_eq!(best.attrs.as_path.segments.len(), 1);
    }

    #[test]
    fn a_second_loss_before_end_of_rib_keeps_both_generations_stale() {
        let mut rib = rib_with_two_routes();
        rib.peer_lost(9, &[Family::Ipv4Unicast]);
        rib.peer_up(9, ebgp(9, 65009));
        rib.apply_update(
            9,
            &announce4(attrs(&[65009], "10.0.0.9"), &["192.0.2.0/24"]),
        );
        rib.peer_lost(9, &[Family::Ipv4Unicast]);
        assert_eq!(rib.stale_count(9), 2);
        rib.peer_up(9, ebgp(9, 65009));
        rib.sweep_stale(9, Family::Ipv4Unicast);
        assert_eq!(rib.iter_best(Family::Ipv4Unicast).count(), 0);
    }

    #[test]
    fn a_better_path_from_another_peer_wins_over_a_stale_one_and_back() {
        let mut rib = rib_with_two_routes();
        rib.peer_up(8, ebgp(8, 65008));
        rib.peer_lost(9, &[Family::Ipv4Unicast]);
        // Peer 8's path is shorter: it wins while 9's is stale.
        rib.apply_update(
            8,
            &announce4(attrs(&[65008], "10.0.0.8"), &["192.0.2.0/24"]),
        );
        assert_eq!(rib.best(&p4("192.0.2.0/24")).and_then(|r| r.peer), Some(8));
        rib.apply_update(8, &withdraw4(&["192.0.2.0/24"]));
        assert_eq!(rib.best(&p4("192.0.2.0/24")).and_then(|r| r.peer), Some(9));
    }

    #[test]
    fn updates_from_a_peer_that_is_not_back_are_ignored() {
        let mut rib = rib_with_two_routes();
        rib.peer_lost(9, &[Family::Ipv4Unicast]);
        let ex = rib.apply_update(9, &withdraw4(&["192.0.2.0/24"]));
        assert!(ex.is_empty());
        assert!(rib.best(&p4("192.0.2.0/24")).is_some());
    }

    #[test]
    fn a_peer_back_as_another_kind_loses_its_stale_paths() {
        let mut rib = rib_with_two_routes();
        rib.peer_lost(9, &[Family::Ipv4Unicast]);
        let ex = rib.peer_up(9, ibgp(9));
        assert_eq!(withdrawn_from(&ex, 2).len(), 2);
        assert_eq!(rib.stale_count(9), 0);
    }

    #[test]
    fn marking_many_paths_stale_does_not_walk_the_table() {
        let mut rib = Rib::new(local());
        rib.peer_up(9, ebgp(9, 65009));
        // 200k distinct /32s from one UPDATE per 1000.
        for chunk in 0..200u32 {
            let list: Vec<String> = (0..1000u32)
                .map(|i| {
                    let n = chunk * 1000 + i;
                    format!("10.{}.{}.{}/32", n >> 16, (n >> 8) & 0xff, n & 0xff)
                })
                .collect();
            let refs: Vec<&str> = list.iter().map(String::as_str).collect();
            rib.apply_update(9, &announce4(attrs(&[65009], "10.0.0.9"), &refs));
        }
        let t = std::time::Instant::now();
        rib.peer_lost(9, &[Family::Ipv4Unicast]);
        let took = t.elapsed();
        assert_eq!(rib.stale_count(9), 200_000);
        assert!(took < std::time::Duration::from_millis(20), "took {took:?}");
    }
}
