//! The report's etcd section: how many watchers etcd itself serves (from its `/metrics`, as
//! an operator would read it with curl) and, with `--etcd-proxies`, which nodes each gRPC
//! proxy serves. Through proxies, etcd serves one watcher per watched prefix per proxy
//! instead of one per daemon's watch.

use std::fmt::Write;

use super::state::LabState;
use crate::etcd_proxy::proxy_for;

/// etcd's gauge of the watchers it serves.
const WATCHERS: &str = "etcd_debugging_mvcc_watcher_total";

/// The value of the unlabelled sample `name` in Prometheus text.
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (n, v) = l.split_once(' ')?;
        (n == name).then(|| v.trim().parse().ok())?
    })
}

/// The gauge `name` from `ENDPOINT/metrics`, read inside namespace `ns` (etcd's, which the
/// lab keeps), or why it could not be read.
fn gauge(ns: &str, endpoint: &str, name: &str) -> String {
    match sample(&super::report::metrics_text(ns, endpoint), name) {
        Some(v) => format!("{v}"),
        None => format!("({name} not in {endpoint}/metrics)"),
    }
}

/// Appends the section.
pub fn render(out: &mut String, state: &LabState) {
    let etcd = &state.etcd;
    if etcd.endpoint.is_empty() {
        return;
    }
    let ns = etcd.netns.as_str();
    let _ = writeln!(
        out,
        "\n==== etcd: {} ({}) ====",
        etcd.endpoint,
        match etcd.proxies.len() {
            0 => "every daemon watches etcd itself".to_string(),
            n => format!("{n} gRPC proxies in front; node k's daemons use proxy (k-1) mod {n}"),
        }
    );
    let _ = writeln!(
        out,
        "$ ip netns exec {} curl -s {}/metrics | grep {WATCHERS}",
        etcd.netns, etcd.endpoint
    );
    let _ = writeln!(
        out,
        "watchers etcd serves: {}",
        gauge(ns, &etcd.endpoint, WATCHERS)
    );
    for (i, p) in etcd.proxies.iter().enumerate() {
        let users: Vec<&str> = state
            .nodes
            .iter()
            .enumerate()
            .filter(|(k, _)| proxy_for(*k, etcd.proxies.len()) == Some(i))
            .map(|(_, n)| n.name.as_str())
            .collect();
        let _ = writeln!(
            out,
            "proxy {i}: {} (PID {}), serving {}",
            p.endpoint,
            p.pid,
            if users.is_empty() {
                "no node yet".to_string()
            } else {
                users.join(", ")
            }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_read_by_exact_name() {
        let text = "# HELP x\netcd_debugging_mvcc_watcher_total 12\n\
etcd_debugging_mvcc_watcher_total_other 3\n";
        assert_eq!(sample(text, WATCHERS), Some(12.0));
        assert_eq!(sample(text, "absent"), None);
    }
}
