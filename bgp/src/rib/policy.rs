//! Policy changes on a live session: a new export policy moves the peer to the update group
//! of its new key and sends it only the difference; a new import policy drops what it now
//! rejects (the speaker then asks the peer for a route refresh to get what it now accepts).

use super::export::{Audience, Batch, ExportBuilder, GroupKey};
use super::table::Paths;
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

    /// Changes the import policy of peer `id`: its accepted paths that the new policy rejects
    /// are dropped (they stay counted as received). Paths it rejected before and now accepts
    /// are not held: the caller asks the peer for a route refresh. Returns the exports of the
    /// dropped paths.
    pub fn set_import_policy(&mut self, id: PeerId, policy: Arc<FilterChain>) -> Vec<Export> {
        let Some(state) = self.peers.get_mut(&id) else {
            return Vec::new();
        };
        if *state.info.import == *policy {
            return Vec::new();
        }
        state.info.import = Arc::clone(&policy);
        let (interface, role) = (state.info.interface.clone(), state.info.role);
        let mut dropped = Vec::new();
        for family in [Family::Ipv4Unicast, Family::Ipv6Unicast] {
            for prefix in self.peer_prefixes(id, family) {
                let facts = RouteFacts {
                    prefix,
                    source: RouteSource::Peer(role),
                    interface: interface.as_deref(),
                };
                if !policy.accepts_import(&facts) {
                    dropped.push(prefix);
                }
            }
        }
        let mut touched = Touched::default();
        for prefix in dropped {
            self.remove_path(prefix, id, &mut touched);
            if let Some(s) = self.peers.get_mut(&id) {
                s.rejected.insert(prefix);
            }
        }
        self.finish(touched)
    }
}
