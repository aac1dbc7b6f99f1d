//! The datastore feed: lists IPPools, Nodes, WorkloadEndpoints, BGPPeers (for `reachableBy`)
//! and this node's block affinities, then follows them with watches that survive compaction (a `Resync` replaces
//! the kind's state) and etcd restarts. Every settled batch of changes is published as a new
//! [`ClusterState`].
//!
//! Settling coalesces bursts (a pool edit, a node joining, a compaction resync), but a change
//! to one of this node's WorkloadEndpoints is published at once: a CNI ADD waits for the
//! reconciler to program the pod's host route, and the pod's start waits for the ADD.

use std::collections::BTreeMap;
use std::time::Duration;

use ipnet::IpNet;
use margay_datastore::ipam::Affinity;
use margay_datastore::ipam::records::{AFFINITIES, node_affinities};
use margay_datastore::resources::{
    BgpPeerSpec, FelixConfigurationSpec, IpPoolSpec, NodeSpec, Resource, Spec, WorkloadEndpointSpec,
};
use margay_datastore::{Store, StoreError, Versioned, WatchEvent};
use tokio::sync::watch;
use tracing::{debug, warn};

use super::state::{Changed, ClusterState, RemoteEndpoint};

/// Changes arriving within this window are published together.
const SETTLE: Duration = Duration::from_millis(20);

/// The revision each kind was listed at.
struct Revisions {
    nodes: i64,
    pools: i64,
    endpoints: i64,
    affinities: i64,
    peers: i64,
    felix: i64,
}

fn ep_key(r: &Resource<WorkloadEndpointSpec>) -> String {
    match &r.metadata.namespace {
        Some(ns) => format!("{ns}/{}", r.metadata.name),
        None => r.metadata.name.clone(),
    }
}

fn affinity_of(v: &Versioned<Vec<u8>>) -> Option<Affinity> {
    match serde_json::from_slice::<Affinity>(&v.value) {
        Ok(a) => Some(a),
        Err(e) => {
            warn!(key = %v.key, error = %e, "skipping an affinity record that does not decode");
            None
        }
    }
}

/// What felix follows of IPAM and of other nodes' pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// This node's block affinities and pods (bgpd brings the remote routes).
    Local,
    /// Also every node's block affinities and every pod's addresses: the remote routes come
    /// from IPAM (no bgpd).
    Cluster,
}

impl Scope {
    fn affinity_prefix(self, node: &str) -> String {
        match self {
            Scope::Local => node_affinities(node),
            Scope::Cluster => AFFINITIES.to_string(),
        }
    }
}

fn remote_endpoint(spec: &WorkloadEndpointSpec) -> RemoteEndpoint {
    RemoteEndpoint {
        node: spec.node.clone(),
        ips: spec
            .ip_networks
            .iter()
            .filter_map(|s| {
                s.parse::<IpNet>()
                    .map(|n| n.addr())
                    .ok()
                    .or_else(|| s.parse().ok())
            })
            .collect(),
    }
}

/// Lists everything felix follows.
async fn load(
    store: &Store,
    node: &str,
    scope: Scope,
) -> Result<(ClusterState, Revisions), StoreError> {
    let (nodes, n) = store.list::<NodeSpec>().await?;
    let (pools, p) = store.list::<IpPoolSpec>().await?;
    let (eps, e) = store.list::<WorkloadEndpointSpec>().await?;
    let (affs, a) = store.list_raw(&scope.affinity_prefix(node)).await?;
    let (peers, b) = store.list::<BgpPeerSpec>().await?;
    let (felix, f) = store.list::<FelixConfigurationSpec>().await?;
    let mut s = ClusterState::new(node);
    for r in felix {
        apply_felix(&mut s, WatchEvent::Put(r));
    }
    if let Some(me) = nodes.iter().find(|r| r.metadata.name == node) {
        s.labels = me.metadata.labels.clone();
    }
    s.wireguard_keys = wireguard_keys(&nodes, false);
    s.wireguard_keys_v6 = wireguard_keys(&nodes, true);
    s.nodes = nodes
        .into_iter()
        .map(|r| (r.metadata.name, r.spec))
        .collect();
    s.peers = peers
        .into_iter()
        .map(|r| (r.metadata.name, r.spec))
        .collect();
    s.pools = pools
        .into_iter()
        .inspect(|r| {
            r.log_not_acted_once();
        })
        .map(|r| (r.metadata.name, r.spec))
        .collect();
    if scope == Scope::Cluster {
        s.remote_endpoints = eps
            .iter()
            .filter(|r| r.spec.node != node)
            .map(|r| (ep_key(r), remote_endpoint(&r.spec)))
            .collect();
    }
    s.endpoints = eps
        .into_iter()
        .filter(|r| r.spec.node == node)
        .map(|r| (ep_key(&r), r.spec))
        .collect();
    set_affinities(&mut s, scope, &affs);
    Ok((
        s,
        Revisions {
            nodes: n,
            pools: p,
            endpoints: e,
            affinities: a,
            peers: b,
            felix: f,
        },
    ))
}

/// The published WireGuard key (of the IPv6 device when `v6`) of each Node that has one.
fn wireguard_keys(nodes: &[Resource<NodeSpec>], v6: bool) -> BTreeMap<String, String> {
    nodes
        .iter()
        .filter_map(|r| {
            crate::wireguard::keeper::published_key(r, v6).map(|k| (r.metadata.name.clone(), k))
        })
        .collect()
}

/// Applies one Node event, keeping this node's labels and every node's WireGuard key.
pub(super) fn apply_nodes(state: &mut ClusterState, ev: WatchEvent<Resource<NodeSpec>>) {
    for v6 in [false, true] {
        let keys = if v6 {
            &mut state.wireguard_keys_v6
        } else {
            &mut state.wireguard_keys
        };
        match &ev {
            WatchEvent::Put(r) => match crate::wireguard::keeper::published_key(r, v6) {
                Some(k) => {
                    keys.insert(r.metadata.name.clone(), k);
                }
                None => {
                    keys.remove(&r.metadata.name);
                }
            },
            WatchEvent::Delete { name, .. } => {
                keys.remove(name);
            }
            WatchEvent::Resync { items, .. } => *keys = wireguard_keys(items, v6),
        }
    }
    match &ev {
        WatchEvent::Put(r) if r.metadata.name != state.node => state
            .changes
            .changed(Changed::Node(r.metadata.name.clone())),
        WatchEvent::Delete { name, .. } if *name != state.node => {
            state.changes.changed(Changed::Node(name.clone()))
        }
        _ => state.changes.changed_all(),
    }
    match &ev {
        WatchEvent::Put(r) if r.metadata.name == state.node => {
            state.labels = r.metadata.labels.clone();
        }
        WatchEvent::Resync { items, .. } => {
            state.labels = items
                .iter()
                .find(|r| r.metadata.name == state.node)
                .map(|r| r.metadata.labels.clone())
                .unwrap_or_default();
        }
        _ => {}
    }
    apply_named(&mut state.nodes, ev);
}

/// Applies one FelixConfiguration event: only `default` and this node's `node.<name>` are
/// kept (each one's fields felix does not apply are logged once).
fn apply_felix(state: &mut ClusterState, ev: WatchEvent<Resource<FelixConfigurationSpec>>) {
    let mine = |name: &str| {
        name == crate::settings::GLOBAL || name == crate::settings::node_config_name(&state.node)
    };
    let ev = match ev {
        WatchEvent::Put(r) if !mine(&r.metadata.name) => return,
        WatchEvent::Resync { items, revision } => WatchEvent::Resync {
            items: items
                .into_iter()
                .filter(|r| mine(&r.metadata.name))
                .collect(),
            revision,
        },
        ev => ev,
    };
    apply_named(&mut state.felix_configs, ev);
}

/// Applies one event of a named kind; a field felix does not act on is logged once.
fn apply_named<S: Spec>(map: &mut BTreeMap<String, S>, ev: WatchEvent<Resource<S>>) {
    match ev {
        WatchEvent::Put(r) => {
            r.log_not_acted_once();
            map.insert(r.metadata.name, r.spec);
        }
        WatchEvent::Delete { name, .. } => {
            map.remove(&name);
        }
        WatchEvent::Resync { items, .. } => {
            *map = items
                .into_iter()
                .map(|r| (r.metadata.name, r.spec))
                .collect()
        }
    }
}

/// Applies one IPPool event (every route may depend on the pools: "everything" changed).
pub(super) fn apply_pools(state: &mut ClusterState, ev: WatchEvent<Resource<IpPoolSpec>>) {
    apply_named(&mut state.pools, ev);
    state.changes.changed_all();
}

/// Applies one endpoint event and records the change: this node's pods or a resync as
/// "everything", another node's pod by key when felix follows every node (nothing otherwise).
/// Returns whether this node's pods changed by a single Put or Delete (published without
/// settling) and whether the state changed at all.
pub(super) fn apply_endpoint_event(
    state: &mut ClusterState,
    scope: Scope,
    ev: WatchEvent<Resource<WorkloadEndpointSpec>>,
) -> (bool, bool) {
    let key = match &ev {
        WatchEvent::Put(r) => Some(ep_key(r)),
        WatchEvent::Delete { name, .. } => Some(name.clone()),
        WatchEvent::Resync { .. } => None,
    };
    let mine = apply_endpoints(state, scope, ev);
    match key {
        Some(_) if mine => state.changes.changed_all(),
        None => state.changes.changed_all(),
        Some(key) if scope == Scope::Cluster => state.changes.changed(Changed::Endpoint(key)),
        // Another node's pod changes nothing here unless felix follows every node.
        Some(_) => return (false, false),
    }
    (mine, true)
}

/// Applies one endpoint event; returns whether this node's endpoints changed by a single
/// Put or Delete (a resync settles like any other burst).
fn apply_endpoints(
    state: &mut ClusterState,
    scope: Scope,
    ev: WatchEvent<Resource<WorkloadEndpointSpec>>,
) -> bool {
    if scope == Scope::Cluster {
        apply_remote_endpoints(&mut state.remote_endpoints, &state.node, &ev);
    }
    let (map, node) = (&mut state.endpoints, state.node.as_str());
    match ev {
        WatchEvent::Put(r) => {
            let key = ep_key(&r);
            if r.spec.node == node {
                map.insert(key, r.spec);
                true
            } else {
                // Moved to another node (or never ours).
                map.remove(&key).is_some()
            }
        }
        WatchEvent::Delete { name, .. } => map.remove(&name).is_some(),
        WatchEvent::Resync { items, .. } => {
            *map = items
                .into_iter()
                .filter(|r| r.spec.node == node)
                .map(|r| (ep_key(&r), r.spec))
                .collect();
            false
        }
    }
}

/// Keeps other nodes' pods' addresses (the cluster scope).
fn apply_remote_endpoints(
    map: &mut BTreeMap<String, RemoteEndpoint>,
    node: &str,
    ev: &WatchEvent<Resource<WorkloadEndpointSpec>>,
) {
    match ev {
        WatchEvent::Put(r) if r.spec.node != node => {
            map.insert(ep_key(r), remote_endpoint(&r.spec));
        }
        WatchEvent::Put(r) => {
            map.remove(&ep_key(r));
        }
        WatchEvent::Delete { name, .. } => {
            map.remove(name);
        }
        WatchEvent::Resync { items, .. } => {
            *map = items
                .iter()
                .filter(|r| r.spec.node != node)
                .map(|r| (ep_key(r), remote_endpoint(&r.spec)))
                .collect();
        }
    }
}

/// Replaces the affinities with `items`: this node's, and in the cluster scope every node's.
fn set_affinities(state: &mut ClusterState, scope: Scope, items: &[Versioned<Vec<u8>>]) {
    state.affinities.clear();
    state.block_affinities.clear();
    for v in items {
        put_affinity(state, scope, v);
    }
}

fn put_affinity(state: &mut ClusterState, scope: Scope, v: &Versioned<Vec<u8>>) {
    let Some(a) = affinity_of(v) else {
        state.affinities.remove(&v.key);
        state.block_affinities.remove(&v.key);
        return;
    };
    if a.node == state.node {
        state.affinities.insert(v.key.clone(), a.cidr);
    } else {
        state.affinities.remove(&v.key);
    }
    if scope == Scope::Cluster {
        state.block_affinities.insert(v.key.clone(), a);
    }
}

/// Applies one affinity event and records the change: another node's affinity by key (the
/// cluster scope), this node's own (its blocks) or a resync as "everything".
pub(super) fn apply_affinities(
    state: &mut ClusterState,
    scope: Scope,
    ev: WatchEvent<Versioned<Vec<u8>>>,
) {
    let (key, was_mine) = match ev {
        WatchEvent::Put(v) => {
            let was_mine = state.affinities.contains_key(&v.key);
            put_affinity(state, scope, &v);
            (Some(v.key), was_mine)
        }
        WatchEvent::Delete { key, .. } => {
            state.block_affinities.remove(&key);
            let was_mine = state.affinities.remove(&key).is_some();
            (Some(key), was_mine)
        }
        WatchEvent::Resync { items, .. } => {
            set_affinities(state, scope, &items);
            (None, true)
        }
    };
    match key {
        Some(key)
            if scope == Scope::Cluster && !was_mine && !state.affinities.contains_key(&key) =>
        {
            state.changes.changed(Changed::Affinity(key))
        }
        _ => state.changes.changed_all(),
    }
}

/// Lists (retrying until etcd answers), publishes the first full state, then follows every
/// change until the receiver side is gone.
pub async fn follow(
    store: Store,
    node: String,
    scope: Scope,
    tx: watch::Sender<Option<ClusterState>>,
) {
    let mut backoff = Duration::from_millis(100);
    let (state, revs) = loop {
        match load(&store, &node, scope).await {
            Ok(v) => break v,
            Err(e) => {
                warn!(error = %e, "datastore: cannot list the model yet; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    };
    debug!(
        nodes = state.nodes.len(),
        pools = state.pools.len(),
        endpoints = state.endpoints.len(),
        blocks = state.affinities.len(),
        "datastore: first full sync"
    );
    if tx.send(Some(state)).is_err() {
        return;
    }
    let mut nodes = store.watch::<NodeSpec>(revs.nodes + 1);
    let mut pools = store.watch::<IpPoolSpec>(revs.pools + 1);
    let mut eps = store.watch::<WorkloadEndpointSpec>(revs.endpoints + 1);
    let mut affs = store.watch_raw(&scope.affinity_prefix(&node), revs.affinities + 1);
    let mut peers = store.watch::<BgpPeerSpec>(revs.peers + 1);
    let mut felix = store.watch::<FelixConfigurationSpec>(revs.felix + 1);
    // Each event is applied to the published state in place, without telling the receivers;
    // they hear once the burst has settled. A copy of the whole state per burst (and its
    // comparison with the last one) cost O(N) per Node change (issue 12).
    loop {
        let mut changed = false;
        let settle = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(settle);
        loop {
            // (this node's own pod: published at once; something changed: settle first)
            let (local, modified) = tokio::select! {
                ev = nodes.next() => (false, quietly(&tx, |s| apply_nodes(s, ev))),
                // (anything but another node's Node, block or pod is logged as "everything
                // changed")
                ev = peers.next() => (false, quietly(&tx, |s| {
                    apply_named(&mut s.peers, ev);
                    s.changes.changed_all();
                })),
                ev = felix.next() => (false, quietly(&tx, |s| {
                    apply_felix(s, ev);
                    s.changes.changed_all();
                })),
                ev = pools.next() => (false, quietly(&tx, |s| apply_pools(s, ev))),
                ev = eps.next() => {
                    let mut out = (false, false);
                    quietly(&tx, |s| out = apply_endpoint_event(s, scope, ev));
                    out
                }
                ev = affs.next() => (false, quietly(&tx, |s| apply_affinities(s, scope, ev))),
                _ = &mut settle, if changed => break,
                _ = tx.closed() => return,
            };
            if local {
                break;
            }
            if modified && !changed {
                changed = true;
                settle.as_mut().reset(tokio::time::Instant::now() + SETTLE);
            }
        }
        tx.send_modify(|_| {});
    }
}

/// Applies `f` to the published state without waking the receivers; true (it changed).
fn quietly(tx: &watch::Sender<Option<ClusterState>>, f: impl FnOnce(&mut ClusterState)) -> bool {
    tx.send_if_modified(|cur| {
        if let Some(s) = cur.as_mut() {
            f(s);
        }
        false
    });
    true
}
