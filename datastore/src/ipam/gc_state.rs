//! What the leak collectors keep in etcd between passes, so that a restarted collector, or a
//! new one elected on another node, continues where the last one stopped instead of starting
//! its grace clocks over (which would only delay releases, by up to one grace period per
//! restart, but a collector that keeps restarting would then never release anything).
//!
//! - The elected collector's record ([`COLLECTOR_STATE`]): the first-seen times of silent
//!   nodes and empty blocks, and the nodes whose Node resource a collector has seen. That last
//!   set is how a deletion is *observed*: a node in it whose Node is gone was deleted, and is
//!   released at once; a node named in IPAM whose Node no collector ever saw may be one that
//!   is starting (IPAM written before its lease and Node), and waits the node grace period.
//! - Each node's own leak clocks ([`leak_clocks_key`]).
//!
//! A record is written only when it changed; a failed write is retried at the next pass.

use super::grace::Grace;
use super::{Ipam, IpamError};
use crate::store::CasWrite;
use ipnet::IpNet;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// The elected collector's record.
pub const COLLECTOR_STATE: &str = "/margay/ipam/v1/collector-state";
/// Prefix of the nodes' own leak clocks.
pub const LEAK_CLOCKS: &str = "/margay/ipam/v1/leak-clocks/";

/// The key of `node`'s leak clocks.
pub fn leak_clocks_key(node: &str) -> String {
    format!("{LEAK_CLOCKS}{node}")
}

/// The elected collector's record: first-seen times in ms since the Unix epoch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CollectorState {
    pub known_nodes: BTreeSet<String>,
    pub silent: Vec<(String, u64)>,
    pub empty: Vec<((String, IpNet), u64)>,
}

impl CollectorState {
    pub fn silent_grace(&self) -> Grace<String> {
        Grace::from_millis(self.silent.iter().cloned())
    }
    pub fn empty_grace(&self) -> Grace<(String, IpNet)> {
        Grace::from_millis(self.empty.iter().cloned())
    }
}

/// A record kept in etcd, with what was last written (to skip writes that change nothing).
#[derive(Debug, Default)]
pub struct Kept {
    written: Option<Vec<u8>>,
}

impl Kept {
    /// Reads the record at `key` (the default when there is none or it does not decode).
    pub async fn load<T: DeserializeOwned + Default>(
        &mut self,
        ipam: &Ipam,
        key: &str,
    ) -> Result<T, IpamError> {
        let Some(raw) = ipam.store().get_raw(key).await? else {
            return Ok(T::default());
        };
        match serde_json::from_slice(&raw.value) {
            Ok(v) => {
                self.written = Some(raw.value);
                Ok(v)
            }
            Err(e) => {
                tracing::warn!(key, error = %e, "collector record does not decode; starting afresh");
                Ok(T::default())
            }
        }
    }

    /// Writes `value` at `key` if it differs from what was last written.
    pub async fn save<T: Serialize>(
        &mut self,
        ipam: &Ipam,
        key: &str,
        value: &T,
    ) -> Result<(), IpamError> {
        let w = CasWrite::json(key, value, None);
        if self.written.as_ref() == Some(&w.value) {
            return Ok(());
        }
        ipam.store()
            .create_all(&[], std::slice::from_ref(&w), None)
            .await?;
        self.written = Some(w.value);
        Ok(())
    }
}
