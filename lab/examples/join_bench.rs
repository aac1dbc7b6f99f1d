//! The join benchmark behind `bench/node-join.sh` (issue 18): on one 3-node lab,
//! - a restart of node1 (margay-bgpd and margay-felix, SIGTERM and start again) with a dead
//!   BGPPeer configured: start -> felix ready, and the route events in node1's kernel while it
//!   comes back and until its table is complete (0 = no churn);
//! - ROUNDS joins and leaves of a fourth node (`margay-lab node add` / `node remove`), without
//!   and then with the dead BGPPeer: start -> felix ready, start -> first remote route in its
//!   kernel, first pod -> routed everywhere, Node deletion -> gone everywhere;
//! - beside it, BIRD 2 started fresh as that fourth node (a Node resource, so the margay nodes
//!   peer with it; sessions to the three nodes, the ToR and the dead peer; a kernel protocol
//!   exporting all): start -> its first route in the kernel.
//!
//! Usage: `join_bench [ROUNDS]` (as root; default 10).

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv4Net};
use margay_lab::labctl::join::{self, free_address, margayctl};
use margay_lab::labctl::state::LabState;
use margay_lab::labctl::topology::{NODE_AS, TOR_AS};
use margay_lab::labctl::{Cluster, Mode, PoolMode, Spec, Stop};
use margay_lab::{Bird, BirdConfig, BirdNeighbor, ExportPolicy, Lab, Netns, Switch};

const DEAD_AS: u32 = 65010;

fn dead_peer(subnet: Ipv4Net) -> Ipv4Addr {
    let o = subnet.network().octets();
    Ipv4Addr::new(o[0], o[1], o[2], 250)
}

fn dead_peer_yaml(addr: Ipv4Addr) -> String {
    format!(
        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: dead-peer\nspec:\n  \
         peerIP: {addr}\n  asNumber: {DEAD_AS}\n"
    )
}

/// Polls the kernel of `netns` from `t0` for the first route of protocol `proto` through a
/// gateway.
fn first_route(netns: &str, proto: &str, t0: Instant, timeout: Duration) -> Option<Duration> {
    while t0.elapsed() < timeout {
        let o = Command::new("ip")
            .args(["-n", netns, "-4", "route", "show", "proto", proto])
            .output()
            .ok()?;
        if String::from_utf8_lossy(&o.stdout).contains(" via ") {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(
        || "-".into(),
        |d| format!("{:.0}", d.as_secs_f64() * 1000.0),
    )
}

/// p50 / p99 / max of `v` in ms.
fn summary(name: &str, v: &[Duration]) {
    let mut v = v.to_vec();
    v.sort();
    if v.is_empty() {
        return;
    }
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    println!(
        "  {name:<34} p50 {:>6} ms  p99 {:>6} ms  max {:>6} ms  (n={})",
        ms(Some(at(0.5))),
        ms(Some(at(0.99))),
        ms(v.last().copied()),
        v.len()
    );
}

/// node1 restarts (bgpd, then felix, both SIGTERM) ROUNDS times; route events in its kernel are
/// counted until `settle` after felix is ready (past the restarted bgpd's table completion).
fn restarts(c: &mut Cluster, rounds: usize, settle: Duration) -> anyhow::Result<()> {
    println!("restart of node1 (margay-bgpd + margay-felix), dead peer configured");
    println!("round  start->felix_ready_ms  route_events_in_node1_kernel");
    let mut ready = Vec::new();
    for round in 1..=rounds {
        c.wait_converged(Duration::from_secs(60))?;
        let ns = c.node_netns(0).name().to_string();
        let mut monitor = Command::new("ip")
            .args(["-n", &ns, "monitor", "route"])
            .stdout(Stdio::piped())
            .spawn()?;
        let out = monitor.stdout.take().expect("piped");
        let lines = std::thread::spawn(move || {
            BufReader::new(out)
                .lines()
                .map_while(Result::ok)
                .filter(|l| l.contains("proto 81"))
                .collect::<Vec<String>>()
        });
        std::thread::sleep(Duration::from_millis(200));
        let t0 = Instant::now();
        c.restart_bgpd(0, Stop::Graceful)?;
        c.restart_felix(0, Stop::Graceful)?;
        let r = t0.elapsed();
        std::thread::sleep(settle);
        monitor.kill()?;
        monitor.wait()?;
        let events = lines.join().unwrap_or_default();
        println!(
            "{round:>5}  {:>21}  {:>4} {:?}",
            ms(Some(r)),
            events.len(),
            events.first()
        );
        ready.push(r);
    }
    summary("start -> felix ready", &ready);
    Ok(())
}

/// ROUNDS joins and leaves of a fourth node on the kept lab at `state_file`.
fn joins(state_file: &Path, rounds: usize, label: &str) -> anyhow::Result<()> {
    println!("join and leave of a fourth node, {label}");
    println!("round  ready_ms  first_remote_route_ms  first_pod_routed_ms  gone_everywhere_ms");
    let (mut ready, mut remote, mut routed, mut gone) = (vec![], vec![], vec![], vec![]);
    for round in 1..=rounds {
        let j = join::node_add(state_file, None, Duration::from_secs(60))?;
        std::thread::sleep(Duration::from_millis(500));
        let l = join::node_remove(state_file, &j.node.name, Duration::from_secs(60))?;
        let t = &j.timings;
        println!(
            "{round:>5}  {:>8}  {:>21}  {:>19}  {:>18}",
            ms(Some(t.ready)),
            ms(t.first_remote_route),
            ms(Some(t.first_pod_routed)),
            ms(Some(l.gone_everywhere))
        );
        ready.push(t.ready);
        remote.extend(t.first_remote_route);
        routed.push(t.first_pod_routed);
        gone.push(l.gone_everywhere);
        std::thread::sleep(Duration::from_millis(500));
    }
    summary("start -> felix ready", &ready);
    summary("start -> first remote route", &remote);
    summary("first pod ADD -> routed everywhere", &routed);
    summary("Node deletion -> gone everywhere", &gone);
    Ok(())
}

/// BIRD 2 started fresh ROUNDS times as a fourth node with the same peers as a margay node.
fn bird_joins(state: &LabState, rounds: usize) -> anyhow::Result<()> {
    println!("BIRD 2 started fresh as a fourth node (3 nodes, the ToR, the dead peer)");
    println!("round  first_route_in_kernel_ms");
    let lab = Lab::new("joinbench")?;
    let ns = lab.netns("bd")?;
    let addr = free_address(state, state.subnets[0])?;
    let switch = Switch::adopt(&state.switches[0])?;
    let attached = switch.attach(&ns, &[IpNet::V4(addr)]);
    switch.into_kept();
    attached?;
    let tor = state.tor.addresses[0];
    ns.ip(&["route", "add", "default", "via", &tor.to_string()])?;
    let node_yaml = lab.dir().join("birdnode.yaml");
    std::fs::write(
        &node_yaml,
        format!(
            "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: birdnode\nspec:\n  \
             bgp:\n    ipv4Address: {addr}\n    asNumber: {NODE_AS}\n"
        ),
    )?;
    margayctl(
        &ns,
        &state.etcd.endpoint,
        &["apply", "-f", &node_yaml.to_string_lossy()],
    )?;
    let mut config = BirdConfig::new(addr.addr()).program_kernel();
    for n in &state.nodes {
        config = config.neighbor(
            BirdNeighbor::new(&n.name, IpAddr::V4(n.address4), NODE_AS, NODE_AS)
                .export(ExportPolicy::Static),
        );
    }
    config = config
        .neighbor(BirdNeighbor::new("tor", IpAddr::V4(tor), NODE_AS, TOR_AS))
        .neighbor(BirdNeighbor::new(
            "deadpeer",
            IpAddr::V4(dead_peer(state.subnets[0])),
            NODE_AS,
            DEAD_AS,
        ));
    let mut times = Vec::new();
    for round in 1..=rounds {
        let t0 = Instant::now();
        let name = ns.name().to_string();
        let watch =
            std::thread::spawn(move || first_route(&name, "bird", t0, Duration::from_secs(30)));
        let mut bird = Bird::start(&lab, &ns, &format!("bird{round}"), config.clone())?;
        let t = watch.join().unwrap_or(None);
        println!("{round:>5}  {:>24}", ms(t));
        times.extend(t);
        bird.stop();
        std::thread::sleep(Duration::from_secs(2));
    }
    summary("start -> first route in the kernel", &times);
    margayctl(&ns, &state.etcd.endpoint, &["delete", "node", "birdnode"])?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(10);
    let spec = Spec {
        nodes: 3,
        mode: Mode::Mesh,
        pool_mode: PoolMode::Never,
        tors: 1,
        ip_family: Default::default(),
        no_bgp: false,
    };
    let mut c = Cluster::build(spec, Duration::from_secs(90))?;
    let dead = dead_peer(c.plan().racks[0].v4);
    c.etcd().expect("etcd").apply(&dead_peer_yaml(dead))?;
    restarts(&mut c, rounds.min(5), Duration::from_secs(11))?;
    c.etcd().expect("etcd").delete("bgppeer", "dead-peer")?;

    let dir = tempfile_dir()?;
    let state_file = dir.join("state.json");
    c.into_kept(&state_file)?;
    let res = (|| {
        joins(&state_file, rounds, "no dead peer")?;
        let state = LabState::load(&state_file)?.expect("kept lab");
        let etcd_ns = Netns::adopt(&state.etcd.netns)?;
        let yaml = dir.join("dead.yaml");
        std::fs::write(&yaml, dead_peer_yaml(dead))?;
        let applied = margayctl(
            &etcd_ns,
            &state.etcd.endpoint,
            &["apply", "-f", &yaml.to_string_lossy()],
        );
        etcd_ns.into_kept();
        applied?;
        joins(&state_file, rounds, "one configured BGPPeer dead")?;
        bird_joins(&state, rounds)
    })();
    margay_lab::labctl::down(&state_file)?;
    let _ = std::fs::remove_dir_all(&dir);
    res
}

/// A private directory for the kept lab's state file.
fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("margay-join-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
