//! The policy task: keeps felix's policy table in line with the datastore.
//!
//! It lists the resources once (one read of `/margay/resources/v1/`, at one revision), then
//! follows one watch of `/margay/` from that revision: each change of a kind policy depends on
//! (tiers, the three policy kinds, profiles, workload endpoints of every node, nodes,
//! FelixConfiguration) updates the [`LivePolicy`] in place, which recompiles only what the
//! change touches; [`Rendered`] renders only what differs and the [`PolicyKeeper`] applies that
//! as one transaction. Changes that arrive together are applied together: everything the
//! watch holds is taken in before a transaction, and what arrives while one is written goes
//! into the next (no settle delay: a fixed one was half of a change's time to the kernel).
//! It lists again only when etcd compacted the history the watch needed, or when the
//! watch does not reach a revision a CNI ADD waits for (a safety net: every margay key is
//! under `/margay/`, so the watch sees every revision).
//!
//! Before the first list nothing is written: a restarted felix finds the table its predecessor
//! left enforcing, and its first transaction patches only what changed meanwhile. Every
//! [`RESYNC`] the kernel's table is read back and drift repaired.
//!
//! [`PolicySync`] is the CNI ADD's hook: the task reads etcd's current revision (one small
//! request, no listing), and answers once the watch has delivered every change up to it and
//! the table holds them, so a new pod's policy is in force before ADD returns.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use margay_datastore::policy::load::{decode_input, input_kind};
use margay_datastore::store::{RESOURCES, ROOT};
use margay_datastore::watch::WatchEvent;
use margay_datastore::{Store, Versioned};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::health::{Health, Metrics, ViaLabel};
use crate::policy::{Changes, LivePolicy, PolicyKeeper, Rendered};

/// How often the kernel's table is compared with the desired one.
pub const RESYNC: Duration = Duration::from_secs(10);
/// The readiness key.
const R_POLICY: &str = "policy";
/// How long a CNI ADD's request waits for the watch to reach etcd's revision before the task
/// lists again instead.
const CATCH_UP: Duration = Duration::from_millis(500);

/// A request to read and apply now; answered once applied (or with why not).
type SyncRequest = oneshot::Sender<Result<(), String>>;

/// The CNI side's handle on the policy task.
#[derive(Debug, Clone)]
pub struct PolicySync {
    tx: mpsc::Sender<SyncRequest>,
}

/// The policy task's end of [`PolicySync`] (one task takes it; clones share it).
#[derive(Debug, Clone)]
pub struct PolicyRequests {
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<SyncRequest>>>,
}

/// A connected pair.
pub fn channel() -> (PolicySync, PolicyRequests) {
    let (tx, rx) = mpsc::channel(64);
    (
        PolicySync { tx },
        PolicyRequests {
            rx: Arc::new(tokio::sync::Mutex::new(rx)),
        },
    )
}

impl PolicySync {
    /// Waits until the policy table reflects the datastore as of now (at most `timeout`).
    pub async fn sync(&self, timeout: Duration) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(tx)
            .await
            .map_err(|_| "the policy task is not running".to_string())?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err("the policy task stopped".into()),
            Err(_) => Err(format!("policy not programmed within {timeout:?}")),
        }
    }
}

/// The keeper and what it last rendered (one lock: the writer thread owns both).
struct Writer {
    keeper: PolicyKeeper,
    rendered: Option<Rendered>,
}

/// Applies the model's IR (`resync`: against the kernel's table, not felix's memory). `started`:
/// when the change came in; `modelled`: how long the live model took to take it in (`settle_ms`
/// in the log is what passed between that and this call: the rest of the watch's batch).
async fn program(
    live: &LivePolicy,
    changes: Changes,
    writer: &Arc<Mutex<Writer>>,
    resync: bool,
    metrics: &Metrics,
    (started, modelled): (Instant, Duration),
) -> Result<(), String> {
    let ir = live.ir();
    let (endpoints, policies) = (ir.endpoints.len(), ir.policies.len());
    // Steady state: compare the rendered IR with the model's in place and copy only what
    // differs (no copy of the whole IR per change). The writer is idle here: the task awaits
    // each write before the next.
    let taking = Instant::now();
    let touched = {
        let mut w = writer.lock().unwrap_or_else(|p| p.into_inner());
        match &mut w.rendered {
            Some(r) if !resync => Some(r.update_changed(ir, &changes)),
            _ => None,
        }
    };
    let fresh = touched.is_none().then(|| ir.clone());
    let taken = Instant::now();
    let w = writer.clone();
    let (report, via, (queued, render, write)) = tokio::task::spawn_blocking(move || {
        let mut w = w.lock().unwrap_or_else(|p| p.into_inner());
        let Writer { keeper, rendered } = &mut *w;
        let via = if keeper.uses_library() {
            "libnftables"
        } else {
            "nft"
        };
        let t1 = Instant::now();
        let (report, t2) = match (touched, rendered.as_ref(), fresh) {
            (Some(touched), Some(r), _) => (keeper.apply_touched(r.table(), &touched), t1),
            (_, _, fresh) => {
                let r = rendered.insert(Rendered::new(fresh.unwrap_or_default()));
                let t2 = Instant::now();
                if resync {
                    (keeper.resync(r.table()), t2)
                } else {
                    (keeper.apply(r.table()), t2)
                }
            }
        };
        (report, via, (t1 - taken, t2 - t1, t2.elapsed()))
    })
    .await
    .map_err(|e| format!("policy writer panicked: {e}"))?;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let report = report.map_err(|e| e.to_string())?;
    if report.transactions > 0 {
        metrics
            .policy_transactions
            .get_or_create(&ViaLabel { via: via.into() })
            .inc_by(report.transactions as u64);
        metrics
            .policy_program_seconds
            .observe(started.elapsed().as_secs_f64());
        info!(
            endpoints,
            policies,
            script_lines = report.script_lines,
            drift = report.drift,
            via,
            ms = ms(started.elapsed()),
            model_ms = ms(modelled),
            settle_ms = ms((taking - started).saturating_sub(modelled)),
            compare_ms = ms(taken - taking),
            queued_ms = ms(queued),
            render_ms = ms(render),
            write_ms = ms(write),
            "policy table updated"
        );
    }
    Ok(())
}

/// The future's output if it is ready at the first poll; `None` (and the future dropped) if
/// not.
async fn ready_now<F: std::future::Future>(fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match fut.as_mut().poll(cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        })
    })
    .await
}

/// A model of everything under `/margay/resources/v1/` as listed (`items`).
fn model_of(node: &str, items: Vec<Versioned<Vec<u8>>>) -> LivePolicy {
    let mut live = LivePolicy::new(node);
    for v in items {
        apply(&mut live, WatchEvent::Put(v));
    }
    live
}

/// Applies one watch event to the model; says whether it touched a policy input.
fn apply(live: &mut LivePolicy, ev: WatchEvent<Versioned<Vec<u8>>>) -> bool {
    let changed = match ev {
        WatchEvent::Put(v) => match decode_input(&v.key, &v.value, v.mod_revision) {
            Some(Ok(input)) => {
                live.put(&v.key, input);
                true
            }
            Some(Err(e)) => {
                warn!(key = %v.key, error = %e, "policy: skipping undecodable resource");
                false
            }
            None => false,
        },
        WatchEvent::Delete { key, .. } => match input_kind(&key) {
            Some(kind) => {
                live.delete(&key, kind);
                true
            }
            None => false,
        },
        WatchEvent::Resync { items, .. } => {
            let node = live.node().to_string();
            *live = model_of(&node, items);
            true
        }
    };
    for e in live.take_errors() {
        warn!(error = %e, "policy left out");
    }
    changed
}

/// Lists every resource at one revision, retrying until etcd answers.
async fn list(store: &Store, node: &str) -> (LivePolicy, i64) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match store.list_raw(RESOURCES).await {
            Ok((items, rev)) => return (model_of(node, items), rev),
            Err(e) => {
                warn!(error = %e, "policy: listing the resources; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Runs until the requests' sender side is gone or the task is aborted.
pub async fn run(
    store: Store,
    node: String,
    keeper: PolicyKeeper,
    requests: PolicyRequests,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
) {
    let mut requests = requests.rx.lock().await;
    health.set_reason(R_POLICY, "policy: not programmed yet");
    let writer = Arc::new(Mutex::new(Writer {
        keeper,
        rendered: None,
    }));
    let (mut live, rev) = list(&store, &node).await;
    let mut watch = store.watch_raw(ROOT, rev + 1);
    // Requests waiting for the table to hold etcd's state as of the revision beside each.
    let mut waiting: Vec<(SyncRequest, i64, Instant)> = Vec::new();
    let mut fresh: Vec<SyncRequest> = Vec::new();
    let mut dirty = true;
    let mut resync_due = false;
    // When the change that made the table dirty arrived, and how long the model took to take it in.
    let mut changed_at = Instant::now();
    let mut modelled = Duration::ZERO;
    let mut timer = tokio::time::interval(RESYNC);
    timer.tick().await;
    loop {
        while let Ok(r) = requests.try_recv() {
            fresh.push(r);
        }
        if !fresh.is_empty() {
            // One revision read answers every request that came before it.
            match store.revision().await {
                Ok(rev) => {
                    let now = Instant::now();
                    waiting.extend(fresh.drain(..).map(|r| (r, rev, now)));
                }
                Err(e) => {
                    for r in fresh.drain(..) {
                        let _ = r.send(Err(format!("reading etcd's revision: {e}")));
                    }
                }
            }
        }
        // Take in what the watch already has, without waiting (polled once: a zero timeout
        // waits for the timer's next millisecond tick).
        while let Some(ev) = ready_now(watch.next()).await {
            let got = Instant::now();
            if apply(&mut live, ev) && !dirty {
                dirty = true;
                (changed_at, modelled) = (got, got.elapsed());
            }
        }
        // Safety net: a revision the watch does not reach in time (a write outside `/margay/`)
        // is covered by listing again.
        if waiting
            .iter()
            .any(|(_, rev, since)| *rev >= watch.next_revision() && since.elapsed() > CATCH_UP)
        {
            warn!("policy: the watch did not reach etcd's revision in time; listing again");
            let (l, rev) = list(&store, &node).await;
            live = l;
            watch = store.watch_raw(ROOT, rev + 1);
            for (_, r, _) in waiting.iter_mut() {
                *r = (*r).min(rev);
            }
            dirty = true;
            (changed_at, modelled) = (Instant::now(), Duration::ZERO);
        }
        if dirty || resync_due {
            let at = (changed_at, modelled);
            let changes = live.take_changes();
            match program(&live, changes, &writer, resync_due, &metrics, at).await {
                Ok(()) => {
                    health.clear_reason(R_POLICY);
                    dirty = false;
                    resync_due = false;
                }
                Err(e) => {
                    warn!(error = %e, "policy not programmed; retrying");
                    health.set_reason(R_POLICY, format!("policy: {e}"));
                    for (r, _, _) in waiting.drain(..) {
                        let _ = r.send(Err(e.clone()));
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            }
        }
        // Answer the requests whose revision the table now holds.
        let seen = watch.next_revision();
        let (done, still): (Vec<_>, Vec<_>) =
            waiting.drain(..).partition(|(_, rev, _)| *rev < seen);
        waiting = still;
        for (r, _, _) in done {
            let _ = r.send(Ok(()));
        }
        let catch_up = async {
            match waiting.iter().map(|(_, _, since)| *since).min() {
                Some(since) => tokio::time::sleep_until((since + CATCH_UP).into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ev = watch.next() => {
                let got = Instant::now();
                if apply(&mut live, ev) {
                    dirty = true;
                    (changed_at, modelled) = (got, got.elapsed());
                }
            }
            r = requests.recv() => match r {
                Some(r) => fresh.push(r),
                None => return,
            },
            _ = timer.tick() => resync_due = true,
            _ = catch_up => {}
        }
    }
}
