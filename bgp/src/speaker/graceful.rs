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
//! - Either way, the table is complete ("synced", RFC 4724 §4.1's deferral) once every
//!   configured peer sent End-of-RIB for its families, or did not come up within
//!   [`UP_WAIT`] (capped by the restart time), or is up without graceful restart for
//!   [`NO_EOR_WAIT`]. Route watchers get SYNCED only then, so a restarted node does not prune
//!   kernel routes whose BGP sessions are still coming up.

use super::Speaker;
use super::handle::WatchEvent;
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

    /// Whether every configured peer has delivered its table, or will not in time.
    fn peers_complete(&self, now: Instant) -> bool {
        let restart = Duration::from_secs(u64::from(*self.config.restart_time.get_ref()));
        let up_wait = UP_WAIT.min(restart);
        let since_start = now.saturating_duration_since(self.started);
        self.peers.values().all(|s| match s.gr.established_at {
            _ if since_start >= restart.max(up_wait) => true,
            Some(_) if s.state == State::Established && s.gr.eor_pending.is_empty() => true,
            Some(up) if s.gr.peer_cap.is_none() => now.saturating_duration_since(up) >= NO_EOR_WAIT,
            Some(_) => false,
            None => since_start >= up_wait,
        })
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
            "routing table complete (every peer sent End-of-RIB or timed out)"
        );
    }

    /// `last_error` for `node status` while a peer's stale routes are kept.
    pub(super) fn gr_status(&self, peer: PeerId) -> Option<String> {
        let slot = self.peers.get(&peer)?;
        slot.gr.stale_deadline?;
        let n = self.rib.stale_count(peer);
        (n > 0).then(|| {
            if slot.state == State::Established {
                format!("Graceful restart: keeping {n} stale routes until End-of-RIB")
            } else {
                format!("Graceful restart: keeping {n} stale routes")
            }
        })
    }
}
