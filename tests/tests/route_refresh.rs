//! Route refresh (RFC 2918) and enhanced route refresh (RFC 7313) against a real margay-bgpd:
//! raw peers check the messages on the wire and the effect of their own Begin-of-RR and
//! End-of-RR on margay's RIB; BIRD checks that `reload in` and `reload out` leave both sides'
//! routes and the session alone.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv4Net};
use margay_lab::{Bgpd, BgpdNeighbor, Result, holds_for};
use margay_tests::rawpeer::{attr_code as code, build, flag};
use margay_tests::{RIG_AS as AS, RawPeer, RawRig, Reply};

const UP: Duration = Duration::from_secs(45);
const RAW_AS: u32 = 65001;
/// What margay originates itself.
const OWN: &str = "10.77.0.0/24";
/// ROUTE-REFRESH message type and subtypes.
const ROUTE_REFRESH: u8 = 5;
const REQUEST: u8 = 0;
const BORR: u8 = 1;
const EORR: u8 = 2;

fn v4(a: Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}

/// The shared rig ([`RawRig`]): margay originating [`OWN`], BIRD, and two raw eBGP peers.
struct Rig(RawRig);

impl std::ops::Deref for Rig {
    type Target = RawRig;
    fn deref(&self) -> &RawRig {
        &self.0
    }
}

impl Rig {
    fn new(test: &str) -> Result<Rig> {
        let own: IpNet = OWN.parse().expect("valid prefix");
        let raws = (0..2)
            .map(|_| {
                let mut n = BgpdNeighbor::new(v4(Ipv4Addr::UNSPECIFIED), RAW_AS);
                n.hold_time = 90;
                n
            })
            .collect();
        let bird = BgpdNeighbor::new(v4(Ipv4Addr::UNSPECIFIED), AS);
        let rig = RawRig::start(test, bird, raws, |c| c.originate(own))?;
        rig.bird
            .wait_bgp_route_via(own, v4(rig.am.ip4()), Duration::from_secs(45))?;
        Ok(Rig(rig))
    }

    /// An Established session from raw peer `i`, with enhanced route refresh offered or not;
    /// returns once margay's initial table has ended with its End-of-RIB.
    fn session(&self, i: usize, enhanced: bool) -> Result<RawPeer> {
        let mut caps = build::default_capabilities(RAW_AS);
        if enhanced {
            caps.push(build::capability(70, &[]));
        }
        let open = build::open(RAW_AS, 90, self.raw[i], &caps);
        let mut p = self.0.session(i, &open, UP)?;
        let initial = until(&mut p, |r| *r == Reply::Update(vec![0, 0, 0, 0]))?;
        assert!(
            initial.iter().any(|r| announces(r, OWN)),
            "the initial table lacks margay's own {OWN}: {initial:?}"
        );
        Ok(p)
    }
}

/// A ROUTE-REFRESH for IPv4 unicast with `subtype`.
fn refresh(subtype: u8) -> Vec<u8> {
    build::message(ROUTE_REFRESH, &[0, 1, subtype, 1])
}

/// Receives until `last` matches, keeping the session alive; returns everything up to it.
fn until(p: &mut RawPeer, last: impl Fn(&Reply) -> bool) -> Result<Vec<Reply>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match p.recv(left)? {
            Some(Reply::Keepalive) => {}
            Some(r) => {
                let done = last(&r);
                seen.push(r);
                if done {
                    return Ok(seen);
                }
            }
            None => panic!("margay closed the session; received so far: {seen:?}"),
        }
    }
}

/// Whether `r` is an UPDATE whose IPv4 NLRI field carries `prefix`.
fn announces(r: &Reply, prefix: &str) -> bool {
    let Reply::Update(body) = r else {
        return false;
    };
    let p: Ipv4Net = prefix.parse().expect("valid prefix");
    let nlri = build::prefix4(p.network(), p.prefix_len());
    body.len() >= 4 && body.ends_with(&nlri)
}

/// The UPDATE raw peer `from` sends for `prefixes`: eBGP attributes, itself as next hop.
fn update(from: Ipv4Addr, prefixes: &[Ipv4Net]) -> Vec<u8> {
    let mut attrs = build::attr(flag::TRANSITIVE, code::ORIGIN, &[0]);
    let mut path = vec![2, 1];
    path.extend_from_slice(&RAW_AS.to_be_bytes());
    attrs.extend(build::attr(flag::TRANSITIVE, code::AS_PATH, &path));
    attrs.extend(build::attr(
        flag::TRANSITIVE,
        code::NEXT_HOP,
        &from.octets(),
    ));
    let nlri: Vec<u8> = prefixes
        .iter()
        .flat_map(|p| build::prefix4(p.network(), p.prefix_len()))
        .collect();
    build::update(&[], &attrs, &nlri)
}

/// Ok when margay has a best route for each of `prefixes`, else which one it lacks.
fn present(m: &Bgpd, prefixes: &[Ipv4Net]) -> std::result::Result<(), String> {
    for p in prefixes {
        match m.best_route(IpNet::V4(*p)) {
            Ok(Some(_)) => {}
            Ok(None) => return Err(format!("no route {p}")),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

fn net(s: &str) -> Ipv4Net {
    s.parse().expect("valid prefix")
}

#[test]
fn answers_a_request_between_begin_and_end_of_rr_when_enhanced() -> Result<()> {
    let rig = Rig::new("rr-answer")?;
    let mut enhanced = rig.session(0, true)?;
    enhanced.send(&refresh(REQUEST))?;
    let reply = until(&mut enhanced, |r| {
        *r == Reply::RouteRefresh(vec![0, 1, EORR, 1])
    })?;
    assert_eq!(
        reply.first(),
        Some(&Reply::RouteRefresh(vec![0, 1, BORR, 1])),
        "the answer does not start with Begin-of-RR: {reply:?}"
    );
    assert!(
        reply.iter().any(|r| announces(r, OWN)),
        "the answer lacks margay's {OWN}: {reply:?}"
    );

    let mut plain = rig.session(1, false)?;
    plain.send(&refresh(REQUEST))?;
    let reply = plain.stays_up_for(Duration::from_secs(2))?;
    let block = rig.bird_block.to_string();
    for prefix in [OWN, block.as_str()] {
        let copies = reply.iter().filter(|r| announces(r, prefix)).count();
        assert_eq!(
            copies, 1,
            "{prefix} sent {copies} times in answer to one request: {reply:?}"
        );
    }
    assert!(
        !reply.iter().any(|r| matches!(r, Reply::RouteRefresh(_))),
        "a peer without enhanced route refresh got its markers: {reply:?}"
    );
    Ok(())
}

#[test]
fn begin_and_end_of_rr_remove_what_the_peer_did_not_resend() -> Result<()> {
    let rig = Rig::new("rr-sweep")?;
    let me = rig.raw[0];
    let mut p = rig.session(0, true)?;
    let (a, b) = (net("10.88.1.0/24"), net("10.88.2.0/24"));
    p.send(&update(me, &[a, b]))?;
    rig.m.wait_route_via(IpNet::V4(a), v4(me), UP)?;
    rig.m.wait_route_via(IpNet::V4(b), v4(me), UP)?;

    // An End-of-RR without a Begin-of-RR, and a reserved subtype, change nothing.
    p.send(&refresh(EORR))?;
    p.send(&refresh(3))?;
    holds_for(
        "a stray End-of-RR or a reserved subtype removes no route",
        Duration::from_secs(2),
        &[&rig.m],
        || present(&rig.m, &[a, b]),
    )?;

    // A refresh that re-sends only `a`: `b` goes at End-of-RR, not before.
    p.send(&refresh(BORR))?;
    p.send(&update(me, &[a]))?;
    holds_for(
        "the route not re-sent stays until End-of-RR",
        Duration::from_secs(1),
        &[&rig.m],
        || present(&rig.m, &[a, b]),
    )?;
    p.send(&refresh(EORR))?;
    rig.m.wait_no_route(IpNet::V4(b), UP)?;
    assert!(
        rig.m.best_route(IpNet::V4(a))?.is_some(),
        "the re-sent route went too"
    );
    let still = p.stays_up_for(Duration::from_secs(1))?;
    assert!(
        !still.iter().any(|r| matches!(r, Reply::Notification(_))),
        "margay closed the session: {still:?}"
    );
    Ok(())
}

#[test]
fn bird_reload_in_and_out_keep_routes_and_session() -> Result<()> {
    let rig = Rig::new("rr-bird")?;
    let own: IpNet = OWN.parse().expect("valid prefix");
    let since = rig.bird.settled_since("m", Duration::from_millis(300))?;
    let peer_since = rig.m.peer(v4(rig.ab.ip4()))?.expect("BIRD is a peer").since;
    // `reload in` makes BIRD ask margay for its routes; `reload out` re-sends BIRD's.
    for cmd in [["reload", "in", "m"], ["reload", "out", "m"]] {
        let out = rig.bird.birdc(&cmd)?;
        assert!(
            out.to_lowercase().contains("reload"),
            "birdc {cmd:?}: {out}"
        );
    }
    holds_for(
        "both sides keep their routes across the reloads",
        Duration::from_secs(3),
        &[&rig.m],
        || {
            let bird_has = rig.bird.best_route(own).map_err(|e| e.to_string())?;
            if bird_has.is_none() {
                return Err(format!("BIRD lost {own}"));
            }
            let IpNet::V4(block) = rig.bird_block else {
                return Err(format!("BIRD's block {} is not IPv4", rig.bird_block));
            };
            present(&rig.m, &[block])
        },
    )?;
    let p = rig.bird.protocol("m")?.expect("protocol m");
    assert!(p.is_established(), "BIRD's session went down: {p:?}");
    assert!(
        p.same_session_since(&since),
        "BIRD's session was reset: since {since}, now {}",
        p.since
    );
    let mp = rig.m.peer(v4(rig.ab.ip4()))?.expect("BIRD is a peer");
    assert_eq!(mp.since, peer_since, "margay's session was reset");
    Ok(())
}
