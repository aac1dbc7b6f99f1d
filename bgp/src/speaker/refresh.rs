//! The speaker's side of route refresh (RFC 2918) and enhanced route refresh (RFC 7313 §4):
//! a request is answered with the family's table, framed by Begin-of-RR and End-of-RR when
//! enhanced route refresh was negotiated; the peer's own BoRR and EoRR mark and sweep its
//! routes in the RIB. Reserved subtypes are ignored (§3).

use super::Speaker;
use crate::session::PeerId;
use crate::wire::{CodecContext, Family, Message, RouteRefresh};
use tracing::{debug, info};

/// The ROUTE-REFRESH message subtypes (RFC 7313 §3).
pub mod subtype {
    pub const REQUEST: u8 = 0;
    pub const BEGIN: u8 = 1;
    pub const END: u8 = 2;
}

impl Speaker {
    pub(super) async fn on_route_refresh(&mut self, peer: PeerId, refresh: RouteRefresh) {
        let Some(family) = Family::from_afi_safi(refresh.afi, refresh.safi) else {
            debug!(
                peer,
                ?refresh,
                "route refresh for an unknown family, ignored"
            );
            return;
        };
        if !self.rib.has_family(peer, family) {
            debug!(peer, %family, "route refresh for a family not negotiated, ignored");
            return;
        }
        let enhanced = self
            .peers
            .get(&peer)
            .is_some_and(|s| s.enhanced_route_refresh);
        match refresh.subtype {
            subtype::REQUEST => {
                info!(peer, %family, "route refresh requested");
                if enhanced {
                    self.send_refresh_marker(peer, family, subtype::BEGIN).await;
                }
                let exports = self.rib.refresh(peer, family);
                self.send_exports(exports).await;
                if enhanced {
                    self.send_refresh_marker(peer, family, subtype::END).await;
                }
            }
            subtype::BEGIN if enhanced => {
                debug!(peer, %family, "peer begins a route refresh");
                self.rib.begin_refresh(peer, family);
            }
            subtype::END if enhanced => match self.rib.end_refresh(peer, family) {
                Some(exports) => {
                    debug!(peer, %family, "peer ended its route refresh");
                    self.send_exports(exports).await;
                    self.publish_changes();
                }
                None => debug!(peer, %family, "End-of-RR without Begin-of-RR, ignored"),
            },
            other => {
                debug!(
                    peer,
                    subtype = other,
                    enhanced,
                    "ROUTE-REFRESH subtype ignored"
                );
            }
        }
    }

    async fn send_refresh_marker(&mut self, peer: PeerId, family: Family, subtype: u8) {
        let (afi, safi) = family.afi_safi();
        let msg = Message::RouteRefresh(RouteRefresh { afi, subtype, safi });
        // A ROUTE-REFRESH's encoding depends on no negotiated capability.
        if let Ok(bytes) = msg.to_bytes(&CodecContext::default()) {
            self.send_to(peer, bytes).await;
        }
    }
}
