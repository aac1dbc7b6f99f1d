//! Network policy in the kept lab: `margay-lab policy apply FILE`, `policy label POD
//! key=value|key-...`, `policy explain FROM TO PORT` and `policy matrix [--port]`, each
//! through margayctl against the lab's etcd; and the report's section with the expected
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
