//! `margayctl`: the operator's command line for margay.

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use margay_common::uds::channel as unix_channel;
use margay_ctl::get::GetOutput;
use margay_ctl::ipam::ReleaseTarget;
use margay_ctl::resources::Action;
use margay_ctl::status;
use margay_datastore::{EtcdArgs, Store};
use margay_proto::bgp::v1 as pb;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// The largest ListRoutes answer `node routes` reads: room for several full Internet tables.
const ROUTES_MESSAGE_LIMIT: usize = 1 << 30;

#[derive(Parser)]
#[command(name = "margayctl", version, about = "Inspect and configure margay")]
struct Cli {
    #[command(flatten)]
    etcd: EtcdArgs,
    #[command(flatten)]
    log: margay_common::LogArgs,
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
    /// Create or update the resources in a file.
    Apply {
        /// YAML or JSON file, multi-document allowed; `-` reads stdin.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// Namespace for namespaced resources that name none (default: `default`).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
    },
    /// Create the resources in a file (fails if one exists).
    Create {
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        #[arg(short = 'n', long)]
        namespace: Option<String>,
    },
    /// Replace the resources in a file (fails if one does not exist).
    Replace {
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        #[arg(short = 'n', long)]
        namespace: Option<String>,
    },
    /// Delete the resources in a file, or one resource by kind and name.
    Delete {
        #[arg(short = 'f', long = "filename", conflicts_with_all = ["kind", "name"])]
        file: Option<PathBuf>,
        /// Kind (`ippool`, `bgppeers`, ...), with NAME.
        #[arg(requires = "name")]
        kind: Option<String>,
        name: Option<String>,
        /// Namespace of a namespaced kind (WorkloadEndpoint, NetworkPolicy).
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },
    /// List resources of a kind, or show one.
    Get {
        /// Kind: nodes, bgpconfigurations, bgppeers, bgpfilters, ippools, workloadendpoints,
        /// felixconfigurations, networkpolicies, globalnetworkpolicies, tiers, profiles,
        /// networkpolicies.networking.k8s.io (singular, CamelCase and calicoctl's short names
        /// also accepted).
        kind: String,
        name: Option<String>,
        /// ps (default table), wide, yaml or json.
        #[arg(short, long, value_enum, default_value = "ps")]
        output: GetOutput,
        /// The namespace of a namespaced kind (default: `default`).
        #[arg(short = 'n', long, conflicts_with = "all_namespaces")]
        namespace: Option<String>,
        /// Every namespace of a namespaced kind.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// IP address management.
    Ipam {
        #[command(subcommand)]
        command: IpamCommand,
    },
    /// The datastore as a whole.
    Datastore {
        #[command(subcommand)]
        command: DatastoreCommand,
    },
    /// Set (`key=value`) or remove (`key-`) labels of a workload endpoint, or of a namespace
    /// (its `kns.<namespace>` profile).
    Label(margay_ctl::label::LabelArgs),
    /// Network policy.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Whether a flow is allowed, and the tier, policy and rule that decided it.
    Explain(margay_ctl::explain::ExplainArgs),
    /// Every pod to every pod on one port: allowed (.) or denied (X).
    Matrix(margay_ctl::matrix::MatrixArgs),
}

#[derive(Subcommand)]
enum DatastoreCommand {
    /// Import another datastore.
    Migrate {
        #[command(subcommand)]
        command: MigrateCommand,
    },
}

#[derive(Subcommand)]
enum MigrateCommand {
    /// Import a Calico cluster's etcd datastore: its resources and IPAM, every address kept.
    FromCalico(margay_ctl::migrate::FromCalicoArgs),
}

#[derive(Subcommand)]
enum IpamCommand {
    /// Address usage per pool (and per block), or the IPAM configuration.
    Show {
        #[arg(long)]
        show_blocks: bool,
        /// The IPAM configuration (`ipam configure`) instead of usage.
        #[arg(long)]
        show_configuration: bool,
        /// Addresses nodes borrowed from other nodes' blocks.
        #[arg(long)]
        show_borrowed: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Find leaked addresses and claims.
    Check {
        #[arg(long)]
        json: bool,
    },
    /// Change the IPAM configuration (as `calicoctl ipam configure`; the grace periods are
    /// margay's: how long a leak, an empty block or a silent node waits before collection).
    Configure {
        /// No borrowing: a node's addresses come only from its own blocks.
        #[arg(long = "strictaffinity", alias = "strict-affinity")]
        strict_affinity: Option<bool>,
        /// Most blocks one node may hold (0: no limit).
        #[arg(long)]
        max_blocks_per_host: Option<u32>,
        /// Whether a node claims new blocks when its own are full.
        #[arg(long)]
        auto_allocate_blocks: Option<bool>,
        /// e.g. 15m: how long an allocation must look leaked before felix releases it.
        #[arg(long)]
        leak_grace_period: Option<String>,
        /// e.g. 15m: how long an empty block stays with its node (when it has room elsewhere).
        #[arg(long)]
        empty_block_grace_period: Option<String>,
        /// e.g. 1h: how long a node's liveness lease must have expired before its IPAM goes.
        #[arg(long)]
        node_grace_period: Option<String>,
    },
    /// Split the IP pool with CIDR into NUMBER (a power of two) equal pools (`split-<name>-<i>`,
    /// each keeping the pool's other fields); addresses in use stay.
    Split { cidr: String, number: u32 },
    /// Free an address, a handle's addresses, or a deleted node's blocks.
    Release {
        #[arg(long, group = "what", required = true)]
        ip: Option<IpAddr>,
        #[arg(long, group = "what")]
        handle: Option<String>,
        /// Release the block affinities of this (deleted) node.
        #[arg(long, group = "what")]
        node: Option<String>,
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
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // Migrating from Calico, its ETCD_* variables name Calico's etcd, not margay's.
    if !matches!(cli.command, Command::Datastore { .. }) {
        cli.etcd.apply_calico_env(&matches);
    }
    // Logs go to stderr and default to warnings only: stdout is the command's output.
    if let Err(e) = cli.log.init("warn") {
        eprintln!("margayctl: {e}");
        return ExitCode::from(2);
    }
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
    if let Some(code) = run_datastore(&cli.etcd, &cli.command).await? {
        return Ok(code);
    }
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
            // ListRoutes answers with the whole RIB in one message: ~55 bytes a route, so
            // tonic's default 4 MiB limit failed from ~80,000 routes.
            let mut client = pb::bgp_client::BgpClient::new(channel)
                .max_decoding_message_size(ROUTES_MESSAGE_LIMIT);
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
        _ => unreachable!("datastore commands are handled by run_datastore"),
    }
}

/// The commands that talk to etcd; `None` for the others.
async fn run_datastore(etcd: &EtcdArgs, command: &Command) -> anyhow::Result<Option<ExitCode>> {
    let connect = || async {
        let at = || format!("connecting to etcd at {}", etcd.endpoints.join(","));
        let store = Store::connect(etcd).await.with_context(at)?;
        store.revision().await.with_context(at)?;
        anyhow::Ok(store)
    };
    match command {
        Command::Node { .. } => return Ok(None),
        Command::Datastore {
            command:
                DatastoreCommand::Migrate {
                    command: MigrateCommand::FromCalico(args),
                },
        } => {
            margay_ctl::migrate::from_calico(etcd, args, &mut std::io::stdout()).await?;
        }
        Command::Apply { file, namespace }
        | Command::Create { file, namespace }
        | Command::Replace { file, namespace } => {
            let action = match command {
                Command::Apply { .. } => Action::Apply,
                Command::Create { .. } => Action::Create,
                _ => Action::Replace,
            };
            let resources = margay_ctl::resources::read_resources(file, namespace.as_deref())?;
            margay_ctl::resources::run(&connect().await?, action, &resources).await?;
        }
        Command::Label(args) => margay_ctl::label::run(&connect().await?, args).await?,
        Command::Policy {
            command: PolicyCommand::Explain(args),
        } => {
            let allowed = margay_ctl::explain::run(&connect().await?, args).await?;
            if !allowed && args.exit_code {
                return Ok(Some(ExitCode::from(1)));
            }
        }
        Command::Policy {
            command: PolicyCommand::Matrix(args),
        } => margay_ctl::matrix::run(&connect().await?, args).await?,
        Command::Delete {
            file,
            kind,
            name,
            namespace,
        } => match (file, kind, name) {
            (Some(f), _, _) => {
                let resources = margay_ctl::resources::read_resources(f, Some(namespace))?;
                margay_ctl::resources::run(&connect().await?, Action::Delete, &resources).await?;
            }
            (None, Some(k), Some(n)) => {
                margay_ctl::resources::delete_by_name(&connect().await?, k, n, namespace).await?;
            }
            _ => anyhow::bail!("give -f FILE, or KIND NAME"),
        },
        Command::Get {
            kind,
            name,
            output,
            namespace,
            all_namespaces,
        } => {
            let ns = match (all_namespaces, namespace) {
                (true, _) => None,
                (false, n) => Some(n.as_deref().unwrap_or("default")),
            };
            margay_ctl::get::run(&connect().await?, kind, name.as_deref(), ns, *output).await?;
        }
        Command::Ipam { command } => {
            let store = connect().await?;
            match command {
                IpamCommand::Show {
                    show_configuration: true,
                    json,
                    ..
                } => margay_ctl::ipam::show_configuration(&store, *json).await?,
                IpamCommand::Show {
                    show_borrowed: true,
                    json,
                    ..
                } => margay_ctl::ipam::show_borrowed(&store, *json).await?,
                IpamCommand::Show {
                    show_blocks, json, ..
                } => margay_ctl::ipam::show(&store, *show_blocks, *json).await?,
                IpamCommand::Split { cidr, number } => {
                    margay_ctl::ipam::split(&store, cidr, *number).await?
                }
                IpamCommand::Configure {
                    strict_affinity,
                    max_blocks_per_host,
                    auto_allocate_blocks,
                    leak_grace_period,
                    empty_block_grace_period,
                    node_grace_period,
                } => {
                    let change = margay_ctl::ipam::ConfigChange {
                        strict_affinity: *strict_affinity,
                        max_blocks_per_host: *max_blocks_per_host,
                        auto_allocate_blocks: *auto_allocate_blocks,
                        leak_grace_period: leak_grace_period.clone(),
                        empty_block_grace_period: empty_block_grace_period.clone(),
                        node_grace_period: node_grace_period.clone(),
                    };
                    margay_ctl::ipam::configure(&store, change).await?
                }
                IpamCommand::Check { json } => margay_ctl::ipam::check(&store, *json).await?,
                IpamCommand::Release { ip, handle, node } => {
                    let target = match (ip, handle, node) {
                        (Some(ip), _, _) => ReleaseTarget::Ip(*ip),
                        (_, Some(h), _) => ReleaseTarget::Handle(h.clone()),
                        (_, _, Some(n)) => ReleaseTarget::Node(n.clone()),
                        _ => anyhow::bail!("give --ip, --handle or --node"),
                    };
                    margay_ctl::ipam::release(&store, target).await?
                }
            }
        }
    }
    Ok(Some(ExitCode::SUCCESS))
}
