//! The speaker: one task that owns the RIB and every session, applies configuration, and serves
//! requests from the API. Sessions talk to it through events; it talks back with encoded UPDATEs.
//!
//! Single owner, no locks around the RIB: a session event is applied to the RIB, the resulting
//! exports are logged once in the [`outbox`] and encoded, once for all their recipients, when
//! a session's short queue has room.

mod bfd;
mod eor;
pub use eor::DEFAULT_ORIGINATE_WAIT;
mod graceful;
mod handle;
mod limits;
mod neighbors;
mod outbox;
pub use outbox::DEFAULT_LOG_LIMIT as DEFAULT_OUTBOX_LIMIT;
mod peers;
mod policy;
mod refresh;
mod shared;

pub use handle::{
    PeerStatus, ReloadSummary, RouteChange, RouteInfo, SpeakerGone, SpeakerHandle, SpeakerInfo,
    WatchEvent, WatchStart,
};

use crate::config::{Config, NextHop};
use crate::fsm::State;
use crate::rib::{Export, LocalConfig, NextHopMode, PeerInfo, Rib, RouteView};
use crate::session::{self, PeerConfig, PeerId, SessionEvent};
use crate::transport::Listener;
use crate::wire::{Family, Notification, Prefix, notif};
use bytes::Bytes;
use handle::Request;
use peers::PeerSlot;
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{broadcast, mpsc};
use tracing::{debug, info, warn};

/// Why the speaker could not start.
#[derive(Debug, thiserror::Error)]
pub enum SpeakerError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: crate::transport::TransportError,
    },
}

/// Session events (mostly decoded UPDATEs) waiting for the speaker. Deep enough for a cold
/// start's burst (a few events per peer): a queued event costs its few hundred bytes, while a
/// session waiting for room holds its handler's frame (~6 KiB) and its receive buffer (4 KiB+),
/// which at 999 peers all waiting at once was a third of bgpd's peak heap (issue 12).
const EVENT_QUEUE: usize = 4096;
/// Best-path changes a watcher may fall behind by before it must watch again (felix then
/// re-watches and gets a fresh table). tokio's broadcast allocates and writes every slot up
/// front (~144 bytes each): 16,384 slots were 2.3 MiB resident from the start (issue 12).
const WATCH_QUEUE: usize = 4096;

/// Where inbound connections for a configured peer go; shared with the listener.
type Dispatch = Arc<RwLock<HashMap<IpAddr, session::SessionHandle>>>;

/// The interface holding `local`, and its subnet if `remote` is inside it (a directly
/// connected peer). Read from the kernel when a session comes up.
fn session_link(local: IpAddr, remote: IpAddr) -> (Option<Arc<str>>, Option<ipnet::IpNet>) {
    let interfaces = match crate::autodetect::host::interfaces() {
        Ok(i) => i,
        Err(e) => {
            warn!(error = %e, "cannot read interface addresses; next hops to eBGP peers will be our own");
            return (None, None);
        }
    };
    let Some((name, net)) = interfaces.iter().find_map(|i| {
        i.addresses
            .iter()
            .find(|a| a.addr() == local)
            .map(|a| (i.name.as_str(), a.trunc()))
    }) else {
        return (None, None);
    };
    let shared = Some(net).filter(|n| n.prefix_len() < n.max_prefix_len() && n.contains(&remote));
    (Some(Arc::from(name)), shared)
}

/// The speaker task's state.
pub struct Speaker {
    /// The configuration without its neighbours: each is kept once, in its [`PeerSlot`].
    config: Config,
    rib: Rib,
    /// Boxed: a slot is ~800 bytes, and a map's spare buckets would hold that much each.
    peers: HashMap<PeerId, Box<PeerSlot>>,
    by_addr: HashMap<IpAddr, PeerId>,
    next_id: PeerId,
    originated: BTreeSet<Prefix>,
    /// What API clients (felix) asked to originate; the rest of `originated` is the
    /// configuration's (`originate`, cluster mode's service CIDRs), kept through SetOriginated.
    api_originated: BTreeSet<Prefix>,
    events_tx: mpsc::Sender<SessionEvent>,
    changes: broadcast::Sender<WatchEvent>,
    dispatch: Dispatch,
    listener: Option<Arc<Listener>>,
    started_at: SystemTime,
    started: Instant,
    /// Every configured peer delivered its table (or timed out): see [`graceful`].
    synced: bool,
    /// Set after a graceful stop: OPENs carry the Restart State bit until then.
    restarting_until: Option<Instant>,
    /// The graceful restart marker file (`<socket>.gr`).
    marker: PathBuf,
    /// The originator has set this node's prefixes, or the wait ran out: see [`eor`].
    origination_settled: bool,
    /// End-of-RIBs waiting for that.
    deferred_eor: Vec<eor::DeferredEor>,
    /// How long End-of-RIB waits for the originator after start: see [`eor`].
    originate_wait: Duration,
    /// The BFD service, once a neighbour wants it: see [`bfd`].
    bfd: Option<crate::bfd::BfdHandle>,
    /// What each Established peer is owed: see [`outbox`].
    outbox: outbox::Outbox,
    /// Peers whose session queue was full; their sessions report them on `ready` when not.
    blocked: std::collections::HashSet<PeerId>,
    ready: mpsc::UnboundedSender<PeerId>,
    /// Sessions' export policies and import chains, one per distinct value: see [`shared`].
    exports: shared::Shared<crate::policy::ExportPolicy>,
    imports: shared::Shared<crate::policy::FilterChain>,
}

/// How the speaker trades memory for back-pressure: process settings, not BGP configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// Weight of the outbox (roughly bytes owed to peers that are behind) above which the
    /// speaker stops taking session events until they catch up (`--outbox-limit`).
    pub outbox_limit: usize,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            outbox_limit: DEFAULT_OUTBOX_LIMIT,
        }
    }
}

impl Speaker {
    /// Starts the speaker: binds the BGP listener, starts a session per neighbour, originates
    /// the configured prefixes. Returns the handle and the task to await.
    pub async fn start(
        config: Config,
    ) -> Result<(SpeakerHandle, tokio::task::JoinHandle<()>), SpeakerError> {
        Speaker::start_tuned(config, Tuning::default()).await
    }

    /// [`Speaker::start`] with other [`Tuning`].
    pub async fn start_tuned(
        mut config: Config,
        tuning: Tuning,
    ) -> Result<(SpeakerHandle, tokio::task::JoinHandle<()>), SpeakerError> {
        let neighbors = std::mem::take(&mut config.neighbors);
        // Few decoded UPDATEs wait for the speaker: a reader that gets ahead is held back by TCP
        // flow control instead of by our memory (sessions keep their keepalives going meanwhile).
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let (req_tx, req_rx) = mpsc::channel(256);
        let (changes, _) = broadcast::channel(WATCH_QUEUE);
        let (ready, ready_rx) = mpsc::unbounded_channel();
        let dispatch: Dispatch = Arc::default();
        let listener = if config.listen_port != 0 {
            let addr = SocketAddr::new(config.listen_address, config.listen_port);
            let l = Arc::new(
                Listener::bind(addr).map_err(|source| SpeakerError::Listen { addr, source })?,
            );
            let d = dispatch.clone();
            let serving = l.clone();
            tokio::spawn(async move {
                serving
                    .serve(move |remote: SocketAddr| {
                        let handle = d.read().ok()?.get(&remote.ip()).cloned()?;
                        Some(move |stream| handle.accept(stream))
                    })
                    .await
            });
            info!(%addr, "listening for BGP connections");
            Some(l)
        } else {
            None
        };
        let mut rib = Rib::new(LocalConfig {
            asn: config.asn(),
            router_id: config.router_id(),
            cluster_id: config.cluster_id(),
        });
        rib.set_max_paths(*config.max_paths.get_ref() as usize);
        let marker = graceful::marker_path(&config.socket);
        let restart_time = *config.restart_time.get_ref();
        let restarting_until = graceful::restarted_gracefully(&marker, restart_time)
            .then(|| Instant::now() + Duration::from_secs(u64::from(restart_time)));
        if restarting_until.is_some() {
            info!(
                restart_time,
                "restarting after a graceful stop: OPENs carry the Restart State bit"
            );
        }
        let originate_wait = eor::originate_wait(
            config.await_originator,
            config.originate_wait.as_ref().map(|w| *w.get_ref()),
            restart_time,
        );
        let mut speaker = Speaker {
            rib,
            peers: HashMap::new(),
            by_addr: HashMap::new(),
            next_id: 1,
            originated: BTreeSet::new(),
            api_originated: BTreeSet::new(),
            events_tx,
            changes,
            dispatch,
            listener,
            started_at: SystemTime::now(),
            started: Instant::now(),
            synced: false,
            restarting_until,
            marker,
            origination_settled: originate_wait.is_none(),
            originate_wait: originate_wait.unwrap_or_default(),
            deferred_eor: Vec::new(),
            bfd: None,
            outbox: outbox::Outbox::with_limit(tuning.outbox_limit),
            blocked: std::collections::HashSet::new(),
            ready,
            exports: shared::Shared::default(),
            imports: shared::Shared::default(),
            config,
        };
        for n in neighbors {
            speaker.add_peer(n);
        }
        let prefixes = speaker.config.originated();
        speaker.originate(&prefixes).await;
        speaker.check_synced();
        let task = tokio::spawn(speaker.run(events_rx, req_rx, ready_rx));
        Ok((SpeakerHandle { tx: req_tx }, task))
    }

    async fn run(
        mut self,
        mut events: mpsc::Receiver<SessionEvent>,
        mut requests: mpsc::Receiver<Request>,
        mut ready: mpsc::UnboundedReceiver<PeerId>,
    ) {
        let mut tick = tokio::time::interval(graceful::TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                req = requests.recv() => match req {
                    Some(Request::Shutdown { graceful, reply }) => {
                        // Nobody reads the sessions' events from here on: closed, a full queue
                        // cannot hold a stopping session (and so the stop) forever.
                        events.close();
                        self.shutdown(graceful).await;
                        let _ = reply.send(());
                        return;
                    }
                    Some(req) => self.serve(req).await,
                    None => { events.close(); self.shutdown(false).await; return; }
                },
                _ = tick.tick() => {
                    self.gr_tick().await;
                    self.eor_tick().await;
                    self.limit_tick();
                }
                Some(peer) = ready.recv() => {
                    self.blocked.remove(&peer);
                    self.pump(peer);
                }
                // While the log is over its limit, sessions wait (and TCP holds their peers
                // back) until the slow recipients catch up.
                ev = events.recv(), if !self.outbox.is_full() => match ev {
                    Some(ev) => self.on_event(ev).await,
                    None => return,
                },
            }
        }
    }

    fn peer_config(&self, n: &crate::config::Neighbor) -> PeerConfig {
        PeerConfig {
            address: *n.address.get_ref(),
            port: n.port,
            local_as: n.local_asn(self.config.asn()),
            remote_as: n.asn,
            router_id: self.config.router_id(),
            hold_time: *n.hold_time.get_ref(),
            keepalive_time: n.keepalive_time.as_ref().map(|k| *k.get_ref()),
            connect_retry: Duration::from_secs(u64::from(*n.connect_retry.get_ref())),
            passive: n.passive,
            password: n.password.clone(),
            ttl_security: n.ttl_security.as_ref().map(|v| *v.get_ref()),
            multihop: n.multihop.as_ref().map(|v| *v.get_ref()),
            source_address: n.source_address,
            families: n.families(),
            description: n.description.clone(),
            graceful_restart: self
                .config
                .graceful_restart_for(n)
                .then(|| graceful::capability(self.config.restart_time_for(n), &n.families())),
            restarting_until: self.restarting_until,
        }
    }

    fn add_peer(&mut self, n: crate::config::Neighbor) {
        let id = self.next_id;
        self.next_id += 1;
        let addr = *n.address.get_ref();
        if let Some(l) = &self.listener
            && let Err(e) = l.set_md5(addr, n.password.as_ref().map(margay_common::Secret::expose))
        {
            warn!(peer = %addr, error = %e, "cannot set the TCP-MD5 key on the listener");
        }
        let handle = session::spawn(id, self.peer_config(&n), self.events_tx.clone());
        if let Ok(mut d) = self.dispatch.write() {
            d.insert(addr, handle.clone());
        }
        self.bfd_follow(&n);
        info!(peer = %addr, asn = n.asn, "neighbor configured");
        self.by_addr.insert(addr, id);
        self.peers
            .insert(id, Box::new(PeerSlot::new(n, handle, self.config.asn())));
    }

    async fn remove_peer(&mut self, id: PeerId, subcode: u8) {
        let Some(slot) = self.peers.remove(&id) else {
            return;
        };
        let addr = slot.address();
        self.by_addr.remove(&addr);
        if let Ok(mut d) = self.dispatch.write() {
            d.remove(&addr);
        }
        if let Some(l) = &self.listener {
            let _ = l.set_md5(addr, None);
        }
        self.bfd_forget(addr);
        self.outbox.leave(id);
        slot.handle
            .shutdown(Some(Notification::new(notif::CEASE, subcode, Bytes::new())))
            .await;
        let exports = self.rib.peer_down(id);
        self.send_exports(exports).await;
        self.publish_changes();
        info!(peer = %addr, "neighbor removed");
    }

    async fn on_event(&mut self, ev: SessionEvent) {
        match ev {
            SessionEvent::StateChanged {
                peer,
                state,
                last_error,
            } => {
                if let Some(slot) = self.peers.get_mut(&peer) {
                    // A session closed by its prefix limit keeps saying why.
                    let held = slot.limit.held_until.is_some();
                    slot.set_state(state, if held { None } else { last_error });
                }
            }
            SessionEvent::Established {
                peer,
                negotiated,
                ctx,
                local_addr,
                remote_addr,
            } => {
                let Some(slot) = self.peers.get_mut(&peer) else {
                    return;
                };
                info!(peer = %remote_addr, router_id = %negotiated.peer_router_id, "session established");
                slot.set_state(State::Established, None);
                slot.router_id = Some(negotiated.peer_router_id);
                slot.hold_time = negotiated.hold_time;
                slot.enhanced_route_refresh = negotiated.enhanced_route_refresh;
                slot.route_refresh = negotiated.route_refresh || negotiated.enhanced_route_refresh;
                slot.local_port = Some(local_addr.port());
                let families = negotiated.families.clone();
                let (interface, shared_subnet) = session_link(local_addr.ip(), remote_addr.ip());
                let neighbor = slot.neighbor.clone();
                let info = PeerInfo {
                    address: remote_addr.ip(),
                    asn: negotiated.peer_asn,
                    rr_client: slot.neighbor.route_reflector_client,
                    next_hop: match slot.neighbor.next_hop {
                        None => NextHopMode::Auto,
                        Some(NextHop::SelfAddr) => NextHopMode::SelfAddr,
                        Some(NextHop::Keep) => NextHopMode::Keep,
                    },
                    families: families.clone(),
                    local_address: local_addr.ip(),
                    shared_subnet,
                    router_id: negotiated.peer_router_id,
                    ctx,
                    role: neighbor.role(self.config.asn()),
                    interface,
                    export: self.exports.get(self.config.export_policy(&neighbor)),
                    import: self.imports.get(self.config.import_chain(&neighbor)),
                    allow_own_as: neighbor.allow_own_as(),
                    local_asn: neighbor.local_asn(self.config.asn()),
                };
                self.outbox.join(peer);
                self.blocked.remove(&peer);
                let exports = self.rib.peer_up(peer, info);
                self.send_exports(exports).await;
                self.gr_session_up(peer, &negotiated).await;
                // End-of-RIB (RFC 4724 §2) once the initial table is sent and what this node
                // originates is known.
                self.end_of_rib(peer, families, ctx).await;
                self.publish_changes();
            }
            SessionEvent::Update { peer, update } => {
                if self.held_by_limit(peer) {
                    return;
                }
                if let Some(slot) = self.peers.get_mut(&peer) {
                    slot.updates_received += 1;
                }
                if let Some(family) = update.end_of_rib_family() {
                    debug!(peer, %family, "End-of-RIB received");
                    self.gr_end_of_rib(peer, family).await;
                    return;
                }
                if let Some(reason) = &update.treat_as_withdraw {
                    warn!(peer, reason = %reason, "malformed UPDATE treated as withdraw (RFC 7606)");
                }
                for d in &update.discarded {
                    warn!(peer, attribute = %d, "malformed attribute discarded (RFC 7606)");
                }
                let exports = self.rib.apply_update(peer, &update);
                self.send_exports(exports).await;
                self.publish_changes();
                self.check_prefix_limit(peer).await;
            }
            SessionEvent::RouteRefresh { peer, refresh } => {
                self.on_route_refresh(peer, refresh).await;
            }
            SessionEvent::Down {
                peer,
                reason,
                retain,
            } => {
                if let Some(slot) = self.peers.get_mut(&peer) {
                    info!(peer = %slot.address(), %reason, "session down");
                    slot.router_id = None;
                }
                self.outbox.leave(peer);
                self.gr_session_down(peer, retain).await;
            }
        }
    }

    /// Sends an encoded message to one peer, behind what it is owed already.
    async fn send_to(&mut self, peer: PeerId, bytes: Bytes) {
        if self.outbox.push_raw(peer, vec![bytes]) {
            self.pump(peer);
        }
    }

    /// Logs each export once for all its recipients and lets each take what its session has
    /// room for; the rest is encoded when the session drains.
    async fn send_exports(&mut self, exports: Vec<Export>) {
        for ex in exports {
            for peer in self.outbox.push_export(ex) {
                self.pump(peer);
            }
        }
    }

    /// Moves what `peer` is owed into its session's queue while there is room; when full, the
    /// session reports the peer on `ready` once there is room again.
    fn pump(&mut self, peer: PeerId) {
        if self.blocked.contains(&peer) {
            return;
        }
        let Some(slot) = self.peers.get_mut(&peer) else {
            self.outbox.leave(peer);
            return;
        };
        while let Some(msg) = self.outbox.peek(peer) {
            match slot.handle.try_send(msg) {
                Ok(()) => slot.updates_sent += 1,
                Err(session::SessionError::Full) => {
                    self.blocked.insert(peer);
                    slot.handle.notify_room(&self.ready);
                    return;
                }
                // The session is going down; its Down event drops the rest.
                Err(_) => {}
            }
            self.outbox.advance(peer);
        }
    }

    /// Drains the RIB's best-path changes to the watchers.
    fn publish_changes(&mut self) {
        if self.changes.receiver_count() == 0 {
            // Nobody watches: stop collecting changes until somebody does.
            self.rib.set_track_best_changes(false);
            return;
        }
        let changes = self.rib.take_best_changes();
        if !changes.is_empty() {
            tracing::debug!(target: "route_path", changes = changes.len(), "bgpd: best-path changes to the watchers");
        }
        for c in changes {
            let route = c.route.map(|v| self.route_info(v));
            let _ = self.changes.send(WatchEvent::Change(RouteChange {
                prefix: c.prefix,
                route,
            }));
        }
    }

    fn route_info(&self, v: RouteView) -> RouteInfo {
        let peer = v
            .peer
            .and_then(|id| self.peers.get(&id))
            .map(|s| (s.address(), s.neighbor.asn));
        RouteInfo {
            prefix: v.prefix,
            next_hop: v.next_hop,
            attrs: v.attrs,
            peer,
            best: v.best,
            multipath: v.multipath,
        }
    }

    async fn originate(&mut self, prefixes: &[Prefix]) {
        for p in prefixes {
            let p = p.trunc();
            if self.originated.insert(p) {
                let exports = self.rib.originate(p, None);
                self.send_exports(exports).await;
            }
        }
        self.publish_changes();
    }

    async fn withdraw(&mut self, prefixes: &[Prefix]) {
        for p in prefixes {
            let p = p.trunc();
            if self.originated.remove(&p) {
                let exports = self.rib.withdraw_local(p);
                self.send_exports(exports).await;
            }
        }
        self.publish_changes();
    }

    async fn serve(&mut self, req: Request) {
        match req {
            Request::Info(reply) => {
                let _ = reply.send(SpeakerInfo {
                    router_id: self.config.router_id(),
                    asn: self.config.asn(),
                    cluster_id: self.config.cluster_id(),
                    started_at: self.started_at,
                    listen_port: self.config.listen_port,
                });
            }
            Request::Peers(reply) => {
                let mut out: Vec<PeerStatus> = self
                    .peers
                    .iter()
                    .map(|(id, slot)| {
                        let mut s = slot.status(self.rib.counters(*id));
                        if let Some(gr) = self.gr_status(*id) {
                            s.last_error = Some(gr);
                        }
                        s.bfd = self.bfd_status(s.address);
                        s
                    })
                    .collect();
                out.sort_by_key(|p| p.address);
                let _ = reply.send(out);
            }
            Request::Routes { family, all, reply } => {
                let _ = reply.send(self.routes(family, all));
            }
            Request::Watch { family, reply } => {
                self.rib.set_track_best_changes(true);
                let events = self.changes.subscribe();
                let _ = reply.send(WatchStart {
                    routes: self.routes(family, false),
                    synced: self.synced,
                    events,
                });
            }
            Request::Originate { prefixes, reply } => {
                self.api_originated
                    .extend(prefixes.iter().map(|p| p.trunc()));
                self.originate(&prefixes).await;
                self.settle_origination("Originate").await;
                let _ = reply.send(());
            }
            Request::Withdraw { prefixes, reply } => {
                let file: BTreeSet<Prefix> = self.config.originated().into_iter().collect();
                let prefixes: Vec<Prefix> = prefixes
                    .iter()
                    .map(|p| p.trunc())
                    .filter(|p| {
                        self.api_originated.remove(p);
                        !file.contains(p)
                    })
                    .collect();
                self.withdraw(&prefixes).await;
                let _ = reply.send(());
            }
            Request::SetOriginated { prefixes, reply } => {
                self.api_originated = prefixes.iter().map(|p| p.trunc()).collect();
                let wanted: BTreeSet<Prefix> = self
                    .api_originated
                    .iter()
                    .copied()
                    .chain(self.config.originated().into_iter().map(|p| p.trunc()))
                    .collect();
                let gone: Vec<Prefix> = self.originated.difference(&wanted).copied().collect();
                let new: Vec<Prefix> = wanted.difference(&self.originated).copied().collect();
                self.withdraw(&gone).await;
                self.originate(&new).await;
                self.settle_origination("SetOriginated").await;
                let _ = reply.send(());
            }
            Request::Reload { config, reply } => {
                let summary = self.reload(*config).await;
                let _ = reply.send(summary);
            }
            Request::ReloadNeighbors {
                changed,
                removed,
                reply,
            } => {
                let summary = self.reload_neighbors(changed, removed).await;
                let _ = reply.send(summary);
            }
            Request::Shutdown { .. } => unreachable!("handled in run"),
        }
    }

    fn routes(&self, family: Option<Family>, all: bool) -> Vec<RouteInfo> {
        let families = match family {
            Some(f) => vec![f],
            None => vec![Family::Ipv4Unicast, Family::Ipv6Unicast],
        };
        let mut out = Vec::new();
        for f in families {
            if all {
                out.extend(self.rib.iter_paths(f).map(|v| self.route_info(v)));
            } else {
                out.extend(self.rib.iter_best(f).map(|v| self.route_info(v)));
            }
        }
        out.sort_by(|a, b| a.prefix.cmp(&b.prefix).then(b.best.cmp(&a.best)));
        out
    }

    /// Applies a new configuration: sessions whose settings did not change are left alone.
    async fn reload(&mut self, mut new: Config) -> ReloadSummary {
        let neighbors = std::mem::take(&mut new.neighbors);
        let mut summary = ReloadSummary::default();
        let old_file: BTreeSet<Prefix> = self.config.originated().into_iter().collect();
        // What every peer's policy is made of besides its own neighbour settings: when none of
        // it changed, only peers whose settings changed need their policy looked at again (a
        // Node joining a 1,000-node mesh is then not 1,000 policy rebuilds).
        let shared_policy_changed = self.config.pools != new.pools
            || self.config.advertise != new.advertise
            || self.config.filters != new.filters
            || self.config.originated() != new.originated();
        let mut touched: Vec<PeerId> = Vec::new();
        let identity_changed = new.router_id() != self.config.router_id()
            || new.asn() != self.config.asn()
            || new.cluster_id() != self.config.cluster_id();
        if identity_changed {
            warn!("router-id, asn or cluster-id changed: every session restarts");
            let ids: Vec<PeerId> = self.peers.keys().copied().collect();
            for id in ids {
                if let Some(s) = self.peers.get(&id) {
                    summary.restarted.push(s.address());
                }
                self.remove_peer(id, notif::OTHER_CONFIGURATION_CHANGE)
                    .await;
            }
            self.rib = Rib::new(LocalConfig {
                asn: new.asn(),
                router_id: new.router_id(),
                cluster_id: new.cluster_id(),
            });
            self.rib.set_max_paths(*new.max_paths.get_ref() as usize);
            let originated: Vec<Prefix> =
                std::mem::take(&mut self.originated).into_iter().collect();
            self.config = new;
            for n in neighbors {
                self.add_peer(n);
            }
            self.originate(&originated).await;
        } else {
            let wanted: HashMap<IpAddr, &crate::config::Neighbor> = neighbors
                .iter()
                .map(|n| (*n.address.get_ref(), n))
                .collect();
            let current: Vec<(PeerId, IpAddr)> = self
                .peers
                .iter()
                .map(|(id, s)| (*id, s.address()))
                .collect();
            for (id, addr) in current {
                if !wanted.contains_key(&addr) {
                    self.remove_peer(id, notif::PEER_DECONFIGURED).await;
                    summary.removed.push(addr);
                }
            }
            for n in &neighbors {
                self.set_neighbor(n, &mut summary, &mut touched).await;
            }
            self.config = new;
        }
        let max_paths = *self.config.max_paths.get_ref() as usize;
        if max_paths != self.rib.max_paths() {
            info!(max_paths, "max-paths changed");
            self.rib.set_max_paths(max_paths);
            self.publish_changes();
        }
        // Originated prefixes follow the file; those added over the API stay.
        let file: BTreeSet<Prefix> = self.config.originated().into_iter().collect();
        let gone: Vec<Prefix> = old_file
            .difference(&file)
            .filter(|p| !self.api_originated.contains(&p.trunc()))
            .copied()
            .collect();
        self.withdraw(&gone).await;
        let add: Vec<Prefix> = file.difference(&self.originated).copied().collect();
        self.originate(&add).await;
        if identity_changed || shared_policy_changed {
            self.apply_policy(None).await;
        } else if !touched.is_empty() {
            self.apply_policy(Some(touched)).await;
        }
        info!(
            added = summary.added.len(),
            removed = summary.removed.len(),
            restarted = summary.restarted.len(),
            unchanged = summary.unchanged,
            "configuration reloaded"
        );
        summary
    }

    /// Closes every session. `graceful`: those whose peer negotiated graceful restart close
    /// without a NOTIFICATION (the peer keeps our routes), and the restart marker is left.
    async fn shutdown(&mut self, graceful: bool) {
        // Before the sessions close: a peer then sees AdminDown, not a failed path.
        if let Some(b) = &self.bfd {
            b.shutdown().await;
        }
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        let mut kept = 0;
        for id in ids {
            if let Some(slot) = self.peers.remove(&id) {
                if graceful && slot.gr.peer_cap.is_some() && slot.state == State::Established {
                    kept += 1;
                    slot.handle.graceful_shutdown().await;
                } else {
                    slot.handle
                        .shutdown(Some(Notification::new(
                            notif::CEASE,
                            notif::ADMINISTRATIVE_SHUTDOWN,
                            Bytes::new(),
                        )))
                        .await;
                }
            }
        }
        if graceful {
            graceful::write_marker(&self.marker);
            info!(
                graceful_restart_peers = kept,
                "all sessions closed; peers with graceful restart keep our routes"
            );
        } else {
            info!("all sessions closed");
        }
    }
}
