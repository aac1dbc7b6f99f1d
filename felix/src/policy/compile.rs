//! The policy model ([`PolicyModel`], shared with `margayctl policy explain`) → this node's
//! [`PolicyIr`]: the tiers and policies that apply to each local endpoint, the profiles as a
//! last tier, and the named sets their rules match on.
//!
//! Selectors become address sets holding the addresses of every endpoint in the cluster the
//! selector matches; `nets` become address sets of their prefixes; named ports become sets of
//! (address, protocol, port) of every endpoint that has a port of that name. The evaluator in
//! the model and these sets say the same thing: a rule's selector matches a peer when the peer
//! is an endpoint with matching labels, i.e. when its address is in the set.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use margay_datastore::policy::model::ProfileRules;
use margay_datastore::policy::{CompiledPolicy, CompiledRule, Endpoint, Entity, PolicyModel};
use margay_datastore::resources::{PolicyType, PortMatch, RuleAction, TierDefaultAction};
use margay_datastore::selector::Selector;

use super::ir::{
    Action, Direction, EndpointPolicy, EndpointToHost, EntityMatch, Icmp, NamedPortMember,
    PolicyIr, PortRange, Rule, SetId, TierEnd, TierSeq,
};
use crate::nat::Family;

/// The pseudo-tier the profiles form after the last tier.
pub const PROFILES_TIER: &str = "__profiles";

const PROFILE_KEY_PREFIX: &str = "profile:";

/// The policy key of profile `name` (its chain is a policy chain like any other).
pub fn profile_key(name: &str) -> String {
    format!("{PROFILE_KEY_PREFIX}{name}")
}

fn dir_of(t: PolicyType) -> Direction {
    match t {
        PolicyType::Ingress => Direction::Ingress,
        PolicyType::Egress => Direction::Egress,
    }
}

/// Builds the IR for the endpoints of `node` in one pass ([`super::live::LivePolicy`] keeps
/// the same IR up to date change by change; the two agree, tested).
pub fn compile(model: &PolicyModel, node: &str) -> PolicyIr {
    let mut ir = PolicyIr {
        endpoint_to_host: endpoint_to_host(model),
        families: families(model.endpoints.iter()),
        ..PolicyIr::default()
    };
    let by_key: BTreeMap<String, &CompiledPolicy> = model
        .policies
        .iter()
        .map(|p| (p.id.to_string(), p))
        .collect();
    let mut rc = RuleCompiler::default();
    for ep in model.endpoints.iter().filter(|e| is_local(e, node)) {
        let policy = endpoint_policy(model, ep);
        for (key, dir) in uses(&policy) {
            let entry = ir.policies.entry(key.clone()).or_default();
            if entry.rules(dir).is_some() {
                continue;
            }
            let rules = match rules_source(model, &by_key, &key) {
                Some(src) => rc.rules_of(src, dir),
                None => Vec::new(),
            };
            match dir {
                Direction::Ingress => entry.ingress = Some(rules),
                Direction::Egress => entry.egress = Some(rules),
            }
        }
        ir.endpoints.insert(ep.interface.clone(), policy);
    }
    for (id, source) in rc.sets {
        match &source {
            SetSource::NamedPorts(names) => {
                let members = model
                    .endpoints
                    .iter()
                    .flat_map(|ep| port_members(names, ep))
                    .collect();
                ir.port_sets.insert(id, members);
            }
            SetSource::Nets(nets) => {
                ir.addr_sets.insert(id, nets.iter().copied().collect());
            }
            SetSource::Selector(s) => {
                let members = model
                    .endpoints
                    .iter()
                    .flat_map(|ep| selector_members(s, ep))
                    .collect();
                ir.addr_sets.insert(id, members);
            }
        }
    }
    ir
}

/// Whether `ep` is one of `node`'s workloads with a host-side interface (what gets policy).
pub fn is_local(ep: &Endpoint, node: &str) -> bool {
    ep.node == node && !ep.interface.is_empty()
}

/// FelixConfiguration `defaultEndpointToHostAction`, as the data path enforces it.
pub fn endpoint_to_host(model: &PolicyModel) -> EndpointToHost {
    match model.config.default_endpoint_to_host_action {
        margay_datastore::policy::EndpointToHostAction::Drop => EndpointToHost::Drop,
        _ => EndpointToHost::Accept,
    }
}

/// The families rules are written for: IPv4, and IPv6 when an endpoint has an IPv6 address.
pub fn families<'e>(mut endpoints: impl Iterator<Item = &'e Endpoint>) -> Vec<Family> {
    if endpoints.any(|e| e.addresses.iter().any(|a| a.is_ipv6())) {
        vec![Family::V4, Family::V6]
    } else {
        vec![Family::V4]
    }
}

/// What the end of a tier does, from its `defaultAction`.
pub fn tier_end(action: TierDefaultAction) -> TierEnd {
    match action {
        TierDefaultAction::Deny => TierEnd::Deny,
        TierDefaultAction::Pass => TierEnd::Pass,
    }
}

/// The tiers and policies (keys only) that apply to `ep` in each direction, the profiles as a
/// last tier: what decides the profiles' part is what the tiers leave (no tier applies, or the
/// last passed); nothing matching in them denies.
pub fn endpoint_policy(model: &PolicyModel, ep: &Endpoint) -> EndpointPolicy {
    let mut policy = EndpointPolicy::default();
    for pt in [PolicyType::Ingress, PolicyType::Egress] {
        let mut tiers: Vec<TierSeq> = model
            .tiers_for(ep, pt)
            .iter()
            .map(|applied| TierSeq {
                tier: applied.tier.name.clone(),
                policies: applied.policies.iter().map(|p| p.id.to_string()).collect(),
                end: tier_end(applied.tier.default_action),
            })
            .collect();
        let profiles = ep
            .profiles
            .iter()
            .filter(|name| model.profiles.contains_key(*name))
            .map(|name| profile_key(name))
            .collect();
        tiers.push(TierSeq {
            tier: PROFILES_TIER.into(),
            policies: profiles,
            end: TierEnd::Deny,
        });
        match dir_of(pt) {
            Direction::Ingress => policy.ingress = tiers,
            Direction::Egress => policy.egress = tiers,
        }
    }
    policy
}

/// Every (policy key, direction) an endpoint's policy names: the policy chains it needs.
pub fn uses(policy: &EndpointPolicy) -> BTreeSet<(String, Direction)> {
    Direction::BOTH
        .into_iter()
        .flat_map(|dir| {
            policy
                .tiers(dir)
                .iter()
                .flat_map(move |t| t.policies.iter().map(move |k| (k.clone(), dir)))
        })
        .collect()
}

/// Where a policy key's rules come from.
#[derive(Debug, Clone, Copy)]
pub enum RulesSource<'m> {
    Policy(&'m CompiledPolicy),
    Profile(&'m ProfileRules),
}

/// The rules behind policy key `key` (a policy's id, or [`profile_key`] of a profile).
pub fn rules_source<'m>(
    model: &'m PolicyModel,
    policies: &BTreeMap<String, &'m CompiledPolicy>,
    key: &str,
) -> Option<RulesSource<'m>> {
    match key.strip_prefix(PROFILE_KEY_PREFIX) {
        Some(name) => model.profiles.get(name).map(RulesSource::Profile),
        None => policies.get(key).map(|p| RulesSource::Policy(p)),
    }
}

/// What a named set holds, as the rules that name it say.
#[derive(Debug, Clone, PartialEq)]
pub enum SetSource {
    /// The prefixes of `nets` / `notNets`.
    Nets(Vec<IpNet>),
    /// The addresses of the endpoints a selector matches.
    Selector(Selector),
    /// (address, protocol, port) of every endpoint's ports with one of these names.
    NamedPorts(Vec<String>),
}

/// The addresses `ep` puts in a selector's set.
pub fn selector_members(s: &Selector, ep: &Endpoint) -> Vec<IpNet> {
    if s.matches(&ep.labels) {
        ep.addresses.iter().map(|a| IpNet::from(*a)).collect()
    } else {
        Vec::new()
    }
}

/// The elements `ep` puts in a named-port set for `names`.
pub fn port_members(names: &[String], ep: &Endpoint) -> Vec<NamedPortMember> {
    let mut out = Vec::new();
    for p in ep.ports.iter().filter(|p| names.contains(&p.name)) {
        let Some(protocol) = p.protocol.number() else {
            continue;
        };
        for addr in &ep.addresses {
            out.push(NamedPortMember {
                addr: *addr,
                protocol,
                port: p.port,
            });
        }
    }
    out
}

/// Compiles rules to the IR's, collecting the sets they name.
#[derive(Debug, Default)]
pub struct RuleCompiler {
    pub sets: BTreeMap<SetId, SetSource>,
}

impl RuleCompiler {
    /// The IR rules of `src` for `dir` (a policy without the direction in its `types` has none).
    pub fn rules_of(&mut self, src: RulesSource<'_>, dir: Direction) -> Vec<Rule> {
        let pt = match dir {
            Direction::Ingress => PolicyType::Ingress,
            Direction::Egress => PolicyType::Egress,
        };
        match src {
            RulesSource::Policy(p) => self.rules(p.rules(pt).unwrap_or_default(), false),
            RulesSource::Profile(p) => match pt {
                PolicyType::Ingress => self.rules(&p.ingress, true),
                PolicyType::Egress => self.rules(&p.egress, true),
            },
        }
    }

    fn rules(&mut self, rules: &[CompiledRule], profile: bool) -> Vec<Rule> {
        rules
            .iter()
            // In a profile, Pass means nothing (there is no next tier); the model skips it.
            .filter(|r| !(profile && r.action == RuleAction::Pass))
            .map(|r| self.rule(r))
            .collect()
    }

    fn rule(&mut self, r: &CompiledRule) -> Rule {
        let icmp = |i: &margay_datastore::policy::compile::Icmp| Icmp {
            kind: i.icmp_type,
            code: i.code,
        };
        Rule {
            action: match r.action {
                RuleAction::Allow => Action::Allow,
                RuleAction::Deny => Action::Deny,
                RuleAction::Pass => Action::Pass,
                RuleAction::Log => Action::Log,
            },
            ip_version: match r.ip_version {
                Some(4) => Some(Family::V4),
                Some(6) => Some(Family::V6),
                _ => None,
            },
            protocol: r.protocol,
            not_protocol: r.not_protocol,
            icmp: r.icmp.as_ref().map(icmp),
            not_icmp: r.not_icmp.as_ref().map(icmp),
            source: self.entity(&r.source),
            destination: self.entity(&r.destination),
        }
    }

    fn entity(&mut self, e: &Entity) -> EntityMatch {
        let mut m = EntityMatch::default();
        if !e.nets.is_empty() {
            m.sets.push(self.nets_set(&e.nets));
        }
        if let Some(s) = &e.selector {
            m.sets.push(self.selector_set(s));
        }
        if !e.not_nets.is_empty() {
            m.not_sets.push(self.nets_set(&e.not_nets));
        }
        if let Some(s) = &e.not_selector {
            m.not_sets.push(self.selector_set(s));
        }
        let (ranges, names) = split_ports(&e.ports);
        m.ports = ranges;
        m.named_ports = (!names.is_empty()).then(|| self.port_set(names));
        let (ranges, names) = split_ports(&e.not_ports);
        m.not_ports = ranges;
        m.not_named_ports = (!names.is_empty()).then(|| self.port_set(names));
        m
    }

    fn nets_set(&mut self, nets: &[IpNet]) -> SetId {
        let mut sorted: Vec<String> = nets.iter().map(IpNet::to_string).collect();
        sorted.sort();
        let id = format!("nets:{}", sorted.join(","));
        self.sets
            .entry(id.clone())
            .or_insert_with(|| SetSource::Nets(nets.to_vec()));
        id
    }

    fn selector_set(&mut self, s: &Selector) -> SetId {
        let id = format!("sel:{s}");
        self.sets
            .entry(id.clone())
            .or_insert_with(|| SetSource::Selector(s.clone()));
        id
    }

    fn port_set(&mut self, names: Vec<String>) -> SetId {
        let id = format!("ports:{}", names.join(","));
        self.sets
            .entry(id.clone())
            .or_insert(SetSource::NamedPorts(names));
        id
    }
}

fn split_ports(ports: &[PortMatch]) -> (Vec<PortRange>, Vec<String>) {
    let mut ranges = Vec::new();
    let mut names = Vec::new();
    for p in ports {
        match p {
            PortMatch::Range(a, b) => ranges.push(PortRange {
                first: *a,
                last: *b,
            }),
            PortMatch::Named(n) => names.push(n.clone()),
        }
    }
    names.sort();
    names.dedup();
    (ranges, names)
}
