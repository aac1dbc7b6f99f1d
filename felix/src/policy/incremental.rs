//! The rendered table kept between changes ([`Rendered`]): a new [`PolicyIr`] is compared with
//! the previous one part by part, and only what differs is rendered again (the sets whose
//! members changed, the chains of changed policies, the map entries and sequence chains of the
//! endpoints whose tiers changed). The names it touched ([`Touched`]) are all the transaction
//! has to look at.
//!
//! Sequence chains are shared: each counts its endpoints, and goes when the last one leaves.
//! A change of the address families or of the endpoint-to-host action re-renders everything.

use std::collections::{BTreeMap, BTreeSet};

use crate::nat::Family;

use super::ir::{Direction, EndpointPolicy, NamedPortMember, PolicyIr, PolicyRules};
use super::live::Changes;
use super::render::{
    SetSpec, Table, addr_set, addr_set_name, dispatch, effective_tiers, map_of, policy_chain,
    policy_chain_spec, port_set, port_set_name, render, sequence_chains,
};

/// The names of a [`Table`] a change touched; everything else is as it was.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Touched {
    pub sets: BTreeSet<String>,
    pub chains: BTreeSet<String>,
    /// Map name → the keys (interfaces) whose entries changed.
    pub entries: BTreeMap<String, BTreeSet<String>>,
    /// Everything may have changed (compare whole tables).
    pub all: bool,
}

impl Touched {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        !self.all && self.sets.is_empty() && self.chains.is_empty() && self.entries.is_empty()
    }

    fn everything() -> Touched {
        Touched {
            all: true,
            ..Touched::default()
        }
    }
}

/// The IR felix last rendered and the table it rendered to.
#[derive(Debug, Clone)]
pub struct Rendered {
    ir: PolicyIr,
    table: Table,
    /// Sequence chain → how many (endpoint, direction) dispatch to it.
    users: BTreeMap<String, usize>,
}

fn count_users(table: &Table) -> BTreeMap<String, usize> {
    let mut users = BTreeMap::new();
    for m in table.maps.values() {
        for v in m.entries.values() {
            if let Some(seq) = v.strip_prefix("jump ") {
                *users.entry(seq.to_string()).or_insert(0) += 1;
            }
        }
    }
    users
}

impl Rendered {
    /// Renders `ir` whole.
    pub fn new(ir: PolicyIr) -> Rendered {
        let table = render(&ir);
        let users = count_users(&table);
        Rendered { ir, table, users }
    }

    /// The table as wanted now.
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// The IR rendered.
    pub fn ir(&self) -> &PolicyIr {
        &self.ir
    }

    /// Takes the table to `ir`, rendering only what differs; says what it touched.
    pub fn update(&mut self, ir: PolicyIr) -> Touched {
        self.update_from(&ir)
    }

    /// As [`Rendered::update`] with the IR borrowed (felix's live model): only the entries that
    /// differ are copied, so a change costs a comparison of the two IRs, not a copy of one.
    pub fn update_from(&mut self, ir: &PolicyIr) -> Touched {
        self.update_keys(ir, None)
    }

    /// As [`Rendered::update_from`], comparing only the entries `changes` names (what the live
    /// model changed since the last render) instead of every entry of both IRs.
    pub fn update_changed(&mut self, ir: &PolicyIr, changes: &Changes) -> Touched {
        self.update_keys(ir, (!changes.all).then_some(changes))
    }

    fn update_keys(&mut self, ir: &PolicyIr, only: Option<&Changes>) -> Touched {
        // The base chains depend on these alone; a change to one renders everything again.
        if ir.families != self.ir.families
            || ir.endpoint_to_host != self.ir.endpoint_to_host
            || ir.workload_prefixes != self.ir.workload_prefixes
        {
            *self = Rendered::new(ir.clone());
            return Touched::everything();
        }
        let mut touched = Touched::default();
        // The entries that differ, with their old values (`None`: absent before); `self.ir`
        // takes the new ones.
        let addr_sets = take_changed(
            &mut self.ir.addr_sets,
            &ir.addr_sets,
            only.map(|c| &c.addr_sets),
        );
        let port_sets = take_changed(
            &mut self.ir.port_sets,
            &ir.port_sets,
            only.map(|c| &c.port_sets),
        );
        let policies = take_changed(
            &mut self.ir.policies,
            &ir.policies,
            only.map(|c| &c.policies),
        );
        let endpoints = take_changed(
            &mut self.ir.endpoints,
            &ir.endpoints,
            only.map(|c| &c.endpoints),
        );
        self.update_sets(&addr_sets, &port_sets, &mut touched);
        let shape_changed = self.update_policies(&policies, &mut touched);
        self.update_endpoints(&endpoints, &shape_changed, &mut touched);
        touched
    }

    fn update_sets(
        &mut self,
        addr_sets: &BTreeMap<String, Option<BTreeSet<ipnet::IpNet>>>,
        port_sets: &BTreeMap<String, Option<BTreeSet<NamedPortMember>>>,
        touched: &mut Touched,
    ) {
        let (ir, sets) = (&self.ir, &mut self.table.sets);
        changed_sets(
            addr_sets.keys(),
            &ir.addr_sets,
            &ir.families,
            sets,
            touched,
            addr_set_name,
            addr_set,
        );
        changed_sets(
            port_sets.keys(),
            &ir.port_sets,
            &ir.families,
            sets,
            touched,
            port_set_name,
            port_set,
        );
    }

    /// Re-renders changed policies' chains (`changed`: their old rules); returns the policies
    /// whose directions changed (present or not: that changes the sequences of endpoints they
    /// apply to).
    fn update_policies(
        &mut self,
        changed: &BTreeMap<String, Option<PolicyRules>>,
        touched: &mut Touched,
    ) -> BTreeSet<String> {
        let ir = &self.ir;
        let mut shape_changed = BTreeSet::new();
        for (key, was) in changed {
            let now = ir.policies.get(key);
            for dir in Direction::BOTH {
                let name = policy_chain(key, dir);
                let had = was.as_ref().and_then(|p| p.rules(dir)).is_some();
                match now.and_then(|p| policy_chain_spec(key, p, dir, &ir.families)) {
                    Some(c) => {
                        self.table.chains.insert(name.clone(), c);
                        touched.chains.insert(name);
                        if !had {
                            shape_changed.insert(key.clone());
                        }
                    }
                    None if had => {
                        self.table.chains.remove(&name);
                        touched.chains.insert(name);
                        shape_changed.insert(key.clone());
                    }
                    None => {}
                }
            }
        }
        shape_changed
    }

    /// Re-dispatches the endpoints that changed and those whose tiers name a policy whose
    /// directions changed.
    fn update_endpoints(
        &mut self,
        changed: &BTreeMap<String, Option<EndpointPolicy>>,
        shape_changed: &BTreeSet<String>,
        touched: &mut Touched,
    ) {
        let ir = &self.ir;
        let mut redo: BTreeSet<String> = changed.keys().cloned().collect();
        if !shape_changed.is_empty() {
            redo.extend(
                ir.endpoints
                    .iter()
                    .filter(|(_, ep)| {
                        Direction::BOTH.iter().any(|d| {
                            ep.tiers(*d)
                                .iter()
                                .any(|t| t.policies.iter().any(|p| shape_changed.contains(p)))
                        })
                    })
                    .map(|(i, _)| i.clone()),
            );
        }
        for iface in redo {
            for dir in Direction::BOTH {
                let map = map_of(dir);
                let (verdict, tiers) = match self.ir.endpoints.get(&iface) {
                    Some(ep) => {
                        let tiers = effective_tiers(&self.ir, ep, dir);
                        (Some(dispatch(&tiers, dir)), tiers)
                    }
                    None => (None, Vec::new()),
                };
                let entries = &mut self.table.maps.entry(map.into()).or_default().entries;
                let before = entries.get(&iface).cloned();
                if before == verdict {
                    continue;
                }
                match &verdict {
                    Some(v) => entries.insert(iface.clone(), v.clone()),
                    None => entries.remove(&iface),
                };
                touched
                    .entries
                    .entry(map.into())
                    .or_default()
                    .insert(iface.clone());
                if let Some(seq) = verdict.as_deref().and_then(|v| v.strip_prefix("jump ")) {
                    let n = self.users.entry(seq.to_string()).or_insert(0);
                    *n += 1;
                    if *n == 1 {
                        for (name, c) in sequence_chains(seq, &tiers, dir) {
                            self.table.chains.insert(name.clone(), c);
                            touched.chains.insert(name);
                        }
                    }
                }
                if let Some(seq) = before.as_deref().and_then(|v| v.strip_prefix("jump ")) {
                    self.release(seq, touched);
                }
            }
        }
    }

    /// One user fewer for sequence `seq`; the last one takes its chains away.
    fn release(&mut self, seq: &str, touched: &mut Touched) {
        let Some(n) = self.users.get_mut(seq) else {
            return;
        };
        *n -= 1;
        if *n > 0 {
            return;
        }
        self.users.remove(seq);
        self.table.chains.remove(seq);
        touched.chains.insert(seq.to_string());
        for k in 0.. {
            let name = format!("{seq}-{k}");
            if self.table.chains.remove(&name).is_none() {
                break;
            }
            touched.chains.insert(name);
        }
    }
}

/// Re-renders, in every family, the sets `ids` (whose members changed) as `now` has them.
fn changed_sets<'a, M>(
    ids: impl Iterator<Item = &'a String>,
    now: &BTreeMap<String, M>,
    families: &[Family],
    sets: &mut BTreeMap<String, SetSpec>,
    touched: &mut Touched,
    name: impl Fn(&str, Family) -> String,
    spec: impl Fn(&M, Family) -> SetSpec,
) {
    for id in ids {
        let members = now.get(id);
        for f in families {
            let n = name(id, *f);
            match members {
                Some(m) => sets.insert(n.clone(), spec(m, *f)),
                None => sets.remove(&n),
            };
            touched.sets.insert(n);
        }
    }
}

/// Makes `mine` equal `now`, copying only the entries that differ; returns those entries' keys
/// with their old values (`None`: the key is new).
fn take_changed<V: PartialEq + Clone>(
    mine: &mut BTreeMap<String, V>,
    now: &BTreeMap<String, V>,
    only: Option<&BTreeSet<String>>,
) -> BTreeMap<String, Option<V>> {
    let differs = |k: &&String| mine.get(*k) != now.get(*k);
    let changed: Vec<String> = match only {
        Some(only) => only.iter().filter(differs).cloned().collect(),
        None => keys(mine, now).filter(differs).cloned().collect(),
    };
    changed
        .into_iter()
        .map(|k| {
            let old = match now.get(&k) {
                Some(v) => mine.insert(k.clone(), v.clone()),
                None => mine.remove(&k),
            };
            (k, old)
        })
        .collect()
}

/// The keys of two maps, each once, in order (a merge of the two sorted key lists).
fn keys<'a, V>(
    a: &'a BTreeMap<String, V>,
    b: &'a BTreeMap<String, V>,
) -> impl Iterator<Item = &'a String> {
    let (mut a, mut b) = (a.keys().peekable(), b.keys().peekable());
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some(x), Some(y)) if x < y => a.next(),
        (Some(x), Some(y)) if x > y => b.next(),
        (Some(_), Some(_)) => {
            b.next();
            a.next()
        }
        (Some(_), None) => a.next(),
        (None, _) => b.next(),
    })
}
