//! When this speaker sends End-of-RIB (RFC 4724 §2): after a session's initial table; in
//! cluster mode (`Config::await_originator`) not before this node's originator (felix, over the
//! API) has said what the node originates, or [`ORIGINATE_WAIT`] after start, whichever comes
//! first.
//!
//! Peers that kept our routes as stale while we restarted (gracefully or after a crash) sweep,
//! on our End-of-RIB, whatever it did not refresh. Sent before felix told the new process the
//! node's blocks, it would withdraw them across the cluster until felix does: pod traffic to
//! this node is lost for that gap.

use super::Speaker;
use crate::fsm::State;
use crate::session::PeerId;
use crate::wire::{CodecContext, Family, Message, Update};
use std::time::Duration;
use tracing::info;

/// How long End-of-RIB waits for the first word from the originator after start.
pub(super) const ORIGINATE_WAIT: Duration = Duration::from_secs(2);

/// A session whose End-of-RIB waits for the originator.
#[derive(Debug)]
pub(super) struct DeferredEor {
    peer: PeerId,
    families: Vec<Family>,
    ctx: CodecContext,
}

impl Speaker {
    /// Sends End-of-RIB for `families` to `peer` now, or once origination has settled.
    pub(super) async fn end_of_rib(
        &mut self,
        peer: PeerId,
        families: Vec<Family>,
        ctx: CodecContext,
    ) {
        if self.origination_settled {
            self.send_end_of_rib(peer, &families, &ctx).await;
        } else {
            self.deferred_eor.retain(|d| d.peer != peer);
            self.deferred_eor.push(DeferredEor {
                peer,
                families,
                ctx,
            });
        }
    }

    async fn send_end_of_rib(&mut self, peer: PeerId, families: &[Family], ctx: &CodecContext) {
        for f in families {
            if let Ok(b) = Message::Update(Update::end_of_rib(*f)).to_bytes(ctx) {
                self.send_to(peer, b).await;
            }
        }
    }

    /// The originator has set this node's prefixes (or will not in time): the deferred
    /// End-of-RIBs go to the sessions still Established.
    pub(super) async fn settle_origination(&mut self, why: &str) {
        if self.origination_settled {
            return;
        }
        self.origination_settled = true;
        let deferred = std::mem::take(&mut self.deferred_eor);
        info!(
            sessions = deferred.len(),
            after_ms = self.started.elapsed().as_millis() as u64,
            why,
            "origination settled: sending End-of-RIB"
        );
        for d in deferred {
            if self
                .peers
                .get(&d.peer)
                .is_some_and(|s| s.state == State::Established)
            {
                self.send_end_of_rib(d.peer, &d.families, &d.ctx).await;
            }
        }
    }

    /// Settles origination once [`ORIGINATE_WAIT`] has passed without the originator.
    pub(super) async fn eor_tick(&mut self) {
        if !self.origination_settled && self.started.elapsed() >= ORIGINATE_WAIT {
            self.settle_origination("no originator within the wait")
                .await;
        }
    }
}
