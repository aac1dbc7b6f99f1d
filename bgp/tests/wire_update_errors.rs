//! One test per malformed UPDATE: the RFC 7606 approach (session reset with the RFC 4271 §6.3
//! code / subcode / data, treat-as-withdraw, or attribute discard) the codec takes.

use margay_bgp::wire::{
    self, Aggregator, AsPath, AsSegment, CodecContext, Family, Message, MessageError, Prefix4,
    Update, code, flag, notif,
};
use std::net::Ipv4Addr;

const WK: u8 = flag::TRANSITIVE;
const OT: u8 = flag::OPTIONAL | flag::TRANSITIVE;
const ON: u8 = flag::OPTIONAL;

fn ebgp4() -> CodecContext {
    CodecContext {
        four_octet_as: true,
        ..CodecContext::default()
    }
}

fn ibgp4() -> CodecContext {
    CodecContext {
        four_octet_as: true,
        ibgp: true,
        ..CodecContext::default()
    }
}

fn attr(flags: u8, type_code: u8, value: &[u8]) -> Vec<u8> {
    let mut v = vec![flags, type_code];
    if flags & flag::EXTENDED_LENGTH != 0 {
        v.extend_from_slice(&(value.len() as u16).to_be_bytes());
    } else {
        v.push(value.len() as u8);
    }
    v.extend_from_slice(value);
    v
}

fn origin_igp() -> Vec<u8> {
    attr(WK, code::ORIGIN, &[0])
}

/// AS_PATH with one 4-octet AS_SEQUENCE.
fn as_path4(asns: &[u32]) -> Vec<u8> {
    let mut v = vec![2, asns.len() as u8];
    for a in asns {
        v.extend_from_slice(&a.to_be_bytes());
    }
    attr(WK, code::AS_PATH, &v)
}

fn next_hop() -> Vec<u8> {
    attr(WK, code::NEXT_HOP, &[10, 0, 0, 1])
}

fn local_pref() -> Vec<u8> {
    attr(WK, code::LOCAL_PREF, &100u32.to_be_bytes())
}

/// 10.1.0.0/16 and 10.2.3.0/24.
const NLRI: &[u8] = &[16, 10, 1, 24, 10, 2, 3];

fn message(withdrawn: &[u8], attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut v = vec![0xff; 16];
    let len = 19 + 2 + withdrawn.len() + 2 + attrs.len() + nlri.len();
    v.extend_from_slice(&(len as u16).to_be_bytes());
    v.push(2);
    v.extend_from_slice(&(withdrawn.len() as u16).to_be_bytes());
    v.extend_from_slice(withdrawn);
    v.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    v.extend_from_slice(attrs);
    v.extend_from_slice(nlri);
    v
}

/// A valid eBGP attribute list (ORIGIN, AS_PATH, NEXT_HOP) with `extra` appended.
fn with(extra: &[Vec<u8>]) -> Vec<u8> {
    let mut v = origin_igp();
    v.extend(as_path4(&[65001]));
    v.extend(next_hop());
    for e in extra {
        v.extend_from_slice(e);
    }
    v
}

fn decode_ok(msg: &[u8], ctx: &CodecContext) -> Update {
    match wire::decode(msg, ctx) {
        Ok(Message::Update(u)) => u,
        other => panic!("expected an UPDATE, got {other:?}"),
    }
}

fn nlri_prefixes() -> Vec<Prefix4> {
    vec![
        "10.1.0.0/16".parse().unwrap(),
        "10.2.3.0/24".parse().unwrap(),
    ]
}

/// The UPDATE decodes, its NLRI are intact, and they are to be withdrawn for `why`.
fn assert_withdrawn(msg: &[u8], ctx: &CodecContext, why: &str) -> Update {
    let u = decode_ok(msg, ctx);
    let reason = u.treat_as_withdraw.clone().expect("treat-as-withdraw");
    assert!(reason.contains(why), "reason {reason:?} lacks {why:?}");
    assert_eq!(u.nlri, nlri_prefixes());
    assert_eq!(u.all_withdrawn().len(), 2);
    u
}

/// The UPDATE decodes without treat-as-withdraw and one attribute was discarded for `why`.
fn assert_discarded(msg: &[u8], ctx: &CodecContext, why: &str) -> Update {
    let u = decode_ok(msg, ctx);
    assert_eq!(u.treat_as_withdraw, None);
    assert!(
        u.discarded.iter().any(|d| d.contains(why)),
        "{:?} lacks {why:?}",
        u.discarded
    );
    assert_eq!(u.nlri, nlri_prefixes());
    u
}

fn assert_reset(msg: &[u8], ctx: &CodecContext, subcode: u8) -> MessageError {
    let err = wire::decode(msg, ctx).expect_err("session reset");
    let n = err.notification();
    assert_eq!(
        (n.code, n.subcode),
        (notif::UPDATE_MESSAGE_ERROR, subcode),
        "{err}"
    );
    err
}

#[test]
fn accepts_a_well_formed_update() {
    let u = decode_ok(&message(&[], &with(&[]), NLRI), &ebgp4());
    assert_eq!(u.treat_as_withdraw, None);
    assert!(u.discarded.is_empty());
    assert_eq!(u.attributes.next_hop, Some(Ipv4Addr::new(10, 0, 0, 1)));
}

#[test]
fn withdraws_when_origin_value_undefined() {
    let mut attrs = attr(WK, code::ORIGIN, &[3]);
    attrs.extend(as_path4(&[65001]));
    attrs.extend(next_hop());
    assert_withdrawn(&message(&[], &attrs, NLRI), &ebgp4(), "ORIGIN");
}

#[test]
fn withdraws_when_origin_length_wrong() {
    let mut attrs = attr(WK, code::ORIGIN, &[0, 0]);
    attrs.extend(as_path4(&[65001]));
    attrs.extend(next_hop());
    assert_withdrawn(&message(&[], &attrs, NLRI), &ebgp4(), "ORIGIN");
}

#[test]
fn withdraws_when_attribute_flags_wrong() {
    // ORIGIN marked optional.
    let mut attrs = attr(OT, code::ORIGIN, &[0]);
    attrs.extend(as_path4(&[65001]));
    attrs.extend(next_hop());
    assert_withdrawn(&message(&[], &attrs, NLRI), &ebgp4(), "flags");
}

#[test]
fn withdraws_when_well_known_attribute_has_partial_bit() {
    let mut attrs = attr(WK | flag::PARTIAL, code::ORIGIN, &[0]);
    attrs.extend(as_path4(&[65001]));
    attrs.extend(next_hop());
    assert_withdrawn(&message(&[], &attrs, NLRI), &ebgp4(), "flags");
}

#[test]
fn accepts_partial_bit_on_optional_transitive_attribute() {
    let comm = attr(OT | flag::PARTIAL, code::COMMUNITIES, &[0, 1, 0, 2]);
    let u = decode_ok(&message(&[], &with(&[comm]), NLRI), &ebgp4());
    assert_eq!(u.treat_as_withdraw, None);
    assert_eq!(u.attributes.communities, vec![0x0001_0002]);
}

#[test]
fn accepts_extended_length_on_short_attribute() {
    let med = attr(
        ON | flag::EXTENDED_LENGTH,
        code::MULTI_EXIT_DISC,
        &7u32.to_be_bytes(),
    );
    let u = decode_ok(&message(&[], &with(&[med]), NLRI), &ebgp4());
    assert_eq!(u.attributes.med, Some(7));
}

fn path_attrs(as_path_value: &[u8]) -> Vec<u8> {
    let mut attrs = origin_igp();
    attrs.extend(attr(WK, code::AS_PATH, as_path_value));
    attrs.extend(next_hop());
    attrs
}

#[test]
fn withdraws_when_as_path_segment_overruns() {
    let msg = message(&[], &path_attrs(&[2, 2, 0, 0, 0xfd, 0xe9]), NLRI);
    assert_withdrawn(&msg, &ebgp4(), "AS_PATH");
}

#[test]
fn withdraws_when_as_path_segment_is_empty() {
    assert_withdrawn(
        &message(&[], &path_attrs(&[2, 0]), NLRI),
        &ebgp4(),
        "AS_PATH",
    );
}

#[test]
fn withdraws_when_as_path_segment_type_unknown() {
    let msg = message(&[], &path_attrs(&[5, 1, 0, 0, 0xfd, 0xe9]), NLRI);
    assert_withdrawn(&msg, &ebgp4(), "AS_PATH");
}

#[test]
fn withdraws_when_as_path_ends_with_a_single_octet() {
    let msg = message(&[], &path_attrs(&[2, 1, 0, 0, 0xfd, 0xe9, 2]), NLRI);
    assert_withdrawn(&msg, &ebgp4(), "AS_PATH");
}

#[test]
fn withdraws_when_next_hop_length_wrong() {
    let mut attrs = origin_igp();
    attrs.extend(as_path4(&[65001]));
    attrs.extend(attr(WK, code::NEXT_HOP, &[10, 0, 0, 1, 0]));
    assert_withdrawn(&message(&[], &attrs, NLRI), &ebgp4(), "NEXT_HOP");
}

#[test]
fn withdraws_when_next_hop_is_not_a_host_address() {
    for nh in [[0, 0, 0, 0], [224, 0, 0, 5], [255, 255, 255, 255]] {
        let mut attrs = origin_igp();
        attrs.extend(as_path4(&[65001]));
        attrs.extend(attr(WK, code::NEXT_HOP, &nh));
        assert_withdrawn(&message(&[], &attrs, NLRI), &ebgp4(), "NEXT_HOP");
    }
}

#[test]
fn withdraws_when_next_hop_missing_with_ipv4_nlri() {
    let mut attrs = origin_igp();
    attrs.extend(as_path4(&[65001]));
    assert_withdrawn(&message(&[], &attrs, NLRI), &ebgp4(), "NEXT_HOP");
}

#[test]
fn withdraws_when_origin_missing() {
    let mut attrs = as_path4(&[65001]);
    attrs.extend(next_hop());
    assert_withdrawn(&message(&[], &attrs, NLRI), &ebgp4(), "ORIGIN");
}

#[test]
fn withdraws_when_as_path_missing() {
    let mut attrs = origin_igp();
    attrs.extend(next_hop());
    assert_withdrawn(&message(&[], &attrs, NLRI), &ebgp4(), "AS_PATH");
}

#[test]
fn withdraws_when_local_pref_missing_from_ibgp_peer() {
    assert_withdrawn(&message(&[], &with(&[]), NLRI), &ibgp4(), "LOCAL_PREF");
    let u = decode_ok(&message(&[], &with(&[local_pref()]), NLRI), &ibgp4());
    assert_eq!(u.treat_as_withdraw, None);
    assert_eq!(u.attributes.local_pref, Some(100));
}

#[test]
fn withdraws_when_local_pref_length_wrong_from_ibgp_peer() {
    let lp = attr(WK, code::LOCAL_PREF, &[0, 100]);
    assert_withdrawn(&message(&[], &with(&[lp]), NLRI), &ibgp4(), "LOCAL_PREF");
}

#[test]
fn discards_local_pref_from_ebgp_peer() {
    let u = assert_discarded(
        &message(&[], &with(&[local_pref()]), NLRI),
        &ebgp4(),
        "LOCAL_PREF",
    );
    assert_eq!(u.attributes.local_pref, None);
}

#[test]
fn discards_originator_id_and_cluster_list_from_ebgp_peer() {
    let oid = attr(ON, code::ORIGINATOR_ID, &[1, 2, 3, 4]);
    let cl = attr(ON, code::CLUSTER_LIST, &[1, 2, 3, 4]);
    let u = assert_discarded(
        &message(&[], &with(&[oid, cl]), NLRI),
        &ebgp4(),
        "ORIGINATOR_ID",
    );
    assert!(u.discarded.iter().any(|d| d.contains("CLUSTER_LIST")));
    assert_eq!(u.attributes.originator_id, None);
    assert!(u.attributes.cluster_list.is_empty());
}

#[test]
fn withdraws_when_med_length_wrong() {
    let med = attr(ON, code::MULTI_EXIT_DISC, &[0, 0, 1]);
    assert_withdrawn(
        &message(&[], &with(&[med]), NLRI),
        &ebgp4(),
        "MULTI_EXIT_DISC",
    );
}

#[test]
fn discards_atomic_aggregate_with_a_value() {
    let aa = attr(WK, code::ATOMIC_AGGREGATE, &[1]);
    let u = assert_discarded(
        &message(&[], &with(&[aa]), NLRI),
        &ebgp4(),
        "ATOMIC_AGGREGATE",
    );
    assert!(!u.attributes.atomic_aggregate);
}

#[test]
fn discards_aggregator_of_wrong_length() {
    let agg = attr(OT, code::AGGREGATOR, &[0, 0, 0xfd, 0xe9, 10, 0, 0]);
    let u = assert_discarded(&message(&[], &with(&[agg]), NLRI), &ebgp4(), "AGGREGATOR");
    assert_eq!(u.attributes.aggregator, None);
}

#[test]
fn discards_aggregator_with_flags_wrong() {
    let agg = attr(WK, code::AGGREGATOR, &[0, 0, 0xfd, 0xe9, 10, 0, 0, 1]);
    assert_discarded(&message(&[], &with(&[agg]), NLRI), &ebgp4(), "AGGREGATOR");
}

#[test]
fn withdraws_when_communities_length_not_multiple_of_four() {
    let c = attr(OT, code::COMMUNITIES, &[0, 1, 0, 2, 0]);
    assert_withdrawn(&message(&[], &with(&[c]), NLRI), &ebgp4(), "COMMUNITIES");
}

#[test]
fn withdraws_when_communities_empty() {
    let c = attr(OT, code::COMMUNITIES, &[]);
    assert_withdrawn(&message(&[], &with(&[c]), NLRI), &ebgp4(), "COMMUNITIES");
}

#[test]
fn withdraws_when_large_community_length_not_multiple_of_twelve() {
    let c = attr(OT, code::LARGE_COMMUNITY, &[0; 13]);
    assert_withdrawn(
        &message(&[], &with(&[c]), NLRI),
        &ebgp4(),
        "LARGE_COMMUNITY",
    );
}

#[test]
fn withdraws_when_originator_id_length_wrong_from_ibgp_peer() {
    let oid = attr(ON, code::ORIGINATOR_ID, &[1, 2, 3]);
    let msg = message(&[], &with(&[local_pref(), oid]), NLRI);
    assert_withdrawn(&msg, &ibgp4(), "ORIGINATOR_ID");
}

#[test]
fn withdraws_when_cluster_list_length_not_multiple_of_four_from_ibgp_peer() {
    let cl = attr(ON, code::CLUSTER_LIST, &[1, 2, 3, 4, 5, 6]);
    let msg = message(&[], &with(&[local_pref(), cl]), NLRI);
    assert_withdrawn(&msg, &ibgp4(), "CLUSTER_LIST");
}

#[test]
fn discards_as4_path_from_four_octet_peer() {
    let p = attr(OT, code::AS4_PATH, &[2, 1, 0, 0, 0xfd, 0xe9]);
    assert_discarded(&message(&[], &with(&[p]), NLRI), &ebgp4(), "AS4_PATH");
}

fn two_octet_base() -> Vec<u8> {
    let mut v = origin_igp();
    v.extend(attr(WK, code::AS_PATH, &[2, 2, 0xfd, 0xe9, 0x5b, 0xa0]));
    v.extend(next_hop());
    v
}

#[test]
fn discards_malformed_as4_path_from_two_octet_peer() {
    let mut attrs = two_octet_base();
    attrs.extend(attr(OT, code::AS4_PATH, &[2, 2, 0, 0, 0xfd, 0xe9]));
    let u = assert_discarded(
        &message(&[], &attrs, NLRI),
        &CodecContext::default(),
        "AS4_PATH",
    );
    let want = AsPath {
        segments: vec![AsSegment::Sequence(vec![65001, 23456])],
    };
    assert_eq!(u.attributes.as_path, want);
}

#[test]
fn discards_as4_aggregator_of_wrong_length() {
    let mut attrs = two_octet_base();
    attrs.extend(attr(OT, code::AS4_AGGREGATOR, &[0, 0, 0xfd, 0xe9, 10, 0]));
    assert_discarded(
        &message(&[], &attrs, NLRI),
        &CodecContext::default(),
        "AS4_AGGREGATOR",
    );
}

#[test]
fn merges_as4_path_and_as4_aggregator_from_two_octet_peer() {
    let mut attrs = two_octet_base();
    attrs.extend(attr(OT, code::AGGREGATOR, &[0x5b, 0xa0, 10, 9, 9, 9]));
    attrs.extend(attr(OT, code::AS4_PATH, &[2, 1, 0xfa, 0x56, 0xea, 0x05]));
    attrs.extend(attr(
        OT,
        code::AS4_AGGREGATOR,
        &[0xfa, 0x56, 0xea, 0x05, 10, 9, 9, 9],
    ));
    let u = decode_ok(&message(&[], &attrs, NLRI), &CodecContext::default());
    assert!(u.discarded.is_empty(), "{:?}", u.discarded);
    assert_eq!(
        u.attributes.as_path,
        AsPath {
            segments: vec![AsSegment::Sequence(vec![65001, 4_200_000_005])]
        }
    );
    assert_eq!(
        u.attributes.aggregator,
        Some(Aggregator {
            asn: 4_200_000_005,
            address: Ipv4Addr::new(10, 9, 9, 9)
        })
    );
}

#[test]
fn keeps_first_of_duplicate_attributes() {
    let c1 = attr(OT, code::COMMUNITIES, &[0, 1, 0, 1]);
    let c2 = attr(OT, code::COMMUNITIES, &[0, 2, 0, 2]);
    let u = assert_discarded(&message(&[], &with(&[c1, c2]), NLRI), &ebgp4(), "duplicate");
    assert_eq!(u.attributes.communities, vec![0x0001_0001]);
}

fn mp_reach_v6(nh: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 2, 1, nh.len() as u8];
    v.extend_from_slice(nh);
    v.push(0);
    v.extend_from_slice(nlri);
    attr(ON | flag::EXTENDED_LENGTH, code::MP_REACH_NLRI, &v)
}

const V6_NH: [u8; 16] = [0xfd, 0, 0, 0x99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
/// fd00:200::/64.
const V6_NLRI: &[u8] = &[64, 0xfd, 0, 2, 0, 0, 0, 0, 0];

fn v6_attrs(mp: Vec<u8>) -> Vec<u8> {
    let mut attrs = mp;
    attrs.extend(origin_igp());
    attrs.extend(as_path4(&[65001]));
    attrs
}

#[test]
fn accepts_mp_reach_without_next_hop_attribute() {
    let u = decode_ok(
        &message(&[], &v6_attrs(mp_reach_v6(&V6_NH, V6_NLRI)), &[]),
        &ebgp4(),
    );
    assert_eq!(u.treat_as_withdraw, None);
    let r = u.mp_reach.expect("MP_REACH_NLRI");
    assert_eq!(r.family, Family::Ipv6Unicast);
    assert_eq!(r.nlri, vec!["fd00:200::/64".parse().unwrap()]);
}

#[test]
fn withdraws_mp_reach_routes_when_origin_missing() {
    let mut attrs = mp_reach_v6(&V6_NH, V6_NLRI);
    attrs.extend(as_path4(&[65001]));
    let u = decode_ok(&message(&[], &attrs, &[]), &ebgp4());
    assert!(u.treat_as_withdraw.is_some());
    assert_eq!(u.all_withdrawn(), vec!["fd00:200::/64".parse().unwrap()]);
}

#[test]
fn resets_session_when_mp_reach_appears_twice() {
    let mut attrs = v6_attrs(mp_reach_v6(&V6_NH, V6_NLRI));
    attrs.extend(mp_reach_v6(&V6_NH, V6_NLRI));
    assert_reset(
        &message(&[], &attrs, &[]),
        &ebgp4(),
        notif::MALFORMED_ATTRIBUTE_LIST,
    );
}

#[test]
fn resets_session_when_mp_unreach_appears_twice() {
    let un = attr(ON, code::MP_UNREACH_NLRI, &[0, 2, 1]);
    let mut attrs = un.clone();
    attrs.extend(un);
    assert_reset(
        &message(&[], &attrs, &[]),
        &ebgp4(),
        notif::MALFORMED_ATTRIBUTE_LIST,
    );
}

#[test]
fn resets_session_when_mp_reach_next_hop_length_wrong() {
    let mp = mp_reach_v6(&[0xfd; 8], V6_NLRI);
    let err = assert_reset(
        &message(&[], &v6_attrs(mp.clone()), &[]),
        &ebgp4(),
        notif::OPTIONAL_ATTRIBUTE_ERROR,
    );
    assert_eq!(&err.notification().data[..], &mp[..]);
}

#[test]
fn resets_session_when_mp_reach_next_hop_overruns() {
    let mut v = vec![0, 2, 1, 40];
    v.extend_from_slice(&V6_NH);
    let mp = attr(ON, code::MP_REACH_NLRI, &v);
    assert_reset(
        &message(&[], &v6_attrs(mp), &[]),
        &ebgp4(),
        notif::OPTIONAL_ATTRIBUTE_ERROR,
    );
}

#[test]
fn resets_session_when_mp_reach_prefix_too_long() {
    let mut nlri = vec![129];
    nlri.extend_from_slice(&[0; 17]);
    let mp = mp_reach_v6(&V6_NH, &nlri);
    assert_reset(
        &message(&[], &v6_attrs(mp), &[]),
        &ebgp4(),
        notif::OPTIONAL_ATTRIBUTE_ERROR,
    );
}

#[test]
fn resets_session_when_mp_unreach_truncated() {
    let un = attr(ON, code::MP_UNREACH_NLRI, &[0, 2]);
    assert_reset(
        &message(&[], &un, &[]),
        &ebgp4(),
        notif::OPTIONAL_ATTRIBUTE_ERROR,
    );
}

#[test]
fn resets_session_when_mp_unreach_prefix_truncated() {
    let un = attr(ON, code::MP_UNREACH_NLRI, &[0, 2, 1, 64, 0xfd]);
    assert_reset(
        &message(&[], &un, &[]),
        &ebgp4(),
        notif::OPTIONAL_ATTRIBUTE_ERROR,
    );
}

#[test]
fn resets_session_when_mp_reach_flags_wrong() {
    let mut v = vec![0, 2, 1, 16];
    v.extend_from_slice(&V6_NH);
    v.push(0);
    let mp = attr(OT, code::MP_REACH_NLRI, &v);
    assert_reset(
        &message(&[], &v6_attrs(mp), &[]),
        &ebgp4(),
        notif::ATTRIBUTE_FLAGS_ERROR,
    );
}

#[test]
fn ignores_mp_reach_of_unsupported_family() {
    // AFI 1 SAFI 128 (L3VPN).
    let mp = attr(ON, code::MP_REACH_NLRI, &[0, 1, 128, 4, 10, 0, 0, 1, 0]);
    let u = decode_ok(&message(&[], &v6_attrs(mp), &[]), &ebgp4());
    assert_eq!(u.mp_reach, None);
    assert!(u.discarded.iter().any(|d| d.contains("SAFI 128")));
}

#[test]
fn resets_session_for_unrecognized_well_known_attribute() {
    let unknown = attr(WK, 99, &[1, 2]);
    let err = assert_reset(
        &message(&[], &with(std::slice::from_ref(&unknown)), NLRI),
        &ebgp4(),
        notif::UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE,
    );
    assert_eq!(&err.notification().data[..], &unknown[..]);
}

#[test]
fn keeps_unknown_optional_transitive_and_passes_it_on_partial() {
    let unknown = attr(OT, 99, &[1, 2]);
    let u = decode_ok(&message(&[], &with(&[unknown]), NLRI), &ebgp4());
    assert_eq!(u.attributes.unknown.len(), 1);
    assert_eq!(u.attributes.unknown[0].type_code, 99);
    let bytes = Message::Update(u).to_bytes(&ebgp4()).unwrap();
    let again = decode_ok(&bytes, &ebgp4());
    assert_eq!(again.attributes.unknown[0].flags, OT | flag::PARTIAL);
    assert_eq!(&again.attributes.unknown[0].value[..], &[1, 2]);
}

#[test]
fn drops_unknown_optional_non_transitive() {
    let unknown = attr(ON, 99, &[1, 2]);
    let u = decode_ok(&message(&[], &with(&[unknown]), NLRI), &ebgp4());
    assert!(u.attributes.unknown.is_empty());
    assert_eq!(u.treat_as_withdraw, None);
}

#[test]
fn withdraws_when_attribute_overruns_the_list_but_still_reads_nlri() {
    let mut attrs = with(&[]);
    // A MED claiming 4 octets with only 2 left in the list.
    attrs.extend_from_slice(&[ON, code::MULTI_EXIT_DISC, 4, 0, 0]);
    assert_withdrawn(&message(&[], &attrs, NLRI), &ebgp4(), "overruns");
}

#[test]
fn withdraws_when_list_ends_inside_an_attribute_header() {
    let mut attrs = with(&[]);
    attrs.extend_from_slice(&[ON, code::MULTI_EXIT_DISC]);
    assert_withdrawn(&message(&[], &attrs, NLRI), &ebgp4(), "overruns");
}

#[test]
fn resets_session_when_withdrawn_length_overruns_the_message() {
    let mut msg = message(&[], &with(&[]), NLRI);
    msg[19..21].copy_from_slice(&500u16.to_be_bytes());
    assert_reset(&msg, &ebgp4(), notif::MALFORMED_ATTRIBUTE_LIST);
}

#[test]
fn resets_session_when_total_attribute_length_overruns_the_message() {
    let mut msg = message(&[], &with(&[]), NLRI);
    msg[21..23].copy_from_slice(&500u16.to_be_bytes());
    assert_reset(&msg, &ebgp4(), notif::MALFORMED_ATTRIBUTE_LIST);
}

#[test]
fn resets_session_when_nlri_prefix_too_long() {
    let msg = message(&[], &with(&[]), &[33, 10, 0, 0, 0, 0]);
    assert_reset(&msg, &ebgp4(), notif::INVALID_NETWORK_FIELD);
}

#[test]
fn resets_session_when_nlri_prefix_truncated() {
    let msg = message(&[], &with(&[]), &[24, 10, 0]);
    assert_reset(&msg, &ebgp4(), notif::INVALID_NETWORK_FIELD);
}

#[test]
fn resets_session_when_withdrawn_prefix_malformed() {
    let msg = message(&[40, 1, 2, 3, 4, 5], &[], &[]);
    assert_reset(&msg, &ebgp4(), notif::INVALID_NETWORK_FIELD);
}

#[test]
fn session_reset_wins_over_treat_as_withdraw() {
    let mut attrs = attr(WK, code::ORIGIN, &[7]);
    attrs.extend(attr(WK, 99, &[]));
    assert_reset(
        &message(&[], &attrs, NLRI),
        &ebgp4(),
        notif::UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE,
    );
}

#[test]
fn treat_as_withdraw_and_discard_are_both_reported() {
    let aa = attr(WK, code::ATOMIC_AGGREGATE, &[1]);
    let med = attr(ON, code::MULTI_EXIT_DISC, &[1]);
    let u = assert_withdrawn(
        &message(&[], &with(&[aa, med]), NLRI),
        &ebgp4(),
        "MULTI_EXIT_DISC",
    );
    assert!(u.discarded.iter().any(|d| d.contains("ATOMIC_AGGREGATE")));
}

#[test]
fn withdrawal_only_update_needs_no_attributes() {
    let u = decode_ok(&message(&[24, 10, 2, 3], &[], &[]), &ibgp4());
    assert_eq!(u.treat_as_withdraw, None);
    assert_eq!(u.withdrawn, vec!["10.2.3.0/24".parse::<Prefix4>().unwrap()]);
}

#[test]
fn rejects_update_longer_than_session_maximum() {
    let big = with(&[attr(
        OT | flag::EXTENDED_LENGTH,
        code::COMMUNITIES,
        &[0; 4200],
    )]);
    let msg = message(&[], &big, NLRI);
    let err = wire::decode(&msg, &ebgp4()).unwrap_err();
    let n = err.notification();
    assert_eq!((n.code, n.subcode), (1, 2));
    assert_eq!(&n.data[..], &(msg.len() as u16).to_be_bytes());
    // The same message is fine once extended messages are negotiated.
    let ext = CodecContext {
        extended_message: true,
        ..ebgp4()
    };
    assert_eq!(decode_ok(&msg, &ext).attributes.communities.len(), 1050);
}

#[test]
fn rejects_buffer_that_is_not_exactly_one_message() {
    let mut msg = message(&[], &with(&[]), NLRI);
    msg.push(0);
    let err = wire::decode(&msg, &ebgp4()).unwrap_err();
    assert_eq!(err.notification().subcode, notif::BAD_MESSAGE_LENGTH);
}
