//! Node liveness and the one cluster-wide IPAM collector, both on etcd leases.
//!
//! - Each felix holds a lease and keeps `/margay/ipam/v1/liveness/<node>` attached to it: the key
//!   vanishes when felix stops renewing (dead, or cut off from etcd) for the lease's TTL. It also
//!   writes `/margay/ipam/v1/nodes-seen/<node>` (no lease) once, so the collector can tell a node
//!   that went silent from one that never ran felix (the lab's simulated nodes).
//! - The collector is elected with etcd's election API (`campaign` on
//!   [`COLLECTOR_ELECTION`]): exactly one campaigner holds the leadership key at a time, and
//!   when its lease expires the next one in line takes over. A collector cut off from etcd
//!   learns that it lost the lease only when a renewal is answered again; until then its passes
//!   fail (etcd unreachable), and a pass racing the new collector's is harmless: every release
//!   is a compare-and-swap that finds the work already done.

use std::collections::BTreeSet;
use std::time::Duration;

use etcd_client::{LeaderKey, PutOptions, Txn, TxnOp};
use tokio::sync::watch;

use crate::store::{Store, StoreError};

/// Prefix of the leased liveness keys.
pub const LIVENESS: &str = "/margay/ipam/v1/liveness/";
/// Prefix of the markers of nodes that ever ran felix.
pub const NODES_SEEN: &str = "/margay/ipam/v1/nodes-seen/";
/// The election of the cluster-wide IPAM collector.
pub const COLLECTOR_ELECTION: &str = "/margay/election/ipam-collector";

/// A granted lease, renewed by a background task until dropped (or revoked).
pub struct Lease {
    id: i64,
    lost: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Lease {
    /// Grants a lease of `ttl` and keeps it alive (renewed every third of the TTL). If a
    /// renewal finds it expired, [`Lease::lost`] turns true and renewing stops.
    pub async fn grant(store: &Store, ttl: Duration) -> Result<Lease, StoreError> {
        let ttl_s = ttl.as_secs().max(1) as i64;
        let mut client = store.client();
        let id = client.lease_grant(ttl_s, None).await?.id();
        let (tx, lost) = watch::channel(false);
        let period = Duration::from_millis((ttl_s as u64 * 1000 / 3).max(300));
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                match client.lease_keep_alive(id).await {
                    Ok((mut keeper, mut stream)) => {
                        let renewed = async {
                            keeper.keep_alive().await?;
                            stream.message().await
                        };
                        match tokio::time::timeout(period, renewed).await {
                            Ok(Ok(Some(r))) if r.ttl() <= 0 => {
                                let _ = tx.send(true);
                                return;
                            }
                            // Renewed; or etcd slow / unreachable: try again next period.
                            _ => {}
                        }
                    }
                    Err(e) => tracing::debug!(lease = id, error = %e, "lease keep-alive"),
                }
            }
        });
        Ok(Lease { id, lost, task })
    }

    /// The lease id.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// Whether a renewal found the lease expired.
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Resolves when the lease is found expired.
    pub async fn lost(&self) {
        let mut rx = self.lost.clone();
        let _ = rx.wait_for(|l| *l).await;
    }

    /// Revokes the lease: its keys go at once (a clean shutdown, or a test killing a node).
    pub async fn revoke(self, store: &Store) -> Result<(), StoreError> {
        self.task.abort();
        store.client().lease_revoke(self.id).await?;
        Ok(())
    }
}

/// Announces `node` alive: its seen-marker, and its liveness key on `lease`, in one
/// transaction (a collector never sees the marker without the key of a node starting).
pub async fn announce(store: &Store, node: &str, lease: &Lease) -> Result<(), StoreError> {
    let ops = [
        TxnOp::put(format!("{NODES_SEEN}{node}"), "1", None),
        TxnOp::put(
            format!("{LIVENESS}{node}"),
            "1",
            Some(PutOptions::new().with_lease(lease.id())),
        ),
    ];
    store.client().txn(Txn::new().and_then(ops)).await?;
    Ok(())
}

fn names_under(items: Vec<crate::Versioned<Vec<u8>>>, prefix: &str) -> BTreeSet<String> {
    items
        .into_iter()
        .filter_map(|v| v.key.strip_prefix(prefix).map(str::to_string))
        .collect()
}

/// Nodes whose liveness key exists now.
pub async fn live_nodes(store: &Store) -> Result<BTreeSet<String>, StoreError> {
    Ok(names_under(store.list_raw(LIVENESS).await?.0, LIVENESS))
}

/// Nodes that ever announced themselves (and were not collected since).
pub async fn seen_nodes(store: &Store) -> Result<BTreeSet<String>, StoreError> {
    Ok(names_under(store.list_raw(NODES_SEEN).await?.0, NODES_SEEN))
}

/// Forgets that `node` ever ran (after the collector released what it held).
pub async fn forget_node(store: &Store, node: &str) -> Result<(), StoreError> {
    match store.delete_raw(&format!("{NODES_SEEN}{node}"), None).await {
        Ok(()) | Err(StoreError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Campaigns in `election` as `candidate` on `lease`; resolves once elected, with the
/// leadership key (deleted, and leadership lost, when the lease expires).
pub async fn campaign(
    store: &Store,
    election: &str,
    candidate: &str,
    lease: &Lease,
) -> Result<LeaderKey, StoreError> {
    let mut resp = store
        .client()
        .campaign(election, candidate, lease.id())
        .await?;
    resp.take_leader()
        .ok_or_else(|| StoreError::Config("etcd's campaign answered without a leader key".into()))
}

/// The current leader of `election` (its candidate value), if any.
pub async fn leader(store: &Store, election: &str) -> Result<Option<String>, StoreError> {
    match store.client().leader(election).await {
        Ok(r) => Ok(r
            .kv()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())),
        Err(etcd_client::Error::GRpcStatus(s)) if s.message().contains("no leader") => Ok(None),
        Err(e) => Err(e.into()),
    }
}
