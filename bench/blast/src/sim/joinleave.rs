//! A node joining and leaving a running cluster: a spare simulated node's Node and block are
//! written to etcd (then deleted), and the clock runs until the real node's kernel routes the
//! block (then no longer does) and, when the real node is the route reflector, until every
//! other simulated node holds it (then no longer does). With margay that is the whole path (bgpd and felix watch etcd;
//! the new speaker's session comes up and announces its block). With BIRD it is Calico's
//! pattern: the configuration re-rendered with every node as a protocol and `birdc configure`,
//! timed from the write of the new configuration (confd's watch and render are not counted,
//! which is in BIRD's favour).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use margay_lab::Bird;

use super::{Role, SimCluster, SimNode, coldstart, register};

/// How often the kernel is looked at while a trial runs.
const POLL: Duration = Duration::from_millis(5);
/// How long one change may take before the trial fails.
const TRIAL_TIMEOUT: Duration = Duration::from_secs(30);

/// The times of every trial.
#[derive(Debug, Default, Clone)]
pub struct Trials {
    pub joins: Vec<Duration>,
    pub leaves: Vec<Duration>,
    /// Sessions of the other simulated nodes that went down meanwhile.
    pub downs: u64,
}

impl Trials {
    /// The `q` quantile (0..=1) of `v`, nearest rank.
    pub fn quantile(v: &[Duration], q: f64) -> Duration {
        if v.is_empty() {
            return Duration::ZERO;
        }
        let mut s = v.to_vec();
        s.sort();
        let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
        s[rank - 1]
    }
}

/// Whether every simulated speaker holds `block` (`present`) or none does.
fn at_every_speaker(c: &SimCluster, block: &ipnet::Ipv4Net, present: bool) -> bool {
    c.logs()
        .iter()
        .all(|l| l.lock().expect("log lock").routes.contains_key(block) == present)
}

/// Polls until `node`'s block is (`present`) or is no longer in the real node's kernel (routes
/// of protocol `proto`) and, under a reflector, at every simulated speaker.
fn wait_route(c: &SimCluster, node: &SimNode, proto: &str, present: bool) -> anyhow::Result<()> {
    let start = Instant::now();
    let block = node.block.to_string();
    loop {
        let speakers = c.role() == Role::Mesh || at_every_speaker(c, &node.block, present);
        if speakers {
            let out = c
                .node_ns()
                .ip(&["-4", "route", "show", "exact", &block, "proto", proto])?;
            if out.contains(" via ") == present {
                return Ok(());
            }
        }
        if start.elapsed() > TRIAL_TIMEOUT {
            bail!(
                "{} of {} did not {} everywhere within {TRIAL_TIMEOUT:?} (at every speaker: {})",
                block,
                node.name,
                if present { "reach" } else { "leave" },
                speakers
            );
        }
        std::thread::sleep(POLL);
    }
}

/// `trials` joins and leaves of spare node 0 with margay running on the real node.
pub fn margay(
    c: &SimCluster,
    trials: usize,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<Trials> {
    let (spares, _) = c.spares();
    let node = spares.first().context("no spare node to join")?.clone();
    let downs_before = c.census().downs;
    let mut out = Trials::default();
    for t in 0..trials {
        let store = c.store();
        let n = node.clone();
        let start = Instant::now();
        c.run(async move { register::register(&store, &n, super::SUBNET_LEN).await })??;
        wait_route(c, &node, "81", true)?;
        out.joins.push(start.elapsed());
        let store = c.store();
        let n = node.clone();
        let start = Instant::now();
        c.run(async move { register::unregister(&store, &n).await })??;
        wait_route(c, &node, "81", false)?;
        out.leaves.push(start.elapsed());
        if (t + 1) % 20 == 0 {
            progress(&format!("margay: {} joins and leaves", t + 1));
        }
    }
    out.downs = c.census().downs - downs_before;
    Ok(out)
}

/// `trials` joins and leaves of spare node 0 with BIRD on the real node, each a re-rendered
/// configuration and `birdc configure`.
pub fn bird(
    c: &SimCluster,
    bird: &Bird,
    trials: usize,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<Trials> {
    let (spares, _) = c.spares();
    let node = spares.first().context("no spare node to join")?.clone();
    let without = coldstart::bird_config(c);
    let with = without
        .clone()
        .neighbor(coldstart::bird_neighbor(c.role(), &node));
    let conf_path = c.lab().dir().join(format!("{}.conf", bird.name()));
    let downs_before = c.census().downs;
    let mut out = Trials::default();
    let configure = |text: String| -> anyhow::Result<()> {
        std::fs::write(&conf_path, text)?;
        let reply = bird.birdc(&["configure"])?;
        // At a thousand protocols a reconfiguration can still be running when the next one
        // comes; BIRD queues it, as it would for confd.
        let accepted = [
            "Reconfigured",
            "Reconfiguration in progress",
            "queueing new config",
        ];
        if !accepted.iter().any(|a| reply.contains(a)) {
            bail!("birdc configure answered {reply:?}");
        }
        Ok(())
    };
    for t in 0..trials {
        let start = Instant::now();
        configure(with.render())?;
        wait_route(c, &node, "bird", true)?;
        out.joins.push(start.elapsed());
        let start = Instant::now();
        configure(without.render())?;
        wait_route(c, &node, "bird", false)?;
        out.leaves.push(start.elapsed());
        if (t + 1) % 20 == 0 {
            progress(&format!("BIRD: {} joins and leaves", t + 1));
        }
    }
    out.downs = c.census().downs - downs_before;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(Trials::quantile(&v, 0.5), Duration::from_millis(50));
        assert_eq!(Trials::quantile(&v, 0.99), Duration::from_millis(99));
        assert_eq!(Trials::quantile(&[], 0.5), Duration::ZERO);
    }
}
