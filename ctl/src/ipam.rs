//! `margayctl ipam show | check | release`: address usage per pool and block, leak checks,
//! and freeing what leaked.

use anyhow::bail;
use comfy_table::{CellAlignment, Table, presets};
use margay_datastore::Store;
use margay_datastore::ipam::{Block, CheckReport, Ipam};
use margay_datastore::resources::IpPoolSpec;
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
