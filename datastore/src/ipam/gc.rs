//! The leak collectors: what `ipam check` reports, released without anyone asking.
//!
//! - [`LocalCollector`] (every felix, for its own node): a pod handle of this node whose
//!   container has no WorkloadEndpoint and no veth, for the leak grace period (a DEL that never
//!   came, felix killed mid-ADD), is released by handle.
//! - [`ClusterCollector`] (the one elected collector): a node whose deletion it observed (a
//!   collector saw its Node resource, which is gone now, and it has no liveness key) loses its
//!   endpoints, handles, addresses and affinities at once; a node without a liveness key for
//!   the node grace period likewise, if it ran felix or if no collector ever saw its Node (a
//!   node that is starting writes IPAM before its lease and Node exist: it is never taken
//!   for deleted); an empty affine block goes back to the pool after its grace period when
//!   the node has room in its other blocks (Calico's kube-controllers rule: another block
//!   with at least 3 free addresses). A live node's addresses and blocks in use are never
//!   touched.
//!
//! The suspects of a pass are computed purely from one snapshot ([`local_suspects`],
//! [`without_lease`], [`empty_block_suspects`]); each release re-reads what it changes (the
//! releases are compare-and-swaps), and a local leak is checked once more against the
//! endpoints just before it goes.

use super::gc_state::{COLLECTOR_STATE, CollectorState, Kept, leak_clocks_key};
use super::grace::Grace;
use super::records::*;
use super::{Ipam, IpamError};
use crate::liveness;
use crate::resources::{NodeSpec, WorkloadEndpoint, WorkloadEndpointSpec};
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::SystemTime;
use tracing::info;

/// The attribute naming the node an allocation was made for.
pub const ATTR_NODE: &str = "node";

/// Pod handles held for `node` (allocation attribute `node`) that no endpoint names and whose
/// veth `is_live` does not find (pure).
pub fn local_suspects(
    node: &str,
    blocks: &[Block],
    endpoint_handles: &BTreeSet<String>,
    is_live: impl Fn(&Allocation) -> bool,
) -> BTreeSet<String> {
    blocks
        .iter()
        .flat_map(|b| b.allocations.values())
        .filter(|a| a.attrs.get(ATTR_NODE).map(String::as_str) == Some(node))
        .filter(|a| !is_tunnel_handle(&a.handle_id))
        .filter(|a| !endpoint_handles.contains(&a.handle_id) && !is_live(a))
        .map(|a| a.handle_id.clone())
        .collect()
}

/// Every node the IPAM records, endpoints or seen-markers name.
pub fn nodes_in_ipam(
    blocks: &[Block],
    affinities: &[Affinity],
    handles: &[Handle],
    endpoint_nodes: impl IntoIterator<Item = String>,
    seen: &BTreeSet<String>,
) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = seen.clone();
    out.extend(endpoint_nodes);
    for b in blocks {
        out.extend(b.affinity.clone());
        for a in b.allocations.values() {
            out.extend(a.attrs.get(ATTR_NODE).cloned());
        }
    }
    out.extend(affinities.iter().map(|a| a.node.clone()));
    for h in handles {
        if let Some(n) = super::records::tunnel_handle_node(&h.handle_id) {
            out.insert(n.to_string());
        }
    }
    out.retain(|n| !n.is_empty());
    out
}

/// The nodes named in IPAM that have no liveness key, by what the collector does with them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WithoutLease {
    /// Released at once: a collector saw the node's Node resource, and it is gone now.
    pub deleted: BTreeSet<String>,
    /// Released after the node grace period: a node that ran felix and still has its Node
    /// (gone silent, or stopped), or one without a Node that no collector ever saw (it may be
    /// starting: IPAM written before its lease and Node exist).
    pub silent: BTreeSet<String>,
}

/// Classes the nodes of `in_ipam` without a liveness key (pure). `nodes`: the Node
/// resources now; `seen`: nodes that ever ran felix; `known`: nodes whose Node a collector
/// has seen. A node with a Node that never ran felix (a simulated node) is left alone.
pub fn without_lease(
    in_ipam: &BTreeSet<String>,
    nodes: &BTreeSet<String>,
    live: &BTreeSet<String>,
    seen: &BTreeSet<String>,
    known: &BTreeSet<String>,
) -> WithoutLease {
    let mut out = WithoutLease::default();
    for n in in_ipam.iter().filter(|n| !live.contains(*n)) {
        match (nodes.contains(n), known.contains(n)) {
            (false, true) => {
                out.deleted.insert(n.clone());
            }
            (false, false) => {
                out.silent.insert(n.clone());
            }
            (true, _) if seen.contains(n) => {
                out.silent.insert(n.clone());
            }
            (true, _) => {}
        }
    }
    out
}

/// Empty blocks affine to a node that holds other blocks with at least 3 free addresses
/// between them, as (node, block) (pure). At most all but one block of a node qualify.
pub fn empty_block_suspects(blocks: &[Block]) -> BTreeSet<(String, IpNet)> {
    let mut by_node: BTreeMap<&str, Vec<&Block>> = BTreeMap::new();
    for b in blocks {
        if let Some(n) = &b.affinity {
            by_node.entry(n).or_default().push(b);
        }
    }
    let mut out = BTreeSet::new();
    for (node, bs) in by_node {
        let mut empties: Vec<&Block> = bs
            .iter()
            .copied()
            .filter(|b| b.allocations.is_empty())
            .collect();
        let busy_free: u128 = bs
            .iter()
            .filter(|b| !b.allocations.is_empty())
            .map(|b| b.free_count())
            .sum();
        // Keep one empty block when the busy ones have no room (the node would claim one
        // again at its next ADD); keep the first (lowest) empty block in any case when the
        // node has nothing else.
        if busy_free < 3 {
            if empties.is_empty() {
                continue;
            }
            empties.remove(0);
            let kept_free = bs
                .iter()
                .filter(|b| b.allocations.is_empty())
                .map(|b| b.free_count())
                .next()
                .unwrap_or(0);
            if busy_free + kept_free < 3 {
                continue;
            }
        }
        out.extend(empties.into_iter().map(|b| (node.to_string(), b.cidr)));
    }
    out
}

/// What releasing a node's IPAM freed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeRelease {
    pub endpoints: Vec<String>,
    pub handles: Vec<String>,
    pub addresses: Vec<IpAddr>,
    pub blocks: Vec<IpNet>,
}

/// What one pass of the cluster collector released.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterPass {
    /// Nodes released because they were deleted.
    pub deleted_nodes: Vec<(String, NodeRelease)>,
    /// Nodes released because their liveness lease had expired for the grace period.
    pub silent_nodes: Vec<(String, NodeRelease)>,
    /// Empty blocks given back to the pool, with the node that held them.
    pub empty_blocks: Vec<(String, IpNet)>,
}

impl ClusterPass {
    /// Addresses released in this pass.
    pub fn addresses(&self) -> usize {
        self.deleted_nodes
            .iter()
            .chain(&self.silent_nodes)
            .map(|(_, r)| r.addresses.len())
            .sum()
    }
}

impl Ipam {
    /// Releases everything `node` holds: its WorkloadEndpoints, the handles and addresses
    /// allocated for it (pods and tunnels), its affinities (blocks still lending addresses to
    /// other nodes stay, without affinity), and its seen-marker. For a node that is gone.
    pub async fn release_node(&self, node: &str) -> Result<NodeRelease, IpamError> {
        let mut r = NodeRelease::default();
        let (weps, _) = self.store.list::<WorkloadEndpointSpec>().await?;
        let mut handles = BTreeSet::new();
        for w in weps.iter().filter(|w| w.spec.node == node) {
            handles.extend(endpoint_handle(&w.spec, &w.metadata.annotations));
            match self
                .store
                .delete::<WorkloadEndpointSpec>(w.metadata.namespace.as_deref(), w.name(), None)
                .await
            {
                Ok(()) | Err(crate::StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            r.endpoints.push(format!(
                "{}/{}",
                w.metadata.namespace.as_deref().unwrap_or(""),
                w.name()
            ));
        }
        let blocks = self.blocks().await?;
        let mut orphan_addrs = Vec::new();
        let handle_ids: BTreeSet<String> = self
            .handles()
            .await?
            .into_iter()
            .map(|h| h.value.handle_id)
            .collect();
        for b in &blocks {
            for (ord, a) in &b.value.allocations {
                if a.attrs.get(ATTR_NODE).map(String::as_str) == Some(node) {
                    if handle_ids.contains(&a.handle_id) {
                        handles.insert(a.handle_id.clone());
                    } else {
                        orphan_addrs.push(b.value.addr(*ord));
                    }
                }
            }
        }
        for prefix in super::records::TUNNEL_HANDLE_PREFIXES {
            let h = format!("{prefix}{node}");
            if handle_ids.contains(&h) {
                handles.insert(h);
            }
        }
        for h in handles {
            match self.release_by_handle(&h).await {
                Ok(ips) => {
                    r.addresses.extend(ips);
                    r.handles.push(h);
                }
                Err(IpamError::HandleNotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        if !orphan_addrs.is_empty() {
            let missed = self.release_ips(&orphan_addrs).await?;
            r.addresses
                .extend(orphan_addrs.into_iter().filter(|a| !missed.contains(a)));
        }
        r.blocks = self.release_affinity(node).await?;
        liveness::forget_node(&self.store, node).await?;
        match self.store.delete_raw(&leak_clocks_key(node), None).await {
            Ok(()) | Err(crate::StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(r)
    }

    /// Gives an empty block affine to `node` back to the pool: deleted only if it is still
    /// empty and still `node`'s (compare-and-swap), then its affinity record. Returns whether
    /// it went.
    pub async fn release_empty_block(&self, node: &str, cidr: IpNet) -> Result<bool, IpamError> {
        let key = block_key(&cidr);
        let Some(b) = self.store.get_json::<Block>(&key).await? else {
            return Ok(false);
        };
        if !b.value.allocations.is_empty() || b.value.affinity.as_deref() != Some(node) {
            return Ok(false);
        }
        match self.store.delete_raw(&key, Some(b.mod_revision)).await {
            Ok(()) => {}
            Err(e) if e.is_conflict() => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        match self
            .store
            .delete_raw(&affinity_key(node, &cidr), None)
            .await
        {
            Ok(()) | Err(crate::StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(true)
    }
}

/// What a node's collector asks the node about its pods.
pub trait NodeProbe {
    /// Whether an allocation's pod has its veth on the node.
    fn allocation_live(&self, a: &Allocation) -> bool;
    /// Whether an endpoint's pod is still there (its veth, or its network namespace).
    fn endpoint_live(&self, e: &WorkloadEndpoint) -> bool;
}

/// This node's endpoints (with a margay IPAM handle) whose pod is gone, by handle (pure):
/// a DEL that never came (the runtime was killed with the pod).
pub fn stale_endpoints<'a>(
    node: &str,
    endpoints: &'a [WorkloadEndpoint],
    probe: &impl NodeProbe,
) -> BTreeMap<String, &'a WorkloadEndpoint> {
    endpoints
        .iter()
        .filter(|e| e.spec.node == node && !probe.endpoint_live(e))
        .filter_map(|e| Some((endpoint_handle(&e.spec, &e.metadata.annotations)?, e)))
        .collect()
}

/// One node's collector of its own leaked pod addresses.
/// Its grace clocks are kept in etcd ([`leak_clocks_key`]): a restarted felix continues them.
pub struct LocalCollector {
    node: String,
    leaks: Grace<String>,
    loaded: bool,
    kept: Kept,
}

impl LocalCollector {
    pub fn new(node: &str) -> LocalCollector {
        LocalCollector {
            node: node.to_string(),
            leaks: Grace::default(),
            loaded: false,
            kept: Kept::default(),
        }
    }

    /// Handles being timed as leaks.
    pub fn suspects(&self) -> usize {
        self.leaks.len()
    }

    /// One pass at `now`. A leak is a pod handle of this node with no endpoint and no veth,
    /// or one whose endpoint's pod is gone (the endpoint goes with it). Returns the handles
    /// released, with their addresses.
    pub async fn pass(
        &mut self,
        ipam: &Ipam,
        probe: &impl NodeProbe,
        now: SystemTime,
    ) -> Result<Vec<(String, Vec<IpAddr>)>, IpamError> {
        let key = leak_clocks_key(&self.node);
        if !self.loaded {
            let kept: Vec<(String, u64)> = self.kept.load(ipam, &key).await?;
            self.leaks = Grace::from_millis(kept);
            self.loaded = true;
        }
        let out = self.collect(ipam, probe, now).await;
        if let Err(e) = self.kept.save(ipam, &key, &self.leaks.to_millis()).await {
            tracing::warn!(error = %e, "IPAM leak collection: keeping its clocks in etcd failed; retrying next pass");
        }
        out
    }

    async fn collect(
        &mut self,
        ipam: &Ipam,
        probe: &impl NodeProbe,
        now: SystemTime,
    ) -> Result<Vec<(String, Vec<IpAddr>)>, IpamError> {
        let cfg = ipam.config().await?;
        let blocks: Vec<Block> = ipam.blocks().await?.into_iter().map(|b| b.value).collect();
        let (eps, _) = ipam.store.list::<WorkloadEndpointSpec>().await?;
        let handles: BTreeSet<String> = eps
            .iter()
            .filter_map(|w| endpoint_handle(&w.spec, &w.metadata.annotations))
            .collect();
        let mut suspects =
            local_suspects(&self.node, &blocks, &handles, |a| probe.allocation_live(a));
        suspects.extend(stale_endpoints(&self.node, &eps, probe).into_keys());
        let confirmed = self.leaks.pass(suspects, now, cfg.leak_grace_period());
        if confirmed.is_empty() {
            return Ok(Vec::new());
        }
        // Once more against the endpoints as they are now: an ADD may have finished.
        let (eps, _) = ipam.store.list::<WorkloadEndpointSpec>().await?;
        let stale = stale_endpoints(&self.node, &eps, probe);
        let handles: BTreeSet<String> = eps
            .iter()
            .filter_map(|w| endpoint_handle(&w.spec, &w.metadata.annotations))
            .collect();
        let mut out = Vec::new();
        for h in confirmed {
            self.leaks.forget(&h);
            if let Some(e) = stale.get(&h) {
                match ipam
                    .store
                    .delete::<WorkloadEndpointSpec>(
                        e.metadata.namespace.as_deref(),
                        e.name(),
                        e.revision(),
                    )
                    .await
                {
                    Ok(()) | Err(crate::StoreError::NotFound { .. }) => {}
                    // Changed meanwhile (a new ADD of the pod): leave it.
                    Err(err) if err.is_conflict() => continue,
                    Err(err) => return Err(err.into()),
                }
                info!(node = %self.node, endpoint = %e.name(), "removed the endpoint of a pod that is gone (its DEL never came)");
            } else if handles.contains(&h) {
                continue;
            }
            match ipam.release_by_handle(&h).await {
                Ok(ips) => {
                    info!(node = %self.node, handle = %h, addresses = ?ips, "released a leaked allocation (for the leak grace period: no live endpoint, no veth)");
                    out.push((h, ips));
                }
                Err(IpamError::HandleNotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

/// The elected collector's state: the grace clocks of silent nodes and empty blocks, and the
/// nodes whose Node it has seen; kept in etcd ([`gc_state`](super::gc_state)) and taken over
/// by the next collector.
#[derive(Default)]
pub struct ClusterCollector {
    loaded: bool,
    silent: Grace<String>,
    empty: Grace<(String, IpNet)>,
    known: BTreeSet<String>,
    kept: Kept,
}

impl ClusterCollector {
    pub fn new() -> ClusterCollector {
        ClusterCollector::default()
    }

    /// One pass at `now`.
    pub async fn pass(&mut self, ipam: &Ipam, now: SystemTime) -> Result<ClusterPass, IpamError> {
        if !self.loaded {
            let st: CollectorState = self.kept.load(ipam, COLLECTOR_STATE).await?;
            self.silent = st.silent_grace();
            self.empty = st.empty_grace();
            self.known = st.known_nodes;
            self.loaded = true;
        }
        let store = ipam.store();
        let cfg = ipam.config().await?;
        // IPAM first, then who is alive: a felix takes its lease (and its bgpd writes the
        // Node) before it allocates, so every node in this IPAM snapshot that was alive when
        // it was read shows in the reads below. (A node that allocated before either exists
        // is not taken for deleted in any case: no collector saw its Node.)
        let blocks: Vec<Block> = ipam.blocks().await?.into_iter().map(|b| b.value).collect();
        let affinities: Vec<Affinity> = ipam
            .affinities()
            .await?
            .into_iter()
            .map(|a| a.value)
            .collect();
        let handles: Vec<Handle> = ipam.handles().await?.into_iter().map(|h| h.value).collect();
        let (weps, _) = store.list::<WorkloadEndpointSpec>().await?;
        let (node_list, _) = store.list::<NodeSpec>().await?;
        let nodes: BTreeSet<String> = node_list.iter().map(|n| n.name().to_string()).collect();
        let live = liveness::live_nodes(store).await?;
        let seen = liveness::seen_nodes(store).await?;
        let in_ipam = nodes_in_ipam(
            &blocks,
            &affinities,
            &handles,
            weps.iter().map(|w| w.spec.node.clone()),
            &seen,
        );
        let mut out = ClusterPass::default();
        let classes = without_lease(&in_ipam, &nodes, &live, &seen, &self.known);
        let mut released = BTreeSet::new();
        for n in &classes.deleted {
            let r = ipam.release_node(n).await?;
            info!(node = %n, endpoints = r.endpoints.len(), addresses = r.addresses.len(), blocks = r.blocks.len(), "released the IPAM of a deleted node");
            out.deleted_nodes.push((n.clone(), r));
            released.insert(n.clone());
        }
        for n in self
            .silent
            .pass(classes.silent.clone(), now, cfg.node_grace_period())
        {
            self.silent.forget(&n);
            // Alive again since the snapshot: leave it.
            if liveness::live_nodes(store).await?.contains(&n) {
                continue;
            }
            let r = ipam.release_node(&n).await?;
            info!(node = %n, endpoints = r.endpoints.len(), addresses = r.addresses.len(), blocks = r.blocks.len(), "released the IPAM of a node without liveness for the node grace period");
            out.silent_nodes.push((n.clone(), r));
            released.insert(n);
        }
        let empties: BTreeSet<(String, IpNet)> = empty_block_suspects(&blocks)
            .into_iter()
            .filter(|(n, _)| !released.contains(n))
            .collect();
        for (n, cidr) in self
            .empty
            .pass(empties, now, cfg.empty_block_grace_period())
        {
            self.empty.forget(&(n.clone(), cidr));
            if ipam.release_empty_block(&n, cidr).await? {
                info!(node = %n, block = %cidr, "gave an empty block back to the pool");
                out.empty_blocks.push((n, cidr));
            }
        }
        // Remember every Node seen, and the deleted ones while IPAM still names them.
        let mut known: BTreeSet<String> = self
            .known
            .iter()
            .filter(|n| in_ipam.contains(*n))
            .cloned()
            .collect();
        known.extend(nodes);
        known.retain(|n| !released.contains(n));
        self.known = known;
        let st = CollectorState {
            known_nodes: self.known.clone(),
            silent: self.silent.to_millis(),
            empty: self.empty.to_millis(),
        };
        if let Err(e) = self.kept.save(ipam, COLLECTOR_STATE, &st).await {
            tracing::warn!(error = %e, "IPAM collector: keeping its state in etcd failed; retrying next pass");
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc(handle: &str, node: &str) -> Allocation {
        let mut attrs = BTreeMap::new();
        attrs.insert(ATTR_NODE.to_string(), node.to_string());
        Allocation {
            handle_id: handle.into(),
            attrs,
        }
    }

    fn block(cidr: &str, node: Option<&str>, allocs: &[(u32, Allocation)]) -> Block {
        let mut b = Block::new(cidr.parse().unwrap(), node.map(str::to_string));
        for (o, a) in allocs {
            b.allocations.insert(*o, a.clone());
        }
        b
    }

    #[test]
    fn local_suspects_are_this_nodes_pod_handles_without_endpoint_or_veth() {
        let blocks = [block(
            "10.0.0.0/30",
            Some("n1"),
            &[
                (0, alloc("k8s-pod-network.a", "n1")),
                (1, alloc("k8s-pod-network.b", "n1")),
                (2, alloc("k8s-pod-network.c", "n2")),
                (3, alloc("vxlan-tunnel-addr-n1", "n1")),
            ],
        )];
        let eps: BTreeSet<String> = ["k8s-pod-network.b".to_string()].into();
        let s = local_suspects("n1", &blocks, &eps, |_| false);
        assert_eq!(s, ["k8s-pod-network.a".to_string()].into());
        let s = local_suspects("n1", &blocks, &eps, |a| a.handle_id.ends_with(".a"));
        assert!(s.is_empty(), "a live veth keeps its address");
    }

    #[test]
    fn a_node_is_deleted_only_when_its_node_was_seen_and_is_gone_without_liveness() {
        let set = |v: &[&str]| -> BTreeSet<String> { v.iter().map(|s| s.to_string()).collect() };
        // a: Node, ran felix, live. b: no Node, live (felix up, Node deleted). c: Node seen
        // once, gone, no lease: deleted. d: no Node ever seen, no lease (starting, or its
        // deletion was not observed): silent. e: Node, ran felix, no lease: silent. f: Node,
        // never ran felix (simulated): left alone.
        let in_ipam = set(&["a", "b", "c", "d", "e", "f"]);
        let nodes = set(&["a", "e", "f"]);
        let live = set(&["a", "b"]);
        let seen = set(&["a", "b", "c", "e"]);
        let known = set(&["a", "b", "c", "e", "f"]);
        let w = without_lease(&in_ipam, &nodes, &live, &seen, &known);
        assert_eq!(w.deleted, set(&["c"]));
        assert_eq!(w.silent, set(&["d", "e"]));
        // The same without any collector having seen c's Node: c waits too.
        let w = without_lease(&in_ipam, &nodes, &live, &seen, &set(&[]));
        assert!(w.deleted.is_empty());
        assert_eq!(w.silent, set(&["c", "d", "e"]));
    }

    #[test]
    fn nodes_in_ipam_come_from_blocks_allocations_affinities_and_tunnel_handles() {
        let blocks = [block("10.0.0.0/30", Some("a"), &[(0, alloc("h", "b"))])];
        let affs = [Affinity {
            node: "c".into(),
            cidr: "10.0.0.4/30".parse().unwrap(),
        }];
        let handles = [Handle {
            handle_id: "ipip-tunnel-addr-d".into(),
            blocks: BTreeMap::new(),
        }];
        let seen: BTreeSet<String> = ["e".to_string()].into();
        let got = nodes_in_ipam(&blocks, &affs, &handles, ["f".to_string()], &seen);
        assert_eq!(got, ["a", "b", "c", "d", "e", "f"].map(String::from).into());
    }

    #[test]
    fn an_empty_block_goes_only_when_the_node_has_room_elsewhere() {
        let busy = |c: &str, n: usize| {
            let allocs: Vec<(u32, Allocation)> = (0..n as u32)
                .map(|o| (o, alloc(&format!("h{c}{o}"), "n1")))
                .collect();
            block(c, Some("n1"), &allocs)
        };
        // A /29 with 2 of 8 used: 6 free elsewhere, so the empty one goes.
        let blocks = [
            busy("10.0.0.0/29", 2),
            block("10.0.0.8/29", Some("n1"), &[]),
        ];
        assert_eq!(
            empty_block_suspects(&blocks),
            [("n1".to_string(), "10.0.0.8/29".parse().unwrap())].into()
        );
        // A full /29 beside two empty ones: one empty block stays.
        let blocks = [
            busy("10.0.0.0/29", 8),
            block("10.0.0.8/29", Some("n1"), &[]),
            block("10.0.0.16/29", Some("n1"), &[]),
        ];
        assert_eq!(
            empty_block_suspects(&blocks),
            [("n1".to_string(), "10.0.0.16/29".parse().unwrap())].into()
        );
        // A node whose only block is empty keeps it.
        let blocks = [block("10.0.0.8/29", Some("n1"), &[])];
        assert!(empty_block_suspects(&blocks).is_empty());
        // Nearly full (2 free) and no empty block: nothing.
        let blocks = [busy("10.0.0.0/29", 6)];
        assert!(empty_block_suspects(&blocks).is_empty());
    }
}
