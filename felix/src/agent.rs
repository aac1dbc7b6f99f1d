//! The dataplane loop: one thread owns the [`Reconciler`]; model updates, kernel notifications
//! (from a monitor thread) and the resync timer arrive on one channel and are coalesced, so a
//! burst of changes costs one batched flush. Every flush that changed the kernel bumps a
//! generation on a watch channel ([`Agent::programmed`]), so async callers (a CNI ADD waiting
//! for its pod's host route) wait on a notification instead of polling the kernel.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::health::{Health, Metrics};
use crate::incremental::{Incremental, ModelChange};
use crate::model::Model;
use crate::netlink::{Dataplane, Event, NetlinkError, enter_netns};
use crate::reconcile::{ReconcileConfig, Reconciler};

/// Longest the loop sleeps without beating the liveness heart.
const BEAT: Duration = Duration::from_secs(2);

/// What the loop reacts to.
#[derive(Debug)]
pub enum Input {
    /// A new model (replaces the previous one entirely), shared with its sender: cluster mode
    /// keeps it to compare the next one with, and copying it cost O(N) per Node change.
    Model(Arc<Model>),
    /// Changes of other nodes' VTEPs and of learned routes since the last model or changes
    /// ([`crate::incremental`]): what one Node change costs, whatever the number of nodes.
    Changes(Vec<ModelChange>),
    /// Kernel notifications.
    Netlink(Vec<Event>),
    /// Whether felix's remote routes missing from the model stay (until the remote table is
    /// complete) or go.
    HoldStaleRemote(bool),
    /// A new time between full resyncs (FelixConfiguration `routeRefreshInterval`).
    ResyncInterval(Duration),
    /// Stop the loop; felix's routes stay in the kernel (a restart re-adopts them).
    Shutdown,
}

/// How the loop runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub reconcile: ReconcileConfig,
    /// Time between full resyncs.
    pub resync_interval: Duration,
    /// Enter this network namespace (`/var/run/netns/NAME`) before opening netlink sockets;
    /// `None` to stay in the process's namespace (the daemon under `ip netns exec`).
    pub netns: Option<String>,
}

/// A running dataplane loop.
pub struct Agent {
    tx: Sender<Input>,
    programmed: tokio::sync::watch::Receiver<u64>,
    thread: Option<JoinHandle<Result<(), NetlinkError>>>,
}

impl Agent {
    /// Starts the loop on its own thread. It programs nothing until the first model arrives.
    pub fn spawn(
        cfg: AgentConfig,
        health: Arc<Health>,
        metrics: Arc<Metrics>,
    ) -> Result<Agent, NetlinkError> {
        let (tx, rx) = mpsc::channel();
        let loop_tx = tx.clone();
        let (ready_tx, ready_rx) = mpsc::channel();
        let (programmed_tx, programmed) = tokio::sync::watch::channel(0u64);
        let thread = std::thread::Builder::new()
            .name("dataplane".into())
            .spawn(move || {
                let io = Io {
                    rx,
                    tx: loop_tx,
                    ready: ready_tx,
                    programmed: programmed_tx,
                };
                run(cfg, io, health, metrics)
            })
            .map_err(NetlinkError::io("starting the dataplane thread"))?;
        // Wait until its sockets are open (or it failed to open them).
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Agent {
                tx,
                programmed,
                thread: Some(thread),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(thread
                .join()
                .ok()
                .and_then(|r| r.err())
                .unwrap_or(NetlinkError::NoAck)),
        }
    }

    /// Hands the loop a new model.
    pub fn update(&self, model: impl Into<Arc<Model>>) {
        let _ = self.tx.send(Input::Model(model.into()));
    }

    /// Hands the loop changes to the last model (see [`Input::Changes`]); nothing is sent
    /// for none.
    pub fn apply(&self, changes: Vec<ModelChange>) {
        if !changes.is_empty() {
            let _ = self.tx.send(Input::Changes(changes));
        }
    }

    /// While `hold` is true, felix's routes to remote blocks that the model lacks stay in the
    /// kernel (the remote table is still coming in); set to false once it is complete, and
    /// those stale routes go at the next flush. Everything else is programmed either way.
    pub fn hold_stale_remote(&self, hold: bool) {
        let _ = self.tx.send(Input::HoldStaleRemote(hold));
    }

    /// Sets the time between full resyncs from now on.
    pub fn set_resync_interval(&self, every: Duration) {
        let _ = self.tx.send(Input::ResyncInterval(every));
    }

    /// A generation bumped after every flush or resync that changed the kernel.
    pub fn programmed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.programmed.clone()
    }

    /// Stops the loop and waits for it.
    pub fn stop(mut self) -> Result<(), NetlinkError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), NetlinkError> {
        let _ = self.tx.send(Input::Shutdown);
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(NetlinkError::Io {
                context: "dataplane thread panicked".into(),
                source: std::io::Error::other("panic"),
            }),
            None => Ok(()),
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// The loop's channels.
struct Io {
    rx: Receiver<Input>,
    /// For the monitor thread.
    tx: Sender<Input>,
    /// Whether the sockets opened.
    ready: Sender<Result<(), NetlinkError>>,
    /// Bumped after a flush that changed the kernel.
    programmed: tokio::sync::watch::Sender<u64>,
}

fn run(
    cfg: AgentConfig,
    io: Io,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
) -> Result<(), NetlinkError> {
    let Io {
        rx,
        tx,
        ready,
        programmed,
    } = io;
    let opened = (|| {
        if let Some(ns) = &cfg.netns {
            enter_netns(ns)?;
        }
        // The monitor first, so no change between the first dump and now is missed.
        let monitor = Dataplane::monitor()?;
        let dp = Dataplane::new()?;
        Ok((monitor, dp))
    })();
    let (mut monitor, dp) = match opened {
        Ok(v) => {
            let _ = ready.send(Ok(()));
            v
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return Ok(());
        }
    };

    let stop = Arc::new(AtomicBool::new(false));
    let monitor_stop = stop.clone();
    let monitor_metrics = metrics.clone();
    let monitor_thread = std::thread::Builder::new()
        .name("netlink-monitor".into())
        .spawn(move || {
            while !monitor_stop.load(Ordering::Relaxed) {
                match monitor.next(Duration::from_millis(200)) {
                    Ok(evs) if evs.is_empty() => {}
                    Ok(evs) => {
                        if tx.send(Input::Netlink(evs)).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        monitor_metrics.netlink_errors.inc();
                        tracing::warn!(error = %e, "netlink monitor");
                        let _ = tx.send(Input::Netlink(vec![Event::Overrun]));
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            }
        })
        .map_err(NetlinkError::io("starting the monitor thread"))?;

    let mut resync_interval = cfg.resync_interval;
    let mut rec = Reconciler::new(dp, cfg.reconcile, health.clone(), metrics.clone());
    // The desired state kept change by change since the last whole model.
    let mut inc: Option<Incremental> = None;
    let mut next_resync = Instant::now();
    let mut need_resync = true;
    'outer: loop {
        let wait = next_resync
            .saturating_duration_since(Instant::now())
            .min(BEAT);
        let first = match rx.recv_timeout(wait) {
            Ok(i) => Some(i),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut inputs: Vec<Input> = first.into_iter().collect();
        inputs.extend(rx.try_iter());
        // A burst of models is computed once: each replaces the previous one and the changes
        // sent before it entirely, so only the newest and the changes after it count.
        let newest_model = inputs.iter().rposition(|i| matches!(i, Input::Model(_)));
        for (k, input) in inputs.into_iter().enumerate() {
            let superseded = newest_model.is_some_and(|n| k < n);
            match input {
                Input::Shutdown => break 'outer,
                Input::Model(_) | Input::Changes(_) if superseded => {}
                Input::Model(m) => {
                    let t = Instant::now();
                    let whole = Incremental::new(Model::clone(&m));
                    rec.set_desired(whole.desired().clone());
                    inc = Some(whole);
                    tracing::debug!(target: "route_path", elapsed_us = t.elapsed().as_micros() as u64, "felix: desired state computed");
                }
                Input::Changes(changes) => {
                    let t = Instant::now();
                    if let Some(inc) = inc.as_mut() {
                        rec.apply_delta(inc.apply(changes));
                    }
                    tracing::debug!(target: "route_path", elapsed_us = t.elapsed().as_micros() as u64, "felix: desired state changed");
                }
                Input::HoldStaleRemote(hold) => rec.hold_stale_remote(hold),
                Input::ResyncInterval(every) if every != resync_interval => {
                    tracing::info!(?every, "resync interval changed");
                    next_resync = next_resync.min(Instant::now() + every);
                    resync_interval = every;
                }
                Input::ResyncInterval(_) => {}
                Input::Netlink(evs) => {
                    for ev in evs {
                        if ev == Event::Overrun {
                            need_resync = true;
                        } else {
                            rec.handle_event(ev);
                        }
                    }
                }
            }
        }
        if Instant::now() >= next_resync {
            need_resync = true;
        }
        health.beat();
        if inc.is_none() {
            continue;
        }
        let flush_start = Instant::now();
        let result = if need_resync {
            next_resync = Instant::now() + resync_interval;
            need_resync = false;
            rec.resync()
        } else {
            rec.flush()
        };
        match result {
            Ok(report) if report != Default::default() => {
                tracing::debug!(target: "route_path", elapsed_us = flush_start.elapsed().as_micros() as u64, "felix: kernel routes written");
                programmed.send_modify(|g| *g = g.wrapping_add(1));
                tracing::info!(?report, "dataplane updated")
            }
            Ok(_) => {}
            Err(e) => {
                metrics.netlink_errors.inc();
                tracing::warn!(error = %e, "dataplane update failed; resyncing");
                need_resync = true;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = monitor_thread.join();
    Ok(())
}
