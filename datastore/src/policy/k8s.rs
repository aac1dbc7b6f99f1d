//! Kubernetes NetworkPolicy → Calico NetworkPolicy, as Calico's converter does it: the name
//! `knp.default.<name>`, tier `default`, order 1000, the pod selector ANDed with
//! `projectcalico.org/orchestrator == 'k8s'`, one Allow rule per (protocol, peer), ports with
//! no protocol are TCP, `ipBlock` is `nets` minus `notNets`, and `types` from `policyTypes`
//! (Ingress alone when left out).

use super::endpoint::ORCHESTRATOR_LABEL;
use crate::resources::{
    EntityRule, IntOrString, K8S_POLICY_PREFIX, K8sNetworkPolicy, LabelSelector, NetworkPolicy,
    NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec, PolicyType, Port, Protocol, Resource,
    Rule, RuleAction,
};
use std::collections::BTreeMap;

/// The order Calico gives every converted Kubernetes policy.
pub const K8S_POLICY_ORDER: f64 = 1000.0;

/// A Kubernetes label selector in Calico's selector language. `namespace` selectors that are
/// present but empty select every namespace (`all()`); pod selectors always require the
/// Kubernetes orchestrator label.
fn selector_text(s: Option<&LabelSelector>, pod: bool) -> String {
    let mut terms = Vec::new();
    if pod {
        terms.push(format!("{ORCHESTRATOR_LABEL} == 'k8s'"));
    }
    let Some(s) = s else {
        return terms.join(" && ");
    };
    if !pod && s.match_labels.is_empty() && s.match_expressions.is_empty() {
        return "all()".into();
    }
    for (k, v) in &s.match_labels {
        terms.push(format!("{k} == '{v}'"));
    }
    for e in &s.match_expressions {
        let values = e.values.join("', '");
        terms.push(match e.operator.as_str() {
            "In" => format!("{} in {{ '{values}' }}", e.key),
            "NotIn" => format!("{} not in {{ '{values}' }}", e.key),
            "Exists" => format!("has({})", e.key),
            _ => format!("! has({})", e.key),
        });
    }
    terms.join(" && ")
}

/// A label selector as one line (for tables): `app=web,tier in (a,b)`; `<none>` when empty.
pub fn label_selector_text(s: &LabelSelector) -> String {
    let mut parts: Vec<String> = s
        .match_labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in &s.match_expressions {
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({})", e.key, e.values.join(",")),
            "NotIn" => format!("{} notin ({})", e.key, e.values.join(",")),
            "Exists" => e.key.clone(),
            _ => format!("!{}", e.key),
        });
    }
    if parts.is_empty() {
        "<none>".into()
    } else {
        parts.join(",")
    }
}

/// The rule's peer side: selector, namespace selector, nets and notNets.
fn peer_entity(peer: Option<&NetworkPolicyPeer>) -> EntityRule {
    let Some(p) = peer else {
        return EntityRule::default();
    };
    if let Some(b) = &p.ip_block {
        return EntityRule {
            nets: vec![b.cidr.clone()],
            not_nets: b.except.clone(),
            ..EntityRule::default()
        };
    }
    let some = |s: String| (!s.is_empty()).then_some(s);
    EntityRule {
        selector: some(selector_text(p.pod_selector.as_ref(), true)),
        namespace_selector: p
            .namespace_selector
            .as_ref()
            .and_then(|n| some(selector_text(Some(n), false))),
        ..EntityRule::default()
    }
}

/// The ports of a rule grouped by protocol: `None` protocol = no port restriction at all;
/// an empty list = every port of that protocol.
fn ports_by_protocol(ports: &[NetworkPolicyPort]) -> BTreeMap<Option<String>, Vec<Port>> {
    let mut out: BTreeMap<Option<String>, Vec<Port>> = BTreeMap::new();
    if ports.is_empty() {
        out.insert(None, Vec::new());
        return out;
    }
    let mut all_ports: Vec<String> = Vec::new();
    for p in ports {
        let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
        let port = match (&p.port, p.end_port) {
            (None, _) => None,
            (Some(IntOrString::Int(n)), Some(e)) => Some(Port::Text(format!("{n}:{e}"))),
            (Some(IntOrString::Int(n)), None) => Some(Port::Number(*n)),
            (Some(IntOrString::String(s)), _) => Some(Port::Text(s.clone())),
        };
        match port {
            None => {
                // Every port of this protocol: wins over any listed port.
                all_ports.push(proto.clone());
                out.insert(Some(proto), Vec::new());
            }
            Some(port) if !all_ports.contains(&proto) => {
                out.entry(Some(proto)).or_default().push(port)
            }
            Some(_) => {}
        }
    }
    out
}

fn rules(peers: &[NetworkPolicyPeer], ports: &[NetworkPolicyPort], ingress: bool) -> Vec<Rule> {
    let peers: Vec<Option<&NetworkPolicyPeer>> = if peers.is_empty() {
        vec![None]
    } else {
        peers.iter().map(Some).collect()
    };
    let mut out = Vec::new();
    for (proto, ports) in ports_by_protocol(ports) {
        for peer in &peers {
            let peer = peer_entity(*peer);
            let (source, destination) = if ingress {
                let here = EntityRule {
                    ports: ports.clone(),
                    ..EntityRule::default()
                };
                (peer, here)
            } else {
                let there = EntityRule {
                    ports: ports.clone(),
                    ..peer
                };
                (EntityRule::default(), there)
            };
            out.push(Rule {
                action: RuleAction::Allow,
                protocol: proto.clone().map(Protocol::Name),
                source,
                destination,
                ..Rule::default()
            });
        }
    }
    out
}

/// The Calico NetworkPolicy Calico makes of a Kubernetes NetworkPolicy.
pub fn to_calico(np: &K8sNetworkPolicy) -> NetworkPolicy {
    let s = &np.spec;
    let ingress: Vec<Rule> = s
        .ingress
        .iter()
        .flat_map(|r| rules(&r.from, &r.ports, true))
        .collect();
    let egress: Vec<Rule> = s
        .egress
        .iter()
        .flat_map(|r| rules(&r.to, &r.ports, false))
        .collect();
    let mut types = Vec::new();
    if s.policy_types.iter().any(|t| t == "Ingress") {
        types.push(PolicyType::Ingress);
    }
    if s.policy_types.iter().any(|t| t == "Egress") {
        types.push(PolicyType::Egress);
    }
    if types.is_empty() {
        types.push(PolicyType::Ingress);
    }
    let mut p = Resource::new(
        format!("{K8S_POLICY_PREFIX}{}", np.name()),
        NetworkPolicySpec {
            tier: crate::resources::DEFAULT_TIER.into(),
            order: Some(K8S_POLICY_ORDER),
            ingress,
            egress,
            selector: selector_text(Some(&s.pod_selector), true),
            types,
            ..NetworkPolicySpec::default()
        },
    );
    p.metadata.namespace = np.metadata.namespace.clone();
    p.metadata.resource_version = np.metadata.resource_version.clone();
    p
}
