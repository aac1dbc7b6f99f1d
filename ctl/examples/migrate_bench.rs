//! The import benchmark (issue 17 §5): a synthetic Calico cluster of NODES nodes with PODS pods
//! each (`margay_datastore::migrate::fixture`) in a fresh real etcd, then `margayctl datastore
//! migrate from-calico` under `/usr/bin/time -v`: wall time, etcd writes (revisions the
//! migration added) and margayctl's peak RSS; then a second run (no writes expected).
//!
//! `cargo run -p margay-ctl --example migrate_bench [--release] -- NODES PODS`; margayctl is
//! taken from the same target directory (build it with the same profile first).

use margay_datastore::migrate::fixture::{calico_cluster, write_calico};
use margay_datastore::testing::EtcdServer;
use std::process::Command;
use std::time::Instant;

fn measure(etcd: &EtcdServer, ctl: &std::path::Path) -> (f64, u64, String) {
    let start = Instant::now();
    let out = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(ctl)
        .args(["datastore", "migrate", "from-calico"])
        .env("MARGAY_ETCD_ENDPOINTS", etcd.endpoint())
        .output()
        .expect("running /usr/bin/time margayctl");
    let secs = start.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "margayctl failed:\n{stderr}");
    let rss_kib = stderr
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.parse().ok())
        .expect("time -v reports the peak RSS");
    let summary = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    (secs, rss_kib, summary)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("NODES PODS"))
        .collect();
    let (nodes, pods) = match args.as_slice() {
        [n, p] => (*n, *p),
        _ => (1000, 50),
    };
    let exe = std::env::current_exe().unwrap();
    let ctl = exe.parent().unwrap().parent().unwrap().join("margayctl");
    assert!(
        ctl.exists(),
        "{} is missing: build margayctl first",
        ctl.display()
    );

    let etcd = EtcdServer::start();
    let store = etcd.store().await;
    let (kvs, all) = calico_cluster(nodes, pods);
    write_calico(&store, &kvs).await;
    println!(
        "Calico dataset: {nodes} nodes, {} pods, {} keys",
        all.len(),
        kvs.len()
    );

    for run in 1..=2 {
        let before = store.revision().await.unwrap();
        let (secs, rss_kib, summary) = measure(&etcd, &ctl);
        let writes = store.revision().await.unwrap() - before;
        println!(
            "run {run}: {secs:.2} s, {writes} etcd transactions, peak RSS {:.1} MiB | {summary}",
            rss_kib as f64 / 1024.0
        );
    }
}
