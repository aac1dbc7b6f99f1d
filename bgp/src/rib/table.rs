//! Routes per prefix: for each prefix, the paths received from each peer (the Adj-RIBs-In,
//! kept logically) with the best one first (the Loc-RIB).
//!
//! A prefix with one path holds it inline: no vector is allocated for the common case of a
//! prefix learned from one peer only.

use super::PeerId;
use super::intern::{StoredAttrs, hash_table_bytes};
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

/// The peer id that marks a locally originated path.
pub const LOCAL_PEER: PeerId = PeerId::MAX;

/// One path: who sent it and what it carries (16 bytes).
#[derive(Debug, Clone)]
pub struct Path {
    pub attrs: Arc<StoredAttrs>,
    pub peer: PeerId,
    /// The sender's session epoch when the path arrived: a path from an earlier epoch than
    /// its peer's current one is stale (graceful restart, RFC 4724 §4.2). It fills padding.
    pub epoch: u32,
}

impl Path {
    /// True when both are the same path: same peer, same interned attributes.
    pub fn same(&self, other: &Path) -> bool {
        self.peer == other.peer && Arc::ptr_eq(&self.attrs, &other.attrs)
    }

    pub fn is_local(&self) -> bool {
        self.peer == LOCAL_PEER
    }
}

/// The paths of one prefix, never empty; the first one is the best.
#[derive(Debug)]
pub enum Paths {
    One(Path),
    Many(Box<Vec<Path>>),
}

impl Paths {
    pub fn as_slice(&self) -> &[Path] {
        match self {
            Paths::One(p) => std::slice::from_ref(p),
            Paths::Many(v) => v,
        }
    }

    /// The best path (the decision process keeps it first).
    pub fn best(&self) -> &Path {
        &self.as_slice()[0]
    }

    pub fn from_peer(&self, peer: PeerId) -> Option<&Path> {
        self.as_slice().iter().find(|p| p.peer == peer)
    }

    /// Adds `path`, replacing the path from the same peer if there is one (returned).
    fn upsert(&mut self, path: Path) -> Option<Path> {
        match self {
            Paths::One(p) if p.peer == path.peer => Some(std::mem::replace(p, path)),
            Paths::One(p) => {
                let first = p.clone();
                *self = Paths::Many(Box::new(vec![first, path]));
                None
            }
            Paths::Many(v) => match v.iter_mut().find(|p| p.peer == path.peer) {
                Some(p) => Some(std::mem::replace(p, path)),
                None => {
                    v.push(path);
                    None
                }
            },
        }
    }

    /// Removes the path from `peer` out of a `Many` (the table drops a `One` entry whole).
    /// The order of the rest changes: the caller reselects the best path.
    fn remove_from_many(&mut self, peer: PeerId) -> Option<Path> {
        let Paths::Many(v) = self else {
            return None;
        };
        let i = v.iter().position(|p| p.peer == peer)?;
        let removed = v.swap_remove(i);
        if v.len() == 1 {
            let last = v.pop()?;
            *self = Paths::One(last);
        }
        Some(removed)
    }

    /// Moves the path at `index` first, making it the best.
    pub fn promote(&mut self, index: usize) {
        if let Paths::Many(v) = self {
            v.swap(0, index);
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            Paths::One(_) => 0,
            Paths::Many(v) => {
                std::mem::size_of::<Vec<Path>>() + v.capacity() * std::mem::size_of::<Path>()
            }
        }
    }
}

/// The routes of one address family, keyed by prefix.
#[derive(Debug)]
pub struct Table<K> {
    map: HashMap<K, Paths>,
}

impl<K> Default for Table<K> {
    fn default() -> Self {
        Table {
            map: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq + Copy> Table<K> {
    /// Adds a path; returns the path it replaced (the same peer's previous one).
    /// The caller reselects the best path afterwards.
    pub fn insert(&mut self, key: K, path: Path) -> Option<Path> {
        match self.map.get_mut(&key) {
            Some(paths) => paths.upsert(path),
            None => {
                self.map.insert(key, Paths::One(path));
                None
            }
        }
    }

    /// Removes `peer`'s path for `key`, dropping the entry when it was the last path.
    pub fn remove(&mut self, key: &K, peer: PeerId) -> Option<Path> {
        let paths = self.map.get_mut(key)?;
        match paths {
            Paths::One(p) if p.peer == peer => match self.map.remove(key) {
                Some(Paths::One(p)) => Some(p),
                _ => None,
            },
            Paths::One(_) => None,
            Paths::Many(_) => paths.remove_from_many(peer),
        }
    }

    pub fn get(&self, key: &K) -> Option<&Paths> {
        self.map.get(key)
    }

    pub fn get_mut(&mut self, key: &K) -> Option<&mut Paths> {
        self.map.get_mut(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &Paths)> {
        self.map.iter()
    }

    /// Number of prefixes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Bytes used by the table: buckets from its capacity, plus the vectors of prefixes with
    /// more than one path. The interned attributes are counted by their interner.
    pub fn memory_estimate(&self) -> usize {
        let many: usize = self.map.values().map(Paths::heap_bytes).sum();
        hash_table_bytes::<(K, Paths)>(self.map.capacity()) + many
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::PathAttributes;
    use ipnet::Ipv4Net;

    fn path(peer: PeerId) -> Path {
        Path {
            attrs: Arc::new(StoredAttrs {
                attrs: Arc::new(PathAttributes::default()),
                next_hop: None,
            }),
            peer,
            epoch: 0,
        }
    }

    fn key() -> Ipv4Net {
        "10.0.0.0/24".parse().unwrap()
    }

    #[test]
    fn path_and_single_path_entry_stay_small() {
        assert_eq!(std::mem::size_of::<Path>(), 16);
        assert_eq!(
            std::mem::size_of::<Paths>(),
            16,
            "the One/Many tag must fit in a niche"
        );
    }

    #[test]
    fn second_peer_turns_entry_into_many_and_back() {
        let mut t = Table::default();
        assert!(t.insert(key(), path(1)).is_none());
        assert!(matches!(t.get(&key()), Some(Paths::One(_))));
        assert!(t.insert(key(), path(2)).is_none());
        assert_eq!(t.get(&key()).map(|p| p.as_slice().len()), Some(2));
        assert_eq!(t.remove(&key(), 1).map(|p| p.peer), Some(1));
        assert!(matches!(t.get(&key()), Some(Paths::One(p)) if p.peer == 2));
        assert_eq!(t.remove(&key(), 2).map(|p| p.peer), Some(2));
        assert!(t.is_empty());
    }

    #[test]
    fn same_peer_replaces_its_path() {
        let mut t = Table::default();
        t.insert(key(), path(1));
        t.insert(key(), path(2));
        let old = t.insert(key(), path(1));
        assert_eq!(old.map(|p| p.peer), Some(1));
        assert_eq!(t.get(&key()).map(|p| p.as_slice().len()), Some(2));
        assert!(t.remove(&key(), 3).is_none());
    }
}
