//! etcd in the lab: Debian's `/usr/bin/etcd` run inside a lab namespace on a switch, so that
//! daemons in the other namespaces of the segment reach it; and `margayctl`, run in the same
//! namespace, to write and read the cluster's resources in it.
//!
//! The test process lives in the root namespace and never talks to etcd itself: everything it
//! writes or reads goes through the real `margayctl` (`ip netns exec ETCDNS margayctl ...`), so
//! the CLI is tested along the way.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::bgpd::margay_binary;
use crate::lab::{Addrs, Lab, LabSwitch};
use crate::netns::{Netns, run};
use crate::process::{HasLogs, Process, wait_for};
use crate::{LabError, Result};

/// Where Debian's `etcd-server` package installs etcd.
pub const ETCD_BINARY: &str = "/usr/bin/etcd";
/// etcd's client port.
pub const CLIENT_PORT: u16 = 2379;
/// etcd's peer port.
pub const PEER_PORT: u16 = 2380;
/// How long etcd gets to report itself healthy.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A single-member etcd running in its own namespace. Dropping it stops etcd (by PID), then
/// deletes the namespace; the data dir lives in the lab directory and goes with it.
#[derive(Debug)]
pub struct Etcd {
    // Field order is drop order: the process before its namespace.
    process: Process,
    ns: Netns,
    addrs: Addrs,
    data_dir: PathBuf,
    lab_dir: PathBuf,
    files: AtomicU32,
}

impl Etcd {
    /// Creates namespace `etcd` on `sw`, starts etcd on its switch address and waits until it
    /// answers `/health`.
    pub fn on_switch(lab: &Lab, sw: &LabSwitch) -> Result<Etcd> {
        let ns = lab.netns("etcd")?;
        let addrs = sw.attach(&ns)?;
        Etcd::start(lab, ns, addrs)
    }

    /// Starts etcd in `ns` (which it keeps), listening on `addrs.v4` (client and peer ports),
    /// with its data in `LABDIR/etcd.data`; returns once `/health` says it is healthy.
    pub fn start(lab: &Lab, ns: Netns, addrs: Addrs) -> Result<Etcd> {
        if !Path::new(ETCD_BINARY).is_file() {
            return Err(LabError::MissingBinary {
                what: "etcd".into(),
                path: ETCD_BINARY.into(),
                hint: "run scripts/install-deps.sh (Debian package etcd-server)".into(),
            });
        }
        let data_dir = lab.dir().join("etcd.data");
        let args = etcd_args(addrs.ip4(), &data_dir);
        let process = Process::spawn(&ns, "etcd", ETCD_BINARY, &args, lab.dir())?;
        let mut etcd = Etcd {
            process,
            ns,
            addrs,
            data_dir,
            lab_dir: lab.dir().to_path_buf(),
            files: AtomicU32::new(0),
        };
        etcd.wait_healthy()?;
        Ok(etcd)
    }

    fn wait_healthy(&mut self) -> Result<()> {
        let endpoint = self.endpoint();
        let command = format!("{ETCD_BINARY} --listen-client-urls {endpoint}");
        wait_health(&mut self.process, &self.ns, &endpoint, "etcd", command)
    }

    /// The client URL daemons on the segment use (`http://10.99.N.I:2379`).
    pub fn endpoint(&self) -> String {
        format!("http://{}:{CLIENT_PORT}", self.addrs.ip4())
    }

    /// etcd's address on the switch.
    pub fn ip(&self) -> IpAddr {
        IpAddr::V4(self.addrs.ip4())
    }

    /// The namespace etcd runs in.
    pub fn netns(&self) -> &Netns {
        &self.ns
    }

    /// Where etcd keeps its data.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// etcd's process.
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// Lets etcd and its namespace outlive this guard (a kept lab); returns etcd's PID.
    pub fn into_kept(self) -> u32 {
        let Etcd { process, ns, .. } = self;
        ns.into_kept();
        process.into_kept()
    }

    /// Kills etcd (SIGKILL, as a crash) and starts it again on the same data dir, address and
    /// name; returns once it is healthy. The cluster's data survives; clients must reconnect.
    pub fn restart(&mut self, lab: &Lab) -> Result<()> {
        self.process.kill();
        let args = etcd_args(self.addrs.ip4(), &self.data_dir);
        self.process = Process::spawn(&self.ns, "etcd-restarted", ETCD_BINARY, &args, lab.dir())?;
        self.wait_healthy()
    }

    /// Runs `margayctl --etcd-endpoints URL ARGS...` in etcd's namespace; returns its stdout,
    /// or an error with its stderr when it exits non-zero.
    pub fn margayctl(&self, args: &[&str]) -> Result<String> {
        let ctl = margay_binary("margayctl", "cargo build -p margay-ctl --bin margayctl")?;
        let mut cmd: Command = self.ns.command(&ctl);
        cmd.arg("--etcd-endpoints")
            .arg(self.endpoint())
            .args(args)
            .env_remove("MARGAY_ETCD_ENDPOINTS");
        run(&mut cmd)
    }

    /// Writes `yaml` to a fresh file in the lab directory and runs `margayctl apply -f` on it.
    pub fn apply(&self, yaml: &str) -> Result<String> {
        let n = self.files.fetch_add(1, Ordering::Relaxed);
        let path = self.lab_dir.join(format!("apply-{n}.yaml"));
        std::fs::write(&path, yaml).map_err(LabError::io(format!("writing {path:?}")))?;
        let path = path.to_string_lossy().into_owned();
        self.margayctl(&["apply", "-f", &path])
    }

    /// `margayctl get KIND NAME -o yaml`.
    pub fn get_yaml(&self, kind: &str, name: &str) -> Result<String> {
        self.margayctl(&["get", kind, name, "-o", "yaml"])
    }

    /// `margayctl delete KIND NAME`.
    pub fn delete(&self, kind: &str, name: &str) -> Result<String> {
        self.margayctl(&["delete", kind, name])
    }
}

/// etcd's command line: one member named `lab` on `ip`, its data in `data_dir` (a restart on
/// the same dir keeps the data; the `--initial-*` flags only matter the first time).
/// Waits until `process` (etcd, or its gRPC proxy, `what`) answers `ENDPOINT/health` with a
/// healthy etcd behind it; an exit first is an error naming `command`.
pub(crate) fn wait_health(
    process: &mut Process,
    ns: &Netns,
    endpoint: &str,
    what: &str,
    command: String,
) -> Result<()> {
    let url = format!("{endpoint}/health");
    let mut exited = None;
    let res = wait_for(
        &format!("{what} to answer {url}"),
        crate::process::start_timeout(START_TIMEOUT),
        &[],
        || {
            if let Some(status) = process.exit_status() {
                exited = Some(status);
                return Ok(());
            }
            let body = ns
                .exec("curl", &["-s", "--max-time", "1", &url])
                .map_err(|e| e.to_string())?;
            if body.contains("\"health\":\"true\"") {
                Ok(())
            } else {
                Err(format!("/health answered {body:?}"))
            }
        },
    );
    process.start_outcome(res, exited, command, "before it was healthy")
}

fn etcd_args(ip: std::net::Ipv4Addr, data_dir: &Path) -> Vec<String> {
    let client = format!("http://{ip}:{CLIENT_PORT}");
    let peer = format!("http://{ip}:{PEER_PORT}");
    vec![
        "--name=lab".to_string(),
        format!("--data-dir={}", data_dir.display()),
        format!("--listen-client-urls={client}"),
        format!("--advertise-client-urls={client}"),
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--initial-cluster=lab={peer}"),
        "--initial-cluster-state=new".to_string(),
        "--logger=zap".to_string(),
    ]
}

impl HasLogs for Etcd {
    fn log_tails(&self) -> String {
        self.process.log_tails()
    }
}

/// The value of the first `key:` line in a YAML document (quotes removed), for reading one
/// scalar field out of `margayctl get -o yaml` without a YAML parser.
pub fn yaml_scalar(text: &str, key: &str) -> Option<String> {
    let prefix = format!("{key}:");
    text.lines().find_map(|l| {
        let rest = l
            .trim_start()
            .trim_start_matches("- ")
            .strip_prefix(&prefix)?;
        let v = rest.trim().trim_matches(|c| c == '"' || c == '\'');
        Some(v.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_scalar_reads_nested_and_quoted_values() {
        let text = "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: node1\n\
                    spec:\n  bgp:\n    ipv4Address: 10.99.1.2/24\n    routeReflectorClusterID: \
                    '244.0.0.1'\n";
        assert_eq!(
            yaml_scalar(text, "ipv4Address").as_deref(),
            Some("10.99.1.2/24")
        );
        assert_eq!(
            yaml_scalar(text, "routeReflectorClusterID").as_deref(),
            Some("244.0.0.1")
        );
        assert_eq!(yaml_scalar(text, "asNumber"), None);
    }
}
