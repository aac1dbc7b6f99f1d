//! One test per transition that matters, driven with an `Instant` advanced by hand.

use super::*;
use crate::wire::{AS_TRANS, Capability, Family};
use std::net::Ipv4Addr;

const LOCAL_ID: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const PEER_ID: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

fn config() -> FsmConfig {
    let mut c = FsmConfig::new(65000, 65001, LOCAL_ID);
    c.connect_retry = Duration::from_secs(5);
    c.idle_hold_time = Duration::from_secs(1);
    c.idle_hold_max = Duration::from_secs(8);
    c.stable_time = Duration::from_secs(30);
    c.families = vec![Family::Ipv4Unicast, Family::Ipv6Unicast];
    c
}

fn peer_open(asn: u32, hold: u16, id: Ipv4Addr) -> Open {
    Open {
        version: 4,
        my_as: u16::try_from(asn).unwrap_or(AS_TRANS),
        hold_time: hold,
        bgp_identifier: id,
        capabilities: vec![
            Capability::Multiprotocol { afi: 1, safi: 1 },
            Capability::RouteRefresh,
            Capability::FourOctetAs(asn),
        ],
    }
}

/// A clock the test advances.
struct Clock(Instant);

impl Clock {
    fn new() -> Clock {
        Clock(Instant::now())
    }
    fn now(&self) -> Instant {
        self.0
    }
    fn advance(&mut self, secs: u64) -> Instant {
        self.0 += Duration::from_secs(secs);
        self.0
    }
}

fn has_notification(actions: &[Action], code: u8, subcode: u8) -> bool {
    actions
        .iter()
        .any(|a| matches!(a, Action::SendNotification(n) if n.code == code && n.subcode == subcode))
}

/// An FSM driven to `state` with the peer's OPEN (hold 90).
fn fsm_in(state: State, clock: &Clock) -> Fsm {
    let mut fsm = Fsm::new(config());
    let now = clock.now();
    fsm.handle(Event::ManualStart, now);
    if state == State::Connect {
        return fsm;
    }
    fsm.handle(Event::TcpCrAcked, now);
    if state == State::OpenSent {
        return fsm;
    }
    fsm.handle(Event::BgpOpen(peer_open(65001, 90, PEER_ID)), now);
    if state == State::OpenConfirm {
        return fsm;
    }
    fsm.handle(Event::KeepAliveMsg, now);
    assert_eq!(fsm.state(), State::Established);
    fsm
}

#[test]
fn manual_start_connects_and_arms_connect_retry() {
    let clock = Clock::new();
    let mut fsm = Fsm::new(config());
    let actions = fsm.handle(Event::ManualStart, clock.now());
    assert_eq!(actions, vec![Action::Connect]);
    assert_eq!(fsm.state(), State::Connect);
    assert_eq!(
        fsm.poll_timeout(),
        Some(clock.now() + Duration::from_secs(5))
    );
}

#[test]
fn manual_start_passive_waits_in_active_without_connecting() {
    let clock = Clock::new();
    let mut fsm = Fsm::new(config());
    let actions = fsm.handle(Event::ManualStartPassive, clock.now());
    assert!(actions.is_empty());
    assert_eq!(fsm.state(), State::Active);
    assert_eq!(fsm.poll_timeout(), None);
}

#[test]
fn idle_ignores_messages_and_timers() {
    let clock = Clock::new();
    let mut fsm = Fsm::new(config());
    for ev in [
        Event::KeepAliveMsg,
        Event::UpdateMsg,
        Event::HoldTimerExpires,
        Event::TcpConnectionConfirmed,
        Event::AutomaticStart,
    ] {
        assert!(fsm.handle(ev, clock.now()).is_empty());
        assert_eq!(fsm.state(), State::Idle);
    }
}

#[test]
fn connect_success_sends_open_with_large_hold_timer() {
    let clock = Clock::new();
    let mut fsm = fsm_in(State::Connect, &clock);
    let actions = fsm.handle(Event::TcpCrAcked, clock.now());
    assert!(matches!(&actions[..], [Action::SendOpen(o)] if o.hold_time == 90 && o.my_as == 65000));
    assert_eq!(fsm.state(), State::OpenSent);
    // The hold timer waits 4 minutes for the peer's OPEN; the connect retry timer is stopped.
    assert_eq!(
        fsm.poll_timeout(),
        Some(clock.now() + Duration::from_secs(240))
    );
}

#[test]
fn connect_failure_goes_active_and_retries_after_connect_retry() {
    let mut clock = Clock::new();
    let mut fsm = fsm_in(State::Connect, &clock);
    fsm.handle(
        Event::TcpConnectionFails("Socket: Connection refused".into()),
        clock.now(),
    );
    assert_eq!(fsm.state(), State::Active);
    assert_eq!(fsm.last_error(), Some("Socket: Connection refused"));
    assert!(fsm.handle_timeout(clock.advance(4)).is_empty());
    let actions = fsm.handle_timeout(clock.advance(1));
    assert!(actions.contains(&Action::Connect));
    assert_eq!(fsm.state(), State::Connect);
}

#[test]
fn connect_retry_expiry_in_connect_restarts_the_attempt() {
    let mut clock = Clock::new();
    let mut fsm = fsm_in(State::Connect, &clock);
    let actions = fsm.handle_timeout(clock.advance(5));
    assert_eq!(actions, vec![Action::DropConnection, Action::Connect]);
    assert_eq!(fsm.state(), State::Connect);
    assert_eq!(
        fsm.poll_timeout(),
        Some(clock.now() + Duration::from_secs(5))
    );
}

#[test]
fn inbound_connection_in_active_sends_open() {
    let clock = Clock::new();
    let mut fsm = Fsm::new(config());
    fsm.handle(Event::ManualStartPassive, clock.now());
    let actions = fsm.handle(Event::TcpConnectionConfirmed, clock.now());
    assert!(matches!(&actions[..], [Action::SendOpen(_)]));
    assert_eq!(fsm.state(), State::OpenSent);
}

#[test]
fn passive_peer_never_connects_after_failure() {
    let mut clock = Clock::new();
    let mut fsm = Fsm::new(config());
    fsm.handle(Event::ManualStartPassive, clock.now());
    fsm.handle(Event::TcpConnectionConfirmed, clock.now());
    fsm.handle(
        Event::TcpConnectionFails("Connection lost".into()),
        clock.now(),
    );
    assert_eq!(fsm.state(), State::Active);
    assert_eq!(fsm.poll_timeout(), None);
    assert!(fsm.handle_timeout(clock.advance(1000)).is_empty());
}

#[test]
fn valid_open_sends_keepalive_and_negotiates_minimum_hold_time() {
    let clock = Clock::new();
    let mut fsm = fsm_in(State::OpenSent, &clock);
    let actions = fsm.handle(Event::BgpOpen(peer_open(65001, 30, PEER_ID)), clock.now());
    assert_eq!(actions, vec![Action::SendKeepalive]);
    assert_eq!(fsm.state(), State::OpenConfirm);
    let neg = fsm.negotiated().expect("negotiated");
    assert_eq!(neg.hold_time, 30);
    assert_eq!(neg.keepalive, 10);
    assert_eq!(neg.peer_asn, 65001);
    assert_eq!(neg.peer_router_id, PEER_ID);
    assert_eq!(
        fsm.poll_timeout(),
        Some(clock.now() + Duration::from_secs(10))
    );
}

#[test]
fn negotiation_intersects_families_and_capabilities() {
    let mut open = peer_open(65001, 90, PEER_ID);
    open.capabilities.push(Capability::ExtendedMessage);
    let neg = negotiate(&config(), &open).expect("ok");
    assert_eq!(neg.families, vec![Family::Ipv4Unicast]);
    assert!(neg.four_octet_as);
    assert!(neg.extended_message);
    assert!(neg.route_refresh);
    assert!(!neg.enhanced_route_refresh);
    assert_eq!(neg.graceful_restart, None);
    assert_eq!(
        neg.codec_context(),
        crate::wire::CodecContext {
            four_octet_as: true,
            extended_message: true,
            ibgp: false,
        }
    );
}

#[test]
fn peer_without_four_octet_capability_gets_two_octet_context() {
    let mut open = peer_open(65001, 90, PEER_ID);
    open.capabilities
        .retain(|c| !matches!(c, Capability::FourOctetAs(_)));
    let neg = negotiate(&config(), &open).expect("ok");
    assert!(!neg.four_octet_as);
    assert!(!neg.codec_context().four_octet_as);
}

#[test]
fn open_from_wrong_as_is_refused_with_bad_peer_as() {
    let clock = Clock::new();
    let mut fsm = fsm_in(State::OpenSent, &clock);
    let actions = fsm.handle(Event::BgpOpen(peer_open(65099, 90, PEER_ID)), clock.now());
    assert!(has_notification(
        &actions,
        notif::OPEN_MESSAGE_ERROR,
        notif::BAD_PEER_AS
    ));
    assert!(actions.contains(&Action::DropConnection));
    assert_eq!(fsm.state(), State::Idle);
    assert_eq!(fsm.last_error(), Some("Bad peer AS: 65099"));
}

#[test]
fn open_with_unsupported_version_is_refused() {
    let clock = Clock::new();
    let mut fsm = fsm_in(State::OpenSent, &clock);
    let mut open = peer_open(65001, 90, PEER_ID);
    open.version = 3;
    let actions = fsm.handle(Event::BgpOpen(open), clock.now());
    let n = actions.iter().find_map(|a| match a {
        Action::SendNotification(n) => Some(n.clone()),
        _ => None,
    });
    let n = n.expect("notification");
    assert_eq!(
        (n.code, n.subcode),
        (notif::OPEN_MESSAGE_ERROR, notif::UNSUPPORTED_VERSION_NUMBER)
    );
    assert_eq!(&n.data[..], &[0, 4]);
}

#[test]
fn open_with_hold_time_one_or_two_is_unacceptable() {
    for hold in [1, 2] {
        let err = negotiate(&config(), &peer_open(65001, hold, PEER_ID)).expect_err("refused");
        assert_eq!(err.notification.subcode, notif::UNACCEPTABLE_HOLD_TIME);
    }
    assert!(negotiate(&config(), &peer_open(65001, 0, PEER_ID)).is_ok());
    assert!(negotiate(&config(), &peer_open(65001, 3, PEER_ID)).is_ok());
}

#[test]
fn open_with_zero_identifier_is_refused() {
    let err = negotiate(&config(), &peer_open(65001, 90, Ipv4Addr::UNSPECIFIED)).expect_err("x");
    assert_eq!(err.notification.subcode, notif::BAD_BGP_IDENTIFIER);
}

#[test]
fn ibgp_peer_with_our_identifier_is_refused_but_ebgp_is_allowed() {
    let mut ibgp = config();
    ibgp.remote_as = 65000;
    let err = negotiate(&ibgp, &peer_open(65000, 90, LOCAL_ID)).expect_err("ibgp");
    assert_eq!(err.notification.subcode, notif::BAD_BGP_IDENTIFIER);
    assert!(negotiate(&config(), &peer_open(65001, 90, LOCAL_ID)).is_ok());
}

#[test]
fn four_octet_peer_as_is_read_from_the_capability() {
    let mut c = config();
    c.remote_as = 4_200_000_001;
    let open = peer_open(4_200_000_001, 90, PEER_ID);
    assert_eq!(open.my_as, AS_TRANS);
    assert_eq!(negotiate(&c, &open).expect("ok").peer_asn, 4_200_000_001);
}

#[test]
fn our_open_uses_as_trans_for_four_octet_local_as() {
    let mut c = config();
    c.local_as = 4_200_000_000;
    let open = c.open();
    assert_eq!(open.my_as, AS_TRANS);
    assert_eq!(open.asn(), 4_200_000_000);
    assert_eq!(
        open.families(),
        vec![Family::Ipv4Unicast, Family::Ipv6Unicast]
    );
}

#[test]
fn keepalive_in_open_confirm_establishes() {
    let clock = Clock::new();
    let mut fsm = fsm_in(State::OpenConfirm, &clock);
    let actions = fsm.handle(Event::KeepAliveMsg, clock.now());
    assert!(matches!(&actions[..], [Action::Established(n)] if n.peer_asn == 65001));
    assert_eq!(fsm.state(), State::Established);
}

#[test]
fn notification_in_open_confirm_goes_idle_with_received_text() {
    let clock = Clock::new();
    let mut fsm = fsm_in(State::OpenConfirm, &clock);
    let actions = fsm.handle(Event::NotifMsg(admin_shutdown()), clock.now());
    assert_eq!(actions, vec![Action::DropConnection]);
    assert_eq!(fsm.state(), State::Idle);
    assert_eq!(
        fsm.last_error(),
        Some("Received: Cease / Administrative shutdown")
    );
}

#[test]
fn update_in_open_sent_is_an_fsm_error() {
    let clock = Clock::new();
    let mut fsm = fsm_in(State::OpenSent, &clock);
    let actions = fsm.handle(Event::UpdateMsg, clock.now());
    assert!(has_notification(&actions, notif::FSM_ERROR, 1));
    assert_eq!(fsm.state(), State::Idle);
}

#[test]
fn update_in_open_confirm_is_an_fsm_error() {
    let clock = Clock::new();
    let mut fsm = fsm_in(State::OpenConfirm, &clock);
    let actions = fsm.handle(Event::UpdateMsg, clock.now());
    assert!(has_notification(&actions, notif::FSM_ERROR, 2));
    assert_eq!(fsm.state(), State::Idle);
}

#[test]
fn open_sent_hold_timer_expiry_sends_hold_timer_expired() {
    let mut clock = Clock::new();
    let mut fsm = fsm_in(State::OpenSent, &clock);
    assert!(fsm.handle_timeout(clock.advance(239)).is_empty());
    let actions = fsm.handle_timeout(clock.advance(1));
    assert!(has_notification(&actions, notif::HOLD_TIMER_EXPIRED, 0));
    assert_eq!(fsm.state(), State::Idle);
    assert_eq!(fsm.last_error(), Some("Hold timer expired"));
}

#[test]
fn established_sends_keepalives_every_third_of_hold_time() {
    let mut clock = Clock::new();
    let mut fsm = fsm_in(State::Established, &clock);
    // A keepalive from the peer every 20 s keeps the hold timer (90 s) from expiring.
    let mut sent = 0;
    for _ in 0..9 {
        let now = clock.advance(10);
        sent += fsm
            .handle_timeout(now)
            .iter()
            .filter(|a| **a == Action::SendKeepalive)
            .count();
        fsm.handle(Event::KeepAliveMsg, now);
    }
    assert_eq!(sent, 3);
    assert_eq!(fsm.state(), State::Established);
}

#[test]
fn established_hold_timer_expiry_goes_down() {
    let mut clock = Clock::new();
    let mut fsm = fsm_in(State::Established, &clock);
    let mut all = Vec::new();
    for _ in 0..9 {
        all.extend(fsm.handle_timeout(clock.advance(10)));
    }
    assert!(has_notification(&all, notif::HOLD_TIMER_EXPIRED, 0));
    assert!(all.contains(&Action::Down {
        reason: "Hold timer expired".into(),
        retain: true,
    }));
    assert_eq!(fsm.state(), State::Idle);
}

#[test]
fn received_update_restarts_the_hold_timer() {
    let mut clock = Clock::new();
    let mut fsm = fsm_in(State::Established, &clock);
    clock.advance(80);
    fsm.handle(Event::UpdateMsg, clock.now());
    let actions = fsm.handle_timeout(clock.advance(20));
    assert!(!has_notification(&actions, notif::HOLD_TIMER_EXPIRED, 0));
    assert_eq!(fsm.state(), State::Established);
}

#[test]
fn unread_bytes_from_the_peer_restart_the_hold_timer_only_when_established() {
    let mut clock = Clock::new();
    let mut fsm = fsm_in(State::Established, &clock);
    clock.advance(80);
    fsm.peer_alive(clock.now());
    let actions = fsm.handle_timeout(clock.advance(20));
    assert!(!has_notification(&actions, notif::HOLD_TIMER_EXPIRED, 0));
    assert_eq!(fsm.state(), State::Established);
    // Silence after that still expires it.
    let actions = fsm.handle_timeout(clock.advance(70));
    assert!(has_notification(&actions, notif::HOLD_TIMER_EXPIRED, 0));

    // In OpenConfirm only the peer's KEEPALIVE counts (it is what makes the session).
    let mut clock = Clock::new();
    let mut fsm = fsm_in(State::OpenConfirm, &clock);
    let before = fsm.poll_timeout();
    fsm.peer_alive(clock.advance(10));
    assert_eq!(fsm.state(), State::OpenConfirm);
    assert_eq!(fsm.poll_timeout(), before);
}

#[test]
fn sent_update_restarts_the_keepalive_timer() {
    let mut clock = Clock::new();
    let mut fsm = fsm_in(State::Established, &clock);
    clock.advance(29);
    fsm.handle(Event::UpdateSent, clock.now());
    // Without the UPDATE a KEEPALIVE would go out at 30 s; now it waits until 59 s.
    assert!(fsm.handle_timeout(clock.advance(1)).is_empty());
    assert_eq!(
        fsm.poll_timeout(),
        Some(clock.now() + Duration::from_secs(29))
    );
}

#[test]
fn zero_hold_time_runs_no_timers() {
    let clock = Clock::new();
    let mut fsm = fsm_in(State::OpenSent, &clock);
    fsm.handle(Event::BgpOpen(peer_open(65001, 0, PEER_ID)), clock.now());
    fsm.handle(Event::KeepAliveMsg, clock.now());
    assert_eq!(fsm.state(), State::Established);
    assert_eq!(fsm.poll_timeout(), None);
}

#[test]
fn update_error_sends_its_notification_and_goes_down() {
    let clock = Clock::new();
    let mut fsm = fsm_in(State::Established, &clock);
    let n = Notification::new(
        notif::UPDATE_MESSAGE_ERROR,
        notif::MALFORMED_AS_PATH,
        Vec::new(),
    );
    let actions = fsm.handle(Event::UpdateMsgErr(n.clone()), clock.now());
    assert_eq!(actions[0], Action::SendNotification(n));
    assert_eq!(actions[1], Action::DropConnection);
    assert!(
        matches!(&actions[2], Action::Down { reason, retain: false } if reason.contains("Malformed AS_PATH"))
    );
}

#[test]
fn header_error_in_open_sent_sends_its_notification() {
    let clock = Clock::new();
    let mut fsm = fsm_in(State::OpenSent, &clock);
    let n = Notification::new(
        notif::MESSAGE_HEADER_ERROR,
        notif::BAD_MESSAGE_LENGTH,
        vec![0, 1],
    );
    let actions = fsm.handle(Event::BgpHeaderErr(n.clone()), clock.now());
    assert_eq!(actions[0], Action::SendNotification(n));
    assert_eq!(fsm.state(), State::Idle);
}

#[test]
fn manual_stop_in_established_sends_cease_and_goes_down() {
    let clock = Clock::new();
    let mut fsm = fsm_in(State::Established, &clock);
    let actions = fsm.handle(Event::ManualStop(None), clock.now());
    assert!(has_notification(
        &actions,
        notif::CEASE,
        notif::ADMINISTRATIVE_SHUTDOWN
    ));
    assert!(actions.contains(&Action::Down {
        reason: "Cease / Administrative shutdown".into(),
        retain: false,
    }));
    assert_eq!(fsm.state(), State::Idle);
    assert_eq!(
        fsm.poll_timeout(),
        None,
        "no automatic restart after a stop"
    );
}

#[test]
fn manual_stop_in_connect_closes_without_notification() {
    let clock = Clock::new();
    let mut fsm = fsm_in(State::Connect, &clock);
    let actions = fsm.handle(Event::ManualStop(None), clock.now());
    assert_eq!(actions, vec![Action::DropConnection]);
    assert_eq!(fsm.state(), State::Idle);
}

#[test]
fn error_restarts_automatically_after_idle_hold() {
    let mut clock = Clock::new();
    let mut fsm = fsm_in(State::OpenConfirm, &clock);
    fsm.handle(Event::NotifMsg(admin_shutdown()), clock.now());
    assert_eq!(
        fsm.poll_timeout(),
        Some(clock.now() + Duration::from_secs(1))
    );
    let actions = fsm.handle_timeout(clock.advance(1));
    assert_eq!(actions, vec![Action::Connect]);
    assert_eq!(fsm.state(), State::Connect);
}

#[test]
fn repeated_failures_double_the_back_off_up_to_the_cap() {
    let mut clock = Clock::new();
    let mut fsm = fsm_in(State::OpenSent, &clock);
    let mut waits = Vec::new();
    for _ in 0..6 {
        fsm.handle(Event::BgpOpen(peer_open(1, 90, PEER_ID)), clock.now());
        assert_eq!(fsm.state(), State::Idle);
        let due = fsm.poll_timeout().expect("idle hold");
        waits.push((due - clock.now()).as_secs());
        clock.0 = due;
        fsm.handle_timeout(clock.now());
        fsm.handle(Event::TcpCrAcked, clock.now());
    }
    assert_eq!(waits, vec![1, 2, 4, 8, 8, 8]);
    assert_eq!(fsm.connect_retry_counter(), 6);
}

#[test]
fn back_off_resets_after_a_stable_session() {
    let mut clock = Clock::new();
    let mut fsm = fsm_in(State::OpenSent, &clock);
    // Two quick failures: the next back-off would be 4 s.
    for _ in 0..2 {
        fsm.handle(Event::BgpOpen(peer_open(1, 90, PEER_ID)), clock.now());
        clock.0 = fsm.poll_timeout().expect("idle hold");
        fsm.handle_timeout(clock.now());
        fsm.handle(Event::TcpCrAcked, clock.now());
    }
    fsm.handle(Event::BgpOpen(peer_open(65001, 0, PEER_ID)), clock.now());
    fsm.handle(Event::KeepAliveMsg, clock.now());
    clock.advance(31);
    fsm.handle(Event::NotifMsg(admin_shutdown()), clock.now());
    assert_eq!(
        fsm.poll_timeout(),
        Some(clock.now() + Duration::from_secs(1))
    );
}

#[test]
fn collision_dump_sends_cease_and_waits_in_active() {
    let clock = Clock::new();
    let mut fsm = fsm_in(State::OpenConfirm, &clock);
    let actions = fsm.handle(Event::OpenCollisionDump, clock.now());
    assert!(has_notification(
        &actions,
        notif::CEASE,
        notif::CONNECTION_COLLISION_RESOLUTION
    ));
    assert_eq!(fsm.state(), State::Active);
    // The surviving connection is handed over at once.
    let actions = fsm.handle(Event::TcpConnectionConfirmed, clock.now());
    assert!(matches!(&actions[..], [Action::SendOpen(_)]));
    assert_eq!(fsm.state(), State::OpenSent);
}

#[test]
fn connection_loss_in_established_goes_down_with_socket_text() {
    let clock = Clock::new();
    let mut fsm = fsm_in(State::Established, &clock);
    let actions = fsm.handle(
        Event::TcpConnectionFails("Connection closed".into()),
        clock.now(),
    );
    assert_eq!(
        actions,
        vec![
            Action::DropConnection,
            Action::Down {
                reason: "Connection closed".into(),
                retain: true,
            }
        ]
    );
    assert_eq!(fsm.state(), State::Idle);
}

#[test]
fn open_in_established_is_an_fsm_error() {
    let clock = Clock::new();
    let mut fsm = fsm_in(State::Established, &clock);
    let actions = fsm.handle(Event::BgpOpen(peer_open(65001, 90, PEER_ID)), clock.now());
    assert!(has_notification(&actions, notif::FSM_ERROR, 3));
    assert!(actions.iter().any(|a| matches!(a, Action::Down { .. })));
}

#[test]
fn describes_notifications_in_operator_words() {
    assert_eq!(
        describe(&Notification::new(4, 0, Vec::new())),
        "Hold timer expired"
    );
    assert_eq!(
        describe(&Notification::new(2, 2, Vec::new())),
        "Invalid OPEN message / Bad peer AS"
    );
    assert_eq!(
        describe(&Notification::new(6, 2, Vec::new())),
        "Cease / Administrative shutdown"
    );
}

#[test]
fn graceful_stop_in_established_closes_without_notification_and_retains() {
    let clock = Clock::new();
    let mut fsm = fsm_in(State::Established, &clock);
    let actions = fsm.handle(Event::GracefulStop, clock.now());
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::SendNotification(_))),
        "{actions:?}"
    );
    assert!(actions.contains(&Action::DropConnection));
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Down { retain: true, .. }))
    );
    assert_eq!(fsm.state(), State::Idle);
    assert_eq!(fsm.poll_timeout(), None, "stopped for good");
}

#[test]
fn graceful_stop_before_established_is_a_plain_stop() {
    let clock = Clock::new();
    let mut fsm = fsm_in(State::OpenConfirm, &clock);
    let actions = fsm.handle(Event::GracefulStop, clock.now());
    assert!(has_notification(
        &actions,
        notif::CEASE,
        notif::ADMINISTRATIVE_SHUTDOWN
    ));
    assert_eq!(fsm.state(), State::Idle);
}

#[test]
fn received_notification_ends_graceful_restart() {
    let clock = Clock::new();
    let mut fsm = fsm_in(State::Established, &clock);
    let actions = fsm.handle(Event::NotifMsg(admin_shutdown()), clock.now());
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Down { retain: false, .. })),
        "{actions:?}"
    );
    // The flag does not leak into the next session's failure.
    let mut fsm = fsm_in(State::Established, &clock);
    let actions = fsm.handle(Event::TcpConnectionFails("reset".into()), clock.now());
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Down { retain: true, .. }))
    );
}

#[test]
fn restart_state_bit_is_set_only_inside_the_restart_window() {
    use crate::wire::{Capability, GracefulRestart};
    let clock = Clock::new();
    let mut c = config();
    c.graceful_restart = Some(GracefulRestart {
        restart_state: false,
        notification: false,
        restart_time: 120,
        families: vec![],
    });
    c.restarting_until = Some(clock.now() + Duration::from_secs(120));
    let r_bit = |open: Open| {
        open.capabilities.iter().find_map(|cap| match cap {
            Capability::GracefulRestart(gr) => Some(gr.restart_state),
            _ => None,
        })
    };
    assert_eq!(r_bit(c.open_at(clock.now())), Some(true));
    assert_eq!(
        r_bit(c.open_at(clock.now() + Duration::from_secs(121))),
        Some(false)
    );
    c.restarting_until = None;
    assert_eq!(r_bit(c.open_at(clock.now())), Some(false));
}

#[test]
fn a_configured_keepalive_time_sets_the_keepalive_timer() {
    let clock = Clock::new();
    let mut c = config();
    c.keepalive_time = Some(10);
    let mut fsm = Fsm::new(c);
    fsm.handle(Event::ManualStart, clock.now());
    fsm.handle(Event::TcpCrAcked, clock.now());
    fsm.handle(Event::BgpOpen(peer_open(65001, 90, PEER_ID)), clock.now());
    fsm.handle(Event::KeepAliveMsg, clock.now());
    assert_eq!(fsm.state(), State::Established);
    assert_eq!(
        fsm.keepalive_deadline(),
        Some(clock.now() + Duration::from_secs(10))
    );
    // As BIRD: the configured time, else a third of the hold time; never one that lets the
    // peer's hold timer expire; none with a hold time of 0.
    assert_eq!(negotiate::keepalive(90, Some(10)), 10);
    assert_eq!(negotiate::keepalive(90, None), 30);
    assert_eq!(negotiate::keepalive(9, Some(10)), 3);
    assert_eq!(negotiate::keepalive(0, Some(10)), 0);
}

#[test]
fn bfd_down_closes_an_established_session_with_cease_bfd_down_and_flushes() {
    let mut clock = Clock::new();
    let mut fsm = fsm_in(State::Established, &clock);
    let out = fsm.handle(Event::BfdDown, clock.advance(1));
    assert!(has_notification(&out, notif::CEASE, notif::BFD_DOWN));
    assert!(out.contains(&Action::DropConnection));
    assert!(out.contains(&Action::Down {
        reason: "BFD session down".into(),
        retain: false,
    }));
    assert_eq!(fsm.state(), State::Idle);
    assert_eq!(fsm.last_error(), Some("BFD session down"));
    // It starts again by itself after the back-off.
    let again = fsm.handle_timeout(clock.advance(10));
    assert!(again.contains(&Action::Connect), "{again:?}");
}

#[test]
fn bfd_down_closes_an_opening_session_and_is_ignored_without_one() {
    let clock = Clock::new();
    let mut fsm = fsm_in(State::OpenConfirm, &clock);
    let out = fsm.handle(Event::BfdDown, clock.now());
    assert!(has_notification(&out, notif::CEASE, notif::BFD_DOWN));
    assert!(!out.iter().any(|a| matches!(a, Action::Down { .. })));
    assert_eq!(fsm.state(), State::Idle);
    let mut fsm = fsm_in(State::Connect, &clock);
    assert_eq!(fsm.handle(Event::BfdDown, clock.now()), Vec::new());
    assert_eq!(fsm.state(), State::Connect);
}
