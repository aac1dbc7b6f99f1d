//! `margayctl ipam show | check | release | configure`: address usage per pool and block, leak
//! checks, freeing what leaked, and the IPAM configuration.

use anyhow::bail;
use comfy_table::{CellAlignment, Table, presets};
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

/// `ipam show`.
pub async fn show(store: &Store, show_blocks: bool, json: bool) -> anyhow::Result<()> {
    let (pools, _) = store.list::<IpPoolSpec>().await?;
    let pools: Vec<(String, ipnet::IpNet)> = pools
        .iter()
        .filter_map(|p| Some((p.name().to_string(), p.spec.net()?)))
        .collect();
    let blocks: Vec<Block> = Ipam::new(store.clone())
        .blocks()
        .await?
        .into_iter()
        .map(|b| b.value)
        .collect();
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
    }
    t.to_string() + "\n"
}

/// `ipam show --show-configuration`: the configuration, the elected collector, the live nodes.
pub async fn show_configuration(store: &Store, json: bool) -> anyhow::Result<()> {
    let c = Ipam::new(store.clone()).config().await?;
    let col = Collection {
        collector: liveness::leader(store, liveness::COLLECTOR_ELECTION).await?,
        live_nodes: liveness::live_nodes(store).await?.into_iter().collect(),
    };
    if json {
        let mut v = serde_json::to_value(&c)?;
        v["collector"] = serde_json::to_value(&col.collector)?;
        v["liveNodes"] = serde_json::to_value(&col.live_nodes)?;
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
