//! IPAM: pools carved into blocks that nodes claim by affinity; addresses handed out from a
//! node's own blocks, a new block claimed when they are full, and an address borrowed from
//! another node's block only when the pool has no unclaimed block left (the lender keeps its
//! block). The IPAM configuration ([`config`]) changes that as Calico's does: `strictAffinity`
//! (never borrow: a full node's ADD fails naming the node and pools), `maxBlocksPerHost` and
//! `autoAllocateBlocks` (no new block past the limit, or ever; borrow instead unless strict).
//! An IPReservation's addresses are never auto-assigned, borrowed or not (a pod asking for one
//! by address still gets it, as in Calico).
//!
//! Which pools: an enabled pool whose `nodeSelector` selects the node, whose `allowedUses`
//! has the use asked for (Workload for pods, Tunnel for tunnel devices) and whose
//! `assignmentMode` is Automatic; a Manual pool only when the request names it.
//!
//! # Consistency
//!
//! Every write is a compare-and-swap on the record's revision, retried on conflict. Writes are
//! ordered so that a writer dying between two of them leaves a state [`Ipam::check`] reports
//! and [`Ipam::release_by_handle`] / [`Ipam::release_ips`] / [`Ipam::release_affinity`] repair:
//!
//! - auto-assign: the block's allocation and the handle's raised count are one etcd
//!   transaction (both compared on their revisions): nothing to repair, one write round trip.
//! - assign of a given address: the handle's count for the block is raised first, then the
//!   block gets the allocation. Dying in between leaves a handle that claims more than the
//!   block holds (`HandleMismatch`); releasing the handle clears it. An address is never in a
//!   block without a handle that accounts for it.
//! - release: the block drops the allocation first, then the handle's count is lowered;
//!   dying in between leaves the same, repairable, over-count.
//! - claim: the block (created: one winner) and its affinity record are one transaction,
//!   guarded on the node's affinity records being unchanged since they were counted, so two
//!   racing claims cannot take a node past `maxBlocksPerHost`. Releasing runs block, then
//!   record; a record left behind is dropped on the node's next assignment (and a block
//!   without its record, left by older versions, is adopted). `check` reports both as
//!   `affinity_mismatches`.
//!
//! Nothing is serialized in the process: concurrent ADDs on one node (through felix's one
//! [`Ipam`]) read in parallel and race only through etcd's compare-and-swap, as two processes
//! do. Writes to one block are ordered by etcd; a lost race re-reads that block alone (not
//! the whole assignment) after a short random wait that grows with the attempt, so a burst
//! of sixteen settles in about sixteen write round trips instead of a retry storm.
//!
//! An assignment's first try reads serializably (etcd answers from its own state): a
//! linearizable read waits for a raft round, i.e. behind every write being committed at that
//! moment, so with four ADDs at a time each of an ADD's five reads waited for another ADD's
//! disk sync. A stale read can only lose a compare-and-swap; the retry reads linearizably.

mod batch;
pub mod check;
pub mod config;
pub mod gc;
pub mod gc_state;
pub mod grace;
pub mod records;
mod release;

pub use check::{CheckReport, HandleMismatch};
pub use config::IpamConfig;
pub use gc::{ClusterCollector, ClusterPass, LocalCollector, NodeProbe, NodeRelease};
pub use records::{
    ANN_IPAM, ANN_NETWORK, Affinity, Allocation, Block, Handle, IPIP_HANDLE_PREFIX, MARGAY_IPAM,
    POD_HANDLE_PREFIX, VXLAN_HANDLE_PREFIX, VXLAN_V6_HANDLE_PREFIX, endpoint_handle,
    handle_for_container, is_tunnel_handle,
};

use crate::resources::{
    AllowedUse, AssignmentMode, IpPool, IpPoolSpec, IpReservationSpec, NodeSpec,
};
use crate::selector::Selector;
use crate::store::{CasWrite, Store, StoreError, Versioned};
use batch::Try;
use ipnet::IpNet;
use rand::Rng;
use records::*;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;
use tracing::debug;

/// How often a compare-and-swap is retried before giving up.
const MAX_RETRIES: usize = 200;

/// IPAM failures.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no enabled IPv{family} pool applies to node '{node}'")]
    NoPool { family: u8, node: String },
    #[error("IPv{family} pools for node '{node}' are exhausted")]
    Exhausted { family: u8, node: String },
    /// strictAffinity forbids borrowing and the node's own blocks are full.
    #[error(
        "node '{node}' has no free IPv{family} address in its own blocks of pool(s) {pools} and \
         may not claim another ({why}); strictAffinity forbids borrowing from other nodes' blocks"
    )]
    StrictAffinity {
        family: u8,
        node: String,
        pools: String,
        why: String,
    },
    #[error("IP pool '{0}' does not exist")]
    PoolNotFound(String),
    #[error("IP pool '{pool}' is not for {usage:?} addresses (its allowedUses)")]
    PoolNotAllowed { pool: String, usage: AllowedUse },
    #[error("{0} is not in any IP pool")]
    NotInPool(IpAddr),
    #[error("{addr} is already allocated (handle '{handle}')")]
    AlreadyAllocated { addr: IpAddr, handle: String },
    #[error("{0} is not allocated")]
    NotAllocated(IpAddr),
    #[error("handle '{0}' does not exist")]
    HandleNotFound(String),
    #[error("gave up after {MAX_RETRIES} update conflicts on {0}")]
    Contention(String),
    /// A batched write failed for every request in it (`unavailable`: etcd did not answer).
    #[error("{message}")]
    Batch { message: String, unavailable: bool },
}

/// What an assignment asks for: how many addresses of each family, and for what use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    pub usage: AllowedUse,
    pub num_v4: usize,
    pub num_v6: usize,
}

/// The addresses `auto_assign` handed out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assigned {
    pub v4: Vec<IpAddr>,
    pub v6: Vec<IpAddr>,
    /// The [`Rider`] was written in the allocation's transaction (only a one-address
    /// assignment carries it; otherwise the caller writes its record itself).
    pub rider_written: bool,
}

/// A record written in the same etcd transaction as an allocation, made from the address it
/// allocates: felix's WorkloadEndpoint, so that a pod's ADD is one etcd write (and its
/// endpoint never exists without its address, nor the address, once the ADD is done, without
/// its endpoint). Returns the key and the encoded value ([`Store::resource_record`]).
pub type Rider =
    std::sync::Arc<dyn Fn(IpAddr) -> Result<(String, Vec<u8>), StoreError> + Send + Sync>;

/// The IPAM client.
pub struct Ipam {
    store: Store,
    /// The same connection with serializable reads: an assignment's first try reads through
    /// it (no raft round per read, so no wait behind other ADDs' writes); every write is a
    /// compare-and-swap, so a stale read only loses a race, and the retry reads linearizably.
    reads: Store,
    batcher: batch::Batcher,
}

async fn jitter(attempt: usize) {
    let max = 2 + (attempt as u64).min(20);
    let ms = rand::rng().random_range(0..max);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

fn family(net: &IpNet) -> u8 {
    match net {
        IpNet::V4(_) => 4,
        IpNet::V6(_) => 6,
    }
}

/// What an auto-assignment obeys besides the pools: the IPAM configuration and the
/// reserved networks.
struct Rules {
    cfg: IpamConfig,
    reserved: Vec<IpNet>,
}

impl Ipam {
    /// An IPAM client over `store`.
    pub fn new(store: Store) -> Ipam {
        Ipam {
            reads: store.serializable(),
            store,
            batcher: batch::Batcher::default(),
        }
    }

    /// The store this client writes to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Every block.
    pub async fn blocks(&self) -> Result<Vec<Versioned<Block>>, IpamError> {
        Ok(self.store.list_json::<Block>(BLOCKS).await?.0)
    }

    /// Every handle.
    pub async fn handles(&self) -> Result<Vec<Versioned<Handle>>, IpamError> {
        Ok(self.store.list_json::<Handle>(HANDLES).await?.0)
    }

    /// Every affinity record.
    pub async fn affinities(&self) -> Result<Vec<Versioned<Affinity>>, IpamError> {
        Ok(self.store.list_json::<Affinity>(AFFINITIES).await?.0)
    }

    /// The pools addresses for `usage` on `node` of family `fam` come from: the named ones
    /// (which must allow `usage`; Manual pools only this way), or every enabled, Automatic pool
    /// allowing `usage` whose nodeSelector selects the node.
    async fn pools_for(
        &self,
        store: &Store,
        usage: AllowedUse,
        node: &str,
        fam: u8,
        names: &[String],
    ) -> Result<Vec<IpPool>, IpamError> {
        let family_of = |p: &IpPool| p.spec.net().map(|n| family(&n));
        if !names.is_empty() {
            let (all, _) = store.list::<IpPoolSpec>().await?;
            let mut out = Vec::new();
            for n in names {
                let p = all
                    .iter()
                    .find(|p| p.name() == n)
                    .ok_or_else(|| IpamError::PoolNotFound(n.clone()))?;
                if !p.spec.allows(usage) {
                    return Err(IpamError::PoolNotAllowed {
                        pool: n.clone(),
                        usage,
                    });
                }
                if family_of(p) == Some(fam) {
                    out.push(p.clone());
                }
            }
            return Ok(out);
        }
        // Two independent reads: one round trip of waiting, not two.
        let (all, node) = tokio::join!(store.list::<IpPoolSpec>(), store.get::<NodeSpec>(node));
        let (all, _) = all?;
        let labels = node?.map(|n| n.metadata.labels).unwrap_or_default();
        Ok(all
            .into_iter()
            .filter(|p| !p.spec.disabled && family_of(p) == Some(fam))
            .filter(|p| p.spec.allows(usage) && p.spec.assignment() == AssignmentMode::Automatic)
            .filter(|p| Selector::parse(p.spec.node_selector()).is_ok_and(|s| s.matches(&labels)))
            .collect())
    }

    /// Assigns `num_v4` IPv4 and `num_v6` IPv6 workload addresses to `handle` for a workload
    /// on `node`, from `pools` (pool names; empty: every pool that applies to the node).
    pub async fn auto_assign(
        &self,
        handle: &str,
        node: &str,
        attrs: &BTreeMap<String, String>,
        num_v4: usize,
        num_v6: usize,
        pools: &[String],
    ) -> Result<Assigned, IpamError> {
        self.auto_assign_with(handle, node, attrs, num_v4, num_v6, pools, None)
            .await
    }

    /// [`Ipam::auto_assign`], with `rider` (the pod's WorkloadEndpoint) written in the
    /// allocation's transaction when the assignment is of exactly one address
    /// ([`Assigned::rider_written`] says whether it was).
    #[allow(clippy::too_many_arguments)]
    pub async fn auto_assign_with(
        &self,
        handle: &str,
        node: &str,
        attrs: &BTreeMap<String, String>,
        num_v4: usize,
        num_v6: usize,
        pools: &[String],
        rider: Option<Rider>,
    ) -> Result<Assigned, IpamError> {
        let want = Want {
            usage: AllowedUse::Workload,
            num_v4,
            num_v6,
        };
        let rider = rider.filter(|_| num_v4 + num_v6 == 1);
        self.assign_carrying(want, handle, node, attrs, pools, rider)
            .await
    }

    /// Assigns addresses for `want.usage` (pool `allowedUses`: Workload for pods, Tunnel for
    /// tunnel devices) to `handle` on `node`, from `pools` (names; empty: every Automatic pool
    /// allowing the use that applies to the node).
    pub async fn auto_assign_for(
        &self,
        want: Want,
        handle: &str,
        node: &str,
        attrs: &BTreeMap<String, String>,
        pools: &[String],
    ) -> Result<Assigned, IpamError> {
        self.assign_carrying(want, handle, node, attrs, pools, None)
            .await
    }

    /// [`Ipam::auto_assign_for`], `rider` written with the first allocation.
    async fn assign_carrying(
        &self,
        want: Want,
        handle: &str,
        node: &str,
        attrs: &BTreeMap<String, String>,
        pools: &[String],
        mut rider: Option<Rider>,
    ) -> Result<Assigned, IpamError> {
        let families: Vec<(u8, usize)> = [(4u8, want.num_v4), (6u8, want.num_v6)]
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .collect();
        // The configuration, the reservations and the first family's pools in one round trip.
        let first = families.first().map_or(4, |(f, _)| *f);
        // Serializable reads: settings a few milliseconds old are as good as current ones.
        let (cfg, reservations, first_pools) = tokio::join!(
            config::read(&self.reads),
            self.reads.list::<IpReservationSpec>(),
            self.pools_for(&self.reads, want.usage, node, first, pools)
        );
        let rules = Rules {
            cfg: cfg?,
            reserved: reservations?.0.iter().flat_map(|r| r.spec.nets()).collect(),
        };
        let mut first_pools = Some(first_pools?);
        let mut out = Assigned::default();
        for (fam, num) in families {
            let candidates = match first_pools.take() {
                Some(p) if fam == first => p,
                _ => {
                    self.pools_for(&self.reads, want.usage, node, fam, pools)
                        .await?
                }
            };
            if candidates.is_empty() {
                return Err(IpamError::NoPool {
                    family: fam,
                    node: node.to_string(),
                });
            }
            for _ in 0..num {
                // The handle's first address of this call: it has no record yet (unless an
                // earlier, failed ADD's undo is late: then the first write loses and retries).
                let fresh = out.v4.is_empty() && out.v6.is_empty();
                let carried = rider.take();
                out.rider_written |= carried.is_some();
                let addr = self
                    .assign_one(
                        handle,
                        node,
                        attrs,
                        fam,
                        &candidates,
                        &rules,
                        fresh,
                        carried,
                    )
                    .await?;
                if fam == 4 {
                    out.v4.push(addr);
                } else {
                    out.v6.push(addr);
                }
            }
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    async fn assign_one(
        &self,
        handle: &str,
        node: &str,
        attrs: &BTreeMap<String, String>,
        fam: u8,
        pools: &[IpPool],
        rules: &Rules,
        fresh: bool,
        rider: Option<Rider>,
    ) -> Result<IpAddr, IpamError> {
        let (cfg, reserved) = (&rules.cfg, rules.reserved.as_slice());
        let pool_nets: Vec<(IpNet, u8)> = pools
            .iter()
            .filter_map(|p| Some((p.spec.net()?, p.spec.block_prefix())))
            .collect();
        let in_pools = |c: &IpNet| pool_nets.iter().any(|(p, _)| p.contains(c));
        for attempt in 0..MAX_RETRIES {
            // The first try reads serializably, a retry (after a lost race) linearizably.
            let rd = if attempt == 0 {
                &self.reads
            } else {
                &self.store
            };
            // 1. The node's own blocks, read together (a node that ran many pods holds several,
            //    the first ones full); a full one is passed over without queueing for it.
            let (affs, affs_rev) = rd.list_json::<Affinity>(&node_affinities(node)).await?;
            let own: Vec<&Versioned<Affinity>> =
                affs.iter().filter(|a| in_pools(&a.value.cidr)).collect();
            let reads = own.iter().map(|a| {
                let key = block_key(&a.value.cidr);
                async move { rd.get_json::<Block>(&key).await }
            });
            for (a, block) in own.iter().zip(batch::join_all(reads).await) {
                let Some(block) = block? else {
                    self.drop_stale_affinity(a).await?;
                    continue;
                };
                if block.value.affinity.as_deref() != Some(node) {
                    self.drop_stale_affinity(a).await?;
                    continue;
                }
                if block.value.free_ordinal_except(reserved).is_none() {
                    continue;
                }
                if let Try::Got(ip) = self
                    .allocate_in(block, handle, attrs, reserved, fresh, rider.clone())
                    .await?
                {
                    return Ok(ip);
                }
            }
            // 2. Claim a new block (after adopting blocks whose claim was cut short before
            //    the affinity record was written).
            let (blocks, _) = rd.list_json::<Block>(BLOCKS).await?;
            let recorded: BTreeSet<IpNet> = affs.iter().map(|a| a.value.cidr).collect();
            let mut adopted = false;
            for b in &blocks {
                let c = b.value.cidr;
                if b.value.affinity.as_deref() == Some(node)
                    && !recorded.contains(&c)
                    && in_pools(&c)
                {
                    self.write_affinity(node, c).await?;
                    adopted = true;
                }
            }
            if adopted {
                continue;
            }
            let existing: BTreeSet<IpNet> = blocks.iter().map(|b| b.value.cidr).collect();
            // The node's blocks: by the block records, and by the affinity records the claim
            // below is guarded on (a block claimed since `affs_rev` fails the claim).
            let held = blocks
                .iter()
                .filter(|b| b.value.affinity.as_deref() == Some(node))
                .count()
                .max(affs.len());
            let may_claim = match claim_limit(cfg, held) {
                Ok(()) => true,
                Err(why) => {
                    if cfg.strict_affinity {
                        return Err(IpamError::StrictAffinity {
                            family: fam,
                            node: node.to_string(),
                            pools: pool_list(pools),
                            why,
                        });
                    }
                    false
                }
            };
            if may_claim {
                if let Some(cidr) = first_free_block(&pool_nets, &existing) {
                    self.claim(cidr, node, Some(affs_rev)).await?;
                    continue;
                }
                if cfg.strict_affinity {
                    return Err(IpamError::StrictAffinity {
                        family: fam,
                        node: node.to_string(),
                        pools: pool_list(pools),
                        why: "every block of the pools is claimed".into(),
                    });
                }
            }
            // 3. Borrow from any block of the pools with room (the lender keeps it).
            let mut lenders: Vec<_> = blocks
                .into_iter()
                .filter(|b| {
                    in_pools(&b.value.cidr) && b.value.free_ordinal_except(reserved).is_some()
                })
                .collect();
            if lenders.is_empty() {
                return Err(IpamError::Exhausted {
                    family: fam,
                    node: node.to_string(),
                });
            }
            lenders.sort_by_key(|b| std::cmp::Reverse(b.value.free_count()));
            for b in lenders {
                if let Try::Got(ip) = self
                    .allocate_in(b, handle, attrs, reserved, fresh, rider.clone())
                    .await?
                {
                    debug!(%ip, node, "borrowed an address from another node's block");
                    return Ok(ip);
                }
            }
            jitter(attempt).await;
        }
        Err(IpamError::Contention(format!(
            "IPv{fam} assignment on {node}"
        )))
    }

    /// Claims an unclaimed block for `node`: the block (which must not exist: one winner)
    /// and its affinity record in one transaction. With `guard`, the revision the node's
    /// affinity records were counted at: the claim fails if the node gained a block since
    /// (two racing claims cannot both pass `maxBlocksPerHost`).
    async fn claim(&self, cidr: IpNet, node: &str, guard: Option<i64>) -> Result<bool, IpamError> {
        let (bkey, akey) = (block_key(&cidr), affinity_key(node, &cidr));
        let block = Block::new(cidr, Some(node.to_string()));
        let aff = Affinity {
            node: node.to_string(),
            cidr,
        };
        let prefix = node_affinities(node);
        // The affinity record is put, not created: one left behind by a release cut short
        // is overwritten.
        let res = self
            .store
            .create_all(
                &[CasWrite::json(&bkey, &block, None)],
                &[CasWrite::json(&akey, &aff, None)],
                guard.map(|r| (prefix.as_str(), r)),
            )
            .await;
        match res {
            Ok(_) => {
                debug!(%cidr, node, "claimed block");
                Ok(true)
            }
            Err(e) if e.is_conflict() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes the affinity record of a block the node holds (a no-op if it exists).
    async fn write_affinity(&self, node: &str, cidr: IpNet) -> Result<(), IpamError> {
        let aff = Affinity {
            node: node.to_string(),
            cidr,
        };
        match self
            .store
            .create_json(&affinity_key(node, &cidr), &aff)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_conflict() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes an affinity record whose block is gone or no longer held by this node (a
    /// release cut short), if nobody changed it meanwhile.
    async fn drop_stale_affinity(&self, a: &Versioned<Affinity>) -> Result<(), IpamError> {
        match self.store.delete_raw(&a.key, Some(a.mod_revision)).await {
            Ok(()) => {
                debug!(node = %a.value.node, cidr = %a.value.cidr, "dropped stale affinity record");
                Ok(())
            }
            Err(e) if e.is_conflict() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Raises `handle`'s count for `block` by `delta` (may be negative); deletes the handle
    /// when it holds nothing any more.
    async fn bump_handle(&self, handle: &str, block: IpNet, delta: i64) -> Result<(), IpamError> {
        let key = handle_key(handle);
        for attempt in 0..MAX_RETRIES {
            let cur = self.store.get_json::<Handle>(&key).await?;
            let (mut h, rev) = match cur {
                Some(v) => (v.value, Some(v.mod_revision)),
                None => (
                    Handle {
                        handle_id: handle.to_string(),
                        blocks: BTreeMap::new(),
                    },
                    None,
                ),
            };
            let n = i64::from(h.blocks.get(&block).copied().unwrap_or(0)) + delta;
            if n <= 0 {
                h.blocks.remove(&block);
            } else {
                h.blocks.insert(block, n as u32);
            }
            let res = match (rev, h.blocks.is_empty()) {
                (None, true) => return Ok(()),
                (None, false) => self.store.create_json(&key, &h).await.map(|_| ()),
                (Some(r), true) => self.store.delete_raw(&key, Some(r)).await,
                (Some(r), false) => self.store.update_json(&key, &h, r).await.map(|_| ()),
            };
            match res {
                Ok(()) => return Ok(()),
                Err(e) if e.is_conflict() => jitter(attempt).await,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::Contention(key))
    }

    /// Assigns the given address to `handle` (a tunnel address, or a pod asking for a fixed
    /// IP). The block is claimed for `node` if nobody has claimed it yet.
    pub async fn assign_ip(
        &self,
        addr: IpAddr,
        handle: &str,
        node: &str,
        attrs: &BTreeMap<String, String>,
    ) -> Result<(), IpamError> {
        let (pools, _) = self.store.list::<IpPoolSpec>().await?;
        let (pool, prefix) = pools
            .iter()
            .filter_map(|p| Some((p.spec.net()?, p.spec.block_prefix())))
            .find(|(n, _)| n.contains(&addr))
            .ok_or(IpamError::NotInPool(addr))?;
        let cidr = IpNet::new(addr, prefix)
            .map_err(|_| IpamError::NotInPool(addr))?
            .trunc();
        debug_assert!(pool.contains(&cidr));
        let key = block_key(&cidr);
        for attempt in 0..MAX_RETRIES {
            let block = match self.store.get_json::<Block>(&key).await? {
                Some(b) => b,
                None => {
                    self.claim(cidr, node, None).await?;
                    continue;
                }
            };
            let ord = block
                .value
                .ordinal(addr)
                .ok_or(IpamError::NotInPool(addr))?;
            if let Some(a) = block.value.allocations.get(&ord) {
                return Err(IpamError::AlreadyAllocated {
                    addr,
                    handle: a.handle_id.clone(),
                });
            }
            self.bump_handle(handle, cidr, 1).await?;
            let mut b = block.value.clone();
            b.allocations.insert(
                ord,
                Allocation {
                    handle_id: handle.to_string(),
                    attrs: attrs.clone(),
                },
            );
            match self.store.update_json(&key, &b, block.mod_revision).await {
                Ok(_) => return Ok(()),
                Err(e) => {
                    self.bump_handle(handle, cidr, -1).await?;
                    if !e.is_conflict() {
                        return Err(e.into());
                    }
                    jitter(attempt).await;
                }
            }
        }
        Err(IpamError::Contention(key))
    }
}

/// Whether a node holding `held` blocks may claim another under `cfg`; why not.
fn claim_limit(cfg: &IpamConfig, held: usize) -> Result<(), String> {
    if !cfg.auto_allocate_blocks {
        return Err("autoAllocateBlocks is false".into());
    }
    if cfg.max_blocks_per_host > 0 && held >= cfg.max_blocks_per_host as usize {
        return Err(format!(
            "it holds {held} block(s), maxBlocksPerHost is {}",
            cfg.max_blocks_per_host
        ));
    }
    Ok(())
}

fn pool_list(pools: &[IpPool]) -> String {
    pools
        .iter()
        .map(|p| format!("'{}' ({})", p.name(), p.spec.cidr))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The first block of the pools that does not exist yet.
fn first_free_block(pools: &[(IpNet, u8)], existing: &BTreeSet<IpNet>) -> Option<IpNet> {
    for (pool, prefix) in pools {
        let n = block_count(pool, *prefix);
        // An IPv6 pool has astronomically many blocks; the first free one is always among the
        // first (existing + 1).
        let limit = n.min(existing.len() as u128 + 1);
        for i in 0..limit {
            let c = nth_block(pool, *prefix, i)?;
            if !existing.contains(&c) {
                return Some(c);
            }
        }
    }
    None
}
