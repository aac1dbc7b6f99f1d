//! The etcd backend against a real etcd: CRUD, compare-and-swap, watches through compaction
//! and restarts, TLS client certificates.

use margay_datastore::resources::{
    AsNumber, BgpPeer, BgpPeerSpec, Node, NodeBgpSpec, NodeSpec, Resource,
};
use margay_datastore::testing::EtcdServer;
use margay_datastore::{Store, StoreError, WatchEvent};
use std::time::Duration;

fn node(name: &str, ip: &str) -> Node {
    Resource::new(
        name,
        NodeSpec {
            bgp: Some(NodeBgpSpec {
                ipv4_address: Some(format!("{ip}/24")),
                ..NodeBgpSpec::default()
            }),
            ..NodeSpec::default()
        },
    )
}

async fn next<T>(w: &mut margay_datastore::Watch<T>) -> WatchEvent<T> {
    tokio::time::timeout(Duration::from_secs(20), w.next())
        .await
        .expect("no watch event within 20 s")
}

#[tokio::test]
async fn create_get_update_delete_with_compare_and_swap() {
    let etcd = EtcdServer::start();
    let store = etcd.store().await;

    let created = store.create(&node("n1", "10.0.0.1")).await.unwrap();
    let rev = created.revision().expect("create stamps the revision");
    assert!(matches!(
        store.create(&node("n1", "10.0.0.9")).await,
        Err(StoreError::AlreadyExists { .. })
    ));

    let got = store.get::<NodeSpec>("n1").await.unwrap().unwrap();
    assert_eq!(got.revision(), Some(rev));
    assert_eq!(got.spec, created.spec);

    // Two writers read the same revision; the second one's CAS fails.
    let mut a = got.clone();
    a.spec.bgp.as_mut().unwrap().as_number = Some(AsNumber(65001));
    let mut b = got.clone();
    b.spec.bgp.as_mut().unwrap().as_number = Some(AsNumber(65002));
    let a = store.update(&a).await.unwrap();
    assert!(a.revision().unwrap() > rev);
    let err = store.update(&b).await.unwrap_err();
    assert!(err.is_conflict(), "{err}");
    let now = store.get::<NodeSpec>("n1").await.unwrap().unwrap();
    assert_eq!(
        now.spec.bgp.unwrap().as_number,
        Some(AsNumber(65001)),
        "the losing write left no trace"
    );

    // Update of a missing resource without a revision is NotFound.
    assert!(matches!(
        store.update(&node("ghost", "10.0.0.2")).await,
        Err(StoreError::NotFound { .. })
    ));

    // Delete with a stale revision fails, with the current one succeeds.
    let err = store
        .delete::<NodeSpec>(None, "n1", Some(rev))
        .await
        .unwrap_err();
    assert!(err.is_conflict());
    store
        .delete::<NodeSpec>(None, "n1", a.revision())
        .await
        .unwrap();
    assert!(store.get::<NodeSpec>("n1").await.unwrap().is_none());
    assert!(matches!(
        store.delete::<NodeSpec>(None, "n1", None).await,
        Err(StoreError::NotFound { .. })
    ));
}

#[tokio::test]
async fn invalid_resources_are_not_written() {
    let etcd = EtcdServer::start();
    let store = etcd.store().await;
    let peer: BgpPeer = Resource::new(
        "tor1",
        BgpPeerSpec {
            peer_ip: Some("10.0.0.300".into()),
            as_number: Some(AsNumber(65001)),
            ..BgpPeerSpec::default()
        },
    );
    let err = store.create(&peer).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "BGPPeer 'tor1': spec.peerIP: '10.0.0.300' is not an IP address"
    );
    assert!(store.list::<BgpPeerSpec>().await.unwrap().0.is_empty());
}

#[tokio::test]
async fn watch_sees_create_update_and_delete_in_order() {
    let etcd = EtcdServer::start();
    let store = etcd.store().await;
    store.create(&node("before", "10.0.0.1")).await.unwrap();
    let (nodes, rev) = store.list::<NodeSpec>().await.unwrap();
    assert_eq!(nodes.len(), 1);
    let mut w = store.watch::<NodeSpec>(rev + 1);

    let c = store.create(&node("n2", "10.0.0.2")).await.unwrap();
    let mut changed = c.clone();
    changed
        .spec
        .bgp
        .as_mut()
        .unwrap()
        .route_reflector_cluster_id = Some("1.1.1.1".into());
    let u = store.update(&changed).await.unwrap();
    store.delete::<NodeSpec>(None, "n2", None).await.unwrap();

    match next(&mut w).await {
        WatchEvent::Put(n) => {
            assert_eq!(n.name(), "n2");
            assert_eq!(n.revision(), c.revision());
        }
        e => panic!("expected the create, got {e:?}"),
    }
    match next(&mut w).await {
        WatchEvent::Put(n) => {
            assert_eq!(n.revision(), u.revision());
            assert_eq!(
                n.spec.bgp.unwrap().route_reflector_cluster_id.as_deref(),
                Some("1.1.1.1")
            );
        }
        e => panic!("expected the update, got {e:?}"),
    }
    match next(&mut w).await {
        WatchEvent::Delete { name, revision, .. } => {
            assert_eq!(name, "n2");
            assert!(revision > u.revision().unwrap());
        }
        e => panic!("expected the delete, got {e:?}"),
    }
}

/// Creates n1..n3 through `store`, deletes n1, compacts etcd (through `direct`), then checks
/// that a watch through `store` from before the compaction yields a Resync of n2 and n3 and
/// then the next write (n4). Returns the watch.
async fn watch_relists_after_compaction(
    etcd: &EtcdServer,
    store: &Store,
    direct: &Store,
) -> margay_datastore::Watch<Node> {
    let (_, start) = store.list::<NodeSpec>().await.unwrap();
    for i in 1..=3 {
        store
            .create(&node(&format!("n{i}"), &format!("10.0.0.{i}")))
            .await
            .unwrap();
    }
    store.delete::<NodeSpec>(None, "n1", None).await.unwrap();
    let compacted_at = etcd.compact(direct).await;

    // This watcher starts before the compaction point: its history is gone.
    let mut w = store.watch::<NodeSpec>(start + 1);
    match next(&mut w).await {
        WatchEvent::Resync { items, revision } => {
            let mut names: Vec<_> = items.iter().map(|n| n.name().to_string()).collect();
            names.sort();
            assert_eq!(names, ["n2", "n3"]);
            assert!(revision >= compacted_at);
        }
        e => panic!("expected a resync, got {e:?}"),
    }
    store.create(&node("n4", "10.0.0.4")).await.unwrap();
    match next(&mut w).await {
        WatchEvent::Put(n) => assert_eq!(n.name(), "n4"),
        e => panic!("expected n4 after the resync, got {e:?}"),
    }
    w
}

#[tokio::test]
async fn watch_from_compacted_revision_relists_then_continues() {
    let etcd = EtcdServer::start();
    let store = etcd.store().await;
    watch_relists_after_compaction(&etcd, &store, &store).await;
}

#[tokio::test]
async fn watch_and_client_survive_an_etcd_restart() {
    let mut etcd = EtcdServer::start();
    let store = etcd.store().await;
    let (_, rev) = store.list::<NodeSpec>().await.unwrap();
    let mut w = store.watch::<NodeSpec>(rev + 1);
    store.create(&node("n1", "10.0.0.1")).await.unwrap();
    assert!(matches!(next(&mut w).await, WatchEvent::Put(n) if n.name() == "n1"));

    etcd.stop();
    // The watcher is waiting while etcd is down; a write from another client happens after
    // the restart, and must still be seen.
    let waiter = tokio::spawn(async move {
        let e = next(&mut w).await;
        (e, w)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    etcd.start_again();

    let store2 = Store::connect(&etcd.args()).await.unwrap();
    store2.create(&node("n2", "10.0.0.2")).await.unwrap();
    let (e, _w) = waiter.await.unwrap();
    assert!(
        matches!(e, WatchEvent::Put(ref n) if n.name() == "n2"),
        "{e:?}"
    );

    // The first client reconnects too.
    let got = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match store.get::<NodeSpec>("n2").await {
                Ok(Some(n)) => return n,
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await
    .expect("the old client did not reconnect");
    assert_eq!(got.name(), "n2");
}

#[tokio::test]
async fn tls_client_certificate_is_required_and_accepted() {
    let etcd = EtcdServer::start_tls();
    let store = etcd.store().await;
    store.create(&node("n1", "10.0.0.1")).await.unwrap();
    assert!(store.get::<NodeSpec>("n1").await.unwrap().is_some());

    // Without the client certificate the server refuses.
    let mut no_cert = etcd.args();
    no_cert.cert = None;
    no_cert.key = None;
    let res = async {
        let s = Store::connect(&no_cert).await?;
        s.get::<NodeSpec>("n1").await
    }
    .await;
    assert!(res.is_err(), "a client without a certificate was served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_modify_loses_no_write() {
    let etcd = EtcdServer::start();
    let mut tasks = Vec::new();
    for i in 0..10 {
        let store = etcd.store().await;
        tasks.push(tokio::spawn(async move {
            store
                .modify::<NodeSpec>("n1", |n| {
                    n.metadata.labels.insert(format!("k{i}"), "v".into());
                })
                .await
                .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let store = etcd.store().await;
    let n = store.get::<NodeSpec>("n1").await.unwrap().unwrap();
    assert_eq!(n.metadata.labels.len(), 10, "{:?}", n.metadata.labels);
}

/// The record at `key` with its revision, or `None`.
async fn record(store: &Store, key: &str) -> Option<(u32, i64)> {
    store
        .get_json::<u32>(key)
        .await
        .unwrap()
        .map(|v| (v.value, v.mod_revision))
}

#[tokio::test]
async fn put_json_all_writes_every_key_or_none() {
    use margay_datastore::CasWrite;
    let etcd = EtcdServer::start();
    let store = etcd.store().await;
    let (a, b) = ("/margay/test/a", "/margay/test/b");
    let a_rev = store.create_json(a, &1u32).await.unwrap();

    // One stale revision: neither key is written.
    let stale = [
        CasWrite::json(a, &2u32, Some(a_rev - 1)),
        CasWrite::json(b, &2u32, None),
    ];
    assert!(store.put_json_all(&stale).await.unwrap_err().is_conflict());
    assert_eq!(record(&store, a).await, Some((1, a_rev)));
    assert_eq!(record(&store, b).await, None);

    // A key that must not exist but does: neither is written either.
    let exists = [
        CasWrite::json(b, &3u32, None),
        CasWrite::json(a, &3u32, None),
    ];
    assert!(store.put_json_all(&exists).await.unwrap_err().is_conflict());
    assert_eq!(record(&store, b).await, None);

    // Every comparison holds: both are written in one revision.
    let ok = [
        CasWrite::json(a, &4u32, Some(a_rev)),
        CasWrite::json(b, &4u32, None),
    ];
    let rev = store.put_json_all(&ok).await.unwrap();
    assert_eq!(record(&store, a).await, Some((4, rev)));
    assert_eq!(record(&store, b).await, Some((4, rev)));
}

/// The guard of `create_all`: a write based on a count of keys under a prefix read at some
/// revision fails once a key was created under the prefix since (the maxBlocksPerHost claim),
/// and succeeds when nothing was, also over an empty prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_all_fails_when_a_key_was_created_under_the_guard_since_the_count() {
    use margay_datastore::store::CasWrite;
    let etcd = EtcdServer::start();
    let s = etcd.store().await;
    let (none, rev0) = s.list_raw("/g/n1/").await.unwrap();
    assert!(none.is_empty());
    let one = |k: &'static str| [CasWrite::json(k, &1, None)];
    s.create_all(&one("/g/n1/a"), &[], Some(("/g/n1/", rev0)))
        .await
        .unwrap();
    // A second writer counted before "a" was created: refused.
    let e = s
        .create_all(&one("/g/n1/b"), &[], Some(("/g/n1/", rev0)))
        .await
        .unwrap_err();
    assert!(e.is_conflict(), "{e}");
    // Keys of another prefix sharing the text ("/g/n10/") do not count.
    let (_, rev1) = s.list_raw("/g/n1/").await.unwrap();
    s.create_all(&one("/g/n10/x"), &[], None).await.unwrap();
    s.create_all(&one("/g/n1/b"), &[], Some(("/g/n1/", rev1)))
        .await
        .unwrap();
    assert_eq!(s.list_raw("/g/n1/").await.unwrap().0.len(), 2);
    // A create of an existing key is refused, guard or not.
    assert!(s.create_all(&one("/g/n1/b"), &[], None).await.is_err());
}

/// margay's watch through etcd's gRPC proxy: a watch from a compacted revision still gets the
/// complete set (Resync) and then continues, and watches keep delivering after etcd behind
/// the proxy is killed and restarted.
#[tokio::test]
async fn watch_through_a_grpc_proxy_relists_after_compaction_and_survives_an_etcd_restart() {
    let mut etcd = EtcdServer::start();
    let direct = etcd.store().await;
    let proxy = etcd.start_proxy();
    let store = proxy.store().await;
    let mut w = watch_relists_after_compaction(&etcd, &store, &direct).await;
    // A second watcher on the same prefix through the same proxy (the proxy serves both from
    // one watch on etcd) sees the same next write.
    let (_, now) = store.list::<NodeSpec>().await.unwrap();
    let mut w2 = store.watch::<NodeSpec>(now + 1);

    etcd.stop();
    let waiter = tokio::spawn(async move {
        let a = next(&mut w).await;
        let b = next(&mut w2).await;
        (a, b)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    etcd.start_again();
    let writer = etcd.store().await;
    writer.create(&node("n5", "10.0.0.5")).await.unwrap();
    let (a, b) = waiter.await.unwrap();
    for (which, e) in [("first", a), ("second", b)] {
        assert!(
            matches!(e, WatchEvent::Put(ref n) if n.name() == "n5"),
            "{which} watcher after etcd's restart: {e:?}"
        );
    }
}
