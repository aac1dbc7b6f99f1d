//! `margayctl datastore migrate from-calico` against real etcd holding a Calico cluster's
//! keys, written by `margay_datastore::migrate::fixture` in the layout and JSON of
//! libcalico-go's etcdv3 backend: v3 resources
//! under `/calico/resources/v3/projectcalico.org/`, IPAM blocks, handles, affinities and
//! config under `/calico/ipam/v2/`, and felix's status keys beside them.

use margay_datastore::ipam::{Block, Handle, Ipam};
use margay_datastore::migrate::fixture::{calico_cluster, write_calico};
use margay_datastore::testing::EtcdServer;
use margay_datastore::{Store, store::ROOT};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn ctl(margay: &EtcdServer, args: &[&str], env: &[(&str, String)]) -> Out {
    let out = Command::new(env!("CARGO_BIN_EXE_margayctl"))
        .args(args)
        .env("MARGAY_ETCD_ENDPOINTS", margay.endpoint())
        .env_remove("ETCD_ENDPOINTS")
        .env_remove("ETCD_CA_CERT_FILE")
        .env_remove("ETCD_CERT_FILE")
        .env_remove("ETCD_KEY_FILE")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("running margayctl");
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

const MIGRATE: &[&str] = &["datastore", "migrate", "from-calico"];

fn migrate(margay: &EtcdServer, extra: &[&str], env: &[(&str, String)]) -> Out {
    let args: Vec<&str> = MIGRATE.iter().chain(extra).copied().collect();
    ctl(margay, &args, env)
}

async fn put_raw(store: &Store, key: &str, value: &[u8]) {
    store
        .client()
        .kv_client()
        .put(key, value.to_vec(), None)
        .await
        .expect("writing a key");
}

/// Every margay key and value.
async fn margay_keys(store: &Store) -> BTreeMap<String, Vec<u8>> {
    let (items, _) = store.list_raw(ROOT).await.unwrap();
    items.into_iter().map(|v| (v.key, v.value)).collect()
}

#[tokio::test]
async fn a_calico_cluster_is_imported_with_every_address_kept() {
    let etcd = EtcdServer::start();
    let store = etcd.store().await;
    let (kvs, pods) = calico_cluster(3, 4);
    write_calico(&store, &kvs).await;

    // Dry run: the plan, and nothing written.
    let o = migrate(&etcd, &["--dry-run"], &[]);
    assert!(o.ok, "{}", o.stderr);
    assert!(
        o.stdout.contains("create IPPool default-ipv4-ippool\n"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains("create IPAMBlock 10.244.0.64/26\n"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout
            .contains("create BlockAffinity node-2/10.244.0.128/26\n"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout
            .contains("create IPAMHandle ipip-tunnel-addr-node-0\n"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout
            .contains("create WorkloadEndpoint shop/node--1-k8s-web--1--1-eth0\n"),
        "{}",
        o.stdout
    );
    // Policy kinds are part of the model now: Calico's profiles come across as they are.
    assert!(
        o.stdout.contains("create Profile kns.default\n"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout
            .contains("/calico/felix/v2/no-region/host/node-0/status"),
        "{}",
        o.stdout
    );
    // 3 nodes, 12 endpoints, pool, BGP config, peer, Felix config, profile (20 resources);
    // 3 blocks, 15 handles, 3 affinities.
    assert!(
        o.stdout.contains("dry run, nothing written: ")
            && o.stdout.contains(": 41 created, 0 updated, 0 unchanged"),
        "{}",
        o.stdout
    );
    assert!(margay_keys(&store).await.is_empty());

    // The migration.
    let o = migrate(&etcd, &[], &[]);
    assert!(o.ok, "{}", o.stderr);
    assert!(
        o.stdout.contains("41 created, 0 updated, 0 unchanged"),
        "{}",
        o.stdout
    );
    assert!(
        !o.stdout.contains("create IPPool"),
        "only the dry run lists records"
    );

    let ipam = Ipam::new(store.clone());
    let blocks: Vec<Block> = ipam
        .blocks()
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.value)
        .collect();
    assert_eq!(blocks.len(), 3);
    for p in &pods {
        let b = blocks
            .iter()
            .find(|b| b.cidr.contains(&IpAddr::V4(p.addr)))
            .unwrap();
        assert_eq!(
            b.affinity.as_deref(),
            Some(format!("node-{}", p.node).as_str())
        );
        let a = &b.allocations[&b.ordinal(IpAddr::V4(p.addr)).unwrap()];
        assert_eq!(a.handle_id, format!("k8s-pod-network.{}", p.container));
        assert_eq!(a.attrs["pod"], p.name);
        assert_eq!(a.attrs["namespace"], p.ns);
    }
    let handles: Vec<Handle> = ipam
        .handles()
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.value)
        .collect();
    assert_eq!(handles.len(), 15);

    // margay's own check finds nothing leaked: every handle has its endpoint or node.
    let o = ctl(&etcd, &["ipam", "check", "--json"], &[]);
    assert!(o.ok, "{}", o.stderr);
    let report: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(report["addresses_in_use"], 15, "{report}");
    for field in [
        "handles_without_endpoint",
        "endpoints_without_handle",
        "allocations_without_handle",
        "handle_mismatches",
        "affinities_to_missing_nodes",
        "affinity_mismatches",
    ] {
        assert_eq!(report[field], json!([]), "{field}: {report}");
    }
    let o = ctl(&etcd, &["get", "ippools", "-o", "yaml"], &[]);
    assert!(
        o.ok && o.stdout.contains("blockSize: 26") && o.stdout.contains("ipipMode: Always"),
        "{}{}",
        o.stdout,
        o.stderr
    );

    // Run twice: every record the same, nothing written.
    let before = store.revision().await.unwrap();
    let o = migrate(&etcd, &[], &[]);
    assert!(o.ok, "{}", o.stderr);
    assert!(
        o.stdout.contains("0 created, 0 updated, 41 unchanged"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("(0 etcd transactions)"), "{}", o.stdout);
    assert_eq!(
        store.revision().await.unwrap(),
        before,
        "a second run wrote"
    );

    // margay's IPAM goes on from the imported state: a new pod on node-1 gets a free address
    // of node-1's block, and an imported pod's release frees exactly its address.
    let got = ipam
        .auto_assign("k8s-pod-network.new", "node-1", &BTreeMap::new(), 1, 0, &[])
        .await
        .unwrap();
    assert_eq!(got.v4, vec![IpAddr::V4(Ipv4Addr::new(10, 244, 0, 69))]);
    let gone = &pods[5];
    assert_eq!(gone.node, 1);
    let freed = ipam
        .release_by_handle(&format!("k8s-pod-network.{}", gone.container))
        .await
        .unwrap();
    assert_eq!(freed, vec![IpAddr::V4(gone.addr)]);
}

#[tokio::test]
async fn margay_data_in_the_way_stops_it_unless_overwrite() {
    let etcd = EtcdServer::start();
    let store = etcd.store().await;
    let (kvs, _) = calico_cluster(1, 1);
    write_calico(&store, &kvs).await;
    let pool = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: default-ipv4-ippool\nspec:\n  cidr: 10.99.0.0/16\n";
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("pool.yaml");
    std::fs::write(&f, pool).unwrap();
    let o = ctl(&etcd, &["apply", "-f", f.to_str().unwrap()], &[]);
    assert!(o.ok, "{}", o.stderr);
    let before = margay_keys(&store).await;

    let o = migrate(&etcd, &[], &[]);
    assert!(!o.ok);
    assert!(
        o.stderr
            .contains("/margay/resources/v1/ippools/default-ipv4-ippool")
            && o.stderr.contains("--overwrite"),
        "{}",
        o.stderr
    );
    assert_eq!(margay_keys(&store).await, before, "nothing may be written");

    let o = migrate(&etcd, &["--dry-run", "--overwrite"], &[]);
    assert!(
        o.ok && o.stdout.contains("update IPPool default-ipv4-ippool\n"),
        "{}{}",
        o.stdout,
        o.stderr
    );
    let o = migrate(&etcd, &["--overwrite"], &[]);
    assert!(o.ok, "{}", o.stderr);
    assert!(o.stdout.contains(" 1 updated,"), "{}", o.stdout);
    let o = ctl(&etcd, &["get", "ippools", "-o", "yaml"], &[]);
    assert!(o.stdout.contains("cidr: 10.244.0.0/16"), "{}", o.stdout);
}

#[tokio::test]
async fn bad_calico_data_is_reported_with_its_key_and_nothing_written() {
    let cases: [(&str, &[u8], &str); 3] = [
        (
            "/calico/ipam/v2/assignment/ipv4/block/10.244.0.0-26",
            b"{\"cidr\":\"10.244.0.0/26\",\"allocations\":[0",
            "corrupt block",
        ),
        (
            "/calico/resources/v3/projectcalico.org/frobnicators/x",
            b"{\"kind\":\"Frobnicator\"}",
            "unknown resource kind 'frobnicators'",
        ),
        (
            "/calico/ipam/v2/handle/k8s-pod-network.ghost",
            b"{\"block\":{\"10.250.0.0/26\":1},\"deleted\":false}",
            "10.250.0.0/26, which does not exist",
        ),
    ];
    let etcd = EtcdServer::start();
    let store = etcd.store().await;
    for (key, value, message) in cases {
        let _ = store
            .client()
            .kv_client()
            .delete(
                "/calico/",
                Some(etcd_client::DeleteOptions::new().with_prefix()),
            )
            .await;
        let (kvs, _) = calico_cluster(2, 2);
        write_calico(&store, &kvs).await;
        put_raw(&store, key, value).await;
        let o = migrate(&etcd, &[], &[]);
        assert!(!o.ok, "{key}: {}", o.stdout);
        assert!(
            o.stderr.contains(&format!("problem: {key}: ")) && o.stderr.contains(message),
            "{key}: {}",
            o.stderr
        );
        assert!(o.stderr.contains("nothing written"), "{}", o.stderr);
        assert!(
            margay_keys(&store).await.is_empty(),
            "{key}: something was written"
        );
    }
}

#[tokio::test]
async fn calicos_own_tls_etcd_is_read_through_its_etcd_variables_with_progress() {
    let margay = EtcdServer::start();
    let calico = EtcdServer::start_tls();
    let tls = calico.tls().unwrap().clone();
    // 12 nodes of 40 pods: 1,000+ keys, read in pages.
    let (kvs, pods) = calico_cluster(12, 40);
    assert!(kvs.len() > 1000);
    write_calico(&calico.store().await, &kvs).await;
    let env = [
        ("ETCD_ENDPOINTS", calico.endpoint()),
        ("ETCD_CA_CERT_FILE", tls.ca.display().to_string()),
        ("ETCD_CERT_FILE", tls.client_cert.display().to_string()),
        ("ETCD_KEY_FILE", tls.client_key.display().to_string()),
    ];
    // ETCD_* name Calico's etcd here; margay's is given by MARGAY_ETCD_ENDPOINTS.
    let o = migrate(&margay, &[], &env);
    assert!(o.ok, "{}", o.stderr);
    assert!(o.stderr.contains("read Calico 1000 keys\n"), "{}", o.stderr);
    assert!(o.stderr.contains("wrote 1000 keys\n"), "{}", o.stderr);
    let store = margay.store().await;
    let ipam = Ipam::new(store.clone());
    let report = ipam.check().await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.addresses_in_use, pods.len() + 12);

    // The same through the flags, and nothing left to do.
    let o = migrate(
        &margay,
        &[
            "--calico-etcd-endpoints",
            &calico.endpoint(),
            "--calico-etcd-ca-cert-file",
            tls.ca.to_str().unwrap(),
            "--calico-etcd-cert-file",
            tls.client_cert.to_str().unwrap(),
            "--calico-etcd-key-file",
            tls.client_key.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.ok, "{}", o.stderr);
    assert!(o.stdout.contains(" 0 created, 0 updated,"), "{}", o.stdout);
    // A Calico etcd that cannot be reached is named.
    let o = migrate(
        &margay,
        &["--calico-etcd-endpoints", "http://127.0.0.1:9"],
        &[],
    );
    assert!(
        !o.ok
            && o.stderr
                .contains("Calico's keys from its etcd at http://127.0.0.1:9"),
        "{}",
        o.stderr
    );
}
