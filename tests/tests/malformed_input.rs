//! Malformed input end to end (issue 7 §2): a raw test peer sends crafted messages to a real
//! margay-bgpd for the error cases of RFC 4271 §6 and RFC 7606, and checks the outcome on the
//! wire (the NOTIFICATION's octets, or none) and in the daemon (its RIB, its peers). Throughout,
//! a BIRD peer stays Established with its route and its `since` unchanged, and the daemon's PID
//! does not change.
//!
//! Each case speaks from an address of its own, configured as a passive neighbour of margay,
//! so one case's failure (and the idle hold time margay waits after an error) does not reach
//! the next. A group runs every case and then fails listing each case that did not hold.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net};
use margay_lab::{BgpdNeighbor, Result};
use margay_tests::rawpeer::{attr_code as code, build, flag};
use margay_tests::{RIG_AS as AS, RawNotification, RawPeer, RawRig};

const UP: Duration = Duration::from_secs(45);
/// The raw peers' AS (eBGP).
const RAW_AS: u32 = 65001;
const WK: u8 = flag::TRANSITIVE;
const OT: u8 = flag::OPTIONAL | flag::TRANSITIVE;
const ON: u8 = flag::OPTIONAL;

fn v4(a: Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}

/// The shared rig ([`RawRig`]) with this suite's raw peers: one per case, each with its AS,
/// hold time 90 s.
struct Rig(RawRig);

impl std::ops::Deref for Rig {
    type Target = RawRig;
    fn deref(&self) -> &RawRig {
        &self.0
    }
}

impl Rig {
    fn new(test: &str, raws: &[u32]) -> Result<Rig> {
        let raws = raws
            .iter()
            .map(|asn| {
                // Role cluster: what a raw peer announces is passed on to BIRD, where each
                // case reads what survived (an external peer's routes go nowhere by default).
                let mut n = BgpdNeighbor::new(v4(Ipv4Addr::UNSPECIFIED), *asn).role("cluster");
                n.hold_time = 90;
                n
            })
            .collect();
        let bird = BgpdNeighbor::new(v4(Ipv4Addr::UNSPECIFIED), AS);
        Ok(Rig(RawRig::start(test, bird, raws, |c| c)?))
    }

    /// The OPEN raw peer `i` sends: its AS, hold time 90, its address as identifier.
    fn open(&self, i: usize, asn: u32) -> Vec<u8> {
        build::open(asn, 90, self.raw[i], &build::default_capabilities(asn))
    }

    /// An Established session from raw peer `i`.
    fn session(&self, i: usize, asn: u32) -> Result<RawPeer> {
        self.0.session(i, &self.open(i, asn), UP)
    }

    /// The other session is untouched and the daemon is the same process.
    fn assert_isolated(&mut self) {
        self.0.assert_bird_undisturbed();
    }
}

/// One case: its name (with the RFC section) and its check, given the rig and its index.
type Case<'a> = (&'a str, Box<dyn Fn(&Rig, usize) -> Result<(), String> + 'a>);
/// Builds case `i`'s message (or attribute list) for the rig.
type Make = Box<dyn Fn(&Rig, usize) -> Vec<u8>>;

/// Runs each case, collecting failures; fails listing all of them.
fn run_cases(rig: &mut Rig, cases: Vec<Case<'_>>) {
    let mut failed = Vec::new();
    for (i, (name, case)) in cases.iter().enumerate() {
        match case(rig, i) {
            Ok(()) => eprintln!("PASS {name}"),
            Err(e) => {
                eprintln!("FAIL {name}: {e}");
                failed.push(format!("{name}: {e}"));
            }
        }
    }
    rig.assert_isolated();
    let dir = rig.lab.dir().display().to_string();
    assert!(
        failed.is_empty(),
        "{} case(s) failed (logs in {dir}):\n{}",
        failed.len(),
        failed.join("\n")
    );
}

fn s(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The NOTIFICATION margay sends for `bytes`, then the connection must close.
fn notification_for(peer: &mut RawPeer, bytes: &[u8]) -> Result<RawNotification, String> {
    peer.send(bytes).map_err(s)?;
    let n = peer
        .expect_notification(Duration::from_secs(5))
        .map_err(s)?;
    if !peer.closed_within(Duration::from_secs(5)) {
        return Err(format!("{n:?} sent but the connection stays open"));
    }
    Ok(n)
}

fn expect(n: &RawNotification, code: u8, subcode: u8, data: Option<&[u8]>) -> Result<(), String> {
    if (n.code, n.subcode) != (code, subcode) {
        return Err(format!(
            "want NOTIFICATION {code}/{subcode}, got {}/{} data {:02x?}",
            n.code, n.subcode, n.data
        ));
    }
    if let Some(d) = data
        && n.data != d
    {
        return Err(format!(
            "NOTIFICATION {code}/{subcode}: want data {d:02x?}, got {:02x?}",
            n.data
        ));
    }
    Ok(())
}

fn header(len: u16, msg_type: u8) -> Vec<u8> {
    let mut v = vec![0xff; 16];
    v.extend_from_slice(&len.to_be_bytes());
    v.push(msg_type);
    v
}

/// RFC 4271 §6.1 message header errors and RFC 7313 §5, each on an Established session
/// (an OPEN too short as the first message).
#[test]
fn header_errors_get_message_header_notifications() -> Result<()> {
    let mut rig = Rig::new(
        "header_errors_get_message_header_notifications",
        &[RAW_AS; 8],
    )?;
    let after_up = |bytes: Vec<u8>, code: u8, sub: u8, data: Option<Vec<u8>>| {
        move |rig: &Rig, i: usize| -> Result<(), String> {
            let mut p = rig.session(i, RAW_AS).map_err(s)?;
            let n = notification_for(&mut p, &bytes)?;
            expect(&n, code, sub, data.as_deref())
        }
    };
    let mut bad_marker = build::keepalive();
    bad_marker[3] = 0;
    let mut long = header(5000, 2);
    long.extend_from_slice(&[0; 8]);
    let mut keepalive_20 = header(20, 4);
    keepalive_20.push(0);
    let mut notif_20 = header(20, 3);
    notif_20.push(6);
    let mut rr_24 = header(24, 5);
    rr_24.extend_from_slice(&[0, 1, 0, 1, 0]);
    let rr_24_copy = rr_24.clone();
    let cases: Vec<Case> = vec![
        (
            "RFC 4271 §6.1 marker not all ones -> 1/1",
            Box::new(after_up(bad_marker, 1, 1, None)),
        ),
        (
            "RFC 4271 §6.1 length 18 < 19 -> 1/2 with the length",
            Box::new(after_up(header(18, 4), 1, 2, Some(vec![0, 18]))),
        ),
        (
            "RFC 4271 §6.1 length 5000 > 4096 without extended messages -> 1/2 with the length",
            Box::new(after_up(long, 1, 2, Some(5000u16.to_be_bytes().to_vec()))),
        ),
        (
            "RFC 4271 §6.1 unknown type 7 -> 1/3 with the type",
            Box::new(after_up(header(19, 7), 1, 3, Some(vec![7]))),
        ),
        (
            "RFC 4271 §6.1 KEEPALIVE of length 20 -> 1/2 with the length",
            Box::new(after_up(keepalive_20, 1, 2, Some(vec![0, 20]))),
        ),
        (
            "RFC 4271 §6.1 NOTIFICATION of length 20 (< 21) -> 1/2 with the length",
            Box::new(after_up(notif_20, 1, 2, Some(vec![0, 20]))),
        ),
        (
            "RFC 7313 §5 ROUTE-REFRESH of length 24 -> 7/1 with the whole message",
            Box::new(after_up(rr_24, 7, 1, Some(rr_24_copy))),
        ),
        (
            "RFC 4271 §6.1 OPEN of length 28 (< 29) -> 1/2 with the length",
            Box::new(|rig: &Rig, i: usize| {
                let mut p = rig.connect(i).map_err(s)?;
                let mut short = rig.open(i, RAW_AS)[..19 + 9].to_vec();
                short[16..18].copy_from_slice(&28u16.to_be_bytes());
                let n = notification_for(&mut p, &short)?;
                expect(&n, 1, 2, Some(&[0, 28]))
            }),
        ),
    ];
    run_cases(&mut rig, cases);
    Ok(())
}

/// RFC 4271 §6.2 OPEN errors, each OPEN the first message on a fresh connection.
#[test]
fn open_errors_get_open_message_notifications() -> Result<()> {
    let mut rig = Rig::new("open_errors_get_open_message_notifications", &[RAW_AS; 7])?;
    let caps = build::default_capabilities(RAW_AS);
    let caps_param = {
        let c = caps.concat();
        let mut p = vec![2, c.len() as u8];
        p.extend_from_slice(&c);
        p
    };
    let my_as = RAW_AS as u16;
    let send_open = |open: Box<dyn Fn(Ipv4Addr) -> Vec<u8>>, sub: u8, data: Option<Vec<u8>>| {
        move |rig: &Rig, i: usize| -> Result<(), String> {
            let mut p = rig.connect(i).map_err(s)?;
            let n = notification_for(&mut p, &open(rig.raw[i]))?;
            expect(&n, 2, sub, data.as_deref())?;
            let peer = rig.m.peer(v4(rig.raw[i])).map_err(s)?.ok_or("no peer")?;
            if peer.state == "Established" {
                return Err(format!("margay shows the peer Established: {peer:?}"));
            }
            Ok(())
        }
    };
    let cp = caps_param.clone();
    let v5 = move |id| build::open_with_params(5, my_as, 90, id, &cp);
    let bad_as = |id| build::open(65002, 90, id, &build::default_capabilities(65002));
    let cp = caps_param.clone();
    let zero_id = move |_id| build::open_with_params(4, my_as, 90, Ipv4Addr::UNSPECIFIED, &cp);
    let cp = caps_param.clone();
    let hold1 = move |id| build::open_with_params(4, my_as, 1, id, &cp);
    let cp = caps_param.clone();
    let hold2 = move |id| build::open_with_params(4, my_as, 2, id, &cp);
    let cp = caps_param.clone();
    let unsupported_param = move |id| {
        // Parameter type 1 (the deprecated Authentication Information), then the capabilities.
        let mut p = vec![1, 2, 0, 0];
        p.extend_from_slice(&cp);
        build::open_with_params(4, my_as, 90, id, &p)
    };
    let truncated_caps = move |id| {
        // A Capabilities parameter whose 4-octet AS capability claims 4 octets and has 2.
        let p = vec![2, 4, 65, 4, 0, 0];
        build::open_with_params(4, my_as, 90, id, &p)
    };
    let cases: Vec<Case> = vec![
        (
            "RFC 4271 §6.2 version 5 -> 2/1 with data = 4, our version (2 octets)",
            Box::new(send_open(Box::new(v5), 1, Some(vec![0, 4]))),
        ),
        (
            "RFC 4271 §6.2 My AS 65002 for a neighbour configured in 65001 -> 2/2",
            Box::new(send_open(Box::new(bad_as), 2, None)),
        ),
        (
            "RFC 4271 §6.2 BGP identifier 0.0.0.0 -> 2/3",
            Box::new(send_open(Box::new(zero_id), 3, None)),
        ),
        (
            "RFC 4271 §6.2 hold time 1 -> 2/6",
            Box::new(send_open(Box::new(hold1), 6, None)),
        ),
        (
            "RFC 4271 §6.2 hold time 2 -> 2/6",
            Box::new(send_open(Box::new(hold2), 6, None)),
        ),
        (
            "RFC 4271 §6.2 unsupported optional parameter type 1 -> 2/4",
            Box::new(send_open(Box::new(unsupported_param), 4, None)),
        ),
        (
            "RFC 4271 §6.2 / RFC 5492 truncated capability -> 2/0 (recognised but malformed)",
            Box::new(send_open(Box::new(truncated_caps), 0, None)),
        ),
    ];
    run_cases(&mut rig, cases);
    Ok(())
}

// ---- UPDATE building blocks ----

fn origin() -> Vec<u8> {
    build::attr(WK, code::ORIGIN, &[0])
}

fn as_path(asns: &[u32]) -> Vec<u8> {
    let mut v = vec![2, asns.len() as u8];
    for a in asns {
        v.extend_from_slice(&a.to_be_bytes());
    }
    build::attr(WK, code::AS_PATH, &v)
}

fn next_hop(a: Ipv4Addr) -> Vec<u8> {
    build::attr(WK, code::NEXT_HOP, &a.octets())
}

/// The prefix case `i` announces: 10.201.i.0/24.
fn prefix(i: usize) -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(10, 201, i as u8, 0), 24).expect("valid length")
}

fn nlri(i: usize) -> Vec<u8> {
    let p = prefix(i);
    build::prefix4(p.network(), p.prefix_len())
}

/// ORIGIN, AS_PATH (the peer's AS), NEXT_HOP (the peer), then `extra`; LOCAL_PREF for iBGP.
fn valid_attrs(asn: u32, nh: Ipv4Addr, extra: &[Vec<u8>]) -> Vec<u8> {
    let mut v = origin();
    if asn == AS {
        // An iBGP peer's own routes: an empty AS_PATH (no segment at all).
        v.extend(build::attr(WK, code::AS_PATH, &[]));
        v.extend(build::attr(WK, code::LOCAL_PREF, &100u32.to_be_bytes()));
    } else {
        v.extend(as_path(&[asn]));
    }
    v.extend(next_hop(nh));
    for e in extra {
        v.extend_from_slice(e);
    }
    v
}

fn mp_reach_v6(nh: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 2, 1, nh.len() as u8];
    v.extend_from_slice(nh);
    v.push(0);
    v.extend_from_slice(&[64, 0xfd, 0, 2, 0, 0, 0, 0, 0]);
    build::attr(ON | flag::EXTENDED_LENGTH, code::MP_REACH_NLRI, &v)
}

const V6_NH: [u8; 16] = [0xfd, 0, 0, 0x99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

/// Announces case `i`'s prefix with a valid UPDATE and waits for margay to have it.
fn announce(rig: &Rig, p: &mut RawPeer, i: usize, asn: u32) -> Result<(), String> {
    let u = build::update(&[], &valid_attrs(asn, rig.raw[i], &[]), &nlri(i));
    p.send(&u).map_err(s)?;
    rig.m
        .wait_route_via(IpNet::V4(prefix(i)), v4(rig.raw[i]), UP)
        .map_err(|e| format!("the valid announcement was not accepted: {e}"))?;
    Ok(())
}

/// RFC 4271 §6.3 as RFC 7606 keeps it: errors that leave no way to find the NLRI (or that
/// RFC 7606 keeps as session reset) get an UPDATE Message Error NOTIFICATION; the session's
/// routes go, and the session comes back.
#[test]
fn update_errors_that_reset_the_session() -> Result<()> {
    let mut rig = Rig::new("update_errors_that_reset_the_session", &[RAW_AS; 7])?;
    let reset = |make: Make, sub: u8, data: bool| {
        move |rig: &Rig, i: usize| -> Result<(), String> {
            let mut p = rig.session(i, RAW_AS).map_err(s)?;
            announce(rig, &mut p, i, RAW_AS)?;
            let (msg, attr) = (make(rig, i), make_attr_data(&make(rig, i), data));
            let n = notification_for(&mut p, &msg)?;
            expect(&n, 3, sub, attr.as_deref())?;
            rig.m
                .wait_no_route(IpNet::V4(prefix(i)), Duration::from_secs(10))
                .map_err(|e| format!("the session's route stayed after the reset: {e}"))?;
            // The session comes back (after margay's idle hold time).
            let mut p = rig
                .session(i, RAW_AS)
                .map_err(|e| format!("no new session: {e}"))?;
            announce(rig, &mut p, i, RAW_AS).map_err(|e| format!("after the reset: {e}"))
        }
    };
    let cases: Vec<Case> = vec![
        (
            "RFC 4271 §6.3 Withdrawn Routes Length past the message -> 3/1",
            Box::new(reset(
                Box::new(|rig, i| {
                    let mut u = build::update(&[], &valid_attrs(RAW_AS, rig.raw[i], &[]), &nlri(i));
                    u[19..21].copy_from_slice(&500u16.to_be_bytes());
                    u
                }),
                1,
                false,
            )),
        ),
        (
            "RFC 4271 §6.3 Total Path Attribute Length past the message -> 3/1",
            Box::new(reset(
                Box::new(|rig, i| {
                    let mut u = build::update(&[], &valid_attrs(RAW_AS, rig.raw[i], &[]), &nlri(i));
                    u[21..23].copy_from_slice(&500u16.to_be_bytes());
                    u
                }),
                1,
                false,
            )),
        ),
        (
            "RFC 4271 §6.3 NLRI prefix length 33 -> 3/10",
            Box::new(reset(
                Box::new(|rig, i| {
                    build::update(
                        &[],
                        &valid_attrs(RAW_AS, rig.raw[i], &[]),
                        &[33, 10, 201, i as u8, 0, 0],
                    )
                }),
                10,
                false,
            )),
        ),
        (
            "RFC 7606 §7.11 MP_REACH_NLRI IPv6 next hop of 8 octets -> 3/9 with the attribute",
            Box::new(reset(
                Box::new(|_rig, _i| {
                    let mut a = mp_reach_v6(&[0xfd; 8]);
                    a.extend(origin());
                    a.extend(as_path(&[RAW_AS]));
                    build::update(&[], &a, &[])
                }),
                9,
                true,
            )),
        ),
        (
            "RFC 7606 §7.11 MP_REACH_NLRI AFI 2 / SAFI 1 with a 4-octet (IPv4) next hop -> 3/9",
            Box::new(reset(
                Box::new(|_rig, _i| {
                    let mut a = mp_reach_v6(&[10, 0, 0, 1]);
                    a.extend(origin());
                    a.extend(as_path(&[RAW_AS]));
                    build::update(&[], &a, &[])
                }),
                9,
                true,
            )),
        ),
        (
            "RFC 7606 §3 g MP_REACH_NLRI twice -> 3/1",
            Box::new(reset(
                Box::new(|_rig, _i| {
                    let mut a = mp_reach_v6(&V6_NH);
                    a.extend(origin());
                    a.extend(as_path(&[RAW_AS]));
                    a.extend(mp_reach_v6(&V6_NH));
                    build::update(&[], &a, &[])
                }),
                1,
                false,
            )),
        ),
        (
            "RFC 4271 §6.3 unrecognised well-known attribute 99 -> 3/2 with the attribute",
            Box::new(reset(
                Box::new(|rig, i| {
                    let unknown = build::attr(WK, 99, &[1, 2]);
                    build::update(&[], &valid_attrs(RAW_AS, rig.raw[i], &[unknown]), &nlri(i))
                }),
                2,
                true,
            )),
        ),
    ];
    run_cases(&mut rig, cases);
    Ok(())
}

/// The data a 3/2 or 3/9 NOTIFICATION carries: the erroneous attribute. For the cases here it
/// is the first MP_REACH_NLRI, or the unrecognised attribute 99 (whichever the UPDATE holds).
fn make_attr_data(update: &[u8], wanted: bool) -> Option<Vec<u8>> {
    if !wanted {
        return None;
    }
    let attrs_len = usize::from(u16::from_be_bytes([update[21], update[22]]));
    let mut a = &update[23..23 + attrs_len];
    while a.len() >= 3 {
        let (flags, t) = (a[0], a[1]);
        let (hlen, vlen) = if flags & flag::EXTENDED_LENGTH != 0 {
            (4, usize::from(u16::from_be_bytes([a[2], a[3]])))
        } else {
            (3, usize::from(a[2]))
        };
        let whole = &a[..(hlen + vlen).min(a.len())];
        if t == code::MP_REACH_NLRI || t == 99 {
            return Some(whole.to_vec());
        }
        a = &a[whole.len()..];
    }
    None
}

/// RFC 7606 treat-as-withdraw: the prefix announced before is withdrawn, no NOTIFICATION
/// comes, the session stays Established and a following valid UPDATE is accepted.
#[test]
fn update_errors_treated_as_withdraw() -> Result<()> {
    let mut raws = vec![RAW_AS; 13];
    raws.push(AS);
    let mut rig = Rig::new("update_errors_treated_as_withdraw", &raws)?;
    let withdraw = |asn: u32, make: Make| {
        move |rig: &Rig, i: usize| -> Result<(), String> {
            let mut p = rig.session(i, asn).map_err(s)?;
            announce(rig, &mut p, i, asn)?;
            let attrs = make(rig, i);
            p.send(&build::update(&[], &attrs, &nlri(i))).map_err(s)?;
            p.stays_up_for(Duration::from_secs(1))
                .map_err(|e| format!("the session did not stay up: {e}"))?;
            rig.m
                .wait_no_route(IpNet::V4(prefix(i)), Duration::from_secs(10))
                .map_err(|e| format!("not withdrawn: {e}"))?;
            let peer = rig.m.peer(v4(rig.raw[i])).map_err(s)?.ok_or("no peer")?;
            if peer.state != "Established" {
                return Err(format!("margay's session left Established: {peer:?}"));
            }
            announce(rig, &mut p, i, asn).map_err(|e| format!("after the withdraw: {e}"))?;
            p.stays_up_for(Duration::from_millis(300)).map_err(s)?;
            Ok(())
        }
    };
    let with_path = |path_value: Vec<u8>| {
        move |rig: &Rig, i: usize| {
            let mut v = origin();
            v.extend(build::attr(WK, code::AS_PATH, &path_value));
            v.extend(next_hop(rig.raw[i]));
            v
        }
    };
    let with_nh = |nh: Ipv4Addr| {
        move |_rig: &Rig, _i: usize| {
            let mut v = origin();
            v.extend(as_path(&[RAW_AS]));
            v.extend(next_hop(nh));
            v
        }
    };
    let extra = |a: Vec<u8>| {
        move |rig: &Rig, i: usize| valid_attrs(RAW_AS, rig.raw[i], std::slice::from_ref(&a))
    };
    let cases: Vec<Case> = vec![
        (
            "RFC 7606 §7.1 ORIGIN value 3",
            Box::new(withdraw(
                RAW_AS,
                Box::new(|rig, i| {
                    let mut v = build::attr(WK, code::ORIGIN, &[3]);
                    v.extend(as_path(&[RAW_AS]));
                    v.extend(next_hop(rig.raw[i]));
                    v
                }),
            )),
        ),
        (
            "RFC 7606 §7.2 AS_PATH segment type 5",
            Box::new(withdraw(
                RAW_AS,
                Box::new(with_path(vec![5, 1, 0, 0, 0xfd, 0xe9])),
            )),
        ),
        (
            "RFC 7606 §7.2 AS_PATH segment length past the attribute",
            Box::new(withdraw(
                RAW_AS,
                Box::new(with_path(vec![2, 2, 0, 0, 0xfd, 0xe9])),
            )),
        ),
        (
            "RFC 7606 §7.3 NEXT_HOP 0.0.0.0",
            Box::new(withdraw(RAW_AS, Box::new(with_nh(Ipv4Addr::UNSPECIFIED)))),
        ),
        (
            "RFC 7606 §7.3 NEXT_HOP multicast 224.0.0.5",
            Box::new(withdraw(
                RAW_AS,
                Box::new(with_nh(Ipv4Addr::new(224, 0, 0, 5))),
            )),
        ),
        (
            "RFC 7606 §3 d missing ORIGIN",
            Box::new(withdraw(
                RAW_AS,
                Box::new(|rig, i| {
                    let mut v = as_path(&[RAW_AS]);
                    v.extend(next_hop(rig.raw[i]));
                    v
                }),
            )),
        ),
        (
            "RFC 7606 §3 d missing AS_PATH",
            Box::new(withdraw(
                RAW_AS,
                Box::new(|rig, i| {
                    let mut v = origin();
                    v.extend(next_hop(rig.raw[i]));
                    v
                }),
            )),
        ),
        (
            "RFC 7606 §3 d missing NEXT_HOP",
            Box::new(withdraw(
                RAW_AS,
                Box::new(|_rig, _i| {
                    let mut v = origin();
                    v.extend(as_path(&[RAW_AS]));
                    v
                }),
            )),
        ),
        (
            "RFC 7606 §3 c ORIGIN with the Optional flag (attribute flags error)",
            Box::new(withdraw(
                RAW_AS,
                Box::new(|rig, i| {
                    let mut v = build::attr(OT, code::ORIGIN, &[0]);
                    v.extend(as_path(&[RAW_AS]));
                    v.extend(next_hop(rig.raw[i]));
                    v
                }),
            )),
        ),
        (
            "RFC 7606 §7.4 MULTI_EXIT_DISC of 3 octets",
            Box::new(withdraw(
                RAW_AS,
                Box::new(extra(build::attr(ON, code::MULTI_EXIT_DISC, &[0, 0, 1]))),
            )),
        ),
        (
            "RFC 7606 §7.8 COMMUNITIES of 5 octets",
            Box::new(withdraw(
                RAW_AS,
                Box::new(extra(build::attr(OT, code::COMMUNITIES, &[0, 1, 0, 2, 0]))),
            )),
        ),
        (
            "RFC 7606 §4 an attribute's length past the attribute list",
            Box::new(withdraw(
                RAW_AS,
                Box::new(|rig, i| {
                    let mut v = valid_attrs(RAW_AS, rig.raw[i], &[]);
                    v.extend_from_slice(&[ON, code::MULTI_EXIT_DISC, 4, 0, 0]);
                    v
                }),
            )),
        ),
        (
            "RFC 7606 §7.3 NEXT_HOP of 5 octets",
            Box::new(withdraw(
                RAW_AS,
                Box::new(|rig, i| {
                    let mut v = origin();
                    v.extend(as_path(&[RAW_AS]));
                    let mut nh = rig.raw[i].octets().to_vec();
                    nh.push(0);
                    v.extend(build::attr(WK, code::NEXT_HOP, &nh));
                    v
                }),
            )),
        ),
        (
            "RFC 7606 §7.5 LOCAL_PREF of 2 octets from an iBGP peer",
            Box::new(withdraw(
                AS,
                Box::new(|rig, i| {
                    let mut v = origin();
                    v.extend(build::attr(WK, code::AS_PATH, &[]));
                    v.extend(build::attr(WK, code::LOCAL_PREF, &[0, 100]));
                    v.extend(next_hop(rig.raw[i]));
                    v
                }),
            )),
        ),
    ];
    run_cases(&mut rig, cases);
    Ok(())
}

/// RFC 4271 §6.3: a NEXT_HOP equal to the receiving speaker's own address is semantically
/// incorrect; the route is to be ignored (logged, no NOTIFICATION, session kept). margay must
/// never hold a best path through itself (felix would install a route looping back to this
/// node).
#[test]
fn ignores_route_whose_next_hop_is_the_receivers_own_address() -> Result<()> {
    let mut rig = Rig::new(
        "ignores_route_whose_next_hop_is_the_receivers_own_address",
        &[RAW_AS],
    )?;
    let cases: Vec<Case> = vec![(
        "RFC 4271 §6.3 NEXT_HOP equal to the receiver's own address: the route is ignored \
         (never installed via margay itself), no NOTIFICATION",
        Box::new(|rig: &Rig, i: usize| {
            let own = rig.am.ip4();
            let mut p = rig.session(i, RAW_AS).map_err(s)?;
            announce(rig, &mut p, i, RAW_AS)?;
            let mut attrs = origin();
            attrs.extend(as_path(&[RAW_AS]));
            attrs.extend(next_hop(own));
            p.send(&build::update(&[], &attrs, &nlri(i))).map_err(s)?;
            p.stays_up_for(Duration::from_secs(2))
                .map_err(|e| format!("the session did not stay up: {e}"))?;
            match rig.m.best_route(IpNet::V4(prefix(i))).map_err(s)? {
                Some(r) if r.next_hop == own.to_string() => Err(format!(
                    "margay accepted a route whose next hop is its own address: {r:?}"
                )),
                _ => Ok(()),
            }
        }),
    )];
    run_cases(&mut rig, cases);
    Ok(())
}

/// RFC 7606 attribute discard: the route is accepted without the attribute. BIRD, margay's
/// iBGP peer, shows what margay passes on: a control route with the well-formed attribute
/// carries it, the route with the malformed one does not.
#[test]
fn malformed_optional_attributes_are_discarded() -> Result<()> {
    let mut rig = Rig::new("malformed_optional_attributes_are_discarded", &[RAW_AS; 2])?;
    let discard = |good: Vec<u8>, bad: Vec<u8>, bird_key: &'static str| {
        move |rig: &Rig, i: usize| -> Result<(), String> {
            let mut p = rig.session(i, RAW_AS).map_err(s)?;
            let control = Ipv4Net::new(Ipv4Addr::new(10, 202, i as u8, 0), 24).expect("len");
            let attrs = valid_attrs(RAW_AS, rig.raw[i], std::slice::from_ref(&good));
            let u = build::update(&[], &attrs, &build::prefix4(control.network(), 24));
            p.send(&u).map_err(s)?;
            let attrs = valid_attrs(RAW_AS, rig.raw[i], std::slice::from_ref(&bad));
            p.send(&build::update(&[], &attrs, &nlri(i))).map_err(s)?;
            p.stays_up_for(Duration::from_secs(1))
                .map_err(|e| format!("the session did not stay up: {e}"))?;
            rig.m
                .wait_route_via(IpNet::V4(prefix(i)), v4(rig.raw[i]), UP)
                .map_err(|e| format!("route with the malformed attribute not accepted: {e}"))?;
            let c = rig
                .bird
                .wait_route(IpNet::V4(control), UP, |r| {
                    r.bgp
                        .other
                        .get(bird_key)
                        .map(|_| ())
                        .ok_or_else(|| format!("no {bird_key}"))
                })
                .map_err(|e| format!("control route lacks {bird_key}: {e}"))?;
            let r = rig
                .bird
                .wait_route(IpNet::V4(prefix(i)), UP, |r| {
                    if r.bgp.as_path.contains(&RAW_AS) {
                        Ok(())
                    } else {
                        Err("not via margay yet".into())
                    }
                })
                .map_err(s)?;
            if let Some(v) = r.bgp.other.get(bird_key) {
                return Err(format!(
                    "margay passed the malformed attribute on: {bird_key} = {v} (control: {:?})",
                    c.bgp.other
                ));
            }
            Ok(())
        }
    };
    let agg_ok = build::attr(OT, code::AGGREGATOR, &[0, 0, 0xfd, 0xe9, 10, 0, 0, 1]);
    let agg_bad = build::attr(OT, code::AGGREGATOR, &[0, 0, 0xfd, 0xe9, 10, 0, 0]);
    let cases: Vec<Case> = vec![
        (
            "RFC 7606 §7.6 ATOMIC_AGGREGATE of length 1 is discarded",
            Box::new(discard(
                build::attr(WK, code::ATOMIC_AGGREGATE, &[]),
                build::attr(WK, code::ATOMIC_AGGREGATE, &[1]),
                "atomic_aggr",
            )),
        ),
        (
            "RFC 7606 §7.7 AGGREGATOR of 7 octets on a 4-octet-AS session is discarded",
            Box::new(discard(agg_ok, agg_bad, "aggregator")),
        ),
    ];
    run_cases(&mut rig, cases);
    Ok(())
}
