//! Moving a running Calico cluster to margay in place (issue 17 §2-4), with real parts only:
//! Calico nodes as the lab builds them (`margay_lab::calico`: BIRD 2 on the configuration
//! calico-node's confd renders, pods wired as Calico wires them, Calico's etcd keys written
//! from the documented JSON of each kind), one etcd holding both Calico's `/calico/` keys and
//! margay's, margay-bgpd and margay-felix started in cluster mode.
//!
//! The migration runs as an operator would: `margayctl datastore migrate from-calico`, then
//! node by node calico-node goes (its BIRD killed: no NOTIFICATION, its kernel routes stay) and
//! margay comes up in its place as the same BGP speaker (router id, address, AS) with felix
//! adopting Calico's routes. Throughout, every pod pings every other at 100/s and every
//! node's route table is watched (`ip monitor route`).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use margay_datastore::ipam::Ipam;
use margay_datastore::{EtcdArgs, Store};
use margay_lab::calico::{
    self, CalicoNode, ClusterKeys, ConfdIpip, FLUSH_MARGAY, HANDOVER_TO_BIRD, IPIP_DEVICE,
    NodeKeys, PodKeys, cali_name, cluster_keys, confd_input, confd6_input, mesh6_proto,
    remote_vteps,
};
use margay_lab::{
    Bgpd, ClusterArgs, Etcd, Felix, FelixArgs, Lab, LabSwitch, Netns, Process, Result, wait_for,
};
use serde_json::Value;

const AS: u32 = 64512;

/// The IPPool's mode in a test cluster.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Never,
    Vxlan,
    /// IP-in-IP Always: only Calico's side is built on this machine, its `tunl0` a dummy
    /// device of that name (the kernel here has no `ipip` module; the traffic test runs in
    /// the VM).
    IpipRoutes,
    /// Never, dual stack: an IPv6 pool (Never) beside the IPv4 one, `bird6` on every Calico
    /// node, IPv6 pods.
    NeverDual,
}
const NODES: usize = 3;
const WAIT: Duration = Duration::from_secs(60);

/// A node's margay daemons once it is migrated.
struct Margay {
    // Field order is drop order: felix before the bgpd it talks to.
    _felix: Felix,
    _bgpd: Bgpd,
}

struct Cluster {
    // Field order is drop order: processes before the namespaces they run in.
    pings: Vec<(String, Process)>,
    monitors: Vec<Process>,
    margay: Vec<Option<Margay>>,
    nodes: Vec<CalicoNode>,
    keys: ClusterKeys,
    etcd: Etcd,
    _sw: LabSwitch,
    lab: Lab,
}

/// The node's pod block: the `i+1`th /26 of the pool.
fn block(pool: Ipv4Net, i: usize) -> Ipv4Net {
    Ipv4Net::new(
        Ipv4Addr::from(u32::from(pool.network()) + 64 * (i as u32 + 1)),
        26,
    )
    .unwrap()
}

/// The node's IPv6 pod block: the `i+1`th /122 of the pool.
fn block6(pool: Ipv6Net, i: usize) -> Ipv6Net {
    Ipv6Net::new(
        Ipv6Addr::from(u128::from(pool.network()) + 64 * (i as u128 + 1)),
        122,
    )
    .unwrap()
}

fn nth6(net: Ipv6Net, i: u128) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(net.network()) + i)
}

fn nth(net: Ipv4Net, i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()) + i)
}

impl Cluster {
    /// etcd and `NODES` Calico nodes (one pod each) on a switch, Calico's keys in etcd, every
    /// BIRD meshed and every node's kernel holding the other blocks.
    fn calico(test: &str, pool: &str, mode: Mode) -> Result<Cluster> {
        let vxlan = mode == Mode::Vxlan;
        let ipip = mode == Mode::IpipRoutes;
        let dual = mode == Mode::NeverDual;
        let pool6: Ipv6Net = "fd00:106::/112".parse().unwrap();
        let lab = Lab::new(test)?;
        let sw = lab.switch("sw")?;
        let etcd = Etcd::on_switch(&lab, &sw)?;
        let pool: Ipv4Net = pool.parse().unwrap();
        let gateway = match etcd.ip() {
            IpAddr::V4(a) => a,
            IpAddr::V6(_) => unreachable!("etcd listens on IPv4"),
        };
        let mut namespaces = Vec::new();
        let mut keys = ClusterKeys {
            pool,
            block_size: 26,
            as_num: AS,
            vxlan,
            nodes: Vec::new(),
            ipip: ipip.then_some(ConfdIpip::Always),
            pool6: dual.then_some(pool6),
        };
        for i in 0..NODES {
            let name = format!("node-{i}");
            let ns = lab.netns(&format!("n{i}"))?;
            let addrs = sw.attach(&ns)?;
            let b = block(pool, i);
            let pod = format!("web-{i}");
            keys.nodes.push(NodeKeys {
                name: name.clone(),
                ip: addrs.v4,
                block: b,
                vtep: vxlan.then(|| (nth(b, 0), format!("66:ca:11:c0:00:{i:02x}"))),
                pods: vec![PodKeys {
                    namespace: "default".into(),
                    name: pod.clone(),
                    container: format!("{:064x}", 0xc0ffee00 + i),
                    ip: nth(b, 5),
                    interface: cali_name("default", &pod),
                    ip6: dual.then(|| nth6(block6(pool6, i), 5)),
                }],
                ipip_tunnel: ipip.then(|| nth(b, 0)),
                v6: dual.then(|| (addrs.v6, block6(pool6, i))),
            });
            namespaces.push((ns, addrs));
        }
        calico::write_keys(&lab, &etcd, &cluster_keys(&keys))?;
        let mut nodes = Vec::new();
        for (i, (ns, addrs)) in namespaces.into_iter().enumerate() {
            let role = format!("n{i}");
            if let Some(t) = keys.nodes[i].ipip_tunnel {
                // What calico-node's startup leaves: tunl0 up with the Node's tunnel address.
                // (A veth of that name: this kernel has neither ipip nor dummy.)
                ns.ip(&[
                    "link",
                    "add",
                    IPIP_DEVICE,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "tunl0peer",
                ])?;
                ns.ip(&["addr", "add", &format!("{t}/32"), "dev", IPIP_DEVICE])?;
                ns.ip(&["link", "set", IPIP_DEVICE, "up"])?;
            }
            let mut n = CalicoNode::create(&lab, ns, &role, addrs, gateway, keys.nodes[i].clone())?;
            n.program_vxlan(&remote_vteps(&keys, i))?;
            n.start_bird(&lab, &confd_input(&keys, i))?;
            if let Some(input6) = confd6_input(&keys, i) {
                n.start_bird6(&lab, &input6)?;
            }
            nodes.push(n);
        }
        let c = Cluster {
            pings: Vec::new(),
            monitors: Vec::new(),
            margay: (0..NODES).map(|_| None).collect(),
            nodes,
            keys,
            etcd,
            _sw: sw,
            lab,
        };
        for i in 0..NODES {
            for j in (0..NODES).filter(|j| *j != i) {
                c.nodes[i]
                    .bird()
                    .unwrap()
                    .wait_established(&c.mesh_proto(j), WAIT)?;
            }
            if dual {
                for j in (0..NODES).filter(|j| *j != i) {
                    c.nodes[i]
                        .bird6()
                        .unwrap()
                        .wait_established(&c.mesh6_proto(j), WAIT)?;
                }
                c.wait_routes6(i, "Calico's IPv6 routes", |i, all| {
                    c.remote_routes6_ok(i, all, |_, r| r["protocol"] == "bird")
                });
            }
            c.wait_routes(i, "Calico's routes", |i, all| {
                c.remote_routes_ok(i, all, |_, r| match mode {
                    Mode::Vxlan => r["protocol"] == "80",
                    Mode::Never | Mode::NeverDual => r["protocol"] == "bird",
                    // As Calico's BIRD installs them: `proto bird onlink dev tunl0 via <node>`.
                    Mode::IpipRoutes => {
                        r["protocol"] == "bird"
                            && r["dev"] == IPIP_DEVICE
                            && r["flags"]
                                .as_array()
                                .is_some_and(|f| f.iter().any(|f| f == "onlink"))
                    }
                })
            });
        }
        Ok(c)
    }

    /// BIRD's name for the session with node `j` (`Mesh_10_99_0_2`).
    fn mesh_proto(&self, j: usize) -> String {
        format!(
            "Mesh_{}",
            self.keys.nodes[j].ip.addr().to_string().replace('.', "_")
        )
    }

    /// `bird6`'s name for the session with node `j` (`Mesh_fd00_99_1__3`).
    fn mesh6_proto(&self, j: usize) -> String {
        mesh6_proto(&self.keys.nodes[j].v6.unwrap().0.addr().to_string())
    }

    /// Node `i`'s IPv6 route to every other node's IPv6 block satisfies `ok` and goes to that
    /// node's IPv6 address.
    fn remote_routes6_ok(
        &self,
        i: usize,
        all: &[Value],
        ok: impl Fn(usize, &Value) -> bool,
    ) -> std::result::Result<(), String> {
        self.routes_to_others(i, all, ok, |n| {
            let (ip6, block) = n.v6.unwrap();
            (block.to_string(), ip6.addr().to_string())
        })
    }

    /// Node `i` has a route to each other node's destination with its gateway (`target`:
    /// both, from the node's keys), and each satisfies `ok`.
    fn routes_to_others(
        &self,
        i: usize,
        all: &[Value],
        ok: impl Fn(usize, &Value) -> bool,
        target: impl Fn(&NodeKeys) -> (String, String),
    ) -> std::result::Result<(), String> {
        for j in (0..NODES).filter(|j| *j != i) {
            let (dst, gw) = target(&self.keys.nodes[j]);
            match all.iter().find(|r| r["dst"] == dst.as_str()) {
                Some(r) if r["gateway"] == gw.as_str() && ok(j, r) => {}
                r => return Err(format!("node-{i}: route to {dst} via {gw}: {r:?}")),
            }
        }
        Ok(())
    }

    /// Waits until node `i`'s IPv6 main table satisfies `check`.
    fn wait_routes6(
        &self,
        i: usize,
        what: &str,
        check: impl Fn(usize, &[Value]) -> std::result::Result<(), String>,
    ) {
        self.wait_table(i, "-6", what, check)
    }

    /// Waits until node `i`'s main table of `family` (`-4`, `-6`) satisfies `check`.
    fn wait_table(
        &self,
        i: usize,
        family: &str,
        what: &str,
        check: impl Fn(usize, &[Value]) -> std::result::Result<(), String>,
    ) {
        let ns = &self.nodes[i].ns;
        wait_for(what, WAIT, &self.logs(), || {
            let all = ns
                .ip_json(&[family, "route", "show"])
                .map_err(|e| e.to_string())?;
            check(i, &all).map_err(|e| format!("{e}\n{}", show(&all)))
        })
        .unwrap_or_else(|e| panic!("{e}"));
    }

    fn node_ip(&self, j: usize) -> Ipv4Addr {
        self.keys.nodes[j].ip.addr()
    }

    fn pod_ip(&self, j: usize) -> Ipv4Addr {
        self.keys.nodes[j].pods[0].ip
    }

    /// Node `i`'s route to every other node's block satisfies `ok` (and goes to that node,
    /// directly or through its VTEP).
    fn remote_routes_ok(
        &self,
        i: usize,
        all: &[Value],
        ok: impl Fn(usize, &Value) -> bool,
    ) -> std::result::Result<(), String> {
        let vxlan = self.keys.vxlan;
        self.routes_to_others(i, all, ok, |n| {
            let gw = match &n.vtep {
                Some((vtep, _)) if vxlan => vtep.to_string(),
                _ => n.ip.addr().to_string(),
            };
            (n.block.to_string(), gw)
        })
    }

    /// Waits until node `i`'s IPv4 main table satisfies `check`.
    fn wait_routes(
        &self,
        i: usize,
        what: &str,
        check: impl Fn(usize, &[Value]) -> std::result::Result<(), String>,
    ) {
        self.wait_table(i, "-4", what, check)
    }

    fn logs(&self) -> Vec<&dyn margay_lab::HasLogs> {
        let mut v: Vec<&dyn margay_lab::HasLogs> = vec![&self.etcd];
        for n in &self.nodes {
            if let Some(b) = n.bird() {
                v.push(b);
            }
        }
        v
    }

    /// `ip monitor route` on every node, and every pod pinging every other at 100/s.
    fn watch_and_ping(&mut self) -> Result<()> {
        for n in &self.nodes {
            self.monitors.push(Process::spawn(
                &n.ns,
                &format!("monitor-{}", n.name),
                "ip",
                ["monitor", "route"],
                self.lab.dir(),
            )?);
        }
        for i in 0..NODES {
            for j in (0..NODES).filter(|j| *j != i) {
                let name = format!("ping-{i}-{j}");
                let p = Process::spawn(
                    &self.nodes[i].pods[0].ns,
                    &name,
                    "ping",
                    ["-n", "-i", "0.01", "-W", "1", &self.pod_ip(j).to_string()],
                    self.lab.dir(),
                )?;
                self.pings.push((name, p));
                if let Some(ip6) = self.keys.nodes[j].pods[0].ip6 {
                    let name = format!("ping6-{i}-{j}");
                    let p = Process::spawn(
                        &self.nodes[i].pods[0].ns,
                        &name,
                        "ping",
                        ["-6", "-n", "-i", "0.01", "-W", "1", &ip6.to_string()],
                        self.lab.dir(),
                    )?;
                    self.pings.push((name, p));
                }
            }
        }
        Ok(())
    }

    /// Stops the pings; each one's summary line.
    fn ping_summaries(&mut self) -> Vec<(String, String)> {
        self.pings
            .iter()
            .map(|(name, p)| {
                let s = p
                    .ping_summary(Duration::from_secs(10))
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                (name.clone(), s)
            })
            .collect()
    }

    fn margayctl(&self, args: &[&str]) -> String {
        self.etcd
            .margayctl(args)
            .unwrap_or_else(|e| panic!("margayctl {args:?}: {e}"))
    }

    /// calico-node goes from node `i` (BIRD killed) and margay comes up in its place: bgpd in
    /// cluster mode as the same speaker, felix adopting Calico's routes.
    fn migrate_node(&mut self, i: usize) -> Result<()> {
        self.nodes[i].kill_bird();
        let n = &self.nodes[i];
        let mut cargs = ClusterArgs::new(&n.name, &self.etcd.endpoint(), IpNet::V4(n.addrs.v4));
        if let Some((ip6, _)) = n.keys.v6 {
            cargs = cargs.ip6(IpNet::V6(ip6));
        }
        let bgpd = Bgpd::start_cluster(&self.lab, &n.ns, &format!("bgpd-{}", n.name), cargs)?;
        let mut args = FelixArgs::new(
            &n.name,
            &self.etcd.endpoint(),
            &bgpd.config().socket,
            &self.lab.dir().join(format!("felix-{}.sock", n.name)),
        );
        args.resync_interval = 1;
        args.adopt_route_protocols = Some("calico".into());
        let felix = Felix::start_cluster(&self.lab, &n.ns, &format!("felix-{}", n.name), args)?;
        self.margay[i] = Some(Margay {
            _felix: felix,
            _bgpd: bgpd,
        });
        Ok(())
    }

    /// The runbook's way back for node `i`: margay-node stops (felix, then bgpd, each by
    /// SIGTERM: bgpd's graceful stop closes its sessions without a NOTIFICATION towards peers
    /// without RFC 8538's N bit, so BIRD keeps the node's routes; felix leaves its routes),
    /// then margay's routes but the pods' are handed to BIRD in place (the runbook's command,
    /// [`HANDOVER_TO_BIRD`]), then
    /// calico-node returns (Calico felix's pod routes, BIRD `-R` on confd's configuration).
    fn return_to_calico(&mut self, i: usize) -> Result<()> {
        self.margay[i] = None;
        self.nodes[i].ns.exec("sh", &["-c", HANDOVER_TO_BIRD])?;
        let input = confd_input(&self.keys, i);
        self.nodes[i].return_calico(&self.lab, &input)
    }

    /// Stops the pings and the route monitors: no ping lost (at least 200 sent each), no
    /// route inside the pool deleted on any node.
    fn assert_lossless(&mut self) {
        for (name, s) in &self.ping_summaries() {
            eprintln!("{name}: {s}");
            assert!(s.contains(" 0% packet loss"), "{name}: {s}");
            let sent: u32 = s.split_whitespace().next().unwrap().parse().unwrap();
            assert!(sent >= 200, "{name}: {s}");
        }
        for m in &mut self.monitors {
            m.stop();
        }
        for (i, m) in self.monitors.iter().enumerate() {
            let d = deletions(m, self.keys.pool, self.keys.pool6);
            assert!(d.is_empty(), "node-{i} saw a pod route deleted: {d:#?}");
        }
    }

    /// Whether node `j` runs margay now.
    fn is_margay(&self, j: usize) -> bool {
        self.margay[j].is_some()
    }
}

fn show(routes: &[Value]) -> String {
    routes
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs `f` with a datastore client, on a thread inside `ns` (etcd listens only there).
fn with_store<T, F, Fut>(ns: &Netns, url: String, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce(Store) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    ns.run_inside(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let store = Store::connect(&EtcdArgs::plain([url])).await.expect("etcd");
            f(store).await
        })
    })
    .unwrap()
}

/// The lines of an `ip monitor route` log that delete a route inside `pool`.
/// (IPv6: inside `pool6`, a /112 whose addresses all start with its network's text.)
fn deletions(monitor: &Process, pool: Ipv4Net, pool6: Option<Ipv6Net>) -> Vec<String> {
    let text = std::fs::read_to_string(monitor.log_paths().0).unwrap_or_default();
    let prefix = pool.network().to_string();
    let stem = &prefix[..prefix.rfind('.').unwrap()];
    let stem = format!(" {}.", &stem[..stem.rfind('.').unwrap()]);
    let stem6 = pool6.map(|p| format!(" {}", p.network()));
    text.lines()
        .filter(|l| {
            l.starts_with("Deleted")
                && (l.contains(&stem) || stem6.as_ref().is_some_and(|s| l.contains(s.as_str())))
        })
        .map(str::to_string)
        .collect()
}

/// calico-node goes from node `i` and margay takes over: felix owns the node's routes, no
/// second VXLAN device, and every other node routes to it again through a live session with
/// the same speaker.
fn take_over(c: &mut Cluster, i: usize, vxlan: bool) {
    c.migrate_node(i).unwrap();
    // Node i: its pod's route, its block's blackhole and every remote block are felix's.
    let pod = format!("{}", c.pod_ip(i));
    let own = c.keys.nodes[i].block.to_string();
    c.wait_routes(i, "Calico's routes adopted by felix", |i, all| {
        let find = |dst: &str| all.iter().find(|r| r["dst"] == dst);
        match (find(&pod), find(&own)) {
            (Some(p), Some(b)) if p["protocol"] == "81" && b["protocol"] == "81" => {}
            other => return Err(format!("pod route or blackhole not felix's: {other:?}")),
        }
        c.remote_routes_ok(i, all, |_, r| {
            // VXLAN: through calico-node's device, taken over as it is.
            r["protocol"] == "81" && (!vxlan || r["dev"] == "vxlan.calico")
        })
    });
    if vxlan {
        let links = c.nodes[i].ns.ip_json(&["link", "show"]).unwrap();
        assert!(
            !links.iter().any(|l| l["ifname"] == "vxlan.margay"),
            "a second VXLAN device: {}",
            show(&links)
        );
    }
    // Every other node routes to node i's block again through a live session: Calico's
    // BIRD (protocol bird; in VXLAN mode Calico's felix routes it, protocol 80) or margay.
    for j in (0..NODES).filter(|j| *j != i) {
        if let Some(b) = c.nodes[j].bird() {
            // The same speaker as before: the node's address as router id, the same AS.
            b.wait_established(&c.mesh_proto(i), WAIT).unwrap();
            let all = b
                .birdc(&["show", "protocols", "all", &c.mesh_proto(i)])
                .unwrap();
            let field = |name: &str| {
                all.lines()
                    .find_map(|l| l.trim().strip_prefix(name).map(str::trim))
                    .unwrap_or_default()
                    .to_string()
            };
            assert_eq!(field("Neighbor ID:"), c.node_ip(i).to_string(), "{all}");
            assert_eq!(field("Neighbor AS:"), AS.to_string(), "{all}");
        }
        let margay_j = c.is_margay(j);
        c.wait_routes(j, "the migrated node's block", |j, all| {
            c.remote_routes_ok(j, all, |_, r| {
                let want = match (margay_j, vxlan) {
                    (true, _) => "81",
                    (false, true) => "80",
                    (false, false) => "bird",
                };
                r["protocol"] == want
            })
        });
    }
    if let Some((_, own6)) = c.keys.nodes[i].v6 {
        take_over6(c, i, own6);
    }
    std::thread::sleep(Duration::from_secs(2));
}

/// The IPv6 half of [`take_over`]: the pod's `/128` and the node's IPv6 block are felix's,
/// every other node routes to that block again (`bird6`'s routes on Calico nodes).
fn take_over6(c: &Cluster, i: usize, own6: Ipv6Net) {
    let pod = format!("{}", c.keys.nodes[i].pods[0].ip6.unwrap());
    let own = own6.to_string();
    c.wait_routes6(i, "Calico's IPv6 routes adopted by felix", |i, all| {
        let find = |dst: &str| all.iter().find(|r| r["dst"] == dst);
        match (find(&pod), find(&own)) {
            (Some(p), Some(b)) if p["protocol"] == "81" && b["protocol"] == "81" => {}
            other => {
                return Err(format!(
                    "IPv6 pod route or blackhole not felix's: {other:?}"
                ));
            }
        }
        c.remote_routes6_ok(i, all, |_, r| r["protocol"] == "81")
    });
    for j in (0..NODES).filter(|j| *j != i) {
        if let Some(b) = c.nodes[j].bird6() {
            b.wait_established(&c.mesh6_proto(i), WAIT).unwrap();
        }
        let want = if c.is_margay(j) { "81" } else { "bird" };
        c.wait_routes6(j, "the migrated node's IPv6 block", |j, all| {
            c.remote_routes6_ok(j, all, |_, r| r["protocol"] == want)
        });
    }
}

fn run_migration(test: &str, pool: &str, mode: Mode) {
    let vxlan = mode == Mode::Vxlan;
    let mut c = Cluster::calico(test, pool, mode).unwrap();
    c.watch_and_ping().unwrap();
    std::thread::sleep(Duration::from_secs(1));

    // The import, twice: the second run finds everything there.
    let out = c.margayctl(&["datastore", "migrate", "from-calico"]);
    assert!(out.contains(" 0 updated, 0 unchanged"), "{out}");
    let out = c.margayctl(&["datastore", "migrate", "from-calico"]);
    assert!(
        out.contains(" 0 created, 0 updated,") && out.contains("(0 etcd transactions)"),
        "{out}"
    );

    for i in 0..NODES {
        take_over(&mut c, i, vxlan);
    }

    // Mixed or not, all pods kept talking: no ping lost, no route to a pod ever deleted.
    c.assert_lossless();

    // Every address kept, by the same handle; ipam check clean; a third run changes nothing.
    let want: BTreeMap<IpAddr, String> = c
        .keys
        .nodes
        .iter()
        .flat_map(|n| &n.pods)
        .flat_map(|p| {
            let handle = format!("k8s-pod-network.{}", p.container);
            std::iter::once(IpAddr::V4(p.ip))
                .chain(p.ip6.map(IpAddr::V6))
                .map(move |a| (a, handle.clone()))
        })
        .collect();
    let (have, check) = with_store(c.etcd.netns(), c.etcd.endpoint(), |store| async move {
        let ipam = Ipam::new(store);
        let mut have = BTreeMap::new();
        for b in ipam.blocks().await.unwrap() {
            let b = b.value;
            for (ord, a) in &b.allocations {
                if a.handle_id.starts_with("k8s-pod-network.") {
                    have.insert(b.addr(*ord), a.handle_id.clone());
                }
            }
        }
        (have, ipam.check().await.unwrap())
    });
    assert_eq!(have, want);
    assert!(check.is_clean(), "{check:?}");
    // Per node: its pod, and its VTEP's address or its pod's IPv6 address.
    let per_node = if vxlan || mode == Mode::NeverDual {
        2
    } else {
        1
    };
    assert_eq!(check.addresses_in_use, NODES * per_node);
    let out = c.margayctl(&["datastore", "migrate", "from-calico"]);
    assert!(out.contains("(0 etcd transactions)"), "{out}");
}

#[test]
fn a_calico_cluster_moves_to_margay_node_by_node_under_pings() {
    run_migration(
        "calico_cluster_moves_to_margay",
        "10.102.0.0/16",
        Mode::Never,
    );
}

#[test]
fn a_calico_vxlan_cluster_moves_to_margay_keeping_calicos_vxlan_device() {
    run_migration("calico_vxlan_moves_to_margay", "10.103.0.0/16", Mode::Vxlan);
}

#[test]
fn a_dual_stack_calico_cluster_moves_to_margay_with_its_ipv6_pods() {
    run_migration(
        "calico_dual_moves_to_margay",
        "10.107.0.0/16",
        Mode::NeverDual,
    );
}

#[test]
fn calicos_bird_routes_ipip_blocks_through_tunl0_onlink() {
    // Cluster::calico waits until every node routes every other block as Calico's BIRD
    // does in IPIP mode (`via <node> dev tunl0 onlink proto bird`), from BIRD 2's filter.
    let c = Cluster::calico("calico_ipip_routes", "10.105.0.0/16", Mode::IpipRoutes).unwrap();
    for i in 0..NODES {
        // The own block stays a blackhole: the tunnel is set only on routes with a BGP next hop.
        let all = c.nodes[i].ns.ip_json(&["-4", "route", "show"]).unwrap();
        let own = c.keys.nodes[i].block.to_string();
        let b = all.iter().find(|r| r["dst"] == own.as_str());
        assert!(
            b.is_some_and(|b| b["type"] == "blackhole" && b["protocol"] == "bird"),
            "{}",
            show(&all)
        );
    }
}

#[test]
fn a_node_moved_to_margay_goes_back_to_calico_under_pings() {
    let mut c = Cluster::calico("calico_rollback", "10.106.0.0/16", Mode::Never).unwrap();
    c.watch_and_ping().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let out = c.margayctl(&["datastore", "migrate", "from-calico"]);
    assert!(out.contains(" 0 updated, 0 unchanged"), "{out}");
    // Two nodes move to margay; the second goes back, so it returns beside a margay node
    // and a Calico node.
    take_over(&mut c, 0, false);
    take_over(&mut c, 1, false);
    std::thread::sleep(Duration::from_secs(2));

    let back = 1;
    c.return_to_calico(back).unwrap();
    for j in (0..NODES).filter(|j| *j != back) {
        c.nodes[back]
            .bird()
            .unwrap()
            .wait_established(&c.mesh_proto(j), WAIT)
            .unwrap();
    }
    c.wait_routes(back, "BIRD's routes back on the node", |i, all| {
        c.remote_routes_ok(i, all, |_, r| r["protocol"] == "bird")
    });
    // What is left of margay's goes.
    c.nodes[back].ns.exec("sh", &["-c", FLUSH_MARGAY]).unwrap();
    let pod = c.pod_ip(back).to_string();
    let own = c.keys.nodes[back].block.to_string();
    c.wait_routes(back, "Calico's routes only", |i, all| {
        let find = |dst: &str| all.iter().find(|r| r["dst"] == dst);
        match (find(&pod), find(&own)) {
            // `ip -j` leaves out protocol `boot`, Calico felix's.
            (Some(p), Some(b)) if p.get("protocol").is_none() && b["protocol"] == "bird" => {}
            other => return Err(format!("pod route or blackhole not Calico's: {other:?}")),
        }
        if let Some(r) = all.iter().find(|r| r["protocol"] == "81") {
            return Err(format!("margay's route left: {r}"));
        }
        c.remote_routes_ok(i, all, |_, r| r["protocol"] == "bird")
    });
    for j in (0..NODES).filter(|j| *j != back) {
        let margay_j = c.is_margay(j);
        c.wait_routes(j, "the returned node's block", |j, all| {
            c.remote_routes_ok(j, all, |_, r| {
                r["protocol"] == if margay_j { "81" } else { "bird" }
            })
        });
    }
    std::thread::sleep(Duration::from_secs(2));

    // There and back again: no ping lost, no route inside the pool deleted on any node (the
    // handover changes the protocol in place; BIRD -R takes the routes as its own).
    c.assert_lossless();
}
