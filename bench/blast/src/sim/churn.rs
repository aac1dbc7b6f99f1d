//! Churn: spare simulated nodes join and leave at a steady rate (each lives one second: with
//! `2 × rate` spares toggled in turn every `1 / (2 × rate)` s, `rate` join and `rate` leave
//! per second) while margay runs on the real node; what it costs margay-bgpd, margay-felix and
//! etcd in CPU, and whether any other session was reset.

use std::time::Duration;

use anyhow::Context;

use super::{Cost, SimCluster, register};

/// What a churn run cost.
#[derive(Debug, Clone)]
pub struct Churn {
    pub joins: u64,
    pub leaves: u64,
    pub seconds: f64,
    /// CPU spent during the run (name, seconds).
    pub cpu: Vec<(String, Duration)>,
    /// Sessions of the other simulated nodes that went down meanwhile.
    pub downs: u64,
    /// Spares whose block's presence in the real node's kernel disagrees with their Node
    /// existing, two seconds after the last change.
    pub mismatched: Vec<String>,
}

/// Runs `rate` joins and `rate` leaves per second for `seconds` with the spares of `c`
/// (it needs `2 × rate` of them); `pids` are the processes whose CPU is counted.
pub fn run(
    c: &SimCluster,
    rate: u32,
    seconds: u32,
    pids: &[(String, u32)],
) -> anyhow::Result<Churn> {
    let (spares, _) = c.spares();
    let count = 2 * rate as usize;
    anyhow::ensure!(
        spares.len() >= count,
        "{count} spare nodes needed, {} built",
        spares.len()
    );
    let spares: Vec<_> = spares[..count].to_vec();
    let before: Vec<Cost> = pids
        .iter()
        .map(|(_, p)| Cost::of(*p).unwrap_or_default())
        .collect();
    let downs_before = c.census().downs;
    let store = c.store();
    let ticks = u64::from(seconds) * count as u64;
    let period = Duration::from_secs(1) / count as u32;
    let started = std::time::Instant::now();
    let (joins, leaves, live) = c.run({
        let spares = spares.clone();
        async move {
            let mut live = vec![false; spares.len()];
            let (mut joins, mut leaves) = (0u64, 0u64);
            let mut tick = tokio::time::interval(period);
            let mut tasks = tokio::task::JoinSet::new();
            for t in 0..ticks {
                tick.tick().await;
                let k = (t % spares.len() as u64) as usize;
                let (store, node) = (store.clone(), spares[k].clone());
                if live[k] {
                    leaves += 1;
                    tasks.spawn(async move { register::unregister(&store, &node).await });
                } else {
                    joins += 1;
                    tasks.spawn(async move {
                        register::register(&store, &node, super::SUBNET_LEN).await
                    });
                }
                live[k] = !live[k];
                while let Some(r) = tasks.try_join_next() {
                    r.context("a churn write")??;
                }
            }
            while let Some(r) = tasks.join_next().await {
                r.context("a churn write")??;
            }
            anyhow::Ok((joins, leaves, live))
        }
    })??;
    let elapsed = started.elapsed().as_secs_f64();
    let after: Vec<Cost> = pids
        .iter()
        .map(|(_, p)| Cost::of(*p).unwrap_or_default())
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let routes = c.kernel_routes("81")?;
    let mismatched = spares
        .iter()
        .zip(&live)
        .filter(|(n, live)| routes.contains_key(&n.block) != **live)
        .map(|(n, _)| n.name.clone())
        .collect();
    Ok(Churn {
        joins,
        leaves,
        seconds: elapsed,
        cpu: pids
            .iter()
            .zip(before.iter().zip(&after))
            .map(|((name, _), (b, a))| (name.clone(), a.cpu.saturating_sub(b.cpu)))
            .collect(),
        downs: c.census().downs - downs_before,
        mismatched,
    })
}
