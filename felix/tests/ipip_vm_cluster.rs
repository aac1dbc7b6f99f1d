//! IPIP end to end in cluster mode, inside the small VM (tests/vm/): the route set comes from
//! real inputs, a real etcd and margay-bgpd meshing between the nodes, not from state files.
//! Three nodes behind a router, n1 and n3 in one subnet and n2 in another, etcd on a subnet of
//! its own. The pool is applied with `margayctl apply`, IPIP Always, then CrossSubnet; felix
//! takes each node's tunnel address from its block and records it in the Node; every remote
//! block is routed `via <node IP> dev tunl0 onlink` from what bgpd learned (in CrossSubnet, the
//! same-subnet node directly) and the pods ping across tunl0.
//!
//! The scenario (tests/vm/ipip-cluster-scenario.sh) runs in the VM; it wires each pod as the
//! CNI plugin would, with this same test binary as its helper: run with `MARGAY_VM_NODE` set,
//! the test takes the pod's address through IPAM and writes its WorkloadEndpoint instead.

mod vm;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::Ipv4Net;
use serde_json::Value;
use vm::{WorkDir, check_pings, check_route, up_with_addr};

/// The whole VM run (boot, etcd, daemons, two phases; about a minute with TCG on an idle
/// 2-core machine; over 200 s when other builds share it, as the WireGuard VM run allows for).
const VM_TIMEOUT: Duration = Duration::from_secs(600);
const TEST_NAME: &str = "ipip_cluster_pods_ping_across_tunl0_in_a_vm";
const POOL: &str = "10.244.0.0/16";
const BLOCK_LEN: u8 = 26;
/// The router's address on each subnet (one bridge each): the nodes' two, then etcd's.
const SUBNETS: [&str; 3] = ["10.10.1.1/24", "10.10.2.1/24", "10.10.9.1/24"];
const ETCD_ADDR: &str = "10.10.9.2/24";
const ETCD_SUBNET: usize = 2;
/// Pod to pod pings, as (source, destination) nodes.
const PINGS: [(&str, &str); 4] = [("n1", "n2"), ("n2", "n1"), ("n1", "n3"), ("n3", "n1")];
/// The phases the scenario runs, in order: (directory, pool ipipMode).
const PHASES: [(&str, &str); 2] = [("always", "Always"), ("crosssubnet", "CrossSubnet")];
/// The MTU of the nodes' uplinks (veth default) and so of tunl0, 20 bytes less.
const UPLINK_MTU: u64 = 1500;

/// A node of the VM's cluster.
struct VmNode {
    name: &'static str,
    /// Address on its uplink, with the subnet's length.
    addr: &'static str,
    /// Index into [`SUBNETS`].
    subnet: usize,
    /// The host side of its pod's veth.
    cali: &'static str,
}

const NODES: [VmNode; 3] = [
    VmNode {
        name: "n1",
        addr: "10.10.1.2/24",
        subnet: 0,
        cali: "cali00000000001",
    },
    VmNode {
        name: "n2",
        addr: "10.10.2.2/24",
        subnet: 1,
        cali: "cali00000000002",
    },
    VmNode {
        name: "n3",
        addr: "10.10.1.3/24",
        subnet: 0,
        cali: "cali00000000003",
    },
];

fn gateway(subnet: usize) -> &'static str {
    SUBNETS[subnet].split('/').next().unwrap_or("")
}

impl VmNode {
    fn ip(&self) -> &'static str {
        self.addr.split('/').next().unwrap_or(self.addr)
    }

    fn others(&self) -> impl Iterator<Item = &'static VmNode> + '_ {
        NODES.iter().filter(move |m| m.name != self.name)
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

/// Writes topology.env and each phase's pool.
fn write_inputs(work: &WorkDir) {
    let exe = std::env::current_exe().expect("the test binary's path");
    let ctl = margay_lab::margay_binary("margayctl", "cargo build -p margay-ctl")
        .expect("margayctl (cargo build --workspace builds it)");
    let bgpd = margay_lab::bgpd_binary().expect("margay-bgpd");
    let mut env = format!(
        "FELIX={}\nBGPD={}\nCTL={}\nETCD=/usr/bin/etcd\n\
         POD_HELPER=\"{} --exact {TEST_NAME} --nocapture --test-threads 1\"\n\
         SUBNETS=\"{}\"\nNODES=\"{}\"\nPINGS=\"{}\"\n\
         ETCD_ADDR={ETCD_ADDR}\nETCD_SUBNET={ETCD_SUBNET}\nETCD_GW={}\n",
        env!("CARGO_BIN_EXE_margay-felix"),
        bgpd.display(),
        ctl.display(),
        exe.display(),
        SUBNETS.join(" "),
        NODES.iter().map(|n| n.name).collect::<Vec<_>>().join(" "),
        PINGS
            .iter()
            .map(|(s, d)| format!("{s}:{d}"))
            .collect::<Vec<_>>()
            .join(" "),
        gateway(ETCD_SUBNET),
    );
    for n in &NODES {
        env += &format!(
            "{0}_ADDR={1}\n{0}_SUBNET={2}\n{0}_GW={3}\n{0}_CALI={4}\n",
            n.name,
            n.addr,
            n.subnet,
            gateway(n.subnet),
            n.cali
        );
    }
    work.write("topology.env", &env);
    for (dir, mode) in PHASES {
        work.write(
            &format!("{dir}/pool.yaml"),
            &format!(
                "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: pool1\n\
                 spec:\n  cidr: {POOL}\n  blockSize: {BLOCK_LEN}\n  ipipMode: {mode}\n  \
                 vxlanMode: Never\n  natOutgoing: false\n"
            ),
        );
    }
}

fn block_of(ip: Ipv4Addr) -> Ipv4Net {
    Ipv4Net::new(ip, BLOCK_LEN).expect("block length").trunc()
}

/// The Node's recorded IPIP tunnel address, as `margayctl get node -o json` showed it.
fn recorded_tunnel(work: &WorkDir, phase: &str, name: &str) -> Ipv4Addr {
    let text = work.read(&format!("{phase}/node-{name}.json"));
    let node: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{phase}: Node {name}: {e}: {text}\n{}", work.diagnostics()));
    node["spec"]["bgp"]["ipv4IPIPTunnelAddr"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "{phase}: Node {name} records no IPIP tunnel address: {node}\n{}",
                work.diagnostics()
            )
        })
}

/// Checks one phase: tunnel addresses (from the node's block, in its Node, on tunl0 with the
/// uplink's MTU less 20), the routes bgpd's routes became, readiness, and the pings.
fn check_phase(
    work: &WorkDir,
    phase: &str,
    mode: &str,
    pods: &BTreeMap<String, (Ipv4Addr, String)>,
) {
    let diag = || work.diagnostics();
    for n in &NODES {
        let (_, own_block) = &pods[n.name];
        let tunnel = recorded_tunnel(work, phase, n.name);
        assert_eq!(
            &block_of(tunnel).to_string(),
            own_block,
            "{phase}: {}'s tunnel address {tunnel} must come from its block\n{}",
            n.name,
            diag()
        );
        let tunl0 = work.json_array(&format!("{phase}/tunl0-{}.json", n.name));
        let dev = &tunl0[0];
        assert!(
            up_with_addr(dev, &tunnel.to_string()) && dev["mtu"] == UPLINK_MTU - 20,
            "{phase}: {}'s tunl0 must be up with {tunnel}, MTU {}: {dev}\n{}",
            n.name,
            UPLINK_MTU - 20,
            diag()
        );

        let routes = work.json_array(&format!("{phase}/routes-{}.json", n.name));
        let shown = routes
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        let find = |dst: &str| {
            routes.iter().find(|r| r["dst"] == dst).unwrap_or_else(|| {
                panic!(
                    "{phase}: {} has no route to {dst}:\n{shown}\n{}",
                    n.name,
                    diag()
                )
            })
        };
        let own = find(own_block);
        assert!(
            own["type"] == "blackhole",
            "{phase}: {}'s own block must be a blackhole: {own}\n{}",
            n.name,
            diag()
        );
        for m in n.others() {
            let (_, block) = &pods[m.name];
            if let Err(e) = check_route(find(block), m.ip(), n.expected_dev(m, mode)) {
                panic!(
                    "{phase}: {}'s route to {}'s block {block}: {e}\n{}",
                    n.name,
                    m.name,
                    diag()
                );
            }
        }
        let ready = work.read(&format!("{phase}/readiness-{}.txt", n.name));
        assert!(
            ready.trim_end().ends_with("200"),
            "{phase}: felix on {} is not ready: {ready}\n{}",
            n.name,
            diag()
        );
    }
    check_pings(work, phase, PINGS.len(), |src, dst| {
        node(src).expected_dev(node(dst), mode) == "tunl0"
    });
}

#[test]
fn ipip_cluster_pods_ping_across_tunl0_in_a_vm() {
    if let Ok(node) = std::env::var("MARGAY_VM_NODE") {
        // Run by the scenario inside the VM.
        vm::wire_pod(node, BLOCK_LEN, None);
        return;
    }
    let repo = vm::repo_root();
    vm::prepare_vm(&repo);
    let work = WorkDir::new("ipipvm-cluster");
    write_inputs(&work);
    let took = vm::run_vm(&repo, "ipip-cluster-scenario.sh", &work, VM_TIMEOUT);
    vm::assert_scenario_done(&work, took);
    let pods = vm::pods(&work, NODES.iter().map(|n| n.name));
    for (dir, mode) in PHASES {
        check_phase(&work, dir, mode, &pods);
    }
    // Switching the mode keeps the tunnel addresses: the pool still needs tunl0.
    for n in &NODES {
        assert_eq!(
            recorded_tunnel(&work, "always", n.name),
            recorded_tunnel(&work, "crosssubnet", n.name),
            "{}'s tunnel address changed with the mode\n{}",
            n.name,
            work.diagnostics()
        );
    }
}
