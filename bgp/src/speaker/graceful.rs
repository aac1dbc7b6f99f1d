//! Graceful restart (RFC 4724) in the speaker, both roles.
//!
//! - Helper: a session that negotiated graceful restart and is lost without a NOTIFICATION
//!   (or by hold timer expiry) leaves its paths in the RIB as stale for the peer's restart
//!   time; when it comes back with the forwarding state preserved, they stay until its
//!   End-of-RIB for the family (at most [`STALE_TIME`]) and what was not refreshed goes.
//! - Restarting: a graceful stop closes those sessions without a NOTIFICATION and leaves a
//!   marker file, `<socket>.gr`, holding the stop time. The next start within the restart
//!   time sets the Restart State bit in its OPENs for one restart time, and removes the marker
//!   once the table is complete.
//! - The table is complete ("synced", RFC 4724 §4.1's deferral) once no configured peer
//!   holds it (see [`Completeness`]): a peer that is up holds it until its End-of-RIB for
//!   every family, or for [`NO_EOR_WAIT`] without graceful restart. A peer that is not up
//!   holds it only after a restart (marker present), for [`UP_WAIT`] (capped by the restart
//!   time): a restarted node does not prune kernel routes whose sessions are still coming up.
//!   On a fresh start (no marker) there is nothing to prune, so a peer that is not up holds
//!   nothing back: only its first connection attempt is awaited, for at most
//!   [`FIRST_ATTEMPT_WAIT`]. A dead ToR or a BGPPeer that does not reach this rack no longer
//!   delays a joining node.

use super::Speaker;
use super::handle::WatchEvent;
use super::peers::PeerSlot;
use crate::fsm::{Negotiated, State};
use crate::session::PeerId;
use crate::wire::{Family, GracefulRestart, GracefulRestartFamily};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::{debug, info, warn};

/// How long stale paths wait for End-of-RIB after the peer is back (BIRD's default).
pub(super) const STALE_TIME: Duration = Duration::from_secs(360);
/// How long the table waits at start for a peer that is not Established.
pub(super) const UP_WAIT: Duration = Duration::from_secs(10);
/// On a fresh start, how long the table waits for a peer's first connection attempt.
pub(super) const FIRST_ATTEMPT_WAIT: Duration = Duration::from_secs(1);
/// How long the table waits for End-of-RIB from a peer without graceful restart.
pub(super) const NO_EOR_WAIT: Duration = Duration::from_secs(1);
/// How often the speaker looks at its graceful restart timers.
pub(super) const TICK: Duration = Duration::from_millis(100);

/// The restart marker next to the API socket.
pub(super) fn marker_path(socket: &Path) -> PathBuf {
    let mut s = socket.as_os_str().to_owned();
    s.push(".gr");
    PathBuf::from(s)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whether the previous process stopped gracefully less than `restart_time` ago. A marker too
/// old to matter is removed.
pub(super) fn restarted_gracefully(marker: &Path, restart_time: u16) -> bool {
    let Ok(text) = std::fs::read_to_string(marker) else {
        return false;
    };
    let stopped: u64 = text.trim().parse().unwrap_or(0);
    let fresh = unix_now().saturating_sub(stopped) < u64::from(restart_time);
    if !fresh {
        let _ = std::fs::remove_file(marker);
    }
    fresh
}

/// Leaves the marker for the next start.
pub(super) fn write_marker(marker: &Path) {
    if let Some(dir) = marker.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = std::fs::write(marker, format!("{}\n", unix_now())) {
        warn!(path = %marker.display(), error = %e, "cannot write the graceful restart marker");
    }
}

/// The graceful restart capability we offer: every family of the session, forwarding state
/// preserved (felix keeps the kernel routes while bgpd is away), and the N bit (RFC 8538: a
/// session closed with a NOTIFICATION other than Hard Reset keeps the routes both ways).
pub(super) fn capability(restart_time: u16, families: &[Family]) -> GracefulRestart {
    GracefulRestart {
        restart_state: false,
        notification: true,
        restart_time: restart_time.min(4095),
        families: families
            .iter()
            .map(|f| {
                let (afi, safi) = f.afi_safi();
                GracefulRestartFamily {
                    afi,
                    safi,
                    forwarding_preserved: true,
                }
            })
            .collect(),
    }
}

/// The families `cap` lists, those with the forwarding state preserved only when `preserved`.
fn cap_families(cap: &GracefulRestart, preserved: bool) -> Vec<Family> {
    cap.families
        .iter()
        .filter(|f| !preserved || f.forwarding_preserved)
        .filter_map(|f| Family::from_afi_safi(f.afi, f.safi))
        .collect()
}

impl Speaker {
    /// The session with `peer` went down: keeps its routes as stale when graceful restart
    /// allows, flushes them otherwise.
    pub(super) async fn gr_session_down(&mut self, peer: PeerId, retain: bool) {
        let now = Instant::now();
        let keep: Vec<Family> = match self.peers.get_mut(&peer) {
            Some(slot) => {
                slot.gr.established_at = None;
                slot.gr.eor_pending.clear();
                match (&slot.gr.peer_cap, retain) {
                    (Some(cap), true) if cap.restart_time > 0 => {
                        let families = cap_families(cap, false);
                        slot.gr.stale = families.clone();
                        slot.gr.stale_deadline =
                            Some(now + Duration::from_secs(u64::from(cap.restart_time)));
                        families
                    }
                    _ => {
                        slot.gr.stale.clear();
                        slot.gr.stale_deadline = None;
                        Vec::new()
                    }
                }
            }
            None => Vec::new(),
        };
        let exports = self.rib.peer_lost(peer, &keep);
        if !keep.is_empty()
            && let Some(slot) = self.peers.get_mut(&peer)
        {
            let n = self.rib.stale_count(peer);
            info!(peer = %slot.address(), stale = n, families = ?keep, "graceful restart: keeping the peer's routes as stale");
        }
        self.send_exports(exports).await;
        self.publish_changes();
    }

    /// The session with `peer` is Established (the RIB knows it again): records what graceful
    /// restart needs, and flushes stale families the peer did not preserve.
    pub(super) async fn gr_session_up(&mut self, peer: PeerId, negotiated: &Negotiated) {
        let now = Instant::now();
        let offered = self
            .peers
            .get(&peer)
            .is_some_and(|s| self.config.graceful_restart_for(&s.neighbor));
        let Some(slot) = self.peers.get_mut(&peer) else {
            return;
        };
        slot.gr.peer_cap = negotiated.graceful_restart.clone().filter(|_| offered);
        slot.gr.established_at = Some(now);
        slot.gr.eor_pending = negotiated.families.clone();
        let preserved = slot
            .gr
            .peer_cap
            .as_ref()
            .map(|c| cap_families(c, true))
            .unwrap_or_default();
        let (keep, flush): (Vec<Family>, Vec<Family>) = slot
            .gr
            .stale
            .iter()
            .partition(|f| preserved.contains(f) && negotiated.families.contains(f));
        slot.gr.stale = keep;
        slot.gr.stale_deadline = (!slot.gr.stale.is_empty()).then_some(now + STALE_TIME);
        let address = slot.address();
        for family in flush {
            info!(peer = %address, %family, "peer back without forwarding state: flushing its stale routes");
            let exports = self.rib.sweep_stale(peer, family);
            self.send_exports(exports).await;
        }
        self.publish_changes();
    }

    /// End-of-RIB from `peer` for `family`: its stale paths there that were not refreshed go.
    pub(super) async fn gr_end_of_rib(&mut self, peer: PeerId, family: Family) {
        let Some(slot) = self.peers.get_mut(&peer) else {
            return;
        };
        slot.gr.eor_pending.retain(|f| *f != family);
        if let Some(i) = slot.gr.stale.iter().position(|f| *f == family) {
            slot.gr.stale.swap_remove(i);
            if slot.gr.stale.is_empty() {
                slot.gr.stale_deadline = None;
            }
            let before = self.rib.stale_count(peer);
            let exports = self.rib.sweep_stale(peer, family);
            debug!(peer, %family, before, "End-of-RIB: stale routes swept");
            self.send_exports(exports).await;
            self.publish_changes();
        }
        self.check_synced();
    }

    /// The timers: stale paths whose time ran out, and the table's completeness.
    pub(super) async fn gr_tick(&mut self) {
        let now = Instant::now();
        let expired: Vec<(PeerId, Vec<Family>)> = self
            .peers
            .iter_mut()
            .filter(|(_, s)| s.gr.stale_deadline.is_some_and(|d| d <= now))
            .map(|(id, s)| {
                s.gr.stale_deadline = None;
                (*id, std::mem::take(&mut s.gr.stale))
            })
            .collect();
        for (peer, families) in expired {
            for family in families {
                let n = self.rib.stale_count(peer);
                info!(peer, %family, stale = n, "graceful restart: time ran out, flushing stale routes");
                let exports = self.rib.sweep_stale(peer, family);
                self.send_exports(exports).await;
            }
            self.publish_changes();
        }
        self.check_synced();
    }

    /// The completeness rule of this start.
    fn completeness(&self) -> Completeness {
        Completeness {
            restarted: self.restarting_until.is_some(),
            restart_time: Duration::from_secs(u64::from(*self.config.restart_time.get_ref())),
        }
    }

    /// How `slot` stands, for the completeness rule.
    fn progress(slot: &PeerSlot) -> PeerProgress {
        PeerProgress {
            established_at: slot
                .gr
                .established_at
                .filter(|_| slot.state == State::Established),
            eor_pending: !slot.gr.eor_pending.is_empty(),
            graceful: slot.gr.peer_cap.is_some(),
            failed: slot.last_error.is_some(),
        }
    }

    /// Whether every configured peer has delivered its table, or holds nothing back.
    fn peers_complete(&self, now: Instant) -> bool {
        let rule = self.completeness();
        let since_start = now.saturating_duration_since(self.started);
        self.peers
            .values()
            .all(|s| !rule.holds(&Self::progress(s), since_start, now))
    }

    /// Marks the table complete once it is: watchers get SYNCED, the restart marker goes.
    pub(super) fn check_synced(&mut self) {
        if self.synced || !self.peers_complete(Instant::now()) {
            return;
        }
        self.synced = true;
        let _ = self.changes.send(WatchEvent::Synced);
        if self.restarting_until.is_some() {
            let _ = std::fs::remove_file(&self.marker);
        }
        info!(
            after_ms = self.started.elapsed().as_millis() as u64,
            "routing table complete (every peer that is up sent End-of-RIB, or timed out)"
        );
    }

    /// `last_error` for `node status`: while a peer's stale routes are kept, that; for a peer
    /// that is not up, why (its last error) and whether it still holds the routing table back.
    pub(super) fn gr_status(&self, peer: PeerId) -> Option<String> {
        let slot = self.peers.get(&peer)?;
        let n = self.rib.stale_count(peer);
        if slot.gr.stale_deadline.is_some() && n > 0 {
            return Some(if slot.state == State::Established {
                format!("Graceful restart: keeping {n} stale routes until End-of-RIB")
            } else {
                format!("Graceful restart: keeping {n} stale routes")
            });
        }
        if slot.state == State::Established {
            return None;
        }
        let why = slot
            .last_error
            .clone()
            .unwrap_or_else(|| "no connection yet".to_string());
        let now = Instant::now();
        let holding = !self.synced
            && self.completeness().holds(
                &Self::progress(slot),
                now.saturating_duration_since(self.started),
                now,
            );
        Some(if holding {
            format!("{why}; holding the routing table until it is up or times out")
        } else {
            format!("{why}; not up, holds nothing back")
        })
    }
}

/// How one peer stands, for [`Completeness::holds`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PeerProgress {
    /// When its session reached Established, while it is.
    established_at: Option<Instant>,
    /// Some family of the session has not sent End-of-RIB yet.
    eor_pending: bool,
    /// The session negotiated graceful restart (so End-of-RIB will come).
    graceful: bool,
    /// A connection attempt failed since the speaker started.
    failed: bool,
}

/// When the routing table is complete: the rule of one start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Completeness {
    /// Started within the restart time of a graceful stop (the marker was there).
    restarted: bool,
    /// The configured restart time: nothing holds the table longer.
    restart_time: Duration,
}

impl Completeness {
    /// Whether a peer standing as `p` still holds the table, `since_start` after the start.
    fn holds(&self, p: &PeerProgress, since_start: Duration, now: Instant) -> bool {
        let up_wait = UP_WAIT.min(self.restart_time);
        if since_start >= self.restart_time.max(up_wait) {
            return false;
        }
        match p.established_at {
            Some(_) if !p.eor_pending => false,
            Some(up) if !p.graceful => now.saturating_duration_since(up) < NO_EOR_WAIT,
            Some(_) => true,
            // After a restart the old dataplane stays until the peer is back (zero churn).
            None if self.restarted => since_start < up_wait,
            // A fresh start waits only for a first attempt still under way.
            None => !p.failed && since_start < FIRST_ATTEMPT_WAIT.min(up_wait),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRESH: Completeness = Completeness {
        restarted: false,
        restart_time: Duration::from_secs(120),
    };
    const RESTARTED: Completeness = Completeness {
        restarted: true,
        restart_time: Duration::from_secs(120),
    };

    fn down(failed: bool) -> PeerProgress {
        PeerProgress {
            established_at: None,
            eor_pending: false,
            graceful: false,
            failed,
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_fresh_start_does_not_wait_for_a_peer_that_is_not_up() {
        let now = Instant::now();
        // Its connection failed: it holds nothing back, even right after the start.
        assert!(!FRESH.holds(&down(true), Duration::ZERO, now));
        // A first attempt still under way is awaited, briefly.
        assert!(FRESH.holds(&down(false), Duration::from_millis(200), now));
        assert!(!FRESH.holds(&down(false), FIRST_ATTEMPT_WAIT, now));
    }

    #[test]
    fn a_restart_keeps_waiting_for_a_peer_that_is_not_up() {
        let now = Instant::now();
        assert!(RESTARTED.holds(&down(true), secs(5), now));
        assert!(!RESTARTED.holds(&down(true), UP_WAIT, now));
        // Capped by a short restart time.
        let short = Completeness {
            restart_time: secs(3),
            ..RESTARTED
        };
        assert!(!short.holds(&down(true), secs(3), now));
    }

    #[test]
    fn a_peer_that_is_up_holds_until_end_of_rib_either_way() {
        let up = Instant::now();
        let pending = PeerProgress {
            established_at: Some(up),
            eor_pending: true,
            graceful: true,
            failed: true,
        };
        for rule in [FRESH, RESTARTED] {
            assert!(rule.holds(&pending, secs(30), up + secs(30)));
            let done = PeerProgress {
                eor_pending: false,
                ..pending
            };
            assert!(!rule.holds(&done, secs(1), up));
            let no_gr = PeerProgress {
                graceful: false,
                ..pending
            };
            assert!(rule.holds(&no_gr, secs(1), up));
            assert!(!rule.holds(&no_gr, secs(1), up + NO_EOR_WAIT));
            // Never longer than the restart time.
            assert!(!rule.holds(&pending, secs(120), up + secs(120)));
        }
    }
}
