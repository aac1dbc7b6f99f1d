//! The `margay` plugin under a real container runtime: Debian's podman 4.3 with its CNI
//! network backend, runc and cgroupfs, on two lab nodes (namespaces on a switch, etcd,
//! margay-bgpd and margay-felix in cluster mode on each). A container on each node, started
//! with `podman run` inside its node's network namespace, pings the other across the nodes; `podman
//! rm` then leaves no address, handle, WorkloadEndpoint, veth or pod route behind.
//!
//! podman runs with a private `containers.conf` (`CONTAINERS_CONF`), private storage (`--root`,
//! `--runroot`, the vfs driver: no overlay mounts to leave behind) and a private CNI config
//! directory per node; its image is imported from a busybox-static root filesystem. Containers,
//! storage, namespaces and daemons go when the test ends, also when it fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use margay_lab::{
    Bgpd, ClusterArgs, Etcd, Lab, LabSwitch, Netns, Process, margay_binary, wait_for,
};
use serde_json::{Value, json};

const POOL: &str = "10.107.0.0/16";
const NETWORK: &str = "margay-podman";
const IMAGE: &str = "localhost/margay-test/busybox:latest";
const WAIT: Duration = Duration::from_secs(60);

/// One lab node: its namespace, margay-bgpd and margay-felix, and its podman settings.
struct Node {
    name: String,
    ns: Netns,
    felix: Process,
    bgpd: Bgpd,
    podman: Podman,
}

/// podman as one node runs it: inside the node's namespace, with this node's private config
/// and storage.
struct Podman {
    ns_name: String,
    conf: PathBuf,
    root: PathBuf,
    runroot: PathBuf,
}

impl Podman {
    /// Writes the node's containers.conf and CNI conflist under `dir`.
    fn configure(dir: &Path, ns: &Netns, node: &str, felix_socket: &Path) -> Podman {
        let cni_dir = dir.join("cni");
        let tmp = dir.join("tmp");
        for d in [&cni_dir, &tmp] {
            std::fs::create_dir_all(d).expect("podman dirs");
        }
        let plugin = PathBuf::from(env!("CARGO_BIN_EXE_margay"));
        let plugin_dir = plugin.parent().expect("the plugin's directory");
        let conf = dir.join("containers.conf");
        std::fs::write(
            &conf,
            format!(
                "[containers]\n\
                 default_ulimits = []\n\
                 [network]\n\
                 network_backend = \"cni\"\n\
                 cni_plugin_dirs = [\"{}\", \"/usr/lib/cni\"]\n\
                 network_config_dir = \"{}\"\n\
                 [engine]\n\
                 cgroup_manager = \"cgroupfs\"\n\
                 runtime = \"runc\"\n\
                 events_logger = \"file\"\n\
                 tmp_dir = \"{}\"\n",
                plugin_dir.display(),
                cni_dir.display(),
                tmp.display(),
            ),
        )
        .expect("containers.conf");
        let conflist = json!({
            "cniVersion": "1.0.0",
            "name": NETWORK,
            "plugins": [{
                "type": "margay",
                "mtu": 1450,
                "ipam": {"type": "margay-ipam"},
                "felix_socket": felix_socket.to_str().expect("UTF-8 path"),
                "nodename": node,
                "log_level": "warn",
            }],
        });
        std::fs::write(
            cni_dir.join(format!("{NETWORK}.conflist")),
            serde_json::to_string_pretty(&conflist).expect("JSON"),
        )
        .expect("conflist");
        Podman {
            ns_name: ns.name().to_string(),
            conf,
            root: dir.join("root"),
            runroot: dir.join("runroot"),
        }
    }

    /// podman in the node's network namespace. `nsenter --net`, not `ip netns exec`: the
    /// latter also gives podman a private mount namespace, and the bind mount of the
    /// container's network namespace file made there would never reach felix (which then
    /// opens an empty file where the namespace should be).
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/var/run/netns/{}", self.ns_name))
            .arg("podman")
            .arg("--root")
            .arg(&self.root)
            .arg("--runroot")
            .arg(&self.runroot)
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"])
            .args(args)
            .env("CONTAINERS_CONF", &self.conf);
        c
    }

    /// Runs podman; its stdout, or Err with everything it said.
    fn try_run(&self, args: &[&str]) -> Result<String, String> {
        let out = self
            .command(args)
            .output()
            .map_err(|e| format!("podman {args:?}: cannot run nsenter podman: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(format!(
                "podman {args:?}: {}\nstdout: {}\nstderr: {}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn run(&self, args: &[&str]) -> String {
        self.try_run(args).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// Removes every container of the test's podman instances and their storage, also when the
/// test fails. Declared after the nodes, so it runs while felix still answers the DELs.
struct PodmanCleanup<'a>(Vec<&'a Podman>);

impl Drop for PodmanCleanup<'_> {
    fn drop(&mut self) {
        for p in &self.0 {
            if let Err(e) = p.try_run(&["rm", "--all", "--force", "--time", "0"]) {
                eprintln!("podman cleanup: {e}");
            }
            // Storage: vfs layers are plain directories (no mounts), and runroot.
            for d in [&p.root, &p.runroot] {
                if let Err(e) = std::fs::remove_dir_all(d)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    eprintln!("podman cleanup: removing {}: {e}", d.display());
                }
            }
        }
    }
}

/// Fails saying what is missing when a tool the test needs is not installed.
fn require(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{tool} is not installed: run scripts/install-deps.sh (podman, runc, conmon, busybox-static)"
    );
}

/// A root filesystem of busybox-static (the binary and an applet link per tool the test
/// uses), as a tar file for `podman import`.
fn busybox_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).expect("rootfs");
    std::fs::copy("/bin/busybox", bin.join("busybox"))
        .expect("/bin/busybox (Debian's busybox-static)");
    for applet in ["sh", "ping", "sleep", "ip", "cat"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("applet link");
    }
    let tar = dir.join("rootfs.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .expect("tar");
    assert!(st.success(), "tar of the busybox rootfs failed");
    tar
}

/// Starts margay-bgpd and margay-felix in cluster mode on `ns`, and waits until felix is
/// ready for CNI requests.
fn start_node(lab: &Lab, sw: &LabSwitch, etcd: &Etcd, name: &str) -> Node {
    let ns = lab.netns(name).expect("node namespace");
    let addr = sw.attach(&ns).expect("attach to the switch");
    // Proxy ARP answers for 169.254.1.1 only when the node routes it.
    ns.ip(&["route", "add", "default", "via", &etcd.ip().to_string()])
        .expect("default route");
    let bgpd_name = format!("bgpd-{name}");
    let bgpd = Bgpd::start_cluster(
        lab,
        &ns,
        &bgpd_name,
        ClusterArgs::new(name, &etcd.endpoint(), ipnet::IpNet::V4(addr.v4)),
    )
    .expect("margay-bgpd");
    let bgpd_sock = lab.dir().join(format!("{bgpd_name}.sock"));
    let socket = lab.dir().join(format!("felix-{name}.sock"));
    let felix = Process::spawn(
        &ns,
        &format!("felix-{name}"),
        margay_binary("margay-felix", "cargo build -p margay-felix").expect("margay-felix"),
        [
            "--node",
            name,
            "--etcd-endpoints",
            &etcd.endpoint(),
            "--bgpd-socket",
            bgpd_sock.to_str().expect("UTF-8 path"),
            "--socket",
            socket.to_str().expect("UTF-8 path"),
            "--http-port",
            "0",
        ],
        lab.dir(),
    )
    .expect("margay-felix");
    let status_conf = json!({
        "cniVersion": "1.1.0", "name": NETWORK, "type": "margay",
        "felix_socket": socket.to_str().expect("UTF-8 path"), "nodename": name,
    })
    .to_string();
    wait_for("felix ready (CNI STATUS)", WAIT, &[&felix], || {
        let r = common::run_plugin(
            &[("CNI_COMMAND", "STATUS"), ("PATH", "/usr/bin:/bin")],
            &status_conf,
        );
        if r.code == 0 {
            Ok(())
        } else {
            Err(format!("{r:?}"))
        }
    })
    .expect("felix ready");
    let dir = lab.dir().join(format!("podman-{name}"));
    let podman = Podman::configure(&dir, &ns, name, &socket);
    Node {
        name: name.to_string(),
        ns,
        felix,
        bgpd,
        podman,
    }
}

/// The container's address on the margay network.
fn container_ip(node: &Node, container: &str) -> String {
    let inspect: Value = serde_json::from_str(&node.podman.run(&[
        "container",
        "inspect",
        "--format",
        "json",
        container,
    ]))
    .expect("podman inspect JSON");
    let ip = inspect[0]["NetworkSettings"]["Networks"][NETWORK]["IPAddress"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        ip.starts_with("10.107."),
        "{container} on {}: address {ip:?} is not from {POOL}: {inspect}",
        node.name
    );
    ip
}

fn pod_links(node: &Node) -> Vec<String> {
    common::ip_json(&node.ns, &["link", "show"])
        .iter()
        .filter_map(|l| l["ifname"].as_str())
        .filter(|n| n.starts_with("cali"))
        .map(str::to_string)
        .collect()
}

fn pod_routes(node: &Node) -> Vec<Value> {
    common::ip_json(&node.ns, &["route", "show", "table", "main"])
        .into_iter()
        .filter(|r| r["dev"].as_str().is_some_and(|d| d.starts_with("cali")))
        .collect()
}

#[test]
fn podman_containers_on_two_nodes_ping_each_other_and_rm_leaves_nothing() {
    for tool in ["podman", "runc", "conmon", "tar", "nsenter"] {
        require(tool);
    }
    let lab = Lab::new("podman_containers_on_two_nodes_ping_each_other_and_rm_leaves_nothing")
        .expect("lab");
    let sw = lab.switch("sw").expect("switch");
    let etcd = Etcd::on_switch(&lab, &sw).expect("etcd");
    etcd.apply(&format!(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: podpool}}\n\
         spec: {{cidr: {POOL}, ipipMode: Never, vxlanMode: Never}}\n"
    ))
    .expect("IPPool");
    let nodes = [
        start_node(&lab, &sw, &etcd, "n1"),
        start_node(&lab, &sw, &etcd, "n2"),
    ];
    let _cleanup = PodmanCleanup(nodes.iter().map(|n| &n.podman).collect());

    let tar = busybox_rootfs(lab.dir());
    let tar = tar.to_str().expect("UTF-8 path");
    for n in &nodes {
        n.podman.run(&["import", tar, IMAGE]);
    }
    let mut ips = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let name = format!("c{i}");
        n.podman.run(&[
            "run",
            "--detach",
            "--name",
            &name,
            "--network",
            NETWORK,
            IMAGE,
            "/bin/sleep",
            "3600",
        ]);
        ips.push(container_ip(n, &name));
        assert_eq!(pod_links(n).len(), 1, "one veth on {}", n.name);
    }
    assert_ne!(ips[0], ips[1], "distinct addresses");

    // Across the nodes: c0 on n1 reaches c1 on n2 once n1 has learned n2's block over BGP,
    // and back.
    let logs: Vec<&dyn margay_lab::HasLogs> = vec![
        &nodes[0].felix,
        &nodes[1].felix,
        &nodes[0].bgpd,
        &nodes[1].bgpd,
    ];
    for (from, to) in [(0, 1), (1, 0)] {
        let target = ips[to].clone();
        let container = format!("c{from}");
        wait_for(
            &format!("c{from} pings c{to} ({target})"),
            WAIT,
            &logs,
            || {
                nodes[from]
                    .podman
                    .try_run(&["exec", &container, "ping", "-c", "1", "-W", "1", &target])
                    .map(|_| ())
            },
        )
        .expect("ping across nodes");
    }

    for (i, n) in nodes.iter().enumerate() {
        n.podman
            .run(&["rm", "--force", "--time", "0", &format!("c{i}")]);
    }
    let report: Value = serde_json::from_str(
        &etcd
            .margayctl(&["ipam", "check", "--json"])
            .expect("margayctl ipam check"),
    )
    .expect("ipam check JSON");
    assert_eq!(report["addresses_in_use"], 0, "addresses left: {report}");
    assert_eq!(report["handles"], 0, "handles left: {report}");
    let weps = etcd
        .margayctl(&["get", "workloadendpoints", "-o", "yaml"])
        .expect("margayctl get");
    assert!(
        !weps.contains("containerID"),
        "WorkloadEndpoints left: {weps}"
    );
    for n in &nodes {
        assert_eq!(
            pod_links(n),
            Vec::<String>::new(),
            "veths left on {}",
            n.name
        );
        assert_eq!(
            pod_routes(n),
            Vec::<Value>::new(),
            "pod routes left on {}",
            n.name
        );
    }
}
