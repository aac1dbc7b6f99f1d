//! Helpers of the BFD suites: a link made silent one way, waiting for margay's BFD session,
//! timing a change.

use margay_lab::{Bgpd, Bird, LabError, Netns, Result, wait_for};
use margay_proto::bgp::v1::Peer;
use std::net::IpAddr;
use std::time::{Duration, Instant};

const UP: Duration = Duration::from_secs(45);

/// Drops every packet leaving `ifname` in `ns` (an nftables output rule; this kernel has no
/// netem) until dropped itself. Nothing tells either daemon: the link just goes silent.
pub struct Blackhole<'a> {
    ns: &'a Netns,
}

const CUT_TABLE: &str = "margay_bfd_cut";

impl<'a> Blackhole<'a> {
    pub fn on(ns: &'a Netns, ifname: &str) -> Result<Blackhole<'a>> {
        let t = CUT_TABLE;
        let rules = format!(
            "add table inet {t}; add chain inet {t} out {{ type filter hook output priority 0; policy accept; }}; add rule inet {t} out oifname \"{ifname}\" drop"
        );
        ns.exec("nft", &[&rules])?;
        Ok(Blackhole { ns })
    }
}

impl Drop for Blackhole<'_> {
    fn drop(&mut self) {
        let _ = self.ns.exec("nft", &["delete", "table", "inet", CUT_TABLE]);
    }
}

/// Waits until margay's session with `peer` is Up at `tx` both ways (the Poll Sequences that
/// follow Up on each side are over): its interval is `tx` and its detection time `mult × tx`.
pub fn bfd_settled(m: &Bgpd, peer: IpAddr, tx: Duration, mult: u32) -> Result<Peer> {
    let want = (tx.as_micros() as u32, tx.as_micros() as u32 * mult);
    wait_for(
        "margay's BFD session Up at its timers",
        UP,
        &[m],
        || match m.peer(peer).map_err(|e| e.to_string())? {
            Some(p)
                if p.bfd.as_ref().is_some_and(|b| {
                    b.state == "Up" && (b.tx_interval_us, b.detection_time_us) == want
                }) =>
            {
                Ok(p)
            }
            other => Err(format!("{:?}", other.and_then(|p| p.bfd))),
        },
    )
}

pub fn bfd_up(m: &Bgpd, peer: IpAddr) -> Result<Peer> {
    wait_for("margay's BFD session Up", UP, &[m], || {
        match m.peer(peer).map_err(|e| e.to_string())? {
            Some(p) if p.bfd.as_ref().is_some_and(|b| b.state == "Up") => Ok(p),
            other => Err(format!("{:?}", other.and_then(|p| p.bfd))),
        }
    })
}

/// Polls `done` every 10 ms from `start` until it holds; the time it took.
pub fn time_until(start: Instant, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    while start.elapsed() < limit * 5 {
        if done() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}

/// BIRD's `show bfd sessions` row for `peer`: address, interface, state, since, interval,
/// timeout.
pub fn bird_bfd(bird: &Bird, peer: IpAddr) -> Result<Vec<String>> {
    let out = bird.birdc(&["show", "bfd", "sessions"])?;
    out.lines()
        .find(|l| l.starts_with(&peer.to_string()))
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .ok_or_else(|| LabError::Render(format!("no BFD session with {peer}: {out}")))
}
