//! What the daemon's HTTP server serves: [`Health`] (liveness heartbeat, readiness with its
//! reasons) and [`Metrics`] (routes by kind, resync duration, netlink errors, route writes),
//! plus the axum [`router`] that exposes both.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug)]
struct HealthState {
    last_beat: Instant,
    synced: bool,
    reasons: BTreeMap<String, String>,
}

/// Liveness and readiness, shared between the dataplane loop and the HTTP server.
#[derive(Debug)]
pub struct Health {
    state: Mutex<HealthState>,
    /// The loop is dead when it has not beaten for this long.
    max_silence: Duration,
}

impl Health {
    /// A fresh state: alive, not ready until the first full resync.
    pub fn new(max_silence: Duration) -> Health {
        Health {
            state: Mutex::new(HealthState {
                last_beat: Instant::now(),
                synced: false,
                reasons: BTreeMap::new(),
            }),
            max_silence,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HealthState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The dataplane loop is still turning.
    pub fn beat(&self) {
        self.lock().last_beat = Instant::now();
    }

    /// The first full resync has completed.
    pub fn set_synced(&self) {
        self.lock().synced = true;
    }

    /// Records (or replaces) a reason not to be ready, under `key`.
    pub fn set_reason(&self, key: &str, reason: impl Into<String>) {
        self.lock().reasons.insert(key.to_string(), reason.into());
    }

    /// Clears the reason under `key`.
    pub fn clear_reason(&self, key: &str) {
        self.lock().reasons.remove(key);
    }

    /// The reason recorded under `key`, if any.
    pub fn reason(&self, key: &str) -> Option<String> {
        self.lock().reasons.get(key).cloned()
    }

    /// Whether the loop has beaten recently.
    pub fn is_live(&self) -> bool {
        self.lock().last_beat.elapsed() <= self.max_silence
    }

    /// Ready, or the reasons why not.
    pub fn readiness(&self) -> Result<(), Vec<String>> {
        let s = self.lock();
        let mut reasons: Vec<String> = s.reasons.values().cloned().collect();
        if !s.synced {
            reasons.insert(0, "first dataplane resync not finished".to_string());
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons)
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    pub op: String,
}

/// felix's Prometheus metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Routes felix has programmed, by kind (workload, blackhole, direct, ipip, vxlan).
    pub routes: Family<KindLabel, Gauge>,
    /// Duration of full resyncs.
    pub resync_seconds: Histogram,
    /// Netlink requests the kernel refused or that failed, besides expected races.
    pub netlink_errors: Counter,
    /// Route writes, by operation (create, replace, delete).
    pub route_writes: Family<OpLabel, Counter>,
    /// Desired routes whose key holds another protocol's route (left alone).
    pub route_conflicts: Counter,
    /// Routes learned from BGP left out because they are exactly a local workload's address
    /// or one of this node's blocks.
    pub shadowed_routes: Gauge,
    /// Addresses the IPAM leak collectors released, by reason (leaked: this node's own leak;
    /// deleted_node / silent_node: the elected collector's).
    pub ipam_released: Family<ReasonLabel, Counter>,
    /// Empty blocks the elected collector gave back to the pool.
    pub ipam_empty_blocks_released: Counter,
    /// 1 while this felix is the elected cluster-wide IPAM collector.
    pub ipam_collector_elected: Gauge,
    /// Peers of the WireGuard device (0 while WireGuard is off).
    pub wireguard_peers: Gauge,
    /// Peers of the IPv6 WireGuard device (0 while IPv6 WireGuard is off).
    pub wireguard_peers_v6: Gauge,
    /// Times felix generated a new WireGuard key pair (first start or rotation).
    pub wireguard_keys_generated: Counter,
    /// Policy table transactions, by how they were written (`libnftables`, `nft`).
    pub policy_transactions: Family<ViaLabel, Counter>,
    /// Time from a policy change's read of the datastore to the table holding it.
    pub policy_program_seconds: Histogram,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ViaLabel {
    pub via: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("margay_felix");
        let routes = Family::<KindLabel, Gauge>::default();
        let resync_seconds = Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0]);
        let netlink_errors = Counter::default();
        let route_writes = Family::<OpLabel, Counter>::default();
        let route_conflicts = Counter::default();
        let shadowed_routes = Gauge::default();
        registry.register("routes", "Routes programmed, by kind", routes.clone());
        registry.register(
            "resync_duration_seconds",
            "Duration of full dataplane resyncs",
            resync_seconds.clone(),
        );
        registry.register(
            "netlink_errors",
            "Netlink requests that failed",
            netlink_errors.clone(),
        );
        registry.register(
            "route_writes",
            "Route writes, by operation",
            route_writes.clone(),
        );
        registry.register(
            "route_conflicts",
            "Desired routes blocked by another protocol's route",
            route_conflicts.clone(),
        );
        registry.register(
            "shadowed_routes",
            "Routes learned from BGP not programmed: they are a local workload's address or this node's block",
            shadowed_routes.clone(),
        );
        let ipam_released = Family::<ReasonLabel, Counter>::default();
        let ipam_empty_blocks_released = Counter::default();
        let ipam_collector_elected = Gauge::default();
        registry.register(
            "ipam_released_addresses",
            "Addresses the IPAM leak collectors released, by reason",
            ipam_released.clone(),
        );
        registry.register(
            "ipam_empty_blocks_released",
            "Empty affine blocks the elected collector gave back to the pool",
            ipam_empty_blocks_released.clone(),
        );
        registry.register(
            "ipam_collector_elected",
            "1 while this felix is the elected cluster-wide IPAM collector",
            ipam_collector_elected.clone(),
        );
        let wireguard_peers = Gauge::default();
        let wireguard_keys_generated = Counter::default();
        let wireguard_peers_v6 = Gauge::default();
        registry.register(
            "wireguard_peers_v6",
            "Peers of the IPv6 WireGuard device (0 while IPv6 WireGuard is off)",
            wireguard_peers_v6.clone(),
        );
        registry.register(
            "wireguard_peers",
            "Peers of the WireGuard device (0 while WireGuard is off)",
            wireguard_peers.clone(),
        );
        registry.register(
            "wireguard_keys_generated",
            "WireGuard key pairs generated (first start or rotation)",
            wireguard_keys_generated.clone(),
        );
        let policy_transactions = Family::<ViaLabel, Counter>::default();
        let policy_program_seconds =
            Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0]);
        registry.register(
            "policy_transactions",
            "Policy table transactions, by how felix wrote them (libnftables, nft)",
            policy_transactions.clone(),
        );
        registry.register(
            "policy_program_seconds",
            "Time from reading a policy change to the table holding it",
            policy_program_seconds.clone(),
        );
        Metrics {
            registry,
            policy_transactions,
            policy_program_seconds,
            wireguard_peers,
            wireguard_peers_v6,
            wireguard_keys_generated,
            ipam_released,
            ipam_empty_blocks_released,
            ipam_collector_elected,
            shadowed_routes,
            routes,
            resync_seconds,
            netlink_errors,
            route_writes,
            route_conflicts,
        }
    }

    /// Counts one route write.
    pub fn wrote(&self, op: &str) {
        self.route_writes
            .get_or_create(&OpLabel { op: op.to_string() })
            .inc();
    }

    /// Counts `n` addresses released by a leak collector for `reason`.
    pub fn released(&self, reason: &str, n: usize) {
        self.ipam_released
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc_by(n as u64);
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

type Shared = (Arc<Health>, Arc<Metrics>);

/// `/liveness`, `/readiness` (200 "ready", or 503 with one reason per line) and `/metrics`.
pub fn router(health: Arc<Health>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/liveness", get(liveness))
        .route("/readiness", get(readiness))
        .route("/metrics", get(metrics_text))
        .with_state((health, metrics))
}

/// /metrics alone: the Prometheus server FelixConfiguration's `prometheusMetricsEnabled` asks
/// for (Calico serves only metrics there).
pub fn metrics_router(health: Arc<Health>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .with_state((health, metrics))
}

async fn liveness(State((h, _)): State<Shared>) -> impl IntoResponse {
    if h.is_live() {
        (StatusCode::OK, "live\n".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "dataplane loop stalled\n".to_string(),
        )
    }
}

async fn readiness(State((h, _)): State<Shared>) -> impl IntoResponse {
    match h.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(reasons) => (
            StatusCode::SERVICE_UNAVAILABLE,
            reasons.iter().map(|r| format!("{r}\n")).collect(),
        ),
    }
}

async fn metrics_text(State((_, m)): State<Shared>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_ready_until_synced_and_lists_reasons() {
        let h = Health::new(Duration::from_secs(10));
        assert!(h.readiness().is_err());
        h.set_synced();
        assert_eq!(h.readiness(), Ok(()));
        h.set_reason("ipip", "no ipip");
        assert_eq!(h.readiness(), Err(vec!["no ipip".to_string()]));
        h.clear_reason("ipip");
        assert_eq!(h.readiness(), Ok(()));
    }

    #[test]
    fn metrics_text_names_routes_by_kind() {
        let m = Metrics::new();
        m.routes
            .get_or_create(&KindLabel {
                kind: "workload".into(),
            })
            .set(3);
        m.netlink_errors.inc();
        let text = m.encode();
        assert!(
            text.contains("margay_felix_routes{kind=\"workload\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("margay_felix_netlink_errors_total 1"),
            "{text}"
        );
    }

    #[test]
    fn metrics_text_counts_ipam_releases_by_reason() {
        let m = Metrics::new();
        m.released("leaked", 2);
        m.released("deleted_node", 3);
        m.ipam_collector_elected.set(1);
        let text = m.encode();
        for series in [
            "margay_felix_ipam_released_addresses_total{reason=\"leaked\"} 2",
            "margay_felix_ipam_released_addresses_total{reason=\"deleted_node\"} 3",
            "margay_felix_ipam_collector_elected 1",
            "margay_felix_ipam_empty_blocks_released_total 0",
        ] {
            assert!(text.contains(series), "{series} in {text}");
        }
    }
}
