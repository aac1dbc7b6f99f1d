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
//! max_ms=.. cpu_ms=..`, and writes every sample to `--samples` (`IMPL CMD POD MS CPU_MS`).
//!
//! CPU: `cpu_ms` is the mean CPU time (user + system) of one plugin process and the children it
//! waited for (host-local for ptp), from `wait4`. Each `--daemon NAME=PID` (felix, etcd) is read
//! from `/proc/PID/stat` (itself and its waited-for children, e.g. felix's `nft`) before and after
//! every batch, and its CPU is charged to the batch's implementation and command: a line
//! `IMPL CMD cpu_per_op_ms plugin=.. NAME=.. total=..` per implementation and command. With the
//! machine's cores this bounds what parallelism can give: N at a time on C cores cannot finish
//! faster than N x total / C.

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
    /// A daemon whose CPU time is charged to the batches: `NAME=PID` (repeatable).
    #[arg(long = "daemon")]
    daemons: Vec<String>,
}

struct Impl {
    name: String,
    binary: PathBuf,
    conf: String,
}

/// One sample: implementation index, command, pod, wall milliseconds, CPU milliseconds.
type Sample = (usize, &'static str, usize, f64, f64);

/// A process's CPU time in milliseconds (user + system, its own and its waited-for
/// children's: fields 14-17 of `/proc/PID/stat`).
fn proc_cpu_ms(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command may hold spaces: the fields start after its closing parenthesis.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ")": state is field 3, so field N is f[N - 3].
    let ticks: u64 = f[11..15]
        .iter()
        .map(|v| v.parse::<u64>().unwrap_or(0))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(ticks as f64 * 1000.0 / hz)
}

/// Waits for `child` (its output already read) and returns its exit status and CPU time in
/// milliseconds (its own and its waited-for children's).
fn wait_cpu(child: &std::process::Child) -> anyhow::Result<(i32, f64)> {
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pid is our unwaited child; status and ru are valid for writes.
    let r = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut ru) };
    if r < 0 {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1000.0 + t.tv_usec as f64 / 1000.0;
    Ok((status, ms(ru.ru_utime) + ms(ru.ru_stime)))
}

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

/// Runs one plugin command for pod `pod` of `imp` as a runtime does; returns its wall time and
/// its CPU time.
fn run_one(args: &Args, imp: &Impl, cmd: &str, pod: usize) -> anyhow::Result<(f64, f64)> {
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
    // Both pipes read to the end (stderr on a thread, so neither can fill up), then wait4 for
    // the CPU time std's wait does not give.
    let mut err_pipe = child.stderr.take().context("plugin stderr")?;
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err_pipe, &mut v);
        v
    });
    let mut stdout = Vec::new();
    std::io::Read::read_to_end(
        &mut child.stdout.take().context("plugin stdout")?,
        &mut stdout,
    )?;
    let stderr = err_reader.join().unwrap_or_default();
    let (status, cpu) = wait_cpu(&child)?;
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        bail!(
            "{} {cmd} pod {pod}: wait status {status}\nstdout: {}\nstderr: {}",
            imp.name,
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        );
    }
    if cmd == "ADD" && !String::from_utf8_lossy(&stdout).contains("\"ips\"") {
        bail!(
            "{} ADD pod {pod}: no ips in the result: {}",
            imp.name,
            String::from_utf8_lossy(&stdout)
        );
    }
    Ok((ms, cpu))
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
                        let (ms, cpu) = run_one(args, &impls[i], cmd, pod)?;
                        got.push((i, cmd, pod, ms, cpu));
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
    let daemons: Vec<(String, u32)> = args
        .daemons
        .iter()
        .map(|d| {
            let (name, pid) = d
                .split_once('=')
                .with_context(|| format!("--daemon {d:?}: expected NAME=PID"))?;
            Ok((name.to_string(), pid.parse().context("--daemon PID")?))
        })
        .collect::<anyhow::Result<_>>()?;
    let daemon_cpu = || -> anyhow::Result<Vec<f64>> {
        daemons.iter().map(|(_, pid)| proc_cpu_ms(*pid)).collect()
    };
    // Per (implementation, command): each daemon's CPU milliseconds during its batches.
    let mut charged: std::collections::BTreeMap<(usize, &str), Vec<f64>> = Default::default();
    let mut samples: Vec<Sample> = Vec::new();
    for cmd in ["ADD", "DEL"] {
        let mut start = 0;
        let mut r = 0;
        while start < args.pods {
            let end = (start + args.round).min(args.pods);
            let order = if r % 2 == 0 { [0, 1] } else { [1, 0] };
            for i in order {
                let before = daemon_cpu()?;
                samples.extend(run_batch(&args, &impls, i, cmd, start..end)?);
                let after = daemon_cpu()?;
                let c = charged
                    .entry((i, cmd))
                    .or_insert_with(|| vec![0.0; daemons.len()]);
                for (k, (a, b)) in after.iter().zip(&before).enumerate() {
                    c[k] += a - b;
                }
            }
            start = end;
            r += 1;
        }
    }
    let mut f = std::fs::File::create(&args.samples)
        .with_context(|| format!("creating {:?}", args.samples))?;
    for (i, cmd, pod, ms, cpu) in &samples {
        writeln!(f, "{} {cmd} {pod} {ms:.3} {cpu:.3}", impls[*i].name)?;
    }
    for cmd in ["ADD", "DEL"] {
        for (i, imp) in impls.iter().enumerate() {
            let mine: Vec<&Sample> = samples.iter().filter(|s| s.0 == i && s.1 == cmd).collect();
            let mut v: Vec<f64> = mine.iter().map(|s| s.3).collect();
            v.sort_by(|a, b| a.total_cmp(b));
            let n = v.len() as f64;
            let mean = v.iter().sum::<f64>() / n;
            let plugin_cpu = mine.iter().map(|s| s.4).sum::<f64>() / n;
            println!(
                "{} {cmd} n={} p50_ms={:.2} p99_ms={:.2} mean_ms={:.2} max_ms={:.2} cpu_ms={:.2}",
                imp.name,
                v.len(),
                percentile(&v, 50.0),
                percentile(&v, 99.0),
                mean,
                v[v.len() - 1],
                plugin_cpu,
            );
            if !daemons.is_empty() {
                let mut line = format!("{} {cmd} cpu_per_op_ms plugin={plugin_cpu:.2}", imp.name);
                let mut total = plugin_cpu;
                for (k, (name, _)) in daemons.iter().enumerate() {
                    let per = charged.get(&(i, cmd)).map_or(0.0, |c| c[k]) / n;
                    total += per;
                    line.push_str(&format!(" {name}={per:.2}"));
                }
                println!("{line} total={total:.2}");
            }
        }
    }
    Ok(())
}
