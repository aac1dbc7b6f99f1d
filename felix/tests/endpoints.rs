//! felix's endpoint service (`margay.felix.v1`) over its socket, with felix in cluster mode
//! (etcd and margay-bgpd in namespaces): a failed ADD leaves nothing behind, GC releases the
//! attachments the runtime no longer has, STATUS reports ready, an ADD while etcd is frozen
//! answers UNAVAILABLE within felix's etcd deadline and leaves nothing once etcd is back. The
//! CNI binary's own suite against this service is `cni-plugin/tests/with_real_felix.rs`.

use std::path::PathBuf;
use std::time::Duration;

use margay_lab::{
    Bgpd, ClusterArgs, Etcd, Lab, LabSwitch, Netns, Process, margay_binary, wait_for,
};
use margay_proto::felix::v1 as pb;
use serde_json::Value;

mod common;
use common::{cni_client as client, rt};

struct Node {
    _felix: Process,
    _bgpd: Bgpd,
    ns: Netns,
    socket: PathBuf,
    etcd: Etcd,
    _sw: LabSwitch,
}

impl Node {
    fn start(lab: &Lab) -> Node {
        let sw = lab.switch("sw").unwrap();
        let etcd = Etcd::on_switch(lab, &sw).unwrap();
        etcd.apply(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pool1}\n\
             spec: {cidr: 10.103.0.0/16, ipipMode: Never, vxlanMode: Never}\n",
        )
        .unwrap();
        let ns = lab.netns("n1").unwrap();
        let addr = sw.attach(&ns).unwrap();
        let bgpd = Bgpd::start_cluster(
            lab,
            &ns,
            "bgpd-n1",
            ClusterArgs::new("n1", &etcd.endpoint(), ipnet::IpNet::V4(addr.v4)),
        )
        .unwrap();
        let socket = lab.dir().join("felix.sock");
        let felix = Process::spawn(
            &ns,
            "felix-n1",
            margay_binary("margay-felix", "cargo build -p margay-felix").unwrap(),
            [
                "--node",
                "n1",
                "--etcd-endpoints",
                &etcd.endpoint(),
                "--bgpd-socket",
                lab.dir().join("bgpd-n1.sock").to_str().unwrap(),
                "--socket",
                socket.to_str().unwrap(),
                "--http-port",
                "0",
            ],
            lab.dir(),
        )
        .unwrap();
        common::wait_cni_ready(&socket, &felix);
        Node {
            _felix: felix,
            _bgpd: bgpd,
            ns,
            socket,
            etcd,
            _sw: sw,
        }
    }

    fn add(
        &self,
        container: &str,
        pod: &str,
        netns: &str,
        requested: &[&str],
    ) -> Result<pb::AddEndpointResponse, tonic::Status> {
        let req = pb::AddEndpointRequest {
            attachment: Some(pb::Attachment {
                container_id: container.into(),
                interface_name: "eth0".into(),
            }),
            netns: netns.into(),
            workload: Some(pb::Workload {
                namespace: "default".into(),
                name: pod.into(),
                // The pod's labels (CNI args.cni.labels); a reserved key is never copied.
                labels: [
                    ("app".to_string(), format!("app-{pod}")),
                    (
                        "projectcalico.org/namespace".to_string(),
                        "forged".to_string(),
                    ),
                ]
                .into(),
            }),
            network_name: "margay-pod-network".into(),
            mtu: 1400,
            node_name: "n1".into(),
            ipam: Some(pb::add_endpoint_request::Ipam::Margay(pb::MargayIpam {
                requested_addresses: requested.iter().map(|s| s.to_string()).collect(),
                assign_ipv4: true,
                ..Default::default()
            })),
        };
        rt().block_on(async { client(&self.socket).await.unwrap().add_endpoint(req).await })
            .map(tonic::Response::into_inner)
    }

    fn ipam_check(&self) -> Value {
        serde_json::from_str(&self.etcd.margayctl(&["ipam", "check", "--json"]).unwrap()).unwrap()
    }

    fn cali_links(&self) -> Vec<String> {
        let out = self.ns.ip(&["-j", "link", "show"]).unwrap();
        serde_json::from_str::<Vec<Value>>(&out)
            .unwrap()
            .iter()
            .filter_map(|l| l["ifname"].as_str().map(String::from))
            .filter(|n| n.starts_with("cali"))
            .collect()
    }
}

fn netns_path(ns: &Netns) -> String {
    format!("/var/run/netns/{}", ns.name())
}

#[test]
fn failed_add_leaves_no_veth_route_address_or_endpoint() {
    let lab = Lab::new("failed_add_leaves_no_veth_route_address_or_endpoint").unwrap();
    let node = Node::start(&lab);
    // A namespace that already has an eth0: the veth cannot be made after IPAM assigned.
    let busy = lab.netns("busy").unwrap();
    busy.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "x0"])
        .unwrap();
    let e = node
        .add("ctr-busy", "busy", &netns_path(&busy), &[])
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Internal, "{e:?}");
    assert!(node.cali_links().is_empty(), "{:?}", node.cali_links());
    let report = node.ipam_check();
    assert_eq!(report["addresses_in_use"], 0, "{report}");
    assert_eq!(report["handles"], 0, "{report}");
    let weps = node
        .etcd
        .margayctl(&["get", "workloadendpoints", "-o", "yaml"])
        .unwrap();
    assert!(!weps.contains("ctr-busy"), "{weps}");

    // A netns that does not exist: NOT_FOUND, nothing assigned.
    let e = node
        .add("ctr-gone", "gone", "/var/run/netns/mg-no-such-ns", &[])
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");

    // A requested address already in use: ALREADY_EXISTS, the first pod keeps it.
    let a = lab.netns("pa").unwrap();
    let first = node
        .add("ctr-a", "a", &netns_path(&a), &["10.103.0.7"])
        .unwrap();
    assert_eq!(first.result.unwrap().ips[0].address, "10.103.0.7/32");
    let b = lab.netns("pb").unwrap();
    let e = node
        .add("ctr-b", "b", &netns_path(&b), &["10.103.0.7"])
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e:?}");
    assert_eq!(
        node.cali_links().len(),
        1,
        "only pod a's veth: {:?}",
        node.cali_links()
    );
    let report = node.ipam_check();
    assert_eq!(report["addresses_in_use"], 1, "{report}");
    assert_eq!(report["handles"], 1, "{report}");
}

#[test]
fn gc_releases_attachments_not_in_the_valid_list() {
    let lab = Lab::new("gc_releases_attachments_not_in_the_valid_list").unwrap();
    let node = Node::start(&lab);
    let keep = lab.netns("keep").unwrap();
    let gone = lab.netns("gone").unwrap();
    node.add("ctr-keep", "keep", &netns_path(&keep), &[])
        .unwrap();
    let stale = node
        .add("ctr-gone", "gone", &netns_path(&gone), &[])
        .unwrap();
    let stale_ip = stale.result.unwrap().ips[0].address.clone();
    let req = pb::GarbageCollectRequest {
        network_name: "margay-pod-network".into(),
        valid_attachments: vec![pb::Attachment {
            container_id: "ctr-keep".into(),
            interface_name: "eth0".into(),
        }],
    };
    let answer = rt()
        .block_on(async {
            client(&node.socket)
                .await
                .unwrap()
                .garbage_collect(req)
                .await
        })
        .unwrap()
        .into_inner();
    assert_eq!(answer.released.len(), 1, "{answer:?}");
    assert_eq!(
        answer.released[0].attachment.as_ref().unwrap().container_id,
        "ctr-gone"
    );
    assert_eq!(
        answer.released[0].addresses,
        vec![stale_ip.trim_end_matches("/32").to_string()]
    );
    assert_eq!(node.cali_links().len(), 1, "{:?}", node.cali_links());
    assert!(gone.ip(&["link", "show", "dev", "eth0"]).is_err());
    assert!(keep.ip(&["link", "show", "dev", "eth0"]).is_ok());
    let report = node.ipam_check();
    assert_eq!(report["addresses_in_use"], 1, "{report}");
    assert_eq!(report["problems"], Value::Null);
    // The kept pod's WorkloadEndpoint carries its labels beside felix's own.
    let weps: Value = serde_json::from_str(
        &node
            .etcd
            .margayctl(&["get", "workloadendpoints", "-A", "-o", "json"])
            .unwrap(),
    )
    .unwrap();
    let items = weps["items"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| vec![weps.clone()]);
    let kept = items
        .iter()
        .find(|w| w["spec"]["containerID"] == "ctr-keep")
        .unwrap_or_else(|| panic!("no endpoint of ctr-keep: {weps}"));
    let labels = &kept["metadata"]["labels"];
    assert_eq!(labels["app"], "app-keep", "{kept}");
    assert_eq!(labels["projectcalico.org/namespace"], "default", "{kept}");
}

#[test]
fn add_while_etcd_is_frozen_answers_unavailable_within_its_deadline_and_leaves_nothing() {
    let lab = Lab::new("add_while_etcd_is_frozen_answers_unavailable").unwrap();
    let mut node = Node::start(&lab);
    let pod = lab.netns("frozen").unwrap();
    // Frozen, etcd keeps its connections and answers nothing: only felix's deadline ends the
    // ADD (its probe has not noticed yet).
    node.etcd.process().pause();
    let t = std::time::Instant::now();
    let e = node
        .add("ctr-frozen", "frozen", &netns_path(&pod), &[])
        .unwrap_err();
    let took = t.elapsed();
    node.etcd.process().resume();
    eprintln!(
        "ADD with etcd frozen answered {:?} after {took:?}",
        e.code()
    );
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    assert!(e.message().contains("etcd unreachable"), "{e:?}");
    // felix's deadline (4 s), not etcd's 10 s request timeout; generous for a loaded machine.
    assert!(took < Duration::from_secs(8), "{took:?}");

    // No DEL: whatever the ADD wrote is taken back by felix itself once etcd answers.
    wait_for(
        "the failed ADD leaves no address, handle, endpoint or veth",
        Duration::from_secs(30),
        &[],
        || {
            let report = node.ipam_check();
            let weps = node
                .etcd
                .margayctl(&["get", "workloadendpoints", "-o", "yaml"])
                .map_err(|e| e.to_string())?;
            if report["addresses_in_use"] != 0 || report["handles"] != 0 {
                return Err(format!("{report}"));
            }
            if weps.contains("ctr-frozen") {
                return Err(weps);
            }
            if !node.cali_links().is_empty() {
                return Err(format!("{:?}", node.cali_links()));
            }
            Ok(())
        },
    )
    .unwrap();
    // And the pod can be added now.
    let r = node
        .add("ctr-frozen", "frozen", &netns_path(&pod), &[])
        .unwrap();
    assert_eq!(r.result.unwrap().ips.len(), 1);

    // GC with etcd frozen is bounded the same way, and removes nothing.
    node.etcd.process().pause();
    let t = std::time::Instant::now();
    let gc = rt().block_on(async {
        client(&node.socket)
            .await
            .unwrap()
            .garbage_collect(pb::GarbageCollectRequest {
                network_name: "margay-pod-network".into(),
                valid_attachments: vec![],
            })
            .await
    });
    let took = t.elapsed();
    node.etcd.process().resume();
    let e = gc.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    assert!(took < Duration::from_secs(8), "GC took {took:?}");
    assert_eq!(node.cali_links().len(), 1, "the pod's veth stays");
}
