//! One TCP connection to the peer, and the byte-level helpers around it: framing guard,
//! vectored writes, graceful close.

use crate::fsm::{Direction, Event};
use crate::transport::{self, TransportError};
use crate::wire::{self, CodecContext, Message, MessageError, Notification, notif};
use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// How long a closed connection is drained so the peer reads our NOTIFICATION.
const LINGER: Duration = Duration::from_secs(1);

/// The read room of a quiet connection: one standard-size message.
const QUIET_ROOM: usize = 4096;

/// One TCP connection to the peer.
pub(super) struct Conn {
    pub(super) reader: OwnedReadHalf,
    pub(super) writer: OwnedWriteHalf,
    /// Received bytes not yet framed. Holds no allocation while empty: a thousand idle
    /// sessions then hold no receive buffers between their keepalives.
    pub(super) buf: BytesMut,
    /// Room made before each read: small for a quiet peer (a thousand idle sessions must not
    /// hold 128 KiB each), doubled up to the caller's limit each time a read fills it.
    pub(super) room: usize,
    pub(super) dir: Direction,
    pub(super) local: SocketAddr,
    pub(super) remote: SocketAddr,
    /// Our OPEN went out already (on a colliding connection, before it was adopted).
    pub(super) open_sent: bool,
}

impl Conn {
    pub(super) fn new(stream: TcpStream, dir: Direction) -> io::Result<Conn> {
        let local = transport::normalize(stream.local_addr()?);
        let remote = transport::normalize(stream.peer_addr()?);
        let _ = stream.set_nodelay(true);
        let (reader, writer) = stream.into_split();
        Ok(Conn {
            reader,
            writer,
            buf: BytesMut::new(),
            room: QUIET_ROOM,
            dir,
            local,
            remote,
            open_sent: false,
        })
    }

    pub(super) async fn write_message(
        &mut self,
        msg: &Message,
        ctx: &CodecContext,
    ) -> io::Result<()> {
        let bytes = msg
            .to_bytes(ctx)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        self.writer.write_all(&bytes).await
    }

    /// Closes gracefully in the background: FIN after what was written, then read until the
    /// peer closes too (or a second passes), so a NOTIFICATION is not lost to a reset.
    pub(super) fn close(self) {
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

pub(super) type Connecting =
    Pin<Box<dyn Future<Output = Result<TcpStream, TransportError>> + Send>>;

impl Conn {
    /// Reads what already arrived, without waiting, with at most `max_room` made free first;
    /// WouldBlock when nothing did. The buffer is allocated only for the read and released
    /// again when the read left it empty.
    pub(super) fn try_read(&mut self, max_room: usize) -> io::Result<usize> {
        let want = self.room.min(max_room);
        let res = if sized_read(&self.buf, want) {
            let reader = &self.reader;
            read_sized(&mut self.buf, want, |b| reader.try_read(b))
        } else {
            self.buf.reserve(want);
            self.reader.try_read_buf(&mut self.buf)
        };
        if let Ok(n) = res
            && n >= self.room
        {
            self.room = (self.room * 2).min(max_room);
        }
        self.release_if_empty();
        res
    }

    /// Reads what already arrived like [`Conn::try_read`], but asks the kernel instead of
    /// tokio's readiness flag: the flag is only refreshed when the runtime polls its reactor,
    /// which a busy runtime may not have done for seconds while the peer's KEEPALIVEs sat in
    /// the socket (the hold timer then expired on a live peer).
    pub(super) fn read_now(&mut self, max_room: usize) -> io::Result<usize> {
        let want = self.room.min(max_room);
        let sock = socket2::SockRef::from(self.reader.as_ref());
        let res = if sized_read(&self.buf, want) {
            read_sized(&mut self.buf, want, |b| {
                let mut s: &socket2::Socket = &sock;
                std::io::Read::read(&mut s, b)
            })
        } else {
            self.buf.reserve(want);
            let res = sock.recv(self.buf.spare_capacity_mut());
            if let Ok(n) = res {
                // SAFETY: the kernel initialised the first `n` bytes of the spare capacity.
                unsafe { self.buf.set_len(self.buf.len() + n) };
            }
            res
        };
        if let Ok(n) = res
            && n >= self.room
        {
            self.room = (self.room * 2).min(max_room);
        }
        self.release_if_empty();
        res
    }

    /// Whether the peer sent bytes this side has not read yet (asked of the kernel, not of
    /// tokio's readiness flag), or unframed bytes wait in the buffer.
    pub(super) fn has_unread(&self) -> bool {
        let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        !self.buf.is_empty()
            || socket2::SockRef::from(self.reader.as_ref())
                .peek(&mut probe)
                .is_ok_and(|n| n > 0)
    }

    /// Drops the receive buffer's allocation when nothing is left in it (every frame handed
    /// out); frames already split off keep their own share alive.
    pub(super) fn release_if_empty(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = BytesMut::new();
        }
    }
}

/// Whether a read of at most `want` octets into `buf` goes through the stack: the buffer holds
/// nothing, and the connection is quiet (its reads have not been filling [`QUIET_ROOM`]).
fn sized_read(buf: &BytesMut, want: usize) -> bool {
    buf.capacity() == 0 && want <= QUIET_ROOM
}

/// Reads at most `want` octets (no more than [`QUIET_ROOM`]) with `read` into a stack buffer and
/// keeps them in `buf` (empty) in an allocation of exactly their size: a KEEPALIVE costs 19
/// octets, not a 4 KiB buffer. At a cold start all 999 sessions read at once and their buffers
/// were 2.6 MiB of the peak heap (issue 12).
fn read_sized(
    buf: &mut BytesMut,
    want: usize,
    read: impl FnOnce(&mut [u8]) -> io::Result<usize>,
) -> io::Result<usize> {
    let mut stack = [0u8; QUIET_ROOM];
    let res = read(&mut stack[..want.min(QUIET_ROOM)]);
    if let Ok(n) = res
        && n > 0
    {
        *buf = BytesMut::from(&stack[..n]);
    }
    res
}

/// Reads what is there into the connection's buffer, with at most `max_room` made free first;
/// waits for the socket to be readable with no buffer held (cancel-safe: nothing is read
/// until the socket is ready).
pub(super) async fn read_some(conn: &mut Option<Conn>, max_room: usize) -> io::Result<usize> {
    match conn {
        Some(c) => loop {
            c.release_if_empty();
            c.reader.readable().await?;
            match c.try_read(max_room) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                res => return res,
            }
        },
        None => std::future::pending().await,
    }
}

pub(super) async fn finish_connect(
    connecting: &mut Option<Connecting>,
) -> Result<TcpStream, TransportError> {
    match connecting {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// Decodes one framed message; a panic in the decoder closes this session only.
pub(super) fn decode_guarded(frame: &[u8], ctx: &CodecContext) -> Result<Message, Event> {
    match catch_unwind(AssertUnwindSafe(|| wire::decode(frame, ctx))) {
        Ok(Ok(msg)) => Ok(msg),
        Ok(Err(e)) => {
            // The NOTIFICATION's code says which kind of error; this says which octets.
            tracing::warn!(error = %e, len = frame.len(), message = %hex_prefix(frame), "malformed message received");
            Err(error_event(&e))
        }
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

/// The first octets of a message in hex, enough to see the offending attribute in a log.
fn hex_prefix(frame: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(2 * frame.len().min(128));
    for b in frame.iter().take(128) {
        let _ = write!(out, "{b:02x}");
    }
    if frame.len() > 128 {
        out.push_str("...");
    }
    out
}

/// The FSM event for a decoding error, carrying the NOTIFICATION it calls for.
pub(super) fn error_event(e: &MessageError) -> Event {
    let n = e.notification();
    match n.code {
        notif::MESSAGE_HEADER_ERROR => Event::BgpHeaderErr(n),
        notif::OPEN_MESSAGE_ERROR => Event::BgpOpenMsgErr(n),
        _ => Event::UpdateMsgErr(n),
    }
}

/// Writes every buffer, several per system call, keeping partially written ones.
pub(super) async fn write_all_vectored(
    w: &mut OwnedWriteHalf,
    bufs: &mut VecDeque<Bytes>,
) -> io::Result<()> {
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

pub(super) fn collision_cease() -> Notification {
    Notification::new(
        notif::CEASE,
        notif::CONNECTION_COLLISION_RESOLUTION,
        Bytes::new(),
    )
}
