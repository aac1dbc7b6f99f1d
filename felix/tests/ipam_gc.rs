//! IPAM that needs no janitor, with real felix processes in namespaces, real etcd and real pod
//! namespaces (grace periods and intervals shortened): a pod whose namespace vanished without
//! a DEL is collected by its own felix; a node deleted with a pod on it is collected by the
//! elected collector, which has to be the other node's felix because the elected one was
//! killed with its node; `ipam check` is clean afterwards.

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
    name: String,
    felix: Process,
    bgpd: Bgpd,
    _ns: Netns,
    socket: PathBuf,
}

impl Node {
    fn start(lab: &Lab, sw: &LabSwitch, etcd: &Etcd, name: &str) -> Node {
        let ns = lab.netns(name).unwrap();
        let addr = sw.attach(&ns).unwrap();
        let bgpd = Bgpd::start_cluster(
            lab,
            &ns,
            &format!("bgpd-{name}"),
            ClusterArgs::new(name, &etcd.endpoint(), ipnet::IpNet::V4(addr.v4)),
        )
        .unwrap();
        let socket = lab.dir().join(format!("felix-{name}.sock"));
        let felix = Process::spawn(
            &ns,
            &format!("felix-{name}"),
            margay_binary("margay-felix", "cargo build -p margay-felix").unwrap(),
            [
                "--node",
                name,
                "--etcd-endpoints",
                &etcd.endpoint(),
                "--bgpd-socket",
                lab.dir()
                    .join(format!("bgpd-{name}.sock"))
                    .to_str()
                    .unwrap(),
                "--socket",
                socket.to_str().unwrap(),
                "--http-port",
                "0",
                "--ipam-gc-interval",
                "1",
                "--lease-ttl",
                "2",
            ],
            lab.dir(),
        )
        .unwrap();
        common::wait_cni_ready(&socket, &felix);
        Node {
            name: name.to_string(),
            felix,
            bgpd,
            _ns: ns,
            socket,
        }
    }

    fn add(&self, container: &str, pod: &Netns) -> String {
        let req = pb::AddEndpointRequest {
            attachment: Some(pb::Attachment {
                container_id: container.into(),
                interface_name: "eth0".into(),
            }),
            netns: format!("/var/run/netns/{}", pod.name()),
            workload: Some(pb::Workload {
                namespace: "default".into(),
                name: container.into(),
            }),
            network_name: "margay-pod-network".into(),
            mtu: 1400,
            node_name: self.name.clone(),
            ipam: Some(pb::add_endpoint_request::Ipam::Margay(pb::MargayIpam {
                assign_ipv4: true,
                ..Default::default()
            })),
        };
        let r = rt()
            .block_on(async { client(&self.socket).await.unwrap().add_endpoint(req).await })
            .unwrap()
            .into_inner();
        r.result.unwrap().ips[0].address.clone()
    }
}

fn check(etcd: &Etcd) -> Value {
    serde_json::from_str(&etcd.margayctl(&["ipam", "check", "--json"]).unwrap()).unwrap()
}

fn problems(r: &Value) -> usize {
    [
        "handles_without_endpoint",
        "endpoints_without_handle",
        "allocations_without_handle",
        "handle_mismatches",
        "affinities_to_missing_nodes",
        "affinity_mismatches",
    ]
    .iter()
    .map(|k| r[*k].as_array().map_or(0, Vec::len))
    .sum()
}

fn collection(etcd: &Etcd) -> Value {
    serde_json::from_str(
        &etcd
            .margayctl(&["ipam", "show", "--show-configuration", "--json"])
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn a_vanished_pod_and_a_deleted_node_are_collected_and_the_collector_survives_its_node() {
    let lab = Lab::new("ipam_gc_collects").unwrap();
    let sw = lab.switch("sw").unwrap();
    let etcd = Etcd::on_switch(&lab, &sw).unwrap();
    etcd.apply(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pool1}\n\
         spec: {cidr: 10.104.0.0/16, ipipMode: Never, vxlanMode: Never}\n",
    )
    .unwrap();
    etcd.margayctl(&[
        "ipam",
        "configure",
        "--leak-grace-period",
        "2s",
        "--node-grace-period",
        "60s",
    ])
    .unwrap();
    // n2 first: it campaigns first and is elected.
    let mut n2 = Node::start(&lab, &sw, &etcd, "n2");
    wait_for("n2 elected", Duration::from_secs(20), &[&n2.felix], || {
        let c = collection(&etcd);
        (c["collector"] == "n2").then_some(()).ok_or(c.to_string())
    })
    .unwrap();
    let n1 = Node::start(&lab, &sw, &etcd, "n1");

    // A pod on n1 whose runtime dies with it: its namespace goes, no DEL ever comes.
    let keep = lab.netns("pkeep").unwrap();
    let gone = lab.netns("pgone").unwrap();
    n1.add("ctr-keep", &keep);
    n1.add("ctr-gone", &gone);
    let on_n2 = lab.netns("pn2").unwrap();
    n2.add("ctr-n2", &on_n2);
    assert_eq!(check(&etcd)["addresses_in_use"], 3);
    drop(gone);
    let started = std::time::Instant::now();
    wait_for(
        "n1's felix collects the pod that vanished",
        Duration::from_secs(20),
        &[&n1.felix],
        || {
            let r = check(&etcd);
            (r["addresses_in_use"] == 2 && problems(&r) == 0)
                .then_some(())
                .ok_or(r.to_string())
        },
    )
    .unwrap();
    // Not before the leak grace period (2 s).
    assert!(started.elapsed() >= Duration::from_secs(2));
    let weps = etcd
        .margayctl(&["get", "workloadendpoints", "-o", "yaml"])
        .unwrap();
    assert!(
        !weps.contains("ctr-gone") && weps.contains("ctr-keep"),
        "{weps}"
    );

    // n2 dies with its pod, and the operator deletes its Node. The collector was n2: n1 must
    // take over (once n2's lease expires) and release n2's pod, tunnel-free blocks and all.
    n2.felix.kill();
    n2.bgpd.stop();
    etcd.margayctl(&["delete", "node", "n2"]).unwrap();
    wait_for("n1 elected", Duration::from_secs(20), &[&n1.felix], || {
        let c = collection(&etcd);
        (c["collector"] == "n1").then_some(()).ok_or(c.to_string())
    })
    .unwrap();
    wait_for(
        "the deleted node's IPAM released",
        Duration::from_secs(20),
        &[&n1.felix],
        || {
            let r = check(&etcd);
            (r["addresses_in_use"] == 1 && problems(&r) == 0)
                .then_some(())
                .ok_or(r.to_string())
        },
    )
    .unwrap();
    let weps = etcd
        .margayctl(&["get", "workloadendpoints", "-o", "yaml"])
        .unwrap();
    assert!(!weps.contains("ctr-n2"), "{weps}");
    let c = collection(&etcd);
    assert_eq!(c["liveNodes"], serde_json::json!(["n1"]), "{c}");
    let metrics_released = std::fs::read_to_string(lab.dir().join("felix-n1.stderr"))
        .unwrap_or_default()
        + &std::fs::read_to_string(lab.dir().join("felix-n1.stdout")).unwrap_or_default();
    assert!(
        metrics_released.contains("released the IPAM of a deleted node"),
        "n1's log says what it released"
    );
}
