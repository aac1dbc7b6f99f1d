//! Neighbours changed one at a time: what a reload does for a single address (add, restart
//! on new session settings, or follow new filters and BFD timers in place), and the reload
//! of only the neighbours that changed, which cluster mode sends on a Node event so the cost
//! of one Node change does not grow with the number of peers (issue 12).

use super::{ReloadSummary, Speaker};
use crate::config::Neighbor;
use crate::session::PeerId;
use crate::wire::notif;
use std::net::IpAddr;

impl Speaker {
    /// Brings the session to `n`'s address to `n`'s settings: a new peer is added, one whose
    /// session settings changed restarts, and one whose filters or BFD timers changed keeps
    /// its session and is listed in `touched` (its policy is rebuilt by the caller).
    pub(super) async fn set_neighbor(
        &mut self,
        n: &Neighbor,
        summary: &mut ReloadSummary,
        touched: &mut Vec<PeerId>,
    ) {
        let addr = *n.address.get_ref();
        let Some(id) = self.by_addr.get(&addr).copied() else {
            self.add_peer(n.clone());
            summary.added.push(addr);
            return;
        };
        if !self.peers[&id].same_settings(n) {
            self.remove_peer(id, notif::OTHER_CONFIGURATION_CHANGE)
                .await;
            self.add_peer(n.clone());
            summary.restarted.push(addr);
            return;
        }
        if let Some(slot) = self.peers.get_mut(&id)
            && slot.neighbor != *n
        {
            slot.neighbor = n.clone();
            touched.push(id);
            self.bfd_follow(n);
        }
        summary.unchanged += 1;
    }

    /// Applies the neighbours that changed (`changed`: new or other settings) and those that
    /// are gone (`removed`), leaving every other session and the rest of the configuration
    /// as they are.
    pub(super) async fn reload_neighbors(
        &mut self,
        changed: Vec<Neighbor>,
        removed: Vec<IpAddr>,
    ) -> ReloadSummary {
        let mut summary = ReloadSummary::default();
        let mut touched = Vec::new();
        for addr in &removed {
            if let Some(id) = self.by_addr.get(addr).copied() {
                self.remove_peer(id, notif::PEER_DECONFIGURED).await;
                summary.removed.push(*addr);
            }
        }
        for n in &changed {
            self.set_neighbor(n, &mut summary, &mut touched).await;
        }
        if !touched.is_empty() {
            self.apply_policy(Some(touched)).await;
        }
        summary
    }
}
