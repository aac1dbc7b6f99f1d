//! Faults and limits for margay-bgpd (issue 7 §3): prefix limits (warn, and Cease with the
//! RFC 4486 data), hold timer expiry, TCP resets, a peer flapping for a minute, and bgpd killed
//! while BIRD sends it a large table. Real daemons in lab namespaces: margay-bgpd, BIRD 2, and
//! raw test peers that write BGP octets themselves. Throughout, a BIRD session that has nothing
//! to do with the fault stays Established with its route and its `since` unchanged.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv4Net};
use margay_lab::bird::parse_routes;
use margay_lab::{
    Bgpd, BgpdConfig, BgpdNeighbor, Bird, BirdConfig, BirdNeighbor, ExportPolicy, Lab, Netns,
    Result, wait_for,
};
use margay_proto::bgp::v1::Peer;
use margay_tests::rawpeer::build;
use margay_tests::{RIG_AS as AS, RawPeer, RawRig};

const UP: Duration = Duration::from_secs(45);
/// The raw peers' AS (eBGP).
const RAW_AS: u32 = 65001;
/// margay's health and metrics port (on 127.0.0.1 in its namespace).
const METRICS_PORT: u16 = 9179;

fn v4(a: Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}

/// `n` /24s starting at `base` (`base`, `base + 256`, ...).
fn prefixes(base: Ipv4Addr, n: u32) -> Vec<Ipv4Net> {
    (0..n)
        .map(|i| {
            let a = Ipv4Addr::from(u32::from(base) + (i << 8));
            Ipv4Net::new(a, 24).expect("a /24")
        })
        .collect()
}

/// One raw neighbour of margay: passive on margay's side, eBGP.
struct RawNeighbor {
    hold_time: u16,
    limit: Option<(u32, &'static str, u16)>,
}

impl RawNeighbor {
    fn plain() -> RawNeighbor {
        RawNeighbor {
            hold_time: 90,
            limit: None,
        }
    }
}

/// The shared rig ([`RawRig`]) with this suite's raw neighbours (hold times, prefix limits) and
/// margay's metrics on [`METRICS_PORT`].
struct Rig(RawRig);

impl std::ops::Deref for Rig {
    type Target = RawRig;
    fn deref(&self) -> &RawRig {
        &self.0
    }
}

impl std::ops::DerefMut for Rig {
    fn deref_mut(&mut self) -> &mut RawRig {
        &mut self.0
    }
}

impl Rig {
    fn new(test: &str, bird_peer: BgpdNeighbor, raws: &[RawNeighbor]) -> Result<Rig> {
        let raws = raws
            .iter()
            .map(|r| {
                let mut n = BgpdNeighbor::new(v4(Ipv4Addr::UNSPECIFIED), RAW_AS);
                n.hold_time = r.hold_time;
                match r.limit {
                    Some((max, action, restart)) => n.max_prefixes(max, action, restart),
                    None => n,
                }
            })
            .collect();
        let rig = RawRig::start(test, bird_peer, raws, |mut c| {
            c.http_port = Some(METRICS_PORT);
            c
        })?;
        Ok(Rig(rig))
    }

    /// An Established session from raw peer `i`, offering hold time `hold`.
    fn session(&self, i: usize, hold: u16, timeout: Duration) -> Result<RawPeer> {
        let open = build::open(
            RAW_AS,
            hold,
            self.raw[i],
            &build::default_capabilities(RAW_AS),
        );
        self.0.session(i, &open, timeout)
    }

    /// margay's Prometheus metrics (fetched with curl inside its namespace).
    fn metrics(&self) -> Result<String> {
        self.nm.exec(
            "curl",
            &["-sf", &format!("http://127.0.0.1:{METRICS_PORT}/metrics")],
        )
    }

    /// margay's best IPv4 prefixes.
    fn margay_prefixes(&self) -> Result<BTreeSet<String>> {
        Ok(self
            .m
            .routes("ipv4", false)?
            .into_iter()
            .map(|r| r.prefix)
            .collect())
    }

    /// The BIRD session is untouched (see [`RawRig::assert_bird_undisturbed`]).
    fn assert_bird_undisturbed(&mut self) {
        self.0.assert_bird_undisturbed();
    }
}

/// margay's status of the peer at `address`.
fn peer_of(m: &Bgpd, address: Ipv4Addr) -> std::result::Result<Peer, String> {
    m.peer(v4(address))
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{address} is not a peer"))
}

/// VmRSS of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// RFC 4486 §4: over `max-prefixes` with `cease`, margay sends Cease / Maximum Number of
/// Prefixes Reached carrying AFI, SAFI and the limit, drops the peer's routes and says why in
/// its peer status; with `warn` the session stays and every route is kept.
#[test]
fn max_prefixes_cease_sends_rfc4486_data_and_warn_keeps_the_session() -> Result<()> {
    let raws = [
        RawNeighbor {
            limit: Some((10, "cease", 3)),
            ..RawNeighbor::plain()
        },
        RawNeighbor {
            limit: Some((10, "warn", 3)),
            ..RawNeighbor::plain()
        },
    ];
    let mut rig = Rig::new(
        "max_prefixes_cease_sends_rfc4486_data_and_warn_keeps_the_session",
        BgpdNeighbor::new(v4(Ipv4Addr::UNSPECIFIED), AS),
        &raws,
    )?;

    // Warn: 15 prefixes over a limit of 10 are all kept, the session too.
    let warned = prefixes(Ipv4Addr::new(10, 60, 0, 0), 15);
    let mut w = rig.session(1, 90, UP)?;
    w.announce(RAW_AS, rig.raw[1], &warned)?;
    for p in &warned {
        rig.m.wait_route_via(IpNet::V4(*p), v4(rig.raw[1]), UP)?;
    }
    w.stays_up_for(Duration::from_secs(2))?;
    let log = rig.m.process().log_tail(400);
    assert!(
        log.contains("maximum prefixes exceeded"),
        "no warning logged:\n{log}"
    );

    // Cease: the 11th prefix closes the session with the RFC 4486 data.
    let ceased = prefixes(Ipv4Addr::new(10, 70, 0, 0), 11);
    let mut c = rig.session(0, 90, UP)?;
    c.announce(RAW_AS, rig.raw[0], &ceased[..10])?;
    rig.m
        .wait_route_via(IpNet::V4(ceased[9]), v4(rig.raw[0]), UP)?;
    c.announce(RAW_AS, rig.raw[0], &ceased[10..])?;
    let n = c.expect_notification(Duration::from_secs(10))?;
    assert_eq!((n.code, n.subcode), (6, 1), "{n:?}");
    assert_eq!(n.data, [0, 1, 1, 0, 0, 0, 10], "AFI 1, SAFI 1, limit 10");
    for p in &ceased {
        rig.m.wait_no_route(IpNet::V4(*p), UP)?;
    }
    let peer = rig.m.peer(v4(rig.raw[0]))?.expect("the ceased peer");
    assert_ne!(peer.state, "Established");
    assert!(
        peer.last_error.contains("maximum prefixes reached")
            && peer.last_error.contains("limit 10"),
        "last error: {:?}",
        peer.last_error
    );

    let metrics = rig.metrics()?;
    for raw in &rig.raw {
        let line = format!("margay_bgp_prefix_limit_exceeded_total{{peer=\"{raw}\"}} 1");
        assert!(metrics.contains(&line), "no `{line}` in\n{metrics}");
    }

    // After the restart delay the neighbour is accepted again.
    let again = rig.session(0, 90, UP)?;
    drop(again);
    w.stays_up_for(Duration::from_secs(1))?;
    rig.assert_bird_undisturbed();
    Ok(())
}

/// A real BIRD announcing more than margay's limit for it gets Cease / Maximum Number of
/// Prefixes Reached (BIRD names it), its routes leave margay's RIB, and margay's peer status
/// says why the session went down.
#[test]
fn bird_over_max_prefixes_is_ceased_and_its_routes_dropped() -> Result<()> {
    let lab = Lab::new("bird_over_max_prefixes_is_ceased_and_its_routes_dropped")?;
    let sw = lab.switch("sw")?;
    let (nm, nb) = (lab.netns("m")?, lab.netns("b")?);
    let (am, ab) = (sw.attach(&nm)?, sw.attach(&nb)?);
    let routes = prefixes(Ipv4Addr::new(10, 80, 0, 0), 20);
    let mut bc = BirdConfig::new(ab.ip4());
    for p in &routes {
        bc = bc.originate(IpNet::V4(*p));
    }
    let bird = Bird::start(
        &lab,
        &nb,
        "b",
        bc.neighbor(BirdNeighbor::new("m", v4(am.ip4()), AS, AS).export(ExportPolicy::Static)),
    )?;
    let m = Bgpd::start(
        &lab,
        &nm,
        "m",
        BgpdConfig::new(am.ip4(), AS)
            .neighbor(BgpdNeighbor::new(v4(ab.ip4()), AS).max_prefixes(10, "cease", 30)),
    )?;
    let peer = wait_for("margay to cease BIRD's session", UP, &[&m, &bird], || {
        let p = peer_of(&m, ab.ip4())?;
        if p.last_error.contains("maximum prefixes reached") {
            Ok(p)
        } else {
            Err(format!("{p:?}"))
        }
    })?;
    assert_ne!(peer.state, "Established", "{peer:?}");
    assert!(peer.last_error.contains("limit 10"), "{peer:?}");
    let proto = wait_for("BIRD to report the Cease", UP, &[&m, &bird], || {
        let p = bird
            .protocol("m")
            .map_err(|e| e.to_string())?
            .ok_or("no protocol m")?;
        if p.is_established() {
            Err(format!("{p:?}"))
        } else {
            Ok(p)
        }
    })?;
    let detail = bird.birdc(&["show", "protocols", "all", "m"])?;
    assert!(
        detail.contains("Maximum number of prefixes reached"),
        "BIRD does not name the Cease subcode: {proto:?}\n{detail}"
    );
    for p in &routes {
        m.wait_no_route(IpNet::V4(*p), UP)?;
    }
    let left = m.routes("ipv4", true)?;
    assert!(
        left.is_empty(),
        "routes left from the ceased peer: {left:?}"
    );
    Ok(())
}

/// RFC 4271 §6.5: a peer that goes silent gets Hold Timer Expired once the negotiated hold time
/// passes, and its routes go; the BIRD session is not touched.
#[test]
fn silent_peer_gets_hold_timer_expired_and_loses_its_routes() -> Result<()> {
    let raws = [RawNeighbor {
        hold_time: 3,
        ..RawNeighbor::plain()
    }];
    let mut rig = Rig::new(
        "silent_peer_gets_hold_timer_expired_and_loses_its_routes",
        BgpdNeighbor::new(v4(Ipv4Addr::UNSPECIFIED), AS),
        &raws,
    )?;
    let announced = prefixes(Ipv4Addr::new(10, 90, 0, 0), 5);
    let mut p = rig.session(0, 3, UP)?;
    p.announce(RAW_AS, rig.raw[0], &announced)?;
    for a in &announced {
        rig.m.wait_route_via(IpNet::V4(*a), v4(rig.raw[0]), UP)?;
    }
    let silent = Instant::now();
    let n = p.expect_notification(Duration::from_secs(15))?;
    let after = silent.elapsed();
    assert_eq!((n.code, n.subcode), (4, 0), "Hold Timer Expired: {n:?}");
    assert!(
        after >= Duration::from_secs(2),
        "the hold timer fired after {after:?}, before the 3 s hold time"
    );
    for a in &announced {
        rig.m.wait_no_route(IpNet::V4(*a), UP)?;
    }
    eprintln!("Hold Timer Expired {after:?} after the peer went silent (hold time 3 s)");
    rig.assert_bird_undisturbed();
    Ok(())
}

/// A TCP reset (SO_LINGER 0, no NOTIFICATION) drops the peer's routes; the peer connects again
/// and its routes come back; the BIRD session is not touched.
#[test]
fn tcp_reset_withdraws_the_peers_routes_until_it_reconnects() -> Result<()> {
    let mut rig = Rig::new(
        "tcp_reset_withdraws_the_peers_routes_until_it_reconnects",
        BgpdNeighbor::new(v4(Ipv4Addr::UNSPECIFIED), AS),
        &[RawNeighbor::plain()],
    )?;
    let announced = prefixes(Ipv4Addr::new(10, 91, 0, 0), 5);
    let mut p = rig.session(0, 90, UP)?;
    p.announce(RAW_AS, rig.raw[0], &announced)?;
    for a in &announced {
        rig.m.wait_route_via(IpNet::V4(*a), v4(rig.raw[0]), UP)?;
    }
    p.reset()?;
    for a in &announced {
        rig.m.wait_no_route(IpNet::V4(*a), UP)?;
    }
    let mut p = rig.session(0, 90, UP)?;
    p.announce(RAW_AS, rig.raw[0], &announced)?;
    for a in &announced {
        rig.m.wait_route_via(IpNet::V4(*a), v4(rig.raw[0]), UP)?;
    }
    rig.assert_bird_undisturbed();
    Ok(())
}

/// A peer flapping every second for a minute (session up, a few hundred routes, then a TCP
/// reset or a Cease): margay stays up, its RSS stays bounded, the BIRD session and a steady raw
/// peer are undisturbed, and at the end the RIB holds exactly what the live peers announce.
#[test]
fn a_peer_flapping_for_a_minute_leaves_bgpd_bounded_and_others_untouched() -> Result<()> {
    let mut rig = Rig::new(
        "a_peer_flapping_for_a_minute_leaves_bgpd_bounded_and_others_untouched",
        BgpdNeighbor::new(v4(Ipv4Addr::UNSPECIFIED), AS),
        &[RawNeighbor::plain(), RawNeighbor::plain()],
    )?;
    let steady_routes = prefixes(Ipv4Addr::new(10, 100, 0, 0), 50);
    let mut steady = rig.session(0, 90, UP)?;
    steady.announce(RAW_AS, rig.raw[0], &steady_routes)?;
    rig.m
        .wait_route_via(IpNet::V4(steady_routes[49]), v4(rig.raw[0]), UP)?;
    let pid = rig.m.pid();
    let rss_start = rss_kib(pid);
    let mut rss_max = rss_start;

    let minute = Instant::now();
    let (mut flaps, mut refused) = (0u32, 0u32);
    let mut i = 0u32;
    while minute.elapsed() < Duration::from_secs(60) {
        let tick = Instant::now();
        // Each round announces a different set of 300, so a leftover shows at the end.
        let base = Ipv4Addr::new(10, 110 + (i % 4) as u8, 0, 0);
        match rig.session(1, 90, Duration::from_millis(900)) {
            Ok(mut p) => {
                p.announce(RAW_AS, rig.raw[1], &prefixes(base, 300))?;
                std::thread::sleep(Duration::from_millis(400));
                if i.is_multiple_of(2) {
                    p.reset()?;
                } else {
                    p.send(&build::message(3, &[6, 4]))?;
                }
                flaps += 1;
            }
            Err(_) => refused += 1,
        }
        steady.keepalive()?;
        rss_max = rss_max.max(rss_kib(pid));
        i += 1;
        std::thread::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed()));
    }
    let rss_end = rss_kib(pid);
    eprintln!(
        "flapping: {i} rounds in {:?}, {flaps} sessions up and torn down, {refused} refused \
         (margay's idle hold back-off); VmRSS {rss_start} KiB at the start, {rss_max} KiB at \
         most, {rss_end} KiB at the end",
        minute.elapsed()
    );
    assert!(
        flaps >= 3,
        "only {flaps} flaps happened: the test did not flap"
    );
    let growth = rss_max.saturating_sub(rss_start);
    assert!(
        growth < 64 * 1024,
        "margay's RSS grew by {growth} KiB while a peer flapped ({rss_start} -> {rss_max} KiB)"
    );

    let mut want: BTreeSet<String> = steady_routes.iter().map(|p| p.to_string()).collect();
    want.insert(rig.bird_block.to_string());
    wait_for(
        "the RIB to hold only the live peers' routes",
        Duration::from_secs(15),
        &[&rig.m],
        || {
            let have = rig.margay_prefixes().map_err(|e| e.to_string())?;
            if have == want {
                return Ok(());
            }
            let extra: Vec<_> = have.difference(&want).take(10).collect();
            let missing: Vec<_> = want.difference(&have).take(10).collect();
            Err(format!("extra {extra:?}, missing {missing:?}"))
        },
    )?;
    steady.stays_up_for(Duration::from_secs(1))?;
    assert_eq!(rig.m.pid(), pid);
    rig.assert_bird_undisturbed();
    Ok(())
}

/// bgpd killed (SIGKILL) while BIRD sends it a 100k-route table: after the restart margay holds
/// exactly BIRD's table, and BIRD holds exactly what the new margay originates (the killed
/// one's prefix is gone, nothing stale).
#[test]
fn bgpd_killed_mid_table_converges_after_restart() -> Result<()> {
    const TABLE: u32 = 100_000;
    let lab = Lab::new("bgpd_killed_mid_table_converges_after_restart")?;
    let sw = lab.switch("sw")?;
    let (nm, nb) = (lab.netns("m")?, lab.netns("b")?);
    let (am, ab) = (sw.attach(&nm)?, sw.attach(&nb)?);
    // 100k /30s from 100.64.0.0.
    let table: Vec<Ipv4Net> = (0..TABLE)
        .map(|i| Ipv4Net::new(Ipv4Addr::from(0x6440_0000 + (i << 2)), 30).expect("a /30"))
        .collect();
    let mut bc = BirdConfig::new(ab.ip4());
    for p in &table {
        bc = bc.originate(IpNet::V4(*p));
    }
    let bird = Bird::start(
        &lab,
        &nb,
        "b",
        bc.neighbor(BirdNeighbor::new("m", v4(am.ip4()), AS, AS).export(ExportPolicy::Static)),
    )?;
    let old = IpNet::V4(Ipv4Net::new(Ipv4Addr::new(10, 200, 1, 0), 26).expect("net"));
    let new = IpNet::V4(Ipv4Net::new(Ipv4Addr::new(10, 200, 2, 0), 26).expect("net"));
    let config = |k: IpNet| {
        let mut n = BgpdNeighbor::new(v4(ab.ip4()), AS);
        n.hold_time = 90;
        BgpdConfig::new(am.ip4(), AS).originate(k).neighbor(n)
    };
    // BIRD's side of the link sends at 2 Mbit/s, so the ~0.5 MB table takes seconds to cross
    // and the kill lands in the middle of it however idle the machine is.
    tc(
        &nb,
        &[
            "qdisc", "add", "dev", &ab.ifname, "root", "tbf", "rate", "2mbit", "burst", "16kb",
            "latency", "5s",
        ],
    )?;
    let mut m = Bgpd::start(&lab, &nm, "m", config(old))?;
    bird.wait_bgp_route_via(old, v4(am.ip4()), UP)?;
    let at_kill = wait_for("the table to start arriving", UP, &[&m, &bird], || {
        let p = peer_of(&m, ab.ip4())?;
        if p.prefixes_received > 0 {
            Ok(p.prefixes_received)
        } else {
            Err(format!("{p:?}"))
        }
    })?;
    // SAFETY: kill(2) on the PID of our own child, which we have not reaped yet.
    unsafe { libc::kill(m.pid() as i32, libc::SIGKILL) };
    m.process().stop();
    eprintln!("killed margay-bgpd with {at_kill} of {TABLE} prefixes received");
    assert!(
        at_kill < u64::from(TABLE),
        "the whole table had arrived before the kill; the test needs a larger table"
    );
    tc(&nb, &["qdisc", "del", "dev", &ab.ifname, "root"])?;

    let started = Instant::now();
    let m = Bgpd::start(&lab, &nm, "m", config(new))?;
    let peer = wait_for(
        "the whole table again",
        Duration::from_secs(180),
        &[&m, &bird],
        || {
            let p = peer_of(&m, ab.ip4())?;
            if p.prefixes_accepted >= u64::from(TABLE) {
                Ok(p)
            } else {
                Err(format!("{p:?}"))
            }
        },
    )?;
    eprintln!(
        "after the restart: {} received, {} accepted in {:?}",
        peer.prefixes_received,
        peer.prefixes_accepted,
        started.elapsed()
    );
    assert_eq!(peer.prefixes_received, u64::from(TABLE), "{peer:?}");
    assert_eq!(peer.prefixes_accepted, u64::from(TABLE), "{peer:?}");
    // The RIB: exactly BIRD's table, each via BIRD, and our own prefix.
    let routes = m.routes("ipv4", true)?;
    let mut want: BTreeSet<String> = table.iter().map(|p| p.to_string()).collect();
    want.insert(new.to_string());
    let have: BTreeSet<String> = routes.iter().map(|r| r.prefix.clone()).collect();
    assert_eq!(routes.len(), want.len(), "one path per prefix");
    assert!(
        have == want,
        "margay's RIB differs from BIRD's table plus {new}"
    );
    let bird_nh = ab.ip4().to_string();
    let wrong: Vec<_> = routes
        .iter()
        .filter(|r| r.prefix != new.to_string() && r.next_hop != bird_nh)
        .take(5)
        .collect();
    assert!(wrong.is_empty(), "routes not via BIRD: {wrong:?}");
    // An operator's view of the same table: `margayctl node routes` reads all of it.
    let ctl = margay_lab::bgpd::margay_binary("margayctl", "cargo build -p margay-ctl")?;
    let out = nm
        .command(&ctl)
        .args(["node", "routes", "--all", "-o", "json", "--socket"])
        .arg(&m.config().socket)
        .output()
        .map_err(margay_lab::LabError::io("running margayctl node routes"))?;
    assert!(
        out.status.success(),
        "margayctl node routes: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("margayctl node routes -o json");
    assert_eq!(
        listed.as_array().map(Vec::len),
        Some(want.len()),
        "margayctl node routes lists the whole table"
    );
    bird.wait_bgp_route_via(new, v4(am.ip4()), UP)?;
    bird.wait_no_route(old, UP)?;
    let from_margay: Vec<IpNet> =
        parse_routes(&bird.birdc(&["show", "route", "all", "protocol", "m"])?)?
            .into_iter()
            .map(|r| r.prefix)
            .collect();
    assert_eq!(from_margay, vec![new], "BIRD's routes from margay");
    drop(nm);
    Ok(())
}

/// Runs `tc ARGS` in `ns`.
fn tc(ns: &Netns, args: &[&str]) -> Result<()> {
    let out = ns
        .command("tc")
        .args(args)
        .output()
        .map_err(margay_lab::LabError::io("running tc"))?;
    assert!(
        out.status.success(),
        "tc {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
