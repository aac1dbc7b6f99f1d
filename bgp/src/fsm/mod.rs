//! The BGP session state machine of RFC 4271 §8, without I/O.
//!
//! Events and the current time go in ([`Fsm::handle`], [`Fsm::handle_timeout`]); actions for
//! the I/O edge come out ([`Action`]). There is no socket and no clock in here: the caller asks
//! [`Fsm::poll_timeout`] when the next timer is due and calls [`Fsm::handle_timeout`] then, so
//! tests drive it with an `Instant` they advance by hand.
//!
//! Deviations from the letter of §8, as BIRD and most daemons do:
//! - a failed connect in Connect goes to Active and retries when the ConnectRetryTimer fires
//!   (the RFC's DelayOpen branch), so a refused connection shows as `Active` with its error;
//! - errors that drop to Idle restart the session automatically after an idle hold time that
//!   doubles on each failure up to a cap (the RFC's DampPeerOscillations), reset once a
//!   session stayed Established for `stable_time`;
//! - OpenCollisionDump (event 23) leaves the FSM in Active, since the session layer continues
//!   with the surviving connection at once.

mod collision;
pub mod graceful_notification;
mod negotiate;
#[cfg(test)]
mod tests;

pub use collision::{Direction, collision_winner};
pub use negotiate::{FsmConfig, Negotiated, OpenError, describe, negotiate};

use crate::wire::{Notification, Open, notif};
use std::time::{Duration, Instant};

/// The six states of RFC 4271 §8.2.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

impl State {
    /// Every state, in the order of RFC 4271 §8.2.2.
    pub const ALL: [State; 6] = [
        State::Idle,
        State::Connect,
        State::Active,
        State::OpenSent,
        State::OpenConfirm,
        State::Established,
    ];
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::Idle => "Idle",
            State::Connect => "Connect",
            State::Active => "Active",
            State::OpenSent => "OpenSent",
            State::OpenConfirm => "OpenConfirm",
            State::Established => "Established",
        })
    }
}

/// The events of RFC 4271 §8.1 the session layer feeds in. Timer events are normally produced
/// by [`Fsm::handle_timeout`]; they are public so tests can name them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Event 1.
    ManualStart,
    /// Event 2: start, but only wait for the peer to connect.
    ManualStartPassive,
    /// Event 2 (RFC: ManualStop), optionally with the Cease to send.
    ManualStop(Option<Notification>),
    /// ManualStop of a restarting speaker (RFC 4724 §4.1): an Established session's
    /// connection just closes, without a NOTIFICATION, so a peer that negotiated graceful
    /// restart keeps our routes. In any other state it is a plain ManualStop.
    GracefulStop,
    /// Event 3: restart after the idle hold back-off.
    AutomaticStart,
    /// Event 9.
    ConnectRetryTimerExpires,
    /// Event 10.
    HoldTimerExpires,
    /// Event 11.
    KeepaliveTimerExpires,
    /// Event 16: our outbound connection completed.
    TcpCrAcked,
    /// Event 17: an inbound connection was accepted for this peer.
    TcpConnectionConfirmed,
    /// Event 18, with the socket error's text.
    TcpConnectionFails(String),
    /// Event 19.
    BgpOpen(Open),
    /// Event 21, with the NOTIFICATION to send.
    BgpHeaderErr(Notification),
    /// Event 22, with the NOTIFICATION to send.
    BgpOpenMsgErr(Notification),
    /// Event 23: this connection lost a collision (RFC 4271 §6.8).
    OpenCollisionDump,
    /// Events 24/25: a NOTIFICATION arrived.
    NotifMsg(Notification),
    /// Event 26.
    KeepAliveMsg,
    /// Event 27 (also a ROUTE-REFRESH: any message restarts the hold timer).
    UpdateMsg,
    /// Event 28, with the NOTIFICATION to send.
    UpdateMsgErr(Notification),
    /// We sent an UPDATE: restarts the KeepaliveTimer (RFC 4271 §4.4).
    UpdateSent,
    /// The BFD session with the peer left Up (RFC 5882 §4.3): an open or Established session
    /// sends Cease / BFD Down (RFC 9384), closes, flushes the peer's routes (graceful restart
    /// or not) and starts again after the back-off. Ignored while no connection is open.
    BfdDown,
}

/// What the I/O edge must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open a TCP connection to the peer (abandoning any attempt in progress).
    Connect,
    /// Close the TCP connection (and any attempt in progress).
    DropConnection,
    SendOpen(Open),
    SendKeepalive,
    SendNotification(Notification),
    /// The session reached Established.
    Established(Box<Negotiated>),
    /// The session left Established: routes learned from it must be flushed, unless `retain`
    /// and graceful restart was negotiated.
    Down {
        reason: String,
        /// It ended without a NOTIFICATION (the connection failed or was closed) or by hold
        /// timer expiry: RFC 4724 §4.2 lets a helper keep the peer's routes as stale.
        retain: bool,
    },
}

/// One peer's state machine.
#[derive(Debug)]
pub struct Fsm {
    config: FsmConfig,
    state: State,
    /// Cleared by ManualStop: no automatic restart.
    started: bool,
    /// The failure being handled was a NOTIFICATION from the peer after which its routes go
    /// (any NOTIFICATION without the N bit of RFC 8538; a Hard Reset with it).
    notified: bool,
    connect_retry: Option<Instant>,
    hold: Option<Instant>,
    keepalive: Option<Instant>,
    idle_hold: Option<Instant>,
    /// The back-off the next failure waits.
    backoff: Duration,
    established_at: Option<Instant>,
    negotiated: Option<Negotiated>,
    last_error: Option<String>,
    connect_retry_counter: u32,
}

impl Fsm {
    pub fn new(config: FsmConfig) -> Fsm {
        let backoff = config.idle_hold_time;
        Fsm {
            config,
            state: State::Idle,
            started: false,
            notified: false,
            connect_retry: None,
            hold: None,
            keepalive: None,
            idle_hold: None,
            backoff,
            established_at: None,
            negotiated: None,
            last_error: None,
            connect_retry_counter: 0,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn config(&self) -> &FsmConfig {
        &self.config
    }

    /// What the OPENs decided, from OpenConfirm on.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// The last error in operator's words (`Hold timer expired`, `Received: Cease / ...`).
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Started and not stopped: the FSM restarts by itself after errors.
    pub fn is_started(&self) -> bool {
        self.started
    }

    /// How many times the session failed since it was last started or stable.
    pub fn connect_retry_counter(&self) -> u32 {
        self.connect_retry_counter
    }

    /// The OPEN this side sends.
    pub fn open_message(&self, now: Instant) -> Open {
        self.config.open_at(now)
    }

    /// The earliest running timer's deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.connect_retry,
            self.hold,
            self.keepalive,
            self.idle_hold,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// When the next KEEPALIVE is due: lets the I/O edge keep the session alive while it
    /// waits on something else (a full event queue).
    pub fn keepalive_deadline(&self) -> Option<Instant> {
        self.keepalive
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        loop {
            let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
            let event = if due(self.hold) {
                self.hold = None;
                Event::HoldTimerExpires
            } else if due(self.idle_hold) {
                self.idle_hold = None;
                Event::AutomaticStart
            } else if due(self.connect_retry) {
                self.connect_retry = None;
                Event::ConnectRetryTimerExpires
            } else if due(self.keepalive) {
                self.keepalive = None;
                Event::KeepaliveTimerExpires
            } else {
                return out;
            };
            out.extend(self.handle(event, now));
        }
    }

    /// Processes one event.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        let event = match event {
            Event::GracefulStop
                if self.state == State::Established && self.graceful_notification() =>
            {
                // RFC 8538: with the N bit both ways, the session closes with a Cease and the
                // peer still keeps our routes as stale until we return.
                self.stop_with_notification(Some(admin_shutdown()), &mut out);
                out.push(Action::Down {
                    reason: "Graceful restart: Cease sent under the N bit (RFC 8538)".into(),
                    retain: true,
                });
                return out;
            }
            Event::GracefulStop if self.state == State::Established => {
                self.stop(&mut out);
                out.push(Action::Down {
                    reason: "Graceful restart: closed without NOTIFICATION".into(),
                    retain: true,
                });
                return out;
            }
            Event::GracefulStop => Event::ManualStop(None),
            Event::BfdDown => {
                if matches!(
                    self.state,
                    State::OpenSent | State::OpenConfirm | State::Established
                ) {
                    let n = Notification::new(notif::CEASE, notif::BFD_DOWN, Vec::new());
                    self.fail(now, Some(n), "BFD session down".into(), &mut out);
                    // The forwarding path is gone: the routes go too (see the event's doc).
                    for a in &mut out {
                        if let Action::Down { retain, .. } = a {
                            *retain = false;
                        }
                    }
                }
                return out;
            }
            e => e,
        };
        match self.state {
            State::Idle => self.idle(event, now, &mut out),
            State::Connect | State::Active => self.connecting(event, now, &mut out),
            State::OpenSent => self.open_sent(event, now, &mut out),
            State::OpenConfirm => self.open_confirm(event, now, &mut out),
            State::Established => self.established(event, now, &mut out),
        }
        out
    }

    fn idle(&mut self, event: Event, now: Instant, out: &mut Vec<Action>) {
        match event {
            Event::ManualStart | Event::ManualStartPassive => {
                self.started = true;
                self.connect_retry_counter = 0;
                self.backoff = self.config.idle_hold_time;
                if event == Event::ManualStartPassive {
                    self.config.passive = true;
                }
                self.start(now, out);
            }
            Event::AutomaticStart if self.started => self.start(now, out),
            Event::ManualStop(_) => {
                self.started = false;
                self.idle_hold = None;
            }
            // RFC 4271 §8.2.2: every other event is ignored in Idle.
            _ => {}
        }
    }

    fn start(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.idle_hold = None;
        if self.config.passive {
            self.state = State::Active;
        } else {
            self.state = State::Connect;
            self.connect_retry = Some(now + self.config.connect_retry);
            out.push(Action::Connect);
        }
    }

    /// Connect and Active: waiting for a TCP connection, ours or the peer's.
    fn connecting(&mut self, event: Event, now: Instant, out: &mut Vec<Action>) {
        match event {
            Event::ManualStart | Event::ManualStartPassive | Event::AutomaticStart => {}
            Event::ManualStop(_) => self.stop(out),
            Event::ConnectRetryTimerExpires => {
                out.push(Action::DropConnection);
                if self.config.passive {
                    self.state = State::Active;
                } else {
                    self.state = State::Connect;
                    self.connect_retry = Some(now + self.config.connect_retry);
                    out.push(Action::Connect);
                }
            }
            Event::TcpCrAcked | Event::TcpConnectionConfirmed => {
                self.connect_retry = None;
                self.hold = Some(now + self.config.open_hold_time);
                out.push(Action::SendOpen(self.config.open_at(now)));
                self.state = State::OpenSent;
            }
            Event::TcpConnectionFails(reason) => {
                self.last_error = Some(reason);
                out.push(Action::DropConnection);
                if !self.config.passive {
                    self.connect_retry = Some(now + self.config.connect_retry);
                }
                self.state = State::Active;
            }
            // No connection, so no message can arrive: an I/O edge bug, treated as an error.
            _ => self.fail(now, None, "Unexpected event while connecting".into(), out),
        }
    }

    fn open_sent(&mut self, event: Event, now: Instant, out: &mut Vec<Action>) {
        match event {
            Event::ManualStart | Event::ManualStartPassive | Event::AutomaticStart => {}
            Event::ManualStop(n) => self.stop_with_notification(n, out),
            Event::HoldTimerExpires => self.hold_expired(now, out),
            Event::TcpConnectionFails(reason) => {
                // RFC 4271 §8.2.2 OpenSent, event 18: back to Active, retry later.
                self.last_error = Some(reason);
                self.hold = None;
                out.push(Action::DropConnection);
                if !self.config.passive {
                    self.connect_retry = Some(now + self.config.connect_retry);
                }
                self.state = State::Active;
            }
            Event::BgpOpen(open) => match negotiate(&self.config, &open) {
                Ok(neg) => {
                    self.connect_retry = None;
                    out.push(Action::SendKeepalive);
                    if neg.hold_time > 0 {
                        self.keepalive = Some(now + secs(neg.keepalive));
                        self.hold = Some(now + secs(neg.hold_time));
                    } else {
                        self.keepalive = None;
                        self.hold = None;
                    }
                    self.negotiated = Some(neg);
                    self.state = State::OpenConfirm;
                }
                Err(e) => self.fail(now, Some(e.notification), e.text, out),
            },
            Event::BgpHeaderErr(n) | Event::BgpOpenMsgErr(n) => {
                let text = describe(&n);
                self.fail(now, Some(n), text, out)
            }
            Event::OpenCollisionDump => self.collision_dump(now, out),
            Event::NotifMsg(n) => self.fail(now, None, received(&n), out),
            _ => self.fsm_error(now, 1, out),
        }
    }

    fn open_confirm(&mut self, event: Event, now: Instant, out: &mut Vec<Action>) {
        match event {
            Event::ManualStart | Event::ManualStartPassive | Event::AutomaticStart => {}
            Event::ManualStop(n) => self.stop_with_notification(n, out),
            Event::HoldTimerExpires => self.hold_expired(now, out),
            Event::KeepaliveTimerExpires => self.send_keepalive(now, out),
            Event::TcpConnectionFails(reason) => self.fail(now, None, reason, out),
            Event::BgpHeaderErr(n) | Event::BgpOpenMsgErr(n) => {
                let text = describe(&n);
                self.fail(now, Some(n), text, out)
            }
            Event::OpenCollisionDump => self.collision_dump(now, out),
            Event::NotifMsg(n) => self.fail(now, None, received(&n), out),
            Event::KeepAliveMsg => {
                self.restart_hold(now);
                self.state = State::Established;
                self.established_at = Some(now);
                self.last_error = None;
                if let Some(neg) = &self.negotiated {
                    out.push(Action::Established(Box::new(neg.clone())));
                }
            }
            _ => self.fsm_error(now, 2, out),
        }
    }

    fn established(&mut self, event: Event, now: Instant, out: &mut Vec<Action>) {
        match event {
            Event::ManualStart | Event::ManualStartPassive | Event::AutomaticStart => {}
            Event::ManualStop(n) => {
                let mut n = n.unwrap_or_else(admin_shutdown);
                if self.graceful_notification() {
                    // A final stop must not read as a graceful restart to an N-bit peer.
                    n = graceful_notification::hard_reset(n);
                }
                let reason = describe(&n);
                self.stop_with_notification(Some(n), out);
                out.push(Action::Down {
                    reason,
                    retain: false,
                });
            }
            Event::HoldTimerExpires => self.hold_expired(now, out),
            Event::KeepaliveTimerExpires => self.send_keepalive(now, out),
            Event::UpdateSent => self.restart_keepalive(now),
            Event::KeepAliveMsg | Event::UpdateMsg => self.restart_hold(now),
            Event::TcpConnectionFails(reason) => self.fail(now, None, reason, out),
            Event::NotifMsg(n) => {
                self.notified =
                    !self.graceful_notification() || graceful_notification::is_hard_reset(&n);
                self.fail(now, None, received(&n), out)
            }
            Event::UpdateMsgErr(n) | Event::BgpHeaderErr(n) | Event::BgpOpenMsgErr(n) => {
                let text = describe(&n);
                self.fail(now, Some(n), text, out)
            }
            Event::OpenCollisionDump => {
                let n = Notification::new(
                    notif::CEASE,
                    notif::CONNECTION_COLLISION_RESOLUTION,
                    Vec::new(),
                );
                let text = describe(&n);
                self.fail(now, Some(n), text, out)
            }
            _ => self.fsm_error(now, 3, out),
        }
    }

    fn send_keepalive(&mut self, now: Instant, out: &mut Vec<Action>) {
        out.push(Action::SendKeepalive);
        self.restart_keepalive(now);
    }

    fn restart_keepalive(&mut self, now: Instant) {
        if let Some(neg) = &self.negotiated
            && neg.keepalive > 0
        {
            self.keepalive = Some(now + secs(neg.keepalive));
        }
    }

    /// The peer is known to have sent something this side has not processed yet (it waits in
    /// the socket while the session was busy): restarts the hold timer of an Established
    /// session as a received message would (RFC 4271 §8.2.2: the hold timer measures the
    /// peer's silence, not this side's backlog).
    pub fn peer_alive(&mut self, now: Instant) {
        if self.state == State::Established {
            self.restart_hold(now);
        }
    }

    fn restart_hold(&mut self, now: Instant) {
        if let Some(neg) = &self.negotiated
            && neg.hold_time > 0
        {
            self.hold = Some(now + secs(neg.hold_time));
        }
    }

    fn hold_expired(&mut self, now: Instant, out: &mut Vec<Action>) {
        let n = Notification::new(notif::HOLD_TIMER_EXPIRED, 0, Vec::new());
        self.fail(now, Some(n), "Hold timer expired".into(), out);
    }

    fn fsm_error(&mut self, now: Instant, subcode: u8, out: &mut Vec<Action>) {
        let n = Notification::new(notif::FSM_ERROR, subcode, Vec::new());
        let text = describe(&n);
        self.fail(now, Some(n), text, out);
    }

    fn collision_dump(&mut self, now: Instant, out: &mut Vec<Action>) {
        out.push(Action::SendNotification(Notification::new(
            notif::CEASE,
            notif::CONNECTION_COLLISION_RESOLUTION,
            Vec::new(),
        )));
        out.push(Action::DropConnection);
        self.clear_timers();
        self.negotiated = None;
        if !self.config.passive {
            self.connect_retry = Some(now + self.config.connect_retry);
        }
        self.state = State::Active;
    }

    /// An error: optionally notify the peer, close, go Idle and restart after the back-off.
    fn fail(
        &mut self,
        now: Instant,
        notification: Option<Notification>,
        text: String,
        out: &mut Vec<Action>,
    ) {
        // RFC 4724 §4.2: graceful restart survives a lost connection and hold timer expiry;
        // with the N bit of RFC 8538 also any NOTIFICATION but a Hard Reset.
        let n_bit = self.graceful_notification();
        let notification = notification.map(|n| graceful_notification::to_send(n, n_bit));
        let retain = !std::mem::take(&mut self.notified)
            && notification
                .as_ref()
                .is_none_or(|n| graceful_notification::keeps_routes(n, n_bit));
        if let Some(n) = notification {
            out.push(Action::SendNotification(n));
        }
        out.push(Action::DropConnection);
        if self.state == State::Established {
            out.push(Action::Down {
                reason: text.clone(),
                retain,
            });
        }
        self.last_error = Some(text);
        self.connect_retry_counter += 1;
        if let Some(up) = self.established_at.take()
            && now.saturating_duration_since(up) >= self.config.stable_time
        {
            self.backoff = self.config.idle_hold_time;
        }
        self.clear_timers();
        self.negotiated = None;
        self.state = State::Idle;
        if self.started {
            self.idle_hold = Some(now + self.backoff);
            self.backoff = (self.backoff * 2).min(self.config.idle_hold_max);
        }
    }

    /// Whether this session negotiated the N bit of RFC 8538 both ways.
    fn graceful_notification(&self) -> bool {
        graceful_notification::negotiated(&self.config, self.negotiated.as_ref())
    }

    fn stop_with_notification(&mut self, n: Option<Notification>, out: &mut Vec<Action>) {
        out.push(Action::SendNotification(n.unwrap_or_else(admin_shutdown)));
        self.stop(out);
    }

    /// ManualStop: close, go Idle, no automatic restart.
    fn stop(&mut self, out: &mut Vec<Action>) {
        out.push(Action::DropConnection);
        self.started = false;
        self.clear_timers();
        self.negotiated = None;
        self.established_at = None;
        self.connect_retry_counter = 0;
        self.state = State::Idle;
    }

    fn clear_timers(&mut self) {
        self.connect_retry = None;
        self.hold = None;
        self.keepalive = None;
        self.idle_hold = None;
    }
}

fn secs(s: u16) -> Duration {
    Duration::from_secs(u64::from(s))
}

fn received(n: &Notification) -> String {
    format!("Received: {}", describe(n))
}

/// Cease / Administrative Shutdown (RFC 4486): what ManualStop sends by default.
pub fn admin_shutdown() -> Notification {
    Notification::new(notif::CEASE, notif::ADMINISTRATIVE_SHUTDOWN, Vec::new())
}
