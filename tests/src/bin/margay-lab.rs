//! `margay-lab`: the local lab (`up`, `status`, `down`). Parses flags; the work is in
//! `margay_tests::labctl`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use margay_tests::labctl::{self, Mode, Spec, UpOptions};

#[derive(Parser)]
#[command(
    name = "margay-lab",
    version,
    about = "A margay cluster in network namespaces on this machine (needs root)"
)]
struct Cli {
    /// Where a kept lab is recorded.
    #[arg(
        long,
        global = true,
        env = labctl::state::STATE_ENV,
        default_value = labctl::state::DEFAULT_STATE_FILE
    )]
    state_file: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    /// Every node peers with every other node.
    Mesh,
    /// node1 reflects routes for the other nodes.
    RouteReflectors,
}

#[derive(Subcommand)]
enum Command {
    /// Build the lab, wait for BGP to converge, print every node's view; then remove it
    /// (or keep it with --keep).
    Up {
        /// Number of nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// How the nodes peer.
        #[arg(long, value_enum, default_value = "mesh")]
        mode: ModeArg,
        /// Also IPv6: a block per node and an IPv6 session to the ToR.
        #[arg(long)]
        ipv6: bool,
        /// Leave the lab running (`margay-lab status`, `margay-lab down`).
        #[arg(long)]
        keep: bool,
        /// Seconds to wait for every session and route.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Report on the kept lab again (exit status 1 unless it has converged).
    Status,
    /// Remove the kept lab: processes, namespaces, directory, state file.
    Down,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.command {
        Command::Up {
            nodes,
            mode,
            ipv6,
            keep,
            timeout,
        } => labctl::up(&UpOptions {
            spec: Spec {
                nodes,
                mode: match mode {
                    ModeArg::Mesh => Mode::Mesh,
                    ModeArg::RouteReflectors => Mode::RouteReflectors,
                },
                ipv6,
            },
            keep,
            timeout: Duration::from_secs(timeout),
            state_file: cli.state_file,
        })
        .map(|()| true),
        Command::Status => labctl::status(&cli.state_file),
        Command::Down => labctl::down(&cli.state_file).map(|()| true),
    };
    match res {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("margay-lab: {e}");
            ExitCode::FAILURE
        }
    }
}
