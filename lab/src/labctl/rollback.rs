//! `margay-lab node rollback NAME` on a kept lab: a node that `node migrate` moved from Calico
//! goes back to Calico as the README's runbook says ("Going back"): margay-felix and
//! margay-bgpd stop by SIGTERM (bgpd's graceful stop: no NOTIFICATION to BIRD, whose peers
//! keep the node's routes), margay's routes but the pods' are handed to BIRD in place
//! ([`HANDOVER_TO_BIRD`]), Calico felix's pod routes come back (protocol `boot`), BIRD starts
//! with `-R` on the configuration confd rendered for the node, and once every one of its
//! sessions is Established `ip route flush proto 81` removes what margay left. Its pod pings
//! every other pod at 100/s throughout; the command reports the losses and the times.

use std::fmt::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use super::LabCtlError;
use super::down::alive;
use super::state::{CalicoNodeState, LabState};
use super::takeover::{Borrowed, ms, pings_from, summaries};
use crate::bird::{birdc, parse_protocols};
use crate::calico::{FLUSH_MARGAY, HANDOVER_TO_BIRD};
use crate::netns::require_root;
use crate::process::{Process, wait_for_every};

/// What a rollback did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolledBack {
    pub node: CalicoNodeState,
    /// Whether margay's routes were handed to BIRD (the runbook's way).
    pub handover: bool,
    /// margay stopped → every BIRD session Established.
    pub established: Duration,
    /// margay stopped → no route of margay's left on the node.
    pub clean: Duration,
    /// Each ping from the node's pod: destination pod and its summary line.
    pings: Vec<(String, String)>,
}

/// Ends `pid` with SIGTERM (as a pod deletion does) and waits up to 10 s for it to go.
fn terminate(what: &str, pid: u32) -> Result<(), LabCtlError> {
    if pid == 0 || !alive(pid) {
        return Ok(());
    }
    // SAFETY: kill(2) on a PID the lab's state file records for this node's daemon.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    wait_for_every(
        &format!("{what} to end"),
        Duration::from_secs(10),
        Duration::from_millis(20),
        &[],
        || {
            if alive(pid) {
                Err("running".into())
            } else {
                Ok(())
            }
        },
    )?;
    Ok(())
}

/// Node `name`, moved from Calico by `node migrate`, back to Calico; without `handover`,
/// margay's routes are left as they are until the flush (the comparison: BIRD cannot add its
/// routes over them).
pub fn node_rollback(
    state_file: &Path,
    name: &str,
    handover: bool,
    timeout: Duration,
) -> Result<RolledBack, LabCtlError> {
    require_root()?;
    let mut state = LabState::load(state_file)?.ok_or_else(|| {
        LabCtlError::Usage(format!("no lab is running (no {})", state_file.display()))
    })?;
    let (Some(at), Some(n)) = (
        state.migrated.iter().position(|c| c.name == name),
        state.nodes.iter().position(|n| n.name == name),
    ) else {
        return Err(LabCtlError::Usage(format!(
            "{name} is not a node `node migrate` moved from Calico (such nodes: {})",
            state
                .migrated
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    let mut calico = state.migrated[at].clone();
    let node = state.nodes[n].clone();
    let dir = state.dir.clone();
    let ns = Borrowed::new(&calico.netns)?;
    let pings = pings_from(&state, name, &dir)?;

    // margay-node goes: felix, then bgpd, each by SIGTERM.
    let t0 = Instant::now();
    terminate(&format!("{name}'s margay-felix"), node.felix_pid)?;
    terminate(&format!("{name}'s margay-bgpd"), node.pid)?;

    // margay's routes handed to BIRD; calico-node returns: felix's pod routes, BIRD -R.
    if handover {
        ns.ns().exec("sh", &["-c", HANDOVER_TO_BIRD])?;
    }
    for pod in state.pods.iter().filter(|p| p.node == name) {
        for a in pod.addresses() {
            let host = format!("{a}/{}", if a.is_ipv4() { 32 } else { 128 });
            ns.ns().ip(&[
                "route",
                "replace",
                &host,
                "dev",
                &pod.interface,
                "proto",
                "boot",
            ])?;
        }
    }
    let pid_file = dir.join(format!("bird-{name}-back.pid"));
    let mut args = vec!["-f".as_ref(), "-R".as_ref(), "-c".as_ref()];
    args.extend([
        calico.config.as_os_str(),
        "-s".as_ref(),
        calico.socket.as_os_str(),
        "-P".as_ref(),
        pid_file.as_os_str(),
    ]);
    let bird = Process::spawn(ns.ns(), &format!("bird-{name}-back"), "bird", args, &dir)?;
    calico.pid = bird.pid();
    // bird6 too, on a dual-stack node, on the configuration it ran on.
    let bird6 = match calico.pid6 {
        0 => None,
        _ => {
            let (conf, ctl, pid) = (
                dir.join(format!("bird6-{name}.conf")),
                dir.join(format!("bird6-{name}.ctl")),
                dir.join(format!("bird6-{name}-back.pid")),
            );
            let args = [
                "-f".as_ref(),
                "-R".as_ref(),
                "-c".as_ref(),
                conf.as_os_str(),
                "-s".as_ref(),
                ctl.as_os_str(),
                "-P".as_ref(),
                pid.as_os_str(),
            ];
            let p = Process::spawn(ns.ns(), &format!("bird6-{name}-back"), "bird", args, &dir)?;
            calico.pid6 = p.pid();
            Some(p)
        }
    };
    let socket = calico.socket.clone();
    let protocols = calico.protocols.clone();
    wait_for_every(
        &format!("every BIRD session of {name} Established"),
        timeout,
        Duration::from_millis(50),
        &[&bird],
        || {
            let all = birdc(&socket, &["show", "protocols"])
                .and_then(|t| parse_protocols(&t))
                .map_err(|e| e.to_string())?;
            match protocols
                .iter()
                .find(|p| !all.iter().any(|a| &a.name == *p && a.is_established()))
            {
                Some(p) => Err(format!("{p} not Established")),
                None => Ok(()),
            }
        },
    )?;
    let established = t0.elapsed();
    ns.ns().exec("sh", &["-c", FLUSH_MARGAY])?;
    let clean = t0.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let pings = summaries(&pings);

    state.nodes.remove(n);
    state.migrated.remove(at);
    state.calico.push(calico.clone());
    state.save(state_file)?;
    bird.into_kept();
    if let Some(p) = bird6 {
        p.into_kept();
    }
    drop(ns);
    Ok(RolledBack {
        node: calico,
        handover,
        established,
        clean,
        pings,
    })
}

/// What `node rollback` prints.
pub fn render_rolled_back(r: &RolledBack) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} runs Calico again: BIRD (pid {}) with -R on {}; margay-felix and margay-bgpd \
         stopped by SIGTERM, {}",
        r.node.name,
        r.node.pid,
        r.node.config.display(),
        if r.handover {
            "their routes handed to BIRD in place"
        } else {
            "their routes left as they were (--no-handover)"
        }
    );
    let _ = writeln!(
        out,
        "  margay stopped -> every BIRD session Established: {}",
        ms(r.established)
    );
    let _ = writeln!(out, "  margay stopped -> proto 81 flushed: {}", ms(r.clean));
    for (to, s) in &r.pings {
        let _ = writeln!(out, "  ping -> {to} at 100/s throughout: {s}");
    }
    out
}

/// Whether every ping of the rollback lost nothing.
pub fn lossless(r: &RolledBack) -> bool {
    !r.pings.is_empty() && r.pings.iter().all(|(_, s)| s.contains(" 0% packet loss"))
}
