//! The RIB: Adj-RIBs-In, Loc-RIB, the decision process, route reflection and export, pure.
//!
//! [`Rib`] is the facade the speaker drives: sessions come up and go down, UPDATEs arrive,
//! prefixes are originated, and each call returns the [`Export`]s to send. No I/O, no clock.
//!
//! - [`intern`]: one shared `Arc` per distinct attribute set;
//! - [`table`]: the paths of each prefix, best first;
//! - [`decision`]: which path is best;
//! - [`import`]: checks on receipt;
//! - [`export`]: outgoing attributes, reflection rules and update groups;
//! - [`stale`]: graceful restart's stale paths (RFC 4724 §4.2), kept when a session is lost.

pub mod decision;
pub mod export;
pub mod import;
pub mod intern;
mod policy;
mod refresh;
mod stale;
pub mod table;

use crate::policy::{ExportPolicy, FilterChain, Role, RouteFacts, RouteSource};
use crate::wire::{CodecContext, Family, MpNextHop, Origin, PathAttributes, Prefix, Update};
use decision::{Candidate, DEFAULT_LOCAL_PREF};
use export::{Audience, Batch, ExportBuilder, GroupKey, PeerKind, Source, UpdateGroup};
use intern::{Interner, StoredAttrs};
use ipnet::{Ipv4Net, Ipv6Net};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use table::{Path, Paths, Table};

pub use table::LOCAL_PEER;

/// The speaker's handle for a peer. [`LOCAL_PEER`] (`u32::MAX`) is reserved.
pub type PeerId = u32;

/// Which next hop routes leave with towards a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum NextHopMode {
    /// iBGP: keep the received next hop; eBGP: our address on the session.
    #[default]
    Auto,
    /// Always our address on the session.
    SelfAddr,
    /// Always the received next hop (our address for local routes without one).
    Keep,
}

/// This speaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalConfig {
    pub asn: u32,
    pub router_id: Ipv4Addr,
    /// The CLUSTER_ID when reflecting; defaults to `router_id`.
    pub cluster_id: Option<Ipv4Addr>,
}

impl LocalConfig {
    /// The CLUSTER_ID in force (RFC 4456 §7: the router id unless configured).
    pub fn effective_cluster_id(&self) -> Ipv4Addr {
        self.cluster_id.unwrap_or(self.router_id)
    }
}

/// What the RIB knows of an established session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    pub address: IpAddr,
    pub asn: u32,
    /// The peer is a route reflection client of ours.
    pub rr_client: bool,
    pub next_hop: NextHopMode,
    /// Negotiated families.
    pub families: Vec<Family>,
    /// Our end of the session, for next-hop-self.
    pub local_address: IpAddr,
    /// The subnet our end of the session sits on, when the peer's address is inside it too:
    /// next hops on it are passed on to an eBGP peer unchanged (RFC 4271 §5.1.3, as BIRD does),
    /// so a ToR forwards straight to the node that owns a block.
    pub shared_subnet: Option<ipnet::IpNet>,
    /// The BGP Identifier from its OPEN.
    pub router_id: Ipv4Addr,
    /// Opaque to the RIB: part of the update-group key.
    pub ctx: CodecContext,
    /// Cluster node or external router: whether its routes are the cluster's own.
    pub role: Role,
    /// The interface the session runs over (what a rule's `interface` matches).
    pub interface: Option<Arc<str>>,
    /// What the peer is sent (part of the update-group key).
    pub export: Arc<ExportPolicy>,
    /// What is accepted from the peer.
    pub import: Arc<FilterChain>,
    /// How often our AS may appear in a received AS_PATH (allowas-in).
    pub allow_own_as: u8,
    /// The AS we present on this session (`local-asn`; our AS by default): iBGP or eBGP is
    /// decided against it, eBGP routes leave with it prepended, and it is the AS of the loop
    /// check (as BIRD's `local as`).
    pub local_asn: u32,
}

impl PeerInfo {
    /// A peer with the neutral policy: the role its AS gives, no filter, no pool.
    pub fn new(
        local: &LocalConfig,
        address: IpAddr,
        asn: u32,
        local_address: IpAddr,
        router_id: Ipv4Addr,
        families: Vec<Family>,
    ) -> PeerInfo {
        PeerInfo {
            address,
            asn,
            rr_client: false,
            next_hop: NextHopMode::Auto,
            families,
            local_address,
            shared_subnet: None,
            router_id,
            ctx: CodecContext::default(),
            role: if asn == local.asn {
                Role::Cluster
            } else {
                Role::External
            },
            interface: None,
            export: Arc::default(),
            import: Arc::default(),
            allow_own_as: 0,
            local_asn: local.asn,
        }
    }
}

/// Prefix counts for one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PeerCounters {
    /// Prefixes currently held from the peer, accepted or not.
    pub received: u64,
    /// Prefixes that passed the import checks.
    pub accepted: u64,
    /// Prefixes currently advertised to the peer.
    pub advertised: u64,
}

/// One path as the outside sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteView {
    pub prefix: Prefix,
    pub attrs: Arc<PathAttributes>,
    /// The next hop as received (unspecified for a local route originated without one).
    pub next_hop: IpAddr,
    /// None for a locally originated route.
    pub peer: Option<PeerId>,
    pub best: bool,
    /// The next hops of the multipath (ECMP) set of a best path, its own first, when the set
    /// has more than one (see [`Rib::set_max_paths`]); empty otherwise.
    pub multipath: Vec<IpAddr>,
}

/// One batch of outgoing changes for a set of peers that receive exactly the same bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// Sorted.
    pub peers: Vec<PeerId>,
    pub ctx: CodecContext,
    /// Grouped by outgoing attribute set.
    pub announce: Vec<(Arc<PathAttributes>, MpNextHop, Family, Vec<Prefix>)>,
    pub withdraw: Vec<(Family, Vec<Prefix>)>,
}

/// A change of the Loc-RIB: the new best path of `prefix`, or None when it has none left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BestChange {
    pub prefix: Prefix,
    pub route: Option<RouteView>,
}

#[derive(Debug)]
struct PeerState {
    info: PeerInfo,
    kind: PeerKind,
    group: u32,
    accepted: u64,
    /// The IPv6 part of `accepted` (per-family counts serve prefix limits).
    accepted_v6: u64,
    /// Prefixes held from the peer that failed the import checks (so they count as received
    /// until withdrawn).
    rejected: HashSet<Prefix>,
    /// The prefixes of `rejected` that only an import filter turned away, with their
    /// attributes (one interner user each): an import change re-evaluates them at once.
    filtered: HashMap<Prefix, Arc<StoredAttrs>>,
    advertised: u64,
    /// Bumped each time the session is lost with its paths kept: paths of older epochs are
    /// stale.
    epoch: u32,
    /// The session is Established (false while its stale paths wait for it to come back).
    up: bool,
    /// Paths of older epochs still held.
    stale: u64,
    /// Families in an enhanced route refresh (RFC 7313) from this peer, each with the prefixes
    /// it held at Begin-of-RR that it has not re-sent since.
    refreshing: Vec<(Family, HashSet<Prefix>)>,
}

/// Prefixes touched by one operation, each with the best path it had before: exports are
/// derived from (best before, best after) once per prefix, however often it was touched.
#[derive(Default)]
struct Touched {
    /// (prefix, best path before, multipath next hops before).
    list: Vec<(Prefix, Option<Path>, Vec<IpAddr>)>,
    seen: HashSet<Prefix>,
}

/// The routing information base of one speaker.
#[derive(Debug)]
pub struct Rib {
    local: LocalConfig,
    /// Boxed: a peer's state is a few hundred bytes, and the map's spare buckets (up to
    /// as many again as peers) would hold that much each (issue 12).
    peers: HashMap<PeerId, Box<PeerState>>,
    groups: BTreeMap<u32, UpdateGroup>,
    next_group: u32,
    v4: Table<Ipv4Net>,
    v6: Table<Ipv6Net>,
    attrs: Interner<PathAttributes>,
    stored: Interner<StoredAttrs>,
    best_changes: Vec<BestChange>,
    track_best_changes: bool,
    /// Most paths of one multipath route (1: best path only).
    max_paths: usize,
}

fn source<'a>(
    local: &LocalConfig,
    peers: &'a HashMap<PeerId, Box<PeerState>>,
    peer: PeerId,
) -> Source<'a> {
    match peers.get(&peer) {
        Some(s) => Source {
            kind: Some(s.kind),
            router_id: s.info.router_id,
            role: Some(s.info.role),
            interface: s.info.interface.as_deref(),
        },
        None => Source {
            kind: None,
            router_id: local.router_id,
            role: None,
            interface: None,
        },
    }
}

fn candidate<'a>(
    local: &LocalConfig,
    peers: &HashMap<PeerId, Box<PeerState>>,
    path: &'a Path,
) -> Candidate<'a> {
    let peer = peers.get(&path.peer);
    Candidate {
        attrs: &path.attrs.attrs,
        local: path.is_local(),
        ebgp: peer.is_some_and(|s| s.kind == PeerKind::Ebgp),
        router_id: peer.map_or(local.router_id, |s| s.info.router_id),
        address: peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |s| s.info.address),
    }
}

/// The next hops of `paths`' multipath set ([`decision::equal_best`]): its best path's first,
/// then those of the equal paths (each next hop once, none unspecified), at most `max` of them;
/// empty unless that makes two or more.
fn ecmp_next_hops(
    paths: &Paths,
    local: &LocalConfig,
    peers: &HashMap<PeerId, Box<PeerState>>,
    max: usize,
) -> Vec<IpAddr> {
    let Paths::Many(v) = paths else {
        return Vec::new();
    };
    if max < 2 || v[0].is_local() {
        return Vec::new();
    }
    let candidates: Vec<Candidate<'_>> = v.iter().map(|p| candidate(local, peers, p)).collect();
    let mut hops: Vec<IpAddr> = Vec::with_capacity(max);
    // The best path (first) leads even when a tie break the set ignores would order it later.
    let set = std::iter::once(0).chain(
        decision::equal_best(&candidates, local.asn)
            .into_iter()
            .filter(|&i| i != 0),
    );
    for i in set {
        let Some(nh) = v[i].attrs.next_hop.map(|n| n.addr()) else {
            continue;
        };
        if !nh.is_unspecified() && !hops.contains(&nh) {
            hops.push(nh);
        }
        if hops.len() == max {
            break;
        }
    }
    if hops.len() < 2 {
        hops.clear();
    }
    hops
}

/// Runs the decision process over a prefix's paths and moves the winner first.
fn reselect(paths: &mut Paths, local: &LocalConfig, peers: &HashMap<PeerId, Box<PeerState>>) {
    if let Paths::Many(v) = paths {
        let candidates: Vec<Candidate<'_>> = v.iter().map(|p| candidate(local, peers, p)).collect();
        let best = decision::best_index(&candidates, local.asn);
        paths.promote(best);
    }
}

fn view(prefix: Prefix, path: &Path, best: bool) -> RouteView {
    let unspecified = match prefix {
        Prefix::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        Prefix::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    RouteView {
        prefix,
        attrs: Arc::clone(&path.attrs.attrs),
        next_hop: path.attrs.next_hop.map_or(unspecified, |n| n.addr()),
        peer: (!path.is_local()).then_some(path.peer),
        best,
        multipath: Vec::new(),
    }
}

fn views(prefix: Prefix, paths: &Paths) -> impl Iterator<Item = RouteView> + '_ {
    paths
        .as_slice()
        .iter()
        .enumerate()
        .map(move |(i, p)| view(prefix, p, i == 0))
}

impl Rib {
    pub fn new(local: LocalConfig) -> Rib {
        Rib {
            local,
            peers: HashMap::new(),
            groups: BTreeMap::new(),
            next_group: 0,
            v4: Table::default(),
            v6: Table::default(),
            attrs: Interner::default(),
            stored: Interner::default(),
            best_changes: Vec::new(),
            track_best_changes: true,
            max_paths: 1,
        }
    }

    /// Most paths one multipath route may use (BIRD's `merge paths ... limit`); 1, the
    /// default, keeps the best path only. A change is recorded as a best path change of every
    /// prefix whose multipath set it changes.
    pub fn set_max_paths(&mut self, max: usize) {
        let max = max.max(1);
        if max == self.max_paths {
            return;
        }
        let old = self.max_paths;
        self.max_paths = max;
        if !self.track_best_changes {
            return;
        }
        let (local, peers) = (&self.local, &self.peers);
        let v4 = self.v4.iter().map(|(k, ps)| (Prefix::V4(*k), ps));
        let v6 = self.v6.iter().map(|(k, ps)| (Prefix::V6(*k), ps));
        for (prefix, paths) in v4.chain(v6) {
            if !matches!(paths, Paths::Many(_)) {
                continue;
            }
            let now = ecmp_next_hops(paths, local, peers, max);
            if now != ecmp_next_hops(paths, local, peers, old) {
                let mut v = view(prefix, paths.best(), true);
                v.multipath = now;
                self.best_changes.push(BestChange {
                    prefix,
                    route: Some(v),
                });
            }
        }
    }

    pub fn max_paths(&self) -> usize {
        self.max_paths
    }

    /// The best path of a prefix with its multipath next hops.
    fn best_view(&self, prefix: Prefix, paths: &Paths) -> RouteView {
        let mut v = view(prefix, paths.best(), true);
        v.multipath = ecmp_next_hops(paths, &self.local, &self.peers, self.max_paths);
        v
    }

    pub fn local(&self) -> &LocalConfig {
        &self.local
    }

    /// Whether best path changes are recorded for [`Rib::take_best_changes`] (on by default;
    /// turn off when nobody drains them).
    pub fn set_track_best_changes(&mut self, on: bool) {
        self.track_best_changes = on;
        if !on {
            self.best_changes = Vec::new();
        }
    }

    /// A session came up: joins the peer to its update group and returns the current table
    /// for it. End-of-RIB is the caller's to send.
    ///
    /// A peer whose paths were kept stale ([`Rib::peer_lost`]) keeps them: they stay until
    /// [`Rib::sweep_stale`] (End-of-RIB or the stale timer). If the peer comes back as another
    /// kind of peer (iBGP/eBGP, client), they are flushed first.
    pub fn peer_up(&mut self, id: PeerId, info: PeerInfo) -> Vec<Export> {
        let mut exports = Vec::new();
        if let Some(state) = self.peers.get(&id) {
            if !state.up && state.kind == PeerKind::of(&info) {
                return self.rejoin(id, info);
            }
            exports = self.peer_down(id);
        }
        if id == LOCAL_PEER {
            tracing::warn!(id, "peer id reserved for local routes");
            return exports;
        }
        let key = GroupKey::of(&info);
        let gid = self.group_for(key);
        let kind = PeerKind::of(&info);
        self.peers.insert(
            id,
            Box::new(PeerState {
                info,
                kind,
                group: gid,
                accepted: 0,
                accepted_v6: 0,
                rejected: HashSet::new(),
                filtered: HashMap::new(),
                advertised: 0,
                epoch: 0,
                up: true,
                stale: 0,
                refreshing: Vec::new(),
            }),
        );
        if let Some(group) = self.groups.get_mut(&gid) {
            group.add(id);
        }
        exports.extend(self.table_for(id, None));
        exports
    }

    /// The update group of `key`, created when no group has it yet.
    fn group_for(&mut self, key: GroupKey) -> u32 {
        if let Some((&gid, _)) = self.groups.iter().find(|(_, g)| g.key == key) {
            return gid;
        }
        let gid = self.next_group;
        self.next_group += 1;
        self.groups.insert(gid, UpdateGroup::new(key));
        gid
    }

    /// Every best route the export rules give peer `id`, addressed to it alone: of one family,
    /// or of every family its update group carries.
    fn table_for(&mut self, id: PeerId, only: Option<Family>) -> Vec<Export> {
        let Some(gid) = self.peers.get(&id).map(|p| p.group) else {
            return Vec::new();
        };
        let Some(group) = self.groups.get_mut(&gid) else {
            return Vec::new();
        };
        let key = group.key.clone();
        let mut batch = Batch::default();
        let (local, peers) = (&self.local, &self.peers);
        let mut offer = |prefix: Prefix, paths: &Paths, family: Family| {
            let best = paths.best();
            let src = source(local, peers, best.peer);
            if best.peer != id
                && let Some(out) = group.outgoing(local, &src, best, family, prefix)
            {
                batch.announce(&out, family, prefix);
                batch.added += 1;
            }
        };
        let wanted = |f: Family| key.has_family(f) && only.is_none_or(|o| o == f);
        if wanted(Family::Ipv4Unicast) {
            for (k, paths) in self.v4.iter() {
                offer(Prefix::V4(*k), paths, Family::Ipv4Unicast);
            }
        }
        if wanted(Family::Ipv6Unicast) {
            for (k, paths) in self.v6.iter() {
                offer(Prefix::V6(*k), paths, Family::Ipv6Unicast);
            }
        }
        let mut builder = ExportBuilder::default();
        *builder.batch(gid, Audience::Only(id)) = batch;
        self.finish_exports(builder)
    }

    /// A session went down: flushes the peer's paths and exports the consequences.
    pub fn peer_down(&mut self, id: PeerId) -> Vec<Export> {
        self.clear_filtered(id);
        let Some(state) = self.peers.get(&id) else {
            return Vec::new();
        };
        if let Some(g) = self.groups.get_mut(&state.group) {
            g.remove(id);
        }
        let mut prefixes: Vec<Prefix> = self
            .v4
            .iter()
            .filter(|(_, ps)| ps.from_peer(id).is_some())
            .map(|(k, _)| Prefix::V4(*k))
            .collect();
        prefixes.extend(
            self.v6
                .iter()
                .filter(|(_, ps)| ps.from_peer(id).is_some())
                .map(|(k, _)| Prefix::V6(*k)),
        );
        let mut touched = Touched::default();
        for prefix in prefixes {
            self.remove_path(prefix, id, &mut touched);
        }
        let exports = self.finish(touched);
        self.forget(id);
        exports
    }

    /// Drops the state of a peer whose paths are gone.
    fn forget(&mut self, id: PeerId) {
        let Some(state) = self.peers.remove(&id) else {
            return;
        };
        for g in self.groups.values_mut() {
            g.forget_peer(id);
        }
        if self
            .groups
            .get(&state.group)
            .is_some_and(|g| g.members.is_empty())
        {
            self.groups.remove(&state.group);
        }
    }

    /// Applies an UPDATE from `id`: withdrawals (treat-as-withdraw included) first, then
    /// announcements.
    pub fn apply_update(&mut self, id: PeerId, update: &Update) -> Vec<Export> {
        if !self.peers.get(&id).is_some_and(|s| s.up) {
            tracing::warn!(id, "UPDATE from a peer that is not up");
            return Vec::new();
        }
        self.note_refreshed(id, update);
        let mut touched = Touched::default();
        for prefix in update.all_withdrawn() {
            let prefix = prefix.trunc();
            self.remove_path(prefix, id, &mut touched);
            if let Some(s) = self.peers.get_mut(&id) {
                s.rejected.remove(&prefix);
            }
            self.drop_filtered(id, prefix);
        }
        if let Some(reason) = &update.treat_as_withdraw {
            tracing::debug!(id, reason, "UPDATE treated as withdraw");
        } else {
            if !update.nlri.is_empty() {
                let nh = update.attributes.next_hop.map(MpNextHop::V4);
                let prefixes = update.nlri.iter().map(|p| Prefix::V4(p.trunc()));
                self.announce(
                    id,
                    &update.attributes,
                    Family::Ipv4Unicast,
                    nh,
                    prefixes,
                    &mut touched,
                );
            }
            if let Some(r) = &update.mp_reach {
                let prefixes = r.nlri.iter().map(|p| p.trunc());
                self.announce(
                    id,
                    &update.attributes,
                    r.family,
                    Some(r.next_hop),
                    prefixes,
                    &mut touched,
                );
            }
        }
        self.finish(touched)
    }

    /// Originates `prefix` (ORIGIN IGP, empty AS_PATH). Without a next hop, each session uses
    /// our address on it.
    pub fn originate(&mut self, prefix: Prefix, next_hop: Option<IpAddr>) -> Vec<Export> {
        let prefix = prefix.trunc();
        let next_hop = match (prefix, next_hop) {
            (Prefix::V4(_), Some(IpAddr::V4(a))) => Some(MpNextHop::V4(a)),
            (Prefix::V6(_), Some(IpAddr::V6(a))) => Some(MpNextHop::V6 {
                global: a,
                link_local: None,
            }),
            _ => None,
        };
        let attrs = PathAttributes {
            origin: Some(Origin::Igp),
            next_hop: match next_hop {
                Some(MpNextHop::V4(a)) => Some(a),
                _ => None,
            },
            local_pref: Some(DEFAULT_LOCAL_PREF),
            ..PathAttributes::default()
        };
        let stored = self.intern_stored(attrs, next_hop);
        let mut touched = Touched::default();
        self.stored.acquire(&stored);
        let path = Path {
            attrs: Arc::clone(&stored),
            peer: LOCAL_PEER,
            epoch: 0,
        };
        self.insert_path(prefix, path, &mut touched);
        self.release_stored(&stored);
        self.finish(touched)
    }

    /// Stops originating `prefix`.
    pub fn withdraw_local(&mut self, prefix: Prefix) -> Vec<Export> {
        let mut touched = Touched::default();
        self.remove_path(prefix.trunc(), LOCAL_PEER, &mut touched);
        self.finish(touched)
    }

    /// The best path of `prefix`.
    pub fn best(&self, prefix: &Prefix) -> Option<RouteView> {
        let prefix = prefix.trunc();
        self.paths(&prefix).map(|ps| self.best_view(prefix, ps))
    }

    /// The Loc-RIB of a family.
    pub fn iter_best(&self, family: Family) -> impl Iterator<Item = RouteView> + '_ {
        let v4 = (family == Family::Ipv4Unicast).then(|| {
            self.v4
                .iter()
                .map(|(k, ps)| self.best_view(Prefix::V4(*k), ps))
        });
        let v6 = (family == Family::Ipv6Unicast).then(|| {
            self.v6
                .iter()
                .map(|(k, ps)| self.best_view(Prefix::V6(*k), ps))
        });
        v4.into_iter().flatten().chain(v6.into_iter().flatten())
    }

    /// Every path of a family, the best ones flagged.
    pub fn iter_paths(&self, family: Family) -> impl Iterator<Item = RouteView> + '_ {
        let v4 = (family == Family::Ipv4Unicast)
            .then(|| self.v4.iter().flat_map(|(k, ps)| views(Prefix::V4(*k), ps)));
        let v6 = (family == Family::Ipv6Unicast)
            .then(|| self.v6.iter().flat_map(|(k, ps)| views(Prefix::V6(*k), ps)));
        v4.into_iter().flatten().chain(v6.into_iter().flatten())
    }

    /// The accepted paths of one peer (its Adj-RIB-In after import).
    pub fn iter_peer_paths(
        &self,
        id: PeerId,
        family: Family,
    ) -> impl Iterator<Item = RouteView> + '_ {
        self.iter_paths(family).filter(move |r| r.peer == Some(id))
    }

    /// Prefixes of `family` currently held from the peer, accepted or not (what a prefix
    /// limit counts).
    pub fn received_in(&self, id: PeerId, family: Family) -> u64 {
        self.peers.get(&id).map_or(0, |s| {
            let accepted = match family {
                Family::Ipv4Unicast => s.accepted.saturating_sub(s.accepted_v6),
                Family::Ipv6Unicast => s.accepted_v6,
            };
            let rejected = s
                .rejected
                .iter()
                .filter(|p| Family::of(p) == family)
                .count();
            accepted + rejected as u64
        })
    }

    pub fn counters(&self, id: PeerId) -> PeerCounters {
        self.peers
            .get(&id)
            .map(|s| PeerCounters {
                received: s.accepted + s.rejected.len() as u64,
                accepted: s.accepted,
                advertised: s.advertised,
            })
            .unwrap_or_default()
    }

    /// The Loc-RIB changes since the last call.
    pub fn take_best_changes(&mut self) -> Vec<BestChange> {
        std::mem::take(&mut self.best_changes)
    }

    /// Number of prefixes with at least one path.
    pub fn prefix_count(&self, family: Family) -> usize {
        match family {
            Family::Ipv4Unicast => self.v4.len(),
            Family::Ipv6Unicast => self.v6.len(),
        }
    }

    /// Number of distinct received attribute sets held.
    pub fn attr_sets(&self) -> usize {
        self.attrs.len()
    }

    /// Bytes held by the tables and interners, computed from their capacities.
    pub fn memory_estimate(&self) -> usize {
        self.v4.memory_estimate()
            + self.v6.memory_estimate()
            + self.attrs.memory_estimate()
            + self.stored.memory_estimate()
    }

    // ---- internals ----

    fn paths(&self, prefix: &Prefix) -> Option<&Paths> {
        match prefix {
            Prefix::V4(p) => self.v4.get(p),
            Prefix::V6(p) => self.v6.get(p),
        }
    }

    /// The multipath next hops of `prefix` (empty without a multipath set).
    fn ecmp(&self, prefix: &Prefix) -> Vec<IpAddr> {
        match self.paths(prefix) {
            Some(ps) if self.max_paths > 1 => {
                ecmp_next_hops(ps, &self.local, &self.peers, self.max_paths)
            }
            _ => Vec::new(),
        }
    }

    fn best_path(&self, prefix: &Prefix) -> Option<Path> {
        self.paths(prefix).map(|ps| ps.best().clone())
    }

    fn note(&self, prefix: Prefix, touched: &mut Touched) {
        if touched.seen.insert(prefix) {
            let ecmp = self.ecmp(&prefix);
            touched.list.push((prefix, self.best_path(&prefix), ecmp));
        }
    }

    /// Interns attributes and next hop; the result counts one user the caller must release.
    fn intern_stored(
        &mut self,
        attrs: PathAttributes,
        next_hop: Option<MpNextHop>,
    ) -> Arc<StoredAttrs> {
        let attrs = self.attrs.intern(attrs);
        let key = StoredAttrs {
            attrs: Arc::clone(&attrs),
            next_hop,
        };
        if self.stored.users(&key) > 0 {
            // Already held by the existing StoredAttrs: that one user is enough.
            self.attrs.release(&attrs);
        }
        self.stored.intern(key)
    }

    /// Releases one user of `stored`, freeing what only it held.
    fn release_stored(&mut self, stored: &Arc<StoredAttrs>) {
        if self.stored.release(stored) {
            self.attrs.release(&stored.attrs);
            for g in self.groups.values_mut() {
                g.forget_attrs(stored);
            }
        }
    }

    fn reselect(&mut self, prefix: &Prefix) {
        let (local, peers) = (&self.local, &self.peers);
        let paths = match prefix {
            Prefix::V4(p) => self.v4.get_mut(p),
            Prefix::V6(p) => self.v6.get_mut(p),
        };
        if let Some(paths) = paths {
            reselect(paths, local, peers);
        }
    }

    /// Adds a path whose `StoredAttrs` user was already counted.
    fn insert_path(&mut self, prefix: Prefix, path: Path, touched: &mut Touched) {
        self.note(prefix, touched);
        let peer = path.peer;
        let replaced = match prefix {
            Prefix::V4(p) => self.v4.insert(p, path),
            Prefix::V6(p) => self.v6.insert(p, path),
        };
        match replaced {
            Some(old) => {
                self.note_stale_gone(peer, old.epoch);
                self.release_stored(&old.attrs);
            }
            None => {
                if let Some(s) = self.peers.get_mut(&peer) {
                    s.accepted += 1;
                    s.accepted_v6 += u64::from(matches!(prefix, Prefix::V6(_)));
                }
            }
        }
        self.reselect(&prefix);
    }

    fn remove_path(&mut self, prefix: Prefix, peer: PeerId, touched: &mut Touched) {
        let present = self
            .paths(&prefix)
            .is_some_and(|ps| ps.from_peer(peer).is_some());
        if !present {
            return;
        }
        self.note(prefix, touched);
        let removed = match prefix {
            Prefix::V4(p) => self.v4.remove(&p, peer),
            Prefix::V6(p) => self.v6.remove(&p, peer),
        };
        if let Some(old) = removed {
            self.note_stale_gone(peer, old.epoch);
            self.release_stored(&old.attrs);
            if let Some(s) = self.peers.get_mut(&peer) {
                s.accepted = s.accepted.saturating_sub(1);
                if matches!(prefix, Prefix::V6(_)) {
                    s.accepted_v6 = s.accepted_v6.saturating_sub(1);
                }
            }
        }
        self.reselect(&prefix);
    }

    /// Imports and stores the paths of one announcement.
    fn announce(
        &mut self,
        id: PeerId,
        received: &PathAttributes,
        family: Family,
        next_hop: Option<MpNextHop>,
        prefixes: impl Iterator<Item = Prefix>,
        touched: &mut Touched,
    ) {
        let Some(state) = self.peers.get(&id) else {
            return;
        };
        let epoch = state.epoch;
        if !state.info.families.contains(&family) {
            tracing::debug!(id, %family, "announcement for a family not negotiated, ignored");
            return;
        }
        let (import_chain, interface, role) = (
            Arc::clone(&state.info.import),
            state.info.interface.clone(),
            state.info.role,
        );
        match import::import(&self.local, &state.info, received, family, next_hop) {
            Err(e) => {
                tracing::debug!(id, error = %e, "path not accepted");
                for prefix in prefixes.filter(|p| Family::of(p) == family) {
                    // An unacceptable re-announcement still replaces the previous path.
                    self.remove_path(prefix, id, touched);
                    if let Some(s) = self.peers.get_mut(&id) {
                        s.rejected.insert(prefix);
                    }
                    self.drop_filtered(id, prefix);
                }
            }
            Ok((attrs, next_hop)) => {
                let stored = self.intern_stored(attrs, Some(next_hop));
                for prefix in prefixes.filter(|p| Family::of(p) == family) {
                    let facts = RouteFacts {
                        prefix,
                        source: RouteSource::Peer(role),
                        interface: interface.as_deref(),
                    };
                    if !import_chain.accepts_import(&facts) {
                        // Rejected by an import filter: held as received, not accepted.
                        self.remove_path(prefix, id, touched);
                        self.hold_filtered(id, prefix, &stored);
                        continue;
                    }
                    self.stored.acquire(&stored);
                    let path = Path {
                        attrs: Arc::clone(&stored),
                        peer: id,
                        epoch,
                    };
                    self.insert_path(prefix, path, touched);
                    if let Some(s) = self.peers.get_mut(&id)
                        && !s.rejected.is_empty()
                    {
                        s.rejected.remove(&prefix);
                        self.drop_filtered(id, prefix);
                    }
                }
                self.release_stored(&stored);
            }
        }
    }

    /// Turns the touched prefixes into Loc-RIB changes and exports.
    fn finish(&mut self, touched: Touched) -> Vec<Export> {
        let mut builder = ExportBuilder::default();
        let mut direct: HashMap<PeerId, u64> = HashMap::new();
        for (prefix, old, old_ecmp) in touched.list {
            let new = self.best_path(&prefix);
            let new_ecmp = self.ecmp(&prefix);
            let same_best = match (&old, &new) {
                (Some(a), Some(b)) => a.same(b),
                (None, None) => true,
                _ => false,
            };
            if same_best && old_ecmp == new_ecmp {
                continue;
            }
            if self.track_best_changes {
                self.best_changes.push(BestChange {
                    prefix,
                    route: new.as_ref().map(|p| {
                        let mut v = view(prefix, p, true);
                        v.multipath = new_ecmp;
                        v
                    }),
                });
            }
            if same_best {
                // Only the multipath set changed: the best path peers are sent is the same.
                continue;
            }
            let family = Family::of(&prefix);
            let (local, peers) = (&self.local, &self.peers);
            let old = old.map(|p| {
                let src = source(local, peers, p.peer);
                (p, src)
            });
            let new = new.map(|p| {
                let src = source(local, peers, p.peer);
                (p, src)
            });
            for (&gid, g) in self.groups.iter_mut() {
                if !g.key.has_family(family) {
                    continue;
                }
                let had = old
                    .as_ref()
                    .filter(|(p, s)| g.key.admits(s, &p.attrs, family, prefix))
                    .map(|(p, _)| p.peer);
                let out = new.as_ref().and_then(|(p, s)| {
                    g.outgoing(local, s, p, family, prefix).map(|o| (p.peer, o))
                });
                match (had, out) {
                    (had, Some((new_peer, out))) => {
                        let new_in = g.has(new_peer);
                        let b = builder.batch(gid, Audience::AllBut(new_in.then_some(new_peer)));
                        b.announce(&out, family, prefix);
                        match had {
                            None => b.added += 1,
                            Some(old_peer) if old_peer != new_peer => {
                                // The old source now receives it for the first time...
                                if g.has(old_peer) {
                                    *direct.entry(old_peer).or_default() += 1;
                                }
                                // ...and the new source no longer may.
                                if new_in {
                                    let w = builder.batch(gid, Audience::Only(new_peer));
                                    w.withdraw(family, prefix);
                                    w.removed += 1;
                                }
                            }
                            Some(_) => {}
                        }
                    }
                    (Some(old_peer), None) => {
                        let old_in = g.has(old_peer);
                        let b = builder.batch(gid, Audience::AllBut(old_in.then_some(old_peer)));
                        b.withdraw(family, prefix);
                        b.removed += 1;
                    }
                    (None, None) => {}
                }
            }
        }
        for (peer, n) in direct {
            if let Some(s) = self.peers.get_mut(&peer) {
                s.advertised += n;
            }
        }
        self.finish_exports(builder)
    }

    /// Builds the exports and applies their counter deltas.
    fn finish_exports(&mut self, builder: ExportBuilder) -> Vec<Export> {
        let built = builder.finish(&self.groups);
        let mut exports = Vec::with_capacity(built.len());
        for (export, added, removed) in built {
            for p in &export.peers {
                if let Some(s) = self.peers.get_mut(p) {
                    s.advertised = (s.advertised + added).saturating_sub(removed);
                }
            }
            exports.push(export);
        }
        exports
    }
}
