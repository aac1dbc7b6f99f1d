//! The leak collectors, node liveness and the collector's election against a real etcd, with
//! grace periods shortened through the IPAM configuration.

use margay_datastore::Store;
use margay_datastore::ipam::gc::ATTR_NODE;
use margay_datastore::ipam::{
    Allocation, ClusterCollector, Ipam, LocalCollector, NodeProbe, VXLAN_HANDLE_PREFIX,
    handle_for_container,
};
use margay_datastore::liveness::{self, COLLECTOR_ELECTION, Lease};
use margay_datastore::resources::{
    IpPool, IpPoolSpec, Node, NodeSpec, Resource, Spec, WorkloadEndpoint, WorkloadEndpointSpec,
};
use margay_datastore::testing::EtcdServer;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

async fn pool(store: &Store, cidr: &str, block: u8) {
    let mut spec = IpPoolSpec {
        cidr: cidr.into(),
        block_size: Some(block),
        ..IpPoolSpec::default()
    };
    spec.apply_defaults();
    let p: IpPool = Resource::new("p", spec);
    store.create(&p).await.unwrap();
}

async fn node(store: &Store, name: &str) {
    let n: Node = Resource::new(name, NodeSpec::default());
    store.create(&n).await.unwrap();
}

fn attrs(node: &str) -> BTreeMap<String, String> {
    [(ATTR_NODE.to_string(), node.to_string())].into()
}

/// A pod on `node`: address (with its node attribute) and WorkloadEndpoint.
async fn pod(store: &Store, ipam: &Ipam, node: &str, container: &str, endpoint: bool) -> IpAddr {
    let h = handle_for_container(container);
    let ip = ipam
        .auto_assign(&h, node, &attrs(node), 1, 0, &[])
        .await
        .unwrap()
        .v4[0];
    if endpoint {
        let mut w: WorkloadEndpoint = Resource::new(
            format!("{node}-k8s-{container}-eth0"),
            WorkloadEndpointSpec {
                node: node.into(),
                container_id: container.into(),
                interface_name: format!("cali{container}"),
                ip_networks: vec![format!("{ip}/32")],
                ..WorkloadEndpointSpec::default()
            },
        );
        w.metadata.namespace = Some("default".into());
        store.create(&w).await.unwrap();
    }
    ip
}

/// What the node's kernel would say: the containers whose veth exists.
struct Live(&'static [&'static str]);

impl NodeProbe for Live {
    fn allocation_live(&self, a: &Allocation) -> bool {
        self.0
            .iter()
            .any(|c| a.handle_id.ends_with(&format!(".{c}")))
    }
    fn endpoint_live(&self, e: &WorkloadEndpoint) -> bool {
        self.0.contains(&e.spec.container_id.as_str())
    }
}

async fn short_grace(ipam: &Ipam, secs: u64) {
    ipam.configure(|c| {
        c.leak_grace_period_secs = secs;
        c.node_grace_period_secs = secs;
        c.empty_block_grace_period_secs = secs;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodes_own_leak_goes_after_the_grace_period_and_nothing_else_does() {
    let etcd = EtcdServer::start();
    let store = etcd.store().await;
    let ipam = Ipam::new(store.clone());
    pool(&store, "10.20.0.0/24", 26).await;
    node(&store, "n1").await;
    node(&store, "n2").await;
    short_grace(&ipam, 60).await;
    let _running = pod(&store, &ipam, "n1", "running", true).await;
    let leaked = pod(&store, &ipam, "n1", "leaked", false).await;
    let _adding = pod(&store, &ipam, "n1", "adding", false).await;
    let _other = pod(&store, &ipam, "n2", "othernode", false).await;
    assert_eq!(
        ipam.check().await.unwrap().handles_without_endpoint.len(),
        3
    );

    let mut c = LocalCollector::new("n1");
    // "adding" has its veth (an ADD in progress): it is no leak.
    // "running" and "adding" (an ADD in progress) have their veths; "killed" had its pod
    // and netns removed without a DEL.
    let live = Live(&["running", "adding"]);
    let killed = pod(&store, &ipam, "n1", "killed", true).await;
    let t0 = SystemTime::now();
    assert!(c.pass(&ipam, &live, t0).await.unwrap().is_empty());
    assert_eq!(c.suspects(), 2);
    // felix restarts: its clocks, kept in etcd, go on from t0.
    drop(c);
    let mut c = LocalCollector::new("n1");
    assert!(
        c.pass(&ipam, &live, t0 + Duration::from_secs(59))
            .await
            .unwrap()
            .is_empty(),
        "nothing goes before the grace period"
    );
    let gone = c
        .pass(&ipam, &live, t0 + Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        gone,
        [
            (handle_for_container("killed"), vec![killed]),
            (handle_for_container("leaked"), vec![leaked]),
        ]
    );
    assert!(
        store
            .get_ns::<WorkloadEndpointSpec>(Some("default"), "n1-k8s-killed-eth0")
            .await
            .unwrap()
            .is_none(),
        "the gone pod's endpoint went with its addresses"
    );

    // The ADD finishes (its endpoint appears); n2's leak is n2's to collect.
    let mut w: WorkloadEndpoint = Resource::new(
        "n1-k8s-adding-eth0",
        WorkloadEndpointSpec {
            node: "n1".into(),
            container_id: "adding".into(),
            ..WorkloadEndpointSpec::default()
        },
    );
    w.metadata.namespace = Some("default".into());
    store.create(&w).await.unwrap();
    let r = ipam.check().await.unwrap();
    assert_eq!(
        r.handles_without_endpoint,
        [handle_for_container("othernode")]
    );
    let mut c2 = LocalCollector::new("n2");
    c2.pass(&ipam, &Live(&[]), t0).await.unwrap();
    let gone = c2
        .pass(&ipam, &Live(&[]), t0 + Duration::from_secs(61))
        .await
        .unwrap();
    assert_eq!(gone.len(), 1);
    let r = ipam.check().await.unwrap();
    assert!(r.is_clean(), "{r:#?}");
    assert_eq!(r.addresses_in_use, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_nodes_ipam_goes_at_once_and_a_live_nodes_borrowed_address_stays() {
    let etcd = EtcdServer::start();
    let store = etcd.store().await;
    let ipam = Ipam::new(store.clone());
    // Two /30 blocks: n2 claims the first, n1 the second; n1's third pod borrows from n2.
    pool(&store, "10.21.0.0/29", 30).await;
    node(&store, "n1").await;
    node(&store, "n2").await;
    short_grace(&ipam, 3600).await;
    let mut n2_ips = Vec::new();
    for i in 0..2 {
        n2_ips.push(pod(&store, &ipam, "n2", &format!("b{i}"), true).await);
    }
    let tunnel = format!("{VXLAN_HANDLE_PREFIX}n2");
    ipam.auto_assign(&tunnel, "n2", &attrs("n2"), 1, 0, &[])
        .await
        .unwrap();
    let mut n1_ips = Vec::new();
    for i in 0..5 {
        n1_ips.push(pod(&store, &ipam, "n1", &format!("a{i}"), true).await);
    }
    // n1 is alive (felix holds its lease). A collector sees both Nodes, then n2 is deleted
    // and a new collector (the old one died) takes over: it learns from the record its
    // predecessor kept in etcd that n2 had a Node, so n2 was deleted.
    let lease = Lease::grant(&store, Duration::from_secs(30)).await.unwrap();
    liveness::announce(&store, "n1", &lease).await.unwrap();
    let mut before = ClusterCollector::new();
    assert_eq!(
        before.pass(&ipam, SystemTime::now()).await.unwrap(),
        Default::default()
    );
    drop(before);
    store.delete::<NodeSpec>(None, "n2", None).await.unwrap();

    let mut c = ClusterCollector::new();
    let pass = c.pass(&ipam, SystemTime::now()).await.unwrap();
    assert!(pass.silent_nodes.is_empty() && pass.empty_blocks.is_empty());
    assert_eq!(pass.deleted_nodes.len(), 1);
    let (name, r) = &pass.deleted_nodes[0];
    assert_eq!(name, "n2");
    assert_eq!(r.endpoints.len(), 2);
    assert_eq!(r.handles.len(), 3, "two pods and the tunnel");
    assert_eq!(r.addresses.len(), 3);
    assert_eq!(r.blocks.len(), 1);
    let rep = ipam.check().await.unwrap();
    assert!(rep.is_clean(), "{rep:#?}");
    assert_eq!(
        rep.addresses_in_use, 5,
        "n1's five pods, one borrowed, stay"
    );
    let blocks = ipam.blocks().await.unwrap();
    for ip in &n1_ips {
        let b = blocks
            .iter()
            .find(|b| b.value.cidr.contains(ip))
            .expect("n1's address still allocated");
        assert!(
            b.value
                .ordinal(*ip)
                .is_some_and(|o| b.value.allocations.contains_key(&o))
        );
    }
    // The block n2 lent from keeps no affinity to the gone node.
    assert!(
        blocks
            .iter()
            .all(|b| b.value.affinity.as_deref() != Some("n2"))
    );
    // A second pass finds nothing more.
    let again = c.pass(&ipam, SystemTime::now()).await.unwrap();
    assert_eq!(again, Default::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_is_released_after_the_node_grace_period_and_not_before() {
    let etcd = EtcdServer::start();
    let store = etcd.store().await;
    let ipam = Ipam::new(store.clone());
    pool(&store, "10.22.0.0/24", 28).await;
    node(&store, "n1").await;
    node(&store, "sim").await;
    short_grace(&ipam, 120).await;
    pod(&store, &ipam, "n1", "p1", true).await;
    // A simulated node that never ran felix: never collected for silence.
    pod(&store, &ipam, "sim", "s1", true).await;
    let lease = Lease::grant(&store, Duration::from_secs(2)).await.unwrap();
    liveness::announce(&store, "n1", &lease).await.unwrap();
    let mut c = ClusterCollector::new();
    let t0 = SystemTime::now();
    assert_eq!(c.pass(&ipam, t0).await.unwrap(), Default::default());
    assert_eq!(
        liveness::live_nodes(&store).await.unwrap(),
        ["n1".to_string()].into()
    );

    // felix on n1 dies: its lease expires on its own (TTL 2 s, renewals stopped).
    drop(lease);
    let deadline = Instant::now() + Duration::from_secs(10);
    while liveness::live_nodes(&store).await.unwrap().contains("n1") {
        assert!(
            Instant::now() < deadline,
            "the liveness key outlived its lease"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(c.pass(&ipam, t0).await.unwrap(), Default::default());
    // The collector restarts (or another node's is elected): the clock goes on from t0.
    drop(c);
    let mut c = ClusterCollector::new();
    assert_eq!(
        c.pass(&ipam, t0 + Duration::from_secs(119)).await.unwrap(),
        Default::default(),
        "not before the node grace period"
    );
    let pass = c.pass(&ipam, t0 + Duration::from_secs(120)).await.unwrap();
    assert_eq!(pass.silent_nodes.len(), 1);
    assert_eq!(pass.silent_nodes[0].0, "n1");
    assert_eq!(pass.silent_nodes[0].1.addresses.len(), 1);
    let rep = ipam.check().await.unwrap();
    assert!(rep.is_clean(), "{rep:#?}");
    assert_eq!(rep.addresses_in_use, 1, "the simulated node's pod stays");
    assert!(liveness::seen_nodes(&store).await.unwrap().is_empty());
}

/// The race cb43c36 patched, made harmless: a node that is starting has IPAM records before
/// its lease and its Node exist. No collector saw its Node, so it is not taken for deleted; it
/// waits the node grace period, by which time its lease exists. A node whose Node no collector
/// ever saw and that never comes (deleted while no collector ran) goes after the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starting_node_is_never_taken_for_deleted() {
    let etcd = EtcdServer::start();
    let store = etcd.store().await;
    let ipam = Ipam::new(store.clone());
    pool(&store, "10.25.0.0/24", 28).await;
    short_grace(&ipam, 60).await;
    // "starting" and "vanished": IPAM records, no Node, no lease.
    let starting_ip = pod(&store, &ipam, "starting", "s1", false).await;
    pod(&store, &ipam, "vanished", "v1", false).await;
    let mut c = ClusterCollector::new();
    let t0 = SystemTime::now();
    assert_eq!(c.pass(&ipam, t0).await.unwrap(), Default::default());
    assert_eq!(
        c.pass(&ipam, t0 + Duration::from_secs(30)).await.unwrap(),
        Default::default()
    );
    // "starting" gets its lease and its Node.
    let lease = Lease::grant(&store, Duration::from_secs(30)).await.unwrap();
    liveness::announce(&store, "starting", &lease)
        .await
        .unwrap();
    node(&store, "starting").await;
    let pass = c.pass(&ipam, t0 + Duration::from_secs(60)).await.unwrap();
    assert!(pass.deleted_nodes.is_empty(), "{pass:?}");
    let gone: Vec<&str> = pass.silent_nodes.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(gone, ["vanished"]);
    let blocks = ipam.blocks().await.unwrap();
    let b = blocks
        .iter()
        .find(|b| b.value.cidr.contains(&starting_ip))
        .expect("the starting node's block stays");
    assert_eq!(b.value.affinity.as_deref(), Some("starting"));
    let rep = ipam.check().await.unwrap();
    assert_eq!(rep.addresses_in_use, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_block_goes_back_when_the_node_has_room_in_another() {
    let etcd = EtcdServer::start();
    let store = etcd.store().await;
    let ipam = Ipam::new(store.clone());
    pool(&store, "10.23.0.0/26", 29).await;
    node(&store, "n1").await;
    short_grace(&ipam, 30).await;
    // 12 pods: two blocks of 8; then 9 go, leaving block 2 empty... and block 1 with 3.
    let mut ips = Vec::new();
    for i in 0..12 {
        ips.push(pod(&store, &ipam, "n1", &format!("c{i}"), false).await);
    }
    assert_eq!(ipam.blocks().await.unwrap().len(), 2);
    for i in 3..12 {
        ipam.release_by_handle(&handle_for_container(&format!("c{i}")))
            .await
            .unwrap();
    }
    let mut c = ClusterCollector::new();
    let t0 = SystemTime::now();
    assert!(c.pass(&ipam, t0).await.unwrap().empty_blocks.is_empty());
    let pass = c.pass(&ipam, t0 + Duration::from_secs(30)).await.unwrap();
    assert_eq!(pass.empty_blocks.len(), 1);
    assert_eq!(pass.empty_blocks[0].1.to_string(), "10.23.0.8/29");
    assert_eq!(ipam.blocks().await.unwrap().len(), 1);
    assert_eq!(ipam.affinities().await.unwrap().len(), 1);
    // The last block stays even when empty.
    for i in 0..3 {
        ipam.release_by_handle(&handle_for_container(&format!("c{i}")))
            .await
            .unwrap();
    }
    c.pass(&ipam, t0 + Duration::from_secs(60)).await.unwrap();
    let pass = c.pass(&ipam, t0 + Duration::from_secs(120)).await.unwrap();
    assert!(pass.empty_blocks.is_empty());
    assert_eq!(ipam.blocks().await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_election_has_one_leader_and_the_next_takes_over_when_it_dies() {
    let etcd = EtcdServer::start();
    let a = etcd.store().await;
    let b = etcd.store().await;
    let la = Lease::grant(&a, Duration::from_secs(2)).await.unwrap();
    let lb = Lease::grant(&b, Duration::from_secs(2)).await.unwrap();
    liveness::campaign(&a, COLLECTOR_ELECTION, "node-a", &la)
        .await
        .unwrap();
    assert_eq!(
        liveness::leader(&a, COLLECTOR_ELECTION)
            .await
            .unwrap()
            .as_deref(),
        Some("node-a")
    );
    let b2 = b.clone();
    let waiting = tokio::spawn(async move {
        liveness::campaign(&b2, COLLECTOR_ELECTION, "node-b", &lb)
            .await
            .unwrap();
        (Instant::now(), lb)
    });
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(!waiting.is_finished(), "two leaders at once");
    // The leader dies: its renewals stop and its lease expires.
    let died = Instant::now();
    drop(la);
    let (elected, _lb) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("no new leader within 10 s")
        .unwrap();
    assert!(elected.duration_since(died) <= Duration::from_secs(4));
    assert_eq!(
        liveness::leader(&b, COLLECTOR_ELECTION)
            .await
            .unwrap()
            .as_deref(),
        Some("node-b")
    );
}
