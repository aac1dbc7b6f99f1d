//! `node add` and `node remove` on a `--tors 2` lab: the dual-homed fabric's part. A joining
//! node gets what `up` gives every node there: a link to each ToR (rack a and plane b), and a
//! BFD-watched eBGP session on each ToR. The ToRs have no listen range (each session is
//! configured, as `up` configures them), so both ToRs' BIRD configurations are rendered again
//! from the lab's state with the node added or removed ([`super::topology::fabric_tor_config`])
//! and loaded with `birdc configure`: BIRD starts or stops only the protocol that changed and
//! reconfigures every other in place. [`Reconfiguration`] checks that from BIRD's own log of
//! the reload (no other protocol restarted, removed or reloaded); [`Sessions::kept_by`]
//! compares every other session's `Since` before and after, which also catches a session
//! that dropped for another reason meanwhile (BFD at 3 × 100 ms on a loaded machine).

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use ipnet::Ipv4Net;

use super::LabCtlError;
use super::state::{LabState, TorState};
use super::topology::{fabric_protocol, fabric_tor_config};
use crate::bird::{BirdConfig, birdc, parse_protocols};
use crate::process::wait_for_every;

/// A ToR's session with a node, as the join reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TorSession {
    /// The ToR (`tor`, `tor2`).
    pub tor: String,
    /// Its BIRD protocol.
    pub protocol: String,
    /// `birdc show protocols all` of it, then its `show bfd sessions` row.
    pub text: String,
}

/// What a join or a leave did to the ToRs' other sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The node's protocol on both ToRs.
    pub protocol: String,
    /// Protocols BIRD reconfigured in place, over both ToRs (it restarted none but the
    /// node's, or the command failed).
    pub in_place: usize,
    /// Other sessions Established before and after, since the same moment.
    pub kept: usize,
    /// Other sessions that dropped meanwhile all the same (not by the reconfiguration).
    pub dropped: Vec<String>,
}

impl Outcome {
    /// The report's lines.
    pub fn render(&self, verb: &str) -> String {
        let mut s = format!(
            "both ToRs reconfigured in place (birdc configure) {verb} session {}: BIRD kept the \
             other {} protocol(s) and restarted none; {} other session(s) stayed Established \
             throughout\n",
            self.protocol, self.in_place, self.kept
        );
        if !self.dropped.is_empty() {
            s.push_str(&format!(
                "dropped meanwhile, not by the reconfiguration: {}\n",
                self.dropped.join("; ")
            ));
        }
        s
    }
}

/// The lowest host on plane b that no node or the second ToR holds.
pub fn free_address_b(state: &LabState) -> Result<Ipv4Net, LabCtlError> {
    let (Some(subnet), Some(tor2)) = (state.plane_b, &state.tor2) else {
        return Err(LabCtlError::Usage(
            "this --tors 2 lab's state records no plane b subnet (made before `node add` \
             supported two ToRs): take it down and bring it up again"
                .into(),
        ));
    };
    let used: Vec<Ipv4Addr> = state
        .nodes
        .iter()
        .filter_map(|n| n.address_b)
        .chain(tor2.addresses.iter().copied())
        .collect();
    super::join::lowest_free(subnet, &used)
}

/// Each ToR with the configuration it gets for the lab's nodes, `without` one of them, plus
/// `extra` (name, address on rack a, address on plane b).
fn configs<'a>(
    state: &'a LabState,
    without: Option<&str>,
    extra: Option<(&str, Ipv4Addr, Ipv4Addr)>,
) -> Result<Vec<(&'a TorState, BirdConfig)>, LabCtlError> {
    let tor2 = state
        .tor2
        .as_ref()
        .ok_or_else(|| LabCtlError::Usage("the lab has one ToR".into()))?;
    let mut a = Vec::new();
    let mut b = Vec::new();
    for n in state
        .nodes
        .iter()
        .filter(|n| Some(n.name.as_str()) != without)
    {
        let addr_b = n.address_b.ok_or_else(|| {
            LabCtlError::Usage(format!(
                "the lab's state records no plane b address of {}; take the lab down and bring \
                 it up again",
                n.name
            ))
        })?;
        a.push((n.name.clone(), n.address4));
        b.push((n.name.clone(), addr_b));
    }
    if let Some((name, addr, addr_b)) = extra {
        a.push((name.to_string(), addr));
        b.push((name.to_string(), addr_b));
    }
    Ok(vec![
        (
            &state.tor,
            fabric_tor_config(state.tor.addresses[0], state.tor.asn, &a),
        ),
        (tor2, fabric_tor_config(tor2.addresses[0], tor2.asn, &b)),
    ])
}

/// What BIRD logged of a reconfiguration, on both ToRs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconfiguration {
    /// Protocols each ToR reconfigured in place (`NAME: Reconfigured`), counted over both.
    pub in_place: usize,
    /// Every `Restarting|Removing|Reloading|Disabling protocol NAME` line, with its ToR.
    pub disturbed: Vec<String>,
}

impl Reconfiguration {
    /// The lines that touched a protocol other than `own` (the joining or leaving node's).
    pub fn others(&self, own: &str) -> Vec<&String> {
        self.disturbed
            .iter()
            .filter(|l| !l.trim_end().ends_with(&format!(" {own}")))
            .collect()
    }
}

/// BIRD's log of a ToR (its stderr, in the lab's directory).
fn log_path(state: &LabState, tor: &TorState) -> std::path::PathBuf {
    state.dir.join(format!("{}.stderr", tor.name))
}

/// Reads what `path` gained past byte `from`.
fn log_since(path: &Path, from: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(path)
        && f.seek(SeekFrom::Start(from)).is_ok()
    {
        let _ = f.read_to_string(&mut text);
    }
    text
}

/// Writes each ToR's configuration for the lab's nodes (`without` one, plus `extra`), has its
/// BIRD load it (`birdc configure`), and returns what BIRD logged of it.
pub fn reconfigure(
    state: &LabState,
    without: Option<&str>,
    extra: Option<(&str, Ipv4Addr, Ipv4Addr)>,
) -> Result<Reconfiguration, LabCtlError> {
    let mut r = Reconfiguration::default();
    for (tor, config) in configs(state, without, extra)? {
        let log = log_path(state, tor);
        let mark = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        std::fs::write(&tor.config, config.render())
            .map_err(|e| LabCtlError::state(&tor.config, e))?;
        let out = birdc(&tor.socket, &["configure"])?;
        if !out.contains("Reconfigured") && !out.contains("Reconfiguration in progress") {
            return Err(LabCtlError::Usage(format!(
                "{}: birdc configure: {}",
                tor.name,
                out.trim()
            )));
        }
        // BIRD logs each protocol's fate while it commits the new configuration, before it
        // answers; the lines are in the file once birdc returns.
        for line in log_since(&log, mark).lines() {
            if line.trim_end().ends_with(": Reconfigured") {
                r.in_place += 1;
            } else if ["Restarting", "Removing", "Reloading", "Disabling"]
                .iter()
                .any(|w| line.contains(&format!("{w} protocol ")))
            {
                r.disturbed.push(format!("{}: {}", tor.name, line.trim()));
            }
        }
    }
    Ok(r)
}

/// Fails when the reconfiguration `r` restarted, removed or reloaded a protocol other than
/// `own`; else how many protocols BIRD kept in place.
pub fn check_in_place(r: &Reconfiguration, own: &str) -> Result<usize, LabCtlError> {
    let others = r.others(own);
    if others.is_empty() {
        Ok(r.in_place)
    } else {
        Err(LabCtlError::Usage(format!(
            "the ToRs' reconfiguration disturbed other protocols: {others:?}"
        )))
    }
}

/// Undoes a join's ToR configuration unless [`Configured::keep`] is called: a join that
/// fails leaves both ToRs as they were.
pub struct Configured {
    /// The lab as it was before the join.
    state: LabState,
    kept: bool,
}

impl Configured {
    /// Adds node `name` (its rack a and plane b addresses) to both ToRs; what BIRD logged of
    /// it, with no other protocol disturbed (else an error, and both ToRs as they were).
    pub fn add(
        state: &LabState,
        name: &str,
        addr: Ipv4Addr,
        addr_b: Ipv4Addr,
    ) -> Result<(Configured, Reconfiguration), LabCtlError> {
        let protocol = fabric_protocol(name);
        for tor in state.tors() {
            let text = birdc(&tor.socket, &["show", "protocols"])?;
            if parse_protocols(&text)?.iter().any(|p| p.name == protocol) {
                return Err(LabCtlError::Usage(format!(
                    "{} has a protocol {protocol} already: name the node otherwise",
                    tor.name
                )));
            }
        }
        let guard = Configured {
            state: state.clone(),
            kept: false,
        };
        let r = reconfigure(state, None, Some((name, addr, addr_b)))?;
        check_in_place(&r, &protocol)?;
        Ok((guard, r))
    }

    /// The join succeeded: the ToRs keep the node.
    pub fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Configured {
    fn drop(&mut self) {
        if !self.kept
            && let Err(e) = reconfigure(&self.state, None, None)
        {
            tracing::warn!("putting the ToRs' configuration back: {e}");
        }
    }
}

/// Every BGP session of both ToRs: (ToR, protocol, state, since).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sessions(Vec<(String, String, String, String)>);

impl Sessions {
    /// Both ToRs' BGP protocols now.
    pub fn of(state: &LabState) -> Result<Sessions, LabCtlError> {
        let mut v = Vec::new();
        for tor in state.tors() {
            let text = birdc(&tor.socket, &["show", "protocols"])?;
            for p in parse_protocols(&text)?
                .into_iter()
                .filter(|p| p.proto == "BGP")
            {
                let up = if p.is_established() {
                    "Established".to_string()
                } else {
                    p.info.clone()
                };
                v.push((tor.name.clone(), p.name, up, p.since));
            }
        }
        Ok(Sessions(v))
    }

    /// How many sessions of `self` (taken before a join or a leave of the node whose
    /// protocol is `except`) are still Established since the same moment in `after`, and those
    /// that went down or restarted meanwhile (`ToR protocol: state since ...`).
    pub fn kept_by(&self, after: &Sessions, except: &str) -> (usize, Vec<String>) {
        let mut reset = Vec::new();
        let mut kept = 0;
        for (tor, proto, st, since) in self.0.iter().filter(|s| s.1 != except) {
            if st != "Established" {
                continue;
            }
            match after.0.iter().find(|a| &a.0 == tor && &a.1 == proto) {
                Some((_, _, s2, since2)) if s2 == "Established" && same_moment(since, since2) => {
                    kept += 1
                }
                Some((_, _, s2, since2)) => reset.push(format!(
                    "{tor} {proto}: {s2} since {since2} (was Established since {since})"
                )),
                None => reset.push(format!("{tor} {proto}: gone")),
            }
        }
        (kept, reset)
    }
}

/// Whether two `Since` values of one BIRD protocol name the same state change. BIRD shows it
/// in wall-clock time derived from its monotonic clock when asked, so the milliseconds jitter
/// by one or two between two `show protocols`; a session that went down and came back is
/// later by a second at least (the connect delay the ToRs run with).
fn same_moment(a: &str, b: &str) -> bool {
    let secs = |t: &str| -> Option<f64> {
        let clock = t.split_whitespace().last()?;
        let mut parts = clock.split(':');
        let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
        Some(
            h.parse::<f64>().ok()? * 3600.0
                + m.parse::<f64>().ok()? * 60.0
                + s.parse::<f64>().ok()?,
        )
    };
    let same_day = a.split_whitespace().count() == 1
        || a.split_whitespace().next() == b.split_whitespace().next();
    match (secs(a), secs(b)) {
        (Some(x), Some(y)) if same_day => (x - y).abs() < 0.1,
        _ => a == b,
    }
}

/// The row of `show bfd sessions` on the ToR at `socket` for `peer`, if Up.
fn bfd_up(socket: &Path, peer: IpAddr) -> Result<String, String> {
    let out = birdc(socket, &["show", "bfd", "sessions"]).map_err(|e| e.to_string())?;
    let row = out
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&peer.to_string()))
        .ok_or_else(|| format!("no BFD session with {peer}"))?;
    if row.split_whitespace().nth(2) == Some("Up") {
        Ok(row.to_string())
    } else {
        Err(format!("BFD with {peer}: {row}"))
    }
}

/// Waits until each ToR's session with node `name` (at `addr` on rack a, `addr_b` on plane
/// b) is Established with its BFD session Up.
pub fn wait_sessions(
    state: &LabState,
    name: &str,
    addr: Ipv4Addr,
    addr_b: Ipv4Addr,
    timeout: Duration,
) -> Result<Vec<TorSession>, LabCtlError> {
    let protocol = fabric_protocol(name);
    let mut out = Vec::new();
    for (tor, peer) in state.tors().zip([addr, addr_b]) {
        let s = wait_for_every(
            &format!(
                "{}'s session with {name} ({peer}) Established, BFD Up",
                tor.name
            ),
            timeout,
            Duration::from_millis(50),
            &[],
            || {
                let text = birdc(&tor.socket, &["show", "protocols", "all", &protocol])
                    .map_err(|e| e.to_string())?;
                let row =
                    parse_protocols(text.lines().take(3).collect::<Vec<_>>().join("\n").as_str())
                        .ok()
                        .and_then(|v| v.into_iter().find(|p| p.name == protocol));
                if !row.is_some_and(|p| p.is_established()) {
                    return Err(format!("{protocol} is not Established"));
                }
                let bfd = bfd_up(&tor.socket, IpAddr::V4(peer))?;
                Ok(format!("{}\nBFD: {bfd}\n", text.trim_end()))
            },
        )?;
        out.push(TorSession {
            tor: tor.name.clone(),
            protocol: protocol.clone(),
            text: s,
        });
    }
    Ok(out)
}

/// Waits until neither ToR has a protocol for node `name` any more.
pub fn wait_protocols_gone(
    state: &LabState,
    name: &str,
    timeout: Duration,
) -> Result<(), LabCtlError> {
    let protocol = fabric_protocol(name);
    wait_for_every(
        &format!("both ToRs without protocol {protocol}"),
        timeout,
        Duration::from_millis(50),
        &[],
        || {
            for tor in state.tors() {
                let text = birdc(&tor.socket, &["show", "protocols"]).map_err(|e| e.to_string())?;
                let names = parse_protocols(&text).map_err(|e| e.to_string())?;
                if names.iter().any(|p| p.name == protocol) {
                    return Err(format!("{} still has {protocol}", tor.name));
                }
            }
            Ok(())
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_since_that_jitters_by_a_millisecond_is_the_same_moment_and_a_reconnect_is_not() {
        assert!(same_moment("13:03:48.105", "13:03:48.104"));
        assert!(!same_moment("13:03:48.105", "13:03:49.812"));
        assert!(!same_moment(
            "2026-12-06 13:03:48.105",
            "2026-12-07 13:03:48.105"
        ));
        let before = Sessions(vec![
            (
                "tor".into(),
                "node1".into(),
                "Established".into(),
                "13:03:48.105".into(),
            ),
            (
                "tor".into(),
                "node2".into(),
                "Established".into(),
                "13:03:48.200".into(),
            ),
            (
                "tor".into(),
                "node4".into(),
                "Established".into(),
                "13:03:48.300".into(),
            ),
        ]);
        let after = Sessions(vec![
            (
                "tor".into(),
                "node1".into(),
                "Established".into(),
                "13:03:48.104".into(),
            ),
            (
                "tor".into(),
                "node2".into(),
                "Established".into(),
                "13:03:51.020".into(),
            ),
        ]);
        let (kept, dropped) = before.kept_by(&after, "node4");
        assert_eq!(kept, 1);
        assert_eq!(dropped.len(), 1, "{dropped:?}");
        assert!(dropped[0].starts_with("tor node2"), "{dropped:?}");
    }
}
