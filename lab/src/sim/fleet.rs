//! The lab's simulated nodes (`margay-lab up --simulated M`): where they sit (one address each
//! in [`SIM_SUBNET`], a block each from the top of the lab's pool), the process that serves them
//! ([`serve`], run as `margay-lab simulate` inside the fleet's namespace), and the status file
//! it rewrites every second for `margay-lab status` and the report ([`FleetStatus`]).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use ipnet::{IpNet, Ipv4Net};
use margay_datastore::{EtcdArgs, Store};
use serde::{Deserialize, Serialize};

use super::register;
use super::speaker::{self, Logs, SimNode};

/// The simulated nodes' addresses: a subnet of their own beside the lab's racks (a rack is a
/// /24), reached on rack a's switch by a link route on every real node.
pub const SIM_SUBNET: &str = "10.97.0.0/21";
/// Simulated node `i`'s address is the subnet's address + `FIRST_HOST + i`.
const FIRST_HOST: u32 = 10;
/// Most simulated nodes a lab runs: the pool has 1,024 /26 blocks, and the real nodes, the
/// Calico nodes' range and joining nodes need some.
pub const MAX_SIMULATED: usize = 1000;

/// The plan of `count` simulated nodes in the pool `pool` (blocks of `/26`): `sim0001`, ...,
/// addresses from [`SIM_SUBNET`] up, blocks from the pool's last one down (margay's IPAM hands
/// the real nodes blocks from the start).
pub fn plan(count: usize, pool: Ipv4Net) -> Vec<SimNode> {
    let subnet: Ipv4Net = SIM_SUBNET.parse().expect("SIM_SUBNET is a CIDR");
    let base = u32::from(subnet.network()) + FIRST_HOST;
    let blocks = 1u32 << (26 - u32::from(pool.prefix_len()));
    let last = u32::from(pool.network()) + (blocks - 1) * 64;
    (0..count as u32)
        .map(|i| SimNode {
            name: format!("sim{:04}", i + 1),
            addr: Ipv4Addr::from(base + i),
            block: Ipv4Net::new(Ipv4Addr::from(last - i * 64), 26).expect("26 is a valid length"),
        })
        .collect()
}

/// The prefix length of every simulated Node's BGP address.
pub fn subnet_len() -> u8 {
    SIM_SUBNET
        .parse::<Ipv4Net>()
        .expect("SIM_SUBNET is a CIDR")
        .prefix_len()
}

/// What the fleet's process last wrote about its speakers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetStatus {
    /// Simulated nodes planned.
    pub simulated: usize,
    /// Nodes registered in etcd (Node, block, affinity).
    pub registered: usize,
    /// Sessions Established now, over every speaker.
    pub sessions_up: u64,
    /// Speakers with at least one session Established.
    pub speakers_up: usize,
    /// Sessions that went down after Established, in total (a reset a real node caused).
    pub downs: u64,
    /// The prefixes every speaker holds (the real nodes' blocks, once converged).
    pub held_by_all: Vec<Ipv4Net>,
    /// The fewest prefixes one speaker holds.
    pub fewest_routes: usize,
    /// The last error that ended a session, if any.
    pub example_error: Option<String>,
    /// Seconds since the epoch when this was written.
    pub written: u64,
}

impl FleetStatus {
    /// Reads the status file at `path`.
    pub fn load(path: &Path) -> anyhow::Result<FleetStatus> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Summarises the speakers' logs.
    pub fn of(simulated: usize, registered: usize, logs: &Logs) -> FleetStatus {
        let mut s = FleetStatus {
            simulated,
            registered,
            fewest_routes: usize::MAX,
            ..FleetStatus::default()
        };
        let mut common: Option<BTreeSet<Ipv4Net>> = None;
        for l in logs.iter() {
            let l = l.lock().expect("log lock");
            s.sessions_up += u64::from(l.up);
            s.speakers_up += usize::from(l.up > 0);
            s.downs += u64::from(l.downs);
            s.fewest_routes = s.fewest_routes.min(l.routes.len());
            let held: BTreeSet<Ipv4Net> = l.routes.keys().copied().collect();
            common = Some(match common {
                None => held,
                Some(c) => c.intersection(&held).copied().collect(),
            });
            if s.example_error.is_none() {
                s.example_error.clone_from(&l.last_error);
            }
        }
        if s.fewest_routes == usize::MAX {
            s.fewest_routes = 0;
        }
        s.held_by_all = common.unwrap_or_default().into_iter().collect();
        s
    }

    /// Writes the status to `path` atomically (a temporary file renamed over it).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
    }
}

/// What `margay-lab simulate` is told.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub etcd: String,
    pub count: usize,
    pub pool: Ipv4Net,
    pub asn: u32,
    pub status_file: PathBuf,
}

/// Serves the fleet until the process is ended: registers every simulated node in etcd (Node,
/// block and affinity, as felix's IPAM would), starts a speaker on each address (they must
/// already be on an interface of this namespace), and rewrites the status file every second.
pub fn serve(opts: &ServeOptions) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let nodes = plan(opts.count, opts.pool);
        let logs = speaker::start(&nodes, opts.asn, 179).await?;
        FleetStatus::of(opts.count, 0, &logs).save(&opts.status_file)?;
        let store = Store::connect(&EtcdArgs::plain([opts.etcd.clone()])).await?;
        let started = Instant::now();
        let mut registered = 0;
        for chunk in nodes.chunks(100) {
            register::register_all(&store, chunk, subnet_len()).await?;
            registered += chunk.len();
            FleetStatus::of(opts.count, registered, &logs).save(&opts.status_file)?;
        }
        tracing::info!(
            count = opts.count,
            secs = started.elapsed().as_secs_f64(),
            "registered the simulated nodes"
        );
        eprintln!(
            "margay-lab simulate: {} nodes registered in {:.1} s, speakers listening",
            opts.count,
            started.elapsed().as_secs_f64()
        );
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            FleetStatus::of(opts.count, registered, &logs).save(&opts.status_file)?;
        }
    })
}

/// Whether `addr` is a simulated node's.
pub fn is_simulated(addr: &std::net::IpAddr) -> bool {
    let subnet: Ipv4Net = SIM_SUBNET.parse().expect("SIM_SUBNET is a CIDR");
    IpNet::V4(subnet).contains(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_takes_blocks_from_the_top_of_the_pool_and_addresses_from_the_subnet() {
        let p = plan(997, "10.100.0.0/16".parse().unwrap());
        assert_eq!(p[0].name, "sim0001");
        assert_eq!(p[0].addr, Ipv4Addr::new(10, 97, 0, 10));
        assert_eq!(p[0].block.to_string(), "10.100.255.192/26");
        assert_eq!(p[996].block.to_string(), "10.100.6.192/26");
        assert_eq!(p[996].addr, Ipv4Addr::new(10, 97, 3, 238));
        let blocks: BTreeSet<_> = p.iter().map(|n| n.block).collect();
        assert_eq!(blocks.len(), 997);
        assert!(p.iter().all(|n| is_simulated(&n.addr.into())));
        assert!(!is_simulated(&"10.99.1.1".parse().unwrap()));
    }

    #[test]
    fn the_status_holds_what_every_speaker_holds() {
        use std::sync::{Arc, Mutex};
        let a: Ipv4Net = "10.100.0.0/26".parse().unwrap();
        let b: Ipv4Net = "10.100.0.64/26".parse().unwrap();
        let mut one = speaker::Log {
            up: 2,
            ..speaker::Log::default()
        };
        one.routes.insert(a, Instant::now());
        one.routes.insert(b, Instant::now());
        let mut two = speaker::Log {
            up: 1,
            downs: 1,
            ..speaker::Log::default()
        };
        two.routes.insert(a, Instant::now());
        let logs: Logs = Arc::new(vec![Mutex::new(one), Mutex::new(two)]);
        let s = FleetStatus::of(2, 2, &logs);
        assert_eq!(s.sessions_up, 3);
        assert_eq!(s.speakers_up, 2);
        assert_eq!(s.downs, 1);
        assert_eq!(s.held_by_all, vec![a]);
        assert_eq!(s.fewest_routes, 1);
    }
}
