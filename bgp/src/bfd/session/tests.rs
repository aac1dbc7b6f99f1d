use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn fast() -> Timers {
    Timers {
        desired_min_tx: ms(100),
        required_min_rx: ms(100),
        detect_mult: 3,
    }
}

/// Two sessions wired back to back, packets delivered at once; returns the transitions seen.
fn exchange(a: &mut Session, b: &mut Session, now: Instant) -> Vec<(char, Transition)> {
    let mut seen = Vec::new();
    for _ in 0..8 {
        let mut quiet = true;
        let (pa, ta) = a.poll(now, 7);
        let (pb, tb) = b.poll(now, 7);
        seen.extend(ta.map(|t| ('a', t)));
        seen.extend(tb.map(|t| ('b', t)));
        if let Some(p) = pa {
            quiet = false;
            let p = ControlPacket::decode(&p.encode()).expect("valid packet");
            seen.extend(b.receive(&p, now).map(|t| ('b', t)));
        }
        if let Some(p) = pb {
            quiet = false;
            let p = ControlPacket::decode(&p.encode()).expect("valid packet");
            seen.extend(a.receive(&p, now).map(|t| ('a', t)));
        }
        if quiet {
            break;
        }
    }
    seen
}

fn up_pair(now: Instant) -> (Session, Session) {
    let mut a = Session::new(fast(), 11, now);
    let mut b = Session::new(fast(), 22, now);
    exchange(&mut a, &mut b, now);
    assert_eq!((a.state(), b.state()), (SessionState::Up, SessionState::Up));
    (a, b)
}

#[test]
fn three_way_handshake_reaches_up_and_poll_sequence_speeds_up() {
    let now = Instant::now();
    let mut a = Session::new(fast(), 11, now);
    let mut b = Session::new(fast(), 22, now);
    // Not Up: at least one second between packets (§6.8.3).
    let (p, _) = a.poll(now, 0);
    let p = p.expect("first packet at once");
    assert_eq!(p.state, SessionState::Down);
    assert_eq!(p.your_discr, 0);
    assert_eq!(p.desired_min_tx(), SLOW_TX);
    assert_eq!(a.poll(now + ms(500), 0).0, None, "slow while Down");
    let seen = exchange(&mut a, &mut b, now);
    assert!(
        seen.iter()
            .any(|(w, t)| *w == 'a' && t.to == SessionState::Up)
    );
    assert!(
        seen.iter()
            .any(|(w, t)| *w == 'b' && t.to == SessionState::Up)
    );
    // The Poll Sequence ran to its Final both ways: the fast interval is in force.
    assert_eq!(a.tx_interval(), ms(100));
    assert_eq!(b.tx_interval(), ms(100));
    assert_eq!(a.detection_time(), ms(300));
    // a's own Poll waited behind the Final it owed; it goes with the next periodic packet.
    exchange(&mut a, &mut b, now + ms(100));
    let (p, _) = a.poll(now + ms(200), 0);
    let p = p.expect("periodic packet");
    assert!(!p.poll, "poll sequence terminated");
    assert_eq!(p.your_discr, 22);
}

#[test]
fn silence_for_the_detection_time_brings_the_session_down() {
    let t0 = Instant::now();
    let (mut a, _b) = up_pair(t0);
    assert_eq!(a.poll(t0 + ms(299), 0).1, None);
    let (_, t) = a.poll(t0 + ms(300), 0);
    let t = t.expect("down at the detection time");
    assert_eq!(t.to, SessionState::Down);
    assert_eq!(t.diag, Diagnostic::DETECTION_TIME_EXPIRED);
    let s = a.snapshot();
    assert_eq!(s.remote_discr, 0);
    assert_eq!(s.local_diag, Diagnostic::DETECTION_TIME_EXPIRED);
    assert_eq!(s.tx_interval, SLOW_TX, "slow again once Down");
}

#[test]
fn packets_keep_the_session_up_and_carry_the_diagnostic_after_a_failure() {
    let t0 = Instant::now();
    let (mut a, mut b) = up_pair(t0);
    for step in 1..=10 {
        let now = t0 + ms(90 * step);
        let seen = exchange(&mut a, &mut b, now);
        assert!(seen.is_empty(), "no change at {step}: {seen:?}");
    }
    // b goes silent; a detects, tells b through Diag 1 / Down; b follows with Diag 3.
    let late = t0 + ms(900 + 300);
    let (p, t) = a.poll(late, 0);
    assert_eq!(t.map(|t| t.to), Some(SessionState::Down));
    let p = p.expect("state change sent at once");
    assert_eq!(p.diag, Diagnostic::DETECTION_TIME_EXPIRED);
    let t = b.receive(&p, late).expect("b leaves Up");
    assert_eq!(
        (t.to, t.diag),
        (SessionState::Down, Diagnostic::NEIGHBOR_SIGNALED_DOWN)
    );
}

#[test]
fn detection_time_uses_the_slower_of_our_rx_and_their_tx() {
    let t0 = Instant::now();
    let mut a = Session::new(fast(), 1, t0);
    let slow = Timers {
        desired_min_tx: ms(400),
        required_min_rx: ms(50),
        detect_mult: 5,
    };
    let mut b = Session::new(slow, 2, t0);
    exchange(&mut a, &mut b, t0);
    assert_eq!(a.state(), SessionState::Up);
    assert_eq!(a.detection_time(), ms(400) * 5);
    assert_eq!(b.detection_time(), ms(100) * 3);
    // a sends at its own 100 ms (b accepts 50); b at 400.
    assert_eq!(a.tx_interval(), ms(100));
    assert_eq!(b.tx_interval(), ms(400));
}

#[test]
fn jitter_stays_within_75_to_90_percent() {
    let t0 = Instant::now();
    let (mut a, _b) = up_pair(t0);
    let mut now = a.deadline(t0);
    let mut gaps = Vec::new();
    for j in 0..200u32 {
        let (p, _) = a.poll(now, j.wrapping_mul(2_654_435_761));
        assert!(p.is_some());
        let next = a.deadline(now);
        let gap = next - now;
        assert!(gap >= ms(75) && gap <= ms(90), "gap {gap:?}");
        gaps.push(gap);
        // Keep it Up: pretend a packet came.
        a.detect_deadline = None;
        now = next;
    }
    assert!(gaps.iter().any(|g| *g < ms(80)) && gaps.iter().any(|g| *g > ms(85)));
}

#[test]
fn a_late_wakeup_keeps_the_cadence_of_the_planned_time() {
    let t0 = Instant::now();
    let (mut a, _b) = up_pair(t0);
    a.detect_deadline = None;
    let planned = a.deadline(t0 + ms(1));
    // Woken 20 ms late: the next packet is due 75-90 ms after the planned time, not after now.
    let (p, _) = a.poll(planned + ms(20), 0);
    assert!(p.is_some());
    assert_eq!(a.deadline(planned + ms(20)), planned + ms(75));
    // Woken more than half an interval late: the cadence restarts from now (no burst).
    a.detect_deadline = None;
    let planned = planned + ms(75);
    let (p, _) = a.poll(planned + ms(60), 0);
    assert!(p.is_some());
    assert_eq!(a.deadline(planned + ms(60)), planned + ms(60) + ms(75));
}

#[test]
fn detection_counts_from_the_arrival_of_the_last_packet() {
    let t0 = Instant::now();
    let (mut a, mut b) = up_pair(t0);
    let (p, _) = b.poll(b.deadline(t0), 0);
    let p = p.expect("b's periodic packet");
    // It arrived at t0 + 100 ms and is handled 7 ms later: the deadline is 300 ms after arrival.
    let arrived = t0 + ms(100);
    assert_eq!(a.receive(&p, arrived), None);
    a.next_tx = t0 + ms(10_000);
    assert_eq!(a.deadline(arrived + ms(7)), arrived + ms(300));
    assert_eq!(a.poll(arrived + ms(299), 0).1, None);
    let (_, t) = a.poll(arrived + ms(300), 0);
    assert_eq!(t.map(|t| t.diag), Some(Diagnostic::DETECTION_TIME_EXPIRED));
}

#[test]
fn a_poll_is_answered_with_final_and_never_both_bits() {
    let t0 = Instant::now();
    let (mut a, mut b) = up_pair(t0);
    b.set_timers(Timers {
        desired_min_tx: ms(200),
        ..fast()
    });
    let (p, _) = b.poll(t0, 0);
    let p = p.expect("poll sent at once");
    assert!(p.poll && !p.fin);
    assert_eq!(
        b.tx_interval(),
        ms(100),
        "slower interval waits for the Final"
    );
    a.receive(&p, t0);
    let (f, _) = a.poll(t0, 0);
    let f = f.expect("final sent at once");
    assert!(f.fin && !f.poll);
    b.receive(&f, t0);
    assert_eq!(b.tx_interval(), ms(200));
    assert_eq!(a.detection_time(), ms(600));
}

#[test]
fn admin_down_from_the_peer_is_neighbor_signaled_down() {
    let t0 = Instant::now();
    let (mut a, _b) = up_pair(t0);
    let p = ControlPacket {
        state: SessionState::AdminDown,
        diag: Diagnostic::ADMINISTRATIVELY_DOWN,
        ..a.packet()
    };
    let p = ControlPacket {
        my_discr: 22,
        your_discr: 11,
        ..p
    };
    let t = a.receive(&p, t0).expect("down");
    assert_eq!(t.diag, Diagnostic::NEIGHBOR_SIGNALED_DOWN);
    assert_eq!(
        a.deadline(t0 + ms(10)),
        t0 + ms(10),
        "state change goes out at once"
    );
}

#[test]
fn a_packet_for_another_discriminator_is_ignored() {
    let t0 = Instant::now();
    let (mut a, _b) = up_pair(t0);
    let stray = ControlPacket {
        state: SessionState::Down,
        my_discr: 99,
        your_discr: 12345,
        ..a.packet()
    };
    assert_eq!(a.receive(&stray, t0), None);
    assert_eq!(a.state(), SessionState::Up);
}

#[test]
fn admin_down_is_sent_and_keeps_the_session_quiet() {
    let t0 = Instant::now();
    let (mut a, mut b) = up_pair(t0);
    let p = a.admin_down();
    assert_eq!(
        (p.state, p.diag),
        (SessionState::AdminDown, Diagnostic::ADMINISTRATIVELY_DOWN)
    );
    let t = b.receive(&p, t0).expect("b leaves Up");
    assert_eq!(t.diag, Diagnostic::NEIGHBOR_SIGNALED_DOWN);
    assert_eq!(b.snapshot().remote_state, SessionState::AdminDown);
    // AdminDown never times out and ignores what arrives.
    assert_eq!(a.poll(t0 + ms(5000), 0).1, None);
    assert_eq!(a.receive(&b.packet(), t0), None);
    assert_eq!(a.state(), SessionState::AdminDown);
}

/// The packet a peer's brand-new session sends first: its own discriminator, ours unknown.
fn fresh_session_down(a: &Session, my_discr: u32) -> ControlPacket {
    ControlPacket {
        state: SessionState::Down,
        diag: Diagnostic::NONE,
        my_discr,
        your_discr: 0,
        desired_min_tx_us: 1_000_000,
        ..a.packet()
    }
}

#[test]
fn a_failure_is_reported_once_when_an_up_session_loses_the_path() {
    let t0 = Instant::now();
    let (mut a, _b) = up_pair(t0);
    let (_, t) = a.poll(t0 + ms(301), 0);
    let t = t.expect("expired");
    assert!(t.failure && t.from == SessionState::Up, "{t:?}");
    // Down and waiting: no further failure however long the silence.
    assert_eq!(a.poll(t0 + ms(5000), 0).1, None);
    // The peer's same session saying Down (it noticed first) is a failure too.
    let (mut a, b) = up_pair(t0);
    let p = ControlPacket {
        state: SessionState::Down,
        diag: Diagnostic::DETECTION_TIME_EXPIRED,
        your_discr: 0,
        ..b.packet()
    };
    let t = a.receive(&p, t0).expect("down");
    assert!(t.failure, "{t:?}");
    assert_eq!(t.diag, Diagnostic::NEIGHBOR_SIGNALED_DOWN);
}

#[test]
fn admin_down_from_the_peer_is_not_a_failure() {
    let t0 = Instant::now();
    let (mut a, b) = up_pair(t0);
    let p = ControlPacket {
        state: SessionState::AdminDown,
        diag: Diagnostic::ADMINISTRATIVELY_DOWN,
        ..b.packet()
    };
    let t = a.receive(&p, t0).expect("down");
    assert!(!t.failure, "{t:?}");
    // Nor is the silence that follows it.
    assert_eq!(a.poll(t0 + ms(5000), 0).1, None);
}

#[test]
fn a_peers_new_session_resynchronises_without_a_failure() {
    let t0 = Instant::now();
    let (mut a, _b) = up_pair(t0);
    // The peer (discriminator 22) dropped its session and started another, 33.
    let t = a
        .receive(&fresh_session_down(&a, 33), t0 + ms(50))
        .expect("down");
    assert_eq!((t.from, t.to), (SessionState::Up, SessionState::Down));
    assert!(!t.failure, "the peer's new session was never Up: {t:?}");
    // The three-way handshake with the new session: Down, Init, Up; still no failure.
    let mut b = Session::new(fast(), 33, t0);
    let seen = exchange(&mut a, &mut b, t0 + ms(60));
    assert!(seen.iter().all(|(_, t)| !t.failure), "{seen:?}");
    assert_eq!((a.state(), b.state()), (SessionState::Up, SessionState::Up));
    assert_eq!(a.snapshot().remote_discr, 33);
}

#[test]
fn a_path_that_fails_while_resynchronising_is_still_a_failure() {
    let t0 = Instant::now();
    let (mut a, _b) = up_pair(t0);
    let t = a.receive(&fresh_session_down(&a, 33), t0).expect("down");
    assert!(!t.failure);
    // Nothing more from the peer: its new session's detection time (3 × its 1 s) runs out.
    let deadline = a.deadline(t0 + ms(10));
    assert!(deadline <= t0 + ms(3000), "{:?}", deadline - t0);
    let (_, t) = a.poll(t0 + ms(3001), 0);
    let t = t.expect("the resynchronisation failed");
    assert!(t.failure, "{t:?}");
    assert_eq!(t.diag, Diagnostic::DETECTION_TIME_EXPIRED);
    // Reported once.
    assert_eq!(a.poll(t0 + ms(9000), 0).1, None);
}

#[test]
fn a_down_from_the_same_discriminator_is_not_mistaken_for_a_new_session() {
    let t0 = Instant::now();
    let (mut a, _b) = up_pair(t0);
    // Discriminator 22 is the peer's session we are Up with; BIRD clears ours on its timeout.
    let t = a.receive(&fresh_session_down(&a, 22), t0).expect("down");
    assert!(t.failure, "{t:?}");
}
