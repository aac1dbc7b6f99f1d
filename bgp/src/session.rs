//! One peer's session task: the I/O edge that drives a [`Fsm`] over TCP.
//!
//! The task owns the state machine, its timers (one `sleep_until` on [`Fsm::poll_timeout`]),
//! outbound connect attempts, inbound connections handed over by the listener (with collision
//! detection, RFC 4271 §6.8), framing of received bytes and the write side. It reports to the
//! speaker through [`SessionEvent`]s; the speaker sends already-encoded UPDATEs through
//! [`SessionHandle::send`], a bounded queue, so a slow peer pushes back on its producer.

use crate::fsm::{
    Action, Direction, Event, Fsm, FsmConfig, Negotiated, State, collision_winner, describe,
};
use crate::transport::{self, ConnectOptions, TransportError, TtlMode, os_text};
use crate::wire::{
    self, CodecContext, Family, Message, MessageError, Notification, Open, RouteRefresh, Update,
    notif,
};
use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IoSlice};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot, watch};

pub type PeerId = u32;

/// How many encoded messages may wait for one peer's socket before `send` waits.
const OUTBOUND_QUEUE: usize = 4096;
/// Most octets written in one vectored write batch.
const BATCH_BYTES: usize = 1 << 20;
/// How long a closed connection is drained so the peer reads our NOTIFICATION.
const LINGER: Duration = Duration::from_secs(1);

/// One peer as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub address: IpAddr,
    /// The peer's port (179).
    pub port: u16,
    pub local_as: u32,
    pub remote_as: u32,
    pub router_id: Ipv4Addr,
    /// Hold Time we propose (90).
    pub hold_time: u16,
    pub connect_retry: Duration,
    /// Only accept connections from the peer, never connect.
    pub passive: bool,
    /// TCP-MD5 password (RFC 2385).
    pub password: Option<String>,
    /// GTSM (RFC 5082): the peer is at most this many hops away.
    pub ttl_security: Option<u8>,
    /// eBGP multihop: send with this TTL.
    pub multihop: Option<u8>,
    pub source_address: Option<IpAddr>,
    pub families: Vec<Family>,
    pub description: Option<String>,
}

impl PeerConfig {
    /// A peer with the defaults: port 179, hold time 90 s, connect retry 120 s, IPv4 unicast
    /// (plus IPv6 unicast when the peer's address is IPv6).
    pub fn new(address: IpAddr, local_as: u32, remote_as: u32, router_id: Ipv4Addr) -> Self {
        let families = match address {
            IpAddr::V4(_) => vec![Family::Ipv4Unicast],
            IpAddr::V6(_) => vec![Family::Ipv4Unicast, Family::Ipv6Unicast],
        };
        PeerConfig {
            address,
            port: transport::BGP_PORT,
            local_as,
            remote_as,
            router_id,
            hold_time: 90,
            connect_retry: Duration::from_secs(120),
            passive: false,
            password: None,
            ttl_security: None,
            multihop: None,
            source_address: None,
            families,
            description: None,
        }
    }

    /// The state machine's configuration. The first back-off after an error is the connect
    /// retry time, at most 5 s; it doubles up to 2 minutes.
    pub fn fsm_config(&self) -> FsmConfig {
        let mut c = FsmConfig::new(self.local_as, self.remote_as, self.router_id);
        c.hold_time = self.hold_time;
        c.connect_retry = self.connect_retry;
        c.passive = self.passive;
        c.families = self.families.clone();
        c.idle_hold_time = self.connect_retry.min(Duration::from_secs(5));
        c
    }

    /// GTSM wins over multihop when both are set.
    pub fn ttl_mode(&self) -> TtlMode {
        match (self.ttl_security, self.multihop) {
            (Some(hops), _) => TtlMode::Security(hops),
            (None, Some(ttl)) => TtlMode::Multihop(ttl),
            (None, None) => TtlMode::Default,
        }
    }

    pub fn connect_options(&self) -> ConnectOptions {
        let mut o = ConnectOptions::new(SocketAddr::new(self.address, self.port));
        o.source = self.source_address;
        o.password = self.password.clone();
        o.ttl = self.ttl_mode();
        // Shorter than the ConnectRetryTimer, so a timeout is reported before the next try.
        o.timeout =
            (self.connect_retry * 3 / 4).clamp(Duration::from_millis(500), Duration::from_secs(30));
        o
    }
}

/// What a session tells the speaker.
#[allow(clippy::large_enum_variant)] // UPDATEs dominate; boxing would cost an allocation each.
#[derive(Debug, Clone)]
pub enum SessionEvent {
    StateChanged {
        peer: PeerId,
        state: State,
        last_error: Option<String>,
    },
    Established {
        peer: PeerId,
        negotiated: Negotiated,
        ctx: CodecContext,
        local_addr: SocketAddr,
        remote_addr: SocketAddr,
    },
    /// A decoded UPDATE (RFC 7606 treat-as-withdraw already flagged by the codec).
    Update {
        peer: PeerId,
        update: Update,
    },
    RouteRefresh {
        peer: PeerId,
        refresh: RouteRefresh,
    },
    /// The session left Established: routes learned from it must be flushed.
    Down {
        peer: PeerId,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("session is not established")]
    NotEstablished,
    #[error("session task has ended")]
    Closed,
}

/// What `send` checks: the state, and which Established period a message belongs to, so a
/// message queued for a session that went down is never sent on the next one.
#[derive(Debug, Clone, Copy)]
struct Snapshot {
    state: State,
    generation: u64,
}

enum Command {
    Accept(TcpStream),
    Shutdown(Option<Notification>, oneshot::Sender<()>),
}

/// The speaker's side of a session task.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    id: PeerId,
    commands: mpsc::UnboundedSender<Command>,
    outbound: mpsc::Sender<(u64, Bytes)>,
    snapshot: watch::Receiver<Snapshot>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Accept(s) => write!(f, "Accept({:?})", s.peer_addr().ok()),
            Command::Shutdown(n, _) => write!(f, "Shutdown({n:?})"),
        }
    }
}

/// Starts the session task for one peer.
pub fn spawn(id: PeerId, config: PeerConfig, events: mpsc::Sender<SessionEvent>) -> SessionHandle {
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (out_tx, out_rx) = mpsc::channel(OUTBOUND_QUEUE);
    let (snap_tx, snap_rx) = watch::channel(Snapshot {
        state: State::Idle,
        generation: 0,
    });
    let task = Task {
        id,
        fsm: Fsm::new(config.fsm_config()),
        config,
        events,
        commands: cmd_rx,
        outbound: out_rx,
        snapshot: snap_tx,
        conn: None,
        pending: None,
        connecting: None,
        ctx: CodecContext::default(),
        generation: 0,
        queue: VecDeque::new(),
        reported: State::Idle,
        write_error: None,
    };
    tokio::spawn(task.run());
    SessionHandle {
        id,
        commands: cmd_tx,
        outbound: out_tx,
        snapshot: snap_rx,
    }
}

impl SessionHandle {
    pub fn id(&self) -> PeerId {
        self.id
    }

    /// Queues an encoded UPDATE or ROUTE-REFRESH; waits while the queue is full. Fails when
    /// the session is not Established (the RIB sends the table again when it is).
    pub async fn send(&self, msg: Bytes) -> Result<(), SessionError> {
        let snap = *self.snapshot.borrow();
        if snap.state != State::Established {
            return Err(SessionError::NotEstablished);
        }
        self.outbound
            .send((snap.generation, msg))
            .await
            .map_err(|_| SessionError::Closed)
    }

    /// Hands over an inbound connection the listener accepted from this peer.
    pub fn accept(&self, stream: TcpStream) {
        if self.commands.send(Command::Accept(stream)).is_err() {
            tracing::debug!(peer = self.id, "session ended; inbound connection dropped");
        }
    }

    /// Sends the NOTIFICATION (Cease / Administrative Shutdown by default) if a connection is
    /// open, closes it and ends the task.
    pub async fn shutdown(self, notification: Option<Notification>) {
        let (tx, rx) = oneshot::channel();
        if self
            .commands
            .send(Command::Shutdown(notification, tx))
            .is_ok()
        {
            let _ = rx.await;
        }
    }

    pub fn state(&self) -> State {
        self.snapshot.borrow().state
    }
}

/// One TCP connection to the peer.
struct Conn {
    reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
    buf: BytesMut,
    dir: Direction,
    local: SocketAddr,
    remote: SocketAddr,
    /// Our OPEN went out already (on a colliding connection, before it was adopted).
    open_sent: bool,
}

impl Conn {
    fn new(stream: TcpStream, dir: Direction) -> io::Result<Conn> {
        let local = transport::normalize(stream.local_addr()?);
        let remote = transport::normalize(stream.peer_addr()?);
        let _ = stream.set_nodelay(true);
        let (reader, writer) = stream.into_split();
        Ok(Conn {
            reader,
            writer,
            buf: BytesMut::with_capacity(wire::MAX_MESSAGE_LEN * 2),
            dir,
            local,
            remote,
            open_sent: false,
        })
    }

    async fn write_message(&mut self, msg: &Message, ctx: &CodecContext) -> io::Result<()> {
        let bytes = msg
            .to_bytes(ctx)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        self.writer.write_all(&bytes).await
    }

    /// Closes gracefully in the background: FIN after what was written, then read until the
    /// peer closes too (or a second passes), so a NOTIFICATION is not lost to a reset.
    fn close(self) {
        let Conn {
            mut reader,
            mut writer,
            ..
        } = self;
        tokio::spawn(async move {
            let _ = writer.shutdown().await;
            let mut sink = [0u8; 4096];
            let _ = tokio::time::timeout(LINGER, async {
                while let Ok(n) = reader.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
            })
            .await;
        });
    }
}

type Connecting = Pin<Box<dyn Future<Output = Result<TcpStream, TransportError>> + Send>>;

struct Task {
    id: PeerId,
    config: PeerConfig,
    fsm: Fsm,
    events: mpsc::Sender<SessionEvent>,
    commands: mpsc::UnboundedReceiver<Command>,
    outbound: mpsc::Receiver<(u64, Bytes)>,
    snapshot: watch::Sender<Snapshot>,
    /// The connection the FSM drives.
    conn: Option<Conn>,
    /// A colliding inbound connection: our OPEN sent, waiting for the peer's.
    pending: Option<Conn>,
    connecting: Option<Connecting>,
    ctx: CodecContext,
    generation: u64,
    queue: VecDeque<Event>,
    reported: State,
    write_error: Option<String>,
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

async fn read_some(conn: &mut Option<Conn>, reserve: usize) -> io::Result<usize> {
    match conn {
        Some(c) => {
            c.buf.reserve(reserve);
            c.reader.read_buf(&mut c.buf).await
        }
        None => std::future::pending().await,
    }
}

async fn finish_connect(connecting: &mut Option<Connecting>) -> Result<TcpStream, TransportError> {
    match connecting {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// Decodes one framed message; a panic in the decoder closes this session only.
fn decode_guarded(frame: &[u8], ctx: &CodecContext) -> Result<Message, Event> {
    match catch_unwind(AssertUnwindSafe(|| wire::decode(frame, ctx))) {
        Ok(Ok(msg)) => Ok(msg),
        Ok(Err(e)) => Err(error_event(&e)),
        Err(_) => {
            tracing::error!(len = frame.len(), "decoder panicked on a received message");
            Err(Event::BgpHeaderErr(Notification::new(
                notif::CEASE,
                0,
                Bytes::new(),
            )))
        }
    }
}

/// The FSM event for a decoding error, carrying the NOTIFICATION it calls for.
fn error_event(e: &MessageError) -> Event {
    let n = e.notification();
    match n.code {
        notif::MESSAGE_HEADER_ERROR => Event::BgpHeaderErr(n),
        notif::OPEN_MESSAGE_ERROR => Event::BgpOpenMsgErr(n),
        _ => Event::UpdateMsgErr(n),
    }
}

/// Writes every buffer, several per system call, keeping partially written ones.
async fn write_all_vectored(w: &mut OwnedWriteHalf, bufs: &mut VecDeque<Bytes>) -> io::Result<()> {
    while !bufs.is_empty() {
        let slices: Vec<IoSlice<'_>> = bufs.iter().take(256).map(|b| IoSlice::new(b)).collect();
        let mut n = w.write_vectored(&slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            let Some(front) = bufs.front_mut() else { break };
            if n >= front.len() {
                n -= front.len();
                bufs.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }
    Ok(())
}

fn collision_cease() -> Notification {
    Notification::new(
        notif::CEASE,
        notif::CONNECTION_COLLISION_RESOLUTION,
        Bytes::new(),
    )
}

impl Task {
    async fn run(mut self) {
        let start = if self.config.passive {
            Event::ManualStartPassive
        } else {
            Event::ManualStart
        };
        self.dispatch(start).await;
        loop {
            let deadline = self.fsm.poll_timeout();
            let sleep_to = deadline
                .map(tokio::time::Instant::from_std)
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86400));
            let established = self.fsm.state() == State::Established && self.conn.is_some();
            let reserve = self.ctx.max_message_len();
            tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Accept(stream)) => self.on_inbound(stream).await,
                    Some(Command::Shutdown(n, done)) => {
                        self.stop(n).await;
                        let _ = done.send(());
                        return;
                    }
                    None => {
                        self.stop(None).await;
                        return;
                    }
                },
                _ = tokio::time::sleep_until(sleep_to), if deadline.is_some() => {
                    let actions = self.fsm.handle_timeout(now());
                    self.execute(actions).await;
                    self.dispatch_queued().await;
                }
                res = finish_connect(&mut self.connecting) => {
                    self.connecting = None;
                    match res.and_then(|s| Conn::new(s, Direction::Outbound).map_err(Into::into)) {
                        Ok(conn) => {
                            tracing::debug!(peer = self.id, remote = %conn.remote, "connected");
                            self.conn = Some(conn);
                            self.dispatch(Event::TcpCrAcked).await;
                        }
                        Err(e) => self.dispatch(Event::TcpConnectionFails(e.to_string())).await,
                    }
                }
                res = read_some(&mut self.conn, reserve) => match res {
                    Ok(0) => {
                        let text = "Connection closed".to_string();
                        self.dispatch(Event::TcpConnectionFails(text)).await;
                    }
                    Ok(_) => self.process_frames().await,
                    Err(e) => {
                        let text = format!("Socket: {}", os_text(&e));
                        self.dispatch(Event::TcpConnectionFails(text)).await;
                    }
                },
                res = read_some(&mut self.pending, wire::MAX_MESSAGE_LEN) => {
                    self.on_pending_read(res).await;
                }
                Some(first) = self.outbound.recv(), if established => self.send_batch(first).await,
            }
            self.settle().await;
        }
    }

    /// Feeds one event (and any it causes) through the FSM and carries out the actions.
    async fn dispatch(&mut self, event: Event) {
        self.queue.push_back(event);
        self.dispatch_queued().await;
    }

    async fn dispatch_queued(&mut self) {
        loop {
            if let Some(err) = self.write_error.take()
                && self.conn.is_some()
            {
                self.queue.push_back(Event::TcpConnectionFails(err));
            }
            let Some(event) = self.queue.pop_front() else {
                break;
            };
            let actions = self.fsm.handle(event, now());
            self.execute(actions).await;
        }
        self.report_state().await;
    }

    async fn execute(&mut self, actions: Vec<Action>) {
        if let Some(neg) = self.fsm.negotiated() {
            self.ctx = neg.codec_context();
        }
        for action in actions {
            match action {
                Action::Connect => {
                    if !self.config.passive {
                        let opts = self.config.connect_options();
                        self.connecting =
                            Some(Box::pin(async move { transport::connect(&opts).await }));
                    }
                }
                Action::DropConnection => {
                    self.connecting = None;
                    if let Some(conn) = self.conn.take() {
                        conn.close();
                    }
                    self.ctx = CodecContext::default();
                }
                Action::SendOpen(open) => {
                    let skip = self.conn.as_ref().is_some_and(|c| c.open_sent);
                    if !skip {
                        self.write(Message::Open(open)).await;
                    }
                    if let Some(c) = self.conn.as_mut() {
                        c.open_sent = true;
                    }
                }
                Action::SendKeepalive => self.write(Message::Keepalive).await,
                Action::SendNotification(n) => {
                    tracing::warn!(peer = self.id, notification = %describe(&n), "sending NOTIFICATION");
                    self.write(Message::Notification(n)).await;
                }
                Action::Established(neg) => self.on_established(*neg).await,
                Action::Down { reason } => {
                    tracing::info!(peer = self.id, %reason, "session down");
                    self.publish();
                    while self.outbound.try_recv().is_ok() {}
                    self.emit(SessionEvent::Down {
                        peer: self.id,
                        reason,
                    })
                    .await;
                }
            }
        }
    }

    async fn on_established(&mut self, neg: Negotiated) {
        self.ctx = neg.codec_context();
        self.generation += 1;
        self.publish();
        let Some(conn) = self.conn.as_ref() else {
            return;
        };
        tracing::info!(
            peer = self.id,
            remote = %conn.remote,
            asn = neg.peer_asn,
            router_id = %neg.peer_router_id,
            hold_time = neg.hold_time,
            "session established"
        );
        let event = SessionEvent::Established {
            peer: self.id,
            ctx: neg.codec_context(),
            negotiated: neg,
            local_addr: conn.local,
            remote_addr: conn.remote,
        };
        self.emit(event).await;
    }

    fn publish(&self) {
        self.snapshot.send_replace(Snapshot {
            state: self.fsm.state(),
            generation: self.generation,
        });
    }

    async fn report_state(&mut self) {
        let state = self.fsm.state();
        if state != self.reported {
            self.reported = state;
            self.publish();
            tracing::debug!(peer = self.id, %state, "state changed");
            self.emit(SessionEvent::StateChanged {
                peer: self.id,
                state,
                last_error: self.fsm.last_error().map(str::to_string),
            })
            .await;
        }
    }

    async fn emit(&mut self, event: SessionEvent) {
        // The speaker going away ends every session through its handles; nothing to do here.
        let _ = self.events.send(event).await;
    }

    /// A peer that takes no data for a whole hold time is as dead as a silent one.
    fn write_timeout(&self) -> Duration {
        match self.fsm.negotiated() {
            Some(n) if n.hold_time > 0 => Duration::from_secs(u64::from(n.hold_time)),
            _ => self.fsm.config().open_hold_time,
        }
    }

    async fn write(&mut self, msg: Message) {
        let limit = self.write_timeout();
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let res = tokio::time::timeout(limit, conn.write_message(&msg, &self.ctx)).await;
        if let Err(e) = res.unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into())) {
            self.write_error
                .get_or_insert_with(|| format!("Socket: {}", os_text(&e)));
        }
    }

    /// Reads every whole message in the buffer. `split_to` hands each frame out without
    /// moving the bytes behind it.
    async fn process_frames(&mut self) {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return;
            };
            let frame = match wire::frame_len(&conn.buf, &self.ctx) {
                Ok(None) => return,
                Ok(Some(n)) => conn.buf.split_to(n).freeze(),
                Err(e) => {
                    self.dispatch(error_event(&e)).await;
                    return;
                }
            };
            match decode_guarded(&frame, &self.ctx) {
                Ok(msg) => self.on_message(msg).await,
                Err(event) => self.dispatch(event).await,
            }
        }
    }

    async fn on_message(&mut self, msg: Message) {
        match msg {
            Message::Open(open) => self.dispatch(Event::BgpOpen(open)).await,
            Message::Keepalive => self.dispatch(Event::KeepAliveMsg).await,
            Message::Notification(n) => {
                tracing::warn!(peer = self.id, notification = %describe(&n), "received NOTIFICATION");
                let lost_collision = n.code == notif::CEASE
                    && n.subcode == notif::CONNECTION_COLLISION_RESOLUTION
                    && self.pending.is_some();
                if lost_collision {
                    // The peer kept our other connection: continue on it.
                    self.dispatch(Event::OpenCollisionDump).await;
                } else {
                    self.dispatch(Event::NotifMsg(n)).await;
                }
            }
            Message::Update(update) => {
                self.dispatch(Event::UpdateMsg).await;
                if self.fsm.state() == State::Established {
                    if let Some(reason) = &update.treat_as_withdraw {
                        tracing::warn!(peer = self.id, %reason, "UPDATE treated as withdraw");
                    }
                    self.emit(SessionEvent::Update {
                        peer: self.id,
                        update,
                    })
                    .await;
                }
            }
            Message::RouteRefresh(refresh) => {
                self.dispatch(Event::UpdateMsg).await;
                if self.fsm.state() == State::Established {
                    self.emit(SessionEvent::RouteRefresh {
                        peer: self.id,
                        refresh,
                    })
                    .await;
                }
            }
        }
    }

    async fn send_batch(&mut self, first: (u64, Bytes)) {
        let mut batch = VecDeque::new();
        let mut total = 0;
        let mut next = Some(first);
        while let Some((generation, msg)) = next.take() {
            if generation == self.generation {
                total += msg.len();
                batch.push_back(msg);
            }
            if total < BATCH_BYTES {
                next = self.outbound.try_recv().ok();
            }
        }
        if batch.is_empty() {
            return;
        }
        let limit = self.write_timeout();
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let res =
            tokio::time::timeout(limit, write_all_vectored(&mut conn.writer, &mut batch)).await;
        match res.unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into())) {
            Ok(()) => self.dispatch(Event::UpdateSent).await,
            Err(e) => {
                let text = format!("Socket: {}", os_text(&e));
                self.dispatch(Event::TcpConnectionFails(text)).await;
            }
        }
    }

    /// An inbound connection from the listener.
    async fn on_inbound(&mut self, stream: TcpStream) {
        if let Err(e) = transport::apply_ttl(&stream, self.config.ttl_mode()) {
            tracing::warn!(peer = self.id, error = %e, "cannot set TTL on inbound connection");
        }
        let mut conn = match Conn::new(stream, Direction::Inbound) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(peer = self.id, error = %e, "inbound connection already gone");
                return;
            }
        };
        tracing::debug!(peer = self.id, remote = %conn.remote, state = %self.fsm.state(), "inbound connection");
        match self.fsm.state() {
            State::Idle if !self.fsm.is_started() => {
                tracing::info!(peer = self.id, remote = %conn.remote, "refusing connection: session stopped");
                conn.close();
            }
            State::Idle | State::Connect | State::Active => self.adopt(conn, None).await,
            State::OpenSent | State::OpenConfirm if self.pending.is_none() => {
                // A collision: exchange OPENs on the new connection aside, then decide.
                let open = Message::Open(self.fsm.open_message());
                if conn
                    .write_message(&open, &CodecContext::default())
                    .await
                    .is_ok()
                {
                    conn.open_sent = true;
                    self.pending = Some(conn);
                } else {
                    conn.close();
                }
            }
            _ => {
                tracing::info!(peer = self.id, remote = %conn.remote, state = %self.fsm.state(), "refusing colliding connection");
                let msg = Message::Notification(collision_cease());
                let _ = conn.write_message(&msg, &CodecContext::default()).await;
                conn.close();
            }
        }
    }

    /// Makes `conn` the FSM's connection, with the peer's OPEN if it was read already.
    async fn adopt(&mut self, conn: Conn, open: Option<Open>) {
        if self.fsm.state() == State::Idle {
            self.dispatch(Event::AutomaticStart).await;
        }
        self.connecting = None;
        if let Some(old) = self.conn.replace(conn) {
            old.close();
        }
        self.dispatch(Event::TcpConnectionConfirmed).await;
        if let Some(open) = open {
            self.dispatch(Event::BgpOpen(open)).await;
        }
        self.process_frames().await;
    }

    async fn on_pending_read(&mut self, res: io::Result<usize>) {
        if !matches!(res, Ok(n) if n > 0) {
            if let Some(p) = self.pending.take() {
                p.close();
            }
            return;
        }
        let Some(p) = self.pending.as_mut() else {
            return;
        };
        let ctx = CodecContext::default();
        let frame = match wire::frame_len(&p.buf, &ctx) {
            Ok(None) => return,
            Ok(Some(n)) => p.buf.split_to(n).freeze(),
            Err(e) => {
                let _ = p
                    .write_message(&Message::Notification(e.notification()), &ctx)
                    .await;
                if let Some(p) = self.pending.take() {
                    p.close();
                }
                return;
            }
        };
        let Some(pending) = self.pending.take() else {
            return;
        };
        match decode_guarded(&frame, &ctx) {
            Ok(Message::Open(open)) => self.resolve_collision(pending, open).await,
            _ => pending.close(),
        }
    }

    /// Both connections have the peer's OPEN in hand (or the first one is gone): keep one.
    async fn resolve_collision(&mut self, mut pending: Conn, open: Open) {
        match (self.fsm.state(), self.conn.as_ref()) {
            (State::OpenSent | State::OpenConfirm, Some(conn)) => {
                let keep_pending = pending.dir == conn.dir
                    || collision_winner(
                        self.config.router_id,
                        open.bgp_identifier,
                        self.config.local_as,
                        open.asn(),
                    ) == pending.dir;
                tracing::info!(
                    peer = self.id,
                    kept = ?if keep_pending { pending.dir } else { conn.dir },
                    "connection collision resolved"
                );
                if keep_pending {
                    self.dispatch(Event::OpenCollisionDump).await;
                    self.adopt(pending, Some(open)).await;
                } else {
                    let msg = Message::Notification(collision_cease());
                    let _ = pending.write_message(&msg, &CodecContext::default()).await;
                    pending.close();
                }
            }
            (State::Idle | State::Connect | State::Active, _) if self.fsm.is_started() => {
                self.adopt(pending, Some(open)).await
            }
            _ => {
                let msg = Message::Notification(collision_cease());
                let _ = pending.write_message(&msg, &CodecContext::default()).await;
                pending.close();
            }
        }
    }

    /// After each event: if the FSM lost its connection while a colliding one waits, continue
    /// on that one.
    async fn settle(&mut self) {
        let waiting = matches!(self.fsm.state(), State::Connect | State::Active)
            || (self.fsm.state() == State::Idle && self.fsm.is_started());
        if self.conn.is_none()
            && waiting
            && let Some(pending) = self.pending.take()
        {
            self.adopt(pending, None).await;
        }
    }

    async fn stop(&mut self, notification: Option<Notification>) {
        self.dispatch(Event::ManualStop(notification)).await;
        if let Some(p) = self.pending.take() {
            p.close();
        }
    }
}
