//! `margay-felix-scale`: margay-felix at N nodes with a VXLAN pool (N-1 remote blocks,
//! neighbour and FDB entries, 250 local pods) or an IP-in-IP one (margay-bgpd beside it, N-1
//! simulated BGP speakers, N-1 routes through tunl0; needs the ipip module, so bench/ runs it in
//! the VM of tests/vm/), for each N asked: its cold start, its steady full resync, and the
//! kernel writes one Node's join and leave cost. Must run as root (it creates network
//! namespaces). See BENCHMARKS.md.

use std::time::Duration;

use clap::Parser;
use margay_bench::sim::felixscale::{self, Backend};

#[derive(Parser, Debug)]
#[command(
    about = "margay-felix at N nodes (VXLAN or IP-in-IP): cold start, resync, writes per Node change"
)]
struct Args {
    /// The pool's encapsulation: `vxlan` (backend vxlan) or `ipip` (backend bird, with bgpd).
    #[arg(long, default_value = "vxlan")]
    backend: Backend,
    /// Cluster sizes N (the real node included).
    #[arg(long, value_delimiter = ',', default_values_t = [100, 300, 1000])]
    nodes: Vec<usize>,
    /// Local pods on the real node (at most 250).
    #[arg(long, default_value_t = 250)]
    pods: usize,
    /// Give up on a wait after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Joins and leaves of one more Node after the first one, for felix's CPU per Node change
    /// (counted between its periodic resyncs; 0: none).
    #[arg(long, default_value_t = 0)]
    churn: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    for &n in &args.nodes {
        let options = felixscale::Options {
            pods: args.pods,
            timeout: Duration::from_secs(args.timeout),
            churn: args.churn,
        };
        let r = felixscale::run(args.backend, n, options, |line| {
            eprintln!("felix-scale: {line}")
        })?;
        let churn = r.churn.map_or(String::new(), |c| {
            format!(
                "; CPU per Node change {:.3} ms ({} joins and leaves: {:.2} s of CPU in {:.1} s, \
                 {:.3} s of it idle)",
                c.per_change().as_secs_f64() * 1000.0,
                c.changes,
                c.busy.as_secs_f64(),
                c.spells.as_secs_f64(),
                c.idle.as_secs_f64()
            )
        });
        println!(
            "felix {} N={} pods={}: cold start {:.2} s; steady resync {:.1} ms (mean of {}); \
             join {} kernel notifications ({} route writes), leave {} ({}); CPU {:.2} s, \
             peak RSS {:.1} MiB{churn}",
            r.backend,
            r.nodes,
            r.pods,
            r.cold_start.as_secs_f64(),
            r.steady_resync.as_secs_f64() * 1000.0,
            r.resyncs,
            r.join_events.len(),
            r.join_route_writes,
            r.leave_events.len(),
            r.leave_route_writes,
            r.felix.cpu.as_secs_f64(),
            r.felix.rss_mib()
        );
    }
    Ok(())
}
