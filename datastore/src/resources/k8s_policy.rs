//! Kubernetes' own `networking.k8s.io/v1` NetworkPolicy, applied through margayctl (margay
//! has no Kubernetes API to watch). It is stored as written and enforced as Calico enforces it:
//! converted to the Calico NetworkPolicy `knp.default.<name>` at order 1000 in the `default`
//! tier (see `crate::policy::k8s`).

use super::{Spec, Validator};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Kubernetes' API group and version of NetworkPolicy.
pub const K8S_NETWORKING_API_VERSION: &str = "networking.k8s.io/v1";

/// A Kubernetes label selector: `matchLabels` and `matchExpressions`, all of which must hold.
/// An empty selector selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// `ipBlock`: a CIDR minus exceptions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpBlock {
    pub cidr: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<String>,
}

/// One peer of a rule: pods (by pod and/or namespace selector) or an `ipBlock`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicyPeer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_block: Option<IpBlock>,
}

/// A port number or a named port (Kubernetes' IntOrString).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    Int(u32),
    String(String),
}

/// One port of a rule; `protocol` defaults to TCP, `endPort` makes a range.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicyPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_port: Option<u32>,
}

/// An ingress rule: traffic from any of `from` to any of `ports` (empty = all).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct K8sIngressRule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<NetworkPolicyPeer>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<NetworkPolicyPort>,
}

/// An egress rule: traffic to any of `to` on any of `ports` (empty = all).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct K8sEgressRule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<NetworkPolicyPeer>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<NetworkPolicyPort>,
}

/// `NetworkPolicy.spec` of `networking.k8s.io/v1`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct K8sNetworkPolicySpec {
    #[serde(default)]
    pub pod_selector: LabelSelector,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy_types: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<K8sIngressRule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<K8sEgressRule>,
}

fn check_label_selector(v: &mut Validator, field: &str, s: &LabelSelector) {
    for (i, e) in s.match_expressions.iter().enumerate() {
        let f = format!("{field}.matchExpressions[{i}]");
        match e.operator.as_str() {
            "In" | "NotIn" if e.values.is_empty() => {
                v.problem(format!("{f}.values"), "must not be empty for In and NotIn")
            }
            "Exists" | "DoesNotExist" if !e.values.is_empty() => v.problem(
                format!("{f}.values"),
                "must be empty for Exists and DoesNotExist",
            ),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => v.problem(
                format!("{f}.operator"),
                format!("'{other}' is not In, NotIn, Exists or DoesNotExist"),
            ),
        }
        if e.key.is_empty() {
            v.problem(format!("{f}.key"), "is required");
        }
    }
}

fn check_peer(v: &mut Validator, field: &str, p: &NetworkPolicyPeer) {
    if let Some(b) = &p.ip_block {
        if p.pod_selector.is_some() || p.namespace_selector.is_some() {
            v.problem(
                field,
                "ipBlock cannot be combined with podSelector or namespaceSelector",
            );
        }
        let outer = v.cidr(&format!("{field}.ipBlock.cidr"), &b.cidr);
        for (i, e) in b.except.iter().enumerate() {
            let f = format!("{field}.ipBlock.except[{i}]");
            if let (Some(outer), Some(inner)) = (outer, v.cidr(&f, e))
                && !(outer.contains(&inner.network()) && inner.prefix_len() > outer.prefix_len())
            {
                v.problem(f, format!("'{e}' is not inside '{}'", b.cidr));
            }
        }
    } else if p.pod_selector.is_none() && p.namespace_selector.is_none() {
        v.problem(
            field,
            "needs one of podSelector, namespaceSelector or ipBlock",
        );
    }
    if let Some(s) = &p.pod_selector {
        check_label_selector(v, &format!("{field}.podSelector"), s);
    }
    if let Some(s) = &p.namespace_selector {
        check_label_selector(v, &format!("{field}.namespaceSelector"), s);
    }
}

fn check_port(v: &mut Validator, field: &str, p: &NetworkPolicyPort) {
    if let Some(proto) = &p.protocol
        && !matches!(proto.as_str(), "TCP" | "UDP" | "SCTP")
    {
        v.problem(
            format!("{field}.protocol"),
            format!("'{proto}' is not TCP, UDP or SCTP"),
        );
    }
    match (&p.port, p.end_port) {
        (Some(IntOrString::Int(n)), end) => {
            if !(1..=65535).contains(n) {
                v.problem(format!("{field}.port"), "must be 1-65535");
            }
            if let Some(e) = end
                && (e < *n || e > 65535)
            {
                v.problem(
                    format!("{field}.endPort"),
                    "must be at least port and at most 65535",
                );
            }
        }
        (Some(IntOrString::String(s)), end) => {
            if !super::rule::Port::Text(s.clone())
                .parse()
                .is_some_and(|m| matches!(m, super::rule::PortMatch::Named(_)))
            {
                v.problem(format!("{field}.port"), format!("'{s}' is not a port name"));
            }
            if end.is_some() {
                v.problem(format!("{field}.endPort"), "needs a numeric port");
            }
        }
        (None, Some(_)) => v.problem(format!("{field}.endPort"), "needs a port"),
        (None, None) => {}
    }
}

impl Spec for K8sNetworkPolicySpec {
    const KIND: &'static str = "NetworkPolicy";
    const PLURAL: &'static str = "k8snetworkpolicies";
    const NAMESPACED: bool = true;
    const API_VERSIONS: &'static [&'static str] = &[K8S_NETWORKING_API_VERSION];

    fn validate(&self, v: &mut Validator) {
        check_label_selector(v, "spec.podSelector", &self.pod_selector);
        for (i, t) in self.policy_types.iter().enumerate() {
            if t != "Ingress" && t != "Egress" {
                v.problem(
                    format!("spec.policyTypes[{i}]"),
                    format!("'{t}' is not Ingress or Egress"),
                );
            }
        }
        for (i, r) in self.ingress.iter().enumerate() {
            for (j, p) in r.from.iter().enumerate() {
                check_peer(v, &format!("spec.ingress[{i}].from[{j}]"), p);
            }
            for (j, p) in r.ports.iter().enumerate() {
                check_port(v, &format!("spec.ingress[{i}].ports[{j}]"), p);
            }
        }
        for (i, r) in self.egress.iter().enumerate() {
            for (j, p) in r.to.iter().enumerate() {
                check_peer(v, &format!("spec.egress[{i}].to[{j}]"), p);
            }
            for (j, p) in r.ports.iter().enumerate() {
                check_port(v, &format!("spec.egress[{i}].ports[{j}]"), p);
            }
        }
    }
}
