//! The `margay.bgp.v1` gRPC service, served on a unix socket that only root can open (0600).

use crate::config::PeerType;
use crate::speaker::{PeerStatus, RouteInfo, SpeakerGone, SpeakerHandle, WatchEvent};
use crate::wire::{Family, Origin, Prefix};
use margay_proto::bgp::v1 as pb;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::UNIX_EPOCH;
use tokio::net::UnixListener;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};
use tracing::warn;

/// Why the API socket could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot create socket directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot bind unix socket {path}: {source}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Binds the socket (replacing a stale one), restricts it to root (mode 0600 and each client's
/// uid checked against `access`), and serves until `shutdown` resolves; the socket file is
/// removed on the way out.
pub async fn serve(
    path: &Path,
    speaker: SpeakerHandle,
    access: margay_common::SocketAccess,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ApiError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| ApiError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(|source| ApiError::Bind {
        path: path.to_path_buf(),
        source,
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        ApiError::Bind {
            path: path.to_path_buf(),
            source,
        }
    })?;
    let stream = margay_common::AuthorizedIncoming::new(listener, access);
    let result = tonic::transport::Server::builder()
        .add_service(pb::bgp_server::BgpServer::new(Api { speaker }))
        .serve_with_incoming_shutdown(stream, shutdown)
        .await;
    let _ = std::fs::remove_file(path);
    if let Err(e) = result {
        warn!(error = %e, "gRPC server ended with an error");
    }
    Ok(())
}

struct Api {
    speaker: SpeakerHandle,
}

fn unavailable(_: SpeakerGone) -> Status {
    Status::unavailable("the BGP speaker is not running")
}

fn parse_family(s: &str) -> Result<Option<Family>, Status> {
    match s {
        "" => Ok(None),
        "ipv4" | "ipv4-unicast" => Ok(Some(Family::Ipv4Unicast)),
        "ipv6" | "ipv6-unicast" => Ok(Some(Family::Ipv6Unicast)),
        other => Err(Status::invalid_argument(format!(
            "family '{other}': expected ipv4 or ipv6"
        ))),
    }
}

fn parse_prefixes(list: &[String]) -> Result<Vec<Prefix>, Status> {
    list.iter()
        .map(|s| {
            s.parse::<Prefix>().map(|p| p.trunc()).map_err(|_| {
                Status::invalid_argument(format!("'{s}' is not a prefix (e.g. 10.1.0.0/26)"))
            })
        })
        .collect()
}

fn unix_secs(t: std::time::SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub(crate) fn peer_type(t: PeerType) -> pb::PeerType {
    match t {
        PeerType::Mesh => pb::PeerType::NodeMesh,
        PeerType::Global => pb::PeerType::Global,
        PeerType::NodeSpecific => pb::PeerType::NodeSpecific,
        PeerType::RouteReflectorClient => pb::PeerType::RouteReflectorClient,
        PeerType::RouteReflector => pb::PeerType::RouteReflector,
    }
}

fn peer_to_pb(p: PeerStatus) -> pb::Peer {
    pb::Peer {
        address: p.address.to_string(),
        port: u32::from(p.port),
        asn: p.asn,
        r#type: peer_type(p.peer_type) as i32,
        state: p.state.to_string(),
        since: unix_secs(p.since),
        last_error: p.last_error.unwrap_or_default(),
        prefixes_received: p.prefixes_received,
        prefixes_accepted: p.prefixes_accepted,
        prefixes_advertised: p.prefixes_advertised,
        description: p.description.unwrap_or_default(),
        router_id: p.router_id.map(|r| r.to_string()).unwrap_or_default(),
        hold_time: u32::from(p.hold_time),
        route_reflector_client: p.rr_client,
        updates_received: p.updates_received,
        updates_sent: p.updates_sent,
        local_port: p.local_port.map(u32::from).unwrap_or(0),
        bfd: p.bfd.map(bfd_to_pb),
    }
}

fn bfd_to_pb(b: crate::bfd::PeerBfd) -> pb::Bfd {
    use crate::bfd::packet::micros;
    let s = &b.snapshot;
    pb::Bfd {
        state: s.state.to_string(),
        remote_state: s.remote_state.to_string(),
        local_diagnostic: s.local_diag.to_string(),
        remote_diagnostic: s.remote_diag.to_string(),
        desired_min_tx_us: micros(b.timers.desired_min_tx),
        required_min_rx_us: micros(b.timers.required_min_rx),
        detect_multiplier: u32::from(b.timers.detect_mult),
        tx_interval_us: micros(s.tx_interval),
        detection_time_us: micros(s.detection_time),
        since: unix_secs(b.since),
        downs: b.downs,
        local_discriminator: s.local_discr,
        remote_discriminator: s.remote_discr,
    }
}

pub(crate) fn route_to_pb(r: &RouteInfo) -> pb::Route {
    let a = &r.attrs;
    pb::Route {
        prefix: r.prefix.to_string(),
        next_hop: r.next_hop.to_string(),
        as_path: r.as_path_numbers(),
        peer: r.peer.map(|(addr, _)| addr.to_string()).unwrap_or_default(),
        best: r.best,
        local_pref: a.local_pref.unwrap_or(100),
        med: a.med,
        origin: match a.origin {
            Some(Origin::Igp) | None => "IGP",
            Some(Origin::Egp) => "EGP",
            Some(Origin::Incomplete) => "incomplete",
        }
        .to_string(),
        originator_id: a.originator_id.map(|o| o.to_string()).unwrap_or_default(),
        cluster_list: a.cluster_list.iter().map(|c| c.to_string()).collect(),
        communities: a
            .communities
            .iter()
            .map(|c| format!("{}:{}", c >> 16, c & 0xffff))
            .chain(
                a.large_communities
                    .iter()
                    .map(|l| format!("{}:{}:{}", l.global_admin, l.local_data1, l.local_data2)),
            )
            .collect(),
        local: r.peer.is_none(),
        peer_asn: r.peer.map(|(_, asn)| asn).unwrap_or(0),
        as_path_text: a.as_path.to_string(),
        multipath_next_hops: r.multipath.iter().map(|n| n.to_string()).collect(),
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::RouteEvent, Status>> + Send>>;

#[tonic::async_trait]
impl pb::bgp_server::Bgp for Api {
    async fn get_info(&self, _: Request<pb::GetInfoRequest>) -> Result<Response<pb::Info>, Status> {
        let i = self.speaker.info().await.map_err(unavailable)?;
        Ok(Response::new(pb::Info {
            router_id: i.router_id.to_string(),
            asn: i.asn,
            started_at: unix_secs(i.started_at),
            version: env!("CARGO_PKG_VERSION").to_string(),
            cluster_id: i.cluster_id.map(|c| c.to_string()).unwrap_or_default(),
            listen_port: u32::from(i.listen_port),
        }))
    }

    async fn list_peers(
        &self,
        _: Request<pb::ListPeersRequest>,
    ) -> Result<Response<pb::ListPeersResponse>, Status> {
        let peers = self.speaker.peers().await.map_err(unavailable)?;
        Ok(Response::new(pb::ListPeersResponse {
            peers: peers.into_iter().map(peer_to_pb).collect(),
        }))
    }

    async fn list_routes(
        &self,
        req: Request<pb::ListRoutesRequest>,
    ) -> Result<Response<pb::ListRoutesResponse>, Status> {
        let req = req.into_inner();
        let family = parse_family(&req.family)?;
        let routes = self
            .speaker
            .routes(family, req.all)
            .await
            .map_err(unavailable)?;
        Ok(Response::new(pb::ListRoutesResponse {
            routes: routes.iter().map(route_to_pb).collect(),
        }))
    }

    type WatchRoutesStream = EventStream;

    async fn watch_routes(
        &self,
        req: Request<pb::WatchRoutesRequest>,
    ) -> Result<Response<Self::WatchRoutesStream>, Status> {
        let family = parse_family(&req.into_inner().family)?;
        let start = self.speaker.watch(family).await.map_err(unavailable)?;
        let synced = || {
            Ok(pb::RouteEvent {
                kind: pb::route_event::Kind::Synced as i32,
                route: None,
            })
        };
        // SYNCED follows the table at once when it is complete; otherwise it comes on the
        // event stream once every peer delivered its routes (graceful restart's deferral).
        let initial = start
            .routes
            .iter()
            .map(|r| {
                Ok(pb::RouteEvent {
                    kind: pb::route_event::Kind::Add as i32,
                    route: Some(route_to_pb(r)),
                })
            })
            .chain(start.synced.then(synced))
            .collect::<Vec<_>>();
        let changes = tokio_stream::wrappers::BroadcastStream::new(start.events).filter_map(
            move |c| match c {
                Ok(WatchEvent::Synced) => Some(synced()),
                Ok(WatchEvent::Change(c)) if family.is_some_and(|f| f != Family::of(&c.prefix)) => {
                    None
                }
                Ok(WatchEvent::Change(c)) => Some(Ok(match &c.route {
                    Some(r) => pb::RouteEvent {
                        kind: pb::route_event::Kind::Add as i32,
                        route: Some(route_to_pb(r)),
                    },
                    None => pb::RouteEvent {
                        kind: pb::route_event::Kind::Withdraw as i32,
                        route: Some(pb::Route {
                            prefix: c.prefix.to_string(),
                            ..Default::default()
                        }),
                    },
                })),
                // The watcher fell behind: end the stream so it re-watches and gets a fresh table.
                Err(_) => Some(Err(Status::data_loss(
                    "route watch lagged behind; watch again",
                ))),
            },
        );
        let stream = tokio_stream::iter(initial).chain(changes);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn originate(
        &self,
        req: Request<pb::OriginateRequest>,
    ) -> Result<Response<pb::OriginateResponse>, Status> {
        let prefixes = parse_prefixes(&req.into_inner().prefixes)?;
        self.speaker
            .originate(prefixes)
            .await
            .map_err(unavailable)?;
        Ok(Response::new(pb::OriginateResponse {}))
    }

    async fn withdraw(
        &self,
        req: Request<pb::WithdrawRequest>,
    ) -> Result<Response<pb::WithdrawResponse>, Status> {
        let prefixes = parse_prefixes(&req.into_inner().prefixes)?;
        self.speaker.withdraw(prefixes).await.map_err(unavailable)?;
        Ok(Response::new(pb::WithdrawResponse {}))
    }

    async fn set_originated(
        &self,
        req: Request<pb::SetOriginatedRequest>,
    ) -> Result<Response<pb::SetOriginatedResponse>, Status> {
        let prefixes = parse_prefixes(&req.into_inner().prefixes)?;
        self.speaker
            .set_originated(prefixes)
            .await
            .map_err(unavailable)?;
        Ok(Response::new(pb::SetOriginatedResponse {}))
    }
}
