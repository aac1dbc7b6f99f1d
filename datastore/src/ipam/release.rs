//! Giving addresses and blocks back: by address, by handle, and a node's affinities.
//! Each step is a compare-and-swap; the block is written before the handle (see the module
//! doc of [`crate::ipam`] for why).

use super::records::*;
use super::{Ipam, IpamError, MAX_RETRIES, jitter};
use crate::store::Versioned;
use ipnet::IpNet;
use std::net::IpAddr;
use tracing::debug;

impl Ipam {
    /// Drops every allocation in block `cidr` that `keep` rejects; returns what was dropped
    /// as (address, handle). A block left empty and without affinity is deleted.
    async fn drop_allocations(
        &self,
        cidr: IpNet,
        remove: impl Fn(u32, &Allocation) -> bool,
    ) -> Result<Vec<(IpAddr, String)>, IpamError> {
        let key = block_key(&cidr);
        for attempt in 0..MAX_RETRIES {
            let Some(block) = self.store.get_json::<Block>(&key).await? else {
                return Ok(Vec::new());
            };
            let mut b = block.value.clone();
            let gone: Vec<(IpAddr, String)> = block
                .value
                .allocations
                .iter()
                .filter(|(o, a)| remove(**o, a))
                .map(|(o, a)| (block.value.addr(*o), a.handle_id.clone()))
                .collect();
            if gone.is_empty() {
                return Ok(gone);
            }
            b.allocations.retain(|o, a| !remove(*o, a));
            let res = if b.allocations.is_empty() && b.affinity.is_none() {
                self.store.delete_raw(&key, Some(block.mod_revision)).await
            } else {
                self.store
                    .update_json(&key, &b, block.mod_revision)
                    .await
                    .map(|_| ())
            };
            match res {
                Ok(()) => return Ok(gone),
                Err(e) if e.is_conflict() => jitter(attempt).await,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::Contention(key))
    }

    /// Releases single addresses, whatever handle holds them. Returns the addresses that
    /// were not allocated.
    pub async fn release_ips(&self, addrs: &[IpAddr]) -> Result<Vec<IpAddr>, IpamError> {
        let blocks = self.blocks().await?;
        let mut unallocated = Vec::new();
        for &addr in addrs {
            let Some(block) = blocks.iter().find(|b| b.value.cidr.contains(&addr)) else {
                unallocated.push(addr);
                continue;
            };
            let cidr = block.value.cidr;
            let Some(ord) = block.value.ordinal(addr) else {
                unallocated.push(addr);
                continue;
            };
            let gone = self.drop_allocations(cidr, |o, _| o == ord).await?;
            if gone.is_empty() {
                unallocated.push(addr);
            }
            for (_, handle) in gone {
                self.bump_handle(&handle, cidr, -1).await?;
            }
        }
        Ok(unallocated)
    }

    /// Releases every address of `handle` and deletes the handle; also repairs a handle
    /// that claims more than its blocks hold. Returns the addresses released.
    pub async fn release_by_handle(&self, handle: &str) -> Result<Vec<IpAddr>, IpamError> {
        let key = handle_key(handle);
        let mut released = Vec::new();
        for attempt in 0..MAX_RETRIES {
            let Some(h) = self.store.get_json::<Handle>(&key).await? else {
                if released.is_empty() {
                    return Err(IpamError::HandleNotFound(handle.to_string()));
                }
                return Ok(released);
            };
            for cidr in h.value.blocks.keys() {
                let gone = self
                    .drop_allocations(*cidr, |_, a| a.handle_id == handle)
                    .await?;
                released.extend(gone.into_iter().map(|(ip, _)| ip));
            }
            match self.store.delete_raw(&key, Some(h.mod_revision)).await {
                Ok(()) => {
                    debug!(handle, n = released.len(), "released handle");
                    return Ok(released);
                }
                Err(e) if e.is_conflict() => jitter(attempt).await,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::Contention(key))
    }

    /// Releases `node`'s claims: its empty blocks are deleted, blocks still holding
    /// addresses lose their affinity (they are deleted when their last address goes), and
    /// its affinity records are removed. Returns the blocks released.
    pub async fn release_affinity(&self, node: &str) -> Result<Vec<IpNet>, IpamError> {
        let (affs, _) = self
            .store
            .list_json::<Affinity>(&node_affinities(node))
            .await?;
        let mut cidrs: Vec<IpNet> = affs.iter().map(|a| a.value.cidr).collect();
        // Blocks affine to the node without an affinity record (a claim cut short).
        for b in self.blocks().await? {
            if b.value.affinity.as_deref() == Some(node) && !cidrs.contains(&b.value.cidr) {
                cidrs.push(b.value.cidr);
            }
        }
        for cidr in &cidrs {
            self.unclaim_block(*cidr, node).await?;
            match self.store.delete_raw(&affinity_key(node, cidr), None).await {
                Ok(()) | Err(crate::StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(cidrs)
    }

    async fn unclaim_block(&self, cidr: IpNet, node: &str) -> Result<(), IpamError> {
        let key = block_key(&cidr);
        for attempt in 0..MAX_RETRIES {
            let Some(Versioned {
                value: mut b,
                mod_revision,
                ..
            }) = self.store.get_json::<Block>(&key).await?
            else {
                return Ok(());
            };
            if b.affinity.as_deref() != Some(node) {
                return Ok(());
            }
            let res = if b.allocations.is_empty() {
                self.store.delete_raw(&key, Some(mod_revision)).await
            } else {
                b.affinity = None;
                self.store
                    .update_json(&key, &b, mod_revision)
                    .await
                    .map(|_| ())
            };
            match res {
                Ok(()) => return Ok(()),
                Err(e) if e.is_conflict() => jitter(attempt).await,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::Contention(key))
    }
}
