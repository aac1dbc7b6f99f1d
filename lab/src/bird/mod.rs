//! The BIRD 2 driver: render a config, run `bird -f` in a namespace, ask it through `birdc`.

mod config;
mod parse;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ipnet::IpNet;

pub use config::{BirdConfig, BirdNeighbor, Channel, ExportPolicy, NextHop};
pub use parse::{
    BgpAttrs, BirdProtocol, BirdRoute, BirdStatus, parse_protocols, parse_routes, parse_status,
};

use crate::lab::Lab;
use crate::netns::Netns;
use crate::process::{HasLogs, Process, holds_for, wait_for, wait_for_no_route, wait_for_route};
use crate::{LabError, Result};

/// How long BIRD gets to open its control socket.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running BIRD daemon. Dropping it stops it.
#[derive(Debug)]
pub struct Bird {
    name: String,
    config: BirdConfig,
    conf_path: PathBuf,
    socket: PathBuf,
    process: Process,
}

impl Bird {
    /// Writes `LABDIR/NAME.conf` and starts `bird -f` in `ns`; returns once birdc answers.
    pub fn start(lab: &Lab, ns: &Netns, name: &str, config: BirdConfig) -> Result<Bird> {
        Bird::start_with(lab, ns, name, config, false)
    }

    /// Like [`Bird::start`], as a restart after a crash: `bird -R` (graceful restart recovery,
    /// RFC 4724: its OPENs carry the Restart State and Forwarding State bits).
    pub fn start_recovering(lab: &Lab, ns: &Netns, name: &str, config: BirdConfig) -> Result<Bird> {
        Bird::start_with(lab, ns, name, config, true)
    }

    /// Starts BIRD on a configuration text of its own (a Calico node's, rendered by
    /// [`crate::calico::confd`]); [`Bird::config`] then holds only `router_id`. `recovering`
    /// starts it as a restart, `bird -R`, as calico-node's runit service does.
    pub fn start_text(
        lab: &Lab,
        ns: &Netns,
        name: &str,
        router_id: std::net::Ipv4Addr,
        text: &str,
        recovering: bool,
    ) -> Result<Bird> {
        Bird::start_rendered(lab, ns, name, BirdConfig::new(router_id), text, recovering)
    }

    fn start_with(
        lab: &Lab,
        ns: &Netns,
        name: &str,
        config: BirdConfig,
        recovering: bool,
    ) -> Result<Bird> {
        let text = config.render();
        Bird::start_rendered(lab, ns, name, config, &text, recovering)
    }

    fn start_rendered(
        lab: &Lab,
        ns: &Netns,
        name: &str,
        config: BirdConfig,
        text: &str,
        recovering: bool,
    ) -> Result<Bird> {
        let conf_path = lab.dir().join(format!("{name}.conf"));
        let socket = lab.dir().join(format!("{name}.ctl"));
        let pid_file = lab.dir().join(format!("{name}.pid"));
        std::fs::write(&conf_path, text).map_err(LabError::io(format!("writing {conf_path:?}")))?;
        let mut args = vec![
            "-f".as_ref(),
            "-c".as_ref(),
            conf_path.as_os_str(),
            "-s".as_ref(),
            socket.as_os_str(),
            "-P".as_ref(),
            pid_file.as_os_str(),
        ];
        if recovering {
            args.push("-R".as_ref());
        }
        let process = Process::spawn(ns, name, "bird", args, lab.dir())?;
        let mut bird = Bird {
            name: name.to_string(),
            config,
            conf_path,
            socket,
            process,
        };
        bird.wait_ready()?;
        Ok(bird)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let socket = self.socket.clone();
        let mut exited = None;
        let res = wait_for(
            &format!("bird {} to answer on {}", self.name, socket.display()),
            START_TIMEOUT,
            &[],
            || {
                if let Some(status) = self.process.exit_status() {
                    exited = Some(status);
                    return Ok(());
                }
                birdc(&socket, &["show", "status"])
                    .and_then(|t| parse_status(&t))
                    .map_err(|e| e.to_string())
                    .and_then(|s| {
                        if s.running {
                            Ok(())
                        } else {
                            Err("starting".into())
                        }
                    })
            },
        );
        let command = format!("bird -c {}", self.conf_path.display());
        self.process.start_outcome(res, exited, command, "")
    }

    /// Its name in this test.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The configuration it runs.
    pub fn config(&self) -> &BirdConfig {
        &self.config
    }

    /// Its control socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The daemon's PID.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The daemon's process.
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// Lets the daemon outlive this guard (see [`Process::into_kept`]); returns its PID.
    pub fn into_kept(self) -> u32 {
        self.process.into_kept()
    }

    /// Runs `birdc -s SOCKET ARGS...` and returns its output.
    pub fn birdc(&self, args: &[&str]) -> Result<String> {
        birdc(&self.socket, args)
    }

    /// `show status`.
    pub fn status(&self) -> Result<BirdStatus> {
        parse_status(&self.birdc(&["show", "status"])?)
    }

    /// `show protocols`.
    pub fn protocols(&self) -> Result<Vec<BirdProtocol>> {
        parse_protocols(&self.birdc(&["show", "protocols"])?)
    }

    /// One protocol's row of `show protocols`, if it exists.
    pub fn protocol(&self, name: &str) -> Result<Option<BirdProtocol>> {
        Ok(self.protocols()?.into_iter().find(|p| p.name == name))
    }

    /// `show route all` of both tables.
    pub fn routes(&self) -> Result<Vec<BirdRoute>> {
        parse_routes(&self.birdc(&["show", "route", "all"])?)
    }

    /// `show route all table master4|master6`: one family's routes.
    pub fn table(&self, ipv6: bool) -> Result<Vec<BirdRoute>> {
        let table = if ipv6 { "master6" } else { "master4" };
        parse_routes(&self.birdc(&["show", "route", "all", "table", table])?)
    }

    /// Every path BIRD holds for exactly `prefix` (the best one first).
    pub fn route(&self, prefix: IpNet) -> Result<Vec<BirdRoute>> {
        let table = match prefix {
            IpNet::V4(_) => "master4",
            IpNet::V6(_) => "master6",
        };
        let p = prefix.to_string();
        let routes = parse_routes(&self.birdc(&["show", "route", "all", "table", table, &p])?)?;
        Ok(routes.into_iter().filter(|r| r.prefix == prefix).collect())
    }

    /// The best path for `prefix`, if any.
    pub fn best_route(&self, prefix: IpNet) -> Result<Option<BirdRoute>> {
        Ok(self.route(prefix)?.into_iter().find(|r| r.primary))
    }

    /// Waits until BGP protocol `proto` is Established.
    pub fn wait_established(&self, proto: &str, timeout: Duration) -> Result<BirdProtocol> {
        wait_for(
            &format!("bird {}: protocol {proto} Established", self.name),
            timeout,
            &[self],
            || match self.protocol(proto) {
                Ok(Some(p)) if p.is_established() => Ok(p),
                Ok(Some(p)) => Err(format!("{} {}", p.state, p.info)),
                Ok(None) => Err(format!("no protocol {proto}")),
                Err(e) => Err(e.to_string()),
            },
        )
    }

    /// The `since` of Established protocol `proto` once it has stayed the same for `quiet`:
    /// BIRD stamps it again as the protocol finishes coming up (channels feeding), a
    /// millisecond or so after Established, so a test that checks later that the session was
    /// never reset must take its reference from here.
    pub fn settled_since(&self, proto: &str, quiet: Duration) -> Result<String> {
        let mut last = self.wait_established(proto, quiet * 20)?.since;
        let mut stable_from = std::time::Instant::now();
        wait_for(
            &format!("bird {}: protocol {proto} settled", self.name),
            quiet * 20,
            &[self],
            || {
                let now = self
                    .protocol(proto)
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("no protocol {proto}"))?;
                if !now.same_session_since(&last) || !now.is_established() {
                    last = now.since;
                    stable_from = std::time::Instant::now();
                }
                if stable_from.elapsed() >= quiet {
                    Ok(last.clone())
                } else {
                    Err(format!(
                        "since {last}, stable for {:?}",
                        stable_from.elapsed()
                    ))
                }
            },
        )
    }

    /// Checks that protocol `proto` never reaches Established during `period`.
    pub fn never_established(&self, proto: &str, period: Duration) -> Result<()> {
        holds_for(
            &format!("bird {}: protocol {proto} not Established", self.name),
            period,
            &[self],
            || match self.protocol(proto) {
                Ok(Some(p)) if p.is_established() => Err(format!("{} {}", p.state, p.info)),
                Ok(Some(_)) => Ok(()),
                Ok(None) => Err(format!("no protocol {proto}")),
                Err(e) => Err(e.to_string()),
            },
        )
    }

    /// Waits until the best path for `prefix` satisfies `check` (which says what is wrong).
    pub fn wait_route(
        &self,
        prefix: IpNet,
        timeout: Duration,
        check: impl FnMut(&BirdRoute) -> Result<(), String>,
    ) -> Result<BirdRoute> {
        wait_for_route(
            &format!("bird {}: route {prefix}", self.name),
            timeout,
            &[self],
            || self.best_route(prefix),
            check,
        )
    }

    /// Waits until the best path for `prefix` is a BGP route via `gateway`.
    pub fn wait_bgp_route_via(
        &self,
        prefix: IpNet,
        gateway: IpAddr,
        timeout: Duration,
    ) -> Result<BirdRoute> {
        self.wait_route(prefix, timeout, |r| {
            if !r.is_bgp() {
                Err("not a BGP route".into())
            } else if r.gateway != Some(gateway) {
                Err(format!("gateway is not {gateway}"))
            } else {
                Ok(())
            }
        })
    }

    /// Waits until BIRD has no route for `prefix` at all.
    pub fn wait_no_route(&self, prefix: IpNet, timeout: Duration) -> Result<()> {
        wait_for_no_route(
            &format!("bird {}: no route {prefix}", self.name),
            timeout,
            &[self],
            || self.route(prefix).map(|r| (!r.is_empty()).then_some(r)),
        )
    }

    /// Stops the daemon (SIGTERM: BIRD sends Cease to its peers); idempotent.
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Kills the daemon abruptly (SIGKILL: no NOTIFICATION, the kernel closes its sockets), as
    /// a crash would, and reaps it.
    pub fn kill(&mut self) {
        if self.process.is_running() {
            // SAFETY: kill(2) on the PID of our own child, which we have not reaped yet.
            unsafe { libc::kill(self.process.pid() as i32, libc::SIGKILL) };
        }
        self.process.stop();
    }
}

impl HasLogs for Bird {
    fn log_tails(&self) -> String {
        self.process.log_tails()
    }
}

/// Runs `birdc -s SOCKET ARGS...` from the root namespace (the socket is a file).
///
/// birdc exits 1 on any error reply; "Network not found" is an answer (no such route), every
/// other error reply or a daemon that does not answer is an error.
pub fn birdc(socket: &Path, args: &[&str]) -> Result<String> {
    let mut cmd = Command::new("birdc");
    cmd.arg("-s").arg(socket).args(args);
    let shown = format!("birdc -s {} {}", socket.display(), args.join(" "));
    let out = cmd
        .output()
        .map_err(LabError::io(format!("running {shown}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() || stdout.lines().any(|l| l.trim() == "Network not found") {
        return Ok(stdout);
    }
    Err(LabError::Command {
        command: shown,
        status: out.status.to_string(),
        stderr: format!(
            "{}{}",
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    })
}
