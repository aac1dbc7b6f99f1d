//! margay-felix at N = 100 with a VXLAN pool and 250 local pods (the reduced size of issue 12
//! §3): every remote block, neighbour and FDB entry and every pod route is programmed, and one
//! Node joining or leaving costs O(1) kernel writes, counted by `ip monitor` in the node's
//! namespace (not by felix): a route, a neighbour and an FDB entry
//! each way, where anything O(N) would show about a hundred.

use std::time::Duration;

use margay_bench::sim::felixscale;

#[test]
fn one_node_change_costs_constant_kernel_writes_at_100_nodes() {
    let r = felixscale::run(100, 250, Duration::from_secs(240), |l| eprintln!("{l}"))
        .unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("{r:?}");
    for (what, lines, writes) in [
        ("join", &r.join_events, r.join_route_writes),
        ("leave", &r.leave_events, r.leave_route_writes),
    ] {
        // A route, a neighbour, an FDB entry; a little room for a delete the kernel reports
        // as a state change first.
        assert!(
            (3..=6).contains(&lines.len()),
            "{what}: {} notifications: {lines:#?}",
            lines.len()
        );
        assert!(
            lines.iter().any(|l| l.contains("proto 81")),
            "{what}: no route: {lines:#?}"
        );
        assert!(
            lines.iter().any(|l| l.contains("lladdr 66:00:00:00:00:63")),
            "{what}: no neighbour or FDB entry for the node: {lines:#?}"
        );
        assert_eq!(writes, 1, "{what}: felix's own count of route writes");
    }
    assert!(r.resyncs > 0);
}
