//! `ipam check`: compares blocks, handles, affinities, workload endpoints and nodes, and
//! reports every leaked address or claim with the release that frees it.

use super::records::*;
use super::{Ipam, IpamError};
use crate::resources::{NodeSpec, WorkloadEndpointSpec};
use ipnet::IpNet;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// A handle whose count for a block differs from what the block holds for it (a writer died
/// between the two writes). `ipam release --handle` repairs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HandleMismatch {
    pub handle: String,
    pub block: IpNet,
    /// What the handle record says.
    pub handle_count: u32,
    /// What the block holds for the handle.
    pub block_count: u32,
}

/// A workload endpoint whose handle does not exist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointLeak {
    /// `namespace/name`.
    pub endpoint: String,
    pub handle: String,
    pub addresses: Vec<String>,
}

/// What `check` found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    pub blocks: usize,
    pub addresses_in_use: usize,
    pub handles: usize,
    /// Pod handles whose container has no WorkloadEndpoint, and tunnel handles of nodes that
    /// do not exist. Fix: `ipam release --handle ID`.
    pub handles_without_endpoint: Vec<String>,
    /// Endpoints whose handle is gone (their addresses may be handed out again). Fix: delete
    /// the stale endpoint, or `ipam release --ip` any address still allocated to it.
    pub endpoints_without_handle: Vec<EndpointLeak>,
    /// Allocations whose handle record does not exist. Fix: `ipam release --ip ADDR`.
    pub allocations_without_handle: Vec<(IpAddr, String)>,
    /// Half-done writes. Fix: `ipam release --handle ID`.
    pub handle_mismatches: Vec<HandleMismatch>,
    /// Blocks claimed by (or affinity records of) nodes that do not exist.
    /// Fix: `ipam release --node NAME`.
    pub affinities_to_missing_nodes: Vec<(String, IpNet)>,
    /// Affinity records without the block held by that node, or blocks held by a node
    /// without its record (a claim or release cut short). The node heals them on its next
    /// assignment; `ipam release --node NAME` for a node that is gone.
    pub affinity_mismatches: Vec<(String, IpNet)>,
}

impl CheckReport {
    /// Number of problems found.
    pub fn problems(&self) -> usize {
        self.handles_without_endpoint.len()
            + self.endpoints_without_handle.len()
            + self.allocations_without_handle.len()
            + self.handle_mismatches.len()
            + self.affinities_to_missing_nodes.len()
            + self.affinity_mismatches.len()
    }

    /// Whether nothing leaked.
    pub fn is_clean(&self) -> bool {
        self.problems() == 0
    }
}

/// The node a tunnel handle belongs to.
fn tunnel_node(handle: &str) -> Option<&str> {
    super::records::tunnel_handle_node(handle)
}

impl Ipam {
    /// Compares every IPAM record with the endpoints and nodes.
    pub async fn check(&self) -> Result<CheckReport, IpamError> {
        let blocks = self.blocks().await?;
        let handles = self.handles().await?;
        let affinities = self.affinities().await?;
        let (nodes, _) = self.store.list::<NodeSpec>().await?;
        let (endpoints, _) = self.store.list::<WorkloadEndpointSpec>().await?;
        let node_names: BTreeSet<&str> = nodes.iter().map(|n| n.name()).collect();
        let handle_ids: BTreeMap<&str, &Handle> = handles
            .iter()
            .map(|h| (h.value.handle_id.as_str(), &h.value))
            .collect();
        let endpoint_handles: BTreeSet<String> = endpoints
            .iter()
            .filter_map(|e| endpoint_handle(&e.spec, &e.metadata.annotations))
            .collect();

        let mut r = CheckReport {
            blocks: blocks.len(),
            addresses_in_use: blocks.iter().map(|b| b.value.allocations.len()).sum(),
            handles: handles.len(),
            ..CheckReport::default()
        };

        for id in handle_ids.keys() {
            // Container handles are `<network>.<containerID>` for any CNI network name.
            let orphan = if let Some(node) = tunnel_node(id) {
                !node_names.contains(node)
            } else if !is_tunnel_handle(id) {
                !endpoint_handles.contains(*id)
            } else {
                false
            };
            if orphan {
                r.handles_without_endpoint.push(id.to_string());
            }
        }

        for e in &endpoints {
            let Some(h) = endpoint_handle(&e.spec, &e.metadata.annotations) else {
                continue;
            };
            if !handle_ids.contains_key(h.as_str()) {
                r.endpoints_without_handle.push(EndpointLeak {
                    endpoint: format!(
                        "{}/{}",
                        e.metadata.namespace.as_deref().unwrap_or(""),
                        e.name()
                    ),
                    handle: h,
                    addresses: e.spec.ip_networks.clone(),
                });
            }
        }

        let mut in_blocks: BTreeMap<(&str, IpNet), u32> = BTreeMap::new();
        for b in &blocks {
            for (ord, a) in &b.value.allocations {
                *in_blocks
                    .entry((a.handle_id.as_str(), b.value.cidr))
                    .or_default() += 1;
                if !handle_ids.contains_key(a.handle_id.as_str()) {
                    r.allocations_without_handle
                        .push((b.value.addr(*ord), a.handle_id.clone()));
                }
            }
            if let Some(node) = &b.value.affinity
                && !node_names.contains(node.as_str())
            {
                r.affinities_to_missing_nodes
                    .push((node.clone(), b.value.cidr));
            }
        }

        for h in handle_ids.values() {
            for (cidr, &count) in &h.blocks {
                let held = in_blocks
                    .get(&(h.handle_id.as_str(), *cidr))
                    .copied()
                    .unwrap_or(0);
                if held != count {
                    r.handle_mismatches.push(HandleMismatch {
                        handle: h.handle_id.clone(),
                        block: *cidr,
                        handle_count: count,
                        block_count: held,
                    });
                }
            }
        }
        for ((handle, cidr), &held) in &in_blocks {
            if let Some(h) = handle_ids.get(handle)
                && !h.blocks.contains_key(cidr)
            {
                r.handle_mismatches.push(HandleMismatch {
                    handle: handle.to_string(),
                    block: *cidr,
                    handle_count: 0,
                    block_count: held,
                });
            }
        }

        let held: BTreeSet<(&str, IpNet)> = blocks
            .iter()
            .filter_map(|b| Some((b.value.affinity.as_deref()?, b.value.cidr)))
            .collect();
        let recorded: BTreeSet<(&str, IpNet)> = affinities
            .iter()
            .map(|a| (a.value.node.as_str(), a.value.cidr))
            .collect();
        for a in &affinities {
            let pair = (a.value.node.clone(), a.value.cidr);
            if !node_names.contains(a.value.node.as_str()) {
                if !r.affinities_to_missing_nodes.contains(&pair) {
                    r.affinities_to_missing_nodes.push(pair);
                }
            } else if !held.contains(&(a.value.node.as_str(), a.value.cidr)) {
                r.affinity_mismatches.push(pair);
            }
        }
        for (node, cidr) in &held {
            if node_names.contains(node) && !recorded.contains(&(*node, *cidr)) {
                r.affinity_mismatches.push((node.to_string(), *cidr));
            }
        }
        Ok(r)
    }
}
