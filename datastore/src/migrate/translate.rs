//! Calico's keys and values → margay's records: every v3 resource margay models, every IPAM
//! block with each allocation and its attributes, every handle, an affinity record per
//! block a node holds. The Calico data is cross-checked first (handles against blocks,
//! allocations against handles, confirmed affinities against blocks); any problem is
//! reported with its Calico key and nothing is planned.

use super::calico::{self, AllocationBlock, BlockAffinity, CalicoKey, IpamConfig, IpamHandle};
use crate::ipam::records::{
    ANN_NETWORK, Affinity, Allocation, Block, Handle, POD_HANDLE_PREFIX, affinity_key, block_key,
    handle_key,
};
use crate::resources::AnyResource;
use crate::store::Store;
use ipnet::IpNet;
use std::collections::BTreeMap;

/// One margay record to write.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// margay's key.
    pub key: String,
    /// `IPPool`, `IPAMBlock`, `IPAMHandle`, `BlockAffinity`, ...
    pub kind: &'static str,
    /// The resource's (`namespace/`)name, the block's CIDR, the handle's id, `node/cidr`.
    pub name: String,
    /// The record's JSON, as written (bytes: a decoded `Value` of 100,000 records is several
    /// times their size).
    pub value: Vec<u8>,
    /// The Calico key it came from.
    pub source: String,
}

impl Record {
    /// The record's JSON, decoded.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.value).unwrap_or_default()
    }
}

/// A Calico key that is not migrated, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub key: String,
    pub reason: String,
}

/// Something wrong in Calico's data, with the key it is in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct Problem {
    pub key: String,
    pub message: String,
}

/// What the Calico data becomes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Translation {
    /// In write order: resources, then blocks, handles and affinities.
    pub records: Vec<Record>,
    pub skipped: Vec<Skipped>,
    /// Things the operator should know (IPAM settings margay does not follow, endpoints
    /// without a handle).
    pub notes: Vec<String>,
}

fn problem(key: &str, message: impl Into<String>) -> Problem {
    Problem {
        key: key.to_string(),
        message: message.into(),
    }
}

fn skip(key: &str, reason: impl Into<String>) -> Skipped {
    Skipped {
        key: key.to_string(),
        reason: reason.into(),
    }
}

struct CalicoBlock {
    key: String,
    block: Block,
}

struct CalicoHandle {
    key: String,
    id: String,
    blocks: BTreeMap<IpNet, u32>,
}

/// A Calico block as margay's: the node from `host:<node>`, each allocation with its handle
/// and attributes (the alternate owner's as `alternate.<name>`).
fn block_of(key: &str, cidr: IpNet, b: AllocationBlock) -> Result<Block, Problem> {
    if b.cidr != cidr {
        return Err(problem(
            key,
            format!("holds block {} (the key says {cidr})", b.cidr),
        ));
    }
    let affinity = match (b.affinity.as_deref(), b.host_affinity) {
        (Some(a), _) => match a.split_once(':') {
            Some(("host", node)) if !node.is_empty() => Some(node.to_string()),
            Some(("virtual", _)) => {
                return Err(problem(
                    key,
                    format!("affinity '{a}': margay has no virtual affinities"),
                ));
            }
            _ => return Err(problem(key, format!("affinity '{a}' is not host:<node>"))),
        },
        (None, Some(node)) if !node.is_empty() => Some(node),
        _ => None,
    };
    let mut out = Block::new(cidr, affinity);
    if out.size() != b.allocations.len() as u128 {
        return Err(problem(
            key,
            format!(
                "corrupt block: {} allocation slots for a block of {} addresses",
                b.allocations.len(),
                out.size()
            ),
        ));
    }
    for (ordinal, slot) in b.allocations.iter().enumerate() {
        let Some(index) = slot else { continue };
        let addr = out.addr(ordinal as u32);
        let attr = b.attributes.get(*index).ok_or_else(|| {
            problem(
                key,
                format!("corrupt block: {addr} points to attribute {index}, which does not exist"),
            )
        })?;
        let handle_id = match attr.handle_id.as_deref() {
            Some(h) if !h.is_empty() => h.to_string(),
            _ => {
                return Err(problem(
                    key,
                    format!("{addr} is allocated without a handle"),
                ));
            }
        };
        let mut attrs = attr.secondary.clone().unwrap_or_default();
        for (k, v) in attr.alternate.iter().flatten() {
            attrs.insert(format!("alternate.{k}"), v.clone());
        }
        out.allocations
            .insert(ordinal as u32, Allocation { handle_id, attrs });
    }
    Ok(out)
}

fn decode<T: serde::de::DeserializeOwned>(
    key: &str,
    what: &str,
    bytes: &[u8],
) -> Result<T, Problem> {
    serde_json::from_slice(bytes).map_err(|e| problem(key, format!("corrupt {what}: {e}")))
}

fn ipam_config_notes(key: &str, c: &IpamConfig, notes: &mut Vec<String>) {
    if c.strict_affinity {
        notes.push(format!(
            "{key}: strictAffinity is true; margay lends addresses from other nodes' blocks when a pool has no free block (as Calico with strictAffinity false)"
        ));
    }
    if c.max_blocks_per_host != 0 {
        notes.push(format!(
            "{key}: maxBlocksPerHost {} is not enforced by margay",
            c.max_blocks_per_host
        ));
    }
}

/// The margay records of Calico's `kvs` (key, value), or every problem found in them.
pub fn translate(kvs: &[(String, Vec<u8>)]) -> Result<Translation, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut out = Translation::default();
    let mut resources: Vec<(String, AnyResource)> = Vec::new();
    let mut blocks: BTreeMap<IpNet, CalicoBlock> = BTreeMap::new();
    let mut handles: Vec<CalicoHandle> = Vec::new();
    let mut confirmed: Vec<(String, String, IpNet)> = Vec::new();

    for (key, bytes) in kvs {
        match calico::parse_key(key) {
            CalicoKey::Resource {
                kind,
                namespace,
                name,
            } => {
                match resource(
                    key,
                    kind,
                    namespace.as_deref(),
                    &name,
                    bytes,
                    &mut out.notes,
                ) {
                    Ok(Some(r)) => resources.push((key.clone(), r)),
                    Ok(None) => out
                        .skipped
                        .push(skip(key, format!("margay has no {kind} (not migrated)"))),
                    Err(p) => problems.push(p),
                }
            }
            CalicoKey::UnknownKind { plural } => {
                problems.push(problem(key, format!("unknown resource kind '{plural}'")))
            }
            CalicoKey::Block { cidr } => match decode::<AllocationBlock>(key, "block", bytes) {
                Ok(b) if b.deleted => out.skipped.push(skip(key, "block marked deleted")),
                Ok(b) => match block_of(key, cidr, b) {
                    Ok(block) => {
                        blocks.insert(
                            cidr,
                            CalicoBlock {
                                key: key.clone(),
                                block,
                            },
                        );
                    }
                    Err(p) => problems.push(p),
                },
                Err(p) => problems.push(p),
            },
            CalicoKey::Affinity {
                affinity_type,
                node,
                cidr,
            } => match decode::<BlockAffinity>(key, "block affinity", bytes) {
                Err(p) => problems.push(p),
                Ok(_) if affinity_type != "host" => {
                    problems.push(problem(key, "margay has no virtual affinities"))
                }
                Ok(a) if a.deleted => out.skipped.push(skip(key, "affinity marked deleted")),
                Ok(a) if a.state == "confirmed" || a.state.is_empty() => {
                    confirmed.push((key.clone(), node, cidr))
                }
                Ok(a) => out.skipped.push(skip(
                    key,
                    format!(
                        "affinity {} (a claim or release under way; the block decides)",
                        a.state
                    ),
                )),
            },
            CalicoKey::Handle { id } => match decode::<IpamHandle>(key, "handle", bytes) {
                Err(p) => problems.push(p),
                Ok(h) if h.deleted => out.skipped.push(skip(key, "handle marked deleted")),
                Ok(h) => {
                    let mut by_block = BTreeMap::new();
                    for (c, n) in h.block {
                        match c.parse::<IpNet>() {
                            Ok(net) => {
                                by_block.insert(net, n);
                            }
                            Err(_) => {
                                problems.push(problem(key, format!("'{c}' is not a block CIDR")))
                            }
                        }
                    }
                    handles.push(CalicoHandle {
                        key: key.clone(),
                        id,
                        blocks: by_block,
                    });
                }
            },
            CalicoKey::IpamConfig => match decode::<IpamConfig>(key, "IPAM config", bytes) {
                Ok(c) => {
                    ipam_config_notes(key, &c, &mut out.notes);
                    out.skipped
                        .push(skip(key, "IPAM configuration (margay has none; see notes)"));
                }
                Err(p) => problems.push(p),
            },
            CalicoKey::Other => out.skipped.push(skip(
                key,
                "not part of Calico's v3 model (status or derived data)",
            )),
            CalicoKey::Malformed(why) => problems.push(problem(key, why)),
        }
    }

    // Handles against blocks, and every allocation against its handle.
    for h in &handles {
        for (cidr, n) in &h.blocks {
            match blocks.get(cidr) {
                None => problems.push(problem(
                    &h.key,
                    format!("handle points to block {cidr}, which does not exist"),
                )),
                Some(b) if b.block.count_for(&h.id) != *n => problems.push(problem(
                    &h.key,
                    format!(
                        "handle counts {n} address(es) in block {cidr}, the block holds {}",
                        b.block.count_for(&h.id)
                    ),
                )),
                Some(_) => {}
            }
        }
    }
    let handle_ids: BTreeMap<&str, &CalicoHandle> =
        handles.iter().map(|h| (h.id.as_str(), h)).collect();
    for b in blocks.values() {
        for (ordinal, a) in &b.block.allocations {
            let held = handle_ids
                .get(a.handle_id.as_str())
                .is_some_and(|h| h.blocks.contains_key(&b.block.cidr));
            if !held {
                problems.push(problem(
                    &b.key,
                    format!(
                        "{} is allocated to handle '{}', which does not hold it",
                        b.block.addr(*ordinal),
                        a.handle_id
                    ),
                ));
            }
        }
    }
    for (key, node, cidr) in &confirmed {
        let holder = blocks.get(cidr).and_then(|b| b.block.affinity.as_deref());
        if holder != Some(node.as_str()) {
            problems.push(problem(
                key,
                format!(
                    "confirmed affinity of {node} to {cidr}, but the block is {}",
                    match holder {
                        Some(n) => format!("held by {n}"),
                        None if blocks.contains_key(cidr) => "held by no node".to_string(),
                        None => "missing".to_string(),
                    }
                ),
            ));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }

    // Endpoints name their handle's network, so margay finds `k8s-pod-network.<container>`.
    for (key, r) in &mut resources {
        if let AnyResource::WorkloadEndpoint(w) = r {
            let cid = &w.spec.container_id;
            if cid.is_empty() {
                continue;
            }
            let suffix = format!(".{cid}");
            match handles.iter().find(|h| h.id.ends_with(&suffix)) {
                Some(h) => {
                    let network = &h.id[..h.id.len() - suffix.len()];
                    if format!("{network}.") != POD_HANDLE_PREFIX {
                        w.metadata
                            .annotations
                            .insert(ANN_NETWORK.into(), network.to_string());
                    }
                }
                None => out.notes.push(format!(
                    "{key}: no IPAM handle holds container {cid}'s addresses (another IPAM plugin?)"
                )),
            }
        }
    }

    for (key, r) in resources {
        let mut value = r.to_value();
        if let Some(m) = value.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            m.remove("resourceVersion");
        }
        let name = match &r.metadata().namespace {
            Some(ns) if r.info().namespaced => format!("{ns}/{}", r.name()),
            _ => r.name().to_string(),
        };
        out.records.push(Record {
            key: Store::any_key(&r),
            kind: r.info().kind,
            name,
            value: json(&value),
            source: key,
        });
    }
    let mut affinities = Vec::new();
    for b in blocks.into_values() {
        if let Some(node) = &b.block.affinity {
            let a = Affinity {
                node: node.clone(),
                cidr: b.block.cidr,
            };
            affinities.push(Record {
                key: affinity_key(node, &b.block.cidr),
                kind: "BlockAffinity",
                name: format!("{node}/{}", b.block.cidr),
                value: json(&a),
                source: b.key.clone(),
            });
        }
        out.records.push(Record {
            key: block_key(&b.block.cidr),
            kind: "IPAMBlock",
            name: b.block.cidr.to_string(),
            value: json(&b.block),
            source: b.key,
        });
    }
    for h in handles {
        let rec = Handle {
            handle_id: h.id.clone(),
            blocks: h.blocks,
        };
        out.records.push(Record {
            key: handle_key(&h.id),
            kind: "IPAMHandle",
            name: h.id,
            value: json(&rec),
            source: h.key,
        });
    }
    out.records.extend(affinities);
    Ok(out)
}

fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// A Calico v3 resource as margay's (`None`: a kind margay does not model).
fn resource(
    key: &str,
    kind: &str,
    namespace: Option<&str>,
    name: &str,
    bytes: &[u8],
    notes: &mut Vec<String>,
) -> Result<Option<AnyResource>, Problem> {
    let value: serde_json::Value = decode(key, kind, bytes)?;
    if kind == "IPAMConfig" {
        let spec = value.get("spec").cloned().unwrap_or_default();
        let c = IpamConfig {
            strict_affinity: spec
                .get("strictAffinity")
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
            auto_allocate_blocks: true,
            max_blocks_per_host: spec
                .get("maxBlocksPerHost")
                .and_then(|v| v.as_u64())
                .unwrap_or(0) as u32,
        };
        ipam_config_notes(key, &c, notes);
        return Ok(None);
    }
    if crate::resources::KindInfo::lookup(kind).is_none_or(|i| i.kind != kind) {
        return Ok(None);
    }
    let mut r =
        AnyResource::from_value(value).map_err(|e| problem(key, format!("corrupt {kind}: {e}")))?;
    if r.name() != name
        || r.metadata()
            .namespace
            .as_deref()
            .filter(|_| namespace.is_some())
            != namespace
    {
        return Err(problem(
            key,
            format!("holds {kind} '{}' (the key names '{name}')", r.name()),
        ));
    }
    r.metadata_mut().resource_version = None;
    r.validate().map_err(|e| problem(key, e.to_string()))?;
    Ok(Some(r))
}
