//! `margayctl ipam show | check | release | configure`: address usage per pool and block, leak
//! checks, freeing what leaked, and the IPAM configuration.

use anyhow::bail;
use comfy_table::{CellAlignment, Table, presets};
use margay_datastore::ipam::gc_state::{COLLECTOR_STATE, CollectorState};
use margay_datastore::ipam::{Block, CheckReport, Ipam, IpamConfig};
use margay_datastore::resources::IpPoolSpec;
use margay_datastore::{Store, liveness};
use std::net::IpAddr;

fn pct(part: u128, whole: u128) -> String {
    if whole == 0 {
        return format!("{part}");
    }
    format!("{part} ({}%)", part * 100 / whole)
}

/// One row of `ipam show`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UsageRow {
    pub grouping: String,
    pub cidr: String,
    pub total: u128,
    pub in_use: u128,
    pub free: u128,
    /// The node a block is affine to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// Usage of every pool, and of every block with `show_blocks`.
pub fn usage(
    pools: &[(String, ipnet::IpNet)],
    blocks: &[Block],
    show_blocks: bool,
) -> Vec<UsageRow> {
    let mut rows = Vec::new();
    for (_, net) in pools {
        let total = 1u128
            .checked_shl(u32::from(net.max_prefix_len() - net.prefix_len()))
            .unwrap_or(u128::MAX);
        let in_use: u128 = blocks
            .iter()
            .filter(|b| net.contains(&b.cidr))
            .map(|b| b.allocations.len() as u128)
            .sum();
        rows.push(UsageRow {
            grouping: "IP Pool".into(),
            cidr: net.to_string(),
            total,
            in_use,
            free: total - in_use,
            node: None,
        });
        if show_blocks {
            for b in blocks.iter().filter(|b| net.contains(&b.cidr)) {
                let in_use = b.allocations.len() as u128;
                rows.push(UsageRow {
                    grouping: "Block".into(),
                    cidr: b.cidr.to_string(),
                    total: b.size(),
                    in_use,
                    free: b.size() - in_use,
                    node: b.affinity.clone(),
                });
            }
        }
    }
    rows
}

/// The `ipam show` table.
pub fn render_usage(rows: &[UsageRow], show_blocks: bool) -> String {
    let mut t = Table::new();
    t.load_style(presets::ASCII_FULL_CONDENSED);
    let mut header = vec!["GROUPING", "CIDR", "IPS TOTAL", "IPS IN USE", "IPS FREE"];
    if show_blocks {
        header.push("NODE");
    }
    t.set_header(header);
    for r in rows {
        let mut cells = vec![
            r.grouping.clone(),
            r.cidr.clone(),
            r.total.to_string(),
            pct(r.in_use, r.total),
            pct(r.free, r.total),
        ];
        if show_blocks {
            cells.push(r.node.clone().unwrap_or_default());
        }
        t.add_row(cells);
    }
    if let Some(c) = t.column_mut(2) {
        c.set_cell_alignment(CellAlignment::Right);
    }
    t.to_string() + "\n"
}

/// Every block record.
async fn all_blocks(store: &Store) -> anyhow::Result<Vec<Block>> {
    Ok(Ipam::new(store.clone())
        .blocks()
        .await?
        .into_iter()
        .map(|b| b.value)
        .collect())
}

/// `ipam show`.
pub async fn show(store: &Store, show_blocks: bool, json: bool) -> anyhow::Result<()> {
    let (pools, _) = store.list::<IpPoolSpec>().await?;
    let pools: Vec<(String, ipnet::IpNet)> = pools
        .iter()
        .filter_map(|p| Some((p.name().to_string(), p.spec.net()?)))
        .collect();
    let blocks = all_blocks(store).await?;
    let rows = usage(&pools, &blocks, show_blocks);
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", render_usage(&rows, show_blocks));
    }
    Ok(())
}

/// The `ipam check` report, with the command that fixes each problem.
pub fn render_check(r: &CheckReport) -> String {
    let mut out = String::from("Checking IPAM for inconsistencies...\n\n");
    out += &format!(
        "Found {} IPAM blocks, {} addresses in use, {} handles.\n",
        r.blocks, r.addresses_in_use, r.handles
    );
    for h in &r.handles_without_endpoint {
        out += &format!(
            "  handle without endpoint: {h}   (fix: margayctl ipam release --handle {h})\n"
        );
    }
    for e in &r.endpoints_without_handle {
        out += &format!(
            "  endpoint without handle: {} [{}] expects handle {}   (fix: delete the stale \
             WorkloadEndpoint, or release its addresses with --ip)\n",
            e.endpoint,
            e.addresses.join(","),
            e.handle
        );
    }
    for (ip, h) in &r.allocations_without_handle {
        out += &format!(
            "  allocation without handle: {ip} (handle {h} missing)   (fix: margayctl ipam release --ip {ip})\n"
        );
    }
    for m in &r.handle_mismatches {
        out += &format!(
            "  handle {} counts {} address(es) in block {} which holds {} for it   (fix: margayctl ipam release --handle {})\n",
            m.handle, m.handle_count, m.block, m.block_count, m.handle
        );
    }
    for (node, cidr) in &r.affinities_to_missing_nodes {
        out += &format!(
            "  block {cidr} is affine to node '{node}' which does not exist   (fix: margayctl ipam release --node {node})\n"
        );
    }
    for (node, cidr) in &r.affinity_mismatches {
        out += &format!(
            "  block {cidr} and the affinity records of node '{node}' disagree (a claim or \
             release was cut short)   (fix: heals on the node's next assignment)\n"
        );
    }
    out += &format!("Found {} problem(s).\n", r.problems());
    out
}

/// `ipam check`.
pub async fn check(store: &Store, json: bool) -> anyhow::Result<()> {
    let r = Ipam::new(store.clone()).check().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", render_check(&r));
    }
    Ok(())
}

/// What `ipam release` frees.
pub enum ReleaseTarget {
    Ip(IpAddr),
    Handle(String),
    Node(String),
}

/// `ipam release`.
pub async fn release(store: &Store, target: ReleaseTarget) -> anyhow::Result<()> {
    let ipam = Ipam::new(store.clone());
    match target {
        ReleaseTarget::Ip(ip) => {
            let not = ipam.release_ips(&[ip]).await?;
            if !not.is_empty() {
                bail!("IP address {ip} is not assigned");
            }
            println!("Successfully released IP address {ip}");
        }
        ReleaseTarget::Handle(h) => {
            let ips = ipam.release_by_handle(&h).await?;
            println!(
                "Successfully released handle {h} ({} address(es){})",
                ips.len(),
                if ips.is_empty() {
                    String::new()
                } else {
                    format!(
                        ": {}",
                        ips.iter()
                            .map(|i| i.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            );
        }
        ReleaseTarget::Node(n) => {
            let blocks = ipam.release_affinity(&n).await?;
            println!(
                "Successfully released {} block affinit{} of node '{n}'",
                blocks.len(),
                if blocks.len() == 1 { "y" } else { "ies" }
            );
        }
    }
    Ok(())
}

/// What `ipam configure` changes (unset: kept).
#[derive(Debug, Clone, Default)]
pub struct ConfigChange {
    pub strict_affinity: Option<bool>,
    pub max_blocks_per_host: Option<u32>,
    pub auto_allocate_blocks: Option<bool>,
    pub leak_grace_period: Option<String>,
    pub empty_block_grace_period: Option<String>,
    pub node_grace_period: Option<String>,
}

fn seconds(flag: &str, v: &Option<String>) -> anyhow::Result<Option<u64>> {
    let Some(v) = v else { return Ok(None) };
    match margay_datastore::resources::parse_duration(v) {
        Some(s) if s >= 0.0 => Ok(Some(s.round() as u64)),
        _ => bail!("--{flag}: '{v}' is not a duration (e.g. 90s, 15m, 1h)"),
    }
}

impl ConfigChange {
    /// Applies the change to `c`; fails on a bad duration before anything is written.
    pub fn apply_to(&self, c: &mut IpamConfig) -> anyhow::Result<()> {
        let leak = seconds("leak-grace-period", &self.leak_grace_period)?;
        let empty = seconds("empty-block-grace-period", &self.empty_block_grace_period)?;
        let node = seconds("node-grace-period", &self.node_grace_period)?;
        if let Some(v) = self.strict_affinity {
            c.strict_affinity = v;
        }
        if let Some(v) = self.max_blocks_per_host {
            c.max_blocks_per_host = v;
        }
        if let Some(v) = self.auto_allocate_blocks {
            c.auto_allocate_blocks = v;
        }
        if let Some(v) = leak {
            c.leak_grace_period_secs = v;
        }
        if let Some(v) = empty {
            c.empty_block_grace_period_secs = v;
        }
        if let Some(v) = node {
            c.node_grace_period_secs = v;
        }
        Ok(())
    }
}

/// Who collects leaks now: the elected collector and the nodes with a live lease.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Collection {
    pub collector: Option<String>,
    pub live_nodes: Vec<String>,
    /// Nodes without liveness whose node grace period runs, with seconds since first seen
    /// so (from the collector's record in etcd).
    pub silent_nodes: Vec<(String, u64)>,
    /// Empty blocks whose grace period runs.
    pub empty_blocks_timed: usize,
    /// Nodes whose Node resource a collector has seen (a deletion of one is released at once).
    pub known_nodes: usize,
}

/// The `ipam show --show-configuration` table (with the collection rows when known).
pub fn render_configuration(c: &IpamConfig, collection: Option<&Collection>) -> String {
    let mut t = Table::new();
    t.load_style(presets::ASCII_FULL_CONDENSED);
    t.set_header(["PROPERTY", "VALUE"]);
    for (k, v) in c.rows() {
        t.add_row([k.to_string(), v]);
    }
    if let Some(col) = collection {
        t.add_row([
            "Collector".to_string(),
            col.collector
                .clone()
                .unwrap_or_else(|| "(none elected)".into()),
        ]);
        t.add_row(["LiveNodes".to_string(), col.live_nodes.join(",")]);
        let silent: Vec<String> = col
            .silent_nodes
            .iter()
            .map(|(n, s)| format!("{n} ({s}s)"))
            .collect();
        t.add_row(["SilentNodesTimed".to_string(), silent.join(",")]);
        t.add_row([
            "EmptyBlocksTimed".to_string(),
            col.empty_blocks_timed.to_string(),
        ]);
        t.add_row(["KnownNodes".to_string(), col.known_nodes.to_string()]);
    }
    t.to_string() + "\n"
}

/// `ipam show --show-configuration`: the configuration, the elected collector, the live nodes.
pub async fn show_configuration(store: &Store, json: bool) -> anyhow::Result<()> {
    let c = Ipam::new(store.clone()).config().await?;
    let kept: CollectorState = match store.get_json(COLLECTOR_STATE).await? {
        Some(v) => v.value,
        None => CollectorState::default(),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let col = Collection {
        collector: liveness::leader(store, liveness::COLLECTOR_ELECTION).await?,
        live_nodes: liveness::live_nodes(store).await?.into_iter().collect(),
        silent_nodes: kept
            .silent
            .iter()
            .map(|(n, since)| (n.clone(), now.saturating_sub(*since) / 1000))
            .collect(),
        empty_blocks_timed: kept.empty.len(),
        known_nodes: kept.known_nodes.len(),
    };
    if json {
        let mut v = serde_json::to_value(&c)?;
        v["collector"] = serde_json::to_value(&col.collector)?;
        v["liveNodes"] = serde_json::to_value(&col.live_nodes)?;
        v["silentNodesTimed"] = serde_json::to_value(&col.silent_nodes)?;
        v["emptyBlocksTimed"] = serde_json::to_value(col.empty_blocks_timed)?;
        v["knownNodes"] = serde_json::to_value(col.known_nodes)?;
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", render_configuration(&c, Some(&col)));
    }
    Ok(())
}

/// `ipam configure`.
pub async fn configure(store: &Store, change: ConfigChange) -> anyhow::Result<()> {
    // Check the values before the first write.
    change.apply_to(&mut IpamConfig::default())?;
    let c = Ipam::new(store.clone())
        .configure(|c| {
            let _ = change.apply_to(c);
        })
        .await?;
    print!("{}", render_configuration(&c, None));
    Ok(())
}

/// The `parts` equal halves-of-halves of `net` (`parts` a power of two, each child at least
/// one block of `block_prefix`) (pure).
pub fn split_cidr(
    net: ipnet::IpNet,
    parts: u32,
    block_prefix: u8,
) -> anyhow::Result<Vec<ipnet::IpNet>> {
    if parts < 2 || !parts.is_power_of_two() {
        bail!("{parts} is not a power of two of at least 2");
    }
    let extra = parts.trailing_zeros() as u8;
    let prefix = net.prefix_len() + extra;
    if prefix > net.max_prefix_len() || prefix > block_prefix {
        bail!(
            "{net} cannot be split into {parts} pools: each would be a /{prefix}, smaller than \
             one /{block_prefix} block"
        );
    }
    Ok(net
        .trunc()
        .subnets(prefix)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .collect())
}

/// `ipam split CIDR NUMBER`: the pool with that CIDR becomes NUMBER pools of equal size named
/// `split-<pool>-<i>`, each keeping the pool's other fields (block size, encapsulation,
/// natOutgoing, selectors). Addresses in use stay: their blocks lie inside the new pools. The
/// pool is disabled first, so nothing new is assigned from it while the children are created,
/// then deleted.
pub async fn split(store: &Store, cidr: &str, parts: u32) -> anyhow::Result<()> {
    let (pools, _) = store.list::<IpPoolSpec>().await?;
    let want: ipnet::IpNet = cidr
        .parse()
        .map_err(|_| anyhow::anyhow!("'{cidr}' is not a CIDR"))?;
    let Some(old) = pools.iter().find(|p| p.spec.net() == Some(want.trunc())) else {
        bail!("no IP pool has the CIDR {cidr}");
    };
    let children = split_cidr(want, parts, old.spec.block_prefix())?;
    let name = old.name().to_string();
    let was_disabled = old.spec.disabled;
    store
        .modify::<IpPoolSpec>(&name, |p| p.spec.disabled = true)
        .await?;
    for (i, c) in children.iter().enumerate() {
        let mut spec = old.spec.clone();
        spec.cidr = c.to_string();
        spec.disabled = was_disabled;
        let child =
            margay_datastore::resources::Resource::new(format!("split-{name}-{}", i + 1), spec);
        child.validate()?;
        store.create(&child).await.map_err(|e| {
            anyhow::anyhow!(
                "creating {}: {e}; pool '{name}' is left disabled, the pools created so far stay",
                child.name()
            )
        })?;
    }
    store.delete::<IpPoolSpec>(None, &name, None).await?;
    println!(
        "IP pool {name} ({want}) was split into {parts} pools: {}",
        children
            .iter()
            .enumerate()
            .map(|(i, c)| format!("split-{name}-{} ({c})", i + 1))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// An address a node holds in another node's block (or in a block no node holds).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Borrowed {
    pub ip: IpAddr,
    pub borrowing_node: String,
    pub block: ipnet::IpNet,
    pub block_owner: Option<String>,
    pub handle: String,
}

/// Every borrowed address: an allocation whose `node` attribute is not its block's node (pure).
pub fn borrowed(blocks: &[Block]) -> Vec<Borrowed> {
    let mut out = Vec::new();
    for b in blocks {
        for (ord, a) in &b.allocations {
            let Some(node) = a.attrs.get("node") else {
                continue;
            };
            if b.affinity.as_deref() != Some(node.as_str()) {
                out.push(Borrowed {
                    ip: b.addr(*ord),
                    borrowing_node: node.clone(),
                    block: b.cidr,
                    block_owner: b.affinity.clone(),
                    handle: a.handle_id.clone(),
                });
            }
        }
    }
    out
}

/// The `ipam show --show-borrowed` table.
pub fn render_borrowed(rows: &[Borrowed]) -> String {
    let mut t = Table::new();
    t.load_style(presets::ASCII_FULL_CONDENSED);
    t.set_header(["IP", "BORROWING-NODE", "BLOCK", "BLOCK OWNER", "HANDLE"]);
    for r in rows {
        t.add_row([
            r.ip.to_string(),
            r.borrowing_node.clone(),
            r.block.to_string(),
            r.block_owner.clone().unwrap_or_else(|| "(none)".into()),
            r.handle.clone(),
        ]);
    }
    t.to_string() + "\n"
}

/// `ipam show --show-borrowed`.
pub async fn show_borrowed(store: &Store, json: bool) -> anyhow::Result<()> {
    let blocks = all_blocks(store).await?;
    let rows = borrowed(&blocks);
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", render_borrowed(&rows));
    }
    Ok(())
}

#[cfg(test)]
mod split_tests {
    use super::*;

    #[test]
    fn a_pool_splits_into_equal_powers_of_two_no_smaller_than_a_block() {
        let net: ipnet::IpNet = "10.0.0.0/16".parse().unwrap();
        let got: Vec<String> = split_cidr(net, 4, 26)
            .unwrap()
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(
            got,
            [
                "10.0.0.0/18",
                "10.0.64.0/18",
                "10.0.128.0/18",
                "10.0.192.0/18"
            ]
        );
        assert!(split_cidr(net, 3, 26).is_err());
        assert!(split_cidr(net, 1, 26).is_err());
        let small: ipnet::IpNet = "10.0.0.0/25".parse().unwrap();
        assert!(
            split_cidr(small, 4, 26)
                .unwrap_err()
                .to_string()
                .contains("smaller than")
        );
    }

    #[test]
    fn borrowed_addresses_are_those_of_another_nodes_block() {
        let mut b = Block::new("10.0.0.0/30".parse().unwrap(), Some("n1".into()));
        for (o, n) in [(0, "n1"), (1, "n2")] {
            b.allocations.insert(
                o,
                margay_datastore::ipam::Allocation {
                    handle_id: format!("h{o}"),
                    attrs: [("node".to_string(), n.to_string())].into(),
                },
            );
        }
        let rows = borrowed(&[b]);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].borrowing_node, "n2");
        assert_eq!(rows[0].ip.to_string(), "10.0.0.1");
        assert!(render_borrowed(&rows).contains("n1"));
    }
}
