//! `margayctl get KIND [NAME] [-o wide|yaml|json]`: calicoctl's columns in kubectl-style
//! aligned tables, or the resources themselves (secrets redacted). BGPFilter's table counts
//! the rules of each list.

use crate::resources::lookup;
use anyhow::bail;
use margay_datastore::Store;
use margay_datastore::resources::{AnyResource, KindInfo};

/// Output format of `get`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GetOutput {
    /// Table with the main columns.
    Ps,
    /// Table with every column.
    Wide,
    Yaml,
    Json,
}

/// Aligns rows under upper-case headers, two spaces apart, as kubectl does.
pub fn render_columns(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

fn opt(s: &Option<String>) -> String {
    s.clone().unwrap_or_default()
}

fn order(o: Option<f64>) -> String {
    o.map(|o| o.to_string()).unwrap_or_else(|| "-".into())
}

fn or_all(s: &str) -> String {
    if s.trim().is_empty() {
        "all()".into()
    } else {
        s.to_string()
    }
}

/// calicoctl's columns for a kind (`wide` adds the rest).
pub fn table(info: KindInfo, items: &[AnyResource], wide: bool) -> String {
    let mut rows = Vec::new();
    let headers: Vec<&str> = match info.kind {
        "IPPool" if wide => vec![
            "NAME",
            "CIDR",
            "NAT",
            "IPIPMODE",
            "VXLANMODE",
            "DISABLED",
            "DISABLEBGPEXPORT",
            "SELECTOR",
        ],
        "IPPool" => vec!["NAME", "CIDR", "SELECTOR"],
        "Node" if wide => vec!["NAME", "ASN", "IPV4", "IPV6"],
        "Node" => vec!["NAME"],
        "BGPPeer" => vec!["NAME", "PEERIP", "NODE", "ASN"],
        "BGPFilter" => vec!["NAME", "EXPORTV4", "IMPORTV4", "EXPORTV6", "IMPORTV6"],
        "BGPConfiguration" => vec!["NAME", "LOGSEVERITY", "MESHENABLED", "ASNUMBER"],
        "WorkloadEndpoint" => vec!["NAMESPACE", "WORKLOAD", "NODE", "NETWORKS", "INTERFACE"],
        "IPReservation" => vec!["NAME", "RESERVEDCIDRS"],
        "NetworkPolicy" if info.plural == "k8snetworkpolicies" => {
            vec!["NAMESPACE", "NAME", "POD-SELECTOR", "POLICY-TYPES"]
        }
        "NetworkPolicy" => vec!["NAMESPACE", "NAME", "TIER", "ORDER", "SELECTOR"],
        "GlobalNetworkPolicy" => vec!["NAME", "TIER", "ORDER", "SELECTOR"],
        "Tier" => vec!["NAME", "ORDER"],
        "Profile" => vec!["NAME", "LABELS"],
        "IPAMConfiguration" => vec![
            "NAME",
            "STRICTAFFINITY",
            "MAXBLOCKSPERHOST",
            "AUTOALLOCATEBLOCKS",
        ],
        _ => vec!["NAME"],
    };
    for r in items {
        let row: Vec<String> = match r {
            AnyResource::IpPool(p) => {
                let s = &p.spec;
                let mut v = vec![p.name().to_string(), s.cidr.clone()];
                if wide {
                    v.extend([
                        s.nat_outgoing.to_string(),
                        format!("{:?}", s.ipip()),
                        format!("{:?}", s.vxlan()),
                        s.disabled.to_string(),
                        s.disable_bgp_export.to_string(),
                    ]);
                }
                v.push(s.node_selector().to_string());
                v
            }
            AnyResource::Node(n) => {
                let mut v = vec![n.name().to_string()];
                if wide {
                    let bgp = n.spec.bgp.clone().unwrap_or_default();
                    v.extend([
                        bgp.as_number
                            .map(|a| a.to_string())
                            .unwrap_or_else(|| "(64512)".into()),
                        opt(&bgp.ipv4_address),
                        opt(&bgp.ipv6_address),
                    ]);
                }
                v
            }
            AnyResource::BgpPeer(p) => {
                let s = &p.spec;
                vec![
                    p.name().to_string(),
                    s.peer_ip
                        .clone()
                        .or_else(|| s.peer_selector.clone())
                        .unwrap_or_default(),
                    s.node
                        .clone()
                        .or_else(|| s.node_selector.clone())
                        .unwrap_or_else(|| "(global)".into()),
                    s.as_number.map(|a| a.to_string()).unwrap_or_default(),
                ]
            }
            AnyResource::BgpFilter(f) => {
                let mut v = vec![f.name().to_string()];
                v.extend(
                    f.spec
                        .lists()
                        .iter()
                        .map(|(_, _, rules)| rules.len().to_string()),
                );
                v
            }
            AnyResource::BgpConfiguration(c) => vec![
                c.name().to_string(),
                c.spec.log_severity().to_string(),
                c.spec.mesh_enabled().to_string(),
                c.spec.as_number().to_string(),
            ],
            AnyResource::WorkloadEndpoint(w) => vec![
                w.metadata.namespace.clone().unwrap_or_default(),
                w.spec
                    .workload
                    .clone()
                    .or_else(|| w.spec.pod.clone())
                    .unwrap_or_else(|| w.name().to_string()),
                w.spec.node.clone(),
                w.spec.ip_networks.join(","),
                w.spec.interface_name.clone(),
            ],
            AnyResource::FelixConfiguration(f) => vec![f.name().to_string()],
            AnyResource::IpReservation(r) => {
                vec![r.name().to_string(), r.spec.reserved_cidrs.join(",")]
            }
            AnyResource::NetworkPolicy(p) => vec![
                opt(&p.metadata.namespace),
                p.name().to_string(),
                p.spec.tier.clone(),
                order(p.spec.order),
                or_all(&p.spec.selector),
            ],
            AnyResource::GlobalNetworkPolicy(p) => vec![
                p.name().to_string(),
                p.spec.tier.clone(),
                order(p.spec.order),
                or_all(&p.spec.selector),
            ],
            AnyResource::Tier(t) => vec![t.name().to_string(), order(t.spec.order)],
            AnyResource::Profile(p) => vec![
                p.name().to_string(),
                p.spec
                    .labels_to_apply
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
            ],
            AnyResource::K8sNetworkPolicy(p) => vec![
                opt(&p.metadata.namespace),
                p.name().to_string(),
                margay_datastore::policy::k8s::label_selector_text(&p.spec.pod_selector),
                p.spec.policy_types.join(","),
            ],
            AnyResource::IpamConfiguration(c) => vec![
                c.name().to_string(),
                c.spec.strict_affinity.to_string(),
                c.spec.max_blocks_per_host.to_string(),
                c.spec.auto_allocate_blocks.to_string(),
            ],
        };
        rows.push(row);
    }
    render_columns(&headers, &rows)
}

fn redacted_values(items: &[AnyResource]) -> Vec<serde_json::Value> {
    items.iter().map(|r| r.redacted().to_value()).collect()
}

/// Runs `get`; `name` narrows to one resource (an error if it does not exist). `namespace`
/// is the namespace of a namespaced kind, `None` for all namespaces (`-A`).
pub async fn run(
    store: &Store,
    kind: &str,
    name: Option<&str>,
    namespace: Option<&str>,
    output: GetOutput,
) -> anyhow::Result<()> {
    let info = lookup(kind)?;
    let items = match name {
        Some(n) => {
            let ns = info.namespaced.then(|| namespace.unwrap_or("default"));
            match store.get_any(info, ns, n).await? {
                Some(r) => vec![r],
                None => bail!(
                    "Failed to get resources: resource does not exist: {}({})",
                    info.kind,
                    match ns {
                        Some(ns) => format!("{ns}/{n}"),
                        None => n.to_string(),
                    }
                ),
            }
        }
        None => store.list_any_in(info, namespace).await?,
    };
    let doc = |items: &[AnyResource]| -> serde_json::Value {
        let values = redacted_values(items);
        match (name, values.len()) {
            (Some(_), 1) => values.into_iter().next().unwrap_or_default(),
            _ => serde_json::json!({
                "apiVersion": margay_datastore::resources::CALICO_API_VERSION,
                "kind": format!("{}List", info.kind),
                "items": values,
            }),
        }
    };
    match output {
        GetOutput::Ps => print!("{}", table(info, &items, false)),
        GetOutput::Wide => print!("{}", table(info, &items, true)),
        GetOutput::Yaml => print!("{}", serde_norway::to_string(&doc(&items))?),
        GetOutput::Json => println!("{}", serde_json::to_string_pretty(&doc(&items))?),
    }
    Ok(())
}
