//! Route refresh in the RIB (RFC 2918, RFC 7313 §4): a request is answered with one family's
//! table; a peer's Begin-of-RR and End-of-RR remove exactly what it did not re-send, in that
//! family only, and never interfere with graceful restart's stale paths.

mod rib_common;

use margay_bgp::rib::Rib;
use margay_bgp::wire::{Family, MpNextHop};
use rib_common::*;
use std::net::Ipv6Addr;

/// Under `rib` so that `cargo test -p margay-bgp rib` selects these tests.
mod rib {
    use super::*;

    /// Peer 9 (eBGP) sends three IPv4 prefixes and one IPv6 prefix; peer 2 (iBGP) receives
    /// them.
    fn rib_with_routes() -> Rib {
        let mut rib = Rib::new(local());
        rib.peer_up(9, ebgp(9, 65009));
        rib.peer_up(2, ibgp(2));
        rib.apply_update(
            9,
            &announce4(
                attrs(&[65009], "10.0.0.9"),
                &["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"],
            ),
        );
        rib.apply_update(
            9,
            &announce6(
                attrs(&[65009], "10.0.0.9"),
                MpNextHop::V6 {
                    global: "2001:db8::9".parse::<Ipv6Addr>().expect("address"),
                    link_local: None,
                },
                &["2001:db8:1::/48"],
            ),
        );
        rib
    }

    #[test]
    fn end_of_rr_removes_only_what_was_not_resent() {
        let mut rib = rib_with_routes();
        assert!(rib.begin_refresh(9, Family::Ipv4Unicast));
        let ex = rib.apply_update(
            9,
            &announce4(attrs(&[65009], "10.0.0.9"), &["192.0.2.0/24"]),
        );
        assert!(ex.is_empty(), "an unchanged re-send is silent: {ex:?}");
        // A withdrawal during the refresh is just that.
        let ex = rib.apply_update(9, &withdraw4(&["198.51.100.0/24"]));
        assert_eq!(withdrawn_from(&ex, 2), vec![p4("198.51.100.0/24")]);
        let ex = rib
            .end_refresh(9, Family::Ipv4Unicast)
            .expect("a refresh was begun");
        assert_eq!(withdrawn_from(&ex, 2), vec![p4("203.0.113.0/24")]);
        assert!(rib.best(&p4("192.0.2.0/24")).is_some());
        assert!(rib.best(&p4("203.0.113.0/24")).is_none());
        assert!(
            rib.best(&p4("2001:db8:1::/48")).is_some(),
            "an IPv4 refresh touched IPv6"
        );
    }

    #[test]
    fn end_of_rr_without_begin_is_ignored() {
        let mut rib = rib_with_routes();
        assert!(rib.end_refresh(9, Family::Ipv4Unicast).is_none());
        assert!(rib.begin_refresh(9, Family::Ipv6Unicast));
        assert!(
            rib.end_refresh(9, Family::Ipv4Unicast).is_none(),
            "the IPv6 refresh ended an IPv4 one"
        );
        assert_eq!(rib.iter_best(Family::Ipv4Unicast).count(), 3);
    }

    #[test]
    fn refreshes_of_two_families_overlap_without_harm() {
        let mut rib = rib_with_routes();
        assert!(rib.begin_refresh(9, Family::Ipv4Unicast));
        assert!(rib.begin_refresh(9, Family::Ipv6Unicast));
        rib.apply_update(
            9,
            &announce4(
                attrs(&[65009], "10.0.0.9"),
                &["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"],
            ),
        );
        let ex = rib.end_refresh(9, Family::Ipv4Unicast).expect("begun");
        assert!(withdrawn_from(&ex, 2).is_empty(), "{ex:?}");
        let ex = rib.end_refresh(9, Family::Ipv6Unicast).expect("begun");
        assert_eq!(withdrawn_from(&ex, 2), vec![p4("2001:db8:1::/48")]);
        assert_eq!(rib.iter_best(Family::Ipv4Unicast).count(), 3);
    }

    #[test]
    fn a_lost_session_ends_the_refresh_and_keeps_graceful_restart_in_charge() {
        let mut rib = rib_with_routes();
        assert!(rib.begin_refresh(9, Family::Ipv4Unicast));
        rib.peer_lost(9, &[Family::Ipv4Unicast]);
        rib.peer_up(9, ebgp(9, 65009));
        assert!(
            rib.end_refresh(9, Family::Ipv4Unicast).is_none(),
            "a refresh outlived its session"
        );
        assert_eq!(rib.stale_count(9), 3, "the stale paths wait for End-of-RIB");
        rib.apply_update(
            9,
            &announce4(attrs(&[65009], "10.0.0.9"), &["192.0.2.0/24"]),
        );
        let ex = rib.sweep_stale(9, Family::Ipv4Unicast);
        assert_eq!(withdrawn_from(&ex, 2).len(), 2, "{ex:?}");
    }

    #[test]
    fn a_request_is_answered_with_that_family_only() {
        let mut rib = rib_with_routes();
        rib.peer_up(3, ibgp(3));
        let v4: Vec<_> = announced_to(&rib.refresh(3, Family::Ipv4Unicast), 3)
            .into_iter()
            .map(|(p, _, _)| p)
            .collect();
        assert_eq!(v4.len(), 3, "{v4:?}");
        assert!(v4.iter().all(|p| Family::of(p) == Family::Ipv4Unicast));
        let v6 = announced_to(&rib.refresh(3, Family::Ipv6Unicast), 3);
        assert_eq!(v6.len(), 1, "{v6:?}");
        assert!(!rib.begin_refresh(42, Family::Ipv4Unicast), "unknown peer");
    }
}
