//! Graceful restart with NOTIFICATION messages (RFC 8538). When both ends set the N bit in the
//! Graceful Restart capability, a session that ends with a NOTIFICATION still lets each side
//! keep the other's routes as stale (the helper procedures of RFC 4724 §4.2), except when the
//! NOTIFICATION is a Cease / Hard Reset: that one asks for a full reset.
//!
//! ```text
//! Hard Reset (Cease, subcode 9): its data carries the NOTIFICATION it stands for
//! +--------+--------+------------------------
//! | ErrCode| Subcode| Data (of the inner one)
//! +--------+--------+------------------------
//! ```

use super::FsmConfig;
use super::negotiate::Negotiated;
use crate::wire::{Notification, notif};

/// Whether both ends advertised the N bit: our capability as configured, the peer's as sent.
pub(super) fn negotiated(config: &FsmConfig, neg: Option<&Negotiated>) -> bool {
    let ours = config
        .graceful_restart
        .as_ref()
        .is_some_and(|g| g.notification);
    let theirs = neg
        .and_then(|n| n.graceful_restart.as_ref())
        .is_some_and(|g| g.notification);
    ours && theirs
}

/// Cease / Hard Reset: the NOTIFICATION after which neither side keeps the other's routes.
pub fn is_hard_reset(n: &Notification) -> bool {
    n.code == notif::CEASE && n.subcode == notif::HARD_RESET
}

/// `n` wrapped in a Hard Reset (RFC 8538 §3), so a stop the operator meant as final is not
/// taken for a graceful restart; a Hard Reset stays as it is.
pub fn hard_reset(n: Notification) -> Notification {
    if is_hard_reset(&n) {
        return n;
    }
    let mut data = Vec::with_capacity(2 + n.data.len());
    data.push(n.code);
    data.push(n.subcode);
    data.extend_from_slice(&n.data);
    Notification::new(notif::CEASE, notif::HARD_RESET, data)
}

/// The NOTIFICATION to send for `n` on a session with the N bit: a Cease for reaching the
/// maximum number of prefixes MUST go as a Hard Reset (RFC 8538 §5), or the peer would keep
/// the very routes that were too many; the others go as they are.
pub(super) fn to_send(n: Notification, n_bit: bool) -> Notification {
    if n_bit
        && n.code == notif::CEASE
        && matches!(n.subcode, notif::MAX_PREFIXES_REACHED | notif::BFD_DOWN)
    {
        hard_reset(n)
    } else {
        n
    }
}

/// Whether the routes of a session that ended with `n` (sent or received) may be kept as
/// stale: without the N bit only after hold timer expiry (RFC 4724 §4.2), with it after any
/// NOTIFICATION but a Hard Reset (RFC 8538 §4).
pub(super) fn keeps_routes(n: &Notification, n_bit: bool) -> bool {
    if n_bit {
        !is_hard_reset(n)
    } else {
        n.code == notif::HOLD_TIMER_EXPIRED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hard_reset_carries_the_inner_code_and_subcode() {
        let inner = Notification::new(
            notif::CEASE,
            notif::ADMINISTRATIVE_SHUTDOWN,
            vec![3, b'b', b'y', b'e'],
        );
        let hr = hard_reset(inner);
        assert!(is_hard_reset(&hr));
        assert_eq!(
            &hr.data[..],
            &[
                notif::CEASE,
                notif::ADMINISTRATIVE_SHUTDOWN,
                3,
                b'b',
                b'y',
                b'e'
            ]
        );
        assert_eq!(hard_reset(hr.clone()), hr);
    }

    #[test]
    fn under_the_n_bit_only_a_hard_reset_flushes() {
        let admin = Notification::new(notif::CEASE, notif::ADMINISTRATIVE_SHUTDOWN, Vec::new());
        let hold = Notification::new(notif::HOLD_TIMER_EXPIRED, 0, Vec::new());
        assert!(keeps_routes(&admin, true));
        assert!(!keeps_routes(&hard_reset(admin.clone()), true));
        assert!(!keeps_routes(&admin, false));
        assert!(keeps_routes(&hold, false));
    }

    use crate::fsm::{Action, Event, Fsm, State, admin_shutdown};
    use crate::wire::{AS_TRANS, Capability, GracefulRestart, Open};
    use std::net::Ipv4Addr;
    use std::time::Instant;

    fn gr(notification: bool) -> GracefulRestart {
        GracefulRestart {
            restart_state: false,
            notification,
            restart_time: 120,
            families: vec![],
        }
    }

    /// An Established session whose two ends set the N bit as given.
    fn established(ours: bool, theirs: bool, now: Instant) -> Fsm {
        let mut c = FsmConfig::new(65000, 65001, Ipv4Addr::new(10, 0, 0, 1));
        c.graceful_restart = Some(gr(ours));
        let mut fsm = Fsm::new(c);
        fsm.handle(Event::ManualStart, now);
        fsm.handle(Event::TcpCrAcked, now);
        fsm.handle(
            Event::BgpOpen(Open {
                version: 4,
                my_as: u16::try_from(65001u32).unwrap_or(AS_TRANS),
                hold_time: 90,
                bgp_identifier: Ipv4Addr::new(10, 0, 0, 2),
                capabilities: vec![
                    Capability::Multiprotocol { afi: 1, safi: 1 },
                    Capability::FourOctetAs(65001),
                    Capability::GracefulRestart(gr(theirs)),
                ],
            }),
            now,
        );
        fsm.handle(Event::KeepAliveMsg, now);
        assert_eq!(fsm.state(), State::Established);
        fsm
    }

    fn sent(actions: &[Action]) -> Vec<Notification> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::SendNotification(n) => Some(n.clone()),
                _ => None,
            })
            .collect()
    }

    fn retained(actions: &[Action]) -> Option<bool> {
        actions.iter().find_map(|a| match a {
            Action::Down { retain, .. } => Some(*retain),
            _ => None,
        })
    }

    #[test]
    fn graceful_stop_sends_cease_and_retains_when_both_set_the_n_bit() {
        let now = Instant::now();
        let mut fsm = established(true, true, now);
        let actions = fsm.handle(Event::GracefulStop, now);
        assert_eq!(sent(&actions), vec![admin_shutdown()]);
        assert_eq!(retained(&actions), Some(true));
        assert_eq!(fsm.state(), State::Idle);
    }

    #[test]
    fn graceful_stop_closes_silently_when_the_peer_lacks_the_n_bit() {
        let now = Instant::now();
        let mut fsm = established(true, false, now);
        let actions = fsm.handle(Event::GracefulStop, now);
        assert!(sent(&actions).is_empty(), "{actions:?}");
        assert_eq!(retained(&actions), Some(true));
    }

    #[test]
    fn manual_stop_under_the_n_bit_is_a_hard_reset() {
        let now = Instant::now();
        let mut fsm = established(true, true, now);
        let actions = fsm.handle(Event::ManualStop(None), now);
        let n = sent(&actions);
        assert_eq!(n.len(), 1);
        assert!(is_hard_reset(&n[0]), "{n:?}");
        assert_eq!(
            &n[0].data[..2],
            &[notif::CEASE, notif::ADMINISTRATIVE_SHUTDOWN]
        );
        assert_eq!(retained(&actions), Some(false));
        // Without the N bit a plain Cease says the same already.
        let mut fsm = established(true, false, now);
        let actions = fsm.handle(Event::ManualStop(None), now);
        assert_eq!(sent(&actions), vec![admin_shutdown()]);
    }

    #[test]
    fn received_cease_keeps_routes_under_the_n_bit_but_not_a_hard_reset() {
        let now = Instant::now();
        let mut fsm = established(true, true, now);
        let actions = fsm.handle(Event::NotifMsg(admin_shutdown()), now);
        assert_eq!(retained(&actions), Some(true));
        let mut fsm = established(true, true, now);
        let actions = fsm.handle(Event::NotifMsg(hard_reset(admin_shutdown())), now);
        assert_eq!(retained(&actions), Some(false));
        let mut fsm = established(true, false, now);
        let actions = fsm.handle(Event::NotifMsg(admin_shutdown()), now);
        assert_eq!(retained(&actions), Some(false));
    }

    #[test]
    fn max_prefix_cease_goes_as_a_hard_reset_under_the_n_bit() {
        let max = Notification::new(notif::CEASE, notif::MAX_PREFIXES_REACHED, vec![0, 1]);
        assert!(is_hard_reset(&to_send(max.clone(), true)));
        assert_eq!(to_send(max.clone(), false), max);
        let admin = admin_shutdown();
        assert_eq!(to_send(admin.clone(), true), admin);
    }

    #[test]
    fn sent_update_error_keeps_routes_under_the_n_bit() {
        let now = Instant::now();
        let mut fsm = established(true, true, now);
        let err = Notification::new(notif::UPDATE_MESSAGE_ERROR, 1, Vec::new());
        let actions = fsm.handle(Event::UpdateMsgErr(err.clone()), now);
        assert_eq!(sent(&actions), vec![err]);
        assert_eq!(retained(&actions), Some(true));
    }
}
