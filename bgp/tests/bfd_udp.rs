//! The BFD service over real UDP sockets on loopback (no namespaces needed): two services on
//! 127.0.0.1 and 127.0.0.2 bring a session Up, one detects the other's silence within its
//! detection time, and packets that do not arrive with TTL 255 are dropped (RFC 5881 §5).

use margay_bgp::bfd::{self, ControlPacket, Diagnostic, SessionState, Timers};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn lo(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// A UDP port free on loopback right now.
fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn fast() -> Timers {
    Timers {
        desired_min_tx: Duration::from_millis(50),
        required_min_rx: Duration::from_millis(50),
        detect_mult: 3,
    }
}

fn wait_state(h: &bfd::BfdHandle, peer: IpAddr, want: SessionState, within: Duration) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if h.status(peer).is_some_and(|s| s.snapshot.state == want) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

#[test]
fn two_services_come_up_and_silence_is_detected_in_time() {
    let port = free_port();
    let a = bfd::spawn_on(&[SocketAddr::new(lo(1), port)]).expect("service a");
    let b = bfd::spawn_on(&[SocketAddr::new(lo(2), port)]).expect("service b");
    let (tx, rx) = mpsc::channel();
    a.add(
        lo(2),
        Some(lo(1)),
        fast(),
        Box::new(move |t| {
            let _ = tx.send((Instant::now(), t));
        }),
    );
    b.add(lo(1), Some(lo(2)), fast(), Box::new(|_| {}));
    assert!(wait_state(
        &a,
        lo(2),
        SessionState::Up,
        Duration::from_secs(5)
    ));
    assert!(wait_state(
        &b,
        lo(1),
        SessionState::Up,
        Duration::from_secs(5)
    ));
    // Let the Poll Sequences finish, then check the negotiated timing.
    std::thread::sleep(Duration::from_millis(300));
    let s = a.status(lo(2)).unwrap().snapshot;
    assert_eq!(s.tx_interval, Duration::from_millis(50));
    assert_eq!(s.detection_time, Duration::from_millis(150));

    // The whole service gone (its last handle dropped): silence, no AdminDown.
    drop(b);
    let cut = Instant::now();
    let (at, t) = rx
        .recv_timeout(Duration::from_secs(2))
        .expect("a's session went down");
    let took = at - cut;
    assert_eq!(t.diag, Diagnostic::DETECTION_TIME_EXPIRED);
    assert!(
        took <= Duration::from_millis(150 + 100),
        "detected after {took:?}"
    );
    assert_eq!(a.status(lo(2)).unwrap().downs, 1);
}

#[test]
fn packets_without_ttl_255_are_dropped() {
    let port = free_port();
    let c = bfd::spawn_on(&[SocketAddr::new(lo(5), port)]).expect("service");
    c.add(lo(6), Some(lo(5)), fast(), Box::new(|_| {}));
    let down = ControlPacket {
        diag: Diagnostic::NONE,
        state: SessionState::Down,
        poll: false,
        fin: false,
        cpi: false,
        demand: false,
        detect_mult: 3,
        my_discr: 77,
        your_discr: 0,
        desired_min_tx_us: 1_000_000,
        required_min_rx_us: 50_000,
        required_min_echo_rx_us: 0,
    }
    .encode();
    let peer = UdpSocket::bind(SocketAddr::new(lo(6), 0)).expect("peer socket");
    let to = SocketAddr::new(lo(5), port);
    peer.set_ttl(64).unwrap();
    for _ in 0..5 {
        peer.send_to(&down, to).unwrap();
    }
    assert!(
        !wait_state(&c, lo(6), SessionState::Init, Duration::from_millis(500)),
        "a packet with TTL 64 moved the session"
    );
    peer.set_ttl(255).unwrap();
    peer.send_to(&down, to).unwrap();
    assert!(
        wait_state(&c, lo(6), SessionState::Init, Duration::from_secs(2)),
        "the same packet with TTL 255 is accepted"
    );
    assert_eq!(c.status(lo(6)).unwrap().snapshot.remote_discr, 77);
}

#[test]
fn a_removed_session_says_admin_down_and_the_peer_does_not_call_it_a_failure() {
    let port = free_port();
    let a = bfd::spawn_on(&[SocketAddr::new(lo(3), port)]).expect("service a");
    let b = bfd::spawn_on(&[SocketAddr::new(lo(4), port)]).expect("service b");
    let (tx, rx) = mpsc::channel();
    a.add(
        lo(4),
        Some(lo(3)),
        fast(),
        Box::new(move |t| {
            let _ = tx.send(t);
        }),
    );
    b.add(lo(3), Some(lo(4)), fast(), Box::new(|_| {}));
    assert!(wait_state(
        &a,
        lo(4),
        SessionState::Up,
        Duration::from_secs(5)
    ));
    b.remove(lo(3));
    assert!(wait_state(
        &a,
        lo(4),
        SessionState::Down,
        Duration::from_secs(1)
    ));
    let s = a.status(lo(4)).unwrap().snapshot;
    assert_eq!(s.remote_state, SessionState::AdminDown);
    assert_eq!(s.local_diag, Diagnostic::NEIGHBOR_SIGNALED_DOWN);
    assert!(
        rx.recv_timeout(Duration::from_millis(500)).is_err(),
        "AdminDown is not a path failure (RFC 5882 §3.2): the BGP session is not closed"
    );
}
