//! The UDP edge of single-hop BFD (RFC 5881): the receive socket on port 3784 that reads each
//! datagram's TTL (packets not sent with TTL 255 are dropped, §5) and the kernel's time of
//! arrival (the detection time counts from there, however late the BFD thread runs), and the
//! per-session send sockets with TTL 255 and a source port in 49152–65535 (§4).

use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::{Duration, SystemTime};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// The single-hop Control packet port (RFC 5881 §4).
pub const CONTROL_PORT: u16 = 3784;
/// Source ports for Control packets (RFC 5881 §4).
pub const SOURCE_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;
/// The only TTL / hop limit accepted and sent (RFC 5881 §5).
pub const TTL: u8 = 255;

/// One datagram as received.
#[derive(Debug)]
pub struct Received {
    pub len: usize,
    pub from: SocketAddr,
    /// The IP TTL or hop limit it arrived with, when the kernel told.
    pub ttl: Option<u8>,
    /// When the kernel received it (`SO_TIMESTAMPNS`), when it told.
    pub arrived: Option<SystemTime>,
}

/// Binds the receive socket, asking the kernel for each datagram's TTL and arrival time.
pub fn bind_receiver(addr: SocketAddr) -> io::Result<UdpSocket> {
    let domain = Domain::for_address(addr);
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    let on: libc::c_int = 1;
    let (level, opt) = match addr {
        SocketAddr::V4(_) => (libc::IPPROTO_IP, libc::IP_RECVTTL),
        SocketAddr::V6(_) => {
            s.set_only_v6(true)?;
            (libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT)
        }
    };
    setsockopt(&s, level, opt, on)?;
    setsockopt(&s, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, on)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

/// A send socket for one session: TTL 255, bound to `local` (or any address) and the first
/// free source port from a pseudo-random start.
pub fn bind_sender(peer: IpAddr, local: Option<IpAddr>, start: u16) -> io::Result<UdpSocket> {
    let any = match peer {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let local = local.unwrap_or(any);
    let s = Socket::new(
        Domain::for_address(SocketAddr::new(local, 0)),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    match peer {
        IpAddr::V4(_) => s.set_ttl_v4(u32::from(TTL))?,
        IpAddr::V6(_) => s.set_unicast_hops_v6(u32::from(TTL))?,
    }
    s.set_nonblocking(true)?;
    let (lo, hi) = (*SOURCE_PORTS.start(), *SOURCE_PORTS.end());
    let count = u32::from(hi - lo) + 1;
    let mut last = io::Error::from(io::ErrorKind::AddrInUse);
    for i in 0..count {
        let port = lo + ((u32::from(start) + i) % count) as u16;
        match s.bind(&SocketAddr::new(local, port).into()) {
            Ok(()) => return UdpSocket::from_std(s.into()),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// Sends one datagram now, whatever the runtime last saw of the socket's readiness: tokio's
/// `try_send_to` answers WouldBlock without trying once its readiness flag is clear, and the
/// BFD thread never waits for writability, so a single EAGAIN would silence the session until
/// the reactor happened to see the socket writable again (the peer's detection time expires
/// meanwhile).
pub fn send_now(sock: &UdpSocket, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
    socket2::SockRef::from(sock).send_to(buf, &to.into())
}

/// Receives one datagram with its TTL; waits until one is there.
pub async fn recv(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<Received> {
    sock.async_io(Interest::READABLE, || recv_now(sock.as_raw_fd(), buf))
        .await
}

/// Receives one datagram if one is queued, without waiting and whatever the runtime last saw
/// of the socket's readiness (the BFD thread drains the sockets before it expires a session).
pub fn try_recv(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<Received> {
    recv_now(sock.as_raw_fd(), buf)
}

fn recv_now(fd: libc::c_int, buf: &mut [u8]) -> io::Result<Received> {
    let mut addr = MaybeUninit::<libc::sockaddr_storage>::zeroed();
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = [0u64; 16];
    // SAFETY: msghdr is plain data; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = addr.as_mut_ptr().cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: fd is an open socket; msg points at live buffers of the stated sizes.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel filled a sockaddr of the family it names.
    let from = unsafe { socket_addr(addr.assume_init_ref()) }.ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, "datagram without an IP source")
    })?;
    let mut ttl = None;
    let mut arrived = None;
    // SAFETY: walking the control messages the kernel wrote into `control`, with its macros.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let h = &*c;
            let is_ttl = (h.cmsg_level == libc::IPPROTO_IP && h.cmsg_type == libc::IP_TTL)
                || (h.cmsg_level == libc::IPPROTO_IPV6 && h.cmsg_type == libc::IPV6_HOPLIMIT);
            if is_ttl {
                let v = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                ttl = u8::try_from(v).ok();
            }
            if h.cmsg_level == libc::SOL_SOCKET && h.cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::timespec>());
                arrived = Some(
                    SystemTime::UNIX_EPOCH + Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32),
                );
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok(Received {
        len: n as usize,
        from,
        ttl,
        arrived,
    })
}

/// # Safety
/// `a` holds a `sockaddr_in` or `sockaddr_in6` when its family says so.
unsafe fn socket_addr(a: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(a.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this is a sockaddr_in.
            let v4 = unsafe { &*(a as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr))),
                u16::from_be(v4.sin_port),
            ))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this is a sockaddr_in6.
            let v6 = unsafe { &*(a as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(v6.sin6_addr.s6_addr)),
                u16::from_be(v6.sin6_port),
            ))
        }
        _ => None,
    }
}

fn setsockopt(s: &Socket, level: libc::c_int, opt: libc::c_int, v: libc::c_int) -> io::Result<()> {
    // SAFETY: a c_int option value of the stated size on an open socket.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            opt,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
