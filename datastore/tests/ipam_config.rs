//! The IPAM configuration acted on, against a real etcd: strictAffinity, maxBlocksPerHost and
//! autoAllocateBlocks.

use margay_datastore::Store;
use margay_datastore::ipam::{Ipam, IpamError, handle_for_container};
use margay_datastore::resources::{IpPool, IpPoolSpec, Node, NodeSpec, Resource, Spec};
use margay_datastore::testing::EtcdServer;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Pool `p` 10.30.0.0/28 in /30 blocks: four blocks of four.
async fn setup() -> (EtcdServer, Store, Ipam) {
    let etcd = EtcdServer::start();
    let store = etcd.store().await;
    let mut spec = IpPoolSpec {
        cidr: "10.30.0.0/28".into(),
        block_size: Some(30),
        ..IpPoolSpec::default()
    };
    spec.apply_defaults();
    let p: IpPool = Resource::new("p", spec);
    store.create(&p).await.unwrap();
    for n in ["n1", "n2"] {
        let node: Node = Resource::new(n, NodeSpec::default());
        store.create(&node).await.unwrap();
    }
    let ipam = Ipam::new(store.clone());
    (etcd, store, ipam)
}

async fn add(ipam: &Ipam, node: &str, c: &str) -> Result<IpAddr, IpamError> {
    Ok(ipam
        .auto_assign(&handle_for_container(c), node, &BTreeMap::new(), 1, 0, &[])
        .await?
        .v4[0])
}

fn affine_to(
    blocks: &[margay_datastore::Versioned<margay_datastore::ipam::Block>],
    ip: IpAddr,
) -> Option<String> {
    blocks
        .iter()
        .find(|b| b.value.cidr.contains(&ip))
        .and_then(|b| b.value.affinity.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_affinity_with_max_blocks_fails_a_full_node_naming_node_and_pool() {
    let (_etcd, _store, ipam) = setup().await;
    ipam.configure(|c| {
        c.strict_affinity = true;
        c.max_blocks_per_host = 1;
    })
    .await
    .unwrap();
    for i in 0..4 {
        add(&ipam, "n1", &format!("a{i}")).await.unwrap();
    }
    let e = add(&ipam, "n1", "a4").await.unwrap_err();
    assert!(matches!(e, IpamError::StrictAffinity { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("'n1'") && msg.contains("'p' (10.30.0.0/28)"),
        "{msg}"
    );
    assert!(msg.contains("maxBlocksPerHost is 1"), "{msg}");
    // Another node still gets its own block, and n1 never borrowed from it.
    let ip = add(&ipam, "n2", "b0").await.unwrap();
    let blocks = ipam.blocks().await.unwrap();
    assert_eq!(affine_to(&blocks, ip).as_deref(), Some("n2"));
    assert_eq!(blocks.len(), 2);
    assert!(ipam.check().await.unwrap().handles_without_endpoint.len() == 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_strict_affinity_a_node_at_max_blocks_borrows() {
    let (_etcd, _store, ipam) = setup().await;
    ipam.configure(|c| c.max_blocks_per_host = 1).await.unwrap();
    add(&ipam, "n2", "b0").await.unwrap();
    for i in 0..4 {
        add(&ipam, "n1", &format!("a{i}")).await.unwrap();
    }
    let ip = add(&ipam, "n1", "a4").await.unwrap();
    let blocks = ipam.blocks().await.unwrap();
    assert_eq!(
        affine_to(&blocks, ip).as_deref(),
        Some("n2"),
        "borrowed from n2"
    );
    assert_eq!(blocks.len(), 2, "no third block claimed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_affinity_never_borrows_when_every_block_is_claimed() {
    let (_etcd, _store, ipam) = setup().await;
    ipam.configure(|c| c.strict_affinity = true).await.unwrap();
    // n2 claims three blocks (one address each... and fills nothing), n1 one.
    for i in 0..9 {
        add(&ipam, "n2", &format!("b{i}")).await.unwrap();
    }
    for i in 0..4 {
        add(&ipam, "n1", &format!("a{i}")).await.unwrap();
    }
    let e = add(&ipam, "n1", "a4").await.unwrap_err();
    assert!(
        e.to_string()
            .contains("every block of the pools is claimed"),
        "{e}"
    );
    // Turned off, the same ADD borrows from n2's last block, which has room.
    ipam.configure(|c| c.strict_affinity = false).await.unwrap();
    let ip = add(&ipam, "n1", "a4").await.unwrap();
    assert_eq!(
        affine_to(&ipam.blocks().await.unwrap(), ip).as_deref(),
        Some("n2")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_auto_allocate_blocks_a_node_claims_none() {
    let (_etcd, _store, ipam) = setup().await;
    add(&ipam, "n2", "b0").await.unwrap();
    ipam.configure(|c| c.auto_allocate_blocks = false)
        .await
        .unwrap();
    let ip = add(&ipam, "n1", "a0").await.unwrap();
    assert_eq!(
        affine_to(&ipam.blocks().await.unwrap(), ip).as_deref(),
        Some("n2"),
        "borrowed: n1 may not claim"
    );
    ipam.configure(|c| c.strict_affinity = true).await.unwrap();
    let e = add(&ipam, "n1", "a1").await.unwrap_err();
    assert!(e.to_string().contains("autoAllocateBlocks is false"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_addresses_are_never_auto_assigned_not_even_by_borrowing() {
    let (_etcd, store, ipam) = setup().await;
    let r: margay_datastore::resources::IpReservation = Resource::new(
        "keep-out",
        margay_datastore::resources::IpReservationSpec {
            reserved_cidrs: vec!["10.30.0.0/30".into(), "10.30.0.5".into()],
        },
    );
    store.create(&r).await.unwrap();
    let reserved: Vec<ipnet::IpNet> = r.spec.nets();
    // n1 takes everything it can: 16 addresses less the 5 reserved.
    let mut got = Vec::new();
    loop {
        match add(&ipam, "n1", &format!("a{}", got.len())).await {
            Ok(ip) => got.push(ip),
            Err(IpamError::Exhausted { .. }) => break,
            Err(e) => panic!("{e}"),
        }
        assert!(got.len() <= 11, "{got:?}");
    }
    assert_eq!(got.len(), 11);
    assert!(
        got.iter()
            .all(|ip| !reserved.iter().any(|n| n.contains(ip))),
        "{got:?}"
    );
    // n2 may only borrow, and finds nothing but reserved addresses.
    let e = add(&ipam, "n2", "b0").await.unwrap_err();
    assert!(matches!(e, IpamError::Exhausted { .. }), "{e:?}");
    // Asked for by address, a reserved one is given (as Calico does).
    ipam.assign_ip(
        "10.30.0.5".parse().unwrap(),
        "fixed",
        "n2",
        &BTreeMap::new(),
    )
    .await
    .unwrap();
}

/// Three nodes, 24 ADDs at a time each (half naming pool `p`, half pool `q`), every ADD
/// through its own client (its own snapshot, as separate processes would have): claims for
/// different pools race each other on one node, and other nodes' claims make the snapshots
/// differ. Under maxBlocksPerHost 2 with strictAffinity no node ever holds a third block;
/// an ADD that does not fit fails naming strictAffinity; every address is distinct and from
/// its node's own block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_blocks_per_host_holds_under_concurrent_adds_for_two_pools() {
    let etcd = EtcdServer::start();
    let store = etcd.store().await;
    for (name, cidr) in [("p", "10.31.0.0/27"), ("q", "10.31.1.0/27")] {
        let mut spec = IpPoolSpec {
            cidr: cidr.into(),
            block_size: Some(29),
            ..IpPoolSpec::default()
        };
        spec.apply_defaults();
        let pool: IpPool = Resource::new(name, spec);
        store.create(&pool).await.unwrap();
    }
    let ipam = Ipam::new(store.clone());
    ipam.configure(|c| {
        c.strict_affinity = true;
        c.max_blocks_per_host = 2;
    })
    .await
    .unwrap();
    let nodes = ["m1", "m2", "m3"];
    for n in nodes {
        let node: Node = Resource::new(n, NodeSpec::default());
        store.create(&node).await.unwrap();
    }
    let mut tasks = Vec::new();
    for n in nodes {
        for i in 0..24 {
            let client = Ipam::new(etcd.store().await);
            let pool = if i % 2 == 0 { "p" } else { "q" };
            let c = format!("{n}-{i}");
            tasks.push(tokio::spawn(async move {
                let r = client
                    .auto_assign(
                        &handle_for_container(&c),
                        n,
                        &BTreeMap::new(),
                        1,
                        0,
                        &[pool.to_string()],
                    )
                    .await;
                (n, r.map(|a| a.v4[0]))
            }));
        }
    }
    let mut ips = std::collections::BTreeSet::new();
    let mut got = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            (n, Ok(ip)) => {
                assert!(ips.insert(ip), "{ip} assigned twice");
                got.push((n, ip));
            }
            (_, Err(IpamError::StrictAffinity { .. })) => {}
            (n, Err(e)) => panic!("{n}: {e}"),
        }
    }
    let blocks = ipam.blocks().await.unwrap();
    for n in nodes {
        let held = blocks
            .iter()
            .filter(|b| b.value.affinity.as_deref() == Some(n))
            .count();
        assert!(held <= 2, "{n} holds {held} blocks, maxBlocksPerHost 2");
    }
    for (n, ip) in &got {
        assert_eq!(
            affine_to(&blocks, *ip).as_deref(),
            Some(*n),
            "{ip} borrowed"
        );
    }
    let rep = ipam.check().await.unwrap();
    assert_eq!(rep.affinity_mismatches.len(), 0, "{rep:#?}");
    assert!(got.len() >= 24, "only {} ADDs succeeded", got.len());
}
