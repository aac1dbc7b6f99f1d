//! Real TCP, UDP and ICMP flows between lab namespaces, for policy tests and reachability
//! matrices: a [`Responder`] listens on TCP and UDP ports inside a namespace, and the probes
//! ([`tcp_connects`], [`udp_echoes`], [`pings`]) say whether one flow got through.
//!
//! Sockets are opened on a thread that first `setns`es into the namespace (a socket belongs to
//! the namespace of the thread that creates it), so no helper binary is needed. ICMP uses
//! iputils' `ping` through `ip netns exec`.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::{LabError, Result};

/// Moves the calling thread into namespace `netns`.
pub fn enter_netns(netns: &str) -> Result<()> {
    let f = File::open(format!("/var/run/netns/{netns}"))
        .map_err(|e| LabError::Render(format!("namespace {netns}: {e}")))?;
    // SAFETY: setns(2) on a namespace file we hold open; it changes only this thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(LabError::Render(format!(
            "setns into {netns}: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Runs `f` on a fresh thread inside namespace `netns` and returns its result.
pub fn in_netns<T: Send + 'static>(
    netns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let ns = netns.to_string();
    std::thread::spawn(move || enter_netns(&ns).map(|()| f()))
        .join()
        .map_err(|_| LabError::Render("probe thread panicked".into()))?
}

/// Listens on TCP and UDP ports (all addresses) inside a namespace until dropped. A TCP client
/// gets one byte `y`; a UDP datagram is echoed back.
#[derive(Debug)]
pub struct Responder {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Responder {
    pub fn start(netns: &str, tcp_ports: &[u16], udp_ports: &[u16]) -> Result<Responder> {
        Responder::start_on(netns, IpAddr::from([0u8; 4]), tcp_ports, udp_ports)
    }

    /// [`start`](Self::start) on address `on`: `::` serves IPv6 and IPv4 alike (the socket
    /// is dual-stack unless the namespace sets `net.ipv6.bindv6only`).
    pub fn start_on(
        netns: &str,
        on: IpAddr,
        tcp_ports: &[u16],
        udp_ports: &[u16],
    ) -> Result<Responder> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let (tx, rx) = std::sync::mpsc::channel::<Result<()>>();
        for (port, tcp) in tcp_ports
            .iter()
            .map(|p| (*p, true))
            .chain(udp_ports.iter().map(|p| (*p, false)))
        {
            let (ns, stop, tx) = (netns.to_string(), stop.clone(), tx.clone());
            threads.push(std::thread::spawn(move || {
                let ready = enter_netns(&ns).and_then(|()| {
                    let addr = SocketAddr::new(on, port);
                    let io = |e: std::io::Error| LabError::Render(format!("port {port}: {e}"));
                    if tcp {
                        let l = TcpListener::bind(addr).map_err(io)?;
                        l.set_nonblocking(true).map_err(io)?;
                        Ok(Sock::Tcp(l))
                    } else {
                        let s = UdpSocket::bind(addr).map_err(io)?;
                        s.set_read_timeout(Some(Duration::from_millis(50)))
                            .map_err(io)?;
                        Ok(Sock::Udp(s))
                    }
                });
                let sock = match ready {
                    Ok(s) => {
                        let _ = tx.send(Ok(()));
                        s
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                serve(sock, &stop);
            }));
        }
        drop(tx);
        let want = threads.len();
        let r = Responder { stop, threads };
        // One word from each socket's thread (the threads keep their sender while they serve).
        for got in rx.iter().take(want) {
            got?;
        }
        Ok(r)
    }
}

enum Sock {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

fn serve(sock: Sock, stop: &AtomicBool) {
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::Relaxed) {
        match &sock {
            Sock::Tcp(l) => match l.accept() {
                Ok((mut s, _)) => {
                    let _ = s.write_all(b"y");
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            },
            Sock::Udp(s) => {
                if let Ok((n, from)) = s.recv_from(&mut buf) {
                    let _ = s.send_to(&buf[..n], from);
                }
            }
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Whether a TCP connection from namespace `netns` to `dst` opens and delivers the responder's
/// byte within `timeout`.
pub fn tcp_connects(netns: &str, dst: SocketAddr, timeout: Duration) -> Result<bool> {
    in_netns(netns, move || {
        let Ok(mut s) = TcpStream::connect_timeout(&dst, timeout) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(timeout));
        let mut b = [0u8; 1];
        matches!(s.read(&mut b), Ok(1))
    })
}

/// Whether a UDP datagram from namespace `netns` to `dst` comes back within `timeout`.
pub fn udp_echoes(netns: &str, dst: SocketAddr, timeout: Duration) -> Result<bool> {
    in_netns(netns, move || {
        let bind: SocketAddr = if dst.is_ipv4() {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from(([0u16; 8], 0))
        };
        let Ok(s) = UdpSocket::bind(bind) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(timeout));
        if s.send_to(b"margay", dst).is_err() {
            return false;
        }
        let mut b = [0u8; 16];
        matches!(s.recv_from(&mut b), Ok((6, _)))
    })
}

/// Whether one ping from namespace `netns` to `dst` is answered within `wait_s` seconds.
pub fn pings(netns: &str, dst: IpAddr, wait_s: u32) -> Result<bool> {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "ping", "-n", "-q", "-c", "1", "-W"])
        .arg(wait_s.to_string())
        .arg(dst.to_string())
        .output()
        .map_err(|e| LabError::Render(format!("ping: {e}")))?;
    Ok(out.status.success())
}

/// A flow's protocol and port, as a matrix column names it (`tcp/80`, `udp/53`, `icmp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Flow {
    Tcp(u16),
    Udp(u16),
    Icmp,
}

impl std::fmt::Display for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Flow::Tcp(p) => write!(f, "tcp/{p}"),
            Flow::Udp(p) => write!(f, "udp/{p}"),
            Flow::Icmp => write!(f, "icmp"),
        }
    }
}

impl std::str::FromStr for Flow {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Flow, String> {
        let bad = || format!("flow {s:?}: expected tcp/PORT, udp/PORT or icmp");
        match s.split_once('/') {
            None if s == "icmp" => Ok(Flow::Icmp),
            Some(("tcp", p)) => Ok(Flow::Tcp(p.parse().map_err(|_| bad())?)),
            Some(("udp", p)) => Ok(Flow::Udp(p.parse().map_err(|_| bad())?)),
            _ => Err(bad()),
        }
    }
}

/// Whether `flow` from namespace `netns` to `dst` gets through (the destination runs a
/// [`Responder`] for TCP and UDP). A denied TCP or UDP flow costs `timeout`.
pub fn passes(netns: &str, dst: IpAddr, flow: Flow, timeout: Duration) -> Result<bool> {
    match flow {
        Flow::Tcp(p) => tcp_connects(netns, SocketAddr::new(dst, p), timeout),
        Flow::Udp(p) => udp_echoes(netns, SocketAddr::new(dst, p), timeout),
        Flow::Icmp => pings(netns, dst, timeout.as_secs().max(1) as u32),
    }
}

/// Runs every probe of `probes` (source namespace, destination, flow) at once and returns
/// whether each got through, in order.
pub fn matrix(probes: &[(String, IpAddr, Flow)], timeout: Duration) -> Result<Vec<bool>> {
    let handles: Vec<_> = probes
        .iter()
        .cloned()
        .map(|(ns, dst, flow)| std::thread::spawn(move || passes(&ns, dst, flow, timeout)))
        .collect();
    handles
        .into_iter()
        .map(|h| {
            h.join()
                .map_err(|_| LabError::Render("probe thread panicked".into()))?
        })
        .collect()
}
