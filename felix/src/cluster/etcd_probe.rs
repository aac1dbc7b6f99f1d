//! Whether etcd answers now: a small periodic probe that puts "etcd unreachable" in felix's
//! readiness while etcd is down and clears it when etcd is back.
//!
//! The watches reconnect by themselves and the dataplane keeps the model it last had, so an
//! outage is otherwise silent; the probe makes it visible (`/readiness`, CNI STATUS) and lets
//! ADD and DEL answer "try again later" at once instead of waiting for etcd's request timeout.

use std::sync::Arc;
use std::time::Duration;

use margay_datastore::Store;
use tracing::{info, warn};

use crate::health::Health;

/// The readiness key the probe sets.
pub const R_ETCD: &str = "etcd";
/// How often etcd is asked.
const INTERVAL: Duration = Duration::from_secs(1);
/// How long one answer may take before it counts as missing.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);
/// Missing answers in a row before etcd counts as unreachable: one slow answer on a loaded
/// node must not turn every ADD away. An error (connection refused) counts at once.
const MISSED_IN_A_ROW: u32 = 2;

/// Probes `store` until the task is dropped; `endpoints` name etcd in the reason.
pub async fn run(store: Store, endpoints: String, health: Arc<Health>) {
    let mut down = false;
    let mut missed = 0;
    loop {
        let failure = match tokio::time::timeout(ANSWER_WITHIN, store.revision()).await {
            Ok(Ok(_)) => {
                missed = 0;
                None
            }
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => {
                missed += 1;
                (missed >= MISSED_IN_A_ROW)
                    .then(|| format!("no answer within {ANSWER_WITHIN:?}, {missed} times in a row"))
            }
        };
        match failure {
            Some(why) => {
                let reason = format!(
                    "etcd unreachable at {endpoints}: {why}; the dataplane keeps what it knows"
                );
                if !down {
                    warn!("{reason}");
                }
                health.set_reason(R_ETCD, reason);
                down = true;
            }
            None if missed > 0 => {}
            None => {
                if down {
                    info!(endpoints, "etcd answers again");
                }
                health.clear_reason(R_ETCD);
                down = false;
            }
        }
        tokio::time::sleep(INTERVAL).await;
    }
}
