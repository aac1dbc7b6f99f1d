//! The restart benchmark behind `bench/restart-loss.sh`: on one 3-node lab, every restart
//! scenario ROUNDS times with graceful restart and, where it means something, without (the
//! stopping side sends Cease and its peers flush its routes at once), alternated; prints lost
//! pings and times per scenario and mode. Usage: `restart_loss [ROUNDS]` (as root).

use std::time::Duration;

use margay_lab::labctl::restart::{self, Mode, Scenario};
use margay_lab::labctl::{Cluster, Mode as Topology, PoolMode, Spec};

fn main() -> anyhow::Result<()> {
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(3);
    let spec = Spec {
        nodes: 3,
        mode: Topology::Mesh,
        pool_mode: PoolMode::Never,
        tors: 1,
        ip_family: Default::default(),
        no_bgp: false,
    };
    let settle = Duration::from_secs(60);
    let mut c = Cluster::build(spec, settle)?;
    println!("scenario    mode      round  lost/sent     sessions_back_ms  whole_after_ms");
    for scenario in Scenario::ALL {
        for round in 1..=rounds {
            for mode in [Mode::Graceful, Mode::Flush] {
                if mode == Mode::Flush && !scenario.has_flush_peer() {
                    continue;
                }
                c.wait_converged(settle)?;
                let o = restart::run(
                    &mut c,
                    scenario,
                    mode,
                    Duration::from_secs(15),
                    Duration::from_secs(12),
                )?;
                println!(
                    "{:<11} {:<9} {round:>5}  {:>5}/{:<6} {:>16} {:>15}",
                    scenario.name(),
                    match mode {
                        Mode::Graceful => "graceful",
                        Mode::Flush => "no-gr",
                    },
                    o.lost(),
                    o.sent(),
                    o.sessions_back.as_millis(),
                    o.reconverged.as_millis()
                );
            }
        }
    }
    c.teardown();
    Ok(())
}
