//! margay-felix alone at N nodes with one of Calico's two encapsulations, one real felix in its
//! own namespace beside a real etcd holding N-1 other Nodes, each with its address and a /26
//! block with its affinity, and 250 local pods (veths and WorkloadEndpoints):
//!
//! - [`Backend::Vxlan`] (Calico's `vxlan` backend: no bgpd, routes from IPAM): every Node also
//!   has a VTEP (tunnel address and MAC); felix programs N-1 routes through vxlan.margay, N-1
//!   neighbour and N-1 FDB entries.
//! - [`Backend::Ipip`] (Calico's `bird` backend with an `ipipMode: Always` pool): margay-bgpd
//!   runs beside felix and meshes with N-1 simulated BGP speakers ([`super::SimCluster`]), each
//!   announcing its node's block; felix routes each `via <node address> dev tunl0 onlink`. The
//!   kernel needs the ipip module (the VM of tests/vm/ has it).
//!
//! Measures the cold start until every remote object and every pod route is in the kernel, the
//! steady full resync (felix's own `resync_duration_seconds`), and what one Node joining, then
//! leaving, costs in kernel writes: every netlink notification `ip monitor` prints in the
//! node's namespace meanwhile about felix's objects, beside felix's own `route_writes_total`.
//! With a churn asked for, also felix's CPU per Node change: that Node joining and leaving
//! again and again, each change waited for in the kernel, counted only in the quiet spells
//! between felix's periodic resyncs (which read everything, by design), less felix's CPU over
//! as long a spell without changes.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ipnet::{IpNet, Ipv4Net};
use margay_datastore::resources::{NodeBgpSpec, NodeSpec, Resource, WorkloadEndpointSpec};
use margay_datastore::{EtcdArgs, Store};
use margay_lab::{Etcd, Felix, FelixArgs, Lab, Netns};

use super::procstat::Cost;
use super::{NsRuntime, REAL_NODE, Role, SUBNET_LEN, SimCluster, coldstart, register};

/// The pool (VXLAN or IP-in-IP).
pub const POOL: &str = "10.120.0.0/16";
/// How many blocks the real node's pods use, and pods per block.
const POD_BLOCKS: u32 = 5;
const PODS_PER_BLOCK: u32 = 50;
/// The pool's last blocks, the real node's pods' under IP-in-IP (the simulated nodes and the
/// real node's own block take the first 1,001 of 1,024).
const IPIP_POD_BLOCKS: u32 = 1024 - POD_BLOCKS;

/// Which of Calico's encapsulations (and so which networking backend) the run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `vxlanMode: Always`, backend `vxlan`: felix alone, routes from IPAM.
    Vxlan,
    /// `ipipMode: Always`, backend `bird`: margay-bgpd beside felix, routes from BGP.
    Ipip,
}

impl FromStr for Backend {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Backend> {
        match s {
            "vxlan" => Ok(Backend::Vxlan),
            "ipip" => Ok(Backend::Ipip),
            _ => bail!("backend {s:?} is not vxlan or ipip"),
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Vxlan => "vxlan",
            Backend::Ipip => "ipip",
        })
    }
}

impl Backend {
    /// The device remote blocks are routed through.
    fn device(self) -> &'static str {
        match self {
            Backend::Vxlan => "vxlan.margay",
            Backend::Ipip => "tunl0",
        }
    }

    /// What `ip monitor` watches: VXLAN's neighbour and FDB entries are felix's writes too.
    fn monitored(self) -> &'static [&'static str] {
        match self {
            Backend::Vxlan => &["route", "neigh", "link"],
            Backend::Ipip => &["route", "link"],
        }
    }
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct FelixScale {
    pub backend: Backend,
    /// N: the real node and N-1 remote nodes.
    pub nodes: usize,
    pub pods: usize,
    /// The start (felix's; under IP-in-IP bgpd's, started just before) until every remote
    /// object and every pod route is in the kernel.
    pub cold_start: Duration,
    /// The mean of felix's full resyncs once programmed (reads everything, writes nothing).
    pub steady_resync: Duration,
    /// Resyncs that mean is over.
    pub resyncs: u64,
    /// Netlink notifications in the node's namespace about felix's objects (a route of protocol
    /// 81, anything on the backend's device) while one Node joined (its block routed), and
    /// while it left; every line `ip monitor` printed is in the lab's directory.
    pub join_events: Vec<String>,
    pub leave_events: Vec<String>,
    /// felix's own route writes for the join and the leave.
    pub join_route_writes: u64,
    pub leave_route_writes: u64,
    /// felix's CPU and peak RSS at the end.
    pub felix: Cost,
    /// felix's CPU per Node join or leave over the churn (none asked: `None`).
    pub churn: Option<ChurnCpu>,
}

/// felix's CPU over a churn of one Node joining and leaving.
#[derive(Debug, Clone, Copy)]
pub struct ChurnCpu {
    /// Joins and leaves (half each).
    pub changes: usize,
    /// felix's CPU over the spells they took, as `/proc` counts it (in ticks).
    pub busy: Duration,
    /// How long those spells took.
    pub spells: Duration,
    /// felix's CPU in as long a spell without changes (its timers, its health beat).
    pub idle: Duration,
}

impl ChurnCpu {
    /// The CPU one change cost: the spells' less the idle share, over the changes.
    pub fn per_change(&self) -> Duration {
        self.busy.saturating_sub(self.idle) / self.changes.max(1) as u32
    }
}

impl FelixScale {
    /// Whether the join and the leave each cost a count of kernel notifications within
    /// `notifications`, among them a line with each of `mentions`, and exactly one route write
    /// by felix's own count (O(1), where anything O(N) would show about N), and felix resynced;
    /// the error names what broke, with every line.
    pub fn check_constant_writes(
        &self,
        notifications: std::ops::RangeInclusive<usize>,
        mentions: &[&str],
    ) -> Result<(), String> {
        for (what, lines, writes) in [
            ("join", &self.join_events, self.join_route_writes),
            ("leave", &self.leave_events, self.leave_route_writes),
        ] {
            if !notifications.contains(&lines.len()) {
                return Err(format!(
                    "{what}: {} notifications, not {notifications:?}: {lines:#?}",
                    lines.len()
                ));
            }
            if let Some(m) = mentions
                .iter()
                .find(|m| !lines.iter().any(|l| l.contains(*m)))
            {
                return Err(format!("{what}: no line mentions {m:?}: {lines:#?}"));
            }
            if writes != 1 {
                return Err(format!(
                    "{what}: felix counted {writes} route writes, not 1"
                ));
            }
        }
        if self.resyncs == 0 {
            return Err("felix did not resync".into());
        }
        Ok(())
    }
}

/// Remote node `i` (0-based) under VXLAN: name, address, block, VTEP address and MAC.
struct Remote {
    name: String,
    addr: Ipv4Addr,
    block: Ipv4Net,
    vtep: Ipv4Addr,
    mac: String,
}

fn remote(i: u32) -> Remote {
    let block = block(POD_BLOCKS + i);
    Remote {
        name: format!("vx{:04}", i + 1),
        addr: Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 97, 0, 10)) + i),
        block,
        vtep: Ipv4Addr::from(u32::from(block.network()) + 1),
        mac: format!("66:00:00:00:{:02x}:{:02x}", (i >> 8) & 0xff, i & 0xff),
    }
}

/// Block `i` of the pool.
fn block(i: u32) -> Ipv4Net {
    let base = u32::from(Ipv4Addr::new(10, 120, 0, 0));
    Ipv4Net::new(Ipv4Addr::from(base + i * 64), 26).expect("26 is a valid length")
}

async fn add_remote(store: &Store, r: &Remote) -> anyhow::Result<()> {
    let spec = NodeSpec {
        bgp: Some(NodeBgpSpec {
            ipv4_address: Some(format!("{}/21", r.addr)),
            ..NodeBgpSpec::default()
        }),
        ipv4_vxlan_tunnel_addr: Some(r.vtep.to_string()),
        vxlan_tunnel_mac_addr: Some(r.mac.clone()),
        ..NodeSpec::default()
    };
    store.create(&Resource::new(r.name.clone(), spec)).await?;
    register::claim_block(store, &r.name, IpNet::V4(r.block)).await?;
    Ok(())
}

async fn remove_remote(store: &Store, r: &Remote) -> anyhow::Result<()> {
    let sim = super::SimNode {
        name: r.name.clone(),
        addr: r.addr,
        block: r.block,
    };
    register::unregister(store, &sim).await?;
    Ok(())
}

/// The host route [`Monitor::start`] adds to see the monitor listening (TEST-NET-2, only in the
/// node's namespace).
const MARKER: &str = "198.51.100.1";

/// Counts, from `ip monitor`, the netlink notifications in a namespace (`ip monitor neigh`
/// also prints the bridge family's FDB entries of vxlan.margay).
struct Monitor {
    child: Child,
    file: std::path::PathBuf,
    device: &'static str,
}

impl Monitor {
    fn start(lab: &Lab, ns: &Netns, tag: &str, backend: Backend) -> anyhow::Result<Monitor> {
        let file = lab.dir().join(format!("{tag}.monitor"));
        let out = std::fs::File::create(&file)?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns.name(), "ip", "-o", "monitor"])
            .args(backend.monitored())
            .stdout(Stdio::from(out))
            .stderr(Stdio::null())
            .spawn()
            .context("starting ip monitor")?;
        // It subscribes some time after it starts (over a second under TCG): a marker route,
        // added until the monitor prints it, proves it listens. The marker is neither felix's
        // protocol nor on its device, so `stop` leaves it out.
        let seen = || std::fs::read_to_string(&file).is_ok_and(|t| t.contains(MARKER));
        let deadline = Instant::now() + Duration::from_secs(60);
        while !seen() {
            if Instant::now() > deadline {
                bail!("ip monitor printed nothing of the marker route in 60 s");
            }
            let _ = ns.ip(&["route", "del", "blackhole", MARKER]);
            ns.ip(&["route", "add", "blackhole", MARKER])?;
            std::thread::sleep(Duration::from_millis(200));
        }
        ns.ip(&["route", "del", "blackhole", MARKER])?;
        Ok(Monitor {
            child,
            file,
            device: backend.device(),
        })
    }

    /// Stops it and returns the lines about felix's objects: routes of protocol 81 and
    /// anything on the backend's device (the neighbour table's own state changes on the switch
    /// port are the kernel's, not writes).
    fn stop(mut self) -> anyhow::Result<Vec<String>> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        Ok(std::fs::read_to_string(&self.file)?
            .lines()
            .filter(|l| l.contains("proto 81") || l.contains(self.device))
            .map(str::to_string)
            .collect())
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// felix's metric `name` (a counter or a histogram's `_sum` / `_count`), summed over labels.
fn metric(ns: &Netns, port: u16, name: &str) -> anyhow::Result<f64> {
    let text = ns.exec(
        "curl",
        &["-sf", &format!("http://127.0.0.1:{port}/metrics")],
    )?;
    Ok(text
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// How many of felix's routes go through vxlan.margay, neighbours and FDB entries it holds.
fn kernel_counts(ns: &Netns) -> anyhow::Result<(usize, usize, usize)> {
    let routes = ns.ip_json(&["route", "show", "proto", "81", "dev", "vxlan.margay"])?;
    let neigh = ns.ip_json(&["neigh", "show", "dev", "vxlan.margay"])?;
    let fdb = ns.exec("bridge", &["fdb", "show", "dev", "vxlan.margay"])?;
    let fdb = fdb.lines().filter(|l| l.contains(" dst ")).count();
    Ok((routes.len(), neigh.len(), fdb))
}

/// How many of `want`'s blocks felix routes as IP-in-IP wants them: `via <the node's address>
/// dev tunl0 onlink`, protocol 81.
fn tunl0_routes(ns: &Netns, want: &HashMap<Ipv4Net, Ipv4Addr>) -> anyhow::Result<usize> {
    let routes = ns.ip_json(&["-4", "route", "show", "proto", "81", "dev", "tunl0"])?;
    Ok(routes
        .iter()
        .filter(|r| {
            let onlink = r["flags"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f == "onlink"));
            let dst = r["dst"].as_str().and_then(|d| d.parse::<Ipv4Net>().ok());
            let via = r["gateway"]
                .as_str()
                .and_then(|g| g.parse::<Ipv4Addr>().ok());
            onlink && dst.is_some_and(|d| want.get(&d).is_some_and(|a| Some(*a) == via))
        })
        .count())
}

fn wait(
    what: &str,
    timeout: Duration,
    mut done: impl FnMut() -> anyhow::Result<Option<String>>,
) -> anyhow::Result<Instant> {
    let start = Instant::now();
    loop {
        match done()? {
            None => return Ok(Instant::now()),
            Some(missing) if start.elapsed() > timeout => {
                bail!("timed out after {timeout:?} waiting for {what}: {missing}")
            }
            Some(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// The local pods: a veth each (both ends in the node, the cali side felix's), their addresses
/// in `blocks` (claimed for `node`), a WorkloadEndpoint each.
fn add_pods(
    lab: &Lab,
    ns: &Netns,
    rt: &NsRuntime,
    store: &Store,
    node: &str,
    blocks: Vec<Ipv4Net>,
    pods: usize,
) -> anyhow::Result<()> {
    let mut batch = String::new();
    let mut weps = Vec::new();
    for k in 0..pods as u32 {
        let (b, o) = (k / PODS_PER_BLOCK, k % PODS_PER_BLOCK);
        let ip = Ipv4Addr::from(u32::from(blocks[b as usize].network()) + 8 + o);
        let cali = format!("cali{:011x}", k);
        batch.push_str(&format!(
            "link add {cali} type veth peer name pe{k:05}\nlink set {cali} up\n\
             link set pe{k:05} up\n"
        ));
        weps.push((k, ip, cali));
    }
    let batch_path = lab.dir().join("pods.batch");
    std::fs::write(&batch_path, batch)?;
    ns.ip(&["-batch", &batch_path.display().to_string()])?;
    let (store, node) = (store.clone(), node.to_string());
    rt.run(async move {
        for b in blocks {
            register::claim_block(&store, &node, IpNet::V4(b)).await?;
        }
        for chunk in weps.chunks(32) {
            let mut set = tokio::task::JoinSet::new();
            for (k, ip, cali) in chunk.iter().cloned() {
                let (store, node) = (store.clone(), node.clone());
                set.spawn(async move {
                    let mut r = Resource::new(
                        format!("{node}-k8s-pod{k}-eth0"),
                        WorkloadEndpointSpec {
                            node,
                            container_id: format!("pod{k}"),
                            ip_networks: vec![format!("{ip}/32")],
                            interface_name: cali,
                            ..Default::default()
                        },
                    );
                    r.metadata.namespace = Some("default".into());
                    store.create(&r).await
                });
            }
            while let Some(r) = set.join_next().await {
                r??;
            }
        }
        anyhow::Ok(())
    })??;
    Ok(())
}

/// The real node with felix started, whichever the backend: what [`measure`] needs.
struct Started<'a> {
    backend: Backend,
    lab: &'a Lab,
    ns: &'a Netns,
    /// felix's HTTP port.
    port: u16,
    felix_pid: u32,
    /// When the daemons were started.
    at: Instant,
    /// The Node that joins and leaves, and its block.
    extra_block: Ipv4Net,
    nodes: usize,
    pods: usize,
    /// How long any one wait may take.
    timeout: Duration,
    /// Joins and leaves for felix's CPU per change (0: none).
    churn: usize,
}

/// A quiet spell: felix resyncs every 5 s (the lab's `--resync-interval`); the changes of one
/// spell start within this time after a resync ended.
const SPELL: Duration = Duration::from_secs(3);

/// felix's CPU over `changes` joins and leaves (`join` and `leave` alternately, each waited for
/// until `routed` says so), counted between its periodic resyncs; see [`ChurnCpu`].
fn churn_cpu(
    s: &Started,
    changes: usize,
    join: &impl Fn() -> anyhow::Result<()>,
    leave: &impl Fn() -> anyhow::Result<()>,
    routed: &impl Fn() -> anyhow::Result<bool>,
) -> anyhow::Result<ChurnCpu> {
    let cpu = || {
        Cost::of(s.felix_pid)
            .map(|c| c.cpu)
            .context("felix is gone")
    };
    let resyncs = || metric(s.ns, s.port, "margay_felix_resync_duration_seconds_count");
    // The moment felix's next resync has ended: a quiet spell of ~5 s starts.
    let after_resync = || -> anyhow::Result<Instant> {
        let before = resyncs()?;
        wait("felix's next resync", s.timeout, || {
            Ok((resyncs()? <= before).then(|| "not yet".to_string()))
        })
    };
    let (mut busy, mut spells, mut done) = (Duration::ZERO, Duration::ZERO, 0);
    while done < changes {
        let start = after_resync()?;
        let c0 = cpu()?;
        while done < changes && start.elapsed() < SPELL {
            let joining = done % 2 == 0;
            if joining {
                join()?
            } else {
                leave()?
            }
            wait("a churned Node's block", s.timeout, || {
                Ok((routed()? != joining).then(|| "not yet".to_string()))
            })?;
            done += 1;
        }
        busy += cpu()? - c0;
        spells += start.elapsed();
    }
    after_resync()?;
    let c0 = cpu()?;
    std::thread::sleep(spells.min(SPELL));
    let idle_spell = cpu()? - c0;
    // The idle rate over the time the changes took.
    let idle = idle_spell.mul_f64(spells.as_secs_f64() / spells.min(SPELL).as_secs_f64());
    Ok(ChurnCpu {
        changes,
        busy,
        spells,
        idle,
    })
}

/// From a started node on: the cold start (until `remote_done` says every remote object is in
/// the kernel and the pods are routed), felix's steady resync, and one Node's join and leave
/// (`join`, `leave`) under `ip monitor`, then the churn's CPU if asked.
fn measure(
    s: Started,
    mut remote_done: impl FnMut() -> anyhow::Result<Option<String>>,
    join: impl Fn() -> anyhow::Result<()>,
    leave: impl Fn() -> anyhow::Result<()>,
    progress: &mut impl FnMut(&str),
) -> anyhow::Result<FelixScale> {
    let (ns, port, dev) = (s.ns, s.port, s.backend.device());
    let (nodes, pods, timeout) = (s.nodes, s.pods, s.timeout);
    let programmed = wait("every remote object and pod route", timeout, || {
        if let Some(missing) = remote_done()? {
            return Ok(Some(missing));
        }
        let pod_routes = ns
            .ip_json(&["route", "show", "proto", "81", "scope", "link"])?
            .len();
        Ok((pod_routes < pods).then(|| format!("{pod_routes} of {pods} pod routes")))
    })?;
    let cold_start = programmed - s.at;
    progress(&format!(
        "N = {nodes}: programmed in {:.2} s; timing felix's own resyncs",
        cold_start.as_secs_f64()
    ));
    let resync = || -> anyhow::Result<(f64, f64)> {
        Ok((
            metric(ns, port, "margay_felix_resync_duration_seconds_sum")?,
            metric(ns, port, "margay_felix_resync_duration_seconds_count")?,
        ))
    };
    let (s1, c1) = resync()?;
    // The lab's felix resyncs every 5 s.
    std::thread::sleep(Duration::from_secs(11));
    let (s2, c2) = resync()?;
    let resyncs = (c2 - c1).max(0.0) as u64;
    if resyncs == 0 {
        bail!("felix did not resync in 11 s");
    }
    let steady_resync = Duration::from_secs_f64((s2 - s1) / resyncs as f64);

    // One Node joins, then leaves; the kernel's notifications meanwhile are the writes.
    let writes = || metric(ns, port, "margay_felix_route_writes_total");
    let dst = s.extra_block.to_string();
    let routed = || -> anyhow::Result<bool> {
        Ok(ns
            .ip_json(&["route", "show", "proto", "81", "dev", dev])?
            .iter()
            .any(|r| r["dst"] == dst.as_str()))
    };
    progress(&format!(
        "N = {nodes}: one Node joins, then leaves, under ip monitor"
    ));
    let w0 = writes()?;
    let mon = Monitor::start(s.lab, ns, "join", s.backend)?;
    join()?;
    wait("the joined block routed", timeout, || {
        Ok((!routed()?).then(|| "not yet".to_string()))
    })?;
    std::thread::sleep(Duration::from_millis(500));
    let join_events = mon.stop()?;
    let w1 = writes()?;
    let mon = Monitor::start(s.lab, ns, "leave", s.backend)?;
    leave()?;
    wait("the left block gone", timeout, || {
        Ok(routed()?.then(|| "still routed".to_string()))
    })?;
    std::thread::sleep(Duration::from_millis(500));
    let leave_events = mon.stop()?;
    let w2 = writes()?;
    let churn = if s.churn > 0 {
        // Whole pairs: the Node ends as it started, gone.
        let changes = s.churn.div_ceil(2) * 2;
        progress(&format!(
            "N = {nodes}: {changes} joins and leaves, felix's CPU between its resyncs"
        ));
        Some(churn_cpu(&s, changes, &join, &leave, &routed)?)
    } else {
        None
    };
    Ok(FelixScale {
        backend: s.backend,
        nodes,
        pods,
        cold_start,
        steady_resync,
        resyncs,
        join_events,
        leave_events,
        join_route_writes: (w1 - w0) as u64,
        leave_route_writes: (w2 - w1) as u64,
        felix: Cost::of(s.felix_pid).context("felix is gone")?,
        churn,
    })
}

/// What one run does besides the cold start and one join and leave.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Local pods (at most 250).
    pub pods: usize,
    /// How long any one wait may take.
    pub timeout: Duration,
    /// Joins and leaves for felix's CPU per Node change (0: none).
    pub churn: usize,
}

/// One run at `nodes` nodes.
pub fn run(
    backend: Backend,
    nodes: usize,
    o: Options,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<FelixScale> {
    if !(2..=1000).contains(&nodes) || o.pods > (POD_BLOCKS * PODS_PER_BLOCK) as usize {
        bail!("2..=1000 nodes and at most 250 pods");
    }
    match backend {
        Backend::Vxlan => run_vxlan(nodes, o, &mut progress),
        Backend::Ipip => run_ipip(nodes, o, &mut progress),
    }
}

fn run_vxlan(
    nodes: usize,
    o: Options,
    progress: &mut impl FnMut(&str),
) -> anyhow::Result<FelixScale> {
    let (pods, timeout) = (o.pods, o.timeout);
    let lab = Lab::new("margay-felixscale")?;
    let sw = lab.switch("sw")?;
    let etcd = Etcd::on_switch(&lab, &sw)?;
    etcd.apply(&format!(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: vx}}\n\
         spec: {{cidr: {POOL}, blockSize: 26, vxlanMode: Always, ipipMode: Never}}\n"
    ))?;
    let node_ns = lab.netns("node")?;
    let addr = sw.attach(&node_ns)?;
    let rt = NsRuntime::start(etcd.netns().name())?;
    let endpoint = etcd.endpoint();
    let store = rt.run(async move { Store::connect(&EtcdArgs::plain([endpoint])).await })??;

    progress(&format!(
        "N = {nodes}: registering {} remote Nodes (address, VTEP, block, affinity) and {pods} \
         local pods",
        nodes - 1
    ));
    let remotes: Vec<Remote> = (0..nodes as u32 - 1).map(remote).collect();
    {
        let store = store.clone();
        let list: Vec<(String, Ipv4Addr, Ipv4Net, Ipv4Addr, String)> = remotes
            .iter()
            .map(|r| (r.name.clone(), r.addr, r.block, r.vtep, r.mac.clone()))
            .collect();
        rt.run(async move {
            for chunk in list.chunks(32) {
                let mut set = tokio::task::JoinSet::new();
                for (name, addr, block, vtep, mac) in chunk.iter().cloned() {
                    let store = store.clone();
                    set.spawn(async move {
                        let r = Remote {
                            name,
                            addr,
                            block,
                            vtep,
                            mac,
                        };
                        add_remote(&store, &r).await
                    });
                }
                while let Some(r) = set.join_next().await {
                    r??;
                }
            }
            anyhow::Ok(())
        })??;
    }
    let pod_blocks = (0..POD_BLOCKS).map(block).collect();
    add_pods(&lab, &node_ns, &rt, &store, "node", pod_blocks, pods)?;

    progress(&format!(
        "N = {nodes}: starting margay-felix (--networking-backend vxlan)"
    ));
    let args = FelixArgs::new(
        "node",
        &etcd.endpoint(),
        &lab.dir().join("no-bgpd.sock"),
        &lab.dir().join("felix.sock"),
    )
    .without_bgp(IpNet::V4(addr.v4));
    let port = args.http_port;
    let at = Instant::now();
    let mut felix = Felix::start_cluster(&lab, &node_ns, "felix", args)?;
    let want = nodes - 1;
    let extra = remote(nodes as u32 - 1);
    let started = Started {
        backend: Backend::Vxlan,
        lab: &lab,
        ns: &node_ns,
        port,
        felix_pid: felix.pid(),
        at,
        extra_block: extra.block,
        nodes,
        pods,
        timeout,
        churn: o.churn,
    };
    let remote_done = || {
        let (r, n, f) = kernel_counts(&node_ns)?;
        Ok((r < want || n < want || f < want)
            .then(|| format!("{r} routes, {n} neighbours, {f} FDB entries of {want}")))
    };
    let join = || {
        let store = store.clone();
        let r = remote(nodes as u32 - 1);
        rt.run(async move { add_remote(&store, &r).await })?
    };
    let leave = || {
        let (store, r) = (store.clone(), remote(nodes as u32 - 1));
        rt.run(async move { remove_remote(&store, &r).await })?
    };
    let r = measure(started, remote_done, join, leave, progress);
    felix.stop();
    r
}

fn run_ipip(
    nodes: usize,
    o: Options,
    progress: &mut impl FnMut(&str),
) -> anyhow::Result<FelixScale> {
    let (pods, timeout) = (o.pods, o.timeout);
    progress(&format!(
        "N = {nodes}: {} simulated nodes (Node, block, affinity, BGP speaker), an ipipMode \
         Always pool, {pods} local pods",
        nodes - 1
    ));
    let c = SimCluster::build_with_ipip(nodes - 1, 1, Role::Mesh, "Always", |l| {
        progress(&format!("N = {nodes}: {l}"))
    })?;
    let pod_blocks = (IPIP_POD_BLOCKS..IPIP_POD_BLOCKS + POD_BLOCKS)
        .map(super::block)
        .collect();
    add_pods(
        c.lab(),
        c.node_ns(),
        c.runtime(),
        &c.store(),
        REAL_NODE,
        pod_blocks,
        pods,
    )?;
    progress(&format!(
        "N = {nodes}: starting margay-bgpd and margay-felix (backend bird)"
    ));
    let (at, mut margay) = coldstart::start_margay(&c, |a| a)?;
    let want: HashMap<Ipv4Net, Ipv4Addr> = c.nodes().iter().map(|n| (n.block, n.addr)).collect();
    let spare = c.spares().0.first().context("no spare node")?.clone();
    let started = Started {
        backend: Backend::Ipip,
        lab: c.lab(),
        ns: c.node_ns(),
        port: margay.felix.args().http_port,
        felix_pid: margay.felix.pid(),
        at,
        extra_block: spare.block,
        nodes,
        pods,
        timeout,
        churn: o.churn,
    };
    let remote_done = || {
        let good = tunl0_routes(c.node_ns(), &want)?;
        Ok((good < want.len()).then(|| {
            format!(
                "{good} of {} blocks routed via their node dev tunl0 onlink",
                want.len()
            )
        }))
    };
    let join = || {
        let (store, n) = (c.store(), spare.clone());
        c.run(async move { register::register(&store, &n, SUBNET_LEN).await })??;
        Ok(())
    };
    let leave = || {
        let (store, n) = (c.store(), spare.clone());
        c.run(async move { register::unregister(&store, &n).await })??;
        Ok(())
    };
    let r = measure(started, remote_done, join, leave, progress);
    margay.felix.stop();
    margay.bgpd.stop();
    r
}
