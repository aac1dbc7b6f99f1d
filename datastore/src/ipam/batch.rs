//! Group commit of allocations in one block: concurrent assignments through one [`Ipam`]
//! that land in the same block are written together, one compare-and-swap transaction for the
//! block and each request's handle, instead of racing each other for the block's revision.
//!
//! Per block, the first request to arrive writes (the *writer*); requests arriving meanwhile
//! wait in the block's queue. The writer commits batches from the front of the queue (its own
//! request is in the first), answers each request, and once its own is answered hands the
//! writing over to the oldest waiter, if any. A lost race with another process re-reads the
//! block and retries the same batch. No lock is held across an await.

use super::records::*;
use super::{Ipam, IpamError, MAX_RETRIES, Rider, jitter};
use crate::store::{CasWrite, Store, StoreError, Versioned};
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Most requests in one transaction (etcd allows 128 operations by default).
const MAX_BATCH: usize = 32;

/// One request for an address in a block.
struct Req {
    handle: String,
    attrs: BTreeMap<String, String>,
    reserved: Arc<Vec<IpNet>>,
    /// The handle has no record yet, as far as the caller knows: the first write creates it
    /// without reading it first (one round trip less); a lost race reads it.
    fresh: bool,
    /// Written in the same transaction as its allocation (the pod's WorkloadEndpoint).
    rider: Option<Rider>,
    tx: oneshot::Sender<Msg>,
}

/// What a waiting request is told.
enum Msg {
    Got(IpAddr),
    /// No room (for it) in the block: try elsewhere.
    Full,
    Failed(IpamError),
    /// It is the block's writer now (its request is back at the front of the queue).
    Lead(ReqData),
}

/// A request without its answer channel (handed back with [`Msg::Lead`]).
struct ReqData {
    handle: String,
    attrs: BTreeMap<String, String>,
    reserved: Arc<Vec<IpNet>>,
    fresh: bool,
    rider: Option<Rider>,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Req>,
}

/// The queues of blocks with a writer; a block without an entry has none.
#[derive(Default)]
pub(super) struct Batcher {
    queues: Mutex<HashMap<IpNet, Queue>>,
}

/// Outcome of trying one block.
pub(super) enum Try {
    Got(IpAddr),
    /// The block had no room (or was taken meanwhile): try elsewhere.
    Full,
}

fn failed(e: &IpamError) -> IpamError {
    match e {
        IpamError::Store(StoreError::Etcd(_)) => IpamError::Batch {
            message: e.to_string(),
            unavailable: true,
        },
        _ => IpamError::Batch {
            message: e.to_string(),
            unavailable: false,
        },
    }
}

impl Batcher {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpNet, Queue>> {
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Ipam {
    /// Takes a free address of `block` (read just before) for `handle`, batched with the
    /// concurrent requests for the same block.
    pub(super) async fn allocate_in(
        &self,
        block: Versioned<Block>,
        handle: &str,
        attrs: &BTreeMap<String, String>,
        reserved: &[IpNet],
        fresh: bool,
        rider: Option<Rider>,
    ) -> Result<Try, IpamError> {
        let cidr = block.value.cidr;
        let mut data = ReqData {
            handle: handle.to_string(),
            attrs: attrs.clone(),
            reserved: Arc::new(reserved.to_vec()),
            fresh,
            rider,
        };
        let mut fresh = Some(block);
        let mut lead_at_front = false;
        loop {
            let (tx, rx) = oneshot::channel();
            let req = Req {
                handle: data.handle,
                attrs: data.attrs,
                reserved: data.reserved,
                fresh: data.fresh,
                rider: data.rider,
                tx,
            };
            let lead = {
                let mut qs = self.batcher.lock();
                match qs.get_mut(&cidr) {
                    Some(q) if lead_at_front => {
                        q.waiting.push_front(req);
                        true
                    }
                    Some(q) => {
                        q.waiting.push_back(req);
                        false
                    }
                    None => {
                        let mut q = Queue::default();
                        q.waiting.push_back(req);
                        qs.insert(cidr, q);
                        true
                    }
                }
            };
            if lead {
                self.write(cidr, fresh.take()).await;
            }
            match rx.await {
                Ok(Msg::Got(ip)) => return Ok(Try::Got(ip)),
                Ok(Msg::Full) => return Ok(Try::Full),
                Ok(Msg::Failed(e)) => return Err(e),
                Ok(Msg::Lead(d)) => {
                    data = d;
                    lead_at_front = true;
                    // The block read before waiting predates the batches written meanwhile:
                    // the new writer reads it again rather than lose a compare-and-swap.
                    fresh = None;
                }
                // The writer vanished without answering (its task was cancelled).
                Err(_) => {
                    return Err(IpamError::Batch {
                        message: format!("the writer of block {cidr} was cancelled"),
                        unavailable: true,
                    });
                }
            }
        }
    }

    /// The writer's turn: commits the batch at the front of `cidr`'s queue (which holds the
    /// writer's own request), then hands over to the oldest waiter or removes the queue (also
    /// when the writer is cancelled midway, so the queue never lacks a writer).
    async fn write(&self, cidr: IpNet, block: Option<Versioned<Block>>) {
        let handoff = HandOff { ipam: self, cidr };
        let batch: Vec<Req> = {
            let mut qs = self.batcher.lock();
            let Some(q) = qs.get_mut(&cidr) else { return };
            let mut seen = BTreeSet::new();
            let mut batch = Vec::new();
            let mut rest = VecDeque::new();
            while let Some(r) = q.waiting.pop_front() {
                if r.tx.is_closed() {
                    // Its caller gave up (an ADD past its deadline): allocate nothing for it.
                    continue;
                }
                // One request per handle in a transaction (each bumps the handle's count).
                if batch.len() < MAX_BATCH && seen.insert(r.handle.clone()) {
                    batch.push(r);
                } else {
                    rest.push_back(r);
                }
            }
            q.waiting = rest;
            batch
        };
        self.commit(cidr, block, batch).await;
        drop(handoff);
    }

    /// Writes one batch and answers every request in it.
    async fn commit(&self, cidr: IpNet, mut block: Option<Versioned<Block>>, mut batch: Vec<Req>) {
        let key = block_key(&cidr);
        for attempt in 0..MAX_RETRIES {
            let cur = match block.take() {
                Some(b) => b,
                None => match self.store.get_json::<Block>(&key).await {
                    Ok(Some(b)) => b,
                    Ok(None) => {
                        for r in batch {
                            let _ = r.tx.send(Msg::Full);
                        }
                        return;
                    }
                    Err(e) => {
                        let e = IpamError::from(e);
                        for r in batch {
                            let _ = r.tx.send(Msg::Failed(failed(&e)));
                        }
                        return;
                    }
                },
            };
            // Ordinals in order of arrival; a request the block has no room for goes elsewhere.
            let mut b = cur.value.clone();
            let mut placed: Vec<(Req, u32)> = Vec::new();
            let mut riders: Vec<(String, Vec<u8>)> = Vec::new();
            for r in batch {
                match b.free_ordinal_except(&r.reserved) {
                    Some(ord) => {
                        if let Some(rider) = &r.rider {
                            match rider(b.addr(ord)) {
                                Ok(record) => riders.push(record),
                                Err(e) => {
                                    let _ = r.tx.send(Msg::Failed(IpamError::from(e)));
                                    continue;
                                }
                            }
                        }
                        b.allocations.insert(
                            ord,
                            Allocation {
                                handle_id: r.handle.clone(),
                                attrs: r.attrs.clone(),
                            },
                        );
                        placed.push((r, ord));
                    }
                    None => {
                        let _ = r.tx.send(Msg::Full);
                    }
                }
            }
            if placed.is_empty() {
                return;
            }
            // The handles: serializable reads on the first try (the transaction compares
            // their revisions), linearizable after a lost race; a fresh handle's first try
            // reads nothing (the transaction requires it absent).
            let rd = if attempt == 0 {
                &self.reads
            } else {
                &self.store
            };
            let handles = futures_handles(rd, &placed, cidr, attempt == 0).await;
            let handles = match handles {
                Ok(h) => h,
                Err(e) => {
                    for (r, _) in placed {
                        let _ = r.tx.send(Msg::Failed(failed(&e)));
                    }
                    return;
                }
            };
            let mut writes = vec![CasWrite::json(&key, &b, Some(cur.mod_revision))];
            for (hkey, h, rev) in &handles {
                writes.push(CasWrite::json(hkey, h, *rev));
            }
            match self.store.put_json_all_with(&writes, &riders).await {
                Ok(_) => {
                    for (r, ord) in placed {
                        let _ = r.tx.send(Msg::Got(b.addr(ord)));
                    }
                    return;
                }
                Err(e) if e.is_conflict() => {
                    batch = placed.into_iter().map(|(r, _)| r).collect();
                    jitter(attempt).await;
                }
                Err(e) => {
                    let e = IpamError::from(e);
                    for (r, _) in placed {
                        let _ = r.tx.send(Msg::Failed(failed(&e)));
                    }
                    return;
                }
            }
        }
        for r in batch {
            let _ = r.tx.send(Msg::Failed(IpamError::Contention(key.clone())));
        }
    }
}

/// Hands the block's writing to the oldest live waiter, or removes the queue, when the
/// writer is done or dropped.
struct HandOff<'a> {
    ipam: &'a Ipam,
    cidr: IpNet,
}

impl Drop for HandOff<'_> {
    fn drop(&mut self) {
        let mut qs = self.ipam.batcher.lock();
        let Some(q) = qs.get_mut(&self.cidr) else {
            return;
        };
        while let Some(next) = q.waiting.pop_front() {
            let data = ReqData {
                handle: next.handle,
                attrs: next.attrs,
                reserved: next.reserved,
                fresh: next.fresh,
                rider: next.rider,
            };
            if next.tx.send(Msg::Lead(data)).is_ok() {
                return;
            }
        }
        qs.remove(&self.cidr);
    }
}

/// Each placed request's handle record with its count for `cidr` raised, read in parallel:
/// (key, record, revision to compare; `None`: must not exist).
async fn futures_handles(
    store: &Store,
    placed: &[(Req, u32)],
    cidr: IpNet,
    trust_fresh: bool,
) -> Result<Vec<(String, Handle, Option<i64>)>, IpamError> {
    let reads = placed.iter().map(|(r, _)| {
        let key = handle_key(&r.handle);
        async move {
            let cur = if trust_fresh && r.fresh {
                None
            } else {
                store.get_json::<Handle>(&key).await?
            };
            Ok::<_, IpamError>((key, r.handle.clone(), cur))
        }
    });
    let mut out = Vec::new();
    for res in join_all(reads).await {
        let (key, id, cur) = res?;
        let (mut h, rev) = match cur {
            Some(v) => (v.value, Some(v.mod_revision)),
            None => (
                Handle {
                    handle_id: id,
                    blocks: BTreeMap::new(),
                },
                None,
            ),
        };
        *h.blocks.entry(cidr).or_insert(0) += 1;
        out.push((key, h, rev));
    }
    Ok(out)
}

/// Runs the futures concurrently on this task; results in order.
pub(super) async fn join_all<F: std::future::Future>(
    futs: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let mut set: Vec<std::pin::Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}
