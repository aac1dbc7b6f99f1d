//! The etcd backend: connecting (plain or TLS), and get / list / create / update / delete of
//! keys and resources, with compare-and-swap on each key's `mod_revision`.

use crate::args::EtcdArgs;
use crate::resources::{AnyResource, KindInfo, ModelError, Resource, Spec};
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, Identity,
    TlsOptions, Txn, TxnOp,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Every key margay writes starts with this.
pub const ROOT: &str = "/margay/";
/// Where resources live: `<RESOURCES><plural>/[<namespace>/]<name>`.
pub const RESOURCES: &str = "/margay/resources/v1/";

/// What a datastore operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("etcd: {}", etcd_message(.0))]
    Etcd(etcd_client::Error),
    #[error("{key}: not found")]
    NotFound { key: String },
    #[error("{key}: already exists")]
    AlreadyExists { key: String },
    /// The key changed (or vanished) since the revision the write was based on.
    #[error("{key}: changed since revision {expected} (update conflict); read it again")]
    Conflict { key: String, expected: i64 },
    #[error("{key}: stored value does not decode: {message}")]
    Decode { key: String, message: String },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("reading {}: {source}", path.display())]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
}

impl From<etcd_client::Error> for StoreError {
    fn from(e: etcd_client::Error) -> Self {
        StoreError::Etcd(e)
    }
}

/// etcd-client's errors repeat their cause; keep the gRPC status message when there is one.
fn etcd_message(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => format!("{} ({:?})", s.message(), s.code()),
        e => e.to_string(),
    }
}

impl StoreError {
    /// Whether this is a lost compare-and-swap race (worth retrying after a fresh read).
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            StoreError::Conflict { .. } | StoreError::AlreadyExists { .. }
        )
    }
}

/// One write of [`Store::put_json_all`]: the key, its encoded value ([`CasWrite::json`]) and
/// the revision the key must still be at (`None`: must not exist).
#[derive(Debug, Clone)]
pub struct CasWrite<'a> {
    pub key: &'a str,
    pub value: Vec<u8>,
    pub expected: Option<i64>,
}

impl<'a> CasWrite<'a> {
    /// A JSON record's write.
    pub fn json<T: Serialize>(key: &'a str, value: &T, expected: Option<i64>) -> CasWrite<'a> {
        CasWrite {
            key,
            value: encode(value),
            expected,
        }
    }
}

/// A value read from etcd with the key's revisions.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    pub key: String,
    pub value: T,
    /// The key's last modification: the revision a compare-and-swap compares against.
    pub mod_revision: i64,
}

/// A handle on etcd; cheap to clone (one shared connection).
#[derive(Clone)]
pub struct Store {
    client: Client,
    /// Reads answered from the member's own state, without a raft round trip
    /// ([`Store::serializable`]).
    serializable: bool,
}

fn read(path: &Path) -> Result<Vec<u8>, StoreError> {
    std::fs::read(path).map_err(|source| StoreError::File {
        path: path.to_path_buf(),
        source,
    })
}

/// The key of a resource.
pub fn resource_key(info: KindInfo, namespace: Option<&str>, name: &str) -> String {
    match (info.namespaced, namespace) {
        (true, Some(ns)) => format!("{RESOURCES}{}/{ns}/{name}", info.plural),
        _ => format!("{RESOURCES}{}/{name}", info.plural),
    }
}

/// The prefix under which every resource of a kind lives.
pub fn kind_prefix(info: KindInfo) -> String {
    format!("{RESOURCES}{}/", info.plural)
}

fn info_of<S: Spec>() -> KindInfo {
    KindInfo {
        kind: S::KIND,
        plural: S::PLURAL,
        namespaced: S::NAMESPACED,
    }
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Decode {
        key: key.to_string(),
        message: e.to_string(),
    })
}

/// The end of the key range of every key starting with `prefix` (etcd's `range_end`).
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every key: etcd's "\0" range end.
    vec![0]
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

impl Store {
    /// Connects to the endpoints in `args`, with TLS when a CA or client certificate is given.
    pub async fn connect(args: &EtcdArgs) -> Result<Store, StoreError> {
        if args.endpoints.is_empty() {
            return Err(StoreError::Config("no etcd endpoints given".into()));
        }
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(10))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        if args.ca.is_some() || args.cert.is_some() {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &args.ca {
                tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
            }
            match (&args.cert, &args.key) {
                (Some(c), Some(k)) => tls = tls.identity(Identity::from_pem(read(c)?, read(k)?)),
                (None, None) => {}
                _ => {
                    return Err(StoreError::Config(
                        "--etcd-cert-file and --etcd-key-file go together".into(),
                    ));
                }
            }
            opts = opts.with_tls(tls);
        }
        let client = Client::connect(&args.endpoints, Some(opts)).await?;
        Ok(Store {
            client,
            serializable: false,
        })
    }

    /// The same connection whose reads are serializable: answered from the etcd member's own
    /// state at once, instead of linearizable reads that each wait for a raft round (and so
    /// behind every write being committed at that moment: under concurrent writes, each read
    /// costs a disk sync). A serializable read may miss the latest writes (on a member that
    /// lags); only for reads whose result a compare-and-swap checks anyway, where stale
    /// means a lost race and a retry, never a wrong write.
    ///
    /// `MARGAY_ETCD_LINEARIZABLE_READS=1` in the environment keeps every read linearizable
    /// (a diagnostic: `bench/cni-latency.sh` measures both in one run).
    pub fn serializable(&self) -> Store {
        static LINEARIZABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let linearizable = *LINEARIZABLE.get_or_init(|| {
            std::env::var("MARGAY_ETCD_LINEARIZABLE_READS").is_ok_and(|v| v == "1")
        });
        Store {
            client: self.client.clone(),
            serializable: !linearizable,
        }
    }

    fn get_options(&self) -> GetOptions {
        let o = GetOptions::new();
        if self.serializable {
            o.with_serializable()
        } else {
            o
        }
    }

    /// The underlying etcd client (for maintenance calls such as compaction).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    // ---- raw keys -------------------------------------------------------------------------

    /// Reads one key.
    pub async fn get_raw(&self, key: &str) -> Result<Option<Versioned<Vec<u8>>>, StoreError> {
        let resp = self
            .client
            .kv_client()
            .get(key, Some(self.get_options()))
            .await?;
        Ok(resp.kvs().first().map(|kv| Versioned {
            key: key.to_string(),
            value: kv.value().to_vec(),
            mod_revision: kv.mod_revision(),
        }))
    }

    /// Reads every key under `prefix`, and the store revision the list is consistent at.
    pub async fn list_raw(
        &self,
        prefix: &str,
    ) -> Result<(Vec<Versioned<Vec<u8>>>, i64), StoreError> {
        let resp = self
            .client
            .kv_client()
            .get(prefix, Some(self.get_options().with_prefix()))
            .await?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        let items = resp
            .kvs()
            .iter()
            .map(|kv| Versioned {
                key: String::from_utf8_lossy(kv.key()).into_owned(),
                value: kv.value().to_vec(),
                mod_revision: kv.mod_revision(),
            })
            .collect();
        Ok((items, revision))
    }

    /// Writes `key` only if it does not exist; returns the new mod_revision.
    pub async fn create_raw(&self, key: &str, value: Vec<u8>) -> Result<i64, StoreError> {
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value, None)]);
        let resp = self.client.kv_client().txn(txn).await?;
        if !resp.succeeded() {
            return Err(StoreError::AlreadyExists {
                key: key.to_string(),
            });
        }
        Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
    }

    /// Overwrites `key` only if its mod_revision is still `expected`; returns the new one.
    pub async fn update_raw(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: i64,
    ) -> Result<i64, StoreError> {
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, expected)])
            .and_then([TxnOp::put(key, value, None)]);
        let resp = self.client.kv_client().txn(txn).await?;
        if !resp.succeeded() {
            return Err(StoreError::Conflict {
                key: key.to_string(),
                expected,
            });
        }
        Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
    }

    /// Deletes `key`; with `expected`, only if its mod_revision is still that.
    pub async fn delete_raw(&self, key: &str, expected: Option<i64>) -> Result<(), StoreError> {
        let mut kv = self.client.kv_client();
        match expected {
            Some(rev) => {
                let txn = Txn::new()
                    .when([Compare::mod_revision(key, CompareOp::Equal, rev)])
                    .and_then([TxnOp::delete(key, None::<DeleteOptions>)]);
                if !kv.txn(txn).await?.succeeded() {
                    return Err(StoreError::Conflict {
                        key: key.to_string(),
                        expected: rev,
                    });
                }
            }
            None => {
                if kv.delete(key, None).await?.deleted() == 0 {
                    return Err(StoreError::NotFound {
                        key: key.to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The store's current revision.
    pub async fn revision(&self) -> Result<i64, StoreError> {
        let resp = self
            .client
            .kv_client()
            .get(
                ROOT,
                Some(GetOptions::new().with_count_only().with_prefix()),
            )
            .await?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
    }

    // ---- JSON records (IPAM) -------------------------------------------------------------

    /// Reads and decodes one JSON record.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<Versioned<T>>, StoreError> {
        match self.get_raw(key).await? {
            None => Ok(None),
            Some(v) => Ok(Some(Versioned {
                value: decode(key, &v.value)?,
                key: v.key,
                mod_revision: v.mod_revision,
            })),
        }
    }

    /// Reads and decodes every record under `prefix`.
    pub async fn list_json<T: DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<(Vec<Versioned<T>>, i64), StoreError> {
        let (items, rev) = self.list_raw(prefix).await?;
        let mut out = Vec::with_capacity(items.len());
        for v in items {
            out.push(Versioned {
                value: decode(&v.key, &v.value)?,
                key: v.key,
                mod_revision: v.mod_revision,
            });
        }
        Ok((out, rev))
    }

    /// Creates a JSON record (fails if the key exists).
    pub async fn create_json<T: Serialize>(&self, key: &str, value: &T) -> Result<i64, StoreError> {
        self.create_raw(key, encode(value)).await
    }

    /// Compare-and-swap update of a JSON record.
    pub async fn update_json<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        expected: i64,
    ) -> Result<i64, StoreError> {
        self.update_raw(key, encode(value), expected).await
    }

    /// Writes several JSON records in one transaction, each only if its key is still at the
    /// given revision (`None`: the key must not exist). All or nothing: a lost race on any
    /// key is a [`StoreError::Conflict`] (or `AlreadyExists`) naming the first such key.
    pub async fn put_json_all(&self, writes: &[CasWrite<'_>]) -> Result<i64, StoreError> {
        self.put_json_all_with(writes, &[]).await
    }

    /// [`Store::put_json_all`], with `riders` (key, encoded value) put in the same transaction
    /// without a compare of their own: records that belong to the compared ones, such as the
    /// WorkloadEndpoint of a pod whose address the transaction allocates (one write per ADD).
    pub async fn put_json_all_with(
        &self,
        writes: &[CasWrite<'_>],
        riders: &[(String, Vec<u8>)],
    ) -> Result<i64, StoreError> {
        let compares: Vec<Compare> = writes
            .iter()
            .map(|w| match w.expected {
                None => Compare::create_revision(w.key, CompareOp::Equal, 0),
                Some(r) => Compare::mod_revision(w.key, CompareOp::Equal, r),
            })
            .collect();
        let riders: Vec<CasWrite<'_>> = riders
            .iter()
            .map(|(key, value)| CasWrite {
                key,
                value: value.clone(),
                expected: None,
            })
            .collect();
        let Some(rev) = self.put_if(compares, writes.iter().chain(&riders)).await? else {
            let first = writes.first();
            return Err(match first {
                Some(CasWrite {
                    key,
                    expected: Some(r),
                    ..
                }) => StoreError::Conflict {
                    key: key.to_string(),
                    expected: *r,
                },
                _ => StoreError::AlreadyExists {
                    key: first.map(|w| w.key.to_string()).unwrap_or_default(),
                },
            });
        };
        Ok(rev)
    }

    /// Puts every write in one transaction if every compare holds; the revision, or `None`
    /// when a compare failed.
    async fn put_if<'a>(
        &self,
        compares: Vec<Compare>,
        writes: impl IntoIterator<Item = &'a CasWrite<'a>>,
    ) -> Result<Option<i64>, StoreError> {
        let ops: Vec<TxnOp> = writes
            .into_iter()
            .map(|w| TxnOp::put(w.key, w.value.clone(), None))
            .collect();
        let resp = self
            .client
            .kv_client()
            .txn(Txn::new().when(compares).and_then(ops))
            .await?;
        Ok(resp
            .succeeded()
            .then(|| resp.header().map(|h| h.revision()).unwrap_or(0)))
    }

    /// One transaction that creates every key of `creates` (none may exist yet) and puts
    /// every key of `puts`; with `guard` (prefix, revision), only if no key under the prefix
    /// was created after the revision: a count of those keys read at that revision still holds
    /// when the writes land (a limit checked against it cannot be overrun by a racing writer).
    /// A lost race is `AlreadyExists` on the first key created.
    pub async fn create_all(
        &self,
        creates: &[CasWrite<'_>],
        puts: &[CasWrite<'_>],
        guard: Option<(&str, i64)>,
    ) -> Result<i64, StoreError> {
        let mut compares: Vec<Compare> = creates
            .iter()
            .map(|w| Compare::create_revision(w.key, CompareOp::Equal, 0))
            .collect();
        if let Some((prefix, revision)) = guard {
            // Over a range, etcd's compare must hold for every key in it (and holds for none).
            compares.push(
                Compare::create_revision(prefix, CompareOp::Less, revision + 1)
                    .with_range(prefix_end(prefix)),
            );
        }
        match self.put_if(compares, creates.iter().chain(puts)).await? {
            Some(rev) => Ok(rev),
            None => Err(StoreError::AlreadyExists {
                key: creates
                    .first()
                    .map(|w| w.key.to_string())
                    .unwrap_or_default(),
            }),
        }
    }

    // ---- typed resources -----------------------------------------------------------------

    /// A resource as written to etcd: its key and its stored value (checked as
    /// [`Store::create`] checks it), for a transaction that writes it beside other records.
    pub fn resource_record<S: Spec>(r: &Resource<S>) -> Result<(String, Vec<u8>), StoreError> {
        r.validate()?;
        Ok((key_of(r), encode(&stored(r))))
    }

    /// Reads one resource; `metadata.resourceVersion` is set to its revision.
    pub async fn get<S: Spec>(&self, name: &str) -> Result<Option<Resource<S>>, StoreError> {
        self.get_ns(None, name).await
    }

    /// Reads one resource of a namespaced kind.
    pub async fn get_ns<S: Spec>(
        &self,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Resource<S>>, StoreError> {
        let key = resource_key(info_of::<S>(), namespace, name);
        self.get_raw(&key)
            .await?
            .map(|v| with_rev(&key, &v.value, v.mod_revision))
            .transpose()
    }

    /// Every resource of a kind, and the revision to watch from (`revision + 1`).
    pub async fn list<S: Spec>(&self) -> Result<(Vec<Resource<S>>, i64), StoreError> {
        let (items, rev) = self.list_raw(&kind_prefix(info_of::<S>())).await?;
        let mut out = Vec::with_capacity(items.len());
        for v in items {
            out.push(with_rev(&v.key, &v.value, v.mod_revision)?);
        }
        Ok((out, rev))
    }

    /// Creates a resource (fails if it exists); returns it with its new resourceVersion.
    pub async fn create<S: Spec>(&self, r: &Resource<S>) -> Result<Resource<S>, StoreError> {
        r.validate()?;
        let key = key_of(r);
        let rev = self.create_raw(&key, encode(&stored(r))).await?;
        Ok(stamped(r, rev))
    }

    /// Replaces a resource. With `metadata.resourceVersion` set, only if the stored one still
    /// has that revision (compare-and-swap); without, only if it exists.
    pub async fn update<S: Spec>(&self, r: &Resource<S>) -> Result<Resource<S>, StoreError> {
        r.validate()?;
        let key = key_of(r);
        let expected = match r.revision() {
            Some(rev) => rev,
            None => {
                self.get_raw(&key)
                    .await?
                    .ok_or_else(|| StoreError::NotFound { key: key.clone() })?
                    .mod_revision
            }
        };
        let rev = self.update_raw(&key, encode(&stored(r)), expected).await?;
        Ok(stamped(r, rev))
    }

    /// Creates or replaces a resource (a CAS against what was read just before).
    pub async fn apply<S: Spec>(&self, r: &Resource<S>) -> Result<Resource<S>, StoreError> {
        r.validate()?;
        let key = key_of(r);
        let rev = match self.get_raw(&key).await? {
            None => self.create_raw(&key, encode(&stored(r))).await?,
            Some(cur) => {
                let expected = r.revision().unwrap_or(cur.mod_revision);
                self.update_raw(&key, encode(&stored(r)), expected).await?
            }
        };
        Ok(stamped(r, rev))
    }

    /// Read-modify-write with compare-and-swap, retried on conflict: `f` changes the current
    /// copy (a `Resource::new(name, S::default())` when there is none) and the result is
    /// written back. For a daemon keeping its own Node up to date without clobbering fields
    /// others write.
    pub async fn modify<S: Spec>(
        &self,
        name: &str,
        mut f: impl FnMut(&mut Resource<S>),
    ) -> Result<Resource<S>, StoreError> {
        let mut last = None;
        for _ in 0..100 {
            let (mut r, existed) = match self.get::<S>(name).await? {
                Some(r) => (r, true),
                None => (Resource::new(name, S::default()), false),
            };
            f(&mut r);
            let res = if existed {
                self.update(&r).await
            } else {
                self.create(&r).await
            };
            match res {
                Ok(r) => return Ok(r),
                Err(e) if e.is_conflict() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(StoreError::Config("modify: no attempt made".into())))
    }

    /// Deletes a resource; with `expected_revision`, only if it is still at that revision.
    pub async fn delete<S: Spec>(
        &self,
        namespace: Option<&str>,
        name: &str,
        expected_revision: Option<i64>,
    ) -> Result<(), StoreError> {
        let key = resource_key(info_of::<S>(), namespace, name);
        self.delete_raw(&key, expected_revision).await
    }

    // ---- any kind (margayctl) --------------------------------------------------------------

    /// The key of a resource of any kind.
    pub fn any_key(r: &AnyResource) -> String {
        resource_key(r.info(), r.metadata().namespace.as_deref(), r.name())
    }

    /// Reads a resource of any kind, by kind and name.
    pub async fn get_any(
        &self,
        info: KindInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<AnyResource>, StoreError> {
        let key = resource_key(info, namespace, name);
        match self.get_raw(&key).await? {
            None => Ok(None),
            Some(v) => any_with_rev(&key, &v.value, v.mod_revision).map(Some),
        }
    }

    /// Every resource of a kind (all namespaces for namespaced kinds).
    pub async fn list_any(&self, info: KindInfo) -> Result<Vec<AnyResource>, StoreError> {
        let (items, _) = self.list_raw(&kind_prefix(info)).await?;
        items
            .into_iter()
            .map(|v| any_with_rev(&v.key, &v.value, v.mod_revision))
            .collect()
    }

    /// Every resource of a namespaced kind in one namespace (all of them for `None`).
    pub async fn list_any_in(
        &self,
        info: KindInfo,
        namespace: Option<&str>,
    ) -> Result<Vec<AnyResource>, StoreError> {
        let prefix = match (info.namespaced, namespace) {
            (true, Some(ns)) => format!("{}{ns}/", kind_prefix(info)),
            _ => kind_prefix(info),
        };
        let (items, _) = self.list_raw(&prefix).await?;
        items
            .into_iter()
            .map(|v| any_with_rev(&v.key, &v.value, v.mod_revision))
            .collect()
    }

    /// Writes a resource of any kind: `Create` fails if it exists, `Replace` if it does not
    /// (CAS on its resourceVersion when set), `Apply` does either.
    pub async fn write_any(&self, r: &AnyResource, mode: WriteMode) -> Result<i64, StoreError> {
        r.validate()?;
        let key = Store::any_key(r);
        let bytes = |r: &AnyResource| {
            let mut value = r.to_value();
            if let Some(m) = value.get_mut("metadata").and_then(|m| m.as_object_mut()) {
                m.remove("resourceVersion");
            }
            encode(&value)
        };
        let given = r
            .metadata()
            .resource_version
            .as_deref()
            .and_then(|v| v.parse().ok());
        match mode {
            WriteMode::Create => self.create_raw(&key, bytes(r)).await,
            WriteMode::Replace | WriteMode::Apply => match self.get_raw(&key).await? {
                None if mode == WriteMode::Apply => self.create_raw(&key, bytes(r)).await,
                None => Err(StoreError::NotFound { key }),
                Some(cur) => {
                    let mut r = r.clone();
                    if let Ok(stored) = any_with_rev(&key, &cur.value, cur.mod_revision) {
                        r.restore_secrets(&stored);
                    }
                    self.update_raw(&key, bytes(&r), given.unwrap_or(cur.mod_revision))
                        .await
                }
            },
        }
    }

    /// Deletes a resource of any kind.
    pub async fn delete_any(&self, r: &AnyResource) -> Result<(), StoreError> {
        self.delete_raw(&Store::any_key(r), None).await
    }
}

/// How `write_any` treats an existing resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    Create,
    Replace,
    Apply,
}

fn key_of<S: Spec>(r: &Resource<S>) -> String {
    resource_key(
        info_of::<S>(),
        r.metadata.namespace.as_deref(),
        &r.metadata.name,
    )
}

/// What is stored: the resource without its resourceVersion (the key's revision is the truth).
fn stored<S: Spec>(r: &Resource<S>) -> Resource<S> {
    let mut r = r.clone();
    r.metadata.resource_version = None;
    r
}

fn stamped<S: Spec>(r: &Resource<S>, rev: i64) -> Resource<S> {
    let mut r = r.clone();
    r.metadata.resource_version = Some(rev.to_string());
    r
}

pub(crate) fn with_rev<S: Spec>(
    key: &str,
    bytes: &[u8],
    rev: i64,
) -> Result<Resource<S>, StoreError> {
    let mut r: Resource<S> = decode(key, bytes)?;
    r.metadata.resource_version = Some(rev.to_string());
    Ok(r)
}

fn any_with_rev(key: &str, bytes: &[u8], rev: i64) -> Result<AnyResource, StoreError> {
    let value: serde_json::Value = decode(key, bytes)?;
    let mut r = AnyResource::from_value(value).map_err(|message| StoreError::Decode {
        key: key.to_string(),
        message,
    })?;
    r.metadata_mut().resource_version = Some(rev.to_string());
    Ok(r)
}
