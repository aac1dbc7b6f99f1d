//! When this speaker sends End-of-RIB (RFC 4724 §2): after a session's initial table; in
//! cluster mode (`Config::await_originator`, or `originate-wait` set in a file) not before this
//! node's originator (felix, over the API) has said what the node originates, or the
//! originate wait after start (`--originate-wait`, default [`DEFAULT_ORIGINATE_WAIT`], never
//! longer than the restart time peers keep our routes), whichever comes first. RFC 4724 lets
//! the restarting speaker defer End-of-RIB until it is ready; a slow node (a loaded machine,
//! a VM without acceleration) needs more than a few seconds to start felix.
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

/// How long End-of-RIB waits for the first word from the originator after start, unless the
/// configuration says otherwise.
pub const DEFAULT_ORIGINATE_WAIT: Duration = Duration::from_secs(30);

/// How long End-of-RIB waits for the originator: `None` when it does not wait (no originator
/// expected, or a wait of 0). `configured` is `originate-wait` in seconds; a file that sets it
/// expects an originator too. Never longer than `restart_time`: past it, peers that lost the
/// session have dropped our routes anyway, and the wait only holds back a restarting peer.
pub(super) fn originate_wait(
    await_originator: bool,
    configured: Option<u16>,
    restart_time: u16,
) -> Option<Duration> {
    if !await_originator && configured.is_none() {
        return None;
    }
    let wait = configured.map_or(DEFAULT_ORIGINATE_WAIT, |s| {
        Duration::from_secs(u64::from(s))
    });
    let wait = wait.min(Duration::from_secs(u64::from(restart_time)));
    (!wait.is_zero()).then_some(wait)
}

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

    /// Settles origination once the originate wait has passed without the originator.
    pub(super) async fn eor_tick(&mut self) {
        if !self.origination_settled && self.started.elapsed() >= self.originate_wait {
            self.settle_origination("no originator within the wait")
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn without_an_originator_end_of_rib_does_not_wait() {
        assert_eq!(originate_wait(false, None, 120), None);
    }

    #[test]
    fn cluster_mode_waits_the_default_or_what_is_set() {
        assert_eq!(
            originate_wait(true, None, 120),
            Some(DEFAULT_ORIGINATE_WAIT)
        );
        assert_eq!(originate_wait(true, Some(2), 120), Some(S(2)));
        assert_eq!(originate_wait(true, Some(90), 120), Some(S(90)));
    }

    #[test]
    fn a_file_that_sets_the_wait_expects_an_originator() {
        assert_eq!(originate_wait(false, Some(45), 120), Some(S(45)));
    }

    #[test]
    fn zero_sends_end_of_rib_at_once() {
        assert_eq!(originate_wait(true, Some(0), 120), None);
        assert_eq!(originate_wait(false, Some(0), 120), None);
    }

    #[test]
    fn never_longer_than_the_restart_time() {
        assert_eq!(originate_wait(true, Some(600), 120), Some(S(120)));
        assert_eq!(originate_wait(true, None, 10), Some(S(10)));
        assert_eq!(originate_wait(true, None, 0), None);
    }
}
