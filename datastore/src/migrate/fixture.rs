//! A synthetic Calico cluster in the layout and JSON of libcalico-go's etcdv3 backend, for
//! the migration's tests and benchmark: v3 resources under
//! `/calico/resources/v3/projectcalico.org/`, IPAM blocks, handles, affinities and config
//! under `/calico/ipam/v2/`, and felix's status keys beside them.

use crate::store::Store;
use serde_json::{Value, json};
use std::net::Ipv4Addr;

const RES: &str = "/calico/resources/v3/projectcalico.org";

fn resource(kind: &str, ns: Option<&str>, name: &str, spec: Value) -> Value {
    let mut meta = json!({"name": name, "uid": format!("uid-{name}"),
                          "creationTimestamp": "2026-11-30T10:00:00Z"});
    if let Some(ns) = ns {
        meta["namespace"] = json!(ns);
    }
    json!({"kind": kind, "apiVersion": "projectcalico.org/v3", "metadata": meta, "spec": spec})
}

/// A pod as Calico's CNI plugin leaves it: its address in the node's block.
pub struct Pod {
    pub node: usize,
    pub ns: String,
    pub name: String,
    pub container: String,
    pub addr: Ipv4Addr,
}

/// A Calico cluster of `nodes` nodes with `pods` pods each: one IPIP pool
/// (10.244.0.0/16, blocks of /26), one block per node holding the node's tunnel address
/// (ordinal 0) and its pods, mesh BGP configuration, a global peer, a FelixConfiguration,
/// ClusterInformation and a namespace profile (kinds margay does not model), the IPAM
/// config and felix's status keys.
pub fn calico_cluster(nodes: usize, pods: usize) -> (Vec<(String, Value)>, Vec<Pod>) {
    assert!(pods < 63, "one /26 block per node");
    let mut kvs = vec![
        (
            format!("{RES}/ippools/default-ipv4-ippool"),
            resource(
                "IPPool",
                None,
                "default-ipv4-ippool",
                json!({"cidr": "10.244.0.0/16", "blockSize": 26, "ipipMode": "Always",
                       "vxlanMode": "Never", "natOutgoing": true, "nodeSelector": "all()"}),
            ),
        ),
        (
            format!("{RES}/bgpconfigurations/default"),
            resource(
                "BGPConfiguration",
                None,
                "default",
                json!({"logSeverityScreen": "Info", "nodeToNodeMeshEnabled": true, "asNumber": 64512}),
            ),
        ),
        (
            format!("{RES}/bgppeers/tor"),
            resource(
                "BGPPeer",
                None,
                "tor",
                json!({"peerIP": "192.0.2.254", "asNumber": 65000}),
            ),
        ),
        (
            format!("{RES}/felixconfigurations/default"),
            resource(
                "FelixConfiguration",
                None,
                "default",
                json!({"bpfLogLevel": "", "logSeverityScreen": "Info", "reportingInterval": "0s"}),
            ),
        ),
        (
            format!("{RES}/clusterinformations/default"),
            resource(
                "ClusterInformation",
                None,
                "default",
                json!({"calicoVersion": "v3.29.0", "clusterGUID": "g", "datastoreReady": true}),
            ),
        ),
        (
            format!("{RES}/profiles/kns.default"),
            resource(
                "Profile",
                None,
                "kns.default",
                json!({"ingress": [{"action": "Allow"}]}),
            ),
        ),
        (
            "/calico/ipam/v2/config".into(),
            json!({"strict_affinity": false, "auto_allocate_blocks": true}),
        ),
    ];
    let mut all_pods = Vec::new();
    for n in 0..nodes {
        let node = format!("node-{n}");
        let block = Ipv4Addr::new(10, 244, (n / 4) as u8, ((n % 4) * 64) as u8);
        let cidr = format!("{block}/26");
        let key_cidr = format!("{block}-26");
        let tunnel = block;
        kvs.push((
            format!("{RES}/nodes/{node}"),
            resource(
                "Node",
                None,
                &node,
                json!({"bgp": {"ipv4Address": format!("172.16.{}.{}/16", n / 250, n % 250 + 1),
                               "ipv4IPIPTunnelAddr": tunnel.to_string()},
                       "orchRefs": [{"nodeName": node, "orchestrator": "k8s"}]}),
            ),
        ));
        let mut allocations = vec![Value::Null; 64];
        let mut attributes = vec![json!({"handle_id": format!("ipip-tunnel-addr-{node}"),
            "secondary": {"node": node, "type": "ipipTunnelAddress", "timestamp": "2026-11-30 10:00:00"}})];
        allocations[0] = json!(0);
        kvs.push((
            format!("/calico/ipam/v2/handle/ipip-tunnel-addr-{node}"),
            json!({"block": {cidr.clone(): 1}, "deleted": false}),
        ));
        for p in 0..pods {
            let ordinal = p + 1;
            let addr = Ipv4Addr::from(u32::from(block) + ordinal as u32);
            let ns = if p % 2 == 0 { "default" } else { "shop" };
            let name = format!("web-{n}-{p}");
            let container = format!("{:064x}", n * 1000 + p + 1);
            allocations[ordinal] = json!(attributes.len());
            attributes.push(json!({"handle_id": format!("k8s-pod-network.{container}"),
                "secondary": {"namespace": ns, "node": node, "pod": name, "timestamp": "2026-11-30 10:01:00"}}));
            kvs.push((
                format!("/calico/ipam/v2/handle/k8s-pod-network.{container}"),
                json!({"block": {cidr.clone(): 1}, "deleted": false}),
            ));
            let wep = format!(
                "{}-k8s-{}-eth0",
                node.replace('-', "--"),
                name.replace('-', "--")
            );
            kvs.push((
                format!("{RES}/workloadendpoints/{ns}/{wep}"),
                resource(
                    "WorkloadEndpoint",
                    Some(ns),
                    &wep,
                    json!({"orchestrator": "k8s", "node": node, "containerID": container,
                           "pod": name, "endpoint": "eth0", "serviceAccountName": "default",
                           "ipNetworks": [format!("{addr}/32")],
                           "profiles": [format!("kns.{ns}"), format!("ksa.{ns}.default")],
                           "interfaceName": format!("cali{:011x}", n * 1000 + p),
                           "mac": "ee:ee:ee:ee:ee:ee"}),
                ),
            ));
            all_pods.push(Pod {
                node: n,
                ns: ns.into(),
                name,
                container,
                addr,
            });
        }
        let unallocated: Vec<usize> = (0..64).filter(|o| allocations[*o].is_null()).collect();
        kvs.push((
            format!("/calico/ipam/v2/assignment/ipv4/block/{key_cidr}"),
            json!({"cidr": cidr, "affinity": format!("host:{node}"),
                   "affinity_claim_time": "2026-11-30T10:00:00Z",
                   "allocations": allocations, "unallocated": unallocated,
                   "attributes": attributes, "sequenceNumber": pods + 1,
                   "sequenceNumberForAllocation": {"0": 0}, "deleted": false}),
        ));
        kvs.push((
            format!("/calico/ipam/v2/host/{node}/ipv4/block/{key_cidr}"),
            json!({"state": "confirmed", "deleted": false}),
        ));
        kvs.push((
            format!("/calico/felix/v2/no-region/host/{node}/status"),
            json!({"time": "2026-11-30T10:05:00Z", "uptime": 300}),
        ));
    }
    (kvs, all_pods)
}

/// Writes `kvs` into etcd as Calico's backend would have, 100 keys to a transaction.
pub async fn write_calico(store: &Store, kvs: &[(String, Value)]) {
    let mut kv = store.client().kv_client();
    for batch in kvs.chunks(100) {
        let ops: Vec<etcd_client::TxnOp> = batch
            .iter()
            .map(|(k, v)| etcd_client::TxnOp::put(k.as_str(), serde_json::to_vec(v).unwrap(), None))
            .collect();
        kv.txn(etcd_client::Txn::new().and_then(ops))
            .await
            .expect("writing Calico's keys");
    }
}
