//! The simulated nodes' BGP side: one light iBGP speaker per simulated node, all in one tokio
//! runtime. Each listens on its own address (port 179) for the real nodes that peer with it,
//! announces its block with itself as next hop, then End-of-RIB, and records in its [`Log`]
//! every prefix it is sent and when. Built on the lab's own small BGP code ([`super::wire`]), not
//! margay's codec.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::{BufMut, BytesMut};
use ipnet::Ipv4Net;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::wire::{handshake, header, ibgp_attributes, keepalive};

/// One simulated node: its Node name, its BGP address and the /26 it owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimNode {
    pub name: String,
    pub addr: Ipv4Addr,
    pub block: Ipv4Net,
}

/// What one simulated speaker saw.
#[derive(Debug, Default, Clone)]
pub struct Log {
    /// Sessions that reached Established, over the speaker's life.
    pub sessions: u32,
    /// Sessions that went down after Established (a NOTIFICATION, a close, an error).
    pub downs: u32,
    /// Sessions Established now.
    pub up: u32,
    /// When the last session reached Established.
    pub established: Option<Instant>,
    /// The last error or NOTIFICATION that ended a session.
    pub last_error: Option<String>,
    /// Prefixes held now (announced and not withdrawn), with when each arrived.
    pub routes: HashMap<Ipv4Net, Instant>,
    /// When each prefix was last withdrawn.
    pub withdrawn: HashMap<Ipv4Net, Instant>,
}

/// Every simulated speaker's log, by index in the fleet.
pub type Logs = Arc<Vec<Mutex<Log>>>;

/// The hold time the speakers offer; they send a KEEPALIVE every third of it.
pub const SIM_HOLD_TIME: Duration = Duration::from_secs(90);

/// Starts a listener for every node at `addr:port` (they must be on an interface of the
/// current thread's namespace) and returns the shared logs. The speakers run until the
/// runtime ends.
pub async fn start(nodes: &[SimNode], asn: u32, port: u16) -> anyhow::Result<Logs> {
    let logs: Logs = Arc::new(nodes.iter().map(|_| Mutex::new(Log::default())).collect());
    for (i, node) in nodes.iter().enumerate() {
        let listener = TcpListener::bind(SocketAddr::new(node.addr.into(), port))
            .await
            .with_context(|| format!("listening on {}:{port}", node.addr))?;
        let (logs, node) = (logs.clone(), node.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let (logs, node) = (logs.clone(), node.clone());
                tokio::spawn(async move {
                    let mut was_up = false;
                    let res = session(stream, &node, asn, &logs[i], &mut was_up).await;
                    let mut log = logs[i].lock().expect("log lock");
                    if was_up {
                        log.up -= 1;
                        log.downs += 1;
                        // A session's routes go with it.
                        log.routes.clear();
                    }
                    if let Err(e) = res {
                        log.last_error = Some(format!("{e:#}"));
                    }
                });
            }
        });
    }
    Ok(logs)
}

/// The UPDATE announcing `block` with `me` as next hop (ORIGIN IGP, empty AS_PATH,
/// LOCAL_PREF 100).
fn announce(block: Ipv4Net, me: Ipv4Addr) -> BytesMut {
    let attrs = ibgp_attributes(me);
    let len = block.prefix_len();
    let octets = usize::from(len).div_ceil(8);
    let body_len = 2 + 2 + attrs.len() + 1 + octets;
    let mut m = BytesMut::with_capacity(19 + body_len);
    header(&mut m, 2, body_len);
    m.put_u16(0);
    m.put_u16(attrs.len() as u16);
    m.put_slice(&attrs);
    m.put_u8(len);
    m.put_slice(&block.network().octets()[..octets]);
    m
}

/// End-of-RIB for IPv4 unicast: an empty UPDATE.
fn end_of_rib() -> BytesMut {
    let mut m = BytesMut::new();
    header(&mut m, 2, 4);
    m.put_u32(0);
    m
}

/// One session: OPEN both ways, KEEPALIVE, then our block and End-of-RIB, then record every
/// UPDATE until the session ends.
async fn session(
    stream: TcpStream,
    node: &SimNode,
    asn: u32,
    log: &Mutex<Log>,
    was_up: &mut bool,
) -> anyhow::Result<()> {
    let (mut reader, mut wr) = handshake(stream, asn, node.addr, 4096).await?;
    {
        let mut l = log.lock().expect("log lock");
        l.sessions += 1;
        l.up += 1;
        l.established = Some(Instant::now());
    }
    *was_up = true;
    let mut first = announce(node.block, node.addr);
    first.extend_from_slice(&end_of_rib());
    wr.write_all(&first).await?;
    // Keepalives at a third of the hold time, from their own task.
    let keepalives = tokio::spawn(async move {
        let mut tick = tokio::time::interval(SIM_HOLD_TIME / 3);
        loop {
            tick.tick().await;
            if wr.write_all(&keepalive()).await.is_err() {
                return;
            }
        }
    });
    let res = async {
        loop {
            let (kind, body) = reader.next().await?;
            match kind {
                2 => record_update(&body, log)?,
                3 => bail!(
                    "NOTIFICATION {}/{}",
                    body.first().unwrap_or(&0),
                    body.get(1).unwrap_or(&0)
                ),
                _ => {}
            }
        }
    }
    .await;
    keepalives.abort();
    res
}

/// The IPv4 prefixes of an NLRI or withdrawn-routes field.
fn prefixes(mut field: &[u8]) -> anyhow::Result<Vec<Ipv4Net>> {
    let mut out = Vec::new();
    while let Some(&len) = field.first() {
        let octets = usize::from(len).div_ceil(8);
        if len > 32 || field.len() < 1 + octets {
            bail!("malformed prefix (length {len})");
        }
        let mut a = [0u8; 4];
        a[..octets].copy_from_slice(&field[1..1 + octets]);
        out.push(Ipv4Net::new(Ipv4Addr::from(a), len)?);
        field = &field[1 + octets..];
    }
    Ok(out)
}

/// The (withdrawn, announced) IPv4 unicast prefixes of an UPDATE body, from its plain fields
/// and from MP_REACH / MP_UNREACH (AFI 1, SAFI 1).
pub fn parse_update(b: &[u8]) -> anyhow::Result<(Vec<Ipv4Net>, Vec<Ipv4Net>)> {
    let get = |at: usize| -> anyhow::Result<usize> {
        match b.get(at..at + 2) {
            Some(x) => Ok(usize::from(u16::from_be_bytes([x[0], x[1]]))),
            None => bail!("short UPDATE"),
        }
    };
    let wlen = get(0)?;
    let mut withdrawn = prefixes(b.get(2..2 + wlen).context("short withdrawn field")?)?;
    let alen = get(2 + wlen)?;
    let attrs_at = 4 + wlen;
    let mut attrs = b
        .get(attrs_at..attrs_at + alen)
        .context("short attributes")?;
    let mut announced = prefixes(&b[attrs_at + alen..])?;
    while attrs.len() >= 3 {
        let (flags, code) = (attrs[0], attrs[1]);
        let (len, hdr) = if flags & 0x10 != 0 {
            (usize::from(u16::from_be_bytes([attrs[2], attrs[3]])), 4)
        } else {
            (usize::from(attrs[2]), 3)
        };
        let value = attrs
            .get(hdr..hdr + len)
            .context("attribute past the end")?;
        match code {
            // MP_REACH_NLRI: AFI, SAFI, next hop, reserved, NLRI.
            14 if value.len() >= 4 && value[..3] == [0, 1, 1] => {
                let nh = usize::from(value[3]);
                announced.extend(prefixes(value.get(5 + nh..).unwrap_or(&[]))?);
            }
            // MP_UNREACH_NLRI: AFI, SAFI, withdrawn.
            15 if value.len() >= 3 && value[..3] == [0, 1, 1] => {
                withdrawn.extend(prefixes(&value[3..])?);
            }
            _ => {}
        }
        attrs = &attrs[hdr + len..];
    }
    Ok((withdrawn, announced))
}

fn record_update(body: &[u8], log: &Mutex<Log>) -> anyhow::Result<()> {
    let (withdrawn, announced) = parse_update(body)?;
    let now = Instant::now();
    let mut l = log.lock().expect("log lock");
    for p in withdrawn {
        l.routes.remove(&p);
        l.withdrawn.insert(p, now);
    }
    for p in announced {
        l.routes.entry(p).or_insert(now);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_announcement_parses_back_to_its_block() {
        let block: Ipv4Net = "10.120.3.64/26".parse().unwrap();
        let m = announce(block, Ipv4Addr::new(10, 98, 0, 9));
        let (w, a) = parse_update(&m[19..]).unwrap();
        assert!(w.is_empty());
        assert_eq!(a, vec![block]);
        let (w, a) = parse_update(&end_of_rib()[19..]).unwrap();
        assert!(w.is_empty() && a.is_empty());
    }

    #[test]
    fn mp_reach_and_unreach_are_read() {
        // MP_UNREACH 10.1.0.0/16, MP_REACH 10.2.3.0/24 via 10.0.0.1.
        let unreach = [0x80, 15, 6, 0, 1, 1, 16, 10, 1];
        let reach = [0x80, 14, 13, 0, 1, 1, 4, 10, 0, 0, 1, 0, 24, 10, 2, 3];
        let mut body = vec![0, 0];
        body.extend_from_slice(&((unreach.len() + reach.len()) as u16).to_be_bytes());
        body.extend_from_slice(&unreach);
        body.extend_from_slice(&reach);
        let (w, a) = parse_update(&body).unwrap();
        assert_eq!(w, vec!["10.1.0.0/16".parse::<Ipv4Net>().unwrap()]);
        assert_eq!(a, vec!["10.2.3.0/24".parse::<Ipv4Net>().unwrap()]);
    }

    #[test]
    fn a_truncated_update_is_an_error() {
        assert!(parse_update(&[0, 5, 24]).is_err());
        assert!(parse_update(&[0, 0, 0, 0, 33, 1, 2, 3, 4, 5]).is_err());
    }
}
