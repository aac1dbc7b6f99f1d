//! WireGuard between nodes, end to end inside the small VM (tests/vm/; this machine's kernel
//! has no wireguard module, Debian's has). Cluster mode: etcd, margay-bgpd and margay-felix on
//! three nodes in one subnet, a pod behind each, a pool without encapsulation. The scenario
//! (tests/vm/wireguard-scenario.sh) turns WireGuard on with a FelixConfiguration, captures the
//! router's ports while the pods ping each other, removes n1's published key (rotation), then
//! turns WireGuard off; this test checks what it recorded:
//! - on: every node has `wg.margay` (MTU 1500 - 60), its key in the Node, the two other
//!   nodes as peers (endpoint = node address, allowed IPs = their block and address), their
//!   blocks in table 1 through the device, and the rule `not fwmark 0x100000 lookup 1` at 99;
//!   the capture holds only UDP between the nodes' port 51820, never a pod's address;
//! - rotated: n1 published a new key; the others peer with it and not with the old one; pods
//!   still reach each other;
//! - off: device, rule and table gone, keys cleared, pods reach each other unencrypted.
//!
//! Run inside the VM with `MARGAY_VM_NODE` the test binary wires a pod (IPAM and the
//! WorkloadEndpoint); with `MARGAY_VM_FORGET_KEY` it removes that Node's published key.

mod vm;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use margay_datastore::resources::NodeSpec;
use margay_datastore::{EtcdArgs, Store};
use serde_json::Value;
use vm::WorkDir;

/// The whole VM run (boot, etcd, daemons, three phases; about two minutes with TCG on an idle
/// 2-core machine, much longer on a loaded one).
const VM_TIMEOUT: Duration = Duration::from_secs(600);
const TEST_NAME: &str = "wireguard_encrypts_pod_traffic_between_nodes_in_a_vm";
const POOL: &str = "10.244.0.0/16";
const BLOCK_LEN: u8 = 26;
const SUBNETS: [&str; 2] = ["10.10.1.1/24", "10.10.9.1/24"];
const ETCD_ADDR: &str = "10.10.9.2/24";
/// (name, address, host side of its pod's veth); all in the first subnet.
const NODES: [(&str, &str, &str); 3] = [
    ("n1", "10.10.1.2/24", "cali00000000001"),
    ("n2", "10.10.1.3/24", "cali00000000002"),
    ("n3", "10.10.1.4/24", "cali00000000003"),
];
const PORT: u16 = 51820;

fn ip_of(addr: &str) -> &str {
    addr.split('/').next().unwrap_or(addr)
}

fn write_inputs(work: &WorkDir) {
    let exe = std::env::current_exe().expect("the test binary's path");
    let ctl = margay_lab::margay_binary("margayctl", "cargo build -p margay-ctl")
        .expect("margayctl (cargo build --workspace builds it)");
    let bgpd = margay_lab::bgpd_binary().expect("margay-bgpd");
    let mut env = format!(
        "FELIX={}\nBGPD={}\nCTL={}\nETCD=/usr/bin/etcd\n\
         HELPER=\"{} --exact {TEST_NAME} --nocapture --test-threads 1\"\n\
         SUBNETS=\"{}\"\nNODES=\"n1 n2 n3\"\nPINGS=\"\"\n\
         ETCD_ADDR={ETCD_ADDR}\nETCD_SUBNET=1\nETCD_GW=10.10.9.1\n",
        env!("CARGO_BIN_EXE_margay-felix"),
        bgpd.display(),
        ctl.display(),
        exe.display(),
        SUBNETS.join(" "),
    );
    for (n, addr, cali) in NODES {
        env += &format!("{n}_ADDR={addr}\n{n}_SUBNET=0\n{n}_GW=10.10.1.1\n{n}_CALI={cali}\n");
    }
    work.write("topology.env", &env);
    work.write(
        "pool.yaml",
        &format!(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: pool1\n\
             spec:\n  cidr: {POOL}\n  blockSize: {BLOCK_LEN}\n  ipipMode: Never\n  \
             vxlanMode: Never\n  natOutgoing: false\n"
        ),
    );
    for (file, on) in [("wg-on.yaml", true), ("wg-off.yaml", false)] {
        work.write(
            file,
            &format!(
                "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata:\n  \
                 name: default\nspec:\n  wireguardEnabled: {on}\n"
            ),
        );
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

fn var(k: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set"))
}

/// Inside the VM: removes `node`'s published key, as an operator rotating it would. Retried:
/// etcd in a TCG VM on a busy machine can miss a client's deadline.
fn forget_key(node: String) {
    let url = var("MARGAY_VM_ETCD");
    runtime().block_on(async {
        let mut last = String::new();
        for _ in 0..10 {
            let attempt = async {
                let store = Store::connect(&EtcdArgs::plain([url.clone()]))
                    .await
                    .map_err(|e| e.to_string())?;
                let mut r = store
                    .get::<NodeSpec>(&node)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("no Node {node}"))?;
                if let Some(Value::Object(m)) = r.status.as_mut() {
                    m.remove("wireguardPublicKey");
                }
                store.update(&r).await.map_err(|e| e.to_string())
            };
            match attempt.await {
                Ok(_) => return,
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        panic!("removing {node}'s key: {last}");
    });
}

/// `wg show dump`: (own public key, listen port, fwmark, peers as key → (endpoint, allowed)).
type Dump = (String, String, String, BTreeMap<String, (String, String)>);

fn dump(work: &WorkDir, rel: &str) -> Dump {
    let text = work.read(rel);
    let mut lines = text.lines();
    let first: Vec<&str> = lines.next().unwrap_or("").split('\t').collect();
    assert_eq!(
        first.len(),
        4,
        "{rel}: not a `wg show dump`: {text}\n{}",
        work.diagnostics()
    );
    let peers = lines
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .filter(|f| f.len() == 8)
        .map(|f| (f[0].to_string(), (f[2].to_string(), f[3].to_string())))
        .collect();
    (first[1].into(), first[2].into(), first[3].into(), peers)
}

fn published(work: &WorkDir, rel: &str) -> Option<String> {
    let text = work.read(rel);
    let v: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{rel}: {e}: {text}\n{}", work.diagnostics()));
    v["status"]["wireguardPublicKey"]
        .as_str()
        .map(str::to_string)
}

fn check_pings(work: &WorkDir, phase: &str) {
    let text = work.read(&format!("{phase}/pings.txt"));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        6,
        "{phase}: pings.txt: {text}\n{}",
        work.diagnostics()
    );
    for l in lines {
        let f: Vec<&str> = l.split_whitespace().collect();
        let out = work.read(&format!("{phase}/ping-{}-{}.txt", f[0], f[1]));
        assert!(
            f[2] == "0" && out.contains("3 received"),
            "{phase}: pod on {} cannot ping the pod on {}:\n{out}\n{}",
            f[0],
            f[1],
            work.diagnostics()
        );
    }
}

/// The on phase: devices, keys, peers, table, rule.
fn check_on(work: &WorkDir, pods: &BTreeMap<String, (Ipv4Addr, String)>) {
    let diag = || work.diagnostics();
    let mut keys = BTreeMap::new();
    for (n, _, _) in NODES {
        let (own, port, mark, _) = dump(work, &format!("on/wg-{n}.txt"));
        let key = published(work, &format!("on/node-{n}.json"));
        assert_eq!(
            key.as_deref(),
            Some(own.as_str()),
            "{n}'s Node must publish its device's key\n{}",
            diag()
        );
        assert_eq!(
            (port.as_str(), mark.as_str()),
            ("51820", "0x100000"),
            "{n}: port and fwmark\n{}",
            diag()
        );
        keys.insert(n, own);
        let link = work.json_array(&format!("on/link-{n}.json"));
        assert_eq!(
            link[0]["mtu"],
            1440,
            "{n}: wg.margay MTU (uplink 1500 - 60): {}\n{}",
            link[0],
            diag()
        );
        let rules = work.json_array(&format!("on/rules-{n}.json"));
        // `ip -j rule` shows `not` as a key with a null value, the mark and mask apart.
        assert!(
            rules.iter().any(|r| r["priority"] == 99
                && r.get("not").is_some()
                && r["fwmark"] == "0x100000"
                && r["fwmask"] == "0x100000"
                && r["table"] == "1"),
            "{n}: no rule `99: not fwmark 0x100000/0x100000 lookup 1`: {rules:?}\n{}",
            diag()
        );
    }
    for (n, _, _) in NODES {
        let (_, _, _, peers) = dump(work, &format!("on/wg-{n}.txt"));
        let table = work.json_array(&format!("on/table-{n}.json"));
        for (m, addr, _) in NODES.iter().filter(|(m, _, _)| *m != n) {
            let (endpoint, allowed) = peers
                .get(&keys[m])
                .unwrap_or_else(|| panic!("{n} has no peer with {m}'s key: {peers:?}\n{}", diag()));
            assert_eq!(
                endpoint,
                &format!("{}:{PORT}", ip_of(addr)),
                "{n}'s peer {m}: endpoint\n{}",
                diag()
            );
            let block = &pods[*m].1;
            for want in [block.as_str(), &format!("{}/32", ip_of(addr))] {
                assert!(
                    allowed.split(',').any(|a| a == want),
                    "{n}'s peer {m}: allowed IPs {allowed} lack {want}\n{}",
                    diag()
                );
            }
            let dst = block.clone();
            assert!(
                table
                    .iter()
                    .any(|r| r["dst"] == dst.as_str() && r["dev"] == "wg.margay"),
                "{n}: table 1 has no route {dst} dev wg.margay: {table:?}\n{}",
                diag()
            );
        }
    }
    // The underlay saw WireGuard's UDP only: no pod address, no ICMP.
    let capture = work.read("capture.txt");
    let packets: Vec<&str> = capture.lines().filter(|l| l.contains(" IP ")).collect();
    assert!(
        packets.len() >= 36,
        "the capture holds {} packets, fewer than the pings' 36 at least:\n{capture}\n{}",
        packets.len(),
        diag()
    );
    for p in &packets {
        assert!(
            p.contains(&format!(".{PORT} > "))
                && p.contains(&format!(".{PORT}: UDP"))
                && !p.contains("10.244.")
                && !p.contains("ICMP"),
            "a packet on the underlay that is not WireGuard between nodes: {p}\n{}",
            diag()
        );
    }
}

fn check_rotated(work: &WorkDir) {
    let diag = || work.diagnostics();
    let keys = work.read("rotated-keys.txt");
    let (old, new) = keys
        .trim()
        .split_once(' ')
        .unwrap_or_else(|| panic!("rotated-keys.txt: {keys}\n{}", diag()));
    assert_ne!(old, new);
    let (own, _, _, _) = dump(work, "rotated/wg-n1.txt");
    assert_eq!(own, new, "n1's device must hold the new key\n{}", diag());
    for n in ["n2", "n3"] {
        let (_, _, _, peers) = dump(work, &format!("rotated/wg-{n}.txt"));
        assert!(
            peers.contains_key(new) && !peers.contains_key(old),
            "{n}'s peers after rotation: {peers:?}\n{}",
            diag()
        );
    }
}

fn check_off(work: &WorkDir) {
    for (n, _, _) in NODES {
        assert_eq!(
            published(work, &format!("off/node-{n}.json")),
            None,
            "{n}'s key must be cleared"
        );
        let rules = work.read(&format!("off/rules-{n}.json"));
        assert!(
            !rules.contains("\"table\":\"1\""),
            "{n}: the rule stayed: {rules}"
        );
        let link = work.read(&format!("off/link-{n}.json"));
        assert!(
            !link.contains("\"ifname\":\"wg.margay\""),
            "{n}: the device stayed: {link}"
        );
    }
}

#[test]
fn wireguard_encrypts_pod_traffic_between_nodes_in_a_vm() {
    if let Ok(node) = std::env::var("MARGAY_VM_NODE") {
        vm::wire_pod(node, BLOCK_LEN);
        return;
    }
    if let Ok(node) = std::env::var("MARGAY_VM_FORGET_KEY") {
        forget_key(node);
        return;
    }
    let repo = vm::repo_root();
    vm::prepare_vm(&repo);
    let work = WorkDir::new("wireguard-vm");
    write_inputs(&work);
    let took = vm::run_vm(&repo, "wireguard-scenario.sh", &work, VM_TIMEOUT);
    vm::assert_scenario_done(&work, took);
    let pods = vm::pods(&work, NODES.iter().map(|(n, _, _)| *n));
    for phase in ["on", "rotated", "off"] {
        check_pings(&work, phase);
    }
    check_on(&work, &pods);
    check_rotated(&work);
    check_off(&work);
}
