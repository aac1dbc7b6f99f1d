//! BFD for the speaker's neighbours: the service starts with the first neighbour that has
//! `bfd = true`; each such neighbour has one session, whose Down reaches the neighbour's
//! current session task through the dispatch map (so a task restarted by a reload or a
//! prefix-limit hold-down is still the one closed), without passing through the speaker task.

use super::Speaker;
use crate::bfd::{self, PeerBfd};
use crate::config::Neighbor;
use std::net::IpAddr;
use tracing::{error, warn};

impl Speaker {
    /// Starts, retimes or stops the BFD session of `n` as its configuration says.
    pub(super) fn bfd_follow(&mut self, n: &Neighbor) {
        let addr = *n.address.get_ref();
        let Some(timers) = n.bfd_timers() else {
            self.bfd_forget(addr);
            return;
        };
        if self.bfd.is_none() {
            match bfd::spawn(self.config.bfd_port) {
                Ok(h) => self.bfd = Some(h),
                Err(e) => {
                    error!(error = %e, "BFD cannot run; sessions with bfd = true rely on the hold timer");
                    return;
                }
            }
        }
        let Some(service) = &self.bfd else {
            return;
        };
        let dispatch = self.dispatch.clone();
        service.add(
            addr,
            n.source_address,
            timers,
            Box::new(move |t| {
                warn!(peer = %addr, diag = %t.diag, "BFD down: closing the BGP session (RFC 5882)");
                if let Some(h) = dispatch.read().ok().and_then(|d| d.get(&addr).cloned()) {
                    h.bfd_down();
                }
            }),
        );
    }

    pub(super) fn bfd_forget(&mut self, addr: IpAddr) {
        if let Some(service) = &self.bfd {
            service.remove(addr);
        }
    }

    pub(super) fn bfd_status(&self, addr: IpAddr) -> Option<PeerBfd> {
        self.bfd.as_ref()?.status(addr)
    }
}
