//! Graceful restart's stale paths (RFC 4724 §4.2), helper side.
//!
//! When a session that negotiated graceful restart is lost, its paths stay where they are:
//! the peer leaves its update group (nothing is sent to it) and its session epoch is bumped,
//! which makes every path it sent so far stale in O(1), without touching the table. Paths it
//! sends on the next session carry the new epoch; its End-of-RIB for a family (or a timer the
//! speaker runs) sweeps what is still stale in that family.

use super::export::PeerKind;
use super::table::{Paths, Table};
use super::{Export, PeerId, PeerInfo, Rib, Touched};
use crate::wire::{Family, Prefix};
use std::hash::Hash;

/// The prefixes of `table` holding a path from `peer` older than `epoch`.
fn stale_keys<K: Hash + Eq + Copy>(table: &Table<K>, peer: PeerId, epoch: u32) -> Vec<K> {
    table
        .iter()
        .filter(|(_, ps): &(&K, &Paths)| ps.from_peer(peer).is_some_and(|p| p.epoch != epoch))
        .map(|(k, _)| *k)
        .collect()
}

impl Rib {
    /// The session with `id` was lost in a way that lets graceful restart keep its routes:
    /// the paths of the families in `keep` stay (stale, still best where they were), those of
    /// other families are flushed. With `keep` empty this is [`Rib::peer_down`].
    pub fn peer_lost(&mut self, id: PeerId, keep: &[Family]) -> Vec<Export> {
        if keep.is_empty() {
            return self.peer_down(id);
        }
        if !self.peers.get(&id).is_some_and(|s| s.up) {
            return Vec::new();
        }
        self.clear_filtered(id);
        let Some(state) = self.peers.get_mut(&id) else {
            return Vec::new();
        };
        state.up = false;
        state.advertised = 0;
        state.rejected.clear();
        state.epoch = state.epoch.wrapping_add(1);
        let gid = state.group;
        if let Some(g) = self.groups.get_mut(&gid) {
            g.remove(id);
        }
        let mut exports = Vec::new();
        for family in [Family::Ipv4Unicast, Family::Ipv6Unicast] {
            if !keep.contains(&family) {
                exports.extend(self.flush_family(id, family));
            }
        }
        if let Some(state) = self.peers.get_mut(&id) {
            state.stale = state.accepted;
            state.refreshing.clear();
        }
        exports
    }

    /// Removes the paths of `id` in `family` that are older than its current session: after
    /// its End-of-RIB, or when the restart or stale timer ran out. A peer that is not up and
    /// has nothing left is forgotten.
    pub fn sweep_stale(&mut self, id: PeerId, family: Family) -> Vec<Export> {
        let Some(state) = self.peers.get(&id) else {
            return Vec::new();
        };
        let epoch = state.epoch;
        let prefixes: Vec<Prefix> = match family {
            Family::Ipv4Unicast => stale_keys(&self.v4, id, epoch)
                .into_iter()
                .map(Prefix::V4)
                .collect(),
            Family::Ipv6Unicast => stale_keys(&self.v6, id, epoch)
                .into_iter()
                .map(Prefix::V6)
                .collect(),
        };
        let mut touched = Touched::default();
        for prefix in prefixes {
            self.remove_path(prefix, id, &mut touched);
        }
        let exports = self.finish(touched);
        let forget = self
            .peers
            .get(&id)
            .is_some_and(|s| !s.up && s.accepted == 0);
        if forget {
            self.forget(id);
        }
        exports
    }

    /// Stale paths still held from `id`.
    pub fn stale_count(&self, id: PeerId) -> u64 {
        self.peers.get(&id).map_or(0, |s| s.stale)
    }

    /// Whether `id` has an Established session in the RIB.
    pub fn is_up(&self, id: PeerId) -> bool {
        self.peers.get(&id).is_some_and(|s| s.up)
    }

    /// Whether the RIB still holds state (stale paths) for a peer that is not up.
    pub fn is_waiting(&self, id: PeerId) -> bool {
        self.peers.get(&id).is_some_and(|s| !s.up)
    }

    /// A path of `peer` from an older epoch went away (replaced or removed).
    pub(super) fn note_stale_gone(&mut self, peer: PeerId, epoch: u32) {
        if let Some(s) = self.peers.get_mut(&peer)
            && s.epoch != epoch
        {
            s.stale = s.stale.saturating_sub(1);
        }
    }

    /// A peer with stale paths came back as the same kind of peer: it rejoins an update group
    /// and gets our table; its stale paths wait for its End-of-RIB.
    pub(super) fn rejoin(&mut self, id: PeerId, info: PeerInfo) -> Vec<Export> {
        let key = super::export::GroupKey::of(&info);
        let gid = match self.groups.iter().find(|(_, g)| g.key == key) {
            Some((&gid, _)) => gid,
            None => {
                let gid = self.next_group;
                self.next_group += 1;
                self.groups
                    .insert(gid, super::export::UpdateGroup::new(key.clone()));
                gid
            }
        };
        let old_group = self.peers.get(&id).map(|s| s.group);
        if let Some(old) = old_group
            && old != gid
            && self.groups.get(&old).is_some_and(|g| g.members.is_empty())
        {
            self.groups.remove(&old);
        }
        let kind = PeerKind::of(&info);
        if let Some(state) = self.peers.get_mut(&id) {
            state.info = info;
            state.kind = kind;
            state.group = gid;
            state.up = true;
            state.advertised = 0;
        }
        if let Some(g) = self.groups.get_mut(&gid) {
            g.add(id);
        }
        self.table_for(id, None)
    }

    /// Removes every path of `id` in `family`, stale or not.
    fn flush_family(&mut self, id: PeerId, family: Family) -> Vec<Export> {
        let prefixes = self.peer_prefixes(id, family);
        let mut touched = Touched::default();
        for prefix in prefixes {
            self.remove_path(prefix, id, &mut touched);
        }
        self.finish(touched)
    }

    /// The prefixes of `family` holding a path from `id`, stale or not.
    pub(super) fn peer_prefixes(&self, id: PeerId, family: Family) -> Vec<Prefix> {
        match family {
            Family::Ipv4Unicast => self
                .v4
                .iter()
                .filter(|(_, ps)| ps.from_peer(id).is_some())
                .map(|(k, _)| Prefix::V4(*k))
                .collect(),
            Family::Ipv6Unicast => self
                .v6
                .iter()
                .filter(|(_, ps)| ps.from_peer(id).is_some())
                .map(|(k, _)| Prefix::V6(*k))
                .collect(),
        }
    }
}
