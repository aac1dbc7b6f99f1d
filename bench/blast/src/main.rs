//! `margay-bgp-blast`: drives a route reflector under test for the throughput benchmark.
//!
//! One process opens three iBGP sessions to the reflector: an injector, which sends N IPv4 /24
//! prefixes as fast as TCP lets it, and two clients, which count the distinct prefixes they
//! receive. It reports the time from the first UPDATE sent to both clients holding every prefix.
//! Its BGP code is deliberately minimal and separate from margay's codec, so the measuring tool
//! does not share bugs with what it measures.

use margay_bench::bgp;

use anyhow::{Context, bail};
use clap::Parser;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::net::{TcpSocket, TcpStream};

#[derive(Parser, Debug)]
#[command(
    about = "Route reflector throughput: inject N prefixes, time until every client holds them"
)]
struct Args {
    /// The reflector's address.
    #[arg(long, default_value = "127.0.0.1")]
    reflector: Ipv4Addr,
    #[arg(long, default_value_t = 179)]
    port: u16,
    /// Our AS (the reflector's too: all sessions are iBGP).
    #[arg(long, default_value_t = 64512)]
    asn: u32,
    /// The injector's address (also its router id and the routes' next hop).
    #[arg(long, default_value = "127.0.0.2")]
    injector: Ipv4Addr,
    /// The clients' addresses.
    #[arg(long, num_args = 1.., default_values = ["127.0.0.3", "127.0.0.4"])]
    clients: Vec<Ipv4Addr>,
    /// How many /24 prefixes to inject, from 1.0.0.0/24 upward.
    #[arg(long, default_value_t = 1_000_000)]
    count: u32,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
}

async fn connect(local: Ipv4Addr, remote: SocketAddr) -> anyhow::Result<TcpStream> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = TcpSocket::new_v4()?;
        s.bind(SocketAddr::new(local.into(), 0))?;
        match s.connect(remote).await {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(e) if Instant::now() < deadline => {
                if Instant::now() + Duration::from_secs(25) < deadline {
                    eprintln!("blast: {local} -> {remote}: {e}; retrying");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("connecting {local} to {remote}")),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let remote = SocketAddr::new(args.reflector.into(), args.port);
    if args.clients.is_empty() {
        bail!("at least one client is needed");
    }

    // Clients first, so they are Established before anything is injected.
    let mut client_tasks = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(args.clients.len());
    for c in &args.clients {
        let stream = connect(*c, remote).await?;
        let (count, asn, ready) = (args.count, args.asn, ready_tx.clone());
        let c = *c;
        client_tasks.push(tokio::spawn(async move {
            bgp::sink(stream, asn, c, count, ready).await
        }));
    }
    for _ in &args.clients {
        ready_rx
            .recv()
            .await
            .context("a client session failed before it was established")?;
    }
    eprintln!("blast: {} clients established", args.clients.len());

    let stream = connect(args.injector, remote).await?;
    let (count, asn, inj) = (args.count, args.asn, args.injector);
    let injector = tokio::spawn(async move { bgp::inject(stream, asn, inj, count).await });

    let work = async {
        let start = injector_start(&injector).await?;
        let mut finished = Vec::new();
        for t in client_tasks {
            finished.push(t.await??);
        }
        let end = finished.iter().max().copied().unwrap_or(start);
        anyhow::Ok((start, end))
    };
    let (start, end) = tokio::time::timeout(Duration::from_secs(args.timeout), work)
        .await
        .context("timed out before every client held every prefix")??;
    let secs = end.duration_since(start).as_secs_f64();
    println!(
        "prefixes={} clients={} seconds={:.3} prefixes_per_second={:.0}",
        args.count,
        args.clients.len(),
        secs,
        f64::from(args.count) / secs
    );
    Ok(())
}

/// The injector reports the instant of its first UPDATE through its task's early result; the
/// task keeps the session open (keepalives) until the process ends.
async fn injector_start(
    t: &tokio::task::JoinHandle<anyhow::Result<()>>,
) -> anyhow::Result<Instant> {
    loop {
        if let Some(i) = bgp::first_update_sent() {
            return Ok(i);
        }
        if t.is_finished() {
            bail!("the injector ended before sending anything");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
