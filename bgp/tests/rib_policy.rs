//! Policy in the RIB: Calico's default export policy (no transit of external routes, pools),
//! BGP filters, communities by prefix inside one attribute set, live policy changes, import
//! filters, and local routes that no received route displaces.

mod rib_common;

use margay_bgp::policy::{
    Action, Advertisement, ExportPolicy, Filter, FilterChain, MatchOperator, Pool, Rule, RuleSource,
};
use margay_bgp::rib::Rib;
use margay_bgp::wire::Prefix;
use rib_common::*;
use std::sync::Arc;

/// Under `rib` so that `cargo test -p margay-bgp rib` selects these tests.
mod rib {
    use super::*;

    fn rule(action: Action, op: MatchOperator, cidr: &str) -> Rule {
        Rule {
            action,
            cidr: Some((op, cidr.parse().unwrap())),
            prefix_length: None,
            source: None,
            interface: None,
        }
    }

    fn remote_peers_accept() -> Rule {
        Rule {
            action: Action::Accept,
            cidr: None,
            prefix_length: None,
            source: Some(RuleSource::RemotePeers),
            interface: None,
        }
    }

    fn chain(export_v4: Vec<Rule>, import_v4: Vec<Rule>) -> FilterChain {
        FilterChain::new(vec![Arc::new(Filter {
            name: "f".into(),
            export_v4,
            import_v4,
            ..Filter::default()
        })])
    }

    fn with_export(
        mut info: margay_bgp::rib::PeerInfo,
        p: ExportPolicy,
    ) -> margay_bgp::rib::PeerInfo {
        info.export = Arc::new(p);
        info
    }

    fn prefixes(list: Vec<Prefix>) -> Vec<String> {
        let mut v: Vec<String> = list.iter().map(|p| p.to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn an_external_route_is_not_passed_to_another_external_peer() {
        let mut rib = Rib::new(local());
        rib.peer_up(2, external(2, 65002));
        rib.peer_up(3, external(3, 65003));
        rib.peer_up(4, ibgp(4));
        let ex = rib.apply_update(
            2,
            &announce4(attrs(&[65002], "10.0.0.2"), &["198.51.100.0/24"]),
        );
        assert!(announced_to(&ex, 3).is_empty(), "{ex:?}");
        assert!(
            announced_to(&ex, 4).is_empty(),
            "not to the cluster either: {ex:?}"
        );
        assert!(
            rib.best(&p4("198.51.100.0/24")).is_some(),
            "still in the Loc-RIB"
        );
        // What the node originates goes to both.
        let ex = rib.originate(p4("10.244.1.0/26"), None);
        only_announcement(&ex, 2, "10.244.1.0/26");
        only_announcement(&ex, 3, "10.244.1.0/26");
        // A cluster route goes to the external peers.
        let ex = rib.apply_update(4, &announce4(attrs(&[], "10.0.0.4"), &["10.244.2.0/26"]));
        only_announcement(&ex, 2, "10.244.2.0/26");
        only_announcement(&ex, 3, "10.244.2.0/26");
    }

    #[test]
    fn a_remote_peers_accept_rule_turns_transit_on() {
        let mut rib = Rib::new(local());
        rib.peer_up(2, external(2, 65002));
        let transit = ExportPolicy {
            chain: chain(vec![remote_peers_accept()], vec![]),
            ..ExportPolicy::default()
        };
        rib.peer_up(3, with_export(external(3, 65003), transit));
        let ex = rib.apply_update(
            2,
            &announce4(attrs(&[65002], "10.0.0.2"), &["198.51.100.0/24"]),
        );
        let (a, _) = only_announcement(&ex, 3, "198.51.100.0/24");
        assert_eq!(a.as_path.to_string(), "64512 65002");
        // A rule without source does not: external routes need RemotePeers.
        let plain = ExportPolicy {
            chain: chain(
                vec![rule(Action::Accept, MatchOperator::In, "0.0.0.0/0")],
                vec![],
            ),
            ..ExportPolicy::default()
        };
        let ex = rib.peer_up(4, with_export(external(4, 65004), plain));
        assert!(announced_to(&ex, 4).is_empty(), "{ex:?}");
    }

    #[test]
    fn pools_decide_cluster_routes_and_disabled_pools_are_never_announced() {
        let mut rib = Rib::new(local());
        let policy = ExportPolicy {
            pools: [("10.244.0.0/16", true), ("10.99.0.0/16", false)]
                .map(|(cidr, export)| Pool {
                    cidr: cidr.parse().unwrap(),
                    export,
                })
                .to_vec(),
            chain: chain(vec![remote_peers_accept()], vec![]),
            ..ExportPolicy::default()
        };
        rib.peer_up(2, ibgp(2));
        rib.peer_up(9, with_export(external(9, 65009), policy));
        let ex = rib.apply_update(
            2,
            &announce4(
                attrs(&[], "10.0.0.2"),
                &["10.244.1.0/26", "10.99.1.0/26", "192.0.2.0/24"],
            ),
        );
        let got: Vec<Prefix> = announced_to(&ex, 9)
            .into_iter()
            .map(|(p, _, _)| p)
            .collect();
        // 192.0.2.0/24 is accepted by the RemotePeers rule; the disabled pool is not, rule or not.
        assert_eq!(prefixes(got), vec!["10.244.1.0/26", "192.0.2.0/24"]);
        let ex = rib.originate(p4("10.99.7.0/26"), None);
        assert!(announced_to(&ex, 9).is_empty(), "{ex:?}");
    }

    #[test]
    fn communities_are_added_per_prefix_inside_one_attribute_set() {
        let mut rib = Rib::new(local());
        let policy = ExportPolicy {
            advertise: vec![Advertisement {
                cidr: "10.244.1.0/24".parse().unwrap(),
                communities: vec!["65000:100".parse().unwrap(), "65000:1:2".parse().unwrap()],
            }],
            chain: chain(
                vec![rule(Action::Reject, MatchOperator::Equal, "10.244.9.0/26")],
                vec![],
            ),
            ..ExportPolicy::default()
        };
        rib.peer_up(2, ibgp(2));
        rib.peer_up(9, with_export(external(9, 65009), policy.clone()));
        rib.peer_up(8, external(8, 65008));
        // One attribute set, three prefixes: one gets communities, one is filtered out.
        let mut a = attrs(&[], "10.0.0.2");
        a.communities = vec![7];
        let ex = rib.apply_update(
            2,
            &announce4(a, &["10.244.1.0/26", "10.244.2.0/26", "10.244.9.0/26"]),
        );
        let (with, _) = only_announcement(&ex, 9, "10.244.1.0/26");
        assert_eq!(with.communities, vec![7, (65000 << 16) | 100]);
        assert_eq!(with.large_communities.len(), 1);
        let (without, _) = only_announcement(&ex, 9, "10.244.2.0/26");
        assert_eq!(without.communities, vec![7]);
        assert!(without.large_communities.is_empty());
        assert!(
            !announced_to(&ex, 9)
                .iter()
                .any(|(p, _, _)| *p == p4("10.244.9.0/26"))
        );
        // The other group is untouched by 9's policy.
        assert_eq!(announced_to(&ex, 8).len(), 3);
        let (plain, _) = only_announcement(&ex, 8, "10.244.1.0/26");
        assert_eq!(plain.communities, vec![7]);
        // The cache answers again the same way (a second peer joining the group gets its table).
        let table = rib.peer_up(10, with_export(external(10, 65009), policy));
        let (again, _) = only_announcement(&table, 10, "10.244.1.0/26");
        assert_eq!(again, with);
        let (again, _) = only_announcement(&table, 10, "10.244.2.0/26");
        assert_eq!(again, without);
        assert_eq!(announced_to(&table, 10).len(), 2);
        assert!(announced_to(&table, 9).is_empty(), "only the new peer");
    }

    #[test]
    fn an_export_change_sends_only_the_difference_to_that_peer() {
        let mut rib = Rib::new(local());
        rib.peer_up(2, ibgp(2));
        rib.peer_up(8, external(8, 65008));
        rib.peer_up(9, external(9, 65009));
        rib.apply_update(
            2,
            &announce4(attrs(&[], "10.0.0.2"), &["10.244.1.0/26", "10.244.2.0/26"]),
        );
        assert_eq!(rib.counters(9).advertised, 2);
        let hide = ExportPolicy {
            chain: chain(
                vec![rule(Action::Reject, MatchOperator::Equal, "10.244.1.0/26")],
                vec![],
            ),
            ..ExportPolicy::default()
        };
        let ex = rib.set_export_policy(9, Arc::new(hide.clone()));
        assert_eq!(withdrawn_from(&ex, 9), vec![p4("10.244.1.0/26")]);
        assert!(
            announced_to(&ex, 9).is_empty(),
            "the unchanged route is not re-sent"
        );
        assert!(ex.iter().all(|e| e.peers == vec![9]), "{ex:?}");
        assert_eq!(rib.counters(9).advertised, 1);
        assert!(
            rib.set_export_policy(9, Arc::new(hide)).is_empty(),
            "same policy: nothing"
        );
        // Peers now in different groups: a new route reaches each as its policy says.
        let ex = rib.apply_update(2, &announce4(attrs(&[], "10.0.0.2"), &["10.244.3.0/26"]));
        only_announcement(&ex, 8, "10.244.3.0/26");
        only_announcement(&ex, 9, "10.244.3.0/26");
        // Communities added later are re-sent for the routes they cover only.
        let tagged = ExportPolicy {
            advertise: vec![Advertisement {
                cidr: "10.244.3.0/24".parse().unwrap(),
                communities: vec!["1:1".parse().unwrap()],
            }],
            ..ExportPolicy::default()
        };
        let ex = rib.set_export_policy(9, Arc::new(tagged));
        let sent: Vec<String> = prefixes(
            announced_to(&ex, 9)
                .into_iter()
                .map(|(p, _, _)| p)
                .collect(),
        );
        assert_eq!(sent, vec!["10.244.1.0/26", "10.244.3.0/26"]);
        let (a, _) = only_announcement(&ex, 9, "10.244.3.0/26");
        assert_eq!(a.communities, vec![(1 << 16) | 1]);
        assert_eq!(rib.counters(9).advertised, 3);
    }

    #[test]
    fn import_filters_reject_as_received_not_accepted_and_change_live() {
        let mut rib = Rib::new(local());
        let mut peer = external(2, 65002);
        peer.import = Arc::new(chain(
            vec![],
            vec![rule(Action::Reject, MatchOperator::In, "192.0.2.0/24")],
        ));
        rib.peer_up(2, peer);
        rib.apply_update(
            2,
            &announce4(
                attrs(&[65002], "10.0.0.2"),
                &["192.0.2.0/25", "198.51.100.0/24"],
            ),
        );
        let c = rib.counters(2);
        assert_eq!((c.received, c.accepted), (2, 1));
        assert!(rib.best(&p4("192.0.2.0/25")).is_none());
        // Now reject 198.51.100.0/24 instead: it is dropped at once, and 192.0.2.0/25 comes
        // back from what was held, without the peer sending it again.
        let transit = ExportPolicy {
            chain: chain(vec![remote_peers_accept()], vec![]),
            ..ExportPolicy::default()
        };
        rib.peer_up(3, with_export(external(3, 65003), transit));
        let now = Arc::new(chain(
            vec![],
            vec![rule(Action::Reject, MatchOperator::In, "198.51.100.0/24")],
        ));
        let ex = rib.set_import_policy(2, now);
        assert!(rib.best(&p4("198.51.100.0/24")).is_none());
        let back = rib.best(&p4("192.0.2.0/25")).expect("accepted now");
        assert_eq!(back.peer, Some(2));
        assert_eq!(back.attrs.as_path.to_string(), "65002");
        assert_eq!(withdrawn_from(&ex, 3), vec![p4("198.51.100.0/24")]);
        only_announcement(&ex, 3, "192.0.2.0/25");
        let c = rib.counters(2);
        assert_eq!((c.received, c.accepted), (2, 1));
        // The peer re-sends (route refresh): nothing changes.
        let ex = rib.apply_update(
            2,
            &announce4(
                attrs(&[65002], "10.0.0.2"),
                &["192.0.2.0/25", "198.51.100.0/24"],
            ),
        );
        assert!(ex.is_empty(), "{ex:?}");
        let c = rib.counters(2);
        assert_eq!((c.received, c.accepted), (2, 1));
        // What was held is freed with the session.
        rib.peer_down(2);
        rib.peer_down(3);
        assert_eq!(rib.attr_sets(), 0, "no attribute set left behind");
    }

    #[test]
    fn local_asn_decides_ibgp_or_ebgp_and_is_the_as_prepended() {
        let mut rib = Rib::new(local());
        let mut tor = external(2, 65100);
        tor.local_asn = 65010;
        let mut same = external(3, 65010);
        same.local_asn = 65010;
        rib.peer_up(2, tor);
        rib.peer_up(3, same);
        let ex = rib.originate(p4("10.244.1.0/26"), None);
        let (a, _) = only_announcement(&ex, 2, "10.244.1.0/26");
        assert_eq!(a.as_path.to_string(), "65010");
        assert_eq!(a.local_pref, None);
        let (a, _) = only_announcement(&ex, 3, "10.244.1.0/26");
        assert!(a.as_path.is_empty(), "iBGP in the presented AS: {a:?}");
        assert_eq!(a.local_pref, Some(100));
    }

    #[test]
    fn a_received_route_never_displaces_a_local_one() {
        let mut rib = Rib::new(local());
        rib.peer_up(2, ibgp(2));
        rib.peer_up(3, external(3, 65003));
        rib.originate(p4("10.244.1.0/26"), None);
        let mut better = attrs(&[], "10.0.0.2");
        better.local_pref = Some(1000);
        let ex = rib.apply_update(2, &announce4(better, &["10.244.1.0/26"]));
        assert!(ex.is_empty(), "nothing changes: {ex:?}");
        rib.apply_update(
            3,
            &announce4(attrs(&[65003], "10.0.0.3"), &["10.244.1.0/26"]),
        );
        let best = rib.best(&p4("10.244.1.0/26")).unwrap();
        assert_eq!(best.peer, None, "the local route stays best");
        rib.withdraw_local(p4("10.244.1.0/26"));
        assert!(rib.best(&p4("10.244.1.0/26")).unwrap().peer.is_some());
    }
}
