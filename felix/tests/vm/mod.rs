//! What the VM tests share: the work directory shared into the VM, preparing and booting the VM
//! on a scenario script (tests/vm/), and readers of what a scenario recorded (`ip -j` files,
//! pings with tunl0 counters), with the checks both scenarios make on them, and the pod helper
//! the cluster scenarios run inside the VM ([`wire_pod`]). margay-bench's VM test includes this
//! file too (`#[path]`), for the work directory and booting the VM.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A directory shared into the VM; kept (and named in the failure) when the test fails.
pub struct WorkDir(pub PathBuf);

impl WorkDir {
    /// A new directory under the temp dir, named after `tag`, this process and the clock.
    pub fn new(tag: &str) -> WorkDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path =
            std::env::temp_dir().join(format!("margay-{tag}.{}.{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).expect("creating the VM work directory");
        WorkDir(path)
    }

    /// The file's text, or a marker saying why there is none.
    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.0.join(rel)).unwrap_or_else(|e| format!("<{rel}: {e}>"))
    }

    pub fn write(&self, rel: &str, text: &str) {
        let path = self.0.join(rel);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("creating a phase directory");
        }
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {path:?}: {e}"));
    }

    /// The serial console and the tail of every daemon log (`*.log` at the top), for failure
    /// messages.
    pub fn diagnostics(&self) -> String {
        let console = self.read("console.log");
        let lines: Vec<&str> = console.lines().collect();
        let tail = lines[lines.len().saturating_sub(150)..].join("\n");
        let mut text = format!(
            "work directory (kept): {}\n---- serial console (last 150 lines) ----\n{tail}\n",
            self.0.display()
        );
        let mut logs: Vec<String> = std::fs::read_dir(&self.0)
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| n.ends_with(".log") && n != "console.log")
                    .collect()
            })
            .unwrap_or_default();
        logs.sort();
        for name in logs {
            let log = self.read(&name);
            let lines: Vec<&str> = log.lines().collect();
            text += &format!(
                "---- {name} (last 20 lines) ----\n{}\n",
                lines[lines.len().saturating_sub(20)..].join("\n")
            );
        }
        text
    }

    /// `rel` parsed as `ip -j` output (a JSON array).
    pub fn json_array(&self, rel: &str) -> Vec<Value> {
        let text = self.read(rel);
        serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_else(|| {
                panic!(
                    "{rel} is not `ip -j` output: {text}\n{}",
                    self.diagnostics()
                )
            })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The workspace root: the nearest directory above the test's crate holding tests/vm/.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|d| d.join("tests/vm/run.sh").is_file())
        .expect("the crate sits in the workspace, below tests/vm/")
        .to_path_buf()
}

/// Runs tests/vm/prepare.sh: the kernel and initramfs must be had, or the test fails saying why.
pub fn prepare_vm(repo: &Path) {
    let out = Command::new(repo.join("tests/vm/prepare.sh"))
        .stdin(Stdio::null())
        .output()
        .expect("running tests/vm/prepare.sh");
    assert!(
        out.status.success(),
        "cannot prepare the IPIP test VM (Debian's kernel package, busybox-static; see \
         scripts/install-deps.sh): {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let qemu = Command::new("qemu-system-x86_64")
        .arg("--version")
        .stdin(Stdio::null())
        .output();
    assert!(
        qemu.as_ref().is_ok_and(|o| o.status.success()),
        "qemu-system-x86_64 cannot run (Debian package qemu-system-x86; see \
         scripts/install-deps.sh): {qemu:?}"
    );
}

/// Boots the VM on `scenario` (a script under tests/vm/) with `work` shared into it, and waits
/// for it to power off; kills qemu after `timeout`. The console goes to `console.log`.
pub fn run_vm(repo: &Path, scenario: &str, work: &WorkDir, timeout: Duration) -> Duration {
    let console = std::fs::File::create(work.0.join("console.log")).expect("console.log");
    let start = Instant::now();
    // The binaries the scenario runs must be visible in the VM at their own paths, wherever the
    // target directory is (run.sh shares the repository itself): felix's (when the test is
    // felix's), the test's own and the profile directory above it (where margay_lab looks for
    // the daemons), and MARGAY_BIN_DIR.
    let mut shares: Vec<PathBuf> = Vec::new();
    let felix_dir = option_env!("CARGO_BIN_EXE_margay-felix")
        .and_then(|f| Path::new(f).parent().map(Path::to_path_buf));
    let test_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf));
    let profile_dir = test_dir
        .as_ref()
        .filter(|d| d.ends_with("deps"))
        .and_then(|d| d.parent().map(Path::to_path_buf));
    let bin_dir = std::env::var_os("MARGAY_BIN_DIR").map(PathBuf::from);
    for d in [felix_dir, test_dir, profile_dir, bin_dir]
        .into_iter()
        .flatten()
    {
        if let Ok(d) = d.canonicalize()
            && !shares.contains(&d)
        {
            shares.push(d);
        }
    }
    let shares = shares
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(" ");
    let mut qemu = Command::new(repo.join("tests/vm/run.sh"))
        .arg(repo.join("tests/vm").join(scenario))
        .arg(&work.0)
        .env("MARGAY_VM_SHARES", shares)
        .stdin(Stdio::null())
        .stdout(console.try_clone().expect("console.log"))
        .stderr(console)
        .spawn()
        .expect("starting tests/vm/run.sh");
    loop {
        match qemu.try_wait().expect("waiting for qemu") {
            Some(status) => {
                assert!(
                    status.success(),
                    "qemu failed: {status}\n{}",
                    work.diagnostics()
                );
                return start.elapsed();
            }
            None if start.elapsed() > timeout => {
                // run.sh execs qemu, so this PID is qemu's.
                let _ = qemu.kill();
                let _ = qemu.wait();
                panic!(
                    "the VM did not power off within {timeout:?}\n{}",
                    work.diagnostics()
                );
            }
            None => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Fails unless the scenario wrote `done` to `status`; else prints the timeline.
pub fn assert_scenario_done(work: &WorkDir, took: Duration) {
    let status = work.read("status");
    assert_eq!(
        status.trim(),
        "done",
        "the scenario did not finish\n{}",
        work.diagnostics()
    );
    let console = work.read("console.log");
    eprintln!(
        "VM ran for {took:?}; {}",
        console
            .lines()
            .filter(|l| l.starts_with("init:") || l.starts_with("scenario:"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Checks that `route` is `via gateway dev dev` (onlink when through tunl0) and felix's
/// (protocol 81).
pub fn check_route(route: &Value, gateway: &str, dev: &str) -> Result<(), String> {
    let onlink = route["flags"]
        .as_array()
        .is_some_and(|f| f.iter().any(|f| f == "onlink"));
    if route["gateway"] == gateway
        && route["dev"] == dev
        && route["protocol"].to_string().contains("81")
        && (dev != "tunl0" || onlink)
    {
        Ok(())
    } else {
        Err(format!(
            "must be `via {gateway} dev {dev}{}` proto 81, is {route}",
            if dev == "tunl0" { " onlink" } else { "" }
        ))
    }
}

/// Whether the link (one element of `ip -j link/addr show`) is up and holds `addr`.
pub fn up_with_addr(link: &Value, addr: &str) -> bool {
    let up = link["flags"]
        .as_array()
        .is_some_and(|f| f.iter().any(|f| f == "UP"));
    let has = link["addr_info"]
        .as_array()
        .is_some_and(|a| a.iter().any(|a| a["local"] == addr));
    up && has
}

/// One line of pings.txt: status of `ping -c 3` and the source node's tunl0 tx packets.
pub struct Ping {
    pub src: String,
    pub dst: String,
    pub status: i32,
    pub tx_before: u64,
    pub tx_after: u64,
}

pub fn pings(work: &WorkDir, phase: &str) -> Vec<Ping> {
    work.read(&format!("{phase}/pings.txt"))
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some(Ping {
                src: f.first()?.to_string(),
                dst: f.get(1)?.to_string(),
                status: f.get(2)?.parse().ok()?,
                tx_before: f.get(3)?.parse().ok()?,
                tx_after: f.get(4)?.parse().ok()?,
            })
        })
        .collect()
}

/// Checks the phase's pings: `count` of them, each answered three times, and crossing tunl0
/// exactly when `via_tunl0(src, dst)` says so (by the source's tunl0 tx counter).
pub fn check_pings(
    work: &WorkDir,
    phase: &str,
    count: usize,
    via_tunl0: impl Fn(&str, &str) -> bool,
) {
    let diag = || work.diagnostics();
    let results = pings(work, phase);
    assert_eq!(
        results.len(),
        count,
        "{phase}: pings.txt: {}\n{}",
        work.read(&format!("{phase}/pings.txt")),
        diag()
    );
    for p in results {
        let (src, dst) = (&p.src, &p.dst);
        let out = work.read(&format!("{phase}/ping-{src}-{dst}.txt"));
        assert!(
            p.status == 0 && out.contains("3 received"),
            "{phase}: pod on {src} cannot ping the pod on {dst}:\n{out}\n{}",
            diag()
        );
        let tunnelled = p.tx_after.saturating_sub(p.tx_before);
        if via_tunl0(src, dst) {
            assert!(
                tunnelled >= 3,
                "{phase}: {src} -> {dst} must cross tunl0, but {src}'s tunl0 sent {tunnelled} \
                 packets during the ping\n{}",
                diag()
            );
        } else {
            assert_eq!(
                tunnelled,
                0,
                "{phase}: {src} -> {dst} must go direct, but {src}'s tunl0 sent {tunnelled} \
                 packets during the ping\n{}",
                diag()
            );
        }
    }
}

/// The pod helper role, inside the VM: a pod on `node` as the CNI plugin would make it (an
/// address through IPAM, the WorkloadEndpoint naming `MARGAY_VM_CALI`, at the etcd of
/// `MARGAY_VM_ETCD`); the scenario makes the veth. Writes `<node>_POD=ip` and
/// `<node>_BLOCK=cidr` (blocks of `block_len`) to `MARGAY_VM_OUT`. With `block_len_v6` the pod
/// is dual-stack: an IPv6 address too (from an IPv6 pool of blocks that long), both in the
/// WorkloadEndpoint, and `<node>_POD6` / `<node>_BLOCK6` written beside.
pub fn wire_pod(node: String, block_len: u8, block_len_v6: Option<u8>) {
    use std::collections::BTreeMap;
    use std::net::IpAddr;

    use margay_datastore::ipam::{Ipam, handle_for_container};
    use margay_datastore::resources::{Resource, WorkloadEndpointSpec};
    use margay_datastore::{EtcdArgs, Store};

    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set"));
    let (url, cali, out) = (
        var("MARGAY_VM_ETCD"),
        var("MARGAY_VM_CALI"),
        var("MARGAY_VM_OUT"),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let (ip, ip6) = rt.block_on(async {
        let store = Store::connect(&EtcdArgs::plain([url])).await.expect("etcd");
        let container = format!("pod-{node}-container");
        let handle = handle_for_container(&container);
        let attrs = BTreeMap::from([("node".to_string(), node.clone())]);
        let got = Ipam::new(store.clone())
            .auto_assign(
                &handle,
                &node,
                &attrs,
                1,
                usize::from(block_len_v6.is_some()),
                &[],
            )
            .await
            .expect("an address through IPAM");
        let Some(IpAddr::V4(ip)) = got.v4.first().copied() else {
            panic!("no IPv4 address assigned: {got:?}")
        };
        let ip6 = block_len_v6.map(|_| match got.v6.first().copied() {
            Some(IpAddr::V6(ip6)) => ip6,
            _ => panic!("no IPv6 address assigned: {got:?}"),
        });
        let mut networks = vec![format!("{ip}/32")];
        networks.extend(ip6.map(|a| format!("{a}/128")));
        let mut wep = Resource::new(
            format!("{node}-k8s-pod--{node}-eth0"),
            WorkloadEndpointSpec {
                orchestrator: Some("k8s".into()),
                node: node.clone(),
                container_id: container,
                pod: Some(format!("pod-{node}")),
                endpoint: Some("eth0".into()),
                ip_networks: networks,
                interface_name: cali,
                ..Default::default()
            },
        );
        wep.metadata.namespace = Some("default".into());
        store
            .create(&wep)
            .await
            .expect("creating the WorkloadEndpoint");
        (ip, ip6)
    });
    let block = ipnet::Ipv4Net::new(ip, block_len)
        .expect("block length")
        .trunc();
    let mut text = format!("{node}_POD={ip}\n{node}_BLOCK={block}\n");
    if let (Some(ip6), Some(len)) = (ip6, block_len_v6) {
        let block6 = ipnet::Ipv6Net::new(ip6, len)
            .expect("IPv6 block length")
            .trunc();
        text += &format!("{node}_POD6={ip6}\n{node}_BLOCK6={block6}\n");
    }
    std::fs::write(&out, text).unwrap_or_else(|e| panic!("writing {out}: {e}"));
}

/// pods.env, as the scenarios gather what [`wire_pod`] wrote: each of `nodes`' pod address and
/// its block, by node name.
pub fn pods<'a>(
    work: &WorkDir,
    nodes: impl IntoIterator<Item = &'a str>,
) -> std::collections::BTreeMap<String, (std::net::Ipv4Addr, String)> {
    pods_of(work, nodes, "")
}

/// [`pods`] for the IPv6 addresses and blocks of dual-stack pods (`<node>_POD6`, `<node>_BLOCK6`).
pub fn pods_v6<'a>(
    work: &WorkDir,
    nodes: impl IntoIterator<Item = &'a str>,
) -> std::collections::BTreeMap<String, (std::net::Ipv6Addr, String)> {
    pods_of(work, nodes, "6")
}

fn pods_of<'a, A: std::str::FromStr>(
    work: &WorkDir,
    nodes: impl IntoIterator<Item = &'a str>,
    suffix: &str,
) -> std::collections::BTreeMap<String, (A, String)> {
    let text = work.read("pods.env");
    let vars: std::collections::BTreeMap<&str, &str> =
        text.lines().filter_map(|l| l.split_once('=')).collect();
    nodes
        .into_iter()
        .map(|n| {
            let pod = vars
                .get(format!("{n}_POD{suffix}").as_str())
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("pods.env lacks {n}'s pod{suffix}: {text}"));
            let block = vars
                .get(format!("{n}_BLOCK{suffix}").as_str())
                .unwrap_or_else(|| panic!("pods.env lacks {n}'s block{suffix}: {text}"));
            (n.to_string(), (pod, block.to_string()))
        })
        .collect()
}
