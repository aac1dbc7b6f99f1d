//! margay-felix alone at N nodes with a VXLAN pool (Calico's `vxlan` backend: no bgpd, routes
//! from IPAM): one real felix in its own namespace beside a real etcd holding N-1 other Nodes,
//! each with its address, VTEP (tunnel address and MAC) and a /26 block with its affinity, and
//! 250 local pods (veths and WorkloadEndpoints). Measures the cold start until N-1 remote
//! blocks, N-1 neighbour and N-1 FDB entries are in the kernel, the steady full resync
//! (felix's own `resync_duration_seconds`), and what one Node joining, then leaving, costs in
//! kernel writes: every netlink notification `ip monitor` prints in the node's namespace
//! meanwhile (routes, neighbours, links, and the FDB entries of the VXLAN device), beside felix's own `route_writes_total`.
//!
//! IP-in-IP is left out here: this machine's kernel has no ipip module (the VM suites run it).

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ipnet::{IpNet, Ipv4Net};
use margay_datastore::resources::{NodeBgpSpec, NodeSpec, Resource, WorkloadEndpointSpec};
use margay_datastore::{EtcdArgs, Store};
use margay_lab::{Etcd, Felix, FelixArgs, Lab, Netns};

use super::procstat::Cost;
use super::{NsRuntime, register};

/// The VXLAN pool.
pub const POOL: &str = "10.120.0.0/16";
/// How many blocks the real node's pods use, and pods per block.
const POD_BLOCKS: u32 = 5;
const PODS_PER_BLOCK: u32 = 50;

/// What one run measured.
#[derive(Debug, Clone)]
pub struct FelixScale {
    /// N: the real node and N-1 remote nodes.
    pub nodes: usize,
    pub pods: usize,
    /// felix's start until every remote block, neighbour and FDB entry is in the kernel.
    pub cold_start: Duration,
    /// The mean of felix's full resyncs once programmed (reads everything, writes nothing).
    pub steady_resync: Duration,
    /// Resyncs that mean is over.
    pub resyncs: u64,
    /// Netlink notifications in the node's namespace about felix's objects (a route of protocol
    /// 81, anything on vxlan.margay) while one Node joined (its block routed through its VTEP),
    /// and while it left; every line `ip monitor` printed is in the lab's directory.
    pub join_events: Vec<String>,
    pub leave_events: Vec<String>,
    /// felix's own route writes for the join and the leave.
    pub join_route_writes: u64,
    pub leave_route_writes: u64,
    /// felix's CPU and peak RSS at the end.
    pub felix: Cost,
}

/// Remote node `i` (0-based): name, address, block, VTEP address and MAC.
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

/// Counts, from `ip monitor`, the netlink notifications in a namespace (`ip monitor neigh`
/// also prints the bridge family's FDB entries of vxlan.margay).
struct Monitor {
    child: Child,
    file: std::path::PathBuf,
}

impl Monitor {
    fn start(lab: &Lab, ns: &Netns, tag: &str) -> anyhow::Result<Monitor> {
        let file = lab.dir().join(format!("{tag}.monitor"));
        let out = std::fs::File::create(&file)?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns.name(), "ip", "-o", "monitor"])
            .args(["route", "neigh", "link"])
            .stdout(Stdio::from(out))
            .stderr(Stdio::null())
            .spawn()
            .context("starting ip monitor")?;
        // It subscribes once it runs.
        std::thread::sleep(Duration::from_millis(300));
        Ok(Monitor { child, file })
    }

    /// Stops it and returns the lines about felix's objects: routes of protocol 81 and
    /// anything on vxlan.margay (the neighbour table's own state changes on the switch port
    /// are the kernel's, not writes).
    fn stop(mut self) -> anyhow::Result<Vec<String>> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        Ok(std::fs::read_to_string(&self.file)?
            .lines()
            .filter(|l| l.contains("proto 81") || l.contains("vxlan.margay"))
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

/// One run at `nodes` nodes with `pods` local pods (at most 250).
pub fn run(
    nodes: usize,
    pods: usize,
    timeout: Duration,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<FelixScale> {
    if !(2..=1000).contains(&nodes) || pods > (POD_BLOCKS * PODS_PER_BLOCK) as usize {
        bail!("2..=1000 nodes and at most 250 pods");
    }
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
    // The local pods: a veth each (both ends in the node, the cali side felix's), their
    // addresses in the node's own blocks, a WorkloadEndpoint each.
    let mut batch = String::new();
    let mut weps = Vec::new();
    for k in 0..pods as u32 {
        let (b, o) = (k / PODS_PER_BLOCK, k % PODS_PER_BLOCK);
        let ip = Ipv4Addr::from(u32::from(block(b).network()) + 8 + o);
        let cali = format!("cali{:011x}", k);
        batch.push_str(&format!(
            "link add {cali} type veth peer name pe{k:05}\nlink set {cali} up\n\
             link set pe{k:05} up\n"
        ));
        weps.push((k, ip, cali));
    }
    let batch_path = lab.dir().join("pods.batch");
    std::fs::write(&batch_path, batch)?;
    node_ns.ip(&["-batch", &batch_path.display().to_string()])?;
    {
        let store = store.clone();
        rt.run(async move {
            for b in 0..POD_BLOCKS {
                register::claim_block(&store, "node", IpNet::V4(block(b))).await?;
            }
            for chunk in weps.chunks(32) {
                let mut set = tokio::task::JoinSet::new();
                for (k, ip, cali) in chunk.iter().cloned() {
                    let store = store.clone();
                    set.spawn(async move {
                        let mut r = Resource::new(
                            format!("node-k8s-pod{k}-eth0"),
                            WorkloadEndpointSpec {
                                node: "node".into(),
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
    }

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
    let started = Instant::now();
    let mut felix = Felix::start_cluster(&lab, &node_ns, "felix", args)?;
    let want = nodes - 1;
    let programmed =
        wait(
            "every remote block, neighbour and FDB entry",
            timeout,
            || {
                let (r, n, f) = kernel_counts(&node_ns)?;
                let pod_routes = node_ns
                    .ip_json(&["route", "show", "proto", "81", "scope", "link"])?
                    .len();
                Ok((r < want || n < want || f < want || pod_routes < pods).then(|| {
            format!("{r} routes, {n} neighbours, {f} FDB entries of {want}; {pod_routes} pods")
        }))
            },
        )?;
    let cold_start = programmed - started;
    progress(&format!(
        "N = {nodes}: programmed in {:.2} s; timing felix's own resyncs",
        cold_start.as_secs_f64()
    ));
    let (s1, c1) = (
        metric(&node_ns, port, "margay_felix_resync_duration_seconds_sum")?,
        metric(&node_ns, port, "margay_felix_resync_duration_seconds_count")?,
    );
    // The lab's felix resyncs every 5 s.
    std::thread::sleep(Duration::from_secs(11));
    let (s2, c2) = (
        metric(&node_ns, port, "margay_felix_resync_duration_seconds_sum")?,
        metric(&node_ns, port, "margay_felix_resync_duration_seconds_count")?,
    );
    let resyncs = (c2 - c1).max(0.0) as u64;
    if resyncs == 0 {
        bail!("felix did not resync in 11 s");
    }
    let steady_resync = Duration::from_secs_f64((s2 - s1) / resyncs as f64);

    // One Node joins, then leaves; the kernel's notifications meanwhile are the writes.
    let extra = remote(nodes as u32 - 1);
    let writes = |ns: &Netns| metric(ns, port, "margay_felix_route_writes_total");
    let dst = extra.block.to_string();
    let routed = |ns: &Netns| -> anyhow::Result<bool> {
        Ok(!ns
            .ip_json(&["route", "show", "proto", "81", "dev", "vxlan.margay"])?
            .iter()
            .all(|r| r["dst"] != dst.as_str()))
    };
    progress(&format!(
        "N = {nodes}: one Node joins, then leaves, under ip monitor"
    ));
    let w0 = writes(&node_ns)?;
    let mon = Monitor::start(&lab, &node_ns, "join")?;
    {
        let store = store.clone();
        let r = remote(nodes as u32 - 1);
        rt.run(async move { add_remote(&store, &r).await })??;
    }
    wait("the joined block routed", timeout, || {
        Ok((!routed(&node_ns)?).then(|| "not yet".to_string()))
    })?;
    std::thread::sleep(Duration::from_millis(500));
    let join = mon.stop()?;
    let w1 = writes(&node_ns)?;
    let mon = Monitor::start(&lab, &node_ns, "leave")?;
    {
        let store = store.clone();
        rt.run(async move { remove_remote(&store, &extra).await })??;
    }
    wait("the left block gone", timeout, || {
        Ok(routed(&node_ns)?.then(|| "still routed".to_string()))
    })?;
    std::thread::sleep(Duration::from_millis(500));
    let leave = mon.stop()?;
    let w2 = writes(&node_ns)?;
    let cost = Cost::of(felix.pid()).context("felix is gone")?;
    felix.stop();
    Ok(FelixScale {
        nodes,
        pods,
        cold_start,
        steady_resync,
        resyncs,
        join_events: join,
        leave_events: leave,
        join_route_writes: (w1 - w0) as u64,
        leave_route_writes: (w2 - w1) as u64,
        felix: cost,
    })
}
