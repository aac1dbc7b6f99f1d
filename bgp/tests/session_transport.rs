//! The transport on real loopback sockets: connect/accept, TCP-MD5, refusal of unknown peers,
//! TTL options. Each test uses its own 127.0.0.x addresses and ports so they run in parallel.

use margay_bgp::transport::{ConnectOptions, Listener, TransportError, TtlMode, connect};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

fn addr(last: u8, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)), port)
}

/// A listener on `listen` that passes streams from `peer` to the returned channel.
fn serve(listener: Listener, peer: IpAddr) -> mpsc::UnboundedReceiver<TcpStream> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        listener
            .serve(move |from: SocketAddr| {
                let tx = tx.clone();
                (from.ip() == peer).then_some(move |s| {
                    let _ = tx.send(s);
                })
            })
            .await
    });
    rx
}

fn options(remote: SocketAddr, source: u8) -> ConnectOptions {
    let mut o = ConnectOptions::new(remote);
    o.source = Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, source)));
    o.timeout = Duration::from_secs(2);
    o
}

async fn exchange(mut client: TcpStream, server: &mut mpsc::UnboundedReceiver<TcpStream>) {
    let mut accepted = tokio::time::timeout(Duration::from_secs(2), server.recv())
        .await
        .expect("accepted in time")
        .expect("stream");
    client.write_all(b"hello").await.expect("write");
    let mut buf = [0u8; 5];
    accepted.read_exact(&mut buf).await.expect("read");
    assert_eq!(&buf, b"hello");
    accepted.write_all(b"world").await.expect("write back");
    client.read_exact(&mut buf).await.expect("read back");
    assert_eq!(&buf, b"world");
}

#[tokio::test]
async fn connects_and_exchanges_bytes_from_a_source_address() {
    let listener = Listener::bind(addr(11, 17911)).expect("bind");
    let mut rx = serve(listener, "127.0.0.12".parse().unwrap());
    let client = connect(&options(addr(11, 17911), 12))
        .await
        .expect("connect");
    assert_eq!(
        client.local_addr().unwrap().ip(),
        "127.0.0.12".parse::<IpAddr>().unwrap()
    );
    exchange(client, &mut rx).await;
}

#[tokio::test]
async fn refuses_connections_from_unknown_peers() {
    let listener = Listener::bind(addr(13, 17913)).expect("bind");
    let mut rx = serve(listener, "127.0.0.99".parse().unwrap());
    let mut client = connect(&options(addr(13, 17913), 14))
        .await
        .expect("TCP handshake completes before the refusal");
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(2), client.read(&mut buf))
        .await
        .expect("closed at once");
    assert!(matches!(n, Ok(0) | Err(_)), "connection closed by listener");
    assert!(rx.try_recv().is_err(), "nothing dispatched");
}

#[tokio::test]
async fn connection_refused_is_reported_in_bird_words() {
    let err = connect(&options(addr(15, 17915), 16))
        .await
        .expect_err("nobody listens");
    assert_eq!(err.to_string(), "Socket: Connection refused");
}

#[tokio::test]
async fn md5_with_matching_keys_connects_and_exchanges_bytes() {
    let listener = Listener::bind(addr(17, 17917)).expect("bind");
    let peer: IpAddr = "127.0.0.18".parse().unwrap();
    listener
        .set_md5(peer, Some("s3cret"))
        .expect("listener key");
    let mut rx = serve(listener, peer);
    let mut o = options(addr(17, 17917), 18);
    o.password = Some("s3cret".into());
    let client = connect(&o).await.expect("connect with MD5");
    exchange(client, &mut rx).await;
}

#[tokio::test]
async fn md5_with_mismatched_keys_never_connects() {
    let listener = Listener::bind(addr(19, 17919)).expect("bind");
    let peer: IpAddr = "127.0.0.20".parse().unwrap();
    listener.set_md5(peer, Some("right")).expect("listener key");
    let mut rx = serve(listener, peer);
    let mut o = options(addr(19, 17919), 20);
    o.password = Some("wrong".into());
    o.timeout = Duration::from_millis(1500);
    let err = connect(&o).await.expect_err("segments are dropped");
    assert!(matches!(err, TransportError::Timeout), "got {err}");
    assert!(rx.try_recv().is_err());
}

#[tokio::test]
async fn md5_required_by_listener_drops_unsigned_connects() {
    let listener = Listener::bind(addr(21, 17921)).expect("bind");
    let peer: IpAddr = "127.0.0.22".parse().unwrap();
    listener.set_md5(peer, Some("key")).expect("listener key");
    let _rx = serve(listener, peer);
    let mut o = options(addr(21, 17921), 22);
    o.timeout = Duration::from_millis(1500);
    let err = connect(&o).await.expect_err("unsigned SYN dropped");
    assert!(matches!(err, TransportError::Timeout), "got {err}");
}

#[tokio::test]
async fn md5_key_removed_from_listener_accepts_unsigned_connects() {
    let listener = Listener::bind(addr(23, 17923)).expect("bind");
    let peer: IpAddr = "127.0.0.24".parse().unwrap();
    listener.set_md5(peer, Some("key")).expect("set key");
    listener.set_md5(peer, None).expect("remove key");
    let mut rx = serve(listener, peer);
    let client = connect(&options(addr(23, 17923), 24))
        .await
        .expect("connect");
    exchange(client, &mut rx).await;
}

#[tokio::test]
async fn ttl_security_on_loopback_connects() {
    // On loopback packets arrive with TTL 255 when sent with 255: GTSM with 1 hop passes.
    let listener = Listener::bind(addr(25, 17925)).expect("bind");
    listener.set_min_ttl(255).expect("min ttl");
    let mut rx = serve(listener, "127.0.0.26".parse().unwrap());
    let mut o = options(addr(25, 17925), 26);
    o.ttl = TtlMode::Security(1);
    let client = connect(&o).await.expect("connect with GTSM");
    exchange(client, &mut rx).await;
}

#[tokio::test]
async fn ttl_security_drops_packets_sent_with_a_low_ttl() {
    // The listener wants TTL 255; a client sending with TTL 64 never completes the handshake.
    let listener = Listener::bind(addr(27, 17927)).expect("bind");
    listener.set_min_ttl(255).expect("min ttl");
    let _rx = serve(listener, "127.0.0.28".parse().unwrap());
    let mut o = options(addr(27, 17927), 28);
    o.ttl = TtlMode::Multihop(64);
    o.timeout = Duration::from_millis(1500);
    let err = connect(&o).await.expect_err("dropped by IP_MINTTL");
    assert!(matches!(err, TransportError::Timeout), "got {err}");
}

#[tokio::test]
async fn dual_stack_listener_dispatches_ipv4_peers_as_ipv4() {
    let listener = Listener::bind("[::]:17929".parse().unwrap()).expect("bind [::]");
    let peer: IpAddr = "127.0.0.30".parse().unwrap();
    listener
        .set_md5(peer, Some("mapped"))
        .expect("key for v4 peer");
    let mut rx = serve(listener, peer);
    let mut o = options(addr(29, 17929), 30);
    o.password = Some("mapped".into());
    let client = connect(&o).await.expect("connect to dual-stack listener");
    exchange(client, &mut rx).await;
}

#[tokio::test]
async fn ipv6_loopback_connects() {
    let listener = Listener::bind("[::1]:17931".parse().unwrap()).expect("bind [::1]");
    let mut rx = serve(listener, "::1".parse().unwrap());
    let mut o = ConnectOptions::new("[::1]:17931".parse().unwrap());
    o.ttl = TtlMode::Security(1);
    let client = connect(&o).await.expect("connect v6");
    exchange(client, &mut rx).await;
}

#[tokio::test]
async fn gtsm_judges_an_accepted_connection_by_its_saved_syn() {
    // The listener keeps no minimum TTL (it serves GTSM and other peers alike): the accepted
    // stream is judged by the TTL its SYN arrived with.
    let listener = Listener::bind(addr(37, 17937)).expect("bind");
    let mut rx = serve(listener, "127.0.0.38".parse().unwrap());
    for (send_ttl, admitted) in [
        (TtlMode::Multihop(254), false),
        (TtlMode::Security(1), true),
    ] {
        let mut o = options(addr(37, 17937), 38);
        o.ttl = send_ttl;
        let _client = connect(&o).await.expect("connect");
        let stream = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("accepted in time")
            .expect("a stream");
        assert_eq!(
            margay_bgp::transport::gtsm_admits(&stream, TtlMode::Security(1)),
            admitted,
            "SYN sent with {send_ttl:?}"
        );
        assert!(
            margay_bgp::transport::gtsm_admits(&stream, TtlMode::Default),
            "without GTSM every connection is admitted"
        );
    }
}
