//! The lab's plan, computed before anything is created: which hosts sit on which switch, their
//! addresses, the pods, the cluster model applied through `margayctl apply`, and the ToR's BIRD
//! configuration. Pure: no namespace, no process.
//!
//! One switch ("rack a") carries every node, the ToR and etcd; with `--pool-mode cross-subnet`
//! the second half of the nodes sits on a second switch ("rack b") and the ToR routes between
//! the two. On each switch the nodes attach first, then the ToR, then (rack a) etcd, so host
//! numbers are known in advance. Nodes are in AS 64512 (Calico's default), the ToR in AS 65000.
//!
//! With `--tors 2` every node is dual-homed: a second switch ("plane b") carries every node and a
//! second BIRD ToR (AS 65001), each node on its own link to each ToR. The mesh is off: each
//! node peers with both ToRs only (eBGP, BFD at 3 × 100 ms, `margay.io/v1` BGPPeers), the ToRs
//! pass every node's blocks to the others with themselves as next hop, and a node holds each
//! remote block over both ToRs as one multipath route. `numAllowedLocalASNumbers: 1` lets a
//! node accept its own AS in the paths (every node is in AS 64512), as Calico operators do for
//! an AS-per-rack fabric.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use serde::{Deserialize, Serialize};

use super::LabCtlError;
use crate::bird::{BirdConfig, BirdNeighbor, ExportPolicy};
use crate::lab::{Addrs, Subnet};

/// The AS of every node.
pub const NODE_AS: u32 = 64512;
/// The AS of the top-of-rack router.
pub const TOR_AS: u32 = 65000;
/// The AS of the second ToR (`--tors 2`).
pub const TOR2_AS: u32 = 65001;
/// BFD on the ToR sessions with `--tors 2`: desired min TX and required min RX (ms), detect
/// multiplier.
pub const TOR_BFD: (u32, u32, u8) = (100, 100, 3);
/// The cluster id of the reflector in route-reflector mode (Calico's documented example).
pub const CLUSTER_ID: Ipv4Addr = Ipv4Addr::new(244, 0, 0, 1);
/// Most nodes one lab runs (a switch is a /24 that also holds the ToR and etcd).
pub const MAX_NODES: usize = 100;
/// The pod network (Calico's default pool is 192.168.0.0/16; ours stays in 10.100/16, the
/// lab's private range).
pub const POOL_CIDR: &str = "10.100.0.0/16";
/// The IPv6 pod network (`--ip-family ipv6|dual`), in /122 blocks as Calico's default.
pub const POOL6_CIDR: &str = "fd00:100::/48";
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

    /// The pods' MTU on a lab of `family`: with an IPv6 VXLAN pool, the switch's 1500 less
    /// IPv6 VXLAN's 70 (Calico's rule: the largest overhead in use).
    pub fn mtu_for(self, family: IpFamily) -> u32 {
        match self {
            PoolMode::Vxlan | PoolMode::CrossSubnet if family.has_v6() => 1430,
            _ => self.mtu(),
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

/// Which address families the pod network and BGP use (`--ip-family`). The underlay keeps
/// IPv4 for etcd in every case; with `ipv6` the Nodes carry only an IPv6 address, as on an
/// IPv6-only cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IpFamily {
    #[default]
    Ipv4,
    Ipv6,
    Dual,
}

impl IpFamily {
    pub fn has_v4(self) -> bool {
        self != IpFamily::Ipv6
    }

    pub fn has_v6(self) -> bool {
        self != IpFamily::Ipv4
    }
}

impl std::fmt::Display for IpFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IpFamily::Ipv4 => "ipv4",
            IpFamily::Ipv6 => "ipv6",
            IpFamily::Dual => "dual",
        })
    }
}

/// What the operator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub nodes: usize,
    pub mode: Mode,
    pub pool_mode: PoolMode,
    /// ToRs every node is wired to: 1, or 2 (dual-homed, ECMP over both, BFD on).
    pub tors: usize,
    /// The families of pods and BGP.
    pub ip_family: IpFamily,
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
        if self.ip_family.has_v6() && self.pool_mode == PoolMode::Ipip {
            return Err(LabCtlError::Usage(format!(
                "--ip-family {} runs with --pool-mode never, vxlan or cross-subnet: IP-in-IP is \
                 IPv4 only",
                self.ip_family
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
        if !(1..=2).contains(&self.tors) {
            return Err(LabCtlError::Usage(format!(
                "--tors must be 1 or 2, not {}",
                self.tors
            )));
        }
        if self.tors == 2 && (self.pool_mode != PoolMode::Never || self.mode != Mode::Mesh) {
            return Err(LabCtlError::Usage(
                "--tors 2 routes pods through the two ToRs: it takes --pool-mode never and the \
                 default --mode (the nodes then peer with the ToRs only)"
                    .into(),
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
    /// With `--tors 2`: its address on plane b (the second ToR's switch).
    pub addrs_b: Option<Addrs>,
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

/// A Calico node (`--calico-nodes`): calico-node's BIRD and pods, no margay daemon
/// ([`crate::calico`]). It sits on rack a after etcd, holds a block at the top of the pool and
/// peers with every node (the mesh) and the ToR, as Calico's confd would configure it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalicoPlan {
    /// 1-based.
    pub index: usize,
    /// `calico1`, ...: its Node's name.
    pub name: String,
    /// The namespace role (`c1`); its pods' are `c1p1`, ...
    pub role: String,
    pub addrs: Addrs,
    pub block: ipnet::Ipv4Net,
    /// Its IPv6 block (`--ip-family dual`), at the top of the IPv6 pool.
    pub block6: ipnet::Ipv6Net,
}

/// Most Calico nodes one lab runs.
pub const MAX_CALICO_NODES: usize = 16;

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
    /// Calico nodes, after etcd on rack a ([`Plan::add_calico_nodes`]).
    pub calico: Vec<CalicoPlan>,
    /// With `--tors 2`: the second ToR, alone on plane b with the nodes.
    pub tor2: Option<TorPlan>,
    /// With `--tors 2`: plane b's subnet.
    pub plane_b: Option<Subnet>,
}

impl Plan {
    /// The plan for `spec` on the rack subnets `racks` (one per [`PoolMode::racks`]), and with
    /// `--tors 2` a last subnet for plane b.
    pub fn new(spec: Spec, mut racks: Vec<Subnet>) -> Plan {
        let plane_b = (spec.tors == 2).then(|| racks.pop()).flatten();
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
                addrs_b: plane_b.map(|s| s.host(k as u8)),
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
            tor2: plane_b.map(|s| TorPlan {
                name: "tor2".into(),
                role: "tor2".into(),
                addrs: vec![s.host(spec.nodes as u8 + 1)],
            }),
            plane_b,
            calico: Vec::new(),
        }
    }

    /// Adds `n` Calico nodes: rack a's next addresses after etcd, blocks from
    /// 10.100.240.0/26 on (margay's IPAM hands out the pool from its start).
    pub fn add_calico_nodes(&mut self, n: usize) {
        let first = self.nodes.iter().filter(|x| x.rack == 0).count() + 2;
        for k in 1..=n {
            let host = u8::try_from(first + k).expect("at most 100 nodes and 16 Calico nodes");
            let block = ipnet::Ipv4Net::new(
                Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 100, 240, 0)) + 64 * (k as u32 - 1)),
                26,
            )
            .expect("26 is a valid length");
            let top6: std::net::Ipv6Addr = "fd00:100:ffff::".parse().expect("an IPv6 address");
            let block6 = ipnet::Ipv6Net::new(
                std::net::Ipv6Addr::from(u128::from(top6) + 64 * (k as u128 - 1)),
                122,
            )
            .expect("122 is a valid length");
            self.calico.push(CalicoPlan {
                index: k,
                name: format!("calico{k}"),
                role: format!("c{k}"),
                addrs: self.racks[0].host(host),
                block,
                block6,
            });
        }
    }

    /// Checks that Calico nodes fit the lab: a mesh on one rack without encapsulation (a
    /// Calico node learns other nodes' VXLAN endpoints from Calico's datastore only, which
    /// margay's nodes do not write).
    pub fn validate_calico(spec: &Spec, n: usize) -> Result<(), LabCtlError> {
        if n == 0 {
            return Ok(());
        }
        if n > MAX_CALICO_NODES {
            return Err(LabCtlError::Usage(format!(
                "--calico-nodes must be at most {MAX_CALICO_NODES}, not {n}"
            )));
        }
        if spec.mode != Mode::Mesh || spec.pool_mode != PoolMode::Never {
            return Err(LabCtlError::Usage(
                "--calico-nodes needs --mode mesh and --pool-mode never: Calico nodes learn \
                 VXLAN endpoints from Calico's datastore, which margay nodes do not write \
                 (tests/tests/migrate_calico.rs runs a mixed VXLAN cluster of migrated nodes)"
                    .into(),
            ));
        }
        if !spec.ip_family.has_v4() {
            return Err(LabCtlError::Usage(
                "--calico-nodes needs IPv4 (--ip-family ipv4 or dual): calico-node's BIRD takes \
                 the node's IPv4 address as its router id"
                    .into(),
            ));
        }
        Ok(())
    }

    /// How many switches the lab has: one per rack, and plane b with `--tors 2`.
    pub fn switch_count(spec: &Spec) -> usize {
        spec.pool_mode.racks() + usize::from(spec.tors == 2)
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

    /// The ToR's IPv6 address on `node`'s rack.
    pub fn tor6_for(&self, node: &NodePlan) -> Ipv6Addr {
        self.tor.addrs[node.rack].ip6()
    }

    /// Every peer address `node`'s margay-bgpd should have a session with: one session per
    /// family, as Calico runs them.
    pub fn expected_peers(&self, node: &NodePlan) -> Vec<IpAddr> {
        if self.spec.no_bgp {
            return Vec::new();
        }
        if let Some(t2) = &self.tor2 {
            return vec![
                IpAddr::V4(self.tor_for(node)),
                IpAddr::V4(t2.addrs[0].ip4()),
            ];
        }
        let others: Vec<&NodePlan> = self
            .nodes
            .iter()
            .filter(|o| o.index != node.index)
            .filter(|o| match self.spec.mode {
                Mode::Mesh => true,
                Mode::RouteReflectors => self.is_reflector(node) || self.is_reflector(o),
            })
            .collect();
        let mut v = Vec::new();
        if self.spec.ip_family.has_v4() {
            v.extend(others.iter().map(|o| IpAddr::V4(o.addrs.ip4())));
            v.extend(self.calico.iter().map(|c| IpAddr::V4(c.addrs.ip4())));
            v.push(IpAddr::V4(self.tor_for(node)));
        }
        if self.spec.ip_family.has_v6() {
            v.extend(others.iter().map(|o| IpAddr::V6(o.addrs.ip6())));
            v.push(IpAddr::V6(self.tor6_for(node)));
        }
        v
    }

    /// The cluster model, as `margayctl apply` takes it: the IPPool, BGPConfiguration (with the
    /// pool's community), the ToR's BGPFilter and BGPPeer(s), and in route-reflector mode the BGPPeer that makes every node peer
    /// with the reflectors. Applied before any daemon starts.
    pub fn model_yaml(&self) -> String {
        let (ipip, vxlan) = self.spec.pool_mode.encapsulation();
        let family = self.spec.ip_family;
        let mut docs = vec![
            format!(
                "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: \
                 default-ipv4-ippool\nspec:\n  cidr: {POOL_CIDR}\n  blockSize: 26\n  ipipMode: \
                 {ipip}\n  vxlanMode: {vxlan}\n  natOutgoing: false\n  nodeSelector: all()\n  \
                 disabled: {}\n",
                !family.has_v4()
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
                 matchOperator: In\n    cidr: {POOL_CIDR}\n  importV6:\n  - action: Reject\n  \
                 exportV6:\n  - action: Accept\n    matchOperator: In\n    cidr: {POOL6_CIDR}\n"
            ),
        ];
        if family.has_v6() {
            docs.push(format!(
                "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: \
                 default-ipv6-ippool\nspec:\n  cidr: '{POOL6_CIDR}'\n  blockSize: 122\n  \
                 ipipMode: Never\n  vxlanMode: {vxlan}\n  natOutgoing: false\n  nodeSelector: all()\n"
            ));
        }
        // One BGPPeer per family the lab runs (the IPv6 one named `...-v6`).
        let tor_ips = |a: &Addrs| {
            let mut v = Vec::new();
            if family.has_v4() {
                v.push((String::new(), IpAddr::V4(a.ip4())));
            }
            if family.has_v6() {
                v.push(("-v6".to_string(), IpAddr::V6(a.ip6())));
            }
            v
        };
        if let Some(t2) = &self.tor2 {
            // Dual-homed: the mesh is off, each node peers with both ToRs (BFD on, its own AS
            // allowed once in the paths), and the filter also imports the pool: the other
            // nodes' blocks, over both ToRs.
            docs[1] = docs[1].replace(
                "nodeToNodeMeshEnabled: true",
                "nodeToNodeMeshEnabled: false",
            );
            // importV4's final Reject (the first in the document), not importV6's.
            docs[2] = docs[2].replacen(
                "  - action: Reject\n",
                &format!("  - action: Accept\n    matchOperator: In\n    cidr: {POOL_CIDR}\n  - action: Reject\n"),
                1,
            );
            let (tx, rx, mult) = TOR_BFD;
            for (name, addr, asn, source) in [
                ("tor", self.tor.addrs[0].ip4(), TOR_AS, ""),
                (
                    "tor2",
                    t2.addrs[0].ip4(),
                    TOR2_AS,
                    "  sourceAddress: None\n",
                ),
            ] {
                docs.push(format!(
                    "apiVersion: margay.io/v1\nkind: BGPPeer\nmetadata:\n  name: {name}\nspec:\n  \
                     peerIP: {addr}\n  asNumber: {asn}\n  filters: [{TOR_FILTER}]\n  \
                     numAllowedLocalASNumbers: 1\n{source}  bfd:\n    enabled: true\n    \
                     minTx: {tx}ms\n    minRx: {rx}ms\n    multiplier: {mult}\n"
                ));
            }
        } else if self.racks.len() == 1 {
            for (suffix, ip) in tor_ips(&self.tor.addrs[0]) {
                docs.push(format!(
                    "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: \
                     tor{suffix}\nspec:\n  peerIP: {ip}\n  asNumber: {TOR_AS}\n  filters: \
                     [{TOR_FILTER}]\n"
                ));
            }
        } else {
            for (rack, addrs) in self.tor.addrs.iter().enumerate() {
                let r = Plan::rack_name(rack);
                for (suffix, ip) in tor_ips(addrs) {
                    docs.push(format!(
                        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: \
                         tor-rack-{r}{suffix}\nspec:\n  nodeSelector: {RACK_LABEL} == '{r}'\n  \
                         peerIP: {ip}\n  asNumber: {TOR_AS}\n  filters: [{TOR_FILTER}]\n"
                    ));
                }
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
        let mut addresses = String::new();
        if self.spec.ip_family.has_v4() {
            addresses.push_str(&format!("    ipv4Address: {}\n", node.addrs.v4));
        }
        if self.spec.ip_family.has_v6() {
            addresses.push_str(&format!("    ipv6Address: '{}'\n", node.addrs.v6));
        }
        format!(
            "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: {}\n  labels:\n\
             {labels}spec:\n  bgp:\n{addresses}    asNumber: {NODE_AS}\n{rr}",
            node.name
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
        if self.tor2.is_some() {
            return self.fabric_config(&self.tor, TOR_AS, |n| n.addrs.ip4());
        }
        let tor_prefix = TOR_PREFIX.parse().expect("TOR_PREFIX is a CIDR");
        let mut c = BirdConfig::new(self.tor.addrs[0].ip4())
            .program_kernel()
            .kernel_graceful_restart()
            .originate(tor_prefix);
        for node in &self.nodes {
            if self.spec.ip_family.has_v4() {
                c = c.neighbor(
                    BirdNeighbor::new(&node.name, IpAddr::V4(node.addrs.ip4()), TOR_AS, NODE_AS)
                        .export(ExportPolicy::Static)
                        .graceful_restart(None),
                );
            }
            if self.spec.ip_family.has_v6() {
                c = c.neighbor(
                    BirdNeighbor::new(
                        &format!("{}_v6", node.name),
                        IpAddr::V6(node.addrs.ip6()),
                        TOR_AS,
                        NODE_AS,
                    )
                    .export(ExportPolicy::Static)
                    .graceful_restart(None),
                );
            }
        }
        for calico in &self.calico {
            c = c.neighbor(
                BirdNeighbor::new(
                    &calico.name,
                    IpAddr::V4(calico.addrs.ip4()),
                    TOR_AS,
                    NODE_AS,
                )
                .export(ExportPolicy::Static)
                .graceful_restart(None),
            );
            if self.spec.ip_family.has_v6() {
                // calico-node's bird6: a session of its own.
                c = c.neighbor(
                    BirdNeighbor::new(
                        &format!("{}_v6", calico.name),
                        IpAddr::V6(calico.addrs.ip6()),
                        TOR_AS,
                        NODE_AS,
                    )
                    .export(ExportPolicy::Static)
                    .graceful_restart(None),
                );
            }
        }
        for (rack, subnet) in self.racks.iter().enumerate() {
            let r = Plan::rack_name(rack);
            // One listen range per family the lab runs (the IPv6 one `..._v6`, its sessions
            // `joined_<rack>v6_N`).
            let mut ranges = Vec::new();
            if self.spec.ip_family.has_v4() {
                ranges.push((String::new(), IpNet::V4(subnet.v4)));
            }
            if self.spec.ip_family.has_v6() {
                ranges.push(("v6_".to_string(), IpNet::V6(subnet.v6)));
            }
            for (suffix, range) in ranges {
                let name = format!("{JOIN_RANGE_PREFIX}{r}{}", suffix.trim_end_matches('_'));
                c = c.neighbor(
                    BirdNeighbor::listen_range(
                        &name,
                        range,
                        &format!("{JOINED_PREFIX}{r}{suffix}"),
                        TOR_AS,
                        NODE_AS,
                    )
                    .export(ExportPolicy::Static)
                    .graceful_restart(None),
                );
            }
        }
        c
    }

    /// The second ToR's BIRD configuration (`--tors 2`).
    pub fn tor2_config(&self) -> Option<BirdConfig> {
        let t2 = self.tor2.as_ref()?;
        Some(self.fabric_config(t2, TOR2_AS, |n| {
            n.addrs_b.as_ref().map_or(n.addrs.ip4(), Addrs::ip4)
        }))
    }

    /// A ToR of the dual-homed fabric ([`fabric_tor_config`]) for the plan's nodes.
    fn fabric_config(
        &self,
        tor: &TorPlan,
        asn: u32,
        address: impl Fn(&NodePlan) -> Ipv4Addr,
    ) -> BirdConfig {
        let nodes: Vec<(String, Ipv4Addr)> = self
            .nodes
            .iter()
            .map(|n| (n.name.clone(), address(n)))
            .collect();
        fabric_tor_config(tor.addrs[0].ip4(), asn, &nodes)
    }

    /// How many BGP sessions the lab has (each counted once).
    pub fn session_count(&self) -> usize {
        if self.spec.no_bgp {
            return 0;
        }
        let n = self.nodes.len();
        if self.tor2.is_some() {
            return 2 * n;
        }
        let among_nodes = match self.spec.mode {
            Mode::Mesh => n * (n - 1) / 2,
            Mode::RouteReflectors => n - 1,
        };
        let families =
            usize::from(self.spec.ip_family.has_v4()) + usize::from(self.spec.ip_family.has_v6());
        // Calico nodes (IPv4) mesh with every node and each other, and peer with the ToR.
        let k = self.calico.len();
        (among_nodes + n) * families + k * n + k * k.saturating_sub(1) / 2 + k
    }
}

/// The BIRD protocol a ToR of the dual-homed fabric names its session with node `name`: the
/// name itself when it is a BIRD symbol (`node1`), else with every other character made `_`.
pub fn fabric_protocol(name: &str) -> String {
    let mut p: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if !p.starts_with(|c: char| c.is_ascii_alphabetic()) {
        p.insert_str(0, "n_");
    }
    p
}

/// A ToR of the dual-homed fabric (`--tors 2`) at `router_id` in AS `asn`: one eBGP session per
/// node of `nodes` (its name, its address on the ToR's plane) with BFD at [`TOR_BFD`], every
/// route passed on with itself as the next hop (pod traffic crosses the ToR), the learned
/// routes in its kernel, and [`TOR_PREFIX`] originated. No graceful restart: a node cut off is
/// withdrawn at once, which is what BFD is for. `up` renders it from the plan; `node add` and
/// `node remove` from the lab's state, so the sessions they keep render the same and
/// `birdc configure` leaves them running.
pub fn fabric_tor_config(
    router_id: Ipv4Addr,
    asn: u32,
    nodes: &[(String, Ipv4Addr)],
) -> BirdConfig {
    let (tx, rx, mult) = TOR_BFD;
    let mut c = BirdConfig::new(router_id)
        .program_kernel()
        .bfd(rx, tx, mult)
        .originate(TOR_PREFIX.parse().expect("TOR_PREFIX is a CIDR"));
    for (name, addr) in nodes {
        let mut n = BirdNeighbor::new(&fabric_protocol(name), IpAddr::V4(*addr), asn, NODE_AS)
            .export(ExportPolicy::All)
            .next_hop(crate::bird::NextHop::MySelf);
        n.bfd = true;
        c = c.neighbor(n);
    }
    c
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
                tors: 1,
                ip_family: IpFamily::Ipv4,
                no_bgp: false,
            },
            racks,
        )
    }

    fn ips(v: &[IpAddr]) -> Vec<String> {
        v.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn calico_nodes_follow_etcd_on_rack_a_and_join_every_nodes_mesh_and_the_tor() {
        let mut p = plan(2, Mode::Mesh, PoolMode::Never);
        p.add_calico_nodes(2);
        // node1 .1, node2 .2, ToR .3, etcd .4, then the Calico nodes.
        assert_eq!(p.etcd.ip4().to_string(), "10.99.7.4");
        assert_eq!(p.calico[0].addrs.ip4().to_string(), "10.99.7.5");
        assert_eq!(p.calico[1].addrs.ip4().to_string(), "10.99.7.6");
        assert_eq!(p.calico[1].block.to_string(), "10.100.240.64/26");
        assert_eq!(p.calico[1].role, "c2");
        assert_eq!(
            ips(&p.expected_peers(&p.nodes[0])),
            ["10.99.7.2", "10.99.7.5", "10.99.7.6", "10.99.7.3"]
        );
        assert!(p.tor_config().neighbors.iter().any(|n| n.name == "calico2"));
        // 1 node-node, 2 node-ToR, 4 node-Calico, 1 Calico-Calico, 2 Calico-ToR.
        assert_eq!(p.session_count(), 10);
        let spec = |mode, pool_mode| Spec {
            nodes: 2,
            mode,
            pool_mode,
            tors: 1,
            ip_family: IpFamily::Ipv4,
            no_bgp: false,
        };
        assert!(Plan::validate_calico(&spec(Mode::Mesh, PoolMode::Never), 2).is_ok());
        assert!(Plan::validate_calico(&spec(Mode::Mesh, PoolMode::Vxlan), 1).is_err());
        assert!(Plan::validate_calico(&spec(Mode::RouteReflectors, PoolMode::Never), 1).is_err());
        assert!(Plan::validate_calico(&spec(Mode::Mesh, PoolMode::Never), 17).is_err());
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
    fn two_tors_put_every_node_on_both_planes_with_bfd_peers_and_no_mesh() {
        let spec = Spec {
            nodes: 3,
            mode: Mode::Mesh,
            pool_mode: PoolMode::Never,
            tors: 2,
            ip_family: IpFamily::Ipv4,
            no_bgp: false,
        };
        spec.validate().unwrap();
        assert_eq!(Plan::switch_count(&spec), 2);
        let p = Plan::new(spec, vec![subnet(7), subnet(8)]);
        assert_eq!(p.racks.len(), 1, "plane b is not a rack");
        assert_eq!(
            p.nodes[2].addrs_b.as_ref().map(|a| a.ip4().to_string()),
            Some("10.99.8.3".into())
        );
        let t2 = p.tor2.as_ref().expect("a second ToR");
        assert_eq!(t2.addrs[0].ip4().to_string(), "10.99.8.4");
        assert_eq!(
            ips(&p.expected_peers(&p.nodes[0])),
            ["10.99.7.4", "10.99.8.4"]
        );
        assert_eq!(p.session_count(), 6);
        let model = p.model_yaml();
        for want in [
            "nodeToNodeMeshEnabled: false",
            "apiVersion: margay.io/v1\nkind: BGPPeer\nmetadata:\n  name: tor2",
            "peerIP: 10.99.8.4\n  asNumber: 65001",
            "numAllowedLocalASNumbers: 1\n  sourceAddress: None\n  bfd:\n    enabled: true\n    minTx: 100ms",
            "cidr: 10.100.0.0/16\n  - action: Reject",
        ] {
            assert!(model.contains(want), "{want}: {model}");
        }
        let conf = p.tor2_config().expect("tor2").render();
        for want in [
            "neighbor 10.99.8.2 as 64512;",
            "bfd on;",
            "next hop self;",
            "export all;",
        ] {
            assert!(conf.contains(want), "{want}: {conf}");
        }
        let bad = Spec {
            pool_mode: PoolMode::Vxlan,
            ..spec
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn dual_stack_plan_has_a_session_per_family_both_pools_and_both_node_addresses() {
        let mut p = plan(2, Mode::Mesh, PoolMode::Never);
        p.spec.ip_family = IpFamily::Dual;
        assert_eq!(
            ips(&p.expected_peers(&p.nodes[0])),
            ["10.99.7.2", "10.99.7.3", "fd00:99:7::2", "fd00:99:7::3"]
        );
        assert_eq!(p.session_count(), 2 * (1 + 2));
        let model = p.model_yaml();
        assert!(
            model.contains("cidr: 'fd00:100::/48'\n  blockSize: 122"),
            "{model}"
        );
        assert!(
            model.contains("name: tor-v6\nspec:\n  peerIP: fd00:99:7::3"),
            "{model}"
        );
        assert!(model.contains("disabled: false"), "{model}");
        let node = p.node_yaml(&p.nodes[0]);
        assert!(
            node.contains("ipv4Address: 10.99.7.1/24\n    ipv6Address: 'fd00:99:7::1/64'"),
            "{node}"
        );
        let conf = p.tor_config().render();
        assert!(conf.contains("neighbor fd00:99:7::1 as 64512;"), "{conf}");
        assert!(conf.contains("protocol kernel kernel6"), "{conf}");
    }

    #[test]
    fn ipv6_only_plan_has_no_ipv4_session_or_node_address() {
        let mut p = plan(2, Mode::Mesh, PoolMode::Never);
        p.spec.ip_family = IpFamily::Ipv6;
        assert_eq!(
            ips(&p.expected_peers(&p.nodes[1])),
            ["fd00:99:7::1", "fd00:99:7::3"]
        );
        assert!(!p.node_yaml(&p.nodes[0]).contains("ipv4Address"));
        let model = p.model_yaml();
        assert!(model.contains("disabled: true"), "{model}");
        assert!(!model.contains("name: tor\nspec:\n  peerIP"), "{model}");
        let conf = p.tor_config().render();
        assert!(!conf.contains("neighbor 10.99.7.1 "), "{conf}");
        // IPv6 VXLAN: the IPv6 pool in VXLAN mode, the pods' MTU less IPv6 VXLAN's 70; IP-in-IP
        // stays IPv4 only.
        let mut vxlan = p.clone();
        vxlan.spec.pool_mode = PoolMode::Vxlan;
        assert!(vxlan.spec.validate().is_ok());
        let model = vxlan.model_yaml();
        assert!(
            model.contains("default-ipv6-ippool\nspec:\n  cidr: 'fd00:100::/48'\n  blockSize: 122\n  ipipMode: Never\n  vxlanMode: Always"),
            "{model}"
        );
        assert_eq!(PoolMode::Vxlan.mtu_for(IpFamily::Ipv6), 1430);
        assert_eq!(PoolMode::Vxlan.mtu_for(IpFamily::Ipv4), 1450);
        let mut ipip = p.spec;
        ipip.pool_mode = PoolMode::Ipip;
        assert!(ipip.validate().is_err());
        // `node add` on an IPv6 lab: the ToR listens on the rack's IPv6 subnet.
        assert!(conf.contains("neighbor range fd00:99:7::/64 as"), "{conf}");
        assert!(!conf.contains("neighbor range 10.99.7.0/24"), "{conf}");
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
                tors: 1,
                ip_family: IpFamily::Ipv4,
                no_bgp: false,
            };
            assert!(spec.validate().is_err(), "{nodes} {pool_mode}");
        }
    }
}
