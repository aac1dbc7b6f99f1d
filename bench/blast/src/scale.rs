//! `margay-scale`: a real node's cold start against N-1 simulated nodes in a full mesh, margay
//! (margay-bgpd + margay-felix) and BIRD 2 (the same peers as static protocols) in the same
//! run, for each N asked; prints a progress line per step and a result line per daemon.
//! Must run as root (it creates network namespaces). See BENCHMARKS.md.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use margay_bench::sim::joinleave::{self, Trials};
use margay_bench::sim::{Role, SimCluster, churn, coldstart};

#[derive(Parser, Debug)]
#[command(about = "Cold start of one real node against N-1 simulated nodes, margay beside BIRD")]
struct Args {
    /// Cluster sizes N (the real node included).
    #[arg(long, value_delimiter = ',', default_values_t = [100, 300])]
    nodes: Vec<usize>,
    /// Give up on a convergence after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Skip BIRD.
    #[arg(long)]
    no_bird: bool,
    /// How the simulated nodes peer with the real node.
    #[arg(long, value_enum, default_value_t = RoleArg::Mesh)]
    role: RoleArg,
    /// Churn after the joins and leaves: this many joins and as many leaves per second...
    #[arg(long, default_value_t = 0)]
    churn_rate: u32,
    /// ...for this many seconds.
    #[arg(long, default_value_t = 60)]
    churn_seconds: u32,
    /// Joins and leaves of one more node after the cold start, per daemon.
    #[arg(long, default_value_t = 100)]
    trials: usize,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum RoleArg {
    /// A full mesh.
    Mesh,
    /// The real node reflects for every simulated node.
    Reflector,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::Mesh => Role::Mesh,
            RoleArg::Reflector => Role::Reflector,
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let timeout = Duration::from_secs(args.timeout);
    println!("# {}", machine());
    for &n in &args.nodes {
        let sims = n.checked_sub(1).context("N must be at least 2")?;
        let progress = |s: &str| eprintln!("[N={n}] {s}");
        println!("N={n} role: {:?}", args.role);
        let spares = (2 * args.churn_rate as usize).max(1);
        let mut c = SimCluster::build(sims, spares, args.role.into(), progress)?;
        progress(&format!(
            "lab {} up; starting margay-bgpd and margay-felix",
            c.lab().dir().display()
        ));
        let (m, daemons) = coldstart::margay(&c, timeout)?;
        print_row(n, "margay", &m);
        if args.trials > 0 {
            progress(&format!(
                "margay: {} joins and leaves of node {}",
                args.trials,
                n + 1
            ));
            let t = joinleave::margay(&c, args.trials, progress)?;
            print_trials(n, "margay", &t);
        }
        if args.churn_rate > 0 {
            progress(&format!(
                "churn: {r} joins and {r} leaves per second for {} s",
                args.churn_seconds,
                r = args.churn_rate
            ));
            let pids = [
                ("margay-bgpd".to_string(), daemons.bgpd.pid()),
                ("margay-felix".to_string(), daemons.felix.pid()),
                ("etcd".to_string(), c.etcd_pid()),
            ];
            let ch = churn::run(&c, args.churn_rate, args.churn_seconds, &pids)?;
            let cpu: Vec<String> = ch
                .cpu
                .iter()
                .map(|(p, d)| {
                    format!(
                        "{p} {:.2}s ({:.1}% of a core)",
                        d.as_secs_f64(),
                        100.0 * d.as_secs_f64() / ch.seconds
                    )
                })
                .collect();
            println!(
                "N={n} margay churn: {} joins, {} leaves in {:.1}s; CPU {}; other sessions down={}; spares wrong in the kernel after 2 s: {:?}",
                ch.joins,
                ch.leaves,
                ch.seconds,
                cpu.join(", "),
                ch.downs,
                ch.mismatched
            );
        }
        progress("stopping margay (bgpd by SIGTERM, timed)");
        let stop = coldstart::stop_margay(&c, daemons, Duration::from_secs(20))?;
        match stop {
            Some(d) => println!(
                "N={n} margay-bgpd SIGTERM with {sims} Established peers: stopped in {:.3} s",
                d.as_secs_f64()
            ),
            None => println!(
                "N={n} margay-bgpd SIGTERM with {sims} Established peers: still running after 20 s (killed)"
            ),
        }
        if !args.no_bird {
            progress("starting BIRD with the same peers");
            let (b, bird) = coldstart::bird(&c, timeout)?;
            print_row(n, "bird", &b);
            if args.trials > 0 {
                progress(&format!(
                    "BIRD: {} joins and leaves (birdc configure)",
                    args.trials
                ));
                let t = joinleave::bird(&c, &bird, args.trials, progress)?;
                print_trials(n, "bird", &t);
            }
            if args.churn_rate > 0 {
                progress(&format!(
                    "BIRD churn (re-render + birdc configure per change): {r} joins and {r} \
                     leaves per second for {} s",
                    args.churn_seconds,
                    r = args.churn_rate
                ));
                let ch = churn::bird(&c, &bird, args.churn_rate, args.churn_seconds)?;
                let ms = |q| Trials::quantile(&ch.configure, q).as_secs_f64() * 1000.0;
                println!(
                    "N={n} bird churn: {} joins, {} leaves of {} issued in {:.1}s (late {}); BIRD CPU \
                     {:.2}s ({:.1}% of a core), birdc {:.2}s; configure p50={:.1}ms p99={:.1}ms, \
                     queued {}; other sessions down={}; spares wrong in the kernel after 5 s: {:?}",
                    ch.joins,
                    ch.leaves,
                    ch.planned,
                    ch.seconds,
                    ch.late,
                    ch.bird_cpu.as_secs_f64(),
                    100.0 * ch.bird_cpu.as_secs_f64() / ch.seconds,
                    ch.birdc_cpu.as_secs_f64(),
                    ms(0.5),
                    ms(0.99),
                    ch.queued,
                    ch.downs,
                    ch.mismatched
                );
            }
            println!(
                "N={n} ratio margay/bird: converged {:.2}, CPU {:.2}, peak RSS {:.2}",
                m.converged.as_secs_f64() / b.converged.as_secs_f64(),
                m.cpu().as_secs_f64() / b.cpu().as_secs_f64().max(0.001),
                m.rss_mib() / b.rss_mib()
            );
        }
        progress("tearing down");
    }
    Ok(())
}

fn print_row(n: usize, who: &str, r: &coldstart::ColdStart) {
    let costs: Vec<String> = r
        .costs
        .iter()
        .map(|(p, c)| {
            format!(
                "{p} cpu={:.2}s rss={:.1}MiB",
                c.cpu.as_secs_f64(),
                c.rss_mib()
            )
        })
        .collect();
    println!(
        "N={n} {who}: established={:.3}s converged={:.3}s cpu={:.2}s rss={:.1}MiB downs={} [{}]",
        r.established.as_secs_f64(),
        r.converged.as_secs_f64(),
        r.cpu().as_secs_f64(),
        r.rss_mib(),
        r.downs,
        costs.join(", ")
    );
}

fn print_trials(n: usize, who: &str, t: &Trials) {
    let ms = |v: &[Duration], q| Trials::quantile(v, q).as_secs_f64() * 1000.0;
    println!(
        "N={n} {who} join: p50={:.1}ms p99={:.1}ms; leave: p50={:.1}ms p99={:.1}ms; trials={} other sessions down={}",
        ms(&t.joins, 0.5),
        ms(&t.joins, 0.99),
        ms(&t.leaves, 0.5),
        ms(&t.leaves, 0.99),
        t.joins.len(),
        t.downs
    );
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        })
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024 / 1024);
    format!("Linux {}, {cores} cores, {mem} GiB", kernel.trim())
}
