//! BFD between margay-bgpd and BIRD 2 (issue 13 §1): real daemons in namespaces on one veth
//! link, BFD at 3 × 100 ms both sides and a 90 s hold timer, so only BFD can close a session
//! within a second. The link is made to drop everything one way with an nftables drop rule (no BGP message
//! is exchanged about it): first BIRD's packets (margay must detect), then margay's (BIRD must
//! detect). Each time the BGP session must leave Established well within a second, the
//! routes go, and after the link heals everything comes back.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use margay_lab::{
    Bgpd, BgpdConfig, BgpdNeighbor, Bird, BirdConfig, BirdNeighbor, ExportPolicy, Lab, Netns,
    Result, block4, wait_for,
};
use margay_tests::bfd::{Blackhole, bfd_settled, bfd_up, time_until};

const UP: Duration = Duration::from_secs(45);
/// Detection at 3 × 100 ms is 300 ms; the rest is polling and the session closing.
const DETECT_LIMIT: Duration = Duration::from_millis(1000);
const MARGAY_AS: u32 = 64512;
const BIRD_AS: u32 = 65100;
/// margay's health and metrics port (on 127.0.0.1 in its namespace).
const METRICS_PORT: u16 = 9179;

fn v4(a: Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}

fn bird_bfd_up(b: &Bird, peer: IpAddr) -> Result<String> {
    wait_for("BIRD's BFD session Up", UP, &[b], || {
        let out = b
            .birdc(&["show", "bfd", "sessions"])
            .map_err(|e| e.to_string())?;
        let line = out.lines().find(|l| l.starts_with(&peer.to_string()));
        match line {
            Some(l) if l.split_whitespace().any(|w| w == "Up") => Ok(l.to_string()),
            _ => Err(out),
        }
    })
}

#[test]
fn bfd_with_bird_both_ways_closes_the_session_within_a_second_and_recovers() -> Result<()> {
    let lab = Lab::new("bfd_with_bird_both_ways_closes_the_session_within_a_second_and_recovers")?;
    let (nm, nb) = (lab.netns("m")?, lab.netns("b")?);
    let link = lab.link(&nm, &nb)?;
    let (am, ab) = (link.a.ip4(), link.b.ip4());
    let (km, kb) = (IpNet::V4(block4()), IpNet::V4(block4()));

    let mut tor = BirdNeighbor::new("m", v4(am), BIRD_AS, MARGAY_AS).export(ExportPolicy::Static);
    tor.hold_time = 90;
    tor.bfd = true;
    let bird = Bird::start(
        &lab,
        &nb,
        "b",
        BirdConfig::new(ab)
            .originate(kb)
            .bfd(100, 100, 3)
            .neighbor(tor),
    )?;
    // The contrast: a second BIRD on a link of its own, the same session without BFD, hold
    // time 9 s. Its link fails at the same moment; only the hold timer can notice.
    let nh = lab.netns("h")?;
    let hlink = lab.link(&nm, &nh)?;
    let (amh, ah) = (hlink.a.ip4(), hlink.b.ip4());
    let kh = IpNet::V4(block4());
    let plain = Bird::start(
        &lab,
        &nh,
        "h",
        BirdConfig::new(ah).originate(kh).neighbor(
            BirdNeighbor::new("m", v4(amh), BIRD_AS, MARGAY_AS).export(ExportPolicy::Static),
        ),
    )?;
    let mut n = BgpdNeighbor::new(v4(ab), BIRD_AS).bfd(100, 100, 3);
    n.hold_time = 90;
    let mut c = BgpdConfig::new(am, MARGAY_AS)
        .originate(km)
        .neighbor(n)
        .neighbor(BgpdNeighbor::new(v4(ah), BIRD_AS));
    c.http_port = Some(METRICS_PORT);
    let m = Bgpd::start(&lab, &nm, "m", c)?;

    m.wait_established(v4(ab), UP)?;
    bird.wait_established("m", UP)?;
    let p = bfd_settled(&m, v4(ab), Duration::from_millis(100), 3)?;
    let b = p.bfd.expect("bfd status");
    assert_eq!(b.tx_interval_us, 100_000, "{b:?}");
    assert_eq!(b.detection_time_us, 300_000, "{b:?}");
    assert_eq!(b.detect_multiplier, 3);
    assert_ne!(b.remote_discriminator, 0);
    let line = bird_bfd_up(&bird, v4(am))?;
    eprintln!("BIRD: {line}");
    m.wait_route_via(kb, v4(ab), UP)?;
    bird.wait_bgp_route_via(km, v4(am), UP)?;
    m.wait_route_via(kh, v4(ah), UP)?;
    plain.wait_established("m", UP)?;

    // 1. BIRD's packets are lost: margay's detection timer must fire.
    {
        let _cut = Blackhole::on(&nb, &link.b.ifname)?;
        let _contrast = Blackhole::on(&nh, &hlink.b.ifname)?;
        let t0 = Instant::now();
        let took = time_until(t0, DETECT_LIMIT, || {
            m.peer(v4(ab))
                .ok()
                .flatten()
                .is_some_and(|p| p.state != "Established")
        });
        eprintln!("margay closed the session {took:?} after the cut");
        assert!(took < DETECT_LIMIT, "margay took {took:?}");
        let p = m.peer(v4(ab))?.expect("peer");
        assert!(p.last_error.starts_with("BFD session down"), "{p:?}");
        let b = p.bfd.expect("bfd status");
        assert_eq!(
            b.local_diagnostic, "Control Detection Time Expired",
            "{b:?}"
        );
        assert_eq!(b.downs, 1);
        m.wait_no_route(kb, Duration::from_secs(2))?;
        let metrics = nm.exec(
            "curl",
            &["-sf", &format!("http://127.0.0.1:{METRICS_PORT}/metrics")],
        )?;
        let peer = format!("{{peer=\"{ab}\"}}");
        assert!(
            metrics.contains(&format!("margay_bgp_bfd_session_downs_total{peer} 1")),
            "{metrics}"
        );
        assert!(
            metrics.contains(&format!(
                "margay_bgp_bfd_detection_time_microseconds{peer} 300000"
            )),
            "{metrics}"
        );
        // Without BFD: still Established long after BFD acted, down only at the hold timer
        // (9 s after the last KEEPALIVE, which came at most 3 s before the cut).
        let hold = Duration::from_secs(9);
        let contrast = time_until(t0, hold * 2, || {
            m.peer(v4(ah))
                .ok()
                .flatten()
                .is_some_and(|p| p.state != "Established")
        });
        eprintln!("without BFD margay closed the session {contrast:?} after the cut");
        assert!(
            contrast >= hold * 2 / 3 - Duration::from_millis(500) && contrast < hold * 2,
            "hold-timer detection took {contrast:?}"
        );
        let p = m.peer(v4(ah))?.expect("peer");
        assert!(p.last_error.contains("Hold timer expired"), "{p:?}");
    }
    m.wait_established(v4(ab), UP)?;
    bfd_up(&m, v4(ab))?;
    bird_bfd_up(&bird, v4(am))?;
    m.wait_route_via(kb, v4(ab), UP)?;
    bird.wait_bgp_route_via(km, v4(am), UP)?;

    // 2. margay's packets are lost: BIRD's detection timer must fire.
    {
        let _cut = Blackhole::on(&nm, &link.a.ifname)?;
        let t0 = Instant::now();
        let took = time_until(t0, DETECT_LIMIT, || {
            bird.protocol("m")
                .ok()
                .flatten()
                .is_some_and(|p| !p.info.contains("Established"))
        });
        eprintln!("BIRD closed the session {took:?} after the cut");
        assert!(took < DETECT_LIMIT, "BIRD took {took:?}");
        let out = bird.birdc(&["show", "bfd", "sessions"])?;
        assert!(!out.contains(" Up "), "{out}");
    }
    bird.wait_established("m", UP)?;
    bird_bfd_up(&bird, v4(am))?;
    bird.wait_bgp_route_via(km, v4(am), UP)?;
    Ok(())
}

/// The same over IPv6: the session comes Up with BIRD (hop limit 255 both ways) and margay
/// detects BIRD's silence.
#[test]
fn bfd_with_bird_over_ipv6() -> Result<()> {
    let lab = Lab::new("bfd_with_bird_over_ipv6")?;
    let (nm, nb) = (lab.netns("m")?, lab.netns("b")?);
    let link = lab.link(&nm, &nb)?;
    let (am, ab) = (IpAddr::V6(link.a.ip6()), IpAddr::V6(link.b.ip6()));
    let mut tor = BirdNeighbor::new("m", am, BIRD_AS, MARGAY_AS).export(ExportPolicy::None);
    tor.hold_time = 90;
    tor.bfd = true;
    let bird = Bird::start(
        &lab,
        &nb,
        "b",
        BirdConfig::new(link.b.ip4()).bfd(100, 100, 3).neighbor(tor),
    )?;
    let mut n = BgpdNeighbor::new(ab, BIRD_AS).bfd(100, 100, 3);
    n.hold_time = 90;
    let m = Bgpd::start(
        &lab,
        &nm,
        "m",
        BgpdConfig::new(link.a.ip4(), MARGAY_AS).neighbor(n),
    )?;
    m.wait_established(ab, UP)?;
    bfd_settled(&m, ab, Duration::from_millis(100), 3)?;
    bird_bfd_up(&bird, am)?;
    let _cut = Blackhole::on(&nb, &link.b.ifname)?;
    let t0 = Instant::now();
    let took = time_until(t0, DETECT_LIMIT, || {
        m.peer(ab)
            .ok()
            .flatten()
            .is_some_and(|p| p.state != "Established")
    });
    eprintln!("margay closed the IPv6 session {took:?} after the cut");
    assert!(took < DETECT_LIMIT, "margay took {took:?}");
    Ok(())
}

/// A graceful restart with BFD: margay's SIGTERM first takes its BFD sessions AdminDown
/// (RFC 5882 §3.2: not a failed path). BIRD 2.0.12 still treats that as BFD down, so with
/// `bfd on` it flushes our routes at once; with `bfd graceful` (what to configure on a BIRD
/// ToR) it keeps them as stale, well past the detection time.
#[test]
fn graceful_stop_sends_admin_down_and_bird_keeps_the_routes() -> Result<()> {
    let lab = Lab::new("graceful_stop_sends_admin_down_and_bird_keeps_the_routes")?;
    let (nm, nb) = (lab.netns("m")?, lab.netns("b")?);
    let link = lab.link(&nm, &nb)?;
    let (am, ab) = (link.a.ip4(), link.b.ip4());
    let km = IpNet::V4(block4());
    let mut tor = BirdNeighbor::new("m", v4(am), BIRD_AS, MARGAY_AS)
        .export(ExportPolicy::None)
        .graceful_restart(Some(120));
    tor.hold_time = 90;
    tor.bfd = true;
    tor.bfd_graceful = true;
    let bird = Bird::start(
        &lab,
        &nb,
        "b",
        BirdConfig::new(ab).bfd(100, 100, 3).neighbor(tor),
    )?;
    let mut n = BgpdNeighbor::new(v4(ab), BIRD_AS).bfd(100, 100, 3);
    n.hold_time = 90;
    let mut m = Bgpd::start(
        &lab,
        &nm,
        "m",
        BgpdConfig::new(am, MARGAY_AS).originate(km).neighbor(n),
    )?;
    bird.wait_established("m", UP)?;
    bfd_settled(&m, v4(ab), Duration::from_millis(100), 3)?;
    bird_bfd_up(&bird, v4(am))?;
    bird.wait_bgp_route_via(km, v4(am), UP)?;

    m.stop();
    let t0 = Instant::now();
    // Silence would take BIRD at least 200 ms past our exit to notice; AdminDown is already in.
    let state = margay_tests::bfd::bird_bfd(&bird, v4(am))?;
    assert_eq!(
        state[2], "Down",
        "AdminDown received before margay exited: {state:?}"
    );
    while t0.elapsed() < Duration::from_secs(2) {
        assert!(
            !bird.route(km)?.is_empty(),
            "BIRD dropped margay's route {:?} after its graceful stop",
            t0.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = bird.birdc(&["show", "bfd", "sessions"])?;
    eprintln!("BIRD after margay's stop: {out}");
    assert!(!out.contains(" Up "), "BIRD's BFD session left Up: {out}");
    Ok(())
}

/// margay and a BIRD ToR on one link, BFD 3 × 100 ms both sides and a 90 s hold timer, BIRD
/// announcing a block of its own (`kb`); returned once BGP and BFD are Up both sides and the
/// block is in margay's table.
struct Pair {
    nm: Netns,
    /// BIRD's namespace (removed when dropped).
    _nb: Netns,
    link: margay_lab::LinkAddrs,
    bird: Bird,
    m: Bgpd,
    kb: IpNet,
}

impl Pair {
    fn start(lab: &Lab) -> Result<Pair> {
        let (nm, nb) = (lab.netns("m")?, lab.netns("b")?);
        let link = lab.link(&nm, &nb)?;
        let (am, ab) = (link.a.ip4(), link.b.ip4());
        let (km, kb) = (IpNet::V4(block4()), IpNet::V4(block4()));
        let mut tor =
            BirdNeighbor::new("m", v4(am), BIRD_AS, MARGAY_AS).export(ExportPolicy::Static);
        tor.hold_time = 90;
        tor.bfd = true;
        let bird = Bird::start(
            lab,
            &nb,
            "b",
            BirdConfig::new(ab)
                .originate(kb)
                .bfd(100, 100, 3)
                .neighbor(tor),
        )?;
        let mut n = BgpdNeighbor::new(v4(ab), BIRD_AS).bfd(100, 100, 3);
        n.hold_time = 90;
        let m = Bgpd::start(
            lab,
            &nm,
            "m",
            BgpdConfig::new(am, MARGAY_AS).originate(km).neighbor(n),
        )?;
        m.wait_established(v4(ab), UP)?;
        bird.wait_established("m", UP)?;
        bfd_settled(&m, v4(ab), Duration::from_millis(100), 3)?;
        bird_bfd_up(&bird, v4(am))?;
        m.wait_route_via(kb, v4(ab), UP)?;
        Ok(Pair {
            nm,
            _nb: nb,
            link,
            bird,
            m,
            kb,
        })
    }
}

/// Watches margay's BGP session with `peer` for `window`: how many times it left Established,
/// and the errors it gave while down.
fn watch_flaps(m: &Bgpd, peer: IpAddr, window: Duration) -> Result<(u64, Vec<String>)> {
    let (mut flaps, mut errors) = (0, Vec::new());
    let mut was_up = true;
    let watch = Instant::now();
    while watch.elapsed() < window {
        let p = m.peer(peer)?.expect("peer");
        let up = p.state == "Established";
        if was_up && !up {
            flaps += 1;
        }
        if !up && errors.last() != Some(&p.last_error) {
            errors.push(p.last_error.clone());
        }
        was_up = up;
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok((flaps, errors))
}

/// How many times BIRD `b`'s detection timer expired its session with `peer` (its log).
fn bird_expiries(lab: &Lab, peer: Ipv4Addr) -> u64 {
    let log = std::fs::read_to_string(lab.dir().join("b.stderr")).unwrap_or_default();
    let needle = format!("Session to {peer} expired");
    log.lines().filter(|l| l.contains(&needle)).count() as u64
}

/// RFC 5882 §3.2 after a repair: BIRD 2.0.12 removes its BFD session when its BGP session goes
/// down and starts a fresh one (a new discriminator, state Down) when BGP starts again. That
/// fresh session's Down must not close margay's BGP session a second time: a cut link and its
/// repair cost exactly one BGP flap on each side, and BFD ends Up at its timers.
#[test]
fn restoring_the_link_flaps_bgp_exactly_once() -> Result<()> {
    let lab = Lab::new("restoring_the_link_flaps_bgp_exactly_once")?;
    let Pair {
        nm,
        _nb,
        link,
        bird,
        m,
        kb,
    } = Pair::start(&lab)?;
    let ab = link.b.ip4();
    // The link stays cut after both sides noticed: not at all (the benchmark's repair), less
    // than BIRD's error wait (1 s), and longer (BIRD restarts its BGP protocol, and with it its
    // BFD session, while the link is still cut).
    let (mut stalls, mut failures) = (0, 0);
    for (round, hold) in (1..).zip([0, 600, 2500]) {
        let expiries_before = bird_expiries(&lab, link.a.ip4());
        {
            let _cut = margay_tests::ecmp::Cut::on(&nm, &[&link.a.ifname]);
            let t0 = Instant::now();
            let took = time_until(t0, DETECT_LIMIT, || {
                m.peer(v4(ab))
                    .ok()
                    .flatten()
                    .is_some_and(|p| p.state != "Established")
            });
            assert!(took < DETECT_LIMIT, "round {round}: margay took {took:?}");
            time_until(t0, DETECT_LIMIT, || {
                bird.protocol("m")
                    .ok()
                    .flatten()
                    .is_some_and(|p| !p.is_established())
            });
            std::thread::sleep(Duration::from_millis(hold));
        }
        let t0 = Instant::now();
        m.wait_established(v4(ab), UP)?;
        let back = t0.elapsed();
        // Watch for a second flap: BIRD's fresh BFD session comes within its 1 s idle
        // interval; a second BGP close would show within a few seconds.
        let (flaps, errors) = watch_flaps(&m, v4(ab), Duration::from_secs(6))?;
        let last_error = errors.last().cloned().unwrap_or_default();
        let p = bfd_settled(&m, v4(ab), Duration::from_millis(100), 3)?;
        let b = p.bfd.expect("bfd status");
        let expired = bird_expiries(&lab, link.a.ip4()) - expiries_before;
        eprintln!(
            "round {round}: back {back:?} after the repair; later flaps {flaps}; BFD {} downs {}; BIRD's detection timer fired {expired} time(s)",
            b.state, b.downs
        );
        if flaps > 0 && expired > 1 {
            // BIRD timed margay's session out again after the repair: margay's packets stopped
            // for 300 ms (its BFD thread starved on this loaded machine). A real second
            // failure, not the case under test; tolerated twice at most.
            stalls += 1;
            assert!(
                stalls <= 2,
                "round {round}: BIRD saw margay silent again after the repair"
            );
            failures += flaps;
        } else {
            assert_eq!(
                flaps, 0,
                "round {round}: margay's BGP session closed again after the repair ({last_error})"
            );
        }
        failures += 1;
        assert_eq!(
            b.downs, failures,
            "round {round}: one BFD failure per cut: {b:?}"
        );
        assert!(m.peer(v4(ab))?.is_some_and(|p| p.state == "Established"));
        bird.wait_established("m", UP)?;
        m.wait_route_via(kb, v4(ab), UP)?;
    }
    Ok(())
}

/// The deterministic form of the case above: `birdc restart` takes BIRD's BGP session down
/// and up again, and with it BIRD replaces its BFD session (a new discriminator, starting in
/// Down). That is one BGP flap, BIRD's own; margay's BFD session re-synchronises with the new
/// one without counting a failure or closing BGP a second time.
#[test]
fn a_peer_replacing_its_bfd_session_is_not_a_failure() -> Result<()> {
    let lab = Lab::new("a_peer_replacing_its_bfd_session_is_not_a_failure")?;
    let Pair {
        nm: _nm,
        _nb,
        link,
        bird,
        m,
        kb,
    } = Pair::start(&lab)?;
    let ab = link.b.ip4();
    let before = m.peer(v4(ab))?.and_then(|p| p.bfd).expect("bfd status");
    let (mut stalls, mut failures) = (0, before.downs);
    for round in 1..=3 {
        let expiries_before = bird_expiries(&lab, link.a.ip4());
        let discr = m
            .peer(v4(ab))?
            .and_then(|p| p.bfd)
            .expect("bfd status")
            .remote_discriminator;
        bird.birdc(&["restart", "m"])?;
        let (flaps, errors) = watch_flaps(&m, v4(ab), Duration::from_secs(8))?;
        m.wait_established(v4(ab), UP)?;
        let after = bfd_settled(&m, v4(ab), Duration::from_millis(100), 3)?
            .bfd
            .expect("bfd status");
        let expired = bird_expiries(&lab, link.a.ip4()) - expiries_before;
        eprintln!(
            "round {round}: BGP flaps {flaps} ({errors:?}); BFD {} with discriminator {} (was {discr}), downs {}; BIRD's detection timer fired {expired} time(s)",
            after.state, after.remote_discriminator, after.downs
        );
        assert_ne!(
            after.remote_discriminator, discr,
            "BIRD replaced its BFD session"
        );
        if expired > 0 {
            // BIRD timed margay's session out: margay's packets stopped for 300 ms (its BFD
            // thread starved on this loaded machine), a real failure each side counts; not
            // the case under test. Tolerated once.
            stalls += 1;
            assert!(stalls <= 1, "round {round}: BIRD saw margay silent twice");
            failures = after.downs;
        } else {
            assert_eq!(flaps, 1, "round {round}: BIRD's restart alone: {errors:?}");
            assert_eq!(
                after.downs, failures,
                "round {round}: the peer's new session counted as a failure"
            );
        }
        m.wait_route_via(kb, v4(ab), UP)?;
    }
    Ok(())
}
