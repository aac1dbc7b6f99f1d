//! The cluster's IPAM configuration: Calico's IPAMConfiguration (`strictAffinity`,
//! `maxBlocksPerHost`, `autoAllocateBlocks`) and margay's grace periods of the leak collectors.
//! Kept as the IPAMConfiguration resource `default` (so `margayctl apply -f` of Calico's
//! manifest, `get ipamconfigurations` and `ipam configure` see one record); absent, every
//! field has its default.
//!
//! The grace periods: Calico's `leakGracePeriod` (kube-controllers' node controller, default
//! 15 min) is how long an allocation must look leaked before it is released; margay has two
//! more, for an empty affine block and for a node whose liveness lease has expired.

use serde::{Deserialize, Serialize};
use std::time::Duration;

use super::{Ipam, IpamError};
use crate::resources::{
    CALICO_API_VERSION, IPAM_CONFIGURATION_NAME, IpamConfiguration, IpamConfigurationSpec,
    MARGAY_API_VERSION, Resource, parse_duration,
};

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

/// Seconds of a spec duration; `default` when unset (validation refuses a bad one).
fn secs(d: &Option<String>, default: u64) -> u64 {
    d.as_deref()
        .and_then(parse_duration)
        .filter(|s| *s >= 0.0)
        .map_or(default, |s| s.round() as u64)
}

/// A grace period for the spec: unset when it is the default (a manifest stays Calico's).
fn duration(secs: u64, default: u64) -> Option<String> {
    (secs != default).then(|| format!("{secs}s"))
}

impl From<&IpamConfigurationSpec> for IpamConfig {
    fn from(s: &IpamConfigurationSpec) -> IpamConfig {
        let d = IpamConfig::default();
        IpamConfig {
            strict_affinity: s.strict_affinity,
            auto_allocate_blocks: s.auto_allocate_blocks,
            max_blocks_per_host: s.max_blocks_per_host,
            leak_grace_period_secs: secs(&s.leak_grace_period, d.leak_grace_period_secs),
            empty_block_grace_period_secs: secs(
                &s.empty_block_grace_period,
                d.empty_block_grace_period_secs,
            ),
            node_grace_period_secs: secs(&s.node_grace_period, d.node_grace_period_secs),
        }
    }
}

impl From<&IpamConfig> for IpamConfigurationSpec {
    fn from(c: &IpamConfig) -> IpamConfigurationSpec {
        let d = IpamConfig::default();
        IpamConfigurationSpec {
            strict_affinity: c.strict_affinity,
            max_blocks_per_host: c.max_blocks_per_host,
            auto_allocate_blocks: c.auto_allocate_blocks,
            leak_grace_period: duration(c.leak_grace_period_secs, d.leak_grace_period_secs),
            empty_block_grace_period: duration(
                c.empty_block_grace_period_secs,
                d.empty_block_grace_period_secs,
            ),
            node_grace_period: duration(c.node_grace_period_secs, d.node_grace_period_secs),
        }
    }
}

/// The IPAM configuration in `store` (defaults when none was written).
pub(super) async fn read(store: &crate::Store) -> Result<IpamConfig, IpamError> {
    Ok(store
        .get::<IpamConfigurationSpec>(IPAM_CONFIGURATION_NAME)
        .await?
        .map(|r| IpamConfig::from(&r.spec))
        .unwrap_or_default())
}

impl Ipam {
    /// The IPAM configuration (defaults when none was written).
    pub async fn config(&self) -> Result<IpamConfig, IpamError> {
        read(&self.store).await
    }

    /// Changes the IPAM configuration with `f` (read, change, compare-and-swap, retried);
    /// returns the new configuration. The resource is written under Calico's group unless
    /// a grace period differs from its default (those exist only in margay's).
    pub async fn configure(&self, f: impl Fn(&mut IpamConfig)) -> Result<IpamConfig, IpamError> {
        for attempt in 0..super::MAX_RETRIES {
            let cur = self
                .store
                .get::<IpamConfigurationSpec>(IPAM_CONFIGURATION_NAME)
                .await?;
            let mut cfg = cur
                .as_ref()
                .map(|r| IpamConfig::from(&r.spec))
                .unwrap_or_default();
            f(&mut cfg);
            let spec = IpamConfigurationSpec::from(&cfg);
            let margay = spec.grace_periods().iter().any(|(_, d)| d.is_some());
            let res = match cur {
                Some(mut r) => {
                    r.spec = spec;
                    if margay {
                        r.api_version = MARGAY_API_VERSION.into();
                    }
                    self.store.update(&r).await.map(|_| ())
                }
                None => {
                    let mut r: IpamConfiguration = Resource::new(IPAM_CONFIGURATION_NAME, spec);
                    r.api_version = if margay {
                        MARGAY_API_VERSION
                    } else {
                        CALICO_API_VERSION
                    }
                    .into();
                    self.store.create(&r).await.map(|_| ())
                }
            };
            match res {
                Ok(()) => return Ok(cfg),
                Err(e) if e.is_conflict() => super::jitter(attempt).await,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::Contention("IPAMConfiguration default".into()))
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

    #[test]
    fn the_resource_round_trips_and_keeps_default_grace_periods_unset() {
        let mut c = IpamConfig {
            strict_affinity: true,
            max_blocks_per_host: 3,
            ..IpamConfig::default()
        };
        let spec = IpamConfigurationSpec::from(&c);
        assert!(spec.grace_periods().iter().all(|(_, d)| d.is_none()));
        assert_eq!(IpamConfig::from(&spec), c);
        c.node_grace_period_secs = 90;
        let spec = IpamConfigurationSpec::from(&c);
        assert_eq!(spec.node_grace_period.as_deref(), Some("90s"));
        assert_eq!(IpamConfig::from(&spec), c);
    }
}
