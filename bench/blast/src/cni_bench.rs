//! `margay-cni-bench`: times CNI ADD and DEL of two plugins, alternating them in rounds.
//!
//! Run inside the node's network namespace (the plugins' host sides go there). For each
//! implementation the caller has created the pod namespaces `/var/run/netns/PREFIX-IMPL-I`
//! (I from 0 to pods - 1). The ADD phase goes round by round: in each round one implementation
//! adds `round` pods, then the other adds as many (which one goes first alternates per round, so
//! machine noise falls on both); `parallel` workers share a round's pods, each running one plugin
//! at a time. The DEL phase then removes every pod the same way. A sample is the wall time of
//! one plugin process, from spawn to exit, stdin written and stdout read in between. Any plugin
//! failure stops the run with its output.
//!
//! Prints one line per implementation and command: `IMPL CMD n=N p50_ms=.. p99_ms=.. mean_ms=..
//! max_ms=..`, and writes every sample to `--samples` (`IMPL CMD POD MS`).

use anyhow::{Context, bail};
use clap::Parser;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

#[derive(Parser, Debug)]
#[command(about = "CNI ADD/DEL latency of two plugins, alternated in rounds")]
struct Args {
    /// An implementation: `NAME=PLUGIN_BINARY=NETCONF_FILE` (give it twice).
    #[arg(long = "impl", num_args = 1, required = true)]
    impls: Vec<String>,
    /// Pods per implementation.
    #[arg(long, default_value_t = 200)]
    pods: usize,
    /// Pods per implementation per round.
    #[arg(long, default_value_t = 10)]
    round: usize,
    /// Plugins in flight at once (each worker runs one at a time).
    #[arg(long, default_value_t = 1)]
    parallel: usize,
    /// Pod namespaces are `/var/run/netns/PREFIX-NAME-I`.
    #[arg(long)]
    netns_prefix: String,
    /// `CNI_PATH` for the plugins (delegated IPAM).
    #[arg(long, default_value = "/usr/lib/cni")]
    cni_path: String,
    /// Where every sample goes.
    #[arg(long)]
    samples: PathBuf,
}

struct Impl {
    name: String,
    binary: PathBuf,
    conf: String,
}

/// One sample: implementation index, command, pod, milliseconds.
type Sample = (usize, &'static str, usize, f64);

fn parse_impl(s: &str) -> anyhow::Result<Impl> {
    let mut it = s.splitn(3, '=');
    let (Some(name), Some(binary), Some(conf)) = (it.next(), it.next(), it.next()) else {
        bail!("--impl {s:?}: expected NAME=BINARY=NETCONF_FILE");
    };
    let conf = std::fs::read_to_string(conf).with_context(|| format!("reading {conf}"))?;
    Ok(Impl {
        name: name.to_string(),
        binary: binary.into(),
        conf,
    })
}

/// Runs one plugin command for pod `pod` of `imp` as a runtime does; returns its wall time.
fn run_one(args: &Args, imp: &Impl, cmd: &str, pod: usize) -> anyhow::Result<f64> {
    let netns = format!("/var/run/netns/{}-{}-{pod}", args.netns_prefix, imp.name);
    let container = format!("bench-{}-{pod}", imp.name);
    let cni_args = format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=pod-{pod}");
    let start = Instant::now();
    let mut child = Command::new(&imp.binary)
        .env_clear()
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", &container)
        .env("CNI_NETNS", &netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_ARGS", &cni_args)
        .env("CNI_PATH", &args.cni_path)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {:?}", imp.binary))?;
    child
        .stdin
        .take()
        .context("plugin stdin")?
        .write_all(imp.conf.as_bytes())?;
    let out = child.wait_with_output()?;
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    if !out.status.success() {
        bail!(
            "{} {cmd} pod {pod}: {}\nstdout: {}\nstderr: {}",
            imp.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if cmd == "ADD" && !String::from_utf8_lossy(&out.stdout).contains("\"ips\"") {
        bail!(
            "{} ADD pod {pod}: no ips in the result: {}",
            imp.name,
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(ms)
}

/// Runs `cmd` for pods `pods` of implementation `i` with `args.parallel` workers.
fn run_batch(
    args: &Args,
    impls: &[Impl],
    i: usize,
    cmd: &'static str,
    pods: std::ops::Range<usize>,
) -> anyhow::Result<Vec<Sample>> {
    let next = AtomicUsize::new(pods.start);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..args.parallel)
            .map(|_| {
                let next = &next;
                let end = pods.end;
                s.spawn(move || -> anyhow::Result<Vec<Sample>> {
                    let mut got = Vec::new();
                    loop {
                        let pod = next.fetch_add(1, Ordering::Relaxed);
                        if pod >= end {
                            return Ok(got);
                        }
                        got.push((i, cmd, pod, run_one(args, &impls[i], cmd, pod)?));
                    }
                })
            })
            .collect();
        let mut all = Vec::new();
        for w in workers {
            all.extend(w.join().map_err(|_| anyhow::anyhow!("worker panicked"))??);
        }
        Ok(all)
    })
}

/// Nearest-rank percentile of sorted `v`.
fn percentile(v: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let impls = args
        .impls
        .iter()
        .map(|s| parse_impl(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if impls.len() != 2 || args.round == 0 || args.parallel == 0 {
        bail!("need two --impl, --round >= 1 and --parallel >= 1");
    }
    let mut samples: Vec<Sample> = Vec::new();
    for cmd in ["ADD", "DEL"] {
        let mut start = 0;
        let mut r = 0;
        while start < args.pods {
            let end = (start + args.round).min(args.pods);
            let order = if r % 2 == 0 { [0, 1] } else { [1, 0] };
            for i in order {
                samples.extend(run_batch(&args, &impls, i, cmd, start..end)?);
            }
            start = end;
            r += 1;
        }
    }
    let mut f = std::fs::File::create(&args.samples)
        .with_context(|| format!("creating {:?}", args.samples))?;
    for (i, cmd, pod, ms) in &samples {
        writeln!(f, "{} {cmd} {pod} {ms:.3}", impls[*i].name)?;
    }
    for cmd in ["ADD", "DEL"] {
        for (i, imp) in impls.iter().enumerate() {
            let mut v: Vec<f64> = samples
                .iter()
                .filter(|s| s.0 == i && s.1 == cmd)
                .map(|s| s.3)
                .collect();
            v.sort_by(|a, b| a.total_cmp(b));
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            println!(
                "{} {cmd} n={} p50_ms={:.2} p99_ms={:.2} mean_ms={:.2} max_ms={:.2}",
                imp.name,
                v.len(),
                percentile(&v, 50.0),
                percentile(&v, 99.0),
                mean,
                v[v.len() - 1]
            );
        }
    }
    Ok(())
}
