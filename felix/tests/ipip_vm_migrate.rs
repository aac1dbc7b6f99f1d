//! A mixed IP-in-IP cluster with Calico's BIRD, moved to margay node by node, inside the small
//! VM (tests/vm/): this machine's kernel has no `ipip` module. Three Calico nodes on one subnet
//! (etcd on another) as the lab builds them (`margay_lab::calico`): Calico's etcd keys with the
//! IPPool in ipipMode Always and each Node's `ipv4IPIPTunnelAddr`, BIRD 2 on the configuration
//! calico-node's confd renders (an IPIP pool's kernel routes through tunl0 onlink, as Calico's
//! BIRD sets `krt_tunnel`), pods wired as Calico wires them. The scenario
//! (tests/vm/ipip-migrate-scenario.sh) imports the keys, then kills each node's BIRD and starts
//! margay-bgpd and margay-felix with `--adopt-route-protocols calico` in its place, while every
//! pod pings every other at 100/s: none may be lost and no route inside the pool deleted, and
//! each new bgpd sends End-of-RIB only once felix has told it the node's block (on a slow node
//! that takes far longer than the 2 s bgpd used to wait: `--originate-wait`).

mod vm;

use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::Ipv4Net;
use margay_lab::calico::{
    self, ClusterKeys, ConfdIpip, NodeKeys, PodKeys, cali_name, cluster_keys, confd_input,
};
use vm::{WorkDir, check_route};

/// The whole VM run (boot, etcd, three BIRDs, three takeovers under TCG on 2 cores: about 8
/// minutes on this loaded machine, most of it starting the daemons).
const VM_TIMEOUT: Duration = Duration::from_secs(900);
const POOL: &str = "10.244.0.0/16";
const AS: u32 = 64512;
/// The router's address on the nodes' subnet and on etcd's.
const SUBNETS: [&str; 2] = ["10.10.1.1/24", "10.10.9.1/24"];
const ETCD_ADDR: &str = "10.10.9.2/24";
const NODES: [&str; 3] = ["n1", "n2", "n3"];

fn nth(net: Ipv4Net, i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()) + i)
}

/// Calico's view of the cluster: node `k` at 10.10.1.(k+2), the (k+1)th /26 of the pool, its
/// tunnel address the block's first, its pod the block's fifth.
fn keys() -> ClusterKeys {
    let pool: Ipv4Net = POOL.parse().unwrap();
    let nodes = NODES
        .iter()
        .enumerate()
        .map(|(k, name)| {
            let block = Ipv4Net::new(nth(pool, 64 * (k as u32 + 1)), 26).unwrap();
            let pod = format!("web-{name}");
            NodeKeys {
                name: name.to_string(),
                ip: format!("10.10.1.{}/24", k + 2).parse().unwrap(),
                block,
                vtep: None,
                pods: vec![PodKeys {
                    namespace: "default".into(),
                    name: pod.clone(),
                    container: format!("{:064x}", 0xca11c0 + k),
                    ip: nth(block, 5),
                    interface: cali_name("default", &pod),
                    ip6: None,
                }],
                ipip_tunnel: Some(nth(block, 0)),
                v6: None,
            }
        })
        .collect();
    ClusterKeys {
        pool,
        block_size: 26,
        as_num: AS,
        vxlan: false,
        nodes,
        ipip: Some(ConfdIpip::Always),
        pool6: None,
    }
}

/// topology.env, Calico's keys and each node's BIRD configuration.
fn write_inputs(work: &WorkDir, c: &ClusterKeys) {
    let ctl = margay_lab::margay_binary("margayctl", "cargo build -p margay-ctl")
        .expect("margayctl (cargo build --workspace builds it)");
    let bgpd = margay_lab::bgpd_binary().expect("margay-bgpd");
    let gw = SUBNETS[0].split('/').next().unwrap();
    let mut env = format!(
        "FELIX={}\nBGPD={}\nCTL={}\nETCD=/usr/bin/etcd\nSUBNETS=\"{}\"\nNODES=\"{}\"\n\
         ETCD_ADDR={ETCD_ADDR}\nETCD_SUBNET=1\nETCD_GW={}\n",
        env!("CARGO_BIN_EXE_margay-felix"),
        bgpd.display(),
        ctl.display(),
        SUBNETS.join(" "),
        NODES.join(" "),
        SUBNETS[1].split('/').next().unwrap(),
    );
    for (k, n) in c.nodes.iter().enumerate() {
        env += &format!(
            "{0}_ADDR={1}\n{0}_SUBNET=0\n{0}_GW={gw}\n{0}_CALI={2}\n{0}_POD={3}\n\
             {0}_BLOCK={4}\n{0}_TUNNEL={5}\n",
            n.name,
            n.ip,
            n.pods[0].interface,
            n.pods[0].ip,
            n.block,
            n.ipip_tunnel.unwrap()
        );
        work.write(
            &format!("bird-{}.conf", n.name),
            &calico::confd::render(&confd_input(c, k)),
        );
    }
    work.write("topology.env", &env);
    work.write(
        "calico-keys.json",
        &calico::keys::txn_body(&cluster_keys(c)),
    );
}

#[test]
fn a_calico_ipip_cluster_moves_to_margay_under_pings_in_a_vm() {
    let repo = vm::repo_root();
    vm::prepare_vm(&repo);
    let work = WorkDir::new("ipipvm-migrate");
    let c = keys();
    write_inputs(&work, &c);
    let took = vm::run_vm(&repo, "ipip-migrate-scenario.sh", &work, VM_TIMEOUT);
    vm::assert_scenario_done(&work, took);
    let diag = || work.diagnostics();

    // Mixed throughout, and not one ping lost either way.
    for src in NODES {
        for dst in NODES.iter().filter(|d| **d != src) {
            let text = work.read(&format!("ping-{src}-{dst}.txt"));
            let summary = text
                .lines()
                .find(|l| l.contains("packets transmitted"))
                .unwrap_or_else(|| panic!("ping {src} -> {dst}: no summary: {text}\n{}", diag()));
            let sent: u32 = summary.split_whitespace().next().unwrap().parse().unwrap();
            assert!(
                summary.contains(" 0% packet loss") && sent >= 300,
                "ping {src} -> {dst}: {summary}\n{}",
                diag()
            );
        }
    }
    // Each new bgpd sent End-of-RIB because felix had told it the node's block, not because
    // its wait for felix ran out: the peers' sweep of stale routes found the block refreshed.
    for n in NODES {
        let log = work.read(&format!("bgpd-{n}.log"));
        let settled = log
            .lines()
            .find(|l| l.contains("origination settled"))
            .unwrap_or_else(|| panic!("{n}: bgpd never sent End-of-RIB\n{}", diag()));
        assert!(
            settled.contains("SetOriginated"),
            "{n}: End-of-RIB went out before felix said what the node originates: {settled}\n{}",
            diag()
        );
    }
    // No route inside the pool deleted on any node: Calico's were replaced in place.
    for n in NODES {
        let deleted: Vec<String> = work
            .read(&format!("monitor-{n}.txt"))
            .lines()
            .filter(|l| l.starts_with("Deleted") && l.contains(" 10.244."))
            .map(str::to_string)
            .collect();
        assert!(deleted.is_empty(), "{n}: {deleted:#?}\n{}", diag());
    }
    // At the end every remote block is felix's, through tunl0 onlink to the node.
    for (k, n) in c.nodes.iter().enumerate() {
        let routes = work.json_array(&format!("routes-{}.json", n.name));
        for (j, m) in c.nodes.iter().enumerate().filter(|(j, _)| *j != k) {
            let r = routes
                .iter()
                .find(|r| r["dst"] == m.block.to_string().as_str())
                .unwrap_or_else(|| panic!("{}: no route to {}\n{}", n.name, m.block, diag()));
            assert_eq!(r["protocol"], "81", "{}: {r}\n{}", n.name, diag());
            if let Err(e) = check_route(r, &m.ip.addr().to_string(), "tunl0") {
                panic!("{} -> node {j}: {e}\n{}", n.name, diag());
            }
        }
    }
}
