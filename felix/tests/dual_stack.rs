//! Dual-stack and IPv6-only nodes, end to end: etcd, two node namespaces on one switch, each
//! with margay-bgpd and margay-felix in cluster mode. Pods are made through felix's CNI API
//! (ADD, as the plugin sends it) and then talk across the nodes over both families.
//!
//! What Calico users expect and these tests check: the CNI result carries both addresses and
//! both default routes (IPv4 via 169.254.1.1, IPv6 via the host side's link-local address
//! fe80::ecee:eeff:feee:eeee), the pod's /128 is routed to its veth, each node's IPv6 blocks
//! travel over the IPv6 mesh session and land in the other kernel via the node's IPv6
//! address, and a node with no IPv4 address at all peers (its router id from the hash of its
//! name) and routes its pods.

mod common;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::{cni_client, ip_json, rt, show};
use ipnet::IpNet;
use margay_lab::{
    Bgpd, ClusterArgs, Etcd, Lab, LabSwitch, Netns, Process, margay_binary, wait_for,
};
use margay_proto::felix::v1 as pb;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(40);
const POOL4: &str = "10.104.0.0/16";
const POOL6: &str = "fd00:104::/48";
const GATEWAY_V6: &str = "fe80::ecee:eeff:feee:eeee";

/// Which families a node has.
#[derive(Clone, Copy, PartialEq)]
enum Family {
    Dual,
    V6Only,
}

struct Node {
    name: String,
    ns: Netns,
    v6: IpAddr,
    socket: PathBuf,
    bgpd_socket: PathBuf,
    felix: Process,
    bgpd: Bgpd,
}

struct Cluster {
    nodes: Vec<Node>,
    etcd: Etcd,
    _sw: LabSwitch,
}

struct Pod {
    ns: Netns,
    result: pb::EndpointResult,
}

impl Pod {
    fn addr(&self, v6: bool) -> IpAddr {
        self.result
            .ips
            .iter()
            .map(|i| i.address.parse::<IpNet>().unwrap().addr())
            .find(|a| a.is_ipv6() == v6)
            .expect("an address of that family")
    }
}

impl Cluster {
    fn start(lab: &Lab, family: Family) -> Cluster {
        let sw = lab.switch("sw").unwrap();
        let etcd = Etcd::on_switch(lab, &sw).unwrap();
        let mut pools = format!(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: pool6}}\n\
             spec: {{cidr: '{POOL6}', blockSize: 122, ipipMode: Never, vxlanMode: Never}}\n"
        );
        if family == Family::Dual {
            pools.push_str(&format!(
                "---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: pool4}}\n\
                 spec: {{cidr: {POOL4}, ipipMode: Never, vxlanMode: Never}}\n"
            ));
        }
        etcd.apply(&pools).unwrap();
        let mut nodes = Vec::new();
        for name in ["n1", "n2"] {
            let ns = lab.netns(name).unwrap();
            let addr = sw.attach(&ns).unwrap();
            // Proxy ARP answers for 169.254.1.1 only when the host routes it.
            ns.ip(&["route", "add", "default", "via", &etcd.ip().to_string()])
                .unwrap();
            let mut args = ClusterArgs::new(name, &etcd.endpoint(), IpNet::V4(addr.v4))
                .ip6(IpNet::V6(addr.v6));
            if family == Family::V6Only {
                args.ip = Some("none".into());
            }
            let bgpd = Bgpd::start_cluster(lab, &ns, &format!("bgpd-{name}"), args).unwrap();
            let bgpd_socket = lab.dir().join(format!("bgpd-{name}.sock"));
            let socket = lab.dir().join(format!("felix-{name}.sock"));
            let felix = common::spawn_cluster_felix(
                lab,
                &ns,
                name,
                &etcd.endpoint(),
                &socket,
                &["--resync-interval", "1"],
            );
            nodes.push(Node {
                name: name.to_string(),
                ns,
                v6: IpAddr::V6(addr.ip6()),
                socket,
                bgpd_socket,
                felix,
                bgpd,
            });
        }
        for n in &nodes {
            common::wait_cni_ready(&n.socket, &n.felix);
        }
        Cluster {
            nodes,
            etcd,
            _sw: sw,
        }
    }

    fn logs(&self) -> Vec<&dyn margay_lab::HasLogs> {
        let mut v: Vec<&dyn margay_lab::HasLogs> = Vec::new();
        for n in &self.nodes {
            v.push(&n.felix);
            v.push(&n.bgpd);
        }
        v
    }

    /// A pod on node `i` through felix's CNI ADD, asking for the given families.
    fn add_pod(&self, lab: &Lab, i: usize, role: &str, v4: bool) -> Pod {
        let node = &self.nodes[i];
        let ns = lab.netns(role).unwrap();
        let req = pb::AddEndpointRequest {
            attachment: Some(pb::Attachment {
                container_id: format!("{role}-ctr"),
                interface_name: "eth0".into(),
            }),
            netns: format!("/var/run/netns/{}", ns.name()),
            workload: Some(pb::Workload {
                namespace: "default".into(),
                name: format!("{}-{role}", lab.tag()),
                ..Default::default()
            }),
            network_name: "margay-pod-network".into(),
            mtu: 1400,
            node_name: node.name.clone(),
            ipam: Some(pb::add_endpoint_request::Ipam::Margay(pb::MargayIpam {
                assign_ipv4: v4,
                assign_ipv6: true,
                ..Default::default()
            })),
        };
        let socket = node.socket.clone();
        let result = rt()
            .block_on(async move {
                cni_client(&socket)
                    .await?
                    .add_endpoint(req)
                    .await
                    .map_err(|e| e.to_string())
            })
            .unwrap_or_else(|e| panic!("ADD on {}: {e}", node.name))
            .into_inner()
            .result
            .expect("a CNI result");
        Pod { ns, result }
    }

    fn wait_route(&self, i: usize, dst: &str, want: impl Fn(&Value) -> bool) {
        let ns = &self.nodes[i].ns;
        wait_for(
            &format!("route {dst} on node {i}"),
            WAIT,
            &self.logs(),
            || {
                let all = ip_json(ns, &["-6", "route", "show", "table", "main"]);
                match all.iter().find(|r| r["dst"] == dst) {
                    Some(r) if want(r) => Ok(()),
                    _ => Err(format!("routes:\n{}", show(&all))),
                }
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }

    fn node_status(&self, i: usize) -> String {
        let sock = self.nodes[i].bgpd_socket.to_str().unwrap().to_string();
        let ctl = margay_binary("margayctl", "cargo build -p margay-ctl").unwrap();
        self.nodes[i]
            .ns
            .exec(
                ctl.to_str().unwrap(),
                &["node", "status", "--socket", &sock],
            )
            .unwrap()
    }
}

fn ping(from: &Pod, to: IpAddr, logs: &[&dyn margay_lab::HasLogs]) {
    let dst = to.to_string();
    let fam = if to.is_ipv6() { "-6" } else { "-4" };
    wait_for(&format!("ping {dst}"), WAIT, logs, || {
        from.ns
            .exec("ping", &[fam, "-c", "1", "-W", "1", &dst])
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .unwrap_or_else(|e| panic!("{e}"));
}

/// The /122 block of an IPv6 pod address.
fn block6(a: IpAddr) -> String {
    IpNet::new(a, 122).unwrap().trunc().to_string()
}

#[test]
fn dual_stack_pods_get_both_families_and_reach_each_other_over_both_meshes() {
    let lab = Lab::new("dual_stack_pods_get_both_families").unwrap();
    let c = Cluster::start(&lab, Family::Dual);
    let a = c.add_pod(&lab, 0, "pa", true);
    let b = c.add_pod(&lab, 1, "pb", true);

    // The CNI result: both addresses, both default routes, Calico's gateways.
    let fams: Vec<(String, String)> = a
        .result
        .ips
        .iter()
        .map(|i| (i.address.clone(), i.gateway.clone()))
        .collect();
    assert_eq!(fams.len(), 2, "{fams:?}");
    assert!(
        fams[0].0.ends_with("/32") && fams[0].1 == "169.254.1.1",
        "{fams:?}"
    );
    assert!(
        fams[1].0.ends_with("/128") && fams[1].1 == GATEWAY_V6,
        "{fams:?}"
    );
    let routes: Vec<(String, String)> = a
        .result
        .routes
        .iter()
        .map(|r| (r.dst.clone(), r.gw.clone()))
        .collect();
    assert_eq!(
        routes,
        vec![
            ("0.0.0.0/0".to_string(), "169.254.1.1".to_string()),
            ("::/0".to_string(), GATEWAY_V6.to_string())
        ]
    );

    // Inside the pod: the IPv6 default route through the host side's link-local address.
    let inside = ip_json(&a.ns, &["-6", "route", "show", "default"]);
    assert_eq!(inside.len(), 1, "{}", show(&inside));
    assert_eq!(inside[0]["gateway"], GATEWAY_V6, "{}", show(&inside));

    // On the node: the pod's /128 on its veth (felix's protocol), the block's blackhole.
    let a6 = a.addr(true);
    let cali = a.result.interfaces[0].name.clone();
    c.wait_route(0, &a6.to_string(), |r| {
        r["dev"] == cali.as_str() && r["protocol"] == "81"
    });
    c.wait_route(0, &block6(a6), |r| r["type"] == "blackhole");
    // The other node learned the block over the IPv6 mesh: via n1's IPv6 address.
    let n1v6 = c.nodes[0].v6.to_string();
    c.wait_route(1, &block6(a6), |r| r["gateway"] == n1v6.as_str());

    let logs = c.logs();
    ping(&a, b.addr(false), &logs);
    ping(&a, b.addr(true), &logs);
    ping(&b, a.addr(true), &logs);

    // node status lists one session per family, both Established.
    let st = c.node_status(0);
    let v6_part = st.split("IPv6 BGP status").nth(1).unwrap_or_default();
    assert!(
        v6_part.contains(&c.nodes[1].v6.to_string()) && v6_part.contains("Established"),
        "{st}"
    );
    let v4_part = st.split("IPv6 BGP status").next().unwrap_or_default();
    assert!(v4_part.contains("Established"), "{st}");
}

#[test]
fn ipv6_only_nodes_peer_with_a_hashed_router_id_and_route_their_pods() {
    let lab = Lab::new("ipv6_only_nodes_peer").unwrap();
    let c = Cluster::start(&lab, Family::V6Only);
    let a = c.add_pod(&lab, 0, "pa", false);
    let b = c.add_pod(&lab, 1, "pb", false);
    assert_eq!(a.result.ips.len(), 1);
    assert_eq!(
        a.result
            .routes
            .iter()
            .map(|r| r.dst.as_str())
            .collect::<Vec<_>>(),
        vec!["::/0"]
    );
    // Neither Node has an IPv4 BGP address.
    for n in &c.nodes {
        let y = c.etcd.get_yaml("node", &n.name).unwrap();
        assert!(!y.contains("ipv4Address"), "{y}");
        assert!(y.contains("ipv6Address"), "{y}");
    }
    let n2v6 = c.nodes[1].v6.to_string();
    c.wait_route(0, &block6(b.addr(true)), |r| r["gateway"] == n2v6.as_str());
    let logs = c.logs();
    ping(&a, b.addr(true), &logs);
    ping(&b, a.addr(true), &logs);
    let st = c.node_status(0);
    assert!(st.contains("No IPv4 peers found."), "{st}");
    assert!(st.contains("Established"), "{st}");
}
