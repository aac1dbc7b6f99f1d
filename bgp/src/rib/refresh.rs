//! Route refresh (RFC 2918) and enhanced route refresh (RFC 7313) in the RIB.
//!
//! Answering a request is the table of one family for one peer. Receiving a refresh is the
//! other half: at the peer's Begin-of-RR (BoRR) the prefixes it holds in that family are noted;
//! each one it re-sends (or withdraws) before its End-of-RR (EoRR) is crossed off, and what is
//! left at EoRR is gone from the peer's Adj-RIB-Out, so it is removed here (§4). This is kept
//! apart from graceful restart's session epochs, so a refresh of one family never makes the
//! paths of another look stale.

use super::{Export, PeerId, Rib, Touched};
use crate::wire::{Family, Prefix, Update};
use std::collections::HashSet;

impl Rib {
    /// Whether `id` is up with `family` negotiated.
    pub fn has_family(&self, id: PeerId, family: Family) -> bool {
        self.peers
            .get(&id)
            .is_some_and(|s| s.up && s.info.families.contains(&family))
    }

    /// The peer asked for our routes of `family` again (ROUTE-REFRESH): the whole table of
    /// that family as that peer should have it, for it alone.
    pub fn refresh(&mut self, id: PeerId, family: Family) -> Vec<Export> {
        if !self.has_family(id, family) {
            return Vec::new();
        }
        self.table_for(id, Some(family))
    }

    /// The peer's Begin-of-RR for `family`: notes every prefix it holds there. A second BoRR
    /// before the EoRR starts the refresh over (RFC 7313 §4). Returns whether the refresh
    /// started (the peer is up with the family).
    pub fn begin_refresh(&mut self, id: PeerId, family: Family) -> bool {
        if !self.has_family(id, family) {
            return false;
        }
        let mut held: HashSet<Prefix> = self.peer_prefixes(id, family).into_iter().collect();
        let Some(state) = self.peers.get_mut(&id) else {
            return false;
        };
        // Prefixes it sent that failed import are part of its Adj-RIB-Out too.
        held.extend(state.rejected.iter().filter(|p| Family::of(p) == family));
        state.refreshing.retain(|(f, _)| *f != family);
        state.refreshing.push((family, held));
        true
    }

    /// The peer's End-of-RR for `family`: removes what it held at BoRR and did not re-send.
    /// An EoRR without a BoRR is ignored (`None`).
    pub fn end_refresh(&mut self, id: PeerId, family: Family) -> Option<Vec<Export>> {
        let state = self.peers.get_mut(&id)?;
        let at = state.refreshing.iter().position(|(f, _)| *f == family)?;
        let (_, left) = state.refreshing.swap_remove(at);
        for prefix in &left {
            state.rejected.remove(prefix);
        }
        let mut touched = Touched::default();
        for prefix in left {
            self.drop_filtered(id, prefix);
            self.remove_path(prefix, id, &mut touched);
        }
        Some(self.finish(touched))
    }

    /// Crosses the prefixes of `update` off the peer's refreshes in progress.
    pub(super) fn note_refreshed(&mut self, id: PeerId, update: &Update) {
        let Some(state) = self.peers.get_mut(&id) else {
            return;
        };
        if state.refreshing.is_empty() {
            return;
        }
        for prefix in update
            .all_withdrawn()
            .into_iter()
            .chain(update.all_announced())
        {
            let prefix = prefix.trunc();
            let family = Family::of(&prefix);
            if let Some((_, held)) = state.refreshing.iter_mut().find(|(f, _)| *f == family) {
                held.remove(&prefix);
            }
        }
    }
}
