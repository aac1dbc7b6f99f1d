//! A Calico cluster's etcd keys as libcalico-go's etcdv3 backend writes them, from the
//! documented JSON of each kind: v3 resources under `/calico/resources/v3/projectcalico.org/`
//! (IPPool, BGPConfiguration, Node, WorkloadEndpoint), and IPAM under `/calico/ipam/v2/`
//! (`assignment/ipv4/block/<cidr>`, `handle/<id>`, `host/<node>/ipv4/block/<cidr>`).
//! Written into the lab's etcd through etcd's JSON gateway (`/v3/kv/txn`), so the lab needs no
//! etcd client of its own.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use serde_json::{Value, json};

const RES: &str = "/calico/resources/v3/projectcalico.org";

/// A pod as Calico's CNI plugin records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodKeys {
    pub namespace: String,
    pub name: String,
    pub container: String,
    pub ip: Ipv4Addr,
    /// The host side veth (`cali` + 11 hex of sha1("namespace.pod")).
    pub interface: String,
    /// Its IPv6 address, from the node's IPv6 block (dual stack).
    pub ip6: Option<Ipv6Addr>,
}

/// A node: its BGP address, its block, its VXLAN tunnel endpoint and pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeKeys {
    pub name: String,
    /// `spec.bgp.ipv4Address` (address and prefix length).
    pub ip: Ipv4Net,
    pub block: Ipv4Net,
    /// `ipv4VXLANTunnelAddr` (ordinal 0 of the block) and `vxlanTunnelMACAddr`.
    pub vtep: Option<(Ipv4Addr, String)>,
    pub pods: Vec<PodKeys>,
    /// `ipv4IPIPTunnelAddr` (tunl0's address, handle `ipip-tunnel-addr-<node>`).
    pub ipip_tunnel: Option<Ipv4Addr>,
    /// `spec.bgp.ipv6Address` and the node's IPv6 block (dual stack).
    pub v6: Option<(Ipv6Net, Ipv6Net)>,
}

/// The cluster: one pool, the default BGPConfiguration, the nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterKeys {
    pub pool: Ipv4Net,
    pub block_size: u8,
    pub as_num: u32,
    /// `vxlanMode: Always` (else `Never`).
    pub vxlan: bool,
    pub nodes: Vec<NodeKeys>,
    /// `ipipMode` (`Always`, `CrossSubnet`); `None` is `Never`.
    pub ipip: Option<super::ConfdIpip>,
    /// The IPv6 pool (`default-ipv6-ippool`, Never mode, blockSize 122), dual stack.
    pub pool6: Option<Ipv6Net>,
}

/// Calico's WorkloadEndpoint name: `<node>-k8s-<pod>-<endpoint>`, each `-` in the parts
/// doubled.
pub fn wep_name(node: &str, pod: &str) -> String {
    format!(
        "{}-k8s-{}-eth0",
        node.replace('-', "--"),
        pod.replace('-', "--")
    )
}

/// Calico's host side veth name for a pod.
pub fn cali_name(namespace: &str, pod: &str) -> String {
    let digest = sha1_smol::Sha1::from(format!("{namespace}.{pod}").as_bytes())
        .digest()
        .to_string();
    format!("cali{}", &digest[..11])
}

fn resource(kind: &str, ns: Option<&str>, name: &str, spec: Value) -> Value {
    let mut meta = json!({"name": name, "uid": format!("uid-{name}"),
                          "creationTimestamp": "2026-12-01T10:00:00Z"});
    if let Some(ns) = ns {
        meta["namespace"] = json!(ns);
    }
    json!({"kind": kind, "apiVersion": "projectcalico.org/v3", "metadata": meta, "spec": spec})
}

/// Every key of the cluster and its JSON.
pub fn cluster_keys(c: &ClusterKeys) -> Vec<(String, Value)> {
    let mode = |on: bool| if on { "Always" } else { "Never" };
    let ipip = match c.ipip {
        None => "Never",
        Some(super::ConfdIpip::Always) => "Always",
        Some(super::ConfdIpip::CrossSubnet) => "CrossSubnet",
    };
    let mut kvs = vec![
        (
            format!("{RES}/ippools/default-ipv4-ippool"),
            resource(
                "IPPool",
                None,
                "default-ipv4-ippool",
                json!({"cidr": c.pool.to_string(), "blockSize": c.block_size, "ipipMode": ipip,
                       "vxlanMode": mode(c.vxlan), "natOutgoing": true, "nodeSelector": "all()"}),
            ),
        ),
        (
            format!("{RES}/bgpconfigurations/default"),
            resource(
                "BGPConfiguration",
                None,
                "default",
                json!({"logSeverityScreen": "Info", "nodeToNodeMeshEnabled": true,
                       "asNumber": c.as_num}),
            ),
        ),
    ];
    if let Some(pool6) = c.pool6 {
        kvs.push((
            format!("{RES}/ippools/default-ipv6-ippool"),
            resource(
                "IPPool",
                None,
                "default-ipv6-ippool",
                json!({"cidr": pool6.to_string(), "blockSize": 122, "ipipMode": "Never",
                       "vxlanMode": "Never", "natOutgoing": false, "nodeSelector": "all()"}),
            ),
        ));
    }
    for n in &c.nodes {
        kvs.extend(node_keys(n, c.block_size));
        kvs.extend(node_keys6(n));
    }
    kvs
}

/// The IPv6 block of node `n` with its pods' addresses, and its affinity.
fn node_keys6(n: &NodeKeys) -> Vec<(String, Value)> {
    let Some((_, block)) = n.v6 else {
        return Vec::new();
    };
    let name = &n.name;
    let cidr = block.to_string();
    let key_cidr = cidr.replace('/', "-");
    let size = 1usize << (128 - u32::from(block.prefix_len()));
    let mut allocations = vec![Value::Null; size];
    let mut attributes = Vec::new();
    for p in &n.pods {
        let Some(ip6) = p.ip6 else { continue };
        let ordinal = (u128::from(ip6) - u128::from(block.network())) as usize;
        allocations[ordinal] = json!(attributes.len());
        attributes.push(
            json!({"handle_id": format!("k8s-pod-network.{}", p.container),
            "secondary": {"namespace": p.namespace, "node": name, "pod": p.name,
                          "timestamp": "2026-12-01 10:01:00"}}),
        );
    }
    let unallocated: Vec<usize> = (0..size).filter(|o| allocations[*o].is_null()).collect();
    vec![
        (
            format!("/calico/ipam/v2/assignment/ipv6/block/{key_cidr}"),
            json!({"cidr": cidr, "affinity": format!("host:{name}"),
                   "allocations": allocations, "unallocated": unallocated,
                   "attributes": attributes, "deleted": false}),
        ),
        (
            format!("/calico/ipam/v2/host/{name}/ipv6/block/{key_cidr}"),
            json!({"state": "confirmed", "deleted": false}),
        ),
    ]
}

fn node_keys(n: &NodeKeys, block_size: u8) -> Vec<(String, Value)> {
    let name = &n.name;
    let cidr = n.block.to_string();
    let key_cidr = cidr.replace('/', "-");
    let mut spec = json!({"bgp": {"ipv4Address": n.ip.to_string()},
                          "orchRefs": [{"nodeName": name, "orchestrator": "k8s"}]});
    if let Some((ip6, _)) = n.v6 {
        spec["bgp"]["ipv6Address"] = json!(ip6.to_string());
    }
    let size = 1usize << (32 - u32::from(block_size));
    let mut allocations = vec![Value::Null; size];
    let mut attributes = Vec::new();
    let mut kvs = Vec::new();
    let ordinal = |ip: Ipv4Addr| (u32::from(ip) - u32::from(n.block.network())) as usize;
    if let Some((addr, mac)) = &n.vtep {
        spec["ipv4VXLANTunnelAddr"] = json!(addr.to_string());
        spec["vxlanTunnelMACAddr"] = json!(mac);
        let handle = format!("vxlan-tunnel-addr-{name}");
        allocations[ordinal(*addr)] = json!(attributes.len());
        attributes.push(json!({"handle_id": handle,
            "secondary": {"node": name, "type": "vxlanTunnelAddress"}}));
        kvs.push((
            format!("/calico/ipam/v2/handle/{handle}"),
            json!({"block": {cidr.clone(): 1}, "deleted": false}),
        ));
    }
    if let Some(addr) = n.ipip_tunnel {
        spec["bgp"]["ipv4IPIPTunnelAddr"] = json!(addr.to_string());
        let handle = format!("ipip-tunnel-addr-{name}");
        allocations[ordinal(addr)] = json!(attributes.len());
        attributes.push(json!({"handle_id": handle,
            "secondary": {"node": name, "type": "ipipTunnelAddress"}}));
        kvs.push((
            format!("/calico/ipam/v2/handle/{handle}"),
            json!({"block": {cidr.clone(): 1}, "deleted": false}),
        ));
    }
    kvs.push((
        format!("{RES}/nodes/{name}"),
        resource("Node", None, name, spec),
    ));
    for p in &n.pods {
        let handle = format!("k8s-pod-network.{}", p.container);
        allocations[ordinal(p.ip)] = json!(attributes.len());
        attributes.push(json!({"handle_id": handle,
            "secondary": {"namespace": p.namespace, "node": name, "pod": p.name,
                          "timestamp": "2026-12-01 10:01:00"}}));
        let mut blocks = json!({cidr.clone(): 1});
        let mut networks = vec![format!("{}/32", p.ip)];
        if let (Some(ip6), Some((_, block6))) = (p.ip6, n.v6) {
            blocks[block6.to_string()] = json!(1);
            networks.push(format!("{ip6}/128"));
        }
        kvs.push((
            format!("/calico/ipam/v2/handle/{handle}"),
            json!({"block": blocks, "deleted": false}),
        ));
        let wep = wep_name(name, &p.name);
        kvs.push((
            format!("{RES}/workloadendpoints/{}/{wep}", p.namespace),
            resource(
                "WorkloadEndpoint",
                Some(&p.namespace),
                &wep,
                json!({"orchestrator": "k8s", "node": name, "containerID": p.container,
                       "pod": p.name, "endpoint": "eth0", "serviceAccountName": "default",
                       "ipNetworks": networks,
                       "profiles": [format!("kns.{}", p.namespace)],
                       "interfaceName": p.interface, "mac": "ee:ee:ee:ee:ee:ee"}),
            ),
        ));
    }
    let unallocated: Vec<usize> = (0..size).filter(|o| allocations[*o].is_null()).collect();
    kvs.push((
        format!("/calico/ipam/v2/assignment/ipv4/block/{key_cidr}"),
        json!({"cidr": cidr, "affinity": format!("host:{name}"),
               "allocations": allocations, "unallocated": unallocated,
               "attributes": attributes, "deleted": false}),
    ));
    kvs.push((
        format!("/calico/ipam/v2/host/{name}/ipv4/block/{key_cidr}"),
        json!({"state": "confirmed", "deleted": false}),
    ));
    kvs
}

/// Standard base64 (RFC 4648 §4, padded), as etcd's JSON gateway takes keys and values.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The body of one `/v3/kv/txn` that puts every key.
pub fn txn_body(kvs: &[(String, Value)]) -> String {
    let puts: Vec<Value> = kvs
        .iter()
        .map(|(k, v)| {
            json!({"requestPut": {"key": base64(k.as_bytes()),
                                  "value": base64(v.to_string().as_bytes())}})
        })
        .collect();
    json!({"success": puts}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), enc);
        }
    }

    #[test]
    fn names_are_calicos() {
        assert_eq!(wep_name("node-1", "web-0"), "node--1-k8s-web--0-eth0");
        // `echo -n default.web-0 | sha1sum` starts 0d7763386da219ddff1f.
        assert_eq!(cali_name("default", "web-0"), "cali0d7763386da");
    }

    #[test]
    fn a_node_holds_its_vtep_and_pods_in_its_block() {
        let c = ClusterKeys {
            pool: "10.102.0.0/16".parse().unwrap(),
            block_size: 26,
            as_num: 64512,
            vxlan: true,
            nodes: vec![NodeKeys {
                name: "c1".into(),
                ip: "10.99.0.2/24".parse().unwrap(),
                block: "10.102.0.64/26".parse().unwrap(),
                vtep: Some(("10.102.0.64".parse().unwrap(), "66:00:00:00:00:01".into())),
                pods: vec![PodKeys {
                    namespace: "default".into(),
                    name: "web-0".into(),
                    container: "abc".into(),
                    ip: "10.102.0.65".parse().unwrap(),
                    interface: cali_name("default", "web-0"),
                    ip6: Some("fd00:102::43".parse().unwrap()),
                }],
                ipip_tunnel: None,
                v6: Some((
                    "fd00:99::2/64".parse().unwrap(),
                    "fd00:102::40/122".parse().unwrap(),
                )),
            }],
            ipip: None,
            pool6: Some("fd00:102::/112".parse().unwrap()),
        };
        let kvs = cluster_keys(&c);
        let get = |k: &str| &kvs.iter().find(|(key, _)| key == k).unwrap().1;
        let block = get("/calico/ipam/v2/assignment/ipv4/block/10.102.0.64-26");
        assert_eq!(block["allocations"][0], 0);
        assert_eq!(block["allocations"][1], 1);
        assert_eq!(block["unallocated"].as_array().unwrap().len(), 62);
        assert_eq!(block["attributes"][1]["handle_id"], "k8s-pod-network.abc");
        let node = get("/calico/resources/v3/projectcalico.org/nodes/c1");
        assert_eq!(node["spec"]["ipv4VXLANTunnelAddr"], "10.102.0.64");
        assert_eq!(node["spec"]["bgp"]["ipv6Address"], "fd00:99::2/64");
        let block6 = get("/calico/ipam/v2/assignment/ipv6/block/fd00:102::40-122");
        assert_eq!(block6["allocations"][3], 0);
        assert_eq!(block6["attributes"][0]["handle_id"], "k8s-pod-network.abc");
        assert_eq!(
            get("/calico/ipam/v2/handle/k8s-pod-network.abc")["block"],
            json!({"10.102.0.64/26": 1, "fd00:102::40/122": 1})
        );
        let wep = get(
            "/calico/resources/v3/projectcalico.org/workloadendpoints/default/c1-k8s-web--0-eth0",
        );
        assert_eq!(
            wep["spec"]["ipNetworks"],
            json!(["10.102.0.65/32", "fd00:102::43/128"])
        );
        assert_eq!(
            get("/calico/resources/v3/projectcalico.org/ippools/default-ipv4-ippool")["spec"]["vxlanMode"],
            "Always"
        );
        assert!(
            txn_body(&kvs[..1]).starts_with("{\"success\":[{\"requestPut\":{\"key\":\"L2NhbGljby9")
        );
    }
}
