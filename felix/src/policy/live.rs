//! The policy model kept from a watch, and this node's [`PolicyIr`] kept up to date change by
//! change: pure (no etcd, no nftables), fed with the resources a list or watch delivered.
//!
//! What each change recompiles:
//! - a WorkloadEndpoint (new pod, label change, delete): its part of every live selector and
//!   named-port set (one membership test per set), and, when it is local, its own tiers;
//! - a policy: that policy's rules, the order, and the tiers of the local endpoints its old or
//!   new selector matches;
//! - a profile: its rules and the endpoints that inherit it (their labels may change);
//! - a tier: the order, and every local endpoint's tiers;
//! - a FelixConfiguration: the endpoint-to-host action and the interface prefixes.
//!
//! Policy chains and sets are reference counted: a (policy, direction) is in the IR while a
//! local endpoint names it, a set while a rule in the IR names it. [`compile`] of a model
//! built from the same resources gives the same IR (the property tests check it).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use margay_datastore::policy::compile::{compile_global_policy, compile_network_policy};
use margay_datastore::policy::load::{Input, config_of, host_address};
use margay_datastore::policy::model::{
    compile_k8s_policy, order, policy_order, profile_rules, tier_info,
};
use margay_datastore::policy::{
    CompileError, CompiledPolicy, Endpoint, PolicyKind, PolicyModel, PolicyResources,
};
use margay_datastore::resources::{
    DEFAULT_TIER, FelixConfigurationSpec, PolicyType, Profile, Tier, WorkloadEndpoint,
};
use margay_datastore::selector::Selector;

use super::compile::{
    PROFILES_TIER, RuleCompiler, RulesSource, SetSource, endpoint_policy, endpoint_to_host,
    is_local, port_members, profile_key, selector_members, tier_end, uses,
};
use super::ir::{Direction, EndpointPolicy, NamedPortMember, PolicyIr, SetId, TierEnd, TierSeq};
use crate::nat::Family;

/// A live set: what it holds, how many IR rules name it, and each member's count (two
/// endpoints may give the same element).
#[derive(Debug, Clone)]
struct LiveSet {
    source: SetSource,
    refs: usize,
    addrs: BTreeMap<IpNet, usize>,
    ports: BTreeMap<NamedPortMember, usize>,
}

/// The keys of the IR's maps that changed since [`LivePolicy::take_changes`]: what a renderer
/// has to compare (`all`: compare everything, e.g. for a model built afresh).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub all: bool,
    pub addr_sets: BTreeSet<SetId>,
    pub port_sets: BTreeSet<SetId>,
    pub policies: BTreeSet<String>,
    pub endpoints: BTreeSet<String>,
}

/// The model and this node's IR, updated in place.
#[derive(Debug, Clone)]
pub struct LivePolicy {
    node: String,
    tiers: BTreeMap<String, Tier>,
    /// Policy resources by etcd key: the compiled policy, or why it was left out.
    policy_res: BTreeMap<String, Result<CompiledPolicy, CompileError>>,
    /// The same, as stored (for [`LivePolicy::resources`]).
    policy_raw: BTreeMap<String, Input>,
    profiles: BTreeMap<String, Profile>,
    weps: BTreeMap<String, WorkloadEndpoint>,
    hosts: BTreeMap<String, IpAddr>,
    felix_configs: BTreeMap<String, FelixConfigurationSpec>,
    /// Tiers, policies in order and profiles (its `endpoints` stay empty: see `endpoints`).
    model: PolicyModel,
    /// Position of each policy key in `model.policies`.
    positions: BTreeMap<String, usize>,
    /// Every endpoint of the cluster, by etcd key.
    endpoints: BTreeMap<String, Endpoint>,
    /// The keys of the endpoints holding each label (key, value): a selector that requires
    /// `key == 'value'` is tested against those only.
    by_label: BTreeMap<(String, String), BTreeSet<String>>,
    /// Local endpoints' interfaces, by etcd key.
    local: BTreeMap<String, String>,
    /// How many local endpoints name each (policy key, direction).
    users: BTreeMap<(String, Direction), usize>,
    /// The sets each (policy key, direction) in the IR names.
    rule_sets: BTreeMap<(String, Direction), BTreeSet<SetId>>,
    sets: BTreeMap<SetId, LiveSet>,
    /// Endpoints with an IPv6 address.
    v6_endpoints: usize,
    ir: PolicyIr,
    /// What changed in `ir` since the last [`LivePolicy::take_changes`].
    changes: Changes,
    /// Policies left out since the last call to [`LivePolicy::take_errors`].
    errors: Vec<CompileError>,
}

impl LivePolicy {
    /// An empty model for node `node` (no resources yet).
    pub fn new(node: &str) -> LivePolicy {
        let mut live = LivePolicy {
            node: node.to_string(),
            tiers: BTreeMap::new(),
            policy_res: BTreeMap::new(),
            policy_raw: BTreeMap::new(),
            profiles: BTreeMap::new(),
            weps: BTreeMap::new(),
            hosts: BTreeMap::new(),
            felix_configs: BTreeMap::new(),
            model: PolicyModel::default(),
            positions: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            by_label: BTreeMap::new(),
            local: BTreeMap::new(),
            users: BTreeMap::new(),
            rule_sets: BTreeMap::new(),
            sets: BTreeMap::new(),
            v6_endpoints: 0,
            ir: PolicyIr::default(),
            changes: Changes {
                all: true,
                ..Changes::default()
            },
            errors: Vec::new(),
        };
        live.reorder();
        live.config_changed();
        live
    }

    /// The node whose endpoints get policy.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The IR as it stands.
    pub fn ir(&self) -> &PolicyIr {
        &self.ir
    }

    /// The IR's keys changed since the last call (everything, the first time).
    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    /// Policies and profiles left out because they do not compile (each reported once).
    pub fn take_errors(&mut self) -> Vec<CompileError> {
        std::mem::take(&mut self.errors)
    }

    /// The resources held, as [`PolicyModel::build`] takes them (for a full compile to compare).
    pub fn resources(&self) -> PolicyResources {
        let mut res = PolicyResources {
            tiers: self.tiers.values().cloned().collect(),
            profiles: self.profiles.values().cloned().collect(),
            endpoints: self.weps.values().cloned().collect(),
            hosts: self.hosts.iter().map(|(n, a)| (n.clone(), *a)).collect(),
            config: config_of(self.felix_configs.get(crate::settings::GLOBAL)),
            ..PolicyResources::default()
        };
        for p in self.policy_raw.values() {
            match p {
                Input::NetworkPolicy(p) => res.network_policies.push(p.clone()),
                Input::GlobalNetworkPolicy(p) => res.global_network_policies.push(p.clone()),
                Input::K8sNetworkPolicy(p) => res.k8s_network_policies.push(p.clone()),
                _ => {}
            }
        }
        res
    }

    /// The FelixConfigurations held (`default`, `node.<name>`, ...), by name.
    pub fn felix_configs(&self) -> &BTreeMap<String, FelixConfigurationSpec> {
        &self.felix_configs
    }

    /// Stores a resource the watch or list delivered (`key` is its etcd key).
    pub fn put(&mut self, key: &str, input: Input) {
        if matches!(
            input,
            Input::NetworkPolicy(_) | Input::GlobalNetworkPolicy(_) | Input::K8sNetworkPolicy(_)
        ) {
            self.policy_raw.insert(key.to_string(), input.clone());
        }
        match input {
            Input::Tier(t) => {
                self.tiers.insert(key.to_string(), t);
                self.tiers_changed();
            }
            Input::NetworkPolicy(p) => self.set_policy(
                key,
                Some(compile_network_policy(&p, PolicyKind::NetworkPolicy)),
            ),
            Input::GlobalNetworkPolicy(p) => self.set_policy(key, Some(compile_global_policy(&p))),
            Input::K8sNetworkPolicy(p) => self.set_policy(key, Some(compile_k8s_policy(&p))),
            Input::Profile(p) => {
                let name = p.name().to_string();
                self.profiles.insert(name.clone(), p);
                self.profile_changed(&name);
            }
            Input::WorkloadEndpoint(w) => {
                self.weps.insert(key.to_string(), w);
                self.endpoint_changed(key);
            }
            Input::Node(n) => match host_address(&n) {
                Some(a) => {
                    self.hosts.insert(n.name().to_string(), a);
                }
                None => {
                    self.hosts.remove(n.name());
                }
            },
            Input::FelixConfiguration(f) => {
                self.felix_configs.insert(f.name().to_string(), f.spec);
                self.config_changed();
            }
        }
    }

    /// Forgets the resource at `key` (its kind from [`margay_datastore::policy::load::input_kind`]).
    pub fn delete(&mut self, key: &str, kind: margay_datastore::policy::load::InputKind) {
        use margay_datastore::policy::load::InputKind as K;
        let name = key.rsplit('/').next().unwrap_or(key).to_string();
        match kind {
            K::Tier => {
                if self.tiers.remove(key).is_some() {
                    self.tiers_changed();
                }
            }
            K::NetworkPolicy | K::GlobalNetworkPolicy | K::K8sNetworkPolicy => {
                self.policy_raw.remove(key);
                self.set_policy(key, None)
            }
            K::Profile => {
                if self.profiles.remove(&name).is_some() {
                    self.profile_changed(&name);
                }
            }
            K::WorkloadEndpoint => {
                if self.weps.remove(key).is_some() {
                    self.endpoint_changed(key);
                }
            }
            K::Node => {
                self.hosts.remove(&name);
            }
            K::FelixConfiguration => {
                if self.felix_configs.remove(&name).is_some() {
                    self.config_changed();
                }
            }
        }
    }

    // ---- order and configuration -------------------------------------------------------

    fn reorder(&mut self) {
        let tiers = self.tiers.values().map(tier_info).collect();
        let policies = self
            .policy_res
            .values()
            .filter_map(|r| r.as_ref().ok().cloned())
            .collect();
        let (tiers, policies) = order(tiers, policies);
        self.model.tiers = tiers;
        self.model.policies = policies;
        self.positions = self
            .model
            .policies
            .iter()
            .enumerate()
            .map(|(i, p)| (p.id.to_string(), i))
            .collect();
    }

    fn tiers_changed(&mut self) {
        self.reorder();
        let all: Vec<String> = self.local.keys().cloned().collect();
        for key in all {
            self.refresh_endpoint_policy(&key);
        }
    }

    fn config_changed(&mut self) {
        self.model.config = config_of(self.felix_configs.get(crate::settings::GLOBAL));
        self.ir.endpoint_to_host = endpoint_to_host(&self.model);
        let (settings, _) = crate::settings::merge(
            self.felix_configs.get(crate::settings::GLOBAL),
            self.felix_configs
                .get(&crate::settings::node_config_name(&self.node)),
            &Default::default(),
        );
        self.ir.workload_prefixes = settings.dataplane.interface_prefixes;
    }

    // ---- policies and profiles ---------------------------------------------------------

    fn set_policy(&mut self, key: &str, compiled: Option<Result<CompiledPolicy, CompileError>>) {
        let old = self
            .policy_res
            .get(key)
            .and_then(|r| r.as_ref().ok())
            .cloned();
        if let Some(Err(e)) = &compiled {
            self.errors.push(e.clone());
        }
        match compiled {
            Some(c) => self.policy_res.insert(key.to_string(), c),
            None => self.policy_res.remove(key),
        };
        let new = self
            .policy_res
            .get(key)
            .and_then(|r| r.as_ref().ok())
            .cloned();
        if old == new {
            return;
        }
        let placed = self.place(old.as_ref(), new.as_ref());
        // A policy id can change with its key only when the resource is replaced; refresh both.
        let ids: BTreeSet<String> = [&old, &new]
            .into_iter()
            .flatten()
            .map(|p| p.id.to_string())
            .collect();
        for id in &ids {
            for dir in Direction::BOTH {
                self.refresh_rules(id, dir);
            }
        }
        let mut affected = BTreeSet::new();
        for p in [&old, &new].into_iter().flatten() {
            for k in self.candidates(&p.selector) {
                if self.local.contains_key(k) && p.selector.matches(&self.endpoints[k].labels) {
                    affected.insert(k.clone());
                }
            }
        }
        for k in affected {
            if !placed {
                self.refresh_endpoint_policy(&k);
                continue;
            }
            let iface = self.local[&k].clone();
            let current = self.ir.endpoints.get(&iface).cloned().unwrap_or_default();
            let patched = self.patched(current, &self.endpoints[&k], old.as_ref(), new.as_ref());
            debug_assert_eq!(
                patched,
                endpoint_policy(&self.model, &self.endpoints[&k]),
                "the patched tiers of {k} differ from a full compile"
            );
            self.install_endpoint_policy(&k, Some((iface, patched)));
        }
    }

    /// Puts one changed policy in its place in the order (`old` out, `new` in) without sorting
    /// the others. When the tiers themselves change (a policy naming a tier that is not
    /// stored, which gets a tier of its own), orders everything again instead and says so by
    /// returning false.
    fn place(&mut self, old: Option<&CompiledPolicy>, new: Option<&CompiledPolicy>) -> bool {
        let stored =
            |name: &str| name == DEFAULT_TIER || self.tiers.values().any(|t| t.name() == name);
        if [old, new].into_iter().flatten().any(|p| !stored(&p.tier)) {
            self.reorder();
            return false;
        }
        let mut first = self.model.policies.len();
        if let Some(o) = old
            && let Some(i) = self.positions.remove(&o.id.to_string())
        {
            self.model.policies.remove(i);
            first = first.min(i);
        }
        if let Some(n) = new {
            let tier_at = |p: &CompiledPolicy| self.tier_index(&p.tier).unwrap_or(0);
            let at = (tier_at(n), n);
            let i = self
                .model
                .policies
                .partition_point(|p| policy_order((tier_at(p), p), at).is_lt());
            self.model.policies.insert(i, n.clone());
            first = first.min(i);
        }
        for (i, p) in self.model.policies.iter().enumerate().skip(first) {
            self.positions.insert(p.id.to_string(), i);
        }
        true
    }

    /// The place of tier `name` in the evaluation order.
    fn tier_index(&self, name: &str) -> Option<usize> {
        self.model.tiers.iter().position(|t| t.name == name)
    }

    /// `current` (an endpoint's tiers) with policy `old` taken out and `new` put in where it
    /// belongs, if it selects `ep`: one policy's change leaves the rest of them as they were.
    fn patched(
        &self,
        mut current: EndpointPolicy,
        ep: &Endpoint,
        old: Option<&CompiledPolicy>,
        new: Option<&CompiledPolicy>,
    ) -> EndpointPolicy {
        for dir in Direction::BOTH {
            let (seqs, pt) = match dir {
                Direction::Ingress => (&mut current.ingress, PolicyType::Ingress),
                Direction::Egress => (&mut current.egress, PolicyType::Egress),
            };
            if let Some(o) = old {
                let key = o.id.to_string();
                for seq in seqs.iter_mut().filter(|s| s.tier != PROFILES_TIER) {
                    seq.policies.retain(|k| *k != key);
                }
                seqs.retain(|s| s.tier == PROFILES_TIER || !s.policies.is_empty());
            }
            let Some(n) = new.filter(|n| n.types.contains(&pt) && n.selector.matches(&ep.labels))
            else {
                continue;
            };
            let key = n.id.to_string();
            let place = self.positions[&key];
            // The profiles' sequence, last, is in no tier.
            let tier_at = |name: &str| self.tier_index(name).unwrap_or(usize::MAX);
            match seqs.iter_mut().find(|s| s.tier == n.tier) {
                Some(seq) => {
                    let i = seq.policies.partition_point(|k| self.positions[k] < place);
                    seq.policies.insert(i, key);
                }
                None => {
                    let t = tier_at(&n.tier);
                    let i = seqs.partition_point(|s| tier_at(&s.tier) < t);
                    let end = self
                        .model
                        .tiers
                        .get(t)
                        .map_or(TierEnd::Deny, |t| tier_end(t.default_action));
                    let tier = n.tier.clone();
                    seqs.insert(
                        i,
                        TierSeq {
                            tier,
                            policies: vec![key],
                            end,
                        },
                    );
                }
            }
        }
        current
    }

    fn profile_changed(&mut self, name: &str) {
        match profile_rules(name, self.profiles.get(name)) {
            Ok(p) => {
                self.model.profiles.insert(name.to_string(), p);
            }
            Err(e) => {
                self.errors.push(e);
                self.model.profiles.remove(name);
            }
        }
        let key = profile_key(name);
        for dir in Direction::BOTH {
            self.refresh_rules(&key, dir);
        }
        let inheriting: Vec<String> = self
            .endpoints
            .iter()
            .filter(|(_, e)| e.profiles.iter().any(|p| p == name))
            .map(|(k, _)| k.clone())
            .collect();
        for k in inheriting {
            self.endpoint_changed(&k);
        }
        // Local endpoints whose profile just appeared or went (its key in their last tier).
        let locals: Vec<String> = self.local.keys().cloned().collect();
        for k in locals {
            self.refresh_endpoint_policy(&k);
        }
    }

    /// Compiles the rules of (key, dir) again if the IR holds them.
    fn refresh_rules(&mut self, key: &str, dir: Direction) {
        let pair = (key.to_string(), dir);
        if self.users.get(&pair).copied().unwrap_or(0) == 0 {
            return;
        }
        self.drop_rules(&pair);
        self.add_rules(&pair);
    }

    fn add_rules(&mut self, pair: &(String, Direction)) {
        let mut rc = RuleCompiler::default();
        let rules = {
            let src = match self.positions.get(&pair.0) {
                Some(i) => Some(RulesSource::Policy(&self.model.policies[*i])),
                None => pair
                    .0
                    .strip_prefix("profile:")
                    .and_then(|n| self.model.profiles.get(n))
                    .map(RulesSource::Profile),
            };
            src.map(|s| rc.rules_of(s, pair.1)).unwrap_or_default()
        };
        self.changes.policies.insert(pair.0.clone());
        let entry = self.ir.policies.entry(pair.0.clone()).or_default();
        match pair.1 {
            Direction::Ingress => entry.ingress = Some(rules),
            Direction::Egress => entry.egress = Some(rules),
        }
        let ids: BTreeSet<SetId> = rc.sets.keys().cloned().collect();
        for (id, source) in rc.sets {
            self.retain_set(id, source);
        }
        self.rule_sets.insert(pair.clone(), ids);
    }

    fn drop_rules(&mut self, pair: &(String, Direction)) {
        if let Some(entry) = self.ir.policies.get_mut(&pair.0) {
            self.changes.policies.insert(pair.0.clone());
            match pair.1 {
                Direction::Ingress => entry.ingress = None,
                Direction::Egress => entry.egress = None,
            }
            if entry.ingress.is_none() && entry.egress.is_none() {
                self.ir.policies.remove(&pair.0);
            }
        }
        for id in self.rule_sets.remove(pair).unwrap_or_default() {
            self.release_set(&id);
        }
    }

    /// The keys of the endpoints that may match `s`: those holding the rarest label it
    /// requires, or every endpoint when it requires none.
    fn candidates(&self, s: &Selector) -> Vec<&String> {
        let narrowest = s
            .required_labels()
            .into_iter()
            .map(|(k, v)| self.by_label.get(&(k.to_string(), v.to_string())))
            .min_by_key(|holders| holders.map_or(0, |h| h.len()));
        match narrowest {
            Some(Some(holders)) => holders.iter().collect(),
            Some(None) => Vec::new(),
            None => self.endpoints.keys().collect(),
        }
    }

    // ---- sets --------------------------------------------------------------------------

    fn retain_set(&mut self, id: SetId, source: SetSource) {
        if let Some(s) = self.sets.get_mut(&id) {
            s.refs += 1;
            return;
        }
        let mut set = LiveSet {
            source,
            refs: 1,
            addrs: BTreeMap::new(),
            ports: BTreeMap::new(),
        };
        if let SetSource::Nets(nets) = &set.source {
            set.addrs = nets.iter().map(|n| (*n, 1)).collect();
        }
        let members = match &set.source {
            SetSource::Selector(s) => self.candidates(s),
            _ => self.endpoints.keys().collect(),
        };
        for k in members {
            contribute(&mut set, &self.endpoints[k], true);
        }
        self.publish_set(&id, &set);
        self.sets.insert(id, set);
    }

    fn release_set(&mut self, id: &SetId) {
        let Some(s) = self.sets.get_mut(id) else {
            return;
        };
        s.refs -= 1;
        if s.refs == 0 {
            self.sets.remove(id);
            self.ir.addr_sets.remove(id);
            self.ir.port_sets.remove(id);
            self.changes.addr_sets.insert(id.clone());
            self.changes.port_sets.insert(id.clone());
        }
    }

    fn publish_set(&mut self, id: &SetId, set: &LiveSet) {
        match set.source {
            SetSource::NamedPorts(_) => {
                self.changes.port_sets.insert(id.clone());
                self.ir
                    .port_sets
                    .insert(id.clone(), set.ports.keys().copied().collect());
            }
            _ => {
                self.changes.addr_sets.insert(id.clone());
                self.ir
                    .addr_sets
                    .insert(id.clone(), set.addrs.keys().copied().collect());
            }
        }
    }

    // ---- endpoints ---------------------------------------------------------------------

    /// The WorkloadEndpoint at `key` changed (or its profiles did): its set memberships, and
    /// its tiers when local.
    fn endpoint_changed(&mut self, key: &str) {
        let old = self.endpoints.remove(key);
        let new = self.weps.get(key).map(|w| Endpoint::new(w, &self.profiles));
        if let Some(new) = &new {
            for name in &new.profiles {
                if !self.model.profiles.contains_key(name) {
                    match profile_rules(name, self.profiles.get(name)) {
                        Ok(p) => {
                            self.model.profiles.insert(name.clone(), p);
                        }
                        Err(e) => self.errors.push(e),
                    }
                }
            }
        }
        let v6 = |e: &Endpoint| e.addresses.iter().any(|a| a.is_ipv6());
        if let Some(o) = &old {
            self.v6_endpoints -= usize::from(v6(o));
        }
        if let Some(n) = &new {
            self.v6_endpoints += usize::from(v6(n));
        }
        self.ir.families = if self.v6_endpoints > 0 {
            vec![Family::V4, Family::V6]
        } else {
            vec![Family::V4]
        };
        let ids: Vec<SetId> = self.sets.keys().cloned().collect();
        for id in ids {
            let mut set = self.sets.remove(&id).expect("listed");
            let before = (set.addrs.len(), set.ports.len());
            let mut changed = false;
            if let Some(o) = &old {
                changed |= contribute(&mut set, o, false);
            }
            if let Some(n) = &new {
                changed |= contribute(&mut set, n, true);
            }
            if changed || before != (set.addrs.len(), set.ports.len()) {
                self.publish_set(&id, &set);
            }
            self.sets.insert(id, set);
        }
        for (label, value) in old.iter().flat_map(|o| &o.labels) {
            let at = (label.clone(), value.clone());
            if let Some(h) = self.by_label.get_mut(&at) {
                h.remove(key);
                if h.is_empty() {
                    self.by_label.remove(&at);
                }
            }
        }
        for (label, value) in new.iter().flat_map(|n| &n.labels) {
            self.by_label
                .entry((label.clone(), value.clone()))
                .or_default()
                .insert(key.to_string());
        }
        match new {
            Some(n) => {
                self.endpoints.insert(key.to_string(), n);
            }
            None => {
                self.endpoints.remove(key);
            }
        }
        self.refresh_endpoint_policy(key);
    }

    /// Recomputes the tiers of the endpoint at `key` (or removes them: gone, or not local).
    fn refresh_endpoint_policy(&mut self, key: &str) {
        let new = self
            .endpoints
            .get(key)
            .filter(|e| is_local(e, &self.node))
            .map(|e| (e.interface.clone(), endpoint_policy(&self.model, e)));
        self.install_endpoint_policy(key, new);
    }

    /// Makes `new` the tiers of the endpoint at `key` (None: it has none here), taking and
    /// releasing the policy chains whose users change.
    fn install_endpoint_policy(&mut self, key: &str, new: Option<(String, EndpointPolicy)>) {
        let old_iface = self.local.remove(key);
        let old = old_iface.as_ref().and_then(|i| self.ir.endpoints.remove(i));
        self.changes.endpoints.extend(old_iface.iter().cloned());
        let old_uses = old.as_ref().map(uses).unwrap_or_default();
        let new_uses = new.as_ref().map(|(_, p)| uses(p)).unwrap_or_default();
        for pair in new_uses.difference(&old_uses) {
            let n = self.users.entry(pair.clone()).or_insert(0);
            *n += 1;
            if *n == 1 {
                self.add_rules(pair);
            }
        }
        for pair in old_uses.difference(&new_uses) {
            if let Some(n) = self.users.get_mut(pair) {
                *n -= 1;
                if *n == 0 {
                    self.users.remove(pair);
                    self.drop_rules(pair);
                }
            }
        }
        if let Some((iface, policy)) = new {
            self.local.insert(key.to_string(), iface.clone());
            self.changes.endpoints.insert(iface.clone());
            self.ir.endpoints.insert(iface, policy);
        }
    }
}

/// Adds (or removes) what `ep` gives `set`; says whether the members changed.
fn contribute(set: &mut LiveSet, ep: &Endpoint, add: bool) -> bool {
    fn count<K: Ord + Copy>(m: &mut BTreeMap<K, usize>, k: K, add: bool) -> bool {
        if add {
            let n = m.entry(k).or_insert(0);
            *n += 1;
            *n == 1
        } else if let Some(n) = m.get_mut(&k) {
            *n -= 1;
            if *n == 0 {
                m.remove(&k);
                return true;
            }
            false
        } else {
            false
        }
    }
    let mut changed = false;
    match &set.source {
        SetSource::Nets(_) => {}
        SetSource::Selector(s) => {
            for a in selector_members(s, ep) {
                changed |= count(&mut set.addrs, a, add);
            }
        }
        SetSource::NamedPorts(names) => {
            for m in port_members(names, ep) {
                changed |= count(&mut set.ports, m, add);
            }
        }
    }
    changed
}
