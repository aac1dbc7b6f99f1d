//! Self-test of the lab: BIRD daemons in namespaces peer, exchange blocks, withdraw them, and
//! the lab leaves nothing behind, also when a test panics.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;
use margay_lab::{
    Bird, BirdConfig, BirdNeighbor, ExportPolicy, Lab, Netns, Result, block4, block6, holds_for,
    list_namespaces,
};

const UP: Duration = Duration::from_secs(30);

#[test]
fn ibgp_birds_learn_each_others_block_and_withdraw_it_on_stop() -> Result<()> {
    let lab = Lab::new("ibgp_birds_learn_each_others_block_and_withdraw_it_on_stop")?;
    let r1 = lab.netns("r1")?;
    let r2 = lab.netns("r2")?;
    let link = lab.link(&r1, &r2)?;
    let (b1, b2) = (IpNet::V4(block4()), IpNet::V4(block4()));

    let bird1 = Bird::start(
        &lab,
        &r1,
        "bird1",
        BirdConfig::new(link.a.ip4()).originate(b1).neighbor(
            BirdNeighbor::new("r2", link.b.ip4().into(), 65000, 65000).export(ExportPolicy::Static),
        ),
    )?;
    let mut bird2 = Bird::start(
        &lab,
        &r2,
        "bird2",
        BirdConfig::new(link.b.ip4()).originate(b2).neighbor(
            BirdNeighbor::new("r1", link.a.ip4().into(), 65000, 65000).export(ExportPolicy::Static),
        ),
    )?;

    bird1.wait_established("r2", UP)?;
    bird2.wait_established("r1", UP)?;
    let at1 = bird1.wait_bgp_route_via(b2, link.b.ip4().into(), UP)?;
    let at2 = bird2.wait_bgp_route_via(b1, link.a.ip4().into(), UP)?;
    for r in [&at1, &at2] {
        assert!(r.bgp.as_path.is_empty(), "iBGP adds no AS: {r:?}");
        assert_eq!(r.bgp.origin.as_deref(), Some("IGP"));
        assert_eq!(r.bgp.local_pref, Some(100));
    }
    assert_eq!(at1.bgp.next_hop, vec![IpAddr::from(link.b.ip4())]);
    assert_eq!(at2.bgp.next_hop, vec![IpAddr::from(link.a.ip4())]);

    bird2.stop();
    bird1.wait_no_route(b2, UP)?;
    let p = bird1.protocol("r2")?.expect("protocol r2 configured");
    assert!(!p.is_established(), "{p:?}");
    Ok(())
}

#[test]
fn ebgp_birds_learn_each_others_blocks_over_ipv4_and_ipv6() -> Result<()> {
    let lab = Lab::new("ebgp_birds_learn_each_others_blocks_over_ipv4_and_ipv6")?;
    let r1 = lab.netns("r1")?;
    let r2 = lab.netns("r2")?;
    let link = lab.link(&r1, &r2)?;
    let (a4, a6) = (IpNet::V4(block4()), IpNet::V6(block6()));
    let (b4, b6) = (IpNet::V4(block4()), IpNet::V6(block6()));

    let bird1 = Bird::start(
        &lab,
        &r1,
        "bird1",
        BirdConfig::new(link.a.ip4())
            .originate(a4)
            .originate(a6)
            .neighbor(BirdNeighbor::new("r2v4", link.b.ip4().into(), 65001, 65002))
            .neighbor(BirdNeighbor::new("r2v6", link.b.ip6().into(), 65001, 65002)),
    )?;
    let bird2 = Bird::start(
        &lab,
        &r2,
        "bird2",
        BirdConfig::new(link.b.ip4())
            .originate(b4)
            .originate(b6)
            .neighbor(BirdNeighbor::new("r1v4", link.a.ip4().into(), 65002, 65001))
            .neighbor(BirdNeighbor::new("r1v6", link.a.ip6().into(), 65002, 65001)),
    )?;

    for (bird, proto) in [
        (&bird1, "r2v4"),
        (&bird1, "r2v6"),
        (&bird2, "r1v4"),
        (&bird2, "r1v6"),
    ] {
        bird.wait_established(proto, UP)?;
    }
    let r = bird1.wait_bgp_route_via(b4, link.b.ip4().into(), UP)?;
    assert_eq!(r.bgp.as_path, vec![65002]);
    assert_eq!(r.protocol, "r2v4");
    let r = bird1.wait_bgp_route_via(b6, link.b.ip6().into(), UP)?;
    assert_eq!(r.bgp.as_path, vec![65002]);
    assert_eq!(r.bgp.next_hop.first(), Some(&IpAddr::from(link.b.ip6())));
    let r = bird2.wait_bgp_route_via(a4, link.a.ip4().into(), UP)?;
    assert_eq!(r.bgp.as_path, vec![65001]);
    let r = bird2.wait_bgp_route_via(a6, link.a.ip6().into(), UP)?;
    assert_eq!(r.bgp.as_path, vec![65001]);
    Ok(())
}

#[test]
fn switch_joins_three_hosts_on_one_segment() -> Result<()> {
    let lab = Lab::new("switch_joins_three_hosts_on_one_segment")?;
    let sw = lab.switch("sw")?;
    let hosts = [lab.netns("h1")?, lab.netns("h2")?, lab.netns("h3")?];
    let addrs = hosts
        .iter()
        .map(|h| sw.attach(h))
        .collect::<Result<Vec<_>>>()?;
    for (i, h) in hosts.iter().enumerate() {
        for (j, a) in addrs.iter().enumerate() {
            if i != j {
                h.exec("ping", &["-c1", "-W2", &a.ip4().to_string()])?;
                h.exec("ping", &["-6", "-c1", "-W2", &a.ip6().to_string()])?;
            }
        }
    }
    Ok(())
}

#[test]
fn lab_leaves_no_namespace_or_process_behind_when_a_test_panics() {
    #[derive(Default)]
    struct Seen {
        namespaces: Vec<String>,
        pids: Vec<u32>,
        dir: Option<std::path::PathBuf>,
    }
    let seen = Arc::new(Mutex::new(Seen::default()));
    let inner = Arc::clone(&seen);
    let outcome = std::panic::catch_unwind(move || {
        let lab = Lab::new("panicking_test").expect("lab");
        let r1 = lab.netns("r1").expect("netns r1");
        let r2 = lab.netns("r2").expect("netns r2");
        let link = lab.link(&r1, &r2).expect("link");
        let mut bird = Bird::start(
            &lab,
            &r1,
            "bird1",
            BirdConfig::new(link.a.ip4()).neighbor(BirdNeighbor::new(
                "r2",
                link.b.ip4().into(),
                65000,
                65000,
            )),
        )
        .expect("bird");
        {
            let mut s = inner.lock().expect("lock");
            s.namespaces = vec![r1.name().to_string(), r2.name().to_string()];
            s.pids = vec![bird.process().pid()];
            s.dir = Some(lab.dir().to_path_buf());
        }
        assert!(
            list_namespaces()
                .expect("ip netns list")
                .contains(&r1.name().to_string())
        );
        panic!("a failing assertion inside a lab test");
    });
    assert!(outcome.is_err(), "the closure panics");

    let seen = seen.lock().expect("lock");
    assert_eq!(seen.namespaces.len(), 2, "the closure ran up to its panic");
    let left = list_namespaces().expect("ip netns list");
    for ns in &seen.namespaces {
        assert!(!left.contains(ns), "namespace {ns} left behind: {left:?}");
    }
    for &pid in &seen.pids {
        // SAFETY: signal 0 only checks whether the PID exists.
        let alive = unsafe { libc::kill(pid as i32, 0) } == 0;
        assert!(!alive, "process {pid} left running");
    }
    // A failed test keeps its logs for the reader; this one failed on purpose.
    let dir = seen.dir.clone().expect("lab dir recorded");
    assert!(dir.join("bird1.stderr").exists(), "logs kept at {dir:?}");
    std::fs::remove_dir_all(&dir).expect("removing the kept logs");
}

#[test]
fn bird_reflector_adds_originator_id_and_cluster_list() -> Result<()> {
    let lab = Lab::new("bird_reflector_adds_originator_id_and_cluster_list")?;
    let sw = lab.switch("sw")?;
    let (nr, n1, n2) = (lab.netns("rr")?, lab.netns("c1")?, lab.netns("c2")?);
    let (ar, a1, a2) = (sw.attach(&nr)?, sw.attach(&n1)?, sw.attach(&n2)?);
    let (k1, k2) = (IpNet::V4(block4()), IpNet::V4(block4()));
    let cluster = "10.255.0.9".parse().expect("address");
    let client = |name, a: std::net::Ipv4Addr| {
        BirdNeighbor::new(name, a.into(), 65000, 65000)
            .rr_client()
            .rr_cluster_id(cluster)
    };
    let _rr = Bird::start(
        &lab,
        &nr,
        "rr",
        BirdConfig::new(ar.ip4())
            .neighbor(client("c1", a1.ip4()))
            .neighbor(client("c2", a2.ip4())),
    )?;
    let to_rr =
        || BirdNeighbor::new("refl", ar.ip4().into(), 65000, 65000).export(ExportPolicy::Static);
    let c1 = Bird::start(
        &lab,
        &n1,
        "c1",
        BirdConfig::new(a1.ip4()).originate(k1).neighbor(to_rr()),
    )?;
    let c2 = Bird::start(
        &lab,
        &n2,
        "c2",
        BirdConfig::new(a2.ip4()).originate(k2).neighbor(to_rr()),
    )?;
    let r = c2.wait_bgp_route_via(k1, a1.ip4().into(), UP)?;
    assert_eq!(r.bgp.originator_id, Some(a1.ip4()), "{r:?}");
    assert_eq!(r.bgp.cluster_list, vec![cluster], "{r:?}");
    let r = c1.wait_bgp_route_via(k2, a2.ip4().into(), UP)?;
    assert_eq!(r.bgp.originator_id, Some(a2.ip4()), "{r:?}");
    assert_eq!(r.bgp.cluster_list, vec![cluster], "{r:?}");
    Ok(())
}

fn md5_pair(lab: &Lab, pw1: &str, pw2: &str) -> Result<(Netns, Netns, Bird, Bird)> {
    let r1 = lab.netns("r1")?;
    let r2 = lab.netns("r2")?;
    let link = lab.link(&r1, &r2)?;
    let b1 = Bird::start(
        lab,
        &r1,
        "bird1",
        BirdConfig::new(link.a.ip4())
            .neighbor(BirdNeighbor::new("r2", link.b.ip4().into(), 65001, 65002).password(pw1)),
    )?;
    let b2 = Bird::start(
        lab,
        &r2,
        "bird2",
        BirdConfig::new(link.b.ip4())
            .neighbor(BirdNeighbor::new("r1", link.a.ip4().into(), 65002, 65001).password(pw2)),
    )?;
    Ok((r1, r2, b1, b2))
}

#[test]
fn birds_with_same_md5_password_establish() -> Result<()> {
    let lab = Lab::new("birds_with_same_md5_password_establish")?;
    let (_r1, _r2, b1, b2) = md5_pair(&lab, "lab-pw", "lab-pw")?;
    b1.wait_established("r2", UP)?;
    b2.wait_established("r1", UP)?;
    Ok(())
}

#[test]
fn birds_with_different_md5_passwords_never_establish() -> Result<()> {
    let lab = Lab::new("birds_with_different_md5_passwords_never_establish")?;
    let (_r1, _r2, b1, b2) = md5_pair(&lab, "lab-pw", "other-pw")?;
    holds_for(
        "neither BIRD Established",
        Duration::from_secs(8),
        &[&b1, &b2],
        || {
            for (b, p) in [(&b1, "r2"), (&b2, "r1")] {
                match b.protocol(p) {
                    Ok(Some(p)) if !p.is_established() => {}
                    other => return Err(format!("{}: {other:?}", b.name())),
                }
            }
            Ok(())
        },
    )
}
