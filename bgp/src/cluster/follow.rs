//! The datastore edge of cluster mode: registering this node, reading the model, and following
//! it with watches that survive compaction and etcd restarts.

use super::incremental::Planner;
use super::peerings::Model;
use crate::config::Config;
use crate::speaker::SpeakerHandle;
use margay_datastore::resources::{
    AsNumber, BgpConfigurationSpec, BgpFilterSpec, BgpPeerSpec, IpPoolSpec, NodeSpec, Resource,
    Spec,
};
use margay_datastore::{Store, StoreError, WatchEvent};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;
use tracing::{info, warn};

/// Changes arriving within this window are applied together.
const SETTLE: Duration = Duration::from_millis(20);

/// How often the peerings are recomputed without a datastore change, so that a password in a
/// mounted Secret that changed reaches its session (the files are read, not watched).
pub const SECRET_POLL: Duration = Duration::from_secs(5);

/// Writes this node's BGP address (and AS, when given) into its Node resource, creating it if
/// needed; other fields are left as they are.
pub async fn register(
    store: &Store,
    node: &str,
    ipv4: Option<ipnet::IpNet>,
    ipv6: Option<ipnet::IpNet>,
    asn: Option<u32>,
) -> Result<(), StoreError> {
    store
        .modify::<NodeSpec>(node, |n| {
            let bgp = n.spec.bgp.get_or_insert_with(Default::default);
            if let Some(a) = ipv4 {
                bgp.ipv4_address = Some(a.to_string());
            }
            if let Some(a) = ipv6 {
                bgp.ipv6_address = Some(a.to_string());
            }
            if let Some(a) = asn {
                bgp.as_number = Some(AsNumber(a));
            }
        })
        .await?;
    info!(node, ipv4 = ?ipv4, ipv6 = ?ipv6, asn = ?asn, "registered this node's BGP address");
    Ok(())
}

/// The revision each kind was listed at; watches start after it.
#[derive(Debug, Clone, Copy)]
pub struct Revisions {
    pub nodes: i64,
    pub peers: i64,
    pub bgp: i64,
    pub filters: i64,
    pub pools: i64,
}

/// The resources by name; each one's fields that bgpd does not act on are logged, once per
/// process (the field registry's rule: no field is silently ignored).
fn by_name<S: Spec>(items: Vec<Resource<S>>) -> BTreeMap<String, Resource<S>> {
    items
        .into_iter()
        .map(|r| {
            r.log_not_acted_once();
            (r.metadata.name.clone(), r)
        })
        .collect()
}

fn default_bgp(items: Vec<Resource<BgpConfigurationSpec>>) -> Option<BgpConfigurationSpec> {
    items
        .into_iter()
        .find(|c| c.metadata.name == "default")
        .map(|c| c.spec)
}

/// Lists everything bgpd follows.
pub async fn load(store: &Store) -> Result<(Model, Revisions), StoreError> {
    let (nodes, n) = store.list::<NodeSpec>().await?;
    let (peers, p) = store.list::<BgpPeerSpec>().await?;
    let (configs, b) = store.list::<BgpConfigurationSpec>().await?;
    let (filters, f) = store.list::<BgpFilterSpec>().await?;
    let (pools, i) = store.list::<IpPoolSpec>().await?;
    for c in &configs {
        c.log_not_acted_once();
    }
    let model = Model {
        nodes: by_name(nodes),
        peers: by_name(peers),
        bgp: default_bgp(configs),
        filters: by_name(filters),
        pools: by_name(pools),
    };
    Ok((
        model,
        Revisions {
            nodes: n,
            peers: p,
            bgp: b,
            filters: f,
            pools: i,
        },
    ))
}

fn apply<S: Spec>(map: &mut BTreeMap<String, Resource<S>>, ev: WatchEvent<Resource<S>>) {
    match ev {
        WatchEvent::Put(r) => {
            r.log_not_acted_once();
            map.insert(r.metadata.name.clone(), r);
        }
        WatchEvent::Delete { name, .. } => {
            map.remove(&name);
        }
        WatchEvent::Resync { items, .. } => *map = by_name(items),
    }
}

/// A BGPConfiguration event: only `default` is the cluster's (the others are logged for their
/// unacted fields and otherwise left alone).
fn apply_default(
    bgp: &mut Option<BgpConfigurationSpec>,
    ev: WatchEvent<Resource<BgpConfigurationSpec>>,
) {
    match ev {
        WatchEvent::Put(r) => {
            r.log_not_acted_once();
            if r.metadata.name == "default" {
                *bgp = Some(r.spec);
            }
        }
        WatchEvent::Delete { name, .. } if name == "default" => *bgp = None,
        WatchEvent::Delete { .. } => {}
        WatchEvent::Resync { items, .. } => {
            for r in &items {
                r.log_not_acted_once();
            }
            *bgp = default_bgp(items);
        }
    }
}

/// A Node event, for the planner: only that node's sessions are planned again.
fn apply_node(planner: &mut Planner, ev: WatchEvent<Resource<NodeSpec>>) {
    match ev {
        WatchEvent::Put(r) => {
            r.log_not_acted_once();
            let name = r.metadata.name.clone();
            planner.set_node(&name, Some(r));
        }
        WatchEvent::Delete { name, .. } => planner.set_node(&name, None),
        WatchEvent::Resync { items, .. } => planner.edit().nodes = by_name(items),
    }
}

/// Whether a password comes from a mounted Secret (read from a file, not watched).
fn mounted_passwords(model: &Model) -> bool {
    let bgp = model
        .bgp
        .as_ref()
        .and_then(|b| b.node_mesh_password.as_ref());
    bgp.into_iter()
        .chain(
            model
                .peers
                .values()
                .filter_map(|p| p.spec.password.as_ref()),
        )
        .any(|p| p.value.is_none() && p.secret_key_ref.is_some())
}

/// Follows the model until `shutdown` resolves, reloading the speaker whenever this node's
/// peerings or policy change (and every [`SECRET_POLL`] while a password comes from a mounted
/// Secret). `planner` made the configuration the speaker runs now (its notes were logged);
/// `bound` is the listener the speaker has. A Node event replans only that node's sessions
/// and tells the speaker only the neighbours that changed ([`Planner`]); anything else
/// replans in full.
pub async fn follow(
    store: Store,
    speaker: SpeakerHandle,
    mut planner: Planner,
    revs: Revisions,
    bound: (IpAddr, u16),
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut nodes = store.watch::<NodeSpec>(revs.nodes + 1);
    let mut peers = store.watch::<BgpPeerSpec>(revs.peers + 1);
    let mut configs = store.watch::<BgpConfigurationSpec>(revs.bgp + 1);
    let mut filters = store.watch::<BgpFilterSpec>(revs.filters + 1);
    let mut pools = store.watch::<IpPoolSpec>(revs.pools + 1);
    tokio::pin!(shutdown);
    let mut last_problem: Option<String> = None;
    let mut warned_listen = None;
    let mut poll = tokio::time::interval(SECRET_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    poll.reset();
    loop {
        // Wait for one change, then take whatever else arrives within SETTLE.
        let mut changed = false;
        let settle = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(settle);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                ev = nodes.next() => { apply_node(&mut planner, ev); }
                ev = peers.next() => { apply(&mut planner.edit().peers, ev); }
                ev = filters.next() => { apply(&mut planner.edit().filters, ev); }
                ev = pools.next() => { apply(&mut planner.edit().pools, ev); }
                ev = configs.next() => { apply_default(&mut planner.edit().bgp, ev); }
                _ = &mut settle, if changed => break,
                _ = poll.tick(), if !changed => {
                    if !mounted_passwords(planner.model()) {
                        continue;
                    }
                    planner.replan_all();
                    break;
                }
            }
            if !changed {
                changed = true;
                settle.as_mut().reset(tokio::time::Instant::now() + SETTLE);
            }
        }
        let delta = match planner.replan() {
            Ok(d) => d,
            Err(e) => {
                let text = e.to_string();
                if last_problem.as_deref() != Some(&text) {
                    warn!("keeping the current sessions: {text}");
                    last_problem = Some(text);
                }
                continue;
            }
        };
        for n in &delta.new_notes {
            warn!("{n}");
        }
        if delta.is_empty() {
            continue;
        }
        last_problem = None;
        if delta.head_changed {
            let Some(c) = planner.config() else { continue };
            if (c.listen_address, c.listen_port) != bound
                && warned_listen != Some((c.listen_address, c.listen_port))
            {
                warned_listen = Some((c.listen_address, c.listen_port));
                warn!(
                    listening = %format!("{}:{}", bound.0, bound.1),
                    wanted = %format!("{}:{}", c.listen_address, c.listen_port),
                    "BGPConfiguration listenPort or bindMode changed: bgpd keeps its listener until it restarts"
                );
            }
            if !reload_all(&speaker, c).await {
                return;
            }
            continue;
        }
        match speaker.reload_neighbors(delta.changed, delta.removed).await {
            Ok(s) => {
                info!(added = ?s.added, removed = ?s.removed, restarted = ?s.restarted, "peerings follow the datastore")
            }
            Err(e) => {
                warn!("{e}");
                return;
            }
        }
    }
}

/// Hands the speaker a whole new configuration; false when the speaker is gone.
async fn reload_all(speaker: &SpeakerHandle, config: Config) -> bool {
    match speaker.reload(config).await {
        Ok(s) => {
            info!(added = ?s.added, removed = ?s.removed, restarted = ?s.restarted, unchanged = s.unchanged, "peerings follow the datastore");
            true
        }
        Err(e) => {
            warn!("{e}");
            false
        }
    }
}
