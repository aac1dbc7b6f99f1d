//! IPIP end to end inside a small VM, since this machine's kernel has no ipip module: Debian's
//! kernel under qemu (tests/vm/), this machine's root and this build's margay-felix shared into
//! it. Three nodes behind a router, n1 and n3 in one subnet and n2 in another, a pod behind
//! each. With the pool in IPIP Always every remote block goes through tunl0 and the pods ping
//! across it; switched to CrossSubnet (SIGHUP), the same-subnet peer is reached directly and
//! only n2 through tunl0. The scenario (tests/vm/ipip-scenario.sh) records routes, tunl0
//! counters and ping results; this test writes its inputs and checks what it recorded.

mod vm;

use std::time::Duration;

use serde_json::{Value, json};
use vm::{WorkDir, check_pings, check_route, up_with_addr};

/// The whole VM run (boot, two phases, power off; 30-40 s with TCG on an idle 2-core machine,
/// several times that when other builds share it) must end within this.
const VM_TIMEOUT: Duration = Duration::from_secs(600);
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

/// The takeover scenario's one phase: calico-node's IP-in-IP wiring adopted in IPIP Always.
const ADOPT: (&str, &str) = ("adopt", "Always");

/// The phases the scenario runs, in order: (directory, pool ipipMode).
const PHASES: [(&str, &str); 2] = [("always", "Always"), ("crosssubnet", "CrossSubnet")];

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
            "{0}_ADDR={1}\n{0}_SUBNET={2}\n{0}_GW={3}\n{0}_POD={4}\n{0}_CALI={5}\n\
             {0}_TUNNEL={6}\n{0}_BLOCK={7}\n",
            n.name,
            n.addr,
            n.subnet,
            n.gateway(),
            n.pod,
            n.cali,
            n.tunnel,
            n.block
        );
    }
    work.write("topology.env", &env);
    for (dir, mode) in PHASES.into_iter().chain([ADOPT]) {
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

/// One VM at a time: two under TCG on two cores would starve each other.
static ONE_VM: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Checks one phase's routes, tunnel device, readiness and pings against the pool's mode.
fn check_phase(work: &WorkDir, phase: &str, mode: &str) {
    check_phase_routes(work, phase, mode);
    check_pings(work, phase, PINGS.len(), |src, dst| {
        node(src).expected_dev(node(dst), mode) == "tunl0"
    });
}

/// Checks one phase's routes, tunnel device and readiness against the pool's mode.
fn check_phase_routes(work: &WorkDir, phase: &str, mode: &str) {
    let diag = || work.diagnostics();
    for n in &NODES {
        let routes = work.json_array(&format!("{phase}/routes-{}.json", n.name));
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
            if let Err(e) = check_route(r, m.ip(), n.expected_dev(m, mode)) {
                panic!(
                    "{phase}: {}'s route to {}: {e}\n{}",
                    n.name,
                    m.block,
                    diag()
                );
            }
        }
        let tunl0 = work.json_array(&format!("{phase}/tunl0-{}.json", n.name));
        let dev = &tunl0[0];
        assert!(
            up_with_addr(dev, n.tunnel),
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
}

#[test]
fn ipip_pods_ping_across_tunl0_in_a_vm() {
    let _one = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
    let repo = vm::repo_root();
    vm::prepare_vm(&repo);
    let work = WorkDir::new("ipipvm");
    write_inputs(&work);
    let took = vm::run_vm(&repo, "ipip-scenario.sh", &work, VM_TIMEOUT);
    vm::assert_scenario_done(&work, took);
    for (dir, mode) in PHASES {
        check_phase(&work, dir, mode);
    }
}

/// Taking over IP-in-IP nodes calico-node wired (tests/vm/ipip-adopt-scenario.sh): tunl0 as
/// Calico sets it (up, the Node's tunnel address), the pods' `/32`s (protocol boot), the
/// blackholes and the remote blocks through tunl0 (protocol bird). felix started with
/// `--adopt-route-protocols calico` makes every one of them its own in place, under pings every
/// 20 ms: none lost, no route deleted, tunl0 keeps its address.
#[test]
fn felix_adopts_calicos_ipip_wiring_without_losing_a_ping_in_a_vm() {
    let _one = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
    let repo = vm::repo_root();
    vm::prepare_vm(&repo);
    let work = WorkDir::new("ipipadopt");
    write_inputs(&work);
    let took = vm::run_vm(&repo, "ipip-adopt-scenario.sh", &work, VM_TIMEOUT);
    vm::assert_scenario_done(&work, took);
    let (phase, mode) = ADOPT;
    check_phase_routes(&work, phase, mode);
    let diag = || work.diagnostics();
    for n in &NODES {
        let routes = work.json_array(&format!("{phase}/routes-{}.json", n.name));
        for (dst, kind) in [(n.pod, "unicast"), (n.block, "blackhole")] {
            let r = routes
                .iter()
                .find(|r| r["dst"] == dst)
                .unwrap_or_else(|| panic!("{}: no route to {dst}: {routes:?}\n{}", n.name, diag()));
            assert!(
                r["protocol"].to_string().contains("81")
                    && (kind == "unicast" || r["type"] == "blackhole"),
                "{}: {dst} must be felix's {kind}: {r}\n{}",
                n.name,
                diag()
            );
        }
        let monitor = work.read(&format!("{phase}/monitor-{}.txt", n.name));
        let deleted: Vec<&str> = monitor
            .lines()
            .filter(|l| l.starts_with("Deleted") && l.contains(" 10.244."))
            .collect();
        assert!(
            deleted.is_empty(),
            "{}: a pod route was deleted during the takeover: {deleted:?}",
            n.name
        );
        assert!(monitor.contains("proto 81"), "{}: {monitor}", n.name);
    }
    for (src, dst) in PINGS {
        let out = work.read(&format!("{phase}/ping-{src}-{dst}.txt"));
        let summary = out
            .lines()
            .find(|l| l.contains("packet loss"))
            .unwrap_or_else(|| panic!("{src} -> {dst}: no summary: {out}\n{}", diag()));
        assert!(
            summary.contains(" 0% packet loss"),
            "{src} -> {dst}: {summary}"
        );
        let sent: u32 = summary.split_whitespace().next().unwrap().parse().unwrap();
        assert!(sent >= 50, "{src} -> {dst}: {summary}");
    }
}
