//! Network namespaces as drop guards: a [`Netns`] is one test "host", a [`Switch`] one L2 segment.
//!
//! Links are veth pairs created directly inside the namespaces (`ip -n A link add ... peer name
//! ... netns B`), so nothing ever appears in the root namespace and deleting a namespace removes
//! its links. IPv6 addresses are added with `nodad` so they are usable at once.

use std::ffi::OsStr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ipnet::IpNet;

use crate::{LabError, Result};

/// Longest name we give a namespace (also the kernel's limit for an interface name).
pub const MAX_NAME_LEN: usize = 15;

/// Runs a command to completion and returns its stdout, or an error with its stderr.
pub(crate) fn run(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .map_err(LabError::io(format!("running {shown}")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(LabError::Command {
            command: shown,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Fails with [`LabError::NotRoot`] unless we run as root.
pub fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    if uid == 0 {
        Ok(())
    } else {
        Err(LabError::NotRoot { uid })
    }
}

/// Names of every network namespace `ip netns list` shows.
pub fn list_namespaces() -> Result<Vec<String>> {
    let out = run(Command::new("ip").args(["netns", "list"]))?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// A network namespace that exists until this guard is dropped.
///
/// Dropping it ends every process still inside (SIGTERM, then SIGKILL) and deletes it.
#[derive(Debug)]
pub struct Netns {
    name: String,
    next_if: AtomicU32,
}

impl Netns {
    /// Creates namespace `name` (at most 15 characters) with `lo` up.
    pub fn create(name: &str) -> Result<Netns> {
        require_root()?;
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return Err(LabError::Render(format!(
                "namespace name {name:?} must be 1..={MAX_NAME_LEN} characters"
            )));
        }
        run(Command::new("ip").args(["netns", "add", name]))?;
        // From here on the guard owns the namespace: an error below still deletes it.
        let ns = Netns {
            name: name.to_string(),
            next_if: AtomicU32::new(0),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        tracing::debug!(netns = name, "created");
        Ok(ns)
    }

    /// Takes charge of the existing namespace `name` (one a kept lab left behind): dropping the
    /// guard ends the processes inside and deletes it, as for one we created.
    pub fn adopt(name: &str) -> Result<Netns> {
        require_root()?;
        if !list_namespaces()?.iter().any(|n| n == name) {
            return Err(LabError::Render(format!("no network namespace {name:?}")));
        }
        Ok(Netns {
            name: name.to_string(),
            next_if: AtomicU32::new(0),
        })
    }

    /// Lets the namespace (and everything in it) outlive this guard; returns its name.
    /// Remove it later with [`Netns::adopt`] and drop.
    pub fn into_kept(self) -> String {
        let mut kept = std::mem::ManuallyDrop::new(self);
        tracing::debug!(netns = kept.name, "kept");
        std::mem::take(&mut kept.name)
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NAME ARGS...` and returns its stdout.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// Runs `ip -n NAME -j ARGS...` and parses its JSON array (empty when it prints nothing).
    pub fn ip_json(&self, args: &[&str]) -> Result<Vec<serde_json::Value>> {
        let mut full = vec!["-j"];
        full.extend_from_slice(args);
        let out = self.ip(&full)?;
        if out.trim().is_empty() {
            return Ok(Vec::new());
        }
        match serde_json::from_str::<serde_json::Value>(&out) {
            Ok(serde_json::Value::Array(items)) => Ok(items),
            _ => Err(LabError::Parse {
                what: format!("ip -j {} in {}", args.join(" "), self.name),
                line: out,
            }),
        }
    }

    /// Runs `f` on a thread of its own that has entered the namespace (setns(2)), e.g. a
    /// client of a daemon that listens only there; returns what `f` returns.
    pub fn run_inside<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        let path = format!("/var/run/netns/{}", self.name);
        let file = std::fs::File::open(&path).map_err(LabError::io(format!("opening {path}")))?;
        std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            // SAFETY: setns(2) moves only this new thread, with a namespace fd we hold open.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                return Err(LabError::io(format!("setns {path}"))(
                    std::io::Error::last_os_error(),
                ));
            }
            Ok(f())
        })
        .join()
        .map_err(|_| LabError::Io {
            context: "a thread inside the namespace panicked".into(),
            source: std::io::Error::other("panicked"),
        })?
    }

    /// A command that runs `program` inside the namespace (`ip netns exec NAME program`).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `program ARGS...` inside the namespace to completion and returns its stdout.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String> {
        run(self.command(program).args(args))
    }

    /// Adds `addr` (with its prefix length) to interface `ifname`; IPv6 without DAD.
    pub fn add_addr(&self, ifname: &str, addr: IpNet) -> Result<()> {
        let a = addr.to_string();
        match addr {
            IpNet::V4(_) => self.ip(&["addr", "add", &a, "dev", ifname])?,
            IpNet::V6(_) => self.ip(&["addr", "add", &a, "dev", ifname, "nodad"])?,
        };
        Ok(())
    }

    /// The next free interface name in this namespace (`eth0`, `eth1`, ...); in an adopted
    /// namespace, past the names its links already have.
    pub fn next_ifname(&self) -> String {
        let taken: Vec<String> = if self.next_if.load(Ordering::Relaxed) == 0 {
            self.ip_json(&["link", "show"])
                .unwrap_or_default()
                .iter()
                .filter_map(|l| l["ifname"].as_str().map(str::to_string))
                .collect()
        } else {
            Vec::new()
        };
        loop {
            let name = format!("eth{}", self.next_if.fetch_add(1, Ordering::Relaxed));
            if !taken.contains(&name) {
                return name;
            }
        }
    }

    /// Creates a veth pair between this namespace and `peer`, gives each end its addresses and
    /// brings both up. Returns the interface names (here, there).
    pub fn veth(&self, peer: &Netns, here: &[IpNet], there: &[IpNet]) -> Result<(String, String)> {
        let a = self.next_ifname();
        let b = peer.next_ifname();
        self.ip(&[
            "link", "add", &a, "type", "veth", "peer", "name", &b, "netns", &peer.name,
        ])?;
        for addr in here {
            self.add_addr(&a, *addr)?;
        }
        for addr in there {
            peer.add_addr(&b, *addr)?;
        }
        self.ip(&["link", "set", &a, "up"])?;
        peer.ip(&["link", "set", &b, "up"])?;
        Ok((a, b))
    }

    /// PIDs of every process inside the namespace.
    pub fn pids(&self) -> Result<Vec<i32>> {
        let out = run(Command::new("ip").args(["netns", "pids", &self.name]))?;
        Ok(out
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect())
    }

    /// Ends every process left inside: SIGTERM, up to 2 s grace, then SIGKILL.
    fn kill_all(&self) {
        let Ok(pids) = self.pids() else { return };
        if pids.is_empty() {
            return;
        }
        for &pid in &pids {
            // SAFETY: kill(2) on a PID that lives in our own namespace.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if self.pids().map(|p| p.is_empty()).unwrap_or(true) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for pid in self.pids().unwrap_or_default() {
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.kill_all();
        if let Err(e) = run(Command::new("ip").args(["netns", "delete", &self.name])) {
            eprintln!("lab: could not delete namespace {}: {e}", self.name);
        } else {
            tracing::debug!(netns = self.name, "deleted");
        }
    }
}

/// An L2 segment: a namespace holding bridge `br0`; hosts attach with a veth each.
#[derive(Debug)]
pub struct Switch {
    ns: Netns,
}

impl Switch {
    /// Creates the switch namespace `name` and its bridge.
    pub fn create(name: &str) -> Result<Switch> {
        let ns = Netns::create(name)?;
        ns.ip(&["link", "add", "br0", "type", "bridge"])?;
        ns.ip(&["link", "set", "br0", "up"])?;
        Ok(Switch { ns })
    }

    /// Takes charge of the switch namespace `name` a kept lab left behind (see
    /// [`Netns::adopt`]: dropping the guard deletes it; [`Switch::into_kept`] lets it be).
    pub fn adopt(name: &str) -> Result<Switch> {
        Ok(Switch {
            ns: Netns::adopt(name)?,
        })
    }

    /// The switch's own namespace.
    pub fn netns(&self) -> &Netns {
        &self.ns
    }

    /// Lets the switch outlive this guard (see [`Netns::into_kept`]); returns its namespace.
    pub fn into_kept(self) -> String {
        self.ns.into_kept()
    }

    /// Plugs `host` into the segment with `addrs` on its side; returns the host's interface.
    pub fn attach(&self, host: &Netns, addrs: &[IpNet]) -> Result<String> {
        let (port, ifname) = self.ns.veth(host, &[], addrs)?;
        self.ns.ip(&["link", "set", &port, "master", "br0"])?;
        Ok(ifname)
    }
}
