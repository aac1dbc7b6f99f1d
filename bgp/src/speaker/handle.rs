//! The speaker's request interface: what the gRPC API, the HTTP server and SIGHUP ask of the
//! speaker task, and the plain values it answers with.

use crate::config::{Config, PeerType};
use crate::fsm::State;
use crate::wire::{AsSegment, Family, PathAttributes, Prefix};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::{broadcast, mpsc, oneshot};

/// A peer as `node status` shows it.
#[derive(Debug, Clone)]
pub struct PeerStatus {
    pub address: IpAddr,
    pub port: u16,
    pub asn: u32,
    pub peer_type: PeerType,
    pub state: State,
    pub since: SystemTime,
    pub last_error: Option<String>,
    pub description: Option<String>,
    pub router_id: Option<Ipv4Addr>,
    pub hold_time: u16,
    pub rr_client: bool,
    pub prefixes_received: u64,
    pub prefixes_accepted: u64,
    pub prefixes_advertised: u64,
    pub updates_received: u64,
    pub updates_sent: u64,
    pub local_port: Option<u16>,
    /// Times the peer went over its `max-prefixes` limit.
    pub prefix_limit_exceeded: u64,
    /// The BFD session, when the neighbour has `bfd = true`.
    pub bfd: Option<crate::bfd::PeerBfd>,
}

/// A route as the API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteInfo {
    pub prefix: Prefix,
    pub next_hop: IpAddr,
    pub attrs: Arc<PathAttributes>,
    /// The peer it came from; `None` for a route this speaker originates.
    pub peer: Option<(IpAddr, u32)>,
    pub best: bool,
    /// Every next hop of the multipath (ECMP) route, `next_hop` first, when it has more than
    /// one; empty otherwise.
    pub multipath: Vec<IpAddr>,
}

impl RouteInfo {
    /// The ASNs of the AS_PATH in order (sets flattened), for clients that want numbers.
    pub fn as_path_numbers(&self) -> Vec<u32> {
        self.attrs
            .as_path
            .segments
            .iter()
            .flat_map(|s| match s {
                AsSegment::Sequence(v)
                | AsSegment::Set(v)
                | AsSegment::ConfedSequence(v)
                | AsSegment::ConfedSet(v) => v.iter().copied(),
            })
            .collect()
    }
}

/// What a route watcher receives after the table.
#[derive(Debug, Clone)]
pub enum WatchEvent {
    Change(RouteChange),
    /// The table is complete: every peer sent its End-of-RIB or timed out (RFC 4724 §4.1's
    /// deferral, so a restarted node's FIB is not pruned of routes still on their way).
    Synced,
}

/// What `watch` answers: the current best routes, whether they are complete already, and
/// every event after them.
#[derive(Debug)]
pub struct WatchStart {
    pub routes: Vec<RouteInfo>,
    /// When false, a [`WatchEvent::Synced`] follows on `events` once they are.
    pub synced: bool,
    pub events: broadcast::Receiver<WatchEvent>,
}

/// A best-path change: the new best route, or `None` when the prefix is gone.
#[derive(Debug, Clone)]
pub struct RouteChange {
    pub prefix: Prefix,
    pub route: Option<RouteInfo>,
}

/// What a reload changed.
#[derive(Debug, Clone, Default)]
pub struct ReloadSummary {
    pub added: Vec<IpAddr>,
    pub removed: Vec<IpAddr>,
    pub restarted: Vec<IpAddr>,
    pub unchanged: usize,
}

/// Static facts about the speaker.
#[derive(Debug, Clone)]
pub struct SpeakerInfo {
    pub router_id: Ipv4Addr,
    pub asn: u32,
    pub cluster_id: Option<Ipv4Addr>,
    pub started_at: SystemTime,
    pub listen_port: u16,
}

/// Requests the speaker task serves, each with its reply channel.
pub(crate) enum Request {
    Info(oneshot::Sender<SpeakerInfo>),
    Peers(oneshot::Sender<Vec<PeerStatus>>),
    Routes {
        family: Option<Family>,
        all: bool,
        reply: oneshot::Sender<Vec<RouteInfo>>,
    },
    Watch {
        family: Option<Family>,
        reply: oneshot::Sender<WatchStart>,
    },
    Originate {
        prefixes: Vec<Prefix>,
        reply: oneshot::Sender<()>,
    },
    Withdraw {
        prefixes: Vec<Prefix>,
        reply: oneshot::Sender<()>,
    },
    SetOriginated {
        prefixes: Vec<Prefix>,
        reply: oneshot::Sender<()>,
    },
    Reload {
        config: Box<Config>,
        reply: oneshot::Sender<ReloadSummary>,
    },
    Shutdown {
        graceful: bool,
        reply: oneshot::Sender<()>,
    },
    ReloadNeighbors {
        changed: Vec<crate::config::Neighbor>,
        removed: Vec<IpAddr>,
        reply: oneshot::Sender<ReloadSummary>,
    },
}

/// The speaker task is gone (shut down or crashed).
#[derive(Debug, thiserror::Error)]
#[error("the BGP speaker is not running")]
pub struct SpeakerGone;

/// A cheap, clonable handle to the speaker task.
#[derive(Clone)]
pub struct SpeakerHandle {
    pub(crate) tx: mpsc::Sender<Request>,
}

impl SpeakerHandle {
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Request,
    ) -> Result<T, SpeakerGone> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| SpeakerGone)?;
        rx.await.map_err(|_| SpeakerGone)
    }

    pub async fn info(&self) -> Result<SpeakerInfo, SpeakerGone> {
        self.ask(Request::Info).await
    }
    pub async fn peers(&self) -> Result<Vec<PeerStatus>, SpeakerGone> {
        self.ask(Request::Peers).await
    }
    pub async fn routes(
        &self,
        family: Option<Family>,
        all: bool,
    ) -> Result<Vec<RouteInfo>, SpeakerGone> {
        self.ask(|reply| Request::Routes { family, all, reply })
            .await
    }
    /// The current best routes and a receiver of every change after them.
    pub async fn watch(&self, family: Option<Family>) -> Result<WatchStart, SpeakerGone> {
        self.ask(|reply| Request::Watch { family, reply }).await
    }
    pub async fn originate(&self, prefixes: Vec<Prefix>) -> Result<(), SpeakerGone> {
        self.ask(|reply| Request::Originate { prefixes, reply })
            .await
    }
    pub async fn withdraw(&self, prefixes: Vec<Prefix>) -> Result<(), SpeakerGone> {
        self.ask(|reply| Request::Withdraw { prefixes, reply })
            .await
    }
    pub async fn set_originated(&self, prefixes: Vec<Prefix>) -> Result<(), SpeakerGone> {
        self.ask(|reply| Request::SetOriginated { prefixes, reply })
            .await
    }
    pub async fn reload(&self, config: Config) -> Result<ReloadSummary, SpeakerGone> {
        self.ask(|reply| Request::Reload {
            config: Box::new(config),
            reply,
        })
        .await
    }
    /// Applies only the neighbours that changed (new or other settings) and those removed;
    /// everything else stays as it is (cluster mode's answer to a Node event).
    pub async fn reload_neighbors(
        &self,
        changed: Vec<crate::config::Neighbor>,
        removed: Vec<IpAddr>,
    ) -> Result<ReloadSummary, SpeakerGone> {
        self.ask(|reply| Request::ReloadNeighbors {
            changed,
            removed,
            reply,
        })
        .await
    }
    /// Closes every session with a Cease NOTIFICATION and ends the speaker task.
    pub async fn shutdown(&self) -> Result<(), SpeakerGone> {
        self.ask(|reply| Request::Shutdown {
            graceful: false,
            reply,
        })
        .await
    }

    /// Graceful restart's stop (RFC 4724 §4.1): sessions whose peer negotiated graceful
    /// restart are closed without a NOTIFICATION, so it keeps our routes while we are away;
    /// the others get Cease. Leaves the restart marker for the next start.
    pub async fn graceful_shutdown(&self) -> Result<(), SpeakerGone> {
        self.ask(|reply| Request::Shutdown {
            graceful: true,
            reply,
        })
        .await
    }
}
