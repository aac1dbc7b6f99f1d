//! ADD, DEL and GC: IPAM through the datastore, the kernel through [`plumbing`], the
//! WorkloadEndpoint in between. A failed ADD undoes what it did, in reverse order.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use margay_datastore::ipam::{IpamError, Rider};
use margay_datastore::resources::{IpPoolSpec, Resource, WorkloadEndpointSpec};
use margay_datastore::{Store, StoreError};
use margay_proto::felix::v1 as pb;
use tonic::Status;

use super::deadline::{EtcdDeadline, expired, undo_add};
use super::plumbing::{self, GATEWAY_V4, GATEWAY_V6, HOST_MAC, Plan};
use super::{EndpointService, ipam_status, naming, store_status};
use crate::netlink::NetlinkError;

/// Annotations felix keeps on the WorkloadEndpoints it writes.
pub use margay_datastore::ipam::{ANN_IPAM, ANN_NETWORK, MARGAY_IPAM};
pub const ANN_NETNS: &str = "margay.io/netns";
pub const ANN_CONTAINER_MAC: &str = "margay.io/container-mac";
/// How long ADD waits for the reconciler to program the host route before doing it itself.
const RECONCILER_WAIT: Duration = Duration::from_millis(1500);
/// How long ADD waits for the policy task to program the new endpoint.
const POLICY_WAIT: Duration = Duration::from_secs(10);

/// `MARGAY_ENDPOINT_OWN_WRITE=1` in felix's environment writes the WorkloadEndpoint in a
/// transaction of its own, after IPAM's, as before it rode in IPAM's: for benchmarks that
/// compare the two in one run (`bench/cni-latency.sh`, `WEP_WRITE`).
fn endpoint_own_write() -> bool {
    static OWN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OWN.get_or_init(|| std::env::var("MARGAY_ENDPOINT_OWN_WRITE").is_ok_and(|v| v == "1"))
}

/// The attachment's identity as felix keys it.
pub(crate) struct Target {
    pub container_id: String,
    pub ifname: String,
    pub pod: Option<(String, String)>,
    /// WorkloadEndpoint namespace and name.
    pub wep_ns: String,
    pub wep_name: String,
    pub host_ifname: String,
    /// The pod's own labels (CNI `args.cni.labels`), for the WorkloadEndpoint.
    pub labels: BTreeMap<String, String>,
}

impl Target {
    pub(crate) fn new(
        svc: &EndpointService,
        a: Option<&pb::Attachment>,
        w: Option<&pb::Workload>,
    ) -> Result<Target, Status> {
        let a = a.ok_or_else(|| Status::invalid_argument("no attachment"))?;
        if a.container_id.is_empty() || a.interface_name.is_empty() {
            return Err(Status::invalid_argument(
                "attachment needs a container id and an interface name",
            ));
        }
        let w = w.cloned().unwrap_or_default();
        let pod = naming::pod_of(&w.namespace, &w.name);
        let (wep_ns, wep_name) = naming::endpoint_name(
            &svc.cfg().node,
            pod.as_ref(),
            &a.container_id,
            &a.interface_name,
        );
        Ok(Target {
            host_ifname: naming::host_ifname(
                &svc.cfg().veth_prefix(),
                pod.as_ref(),
                &a.container_id,
            ),
            container_id: a.container_id.clone(),
            ifname: a.interface_name.clone(),
            pod,
            wep_ns,
            wep_name,
            labels: w
                .labels
                .iter()
                .filter(|(k, _)| !k.starts_with("projectcalico.org/"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
    }

    pub(crate) fn lock_key(&self) -> String {
        format!("{}/{}", self.wep_ns, self.wep_name)
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, NetlinkError> + Send + 'static,
) -> Result<T, NetlinkError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|_| {
        Err(NetlinkError::Io {
            context: "dataplane task panicked".into(),
            source: std::io::Error::other("panic"),
        })
    })
}

fn host_prefix(ip: IpAddr) -> IpNet {
    IpNet::from(ip)
}

/// The CNI result for an endpoint.
fn result(
    t: &Target,
    netns: &str,
    mtu: u32,
    container_mac: &str,
    addrs: &[IpNet],
) -> pb::EndpointResult {
    let mut routes = Vec::new();
    if addrs.iter().any(|a| a.addr().is_ipv4()) {
        routes.push(pb::Route {
            dst: "0.0.0.0/0".into(),
            gw: GATEWAY_V4.to_string(),
        });
    }
    if addrs.iter().any(|a| a.addr().is_ipv6()) {
        routes.push(pb::Route {
            dst: "::/0".into(),
            gw: GATEWAY_V6.to_string(),
        });
    }
    pb::EndpointResult {
        interfaces: vec![
            pb::Interface {
                name: t.host_ifname.clone(),
                mac: plumbing::mac_string(&HOST_MAC),
                sandbox: String::new(),
                mtu,
            },
            pb::Interface {
                name: t.ifname.clone(),
                mac: container_mac.to_string(),
                sandbox: netns.to_string(),
                mtu,
            },
        ],
        ips: addrs
            .iter()
            .map(|a| pb::IpConfig {
                interface: Some(1),
                address: a.to_string(),
                gateway: match a.addr() {
                    IpAddr::V4(_) => GATEWAY_V4.to_string(),
                    IpAddr::V6(_) => GATEWAY_V6.to_string(),
                },
            })
            .collect(),
        routes,
        dns: None,
    }
}

pub(crate) async fn get_wep(
    store: &Store,
    t: &Target,
) -> Result<Option<Resource<WorkloadEndpointSpec>>, Status> {
    store
        .get_ns::<WorkloadEndpointSpec>(Some(&t.wep_ns), &t.wep_name)
        .await
        .map_err(|e| store_status("reading the WorkloadEndpoint", &e))
}

fn wep_addresses(w: &WorkloadEndpointSpec) -> Vec<IpNet> {
    w.ip_networks
        .iter()
        .filter_map(|s| {
            s.parse::<IpNet>()
                .ok()
                .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
        })
        .collect()
}

/// Pool names for CIDRs (or names) the plugin gave.
async fn pool_names(store: &Store, wanted: &[String]) -> Result<Vec<String>, Status> {
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let (pools, _) = store
        .list::<IpPoolSpec>()
        .await
        .map_err(|e| store_status("listing IP pools", &e))?;
    wanted
        .iter()
        .map(|w| {
            let net = w.parse::<IpNet>().ok();
            pools
                .iter()
                .find(|p| p.name() == w || (net.is_some() && p.spec.net() == net))
                .map(|p| p.name().to_string())
                .ok_or_else(|| Status::invalid_argument(format!("no IP pool {w}")))
        })
        .collect()
}

/// What [`assign`] gave: the addresses, the IPAM that gave them, and whether the
/// WorkloadEndpoint was written in IPAM's transaction.
struct Assignment {
    addresses: Vec<IpNet>,
    ipam_kind: String,
    endpoint_written: bool,
}

/// Assigns the attachment's addresses (margay IPAM) or takes the delegated ones. An
/// auto-assignment of one address writes `endpoint` (the WorkloadEndpoint for an address) in
/// the same etcd transaction as the allocation.
async fn assign(
    svc: &EndpointService,
    req: &pb::AddEndpointRequest,
    t: &Target,
    handle: &str,
    endpoint: Option<Rider>,
) -> Result<Assignment, Status> {
    let (store, ipam) = svc.datastore().await?;
    let node = &svc.cfg().node;
    let mut attrs = BTreeMap::new();
    attrs.insert("node".to_string(), node.clone());
    if let Some((ns, name)) = &t.pod {
        attrs.insert("namespace".to_string(), ns.clone());
        attrs.insert("pod".to_string(), name.clone());
    }
    match &req.ipam {
        Some(pb::add_endpoint_request::Ipam::Margay(m)) => {
            if !m.requested_addresses.is_empty() {
                let mut got = Vec::new();
                for a in &m.requested_addresses {
                    let ip: IpAddr = a.parse().map_err(|_| {
                        Status::invalid_argument(format!("requested address {a:?} is not an IP"))
                    })?;
                    if let Err(e) = ipam.assign_ip(ip, handle, node, &attrs).await {
                        release(svc, handle).await;
                        return Err(ipam_status(&e));
                    }
                    got.push(host_prefix(ip));
                }
                return Ok(Assignment {
                    addresses: got,
                    ipam_kind: MARGAY_IPAM.into(),
                    endpoint_written: false,
                });
            }
            if !m.assign_ipv4 && !m.assign_ipv6 {
                return Err(Status::invalid_argument(
                    "assign_ipv4 and assign_ipv6 are both false",
                ));
            }
            let mut pools = pool_names(store, &m.ipv4_pools).await?;
            pools.extend(pool_names(store, &m.ipv6_pools).await?);
            let assigned = ipam
                .auto_assign_with(
                    handle,
                    node,
                    &attrs,
                    usize::from(m.assign_ipv4),
                    usize::from(m.assign_ipv6),
                    &pools,
                    endpoint,
                )
                .await;
            match assigned {
                Ok(a) => Ok(Assignment {
                    endpoint_written: a.rider_written,
                    addresses: a.v4.into_iter().chain(a.v6).map(host_prefix).collect(),
                    ipam_kind: MARGAY_IPAM.into(),
                }),
                Err(e) => {
                    // Anything half-assigned goes back.
                    release(svc, handle).await;
                    Err(ipam_status(&e))
                }
            }
        }
        Some(pb::add_endpoint_request::Ipam::Delegated(d)) => {
            let mut got = Vec::new();
            for ip in &d.ips {
                let net: IpNet = ip.address.parse().map_err(|_| {
                    Status::invalid_argument(format!(
                        "delegated address {:?} is not ADDR/LEN",
                        ip.address
                    ))
                })?;
                got.push(host_prefix(net.addr()));
            }
            if got.is_empty() {
                return Err(Status::invalid_argument("delegated IPAM gave no address"));
            }
            Ok(Assignment {
                addresses: got,
                ipam_kind: d.plugin.clone(),
                endpoint_written: false,
            })
        }
        None => Err(Status::invalid_argument("no ipam in the request")),
    }
}

/// Releases a handle, logging (not failing) on error: used on the way out of a failed ADD.
async fn release(svc: &EndpointService, handle: &str) {
    if let Ok((_, ipam)) = svc.datastore().await {
        match ipam.release_by_handle(handle).await {
            Ok(_) | Err(IpamError::HandleNotFound(_)) => {}
            Err(e) => tracing::warn!(handle, error = %e, "releasing after a failed ADD"),
        }
    }
}

/// CNI ADD.
pub async fn add(
    svc: &EndpointService,
    req: pb::AddEndpointRequest,
) -> Result<pb::AddEndpointResponse, Status> {
    let cfg = svc.cfg().clone();
    if !req.node_name.is_empty() && req.node_name != cfg.node {
        return Err(Status::failed_precondition(format!(
            "the plugin is configured for node {:?} but this felix is node {:?}",
            req.node_name, cfg.node
        )));
    }
    let t = Target::new(svc, req.attachment.as_ref(), req.workload.as_ref())?;
    if req.netns.is_empty() {
        return Err(Status::invalid_argument("no netns"));
    }
    if !std::path::Path::new(&req.netns).exists() {
        return Err(Status::not_found(format!(
            "netns {}: no such file",
            req.netns
        )));
    }
    svc.require_synced()?;
    let deadline = EtcdDeadline::start();
    let (store, _) = deadline.within("connecting", svc.datastore()).await?;
    let guard = deadline.lock(svc, &t.lock_key()).await?;
    let mtu = if req.mtu == 0 { cfg.pod_mtu() } else { req.mtu };

    // The same attachment again: its current result. A serializable read (no raft round, so
    // no wait behind other ADDs' writes): a runtime retries an ADD after its answer, by when
    // the endpoint written is in every read.
    let current = deadline
        .within(
            "reading the WorkloadEndpoint",
            get_wep(&store.serializable(), &t),
        )
        .await?;
    if let Some(w) = current {
        if w.spec.container_id == t.container_id {
            let mac = w
                .metadata
                .annotations
                .get(ANN_CONTAINER_MAC)
                .cloned()
                .unwrap_or_default();
            return Ok(pb::AddEndpointResponse {
                result: Some(result(&t, &req.netns, mtu, &mac, &wep_addresses(&w.spec))),
                endpoint: format!("{}/{}", t.wep_ns, t.wep_name),
            });
        }
        // A new container of the same pod: the old one's veth and endpoint go first.
        tracing::info!(endpoint = %t.wep_name, old = %w.spec.container_id, new = %t.container_id, "replacing the endpoint of an earlier container");
    }

    let network = if req.network_name.is_empty() {
        "k8s-pod-network".to_string()
    } else {
        req.network_name.clone()
    };
    let handle = naming::handle(&network, &t.container_id);
    // Phase times, logged with the result: where an ADD's time goes.
    let started = std::time::Instant::now();
    let margay_ipam = matches!(req.ipam, Some(pb::add_endpoint_request::Ipam::Margay(_)));
    // What a failed ADD takes back in etcd: the handle only if margay's IPAM assigned it.
    let ours = margay_ipam.then(|| handle.clone());
    let mac_bytes = naming::container_mac(&t.container_id, &t.ifname);
    let mac = plumbing::mac_string(&mac_bytes);
    // The WorkloadEndpoint rides in IPAM's transaction when one address is assigned: one etcd
    // write per ADD. It may land before the veth: the reconciler holds the pod's route until
    // its device is up, and the policy task's map entries wait for nothing else.
    let template = endpoint_resource(&t, &cfg.node, &network, MARGAY_IPAM, &req.netns, &[], &mac);
    let endpoint: Option<Rider> = (!endpoint_own_write()).then(|| {
        Arc::new(move |ip| {
            let mut w = template.clone();
            w.spec.ip_networks = vec![host_prefix(ip).to_string()];
            Store::resource_record(&w)
        }) as Rider
    });
    let assignment = deadline
        .bound(assign(svc, &req, &t, &handle, endpoint))
        .await;
    let Assignment {
        addresses,
        ipam_kind,
        endpoint_written,
    } = match assignment {
        Some(r) => r?,
        None => {
            // The assignment may still land when etcd answers again.
            undo_add(svc, guard, &t, ours, deadline).await;
            return Err(expired("assigning addresses"));
        }
    };
    let assigned = started.elapsed();

    let plan = Plan {
        netns: req.netns.clone(),
        host_ifname: t.host_ifname.clone(),
        container_ifname: t.ifname.clone(),
        container_mac: mac_bytes,
        mtu,
        addresses: addresses.clone(),
        protocol: cfg.protocol,
    };
    let wep = endpoint_resource(
        &t, &cfg.node, &network, &ipam_kind, &req.netns, &addresses, &mac,
    );

    // The veth, and the WorkloadEndpoint unless IPAM's transaction wrote it, at the same time:
    // the reconciler holds the pod's route until its device is up, so either may land first.
    // A crash here leaves an endpoint without its veth (dual-stack: addresses without an
    // endpoint): the runtime's DEL of the failed ADD, or CNI GC, takes it back.
    let p = plan.clone();
    let build = blocking(move || {
        // A veth left by an earlier container of this pod (or a crash) is in the way.
        plumbing::remove_host_side(&p.host_ifname)?;
        plumbing::build_container_side(&p)
    });
    let write = async {
        if endpoint_written {
            Some(Ok(()))
        } else {
            deadline.bound(put_wep(store, &wep)).await
        }
    };
    let (built, written) = tokio::join!(build, write);
    let wired = started.elapsed();
    let failed = match (&built, &written) {
        (Ok(()), Some(Ok(()))) => None,
        (Err(e), _) => Some(Status::internal(format!(
            "creating the veth {} / {} in {}: {e}",
            plan.host_ifname, plan.container_ifname, plan.netns
        ))),
        (Ok(()), Some(Err(e))) => Some(store_status("writing the WorkloadEndpoint", e)),
        (Ok(()), None) => Some(expired("writing the WorkloadEndpoint")),
    };
    if let Some(status) = failed {
        let (ns, ifname, host) = (
            plan.netns.clone(),
            plan.container_ifname.clone(),
            plan.host_ifname.clone(),
        );
        let _ = blocking(move || {
            let host_removed = plumbing::remove_host_side(&host);
            plumbing::remove_container_side(&ns, &ifname)?;
            host_removed.map(|_| ())
        })
        .await;
        undo_add(svc, guard, &t, ours, deadline).await;
        return Err(status);
    }

    // Both wait for the WorkloadEndpoint written above, and for nothing else, so they run side
    // by side: the reconciler programs the host route once the endpoint is in its model (if
    // that takes too long, ADD programs it: the reconciler adopts it, same key and protocol);
    // the policy task puts the pod's policy in force (until then felix's table drops the
    // traffic of a workload interface it does not know). ADD returns with both done.
    let route = async {
        let r = await_host_routes(svc, &plan).await;
        (r, started.elapsed())
    };
    let policy = async {
        let r = match svc.policy() {
            Some(p) => p.sync(POLICY_WAIT).await,
            None => Ok(()),
        };
        (r, started.elapsed())
    };
    let ((routed, routed_at), (policed, policed_at)) = tokio::join!(route, policy);
    let failed = match (routed, policed) {
        (Err(e), _) => Some(Status::internal(format!(
            "programming the host route on {}: {e}",
            plan.host_ifname
        ))),
        (Ok(()), Err(e)) => Some(Status::unavailable(format!(
            "programming the policy of {}: {e}",
            plan.host_ifname
        ))),
        (Ok(()), Ok(())) => None,
    };
    if let Some(status) = failed {
        let host = plan.host_ifname.clone();
        let _ = blocking(move || plumbing::remove_host_side(&host)).await;
        undo_add(svc, guard, &t, ours, EtcdDeadline::start()).await;
        return Err(status);
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    tracing::info!(
        endpoint = %t.wep_name, container = %t.container_id, ips = ?addresses,
        ifname = %t.host_ifname,
        ipam_ms = ms(assigned),
        wire_ms = ms(wired - assigned),
        // Both from the end of `wire` (they overlap).
        route_ms = ms(routed_at - wired),
        policy_ms = ms(policed_at - wired),
        "endpoint added"
    );
    Ok(pb::AddEndpointResponse {
        result: Some(result(&t, &req.netns, mtu, &mac, &addresses)),
        endpoint: format!("{}/{}", t.wep_ns, t.wep_name),
    })
}

/// Waits until the dataplane loop has programmed `plan`'s host routes: checks the kernel
/// after each of its notifications, and programs the routes itself after [`RECONCILER_WAIT`].
async fn await_host_routes(svc: &EndpointService, plan: &Plan) -> Result<(), NetlinkError> {
    let mut programmed = svc.programmed();
    let deadline = tokio::time::Instant::now() + RECONCILER_WAIT;
    loop {
        // Mark the generation seen before looking, so a flush after the look wakes us.
        programmed.borrow_and_update();
        let p = plan.clone();
        match blocking(move || plumbing::host_routes_present(&p)).await {
            Ok(true) => return Ok(()),
            // Other pods' veths coming and going: look again on the next notification.
            Ok(false) | Err(NetlinkError::DumpInterrupted) => {}
            Err(e) => return Err(e),
        }
        match tokio::time::timeout_at(deadline, programmed.changed()).await {
            Ok(Ok(())) => {}
            // The loop is gone, or slow: program the routes here.
            Ok(Err(_)) | Err(_) => break,
        }
    }
    tracing::debug!(ifname = %plan.host_ifname, "reconciler slow; programming the host route");
    let p = plan.clone();
    blocking(move || plumbing::program_host_routes(&p)).await
}

/// The WorkloadEndpoint ADD writes.
fn endpoint_resource(
    t: &Target,
    node: &str,
    network: &str,
    ipam_kind: &str,
    netns: &str,
    addresses: &[IpNet],
    mac: &str,
) -> Resource<WorkloadEndpointSpec> {
    let mut wep = Resource::new(
        t.wep_name.clone(),
        WorkloadEndpointSpec {
            orchestrator: Some(if t.pod.is_some() { "k8s" } else { "cni" }.into()),
            workload: None,
            node: node.to_string(),
            container_id: t.container_id.clone(),
            pod: t.pod.as_ref().map(|(_, n)| n.clone()),
            endpoint: Some(t.ifname.clone()),
            ip_networks: addresses.iter().map(|a| a.to_string()).collect(),
            interface_name: t.host_ifname.clone(),
            mac: Some(mac.to_string()),
            ..Default::default()
        },
    );
    wep.metadata.namespace = Some(t.wep_ns.clone());
    // The pod's labels first: felix's own projectcalico.org/ labels are set after them.
    wep.metadata.labels.extend(t.labels.clone());
    if let Some((ns, _)) = &t.pod {
        wep.metadata
            .labels
            .insert("projectcalico.org/namespace".into(), ns.clone());
    }
    wep.metadata.labels.insert(
        "projectcalico.org/orchestrator".into(),
        wep.spec.orchestrator.clone().unwrap_or_default(),
    );
    let ann = &mut wep.metadata.annotations;
    ann.insert(ANN_NETWORK.into(), network.to_string());
    ann.insert(ANN_IPAM.into(), ipam_kind.to_string());
    ann.insert(ANN_NETNS.into(), netns.to_string());
    ann.insert(ANN_CONTAINER_MAC.into(), mac.to_string());
    wep
}

/// Creates or overwrites the WorkloadEndpoint.
async fn put_wep(store: &Store, wep: &Resource<WorkloadEndpointSpec>) -> Result<(), StoreError> {
    match store.create(wep).await {
        Ok(_) => Ok(()),
        Err(StoreError::AlreadyExists { .. }) => store.apply(wep).await.map(|_| ()),
        Err(e) => Err(e),
    }
}

/// Removes one attachment: WorkloadEndpoint (if it is this container's), veth, addresses.
/// Returns whether anything existed and the addresses released.
async fn remove(
    svc: &EndpointService,
    t: &Target,
    network: &str,
    release_ipam: bool,
) -> Result<(bool, Vec<String>), Status> {
    let (store, ipam) = svc.datastore().await?;
    let mut existed = false;
    let mut ours = true;
    if let Some(w) = get_wep(store, t).await? {
        if w.spec.container_id == t.container_id {
            existed = true;
            match store
                .delete::<WorkloadEndpointSpec>(Some(&t.wep_ns), &t.wep_name, None)
                .await
            {
                Ok(()) | Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(store_status("deleting the WorkloadEndpoint", &e)),
            }
        } else {
            // The pod's endpoint belongs to a newer container: leave its veth alone.
            ours = false;
        }
    }
    if ours {
        let host = t.host_ifname.clone();
        existed |= blocking(move || plumbing::remove_host_side(&host))
            .await
            .map_err(|e| Status::internal(format!("removing {}: {e}", t.host_ifname)))?;
    }
    let mut released = Vec::new();
    if release_ipam {
        match ipam
            .release_by_handle(&naming::handle(network, &t.container_id))
            .await
        {
            Ok(ips) => {
                existed |= !ips.is_empty();
                released = ips.iter().map(|ip| ip.to_string()).collect();
            }
            Err(IpamError::HandleNotFound(_)) => {}
            Err(e) => return Err(ipam_status(&e)),
        }
    }
    Ok((existed, released))
}

/// CNI DEL: idempotent.
pub async fn delete(
    svc: &EndpointService,
    req: pb::DeleteEndpointRequest,
) -> Result<pb::DeleteEndpointResponse, Status> {
    let t = Target::new(svc, req.attachment.as_ref(), req.workload.as_ref())?;
    let network = if req.network_name.is_empty() {
        "k8s-pod-network"
    } else {
        &req.network_name
    };
    svc.require_etcd()?;
    // Past the deadline DEL changes nothing more and answers UNAVAILABLE; it is idempotent,
    // so the runtime's retry finishes what this one began.
    let deadline = EtcdDeadline::start();
    let _guard = deadline.lock(svc, &t.lock_key()).await?;
    let (existed, released_addresses) = deadline
        .within(
            "removing the endpoint",
            remove(svc, &t, network, !req.delegated_ipam),
        )
        .await?;
    tracing::info!(endpoint = %t.wep_name, container = %t.container_id, existed, released = ?released_addresses, "endpoint deleted");
    Ok(pb::DeleteEndpointResponse {
        existed,
        released_addresses,
    })
}

/// CNI GC: every endpoint of the network on this node whose attachment the runtime no
/// longer has is removed, with its addresses. Bounded as DEL is: UNAVAILABLE at once while the
/// etcd probe finds etcd unreachable, and past [`super::deadline::ETCD_DEADLINE`] on the list
/// or on any one endpoint's removal (each gets its own deadline, so a long GC of many
/// endpoints is not cut short while etcd answers). GC is idempotent: the runtime's retry
/// finishes what an interrupted one began.
pub async fn garbage_collect(
    svc: &EndpointService,
    req: pb::GarbageCollectRequest,
) -> Result<pb::GarbageCollectResponse, Status> {
    svc.require_etcd()?;
    let deadline = EtcdDeadline::start();
    let (store, _) = deadline.within("connecting", svc.datastore()).await?;
    let valid: BTreeSet<(String, String)> = req
        .valid_attachments
        .iter()
        .map(|a| (a.container_id.clone(), a.interface_name.clone()))
        .collect();
    let (weps, _) = deadline
        .within("listing WorkloadEndpoints", async {
            store
                .list::<WorkloadEndpointSpec>()
                .await
                .map_err(|e| store_status("listing WorkloadEndpoints", &e))
        })
        .await?;
    let mut released = Vec::new();
    for w in weps {
        let a = &w.metadata.annotations;
        if w.spec.node != svc.cfg().node
            || a.get(ANN_NETWORK).map(String::as_str) != Some(req.network_name.as_str())
        {
            continue;
        }
        let ifname = w.spec.endpoint.clone().unwrap_or_default();
        if valid.contains(&(w.spec.container_id.clone(), ifname.clone())) {
            continue;
        }
        let t = Target {
            container_id: w.spec.container_id.clone(),
            ifname: ifname.clone(),
            pod: None,
            wep_ns: w.metadata.namespace.clone().unwrap_or_default(),
            wep_name: w.metadata.name.clone(),
            host_ifname: w.spec.interface_name.clone(),
            labels: BTreeMap::new(),
        };
        let margay_ipam = a.get(ANN_IPAM).map(String::as_str) == Some(MARGAY_IPAM);
        let one = EtcdDeadline::start();
        let _guard = one.lock(svc, &t.lock_key()).await?;
        let (_, addrs) = one
            .within(
                "removing a stale endpoint",
                remove(svc, &t, &req.network_name, margay_ipam),
            )
            .await?;
        tracing::info!(endpoint = %t.wep_name, container = %t.container_id, "GC released a stale endpoint");
        released.push(pb::Released {
            attachment: Some(pb::Attachment {
                container_id: t.container_id,
                interface_name: ifname,
            }),
            addresses: if margay_ipam {
                addrs
            } else {
                w.spec.ip_networks
            },
        });
    }
    Ok(pb::GarbageCollectResponse { released })
}
