//! Simulated nodes: many nodes of a cluster, each a real Node resource with its IPAM block in
//! real etcd and a light BGP speaker of its own, all sharing one process and one network
//! namespace (one address each on one interface), beside one real node (margay-bgpd and
//! margay-felix, or BIRD in their place) in its own namespace.
//!
//! [`SimCluster::build`] makes the topology: namespace `sim` (etcd and every speaker) joined by
//! a veth to namespace `node` (the real node), addresses from 10.98.0.0/21, blocks from the pool
//! 10.120.0.0/16. What the simulation leaves out: the simulated nodes do not peer with each
//! other (only with the real node: a mesh of N-1 speakers among themselves is N²/2 sessions
//! and measures nothing of margay), run no felix and no pods, and do not watch etcd; they keep
//! one session per real peer and send their block once.

pub mod churn;
pub mod coldstart;
pub mod felixscale;
pub mod joinleave;
pub mod procstat;
pub mod watchfan;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ipnet::{IpNet, Ipv4Net};
use margay_datastore::{EtcdArgs, Store};
use margay_lab::labctl::topology::REFLECTOR_PEER_YAML;
use margay_lab::{Addrs, Etcd, Lab, Netns};

pub use margay_lab::sim::{nsrt, register, speaker};
pub use nsrt::NsRuntime;
pub use procstat::Cost;
pub use speaker::{Log, Logs, SimNode};

/// The AS of every node (an iBGP mesh).
pub const NODE_AS: u32 = 64512;
/// The pool every block comes from.
pub const POOL: &str = "10.120.0.0/16";
/// The prefix length of the nodes' shared subnet (10.98.0.0/21: up to 2,000 nodes).
pub const SUBNET_LEN: u8 = 21;
/// The real node's name.
pub const REAL_NODE: &str = "real1";
/// Simulated node `i`'s address is `10.98.0.0 + FIRST_SIM + i`.
const FIRST_SIM: u32 = 10;

/// How the simulated nodes peer with the real one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The node-to-node mesh: each simulated node peers with the real node (and, in a real
    /// cluster, with every other node: left out).
    Mesh,
    /// The real node is the route reflector (`routeReflectorClusterID`, label
    /// `route-reflector: "true"`), every simulated node its client (a BGPPeer from every node to
    /// the reflectors); the mesh is off.
    Reflector,
}

/// The reflector's CLUSTER_ID.
pub const CLUSTER_ID: &str = "244.0.0.1";

/// The real node's address.
pub fn real_addr() -> Ipv4Addr {
    Ipv4Addr::new(10, 98, 0, 1)
}

fn etcd_addr() -> Ipv4Addr {
    Ipv4Addr::new(10, 98, 0, 2)
}

/// Block `i` of the pool (the real node has block 0, simulated node `i` block `i + 1`).
pub fn block(i: u32) -> Ipv4Net {
    let base = u32::from(Ipv4Addr::new(10, 120, 0, 0));
    Ipv4Net::new(Ipv4Addr::from(base + i * 64), 26).expect("26 is a valid length")
}

/// The real node's block.
pub fn real_block() -> Ipv4Net {
    block(0)
}

/// The plan of `count` simulated nodes.
pub fn plan(count: usize) -> Vec<SimNode> {
    let base = u32::from(Ipv4Addr::new(10, 98, 0, 0)) + FIRST_SIM;
    (0..count as u32)
        .map(|i| SimNode {
            name: format!("sim{:04}", i + 1),
            addr: Ipv4Addr::from(base + i),
            block: block(i + 1),
        })
        .collect()
}

/// The simulated cluster around one real node's (empty) namespace. Fields are in drop order:
/// the speakers stop first, then etcd and its namespace, the real node's namespace, the lab.
pub struct SimCluster {
    role: Role,
    rt: NsRuntime,
    logs: Logs,
    /// Speakers with an address and a listener but no Node yet: the nodes that join.
    spares: Vec<SimNode>,
    spare_logs: Logs,
    store: Store,
    nodes: Vec<SimNode>,
    etcd: Etcd,
    node_ns: Netns,
    lab: Lab,
}

impl SimCluster {
    /// Creates both namespaces and the veth, puts every address on the simulated side, starts
    /// etcd there, applies the IPPool and BGPConfiguration (mesh on), registers `count`
    /// simulated nodes and the real node's block, and starts every speaker.
    /// `spares` more speakers get an address and a listener but no Node: they are the nodes
    /// that join later ([`SimCluster::join`]).
    pub fn build(
        count: usize,
        spares: usize,
        role: Role,
        progress: impl FnMut(&str),
    ) -> anyhow::Result<SimCluster> {
        SimCluster::build_with_ipip(count, spares, role, "Never", progress)
    }

    /// [`SimCluster::build`] with the pool's `ipipMode` (`Always`: the real node's felix routes
    /// every block `via <node address> dev tunl0 onlink`, which needs the kernel's ipip module).
    pub fn build_with_ipip(
        count: usize,
        spares: usize,
        role: Role,
        ipip_mode: &str,
        mut progress: impl FnMut(&str),
    ) -> anyhow::Result<SimCluster> {
        // The pool has 1,024 blocks, one of them the real node's.
        if count + spares > 1023 {
            bail!("at most 1,023 simulated nodes (spares included) fit the pool");
        }
        let lab = Lab::new("margay-sim")?;
        let node_ns = lab.netns("node")?;
        let sim_ns = lab.netns("sim")?;
        let net = |a: Ipv4Addr| IpNet::V4(Ipv4Net::new(a, SUBNET_LEN).expect("valid length"));
        let (node_if, sim_if) = node_ns.veth(&sim_ns, &[net(real_addr())], &[net(etcd_addr())])?;
        let mut nodes = plan(count + spares);
        let spare_nodes = nodes.split_off(count);
        progress(&format!(
            "adding {} addresses to {}",
            count + spares,
            sim_ns.name()
        ));
        let batch: String = nodes
            .iter()
            .chain(&spare_nodes)
            .map(|n| format!("address add {}/{SUBNET_LEN} dev {sim_if}\n", n.addr))
            .collect();
        let batch_path = lab.dir().join("sim-addresses.batch");
        std::fs::write(&batch_path, batch)?;
        sim_ns.ip(&["-batch", &batch_path.display().to_string()])?;
        // The kernel's ARP table is one for every namespace (gc_thresh3, 1,024 entries by
        // default): a thousand learned entries here overflow it and drop connections. Permanent
        // entries do not count against it.
        let mac = sim_ns.ip_json(&["link", "show", "dev", &sim_if])?;
        let mac = mac
            .first()
            .and_then(|l| l["address"].as_str())
            .context("reading the simulated side's MAC address")?
            .to_string();
        let neigh: String = nodes
            .iter()
            .chain(&spare_nodes)
            .map(|n| {
                format!(
                    "neigh replace {} lladdr {mac} dev {node_if} nud permanent\n",
                    n.addr
                )
            })
            .collect();
        let neigh_path = lab.dir().join("sim-neighbours.batch");
        std::fs::write(&neigh_path, neigh)?;
        node_ns.ip(&["-batch", &neigh_path.display().to_string()])?;

        progress("starting etcd");
        let addrs = Addrs {
            ifname: sim_if,
            v4: Ipv4Net::new(etcd_addr(), SUBNET_LEN)?,
            v6: "fd00:98::2/64".parse()?,
        };
        let etcd = Etcd::start(&lab, sim_ns, addrs)?;
        etcd.apply(&model_yaml(role, ipip_mode))?;

        let rt = NsRuntime::start(etcd.netns().name())?;
        let endpoint = etcd.endpoint();
        let store = rt.run(async move { Store::connect(&EtcdArgs::plain([endpoint])).await })??;
        progress(&format!(
            "registering {count} simulated nodes (Node, block, affinity)"
        ));
        let started = Instant::now();
        {
            let (store, nodes) = (store.clone(), nodes.clone());
            rt.run(async move {
                register::register_all(&store, &nodes, SUBNET_LEN).await?;
                register::claim_block(&store, REAL_NODE, IpNet::V4(real_block())).await
            })??;
        }
        progress(&format!(
            "registered in {:.1} s; starting {count} speakers",
            started.elapsed().as_secs_f64()
        ));
        let (logs, spare_logs) = {
            let (nodes, spares) = (nodes.clone(), spare_nodes.clone());
            rt.run(async move {
                let a = speaker::start(&nodes, NODE_AS, 179).await?;
                let b = speaker::start(&spares, NODE_AS, 179).await?;
                anyhow::Ok((a, b))
            })??
        };
        Ok(SimCluster {
            role,
            rt,
            logs,
            spares: spare_nodes,
            spare_logs,
            store,
            nodes,
            etcd,
            node_ns,
            lab,
        })
    }

    /// How the simulated nodes peer with the real one.
    pub fn role(&self) -> Role {
        self.role
    }

    /// How many routes a simulated speaker holds once converged: the real node's block, and
    /// under a reflector every other simulated node's too.
    pub fn routes_per_speaker(&self) -> usize {
        match self.role {
            Role::Mesh => 1,
            Role::Reflector => self.nodes.len(),
        }
    }

    /// The lab (its directory holds every daemon's logs).
    pub fn lab(&self) -> &Lab {
        &self.lab
    }

    /// The real node's namespace.
    pub fn node_ns(&self) -> &Netns {
        &self.node_ns
    }

    /// etcd's client URL.
    pub fn etcd_endpoint(&self) -> String {
        self.etcd.endpoint()
    }

    /// etcd's PID.
    pub fn etcd_pid(&mut self) -> u32 {
        self.etcd.process().pid()
    }

    /// The simulated nodes.
    pub fn nodes(&self) -> &[SimNode] {
        &self.nodes
    }

    /// Every speaker's log.
    pub fn logs(&self) -> &Logs {
        &self.logs
    }

    /// The speakers that join later, and their logs.
    pub fn spares(&self) -> (&[SimNode], &Logs) {
        (&self.spares, &self.spare_logs)
    }

    /// The simulated nodes' runtime (inside their namespace), where etcd is reached.
    pub fn runtime(&self) -> &NsRuntime {
        &self.rt
    }

    /// A handle on etcd, usable on [`SimCluster::run`].
    pub fn store(&self) -> Store {
        self.store.clone()
    }

    /// Runs `fut` on the simulated nodes' runtime (inside their namespace).
    pub fn run<T, F>(&self, fut: F) -> anyhow::Result<T>
    where
        F: std::future::Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        self.rt.run(fut)
    }

    /// A summary of the speakers now.
    pub fn census(&self) -> Census {
        let mut c = Census::default();
        let want = self.routes_per_speaker();
        for l in self.logs.iter() {
            let l = l.lock().expect("log lock");
            if l.up > 0 {
                c.up += 1;
            }
            c.downs += u64::from(l.downs);
            let has_real = l.routes.contains_key(&real_block());
            if has_real && l.routes.len() >= want {
                c.complete += 1;
            }
            c.with_real_block += usize::from(has_real);
            c.routes += l.routes.len();
            if let Some(t) = l.established {
                c.last_established = Some(c.last_established.map_or(t, |m: Instant| m.max(t)));
            }
            if c.example_error.is_none() {
                c.example_error.clone_from(&l.last_error);
            }
        }
        c
    }

    /// Forgets what the speakers saw (before another daemon takes the real node's place).
    pub fn reset_logs(&self) {
        for l in self.logs.iter() {
            let mut l = l.lock().expect("log lock");
            let up = l.up;
            *l = Log::default();
            l.up = up;
        }
    }

    /// The real node's kernel routes of protocol `proto` (`81` for felix, `bird`) inside the
    /// pool that go via a next hop: block → next hop.
    pub fn kernel_routes(&self, proto: &str) -> anyhow::Result<HashMap<Ipv4Net, Ipv4Addr>> {
        let out = self
            .node_ns
            .ip(&["-4", "route", "show", "proto", proto, "root", POOL])?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                let dst = w.next()?.parse().ok()?;
                let via = w.skip_while(|x| *x != "via").nth(1)?.parse().ok()?;
                Some((dst, via))
            })
            .collect())
    }

    /// How many blocks the real node's kernel routes via a next hop ([`Self::kernel_routes`]).
    pub fn kernel_blocks(&self, proto: &str) -> anyhow::Result<usize> {
        Ok(self.kernel_routes(proto)?.len())
    }

    /// Polls until `done` (checked every `every`) or `timeout`, printing a progress line every
    /// few seconds; returns when `done` first held.
    pub fn wait(
        &self,
        what: &str,
        timeout: Duration,
        every: Duration,
        mut done: impl FnMut(&SimCluster) -> anyhow::Result<Option<String>>,
    ) -> anyhow::Result<Instant> {
        let start = Instant::now();
        let mut last_line = start;
        loop {
            match done(self)? {
                None => return Ok(Instant::now()),
                Some(missing) => {
                    if start.elapsed() > timeout {
                        bail!("timed out after {timeout:?} waiting for {what}: {missing}");
                    }
                    if last_line.elapsed() > Duration::from_secs(5) {
                        eprintln!(
                            "  ... {what}: {missing} ({:.0} s)",
                            start.elapsed().as_secs_f64()
                        );
                        last_line = Instant::now();
                    }
                }
            }
            std::thread::sleep(every);
        }
    }
}

/// The IPPool (its `ipipMode` as given), the BGPConfiguration, and for [`Role::Reflector`] the real node's Node (it
/// keeps its labels and cluster id when margay-bgpd writes its address) and the BGPPeer from
/// every node to the reflectors.
fn model_yaml(role: Role, ipip_mode: &str) -> String {
    let mut docs = vec![
        format!(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: sim-pool\n\
             spec:\n  cidr: {POOL}\n  blockSize: 26\n  ipipMode: {ipip_mode}\n  vxlanMode: \
             Never\n  natOutgoing: false\n  nodeSelector: all()\n"
        ),
        format!(
            "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: \
             default\nspec:\n  asNumber: {NODE_AS}\n  nodeToNodeMeshEnabled: {}\n",
            role == Role::Mesh
        ),
    ];
    if role == Role::Reflector {
        docs.push(format!(
            "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: {REAL_NODE}\n  \
             labels:\n    route-reflector: \"true\"\nspec:\n  bgp:\n    ipv4Address: \
             {}/{SUBNET_LEN}\n    asNumber: {NODE_AS}\n    routeReflectorClusterID: {CLUSTER_ID}\n",
            real_addr()
        ));
        docs.push(REFLECTOR_PEER_YAML.to_string());
    }
    docs.join("---\n")
}

/// The speakers at one moment.
#[derive(Debug, Default, Clone)]
pub struct Census {
    /// Speakers with a session Established.
    pub up: usize,
    /// Sessions that went down after Established, in total.
    pub downs: u64,
    /// Speakers holding the real node's block and, under a reflector, every other one's.
    pub complete: usize,
    /// Speakers holding the real node's block.
    pub with_real_block: usize,
    /// Routes held by all speakers together.
    pub routes: usize,
    pub last_established: Option<Instant>,
    pub example_error: Option<String>,
}

/// Fails with the context `what` unless `cond`.
pub fn ensure(cond: bool, what: impl FnOnce() -> String) -> anyhow::Result<()> {
    if cond { Ok(()) } else { bail!(what()) }
}
