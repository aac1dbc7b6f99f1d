//! The health and metrics HTTP server: `/liveness`, `/readiness`, and Prometheus `/metrics`.
//!
//! Liveness: the speaker task answers a request within a second. Readiness, as calico-node's
//! BIRD check: every configured peer is Established (a node with no peers is ready), and in
//! cluster mode etcd answers (the probe's reason is named while it does not).

use crate::fsm::State;
use crate::speaker::SpeakerHandle;
use axum::extract::State as AxState;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    peer: String,
}

/// What `/readiness` looks at besides the speaker.
#[derive(Clone, Default)]
pub struct Readiness {
    /// In cluster mode: why etcd counts as unreachable, while it does
    /// ([`crate::cluster::Follower::etcd_down`]).
    pub etcd_down: Option<tokio::sync::watch::Receiver<Option<String>>>,
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    speaker: SpeakerHandle,
    ready: Readiness,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new()
        .route("/liveness", get(liveness))
        .route("/metrics", get(metrics))
        .with_state(speaker.clone())
        .merge(
            axum::Router::new()
                .route("/readiness", get(readiness))
                .with_state((speaker, ready)),
        );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn liveness(AxState(speaker): AxState<SpeakerHandle>) -> impl IntoResponse {
    match tokio::time::timeout(Duration::from_secs(1), speaker.info()).await {
        Ok(Ok(_)) => (StatusCode::OK, "live\n".to_string()),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the BGP speaker did not answer within 1 s\n".to_string(),
        ),
    }
}

async fn readiness(
    AxState((speaker, ready)): AxState<(SpeakerHandle, Readiness)>,
) -> impl IntoResponse {
    let etcd = ready.etcd_down.as_ref().and_then(|rx| rx.borrow().clone());
    let peers = match tokio::time::timeout(Duration::from_secs(1), speaker.peers()).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
        Err(_) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the BGP speaker did not answer within 1 s\n".into(),
            );
        }
    };
    let down: Vec<String> = peers
        .iter()
        .filter(|p| p.state != State::Established)
        .map(|p| format!("{} ({})", p.address, p.state))
        .collect();
    let mut reasons = Vec::new();
    if !down.is_empty() {
        reasons.push(format!("BGP not established with {}\n", down.join(", ")));
    }
    if let Some(why) = etcd {
        reasons.push(format!("{why}\n"));
    }
    if reasons.is_empty() {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, reasons.concat())
    }
}

async fn metrics(AxState(speaker): AxState<SpeakerHandle>) -> impl IntoResponse {
    let Ok(peers) = speaker.peers().await else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the BGP speaker is not running\n".to_string(),
        );
    };
    let mut registry = Registry::with_prefix("margay_bgp");
    let sessions = Family::<StateLabels, Gauge>::default();
    let received = Family::<PeerLabels, Gauge>::default();
    let accepted = Family::<PeerLabels, Gauge>::default();
    let advertised = Family::<PeerLabels, Gauge>::default();
    let updates_in = Family::<PeerLabels, Counter>::default();
    let updates_out = Family::<PeerLabels, Counter>::default();
    let limit_exceeded = Family::<PeerLabels, Counter>::default();
    let bfd_up = Family::<PeerLabels, Gauge>::default();
    let bfd_downs = Family::<PeerLabels, Counter>::default();
    let bfd_detect = Family::<PeerLabels, Gauge>::default();
    let bfd_tx = Family::<PeerLabels, Gauge>::default();
    for s in State::ALL {
        sessions
            .get_or_create(&StateLabels {
                state: s.to_string(),
            })
            .set(0);
    }
    for p in &peers {
        sessions
            .get_or_create(&StateLabels {
                state: p.state.to_string(),
            })
            .inc();
        let l = PeerLabels {
            peer: p.address.to_string(),
        };
        received.get_or_create(&l).set(p.prefixes_received as i64);
        accepted.get_or_create(&l).set(p.prefixes_accepted as i64);
        advertised
            .get_or_create(&l)
            .set(p.prefixes_advertised as i64);
        updates_in.get_or_create(&l).inc_by(p.updates_received);
        updates_out.get_or_create(&l).inc_by(p.updates_sent);
        limit_exceeded
            .get_or_create(&l)
            .inc_by(p.prefix_limit_exceeded);
        if let Some(b) = &p.bfd {
            let up = b.snapshot.state == crate::bfd::SessionState::Up;
            bfd_up.get_or_create(&l).set(i64::from(up));
            bfd_downs.get_or_create(&l).inc_by(b.downs);
            bfd_detect
                .get_or_create(&l)
                .set(b.snapshot.detection_time.as_micros() as i64);
            bfd_tx
                .get_or_create(&l)
                .set(b.snapshot.tx_interval.as_micros() as i64);
        }
    }
    registry.register("sessions", "BGP sessions by FSM state", sessions);
    registry.register(
        "prefixes_received",
        "Prefixes received from the peer",
        received,
    );
    registry.register(
        "prefixes_accepted",
        "Prefixes accepted from the peer",
        accepted,
    );
    registry.register(
        "prefixes_advertised",
        "Prefixes advertised to the peer",
        advertised,
    );
    registry.register(
        "updates_received",
        "UPDATE messages received from the peer",
        updates_in,
    );
    registry.register(
        "updates_sent",
        "UPDATE messages sent to the peer",
        updates_out,
    );
    registry.register(
        "prefix_limit_exceeded",
        "Times the peer sent more prefixes than its max-prefixes",
        limit_exceeded,
    );
    registry.register("bfd_up", "1 while the peer's BFD session is Up", bfd_up);
    registry.register(
        "bfd_session_downs",
        "Times the peer's BFD session went from Up to Down",
        bfd_downs,
    );
    registry.register(
        "bfd_detection_time_microseconds",
        "The BFD session's negotiated detection time",
        bfd_detect,
    );
    registry.register(
        "bfd_tx_interval_microseconds",
        "The BFD session's negotiated transmit interval",
        bfd_tx,
    );
    let mut out = String::new();
    match encode(&mut out, &registry) {
        Ok(()) => (StatusCode::OK, out),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}
