//! `margayctl`: the operator's command line for margay.

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use margay_ctl::connect::unix_channel;
use margay_ctl::status;
use margay_proto::bgp::v1 as pb;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "margayctl", version, about = "Inspect and configure margay")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// This node's daemons.
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
    Yaml,
}

#[derive(Subcommand)]
enum NodeCommand {
    /// The BGP peer table of this node's margay-bgpd.
    Status {
        /// margay-bgpd's gRPC socket.
        #[arg(
            long,
            env = "MARGAY_BGPD_SOCKET",
            default_value = "/var/run/margay/bgpd.sock"
        )]
        socket: PathBuf,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// The routes margay-bgpd holds: best paths, or every path with --all.
    Routes {
        #[arg(
            long,
            env = "MARGAY_BGPD_SOCKET",
            default_value = "/var/run/margay/bgpd.sock"
        )]
        socket: PathBuf,
        /// ipv4 or ipv6 (both when omitted).
        #[arg(long, default_value = "")]
        family: String,
        /// Every path, not only the best.
        #[arg(long)]
        all: bool,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("margayctl: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("margayctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Node {
            command: NodeCommand::Status { socket, output },
        } => {
            let channel = match unix_channel(&socket, Duration::from_secs(3)).await {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("margay-bgpd is not running ({e}).");
                    return Ok(ExitCode::FAILURE);
                }
            };
            let mut client = pb::bgp_client::BgpClient::new(channel);
            let info = client
                .get_info(pb::GetInfoRequest {})
                .await
                .context("asking margay-bgpd")?
                .into_inner();
            let peers = client
                .list_peers(pb::ListPeersRequest {})
                .await
                .context("asking margay-bgpd")?
                .into_inner()
                .peers;
            let s = status::build(&info, &peers, chrono::Local::now());
            match output {
                Output::Table => print!("{}", status::render_text(&s)),
                Output::Json => println!("{}", serde_json::to_string_pretty(&s)?),
                Output::Yaml => print!("{}", serde_norway::to_string(&s)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Node {
            command:
                NodeCommand::Routes {
                    socket,
                    family,
                    all,
                    output,
                },
        } => {
            let channel = unix_channel(&socket, Duration::from_secs(3))
                .await
                .map_err(|e| anyhow::anyhow!("margay-bgpd is not running ({e})"))?;
            let mut client = pb::bgp_client::BgpClient::new(channel);
            let routes = client
                .list_routes(pb::ListRoutesRequest { family, all })
                .await?
                .into_inner()
                .routes;
            match output {
                Output::Table => print!("{}", margay_ctl::status::render_routes(&routes)),
                Output::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&margay_ctl::status::route_rows(&routes))?
                ),
                Output::Yaml => print!(
                    "{}",
                    serde_norway::to_string(&margay_ctl::status::route_rows(&routes))?
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
