//! `margayctl policy matrix --port 80/tcp [-n NS | -A] [-o json]`: the reachability the model
//! gives every pod towards every pod (rows: from, columns: to; `.` allowed, `X` denied), as
//! the Kubernetes network-policy conformance suite prints its truth tables.

use crate::explain::{ExplainOutput, parse_port};
use margay_datastore::Store;
use margay_datastore::policy::{Endpoint, Flow, FlowEnd, PolicyModel, load};
use serde::Serialize;
use std::fmt::Write as _;

/// Arguments of `policy matrix`.
#[derive(Debug, Clone, clap::Args)]
pub struct MatrixArgs {
    /// The flow's port and protocol, as `policy explain --port` takes it.
    #[arg(long, default_value = "80/tcp")]
    pub port: String,
    /// Only the pods of this namespace.
    #[arg(short = 'n', long, conflicts_with = "all_namespaces")]
    pub namespace: Option<String>,
    /// Pods of every namespace (the default).
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// text or json.
    #[arg(short, long, value_enum, default_value = "text")]
    pub output: ExplainOutput,
}

/// The matrix: `allowed[i][j]` for the flow from `pods[i]` to `pods[j]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Matrix {
    /// `namespace/pod` of each row and column.
    pub pods: Vec<String>,
    pub allowed: Vec<Vec<bool>>,
}

/// Computes the matrix over the endpoints of `namespace` (all when `None`) that have an
/// address.
pub fn matrix(m: &PolicyModel, port: &str, namespace: Option<&str>) -> anyhow::Result<Matrix> {
    let spec = parse_port(port)?;
    let eps: Vec<&Endpoint> = m
        .endpoints
        .iter()
        .filter(|e| namespace.is_none_or(|ns| e.namespace == ns) && !e.addresses.is_empty())
        .collect();
    fn end<'a>(e: &'a Endpoint) -> FlowEnd<'a> {
        FlowEnd {
            ip: e.addresses[0],
            endpoint: Some(e),
            host_of: None,
        }
    }
    let allowed = eps
        .iter()
        .map(|from| {
            eps.iter()
                .map(|to| {
                    let flow = Flow {
                        src: end(from),
                        dst: end(to),
                        protocol: spec.protocol,
                        src_port: spec.port.map(|_| 40000),
                        dst_port: spec.port,
                        icmp: spec.icmp,
                    };
                    m.evaluate(&flow).allowed
                })
                .collect()
        })
        .collect();
    Ok(Matrix {
        pods: eps
            .iter()
            .map(|e| format!("{}/{}", e.namespace, e.workload))
            .collect(),
        allowed,
    })
}

/// The text form: a header of column numbers, one row per pod, numbered.
pub fn render(x: &Matrix) -> String {
    const HEADER: &str = "from \\ to";
    let labels: Vec<String> = x
        .pods
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{} {p}", i + 1))
        .collect();
    let width = labels
        .iter()
        .map(String::len)
        .fold(HEADER.len(), usize::max);
    let mut out = format!("{HEADER:<width$}");
    for j in 0..x.pods.len() {
        let _ = write!(out, "{:>3}", j + 1);
    }
    out.push('\n');
    for (label, row) in labels.iter().zip(&x.allowed) {
        let _ = write!(out, "{label:<width$}");
        for a in row {
            out.push_str(if *a { "  ." } else { "  X" });
        }
        out.push('\n');
    }
    out
}

/// Runs `policy matrix`.
pub async fn run(store: &Store, args: &MatrixArgs) -> anyhow::Result<()> {
    let (m, errors) = PolicyModel::build(&load::load(store).await?);
    for e in errors {
        eprintln!("warning: left out: {e}");
    }
    let ns = if args.all_namespaces {
        None
    } else {
        args.namespace.as_deref()
    };
    let x = matrix(&m, &args.port, ns)?;
    match args.output {
        ExplainOutput::Text => print!("{}", render(&x)),
        ExplainOutput::Json => println!("{}", serde_json::to_string_pretty(&x)?),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_rows_from_and_columns_to() {
        let x = Matrix {
            pods: vec!["a/web".into(), "b/db".into()],
            allowed: vec![vec![true, false], vec![true, true]],
        };
        assert_eq!(
            render(&x),
            "from \\ to  1  2\n1 a/web    .  X\n2 b/db     .  .\n"
        );
    }
}
