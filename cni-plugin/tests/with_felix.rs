//! The binary against a test double of felix's gRPC service (no kernel): the requests it sends,
//! and felix's answers rendered as CNI results in each spec version.

mod common;

use common::felix_double::{FelixDouble, Recorded};
use common::{attachment_env, netconf, run_plugin};
use margay_proto::felix::v1 as pb;
use serde_json::json;

const NETNS: &str = "/var/run/netns/cni-test-1";

fn adds(felix: &FelixDouble) -> Vec<pb::AddEndpointRequest> {
    felix
        .requests()
        .into_iter()
        .filter_map(|r| match r {
            Recorded::Add(a) => Some(a),
            _ => None,
        })
        .collect()
}

#[test]
fn add_sends_attachment_pod_and_ipam_to_felix() {
    let felix = FelixDouble::start();
    let mut conf = netconf("1.0.0", felix.socket());
    conf["ipam"] =
        json!({"type": "margay-ipam", "ipv4_pools": ["10.244.0.0/16"], "assign_ipv6": "true"});
    conf["runtimeConfig"] = json!({"ips": ["10.244.0.40"]});
    conf["args"] = json!({"cni": {"labels": [{"key": "app", "value": "web"}]}});
    let r = run_plugin(&attachment_env("ADD", "ctr-1", NETNS), &conf.to_string());
    r.assert_ok();
    let sent = adds(&felix);
    assert_eq!(sent.len(), 1);
    let a = &sent[0];
    assert_eq!(
        a.attachment,
        Some(pb::Attachment {
            container_id: "ctr-1".into(),
            interface_name: "eth0".into()
        })
    );
    assert_eq!(a.netns, NETNS);
    assert_eq!(
        a.workload,
        Some(pb::Workload {
            namespace: "default".into(),
            name: "web-0".into(),
            labels: [("app".to_string(), "web".to_string())].into(),
        })
    );
    assert_eq!(a.network_name, "k8s-pod-network");
    assert_eq!(a.mtu, 1450);
    assert_eq!(a.node_name, "node1");
    assert_eq!(
        a.ipam,
        Some(pb::add_endpoint_request::Ipam::Margay(pb::MargayIpam {
            ipv4_pools: vec!["10.244.0.0/16".into()],
            ipv6_pools: vec![],
            requested_addresses: vec!["10.244.0.40".into()],
            assign_ipv4: true,
            assign_ipv6: true,
        }))
    );
    assert_eq!(r.json()["ips"][0]["address"], "10.244.0.40/32");
}

#[test]
fn add_result_in_each_spec_version() {
    let felix = FelixDouble::start();
    felix.state.lock().unwrap().dns = Some(pb::Dns {
        nameservers: vec!["10.96.0.10".into()],
        search: vec!["default.svc.cluster.local".into()],
        ..Default::default()
    });
    for (n, version) in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
        .into_iter()
        .enumerate()
    {
        let container = format!("ctr-{n}");
        let r = run_plugin(
            &attachment_env("ADD", &container, NETNS),
            &netconf(version, felix.socket()).to_string(),
        );
        r.assert_ok();
        let v = r.json();
        let address = format!("10.244.0.{}/32", n + 1);
        let mut ip = json!({"interface": 1, "address": address, "gateway": "169.254.1.1"});
        let mut host = json!({"name": "cali0123456789a", "mac": "ee:ee:ee:ee:ee:ee"});
        let mut pod = json!({"name": "eth0", "mac": "02:00:0a:f4:00:01", "sandbox": NETNS});
        if version.starts_with('0') {
            ip["version"] = json!("4");
        }
        if version == "1.1.0" {
            host["mtu"] = json!(1450);
            pod["mtu"] = json!(1450);
        }
        assert_eq!(
            v,
            json!({
                "cniVersion": version,
                "interfaces": [host, pod],
                "ips": [ip],
                "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}],
                "dns": {"nameservers": ["10.96.0.10"], "search": ["default.svc.cluster.local"]},
            }),
            "{version}"
        );
    }
}

#[test]
fn netconf_dns_is_used_when_felix_returns_none() {
    let felix = FelixDouble::start();
    let mut conf = netconf("1.0.0", felix.socket());
    conf["dns"] = json!({"nameservers": ["10.96.0.10"], "domain": "cluster.local"});
    let r = run_plugin(&attachment_env("ADD", "ctr-dns", NETNS), &conf.to_string());
    r.assert_ok();
    assert_eq!(
        r.json()["dns"],
        json!({"nameservers": ["10.96.0.10"], "domain": "cluster.local"})
    );
}

#[test]
fn chained_add_passes_prev_result_on_with_ours_appended() {
    let felix = FelixDouble::start();
    let mut conf = netconf("0.4.0", felix.socket());
    conf["prevResult"] = json!({
        "cniVersion": "0.4.0",
        "interfaces": [{"name": "lo", "sandbox": NETNS}],
        "ips": [{"version": "4", "interface": 0, "address": "127.0.0.1/8"}],
        "dns": {}
    });
    let r = run_plugin(
        &attachment_env("ADD", "ctr-chain", NETNS),
        &conf.to_string(),
    );
    r.assert_ok();
    let v = r.json();
    assert_eq!(v["interfaces"].as_array().unwrap().len(), 3);
    assert_eq!(v["interfaces"][0]["name"], "lo");
    assert_eq!(v["ips"][0]["address"], "127.0.0.1/8");
    assert_eq!(v["ips"][1]["interface"], 2);
    assert_eq!(v["ips"][1]["address"], "10.244.0.1/32");
}

#[test]
fn felix_errors_become_cni_codes_with_felix_message() {
    let felix = FelixDouble::start();
    let cases = [
        (
            tonic::Code::Unavailable,
            "etcd unreachable: connection refused",
            11,
        ),
        (
            tonic::Code::ResourceExhausted,
            "no free address in pool 10.244.0.0/16",
            101,
        ),
        (tonic::Code::AlreadyExists, "10.244.0.40 is in use", 102),
        (tonic::Code::Internal, "creating veth: File exists", 103),
        (
            tonic::Code::NotFound,
            "netns /var/run/netns/gone: no such file",
            3,
        ),
        (
            tonic::Code::FailedPrecondition,
            "node name node9 is not this node (node1)",
            100,
        ),
    ];
    for (grpc, message, cni) in cases {
        felix.state.lock().unwrap().fail_add = Some((grpc, message.to_string()));
        let r = run_plugin(
            &attachment_env("ADD", "ctr-fail", NETNS),
            &netconf("1.0.0", felix.socket()).to_string(),
        );
        assert_eq!(r.error_code(), cni, "{grpc:?}");
        assert!(r.msg().contains(message), "{r:?}");
    }
}

#[test]
fn del_of_unknown_container_succeeds_without_output() {
    let felix = FelixDouble::start();
    let mut env = attachment_env("DEL", "never-added", "");
    env.retain(|(k, _)| *k != "CNI_NETNS");
    let r = run_plugin(&env, &netconf("1.0.0", felix.socket()).to_string());
    r.assert_ok();
    assert_eq!(r.stdout, "");
    let dels: Vec<_> = felix
        .requests()
        .into_iter()
        .filter_map(|r| match r {
            Recorded::Delete(d) => Some(d),
            _ => None,
        })
        .collect();
    assert_eq!(dels.len(), 1);
    assert_eq!(
        dels[0].attachment.as_ref().unwrap().container_id,
        "never-added"
    );
    assert!(!dels[0].delegated_ipam);
}

#[test]
fn add_then_del_removes_the_endpoint_and_del_again_succeeds() {
    let felix = FelixDouble::start();
    let conf = netconf("0.3.1", felix.socket()).to_string();
    run_plugin(&attachment_env("ADD", "ctr-del", NETNS), &conf).assert_ok();
    assert_eq!(felix.state.lock().unwrap().endpoints.len(), 1);
    run_plugin(&attachment_env("DEL", "ctr-del", NETNS), &conf).assert_ok();
    assert!(felix.state.lock().unwrap().endpoints.is_empty());
    run_plugin(&attachment_env("DEL", "ctr-del", NETNS), &conf).assert_ok();
}

#[test]
fn check_passes_prev_result_and_reports_differences_as_code_104() {
    let felix = FelixDouble::start();
    let conf = netconf("1.0.0", felix.socket());
    let added = run_plugin(&attachment_env("ADD", "ctr-chk", NETNS), &conf.to_string());
    added.assert_ok();
    let mut check = conf.clone();
    check["prevResult"] = added.json();
    run_plugin(
        &attachment_env("CHECK", "ctr-chk", NETNS),
        &check.to_string(),
    )
    .assert_ok();
    let sent = felix
        .requests()
        .into_iter()
        .find_map(|r| match r {
            Recorded::Check(c) => Some(c),
            _ => None,
        })
        .unwrap();
    assert_eq!(sent.expected.unwrap().ips[0].address, "10.244.0.1/32");

    // The runtime remembers an address felix does not have.
    check["prevResult"]["ips"][0]["address"] = json!("10.244.0.99/32");
    let r = run_plugin(
        &attachment_env("CHECK", "ctr-chk", NETNS),
        &check.to_string(),
    );
    assert_eq!(r.error_code(), 104);
    assert!(
        r.json()["details"]
            .as_str()
            .unwrap()
            .contains("address 10.244.0.99/32"),
        "{r:?}"
    );

    // A container felix never saw.
    let r = run_plugin(
        &attachment_env("CHECK", "ctr-other", NETNS),
        &check.to_string(),
    );
    assert_eq!(r.error_code(), 3);
}

#[test]
fn gc_sends_valid_attachments_and_succeeds() {
    let felix = FelixDouble::start();
    let conf = netconf("1.1.0", felix.socket());
    run_plugin(&attachment_env("ADD", "keep", NETNS), &conf.to_string()).assert_ok();
    run_plugin(&attachment_env("ADD", "stale", NETNS), &conf.to_string()).assert_ok();
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}]);
    let r = run_plugin(
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/usr/lib/cni")],
        &gc.to_string(),
    );
    r.assert_ok();
    assert_eq!(r.stdout, "");
    let sent = felix
        .requests()
        .into_iter()
        .find_map(|r| match r {
            Recorded::Gc(g) => Some(g),
            _ => None,
        })
        .unwrap();
    assert_eq!(sent.network_name, "k8s-pod-network");
    assert_eq!(
        sent.valid_attachments,
        [pb::Attachment {
            container_id: "keep".into(),
            interface_name: "eth0".into()
        }]
    );
    let left: Vec<_> = felix
        .state
        .lock()
        .unwrap()
        .endpoints
        .keys()
        .cloned()
        .collect();
    assert_eq!(left, [("keep".to_string(), "eth0".to_string())]);
}

#[test]
fn status_reports_felix_readiness() {
    let felix = FelixDouble::start();
    let conf = netconf("1.1.0", felix.socket()).to_string();
    let env = [("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/usr/lib/cni")];
    let r = run_plugin(&env, &conf);
    r.assert_ok();
    assert_eq!(r.stdout, "");

    felix.state.lock().unwrap().status = pb::StatusResponse {
        ready: false,
        felix_synced: true,
        etcd_reachable: false,
        reason: "etcd unreachable: deadline exceeded".into(),
    };
    let r = run_plugin(&env, &conf);
    assert_eq!(r.error_code(), 50);
    assert!(r.msg().contains("etcd unreachable"), "{r:?}");

    felix.state.lock().unwrap().status = pb::StatusResponse {
        ready: false,
        felix_synced: false,
        etcd_reachable: true,
        reason: "dataplane not synced yet".into(),
    };
    assert_eq!(run_plugin(&env, &conf).error_code(), 51);
}
