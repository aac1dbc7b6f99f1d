//! Policy changes on a live session: a new export policy moves the peer to the update group
//! of its new key and sends it only the difference; a new import policy drops what it now
//! rejects and takes back what an import filter turned away and it now accepts (paths turned
//! away are held with their attributes for that; the speaker also asks the peer for a route
//! refresh, for paths that failed the import checks).

use super::export::{Audience, Batch, ExportBuilder, GroupKey};
use super::intern::StoredAttrs;
use super::table::{Path, Paths};
use super::{Export, PeerId, Rib, Touched, source};
use crate::policy::{ExportPolicy, FilterChain, RouteFacts, RouteSource};
use crate::wire::{Family, Prefix};
use std::sync::Arc;

impl Rib {
    /// The import filters of peer `id`, if it is known.
    pub fn import_policy(&self, id: PeerId) -> Option<&FilterChain> {
        self.peers.get(&id).map(|s| &*s.info.import)
    }

    /// The families negotiated with peer `id` while it is up.
    pub fn families_of(&self, id: PeerId) -> Vec<Family> {
        self.peers
            .get(&id)
            .filter(|s| s.up)
            .map(|s| s.info.families.clone())
            .unwrap_or_default()
    }

    /// Changes the export policy of peer `id`: it joins the update group of its new key and
    /// is sent what it should now have and did not, and withdrawn what it should no longer
    /// have. Nothing is sent when the policy is the same.
    pub fn set_export_policy(&mut self, id: PeerId, policy: Arc<ExportPolicy>) -> Vec<Export> {
        let Some(state) = self.peers.get_mut(&id) else {
            return Vec::new();
        };
        if *state.info.export == *policy {
            return Vec::new();
        }
        state.info.export = Arc::clone(&policy);
        if !state.up {
            // Its group is chosen again when the session comes back.
            return Vec::new();
        }
        let old_gid = state.group;
        let key = GroupKey::of(&state.info);
        let new_gid = self.group_for(key.clone());
        if new_gid == old_gid {
            return Vec::new();
        }
        let mut batch = Batch::default();
        let families = key.families.clone();
        let (Some(mut old), Some(mut new)) =
            (self.groups.remove(&old_gid), self.groups.remove(&new_gid))
        else {
            return Vec::new();
        };
        let (local, peers) = (&self.local, &self.peers);
        let mut diff = |prefix: Prefix, paths: &Paths, family: Family| {
            let best = paths.best();
            if best.peer == id {
                return;
            }
            let src = source(local, peers, best.peer);
            let before = old.outgoing(local, &src, best, family, prefix);
            let after = new.outgoing(local, &src, best, family, prefix);
            match (before, after) {
                (None, Some(out)) => {
                    batch.announce(&out, family, prefix);
                    batch.added += 1;
                }
                (Some(b), Some(out)) if *b.0 != *out.0 || b.1 != out.1 => {
                    batch.announce(&out, family, prefix);
                }
                (Some(_), None) => {
                    batch.withdraw(family, prefix);
                    batch.removed += 1;
                }
                _ => {}
            }
        };
        if families.contains(&Family::Ipv4Unicast) {
            for (k, paths) in self.v4.iter() {
                diff(Prefix::V4(*k), paths, Family::Ipv4Unicast);
            }
        }
        if families.contains(&Family::Ipv6Unicast) {
            for (k, paths) in self.v6.iter() {
                diff(Prefix::V6(*k), paths, Family::Ipv6Unicast);
            }
        }
        old.remove(id);
        new.add(id);
        if !old.members.is_empty() {
            self.groups.insert(old_gid, old);
        }
        self.groups.insert(new_gid, new);
        if let Some(s) = self.peers.get_mut(&id) {
            s.group = new_gid;
        }
        let mut builder = ExportBuilder::default();
        *builder.batch(new_gid, Audience::Only(id)) = batch;
        self.finish_exports(builder)
    }

    /// Changes the import policy of peer `id` and re-evaluates what it sent: its accepted
    /// paths that the new policy rejects are dropped (held as filtered, counted as received);
    /// the paths an import filter turned away before and the new policy accepts come back.
    /// Paths that failed the import checks are not held: the caller also asks the peer for a
    /// route refresh. A peer that is down keeps its stale paths as they are.
    pub fn set_import_policy(&mut self, id: PeerId, policy: Arc<FilterChain>) -> Vec<Export> {
        let Some(state) = self.peers.get_mut(&id) else {
            return Vec::new();
        };
        if *state.info.import == *policy {
            return Vec::new();
        }
        state.info.import = Arc::clone(&policy);
        if !state.up {
            return Vec::new();
        }
        let (interface, role, epoch) = (state.info.interface.clone(), state.info.role, state.epoch);
        let accepts = |prefix: Prefix| {
            policy.accepts_import(&RouteFacts {
                prefix,
                source: RouteSource::Peer(role),
                interface: interface.as_deref(),
            })
        };
        let back: Vec<Prefix> = state
            .filtered
            .keys()
            .copied()
            .filter(|p| accepts(*p))
            .collect();
        let mut dropped = Vec::new();
        for family in [Family::Ipv4Unicast, Family::Ipv6Unicast] {
            dropped.extend(
                self.peer_prefixes(id, family)
                    .into_iter()
                    .filter(|p| !accepts(*p)),
            );
        }
        let mut touched = Touched::default();
        for prefix in dropped {
            let held = self
                .paths(&prefix)
                .and_then(|ps| ps.from_peer(id))
                .map(|p| Arc::clone(&p.attrs));
            if let Some(attrs) = held {
                self.hold_filtered(id, prefix, &attrs);
            }
            self.remove_path(prefix, id, &mut touched);
        }
        for prefix in back {
            let Some(attrs) = self.peers.get_mut(&id).and_then(|s| {
                s.rejected.remove(&prefix);
                s.filtered.remove(&prefix)
            }) else {
                continue;
            };
            // The filtered entry's interner user becomes the path's.
            let path = Path {
                attrs,
                peer: id,
                epoch,
            };
            self.insert_path(prefix, path, &mut touched);
        }
        self.finish(touched)
    }

    /// Holds the attributes of a path an import filter turned away (one more interner user).
    pub(super) fn hold_filtered(&mut self, id: PeerId, prefix: Prefix, stored: &Arc<StoredAttrs>) {
        self.stored.acquire(stored);
        let replaced = match self.peers.get_mut(&id) {
            Some(s) => {
                s.rejected.insert(prefix);
                s.filtered.insert(prefix, Arc::clone(stored))
            }
            None => Some(Arc::clone(stored)),
        };
        if let Some(old) = replaced {
            self.release_stored(&old);
        }
    }

    /// Forgets the held attributes of a filtered path, if any.
    pub(super) fn drop_filtered(&mut self, id: PeerId, prefix: Prefix) {
        let held = self
            .peers
            .get_mut(&id)
            .filter(|s| !s.filtered.is_empty())
            .and_then(|s| s.filtered.remove(&prefix));
        if let Some(old) = held {
            self.release_stored(&old);
        }
    }

    /// Forgets every filtered path of the peer (its session is gone).
    pub(super) fn clear_filtered(&mut self, id: PeerId) {
        let held = self
            .peers
            .get_mut(&id)
            .map(|s| std::mem::take(&mut s.filtered))
            .unwrap_or_default();
        for (prefix, old) in held {
            if let Some(s) = self.peers.get_mut(&id) {
                s.rejected.remove(&prefix);
            }
            self.release_stored(&old);
        }
    }
}
