//! Policies and rules read into the form evaluation needs, with Calico's namespace semantics
//! folded into the selectors (as libcalico-go's update processors do):
//!
//! - a NetworkPolicy selects `(selector) && projectcalico.org/namespace == '<ns>'`;
//! - a GlobalNetworkPolicy's `namespaceSelector` is matched on the namespace's labels
//!   (`pcns.`-prefixed on the endpoint; `all()` = any namespaced endpoint);
//! - `serviceAccountSelector` is matched on the service account's labels (`pcsa.`);
//! - in a rule of a NetworkPolicy, as soon as `selector`, `notSelector` or `namespaceSelector`
//!   is set, the peer must be in the policy's namespace (or in a namespace the rule's
//!   `namespaceSelector` picks); a rule with only `nets` matches any address;
//! - `serviceAccounts.names` is `projectcalico.org/serviceaccount in {...}`, ANDed with
//!   `serviceAccounts.selector` on `pcsa.` labels.

use super::endpoint::{
    NAMESPACE_LABEL, NAMESPACE_LABEL_PREFIX, SERVICE_ACCOUNT_LABEL, SERVICE_ACCOUNT_LABEL_PREFIX,
};
use crate::resources::{
    EntityRule, GlobalNetworkPolicy, IcmpFields, NetworkPolicy, NetworkPolicySpec, PolicyType,
    PortMatch, Rule, RuleAction,
};
use crate::selector::{Selector, SelectorError};
use ipnet::IpNet;
use std::fmt;

/// Which kind of resource a policy came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum PolicyKind {
    /// `projectcalico.org/v3` NetworkPolicy.
    NetworkPolicy,
    /// `projectcalico.org/v3` GlobalNetworkPolicy.
    GlobalNetworkPolicy,
    /// `networking.k8s.io/v1` NetworkPolicy, converted to `knp.default.<name>`.
    KubernetesNetworkPolicy,
}

/// Names a policy: its kind, namespace (for namespaced kinds) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct PolicyId {
    pub kind: PolicyKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
}

impl fmt::Display for PolicyId {
    /// `namespace/name` for namespaced policies, `name` for global ones (Calico's sort key).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{ns}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// A selector that could not be read (the resource was stored by something that did not
/// validate it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy {policy}: {field}: {source}")]
pub struct CompileError {
    pub policy: String,
    pub field: String,
    #[source]
    pub source: SelectorError,
}

/// One side of a rule, read.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Entity {
    pub nets: Vec<IpNet>,
    pub not_nets: Vec<IpNet>,
    /// The peer must be an endpoint these labels select (namespace scoping folded in).
    pub selector: Option<Selector>,
    /// The peer must not be an endpoint this selects.
    pub not_selector: Option<Selector>,
    pub ports: Vec<PortMatch>,
    pub not_ports: Vec<PortMatch>,
}

/// An ICMP type and code match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmp {
    pub icmp_type: Option<u8>,
    pub code: Option<u8>,
}

/// A rule, read.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledRule {
    pub action: RuleAction,
    pub ip_version: Option<u8>,
    pub protocol: Option<u8>,
    pub not_protocol: Option<u8>,
    pub icmp: Option<Icmp>,
    pub not_icmp: Option<Icmp>,
    pub source: Entity,
    pub destination: Entity,
    /// The rule as written, for explanations.
    pub original: Rule,
}

/// A policy, read: what it selects and its rules for each direction.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledPolicy {
    pub id: PolicyId,
    pub tier: String,
    pub order: Option<f64>,
    /// The endpoints it applies to (namespace and service-account scoping folded in).
    pub selector: Selector,
    /// `spec.selector` as written (`all()` when empty).
    pub selector_text: String,
    pub types: Vec<PolicyType>,
    pub ingress: Vec<CompiledRule>,
    pub egress: Vec<CompiledRule>,
}

impl CompiledPolicy {
    /// The rules for `dir`, when the policy applies to that direction.
    pub fn rules(&self, dir: PolicyType) -> Option<&[CompiledRule]> {
        let rules = match dir {
            PolicyType::Ingress => self.ingress.as_slice(),
            PolicyType::Egress => self.egress.as_slice(),
        };
        self.types.contains(&dir).then_some(rules)
    }
}

fn in_a_namespace() -> Selector {
    Selector::Has(NAMESPACE_LABEL.into())
}

fn not_in_a_namespace() -> Selector {
    Selector::Not(Box::new(in_a_namespace()))
}

fn namespace_is(ns: &str) -> Selector {
    Selector::Eq(NAMESPACE_LABEL.into(), ns.into())
}

/// Reads selector text for `field` of policy `policy`.
struct Reader<'a> {
    policy: &'a PolicyId,
}

impl Reader<'_> {
    fn parse(&self, field: &str, text: &str) -> Result<Selector, CompileError> {
        Selector::parse_or_all(text).map_err(|source| CompileError {
            policy: self.policy.to_string(),
            field: field.to_string(),
            source,
        })
    }

    /// A namespace selector over the endpoint's inherited `pcns.` labels.
    fn namespace_selector(&self, field: &str, text: &str) -> Result<Selector, CompileError> {
        Ok(self.parse(field, text)?.with_prefix(
            NAMESPACE_LABEL_PREFIX,
            &in_a_namespace(),
            &not_in_a_namespace(),
        ))
    }

    /// A service-account selector over the endpoint's inherited `pcsa.` labels.
    fn service_account_selector(&self, field: &str, text: &str) -> Result<Selector, CompileError> {
        let has_sa = Selector::Has(SERVICE_ACCOUNT_LABEL.into());
        Ok(self.parse(field, text)?.with_prefix(
            SERVICE_ACCOUNT_LABEL_PREFIX,
            &has_sa,
            &Selector::Global,
        ))
    }

    fn entity(
        &self,
        field: &str,
        e: &EntityRule,
        ns: Option<&str>,
    ) -> Result<Entity, CompileError> {
        let set = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.trim().is_empty());
        let mut positive: Option<Selector> = None;
        if let Some(sa) = &e.service_accounts {
            let mut s = Selector::All;
            if let Some(text) = sa.selector.as_deref().filter(|t| !t.trim().is_empty()) {
                s = self
                    .service_account_selector(&format!("{field}.serviceAccounts.selector"), text)?;
            }
            if !sa.names.is_empty() {
                s = Selector::and(
                    s,
                    Selector::In(SERVICE_ACCOUNT_LABEL.into(), sa.names.clone()),
                );
            }
            positive = Some(s);
        }
        if set(&e.selector) {
            let s = self.parse(
                &format!("{field}.selector"),
                e.selector.as_deref().unwrap_or(""),
            )?;
            positive = Some(match positive {
                Some(p) => Selector::and(p, s),
                None => s,
            });
        }
        let ns_scope = if set(&e.namespace_selector) {
            Some(self.namespace_selector(
                &format!("{field}.namespaceSelector"),
                e.namespace_selector.as_deref().unwrap_or(""),
            )?)
        } else {
            ns.map(namespace_is)
        };
        if let Some(scope) = ns_scope
            && (positive.is_some() || set(&e.not_selector) || set(&e.namespace_selector))
        {
            positive = Some(match positive {
                Some(p) => Selector::and(scope, p),
                None => scope,
            });
        }
        let not_selector = if set(&e.not_selector) {
            Some(self.parse(
                &format!("{field}.notSelector"),
                e.not_selector.as_deref().unwrap_or(""),
            )?)
        } else {
            None
        };
        let nets = |v: &[String]| -> Vec<IpNet> {
            v.iter()
                .filter_map(|n| {
                    n.parse::<IpNet>()
                        .ok()
                        .or_else(|| n.parse::<std::net::IpAddr>().ok().map(IpNet::from))
                        .map(|n| n.trunc())
                })
                .collect()
        };
        let ports = |v: &[crate::resources::Port]| v.iter().filter_map(|p| p.parse()).collect();
        Ok(Entity {
            nets: nets(&e.nets),
            not_nets: nets(&e.not_nets),
            selector: positive,
            not_selector,
            ports: ports(&e.ports),
            not_ports: ports(&e.not_ports),
        })
    }

    fn rule(&self, field: &str, r: &Rule, ns: Option<&str>) -> Result<CompiledRule, CompileError> {
        let icmp = |i: &Option<IcmpFields>| {
            i.as_ref().map(|i| Icmp {
                icmp_type: i.icmp_type.and_then(|t| u8::try_from(t).ok()),
                code: i.code.and_then(|c| u8::try_from(c).ok()),
            })
        };
        Ok(CompiledRule {
            action: r.action,
            ip_version: r.ip_version,
            protocol: r.protocol.as_ref().and_then(|p| p.number()),
            not_protocol: r.not_protocol.as_ref().and_then(|p| p.number()),
            icmp: icmp(&r.icmp),
            not_icmp: icmp(&r.not_icmp),
            source: self.entity(&format!("{field}.source"), &r.source, ns)?,
            destination: self.entity(&format!("{field}.destination"), &r.destination, ns)?,
            original: r.clone(),
        })
    }

    fn rules(
        &self,
        field: &str,
        rs: &[Rule],
        ns: Option<&str>,
    ) -> Result<Vec<CompiledRule>, CompileError> {
        rs.iter()
            .enumerate()
            .map(|(i, r)| self.rule(&format!("{field}[{i}]"), r, ns))
            .collect()
    }
}

/// Reads a Calico NetworkPolicy (or a converted Kubernetes one, with `kind`).
pub fn compile_network_policy(
    p: &NetworkPolicy,
    kind: PolicyKind,
) -> Result<CompiledPolicy, CompileError> {
    let ns = p.metadata.namespace.clone().unwrap_or_default();
    let id = PolicyId {
        kind,
        namespace: Some(ns.clone()),
        name: p.name().to_string(),
    };
    assemble(id, &p.spec, Some(namespace_is(&ns)))
}

/// Reads a GlobalNetworkPolicy.
pub fn compile_global_policy(p: &GlobalNetworkPolicy) -> Result<CompiledPolicy, CompileError> {
    let id = PolicyId {
        kind: PolicyKind::GlobalNetworkPolicy,
        namespace: None,
        name: p.name().to_string(),
    };
    let s = &p.spec;
    let common = NetworkPolicySpec {
        tier: s.tier.clone(),
        order: s.order,
        ingress: s.ingress.clone(),
        egress: s.egress.clone(),
        selector: s.selector.clone(),
        types: s.types.clone(),
        service_account_selector: s.service_account_selector.clone(),
        performance_hints: Vec::new(),
    };
    let scope = if s.namespace_selector.trim().is_empty() {
        None
    } else {
        let r = Reader { policy: &id };
        Some(r.namespace_selector("spec.namespaceSelector", &s.namespace_selector)?)
    };
    assemble(id, &common, scope)
}

/// The fields both policy kinds share, read; `scope` is ANDed to the selector (the
/// namespace of a NetworkPolicy, the namespace selector of a GlobalNetworkPolicy).
fn assemble(
    id: PolicyId,
    spec: &NetworkPolicySpec,
    scope: Option<Selector>,
) -> Result<CompiledPolicy, CompileError> {
    let r = Reader { policy: &id };
    let mut selector = r.parse("spec.selector", &spec.selector)?;
    if let Some(scope) = scope {
        selector = Selector::and(scope, selector);
    }
    if !spec.service_account_selector.trim().is_empty() {
        selector = Selector::and(
            selector,
            r.service_account_selector(
                "spec.serviceAccountSelector",
                &spec.service_account_selector,
            )?,
        );
    }
    let mut spec = spec.clone();
    crate::resources::Spec::apply_defaults(&mut spec);
    let ns = id.namespace.as_deref();
    Ok(CompiledPolicy {
        tier: spec.tier.clone(),
        order: spec.order,
        selector,
        selector_text: text_or_all(&spec.selector),
        types: spec.types.clone(),
        ingress: r.rules("spec.ingress", &spec.ingress, ns)?,
        egress: r.rules("spec.egress", &spec.egress, ns)?,
        id,
    })
}

/// Reads a profile's rules (profiles are global: no namespace scoping).
pub fn compile_profile_rules(
    profile: &str,
    field: &str,
    rules: &[Rule],
) -> Result<Vec<CompiledRule>, CompileError> {
    let id = PolicyId {
        kind: PolicyKind::GlobalNetworkPolicy,
        namespace: None,
        name: profile.to_string(),
    };
    Reader { policy: &id }.rules(field, rules, None)
}

fn text_or_all(s: &str) -> String {
    if s.trim().is_empty() {
        "all()".into()
    } else {
        s.trim().to_string()
    }
}
