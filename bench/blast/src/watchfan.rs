//! `margay-watchfan`: etcd's fan-out of one Node write to W watchers (margay's own watch code,
//! each watcher with its own connection, all in one process), for each W asked: time until
//! every watcher has the write (p50 / p99 / max over the writes), each delivery's p50 / p99,
//! and etcd's CPU. Must run as root (it creates a network namespace). See BENCHMARKS.md.

use std::time::Duration;

use clap::Parser;
use margay_bench::sim::watchfan;

#[derive(Parser, Debug)]
#[command(about = "etcd's watch fan-out of one Node write to many margay watchers")]
struct Args {
    /// Watcher counts (two per node: bgpd and felix).
    #[arg(long, value_delimiter = ',', default_values_t = [200, 600, 2000])]
    watchers: Vec<usize>,
    /// etcd gRPC proxies in front of etcd, the watchers spread evenly over them; one run per
    /// number given (0: every watcher on etcd itself).
    #[arg(long, value_delimiter = ',', default_values_t = [0])]
    proxies: Vec<u8>,
    /// Writes of the Node per count.
    #[arg(long, default_value_t = 100)]
    writes: usize,
    /// Milliseconds between writes.
    #[arg(long, default_value_t = 100)]
    interval_ms: u64,
}

fn quantile(v: &[Duration], q: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort();
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    for &w in &args.watchers {
        for &p in &args.proxies {
            let progress = |s: &str| eprintln!("[W={w} proxies={p}] {s}");
            let r = watchfan::run(
                w,
                p,
                args.writes,
                Duration::from_millis(args.interval_ms),
                progress,
            )?;
            println!(
                "W={w} proxies={p} writes={} to-all p50={:.1}ms p99={:.1}ms max={:.1}ms; each delivery p50={:.1}ms p99={:.1}ms; missing={}; etcd cpu={:.2}s over {:.1}s ({:.1}% of a core) peak rss={:.1}MiB; proxies cpu={:.2}s ({:.1}% of a core) peak rss={:.1}MiB",
                r.writes,
                quantile(&r.to_all, 0.5),
                quantile(&r.to_all, 0.99),
                quantile(&r.to_all, 1.0),
                quantile(&r.each, 0.5),
                quantile(&r.each, 0.99),
                r.missing,
                r.etcd.cpu.as_secs_f64(),
                r.seconds,
                100.0 * r.etcd.cpu.as_secs_f64() / r.seconds,
                r.etcd.rss_mib(),
                r.proxies.cpu.as_secs_f64(),
                100.0 * r.proxies.cpu.as_secs_f64() / r.seconds,
                r.proxies.rss_mib()
            );
            assert_eq!(r.watchers, w);
        }
    }
    Ok(())
}
