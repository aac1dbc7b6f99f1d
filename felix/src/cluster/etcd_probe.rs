//! etcd's reachability in felix's readiness: [`margay_datastore::probe`] puts "etcd
//! unreachable" there while etcd is down and clears it when etcd is back.
//!
//! The watches reconnect by themselves and the dataplane keeps the model it last had, so an
//! outage is otherwise silent; the probe makes it visible (`/readiness`, CNI STATUS) and lets
//! ADD and DEL answer "try again later" at once instead of waiting for etcd.

use std::sync::Arc;

use margay_datastore::Store;

use crate::health::Health;

/// The readiness key the probe sets.
pub const R_ETCD: &str = "etcd";

/// Probes `store` until the task is dropped; `endpoints` name etcd in the reason.
pub async fn run(store: Store, endpoints: String, health: Arc<Health>) {
    margay_datastore::probe::run(store, endpoints, |down| match down {
        Some(reason) => health.set_reason(
            R_ETCD,
            format!("{reason}; the dataplane keeps what it knows"),
        ),
        None => health.clear_reason(R_ETCD),
    })
    .await
}
