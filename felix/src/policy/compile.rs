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
use margay_datastore::policy::{CompiledRule, Entity, PolicyModel};
use margay_datastore::resources::{PolicyType, PortMatch, RuleAction, TierDefaultAction};

use super::ir::{
    Action, Direction, EndpointPolicy, EndpointToHost, EntityMatch, Icmp, PolicyIr, PortRange,
    Rule, SetId, TierEnd, TierSeq,
};
use crate::nat::Family;

/// The pseudo-tier the profiles form after the last tier.
pub const PROFILES_TIER: &str = "__profiles";

/// The policy key of profile `name` (its chain is a policy chain like any other).
pub fn profile_key(name: &str) -> String {
    format!("profile:{name}")
}

fn dir_of(t: PolicyType) -> Direction {
    match t {
        PolicyType::Ingress => Direction::Ingress,
        PolicyType::Egress => Direction::Egress,
    }
}

/// Builds the IR for the endpoints of `node`.
pub fn compile(model: &PolicyModel, node: &str) -> PolicyIr {
    let mut b = Builder {
        model,
        addr_sets: BTreeMap::new(),
        port_sets: BTreeMap::new(),
    };
    let mut ir = PolicyIr {
        endpoint_to_host: match model.config.default_endpoint_to_host_action {
            margay_datastore::policy::EndpointToHostAction::Drop => EndpointToHost::Drop,
            _ => EndpointToHost::Accept,
        },
        ..PolicyIr::default()
    };
    let mut families = BTreeSet::from([Family::V4]);
    if model
        .endpoints
        .iter()
        .any(|e| e.addresses.iter().any(|a| a.is_ipv6()))
    {
        families.insert(Family::V6);
    }
    ir.families = families.into_iter().collect();
    for ep in model
        .endpoints
        .iter()
        .filter(|e| e.node == node && !e.interface.is_empty())
    {
        let mut policy = EndpointPolicy::default();
        for pt in [PolicyType::Ingress, PolicyType::Egress] {
            let dir = dir_of(pt);
            let mut tiers: Vec<TierSeq> = model
                .tiers_for(ep, pt)
                .iter()
                .map(|applied| TierSeq {
                    tier: applied.tier.name.clone(),
                    policies: applied.policies.iter().map(|p| p.id.to_string()).collect(),
                    end: match applied.tier.default_action {
                        TierDefaultAction::Deny => TierEnd::Deny,
                        TierDefaultAction::Pass => TierEnd::Pass,
                    },
                })
                .collect();
            for applied in model.tiers_for(ep, pt) {
                for p in applied.policies {
                    let key = p.id.to_string();
                    let entry = ir.policies.entry(key).or_default();
                    let rules = b.rules(p.rules(pt).unwrap_or_default(), false);
                    match dir {
                        Direction::Ingress => entry.ingress = Some(rules),
                        Direction::Egress => entry.egress = Some(rules),
                    }
                }
            }
            // The profiles decide what the tiers leave (no tier applies, or the last passed);
            // nothing matching in them denies.
            let mut profiles = Vec::new();
            for name in &ep.profiles {
                let Some(p) = model.profiles.get(name) else {
                    continue;
                };
                let key = profile_key(name);
                let rules = match pt {
                    PolicyType::Ingress => &p.ingress,
                    PolicyType::Egress => &p.egress,
                };
                let compiled = b.rules(rules, true);
                let entry = ir.policies.entry(key.clone()).or_default();
                match dir {
                    Direction::Ingress => entry.ingress = Some(compiled),
                    Direction::Egress => entry.egress = Some(compiled),
                }
                profiles.push(key);
            }
            tiers.push(TierSeq {
                tier: PROFILES_TIER.into(),
                policies: profiles,
                end: TierEnd::Deny,
            });
            match dir {
                Direction::Ingress => policy.ingress = tiers,
                Direction::Egress => policy.egress = tiers,
            }
        }
        ir.endpoints.insert(ep.interface.clone(), policy);
    }
    ir.addr_sets = b.addr_sets;
    ir.port_sets = b.port_sets;
    ir
}

struct Builder<'m> {
    model: &'m PolicyModel,
    addr_sets: BTreeMap<SetId, BTreeSet<IpNet>>,
    port_sets: BTreeMap<SetId, BTreeSet<super::ir::NamedPortMember>>,
}

impl Builder<'_> {
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
        m.named_ports = (!names.is_empty()).then(|| self.port_set(&names));
        let (ranges, names) = split_ports(&e.not_ports);
        m.not_ports = ranges;
        m.not_named_ports = (!names.is_empty()).then(|| self.port_set(&names));
        m
    }

    fn nets_set(&mut self, nets: &[IpNet]) -> SetId {
        let mut sorted: Vec<String> = nets.iter().map(IpNet::to_string).collect();
        sorted.sort();
        let id = format!("nets:{}", sorted.join(","));
        self.addr_sets
            .entry(id.clone())
            .or_insert_with(|| nets.iter().copied().collect());
        id
    }

    fn selector_set(&mut self, s: &margay_datastore::selector::Selector) -> SetId {
        let id = format!("sel:{s}");
        if !self.addr_sets.contains_key(&id) {
            let members = self
                .model
                .endpoints
                .iter()
                .filter(|ep| s.matches(&ep.labels))
                .flat_map(|ep| ep.addresses.iter().map(|a| IpNet::from(*a)))
                .collect();
            self.addr_sets.insert(id.clone(), members);
        }
        id
    }

    fn port_set(&mut self, names: &[String]) -> SetId {
        let id = format!("ports:{}", names.join(","));
        if !self.port_sets.contains_key(&id) {
            let mut members = BTreeSet::new();
            for ep in &self.model.endpoints {
                for p in ep.ports.iter().filter(|p| names.contains(&p.name)) {
                    let Some(protocol) = p.protocol.number() else {
                        continue;
                    };
                    for addr in &ep.addresses {
                        members.insert(super::ir::NamedPortMember {
                            addr: *addr,
                            protocol,
                            port: p.port,
                        });
                    }
                }
            }
            self.port_sets.insert(id.clone(), members);
        }
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
