//! WireGuard between nodes over both families, end to end inside the small VM (tests/vm/; this
//! machine's kernel has no wireguard module, Debian's has). Cluster mode: etcd, margay-bgpd
//! and margay-felix on three dual-stack nodes in one subnet, a dual-stack pod behind each, an
//! IPv4 and an IPv6 pool without encapsulation. The scenario (tests/vm/wireguard-scenario.sh)
//! turns WireGuard on for both families with a FelixConfiguration (`wireguardEnabled`,
//! `wireguardEnabledV6`), captures the router's ports while the pods ping each other over
//! IPv4 and IPv6, removes both of n1's published keys (rotation), then turns WireGuard off;
//! this test checks what it recorded, per family (IPv4: `wg.margay`, port 51820, table 1,
//! `status.wireguardPublicKey`, MTU 1500 - 60; IPv6: `wg-v6.margay`, port 51821, table 2,
//! `status.wireguardPublicKeyV6`, MTU 1500 - 80):
//! - on: every node has the device with its MTU, its key in the Node, the two other nodes as
//!   peers (endpoint = their address of the family and the port, allowed IPs = their block
//!   and address of the family), their blocks in the family's table through the device, and
//!   the rule `not fwmark 0x100000 lookup <table>` at 99; the capture (no packet dropped)
//!   holds only UDP between the nodes' port 51820 (IPv4) or 51821 (IPv6), never a pod's
//!   address of either family;
//! - rotated: n1 published a new key of each family; the others peer with it and not with the
//!   old one; pods still reach each other over both families;
//! - off: devices, rules and tables gone, keys cleared, pods reach each other unencrypted.
//!
//! Run inside the VM with `MARGAY_VM_NODE` the test binary wires a dual-stack pod (IPAM and
//! the WorkloadEndpoint); with `MARGAY_VM_FORGET_KEY` it removes both of that Node's
//! published keys.

mod vm;

use std::collections::BTreeMap;
use std::time::Duration;

use margay_datastore::resources::NodeSpec;
use margay_datastore::{EtcdArgs, Store};
use serde_json::Value;
use vm::WorkDir;

/// The whole VM run (boot, etcd, daemons, three phases with pings over both families): a
/// ceiling, not a target; under TCG on a 2-core machine at load 10 to 12 it took 16 to 17 minutes.
const VM_TIMEOUT: Duration = Duration::from_secs(1800);
const TEST_NAME: &str = "wireguard_encrypts_pod_traffic_between_nodes_in_a_vm";
const POOL: &str = "10.244.0.0/16";
const BLOCK_LEN: u8 = 26;
const POOL6: &str = "fd00:244::/48";
/// Calico's default IPv6 block size.
const BLOCK_LEN6: u8 = 122;
const SUBNETS: [&str; 2] = ["10.10.1.1/24", "10.10.9.1/24"];
const ETCD_ADDR: &str = "10.10.9.2/24";
/// (name, address, IPv6 address, host side of its pod's veth); all on the first subnet's link.
const NODES: [(&str, &str, &str, &str); 3] = [
    ("n1", "10.10.1.2/24", "fd10:10:1::2/64", "cali00000000001"),
    ("n2", "10.10.1.3/24", "fd10:10:1::3/64", "cali00000000002"),
    ("n3", "10.10.1.4/24", "fd10:10:1::4/64", "cali00000000003"),
];

/// What differs between the two families' WireGuard.
struct Family {
    /// 4 or 6: the suffix of the scenario's per-family files (wg4-n1.txt, rules6-n1.json).
    n: u8,
    device: &'static str,
    port: u16,
    table: &'static str,
    /// The Node status field with the device's public key.
    key_field: &'static str,
    mtu: u64,
    /// The suffix of a pod's variables in pods.env and of the ping files ("" or "6").
    pod_suffix: &'static str,
    /// The length of a host prefix (a node's address among a peer's allowed IPs).
    host_len: u8,
    /// What every pod address of the family starts with, as tcpdump prints it.
    pool_prefix: &'static str,
}

const V4: Family = Family {
    n: 4,
    device: "wg.margay",
    port: 51820,
    table: "1",
    key_field: "wireguardPublicKey",
    mtu: 1500 - 60,
    pod_suffix: "",
    host_len: 32,
    pool_prefix: "10.244.",
};
const V6: Family = Family {
    n: 6,
    device: "wg-v6.margay",
    port: 51821,
    table: "2",
    key_field: "wireguardPublicKeyV6",
    mtu: 1500 - 80,
    pod_suffix: "6",
    host_len: 128,
    pool_prefix: "fd00:244:",
};

impl Family {
    /// A node's address of this family from its NODES entry, without the length.
    fn addr_of(&self, node: &(&str, &'static str, &'static str, &str)) -> &'static str {
        ip_of(if self.n == 6 { node.2 } else { node.1 })
    }

    /// A WireGuard endpoint as `wg show dump` prints it.
    fn endpoint(&self, addr: &str) -> String {
        if self.n == 6 {
            format!("[{addr}]:{}", self.port)
        } else {
            format!("{addr}:{}", self.port)
        }
    }
}

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
    for (n, addr, addr6, cali) in NODES {
        env += &format!(
            "{n}_ADDR={addr}\n{n}_ADDR6={addr6}\n{n}_SUBNET=0\n{n}_GW=10.10.1.1\n\
             {n}_CALI={cali}\n"
        );
    }
    work.write("topology.env", &env);
    let pool = |name: &str, cidr: &str, len: u8| {
        format!(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: {name}\n\
             spec:\n  cidr: {cidr}\n  blockSize: {len}\n  ipipMode: Never\n  \
             vxlanMode: Never\n  natOutgoing: false\n"
        )
    };
    work.write(
        "pool.yaml",
        &format!(
            "{}---\n{}",
            pool("pool1", POOL, BLOCK_LEN),
            pool("pool6", POOL6, BLOCK_LEN6)
        ),
    );
    for (file, on) in [("wg-on.yaml", true), ("wg-off.yaml", false)] {
        work.write(
            file,
            &format!(
                "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata:\n  \
                 name: default\nspec:\n  wireguardEnabled: {on}\n  wireguardEnabledV6: {on}\n"
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

/// Inside the VM: removes both of `node`'s published keys, as an operator rotating them
/// would. Retried: etcd in a TCG VM on a busy machine can miss a client's deadline.
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
                    m.remove(V4.key_field);
                    m.remove(V6.key_field);
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

fn published(work: &WorkDir, rel: &str, family: &Family) -> Option<String> {
    let text = work.read(rel);
    let v: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{rel}: {e}: {text}\n{}", work.diagnostics()));
    v["status"][family.key_field].as_str().map(str::to_string)
}

fn check_pings(work: &WorkDir, phase: &str, family: &Family) {
    let suffix = family.pod_suffix;
    let text = work.read(&format!("{phase}/pings{suffix}.txt"));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        6,
        "{phase}: pings{suffix}.txt: {text}\n{}",
        work.diagnostics()
    );
    for l in lines {
        let f: Vec<&str> = l.split_whitespace().collect();
        let out = work.read(&format!("{phase}/ping{suffix}-{}-{}.txt", f[0], f[1]));
        // `ping -c 3 -w 20` sends until three replies came: one more may be in flight.
        let received = out
            .split(", ")
            .find_map(|p| p.strip_suffix(" received"))
            .and_then(|n| n.parse::<u32>().ok());
        assert!(
            f[2] == "0" && received.is_some_and(|n| n >= 3),
            "{phase}: pod on {} cannot ping the pod on {} over IPv{}:\n{out}\n{}",
            f[0],
            f[1],
            family.n,
            work.diagnostics()
        );
    }
}

/// The on phase of one family: devices, keys, peers, table, rule; `blocks` the pods' blocks of
/// the family by node.
fn check_on(work: &WorkDir, family: &Family, blocks: &BTreeMap<String, String>) {
    let diag = || work.diagnostics();
    let (f, dev, table_id) = (family.n, family.device, family.table);
    let mut keys = BTreeMap::new();
    for (n, ..) in NODES {
        let (own, port, mark, _) = dump(work, &format!("on/wg{f}-{n}.txt"));
        let key = published(work, &format!("on/node-{n}.json"), family);
        assert_eq!(
            key.as_deref(),
            Some(own.as_str()),
            "{n}'s Node must publish {dev}'s key as {}\n{}",
            family.key_field,
            diag()
        );
        assert_eq!(
            (port.as_str(), mark.as_str()),
            (family.port.to_string().as_str(), "0x100000"),
            "{n}: {dev}'s port and fwmark\n{}",
            diag()
        );
        keys.insert(n, own);
        let link = work.json_array(&format!("on/link{f}-{n}.json"));
        assert_eq!(
            link[0]["mtu"],
            family.mtu,
            "{n}: {dev} MTU (uplink 1500 less the IPv{f} overhead): {}\n{}",
            link[0],
            diag()
        );
        let rules = work.json_array(&format!("on/rules{f}-{n}.json"));
        // `ip -j rule` shows `not` as a key with a null value, the mark and mask apart.
        assert!(
            rules.iter().any(|r| r["priority"] == 99
                && r.get("not").is_some()
                && r["fwmark"] == "0x100000"
                && r["fwmask"] == "0x100000"
                && r["table"] == table_id),
            "{n}: no IPv{f} rule `99: not fwmark 0x100000/0x100000 lookup {table_id}`: \
             {rules:?}\n{}",
            diag()
        );
    }
    for (n, ..) in NODES {
        let (_, _, _, peers) = dump(work, &format!("on/wg{f}-{n}.txt"));
        let table = work.json_array(&format!("on/table{f}-{n}.json"));
        for node in NODES.iter().filter(|node| node.0 != n) {
            let m = node.0;
            let addr = family.addr_of(node);
            let (endpoint, allowed) = peers.get(&keys[m]).unwrap_or_else(|| {
                panic!(
                    "{n}'s {dev} has no peer with {m}'s key: {peers:?}\n{}",
                    diag()
                )
            });
            assert_eq!(
                endpoint,
                &family.endpoint(addr),
                "{n}'s {dev} peer {m}: endpoint\n{}",
                diag()
            );
            let block = &blocks[m];
            for want in [block.as_str(), &format!("{addr}/{}", family.host_len)] {
                assert!(
                    allowed.split(',').any(|a| a == want),
                    "{n}'s {dev} peer {m}: allowed IPs {allowed} lack {want}\n{}",
                    diag()
                );
            }
            assert!(
                table
                    .iter()
                    .any(|r| r["dst"] == block.as_str() && r["dev"] == dev),
                "{n}: table {table_id} has no route {block} dev {dev}: {table:?}\n{}",
                diag()
            );
        }
    }
}

/// The capture of the on phase, whole: the underlay saw WireGuard's UDP only, each family
/// between its own port, never a pod address of either family, never ICMP.
fn check_capture(work: &WorkDir) {
    let diag = || work.diagnostics();
    let capture = work.read("capture.txt");
    // tcpdump's summary on stderr: a packet the kernel dropped could have been anything.
    let summary = work.read("capture.err");
    let dropped = summary
        .lines()
        .find_map(|l| l.strip_suffix(" packets dropped by kernel"))
        .and_then(|n| n.trim().parse::<u64>().ok());
    assert_eq!(
        dropped,
        Some(0),
        "the capture must be whole (tcpdump's summary: {summary})\n{}",
        diag()
    );
    for family in [&V4, &V6] {
        // tcpdump prints `IP` before an IPv4 packet and `IP6` before an IPv6 one.
        let tag = if family.n == 6 { " IP6 " } else { " IP " };
        let packets: Vec<&str> = capture.lines().filter(|l| l.contains(tag)).collect();
        assert!(
            packets.len() >= 36,
            "the capture holds {} IPv{} packets, fewer than the pings' 36 at least:\n\
             {capture}\n{}",
            packets.len(),
            family.n,
            diag()
        );
        for p in &packets {
            assert!(
                p.contains(&format!(".{} > ", family.port))
                    && p.contains(&format!(".{}: UDP", family.port))
                    && !p.contains(V4.pool_prefix)
                    && !p.contains(V6.pool_prefix)
                    && !p.contains("ICMP"),
                "a packet on the underlay that is not IPv{} WireGuard between nodes: {p}\n{}",
                family.n,
                diag()
            );
        }
    }
    let others: Vec<&str> = capture
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains(" IP ") && !l.contains(" IP6 "))
        .collect();
    assert!(
        others.is_empty(),
        "the capture holds lines that are neither IPv4 nor IPv6: {others:?}\n{}",
        diag()
    );
}

fn check_rotated(work: &WorkDir, family: &Family) {
    let diag = || work.diagnostics();
    let (f, dev) = (family.n, family.device);
    let keys = work.read(&format!("rotated-keys{f}.txt"));
    let (old, new) = keys
        .trim()
        .split_once(' ')
        .unwrap_or_else(|| panic!("rotated-keys{f}.txt: {keys}\n{}", diag()));
    assert_ne!(old, new);
    let (own, _, _, _) = dump(work, &format!("rotated/wg{f}-n1.txt"));
    assert_eq!(own, new, "n1's {dev} must hold the new key\n{}", diag());
    for n in ["n2", "n3"] {
        let (_, _, _, peers) = dump(work, &format!("rotated/wg{f}-{n}.txt"));
        assert!(
            peers.contains_key(new) && !peers.contains_key(old),
            "{n}'s {dev} peers after rotation: {peers:?}\n{}",
            diag()
        );
    }
}

fn check_off(work: &WorkDir, family: &Family) {
    let (f, dev, table) = (family.n, family.device, family.table);
    for (n, ..) in NODES {
        assert_eq!(
            published(work, &format!("off/node-{n}.json"), family),
            None,
            "{n}'s {} must be cleared",
            family.key_field
        );
        let rules = work.read(&format!("off/rules{f}-{n}.json"));
        assert!(
            !rules.contains(&format!("\"table\":\"{table}\"")),
            "{n}: the IPv{f} rule stayed: {rules}"
        );
        let link = work.read(&format!("off/link{f}-{n}.json"));
        assert!(
            !link.contains(&format!("\"ifname\":\"{dev}\"")),
            "{n}: {dev} stayed: {link}"
        );
    }
}

#[test]
fn wireguard_encrypts_pod_traffic_between_nodes_in_a_vm() {
    if let Ok(node) = std::env::var("MARGAY_VM_NODE") {
        vm::wire_pod(node, BLOCK_LEN, Some(BLOCK_LEN6));
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
    let names = || NODES.iter().map(|node| node.0);
    let blocks4 = vm::pods(&work, names())
        .into_iter()
        .map(|(n, (_, block))| (n, block))
        .collect();
    let blocks6 = vm::pods_v6(&work, names())
        .into_iter()
        .map(|(n, (_, block))| (n, block))
        .collect();
    for family in [&V4, &V6] {
        for phase in ["on", "rotated", "off"] {
            check_pings(&work, phase, family);
        }
    }
    check_on(&work, &V4, &blocks4);
    check_on(&work, &V6, &blocks6);
    check_capture(&work);
    for family in [&V4, &V6] {
        check_rotated(&work, family);
        check_off(&work, family);
    }
}
