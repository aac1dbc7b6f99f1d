//! A test double of felix's `margay.felix.v1` service (gRPC only, no kernel): it records every
//! request, hands out addresses from 10.244.0.0/26 in order (or the requested / delegated ones),
//! remembers endpoints, and can be told to fail ADD or report not ready.

use margay_proto::felix::v1 as pb;
use pb::endpoints_server::{Endpoints, EndpointsServer};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tonic::{Request, Response, Status};

#[derive(Debug, Clone)]
pub enum Recorded {
    Add(pb::AddEndpointRequest),
    Delete(pb::DeleteEndpointRequest),
    Check(pb::CheckEndpointRequest),
    Gc(pb::GarbageCollectRequest),
    Status,
}

#[derive(Default)]
pub struct State {
    pub requests: Vec<Recorded>,
    /// (container id, ifname) -> the result ADD returned.
    pub endpoints: BTreeMap<(String, String), pb::EndpointResult>,
    next_host: u8,
    /// When set, ADD fails with it.
    pub fail_add: Option<(tonic::Code, String)>,
    pub status: pb::StatusResponse,
    /// DNS felix returns in ADD results.
    pub dns: Option<pb::Dns>,
}

#[derive(Clone)]
struct Service(Arc<Mutex<State>>);

/// The running double: its socket and what it saw. Stops when dropped.
pub struct FelixDouble {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub state: Arc<Mutex<State>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FelixDouble {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("felix.sock");
        let state = Arc::new(Mutex::new(State {
            status: pb::StatusResponse {
                ready: true,
                felix_synced: true,
                etcd_reachable: true,
                reason: String::new(),
            },
            ..State::default()
        }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let service = Service(state.clone());
        let path = socket.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::UnixListener::bind(&path).expect("bind felix socket");
                ready_tx.send(()).expect("ready");
                tonic::transport::Server::builder()
                    .add_service(EndpointsServer::new(service))
                    .serve_with_incoming_shutdown(
                        tokio_stream::wrappers::UnixListenerStream::new(listener),
                        async {
                            let _ = stopped.await;
                        },
                    )
                    .await
                    .expect("serve");
            });
        });
        ready_rx.recv().expect("double started");
        FelixDouble {
            dir,
            socket,
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for FelixDouble {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn key(a: &Option<pb::Attachment>) -> (String, String) {
    let a = a.clone().unwrap_or_default();
    (a.container_id, a.interface_name)
}

#[tonic::async_trait]
impl Endpoints for Service {
    async fn add_endpoint(
        &self,
        req: Request<pb::AddEndpointRequest>,
    ) -> Result<Response<pb::AddEndpointResponse>, Status> {
        let req = req.into_inner();
        let mut s = self.0.lock().unwrap();
        s.requests.push(Recorded::Add(req.clone()));
        if let Some((code, msg)) = s.fail_add.clone() {
            return Err(Status::new(code, msg));
        }
        let addresses: Vec<String> = match &req.ipam {
            Some(pb::add_endpoint_request::Ipam::Margay(m))
                if !m.requested_addresses.is_empty() =>
            {
                m.requested_addresses
                    .iter()
                    .map(|a| format!("{a}/32"))
                    .collect()
            }
            Some(pb::add_endpoint_request::Ipam::Margay(_)) => {
                s.next_host += 1;
                vec![format!("10.244.0.{}/32", s.next_host)]
            }
            // Delegated: the pod gets the address the IPAM plugin allocated, as a host route.
            Some(pb::add_endpoint_request::Ipam::Delegated(d)) => d
                .ips
                .iter()
                .map(|ip| {
                    let addr = ip.address.split('/').next().unwrap_or_default();
                    format!("{addr}/32")
                })
                .collect(),
            None => return Err(Status::invalid_argument("no ipam")),
        };
        let (container_id, ifname) = key(&req.attachment);
        let result = pb::EndpointResult {
            interfaces: vec![
                pb::Interface {
                    name: "cali0123456789a".into(),
                    mac: "ee:ee:ee:ee:ee:ee".into(),
                    sandbox: String::new(),
                    mtu: req.mtu,
                },
                pb::Interface {
                    name: ifname.clone(),
                    mac: "02:00:0a:f4:00:01".into(),
                    sandbox: req.netns.clone(),
                    mtu: req.mtu,
                },
            ],
            ips: addresses
                .iter()
                .map(|a| pb::IpConfig {
                    interface: Some(1),
                    address: a.clone(),
                    gateway: "169.254.1.1".into(),
                })
                .collect(),
            routes: vec![pb::Route {
                dst: "0.0.0.0/0".into(),
                gw: "169.254.1.1".into(),
            }],
            dns: s.dns.clone(),
        };
        s.endpoints
            .insert((container_id.clone(), ifname), result.clone());
        Ok(Response::new(pb::AddEndpointResponse {
            result: Some(result),
            endpoint: format!("node1-k8s-{container_id}-eth0"),
        }))
    }

    async fn delete_endpoint(
        &self,
        req: Request<pb::DeleteEndpointRequest>,
    ) -> Result<Response<pb::DeleteEndpointResponse>, Status> {
        let req = req.into_inner();
        let mut s = self.0.lock().unwrap();
        s.requests.push(Recorded::Delete(req.clone()));
        let gone = s.endpoints.remove(&key(&req.attachment));
        Ok(Response::new(pb::DeleteEndpointResponse {
            existed: gone.is_some(),
            released_addresses: gone
                .map(|r| r.ips.into_iter().map(|i| i.address).collect())
                .unwrap_or_default(),
        }))
    }

    async fn check_endpoint(
        &self,
        req: Request<pb::CheckEndpointRequest>,
    ) -> Result<Response<pb::CheckEndpointResponse>, Status> {
        let req = req.into_inner();
        let mut s = self.0.lock().unwrap();
        s.requests.push(Recorded::Check(req.clone()));
        let Some(have) = s.endpoints.get(&key(&req.attachment)) else {
            return Err(Status::not_found("no endpoint for this attachment"));
        };
        let expected = req.expected.unwrap_or_default();
        let mut differences = Vec::new();
        for ip in &expected.ips {
            if !have.ips.iter().any(|h| h.address == ip.address) {
                differences.push(pb::Difference {
                    subject: format!("address {}", ip.address),
                    expected: ip.address.clone(),
                    actual: String::new(),
                });
            }
        }
        Ok(Response::new(pb::CheckEndpointResponse { differences }))
    }

    async fn garbage_collect(
        &self,
        req: Request<pb::GarbageCollectRequest>,
    ) -> Result<Response<pb::GarbageCollectResponse>, Status> {
        let req = req.into_inner();
        let mut s = self.0.lock().unwrap();
        s.requests.push(Recorded::Gc(req.clone()));
        let valid: Vec<(String, String)> = req
            .valid_attachments
            .iter()
            .map(|a| (a.container_id.clone(), a.interface_name.clone()))
            .collect();
        let stale: Vec<(String, String)> = s
            .endpoints
            .keys()
            .filter(|k| !valid.contains(k))
            .cloned()
            .collect();
        let mut released = Vec::new();
        for k in stale {
            if let Some(r) = s.endpoints.remove(&k) {
                released.push(pb::Released {
                    attachment: Some(pb::Attachment {
                        container_id: k.0,
                        interface_name: k.1,
                    }),
                    addresses: r.ips.into_iter().map(|i| i.address).collect(),
                });
            }
        }
        Ok(Response::new(pb::GarbageCollectResponse { released }))
    }

    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let mut s = self.0.lock().unwrap();
        s.requests.push(Recorded::Status);
        Ok(Response::new(s.status.clone()))
    }
}
