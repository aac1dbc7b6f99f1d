//! IPAM that needs no janitor, felix's side: three tasks of cluster mode.
//!
//! - [`liveness`]: keeps this node's liveness key on an etcd lease ([`margay_datastore::liveness`]);
//!   a lost lease is granted again and the key written again.
//! - [`local_gc`]: every interval, a pass of the [`LocalCollector`]: this node's pod handles
//!   with no WorkloadEndpoint and no veth (the host side named as ADD names it), or whose
//!   endpoint's veth and network namespace are both gone (a DEL that never came), for the leak
//!   grace period are released, the stale endpoint with them; counted in `margay_felix_ipam_released_addresses{reason="leaked"}`.
//! - [`collector`]: campaigns for the one cluster-wide collector; while elected, runs a
//!   [`ClusterCollector`] pass every interval (deleted nodes, silent nodes, empty blocks).
//!   Leadership rides on its own lease: when this felix dies, the next one in line takes over
//!   once that lease expires.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use margay_datastore::Store;
use margay_datastore::ipam::{Allocation, ClusterCollector, Ipam, LocalCollector, NodeProbe};
use margay_datastore::liveness::{self, COLLECTOR_ELECTION, Lease};
use margay_datastore::resources::WorkloadEndpoint;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::endpoints::naming;
use crate::endpoints::ops::ANN_NETNS;
use crate::health::Metrics;
use crate::netlink::Dataplane;

/// How the collectors run.
#[derive(Debug, Clone, Copy)]
pub struct GcTiming {
    /// Between two passes of either collector.
    pub interval: Duration,
    /// TTL of the liveness and leadership leases.
    pub lease_ttl: Duration,
}

impl Default for GcTiming {
    fn default() -> Self {
        GcTiming {
            interval: Duration::from_secs(60),
            lease_ttl: Duration::from_secs(30),
        }
    }
}

/// The hash part of the host-side veth an allocation's pod would have (the name less its
/// `interfacePrefix`), as ADD names it: from the pod's namespace and name attributes, else
/// from the container id the handle ends with.
pub fn host_ifname_hash_of(a: &Allocation) -> String {
    let pod = naming::pod_of(
        a.attrs.get("namespace").map(String::as_str).unwrap_or(""),
        a.attrs.get("pod").map(String::as_str).unwrap_or(""),
    );
    let container = a
        .handle_id
        .rsplit_once('.')
        .map(|(_, c)| c)
        .unwrap_or(&a.handle_id);
    naming::host_ifname_hash(pod.as_ref(), container)
}

/// Whether a link named `name` is the veth of an allocation with hash `hash`, whatever
/// `interfacePrefix` named it (a prefix change leaves the older pods' veths as they were).
fn veth_has_hash(name: &str, hash: &str) -> bool {
    name.len() > hash.len() && name.ends_with(hash)
}

/// The node's kernel as the collector sees it: link names, and network namespace files.
struct Kernel {
    links: BTreeSet<String>,
}

impl NodeProbe for Kernel {
    fn allocation_live(&self, a: &Allocation) -> bool {
        let hash = host_ifname_hash_of(a);
        self.links.iter().any(|l| veth_has_hash(l, &hash))
    }

    /// A pod is gone when its veth is gone and so is its network namespace (when ADD
    /// recorded one): a veth alone could be in the middle of being replaced.
    fn endpoint_live(&self, e: &WorkloadEndpoint) -> bool {
        if self.links.contains(&e.spec.interface_name) {
            return true;
        }
        match e.metadata.annotations.get(ANN_NETNS) {
            Some(path) if !path.is_empty() => std::path::Path::new(path).exists(),
            _ => false,
        }
    }
}

/// Names of the links in felix's namespace.
async fn link_names() -> Option<BTreeSet<String>> {
    let r = tokio::task::spawn_blocking(|| Dataplane::new().and_then(|mut d| d.links())).await;
    match r {
        Ok(Ok(links)) => Some(links.into_iter().map(|l| l.name).collect()),
        Ok(Err(e)) => {
            warn!(error = %e, "IPAM leak collection: listing links failed; skipping this pass");
            None
        }
        Err(_) => None,
    }
}

/// Resolves once felix is stopping cleanly (`stop` turned true, or its sender dropped).
async fn stopping(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Revokes `lease` on a clean stop, bounded: etcd may be unreachable as felix stops (then the
/// lease expires after its TTL, as after a crash).
async fn revoke(store: &Store, lease: Lease, what: &str) {
    match tokio::time::timeout(Duration::from_secs(2), lease.revoke(store)).await {
        Ok(Ok(())) => info!("{what}: lease revoked on a clean stop"),
        Ok(Err(e)) => {
            warn!(error = %e, "{what}: revoking the lease failed; it expires after its TTL")
        }
        Err(_) => warn!("{what}: revoking the lease timed out; it expires after its TTL"),
    }
}

/// Keeps `node`'s liveness key alive for as long as felix runs; on a clean stop (`stop`),
/// revokes the lease, so the key goes at once instead of after the TTL. That does not make a
/// restarting node look gone: its Node resource stays, and a node with a Node is released only
/// after the node grace period without liveness (default 1 h); felix announces again within
/// seconds of starting.
pub async fn liveness(store: Store, node: String, ttl: Duration, mut stop: watch::Receiver<bool>) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let lease = tokio::select! {
            l = Lease::grant(&store, ttl) => l,
            _ = stopping(&mut stop) => return,
        };
        let lease = match lease {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, "liveness lease: grant failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        if let Err(e) = liveness::announce(&store, &node, &lease).await {
            warn!(error = %e, "liveness key: write failed; retrying");
            tokio::time::sleep(backoff).await;
            continue;
        }
        backoff = Duration::from_millis(200);
        info!(
            node,
            lease = lease.id(),
            ttl_s = ttl.as_secs(),
            "liveness lease held"
        );
        tokio::select! {
            _ = lease.lost() => {}
            _ = stopping(&mut stop) => {
                revoke(&store, lease, "liveness").await;
                return;
            }
        }
        warn!(
            node,
            "liveness lease expired (etcd unreachable too long); taking a new one"
        );
    }
}

/// This node's leak collector.
pub async fn local_gc(ipam: Ipam, node: String, timing: GcTiming, metrics: Arc<Metrics>) {
    let mut c = LocalCollector::new(&node);
    loop {
        tokio::time::sleep(timing.interval).await;
        let Some(links) = link_names().await else {
            continue;
        };
        let probe = Kernel { links };
        match c.pass(&ipam, &probe, SystemTime::now()).await {
            Ok(released) => {
                let n: usize = released.iter().map(|(_, ips)| ips.len()).sum();
                if n > 0 {
                    metrics.released("leaked", n);
                }
            }
            Err(e) => warn!(error = %e, "IPAM leak collection pass failed"),
        }
    }
}

/// Campaigns for the cluster-wide collector and runs it while elected; on a clean stop
/// (`stop`) revokes its leadership lease, so the next one in line takes over at once.
pub async fn collector(
    ipam: Ipam,
    node: String,
    timing: GcTiming,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let store = ipam.store().clone();
    loop {
        if *stop.borrow() {
            return;
        }
        let lease = match Lease::grant(&store, timing.lease_ttl).await {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, "IPAM collector: lease grant failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let campaign = liveness::campaign(&store, COLLECTOR_ELECTION, &node, &lease);
        let elected = tokio::select! {
            r = campaign => r,
            _ = lease.lost() => continue,
            _ = stopping(&mut stop) => {
                revoke(&store, lease, "IPAM collector campaign").await;
                return;
            }
        };
        if let Err(e) = elected {
            warn!(error = %e, "IPAM collector: campaign failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        info!(node, "elected the cluster-wide IPAM collector");
        metrics.ipam_collector_elected.set(1);
        let mut c = ClusterCollector::new();
        loop {
            match c.pass(&ipam, SystemTime::now()).await {
                Ok(p) => {
                    let deleted: usize =
                        p.deleted_nodes.iter().map(|(_, r)| r.addresses.len()).sum();
                    let silent: usize = p.silent_nodes.iter().map(|(_, r)| r.addresses.len()).sum();
                    if deleted > 0 {
                        metrics.released("deleted_node", deleted);
                    }
                    if silent > 0 {
                        metrics.released("silent_node", silent);
                    }
                    metrics
                        .ipam_empty_blocks_released
                        .inc_by(p.empty_blocks.len() as u64);
                }
                Err(e) => warn!(error = %e, "IPAM collector pass failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(timing.interval) => {}
                _ = lease.lost() => break,
                _ = stopping(&mut stop) => {
                    metrics.ipam_collector_elected.set(0);
                    revoke(&store, lease, "IPAM collector").await;
                    return;
                }
            }
        }
        metrics.ipam_collector_elected.set(0);
        warn!(
            node,
            "lost the IPAM collector's leadership; campaigning again"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_allocations_veth_is_named_as_add_names_it() {
        let mut a = Allocation {
            handle_id: "k8s-pod-network.abc123".into(),
            attrs: Default::default(),
        };
        assert_eq!(
            format!("cali{}", host_ifname_hash_of(&a)),
            naming::host_ifname("cali", None, "abc123")
        );
        a.attrs.insert("namespace".into(), "default".into());
        a.attrs.insert("pod".into(), "web".into());
        let pod = ("default".to_string(), "web".to_string());
        let hash = host_ifname_hash_of(&a);
        // Any interfacePrefix: a veth ADD named with "tap" is the pod's too.
        assert!(veth_has_hash(
            &naming::host_ifname("tap", Some(&pod), "abc123"),
            &hash
        ));
        assert!(veth_has_hash(
            &naming::host_ifname("cali", Some(&pod), "abc123"),
            &hash
        ));
        assert!(!veth_has_hash(
            &naming::host_ifname("cali", None, "abc123"),
            &hash
        ));
        assert!(!veth_has_hash(&hash, &hash));
    }
}
