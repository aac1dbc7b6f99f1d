//! Reads every resource the policy model is built from, in one pass over the datastore.

use super::model::{EndpointToHostAction, PolicyConfig, PolicyResources};
use crate::resources::{
    AnyResource, FelixConfiguration, FelixConfigurationSpec, GlobalNetworkPolicy,
    GlobalNetworkPolicySpec, K8sNetworkPolicy, K8sNetworkPolicySpec, KindInfo, NetworkPolicy,
    NetworkPolicySpec, Node, NodeSpec, Profile, ProfileSpec, Spec, Tier, TierSpec,
    WorkloadEndpoint, WorkloadEndpointSpec,
};
use crate::store::{kind_prefix, with_rev};
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
/// and the default FelixConfiguration. The eight reads go out together: one round trip of
/// waiting, not eight (felix's policy task runs this for every CNI ADD).
pub async fn load(store: &Store) -> Result<PolicyResources, StoreError> {
    Ok(load_with_revision(store).await?.0)
}

/// [`load`], with the revision the WorkloadEndpoints were listed at: a watcher that sees a
/// WorkloadEndpoint change at or below it knows the load already holds that change.
pub async fn load_with_revision(store: &Store) -> Result<(PolicyResources, i64), StoreError> {
    let (tiers, nps, gnps, knps, profiles, endpoints, nodes, fc) = tokio::try_join!(
        store.list::<TierSpec>(),
        store.list::<NetworkPolicySpec>(),
        store.list::<GlobalNetworkPolicySpec>(),
        store.list::<K8sNetworkPolicySpec>(),
        store.list::<ProfileSpec>(),
        store.list::<WorkloadEndpointSpec>(),
        store.list::<NodeSpec>(),
        store.get::<FelixConfigurationSpec>("default"),
    )?;
    let (tiers, network_policies, global_network_policies, k8s_network_policies) =
        (tiers.0, nps.0, gnps.0, knps.0);
    let endpoints_revision = endpoints.1;
    let (profiles, endpoints, nodes) = (profiles.0, endpoints.0, nodes.0);
    let hosts = nodes
        .iter()
        .filter_map(|n| Some((n.name().to_string(), host_address(n)?)))
        .collect();
    let res = PolicyResources {
        tiers,
        network_policies,
        global_network_policies,
        k8s_network_policies,
        profiles,
        endpoints,
        hosts,
        config: config_of(fc.as_ref().map(|f| &f.spec)),
    };
    Ok((res, endpoints_revision))
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

/// One stored resource the model is built from, as a watch or a list delivers it.
#[derive(Debug, Clone)]
pub enum Input {
    Tier(Tier),
    NetworkPolicy(NetworkPolicy),
    GlobalNetworkPolicy(GlobalNetworkPolicy),
    K8sNetworkPolicy(K8sNetworkPolicy),
    Profile(Profile),
    WorkloadEndpoint(WorkloadEndpoint),
    Node(Node),
    FelixConfiguration(FelixConfiguration),
}

/// The kind of [`Input`] a key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum InputKind {
    Tier,
    NetworkPolicy,
    GlobalNetworkPolicy,
    K8sNetworkPolicy,
    Profile,
    WorkloadEndpoint,
    Node,
    FelixConfiguration,
}

const INPUT_KINDS: [InputKind; 8] = [
    InputKind::Tier,
    InputKind::NetworkPolicy,
    InputKind::GlobalNetworkPolicy,
    InputKind::K8sNetworkPolicy,
    InputKind::Profile,
    InputKind::WorkloadEndpoint,
    InputKind::Node,
    InputKind::FelixConfiguration,
];

/// Which input of the model `key` holds (by its kind's prefix), if any.
pub fn input_kind(key: &str) -> Option<InputKind> {
    watched_kinds()
        .into_iter()
        .zip(INPUT_KINDS)
        .find(|(info, _)| key.starts_with(kind_prefix(*info).as_str()))
        .map(|(_, k)| k)
}

/// Decodes a stored value of a key [`input_kind`] knows (`None` for any other key).
pub fn decode_input(key: &str, value: &[u8], rev: i64) -> Option<Result<Input, StoreError>> {
    let kind = input_kind(key)?;
    Some(match kind {
        InputKind::Tier => with_rev(key, value, rev).map(Input::Tier),
        InputKind::NetworkPolicy => with_rev(key, value, rev).map(Input::NetworkPolicy),
        InputKind::GlobalNetworkPolicy => with_rev(key, value, rev).map(Input::GlobalNetworkPolicy),
        InputKind::K8sNetworkPolicy => with_rev(key, value, rev).map(Input::K8sNetworkPolicy),
        InputKind::Profile => with_rev(key, value, rev).map(Input::Profile),
        InputKind::WorkloadEndpoint => with_rev(key, value, rev).map(Input::WorkloadEndpoint),
        InputKind::Node => with_rev(key, value, rev).map(Input::Node),
        InputKind::FelixConfiguration => with_rev(key, value, rev).map(Input::FelixConfiguration),
    })
}

/// A node's address for host traffic (its BGP IPv4 address, else IPv6).
pub fn host_address(n: &Node) -> Option<std::net::IpAddr> {
    let bgp = n.spec.bgp.as_ref()?;
    bgp.ipv4()
        .map(std::net::IpAddr::V4)
        .or_else(|| bgp.ipv6().map(std::net::IpAddr::V6))
}
