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

/// The `2 × rate` spares a churn at `rate` toggles in turn.
fn toggled(c: &SimCluster, rate: u32) -> anyhow::Result<Vec<super::SimNode>> {
    let (spares, _) = c.spares();
    let count = 2 * rate as usize;
    anyhow::ensure!(
        spares.len() >= count,
        "{count} spare nodes needed, {} built",
        spares.len()
    );
    Ok(spares[..count].to_vec())
}

/// Runs `rate` joins and `rate` leaves per second for `seconds` with the spares of `c`
/// (it needs `2 × rate` of them); `pids` are the processes whose CPU is counted.
pub fn run(
    c: &SimCluster,
    rate: u32,
    seconds: u32,
    pids: &[(String, u32)],
) -> anyhow::Result<Churn> {
    let spares = toggled(c, rate)?;
    let count = spares.len();
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
            // One write in flight per spare: on a loaded etcd a leave can take longer than
            // the second until the same spare joins again, whose create would then find it.
            let mut pending: Vec<Option<tokio::task::JoinHandle<Result<(), _>>>> =
                (0..spares.len()).map(|_| None).collect();
            for t in 0..ticks {
                tick.tick().await;
                let k = (t % spares.len() as u64) as usize;
                if let Some(h) = pending[k].take() {
                    h.await.context("a churn write")??;
                }
                let (store, node) = (store.clone(), spares[k].clone());
                pending[k] = Some(if live[k] {
                    leaves += 1;
                    tokio::spawn(async move { register::unregister(&store, &node).await })
                } else {
                    joins += 1;
                    tokio::spawn(async move {
                        register::register(&store, &node, super::SUBNET_LEN).await
                    })
                });
                live[k] = !live[k];
            }
            for h in pending.into_iter().flatten() {
                h.await.context("a churn write")??;
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

/// What the same churn cost BIRD in Calico's pattern.
#[derive(Debug, Clone)]
pub struct BirdChurn {
    pub joins: u64,
    pub leaves: u64,
    /// Changes the rate asks for in the window; `joins + leaves` were issued (each waits for
    /// the previous `birdc configure` to answer, so a BIRD that cannot keep up gets fewer).
    pub planned: u64,
    /// How long the changes took to issue (at most the `seconds` asked, plus the last one).
    pub seconds: f64,
    /// BIRD's CPU over the run (utime + stime), and `birdc`'s (one process per change).
    pub bird_cpu: Duration,
    pub birdc_cpu: Duration,
    /// Each `birdc configure`'s wall time, sorted.
    pub configure: Vec<Duration>,
    /// Changes issued later than their slot by more than one period: BIRD not keeping up.
    pub late: u64,
    /// Replies that said a reconfiguration was still running (BIRD queued the new one).
    pub queued: u64,
    /// Sessions of the other simulated nodes that went down meanwhile.
    pub downs: u64,
    /// Spares whose block's presence in the kernel disagrees with their protocol being
    /// configured, five seconds after the last change.
    pub mismatched: Vec<String>,
}

/// The same churn with BIRD on the real node, as Calico runs it: every Node change re-renders
/// the configuration with every live node as a protocol and runs `birdc configure` (confd's
/// watch and render are not counted). Issued from this thread, one after the other, at the
/// rate asked when BIRD keeps up.
pub fn bird(
    c: &SimCluster,
    bird: &margay_lab::Bird,
    rate: u32,
    seconds: u32,
) -> anyhow::Result<BirdChurn> {
    let spares = toggled(c, rate)?;
    let count = spares.len();
    let base = super::coldstart::bird_config(c);
    let conf_path = c.lab().dir().join(format!("{}.conf", bird.name()));
    let bird_before = Cost::of(bird.pid()).unwrap_or_default();
    let downs_before = c.census().downs;
    let ticks = u64::from(seconds) * count as u64;
    let period = Duration::from_secs(1) / count as u32;
    let mut live = vec![false; count];
    let mut out = BirdChurn {
        joins: 0,
        leaves: 0,
        planned: 0,
        seconds: 0.0,
        bird_cpu: Duration::ZERO,
        birdc_cpu: Duration::ZERO,
        configure: Vec::new(),
        late: 0,
        queued: 0,
        downs: 0,
        mismatched: Vec::new(),
    };
    let children_before = children_cpu();
    let started = std::time::Instant::now();
    let window = Duration::from_secs(u64::from(seconds));
    out.planned = ticks;
    for t in 0..ticks {
        let slot = started + period * t as u32;
        let now = std::time::Instant::now();
        if now - started >= window {
            // BIRD fell behind: the changes it did not get to in the window are not issued.
            break;
        }
        if now < slot {
            std::thread::sleep(slot - now);
        } else if now - slot > period {
            out.late += 1;
        }
        let k = (t % count as u64) as usize;
        live[k] = !live[k];
        if live[k] {
            out.joins += 1;
        } else {
            out.leaves += 1;
        }
        let mut conf = base.clone();
        for (n, _) in spares.iter().zip(&live).filter(|(_, l)| **l) {
            conf = conf.neighbor(super::coldstart::bird_neighbor(c.role(), n));
        }
        std::fs::write(&conf_path, conf.render())?;
        let t0 = std::time::Instant::now();
        let reply = bird.birdc(&["configure"])?;
        out.configure.push(t0.elapsed());
        if reply.contains("queueing") || reply.contains("in progress") {
            out.queued += 1;
        } else if !reply.contains("Reconfigured") {
            anyhow::bail!("birdc configure answered {reply:?}");
        }
    }
    out.seconds = started.elapsed().as_secs_f64();
    out.bird_cpu = Cost::of(bird.pid())
        .unwrap_or_default()
        .cpu
        .saturating_sub(bird_before.cpu);
    out.birdc_cpu = children_cpu().saturating_sub(children_before);
    out.configure.sort();
    std::thread::sleep(Duration::from_secs(5));
    let routes = c.kernel_routes("bird")?;
    out.mismatched = spares
        .iter()
        .zip(&live)
        .filter(|(n, live)| routes.contains_key(&n.block) != **live)
        .map(|(n, _)| n.name.clone())
        .collect();
    out.downs = c.census().downs - downs_before;
    Ok(out)
}

/// The CPU of this process's waited-for children so far (`birdc` runs).
fn children_cpu() -> Duration {
    // SAFETY: getrusage fills the struct we pass; RUSAGE_CHILDREN has no preconditions.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}
