//! The programming benchmark of BENCHMARKS.md (run by bench/policy-programming.sh, ignored in
//! normal test runs): a node namespace with 1,000 endpoints and 500 policies in felix's policy
//! table; then one more policy, one new pod, one label change, each applied as felix applies it
//! (re-render what the change touched, diff those names, one transaction through felix's
//! long-lived libnftables context), against loading the same final table from scratch with
//! `nft -f` (and with libnftables in-process). "Warm": felix alone wrote since its last change;
//! "cold": another process rewrote the table since, so libnftables re-reads the ruleset first.
//! Times are wall clock, the median of 7 runs each.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use margay_felix::nat::Nft;
use margay_felix::policy::ir::*;
use margay_felix::policy::{PolicyKeeper, Rendered, render, script};
use margay_lab::Lab;

const ENDPOINTS: usize = 1000;
const POLICIES: usize = 500;
const APPS: usize = 50;

fn ip(i: usize) -> ipnet::IpNet {
    format!("10.70.{}.{}/32", i / 250, i % 250 + 1)
        .parse()
        .unwrap()
}

fn policy(p: usize) -> PolicyRules {
    let mut r = Rule::any(Action::Allow);
    r.protocol = Some(6);
    r.source.sets = vec![format!("sel:app{}", (p + 1) % APPS)];
    r.destination.ports = vec![PortRange::one(8000 + p as u16)];
    PolicyRules {
        ingress: Some(vec![r]),
        egress: None,
    }
}

/// The IR: endpoint i has label app{i % 50}; policy p selects app{p % 50}.
fn build(endpoints: usize, policies: usize, labels: &dyn Fn(usize) -> usize) -> PolicyIr {
    let mut ir = PolicyIr::default();
    for p in 0..policies {
        ir.policies.insert(format!("default/p{p:04}"), policy(p));
    }
    for a in 0..APPS {
        ir.addr_sets.insert(format!("sel:app{a}"), BTreeSet::new());
    }
    for i in 0..endpoints {
        let app = labels(i);
        ir.addr_sets
            .get_mut(&format!("sel:app{app}"))
            .unwrap()
            .insert(ip(i));
        let selecting: Vec<String> = (0..policies)
            .filter(|p| p % APPS == app)
            .map(|p| format!("default/p{p:04}"))
            .collect();
        let tiers = if selecting.is_empty() {
            vec![]
        } else {
            vec![TierSeq {
                tier: "default".into(),
                policies: selecting,
                end: TierEnd::Deny,
            }]
        };
        ir.endpoints.insert(
            format!("cali{i:011}"),
            EndpointPolicy {
                ingress: tiers,
                egress: vec![],
            },
        );
    }
    ir
}

use common::{median, ms, nft_file};

#[test]
#[ignore = "benchmark: run by bench/policy-programming.sh"]
fn programming_1000_endpoints_500_policies() {
    let lab = Lab::new("policy_bench").unwrap();
    let node = lab.netns("node").unwrap();
    let nft = Nft::in_netns(node.name());
    let base_labels = |i: usize| i % APPS;
    let base = build(ENDPOINTS, POLICIES, &base_labels);
    let cases: Vec<(&str, PolicyIr)> = vec![
        (
            "one more policy",
            build(ENDPOINTS, POLICIES + 1, &base_labels),
        ),
        ("one new pod", build(ENDPOINTS + 1, POLICIES, &base_labels)),
        (
            "one label change",
            build(ENDPOINTS, POLICIES, &|i| if i == 7 { 8 } else { i % APPS }),
        ),
    ];
    let scratch = std::env::temp_dir().join(format!("{}-tables", lab.tag()));
    std::fs::create_dir_all(&scratch).unwrap();
    let base_file = scratch.join("base.nft");
    std::fs::write(&base_file, script::full(&render(&base))).unwrap();
    let other = margay_felix::nftlib::NftLib::open(Some(node.name())).unwrap();
    println!(
        "| change | incremental, warm (felix alone writes) | of which re-rendering | incremental, cold (after another writer) | script lines | full load `nft -f` | full load, libnftables in-process | ratio warm / `nft -f` | ratio cold / `nft -f` |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (name, after) in &cases {
        let mut keeper = PolicyKeeper::new(nft.clone());
        assert!(
            keeper.uses_library(),
            "libnftables must load for this bench"
        );
        let mut rendered = Rendered::new(base.clone());
        keeper.apply(rendered.table()).unwrap();
        let after_file = scratch.join("after.nft");
        let after_text = script::full(&render(after));
        std::fs::write(&after_file, &after_text).unwrap();
        let (mut warm, mut cold, mut full, mut full_lib) = (vec![], vec![], vec![], vec![]);
        let mut lines = 0;
        let mut renders = vec![];
        // One change from base to `after`, applied as felix applies it; then back to base.
        let mut change = |keeper: &mut PolicyKeeper, rendered: &mut Rendered| {
            let (fwd, back) = (after.clone(), base.clone());
            let t0 = Instant::now();
            let touched = rendered.update(fwd);
            let t1 = t0.elapsed();
            let r = keeper.apply_touched(rendered.table(), &touched).unwrap();
            let took = t0.elapsed();
            renders.push(t1);
            lines = r.script_lines;
            let touched = rendered.update(back);
            keeper.apply_touched(rendered.table(), &touched).unwrap();
            took
        };
        for _ in 0..7 {
            warm.push(change(&mut keeper, &mut rendered));
            full.push(nft_file(node.name(), &after_file));
            let t0 = Instant::now();
            other.apply(&after_text).unwrap();
            full_lib.push(t0.elapsed());
            // Another writer puts the base table back: felix's cache is stale now.
            nft_file(node.name(), &base_file);
            cold.push(change(&mut keeper, &mut rendered));
        }
        let (w, c, f, fl) = (median(warm), median(cold), median(full), median(full_lib));
        println!(
            "| {name} | {} | {} | {} | {lines} | {} | {} | {:.3} | {:.3} |",
            ms(w),
            ms(median(std::mem::take(&mut renders))),
            ms(c),
            ms(f),
            ms(fl),
            w.as_secs_f64() / f.as_secs_f64(),
            c.as_secs_f64() / f.as_secs_f64()
        );
        // felix's view and the kernel's agree after all of it.
        assert!(!keeper.resync(rendered.table()).unwrap().drift);
    }
    std::fs::remove_dir_all(&scratch).unwrap();
}

mod common;

/// The data-path figures: two pods on one node, iperf3 TCP throughput, a 1-byte TCP
/// request/response rate on one connection and with a new connection for each exchange, with
/// no policy and with 1,000 policies selecting other endpoints plus 100 selecting these two
/// (99 whose rules do not match, then the allow); `ROUNDS` interleaved rounds (default 6).
#[test]
#[ignore = "benchmark: run by bench/policy-datapath.sh"]
fn datapath_with_and_without_1100_policies() {
    let lab = Lab::new("policy_dp_bench").unwrap();
    let node = lab.netns("node").unwrap();
    node.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"])
        .unwrap();
    common::veth(&node, "up0", "up0p", None);
    node.ip(&["route", "add", "default", "dev", "up0"]).unwrap();
    let pods: Vec<_> = (0..2)
        .map(|i| lab.netns(&format!("p{i}")).unwrap())
        .collect();
    let mut ifaces = Vec::new();
    for (i, p) in pods.iter().enumerate() {
        let cali = format!("cali{}{i:07}", lab.tag());
        let ip = format!("10.71.0.{}", i + 1);
        common::wire_pod(&node, p, &cali, &ip);
        for s in [
            format!("net.ipv4.conf.{cali}.proxy_arp=1"),
            format!("net.ipv4.neigh.{cali}.proxy_delay=0"),
        ] {
            node.exec("sysctl", &["-qw", &s]).unwrap();
        }
        node.ip(&["route", "add", &format!("{ip}/32"), "dev", &cali])
            .unwrap();
        // Many short connections from the client: reuse TIME_WAIT ports, use the whole range.
        for s in [
            "net.ipv4.tcp_tw_reuse=1",
            "net.ipv4.ip_local_port_range=1024 65000",
        ] {
            p.exec("sysctl", &["-qw", s]).unwrap();
        }
        ifaces.push(cali);
    }
    let mut keeper = PolicyKeeper::new(Nft::in_netns(node.name()));
    let open = {
        let mut ir = PolicyIr::default();
        for c in &ifaces {
            ir.endpoints.insert(c.clone(), EndpointPolicy::default());
        }
        ir
    };
    let mut loaded = open.clone();
    loaded.addr_sets.insert(
        "sel:bench".into(),
        [
            "10.71.0.1/32".parse().unwrap(),
            "10.71.0.2/32".parse().unwrap(),
        ]
        .into(),
    );
    for k in 0..APPS {
        loaded.addr_sets.insert(
            format!("sel:app{k}"),
            (0..20).map(|j| ip(k * 20 + j)).collect(),
        );
    }
    let mut selecting = Vec::new();
    for p in 0..1100 {
        let key = format!("default/p{p:04}");
        let mut r = Rule::any(Action::Allow);
        r.protocol = Some(6);
        r.source.sets = vec![format!("sel:app{}", p % APPS)];
        r.destination.ports = vec![PortRange::one(7000 + (p % 1000) as u16)];
        loaded.policies.insert(
            key.clone(),
            PolicyRules {
                ingress: Some(vec![r]),
                egress: Some(vec![]),
            },
        );
        if p >= 1000 {
            selecting.push(key);
        }
    }
    // The last of the 100 allows the two pods to each other.
    let mut allow = Rule::any(Action::Allow);
    allow.source.sets = vec!["sel:bench".into()];
    let last = selecting.last().unwrap().clone();
    loaded.policies.get_mut(&last).unwrap().ingress = Some(vec![allow.clone()]);
    loaded.policies.get_mut(&last).unwrap().egress = Some(vec![Rule::any(Action::Allow)]);
    let tiers = vec![TierSeq {
        tier: "default".into(),
        policies: selecting,
        end: TierEnd::Deny,
    }];
    for c in &ifaces {
        loaded.endpoints.insert(
            c.clone(),
            EndpointPolicy {
                ingress: tiers.clone(),
                egress: tiers.clone(),
            },
        );
    }
    // The other 1,000 policies select 1,000 other (absent) endpoints of this node.
    for e in 0..1000 {
        let pol = format!("default/p{:04}", e);
        loaded.endpoints.insert(
            format!("calo{e:011}"),
            EndpointPolicy {
                ingress: vec![TierSeq {
                    tier: "default".into(),
                    policies: vec![pol],
                    end: TierEnd::Deny,
                }],
                egress: vec![],
            },
        );
    }
    let server = pods[1].name().to_string();
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(6);
    println!(
        "| round | policy | iperf3 TCP throughput | TCP request/response (1 byte, 1 connection) | TCP connect + request/response (new connection each) |"
    );
    println!("|---|---|---|---|---|");
    let mut figures: [Vec<[f64; 3]>; 2] = [vec![], vec![]];
    for round in 0..rounds {
        // Interleaved, in ABBA order, so a drift of the machine's load hits both alike.
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for which in order {
            let (name, ir) = [("none", &open), ("1,000 + 100", &loaded)][which];
            keeper.apply(&render(ir)).unwrap();
            let f = [
                iperf3_gbps(&server, &pods[0]),
                request_response(&server, pods[0].name(), false),
                request_response(&server, pods[0].name(), true),
            ];
            println!(
                "| {} | {name} | {:.2} Gbit/s | {:.0} /s | {:.0} /s |",
                round + 1,
                f[0],
                f[1],
                f[2]
            );
            figures[which].push(f);
        }
    }
    let column = |which: usize, k: usize| -> Vec<f64> {
        let mut v: Vec<f64> = figures[which].iter().map(|f| f[k]).collect();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v
    };
    println!();
    println!(
        "| figure | no policy: median (min–max) | 1,000 + 100: median (min–max) | ratio of medians | median of per-round ratios |"
    );
    println!("|---|---|---|---|---|");
    for (k, what) in [
        "iperf3 TCP throughput (Gbit/s)",
        "TCP request/response (/s)",
        "TCP connect + request/response (/s)",
    ]
    .iter()
    .enumerate()
    {
        let (a, b) = (column(0, k), column(1, k));
        let med = |v: &[f64]| v[v.len() / 2];
        let p = if k == 0 { 2 } else { 0 };
        let fmt = |v: &[f64]| format!("{:.p$} ({:.p$}–{:.p$})", med(v), v[0], v[v.len() - 1]);
        // Each round measured both: its own ratio is the least disturbed by the load's drift.
        let mut paired: Vec<f64> = figures[0]
            .iter()
            .zip(&figures[1])
            .map(|(none, with)| with[k] / none[k])
            .collect();
        paired.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!(
            "| {what} | {} | {} | {:.3} | {:.3} |",
            fmt(&a),
            fmt(&b),
            med(&b) / med(&a),
            med(&paired)
        );
    }
}

/// iperf3 TCP for 3 s from `client` to the server pod (10.71.0.2).
fn iperf3_gbps(server: &str, client: &margay_lab::Netns) -> f64 {
    let mut srv = std::process::Command::new("ip")
        .args(["netns", "exec", server, "iperf3", "-s", "-1"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let out = client
        .exec("iperf3", &["-c", "10.71.0.2", "-t", "3", "-J"])
        .unwrap();
    let _ = srv.wait();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap()
        / 1e9
}

/// 1-byte TCP ping-pong for 2 s: on one connection, or (`fresh`) a new connection for each
/// exchange (every SYN walks the policy chains; netperf's TCP_CRR).
fn request_response(server: &str, client: &str, fresh: bool) -> f64 {
    use margay_lab::flows::in_netns;
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let done = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let stop = done.clone();
    let echo = std::thread::spawn({
        let server = server.to_string();
        move || {
            in_netns(&server, move || {
                let l = TcpListener::bind("0.0.0.0:5301").unwrap();
                ready_tx.send(()).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    let Ok((mut s, _)) = l.accept() else { break };
                    s.set_nodelay(true).unwrap();
                    let mut b = [0u8; 1];
                    while s.read_exact(&mut b).is_ok() {
                        if s.write_all(&b).is_err() {
                            break;
                        }
                    }
                }
            })
            .unwrap()
        }
    });
    ready.recv().unwrap();
    let rate = in_netns(client, move || {
        let to = SocketAddr::from(([10, 71, 0, 2], 5301));
        let mut s = TcpStream::connect(to).unwrap();
        s.set_nodelay(true).unwrap();
        let mut b = [0u8; 1];
        let (t0, mut n) = (Instant::now(), 0u64);
        while t0.elapsed() < Duration::from_secs(2) {
            if fresh && n > 0 {
                s = TcpStream::connect(to).unwrap();
                s.set_nodelay(true).unwrap();
            }
            s.write_all(b"x").unwrap();
            s.read_exact(&mut b).unwrap();
            n += 1;
        }
        n as f64 / t0.elapsed().as_secs_f64()
    })
    .unwrap();
    done.store(true, Ordering::Relaxed);
    // Wake the listener's accept once more so it sees `done`.
    in_netns(client, || {
        let _ = TcpStream::connect(SocketAddr::from(([10, 71, 0, 2], 5301)));
    })
    .unwrap();
    echo.join().unwrap();
    rate
}
