//! etcd's watch fan-out at cluster size: W watchers, each with its own etcd connection and a
//! watch on Nodes through margay's own watch code (`Store::watch`), as every node's bgpd and
//! felix hold; one Node written again and again; how long until every watcher has each write,
//! and what it costs etcd.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use margay_datastore::resources::{NodeBgpSpec, NodeSpec, Resource};
use margay_datastore::{EtcdArgs, Store, WatchEvent};
use margay_lab::{Etcd, EtcdProxy, Lab, start_proxies};
use tokio::sync::mpsc;

use super::NsRuntime;
use super::procstat::Cost;

/// The Node every write changes.
const PROBE: &str = "watchfan-probe";
/// Connections opened at once while the watchers start.
const CONNECT_BATCH: usize = 50;

/// What one run measured.
#[derive(Debug)]
pub struct FanOut {
    pub watchers: usize,
    pub writes: usize,
    /// Per write: from the start of the write (a read and a put: `Store::apply`) to the last
    /// watcher's receipt.
    pub to_all: Vec<Duration>,
    /// Every (watcher, write) delivery.
    pub each: Vec<Duration>,
    /// etcd's CPU over the writes, and its peak RSS.
    pub etcd: Cost,
    /// etcd's gRPC proxies (none when the watchers talk to etcd itself): their CPU over the
    /// writes and their peak RSS, summed.
    pub proxies: Cost,
    pub seconds: f64,
    /// Deliveries that never came (within the wait).
    pub missing: usize,
}

fn probe(seq: usize) -> Resource<NodeSpec> {
    let spec = NodeSpec {
        bgp: Some(NodeBgpSpec {
            // The write's number is in the address, so each write changes the Node.
            ipv4_address: Some(format!(
                "10.{}.{}.{}/16",
                100 + seq / 65536 % 100,
                seq / 256 % 256,
                seq % 256
            )),
            ..NodeBgpSpec::default()
        }),
        ..NodeSpec::default()
    };
    Resource::new(PROBE.to_string(), spec)
}

/// The write number a watcher sees in the probe Node.
fn seq_of(node: &Resource<NodeSpec>) -> Option<usize> {
    let addr = node.spec.bgp.as_ref()?.ipv4_address.as_ref()?;
    let ip = addr.split('/').next()?;
    let o: Vec<usize> = ip.split('.').filter_map(|s| s.parse().ok()).collect();
    (o.len() == 4).then(|| (o[1] - 100) * 65536 + o[2] * 256 + o[3])
}

/// Starts etcd in its own lab (and `proxies` of etcd's gRPC proxies in front of it), opens
/// `watchers` connections each watching Nodes (spread evenly over the proxies when there are
/// any), then writes the probe Node `writes` times, `interval` apart. The writer always talks
/// to etcd itself.
pub fn run(
    watchers: usize,
    proxies: u8,
    writes: usize,
    interval: Duration,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<FanOut> {
    let lab = Lab::new("margay-watchfan")?;
    let sw = lab.switch("sw")?;
    let etcd = Etcd::on_switch(&lab, &sw)?;
    let etcd_pid = etcd_pid(&etcd)?;
    let fronts = start_proxies(&lab, &etcd, proxies)?;
    let rt = NsRuntime::start(etcd.netns().name())?;
    let endpoint = etcd.endpoint();
    let watch_endpoints: Vec<String> = if fronts.is_empty() {
        vec![endpoint.clone()]
    } else {
        fronts.iter().map(|p| p.endpoint()).collect()
    };
    let writer = {
        let e = endpoint.clone();
        rt.run(async move { Store::connect(&EtcdArgs::plain([e])).await })??
    };
    let rev = {
        let w = writer.clone();
        rt.run(async move { w.create(&probe(0)).await })??
            .revision()
            .context("the created Node has no revision")?
    };
    progress(&format!(
        "etcd up ({} gRPC proxies); opening {watchers} watchers",
        fronts.len()
    ));
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, Instant)>();
    let ready = Arc::new(tokio::sync::Semaphore::new(0));
    let started = Instant::now();
    for chunk_start in (0..watchers).step_by(CONNECT_BATCH) {
        let n = CONNECT_BATCH.min(watchers - chunk_start);
        let (tx, ready) = (tx.clone(), ready.clone());
        let ends = watch_endpoints.clone();
        rt.run(async move {
            for i in chunk_start..chunk_start + n {
                let e = ends[i % ends.len()].clone();
                let store = Store::connect(&EtcdArgs::plain([e])).await?;
                let (tx, ready) = (tx.clone(), ready.clone());
                tokio::spawn(async move {
                    let mut w = store.watch::<NodeSpec>(rev + 1);
                    ready.add_permits(1);
                    loop {
                        if let WatchEvent::Put(node) = w.next().await
                            && node.metadata.name == PROBE
                            && let Some(seq) = seq_of(&node)
                            && tx.send((seq, Instant::now())).is_err()
                        {
                            return;
                        }
                    }
                });
            }
            anyhow::Ok(())
        })??;
    }
    drop(tx);
    {
        let ready = ready.clone();
        rt.run(async move {
            ready
                .acquire_many(watchers as u32)
                .await
                .map(|p| p.forget())
        })??;
    }
    progress(&format!(
        "{watchers} watchers started in {:.1} s; checking that every one sees a write",
        started.elapsed().as_secs_f64()
    ));
    // A watch is open once its request has gone out: one write that everyone must see proves
    // it. Then the measured writes.
    let before = Cost::of(etcd_pid).context("reading etcd's /proc entry")?;
    let proxies_before = proxies_cost(&fronts)?;
    let t0 = Instant::now();
    let w = writer.clone();
    let (warm, sent, got) = rt.run(async move {
        w.apply(&probe(1)).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut warm = 0;
        while warm < watchers {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((1, _))) => warm += 1,
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        let mut sent = Vec::with_capacity(writes);
        let collector = tokio::spawn(async move {
            let mut got: Vec<Vec<Instant>> = vec![Vec::with_capacity(watchers); writes];
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            let want = writes * watchers;
            let mut n = 0;
            while n < want {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some((seq, at))) if (2..writes + 2).contains(&seq) => {
                        got[seq - 2].push(at);
                        n += 1;
                    }
                    Ok(Some(_)) => {}
                    _ => break,
                }
            }
            got
        });
        for i in 0..writes {
            sent.push(Instant::now());
            w.apply(&probe(i + 2)).await?;
            tokio::time::sleep(interval).await;
        }
        let got = collector.await?;
        anyhow::Ok((warm, sent, got))
    })??;
    anyhow::ensure!(
        warm == watchers,
        "only {warm} of {watchers} watchers saw the first write within 60 s"
    );
    let seconds = t0.elapsed().as_secs_f64();
    let after = Cost::of(etcd_pid).context("reading etcd's /proc entry")?;
    let proxies_after = proxies_cost(&fronts)?;
    let mut to_all = Vec::new();
    let mut each = Vec::new();
    let mut missing = 0;
    for (s, g) in sent.iter().zip(&got) {
        missing += watchers - g.len();
        each.extend(g.iter().map(|t| t.saturating_duration_since(*s)));
        if let Some(last) = g.iter().max() {
            to_all.push(last.saturating_duration_since(*s));
        }
    }
    drop(rt);
    Ok(FanOut {
        watchers,
        writes,
        to_all,
        each,
        etcd: Cost {
            cpu: after.cpu.saturating_sub(before.cpu),
            peak_rss_kib: after.peak_rss_kib,
        },
        proxies: Cost {
            cpu: proxies_after.cpu.saturating_sub(proxies_before.cpu),
            peak_rss_kib: proxies_after.peak_rss_kib,
        },
        seconds,
        missing,
    })
}

/// The proxies' CPU so far and peak RSS, summed.
fn proxies_cost(proxies: &[EtcdProxy]) -> anyhow::Result<Cost> {
    let mut sum = Cost::default();
    for p in proxies {
        let c = Cost::of(p.pid())
            .with_context(|| format!("reading proxy {}'s /proc entry", p.pid()))?;
        sum.cpu += c.cpu;
        sum.peak_rss_kib += c.peak_rss_kib;
    }
    Ok(sum)
}

fn etcd_pid(etcd: &Etcd) -> anyhow::Result<u32> {
    let pids = etcd.netns().pids()?;
    pids.into_iter()
        .map(|p| p as u32)
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "etcd")
        })
        .context("finding etcd's pid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_write_number_round_trips_through_the_probe_node() {
        for seq in [0, 1, 255, 256, 70_000] {
            assert_eq!(seq_of(&probe(seq)), Some(seq));
        }
    }
}
