//! Faults around the CNI path, with every part real: etcd in its own namespace, two node
//! namespaces each running margay-bgpd and margay-felix in cluster mode, pods wired by the
//! `margay` binary as a runtime runs it.
//!
//! - etcd frozen (SIGSTOP) and etcd killed and restarted on its data dir: pods keep pinging
//!   across nodes, felix's routes and the BGP session stay, ADD and DEL answer "try again
//!   later" (11) within seconds naming etcd (the first one, before felix's probe noticed,
//!   within felix's own etcd deadline), felix's and bgpd's readiness say why and clear when
//!   etcd is back, and then a new ADD works with no address lost or given twice.
//! - felix killed (SIGKILL) with 17 concurrent ADDs inside it (held there by a frozen etcd)
//!   and restarted: the runtime DELs every ADD that did not succeed and ADDs it again; nothing
//!   leaks and every pod works. felix's startup clean-up removes a veth of its own that no
//!   WorkloadEndpoint owns, and leaves a `cali*` veth it did not make.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Run, run_plugin};
use margay_lab::{
    Bgpd, ClusterArgs, Etcd, HasLogs, Lab, LabSwitch, Netns, Process, holds_for, margay_binary,
    wait_for,
};
use serde_json::{Value, json};

const POOL: &str = "10.103.0.0/16";
const NETWORK: &str = "k8s-pod-network";
const WAIT: Duration = Duration::from_secs(60);
/// felix's HTTP port inside each node namespace.
const FELIX_HTTP: u16 = 9099;
/// The bound on the first ADD of an outage, which can arrive before felix's probe has noticed
/// it: felix's own etcd deadline for the request (4 s) plus the plugin's start and a loaded
/// machine's slack, and well under etcd's 10 s request timeout it used to wait for.
const FAIL_FAST: Duration = Duration::from_secs(8);
/// margay-bgpd's HTTP port inside each node namespace.
const BGPD_HTTP: u16 = 9179;

struct Node {
    name: String,
    ns: Netns,
    ip: String,
    socket: PathBuf,
    bgpd: Bgpd,
    felix: Option<Process>,
    starts: u32,
}

struct Cluster {
    nodes: Vec<Node>,
    etcd: Etcd,
    _sw: LabSwitch,
}

struct Pod {
    ns: Netns,
    container: String,
    name: String,
    ip: String,
}

impl Cluster {
    /// etcd with a /26-block pool, and `n` nodes with bgpd and felix, ready for ADDs.
    fn start(lab: &Lab, n: usize) -> Cluster {
        let sw = lab.switch("sw").unwrap();
        let etcd = Etcd::on_switch(lab, &sw).unwrap();
        etcd.apply(&format!(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: pool1}}\n\
             spec: {{cidr: {POOL}, ipipMode: Never, vxlanMode: Never, blockSize: 26}}\n"
        ))
        .unwrap();
        // Pods reach their node, as Calico's own manifest sets it (felix's built-in default,
        // Drop, would stop the pods' pings to their node below).
        etcd.apply(
            "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\n\
             spec: {defaultEndpointToHostAction: Accept}\n",
        )
        .unwrap();
        let mut nodes = Vec::new();
        for i in 1..=n {
            let name = format!("n{i}");
            let ns = lab.netns(&name).unwrap();
            let addr = sw.attach(&ns).unwrap();
            // Proxy ARP answers for 169.254.1.1 only when the node routes it.
            ns.ip(&["route", "add", "default", "via", &etcd.ip().to_string()])
                .unwrap();
            let bgpd = Bgpd::start_cluster(
                lab,
                &ns,
                &format!("bgpd-{name}"),
                ClusterArgs {
                    http_port: BGPD_HTTP,
                    ..ClusterArgs::new(&name, &etcd.endpoint(), ipnet::IpNet::V4(addr.v4))
                },
            )
            .unwrap();
            nodes.push(Node {
                socket: lab.dir().join(format!("felix-{name}.sock")),
                name,
                ip: addr.ip4().to_string(),
                ns,
                bgpd,
                felix: None,
                starts: 0,
            });
        }
        let mut c = Cluster {
            nodes,
            etcd,
            _sw: sw,
        };
        for i in 0..n {
            c.start_felix(lab, i);
        }
        c
    }

    fn start_felix(&mut self, lab: &Lab, i: usize) {
        let endpoint = self.etcd.endpoint();
        let n = &mut self.nodes[i];
        n.starts += 1;
        let bgpd_sock = lab.dir().join(format!("bgpd-{}.sock", n.name));
        let felix = Process::spawn(
            &n.ns,
            &format!("felix-{}-{}", n.name, n.starts),
            margay_binary("margay-felix", "cargo build -p margay-felix").unwrap(),
            [
                "--node",
                &n.name,
                "--etcd-endpoints",
                &endpoint,
                "--bgpd-socket",
                bgpd_sock.to_str().unwrap(),
                "--socket",
                n.socket.to_str().unwrap(),
                "--http-port",
                &FELIX_HTTP.to_string(),
                "--resync-interval",
                "1",
            ],
            lab.dir(),
        )
        .unwrap();
        n.felix = Some(felix);
        self.wait_ready(i, WAIT);
    }

    /// Waits until CNI STATUS through the plugin says node `i` serves ADDs.
    fn wait_ready(&self, i: usize, timeout: Duration) {
        let conf = conf(&self.nodes[i]).to_string();
        wait_for(
            &format!("{} ready (CNI STATUS)", self.nodes[i].name),
            timeout,
            &self.logs(),
            || common::status_ok(&conf),
        )
        .unwrap();
    }

    fn logs(&self) -> Vec<&dyn HasLogs> {
        let mut v: Vec<&dyn HasLogs> = vec![&self.etcd];
        for n in &self.nodes {
            v.push(&n.bgpd);
            if let Some(f) = &n.felix {
                v.push(f);
            }
        }
        v
    }

    /// `margayctl ipam check --json`.
    fn ipam_check(&self) -> Value {
        serde_json::from_str(&self.etcd.margayctl(&["ipam", "check", "--json"]).unwrap()).unwrap()
    }

    /// IPAM has exactly `pods` addresses and handles, nothing leaked, and the WorkloadEndpoints
    /// hold exactly the pods' addresses, each once.
    fn assert_ipam_matches(&self, pods: &[&Pod]) {
        common::assert_ipam_report(&self.ipam_check(), pods.len());
        let weps = self
            .etcd
            .margayctl(&["get", "workloadendpoints", "-o", "yaml"])
            .unwrap();
        assert_eq!(
            weps.matches("containerID").count(),
            pods.len(),
            "WorkloadEndpoints: {weps}"
        );
        let ips: BTreeSet<&str> = pods.iter().map(|p| p.ip.as_str()).collect();
        assert_eq!(ips.len(), pods.len(), "an address given twice");
        for ip in ips {
            assert!(weps.contains(&format!("{ip}/32")), "{ip} not in {weps}");
        }
    }
}

fn conf(node: &Node) -> Value {
    json!({
        "cniVersion": "1.1.0",
        "name": NETWORK,
        "type": "margay",
        "mtu": 1450,
        "ipam": {"type": "margay-ipam"},
        "felix_socket": node.socket.to_str().unwrap(),
        "nodename": node.name,
        "log_level": "warn",
    })
}

fn netns_path(ns: &Netns) -> String {
    format!("/var/run/netns/{}", ns.name())
}

/// Runs one CNI command for `container` of pod `pod` in `netns` on `node`.
fn cni(node: &Node, cmd: &str, container: &str, netns: &str, pod: &str) -> Run {
    let args = format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod}");
    let env = [
        ("CNI_COMMAND", cmd),
        ("CNI_CONTAINERID", container),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", args.as_str()),
        ("CNI_PATH", "/usr/lib/cni"),
        ("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
    ];
    run_plugin(&env, &conf(node).to_string())
}

/// ADDs a new pod on `node`; panics unless it succeeds.
fn add_pod(lab: &Lab, node: &Node, name: &str) -> Pod {
    let ns = lab.netns(name).unwrap();
    let container = format!("ctr-{name}");
    let r = cni(node, "ADD", &container, &netns_path(&ns), name);
    r.assert_ok();
    Pod {
        ip: address_of(&r.json()),
        ns,
        container,
        name: name.to_string(),
    }
}

fn del_pod(node: &Node, pod: &Pod) -> Run {
    cni(node, "DEL", &pod.container, &netns_path(&pod.ns), &pod.name)
}

/// The pod's address from an ADD result.
fn address_of(result: &Value) -> String {
    let ips = result["ips"].as_array().expect("ips");
    assert_eq!(ips.len(), 1, "exactly one address: {result}");
    let a = ips[0]["address"].as_str().expect("an address");
    assert!(a.ends_with("/32"), "{a}");
    a.trim_end_matches("/32").to_string()
}

fn ping(from: &Netns, to: &str) -> Result<(), String> {
    from.exec("ping", &["-c", "1", "-W", "1", to])
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// felix's own routes (protocol 81) in a node, as `ip -j route` prints them.
fn felix_routes(ns: &Netns) -> Vec<Value> {
    let out = ns
        .ip(&["-j", "route", "show", "table", "main", "proto", "81"])
        .unwrap();
    let mut v: Vec<Value> = serde_json::from_str::<Value>(&out)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default();
    v.sort_by_key(|r| r.to_string());
    v
}

/// The `/readiness` answer of the daemon serving HTTP on `port` in `node`'s namespace.
fn readiness_on(node: &Node, port: u16) -> String {
    node.ns
        .exec(
            "curl",
            &[
                "-s",
                "--max-time",
                "2",
                &format!("http://127.0.0.1:{port}/readiness"),
            ],
        )
        .unwrap_or_else(|e| format!("curl failed: {e}"))
}

/// felix's `/readiness` answer in its node.
fn readiness(node: &Node) -> String {
    readiness_on(node, FELIX_HTTP)
}

/// margay-bgpd's `/readiness` answer in its node.
fn bgpd_readiness(node: &Node) -> String {
    readiness_on(node, BGPD_HTTP)
}

/// The mesh session of `node` with `other`: its state and when it last changed.
fn session(node: &Node, other: &Node) -> (String, i64) {
    let p = node
        .bgpd
        .peer(other.ip.parse().unwrap())
        .unwrap()
        .unwrap_or_else(|| panic!("{} has no peer {}", node.name, other.ip));
    (p.state, p.since)
}

/// How etcd fails.
#[derive(Debug, Clone, Copy)]
enum Outage {
    /// SIGSTOP: connections stay open, nothing answers.
    Frozen,
    /// SIGKILL, then a restart on the same data dir.
    Killed,
}

#[test]
fn etcd_outage_keeps_pods_routes_and_sessions_and_cni_says_try_again_later() {
    let lab = Lab::new("etcd_outage_keeps_pods_routes_and_sessions").unwrap();
    let mut c = Cluster::start(&lab, 2);
    let remote = add_pod(&lab, &c.nodes[1], "remote");
    let mut local = add_pod(&lab, &c.nodes[0], "local0");
    wait_for("a pod on n1 pings a pod on n2", WAIT, &c.logs(), || {
        ping(&local.ns, &remote.ip)
    })
    .unwrap();
    wait_for(
        "the mesh session is Established",
        WAIT,
        &c.logs(),
        || match session(&c.nodes[0], &c.nodes[1]).0.as_str() {
            "Established" => Ok(()),
            s => Err(s.to_string()),
        },
    )
    .unwrap();

    for (round, outage) in [Outage::Frozen, Outage::Killed].into_iter().enumerate() {
        let routes = [felix_routes(&c.nodes[0].ns), felix_routes(&c.nodes[1].ns)];
        let sessions = [
            session(&c.nodes[0], &c.nodes[1]),
            session(&c.nodes[1], &c.nodes[0]),
        ];
        match outage {
            Outage::Frozen => c.etcd.process().pause(),
            Outage::Killed => c.etcd.process().kill(),
        }

        // An ADD right away, before felix's probe notices: felix's own etcd deadline ends it.
        let newcomer = lab.netns(&format!("new{round}")).unwrap();
        let container = format!("ctr-new{round}");
        let t = Instant::now();
        let first = cni(
            &c.nodes[0],
            "ADD",
            &container,
            &netns_path(&newcomer),
            "newcomer",
        );
        let first_took = t.elapsed();
        assert_eq!(first.error_code(), 11, "{outage:?}: {first:?}");
        assert!(first.msg().contains("etcd"), "{outage:?}: {first:?}");
        assert!(
            first_took < FAIL_FAST,
            "{outage:?}: ADD took {first_took:?}"
        );

        // Readiness names etcd.
        let why = wait_for(
            "felix readiness names etcd",
            Duration::from_secs(10),
            &c.logs(),
            || {
                let r = readiness(&c.nodes[0]);
                if r.contains("etcd unreachable") {
                    Ok(r)
                } else {
                    Err(r)
                }
            },
        )
        .unwrap();
        eprintln!("{outage:?}: first ADD failed after {first_took:?}; readiness: {why}");
        // bgpd's readiness names etcd too, on every node (its sessions stay: checked below).
        for n in &c.nodes {
            let why = wait_for(
                &format!("bgpd readiness on {} names etcd", n.name),
                Duration::from_secs(10),
                &c.logs(),
                || {
                    let r = bgpd_readiness(n);
                    if r.contains("etcd unreachable") {
                        Ok(r)
                    } else {
                        Err(r)
                    }
                },
            )
            .unwrap();
            eprintln!("{outage:?}: bgpd on {}: {}", n.name, why.trim());
        }

        // Once felix knows, ADD and DEL answer at once, and DEL changes nothing.
        let t = Instant::now();
        let again = cni(
            &c.nodes[0],
            "ADD",
            &container,
            &netns_path(&newcomer),
            "newcomer",
        );
        let add_took = t.elapsed();
        assert_eq!(again.error_code(), 11, "{outage:?}: {again:?}");
        assert!(again.msg().contains("etcd"), "{again:?}");
        let t = Instant::now();
        let del = del_pod(&c.nodes[0], &local);
        let del_took = t.elapsed();
        assert_eq!(
            del.error_code(),
            11,
            "{outage:?}: DEL during the outage: {del:?}"
        );
        assert!(del.msg().contains("etcd"), "{del:?}");
        eprintln!("{outage:?}: ADD answered 11 in {add_took:?}, DEL in {del_took:?}");
        assert!(add_took < Duration::from_secs(3), "{add_took:?}");
        assert!(del_took < Duration::from_secs(3), "{del_took:?}");

        // The dataplane and BGP keep running on what they know.
        holds_for(
            "pods ping across nodes, routes and sessions stay",
            Duration::from_secs(12),
            &c.logs(),
            || {
                ping(&local.ns, &remote.ip)?;
                ping(&remote.ns, &local.ip)?;
                for (i, n) in c.nodes.iter().enumerate() {
                    let now = felix_routes(&n.ns);
                    if now != routes[i] {
                        return Err(format!("{}: routes {now:?}, were {:?}", n.name, routes[i]));
                    }
                }
                let now = [
                    session(&c.nodes[0], &c.nodes[1]),
                    session(&c.nodes[1], &c.nodes[0]),
                ];
                if now != sessions {
                    return Err(format!("sessions {now:?}, were {sessions:?}"));
                }
                Ok(())
            },
        )
        .unwrap();

        match outage {
            Outage::Frozen => c.etcd.process().resume(),
            Outage::Killed => c.etcd.restart(&lab).unwrap(),
        }
        // Everything resumes without restarting anyone.
        for i in 0..2 {
            c.wait_ready(i, Duration::from_secs(30));
        }
        assert_eq!(readiness(&c.nodes[0]).trim(), "ready");
        for n in &c.nodes {
            wait_for(
                &format!("bgpd readiness on {} clears", n.name),
                Duration::from_secs(10),
                &c.logs(),
                || match bgpd_readiness(n).trim() {
                    "ready" => Ok(()),
                    r => Err(r.to_string()),
                },
            )
            .unwrap();
        }
        // The runtime retries: DEL of the failed ADD, DEL of the pod it could not remove.
        cni(
            &c.nodes[0],
            "DEL",
            &container,
            &netns_path(&newcomer),
            "newcomer",
        )
        .assert_ok();
        del_pod(&c.nodes[0], &local).assert_ok();
        c.assert_ipam_matches(&[&remote]);
        // A new ADD works, its pod reaches the other node.
        local = add_pod(&lab, &c.nodes[0], &format!("local{}", round + 1));
        wait_for("the new pod pings across nodes", WAIT, &c.logs(), || {
            ping(&local.ns, &remote.ip)
        })
        .unwrap();
        c.assert_ipam_matches(&[&remote, &local]);
        for (i, (_, since)) in sessions.iter().enumerate() {
            let other = &c.nodes[1 - i];
            assert_eq!(session(&c.nodes[i], other).1, *since, "session reset");
            let felix = c.nodes[i].felix.as_mut().unwrap();
            assert!(felix.is_running(), "felix on n{} exited", i + 1);
        }
    }
}

/// The `cali*` veths in a node.
fn cali_links(ns: &Netns) -> Vec<String> {
    common::ip_json(ns, &["link", "show"])
        .iter()
        .filter_map(|l| l["ifname"].as_str().map(str::to_string))
        .filter(|n| n.starts_with("cali"))
        .collect()
}

#[test]
fn felix_killed_mid_add_then_del_and_readd_leaves_nothing_leaked() {
    const PODS: usize = 20;
    let lab = Lab::new("felix_killed_mid_add_then_del_and_readd").unwrap();
    let mut c = Cluster::start(&lab, 1);
    let nss: Vec<Netns> = (0..PODS)
        .map(|i| lab.netns(&format!("k{i}")).unwrap())
        .collect();
    // Three ADDs complete; then etcd is frozen so the other ADDs are certainly inside felix
    // (waiting on IPAM, some with their requests already sent) when it is killed, however fast
    // the machine is.
    const DONE_BEFORE: usize = 3;
    let add = |node: &Node, i: usize| {
        cni(
            node,
            "ADD",
            &format!("ctr-k{i}"),
            &netns_path(&nss[i]),
            &format!("k{i}"),
        )
    };
    let mut results: Vec<Run> = (0..DONE_BEFORE).map(|i| add(&c.nodes[0], i)).collect();
    for r in &results {
        r.assert_ok();
    }
    let etcd_pid = c.etcd.process().pid().to_string();
    let signal = |sig: &str, pid: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {pid}");
    };
    signal("-STOP", &etcd_pid);
    results.extend(std::thread::scope(|s| {
        let node = &c.nodes[0];
        let handles: Vec<_> = (DONE_BEFORE..PODS)
            .map(|i| s.spawn(move || add(node, i)))
            .collect();
        // Well inside felix's 4 s etcd deadline: every one of them is still in felix.
        std::thread::sleep(Duration::from_millis(1500));
        // Not through `c`: the scope borrows the node; kill by PID as a crash would.
        signal("-KILL", &node.felix.as_ref().unwrap().pid().to_string());
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<Run>>()
    }));
    signal("-CONT", &etcd_pid);
    let failed: Vec<usize> = (0..PODS).filter(|&i| results[i].code != 0).collect();
    eprintln!(
        "felix killed after {} of {PODS} ADDs succeeded; {} failed",
        PODS - failed.len(),
        failed.len()
    );
    assert_eq!(
        failed.len(),
        PODS - DONE_BEFORE,
        "every ADD in felix at the kill fails"
    );
    let codes: Vec<u64> = failed.iter().map(|&i| results[i].error_code()).collect();
    eprintln!("codes of the ADDs cut short: {codes:?}");
    assert!(codes.iter().all(|&c| c == 11), "try again later: {codes:?}");
    // A veth of an ADD cut short that no DEL will name (its pod is gone), marked as felix's
    // ADD marks its veths: felix's start-up sweep removes it. A `cali*` veth someone else made
    // (Calico's, before a migration) carries no mark and stays.
    let ns = &c.nodes[0].ns;
    for (name, peer) in [
        ("calideadbeef000", "tmpdead0"),
        ("calif0reign0000", "tmpforeign0"),
    ] {
        ns.ip(&["link", "add", name, "type", "veth", "peer", "name", peer])
            .unwrap();
    }
    ns.ip(&["link", "set", "calideadbeef000", "alias", "margay-endpoint"])
        .unwrap();
    c.nodes[0].felix.as_mut().unwrap().kill();
    c.start_felix(&lab, 0);
    wait_for("the orphan veth is removed", WAIT, &c.logs(), || {
        let links = cali_links(&c.nodes[0].ns);
        if links.iter().any(|l| l == "calideadbeef000") {
            Err(format!("{links:?}"))
        } else {
            Ok(())
        }
    })
    .unwrap();
    assert!(
        cali_links(&c.nodes[0].ns)
            .iter()
            .any(|l| l == "calif0reign0000"),
        "felix removed a veth it did not make"
    );
    c.nodes[0]
        .ns
        .ip(&["link", "del", "calif0reign0000"])
        .unwrap();

    // As kubelet: DEL every ADD that did not succeed, then ADD it again.
    let node = &c.nodes[0];
    let mut ips = vec![String::new(); PODS];
    for i in 0..PODS {
        let (ctr, path, pod) = (format!("ctr-k{i}"), netns_path(&nss[i]), format!("k{i}"));
        if failed.contains(&i) {
            cni(node, "DEL", &ctr, &path, &pod).assert_ok();
            let again = cni(node, "ADD", &ctr, &path, &pod);
            again.assert_ok();
            ips[i] = address_of(&again.json());
        } else {
            ips[i] = address_of(&results[i].json());
        }
    }
    let pods: Vec<Pod> = nss
        .into_iter()
        .zip(ips)
        .enumerate()
        .map(|(i, (ns, ip))| Pod {
            ns,
            container: format!("ctr-k{i}"),
            name: format!("k{i}"),
            ip,
        })
        .collect();
    let refs: Vec<&Pod> = pods.iter().collect();
    c.assert_ipam_matches(&refs);
    let links = cali_links(&node.ns);
    assert_eq!(links.len(), PODS, "veths: {links:?}");
    let routes: Vec<Value> = felix_routes(&node.ns)
        .into_iter()
        .filter(|r| r["dev"].as_str().is_some_and(|d| d.starts_with("cali")))
        .collect();
    assert_eq!(routes.len(), PODS, "pod routes: {routes:?}");
    for p in &pods {
        assert!(
            routes.iter().any(|r| r["dst"] == p.ip.as_str()),
            "no route to {}: {routes:?}",
            p.ip
        );
        let a = p.ns.ip(&["-j", "addr", "show", "dev", "eth0"]).unwrap();
        let v4 = a.matches("\"family\":\"inet\"").count();
        assert_eq!(v4, 1, "{}: exactly one address: {a}", p.name);
        ping(&p.ns, &node.ip).unwrap_or_else(|e| panic!("{} ({}): {e}", p.name, p.ip));
    }
    // Every pod removed: nothing left.
    for p in &pods {
        del_pod(node, p).assert_ok();
    }
    c.assert_ipam_matches(&[]);
    assert_eq!(cali_links(&node.ns), Vec::<String>::new());
}
