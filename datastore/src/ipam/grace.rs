//! Grace periods of the leak collectors (pure): a suspect is confirmed only once it has been
//! seen suspect on every pass for the grace period; a pass that no longer finds it suspect
//! forgets it (a leak that came back to life starts from zero if it looks leaked again).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Suspects by key, with the time each was first seen suspect.
#[derive(Debug, Clone)]
pub struct Grace<K: Ord + Clone> {
    since: BTreeMap<K, Instant>,
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
        now: Instant,
        period: Duration,
    ) -> Vec<K> {
        let mut next = BTreeMap::new();
        for k in suspects {
            let t = self.since.get(&k).copied().unwrap_or(now);
            next.insert(k, t);
        }
        self.since = next;
        self.since
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(**t) >= period)
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_suspect_is_confirmed_after_the_period_and_a_recovered_one_starts_over() {
        let mut g = Grace::default();
        let t0 = Instant::now();
        let p = Duration::from_secs(10);
        assert!(g.pass(["a", "b"], t0, p).is_empty());
        assert_eq!(
            g.pass(["a", "b"], t0 + Duration::from_secs(9), p),
            Vec::<&str>::new()
        );
        // b recovers for one pass.
        assert_eq!(g.pass(["a"], t0 + Duration::from_secs(10), p), ["a"]);
        assert!(g.pass(["a", "b"], t0 + Duration::from_secs(15), p) == ["a"]);
        assert_eq!(g.pass(["b"], t0 + Duration::from_secs(25), p), ["b"]);
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn a_zero_period_confirms_at_once() {
        let mut g = Grace::default();
        assert_eq!(g.pass([1], Instant::now(), Duration::ZERO), [1]);
    }
}
