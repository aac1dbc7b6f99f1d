//! Cluster mode: bgpd builds its sessions from the datastore and follows it live.
//!
//! At start it writes its own Node resource (address, AS) as calico-node does, lists Nodes,
//! BGPPeers, BGPConfigurations, BGPFilters and IPPools, and starts the speaker with the
//! peerings and policy they imply; then it watches all five and hands every change to the
//! speaker as a reload, which touches only the sessions whose settings changed (policy changes
//! apply to live sessions without a reset). Meanwhile it probes etcd ([`margay_datastore::probe`]) so
//! `/readiness` names an outage, during which the sessions and routes run on what bgpd knows.

mod candidates;
pub mod follow;
pub mod incremental;
pub mod peerings;
pub mod policy;
pub mod router_id;
pub mod secrets;

pub use follow::{Revisions, follow, load, register};
pub use incremental::{Delta, Planner};
pub use peerings::{Local, Model, PeeringError, Plan, desired_config, plan};
pub use router_id::RouterIdSource;
pub use secrets::DEFAULT_SECRETS_DIR;

use crate::config::Config;
use crate::speaker::SpeakerHandle;
use ipnet::IpNet;
use margay_datastore::{EtcdArgs, Store, StoreError};
use std::time::Duration;
use tracing::{info, warn};

/// How this node's address is found: given, detected, or absent.
#[derive(Debug, Clone, PartialEq)]
pub enum AddressSource {
    Given(IpNet),
    Autodetect(String),
    None,
}

impl AddressSource {
    /// Parses calico-node's `IP` / `IP6` values: `ADDR/LEN`, `ADDR` (taken as a host
    /// address), `autodetect`, `none`; `method` is the autodetection method.
    pub fn parse(value: &str, method: &str) -> Result<AddressSource, ClusterError> {
        match value.trim() {
            "" | "none" => Ok(AddressSource::None),
            "autodetect" => Ok(AddressSource::Autodetect(method.to_string())),
            v => v
                .parse::<IpNet>()
                .or_else(|_| v.parse::<std::net::IpAddr>().map(IpNet::from))
                .map(AddressSource::Given)
                .map_err(|_| ClusterError::BadAddress(v.to_string())),
        }
    }
}

/// Cluster mode's settings.
#[derive(Debug, Clone)]
pub struct Options {
    pub local: Local,
    pub etcd: EtcdArgs,
    pub ipv4: AddressSource,
    pub ipv6: AddressSource,
    pub asn: Option<u32>,
}

/// Why cluster mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("'{0}' is not an address: use ADDR/LEN, ADDR, autodetect or none")]
    BadAddress(String),
    #[error("address autodetection: {0}")]
    Autodetect(String),
    #[error("datastore: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Peering(#[from] PeeringError),
}

/// What [`start`] hands back: the planner that made the first configuration (it holds the
/// model as read), and this node's registration still to write once the speaker listens.
pub struct Follower {
    store: Store,
    node: String,
    planner: Planner,
    /// The listener's address and port as started (bound once).
    bound: (std::net::IpAddr, u16),
    revisions: Revisions,
    ipv4: Option<IpNet>,
    ipv6: Option<IpNet>,
    asn: Option<u32>,
    /// etcd's endpoints, as the probe names them.
    endpoints: String,
    /// Why etcd counts as unreachable now, if it does.
    etcd_down: tokio::sync::watch::Sender<Option<String>>,
}

impl Follower {
    /// Why etcd counts as unreachable, while it does (`None` while it answers); updated by
    /// [`Follower::run`]'s probe, for `/readiness`.
    pub fn etcd_down(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.etcd_down.subscribe()
    }

    /// Registers this node (now that the speaker accepts connections, peers that react to the
    /// new Node find it listening), then follows the datastore until `shutdown`, reloading
    /// `speaker` (which runs the configuration [`start`] returned).
    pub async fn run(
        self,
        speaker: SpeakerHandle,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let probe = tokio::spawn(margay_datastore::probe::run(
            self.store.clone(),
            self.endpoints.clone(),
            {
                let tx = self.etcd_down.clone();
                move |down| {
                    let reason =
                        down.map(|r| format!("{r}; BGP keeps the sessions and routes it has"));
                    tx.send_if_modified(|now| {
                        let changed = *now != reason;
                        *now = reason;
                        changed
                    });
                }
            },
        ));
        let node = self.node;
        let mut wait = Duration::from_millis(200);
        while let Err(e) = register(&self.store, &node, self.ipv4, self.ipv6, self.asn).await {
            warn!(error = %e, retry_in = ?wait, "cannot register this node yet");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
        follow(
            self.store,
            speaker,
            self.planner,
            self.revisions,
            self.bound,
            shutdown,
        )
        .await;
        probe.abort();
    }
}

/// This node's address from `source` (`v6`: the IPv6 one): given, autodetected, or none. felix
/// uses it too when no bgpd runs (the `vxlan` and `none` networking backends).
pub fn resolve(source: &AddressSource, v6: bool) -> Result<Option<IpNet>, ClusterError> {
    match source {
        AddressSource::None => Ok(None),
        AddressSource::Given(n) if n.addr().is_ipv6() != v6 => {
            Err(ClusterError::BadAddress(n.to_string()))
        }
        AddressSource::Given(n) => Ok(Some(*n)),
        AddressSource::Autodetect(method) => {
            use crate::autodetect::{IpVersion, Method, detect};
            let m: Method = method
                .parse()
                .map_err(|e| ClusterError::Autodetect(format!("{e}")))?;
            let version = if v6 { IpVersion::V6 } else { IpVersion::V4 };
            let d = detect(&m, version).map_err(|e| ClusterError::Autodetect(e.to_string()))?;
            info!(address = %d.address, interface = %d.interface, reason = %d.reason, "autodetected this node's {version} address");
            Ok(Some(d.address))
        }
    }
}

/// Applies this node's registration to the model as read, as the datastore will hold it.
fn registered(
    model: &mut Model,
    node: &str,
    ipv4: Option<IpNet>,
    ipv6: Option<IpNet>,
    asn: Option<u32>,
) {
    let n = model
        .nodes
        .entry(node.to_string())
        .or_insert_with(|| margay_datastore::resources::Node::new(node, Default::default()));
    let bgp = n.spec.bgp.get_or_insert_with(Default::default);
    if let Some(a) = ipv4 {
        bgp.ipv4_address = Some(a.to_string());
    }
    if let Some(a) = ipv6 {
        bgp.ipv6_address = Some(a.to_string());
    }
    if let Some(a) = asn {
        bgp.as_number = Some(margay_datastore::resources::AsNumber(a));
    }
}

/// Resolves this node's addresses, reads the model (waiting for etcd if it is not up yet) and
/// computes the first configuration, counting this node as registered. The registration itself
/// is written by [`Follower::run`], once the speaker listens.
pub async fn start(opts: Options) -> Result<(Config, Follower), ClusterError> {
    let ipv4 = resolve(&opts.ipv4, false)?;
    let ipv6 = resolve(&opts.ipv6, true)?;
    let node = opts.local.node.clone();
    let mut wait = Duration::from_millis(200);
    let (store, mut model, revisions) = loop {
        let attempt = async {
            let store = Store::connect(&opts.etcd).await?;
            let (model, revisions) = load(&store).await?;
            Ok::<_, StoreError>((store, model, revisions))
        };
        match attempt.await {
            Ok(s) => break s,
            Err(e) => {
                warn!(endpoints = ?opts.etcd.endpoints, error = %e, retry_in = ?wait, "cannot read the cluster model yet");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    };
    registered(&mut model, &node, ipv4, ipv6, opts.asn);
    // The planner that follows the datastore makes the first plan too: what it keeps (the model
    // and the neighbours planned) is then not computed and held a second time.
    let mut planner = Planner::new(model, opts.local);
    let first = planner.replan()?;
    for n in &first.new_notes {
        warn!("{n}");
    }
    let config = planner
        .config()
        .expect("a plan that succeeded has a configuration");
    info!(
        node,
        nodes = planner.model().nodes.len(),
        bgp_peers = planner.model().peers.len(),
        neighbors = config.neighbors.len(),
        "cluster model loaded"
    );
    let bound = (config.listen_address, config.listen_port);
    Ok((
        config,
        Follower {
            store,
            node,
            planner,
            bound,
            revisions,
            ipv4,
            ipv6,
            asn: opts.asn,
            endpoints: opts.etcd.endpoints.join(","),
            etcd_down: tokio::sync::watch::channel(None).0,
        },
    ))
}
