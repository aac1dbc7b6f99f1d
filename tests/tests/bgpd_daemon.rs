//! margay-bgpd as a daemon: its configuration file, its API socket, its health and metrics
//! server, SIGHUP and SIGTERM, and `margayctl node status` against it. Real processes in real
//! namespaces, with BIRD as the peer whose view of the session is checked.

use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use ipnet::IpNet;
use margay_lab::{
    Bgpd, BgpdConfig, BgpdNeighbor, Bird, BirdConfig, BirdNeighbor, ExportPolicy, Lab, Result,
    bgpd_binary, block4, margay_binary, wait_for,
};

const UP: Duration = Duration::from_secs(45);
const AS: u32 = 64512;

fn v4(a: Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}

/// A BIRD peer `b` (iBGP, exporting its static routes) for margay `m` at `margay_addr`.
fn bird_peer(
    lab: &Lab,
    ns: &margay_lab::Netns,
    me: Ipv4Addr,
    margay_addr: Ipv4Addr,
    originate: &[IpNet],
) -> Result<Bird> {
    let mut config = BirdConfig::new(me);
    for p in originate {
        config = config.originate(*p);
    }
    let config = config
        .neighbor(BirdNeighbor::new("m", v4(margay_addr), AS, AS).export(ExportPolicy::Static));
    Bird::start(lab, ns, "b", config)
}

/// margay `m` with one iBGP neighbour.
fn margay_with(
    lab: &Lab,
    ns: &margay_lab::Netns,
    me: Ipv4Addr,
    neighbor: Ipv4Addr,
) -> Result<Bgpd> {
    Bgpd::start(
        lab,
        ns,
        "m",
        BgpdConfig::new(me, AS).neighbor(BgpdNeighbor::new(v4(neighbor), AS)),
    )
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("running a margay binary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn rejects_a_bad_config_file_naming_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "router-id = \"10.0.0.1\"\nasn = 64512\n\n[[neighbors]]\naddress = \"10.0.0.300\"\nasn = 64512\n")
        .unwrap();
    let (code, _, err) = run(Command::new(bgpd_binary().unwrap())
        .arg("--config")
        .arg(&path));
    assert_eq!(code, 2, "a bad file exits 2: {err}");
    assert!(err.contains("line 5"), "names the line: {err}");
    assert!(
        err.contains("invalid IP address syntax"),
        "says what is wrong: {err}"
    );

    std::fs::write(&path, "router-id = \"10.0.0.1\"\nasn = 64512\n[[neighbors]]\naddress = \"10.0.0.2\"\nasn = 64512\nhold-time = 1\n")
        .unwrap();
    let (code, _, err) = run(Command::new(bgpd_binary().unwrap())
        .arg("--config")
        .arg(&path)
        .arg("--check"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("line 6: neighbors[0].hold-time"), "{err}");

    std::fs::write(&path, "router-id = \"10.0.0.1\"\nasn = 64512\n").unwrap();
    let (code, out, err) = run(Command::new(bgpd_binary().unwrap())
        .arg("--config")
        .arg(&path)
        .arg("--check"));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("configuration is valid"), "{out}");

    let (code, _, err) = run(Command::new(bgpd_binary().unwrap())
        .arg("--config")
        .arg(dir.path().join("missing.toml")));
    assert_eq!(code, 2);
    assert!(
        err.contains("cannot read") && err.contains("missing.toml"),
        "{err}"
    );
}

/// The API socket is root's alone; SIGTERM closes sessions with Cease / Administrative
/// Shutdown (RFC 4486) and removes the socket.
#[test]
fn api_socket_is_root_only_and_sigterm_sends_cease() -> Result<()> {
    let lab = Lab::new("api_socket_is_root_only_and_sigterm_sends_cease")?;
    let sw = lab.switch("sw")?;
    let (nm, nb) = (lab.netns("m")?, lab.netns("b")?);
    let (am, ab) = (sw.attach(&nm)?, sw.attach(&nb)?);
    let mut bird = bird_peer(&lab, &nb, ab.ip4(), am.ip4(), &[])?;
    let mut m = margay_with(&lab, &nm, am.ip4(), ab.ip4())?;
    bird.wait_established("m", UP)?;

    let socket = m.config().socket.clone();
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the API socket must be 0600, is {mode:o}");

    let pid = m.process().pid();
    assert!(
        Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .unwrap()
            .success()
    );
    let status = m
        .process()
        .wait_exit("margay-bgpd to exit after SIGTERM", Duration::from_secs(10))?;
    assert!(
        status.contains("exit status: 0"),
        "SIGTERM is a clean exit: {status}"
    );
    assert!(!socket.exists(), "the socket is removed on the way out");
    // BIRD retries at once, so its Info column soon shows the refused reconnect; its log
    // keeps what it was told.
    wait_for("BIRD to log the Cease it received", UP, &[], || {
        let log = bird.process().log_tail(400);
        if log.contains("m: Received: Administrative shutdown") {
            Ok(())
        } else {
            Err(log)
        }
    })?;
    let p = bird.protocol("m")?.expect("protocol m");
    assert!(!p.is_established(), "{p:?}");
    Ok(())
}

/// `/liveness`, `/readiness` (ready only when every peer is Established, as calico-node's BIRD
/// check) and Prometheus `/metrics`.
#[test]
fn health_and_metrics_follow_the_sessions() -> Result<()> {
    let lab = Lab::new("health_and_metrics_follow_the_sessions")?;
    let sw = lab.switch("sw")?;
    let (nm, nb) = (lab.netns("m")?, lab.netns("b")?);
    let (am, ab) = (sw.attach(&nm)?, sw.attach(&nb)?);
    let block = IpNet::V4(block4());
    let mut config = BgpdConfig::new(am.ip4(), AS).neighbor(BgpdNeighbor::new(v4(ab.ip4()), AS));
    config.http_port = Some(9179);
    let m = Bgpd::start(&lab, &nm, "m", config)?;
    let get = |path: &str| -> (String, String) {
        let out = nm
            .exec(
                "curl",
                &[
                    "-s",
                    "-o",
                    "-",
                    "-w",
                    "\n%{http_code}",
                    &format!("http://127.0.0.1:9179{path}"),
                ],
            )
            .unwrap_or_else(|e| panic!("curl {path}: {e}"));
        let (body, code) = out.trim_end().rsplit_once('\n').unwrap_or(("", out.trim()));
        (code.to_string(), body.to_string())
    };
    assert_eq!(get("/liveness").0, "200");
    let (code, body) = get("/readiness");
    assert_eq!(code, "503", "not ready while the peer is down: {body}");
    assert!(
        body.contains(&ab.ip4().to_string()),
        "names the peer that is down: {body}"
    );

    let bird = bird_peer(&lab, &nb, ab.ip4(), am.ip4(), &[block])?;
    bird.wait_established("m", UP)?;
    m.wait_route_via(block, v4(ab.ip4()), UP)?;
    wait_for("readiness to turn 200", UP, &[], || {
        match get("/readiness") {
            (c, _) if c == "200" => Ok(()),
            (c, b) => Err(format!("{c} {b}")),
        }
    })?;
    let (code, metrics) = get("/metrics");
    assert_eq!(code, "200");
    assert!(
        metrics.contains("margay_bgp_sessions{state=\"Established\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("margay_bgp_sessions{state=\"Idle\"} 0"),
        "{metrics}"
    );
    let peer = ab.ip4().to_string();
    assert!(
        metrics.contains(&format!(
            "margay_bgp_prefixes_received{{peer=\"{peer}\"}} 1"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "margay_bgp_prefixes_accepted{{peer=\"{peer}\"}} 1"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("margay_bgp_updates_received_total"),
        "{metrics}"
    );
    assert!(!metrics.contains("password"), "no secret in metrics");
    Ok(())
}

/// SIGHUP applies the file again: a new neighbour comes up, the untouched session keeps its
/// state (no reset seen on either side), and a removed neighbour gets Cease / Peer
/// De-configured. Until it is configured, the new neighbour's connections are refused.
#[test]
fn sighup_adds_and_removes_neighbors_without_resetting_others() -> Result<()> {
    let lab = Lab::new("sighup_adds_and_removes_neighbors_without_resetting_others")?;
    let sw = lab.switch("sw")?;
    let (nm, n1, n2) = (lab.netns("m")?, lab.netns("b1")?, lab.netns("b2")?);
    let (am, a1, a2) = (sw.attach(&nm)?, sw.attach(&n1)?, sw.attach(&n2)?);
    let (k1, k2) = (IpNet::V4(block4()), IpNet::V4(block4()));
    let bird = |ns, name: &str, me: Ipv4Addr, block| {
        Bird::start(
            &lab,
            ns,
            name,
            BirdConfig::new(me).originate(block).neighbor(
                BirdNeighbor::new("m", v4(am.ip4()), AS, AS).export(ExportPolicy::Static),
            ),
        )
    };
    let b1 = bird(&n1, "b1", a1.ip4(), k1)?;
    let b2 = bird(&n2, "b2", a2.ip4(), k2)?;
    let mut m = Bgpd::start(
        &lab,
        &nm,
        "m",
        BgpdConfig::new(am.ip4(), AS).neighbor(BgpdNeighbor::new(v4(a1.ip4()), AS)),
    )?;
    b1.wait_established("m", UP)?;
    let before_margay = m.wait_established(v4(a1.ip4()), UP)?;
    let before_bird = b1.protocol("m")?.expect("b1's protocol m");
    // b2 keeps trying; margay refuses it until it is configured.
    b2.never_established("m", Duration::from_secs(3))?;
    let log = m.process().log_tail(200);
    assert!(
        log.contains("refused BGP connection from unknown peer"),
        "{log}"
    );

    let conf = lab.dir().join("m.toml");
    let mut config = m.config().clone();
    config = config.neighbor(BgpdNeighbor::new(v4(a2.ip4()), AS));
    std::fs::write(&conf, config.render()?).unwrap();
    let pid = m.process().pid().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    b2.wait_established("m", UP)?;
    m.wait_route_via(k2, v4(a2.ip4()), UP)?;
    let after_margay = m.peer(v4(a1.ip4()))?.expect("b1 is still configured");
    let after_bird = b1.protocol("m")?.expect("b1's protocol m");
    assert_eq!(
        after_margay.since, before_margay.since,
        "margay did not reset the b1 session"
    );
    assert!(
        after_bird.same_session_since(&before_bird.since),
        "BIRD saw a reset of the b1 session: since {}, now {}",
        before_bird.since,
        after_bird.since
    );
    assert!(after_bird.is_established());

    // Remove b1.
    let mut config = m.config().clone();
    config.neighbors.retain(|n| n.address != v4(a1.ip4()));
    config = config.neighbor(BgpdNeighbor::new(v4(a2.ip4()), AS));
    std::fs::write(&conf, config.render()?).unwrap();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    wait_for("BIRD b1 to be told it was de-configured", UP, &[], || {
        let p = b1
            .protocol("m")
            .map_err(|e| e.to_string())?
            .ok_or("no protocol")?;
        if p.info.contains("Peer de-configured") {
            Ok(())
        } else {
            Err(format!("{p:?}"))
        }
    })?;
    m.wait_no_route(k1, UP)?;
    assert!(
        m.peer(v4(a1.ip4()))?.is_none(),
        "b1 is gone from the peer list"
    );
    assert!(
        m.peer(v4(a2.ip4()))?
            .is_some_and(|p| p.state == "Established")
    );
    Ok(())
}

/// `margayctl node status` asks bgpd over its socket and prints calicoctl's table; without a
/// daemon it says so and exits non-zero.
#[test]
fn node_status_prints_the_peer_table() -> Result<()> {
    let lab = Lab::new("node_status_prints_the_peer_table")?;
    let sw = lab.switch("sw")?;
    let (nm, nb, nt) = (lab.netns("m")?, lab.netns("b")?, lab.netns("t")?);
    let (am, ab, at) = (sw.attach(&nm)?, sw.attach(&nb)?, sw.attach(&nt)?);
    let bird = bird_peer(&lab, &nb, ab.ip4(), am.ip4(), &[])?;
    // A ToR in another AS that never answers: its row shows why.
    let m = Bgpd::start(
        &lab,
        &nm,
        "m",
        BgpdConfig::new(am.ip4(), AS)
            .neighbor(BgpdNeighbor::new(v4(ab.ip4()), AS))
            .neighbor(BgpdNeighbor::new(v4(at.ip4()), 65000)),
    )?;
    bird.wait_established("m", UP)?;
    m.wait_established(v4(ab.ip4()), UP)?;
    let ctl = margay_binary("margayctl", "cargo build -p margay-ctl")?;
    let socket = m.config().socket.clone();
    let out = wait_for(
        "node status to show the ToR's connection error",
        UP,
        &[],
        || {
            let (code, out, err) = run(Command::new(&ctl)
                .args(["node", "status", "--socket"])
                .arg(&socket));
            if code != 0 {
                return Err(format!("exit {code}: {err}"));
            }
            if out.contains("Connection refused") {
                Ok(out)
            } else {
                Err(out)
            }
        },
    )?;
    assert!(
        out.starts_with("margay-bgpd is running.\n\nIPv4 BGP status\n"),
        "{out}"
    );
    assert!(out.contains("| PEER ADDRESS |"), "{out}");
    let row = |addr: Ipv4Addr| {
        out.lines()
            .find(|l| l.starts_with(&format!("| {addr} ")))
            .unwrap_or_default()
            .to_string()
    };
    let b = row(ab.ip4());
    assert!(
        b.contains("| node-to-node mesh |") && b.contains("| up ") && b.contains("| Established "),
        "{b}"
    );
    let t = row(at.ip4());
    assert!(
        t.contains("| global ")
            && t.contains("| start ")
            && t.contains("Active Socket: Connection refused"),
        "{t}"
    );
    assert!(
        out.contains("IPv6 BGP status\nNo IPv6 peers found."),
        "{out}"
    );

    let (code, json, err) = run(Command::new(&ctl)
        .args(["node", "status", "-o", "json", "--socket"])
        .arg(&socket));
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).expect("node status -o json is JSON");
    assert_eq!(
        v["ipv4_peers"].as_array().map(|a| a.len()),
        Some(2),
        "{json}"
    );

    let (code, out, err) =
        run(Command::new(&ctl).args(["node", "status", "--socket", "/nonexistent/bgpd.sock"]));
    assert_ne!(code, 0, "no daemon is an error");
    assert!(
        err.contains("margay-bgpd is not running") && err.contains("No such file or directory"),
        "{out}{err}"
    );
    Ok(())
}

/// The contract felix builds on: WatchRoutes streams the table, then SYNCED, then every
/// best-path change; Originate, Withdraw and SetOriginated change what peers receive.
#[test]
fn route_watch_and_origination_api_drive_what_peers_see() -> Result<()> {
    use margay_proto::bgp::v1 as pb;
    use pb::route_event::Kind;
    use tokio_stream::StreamExt;

    let lab = Lab::new("route_watch_and_origination_api_drive_what_peers_see")?;
    let sw = lab.switch("sw")?;
    let (nm, nb) = (lab.netns("m")?, lab.netns("b")?);
    let (am, ab) = (sw.attach(&nm)?, sw.attach(&nb)?);
    let (k1, k2, k3) = (
        IpNet::V4(block4()),
        IpNet::V4(block4()),
        IpNet::V4(block4()),
    );
    let mut bird = bird_peer(&lab, &nb, ab.ip4(), am.ip4(), &[k1])?;
    let m = margay_with(&lab, &nm, am.ip4(), ab.ip4())?;
    m.wait_route_via(k1, v4(ab.ip4()), UP)?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let socket = m.config().socket.clone();
    rt.block_on(async {
        let channel = margay_lab::bgpd::connect_unix(&socket).await?;
        let mut client = pb::bgp_client::BgpClient::new(channel);
        let mut stream = client
            .watch_routes(pb::WatchRoutesRequest {
                family: "ipv4".into(),
            })
            .await
            .expect("WatchRoutes")
            .into_inner();
        let mut next = async || {
            tokio::time::timeout(UP, stream.next())
                .await
                .expect("a route event in time")
                .expect("the stream stays open")
                .expect("no stream error")
        };
        let first = next().await;
        assert_eq!(first.kind, Kind::Add as i32, "{first:?}");
        let r = first.route.expect("route");
        assert_eq!(
            (r.prefix.as_str(), r.next_hop.as_str()),
            (k1.to_string().as_str(), ab.ip4().to_string().as_str())
        );
        assert_eq!(
            next().await.kind,
            Kind::Synced as i32,
            "the table is followed by SYNCED"
        );

        client
            .originate(pb::OriginateRequest {
                prefixes: vec![k2.to_string()],
            })
            .await
            .expect("Originate");
        let e = next().await;
        assert_eq!(
            (e.kind, e.route.as_ref().map(|r| r.prefix.clone())),
            (Kind::Add as i32, Some(k2.to_string()))
        );
        assert!(e.route.as_ref().is_some_and(|r| r.local), "{e:?}");
        bird.wait_bgp_route_via(k2, v4(am.ip4()), UP)?;

        client
            .withdraw(pb::WithdrawRequest {
                prefixes: vec![k2.to_string()],
            })
            .await
            .expect("Withdraw");
        let e = next().await;
        assert_eq!(
            (e.kind, e.route.map(|r| r.prefix)),
            (Kind::Withdraw as i32, Some(k2.to_string()))
        );
        bird.wait_no_route(k2, UP)?;

        client
            .set_originated(pb::SetOriginatedRequest {
                prefixes: vec![k3.to_string()],
            })
            .await
            .expect("SetOriginated");
        let e = next().await;
        assert_eq!(
            (e.kind, e.route.map(|r| r.prefix)),
            (Kind::Add as i32, Some(k3.to_string()))
        );
        bird.wait_bgp_route_via(k3, v4(am.ip4()), UP)?;

        let bad = client
            .originate(pb::OriginateRequest {
                prefixes: vec!["10.0.0.300/26".into()],
            })
            .await;
        let status = bad.expect_err("a bad prefix is refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("10.0.0.300/26"), "{status:?}");

        bird.stop();
        let e = next().await;
        assert_eq!(
            (e.kind, e.route.map(|r| r.prefix)),
            (Kind::Withdraw as i32, Some(k1.to_string()))
        );
        Ok(())
    })
}

/// A peer that stops reading (BIRD frozen, its receive window full) must not hold margay-bgpd
/// after SIGTERM. The NOTIFICATION cannot be written; with `--stop-limit 1` the daemon exits
/// cleanly after one second, saying so, instead of waiting for the session's write to time out
/// (7 s) or its hold timer.
#[test]
fn sigterm_exits_at_the_stop_limit_while_a_peer_reads_nothing() -> Result<()> {
    let lab = Lab::new("sigterm_exits_while_a_peer_reads_nothing")?;
    let sw = lab.switch("sw")?;
    let (nm, nb) = (lab.netns("m")?, lab.netns("b")?);
    // Small TCP buffers on both sides, so that a few hundred KiB of UPDATEs fill them.
    for (ns, key) in [(&nm, "net.ipv4.tcp_wmem"), (&nb, "net.ipv4.tcp_rmem")] {
        ns.exec("sysctl", &["-qw", &format!("{key}=4096 4096 4096")])?;
    }
    let (am, ab) = (sw.attach(&nm)?, sw.attach(&nb)?);
    let mut bird = bird_peer(&lab, &nb, ab.ip4(), am.ip4(), &[])?;
    let config = BgpdConfig::new(am.ip4(), AS).neighbor(BgpdNeighbor::new(v4(ab.ip4()), AS));
    let mut m = Bgpd::start_with_flags(&lab, &nm, "m", config, &["--stop-limit", "1"])?;
    bird.wait_established("m", UP)?;

    bird.process().pause();
    // 40,000 host routes: ~200 KiB of UPDATEs, far more than the two buffers hold.
    let prefixes: Vec<IpNet> = (0..40_000u32)
        .map(|i| IpNet::V4(ipnet::Ipv4Net::new(Ipv4Addr::from(0x0a40_0000 + i), 32).unwrap()))
        .collect();
    m.originate(&prefixes)?;
    // Until the session has stopped sending, the buffers are not yet full.
    std::thread::sleep(Duration::from_secs(2));

    let pid = m.process().pid();
    // SAFETY: kill(2) on our own child's PID, not yet reaped (the guard reaps it).
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let exited = m.process().wait_exit(
        "margay-bgpd to exit after SIGTERM with a peer that reads nothing",
        Duration::from_secs(40),
    );
    bird.process().resume();
    let status = exited?;
    assert!(status.contains("exit status: 0"), "{status}");
    let log = m.process().log_tail(60);
    assert!(
        log.contains("did not all close within the stop limit")
            && !log.contains("Socket: timed out"),
        "the stop limit, not the session's write timeout, should have ended it:\n{log}"
    );
    Ok(())
}
