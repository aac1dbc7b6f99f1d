//! Memory of the RIB at scale: a million /24 routes from one peer sharing one attribute set
//! (the route-reflector benchmark's load) must stay well under BIRD's ~100 bytes per route.

mod rib_common;

use margay_bgp::rib::Rib;
use margay_bgp::wire::{Family, Prefix4, Update};
use rib_common::*;
use std::net::Ipv4Addr;
use std::time::Instant;

/// Under `rib` so that `cargo test -p margay-bgp rib` selects these tests.
mod rib {
    use super::*;

    #[test]
    fn million_routes_with_one_attribute_set_stay_under_64_bytes_each() {
        let count: u32 = 1_000_000;
        let mut rib = Rib::new(local());
        rib.set_track_best_changes(false);
        rib.peer_up(2, client(2));
        rib.peer_up(3, client(3));
        let shared = attrs(&[65001], "10.0.0.2");
        let rss_before = rss_kib();
        let start = Instant::now();
        let mut exported = 0usize;
        let mut i = 0u32;
        while i < count {
            let end = (i + 1000).min(count);
            let nlri: Vec<Prefix4> = (i..end)
                .map(|n| Prefix4::new(Ipv4Addr::from((n + (1 << 24)) << 8), 24).expect("/24"))
                .collect();
            let update = Update {
                attributes: shared.clone(),
                nlri,
                ..Update::default()
            };
            let ex = rib.apply_update(2, &update);
            assert_eq!(ex.len(), 1);
            assert_eq!(ex[0].announce.len(), 1, "one entry per attribute set");
            exported += ex[0].announce[0].3.len();
            i = end;
        }
        let elapsed = start.elapsed();
        assert_eq!(rib.prefix_count(Family::Ipv4Unicast), count as usize);
        assert_eq!(exported, count as usize);
        assert_eq!(rib.attr_sets(), 1);
        let c = rib.counters(2);
        assert_eq!((c.received, c.accepted), (count as u64, count as u64));
        assert_eq!(rib.counters(3).advertised, count as u64);

        let bytes = rib.memory_estimate();
        let per_route = bytes as f64 / count as f64;
        println!(
            "{count} routes: {bytes} bytes, {per_route:.1} bytes/route, loaded in {elapsed:?}"
        );
        if let (Some(before), Some(after)) = (rss_before, rss_kib()) {
            // For information only: the allocator and the test harness make RSS noisy.
            println!("process RSS grew by {} KiB", after.saturating_sub(before));
        }
        assert!(per_route < 64.0, "{per_route:.1} bytes per route");

        let ex = rib.peer_down(2);
        assert_eq!(ex.len(), 1);
        assert_eq!(ex[0].withdraw[0].1.len(), count as usize);
        assert_eq!(rib.attr_sets(), 0);
    }

    /// The process's resident set size in KiB, from /proc.
    fn rss_kib() -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }
}
