//! Policy rules in the shape of Calico's v3 `Rule` and `EntityRule` (shared by NetworkPolicy,
//! GlobalNetworkPolicy and Profile): the action, the protocol and ICMP matches, and the source
//! and destination entities (nets, selectors, namespaces, service accounts, ports), each with
//! its negated twin.

use super::Validator;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// What a rule does with a packet it matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RuleAction {
    #[default]
    Allow,
    Deny,
    /// Logs the packet and goes on to the next rule.
    Log,
    /// Skips the rest of this tier: the next tier decides (or the profiles after the last).
    Pass,
}

impl fmt::Display for RuleAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RuleAction::Allow => "Allow",
            RuleAction::Deny => "Deny",
            RuleAction::Log => "Log",
            RuleAction::Pass => "Pass",
        })
    }
}

/// A protocol as Calico writes it: a name (`TCP`, `UDP`, `ICMP`, `ICMPv6`, `SCTP`, `UDPLite`)
/// or a number 1-255.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Protocol {
    Number(u16),
    Name(String),
}

impl Protocol {
    /// The IP protocol number, if the name is one Calico knows (case-insensitive) or the
    /// number is in 1-255.
    pub fn number(&self) -> Option<u8> {
        match self {
            Protocol::Number(n) => u8::try_from(*n).ok().filter(|n| *n > 0),
            Protocol::Name(s) => match s.to_ascii_lowercase().as_str() {
                "tcp" => Some(6),
                "udp" => Some(17),
                "icmp" => Some(1),
                "icmpv6" => Some(58),
                "sctp" => Some(132),
                "udplite" => Some(136),
                n => n.parse::<u8>().ok().filter(|n| *n > 0),
            },
        }
    }

    /// Whether ports mean something for this protocol (TCP, UDP, SCTP, UDPLite).
    pub fn has_ports(&self) -> bool {
        matches!(self.number(), Some(6 | 17 | 132 | 136))
    }

    /// Whether this is ICMP or ICMPv6.
    pub fn is_icmp(&self) -> bool {
        matches!(self.number(), Some(1 | 58))
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Protocol::Number(n) => write!(f, "{n}"),
            Protocol::Name(s) => f.write_str(s),
        }
    }
}

/// A port as Calico writes it: a number, a range `"8080:8090"`, or a named port (`http`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Port {
    Number(u32),
    Text(String),
}

/// A port, read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PortMatch {
    /// `min..=max` (a single port has min == max).
    Range(u16, u16),
    /// A named port of the endpoint (`spec.ports[].name` of a WorkloadEndpoint).
    Named(String),
}

impl Port {
    /// Reads the port; `None` when it is not a port, a range or a name.
    pub fn parse(&self) -> Option<PortMatch> {
        match self {
            Port::Number(n) => u16::try_from(*n).ok().map(|p| PortMatch::Range(p, p)),
            Port::Text(s) => {
                if let Some((a, b)) = s.split_once(':') {
                    let (a, b) = (a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?);
                    (a <= b).then_some(PortMatch::Range(a, b))
                } else if let Ok(p) = s.trim().parse::<u16>() {
                    Some(PortMatch::Range(p, p))
                } else if is_port_name(s) {
                    Some(PortMatch::Named(s.clone()))
                } else {
                    None
                }
            }
        }
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Port::Number(n) => write!(f, "{n}"),
            Port::Text(s) => f.write_str(s),
        }
    }
}

/// Kubernetes port names: 1-15 lower-case letters, digits and '-', with at least one letter.
fn is_port_name(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && s.chars().any(|c| c.is_ascii_lowercase())
}

/// `icmp` / `notICMP`: a type, and a code within it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IcmpFields {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
}

/// `serviceAccounts`: pods running as one of `names` and/or whose service account matches
/// `selector`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceAccountMatch {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
}

/// `services`: a Kubernetes Service (accepted, not acted on: margay has no Service objects).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// One side of a rule: where packets come from (`source`) or go to (`destination`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EntityRule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nets: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_nets: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_selector: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_accounts: Option<ServiceAccountMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<ServiceMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<Port>,
}

impl EntityRule {
    /// Whether nothing is set (the entity matches everything).
    pub fn is_empty(&self) -> bool {
        self == &EntityRule::default()
    }
}

/// `http`: L7 matches (accepted, not acted on).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMatch {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<HttpPath>,
}

/// One HTTP path match: `exact` or `prefix`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpPath {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// `metadata` of a rule: annotations, kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleMetadata {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// One rule: every match set must hold for the rule to match; then its action applies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    pub action: RuleAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_version: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_protocol: Option<Protocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp: Option<IcmpFields>,
    #[serde(default, rename = "notICMP", skip_serializing_if = "Option::is_none")]
    pub not_icmp: Option<IcmpFields>,
    #[serde(default, skip_serializing_if = "EntityRule::is_empty")]
    pub source: EntityRule,
    #[serde(default, skip_serializing_if = "EntityRule::is_empty")]
    pub destination: EntityRule,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<RuleMetadata>,
}

/// Which traffic a policy applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PolicyType {
    Ingress,
    Egress,
}

/// Calico's default for `types` left out: Ingress, plus Egress when there are egress rules
/// (Egress alone when there are egress rules and no ingress rules).
pub fn default_types(ingress: &[Rule], egress: &[Rule]) -> Vec<PolicyType> {
    match (ingress.is_empty(), egress.is_empty()) {
        (_, true) => vec![PolicyType::Ingress],
        (true, false) => vec![PolicyType::Egress],
        (false, false) => vec![PolicyType::Ingress, PolicyType::Egress],
    }
}

/// Checks an optional selector field.
pub(crate) fn check_selector(v: &mut Validator, field: &str, s: &Option<String>) {
    if let Some(s) = s
        && !s.trim().is_empty()
    {
        v.selector(field, s);
    }
}

fn check_ports(v: &mut Validator, field: &str, ports: &[Port]) {
    for (i, p) in ports.iter().enumerate() {
        if p.parse().is_none() {
            v.problem(
                format!("{field}[{i}]"),
                format!("'{p}' is not a port, a range (80:90) or a port name"),
            );
        }
    }
}

fn check_entity(v: &mut Validator, field: &str, e: &EntityRule) {
    for (name, nets) in [("nets", &e.nets), ("notNets", &e.not_nets)] {
        for (i, n) in nets.iter().enumerate() {
            v.ip_or_cidr(&format!("{field}.{name}[{i}]"), n);
        }
    }
    check_selector(v, &format!("{field}.selector"), &e.selector);
    check_selector(v, &format!("{field}.notSelector"), &e.not_selector);
    check_selector(
        v,
        &format!("{field}.namespaceSelector"),
        &e.namespace_selector,
    );
    if let Some(sa) = &e.service_accounts {
        check_selector(
            v,
            &format!("{field}.serviceAccounts.selector"),
            &sa.selector,
        );
    }
    check_ports(v, &format!("{field}.ports"), &e.ports);
    check_ports(v, &format!("{field}.notPorts"), &e.not_ports);
}

fn check_protocol(v: &mut Validator, field: &str, p: &Option<Protocol>) {
    if let Some(p) = p
        && p.number().is_none()
    {
        v.problem(
            field,
            format!("'{p}' is not a protocol (TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or 1-255)"),
        );
    }
}

fn check_icmp(v: &mut Validator, field: &str, rule: &Rule, icmp: &Option<IcmpFields>) {
    let Some(i) = icmp else { return };
    if !rule.protocol.as_ref().is_some_and(Protocol::is_icmp) {
        v.problem(field, "needs protocol ICMP or ICMPv6");
    }
    if i.icmp_type.is_some_and(|t| t > 254) {
        v.problem(format!("{field}.type"), "must be 0-254");
    }
    if i.code.is_some_and(|c| c > 255) {
        v.problem(format!("{field}.code"), "must be 0-255");
    }
    if i.code.is_some() && i.icmp_type.is_none() {
        v.problem(format!("{field}.code"), "needs a type");
    }
}

/// Checks one rule at `field` (`spec.ingress[0]`), as Calico's validator does: ports need a
/// protocol with ports, ICMP matches need an ICMP protocol, `ipVersion` is 4 or 6.
pub(crate) fn check_rule(v: &mut Validator, field: &str, r: &Rule) {
    if r.ip_version.is_some_and(|n| n != 4 && n != 6) {
        v.problem(format!("{field}.ipVersion"), "must be 4 or 6");
    }
    check_protocol(v, &format!("{field}.protocol"), &r.protocol);
    check_protocol(v, &format!("{field}.notProtocol"), &r.not_protocol);
    check_icmp(v, &format!("{field}.icmp"), r, &r.icmp);
    check_icmp(v, &format!("{field}.notICMP"), r, &r.not_icmp);
    for (side, e) in [("source", &r.source), ("destination", &r.destination)] {
        check_entity(v, &format!("{field}.{side}"), e);
        let has_ports = !e.ports.is_empty() || !e.not_ports.is_empty();
        if has_ports && !r.protocol.as_ref().is_some_and(Protocol::has_ports) {
            v.problem(
                format!("{field}.{side}.ports"),
                "need protocol TCP, UDP, SCTP or UDPLite",
            );
        }
    }
}

/// Checks a list of rules (`spec.ingress`).
pub(crate) fn check_rules(v: &mut Validator, field: &str, rules: &[Rule]) {
    for (i, r) in rules.iter().enumerate() {
        check_rule(v, &format!("{field}[{i}]"), r);
    }
}
