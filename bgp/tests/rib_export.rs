//! Export rules of the RIB: split horizon, route reflection (RFC 4456), eBGP/iBGP attribute
//! rewriting, update groups, and how exports follow best path changes.

mod rib_common;

use margay_bgp::rib::{NextHopMode, Rib};
use margay_bgp::wire::{Family, MpNextHop, RawAttribute, flag};
use rib_common::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// Under `rib` so that `cargo test -p margay-bgp rib` selects these tests.
mod rib {
    use super::*;

    /// A reflector with clients 2 and 3 and non-clients 4 and 5.
    fn reflector() -> Rib {
        let mut rib = Rib::new(local());
        for (id, info) in [(2, client(2)), (3, client(3)), (4, ibgp(4)), (5, ibgp(5))] {
            assert!(
                rib.peer_up(id, info).is_empty(),
                "empty table sends nothing"
            );
        }
        rib
    }

    #[test]
    fn reflects_client_routes_to_non_clients() {
        let mut rib = reflector();
        let ex = rib.apply_update(
            2,
            &announce4(attrs(&[65001], "10.0.0.2"), &["192.0.2.0/24"]),
        );
        for to in [3, 4, 5] {
            let (a, nh) = only_announcement(&ex, to, "192.0.2.0/24");
            assert_eq!(a.originator_id, Some(v4("10.0.0.2")), "to {to}");
            assert_eq!(
                a.cluster_list,
                vec![v4("10.0.0.1")],
                "cluster id defaults to router id"
            );
            assert_eq!(nh, MpNextHop::V4(v4("10.0.0.2")), "iBGP keeps the next hop");
            assert_eq!(a.as_path.to_string(), "65001");
            assert_eq!(a.local_pref, Some(100));
        }
        assert!(announced_to(&ex, 2).is_empty(), "never back to the source");
    }

    #[test]
    fn does_not_reflect_non_client_routes_to_non_clients() {
        let mut rib = reflector();
        let ex = rib.apply_update(
            4,
            &announce4(attrs(&[65001], "10.0.0.4"), &["192.0.2.0/24"]),
        );
        assert!(announced_to(&ex, 5).is_empty());
        assert!(announced_to(&ex, 4).is_empty());
        for to in [2, 3] {
            let (a, _) = only_announcement(&ex, to, "192.0.2.0/24");
            assert_eq!(a.originator_id, Some(v4("10.0.0.4")));
        }
    }

    #[test]
    fn does_not_pass_ibgp_routes_between_mesh_peers() {
        let mut rib = Rib::new(local());
        rib.peer_up(2, ibgp(2));
        rib.peer_up(3, ibgp(3));
        rib.peer_up(9, ebgp(9, 65009));
        let ex = rib.apply_update(2, &announce4(attrs(&[], "10.0.0.2"), &["10.244.1.0/26"]));
        assert!(announced_to(&ex, 3).is_empty());
        let (a, nh) = only_announcement(&ex, 9, "10.244.1.0/26");
        assert_eq!(a.as_path.to_string(), "64512");
        assert_eq!(nh, MpNextHop::V4(v4("10.0.0.1")));
    }

    #[test]
    fn reflection_keeps_originator_id_and_prepends_cluster_id() {
        let mut l = local();
        l.cluster_id = Some(v4("1.1.1.1"));
        let mut rib = Rib::new(l);
        rib.peer_up(2, client(2));
        rib.peer_up(3, client(3));
        let mut a = attrs(&[], "10.0.0.7");
        a.originator_id = Some(v4("10.0.0.7"));
        a.cluster_list = vec![v4("2.2.2.2")];
        let ex = rib.apply_update(2, &announce4(a, &["10.244.0.0/26"]));
        let (out, _) = only_announcement(&ex, 3, "10.244.0.0/26");
        assert_eq!(out.originator_id, Some(v4("10.0.0.7")));
        assert_eq!(out.cluster_list, vec![v4("1.1.1.1"), v4("2.2.2.2")]);
    }

    #[test]
    fn ebgp_routes_go_to_every_ibgp_peer_unreflected() {
        let mut rib = reflector();
        rib.peer_up(9, ebgp(9, 65009));
        let ex = rib.apply_update(
            9,
            &announce4(attrs(&[65009], "10.0.0.9"), &["198.51.100.0/24"]),
        );
        for to in [2, 3, 4, 5] {
            let (a, nh) = only_announcement(&ex, to, "198.51.100.0/24");
            assert_eq!(
                nh,
                MpNextHop::V4(v4("10.0.0.9")),
                "Auto keeps the next hop on iBGP"
            );
            assert_eq!(a.next_hop, Some(v4("10.0.0.9")));
            assert_eq!(a.originator_id, None);
            assert!(a.cluster_list.is_empty());
            assert_eq!(a.local_pref, Some(100));
        }
        assert!(announced_to(&ex, 9).is_empty(), "never back to the source");
    }

    /// RFC 4271 §5.1.3 (2), as BIRD does: towards an eBGP peer on our subnet, a route whose
    /// next hop is on that subnet keeps it, so the ToR forwards to the node owning the block.
    #[test]
    fn ebgp_peer_on_the_shared_subnet_gets_the_third_party_next_hop() {
        let mut rib = Rib::new(local());
        rib.peer_up(2, ibgp(2));
        let mut tor = ebgp(9, 65009);
        tor.shared_subnet = Some("10.0.0.0/24".parse().unwrap());
        rib.peer_up(9, tor);
        let mut far = ebgp(8, 65008);
        far.address = IpAddr::V4(v4("192.0.2.8"));
        rib.peer_up(8, far);
        let ex = rib.apply_update(2, &announce4(attrs(&[], "10.0.0.2"), &["10.244.2.0/26"]));
        let (_, nh) = only_announcement(&ex, 9, "10.244.2.0/26");
        assert_eq!(
            nh,
            MpNextHop::V4(v4("10.0.0.2")),
            "the owner's address, on the ToR's subnet"
        );
        let (_, nh) = only_announcement(&ex, 8, "10.244.2.0/26");
        assert_eq!(
            nh,
            MpNextHop::V4(v4("10.0.0.1")),
            "a peer off the subnet gets next-hop-self"
        );
        let ex = rib.apply_update(
            2,
            &announce4(attrs(&[], "198.51.100.7"), &["10.244.3.0/26"]),
        );
        let (_, nh) = only_announcement(&ex, 9, "10.244.3.0/26");
        assert_eq!(
            nh,
            MpNextHop::V4(v4("10.0.0.1")),
            "a next hop off the subnet is replaced by ours"
        );
    }

    #[test]
    fn explicit_next_hop_self_overrides_the_third_party_next_hop() {
        let mut rib = Rib::new(local());
        rib.peer_up(2, ibgp(2));
        let mut tor = ebgp(9, 65009);
        tor.shared_subnet = Some("10.0.0.0/24".parse().unwrap());
        tor.next_hop = NextHopMode::SelfAddr;
        rib.peer_up(9, tor);
        let ex = rib.apply_update(2, &announce4(attrs(&[], "10.0.0.2"), &["10.244.2.0/26"]));
        let (_, nh) = only_announcement(&ex, 9, "10.244.2.0/26");
        assert_eq!(nh, MpNextHop::V4(v4("10.0.0.1")));
    }

    #[test]
    fn ebgp_export_prepends_own_as_and_sets_next_hop_self() {
        let mut rib = Rib::new(local());
        rib.peer_up(2, client(2));
        rib.peer_up(9, ebgp(9, 65009));
        let mut a = attrs(&[65001], "10.0.0.50");
        a.local_pref = Some(300);
        a.med = Some(40);
        a.originator_id = Some(v4("10.0.0.50"));
        a.cluster_list = vec![v4("3.3.3.3")];
        let ex = rib.apply_update(2, &announce4(a, &["192.0.2.0/24"]));
        let (out, nh) = only_announcement(&ex, 9, "192.0.2.0/24");
        assert_eq!(out.as_path.to_string(), "64512 65001");
        assert_eq!(nh, MpNextHop::V4(v4("10.0.0.1")));
        assert_eq!(out.next_hop, Some(v4("10.0.0.1")));
        assert_eq!(out.local_pref, None);
        assert_eq!(out.originator_id, None);
        assert!(out.cluster_list.is_empty());
        assert_eq!(
            out.med, None,
            "MED learned from AS 65001 is not passed to AS 65009"
        );
    }

    #[test]
    fn ebgp_export_keeps_med_of_routes_from_our_own_as() {
        let mut rib = Rib::new(local());
        rib.peer_up(2, ibgp(2));
        rib.peer_up(9, ebgp(9, 65009));
        let mut a = attrs(&[], "10.0.0.2");
        a.med = Some(40);
        let ex = rib.apply_update(2, &announce4(a, &["10.244.0.0/26"]));
        let (out, _) = only_announcement(&ex, 9, "10.244.0.0/26");
        assert_eq!(out.med, Some(40));
    }

    #[test]
    fn ebgp_keep_mode_passes_the_received_next_hop() {
        let mut rib = Rib::new(local());
        rib.peer_up(2, ibgp(2));
        let mut keep = ebgp(9, 65009);
        keep.next_hop = NextHopMode::Keep;
        rib.peer_up(9, keep);
        let ex = rib.apply_update(2, &announce4(attrs(&[], "10.0.0.2"), &["10.244.0.0/26"]));
        let (_, nh) = only_announcement(&ex, 9, "10.244.0.0/26");
        assert_eq!(nh, MpNextHop::V4(v4("10.0.0.2")));
    }

    #[test]
    fn ibgp_next_hop_self_mode_rewrites_next_hop() {
        let mut rib = Rib::new(local());
        rib.peer_up(9, ebgp(9, 65009));
        let mut nhs = ibgp(2);
        nhs.next_hop = NextHopMode::SelfAddr;
        rib.peer_up(2, nhs);
        rib.peer_up(3, ibgp(3));
        let ex = rib.apply_update(
            9,
            &announce4(attrs(&[65009], "10.0.0.9"), &["198.51.100.0/24"]),
        );
        assert_eq!(
            only_announcement(&ex, 2, "198.51.100.0/24").1,
            MpNextHop::V4(v4("10.0.0.1"))
        );
        assert_eq!(
            only_announcement(&ex, 3, "198.51.100.0/24").1,
            MpNextHop::V4(v4("10.0.0.9"))
        );
    }

    #[test]
    fn local_routes_go_to_ibgp_with_session_address_as_next_hop() {
        let mut rib = Rib::new(local());
        rib.peer_up(2, ibgp(2));
        rib.peer_up(9, ebgp(9, 65009));
        let ex = rib.originate(p4("10.244.7.0/26"), None);
        let (a, nh) = only_announcement(&ex, 2, "10.244.7.0/26");
        assert_eq!(nh, MpNextHop::V4(v4("10.0.0.1")));
        assert!(a.as_path.is_empty());
        assert_eq!(a.local_pref, Some(100));
        assert_eq!(a.originator_id, None, "a local route is not reflected");
        let (a, _) = only_announcement(&ex, 9, "10.244.7.0/26");
        assert_eq!(a.as_path.to_string(), "64512");
        assert_eq!(rib.best(&p4("10.244.7.0/26")).and_then(|r| r.peer), None);
    }

    #[test]
    fn local_ipv6_routes_use_global_session_address() {
        let mut rib = Rib::new(local());
        let mut v6peer = ibgp(2);
        v6peer.address = IpAddr::V6("fd00::2".parse().unwrap());
        v6peer.local_address = IpAddr::V6("fd00::1".parse().unwrap());
        rib.peer_up(2, v6peer);
        let ex = rib.originate(p4("fd00:244::/122"), None);
        let (a, nh) = only_announcement(&ex, 2, "fd00:244::/122");
        assert_eq!(
            nh,
            MpNextHop::V6 {
                global: "fd00::1".parse().unwrap(),
                link_local: None
            }
        );
        assert_eq!(a.next_hop, None, "IPv6 routes carry no NEXT_HOP attribute");
        assert_eq!(ex[0].announce[0].2, Family::Ipv6Unicast);
    }

    /// An IPv4 and an IPv6 local route share one attribute set; each must still leave with a
    /// next hop of its own family (found by the lab: the IPv6 route went out with the IPv4
    /// next hop cached for the set, and the peer reset the session).
    #[test]
    fn ipv4_and_ipv6_local_routes_sharing_attributes_get_next_hops_of_their_family() {
        let mut rib = Rib::new(local());
        rib.peer_up(2, ibgp(2));
        let ex = rib.originate(p4("10.244.7.0/26"), None);
        let (_, nh) = only_announcement(&ex, 2, "10.244.7.0/26");
        assert_eq!(nh, MpNextHop::V4(v4("10.0.0.1")));
        let ex = rib.originate(p4("fd00:244::/122"), None);
        let (_, nh) = only_announcement(&ex, 2, "fd00:244::/122");
        assert_eq!(
            nh,
            MpNextHop::V6 {
                global: v4("10.0.0.1").to_ipv6_mapped(),
                link_local: None
            },
            "an IPv4 session carries IPv6 routes with an IPv4-mapped next hop"
        );
    }

    #[test]
    fn ipv6_routes_are_reflected_with_their_global_next_hop() {
        let mut rib = reflector();
        let nh = MpNextHop::V6 {
            global: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2),
            link_local: Some(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2)),
        };
        let ex = rib.apply_update(2, &announce6(attrs(&[], "10.0.0.2"), nh, &["fd00:1::/64"]));
        let (a, out_nh) = only_announcement(&ex, 4, "fd00:1::/64");
        assert_eq!(
            out_nh,
            MpNextHop::V6 {
                global: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2),
                link_local: None
            }
        );
        assert_eq!(a.next_hop, None);
        let best = rib.best(&p4("fd00:1::/64")).expect("route");
        assert_eq!(
            best.next_hop,
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2))
        );
    }

    #[test]
    fn passes_unknown_transitive_attributes_and_drops_non_transitive() {
        let mut rib = Rib::new(local());
        rib.peer_up(2, client(2));
        rib.peer_up(3, client(3));
        let mut a = attrs(&[65001], "10.0.0.2");
        let transitive = RawAttribute {
            flags: flag::OPTIONAL | flag::TRANSITIVE,
            type_code: 99,
            value: vec![1, 2, 3].into(),
        };
        let non_transitive = RawAttribute {
            flags: flag::OPTIONAL,
            type_code: 98,
            value: vec![4].into(),
        };
        a.unknown = vec![transitive.clone(), non_transitive];
        let ex = rib.apply_update(2, &announce4(a, &["192.0.2.0/24"]));
        let (out, _) = only_announcement(&ex, 3, "192.0.2.0/24");
        assert_eq!(out.unknown, vec![transitive]);
    }

    #[test]
    fn withdraws_from_everyone_when_last_path_goes() {
        let mut rib = reflector();
        rib.peer_up(9, ebgp(9, 65009));
        rib.apply_update(
            2,
            &announce4(attrs(&[65001], "10.0.0.2"), &["192.0.2.0/24"]),
        );
        let ex = rib.apply_update(2, &withdraw4(&["192.0.2.0/24"]));
        for to in [3, 4, 5, 9] {
            assert_eq!(withdrawn_from(&ex, to), vec![p4("192.0.2.0/24")], "to {to}");
        }
        assert!(withdrawn_from(&ex, 2).is_empty(), "the source never had it");
        assert!(ex.iter().all(|e| e.announce.is_empty()));
        assert!(rib.best(&p4("192.0.2.0/24")).is_none());
    }

    #[test]
    fn moves_route_to_former_source_when_best_changes() {
        let mut rib = Rib::new(local());
        for id in [2, 3, 4] {
            rib.peer_up(id, client(id as u8));
        }
        let first = rib.apply_update(
            2,
            &announce4(attrs(&[65001], "10.0.0.2"), &["192.0.2.0/24"]),
        );
        assert!(announced_to(&first, 2).is_empty());
        assert_eq!(announced_to(&first, 3).len(), 1);

        // Peer 3 sends a better path (higher LOCAL_PREF): 2 now receives 3's route, 3 loses the
        // route it had from 2, 4 gets the new attributes.
        let mut better = attrs(&[65001], "10.0.0.3");
        better.local_pref = Some(200);
        let ex = rib.apply_update(3, &announce4(better, &["192.0.2.0/24"]));
        let (to2, nh2) = only_announcement(&ex, 2, "192.0.2.0/24");
        assert_eq!(nh2, MpNextHop::V4(v4("10.0.0.3")));
        assert_eq!(to2.originator_id, Some(v4("10.0.0.3")));
        let (to4, _) = only_announcement(&ex, 4, "192.0.2.0/24");
        assert!(Arc::ptr_eq(&to2, &to4), "one outgoing set for the group");
        assert_eq!(withdrawn_from(&ex, 3), vec![p4("192.0.2.0/24")]);
        assert!(announced_to(&ex, 3).is_empty());
        assert!(withdrawn_from(&ex, 2).is_empty());
        let recipients: Vec<Vec<u32>> = ex.iter().map(|e| e.peers.clone()).collect();
        assert!(recipients.contains(&vec![2, 4]), "{recipients:?}");
        assert!(recipients.contains(&vec![3]), "{recipients:?}");

        // 3 withdraws: back to 2's path; 3 gets it again, 2 loses it.
        let ex = rib.apply_update(3, &withdraw4(&["192.0.2.0/24"]));
        assert_eq!(
            only_announcement(&ex, 3, "192.0.2.0/24").1,
            MpNextHop::V4(v4("10.0.0.2"))
        );
        assert_eq!(
            only_announcement(&ex, 4, "192.0.2.0/24").1,
            MpNextHop::V4(v4("10.0.0.2"))
        );
        assert_eq!(withdrawn_from(&ex, 2), vec![p4("192.0.2.0/24")]);
        assert_eq!(rib.counters(2).advertised, 0);
        assert_eq!(rib.counters(3).advertised, 1);
        assert_eq!(rib.counters(4).advertised, 1);
    }

    #[test]
    fn withdraws_from_clients_when_best_moves_to_a_non_client() {
        // Best moves from a client's path (sent to everyone) to a non-client's (not sent to the
        // other non-client): that non-client must get a withdraw.
        let mut rib = reflector();
        rib.apply_update(
            2,
            &announce4(attrs(&[65001], "10.0.0.2"), &["192.0.2.0/24"]),
        );
        let mut better = attrs(&[65001], "10.0.0.4");
        better.local_pref = Some(200);
        let ex = rib.apply_update(4, &announce4(better, &["192.0.2.0/24"]));
        assert_eq!(withdrawn_from(&ex, 4), vec![p4("192.0.2.0/24")]);
        assert_eq!(withdrawn_from(&ex, 5), vec![p4("192.0.2.0/24")]);
        assert_eq!(
            only_announcement(&ex, 2, "192.0.2.0/24").1,
            MpNextHop::V4(v4("10.0.0.4"))
        );
        assert_eq!(
            only_announcement(&ex, 3, "192.0.2.0/24").1,
            MpNextHop::V4(v4("10.0.0.4"))
        );
    }

    #[test]
    fn duplicate_announcement_exports_nothing() {
        let mut rib = reflector();
        let u = announce4(attrs(&[65001], "10.0.0.2"), &["192.0.2.0/24"]);
        assert!(!rib.apply_update(2, &u).is_empty());
        assert!(rib.apply_update(2, &u).is_empty());
    }

    #[test]
    fn non_best_path_changes_export_nothing() {
        let mut rib = reflector();
        let mut best = attrs(&[65001], "10.0.0.2");
        best.local_pref = Some(200);
        rib.apply_update(2, &announce4(best, &["192.0.2.0/24"]));
        let ex = rib.apply_update(
            3,
            &announce4(attrs(&[65001], "10.0.0.3"), &["192.0.2.0/24"]),
        );
        assert!(ex.is_empty(), "{ex:?}");
        let ex = rib.apply_update(3, &withdraw4(&["192.0.2.0/24"]));
        assert!(ex.is_empty(), "{ex:?}");
    }

    #[test]
    fn one_announce_entry_per_attribute_set_for_many_prefixes() {
        let mut rib = reflector();
        let prefixes: Vec<String> = (0..1000)
            .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
            .collect();
        let refs: Vec<&str> = prefixes.iter().map(String::as_str).collect();
        let ex = rib.apply_update(2, &announce4(attrs(&[65001], "10.0.0.2"), &refs));
        // Clients and non-clients are different groups: one export each, with one entry holding
        // all 1000 prefixes.
        let mut recipients: Vec<Vec<u32>> = ex.iter().map(|e| e.peers.clone()).collect();
        recipients.sort();
        assert_eq!(recipients, vec![vec![3], vec![4, 5]]);
        for e in &ex {
            assert_eq!(e.announce.len(), 1);
            assert_eq!(e.announce[0].3.len(), 1000);
        }
    }

    #[test]
    fn peers_with_the_same_policy_share_one_export() {
        let mut rib = Rib::new(local());
        rib.peer_up(9, ebgp(9, 65009));
        for id in [2, 3, 4] {
            rib.peer_up(id, ibgp(id as u8));
        }
        let prefixes: Vec<String> = (0..1000)
            .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
            .collect();
        let refs: Vec<&str> = prefixes.iter().map(String::as_str).collect();
        let ex = rib.apply_update(9, &announce4(attrs(&[65009], "10.0.0.9"), &refs));
        assert_eq!(
            ex.len(),
            1,
            "{:?}",
            ex.iter().map(|e| &e.peers).collect::<Vec<_>>()
        );
        assert_eq!(ex[0].peers, vec![2, 3, 4]);
        assert_eq!(ex[0].announce.len(), 1);
        assert_eq!(ex[0].announce[0].3.len(), 1000);
        assert!(ex[0].withdraw.is_empty());
    }

    #[test]
    fn group_batch_excludes_the_source_member() {
        let mut rib = Rib::new(local());
        for id in [2, 3, 4] {
            rib.peer_up(id, client(id as u8));
        }
        let prefixes: Vec<String> = (0..1000)
            .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
            .collect();
        let refs: Vec<&str> = prefixes.iter().map(String::as_str).collect();
        let ex = rib.apply_update(3, &announce4(attrs(&[65001], "10.0.0.3"), &refs));
        assert_eq!(ex.len(), 1);
        assert_eq!(ex[0].peers, vec![2, 4]);
        assert_eq!(ex[0].announce.len(), 1);
        assert_eq!(ex[0].announce[0].3.len(), 1000);
    }

    #[test]
    fn different_codec_contexts_get_separate_exports() {
        let mut rib = Rib::new(local());
        rib.peer_up(9, ebgp(9, 65009));
        rib.peer_up(2, ibgp(2));
        let mut two_octet = ibgp(3);
        two_octet.ctx.four_octet_as = false;
        rib.peer_up(3, two_octet);
        let ex = rib.apply_update(
            9,
            &announce4(attrs(&[65009], "10.0.0.9"), &["198.51.100.0/24"]),
        );
        let mut recipients: Vec<Vec<u32>> = ex.iter().map(|e| e.peers.clone()).collect();
        recipients.sort();
        assert_eq!(recipients, vec![vec![2], vec![3]]);
        let ctx3 = ex.iter().find(|e| e.peers == vec![3]).map(|e| e.ctx);
        assert_eq!(ctx3.map(|c| c.four_octet_as), Some(false));
    }

    #[test]
    fn routes_of_a_family_go_only_to_peers_that_negotiated_it() {
        let mut rib = Rib::new(local());
        let mut v4only = ibgp(2);
        v4only.families = vec![Family::Ipv4Unicast];
        rib.peer_up(2, v4only);
        let ex = rib.originate(p4("fd00:244::/122"), None);
        assert!(ex.is_empty());
        let ex = rib.originate(p4("10.244.0.0/26"), None);
        assert_eq!(announced_to(&ex, 2).len(), 1);
    }

    #[test]
    fn peer_up_returns_the_current_table() {
        let mut rib = Rib::new(local());
        rib.peer_up(2, ibgp(2));
        rib.peer_up(9, ebgp(9, 65009));
        rib.apply_update(2, &announce4(attrs(&[], "10.0.0.2"), &["10.244.2.0/26"]));
        rib.apply_update(
            9,
            &announce4(attrs(&[65009], "10.0.0.9"), &["198.51.100.0/24"]),
        );
        rib.originate(p4("10.244.1.0/26"), None);

        // A new mesh peer gets the eBGP and local routes, not the other mesh peer's.
        let ex = rib.peer_up(3, ibgp(3));
        let mut got: Vec<_> = announced_to(&ex, 3)
            .into_iter()
            .map(|(p, _, _)| p)
            .collect();
        got.sort();
        assert_eq!(got, vec![p4("10.244.1.0/26"), p4("198.51.100.0/24")]);
        assert!(ex.iter().all(|e| e.peers == vec![3]));
        assert_eq!(rib.counters(3).advertised, 2);

        // A new eBGP peer gets everything.
        let ex = rib.peer_up(8, ebgp(8, 65008));
        assert_eq!(announced_to(&ex, 8).len(), 3);
    }

    #[test]
    fn peer_down_withdraws_its_routes_and_promotes_the_next_best() {
        let mut rib = Rib::new(local());
        rib.peer_up(2, ebgp(2, 65002));
        rib.peer_up(3, ebgp(3, 65003));
        rib.peer_up(4, ibgp(4));
        rib.apply_update(
            2,
            &announce4(
                attrs(&[65002], "10.0.0.2"),
                &["192.0.2.0/24", "198.51.100.0/24"],
            ),
        );
        rib.apply_update(
            3,
            &announce4(attrs(&[65003, 7], "10.0.0.3"), &["192.0.2.0/24"]),
        );
        let ex = rib.peer_down(2);
        assert_eq!(withdrawn_from(&ex, 4), vec![p4("198.51.100.0/24")]);
        assert_eq!(
            only_announcement(&ex, 4, "192.0.2.0/24").1,
            MpNextHop::V4(v4("10.0.0.3"))
        );
        assert!(withdrawn_from(&ex, 3).contains(&p4("198.51.100.0/24")));
        assert!(
            withdrawn_from(&ex, 3).contains(&p4("192.0.2.0/24")),
            "its own path is best now"
        );
        assert!(ex.iter().all(|e| !e.peers.contains(&2)));
        assert_eq!(rib.best(&p4("192.0.2.0/24")).and_then(|r| r.peer), Some(3));
        assert_eq!(rib.iter_best(Family::Ipv4Unicast).count(), 1);
        assert_eq!(rib.counters(2), Default::default());
        assert_eq!(rib.counters(4).advertised, 1);
        assert_eq!(rib.counters(3).advertised, 0);
    }

    #[test]
    fn best_changes_are_reported_once_per_prefix() {
        let mut rib = Rib::new(local());
        rib.peer_up(2, ibgp(2));
        rib.apply_update(2, &announce4(attrs(&[], "10.0.0.2"), &["10.244.2.0/26"]));
        rib.originate(
            p4("10.244.1.0/26"),
            Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))),
        );
        rib.apply_update(2, &withdraw4(&["10.244.2.0/26"]));
        let changes = rib.take_best_changes();
        assert_eq!(changes.len(), 3);
        assert_eq!(changes[0].route.as_ref().map(|r| r.peer), Some(Some(2)));
        assert_eq!(
            changes[1].route.as_ref().map(|r| r.next_hop),
            Some(IpAddr::V4(v4("10.0.0.1")))
        );
        assert_eq!(changes[2].prefix, p4("10.244.2.0/26"));
        assert!(changes[2].route.is_none());
        assert!(rib.take_best_changes().is_empty());
    }

    #[test]
    fn withdrawing_a_local_route_withdraws_it_everywhere() {
        let mut rib = Rib::new(local());
        rib.peer_up(2, ibgp(2));
        rib.peer_up(9, ebgp(9, 65009));
        rib.originate(p4("10.244.1.0/26"), None);
        let ex = rib.withdraw_local(p4("10.244.1.0/26"));
        assert_eq!(withdrawn_from(&ex, 2), vec![p4("10.244.1.0/26")]);
        assert_eq!(withdrawn_from(&ex, 9), vec![p4("10.244.1.0/26")]);
    }
}
