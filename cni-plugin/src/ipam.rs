//! Delegated IPAM: executes another IPAM plugin (e.g. host-local) from `CNI_PATH` as the spec
//! says: the same environment, the same network configuration on stdin, its result on stdout.

use crate::env::{Command, Environment};
use crate::error::{CniError, code};
use crate::result::CniResult;
use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;

/// Finds `plugin` in the `CNI_PATH` directories.
pub fn find_plugin(env: &Environment, plugin: &str) -> Result<PathBuf, CniError> {
    if env.path.is_empty() {
        return Err(CniError::new(
            code::INVALID_ENVIRONMENT,
            format!("CNI_PATH is not set: needed to find the IPAM plugin {plugin}"),
        ));
    }
    env.path
        .iter()
        .map(|dir| PathBuf::from(dir).join(plugin))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CniError::new(
                code::IPAM_PLUGIN_FAILED,
                format!(
                    "IPAM plugin {plugin} not found in CNI_PATH {}",
                    env.path.join(":")
                ),
            )
        })
}

/// Runs the IPAM plugin for `command` with `stdin` (the network configuration as received).
/// Returns its stdout on success; its own CNI error when it reports one.
pub fn exec(
    env: &Environment,
    plugin: &str,
    command: Command,
    stdin: &[u8],
) -> Result<Vec<u8>, CniError> {
    let path = find_plugin(env, plugin)?;
    let failed = |why: String| {
        CniError::new(
            code::IPAM_PLUGIN_FAILED,
            format!("IPAM plugin {plugin} {}: {why}", command.as_str()),
        )
    };
    tracing::debug!(plugin = %path.display(), command = command.as_str(), "executing IPAM plugin");
    let mut child = std::process::Command::new(&path)
        .env_clear()
        .envs(&env.raw)
        .env("CNI_COMMAND", command.as_str())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(format!("cannot execute {}: {e}", path.display())))?;
    if let Some(mut input) = child.stdin.take() {
        input
            .write_all(stdin)
            .map_err(|e| failed(format!("cannot write its stdin: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| failed(format!("cannot read its output: {e}")))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !stderr.trim().is_empty() {
        tracing::info!(plugin, stderr = %stderr.trim(), "IPAM plugin said");
    }
    if out.status.success() {
        return Ok(out.stdout);
    }
    // Its own error JSON is passed on unchanged: the runtime sees the IPAM plugin's code.
    #[derive(serde::Deserialize)]
    struct Wire {
        code: u32,
        #[serde(default)]
        msg: String,
        #[serde(default)]
        details: String,
    }
    match serde_json::from_slice::<Wire>(&out.stdout) {
        Ok(w) => Err(CniError {
            code: w.code,
            msg: format!("IPAM plugin {plugin}: {}", w.msg),
            details: w.details,
        }),
        Err(_) => Err(failed(format!(
            "exited with {} and no error JSON: {}",
            out.status,
            stderr.trim()
        ))),
    }
}

/// ADD: the addresses (and routes, DNS) the IPAM plugin allocated.
pub fn add(env: &Environment, plugin: &str, stdin: &[u8]) -> Result<CniResult, CniError> {
    let out = exec(env, plugin, Command::Add, stdin)?;
    let v: serde_json::Value = serde_json::from_slice(&out).map_err(|e| {
        CniError::new(
            code::IPAM_PLUGIN_FAILED,
            format!("IPAM plugin {plugin} printed no result JSON: {e}"),
        )
    })?;
    let r = CniResult::parse(&v).map_err(|e| {
        CniError::new(
            code::IPAM_PLUGIN_FAILED,
            format!("IPAM plugin {plugin}: {}", e.msg),
        )
    })?;
    if r.ips.is_empty() {
        return Err(CniError::new(
            code::IPAM_PLUGIN_FAILED,
            format!("IPAM plugin {plugin} allocated no address"),
        ));
    }
    Ok(r)
}
