//! The policy task: keeps felix's policy table in line with the datastore.
//!
//! It watches the whole `/margay/` prefix and reacts to changes of the kinds policy depends on
//! (tiers, the three policy kinds, profiles, workload endpoints of every node, nodes,
//! FelixConfiguration): it reads them all ([`load`]), builds the shared [`PolicyModel`],
//! compiles this node's IR, renders only what differs from the IR it last rendered
//! ([`Rendered`]) and lets the [`PolicyKeeper`] apply that as one transaction. Changes that
//! arrive together are applied together (a short settle delay).
//!
//! Before the first full read nothing is written: a restarted felix finds the table its
//! predecessor left enforcing, and its first transaction patches only what changed meanwhile.
//! Every [`RESYNC`] the kernel's table is read back and drift repaired.
//!
//! [`PolicySync`] is the CNI ADD's hook: it asks for a read-and-apply now and waits until the
//! table holds a model read after the request, so a new pod's policy is in force before ADD
//! returns.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use margay_datastore::Store;
use margay_datastore::policy::{PolicyModel, load};
use margay_datastore::resources::{
    FelixConfigurationSpec, GlobalNetworkPolicySpec, K8sNetworkPolicySpec, KindInfo,
    NetworkPolicySpec, NodeSpec, ProfileSpec, Spec, TierSpec, WorkloadEndpointSpec,
};
use margay_datastore::store::kind_prefix;
use margay_datastore::watch::WatchEvent;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::health::{Health, Metrics, ViaLabel};
use crate::policy::{PolicyKeeper, Rendered, compile::compile};

/// How often the kernel's table is compared with the desired one.
pub const RESYNC: Duration = Duration::from_secs(10);
/// How long a change waits for the ones that come with it.
const SETTLE: Duration = Duration::from_millis(5);
/// The readiness key.
const R_POLICY: &str = "policy";

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

fn prefix_of<S: Spec>() -> String {
    kind_prefix(KindInfo {
        kind: S::KIND,
        plural: S::PLURAL,
        namespaced: S::NAMESPACED,
    })
}

fn policy_prefixes() -> Vec<String> {
    vec![
        prefix_of::<TierSpec>(),
        prefix_of::<NetworkPolicySpec>(),
        prefix_of::<GlobalNetworkPolicySpec>(),
        prefix_of::<K8sNetworkPolicySpec>(),
        prefix_of::<ProfileSpec>(),
        prefix_of::<WorkloadEndpointSpec>(),
        prefix_of::<NodeSpec>(),
        prefix_of::<FelixConfigurationSpec>(),
    ]
}

/// FelixConfiguration `interfacePrefix` of this node (its `node.<name>` over `default`).
async fn workload_prefixes(store: &Store, node: &str) -> Result<Vec<String>, String> {
    let read = |name: String| async move {
        store
            .get::<FelixConfigurationSpec>(&name)
            .await
            .map(|r| r.map(|r| r.spec))
            .map_err(|e| format!("reading FelixConfiguration {name}: {e}"))
    };
    let global = read(crate::settings::GLOBAL.to_string()).await?;
    let own = read(crate::settings::node_config_name(node)).await?;
    let (s, _) = crate::settings::merge(global.as_ref(), own.as_ref(), &Default::default());
    Ok(s.dataplane.interface_prefixes)
}

/// The keeper and what it last rendered (one lock: the writer thread owns both).
struct Writer {
    keeper: PolicyKeeper,
    rendered: Option<Rendered>,
}

/// Reads, compiles and applies once (`resync`: against the kernel's table, not felix's memory);
/// returns the revision its WorkloadEndpoints were read at.
async fn program(
    store: &Store,
    node: &str,
    writer: &Arc<Mutex<Writer>>,
    resync: bool,
    metrics: &Metrics,
) -> Result<i64, String> {
    let started = Instant::now();
    // The interface prefixes are read beside the policy resources, not after them: this runs
    // for every burst of CNI ADDs, so each sequential etcd round trip is on their path.
    let (loaded, prefixes) = tokio::join!(
        load::load_with_revision(store),
        workload_prefixes(store, node)
    );
    let (res, endpoints_rev) = loaded.map_err(|e| format!("reading policy: {e}"))?;
    let (model, errors) = PolicyModel::build(&res);
    for e in &errors {
        warn!(error = %e, "policy left out");
    }
    let mut ir = compile(&model, node);
    ir.workload_prefixes = prefixes?;
    let (endpoints, policies) = (ir.endpoints.len(), ir.policies.len());
    let w = writer.clone();
    let (report, via) = tokio::task::spawn_blocking(move || {
        let mut w = w.lock().unwrap_or_else(|p| p.into_inner());
        let Writer { keeper, rendered } = &mut *w;
        let via = if keeper.uses_library() {
            "libnftables"
        } else {
            "nft"
        };
        let report = match rendered {
            Some(r) if !resync => {
                let touched = r.update(ir);
                keeper.apply_touched(r.table(), &touched)
            }
            _ => {
                let r = rendered.insert(Rendered::new(ir));
                if resync {
                    keeper.resync(r.table())
                } else {
                    keeper.apply(r.table())
                }
            }
        };
        (report, via)
    })
    .await
    .map_err(|e| format!("policy writer panicked: {e}"))?;
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
            ms = started.elapsed().as_secs_f64() * 1e3,
            "policy table updated"
        );
    }
    Ok(endpoints_rev)
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
    let prefixes = policy_prefixes();
    let relevant = |key: &str| prefixes.iter().any(|p| key.starts_with(p.as_str()));
    let endpoints_prefix = prefix_of::<WorkloadEndpointSpec>();
    // The revision the last applied read had the WorkloadEndpoints at: an endpoint's change at
    // or below it is in force already (every CNI ADD's own write comes back this way after the
    // ADD's sync request has been answered by a read that saw it).
    let mut endpoints_rev = 0i64;
    let covered = |key: &str, rev: i64, endpoints_rev: i64| {
        key.starts_with(endpoints_prefix.as_str()) && rev <= endpoints_rev
    };
    let mut backoff = Duration::from_millis(100);
    let mut watch = loop {
        match store.revision().await {
            Ok(rev) => break store.watch_raw("/margay/", rev + 1),
            Err(e) => {
                warn!(error = %e, "policy: reading etcd's revision; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    };
    let mut waiting: Vec<SyncRequest> = Vec::new();
    let mut dirty = true;
    let mut resync_due = false;
    let mut timer = tokio::time::interval(RESYNC);
    timer.tick().await;
    loop {
        // Every request sent so far is answered by the read below (a request left in the
        // channel would wait for one more read and apply).
        while let Ok(r) = requests.try_recv() {
            waiting.push(r);
        }
        if dirty || resync_due || !waiting.is_empty() {
            // Requests that came before this read are answered by it.
            let answering = std::mem::take(&mut waiting);
            match program(&store, &node, &writer, resync_due, &metrics).await {
                Ok(rev) => {
                    endpoints_rev = endpoints_rev.max(rev);
                    health.clear_reason(R_POLICY);
                    dirty = false;
                    resync_due = false;
                    for r in answering {
                        let _ = r.send(Ok(()));
                    }
                }
                Err(e) => {
                    warn!(error = %e, "policy not programmed; retrying");
                    health.set_reason(R_POLICY, format!("policy: {e}"));
                    for r in answering {
                        let _ = r.send(Err(e.clone()));
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            }
        }
        tokio::select! {
            ev = watch.next() => {
                match ev {
                    WatchEvent::Put(v) => {
                        dirty |= relevant(&v.key) && !covered(&v.key, v.mod_revision, endpoints_rev)
                    }
                    WatchEvent::Delete { key, revision, .. } => {
                        dirty |= relevant(&key) && !covered(&key, revision, endpoints_rev)
                    }
                    _ => dirty = true,
                }
                // Settle, unless an ADD asks meanwhile: it does not wait for the delay.
                if dirty && waiting.is_empty() {
                    tokio::select! {
                        _ = tokio::time::sleep(SETTLE) => {}
                        r = requests.recv() => match r {
                            Some(r) => waiting.push(r),
                            None => return,
                        },
                    }
                }
            }
            r = requests.recv() => match r {
                Some(r) => waiting.push(r),
                None => return,
            },
            _ = timer.tick() => resync_due = true,
        }
    }
}
