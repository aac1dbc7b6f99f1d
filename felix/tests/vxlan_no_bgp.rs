//! Calico's `vxlan` networking backend on this machine's kernel: a real etcd and three node
//! namespaces on one switch, each running margay-felix alone (`--networking-backend vxlan`, no
//! margay-bgpd anywhere). felix registers its Node, takes its VXLAN tunnel address (and so its
//! first block) through IPAM, and programs every other node's blocks through that node's VTEP.
//! Pods on two nodes ping each other; a block claimed by a node, and a node deleted, reach the
//! other kernels in under a second (the figure; bench/vxlan-join.sh measures the p99).

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use common::{ip_json, show, store_in, wire_pod};
use ipnet::{IpNet, Ipv4Net};
use margay_datastore::ipam::{Ipam, Want};
use margay_datastore::resources::{AllowedUse, NodeSpec, Resource, WorkloadEndpointSpec};
use margay_lab::{Addrs, Etcd, Felix, FelixArgs, HasLogs, Lab, Netns, wait_for};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);
/// The bound for a join or a leave to reach every kernel.
const PROPAGATION: Duration = Duration::from_secs(1);

struct Node {
    name: String,
    ns: Netns,
    addr: Addrs,
    felix: Option<Felix>,
}

struct Cluster {
    nodes: Vec<Node>,
    etcd: Etcd,
    /// The switch, removed when the cluster is dropped (after the nodes' felix).
    _sw: margay_lab::LabSwitch,
}

impl Cluster {
    fn new(lab: &Lab, names: &[&str]) -> Cluster {
        let sw = lab.switch("sw").unwrap();
        let etcd = Etcd::on_switch(lab, &sw).unwrap();
        etcd.apply(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pool1}\n\
             spec: {cidr: 10.102.0.0/16, vxlanMode: Always}\n---\n\
             apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pool2}\n\
             spec: {cidr: 10.103.0.0/16, vxlanMode: Always}\n",
        )
        .unwrap();
        let gw = etcd.ip().to_string();
        let nodes = names
            .iter()
            .map(|name| {
                let ns = lab.netns(name).unwrap();
                let addr = sw.attach(&ns).unwrap();
                // Proxy ARP answers for the pods' 169.254.1.1 only when the host routes it.
                ns.ip(&["route", "add", "default", "via", &gw]).unwrap();
                Node {
                    name: name.to_string(),
                    ns,
                    addr,
                    felix: None,
                }
            })
            .collect();
        Cluster {
            nodes,
            etcd,
            _sw: sw,
        }
    }

    fn url(&self) -> String {
        self.etcd.endpoint()
    }

    /// Starts felix without bgpd on node `i`; returns once it is ready.
    fn start(&mut self, lab: &Lab, i: usize) {
        let url = self.url();
        let n = &mut self.nodes[i];
        let args = FelixArgs::new(
            &n.name,
            &url,
            &lab.dir().join(format!("{}-no-bgpd.sock", n.name)),
            &lab.dir().join(format!("{}-felix.sock", n.name)),
        )
        .without_bgp(IpNet::V4(n.addr.v4));
        let f = Felix::start_cluster(lab, &n.ns, &format!("felix-{}", n.name), args)
            .unwrap_or_else(|e| panic!("{e}"));
        n.felix = Some(f);
    }

    fn logs(&self) -> Vec<&dyn HasLogs> {
        let mut v: Vec<&dyn HasLogs> = vec![&self.etcd];
        v.extend(
            self.nodes
                .iter()
                .filter_map(|n| n.felix.as_ref().map(|f| f as &dyn HasLogs)),
        );
        v
    }

    fn node(&self, name: &str) -> Option<NodeSpec> {
        let name = name.to_string();
        store_in(self.etcd.netns(), &self.url(), move |s| async move {
            s.get::<NodeSpec>(&name).await.unwrap().map(|r| r.spec)
        })
    }

    /// Node `i`'s VXLAN tunnel address, once felix has recorded it.
    fn vtep(&self, i: usize) -> Ipv4Addr {
        let mut got = None;
        wait_for("tunnel address recorded", WAIT, &self.logs(), || {
            got = self
                .node(&self.nodes[i].name)
                .and_then(|n| n.ipv4_vxlan_tunnel_addr)
                .and_then(|a| a.parse().ok());
            got.map(|_| ()).ok_or_else(|| "not yet".to_string())
        })
        .unwrap_or_else(|e| panic!("{e}"));
        got.unwrap()
    }

    fn routes(&self, i: usize) -> Vec<Value> {
        ip_json(&self.nodes[i].ns, &["route", "show", "table", "main"])
    }

    /// Waits until every node in `on` satisfies `check` on its routes.
    fn wait_all(&self, on: &[usize], what: &str, check: impl Fn(&[Value]) -> Result<(), String>) {
        wait_for(what, WAIT, &self.logs(), || {
            for &i in on {
                let all = self.routes(i);
                check(&all)
                    .map_err(|e| format!("{}: {e}\nroutes:\n{}", self.nodes[i].name, show(&all)))?;
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// How long until `check` holds on every node in `on`, polled every 5 ms (at most WAIT).
    fn time_until(&self, on: &[usize], check: impl Fn(&[Value]) -> bool) -> Duration {
        let start = Instant::now();
        while start.elapsed() < WAIT {
            if on.iter().all(|&i| check(&self.routes(i))) {
                return start.elapsed();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("not reached in {WAIT:?}");
    }

    /// A pod on node `i` (IPAM address, veth, WorkloadEndpoint).
    fn pod(&self, lab: &Lab, i: usize, role: &str) -> (Netns, Ipv4Addr) {
        let node = self.nodes[i].name.clone();
        let handle = format!("margay-pod-network.{role}");
        let n2 = node.clone();
        let ip = store_in(self.etcd.netns(), &self.url(), move |s| async move {
            Ipam::new(s)
                .auto_assign(&handle, &n2, &Default::default(), 1, 0, &["pool1".into()])
                .await
                .unwrap()
                .v4[0]
        });
        let IpAddr::V4(ip) = ip else { panic!("IPv4") };
        let ns = lab.netns(role).unwrap();
        let cali = format!("cali{}{:0>7}", lab.tag(), role);
        wire_pod(&self.nodes[i].ns, &ns, &cali, &ip.to_string());
        let mut r = Resource::new(
            format!("{node}-k8s-{role}-eth0"),
            WorkloadEndpointSpec {
                node,
                container_id: role.to_string(),
                ip_networks: vec![format!("{ip}/32")],
                interface_name: cali,
                ..Default::default()
            },
        );
        r.metadata.namespace = Some("default".into());
        store_in(self.etcd.netns(), &self.url(), move |s| async move {
            s.create(&r).await.unwrap();
        });
        (ns, ip)
    }
}

fn block_of(ip: Ipv4Addr) -> String {
    Ipv4Net::new(ip, 26).unwrap().trunc().to_string()
}

/// The route to `dst` goes through vxlan.margay to `via`.
fn through_vtep(all: &[Value], dst: &str, via: Ipv4Addr) -> Result<(), String> {
    let r = all
        .iter()
        .find(|r| r["dst"] == dst)
        .ok_or_else(|| format!("no route to {dst}"))?;
    if r["dev"] == "vxlan.margay" && r["gateway"] == via.to_string() && r["protocol"] == "81" {
        Ok(())
    } else {
        Err(format!("route {r} is not via {via} dev vxlan.margay"))
    }
}

fn has_route(all: &[Value], dst: &str) -> bool {
    all.iter().any(|r| r["dst"] == dst)
}

#[test]
fn vxlan_backend_routes_every_block_from_ipam_without_bgpd() {
    let lab = Lab::new("vxlan_backend_routes_every_block_from_ipam_without_bgpd").unwrap();
    let mut c = Cluster::new(&lab, &["n1", "n2", "n3"]);
    c.start(&lab, 0);
    c.start(&lab, 1);
    // felix registered each Node itself (no bgpd ran), with the address it was given.
    let n1 = c.node("n1").expect("felix created its Node");
    assert_eq!(
        n1.bgp.and_then(|b| b.ipv4_address).as_deref(),
        Some(c.nodes[0].addr.v4.to_string().as_str())
    );
    let (t1, t2) = (c.vtep(0), c.vtep(1));
    let (b1, b2) = (block_of(t1), block_of(t2));
    c.wait_all(&[0], "n1 routes n2's block through n2's VTEP", |all| {
        through_vtep(all, &b2, t2)
    });
    c.wait_all(&[1], "n2 routes n1's block through n1's VTEP", |all| {
        through_vtep(all, &b1, t1)
    });
    // The VTEP's neighbour and FDB entries: n2's MAC at n2's tunnel address, n2's node address.
    let mac2 = c.node("n2").unwrap().vxlan_tunnel_mac_addr.unwrap();
    let neigh = ip_json(&c.nodes[0].ns, &["neigh", "show", "dev", "vxlan.margay"]);
    assert!(
        neigh
            .iter()
            .any(|n| n["dst"] == t2.to_string() && n["lladdr"] == mac2),
        "{neigh:?}"
    );

    // Pods on two nodes reach each other through the tunnel.
    let (pa, ipa) = c.pod(&lab, 0, "pa");
    let (_pb, ipb) = c.pod(&lab, 1, "pb");
    wait_for("pa pings pb across VXLAN", WAIT, &c.logs(), || {
        pa.exec("ping", &["-c", "1", "-W", "1", &ipb.to_string()])
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(block_of(ipa), block_of(ipb));

    // A third node joins: its felix starts, and its first block reaches both kernels.
    let joined = Instant::now();
    c.start(&lab, 2);
    let t3 = c.vtep(2);
    let b3 = block_of(t3);
    let took = c.time_until(&[0, 1], |all| through_vtep(all, &b3, t3).is_ok());
    eprintln!(
        "node join (felix start -> its block in both other kernels): {:?}",
        joined.elapsed()
    );
    eprintln!("  after its tunnel address was recorded: {took:?}");

    // A new block claimed by n3 (a pool its first block is not in) reaches both kernels within
    // a second of IPAM's write.
    let block = store_in(c.etcd.netns(), &c.url(), |s| async move {
        let got = Ipam::new(s)
            .auto_assign_for(
                Want {
                    usage: AllowedUse::Workload,
                    num_v4: 1,
                    num_v6: 0,
                },
                "margay-pod-network.late",
                "n3",
                &Default::default(),
                &["pool2".into()],
            )
            .await
            .unwrap();
        match got.v4[0] {
            IpAddr::V4(a) => a,
            _ => unreachable!(),
        }
    });
    let b = block_of(block);
    let took = c.time_until(&[0, 1], |all| through_vtep(all, &b, t3).is_ok());
    eprintln!("block claimed -> in both kernels: {took:?}");
    assert!(took < PROPAGATION, "block join took {took:?}");

    // n3 leaves: its felix stops and its Node is deleted; its blocks leave both kernels
    // within a second of the delete.
    c.nodes[2].felix.take();
    store_in(c.etcd.netns(), &c.url(), |s| async move {
        s.delete::<NodeSpec>(None, "n3", None).await.unwrap();
    });
    let took = c.time_until(&[0, 1], |all| !has_route(all, &b3) && !has_route(all, &b));
    eprintln!("Node deleted -> its blocks gone from both kernels: {took:?}");
    assert!(took < PROPAGATION, "node leave took {took:?}");
    // The others keep routing each other.
    c.wait_all(&[0], "n1 still routes n2", |all| through_vtep(all, &b2, t2));
}

/// `vxlan.margay`'s (VNI, UDP port, MTU) on node `i`, as `ip -d -j link` prints them.
fn vxlan_device(c: &Cluster, i: usize) -> Option<(u64, u64, u64)> {
    // None while the device is absent: felix re-creates it when the VNI or port changes.
    let l = c.nodes[i]
        .ns
        .ip_json(&["-d", "link", "show", "dev", "vxlan.margay"])
        .ok()?;
    let l = l.first()?;
    let data = &l["linkinfo"]["info_data"];
    Some((
        data["id"].as_u64()?,
        data["port"].as_u64()?,
        l["mtu"].as_u64()?,
    ))
}

/// Waits until node `i`'s `vxlan.margay` has (VNI, port, MTU) `want`.
fn wait_device(c: &Cluster, i: usize, what: &str, want: (u64, u64, u64)) {
    wait_for(what, WAIT, &c.logs(), || match vxlan_device(c, i) {
        Some(got) if got == want => Ok(()),
        other => Err(format!("{other:?}")),
    })
    .unwrap_or_else(|e| panic!("{e}"));
}

/// A CNI ADD on node `i` that names no MTU; returns the MTU of the pod's eth0 (result and
/// kernel).
fn add_without_mtu(lab: &Lab, c: &Cluster, i: usize, pod: &str) -> (u32, u64, Netns) {
    use margay_proto::felix::v1 as pb;
    let ns = lab.netns(pod).unwrap();
    let req = pb::AddEndpointRequest {
        attachment: Some(pb::Attachment {
            container_id: format!("{pod}-c"),
            interface_name: "eth0".into(),
        }),
        netns: format!("/var/run/netns/{}", ns.name()),
        workload: Some(pb::Workload {
            namespace: "default".into(),
            name: pod.into(),
            ..Default::default()
        }),
        network_name: "margay-pod-network".into(),
        mtu: 0,
        node_name: c.nodes[i].name.clone(),
        ipam: Some(pb::add_endpoint_request::Ipam::Margay(pb::MargayIpam {
            assign_ipv4: true,
            ..Default::default()
        })),
    };
    let socket = lab.dir().join(format!("{}-felix.sock", c.nodes[i].name));
    let resp = common::rt()
        .block_on(async {
            common::cni_client(&socket)
                .await
                .unwrap()
                .add_endpoint(req)
                .await
        })
        .unwrap()
        .into_inner();
    let result_mtu = resp
        .result
        .unwrap()
        .interfaces
        .iter()
        .find(|i| !i.sandbox.is_empty())
        .map(|i| i.mtu)
        .unwrap();
    let kernel = ip_json(&ns, &["link", "show", "dev", "eth0"])[0]["mtu"]
        .as_u64()
        .unwrap();
    (result_mtu, kernel, ns)
}

#[test]
fn felix_configuration_applies_live_with_per_node_precedence() {
    let lab = Lab::new("felix_configuration_applies_live_with_per_node_precedence").unwrap();
    let mut c = Cluster::new(&lab, &["n1", "n2", "n3"]);
    // Each node's uplink is the only interface the MTU pattern matches.
    let uplink = |i: usize| -> String {
        ip_json(&c.nodes[i].ns, &["-4", "addr", "show"])
            .iter()
            .find(|l| l["addr_info"][0]["local"] == c.nodes[i].addr.v4.addr().to_string())
            .and_then(|l| l["ifname"].as_str().map(str::to_string))
            .expect("uplink")
    };
    let (u1, u2) = (uplink(0), uplink(1));
    c.etcd
        .apply(&format!(
            "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {{name: default}}\n\
             spec: {{mtuIfacePattern: '^({u1}|{u2})$'}}\n"
        ))
        .unwrap();
    c.start(&lab, 0);
    c.start(&lab, 1);
    let t2 = c.vtep(1);
    let b2 = block_of(t2);
    wait_device(&c, 0, "Calico's VXLAN defaults", (4096, 4789, 1450));
    // Pod MTU auto-detection: the uplink's 1500 less VXLAN's 50, in the result and the veth.
    let (result_mtu, kernel_mtu, _pod) = add_without_mtu(&lab, &c, 0, "auto1");
    assert_eq!((result_mtu, kernel_mtu), (1450, 1450));

    // The global FelixConfiguration, changed live: both nodes re-create the device with the new
    // VNI and port and keep routing through it. An unsupported field is accepted and warned.
    c.etcd
        .apply(&format!(
            "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {{name: default}}\n\
             spec: {{mtuIfacePattern: '^({u1}|{u2})$', vxlanVNI: 5000, vxlanPort: 8472, vxlanMTU: 1300, \
             bpfEnabled: true}}\n"
        ))
        .unwrap();
    for i in [0, 1] {
        wait_device(&c, i, "new VNI, port and MTU", (5000, 8472, 1300));
    }
    c.wait_all(&[0], "n1 routes n2 through the new device", |all| {
        through_vtep(all, &b2, t2)
    });
    // felix logs the field it does not apply, once.
    let log = std::fs::read_to_string(lab.dir().join("felix-n1.stderr")).unwrap();
    assert_eq!(
        log.matches("spec.bpfEnabled is accepted but not acted on")
            .count(),
        1,
        "{log}"
    );

    // Calico's Prometheus server, asked for by node.n2 only; healthPort there loses to
    // felix's --http-port flag (Calico's precedence: the environment wins).
    c.etcd
        .apply(
            "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: node.n2}\n\
             spec: {prometheusMetricsEnabled: true, prometheusMetricsPort: 9191, healthPort: 9555}\n",
        )
        .unwrap();
    wait_for("n2 serves /metrics on 9191", WAIT, &c.logs(), || {
        let (code, body) = common::http_get(&c.nodes[1].ns, 9191, "/metrics")?;
        (code == 200 && body.contains("margay_felix"))
            .then_some(())
            .ok_or(format!("{code}"))
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(common::http_get(&c.nodes[0].ns, 9191, "/metrics").is_err());
    assert_eq!(
        common::http_get(&c.nodes[1].ns, 9099, "/readiness")
            .unwrap()
            .0,
        200
    );
    assert!(common::http_get(&c.nodes[1].ns, 9555, "/readiness").is_err());

    // Without --http-port (felix's default), node.n3's healthPort moves the health server.
    c.etcd
        .apply(
            "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: node.n3}\n\
             spec: {healthPort: 9556}\n",
        )
        .unwrap();
    let n3 = &c.nodes[2];
    let sock = lab.dir().join("n3-felix.sock");
    let _f3 = margay_lab::Process::spawn(
        &n3.ns,
        "felix-n3-default-port",
        common::felix_bin(),
        [
            "--node",
            "n3",
            "--etcd-endpoints",
            &c.url(),
            "--socket",
            sock.to_str().unwrap(),
            "--networking-backend",
            "vxlan",
            "--ip",
            &n3.addr.v4.to_string(),
        ],
        lab.dir(),
    )
    .unwrap();
    wait_for("n3's health server on 9556", WAIT, &c.logs(), || {
        let (code, _) = common::http_get(&n3.ns, 9556, "/readiness")?;
        (code == 200).then_some(()).ok_or(format!("{code}"))
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        common::http_get(&n3.ns, 9099, "/readiness").is_err(),
        "the old port is closed once the new one is bound"
    );

    // node.n1 wins over default for n1 only.
    c.etcd
        .apply(
            "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: node.n1}\n\
             spec: {vxlanMTU: 1250}\n",
        )
        .unwrap();
    wait_device(&c, 0, "n1 takes its own MTU", (5000, 8472, 1250));
    assert_eq!(vxlan_device(&c, 1), Some((5000, 8472, 1300)));

    // Deleting the per-node one falls back to the global value.
    c.etcd.delete("felixconfiguration", "node.n1").unwrap();
    wait_device(&c, 0, "n1 back on the global MTU", (5000, 8472, 1300));
}

/// Node `i`'s routes to `dst` in the main table, as `ip -j` gives them.
fn route_to(c: &Cluster, i: usize, dst: &str) -> Option<Value> {
    c.routes(i).into_iter().find(|r| r["dst"] == dst)
}

/// Node `i`'s `table ip margay` as `nft list` prints it.
fn nat_table(c: &Cluster, i: usize) -> String {
    c.nodes[i]
        .ns
        .exec("nft", &["list", "table", "ip", "margay"])
        .unwrap_or_default()
}

#[test]
fn route_nat_and_interface_fields_apply_live() {
    let lab = Lab::new("route_nat_and_interface_fields_apply_live").unwrap();
    let mut c = Cluster::new(&lab, &["n1", "n2"]);
    let n1_ip = c.nodes[0].addr.v4.addr();
    // natOutgoing on pool1; interfacePrefix, natPortRange and natOutgoingAddress for every
    // node; deviceRouteSourceAddress only for n1 (it must be one of the node's addresses).
    c.etcd
        .apply(&format!(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: pool1}}\n\
             spec: {{cidr: 10.102.0.0/16, vxlanMode: Always, natOutgoing: true}}\n---\n\
             apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {{name: default}}\n\
             spec: {{interfacePrefix: 'tap,cali', natPortRange: '40000:40100', \
             natOutgoingAddress: 192.0.2.7}}\n---\n\
             apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {{name: node.n1}}\n\
             spec: {{deviceRouteSourceAddress: {n1_ip}}}\n"
        ))
        .unwrap();
    c.start(&lab, 0);
    c.start(&lab, 1);

    // interfacePrefix: the CNI ADD names the veth with the first prefix and Calico's hash;
    // deviceRouteSourceAddress: the pod's route carries it as its src.
    let pod = format!("pfx{}", lab.tag());
    let (_, _, _pod_ns) = add_without_mtu(&lab, &c, 0, &pod);
    let pair = ("default".to_string(), pod.clone());
    let veth = margay_felix::endpoints::naming::host_ifname("tap", Some(&pair), "unused");
    assert!(veth.starts_with("tap") && veth.len() == 14, "{veth}");
    assert!(
        !ip_json(&c.nodes[0].ns, &["link", "show", "dev", &veth]).is_empty(),
        "no {veth}"
    );
    let pod_route = c
        .routes(0)
        .into_iter()
        .find(|r| r["dev"] == veth.as_str())
        .unwrap_or_else(|| panic!("no route on {veth}:\n{}", show(&c.routes(0))));
    let pod_dst = pod_route["dst"].as_str().unwrap().to_string();
    wait_for(
        "the pod route's src is n1's address",
        WAIT,
        &c.logs(),
        || {
            let r = route_to(&c, 0, &pod_dst).ok_or("gone")?;
            (r["prefsrc"] == n1_ip.to_string() && r["scope"] == "link")
                .then_some(())
                .ok_or(format!("{r}"))
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));

    // natOutgoingAddress and natPortRange: Calico's three rules in felix's NAT table.
    wait_for(
        "SNAT to 192.0.2.7 with the port range",
        WAIT,
        &c.logs(),
        || {
            let t = nat_table(&c, 0);
            let ok = t.contains("meta l4proto tcp snat to 192.0.2.7:40000-40100 fully-random")
                && t.contains("meta l4proto udp snat to 192.0.2.7:40000-40100 fully-random")
                && t.contains("@all-pools snat to 192.0.2.7 fully-random")
                && !t.contains("masquerade");
            ok.then_some(()).ok_or(t)
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));

    // removeExternalRoutes (default true): another program's route through a workload
    // interface goes; through any other interface it stays.
    let ns1 = &c.nodes[0].ns;
    ns1.ip(&[
        "route",
        "add",
        "10.250.0.0/24",
        "dev",
        &veth,
        "proto",
        "static",
    ])
    .unwrap();
    ns1.ip(&[
        "route",
        "add",
        "10.251.0.0/24",
        "via",
        &c.etcd.ip().to_string(),
        "proto",
        "static",
    ])
    .unwrap();
    wait_for(
        "felix removes the external route on its veth",
        WAIT,
        &c.logs(),
        || route_to(&c, 0, "10.250.0.0/24").map_or(Ok(()), |r| Err(format!("still there: {r}"))),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(route_to(&c, 0, "10.251.0.0/24").is_some());

    // removeExternalRoutes: false for n1 (with a port range of its own, to see the change
    // applied): such a route stays.
    c.etcd
        .apply(&format!(
            "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {{name: node.n1}}\n\
             spec: {{deviceRouteSourceAddress: {n1_ip}, removeExternalRoutes: false, \
             natPortRange: '41000:41010'}}\n"
        ))
        .unwrap();
    wait_for("n1's own port range", WAIT, &c.logs(), || {
        let t = nat_table(&c, 0);
        t.contains("snat to 192.0.2.7:41000-41010")
            .then_some(())
            .ok_or(t)
    })
    .unwrap_or_else(|e| panic!("{e}"));
    ns1.ip(&[
        "route",
        "add",
        "10.250.0.0/24",
        "dev",
        &veth,
        "proto",
        "static",
    ])
    .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        route_to(&c, 0, "10.250.0.0/24").is_some(),
        "removeExternalRoutes: false, but the route went"
    );
    // n2 still removes them (its configuration is the default one).
    let (_, _, _pod2_ns) = add_without_mtu(&lab, &c, 1, &format!("pfy{}", lab.tag()));
    let veth2 = margay_felix::endpoints::naming::host_ifname(
        "tap",
        Some(&("default".to_string(), format!("pfy{}", lab.tag()))),
        "unused",
    );
    c.nodes[1]
        .ns
        .ip(&[
            "route",
            "add",
            "10.250.0.0/24",
            "dev",
            &veth2,
            "proto",
            "static",
        ])
        .unwrap();
    wait_for("n2 removes the external route", WAIT, &c.logs(), || {
        route_to(&c, 1, "10.250.0.0/24").map_or(Ok(()), |r| Err(format!("{r}")))
    })
    .unwrap_or_else(|e| panic!("{e}"));
    // Back to true on n1: felix looks at every route again and removes it.
    c.etcd
        .apply(&format!(
            "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {{name: node.n1}}\n\
             spec: {{deviceRouteSourceAddress: {n1_ip}, removeExternalRoutes: true}}\n"
        ))
        .unwrap();
    wait_for(
        "n1 removes it once removeExternalRoutes is true",
        WAIT,
        &c.logs(),
        || route_to(&c, 0, "10.250.0.0/24").map_or(Ok(()), |r| Err(format!("{r}"))),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(route_to(&c, 0, "10.251.0.0/24").is_some());
}
