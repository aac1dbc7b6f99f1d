//! felix's policy task fed by its etcd watch: real etcd, the real task
//! (`margay_felix::cluster::policy::run`) writing a real nftables table in a node namespace.
//!
//! - `watched_changes_leave_the_table_a_full_render_makes`: labels, policies, profiles, tiers,
//!   endpoints and FelixConfiguration changed through etcd one after another; after each, once
//!   the task says the table holds etcd's state (the CNI ADD's hook), the kernel's table equals
//!   the render of a full compile of everything read back from etcd.
//! - `end_to_end_1000_endpoints_500_policies` (ignored; bench/policy-watch.sh): from the etcd
//!   write of one more policy, one new WorkloadEndpoint (as the CNI path writes it) and one label
//!   change to the rule in force in the kernel, against `nft -f` loading the same final table
//!   from scratch, in the same run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use margay_datastore::policy::{PolicyModel, load};
use margay_datastore::resources::FelixConfigurationSpec;
use margay_datastore::{EtcdArgs, Store};
use margay_felix::cluster::policy::{self, PolicySync};
use margay_felix::health::{Health, Metrics};
use margay_felix::nat::Nft;
use margay_felix::policy::compile::compile;
use margay_felix::policy::render::{TABLE, TABLE_FAMILY};
use margay_felix::policy::{PolicyIr, PolicyKeeper, Table, render, script};
use margay_lab::flows::in_netns;
use margay_lab::{Etcd, Lab, LabSwitch, Netns};
use serde_json::{Value, json};

const NODE: &str = "n1";
const WAIT: Duration = Duration::from_secs(10);

/// etcd on a switch, a node namespace on it.
struct Bed {
    lab: Lab,
    _sw: LabSwitch,
    etcd: Etcd,
    node: Netns,
}

impl Bed {
    fn new(name: &str) -> Bed {
        let lab = Lab::new(name).unwrap();
        let sw = lab.switch("sw").unwrap();
        let etcd = Etcd::on_switch(&lab, &sw).unwrap();
        let node = lab.netns("n1").unwrap();
        sw.attach(&node).unwrap();
        Bed {
            lab,
            _sw: sw,
            etcd,
            node,
        }
    }

    /// Runs `f` inside the node's namespace with a Store and the policy task running there.
    fn run<T, F, Fut>(&self, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(Store, PolicySync, String) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T>,
    {
        let (url, ns) = (self.etcd.endpoint(), self.node.name().to_string());
        in_netns(self.node.name(), move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let store = Store::connect(&EtcdArgs::plain([url])).await.unwrap();
                let (sync, requests) = policy::channel();
                let task = tokio::spawn(policy::run(
                    store.clone(),
                    NODE.into(),
                    PolicyKeeper::new(Nft::in_netns(&ns)),
                    requests,
                    Arc::new(Health::new(Duration::from_secs(60))),
                    Arc::new(Metrics::new()),
                ));
                let out = f(store, sync, ns).await;
                task.abort();
                out
            })
        })
        .unwrap()
    }
}

fn wep(i: usize, app: &str, node: &str) -> Value {
    json!({
        "apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
        "metadata": {"name": format!("{node}-k8s-pod{i}-eth0"), "namespace": "default",
                     "labels": {"app": app}},
        "spec": {"node": node, "orchestrator": "k8s", "pod": format!("pod{i}"),
                 "endpoint": "eth0", "interfaceName": format!("cali{i:011}"),
                 "ipNetworks": [format!("10.70.{}.{}/32", i / 250, i % 250 + 1)],
                 "ports": [{"name": "http", "protocol": "TCP", "port": 8080}]},
    })
}

fn np(name: &str, selector: &str, from: &str, port: Value) -> Value {
    json!({
        "apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"selector": selector, "types": ["Ingress"],
                 "ingress": [{"action": "Allow", "protocol": "TCP",
                              "source": {"selector": from},
                              "destination": {"ports": [port]}}]},
    })
}

/// The IR a full compile makes of everything in etcd now.
async fn full_ir(store: &Store) -> PolicyIr {
    let res = load::load(store).await.unwrap();
    let (model, _) = PolicyModel::build(&res);
    let mut ir = compile(&model, NODE);
    let read = |name: String| async move {
        store
            .get::<FelixConfigurationSpec>(&name)
            .await
            .unwrap()
            .map(|r| r.spec)
    };
    let global = read("default".into()).await;
    let own = read(format!("node.{NODE}")).await;
    let (s, _) = margay_felix::settings::merge(global.as_ref(), own.as_ref(), &Default::default());
    ir.workload_prefixes = s.dataplane.interface_prefixes;
    ir
}

/// Checks that the kernel's table is the render of a full compile of etcd now (nothing for
/// felix's drift repair to patch); returns that render.
async fn assert_full_render(store: &Store, ns: &str, after: &str) -> Table {
    let want = render(&full_ir(store).await);
    let ns = ns.to_string();
    let got = tokio::task::spawn_blocking(move || {
        PolicyKeeper::new(Nft::in_netns(&ns))
            .kernel()
            .unwrap()
            .expect("felix's policy table")
    })
    .await
    .unwrap();
    let delta = script::delta(Some(&got), &want);
    assert!(
        delta.trim().is_empty(),
        "after {after}: the kernel's table differs from a full render:\n{delta}"
    );
    want
}

#[test]
fn watched_changes_leave_the_table_a_full_render_makes() {
    let bed = Bed::new("policy_watch");
    let steps = bed.run(|store, sync, ns| async move {
        let mut steps = 0;
        let check = |what: &'static str| {
            let (store, sync, ns) = (store.clone(), sync.clone(), ns.clone());
            async move {
                sync.sync(WAIT).await.unwrap();
                assert_full_render(&store, &ns, what).await;
            }
        };
        // Pods on this node and another, then policies selecting them.
        for i in 0..6 {
            let app = ["web", "db"][i % 2];
            write(&store, wep(i, app, if i < 4 { NODE } else { "n2" })).await;
        }
        check("six pods").await;
        steps += 1;
        write(
            &store,
            np("web-from-db", "app == 'web'", "app == 'db'", json!(80)),
        )
        .await;
        check("a policy").await;
        steps += 1;
        write(
            &store,
            np("db-from-web", "app == 'db'", "app == 'web'", json!("http")),
        )
        .await;
        check("a policy with a named port").await;
        steps += 1;
        // A label change moves pod 0 from web to db: both selectors' sets and its tiers.
        write(&store, wep(0, "db", NODE)).await;
        check("a label change").await;
        steps += 1;
        // A global policy in a tier of its own, before the default tier.
        write(
            &store,
            json!({"apiVersion": "projectcalico.org/v3", "kind": "Tier",
            "metadata": {"name": "security"}, "spec": {"order": 50, "defaultAction": "Pass"}}),
        )
        .await;
        write(
            &store,
            json!({"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
            "metadata": {"name": "security.no-ssh"},
            "spec": {"tier": "security", "selector": "all()", "types": ["Ingress", "Egress"],
                     "ingress": [{"action": "Deny", "protocol": "TCP",
                                  "destination": {"ports": [22]}}],
                     "egress": [{"action": "Deny", "destination": {"nets": ["10.99.0.0/16"]}}]}}),
        )
        .await;
        check("a tier and a global policy").await;
        steps += 1;
        // The namespace's labels (profile kns.default) feed namespaceSelector.
        write(
            &store,
            json!({"apiVersion": "projectcalico.org/v3", "kind": "Profile",
            "metadata": {"name": "kns.default"}, "spec": {"labelsToApply": {"team": "a"}}}),
        )
        .await;
        write(
            &store,
            json!({"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
            "metadata": {"name": "from-team-a"},
            "spec": {"selector": "app == 'db'", "types": ["Ingress"],
                     "ingress": [{"action": "Allow",
                                  "source": {"namespaceSelector": "team == 'a'"}}]}}),
        )
        .await;
        check("a profile and a namespaceSelector").await;
        steps += 1;
        // A new pod and a deleted one, a policy changed and one deleted.
        write(&store, wep(9, "web", NODE)).await;
        remove(&store, wep(1, "db", NODE)).await;
        check("a pod added and one deleted").await;
        steps += 1;
        write(
            &store,
            np(
                "web-from-db",
                "app == 'web'",
                "app == 'cache'",
                json!("8000:8100"),
            ),
        )
        .await;
        remove(&store, np("db-from-web", "", "", json!(0))).await;
        check("a policy changed and one deleted").await;
        steps += 1;
        // FelixConfiguration: endpoint-to-host action and interface prefixes.
        write(
            &store,
            json!({"apiVersion": "projectcalico.org/v3", "kind": "FelixConfiguration",
            "metadata": {"name": "default"},
            "spec": {"defaultEndpointToHostAction": "Accept", "interfacePrefix": "cali,tap"}}),
        )
        .await;
        check("FelixConfiguration").await;
        steps += 1;
        // The pod moves to another node: it leaves this node's table, stays in the sets.
        write(&store, wep(2, "web", "n2")).await;
        check("a pod moved away").await;
        steps + 1
    });
    assert_eq!(steps, 10);
}

mod common;
use common::{median, ms, remove, write};

// ---- the end-to-end benchmark -------------------------------------------------------------

const ENDPOINTS: usize = 1000;
const POLICIES: usize = 500;
const APPS: usize = 50;
const RUNS: usize = 7;

fn app(i: usize) -> String {
    format!("app{}", i % APPS)
}

fn bench_policy(p: usize) -> Value {
    np(
        &format!("p{p:04}"),
        &format!("app == '{}'", app(p)),
        &format!("app == '{}'", app(p + 1)),
        json!(8000 + p),
    )
}

/// `nft -f FILE` in `ns` into an empty ruleset: the table deleted first (not timed).
fn nft_from_scratch(ns: &str, path: &std::path::Path) -> Duration {
    in_netns(ns, || {
        let _ = std::process::Command::new("nft")
            .args(["delete", "table", TABLE_FAMILY, TABLE])
            .stderr(std::process::Stdio::null())
            .status();
    })
    .unwrap();
    common::nft_file(ns, path)
}

#[test]
#[ignore = "benchmark: run by bench/policy-watch.sh"]
fn end_to_end_1000_endpoints_500_policies() {
    let bed = Bed::new("policy_watch_bench");
    let full_ns = bed.lab.netns("full").unwrap();
    let scratch = std::env::temp_dir().join(format!("{}-tables", bed.lab.tag()));
    std::fs::create_dir_all(&scratch).unwrap();
    let ctl_ns = bed.node.name().to_string();
    let etcd_url = bed.etcd.endpoint();
    let (full_name, dir) = (full_ns.name().to_string(), scratch.clone());
    let rows = bed.run(move |store, sync, ns| async move {
        // The base: 1,000 endpoints of this node, 500 policies (10 select each app).
        let t0 = Instant::now();
        for i in 0..ENDPOINTS {
            write(&store, wep(i, &app(i), NODE)).await;
        }
        for p in 0..POLICIES {
            write(&store, bench_policy(p)).await;
        }
        sync.sync(Duration::from_secs(120)).await.unwrap();
        println!(
            "base written and programmed in {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        let extra_pod = wep(ENDPOINTS, &app(7), NODE);
        type Step = Box<
            dyn Fn(Store) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
                + Send
                + Sync,
        >;
        let step = |v: Value, delete: bool| -> Step {
            Box::new(move |s: Store| {
                let v = v.clone();
                Box::pin(async move {
                    if delete {
                        remove(&s, v).await
                    } else {
                        write(&s, v).await
                    }
                })
            })
        };
        let cases: Vec<(&str, Step, Step)> = vec![
            (
                "one more policy (etcd write)",
                step(bench_policy(POLICIES), false),
                step(bench_policy(POLICIES), true),
            ),
            (
                "one new pod (WorkloadEndpoint as the CNI path writes it)",
                step(extra_pod.clone(), false),
                step(extra_pod, true),
            ),
            (
                "one label change",
                step(wep(7, &app(8), NODE), false),
                step(wep(7, &app(7), NODE), false),
            ),
        ];
        let mut rows = Vec::new();
        for (name, forward, back) in &cases {
            let (mut inc, mut full) = (Vec::new(), Vec::new());
            let mut lines = 0;
            for _ in 0..RUNS {
                let t0 = Instant::now();
                forward(store.clone()).await;
                sync.sync(WAIT).await.unwrap();
                inc.push(t0.elapsed());
                // In force: the kernel's table is the full render of what etcd holds.
                let want = assert_full_render(&store, &ns, name).await;
                let text = script::full(&want);
                lines = text.lines().count();
                let path = dir.join("after.nft");
                std::fs::write(&path, &text).unwrap();
                let f_ns = full_name.clone();
                full.push(
                    tokio::task::spawn_blocking(move || nft_from_scratch(&f_ns, &path))
                        .await
                        .unwrap(),
                );
                back(store.clone()).await;
                sync.sync(WAIT).await.unwrap();
            }
            rows.push((name.to_string(), median(inc), median(full), lines));
        }
        // One more policy through margayctl (process start, connect, validate, write).
        let yaml = dir.join("p-extra.yaml");
        std::fs::write(
            &yaml,
            serde_json::to_string(&bench_policy(POLICIES + 1)).unwrap(),
        )
        .unwrap();
        let mut ctl = Vec::new();
        for _ in 0..RUNS {
            let (y, url, cns) = (yaml.clone(), etcd_url.clone(), ctl_ns.clone());
            let t0 = Instant::now();
            tokio::task::spawn_blocking(move || {
                let bin =
                    margay_lab::margay_binary("margayctl", "cargo build -p margay-ctl").unwrap();
                let out = in_netns(&cns, move || {
                    std::process::Command::new(bin)
                        .args(["--etcd-endpoints", &url, "apply", "-f"])
                        .arg(&y)
                        .output()
                        .unwrap()
                })
                .unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            })
            .await
            .unwrap();
            sync.sync(WAIT).await.unwrap();
            ctl.push(t0.elapsed());
            remove(&store, bench_policy(POLICIES + 1)).await;
            sync.sync(WAIT).await.unwrap();
        }
        rows.push((
            "one more policy (`margayctl apply`, process start included)".into(),
            median(ctl),
            rows[0].2,
            rows[0].3,
        ));
        rows
    });
    println!(
        "| change ({ENDPOINTS} endpoints, {POLICIES} policies) | etcd write → in force (felix's watch, median of {RUNS}) | full load `nft -f` of the final table from scratch | script lines | ratio |"
    );
    println!("|---|---|---|---|---|");
    for (name, inc, full, lines) in &rows {
        println!(
            "| {name} | {} | {} | {lines} | {:.3} |",
            ms(*inc),
            ms(*full),
            inc.as_secs_f64() / full.as_secs_f64()
        );
    }
    std::fs::remove_dir_all(&scratch).unwrap();
    drop(full_ns);
}
