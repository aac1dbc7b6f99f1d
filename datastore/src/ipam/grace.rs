//! Grace periods of the leak collectors (pure): a suspect is confirmed only once it has been
//! seen suspect on every pass for the grace period; a pass that no longer finds it suspect
//! forgets it (a leak that came back to life starts from zero if it looks leaked again).
//!
//! Times are wall-clock ([`SystemTime`]) so that the clocks can be kept in etcd and taken
//! over by the next collector ([`Grace::to_millis`], [`Grace::from_millis`]): a collector
//! that restarts, or a new one elected on another node, continues the clocks instead of
//! starting them over. A first-seen time in the future (another node's clock ahead of ours)
//! counts as now: skew can delay a release, never hasten it.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Suspects by key, with the time each was first seen suspect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grace<K: Ord + Clone> {
    since: BTreeMap<K, SystemTime>,
}

impl<K: Ord + Clone> Default for Grace<K> {
    fn default() -> Self {
        Grace {
            since: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Clone> Grace<K> {
    /// Records one pass that found `suspects` at `now`; returns those suspect for at least
    /// `period`, in key order. Keys not among `suspects` are forgotten.
    pub fn pass(
        &mut self,
        suspects: impl IntoIterator<Item = K>,
        now: SystemTime,
        period: Duration,
    ) -> Vec<K> {
        let mut next = BTreeMap::new();
        for k in suspects {
            let t = self.since.get(&k).copied().unwrap_or(now).min(now);
            next.insert(k, t);
        }
        self.since = next;
        self.since
            .iter()
            .filter(|(_, t)| now.duration_since(**t).unwrap_or_default() >= period)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Forgets `k` (released, or no longer worth tracking).
    pub fn forget(&mut self, k: &K) {
        self.since.remove(k);
    }

    /// Number of suspects being timed.
    pub fn len(&self) -> usize {
        self.since.len()
    }

    pub fn is_empty(&self) -> bool {
        self.since.is_empty()
    }

    /// The clocks as (key, first seen in milliseconds since the Unix epoch), to keep.
    pub fn to_millis(&self) -> Vec<(K, u64)> {
        self.since
            .iter()
            .map(|(k, t)| {
                let ms = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
                (k.clone(), ms as u64)
            })
            .collect()
    }

    /// The clocks kept by [`Grace::to_millis`].
    pub fn from_millis(kept: impl IntoIterator<Item = (K, u64)>) -> Grace<K> {
        Grace {
            since: kept
                .into_iter()
                .map(|(k, ms)| (k, UNIX_EPOCH + Duration::from_millis(ms)))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
    }

    #[test]
    fn a_suspect_is_confirmed_after_the_period_and_a_recovered_one_starts_over() {
        let mut g = Grace::default();
        let p = Duration::from_secs(10);
        assert!(g.pass(["a", "b"], at(0), p).is_empty());
        assert_eq!(g.pass(["a", "b"], at(9), p), Vec::<&str>::new());
        // b recovers for one pass.
        assert_eq!(g.pass(["a"], at(10), p), ["a"]);
        assert!(g.pass(["a", "b"], at(15), p) == ["a"]);
        assert_eq!(g.pass(["b"], at(25), p), ["b"]);
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn a_zero_period_confirms_at_once() {
        let mut g = Grace::default();
        assert_eq!(g.pass([1], SystemTime::now(), Duration::ZERO), [1]);
    }

    #[test]
    fn kept_clocks_continue_where_they_stopped() {
        let p = Duration::from_secs(10);
        let mut g = Grace::default();
        g.pass(["a"], at(0), p);
        let kept = g.to_millis();
        let mut next = Grace::from_millis(kept);
        assert_eq!(next, g);
        assert!(next.pass(["a"], at(9), p).is_empty());
        assert_eq!(next.pass(["a"], at(10), p), ["a"], "not started over");
    }

    #[test]
    fn a_first_seen_time_in_the_future_counts_as_now() {
        let p = Duration::from_secs(10);
        let mut g = Grace::from_millis([("a", 2_000_000_000_000)]);
        assert!(g.pass(["a"], at(0), p).is_empty());
        assert!(g.pass(["a"], at(9), p).is_empty());
        assert_eq!(g.pass(["a"], at(10), p), ["a"]);
    }
}
