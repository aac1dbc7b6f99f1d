//! A running lab, built one step at a time: namespaces, the switch, the ToR's BIRD, a
//! margay-bgpd per node; then either torn down or kept running with its state recorded.
//!
//! Every part is a guard of the lab library, so a failure (or a signal) at any step removes
//! what the earlier steps made. Fields are declared in drop order: daemons, hosts, switch, and
//! the directory last. Later issues add steps here (etcd, felix, pods).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::LabCtlError;
use super::health::{self, Health};
use super::progress::interrupted;
use super::state::{LabState, NodeState, TorState};
use super::topology::{NODE_AS, Plan, Spec, TOR_AS};
use crate::bgpd::Bgpd;
use crate::bird::Bird;
use crate::lab::{Lab, LabSwitch};
use crate::netns::Netns;
use crate::process::wait_for;

/// The lab while this process owns it.
#[derive(Debug)]
pub struct Cluster {
    /// margay-bgpd of node k at index k-1 (filled by [`Cluster::start_nodes`]).
    nodes: Vec<Bgpd>,
    tor: Option<Bird>,
    /// Node k's namespace at index k-1, then the ToR's.
    hosts: Vec<Netns>,
    switch: LabSwitch,
    plan: Plan,
    lab: Lab,
}

impl Cluster {
    /// Creates the lab directory, the switch and one namespace per host (nodes, then the ToR).
    pub fn create(spec: Spec) -> Result<Cluster, LabCtlError> {
        let lab = Lab::new("margay-lab")?;
        let switch = lab.switch("sw")?;
        let plan = Plan::new(spec, switch.subnet());
        let mut hosts = Vec::with_capacity(plan.nodes.len() + 1);
        for role in plan.nodes.iter().map(|n| &n.role).chain([&plan.tor.role]) {
            hosts.push(lab.netns(role)?);
        }
        Ok(Cluster {
            nodes: Vec::new(),
            tor: None,
            hosts,
            switch,
            plan,
            lab,
        })
    }

    /// How many namespaces [`Cluster::create`] makes for `spec`.
    pub fn namespace_count(spec: &Spec) -> usize {
        spec.nodes + 2
    }

    /// The plan the lab follows.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The lab's tag.
    pub fn tag(&self) -> &str {
        self.lab.tag()
    }

    /// The lab's directory (configs, sockets, logs).
    pub fn dir(&self) -> &Path {
        self.lab.dir()
    }

    /// The switch's namespace.
    pub fn switch_name(&self) -> &str {
        self.switch.switch().netns().name()
    }

    /// Plugs every host into the switch, in plan order, and checks each got its planned address.
    pub fn wire(&mut self) -> Result<(), LabCtlError> {
        let planned = self
            .plan
            .nodes
            .iter()
            .map(|n| &n.addrs)
            .chain([&self.plan.tor.addrs]);
        for (host, want) in self.hosts.iter().zip(planned) {
            let got = self.switch.attach(host)?;
            if (got.v4, got.v6) != (want.v4, want.v6) {
                return Err(LabCtlError::Usage(format!(
                    "{} got {} on the switch, the plan says {}",
                    host.name(),
                    got.v4,
                    want.v4
                )));
            }
        }
        Ok(())
    }

    /// Starts BIRD on the ToR.
    pub fn start_tor(&mut self) -> Result<(), LabCtlError> {
        let ns = &self.hosts[self.plan.nodes.len()];
        let bird = Bird::start(&self.lab, ns, &self.plan.tor.name, self.plan.tor_config())?;
        self.tor = Some(bird);
        Ok(())
    }

    /// Starts margay-bgpd on every node, one after the other (each answers on its socket
    /// before the next starts).
    pub fn start_nodes(&mut self) -> Result<(), LabCtlError> {
        for (node, ns) in self.plan.nodes.iter().zip(&self.hosts) {
            if interrupted() {
                return Err(LabCtlError::Interrupted);
            }
            let bgpd = Bgpd::start(&self.lab, ns, &node.name, self.plan.bgpd_config(node))?;
            self.nodes.push(bgpd);
        }
        Ok(())
    }

    /// What the lab is, for the report and the state file.
    pub fn state(&mut self) -> LabState {
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let tor_pid = self.tor.as_mut().map(|b| b.process().pid()).unwrap_or(0);
        let tor_socket = self
            .tor
            .as_ref()
            .map(|b| b.socket().to_path_buf())
            .unwrap_or_default();
        let nodes = self
            .plan
            .nodes
            .iter()
            .zip(&self.hosts)
            .zip(self.nodes.iter_mut())
            .map(|((plan, ns), bgpd)| NodeState {
                name: plan.name.clone(),
                netns: ns.name().to_string(),
                pid: bgpd.process().pid(),
                socket: bgpd.config().socket.clone(),
                config: self.lab.dir().join(format!("{}.toml", plan.name)),
                address4: plan.addrs.ip4(),
                address6: self.plan.spec.ipv6.then(|| plan.addrs.ip6()),
                asn: NODE_AS,
                block4: plan.block4,
                block6: plan.block6,
                peers: bgpd.config().neighbors.iter().map(|n| n.address).collect(),
                reflector: self.plan.is_reflector(plan),
            })
            .collect();
        let tor_config = self.plan.tor_config();
        LabState {
            tag: self.lab.tag().to_string(),
            dir: self.lab.dir().to_path_buf(),
            mode: self.plan.spec.mode,
            ipv6: self.plan.spec.ipv6,
            switch: self.switch_name().to_string(),
            subnet4: self.plan.subnet.v4,
            subnet6: self.plan.subnet.v6,
            nodes,
            tor: TorState {
                name: self.plan.tor.name.clone(),
                netns: self.hosts[self.plan.nodes.len()].name().to_string(),
                pid: tor_pid,
                socket: tor_socket,
                config: self.lab.dir().join(format!("{}.conf", self.plan.tor.name)),
                address4: self.plan.tor.addrs.ip4(),
                address6: self.plan.spec.ipv6.then(|| self.plan.tor.addrs.ip6()),
                asn: TOR_AS,
                protocols: tor_config
                    .neighbors
                    .iter()
                    .map(|n| n.name.clone())
                    .collect(),
            },
            created,
        }
    }

    /// Waits until every session is Established and every block is everywhere it should be;
    /// on timeout the error lists what is still missing (the daemons' logs stay in the lab
    /// directory, which `up` keeps after a failure).
    pub fn wait_converged(&mut self, timeout: Duration) -> Result<Health, LabCtlError> {
        let state = self.state();
        let what = format!(
            "{} BGP sessions Established and every block at every node and the ToR",
            self.plan.session_count()
        );
        let h = wait_for(&what, timeout, &[], || {
            if interrupted() {
                return Ok(None);
            }
            match health::check(&state) {
                Ok(h) if h.converged() => Ok(Some(h)),
                Ok(h) => Err(h.problems.join("\n  ")),
                Err(e) => Err(e.to_string()),
            }
        })?;
        h.ok_or(LabCtlError::Interrupted)
    }

    /// Records the lab in the state file at `path`, then lets every namespace, daemon and the
    /// directory outlive this process. Returns the recorded state.
    pub fn into_kept(mut self, path: &Path) -> Result<LabState, LabCtlError> {
        let state = self.state();
        // Written first: if it fails, the guards still remove everything.
        state.save(path)?;
        let Cluster {
            nodes,
            tor,
            hosts,
            switch,
            plan: _,
            lab,
        } = self;
        for bgpd in nodes {
            bgpd.into_kept();
        }
        if let Some(bird) = tor {
            bird.into_kept();
        }
        for ns in hosts {
            ns.into_kept();
        }
        switch.into_kept();
        lab.into_kept();
        Ok(state)
    }

    /// Stops every daemon and removes every namespace and the directory.
    pub fn teardown(self) {
        drop(self);
    }

    /// Removes everything but the directory, so its logs can be read after a failure; returns
    /// the directory.
    pub fn teardown_keeping_logs(self) -> PathBuf {
        let Cluster {
            nodes,
            tor,
            hosts,
            switch,
            plan: _,
            lab,
        } = self;
        drop(nodes);
        drop(tor);
        drop(hosts);
        drop(switch);
        lab.into_kept()
    }
}
