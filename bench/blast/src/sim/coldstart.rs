//! Cold start of the real node against the simulated ones: margay-bgpd and margay-felix (or
//! BIRD, given the same peers as static protocols) start in the real node's empty namespace;
//! the clock runs until every simulated speaker has its session Established and holds the real
//! node's block, and the real node's kernel routes every simulated node's block.

use std::time::{Duration, Instant};

use anyhow::Context;
use ipnet::{IpNet, Ipv4Net};
use margay_lab::{
    Bgpd, Bird, BirdConfig, BirdNeighbor, ClusterArgs, ExportPolicy, Felix, FelixArgs,
};

use super::{
    CLUSTER_ID, Cost, NODE_AS, REAL_NODE, Role, SUBNET_LEN, SimCluster, SimNode, real_addr,
    real_block,
};

/// How often the real node's kernel and the speakers are looked at.
const POLL: Duration = Duration::from_millis(20);

/// One cold start's figures.
#[derive(Debug, Clone)]
pub struct ColdStart {
    /// Start → the last simulated session Established.
    pub established: Duration,
    /// Start → every session Established, every block in the kernel, the real node's block at
    /// every speaker.
    pub converged: Duration,
    /// Each process's cost at convergence (name, cost).
    pub costs: Vec<(String, Cost)>,
    /// Sessions that went down after Established during the start.
    pub downs: u64,
}

impl ColdStart {
    /// CPU seconds of every process together.
    pub fn cpu(&self) -> Duration {
        self.costs.iter().map(|(_, c)| c.cpu).sum()
    }
    /// Peak RSS of every process together, MiB.
    pub fn rss_mib(&self) -> f64 {
        self.costs.iter().map(|(_, c)| c.rss_mib()).sum()
    }
}

/// The real node's margay daemons, running.
pub struct Margay {
    pub bgpd: Bgpd,
    pub felix: Felix,
}

/// Waits for the converged state: `proto` is the kernel routes' protocol.
fn wait_converged(
    c: &SimCluster,
    proto: &str,
    start: Instant,
    timeout: Duration,
    costs: impl Fn() -> Vec<(String, Cost)>,
) -> anyhow::Result<ColdStart> {
    let want = c.nodes().len();
    let mut costs_at_end = Vec::new();
    let end = c.wait(
        "sessions, kernel routes and the real node's block at every speaker",
        timeout,
        POLL,
        |c| {
            let census = c.census();
            if census.up < want || census.complete < want {
                return Ok(Some(format!(
                    "{}/{want} sessions up, {}/{want} speakers hold {} route(s) with {} \
                     ({} hold {}; {} routes held in all){}",
                    census.up,
                    census.complete,
                    c.routes_per_speaker(),
                    real_block(),
                    census.with_real_block,
                    real_block(),
                    census.routes,
                    census
                        .example_error
                        .map(|e| format!(" (a speaker's last error: {e})"))
                        .unwrap_or_default()
                )));
            }
            let blocks = c.kernel_blocks(proto)?;
            if blocks < want {
                return Ok(Some(format!("{blocks}/{want} blocks in the kernel")));
            }
            costs_at_end = costs();
            Ok(None)
        },
    )?;
    let census = c.census();
    Ok(ColdStart {
        established: census
            .last_established
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(start)),
        converged: end.duration_since(start),
        costs: costs_at_end,
        downs: census.downs,
    })
}

/// Starts margay-bgpd, then margay-felix, on the real node; returns when converged.
pub fn margay(c: &SimCluster, timeout: Duration) -> anyhow::Result<(ColdStart, Margay)> {
    margay_with(c, timeout, |a| a)
}

/// [`margay`] with margay-bgpd's flags changed by `tune` (worker threads, outbox limit).
pub fn margay_with(
    c: &SimCluster,
    timeout: Duration,
    tune: impl FnOnce(ClusterArgs) -> ClusterArgs,
) -> anyhow::Result<(ColdStart, Margay)> {
    let (start, m) = start_margay(c, tune)?;
    let (bp, fp) = (m.bgpd.pid(), m.felix.pid());
    let result = wait_converged(c, "81", start, timeout, || {
        vec![
            ("margay-bgpd".to_string(), Cost::of(bp).unwrap_or_default()),
            ("margay-felix".to_string(), Cost::of(fp).unwrap_or_default()),
        ]
    })?;
    Ok((result, m))
}

/// Starts margay-bgpd (its flags changed by `tune`), then margay-felix (backend `bird`, the
/// lab's 5 s resync), on the real node; returns bgpd's start time and both daemons once felix
/// is ready, without waiting for any route.
pub fn start_margay(
    c: &SimCluster,
    tune: impl FnOnce(ClusterArgs) -> ClusterArgs,
) -> anyhow::Result<(Instant, Margay)> {
    let lab = c.lab();
    let endpoint = c.etcd_endpoint();
    let ip = IpNet::V4(Ipv4Net::new(real_addr(), SUBNET_LEN)?);
    let start = Instant::now();
    let bgpd_name = format!("{REAL_NODE}-bgpd");
    let bgpd = Bgpd::start_cluster(
        lab,
        c.node_ns(),
        &bgpd_name,
        tune(ClusterArgs::new(REAL_NODE, &endpoint, ip).asn(NODE_AS)),
    )
    .context("starting margay-bgpd")?;
    let args = FelixArgs::new(
        REAL_NODE,
        &endpoint,
        &lab.dir().join(format!("{bgpd_name}.sock")),
        &lab.dir().join(format!("{REAL_NODE}-felix.sock")),
    );
    let felix = Felix::start_cluster(lab, c.node_ns(), &format!("{REAL_NODE}-felix"), args)
        .context("starting margay-felix")?;
    Ok((start, Margay { bgpd, felix }))
}

/// Whether `pid` has exited (gone, or a zombie not yet reaped).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rfind(')')
            .and_then(|i| s[i + 1..].split_whitespace().next())
            .is_none_or(|state| state == "Z" || state == "X"),
        Err(_) => true,
    }
}

/// Sends SIGTERM to `pid` and waits up to `limit` for it to exit; returns how long it took,
/// or `None` if it was still running at the limit (the caller's guard then kills it).
pub fn sigterm_time(pid: u32, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    // SAFETY: kill(2) on the PID of a child of this process that has not been reaped.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    while start.elapsed() < limit {
        if exited(pid) {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

/// Stops margay on the real node: bgpd by SIGTERM (timed), then felix; removes felix's routes
/// and waits until no speaker has a session. Returns bgpd's stop time (`None`: it did not stop
/// within `limit` and was killed).
pub fn stop_margay(
    c: &SimCluster,
    mut m: Margay,
    limit: Duration,
) -> anyhow::Result<Option<Duration>> {
    m.felix.stop();
    let took = sigterm_time(m.bgpd.pid(), limit);
    m.bgpd.stop();
    c.node_ns()
        .ip(&["-4", "route", "flush", "proto", "81"])
        .context("flushing felix's routes")?;
    c.wait(
        "every speaker's session to close",
        Duration::from_secs(60),
        POLL,
        |c| {
            let up = c.census().up;
            Ok((up > 0).then(|| format!("{up} still up")))
        },
    )?;
    Ok(took)
}

/// BIRD 2 on the real node with a static protocol per simulated node (iBGP, hold time 90 s as
/// the speakers offer; as their reflector under [`Role::Reflector`]), its own block as a static
/// blackhole exported to them, and a kernel protocol exporting everything: the floor of what a
/// speaker does here.
pub fn bird_config(c: &SimCluster) -> BirdConfig {
    let mut conf = BirdConfig::new(real_addr())
        .originate(IpNet::V4(real_block()))
        .program_kernel();
    for n in c.nodes() {
        conf = conf.neighbor(bird_neighbor(c.role(), n));
    }
    conf
}

/// BIRD's protocol for simulated node `n`: in a mesh exporting only its own block, as a
/// reflector reflecting everything to it.
pub fn bird_neighbor(role: Role, n: &SimNode) -> BirdNeighbor {
    let mut nb = BirdNeighbor::new(&n.name, n.addr.into(), NODE_AS, NODE_AS);
    nb = match role {
        Role::Mesh => nb.export(ExportPolicy::Static),
        Role::Reflector => nb
            .rr_client()
            .rr_cluster_id(CLUSTER_ID.parse().expect("a valid cluster id")),
    };
    nb.hold_time = 90;
    nb
}

/// Starts BIRD on the real node (after [`stop_margay`]); returns when converged, with BIRD
/// still running.
pub fn bird(c: &SimCluster, timeout: Duration) -> anyhow::Result<(ColdStart, Bird)> {
    c.reset_logs();
    let conf = bird_config(c);
    let start = Instant::now();
    let mut bird = Bird::start(c.lab(), c.node_ns(), &format!("{REAL_NODE}-bird"), conf)
        .context("starting BIRD")?;
    let pid = bird.process().pid();
    let result = wait_converged(c, "bird", start, timeout, || {
        vec![("bird".to_string(), Cost::of(pid).unwrap_or_default())]
    })?;
    Ok((result, bird))
}
