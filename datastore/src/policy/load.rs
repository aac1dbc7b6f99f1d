//! Reads every resource the policy model is built from, in one pass over the datastore.

use super::model::{EndpointToHostAction, PolicyConfig, PolicyResources};
use crate::resources::{
    AnyResource, FelixConfigurationSpec, GlobalNetworkPolicySpec, K8sNetworkPolicySpec, KindInfo,
    NetworkPolicySpec, NodeSpec, ProfileSpec, Spec, TierSpec, WorkloadEndpointSpec,
};
use crate::{Store, StoreError};

/// Every kind the model is built from: what a daemon watches to rebuild it (each with
/// `Store::watch::<Spec>`, or `watch_raw` on `store::kind_prefix(info)`).
pub fn watched_kinds() -> [KindInfo; 8] {
    fn info<S: Spec>() -> KindInfo {
        KindInfo {
            kind: S::KIND,
            plural: S::PLURAL,
            namespaced: S::NAMESPACED,
        }
    }
    [
        info::<TierSpec>(),
        info::<NetworkPolicySpec>(),
        info::<GlobalNetworkPolicySpec>(),
        info::<K8sNetworkPolicySpec>(),
        info::<ProfileSpec>(),
        info::<WorkloadEndpointSpec>(),
        info::<NodeSpec>(),
        info::<FelixConfigurationSpec>(),
    ]
}

/// The policy settings of the `default` FelixConfiguration (Calico's defaults when absent).
pub fn config_of(fc: Option<&FelixConfigurationSpec>) -> PolicyConfig {
    let action = fc
        .and_then(|f| f.other.get("defaultEndpointToHostAction"))
        .and_then(|v| v.as_str())
        .and_then(EndpointToHostAction::parse)
        .unwrap_or_default();
    PolicyConfig {
        default_endpoint_to_host_action: action,
    }
}

/// Lists tiers, policies of the three kinds, profiles, workload endpoints, nodes' addresses
/// and the default FelixConfiguration.
pub async fn load(store: &Store) -> Result<PolicyResources, StoreError> {
    let (tiers, _) = store.list::<TierSpec>().await?;
    let (network_policies, _) = store.list::<NetworkPolicySpec>().await?;
    let (global_network_policies, _) = store.list::<GlobalNetworkPolicySpec>().await?;
    let (k8s_network_policies, _) = store.list::<K8sNetworkPolicySpec>().await?;
    let (profiles, _) = store.list::<ProfileSpec>().await?;
    let (endpoints, _) = store.list::<WorkloadEndpointSpec>().await?;
    let (nodes, _) = store.list::<NodeSpec>().await?;
    let fc = store.get::<FelixConfigurationSpec>("default").await?;
    let hosts = nodes
        .iter()
        .filter_map(|n| {
            let bgp = n.spec.bgp.as_ref()?;
            let ip = bgp
                .ipv4()
                .map(std::net::IpAddr::V4)
                .or_else(|| bgp.ipv6().map(std::net::IpAddr::V6))?;
            Some((n.name().to_string(), ip))
        })
        .collect();
    Ok(PolicyResources {
        tiers,
        network_policies,
        global_network_policies,
        k8s_network_policies,
        profiles,
        endpoints,
        hosts,
        config: config_of(fc.as_ref().map(|f| &f.spec)),
    })
}

impl PolicyResources {
    /// Takes one resource of a kind the model is built from (a parsed file, a document an
    /// operator wrote); a `default` FelixConfiguration sets the policy settings. Any other kind
    /// is given back.
    pub fn add(&mut self, resource: AnyResource) -> Result<(), Box<AnyResource>> {
        match resource {
            AnyResource::Tier(t) => self.tiers.push(t),
            AnyResource::NetworkPolicy(p) => self.network_policies.push(p),
            AnyResource::GlobalNetworkPolicy(p) => self.global_network_policies.push(p),
            AnyResource::K8sNetworkPolicy(p) => self.k8s_network_policies.push(p),
            AnyResource::Profile(p) => self.profiles.push(p),
            AnyResource::WorkloadEndpoint(w) => self.endpoints.push(w),
            AnyResource::FelixConfiguration(f) if f.name() == "default" => {
                self.config = config_of(Some(&f.spec))
            }
            other => return Err(Box::new(other)),
        }
        Ok(())
    }
}
