//! Policy changes on live sessions: after a reload, every established peer gets the export
//! policy and import filters the new configuration gives it. Export changes re-export only the
//! difference; import changes drop what is now rejected and ask the peer for a route refresh
//! (RFC 2918) so that what is now accepted arrives. No session is reset.

use super::Speaker;
use super::refresh::subtype;
use crate::session::PeerId;
use crate::wire::{CodecContext, Message, RouteRefresh};
use tracing::{info, warn};

impl Speaker {
    /// Applies the configuration's policy to the given sessions, or to every one.
    pub(super) async fn apply_policy(&mut self, only: Option<Vec<PeerId>>) {
        let ids: Vec<PeerId> = only.unwrap_or_else(|| self.peers.keys().copied().collect());
        for id in ids {
            let Some(slot) = self.peers.get(&id) else {
                continue;
            };
            let export = self.exports.get(self.config.export_policy(&slot.neighbor));
            let import = self.imports.get(self.config.import_chain(&slot.neighbor));
            let exports = self.rib.set_export_policy(id, export);
            if !exports.is_empty() {
                info!(peer = %slot.address(), "export policy changed: re-exported the difference");
            }
            self.send_exports(exports).await;
            if self.rib.import_policy(id).is_none_or(|p| *p == *import) {
                continue;
            }
            let exports = self.rib.set_import_policy(id, import);
            self.send_exports(exports).await;
            self.ask_refresh(id).await;
        }
        self.publish_changes();
    }

    /// Asks the peer to send its routes again (ROUTE-REFRESH, RFC 2918), in every family of the
    /// session.
    async fn ask_refresh(&mut self, id: PeerId) {
        let Some(slot) = self.peers.get(&id) else {
            return;
        };
        let address = slot.address();
        if !slot.route_refresh {
            warn!(peer = %address, "import filters changed but the peer does not support route refresh: routes it sent before and that are now accepted arrive with its next session");
            return;
        }
        let families = self.rib.families_of(id);
        info!(peer = %address, ?families, "import filters changed: asking the peer for its routes again");
        for family in families {
            let (afi, safi) = family.afi_safi();
            let msg = Message::RouteRefresh(RouteRefresh {
                afi,
                subtype: subtype::REQUEST,
                safi,
            });
            if let Ok(bytes) = msg.to_bytes(&CodecContext::default()) {
                self.send_to(id, bytes).await;
            }
        }
    }
}
