//! BFD between margay-bgpd and FRR's bfdd (issue 13 §1): bfdd (Debian's frr package) with a
//! configured single-hop peer in one namespace, margay with a BFD neighbour in another, one
//! veth link between. Sessions come Up at the negotiated 3 × 100 ms; the link made silent one
//! way (nftables drop) must take each side's session Down within a second, by its own detection
//! timer; healed, both come back Up. FRR's bgpd is not run: its BFD coupling needs zebra, and
//! what is under test here is the BFD protocol between the two implementations.
//!
//! bfdd runs as the `frr` user the package creates; the test fails (not skips) without it.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use margay_lab::{Bgpd, BgpdConfig, BgpdNeighbor, Lab, LabError, Netns, Result, wait_for};
use margay_tests::bfd::{Blackhole, bfd_settled, bfd_up, time_until};

const BFDD: &str = "/usr/lib/frr/bfdd";
const UP: Duration = Duration::from_secs(45);
const DETECT_LIMIT: Duration = Duration::from_millis(1000);

fn v4(a: Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}

/// A running bfdd, stopped by its PID on drop.
struct Bfdd<'a> {
    child: Child,
    ns: &'a Netns,
    dir: PathBuf,
}

impl<'a> Bfdd<'a> {
    fn start(ns: &'a Netns, dir: &Path, peer: Ipv4Addr, local: Ipv4Addr) -> Result<Bfdd<'a>> {
        if !Path::new(BFDD).exists() {
            return Err(LabError::Render(format!(
                "{BFDD} missing: install Debian's frr package"
            )));
        }
        let dir = dir.join("frr");
        std::fs::create_dir_all(&dir).map_err(LabError::io("creating bfdd's directory"))?;
        // bfdd drops to the frr user: it must write its pid file and sockets here.
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .map_err(LabError::io("opening bfdd's directory"))?;
        let conf = format!(
            "bfd\n peer {peer} local-address {local}\n  receive-interval 100\n  transmit-interval 100\n  detect-multiplier 3\n !\n!\n"
        );
        std::fs::write(dir.join("bfdd.conf"), conf).map_err(LabError::io("writing bfdd.conf"))?;
        let s = |f: &str| dir.join(f).display().to_string();
        let child = ns
            .command(BFDD)
            .args(["-f", &s("bfdd.conf"), "-i", &s("bfdd.pid")])
            .args(["--vty_socket", &s(""), "--bfdctl", &s("bfdd.sock")])
            .args(["--log", &format!("file:{}", s("bfdd.log"))])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(LabError::io("starting bfdd"))?;
        Ok(Bfdd { child, ns, dir })
    }

    /// `show bfd peers json`.
    fn peers(&self) -> Result<serde_json::Value> {
        let out = self.ns.exec(
            "vtysh",
            &[
                "--vty_socket",
                &self.dir.display().to_string(),
                "-c",
                "show bfd peers json",
            ],
        )?;
        serde_json::from_str(&out).map_err(|e| LabError::Render(format!("{e}: {out}")))
    }

    /// The status (`up`, `down`, `init`) of the session with `peer`.
    fn status(&self, peer: Ipv4Addr) -> Option<String> {
        let v = self.peers().ok()?;
        let p = v
            .as_array()?
            .iter()
            .find(|p| p["peer"].as_str() == Some(&peer.to_string()))?;
        p["status"].as_str().map(str::to_string)
    }

    fn wait_up(&self, peer: Ipv4Addr) -> Result<()> {
        wait_for("bfdd's session up", UP, &[], || match self.status(peer) {
            Some(s) if s == "up" => Ok(()),
            other => Err(format!("{other:?}")),
        })
    }
}

impl Drop for Bfdd<'_> {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn bfd_with_frr_bfdd_comes_up_and_each_side_detects_silence() -> Result<()> {
    let lab = Lab::new("bfd_with_frr_bfdd_comes_up_and_each_side_detects_silence")?;
    let (nm, nf) = (lab.netns("m")?, lab.netns("f")?);
    let link = lab.link(&nm, &nf)?;
    let (am, af) = (link.a.ip4(), link.b.ip4());
    let frr = Bfdd::start(&nf, lab.dir(), am, af)?;
    let mut n = BgpdNeighbor::new(v4(af), 65100).bfd(100, 100, 3);
    n.hold_time = 90;
    let m = Bgpd::start(&lab, &nm, "m", BgpdConfig::new(am, 64512).neighbor(n))?;

    let p = bfd_settled(&m, v4(af), Duration::from_millis(100), 3)?;
    frr.wait_up(am)?;
    let b = p.bfd.expect("bfd status");
    assert_eq!(b.tx_interval_us, 100_000, "{b:?}");
    assert_eq!(b.detection_time_us, 300_000, "{b:?}");
    let fp = frr.peers()?;
    eprintln!("FRR: {fp}");

    // 1. bfdd's packets are lost: margay detects.
    {
        let _cut = Blackhole::on(&nf, &link.b.ifname)?;
        let t0 = Instant::now();
        let took = time_until(t0, DETECT_LIMIT, || {
            m.peer(v4(af))
                .ok()
                .flatten()
                .and_then(|p| p.bfd)
                .is_some_and(|b| b.state != "Up")
        });
        eprintln!("margay's BFD went down {took:?} after the cut");
        assert!(took < DETECT_LIMIT, "margay took {took:?}");
        let b = m.peer(v4(af))?.and_then(|p| p.bfd).expect("bfd status");
        assert_eq!(
            b.local_diagnostic, "Control Detection Time Expired",
            "{b:?}"
        );
    }
    bfd_up(&m, v4(af))?;
    frr.wait_up(am)?;

    // 2. margay's packets are lost: bfdd detects.
    {
        let _cut = Blackhole::on(&nm, &link.a.ifname)?;
        let t0 = Instant::now();
        let took = time_until(t0, DETECT_LIMIT, || {
            frr.status(am).is_some_and(|s| s != "up")
        });
        eprintln!("bfdd's session went down {took:?} after the cut");
        assert!(took < DETECT_LIMIT, "bfdd took {took:?}");
    }
    frr.wait_up(am)?;
    let b = bfd_up(&m, v4(af))?.bfd.expect("bfd status");
    assert!(b.downs >= 2, "margay counted both failures: {b:?}");
    Ok(())
}
