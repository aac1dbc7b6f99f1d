//! [`LivePolicy`] against a full compile: after every event of seeded random sequences (pods
//! added, relabelled, moved, deleted; policies of the three kinds written and deleted; tiers,
//! profiles, FelixConfiguration), the IR kept change by change equals the IR compiled from
//! scratch out of the same resources.

use margay_datastore::policy::PolicyModel;
use margay_datastore::policy::load::{Input, input_kind};
use serde_json::{Value, json};

use super::Rendered;
use super::compile::compile;
use super::live::LivePolicy;

const NODE: &str = "n1";

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[self.below(v.len())]
    }
}

const APPS: [&str; 4] = ["web", "db", "cache", "api"];
const NAMESPACES: [&str; 2] = ["default", "prod"];

fn key(plural: &str, ns: Option<&str>, name: &str) -> String {
    match ns {
        Some(ns) => format!("/margay/resources/v1/{plural}/{ns}/{name}"),
        None => format!("/margay/resources/v1/{plural}/{name}"),
    }
}

fn decode(k: &str, v: Value) -> Input {
    let bytes = serde_json::to_vec(&v).unwrap();
    margay_datastore::policy::load::decode_input(k, &bytes, 1)
        .expect("a model input")
        .unwrap_or_else(|e| panic!("{k}: {e}"))
}

fn entity(rng: &mut Rng) -> Value {
    match rng.below(5) {
        0 => json!({}),
        1 => json!({"selector": format!("app == '{}'", rng.pick(&APPS))}),
        2 => json!({"nets": ["10.9.0.0/16"], "notNets": ["10.9.1.0/24"]}),
        3 => json!({"notSelector": format!("app == '{}'", rng.pick(&APPS)), "ports": [80, "http"]}),
        _ => json!({"namespaceSelector": "team == 'a'", "ports": ["8000:8080"]}),
    }
}

fn rules(rng: &mut Rng) -> Value {
    let n = rng.below(3);
    let actions = ["Allow", "Deny", "Pass", "Log"];
    Value::Array(
        (0..n)
            .map(|_| {
                json!({"action": rng.pick(&actions), "protocol": "TCP",
                       "source": entity(rng), "destination": entity(rng)})
            })
            .collect(),
    )
}

fn spec(rng: &mut Rng) -> Value {
    let types: &[&str] = match rng.below(3) {
        0 => &["Ingress"],
        1 => &["Egress"],
        _ => &["Ingress", "Egress"],
    };
    let mut s = json!({
        "selector": format!("app == '{}'", rng.pick(&APPS)),
        "order": rng.below(4) * 100,
        "types": types,
        "ingress": rules(rng),
        "egress": rules(rng),
    });
    if rng.below(3) == 0 {
        s["tier"] = json!("security");
    }
    s
}

/// One random change, as the watch delivers it.
fn event(rng: &mut Rng, live: &mut LivePolicy) {
    let name = |rng: &mut Rng, p: &str| format!("{p}{}", rng.below(6));
    match rng.below(12) {
        0..=3 => {
            let (ns, n) = (rng.pick(&NAMESPACES), name(rng, "pod"));
            let k = key("workloadendpoints", Some(ns), &n);
            let i = rng.below(200);
            let mut addrs = vec![format!("10.9.{}.{}/32", i / 100, i % 100 + 1)];
            if rng.below(8) == 0 {
                addrs.push(format!("fd00::{i:x}/128"));
            }
            let node = if rng.below(3) == 0 { "n2" } else { NODE };
            let v = json!({
                "apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
                "metadata": {"name": n, "namespace": ns,
                             "labels": {"app": rng.pick(&APPS)}},
                "spec": {"node": node, "pod": n, "interfaceName": format!("cali{ns}{n}"),
                         "ipNetworks": addrs,
                         "ports": [{"name": "http", "protocol": "TCP", "port": 8080 + rng.below(2)}]},
            });
            live.put(&k, decode(&k, v));
        }
        4 => {
            let k = key(
                "workloadendpoints",
                Some(rng.pick(&NAMESPACES)),
                &name(rng, "pod"),
            );
            live.delete(&k, input_kind(&k).unwrap());
        }
        5 | 6 => {
            let (ns, n) = (rng.pick(&NAMESPACES), name(rng, "np"));
            let k = key("networkpolicies", Some(ns), &n);
            let mut s = spec(rng);
            if s.get("tier").is_some() {
                // A namespaced policy in a tier is named `<tier>.<name>`.
                s.as_object_mut().unwrap().remove("tier");
            }
            let v = json!({"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy",
                           "metadata": {"name": n, "namespace": ns}, "spec": s});
            live.put(&k, decode(&k, v));
        }
        7 => {
            let n = name(rng, "gnp");
            let k = key("globalnetworkpolicies", None, &n);
            let mut s = spec(rng);
            let n = match s.get("tier") {
                Some(_) => format!("security.{n}"),
                None => n,
            };
            let k = if n.starts_with("security.") {
                key("globalnetworkpolicies", None, &n)
            } else {
                k
            };
            s.as_object_mut().unwrap().remove("namespaceSelector");
            let v = json!({"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
                           "metadata": {"name": n}, "spec": s});
            live.put(&k, decode(&k, v));
        }
        8 => {
            let plural = ["networkpolicies", "globalnetworkpolicies"][rng.below(2)];
            let ns = (plural == "networkpolicies").then(|| rng.pick(&NAMESPACES));
            let k = key(
                plural,
                ns,
                &name(rng, if ns.is_some() { "np" } else { "gnp" }),
            );
            live.delete(&k, input_kind(&k).unwrap());
        }
        9 => {
            let k = key("tiers", None, "security");
            if rng.below(3) == 0 {
                live.delete(&k, input_kind(&k).unwrap());
            } else {
                let action = ["Deny", "Pass"][rng.below(2)];
                let v = json!({"apiVersion": "projectcalico.org/v3", "kind": "Tier",
                               "metadata": {"name": "security"},
                               "spec": {"order": rng.below(3) * 50, "defaultAction": action}});
                live.put(&k, decode(&k, v));
            }
        }
        10 => {
            let ns = rng.pick(&NAMESPACES);
            let n = format!("kns.{ns}");
            let k = key("profiles", None, &n);
            if rng.below(4) == 0 {
                live.delete(&k, input_kind(&k).unwrap());
            } else {
                let team = ["a", "b"][rng.below(2)];
                let mut spec = json!({"labelsToApply": {"team": team}});
                if rng.below(2) == 0 {
                    spec["ingress"] = rules(rng);
                }
                let v = json!({"apiVersion": "projectcalico.org/v3", "kind": "Profile",
                               "metadata": {"name": n}, "spec": spec});
                live.put(&k, decode(&k, v));
            }
        }
        _ => {
            let k = key("felixconfigurations", None, "default");
            let action = ["Drop", "Accept", "Return"][rng.below(3)];
            let prefixes = ["cali", "cali,tap"][rng.below(2)];
            let v = json!({"apiVersion": "projectcalico.org/v3", "kind": "FelixConfiguration",
                           "metadata": {"name": "default"},
                           "spec": {"defaultEndpointToHostAction": action,
                                    "interfacePrefix": prefixes}});
            live.put(&k, decode(&k, v));
        }
    }
}

fn full(live: &LivePolicy) -> super::ir::PolicyIr {
    let (model, _) = PolicyModel::build(&live.resources());
    let mut ir = compile(&model, NODE);
    ir.workload_prefixes = live.ir().workload_prefixes.clone();
    ir
}

#[test]
fn incremental_ir_equals_a_full_compile_after_every_random_event() {
    // How often the compared IRs held something worth comparing.
    let (mut with_policies, mut with_sets, mut with_ports, mut v6) = (0, 0, 0, 0);
    for seed in 1..=40u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut live = LivePolicy::new(NODE);
        // A table kept as felix keeps it: updated from the keys the model says it changed,
        // after every few events (a burst of the watch).
        let mut rendered = Rendered::new(live.ir().clone());
        assert!(
            live.take_changes().all,
            "a new model asks for a full comparison"
        );
        for step in 0..120 {
            event(&mut rng, &mut live);
            let want = full(&live);
            assert_eq!(
                live.ir(),
                &want,
                "seed {seed}, step {step}: the live IR differs from a full compile"
            );
            if step % 3 == 2 {
                let changes = live.take_changes();
                rendered.update_changed(live.ir(), &changes);
                assert_eq!(
                    rendered.table(),
                    Rendered::new(want.clone()).table(),
                    "seed {seed}, step {step}: the table kept from the changed keys differs"
                );
            }
            with_policies += usize::from(want.policies.len() > 2);
            with_sets += usize::from(want.addr_sets.values().any(|s| !s.is_empty()));
            with_ports += usize::from(want.port_sets.values().any(|s| !s.is_empty()));
            v6 += usize::from(want.families.len() == 2);
        }
    }
    let total = 40 * 120;
    for (what, n) in [
        ("policies", with_policies),
        ("sets", with_sets),
        ("named ports", with_ports),
        ("IPv6", v6),
    ] {
        assert!(n > total / 10, "only {n} of {total} steps had {what}");
    }
}

#[test]
fn interface_prefixes_come_from_the_watched_felix_configurations() {
    let mut live = LivePolicy::new(NODE);
    let k = key("felixconfigurations", None, "node.n1");
    let v = json!({"apiVersion": "projectcalico.org/v3", "kind": "FelixConfiguration",
                   "metadata": {"name": "node.n1"}, "spec": {"interfacePrefix": "tap,veth"}});
    live.put(&k, decode(&k, v));
    assert_eq!(live.ir().workload_prefixes, vec!["tap", "veth"]);
    live.delete(&k, input_kind(&k).unwrap());
    assert_eq!(live.ir().workload_prefixes, vec!["cali"]);
}

/// The live model's own share of "one more policy" in the programming benchmark's setting
/// (1,000 local endpoints in 50 apps, 500 NetworkPolicies each selecting one app): the time of
/// `put` and `delete` of a 501st policy, median of 15 (no nftables: the model and IR only).
/// Run with `cargo test --release -p margay-felix --lib model_update -- --ignored --nocapture`.
#[test]
#[ignore = "a benchmark: prints timings"]
fn model_update_of_one_policy_among_500() {
    let mut live = LivePolicy::new(NODE);
    let app = |i: usize| format!("app{}", i % 50);
    for i in 0..1000 {
        let n = format!("{NODE}-k8s-pod{i}-eth0");
        let k = key("workloadendpoints", Some("default"), &n);
        let v = json!({
            "apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
            "metadata": {"name": n, "namespace": "default", "labels": {"app": app(i)}},
            "spec": {"node": NODE, "orchestrator": "k8s", "pod": format!("pod{i}"),
                     "endpoint": "eth0", "interfaceName": format!("cali{i}"),
                     "ipNetworks": [format!("10.1.{}.{}/32", i / 250, i % 250 + 1)]},
        });
        live.put(&k, decode(&k, v));
    }
    let policy = |p: usize| {
        let k = key("networkpolicies", Some("default"), &format!("p{p:04}"));
        let v = json!({
            "apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy",
            "metadata": {"name": format!("p{p:04}"), "namespace": "default"},
            "spec": {"selector": format!("app == '{}'", app(p)), "types": ["Ingress"],
                     "ingress": [{"action": "Allow", "protocol": "TCP",
                                  "source": {"selector": format!("app == '{}'", app(p + 1))},
                                  "destination": {"ports": [8000 + p]}}]},
        });
        (k, serde_json::to_vec(&v).unwrap())
    };
    // As felix's watch applies an event: decode the stored bytes, then update the model.
    let put = |live: &mut LivePolicy, k: &str, bytes: &[u8]| {
        let input = margay_datastore::policy::load::decode_input(k, bytes, 1);
        live.put(k, input.expect("a model input").expect("decodes"));
    };
    for p in 0..500 {
        let (k, v) = policy(p);
        put(&mut live, &k, &v);
    }
    let (mut puts, mut deletes) = (Vec::new(), Vec::new());
    for round in 0..15 {
        let (k, v) = policy(500 + round);
        let t = std::time::Instant::now();
        put(&mut live, &k, &v);
        puts.push(t.elapsed());
        assert!(
            live.ir()
                .policies
                .contains_key(&format!("default/p{:04}", 500 + round))
        );
        let t = std::time::Instant::now();
        live.delete(&k, input_kind(&k).unwrap());
        deletes.push(t.elapsed());
    }
    puts.sort();
    deletes.sort();
    eprintln!(
        "one more policy: model update median {:?} (max {:?}); its deletion {:?} (max {:?})",
        puts[7], puts[14], deletes[7], deletes[14]
    );
}
