//! The `margay` binary driven as a runtime drives it, against the real margay-felix in cluster
//! mode (with margay-bgpd and etcd) in a node namespace, on real pod namespaces: results per
//! spec version and what they really configured, CHECK finding a route deleted by hand, DEL
//! leaving nothing, chaining with the reference `portmap`, 100 concurrent ADDs and 1,000
//! ADD/DEL cycles that leave no veth, route, handle or address behind.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Run, run_plugin};
use margay_lab::{
    Bgpd, ClusterArgs, Etcd, Felix, FelixArgs, Lab, LabSwitch, Netns, Process, wait_for,
};
use serde_json::{Value, json};

const POOL: &str = "10.102.0.0/16";
const NETWORK: &str = "margay-pod-network";

struct Node {
    felix: Option<Felix>,
    _bgpd: Bgpd,
    ns: Netns,
    ip: String,
    socket: PathBuf,
    etcd: Etcd,
    _sw: LabSwitch,
}

fn netns_path(ns: &Netns) -> String {
    format!("/var/run/netns/{}", ns.name())
}

impl Node {
    /// etcd, one node namespace with margay-bgpd and margay-felix in cluster mode, a pool.
    fn start(lab: &Lab) -> Node {
        let sw = lab.switch("sw").unwrap();
        let etcd = Etcd::on_switch(lab, &sw).unwrap();
        etcd.apply(&format!(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: pool1}}\n\
             spec: {{cidr: {POOL}, ipipMode: Never, vxlanMode: Never, blockSize: 24}}\n"
        ))
        .unwrap();
        // Pods reach their node, as Calico's own manifest sets it (felix's built-in default,
        // Drop, would stop the pod's ping to its node below).
        etcd.apply(
            "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\n\
             spec: {defaultEndpointToHostAction: Accept}\n",
        )
        .unwrap();
        let ns = lab.netns("n1").unwrap();
        let addr = sw.attach(&ns).unwrap();
        // Proxy ARP answers for 169.254.1.1 only when the node routes it.
        ns.ip(&["route", "add", "default", "via", &etcd.ip().to_string()])
            .unwrap();
        let bgpd = Bgpd::start_cluster(
            lab,
            &ns,
            "bgpd-n1",
            ClusterArgs::new("n1", &etcd.endpoint(), ipnet::IpNet::V4(addr.v4)),
        )
        .unwrap();
        let socket = lab.dir().join("felix.sock");
        let mut n = Node {
            felix: None,
            _bgpd: bgpd,
            ip: addr.ip4().to_string(),
            ns,
            socket,
            etcd,
            _sw: sw,
        };
        n.start_felix(lab);
        n
    }

    fn start_felix(&mut self, lab: &Lab) {
        let args = FelixArgs::new(
            "n1",
            &self.etcd.endpoint(),
            &lab.dir().join("bgpd-n1.sock"),
            &self.socket,
        );
        let felix = Felix::start_cluster(lab, &self.ns, "felix-n1", args).unwrap();
        self.felix = Some(felix);
        // STATUS through the plugin: ready once felix has synced and etcd answers.
        let conf = self.conf("1.1.0").to_string();
        wait_for(
            "felix ready (CNI STATUS)",
            Duration::from_secs(60),
            &[self.felix.as_ref().unwrap()],
            || common::status_ok(&conf),
        )
        .unwrap();
    }

    fn conf(&self, version: &str) -> Value {
        json!({
            "cniVersion": version,
            "name": NETWORK,
            "type": "margay",
            "mtu": 1450,
            "ipam": {"type": "margay-ipam"},
            "felix_socket": self.socket.to_str().unwrap(),
            "nodename": "n1",
            "log_level": "warn",
        })
    }

    fn routes(&self) -> Vec<Value> {
        common::ip_json(&self.ns, &["route", "show", "table", "main"])
    }
}

fn env<'a>(
    cmd: &'a str,
    container: &'a str,
    netns: &'a str,
    args: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("CNI_COMMAND", cmd),
        ("CNI_CONTAINERID", container),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", args),
        ("CNI_PATH", "/usr/lib/cni"),
        ("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
    ]
}

fn pod_args(pod: &str) -> String {
    format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod}")
}

/// The pod's address from an ADD result.
fn address_of(result: &Value) -> String {
    let a = result["ips"][0]["address"]
        .as_str()
        .expect("an address")
        .to_string();
    assert!(a.ends_with("/32"), "{a}");
    a.trim_end_matches("/32").to_string()
}

#[test]
fn add_check_del_configure_the_pod_in_each_spec_version_and_felix_down_is_11() {
    let lab = Lab::new("add_check_del_configure_the_pod_in_each_spec_version_and_felix_down_is_11")
        .unwrap();
    let mut node = Node::start(&lab);
    for (i, version) in ["0.3.1", "0.4.0", "1.0.0"].into_iter().enumerate() {
        let pod_ns = lab.netns(&format!("p{i}")).unwrap();
        let netns = netns_path(&pod_ns);
        let container = format!("ctr-{i}");
        let pod = format!("web-{i}");
        let args = pod_args(&pod);
        let conf = node.conf(version);
        let add = run_plugin(&env("ADD", &container, &netns, &args), &conf.to_string());
        add.assert_ok();
        let result = add.json();
        assert_eq!(result["cniVersion"], version, "{result}");
        let ip = address_of(&result);
        assert!(ip.starts_with("10.102."), "{ip} from {POOL}");
        let ifs = result["interfaces"].as_array().expect("interfaces");
        let cali = ifs[0]["name"].as_str().unwrap().to_string();
        assert!(cali.starts_with("cali") && cali.len() == 15, "{cali}");
        assert_eq!(ifs[0]["mac"], "ee:ee:ee:ee:ee:ee");
        assert_eq!(ifs[1]["name"], "eth0");
        assert_eq!(ifs[1]["sandbox"], netns.as_str());

        // The pod's namespace really holds eth0 with its /32, MTU, and both routes.
        let links = common::ip_json(&pod_ns, &["addr", "show", "dev", "eth0"]);
        assert_eq!(links[0]["mtu"], 1450, "{links:?}");
        assert_eq!(links[0]["address"], ifs[1]["mac"], "{links:?}");
        assert!(
            links[0]["addr_info"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["local"] == ip.as_str() && a["prefixlen"] == 32),
            "{links:?}"
        );
        let routes = common::ip_json(&pod_ns, &["route", "show"]);
        assert!(
            routes.iter().any(|r| r["dst"] == "default"
                && r["gateway"] == "169.254.1.1"
                && r["dev"] == "eth0"),
            "{routes:?}"
        );
        assert!(
            routes
                .iter()
                .any(|r| r["dst"] == "169.254.1.1" && r["scope"] == "link" && r["dev"] == "eth0"),
            "{routes:?}"
        );
        // The node: the host side with the fixed MAC and proxy ARP, and the /32 to the pod.
        let host = common::ip_json(&node.ns, &["link", "show", "dev", &cali]);
        assert_eq!(host[0]["address"], "ee:ee:ee:ee:ee:ee");
        assert_eq!(
            node.ns
                .exec(
                    "cat",
                    &[&format!("/proc/sys/net/ipv4/conf/{cali}/proxy_arp")]
                )
                .unwrap()
                .trim(),
            "1"
        );
        let r = node.routes();
        assert!(
            r.iter().any(|r| r["dst"] == ip.as_str()
                && r["dev"] == cali.as_str()
                && r["protocol"] == "81"),
            "{r:?}"
        );
        // The pod reaches its gateway's ARP and the node (proxy ARP on the host side).
        pod_ns
            .exec("ping", &["-c", "1", "-W", "2", &node.ip])
            .expect("pod pings its node");

        // A repeated ADD returns the same result.
        let again = run_plugin(&env("ADD", &container, &netns, &args), &conf.to_string());
        again.assert_ok();
        assert_eq!(address_of(&again.json()), ip);

        let mut check_conf = conf.clone();
        check_conf["prevResult"] = result.clone();
        let check = run_plugin(
            &env("CHECK", &container, &netns, &args),
            &check_conf.to_string(),
        );
        if version == "0.3.1" {
            assert_eq!(check.error_code(), 1, "no CHECK before 0.4.0");
        } else {
            check.assert_ok();
            pod_ns.ip(&["route", "del", "default"]).unwrap();
            let broken = run_plugin(
                &env("CHECK", &container, &netns, &args),
                &check_conf.to_string(),
            );
            assert_eq!(broken.error_code(), 104, "{broken:?}");
            let details = broken.json()["details"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert!(details.contains("route 0.0.0.0/0"), "{details}");
        }

        let del = run_plugin(&env("DEL", &container, &netns, &args), &conf.to_string());
        del.assert_ok();
        assert!(
            node.ns.ip(&["link", "show", "dev", &cali]).is_err(),
            "{cali} left"
        );
        let r = node.routes();
        assert!(!r.iter().any(|r| r["dst"] == ip.as_str()), "{r:?}");
        assert!(
            pod_ns.ip(&["link", "show", "dev", "eth0"]).is_err(),
            "eth0 left in the pod"
        );
        run_plugin(&env("DEL", &container, &netns, &args), &conf.to_string()).assert_ok();
    }
    assert_clean(&node);

    // felix down: try again later.
    node.felix.as_mut().unwrap().stop();
    let pod_ns = lab.netns("pz").unwrap();
    let r = run_plugin(
        &env("ADD", "ctr-z", &netns_path(&pod_ns), &pod_args("z")),
        &node.conf("1.0.0").to_string(),
    );
    assert_eq!(r.error_code(), 11, "{r:?}");
    assert!(!node.socket.exists(), "felix removes its socket on exit");
}

/// No endpoint, handle, address, veth or pod route left.
fn assert_clean(node: &Node) {
    let report: Value =
        serde_json::from_str(&node.etcd.margayctl(&["ipam", "check", "--json"]).unwrap()).unwrap();
    common::assert_ipam_report(&report, 0);
    let weps = node
        .etcd
        .margayctl(&["get", "workloadendpoints", "-o", "yaml"])
        .unwrap();
    assert!(
        !weps.contains("containerID"),
        "WorkloadEndpoints left: {weps}"
    );
    let links = common::ip_json(&node.ns, &["link", "show"]);
    let cali: Vec<&Value> = links
        .iter()
        .filter(|l| l["ifname"].as_str().is_some_and(|n| n.starts_with("cali")))
        .collect();
    assert!(cali.is_empty(), "veths left: {cali:?}");
    let pods: Vec<Value> = node
        .routes()
        .into_iter()
        .filter(|r| r["dev"].as_str().is_some_and(|d| d.starts_with("cali")))
        .collect();
    assert!(pods.is_empty(), "pod routes left: {pods:?}");
}

/// Runs a reference plugin from /usr/lib/cni inside `ns` as a runtime does.
fn run_reference(ns: &Netns, plugin: &str, env: &[(&str, &str)], stdin: &str) -> Run {
    let mut child = ns
        .command(Path::new("/usr/lib/cni").join(plugin))
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    Run {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code().unwrap_or(-1),
    }
}

#[test]
fn chained_portmap_maps_a_node_port_to_the_pod() {
    let lab = Lab::new("chained_portmap_maps_a_node_port_to_the_pod").unwrap();
    let node = Node::start(&lab);
    let pod_ns = lab.netns("pod").unwrap();
    let netns = netns_path(&pod_ns);
    let args = pod_args("web");
    let e = env("ADD", "ctr-pm", &netns, &args);
    let add = run_plugin(&e, &node.conf("1.0.0").to_string());
    add.assert_ok();
    let pod_ip = address_of(&add.json());
    let portmap_conf = json!({
        "cniVersion": "1.0.0",
        "name": NETWORK,
        "type": "portmap",
        "capabilities": {"portMappings": true},
        "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]},
        "prevResult": add.json(),
    });
    let pm = run_reference(&node.ns, "portmap", &e, &portmap_conf.to_string());
    assert_eq!(pm.code, 0, "portmap ADD: {pm:?}");
    let _server = Process::spawn(
        &pod_ns,
        "server",
        "python3",
        ["-m", "http.server", "80", "--bind", "0.0.0.0"],
        lab.dir(),
    )
    .unwrap();
    // A client on the node's segment, in its own namespace.
    let client = lab.netns("cl").unwrap();
    node._sw.attach(&client).unwrap();
    let url = format!("http://{}:8080/", node.ip);
    let body = wait_for(
        "node:8080 reaches the pod",
        Duration::from_secs(20),
        &[],
        || {
            client
                .exec("curl", &["-s", "--max-time", "2", &url])
                .map_err(|e| e.to_string())
        },
    )
    .unwrap();
    assert!(body.contains("Directory listing"), "{body}");
    let _ = pod_ip;
    let del_env = env("DEL", "ctr-pm", &netns, &args);
    let pm = run_reference(&node.ns, "portmap", &del_env, &portmap_conf.to_string());
    assert_eq!(pm.code, 0, "portmap DEL: {pm:?}");
    run_plugin(&del_env, &node.conf("1.0.0").to_string()).assert_ok();
    assert_clean(&node);
}

#[test]
fn hundred_concurrent_adds_get_distinct_addresses_and_thousand_cycles_leave_nothing() {
    let lab =
        Lab::new("hundred_concurrent_adds_get_distinct_addresses_and_thousand_cycles").unwrap();
    let node = Node::start(&lab);
    let conf = node.conf("1.0.0").to_string();
    let pods: Vec<Netns> = (0..100)
        .map(|i| lab.netns(&format!("c{i}")).unwrap())
        .collect();
    let paths: Vec<String> = pods.iter().map(netns_path).collect();
    let start = Instant::now();
    let ips: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = paths
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let conf = &conf;
                s.spawn(move || {
                    let args = pod_args(&format!("many-{i}"));
                    let r = run_plugin(&env("ADD", &format!("cc-{i}"), p, &args), conf);
                    r.assert_ok();
                    address_of(&r.json())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    eprintln!("100 concurrent ADDs: {:?}", start.elapsed());
    let distinct: std::collections::BTreeSet<&String> = ips.iter().collect();
    assert_eq!(distinct.len(), 100, "{ips:?}");
    for (i, p) in paths.iter().enumerate() {
        let args = pod_args(&format!("many-{i}"));
        run_plugin(&env("DEL", &format!("cc-{i}"), p, &args), &conf).assert_ok();
    }
    assert_clean(&node);

    // 1,000 ADD/DEL cycles, four at a time, each worker on its own pod namespace.
    let start = Instant::now();
    std::thread::scope(|s| {
        for (w, p) in paths.iter().take(4).enumerate() {
            let conf = &conf;
            s.spawn(move || {
                for n in 0..250 {
                    let container = format!("cy-{w}-{n}");
                    let args = pod_args(&format!("cycle-{w}"));
                    let add = run_plugin(&env("ADD", &container, p, &args), conf);
                    add.assert_ok();
                    run_plugin(&env("DEL", &container, p, &args), conf).assert_ok();
                }
            });
        }
    });
    eprintln!("1,000 ADD/DEL cycles: {:?}", start.elapsed());
    assert_clean(&node);
}
