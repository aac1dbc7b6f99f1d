//! A running lab, built one step at a time: namespaces, the switches, etcd and the cluster
//! model, the ToR's BIRD, margay-bgpd and margay-felix per node in cluster mode, and pods made
//! through the CNI plugin; then either torn down or kept running with its state recorded.
//!
//! Every part is a guard of the lab library, so a failure (or a signal) at any step removes
//! what the earlier steps made. Fields are declared in drop order: pods, daemons, etcd, hosts,
//! switches, and the directory last.
//!
//! The same type is the API a Rust test drives a lab with: [`Cluster::build`] brings one up,
//! [`Cluster::pods`] lists the pods with their namespaces and addresses, [`Cluster::ping`]
//! pings from a pod's namespace, [`Cluster::restart_bgpd`] and [`Cluster::restart_felix`]
//! restart one node's daemon gracefully (SIGTERM) or abruptly (SIGKILL).

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;

use super::LabCtlError;
use super::health::{self, Health};
use super::ping::{self, PingResult};
use super::pods::{self, Added, Sandbox};
use super::progress::interrupted;
use super::simulated::Fleet;
use super::state::{
    CalicoNodeState, EtcdProxyState, EtcdState, LabState, NodeState, PodState, TorState,
};
use super::topology::{NODE_AS, POOL_CIDR, POOL6_CIDR, Plan, PodPlan, Spec, TOR_AS, TOR2_AS};
use crate::bgpd::{Bgpd, ClusterArgs};
use crate::bird::Bird;
use crate::calico::{self, CalicoNode, ClusterKeys, NodeKeys, PodKeys};
use crate::etcd::Etcd;
use crate::etcd_proxy::{EtcdProxy, proxy_for, start_proxies};
use crate::felix::{Felix, FelixArgs};
use crate::lab::{Addrs, Lab, LabSwitch};
use crate::netns::Netns;
use crate::process::wait_for;

/// How a daemon is stopped before it starts again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM: the daemon shuts down cleanly (bgpd's graceful restart: its peers keep its
    /// routes for the restart time).
    Graceful,
    /// SIGKILL: no goodbye; the kernel closes its sockets.
    Kill,
    /// A stop without graceful restart: margay-bgpd gets SIGINT and BIRD SIGTERM, both send
    /// Cease, so their peers flush their routes at once; BIRD then starts without `-R` and
    /// syncs its kernel table from scratch. The peer graceful restart is measured against.
    Cease,
}

/// A pod this process made.
#[derive(Debug)]
struct Pod {
    plan: PodPlan,
    added: Added,
    ns: Netns,
}

/// The lab while this process owns it.
#[derive(Debug)]
pub struct Cluster {
    pods: Vec<Pod>,
    /// margay-felix of node k at index k-1.
    felixes: Vec<Felix>,
    /// margay-bgpd of node k at index k-1.
    bgpds: Vec<Bgpd>,
    tor: Option<Bird>,
    /// Calico nodes (`--calico-nodes`), in plan order.
    calico: Vec<CalicoNode>,
    /// The second ToR (`--tors 2`).
    tor2: Option<Bird>,
    /// Simulated nodes (`--simulated`).
    fleet: Option<Fleet>,
    /// etcd's gRPC proxies (`--etcd-proxies`): stopped before etcd.
    proxies: Vec<EtcdProxy>,
    etcd: Option<Etcd>,
    /// Node k's namespace at index k-1, then the ToR's, then the second ToR's.
    hosts: Vec<Netns>,
    /// One per rack, then plane b (`--tors 2`).
    switches: Vec<LabSwitch>,
    /// How many times each daemon (by process name) has been restarted, for its log names.
    restarts: Vec<(String, u32)>,
    plan: Plan,
    lab: Lab,
}

impl Cluster {
    /// Creates the lab directory, a switch per rack and a namespace per node and the ToR.
    pub fn create(spec: Spec) -> Result<Cluster, LabCtlError> {
        let lab = Lab::new("margay-lab")?;
        let mut switches = Vec::new();
        for r in 0..Plan::switch_count(&spec) {
            switches.push(lab.switch(&format!("sw{r}"))?);
        }
        let plan = Plan::new(spec, switches.iter().map(LabSwitch::subnet).collect());
        let mut hosts = Vec::with_capacity(plan.nodes.len() + 2);
        let tor2 = plan.tor2.as_ref().map(|t| &t.role);
        for role in plan
            .nodes
            .iter()
            .map(|n| &n.role)
            .chain([&plan.tor.role])
            .chain(tor2)
        {
            hosts.push(lab.netns(role)?);
        }
        Ok(Cluster {
            pods: Vec::new(),
            felixes: Vec::new(),
            bgpds: Vec::new(),
            tor: None,
            calico: Vec::new(),
            tor2: None,
            fleet: None,
            proxies: Vec::new(),
            etcd: None,
            hosts,
            switches,
            restarts: Vec::new(),
            plan,
            lab,
        })
    }

    /// As [`Cluster::create`], with `calico_nodes` Calico nodes planned
    /// ([`Plan::add_calico_nodes`]); [`Cluster::start_calico_nodes`] makes them.
    pub fn create_mixed(spec: Spec, calico_nodes: usize) -> Result<Cluster, LabCtlError> {
        Plan::validate_calico(&spec, calico_nodes)?;
        let mut c = Cluster::create(spec)?;
        c.plan.add_calico_nodes(calico_nodes);
        Ok(c)
    }

    /// Makes the planned Calico nodes as calico-node would have left them: each attached to
    /// rack a with its pods wired as Calico wires them, Calico's keys for them written into
    /// etcd and imported with `margayctl datastore migrate from-calico` (so margay's nodes
    /// mesh with them), and BIRD started on the configuration confd renders for it: the mesh
    /// with every node, margay's and Calico's, and the ToR as a global BGPPeer.
    pub fn start_calico_nodes(&mut self) -> Result<(), LabCtlError> {
        if self.plan.calico.is_empty() {
            return Ok(());
        }
        let etcd = self.etcd_ref()?;
        let gateway = self.plan.tor.addrs[0].ip4();
        let dual = self.plan.spec.ip_family.has_v6();
        let mut keys = ClusterKeys {
            pool: POOL_CIDR.parse().expect("POOL_CIDR is a CIDR"),
            block_size: 26,
            as_num: NODE_AS,
            vxlan: false,
            nodes: Vec::new(),
            ipip: None,
            pool6: dual.then(|| POOL6_CIDR.parse().expect("POOL6_CIDR is a CIDR")),
        };
        for c in &self.plan.calico {
            let pod = format!("web-{}-1", c.role);
            keys.nodes.push(NodeKeys {
                name: c.name.clone(),
                ip: c.addrs.v4,
                block: c.block,
                vtep: None,
                pods: vec![PodKeys {
                    namespace: "default".into(),
                    name: pod.clone(),
                    container: format!("calico{:0>6}01", c.index),
                    ip: std::net::Ipv4Addr::from(u32::from(c.block.network()) + 1),
                    interface: calico::cali_name("default", &pod),
                    ip6: dual.then(|| std::net::Ipv6Addr::from(u128::from(c.block6.network()) + 1)),
                }],
                ipip_tunnel: None,
                v6: dual.then_some((c.addrs.v6, c.block6)),
            });
        }
        // Only the Nodes, endpoints and IPAM: the pool and BGPConfiguration are the lab's.
        let kvs: Vec<_> = calico::cluster_keys(&keys)
            .into_iter()
            .filter(|(k, _)| !k.contains("/ippools/") && !k.contains("/bgpconfigurations/"))
            .collect();
        calico::write_keys(&self.lab, etcd, &kvs)?;
        etcd.margayctl(&["datastore", "migrate", "from-calico"])?;
        let every_node: Vec<std::net::Ipv4Addr> = self
            .plan
            .nodes
            .iter()
            .map(|n| n.addrs.ip4())
            .chain(self.plan.calico.iter().map(|c| c.addrs.ip4()))
            .collect();
        for (i, plan) in self.plan.calico.clone().into_iter().enumerate() {
            if interrupted() {
                return Err(LabCtlError::Interrupted);
            }
            let ns = self.lab.netns(&plan.role)?;
            let got = self.switches[0].attach(&ns)?;
            check_address(&ns, got.ip4(), plan.addrs.ip4())?;
            let mut node = CalicoNode::create(
                &self.lab,
                ns,
                &plan.role,
                got,
                gateway,
                keys.nodes[i].clone(),
            )?;
            let mut input = calico::confd_input(&keys, i);
            input.nodes = every_node.clone();
            input.peers = vec![calico::ConfdPeer {
                ip: gateway,
                as_num: TOR_AS,
                node_specific: false,
            }];
            node.start_bird(&self.lab, &input)?;
            if let Some(mut input6) = calico::confd6_input(&keys, i) {
                // calico-node's bird6: the IPv6 mesh with every node, the ToR's IPv6 address
                // as a global peer.
                input6.nodes = self
                    .plan
                    .nodes
                    .iter()
                    .map(|n| n.addrs.ip6())
                    .chain(self.plan.calico.iter().map(|c| c.addrs.ip6()))
                    .collect();
                input6.peers = vec![(self.plan.tor.addrs[0].ip6(), TOR_AS)];
                node.start_bird6(&self.lab, &input6)?;
            }
            self.calico.push(node);
        }
        Ok(())
    }

    /// Every step of `margay-lab up` without the progress lines, up to a converged lab
    /// (sessions, routes, every ping answered): for tests that drive a lab from Rust.
    pub fn build(spec: Spec, timeout: Duration) -> Result<Cluster, LabCtlError> {
        let mut c = Cluster::create(spec)?;
        c.wire()?;
        c.start_etcd()?;
        c.apply_model()?;
        c.start_tor()?;
        c.start_bgpds()?;
        c.label_nodes()?;
        c.start_felixes()?;
        c.wait_sessions(timeout)?;
        c.create_pods()?;
        c.wait_converged(timeout)?;
        Ok(c)
    }

    /// How many namespaces [`Cluster::create`] makes for `spec`.
    pub fn namespace_count(spec: &Spec) -> usize {
        spec.nodes + spec.tors + Plan::switch_count(spec)
    }

    /// The plan the lab follows.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The lab's tag.
    pub fn tag(&self) -> &str {
        self.lab.tag()
    }

    /// The lab's directory (configs, sockets, logs).
    pub fn dir(&self) -> &Path {
        self.lab.dir()
    }

    /// The switches' namespaces.
    pub fn switch_names(&self) -> Vec<String> {
        self.switches
            .iter()
            .map(|s| s.switch().netns().name().to_string())
            .collect()
    }

    /// Node `i`'s namespace (0-based).
    pub fn node_netns(&self, i: usize) -> &Netns {
        &self.hosts[i]
    }

    /// The ToR's namespace.
    pub fn tor_netns(&self) -> &Netns {
        &self.hosts[self.plan.nodes.len()]
    }

    /// Node `i`'s margay-bgpd (0-based), once started.
    pub fn bgpd(&self, i: usize) -> Option<&Bgpd> {
        self.bgpds.get(i)
    }

    /// The first ToR's BIRD, or with `second` the second's (`--tors 2`), once started.
    pub fn tor_bird(&self, second: bool) -> Option<&Bird> {
        if second {
            self.tor2.as_ref()
        } else {
            self.tor.as_ref()
        }
    }

    /// The second ToR's namespace (`--tors 2`).
    pub fn tor2_netns(&self) -> Option<&Netns> {
        self.plan
            .tor2
            .as_ref()
            .and_then(|_| self.hosts.get(self.plan.nodes.len() + 1))
    }

    /// Node `i`'s interface towards the first ToR, or with `plane_b` the second (`--tors 2`):
    /// the one holding its planned address there.
    pub fn node_ifname(&self, i: usize, plane_b: bool) -> Result<String, LabCtlError> {
        let node = &self.plan.nodes[i];
        let want = if plane_b {
            node.addrs_b
                .as_ref()
                .ok_or_else(|| LabCtlError::Usage("the lab has one ToR".into()))?
                .ip4()
        } else {
            node.addrs.ip4()
        };
        let links = self.hosts[i].ip_json(&["-4", "addr", "show"])?;
        links
            .iter()
            .find(|l| {
                l["addr_info"].as_array().is_some_and(|a| {
                    a.iter()
                        .any(|x| x["local"].as_str() == Some(&want.to_string()))
                })
            })
            .and_then(|l| l["ifname"].as_str().map(str::to_string))
            .ok_or_else(|| LabCtlError::Usage(format!("{}: no interface holds {want}", node.name)))
    }

    /// etcd, once started.
    pub fn etcd(&self) -> Option<&Etcd> {
        self.etcd.as_ref()
    }

    /// Plugs every node into its rack's switch and the ToR into every switch, in plan order,
    /// checks each got its planned address, makes the ToR a router and gives every node a
    /// default route through it (proxy ARP answers the pods' 169.254.1.1 only when the node
    /// routes it).
    pub fn wire(&mut self) -> Result<(), LabCtlError> {
        for (node, host) in self.plan.nodes.iter().zip(&self.hosts) {
            let got = self.switches[node.rack].attach(host)?;
            check_address(host, got.ip4(), node.addrs.ip4())?;
        }
        let tor = &self.hosts[self.plan.nodes.len()];
        for (sw, want) in self.switches.iter().zip(&self.plan.tor.addrs) {
            let got = sw.attach(tor)?;
            check_address(tor, got.ip4(), want.ip4())?;
        }
        tor.exec("sysctl", &["-q", "-w", "net.ipv4.ip_forward=1"])?;
        if let (Some(t2), Some(plane_b)) = (&self.plan.tor2, self.switches.last()) {
            // Plane b: every node's second link, then the second ToR.
            for (node, host) in self.plan.nodes.iter().zip(&self.hosts) {
                let got = plane_b.attach(host)?;
                if let Some(want) = &node.addrs_b {
                    check_address(host, got.ip4(), want.ip4())?;
                }
            }
            let host = &self.hosts[self.plan.nodes.len() + 1];
            let got = plane_b.attach(host)?;
            check_address(host, got.ip4(), t2.addrs[0].ip4())?;
            host.exec("sysctl", &["-q", "-w", "net.ipv4.ip_forward=1"])?;
        }
        for (node, host) in self.plan.nodes.iter().zip(&self.hosts) {
            let gw = self.plan.tor_for(node).to_string();
            host.ip(&["route", "add", "default", "via", &gw])?;
        }
        Ok(())
    }

    /// Starts etcd in its own namespace on rack a, routed through the ToR.
    pub fn start_etcd(&mut self) -> Result<(), LabCtlError> {
        let etcd = Etcd::on_switch(&self.lab, &self.switches[0])?;
        let want = std::net::IpAddr::V4(self.plan.etcd.ip4());
        if etcd.ip() != want {
            return Err(LabCtlError::Usage(format!(
                "etcd got {} on the switch, the plan says {want}",
                etcd.ip()
            )));
        }
        // Nodes of the other rack reach etcd through the ToR, and its answers go back that way.
        let gw = self.plan.tor.addrs[0].ip4().to_string();
        etcd.netns().ip(&["route", "add", "default", "via", &gw])?;
        self.etcd = Some(etcd);
        Ok(())
    }

    /// Starts `count` of etcd's gRPC proxies in etcd's namespace; the daemons started after
    /// this talk to them (node k to proxy `(k - 1) % count`) instead of to etcd.
    pub fn start_etcd_proxies(&mut self, count: u8) -> Result<(), LabCtlError> {
        let etcd = self.etcd_ref()?;
        self.proxies = start_proxies(&self.lab, etcd, count)?;
        Ok(())
    }

    /// The etcd URL the daemons of node `i` (0-based) use: their proxy, or etcd itself.
    fn daemon_endpoint(&self, i: usize) -> Result<String, LabCtlError> {
        match proxy_for(i, self.proxies.len()) {
            Some(p) => Ok(self.proxies[p].endpoint()),
            None => Ok(self.etcd_ref()?.endpoint()),
        }
    }

    fn etcd_ref(&self) -> Result<&Etcd, LabCtlError> {
        self.etcd
            .as_ref()
            .ok_or_else(|| LabCtlError::Usage("etcd is not running".into()))
    }

    /// `margayctl apply` of the IPPool, BGPConfiguration and BGPPeers.
    pub fn apply_model(&mut self) -> Result<(), LabCtlError> {
        self.etcd_ref()?.apply(&self.plan.model_yaml())?;
        Ok(())
    }

    /// Starts `count` simulated nodes on rack a ([`Fleet::start`]): registered in etcd and
    /// listening before the real nodes' margay-bgpd start, so those start against them.
    pub fn start_simulated(&mut self, count: usize, timeout: Duration) -> Result<(), LabCtlError> {
        if count == 0 {
            return Ok(());
        }
        let ifnames = (0..self.plan.nodes.len())
            .map(|i| self.node_ifname(i, false))
            .collect::<Result<Vec<_>, _>>()?;
        let real: Vec<(&Netns, String)> = self.hosts.iter().zip(ifnames).collect();
        let endpoint = self.etcd_ref()?.endpoint();
        let fleet = Fleet::start(
            &self.lab,
            &self.switches[0],
            &real,
            &endpoint,
            count,
            timeout,
        )?;
        self.fleet = Some(fleet);
        Ok(())
    }

    /// Starts BIRD on the ToR.
    pub fn start_tor(&mut self) -> Result<(), LabCtlError> {
        if self.plan.spec.no_bgp {
            // Only a router between the racks: no BGP, so no BIRD.
            return Ok(());
        }
        let ns = &self.hosts[self.plan.nodes.len()];
        let bird = Bird::start(&self.lab, ns, &self.plan.tor.name, self.plan.tor_config())?;
        self.tor = Some(bird);
        if let (Some(t2), Some(config)) = (&self.plan.tor2, self.plan.tor2_config()) {
            let ns = &self.hosts[self.plan.nodes.len() + 1];
            self.tor2 = Some(Bird::start(&self.lab, ns, &t2.name, config)?);
        }
        Ok(())
    }

    fn bgpd_args(&self, i: usize) -> Result<ClusterArgs, LabCtlError> {
        let node = &self.plan.nodes[i];
        let family = self.plan.spec.ip_family;
        let mut args = ClusterArgs::new(
            &node.name,
            &self.daemon_endpoint(i)?,
            IpNet::V4(node.addrs.v4),
        )
        .asn(NODE_AS);
        if family.has_v6() {
            args = args.ip6(IpNet::V6(node.addrs.v6));
        }
        if !family.has_v4() {
            // An IPv6-only Node: no IPv4 BGP address, the router id from the node's name.
            args.ip = Some("none".into());
        }
        Ok(args)
    }

    /// Starts margay-bgpd in cluster mode on every node, one after the other (each answers on
    /// its socket before the next starts).
    pub fn start_bgpds(&mut self) -> Result<(), LabCtlError> {
        if self.plan.spec.no_bgp {
            return Ok(());
        }
        for i in 0..self.plan.nodes.len() {
            if interrupted() {
                return Err(LabCtlError::Interrupted);
            }
            let args = self.bgpd_args(i)?;
            let name = format!("{}-bgpd", self.plan.nodes[i].name);
            let bgpd = Bgpd::start_cluster(&self.lab, &self.hosts[i], &name, args)?;
            self.bgpds.push(bgpd);
        }
        Ok(())
    }

    /// Applies every Node over the one its margay-bgpd wrote, adding its rack label and, on the
    /// reflector, its cluster id and label.
    pub fn label_nodes(&mut self) -> Result<(), LabCtlError> {
        let etcd = self.etcd_ref()?;
        let docs: Vec<String> = self
            .plan
            .nodes
            .iter()
            .map(|n| self.plan.node_yaml(n))
            .collect();
        etcd.apply(&docs.join("---\n"))?;
        Ok(())
    }

    fn felix_args(&self, i: usize) -> Result<FelixArgs, LabCtlError> {
        let node = &self.plan.nodes[i];
        let bgpd_socket = self.lab.dir().join(format!("{}-bgpd.sock", node.name));
        let socket = self.lab.dir().join(format!("{}-felix.sock", node.name));
        let args = FelixArgs::new(&node.name, &self.daemon_endpoint(i)?, &bgpd_socket, &socket);
        let family = self.plan.spec.ip_family;
        Ok(if !self.plan.spec.no_bgp {
            args
        } else if family.has_v6() {
            // felix registers the Node's addresses of the lab's families (calico-node's IP, IP6).
            let v4 = family.has_v4().then_some(IpNet::V4(node.addrs.v4));
            args.without_bgp_dual(v4, IpNet::V6(node.addrs.v6))
        } else {
            args.without_bgp(IpNet::V4(node.addrs.v4))
        })
    }

    fn conflist_path(&self, i: usize) -> PathBuf {
        self.lab
            .dir()
            .join(format!("{}.conflist", self.plan.nodes[i].name))
    }

    /// Starts margay-felix in cluster mode on every node and writes each node's CNI conflist.
    pub fn start_felixes(&mut self) -> Result<(), LabCtlError> {
        for i in 0..self.plan.nodes.len() {
            if interrupted() {
                return Err(LabCtlError::Interrupted);
            }
            let args = self.felix_args(i)?;
            let family = self.plan.spec.ip_family;
            let list = pods::conflist_for(
                &self.plan.nodes[i].name,
                &args.socket,
                self.plan.spec.pool_mode.mtu_for(family),
                family.has_v4(),
                family.has_v6(),
            );
            let path = self.conflist_path(i);
            let text =
                serde_json::to_string_pretty(&list).map_err(|e| LabCtlError::state(&path, e))?;
            std::fs::write(&path, text).map_err(|e| LabCtlError::state(&path, e))?;
            let name = format!("{}-felix", self.plan.nodes[i].name);
            let felix = Felix::start_cluster(&self.lab, &self.hosts[i], &name, args)?;
            self.felixes.push(felix);
        }
        Ok(())
    }

    /// Creates every pod: its namespace, then CNI ADD through the plugin against its node's
    /// felix.
    pub fn create_pods(&mut self) -> Result<(), LabCtlError> {
        let plugin = pods::plugin_binary()?;
        for plan in self.plan.pods.clone() {
            if interrupted() {
                return Err(LabCtlError::Interrupted);
            }
            let ns = self.lab.netns(&plan.role)?;
            let sandbox = Sandbox {
                pod: &plan.name,
                container_id: &plan.container_id,
                netns: ns.name(),
            };
            let added = pods::add(&plugin, &self.conflist_path(plan.node), &sandbox)?;
            self.pods.push(Pod { plan, added, ns });
        }
        Ok(())
    }

    /// Waits until every session is Established and every felix ready.
    pub fn wait_sessions(&mut self, timeout: Duration) -> Result<Health, LabCtlError> {
        let state = self.state();
        let what = format!(
            "{} BGP sessions Established and every felix ready",
            self.plan.session_count()
        );
        wait_healthy(&what, &state, timeout, |_| Ok(()))
    }

    /// Waits until every session is Established, every pod's address is routed at every
    /// other node and the ToR, and every pod answers a ping from every other pod and the ToR;
    /// on timeout the error lists what is still missing (the daemons' logs stay in the lab
    /// directory, which `up` keeps after a failure).
    pub fn wait_converged(&mut self, timeout: Duration) -> Result<Health, LabCtlError> {
        let state = self.state();
        let what = format!(
            "{} BGP sessions, routes to {} pods everywhere, every ping answered",
            self.plan.session_count(),
            state.pods.len()
        );
        wait_healthy(&what, &state, timeout, |_| {
            let failed: Vec<String> = ping::matrix(&state, 1)
                .into_iter()
                .filter(|r| !r.reached())
                .map(|r| format!("ping {} -> {} ({}) got no reply", r.from, r.to, r.dst))
                .collect();
            if failed.is_empty() {
                Ok(())
            } else {
                Err(failed)
            }
        })
    }

    /// Every pod: its name, node, namespace and address.
    pub fn pods(&self) -> Vec<PodState> {
        self.pods
            .iter()
            .map(|p| PodState {
                name: p.plan.name.clone(),
                node: self.plan.nodes[p.plan.node].name.clone(),
                netns: p.ns.name().to_string(),
                container_id: p.plan.container_id.clone(),
                ip: p.added.ip,
                ip6: p.added.ip6,
                interface: p.added.interface.clone(),
            })
            .chain(self.calico.iter().flat_map(|c| {
                c.pods.iter().map(|p| PodState {
                    name: p.keys.name.clone(),
                    node: c.name.clone(),
                    netns: p.ns.name().to_string(),
                    container_id: p.keys.container.clone(),
                    ip: std::net::IpAddr::V4(p.keys.ip),
                    ip6: p.keys.ip6,
                    interface: p.keys.interface.clone(),
                })
            }))
            .collect()
    }

    /// Pings `dst` `count` times from the namespace of pod `pod` (by name).
    pub fn ping(&self, pod: &str, dst: IpAddr, count: u32) -> Result<PingResult, LabCtlError> {
        let p = self
            .pods
            .iter()
            .find(|p| p.plan.name == pod)
            .ok_or_else(|| LabCtlError::Usage(format!("no pod {pod}")))?;
        let pair = (
            pod.to_string(),
            p.ns.name().to_string(),
            dst.to_string(),
            dst,
        );
        Ok(ping::run(&[pair], count).remove(0))
    }

    /// Keeps the previous run's logs of process `name` (`NAME.stdout` → `NAME.N.stdout`)
    /// before it starts again.
    fn rotate_logs(&mut self, name: &str) {
        let n = match self.restarts.iter_mut().find(|(p, _)| p == name) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                self.restarts.push((name.to_string(), 1));
                1
            }
        };
        for kind in ["stdout", "stderr"] {
            let from = self.lab.dir().join(format!("{name}.{kind}"));
            let to = self.lab.dir().join(format!("{name}.{n}.{kind}"));
            let _ = std::fs::rename(from, to);
        }
    }

    /// Stops node `i`'s (0-based) margay-bgpd as `stop` says and starts it again with the same
    /// command line; returns once it answers on its socket.
    pub fn restart_bgpd(&mut self, i: usize, stop: Stop) -> Result<(), LabCtlError> {
        let bgpd = self
            .bgpds
            .get_mut(i)
            .ok_or_else(|| LabCtlError::Usage(format!("no node {i}")))?;
        match stop {
            Stop::Graceful => bgpd.stop(),
            Stop::Kill => {
                // SAFETY: kill(2) on the PID of our own child, which `stop` below reaps.
                unsafe { libc::kill(bgpd.pid() as i32, libc::SIGKILL) };
                bgpd.stop();
            }
            Stop::Cease => bgpd.stop_with_cease(),
        }
        let name = bgpd.name().to_string();
        self.rotate_logs(&name);
        let args = self.bgpd_args(i)?;
        self.bgpds[i] = Bgpd::start_cluster(&self.lab, &self.hosts[i], &name, args)?;
        Ok(())
    }

    /// Stops the ToR's BIRD as `stop` says and starts it again; returns once birdc answers.
    /// [`Stop::Graceful`] and [`Stop::Kill`] both kill it (no NOTIFICATION; its kernel routes
    /// stay) and start it with `-R`, graceful restart recovery, as calico-node runs BIRD.
    pub fn restart_tor(&mut self, stop: Stop) -> Result<(), LabCtlError> {
        let mut bird = self
            .tor
            .take()
            .ok_or_else(|| LabCtlError::Usage("the ToR is not running".into()))?;
        match stop {
            Stop::Graceful | Stop::Kill => bird.kill(),
            Stop::Cease => bird.stop(),
        }
        drop(bird);
        let name = self.plan.tor.name.clone();
        self.rotate_logs(&name);
        let ns = &self.hosts[self.plan.nodes.len()];
        let config = self.plan.tor_config();
        self.tor = Some(match stop {
            Stop::Graceful | Stop::Kill => Bird::start_recovering(&self.lab, ns, &name, config)?,
            Stop::Cease => Bird::start(&self.lab, ns, &name, config)?,
        });
        Ok(())
    }

    /// Stops node `i`'s (0-based) margay-felix as `stop` says and starts it again; returns
    /// once it is ready.
    pub fn restart_felix(&mut self, i: usize, stop: Stop) -> Result<(), LabCtlError> {
        let felix = self
            .felixes
            .get_mut(i)
            .ok_or_else(|| LabCtlError::Usage(format!("no node {i}")))?;
        if stop == Stop::Kill {
            // SAFETY: kill(2) on the PID of our own child, which `stop` below reaps.
            unsafe { libc::kill(felix.pid() as i32, libc::SIGKILL) };
        }
        felix.stop();
        let name = format!("{}-felix", self.plan.nodes[i].name);
        self.rotate_logs(&name);
        let args = self.felix_args(i)?;
        self.felixes[i] = Felix::start_cluster(&self.lab, &self.hosts[i], &name, args)?;
        Ok(())
    }

    /// What the lab is, for the report and the state file.
    pub fn state(&mut self) -> LabState {
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let dir = self.lab.dir().to_path_buf();
        let nodes = self
            .plan
            .nodes
            .iter()
            .enumerate()
            .map(|(i, plan)| NodeState {
                name: plan.name.clone(),
                netns: self.hosts[i].name().to_string(),
                rack: Plan::rack_name(plan.rack),
                pid: self.bgpds.get(i).map(Bgpd::pid).unwrap_or(0),
                socket: dir.join(format!("{}-bgpd.sock", plan.name)),
                felix_pid: self.felixes.get(i).map(Felix::pid).unwrap_or(0),
                felix_socket: dir.join(format!("{}-felix.sock", plan.name)),
                conflist: self.conflist_path(i),
                address4: plan.addrs.ip4(),
                address6: self.plan.spec.ip_family.has_v6().then(|| plan.addrs.ip6()),
                address_b: plan.addrs_b.as_ref().map(Addrs::ip4),
                asn: NODE_AS,
                peers: self.plan.expected_peers(plan),
                reflector: self.plan.is_reflector(plan),
            })
            .collect();
        let etcd = match &mut self.etcd {
            Some(e) => EtcdState {
                netns: e.netns().name().to_string(),
                pid: e.process().pid(),
                endpoint: e.endpoint(),
                data_dir: e.data_dir().to_path_buf(),
                proxies: self
                    .proxies
                    .iter()
                    .map(|p| EtcdProxyState {
                        pid: p.pid(),
                        endpoint: p.endpoint(),
                    })
                    .collect(),
            },
            None => EtcdState {
                netns: self.lab.name("etcd").unwrap_or_default(),
                pid: 0,
                endpoint: String::new(),
                data_dir: dir.join("etcd.data"),
                proxies: Vec::new(),
            },
        };
        let tor_config = self.plan.tor_config();
        LabState {
            tag: self.lab.tag().to_string(),
            dir: dir.clone(),
            mode: self.plan.spec.mode,
            pool_mode: self.plan.spec.pool_mode,
            ip_family: self.plan.spec.ip_family,
            switches: self.switch_names(),
            subnets: self.plan.racks.iter().map(|s| s.v4).collect(),
            etcd,
            nodes,
            no_bgp: self.plan.spec.no_bgp,
            pods: self.pods(),
            plane_b: self.plan.plane_b.map(|s| s.v4),
            tor2: match (&self.plan.tor2, self.plan.tor2_config()) {
                (Some(t2), Some(config)) => Some(TorState {
                    name: t2.name.clone(),
                    netns: self.hosts[self.plan.nodes.len() + 1].name().to_string(),
                    pid: self.tor2.as_mut().map(|b| b.process().pid()).unwrap_or(0),
                    socket: self
                        .tor2
                        .as_ref()
                        .map(|b| b.socket().to_path_buf())
                        .unwrap_or_default(),
                    addresses6: Vec::new(),
                    config: dir.join(format!("{}.conf", t2.name)),
                    addresses: t2.addrs.iter().map(|a| a.ip4()).collect(),
                    asn: TOR2_AS,
                    protocols: config.neighbors.iter().map(|n| n.name.clone()).collect(),
                }),
                _ => None,
            },
            tor: TorState {
                name: self.plan.tor.name.clone(),
                netns: self.hosts[self.plan.nodes.len()].name().to_string(),
                pid: self.tor.as_mut().map(|b| b.process().pid()).unwrap_or(0),
                socket: self
                    .tor
                    .as_ref()
                    .map(|b| b.socket().to_path_buf())
                    .unwrap_or_default(),
                config: dir.join(format!("{}.conf", self.plan.tor.name)),
                addresses: self.plan.tor.addrs.iter().map(|a| a.ip4()).collect(),
                addresses6: if self.plan.spec.ip_family.has_v6() {
                    self.plan.tor.addrs.iter().map(|a| a.ip6()).collect()
                } else {
                    Vec::new()
                },
                asn: TOR_AS,
                // The listen ranges only spawn sessions; a joined node adds its own. Without
                // BGP the ToR runs no BIRD.
                protocols: tor_config
                    .neighbors
                    .iter()
                    .filter(|n| n.range.is_none() && !self.plan.spec.no_bgp)
                    .map(|n| n.name.clone())
                    .collect(),
            },
            migrated: Vec::new(),
            created,
            calico: self
                .calico
                .iter()
                .map(|c| CalicoNodeState {
                    name: c.name.clone(),
                    netns: c.ns.name().to_string(),
                    pid: c.bird().map(|b| b.pid()).unwrap_or(0),
                    socket: c
                        .bird()
                        .map(|b| b.socket().to_path_buf())
                        .unwrap_or_default(),
                    config: dir.join(format!("bird-{}.conf", c.name)),
                    address4: c.addrs.ip4(),
                    pid6: c.bird6().map(|b| b.pid()).unwrap_or(0),
                    address6: c.keys.v6.map(|(a, _)| a.addr()),
                    block: c.keys.block,
                    protocols: self
                        .plan
                        .nodes
                        .iter()
                        .map(|n| n.addrs.ip4())
                        .chain(self.plan.calico.iter().map(|o| o.addrs.ip4()))
                        .filter(|a| *a != c.addrs.ip4())
                        .map(|a| format!("Mesh_{}", a.to_string().replace('.', "_")))
                        .chain([format!(
                            "Global_{}",
                            self.plan.tor.addrs[0].ip4().to_string().replace('.', "_")
                        )])
                        .collect(),
                })
                .collect(),
            simulated: self.fleet.as_ref().map(Fleet::state),
        }
    }

    /// Writes what the lab is so far to the state file at `path` (`up` does after every step).
    pub fn record(&mut self, path: &Path) -> Result<(), LabCtlError> {
        self.state().save(path)
    }

    /// Records the lab in the state file at `path`, then lets every namespace, daemon and the
    /// directory outlive this process.
    pub fn into_kept(mut self, path: &Path) -> Result<LabState, LabCtlError> {
        let state = self.state();
        // Written first: if it fails, the guards still remove everything.
        state.save(path)?;
        let Cluster {
            pods,
            felixes,
            bgpds,
            tor,
            calico,
            tor2,
            fleet,
            proxies,
            etcd,
            hosts,
            switches,
            lab,
            ..
        } = self;
        if let Some(f) = fleet {
            f.into_kept();
        }
        for p in proxies {
            p.into_kept();
        }
        for p in pods {
            p.ns.into_kept();
        }
        for c in calico {
            c.into_kept();
        }
        for f in felixes {
            f.into_kept();
        }
        for b in bgpds {
            b.into_kept();
        }
        for bird in tor.into_iter().chain(tor2) {
            bird.into_kept();
        }
        if let Some(e) = etcd {
            e.into_kept();
        }
        for ns in hosts {
            ns.into_kept();
        }
        for sw in switches {
            sw.into_kept();
        }
        lab.into_kept();
        Ok(state)
    }

    /// Stops every daemon and removes every namespace and the directory.
    pub fn teardown(self) {
        drop(self);
    }

    /// Removes everything but the directory, so its logs can be read after a failure; returns
    /// the directory.
    pub fn teardown_keeping_logs(self) -> PathBuf {
        let Cluster {
            pods,
            felixes,
            bgpds,
            tor,
            calico,
            tor2,
            fleet,
            proxies,
            etcd,
            hosts,
            switches,
            lab,
            ..
        } = self;
        drop(fleet);
        drop(proxies);
        drop(pods);
        drop(felixes);
        drop(bgpds);
        drop(tor);
        drop(calico);
        drop(tor2);
        drop(etcd);
        drop(hosts);
        drop(switches);
        lab.into_kept()
    }
}

/// Fails unless `host` got the address the plan gave it.
fn check_address(host: &Netns, got: Ipv4Addr, want: Ipv4Addr) -> Result<(), LabCtlError> {
    if got == want {
        Ok(())
    } else {
        Err(LabCtlError::Usage(format!(
            "{} got {got} on the switch, the plan says {want}",
            host.name()
        )))
    }
}

/// Polls [`health::check`] plus `more` (further problems, one line each) until both find
/// nothing missing.
fn wait_healthy(
    what: &str,
    state: &LabState,
    timeout: Duration,
    mut more: impl FnMut(&Health) -> Result<(), Vec<String>>,
) -> Result<Health, LabCtlError> {
    let h = wait_for(what, timeout, &[], || {
        if interrupted() {
            return Ok(None);
        }
        match health::check(state) {
            Ok(h) if h.converged() => match more(&h) {
                Ok(()) => Ok(Some(h)),
                Err(problems) => Err(problems.join("\n  ")),
            },
            Ok(h) => Err(h.problems.join("\n  ")),
            Err(e) => Err(e.to_string()),
        }
    })?;
    h.ok_or(LabCtlError::Interrupted)
}
