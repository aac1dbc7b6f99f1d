//! IPAM's remote routes (the `vxlan` and `none` backends, [`super::ipam_routes`]) kept change
//! by change, so felix's CPU per Node, block or pod change does not grow with the number of
//! nodes (issue 12). Each block affinity and each other node's pod is a source of routes (a
//! block, the addresses a pod borrowed); a changed Node re-evaluates only its own blocks and
//! pods, a changed affinity its block and the pods of its node (whether an address is borrowed
//! depends on the node's blocks), a changed pod itself. Several sources may give one prefix:
//! the one the whole computation would insert last wins (blocks before pods, each by key), so
//! the kept routes and problems always equal [`super::ipam_routes::remote_routes`] of the
//! state. Anything else (the pools, a resync) is taken whole again ([`IpamRoutes::new`]).
//! Pure: no I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use super::ipam_routes::{family, node_ip, problems, vxlan_pool};
use super::state::{Changed, ClusterState};

/// Where routes come from, ordered as the whole computation inserts them (the last wins).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    /// A block affinity, by key.
    Block(String),
    /// Another node's pod, by `namespace/name`.
    Pod(String),
}

/// What a source gives, one item per block or address.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Out {
    /// A route to the prefix through the node's address.
    Route(IpNet, IpAddr),
    /// The node has no address of this family: nothing routed, one problem more.
    Missing(String, u8),
}

/// The remote routes and their indexes.
#[derive(Debug, Clone, Default)]
pub struct IpamRoutes {
    /// This node's name: its own blocks and pods are not remote.
    node: String,
    /// Each affinity's node, by key, as last taken.
    block_node: BTreeMap<String, String>,
    /// Each node's blocks (affinity key → block).
    blocks_of: BTreeMap<String, BTreeMap<String, IpNet>>,
    /// Each pod's node, by key, as last taken.
    pod_node: BTreeMap<String, String>,
    /// Each node's pods.
    pods_of: BTreeMap<String, BTreeSet<String>>,
    /// What each source gives now (sources that give nothing are left out).
    out: BTreeMap<Source, Vec<Out>>,
    /// The sources giving each prefix, with the node address each gives.
    givers: BTreeMap<IpNet, BTreeMap<Source, IpAddr>>,
    /// The routes: each prefix through its last giver's address.
    routes: BTreeMap<IpNet, IpAddr>,
    /// Blocks and addresses left out, by node and family.
    missing: BTreeMap<(String, u8), usize>,
    /// The problems `missing` says.
    problems: Vec<String>,
}

impl IpamRoutes {
    /// Takes the whole state (O(N)): at the start, and after a change of anything but another
    /// node's Node, block or pod.
    pub fn new(state: &ClusterState) -> IpamRoutes {
        let mut k = IpamRoutes {
            node: state.node.clone(),
            ..IpamRoutes::default()
        };
        let mut sources = Vec::new();
        for (key, a) in &state.block_affinities {
            k.set_block(key, Some((a.node.clone(), a.cidr)));
            sources.push(Source::Block(key.clone()));
        }
        for (key, ep) in &state.remote_endpoints {
            k.set_pod(key, Some(&ep.node));
            sources.push(Source::Pod(key.clone()));
        }
        k.refresh(state, sources);
        k
    }

    /// The routes now: prefix → the address of the node it lives on.
    pub fn routes(&self) -> &BTreeMap<IpNet, IpAddr> {
        &self.routes
    }

    /// The nodes without an address of a family some of their blocks or pods need.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    /// Takes the changes `keys` of `state` (what its change log gave since the last look);
    /// returns the prefixes whose route changed, each with its route now (`None`: gone).
    pub fn apply(
        &mut self,
        state: &ClusterState,
        keys: &BTreeSet<Changed>,
    ) -> Vec<(IpNet, Option<IpAddr>)> {
        let mut dirty = BTreeSet::new();
        for key in keys {
            match key {
                Changed::Node(name) => {
                    self.sources_of(name, &mut dirty);
                }
                Changed::Affinity(key) => {
                    let new = state
                        .block_affinities
                        .get(key)
                        .map(|a| (a.node.clone(), a.cidr));
                    let old = self.set_block(key, new.clone());
                    if old != new {
                        // Which of a node's pods' addresses are borrowed depends on its blocks.
                        for (node, _) in old.iter().chain(new.iter()) {
                            self.pods_of_node(node, &mut dirty);
                        }
                    }
                    dirty.insert(Source::Block(key.clone()));
                }
                Changed::Endpoint(key) => {
                    self.set_pod(
                        key,
                        state.remote_endpoints.get(key).map(|e| e.node.as_str()),
                    );
                    dirty.insert(Source::Pod(key.clone()));
                }
            }
        }
        self.refresh(state, dirty)
    }

    /// Node `node`'s blocks and pods.
    fn sources_of(&self, node: &str, into: &mut BTreeSet<Source>) {
        if let Some(blocks) = self.blocks_of.get(node) {
            into.extend(blocks.keys().map(|k| Source::Block(k.clone())));
        }
        self.pods_of_node(node, into);
    }

    fn pods_of_node(&self, node: &str, into: &mut BTreeSet<Source>) {
        if let Some(pods) = self.pods_of.get(node) {
            into.extend(pods.iter().map(|k| Source::Pod(k.clone())));
        }
    }

    /// Records affinity `key` as `now` (node, block; `None`: gone); returns what it was.
    fn set_block(&mut self, key: &str, now: Option<(String, IpNet)>) -> Option<(String, IpNet)> {
        let old = self.block_node.remove(key).and_then(|node| {
            let blocks = self.blocks_of.get_mut(&node)?;
            let cidr = blocks.remove(key)?;
            if blocks.is_empty() {
                self.blocks_of.remove(&node);
            }
            Some((node, cidr))
        });
        if let Some((node, cidr)) = now {
            self.block_node.insert(key.to_string(), node.clone());
            self.blocks_of
                .entry(node)
                .or_default()
                .insert(key.to_string(), cidr);
        }
        old
    }

    /// Records pod `key` as living on `node` (`None`: gone).
    fn set_pod(&mut self, key: &str, node: Option<&str>) {
        if let Some(old) = self.pod_node.remove(key)
            && let Some(pods) = self.pods_of.get_mut(&old)
        {
            pods.remove(key);
            if pods.is_empty() {
                self.pods_of.remove(&old);
            }
        }
        if let Some(node) = node {
            self.pod_node.insert(key.to_string(), node.to_string());
            self.pods_of
                .entry(node.to_string())
                .or_default()
                .insert(key.to_string());
        }
    }

    /// Evaluates `sources` again against `state`; returns the routes that changed.
    fn refresh(
        &mut self,
        state: &ClusterState,
        sources: impl IntoIterator<Item = Source>,
    ) -> Vec<(IpNet, Option<IpAddr>)> {
        let mut touched = BTreeSet::new();
        let mut missing_changed = false;
        for source in sources {
            let new = self.evaluate(state, &source);
            let old = self.out.remove(&source).unwrap_or_default();
            if old != new {
                for o in &old {
                    match o {
                        Out::Route(prefix, _) => {
                            if let Some(givers) = self.givers.get_mut(prefix) {
                                givers.remove(&source);
                                if givers.is_empty() {
                                    self.givers.remove(prefix);
                                }
                            }
                            touched.insert(*prefix);
                        }
                        Out::Missing(node, family) => {
                            let key = (node.clone(), *family);
                            if let Some(n) = self.missing.get_mut(&key) {
                                *n -= 1;
                                if *n == 0 {
                                    self.missing.remove(&key);
                                }
                            }
                            missing_changed = true;
                        }
                    }
                }
                for o in &new {
                    match o {
                        Out::Route(prefix, ip) => {
                            self.givers
                                .entry(*prefix)
                                .or_default()
                                .insert(source.clone(), *ip);
                            touched.insert(*prefix);
                        }
                        Out::Missing(node, family) => {
                            *self.missing.entry((node.clone(), *family)).or_default() += 1;
                            missing_changed = true;
                        }
                    }
                }
            }
            if !new.is_empty() {
                self.out.insert(source, new);
            }
        }
        let mut delta = Vec::new();
        for prefix in touched {
            let want = self
                .givers
                .get(&prefix)
                .and_then(|g| g.values().next_back())
                .copied();
            if self.routes.get(&prefix) != want.as_ref() {
                match want {
                    Some(ip) => self.routes.insert(prefix, ip),
                    None => self.routes.remove(&prefix),
                };
                delta.push((prefix, want));
            }
        }
        if missing_changed {
            self.problems = problems(
                self.missing
                    .iter()
                    .map(|((n, f), c)| ((n.as_str(), *f), *c)),
            );
        }
        delta
    }

    /// What `source` gives in `state`: as [`super::ipam_routes::remote_routes`] does, for it
    /// alone.
    fn evaluate(&self, state: &ClusterState, source: &Source) -> Vec<Out> {
        // The route to `prefix` (holding `ip`) through `node`, or its problem; nothing for a
        // deleted Node (its blocks wait for the IPAM collector).
        let reach = |node: &str, prefix: IpNet, ip: IpAddr| match node_ip(state, node, ip.is_ipv6())
        {
            Some(via) => Some(Out::Route(prefix, via)),
            None if !state.nodes.contains_key(node) => None,
            None => Some(Out::Missing(node.to_string(), family(ip))),
        };
        match source {
            Source::Block(key) => {
                let Some(a) = state.block_affinities.get(key) else {
                    return Vec::new();
                };
                if a.node == self.node || vxlan_pool(&state.pools, &a.cidr).is_none() {
                    return Vec::new();
                }
                reach(&a.node, a.cidr.trunc(), a.cidr.addr())
                    .into_iter()
                    .collect()
            }
            Source::Pod(key) => {
                let Some(ep) = state.remote_endpoints.get(key) else {
                    return Vec::new();
                };
                if ep.node == self.node {
                    return Vec::new();
                }
                let own = self.blocks_of.get(&ep.node);
                ep.ips
                    .iter()
                    .filter(|ip| !own.is_some_and(|bs| bs.values().any(|b| b.contains(*ip))))
                    .filter_map(|ip| {
                        let host = IpNet::from(*ip);
                        vxlan_pool(&state.pools, &host)?;
                        reach(&ep.node, host, *ip)
                    })
                    .collect()
            }
        }
    }
}

#[cfg(test)]
#[path = "ipam_incremental_tests.rs"]
mod tests;
