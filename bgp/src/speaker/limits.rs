//! Prefix limits (`max-prefixes`): after each UPDATE the prefixes held from the peer are counted
//! per address family; over the limit the speaker warns (log and metric, session kept) or
//! closes the session with Cease / Maximum Number of Prefixes Reached (RFC 4486 §4), drops its
//! routes and starts it again after the neighbour's restart delay.

use super::Speaker;
use crate::config::{MaxPrefixAction, PrefixLimit};
use crate::session::{self, PeerId};
use crate::wire::{Family, Notification, notif};
use bytes::{BufMut, Bytes, BytesMut};
use std::time::Instant;
use tracing::{info, warn};

/// What the limit tracks for one peer.
#[derive(Debug, Default)]
pub(crate) struct LimitState {
    /// Families currently over the limit (a warning is logged once per crossing).
    pub over: Vec<Family>,
    /// Times the limit was exceeded since the speaker started (the metric).
    pub exceeded: u64,
    /// The session was closed by the limit and stays down until then.
    pub held_until: Option<Instant>,
}

/// The Cease data of RFC 4486 §4: AFI (2 octets), SAFI (1), the limit (4).
pub(crate) fn cease_data(family: Family, max: u32) -> Bytes {
    let (afi, safi) = family.afi_safi();
    let mut b = BytesMut::with_capacity(7);
    b.put_u16(afi);
    b.put_u8(safi);
    b.put_u32(max);
    b.freeze()
}

impl Speaker {
    /// Whether UPDATEs from `peer` are ignored: its session was closed by the limit and the
    /// messages still queued from it must not bring its routes back.
    pub(super) fn held_by_limit(&self, peer: PeerId) -> bool {
        self.peers
            .get(&peer)
            .is_some_and(|s| s.limit.held_until.is_some())
    }

    /// Applies the peer's prefix limit after an UPDATE from it.
    pub(super) async fn check_prefix_limit(&mut self, peer: PeerId) {
        let Some(slot) = self.peers.get(&peer) else {
            return;
        };
        let Some(limit) = slot.neighbor.prefix_limit() else {
            return;
        };
        let families = slot.neighbor.families();
        for family in families {
            let held = self.rib.received_in(peer, family);
            let Some(slot) = self.peers.get_mut(&peer) else {
                return;
            };
            if held <= u64::from(limit.max) {
                slot.limit.over.retain(|f| *f != family);
                continue;
            }
            if slot.limit.over.contains(&family) {
                continue;
            }
            slot.limit.over.push(family);
            slot.limit.exceeded += 1;
            match limit.action {
                MaxPrefixAction::Warn => {
                    warn!(peer = %slot.address(), %family, held, max = limit.max,
                        "maximum prefixes exceeded; keeping the session (max-prefix-action = warn)");
                }
                MaxPrefixAction::Cease => {
                    self.cease_for_limit(peer, family, held, limit).await;
                    return;
                }
            }
        }
    }

    async fn cease_for_limit(&mut self, peer: PeerId, family: Family, held: u64, l: PrefixLimit) {
        let Some(slot) = self.peers.get_mut(&peer) else {
            return;
        };
        let reason = format!(
            "maximum prefixes reached: {held} {family} prefixes, limit {}; restarting in {} s",
            l.max,
            l.restart.as_secs()
        );
        warn!(peer = %slot.address(), %family, held, max = l.max, "{reason}");
        slot.last_error = Some(reason);
        slot.limit.held_until = Some(Instant::now() + l.restart);
        slot.limit.over.clear();
        let notification = Notification::new(
            notif::CEASE,
            notif::MAX_PREFIXES_REACHED,
            cease_data(family, l.max),
        );
        // Not awaited: the session task reports its way down through the event queue this
        // task drains.
        let handle = slot.handle.clone();
        tokio::spawn(handle.shutdown(Some(notification)));
        slot.gr = Default::default();
        let exports = self.rib.peer_down(peer);
        self.send_exports(exports).await;
        self.publish_changes();
    }

    /// Starts again the sessions whose hold-down after a limit Cease is over.
    pub(super) fn limit_tick(&mut self) {
        let now = Instant::now();
        let due: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, s)| s.limit.held_until.is_some_and(|t| t <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(neighbor) = self.peers.get(&id).map(|s| s.neighbor.clone()) else {
                continue;
            };
            let handle = session::spawn(id, self.peer_config(&neighbor), self.events_tx.clone());
            if let Ok(mut d) = self.dispatch.write() {
                d.insert(*neighbor.address.get_ref(), handle.clone());
            }
            if let Some(slot) = self.peers.get_mut(&id) {
                info!(peer = %slot.address(), "prefix limit hold-down over; starting the session again");
                slot.handle = handle;
                slot.limit.held_until = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cease_data_carries_afi_safi_and_the_limit() {
        assert_eq!(
            &cease_data(Family::Ipv4Unicast, 1000)[..],
            &[0, 1, 1, 0, 0, 0x03, 0xe8]
        );
        assert_eq!(
            &cease_data(Family::Ipv6Unicast, 7)[..],
            &[0, 2, 1, 0, 0, 0, 7]
        );
    }
}
