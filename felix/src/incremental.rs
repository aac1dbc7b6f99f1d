//! The desired dataplane kept change by change: one other Node's VTEPs or one learned route
//! changes only that node's neighbour and FDB entries and the routes through it, so felix's CPU
//! per Node change does not grow with the number of nodes (issue 12). A [`Model`] is taken
//! whole once ([`Incremental::new`], the same answer as [`crate::desired::compute`]); then each
//! [`ModelChange`] updates the desired state and says what changed as a [`DesiredDelta`], which
//! the reconciler applies to its own copy. Anything else (pools, this node, its pods, the
//! settings) comes as a new whole model. Pure: no I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::desired::{self, Desired, DesiredRoute, Vtep};
use crate::model::{Model, RemoteRoute, RemoteVtep};

/// One change of the parts of the model that grow with the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelChange {
    /// Node `node`'s VTEPs are now `vteps` (none: it has none, or it is gone).
    Vteps {
        node: String,
        vteps: Vec<RemoteVtep>,
    },
    /// The route learned for `prefix` is now `route` (`None`: withdrawn).
    Route {
        prefix: IpNet,
        route: Option<RemoteRoute>,
    },
}

/// What a list of [`ModelChange`]s changed in the desired state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredDelta {
    /// Destinations whose route may have changed, with their route now (`None`: none).
    pub routes: Vec<(IpNet, Option<DesiredRoute>)>,
    /// VTEPs behind the IPv4 device that came (true) or went (false).
    pub vteps: Vec<(Vtep, bool)>,
    /// The same behind the IPv6 device.
    pub vteps_v6: Vec<(Vtep, bool)>,
    /// Learned routes that became (true) or stopped being (false) shadowed.
    pub shadowed: Vec<(IpNet, bool)>,
    /// The whole problem list, when it changed.
    pub problems: Option<Vec<String>>,
}

impl DesiredDelta {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
            && self.vteps.is_empty()
            && self.vteps_v6.is_empty()
            && self.shadowed.is_empty()
            && self.problems.is_none()
    }

    /// Applies it to `d` (the desired state it was computed against).
    pub fn apply_to(&self, d: &mut Desired) {
        for (dst, r) in &self.routes {
            match r {
                Some(r) => {
                    d.routes.insert(*dst, r.clone());
                }
                None => {
                    d.routes.remove(dst);
                }
            }
        }
        for (list, changes) in [
            (&mut d.vteps, &self.vteps),
            (&mut d.vteps_v6, &self.vteps_v6),
        ] {
            for (v, present) in changes {
                // Kept sorted, as compute gives them.
                match (list.binary_search(v), present) {
                    (Err(at), true) => list.insert(at, *v),
                    (Ok(at), false) => {
                        list.remove(at);
                    }
                    _ => {}
                }
            }
        }
        for (p, shadowed) in &self.shadowed {
            if *shadowed {
                d.shadowed.insert(*p);
            } else {
                d.shadowed.remove(p);
            }
        }
        if let Some(p) = &self.problems {
            d.problems = p.clone();
        }
    }
}

/// What one node's VTEPs give: entries per family and problems.
#[derive(Debug, Clone, Default)]
struct NodeOut {
    vteps: Vec<Vtep>,
    problems: Vec<String>,
}

/// The desired state with the indexes that let one change touch only what it affects.
#[derive(Debug, Clone)]
pub struct Incremental {
    /// The model without its VTEPs and learned routes (those are kept below).
    base: Model,
    /// [`crate::desired::compute`] of `base`'s problems (devices, addresses).
    base_problems: Vec<String>,
    /// Routes that are this node's own or configured (workloads, blocks, `reachableBy`): a
    /// learned route for one of these destinations never takes its place.
    fixed: BTreeMap<IpNet, DesiredRoute>,
    /// This node's blocks and workload addresses.
    own: BTreeSet<IpNet>,
    /// VTEPs by node, as the model has them.
    vteps: BTreeMap<String, Vec<RemoteVtep>>,
    /// What each node's VTEPs give.
    node_out: BTreeMap<String, NodeOut>,
    /// How many nodes give each VTEP entry (the device's entries are the distinct ones).
    vtep_count: BTreeMap<Vtep, usize>,
    /// The distinct VTEP entries by node address: the first is the node's tunnel address.
    by_node_ip: HashMap<IpAddr, BTreeSet<Vtep>>,
    /// Learned routes by prefix.
    routes: BTreeMap<IpNet, RemoteRoute>,
    /// Learned prefixes by each of their next hops (what a node's VTEP change re-resolves).
    by_hop: HashMap<IpAddr, BTreeSet<IpNet>>,
    /// Problems of each learned route.
    route_problems: BTreeMap<IpNet, Vec<String>>,
    /// The desired state, equal to `compute` of the whole model (problems aside, in order).
    d: Desired,
}

impl Incremental {
    /// Takes a whole model.
    pub fn new(model: Model) -> Incremental {
        let mut base = model;
        let vteps = std::mem::take(&mut base.vteps);
        let routes = std::mem::take(&mut base.remote_routes);
        let d = desired::compute(&base);
        let mut inc = Incremental {
            base_problems: d.problems.clone(),
            fixed: d.routes.clone(),
            own: desired::own_prefixes(&base),
            base,
            vteps: BTreeMap::new(),
            node_out: BTreeMap::new(),
            vtep_count: BTreeMap::new(),
            by_node_ip: HashMap::new(),
            routes: BTreeMap::new(),
            by_hop: HashMap::new(),
            route_problems: BTreeMap::new(),
            d,
        };
        let mut by_node: BTreeMap<String, Vec<RemoteVtep>> = BTreeMap::new();
        for v in vteps {
            by_node.entry(v.node.clone()).or_default().push(v);
        }
        let mut changes: Vec<ModelChange> = by_node
            .into_iter()
            .map(|(node, vteps)| ModelChange::Vteps { node, vteps })
            .collect();
        // A prefix listed twice: the last one counts, as in compute.
        let mut by_prefix: BTreeMap<IpNet, RemoteRoute> = BTreeMap::new();
        for r in routes {
            by_prefix.insert(r.prefix, r);
        }
        changes.extend(by_prefix.into_values().map(|r| ModelChange::Route {
            prefix: r.prefix,
            route: Some(r),
        }));
        inc.apply(changes);
        inc
    }

    /// The desired state now.
    pub fn desired(&self) -> &Desired {
        &self.d
    }

    /// The whole model now (VTEPs by node, routes by prefix). Costs O(N): for tests and logs.
    pub fn model(&self) -> Model {
        let mut m = self.base.clone();
        m.vteps = self.vteps.values().flatten().cloned().collect();
        m.remote_routes = self.routes.values().cloned().collect();
        m
    }

    /// Applies `changes` in order; returns what they changed in the desired state.
    pub fn apply(&mut self, changes: Vec<ModelChange>) -> DesiredDelta {
        let mut delta = DesiredDelta::default();
        let mut touched: BTreeSet<IpNet> = BTreeSet::new();
        let mut problems_changed = false;
        for c in changes {
            match c {
                ModelChange::Vteps { node, vteps } => {
                    problems_changed |= self.set_vteps(node, vteps, &mut delta, &mut touched);
                }
                ModelChange::Route { prefix, route } => {
                    self.set_route(prefix, route);
                    touched.insert(prefix);
                }
            }
        }
        for prefix in touched {
            problems_changed |= self.resolve(prefix, &mut delta);
        }
        if problems_changed {
            let mut p = self.base_problems.clone();
            p.extend(self.node_out.values().flat_map(|o| o.problems.clone()));
            p.extend(self.route_problems.values().flatten().cloned());
            if p != self.d.problems {
                self.d.problems = p.clone();
                delta.problems = Some(p);
            }
        }
        delta
    }

    /// The device-local address VTEPs of `ip`'s family are read against, if that device is
    /// wanted.
    fn local(&self, v6: bool) -> Option<IpAddr> {
        if v6 {
            self.d.vxlan_v6.as_ref().map(|v| v.local)
        } else {
            self.d.vxlan.as_ref().map(|v| v.local)
        }
    }

    /// Replaces node `node`'s VTEPs; marks the routes through a node address whose tunnel
    /// address changed. True when its problems changed.
    fn set_vteps(
        &mut self,
        node: String,
        vteps: Vec<RemoteVtep>,
        delta: &mut DesiredDelta,
        touched: &mut BTreeSet<IpNet>,
    ) -> bool {
        let mut out = NodeOut::default();
        for v in &vteps {
            for local in [self.local(false), self.local(true)].into_iter().flatten() {
                match desired::vtep_of(v, local) {
                    Some(Ok(vtep)) => out.vteps.push(vtep),
                    Some(Err(why)) => out.problems.push(why),
                    None => {}
                }
            }
        }
        let old = if vteps.is_empty() {
            self.vteps.remove(&node);
            self.node_out.remove(&node).unwrap_or_default()
        } else {
            self.vteps.insert(node.clone(), vteps);
            self.node_out.insert(node, out.clone()).unwrap_or_default()
        };
        let mut hops: BTreeSet<IpAddr> = BTreeSet::new();
        for v in &old.vteps {
            let count = self.vtep_count.entry(*v).or_default();
            *count -= 1;
            if *count == 0 {
                self.vtep_count.remove(v);
                self.vtep_gone(*v, delta, &mut hops);
            }
        }
        for v in &out.vteps {
            let count = self.vtep_count.entry(*v).or_default();
            *count += 1;
            if *count == 1 {
                self.vtep_came(*v, delta, &mut hops);
            }
        }
        for hop in hops {
            if let Some(prefixes) = self.by_hop.get(&hop) {
                touched.extend(prefixes.iter().copied());
            }
        }
        old.problems != out.problems
    }

    fn vtep_gone(&mut self, v: Vtep, delta: &mut DesiredDelta, hops: &mut BTreeSet<IpAddr>) {
        list_of(delta, &v).push((v, false));
        if let Some(set) = self.by_node_ip.get_mut(&v.node_ip) {
            set.remove(&v);
            if set.is_empty() {
                self.by_node_ip.remove(&v.node_ip);
            }
        }
        hops.insert(v.node_ip);
        let list = family_list(&mut self.d, &v);
        if let Ok(at) = list.binary_search(&v) {
            list.remove(at);
        }
    }

    fn vtep_came(&mut self, v: Vtep, delta: &mut DesiredDelta, hops: &mut BTreeSet<IpAddr>) {
        list_of(delta, &v).push((v, true));
        self.by_node_ip.entry(v.node_ip).or_default().insert(v);
        hops.insert(v.node_ip);
        let list = family_list(&mut self.d, &v);
        if let Err(at) = list.binary_search(&v) {
            list.insert(at, v);
        }
    }

    /// Replaces the learned route of `prefix` and its next-hop index.
    fn set_route(&mut self, prefix: IpNet, route: Option<RemoteRoute>) {
        if let Some(old) = self.routes.remove(&prefix) {
            for hop in old.next_hops() {
                if let Some(set) = self.by_hop.get_mut(&hop) {
                    set.remove(&prefix);
                    if set.is_empty() {
                        self.by_hop.remove(&hop);
                    }
                }
            }
        }
        if let Some(r) = route {
            for hop in r.next_hops() {
                self.by_hop.entry(hop).or_default().insert(prefix);
            }
            self.routes.insert(prefix, r);
        }
    }

    /// Works out `prefix`'s route again; true when its problems changed.
    fn resolve(&mut self, prefix: IpNet, delta: &mut DesiredDelta) -> bool {
        let entry = match self.routes.get(&prefix) {
            Some(r) => {
                let by_node_ip = &self.by_node_ip;
                let vtep_at = |ip: IpAddr| {
                    by_node_ip
                        .get(&ip)
                        .and_then(|s| s.first())
                        .map(|v| v.tunnel_ip)
                };
                desired::remote_entry(&self.base, &self.d, &vtep_at, &self.own, r)
            }
            None => desired::RemoteEntry::default(),
        };
        let was_shadowed = self.d.shadowed.contains(&prefix);
        if entry.shadowed != was_shadowed {
            delta.shadowed.push((prefix, entry.shadowed));
            if entry.shadowed {
                self.d.shadowed.insert(prefix);
            } else {
                self.d.shadowed.remove(&prefix);
            }
        }
        // What is this node's own or configured keeps its route.
        let want = match self.fixed.get(&prefix) {
            Some(f) => Some(f.clone()),
            None => entry.route,
        };
        if self.d.routes.get(&prefix) != want.as_ref() {
            match &want {
                Some(r) => {
                    self.d.routes.insert(prefix, r.clone());
                }
                None => {
                    self.d.routes.remove(&prefix);
                }
            }
            delta.routes.push((prefix, want));
        }
        let old = if entry.problems.is_empty() {
            self.route_problems.remove(&prefix)
        } else {
            self.route_problems.insert(prefix, entry.problems.clone())
        };
        old.unwrap_or_default() != entry.problems
    }
}

/// The desired state's VTEP list of `v`'s family.
fn family_list<'a>(d: &'a mut Desired, v: &Vtep) -> &'a mut Vec<Vtep> {
    if v.node_ip.is_ipv4() {
        &mut d.vteps
    } else {
        &mut d.vteps_v6
    }
}

/// The delta's VTEP list of `v`'s family.
fn list_of<'a>(delta: &'a mut DesiredDelta, v: &Vtep) -> &'a mut Vec<(Vtep, bool)> {
    if v.node_ip.is_ipv4() {
        &mut delta.vteps
    } else {
        &mut delta.vteps_v6
    }
}

#[cfg(test)]
#[path = "incremental_tests.rs"]
mod tests;
