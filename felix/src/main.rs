//! `margay-felix`: parses flags, and wires the dataplane loop, the model's source (cluster
//! mode: datastore + bgpd; standalone: a state file), the HTTP server and the signals together.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser};
use margay_felix::agent::{Agent, AgentConfig};
use margay_felix::health::{Health, Metrics, router};
use margay_felix::model::Model;
use margay_felix::reconcile::{DEFAULT_PROTOCOL, ReconcileConfig};
use margay_felix::{cluster, endpoints};
use tokio::signal::unix::{SignalKind, signal};

/// margay's node agent (route programmer).
///
/// CLUSTER MODE (default): the inputs come from etcd (IP pools, Nodes, this node's workload
/// endpoints and block affinities) and from margay-bgpd over its socket (learned routes);
/// felix tells bgpd which prefixes this node originates and manages its tunnel addresses.
///
/// STANDALONE MODE (--state FILE): the inputs are read from a JSON or YAML file, re-read on
/// SIGHUP (tests and the lab). Run felix inside the node's network namespace.
#[derive(Debug, Parser)]
#[command(name = "margay-felix", version)]
struct Args {
    /// This node's name: its Node resource (must match `node.name` in a state file).
    #[arg(long, env = "NODENAME")]
    node: String,
    /// Standalone mode: the model file (JSON or YAML), re-read on SIGHUP.
    #[arg(long, env = "MARGAY_FELIX_STATE")]
    state: Option<PathBuf>,
    #[command(flatten)]
    etcd: margay_datastore::EtcdArgs,
    /// felix's own gRPC socket: the CNI plugin's API (`margay.felix.v1`, cluster mode), mode
    /// 0600, removed on exit.
    #[arg(
        long,
        env = "MARGAY_FELIX_SOCKET",
        default_value = "/var/run/margay/felix.sock"
    )]
    socket: PathBuf,
    /// margay-bgpd's gRPC socket (cluster mode).
    #[arg(
        long,
        env = "MARGAY_BGPD_SOCKET",
        default_value = "/var/run/margay/bgpd.sock"
    )]
    bgpd_socket: PathBuf,
    /// A uid besides root allowed to use felix's socket (checked on every connection with the
    /// client's peer credentials).
    #[arg(long, env = "MARGAY_SOCKET_ALLOWED_UID")]
    socket_allowed_uid: Option<u32>,
    /// Port of the /liveness, /readiness and /metrics server (0: no server).
    #[arg(long, env = "MARGAY_FELIX_HTTP_PORT", default_value_t = 9099)]
    http_port: u16,
    /// Address the HTTP server listens on.
    #[arg(
        long = "http-address",
        alias = "http-addr",
        env = "MARGAY_FELIX_HTTP_ADDRESS",
        default_value = "127.0.0.1"
    )]
    http_addr: std::net::IpAddr,
    /// Route protocol number felix marks (and only ever touches) its routes with.
    #[arg(long, env = "MARGAY_FELIX_ROUTE_PROTOCOL", default_value_t = DEFAULT_PROTOCOL)]
    route_protocol: u8,
    /// Route protocols whose routes felix takes over where it wants a route (`calico`: what
    /// calico-node leaves, boot,bird,80; numbers or iproute2 names); none by default.
    #[arg(long, env = "MARGAY_FELIX_ADOPT_ROUTE_PROTOCOLS", default_value = "")]
    adopt_route_protocols: margay_felix::reconcile::adopt::ProtocolSet,
    /// Routing table felix programs.
    #[arg(long, env = "MARGAY_FELIX_ROUTE_TABLE", default_value_t = 254)]
    route_table: u32,
    /// Seconds between full resyncs with the kernel.
    #[arg(long, env = "MARGAY_FELIX_RESYNC_INTERVAL", default_value_t = 30)]
    resync_interval: u64,
    /// MTU of a pod's interface when the CNI configuration names none.
    #[arg(
        long,
        env = "MARGAY_FELIX_WORKLOAD_MTU",
        default_value_t = margay_felix::endpoints::DEFAULT_MTU
    )]
    workload_mtu: u32,
    /// Seconds between two passes of the IPAM leak collectors (this node's own, and the
    /// cluster-wide one when this felix is elected). The grace periods are in the IPAM
    /// configuration (`margayctl ipam configure`).
    #[arg(long, env = "MARGAY_FELIX_IPAM_GC_INTERVAL", default_value_t = 60)]
    ipam_gc_interval: u64,
    /// Seconds of TTL of this node's liveness lease and of the collector's leadership lease.
    #[arg(long, env = "MARGAY_FELIX_LEASE_TTL", default_value_t = 30)]
    lease_ttl: u64,
    /// Network policy (cluster mode): `enforce` programs felix's policy table from the
    /// datastore's tiers, policies and profiles; `off` leaves the table alone.
    #[arg(long, env = "MARGAY_FELIX_POLICY", default_value = "enforce", value_parser = ["enforce", "off"])]
    policy: String,
    #[command(flatten)]
    default_pool: margay_felix::cluster::default_pool::DefaultPoolArgs,
    #[command(flatten)]
    log: margay_common::LogArgs,
    /// Where remote routes come from (calico-node's CALICO_NETWORKING_BACKEND, also read):
    /// `bird` (margay-bgpd runs beside felix), `vxlan` or `none` (no BGP: felix registers the
    /// Node and programs every remote block of a VXLAN pool from IPAM and the Nodes' VTEPs).
    #[arg(long, env = cluster::backend::MARGAY_ENV)]
    networking_backend: Option<String>,
    /// Without bgpd: this node's IPv4 address for its Node, as bgpd's --ip: ADDR/LEN, ADDR,
    /// `autodetect` or `none`.
    #[arg(long, env = "IP", default_value = "autodetect")]
    ip: String,
    /// How `--ip autodetect` chooses (bgpd's methods: first-found, can-reach=DEST, ...).
    #[arg(long, env = "IP_AUTODETECTION_METHOD", default_value = "first-found")]
    ip_autodetection_method: String,
    /// Without bgpd: this node's IPv6 address for its Node (an IPv6 or dual-stack node with an
    /// IPv6 VXLAN pool), as bgpd's --ip6: ADDR/LEN, ADDR, `autodetect` or `none` (Calico's IP6).
    #[arg(long, env = "IP6", default_value = "none")]
    ip6: String,
    /// How `--ip6 autodetect` chooses (Calico's IP6_AUTODETECTION_METHOD).
    #[arg(long, env = "IP6_AUTODETECTION_METHOD", default_value = "first-found")]
    ip6_autodetection_method: String,
}

/// The backend from the flag / MARGAY_NETWORKING_BACKEND, else CALICO_NETWORKING_BACKEND; and
/// without bgpd, the addresses (IPv4, IPv6) felix registers.
type Registered = (Option<ipnet::IpNet>, Option<ipnet::IpNet>);
fn backend_and_address(args: &Args) -> anyhow::Result<(cluster::Backend, Registered)> {
    let calico = std::env::var(cluster::backend::CALICO_ENV).ok();
    let backend = cluster::Backend::choose(args.networking_backend.as_deref(), calico.as_deref())?;
    if backend.uses_bgpd() || args.state.is_some() {
        return Ok((backend, (None, None)));
    }
    let source =
        margay_bgp::cluster::AddressSource::parse(&args.ip, &args.ip_autodetection_method)?;
    let ipv4 = margay_bgp::cluster::resolve(&source, false)?;
    let source6 =
        margay_bgp::cluster::AddressSource::parse(&args.ip6, &args.ip6_autodetection_method)?;
    let ipv6 = margay_bgp::cluster::resolve(&source6, true)?;
    Ok((backend, (ipv4, ipv6)))
}

fn read_model(path: &Path, node: &str) -> anyhow::Result<Model> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path:?}"))?;
    let model = Model::from_text(&text).with_context(|| format!("parsing {path:?}"))?;
    anyhow::ensure!(
        model.node.name == node,
        "{path:?} describes node {:?}, not {node:?}",
        model.node.name
    );
    Ok(model)
}

fn main() -> std::process::ExitCode {
    let matches = Args::command().get_matches();
    let mut args = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    args.etcd.apply_calico_env(&matches);
    if args.state.is_none()
        && let Err(e) = args.etcd.check_files()
    {
        eprintln!("margay-felix: {e}");
        return std::process::ExitCode::from(2);
    }
    if let Err(e) = args.log.init("info") {
        eprintln!("margay-felix: {e}");
        return std::process::ExitCode::from(2);
    }
    let default_pool = match args.default_pool.resource() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("margay-felix: --default-ipv4-pool-* (MARGAY_IPV4POOL_*): {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let explicit = |id: &str| {
        matches!(
            matches.value_source(id),
            Some(clap::parser::ValueSource::CommandLine | clap::parser::ValueSource::EnvVariable)
        )
    };
    let pins = Pins {
        resync: explicit("resync_interval"),
        workload_mtu: explicit("workload_mtu"),
        http: explicit("http_port") || explicit("http_addr"),
    };
    match run(args, default_pool, pins) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("margay-felix: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Which flags were given (command line or environment): they win over FelixConfiguration.
struct Pins {
    resync: bool,
    workload_mtu: bool,
    http: bool,
}

/// Binds `addr` (a host name or address and a port) and serves `app` there until aborted.
async fn serve(
    addr: &margay_felix::settings::HttpAddr,
    app: axum::Router,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind((addr.host.as_str(), addr.port))
        .await
        .with_context(|| format!("listening on {}:{}", addr.host, addr.port))?;
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    }))
}

/// Keeps the health server (and Calico's separate Prometheus server) where FelixConfiguration
/// says, from `flags` (the flags' address, `None` when the port is 0) on; a server moves only
/// once its new address is bound.
async fn follow_http(
    mut settings: tokio::sync::watch::Receiver<Option<margay_felix::settings::Settings>>,
    flags: Option<margay_felix::settings::HttpAddr>,
    mut health_server: Option<tokio::task::JoinHandle<()>>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
) {
    use margay_felix::settings::HttpAddr;
    let mut health_at = flags.clone();
    let mut prom: Option<(HttpAddr, tokio::task::JoinHandle<()>)> = None;
    while settings.changed().await.is_ok() {
        let Some(s) = settings.borrow_and_update().clone() else {
            continue;
        };
        let want = s.health.clone().or_else(|| flags.clone());
        if want != health_at
            && let Some(a) = &want
        {
            match serve(a, router(health.clone(), metrics.clone())).await {
                Ok(h) => {
                    tracing::info!(host = %a.host, port = a.port, "health server moved (FelixConfiguration)");
                    if let Some(old) = health_server.replace(h) {
                        old.abort();
                    }
                    health_at = want;
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "health server stays where it is")
                }
            }
        }
        if prom.as_ref().map(|(a, _)| a) != s.prometheus.as_ref() {
            if let Some((_, old)) = prom.take() {
                old.abort();
            }
            if let Some(a) = &s.prometheus {
                match serve(
                    a,
                    margay_felix::health::metrics_router(health.clone(), metrics.clone()),
                )
                .await
                {
                    Ok(h) => {
                        tracing::info!(host = %a.host, port = a.port, "Prometheus metrics server started (FelixConfiguration)");
                        prom = Some((a.clone(), h));
                    }
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "no Prometheus metrics server")
                    }
                }
            }
        }
    }
}

fn run(
    args: Args,
    default_pool: Option<margay_datastore::resources::IpPool>,
    pins: Pins,
) -> anyhow::Result<()> {
    let model = match &args.state {
        Some(path) => Some(read_model(path, &args.node)?),
        None => None,
    };

    let (backend, (register_ipv4, register_ipv6)) = backend_and_address(&args)?;
    let health = Arc::new(Health::new(Duration::from_secs(10)));
    let metrics = Arc::new(Metrics::new());
    let agent = Agent::spawn(
        AgentConfig {
            reconcile: ReconcileConfig {
                protocol: args.route_protocol,
                table: args.route_table,
                adopt: args.adopt_route_protocols,
            },
            resync_interval: Duration::from_secs(args.resync_interval.max(1)),
            netns: None,
        },
        health.clone(),
        metrics.clone(),
    )
    .context("opening netlink")?;
    match (&model, &args.state) {
        (Some(m), Some(path)) => {
            agent.update(m.clone());
            tracing::info!(node = args.node, state = ?path, "margay-felix started (standalone mode)");
        }
        _ => tracing::info!(
            node = args.node,
            etcd = ?args.etcd.endpoints,
            bgpd = ?args.bgpd_socket,
            backend = %backend,
            api_socket = ?args.socket,
            "margay-felix started (cluster mode)"
        ),
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async {
        let flags_http = (args.http_port != 0).then(|| margay_felix::settings::HttpAddr {
            host: args.http_addr.to_string(),
            port: args.http_port,
        });
        let health_server = match &flags_http {
            Some(a) => Some(serve(a, router(health.clone(), metrics.clone())).await?),
            None => None,
        };
        let (settings_tx, settings_rx) = tokio::sync::watch::channel(None);
        let settings_for_endpoints = settings_rx.clone();
        tokio::spawn(follow_http(
            settings_rx,
            flags_http,
            health_server,
            health.clone(),
            metrics.clone(),
        ));
        let mut hup = signal(SignalKind::hangup())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let Some(state) = args.state.clone() else {
            let (policy_sync, policy_requests) = match args.policy.as_str() {
                "off" => (None, None),
                _ => {
                    let (s, r) = cluster::policy::channel();
                    (Some(s), Some(r))
                }
            };
            let pod_mtu = Arc::new(std::sync::atomic::AtomicU32::new(0));
            let opts = cluster::Options {
                node: args.node.clone(),
                etcd: args.etcd.clone(),
                bgpd_socket: args.bgpd_socket.clone(),
                default_pool,
                gc: cluster::ipam_gc::GcTiming {
                    interval: Duration::from_secs(args.ipam_gc_interval.max(1)),
                    lease_ttl: Duration::from_secs(args.lease_ttl.max(2)),
                },
                metrics: metrics.clone(),
                route_protocol: args.route_protocol,
                resync: Duration::from_secs(args.resync_interval.max(1)),
                policy: policy_requests,
                backend,
                register_ipv4,
                register_ipv6,
                pinned: margay_felix::settings::Pinned {
                    route_refresh: pins
                        .resync
                        .then(|| Duration::from_secs(args.resync_interval.max(1))),
                    health: pins.http,
                },
                pod_mtu: (!pins.workload_mtu).then(|| pod_mtu.clone()),
                settings_out: settings_tx,
            };
            let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
            let service = endpoints::EndpointService::new(
                endpoints::Config {
                    node: args.node.clone(),
                    etcd: args.etcd.clone(),
                    protocol: args.route_protocol,
                    default_mtu: args.workload_mtu,
                    auto_mtu: (!pins.workload_mtu).then(|| pod_mtu.clone()),
                    settings: Some(settings_for_endpoints),
                },
                health.clone(),
                agent.programmed(),
            )
            .with_policy(policy_sync);
            let socket = args.socket.clone();
            let access = margay_common::SocketAccess {
                allowed_uid: args.socket_allowed_uid,
            };
            let api = tokio::spawn(async move {
                let stopped = async move {
                    let _ = stop_rx.wait_for(|s| *s).await;
                };
                if let Err(e) = endpoints::serve(&socket, service, access, stopped).await {
                    tracing::error!(error = %e, "CNI API stopped");
                }
            });
            let stop = async {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = int.recv() => {},
                }
            };
            cluster::run(opts, &agent, health.clone(), stop).await;
            let _ = stop_tx.send(true);
            // In-flight requests finish; the socket file is removed.
            let _ = tokio::time::timeout(Duration::from_secs(10), api).await;
            return anyhow::Ok(());
        };
        loop {
            tokio::select! {
                _ = hup.recv() => match read_model(&state, &args.node) {
                    Ok(m) => {
                        tracing::info!("SIGHUP: model re-read");
                        agent.update(m);
                    }
                    Err(e) => tracing::error!(error = %format!("{e:#}"), "SIGHUP: keeping the previous model"),
                },
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        anyhow::Ok(())
    })?;
    // Stop the feeds before the dataplane loop.
    drop(rt);
    tracing::info!("stopping; routes stay in place");
    agent.stop().context("stopping the dataplane loop")?;
    Ok(())
}
