//! One BFD session's state machine in asynchronous mode (RFC 5880 §6.2, §6.8), pure: received
//! packets and the clock in, packets to send and state changes out. No sockets, no timers of its
//! own: the edge asks [`Session::deadline`] when to call again.
//!
//! Timers: while the session is not Up we send at most once a second (§6.8.3); on reaching Up the
//! configured interval takes effect through a Poll Sequence (§6.5), as does any change of
//! parameters while Up. The transmit interval is `max(desired min TX, peer's required min RX)`
//! less 10–25 % jitter (§6.8.7 allows 0–25 %, and requires at least 10 % with a multiplier of 1;
//! BIRD uses 10–25 % always, and so do we: a margin before the peer's detection time, and a BIRD
//! peer sees us as it sees BIRD). Periodic packets keep their cadence from the planned send
//! time, not from a late wakeup, so a busy host does not stretch every gap towards a false
//! Down at the peer. The detection time is the peer's multiplier times
//! `max(our required min RX, peer's desired min TX)` (§6.8.4), counted from the moment the
//! last packet arrived (the caller passes the kernel's receive time).
//!
//! Coupling (RFC 5882 §3.2): a transition is a *failure*, the client protocol's cue to act, only
//! when a session that was Up loses the path: its detection time expired, or the peer's same
//! session signalled Down. The peer taking it AdminDown is not one; neither is a peer that
//! replaced its session (BIRD removes its session whenever its BGP session goes down and starts
//! a fresh one, a new discriminator in Down, when BGP starts again): that fresh session was
//! never Up, and its Down says only that it starts. Ours re-synchronises with it (Down, Init,
//! Up; RFC 5880 §6.8.6 selects a session by My Discriminator too when Your Discriminator is
//! zero) while its detection time keeps running, so a path that fails meanwhile is still a
//! failure.

use super::packet::{ControlPacket, Diagnostic, SessionState, micros};
use std::time::{Duration, Instant};

/// The desired min TX interval while the session is not Up (RFC 5880 §6.8.3).
pub const SLOW_TX: Duration = Duration::from_secs(1);

/// A session's timers as configured (per neighbour).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    pub desired_min_tx: Duration,
    pub required_min_rx: Duration,
    pub detect_mult: u8,
}

impl Default for Timers {
    /// 300 ms, 300 ms, 3.
    fn default() -> Self {
        Timers {
            desired_min_tx: Duration::from_millis(300),
            required_min_rx: Duration::from_millis(300),
            detect_mult: 3,
        }
    }
}

/// A change of `bfd.SessionState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: SessionState,
    pub to: SessionState,
    pub diag: Diagnostic,
    /// The path failed: the client protocol must act (see the module's doc).
    pub failure: bool,
}

/// What the session reports about itself (status, API, metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub state: SessionState,
    pub remote_state: SessionState,
    pub local_diag: Diagnostic,
    pub remote_diag: Diagnostic,
    pub local_discr: u32,
    pub remote_discr: u32,
    /// The interval we send at (before jitter).
    pub tx_interval: Duration,
    /// How long without a packet before the session goes Down.
    pub detection_time: Duration,
    pub remote_detect_mult: u8,
    pub remote_cpi: bool,
}

/// One BFD session (RFC 5880 §6.8.1's state variables).
#[derive(Debug, Clone)]
pub struct Session {
    timers: Timers,
    state: SessionState,
    remote_state: SessionState,
    local_discr: u32,
    remote_discr: u32,
    local_diag: Diagnostic,
    remote_diag: Diagnostic,
    /// The desired min TX we advertise (slow while not Up) and the one in effect for timing.
    advertised_tx: Duration,
    effective_tx: Duration,
    remote_min_rx: Duration,
    remote_desired_tx: Duration,
    remote_detect_mult: u8,
    remote_cpi: bool,
    /// A Poll Sequence is running: packets carry P until one with F arrives.
    polling: bool,
    /// A packet with F is owed to the peer's Poll.
    final_due: bool,
    /// Send at once (a state change), not at the next interval.
    send_now: bool,
    next_tx: Instant,
    detect_deadline: Option<Instant>,
    /// The session was Up and no failure has been reported since: a client relies on it (a
    /// re-synchronisation with a peer's new session keeps this set).
    coupled: bool,
    /// The transition being made is a failure.
    failing: bool,
}

impl Session {
    pub fn new(timers: Timers, local_discr: u32, now: Instant) -> Session {
        assert!(local_discr != 0, "a discriminator is nonzero");
        Session {
            timers,
            state: SessionState::Down,
            remote_state: SessionState::Down,
            local_discr,
            remote_discr: 0,
            local_diag: Diagnostic::NONE,
            remote_diag: Diagnostic::NONE,
            advertised_tx: SLOW_TX.max(timers.desired_min_tx),
            effective_tx: SLOW_TX.max(timers.desired_min_tx),
            remote_min_rx: Duration::from_micros(1),
            remote_desired_tx: Duration::ZERO,
            remote_detect_mult: 0,
            remote_cpi: false,
            polling: false,
            final_due: false,
            send_now: true,
            next_tx: now,
            detect_deadline: None,
            coupled: false,
            failing: false,
        }
    }

    pub fn state(&self) -> SessionState {
        self.state
    }

    pub fn local_discr(&self) -> u32 {
        self.local_discr
    }

    pub fn timers(&self) -> Timers {
        self.timers
    }

    /// The interval between our packets, before jitter.
    pub fn tx_interval(&self) -> Duration {
        self.effective_tx.max(self.remote_min_rx)
    }

    /// The detection time in asynchronous mode (§6.8.4).
    pub fn detection_time(&self) -> Duration {
        self.timers.required_min_rx.max(self.remote_desired_tx) * u32::from(self.remote_detect_mult)
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            state: self.state,
            remote_state: self.remote_state,
            local_diag: self.local_diag,
            remote_diag: self.remote_diag,
            local_discr: self.local_discr,
            remote_discr: self.remote_discr,
            tx_interval: self.tx_interval(),
            detection_time: self.detection_time(),
            remote_detect_mult: self.remote_detect_mult,
            remote_cpi: self.remote_cpi,
        }
    }

    /// When [`Session::poll`] must next be called.
    pub fn deadline(&self, now: Instant) -> Instant {
        let tx = if self.send_now || self.final_due {
            now.min(self.next_tx)
        } else {
            self.next_tx
        };
        match self.detect_deadline {
            Some(d) => d.min(tx),
            None => tx,
        }
    }

    /// New timers from configuration: a Poll Sequence announces them when Up.
    pub fn set_timers(&mut self, timers: Timers) {
        if timers == self.timers {
            return;
        }
        self.timers = timers;
        let tx = if self.state == SessionState::Up {
            timers.desired_min_tx
        } else {
            SLOW_TX.max(timers.desired_min_tx)
        };
        self.change_tx(tx);
        self.start_poll();
    }

    /// Takes the session administratively down (RFC 5880 §6.8.16): the peer is told at once
    /// and must not treat it as a failure of the path (RFC 5882 §3.2). Returns the packet.
    pub fn admin_down(&mut self) -> ControlPacket {
        self.state = SessionState::AdminDown;
        self.local_diag = Diagnostic::ADMINISTRATIVELY_DOWN;
        self.polling = false;
        self.final_due = false;
        self.send_now = false;
        self.detect_deadline = None;
        self.coupled = false;
        self.packet()
    }

    /// A packet that passed [`ControlPacket::decode`] and was matched to this session; `now`
    /// is when it arrived (the detection time counts from there).
    pub fn receive(&mut self, p: &ControlPacket, now: Instant) -> Option<Transition> {
        if p.your_discr != 0 && p.your_discr != self.local_discr {
            return None;
        }
        // The peer's new session (a discriminator we have not seen, not yet aware of ours, in
        // Down) while ours is Up with its previous one: the peer restarted its session.
        let restarted = self.state == SessionState::Up
            && p.your_discr == 0
            && p.state == SessionState::Down
            && self.remote_discr != 0
            && p.my_discr != self.remote_discr;
        self.remote_discr = p.my_discr;
        self.remote_state = p.state;
        self.remote_diag = p.diag;
        self.remote_cpi = p.cpi;
        self.remote_min_rx = p.required_min_rx();
        self.remote_desired_tx = p.desired_min_tx();
        self.remote_detect_mult = p.detect_mult;
        if p.fin && self.polling {
            self.polling = false;
            // A larger interval announced by the Poll takes effect now (§6.8.3).
            self.effective_tx = self.advertised_tx;
        }
        if p.poll {
            self.final_due = true;
        }
        self.detect_deadline = Some(now + self.detection_time());
        let before = self.state;
        match (self.state, p.state) {
            (SessionState::AdminDown, _) => return None,
            (_, SessionState::AdminDown) => {
                // Not a failure of the path (RFC 5882 §3.2).
                self.coupled = false;
                if self.state != SessionState::Down {
                    self.go_down(Diagnostic::NEIGHBOR_SIGNALED_DOWN);
                }
            }
            (SessionState::Down, SessionState::Down) => self.set_state(SessionState::Init),
            (SessionState::Down, SessionState::Init) => self.go_up(),
            (SessionState::Init, SessionState::Init | SessionState::Up) => self.go_up(),
            (SessionState::Up, SessionState::Down) if restarted => {
                self.go_down(Diagnostic::NEIGHBOR_SIGNALED_DOWN)
            }
            (SessionState::Up, SessionState::Down) => self.fail(Diagnostic::NEIGHBOR_SIGNALED_DOWN),
            _ => {}
        }
        if self.state == SessionState::Down && !self.coupled {
            // A Down session does not time out; it waits for the peer. (One that is
            // re-synchronising with the peer's new session does: see the module's doc.)
            self.detect_deadline = None;
        }
        // The peer may want packets at a different rate: never later than its new interval.
        let bound = now + self.tx_interval();
        if self.next_tx > bound {
            self.next_tx = bound;
        }
        self.transition(before)
    }

    /// Advances the clock: the detection time, then what is due to send. `jitter` is any
    /// random number; it picks the 0–25 % reduction of the next interval.
    pub fn poll(
        &mut self,
        now: Instant,
        jitter: u32,
    ) -> (Option<ControlPacket>, Option<Transition>) {
        let mut change = None;
        if let Some(d) = self.detect_deadline
            && now >= d
        {
            self.detect_deadline = None;
            if matches!(self.state, SessionState::Init | SessionState::Up) || self.coupled {
                let before = self.state;
                if self.coupled {
                    self.fail(Diagnostic::DETECTION_TIME_EXPIRED);
                } else {
                    self.go_down(Diagnostic::DETECTION_TIME_EXPIRED);
                }
                self.remote_discr = 0;
                change = self.transition(before);
            }
        }
        let periodic = now >= self.next_tx && self.remote_min_rx > Duration::ZERO;
        if !(periodic || self.send_now || self.final_due) {
            return (None, change);
        }
        let packet = self.packet();
        if periodic || self.send_now {
            // A periodic packet sent a little late keeps the cadence of the planned time.
            let late = now.saturating_duration_since(self.next_tx);
            let base = if periodic && late < self.tx_interval() / 2 {
                self.next_tx
            } else {
                now
            };
            self.next_tx = base + self.jittered(jitter);
        }
        self.send_now = false;
        self.final_due = false;
        (Some(packet), change)
    }

    /// The packet to send now (§6.8.7): F answers a Poll and excludes P.
    fn packet(&self) -> ControlPacket {
        ControlPacket {
            diag: self.local_diag,
            state: self.state,
            poll: self.polling && !self.final_due,
            fin: self.final_due,
            cpi: false,
            demand: false,
            detect_mult: self.timers.detect_mult,
            my_discr: self.local_discr,
            your_discr: self.remote_discr,
            desired_min_tx_us: micros(self.advertised_tx),
            required_min_rx_us: micros(self.timers.required_min_rx),
            required_min_echo_rx_us: 0,
        }
    }

    fn jittered(&self, jitter: u32) -> Duration {
        // 75–90 % of the interval, whatever the multiplier (see the module's doc).
        self.tx_interval() * (75 + jitter % 16) / 100
    }

    fn go_up(&mut self) {
        self.set_state(SessionState::Up);
        self.coupled = true;
        self.local_diag = Diagnostic::NONE;
        if self.timers.desired_min_tx != self.advertised_tx {
            self.change_tx(self.timers.desired_min_tx);
            self.start_poll();
        }
    }

    fn go_down(&mut self, diag: Diagnostic) {
        self.set_state(SessionState::Down);
        self.local_diag = diag;
        self.polling = false;
        let slow = SLOW_TX.max(self.timers.desired_min_tx);
        self.advertised_tx = slow;
        self.effective_tx = slow;
    }

    /// Down for a failure of the path: the client is told, once.
    fn fail(&mut self, diag: Diagnostic) {
        self.go_down(diag);
        self.failing = self.coupled;
        self.coupled = false;
    }

    fn set_state(&mut self, s: SessionState) {
        if s != self.state {
            self.state = s;
            self.send_now = true;
        }
    }

    /// A faster interval applies at once, a slower one after the Poll Sequence (§6.8.3).
    fn change_tx(&mut self, tx: Duration) {
        self.advertised_tx = tx;
        if tx < self.effective_tx || self.state != SessionState::Up {
            self.effective_tx = tx;
        }
    }

    fn start_poll(&mut self) {
        self.polling = true;
        self.send_now = true;
    }

    fn transition(&mut self, before: SessionState) -> Option<Transition> {
        let failure = std::mem::take(&mut self.failing);
        (before != self.state || failure).then_some(Transition {
            from: before,
            to: self.state,
            diag: self.local_diag,
            failure,
        })
    }
}

#[cfg(test)]
mod tests;
