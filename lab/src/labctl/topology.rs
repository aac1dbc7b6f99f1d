//! The lab's plan, computed before anything is created: which hosts sit on which switch, their
//! addresses, the pods, the cluster model applied through `margayctl apply`, and the ToR's BIRD
//! configuration. Pure: no namespace, no process.
//!
//! One switch ("rack a") carries every node, the ToR and etcd; with `--pool-mode cross-subnet`
//! the second half of the nodes sits on a second switch ("rack b") and the ToR routes between
//! the two. On each switch the nodes attach first, then the ToR, then (rack a) etcd, so host
//! numbers are known in advance. Nodes are in AS 64512 (Calico's default), the ToR in AS 65000.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;

use serde::{Deserialize, Serialize};

use super::LabCtlError;
use crate::bird::{BirdConfig, BirdNeighbor, ExportPolicy};
use crate::lab::{Addrs, Subnet};

/// The AS of every node.
pub const NODE_AS: u32 = 64512;
/// The AS of the top-of-rack router.
pub const TOR_AS: u32 = 65000;
/// The cluster id of the reflector in route-reflector mode (Calico's documented example).
pub const CLUSTER_ID: Ipv4Addr = Ipv4Addr::new(244, 0, 0, 1);
/// Most nodes one lab runs (a switch is a /24 that also holds the ToR and etcd).
pub const MAX_NODES: usize = 100;
/// The pod network (Calico's default pool is 192.168.0.0/16; ours stays in 10.100/16, the
/// lab's private range).
pub const POOL_CIDR: &str = "10.100.0.0/16";
/// Pods per node.
pub const PODS_PER_NODE: usize = 2;
/// The ToR's listen-range protocol of a rack: `joiners_` + the rack's letter.
pub const JOIN_RANGE_PREFIX: &str = "joiners_";
/// The sessions a listen range spawns: `joined_` + rack letter + a number (`joined_a1`).
pub const JOINED_PREFIX: &str = "joined_";
/// The BGPPeer that peers every node with the nodes labelled `route-reflector: "true"`.
pub const REFLECTOR_PEER_YAML: &str = "apiVersion: projectcalico.org/v3\nkind: BGPPeer\n\
     metadata:\n  name: peer-with-route-reflectors\nspec:\n  nodeSelector: all()\n  \
     peerSelector: route-reflector == 'true'\n";
/// The label that names a node's rack (its switch), for the ToR's BGPPeers.
pub const RACK_LABEL: &str = "margay-lab/rack";
/// What the ToR announces to the nodes (TEST-NET-2), as a fabric announces its own routes:
/// the nodes learn it and, by Calico's export policy, pass it on to no one.
pub const TOR_PREFIX: &str = "198.51.100.0/24";
/// The BGPFilter on the ToR's BGPPeers: import only [`TOR_PREFIX`], export the pool.
pub const TOR_FILTER: &str = "tor";
/// The community every route inside the pool carries (BGPConfiguration
/// `prefixAdvertisements`).
pub const POOL_COMMUNITY: &str = "64512:100";

/// How the nodes peer with each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Every node peers with every other node (iBGP full mesh).
    Mesh,
    /// Node 1 reflects (RFC 4456) for the others, its clients; clients do not peer.
    RouteReflectors,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Mesh => "mesh",
            Mode::RouteReflectors => "route-reflectors",
        })
    }
}

/// How pod traffic between nodes travels: the IPPool's `ipipMode` / `vxlanMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PoolMode {
    /// Plain routing: `via <node IP>` (both modes Never).
    Never,
    /// `vxlanMode: Always`.
    Vxlan,
    /// `ipipMode: Always` (needs the kernel's ipip module).
    Ipip,
    /// `vxlanMode: CrossSubnet`: direct within a rack, VXLAN between the two racks.
    CrossSubnet,
}

impl PoolMode {
    /// The IPPool's `(ipipMode, vxlanMode)`.
    pub fn encapsulation(self) -> (&'static str, &'static str) {
        match self {
            PoolMode::Never => ("Never", "Never"),
            PoolMode::Vxlan => ("Never", "Always"),
            PoolMode::Ipip => ("Always", "Never"),
            PoolMode::CrossSubnet => ("Never", "CrossSubnet"),
        }
    }

    /// The pods' MTU: the switch's 1500 less the encapsulation's overhead.
    pub fn mtu(self) -> u32 {
        match self {
            PoolMode::Never => 1500,
            PoolMode::Ipip => 1480,
            PoolMode::Vxlan | PoolMode::CrossSubnet => 1450,
        }
    }

    /// How many switches (racks) the lab has.
    pub fn racks(self) -> usize {
        if self == PoolMode::CrossSubnet { 2 } else { 1 }
    }
}

impl std::fmt::Display for PoolMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PoolMode::Never => "never",
            PoolMode::Vxlan => "vxlan",
            PoolMode::Ipip => "ipip",
            PoolMode::CrossSubnet => "cross-subnet",
        })
    }
}

/// What the operator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub nodes: usize,
    pub mode: Mode,
    pub pool_mode: PoolMode,
    /// Calico's `vxlan` networking backend: no margay-bgpd and no BGP with the ToR; felix
    /// routes the VXLAN pool's blocks from IPAM.
    pub no_bgp: bool,
}

impl Spec {
    /// Checks the node count (cross-subnet needs a node in each rack).
    pub fn validate(&self) -> Result<(), LabCtlError> {
        if self.nodes == 0 || self.nodes > MAX_NODES {
            return Err(LabCtlError::Usage(format!(
                "--nodes must be between 1 and {MAX_NODES}, not {}",
                self.nodes
            )));
        }
        if self.no_bgp && !matches!(self.pool_mode, PoolMode::Vxlan | PoolMode::CrossSubnet) {
            return Err(LabCtlError::Usage(
                "--no-bgp routes only VXLAN pools: use --pool-mode vxlan (or cross-subnet)".into(),
            ));
        }
        if self.pool_mode == PoolMode::CrossSubnet && self.nodes < 2 {
            return Err(LabCtlError::Usage(
                "--pool-mode cross-subnet needs at least 2 nodes (one per rack)".into(),
            ));
        }
        Ok(())
    }
}

/// One node of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePlan {
    /// 1-based.
    pub index: usize,
    /// `node1`, ...: the Node resource's name.
    pub name: String,
    /// The namespace role (`n1`): the namespace is `mg` + tag + role.
    pub role: String,
    /// Its rack (switch), 0 or 1.
    pub rack: usize,
    /// Its address on its rack's switch.
    pub addrs: Addrs,
}

/// One pod of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPlan {
    /// The Kubernetes pod name (`web-1-2`: node 1's second pod), in namespace `default`.
    pub name: String,
    /// The namespace role (`n1p2`).
    pub role: String,
    /// Index into [`Plan::nodes`] of the node it runs on.
    pub node: usize,
    /// The container id the runtime passes (`CNI_CONTAINERID`).
    pub container_id: String,
}

/// The top-of-rack router: one address per rack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TorPlan {
    pub name: String,
    pub role: String,
    pub addrs: Vec<Addrs>,
}

/// The whole lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub spec: Spec,
    /// One subnet per rack.
    pub racks: Vec<Subnet>,
    pub nodes: Vec<NodePlan>,
    pub pods: Vec<PodPlan>,
    pub tor: TorPlan,
    /// etcd's address on rack a.
    pub etcd: Addrs,
}

impl Plan {
    /// The plan for `spec` on the rack subnets `racks` (one per [`PoolMode::racks`]).
    pub fn new(spec: Spec, racks: Vec<Subnet>) -> Plan {
        // Rack a holds the first half (rounded up) of the nodes when there are two racks.
        let in_a = if racks.len() > 1 {
            spec.nodes.div_ceil(2)
        } else {
            spec.nodes
        };
        let mut next_host = vec![1u8; racks.len()];
        let mut nodes = Vec::with_capacity(spec.nodes);
        for k in 1..=spec.nodes {
            let rack = usize::from(k > in_a);
            let addrs = racks[rack].host(next_host[rack]);
            next_host[rack] += 1;
            nodes.push(NodePlan {
                index: k,
                name: format!("node{k}"),
                role: format!("n{k}"),
                rack,
                addrs,
            });
        }
        let tor_addrs: Vec<Addrs> = racks
            .iter()
            .zip(&mut next_host)
            .map(|(subnet, h)| {
                let a = subnet.host(*h);
                *h += 1;
                a
            })
            .collect();
        let etcd = racks[0].host(next_host[0]);
        let pods = nodes
            .iter()
            .enumerate()
            .flat_map(|(i, n)| {
                (1..=PODS_PER_NODE).map(move |j| PodPlan {
                    name: format!("web-{}-{j}", n.index),
                    role: format!("{}p{j}", n.role),
                    node: i,
                    container_id: format!("lab{:0>6}{j:0>2}", n.index),
                })
            })
            .collect();
        Plan {
            spec,
            racks,
            nodes,
            pods,
            tor: TorPlan {
                name: "tor".into(),
                role: "tor".into(),
                addrs: tor_addrs,
            },
            etcd,
        }
    }

    /// Whether `node` reflects routes for the others.
    pub fn is_reflector(&self, node: &NodePlan) -> bool {
        self.spec.mode == Mode::RouteReflectors && node.index == 1
    }

    /// The rack's name in labels and messages (`a`, `b`).
    pub fn rack_name(rack: usize) -> char {
        char::from(b'a' + rack as u8)
    }

    /// The ToR's address on `node`'s rack: the node's BGP peer and default gateway.
    pub fn tor_for(&self, node: &NodePlan) -> Ipv4Addr {
        self.tor.addrs[node.rack].ip4()
    }

    /// Every peer address `node`'s margay-bgpd should have a session with.
    pub fn expected_peers(&self, node: &NodePlan) -> Vec<IpAddr> {
        if self.spec.no_bgp {
            return Vec::new();
        }
        let mut v: Vec<IpAddr> = self
            .nodes
            .iter()
            .filter(|o| o.index != node.index)
            .filter(|o| match self.spec.mode {
                Mode::Mesh => true,
                Mode::RouteReflectors => self.is_reflector(node) || self.is_reflector(o),
            })
            .map(|o| IpAddr::V4(o.addrs.ip4()))
            .collect();
        v.push(IpAddr::V4(self.tor_for(node)));
        v
    }

    /// The cluster model, as `margayctl apply` takes it: the IPPool, BGPConfiguration (with the
    /// pool's community), the ToR's BGPFilter and BGPPeer(s), and in route-reflector mode the BGPPeer that makes every node peer
    /// with the reflectors. Applied before any daemon starts.
    pub fn model_yaml(&self) -> String {
        let (ipip, vxlan) = self.spec.pool_mode.encapsulation();
        let mut docs = vec![
            format!(
                "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: \
                 default-ipv4-ippool\nspec:\n  cidr: {POOL_CIDR}\n  blockSize: 26\n  ipipMode: \
                 {ipip}\n  vxlanMode: {vxlan}\n  natOutgoing: false\n  nodeSelector: all()\n"
            ),
            format!(
                "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: \
                 default\nspec:\n  asNumber: {NODE_AS}\n  nodeToNodeMeshEnabled: {}\n  \
                 logSeverityScreen: Info\n  communities:\n  - name: pods\n    value: \
                 '{POOL_COMMUNITY}'\n  prefixAdvertisements:\n  - cidr: {POOL_CIDR}\n    \
                 communities: [pods]\n",
                self.spec.mode == Mode::Mesh
            ),
            format!(
                "apiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata:\n  name: \
                 {TOR_FILTER}\nspec:\n  importV4:\n  - action: Accept\n    matchOperator: Equal\n    \
                 cidr: {TOR_PREFIX}\n  - action: Reject\n  exportV4:\n  - action: Accept\n    \
                 matchOperator: In\n    cidr: {POOL_CIDR}\n"
            ),
        ];
        if self.racks.len() == 1 {
            docs.push(format!(
                "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor\nspec:\n  \
                 peerIP: {}\n  asNumber: {TOR_AS}\n  filters: [{TOR_FILTER}]\n",
                self.tor.addrs[0].ip4()
            ));
        } else {
            for (rack, addrs) in self.tor.addrs.iter().enumerate() {
                let r = Plan::rack_name(rack);
                docs.push(format!(
                    "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: \
                     tor-rack-{r}\nspec:\n  nodeSelector: {RACK_LABEL} == '{r}'\n  peerIP: {}\n  \
                     asNumber: {TOR_AS}\n  filters: [{TOR_FILTER}]\n",
                    addrs.ip4()
                ));
            }
        }
        if self.spec.mode == Mode::RouteReflectors {
            docs.push(REFLECTOR_PEER_YAML.to_string());
        }
        docs.join("---\n")
    }

    /// `node`'s Node resource as the lab applies it over the one margay-bgpd wrote: the same
    /// address and AS, its rack label, and on the reflector its cluster id and label.
    pub fn node_yaml(&self, node: &NodePlan) -> String {
        let mut labels = format!("    {RACK_LABEL}: {}\n", Plan::rack_name(node.rack));
        let mut rr = String::new();
        if self.is_reflector(node) {
            labels.push_str("    route-reflector: \"true\"\n");
            rr = format!("    routeReflectorClusterID: {CLUSTER_ID}\n");
        }
        format!(
            "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: {}\n  labels:\n\
             {labels}spec:\n  bgp:\n    ipv4Address: {}\n    asNumber: {NODE_AS}\n{rr}",
            node.name, node.addrs.v4
        )
    }

    /// The ToR's BIRD configuration: one eBGP session per node, announcing only [`TOR_PREFIX`], with the
    /// learned routes in its kernel so it forwards to the pods (and between racks). Graceful
    /// restart is on, as in calico-node's BIRD: the ToR keeps a restarting node's routes, and
    /// a ToR restarted with `bird -R` keeps forwarding on the kernel routes it left behind.
    /// Besides, a BGP listen range per rack (BIRD 2's dynamic BGP, `neighbor range`), as a
    /// fabric takes the nodes an autoscaler adds: a node that joins later (`margay-lab node
    /// add`) gets a session `joined_<rack>N` without any change to the ToR.
    pub fn tor_config(&self) -> BirdConfig {
        let tor_prefix = TOR_PREFIX.parse().expect("TOR_PREFIX is a CIDR");
        let mut c = BirdConfig::new(self.tor.addrs[0].ip4())
            .program_kernel()
            .kernel_graceful_restart()
            .originate(tor_prefix);
        for node in &self.nodes {
            c = c.neighbor(
                BirdNeighbor::new(&node.name, IpAddr::V4(node.addrs.ip4()), TOR_AS, NODE_AS)
                    .export(ExportPolicy::Static)
                    .graceful_restart(None),
            );
        }
        for (rack, subnet) in self.racks.iter().enumerate() {
            let r = Plan::rack_name(rack);
            c = c.neighbor(
                BirdNeighbor::listen_range(
                    &format!("{JOIN_RANGE_PREFIX}{r}"),
                    IpNet::V4(subnet.v4),
                    &format!("{JOINED_PREFIX}{r}"),
                    TOR_AS,
                    NODE_AS,
                )
                .export(ExportPolicy::Static)
                .graceful_restart(None),
            );
        }
        c
    }

    /// How many BGP sessions the lab has (each counted once).
    pub fn session_count(&self) -> usize {
        if self.spec.no_bgp {
            return 0;
        }
        let n = self.nodes.len();
        let among_nodes = match self.spec.mode {
            Mode::Mesh => n * (n - 1) / 2,
            Mode::RouteReflectors => n - 1,
        };
        among_nodes + n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet(n: u8) -> Subnet {
        Subnet {
            v4: format!("10.99.{n}.0/24").parse().unwrap(),
            v6: format!("fd00:99:{n}::/64").parse().unwrap(),
        }
    }

    fn plan(nodes: usize, mode: Mode, pool_mode: PoolMode) -> Plan {
        let racks = (0..pool_mode.racks())
            .map(|r| subnet(7 + r as u8))
            .collect();
        Plan::new(
            Spec {
                nodes,
                mode,
                pool_mode,
                no_bgp: false,
            },
            racks,
        )
    }

    fn ips(v: &[IpAddr]) -> Vec<String> {
        v.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn mesh_node_expects_every_other_node_and_the_tor_and_hosts_attach_in_order() {
        let p = plan(3, Mode::Mesh, PoolMode::Never);
        assert_eq!(
            ips(&p.expected_peers(&p.nodes[1])),
            ["10.99.7.1", "10.99.7.3", "10.99.7.4"]
        );
        assert_eq!(p.etcd.ip4().to_string(), "10.99.7.5");
        assert_eq!(p.session_count(), 3 + 3);
        assert_eq!(p.pods.len(), 6);
        assert_eq!(p.pods[3].name, "web-2-2");
        assert_eq!(p.pods[3].role, "n2p2");
        assert_eq!(p.pods[3].node, 1);
        let model = p.model_yaml();
        assert!(model.contains("nodeToNodeMeshEnabled: true"), "{model}");
        assert!(
            model.contains("peerIP: 10.99.7.4\n  asNumber: 65000"),
            "{model}"
        );
        assert!(
            model.contains("ipipMode: Never\n  vxlanMode: Never"),
            "{model}"
        );
        assert!(!model.contains("peerSelector"), "{model}");
    }

    #[test]
    fn reflector_expects_every_client_and_clients_only_the_reflector_and_tor() {
        let p = plan(4, Mode::RouteReflectors, PoolMode::Vxlan);
        assert_eq!(
            ips(&p.expected_peers(&p.nodes[0])),
            ["10.99.7.2", "10.99.7.3", "10.99.7.4", "10.99.7.5"]
        );
        assert_eq!(
            ips(&p.expected_peers(&p.nodes[2])),
            ["10.99.7.1", "10.99.7.5"]
        );
        assert_eq!(p.session_count(), 3 + 4);
        let model = p.model_yaml();
        assert!(model.contains("nodeToNodeMeshEnabled: false"), "{model}");
        assert!(
            model.contains("peerSelector: route-reflector == 'true'"),
            "{model}"
        );
        assert!(model.contains("vxlanMode: Always"), "{model}");
        let rr = p.node_yaml(&p.nodes[0]);
        assert!(rr.contains("routeReflectorClusterID: 244.0.0.1"), "{rr}");
        assert!(rr.contains("ipv4Address: 10.99.7.1/24"), "{rr}");
        assert!(!p.node_yaml(&p.nodes[1]).contains("route-reflector"));
    }

    #[test]
    fn cross_subnet_splits_nodes_over_two_racks_with_a_tor_peer_per_rack() {
        let p = plan(3, Mode::Mesh, PoolMode::CrossSubnet);
        let racks: Vec<usize> = p.nodes.iter().map(|n| n.rack).collect();
        assert_eq!(racks, [0, 0, 1]);
        assert_eq!(p.nodes[2].addrs.ip4().to_string(), "10.99.8.1");
        assert_eq!(p.tor_for(&p.nodes[2]).to_string(), "10.99.8.2");
        assert_eq!(p.tor_for(&p.nodes[0]).to_string(), "10.99.7.3");
        assert_eq!(p.etcd.ip4().to_string(), "10.99.7.4");
        let model = p.model_yaml();
        assert!(model.contains("vxlanMode: CrossSubnet"), "{model}");
        assert!(
            model.contains("name: tor-rack-b\nspec:\n  nodeSelector: margay-lab/rack == 'b'\n  peerIP: 10.99.8.2"),
            "{model}"
        );
        assert!(p.node_yaml(&p.nodes[2]).contains("margay-lab/rack: b"));
        let conf = p.tor_config().render();
        assert!(conf.contains("neighbor 10.99.8.1 as 64512;"), "{conf}");
        assert!(conf.contains("protocol kernel kernel4"), "{conf}");
    }

    #[test]
    fn rejects_zero_and_too_many_nodes_and_a_lone_cross_subnet_node() {
        for (nodes, pool_mode) in [
            (0, PoolMode::Never),
            (MAX_NODES + 1, PoolMode::Never),
            (1, PoolMode::CrossSubnet),
        ] {
            let spec = Spec {
                nodes,
                mode: Mode::Mesh,
                pool_mode,
                no_bgp: false,
            };
            assert!(spec.validate().is_err(), "{nodes} {pool_mode}");
        }
    }
}
