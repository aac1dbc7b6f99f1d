//! Golden bytes from real BIRD 2 daemons (captured by scripts/capture-bird-golden.sh): every
//! message decodes, carries what the BIRD configuration in that script says, and encodes back to
//! the same bytes.
//!
//! Sessions (speaker A → B): ibgp4 / ibgp6 (AS 65000, iBGP), ebgp4 / ebgp6 (AS 4200000001 to
//! 65010), as2 (AS 65001 to 65020 with the 4-octet AS capability disabled).

use margay_bgp::wire::{
    self, AsPath, AsSegment, Capability, CodecContext, Family, LargeCommunity, Message, MpNextHop,
    Origin, PathAttributes, Prefix, RouteRefresh, Update,
};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

struct Fixture {
    name: String,
    session: String,
    from_a: bool,
    bytes: Vec<u8>,
}

fn fixtures() -> Vec<Fixture> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bird");
    let mut out: Vec<Fixture> = std::fs::read_dir(&dir)
        .expect("fixture directory")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "hex"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&p).expect("fixture");
            let bytes = hex::decode(text.trim()).expect("hex");
            let mut parts = name.split('-');
            let session = parts.next().unwrap().to_string();
            let from_a = parts.next() == Some("a2b");
            Fixture {
                name,
                session,
                from_a,
                bytes,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(
        out.len() >= 40,
        "expected the captured fixtures, found {}",
        out.len()
    );
    out
}

/// The context the session negotiated: 4-octet AS everywhere but `as2`; iBGP for `ibgp*`.
fn ctx(session: &str) -> CodecContext {
    CodecContext {
        four_octet_as: session != "as2",
        extended_message: false,
        ibgp: session.starts_with("ibgp"),
    }
}

fn decode(f: &Fixture) -> Message {
    let c = ctx(&f.session);
    assert_eq!(
        wire::frame_len(&f.bytes, &c),
        Ok(Some(f.bytes.len())),
        "{}",
        f.name
    );
    wire::decode(&f.bytes, &c).unwrap_or_else(|e| panic!("{}: {e}", f.name))
}

fn p(s: &str) -> Prefix {
    s.parse().unwrap()
}

fn community(a: u16, b: u16) -> u32 {
    ((a as u32) << 16) | b as u32
}

#[test]
fn every_bird_message_decodes_and_reencodes_to_the_same_bytes() {
    for f in fixtures() {
        let msg = decode(&f);
        let again = msg.to_bytes(&ctx(&f.session)).expect("encode");
        assert_eq!(hex::encode(&again), hex::encode(&f.bytes), "{}", f.name);
    }
}

#[test]
fn every_bird_message_passes_the_fuzz_target() {
    for f in fixtures() {
        wire::fuzz_one(&f.bytes);
    }
}

#[test]
fn bird_opens_carry_the_configured_as_and_capabilities() {
    let expect: &[(&str, bool, u16, u32, Ipv4Addr, Family)] = &[
        (
            "ibgp4",
            true,
            65000,
            65000,
            Ipv4Addr::new(10, 99, 0, 1),
            Family::Ipv4Unicast,
        ),
        (
            "ibgp4",
            false,
            65000,
            65000,
            Ipv4Addr::new(10, 99, 0, 2),
            Family::Ipv4Unicast,
        ),
        (
            "ibgp6",
            true,
            65000,
            65000,
            Ipv4Addr::new(10, 99, 0, 1),
            Family::Ipv6Unicast,
        ),
        (
            "ebgp4",
            true,
            23456,
            4_200_000_001,
            Ipv4Addr::new(10, 99, 0, 1),
            Family::Ipv4Unicast,
        ),
        (
            "ebgp4",
            false,
            65010,
            65010,
            Ipv4Addr::new(10, 99, 0, 2),
            Family::Ipv4Unicast,
        ),
        (
            "ebgp6",
            true,
            23456,
            4_200_000_001,
            Ipv4Addr::new(10, 99, 0, 1),
            Family::Ipv6Unicast,
        ),
        (
            "as2",
            true,
            65001,
            65001,
            Ipv4Addr::new(10, 99, 0, 1),
            Family::Ipv4Unicast,
        ),
        (
            "as2",
            false,
            65020,
            65020,
            Ipv4Addr::new(10, 99, 0, 2),
            Family::Ipv4Unicast,
        ),
    ];
    let all = fixtures();
    for (session, from_a, my_as, asn, id, family) in expect {
        let f = all
            .iter()
            .find(|f| f.session == *session && f.from_a == *from_a && f.name.ends_with("open.hex"))
            .unwrap();
        let Message::Open(open) = decode(f) else {
            panic!("{} is not an OPEN", f.name)
        };
        assert_eq!(open.version, 4);
        assert_eq!(open.my_as, *my_as, "{}", f.name);
        assert_eq!(open.asn(), *asn, "{}", f.name);
        assert_eq!(open.hold_time, 90, "{}", f.name);
        assert_eq!(open.bgp_identifier, *id, "{}", f.name);
        assert_eq!(open.families(), vec![*family], "{}", f.name);
        assert!(open.has(|c| matches!(c, Capability::RouteRefresh)));
        assert!(open.has(|c| matches!(c, Capability::EnhancedRouteRefresh)));
        assert!(
            open.has(|c| matches!(c, Capability::GracefulRestart(gr) if gr.restart_time == 120))
        );
        let four = open.has(|c| matches!(c, Capability::FourOctetAs(_)));
        assert_eq!(four, *session != "as2", "{}", f.name);
    }
}

/// Every announcement A sent on a session, with the UPDATE's attributes and next hop.
fn announcements(session: &str) -> BTreeMap<Prefix, (PathAttributes, IpAddr, Option<Ipv6Addr>)> {
    let mut out = BTreeMap::new();
    for f in fixtures()
        .iter()
        .filter(|f| f.session == session && f.from_a)
    {
        let Message::Update(u) = decode(f) else {
            continue;
        };
        assert_eq!(u.treat_as_withdraw, None, "{}", f.name);
        assert!(u.discarded.is_empty(), "{}: {:?}", f.name, u.discarded);
        for prefix in &u.nlri {
            let nh = IpAddr::V4(u.attributes.next_hop.expect("NEXT_HOP"));
            out.insert(Prefix::V4(*prefix), (u.attributes.clone(), nh, None));
        }
        if let Some(r) = &u.mp_reach {
            let ll = match r.next_hop {
                MpNextHop::V6 { link_local, .. } => link_local,
                MpNextHop::V4(_) => None,
            };
            for prefix in &r.nlri {
                out.insert(*prefix, (u.attributes.clone(), r.next_hop.addr(), ll));
            }
        }
    }
    out
}

fn seq(v: &[u32]) -> AsPath {
    AsPath {
        segments: if v.is_empty() {
            vec![]
        } else {
            vec![AsSegment::Sequence(v.to_vec())]
        },
    }
}

#[test]
fn bird_routes_carry_the_configured_attributes() {
    struct Expect {
        session: &'static str,
        prefixes: [&'static str; 3],
        other: Option<&'static str>,
        next_hop: IpAddr,
        link_local: bool,
        own_as: Option<u32>,
    }
    let cases = [
        Expect {
            session: "ibgp4",
            prefixes: ["10.200.0.0/24", "10.200.1.0/26", "10.200.2.5/32"],
            other: Some("10.201.0.0/16"),
            next_hop: "10.99.0.1".parse().unwrap(),
            link_local: false,
            own_as: None,
        },
        Expect {
            session: "ebgp4",
            prefixes: ["10.200.0.0/24", "10.200.1.0/26", "10.200.2.5/32"],
            other: Some("10.201.0.0/16"),
            next_hop: "10.99.1.1".parse().unwrap(),
            link_local: false,
            own_as: Some(4_200_000_001),
        },
        Expect {
            session: "as2",
            prefixes: ["10.200.0.0/24", "10.200.1.0/26", "10.200.2.5/32"],
            other: Some("10.201.0.0/16"),
            next_hop: "10.99.2.1".parse().unwrap(),
            link_local: false,
            own_as: Some(65001),
        },
        Expect {
            session: "ibgp6",
            prefixes: ["fd00:200::/64", "fd00:200:1::/48", "fd00:200:2::5/128"],
            other: None,
            next_hop: "fd00:99::1".parse().unwrap(),
            link_local: false,
            own_as: None,
        },
        Expect {
            session: "ebgp6",
            prefixes: ["fd00:200::/64", "fd00:200:1::/48", "fd00:200:2::5/128"],
            other: None,
            next_hop: "fd00:99:1::1".parse().unwrap(),
            link_local: true,
            own_as: Some(4_200_000_001),
        },
    ];
    for c in cases {
        let routes = announcements(c.session);
        let ibgp = c.session.starts_with("ibgp");
        let own: Vec<u32> = c.own_as.into_iter().collect();
        let n = 3 + c.other.iter().count();
        assert_eq!(routes.len(), n, "{}: {:?}", c.session, routes.keys());
        for (prefix, (_, nh, ll)) in &routes {
            assert_eq!(*nh, c.next_hop, "{} {prefix}", c.session);
            assert_eq!(ll.is_some(), c.link_local, "{} {prefix}", c.session);
            if let Some(ll) = ll {
                assert!(ll.is_unicast_link_local(), "{ll}");
            }
        }

        // 10.200.0.0/24, fd00:200::/64: communities, large community, MED, LOCAL_PREF.
        let (a, _, _) = &routes[&p(c.prefixes[0])];
        assert_eq!(a.origin, Some(Origin::Igp));
        assert_eq!(a.as_path, seq(&own), "{}", c.session);
        assert_eq!(
            a.communities,
            vec![community(65000, 100), community(65000, 200)]
        );
        assert_eq!(
            a.large_communities,
            vec![LargeCommunity {
                global_admin: 4_200_000_001,
                local_data1: 1,
                local_data2: 2
            }]
        );
        assert_eq!(a.med, Some(50));
        assert_eq!(a.local_pref, ibgp.then_some(300), "{}", c.session);

        // 10.200.1.0/26, fd00:200:1::/48: INCOMPLETE, prepended path, NO_EXPORT.
        let (a, _, _) = &routes[&p(c.prefixes[1])];
        assert_eq!(a.origin, Some(Origin::Incomplete));
        let mut path = own.clone();
        path.extend([64512, 4_200_000_005]);
        assert_eq!(a.as_path, seq(&path), "{}", c.session);
        assert_eq!(a.communities, vec![community(65535, 65281)]);
        assert_eq!(a.med, None);

        // The plain route: no communities, BIRD's default LOCAL_PREF on iBGP.
        let (a, _, _) = &routes[&p(c.prefixes[2])];
        assert!(a.communities.is_empty() && a.large_communities.is_empty());
        assert_eq!(a.local_pref, ibgp.then_some(100));

        if let Some(other) = c.other {
            let (a, _, _) = &routes[&p(other)];
            let lc = |a, b| LargeCommunity {
                global_admin: 65000,
                local_data1: a,
                local_data2: b,
            };
            assert_eq!(a.large_communities, vec![lc(7, 8), lc(9, 10)]);
        }
    }
}

#[test]
fn bird_sends_end_of_rib_for_each_family() {
    for (session, family) in [
        ("ibgp4", Family::Ipv4Unicast),
        ("ibgp6", Family::Ipv6Unicast),
        ("ebgp4", Family::Ipv4Unicast),
        ("ebgp6", Family::Ipv6Unicast),
        ("as2", Family::Ipv4Unicast),
    ] {
        for from_a in [true, false] {
            let eor = fixtures()
                .iter()
                .filter(|f| f.session == session && f.from_a == from_a)
                .filter_map(|f| match decode(f) {
                    Message::Update(u) => u.end_of_rib_family(),
                    _ => None,
                })
                .collect::<Vec<_>>();
            assert!(eor.contains(&family), "{session} from_a={from_a}: {eor:?}");
            let ctx = ctx(session);
            let ours = Message::Update(Update::end_of_rib(family))
                .to_bytes(&ctx)
                .unwrap();
            let theirs = fixtures()
                .into_iter()
                .filter(|f| f.session == session && f.from_a == from_a)
                .any(|f| f.bytes == ours[..]);
            assert!(theirs, "{session}: our End-of-RIB differs from BIRD's");
        }
    }
}

#[test]
fn bird_enhanced_route_refresh_brackets_the_resent_routes() {
    let all = fixtures();
    let refreshes: Vec<(bool, RouteRefresh)> = all
        .iter()
        .filter(|f| f.session == "ibgp4")
        .filter_map(|f| match decode(f) {
            Message::RouteRefresh(r) => Some((f.from_a, r)),
            _ => None,
        })
        .collect();
    let rr = |subtype| RouteRefresh {
        afi: 1,
        subtype,
        safi: 1,
    };
    assert!(refreshes.contains(&(false, rr(0))), "{refreshes:?}");
    assert!(refreshes.contains(&(true, rr(1))), "{refreshes:?}");
    assert!(refreshes.contains(&(true, rr(2))), "{refreshes:?}");
}

#[test]
fn bird_shutdown_sends_cease_administrative_shutdown() {
    let n: Vec<_> = fixtures()
        .iter()
        .filter_map(|f| match decode(f) {
            Message::Notification(n) => Some(n),
            _ => None,
        })
        .collect();
    assert_eq!(n.len(), 5);
    assert!(n.iter().all(|n| (n.code, n.subcode) == (6, 2)));
}

/// A cheap, deterministic stand-in for the fuzzer: every single-octet corruption of every
/// fixture (and every fixture with its length field shrunk to cut the body short) goes through
/// the fuzz target, which panics on a broken invariant.
#[test]
fn corrupted_bird_messages_never_break_codec_invariants() {
    for f in fixtures() {
        for i in 0..f.bytes.len() {
            for v in [
                0u8,
                0xff,
                f.bytes[i] ^ 0x01,
                f.bytes[i] ^ 0x80,
                f.bytes[i].wrapping_add(1),
            ] {
                let mut b = f.bytes.clone();
                b[i] = v;
                wire::fuzz_one(&b);
            }
        }
        for cut in 19..f.bytes.len() {
            let mut b = f.bytes[..cut].to_vec();
            b[16..18].copy_from_slice(&(cut as u16).to_be_bytes());
            wire::fuzz_one(&b);
        }
    }
}
