//! The sessions wanted for one address, by rank, the lowest first: almost always one. A
//! sorted vector holds one session in its own size; a `BTreeMap` allocated a node of eleven
//! slots for it (~3.4 KiB per address, 3.4 MiB of a 1,000-node mesh's planner; issue 12).

/// Entries kept sorted by `K`, at most one per key.
#[derive(Debug, Clone)]
pub(super) struct Ranked<K, V> {
    entries: Vec<(K, V)>,
}

impl<K, V> Default for Ranked<K, V> {
    fn default() -> Self {
        Ranked {
            entries: Vec::new(),
        }
    }
}

impl<K: Ord, V> Ranked<K, V> {
    /// Adds `value` under `key`, replacing what the key had.
    pub(super) fn insert(&mut self, key: K, value: V) {
        match self.entries.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(i) => self.entries[i].1 = value,
            Err(i) => {
                // Exactly one more: a vector's first growth would make room for four.
                self.entries.reserve_exact(1);
                self.entries.insert(i, (key, value));
            }
        }
    }

    /// Removes what `key` had.
    pub(super) fn remove(&mut self, key: &K) {
        if let Ok(i) = self.entries.binary_search_by(|(k, _)| k.cmp(key)) {
            self.entries.remove(i);
        }
    }

    /// The value of the lowest key.
    pub(super) fn first(&self) -> Option<&V> {
        self.entries.first().map(|(_, v)| v)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::Ranked;

    #[test]
    fn the_lowest_key_comes_first_and_a_key_holds_one_value() {
        let mut r = Ranked::default();
        assert!(r.is_empty());
        assert_eq!(r.first(), None::<&&str>);
        r.insert(5, "e");
        r.insert(2, "b");
        r.insert(9, "i");
        assert_eq!(r.first(), Some(&"b"));
        r.insert(2, "b2");
        assert_eq!(r.first(), Some(&"b2"));
        assert_eq!(r.entries.len(), 3);
        r.remove(&2);
        assert_eq!(r.first(), Some(&"e"));
        r.remove(&7);
        r.remove(&5);
        r.remove(&9);
        assert!(r.is_empty());
    }

    #[test]
    fn one_entry_costs_its_own_size() {
        let mut r = Ranked::default();
        r.insert((1u8, String::from("node-1")), [0u8; 200]);
        assert_eq!(r.entries.capacity(), 1);
    }
}
