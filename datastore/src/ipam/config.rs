//! The cluster's IPAM configuration: Calico's IPAMConfiguration (`strictAffinity`,
//! `maxBlocksPerHost`, `autoAllocateBlocks`) and margay's grace periods of the leak collectors.
//! One record (`/margay/ipam/v1/config`), written by `margayctl ipam configure`; absent, every
//! field has its default.
//!
//! The grace periods: Calico's `leakGracePeriod` (kube-controllers' node controller, default
//! 15 min) is how long an allocation must look leaked before it is released; margay has two
//! more, for an empty affine block and for a node whose liveness lease has expired.

use serde::{Deserialize, Serialize};
use std::time::Duration;

use super::{Ipam, IpamError};

/// The key of the IPAM configuration record.
pub const CONFIG_KEY: &str = "/margay/ipam/v1/config";

/// The IPAM configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct IpamConfig {
    /// No borrowing: an address comes only from a block affine to the node.
    pub strict_affinity: bool,
    /// Whether a node claims new blocks when its own are full (Calico's default: true).
    pub auto_allocate_blocks: bool,
    /// Most blocks one node may hold (0: no limit).
    pub max_blocks_per_host: u32,
    /// Seconds an allocation must look leaked (no WorkloadEndpoint, no veth) before the
    /// node's felix releases it (Calico's `leakGracePeriod`, default 900).
    pub leak_grace_period_secs: u64,
    /// Seconds an empty affine block stays with its node (when the node has room elsewhere)
    /// before it goes back to the pool.
    pub empty_block_grace_period_secs: u64,
    /// Seconds a node's liveness lease must have been expired before the collector releases
    /// the node's addresses, blocks and endpoints (default 1 h).
    pub node_grace_period_secs: u64,
}

impl Default for IpamConfig {
    fn default() -> IpamConfig {
        IpamConfig {
            strict_affinity: false,
            auto_allocate_blocks: true,
            max_blocks_per_host: 0,
            leak_grace_period_secs: 15 * 60,
            empty_block_grace_period_secs: 15 * 60,
            node_grace_period_secs: 60 * 60,
        }
    }
}

impl IpamConfig {
    pub fn leak_grace_period(&self) -> Duration {
        Duration::from_secs(self.leak_grace_period_secs)
    }
    pub fn empty_block_grace_period(&self) -> Duration {
        Duration::from_secs(self.empty_block_grace_period_secs)
    }
    pub fn node_grace_period(&self) -> Duration {
        Duration::from_secs(self.node_grace_period_secs)
    }

    /// The rows of `ipam show --show-configuration` (Calico's three first).
    pub fn rows(&self) -> Vec<(&'static str, String)> {
        vec![
            ("StrictAffinity", self.strict_affinity.to_string()),
            ("AutoAllocateBlocks", self.auto_allocate_blocks.to_string()),
            ("MaxBlocksPerHost", self.max_blocks_per_host.to_string()),
            (
                "LeakGracePeriod",
                format!("{}s", self.leak_grace_period_secs),
            ),
            (
                "EmptyBlockGracePeriod",
                format!("{}s", self.empty_block_grace_period_secs),
            ),
            (
                "NodeGracePeriod",
                format!("{}s", self.node_grace_period_secs),
            ),
        ]
    }
}

impl Ipam {
    /// The IPAM configuration (defaults when none was written).
    pub async fn config(&self) -> Result<IpamConfig, IpamError> {
        Ok(self
            .store
            .get_json::<IpamConfig>(CONFIG_KEY)
            .await?
            .map(|v| v.value)
            .unwrap_or_default())
    }

    /// Changes the IPAM configuration with `f` (read, change, compare-and-swap, retried);
    /// returns the new configuration.
    pub async fn configure(&self, f: impl Fn(&mut IpamConfig)) -> Result<IpamConfig, IpamError> {
        for attempt in 0..super::MAX_RETRIES {
            let cur = self.store.get_json::<IpamConfig>(CONFIG_KEY).await?;
            let (mut cfg, rev) = match cur {
                Some(v) => (v.value, Some(v.mod_revision)),
                None => (IpamConfig::default(), None),
            };
            f(&mut cfg);
            let res = match rev {
                Some(r) => self
                    .store
                    .update_json(CONFIG_KEY, &cfg, r)
                    .await
                    .map(|_| ()),
                None => self.store.create_json(CONFIG_KEY, &cfg).await.map(|_| ()),
            };
            match res {
                Ok(()) => return Ok(cfg),
                Err(e) if e.is_conflict() => super::jitter(attempt).await,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::Contention(CONFIG_KEY.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_record_keeps_the_defaults_of_what_it_leaves_out() {
        let c: IpamConfig = serde_json::from_str(r#"{"strictAffinity":true}"#).unwrap();
        assert!(c.strict_affinity);
        assert!(c.auto_allocate_blocks);
        assert_eq!(c.leak_grace_period(), Duration::from_secs(900));
    }
}
