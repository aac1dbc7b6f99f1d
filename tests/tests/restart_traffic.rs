//! Restarts without lost traffic (issue 7 §1): a lab of three nodes in a full mesh with a BIRD
//! ToR, pings every 10 ms between node 1's pods and every other pod (both ways) and from the
//! ToR to node 1's pods, while node 1's margay-bgpd restarts (SIGTERM or SIGKILL), its
//! margay-felix restarts, both do, or the ToR's BIRD restarts with graceful restart. Not one
//! ping may be lost, and every route must be whole again soon after the sessions return.

use std::time::Duration;

use margay_lab::labctl::restart::{self, Mode, Outcome, Scenario};
use margay_lab::labctl::{Cluster, Mode as Topology, PoolMode, Spec};

/// How long the lab gets to come up and to settle between scenarios.
const SETTLE: Duration = Duration::from_secs(60);
/// How long each stream of pings runs: the restart and its reconvergence must fit inside.
const WINDOW: Duration = Duration::from_secs(12);
/// How long the sessions and routes get to come back before the scenario fails.
const BACK: Duration = Duration::from_secs(9);
/// The bound on reconvergence, from the sessions' return to every route whole.
const WHOLE_WITHIN: Duration = Duration::from_secs(2);

fn lab() -> Cluster {
    let spec = Spec {
        nodes: 3,
        mode: Topology::Mesh,
        pool_mode: PoolMode::Never,
        tors: 1,
        ip_family: Default::default(),
        no_bgp: false,
    };
    Cluster::build(spec, SETTLE).expect("building a 3-node lab")
}

fn describe(o: &Outcome) -> String {
    format!(
        "{}: {} of {} pings lost; sessions back {:?} after the restart began, routes whole {:?} \
         after that",
        o.scenario.name(),
        o.lost(),
        o.sent(),
        o.sessions_back,
        o.reconverged
    )
}

#[test]
fn restarts_on_a_node_or_the_tor_lose_no_pings_and_reconverge_within_two_seconds() {
    let mut c = lab();
    let mut failures = Vec::new();
    for scenario in Scenario::ALL {
        if let Err(e) = c.wait_converged(SETTLE) {
            failures.push(format!(
                "{}: the lab did not settle first: {e}",
                scenario.name()
            ));
            break;
        }
        match restart::run(&mut c, scenario, Mode::Graceful, WINDOW, BACK) {
            Ok(o) => {
                eprintln!("{}", describe(&o));
                if o.lost() > 0 {
                    failures.push(format!(
                        "{}\n    {}",
                        describe(&o),
                        o.losses().join("\n    ")
                    ));
                }
                if o.reconverged > WHOLE_WITHIN {
                    failures.push(format!(
                        "{}: not whole within {WHOLE_WITHIN:?}",
                        describe(&o)
                    ));
                }
            }
            Err(e) => failures.push(format!("{}: {e}", scenario.name())),
        }
    }
    if !failures.is_empty() {
        let dir = c.teardown_keeping_logs();
        panic!(
            "restarts under traffic failed (logs in {}):\n  {}",
            dir.display(),
            failures.join("\n  ")
        );
    }
}
