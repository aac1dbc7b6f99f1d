//! Shared by the integration suites: running the built `margay` binary as a container runtime
//! does (environment and stdin), and a test double of felix's gRPC service on a temp socket.
#![allow(dead_code)]

pub mod felix_double;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// What one plugin run printed and returned.
#[derive(Debug)]
pub struct Run {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
}

impl Run {
    /// stdout as JSON; panics with everything the plugin said when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    /// The CNI error code on stdout (checks the exit code is non-zero and the shape).
    pub fn error_code(&self) -> u64 {
        assert_ne!(self.code, 0, "expected failure: {self:?}");
        let v = self.json();
        assert!(
            v["msg"].as_str().is_some_and(|m| !m.is_empty()),
            "no msg: {self:?}"
        );
        assert!(v["cniVersion"].is_string(), "no cniVersion: {self:?}");
        v["code"]
            .as_u64()
            .unwrap_or_else(|| panic!("no code: {self:?}"))
    }

    pub fn msg(&self) -> String {
        self.json()["msg"].as_str().unwrap_or_default().to_string()
    }

    pub fn assert_ok(&self) {
        assert_eq!(self.code, 0, "expected success: {self:?}");
    }
}

/// Runs the plugin with exactly `env` (nothing inherited) and `stdin`.
pub fn run_plugin(env: &[(&str, &str)], stdin: &str) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_margay"))
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn margay");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait margay");
    Run {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code().unwrap_or(-1),
    }
}

/// A runtime's environment for an attachment command.
pub fn attachment_env<'a>(
    command: &'a str,
    container: &'a str,
    netns: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", container),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", "eth0"),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0",
        ),
        ("CNI_PATH", "/usr/lib/cni"),
        ("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
    ]
}

/// A margay netconf in `version` pointing at `socket`.
pub fn netconf(version: &str, socket: &Path) -> serde_json::Value {
    serde_json::json!({
        "cniVersion": version,
        "name": "k8s-pod-network",
        "type": "margay",
        "mtu": 1450,
        "ipam": {"type": "margay-ipam"},
        "felix_socket": socket.to_str().unwrap(),
        "nodename": "node1",
        "log_level": "debug",
    })
}

/// CNI STATUS with netconf `conf`: `Ok` when the plugin says ADDs can be served, else what it
/// printed (for `wait_for`).
pub fn status_ok(conf: &str) -> Result<(), String> {
    let r = run_plugin(
        &[("CNI_COMMAND", "STATUS"), ("PATH", "/usr/bin:/bin")],
        conf,
    );
    if r.code == 0 {
        Ok(())
    } else {
        Err(format!("{r:?}"))
    }
}

/// Asserts that a `margayctl ipam check --json` report counts `in_use` addresses and handles
/// and lists no leaked handle, endpoint or allocation.
pub fn assert_ipam_report(report: &serde_json::Value, in_use: usize) {
    assert_eq!(report["addresses_in_use"], in_use, "{report}");
    assert_eq!(report["handles"], in_use, "{report}");
    for k in [
        "handles_without_endpoint",
        "endpoints_without_handle",
        "allocations_without_handle",
        "handle_mismatches",
    ] {
        assert_eq!(report[k], serde_json::json!([]), "{k}: {report}");
    }
}

/// Runs `ip -n NS -j ARGS` and parses its JSON (an empty array when it prints nothing).
pub fn ip_json(ns: &margay_lab::Netns, args: &[&str]) -> Vec<serde_json::Value> {
    ns.ip_json(args).expect("ip -j")
}
