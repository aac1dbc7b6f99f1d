//! felix in cluster mode, end to end: a real etcd in its own namespace, two node namespaces on
//! one switch, each running margay-bgpd in cluster mode (it meshes with the other node by
//! itself) and margay-felix in cluster mode. The test plays the CNI plugin: it takes pod
//! addresses through IPAM, writes WorkloadEndpoints and makes the veths.

mod common;

use std::future::Future;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use common::{
    calico_pod, felix_bin, http_get, in_netns as ds_try, ip_json, show, store_in, wire_pod,
};
use ipnet::Ipv4Net;
use margay_datastore::ipam::{Ipam, handle_for_container};
use margay_datastore::resources::{
    AsNumber, BgpPeerSpec, NodeSpec, Resource, WorkloadEndpointSpec,
};
use margay_datastore::{EtcdArgs, Store};
use margay_lab::{
    Addrs, Lab, LabSwitch, Netns, Process, bgpd_binary, holds_for, margay_binary, wait_for,
};
use serde_json::Value;

const POOL: &str = "10.101.0.0/16";
const WAIT: Duration = Duration::from_secs(30);

struct Node {
    name: String,
    ns: Netns,
    addr: Addrs,
    bgpd: Option<Process>,
    felix: Option<Process>,
    bgpd_sock: PathBuf,
    starts: u32,
}

struct Pod {
    ns: Netns,
    ip: Ipv4Addr,
    cali: String,
    container: String,
    wep: String,
}

struct Cluster {
    nodes: Vec<Node>,
    etcd: Process,
    etcd_ns: Netns,
    url: String,
    _sw: LabSwitch,
}

/// A datastore client inside `ns` (see [`store_in`]).
fn ds<T, F, Fut>(ns: &Netns, url: &str, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce(Store) -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    store_in(ns, url, f)
}

impl Cluster {
    fn start(lab: &Lab) -> Cluster {
        let mut c = Cluster::create(lab);
        for i in 0..2 {
            c.start_bgpd(lab, i);
        }
        for i in 0..2 {
            c.start_felix(lab, i);
        }
        c
    }

    /// etcd and the two node namespaces, no daemon on the nodes yet.
    fn create(lab: &Lab) -> Cluster {
        let sw = lab.switch("sw").unwrap();
        let etcd_ns = lab.netns("etcd").unwrap();
        let eaddr = sw.attach(&etcd_ns).unwrap();
        let url = format!("http://{}:2379", eaddr.ip4());
        let data = lab.dir().join("etcd-data");
        let etcd = Process::spawn(
            &etcd_ns,
            "etcd",
            "/usr/bin/etcd",
            [
                "--name",
                "default",
                "--data-dir",
                data.to_str().unwrap(),
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
                "--listen-peer-urls",
                "http://127.0.0.1:2380",
                "--initial-advertise-peer-urls",
                "http://127.0.0.1:2380",
                "--initial-cluster",
                "default=http://127.0.0.1:2380",
            ],
            lab.dir(),
        )
        .unwrap();
        wait_for("etcd answers", WAIT, &[&etcd], || {
            let u = url.clone();
            ds_try(&etcd_ns, move || async move {
                let s = Store::connect(&EtcdArgs::plain([u]))
                    .await
                    .map_err(|e| e.to_string())?;
                s.revision().await.map(|_| ()).map_err(|e| e.to_string())
            })
        })
        .unwrap();
        let mut nodes = Vec::new();
        for name in ["n1", "n2"] {
            let ns = lab.netns(name).unwrap();
            let addr = sw.attach(&ns).unwrap();
            // A default route (through etcd's host, a node with no route beyond it): proxy ARP
            // answers for the pods' gateway 169.254.1.1 only when the host routes it.
            ns.ip(&["route", "add", "default", "via", &eaddr.ip4().to_string()])
                .unwrap();
            let bgpd_sock = lab.dir().join(format!("{name}-bgpd.sock"));
            nodes.push(Node {
                name: name.to_string(),
                ns,
                addr,
                bgpd: None,
                felix: None,
                bgpd_sock,
                starts: 0,
            });
        }
        Cluster {
            nodes,
            etcd,
            etcd_ns,
            url,
            _sw: sw,
        }
    }

    fn start_bgpd(&mut self, lab: &Lab, i: usize) {
        let url = self.url.clone();
        let n = &mut self.nodes[i];
        n.starts += 1;
        let ip = n.addr.v4.to_string();
        let sock = n.bgpd_sock.to_str().unwrap().to_string();
        let p = Process::spawn(
            &n.ns,
            &format!("bgpd-{}-{}", n.name, n.starts),
            bgpd_binary().unwrap(),
            [
                "--datastore",
                "etcd",
                "--node",
                &n.name,
                "--ip",
                &ip,
                "--etcd-endpoints",
                &url,
                "--socket",
                &sock,
                "--http-port",
                "0",
            ],
            lab.dir(),
        )
        .unwrap();
        n.bgpd = Some(p);
    }

    fn start_felix(&mut self, lab: &Lab, i: usize) {
        self.start_felix_with(lab, i, &[]);
    }

    /// felix with `extra` flags.
    fn start_felix_with(&mut self, lab: &Lab, i: usize, extra: &[&str]) {
        let url = self.url.clone();
        let n = &mut self.nodes[i];
        n.starts += 1;
        let sock = n.bgpd_sock.to_str().unwrap().to_string();
        let api = lab.dir().join(format!("{}-felix.sock", n.name));
        let p = Process::spawn(
            &n.ns,
            &format!("felix-{}-{}", n.name, n.starts),
            felix_bin(),
            [
                "--node",
                &n.name,
                "--etcd-endpoints",
                &url,
                "--bgpd-socket",
                &sock,
                "--socket",
                api.to_str().unwrap(),
                "--http-port",
                "9099",
                "--resync-interval",
                "1",
            ]
            .into_iter()
            .chain(extra.iter().copied()),
            lab.dir(),
        )
        .unwrap();
        n.felix = Some(p);
    }

    fn logs(&self) -> Vec<&dyn margay_lab::HasLogs> {
        let mut v: Vec<&dyn margay_lab::HasLogs> = vec![&self.etcd];
        for n in &self.nodes {
            if let Some(p) = &n.bgpd {
                v.push(p);
            }
            if let Some(p) = &n.felix {
                v.push(p);
            }
        }
        v
    }

    fn apply_pool(&self, lab: &Lab, vxlan: &str) {
        let f = lab.dir().join(format!("pool-{vxlan}.yaml"));
        std::fs::write(
            &f,
            format!(
                "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: pool1}}\n\
                 spec: {{cidr: {POOL}, ipipMode: Never, vxlanMode: {vxlan}, natOutgoing: true}}\n"
            ),
        )
        .unwrap();
        let ctl = margay_binary("margayctl", "cargo build -p margay-ctl").unwrap();
        self.etcd_ns
            .exec(
                ctl.to_str().unwrap(),
                &[
                    "apply",
                    "-f",
                    f.to_str().unwrap(),
                    "--etcd-endpoints",
                    &self.url,
                ],
            )
            .unwrap();
    }

    /// A pod on node `i`: an address through IPAM, the veth, and its WorkloadEndpoint.
    fn add_pod(&self, lab: &Lab, i: usize, role: &str) -> Pod {
        let node = self.nodes[i].name.clone();
        let container = format!("{role}-container");
        let handle = handle_for_container(&container);
        let n2 = node.clone();
        let ip = ds(&self.etcd_ns, &self.url, move |s| async move {
            let ipam = Ipam::new(s);
            ipam.auto_assign(&handle, &n2, &Default::default(), 1, 0, &[])
                .await
                .unwrap()
                .v4[0]
        });
        let std::net::IpAddr::V4(ip) = ip else {
            panic!("IPv4 expected")
        };
        let ns = lab.netns(role).unwrap();
        let cali = format!("cali{}{:0>7}", lab.tag(), role);
        let host = &self.nodes[i].ns;
        wire_pod(host, &ns, &cali, &ip.to_string());
        let wep = format!("{node}-k8s-{role}-eth0");
        let mut r = Resource::new(
            wep.clone(),
            WorkloadEndpointSpec {
                orchestrator: Some("k8s".into()),
                node,
                container_id: container.clone(),
                pod: Some(role.to_string()),
                endpoint: Some("eth0".into()),
                ip_networks: vec![format!("{ip}/32")],
                interface_name: cali.clone(),
                ..Default::default()
            },
        );
        r.metadata.namespace = Some("default".into());
        ds(&self.etcd_ns, &self.url, move |s| async move {
            s.create(&r).await.unwrap();
        });
        Pod {
            ns,
            ip,
            cali,
            container,
            wep,
        }
    }

    fn node_spec(&self, name: &str) -> NodeSpec {
        let name = name.to_string();
        ds(&self.etcd_ns, &self.url, move |s| async move {
            s.get::<NodeSpec>(&name).await.unwrap().unwrap().spec
        })
    }

    /// Waits until node `i`'s routes (all protocols) satisfy `check`.
    fn wait_routes(&self, i: usize, what: &str, check: impl Fn(&[Value]) -> Result<(), String>) {
        let ns = &self.nodes[i].ns;
        wait_for(what, WAIT, &self.logs(), || {
            let all = ip_json(ns, &["route", "show", "table", "main"]);
            check(&all).map_err(|e| format!("{e}\nroutes:\n{}", show(&all)))
        })
        .unwrap_or_else(|e| panic!("{e}"));
    }

    fn wait_ready(&self, i: usize) {
        let ns = &self.nodes[i].ns;
        wait_for("felix ready", WAIT, &self.logs(), || {
            let (code, body) = http_get(ns, 9099, "/readiness")?;
            (code == 200).then_some(()).ok_or(body)
        })
        .unwrap_or_else(|e| panic!("{e}"));
    }
}

fn block_of(ip: Ipv4Addr) -> Ipv4Net {
    Ipv4Net::new(ip, 26).unwrap().trunc()
}

fn find<'a>(all: &'a [Value], dst: &str) -> Result<&'a Value, String> {
    all.iter()
        .find(|r| r["dst"] == dst)
        .ok_or_else(|| format!("no route to {dst}"))
}

fn field(r: &Value, f: &str, want: &str) -> Result<(), String> {
    if r[f] == want {
        Ok(())
    } else {
        Err(format!("route {r}: {f} is {}, wanted {want}", r[f]))
    }
}

/// Node-local routes: the blackhole of its block and the pod's /32 on its cali.
fn local_ok(all: &[Value], pod: &Pod) -> Result<(), String> {
    let b = find(all, &block_of(pod.ip).to_string())?;
    field(b, "type", "blackhole")?;
    field(b, "protocol", "81")?;
    let p = find(all, &pod.ip.to_string())?;
    field(p, "dev", &pod.cali)
}

fn ping(from: &Pod, to: &Pod, logs: &[&dyn margay_lab::HasLogs]) {
    let dst = to.ip.to_string();
    wait_for(&format!("ping {} -> {dst}", from.ip), WAIT, logs, || {
        from.ns
            .exec("ping", &["-c", "1", "-W", "1", &dst])
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn two_nodes_route_pods_in_never_then_vxlan_mode_and_drop_stale_routes() {
    let lab =
        Lab::new("two_nodes_route_pods_in_never_then_vxlan_mode_and_drop_stale_routes").unwrap();
    let c = Cluster::start(&lab);
    c.apply_pool(&lab, "Never");
    let p1 = c.add_pod(&lab, 0, "pa");
    let p2 = c.add_pod(&lab, 1, "pb");
    let (ip1, ip2) = (
        c.nodes[0].addr.ip4().to_string(),
        c.nodes[1].addr.ip4().to_string(),
    );
    let (b1, b2) = (block_of(p1.ip).to_string(), block_of(p2.ip).to_string());
    assert_ne!(b1, b2, "each node has its own block");

    c.wait_routes(0, "n1: blackhole, pod, route to n2's block via n2", |all| {
        local_ok(all, &p1)?;
        field(find(all, &b2)?, "gateway", &ip2)
    });
    c.wait_routes(1, "n2: blackhole, pod, route to n1's block via n1", |all| {
        local_ok(all, &p2)?;
        field(find(all, &b1)?, "gateway", &ip1)
    });
    c.wait_ready(0);
    c.wait_ready(1);
    ping(&p1, &p2, &c.logs());
    ping(&p2, &p1, &c.logs());

    // VXLAN: tunnel addresses through IPAM, recorded in the Nodes with the VTEP MACs.
    c.apply_pool(&lab, "Always");
    let vtep = |name: &str| -> Result<(String, String), String> {
        let s = c.node_spec(name);
        match (s.ipv4_vxlan_tunnel_addr, s.vxlan_tunnel_mac_addr) {
            (Some(a), Some(m)) => Ok((a, m)),
            other => Err(format!("Node {name} VTEP: {other:?}")),
        }
    };
    let (v1, m1) = wait_for("n1's VTEP in its Node", WAIT, &c.logs(), || vtep("n1")).unwrap();
    let (v2, m2) = wait_for("n2's VTEP in its Node", WAIT, &c.logs(), || vtep("n2")).unwrap();
    assert_eq!(m1, margay_felix::cluster::vtep_mac("n1"));
    assert!(
        block_of(v1.parse().unwrap()).to_string() == b1,
        "n1's VTEP {v1} comes from its block {b1}"
    );
    c.wait_routes(0, "n1: route to n2's block through vxlan.margay", |all| {
        local_ok(all, &p1)?;
        let r = find(all, &b2)?;
        field(r, "dev", "vxlan.margay")?;
        field(r, "gateway", &v2)?;
        if !r["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "onlink"))
        {
            return Err(format!("route {r} is not onlink"));
        }
        Ok(())
    });
    c.wait_routes(1, "n2: route to n1's block through vxlan.margay", |all| {
        let r = find(all, &b1)?;
        field(r, "dev", "vxlan.margay")?;
        field(r, "gateway", &v1)
    });
    let neigh = ip_json(&c.nodes[0].ns, &["neigh", "show", "dev", "vxlan.margay"]);
    assert!(
        neigh
            .iter()
            .any(|n| n["dst"] == v2.as_str() && n["lladdr"] == m2.as_str()),
        "n1's ARP entry for n2's VTEP: {neigh:?}"
    );
    let fdb = c.nodes[0]
        .ns
        .exec("bridge", &["-j", "fdb", "show", "dev", "vxlan.margay"])
        .unwrap();
    assert!(
        fdb.contains(&m2) && fdb.contains(&ip2),
        "n1's FDB entry for n2's VTEP: {fdb}"
    );
    ping(&p1, &p2, &c.logs());
    ping(&p2, &p1, &c.logs());

    // Back to Never: the tunnel addresses are released and the routes go direct again.
    c.apply_pool(&lab, "Never");
    wait_for("n1's VTEP cleared from its Node", WAIT, &c.logs(), || {
        let s = c.node_spec("n1");
        match (&s.ipv4_vxlan_tunnel_addr, &s.vxlan_tunnel_mac_addr) {
            (None, None) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .unwrap();
    c.wait_routes(0, "n1: route to n2's block via n2 again", |all| {
        let r = find(all, &b2)?;
        field(r, "gateway", &ip2)?;
        if r.get("dev").is_some_and(|d| d == "vxlan.margay") {
            return Err(format!("still through VXLAN: {r}"));
        }
        Ok(())
    });
    ping(&p1, &p2, &c.logs());
    wait_for("n1's vxlan.margay removed", WAIT, &c.logs(), || {
        let links = ip_json(&c.nodes[0].ns, &["link", "show"]);
        match links.iter().any(|l| l["ifname"] == "vxlan.margay") {
            true => Err("vxlan.margay still there".to_string()),
            false => Ok(()),
        }
    })
    .unwrap();
    wait_for("both VXLAN handles released", WAIT, &c.logs(), || {
        let held = ds(&c.etcd_ns, &c.url, |s| async move {
            Ipam::new(s)
                .handles()
                .await
                .unwrap()
                .into_iter()
                .map(|h| h.value.handle_id)
                .filter(|h| h.starts_with("vxlan-tunnel-addr-"))
                .collect::<Vec<_>>()
        });
        if held.is_empty() {
            Ok(())
        } else {
            Err(format!("{held:?}"))
        }
    })
    .unwrap();

    // Deleting pod b's endpoint removes its /32 on n2.
    let wep = p2.wep.clone();
    ds(&c.etcd_ns, &c.url, move |s| async move {
        s.delete::<WorkloadEndpointSpec>(Some("default"), &wep, None)
            .await
            .unwrap();
    });
    let pod2 = p2.ip.to_string();
    c.wait_routes(1, "n2: pod b's route gone", |all| match find(all, &pod2) {
        Ok(r) => Err(format!("still there: {r}")),
        Err(_) => Ok(()),
    });
    // Releasing n2's block removes its blackhole there and the route to it on n1.
    let handle = handle_for_container(&p2.container);
    ds(&c.etcd_ns, &c.url, move |s| async move {
        let ipam = Ipam::new(s);
        ipam.release_by_handle(&handle).await.unwrap();
        ipam.release_affinity("n2").await.unwrap();
    });
    let b2c = b2.clone();
    c.wait_routes(
        0,
        "n1: route to n2's released block gone",
        |all| match find(all, &b2c) {
            Ok(r) => Err(format!("still there: {r}")),
            Err(_) => Ok(()),
        },
    );
    c.wait_routes(
        1,
        "n2: blackhole of its released block gone",
        |all| match find(all, &b2) {
            Ok(r) => Err(format!("still there: {r}")),
            Err(_) => Ok(()),
        },
    );
}

#[test]
fn restarting_felix_or_bgpd_changes_no_route() {
    let lab = Lab::new("restarting_felix_or_bgpd_changes_no_route").unwrap();
    let mut c = Cluster::start(&lab);
    c.apply_pool(&lab, "Never");
    let p1 = c.add_pod(&lab, 0, "pa");
    let p2 = c.add_pod(&lab, 1, "pb");
    let ip2 = c.nodes[1].addr.ip4().to_string();
    let b2 = block_of(p2.ip).to_string();
    let routes_ok = |all: &[Value]| -> Result<(), String> {
        local_ok(all, &p1)?;
        field(find(all, &b2)?, "gateway", &ip2)
    };
    c.wait_routes(0, "n1 routes", routes_ok);
    c.wait_ready(0);

    // felix restart: no route event at all.
    c.nodes[0].felix.as_mut().unwrap().stop();
    let mut monitor = Process::spawn(
        &c.nodes[0].ns,
        "monitor",
        "ip",
        ["-4", "monitor", "route"],
        lab.dir(),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    c.start_felix(&lab, 0);
    c.wait_ready(0);
    // The pod's veth, wired as Calico wires it (unmarked), is felix's after the restart.
    let link = ip_json(&c.nodes[0].ns, &["link", "show", "dev", &p1.cali]);
    assert_eq!(link[0]["ifalias"], "margay-endpoint", "{link:?}");
    std::thread::sleep(Duration::from_millis(2500));
    let metrics = http_get(&c.nodes[0].ns, 9099, "/metrics").unwrap().1;
    assert!(
        !metrics.contains("margay_felix_route_writes_total{"),
        "route writes after restart:\n{metrics}"
    );

    // bgpd restart: the route to n2's block stays while it is down and after it is back.
    c.nodes[0].bgpd.as_mut().unwrap().stop();
    holds_for(
        "n1 keeps its routes while bgpd is down",
        Duration::from_secs(3),
        &c.logs(),
        || routes_ok(&ip_json(&c.nodes[0].ns, &["route", "show"])),
    )
    .unwrap();
    // bgpd comes back before it can reach n2 (a blackhole for n2's address, not felix's), so
    // its first table lacks n2's block: felix holds the route as stale until the session is up.
    let n2_host = format!("{ip2}/32");
    c.nodes[0]
        .ns
        .ip(&["route", "add", "blackhole", &n2_host])
        .unwrap();
    c.start_bgpd(&lab, 0);
    holds_for(
        "n1 keeps its routes while bgpd has no session",
        Duration::from_secs(4),
        &c.logs(),
        || routes_ok(&ip_json(&c.nodes[0].ns, &["route", "show"])),
    )
    .unwrap();
    c.nodes[0]
        .ns
        .ip(&["route", "del", "blackhole", &n2_host])
        .unwrap();
    holds_for(
        "n1 keeps its routes as bgpd's session returns",
        Duration::from_secs(8),
        &c.logs(),
        || routes_ok(&ip_json(&c.nodes[0].ns, &["route", "show"])),
    )
    .unwrap();
    monitor.stop();
    let seen = std::fs::read_to_string(monitor.log_paths().0).unwrap();
    let ours: Vec<&str> = seen.lines().filter(|l| l.contains("proto 81")).collect();
    assert!(ours.is_empty(), "felix's routes changed: {ours:?}");
    ping(&p1, &p2, &c.logs());
}

#[test]
fn not_ready_until_the_datastore_has_synced_and_bgpd_answers() {
    let lab = Lab::new("not_ready_until_the_datastore_has_synced_and_bgpd_answers").unwrap();
    let mut c = Cluster::create(&lab);
    c.apply_pool(&lab, "Never");
    c.start_felix(&lab, 0);
    let ns = &c.nodes[0].ns;
    let body = wait_for("felix answers /readiness", WAIT, &c.logs(), || {
        let (code, body) = http_get(ns, 9099, "/readiness")?;
        match code {
            503 if body.contains("bgpd") => Ok(body),
            _ => Err(format!("{code}: {body}")),
        }
    })
    .unwrap();
    assert!(body.contains("bgpd: not reached yet"), "reasons: {body}");
    assert!(
        body.contains("Node n1"),
        "reasons name the missing Node: {body}"
    );
    holds_for(
        "no route programmed without bgpd",
        Duration::from_secs(2),
        &c.logs(),
        || {
            let ours = common::felix_routes(ns);
            if ours.is_empty() {
                Ok(())
            } else {
                Err(show(&ours))
            }
        },
    )
    .unwrap();
    c.start_bgpd(&lab, 0);
    c.wait_ready(0);
}

/// Issue 11, BGPPeer `reachableBy` (as Calico: a host route to the peer through the given
/// gateway): felix follows the BGPPeers, programs the route on the nodes each peer applies to,
/// and removes it when the BGPPeer goes.
#[test]
fn a_bgp_peer_reachable_by_a_gateway_gets_a_host_route_on_its_nodes() {
    let lab = Lab::new("a_bgp_peer_reachable_by_a_gateway_gets_a_host_route").unwrap();
    let c = Cluster::start(&lab);
    c.apply_pool(&lab, "Never");
    c.wait_ready(0);
    c.wait_ready(1);
    // The gateway must be on the nodes' segment: etcd's address is.
    let gw = c
        .url
        .trim_start_matches("http://")
        .trim_end_matches(":2379")
        .to_string();
    let n2 = c.nodes[1].name.clone();
    let peer = |name: &str, node: Option<String>, ip: &str| {
        Resource::new(
            name.to_string(),
            BgpPeerSpec {
                node,
                peer_ip: Some(ip.to_string()),
                as_number: Some(AsNumber(65077)),
                reachable_by: Some(gw.clone()),
                ..Default::default()
            },
        )
    };
    let (global, only_n2) = (
        peer("far-global", None, "192.0.2.77"),
        peer("far-n2", Some(n2), "192.0.2.78"),
    );
    ds(&c.etcd_ns, &c.url, move |s| async move {
        s.create(&global).await.unwrap();
        s.create(&only_n2).await.unwrap();
    });
    let has = |all: &[Value], dst: &str| -> Result<(), String> {
        let r = all
            .iter()
            .find(|r| r["dst"] == dst)
            .ok_or(format!("no route to {dst}"))?;
        (r["gateway"] == gw.as_str())
            .then_some(())
            .ok_or(format!("{r}"))
    };
    let lacks = |all: &[Value], dst: &str| -> Result<(), String> {
        match all.iter().find(|r| r["dst"] == dst) {
            None => Ok(()),
            Some(r) => Err(format!("unexpected {r}")),
        }
    };
    c.wait_routes(0, "n1: the global peer's host route only", |all| {
        has(all, "192.0.2.77")?;
        lacks(all, "192.0.2.78")
    });
    c.wait_routes(1, "n2: both peers' host routes", |all| {
        has(all, "192.0.2.77")?;
        has(all, "192.0.2.78")
    });
    ds(&c.etcd_ns, &c.url, |s| async move {
        s.delete::<BgpPeerSpec>(None, "far-global", None)
            .await
            .unwrap();
    });
    for i in 0..2 {
        c.wait_routes(i, "the deleted peer's route is gone", |all| {
            lacks(all, "192.0.2.77")
        });
    }
}

/// A node as calico-node left it: Calico's keys in etcd (libcalico-go's layout), the pod
/// wired as Calico wires it, its `/32` (protocol boot), its block's blackhole and the other
/// node's block (protocol bird).
struct CalicoNode {
    block: Ipv4Net,
    pod: Netns,
    ip: Ipv4Addr,
}

fn calico_resource(kind: &str, ns: Option<&str>, name: &str, spec: Value) -> Value {
    let mut v = serde_json::json!({"kind": kind, "apiVersion": "projectcalico.org/v3",
        "metadata": {"name": name}, "spec": spec});
    if let Some(ns) = ns {
        v["metadata"]["namespace"] = ns.into();
    }
    v
}

fn calico_keys(c: &Cluster, nodes: &[CalicoNode]) -> Vec<(String, Value)> {
    let res = "/calico/resources/v3/projectcalico.org";
    let mut kvs = vec![(
        format!("{res}/ippools/pool1"),
        calico_resource(
            "IPPool",
            None,
            "pool1",
            serde_json::json!({"cidr": POOL, "blockSize": 26, "ipipMode": "Never",
                               "vxlanMode": "Never", "natOutgoing": true}),
        ),
    )];
    for (n, cn) in c.nodes.iter().zip(nodes) {
        let name = &n.name;
        let container = format!("{name}c0ffee");
        let handle = format!("k8s-pod-network.{container}");
        let cidr = cn.block.to_string();
        let key_cidr = cidr.replace('/', "-");
        let mut allocations = vec![Value::Null; 64];
        allocations[1] = 0.into();
        let wep = format!("{name}-k8s-web-eth0");
        kvs.extend([
            (
                format!("{res}/nodes/{name}"),
                calico_resource(
                    "Node",
                    None,
                    name,
                    serde_json::json!({"bgp": {"ipv4Address": n.addr.v4.to_string()}}),
                ),
            ),
            (
                format!("{res}/workloadendpoints/default/{wep}"),
                calico_resource(
                    "WorkloadEndpoint",
                    Some("default"),
                    &wep,
                    serde_json::json!({"orchestrator": "k8s", "node": name,
                        "containerID": container, "pod": "web", "endpoint": "eth0",
                        "ipNetworks": [format!("{}/32", cn.ip)],
                        "interfaceName": format!("cali{}", &name), "mac": "ee:ee:ee:ee:ee:ee"}),
                ),
            ),
            (
                format!("/calico/ipam/v2/assignment/ipv4/block/{key_cidr}"),
                serde_json::json!({"cidr": cidr, "affinity": format!("host:{name}"),
                    "allocations": allocations,
                    "attributes": [{"handle_id": handle,
                        "secondary": {"namespace": "default", "node": name, "pod": "web"}}],
                    "deleted": false}),
            ),
            (
                format!("/calico/ipam/v2/handle/{handle}"),
                serde_json::json!({"block": {cidr.clone(): 1}, "deleted": false}),
            ),
            (
                format!("/calico/ipam/v2/host/{name}/ipv4/block/{key_cidr}"),
                serde_json::json!({"state": "confirmed", "deleted": false}),
            ),
        ]);
    }
    kvs
}

/// On node `i`: every block's route and the local pod's `/32` are there with felix's protocol.
fn all_adopted(ns: &Netns, i: usize, nodes: &[CalicoNode]) -> Result<(), String> {
    let all = ip_json(ns, &["route", "show"]);
    let mut want: Vec<String> = nodes.iter().map(|n| n.block.to_string()).collect();
    want.push(nodes[i].ip.to_string());
    for dst in want {
        match all.iter().find(|r| r["dst"] == dst.as_str()) {
            Some(r) if r["protocol"] == "81" => {}
            _ => return Err(format!("{dst}: not felix's route yet\n{}", show(&all))),
        }
    }
    Ok(())
}

#[test]
fn a_calico_cluster_moves_to_margay_node_by_node_without_losing_a_ping() {
    let lab = Lab::new("calico_cluster_moves_to_margay").unwrap();
    let mut c = Cluster::create(&lab);
    let pool: Ipv4Net = POOL.parse().unwrap();
    let mut nodes = Vec::new();
    for (i, n) in c.nodes.iter().enumerate() {
        let block = Ipv4Net::new(
            Ipv4Addr::from(u32::from(pool.network()) + 64 * i as u32),
            26,
        )
        .unwrap();
        let ip = Ipv4Addr::from(u32::from(block.network()) + 1);
        let pod = lab.netns(&format!("pod{i}")).unwrap();
        let cali = format!("cali{}", n.name);
        calico_pod(&n.ns, &pod, &cali, &ip.to_string(), &block.to_string());
        nodes.push(CalicoNode { block, pod, ip });
    }
    for (i, n) in c.nodes.iter().enumerate() {
        let other = &c.nodes[1 - i];
        n.ns.ip(&[
            "route",
            "add",
            &nodes[1 - i].block.to_string(),
            "via",
            &other.addr.ip4().to_string(),
            "proto",
            "bird",
        ])
        .unwrap();
    }
    let kvs = calico_keys(&c, &nodes);
    ds(&c.etcd_ns, &c.url, move |s| async move {
        let mut kv = s.client().kv_client();
        for (k, v) in kvs {
            kv.put(k, serde_json::to_vec(&v).unwrap(), None)
                .await
                .unwrap();
        }
    });

    // 100 pings a second from the pod on n1 to the pod on n2, from before the import to
    // after both nodes run margay.
    let ping = Process::spawn(
        &nodes[0].pod,
        "ping",
        "ping",
        ["-n", "-i", "0.01", "-W", "1", &nodes[1].ip.to_string()],
        lab.dir(),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));

    let ctl = margay_binary("margayctl", "cargo build -p margay-ctl").unwrap();
    let out = c
        .etcd_ns
        .exec(
            ctl.to_str().unwrap(),
            &[
                "datastore",
                "migrate",
                "from-calico",
                "--etcd-endpoints",
                &c.url,
            ],
        )
        .unwrap();
    assert!(out.contains("0 updated"), "{out}");

    // Node by node: bgpd, then felix adopting what calico-node left.
    for i in 0..2 {
        c.start_bgpd(&lab, i);
        c.start_felix_with(&lab, i, &["--adopt-route-protocols", "calico"]);
        c.wait_ready(i);
        std::thread::sleep(Duration::from_millis(1000));
    }
    for i in 0..2 {
        let ns = &c.nodes[i].ns;
        wait_for("every pod route felix's", WAIT, &c.logs(), || {
            all_adopted(ns, i, &nodes)
        })
        .unwrap_or_else(|e| panic!("{e}"));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let summary = ping.ping_summary(Duration::from_secs(5)).unwrap();
    assert!(summary.contains(" 0% packet loss"), "{summary}");
    let sent: u32 = summary.split_whitespace().next().unwrap().parse().unwrap();
    assert!(sent >= 200, "{summary}");

    let out = c
        .etcd_ns
        .exec(
            ctl.to_str().unwrap(),
            &["ipam", "check", "--json", "--etcd-endpoints", &c.url],
        )
        .unwrap();
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["addresses_in_use"], 2, "{report}");
    assert_eq!(
        report["handles_without_endpoint"],
        serde_json::json!([]),
        "{report}"
    );
    assert_eq!(
        report["endpoints_without_handle"],
        serde_json::json!([]),
        "{report}"
    );
}
