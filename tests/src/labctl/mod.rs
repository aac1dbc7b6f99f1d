//! `margay-lab`, the local lab command: `up` builds a cluster of nodes in network namespaces
//! (margay-bgpd on each, a BIRD ToR) and reports on it, `status` reports on a kept lab again,
//! `down` removes it. The binary only parses flags; everything it does is here.
//!
//! For now the lab is BGP only (issue 2); felix, etcd and pods become further steps of
//! [`cluster::Cluster`].

pub mod cluster;
pub mod down;
pub mod error;
pub mod health;
pub mod progress;
pub mod report;
pub mod state;
pub mod topology;

use std::path::PathBuf;
use std::time::Duration;

pub use error::LabCtlError;
pub use state::{LabState, state_path};
pub use topology::{Mode, Spec};

use cluster::Cluster;
use progress::{Progress, catch_interrupts};
use report::Tools;
use topology::{NODE_AS, TOR_AS};

/// What `margay-lab up` was asked to do.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub spec: Spec,
    /// Leave the lab running and record it in `state_file`.
    pub keep: bool,
    /// How long to wait for the sessions and routes.
    pub timeout: Duration,
    pub state_file: PathBuf,
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

/// `margay-lab up`: build, wait, report, then tear down or keep.
pub fn up(opts: &UpOptions) -> Result<(), LabCtlError> {
    catch_interrupts();
    let spec = opts.spec;
    spec.validate()?;
    crate::netns::require_root()?;
    for p in ["ip", "bird", "birdc"] {
        require_program(p)?;
    }
    crate::bgpd::bgpd_binary()?;
    let tools = Tools::locate()?;
    if opts.keep
        && let Some(s) = LabState::load(&opts.state_file)?
    {
        return Err(LabCtlError::AlreadyRunning {
            tag: s.name_prefix(),
            path: opts.state_file.clone(),
        });
    }

    println!(
        "margay-lab: {} node(s) in AS {NODE_AS} ({}), a BIRD ToR in AS {TOR_AS}{}",
        spec.nodes,
        match spec.mode {
            Mode::Mesh => "node-to-node mesh",
            Mode::RouteReflectors => "node1 is the route reflector",
        },
        if spec.ipv6 { ", IPv4 and IPv6" } else { "" }
    );
    let mut progress = Progress::new(6);
    let mut cluster = progress.step(
        &format!("creating {} namespaces", Cluster::namespace_count(&spec)),
        || Cluster::create(spec),
    )?;
    println!(
        "      lab mg{}: configs, sockets and logs in {}",
        cluster.tag(),
        cluster.dir().display()
    );
    match build(&mut progress, &mut cluster, opts, &tools) {
        Ok(()) => {}
        Err(e @ LabCtlError::Interrupted) => {
            cluster.teardown();
            return Err(e);
        }
        Err(e) => {
            let dir = cluster.teardown_keeping_logs();
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
            Ok::<_, LabCtlError>(())
        })?;
    }
    Ok(())
}

/// The steps of `up` after the namespaces exist: wiring, daemons, convergence, the report.
/// The report is printed also when convergence fails, to show what each daemon sees.
fn build(
    progress: &mut Progress,
    cluster: &mut Cluster,
    opts: &UpOptions,
    tools: &Tools,
) -> Result<(), LabCtlError> {
    let spec = opts.spec;
    let wiring = format!(
        "connecting {} hosts to switch {} ({}, {})",
        spec.nodes + 1,
        cluster.switch_name(),
        cluster.plan().subnet.v4,
        cluster.plan().subnet.v6
    );
    progress.step(&wiring, || cluster.wire())?;
    progress.step(&format!("starting BIRD on the ToR (AS {TOR_AS})"), || {
        cluster.start_tor()
    })?;
    progress.step(
        &format!(
            "starting {} margay-bgpd (AS {NODE_AS}, {})",
            spec.nodes, spec.mode
        ),
        || cluster.start_nodes(),
    )?;
    let waiting = format!(
        "waiting for {} BGP sessions and {} pod blocks (up to {} s)",
        cluster.plan().session_count(),
        cluster.plan().nodes.len() * if spec.ipv6 { 2 } else { 1 },
        opts.timeout.as_secs()
    );
    let converged = progress.step(&waiting, || cluster.wait_converged(opts.timeout));
    let state = cluster.state();
    match converged {
        Ok(health) => {
            print!("{}", report::render(&state, tools));
            println!("\n{}\n", health.summary(&state));
            Ok(())
        }
        Err(e @ LabCtlError::Interrupted) => Err(e),
        Err(e) => {
            print!("{}", report::render(&state, tools));
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
        "margay-lab: lab {} ({} node(s), {}), configs and logs in {}",
        state.name_prefix(),
        state.nodes.len(),
        state.mode,
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
    print!("{}", report::render(&state, &tools));
    let health = health::check(&state)?;
    println!("\n{}", health.summary(&state));
    Ok(health.converged() && dead.is_empty())
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
