//! IPIP end to end inside a small VM, since this machine's kernel has no ipip module: Debian's
//! kernel under qemu (tests/vm/), this machine's root and this build's margay-felix shared into
//! it. Three nodes behind a router, n1 and n3 in one subnet and n2 in another, a pod behind
//! each. With the pool in IPIP Always every remote block goes through tunl0 and the pods ping
//! across it; switched to CrossSubnet (SIGHUP), the same-subnet peer is reached directly and
//! only n2 through tunl0. The scenario (tests/vm/ipip-scenario.sh) records routes, tunl0
//! counters and ping results; this test writes its inputs and checks what it recorded.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The whole VM run (boot, two phases, power off; 30-40 s with TCG on 2 cores) must end within
/// this.
const VM_TIMEOUT: Duration = Duration::from_secs(240);
/// The IP pool all blocks come from.
const POOL: &str = "10.244.0.0/16";
/// The router's address on each subnet (one bridge each).
const SUBNETS: [&str; 2] = ["10.10.1.1/24", "10.10.2.1/24"];
/// Pod to pod pings, as "source:destination" nodes.
const PINGS: [(&str, &str); 4] = [("n1", "n2"), ("n2", "n1"), ("n1", "n3"), ("n3", "n1")];

/// A node of the VM's cluster and the pod behind it.
struct VmNode {
    name: &'static str,
    /// Address on its uplink, with the subnet's length.
    addr: &'static str,
    /// Index into [`SUBNETS`].
    subnet: usize,
    /// Its affine block.
    block: &'static str,
    /// The IPIP tunnel address (from its block).
    tunnel: &'static str,
    pod: &'static str,
    cali: &'static str,
}

const NODES: [VmNode; 3] = [
    VmNode {
        name: "n1",
        addr: "10.10.1.2/24",
        subnet: 0,
        block: "10.244.1.0/26",
        tunnel: "10.244.1.0",
        pod: "10.244.1.5",
        cali: "cali00000000001",
    },
    VmNode {
        name: "n2",
        addr: "10.10.2.2/24",
        subnet: 1,
        block: "10.244.2.0/26",
        tunnel: "10.244.2.0",
        pod: "10.244.2.5",
        cali: "cali00000000002",
    },
    VmNode {
        name: "n3",
        addr: "10.10.1.3/24",
        subnet: 0,
        block: "10.244.3.0/26",
        tunnel: "10.244.3.0",
        pod: "10.244.3.5",
        cali: "cali00000000003",
    },
];

impl VmNode {
    fn ip(&self) -> &'static str {
        self.addr.split('/').next().unwrap_or(self.addr)
    }

    fn gateway(&self) -> &'static str {
        SUBNETS[self.subnet].split('/').next().unwrap_or("")
    }

    fn others(&self) -> impl Iterator<Item = &'static VmNode> + '_ {
        NODES.iter().filter(move |m| m.name != self.name)
    }

    /// felix's standalone state for this node with the pool in `mode`.
    fn state(&self, mode: &str) -> Value {
        json!({
            "node": {"name": self.name, "address": self.addr, "ipipTunnelAddr": self.tunnel},
            "pools": [{"cidr": POOL, "ipipMode": mode, "vxlanMode": "Never"}],
            "endpoints": [{"name": format!("default/pod-{}", self.name), "interface": self.cali,
                           "ips": [format!("{}/32", self.pod)]}],
            "affineBlocks": [self.block],
            "remoteRoutes": self.others()
                .map(|m| json!({"prefix": m.block, "nextHop": m.ip()}))
                .collect::<Vec<_>>(),
        })
    }

    /// The device felix must route `peer`'s block through in `mode`.
    fn expected_dev(&self, peer: &VmNode, mode: &str) -> &'static str {
        match mode {
            "CrossSubnet" if peer.subnet == self.subnet => "eth0",
            _ => "tunl0",
        }
    }
}

fn node(name: &str) -> &'static VmNode {
    NODES
        .iter()
        .find(|n| n.name == name)
        .expect("node of the topology")
}

/// The phases the scenario runs, in order: (directory, pool ipipMode).
const PHASES: [(&str, &str); 2] = [("always", "Always"), ("crosssubnet", "CrossSubnet")];

/// A directory shared into the VM; kept (and named in the failure) when the test fails.
struct WorkDir(PathBuf);

impl WorkDir {
    fn new() -> WorkDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path =
            std::env::temp_dir().join(format!("margay-ipipvm.{}.{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).expect("creating the VM work directory");
        WorkDir(path)
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.0.join(rel)).unwrap_or_else(|e| format!("<{rel}: {e}>"))
    }

    fn write(&self, rel: &str, text: &str) {
        let path = self.0.join(rel);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("creating a phase directory");
        }
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {path:?}: {e}"));
    }

    /// The serial console and felix's logs, for failure messages.
    fn diagnostics(&self) -> String {
        let console = self.read("console.log");
        let lines: Vec<&str> = console.lines().collect();
        let tail = lines[lines.len().saturating_sub(150)..].join("\n");
        let mut text = format!(
            "work directory (kept): {}\n---- serial console (last 150 lines) ----\n{tail}\n",
            self.0.display()
        );
        for n in &NODES {
            let log = self.read(&format!("felix-{}.log", n.name));
            let lines: Vec<&str> = log.lines().collect();
            text += &format!(
                "---- felix-{}.log (last 20 lines) ----\n{}\n",
                n.name,
                lines[lines.len().saturating_sub(20)..].join("\n")
            );
        }
        text
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("felix/ sits in the workspace")
        .to_path_buf()
}

/// Writes topology.env and each phase's felix states and route expectations.
fn write_inputs(work: &WorkDir) {
    let felix = env!("CARGO_BIN_EXE_margay-felix");
    let mut env = format!(
        "FELIX={felix}\nSUBNETS=\"{}\"\nNODES=\"{}\"\nPINGS=\"{}\"\n",
        SUBNETS.join(" "),
        NODES.iter().map(|n| n.name).collect::<Vec<_>>().join(" "),
        PINGS
            .iter()
            .map(|(s, d)| format!("{s}:{d}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    for n in &NODES {
        env += &format!(
            "{0}_ADDR={1}\n{0}_SUBNET={2}\n{0}_GW={3}\n{0}_POD={4}\n{0}_CALI={5}\n",
            n.name,
            n.addr,
            n.subnet,
            n.gateway(),
            n.pod,
            n.cali
        );
    }
    work.write("topology.env", &env);
    for (dir, mode) in PHASES {
        let mut expect = String::new();
        for n in &NODES {
            work.write(
                &format!("{dir}/{}.json", n.name),
                &serde_json::to_string_pretty(&n.state(mode)).unwrap(),
            );
            for m in n.others() {
                expect += &format!("{} {} {}\n", n.name, m.block, n.expected_dev(m, mode));
            }
        }
        work.write(&format!("{dir}/expect"), &expect);
    }
}

/// Runs tests/vm/prepare.sh: the kernel and initramfs must be had, or the test fails saying why.
fn prepare_vm(repo: &Path) {
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

/// Boots the VM on the scenario and waits for it to power off; kills qemu on timeout.
fn run_vm(repo: &Path, work: &WorkDir) -> Duration {
    let console = std::fs::File::create(work.0.join("console.log")).expect("console.log");
    let start = Instant::now();
    let mut qemu = Command::new(repo.join("tests/vm/run.sh"))
        .arg(repo.join("tests/vm/ipip-scenario.sh"))
        .arg(&work.0)
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
            None if start.elapsed() > VM_TIMEOUT => {
                // run.sh execs qemu, so this PID is qemu's.
                let _ = qemu.kill();
                let _ = qemu.wait();
                panic!(
                    "the VM did not power off within {VM_TIMEOUT:?}\n{}",
                    work.diagnostics()
                );
            }
            None => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

fn json_file(work: &WorkDir, rel: &str) -> Vec<Value> {
    let text = work.read(rel);
    serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_else(|| {
            panic!(
                "{rel} is not `ip -j` output: {text}\n{}",
                work.diagnostics()
            )
        })
}

/// One line of pings.txt: status of `ping -c 3` and the source node's tunl0 tx packets.
struct Ping {
    status: i32,
    tx_before: u64,
    tx_after: u64,
}

fn pings(work: &WorkDir, phase: &str) -> Vec<(String, String, Ping)> {
    work.read(&format!("{phase}/pings.txt"))
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((
                f.first()?.to_string(),
                f.get(1)?.to_string(),
                Ping {
                    status: f.get(2)?.parse().ok()?,
                    tx_before: f.get(3)?.parse().ok()?,
                    tx_after: f.get(4)?.parse().ok()?,
                },
            ))
        })
        .collect()
}

/// Checks one phase's routes, tunnel device, readiness and pings against the pool's mode.
fn check_phase(work: &WorkDir, phase: &str, mode: &str) {
    let diag = || work.diagnostics();
    for n in &NODES {
        let routes = json_file(work, &format!("{phase}/routes-{}.json", n.name));
        let shown = routes
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        for m in n.others() {
            let r = routes
                .iter()
                .find(|r| r["dst"] == m.block)
                .unwrap_or_else(|| {
                    panic!(
                        "{phase}: {} has no route to {}'s block {}:\n{shown}\n{}",
                        n.name,
                        m.name,
                        m.block,
                        diag()
                    )
                });
            let dev = n.expected_dev(m, mode);
            let onlink = r["flags"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f == "onlink"));
            assert!(
                r["gateway"] == m.ip()
                    && r["dev"] == dev
                    && r["protocol"].to_string().contains("81")
                    && (dev != "tunl0" || onlink),
                "{phase}: {}'s route to {} must be `via {} dev {dev}{}` proto 81, is {r}\n{}",
                n.name,
                m.block,
                m.ip(),
                if dev == "tunl0" { " onlink" } else { "" },
                diag()
            );
        }
        let tunl0 = json_file(work, &format!("{phase}/tunl0-{}.json", n.name));
        let dev = &tunl0[0];
        let up = dev["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f == "UP"));
        let has_addr = dev["addr_info"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a["local"] == n.tunnel));
        assert!(
            up && has_addr,
            "{phase}: {}'s tunl0 must be up with {}: {dev}\n{}",
            n.name,
            n.tunnel,
            diag()
        );
        let ready = work.read(&format!("{phase}/readiness-{}.txt", n.name));
        assert!(
            ready.trim_end().ends_with("200"),
            "{phase}: felix on {} is not ready: {ready}\n{}",
            n.name,
            diag()
        );
    }

    let results = pings(work, phase);
    assert_eq!(
        results.len(),
        PINGS.len(),
        "{phase}: pings.txt: {}\n{}",
        work.read(&format!("{phase}/pings.txt")),
        diag()
    );
    for (src, dst, p) in results {
        let out = work.read(&format!("{phase}/ping-{src}-{dst}.txt"));
        assert!(
            p.status == 0 && out.contains("3 received"),
            "{phase}: pod on {src} cannot ping the pod on {dst}:\n{out}\n{}",
            diag()
        );
        let tunnelled = p.tx_after.saturating_sub(p.tx_before);
        match node(&src).expected_dev(node(&dst), mode) {
            "tunl0" => assert!(
                tunnelled >= 3,
                "{phase}: {src} -> {dst} must cross tunl0, but {src}'s tunl0 sent {tunnelled} \
                 packets during the ping\n{}",
                diag()
            ),
            _ => assert_eq!(
                tunnelled,
                0,
                "{phase}: {src} -> {dst} must go direct, but {src}'s tunl0 sent {tunnelled} \
                 packets during the ping\n{}",
                diag()
            ),
        }
    }
}

#[test]
fn ipip_pods_ping_across_tunl0_in_a_vm() {
    let repo = repo_root();
    prepare_vm(&repo);
    let work = WorkDir::new();
    write_inputs(&work);
    let took = run_vm(&repo, &work);
    let status = work.read("status");
    assert_eq!(
        status.trim(),
        "done",
        "the scenario did not finish\n{}",
        work.diagnostics()
    );
    for (dir, mode) in PHASES {
        check_phase(&work, dir, mode);
    }
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
