//! The margay-bgpd driver: render its TOML config, run it in a namespace, ask it over its gRPC
//! unix socket (`margay.bgp.v1.Bgp`).
//!
//! The driver is synchronous (tests poll with [`wait_for`]); each call runs on its own
//! current-thread tokio runtime and opens a fresh connection to the socket. The runtime ends
//! with the call, which closes the connection: an idle client connection left open would hold
//! up the daemon's graceful shutdown on SIGTERM.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use margay_proto::bgp::v1::bgp_client::BgpClient;
use margay_proto::bgp::v1::{
    GetInfoRequest, Info, ListPeersRequest, ListRoutesRequest, OriginateRequest, Peer, PeerType,
    Route, WithdrawRequest,
};
use serde::Serialize;
use tonic::transport::Channel;

use crate::lab::Lab;
use crate::netns::Netns;
use crate::process::{
    HasLogs, Process, holds_for, wait_for, wait_for_every, wait_for_no_route, wait_for_route,
};
use crate::{LabError, Result};

/// How long the daemon gets to answer on its socket.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How often a starting margay-bgpd is asked whether it answers.
const START_POLL: Duration = Duration::from_millis(20);
/// Environment variable naming the directory that holds margay's binaries.
pub const BIN_DIR_ENV: &str = "MARGAY_BIN_DIR";

/// `next-hop` of a neighbour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum NextHopMode {
    #[serde(rename = "self")]
    MySelf,
    #[serde(rename = "keep")]
    Keep,
}

/// How a neighbour is labelled in `margayctl node status` (the daemon's `type` key; by default
/// the daemon derives it from the session).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BgpdPeerType {
    /// `node-to-node mesh`
    Mesh,
    /// `global`
    Global,
    /// `node specific`
    NodeSpecific,
    /// `route reflector client`
    RouteReflectorClient,
    /// `route reflector`: a reflector this node is a client of
    RouteReflector,
}

/// One `[[neighbors]]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct BgpdNeighbor {
    pub address: IpAddr,
    pub asn: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub passive: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    pub route_reflector_client: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_hop: Option<NextHopMode>,
    pub hold_time: u16,
    pub connect_retry: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub peer_type: Option<BgpdPeerType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_prefixes: Option<u32>,
    /// `warn` or `cease`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_prefix_action: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_prefix_restart: Option<u16>,
    /// Names of `[[filters]]` applied to this neighbour, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<String>,
    /// `cluster` or `external`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The AS presented on this session instead of the speaker's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_asn: Option<u32>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub bfd: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bfd_min_tx_ms: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bfd_min_rx_ms: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bfd_multiplier: Option<u8>,
}

impl BgpdNeighbor {
    /// A neighbour at `address` in AS `asn`: active, hold time 9 s, connect retry 1 s.
    pub fn new(address: IpAddr, asn: u32) -> BgpdNeighbor {
        BgpdNeighbor {
            address,
            asn,
            port: None,
            passive: false,
            password: None,
            route_reflector_client: false,
            next_hop: None,
            hold_time: 9,
            connect_retry: 1,
            description: None,
            peer_type: None,
            max_prefixes: None,
            max_prefix_action: None,
            max_prefix_restart: None,
            filters: Vec::new(),
            role: None,
            local_asn: None,
            bfd: false,
            bfd_min_tx_ms: None,
            bfd_min_rx_ms: None,
            bfd_multiplier: None,
        }
    }

    /// BFD with this neighbour at these timers.
    pub fn bfd(mut self, min_tx_ms: u32, min_rx_ms: u32, multiplier: u8) -> Self {
        self.bfd = true;
        self.bfd_min_tx_ms = Some(min_tx_ms);
        self.bfd_min_rx_ms = Some(min_rx_ms);
        self.bfd_multiplier = Some(multiplier);
        self
    }

    /// Applies the named `[[filters]]`, in order.
    pub fn filters(mut self, names: &[&str]) -> Self {
        self.filters = names.iter().map(|n| n.to_string()).collect();
        self
    }

    /// Presents `asn` on this session instead of the speaker's AS.
    pub fn local_asn(mut self, asn: u32) -> Self {
        self.local_asn = Some(asn);
        self
    }

    /// Sets the neighbour's role: `cluster` or `external`.
    pub fn role(mut self, role: &str) -> Self {
        self.role = Some(role.to_string());
        self
    }

    /// A prefix limit: `max` per family, `action` `warn` or `cease`, `restart` seconds after a
    /// Cease.
    pub fn max_prefixes(mut self, max: u32, action: &str, restart: u16) -> Self {
        self.max_prefixes = Some(max);
        self.max_prefix_action = Some(action.to_string());
        self.max_prefix_restart = Some(restart);
        self
    }

    /// Marks the neighbour a route reflector client.
    pub fn rr_client(mut self) -> Self {
        self.route_reflector_client = true;
        self
    }

    /// TCP-MD5 password (RFC 2385).
    pub fn password(mut self, password: &str) -> Self {
        self.password = Some(password.to_string());
        self
    }

    /// Waits for the neighbour to connect.
    pub fn passive(mut self) -> Self {
        self.passive = true;
        self
    }

    /// Sets the next-hop mode.
    pub fn next_hop(mut self, mode: NextHopMode) -> Self {
        self.next_hop = Some(mode);
        self
    }

    /// Sets the description.
    pub fn description(mut self, text: &str) -> Self {
        self.description = Some(text.to_string());
        self
    }

    /// Sets the label `margayctl node status` shows for this neighbour.
    pub fn peer_type(mut self, t: BgpdPeerType) -> Self {
        self.peer_type = Some(t);
        self
    }
}

/// margay-bgpd's `--config` file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct BgpdConfig {
    pub router_id: Ipv4Addr,
    pub asn: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen_address: Option<IpAddr>,
    pub listen_port: u16,
    /// The gRPC socket; [`Bgpd::start`] puts it in the lab directory when empty.
    pub socket: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<Ipv4Addr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_port: Option<u16>,
    pub originate: Vec<IpNet>,
    pub neighbors: Vec<BgpdNeighbor>,
    /// Policy tables (`[[pools]]`, `[[advertise]]`, `[[filters]]`) as TOML text, appended to
    /// the rendered file.
    #[serde(skip)]
    pub policy: String,
}

impl BgpdConfig {
    /// A speaker with router id `router_id` in AS `asn`, listening on port 179.
    pub fn new(router_id: Ipv4Addr, asn: u32) -> BgpdConfig {
        BgpdConfig {
            router_id,
            asn,
            listen_address: None,
            listen_port: 179,
            socket: PathBuf::new(),
            cluster_id: None,
            http_port: None,
            originate: Vec::new(),
            neighbors: Vec::new(),
            policy: String::new(),
        }
    }

    /// Sets the policy tables (TOML text: `[[pools]]`, `[[advertise]]`, `[[filters]]`).
    pub fn policy(mut self, toml: &str) -> Self {
        self.policy = toml.to_string();
        self
    }

    /// Adds a prefix to originate.
    pub fn originate(mut self, prefix: IpNet) -> Self {
        self.originate.push(prefix);
        self
    }

    /// Adds a neighbour.
    pub fn neighbor(mut self, n: BgpdNeighbor) -> Self {
        self.neighbors.push(n);
        self
    }

    /// Makes this speaker a route reflector with `cluster_id`.
    pub fn cluster_id(mut self, id: Ipv4Addr) -> Self {
        self.cluster_id = Some(id);
        self
    }

    /// The TOML text.
    pub fn render(&self) -> Result<String> {
        let mut text = toml::to_string(self).map_err(|e| LabError::Render(e.to_string()))?;
        if !self.policy.is_empty() {
            text.push('\n');
            text.push_str(&self.policy);
        }
        Ok(text)
    }
}

/// Where margay-bgpd is: `$MARGAY_BIN_DIR/margay-bgpd`, else next to the cargo target dir of
/// the running test binary (`target/debug/deps/x` → `target/debug/margay-bgpd`).
pub fn bgpd_binary() -> Result<PathBuf> {
    margay_binary(
        "margay-bgpd",
        "`cargo build -p margay-bgp --bin margay-bgpd`, or `cargo test --workspace --all-targets` \
         builds it",
    )
}

/// Where margay's binary `name` is: `$MARGAY_BIN_DIR/NAME`, else in the cargo target dir of the
/// running binary (a test in `target/debug/deps/` or a binary such as `margay-lab` in
/// `target/debug/`). `build` says how to build it, for the error.
pub fn margay_binary(name: &str, build: &str) -> Result<PathBuf> {
    let dir = match std::env::var_os(BIN_DIR_ENV) {
        Some(d) => PathBuf::from(d),
        None => {
            let exe = std::env::current_exe().map_err(LabError::io("locating the test binary"))?;
            let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
            if dir.ends_with("deps") {
                dir.pop();
            }
            dir
        }
    };
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(LabError::MissingBinary {
            what: name.into(),
            path,
            hint: format!(
                "build it first ({build}) or point {BIN_DIR_ENV} at the directory holding it"
            ),
        })
    }
}

/// The command line of margay-bgpd in cluster mode (`--datastore etcd`): everything else comes
/// from the datastore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterArgs {
    /// `--node`: this node's name (its Node resource).
    pub node: String,
    /// `--etcd-endpoints`, comma separated.
    pub etcd: String,
    /// `--ip`: `ADDR/LEN` or `autodetect`; the daemon's default when `None`.
    pub ip: Option<String>,
    /// `--ip-autodetection-method` (`first-found`, `can-reach=DEST`, `interface=REGEX`, ...).
    pub ip_autodetection_method: Option<String>,
    /// `--ip6`: `ADDR/LEN`; none by default.
    pub ip6: Option<String>,
    /// `--as`: this node's AS, written to its Node.
    pub asn: Option<u32>,
    /// `--http-port` (0 = off, the default here).
    pub http_port: u16,
    /// `--secrets-dir`: where Secrets named by `secretKeyRef` are mounted.
    pub secrets_dir: Option<PathBuf>,
    /// `--originate-wait`: how long End-of-RIB waits for felix after start. The lab's default
    /// is [`LAB_ORIGINATE_WAIT`]; `None` leaves the daemon's own (30 s).
    pub originate_wait: Option<u16>,
    /// `--worker-threads` (0: one per core); the daemon's default (1) when `None`.
    pub worker_threads: Option<usize>,
    /// `--outbox-limit`: bytes owed to slow peers before the speaker stops reading sessions;
    /// the daemon's default when `None`.
    pub outbox_limit: Option<usize>,
}

/// The lab's `--originate-wait`: most suites run bgpd without felix, and their peers should
/// see End-of-RIB (and sweep stale routes) within seconds, as before the setting existed.
pub const LAB_ORIGINATE_WAIT: u16 = 2;

impl ClusterArgs {
    /// Node `node` using etcd at `etcd`, with the BGP address `ip` (`ADDR/LEN`).
    pub fn new(node: &str, etcd: &str, ip: IpNet) -> ClusterArgs {
        ClusterArgs {
            node: node.to_string(),
            etcd: etcd.to_string(),
            ip: Some(ip.to_string()),
            ip_autodetection_method: None,
            ip6: None,
            asn: None,
            http_port: 0,
            secrets_dir: None,
            originate_wait: Some(LAB_ORIGINATE_WAIT),
            worker_threads: None,
            outbox_limit: None,
        }
    }

    /// Sets `--originate-wait` (`None`: the daemon's default).
    pub fn originate_wait(mut self, secs: Option<u16>) -> Self {
        self.originate_wait = secs;
        self
    }

    /// Sets `--secrets-dir`.
    pub fn secrets_dir(mut self, dir: &Path) -> Self {
        self.secrets_dir = Some(dir.to_path_buf());
        self
    }

    /// Sets `--ip6`, this node's IPv6 BGP address.
    pub fn ip6(mut self, ip: IpNet) -> Self {
        self.ip6 = Some(ip.to_string());
        self
    }

    /// Sets `--as`.
    pub fn asn(mut self, asn: u32) -> Self {
        self.asn = Some(asn);
        self
    }

    /// The arguments after the binary's name, with the gRPC socket `socket`.
    pub fn to_args(&self, socket: &Path) -> Vec<String> {
        let mut a = vec![
            "--datastore".to_string(),
            "etcd".to_string(),
            "--node".to_string(),
            self.node.clone(),
            "--etcd-endpoints".to_string(),
            self.etcd.clone(),
            "--socket".to_string(),
            socket.display().to_string(),
            "--http-port".to_string(),
            self.http_port.to_string(),
        ];
        if let Some(ip) = &self.ip {
            a.extend(["--ip".to_string(), ip.clone()]);
        }
        if let Some(m) = &self.ip_autodetection_method {
            a.extend(["--ip-autodetection-method".to_string(), m.clone()]);
        }
        if let Some(ip6) = &self.ip6 {
            a.extend(["--ip6".to_string(), ip6.clone()]);
        }
        if let Some(asn) = self.asn {
            a.extend(["--as".to_string(), asn.to_string()]);
        }
        if let Some(d) = &self.secrets_dir {
            a.extend(["--secrets-dir".to_string(), d.display().to_string()]);
        }
        if let Some(w) = self.originate_wait {
            a.extend(["--originate-wait".to_string(), w.to_string()]);
        }
        if let Some(t) = self.worker_threads {
            a.extend(["--worker-threads".to_string(), t.to_string()]);
        }
        if let Some(l) = self.outbox_limit {
            a.extend(["--outbox-limit".to_string(), l.to_string()]);
        }
        a
    }
}

/// A running margay-bgpd. Dropping it stops it.
#[derive(Debug)]
pub struct Bgpd {
    name: String,
    config: BgpdConfig,
    cluster: Option<ClusterArgs>,
    process: Process,
}

impl Bgpd {
    /// Writes `LABDIR/NAME.toml`, starts `margay-bgpd --config` in `ns`, and returns once its
    /// socket answers `GetInfo`.
    pub fn start(lab: &Lab, ns: &Netns, name: &str, config: BgpdConfig) -> Result<Bgpd> {
        Bgpd::start_with_flags(lab, ns, name, config, &[])
    }

    /// As [`Bgpd::start`], with more command-line flags after `--config FILE`.
    pub fn start_with_flags(
        lab: &Lab,
        ns: &Netns,
        name: &str,
        mut config: BgpdConfig,
        flags: &[&str],
    ) -> Result<Bgpd> {
        let binary = bgpd_binary()?;
        if config.socket.as_os_str().is_empty() {
            config.socket = lab.dir().join(format!("{name}.sock"));
        }
        let conf_path = lab.dir().join(format!("{name}.toml"));
        std::fs::write(&conf_path, config.render()?)
            .map_err(LabError::io(format!("writing {conf_path:?}")))?;
        let mut argv: Vec<&std::ffi::OsStr> = vec!["--config".as_ref(), conf_path.as_os_str()];
        argv.extend(flags.iter().map(std::ffi::OsStr::new));
        let process = Process::spawn(ns, name, &binary, argv, lab.dir())?;
        let mut bgpd = Bgpd {
            name: name.to_string(),
            config,
            cluster: None,
            process,
        };
        bgpd.wait_ready(&format!("margay-bgpd --config {}", conf_path.display()))?;
        Ok(bgpd)
    }

    /// Starts margay-bgpd in cluster mode in `ns` (`--datastore etcd`, socket
    /// `LABDIR/NAME.sock`) and returns once its socket answers `GetInfo`. Its sessions come
    /// from the datastore; [`Bgpd::config`] then holds only the socket and the address.
    pub fn start_cluster(lab: &Lab, ns: &Netns, name: &str, args: ClusterArgs) -> Result<Bgpd> {
        Bgpd::start_cluster_in(lab.dir(), ns, name, args)
    }

    /// As [`Bgpd::start_cluster`], with the socket and logs in `dir` (a kept lab's directory).
    pub fn start_cluster_in(dir: &Path, ns: &Netns, name: &str, args: ClusterArgs) -> Result<Bgpd> {
        let binary = bgpd_binary()?;
        let socket = dir.join(format!("{name}.sock"));
        let argv = args.to_args(&socket);
        let process = Process::spawn(ns, name, &binary, &argv, dir)?;
        let router_id = args
            .ip
            .as_deref()
            .and_then(|ip| ip.parse::<ipnet::Ipv4Net>().ok())
            .map(|n| n.addr())
            .unwrap_or(Ipv4Addr::UNSPECIFIED);
        let mut config = BgpdConfig::new(router_id, args.asn.unwrap_or(0));
        config.socket = socket;
        let mut bgpd = Bgpd {
            name: name.to_string(),
            config,
            cluster: Some(args),
            process,
        };
        bgpd.wait_ready(&format!("margay-bgpd {}", argv.join(" ")))?;
        Ok(bgpd)
    }

    fn wait_ready(&mut self, command: &str) -> Result<()> {
        let mut exited = None;
        let what = format!(
            "margay-bgpd {} to answer on {:?}",
            self.name, self.config.socket
        );
        // Polled often: how long a start takes is what the lab measures.
        let res = wait_for_every(
            &what,
            crate::process::start_timeout(START_TIMEOUT),
            START_POLL,
            &[],
            || {
                if let Some(status) = self.process.exit_status() {
                    exited = Some(status);
                    return Ok(());
                }
                self.info().map(|_| ()).map_err(|e| e.to_string())
            },
        );
        let command = command.to_string();
        self.process
            .start_outcome(res, exited, command, "before answering on its socket")
    }

    /// Its name in this test.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The configuration it runs.
    pub fn config(&self) -> &BgpdConfig {
        &self.config
    }

    /// The cluster-mode command line, when started with [`Bgpd::start_cluster`].
    pub fn cluster(&self) -> Option<&ClusterArgs> {
        self.cluster.as_ref()
    }

    /// The daemon's process.
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// The daemon's PID.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Stops the daemon (SIGTERM, then SIGKILL); idempotent. SIGTERM is graceful restart's
    /// stop: peers that negotiated graceful restart keep its routes for the restart time.
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Stops the daemon for good: SIGINT, which sends Cease to every peer, so they drop its
    /// routes at once (then as [`Bgpd::stop`]).
    pub fn stop_with_cease(&mut self) {
        if self.process.is_running() {
            // SAFETY: kill(2) on the PID of our own child, which we have not reaped yet.
            unsafe { libc::kill(self.process.pid() as i32, libc::SIGINT) };
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while self.process.is_running() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.process.stop();
    }

    /// Writes `config` to the daemon's file and sends SIGHUP, which applies it (a daemon
    /// started with [`Bgpd::start`]).
    pub fn reload(&mut self, lab: &Lab, mut config: BgpdConfig) -> Result<()> {
        config.socket = self.config.socket.clone();
        let conf_path = lab.dir().join(format!("{}.toml", self.name));
        std::fs::write(&conf_path, config.render()?)
            .map_err(LabError::io(format!("writing {conf_path:?}")))?;
        self.config = config;
        // SAFETY: kill(2) on the PID of our own child, which we have not reaped yet.
        unsafe { libc::kill(self.process.pid() as i32, libc::SIGHUP) };
        Ok(())
    }

    /// Lets the daemon outlive this guard (see [`Process::into_kept`]); returns its PID.
    pub fn into_kept(self) -> u32 {
        self.process.into_kept()
    }

    fn call<T, F, Fut>(&self, call: &str, f: F) -> Result<T>
    where
        F: FnOnce(BgpClient<Channel>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let socket = self.config.socket.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(LabError::io("building the gRPC client runtime"))?;
        rt.block_on(async {
            let channel = connect_unix(&socket).await?;
            // A 100k-route table is over tonic's default 4 MiB message limit.
            f(BgpClient::new(channel).max_decoding_message_size(256 << 20))
                .await
                .map(tonic::Response::into_inner)
                .map_err(|status| LabError::Rpc {
                    call: call.to_string(),
                    socket: socket.clone(),
                    status: Box::new(status),
                })
        })
    }

    /// `GetInfo`.
    pub fn info(&self) -> Result<Info> {
        self.call("GetInfo", |mut c| async move {
            c.get_info(GetInfoRequest {}).await
        })
    }

    /// `ListPeers`.
    pub fn peers(&self) -> Result<Vec<Peer>> {
        let r = self.call("ListPeers", |mut c| async move {
            c.list_peers(ListPeersRequest {}).await
        })?;
        Ok(r.peers)
    }

    /// `Originate`: adds `prefixes` to what this node originates.
    pub fn originate(&self, prefixes: &[IpNet]) -> Result<()> {
        let req = OriginateRequest {
            prefixes: prefixes.iter().map(IpNet::to_string).collect(),
        };
        self.call("Originate", |mut c| async move { c.originate(req).await })
            .map(|_| ())
    }

    /// `Withdraw`: stops originating `prefixes`.
    pub fn withdraw(&self, prefixes: &[IpNet]) -> Result<()> {
        let req = WithdrawRequest {
            prefixes: prefixes.iter().map(IpNet::to_string).collect(),
        };
        self.call("Withdraw", |mut c| async move { c.withdraw(req).await })
            .map(|_| ())
    }

    /// The peers of type `t` (`ListPeers` filtered).
    pub fn peers_of_type(&self, t: PeerType) -> Result<Vec<Peer>> {
        Ok(self
            .peers()?
            .into_iter()
            .filter(|p| p.r#type() == t)
            .collect())
    }

    /// The peer at `address`, if configured.
    pub fn peer(&self, address: IpAddr) -> Result<Option<Peer>> {
        Ok(self
            .peers()?
            .into_iter()
            .find(|p| p.address.parse::<IpAddr>().ok() == Some(address)))
    }

    /// `ListRoutes` for `family` ("ipv4", "ipv6" or "" for both); best paths unless `all`.
    pub fn routes(&self, family: &str, all: bool) -> Result<Vec<Route>> {
        let req = ListRoutesRequest {
            family: family.to_string(),
            all,
        };
        let r = self.call(
            "ListRoutes",
            |mut c| async move { c.list_routes(req).await },
        )?;
        Ok(r.routes)
    }

    /// The best path for `prefix`, if any.
    pub fn best_route(&self, prefix: IpNet) -> Result<Option<Route>> {
        let family = match prefix {
            IpNet::V4(_) => "ipv4",
            IpNet::V6(_) => "ipv6",
        };
        Ok(self
            .routes(family, false)?
            .into_iter()
            .find(|r| r.prefix.parse::<IpNet>().ok() == Some(prefix)))
    }

    /// Waits until the peer at `address` is Established.
    pub fn wait_established(&self, address: IpAddr, timeout: Duration) -> Result<Peer> {
        wait_for(
            &format!("margay-bgpd {}: peer {address} Established", self.name),
            timeout,
            &[self],
            || match self.peer(address) {
                Ok(Some(p)) if p.state == "Established" => Ok(p),
                Ok(Some(p)) => Err(format!("{} (last error: {:?})", p.state, p.last_error)),
                Ok(None) => Err(format!("no peer {address}")),
                Err(e) => Err(e.to_string()),
            },
        )
    }

    /// Checks that the peer at `address` never reports Established during `period`.
    pub fn never_established(&self, address: IpAddr, period: Duration) -> Result<()> {
        holds_for(
            &format!("margay-bgpd {}: peer {address} not Established", self.name),
            period,
            &[self],
            || match self.peer(address) {
                Ok(Some(p)) if p.state == "Established" => Err(format!("{p:?}")),
                Ok(Some(_)) => Ok(()),
                Ok(None) => Err(format!("no peer {address}")),
                Err(e) => Err(e.to_string()),
            },
        )
    }

    /// Waits until the best path for `prefix` satisfies `check` (which says what is wrong).
    pub fn wait_route(
        &self,
        prefix: IpNet,
        timeout: Duration,
        check: impl FnMut(&Route) -> Result<(), String>,
    ) -> Result<Route> {
        wait_for_route(
            &format!("margay-bgpd {}: route {prefix}", self.name),
            timeout,
            &[self],
            || self.best_route(prefix),
            check,
        )
    }

    /// Waits until the best path for `prefix` is a learned route with next hop `next_hop`.
    pub fn wait_route_via(
        &self,
        prefix: IpNet,
        next_hop: IpAddr,
        timeout: Duration,
    ) -> Result<Route> {
        self.wait_route(prefix, timeout, |r| {
            if r.local {
                Err("locally originated".into())
            } else if r.next_hop.parse::<IpAddr>().ok() != Some(next_hop) {
                Err(format!("next hop is not {next_hop}"))
            } else {
                Ok(())
            }
        })
    }

    /// Waits until it has no path for `prefix`.
    pub fn wait_no_route(&self, prefix: IpNet, timeout: Duration) -> Result<()> {
        wait_for_no_route(
            &format!("margay-bgpd {}: no route {prefix}", self.name),
            timeout,
            &[self],
            || self.best_route(prefix),
        )
    }
}

impl HasLogs for Bgpd {
    fn log_tails(&self) -> String {
        self.process.log_tails()
    }
}

/// A tonic channel over margay-bgpd's unix socket.
pub async fn connect_unix(path: &Path) -> Result<Channel> {
    Ok(margay_common::uds::channel(path, Duration::from_secs(5)).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_config_with_neighbors_after_top_level_keys() {
        let mut c = BgpdConfig::new("10.99.1.1".parse().unwrap(), 65000)
            .cluster_id("1.1.1.1".parse().unwrap())
            .originate("10.100.0.0/26".parse().unwrap())
            .neighbor(
                BgpdNeighbor::new("10.99.1.2".parse().unwrap(), 65000)
                    .rr_client()
                    .password("pw")
                    .next_hop(NextHopMode::MySelf),
            );
        c.socket = "/tmp/x/m1.sock".into();
        let text = c.render().unwrap();
        let v: toml::Table = text.parse().unwrap();
        assert_eq!(v["router-id"].as_str(), Some("10.99.1.1"));
        assert_eq!(v["asn"].as_integer(), Some(65000));
        assert_eq!(v["listen-port"].as_integer(), Some(179));
        assert_eq!(v["socket"].as_str(), Some("/tmp/x/m1.sock"));
        assert_eq!(v["cluster-id"].as_str(), Some("1.1.1.1"));
        assert_eq!(
            v["originate"].as_array().unwrap()[0].as_str(),
            Some("10.100.0.0/26")
        );
        assert!(v.get("http-port").is_none());
        let n = &v["neighbors"].as_array().unwrap()[0];
        assert_eq!(n["address"].as_str(), Some("10.99.1.2"));
        assert_eq!(n["route-reflector-client"].as_bool(), Some(true));
        assert_eq!(n["password"].as_str(), Some("pw"));
        assert_eq!(n["next-hop"].as_str(), Some("self"));
        assert_eq!(n["hold-time"].as_integer(), Some(9));
        assert_eq!(n["connect-retry"].as_integer(), Some(1));
        assert_eq!(n["passive"].as_bool(), Some(false));
        assert!(n.get("port").is_none());
    }

    /// A stand-in server for the transport check below: answers `ListPeers` with one peer.
    /// It checks the driver's unix-socket plumbing only; the daemon is tested for real by the
    /// interop suites.
    struct OnePeer;

    #[tonic::async_trait]
    impl margay_proto::bgp::v1::bgp_server::Bgp for OnePeer {
        async fn get_info(
            &self,
            _: tonic::Request<GetInfoRequest>,
        ) -> Result<tonic::Response<Info>, tonic::Status> {
            Err(tonic::Status::unimplemented("test server"))
        }
        async fn list_peers(
            &self,
            _: tonic::Request<ListPeersRequest>,
        ) -> Result<tonic::Response<margay_proto::bgp::v1::ListPeersResponse>, tonic::Status>
        {
            Ok(tonic::Response::new(
                margay_proto::bgp::v1::ListPeersResponse {
                    peers: vec![Peer {
                        address: "10.99.0.2".into(),
                        state: "Established".into(),
                        ..Default::default()
                    }],
                },
            ))
        }
        async fn list_routes(
            &self,
            _: tonic::Request<ListRoutesRequest>,
        ) -> Result<tonic::Response<margay_proto::bgp::v1::ListRoutesResponse>, tonic::Status>
        {
            Err(tonic::Status::unimplemented("test server"))
        }
        type WatchRoutesStream =
            tokio_stream::Empty<Result<margay_proto::bgp::v1::RouteEvent, tonic::Status>>;
        async fn watch_routes(
            &self,
            _: tonic::Request<margay_proto::bgp::v1::WatchRoutesRequest>,
        ) -> Result<tonic::Response<Self::WatchRoutesStream>, tonic::Status> {
            Err(tonic::Status::unimplemented("test server"))
        }
        async fn originate(
            &self,
            _: tonic::Request<margay_proto::bgp::v1::OriginateRequest>,
        ) -> Result<tonic::Response<margay_proto::bgp::v1::OriginateResponse>, tonic::Status>
        {
            Err(tonic::Status::unimplemented("test server"))
        }
        async fn withdraw(
            &self,
            _: tonic::Request<margay_proto::bgp::v1::WithdrawRequest>,
        ) -> Result<tonic::Response<margay_proto::bgp::v1::WithdrawResponse>, tonic::Status>
        {
            Err(tonic::Status::unimplemented("test server"))
        }
        async fn set_originated(
            &self,
            _: tonic::Request<margay_proto::bgp::v1::SetOriginatedRequest>,
        ) -> Result<tonic::Response<margay_proto::bgp::v1::SetOriginatedResponse>, tonic::Status>
        {
            Err(tonic::Status::unimplemented("test server"))
        }
    }

    #[tokio::test]
    async fn client_reaches_grpc_server_over_unix_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bgpd.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(margay_proto::bgp::v1::bgp_server::BgpServer::new(OnePeer))
                .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
        );
        let mut client = BgpClient::new(connect_unix(&path).await.unwrap());
        let peers = client
            .list_peers(ListPeersRequest {})
            .await
            .unwrap()
            .into_inner()
            .peers;
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].address, "10.99.0.2");
        let err = client.get_info(GetInfoRequest {}).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unimplemented);
        server.abort();
    }

    #[tokio::test]
    async fn connecting_to_missing_socket_fails_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.sock");
        let err = connect_unix(&path).await.unwrap_err().to_string();
        assert!(err.contains("absent.sock"), "{err}");
    }

    #[test]
    fn missing_binary_error_says_how_to_build_it() {
        // SAFETY: no other test of this binary reads or writes MARGAY_BIN_DIR.
        unsafe { std::env::set_var(BIN_DIR_ENV, "/nonexistent-margay-bin") };
        let err = bgpd_binary().unwrap_err().to_string();
        unsafe { std::env::remove_var(BIN_DIR_ENV) };
        assert!(err.contains("/nonexistent-margay-bin/margay-bgpd"), "{err}");
        assert!(err.contains("cargo build -p margay-bgp"), "{err}");
    }
}
