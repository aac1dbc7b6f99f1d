//! Export: which peers a best path goes to, the attributes it leaves with, and the update
//! groups that let one encoding serve many peers (RFC 4271 §9.2, RFC 4456 §6, §8).
//!
//! Peers with the same export policy share an [`UpdateGroup`]. A best path's outgoing
//! attributes are computed once per group and interned there, so prefixes that share incoming
//! attributes also share the outgoing `Arc` and pack into one UPDATE. What a peer was sent is
//! never stored: it follows from the old best path and these same rules.

use super::decision::DEFAULT_LOCAL_PREF;
use super::intern::{Interner, StoredAttrs};
use super::table::Path;
use super::{Export, LocalConfig, NextHopMode, PeerId, PeerInfo};
use crate::policy::{ExportPolicy, Role, RouteFacts, RouteSource};
use crate::wire::{CodecContext, Family, MpNextHop, PathAttributes, Prefix, flag};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

/// How a peer relates to us, for export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeerKind {
    Ebgp,
    IbgpClient,
    IbgpNonClient,
}

impl PeerKind {
    /// iBGP or eBGP against the AS presented on the session (`local-asn`).
    pub fn of(info: &PeerInfo) -> PeerKind {
        if info.asn != info.local_asn {
            PeerKind::Ebgp
        } else if info.rr_client {
            PeerKind::IbgpClient
        } else {
            PeerKind::IbgpNonClient
        }
    }

    pub fn is_ibgp(self) -> bool {
        self != PeerKind::Ebgp
    }
}

/// Where a path came from, for export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source<'a> {
    /// None for a locally originated path.
    pub kind: Option<PeerKind>,
    pub router_id: Ipv4Addr,
    /// The role of the peer it came from (None: local).
    pub role: Option<Role>,
    /// The interface of that peer's session.
    pub interface: Option<&'a str>,
}

impl Source<'_> {
    /// The facts policy rules match on, for a route to `prefix`.
    pub fn facts(&self, prefix: Prefix) -> RouteFacts<'_> {
        RouteFacts {
            prefix,
            source: self.role.map_or(RouteSource::Local, RouteSource::Peer),
            interface: self.interface,
        }
    }
}

/// RFC 4456 §6 (and RFC 4271 §9.2 for a speaker with no clients): may a path from `from` be
/// sent to a peer of kind `to`? (The source peer itself is excluded separately.)
pub fn may_export(from: Option<PeerKind>, to: PeerKind) -> bool {
    !matches!(
        (from, to),
        (Some(PeerKind::IbgpNonClient), PeerKind::IbgpNonClient)
    )
}

/// Everything export depends on: peers with equal keys receive the same bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupKey {
    pub kind: PeerKind,
    /// The peer's AS (ours for iBGP).
    pub remote_as: u32,
    /// The AS we present on the session (prepended towards eBGP peers).
    pub local_asn: u32,
    pub next_hop: NextHopMode,
    /// Our end of the session: the next hop of next-hop-self and of local routes. Always part
    /// of the key, since locally originated routes use it on every kind of session.
    pub local_address: IpAddr,
    /// Negotiated families, sorted.
    pub families: Vec<Family>,
    pub ctx: CodecContext,
    /// The subnet shared with the peer, for third-party next hops towards eBGP peers.
    pub shared_subnet: Option<ipnet::IpNet>,
    /// The export policy (pools, filters, communities): compared by value.
    pub export: Arc<ExportPolicy>,
}

impl GroupKey {
    pub fn of(info: &PeerInfo) -> GroupKey {
        let mut families = info.families.clone();
        families.sort();
        families.dedup();
        GroupKey {
            kind: PeerKind::of(info),
            remote_as: info.asn,
            local_asn: info.local_asn,
            next_hop: info.next_hop,
            local_address: info.local_address,
            families,
            ctx: info.ctx,
            shared_subnet: info.shared_subnet,
            export: Arc::clone(&info.export),
        }
    }

    /// Whether a path goes to the group at all: the RFC rules and the export policy.
    pub fn admits(
        &self,
        src: &Source<'_>,
        stored: &StoredAttrs,
        family: Family,
        prefix: Prefix,
    ) -> bool {
        exportable(src, stored, family, self) && self.export.accepts(&src.facts(prefix))
    }

    pub fn has_family(&self, family: Family) -> bool {
        self.families.contains(&family)
    }

    /// RFC 4271 §5.1.3 (2): towards an eBGP peer on a shared subnet, a next hop on that same
    /// subnet is kept, unless next-hop-self was asked for explicitly.
    fn third_party(&self, nh: &MpNextHop) -> bool {
        self.kind == PeerKind::Ebgp
            && self.next_hop == NextHopMode::Auto
            && self.shared_subnet.is_some_and(|s| s.contains(&nh.addr()))
    }

    /// Whether paths of this family go to next-hop-self on this group's sessions.
    fn next_hop_self(&self) -> bool {
        match self.next_hop {
            NextHopMode::SelfAddr => true,
            NextHopMode::Keep => false,
            NextHopMode::Auto => self.kind == PeerKind::Ebgp,
        }
    }
}

/// `address` in the form `family`'s next hop takes: an IPv4 session address carries IPv6
/// routes as an IPv4-mapped address; an IPv6 one carries IPv4 routes only when it is mapped.
fn next_hop_for(address: IpAddr, family: Family) -> Option<MpNextHop> {
    match (family, address) {
        (Family::Ipv4Unicast, IpAddr::V4(a)) => Some(MpNextHop::V4(a)),
        (Family::Ipv4Unicast, IpAddr::V6(a)) => a.to_ipv4_mapped().map(MpNextHop::V4),
        (Family::Ipv6Unicast, IpAddr::V6(a)) => Some(MpNextHop::V6 {
            global: a,
            link_local: None,
        }),
        (Family::Ipv6Unicast, IpAddr::V4(a)) => Some(MpNextHop::V6 {
            global: a.to_ipv6_mapped(),
            link_local: None,
        }),
    }
}

/// The next hop a path leaves with, or None when none can be given (the path is then not
/// exported to the group). A received link-local IPv6 next hop is not passed on: it is only
/// meaningful on the link it came from.
pub fn out_next_hop(stored: &StoredAttrs, family: Family, key: &GroupKey) -> Option<MpNextHop> {
    match stored.next_hop {
        Some(nh) if !key.next_hop_self() || key.third_party(&nh) => Some(match nh {
            MpNextHop::V6 { global, .. } => MpNextHop::V6 {
                global,
                link_local: None,
            },
            v4 => v4,
        }),
        _ => next_hop_for(key.local_address, family),
    }
}

/// Whether a path from `src` goes to the group at all (before excluding its source peer).
pub fn exportable(src: &Source<'_>, stored: &StoredAttrs, family: Family, key: &GroupKey) -> bool {
    key.has_family(family)
        && may_export(src.kind, key.kind)
        && out_next_hop(stored, family, key).is_some()
}

/// The attributes a path leaves with towards the group (RFC 4271 §5.1, RFC 4456 §8).
pub fn outgoing_attrs(
    local: &LocalConfig,
    src: &Source<'_>,
    stored: &StoredAttrs,
    family: Family,
    key: &GroupKey,
) -> Option<(PathAttributes, MpNextHop)> {
    if !exportable(src, stored, family, key) {
        return None;
    }
    let next_hop = out_next_hop(stored, family, key)?;
    let a = &stored.attrs;
    let mut out = PathAttributes {
        origin: a.origin,
        as_path: a.as_path.clone(),
        next_hop: match next_hop {
            MpNextHop::V4(v4) => Some(v4),
            MpNextHop::V6 { .. } => None,
        },
        med: a.med,
        local_pref: None,
        atomic_aggregate: a.atomic_aggregate,
        aggregator: a.aggregator,
        communities: a.communities.clone(),
        large_communities: a.large_communities.clone(),
        originator_id: None,
        cluster_list: Vec::new(),
        // Optional transitive attributes travel on; non-transitive ones stop here.
        unknown: a
            .unknown
            .iter()
            .filter(|u| u.flags & flag::TRANSITIVE != 0)
            .cloned()
            .collect(),
    };
    if key.kind == PeerKind::Ebgp {
        out.as_path = a.as_path.prepended(key.local_asn);
        // A MED received from a neighbouring AS is not passed to another one (§5.1.4).
        if !a.as_path.is_empty() {
            out.med = None;
        }
    } else {
        out.local_pref = Some(a.local_pref.unwrap_or(DEFAULT_LOCAL_PREF));
        if src.kind.is_some_and(PeerKind::is_ibgp) {
            // Reflected (RFC 4456 §8).
            out.originator_id = Some(a.originator_id.unwrap_or(src.router_id));
            out.cluster_list = Vec::with_capacity(a.cluster_list.len() + 1);
            out.cluster_list.push(local.effective_cluster_id());
            out.cluster_list.extend_from_slice(&a.cluster_list);
        }
    }
    Some((out, next_hop))
}

/// Outgoing attributes as handed to the speaker.
pub type OutAttrs = (Arc<PathAttributes>, MpNextHop);

/// One cached outgoing attribute set: source peer, family, advertisement indices, result.
type CacheEntry = (PeerId, Family, Vec<u16>, Option<OutAttrs>);

/// Peers that share an export policy, and the outgoing attributes computed for them.
#[derive(Debug)]
pub struct UpdateGroup {
    pub key: GroupKey,
    /// Sorted.
    pub members: Vec<PeerId>,
    /// Outgoing attributes by incoming `StoredAttrs` pointer, then by source peer (the
    /// ORIGINATOR_ID of a reflected path depends on it), family (an IPv4 and an IPv6 route
    /// may share one attribute set, and their next hops differ in form) and the
    /// advertisements whose communities the prefix gets (prefixes of one attribute set may get
    /// different ones). Whether a prefix is exported at all is decided before the cache.
    cache: HashMap<usize, Vec<CacheEntry>>,
    out: Interner<PathAttributes>,
}

impl UpdateGroup {
    pub fn new(key: GroupKey) -> UpdateGroup {
        UpdateGroup {
            key,
            members: Vec::new(),
            cache: HashMap::new(),
            out: Interner::default(),
        }
    }

    pub fn add(&mut self, peer: PeerId) {
        if let Err(i) = self.members.binary_search(&peer) {
            self.members.insert(i, peer);
        }
    }

    pub fn remove(&mut self, peer: PeerId) {
        if let Ok(i) = self.members.binary_search(&peer) {
            self.members.remove(i);
        }
    }

    pub fn has(&self, peer: PeerId) -> bool {
        self.members.binary_search(&peer).is_ok()
    }

    /// The outgoing attributes of `path` for this group (cached). `path.attrs` must be live in
    /// the RIB's interner: the cache is keyed by its address and purged when it is freed.
    /// `prefix` is the route's: the export policy decides per prefix, and the communities
    /// added depend on it.
    pub fn outgoing(
        &mut self,
        local: &LocalConfig,
        src: &Source<'_>,
        path: &Path,
        family: Family,
        prefix: Prefix,
    ) -> Option<OutAttrs> {
        if !self.key.export.accepts(&src.facts(prefix)) {
            return None;
        }
        let adds = self.key.export.communities_key(&prefix);
        let ptr = Arc::as_ptr(&path.attrs) as usize;
        let per_source = self.cache.entry(ptr).or_default();
        if let Some((_, _, _, out)) = per_source
            .iter()
            .find(|(p, f, a, _)| *p == path.peer && *f == family && *a == adds)
        {
            return out.clone();
        }
        let out =
            outgoing_attrs(local, src, &path.attrs, family, &self.key).map(|(mut attrs, nh)| {
                if !adds.is_empty() {
                    self.key
                        .export
                        .communities(&adds)
                        .add_to(&mut attrs.communities, &mut attrs.large_communities);
                }
                (self.out.intern(attrs), nh)
            });
        per_source.push((path.peer, family, adds, out.clone()));
        out
    }

    /// Forgets what was computed for a freed incoming attribute set.
    pub fn forget_attrs(&mut self, stored: &Arc<StoredAttrs>) {
        let ptr = Arc::as_ptr(stored) as usize;
        if let Some(entries) = self.cache.remove(&ptr) {
            for (_, _, _, out) in entries {
                if let Some((attrs, _)) = out {
                    self.out.release(&attrs);
                }
            }
        }
    }

    /// Forgets what was computed for paths from `peer` (it went down; its id may come back
    /// with another router id).
    pub fn forget_peer(&mut self, peer: PeerId) {
        let out = &mut self.out;
        self.cache.retain(|_, entries| {
            entries.retain(|(p, _, _, o)| {
                if *p == peer {
                    if let Some((attrs, _)) = o {
                        out.release(attrs);
                    }
                    false
                } else {
                    true
                }
            });
            !entries.is_empty()
        });
    }

    /// Distinct outgoing attribute sets held.
    pub fn out_sets(&self) -> usize {
        self.out.len()
    }
}

/// Who in a group receives a batch: everyone but (perhaps) one peer, or one peer only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Audience {
    AllBut(Option<PeerId>),
    Only(PeerId),
}

/// Changes for one audience of one group.
#[derive(Debug, Default)]
pub struct Batch {
    announce: Vec<(Arc<PathAttributes>, MpNextHop, Family, Vec<Prefix>)>,
    index: HashMap<(usize, MpNextHop, Family), usize>,
    withdraw: Vec<(Family, Vec<Prefix>)>,
    /// Prefixes new to every recipient (for the advertised counter).
    pub added: u64,
    /// Prefixes withdrawn from every recipient.
    pub removed: u64,
}

impl Batch {
    pub fn announce(&mut self, out: &OutAttrs, family: Family, prefix: Prefix) {
        let key = (Arc::as_ptr(&out.0) as usize, out.1, family);
        match self.index.get(&key) {
            Some(&i) => self.announce[i].3.push(prefix),
            None => {
                self.index.insert(key, self.announce.len());
                self.announce
                    .push((Arc::clone(&out.0), out.1, family, vec![prefix]));
            }
        }
    }

    pub fn withdraw(&mut self, family: Family, prefix: Prefix) {
        match self.withdraw.iter_mut().find(|(f, _)| *f == family) {
            Some((_, v)) => v.push(prefix),
            None => self.withdraw.push((family, vec![prefix])),
        }
    }

    fn merge(&mut self, other: Batch) {
        for (attrs, nh, family, prefixes) in other.announce {
            for p in prefixes {
                self.announce(&(Arc::clone(&attrs), nh), family, p);
            }
        }
        for (family, prefixes) in other.withdraw {
            for p in prefixes {
                self.withdraw(family, p);
            }
        }
        self.added += other.added;
        self.removed += other.removed;
    }

    fn is_empty(&self) -> bool {
        self.announce.is_empty() && self.withdraw.is_empty()
    }
}

/// Collects the changes of one RIB operation, then turns them into [`Export`]s.
#[derive(Debug, Default)]
pub struct ExportBuilder {
    batches: BTreeMap<(u32, Audience), Batch>,
}

impl ExportBuilder {
    pub fn batch(&mut self, group: u32, audience: Audience) -> &mut Batch {
        self.batches.entry((group, audience)).or_default()
    }

    /// One [`Export`] per distinct (group, recipient set), with the counter deltas per export
    /// (prefixes added to and removed from each recipient).
    pub fn finish(self, groups: &BTreeMap<u32, UpdateGroup>) -> Vec<(Export, u64, u64)> {
        let mut merged: BTreeMap<(u32, Vec<PeerId>), Batch> = BTreeMap::new();
        for ((gid, audience), batch) in self.batches {
            let Some(group) = groups.get(&gid) else {
                continue;
            };
            let peers: Vec<PeerId> = match audience {
                Audience::AllBut(except) => group
                    .members
                    .iter()
                    .copied()
                    .filter(|p| Some(*p) != except)
                    .collect(),
                Audience::Only(p) if group.has(p) => vec![p],
                Audience::Only(_) => Vec::new(),
            };
            if peers.is_empty() || batch.is_empty() {
                continue;
            }
            match merged.entry((gid, peers)) {
                std::collections::btree_map::Entry::Occupied(mut e) => e.get_mut().merge(batch),
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(batch);
                }
            }
        }
        merged
            .into_iter()
            .filter_map(|((gid, peers), batch)| {
                let group = groups.get(&gid)?;
                Some((
                    Export {
                        peers,
                        ctx: group.key.ctx,
                        announce: batch.announce,
                        withdraw: batch.withdraw,
                    },
                    batch.added,
                    batch.removed,
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflection_rules_follow_rfc4456() {
        use PeerKind::*;
        for to in [Ebgp, IbgpClient, IbgpNonClient] {
            assert!(may_export(None, to), "local routes go everywhere");
            assert!(may_export(Some(Ebgp), to), "eBGP routes go everywhere");
            assert!(
                may_export(Some(IbgpClient), to),
                "client routes are reflected"
            );
        }
        assert!(may_export(Some(IbgpNonClient), IbgpClient));
        assert!(may_export(Some(IbgpNonClient), Ebgp));
        assert!(!may_export(Some(IbgpNonClient), IbgpNonClient));
    }

    #[test]
    fn session_address_becomes_next_hop_of_either_family() {
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(
            next_hop_for(v4, Family::Ipv4Unicast),
            Some(MpNextHop::V4("192.0.2.1".parse().unwrap()))
        );
        assert_eq!(
            next_hop_for(v4, Family::Ipv6Unicast),
            Some(MpNextHop::V6 {
                global: "::ffff:192.0.2.1".parse().unwrap(),
                link_local: None
            })
        );
        assert_eq!(next_hop_for(v6, Family::Ipv4Unicast), None);
    }
}
