//! The policy model of a cluster: tiers in order, every policy read, profiles, endpoints and
//! node addresses; which tiers and policies apply to an endpoint, and the verdict for a flow
//! with what decided it.
//!
//! The order of evaluation for one endpoint and direction (docs/policy.md):
//! 1. tiers by `order` (none = last), then name; a tier counts only if one of its policies
//!    selects the endpoint for this direction;
//! 2. in a tier, policies by `order` (none = last), then name (`namespace/name` for
//!    namespaced ones); in a policy, rules in order: the first Allow or Deny decides, Log
//!    goes on, Pass leaves the tier for the next one;
//! 3. reaching the end of a counted tier denies (or passes, with the tier's
//!    `defaultAction: Pass`);
//! 4. when no tier counted, or the last counted one passed, the endpoint's profiles decide
//!    (the first Allow or Deny); nothing matched in them denies.
//!
//! A flow is allowed when the source endpoint's egress allows it (if the source is an
//! endpoint) and the destination endpoint's ingress allows it (if the destination is one).
//! Two exceptions, as in Calico: a node's own traffic to its workloads is allowed (kubelet
//! probes), and a workload's traffic to its own node, once its egress allows it, meets
//! `defaultEndpointToHostAction` (Drop, Calico's default; Accept or Return allow).

use super::compile::{
    CompileError, CompiledPolicy, CompiledRule, PolicyId, PolicyKind, compile_global_policy,
    compile_network_policy, compile_profile_rules,
};
use super::endpoint::Endpoint;
use super::k8s;
use super::matching::{Flow, FlowEnd, rule_matches};
use crate::resources::{
    DEFAULT_TIER, DEFAULT_TIER_ORDER, GlobalNetworkPolicy, K8sNetworkPolicy,
    NAMESPACE_PROFILE_PREFIX, NetworkPolicy, PolicyType, Profile, RuleAction, Tier,
    TierDefaultAction, WorkloadEndpoint,
};
use serde::Serialize;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// FelixConfiguration's `defaultEndpointToHostAction`: what happens to a workload's traffic
/// to its own node after the workload's egress policy allowed it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub enum EndpointToHostAction {
    /// Calico's default.
    #[default]
    Drop,
    /// Host endpoint policy would decide; margay has none, so the traffic passes.
    Return,
    Accept,
}

impl EndpointToHostAction {
    /// Reads Calico's value (`Drop`, `Return`, `Accept`; case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "drop" => Some(Self::Drop),
            "return" => Some(Self::Return),
            "accept" => Some(Self::Accept),
            _ => None,
        }
    }
}

/// The FelixConfiguration settings policy evaluation reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PolicyConfig {
    pub default_endpoint_to_host_action: EndpointToHostAction,
}

/// Everything the model is built from, as stored.
#[derive(Debug, Clone, Default)]
pub struct PolicyResources {
    pub tiers: Vec<Tier>,
    pub network_policies: Vec<NetworkPolicy>,
    pub global_network_policies: Vec<GlobalNetworkPolicy>,
    pub k8s_network_policies: Vec<K8sNetworkPolicy>,
    pub profiles: Vec<Profile>,
    pub endpoints: Vec<WorkloadEndpoint>,
    /// Node name and one of its addresses (the BGP address), for host traffic.
    pub hosts: Vec<(String, IpAddr)>,
    pub config: PolicyConfig,
}

/// A tier, read.
#[derive(Debug, Clone, PartialEq)]
pub struct TierInfo {
    pub name: String,
    pub order: Option<f64>,
    pub default_action: TierDefaultAction,
}

/// A profile's rules (None: the profile lists no rules for the direction).
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileRules {
    pub ingress: Vec<CompiledRule>,
    pub egress: Vec<CompiledRule>,
}

/// Policies that apply to an endpoint in one tier, in order.
#[derive(Debug, Clone)]
pub struct AppliedTier<'m> {
    pub tier: &'m TierInfo,
    pub policies: Vec<&'m CompiledPolicy>,
}

/// The model: built once from the resources, asked many times.
#[derive(Debug, Clone, Default)]
pub struct PolicyModel {
    /// Every tier, in evaluation order.
    pub tiers: Vec<TierInfo>,
    /// Every policy, in evaluation order (tier, then order, then name).
    pub policies: Vec<CompiledPolicy>,
    pub profiles: BTreeMap<String, ProfileRules>,
    pub endpoints: Vec<Endpoint>,
    pub hosts: Vec<(String, IpAddr)>,
    pub config: PolicyConfig,
}

/// `None` (no order) sorts after every number, as Calico's "infinite" order.
fn by_order(a: Option<f64>, b: Option<f64>) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => a.total_cmp(&b),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

/// The evaluation order of two policies, each given with its tier's place in the tier order:
/// tier, then `order` (none last), then Calico's sort key (`namespace/name`, or `name`).
pub fn policy_order(a: (usize, &CompiledPolicy), b: (usize, &CompiledPolicy)) -> Ordering {
    a.0.cmp(&b.0)
        .then_with(|| by_order(a.1.order, b.1.order))
        .then_with(|| sort_key(&a.1.id).cmp(sort_key(&b.1.id)))
}

/// A policy id's sort key, byte by byte, without building the string.
fn sort_key(id: &PolicyId) -> impl Iterator<Item = u8> + '_ {
    let ns = id
        .namespace
        .iter()
        .flat_map(|n| n.bytes().chain(std::iter::once(b'/')));
    ns.chain(id.name.bytes())
}

/// The rules of a `kns.` profile that lists none: allow everything, as the profile Calico
/// makes of a Namespace.
fn allow_all() -> Vec<crate::resources::Rule> {
    vec![crate::resources::Rule::default()]
}

/// A tier as read (the `default` tier always at Calico's order for it).
pub fn tier_info(t: &Tier) -> TierInfo {
    TierInfo {
        name: t.name().to_string(),
        order: if t.name() == DEFAULT_TIER {
            Some(DEFAULT_TIER_ORDER)
        } else {
            t.spec.order
        },
        default_action: t.spec.default_action.unwrap_or_default(),
    }
}

/// A Kubernetes NetworkPolicy read as Calico reads it (`knp.default.<name>`).
pub fn compile_k8s_policy(p: &K8sNetworkPolicy) -> Result<CompiledPolicy, CompileError> {
    compile_network_policy(&k8s::to_calico(p), PolicyKind::KubernetesNetworkPolicy)
}

/// Puts tiers and policies in evaluation order: adds the `default` tier when it is not stored
/// and a tier of its own (placed last) for a policy naming one that does not exist
/// (`margayctl` refuses to write such a policy, as Calico does); sorts the tiers by order then
/// name, the policies by tier, order, then name.
pub fn order(
    mut tiers: Vec<TierInfo>,
    policies: Vec<CompiledPolicy>,
) -> (Vec<TierInfo>, Vec<CompiledPolicy>) {
    if !tiers.iter().any(|t| t.name == DEFAULT_TIER) {
        tiers.push(TierInfo {
            name: DEFAULT_TIER.into(),
            order: Some(DEFAULT_TIER_ORDER),
            default_action: TierDefaultAction::Deny,
        });
    }
    for p in &policies {
        if !tiers.iter().any(|t| t.name == p.tier) {
            tiers.push(TierInfo {
                name: p.tier.clone(),
                order: None,
                default_action: TierDefaultAction::Deny,
            });
        }
    }
    tiers.sort_by(|a, b| by_order(a.order, b.order).then_with(|| a.name.cmp(&b.name)));
    let pos: BTreeMap<&str, usize> = tiers
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    let tier_at = |p: &CompiledPolicy| pos.get(p.tier.as_str()).copied().unwrap_or(0);
    let mut keyed: Vec<(usize, usize)> = policies
        .iter()
        .enumerate()
        .map(|(i, p)| (tier_at(p), i))
        .collect();
    keyed.sort_by(|a, b| policy_order((a.0, &policies[a.1]), (b.0, &policies[b.1])));
    let mut slots: Vec<Option<CompiledPolicy>> = policies.into_iter().map(Some).collect();
    let sorted = keyed.iter().filter_map(|k| slots[k.1].take()).collect();
    (tiers, sorted)
}

/// A profile's rules: the stored ones, or for a `kns.` profile that lists none, allow all (as
/// the profile Calico makes of a Namespace).
pub fn profile_rules(name: &str, stored: Option<&Profile>) -> Result<ProfileRules, CompileError> {
    let spec = stored.map(|p| p.spec.clone()).unwrap_or_default();
    let implicit = name.starts_with(NAMESPACE_PROFILE_PREFIX);
    let rules = |given: Option<Vec<crate::resources::Rule>>| {
        given.unwrap_or_else(|| if implicit { allow_all() } else { Vec::new() })
    };
    let ingress = compile_profile_rules(name, "spec.ingress", &rules(spec.ingress))?;
    let egress = compile_profile_rules(name, "spec.egress", &rules(spec.egress))?;
    Ok(ProfileRules { ingress, egress })
}

impl PolicyModel {
    /// Builds the model. Policies whose selectors do not parse (never written through
    /// validation) are left out and returned as errors.
    pub fn build(res: &PolicyResources) -> (PolicyModel, Vec<CompileError>) {
        let mut errors = Vec::new();
        let tiers: Vec<TierInfo> = res.tiers.iter().map(tier_info).collect();
        let mut policies = Vec::new();
        let mut keep = |r: Result<CompiledPolicy, CompileError>| match r {
            Ok(p) => policies.push(p),
            Err(e) => errors.push(e),
        };
        for p in &res.network_policies {
            keep(compile_network_policy(p, PolicyKind::NetworkPolicy));
        }
        for p in &res.k8s_network_policies {
            keep(compile_k8s_policy(p));
        }
        for p in &res.global_network_policies {
            keep(compile_global_policy(p));
        }
        let (tiers, policies) = order(tiers, policies);
        let stored: BTreeMap<String, Profile> = res
            .profiles
            .iter()
            .map(|p| (p.name().to_string(), p.clone()))
            .collect();
        let endpoints: Vec<Endpoint> = res
            .endpoints
            .iter()
            .map(|w| Endpoint::new(w, &stored))
            .collect();
        let mut profiles = BTreeMap::new();
        let mut names: Vec<String> = stored.keys().cloned().collect();
        names.extend(endpoints.iter().flat_map(|e| e.profiles.iter().cloned()));
        for name in names {
            if profiles.contains_key(&name) {
                continue;
            }
            match profile_rules(&name, stored.get(&name)) {
                Ok(p) => {
                    profiles.insert(name, p);
                }
                Err(e) => errors.push(e),
            }
        }
        let model = PolicyModel {
            tiers,
            policies,
            profiles,
            endpoints,
            hosts: res.hosts.clone(),
            config: res.config,
        };
        (model, errors)
    }

    /// The tiers that count for `ep` in direction `dir`, each with the policies of it that
    /// apply, all in evaluation order.
    pub fn tiers_for(&self, ep: &Endpoint, dir: PolicyType) -> Vec<AppliedTier<'_>> {
        let mut out: Vec<AppliedTier<'_>> = Vec::new();
        for t in &self.tiers {
            let policies: Vec<&CompiledPolicy> = self
                .policies
                .iter()
                .filter(|p| p.tier == t.name)
                .filter(|p| p.types.contains(&dir) && p.selector.matches(&ep.labels))
                .collect();
            if !policies.is_empty() {
                out.push(AppliedTier { tier: t, policies });
            }
        }
        out
    }

    /// Every policy that selects `ep` (either direction), in evaluation order.
    pub fn policies_selecting<'m>(&'m self, ep: &Endpoint) -> Vec<&'m CompiledPolicy> {
        self.policies
            .iter()
            .filter(|p| p.selector.matches(&ep.labels))
            .collect()
    }

    /// The addresses of the endpoints `s` selects: what a data path's set for a rule's
    /// `selector` (or `notSelector`) holds.
    pub fn selected_addresses(&self, s: &crate::selector::Selector) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = self
            .endpoints
            .iter()
            .filter(|e| s.matches(&e.labels))
            .flat_map(|e| e.addresses.iter().copied())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// (address, port) of the named port `name` for IP protocol `proto` on the endpoints `s`
    /// selects (every endpoint when `None`): what a rule's named port matches.
    pub fn named_port_members(
        &self,
        name: &str,
        proto: u8,
        s: Option<&crate::selector::Selector>,
    ) -> Vec<(IpAddr, u16)> {
        let mut out: Vec<(IpAddr, u16)> = self
            .endpoints
            .iter()
            .filter(|e| s.is_none_or(|s| s.matches(&e.labels)))
            .filter_map(|e| e.named_port(name, proto).map(|p| (e, p)))
            .flat_map(|(e, p)| e.addresses.iter().map(move |a| (*a, p)))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The endpoint with `key` (`namespace/name`).
    pub fn endpoint(&self, key: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.key == key)
    }

    /// What an address is: an endpoint's, a node's, or neither.
    pub fn resolve(&self, ip: IpAddr) -> FlowEnd<'_> {
        FlowEnd {
            ip,
            endpoint: self.endpoints.iter().find(|e| e.addresses.contains(&ip)),
            host_of: self
                .hosts
                .iter()
                .find(|(_, a)| *a == ip)
                .map(|(n, _)| n.as_str()),
        }
    }

    /// Decides one direction for one endpoint.
    pub fn decide(&self, ep: &Endpoint, dir: PolicyType, flow: &Flow<'_>) -> Decision {
        let mut trace = Vec::new();
        let tiers = self.tiers_for(ep, dir);
        let mut to_profiles = tiers.is_empty();
        for (ti, applied) in tiers.iter().enumerate() {
            let mut passed = false;
            'policies: for p in &applied.policies {
                let rules = p.rules(dir).unwrap_or_default();
                for (i, r) in rules.iter().enumerate() {
                    if !rule_matches(r, flow) {
                        continue;
                    }
                    let at = RuleRef {
                        tier: applied.tier.name.clone(),
                        policy: p.id.clone(),
                        rule: i,
                        action: r.action,
                    };
                    match r.action {
                        RuleAction::Log => trace.push(Step::Logged(at)),
                        RuleAction::Pass => {
                            trace.push(Step::Passed(at));
                            passed = true;
                            break 'policies;
                        }
                        RuleAction::Allow | RuleAction::Deny => {
                            return Decision::new(ep, dir, DecidedBy::Rule(at), trace);
                        }
                    }
                }
                trace.push(Step::NoRuleMatched {
                    tier: applied.tier.name.clone(),
                    policy: p.id.clone(),
                });
            }
            if !passed && applied.tier.default_action == TierDefaultAction::Deny {
                return Decision::new(
                    ep,
                    dir,
                    DecidedBy::EndOfTier {
                        tier: applied.tier.name.clone(),
                    },
                    trace,
                );
            }
            if !passed {
                trace.push(Step::TierDefaultPass {
                    tier: applied.tier.name.clone(),
                });
            }
            if ti + 1 == tiers.len() {
                to_profiles = true;
            }
        }
        if to_profiles {
            for name in &ep.profiles {
                let Some(p) = self.profiles.get(name) else {
                    continue;
                };
                let rules = match dir {
                    PolicyType::Ingress => &p.ingress,
                    PolicyType::Egress => &p.egress,
                };
                for (i, r) in rules.iter().enumerate() {
                    if !rule_matches(r, flow) {
                        continue;
                    }
                    match r.action {
                        RuleAction::Allow | RuleAction::Deny => {
                            let by = DecidedBy::Profile {
                                profile: name.clone(),
                                rule: i,
                                action: r.action,
                            };
                            return Decision::new(ep, dir, by, trace);
                        }
                        RuleAction::Log | RuleAction::Pass => {}
                    }
                }
            }
        }
        Decision::new(ep, dir, DecidedBy::NoProfileMatched, trace)
    }

    /// The verdict for a flow, with the decisions of both ends.
    pub fn evaluate(&self, flow: &Flow<'_>) -> Verdict {
        let egress = flow.src.endpoint.map(|ep| {
            let mut d = self.decide(ep, PolicyType::Egress, flow);
            if d.allowed && flow.dst.host_of == Some(ep.node.as_str()) {
                let a = self.config.default_endpoint_to_host_action;
                d.allowed = a != EndpointToHostAction::Drop;
                d.decided_by = DecidedBy::EndpointToHost {
                    action: a,
                    after: Box::new(d.decided_by),
                };
            }
            d
        });
        let ingress = flow.dst.endpoint.map(|ep| {
            if flow.src.host_of == Some(ep.node.as_str()) {
                Decision::new(
                    ep,
                    PolicyType::Ingress,
                    DecidedBy::HostToLocalWorkload,
                    vec![],
                )
            } else {
                self.decide(ep, PolicyType::Ingress, flow)
            }
        });
        let allowed =
            egress.as_ref().is_none_or(|d| d.allowed) && ingress.as_ref().is_none_or(|d| d.allowed);
        Verdict {
            allowed,
            egress,
            ingress,
        }
    }
}

/// A rule that matched: where it is and what it does.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleRef {
    pub tier: String,
    pub policy: PolicyId,
    /// 0-based index in the policy's rules for the direction.
    pub rule: usize,
    pub action: RuleAction,
}

/// What decided one direction.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "by", rename_all = "camelCase")]
pub enum DecidedBy {
    /// An Allow or Deny rule of a policy.
    Rule(RuleRef),
    /// The end of a tier one of whose policies selected the endpoint: deny.
    EndOfTier { tier: String },
    /// A profile's rule (no policy applied, or the last tier passed).
    Profile {
        profile: String,
        rule: usize,
        action: RuleAction,
    },
    /// No policy and no profile rule matched: deny.
    NoProfileMatched,
    /// The node's own traffic to its workloads: allowed.
    HostToLocalWorkload,
    /// A workload's traffic to its own node: `defaultEndpointToHostAction` after egress.
    EndpointToHost {
        action: EndpointToHostAction,
        after: Box<DecidedBy>,
    },
}

/// One thing that happened on the way to a decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "step", rename_all = "camelCase")]
pub enum Step {
    /// A Log rule matched; evaluation went on.
    Logged(RuleRef),
    /// A Pass rule matched: on to the next tier.
    Passed(RuleRef),
    /// A policy applied but none of its rules matched.
    NoRuleMatched { tier: String, policy: PolicyId },
    /// A tier ended with `defaultAction: Pass`.
    TierDefaultPass { tier: String },
}

/// The decision for one direction at one endpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    pub direction: PolicyType,
    /// `namespace/name` of the endpoint.
    pub endpoint: String,
    pub allowed: bool,
    pub decided_by: DecidedBy,
    pub trace: Vec<Step>,
}

impl Decision {
    fn new(ep: &Endpoint, dir: PolicyType, by: DecidedBy, trace: Vec<Step>) -> Decision {
        let allowed = match &by {
            DecidedBy::Rule(r) => r.action == RuleAction::Allow,
            DecidedBy::Profile { action, .. } => *action == RuleAction::Allow,
            DecidedBy::EndOfTier { .. } | DecidedBy::NoProfileMatched => false,
            DecidedBy::HostToLocalWorkload => true,
            DecidedBy::EndpointToHost { action, .. } => *action != EndpointToHostAction::Drop,
        };
        Decision {
            direction: dir,
            endpoint: ep.key.clone(),
            allowed,
            decided_by: by,
            trace,
        }
    }
}

/// The verdict for a flow: allowed only if both ends allow it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub allowed: bool,
    /// The source endpoint's egress decision (none when the source is not an endpoint).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress: Option<Decision>,
    /// The destination endpoint's ingress decision (none when it is not an endpoint).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Decision>,
}
