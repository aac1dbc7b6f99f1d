//! Cluster mode: felix fed by the datastore and by bgpd instead of a state file.
//!
//! Three tasks and one coordinator:
//! - [`datastore::follow`] lists and watches IPPools, Nodes, this node's WorkloadEndpoints and
//!   block affinities, and publishes a [`ClusterState`];
//! - [`bgpd::follow`] streams the routes bgpd learned and sends it the originated set;
//! - the tunnel task assigns / releases this node's VXLAN and IPIP tunnel addresses;
//! - [`default_pool::ensure`] creates the default IPPool once, when the cluster has none;
//! - [`etcd_probe::run`] puts "etcd unreachable" in readiness while etcd does not answer;
//! - before the first model, [`orphans`] removes pod veths no WorkloadEndpoint owns;
//! - [`crate::wireguard::keeper`]: the WireGuard device, peers, table and rule, and this
//!   node's published key (FelixConfiguration `wireguardEnabled`);
//! - [`ipam_gc`]: the node's liveness lease, its own leak collector, and the campaign for
//!   the one cluster-wide IPAM collector;
//! - the coordinator ([`run`]) assembles a [`crate::model::Model`] from the latest of both
//!   feeds and hands it to the dataplane loop, and the prefixes to originate to bgpd; another
//!   node's change goes to the dataplane as that change alone, and without bgpd
//!   [`ipam_incremental`] keeps IPAM's remote routes change by change for it.
//!
//! The dataplane gets its first model as soon as the datastore has synced: local pods (veths,
//! /32s, this node's blocks) are wired before bgpd's table is complete. Until bgpd says its
//! table is complete (SYNCED) the dataplane keeps every remote route of felix's it does not
//! know yet ([`Agent::hold_stale_remote`]), so a felix restart never removes a remote route it
//! would add back a moment later. /readiness lists what is still missing: the datastore, and
//! bgpd until felix has reached it once; a BGP peer that is down never makes felix unready.

pub mod adopt_veths;
pub mod backend;
pub mod bgpd;
pub mod datastore;
pub mod default_pool;
pub mod etcd_probe;
pub mod ipam_gc;
pub mod ipam_incremental;
pub mod ipam_routes;
pub mod orphans;
pub mod policy;
pub mod state;
pub mod tunnel;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use margay_datastore::ipam::Ipam;
use margay_datastore::{EtcdArgs, Store};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::agent::Agent;
use crate::changelog::Since;
use crate::desired;
use crate::health::Health;
use crate::incremental::ModelChange;
use crate::model::Model;
pub use backend::Backend;
pub use bgpd::BgpView;
use ipam_incremental::IpamRoutes;
pub use state::{AssembleError, Changed, ClusterState, assemble, vtep_mac};
pub use tunnel::{TunnelKind, Tunnels};

/// Default directory of margay's sockets.
pub const RUN_DIR: &str = "/var/run/margay";

/// Cluster mode's settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// This node's name (its Node resource).
    pub node: String,
    pub etcd: EtcdArgs,
    /// bgpd's gRPC socket.
    pub bgpd_socket: PathBuf,
    /// The IPPool to create when the cluster has none (checked already).
    pub default_pool: Option<margay_datastore::resources::IpPool>,
    /// The IPAM collectors' pass interval and lease TTL.
    pub gc: ipam_gc::GcTiming,
    /// Where the collectors count what they release.
    pub metrics: Arc<crate::health::Metrics>,
    /// felix's route protocol (the WireGuard table's routes carry it too).
    pub route_protocol: u8,
    /// Time between WireGuard's full resyncs (drift repair).
    pub resync: Duration,
    /// Network policy enforcement: the requests of the CNI side (`None`: policy is off and
    /// felix's policy table is left as it is).
    pub policy: Option<policy::PolicyRequests>,
    /// Where remote routes come from: bgpd (`bird`), or IPAM (`vxlan`, `none`).
    pub backend: Backend,
    /// Without bgpd, felix registers this node's IPv4 address in its Node (as bgpd does
    /// otherwise); resolved at start.
    pub register_ipv4: Option<IpNet>,
    /// Its IPv6 address likewise (`--ip6`; none unless given).
    pub register_ipv6: Option<IpNet>,
    /// FelixConfiguration settings that flags pinned.
    pub pinned: crate::settings::Pinned,
    /// Where the pod MTU detected from the host's interfaces is published (0: none yet), for
    /// CNI requests that name none; `None` when a flag fixed the pod MTU.
    pub pod_mtu: Option<Arc<std::sync::atomic::AtomicU32>>,
    /// Every new merge of FelixConfiguration is published here (the HTTP servers follow it).
    pub settings_out: watch::Sender<Option<crate::settings::Settings>>,
}

/// Detects the pod MTU (see [`crate::settings::pod_mtu`]) from this namespace's interfaces.
async fn detect_pod_mtu(pattern: String, overhead: u32) -> Option<u32> {
    let links = tokio::task::spawn_blocking(move || {
        crate::netlink::Dataplane::new().and_then(|mut dp| dp.links())
    })
    .await
    .ok()?;
    match links {
        Ok(links) => crate::settings::pod_mtu(
            links.iter().map(|l| (l.name.as_str(), l.mtu)),
            &pattern,
            overhead,
        ),
        Err(e) => {
            warn!(error = %e, "reading the interfaces for the pod MTU");
            None
        }
    }
}

/// Readiness keys this module sets.
const R_DATASTORE: &str = "datastore";
const R_BGPD: &str = "bgpd";
const R_NODE: &str = "node";
const R_TUNNEL: &str = "tunnel";

async fn connect_store(opts: &Options, health: &Health) -> Store {
    let mut backoff = Duration::from_millis(100);
    loop {
        match Store::connect(&opts.etcd).await {
            Ok(s) => return s,
            Err(e) => {
                let reason = format!("datastore: cannot connect: {e}");
                warn!("{reason}; retrying");
                health.set_reason(R_DATASTORE, reason);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Keeps the tunnel addresses in line with every new state; retries after a failure.
async fn tunnel_loop(
    tunnels: Tunnels,
    mut rx: watch::Receiver<Option<ClusterState>>,
    health: Arc<Health>,
) {
    // The inputs last reconciled without an error: another node's change leaves them as they
    // are and costs nothing here.
    let mut done: Option<ClusterState> = None;
    loop {
        let state = rx
            .borrow_and_update()
            .as_ref()
            .map(ClusterState::tunnel_inputs);
        if let Some(state) = state.filter(|s| done.as_ref() != Some(s)) {
            match tunnels.reconcile(&state).await {
                Ok(()) => {
                    health.clear_reason(R_TUNNEL);
                    done = Some(state);
                }
                Err(e) => {
                    warn!(error = %e, "tunnel address: retrying in 1 s");
                    health.set_reason(R_TUNNEL, format!("tunnel address: {e}"));
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        r = rx.changed() => if r.is_err() { return } else { continue },
                    }
                }
            }
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Writes this node's address into its Node (no bgpd runs to do it), retrying while etcd fails.
async fn register_node(store: Store, node: String, ipv4: Option<IpNet>, ipv6: Option<IpNet>) {
    let mut wait = Duration::from_millis(100);
    while let Err(e) = margay_bgp::cluster::register(&store, &node, ipv4, ipv6, None).await {
        warn!(error = %e, retry_in = ?wait, "cannot register this node yet");
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

/// Creates the default IPPool unless the cluster has one, retrying while etcd fails.
async fn create_default_pool(store: &Store, pool: &margay_datastore::resources::IpPool) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match default_pool::ensure(store, pool).await {
            Ok(default_pool::Outcome::Created) => {
                info!(name = default_pool::NAME, cidr = %pool.spec.cidr, "created the default IPPool: the cluster had none");
                return;
            }
            Ok(default_pool::Outcome::Exists(names)) => {
                info!(pools = ?names, "the cluster has IPPools: no default pool created");
                return;
            }
            Err(e) => {
                warn!(error = %e, "creating the default IPPool failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Takes over the pod veths of this node's endpoints that another agent made
/// ([`adopt_veths`]), then removes the veths of ADDs cut short before felix last stopped
/// (see [`orphans`]).
async fn sweep_orphans(state: &ClusterState) {
    let state = state.clone();
    let named = state.clone();
    match tokio::task::spawn_blocking(move || adopt_veths::mark_endpoint_veths(&named)).await {
        Ok(Ok(marked)) if !marked.is_empty() => {
            info!(?marked, "took over pod veths another agent made")
        }
        Ok(Ok(_)) => {}
        Ok(Err(e)) => warn!(error = %e, "marking pod veths another agent made"),
        Err(e) => warn!(error = %e, "pod veth take-over panicked"),
    }
    match tokio::task::spawn_blocking(move || orphans::remove_orphan_veths(&state)).await {
        Ok(Ok(removed)) if !removed.is_empty() => {
            info!(?removed, "removed pod veths no WorkloadEndpoint owns")
        }
        Ok(Ok(_)) => {}
        Ok(Err(e)) => warn!(error = %e, "removing orphan pod veths"),
        Err(e) => warn!(error = %e, "orphan veth sweep panicked"),
    }
}

/// The whole model with the inputs left out, or why there is none yet.
type Assembled = Result<(Model, Vec<String>), state::AssembleError>;

/// What one pass of [`run`] takes from the datastore's and bgpd's views while it borrows them.
struct Step {
    /// The whole model, or (`Err`) the changes since the last one the dataplane has.
    assembled: Result<Assembled, Vec<ModelChange>>,
    problems_ipam: Vec<String>,
    problems_cfg: Vec<String>,
    settings: crate::settings::Settings,
    bgp_connected: bool,
    bgp_synced: bool,
    /// How many remote routes the model was assembled from.
    remote_routes: usize,
    /// The state, on the first pass only (the orphan sweep's input).
    first_state: Option<ClusterState>,
}

/// Lets the dataplane drop the remote routes the table lacks once the table is complete:
/// IPAM's at once (no bgpd), bgpd's at its SYNCED.
fn remote_table_done(
    agent: &Agent,
    done: &mut bool,
    with_bgpd: bool,
    bgp_synced: bool,
    remote_routes: usize,
) {
    if *done {
        return;
    }
    if !with_bgpd {
        info!(
            remote_routes,
            "IPAM's remote blocks are complete: remote routes it lacks may go now"
        );
    } else if bgp_synced {
        info!(
            remote_routes,
            "bgpd's table is complete: remote routes it lacks may go now"
        );
    } else {
        return;
    }
    *done = true;
    agent.hold_stale_remote(false);
}

/// Runs cluster mode until `shutdown` resolves: feeds `agent` with models and bgpd with the
/// originated set. felix's routes stay in the kernel when it returns.
pub async fn run(
    opts: Options,
    agent: &Agent,
    health: Arc<Health>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let with_bgpd = opts.backend.uses_bgpd();
    health.set_reason(R_DATASTORE, "datastore: first full sync not done yet");
    if with_bgpd {
        health.set_reason(
            R_BGPD,
            format!("bgpd: not reached yet ({})", opts.bgpd_socket.display()),
        );
    }
    // Remote routes not in the table yet stay until bgpd's table is complete (without bgpd,
    // until the datastore's first sync).
    agent.hold_stale_remote(true);
    let store = tokio::select! {
        s = connect_store(&opts, &health) => s,
        _ = &mut shutdown => return,
    };
    if !with_bgpd {
        info!(backend = %opts.backend, ipv4 = ?opts.register_ipv4, ipv6 = ?opts.register_ipv6, "no BGP: felix registers the Node and routes remote blocks from IPAM");
        tokio::select! {
            _ = register_node(store.clone(), opts.node.clone(), opts.register_ipv4, opts.register_ipv6) => {}
            _ = &mut shutdown => return,
        }
    }

    if let Some(pool) = &opts.default_pool {
        tokio::select! {
            _ = create_default_pool(&store, pool) => {}
            _ = &mut shutdown => return,
        }
    }

    let (ds_tx, mut ds_rx) = watch::channel::<Option<ClusterState>>(None);
    let (orig_tx, orig_rx) = watch::channel::<Option<BTreeSet<IpNet>>>(None);
    let (bgp_tx, mut bgp_rx) = watch::channel(BgpView::default());
    let scope = if with_bgpd {
        datastore::Scope::Local
    } else {
        datastore::Scope::Cluster
    };
    let ds_task = tokio::spawn(datastore::follow(
        store.clone(),
        opts.node.clone(),
        scope,
        ds_tx,
    ));
    let bgp_task = if with_bgpd {
        tokio::spawn(bgpd::follow(opts.bgpd_socket.clone(), orig_rx, bgp_tx))
    } else {
        // No bgpd: its view stays empty; the channel stays open.
        tokio::spawn(async move {
            let _keep = (orig_rx, bgp_tx);
            std::future::pending::<()>().await
        })
    };
    let probe_task = tokio::spawn(etcd_probe::run(
        store.clone(),
        opts.etcd.endpoints.join(","),
        health.clone(),
    ));
    // Told on a clean stop: the liveness and leadership leases are revoked, not left to expire.
    let (gc_stop, gc_stopped) = watch::channel(false);
    let lease_tasks = [
        tokio::spawn(ipam_gc::liveness(
            store.clone(),
            opts.node.clone(),
            opts.gc.lease_ttl,
            gc_stopped.clone(),
        )),
        tokio::spawn(ipam_gc::collector(
            Ipam::new(store.clone()),
            opts.node.clone(),
            opts.gc,
            opts.metrics.clone(),
            gc_stopped,
        )),
    ];
    let (model_tx, model_rx) = watch::channel::<Option<Arc<Model>>>(None);
    let wireguard_task = tokio::spawn(crate::wireguard::keeper::run(
        store.clone(),
        opts.node.clone(),
        opts.route_protocol,
        crate::wireguard::keeper::Feeds {
            states: ds_rx.clone(),
            models: model_rx,
        },
        health.clone(),
        opts.metrics.clone(),
        opts.resync,
    ));
    let policy_task = opts.policy.map(|requests| {
        tokio::spawn(policy::run(
            store.clone(),
            opts.node.clone(),
            crate::policy::PolicyKeeper::new(crate::nat::Nft::new()),
            requests,
            health.clone(),
            opts.metrics.clone(),
        ))
    });
    let gc_tasks = [tokio::spawn(ipam_gc::local_gc(
        Ipam::new(store.clone()),
        opts.node.clone(),
        opts.gc,
        opts.metrics.clone(),
    ))];
    let tunnel_task = tokio::spawn(tunnel_loop(
        Tunnels::new(Ipam::new(store), &opts.node),
        ds_rx.clone(),
        health.clone(),
    ));

    // Shared with the dataplane and the WireGuard keeper, not copied for each of them.
    let mut last_model: Option<Arc<Model>> = None;
    let mut last_problems: Vec<String> = Vec::new();
    let mut last_error: Option<String> = None;
    let mut remote_complete = false;
    let mut last_settings: Option<crate::settings::Settings> = None;
    let mut last_mtu_input: Option<(String, u32, Option<u32>)> = None;
    // The changes of each view last taken (see ChangeLog), and whether the dataplane has
    // changes beyond `last_model`.
    let (mut ds_seen, mut bgp_seen) = (0u64, 0u64);
    let mut model_behind = false;
    // Without bgpd: IPAM's remote routes, kept change by change.
    let mut ipam: Option<IpamRoutes> = None;
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            r = ds_rx.changed() => if r.is_err() { break },
            r = bgp_rx.changed() => if r.is_err() { break },
        }
        let woke = std::time::Instant::now();
        // Everything taken from the two views is computed while they are borrowed: a copy of
        // the cluster state and of bgpd's table per change was O(N) per Node change (issue 12).
        let step = {
            let state_ref = ds_rx.borrow_and_update();
            let bgp = bgp_rx.borrow_and_update();
            let Some(state) = state_ref.as_ref() else {
                continue;
            };
            let since = (state.changes.since(ds_seen), bgp.changes.since(bgp_seen));
            ds_seen = state.changes.seq();
            bgp_seen = bgp.changes.seq();
            // Without bgpd, another node's Node, block or pod changes only the routes that
            // depend on it (O(1), issue 12); anything else takes IPAM's routes whole again.
            // `None`: no such change to hand on (or its problems changed: the whole model
            // says them).
            let ipam_delta = match (with_bgpd, ipam.as_mut(), &since.0) {
                (true, _, _) => None,
                (false, Some(kept), Since::Keys(keys)) => {
                    let problems = kept.problems().to_vec();
                    let delta = kept.apply(state, keys);
                    (kept.problems() == problems).then_some(delta)
                }
                (false, _, _) => {
                    ipam = Some(IpamRoutes::new(state));
                    None
                }
            };
            if cfg!(debug_assertions)
                && let Some(kept) = &ipam
            {
                let (routes, problems) = ipam_routes::remote_routes(state);
                assert!(
                    *kept.routes() == routes && kept.problems() == problems,
                    "IPAM's routes kept change by change differ from the whole computation"
                );
            }
            let problems_ipam = ipam
                .as_ref()
                .map_or_else(Vec::new, |k| k.problems().to_vec());
            let (settings, problems_cfg) = crate::settings::merge(
                state.felix_configs.get(crate::settings::GLOBAL),
                state
                    .felix_configs
                    .get(&crate::settings::node_config_name(&opts.node)),
                &opts.pinned,
            );
            // Another Node's change, a learned route's or (without bgpd) the routes IPAM's
            // change moved are handed on as those changes alone (O(1), issue 12); anything
            // else, or a view too far behind, builds the whole model. WireGuard's keeper (it
            // reads the model's routes) takes the whole model each time.
            let wireguard = [&settings.wireguard, &settings.wireguard_v6]
                .iter()
                .any(|c| c.as_ref().is_ok_and(|c| c.enabled));
            let incremental = (with_bgpd || ipam_delta.is_some())
                && !wireguard
                && last_model.is_some()
                && last_error.is_none();
            let assembled =
                match since {
                    (Since::Keys(keys), Since::Keys(prefixes)) if incremental => {
                        let nodes = keys.into_iter().filter_map(|k| match k {
                            Changed::Node(node) if node != opts.node => Some(node),
                            _ => None,
                        });
                        let vteps = nodes.map(|node| {
                            let vteps = state
                                .nodes
                                .get(&node)
                                .map(|spec| state::node_vteps(&node, spec))
                                .unwrap_or_default();
                            ModelChange::Vteps { node, vteps }
                        });
                        let learned = prefixes.into_iter().map(|prefix| ModelChange::Route {
                            prefix,
                            route: bgp
                                .routes
                                .get(&prefix)
                                .and_then(|hops| state::remote_route(prefix, hops)),
                        });
                        let from_ipam = ipam_delta.into_iter().flatten().map(|(prefix, via)| {
                            ModelChange::Route {
                                prefix,
                                route: via.and_then(|via| state::remote_route(prefix, &[via])),
                            }
                        });
                        Err(vteps.chain(learned).chain(from_ipam).collect())
                    }
                    _ => Ok(match &ipam {
                        Some(kept) => {
                            let routes: BTreeMap<IpNet, Vec<std::net::IpAddr>> = kept
                                .routes()
                                .iter()
                                .map(|(p, via)| (*p, vec![*via]))
                                .collect();
                            assemble(state, &routes)
                        }
                        None => assemble(state, &bgp.routes),
                    }),
                };
            let remote_routes = ipam.as_ref().map_or(bgp.routes.len(), |k| k.routes().len());
            Step {
                assembled,
                problems_ipam,
                problems_cfg,
                settings,
                bgp_connected: bgp.connected,
                bgp_synced: bgp.synced,
                remote_routes,
                first_state: last_model.is_none().then(|| state.clone()),
            }
        };
        let Step {
            assembled,
            mut problems_ipam,
            mut problems_cfg,
            settings,
            bgp_connected,
            bgp_synced,
            remote_routes,
            first_state,
        } = step;
        let table_done =
            |done: &mut bool| remote_table_done(agent, done, with_bgpd, bgp_synced, remote_routes);
        health.clear_reason(R_DATASTORE);
        if bgp_connected || bgp_synced {
            health.clear_reason(R_BGPD);
        }
        if last_settings.as_ref() != Some(&settings) {
            info!(?settings, "FelixConfiguration applied");
            agent.set_resync_interval(settings.route_refresh);
            opts.settings_out.send_replace(Some(settings.clone()));
            last_settings = Some(settings.clone());
        }
        problems_ipam.append(&mut problems_cfg);
        let assembled = match assembled {
            Ok(whole) => whole,
            Err(changes) => {
                // Nothing this node originates, its tunnels or its settings depend on changed.
                if !changes.is_empty() {
                    let n = changes.len();
                    agent.apply(changes);
                    model_behind = true;
                    tracing::debug!(target: "route_path", elapsed_us = woke.elapsed().as_micros() as u64, changes = n, "felix: changes handed to the dataplane");
                }
                table_done(&mut remote_complete);
                continue;
            }
        };
        let (model, problems) = match assembled {
            Ok(v) => v,
            Err(e) => {
                let text = e.to_string();
                if last_error.as_deref() != Some(&text) {
                    warn!("{text}; waiting");
                    last_error = Some(text.clone());
                }
                health.set_reason(R_NODE, text);
                continue;
            }
        };
        last_error = None;
        health.clear_reason(R_NODE);
        let mut problems = problems;
        problems.append(&mut problems_ipam);
        let mut model = model;
        model.settings = settings.dataplane.clone();
        if problems != last_problems {
            for p in &problems {
                warn!(problem = %p, "input left out");
            }
            last_problems = problems;
        }
        // bgpd originates this node's affine blocks and borrowed /32s as soon as the datastore
        // is known; the set does not depend on the routes bgpd learned (nor on other nodes:
        // it is computed alone, not by a whole desired state per change).
        // First, before anything slower (the pod MTU's interface dump, the orphan sweep, the
        // dataplane): bgpd holds End-of-RIB until it has this set, and the peers keep this
        // node's stale blocks only until that End-of-RIB.
        let originate = desired::originate(&model);
        orig_tx.send_if_modified(|cur| {
            if cur.as_ref() == Some(&originate) {
                false
            } else {
                *cur = Some(originate);
                true
            }
        });
        if let Some(slot) = &opts.pod_mtu {
            // WireGuard's devices count as encapsulations (Calico's determinePodMTU).
            let (wg_overhead, wg_cap) = crate::settings::wireguard_mtu_limits(&settings);
            let (vxlan, ipip, vxlan_v6) = desired::tunnel_devices(&model);
            let overhead = crate::settings::encap_overhead(vxlan, ipip, vxlan_v6).max(wg_overhead);
            let input = (settings.mtu_iface_pattern.clone(), overhead, wg_cap);
            if last_mtu_input.as_ref() != Some(&input) {
                let mtu = detect_pod_mtu(input.0.clone(), overhead)
                    .await
                    .map(|m| wg_cap.map_or(m, |c| m.min(c)));
                info!(?mtu, pattern = %input.0, overhead, "pod MTU detected from the host's interfaces");
                slot.store(mtu.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
                last_mtu_input = Some(input);
            }
        }
        // natOutgoing rides in the model's pools: the reconciler derives the nftables table
        // from them (crate::nat) on the same update.
        if model_behind || last_model.as_deref() != Some(&model) {
            model_behind = false;
            if let Some(state) = &first_state {
                sweep_orphans(state).await;
                info!(
                    endpoints = model.endpoints.len(),
                    blocks = model.affine_blocks.len(),
                    remote_routes = model.remote_routes.len(),
                    bgpd_synced = bgp_synced,
                    "datastore synced; programming the dataplane"
                );
            }
            let model = Arc::new(model);
            agent.update(model.clone());
            tracing::debug!(target: "route_path", elapsed_us = woke.elapsed().as_micros() as u64, remote_routes = model.remote_routes.len(), "felix: model handed to the dataplane");
            model_tx.send_replace(Some(model.clone()));
            last_model = Some(model);
        }
        table_done(&mut remote_complete);
    }
    ds_task.abort();
    bgp_task.abort();
    // The policy table stays as it is: it keeps enforcing while felix is away.
    if let Some(t) = policy_task {
        t.abort();
    }
    tunnel_task.abort();
    wireguard_task.abort();
    probe_task.abort();
    for t in gc_tasks {
        t.abort();
    }
    // Revoking is bounded inside each task (etcd may be unreachable as felix stops).
    let _ = gc_stop.send(true);
    for t in lease_tasks {
        let _ = tokio::time::timeout(Duration::from_secs(3), t).await;
    }
}
