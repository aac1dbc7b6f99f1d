//! margay-felix at N = 100 with a VXLAN pool and 250 local pods (the reduced size of issue 12
//! §3): every remote block, neighbour and FDB entry and every pod route is programmed, and one
//! Node joining or leaving costs O(1) kernel writes, counted by `ip monitor` in the node's
//! namespace (not by felix): a route, a neighbour and an FDB entry
//! each way, where anything O(N) would show about a hundred.

use std::time::Duration;

use margay_bench::sim::felixscale::{self, Backend};

#[test]
fn one_node_change_costs_constant_kernel_writes_at_100_nodes() {
    // A short churn too: the harness's CPU-per-change path runs (its figure is not asserted).
    let options = felixscale::Options {
        pods: 250,
        timeout: Duration::from_secs(240),
        churn: 4,
    };
    let r = felixscale::run(Backend::Vxlan, 100, options, |l| eprintln!("{l}"))
        .unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("{r:?}");
    // A route, a neighbour, an FDB entry; a little room for a delete the kernel reports as a
    // state change first.
    r.check_constant_writes(3..=6, &["proto 81", "lladdr 66:00:00:00:00:63"])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.churn.map(|c| c.changes), Some(4), "{r:?}");
}
