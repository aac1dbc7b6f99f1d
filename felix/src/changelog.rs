//! A bounded log of what changed in a published view (a Node by name, a route by prefix), so a
//! reader that saw the view at one point can take only what changed since, instead of comparing
//! or rebuilding the whole view: the O(1) path of one Node change (issue 12). A change that is
//! not one keyed item's (a pool, a resync of a whole kind) is recorded as "everything", and a
//! reader too far behind (the log keeps [`CAPACITY`] entries) is told "everything" as well.

use std::collections::{BTreeSet, VecDeque};

/// Most keyed changes kept; a reader further behind rebuilds from the whole view.
pub const CAPACITY: usize = 4096;

/// The log. Bookkeeping, not content: two views with the same content are equal whatever
/// their logs say.
#[derive(Debug, Clone)]
pub struct ChangeLog<K> {
    /// The number of the last change recorded (0: none yet).
    seq: u64,
    /// The number of the last change that may have touched anything.
    all: u64,
    /// Keyed changes, oldest first, with their numbers.
    keyed: VecDeque<(u64, K)>,
}

impl<K> Default for ChangeLog<K> {
    fn default() -> Self {
        ChangeLog {
            seq: 0,
            all: 0,
            keyed: VecDeque::new(),
        }
    }
}

impl<K> PartialEq for ChangeLog<K> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<K> Eq for ChangeLog<K> {}

/// What changed since a reader's last look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Since<K> {
    /// Anything may have changed: read the whole view.
    All,
    /// Only these items changed (none: nothing did).
    Keys(BTreeSet<K>),
}

impl<K: Ord + Clone> ChangeLog<K> {
    /// The number to remember and hand to [`ChangeLog::since`] next time.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Records a change of item `key`.
    pub fn changed(&mut self, key: K) {
        self.seq += 1;
        if self.keyed.len() == CAPACITY {
            self.keyed.pop_front();
        }
        self.keyed.push_back((self.seq, key));
    }

    /// Records a change that may have touched anything.
    pub fn changed_all(&mut self) {
        self.seq += 1;
        self.all = self.seq;
        self.keyed.clear();
    }

    /// What changed after change number `seen` (a number [`ChangeLog::seq`] gave).
    pub fn since(&self, seen: u64) -> Since<K> {
        if seen >= self.seq {
            return Since::Keys(BTreeSet::new());
        }
        if self.all > seen {
            return Since::All;
        }
        // The entries after `seen` must all still be here.
        match self.keyed.front() {
            Some((first, _)) if *first <= seen + 1 => {}
            _ => return Since::All,
        }
        let start = self.keyed.partition_point(|(n, _)| *n <= seen);
        Since::Keys(self.keyed.range(start..).map(|(_, k)| k.clone()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_gets_the_keys_changed_since_its_last_look() {
        let mut log = ChangeLog::default();
        assert_eq!(log.since(0), Since::Keys(BTreeSet::new()));
        log.changed("a");
        let seen = log.seq();
        log.changed("b");
        log.changed("a");
        assert_eq!(log.since(seen), Since::Keys(["a", "b"].into()));
        assert_eq!(log.since(0), Since::Keys(["a", "b"].into()));
        assert_eq!(log.since(log.seq()), Since::Keys(BTreeSet::new()));
        log.changed_all();
        assert_eq!(log.since(seen), Since::All);
        let after = log.seq();
        log.changed("c");
        assert_eq!(log.since(after), Since::Keys(["c"].into()));
        assert_eq!(log.since(after - 1), Since::All);
    }

    #[test]
    fn a_reader_behind_the_kept_entries_reads_everything() {
        let mut log = ChangeLog::default();
        for i in 0..CAPACITY + 2 {
            log.changed(i);
        }
        assert_eq!(log.since(0), Since::All);
        assert_eq!(log.since(1), Since::All);
        match log.since(2) {
            Since::Keys(k) => assert_eq!(k.len(), CAPACITY),
            Since::All => panic!("the entries after 2 are all kept"),
        }
        let tail = log.since(CAPACITY as u64);
        assert_eq!(tail, Since::Keys([CAPACITY, CAPACITY + 1].into()));
    }
}
