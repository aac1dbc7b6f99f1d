//! Packing many prefixes into UPDATEs: every prefix arrives exactly once, in order, every
//! message is within the session's limit, and each packed message is byte for byte what
//! `Message::encode` writes for the same UPDATE.

use margay_bgp::wire::{
    self, AsPath, AsSegment, CodecContext, EncodeError, Family, LargeCommunity, Message, MpNextHop,
    Origin, PathAttributes, Prefix, pack_announcements, pack_withdrawals,
};
use std::net::{Ipv4Addr, Ipv6Addr};

fn attrs() -> PathAttributes {
    PathAttributes {
        origin: Some(Origin::Igp),
        as_path: AsPath {
            segments: vec![AsSegment::Sequence(vec![65001, 4_200_000_001])],
        },
        med: Some(10),
        local_pref: Some(100),
        communities: vec![0xfde8_0064],
        large_communities: vec![LargeCommunity {
            global_admin: 65000,
            local_data1: 1,
            local_data2: 2,
        }],
        ..PathAttributes::default()
    }
}

fn v4_prefixes(n: u32) -> Vec<Prefix> {
    (0..n)
        .map(|i| {
            let len = [24, 26, 32, 16][(i % 4) as usize];
            let addr = Ipv4Addr::from(0x0a00_0000u32 + (i << 8));
            Prefix::V4(wire::Prefix4::new(addr, len).unwrap().trunc())
        })
        .collect()
}

fn v6_prefixes(n: u32) -> Vec<Prefix> {
    (0..n)
        .map(|i| {
            let addr = Ipv6Addr::from((0xfd00u128 << 112) | ((i as u128) << 64));
            let len = [64, 48, 128, 122][(i % 4) as usize];
            Prefix::V6(wire::Prefix6::new(addr, len).unwrap().trunc())
        })
        .collect()
}

fn ibgp(extended: bool) -> CodecContext {
    CodecContext {
        four_octet_as: true,
        extended_message: extended,
        ibgp: true,
    }
}

/// Decodes every packed message, checks its size and canonical form, returns its routes.
fn unpack(msgs: &[bytes::Bytes], ctx: &CodecContext) -> (Vec<Prefix>, Vec<Prefix>) {
    let mut announced = Vec::new();
    let mut withdrawn = Vec::new();
    for m in msgs {
        assert!(m.len() <= ctx.max_message_len());
        let msg = wire::decode(m, ctx).expect("packed message decodes");
        assert_eq!(msg.to_bytes(ctx).unwrap(), *m, "packed bytes are canonical");
        let Message::Update(u) = msg else {
            panic!("not an UPDATE")
        };
        assert_eq!(u.treat_as_withdraw, None);
        announced.extend(u.all_announced());
        withdrawn.extend(u.all_withdrawn());
    }
    (announced, withdrawn)
}

#[test]
fn packs_ipv4_announcements_across_messages() {
    let prefixes = v4_prefixes(5000);
    let nh = MpNextHop::V4(Ipv4Addr::new(10, 99, 0, 1));
    let ctx = ibgp(false);
    let msgs = pack_announcements(&attrs(), &nh, Family::Ipv4Unicast, &prefixes, &ctx).unwrap();
    assert!(msgs.len() > 1);
    // All but the last are full to within one prefix.
    for m in &msgs[..msgs.len() - 1] {
        assert!(m.len() > 4096 - 5, "{}", m.len());
    }
    let (announced, withdrawn) = unpack(&msgs, &ctx);
    assert_eq!(announced, prefixes);
    assert!(withdrawn.is_empty());
    let Message::Update(u) = wire::decode(&msgs[0], &ctx).unwrap() else {
        unreachable!()
    };
    let mut want = attrs();
    want.next_hop = Some(Ipv4Addr::new(10, 99, 0, 1));
    assert_eq!(u.attributes, want);
}

#[test]
fn packs_ipv6_announcements_in_mp_reach() {
    let prefixes = v6_prefixes(3000);
    let nh = MpNextHop::V6 {
        global: "fd00:99::1".parse().unwrap(),
        link_local: Some("fe80::1".parse().unwrap()),
    };
    for ctx in [ibgp(false), ibgp(true)] {
        let msgs = pack_announcements(&attrs(), &nh, Family::Ipv6Unicast, &prefixes, &ctx).unwrap();
        let (announced, _) = unpack(&msgs, &ctx);
        assert_eq!(announced, prefixes);
        let Message::Update(u) = wire::decode(&msgs[0], &ctx).unwrap() else {
            unreachable!()
        };
        assert_eq!(u.mp_reach.unwrap().next_hop, nh);
        assert_eq!(u.attributes, attrs());
    }
}

#[test]
fn extended_messages_need_fewer_updates() {
    let prefixes = v4_prefixes(20000);
    let nh = MpNextHop::V4(Ipv4Addr::new(10, 99, 0, 1));
    let small =
        pack_announcements(&attrs(), &nh, Family::Ipv4Unicast, &prefixes, &ibgp(false)).unwrap();
    let big =
        pack_announcements(&attrs(), &nh, Family::Ipv4Unicast, &prefixes, &ibgp(true)).unwrap();
    assert!(
        big.len() * 10 < small.len(),
        "{} vs {}",
        big.len(),
        small.len()
    );
    assert_eq!(unpack(&big, &ibgp(true)).0, prefixes);
}

#[test]
fn packs_withdrawals_for_both_families() {
    for (family, prefixes) in [
        (Family::Ipv4Unicast, v4_prefixes(4000)),
        (Family::Ipv6Unicast, v6_prefixes(4000)),
    ] {
        let ctx = ibgp(false);
        let msgs = pack_withdrawals(family, &prefixes, &ctx).unwrap();
        assert!(msgs.len() > 1);
        let (announced, withdrawn) = unpack(&msgs, &ctx);
        assert!(announced.is_empty());
        assert_eq!(withdrawn, prefixes);
    }
}

#[test]
fn packs_nothing_for_no_prefixes() {
    let nh = MpNextHop::V4(Ipv4Addr::new(10, 99, 0, 1));
    let ctx = ibgp(false);
    assert!(
        pack_announcements(&attrs(), &nh, Family::Ipv4Unicast, &[], &ctx)
            .unwrap()
            .is_empty()
    );
    assert!(
        pack_withdrawals(Family::Ipv6Unicast, &[], &ctx)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn refuses_attributes_that_leave_no_room_for_nlri() {
    let mut a = attrs();
    a.communities = (0..1100).collect();
    let nh = MpNextHop::V4(Ipv4Addr::new(10, 99, 0, 1));
    let err = pack_announcements(&a, &nh, Family::Ipv4Unicast, &v4_prefixes(1), &ibgp(false))
        .unwrap_err();
    assert!(
        matches!(err, EncodeError::AttributesTooLarge { .. }),
        "{err}"
    );
}

#[test]
fn refuses_mismatched_next_hop_and_prefix_families() {
    let ctx = ibgp(false);
    let v6_nh = MpNextHop::V6 {
        global: "fd00::1".parse().unwrap(),
        link_local: None,
    };
    assert!(matches!(
        pack_announcements(&attrs(), &v6_nh, Family::Ipv4Unicast, &v4_prefixes(1), &ctx),
        Err(EncodeError::FamilyMismatch { .. })
    ));
    assert!(matches!(
        pack_announcements(&attrs(), &v6_nh, Family::Ipv6Unicast, &v4_prefixes(1), &ctx),
        Err(EncodeError::FamilyMismatch { .. })
    ));
    assert!(matches!(
        pack_withdrawals(Family::Ipv4Unicast, &v6_prefixes(1), &ctx),
        Err(EncodeError::FamilyMismatch { .. })
    ));
}

#[test]
fn packs_for_two_octet_peer_with_as4_path() {
    let ctx = CodecContext::default();
    let nh = MpNextHop::V4(Ipv4Addr::new(10, 99, 0, 1));
    let mut a = attrs();
    a.local_pref = None;
    let prefixes = v4_prefixes(10);
    let msgs = pack_announcements(&a, &nh, Family::Ipv4Unicast, &prefixes, &ctx).unwrap();
    let Message::Update(u) = wire::decode(&msgs[0], &ctx).unwrap() else {
        unreachable!()
    };
    assert_eq!(u.attributes.as_path, a.as_path);
    assert_eq!(unpack(&msgs, &ctx).0, prefixes);
}

/// The route reflector's load: a million IPv4 prefixes pack into full 4096-octet UPDATEs and
/// decode back to the same prefixes, in order. (Speed is measured by bench/rr-throughput.sh,
/// not here.)
#[test]
fn packs_and_decodes_a_million_prefixes() {
    let prefixes: Vec<Prefix> = (0..1_000_000u32)
        .map(|i| {
            Prefix::V4(wire::Prefix4::new(Ipv4Addr::from(0x0a00_0000u32 + (i << 8)), 24).unwrap())
        })
        .collect();
    let nh = MpNextHop::V4(Ipv4Addr::new(10, 99, 0, 1));
    let ctx = ibgp(false);
    let msgs = pack_announcements(&attrs(), &nh, Family::Ipv4Unicast, &prefixes, &ctx).unwrap();
    assert!(
        msgs.iter().all(|m| m.len() <= 4096),
        "no message over the 4096-octet limit"
    );
    let full = msgs.iter().filter(|m| m.len() > 4096 - 4).count();
    assert!(
        full >= msgs.len() - 1,
        "every message but the last is full: {full} of {}",
        msgs.len()
    );
    assert_eq!(unpack(&msgs, &ctx).0, prefixes);
}
