//! Issue 13 §4, run by `bench/ecmp-failover.sh`: in a `--tors 2` lab (3 nodes, BFD 3 × 100 ms),
//!
//! 1. detection time, failure → BGP session down → kernel route updated, `TRIALS` trials: node1
//!    (margay-bgpd + margay-felix) loses its link to the first ToR (BIRD), against a BIRD↔BIRD
//!    pair with the same BFD timers (BIRD `x` learning a prefix from BIRD `y`, `y`'s link cut),
//!    both cut one after the other, each timed from the end of its own cut: the BGP session
//!    leaving Established (margay's with the ToR over gRPC, BIRD x's with y over birdc, each
//!    side polled every 2 ms by a thread of its own, so neither waits behind the other's
//!    checks), and the kernel route changing (node1's route to node2's block losing the ToR's
//!    next hop, x's route to y's prefix gone), both read from `ip monitor route` as the kernel
//!    reports it: the same clock for both, no poll interval; and the other direction, each
//!    far end noticing the silence of the side that is cut (the ToR's BIRD: margay's packets
//!    stop; y's BIRD: x's stop), its BGP session leaving Established;
//! 2. pings lost per ToR failure, `ROUNDS` failures each: 8 flows at 100/s between node1's and
//!    node2's pods, node1's link to a ToR cut, with BFD (first ToR) and then without (BFD off on
//!    the second ToR's sessions, both ends: only the 9 s hold timer notices).
//!
//! Usage: ecmp_failover [TRIALS] [ROUNDS]   (as root; defaults 20 and 5)

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use margay_lab::labctl::Cluster;
use margay_lab::labctl::topology::{Mode, PoolMode, Spec};
use margay_lab::{Bird, BirdConfig, BirdNeighbor, ExportPolicy, Lab, Netns, block4, wait_for};
use margay_tests::bfd::bird_bfd;
use margay_tests::ecmp::{
    Cut, FlowResult, RouteMonitor, bfd_state, block_route, both_paths_back, finish, flows, hops_to,
    second_tor_without_bfd, seen_at, wait_hops,
};

const UP: Duration = Duration::from_secs(60);

fn percentile(v: &[Duration], p: f64) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    let i = ((p * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1;
    s[i]
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

/// Whether BIRD `x` holds a kernel route to `prefix` (its own protocol, `bird`).
fn bird_kernel_route(x: &Netns, prefix: &str) -> bool {
    x.ip(&["-4", "route", "show", prefix, "proto", "bird"])
        .is_ok_and(|o| !o.trim().is_empty())
}

fn established(b: &Bird, proto: &str) -> bool {
    b.protocol(proto)
        .ok()
        .flatten()
        .is_some_and(|p| p.is_established())
}

fn peer_established(c: &Cluster, node: usize, peer: Ipv4Addr) -> bool {
    c.bgpd(node)
        .and_then(|b| b.peer(IpAddr::V4(peer)).ok().flatten())
        .is_some_and(|p| p.state == "Established")
}

struct Trial {
    margay_bgp: Duration,
    margay_kernel: Duration,
    bird_bgp: Duration,
    bird_kernel: Duration,
    /// The other direction: the ToR's session with node1, y's with x, leaving Established.
    tor_bgp: Duration,
    y_bgp: Duration,
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let trials: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(20);
    let rounds: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(5);
    let spec = Spec {
        nodes: 3,
        mode: Mode::Mesh,
        pool_mode: PoolMode::Never,
        tors: 2,
        ip_family: Default::default(),
        no_bgp: false,
    };
    let c = Cluster::build(spec, Duration::from_secs(180)).context("the --tors 2 lab")?;
    let tor = c.tor_bird(false).context("the first ToR's BIRD")?;
    let plan = c.plan().clone();
    let tor_a = plan.tor.addrs[0].ip4();
    let tor_b = plan.tor2.as_ref().context("two ToRs")?.addrs[0].ip4();
    let pods = c.pods();
    let pod_on = |n: &str| {
        pods.iter().find(|p| p.node == n).and_then(|p| match p.ip {
            std::net::IpAddr::V4(a) => Some(a),
            std::net::IpAddr::V6(_) => None,
        })
    };
    let n2_pod = pod_on("node2").context("a pod on node2")?;
    let n1_pod = pod_on("node1").context("a pod on node1")?;
    let n1 = c.node_netns(0);
    let (if_a, if_b) = (c.node_ifname(0, false)?, c.node_ifname(0, true)?);

    // The BIRD↔BIRD pair, same BFD timers.
    let lab = Lab::new("ecmp-failover-bird-pair")?;
    let (nx, ny) = (lab.netns("x")?, lab.netns("y")?);
    let l = lab.link(&nx, &ny)?;
    let (ax, ay) = (l.a.ip4(), l.b.ip4());
    let prefix = block4().to_string();
    let mut to_y = BirdNeighbor::new("y", IpAddr::V4(ay), 65010, 65011).export(ExportPolicy::None);
    to_y.bfd = true;
    let x = Bird::start(
        &lab,
        &nx,
        "x",
        BirdConfig::new(ax)
            .program_kernel()
            .bfd(100, 100, 3)
            .neighbor(to_y),
    )?;
    let mut to_x =
        BirdNeighbor::new("x", IpAddr::V4(ax), 65011, 65010).export(ExportPolicy::Static);
    to_x.bfd = true;
    let y = Bird::start(
        &lab,
        &ny,
        "y",
        BirdConfig::new(ay)
            .bfd(100, 100, 3)
            .originate(prefix.parse()?)
            .neighbor(to_x),
    )?;

    println!(
        "# {} trials (detection), {} failures each (pings); BFD 3 x 100 ms both pairs",
        trials, rounds
    );
    let mut results = Vec::new();
    for t in 0..trials {
        wait_for(
            "every session up and both paths in the kernel",
            UP,
            &[],
            || {
                let ok = bfd_state(&c, 0, tor_a) == "Up"
                    && hops_to(n1, n2_pod).len() == 2
                    && established(&x, "y")
                    && bird_kernel_route(&nx, &prefix)
                    && bird_bfd(&x, IpAddr::V4(ay))
                        .is_ok_and(|r| r.get(2).map(String::as_str) == Some("Up"));
                if ok {
                    Ok(())
                } else {
                    Err("not yet".to_string())
                }
            },
        )?;
        let block = block_route(n1, n2_pod).context("node1's route to node2's block")?;
        let (mon_m, mon_b) = (RouteMonitor::start(n1)?, RouteMonitor::start(&nx)?);
        // Let the Poll Sequences after Up finish on both sides.
        std::thread::sleep(Duration::from_millis(1500));
        let limit = Duration::from_secs(20);
        let (cuts, [mb, bb, tb, yb]) = std::thread::scope(|s| {
            let m = s.spawn(|| seen_at(limit, || !peer_established(&c, 0, tor_a)));
            let b = s.spawn(|| seen_at(limit, || !established(&x, "y")));
            // The other direction: the ToR noticing node1's silence (margay's packets), y
            // noticing x's (BIRD's).
            let tm = s.spawn(|| seen_at(limit, || !established(tor, "node1")));
            let ym = s.spawn(|| seen_at(limit, || !established(&y, "x")));
            let cut_m = Cut::on(n1, &[&if_a]);
            let t0 = Instant::now();
            let cut_b = Cut::on(&ny, &[&l.b.ifname]);
            let t1 = Instant::now();
            let seen = [m, b, tm, ym].map(|h| h.join().ok().flatten());
            ((cut_m, t0, cut_b, t1), seen)
        });
        let (cut_m, t0, cut_b, t1) = cuts;
        let (tor_bgp, y_bgp) = (
            tb.map(|a| a.saturating_duration_since(t0)),
            yb.map(|a| a.saturating_duration_since(t1)),
        );
        let mk = mon_m.first_change(&block, t0, t0 + limit);
        let bk = mon_b.first_change(&prefix, t1, t1 + limit);
        drop((cut_m, cut_b, mon_m, mon_b));
        let since =
            |at: Option<Instant>, cut: Instant| at.map(|a| a.saturating_duration_since(cut));
        let (mb, mk, bb, bk) = (since(mb, t0), since(mk, t0), since(bb, t1), since(bk, t1));
        let (Some(margay_bgp), Some(margay_kernel), Some(bird_bgp), Some(bird_kernel)) =
            (mb, mk, bb, bk)
        else {
            bail!("trial {t}: not every change was seen in 20 s: {mb:?} {mk:?} {bb:?} {bk:?}");
        };
        let (Some(tor_bgp), Some(y_bgp)) = (tor_bgp, y_bgp) else {
            bail!("trial {t}: the far ends did not notice in 20 s: {tor_bgp:?} {y_bgp:?}");
        };
        println!(
            "trial {t:>2}: margay session down {} ms, kernel route {} ms | BIRD session down {} ms, kernel route {} ms | far ends: ToR {} ms, y {} ms",
            ms(margay_bgp),
            ms(margay_kernel),
            ms(bird_bgp),
            ms(bird_kernel),
            ms(tor_bgp),
            ms(y_bgp)
        );
        results.push(Trial {
            margay_bgp,
            margay_kernel,
            bird_bgp,
            bird_kernel,
            tor_bgp,
            y_bgp,
        });
    }
    let col = |f: fn(&Trial) -> Duration| -> Vec<Duration> { results.iter().map(f).collect() };
    println!("\n| detector | stage | p50 ms | p99 ms | max ms |");
    println!("| --- | --- | --- | --- | --- |");
    for (who, stage, v) in [
        (
            "margay (peer BIRD ToR)",
            "BGP session down",
            col(|t| t.margay_bgp),
        ),
        (
            "margay (peer BIRD ToR)",
            "kernel route updated (felix)",
            col(|t| t.margay_kernel),
        ),
        ("BIRD (peer BIRD)", "BGP session down", col(|t| t.bird_bgp)),
        (
            "BIRD (peer BIRD)",
            "kernel route updated",
            col(|t| t.bird_kernel),
        ),
        (
            "BIRD ToR (peer margay node1)",
            "BGP session down",
            col(|t| t.tor_bgp),
        ),
        ("BIRD y (peer BIRD x)", "BGP session down", col(|t| t.y_bgp)),
    ] {
        println!(
            "| {who} | {stage} | {} | {} | {} |",
            ms(percentile(&v, 0.5)),
            ms(percentile(&v, 0.99)),
            ms(percentile(&v, 1.0))
        );
    }

    // Pings lost per ToR failure: with BFD (the first ToR), then the hold timer (the second,
    // BFD off at both ends).
    let mut with_bfd = Vec::new();
    for _ in 0..rounds {
        with_bfd.push(ping_round(
            &c,
            n1,
            &if_a,
            500,
            [n1_pod, n2_pod],
            [tor_a, tor_b],
        ));
    }
    second_tor_without_bfd(&c)?;
    let mut hold = Vec::new();
    for _ in 0..rounds {
        hold.push(ping_round(
            &c,
            n1,
            &if_b,
            1500,
            [n1_pod, n2_pod],
            [tor_a, tor_b],
        ));
    }
    println!(
        "\n| failure of one ToR link | pings lost per failure (8 flows x 100/s), each | mean | longest silence per failure, ms |"
    );
    println!("| --- | --- | --- | --- |");
    for (what, v) in [
        ("BFD 3 x 100 ms", &with_bfd),
        ("no BFD, hold time 9 s", &hold),
    ] {
        let lost: Vec<u32> = v.iter().map(|r| r.iter().map(|f| f.lost).sum()).collect();
        let gaps: Vec<String> = v
            .iter()
            .map(|r| ms(r.iter().map(|f| f.longest_gap).max().unwrap_or_default()))
            .collect();
        let mean = lost.iter().sum::<u32>() as f64 / lost.len().max(1) as f64;
        println!(
            "| {what} | {} | {mean:.0} | {} |",
            lost.iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            gaps.join(", ")
        );
    }
    Ok(())
}

/// One failure under pings: 8 flows between node1's and node2's pods (`count` pings each),
/// node1's interface `ifname` cut one second in and left cut until they end, then restored and
/// both paths waited for.
fn ping_round(
    c: &Cluster,
    n1: &Netns,
    ifname: &str,
    count: u32,
    pods: [Ipv4Addr; 2],
    tors: [Ipv4Addr; 2],
) -> Vec<FlowResult> {
    both_paths_back(c, [(1, pods[0]), (0, pods[1])], tors);
    wait_hops(c, 1, pods[0], &tors, "node2 over both ToRs");
    std::thread::sleep(Duration::from_millis(1500));
    let running = flows(c, "node1", "node2", count);
    std::thread::sleep(Duration::from_secs(1));
    let cut = Cut::on(n1, &[ifname]);
    let r = finish(running);
    drop(cut);
    both_paths_back(c, [(1, pods[0]), (0, pods[1])], tors);
    r
}
