//! The compiled form of network policy: what felix's policy table must enforce, in terms of
//! interfaces, named sets and ordered rules, with no trace of the resource shapes.
//!
//! The model (tiers, policies, selectors, profiles) is reduced to this by the compiler; the
//! renderer turns it into nftables. An endpoint is known by its host-side interface; what it may
//! send or receive is an ordered list of tiers, each an ordered list of policy chains. Selector
//! and `nets` matches name address sets, named ports name (address, protocol, port) sets, so a
//! new pod or a label change edits set elements and map entries, never a policy's rules.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::nat::Family;

/// The direction a policy's rules apply in, seen from the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// Traffic to the endpoint (Calico's `ingress`).
    Ingress,
    /// Traffic from the endpoint (Calico's `egress`).
    Egress,
}

impl Direction {
    pub const BOTH: [Direction; 2] = [Direction::Ingress, Direction::Egress];

    /// `in` / `out`, as chain names use it.
    pub fn short(self) -> &'static str {
        match self {
            Direction::Ingress => "in",
            Direction::Egress => "out",
        }
    }
}

/// A rule's action (Calico's `Allow`, `Deny`, `Pass`, `Log`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    Allow,
    Deny,
    /// Skip the rest of this tier; the next tier decides.
    Pass,
    /// Log the packet and go on with the next rule.
    Log,
}

/// What happens at the end of a tier whose policies selected the endpoint and did not decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum TierEnd {
    #[default]
    Deny,
    Pass,
}

/// What felix does with traffic from a workload to the host itself after its egress policy
/// allowed it (FelixConfiguration `defaultEndpointToHostAction`; Calico's default is `Drop`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EndpointToHost {
    #[default]
    Drop,
    /// Accept (Calico's `Accept` and `Return`: the host's own input rules decide the rest).
    Accept,
}

/// An inclusive port range; a single port has `first == last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn one(port: u16) -> PortRange {
        PortRange {
            first: port,
            last: port,
        }
    }
}

/// An ICMP match: the type and code when given (neither: any ICMP packet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Icmp {
    pub kind: Option<u8>,
    pub code: Option<u8>,
}

/// One side of a rule (`source` or `destination`): every listed match must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntityMatch {
    /// Address sets the address must be in (a selector's endpoints, `nets`).
    pub sets: Vec<SetId>,
    /// Address sets the address must not be in (`notSelector`, `notNets`).
    pub not_sets: Vec<SetId>,
    /// Ports: the port is in one of these ranges, or the (address, protocol, port) is in
    /// `named_ports`. Both empty: any port.
    pub ports: Vec<PortRange>,
    pub named_ports: Option<SetId>,
    /// The port is in none of these ranges and not in `not_named_ports`.
    pub not_ports: Vec<PortRange>,
    pub not_named_ports: Option<SetId>,
}

impl EntityMatch {
    fn needs_family(&self) -> bool {
        !self.sets.is_empty()
            || !self.not_sets.is_empty()
            || self.named_ports.is_some()
            || self.not_named_ports.is_some()
    }
}

/// One compiled rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    pub action: Action,
    pub ip_version: Option<Family>,
    /// IP protocol number (`protocol`), and `notProtocol`.
    pub protocol: Option<u8>,
    pub not_protocol: Option<u8>,
    pub icmp: Option<Icmp>,
    pub not_icmp: Option<Icmp>,
    pub source: EntityMatch,
    pub destination: EntityMatch,
}

impl Rule {
    /// A rule that matches everything, with `action`.
    pub fn any(action: Action) -> Rule {
        Rule {
            action,
            ip_version: None,
            protocol: None,
            not_protocol: None,
            icmp: None,
            not_icmp: None,
            source: EntityMatch::default(),
            destination: EntityMatch::default(),
        }
    }

    /// Whether the rule has to be written once per address family (it names addresses or ICMP).
    pub fn needs_family(&self) -> bool {
        self.ip_version.is_some()
            || self.icmp.is_some()
            || self.not_icmp.is_some()
            || self.source.needs_family()
            || self.destination.needs_family()
    }
}

/// A policy's rules, by direction; `None` when its `types` leave the direction out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyRules {
    pub ingress: Option<Vec<Rule>>,
    pub egress: Option<Vec<Rule>>,
}

impl PolicyRules {
    pub fn rules(&self, dir: Direction) -> Option<&[Rule]> {
        match dir {
            Direction::Ingress => self.ingress.as_deref(),
            Direction::Egress => self.egress.as_deref(),
        }
    }
}

/// The name felix gives a policy: unique across kinds and namespaces (e.g. `default/knp.default.web`
/// for a namespaced one, `security.block-ssh` for a global one).
pub type PolicyKey = String;

/// A tier as it applies to one endpoint in one direction: the policies of the tier that select
/// the endpoint and have the direction in their `types`, in order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TierSeq {
    pub tier: String,
    pub policies: Vec<PolicyKey>,
    pub end: TierEnd,
}

/// What applies to one local endpoint. An empty list: no policy selects it in that direction,
/// and its traffic is allowed (the namespace profile's allow).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointPolicy {
    pub ingress: Vec<TierSeq>,
    pub egress: Vec<TierSeq>,
}

impl EndpointPolicy {
    pub fn tiers(&self, dir: Direction) -> &[TierSeq] {
        match dir {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

/// A named set, by the key the compiler gives it (the selector text, the nets, ...). The renderer
/// turns it into one nftables set per family.
pub type SetId = String;

/// One element of a named-port set: an endpoint address, the protocol and the port the name
/// resolves to on that endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NamedPortMember {
    pub addr: IpAddr,
    pub protocol: u8,
    pub port: u16,
}

/// Everything felix's policy table must hold on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyIr {
    /// The families rules are written for (those the cluster has pools in).
    pub families: Vec<Family>,
    pub endpoint_to_host: EndpointToHost,
    /// Every policy that applies to a local endpoint.
    pub policies: BTreeMap<PolicyKey, PolicyRules>,
    /// Local endpoints by host-side interface.
    pub endpoints: BTreeMap<String, EndpointPolicy>,
    pub addr_sets: BTreeMap<SetId, BTreeSet<IpNet>>,
    pub port_sets: BTreeMap<SetId, BTreeSet<NamedPortMember>>,
    /// FelixConfiguration `interfacePrefix`: interfaces starting with one are workloads'.
    pub workload_prefixes: Vec<String>,
}

impl Default for PolicyIr {
    fn default() -> Self {
        PolicyIr {
            families: vec![Family::V4],
            endpoint_to_host: EndpointToHost::default(),
            policies: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            addr_sets: BTreeMap::new(),
            port_sets: BTreeMap::new(),
            workload_prefixes: vec![crate::settings::DEFAULT_INTERFACE_PREFIX.to_string()],
        }
    }
}
