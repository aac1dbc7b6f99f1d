//! The peerings kept current one event at a time. A Node event recomputes only the sessions
//! with that node (its mesh, `peerSelector` and reverse sessions; the `peerIP` sessions too
//! when one of its addresses is a BGPPeer's), where [`plan`](super::plan) walks the whole
//! model: bgpd's CPU per Node change grew with N (issue 12). Every other event replans in
//! full. Each replan answers with what changed against the previous one, so the speaker is
//! told about the changed neighbours only.
//!
//! The result is always the one [`plan`](super::plan) gives for the same model
//! (`bgp/tests/cluster_peerings/incremental.rs` checks it after random event sequences).

use super::candidates::Ranked;
use super::peerings::{
    Local, Model, PeeringError, Rank, Want, addrs, head, ip_sessions, neighbor, node_wants,
};
use crate::config::{Config, Neighbor};
use margay_datastore::resources::Node;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

/// What a replan changed, against the previous one.
#[derive(Debug, Default, PartialEq)]
pub struct Delta {
    /// The configuration besides the neighbours changed (or this is the first plan): the
    /// speaker needs the whole of [`Planner::config`].
    pub head_changed: bool,
    /// Neighbours that are new or whose settings changed, by address.
    pub changed: Vec<Neighbor>,
    /// Addresses this node no longer peers with.
    pub removed: Vec<IpAddr>,
    /// Notes for the operator that were not there before (log each once).
    pub new_notes: Vec<String>,
}

impl Delta {
    /// Whether the speaker has nothing to do.
    pub fn is_empty(&self) -> bool {
        !self.head_changed && self.changed.is_empty() && self.removed.is_empty()
    }
}

/// A computation whose sessions are kept apart: one other node's, or the `peerIP` ones.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Part {
    Node(String),
    Ip,
}

/// What a part contributed: its sessions (address and rank) and its notes.
#[derive(Debug, Default)]
struct Contribution {
    sessions: Vec<(IpAddr, Rank)>,
    notes: BTreeSet<String>,
}

/// The planner: the model, every candidate session by address, and the neighbours planned.
#[derive(Debug)]
pub struct Planner {
    local: Local,
    model: Model,
    /// Which nodes have each address (for `peerIP` sessions to a node).
    index: HashMap<IpAddr, BTreeSet<String>>,
    /// The last plan without its neighbours, with its notes; `None` until a plan succeeds.
    head: Option<(Config, BTreeSet<String>)>,
    parts: HashMap<Part, Contribution>,
    /// Every session some part wants, per address, by rank: the first one is planned.
    candidates: HashMap<IpAddr, Ranked<Rank, Want>>,
    /// Every note of the head and the parts, with how many of them give it.
    notes: BTreeMap<String, usize>,
    /// The neighbours as last planned.
    /// Boxed: a neighbour is ~500 bytes, and a B-tree node has room for eleven of them,
    /// full or not (at 999 neighbours the map was ~950 KiB, ~500 KiB boxed; issue 12).
    neighbors: BTreeMap<IpAddr, Box<Neighbor>>,
    /// Nodes changed since the last replan, and the addresses they had or have.
    dirty: BTreeSet<String>,
    touched: BTreeSet<IpAddr>,
    /// Something besides other nodes changed: the next replan is a full one.
    full: bool,
}

impl Planner {
    /// A planner for `model`; the first [`Planner::replan`] plans in full.
    pub fn new(model: Model, local: Local) -> Planner {
        Planner {
            local,
            model,
            index: HashMap::new(),
            head: None,
            parts: HashMap::new(),
            candidates: HashMap::new(),
            notes: BTreeMap::new(),
            neighbors: BTreeMap::new(),
            dirty: BTreeSet::new(),
            touched: BTreeSet::new(),
            full: true,
        }
    }

    /// The model as it stands.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The model, for a change other than a Node's (use [`Planner::set_node`] for those): the
    /// next replan is a full one.
    pub fn edit(&mut self) -> &mut Model {
        self.full = true;
        &mut self.model
    }

    /// Makes the next replan a full one (a mounted password may have changed).
    pub fn replan_all(&mut self) {
        self.full = true;
    }

    /// A Node written (`Some`) or deleted (`None`).
    pub fn set_node(&mut self, name: &str, node: Option<Node>) {
        let old = match node {
            Some(n) => self.model.nodes.insert(name.to_string(), n),
            None => self.model.nodes.remove(name),
        };
        if name == self.local.node {
            self.full = true;
        }
        if let Some(old) = old {
            for a in addrs(&old) {
                if let Some(names) = self.index.get_mut(&a) {
                    names.remove(name);
                    if names.is_empty() {
                        self.index.remove(&a);
                    }
                }
                self.touched.insert(a);
            }
        }
        if let Some(new) = self.model.nodes.get(name) {
            for a in addrs(new) {
                self.index.entry(a).or_default().insert(name.to_string());
                self.touched.insert(a);
            }
        }
        self.dirty.insert(name.to_string());
    }

    /// The whole configuration as last planned (`None` before a plan succeeded).
    pub fn config(&self) -> Option<Config> {
        let (head, _) = self.head.as_ref()?;
        Some(Config {
            neighbors: self
                .neighbors
                .values()
                .map(|n| Neighbor::clone(n))
                .collect(),
            ..head.clone()
        })
    }

    /// The notes of the last plan.
    pub fn notes(&self) -> BTreeSet<String> {
        self.notes.keys().cloned().collect()
    }

    /// Plans what changed since the last replan and answers with the difference. On an
    /// error the planned neighbours stay as they were (the speaker keeps its sessions) and
    /// the next replan is a full one.
    pub fn replan(&mut self) -> Result<Delta, PeeringError> {
        if self.full || self.head.is_none() {
            return self.replan_full();
        }
        if self.dirty.is_empty() {
            return Ok(Delta::default());
        }
        let mut head_notes = BTreeSet::new();
        let (me, head_now) = match head(&self.model, &self.local, &mut head_notes) {
            Ok(v) => v,
            Err(_) => return self.replan_full(),
        };
        // The head depends on no other node; if it moved anyway (a mounted password
        // changed), everything is replanned.
        if self.head.as_ref() != Some(&(head_now, head_notes)) {
            return self.replan_full();
        }
        let ip_too = self.model.peers.values().any(|p| {
            p.spec
                .peer_addr()
                .is_some_and(|(a, _)| self.touched.contains(&a))
        });
        let mut parts: Vec<Part> = std::mem::take(&mut self.dirty)
            .into_iter()
            .map(Part::Node)
            .collect();
        if ip_too {
            parts.push(Part::Ip);
        }
        self.touched.clear();
        let mut affected = BTreeSet::new();
        let mut delta = Delta::default();
        for part in parts {
            let mut notes = BTreeSet::new();
            let wants = part_wants(&self.model, &self.index, &me, &part, &mut notes);
            let old = self.parts.remove(&part).unwrap_or_default();
            let new = contribution(wants, notes, &mut self.candidates, &mut affected);
            retract(&old, &new, &mut self.candidates, &mut affected);
            count_notes(
                &mut self.notes,
                &old.notes,
                &new.notes,
                &mut delta.new_notes,
            );
            if !new.sessions.is_empty() || !new.notes.is_empty() {
                self.parts.insert(part, new);
            }
        }
        let mine = addrs(me.node);
        self.settle(&affected, &mine, &mut delta);
        Ok(delta)
    }

    /// Plans the whole model again and answers with the difference against the last plan.
    fn replan_full(&mut self) -> Result<Delta, PeeringError> {
        self.full = true;
        self.dirty.clear();
        self.touched.clear();
        self.index.clear();
        for (name, n) in &self.model.nodes {
            for a in addrs(n) {
                self.index.entry(a).or_default().insert(name.clone());
            }
        }
        let mut head_notes = BTreeSet::new();
        let (me, head_now) = head(&self.model, &self.local, &mut head_notes)?;
        let mut delta = Delta {
            head_changed: self.head.as_ref().map(|(h, _)| h) != Some(&head_now),
            ..Delta::default()
        };
        let mut candidates = HashMap::new();
        let mut parts = HashMap::new();
        let mut notes = BTreeMap::new();
        count_notes(&mut notes, &BTreeSet::new(), &head_notes, &mut Vec::new());
        let mut affected = BTreeSet::new();
        let all = self
            .model
            .nodes
            .keys()
            .cloned()
            .map(Part::Node)
            .chain([Part::Ip]);
        for part in all {
            let mut part_notes = BTreeSet::new();
            let wants = part_wants(&self.model, &self.index, &me, &part, &mut part_notes);
            let c = contribution(wants, part_notes, &mut candidates, &mut affected);
            count_notes(&mut notes, &BTreeSet::new(), &c.notes, &mut Vec::new());
            if !c.sessions.is_empty() || !c.notes.is_empty() {
                parts.insert(part, c);
            }
        }
        delta.new_notes = notes
            .keys()
            .filter(|n| !self.notes.contains_key(*n))
            .cloned()
            .collect();
        // Every address planned before or now is looked at again.
        affected.extend(self.neighbors.keys().copied());
        self.candidates = candidates;
        self.parts = parts;
        self.notes = notes;
        let mine = addrs(me.node);
        self.settle(&affected, &mine, &mut delta);
        self.head = Some((head_now, head_notes));
        self.full = false;
        Ok(delta)
    }

    /// The planned neighbour of each address in `affected` made current: the first candidate
    /// by rank, none for this node's own addresses; what differs goes into `delta`.
    fn settle(&mut self, affected: &BTreeSet<IpAddr>, mine: &[IpAddr], delta: &mut Delta) {
        for a in affected {
            let winner = self
                .candidates
                .get(a)
                .filter(|_| !mine.contains(a))
                .and_then(|c| c.first());
            match winner {
                Some(w) => {
                    let n = neighbor(w.clone(), &self.local);
                    if self.neighbors.get(a).map(|b| &**b) != Some(&n) {
                        self.neighbors.insert(*a, Box::new(n.clone()));
                        delta.changed.push(n);
                    }
                }
                None => {
                    if self.neighbors.remove(a).is_some() {
                        delta.removed.push(*a);
                    }
                }
            }
        }
    }
}

/// The sessions `part` wants, as [`plan`](super::plan) computes them for it.
fn part_wants(
    model: &Model,
    index: &HashMap<IpAddr, BTreeSet<String>>,
    me: &super::peerings::Me,
    part: &Part,
    notes: &mut BTreeSet<String>,
) -> Vec<Want> {
    let mut wants = Vec::new();
    match part {
        Part::Node(name) => {
            if let Some(other) = model.nodes.get(name) {
                node_wants(model, me, other, notes, &mut wants);
            }
        }
        Part::Ip => {
            // The first node by name that has the address, as `plan`'s scan finds it.
            let node_at = |a: IpAddr| {
                index
                    .get(&a)
                    .and_then(|names| names.first())
                    .and_then(|n| model.nodes.get(n))
            };
            ip_sessions(model, me, &node_at, notes, &mut wants);
        }
    }
    wants
}

/// Adds `wants` to the candidates (marking their addresses affected) and answers with what
/// they are.
fn contribution(
    wants: Vec<Want>,
    notes: BTreeSet<String>,
    candidates: &mut HashMap<IpAddr, Ranked<Rank, Want>>,
    affected: &mut BTreeSet<IpAddr>,
) -> Contribution {
    let mut sessions = Vec::with_capacity(wants.len());
    for w in wants {
        let rank = w.rank();
        sessions.push((w.address, rank.clone()));
        affected.insert(w.address);
        candidates.entry(w.address).or_default().insert(rank, w);
    }
    Contribution { sessions, notes }
}

/// Takes out of the candidates what `old` contributed and `new` does not (what `new` also has
/// was replaced by [`contribution`] already).
fn retract(
    old: &Contribution,
    new: &Contribution,
    candidates: &mut HashMap<IpAddr, Ranked<Rank, Want>>,
    affected: &mut BTreeSet<IpAddr>,
) {
    for (a, rank) in &old.sessions {
        if new.sessions.iter().any(|(na, nr)| na == a && nr == rank) {
            continue;
        }
        affected.insert(*a);
        if let Some(c) = candidates.get_mut(a) {
            c.remove(rank);
            if c.is_empty() {
                candidates.remove(a);
            }
        }
    }
}

/// Moves the note counts from `old` to `new`, listing in `appeared` each note that was given
/// by nothing before.
fn count_notes(
    counts: &mut BTreeMap<String, usize>,
    old: &BTreeSet<String>,
    new: &BTreeSet<String>,
    appeared: &mut Vec<String>,
) {
    for n in new.difference(old) {
        let c = counts.entry(n.clone()).or_insert(0);
        if *c == 0 {
            appeared.push(n.clone());
        }
        *c += 1;
    }
    for n in old.difference(new) {
        if let Some(c) = counts.get_mut(n) {
            *c -= 1;
            if *c == 0 {
                counts.remove(n);
            }
        }
    }
}
