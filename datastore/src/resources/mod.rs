//! The cluster model: resources in the shapes of Calico's `projectcalico.org/v3` API.
//!
//! Every resource is `{apiVersion, kind, metadata, spec}`. Two API groups are accepted:
//! `projectcalico.org/v3` (so operators' Calico manifests apply unchanged) and margay's own
//! [`MARGAY_API_VERSION`] (`margay.io/v1`), which has the same shapes.
//!
//! Unknown fields: Node, BGPConfiguration, BGPPeer, BGPFilter, IPPool and WorkloadEndpoint are
//! strict, as calicoctl is: an unknown field is rejected with its path (`spec.peerIp: unknown
//! field`). Every field of Calico 3.32's spec of these kinds is accepted; [`FIELDS`] says which
//! ones margay acts on, and [`not_acted`] names those set in a resource that it does not.
//! FelixConfiguration keeps unknown fields (Felix has many options margay does not implement;
//! they are stored and printed back unchanged). Unknown `metadata` fields (Kubernetes
//! `ObjectMeta` has many) are kept.

mod any;
mod bgp;
mod bgpfilter;
mod communities;
mod felix;
mod fields;
mod ipamconfig;
mod ippool;
mod ipreservation;
mod k8s_policy;
mod node;
mod parse;
mod policy;
mod rule;
mod validate;

pub use any::{AnyResource, KINDS, KindInfo};
pub use bgp::{
    AsNumber, BfdSpec, BgpConfigurationSpec, BgpPassword, BgpPeerSpec, BindMode, CidrEntry,
    EnabledDisabled, NextHopMode, ReversePeering, SecretKeyRef, SourceAddress,
};
pub use bgpfilter::{
    BgpFilterRule, BgpFilterSpec, FilterAction, FilterFamily, MatchOperator, MatchSource,
    PrefixLength,
};
pub use communities::{Community, CommunityError, CommunityValue, PrefixAdvertisement};
pub use felix::{EndpointPort, FelixConfigurationSpec, RouteTableRange, WorkloadEndpointSpec};
pub use fields::{
    FIELDS, FieldInfo, FieldStatus, UnactedField, leaf_paths, log_not_acted_once, not_acted,
};
pub use ipamconfig::{IPAM_CONFIGURATION_NAME, IpamConfigurationSpec};
pub use ippool::{AllowedUse, AssignmentMode, EncapMode, IpPoolSpec};
pub use ipreservation::{IpReservationSpec, parse_reserved};
pub use k8s_policy::{
    IntOrString, IpBlock, K8S_NETWORKING_API_VERSION, K8sEgressRule, K8sIngressRule,
    K8sNetworkPolicySpec, LabelSelector, LabelSelectorRequirement, NetworkPolicyPeer,
    NetworkPolicyPort,
};
pub use node::{NodeAddress, NodeBgpSpec, NodeSpec, NodeWireguardSpec, OrchRef};
pub use parse::{parse_documents, parse_documents_in};
pub use policy::{
    DEFAULT_TIER, DEFAULT_TIER_ORDER, GlobalNetworkPolicySpec, K8S_POLICY_PREFIX,
    NAMESPACE_PROFILE_PREFIX, NetworkPolicySpec, ProfileSpec, TierDefaultAction, TierSpec,
};
pub use rule::{
    EntityRule, HttpMatch, IcmpFields, PolicyType, Port, PortMatch, Protocol, Rule, RuleAction,
    RuleMetadata, ServiceAccountMatch, ServiceMatch, default_types,
};
/// Go-style durations (`120s`, `2m`) in seconds, as Calico's fields write them.
pub use validate::parse_duration;
pub use validate::{FieldProblem, Validator};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Debug;

/// Calico's API group and version, accepted as is.
pub const CALICO_API_VERSION: &str = "projectcalico.org/v3";
/// margay's own API group and version (same shapes as Calico's v3).
pub const MARGAY_API_VERSION: &str = "margay.io/v1";

/// Spec fields Calico's API lacks: accepted under [`MARGAY_API_VERSION`] only.
const MARGAY_ONLY: &[&str] = &[
    "bfd",
    "maxPaths",
    "leakGracePeriod",
    "emptyBlockGracePeriod",
    "nodeGracePeriod",
];

/// What can go wrong reading or checking resources.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// A field has a bad value (`BGPPeer 'tor1': spec.peerIP: '10.0.0.300' is not an IP address`).
    #[error("{kind} '{name}': {}", problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
    Invalid {
        kind: String,
        name: String,
        problems: Vec<FieldProblem>,
    },
    /// A document does not parse into a resource.
    #[error("document {index}{}: {message}", kind_name(kind, name))]
    Parse {
        /// 1-based position of the document in its file.
        index: usize,
        kind: Option<String>,
        name: Option<String>,
        message: String,
    },
}

fn kind_name(kind: &Option<String>, name: &Option<String>) -> String {
    match (kind, name) {
        (Some(k), Some(n)) => format!(" ({k} '{n}')"),
        (Some(k), None) => format!(" ({k})"),
        _ => String::new(),
    }
}

/// Kubernetes-style object metadata.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The etcd mod_revision the resource was read at; an update with it set is a
    /// compare-and-swap against it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    /// Other `ObjectMeta` fields, kept as given.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// One kind's spec: what it is called, where it is stored, how it is checked.
pub trait Spec:
    Serialize + DeserializeOwned + Default + Clone + Debug + PartialEq + Send + Sync + 'static
{
    /// The `kind` field (`BGPPeer`).
    const KIND: &'static str;
    /// Lower-case plural: the key path segment and `margayctl get` name (`bgppeers`).
    const PLURAL: &'static str;
    /// Whether names are scoped by `metadata.namespace` (only WorkloadEndpoint).
    const NAMESPACED: bool = false;
    /// The one name a singleton kind's resource may have (IPAMConfiguration: `default`).
    const ONLY_NAME: Option<&'static str> = None;
    /// Fills Calico's defaults into fields left out.
    fn apply_defaults(&mut self) {}
    /// Checks field values; problems are reported with their `spec.` path.
    fn validate(&self, v: &mut Validator);
    /// Checks what depends on the resource's name (the `default` tier's fixed order).
    fn validate_name(&self, _name: &str, _v: &mut Validator) {}
    /// The `apiVersion`s this kind is written in; the first is what new resources get.
    const API_VERSIONS: &'static [&'static str] = &[CALICO_API_VERSION, MARGAY_API_VERSION];
    /// Hides secrets (BGP passwords) before printing.
    fn redact(&mut self) {}
    /// Puts back secrets that arrive redacted (a `get -o yaml` output applied again) from
    /// the stored copy.
    fn restore_secrets(&mut self, _stored: &Self) {}
}

/// A resource of one kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[serde(bound(deserialize = "S: DeserializeOwned + Default"))]
pub struct Resource<S> {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: S,
    /// Calico's `status` (Node has one); kept as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

pub type Node = Resource<NodeSpec>;
pub type BgpConfiguration = Resource<BgpConfigurationSpec>;
pub type BgpPeer = Resource<BgpPeerSpec>;
pub type IpPool = Resource<IpPoolSpec>;
pub type IpReservation = Resource<IpReservationSpec>;
pub type IpamConfiguration = Resource<IpamConfigurationSpec>;
pub type BgpFilter = Resource<BgpFilterSpec>;
pub type WorkloadEndpoint = Resource<WorkloadEndpointSpec>;
pub type FelixConfiguration = Resource<FelixConfigurationSpec>;
pub type NetworkPolicy = Resource<NetworkPolicySpec>;
pub type GlobalNetworkPolicy = Resource<GlobalNetworkPolicySpec>;
pub type Tier = Resource<TierSpec>;
pub type Profile = Resource<ProfileSpec>;
/// A `networking.k8s.io/v1` NetworkPolicy.
pub type K8sNetworkPolicy = Resource<K8sNetworkPolicySpec>;

impl<S: Spec> Resource<S> {
    /// A resource with the given name and spec, in Calico's API group.
    pub fn new(name: impl Into<String>, spec: S) -> Self {
        Resource {
            api_version: S::API_VERSIONS[0].to_string(),
            kind: S::KIND.to_string(),
            metadata: ObjectMeta {
                name: name.into(),
                ..ObjectMeta::default()
            },
            spec,
            status: None,
        }
    }

    /// `metadata.name`.
    pub fn name(&self) -> &str {
        &self.metadata.name
    }

    /// The etcd mod_revision this copy was read at, if it came from the store.
    pub fn revision(&self) -> Option<i64> {
        self.metadata.resource_version.as_deref()?.parse().ok()
    }

    /// Checks the whole resource: apiVersion, kind, name and spec.
    pub fn validate(&self) -> Result<(), ModelError> {
        let mut v = Validator::default();
        if !S::API_VERSIONS.contains(&self.api_version.as_str()) {
            v.problem(
                "apiVersion",
                format!(
                    "'{}' is not supported (use {})",
                    self.api_version,
                    S::API_VERSIONS.join(" or ")
                ),
            );
        }
        if self.api_version == CALICO_API_VERSION
            && let Ok(spec) = serde_json::to_value(&self.spec)
        {
            for f in MARGAY_ONLY {
                if spec.get(f).is_some() {
                    v.problem(
                        format!("spec.{f}"),
                        format!("exists only in {MARGAY_API_VERSION}, not in {CALICO_API_VERSION}"),
                    );
                }
            }
        }
        if self.kind != S::KIND {
            v.problem("kind", format!("'{}' is not {}", self.kind, S::KIND));
        }
        validate::name(&mut v, "metadata.name", &self.metadata.name);
        if let Some(only) = S::ONLY_NAME
            && self.metadata.name != only
        {
            v.problem(
                "metadata.name",
                format!("must be '{only}' (one {} per cluster)", S::KIND),
            );
        }
        if S::NAMESPACED {
            match self.metadata.namespace.as_deref() {
                None | Some("") => v.problem("metadata.namespace", "is required"),
                Some(ns) => validate::name(&mut v, "metadata.namespace", ns),
            }
        }
        self.spec.validate(&mut v);
        self.spec.validate_name(&self.metadata.name, &mut v);
        v.into_result(S::KIND, &self.metadata.name)
    }

    /// A copy with secrets hidden.
    pub fn redacted(&self) -> Self {
        let mut r = self.clone();
        r.spec.redact();
        r
    }
}

/// The text written in place of a secret by `redact`.
pub const REDACTED: &str = "<redacted>";
