//! Session tasks over real TCP on loopback: two margay sessions (or one and a hand-driven
//! peer) with distinct 127.0.0.x addresses and ports so the tests run in parallel.

use bytes::{Bytes, BytesMut};
use margay_bgp::fsm::State;
use margay_bgp::session::{self, PeerConfig, SessionError, SessionEvent, SessionHandle};
use margay_bgp::transport::Listener;
use margay_bgp::wire::{
    self, AsPath, AsSegment, Capability, CodecContext, Message, Notification, Open, Origin,
    PathAttributes, Prefix4, Update, notif,
};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// A peer config on `local` toward `remote`:`port`, with test-sized timers.
fn config(local: u8, remote: u8, port: u16, local_as: u32, remote_as: u32) -> PeerConfig {
    let mut c = PeerConfig::new(
        ip(remote),
        local_as,
        remote_as,
        Ipv4Addr::new(10, 0, 0, local),
    );
    c.port = port;
    c.source_address = Some(ip(local));
    c.connect_retry = Duration::from_secs(1);
    c
}

struct Side {
    handle: SessionHandle,
    events: mpsc::Receiver<SessionEvent>,
}

/// Spawns a session; when `listen_port` is given, also a listener on the session's local
/// address that hands the peer's connections to it (with the session's MD5 key).
fn side(id: u32, config: PeerConfig, listen_port: Option<u16>) -> Side {
    side_with_queue(id, config, listen_port, 1024)
}

/// As [`side`], with the speaker's event queue holding only `queue` events.
fn side_with_queue(id: u32, config: PeerConfig, listen_port: Option<u16>, queue: usize) -> Side {
    let (tx, events) = mpsc::channel(queue);
    let local = config.source_address.expect("tests set a source address");
    let peer = config.address;
    let password = config.password.clone();
    let handle = session::spawn(id, config, tx);
    if let Some(port) = listen_port {
        let listener = Listener::bind(SocketAddr::new(local, port)).expect("bind listener");
        listener
            .set_md5(peer, password.as_ref().map(margay_common::Secret::expose))
            .expect("listener key");
        let h = handle.clone();
        tokio::spawn(async move {
            listener
                .serve(move |from: SocketAddr| {
                    let h = h.clone();
                    (from.ip() == peer).then_some(move |s| h.accept(s))
                })
                .await
        });
    }
    Side { handle, events }
}

/// Waits for the first event `pick` accepts.
async fn wait_for<T>(
    side: &mut Side,
    within: Duration,
    mut pick: impl FnMut(&SessionEvent) -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, side.events.recv()).await {
            Ok(Some(ev)) => {
                if let Some(t) = pick(&ev) {
                    return Some(t);
                }
            }
            Ok(None) | Err(_) => return None,
        }
    }
}

struct Up {
    ctx: CodecContext,
    hold_time: u16,
    local: SocketAddr,
    remote: SocketAddr,
}

async fn established(side: &mut Side) -> Up {
    wait_for(side, Duration::from_secs(10), |ev| match ev {
        SessionEvent::Established {
            ctx,
            negotiated,
            local_addr,
            remote_addr,
            ..
        } => Some(Up {
            ctx: *ctx,
            hold_time: negotiated.hold_time,
            local: *local_addr,
            remote: *remote_addr,
        }),
        _ => None,
    })
    .await
    .expect("session established")
}

fn update(prefix: &str, next_hop: u8, asn: u32) -> Update {
    Update {
        attributes: PathAttributes {
            origin: Some(Origin::Igp),
            as_path: AsPath {
                segments: vec![AsSegment::Sequence(vec![asn])],
            },
            next_hop: Some(Ipv4Addr::new(127, 0, 0, next_hop)),
            ..PathAttributes::default()
        },
        nlri: vec![prefix.parse::<Prefix4>().expect("prefix")],
        ..Update::default()
    }
}

#[tokio::test]
async fn establishes_with_a_passive_peer_and_exchanges_an_update() {
    let mut a = side(1, config(51, 52, 17952, 65001, 65002), None);
    let mut b_cfg = config(52, 51, 17951, 65002, 65001);
    b_cfg.passive = true;
    b_cfg.hold_time = 30;
    let mut b = side(2, b_cfg, Some(17952));

    let up_a = established(&mut a).await;
    let up_b = established(&mut b).await;
    assert_eq!(up_a.hold_time, 30, "minimum of both hold times");
    assert_eq!(up_a.local, up_b.remote);
    assert_eq!(up_a.remote, up_b.local);
    assert!(up_a.ctx.four_octet_as);
    assert_eq!(a.handle.state(), State::Established);

    let sent = update("10.1.0.0/26", 51, 65001);
    let bytes = Message::Update(sent.clone())
        .to_bytes(&up_a.ctx)
        .expect("encode");
    a.handle.send(bytes).await.expect("queued");
    let got = wait_for(&mut b, Duration::from_secs(5), |ev| match ev {
        SessionEvent::Update { peer: 2, update } => Some(update.clone()),
        _ => None,
    })
    .await
    .expect("UPDATE received");
    assert_eq!(got.nlri, sent.nlri);
    assert_eq!(got.attributes.as_path, sent.attributes.as_path);
    assert_eq!(got.attributes.next_hop, sent.attributes.next_hop);
}

#[tokio::test]
async fn send_before_established_is_refused() {
    let a = side(3, config(61, 62, 17962, 65001, 65002), None);
    let err = a
        .handle
        .send(Bytes::from_static(b"x"))
        .await
        .expect_err("not up");
    assert_eq!(err, SessionError::NotEstablished);
}

#[tokio::test]
async fn thousands_of_queued_updates_all_arrive_in_order() {
    let mut a = side(4, config(63, 64, 17964, 65001, 65001), None);
    let mut b_cfg = config(64, 63, 17963, 65001, 65001);
    b_cfg.passive = true;
    let mut b = side(5, b_cfg, Some(17964));
    let up = established(&mut a).await;
    established(&mut b).await;

    // MARGAY_SESSION_UPDATES raises the count to measure throughput (run with --release
    // --nocapture): one single-prefix UPDATE per message, the worst case for batching.
    let n: u32 = std::env::var("MARGAY_SESSION_UPDATES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let prefix = |i: u32| Prefix4::new(Ipv4Addr::from(0x0a00_0000 + i), 32).expect("prefix");
    let sender = a.handle.clone();
    let ctx = up.ctx;
    tokio::spawn(async move {
        for i in 0..n {
            let mut u = update("0.0.0.0/32", 63, 65001);
            u.nlri = vec![prefix(i)];
            u.attributes.as_path = AsPath::default();
            u.attributes.local_pref = Some(100);
            let bytes = Message::Update(u).to_bytes(&ctx).expect("encode");
            sender.send(bytes).await.expect("queued");
        }
    });
    let mut seen = 0u32;
    let started = Instant::now();
    while seen < n {
        let got = wait_for(&mut b, Duration::from_secs(20), |ev| match ev {
            SessionEvent::Update { update, .. } => Some(update.nlri[0]),
            _ => None,
        })
        .await
        .expect("every UPDATE arrives");
        assert_eq!(got, prefix(seen), "in order");
        seen += 1;
    }
    let elapsed = started.elapsed();
    println!(
        "{n} UPDATEs in {elapsed:?}: {:.0}/s",
        f64::from(n) / elapsed.as_secs_f64()
    );
    assert_eq!(b.handle.state(), State::Established);
}

/// Reads one whole message from a hand-driven peer's socket.
async fn read_message(stream: &mut TcpStream, buf: &mut BytesMut) -> Option<Message> {
    let ctx = CodecContext {
        four_octet_as: true,
        ..CodecContext::default()
    };
    loop {
        if let Some(n) = wire::frame_len(buf, &ctx).expect("framing") {
            let frame = buf.split_to(n);
            return Some(wire::decode(&frame, &ctx).expect("decode"));
        }
        if stream.read_buf(buf).await.ok()? == 0 {
            return None;
        }
    }
}

fn raw_open(asn: u32, hold: u16, id: u8) -> Bytes {
    Message::Open(Open {
        version: 4,
        my_as: asn as u16,
        hold_time: hold,
        bgp_identifier: Ipv4Addr::new(10, 0, 0, id),
        capabilities: vec![
            Capability::Multiprotocol { afi: 1, safi: 1 },
            Capability::FourOctetAs(asn),
        ],
    })
    .to_bytes(&CodecContext::default())
    .expect("encode OPEN")
}

#[tokio::test]
async fn hold_timer_expires_when_the_peer_stops_sending_keepalives() {
    let mut cfg = config(53, 54, 17954, 65001, 65002);
    cfg.passive = true;
    cfg.hold_time = 3;
    let mut a = side(6, cfg, Some(17953));

    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(ip(54), 0)).unwrap();
    let mut peer = socket
        .connect(SocketAddr::new(ip(53), 17953))
        .await
        .expect("connect to margay");
    peer.write_all(&raw_open(65002, 3, 54)).await.unwrap();
    let keepalive = Message::Keepalive
        .to_bytes(&CodecContext::default())
        .unwrap();
    peer.write_all(&keepalive).await.unwrap();
    let up = established(&mut a).await;
    assert_eq!(up.hold_time, 3);
    let up_at = Instant::now();

    // From now on the peer stays silent, but reads: margay keeps sending KEEPALIVEs (every
    // second), then gives up after 3 s with a Hold Timer Expired NOTIFICATION.
    let mut buf = BytesMut::new();
    let mut keepalives = 0;
    let notification = loop {
        match timeout(Duration::from_secs(6), read_message(&mut peer, &mut buf)).await {
            Ok(Some(Message::Keepalive)) => keepalives += 1,
            Ok(Some(Message::Notification(n))) => break n,
            Ok(Some(_)) => {}
            Ok(None) => panic!("closed without NOTIFICATION"),
            Err(_) => panic!("hold timer did not expire"),
        }
    };
    assert_eq!(notification.code, notif::HOLD_TIMER_EXPIRED);
    assert!(
        keepalives >= 2,
        "OPEN's KEEPALIVE and periodic ones: {keepalives}"
    );
    let elapsed = up_at.elapsed();
    assert!(
        elapsed >= Duration::from_millis(2500) && elapsed < Duration::from_secs(5),
        "expired after {elapsed:?}"
    );

    let reason = wait_for(&mut a, Duration::from_secs(2), |ev| match ev {
        SessionEvent::Down { reason, .. } => Some(reason.clone()),
        _ => None,
    })
    .await
    .expect("Down reported");
    assert_eq!(reason, "Hold timer expired");
    let last_error = wait_for(&mut a, Duration::from_secs(2), |ev| match ev {
        SessionEvent::StateChanged {
            state: State::Idle,
            last_error,
            ..
        } => Some(last_error.clone()),
        _ => None,
    })
    .await
    .expect("Idle reported");
    assert_eq!(last_error.as_deref(), Some("Hold timer expired"));
}

#[tokio::test]
async fn wrong_peer_as_gets_open_message_error_bad_peer_as() {
    // A expects AS 65002, but B is configured as AS 65003.
    let mut a = side(7, config(55, 56, 17956, 65001, 65002), None);
    let mut b_cfg = config(56, 55, 17955, 65003, 65001);
    b_cfg.passive = true;
    let mut b = side(8, b_cfg, Some(17956));

    let a_error = wait_for(&mut a, Duration::from_secs(5), |ev| match ev {
        SessionEvent::StateChanged {
            state: State::Idle,
            last_error: Some(e),
            ..
        } => Some(e.clone()),
        _ => None,
    })
    .await
    .expect("A refuses B's OPEN");
    assert_eq!(a_error, "Bad peer AS: 65003");
    let b_error = wait_for(&mut b, Duration::from_secs(5), |ev| match ev {
        SessionEvent::StateChanged {
            last_error: Some(e),
            ..
        } if e.starts_with("Received") => Some(e.clone()),
        _ => None,
    })
    .await
    .expect("B hears why");
    assert_eq!(b_error, "Received: Invalid OPEN message / Bad peer AS");
    assert_ne!(a.handle.state(), State::Established);
}

#[tokio::test]
async fn collision_of_two_active_sessions_leaves_one_connection() {
    for round in 0..3u16 {
        let (pa, pb) = (17970 + 2 * round, 17971 + 2 * round);
        let (la, lb) = (70 + 2 * round as u8, 71 + 2 * round as u8);
        let mut a = side(9, config(la, lb, pb, 65000, 65000), Some(pa));
        let mut b = side(10, config(lb, la, pa, 65000, 65000), Some(pb));
        let up_a = established(&mut a).await;
        let up_b = established(&mut b).await;
        assert_eq!(up_a.local, up_b.remote, "round {round}: same connection");
        assert_eq!(up_a.remote, up_b.local, "round {round}: same connection");
        // And it stays the only one.
        let down = wait_for(&mut a, Duration::from_secs(2), |ev| match ev {
            SessionEvent::Down { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .await;
        assert_eq!(down, None, "round {round}");
        assert_eq!(a.handle.state(), State::Established);
        assert_eq!(b.handle.state(), State::Established);
        a.handle.shutdown(None).await;
        b.handle.shutdown(None).await;
    }
}

#[tokio::test]
async fn md5_with_matching_passwords_establishes() {
    let mut a_cfg = config(57, 58, 17958, 65001, 65002);
    a_cfg.password = Some("margay".into());
    let mut a = side(11, a_cfg, None);
    let mut b_cfg = config(58, 57, 17957, 65002, 65001);
    b_cfg.passive = true;
    b_cfg.password = Some("margay".into());
    let mut b = side(12, b_cfg, Some(17958));
    established(&mut a).await;
    established(&mut b).await;
}

#[tokio::test]
async fn md5_mismatch_never_establishes() {
    let mut a_cfg = config(59, 60, 17960, 65001, 65002);
    a_cfg.password = Some("one".into());
    let mut a = side(13, a_cfg, None);
    let mut b_cfg = config(60, 59, 17959, 65002, 65001);
    b_cfg.passive = true;
    b_cfg.password = Some("two".into());
    let mut b = side(14, b_cfg, Some(17960));
    let error = wait_for(&mut a, Duration::from_secs(4), |ev| match ev {
        SessionEvent::Established { .. } => Some(None),
        SessionEvent::StateChanged {
            last_error: Some(e),
            ..
        } => Some(Some(e.clone())),
        _ => None,
    })
    .await
    .expect("a state change");
    assert_eq!(error.as_deref(), Some("Socket: Connection timed out"));
    let up = wait_for(&mut b, Duration::from_secs(2), |ev| {
        matches!(ev, SessionEvent::Established { .. }).then_some(())
    })
    .await;
    assert!(up.is_none());
    assert_ne!(a.handle.state(), State::Established);
}

#[tokio::test]
async fn shutdown_sends_cease_and_the_peer_goes_down() {
    let mut a = side(15, config(65, 66, 17966, 65001, 65002), None);
    let mut b_cfg = config(66, 65, 17965, 65002, 65001);
    b_cfg.passive = true;
    let mut b = side(16, b_cfg, Some(17966));
    established(&mut a).await;
    established(&mut b).await;
    a.handle.shutdown(None).await;
    let reason = wait_for(&mut b, Duration::from_secs(3), |ev| match ev {
        SessionEvent::Down { reason, .. } => Some(reason.clone()),
        _ => None,
    })
    .await
    .expect("B goes down");
    assert_eq!(reason, "Received: Cease / Administrative shutdown");
}

#[tokio::test]
async fn refused_connection_reports_bird_style_error_and_retries() {
    let mut a = side(17, config(67, 68, 17968, 65001, 65002), None);
    let mut errors = Vec::new();
    while errors.len() < 2 {
        let e = wait_for(&mut a, Duration::from_secs(4), |ev| match ev {
            SessionEvent::StateChanged {
                state: State::Active,
                last_error,
                ..
            } => Some(last_error.clone()),
            _ => None,
        })
        .await
        .expect("Active again after each retry");
        errors.push(e);
    }
    assert!(
        errors
            .iter()
            .all(|e| e.as_deref() == Some("Socket: Connection refused"))
    );
}

#[tokio::test]
async fn malformed_header_gets_a_notification() {
    let mut cfg = config(69, 79, 17979, 65001, 65002);
    cfg.passive = true;
    let _a = side(18, cfg, Some(17969));
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(ip(79), 0)).unwrap();
    let mut peer = socket
        .connect(SocketAddr::new(ip(69), 17969))
        .await
        .expect("connect");
    // A marker that is not all ones.
    peer.write_all(&[0u8; 19]).await.unwrap();
    let mut buf = BytesMut::new();
    let mut got: Option<Notification> = None;
    while let Ok(Some(msg)) =
        timeout(Duration::from_secs(3), read_message(&mut peer, &mut buf)).await
    {
        if let Message::Notification(n) = msg {
            got = Some(n);
            break;
        }
    }
    let n = got.expect("NOTIFICATION");
    assert_eq!(
        (n.code, n.subcode),
        (
            notif::MESSAGE_HEADER_ERROR,
            notif::CONNECTION_NOT_SYNCHRONIZED
        )
    );
}

#[tokio::test]
async fn keepalives_continue_while_the_speaker_is_not_reading_events() {
    let mut a_cfg = config(81, 82, 17982, 65001, 65002);
    a_cfg.hold_time = 3;
    let mut a = side(19, a_cfg, None);
    let mut b_cfg = config(82, 81, 17981, 65002, 65001);
    b_cfg.passive = true;
    b_cfg.hold_time = 3;
    let mut b = side_with_queue(20, b_cfg, Some(17982), 2);
    let up = established(&mut a).await;
    established(&mut b).await;

    // B's speaker stops reading its events while A sends more UPDATEs than B's queue holds.
    const N: u32 = 50;
    for i in 0..N {
        let u = update(&format!("10.9.{i}.0/24"), 81, 65001);
        let bytes = Message::Update(u).to_bytes(&up.ctx).expect("encode");
        a.handle.send(bytes).await.expect("queued");
    }
    let down = wait_for(&mut a, Duration::from_secs(5), |ev| match ev {
        SessionEvent::Down { reason, .. } => Some(reason.clone()),
        _ => None,
    })
    .await;
    assert_eq!(down, None, "B kept A's hold timer running");

    // B's speaker reads again: every UPDATE is there, and the session never went down.
    let mut updates = 0;
    while updates < N {
        let ev = timeout(Duration::from_secs(5), b.events.recv())
            .await
            .expect("event in time")
            .expect("session alive");
        match ev {
            SessionEvent::Update { .. } => updates += 1,
            SessionEvent::Down { reason, .. } => panic!("B went down: {reason}"),
            _ => {}
        }
    }
    assert_eq!(b.handle.state(), State::Established);
    assert_eq!(a.handle.state(), State::Established);
}

#[tokio::test]
async fn establishes_over_ipv6_with_gtsm_and_keeps_the_common_families() {
    use margay_bgp::wire::Family;
    let v6: IpAddr = "::1".parse().unwrap();
    let mut a_cfg = PeerConfig::new(v6, 65001, 65002, Ipv4Addr::new(10, 0, 0, 83));
    a_cfg.port = 17983;
    a_cfg.source_address = Some(v6);
    a_cfg.connect_retry = Duration::from_secs(1);
    a_cfg.ttl_security = Some(1);
    let mut b_cfg = PeerConfig::new(v6, 65002, 65001, Ipv4Addr::new(10, 0, 0, 84));
    b_cfg.passive = true;
    b_cfg.source_address = Some(v6);
    b_cfg.ttl_security = Some(1);
    b_cfg.families = vec![Family::Ipv6Unicast];
    let mut a = side(21, a_cfg, None);
    let mut b = side(22, b_cfg, Some(17983));
    let families = wait_for(&mut a, Duration::from_secs(10), |ev| match ev {
        SessionEvent::Established { negotiated, .. } => Some(negotiated.families.clone()),
        _ => None,
    })
    .await
    .expect("established over ::1");
    assert_eq!(
        families,
        vec![Family::Ipv6Unicast],
        "intersection of both offers"
    );
    let up_b = established(&mut b).await;
    assert!(up_b.remote.is_ipv6());
}
