//! `margay-lab`: the local lab (`up`, `status`, `node add|remove`, `down`). Parses flags; the
//! work is in `margay_lab::labctl`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use margay_lab::labctl::{self, Mode, PoolMode, Spec, UpOptions};

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

#[derive(Clone, Copy, ValueEnum)]
enum PoolModeArg {
    /// No encapsulation: routes to other nodes' blocks go via the node's address.
    Never,
    /// VXLAN between nodes (vxlanMode: Always).
    Vxlan,
    /// IP-in-IP between nodes (ipipMode: Always); needs the kernel's ipip module.
    Ipip,
    /// Two racks routed by the ToR: direct within a rack, VXLAN between racks
    /// (vxlanMode: CrossSubnet).
    CrossSubnet,
}

#[derive(Subcommand)]
enum Command {
    /// Build the lab (etcd, margay-bgpd and margay-felix per node, a BIRD ToR, pods through
    /// the CNI plugin), wait for it to converge, print every node's view and a ping matrix;
    /// then remove it (or keep it with --keep).
    Up {
        /// Number of nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// How the nodes peer.
        #[arg(long, value_enum, default_value = "mesh")]
        mode: ModeArg,
        /// How pod traffic crosses between nodes (the IPPool's ipipMode / vxlanMode). The
        /// default, never, is plain routing on the shared segment: what BGP announces is
        /// exactly what the kernel forwards, and it needs no kernel module.
        #[arg(long, value_enum, default_value = "never")]
        pool_mode: PoolModeArg,
        /// Leave the lab running (`margay-lab status`, `margay-lab down`).
        #[arg(long)]
        keep: bool,
        /// Seconds to wait for the sessions, then again for the routes and pings.
        #[arg(long, default_value_t = 90)]
        timeout: u64,
        /// Calico's `vxlan` networking backend: no margay-bgpd and no BGP at the ToR; felix
        /// registers each Node and routes the VXLAN pool's blocks from IPAM (needs
        /// --pool-mode vxlan or cross-subnet).
        #[arg(long)]
        no_bgp: bool,
    },
    /// Report on the kept lab again (exit status 1 unless it has converged).
    Status,
    /// Add a node to the kept lab, or remove one, while it runs.
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Remove the kept lab: processes, namespaces (with their links), the directory (logs,
    /// etcd's data), the state file.
    Down,
}

#[derive(Subcommand)]
enum NodeCommand {
    /// A node joins: its namespace on rack a, margay-bgpd and margay-felix, its Node and its
    /// pods; prints start -> ready, first pod -> routed everywhere, and the ToR's session with
    /// it (from the ToR's BGP listen range).
    Add {
        /// Its name (default: the next free nodeN).
        name: Option<String>,
        /// Seconds to wait for its pods to be routed everywhere.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// A node leaves: its Node is deleted, its daemons stop, its pods and namespaces go;
    /// prints Node deletion -> gone everywhere.
    Remove {
        name: String,
        /// Seconds to wait until no kernel routes to it.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.command {
        Command::Up {
            nodes,
            mode,
            pool_mode,
            keep,
            timeout,
            no_bgp,
        } => labctl::up(&UpOptions {
            spec: Spec {
                nodes,
                mode: match mode {
                    ModeArg::Mesh => Mode::Mesh,
                    ModeArg::RouteReflectors => Mode::RouteReflectors,
                },
                pool_mode: match pool_mode {
                    PoolModeArg::Never => PoolMode::Never,
                    PoolModeArg::Vxlan => PoolMode::Vxlan,
                    PoolModeArg::Ipip => PoolMode::Ipip,
                    PoolModeArg::CrossSubnet => PoolMode::CrossSubnet,
                },
                no_bgp,
            },
            keep,
            timeout: Duration::from_secs(timeout),
            state_file: cli.state_file,
        })
        .map(|()| true),
        Command::Status => labctl::status(&cli.state_file),
        Command::Node {
            command: NodeCommand::Add { name, timeout },
        } => labctl::join::node_add(
            &cli.state_file,
            name.as_deref(),
            Duration::from_secs(timeout),
        )
        .map(|j| {
            print!("{}", labctl::join::render_joined(&j));
            true
        }),
        Command::Node {
            command: NodeCommand::Remove { name, timeout },
        } => labctl::join::node_remove(&cli.state_file, &name, Duration::from_secs(timeout)).map(
            |l| {
                print!("{}", labctl::join::render_left(&l));
                true
            },
        ),
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
