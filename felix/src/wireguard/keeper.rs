//! The cluster-mode task that keeps WireGuard in line with the cluster: it takes the
//! FelixConfigurations (`default`, `node.<name>`, merged by [`crate::settings::merge`]) and the
//! Nodes (addresses, published keys) from the datastore feed cluster mode already follows, and
//! the routes felix programs from the coordinator, and on every change and every resync
//! makes the kernel hold the device, its peers, its routing table and its rule, then publishes
//! the node's public key. Whatever someone changes by hand is put back at the next resync.
//! When WireGuard is off, everything of its own is removed and the Node's key cleared.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use margay_datastore::resources::{NodeSpec, Resource};
use margay_datastore::{Store, StoreError};
use tokio::sync::watch;
use tracing::{info, warn};

use super::config::{Config, OVERHEAD_V4};
use super::desired::{self, Desired, NodeInfo};
use super::wg::{DeviceConfig, Wg, WgError};
use crate::health::{Health, Metrics};
use crate::model::{Model, RemoteRoute};
use crate::netlink::{
    Dataplane, KernelRoute, NetlinkError, RouteKind, RouteOp, Rule, SCOPE_LINK, SCOPE_UNIVERSE,
};

/// `RTN_THROW`: the lookup continues with the next rule.
const RTN_THROW: u8 = 9;
/// The Node status field holding the public key (Calico's name).
pub const STATUS_KEY: &str = "wireguardPublicKey";
/// Readiness key.
const R_WIREGUARD: &str = "wireguard";

/// Applying failed.
#[derive(Debug, thiserror::Error)]
pub enum KeeperError {
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error("{step}: {source}")]
    Step {
        step: &'static str,
        source: NetlinkError,
    },
    #[error(transparent)]
    Wg(#[from] WgError),
    #[error("{0} exists and is not a WireGuard device (kind {1:?})")]
    WrongKind(String, Option<String>),
    #[error("the datastore: {0}")]
    Store(#[from] StoreError),
}

/// What one application found and did.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// The device's public key (None when WireGuard is off).
    pub public_key: Option<String>,
    pub peers: usize,
    pub generated_key: bool,
    pub skipped: BTreeMap<String, &'static str>,
}

/// The blocking part: makes the kernel match `cfg` and `d` for node address `node_ip`.
pub struct Applier {
    pub wg: Wg,
    pub protocol: u8,
    /// The configuration last applied (its rule and table are cleaned when it changes).
    last: Option<Config>,
}

impl Applier {
    pub fn new(wg: Wg, protocol: u8) -> Applier {
        Applier {
            wg,
            protocol,
            last: None,
        }
    }

    fn rule(cfg: &Config) -> Rule {
        Rule {
            v6: false,
            priority: cfg.rule_priority,
            table: cfg.table,
            fwmark: Some((cfg.fwmark, cfg.fwmark)),
            invert: true,
        }
    }

    /// Removes the rule and table routes of `cfg` and its device (only a WireGuard device).
    fn remove(&self, dp: &mut Dataplane, cfg: &Config) -> Result<(), KeeperError> {
        let rule = Self::rule(cfg);
        if dp.rules()?.contains(&rule) {
            dp.delete_rule(rule)?;
            info!(
                priority = cfg.rule_priority,
                table = cfg.table,
                "wireguard: removed the routing rule"
            );
        }
        let routes = dp.routes(Some(cfg.table), Some(self.protocol))?;
        if !routes.is_empty() {
            let ops: Vec<RouteOp> = routes.into_iter().map(RouteOp::Delete).collect();
            dp.apply_routes(&ops)?;
        }
        match dp.link(&cfg.interface) {
            Ok(l) if l.kind.as_deref() == Some("wireguard") => {
                dp.delete_link(l.index)?;
                info!(device = %cfg.interface, "wireguard: removed the device");
            }
            _ => {}
        }
        Ok(())
    }

    /// The MTU the device should have: the configured one, or the uplink's less the overhead.
    fn mtu(
        dp: &mut Dataplane,
        cfg: &Config,
        node_ip: Option<Ipv4Addr>,
    ) -> Result<Option<u32>, KeeperError> {
        if cfg.mtu.is_some() {
            return Ok(cfg.mtu);
        }
        let Some(ip) = node_ip else { return Ok(None) };
        let Some((index, _)) = dp
            .all_addresses()?
            .into_iter()
            .find(|(_, a)| a.addr() == IpAddr::V4(ip))
        else {
            return Ok(None);
        };
        Ok(dp
            .links()?
            .into_iter()
            .find(|l| l.index == index)
            .map(|l| l.mtu.saturating_sub(OVERHEAD_V4)))
    }

    /// Applies: WireGuard off removes everything; on, the device, key, peers, table routes
    /// and rule are made to match. `rotate` replaces the key pair.
    pub fn apply(
        &mut self,
        cfg: &Config,
        me: &str,
        node_ip: Option<Ipv4Addr>,
        nodes: &[NodeInfo],
        routes: &[RemoteRoute],
        rotate: bool,
    ) -> Result<(Applied, Desired), KeeperError> {
        let mut dp = Dataplane::new()?;
        if let Some(last) = self.last.clone()
            && (last.interface != cfg.interface
                || last.table != cfg.table
                || last.rule_priority != cfg.rule_priority
                || last.fwmark != cfg.fwmark
                || !cfg.enabled)
        {
            self.remove(&mut dp, &last)?;
        }
        if !cfg.enabled {
            // Also what a previous felix left (this process never applied it).
            self.remove(&mut dp, cfg)?;
            self.last = None;
            return Ok((Applied::default(), Desired::default()));
        }
        // The device.
        let link = match dp.link(&cfg.interface) {
            Ok(l) => l,
            Err(NetlinkError::NoSuchLink(_)) => {
                dp.create_wireguard(&cfg.interface)
                    .map_err(|source| KeeperError::Step {
                        step: "creating the device",
                        source,
                    })?;
                info!(device = %cfg.interface, "wireguard: created the device");
                dp.link(&cfg.interface)
                    .map_err(|source| KeeperError::Step {
                        step: "reading the new device",
                        source,
                    })?
            }
            Err(source) => {
                return Err(KeeperError::Step {
                    step: "reading the device",
                    source,
                });
            }
        };
        if link.kind.as_deref() != Some("wireguard") {
            return Err(KeeperError::WrongKind(cfg.interface.clone(), link.kind));
        }
        if let Some(mtu) = Self::mtu(&mut dp, cfg, node_ip).map_err(|e| match e {
            KeeperError::Netlink(source) => KeeperError::Step {
                step: "finding the uplink's MTU",
                source,
            },
            e => e,
        })? && mtu != link.mtu
        {
            dp.set_mtu(link.index, mtu)
                .map_err(|source| KeeperError::Step {
                    step: "setting the device's MTU",
                    source,
                })?;
        }
        if !link.up {
            dp.set_link_up(link.index, true)
                .map_err(|source| KeeperError::Step {
                    step: "bringing the device up",
                    source,
                })?;
        }
        // The key pair.
        let dev = self.wg.show(&cfg.interface)?;
        let mut generated_key = false;
        let (private, public) = match (&dev.private_key, &dev.public_key) {
            (Some(k), Some(p)) if !rotate => (k.clone(), p.clone()),
            _ => {
                let k = self.wg.genkey()?;
                let p = self.wg.pubkey(&k)?;
                generated_key = true;
                info!(public_key = %p, rotate, "wireguard: generated a new key pair");
                (k, p)
            }
        };
        // Peers.
        let d = desired::compute(me, Some(&public), cfg.port, nodes, routes);
        let want = DeviceConfig {
            private_key: private,
            listen_port: cfg.port,
            fwmark: cfg.fwmark,
            peers: d
                .peers
                .iter()
                .map(|(k, p)| (k.clone(), p.clone()))
                .collect(),
            keepalive: cfg.keepalive,
        };
        if !super::wg::matches(&dev, &want) {
            self.wg.syncconf(&cfg.interface, &want)?;
        }
        // The table: replace what differs, then delete what is not wanted.
        let mut wanted: BTreeMap<IpNet, KernelRoute> = BTreeMap::new();
        for p in &d.via_device {
            wanted.insert(
                *p,
                KernelRoute {
                    dst: *p,
                    table: cfg.table,
                    protocol: self.protocol,
                    kind: RouteKind::Unicast,
                    scope: SCOPE_LINK,
                    gateway: None,
                    oif: Some(link.index),
                    onlink: false,
                    priority: 0,
                    multipath: Vec::new(),
                    src: None,
                },
            );
        }
        for p in &d.throw {
            wanted.insert(
                *p,
                KernelRoute {
                    dst: *p,
                    table: cfg.table,
                    protocol: self.protocol,
                    kind: RouteKind::Other(RTN_THROW),
                    scope: SCOPE_UNIVERSE,
                    gateway: None,
                    oif: None,
                    onlink: false,
                    priority: 0,
                    multipath: Vec::new(),
                    src: None,
                },
            );
        }
        let have = dp
            .routes(Some(cfg.table), Some(self.protocol))
            .map_err(|source| KeeperError::Step {
                step: "reading the table's routes",
                source,
            })?;
        let have_set: std::collections::HashSet<&KernelRoute> = have.iter().collect();
        let mut ops: Vec<RouteOp> = wanted
            .values()
            .filter(|r| !have_set.contains(r))
            .cloned()
            .map(RouteOp::Replace)
            .collect();
        ops.extend(
            have.iter()
                .filter(|r| r.dst.addr().is_ipv4() && !wanted.contains_key(&r.dst))
                .cloned()
                .map(RouteOp::Delete),
        );
        if !ops.is_empty() {
            let results = dp.apply_routes(&ops).map_err(|source| KeeperError::Step {
                step: "writing the table's routes",
                source,
            })?;
            for (op, res) in ops.iter().zip(results) {
                if let Err(e) = res {
                    warn!(?op, error = %e, "wireguard: a table route write failed");
                }
            }
        }
        // The rule.
        let rule = Self::rule(cfg);
        let rules = dp.rules().map_err(|source| KeeperError::Step {
            step: "reading the rules",
            source,
        })?;
        if !rules.contains(&rule) {
            dp.add_rule(rule).map_err(|source| KeeperError::Step {
                step: "adding the routing rule",
                source,
            })?;
            info!(
                priority = cfg.rule_priority,
                table = cfg.table,
                fwmark = format!("{:#x}", cfg.fwmark),
                "wireguard: added the routing rule"
            );
        }
        self.last = Some(cfg.clone());
        Ok((
            Applied {
                public_key: Some(public),
                peers: d.peers.len(),
                generated_key,
                skipped: d.skipped.clone(),
            },
            d,
        ))
    }
}

/// A Node as the keeper needs it.
fn node_info(name: &str, spec: &NodeSpec, public_key: Option<String>) -> NodeInfo {
    let ip = |s: &str| s.split('/').next().and_then(|a| a.parse::<IpAddr>().ok());
    let address = spec
        .bgp
        .as_ref()
        .and_then(|b| b.ipv4_address.as_deref())
        .and_then(ip)
        .and_then(|a| match a {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        });
    let mut next_hops = Vec::new();
    if let Some(a) = spec.ipv4_vxlan_tunnel_addr.as_deref().and_then(ip) {
        next_hops.push(a);
    }
    if let Some(a) = spec
        .bgp
        .as_ref()
        .and_then(|b| b.ipv4_ipip_tunnel_addr.as_deref())
        .and_then(ip)
    {
        next_hops.push(a);
    }
    NodeInfo {
        name: name.to_string(),
        address,
        next_hops,
        public_key,
    }
}

/// The key a Node publishes.
pub fn published_key(r: &Resource<NodeSpec>) -> Option<String> {
    r.status
        .as_ref()?
        .get(STATUS_KEY)?
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Writes (or clears) this node's published key, keeping every other status field.
async fn publish(store: &Store, node: &str, key: Option<&str>) -> Result<bool, StoreError> {
    for _ in 0..10 {
        let Some(mut r) = store.get::<NodeSpec>(node).await? else {
            return Ok(false);
        };
        if published_key(&r).as_deref() == key {
            return Ok(true);
        }
        let mut status = match r.status.take() {
            Some(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        match key {
            Some(k) => {
                status.insert(STATUS_KEY.into(), serde_json::Value::String(k.into()));
            }
            None => {
                status.remove(STATUS_KEY);
            }
        }
        r.status = (!status.is_empty()).then_some(serde_json::Value::Object(status));
        match store.update(&r).await {
            Ok(_) => return Ok(true),
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// What the keeper follows: the datastore feed of cluster mode and the model felix programs.
pub struct Feeds {
    pub states: watch::Receiver<Option<crate::cluster::ClusterState>>,
    pub models: watch::Receiver<Option<Model>>,
}

/// Runs until the task is aborted: takes its settings (FelixConfiguration merged by
/// [`crate::settings::merge`]) and the Nodes with their published keys from the datastore feed
/// cluster mode already follows (`states`), the routes felix programs from `models`, and
/// applies on every change and every `resync`.
pub async fn run(
    store: Store,
    node: String,
    protocol: u8,
    feeds: Feeds,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    resync: Duration,
) {
    let Feeds {
        mut states,
        mut models,
    } = feeds;
    let applier = Arc::new(std::sync::Mutex::new(Applier::new(Wg::default(), protocol)));
    let mut warned: BTreeSet<String> = BTreeSet::new();
    let mut last_cfg = Config::default();
    // The key this node was last seen publishing: its removal asks for a new key pair.
    let mut seen_published: Option<String> = None;
    let mut tick = tokio::time::interval(resync);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            r = states.changed() => if r.is_err() { return },
            r = models.changed() => if r.is_err() { return },
            _ = tick.tick() => {}
        }
        // The watch channels hold the latest state only: an apply (it runs `wg`) never falls
        // behind a busy cluster.
        let Some(state) = states.borrow_and_update().clone() else {
            continue;
        };
        let global = state.felix_configs.get(crate::settings::GLOBAL);
        let mine = state
            .felix_configs
            .get(&crate::settings::node_config_name(&node));
        let (settings, _) = crate::settings::merge(global, mine, &Default::default());
        let cfg = match settings.wireguard {
            Ok(c) => {
                health.clear_reason(R_WIREGUARD);
                c
            }
            Err(e) => {
                if warned.insert(e.to_string()) {
                    warn!(error = %e, "wireguard: keeping the previous settings");
                }
                health.set_reason(R_WIREGUARD, format!("wireguard: {e}"));
                last_cfg.clone()
            }
        };
        for (field, why) in Config::not_acted_set(global, mine) {
            if warned.insert(field.to_string()) {
                warn!(field = %format!("FelixConfiguration spec.{field}"), reason = why, "field accepted but not acted on");
            }
        }
        last_cfg = cfg.clone();
        let own = state.nodes.get(&node);
        let published = state.wireguard_keys.get(&node).cloned();
        // Rotation: the Node was seen carrying a key, and now carries none.
        let rotate =
            cfg.enabled && published.is_none() && seen_published.is_some() && own.is_some();
        if published.is_some() || !cfg.enabled {
            seen_published = published.clone();
        }
        let node_ip = own
            .map(|spec| node_info(&node, spec, None))
            .and_then(|n| n.address);
        let infos: Vec<NodeInfo> = state
            .nodes
            .iter()
            .map(|(name, spec)| node_info(name, spec, state.wireguard_keys.get(name).cloned()))
            .collect();
        let routes: Vec<RemoteRoute> = models
            .borrow()
            .as_ref()
            .map(|m| m.remote_routes.clone())
            .unwrap_or_default();
        let me = node.clone();
        let a = applier.clone();
        let c = cfg.clone();
        let res = tokio::task::spawn_blocking(move || {
            a.lock()
                .expect("wireguard applier")
                .apply(&c, &me, node_ip, &infos, &routes, rotate)
        })
        .await;
        let applied = match res {
            Ok(Ok((applied, _))) => applied,
            Ok(Err(e)) => {
                warn!(error = %e, "wireguard: applying failed; retrying at the next change or resync");
                health.set_reason(R_WIREGUARD, format!("wireguard: {e}"));
                continue;
            }
            Err(e) => {
                warn!(error = %e, "wireguard: the apply task panicked");
                continue;
            }
        };
        metrics.wireguard_peers.set(applied.peers as i64);
        if applied.generated_key {
            metrics.wireguard_keys_generated.inc();
        }
        for (n, why) in &applied.skipped {
            let text = format!("{n}: {why}");
            if warned.insert(text) {
                info!(node = %n, reason = why, "wireguard: not a peer; its pods are reached unencrypted");
            }
        }
        if published != applied.public_key {
            match publish(&store, &node, applied.public_key.as_deref()).await {
                Ok(true) => {
                    info!(public_key = ?applied.public_key, "wireguard: published this node's public key");
                }
                Ok(false) => {}
                Err(e) => {
                    warn!(error = %e, "wireguard: publishing the public key failed; retrying")
                }
            }
        }
        if rotate {
            seen_published = None;
        }
    }
}
