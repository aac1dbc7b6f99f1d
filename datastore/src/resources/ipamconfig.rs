//! IPAMConfiguration (Calico's `projectcalico.org/v3` kind, one resource named `default`): the
//! cluster's IPAM settings, as `calicoctl ipam configure` writes them and as an operator's
//! manifest gives them (`strictAffinity`, `maxBlocksPerHost`, `autoAllocateBlocks`). margay's
//! own grace periods of the leak collectors ride in the same resource under `margay.io/v1`
//! (`leakGracePeriod`, `emptyBlockGracePeriod`, `nodeGracePeriod`: durations like `15m`).
//! The IPAM reads it through [`crate::ipam::IpamConfig`]; `margayctl ipam configure`, `apply`
//! and `get` all see the same record.

use super::{Spec, Validator, validate};
use serde::{Deserialize, Serialize};

/// The only name an IPAMConfiguration may have (as in Calico).
pub const IPAM_CONFIGURATION_NAME: &str = "default";

fn yes() -> bool {
    true
}

/// The IPAMConfiguration spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpamConfigurationSpec {
    /// No borrowing: an address comes only from a block affine to the node.
    #[serde(default)]
    pub strict_affinity: bool,
    /// Most blocks one node may hold (0: no limit).
    #[serde(default)]
    pub max_blocks_per_host: u32,
    /// Whether a node claims new blocks when its own are full.
    #[serde(default = "yes")]
    pub auto_allocate_blocks: bool,
    /// margay.io/v1: how long an allocation must look leaked before its felix releases it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leak_grace_period: Option<String>,
    /// margay.io/v1: how long an empty affine block stays with its node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_block_grace_period: Option<String>,
    /// margay.io/v1: how long a node is without liveness before its IPAM is released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_grace_period: Option<String>,
}

impl Default for IpamConfigurationSpec {
    fn default() -> Self {
        IpamConfigurationSpec {
            strict_affinity: false,
            max_blocks_per_host: 0,
            auto_allocate_blocks: true,
            leak_grace_period: None,
            empty_block_grace_period: None,
            node_grace_period: None,
        }
    }
}

impl IpamConfigurationSpec {
    /// The grace period fields, with their spec names.
    pub fn grace_periods(&self) -> [(&'static str, &Option<String>); 3] {
        [
            ("leakGracePeriod", &self.leak_grace_period),
            ("emptyBlockGracePeriod", &self.empty_block_grace_period),
            ("nodeGracePeriod", &self.node_grace_period),
        ]
    }
}

impl Spec for IpamConfigurationSpec {
    const KIND: &'static str = "IPAMConfiguration";
    const PLURAL: &'static str = "ipamconfigurations";
    const ONLY_NAME: Option<&'static str> = Some(IPAM_CONFIGURATION_NAME);

    fn validate(&self, v: &mut Validator) {
        if self.max_blocks_per_host > 1_000_000 {
            v.problem(
                "spec.maxBlocksPerHost",
                format!("{} is above 1000000", self.max_blocks_per_host),
            );
        }
        for (name, d) in self.grace_periods() {
            if let Some(d) = d
                && !validate::parse_duration(d).is_some_and(|s| s >= 0.0)
            {
                v.problem(
                    format!("spec.{name}"),
                    format!("'{d}' is not a duration (e.g. 90s, 15m, 1h)"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{AnyResource, Resource};

    #[test]
    fn calicos_manifest_parses_and_leaves_margays_fields_unset() {
        let v = serde_json::json!({
            "apiVersion": "projectcalico.org/v3", "kind": "IPAMConfiguration",
            "metadata": {"name": "default"},
            "spec": {"strictAffinity": true, "maxBlocksPerHost": 4}
        });
        let AnyResource::IpamConfiguration(r) = AnyResource::from_value(v).unwrap() else {
            panic!("not an IPAMConfiguration");
        };
        assert!(r.spec.strict_affinity && r.spec.auto_allocate_blocks);
        assert_eq!(r.spec.max_blocks_per_host, 4);
        assert!(r.validate().is_ok());
    }

    #[test]
    fn another_name_a_bad_duration_and_calicos_group_with_margays_fields_are_refused() {
        let mut r: Resource<IpamConfigurationSpec> =
            Resource::new("other", IpamConfigurationSpec::default());
        assert!(r.validate().is_err());
        r.metadata.name = "default".into();
        r.spec.leak_grace_period = Some("5m".into());
        let e = r.validate().unwrap_err().to_string();
        assert!(e.contains("spec.leakGracePeriod"), "{e}");
        r.api_version = crate::resources::MARGAY_API_VERSION.into();
        assert!(r.validate().is_ok());
        r.spec.node_grace_period = Some("soon".into());
        assert!(r.validate().is_err());
    }
}
