//! BFD keeps its timing while the RIB is busy (issue 13 §1): margay-bgpd holds a BFD session at
//! 3 × 100 ms with BIRD over a veth link while margay-bgp-blast (the throughput benchmark's
//! injector) sends it a million IPv4 prefixes on another session and a route reflector client
//! receives them all back. BIRD's side of the BFD session must stay Up throughout, with no state
//! change: a margay that stops sending for 300 ms (its BFD sharing the speaker's work, a blocked
//! thread) takes it Down and fails the test. margay's own session must not have gone down
//! either, and the BGP session with BIRD keeps its `since`.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Stdio;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use margay_lab::{
    Bgpd, BgpdConfig, BgpdNeighbor, Bird, BirdConfig, BirdNeighbor, ExportPolicy, Lab, LabError,
    Result, block4, margay_binary,
};
use margay_tests::bfd::{bfd_settled, bird_bfd};

const UP: Duration = Duration::from_secs(45);
const AS: u32 = 64512;
const BIRD_AS: u32 = 65100;
const COUNT: u32 = 1_000_000;
const BLAST_TIMEOUT: Duration = Duration::from_secs(900);

fn v4(a: Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}

/// BIRD's BFD session with `peer`: its state and since columns.
fn bird_bfd_state(bird: &Bird, peer: Ipv4Addr) -> Result<(String, String)> {
    let cols = bird_bfd(bird, IpAddr::V4(peer))?;
    Ok((cols[2].clone(), cols[3].clone()))
}

/// BIRD prints `since` from its monotonic clock through the current wall-clock offset, so the
/// same instant may print a millisecond apart; a Down and Up again takes at least a second.
fn same_instant(a: &str, b: &str) -> bool {
    let ms = |t: &str| -> Option<f64> {
        let mut parts = t.split(':');
        let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
        Some(
            (h.parse::<f64>().ok()? * 60.0 + m.parse::<f64>().ok()?) * 60_000.0
                + s.parse::<f64>().ok()? * 1000.0,
        )
    };
    matches!((ms(a), ms(b)), (Some(x), Some(y)) if (x - y).abs() < 50.0)
}

#[test]
fn a_million_routes_on_another_session_do_not_delay_bfd() -> Result<()> {
    let blast = margay_binary("margay-bgp-blast", "cargo build -p margay-bench")?;
    let lab = Lab::new("a_million_routes_on_another_session_do_not_delay_bfd")?;
    let (nm, nb) = (lab.netns("m")?, lab.netns("b")?);
    let link = lab.link(&nm, &nb)?;
    let (am, ab) = (link.a.ip4(), link.b.ip4());
    for a in ["127.0.0.2/8", "127.0.0.3/8"] {
        // Loopback already holds 127.0.0.1/8 and answers for the whole /8; these make the
        // injector's and client's sources explicit.
        let _ = nm.exec("ip", &["addr", "add", a, "dev", "lo"]);
    }

    let mut tor = BirdNeighbor::new("m", v4(am), BIRD_AS, AS).export(ExportPolicy::Static);
    tor.hold_time = 90;
    tor.bfd = true;
    let kb = IpNet::V4(block4());
    let bird = Bird::start(
        &lab,
        &nb,
        "b",
        BirdConfig::new(ab)
            .originate(kb)
            .bfd(100, 100, 3)
            .neighbor(tor),
    )?;
    let mut n = BgpdNeighbor::new(v4(ab), BIRD_AS).bfd(100, 100, 3);
    n.hold_time = 90;
    let injector = BgpdNeighbor::new(v4(Ipv4Addr::new(127, 0, 0, 2)), AS).passive();
    let client = BgpdNeighbor::new(v4(Ipv4Addr::new(127, 0, 0, 3)), AS)
        .passive()
        .rr_client();
    let m = Bgpd::start(
        &lab,
        &nm,
        "m",
        BgpdConfig::new(am, AS)
            .neighbor(n)
            .neighbor(injector)
            .neighbor(client),
    )?;
    m.wait_established(v4(ab), UP)?;
    bfd_settled(&m, v4(ab), Duration::from_millis(100), 3)?;
    let bgp_since = m.peer(v4(ab))?.expect("peer").since;
    let (state, since) = bird_bfd_state(&bird, am)?;
    assert_eq!(state, "Up");

    let mut child = nm
        .command(&blast)
        .args(["--reflector", "127.0.0.1", "--injector", "127.0.0.2"])
        .args(["--clients", "127.0.0.3", "--asn", &AS.to_string()])
        .args(["--count", &COUNT.to_string(), "--timeout", "900"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(LabError::io("starting margay-bgp-blast"))?;
    let t0 = Instant::now();
    let mut checks = 0u32;
    let outcome = loop {
        if let Some(status) = child
            .try_wait()
            .map_err(LabError::io("waiting for the blaster"))?
        {
            break status;
        }
        if t0.elapsed() > BLAST_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the blaster did not finish in {BLAST_TIMEOUT:?}");
        }
        let now = bird_bfd_state(&bird, am)?;
        if now.0 != state || !same_instant(&now.1, &since) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "BIRD's BFD session changed {:?} into the load: {now:?} (was Up since {since})",
                t0.elapsed()
            );
        }
        checks += 1;
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = child
        .wait_with_output()
        .map_err(LabError::io("reading the blaster's output"))?;
    assert!(
        outcome.success(),
        "blaster failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "{COUNT} routes through margay in {:?} ({checks} BFD checks): {}",
        t0.elapsed(),
        String::from_utf8_lossy(&out.stdout).trim()
    );
    assert!(checks >= 10, "the load lasted long enough to test anything");
    let p = m.peer(v4(ab))?.expect("peer");
    assert_eq!(p.state, "Established");
    assert_eq!(
        p.since, bgp_since,
        "the BGP session with BIRD never went down"
    );
    let b = p.bfd.expect("bfd status");
    assert_eq!((b.state.as_str(), b.downs), ("Up", 0), "{b:?}");
    Ok(())
}
