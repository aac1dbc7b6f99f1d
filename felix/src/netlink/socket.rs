//! The rtnetlink socket: framing of requests and replies, batched writes with one ACK per
//! message, dumps, and multicast subscriptions.
//!
//! Batching is what makes felix fast: up to [`BATCH`] requests go to the kernel in one
//! `sendmsg`, each with `NLM_F_ACK`, and the ACKs are read back and matched by sequence number,
//! so a burst of route writes costs a few system calls instead of two per route.

use std::io;
use std::os::fd::AsRawFd;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_MULTIPART, NLM_F_REQUEST, NetlinkBuffer,
    NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use super::NetlinkError;

/// Most requests written in one `sendmsg`.
pub(crate) const BATCH: usize = 256;
/// Receive buffer we ask the kernel for (as root, `SO_RCVBUFFORCE`).
const RCVBUF: usize = 8 << 20;
/// How many times a dump interrupted by a concurrent change is retried.
const DUMP_RETRIES: usize = 5;

/// A blocking NETLINK_ROUTE socket in the network namespace of the thread that opened it.
pub(crate) struct NlSocket {
    sock: Socket,
    seq: u32,
    rx: Vec<u8>,
}

impl NlSocket {
    /// Opens a request socket (no multicast groups).
    pub(crate) fn open() -> Result<NlSocket, NetlinkError> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::io("opening socket"))?;
        sock.bind_auto()
            .map_err(NetlinkError::io("binding socket"))?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(NetlinkError::io("connecting socket"))?;
        // Small ACKs (no copy of our request in them) and error strings from the kernel.
        let _ = sock.set_cap_ack(true);
        let _ = sock.set_ext_ack(true);
        force_rcvbuf(&sock);
        Ok(NlSocket {
            sock,
            seq: 1,
            rx: Vec::with_capacity(1 << 16),
        })
    }

    /// Opens a socket that receives the multicast groups `groups` (RTNLGRP_* numbers).
    pub(crate) fn subscribe(groups: &[u32]) -> Result<NlSocket, NetlinkError> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::io("opening socket"))?;
        sock.bind_auto()
            .map_err(NetlinkError::io("binding socket"))?;
        for &g in groups {
            sock.add_membership(g)
                .map_err(NetlinkError::io(format!("joining group {g}")))?;
        }
        force_rcvbuf(&sock);
        Ok(NlSocket {
            sock,
            seq: 1,
            rx: Vec::with_capacity(1 << 16),
        })
    }

    /// Turns on strict checking of requests (`NETLINK_GET_STRICT_CHK`): the kernel then
    /// filters route dumps on the header's table and protocol and on RTA_OIF, and rejects a
    /// request with fields it does not check. Best effort: a kernel without it dumps everything.
    pub(crate) fn strict(&self) {
        let _ = self.sock.set_netlink_get_strict_chk(true);
    }

    pub(crate) fn raw_fd(&self) -> i32 {
        self.sock.as_raw_fd()
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    /// Sends every request (message, `NLM_F_*` flags besides REQUEST and ACK) and returns one
    /// result per request, in order: `Ok` on a zero ACK, the kernel's errno otherwise.
    pub(crate) fn batch(
        &mut self,
        requests: Vec<(RouteNetlinkMessage, u16)>,
    ) -> Result<Vec<Result<(), NetlinkError>>, NetlinkError> {
        let mut results = Vec::with_capacity(requests.len());
        let mut out = Vec::with_capacity(64 * BATCH);
        let mut iter = requests.into_iter().peekable();
        while iter.peek().is_some() {
            out.clear();
            let first = self.seq.wrapping_add(1).max(1);
            let mut n = 0usize;
            for (msg, flags) in iter.by_ref().take(BATCH) {
                let seq = self.next_seq();
                encode(&mut out, msg, flags | NLM_F_REQUEST | NLM_F_ACK, seq);
                n += 1;
            }
            self.send(&out)?;
            let base = results.len();
            results.extend((0..n).map(|_| Err(NetlinkError::NoAck)));
            let mut acked = 0usize;
            while acked < n {
                for (seq, msg) in self.recv_batch()? {
                    let idx = seq.wrapping_sub(first) as usize;
                    if idx >= n {
                        continue; // a late reply to an earlier request
                    }
                    if let NetlinkPayload::Error(e) = msg.payload {
                        results[base + idx] = match e.code {
                            None => Ok(()),
                            Some(code) => Err(NetlinkError::Kernel { errno: -code.get() }),
                        };
                        acked += 1;
                    }
                }
            }
        }
        Ok(results)
    }

    /// One request with an ACK; the kernel's answer as an error if it refused.
    pub(crate) fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<(), NetlinkError> {
        self.batch(vec![(msg, flags)])?
            .pop()
            .unwrap_or(Err(NetlinkError::NoAck))
    }

    /// One `RTM_GET*` request without DUMP, answered by one message: the reply, or the
    /// kernel's errno (a lookup by key costs one message, not a dump of the whole table).
    pub(crate) fn get(
        &mut self,
        msg: RouteNetlinkMessage,
    ) -> Result<RouteNetlinkMessage, NetlinkError> {
        let seq = self.next_seq();
        let mut out = Vec::new();
        encode(&mut out, msg, NLM_F_REQUEST, seq);
        self.send(&out)?;
        loop {
            for (s, m) in self.recv_batch()? {
                if s != seq {
                    continue;
                }
                match m.payload {
                    NetlinkPayload::InnerMessage(inner) => return Ok(inner),
                    NetlinkPayload::Error(e) => {
                        return Err(match e.code {
                            Some(code) => NetlinkError::Kernel { errno: -code.get() },
                            None => NetlinkError::NoAck,
                        });
                    }
                    _ => {}
                }
            }
        }
    }

    /// Dumps with `msg` as the filter; returns every reply message. Retried when the kernel
    /// says the dump was interrupted by a change.
    pub(crate) fn dump(
        &mut self,
        msg: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        'retry: for _ in 0..DUMP_RETRIES {
            let seq = self.next_seq();
            let mut out = Vec::new();
            encode(&mut out, msg.clone(), NLM_F_REQUEST | NLM_F_DUMP, seq);
            self.send(&out)?;
            let mut replies = Vec::new();
            let mut interrupted = false;
            loop {
                for (s, m) in self.recv_batch()? {
                    if s != seq {
                        continue;
                    }
                    if m.header.flags & NLM_F_DUMP_INTR != 0 {
                        interrupted = true;
                    }
                    match m.payload {
                        NetlinkPayload::Done(_) => {
                            if interrupted {
                                continue 'retry;
                            }
                            return Ok(replies);
                        }
                        NetlinkPayload::Error(e) => {
                            if let Some(code) = e.code {
                                return Err(NetlinkError::Kernel { errno: -code.get() });
                            }
                        }
                        NetlinkPayload::InnerMessage(inner) => replies.push(inner),
                        _ => {}
                    }
                    let _ = NLM_F_MULTIPART;
                }
            }
        }
        Err(NetlinkError::DumpInterrupted)
    }

    /// Receives one datagram of notifications (blocking).
    pub(crate) fn recv_notifications(
        &mut self,
    ) -> Result<Vec<NetlinkMessage<RouteNetlinkMessage>>, NetlinkError> {
        Ok(self.recv_batch()?.into_iter().map(|(_, m)| m).collect())
    }

    fn send(&self, buf: &[u8]) -> Result<(), NetlinkError> {
        let sent = self
            .sock
            .send(buf, 0)
            .map_err(NetlinkError::io("sending request"))?;
        if sent != buf.len() {
            return Err(NetlinkError::Io {
                context: format!("short send: {sent} of {} bytes", buf.len()),
                source: io::Error::from(io::ErrorKind::WriteZero),
            });
        }
        Ok(())
    }

    /// Reads one datagram and splits it into messages (sequence number, message). Messages we
    /// cannot decode are skipped with a log line: a newer kernel's attribute must not stop us.
    fn recv_batch(
        &mut self,
    ) -> Result<Vec<(u32, NetlinkMessage<RouteNetlinkMessage>)>, NetlinkError> {
        self.rx.clear();
        self.rx.reserve(1 << 16);
        let n = loop {
            match self.sock.recv(&mut self.rx, 0) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    return Err(NetlinkError::Overrun);
                }
                Err(e) => return Err(NetlinkError::io("receiving")(e)),
            }
        };
        let data = &self.rx[..n.min(self.rx.len())];
        let mut msgs = Vec::new();
        let mut off = 0usize;
        while off < data.len() {
            let Ok(buf) = NetlinkBuffer::new_checked(&data[off..]) else {
                break;
            };
            let len = buf.length() as usize;
            if len == 0 || off + len > data.len() {
                break;
            }
            let seq = buf.sequence_number();
            match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[off..off + len]) {
                Ok(m) => msgs.push((seq, m)),
                Err(e) => {
                    tracing::debug!(error = %e, "skipping a netlink message we cannot decode")
                }
            }
            off += (len + 3) & !3;
        }
        Ok(msgs)
    }
}

/// Appends `msg` framed with a netlink header to `out`.
pub(crate) fn encode(out: &mut Vec<u8>, msg: RouteNetlinkMessage, flags: u16, seq: u32) {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut nl = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
    nl.finalize();
    let start = out.len();
    out.resize(start + nl.buffer_len(), 0);
    nl.serialize(&mut out[start..]);
}

fn force_rcvbuf(sock: &Socket) {
    let size = RCVBUF as libc::c_int;
    // SAFETY: setsockopt with a pointer to a c_int that lives for the call.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            &size as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        let _ = sock.set_rx_buf_sz(RCVBUF);
    }
}
