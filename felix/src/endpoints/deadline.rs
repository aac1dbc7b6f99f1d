//! The time one ADD or DEL may spend on etcd, and taking back a failed ADD's etcd writes when
//! etcd has not answered within it.
//!
//! felix's etcd probe needs a few seconds to call etcd unreachable, and etcd's own request
//! timeout is 10 s: without a bound of its own, a request that arrives in between waits for
//! the latter. With it, the request answers UNAVAILABLE ("etcd unreachable", CNI code 11) after
//! [`ETCD_DEADLINE`]. A write that was sent may still land when etcd returns, so a timed-out
//! ADD leaves a task that holds the pod's lock and takes its writes back once etcd answers.

use std::future::Future;
use std::time::Duration;

use margay_datastore::StoreError;
use margay_datastore::ipam::IpamError;
use margay_datastore::resources::WorkloadEndpointSpec;
use tokio::sync::OwnedMutexGuard;
use tokio::time::Instant;
use tonic::Status;

use super::EndpointService;
use super::ops::{Target, get_wep};

/// How long the etcd part of one ADD or DEL may take, from the request's arrival, before it
/// answers UNAVAILABLE. A healthy etcd does all of it in milliseconds (tens under load: see
/// BENCHMARKS.md), so 4 s only turns away requests etcd is not answering; it is below the
/// probe's detection time plus etcd's 10 s request timeout, which is what the first ADD of an
/// outage waited for before, and well below a runtime's own timeout (kubelet: 4 min).
pub const ETCD_DEADLINE: Duration = Duration::from_secs(4);
/// How often the undo of a timed-out ADD asks etcd again.
const UNDO_RETRY: Duration = Duration::from_millis(500);

/// The point in time by which one request's etcd work must be done.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EtcdDeadline(Instant);

impl EtcdDeadline {
    /// [`ETCD_DEADLINE`] from now.
    pub(crate) fn start() -> EtcdDeadline {
        EtcdDeadline(Instant::now() + ETCD_DEADLINE)
    }

    /// `f`'s output, or `None` once the deadline has passed.
    pub(crate) async fn bound<F: Future>(self, f: F) -> Option<F::Output> {
        tokio::time::timeout_at(self.0, f).await.ok()
    }

    /// `f`, which talks to etcd, answering UNAVAILABLE naming `what` past the deadline.
    pub(crate) async fn within<T>(
        self,
        what: &str,
        f: impl Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        self.bound(f).await.unwrap_or_else(|| Err(expired(what)))
    }

    /// The pod's lock; past the deadline, UNAVAILABLE (an earlier request of the pod, or the
    /// undo of one, is still waiting for etcd).
    pub(crate) async fn lock(
        self,
        svc: &EndpointService,
        key: &str,
    ) -> Result<OwnedMutexGuard<()>, Status> {
        self.bound(svc.lock(key)).await.ok_or_else(|| {
            Status::unavailable(format!(
                "etcd unreachable: an earlier request for {key} is still waiting for etcd"
            ))
        })
    }
}

/// The status of etcd work that ran past the deadline.
pub(crate) fn expired(what: &str) -> Status {
    Status::unavailable(format!(
        "etcd unreachable: {what}: no answer within {ETCD_DEADLINE:?}"
    ))
}

/// What a failed ADD may have written to etcd.
struct AddWrites {
    svc: EndpointService,
    wep_ns: String,
    wep_name: String,
    container_id: String,
    /// The IPAM handle, when margay's IPAM assigned the addresses.
    handle: Option<String>,
}

impl AddWrites {
    /// Deletes the WorkloadEndpoint if it is still this container's, and releases the handle.
    async fn take_back(&self) -> Result<(), String> {
        let (store, ipam) = self
            .svc
            .datastore()
            .await
            .map_err(|s| s.message().to_string())?;
        let t = Target {
            container_id: self.container_id.clone(),
            ifname: String::new(),
            pod: None,
            wep_ns: self.wep_ns.clone(),
            wep_name: self.wep_name.clone(),
            host_ifname: String::new(),
            labels: Default::default(),
        };
        if let Some(w) = get_wep(store, &t)
            .await
            .map_err(|s| s.message().to_string())?
            && w.spec.container_id == self.container_id
        {
            match store
                .delete::<WorkloadEndpointSpec>(Some(&self.wep_ns), &self.wep_name, None)
                .await
            {
                Ok(()) | Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        if let Some(handle) = &self.handle {
            match ipam.release_by_handle(handle).await {
                Ok(_) | Err(IpamError::HandleNotFound(_)) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    }
}

/// Takes back a failed ADD's etcd writes: its WorkloadEndpoint (if still this container's) and,
/// with margay IPAM, `handle`'s addresses. Tried until `deadline`; if etcd has not answered by
/// then, a task that holds the pod's lock (`guard`) keeps trying, so a retried ADD or a DEL of
/// the pod waits for it rather than racing it.
pub(crate) async fn undo_add(
    svc: &EndpointService,
    guard: OwnedMutexGuard<()>,
    t: &Target,
    handle: Option<String>,
    deadline: EtcdDeadline,
) {
    let writes = AddWrites {
        svc: svc.clone(),
        wep_ns: t.wep_ns.clone(),
        wep_name: t.wep_name.clone(),
        container_id: t.container_id.clone(),
        handle,
    };
    let why = match deadline.bound(writes.take_back()).await {
        Some(Ok(())) => return,
        Some(Err(e)) => e,
        None => format!("no answer within {ETCD_DEADLINE:?}"),
    };
    tracing::warn!(endpoint = %writes.wep_name, container = %writes.container_id, error = %why,
        "cannot take back a failed ADD's etcd writes yet; retrying until etcd answers");
    tokio::spawn(async move {
        let _guard = guard;
        loop {
            tokio::time::sleep(UNDO_RETRY).await;
            if let Ok(Ok(())) = tokio::time::timeout(ETCD_DEADLINE, writes.take_back()).await {
                tracing::info!(endpoint = %writes.wep_name, container = %writes.container_id,
                    "took back a failed ADD's etcd writes");
                return;
            }
        }
    });
}
