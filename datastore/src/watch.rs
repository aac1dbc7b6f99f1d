//! Watching a key prefix from a revision, through compaction and etcd restarts.
//!
//! A [`Watch`] yields every change after the revision it started from, in order. When etcd
//! has compacted the history the watch needs (it fell behind, or was down), it lists the prefix
//! again and yields [`WatchEvent::Resync`] with the complete current set: the consumer replaces
//! its state with it, then changes continue from the list's revision. When the connection
//! breaks (etcd restarted), it reconnects with backoff and resumes from the next revision it has
//! not seen, so nothing is lost or repeated.

use crate::resources::{Resource, Spec};
use crate::store::{Store, StoreError, Versioned, kind_prefix, with_rev};
use etcd_client::{EventType, WatchOptions, WatchStream};
use std::collections::VecDeque;
use std::time::Duration;
use tracing::{debug, warn};

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent<T> {
    /// Created or updated.
    Put(T),
    /// Deleted: the key, the part of it after the watched prefix (the resource's name, or
    /// `namespace/name`), and the revision of the delete.
    Delete {
        key: String,
        name: String,
        revision: i64,
    },
    /// History was compacted away: `items` is everything under the prefix at `revision`;
    /// replace the state built so far with it.
    Resync { items: Vec<T>, revision: i64 },
}

type Decoder<T> = fn(&str, &[u8], i64) -> Result<T, StoreError>;

/// A stream of changes under a prefix; call [`Watch::next`] in a loop.
pub struct Watch<T> {
    store: Store,
    prefix: String,
    /// The first revision not yet delivered.
    next_revision: i64,
    stream: Option<WatchStream>,
    pending: VecDeque<WatchEvent<T>>,
    decode: Decoder<T>,
    backoff: Duration,
}

fn raw_decode(key: &str, bytes: &[u8], rev: i64) -> Result<Versioned<Vec<u8>>, StoreError> {
    Ok(Versioned {
        key: key.to_string(),
        value: bytes.to_vec(),
        mod_revision: rev,
    })
}

impl Store {
    /// Watches every key under `prefix`, starting with changes at `from_revision` (use the
    /// revision a list returned, plus one).
    pub fn watch_raw(&self, prefix: &str, from_revision: i64) -> Watch<Versioned<Vec<u8>>> {
        Watch::new(self.clone(), prefix.to_string(), from_revision, raw_decode)
    }

    /// Watches every resource of kind `S`, starting with changes at `from_revision`.
    /// `let (nodes, rev) = store.list::<NodeSpec>().await?; let w = store.watch::<NodeSpec>(rev + 1);`
    pub fn watch<S: Spec>(&self, from_revision: i64) -> Watch<Resource<S>> {
        let info = crate::resources::KindInfo {
            kind: S::KIND,
            plural: S::PLURAL,
            namespaced: S::NAMESPACED,
        };
        Watch::new(
            self.clone(),
            kind_prefix(info),
            from_revision,
            with_rev::<S>,
        )
    }
}

const MAX_BACKOFF: Duration = Duration::from_secs(2);
const MIN_BACKOFF: Duration = Duration::from_millis(50);

impl<T> Watch<T> {
    fn new(store: Store, prefix: String, from_revision: i64, decode: Decoder<T>) -> Self {
        Watch {
            store,
            prefix,
            next_revision: from_revision.max(1),
            stream: None,
            pending: VecDeque::new(),
            decode,
            backoff: MIN_BACKOFF,
        }
    }

    /// The first revision this watch has not delivered yet.
    pub fn next_revision(&self) -> i64 {
        self.next_revision
    }

    async fn pause(&mut self) {
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    fn name_of(&self, key: &str) -> String {
        key.strip_prefix(&self.prefix).unwrap_or(key).to_string()
    }

    /// The next change. Waits as long as needed; connection failures are retried inside and
    /// never returned, so this only returns events. Cancel-safe: it can sit in a
    /// `tokio::select!` beside other watches; a cancelled call loses no event.
    pub async fn next(&mut self) -> WatchEvent<T> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return e;
            }
            let Some(stream) = self.stream.as_mut() else {
                let opts = WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(self.next_revision)
                    .with_progress_notify();
                match self
                    .store
                    .client()
                    .watch(self.prefix.as_str(), Some(opts))
                    .await
                {
                    Ok(s) => self.stream = Some(s),
                    Err(e) => {
                        debug!(prefix = %self.prefix, error = %e, "watch: cannot start, retrying");
                        self.pause().await;
                    }
                }
                continue;
            };
            match stream.message().await {
                Ok(Some(resp)) => {
                    self.backoff = MIN_BACKOFF;
                    if resp.compact_revision() > 0 {
                        warn!(
                            prefix = %self.prefix,
                            from = self.next_revision,
                            compacted = resp.compact_revision(),
                            "watch: history compacted, listing again"
                        );
                        self.stream = None;
                        self.resync().await;
                        continue;
                    }
                    if resp.canceled() {
                        warn!(prefix = %self.prefix, reason = resp.cancel_reason(), "watch canceled by etcd, restarting");
                        self.stream = None;
                        self.pause().await;
                        continue;
                    }
                    for ev in resp.events() {
                        let Some(kv) = ev.kv() else { continue };
                        let key = String::from_utf8_lossy(kv.key()).into_owned();
                        let rev = kv.mod_revision();
                        self.next_revision = self.next_revision.max(rev + 1);
                        match ev.event_type() {
                            EventType::Put => match (self.decode)(&key, kv.value(), rev) {
                                Ok(v) => self.pending.push_back(WatchEvent::Put(v)),
                                Err(e) => {
                                    warn!(%key, error = %e, "watch: skipping undecodable value")
                                }
                            },
                            EventType::Delete => {
                                let name = self.name_of(&key);
                                self.pending.push_back(WatchEvent::Delete {
                                    key,
                                    name,
                                    revision: rev,
                                })
                            }
                        }
                    }
                    if resp.events().is_empty()
                        && !resp.created()
                        && let Some(h) = resp.header()
                    {
                        // Progress notification: everything up to this revision was sent.
                        self.next_revision = self.next_revision.max(h.revision() + 1);
                    }
                }
                Ok(None) | Err(_) => {
                    debug!(prefix = %self.prefix, "watch: stream ended, reconnecting");
                    self.stream = None;
                    self.pause().await;
                }
            }
        }
    }

    async fn resync(&mut self) {
        loop {
            match self.store.list_raw(&self.prefix).await {
                Ok((items, revision)) => {
                    let items = items
                        .into_iter()
                        .filter_map(|v| match (self.decode)(&v.key, &v.value, v.mod_revision) {
                            Ok(t) => Some(t),
                            Err(e) => {
                                warn!(key = %v.key, error = %e, "resync: skipping undecodable value");
                                None
                            }
                        })
                        .collect();
                    self.pending.clear();
                    self.pending
                        .push_back(WatchEvent::Resync { items, revision });
                    self.next_revision = revision + 1;
                    return;
                }
                Err(e) => {
                    debug!(prefix = %self.prefix, error = %e, "resync: list failed, retrying");
                    self.pause().await;
                }
            }
        }
    }
}
