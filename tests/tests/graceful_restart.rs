//! Graceful restart (RFC 4724) between margay-bgpd and BIRD 2, both roles: real daemons in
//! namespaces, killed and restarted, with the peer's table sampled every 100 ms throughout.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use margay_lab::bird::{birdc, parse_routes};
use margay_lab::{
    Bgpd, BgpdConfig, BgpdNeighbor, Bird, BirdConfig, BirdNeighbor, ExportPolicy, Lab, LabSwitch,
    Netns, Result, block4, wait_for,
};
use margay_proto::bgp::v1 as pb;
use tokio_stream::StreamExt;

const UP: Duration = Duration::from_secs(45);
const AS: u32 = 64512;
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

fn v4(a: Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}

/// BIRD `b` with graceful restart on towards margay at `margay`, exporting `originate`.
fn bird_config(
    me: Ipv4Addr,
    margay: Ipv4Addr,
    originate: &[IpNet],
    restart: Option<u16>,
) -> BirdConfig {
    let mut c = BirdConfig::new(me);
    for p in originate {
        c = c.originate(*p);
    }
    c.neighbor(
        BirdNeighbor::new("m", v4(margay), AS, AS)
            .export(ExportPolicy::Static)
            .graceful_restart(restart),
    )
}

/// margay `m` (graceful restart on by default) with BIRD as its one neighbour.
fn margay_config(me: Ipv4Addr, bird: Ipv4Addr, originate: &[IpNet]) -> BgpdConfig {
    let mut c = BgpdConfig::new(me, AS).neighbor(BgpdNeighbor::new(v4(bird), AS));
    for p in originate {
        c = c.originate(*p);
    }
    c
}

/// Whether BIRD (control socket `socket`) has a route for `prefix`.
fn bird_has(socket: &Path, prefix: IpNet) -> std::result::Result<bool, String> {
    let p = prefix.to_string();
    let text = birdc(socket, &["show", "route", "all", "table", "master4", &p])
        .map_err(|e| e.to_string())?;
    let routes = parse_routes(&text).map_err(|e| e.to_string())?;
    Ok(routes.iter().any(|r| r.prefix == prefix))
}

/// Whether margay (API socket `socket`) has a best route for `prefix`.
fn margay_has(socket: &Path, prefix: IpNet) -> std::result::Result<bool, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let channel = margay_lab::bgpd::connect_unix(socket)
            .await
            .map_err(|e| e.to_string())?;
        let routes = pb::bgp_client::BgpClient::new(channel)
            .list_routes(pb::ListRoutesRequest {
                family: "ipv4".into(),
                all: false,
            })
            .await
            .map_err(|e| e.to_string())?
            .into_inner()
            .routes;
        Ok(routes.iter().any(|r| r.prefix == prefix.to_string()))
    })
}

/// Samples a table every 100 ms on its own thread until stopped.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<(Duration, std::result::Result<bool, String>)>>,
}

impl Sampler {
    fn start(
        socket: PathBuf,
        prefix: IpNet,
        probe: fn(&Path, IpNet) -> std::result::Result<bool, String>,
    ) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let next = Instant::now() + SAMPLE_EVERY;
                samples.push((t0.elapsed(), probe(&socket, prefix)));
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            samples
        });
        Sampler { stop, thread }
    }

    fn finish(self) -> Vec<(Duration, std::result::Result<bool, String>)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("sampler thread")
    }
}

/// Every sample saw the route; a failed probe counts as a miss.
fn assert_always_present(what: &str, samples: &[(Duration, std::result::Result<bool, String>)]) {
    let misses: Vec<_> = samples
        .iter()
        .filter(|(_, s)| !matches!(s, Ok(true)))
        .collect();
    eprintln!(
        "{what}: {} samples over {:?}, {} without the route",
        samples.len(),
        samples.last().map(|s| s.0).unwrap_or_default(),
        misses.len()
    );
    assert!(
        misses.is_empty(),
        "{what}: the route was missing in {} of {} samples: {misses:?}",
        misses.len(),
        samples.len()
    );
}

/// A lab with margay's namespace `m` and BIRD's `b` on one switch (which lives as long as the
/// lab: dropping it removes the bridge).
struct Pair {
    lab: Lab,
    _sw: LabSwitch,
    nm: Netns,
    nb: Netns,
    am: Ipv4Addr,
    ab: Ipv4Addr,
}

fn lab_pair(name: &str) -> Result<Pair> {
    let lab = Lab::new(name)?;
    let sw = lab.switch("sw")?;
    let (nm, nb) = (lab.netns("m")?, lab.netns("b")?);
    let (am, ab) = (sw.attach(&nm)?, sw.attach(&nb)?);
    Ok(Pair {
        _sw: sw,
        lab,
        nm,
        nb,
        am: am.ip4(),
        ab: ab.ip4(),
    })
}

/// RFC 4724 §4.1, margay restarting: SIGTERM closes the session without a NOTIFICATION, so
/// BIRD keeps margay's route as stale; the restarted margay (Restart State bit set) sends it
/// again with End-of-RIB, and BIRD never lost it.
#[test]
fn bird_keeps_margay_routes_while_margay_restarts() -> Result<()> {
    let Pair {
        lab,
        _sw,
        nm,
        nb,
        am,
        ab,
    } = lab_pair("bird_keeps_margay_routes_while_margay_restarts")?;
    let k = IpNet::V4(block4());
    let mut bird = Bird::start(&lab, &nb, "b", bird_config(ab, am, &[], None))?;
    let mut m = Bgpd::start(&lab, &nm, "m", margay_config(am, ab, &[k]))?;
    bird.wait_established("m", UP)?;
    bird.wait_bgp_route_via(k, v4(am), UP)?;

    let sampler = Sampler::start(bird.socket().to_path_buf(), k, bird_has);
    std::thread::sleep(Duration::from_millis(300));
    let stopped = Instant::now();
    m.stop();
    let marker = PathBuf::from(format!("{}.gr", m.config().socket.display()));
    assert!(marker.exists(), "a graceful stop leaves {marker:?}");
    let m = Bgpd::start(&lab, &nm, "m", margay_config(am, ab, &[k]))?;
    m.wait_established(v4(ab), UP)?;
    let back = stopped.elapsed();
    // Past BIRD's wait for our End-of-RIB and its sweep of stale routes.
    std::thread::sleep(Duration::from_secs(2));
    let samples = sampler.finish();
    eprintln!("margay was away (stop to Established again) for {back:?}");
    assert_always_present("BIRD's route to margay's prefix", &samples);

    bird.wait_bgp_route_via(k, v4(am), UP)?;
    let log = bird.process().log_tail(400);
    assert!(
        log.contains("graceful restart"),
        "BIRD ran graceful restart for m:\n{log}"
    );
    assert!(
        !log.contains("m: Received: Administrative shutdown"),
        "no Cease on a graceful stop:\n{log}"
    );
    wait_for(
        "the restart marker to go once the table is complete",
        UP,
        &[],
        || {
            if marker.exists() {
                Err(format!("{marker:?} still there"))
            } else {
                Ok(())
            }
        },
    )?;
    Ok(())
}

/// RFC 4724 §4.2, margay helping: BIRD dies (SIGKILL: no NOTIFICATION) and comes back with
/// `-R`; margay keeps its route as stale all along, and after BIRD's End-of-RIB the route is
/// a current one again.
#[test]
fn margay_keeps_bird_routes_while_bird_restarts() -> Result<()> {
    let Pair {
        lab,
        _sw,
        nm,
        nb,
        am,
        ab,
    } = lab_pair("margay_keeps_bird_routes_while_bird_restarts")?;
    let k = IpNet::V4(block4());
    let mut bird = Bird::start(&lab, &nb, "b", bird_config(ab, am, &[k], None))?;
    let m = Bgpd::start(&lab, &nm, "m", margay_config(am, ab, &[]))?;
    m.wait_established(v4(ab), UP)?;
    m.wait_route_via(k, v4(ab), UP)?;

    let sampler = Sampler::start(m.config().socket.clone(), k, margay_has);
    std::thread::sleep(Duration::from_millis(300));
    bird.kill();
    let killed = Instant::now();
    let status = wait_for("margay to report the stale routes", UP, &[&m], || {
        match m.peer(v4(ab)) {
            Ok(Some(p))
                if p.last_error
                    .starts_with("Graceful restart: keeping 1 stale") =>
            {
                Ok(p)
            }
            Ok(p) => Err(format!("{p:?}")),
            Err(e) => Err(e.to_string()),
        }
    })?;
    eprintln!(
        "during the restart: {} / {}",
        status.state, status.last_error
    );
    let bird = Bird::start_recovering(&lab, &nb, "b", bird_config(ab, am, &[k], None))?;
    m.wait_established(v4(ab), UP)?;
    eprintln!("BIRD was away for {:?}", killed.elapsed());
    wait_for(
        "margay to sweep after BIRD's End-of-RIB",
        UP,
        &[&m, &bird],
        || match m.peer(v4(ab)) {
            Ok(Some(p)) if p.state == "Established" && !p.last_error.starts_with("Graceful") => {
                Ok(())
            }
            Ok(p) => Err(format!("{p:?}")),
            Err(e) => Err(e.to_string()),
        },
    )?;
    std::thread::sleep(Duration::from_millis(500));
    let samples = sampler.finish();
    assert_always_present("margay's route to BIRD's prefix", &samples);
    let p = m.peer(v4(ab))?.expect("peer");
    assert_eq!(p.prefixes_accepted, 1, "the refreshed route is held: {p:?}");
    m.wait_route_via(k, v4(ab), UP)?;
    Ok(())
}

/// RFC 4724 §4.2: stale routes last the restarting peer's Restart Time, no longer and no
/// shorter, when it does not come back.
#[test]
fn stale_routes_are_flushed_when_the_restart_time_runs_out() -> Result<()> {
    let Pair {
        lab,
        _sw,
        nm,
        nb,
        am,
        ab,
    } = lab_pair("stale_routes_are_flushed_when_the_restart_time_runs_out")?;
    let k = IpNet::V4(block4());
    let mut bird = Bird::start(&lab, &nb, "b", bird_config(ab, am, &[k], Some(5)))?;
    let m = Bgpd::start(&lab, &nm, "m", margay_config(am, ab, &[]))?;
    m.wait_established(v4(ab), UP)?;
    m.wait_route_via(k, v4(ab), UP)?;

    bird.kill();
    let killed = Instant::now();
    let socket = m.config().socket.clone();
    let mut last_seen = Duration::ZERO;
    let gone = loop {
        let t = killed.elapsed();
        match margay_has(&socket, k) {
            Ok(true) => last_seen = t,
            Ok(false) => break t,
            Err(e) => panic!("ListRoutes: {e}"),
        }
        assert!(t < Duration::from_secs(20), "route still there after {t:?}");
        std::thread::sleep(SAMPLE_EVERY);
    };
    eprintln!("stale route last seen {last_seen:?} after the kill, gone at {gone:?}");
    assert!(
        last_seen >= Duration::from_millis(4500),
        "kept for BIRD's 5 s restart time, but gone after {gone:?}"
    );
    assert!(
        gone <= Duration::from_millis(6500),
        "flushed once the 5 s restart time ran out, not at {gone:?}"
    );
    Ok(())
}

/// RFC 4724 §4.1's deferral, seen by felix: after margay restarts, WatchRoutes reports
/// SYNCED only once BIRD's routes are in, so felix does not prune kernel routes that are
/// merely on their way. BIRD is down when margay comes back and starts a second later.
#[test]
fn watch_does_not_report_synced_until_peers_are_back() -> Result<()> {
    let Pair {
        lab,
        _sw,
        nm,
        nb,
        am,
        ab,
    } = lab_pair("watch_does_not_report_synced_until_peers_are_back")?;
    let k = IpNet::V4(block4());
    let mut bird = Bird::start(&lab, &nb, "b", bird_config(ab, am, &[k], None))?;
    let mut m = Bgpd::start(&lab, &nm, "m", margay_config(am, ab, &[]))?;
    m.wait_route_via(k, v4(ab), UP)?;
    m.stop();
    bird.kill();
    let m = Bgpd::start(&lab, &nm, "m", margay_config(am, ab, &[]))?;

    let socket = m.config().socket.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut stream = rt.block_on(async {
        let channel = margay_lab::bgpd::connect_unix(&socket).await?;
        let stream = pb::bgp_client::BgpClient::new(channel)
            .watch_routes(pb::WatchRoutesRequest {
                family: "ipv4".into(),
            })
            .await
            .expect("WatchRoutes")
            .into_inner();
        Ok::<_, margay_lab::LabError>(stream)
    })?;
    let t0 = Instant::now();
    // Nothing but the (empty) table may arrive while BIRD is away.
    let early = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(1), stream.next())
            .await
            .ok()
    });
    assert!(
        early.is_none(),
        "no event, SYNCED least of all, while the peer is away: {early:?}"
    );
    let _bird = Bird::start(&lab, &nb, "b", bird_config(ab, am, &[k], None))?;
    let bird_started = t0.elapsed();
    let before_synced = rt.block_on(async {
        let mut adds = Vec::new();
        loop {
            let ev = tokio::time::timeout(UP, stream.next())
                .await
                .expect("SYNCED in time")
                .expect("stream open")
                .expect("no stream error");
            if ev.kind == pb::route_event::Kind::Synced as i32 {
                return adds;
            }
            if let Some(r) = ev.route {
                adds.push(r.prefix);
            }
        }
    });
    let synced = t0.elapsed();
    eprintln!(
        "BIRD started {bird_started:?} after the watch; SYNCED at {synced:?}, preceded by {before_synced:?}"
    );
    assert!(
        before_synced.contains(&k.to_string()),
        "BIRD's {k} comes before SYNCED: {before_synced:?}"
    );
    Ok(())
}
