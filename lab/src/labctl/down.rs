//! Removing a kept lab from its state file: its daemons by PID, its namespaces, its directory,
//! and the state file last (so a `down` that fails half-way can be run again).
//!
//! Only what carries the lab's tag is touched: a PID is signalled only while it lives in one of
//! the lab's namespaces, a namespace is deleted only if its name starts with `mg` + tag, and the
//! directory only if its name does.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::LabCtlError;
use super::state::{LabState, ProcessRecord};
use crate::netns::{Netns, list_namespaces};

/// How long daemons get to exit after SIGTERM before SIGKILL.
const GRACE: Duration = Duration::from_secs(3);

/// Whether `pid` is a live process (a zombie counts as gone).
pub fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state is the first field after the command name, which is in parentheses.
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, Some("Z") | Some("X") | None)
}

/// The named network namespace `pid` lives in, if it is one `ip netns` knows.
fn netns_of(pid: u32) -> Option<String> {
    let out = Command::new("ip")
        .args(["netns", "identify", &pid.to_string()])
        .output()
        .ok()?;
    let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !name.is_empty()).then_some(name)
}

/// Stops the lab's daemons: SIGTERM to each that still runs in its namespace, then SIGKILL to
/// any left after the grace period. Returns how many were running.
pub fn stop_processes(state: &LabState) -> usize {
    let prefix = state.name_prefix();
    let ours = |p: &ProcessRecord| {
        p.netns.starts_with(&prefix)
            && alive(p.pid)
            && netns_of(p.pid).as_deref() == Some(p.netns.as_str())
    };
    let running: Vec<ProcessRecord> = state.processes().into_iter().filter(ours).collect();
    for p in &running {
        // SAFETY: kill(2) on a PID we just checked lives in the lab's own namespace.
        unsafe { libc::kill(p.pid as i32, libc::SIGTERM) };
    }
    let deadline = Instant::now() + GRACE;
    while Instant::now() < deadline && running.iter().any(|p| alive(p.pid)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    for p in running.iter().filter(|p| ours(p)) {
        // SAFETY: as above, checked again just now.
        unsafe { libc::kill(p.pid as i32, libc::SIGKILL) };
    }
    running.len()
}

/// Deletes the lab's namespaces that still exist (ending anything left inside): those recorded,
/// then any other carrying the lab's unique prefix (a pod's namespace made by an `up` that
/// crashed before recording it); fails if any namespace with the prefix remains.
pub fn delete_namespaces(state: &LabState) -> Result<usize, LabCtlError> {
    let prefix = state.name_prefix();
    let existing = list_namespaces()?;
    let mut deleted = 0;
    let mut names = state.namespaces();
    names.extend(
        existing
            .iter()
            .filter(|n| n.starts_with(&prefix) && !names.contains(n))
            .cloned()
            .collect::<Vec<_>>(),
    );
    // Pods and hosts before the switches, which come last in the record.
    names.sort_by_key(|n| state.switches.contains(n));
    for name in names {
        if name.starts_with(&prefix) && existing.contains(&name) {
            // Dropping the adopted guard kills what is inside and deletes the namespace.
            drop(Netns::adopt(&name)?);
            deleted += 1;
        }
    }
    let left: Vec<String> = list_namespaces()?
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    if left.is_empty() {
        Ok(deleted)
    } else {
        Err(LabCtlError::Usage(format!(
            "namespaces still present: {}",
            left.join(", ")
        )))
    }
}

/// Removes the lab's directory if its name carries the lab's tag.
pub fn remove_dir(state: &LabState) -> Result<(), LabCtlError> {
    let ours = state
        .dir
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(&format!("{}-", state.name_prefix())));
    if !ours {
        return Err(LabCtlError::Usage(format!(
            "not removing {}: its name does not carry the lab's tag {}",
            state.dir.display(),
            state.tag
        )));
    }
    match std::fs::remove_dir_all(&state.dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LabCtlError::state(&state.dir, e)),
    }
}

/// Removes the state file.
pub fn remove_state(path: &Path) -> Result<(), LabCtlError> {
    LabState::remove(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_reaped_child_is_not() {
        assert!(alive(std::process::id()));
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!alive(pid));
    }

    #[test]
    fn exited_but_unreaped_child_counts_as_gone() {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!alive(pid), "a zombie is not a running process");
        child.wait().unwrap();
    }
}
