//! TCP for BGP: outbound connects and the listening socket, with the options BGP sessions need
//! on Linux: TCP-MD5 signatures (RFC 2385), multihop TTL and GTSM TTL security (RFC 5082).
//!
//! Nothing here knows BGP messages: it hands connected `TcpStream`s to the session layer.

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// The well-known BGP port.
pub const BGP_PORT: u16 = 179;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("Socket: {}", os_text(.0))]
    Io(#[from] io::Error),
    #[error("Socket: Connection timed out")]
    Timeout,
    #[error("TCP-MD5 password longer than {TCP_MD5SIG_MAXKEYLEN} bytes")]
    PasswordTooLong,
}

/// An I/O error's text without Rust's ` (os error N)` suffix, as BIRD prints it.
pub fn os_text(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// How the IP TTL / hop limit of a session's packets is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TtlMode {
    /// The system default.
    #[default]
    Default,
    /// eBGP multihop: send with this TTL.
    Multihop(u8),
    /// GTSM (RFC 5082): send with TTL 255 and drop anything that arrives with a TTL below
    /// 256 - hops, i.e. from further than `hops` hops away.
    Security(u8),
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub remote: SocketAddr,
    pub source: Option<IpAddr>,
    pub password: Option<margay_common::Secret>,
    pub ttl: TtlMode,
    pub timeout: Duration,
}

impl ConnectOptions {
    pub fn new(remote: SocketAddr) -> ConnectOptions {
        ConnectOptions {
            remote,
            source: None,
            password: None,
            ttl: TtlMode::Default,
            timeout: Duration::from_secs(5),
        }
    }
}

/// Opens a TCP connection to the peer with the session's socket options.
pub async fn connect(opts: &ConnectOptions) -> Result<TcpStream, TransportError> {
    let remote = normalize(opts.remote);
    let domain = Domain::for_address(remote);
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    if let Some(src) = opts.source {
        socket.bind(&SockAddr::from(SocketAddr::new(src, 0)))?;
    }
    if let Some(pw) = &opts.password {
        set_md5_key(&socket, remote.ip(), Some(pw.expose().as_bytes()))?;
    }
    apply_ttl_socket(&socket, opts.ttl)?;
    let std_stream: std::net::TcpStream = socket.into();
    let socket = TcpSocket::from_std_stream(std_stream);
    match tokio::time::timeout(opts.timeout, socket.connect(remote)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(TransportError::Io(e)),
        Err(_) => Err(TransportError::Timeout),
    }
}

/// Applies a TTL mode to an accepted connection (the listener already sends with TTL 255).
pub fn apply_ttl(stream: &TcpStream, ttl: TtlMode) -> Result<(), TransportError> {
    let sock = socket2::SockRef::from(stream);
    apply_ttl_socket(&sock, ttl)
}

fn apply_ttl_socket(sock: &Socket, ttl: TtlMode) -> Result<(), TransportError> {
    let v6 = sock.domain()? == Domain::IPV6;
    match ttl {
        TtlMode::Default => Ok(()),
        TtlMode::Multihop(n) => set_send_ttl(sock, v6, u32::from(n)),
        TtlMode::Security(hops) => {
            set_send_ttl(sock, v6, 255)?;
            let min = 256 - u32::from(hops.max(1));
            set_min_ttl(sock, v6, min)
        }
    }
}

/// Whether an accepted connection may go on under `ttl`: with GTSM, the TTL (hop limit) its
/// SYN arrived with must be at least `256 - hops`. The minimum TTL set after accepting guards
/// the rest of the connection, but the handshake and the first segments arrived before it;
/// the SYN the listener saved (`TCP_SAVE_SYN`) tells how far away the peer really is.
/// `true` when the SYN was not saved (nothing to judge by).
pub fn gtsm_admits(stream: &TcpStream, ttl: TtlMode) -> bool {
    let TtlMode::Security(hops) = ttl else {
        return true;
    };
    match saved_syn_ttl(stream) {
        Some(t) => u32::from(t) >= 256 - u32::from(hops.max(1)),
        None => true,
    }
}

/// The TTL (IPv4) or hop limit (IPv6) of the SYN that opened an accepted connection.
fn saved_syn_ttl(stream: &TcpStream) -> Option<u8> {
    let sock = socket2::SockRef::from(stream);
    let mut buf = [0u8; 512];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: the pointer and length describe `buf`, alive for the duration of the call.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_SAVED_SYN,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return None;
    }
    let header = &buf[..(len as usize).min(buf.len())];
    match header.first()? >> 4 {
        4 => header.get(8).copied(),
        6 => header.get(7).copied(),
        _ => None,
    }
}

fn set_send_ttl(sock: &Socket, v6: bool, ttl: u32) -> Result<(), TransportError> {
    if v6 {
        sock.set_unicast_hops_v6(ttl)?;
        // IPv4-mapped peers on an IPv6 socket use the IPv4 option; not all kernels allow it.
        let _ = sock.set_ttl_v4(ttl);
    } else {
        sock.set_ttl_v4(ttl)?;
    }
    Ok(())
}

fn set_min_ttl(sock: &Socket, v6: bool, min: u32) -> Result<(), TransportError> {
    let v = min as libc::c_int;
    if v6 {
        setsockopt_int(sock, libc::IPPROTO_IPV6, libc::IPV6_MINHOPCOUNT, v)?;
        let _ = setsockopt_int(sock, libc::IPPROTO_IP, libc::IP_MINTTL, v);
    } else {
        setsockopt_int(sock, libc::IPPROTO_IP, libc::IP_MINTTL, v)?;
    }
    Ok(())
}

fn setsockopt_int(sock: &Socket, level: i32, name: i32, value: libc::c_int) -> io::Result<()> {
    // SAFETY: the pointer and length describe a live c_int for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Longest TCP-MD5 key Linux accepts.
pub const TCP_MD5SIG_MAXKEYLEN: usize = 80;

/// `struct tcp_md5sig` of `<linux/tcp.h>` (the libc crate has the option, not the struct).
#[repr(C)]
struct TcpMd5Sig {
    tcpm_addr: libc::sockaddr_storage,
    tcpm_flags: u8,
    tcpm_prefixlen: u8,
    tcpm_keylen: u16,
    tcpm_ifindex: libc::c_int,
    tcpm_key: [u8; TCP_MD5SIG_MAXKEYLEN],
}

/// Sets (or with `None` removes) the TCP-MD5 key for segments to and from `peer` on `sock`.
/// On a listening socket, connections accepted from `peer` inherit the key.
fn set_md5_key(sock: &Socket, peer: IpAddr, key: Option<&[u8]>) -> Result<(), TransportError> {
    let key = key.unwrap_or_default();
    if key.len() > TCP_MD5SIG_MAXKEYLEN {
        return Err(TransportError::PasswordTooLong);
    }
    // An IPv6 socket takes IPv4 peers as IPv4-mapped IPv6 addresses.
    let addr = if sock.domain()? == Domain::IPV6 {
        let v6 = match peer {
            IpAddr::V4(a) => a.to_ipv6_mapped(),
            IpAddr::V6(a) => a,
        };
        SockAddr::from(SocketAddr::new(IpAddr::V6(v6), 0))
    } else {
        SockAddr::from(SocketAddr::new(peer, 0))
    };
    // SAFETY: sockaddr_storage and the other fields are plain data; all-zero is valid.
    let mut sig: TcpMd5Sig = unsafe { std::mem::zeroed() };
    // SAFETY: `addr.len()` bytes are readable at `addr.as_ptr()` and fit in sockaddr_storage.
    unsafe {
        std::ptr::copy_nonoverlapping(
            addr.as_ptr().cast::<u8>(),
            (&mut sig.tcpm_addr as *mut libc::sockaddr_storage).cast::<u8>(),
            addr.len() as usize,
        );
    }
    sig.tcpm_keylen = key.len() as u16;
    sig.tcpm_key[..key.len()].copy_from_slice(key);
    // SAFETY: the pointer and length describe `sig`, alive for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            (&sig as *const TcpMd5Sig).cast(),
            std::mem::size_of::<TcpMd5Sig>() as libc::socklen_t,
        )
    };
    let err = io::Error::last_os_error();
    if rc == 0 || (key.is_empty() && err.raw_os_error() == Some(libc::ENOENT)) {
        // Removing a key that was never set is not an error.
        Ok(())
    } else {
        Err(TransportError::Io(err))
    }
}

/// IPv4-mapped IPv6 addresses (what a dual-stack socket reports for IPv4 peers) as IPv4.
pub fn normalize(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// The BGP listening socket.
pub struct Listener {
    listener: TcpListener,
}

impl Listener {
    /// Binds `addr` (`[::]:179` listens on IPv4 and IPv6). The socket sends with TTL 255 so
    /// that GTSM peers accept its SYN-ACKs, and saves each SYN for [`gtsm_admits`].
    pub fn bind(addr: SocketAddr) -> Result<Listener, TransportError> {
        let domain = Domain::for_address(addr);
        let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        if domain == Domain::IPV6 {
            socket.set_only_v6(addr.ip() != IpAddr::V6(Ipv6Addr::UNSPECIFIED))?;
        }
        socket.set_nonblocking(true)?;
        socket.set_tcp_nodelay(true)?;
        set_send_ttl(&socket, domain == Domain::IPV6, 255)?;
        // Keep each SYN, so GTSM can judge an accepted connection by it (`gtsm_admits`).
        if let Err(e) = setsockopt_int(&socket, libc::IPPROTO_TCP, libc::TCP_SAVE_SYN, 1) {
            tracing::warn!(error = %e, "cannot save SYNs: GTSM judges inbound connections only after accepting them");
        }
        socket.bind(&SockAddr::from(addr))?;
        socket.listen(128)?;
        let listener = TcpListener::from_std(socket.into())?;
        Ok(Listener { listener })
    }

    pub fn local_addr(&self) -> Result<SocketAddr, TransportError> {
        Ok(self.listener.local_addr()?)
    }

    /// Sets (`Some`) or removes (`None`) the TCP-MD5 key for connections from `peer`.
    pub fn set_md5(&self, peer: IpAddr, password: Option<&str>) -> Result<(), TransportError> {
        let sock = socket2::SockRef::from(&self.listener);
        set_md5_key(&sock, peer, password.map(str::as_bytes))
    }

    /// Drops connection attempts whose TTL is below `min` (all peers of this socket).
    pub fn set_min_ttl(&self, min: u8) -> Result<(), TransportError> {
        let sock = socket2::SockRef::from(&self.listener);
        let v6 = sock.domain()? == Domain::IPV6;
        set_min_ttl(&sock, v6, u32::from(min))
    }

    /// Accepts connections for ever. `dispatch` is asked, for each peer address, where the
    /// connection goes: `Some(sink)` gets the stream; `None` means the address is not a
    /// configured peer, and the connection is closed at once.
    pub async fn serve<F, S>(&self, dispatch: F)
    where
        F: Fn(SocketAddr) -> Option<S>,
        S: FnOnce(TcpStream),
    {
        loop {
            match self.listener.accept().await {
                Ok((stream, addr)) => {
                    let addr = normalize(addr);
                    match dispatch(addr) {
                        Some(sink) => {
                            let _ = stream.set_nodelay(true);
                            tracing::debug!(%addr, "accepted BGP connection");
                            sink(stream);
                        }
                        None => {
                            tracing::info!(%addr, "refused BGP connection from unknown peer");
                            drop(stream);
                        }
                    }
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}
