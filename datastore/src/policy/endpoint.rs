//! An endpoint as policy sees it: its addresses, named ports, profiles, and the labels its
//! selectors match: its own, the implicit ones Calico adds (`projectcalico.org/namespace`,
//! `.../orchestrator`, `.../serviceaccount`), and those its profiles apply (the namespace's
//! `pcns.*` from `kns.<namespace>`, the service account's `pcsa.*` from `ksa.<ns>.<sa>`).
//! Its own labels win over inherited ones, as in felix's label index.

use crate::resources::{
    EndpointPort, NAMESPACE_PROFILE_PREFIX, Profile, ProfileSpec, WorkloadEndpoint,
};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The label naming an endpoint's namespace.
pub const NAMESPACE_LABEL: &str = "projectcalico.org/namespace";
/// The label naming an endpoint's orchestrator (`k8s` for pods).
pub const ORCHESTRATOR_LABEL: &str = "projectcalico.org/orchestrator";
/// The label naming a pod's service account.
pub const SERVICE_ACCOUNT_LABEL: &str = "projectcalico.org/serviceaccount";
/// Prefix of the labels an endpoint inherits from its namespace.
pub const NAMESPACE_LABEL_PREFIX: &str = "pcns.";
/// Prefix of the labels an endpoint inherits from its service account.
pub const SERVICE_ACCOUNT_LABEL_PREFIX: &str = "pcsa.";
/// The label every namespace carries with its own name (under `pcns.`).
pub const NAME_LABEL: &str = "projectcalico.org/name";
/// Kubernetes' own automatic namespace label (under `pcns.`).
pub const K8S_NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// Profiles named after a service account: `ksa.<namespace>.<name>`.
pub const SERVICE_ACCOUNT_PROFILE_PREFIX: &str = "ksa.";

/// A workload endpoint, ready for selectors and rules.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// `namespace/name` of the WorkloadEndpoint.
    pub key: String,
    pub namespace: String,
    pub name: String,
    /// The pod's name when it is a pod (else the endpoint's name).
    pub workload: String,
    pub node: String,
    /// The host-side interface (`cali...`).
    pub interface: String,
    pub addresses: Vec<IpAddr>,
    pub ports: Vec<EndpointPort>,
    /// The profiles whose rules apply when no policy decides, in order.
    pub profiles: Vec<String>,
    /// Every label selectors see (own, implicit and inherited).
    pub labels: BTreeMap<String, String>,
}

impl Endpoint {
    /// Builds the endpoint from its WorkloadEndpoint, looking its profiles up in `profiles`
    /// (by name). The profiles are `spec.profiles`, or when that is empty the namespace's
    /// `kns.<namespace>` and, with a service account, `ksa.<namespace>.<account>`, as Calico
    /// gives every pod.
    pub fn new(wep: &WorkloadEndpoint, profiles: &BTreeMap<String, Profile>) -> Endpoint {
        let namespace = wep.metadata.namespace.clone().unwrap_or_default();
        let sa = wep
            .spec
            .service_account_name
            .clone()
            .filter(|s| !s.is_empty());
        let profile_names = if wep.spec.profiles.is_empty() {
            let mut p = vec![format!("{NAMESPACE_PROFILE_PREFIX}{namespace}")];
            if let Some(sa) = &sa {
                p.push(format!("{SERVICE_ACCOUNT_PROFILE_PREFIX}{namespace}.{sa}"));
            }
            p
        } else {
            wep.spec.profiles.clone()
        };
        let mut labels = BTreeMap::new();
        for p in &profile_names {
            labels.extend(profile_labels(p, profiles.get(p).map(|p| &p.spec)));
        }
        labels.insert(NAMESPACE_LABEL.to_string(), namespace.clone());
        labels.insert(
            ORCHESTRATOR_LABEL.to_string(),
            wep.spec
                .orchestrator
                .clone()
                .unwrap_or_else(|| "k8s".into()),
        );
        if let Some(sa) = &sa {
            labels.insert(SERVICE_ACCOUNT_LABEL.to_string(), sa.clone());
        }
        labels.extend(wep.metadata.labels.clone());
        Endpoint {
            key: format!("{namespace}/{}", wep.name()),
            workload: wep
                .spec
                .pod
                .clone()
                .unwrap_or_else(|| wep.name().to_string()),
            name: wep.name().to_string(),
            namespace,
            node: wep.spec.node.clone(),
            interface: wep.spec.interface_name.clone(),
            addresses: wep
                .spec
                .ip_networks
                .iter()
                .filter_map(|n| {
                    n.parse::<ipnet::IpNet>()
                        .map(|n| n.addr())
                        .or_else(|_| n.parse::<IpAddr>())
                        .ok()
                })
                .collect(),
            ports: wep.spec.ports.clone(),
            profiles: profile_names,
            labels,
        }
    }

    /// The port named `name` for IP protocol `proto`, if the endpoint has one.
    pub fn named_port(&self, name: &str, proto: u8) -> Option<u16> {
        self.ports
            .iter()
            .find(|p| p.name == name && p.protocol.number() == Some(proto))
            .map(|p| p.port)
    }
}

/// The labels a profile gives the endpoints that list it: its `labelsToApply`, plus the
/// namespace's and service account's own names that Calico always adds.
pub fn profile_labels(name: &str, spec: Option<&ProfileSpec>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(ns) = name.strip_prefix(NAMESPACE_PROFILE_PREFIX) {
        for k in [NAME_LABEL, K8S_NAMESPACE_NAME_LABEL] {
            out.insert(format!("{NAMESPACE_LABEL_PREFIX}{k}"), ns.to_string());
        }
    }
    if let Some((_, sa)) = name
        .strip_prefix(SERVICE_ACCOUNT_PROFILE_PREFIX)
        .and_then(|r| r.split_once('.'))
    {
        out.insert(
            format!("{SERVICE_ACCOUNT_LABEL_PREFIX}{NAME_LABEL}"),
            sa.to_string(),
        );
    }
    if let Some(s) = spec {
        out.extend(s.labels_to_apply.clone());
    }
    out
}

/// The namespace labels (without `pcns.`) a `kns.<namespace>` profile carries, for display
/// and for `margayctl label namespace`.
pub fn namespace_labels(spec: &ProfileSpec) -> BTreeMap<String, String> {
    spec.labels_to_apply
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix(NAMESPACE_LABEL_PREFIX)
                .map(|k| (k.to_string(), v.clone()))
        })
        .collect()
}
