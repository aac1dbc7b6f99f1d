//! The translation on small Calico datasets written as Calico's backend stores them.

use super::*;
use serde_json::json;

fn kv(key: &str, v: serde_json::Value) -> (String, Vec<u8>) {
    (key.to_string(), serde_json::to_vec(&v).unwrap())
}

const BLOCK: &str = "/calico/ipam/v2/assignment/ipv4/block/10.244.0.0-30";
const HANDLE_POD: &str = "/calico/ipam/v2/handle/k8s-pod-network.c0ffee";
const HANDLE_TUN: &str = "/calico/ipam/v2/handle/ipip-tunnel-addr-n1";
const AFFINITY: &str = "/calico/ipam/v2/host/n1/ipv4/block/10.244.0.0-30";
const WEP: &str =
    "/calico/resources/v3/projectcalico.org/workloadendpoints/default/n1-k8s-web-eth0";

/// One node, a pool, a /30 block with the node's tunnel address and one pod.
fn cluster() -> Vec<(String, Vec<u8>)> {
    vec![
        kv(
            "/calico/resources/v3/projectcalico.org/nodes/n1",
            json!({"kind":"Node","apiVersion":"projectcalico.org/v3",
                   "metadata":{"name":"n1","uid":"u1","creationTimestamp":"2026-01-01T00:00:00Z"},
                   "spec":{"bgp":{"ipv4Address":"192.0.2.1/24","ipv4IPIPTunnelAddr":"10.244.0.0"}}}),
        ),
        kv(
            "/calico/resources/v3/projectcalico.org/ippools/default-ipv4-ippool",
            json!({"kind":"IPPool","apiVersion":"projectcalico.org/v3",
                   "metadata":{"name":"default-ipv4-ippool","resourceVersion":"17"},
                   "spec":{"cidr":"10.244.0.0/16","blockSize":30,"ipipMode":"Always","natOutgoing":true}}),
        ),
        kv(
            "/calico/resources/v3/projectcalico.org/clusterinformations/default",
            json!({"kind":"ClusterInformation","apiVersion":"projectcalico.org/v3",
                   "metadata":{"name":"default"},"spec":{"datastoreReady":true}}),
        ),
        kv(
            WEP,
            json!({"kind":"WorkloadEndpoint","apiVersion":"projectcalico.org/v3",
                   "metadata":{"name":"n1-k8s-web-eth0","namespace":"default","labels":{"app":"web"}},
                   "spec":{"orchestrator":"k8s","node":"n1","containerID":"c0ffee","pod":"web",
                           "endpoint":"eth0","ipNetworks":["10.244.0.1/32"],
                           "profiles":["kns.default"],"interfaceName":"cali1234567890a"}}),
        ),
        kv(
            BLOCK,
            json!({"cidr":"10.244.0.0/30","affinity":"host:n1","allocations":[1,0,null,null],
                   "unallocated":[2,3],
                   "attributes":[{"handle_id":"k8s-pod-network.c0ffee",
                                  "secondary":{"namespace":"default","node":"n1","pod":"web","timestamp":"t"}},
                                 {"handle_id":"ipip-tunnel-addr-n1",
                                  "secondary":{"node":"n1","type":"ipipTunnelAddress"}}],
                   "sequenceNumber":2,"sequenceNumberForAllocation":{"0":0,"1":1},"deleted":false}),
        ),
        kv(
            HANDLE_POD,
            json!({"block":{"10.244.0.0/30":1},"deleted":false}),
        ),
        kv(
            HANDLE_TUN,
            json!({"block":{"10.244.0.0/30":1},"deleted":false}),
        ),
        kv(AFFINITY, json!({"state":"confirmed","deleted":false})),
        kv(
            "/calico/ipam/v2/config",
            json!({"strict_affinity":false,"auto_allocate_blocks":true}),
        ),
        kv(
            "/calico/felix/v2/no-region/host/n1/status",
            json!({"time":"x"}),
        ),
    ]
}

fn record<'a>(t: &'a Translation, kind: &str, name: &str) -> &'a Record {
    t.records
        .iter()
        .find(|r| r.kind == kind && r.name == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {:#?}", t.records))
}

#[test]
fn a_cluster_becomes_margays_records() {
    let t = translate(&cluster()).expect("clean data");
    let block = record(&t, "IPAMBlock", "10.244.0.0/30");
    assert_eq!(block.key, "/margay/ipam/v1/blocks/10.244.0.0-30");
    assert_eq!(block.source, BLOCK);
    let b: crate::ipam::Block = serde_json::from_slice(&block.value).unwrap();
    assert_eq!(b.affinity.as_deref(), Some("n1"));
    assert_eq!(b.allocations.len(), 2);
    assert_eq!(b.allocations[&0].handle_id, "ipip-tunnel-addr-n1");
    assert_eq!(b.allocations[&0].attrs["type"], "ipipTunnelAddress");
    assert_eq!(b.allocations[&1].handle_id, "k8s-pod-network.c0ffee");
    assert_eq!(b.allocations[&1].attrs["pod"], "web");

    let h: crate::ipam::Handle =
        serde_json::from_slice(&record(&t, "IPAMHandle", "k8s-pod-network.c0ffee").value).unwrap();
    assert_eq!(h.total(), 1);
    assert_eq!(
        record(&t, "BlockAffinity", "n1/10.244.0.0/30").key,
        "/margay/ipam/v1/affinities/n1/10.244.0.0-30"
    );

    let pool = record(&t, "IPPool", "default-ipv4-ippool");
    assert_eq!(pool.key, "/margay/resources/v1/ippools/default-ipv4-ippool");
    assert!(pool.json()["metadata"].get("resourceVersion").is_none());
    assert_eq!(pool.json()["spec"]["blockSize"], 30);

    let wep = record(&t, "WorkloadEndpoint", "default/n1-k8s-web-eth0");
    assert_eq!(
        wep.key,
        "/margay/resources/v1/workloadendpoints/default/n1-k8s-web-eth0"
    );
    // felix finds the handle `k8s-pod-network.c0ffee` through the network annotation.
    let w = crate::resources::AnyResource::from_value(wep.json()).unwrap();
    let AnyResourceWep(spec, ann) = wep_parts(&w);
    assert_eq!(
        crate::ipam::endpoint_handle(spec, ann).as_deref(),
        Some("k8s-pod-network.c0ffee")
    );
    assert_eq!(record(&t, "Node", "n1").json()["metadata"]["uid"], "u1");

    assert!(
        t.skipped
            .iter()
            .any(|s| s.key.ends_with("clusterinformations/default")
                && s.reason.contains("ClusterInformation"))
    );
    assert!(
        t.skipped
            .iter()
            .any(|s| s.key.starts_with("/calico/felix/"))
    );
    assert!(t.notes.is_empty(), "{:?}", t.notes);
    // Resources come before IPAM records; affinities last.
    assert_eq!(t.records.last().unwrap().kind, "BlockAffinity");
}

struct AnyResourceWep<'a>(
    &'a crate::resources::WorkloadEndpointSpec,
    &'a std::collections::BTreeMap<String, String>,
);

fn wep_parts(r: &crate::resources::AnyResource) -> AnyResourceWep<'_> {
    match r {
        crate::resources::AnyResource::WorkloadEndpoint(w) => {
            AnyResourceWep(&w.spec, &w.metadata.annotations)
        }
        _ => panic!("not an endpoint"),
    }
}

fn problems_of(kvs: &[(String, Vec<u8>)]) -> Vec<Problem> {
    translate(kvs).expect_err("bad data must be refused")
}

fn replace(kvs: &mut [(String, Vec<u8>)], key: &str, v: serde_json::Value) {
    kvs.iter_mut().find(|(k, _)| k == key).unwrap().1 = serde_json::to_vec(&v).unwrap();
}

#[test]
fn a_corrupt_block_is_reported_with_its_key() {
    let mut kvs = cluster();
    kvs.iter_mut().find(|(k, _)| k == BLOCK).unwrap().1 = b"{\"cidr\":".to_vec();
    let p = problems_of(&kvs);
    assert!(
        p.iter()
            .any(|p| p.key == BLOCK && p.message.contains("corrupt block")),
        "{p:?}"
    );

    let mut kvs = cluster();
    replace(
        &mut kvs,
        BLOCK,
        json!({"cidr":"10.244.0.0/30","affinity":"host:n1","allocations":[1,0,7,null],
               "attributes":[{"handle_id":"a"},{"handle_id":"b"}]}),
    );
    let p = problems_of(&kvs);
    assert!(
        p.iter()
            .any(|p| p.key == BLOCK && p.message.contains("attribute 7")),
        "{p:?}"
    );

    let mut kvs = cluster();
    replace(
        &mut kvs,
        BLOCK,
        json!({"cidr":"10.244.0.0/30","affinity":"host:n1","allocations":[null],"attributes":[]}),
    );
    let p = problems_of(&kvs);
    assert!(
        p.iter()
            .any(|p| p.key == BLOCK && p.message.contains("1 allocation slots")),
        "{p:?}"
    );
}

#[test]
fn an_unknown_kind_is_reported_with_its_key() {
    let mut kvs = cluster();
    let key = "/calico/resources/v3/projectcalico.org/frobnicators/x";
    kvs.push(kv(key, json!({"kind":"Frobnicator"})));
    let p = problems_of(&kvs);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].key, key);
    assert!(
        p[0].message
            .contains("unknown resource kind 'frobnicators'")
    );
}

#[test]
fn a_handle_pointing_nowhere_is_reported_with_its_key() {
    let mut kvs = cluster();
    replace(&mut kvs, HANDLE_POD, json!({"block":{"10.244.9.0/30":1}}));
    let p = problems_of(&kvs);
    assert!(
        p.iter()
            .any(|p| p.key == HANDLE_POD
                && p.message.contains("10.244.9.0/30, which does not exist")),
        "{p:?}"
    );
    // The block's address of that handle is then held by no handle either.
    assert!(
        p.iter()
            .any(|p| p.key == BLOCK && p.message.contains("10.244.0.1")),
        "{p:?}"
    );
}

#[test]
fn counts_and_affinities_are_cross_checked() {
    let mut kvs = cluster();
    replace(&mut kvs, HANDLE_TUN, json!({"block":{"10.244.0.0/30":2}}));
    let p = problems_of(&kvs);
    assert!(
        p.iter()
            .any(|p| p.key == HANDLE_TUN && p.message.contains("counts 2")),
        "{p:?}"
    );

    let mut kvs = cluster();
    let stray = "/calico/ipam/v2/host/n2/ipv4/block/10.244.0.0-30";
    kvs.push(kv(stray, json!({"state":"confirmed"})));
    let p = problems_of(&kvs);
    assert!(
        p.iter()
            .any(|p| p.key == stray && p.message.contains("held by n1")),
        "{p:?}"
    );

    // A pending claim is not an error: the block decides.
    let mut kvs = cluster();
    replace(&mut kvs, AFFINITY, json!({"state":"pending"}));
    let t = translate(&kvs).unwrap();
    assert!(t.skipped.iter().any(|s| s.key == AFFINITY));
    record(&t, "BlockAffinity", "n1/10.244.0.0/30");
}

#[test]
fn an_invalid_resource_is_reported_with_its_key() {
    let mut kvs = cluster();
    let key = "/calico/resources/v3/projectcalico.org/ippools/default-ipv4-ippool";
    replace(
        &mut kvs,
        key,
        json!({"kind":"IPPool","apiVersion":"projectcalico.org/v3",
               "metadata":{"name":"default-ipv4-ippool"},"spec":{"cidr":"10.244.0.0/16","ipipMod":"Always"}}),
    );
    let p = problems_of(&kvs);
    assert!(
        p.iter()
            .any(|p| p.key == key && p.message.contains("ipipMod")),
        "{p:?}"
    );
}

#[test]
fn ipam_settings_margay_does_not_follow_are_noted() {
    let mut kvs = cluster();
    replace(
        &mut kvs,
        "/calico/ipam/v2/config",
        json!({"strict_affinity":true,"maxBlocksPerHost":4}),
    );
    let t = translate(&kvs).unwrap();
    assert_eq!(t.notes.len(), 2, "{:?}", t.notes);
}

#[test]
fn plan_tells_create_same_update_and_conflict() {
    let t = translate(&cluster()).unwrap();
    let pool = record(&t, "IPPool", "default-ipv4-ippool").clone();
    let block = record(&t, "IPAMBlock", "10.244.0.0/30").clone();
    let mut existing = BTreeMap::new();
    existing.insert(pool.key.clone(), (pool.value.clone(), 5));
    existing.insert(
        block.key.clone(),
        (b"{\"cidr\":\"10.244.0.0/30\"}".to_vec(), 9),
    );

    let conflicts = plan(t.records.clone(), &existing, false).unwrap_err();
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0].key, block.key);
    assert!(conflicts[0].to_string().contains("--overwrite"));

    let steps = plan(t.records.clone(), &existing, true).unwrap();
    let action = |k: &str| steps.iter().find(|(r, _)| r.key == k).unwrap().1;
    assert_eq!(action(&pool.key), Action::Same);
    assert_eq!(action(&block.key), Action::Update { mod_revision: 9 });
    assert_eq!(
        steps.iter().filter(|(_, a)| *a == Action::Create).count(),
        t.records.len() - 2
    );
}

#[test]
fn an_ipv6_block_keeps_its_allocations() {
    let mut kvs = cluster();
    let key = "/calico/ipam/v2/assignment/ipv6/block/fd00:10:244::40-122";
    let mut allocations = vec![serde_json::Value::Null; 64];
    allocations[3] = json!(0);
    kvs.push(kv(
        key,
        json!({"cidr": "fd00:10:244::40/122", "affinity": "host:n1", "allocations": allocations,
               "attributes": [{"handle_id": "k8s-pod-network.c0ffee",
                               "secondary": {"pod": "web", "namespace": "default", "node": "n1"}}]}),
    ));
    replace(
        &mut kvs,
        HANDLE_POD,
        json!({"block": {"10.244.0.0/30": 1, "fd00:10:244::40/122": 1}}),
    );
    let t = translate(&kvs).expect("clean data");
    let rec = record(&t, "IPAMBlock", "fd00:10:244::40/122");
    assert_eq!(rec.key, "/margay/ipam/v1/blocks/fd00:10:244::40-122");
    let b: crate::ipam::Block = serde_json::from_slice(&rec.value).unwrap();
    assert_eq!(
        b.addr(3),
        "fd00:10:244::43".parse::<std::net::IpAddr>().unwrap()
    );
    assert_eq!(b.allocations[&3].handle_id, "k8s-pod-network.c0ffee");
    let h: crate::ipam::Handle =
        serde_json::from_slice(&record(&t, "IPAMHandle", "k8s-pod-network.c0ffee").value).unwrap();
    assert_eq!(h.total(), 2);
    record(&t, "BlockAffinity", "n1/fd00:10:244::40/122");
}
