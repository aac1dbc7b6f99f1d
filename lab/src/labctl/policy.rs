//! Network policy in the kept lab: `margay-lab policy apply FILE`, `policy label POD
//! key=value|key-...`, `policy explain FROM TO PORT` and `policy matrix [--port]`, each
//! through margayctl against the lab's etcd; and the report's section with each felix's policy
//! programming (transactions, how they were written, time per change) and the expected
//! reachability matrix under the policies (what the model says every pod may reach).

use super::LabCtlError;
use super::join::margayctl;
use super::pods::POD_NAMESPACE;
use super::state::LabState;
use crate::netns::Netns;
use std::path::Path;

/// The ports the report's matrix is computed for.
pub const REPORT_PORTS: [&str; 2] = ["80/tcp", "icmp"];

fn kept(state_file: &Path) -> Result<LabState, LabCtlError> {
    LabState::load(state_file)?.ok_or_else(|| {
        LabCtlError::Usage(format!(
            "no lab is running (no {}); start one with `margay-lab up --keep`",
            state_file.display()
        ))
    })
}

/// Runs margayctl in the lab's etcd namespace; its stdout.
fn ctl(state: &LabState, args: &[&str]) -> Result<String, LabCtlError> {
    let ns = Netns::adopt(&state.etcd.netns)?;
    let out = margayctl(&ns, &state.etcd.endpoint, args);
    ns.into_kept();
    out
}

/// `margay-lab policy apply FILE`: the policies (any kinds margayctl applies) into the lab.
pub fn apply(state_file: &Path, file: &Path) -> Result<String, LabCtlError> {
    let state = kept(state_file)?;
    let path = std::fs::canonicalize(file)
        .map_err(|e| LabCtlError::Usage(format!("{}: {e}", file.display())))?;
    ctl(
        &state,
        &["apply", "-f", &path.to_string_lossy(), "-n", POD_NAMESPACE],
    )
}

/// `margay-lab policy label POD key=value key2-`: the pod's labels, as policy sees them.
pub fn label(state_file: &Path, pod: &str, labels: &[String]) -> Result<String, LabCtlError> {
    let state = kept(state_file)?;
    if !state.pods.iter().any(|p| p.name == pod) {
        return Err(LabCtlError::Usage(format!(
            "no pod {pod} in the lab ({})",
            state
                .pods
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let mut args = vec![
        "label",
        "workloadendpoint",
        pod,
        "-n",
        POD_NAMESPACE,
        "--overwrite",
    ];
    args.extend(labels.iter().map(String::as_str));
    ctl(&state, &args)
}

/// `margay-lab policy explain FROM TO PORT`: margayctl's explanation.
pub fn explain(state_file: &Path, from: &str, to: &str, port: &str) -> Result<String, LabCtlError> {
    let state = kept(state_file)?;
    ctl(
        &state,
        &[
            "policy",
            "explain",
            "--from",
            from,
            "--to",
            to,
            "--port",
            port,
            "-n",
            POD_NAMESPACE,
        ],
    )
}

/// `margay-lab policy matrix --port P`: every pod to every pod under the policies.
pub fn matrix(state_file: &Path, port: &str) -> Result<String, LabCtlError> {
    let state = kept(state_file)?;
    ctl(&state, &["policy", "matrix", "-A", "--port", port])
}

/// How a felix programs policy, from its /metrics text (pure): the transactions by how they
/// were written and the mean time from reading a change to the table holding it.
pub fn programming(metrics: &str) -> String {
    let mut via = Vec::new();
    let (mut sum, mut count) = (0.0f64, 0.0f64);
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let v: f64 = value.trim().parse().unwrap_or(0.0);
        if let Some(rest) = series.strip_prefix("margay_felix_policy_transactions_total{via=\"") {
            via.push(format!(
                "{} ({} transactions)",
                rest.trim_end_matches("\"}"),
                v as u64
            ));
        } else if series == "margay_felix_policy_program_seconds_sum" {
            sum = v;
        } else if series == "margay_felix_policy_program_seconds_count" {
            count = v;
        }
    }
    if via.is_empty() {
        return "policy table: no transaction yet (or felix's /metrics did not answer)".into();
    }
    format!(
        "policy table written through {}, {:.1} ms per change on average (from the etcd watch event: model, compile, render, commit)",
        via.join(", "),
        if count > 0.0 { sum / count * 1e3 } else { 0.0 }
    )
}

/// The report's section: how many policies there are and, when there is one, the expected
/// matrix for each of [`REPORT_PORTS`]. A failure to ask is reported in the section.
pub fn report_section(state: &LabState) -> String {
    let mut out =
        String::from("\n==== network policy (expected reachability, from the model) ====\n");
    let count = |kind: &str| {
        ctl(state, &["get", kind, "-A", "-o", "json"])
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["items"].as_array().map(Vec::len))
    };
    let counts: Vec<(&str, Option<usize>)> = [
        "tiers",
        "globalnetworkpolicies",
        "networkpolicies",
        "networkpolicies.networking.k8s.io",
    ]
    .into_iter()
    .map(|k| (k, count(k)))
    .collect();
    let line: Vec<String> = counts
        .iter()
        .map(|(k, n)| format!("{k} {}", n.map(|n| n.to_string()).unwrap_or("?".into())))
        .collect();
    out.push_str(&line.join(", "));
    out.push('\n');
    for node in &state.nodes {
        let text = super::report::felix_metrics_text(&node.netns);
        out.push_str(&format!("{}: {}\n", node.name, programming(&text)));
    }
    if counts.iter().skip(1).all(|(_, n)| *n == Some(0)) {
        out.push_str("no policy: every pod reaches every pod (margay-lab policy apply FILE)\n");
        return out;
    }
    for port in REPORT_PORTS {
        out.push_str(&format!("{port} (. allowed, X denied):\n"));
        match ctl(state, &["policy", "matrix", "-A", "--port", port]) {
            Ok(m) => out.push_str(&m),
            Err(e) => out.push_str(&format!("cannot compute: {e}\n")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::programming;

    #[test]
    fn programming_is_read_from_felix_metrics_text() {
        let text = "# HELP x\n\
            margay_felix_policy_transactions_total{via=\"libnftables\"} 4\n\
            margay_felix_policy_program_seconds_sum 0.1\n\
            margay_felix_policy_program_seconds_count 4\n";
        assert_eq!(
            programming(text),
            "policy table written through libnftables (4 transactions), 25.0 ms per change on average (from the etcd watch event: model, compile, render, commit)"
        );
        assert!(programming("").contains("no transaction yet"));
    }
}
