//! Policy in force, end to end: margay-felix running as a process in cluster mode (networking
//! backend `none`, so no bgpd beside it) in a node namespace, real etcd, a veth per pod; changes
//! written to etcd with the datastore's client; the kernel's commits observed with `nft monitor`
//! in the node's namespace (each transaction's events, then `# new generation N`, read from a
//! pipe and time-stamped as they arrive).
//!
//! - `each_change_is_one_commit_touching_only_its_own` (100 endpoints, 50 policies): one more
//!   policy, one new pod, one label change and their reverts are each in force in the kernel
//!   in one transaction, and that transaction touches only what the change owns: a policy adds
//!   or removes its own chains and the sequence chains of the endpoints it selects, and rewrites
//!   only those endpoints' map entries; a pod or a label change adds or removes set elements and
//!   map entries of that one endpoint, no chain and no rule.
//! - `in_force_1000_endpoints_500_policies` (ignored; bench/policy-in-force.sh): the time from
//!   the etcd write returning to that commit, N trials each, against `nft -f` loading the same
//!   final table (felix's table as the kernel lists it) from scratch in another namespace.

mod common;
use common::{remove, write};

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use margay_datastore::Store;
use margay_felix::nftlib::NftLib;
use margay_felix::policy::render::{MAP_IN, MAP_OUT, TABLE, TABLE_FAMILY};
use margay_lab::{Etcd, Felix, FelixArgs, Lab, LabSwitch, Netns};
use serde_json::{Value, json};

const NODE: &str = "n1";
/// How long a change may take to show up before the test fails.
const WAIT: Duration = Duration::from_secs(20);

// ---- the node --------------------------------------------------------------------------------

/// The sizes of one run: endpoints on the node, policies, and distinct `app` labels (each
/// policy selects one app and allows from the next, so every endpoint is selected by
/// `policies / apps` policies).
#[derive(Debug, Clone, Copy)]
struct Size {
    endpoints: usize,
    policies: usize,
    apps: usize,
}

impl Size {
    fn app(&self, i: usize) -> String {
        format!("app{}", i % self.apps)
    }

    /// Policy `p`: selects `app(p)`, allows TCP to port 8000 + p from `app(p + 1)`.
    fn policy(&self, p: usize) -> Value {
        json!({
            "apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy",
            "metadata": {"name": format!("p{p:04}"), "namespace": "default"},
            "spec": {"selector": format!("app == '{}'", self.app(p)), "types": ["Ingress"],
                     "ingress": [{"action": "Allow", "protocol": "TCP",
                                  "source": {"selector": format!("app == '{}'", self.app(p + 1))},
                                  "destination": {"ports": [8000 + p]}}]},
        })
    }

    /// Endpoints (by index, of `0..=endpoints`) whose app is `app`.
    fn selected(&self, app: &str) -> BTreeSet<String> {
        (0..self.endpoints)
            .filter(|i| self.app(*i) == app)
            .map(ifname)
            .collect()
    }
}

fn ifname(i: usize) -> String {
    format!("cali{i:011}")
}

fn addr(i: usize) -> String {
    format!("10.70.{}.{}", i / 250, i % 250 + 1)
}

fn wep(i: usize, app: &str) -> Value {
    json!({
        "apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
        "metadata": {"name": format!("{NODE}-k8s-pod{i}-eth0"), "namespace": "default",
                     "labels": {"app": app}},
        "spec": {"node": NODE, "orchestrator": "k8s", "pod": format!("pod{i}"),
                 "endpoint": "eth0", "interfaceName": ifname(i),
                 "ipNetworks": [format!("{}/32", addr(i))]},
    })
}

/// etcd on a switch; a node namespace with a veth per pod (and one for the pod still to come)
/// and felix running in it; a second namespace for the full loads.
struct Bed {
    lab: Lab,
    _sw: LabSwitch,
    etcd: Etcd,
    node: Netns,
    full: Netns,
    felix: Option<Felix>,
}

impl Bed {
    fn new(name: &str, size: Size) -> Bed {
        let lab = Lab::new(name).unwrap();
        let sw = lab.switch("sw").unwrap();
        let etcd = Etcd::on_switch(&lab, &sw).unwrap();
        let node = lab.netns("n1").unwrap();
        let node_addr = sw.attach(&node).unwrap();
        let full = lab.netns("full").unwrap();
        // The pods' host sides (container sides stay in the node namespace: only the names and
        // the links' existence matter to felix's table and routes).
        let mut batch = String::new();
        for i in 0..=size.endpoints {
            batch += &format!(
                "link add {} type veth peer name pe{i:011}\nlink set {} up\n",
                ifname(i),
                ifname(i)
            );
        }
        let file = lab.dir().join("veths.batch");
        std::fs::write(&file, batch).unwrap();
        node.ip(&["-batch", file.to_str().unwrap()]).unwrap();
        let mut bed = Bed {
            lab,
            _sw: sw,
            etcd,
            node,
            full,
            felix: None,
        };
        // The model before felix starts: its first list takes it in one read.
        let t0 = Instant::now();
        bed.with_store(move |s| async move {
            for i in 0..size.endpoints {
                write(&s, wep(i, &size.app(i))).await;
            }
            for p in 0..size.policies {
                write(&s, size.policy(p)).await;
            }
        });
        let written = t0.elapsed();
        let t0 = Instant::now();
        let mut args = FelixArgs::new(
            NODE,
            &bed.etcd.endpoint(),
            &bed.lab.dir().join("bgpd-unused.sock"),
            &bed.lab.dir().join("felix.sock"),
        );
        args.no_bgp = Some(("none".into(), node_addr.v4.to_string()));
        // felix's own default: no route resync inside a trial window
        args.resync_interval = 30;
        bed.felix = Some(Felix::start_cluster(&bed.lab, &bed.node, "felix-n1", args).unwrap());
        println!(
            "base: {} endpoints and {} policies written in {:.1} s; felix (pid {}) ready (table programmed) in {:.1} s",
            size.endpoints,
            size.policies,
            written.as_secs_f64(),
            bed.felix.as_ref().unwrap().pid(),
            t0.elapsed().as_secs_f64()
        );
        bed
    }

    /// Runs `f` on a thread inside the node's namespace with a datastore client.
    fn with_store<T, F, Fut>(&self, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(Store) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T>,
    {
        common::store_in(&self.node, &self.etcd.endpoint(), f)
    }

    /// felix's stderr (its log).
    fn felix_log(&self) -> std::path::PathBuf {
        self.lab.dir().join("felix-n1.stderr")
    }
}

// ---- watching the kernel's commits ----------------------------------------------------------------

/// One committed transaction as `nft monitor` reports it: when its `# new generation` line
/// arrived, and its events in felix's table.
#[derive(Debug, Clone)]
struct Commit {
    at: Instant,
    generation: String,
    events: Vec<String>,
}

/// `nft monitor` running in a namespace, its lines read on a thread of their own.
struct Monitor {
    child: Child,
    lines: mpsc::Receiver<(Instant, String)>,
    pending: Vec<String>,
}

impl Monitor {
    fn start(ns: &Netns) -> Monitor {
        let mut child = ns
            .command("nft")
            .arg("monitor")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("nft monitor");
        let out = child.stdout.take().unwrap();
        let lines = margay_lab::process::stamped_lines(out);
        Monitor {
            child,
            lines,
            pending: Vec::new(),
        }
    }

    /// The next commit (of any table) that arrives within `wait`.
    fn next(&mut self, wait: Duration) -> Option<Commit> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let (at, line) = match self.lines.recv_timeout(left) {
                Ok(x) => x,
                Err(mpsc::RecvTimeoutError::Timeout) => return None,
                Err(mpsc::RecvTimeoutError::Disconnected) => panic!("nft monitor exited"),
            };
            if let Some(g) = line.strip_prefix("# new generation ") {
                let events = std::mem::take(&mut self.pending);
                return Some(Commit {
                    at,
                    generation: g.to_string(),
                    events,
                });
            }
            self.pending.push(line);
        }
    }

    /// The next commit that touches felix's table, within `wait`.
    fn next_policy(&mut self, wait: Duration) -> Option<Commit> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let mut c = self.next(left)?;
            c.events.retain(|e| in_table(e));
            if !c.events.is_empty() {
                return Some(c);
            }
        }
    }

    /// The commits touching felix's table that arrive until none has for `quiet`.
    fn quiet(&mut self, quiet: Duration) -> Vec<Commit> {
        let mut out = Vec::new();
        while let Some(c) = self.next_policy(quiet) {
            out.push(c);
        }
        out
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The IPv4 addresses an element covers: `A`, `A/LEN` or `A-B` (the address part of a
/// named-port element).
fn addresses(elem: &str) -> Vec<u32> {
    let first = elem.split_whitespace().next().unwrap_or("");
    let ip = |s: &str| -> u32 { s.parse::<std::net::Ipv4Addr>().expect(elem).into() };
    let (lo, hi) = if let Some((a, len)) = first.split_once('/') {
        let len: u32 = len.parse().expect(elem);
        assert!(
            len >= 16,
            "an element wider than the test's addresses: {elem}"
        );
        let a = ip(a);
        (a, a + ((1u32 << (32 - len)) - 1))
    } else if let Some((a, b)) = first.split_once('-') {
        (ip(a), ip(b))
    } else {
        (ip(first), ip(first))
    };
    (lo..=hi).collect()
}

fn in_table(event: &str) -> bool {
    event.split_whitespace().nth(3).is_some_and(|t| t == TABLE)
        && event.split_whitespace().nth(2) == Some(TABLE_FAMILY)
}

/// How late `nft monitor` reports a commit: transactions on a table of the test's own through a
/// libnftables context in the namespace, from the library's return (the kernel has committed)
/// to the `# new generation` line's arrival. Returns the lags, sorted.
fn monitor_lag(ns: &Netns, mon: &mut Monitor, n: usize) -> Vec<Duration> {
    let lib = NftLib::open(Some(ns.name())).expect("libnftables in the node namespace");
    lib.apply("add table inet margay-probe\nadd set inet margay-probe s { type ipv4_addr; }\n")
        .unwrap();
    // `nft monitor` subscribes after it starts: probe until it reports one, then drain.
    let t0 = Instant::now();
    let mut k = 0;
    loop {
        k += 1;
        lib.apply(&format!(
            "add element inet margay-probe s {{ 10.2.{}.{} }}\n",
            k / 250,
            k % 250
        ))
        .unwrap();
        if mon.next(Duration::from_millis(200)).is_some() {
            break;
        }
        assert!(t0.elapsed() < WAIT, "nft monitor reports no commit");
    }
    while mon.next(Duration::from_millis(200)).is_some() {}
    let mut lags = Vec::new();
    for i in 0..n {
        lib.apply(&format!(
            "add element inet margay-probe s {{ 10.1.{}.{} }}\n",
            i / 250,
            i % 250 + 1
        ))
        .unwrap();
        let done = Instant::now();
        // felix may commit on its own meanwhile (its first changes after start): skip those.
        let c = loop {
            let c = mon.next(WAIT).expect("the probe's commit");
            if c.events.iter().any(|e| e.contains("margay-probe")) {
                break c;
            }
            assert!(
                done.elapsed() < WAIT,
                "no commit of the probe's among {c:?}"
            );
        };
        lags.push(c.at.saturating_duration_since(done));
        std::thread::sleep(Duration::from_millis(5));
    }
    lib.apply("delete table inet margay-probe\n").unwrap();
    mon.next(WAIT).expect("the probe table's removal");
    lags.sort();
    lags
}

// ---- what one commit did ----------------------------------------------------------------------

/// A commit's events in felix's table, by kind.
#[derive(Debug, Default)]
struct Touched {
    chains_added: BTreeSet<String>,
    chains_deleted: BTreeSet<String>,
    /// Chains whose rules were added or deleted.
    rules: BTreeSet<String>,
    /// Map (`wl-in`, `wl-out`) entries added or deleted: the interfaces.
    map_keys: BTreeMap<String, BTreeSet<String>>,
    /// Address / port set elements: (set, `add` or `delete`) → elements.
    set_elements: BTreeMap<(String, String), BTreeSet<String>>,
    other: Vec<String>,
}

impl Touched {
    fn of(c: &Commit) -> Touched {
        let mut t = Touched::default();
        for e in &c.events {
            let w: Vec<&str> = e.split_whitespace().collect();
            let (op, kind, name) = (w[0], w[1], w.get(4).copied().unwrap_or(""));
            match (op, kind) {
                ("add", "chain") => {
                    t.chains_added.insert(name.into());
                }
                ("delete", "chain") => {
                    t.chains_deleted.insert(name.into());
                }
                ("add" | "delete", "rule") => {
                    t.rules.insert(name.into());
                }
                ("add" | "delete", "element") => {
                    let body = e
                        .split_once('{')
                        .and_then(|(_, b)| b.rsplit_once('}'))
                        .map_or("", |(b, _)| b);
                    let items = body.split(',').map(|x| x.trim().to_string());
                    if name == MAP_IN || name == MAP_OUT {
                        let keys = items.map(|x| {
                            x.split(':')
                                .next()
                                .unwrap()
                                .trim()
                                .trim_matches('"')
                                .to_string()
                        });
                        t.map_keys.entry(name.into()).or_default().extend(keys);
                    } else {
                        t.set_elements
                            .entry((name.into(), op.into()))
                            .or_default()
                            .extend(items);
                    }
                }
                _ => t.other.push(e.clone()),
            }
        }
        t
    }

    /// Every interface whose map entry changed.
    fn interfaces(&self) -> BTreeSet<String> {
        self.map_keys.values().flatten().cloned().collect()
    }

    /// Per set, the addresses it gained and lost (felix merges adjacent addresses into
    /// prefixes, so a pod joining a set can replace its neighbour's `/32` with a `/31`: the net
    /// change is what counts).
    fn net_addresses(&self) -> BTreeMap<String, (BTreeSet<u32>, BTreeSet<u32>)> {
        let mut per: BTreeMap<String, (BTreeSet<u32>, BTreeSet<u32>)> = BTreeMap::new();
        for ((set, op), elems) in &self.set_elements {
            let e = per.entry(set.clone()).or_default();
            let side = if op == "add" { &mut e.0 } else { &mut e.1 };
            for x in elems {
                side.extend(addresses(x));
            }
        }
        per.into_iter()
            .map(|(set, (a, d))| {
                let gained = a.difference(&d).copied().collect();
                let lost = d.difference(&a).copied().collect();
                (set, (gained, lost))
            })
            .filter(|(_, (g, l)): &(String, (BTreeSet<u32>, BTreeSet<u32>))| {
                !g.is_empty() || !l.is_empty()
            })
            .collect()
    }

    /// Every address some set gained or lost.
    fn elements(&self) -> BTreeSet<u32> {
        self.net_addresses()
            .values()
            .flat_map(|(g, l)| g.iter().chain(l))
            .copied()
            .collect()
    }

    fn rules_only_in_chains_made_or_removed(&self, own: &str) {
        for c in &self.rules {
            assert!(
                self.chains_added.contains(c) || self.chains_deleted.contains(c) || c.contains(own),
                "rules of chain {c} rewritten, which neither came nor went with this change: {self:#?}"
            );
        }
    }
}

/// A policy's commit: its own chains, the sequence chains of the endpoints it selects, and those
/// endpoints' `wl-in` entries; no set element, no other policy's chain.
fn check_policy_commit(t: &Touched, policy: &str, selected: &BTreeSet<String>, added: bool) {
    let own: BTreeSet<&String> = t.chains_added.iter().chain(&t.chains_deleted).collect();
    for c in &own {
        assert!(
            c.starts_with("s-") || (c.starts_with("p-") && c.contains(policy)),
            "chain {c} came or went with policy {policy}: {t:#?}"
        );
    }
    let mine = if added {
        &t.chains_added
    } else {
        &t.chains_deleted
    };
    assert!(
        mine.iter()
            .any(|c| c.starts_with("p-in-") && c.contains(policy)),
        "policy {policy}'s ingress chain not {}: {t:#?}",
        if added { "added" } else { "deleted" }
    );
    t.rules_only_in_chains_made_or_removed(policy);
    assert_eq!(&t.interfaces(), selected, "map entries rewritten: {t:#?}");
    assert!(!t.map_keys.contains_key(MAP_OUT), "egress entries: {t:#?}");
    assert!(t.set_elements.is_empty(), "set elements: {t:#?}");
    assert!(t.other.is_empty(), "other events: {t:#?}");
}

/// A pod's or a label's commit: only that endpoint's map entries and its address in sets; no
/// chain, no rule.
fn check_endpoint_commit(t: &Touched, i: usize) {
    assert!(
        t.chains_added.is_empty() && t.chains_deleted.is_empty() && t.rules.is_empty(),
        "chains or rules rewritten for one endpoint: {t:#?}"
    );
    assert!(
        t.interfaces().iter().all(|x| *x == ifname(i)),
        "other endpoints' map entries: {t:#?}"
    );
    let own: u32 = addr(i).parse::<std::net::Ipv4Addr>().unwrap().into();
    assert!(
        t.elements().iter().all(|x| *x == own),
        "other addresses in sets: {t:#?}"
    );
    assert!(t.other.is_empty(), "other events: {t:#?}");
}

// ---- the changes --------------------------------------------------------------------------

/// What a trial writes: forward, then back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    PolicyAdded,
    PolicyDeleted,
    PodAdded,
    PodDeleted,
    Relabelled,
    RelabelledBack,
}

impl Change {
    fn name(self) -> &'static str {
        match self {
            Change::PolicyAdded => "one more policy (NetworkPolicy written)",
            Change::PolicyDeleted => "that policy deleted",
            Change::PodAdded => "one new pod (WorkloadEndpoint written, veth present)",
            Change::PodDeleted => "that pod's WorkloadEndpoint deleted",
            Change::Relabelled => "one label change (app7 → app8: two selectors' sets change)",
            Change::RelabelledBack => "that label changed back",
        }
    }

    /// The datastore write.
    async fn write(self, s: &Store, size: Size) {
        let extra_pod = size.endpoints;
        match self {
            Change::PolicyAdded => write(s, size.policy(size.policies)).await,
            Change::PolicyDeleted => remove(s, size.policy(size.policies)).await,
            Change::PodAdded => write(s, wep(extra_pod, &size.app(extra_pod))).await,
            Change::PodDeleted => remove(s, wep(extra_pod, &size.app(extra_pod))).await,
            Change::Relabelled => write(s, wep(7, &size.app(8))).await,
            Change::RelabelledBack => write(s, wep(7, &size.app(7))).await,
        }
    }

    /// Checks that the commit did this change and nothing else.
    fn check(self, t: &Touched, size: Size) {
        let policy = format!("p{:04}", size.policies);
        let selected = size.selected(&size.app(size.policies));
        match self {
            Change::PolicyAdded => check_policy_commit(t, &policy, &selected, true),
            Change::PolicyDeleted => check_policy_commit(t, &policy, &selected, false),
            Change::PodAdded | Change::PodDeleted => {
                let i = size.endpoints;
                check_endpoint_commit(t, i);
                for m in [MAP_IN, MAP_OUT] {
                    assert_eq!(
                        t.map_keys.get(m),
                        Some(&BTreeSet::from([ifname(i)])),
                        "the new pod's {m} entry: {t:#?}"
                    );
                }
                // Its address into (out of) the sets of `app == '<its app>'` (a source
                // selector), and no set loses (gains) anything.
                let net = t.net_addresses();
                let added = self == Change::PodAdded;
                assert!(
                    !net.is_empty()
                        && net
                            .values()
                            .all(|(g, l)| { if added { l.is_empty() } else { g.is_empty() } }),
                    "the pod's address not {} a set: {t:#?}",
                    if added { "added to" } else { "removed from" }
                );
            }
            Change::Relabelled | Change::RelabelledBack => {
                check_endpoint_commit(t, 7);
                assert_eq!(
                    t.interfaces(),
                    BTreeSet::from([ifname(7)]),
                    "its map entry: {t:#?}"
                );
                let net = t.net_addresses();
                let gained = net.values().filter(|(g, _)| !g.is_empty()).count();
                let lost = net.values().filter(|(_, l)| !l.is_empty()).count();
                assert!(
                    gained == 1 && lost == 1 && net.len() == 2,
                    "out of one selector's set and into another's: {t:#?}"
                );
            }
        }
    }
}

/// One trial's outcome.
struct Trial {
    /// From the etcd write returning to the commit's `# new generation` line.
    in_force: Duration,
    /// The write itself (the client's round trips to etcd).
    write: Duration,
    commit: Commit,
    /// Commits to felix's table after the first (0: the change went in as one transaction).
    later: usize,
}

/// Writes `change` and waits for the commit to felix's table; then waits until nothing more
/// commits for `quiet`.
fn trial(bed: &Bed, mon: &mut Monitor, change: Change, size: Size, quiet: Duration) -> Trial {
    let stray = mon.quiet(Duration::from_millis(10));
    assert!(
        stray.is_empty(),
        "commits to felix's table before {}: {stray:#?}",
        change.name()
    );
    let (t0, t1) = bed.with_store(move |s| async move {
        let t0 = Instant::now();
        change.write(&s, size).await;
        (t0, Instant::now())
    });
    let commit = mon
        .next_policy(WAIT)
        .unwrap_or_else(|| panic!("{} not in force within {WAIT:?}", change.name()));
    let later = mon.quiet(quiet).len();
    Trial {
        in_force: commit.at.saturating_duration_since(t1),
        write: t1 - t0,
        commit,
        later,
    }
}

// ---- the functional test ----------------------------------------------------------------------

#[test]
fn each_change_is_one_commit_touching_only_its_own() {
    let size = Size {
        endpoints: 100,
        policies: 50,
        apps: 5,
    };
    let bed = Bed::new("policy_in_force", size);
    let mut mon = Monitor::start(&bed.node);
    monitor_lag(&bed.node, &mut mon, 3);
    for change in [
        Change::PolicyAdded,
        Change::PolicyDeleted,
        Change::PodAdded,
        Change::PodDeleted,
        Change::Relabelled,
        Change::RelabelledBack,
    ] {
        let t = trial(&bed, &mut mon, change, size, Duration::from_millis(500));
        assert_eq!(
            t.later,
            0,
            "{}: more than one transaction to felix's table",
            change.name()
        );
        let touched = Touched::of(&t.commit);
        change.check(&touched, size);
        // The kernel names the committing thread: one of felix's (its libnftables thread).
        let pid = bed.felix.as_ref().unwrap().pid();
        let threads: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert!(
            threads
                .iter()
                .any(|tid| t.commit.generation.contains(&format!("by process {tid} "))),
            "committed by {}, not by felix (pid {pid}, threads {threads:?})",
            t.commit.generation
        );
    }
}

// ---- the benchmark ------------------------------------------------------------------------

fn nearest_rank(sorted: &[Duration], q: f64) -> Duration {
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Field `field` (`ms`, `render_ms`, ...) of felix's "policy table updated" log lines after
/// byte `from` of its log.
fn felix_ms(log: &std::path::Path, from: u64, field: &str) -> Vec<f64> {
    let text = std::fs::read(log).unwrap_or_default();
    let text = String::from_utf8_lossy(&text[(from as usize).min(text.len())..]).to_string();
    let key = format!("{field}=");
    text.lines()
        .filter(|l| l.contains("policy table updated"))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix(key.as_str()))
                .and_then(|v| v.trim_matches('"').parse().ok())
        })
        .collect()
}

/// felix's phases, the fields of its log line: from the watch event to the end of the write
/// (the commit, then the writer's return), of which the live model taking the event in, the
/// settle delay, comparing the model's IR with the rendered one and rendering what
/// differs, handing over to the writer (its thread and lock), a full render (not in steady
/// state), and writing the transaction (script and libnftables).
const PHASES: [&str; 7] = [
    "ms",
    "model_ms",
    "settle_ms",
    "compare_ms",
    "queued_ms",
    "render_ms",
    "write_ms",
];

/// felix's table as the kernel lists it (`nft list table`) in the node namespace, loaded with
/// `nft -f` into the empty `full` namespace; the load's time.
fn full_load(bed: &Bed) -> (Duration, usize) {
    let listing = bed
        .node
        .exec("nft", &["list", "table", TABLE_FAMILY, TABLE])
        .unwrap();
    let path = bed.lab.dir().join("final.nft");
    std::fs::write(&path, &listing).unwrap();
    let _ = bed
        .full
        .exec("nft", &["delete", "table", TABLE_FAMILY, TABLE]);
    let took = common::nft_file(bed.full.name(), &path);
    (took, listing.lines().count())
}

#[test]
#[ignore = "benchmark: run by bench/policy-in-force.sh"]
fn in_force_1000_endpoints_500_policies() {
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let size = Size {
        endpoints: env("ENDPOINTS", 1000),
        policies: env("POLICIES", 500),
        apps: env("APPS", 50),
    };
    let trials = env("TRIALS", 30);
    let bed = Bed::new("policy_in_force_bench", size);
    let mut mon = Monitor::start(&bed.node);
    let lags = monitor_lag(&bed.node, &mut mon, 30);
    println!(
        "detection: `nft monitor` in the node namespace, lines time-stamped on arrival; its lag after a commit (libnftables transaction return → `# new generation` line, 30 probes): median {}, max {}",
        us(lags[lags.len() / 2]),
        us(*lags.last().unwrap())
    );
    let log = bed.felix_log();
    let quiet = Duration::from_millis(50);
    let pairs = [
        (Change::PolicyAdded, Change::PolicyDeleted),
        (Change::PodAdded, Change::PodDeleted),
        (Change::Relabelled, Change::RelabelledBack),
    ];
    let mut rows = Vec::new();
    for (fwd, back) in pairs {
        type Samples = (
            Vec<Duration>,
            Vec<Duration>,
            BTreeMap<&'static str, Vec<f64>>,
            usize,
        );
        let mut samples: BTreeMap<&str, Samples> = BTreeMap::new();
        let mut full = Vec::new();
        let mut listing_lines = 0;
        for n in 0..trials {
            for change in [fwd, back] {
                let from = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
                let t = trial(&bed, &mut mon, change, size, quiet);
                if n == 0 {
                    // Only the first trial of each is checked in full (the test does it at
                    // a smaller size); every trial must be one commit.
                    change.check(&Touched::of(&t.commit), size);
                }
                let e = samples.entry(change.name()).or_default();
                e.0.push(t.in_force);
                e.1.push(t.write);
                for f in PHASES {
                    e.2.entry(f).or_default().extend(felix_ms(&log, from, f));
                }
                e.3 += t.later;
                if change == fwd {
                    let (took, lines) = full_load(&bed);
                    full.push(took);
                    listing_lines = lines;
                }
            }
        }
        full.sort();
        for change in [fwd, back] {
            let (mut inf, mut wr, mut fms, later) = samples.remove(change.name()).unwrap();
            inf.sort();
            wr.sort();
            for v in fms.values_mut() {
                v.sort_by(f64::total_cmp);
            }
            rows.push((
                change.name(),
                inf,
                wr,
                fms,
                later,
                full.clone(),
                listing_lines,
            ));
        }
    }
    println!(
        "\n| change ({} endpoints, {} policies, {trials} trials) | etcd write returned → committed: median | p99 | etcd write (client): median | `nft -f` of the final table from scratch: median | p99 | ratio of medians | extra commits |",
        size.endpoints, size.policies
    );
    println!("|---|---|---|---|---|---|---|---|");
    let med = |v: &[Duration]| v[v.len() / 2];
    for (name, inf, wr, _, later, full, _) in &rows {
        println!(
            "| {name} | {} | {} | {} | {} | {} | {:.3} | {later} |",
            common::ms(med(inf)),
            common::ms(nearest_rank(inf, 0.99)),
            common::ms(med(wr)),
            common::ms(med(full)),
            common::ms(nearest_rank(full, 0.99)),
            med(inf).as_secs_f64() / med(full).as_secs_f64(),
        );
    }
    println!(
        "\n| change: felix's own phases from its log, median (ms) | {} |",
        PHASES.join(" | ")
    );
    println!("|---|{}", "---|".repeat(PHASES.len()));
    for (name, _, _, fms, _, _, _) in &rows {
        let cells: Vec<String> = PHASES
            .iter()
            .map(|f| match fms.get(f) {
                Some(v) if !v.is_empty() => format!("{:.1}", v[v.len() / 2]),
                _ => "—".into(),
            })
            .collect();
        println!("| {name} | {} |", cells.join(" | "));
    }
    println!(
        "(final table listing: {} lines; p99 by nearest rank: with fewer than 100 trials it is the slowest)",
        rows[0].6
    );
}

fn us(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}
