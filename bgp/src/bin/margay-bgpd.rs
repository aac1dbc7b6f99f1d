//! `margay-bgpd`: the BGP-4 speaker daemon. Parses flags, loads the configuration, and wires the
//! speaker, the gRPC API and the health server together; SIGHUP reloads, SIGTERM closes sessions
//! with a Cease NOTIFICATION and removes the socket.

use anyhow::Context;
use clap::Parser;
use margay_bgp::config::Config;
use margay_bgp::speaker::Speaker;
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tracing::{error, info, warn};

/// How long API and HTTP clients get to finish when the daemon stops.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Parser, Debug)]
#[command(
    name = "margay-bgpd",
    version,
    about = "margay's BGP-4 speaker: node mesh, route reflection, external peers"
)]
struct Args {
    /// The TOML configuration file (router-id, asn, neighbors, ...).
    #[arg(long, env = "MARGAY_BGPD_CONFIG")]
    config: PathBuf,
    /// Check the configuration file and exit: 0 when valid, 2 with the line and field at fault.
    #[arg(long)]
    check: bool,
    /// Override the configuration's gRPC unix socket path.
    #[arg(long, env = "MARGAY_BGPD_SOCKET")]
    socket: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long, env = "MARGAY_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Log filter (tracing's env-filter syntax), e.g. info or margay_bgp=debug.
    #[arg(long, env = "MARGAY_LOG_LEVEL", default_value = "info")]
    log_level: String,
}

fn init_logging(format: &str, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level).unwrap_or_else(|_| "info".into());
    // Colours only for a person at a terminal; a log file or a container log gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn load(args: &Args) -> anyhow::Result<Config> {
    let mut config = Config::load(&args.config)?;
    if let Some(s) = &args.socket {
        config.socket = s.clone();
    }
    Ok(config)
}

fn main() {
    let args = Args::parse();
    let config = match load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("margay-bgpd: {e}");
            std::process::exit(2);
        }
    };
    if args.check {
        println!(
            "{}: configuration is valid ({} neighbors)",
            args.config.display(),
            config.neighbors.len()
        );
        return;
    }
    init_logging(&args.log_format, &args.log_level);
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("margay-bgpd: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(args, config)) {
        error!("{e:#}");
        eprintln!("margay-bgpd: {e:#}");
        std::process::exit(1);
    }
}

async fn run(args: Args, config: Config) -> anyhow::Result<()> {
    info!(router_id = %config.router_id(), asn = config.asn(), neighbors = config.neighbors.len(), "starting margay-bgpd");
    let socket = config.socket.clone();
    let http =
        (config.http_port != 0).then(|| SocketAddr::new(config.http_address, config.http_port));
    let (speaker, task) = Speaker::start(config).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let api = tokio::spawn({
        let speaker = speaker.clone();
        let shutdown = stopped(stop_rx.clone());
        let socket = socket.clone();
        async move { margay_bgp::api::serve(&socket, speaker, shutdown).await }
    });
    info!(socket = %socket.display(), "gRPC API listening");
    let http_task = http.map(|addr| {
        let speaker = speaker.clone();
        let shutdown = stopped(stop_rx.clone());
        info!(%addr, "health and metrics listening");
        tokio::spawn(async move {
            if let Err(e) = margay_bgp::http::serve(addr, speaker, shutdown).await {
                error!(%addr, error = %e, "health and metrics server failed");
            }
        })
    });

    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    loop {
        tokio::select! {
            _ = hup.recv() => match load(&args) {
                Ok(new) => match speaker.reload(new).await {
                    Ok(s) => info!(added = ?s.added, removed = ?s.removed, restarted = ?s.restarted, unchanged = s.unchanged, "reloaded {}", args.config.display()),
                    Err(e) => error!("reload failed: {e}"),
                },
                Err(e) => warn!("configuration not reloaded, keeping the running one: {e:#}"),
            },
            _ = term.recv() => { info!("SIGTERM: closing sessions"); break; }
            _ = int.recv() => { info!("SIGINT: closing sessions"); break; }
        }
    }
    let _ = speaker.shutdown().await;
    let _ = stop_tx.send(true);
    let _ = task.await;
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
