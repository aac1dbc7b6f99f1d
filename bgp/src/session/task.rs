//! The session task's event loop: FSM actions carried out on sockets, collisions resolved,
//! events reported to the speaker.

use super::conn::{
    Conn, Connecting, collision_cease, decode_guarded, error_event, finish_connect, read_some,
    write_all_vectored,
};
use super::mailbox::Mailbox;
use super::{Command, PeerConfig, PeerId, SessionEvent};
use crate::fsm::{Action, Direction, Event, Fsm, Negotiated, State, collision_winner, describe};
use crate::transport::{self, os_text};
use crate::wire::{self, CodecContext, Message, Open, notif};
use bytes::Bytes;
use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
/// Room kept free in the receive buffer, so a busy peer is read in large chunks.
const READ_CHUNK: usize = 64 * 1024;

pub(super) struct Task {
    id: PeerId,
    config: PeerConfig,
    fsm: Fsm,
    events: mpsc::Sender<SessionEvent>,
    /// Commands and messages from the handles, and the state they read.
    mail: Arc<Mailbox>,
    /// The connection the FSM drives.
    conn: Option<Conn>,
    /// A colliding inbound connection: our OPEN sent, waiting for the peer's.
    pending: Option<Conn>,
    connecting: Option<Connecting>,
    ctx: CodecContext,
    queue: VecDeque<Event>,
    reported: State,
    write_error: Option<String>,
    /// Events the speaker's full queue did not take yet, in order: see [`Task::emit`].
    unsent: VecDeque<SessionEvent>,
}

/// What woke the session task.
enum Wake {
    /// The handles left commands or messages (or are all gone).
    Mail,
    Timer,
    Connected(Result<TcpStream, transport::TransportError>),
    Read(io::Result<usize>),
    PendingRead(io::Result<usize>),
    /// The speaker's queue has room for what [`Task::emit`] kept (`None`: it is gone).
    Room(Option<mpsc::OwnedPermit<SessionEvent>>),
}

/// A slot in the speaker's queue, through `events` when there is one to wait on.
async fn speaker_room(
    events: Option<mpsc::Sender<SessionEvent>>,
) -> Option<mpsc::OwnedPermit<SessionEvent>> {
    match events {
        Some(tx) => tx.reserve_owned().await.ok(),
        None => std::future::pending().await,
    }
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

impl Task {
    pub(super) fn new(
        id: PeerId,
        config: PeerConfig,
        events: mpsc::Sender<SessionEvent>,
        mail: Arc<Mailbox>,
    ) -> Task {
        Task {
            id,
            fsm: Fsm::new(config.fsm_config()),
            config,
            events,
            mail,
            conn: None,
            pending: None,
            connecting: None,
            ctx: CodecContext::default(),
            queue: VecDeque::new(),
            reported: State::Idle,
            write_error: None,
            unsent: VecDeque::new(),
        }
    }

    /// The task's loop. Only the waits live in this future; each wake is handled in a boxed
    /// future allocated for the time it runs, so an idle session holds the [`Task`] and its
    /// waits, not the frame of its deepest handler (a thousand sessions' futures were 7.8 KiB
    /// each; issue 12).
    pub(super) async fn run(mut self: Box<Self>) {
        self.run_loop().await;
        self.mail.end();
    }

    async fn run_loop(&mut self) {
        let start = if self.config.passive {
            Event::ManualStartPassive
        } else {
            Event::ManualStart
        };
        Box::pin(self.dispatch(start)).await;
        loop {
            let deadline = self.fsm.poll_timeout();
            let sleep_to = deadline
                .map(tokio::time::Instant::from_std)
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86400));
            let reserve = self.ctx.max_message_len().max(READ_CHUNK);
            let held = !self.unsent.is_empty();
            let wake = tokio::select! {
                () = self.mail.woken() => Wake::Mail,
                _ = tokio::time::sleep_until(sleep_to), if deadline.is_some() => Wake::Timer,
                res = finish_connect(&mut self.connecting) => Wake::Connected(res),
                // Nothing more is read while events wait for the speaker.
                res = read_some(&mut self.conn, reserve), if !held => Wake::Read(res),
                // The permit is used for the first kept event: dropped unused, it would pass
                // to the next waiting session while this one found the queue full again.
                permit = speaker_room(held.then(|| self.events.clone())) => Wake::Room(permit),
                res = read_some(&mut self.pending, wire::MAX_MESSAGE_LEN) => Wake::PendingRead(res),
            };
            if Box::pin(self.on_wake(wake)).await {
                self.hand_over_unsent();
                return;
            }
        }
    }

    /// Handles one wake of [`Task::run`]; true when the task ends.
    async fn on_wake(&mut self, wake: Wake) -> bool {
        match wake {
            Wake::Mail => {
                // Commands first, in order; each may end the task.
                while let Some(cmd) = self.mail.take_command() {
                    if self.on_command(cmd).await {
                        return true;
                    }
                    self.settle().await;
                }
                if self.mail.orphaned() {
                    self.stop(Event::ManualStop(None)).await;
                    return true;
                }
                let established = self.fsm.state() == State::Established && self.conn.is_some();
                if established {
                    let batch = self.mail.take_outbound();
                    if !batch.is_empty() {
                        self.send_batch(batch).await;
                    }
                }
            }
            Wake::Timer => {
                self.read_ready().await;
                // Handing the speaker those messages may have waited on its queue for longer
                // than the hold time; bytes the peer sent meanwhile still wait in the socket.
                // A peer that kept sending is alive, whatever this side got round to reading.
                if self.conn.as_ref().is_some_and(Conn::has_unread) {
                    self.fsm.peer_alive(now());
                }
                let actions = self.fsm.handle_timeout(now());
                self.execute(actions).await;
                self.dispatch_queued().await;
            }
            Wake::Connected(res) => {
                self.connecting = None;
                match res.and_then(|s| Conn::new(s, Direction::Outbound).map_err(Into::into)) {
                    Ok(conn) => {
                        tracing::debug!(peer = self.id, remote = %conn.remote, "connected");
                        self.conn = Some(conn);
                        self.dispatch(Event::TcpCrAcked).await;
                    }
                    Err(e) => {
                        self.dispatch(Event::TcpConnectionFails(e.to_string()))
                            .await
                    }
                }
            }
            Wake::Read(res) => match res {
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
            Wake::PendingRead(res) => self.on_pending_read(res).await,
            Wake::Room(permit) => self.flush_unsent(permit),
        }
        self.settle().await;
        false
    }

    /// Carries out one command from the handles; true when the task ends.
    async fn on_command(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Accept(stream) => self.on_inbound(*stream).await,
            Command::Shutdown(cmd) => {
                let (n, done) = *cmd;
                self.stop(Event::ManualStop(n)).await;
                let _ = done.send(());
                return true;
            }
            Command::BfdDown => self.dispatch(Event::BfdDown).await,
            Command::GracefulStop(done) => {
                self.stop(Event::GracefulStop).await;
                let _ = done.send(());
                return true;
            }
        }
        false
    }

    /// Reads what already arrived, without waiting: messages that came in while the task was
    /// busy elsewhere count before the hold timer is judged.
    async fn read_ready(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        // WouldBlock, end of stream and errors are left to the read branch to report.
        if let Ok(n) = conn.read_now(READ_CHUNK)
            && n > 0
        {
            self.process_frames().await;
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
                    self.write_error = None;
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
                Action::Down { reason, retain } => {
                    tracing::info!(peer = self.id, %reason, "session down");
                    // Drops what was queued for this Established period.
                    self.publish();
                    self.emit(SessionEvent::Down {
                        peer: self.id,
                        reason,
                        retain,
                    });
                }
            }
        }
    }

    async fn on_established(&mut self, neg: Negotiated) {
        self.ctx = neg.codec_context();
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
            keepalive = neg.keepalive,
            "session established"
        );
        let event = SessionEvent::Established {
            peer: self.id,
            ctx: neg.codec_context(),
            negotiated: neg,
            local_addr: conn.local,
            remote_addr: conn.remote,
        };
        self.emit(event);
    }

    /// Tells the handles the state; leaving Established empties the outbound queue.
    fn publish(&self) {
        self.mail.set_state(self.fsm.state());
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
            });
        }
    }

    /// Hands an event to the speaker, or, while the speaker's queue is full, keeps it (and every
    /// later one, in order) in [`Task::unsent`]: the task's loop then reads nothing more from
    /// the peer until they are handed over, so TCP holds the peer back, while KEEPALIVEs and
    /// what the speaker queued for this peer still go out (the speaker stops taking events
    /// while peers owe it a drain of its outbox, so a session that only waited would wait for
    /// itself; issue 12). The handler returns instead of waiting: a thousand sessions waiting
    /// at a cold start held a thousand handler frames (~6 KiB each) and receive buffers.
    fn emit(&mut self, event: SessionEvent) {
        if self.unsent.is_empty() {
            match self.events.try_send(event) {
                // The speaker going away ends every session through its handles.
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
                Err(mpsc::error::TrySendError::Full(event)) => self.hold(event),
            }
        } else {
            self.hold(event);
        }
    }

    /// Keeps `event` for later, growing the queue one step at a time while it is short (most
    /// sessions hold one or two events).
    fn hold(&mut self, event: SessionEvent) {
        if self.unsent.len() == self.unsent.capacity() {
            self.unsent.reserve_exact(self.unsent.len().max(1));
        }
        self.unsent.push_back(event);
    }

    /// Hands the speaker what [`Task::emit`] kept, the first through `permit`, the others
    /// while its queue takes them.
    fn flush_unsent(&mut self, permit: Option<mpsc::OwnedPermit<SessionEvent>>) {
        if let Some(p) = permit
            && let Some(event) = self.unsent.pop_front()
        {
            p.send(event);
        }
        // A speaker gone shows as a closed queue here.
        while let Some(event) = self.unsent.pop_front() {
            match self.events.try_send(event) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Closed(_)) => self.unsent.clear(),
                Err(mpsc::error::TrySendError::Full(event)) => {
                    self.unsent.push_front(event);
                    return;
                }
            }
        }
        self.unsent = VecDeque::new();
    }

    /// At the task's end, what is still kept goes to the speaker from a task of its own.
    fn hand_over_unsent(&mut self) {
        if self.unsent.is_empty() {
            return;
        }
        let rest = std::mem::take(&mut self.unsent);
        let events = self.events.clone();
        tokio::spawn(async move {
            for event in rest {
                if events.send(event).await.is_err() {
                    return;
                }
            }
        });
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
            let decoded = decode_guarded(&frame, &self.ctx);
            // The frame shares the receive buffer's allocation: not held while the message
            // waits for the speaker.
            drop(frame);
            match decoded {
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
                    });
                }
            }
            Message::RouteRefresh(refresh) => {
                self.dispatch(Event::UpdateMsg).await;
                if self.fsm.state() == State::Established {
                    self.emit(SessionEvent::RouteRefresh {
                        peer: self.id,
                        refresh,
                    });
                }
            }
        }
    }

    /// Writes what the speaker queued, several messages per system call.
    async fn send_batch(&mut self, mut batch: VecDeque<Bytes>) {
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
        if !transport::gtsm_admits(&stream, self.config.ttl_mode()) {
            tracing::info!(
                peer = self.id,
                "refusing connection: its SYN came from further away than ttl-security allows"
            );
            return;
        }
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
                let open = Message::Open(self.fsm.open_message(now()));
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

    async fn stop(&mut self, stop: Event) {
        self.dispatch(stop).await;
        if let Some(p) = self.pending.take() {
            p.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> Task {
        let config = PeerConfig::new(
            "192.0.2.1".parse().unwrap(),
            64512,
            64512,
            "192.0.2.2".parse().unwrap(),
        );
        let (events, _) = mpsc::channel(1);
        Task::new(1, config, events, Arc::new(Mailbox::new(1)))
    }

    /// What a thousand idle sessions hold is a thousand of these futures: the handlers' frames
    /// must stay out of it (they are boxed while they run).
    #[test]
    fn an_idle_session_holds_its_task_and_waits_only() {
        let size = std::mem::size_of::<Task>();
        let run = std::mem::size_of_val(&Box::new(task()).run());
        let mut t = task();
        let handler = std::mem::size_of_val(&t.on_wake(Wake::Timer));
        eprintln!("Task {size} B, run future {run} B, a wake's handler {handler} B");
        // 7.8 KiB before the handlers were boxed, 2.8 KiB before the task was (an `async fn`'s
        // `self` moved into its body took the task's size twice); ~0.8 KiB in a release
        // build now: the select's waits (timer, readiness, mailbox) and a pointer to the task.
        assert!(
            run < size,
            "the session future is {run} B for a {size} B task: the task is in it"
        );
        assert!(handler > run, "the handlers' frame is boxed, not inline");
    }

    fn state_event(state: State) -> SessionEvent {
        SessionEvent::StateChanged {
            peer: 1,
            state,
            last_error: None,
        }
    }

    fn state_of(ev: SessionEvent) -> State {
        match ev {
            SessionEvent::StateChanged { state, .. } => state,
            other => panic!("unexpected event {other:?}"),
        }
    }

    /// A full speaker queue keeps the events in the task, in order, instead of holding the
    /// handler; they go out, still in order, as the queue takes them.
    #[test]
    fn events_the_speaker_cannot_take_yet_wait_in_order() {
        let mut t = task();
        let (events, mut rx) = mpsc::channel(1);
        t.events = events;
        t.emit(state_event(State::Connect));
        t.emit(state_event(State::OpenSent));
        t.emit(state_event(State::OpenConfirm));
        assert_eq!(t.unsent.len(), 2, "the queue took one");
        t.flush_unsent(None);
        assert_eq!(t.unsent.len(), 2, "still full");
        assert_eq!(state_of(rx.try_recv().unwrap()), State::Connect);
        t.flush_unsent(None);
        assert_eq!(t.unsent.len(), 1);
        // A later event goes behind the kept ones, not past them.
        t.emit(state_event(State::Established));
        let mut got = vec![state_of(rx.try_recv().unwrap())];
        // The slot a waiting session was given is used for its first kept event.
        let permit = t.events.clone().try_reserve_owned().unwrap();
        t.flush_unsent(Some(permit));
        assert_eq!(t.unsent.len(), 1);
        got.push(state_of(rx.try_recv().unwrap()));
        t.flush_unsent(None);
        got.push(state_of(rx.try_recv().unwrap()));
        assert_eq!(
            got,
            [State::OpenSent, State::OpenConfirm, State::Established]
        );
        assert!(t.unsent.is_empty() && t.unsent.capacity() == 0);
        // A speaker gone: nothing is kept.
        drop(rx);
        t.emit(state_event(State::Idle));
        assert!(t.unsent.is_empty());
    }

    /// Commands wait in each session's mailbox, and every queued event is one
    /// [`SessionEvent`]: both are paid per peer (issue 12).
    #[test]
    fn per_peer_channel_slots_stay_small() {
        let command = std::mem::size_of::<Command>();
        let event = std::mem::size_of::<SessionEvent>();
        eprintln!("Command {command} B, SessionEvent {event} B");
        assert!(command <= 16, "a command is {command} B");
        assert!(event <= 512, "a session event is {event} B");
    }
}
