//! The lab's plan, computed before anything is created: which hosts sit on the switch, their
//! addresses and pod blocks, and every daemon's configuration for the chosen peering mode.
//!
//! Node `k` (1-based) is host `k` of the switch's subnet and originates `10.100.k.0/26` (and
//! `fd00:100::k:0/122` with IPv6); the ToR is the host after the last node. Nodes are in AS
//! 64512 (Calico's default), the ToR in AS 65000. Pure: no namespace, no process.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use super::LabCtlError;
use crate::bgpd::{BgpdConfig, BgpdNeighbor, BgpdPeerType};
use crate::bird::{BirdConfig, BirdNeighbor, ExportPolicy};
use crate::lab::{Addrs, Subnet};

/// The AS of every node.
pub const NODE_AS: u32 = 64512;
/// The AS of the top-of-rack router.
pub const TOR_AS: u32 = 65000;
/// The cluster id of the reflector in route-reflector mode (Calico's documented example).
pub const CLUSTER_ID: Ipv4Addr = Ipv4Addr::new(244, 0, 0, 1);
/// Most nodes one lab runs (blocks are `10.100.k.0/26`, and the ToR needs a host number).
pub const MAX_NODES: usize = 100;

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

/// What the operator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub nodes: usize,
    pub mode: Mode,
    /// Also give every node an IPv6 block and an IPv6 session to the ToR.
    pub ipv6: bool,
}

impl Spec {
    /// Checks the node count.
    pub fn validate(&self) -> Result<(), LabCtlError> {
        if self.nodes == 0 || self.nodes > MAX_NODES {
            return Err(LabCtlError::Usage(format!(
                "--nodes must be between 1 and {MAX_NODES}, not {}",
                self.nodes
            )));
        }
        Ok(())
    }
}

/// One node of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePlan {
    /// 1-based.
    pub index: usize,
    /// `node1`, ...: daemon, log and BIRD protocol names.
    pub name: String,
    /// The namespace role (`n1`): the namespace is `mg` + tag + role.
    pub role: String,
    /// Its addresses on the switch (interface name not yet known).
    pub addrs: Addrs,
    pub block4: Ipv4Net,
    pub block6: Option<Ipv6Net>,
}

/// The top-of-rack router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TorPlan {
    pub name: String,
    pub role: String,
    pub addrs: Addrs,
}

/// The whole lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub spec: Spec,
    pub subnet: Subnet,
    pub nodes: Vec<NodePlan>,
    pub tor: TorPlan,
}

impl Plan {
    /// The plan for `spec` on the switch subnet `subnet` (hosts attach in plan order).
    pub fn new(spec: Spec, subnet: Subnet) -> Plan {
        let nodes = (1..=spec.nodes)
            .map(|k| NodePlan {
                index: k,
                name: format!("node{k}"),
                role: format!("n{k}"),
                addrs: subnet.host(k as u8),
                block4: Ipv4Net::new(Ipv4Addr::new(10, 100, k as u8, 0), 26)
                    .expect("26 is a valid length"),
                block6: spec.ipv6.then(|| {
                    Ipv6Net::new(Ipv6Addr::new(0xfd00, 0x100, 0, 0, 0, 0, k as u16, 0), 122)
                        .expect("122 is a valid length")
                }),
            })
            .collect();
        Plan {
            spec,
            subnet,
            nodes,
            tor: TorPlan {
                name: "tor".into(),
                role: "tor".into(),
                addrs: subnet.host(spec.nodes as u8 + 1),
            },
        }
    }

    /// Whether `node` reflects routes for the others.
    pub fn is_reflector(&self, node: &NodePlan) -> bool {
        self.spec.mode == Mode::RouteReflectors && node.index == 1
    }

    /// margay-bgpd's configuration on `node` (the socket is filled in when it starts).
    pub fn bgpd_config(&self, node: &NodePlan) -> BgpdConfig {
        let mut c = BgpdConfig::new(node.addrs.ip4(), NODE_AS).originate(node.block4.into());
        if let Some(b) = node.block6 {
            c = c.originate(b.into());
        }
        if self.is_reflector(node) {
            c = c.cluster_id(CLUSTER_ID);
        }
        for other in self.nodes.iter().filter(|o| o.index != node.index) {
            // One session per family, as Calico runs them.
            let mut addrs = vec![IpAddr::V4(other.addrs.ip4())];
            if self.spec.ipv6 {
                addrs.push(IpAddr::V6(other.addrs.ip6()));
            }
            for addr in addrs {
                let n = BgpdNeighbor::new(addr, NODE_AS).description(&other.name);
                let n = match self.spec.mode {
                    Mode::Mesh => n.peer_type(BgpdPeerType::Mesh),
                    Mode::RouteReflectors if self.is_reflector(node) => n.rr_client(),
                    Mode::RouteReflectors if self.is_reflector(other) => {
                        n.peer_type(BgpdPeerType::RouteReflector)
                    }
                    // Clients of the same reflector do not peer.
                    Mode::RouteReflectors => continue,
                };
                c = c.neighbor(n);
            }
        }
        c = c.neighbor(
            BgpdNeighbor::new(IpAddr::V4(self.tor.addrs.ip4()), TOR_AS).description("tor"),
        );
        if self.spec.ipv6 {
            c = c.neighbor(
                BgpdNeighbor::new(IpAddr::V6(self.tor.addrs.ip6()), TOR_AS).description("tor"),
            );
        }
        c
    }

    /// The ToR's BIRD configuration: one eBGP session per node and family. It exports
    /// nothing: the nodes learn each other's blocks from each other, and the ToR shows what
    /// the cluster announces.
    pub fn tor_config(&self) -> BirdConfig {
        let mut c = BirdConfig::new(self.tor.addrs.ip4());
        for node in &self.nodes {
            c = c.neighbor(
                BirdNeighbor::new(&node.name, IpAddr::V4(node.addrs.ip4()), TOR_AS, NODE_AS)
                    .export(ExportPolicy::None),
            );
            if self.spec.ipv6 {
                c = c.neighbor(
                    BirdNeighbor::new(
                        &format!("{}v6", node.name),
                        IpAddr::V6(node.addrs.ip6()),
                        TOR_AS,
                        NODE_AS,
                    )
                    .export(ExportPolicy::None),
                );
            }
        }
        c
    }

    /// How many BGP sessions the lab has (each counted once).
    pub fn session_count(&self) -> usize {
        let n = self.nodes.len();
        let among_nodes = match self.spec.mode {
            Mode::Mesh => n * (n - 1) / 2,
            Mode::RouteReflectors => n - 1,
        };
        let families = if self.spec.ipv6 { 2 } else { 1 };
        (among_nodes + n) * families
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(nodes: usize, mode: Mode, ipv6: bool) -> Plan {
        let subnet = Subnet {
            v4: "10.99.7.0/24".parse().unwrap(),
            v6: "fd00:99:7::/64".parse().unwrap(),
        };
        Plan::new(Spec { nodes, mode, ipv6 }, subnet)
    }

    fn peers(c: &BgpdConfig) -> Vec<(String, u32, bool, Option<BgpdPeerType>)> {
        c.neighbors
            .iter()
            .map(|n| {
                (
                    n.address.to_string(),
                    n.asn,
                    n.route_reflector_client,
                    n.peer_type,
                )
            })
            .collect()
    }

    #[test]
    fn mesh_node_peers_with_every_other_node_and_the_tor() {
        let p = plan(3, Mode::Mesh, false);
        let c = p.bgpd_config(&p.nodes[1]);
        assert_eq!(c.router_id, "10.99.7.2".parse::<Ipv4Addr>().unwrap());
        assert_eq!(c.asn, NODE_AS);
        assert_eq!(c.cluster_id, None);
        assert_eq!(c.originate, vec!["10.100.2.0/26".parse().unwrap()]);
        let mesh = Some(BgpdPeerType::Mesh);
        assert_eq!(
            peers(&c),
            vec![
                ("10.99.7.1".into(), NODE_AS, false, mesh),
                ("10.99.7.3".into(), NODE_AS, false, mesh),
                ("10.99.7.4".into(), TOR_AS, false, None),
            ]
        );
        assert_eq!(p.session_count(), 3 + 3);
    }

    #[test]
    fn reflector_has_clients_and_clients_peer_only_with_reflector_and_tor() {
        let p = plan(4, Mode::RouteReflectors, false);
        let rr = p.bgpd_config(&p.nodes[0]);
        assert_eq!(rr.cluster_id, Some(CLUSTER_ID));
        assert_eq!(
            peers(&rr),
            vec![
                ("10.99.7.2".into(), NODE_AS, true, None),
                ("10.99.7.3".into(), NODE_AS, true, None),
                ("10.99.7.4".into(), NODE_AS, true, None),
                ("10.99.7.5".into(), TOR_AS, false, None),
            ]
        );
        let client = p.bgpd_config(&p.nodes[2]);
        assert_eq!(client.cluster_id, None);
        assert_eq!(
            peers(&client),
            vec![
                (
                    "10.99.7.1".into(),
                    NODE_AS,
                    false,
                    Some(BgpdPeerType::RouteReflector)
                ),
                ("10.99.7.5".into(), TOR_AS, false, None),
            ]
        );
        assert_eq!(p.session_count(), 3 + 4);
        let text = client.render().unwrap();
        assert!(text.contains("type = \"route-reflector\""), "{text}");
    }

    #[test]
    fn tor_peers_with_every_node_in_both_families_and_exports_nothing() {
        let p = plan(2, Mode::Mesh, true);
        let conf = p.tor_config().render();
        assert!(conf.contains("router id 10.99.7.3;"), "{conf}");
        for (name, addr) in [
            ("node1", "10.99.7.1"),
            ("node2", "10.99.7.2"),
            ("node1v6", "fd00:99:7::1"),
            ("node2v6", "fd00:99:7::2"),
        ] {
            assert!(
                conf.contains(&format!(
                    "protocol bgp {name} {{\n  local as {TOR_AS};\n  neighbor {addr} as {NODE_AS};"
                )),
                "{conf}"
            );
        }
        assert_eq!(conf.matches("export none;").count(), 4, "{conf}");
        let c = p.bgpd_config(&p.nodes[1]);
        assert_eq!(
            c.originate,
            vec![
                "10.100.2.0/26".parse().unwrap(),
                "fd00:100::2:0/122".parse().unwrap()
            ]
        );
        assert_eq!(
            c.neighbors.last().unwrap().address.to_string(),
            "fd00:99:7::3"
        );
        assert_eq!(
            p.session_count(),
            2 * (1 + 2),
            "node-node and node-ToR, once per family"
        );
    }

    #[test]
    fn rejects_zero_and_too_many_nodes() {
        for nodes in [0, MAX_NODES + 1] {
            let spec = Spec {
                nodes,
                mode: Mode::Mesh,
                ipv6: false,
            };
            assert!(spec.validate().is_err());
        }
    }
}
