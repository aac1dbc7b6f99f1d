//! The margay-felix driver for cluster mode (`--etcd-endpoints`): start it in a node's
//! namespace beside that node's margay-bgpd, wait until it reports ready, stop or kill it.
//!
//! felix's HTTP server listens on the namespace's loopback, so readiness is asked with `curl`
//! run inside the namespace (each node namespace has its own 127.0.0.1).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::Result;
use crate::bgpd::margay_binary;
use crate::lab::Lab;
use crate::netns::Netns;
use crate::process::{HasLogs, Process, wait_for_every};

/// How long felix gets to report itself ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a starting felix's readiness is asked.
const READY_POLL: Duration = Duration::from_millis(20);

/// Where margay-felix is (`$MARGAY_BIN_DIR`, else the cargo target dir).
pub fn felix_binary() -> Result<PathBuf> {
    margay_binary(
        "margay-felix",
        "`cargo build -p margay-felix --bin margay-felix`, or `scripts/lab.sh` builds it",
    )
}

/// felix's cluster-mode command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FelixArgs {
    /// `--node`: this node's name.
    pub node: String,
    /// `--etcd-endpoints`, comma separated.
    pub etcd: String,
    /// `--bgpd-socket`: the node's margay-bgpd.
    pub bgpd_socket: PathBuf,
    /// `--socket`: felix's own API socket, the one the CNI plugin calls.
    pub socket: PathBuf,
    /// `--http-port` of /liveness, /readiness and /metrics on the namespace's loopback.
    pub http_port: u16,
    /// `--resync-interval` in seconds.
    pub resync_interval: u64,
    /// `--adopt-route-protocols` (`calico` on a node calico-node wired); none by default.
    pub adopt_route_protocols: Option<String>,
    /// `--networking-backend` and `--ip` when no bgpd runs (`vxlan`, `none`): felix registers
    /// the Node with this address and routes remote blocks from IPAM.
    pub no_bgp: Option<(String, String)>,
    /// `--ip6` when no bgpd runs: this node's IPv6 address for its Node (an IPv6 VXLAN pool).
    pub no_bgp_ip6: Option<String>,
}

impl FelixArgs {
    /// Node `node` using etcd at `etcd` and bgpd at `bgpd_socket`; felix's socket is
    /// `socket`, HTTP on port 9099, a 5 s resync.
    pub fn new(node: &str, etcd: &str, bgpd_socket: &Path, socket: &Path) -> FelixArgs {
        FelixArgs {
            node: node.to_string(),
            etcd: etcd.to_string(),
            bgpd_socket: bgpd_socket.to_path_buf(),
            socket: socket.to_path_buf(),
            http_port: 9099,
            resync_interval: 5,
            adopt_route_protocols: None,
            no_bgp: None,
            no_bgp_ip6: None,
        }
    }

    /// No bgpd beside this felix: backend `vxlan`, this node's address `ip` (`ADDR/LEN`).
    pub fn without_bgp(mut self, ip: ipnet::IpNet) -> FelixArgs {
        self.no_bgp = Some(("vxlan".into(), ip.to_string()));
        self
    }

    /// No bgpd, on a dual-stack or IPv6-only node: backend `vxlan`, this node's IPv4 address
    /// (`--ip`, `none` without one) and IPv6 address (`--ip6`).
    pub fn without_bgp_dual(mut self, ip: Option<ipnet::IpNet>, ip6: ipnet::IpNet) -> FelixArgs {
        let ip = ip.map_or_else(|| "none".to_string(), |a| a.to_string());
        self.no_bgp = Some(("vxlan".into(), ip));
        self.no_bgp_ip6 = Some(ip6.to_string());
        self
    }

    /// The arguments after the binary's name.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "--node".into(),
            self.node.clone(),
            "--etcd-endpoints".into(),
            self.etcd.clone(),
            "--bgpd-socket".into(),
            self.bgpd_socket.display().to_string(),
            "--socket".into(),
            self.socket.display().to_string(),
            "--http-port".into(),
            self.http_port.to_string(),
            "--resync-interval".into(),
            self.resync_interval.to_string(),
        ];
        if let Some(p) = &self.adopt_route_protocols {
            args.extend(["--adopt-route-protocols".to_string(), p.clone()]);
        }
        if let Some((backend, ip)) = &self.no_bgp {
            args.extend([
                "--networking-backend".to_string(),
                backend.clone(),
                "--ip".to_string(),
                ip.clone(),
            ]);
        }
        if let Some(ip6) = &self.no_bgp_ip6 {
            args.extend(["--ip6".to_string(), ip6.clone()]);
        }
        args
    }
}

/// A running margay-felix. Dropping it stops it.
#[derive(Debug)]
pub struct Felix {
    args: FelixArgs,
    netns: String,
    process: Process,
}

impl Felix {
    /// Starts felix in `ns` as process `name` (its logs `LABDIR/NAME.std{out,err}`) and returns
    /// once `/readiness` answers 200 and its API socket exists.
    pub fn start_cluster(lab: &Lab, ns: &Netns, name: &str, args: FelixArgs) -> Result<Felix> {
        Felix::start_in(lab.dir(), ns, name, args)
    }

    /// As [`Felix::start_cluster`], with the logs in `log_dir` (a kept lab's directory).
    pub fn start_in(log_dir: &Path, ns: &Netns, name: &str, args: FelixArgs) -> Result<Felix> {
        let binary = felix_binary()?;
        let process = Process::spawn(ns, name, &binary, args.to_args(), log_dir)?;
        let mut felix = Felix {
            args,
            netns: ns.name().to_string(),
            process,
        };
        felix.wait_ready()?;
        Ok(felix)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let mut exited = None;
        let what = format!("margay-felix {} to be ready", self.args.node);
        // Polled often: how long a start takes is what the lab measures.
        let res = wait_for_every(
            &what,
            crate::process::start_timeout(READY_TIMEOUT),
            READY_POLL,
            &[],
            || {
                if let Some(status) = self.process.exit_status() {
                    exited = Some(status);
                    return Ok(());
                }
                readiness(&self.netns, self.args.http_port)?;
                if self.args.socket.exists() {
                    Ok(())
                } else {
                    Err(format!("ready, but no socket {:?} yet", self.args.socket))
                }
            },
        );
        let command = format!("margay-felix {}", self.args.to_args().join(" "));
        self.process
            .start_outcome(res, exited, command, "before it was ready")
    }

    /// Its command line.
    pub fn args(&self) -> &FelixArgs {
        &self.args
    }

    /// The daemon's process.
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// The daemon's PID.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Stops it (SIGTERM, then SIGKILL); idempotent.
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Lets the daemon outlive this guard (see [`Process::into_kept`]); returns its PID.
    pub fn into_kept(self) -> u32 {
        self.process.into_kept()
    }
}

impl HasLogs for Felix {
    fn log_tails(&self) -> String {
        self.process.log_tails()
    }
}

/// Asks felix's `/readiness` in namespace `netns`: `Ok(())` on 200, else what it said.
pub fn readiness(netns: &str, port: u16) -> std::result::Result<(), String> {
    let url = format!("http://127.0.0.1:{port}/readiness");
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", netns, "curl", "-s", "--max-time", "2"])
        .args(["-o", "/dev/stderr", "-w", "%{http_code}", &url])
        .output()
        .map_err(|e| format!("running curl: {e}"))?;
    let code = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if code == "200" {
        Ok(())
    } else {
        Err(format!(
            "/readiness answered {code}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
