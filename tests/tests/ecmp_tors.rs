//! Dual-homed nodes (issue 13 §3): `margay-lab`'s `--tors 2` lab (3 nodes, each on its own link
//! to two BIRD ToRs, BFD 3 × 100 ms, every remote block one multipath route over both), with
//! pods pinging across the fabric at 100 per second while links fail. A failed link drops
//! everything both ways (nftables in the node's namespace: no carrier change, no BGP goodbye;
//! this kernel has no netem), so only BFD or the hold timer can notice.
//!
//! One run, in order:
//! 1. node1's link to the first ToR fails: margay's BFD session Down, node2's multipath route to
//!    node1's block reduced to the second ToR, pings restored within 500 ms; restoring the link
//!    brings both paths back with no ping lost.
//! 2. node1 is cut from both ToRs: its blocks withdrawn everywhere (both ToRs, the other
//!    nodes' kernels) within 1 s; restored, both paths come back.
//! 3. The contrast: BFD off on the second ToR's sessions (its BIRD and the BGPPeer), the same
//!    failure on that link is noticed only at the hold timer (9 s).
//!
//! The measured times and lost-ping counts are printed (bench/ecmp-failover.sh collects them).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use margay_lab::labctl::Cluster;
use margay_lab::labctl::topology::{Mode, PoolMode, Spec};
use margay_tests::ecmp::{
    Cut, bfd_state, both_paths_back, finish, flows, hops_to, report, second_tor_without_bfd,
    time_until, tor_routes, wait_hops,
};

const SETTLE: Duration = Duration::from_secs(120);
/// BFD's detection time in this lab (3 × 100 ms).
const DETECTION: Duration = Duration::from_millis(300);
/// What the issue allows between a failure and pings answered again.
const RESTORED_WITHIN: Duration = Duration::from_millis(500);
/// What the issue allows for a cut node's blocks to leave every table.
const WITHDRAWN_WITHIN: Duration = Duration::from_secs(1);
/// The lab's BIRD hold time.
const HOLD: Duration = Duration::from_secs(9);

#[test]
fn dual_homed_nodes_fail_over_in_bfd_time_and_at_the_hold_timer_without() {
    let spec = Spec {
        nodes: 3,
        mode: Mode::Mesh,
        pool_mode: PoolMode::Never,
        tors: 2,
        ip_family: Default::default(),
        no_bgp: false,
    };
    let c = Cluster::build(spec, SETTLE).expect("a converged --tors 2 lab");
    let plan = c.plan().clone();
    let tor_a = plan.tor.addrs[0].ip4();
    let tor_b = plan.tor2.as_ref().expect("two ToRs").addrs[0].ip4();
    let pods = c.pods();
    let pod_on = |n: &str| match pods.iter().find(|p| p.node == n).expect("a pod").ip {
        std::net::IpAddr::V4(a) => a,
        std::net::IpAddr::V6(a) => panic!("an IPv4 pod, not {a}"),
    };
    let (n1_pod, n2_pod) = (pod_on("node1"), pod_on("node2"));
    let n1 = c.node_netns(0);
    let (if_a, if_b) = (
        c.node_ifname(0, false).unwrap(),
        c.node_ifname(0, true).unwrap(),
    );
    // Every node holds every other node's blocks over both ToRs.
    for (i, dst) in [(1, n1_pod), (2, n1_pod), (0, n2_pod)] {
        wait_hops(
            &c,
            i,
            dst,
            &[tor_a, tor_b],
            "the multipath route over both ToRs",
        );
    }
    let mut lines = Vec::new();

    // 1. node1's link to the first ToR fails.
    let pings = flows(&c, "node1", "node2", 400);
    std::thread::sleep(Duration::from_millis(1500));
    let cut = Cut::on(n1, &[&if_a]);
    let t0 = Instant::now();
    let bfd_down = time_until(t0, Duration::from_secs(5), || {
        bfd_state(&c, 0, tor_a) != "Up"
    })
    .expect("node1's BFD session with the first ToR goes down");
    let reduced = time_until(t0, Duration::from_secs(5), || {
        hops_to(c.node_netns(1), n1_pod) == [tor_b]
    })
    .expect("node2's route to node1's block reduced to the second ToR");
    let r = finish(pings);
    lines.push(format!(
        "link to ToR 1 fails, BFD 3 x 100 ms: margay BFD Down after {} ms, node2's route reduced \
         after {} ms; {}",
        bfd_down.as_millis(),
        reduced.as_millis(),
        report("pings", &r)
    ));
    // Down by BFD's own detection timer (not by the BGP session closing first), seen by a
    // poll that is slow on a loaded machine: the tight figure is bench/ecmp-failover.sh's.
    let diag = c
        .bgpd(0)
        .and_then(|b| b.peer(IpAddr::V4(tor_a)).ok().flatten())
        .and_then(|p| p.bfd)
        .map(|b| b.local_diagnostic)
        .unwrap_or_default();
    assert_eq!(
        diag,
        "Control Detection Time Expired",
        "{}",
        lines.join("\n")
    );
    assert!(
        bfd_down <= DETECTION + Duration::from_secs(2),
        "BFD Down seen after {bfd_down:?} (detection time {DETECTION:?})"
    );
    assert!(
        reduced <= Duration::from_secs(1),
        "route reduced after {reduced:?}"
    );
    for f in &r {
        assert!(
            f.longest_gap <= RESTORED_WITHIN,
            "{}: pings stopped for {:?}: {}",
            f.name,
            f.longest_gap,
            lines.join("\n")
        );
    }
    // Restored: both paths come back, no ping lost meanwhile.
    let pings = flows(&c, "node1", "node2", 600);
    std::thread::sleep(Duration::from_millis(500));
    drop(cut);
    let t1 = Instant::now();
    both_paths_back(&c, [(1, n1_pod), (0, n2_pod)], [tor_a, tor_b]);
    let back = t1.elapsed();
    let r = finish(pings);
    lines.push(format!(
        "link restored: both paths back after {} ms; {}",
        back.as_millis(),
        report("pings", &r)
    ));
    assert!(
        r.iter().all(|f| f.lost == 0),
        "pings lost while the link came back: {}",
        lines.join("\n")
    );

    // 2. node1 cut from both ToRs: its blocks leave every table within 1 s.
    let cut = Cut::on(n1, &[&if_a, &if_b]);
    let t0 = Instant::now();
    let gone = time_until(t0, Duration::from_secs(10), || {
        hops_to(c.node_netns(1), n1_pod).is_empty()
            && hops_to(c.node_netns(2), n1_pod).is_empty()
            && !tor_routes(&c, false, n1_pod)
            && !tor_routes(&c, true, n1_pod)
    })
    .expect("node1's blocks withdrawn everywhere");
    lines.push(format!(
        "node cut from both ToRs: its blocks gone from both ToRs and both other nodes after {} ms",
        gone.as_millis()
    ));
    assert!(gone <= WITHDRAWN_WITHIN, "withdrawn after {gone:?}");
    drop(cut);
    both_paths_back(&c, [(1, n1_pod), (2, n1_pod)], [tor_a, tor_b]);
    let r = finish(flows(&c, "node1", "node2", 200));
    lines.push(format!("node restored: {}", report("pings after", &r)));
    assert!(r.iter().all(|f| f.lost == 0), "{}", lines.join("\n"));

    eprintln!("{}", lines.join("\n"));

    // 3. The contrast: no BFD with the second ToR (BIRD reconfigured, BGPPeer without bfd).
    second_tor_without_bfd(&c).unwrap();
    wait_hops(
        &c,
        1,
        n1_pod,
        &[tor_a, tor_b],
        "node2's route over both ToRs, no BFD on ToR 2",
    );
    let pings = flows(&c, "node1", "node2", 1500);
    std::thread::sleep(Duration::from_millis(1500));
    let cut = Cut::on(n1, &[&if_b]);
    let t0 = Instant::now();
    let reduced = time_until(t0, HOLD + Duration::from_secs(6), || {
        hops_to(c.node_netns(1), n1_pod) == [tor_a]
    })
    .expect("node2's route reduced to the first ToR at the hold timer");
    let r = finish(pings);
    drop(cut);
    lines.push(format!(
        "link to ToR 2 fails, no BFD (hold time {} s): node2's route reduced after {} ms; {}",
        HOLD.as_secs(),
        reduced.as_millis(),
        report("pings", &r)
    ));
    eprintln!("{}", lines.join("\n"));
    assert!(
        reduced > Duration::from_secs(2),
        "without BFD the failure was noticed after {reduced:?}: only the hold timer should"
    );
    assert!(reduced <= HOLD + Duration::from_secs(3), "{reduced:?}");
}
