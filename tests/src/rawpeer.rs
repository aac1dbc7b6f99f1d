//! A raw BGP test peer: writes whatever octets a test crafts to a real speaker over TCP and reads
//! back what it answers, for the malformed-input suite (RFC 4271 §6, RFC 7606).
//!
//! The peer lives inside a lab namespace: [`RawPeer::connect`] opens its socket from a thread
//! that has entered the namespace, bound to a chosen source address (the speaker only accepts
//! configured neighbours). Replies are framed and read here with our own minimal parsing (header,
//! NOTIFICATION code / subcode / data), independent of margay's codec, so a test checks the
//! daemon's octets against the RFC and not against the codec that produced them. [`build`]
//! writes the messages a test starts from and then corrupts.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use margay_lab::netns::Netns;
use margay_lab::{LabError, Result};

/// Length of the fixed header (RFC 4271 §4.1).
pub const HEADER_LEN: usize = 19;

/// Message type codes (RFC 4271 §4.1, RFC 2918).
pub mod msg_type {
    pub const OPEN: u8 = 1;
    pub const UPDATE: u8 = 2;
    pub const NOTIFICATION: u8 = 3;
    pub const KEEPALIVE: u8 = 4;
    pub const ROUTE_REFRESH: u8 = 5;
}

/// Path attribute flags (RFC 4271 §4.3).
pub mod flag {
    pub const OPTIONAL: u8 = 0x80;
    pub const TRANSITIVE: u8 = 0x40;
    pub const PARTIAL: u8 = 0x20;
    pub const EXTENDED_LENGTH: u8 = 0x10;
}

/// Path attribute type codes (RFC 4271 §5, RFC 1997, RFC 4760).
pub mod attr_code {
    pub const ORIGIN: u8 = 1;
    pub const AS_PATH: u8 = 2;
    pub const NEXT_HOP: u8 = 3;
    pub const MULTI_EXIT_DISC: u8 = 4;
    pub const LOCAL_PREF: u8 = 5;
    pub const ATOMIC_AGGREGATE: u8 = 6;
    pub const AGGREGATOR: u8 = 7;
    pub const COMMUNITIES: u8 = 8;
    pub const MP_REACH_NLRI: u8 = 14;
    pub const MP_UNREACH_NLRI: u8 = 15;
}

/// A NOTIFICATION as received: its octets, unread by margay's codec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawNotification {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
}

/// One message the speaker sent us, framed by its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Open(Vec<u8>),
    Update(Vec<u8>),
    Notification(RawNotification),
    Keepalive,
    RouteRefresh(Vec<u8>),
    /// A type this peer does not know, with its body.
    Other {
        msg_type: u8,
        body: Vec<u8>,
    },
}

fn protocol_error(context: String, what: impl Into<String>) -> LabError {
    LabError::Io {
        context,
        source: io::Error::new(io::ErrorKind::InvalidData, what.into()),
    }
}

/// Builders for well-formed messages, the base a test corrupts.
pub mod build {
    use super::{HEADER_LEN, msg_type};
    use std::net::Ipv4Addr;

    /// Marker, length, type, then `body`.
    pub fn message(msg_type: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![0xff; 16];
        v.extend_from_slice(&((HEADER_LEN + body.len()) as u16).to_be_bytes());
        v.push(msg_type);
        v.extend_from_slice(body);
        v
    }

    pub fn keepalive() -> Vec<u8> {
        message(msg_type::KEEPALIVE, &[])
    }

    /// One capability (RFC 5492): code, length, value.
    pub fn capability(code: u8, value: &[u8]) -> Vec<u8> {
        let mut v = vec![code, value.len() as u8];
        v.extend_from_slice(value);
        v
    }

    /// The capabilities a plain IPv4 peer announces: multiprotocol IPv4 unicast (code 1),
    /// route refresh (code 2) and 4-octet AS (code 65, RFC 6793).
    pub fn default_capabilities(asn: u32) -> Vec<Vec<u8>> {
        vec![
            capability(1, &[0, 1, 0, 1]),
            capability(2, &[]),
            capability(65, &asn.to_be_bytes()),
        ]
    }

    /// The OPEN body fields (RFC 4271 §4.2) with raw optional parameters.
    pub fn open_with_params(
        version: u8,
        my_as: u16,
        hold_time: u16,
        id: Ipv4Addr,
        params: &[u8],
    ) -> Vec<u8> {
        let mut b = vec![version];
        b.extend_from_slice(&my_as.to_be_bytes());
        b.extend_from_slice(&hold_time.to_be_bytes());
        b.extend_from_slice(&id.octets());
        b.push(params.len() as u8);
        b.extend_from_slice(params);
        message(msg_type::OPEN, &b)
    }

    /// An OPEN with every capability in one Capabilities parameter (type 2).
    pub fn open(asn: u32, hold_time: u16, id: Ipv4Addr, caps: &[Vec<u8>]) -> Vec<u8> {
        let my_as = u16::try_from(asn).unwrap_or(23456);
        let caps: Vec<u8> = caps.concat();
        let mut params = vec![2, caps.len() as u8];
        params.extend_from_slice(&caps);
        open_with_params(4, my_as, hold_time, id, &params)
    }

    /// One path attribute, with the extended length when the flags ask for it.
    pub fn attr(flags: u8, type_code: u8, value: &[u8]) -> Vec<u8> {
        let mut v = vec![flags, type_code];
        if flags & super::flag::EXTENDED_LENGTH != 0 {
            v.extend_from_slice(&(value.len() as u16).to_be_bytes());
        } else {
            v.push(value.len() as u8);
        }
        v.extend_from_slice(value);
        v
    }

    /// An IPv4 prefix in NLRI encoding: length, then the octets it needs.
    pub fn prefix4(addr: Ipv4Addr, len: u8) -> Vec<u8> {
        let n = usize::from(len).div_ceil(8);
        let mut v = vec![len];
        v.extend_from_slice(&addr.octets()[..n.min(4)]);
        v
    }

    /// UPDATEs announcing `prefixes` from `asn` (a 4-octet AS_PATH: the default capabilities
    /// offer it) with next hop `next_hop`, as many prefixes per message as fit in 4096 octets.
    pub fn announcements(
        asn: u32,
        next_hop: Ipv4Addr,
        prefixes: &[ipnet::Ipv4Net],
    ) -> Vec<Vec<u8>> {
        use super::attr_code as code;
        use super::flag;
        let mut attrs = attr(flag::TRANSITIVE, code::ORIGIN, &[0]);
        let mut path = vec![2, 1];
        path.extend_from_slice(&asn.to_be_bytes());
        attrs.extend(attr(flag::TRANSITIVE, code::AS_PATH, &path));
        attrs.extend(attr(flag::TRANSITIVE, code::NEXT_HOP, &next_hop.octets()));
        let room = 4096 - super::HEADER_LEN - 4 - attrs.len();
        let mut out = Vec::new();
        let mut nlri = Vec::new();
        for p in prefixes {
            let one = prefix4(p.network(), p.prefix_len());
            if nlri.len() + one.len() > room {
                out.push(update(&[], &attrs, &nlri));
                nlri.clear();
            }
            nlri.extend(one);
        }
        if !nlri.is_empty() {
            out.push(update(&[], &attrs, &nlri));
        }
        out
    }

    /// An UPDATE (RFC 4271 §4.3) from its three raw fields.
    pub fn update(withdrawn: &[u8], attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
        let mut b = Vec::with_capacity(4 + withdrawn.len() + attrs.len() + nlri.len());
        b.extend_from_slice(&(withdrawn.len() as u16).to_be_bytes());
        b.extend_from_slice(withdrawn);
        b.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        b.extend_from_slice(attrs);
        b.extend_from_slice(nlri);
        message(msg_type::UPDATE, &b)
    }
}

/// Enters the network namespace `ns` on the calling thread only.
fn enter_netns(ns: &str) -> io::Result<()> {
    let f = File::open(format!("/var/run/netns/{ns}"))?;
    // SAFETY: setns(2) on a namespace file we hold open; it changes this thread's namespace.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Connects from `local` to `remote` inside namespace `ns` (on a thread of its own, which
/// enters the namespace; the socket stays in it when handed back).
fn connect_in(
    ns: &str,
    local: Ipv4Addr,
    remote: SocketAddr,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let ns = ns.to_string();
    std::thread::spawn(move || -> io::Result<TcpStream> {
        enter_netns(&ns)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let stream = rt.block_on(async move {
            let socket = match remote {
                SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
                SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
            };
            socket.bind(SocketAddr::new(IpAddr::V4(local), 0))?;
            tokio::time::timeout(timeout, socket.connect(remote))
                .await
                .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
        })?;
        let std = stream.into_std()?;
        std.set_nonblocking(false)?;
        Ok(std)
    })
    .join()
    .map_err(|_| io::Error::other("the connecting thread panicked"))?
}

/// A TCP connection to a BGP speaker on which the test writes raw octets.
#[derive(Debug)]
pub struct RawPeer {
    stream: TcpStream,
    buf: Vec<u8>,
    local: Ipv4Addr,
    remote: SocketAddr,
}

impl RawPeer {
    /// Opens a TCP connection from `local` to `remote` inside `ns`.
    pub fn connect(ns: &Netns, local: Ipv4Addr, remote: SocketAddr) -> Result<RawPeer> {
        let stream = connect_in(ns.name(), local, remote, Duration::from_secs(5)).map_err(
            LabError::io(format!("raw peer {local}: connecting to {remote}")),
        )?;
        stream
            .set_nodelay(true)
            .map_err(LabError::io("raw peer: TCP_NODELAY"))?;
        Ok(RawPeer {
            stream,
            buf: Vec::new(),
            local,
            remote,
        })
    }

    /// Connects and brings a session up with `open` (see [`RawPeer::establish`]), retrying
    /// for up to `timeout` while the speaker refuses or drops us (after an error it waits
    /// out its idle hold time before it accepts the neighbour again).
    pub fn session(
        ns: &Netns,
        local: Ipv4Addr,
        remote: SocketAddr,
        open: &[u8],
        timeout: Duration,
    ) -> Result<RawPeer> {
        let start = Instant::now();
        loop {
            let attempt = RawPeer::connect(ns, local, remote).and_then(|mut p| {
                p.establish(open, Duration::from_secs(5))?;
                Ok(p)
            });
            match attempt {
                Ok(p) => return Ok(p),
                Err(e) if start.elapsed() >= timeout => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(250)),
            }
        }
    }

    /// The address this peer speaks from.
    pub fn local(&self) -> Ipv4Addr {
        self.local
    }

    fn context(&self, what: &str) -> String {
        format!("raw peer {} -> {}: {what}", self.local, self.remote)
    }

    /// Writes `bytes` as they are.
    pub fn send(&mut self, bytes: &[u8]) -> Result<()> {
        let ctx = self.context("writing");
        self.stream.write_all(bytes).map_err(LabError::io(ctx))
    }

    /// Announces `prefixes` (see [`build::announcements`]).
    pub fn announce(
        &mut self,
        asn: u32,
        next_hop: Ipv4Addr,
        prefixes: &[ipnet::Ipv4Net],
    ) -> Result<()> {
        for m in build::announcements(asn, next_hop, prefixes) {
            self.send(&m)?;
        }
        Ok(())
    }

    /// Closes the connection with a TCP reset (SO_LINGER 0): no NOTIFICATION, no FIN, as a
    /// crashed host or a middlebox would.
    pub fn reset(self) -> Result<()> {
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt(2) on the socket we own, with a value of the type SO_LINGER takes.
        let rc = unsafe {
            libc::setsockopt(
                self.stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(LabError::io(self.context("SO_LINGER 0"))(
                io::Error::last_os_error(),
            ));
        }
        drop(self.stream);
        Ok(())
    }

    /// Sends a KEEPALIVE.
    pub fn keepalive(&mut self) -> Result<()> {
        self.send(&build::keepalive())
    }

    /// The next whole message, `Ok(None)` when the speaker closed the connection, an error
    /// after `timeout` without one.
    pub fn recv(&mut self, timeout: Duration) -> Result<Option<Reply>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(reply) = self.take_frame()? {
                return Ok(Some(reply));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(LabError::Io {
                    context: self.context("waiting for a message"),
                    source: io::ErrorKind::TimedOut.into(),
                });
            }
            let ctx = self.context("reading");
            self.stream
                .set_read_timeout(Some(left))
                .map_err(LabError::io(ctx.clone()))?;
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(None),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                // A reset after the NOTIFICATION is a close too.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(None),
                Err(e) => return Err(LabError::io(ctx)(e)),
            }
        }
    }

    /// Splits one whole message off the buffer, checking its header ourselves.
    fn take_frame(&mut self) -> Result<Option<Reply>> {
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        if self.buf[..16].iter().any(|b| *b != 0xff) {
            return Err(protocol_error(
                self.context("reading"),
                "marker is not all ones",
            ));
        }
        let len = usize::from(u16::from_be_bytes([self.buf[16], self.buf[17]]));
        if len < HEADER_LEN {
            return Err(protocol_error(
                self.context("reading"),
                format!("length {len} below the header's"),
            ));
        }
        if self.buf.len() < len {
            return Ok(None);
        }
        let frame: Vec<u8> = self.buf.drain(..len).collect();
        let body = frame[HEADER_LEN..].to_vec();
        Ok(Some(match frame[18] {
            msg_type::OPEN => Reply::Open(body),
            msg_type::UPDATE => Reply::Update(body),
            msg_type::KEEPALIVE => Reply::Keepalive,
            msg_type::ROUTE_REFRESH => Reply::RouteRefresh(body),
            msg_type::NOTIFICATION => {
                if body.len() < 2 {
                    return Err(protocol_error(
                        self.context("reading"),
                        format!("NOTIFICATION of {} octets", frame.len()),
                    ));
                }
                Reply::Notification(RawNotification {
                    code: body[0],
                    subcode: body[1],
                    data: body[2..].to_vec(),
                })
            }
            t => Reply::Other { msg_type: t, body },
        }))
    }

    /// Sends `open`, waits for the speaker's OPEN, confirms it with a KEEPALIVE and waits for
    /// the speaker's KEEPALIVE: both sides are then Established (RFC 4271 §8.2.2).
    pub fn establish(&mut self, open: &[u8], timeout: Duration) -> Result<()> {
        self.send(open)?;
        let mut saw_open = false;
        loop {
            match self.recv(timeout)? {
                Some(Reply::Open(_)) if !saw_open => {
                    saw_open = true;
                    self.keepalive()?;
                }
                Some(Reply::Keepalive) if saw_open => return Ok(()),
                Some(Reply::Notification(n)) => {
                    return Err(protocol_error(
                        self.context("establishing"),
                        format!("NOTIFICATION {n:?}"),
                    ));
                }
                None => {
                    return Err(protocol_error(
                        self.context("establishing"),
                        "connection closed",
                    ));
                }
                Some(other) => {
                    return Err(protocol_error(
                        self.context("establishing"),
                        format!("unexpected {other:?}"),
                    ));
                }
            }
        }
    }

    /// Reads until a NOTIFICATION arrives (skipping OPEN, KEEPALIVE and UPDATE); fails when
    /// the connection closes first or nothing comes within `timeout`.
    pub fn expect_notification(&mut self, timeout: Duration) -> Result<RawNotification> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left)? {
                Some(Reply::Notification(n)) => return Ok(n),
                Some(_) => {}
                None => {
                    return Err(protocol_error(
                        self.context("waiting for a NOTIFICATION"),
                        "connection closed without one",
                    ));
                }
            }
        }
    }

    /// Whether the speaker closes the connection within `timeout` (after anything it sent).
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left) {
                Ok(None) => return true,
                Ok(Some(_)) => {}
                Err(_) => return false,
            }
        }
    }

    /// Keeps the session alive for `period`, sending a KEEPALIVE every second, and fails on a
    /// NOTIFICATION or a close. Returns every message received meanwhile.
    pub fn stays_up_for(&mut self, period: Duration) -> Result<Vec<Reply>> {
        let end = Instant::now() + period;
        let mut seen = Vec::new();
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(seen);
            }
            self.keepalive()?;
            let step = left.min(Duration::from_secs(1));
            let until = Instant::now() + step;
            loop {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                match self.recv(left) {
                    Ok(Some(Reply::Notification(n))) => {
                        return Err(protocol_error(
                            self.context("keeping the session up"),
                            format!("NOTIFICATION received: {n:?}"),
                        ));
                    }
                    Ok(Some(r)) => seen.push(r),
                    Ok(None) => {
                        return Err(protocol_error(
                            self.context("keeping the session up"),
                            "connection closed",
                        ));
                    }
                    Err(LabError::Io { source, .. })
                        if source.kind() == io::ErrorKind::TimedOut =>
                    {
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::build;

    #[test]
    fn builds_an_update_with_its_field_lengths() {
        let attrs = build::attr(0x40, 1, &[0]);
        let nlri = build::prefix4("10.1.2.0".parse().unwrap(), 24);
        let m = build::update(&[], &attrs, &nlri);
        assert_eq!(&m[..16], &[0xff; 16]);
        assert_eq!(u16::from_be_bytes([m[16], m[17]]) as usize, m.len());
        assert_eq!(m[18], 2);
        assert_eq!(&m[19..21], &[0, 0]);
        assert_eq!(&m[21..23], &[0, 4]);
        assert_eq!(&m[23..27], &[0x40, 1, 1, 0]);
        assert_eq!(&m[27..], &[24, 10, 1, 2]);
    }

    #[test]
    fn splits_many_announcements_into_messages_of_at_most_4096_octets() {
        let prefixes: Vec<ipnet::Ipv4Net> = (0..3000u32)
            .map(|i| ipnet::Ipv4Net::new((0x0a00_0000 + (i << 8)).into(), 24).unwrap())
            .collect();
        let ms = build::announcements(65001, "10.0.0.9".parse().unwrap(), &prefixes);
        assert!(ms.len() > 1);
        let mut carried = 0;
        for m in &ms {
            assert!(m.len() <= 4096, "{}", m.len());
            let attrs_len = usize::from(u16::from_be_bytes([m[21], m[22]]));
            carried += (m.len() - 23 - attrs_len) / 4;
        }
        assert_eq!(carried, prefixes.len());
    }

    #[test]
    fn builds_an_open_with_one_capabilities_parameter() {
        let caps = build::default_capabilities(4_200_000_001);
        let m = build::open(4_200_000_001, 90, "10.0.0.9".parse().unwrap(), &caps);
        assert_eq!(m[18], 1);
        let body = &m[19..];
        assert_eq!(body[0], 4);
        assert_eq!(&body[1..3], &23456u16.to_be_bytes());
        assert_eq!(&body[3..5], &90u16.to_be_bytes());
        assert_eq!(&body[5..9], &[10, 0, 0, 9]);
        assert_eq!(body[9] as usize, body.len() - 10);
        assert_eq!(&body[10..12], &[2, 14]);
    }
}
