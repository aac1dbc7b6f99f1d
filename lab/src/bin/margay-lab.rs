//! `margay-lab`: the local lab (`up`, `status`, `node add|remove`, `down`). Parses flags; the
//! work is in `margay_lab::labctl`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use margay_lab::labctl::{self, IpFamily, Mode, PoolMode, Spec, UpOptions};

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

#[derive(Clone, Copy, ValueEnum)]
enum IpFamilyArg {
    /// IPv4 pods and BGP sessions.
    Ipv4,
    /// IPv6 only: the Nodes have no IPv4 BGP address, pods only an IPv6 address.
    Ipv6,
    /// Dual-stack: both pools, both addresses per pod, a session per family.
    Dual,
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
        /// Calico nodes beside margay's, as in a cluster moving from Calico: BIRD on the
        /// configuration calico-node's confd renders, a pod wired as Calico wires it, their
        /// keys in Calico's etcd layout imported with `margayctl datastore migrate
        /// from-calico`. Needs --mode mesh and --pool-mode never; with --ip-family dual
        /// they run bird6 too and their pods have IPv6 addresses.
        #[arg(long, default_value_t = 0)]
        calico_nodes: usize,
        /// ToRs per node: 2 wires every node to a second BIRD ToR on its own link (plane b),
        /// BFD at 3 x 100 ms on every ToR session, and routes each remote block over both as
        /// one multipath route (no mesh; needs --pool-mode never).
        #[arg(long, default_value_t = 1)]
        tors: usize,
        /// The pods' and BGP's address families (ipv6 and dual run with --pool-mode never, vxlan
        /// or cross-subnet: IPv6 VXLAN through vxlan-v6.margay).
        #[arg(long, value_enum, default_value = "ipv4")]
        ip_family: IpFamilyArg,
        /// Calico's `vxlan` networking backend: no margay-bgpd and no BGP at the ToR; felix
        /// registers each Node and routes the VXLAN pool's blocks from IPAM (needs
        /// --pool-mode vxlan or cross-subnet).
        #[arg(long)]
        no_bgp: bool,
        /// Simulated nodes beside the real ones (up to 1,000): each a Node with its address and
        /// an IPAM block in etcd and a light BGP speaker (the lab's own, not margay's) that
        /// peers as the model says, announces its block and records what it receives; all of
        /// them in one process and one namespace. Needs --pool-mode never.
        #[arg(long, default_value_t = 0)]
        simulated: usize,
        /// etcd's gRPC proxies (`etcd grpc-proxy`, up to 20) in front of etcd: the nodes'
        /// bgpd and felix talk to them, spread evenly, and each proxy holds one watch on etcd
        /// per prefix however many daemons watch it (what Typha does for Calico). 0: the
        /// daemons talk to etcd itself.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=20))]
        etcd_proxies: u8,
    },
    /// Serve a lab's simulated nodes (started by `up --simulated` inside their namespace).
    #[command(hide = true)]
    Simulate {
        #[arg(long)]
        etcd: String,
        #[arg(long)]
        count: usize,
        #[arg(long)]
        pool: ipnet::Ipv4Net,
        #[arg(long)]
        asn: u32,
        #[arg(long)]
        status_file: PathBuf,
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
    /// Network policy in the kept lab.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Apply a policy file (NetworkPolicy, GlobalNetworkPolicy, Tier, Profile, Kubernetes
    /// NetworkPolicy; namespaced ones without a namespace go to the pods' `default`).
    Apply { file: PathBuf },
    /// Set (`key=value`) or remove (`key-`) labels of a pod.
    Label {
        pod: String,
        #[arg(required = true)]
        labels: Vec<String>,
    },
    /// Why a flow is allowed or denied (`margayctl policy explain`).
    Explain {
        from: String,
        to: String,
        /// `80/tcp`, `53/udp`, `icmp`.
        #[arg(long, default_value = "80/tcp")]
        port: String,
    },
    /// Every pod to every pod under the policies (`margayctl policy matrix`).
    Matrix {
        #[arg(long, default_value = "80/tcp")]
        port: String,
    },
}

/// How `node migrate` stops calico-node's BIRD.
#[derive(Clone, Copy, ValueEnum)]
enum BirdStopArg {
    Kill,
    Term,
}

#[derive(Subcommand)]
enum NodeCommand {
    /// A node joins: its namespace on rack a, margay-bgpd and margay-felix, its Node and its
    /// pods; prints start -> ready, first pod -> routed everywhere, and the ToR's session with
    /// it (from the ToR's BGP listen range). On a --tors 2 lab: a link to each ToR and a BFD
    /// session on each, both ToRs reconfigured in place.
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
    /// A Calico node (`up --calico-nodes`) moves to margay as the README's runbook says: its
    /// BIRD killed, margay-bgpd started as the same speaker, margay-felix adopting Calico's
    /// routes; its pod pings every other pod at 100/s throughout. Exit status 1 if a ping
    /// was lost.
    Migrate {
        name: String,
        /// Seconds to wait for felix to own every route in the pool.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        /// How BIRD goes: `kill` (SIGKILL, the runbook's way: peers keep the routes) or `term`
        /// (SIGTERM, as a plain pod deletion: BIRD's Cease makes peers drop them).
        #[arg(long, value_enum, default_value = "kill")]
        bird_stop: BirdStopArg,
    },
    /// A node `node migrate` moved from Calico goes back as the README's runbook says:
    /// margay-felix and margay-bgpd stopped by SIGTERM, their routes handed to BIRD in
    /// place, Calico felix's pod routes and BIRD (-R) back, then `ip route flush proto 81`;
    /// its pod pings every other pod at 100/s throughout. Exit status 1 if a ping was lost.
    Rollback {
        name: String,
        /// Seconds to wait for every BIRD session to be Established.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        /// Skip the handover of margay's routes to BIRD (for comparison: BIRD cannot add
        /// its routes over them, and the flush then removes the node's routes).
        #[arg(long)]
        no_handover: bool,
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
            calico_nodes,
            tors,
            ip_family,
            no_bgp,
            simulated,
            etcd_proxies,
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
                tors,
                ip_family: match ip_family {
                    IpFamilyArg::Ipv4 => IpFamily::Ipv4,
                    IpFamilyArg::Ipv6 => IpFamily::Ipv6,
                    IpFamilyArg::Dual => IpFamily::Dual,
                },
                no_bgp,
            },
            keep,
            timeout: Duration::from_secs(timeout),
            state_file: cli.state_file,
            calico_nodes,
            simulated,
            etcd_proxies,
        })
        .map(|()| true),
        Command::Simulate {
            etcd,
            count,
            pool,
            asn,
            status_file,
        } => {
            let opts = margay_lab::sim::fleet::ServeOptions {
                etcd,
                count,
                pool,
                asn,
                status_file,
            };
            return match margay_lab::sim::fleet::serve(&opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("margay-lab simulate: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
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
        Command::Node {
            command:
                NodeCommand::Migrate {
                    name,
                    timeout,
                    bird_stop,
                },
        } => labctl::takeover::node_migrate(
            &cli.state_file,
            &name,
            match bird_stop {
                BirdStopArg::Kill => labctl::takeover::BirdStop::Kill,
                BirdStopArg::Term => labctl::takeover::BirdStop::Term,
            },
            Duration::from_secs(timeout),
        )
        .map(|m| {
            print!("{}", labctl::takeover::render_migrated(&m));
            labctl::takeover::lossless(&m)
        }),
        Command::Node {
            command:
                NodeCommand::Rollback {
                    name,
                    timeout,
                    no_handover,
                },
        } => labctl::rollback::node_rollback(
            &cli.state_file,
            &name,
            !no_handover,
            Duration::from_secs(timeout),
        )
        .map(|r| {
            print!("{}", labctl::rollback::render_rolled_back(&r));
            labctl::rollback::lossless(&r)
        }),
        Command::Down => labctl::down(&cli.state_file).map(|()| true),
        Command::Policy { command } => {
            let f = &cli.state_file;
            match command {
                PolicyCommand::Apply { file } => labctl::policy::apply(f, &file),
                PolicyCommand::Label { pod, labels } => labctl::policy::label(f, &pod, &labels),
                PolicyCommand::Explain { from, to, port } => {
                    labctl::policy::explain(f, &from, &to, &port)
                }
                PolicyCommand::Matrix { port } => labctl::policy::matrix(f, &port),
            }
            .map(|out| {
                print!("{out}");
                true
            })
        }
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
