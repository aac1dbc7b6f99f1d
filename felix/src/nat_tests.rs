//! Unit tests of [`super`]: the rendering for each pool shape, and reading `nft -j` listings.

use super::*;
use crate::model::EncapMode;

fn pool(cidr: &str, nat: bool) -> IpPool {
    IpPool {
        cidr: cidr.parse().unwrap(),
        ipip_mode: EncapMode::Never,
        vxlan_mode: EncapMode::Never,
        disabled: false,
        nat_outgoing: nat,
    }
}

fn nets(s: &[&str]) -> Vec<IpNet> {
    s.iter().map(|n| n.parse().unwrap()).collect()
}

#[test]
fn no_pools_means_no_tables() {
    assert_eq!(desired(&[]), DesiredNat::default());
}

#[test]
fn pools_without_nat_outgoing_need_no_table() {
    let d = desired(&[pool("10.244.0.0/16", false), pool("fd00:244::/64", false)]);
    assert_eq!(d, DesiredNat::default());
}

#[test]
fn one_nat_pool_is_in_both_sets() {
    let d = desired(&[pool("10.244.0.0/16", true)]);
    let t = d.v4.unwrap();
    assert_eq!(t.masq_pools, nets(&["10.244.0.0/16"]));
    assert_eq!(t.all_pools, nets(&["10.244.0.0/16"]));
    assert!(d.v6.is_none());
}

#[test]
fn pool_without_nat_is_only_a_destination_exempt_from_masquerade() {
    let d = desired(&[pool("10.244.0.0/16", true), pool("10.246.0.0/16", false)]);
    let t = d.v4.unwrap();
    assert_eq!(t.masq_pools, nets(&["10.244.0.0/16"]));
    assert_eq!(t.all_pools, nets(&["10.244.0.0/16", "10.246.0.0/16"]));
}

#[test]
fn families_get_separate_tables() {
    let d = desired(&[pool("fd00:244::/64", true), pool("10.246.0.0/16", false)]);
    assert!(d.v4.is_none(), "no IPv4 pool needs NAT");
    let t = d.v6.unwrap();
    assert_eq!(t.family, Family::V6);
    assert_eq!(t.masq_pools, nets(&["fd00:244::/64"]));
    assert_eq!(t.all_pools, nets(&["fd00:244::/64"]));
}

#[test]
fn disabled_pool_keeps_masquerading_its_existing_pods() {
    let mut p = pool("10.244.0.0/16", true);
    p.disabled = true;
    let mut q = pool("10.246.0.0/16", false);
    q.disabled = true;
    let t = desired(&[p, q]).v4.unwrap();
    assert_eq!(t.masq_pools, nets(&["10.244.0.0/16"]));
    assert_eq!(t.all_pools, nets(&["10.244.0.0/16", "10.246.0.0/16"]));
}

#[test]
fn nested_and_adjacent_pools_are_merged_so_intervals_never_overlap() {
    let d = desired(&[
        pool("10.0.0.0/8", false),
        pool("10.244.0.0/16", true),
        pool("192.168.0.0/24", true),
        pool("192.168.1.0/24", true),
    ]);
    let t = d.v4.unwrap();
    assert_eq!(t.masq_pools, nets(&["10.244.0.0/16", "192.168.0.0/23"]));
    assert_eq!(t.all_pools, nets(&["10.0.0.0/8", "192.168.0.0/23"]));
}

#[test]
fn script_replaces_the_table_in_one_transaction() {
    let d = desired(&[pool("10.244.0.0/16", true), pool("10.246.0.0/16", false)]);
    let s = script(Family::V4, d.v4.as_ref());
    let lines: Vec<&str> = s.lines().map(str::trim).collect();
    assert_eq!(lines[0], "add table ip margay");
    assert_eq!(lines[1], "delete table ip margay");
    assert_eq!(lines[2], "table ip margay {");
    assert!(lines.contains(&"elements = { 10.244.0.0/16 }"), "{s}");
    assert!(
        lines.contains(&"elements = { 10.244.0.0/16, 10.246.0.0/16 }"),
        "{s}"
    );
    assert!(
        lines.contains(&"type nat hook postrouting priority srcnat; policy accept;"),
        "{s}"
    );
    assert!(
        lines.contains(&"ip saddr @masq-pools ip daddr != @all-pools masquerade fully-random"),
        "{s}"
    );
}

#[test]
fn script_for_ipv6_uses_ip6_everywhere() {
    let d = desired(&[pool("fd00:244::/64", true)]);
    let s = script(Family::V6, d.v6.as_ref());
    assert!(s.starts_with("add table ip6 margay\ndelete table ip6 margay\n"));
    assert!(s.contains("type ipv6_addr; flags interval;"), "{s}");
    assert!(
        s.contains("ip6 saddr @masq-pools ip6 daddr != @all-pools masquerade"),
        "{s}"
    );
    assert!(!s.contains("ipv4_addr"), "{s}");
}

#[test]
fn removal_script_only_deletes_our_table() {
    assert_eq!(
        script(Family::V4, None),
        "add table ip margay\ndelete table ip margay\n"
    );
}

/// `nft -j list table ip margay` from nftables 1.0.6 after applying the script of
/// [`one_nat_pool_beside_a_plain_pool`] (handles and metainfo as printed).
const LISTING_1_0_6: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"table": {"family": "ip", "name": "margay", "handle": 1}}, {"set": {"family": "ip", "name": "masq-pools", "table": "margay", "type": "ipv4_addr", "handle": 2, "flags": ["interval"], "elem": [{"prefix": {"addr": "10.244.0.0", "len": 16}}]}}, {"set": {"family": "ip", "name": "all-pools", "table": "margay", "type": "ipv4_addr", "handle": 3, "flags": ["interval"], "elem": [{"prefix": {"addr": "10.244.0.0", "len": 16}}, {"prefix": {"addr": "10.246.0.0", "len": 16}}]}}, {"chain": {"family": "ip", "table": "margay", "name": "nat", "handle": 1, "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}}, {"rule": {"family": "ip", "table": "margay", "chain": "nat", "handle": 4, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "@masq-pools"}}, {"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "@all-pools"}}, {"masquerade": {"flags": "fully-random"}}]}}]}"#;

fn one_nat_pool_beside_a_plain_pool() -> NatTable {
    desired(&[pool("10.244.0.0/16", true), pool("10.246.0.0/16", false)])
        .v4
        .unwrap()
}

#[test]
fn listing_of_the_applied_table_matches_its_view() {
    let live = parse_listing(LISTING_1_0_6).unwrap();
    assert_eq!(live, one_nat_pool_beside_a_plain_pool().view());
}

#[test]
fn listing_with_a_missing_element_is_drift() {
    let edited =
        LISTING_1_0_6.replacen(r#", {"prefix": {"addr": "10.246.0.0", "len": 16}}"#, "", 1);
    assert_ne!(edited, LISTING_1_0_6);
    let live = parse_listing(&edited).unwrap();
    assert_ne!(live, one_nat_pool_beside_a_plain_pool().view());
}

#[test]
fn listing_with_a_changed_rule_is_drift() {
    let edited = LISTING_1_0_6.replacen(r#""op": "!=""#, r#""op": "==""#, 1);
    let live = parse_listing(&edited).unwrap();
    assert_ne!(live, one_nat_pool_beside_a_plain_pool().view());
}

#[test]
fn listing_reads_host_elements_and_flag_arrays() {
    let text = r#"{"nftables": [{"set": {"name": "s", "type": "ipv6_addr", "flags": "interval", "elem": ["fd00:1::1", {"range": ["fd00::1", "fd00::5"]}]}}, {"rule": {"chain": "c", "expr": [{"masquerade": {"flags": ["fully-random"]}}]}}]}"#;
    let v = parse_listing(text).unwrap();
    let s = &v.sets["s"];
    assert_eq!(
        s.elements,
        BTreeSet::from(["fd00:1::1/128".parse::<IpNet>().unwrap()])
    );
    assert_eq!(s.other_elements, 1);
    assert!(s.flags.contains("interval"));
    assert_eq!(
        v.chains["c"].rules[0],
        json!([{"masquerade": {"flags": "fully-random"}}])
    );
}

#[test]
fn listing_that_is_not_nft_json_is_an_error() {
    assert!(matches!(parse_listing("{}"), Err(NatError::BadListing(_))));
    assert!(matches!(
        parse_listing("table ip margay {"),
        Err(NatError::BadListing(_))
    ));
}

#[test]
fn missing_nft_binary_is_its_own_error_and_a_readiness_reason() {
    let nft = Nft::with_binary("/nonexistent/margay-test/nft");
    assert!(matches!(
        nft.list_table(Family::V4),
        Err(NatError::NftMissing(_))
    ));
    let health = Arc::new(Health::new(std::time::Duration::from_secs(10)));
    health.set_synced();
    let mut keeper = NatKeeper::new(nft, health.clone());
    // Nothing to program: no nft is no problem.
    assert_eq!(keeper.resync(&DesiredNat::default()).errors, 0);
    assert_eq!(health.readiness(), Ok(()));
    let want = desired(&[pool("10.244.0.0/16", true)]);
    assert_eq!(keeper.resync(&want).errors, 1);
    let reasons = health.readiness().unwrap_err();
    assert!(
        reasons[0].contains("nft binary") && reasons[0].contains("not found"),
        "{reasons:?}"
    );
    // A flush of the same state does not retry (and spawn) until the next resync.
    assert_eq!(keeper.flush(&want), NatReport::default());
    // The pools stop needing NAT: ready again.
    assert_eq!(keeper.resync(&DesiredNat::default()).errors, 0);
    assert_eq!(health.readiness(), Ok(()));
}

#[test]
fn nat_port_range_and_address_render_as_calicos_nat_outgoing_chain() {
    let settings = crate::settings::DataplaneSettings {
        nat_port_range: Some((40000, 40100)),
        nat_outgoing_address: Some("192.0.2.7".parse().unwrap()),
        ..Default::default()
    };
    let d = desired_with(
        &[pool("10.244.0.0/16", true), pool("fd00:244::/64", true)],
        &settings,
    );
    let v4 = script(Family::V4, d.v4.as_ref());
    let rules: Vec<&str> = v4.lines().filter(|l| l.contains("saddr")).collect();
    assert_eq!(rules.len(), 3, "{v4}");
    assert!(rules[0].ends_with("meta l4proto tcp snat ip to 192.0.2.7:40000-40100 fully-random"));
    assert!(rules[1].ends_with("meta l4proto udp snat ip to 192.0.2.7:40000-40100 fully-random"));
    assert!(rules[2].ends_with("@all-pools snat ip to 192.0.2.7 fully-random"));
    // natOutgoingAddress is IPv4 only (Calico); the port range applies to IPv6 too.
    let v6 = script(Family::V6, d.v6.as_ref());
    assert!(v6.contains("meta l4proto udp masquerade to :40000-40100 fully-random"));
    assert!(v6.contains("@all-pools masquerade fully-random"));
    assert_eq!(d.v4.unwrap().view().chains[CHAIN].rules.len(), 3);
    // Neither set: the one masquerade rule, as before.
    let plain = desired_with(&[pool("10.244.0.0/16", true)], &Default::default());
    assert_eq!(plain, desired(&[pool("10.244.0.0/16", true)]));
}
