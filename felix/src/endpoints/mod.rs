//! felix's endpoint service (`margay.felix.v1.Endpoints`) for the CNI plugin, served on a
//! unix socket: ADD assigns addresses through IPAM (or takes delegated ones), builds the veth
//! and both ends, writes the WorkloadEndpoint and returns the CNI result; DEL undoes it
//! idempotently; CHECK compares the kernel with what ADD made; GC releases attachments the
//! runtime no longer has; STATUS says whether ADD can be served.
//!
//! - [`naming`]: host interface, WorkloadEndpoint and handle names (pure);
//! - [`plumbing`]: the kernel side (blocking netlink, container work on a namespace thread);
//! - [`ops`]: ADD / DEL / GC against the datastore and the kernel;
//! - [`check`]: CHECK's comparison;
//! - [`deadline`]: the bound on an ADD's or DEL's etcd work, and the undo of a timed-out ADD.
//!
//! The host /32 route belongs to the reconciler: ADD writes the WorkloadEndpoint (so the
//! model carries the route; the datastore feed publishes this node's endpoints without
//! settling) and waits for the dataplane loop's "programmed" notification, programming the
//! route itself if that takes too long, so ADD returns with the route in place either way.

pub mod check;
pub mod deadline;
pub mod naming;
pub mod ops;
pub mod plumbing;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use margay_datastore::ipam::{Ipam, IpamError};
use margay_datastore::{EtcdArgs, Store, StoreError};
use margay_proto::felix::v1 as pb;
use pb::endpoints_server::{Endpoints, EndpointsServer};
use tonic::{Request, Response, Status};

use crate::health::Health;

/// The CNI API socket's default path.
pub const DEFAULT_SOCKET: &str = "/var/run/margay/felix.sock";
/// The container interface's MTU when neither the plugin nor the node says otherwise.
pub const DEFAULT_MTU: u32 = 1500;
/// How long a request waits for etcd before answering UNAVAILABLE.
const ETCD_TIMEOUT: Duration = Duration::from_secs(10);

/// How the service runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's name.
    pub node: String,
    pub etcd: EtcdArgs,
    /// felix's route protocol (the host routes to pods carry it).
    pub protocol: u8,
    /// MTU for a request that names none, when none was detected.
    pub default_mtu: u32,
    /// The pod MTU detected from the host's interfaces (FelixConfiguration `mtuIfacePattern`
    /// less the encapsulation; 0 while unknown), preferred to `default_mtu`.
    pub auto_mtu: Option<Arc<std::sync::atomic::AtomicU32>>,
    /// FelixConfiguration as last merged (`None` until the datastore is read): its first
    /// `interfacePrefix` names new veths.
    pub settings: Option<tokio::sync::watch::Receiver<Option<crate::settings::Settings>>>,
}

impl Config {
    /// The prefix of a new veth's host side: the first `interfacePrefix` (Calico's CNI takes
    /// the first of FELIX_INTERFACEPREFIX the same way), `cali` by default.
    pub fn veth_prefix(&self) -> String {
        self.settings
            .as_ref()
            .and_then(|rx| {
                rx.borrow()
                    .as_ref()
                    .and_then(|s| s.dataplane.interface_prefixes.first().cloned())
            })
            .unwrap_or_else(|| crate::settings::DEFAULT_INTERFACE_PREFIX.to_string())
    }

    /// The MTU of a pod whose request names none.
    pub fn pod_mtu(&self) -> u32 {
        self.auto_mtu
            .as_ref()
            .map(|m| m.load(std::sync::atomic::Ordering::Relaxed))
            .filter(|m| *m >= 68)
            .unwrap_or(self.default_mtu)
    }
}

/// The datastore handles, made on first use (etcd may be down when felix starts).
struct Datastore {
    store: Store,
    ipam: Ipam,
}

/// The service. Cheap to clone (shared state).
#[derive(Clone)]
pub struct EndpointService {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: Config,
    health: Arc<Health>,
    ds: tokio::sync::OnceCell<Datastore>,
    /// One lock per WorkloadEndpoint: ADD, DEL and GC of the same pod never interleave.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The dataplane loop's generation, bumped whenever it changed the kernel.
    programmed: tokio::sync::watch::Receiver<u64>,
    /// The policy task, which ADD waits for (None: policy is off).
    policy: Option<crate::cluster::policy::PolicySync>,
}

/// A datastore failure as the gRPC status the plugin maps to CNI codes.
pub(crate) fn store_status(what: &str, e: &StoreError) -> Status {
    match e {
        StoreError::Etcd(_) => Status::unavailable(format!("etcd unreachable: {what}: {e}")),
        _ => Status::internal(format!("{what}: {e}")),
    }
}

pub(crate) fn ipam_status(e: &IpamError) -> Status {
    match e {
        IpamError::Store(s) => store_status("IPAM", s),
        IpamError::Exhausted { .. } | IpamError::StrictAffinity { .. } => {
            Status::resource_exhausted(e.to_string())
        }
        IpamError::NoPool { .. } => Status::failed_precondition(e.to_string()),
        IpamError::AlreadyAllocated { .. } => Status::already_exists(e.to_string()),
        IpamError::PoolNotFound(_) | IpamError::NotInPool(_) => {
            Status::invalid_argument(e.to_string())
        }
        IpamError::Contention(_)
        | IpamError::Batch {
            unavailable: true, ..
        } => Status::unavailable(e.to_string()),
        _ => Status::internal(e.to_string()),
    }
}

impl EndpointService {
    /// `programmed` is the dataplane loop's notification ([`crate::agent::Agent::programmed`]).
    pub fn new(
        cfg: Config,
        health: Arc<Health>,
        programmed: tokio::sync::watch::Receiver<u64>,
    ) -> EndpointService {
        EndpointService {
            inner: Arc::new(Inner {
                cfg,
                health,
                ds: tokio::sync::OnceCell::new(),
                locks: Mutex::new(HashMap::new()),
                programmed,
                policy: None,
            }),
        }
    }

    /// ADD waits for the policy task to have programmed the new endpoint before it returns.
    pub fn with_policy(mut self, policy: Option<crate::cluster::policy::PolicySync>) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.policy = policy;
        }
        self
    }

    /// The policy task's handle, when policy is enforced.
    pub(crate) fn policy(&self) -> Option<&crate::cluster::policy::PolicySync> {
        self.inner.policy.as_ref()
    }

    /// A receiver of the dataplane loop's generation.
    pub(crate) fn programmed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.programmed.clone()
    }

    pub(crate) fn cfg(&self) -> &Config {
        &self.inner.cfg
    }

    /// The datastore, connecting on first use; UNAVAILABLE when etcd does not answer.
    pub(crate) async fn datastore(&self) -> Result<(&Store, &Ipam), Status> {
        let ds = self
            .inner
            .ds
            .get_or_try_init(|| async {
                let store = tokio::time::timeout(ETCD_TIMEOUT, Store::connect(&self.cfg().etcd))
                    .await
                    .map_err(|_| Status::unavailable("etcd unreachable: connect timed out"))?
                    .map_err(|e| store_status("connecting", &e))?;
                Ok::<_, Status>(Datastore {
                    ipam: Ipam::new(store.clone()),
                    store,
                })
            })
            .await?;
        Ok((&ds.store, &ds.ipam))
    }

    /// UNAVAILABLE unless the dataplane has synced with the datastore and bgpd.
    pub(crate) fn require_synced(&self) -> Result<(), Status> {
        self.inner.health.readiness().map_err(|reasons| {
            Status::unavailable(format!("felix is not synced: {}", reasons.join("; ")))
        })
    }

    /// UNAVAILABLE at once while the etcd probe finds etcd unreachable: DEL (and GC) then
    /// change nothing and the runtime retries, rather than each waiting out etcd's timeout.
    pub(crate) fn require_etcd(&self) -> Result<(), Status> {
        match self.inner.health.reason(crate::cluster::etcd_probe::R_ETCD) {
            Some(reason) => Err(Status::unavailable(reason)),
            None => Ok(()),
        }
    }

    /// The lock of one WorkloadEndpoint.
    pub(crate) async fn lock(&self, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let m = {
            let mut locks = self.inner.locks.lock().unwrap_or_else(|p| p.into_inner());
            // Drop locks nobody holds, so the map does not grow with every pod ever seen.
            locks.retain(|_, m| Arc::strong_count(m) > 1);
            locks.entry(key.to_string()).or_default().clone()
        };
        m.lock_owned().await
    }

    /// Whether etcd answers now.
    async fn etcd_reachable(&self) -> Result<(), String> {
        let (store, _) = self
            .datastore()
            .await
            .map_err(|s| s.message().to_string())?;
        match tokio::time::timeout(Duration::from_secs(3), store.revision()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("etcd unreachable: {e}")),
            Err(_) => Err("etcd unreachable: timed out".into()),
        }
    }
}

#[tonic::async_trait]
impl Endpoints for EndpointService {
    async fn add_endpoint(
        &self,
        req: Request<pb::AddEndpointRequest>,
    ) -> Result<Response<pb::AddEndpointResponse>, Status> {
        ops::add(self, req.into_inner()).await.map(Response::new)
    }

    async fn delete_endpoint(
        &self,
        req: Request<pb::DeleteEndpointRequest>,
    ) -> Result<Response<pb::DeleteEndpointResponse>, Status> {
        ops::delete(self, req.into_inner()).await.map(Response::new)
    }

    async fn check_endpoint(
        &self,
        req: Request<pb::CheckEndpointRequest>,
    ) -> Result<Response<pb::CheckEndpointResponse>, Status> {
        check::check(self, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn garbage_collect(
        &self,
        req: Request<pb::GarbageCollectRequest>,
    ) -> Result<Response<pb::GarbageCollectResponse>, Status> {
        ops::garbage_collect(self, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let synced = self.inner.health.readiness();
        let etcd = self.etcd_reachable().await;
        let mut reasons = Vec::new();
        if let Err(r) = &synced {
            reasons.extend(r.iter().cloned());
        }
        if let Err(e) = &etcd {
            reasons.push(e.clone());
        }
        Ok(Response::new(pb::StatusResponse {
            ready: reasons.is_empty(),
            felix_synced: synced.is_ok(),
            etcd_reachable: etcd.is_ok(),
            reason: reasons.join("; "),
        }))
    }
}

/// Why the socket could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("socket {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("serving {path}: {source}")]
    Serve {
        path: PathBuf,
        source: tonic::transport::Error,
    },
}

/// Serves `service` on the unix socket `path` (mode 0600, each client's uid checked against
/// `access`, a stale file replaced) until `shutdown` resolves; the socket file is removed on the
/// way out.
pub async fn serve(
    path: &Path,
    service: EndpointService,
    access: margay_common::SocketAccess,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |source| ServeError::Socket {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    tracing::info!(socket = %path.display(), "serving margay.felix.v1 (CNI API)");
    let res = tonic::transport::Server::builder()
        .add_service(EndpointsServer::new(service))
        .serve_with_incoming_shutdown(
            margay_common::AuthorizedIncoming::new(listener, access),
            shutdown,
        )
        .await;
    let _ = std::fs::remove_file(path);
    res.map_err(|source| ServeError::Serve {
        path: path.to_path_buf(),
        source,
    })
}
