//! IPAM against a real etcd: concurrent assignment, borrowing, release, leak checks.

use margay_datastore::ipam::records::{block_key, handle_key};
use margay_datastore::ipam::{
    ANN_IPAM, ANN_NETWORK, Block, Handle, Ipam, IpamError, MARGAY_IPAM, Want, handle_for_container,
};
use margay_datastore::resources::{
    AllowedUse, AssignmentMode, IpPool, IpPoolSpec, Node, NodeSpec, Resource, Spec,
    WorkloadEndpoint, WorkloadEndpointSpec,
};
use margay_datastore::testing::EtcdServer;
use margay_datastore::{Store, Versioned};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

async fn pool(store: &Store, name: &str, cidr: &str) {
    let mut spec = IpPoolSpec {
        cidr: cidr.into(),
        ..IpPoolSpec::default()
    };
    spec.apply_defaults();
    let p: IpPool = Resource::new(name, spec);
    store.create(&p).await.unwrap();
}

/// Pool `p` of /28 blocks.
async fn pool_of_28s(store: &Store, cidr: &str) {
    pool_with(store, "p", cidr, |s| s.block_size = Some(28)).await;
}

async fn node(store: &Store, name: &str) {
    let n: Node = Resource::new(name, NodeSpec::default());
    store.create(&n).await.unwrap();
}

fn no_attrs() -> BTreeMap<String, String> {
    BTreeMap::new()
}

async fn one_v4(ipam: &Ipam, handle: &str, node: &str) -> IpAddr {
    ipam.auto_assign(handle, node, &no_attrs(), 1, 0, &[])
        .await
        .unwrap()
        .v4[0]
}

fn block_of(blocks: &[Versioned<Block>], ip: IpAddr) -> &Block {
    &blocks
        .iter()
        .find(|b| b.value.cidr.contains(&ip))
        .expect("address in no block")
        .value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_concurrent_assignments_from_three_nodes_are_unique_and_consistent() {
    let etcd = EtcdServer::start();
    let store = etcd.store().await;
    pool(&store, "p", "10.10.0.0/22").await;
    let nodes = ["n0", "n1", "n2"];
    for n in nodes {
        node(&store, n).await;
    }
    // Two independent clients per node, each with its own connection: they race through
    // etcd's compare-and-swap only.
    let mut clients = Vec::new();
    for _ in 0..6 {
        clients.push(Arc::new(Ipam::new(etcd.store().await)));
    }
    let mut tasks = Vec::new();
    for i in 0..500usize {
        let ipam = clients[i % 6].clone();
        let node = nodes[i % 3];
        tasks.push(tokio::spawn(async move {
            let h = handle_for_container(&format!("c{i}"));
            let got = ipam.auto_assign(&h, node, &no_attrs(), 1, 0, &[]).await;
            (h, node, got)
        }));
    }
    let mut by_addr: BTreeMap<IpAddr, String> = BTreeMap::new();
    for t in tasks {
        let (h, _node, got) = t.await.unwrap();
        let got = got.unwrap_or_else(|e| panic!("{h}: {e}"));
        assert_eq!(got.v4.len(), 1);
        let prev = by_addr.insert(got.v4[0], h.clone());
        assert!(
            prev.is_none(),
            "{} handed out twice ({prev:?} and {h})",
            got.v4[0]
        );
    }
    assert_eq!(by_addr.len(), 500);

    // Every block record agrees with the handles, and with what the callers were told.
    let ipam = Ipam::new(store.clone());
    let blocks = ipam.blocks().await.unwrap();
    let handles = ipam.handles().await.unwrap();
    assert_eq!(handles.len(), 500);
    let total: usize = blocks.iter().map(|b| b.value.allocations.len()).sum();
    assert_eq!(total, 500);
    for (ip, h) in &by_addr {
        let b = block_of(&blocks, *ip);
        let ord = b.ordinal(*ip).unwrap();
        assert_eq!(&b.allocations[&ord].handle_id, h);
        let rec: &Handle = &handles
            .iter()
            .find(|x| &x.value.handle_id == h)
            .unwrap()
            .value;
        assert_eq!(rec.blocks.get(&b.cidr), Some(&1), "{h}");
        assert_eq!(rec.total(), 1);
    }
    for b in &blocks {
        assert!(nodes.contains(&b.value.affinity.as_deref().unwrap()));
    }
    let report = ipam.check().await.unwrap();
    assert!(report.handle_mismatches.is_empty(), "{report:?}");
    assert!(report.allocations_without_handle.is_empty(), "{report:?}");
    assert!(report.affinities_to_missing_nodes.is_empty(), "{report:?}");
    // 500 addresses need at least 8 blocks of 64; no node claims a block it does not use
    // up before claiming the next, so there are at most 8 + 3 partly used... allow slack
    // for the race between same-node clients, but never more blocks than the pool has.
    assert!(blocks.len() >= 8 && blocks.len() <= 16, "{}", blocks.len());
}

#[tokio::test]
async fn own_blocks_first_then_new_block_then_borrow_when_pool_is_full() {
    let etcd = EtcdServer::start();
    let store = etcd.store().await;
    pool(&store, "small", "10.20.0.0/25").await; // two /26 blocks
    for n in ["a", "b", "c"] {
        node(&store, n).await;
    }
    let ipam = Ipam::new(store.clone());
    let a1 = one_v4(&ipam, "ha1", "a").await;
    let a2 = one_v4(&ipam, "ha2", "a").await;
    let b1 = one_v4(&ipam, "hb1", "b").await;
    let blocks = ipam.blocks().await.unwrap();
    assert_eq!(blocks.len(), 2);
    let ba = block_of(&blocks, a1).cidr;
    assert!(ba.contains(&a2), "second address from the node's own block");
    assert!(!ba.contains(&b1), "b claimed the other block");
    assert_eq!(block_of(&blocks, b1).affinity.as_deref(), Some("b"));

    // No free block left: c borrows, and the lender keeps its block.
    let c1 = one_v4(&ipam, "hc1", "c").await;
    let blocks = ipam.blocks().await.unwrap();
    assert_eq!(blocks.len(), 2, "no block was created");
    let lender = block_of(&blocks, c1);
    assert!(matches!(lender.affinity.as_deref(), Some("a") | Some("b")));
    let affs = ipam.affinities().await.unwrap();
    assert!(
        affs.iter().all(|a| a.value.node != "c"),
        "c claimed nothing"
    );

    // Fill the pool: 128 addresses, 4 used. The 125th more fails.
    for i in 0..124 {
        one_v4(&ipam, &format!("fill{i}"), "a").await;
    }
    match ipam
        .auto_assign("one-too-many", "a", &no_attrs(), 1, 0, &[])
        .await
    {
        Err(IpamError::Exhausted { family: 4, .. }) => {}
        r => panic!("expected exhaustion, got {r:?}"),
    }
    assert!(
        store
            .get_raw(&handle_key("one-too-many"))
            .await
            .unwrap()
            .is_none(),
        "a failed assignment leaves no handle"
    );
}

#[tokio::test]
async fn release_by_handle_frees_exactly_that_handles_addresses() {
    let etcd = EtcdServer::start();
    let store = etcd.store().await;
    pool(&store, "p", "10.30.0.0/24").await;
    pool(&store, "p6", "fd00:30::/64").await;
    node(&store, "n").await;
    let ipam = Ipam::new(store.clone());
    let h1 = ipam
        .auto_assign("h1", "n", &no_attrs(), 2, 1, &[])
        .await
        .unwrap();
    assert_eq!((h1.v4.len(), h1.v6.len()), (2, 1));
    assert!(h1.v6[0].is_ipv6());
    let h2 = one_v4(&ipam, "h2", "n").await;

    let mut released = ipam.release_by_handle("h1").await.unwrap();
    released.sort();
    let mut expected: Vec<IpAddr> = h1.v4.iter().chain(&h1.v6).copied().collect();
    expected.sort();
    assert_eq!(released, expected);
    assert!(matches!(
        ipam.release_by_handle("h1").await,
        Err(IpamError::HandleNotFound(_))
    ));
    let blocks = ipam.blocks().await.unwrap();
    let in_use: Vec<IpAddr> = blocks
        .iter()
        .flat_map(|b| b.value.allocations.keys().map(|o| b.value.addr(*o)))
        .collect();
    assert_eq!(in_use, vec![h2], "only h2's address is left");

    // A fixed address, then release by address; the handle goes with its last address.
    let fixed: IpAddr = "10.30.0.200".parse().unwrap();
    ipam.assign_ip(fixed, "h3", "n", &no_attrs()).await.unwrap();
    assert!(matches!(
        ipam.assign_ip(fixed, "h4", "n", &no_attrs()).await,
        Err(IpamError::AlreadyAllocated { .. })
    ));
    let not = ipam.release_ips(&[fixed, h2]).await.unwrap();
    assert!(not.is_empty());
    assert_eq!(ipam.release_ips(&[fixed]).await.unwrap(), vec![fixed]);
    assert!(ipam.handles().await.unwrap().is_empty());
    assert!(ipam.check().await.unwrap().is_clean());
}

#[tokio::test]
async fn check_finds_each_leak_kind_and_release_repairs_it() {
    let etcd = EtcdServer::start();
    let store = etcd.store().await;
    pool(&store, "p", "10.40.0.0/24").await;
    node(&store, "n1").await;
    let ipam = Ipam::new(store.clone());

    // A healthy pod: endpoint and handle agree.
    let ok = handle_for_container("ok");
    let ok_ip = one_v4(&ipam, &ok, "n1").await;
    let wep = |container: &str, ip: IpAddr| -> WorkloadEndpoint {
        let mut w: WorkloadEndpoint = Resource::new(
            format!("n1-k8s-{container}-eth0"),
            WorkloadEndpointSpec {
                node: "n1".into(),
                container_id: container.into(),
                interface_name: "cali0".into(),
                ip_networks: vec![format!("{ip}/32")],
                ..WorkloadEndpointSpec::default()
            },
        );
        w.metadata.namespace = Some("default".into());
        w
    };
    store.create(&wep("ok", ok_ip)).await.unwrap();

    // 1. Handle without endpoint: the pod's endpoint was never written.
    let orphan = handle_for_container("orphan");
    one_v4(&ipam, &orphan, "n1").await;
    // 2. Endpoint without handle.
    store
        .create(&wep("lost", "10.40.0.250".parse().unwrap()))
        .await
        .unwrap();
    // 3. Allocation without handle: the handle record is gone.
    let nohandle = handle_for_container("nohandle");
    let nohandle_ip = one_v4(&ipam, &nohandle, "n1").await;
    store
        .delete_raw(&handle_key(&nohandle), None)
        .await
        .unwrap();
    // 4. A writer died between the handle write and the block write.
    let half = handle_for_container("half");
    let block = ipam.blocks().await.unwrap()[0].value.cidr;
    let rec = Handle {
        handle_id: half.clone(),
        blocks: [(block, 1)].into_iter().collect(),
    };
    store.create_json(&handle_key(&half), &rec).await.unwrap();
    // 5. A block claimed by a node that was deleted.
    let gone_ip = one_v4(&ipam, "ipip-tunnel-addr-gone", "gone").await;
    let gone_block = ipam
        .blocks()
        .await
        .unwrap()
        .into_iter()
        .find(|b| b.value.cidr.contains(&gone_ip))
        .unwrap()
        .value
        .cidr;

    let r = ipam.check().await.unwrap();
    let mut orphans = r.handles_without_endpoint.clone();
    orphans.sort();
    let mut want = vec![
        orphan.clone(),
        half.clone(),
        "ipip-tunnel-addr-gone".to_string(),
    ];
    want.sort();
    assert_eq!(orphans, want);
    assert_eq!(r.endpoints_without_handle.len(), 1);
    assert_eq!(
        r.endpoints_without_handle[0].endpoint,
        "default/n1-k8s-lost-eth0"
    );
    assert_eq!(
        r.allocations_without_handle,
        vec![(nohandle_ip, nohandle.clone())]
    );
    assert_eq!(r.handle_mismatches.len(), 1);
    assert_eq!(r.handle_mismatches[0].handle, half);
    assert_eq!(
        (
            r.handle_mismatches[0].handle_count,
            r.handle_mismatches[0].block_count
        ),
        (1, 0)
    );
    assert!(
        r.affinities_to_missing_nodes
            .contains(&("gone".to_string(), gone_block))
    );

    // Repair, each with its release.
    ipam.release_by_handle(&orphan).await.unwrap();
    ipam.release_by_handle(&half).await.unwrap();
    ipam.release_by_handle("ipip-tunnel-addr-gone")
        .await
        .unwrap();
    assert!(ipam.release_ips(&[nohandle_ip]).await.unwrap().is_empty());
    store
        .delete::<WorkloadEndpointSpec>(Some("default"), "n1-k8s-lost-eth0", None)
        .await
        .unwrap();
    assert_eq!(
        ipam.release_affinity("gone").await.unwrap(),
        vec![gone_block]
    );
    assert!(
        store
            .get_raw(&block_key(&gone_block))
            .await
            .unwrap()
            .is_none(),
        "empty block deleted"
    );

    let r = ipam.check().await.unwrap();
    assert!(r.is_clean(), "{r:?}");
    assert_eq!(r.addresses_in_use, 1, "the healthy pod keeps its address");
    assert_eq!(r.handles, 1);
}

#[tokio::test]
async fn claim_or_release_cut_short_is_reported_then_healed_by_the_node() {
    use margay_datastore::ipam::Affinity;
    use margay_datastore::ipam::records::affinity_key;
    let etcd = EtcdServer::start();
    let store = etcd.store().await;
    pool(&store, "p", "10.60.0.0/24").await;
    node(&store, "n1").await;
    let ipam = Ipam::new(store.clone());

    // A claim that died after creating the block, before the affinity record.
    let orphan_block: ipnet::IpNet = "10.60.0.128/26".parse().unwrap();
    store
        .create_json(
            &block_key(&orphan_block),
            &Block::new(orphan_block, Some("n1".into())),
        )
        .await
        .unwrap();
    // A release that died after deleting the block, before the affinity record.
    let stale: ipnet::IpNet = "10.60.0.64/26".parse().unwrap();
    let rec = Affinity {
        node: "n1".into(),
        cidr: stale,
    };
    store
        .create_json(&affinity_key("n1", &stale), &rec)
        .await
        .unwrap();

    let r = ipam.check().await.unwrap();
    let mut got = r.affinity_mismatches.clone();
    got.sort();
    assert_eq!(
        got,
        vec![("n1".to_string(), stale), ("n1".to_string(), orphan_block)]
    );

    // The node's next assignment adopts the orphan block (no new claim) and drops the record.
    let ip = one_v4(&ipam, "h", "n1").await;
    assert!(
        orphan_block.contains(&ip),
        "{ip} not from the adopted block"
    );
    assert_eq!(
        ipam.blocks().await.unwrap().len(),
        1,
        "no new block claimed"
    );
    assert!(ipam.check().await.unwrap().affinity_mismatches.is_empty());
}

/// felix names a container's handle `<network>.<containerID>` for whatever CNI network the pod
/// is on, and records the network on the endpoint; check must pair them for any network name,
/// and leave endpoints of a delegated IPAM plugin (no handle here) alone.
#[tokio::test]
async fn check_pairs_handles_and_endpoints_of_any_network_name() {
    let etcd = EtcdServer::start();
    let store = etcd.store().await;
    pool(&store, "p", "10.41.0.0/24").await;
    node(&store, "n1").await;
    let ipam = Ipam::new(store.clone());
    let wep =
        |container: &str, ip: IpAddr, network: Option<&str>, ipam_kind: &str| -> WorkloadEndpoint {
            let mut w: WorkloadEndpoint = Resource::new(
                format!("n1-k8s-{container}-eth0"),
                WorkloadEndpointSpec {
                    node: "n1".into(),
                    container_id: container.into(),
                    interface_name: "cali0".into(),
                    ip_networks: vec![format!("{ip}/32")],
                    ..WorkloadEndpointSpec::default()
                },
            );
            w.metadata.namespace = Some("default".into());
            if let Some(n) = network {
                w.metadata.annotations.insert(ANN_NETWORK.into(), n.into());
            }
            w.metadata
                .annotations
                .insert(ANN_IPAM.into(), ipam_kind.into());
            w
        };
    let ip = one_v4(&ipam, "k8s-pod-network.c1", "n1").await;
    store
        .create(&wep("c1", ip, Some("k8s-pod-network"), MARGAY_IPAM))
        .await
        .unwrap();
    // A pod whose address came from host-local: no handle in margay's IPAM, and none expected.
    store
        .create(&wep(
            "c2",
            "10.99.0.7".parse().unwrap(),
            Some("k8s-pod-network"),
            "host-local",
        ))
        .await
        .unwrap();
    let report = ipam.check().await.unwrap();
    assert!(report.is_clean(), "{report:#?}");

    // The endpoint goes, its handle stays: a leak, found under the network's own name.
    store
        .delete::<WorkloadEndpointSpec>(Some("default"), "n1-k8s-c1-eth0", None)
        .await
        .unwrap();
    let report = ipam.check().await.unwrap();
    assert_eq!(
        report.handles_without_endpoint,
        vec!["k8s-pod-network.c1".to_string()],
        "{report:#?}"
    );
    assert!(report.endpoints_without_handle.is_empty(), "{report:#?}");
}

async fn pool_with(store: &Store, name: &str, cidr: &str, shape: impl FnOnce(&mut IpPoolSpec)) {
    let mut spec = IpPoolSpec {
        cidr: cidr.into(),
        ..IpPoolSpec::default()
    };
    shape(&mut spec);
    spec.apply_defaults();
    let p: IpPool = Resource::new(name, spec);
    store.create(&p).await.unwrap();
}

fn in_net(ip: IpAddr, net: &str) -> bool {
    net.parse::<ipnet::IpNet>().unwrap().contains(&ip)
}

#[tokio::test]
async fn allowed_uses_keep_pods_out_of_tunnel_only_pools() {
    let etcd = EtcdServer::start();
    let store = etcd.store().await;
    pool_with(&store, "tunnels", "10.40.0.0/24", |s| {
        s.allowed_uses = vec![AllowedUse::Tunnel]
    })
    .await;
    node(&store, "n").await;
    let ipam = Ipam::new(store.clone());
    let got = ipam.auto_assign("h0", "n", &no_attrs(), 1, 0, &[]).await;
    assert!(
        matches!(got, Err(IpamError::NoPool { family: 4, .. })),
        "a Tunnel-only pool gives no pod address: {got:?}"
    );

    pool(&store, "pods", "10.41.0.0/24").await;
    for i in 0..5 {
        let a = one_v4(&ipam, &format!("h{i}"), "n").await;
        assert!(in_net(a, "10.41.0.0/24"), "{a} from the Workload pool");
    }
    let tunnel = ipam
        .auto_assign_for(
            Want {
                usage: AllowedUse::Tunnel,
                num_v4: 1,
                num_v6: 0,
            },
            "tun",
            "n",
            &no_attrs(),
            &["tunnels".to_string()],
        )
        .await
        .unwrap();
    assert!(in_net(tunnel.v4[0], "10.40.0.0/24"), "{:?}", tunnel.v4);
    let named = ipam
        .auto_assign("h9", "n", &no_attrs(), 1, 0, &["tunnels".to_string()])
        .await;
    assert!(
        matches!(named, Err(IpamError::PoolNotAllowed { ref pool, usage: AllowedUse::Workload }) if pool == "tunnels"),
        "{named:?}"
    );
}

#[tokio::test]
async fn manual_pools_serve_only_requests_that_name_them() {
    let etcd = EtcdServer::start();
    let store = etcd.store().await;
    pool_with(&store, "manual", "10.42.0.0/24", |s| {
        s.assignment_mode = Some(AssignmentMode::Manual)
    })
    .await;
    node(&store, "n").await;
    let ipam = Ipam::new(store.clone());
    let got = ipam.auto_assign("h0", "n", &no_attrs(), 1, 0, &[]).await;
    assert!(matches!(got, Err(IpamError::NoPool { .. })), "{got:?}");

    pool(&store, "auto", "10.43.0.0/24").await;
    for i in 0..3 {
        let a = one_v4(&ipam, &format!("a{i}"), "n").await;
        assert!(in_net(a, "10.43.0.0/24"), "{a} from the Automatic pool");
    }
    let named = ipam
        .auto_assign("m", "n", &no_attrs(), 1, 0, &["manual".to_string()])
        .await
        .unwrap();
    assert!(in_net(named.v4[0], "10.42.0.0/24"), "{:?}", named.v4);
}

#[tokio::test]
async fn node_selector_gives_each_node_its_own_pool() {
    let etcd = EtcdServer::start();
    let store = etcd.store().await;
    pool_with(&store, "rack-a", "10.44.0.0/24", |s| {
        s.node_selector = Some("rack == 'a'".into())
    })
    .await;
    pool_with(&store, "rack-b", "10.45.0.0/24", |s| {
        s.node_selector = Some("rack == 'b'".into())
    })
    .await;
    for (name, rack) in [("na", "a"), ("nb", "b"), ("nc", "c")] {
        let mut n: Node = Resource::new(name, NodeSpec::default());
        n.metadata.labels = BTreeMap::from([("rack".to_string(), rack.to_string())]);
        store.create(&n).await.unwrap();
    }
    let ipam = Ipam::new(store.clone());
    for i in 0..3 {
        let a = one_v4(&ipam, &format!("a{i}"), "na").await;
        assert!(in_net(a, "10.44.0.0/24"), "{a} for rack a");
        let b = one_v4(&ipam, &format!("b{i}"), "nb").await;
        assert!(in_net(b, "10.45.0.0/24"), "{b} for rack b");
    }
    let c = ipam.auto_assign("c", "nc", &no_attrs(), 1, 0, &[]).await;
    assert!(
        matches!(c, Err(IpamError::NoPool { ref node, .. }) if node == "nc"),
        "no pool selects rack c: {c:?}"
    );
}

/// felix's situation: one `Ipam` value (one connection) for the node, sixteen ADDs at a time,
/// with no lock in the process. Every address is handed out once and the records agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_at_a_time_through_one_client_on_one_node_are_unique_and_consistent() {
    let etcd = EtcdServer::start();
    let store = etcd.store().await;
    // /28 blocks: the bursts cross block boundaries, so claims race too.
    pool_of_28s(&store, "10.11.0.0/22").await;
    node(&store, "n1").await;
    let ipam = Arc::new(Ipam::new(store.clone()));
    let mut by_addr: BTreeMap<IpAddr, String> = BTreeMap::new();
    for round in 0..10 {
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let ipam = ipam.clone();
                tokio::spawn(async move {
                    let h = handle_for_container(&format!("r{round}c{i}"));
                    let got = ipam.auto_assign(&h, "n1", &no_attrs(), 1, 0, &[]).await;
                    (h, got)
                })
            })
            .collect();
        for t in tasks {
            let (h, got) = t.await.unwrap();
            let ip = got.unwrap_or_else(|e| panic!("{h}: {e}")).v4[0];
            if let Some(prev) = by_addr.insert(ip, h.clone()) {
                panic!("{ip} handed out twice ({prev} and {h})");
            }
        }
        // Half of each round's pods go again, so later rounds reuse freed ordinals.
        for i in (0..16).step_by(2) {
            let h = handle_for_container(&format!("r{round}c{i}"));
            let ips = ipam.release_by_handle(&h).await.unwrap();
            assert_eq!(ips.len(), 1);
            by_addr.remove(&ips[0]);
        }
    }
    assert_eq!(by_addr.len(), 80);
    let blocks = ipam.blocks().await.unwrap();
    let total: usize = blocks.iter().map(|b| b.value.allocations.len()).sum();
    assert_eq!(total, 80);
    for (ip, h) in &by_addr {
        let b = block_of(&blocks, *ip);
        assert_eq!(&b.allocations[&b.ordinal(*ip).unwrap()].handle_id, h);
    }
    let report = ipam.check().await.unwrap();
    assert!(report.handle_mismatches.is_empty(), "{report:?}");
    assert!(report.allocations_without_handle.is_empty(), "{report:?}");
    assert!(report.affinity_mismatches.is_empty(), "{report:?}");
    assert_eq!(report.handles, 80);
    // 80 addresses fit in 5 blocks of 16, and freed ordinals are reused first: a node never
    // holds more than one spare block from a race.
    assert!(blocks.len() <= 6, "{}", blocks.len());
    assert!(
        blocks
            .iter()
            .all(|b| b.value.affinity.as_deref() == Some("n1"))
    );
}

/// An assignment's first write takes its handle as new (no read of the handle first). A handle
/// that already has a record (a second call for the same pod, an earlier ADD's record not yet
/// released) loses that write, with every request batched beside it; the retry reads the
/// records, and each handle ends up counting every address it holds, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handle_with_a_record_already_is_counted_right_when_batched_with_new_ones() {
    let etcd = EtcdServer::start();
    let store = etcd.store().await;
    pool(&store, "p", "10.12.0.0/24").await;
    node(&store, "n1").await;
    let ipam = Arc::new(Ipam::new(store.clone()));
    let old: Vec<String> = (0..4)
        .map(|i| handle_for_container(&format!("old{i}")))
        .collect();
    for h in &old {
        one_v4(&ipam, h, "n1").await;
    }
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let ipam = ipam.clone();
            // Every third request is a second address for an old handle.
            let h = if i % 3 == 0 {
                old[i / 3].clone()
            } else {
                handle_for_container(&format!("new{i}"))
            };
            tokio::spawn(async move {
                let got = ipam.auto_assign(&h, "n1", &no_attrs(), 1, 0, &[]).await;
                (h, got)
            })
        })
        .collect();
    for t in tasks {
        let (h, got) = t.await.unwrap();
        got.unwrap_or_else(|e| panic!("{h}: {e}"));
    }
    let blocks = ipam.blocks().await.unwrap();
    let mut seen = std::collections::BTreeSet::new();
    let mut per_handle: BTreeMap<String, usize> = BTreeMap::new();
    for b in &blocks {
        for (ord, a) in &b.value.allocations {
            assert!(seen.insert(b.value.addr(*ord)), "address twice");
            *per_handle.entry(a.handle_id.clone()).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), 16);
    for h in &old {
        assert_eq!(per_handle[h], 2, "{h}");
        let rec = store
            .get_json::<Handle>(&handle_key(h))
            .await
            .unwrap()
            .expect("handle record");
        assert_eq!(rec.value.blocks.values().sum::<u32>(), 2, "{h}");
    }
    let report = ipam.check().await.unwrap();
    assert!(report.handle_mismatches.is_empty(), "{report:?}");
    assert!(report.allocations_without_handle.is_empty(), "{report:?}");
    assert_eq!(report.handles, 12);
}

/// The WorkloadEndpoint rides in the allocation's transaction (one etcd write per ADD): sixteen
/// at a time on one node, across block boundaries, each endpoint lands in the same revision
/// as its address, names exactly that address, and `check` pairs every handle with its
/// endpoint. A rider that cannot be written (an invalid endpoint) fails its own request only,
/// allocating nothing; a dual-stack request does not carry it (the caller writes it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_endpoint_rides_in_the_allocation_transaction_sixteen_at_a_time() {
    let etcd = EtcdServer::start();
    let store = etcd.store().await;
    pool_of_28s(&store, "10.13.0.0/24").await;
    node(&store, "n1").await;
    let ipam = Arc::new(Ipam::new(store.clone()));
    let endpoint = |container: String, valid: bool| -> margay_datastore::ipam::Rider {
        Arc::new(move |ip: IpAddr| {
            let mut w: WorkloadEndpoint = Resource::new(
                format!("n1-k8s-{container}-eth0"),
                WorkloadEndpointSpec {
                    node: "n1".into(),
                    container_id: container.clone(),
                    interface_name: "cali0".into(),
                    ip_networks: vec![format!("{ip}/32")],
                    ..WorkloadEndpointSpec::default()
                },
            );
            w.metadata.namespace = Some("default".into());
            if !valid {
                w.metadata.name = "Not A Valid Name!".into();
            }
            w.metadata
                .annotations
                .insert(ANN_NETWORK.into(), "k8s-pod-network".into());
            w.metadata
                .annotations
                .insert(ANN_IPAM.into(), MARGAY_IPAM.into());
            Store::resource_record(&w)
        })
    };
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let ipam = ipam.clone();
            let c = format!("c{i}");
            // One of them carries an endpoint that cannot be written.
            let rider = endpoint(c.clone(), i != 5);
            tokio::spawn(async move {
                let h = format!("k8s-pod-network.{c}");
                let got = ipam
                    .auto_assign_with(&h, "n1", &no_attrs(), 1, 0, &[], Some(rider))
                    .await;
                (c, h, got)
            })
        })
        .collect();
    let mut assigned = BTreeMap::new();
    for t in tasks {
        let (c, h, got) = t.await.unwrap();
        if c == "c5" {
            assert!(
                got.is_err(),
                "an invalid endpoint must fail its ADD: {got:?}"
            );
            continue;
        }
        let got = got.unwrap_or_else(|e| panic!("{h}: {e}"));
        assert!(got.rider_written);
        assert_eq!(got.v4.len(), 1);
        assert!(assigned.insert(got.v4[0], c).is_none(), "address twice");
    }
    assert_eq!(assigned.len(), 15);
    let blocks = ipam.blocks().await.unwrap();
    for (ip, c) in &assigned {
        let w = store
            .get_ns::<WorkloadEndpointSpec>(Some("default"), &format!("n1-k8s-{c}-eth0"))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no endpoint for {c}"));
        assert_eq!(w.spec.ip_networks, vec![format!("{ip}/32")]);
        // Written by the transaction that wrote the address's block.
        let block = blocks
            .iter()
            .find(|b| b.value.cidr.contains(ip))
            .expect("block");
        let rev: i64 = w
            .metadata
            .resource_version
            .as_deref()
            .unwrap()
            .parse()
            .unwrap();
        let hrec = store
            .get_json::<Handle>(&handle_key(&format!("k8s-pod-network.{c}")))
            .await
            .unwrap()
            .expect("handle");
        assert_eq!(
            rev, hrec.mod_revision,
            "{c}: endpoint and handle in one transaction"
        );
        assert!(rev <= block.mod_revision);
    }
    let total: usize = blocks.iter().map(|b| b.value.allocations.len()).sum();
    assert_eq!(total, 15, "the failed request holds no address");
    let report = ipam.check().await.unwrap();
    assert!(report.is_clean(), "{report:#?}");

    // Dual-stack: two addresses, so the endpoint is the caller's to write.
    let mut v6 = IpPoolSpec {
        cidr: "fd00:13::/120".into(),
        ..IpPoolSpec::default()
    };
    v6.apply_defaults();
    store.create(&Resource::new("p6", v6)).await.unwrap();
    let got = ipam
        .auto_assign_with(
            "k8s-pod-network.ds",
            "n1",
            &no_attrs(),
            1,
            1,
            &[],
            Some(endpoint("ds".into(), true)),
        )
        .await
        .unwrap();
    assert!(!got.rider_written);
    assert!(
        store
            .get_ns::<WorkloadEndpointSpec>(Some("default"), "n1-k8s-ds-eth0")
            .await
            .unwrap()
            .is_none()
    );
}
