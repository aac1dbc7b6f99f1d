//! The smallest BGP-4 needed to benchmark a reflector: OPEN with IPv4 unicast and 4-octet AS,
//! KEEPALIVE, UPDATEs packed 4096 octets at a time, and a counter of the /24s an UPDATE announces.

use anyhow::{Context, bail};
use bytes::{BufMut, BytesMut};
use margay_lab::sim::wire::{Reader, handshake, header, ibgp_attributes, keepalive};
use std::net::Ipv4Addr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

static FIRST_UPDATE: OnceLock<Instant> = OnceLock::new();

/// When the injector wrote its first UPDATE.
pub fn first_update_sent() -> Option<Instant> {
    FIRST_UPDATE.get().copied()
}

/// OPEN, wait for the peer's OPEN and KEEPALIVE; keepalives every 30 s afterwards.
async fn establish(
    stream: TcpStream,
    asn: u32,
    router_id: Ipv4Addr,
) -> anyhow::Result<(Reader, mpsc::Sender<BytesMut>)> {
    let (reader, mut wr) = handshake(stream, asn, router_id, 1 << 20).await?;
    // One writer task: UPDATEs and keepalives share the socket.
    let (tx, mut rx) = mpsc::channel::<BytesMut>(1024);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        loop {
            tokio::select! {
                m = rx.recv() => match m {
                    Some(m) => if wr.write_all(&m).await.is_err() { return },
                    None => return,
                },
                _ = tick.tick() => if wr.write_all(&keepalive()).await.is_err() { return },
            }
        }
    });
    Ok((reader, tx))
}

/// The i-th injected prefix: 1.0.0.0/24 + i.
fn prefix(i: u32) -> [u8; 3] {
    let a = 0x0100_0000u32 + (i << 8);
    let o = a.to_be_bytes();
    [o[0], o[1], o[2]]
}

/// Sends `count` /24s, packed into 4096-octet UPDATEs with one shared attribute set.
pub async fn inject(stream: TcpStream, asn: u32, me: Ipv4Addr, count: u32) -> anyhow::Result<()> {
    let (mut reader, tx) = establish(stream, asn, me)
        .await
        .context("injector session")?;
    let attrs = ibgp_attributes(me);
    let per_msg = (4096 - 19 - 2 - 2 - attrs.len()) / 4;
    let mut i = 0u32;
    while i < count {
        let n = (count - i).min(per_msg as u32);
        let body_len = 2 + 2 + attrs.len() + 4 * n as usize;
        let mut m = BytesMut::with_capacity(19 + body_len);
        header(&mut m, 2, body_len);
        m.put_u16(0);
        m.put_u16(attrs.len() as u16);
        m.put_slice(&attrs);
        for k in i..i + n {
            m.put_u8(24);
            m.put_slice(&prefix(k));
        }
        if i == 0 {
            let _ = FIRST_UPDATE.set(Instant::now());
        }
        tx.send(m).await.context("injector session closed")?;
        i += n;
    }
    eprintln!("blast: injector sent {count} prefixes");
    // Keep the session: answer nothing, just read until the process ends.
    loop {
        let (kind, _) = reader.next().await?;
        if kind == 3 {
            bail!("injector received a NOTIFICATION");
        }
    }
}

/// Counts the distinct injected /24s announced to this client; returns when it holds all.
pub async fn sink(
    stream: TcpStream,
    asn: u32,
    me: Ipv4Addr,
    count: u32,
    ready: mpsc::Sender<()>,
) -> anyhow::Result<Instant> {
    let (mut reader, _tx) = establish(stream, asn, me).await.context("client session")?;
    let _ = ready.send(()).await;
    let mut seen = vec![false; count as usize];
    let mut held = 0u32;
    loop {
        let (kind, body) = reader.next().await?;
        match kind {
            2 => {}
            3 => bail!("client {me} received a NOTIFICATION"),
            _ => continue,
        }
        let b = &body[..];
        if b.len() < 4 {
            bail!("short UPDATE");
        }
        let wlen = u16::from_be_bytes([b[0], b[1]]) as usize;
        let alen_at = 2 + wlen;
        let alen = u16::from_be_bytes([b[alen_at], b[alen_at + 1]]) as usize;
        let mut nlri = &b[alen_at + 2 + alen..];
        while let Some(&len) = nlri.first() {
            let octets = usize::from(len).div_ceil(8);
            let p = &nlri[1..1 + octets];
            if len == 24 {
                let a = u32::from_be_bytes([p[0], p[1], p[2], 0]);
                let idx = a.wrapping_sub(0x0100_0000) >> 8;
                if idx < count && !seen[idx as usize] {
                    seen[idx as usize] = true;
                    held += 1;
                }
            }
            nlri = &nlri[1 + octets..];
        }
        if held == count {
            let now = Instant::now();
            eprintln!("blast: client {me} holds all {count} prefixes");
            return Ok(now);
        }
    }
}
