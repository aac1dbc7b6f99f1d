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
//!
//! IPv6 VXLAN (Calico's `vxlan-v6.calico`, margay's `vxlan-v6.margay`): with both pools in
//! `vxlanMode: Always`, each node takes an IPv6 tunnel address through IPAM, records it and its
//! MAC in the Node, and routes the other node's IPv6 blocks through the IPv6 device with an NDP
//! and an FDB entry; under bgpd (next hops from the IPv6 mesh) and without any bgpd
//! (`--networking-backend vxlan`, blocks from IPAM), on dual-stack and IPv6-only nodes.

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

/// The pools' encapsulation and where remote routes come from.
#[derive(Clone, Copy, PartialEq)]
enum Setup {
    /// Pools in Never mode, bgpd beside felix.
    Plain,
    /// Both pools in `vxlanMode: Always`, bgpd beside felix.
    VxlanBgp,
    /// Both pools in `vxlanMode: Always`, felix alone (`--networking-backend vxlan`).
    VxlanNoBgp,
}

impl Setup {
    fn vxlan_mode(self) -> &'static str {
        if self == Setup::Plain {
            "Never"
        } else {
            "Always"
        }
    }
}

struct Node {
    name: String,
    ns: Netns,
    v6: IpAddr,
    socket: PathBuf,
    bgpd_socket: PathBuf,
    felix: Process,
    bgpd: Option<Bgpd>,
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
        Cluster::start_with(lab, family, Setup::Plain)
    }

    fn start_with(lab: &Lab, family: Family, setup: Setup) -> Cluster {
        let sw = lab.switch("sw").unwrap();
        let etcd = Etcd::on_switch(lab, &sw).unwrap();
        let vxlan = setup.vxlan_mode();
        let mut pools = format!(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: pool6}}\n\
             spec: {{cidr: '{POOL6}', blockSize: 122, ipipMode: Never, vxlanMode: {vxlan}}}\n"
        );
        if family == Family::Dual {
            pools.push_str(&format!(
                "---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: pool4}}\n\
                 spec: {{cidr: {POOL4}, ipipMode: Never, vxlanMode: {vxlan}}}\n"
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
            let bgpd = (setup != Setup::VxlanNoBgp)
                .then(|| Bgpd::start_cluster(lab, &ns, &format!("bgpd-{name}"), args).unwrap());
            let bgpd_socket = lab.dir().join(format!("bgpd-{name}.sock"));
            let socket = lab.dir().join(format!("felix-{name}.sock"));
            // Without bgpd, felix registers the Node's addresses itself (calico-node's IP, IP6).
            let ip4 = match family {
                Family::Dual => addr.v4.to_string(),
                Family::V6Only => "none".to_string(),
            };
            let ip6 = addr.v6.to_string();
            let mut extra = vec!["--resync-interval", "1"];
            if setup == Setup::VxlanNoBgp {
                extra.extend(["--networking-backend", "vxlan", "--ip", &ip4, "--ip6", &ip6]);
            }
            let felix =
                common::spawn_cluster_felix(lab, &ns, name, &etcd.endpoint(), &socket, &extra);
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
            if let Some(b) = &n.bgpd {
                v.push(b);
            }
        }
        v
    }

    /// A pod on node `i` through felix's CNI ADD, asking for the given families.
    fn add_pod(&self, lab: &Lab, i: usize, role: &str, v4: bool) -> Pod {
        self.add_pod_mtu(lab, i, role, v4, 1400)
    }

    /// As [`Cluster::add_pod`] with the request's MTU (0: the one felix detects).
    fn add_pod_mtu(&self, lab: &Lab, i: usize, role: &str, v4: bool, mtu: u32) -> Pod {
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
            mtu,
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

    /// Node `name`'s Node resource as YAML.
    fn node_yaml(&self, name: &str) -> String {
        self.etcd.get_yaml("node", name).unwrap()
    }

    /// A field of node `name`'s spec, once set (`ipv6VXLANTunnelAddr: fd00:...`).
    fn wait_node_field(&self, name: &str, field: &str) -> String {
        let mut got = String::new();
        wait_for(
            &format!("{field} of Node {name}"),
            WAIT,
            &self.logs(),
            || {
                let y = self.node_yaml(name);
                let value = y
                    .lines()
                    .find_map(|l| l.trim().strip_prefix(&format!("{field}:")))
                    .map(|v| v.trim().trim_matches('\'').trim_matches('"').to_string());
                match value {
                    Some(v) if !v.is_empty() => {
                        got = v;
                        Ok(())
                    }
                    _ => Err(y),
                }
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        got
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

/// The `ip -j link show` entry of `dev` on node `ns`.
fn link(ns: &Netns, dev: &str) -> Value {
    ip_json(ns, &["-s", "-d", "link", "show", dev])
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no link {dev}"))
}

/// Waits until `dev` on `ns` has MTU `mtu`.
fn wait_mtu(ns: &Netns, dev: &str, mtu: u64, logs: &[&dyn margay_lab::HasLogs]) {
    wait_for(&format!("{dev} MTU {mtu}"), WAIT, logs, || {
        let l = link(ns, dev);
        (l["mtu"].as_u64() == Some(mtu))
            .then_some(())
            .ok_or_else(|| l.to_string())
    })
    .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn dual_stack_vxlan_routes_ipv6_blocks_through_vxlan_v6_with_ndp_and_fdb_entries() {
    let lab = Lab::new("dual_stack_vxlan_v6").unwrap();
    let c = Cluster::start_with(&lab, Family::Dual, Setup::VxlanBgp);
    let (n1, n2) = (&c.nodes[0], &c.nodes[1]);
    // Each node took an IPv6 tunnel address from the IPv6 pool and a MAC for its IPv6 VTEP,
    // beside its IPv4 ones (Calico's Node fields).
    let tun6 = c.wait_node_field(&n2.name, "ipv6VXLANTunnelAddr");
    let mac6 = c.wait_node_field(&n2.name, "vxlanTunnelMACAddrV6");
    let tun4 = c.wait_node_field(&n2.name, "ipv4VXLANTunnelAddr");
    let mac4 = c.wait_node_field(&n2.name, "vxlanTunnelMACAddr");
    assert!(
        POOL6
            .parse::<IpNet>()
            .unwrap()
            .contains(&tun6.parse::<IpAddr>().unwrap()),
        "{tun6}"
    );
    assert_ne!(mac6, mac4, "one MAC per VTEP");
    c.wait_node_field(&n1.name, "ipv6VXLANTunnelAddr");

    // A pod asking for no MTU gets the detected one: the underlay's less IPv6 VXLAN's 70.
    let underlay = link(&n1.ns, "eth0")["mtu"].as_u64().unwrap();
    let a = c.add_pod_mtu(&lab, 0, "pa", true, 0);
    let b = c.add_pod(&lab, 1, "pb", true);
    let inside = link(&a.ns, "eth0")["mtu"].as_u64().unwrap();
    assert_eq!(inside, underlay - 70, "pod MTU with IPv6 VXLAN in use");

    // n1 routes n2's IPv6 block through vxlan-v6.margay to n2's IPv6 VTEP, and its IPv4
    // block through vxlan.margay.
    let b6 = block6(b.addr(true));
    c.wait_route(0, &b6, |r| {
        r["dev"] == "vxlan-v6.margay"
            && r["gateway"] == tun6.as_str()
            && r["protocol"] == "81"
            && r["flags"].to_string().contains("onlink")
    });
    let b4 = IpNet::new(b.addr(false), 26).unwrap().trunc().to_string();
    wait_for("IPv4 block through vxlan.margay", WAIT, &c.logs(), || {
        let all = ip_json(&n1.ns, &["route", "show", "table", "main"]);
        match all.iter().find(|r| r["dst"] == b4.as_str()) {
            Some(r) if r["dev"] == "vxlan.margay" && r["gateway"] == tun4.as_str() => Ok(()),
            _ => Err(show(&all)),
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));

    let logs = c.logs();
    ping(&a, b.addr(true), &logs);
    ping(&b, a.addr(true), &logs);
    ping(&a, b.addr(false), &logs);
    ping(&b, a.addr(false), &logs);

    // The IPv6 device: local address n1's IPv6, an NDP entry for n2's VTEP (permanent, n2's
    // MAC), an FDB entry sending that MAC to n2's IPv6 address; the pings crossed it.
    let dev = link(&n1.ns, "vxlan-v6.margay");
    let info = &dev["linkinfo"]["info_data"];
    assert_eq!(info["id"], 4096, "{dev}");
    assert_eq!(info["port"], 4789, "{dev}");
    assert_eq!(info["local6"], n1.v6.to_string(), "{dev}");
    assert_eq!(dev["mtu"].as_u64(), Some(underlay - 70), "{dev}");
    let own_mac6 = c.wait_node_field(&n1.name, "vxlanTunnelMACAddrV6");
    assert_eq!(dev["address"], own_mac6.as_str(), "{dev}");
    let neigh = ip_json(&n1.ns, &["-6", "neigh", "show", "dev", "vxlan-v6.margay"]);
    assert!(
        neigh.iter().any(|n| n["dst"] == tun6.as_str()
            && n["lladdr"] == mac6.as_str()
            && n["state"].to_string().contains("PERMANENT")),
        "{}",
        show(&neigh)
    );
    let fdb = n1
        .ns
        .exec("bridge", &["fdb", "show", "dev", "vxlan-v6.margay"])
        .unwrap();
    assert!(
        fdb.lines()
            .any(|l| l.starts_with(&mac6) && l.contains(&format!("dst {}", n2.v6))),
        "{fdb}"
    );
    let stats = link(&n1.ns, "vxlan-v6.margay");
    assert!(
        stats["stats64"]["tx"]["packets"].as_u64().unwrap_or(0) >= 2,
        "{stats}"
    );

    // FelixConfiguration vxlanMTUV6 applies live to the IPv6 device only.
    c.etcd
        .apply(
            "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\n\
             spec: {vxlanMTUV6: 1300}\n",
        )
        .unwrap();
    wait_mtu(&n1.ns, "vxlan-v6.margay", 1300, &logs);
    assert_eq!(
        link(&n1.ns, "vxlan.margay")["mtu"].as_u64(),
        Some(underlay - 50)
    );
}

#[test]
fn ipv6_only_nodes_without_bgp_route_ipam_blocks_through_vxlan_v6() {
    let lab = Lab::new("ipv6_only_vxlan_no_bgp").unwrap();
    let c = Cluster::start_with(&lab, Family::V6Only, Setup::VxlanNoBgp);
    // felix registered the Nodes itself, with their IPv6 address only.
    for n in &c.nodes {
        let y = c.node_yaml(&n.name);
        assert!(!y.contains("ipv4Address"), "{y}");
        assert!(y.contains(&n.v6.to_string()), "{y}");
    }
    let tun2 = c.wait_node_field(&c.nodes[1].name, "ipv6VXLANTunnelAddr");
    let tun1 = c.wait_node_field(&c.nodes[0].name, "ipv6VXLANTunnelAddr");
    let a = c.add_pod(&lab, 0, "pa", false);
    let b = c.add_pod(&lab, 1, "pb", false);
    c.wait_route(0, &block6(b.addr(true)), |r| {
        r["dev"] == "vxlan-v6.margay" && r["gateway"] == tun2.as_str()
    });
    c.wait_route(1, &block6(a.addr(true)), |r| {
        r["dev"] == "vxlan-v6.margay" && r["gateway"] == tun1.as_str()
    });
    let logs = c.logs();
    ping(&a, b.addr(true), &logs);
    ping(&b, a.addr(true), &logs);
    // No IPv4 pool, no IPv4 device.
    assert!(
        c.nodes[0]
            .ns
            .ip_json(&["link", "show", "vxlan.margay"])
            .is_err(),
        "an IPv4 VXLAN device on an IPv6-only node"
    );
}
