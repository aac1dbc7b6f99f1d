//! Every message type and every attribute survives encode → decode unchanged, under the
//! contexts a session can negotiate.

use bytes::Bytes;
use margay_bgp::wire::{
    self, Aggregator, AsPath, AsSegment, Capability, CodecContext, EncodeError, Family,
    GracefulRestart, GracefulRestartFamily, LargeCommunity, Message, MpNextHop, MpReach, MpUnreach,
    Notification, Open, Origin, PathAttributes, Prefix, RawAttribute, RouteRefresh, Update, code,
    flag,
};
use std::net::Ipv4Addr;

fn contexts() -> [CodecContext; 3] {
    [
        CodecContext::default(),
        CodecContext {
            four_octet_as: true,
            extended_message: false,
            ibgp: true,
        },
        CodecContext {
            four_octet_as: true,
            extended_message: true,
            ibgp: false,
        },
    ]
}

fn round_trip(msg: &Message, ctx: &CodecContext) -> Message {
    let bytes = msg.to_bytes(ctx).expect("encode");
    assert_eq!(wire::frame_len(&bytes, ctx), Ok(Some(bytes.len())));
    wire::decode(&bytes, ctx).expect("decode")
}

fn full_attributes() -> PathAttributes {
    PathAttributes {
        origin: Some(Origin::Egp),
        as_path: AsPath {
            segments: vec![
                AsSegment::Sequence(vec![65001, 4_200_000_001, 64512]),
                AsSegment::Set(vec![65010, 65011]),
            ],
        },
        next_hop: Some(Ipv4Addr::new(192, 0, 2, 1)),
        med: Some(0),
        local_pref: Some(200),
        atomic_aggregate: true,
        aggregator: Some(Aggregator {
            asn: 4_200_000_009,
            address: Ipv4Addr::new(192, 0, 2, 9),
        }),
        communities: vec![0xfde8_0064, 0xffff_ff01],
        large_communities: vec![LargeCommunity {
            global_admin: 4_200_000_001,
            local_data1: 7,
            local_data2: 8,
        }],
        originator_id: Some(Ipv4Addr::new(10, 0, 0, 7)),
        cluster_list: vec![Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)],
        unknown: vec![],
    }
}

#[test]
fn round_trips_update_with_every_attribute_under_every_context() {
    for ctx in contexts() {
        let mut attrs = full_attributes();
        if !ctx.ibgp {
            // Not accepted from eBGP peers (RFC 7606 §7).
            attrs.local_pref = None;
            attrs.originator_id = None;
            attrs.cluster_list.clear();
        }
        let u = Update {
            withdrawn: vec!["10.9.0.0/16".parse().unwrap()],
            attributes: attrs,
            nlri: vec![
                "10.1.0.0/16".parse().unwrap(),
                "10.2.3.4/32".parse().unwrap(),
            ],
            ..Update::default()
        };
        let msg = Message::Update(u);
        assert_eq!(round_trip(&msg, &ctx), msg, "{ctx:?}");
    }
}

#[test]
fn two_octet_peer_gets_as_trans_and_as4_attributes() {
    let ctx = CodecContext::default();
    let u = Update {
        attributes: full_attributes(),
        nlri: vec!["10.1.0.0/16".parse().unwrap()],
        ..Update::default()
    };
    let bytes = Message::Update(u).to_bytes(&ctx).unwrap();
    // AS_PATH: ORIGIN (4 octets) after 23 octets of header and length fields, then
    // AS_PATH flags, code, length 14: SEQUENCE of 3 with AS_TRANS in the middle, SET of 2.
    let as_path = &bytes[27..27 + 17];
    assert_eq!(
        as_path,
        &[
            WK,
            code::AS_PATH,
            14,
            2,
            3,
            0xfd,
            0xe9,
            0x5b,
            0xa0,
            0xfc,
            0x00,
            1,
            2,
            0xfd,
            0xf2,
            0xfd,
            0xf3
        ]
    );
    let has = |c: u8| bytes.windows(2).any(|w| w[0] & 0xc0 == 0xc0 && w[1] == c);
    assert!(has(code::AS4_PATH) && has(code::AS4_AGGREGATOR));
}

const WK: u8 = flag::TRANSITIVE;

#[test]
fn four_octet_peer_gets_no_as4_attributes() {
    let ctx = contexts()[1];
    let u = Update {
        attributes: full_attributes(),
        nlri: vec!["10.1.0.0/16".parse().unwrap()],
        ..Update::default()
    };
    let bytes = Message::Update(u).to_bytes(&ctx).unwrap();
    let has = |c: u8| bytes.windows(2).any(|w| w[0] & 0xc0 == 0xc0 && w[1] == c);
    assert!(!has(code::AS4_PATH) && !has(code::AS4_AGGREGATOR));
}

#[test]
fn round_trips_ipv6_mp_reach_with_link_local_next_hop_and_mp_unreach() {
    for link_local in [None, Some("fe80::1".parse().unwrap())] {
        for ctx in contexts() {
            let u = Update {
                attributes: PathAttributes {
                    origin: Some(Origin::Igp),
                    as_path: AsPath {
                        segments: vec![AsSegment::Sequence(vec![65001])],
                    },
                    local_pref: ctx.ibgp.then_some(100),
                    ..PathAttributes::default()
                },
                mp_reach: Some(MpReach {
                    family: Family::Ipv6Unicast,
                    next_hop: MpNextHop::V6 {
                        global: "fd00::1".parse().unwrap(),
                        link_local,
                    },
                    nlri: vec!["fd00:200::/64".parse().unwrap(), "::/0".parse().unwrap()],
                }),
                mp_unreach: Some(MpUnreach {
                    family: Family::Ipv6Unicast,
                    withdrawn: vec!["fd00:300::/56".parse().unwrap()],
                }),
                ..Update::default()
            };
            let msg = Message::Update(u);
            assert_eq!(round_trip(&msg, &ctx), msg);
        }
    }
}

#[test]
fn round_trips_ipv4_in_mp_reach() {
    let u = Update {
        attributes: PathAttributes {
            origin: Some(Origin::Incomplete),
            ..PathAttributes::default()
        },
        mp_reach: Some(MpReach {
            family: Family::Ipv4Unicast,
            next_hop: MpNextHop::V4(Ipv4Addr::new(10, 0, 0, 1)),
            nlri: vec!["10.1.0.0/16".parse().unwrap()],
        }),
        ..Update::default()
    };
    let msg = Message::Update(u);
    assert_eq!(round_trip(&msg, &contexts()[2]), msg);
}

#[test]
fn round_trips_end_of_rib_for_both_families() {
    for family in [Family::Ipv4Unicast, Family::Ipv6Unicast] {
        let msg = Message::Update(Update::end_of_rib(family));
        let Message::Update(back) = round_trip(&msg, &CodecContext::default()) else {
            panic!("not an UPDATE");
        };
        assert_eq!(back.end_of_rib_family(), Some(family));
    }
}

#[test]
fn round_trips_open_with_every_capability() {
    let open = Open {
        version: 4,
        my_as: 23456,
        hold_time: 90,
        bgp_identifier: Ipv4Addr::new(10, 0, 0, 1),
        capabilities: vec![
            Capability::Multiprotocol { afi: 1, safi: 1 },
            Capability::Multiprotocol { afi: 2, safi: 1 },
            Capability::RouteRefresh,
            Capability::EnhancedRouteRefresh,
            Capability::ExtendedMessage,
            Capability::FourOctetAs(4_200_000_001),
            Capability::GracefulRestart(GracefulRestart {
                restart_state: false,
                notification: true,
                restart_time: 120,
                families: vec![GracefulRestartFamily {
                    afi: 2,
                    safi: 1,
                    forwarding_preserved: true,
                }],
            }),
            Capability::Unknown {
                code: 71,
                value: Bytes::new(),
            },
        ],
    };
    let msg = Message::Open(open);
    let back = round_trip(&msg, &CodecContext::default());
    assert_eq!(back, msg);
    let Message::Open(o) = back else {
        unreachable!()
    };
    assert_eq!(o.asn(), 4_200_000_001);
    assert_eq!(o.families(), vec![Family::Ipv4Unicast, Family::Ipv6Unicast]);
}

#[test]
fn round_trips_open_without_optional_parameters() {
    let msg = Message::Open(Open {
        version: 4,
        my_as: 65000,
        hold_time: 0,
        bgp_identifier: Ipv4Addr::new(1, 1, 1, 1),
        capabilities: vec![],
    });
    let bytes = msg.to_bytes(&CodecContext::default()).unwrap();
    assert_eq!(bytes.len(), 29);
    assert_eq!(round_trip(&msg, &CodecContext::default()), msg);
}

#[test]
fn round_trips_notification_keepalive_and_route_refresh() {
    let ctx = CodecContext::default();
    for msg in [
        Message::Notification(Notification::new(6, 4, Bytes::from_static(b"\x05reset"))),
        Message::Notification(Notification::new(4, 0, Bytes::new())),
        Message::Keepalive,
        Message::RouteRefresh(RouteRefresh {
            afi: 2,
            subtype: 1,
            safi: 1,
        }),
    ] {
        assert_eq!(round_trip(&msg, &ctx), msg);
    }
    assert_eq!(Message::Keepalive.to_bytes(&ctx).unwrap().len(), 19);
}

#[test]
fn round_trips_unknown_transitive_attribute_with_partial_bit() {
    let raw = RawAttribute {
        flags: flag::OPTIONAL | flag::TRANSITIVE | flag::PARTIAL,
        type_code: 200,
        value: Bytes::from(vec![7u8; 300]),
    };
    let u = Update {
        attributes: PathAttributes {
            origin: Some(Origin::Igp),
            next_hop: Some(Ipv4Addr::new(10, 0, 0, 1)),
            local_pref: Some(100),
            unknown: vec![raw],
            ..PathAttributes::default()
        },
        nlri: vec!["10.0.0.0/8".parse().unwrap()],
        ..Update::default()
    };
    let msg = Message::Update(u);
    assert_eq!(round_trip(&msg, &contexts()[1]), msg);
}

#[test]
fn refuses_to_encode_update_beyond_message_limit() {
    let nlri: Vec<_> = (0..2000u32)
        .map(|i| wire::Prefix4::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24).unwrap())
        .collect();
    let msg = Message::Update(Update {
        withdrawn: nlri,
        ..Update::default()
    });
    let err = msg.to_bytes(&CodecContext::default()).unwrap_err();
    assert!(
        matches!(err, EncodeError::MessageTooLong { max: 4096, .. }),
        "{err}"
    );
    assert!(msg.to_bytes(&contexts()[2]).is_ok());
}

#[test]
fn refuses_prefix_of_the_wrong_family_in_mp_attributes() {
    let msg = Message::Update(Update {
        mp_unreach: Some(MpUnreach {
            family: Family::Ipv6Unicast,
            withdrawn: vec![Prefix::V4("10.0.0.0/8".parse().unwrap())],
        }),
        ..Update::default()
    });
    assert!(matches!(
        msg.to_bytes(&CodecContext::default()),
        Err(EncodeError::FamilyMismatch { .. })
    ));
}
