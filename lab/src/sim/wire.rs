//! The smallest BGP-4 wire format the simulated nodes and the benchmarks need, written apart
//! from margay's own codec so the measuring tools do not share its bugs: message headers, OPEN
//! (IPv4 unicast, 4-octet AS), KEEPALIVE, the iBGP attributes of an announcement, a whole-message
//! reader and the session's opening handshake.

use std::net::Ipv4Addr;

use anyhow::bail;
use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HOLD_TIME: u16 = 240;

pub fn header(out: &mut BytesMut, kind: u8, body_len: usize) {
    out.put_slice(&[0xff; 16]);
    out.put_u16((19 + body_len) as u16);
    out.put_u8(kind);
}

pub fn open(asn: u32, router_id: Ipv4Addr) -> BytesMut {
    // Capabilities: multiprotocol IPv4 unicast (1), 4-octet AS (65).
    let caps: Vec<u8> = [
        &[1u8, 4, 0, 1, 0, 1][..],
        &[65, 4][..],
        &asn.to_be_bytes()[..],
    ]
    .concat();
    let mut body = BytesMut::new();
    body.put_u8(4);
    body.put_u16(if asn > 65535 { 23456 } else { asn as u16 });
    body.put_u16(HOLD_TIME);
    body.put_slice(&router_id.octets());
    body.put_u8((caps.len() + 2) as u8);
    body.put_u8(2);
    body.put_u8(caps.len() as u8);
    body.put_slice(&caps);
    let mut out = BytesMut::new();
    header(&mut out, 1, body.len());
    out.put_slice(&body);
    out
}

pub fn keepalive() -> BytesMut {
    let mut out = BytesMut::new();
    header(&mut out, 4, 0);
    out
}

/// Reads whole messages; returns (type, body).
pub struct Reader {
    pub stream: tokio::net::tcp::OwnedReadHalf,
    pub buf: BytesMut,
    /// How much room each read makes when the buffer runs short (large for the throughput
    /// sinks, small for a thousand simulated speakers).
    pub chunk: usize,
}

impl Reader {
    pub async fn next(&mut self) -> anyhow::Result<(u8, BytesMut)> {
        loop {
            if self.buf.len() >= 19 {
                let len = u16::from_be_bytes([self.buf[16], self.buf[17]]) as usize;
                if !(19..=65535).contains(&len) {
                    bail!("bad message length {len}");
                }
                if self.buf.len() >= len {
                    let mut msg = self.buf.split_to(len);
                    let kind = msg[18];
                    msg.advance(19);
                    return Ok((kind, msg));
                }
            }
            if self.buf.capacity() - self.buf.len() < self.chunk / 16 {
                self.buf.reserve(self.chunk);
            }
            let n = self.stream.read_buf(&mut self.buf).await?;
            if n == 0 {
                bail!("connection closed by the peer");
            }
        }
    }
}

/// The session's opening, reading `chunk` octets at a time: our OPEN, the peer's OPEN, our KEEPALIVE, the peer's KEEPALIVE
/// (Established). Returns the reader and the write half.
pub async fn handshake(
    stream: TcpStream,
    asn: u32,
    router_id: Ipv4Addr,
    chunk: usize,
) -> anyhow::Result<(Reader, tokio::net::tcp::OwnedWriteHalf)> {
    let (rd, mut wr) = stream.into_split();
    wr.write_all(&open(asn, router_id)).await?;
    let mut reader = Reader {
        stream: rd,
        buf: BytesMut::with_capacity(chunk),
        chunk,
    };
    let (kind, _) = reader.next().await?;
    if kind != 1 {
        bail!("expected OPEN, got message type {kind}");
    }
    wr.write_all(&keepalive()).await?;
    loop {
        let (kind, body) = reader.next().await?;
        match kind {
            4 => return Ok((reader, wr)),
            3 => bail!(
                "NOTIFICATION {}/{}",
                body.first().unwrap_or(&0),
                body.get(1).unwrap_or(&0)
            ),
            _ => {}
        }
    }
}

/// The path attributes of an iBGP route from `me`: ORIGIN IGP, empty AS_PATH, NEXT_HOP `me`,
/// LOCAL_PREF 100.
pub fn ibgp_attributes(me: Ipv4Addr) -> BytesMut {
    let mut attrs = BytesMut::new();
    attrs.put_slice(&[0x40, 1, 1, 0]);
    attrs.put_slice(&[0x40, 2, 0]);
    attrs.put_slice(&[0x40, 3, 4]);
    attrs.put_slice(&me.octets());
    attrs.put_slice(&[0x40, 5, 4, 0, 0, 0, 100]);
    attrs
}
