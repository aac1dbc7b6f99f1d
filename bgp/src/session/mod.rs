//! One peer's session task: the I/O edge that drives a [`Fsm`](crate::fsm::Fsm) over TCP.
//!
//! The task owns the state machine, its timers (one `sleep_until` on [`Fsm::poll_timeout`](crate::fsm::Fsm::poll_timeout)),
//! outbound connect attempts, inbound connections handed over by the listener (with collision
//! detection, RFC 4271 §6.8), framing of received bytes and the write side. It reports to the
//! speaker through [`SessionEvent`]s; the speaker sends already-encoded UPDATEs through
//! [`SessionHandle::send`], a bounded queue, so a slow peer pushes back on its producer.

mod config;
mod conn;
mod mailbox;
mod task;

pub use config::PeerConfig;

use crate::fsm::{Negotiated, State};
use crate::wire::{CodecContext, Notification, RouteRefresh, Update};
use bytes::Bytes;
use mailbox::Mailbox;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

pub type PeerId = u32;

/// How many encoded messages may wait for one peer's socket. Few: what a peer is owed beyond
/// them waits unencoded in the speaker's shared log (`speaker::outbox`), not per session.
const OUTBOUND_QUEUE: usize = 32;

/// What a session tells the speaker. On the way up `Established` comes before the
/// `StateChanged` to Established; on the way down `Down` comes before the `StateChanged` that
/// leaves it. Events of one session arrive in order.
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
    /// The session left Established: routes learned from it must be flushed, unless
    /// `retain` and graceful restart was negotiated (RFC 4724 §4.2).
    Down {
        peer: PeerId,
        reason: String,
        /// No NOTIFICATION was exchanged (or the hold timer expired).
        retain: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("session is not established")]
    NotEstablished,
    #[error("session task has ended")]
    Closed,
    #[error("the session's outbound queue is full")]
    Full,
}

/// A command for the session task. Kept to 16 bytes (payloads boxed): commands wait in the
/// session's [`Mailbox`].
enum Command {
    Accept(Box<TcpStream>),
    Shutdown(Box<(Option<Notification>, oneshot::Sender<()>)>),
    GracefulStop(oneshot::Sender<()>),
    BfdDown,
}

/// The speaker's side of a session task. The task stops once every handle is dropped.
pub struct SessionHandle {
    id: PeerId,
    mail: Arc<Mailbox>,
}

impl Clone for SessionHandle {
    fn clone(&self) -> SessionHandle {
        self.mail.handle_cloned();
        SessionHandle {
            id: self.id,
            mail: self.mail.clone(),
        }
    }
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        self.mail.handle_dropped();
    }
}

impl std::fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionHandle")
            .field("id", &self.id)
            .field("state", &self.state())
            .finish()
    }
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Accept(s) => write!(f, "Accept({:?})", s.peer_addr().ok()),
            Command::Shutdown(b) => write!(f, "Shutdown({:?})", b.0),
            Command::GracefulStop(_) => write!(f, "GracefulStop"),
            Command::BfdDown => write!(f, "BfdDown"),
        }
    }
}

/// Starts the session task for one peer.
pub fn spawn(id: PeerId, config: PeerConfig, events: mpsc::Sender<SessionEvent>) -> SessionHandle {
    let mail = Arc::new(Mailbox::new(OUTBOUND_QUEUE));
    let task = task::Task::new(id, config, events, mail.clone());
    // Boxed: as an `async fn`'s argument moved into its body, the task would take its size
    // twice in the future (1 KiB of each session's 2.8 KiB; issue 12).
    tokio::spawn(Box::new(task).run());
    SessionHandle { id, mail }
}

impl SessionHandle {
    pub fn id(&self) -> PeerId {
        self.id
    }

    /// Queues an encoded UPDATE or ROUTE-REFRESH; waits while the queue is full. Fails when
    /// the session is not Established (the RIB sends the table again when it is).
    pub async fn send(&self, msg: Bytes) -> Result<(), SessionError> {
        self.mail.send(msg).await
    }

    /// Queues an encoded message if there is room now, without waiting.
    pub fn try_send(&self, msg: Bytes) -> Result<(), SessionError> {
        self.mail.try_send(msg)
    }

    /// Reports this session's id on `ready` once its outbound queue has room again: at once
    /// if it has now (or the session is not Established, or has ended). Costs no task.
    pub fn notify_room(&self, ready: &mpsc::UnboundedSender<PeerId>) {
        self.mail.notify_room(self.id, ready);
    }

    /// Hands over an inbound connection the listener accepted from this peer.
    pub fn accept(&self, stream: TcpStream) {
        if !self.mail.command(Command::Accept(Box::new(stream))) {
            tracing::debug!(peer = self.id, "session ended; inbound connection dropped");
        }
    }

    /// Sends the NOTIFICATION (Cease / Administrative Shutdown by default) if a connection is
    /// open, closes it and ends the task.
    pub async fn shutdown(self, notification: Option<Notification>) {
        let (tx, rx) = oneshot::channel();
        if self
            .mail
            .command(Command::Shutdown(Box::new((notification, tx))))
        {
            let _ = rx.await;
        }
    }

    /// Closes an Established session's connection without a NOTIFICATION, so a peer that
    /// negotiated graceful restart keeps our routes (RFC 4724 §4.1), and ends the task. Any
    /// other connection gets the default Cease.
    pub async fn graceful_shutdown(self) {
        let (tx, rx) = oneshot::channel();
        if self.mail.command(Command::GracefulStop(tx)) {
            let _ = rx.await;
        }
    }

    /// The BFD session with this peer went down (RFC 5882): close at once. Never waits, so
    /// the BFD thread may call it.
    pub fn bfd_down(&self) {
        let _ = self.mail.command(Command::BfdDown);
    }

    pub fn state(&self) -> State {
        self.mail.state()
    }
}
