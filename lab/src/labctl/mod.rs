//! `margay-lab`, the local lab command: `up` builds a cluster in network namespaces (etcd,
//! margay-bgpd and margay-felix on every node from the datastore, a BIRD ToR, pods made through
//! the CNI plugin) and reports on it, `status` reports on a kept lab again, `down` removes it.
//! The binary only parses flags; everything it does is here.

pub mod cluster;
pub mod down;
pub mod error;
pub mod etcd_section;
pub mod fabric;
pub mod health;
pub mod join;
pub mod ping;
pub mod pods;
pub mod policy;
pub mod progress;
pub mod report;
pub mod restart;
pub mod rollback;
pub mod simulated;
pub mod state;
pub mod takeover;
pub mod topology;

use std::path::PathBuf;
use std::time::Duration;

pub use cluster::{Cluster, Stop};
pub use error::LabCtlError;
pub use state::{LabState, state_path};
pub use topology::{IpFamily, Mode, PoolMode, Spec};

use progress::{Progress, catch_interrupts};
use report::Tools;
use topology::{NODE_AS, PODS_PER_NODE, TOR_AS};

/// What `margay-lab up` was asked to do.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub spec: Spec,
    /// Leave the lab running and record it in `state_file`.
    pub keep: bool,
    /// How long to wait for the sessions and routes.
    pub timeout: Duration,
    pub state_file: PathBuf,
    /// Calico nodes beside margay's (calico-node's BIRD and pods; `--calico-nodes`).
    pub calico_nodes: usize,
    /// Simulated nodes beside the real ones (`--simulated`, [`simulated`]).
    pub simulated: usize,
    /// etcd's gRPC proxies in front of etcd (`--etcd-proxies`); the real nodes' daemons talk
    /// to them, spread evenly, instead of to etcd.
    pub etcd_proxies: u8,
}

/// Fails with a hint unless `program` is on `PATH`.
fn require_program(program: &str) -> Result<(), LabCtlError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|d| d.join(program).is_file()) {
        Ok(())
    } else {
        Err(LabCtlError::Usage(format!(
            "`{program}` is not on PATH; install the lab's packages with scripts/install-deps.sh"
        )))
    }
}

/// Fails up front when the pool mode needs a kernel module this machine cannot load (IPIP's
/// `ipip`), instead of half-building a lab whose pods cannot reach each other.
fn require_kernel_support(pool_mode: PoolMode) -> Result<(), LabCtlError> {
    if pool_mode != PoolMode::Ipip {
        return Ok(());
    }
    let out = std::process::Command::new("modprobe").arg("ipip").output();
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(LabCtlError::Usage(format!(
            "--pool-mode ipip needs the kernel's ipip module, and `modprobe ipip` failed: {}; \
             use --pool-mode vxlan (or cross-subnet), which need no module beyond vxlan",
            String::from_utf8_lossy(&o.stderr).trim()
        ))),
        Err(e) => Err(LabCtlError::Usage(format!(
            "--pool-mode ipip needs the kernel's ipip module; could not run modprobe: {e}"
        ))),
    }
}

/// `margay-lab up`: build, wait, report, then tear down or keep.
pub fn up(opts: &UpOptions) -> Result<(), LabCtlError> {
    catch_interrupts();
    let spec = opts.spec;
    spec.validate()?;
    topology::Plan::validate_calico(&spec, opts.calico_nodes)?;
    simulated::validate(&spec, opts.simulated, opts.calico_nodes)?;
    crate::netns::require_root()?;
    for p in ["ip", "bird", "birdc", "ping", "curl", "sysctl"] {
        require_program(p)?;
    }
    require_kernel_support(spec.pool_mode)?;
    crate::bgpd::bgpd_binary()?;
    crate::felix::felix_binary()?;
    pods::plugin_binary()?;
    if !std::path::Path::new(crate::etcd::ETCD_BINARY).is_file() {
        return Err(LabCtlError::Usage(format!(
            "etcd is not at {}; install the lab's packages with scripts/install-deps.sh",
            crate::etcd::ETCD_BINARY
        )));
    }
    let tools = Tools::locate()?;
    if let Some(s) = LabState::load(&opts.state_file)? {
        return Err(LabCtlError::AlreadyRunning {
            tag: s.name_prefix(),
            path: opts.state_file.clone(),
        });
    }

    println!(
        "margay-lab: {} node(s) in AS {NODE_AS} ({}), pool {} ({}), {}, \
         {PODS_PER_NODE} pods per node",
        spec.nodes,
        match (spec.no_bgp, spec.mode) {
            (true, _) => "no BGP: networking backend vxlan, felix routes from IPAM",
            (false, Mode::Mesh) => "node-to-node mesh",
            (false, Mode::RouteReflectors) => "node1 is the route reflector",
        },
        match spec.ip_family {
            IpFamily::Ipv4 => topology::POOL_CIDR.to_string(),
            IpFamily::Ipv6 => format!("{} (IPv6 only)", topology::POOL6_CIDR),
            IpFamily::Dual => format!("{} and {}", topology::POOL_CIDR, topology::POOL6_CIDR),
        },
        match spec.pool_mode {
            PoolMode::Never => "no encapsulation",
            PoolMode::Vxlan => "VXLAN",
            PoolMode::Ipip => "IP-in-IP",
            PoolMode::CrossSubnet => "VXLAN across racks only, two racks routed by the ToR",
        },
        if spec.no_bgp {
            "a ToR that only routes between the racks".to_string()
        } else {
            format!("a BIRD ToR in AS {TOR_AS}")
        }
    );
    if opts.calico_nodes > 0 {
        println!(
            "            and {} Calico node(s) (calico-node's BIRD, one pod each) in the mesh",
            opts.calico_nodes
        );
    }
    if opts.simulated > 0 {
        println!(
            "            and {} simulated node(s): a Node and a block each in etcd, a light BGP \
             speaker each on an address in {}, all in one process",
            opts.simulated,
            crate::sim::fleet::SIM_SUBNET
        );
    }
    if spec.tors == 2 {
        println!(
            "            dual-homed: every node also on its own link to a second BIRD ToR in AS \
             {}, BFD {} x {} ms on every ToR session, no mesh, each remote block over both ToRs",
            topology::TOR2_AS,
            topology::TOR_BFD.2,
            topology::TOR_BFD.0
        );
    }
    let mut progress = Progress::new(
        if spec.no_bgp { 12 } else { 14 }
            + usize::from(opts.calico_nodes > 0)
            + usize::from(opts.simulated > 0)
            + usize::from(opts.etcd_proxies > 0),
    );
    let mut cluster = progress.step(
        &format!("creating {} namespaces", Cluster::namespace_count(&spec)),
        || Cluster::create_mixed(spec, opts.calico_nodes),
    )?;
    println!(
        "      lab mg{}: configs, sockets and logs in {}",
        cluster.tag(),
        cluster.dir().display()
    );
    // Recorded from the start and after every step, so `margay-lab down` removes what a
    // crashed `up` left behind.
    let built = cluster
        .record(&opts.state_file)
        .and_then(|()| build(&mut progress, &mut cluster, opts, &tools));
    match built {
        Ok(()) => {}
        Err(e @ LabCtlError::Interrupted) => {
            cluster.teardown();
            LabState::remove(&opts.state_file)?;
            return Err(e);
        }
        Err(e) => {
            let dir = cluster.teardown_keeping_logs();
            LabState::remove(&opts.state_file)?;
            eprintln!(
                "margay-lab: removed the lab; its configs and logs are in {}",
                dir.display()
            );
            return Err(e);
        }
    }

    if opts.keep {
        let path = opts.state_file.clone();
        progress.step(
            &format!("keeping the lab running (state in {})", path.display()),
            || cluster.into_kept(&path),
        )?;
        println!("margay-lab status   reports on it again");
        println!("margay-lab down     removes it");
    } else {
        progress.step("tearing down (use --keep to leave it running)", || {
            cluster.teardown();
            LabState::remove(&opts.state_file)
        })?;
    }
    Ok(())
}

/// The steps of `up` after the namespaces exist: wiring, etcd and the model, daemons, pods,
/// convergence, the report. The report is printed also when convergence fails, to show what
/// each daemon sees.
fn build(
    progress: &mut Progress,
    cluster: &mut Cluster,
    opts: &UpOptions,
    tools: &Tools,
) -> Result<(), LabCtlError> {
    let spec = opts.spec;
    let subnets: Vec<String> = cluster
        .plan()
        .racks
        .iter()
        .map(|s| s.v4.to_string())
        .collect();
    let wiring = format!(
        "connecting {} nodes and the ToR to {} ({})",
        spec.nodes,
        if subnets.len() == 1 {
            "the switch"
        } else {
            "two racks"
        },
        subnets.join(", ")
    );
    progress.step(&wiring, || cluster.wire())?;
    cluster.record(&opts.state_file)?;
    let etcd_at = cluster.plan().etcd.ip4();
    progress.step(&format!("starting etcd on {etcd_at}"), || {
        cluster.start_etcd()
    })?;
    cluster.record(&opts.state_file)?;
    if opts.etcd_proxies > 0 {
        let proxies = format!(
            "starting {} etcd gRPC proxies (etcd grpc-proxy start) on {etcd_at}:{}..: the \
             nodes' daemons watch through them, so etcd holds one watch per prefix per proxy",
            opts.etcd_proxies,
            crate::etcd_proxy::FIRST_PORT
        );
        progress.step(&proxies, || cluster.start_etcd_proxies(opts.etcd_proxies))?;
        cluster.record(&opts.state_file)?;
    }
    let model = match spec.mode {
        Mode::Mesh => "IPPool, BGPConfiguration, BGPPeer for the ToR",
        Mode::RouteReflectors => {
            "IPPool, BGPConfiguration (no mesh), BGPPeers for the ToR and the reflector"
        }
    };
    progress.step(&format!("margayctl apply: {model}"), || {
        cluster.apply_model()
    })?;
    if opts.calico_nodes > 0 {
        let calico = format!(
            "starting {} Calico node(s): BIRD on confd's configuration, pods wired as Calico \
             wires them, Calico's keys imported (margayctl datastore migrate from-calico)",
            opts.calico_nodes
        );
        progress.step(&calico, || cluster.start_calico_nodes())?;
        cluster.record(&opts.state_file)?;
    }
    if opts.simulated > 0 {
        let sims = format!(
            "starting {} simulated nodes (margay-lab simulate: Nodes, blocks and affinities in \
             etcd, a speaker on each address)",
            opts.simulated
        );
        progress.step(&sims, || {
            cluster.start_simulated(opts.simulated, opts.timeout)
        })?;
        cluster.record(&opts.state_file)?;
    }
    if !spec.no_bgp {
        progress.step(&format!("starting BIRD on the ToR (AS {TOR_AS})"), || {
            cluster.start_tor()
        })?;
        cluster.record(&opts.state_file)?;
        progress.step(
            &format!("starting {} margay-bgpd (--datastore etcd)", spec.nodes),
            || cluster.start_bgpds(),
        )?;
        cluster.record(&opts.state_file)?;
    }
    let labels = match spec.mode {
        Mode::Mesh => "margayctl apply: Nodes with their rack label",
        Mode::RouteReflectors => {
            "margayctl apply: Nodes with their rack label, node1 with its cluster id"
        }
    };
    progress.step(labels, || cluster.label_nodes())?;
    cluster.record(&opts.state_file)?;
    let felixes = if spec.no_bgp {
        format!(
            "starting {} margay-felix (--networking-backend vxlan: no bgpd)",
            spec.nodes
        )
    } else {
        format!("starting {} margay-felix (--etcd-endpoints)", spec.nodes)
    };
    progress.step(&felixes, || cluster.start_felixes())?;
    cluster.record(&opts.state_file)?;
    let simulated_sessions = match spec.mode {
        Mode::Mesh => opts.simulated * spec.nodes,
        Mode::RouteReflectors => opts.simulated,
    };
    let waiting = format!(
        "waiting for {} BGP sessions{} and {} felix ready (up to {} s)",
        cluster.plan().session_count(),
        if simulated_sessions > 0 {
            format!(" (and {simulated_sessions} with simulated nodes)")
        } else {
            String::new()
        },
        spec.nodes,
        opts.timeout.as_secs()
    );
    let sessions = progress.step(&waiting, || cluster.wait_sessions(opts.timeout));
    let converged = match sessions {
        Ok(_) => {
            progress.step(
                &format!(
                    "creating {} pods through the CNI plugin (CNI_COMMAND=ADD)",
                    cluster.plan().pods.len()
                ),
                || cluster.create_pods(),
            )?;
            cluster.record(&opts.state_file)?;
            let waiting = format!(
                "waiting for routes to every pod and every ping to answer (up to {} s)",
                opts.timeout.as_secs()
            );
            progress.step(&waiting, || cluster.wait_converged(opts.timeout))
        }
        Err(e) => Err(e),
    };
    let state = cluster.state();
    let report = progress.step("gathering the report", || {
        Ok::<_, LabCtlError>(report::render(&state, tools))
    })?;
    print!("{report}");
    print!("{}", policy::report_section(&state));
    let matrix = progress.step("ping matrix (3 pings per pair, all at once)", || {
        Ok::<_, LabCtlError>(ping::matrix(&state, 3))
    })?;
    println!("\n==== ping matrix ====");
    print!("{}", ping::render(&state, &matrix));
    match converged {
        Ok(health) => {
            println!("\n{}\n", health.summary(&state));
            Ok(())
        }
        Err(e) => {
            println!();
            Err(e)
        }
    }
}

/// `margay-lab status`: the report on a kept lab. `Ok(true)` when it has converged,
/// `Ok(false)` when something is missing or no lab is running.
pub fn status(state_file: &std::path::Path) -> Result<bool, LabCtlError> {
    let Some(state) = LabState::load(state_file)? else {
        println!(
            "no lab is running (no {}); start one with `margay-lab up --keep`",
            state_file.display()
        );
        return Ok(false);
    };
    let tools = Tools::locate()?;
    println!(
        "margay-lab: lab {} ({} node(s), {}, pool mode {}), configs and logs in {}",
        state.name_prefix(),
        state.nodes.len(),
        state.mode,
        state.pool_mode,
        state.dir.display()
    );
    let dead: Vec<String> = state
        .processes()
        .into_iter()
        .filter(|p| !down::alive(p.pid))
        .map(|p| format!("{} (PID {})", p.name, p.pid))
        .collect();
    if !dead.is_empty() {
        println!("not running: {}", dead.join(", "));
    }
    if let Some(sim) = &state.simulated {
        println!(
            "simulated: {} node(s) served by margay-lab simulate (PID {})",
            sim.count, sim.pid
        );
    }
    print!("{}", report::render(&state, &tools));
    print!("{}", policy::report_section(&state));
    let matrix = ping::matrix(&state, 3);
    println!("\n==== ping matrix ====");
    print!("{}", ping::render(&state, &matrix));
    let health = health::check(&state)?;
    println!("\n{}", health.summary(&state));
    Ok(health.converged() && dead.is_empty() && matrix.iter().all(|r| r.reached()))
}

/// `margay-lab down`: removes a kept lab; with none recorded, says so and succeeds.
pub fn down(state_file: &std::path::Path) -> Result<(), LabCtlError> {
    let Some(state) = LabState::load(state_file)? else {
        println!(
            "no lab is running (no {}); nothing to remove",
            state_file.display()
        );
        return Ok(());
    };
    crate::netns::require_root()?;
    println!("margay-lab: removing lab {}", state.name_prefix());
    let mut progress = Progress::new(4);
    progress.step(
        &format!("stopping {} daemons", state.processes().len()),
        || Ok::<_, LabCtlError>(down::stop_processes(&state)),
    )?;
    progress.step(
        &format!("deleting {} namespaces", state.namespaces().len()),
        || down::delete_namespaces(&state),
    )?;
    progress.step(&format!("removing {}", state.dir.display()), || {
        down::remove_dir(&state)
    })?;
    progress.step(&format!("removing {}", state_file.display()), || {
        down::remove_state(state_file)
    })?;
    Ok(())
}
