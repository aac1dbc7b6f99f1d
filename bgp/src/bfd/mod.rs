//! BFD (RFC 5880, single hop over UDP as RFC 5881) for the BGP sessions, coupled to them as
//! RFC 5882 says: a session leaving Up closes its BGP session at once.
//!
//! - [`packet`]: the Control packet codec, pure;
//! - [`session`]: one session's state machine and timers, pure;
//! - [`udp`]: the sockets;
//! - this module: the service that runs every session on a thread of its own, with its own
//!   runtime, so that a busy RIB (a large table arriving, the decision process running) never
//!   delays a Control packet or the detection of a silent peer.
//!
//! Timing: the runtime's timers have millisecond ticks and wake up to a tick or two late, so the
//! thread asks to be woken [`EARLY`] before a deadline and sleeps the rest precisely. Before any
//! session is expired the receive sockets are drained, and a packet's detection time counts from
//! the kernel's time of arrival, so neither a late thread nor a packet still queued when the
//! deadline comes brings a session down (or keeps one up) wrongly.

pub mod packet;
pub mod session;
pub mod udp;

pub use packet::{ControlPacket, Diagnostic, SessionState};
pub use session::{Snapshot, Timers, Transition};

use session::Session;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// Called on the BFD thread when a session fails (it must not block): it left Up for a failure
/// of the path, or its detection time expired while it re-synchronised with a peer's new
/// session ([`Transition::failure`]).
pub type OnDown = Box<dyn Fn(Transition) + Send + Sync>;

/// One session as the status, API and metrics show it.
#[derive(Debug, Clone)]
pub struct PeerBfd {
    pub peer: IpAddr,
    pub timers: Timers,
    pub snapshot: Snapshot,
    /// When the state last changed.
    pub since: SystemTime,
    /// Times the session failed (left Up for a failure of the path; not for the peer's
    /// AdminDown or its new session).
    pub downs: u64,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum BfdError {
    #[error("cannot listen for BFD on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the BFD thread: {0}")]
    Thread(std::io::Error),
}

enum Command {
    Add {
        peer: IpAddr,
        local: Option<IpAddr>,
        timers: Timers,
        on_down: OnDown,
    },
    Remove(IpAddr),
    /// Every session AdminDown (told to the peers), then the service ends.
    Shutdown(tokio::sync::oneshot::Sender<()>),
}

type StatusMap = Arc<RwLock<HashMap<IpAddr, PeerBfd>>>;

/// How long before a deadline the runtime's timer is asked to wake the thread.
const EARLY: Duration = Duration::from_millis(2);
/// The most a packet's arrival time is trusted to precede its handling (the two clocks are read
/// apart; a step of the wall clock must not expire a session early).
const MAX_QUEUED: Duration = Duration::from_millis(20);
/// Datagrams read from one socket per drain, so commands and timers still get their turn.
const DRAIN_BATCH: usize = 64;

/// The speaker's side of the BFD service. Dropping every handle ends the thread.
#[derive(Clone)]
pub struct BfdHandle {
    commands: mpsc::UnboundedSender<Command>,
    status: StatusMap,
}

impl std::fmt::Debug for BfdHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BfdHandle")
    }
}

impl BfdHandle {
    /// Starts (or restarts with new timers) the session with `peer`. `on_down` runs each time
    /// it leaves Up.
    pub fn add(&self, peer: IpAddr, local: Option<IpAddr>, timers: Timers, on_down: OnDown) {
        let _ = self.commands.send(Command::Add {
            peer,
            local,
            timers,
            on_down,
        });
    }

    /// Tells every peer our sessions are AdminDown (RFC 5882 §3.2: not a path failure, so a
    /// peer in graceful restart keeps our routes) and ends the service.
    pub async fn shutdown(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.commands.send(Command::Shutdown(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    pub fn remove(&self, peer: IpAddr) {
        let _ = self.commands.send(Command::Remove(peer));
    }

    /// The session with `peer`, if there is one.
    pub fn status(&self, peer: IpAddr) -> Option<PeerBfd> {
        self.status.read().ok()?.get(&peer).cloned()
    }

    pub fn all(&self) -> Vec<PeerBfd> {
        let mut v: Vec<PeerBfd> = self
            .status
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        v.sort_by_key(|p| p.peer);
        v
    }
}

/// Starts the service: binds UDP `port` (3784) on every IPv4 and IPv6 address, then runs the
/// sessions on a thread of its own.
pub fn spawn(port: u16) -> Result<BfdHandle, BfdError> {
    spawn_on(&[
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
        SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
    ])
}

/// As [`spawn`], listening on the given addresses only (tests bind one loopback address each).
pub fn spawn_on(listen: &[SocketAddr]) -> Result<BfdHandle, BfdError> {
    let (tx, rx) = mpsc::unbounded_channel();
    let status: StatusMap = Arc::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(BfdError::Thread)?;
    let mut receivers = Vec::new();
    {
        let _enter = runtime.enter();
        for &addr in listen {
            match udp::bind_receiver(addr) {
                Ok(s) => receivers.push(s),
                // A host without IPv6 still runs BFD over IPv4.
                Err(e) if addr.is_ipv6() && listen.len() > 1 => {
                    warn!(%addr, error = %e, "no BFD over IPv6")
                }
                Err(source) => return Err(BfdError::Listen { addr, source }),
            }
        }
    }
    let port = listen.first().map_or(udp::CONTROL_PORT, |a| a.port());
    let service = Service {
        port,
        sessions: HashMap::new(),
        by_discr: HashMap::new(),
        status: status.clone(),
        rng: seed(),
    };
    std::thread::Builder::new()
        .name("margay-bfd".into())
        .spawn(move || runtime.block_on(service.run(rx, receivers)))
        .map_err(BfdError::Thread)?;
    Ok(BfdHandle {
        commands: tx,
        status,
    })
}

struct Entry {
    session: Session,
    socket: UdpSocket,
    on_down: OnDown,
}

struct Service {
    port: u16,
    sessions: HashMap<IpAddr, Entry>,
    by_discr: HashMap<u32, IpAddr>,
    status: StatusMap,
    rng: u64,
}

impl Service {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>, rx: Vec<UdpSocket>) {
        let mut bufs = vec![[0u8; 128]; 2];
        let none = || std::future::pending::<std::io::Result<udp::Received>>();
        loop {
            let now = Instant::now();
            let next = self
                .sessions
                .values()
                .map(|e| e.session.deadline(now))
                .min()
                .unwrap_or(now + Duration::from_secs(3600));
            let wake = next.checked_sub(EARLY).unwrap_or(next);
            let (b0, b1) = bufs.split_at_mut(1);
            tokio::select! {
                biased;
                r = async { match rx.first() { Some(s) => udp::recv(s, &mut b0[0]).await, None => none().await } } => {
                    self.on_datagram(r, &b0[0]);
                }
                r = async { match rx.get(1) { Some(s) => udp::recv(s, &mut b1[0]).await, None => none().await } } => {
                    self.on_datagram(r, &b1[0]);
                }
                _ = tokio::time::sleep_until(wake.into()) => {
                    // The last stretch on the thread's own clock, not the runtime's ticks.
                    let left = next.saturating_duration_since(Instant::now());
                    if !left.is_zero() {
                        std::thread::sleep(left);
                    }
                }
                cmd = commands.recv() => match cmd {
                    Some(Command::Shutdown(done)) => {
                        self.admin_down_all().await;
                        let _ = done.send(());
                        return;
                    }
                    Some(c) => self.command(c),
                    None => return,
                },
            }
            self.drain(&rx);
            self.poll_all().await;
        }
    }

    /// Handles every datagram already queued on the receive sockets, so that no session is
    /// expired while the packet that keeps it up waits to be read.
    fn drain(&mut self, rx: &[UdpSocket]) {
        let mut buf = [0u8; 128];
        for s in rx {
            for _ in 0..DRAIN_BATCH {
                match udp::try_recv(s, &mut buf) {
                    Ok(r) => self.on_datagram(Ok(r), &buf),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        self.on_datagram(Err(e), &buf);
                        break;
                    }
                }
            }
        }
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::Add {
                peer,
                local,
                timers,
                on_down,
            } => {
                if let Some(e) = self.sessions.get_mut(&peer) {
                    e.session.set_timers(timers);
                    e.on_down = on_down;
                    self.publish(peer, false);
                    return;
                }
                let start = (self.next_random() % 16384) as u16;
                let socket = match udp::bind_sender(peer, local, start) {
                    Ok(s) => s,
                    Err(e) => {
                        warn!(%peer, error = %e, "cannot open a BFD send socket");
                        return;
                    }
                };
                let discr = loop {
                    let d = self.next_random() as u32;
                    if d != 0 && !self.by_discr.contains_key(&d) {
                        break d;
                    }
                };
                info!(%peer, ?timers, discr, "BFD session started");
                self.by_discr.insert(discr, peer);
                self.sessions.insert(
                    peer,
                    Entry {
                        session: Session::new(timers, discr, Instant::now()),
                        socket,
                        on_down,
                    },
                );
                self.publish(peer, true);
            }
            Command::Shutdown(_) => {}
            Command::Remove(peer) => {
                if let Some(mut e) = self.sessions.remove(&peer) {
                    // Tell the peer: a session that just went silent would look like a failure.
                    let p = e.session.admin_down().encode();
                    let _ = udp::send_now(&e.socket, &p, SocketAddr::new(peer, self.port));
                    self.by_discr.remove(&e.session.local_discr());
                    info!(%peer, "BFD session removed");
                }
                if let Ok(mut m) = self.status.write() {
                    m.remove(&peer);
                }
            }
        }
    }

    fn on_datagram(&mut self, r: std::io::Result<udp::Received>, buf: &[u8]) {
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                debug!(error = %e, "BFD receive error");
                return;
            }
        };
        if r.ttl != Some(udp::TTL) {
            debug!(from = %r.from, ttl = ?r.ttl, "BFD packet dropped: TTL is not 255");
            return;
        }
        let p = match ControlPacket::decode(&buf[..r.len]) {
            Ok(p) => p,
            Err(e) => {
                debug!(from = %r.from, error = %e, "BFD packet dropped");
                return;
            }
        };
        let from = canonical(r.from.ip());
        let peer = if p.your_discr != 0 {
            self.by_discr.get(&p.your_discr).copied()
        } else {
            Some(from).filter(|a| self.sessions.contains_key(a))
        };
        let Some(peer) = peer.filter(|peer| *peer == from) else {
            debug!(%from, your_discr = p.your_discr, "BFD packet for no session");
            return;
        };
        let Some(e) = self.sessions.get_mut(&peer) else {
            return;
        };
        match e.session.receive(&p, arrival(r.arrived, Instant::now())) {
            Some(t) => self.changed(peer, t),
            // Timing and the peer's state change without a transition of ours.
            None => self.publish(peer, false),
        }
    }

    /// AdminDown to every peer, sent a few times (UDP may lose one).
    async fn admin_down_all(&mut self) {
        let port = self.port;
        let mut packets = Vec::new();
        for (peer, e) in &mut self.sessions {
            packets.push((*peer, e.session.admin_down().encode()));
        }
        for _ in 0..3 {
            for (peer, bytes) in &packets {
                if let Some(e) = self.sessions.get(peer) {
                    let _ = udp::send_now(&e.socket, bytes, SocketAddr::new(*peer, port));
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        info!(
            sessions = packets.len(),
            "BFD sessions administratively down"
        );
    }

    async fn poll_all(&mut self) {
        let now = Instant::now();
        let due: Vec<IpAddr> = self
            .sessions
            .iter()
            .filter(|(_, e)| e.session.deadline(now) <= now)
            .map(|(a, _)| *a)
            .collect();
        for peer in due {
            let jitter = self.next_random() as u32;
            let Some(e) = self.sessions.get_mut(&peer) else {
                continue;
            };
            let (packet, change) = e.session.poll(now, jitter);
            if let Some(p) = packet {
                let to = SocketAddr::new(peer, self.port);
                if let Err(err) = udp::send_now(&e.socket, &p.encode(), to) {
                    debug!(%peer, error = %err, "BFD send failed");
                }
            }
            if let Some(t) = change {
                self.changed(peer, t);
            }
        }
    }

    fn changed(&mut self, peer: IpAddr, t: Transition) {
        // The status first: whoever the Down reaches sees it counted.
        self.publish(peer, true);
        if t.failure
            && let Ok(mut m) = self.status.write()
            && let Some(s) = m.get_mut(&peer)
        {
            s.downs += 1;
        }
        let Some(e) = self.sessions.get(&peer) else {
            return;
        };
        let snapshot = e.session.snapshot();
        if t.failure {
            warn!(%peer, diag = %t.diag, "BFD session down");
            (e.on_down)(t);
        } else if t.from == SessionState::Up && snapshot.remote_state == SessionState::AdminDown {
            // RFC 5882 §3.2: the peer stopped BFD on purpose; not a failure of the path.
            info!(%peer, "BFD session taken administratively down by the peer; BGP session kept");
        } else if t.from == SessionState::Up {
            // The peer replaced its session (see session.rs): not a failure of the path.
            info!(%peer, remote_discr = snapshot.remote_discr, "the peer restarted its BFD session; re-synchronising, BGP session kept");
        } else {
            info!(%peer, from = %t.from, to = %t.to, "BFD session state changed");
        }
    }

    fn publish(&self, peer: IpAddr, changed: bool) {
        let Some(e) = self.sessions.get(&peer) else {
            return;
        };
        let snapshot = e.session.snapshot();
        if !changed
            && let Ok(m) = self.status.read()
            && m.get(&peer).is_some_and(|s| s.snapshot == snapshot)
        {
            return;
        }
        let Ok(mut m) = self.status.write() else {
            return;
        };
        let s = m.entry(peer).or_insert_with(|| PeerBfd {
            peer,
            timers: e.session.timers(),
            snapshot: e.session.snapshot(),
            since: SystemTime::now(),
            downs: 0,
        });
        s.timers = e.session.timers();
        s.snapshot = snapshot;
        if changed {
            s.since = SystemTime::now();
        }
    }

    /// xorshift64*: discriminators, source ports and jitter need no more.
    fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// When a packet the kernel stamped `arrived` came, on the monotonic clock: up to
/// [`MAX_QUEUED`] before `now`, never after it.
fn arrival(arrived: Option<SystemTime>, now: Instant) -> Instant {
    let queued = arrived
        .and_then(|at| SystemTime::now().duration_since(at).ok())
        .unwrap_or_default()
        .min(MAX_QUEUED);
    now.checked_sub(queued).unwrap_or(now)
}

/// An IPv4 peer seen through an IPv6 socket as `::ffff:a.b.c.d` is the IPv4 peer.
fn canonical(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
        v4 => v4,
    }
}

fn seed() -> u64 {
    let t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (t ^ (u64::from(std::process::id()) << 32)) | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrival_is_the_kernel_time_within_bounds() {
        let now = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(arrival(None, now), now);
        let at = arrival(Some(SystemTime::now() - ms(5)), now);
        assert!(at <= now - ms(5) && at > now - ms(10), "{:?}", now - at);
        // A wall clock that stepped: at most MAX_QUEUED before now, never after it.
        assert_eq!(
            arrival(Some(SystemTime::now() - ms(10_000)), now),
            now - MAX_QUEUED
        );
        assert_eq!(arrival(Some(SystemTime::now() + ms(10_000)), now), now);
    }
}
