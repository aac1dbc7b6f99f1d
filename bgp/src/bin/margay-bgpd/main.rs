//! `margay-bgpd`: the BGP-4 speaker daemon. Parses flags, loads the configuration, and wires the
//! speaker, the gRPC API and the health server together; SIGHUP reloads; SIGTERM stops
//! gracefully (RFC 4724: peers that negotiated graceful restart keep our routes; those with the
//! N bit of RFC 8538 get a Cease and still keep them, the others without graceful restart get
//! Cease); SIGINT, or SIGTERM with `--no-graceful-stop`, sends a final Cease (a Hard Reset to
//! N-bit peers) to every peer.

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser};
use margay_bgp::config::Config;
use margay_bgp::speaker::Speaker;
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tracing::{error, info, warn};

/// How long API and HTTP clients get to finish when the daemon stops.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// The health and metrics port in cluster mode when no flag names one (calico-node's BIRD
/// exporter's neighbour).
const DEFAULT_HTTP_PORT: u16 = 9179;

#[derive(Parser, Debug)]
#[command(
    name = "margay-bgpd",
    version,
    about = "margay's BGP-4 speaker: node mesh, route reflection, external peers",
    long_about = "margay's BGP-4 speaker: node mesh, route reflection, external peers.\n\n\
        Two modes: with --config FILE it runs the sessions the TOML file lists (SIGHUP reloads \
        it); with --datastore etcd --node NAME it registers the node's address in its Node \
        resource and builds its sessions from the cluster model (Nodes, BGPPeers, \
        BGPConfiguration), following every change live. Flags that calico-node users know \
        (NODENAME, IP, IP_AUTODETECTION_METHOD, AS) are read from the same environment variables."
)]
struct Args {
    /// The TOML configuration file (router-id, asn, neighbors, ...).
    #[arg(
        long,
        env = "MARGAY_BGPD_CONFIG",
        required_unless_present = "datastore",
        conflicts_with = "datastore"
    )]
    config: Option<PathBuf>,
    /// Check the configuration file and exit: 0 when valid, 2 with the line and field at fault.
    #[arg(long, requires = "config")]
    check: bool,
    /// Build sessions from the cluster model in this datastore (cluster mode).
    #[arg(long, env = "MARGAY_DATASTORE", value_parser = ["etcd"])]
    datastore: Option<String>,
    /// This node's name: its Node resource (cluster mode).
    #[arg(long, env = "NODENAME", required_if_eq("datastore", "etcd"))]
    node: Option<String>,
    /// This node's IPv4 BGP address: ADDR/LEN, ADDR, `autodetect` or `none` (cluster mode).
    #[arg(long, env = "IP", default_value = "autodetect")]
    ip: String,
    /// How `--ip autodetect` chooses: first-found, can-reach=DEST, interface=REGEX,
    /// skip-interface=REGEX, cidr=CIDR[,CIDR].
    #[arg(long, env = "IP_AUTODETECTION_METHOD", default_value = "first-found")]
    ip_autodetection_method: String,
    /// This node's IPv6 BGP address: ADDR/LEN, ADDR, `autodetect` or `none` (cluster mode).
    #[arg(long, env = "IP6", default_value = "none")]
    ip6: String,
    /// How `--ip6 autodetect` chooses (same methods as for IPv4).
    #[arg(long, env = "IP6_AUTODETECTION_METHOD", default_value = "first-found")]
    ip6_autodetection_method: String,
    /// This node's AS, written into its Node resource (cluster mode; the cluster's otherwise).
    #[arg(long = "as", env = "AS")]
    asn: Option<u32>,
    /// The BGP identifier (cluster mode): an IPv4 address, or `hash` (from the node's name, as
    /// calico-node's CALICO_ROUTER_ID=hash). Default: the node's IPv4 address, or the hash on
    /// an IPv6-only node.
    #[arg(long, env = "CALICO_ROUTER_ID", default_value = "")]
    router_id: margay_bgp::cluster::RouterIdSource,
    #[command(flatten)]
    etcd: margay_datastore::EtcdArgs,
    /// The gRPC unix socket (overrides the file's `socket`; default /var/run/margay/bgpd.sock).
    /// Mode 0600; only root connects, whatever the file's mode.
    #[arg(long, env = "MARGAY_BGPD_SOCKET")]
    socket: Option<PathBuf>,
    /// A uid besides root allowed to use the gRPC socket (checked on every connection with the
    /// client's peer credentials).
    #[arg(long, env = "MARGAY_SOCKET_ALLOWED_UID")]
    socket_allowed_uid: Option<u32>,
    /// Address BGP connections are accepted on (cluster mode; `::` is IPv4 and IPv6).
    #[arg(long, env = "MARGAY_BGPD_LISTEN_ADDRESS", default_value = "::")]
    listen_address: std::net::IpAddr,
    /// Cluster mode: where the Secrets that BGP passwords name by `secretKeyRef` are mounted,
    /// Secret NAME at DIR/NAME/ (its key KEY is the file DIR/NAME/KEY).
    #[arg(long, env = "MARGAY_SECRETS_DIR", default_value = margay_bgp::cluster::DEFAULT_SECRETS_DIR)]
    secrets_dir: PathBuf,
    /// Address of the /liveness, /readiness and /metrics server (overrides the file's
    /// `http_address`; default 127.0.0.1).
    #[arg(long, env = "MARGAY_BGPD_HTTP_ADDRESS")]
    http_address: Option<std::net::IpAddr>,
    /// Port of the /liveness, /readiness and /metrics server, 0 for none (overrides the file's
    /// `http_port`; default 9179).
    #[arg(long, env = "MARGAY_BGPD_HTTP_PORT")]
    http_port: Option<u16>,
    /// On SIGTERM, send Cease to every peer (peers drop our routes at once) instead of a
    /// graceful restart's stop. SIGINT always does this.
    #[arg(long, env = "MARGAY_BGPD_NO_GRACEFUL_STOP")]
    no_graceful_stop: bool,
    /// Longest End-of-RIB waits after start for felix to say what this node originates, in
    /// seconds (0: at once); never longer than the restart time. Overrides the file's
    /// `originate-wait`, where setting it makes End-of-RIB wait for felix too. Default in
    /// cluster mode: 30.
    #[arg(long, env = "MARGAY_BGPD_ORIGINATE_WAIT", value_parser = clap::value_parser!(u16).range(0..=4095))]
    originate_wait: Option<u16>,
    #[command(flatten)]
    log: margay_common::LogArgs,
    /// Threads that run the sessions, the API and the datastore watch: 1 runs them all on the
    /// main thread (the least memory: no worker threads' stacks and malloc arenas; BFD keeps
    /// its own thread), 0 one per core.
    #[arg(long, env = "MARGAY_BGPD_WORKER_THREADS", default_value_t = 1)]
    worker_threads: usize,
    /// Bytes (roughly) of UPDATEs owed to peers that are behind above which the speaker stops
    /// reading its sessions until they catch up (TCP then holds the senders back).
    #[arg(long, env = "MARGAY_BGPD_OUTBOX_LIMIT", default_value_t = margay_bgp::speaker::DEFAULT_OUTBOX_LIMIT)]
    outbox_limit: usize,
    /// Seconds the sessions get to close (NOTIFICATIONs sent, sockets shut) after SIGTERM or
    /// SIGINT before the daemon exits anyway; keep it below the pod's termination grace.
    #[arg(long, env = "MARGAY_BGPD_STOP_LIMIT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    stop_limit: u64,
}

/// The async runtime: one thread, or a pool of `threads` workers (0: one per core).
fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if threads > 1 {
            b.worker_threads(threads);
        }
        b
    };
    builder.enable_all().build()
}

fn load(args: &Args) -> anyhow::Result<Config> {
    let path = args.config.as_ref().context("no --config file")?;
    let mut config = Config::load(path)?;
    if let Some(s) = &args.socket {
        config.socket = s.clone();
    }
    if let Some(a) = args.http_address {
        config.http_address = a;
    }
    if let Some(p) = args.http_port {
        config.http_port = p;
    }
    set_originate_wait(&mut config, args);
    Ok(config)
}

/// `--originate-wait` over the file's (or cluster mode's default).
fn set_originate_wait(config: &mut Config, args: &Args) {
    if let Some(w) = args.originate_wait {
        config.originate_wait = Some(toml::Spanned::new(0..0, w));
    }
}

/// The command line, with Calico's etcd variables filling what it left unset.
fn parse_args() -> Args {
    let matches = Args::command().get_matches();
    let mut args = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    args.etcd.apply_calico_env(&matches);
    args
}

fn main() {
    let args = parse_args();
    if args.datastore.is_some()
        && let Err(e) = args.etcd.check_files()
    {
        eprintln!("margay-bgpd: {e}");
        std::process::exit(2);
    }
    let config = match &args.config {
        Some(path) => match load(&args) {
            Ok(c) => {
                if args.check {
                    println!(
                        "{}: configuration is valid ({} neighbors)",
                        path.display(),
                        c.neighbors.len()
                    );
                    return;
                }
                Some(c)
            }
            Err(e) => {
                eprintln!("margay-bgpd: {e:#}");
                std::process::exit(2);
            }
        },
        None => None,
    };
    if let Err(e) = args.log.init("info") {
        eprintln!("margay-bgpd: {e}");
        std::process::exit(2);
    }
    let rt = match runtime(args.worker_threads) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("margay-bgpd: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let res = rt.block_on(run(args, config));
    // Tasks still running (sessions past the stop limit) are dropped; a blocking call in
    // flight (a name lookup) gets a moment, never an unbounded wait.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    if let Err(e) = res {
        error!("{e:#}");
        eprintln!("margay-bgpd: {e:#}");
        std::process::exit(1);
    }
}

/// Cluster mode's settings from the flags.
fn cluster_options(args: &Args) -> anyhow::Result<margay_bgp::cluster::Options> {
    use margay_bgp::cluster::{AddressSource, Local, Options};
    Ok(Options {
        local: Local {
            node: args
                .node
                .clone()
                .context("--node (or NODENAME) is required in cluster mode")?,
            socket: args
                .socket
                .clone()
                .unwrap_or_else(|| margay_bgp::config::DEFAULT_SOCKET.into()),
            http_address: args
                .http_address
                .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into()),
            http_port: args.http_port.unwrap_or(DEFAULT_HTTP_PORT),
            listen_address: args.listen_address,
            secrets_dir: args.secrets_dir.clone(),
            connect_retry: 5,
            hold_time: 90,
            router_id: args.router_id,
        },
        etcd: args.etcd.clone(),
        ipv4: AddressSource::parse(&args.ip, &args.ip_autodetection_method)?,
        ipv6: AddressSource::parse(&args.ip6, &args.ip6_autodetection_method)?,
        asn: args.asn,
    })
}

async fn run(args: Args, config: Option<Config>) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let (config, cluster) = match config {
        Some(c) => (c, None),
        None => {
            let (mut c, follow) = margay_bgp::cluster::start(cluster_options(&args)?).await?;
            set_originate_wait(&mut c, &args);
            (c, Some(follow))
        }
    };
    info!(router_id = %config.router_id(), asn = config.asn(), neighbors = config.neighbors.len(), "starting margay-bgpd");
    let socket = config.socket.clone();
    let http =
        (config.http_port != 0).then(|| SocketAddr::new(config.http_address, config.http_port));
    let tuning = margay_bgp::speaker::Tuning {
        outbox_limit: args.outbox_limit,
    };
    // The neighbours move into the speaker: the planner keeps its own list (issue 12).
    let (speaker, task) = Speaker::start_tuned(config, tuning).await?;
    let ready = margay_bgp::http::Readiness {
        etcd_down: cluster.as_ref().map(|f| f.etcd_down()),
    };
    let follower = cluster.map(|f| {
        let speaker = speaker.clone();
        let shutdown = stopped(stop_rx.clone());
        tokio::spawn(f.run(speaker, shutdown))
    });

    let api = tokio::spawn({
        let speaker = speaker.clone();
        let shutdown = stopped(stop_rx.clone());
        let socket = socket.clone();
        let access = margay_common::SocketAccess {
            allowed_uid: args.socket_allowed_uid,
        };
        async move { margay_bgp::api::serve(&socket, speaker, access, shutdown).await }
    });
    info!(socket = %socket.display(), "gRPC API listening");
    let http_task = http.map(|addr| {
        let speaker = speaker.clone();
        let shutdown = stopped(stop_rx.clone());
        info!(%addr, "health and metrics listening");
        tokio::spawn(async move {
            if let Err(e) = margay_bgp::http::serve(addr, speaker, ready, shutdown).await {
                error!(%addr, error = %e, "health and metrics server failed");
            }
        })
    });

    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let graceful = loop {
        tokio::select! {
            _ = hup.recv() => if args.config.is_none() {
                info!("SIGHUP: in cluster mode the sessions follow the datastore; nothing to reload");
            } else { match load(&args) {
                Ok(new) => match speaker.reload(new).await {
                    Ok(s) => info!(added = ?s.added, removed = ?s.removed, restarted = ?s.restarted, unchanged = s.unchanged, "configuration file reloaded"),
                    Err(e) => error!("reload failed: {e}"),
                },
                Err(e) => warn!("configuration not reloaded, keeping the running one: {e:#}"),
            }},
            _ = term.recv() => {
                if args.no_graceful_stop {
                    info!("SIGTERM: closing sessions with Cease (--no-graceful-stop)");
                    break false;
                }
                info!("SIGTERM: graceful restart stop; peers with graceful restart keep our routes");
                break true;
            }
            _ = int.recv() => { info!("SIGINT: closing sessions with Cease"); break false; }
        }
    };
    let _ = stop_tx.send(true);
    let stop = async {
        if let Some(f) = follower {
            let _ = f.await;
        }
        let _ = if graceful {
            speaker.graceful_shutdown().await
        } else {
            speaker.shutdown().await
        };
        let _ = task.await;
    };
    // The NOTIFICATIONs to every peer and the sessions' ends normally take milliseconds (0.12 s
    // with 999 peers); on a starved machine they may not, and a stop must still be bounded (a
    // DaemonSet pod has 30 s before SIGKILL). Peers that miss the NOTIFICATION see the TCP
    // connection close, and with graceful restart keep the routes as for any restart.
    let stop_limit = std::time::Duration::from_secs(args.stop_limit);
    if tokio::time::timeout(stop_limit, stop).await.is_err() {
        warn!(
            limit = ?stop_limit,
            "the sessions did not all close within the stop limit; stopping anyway"
        );
    }
    // In-flight API calls get a moment to finish; an idle or stuck client connection must not
    // hold the daemon (and a DaemonSet pod's termination) open.
    match tokio::time::timeout(DRAIN, api).await {
        Ok(Ok(Err(e))) => warn!("gRPC API: {e}"),
        Ok(_) => {}
        Err(_) => warn!("gRPC clients still connected after {DRAIN:?}; closing anyway"),
    }
    if let Some(h) = http_task
        && tokio::time::timeout(DRAIN, h).await.is_err()
    {
        warn!("HTTP clients still connected after {DRAIN:?}; closing anyway");
    }
    let _ = std::fs::remove_file(&socket);
    info!("margay-bgpd stopped");
    Ok(())
}
