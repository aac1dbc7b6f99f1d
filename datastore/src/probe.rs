//! Whether etcd answers now: a small periodic probe that tells a daemon when etcd stops
//! answering and when it answers again, so its readiness can name an outage the watches would
//! otherwise ride out silently (they reconnect by themselves). felix and margay-bgpd run it.

use std::time::Duration;

use tracing::{info, warn};

use crate::Store;

/// How often etcd is asked.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// How long one answer may take before it counts as missing.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(2);
/// Missing answers in a row before etcd counts as unreachable: one slow answer on a loaded
/// node must not mark etcd down. An error (connection refused) counts at once.
pub const MISSED_IN_A_ROW: u32 = 2;

/// Asks `store` every [`INTERVAL`] until the task is dropped, calling `report` with
/// `Some("etcd unreachable at <endpoints>: <why>")` after each failed probe while etcd counts
/// as unreachable, and `None` after each answer while it does not.
pub async fn run(store: Store, endpoints: String, mut report: impl FnMut(Option<&str>)) {
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
                let reason = format!("etcd unreachable at {endpoints}: {why}");
                if !down {
                    warn!("{reason}");
                }
                report(Some(&reason));
                down = true;
            }
            // A first missed answer: neither up nor down yet.
            None if missed > 0 => {}
            None => {
                if down {
                    info!(endpoints, "etcd answers again");
                }
                report(None);
                down = false;
            }
        }
        tokio::time::sleep(INTERVAL).await;
    }
}
