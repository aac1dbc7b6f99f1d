//! The cluster-mode task that keeps WireGuard in line with the cluster: it takes the
//! FelixConfigurations (`default`, `node.<name>`, merged by [`crate::settings::merge`]) and the
//! Nodes (addresses, published keys) from the datastore feed cluster mode already follows, and
//! the routes felix programs from the coordinator, and on every change and every resync
//! makes the kernel hold each family's device, its peers, its routing table and its rule, then
//! publishes the node's public keys (`status.wireguardPublicKey` for IPv4,
//! `status.wireguardPublicKeyV6` for IPv6, as Calico). Whatever someone changes by hand is put
//! back at the next resync. When a family's WireGuard is off, everything of its own is removed
//! and the Node's key of that family cleared.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use margay_datastore::resources::{NodeSpec, Resource};
use margay_datastore::{Store, StoreError};
use tokio::sync::watch;
use tracing::{info, warn};

use super::config::Config;
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
/// The Node status field holding the IPv6 device's public key (Calico's name).
pub const STATUS_KEY_V6: &str = "wireguardPublicKeyV6";
/// Readiness keys.
const R_WIREGUARD: &str = "wireguard";
const R_WIREGUARD_V6: &str = "wireguard-v6";

/// The Node status field of a family's key.
pub fn status_key(v6: bool) -> &'static str {
    if v6 { STATUS_KEY_V6 } else { STATUS_KEY }
}

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
    #[error(
        "cannot create {device}: this kernel has no wireguard module (load it with \
         `modprobe wireguard`; Linux 5.6 and later ship it); pod traffic to other nodes \
         stays unencrypted until it can"
    )]
    NoModule { device: String },
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
            v6: cfg.v6,
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
        let routes: Vec<KernelRoute> = dp
            .routes(Some(cfg.table), Some(self.protocol))?
            .into_iter()
            .filter(|r| r.dst.addr().is_ipv6() == cfg.v6)
            .collect();
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

    /// The MTU the device should have: the configured one, or the uplink's (the interface
    /// holding the node's address of the family) less the family's overhead.
    fn mtu(
        dp: &mut Dataplane,
        cfg: &Config,
        node_ip: Option<IpAddr>,
    ) -> Result<Option<u32>, KeeperError> {
        if cfg.mtu.is_some() {
            return Ok(cfg.mtu);
        }
        let Some(ip) = node_ip else { return Ok(None) };
        let Some((index, _)) = dp
            .all_addresses()?
            .into_iter()
            .find(|(_, a)| a.addr() == ip)
        else {
            return Ok(None);
        };
        Ok(dp
            .links()?
            .into_iter()
            .find(|l| l.index == index)
            .map(|l| l.mtu.saturating_sub(cfg.overhead())))
    }

    /// Applies one family (`cfg.v6`): WireGuard off removes everything; on, the device, key,
    /// peers, table routes and rule are made to match. `node_ip` is this node's address of the
    /// family; `nodes` carry their addresses and keys of the family. `rotate` replaces the key
    /// pair.
    pub fn apply(
        &mut self,
        cfg: &Config,
        me: &str,
        node_ip: Option<IpAddr>,
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
                    .map_err(|source| match source {
                        NetlinkError::Unsupported { .. } => KeeperError::NoModule {
                            device: cfg.interface.clone(),
                        },
                        source => KeeperError::Step {
                            step: "creating the device",
                            source,
                        },
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
        let d = desired::compute(me, Some(&public), cfg.port, cfg.v6, nodes, routes);
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
        // IPv6 routes have no scope in the kernel (it reports every one as universe).
        let device_scope = if cfg.v6 { SCOPE_UNIVERSE } else { SCOPE_LINK };
        for p in &d.via_device {
            wanted.insert(
                *p,
                KernelRoute {
                    dst: *p,
                    table: cfg.table,
                    protocol: self.protocol,
                    kind: RouteKind::Unicast,
                    scope: device_scope,
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
                .filter(|r| r.dst.addr().is_ipv6() == cfg.v6 && !wanted.contains_key(&r.dst))
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
                v6 = cfg.v6,
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

/// A Node as one family's device needs it: its address and tunnel addresses of the family.
pub fn node_info(name: &str, spec: &NodeSpec, v6: bool, public_key: Option<String>) -> NodeInfo {
    let ip = |s: &str| s.split('/').next().and_then(|a| a.parse::<IpAddr>().ok());
    let bgp = spec.bgp.as_ref();
    let (address, tunnels) = if v6 {
        (
            bgp.and_then(|b| b.ipv6_address.as_deref()),
            vec![spec.ipv6_vxlan_tunnel_addr.as_deref()],
        )
    } else {
        (
            bgp.and_then(|b| b.ipv4_address.as_deref()),
            vec![
                spec.ipv4_vxlan_tunnel_addr.as_deref(),
                bgp.and_then(|b| b.ipv4_ipip_tunnel_addr.as_deref()),
            ],
        )
    };
    NodeInfo {
        name: name.to_string(),
        address: address.and_then(ip).filter(|a| a.is_ipv6() == v6),
        next_hops: tunnels
            .into_iter()
            .flatten()
            .filter_map(ip)
            .filter(|a| a.is_ipv6() == v6)
            .collect(),
        public_key,
    }
}

/// The key a Node publishes for one family (`status.wireguardPublicKey` or `...V6`).
pub fn published_key(r: &Resource<NodeSpec>, v6: bool) -> Option<String> {
    r.status
        .as_ref()?
        .get(status_key(v6))?
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Writes (or clears) this node's published key of one family, keeping every other status
/// field; compare-and-swap on the Node, retried on conflict. False when the Node is missing.
pub async fn publish(
    store: &Store,
    node: &str,
    v6: bool,
    key: Option<&str>,
) -> Result<bool, StoreError> {
    let field = status_key(v6);
    for _ in 0..10 {
        let Some(mut r) = store.get::<NodeSpec>(node).await? else {
            return Ok(false);
        };
        if published_key(&r, v6).as_deref() == key {
            return Ok(true);
        }
        let mut status = match r.status.take() {
            Some(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        match key {
            Some(k) => {
                status.insert(field.into(), serde_json::Value::String(k.into()));
            }
            None => {
                status.remove(field);
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
    pub models: watch::Receiver<Option<Arc<Model>>>,
}

/// One family's part of the task: its applier and what it remembers between applications.
struct Family {
    v6: bool,
    applier: Arc<std::sync::Mutex<Applier>>,
    last_cfg: Config,
    /// The key this node was last seen publishing: its removal asks for a new key pair.
    seen_published: Option<String>,
    /// The family is off and everything of its own was removed under this configuration, with
    /// no key of the family published: until the configuration changes or a key appears,
    /// only the resync looks at the kernel again.
    clean_off: Option<Config>,
}

impl Family {
    fn new(v6: bool, protocol: u8) -> Family {
        Family {
            v6,
            applier: Arc::new(std::sync::Mutex::new(Applier::new(Wg::default(), protocol))),
            last_cfg: if v6 {
                Config::default_v6()
            } else {
                Config::default()
            },
            seen_published: None,
            clean_off: None,
        }
    }

    /// Whether a pass for a change (not a resync) has nothing to do: the family stays off
    /// under the configuration it was cleaned with and this node publishes no key of it.
    /// A Node change then costs nothing here; before, each one dumped the kernel's routes and
    /// rules of both families (O(N) per Node change with N remote routes, issue 12).
    fn idle(&self, settings: &crate::settings::Settings, published: bool) -> bool {
        let cfg = if self.v6 {
            &settings.wireguard_v6
        } else {
            &settings.wireguard
        };
        !published && matches!(cfg, Ok(c) if !c.enabled && self.clean_off.as_ref() == Some(c))
    }

    fn readiness_key(&self) -> &'static str {
        if self.v6 { R_WIREGUARD_V6 } else { R_WIREGUARD }
    }

    fn label(&self) -> &'static str {
        if self.v6 { "IPv6" } else { "IPv4" }
    }
}

/// What one pass needs besides the family.
struct Pass<'a> {
    store: &'a Store,
    node: &'a str,
    state: &'a crate::cluster::ClusterState,
    settings: &'a crate::settings::Settings,
    routes: &'a [RemoteRoute],
    health: &'a Health,
    metrics: &'a Metrics,
    warned: &'a mut BTreeSet<String>,
}

/// Applies one family and publishes its key.
async fn apply_family(f: &mut Family, p: Pass<'_>) {
    let Pass {
        store,
        node,
        state,
        settings,
        routes,
        health,
        metrics,
        warned,
    } = p;
    let v6 = f.v6;
    let label = f.label();
    let cfg = match if v6 {
        &settings.wireguard_v6
    } else {
        &settings.wireguard
    } {
        Ok(c) => {
            health.clear_reason(f.readiness_key());
            c.clone()
        }
        Err(e) => {
            if warned.insert(e.to_string()) {
                warn!(error = %e, family = label, "wireguard: keeping the previous settings");
            }
            health.set_reason(f.readiness_key(), format!("wireguard ({label}): {e}"));
            f.last_cfg.clone()
        }
    };
    f.last_cfg = cfg.clone();
    let keys = if v6 {
        &state.wireguard_keys_v6
    } else {
        &state.wireguard_keys
    };
    let own = state.nodes.get(node);
    let published = keys.get(node).cloned();
    // Rotation: the Node was seen carrying a key, and now carries none.
    let rotate = cfg.enabled && published.is_none() && f.seen_published.is_some() && own.is_some();
    if published.is_some() || !cfg.enabled {
        f.seen_published = published.clone();
    }
    let node_ip = own
        .map(|spec| node_info(node, spec, v6, None))
        .and_then(|n| n.address);
    if cfg.enabled && own.is_some() && node_ip.is_none() {
        let text = format!("{node}: no {label} address for WireGuard");
        if warned.insert(text) {
            warn!(
                family = label,
                "wireguard: this node has no address of the family: its peers cannot reach it encrypted (IPv6: set IP6 / spec.bgp.ipv6Address)"
            );
        }
    }
    let infos: Vec<NodeInfo> = state
        .nodes
        .iter()
        .map(|(name, spec)| node_info(name, spec, v6, keys.get(name).cloned()))
        .collect();
    let me = node.to_string();
    let a = f.applier.clone();
    let c = cfg.clone();
    let routes = routes.to_vec();
    let res = tokio::task::spawn_blocking(move || {
        a.lock()
            .expect("wireguard applier")
            .apply(&c, &me, node_ip, &infos, &routes, rotate)
    })
    .await;
    f.clean_off = None;
    let applied = match res {
        Ok(Ok((applied, _))) => applied,
        Ok(Err(e)) => {
            if warned.insert(format!("apply {label}: {e}")) {
                warn!(error = %e, family = label, "wireguard: applying failed; retrying at the next change or resync");
            }
            health.set_reason(f.readiness_key(), format!("wireguard ({label}): {e}"));
            return;
        }
        Err(e) => {
            warn!(error = %e, family = label, "wireguard: the apply task panicked");
            return;
        }
    };
    let gauge = if v6 {
        &metrics.wireguard_peers_v6
    } else {
        &metrics.wireguard_peers
    };
    gauge.set(applied.peers as i64);
    if applied.generated_key {
        metrics.wireguard_keys_generated.inc();
    }
    for (n, why) in &applied.skipped {
        let text = format!("{label} {n}: {why}");
        if warned.insert(text) {
            info!(node = %n, family = label, reason = why, "wireguard: not a peer; its pods are reached unencrypted");
        }
    }
    let mut key_settled = published == applied.public_key;
    if !key_settled {
        match publish(store, node, v6, applied.public_key.as_deref()).await {
            Ok(true) => {
                info!(public_key = ?applied.public_key, field = status_key(v6), "wireguard: published this node's public key");
                key_settled = true;
            }
            Ok(false) => key_settled = true,
            Err(e) => {
                warn!(error = %e, family = label, "wireguard: publishing the public key failed; retrying")
            }
        }
    }
    if !cfg.enabled && key_settled && applied.public_key.is_none() {
        f.clean_off = Some(cfg);
    }
    if rotate {
        f.seen_published = None;
    }
}

/// Runs until the task is aborted: takes its settings (FelixConfiguration merged by
/// [`crate::settings::merge`]) and the Nodes with their published keys from the datastore feed
/// cluster mode already follows (`states`), the routes felix programs from `models`, and
/// applies both families on every change and every `resync`.
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
    let mut families = [Family::new(false, protocol), Family::new(true, protocol)];
    let mut warned: BTreeSet<String> = BTreeSet::new();
    let mut tick = tokio::time::interval(resync);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let resync = tokio::select! {
            r = states.changed() => if r.is_err() { return } else { false },
            r = models.changed() => if r.is_err() { return } else { false },
            _ = tick.tick() => true,
        };
        // The watch channels hold the latest state only: an apply (it runs `wg`) never falls
        // behind a busy cluster. The settings are read while the state is borrowed; it is
        // copied only when a family has something to do.
        let (settings, state) = {
            let borrowed = states.borrow_and_update();
            let Some(state) = borrowed.as_ref() else {
                continue;
            };
            let global = state.felix_configs.get(crate::settings::GLOBAL);
            let mine = state
                .felix_configs
                .get(&crate::settings::node_config_name(&node));
            let (settings, _) = crate::settings::merge(global, mine, &Default::default());
            for (field, why) in Config::not_acted_set(global, mine) {
                if warned.insert(field.to_string()) {
                    warn!(field = %format!("FelixConfiguration spec.{field}"), reason = why, "field accepted but not acted on");
                }
            }
            let idle = !resync
                && families.iter().all(|f| {
                    let keys = if f.v6 {
                        &state.wireguard_keys_v6
                    } else {
                        &state.wireguard_keys
                    };
                    f.idle(&settings, keys.contains_key(&node))
                });
            if idle {
                continue;
            }
            (settings, state.clone())
        };
        let routes: Vec<RemoteRoute> = models
            .borrow()
            .as_ref()
            .map(|m| m.remote_routes.clone())
            .unwrap_or_default();
        for f in families.iter_mut() {
            apply_family(
                f,
                Pass {
                    store: &store,
                    node: &node,
                    state: &state,
                    settings: &settings,
                    routes: &routes,
                    health: &health,
                    metrics: &metrics,
                    warned: &mut warned,
                },
            )
            .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> crate::settings::Settings {
        crate::settings::merge(None, None, &Default::default()).0
    }

    #[test]
    fn an_off_family_is_idle_for_changes_only_once_cleaned_under_the_same_config() {
        let s = settings();
        for v6 in [false, true] {
            let mut f = Family::new(v6, 81);
            assert!(
                !f.idle(&s, false),
                "never cleaned yet: the first pass looks"
            );
            let off = if v6 {
                s.wireguard_v6.clone()
            } else {
                s.wireguard.clone()
            }
            .expect("the defaults parse");
            assert!(!off.enabled, "WireGuard is off by default");
            f.clean_off = Some(off.clone());
            assert!(
                f.idle(&s, false),
                "cleaned, still off: a change costs nothing"
            );
            assert!(!f.idle(&s, true), "a key of the family is still published");
            f.clean_off = Some(Config {
                table: off.table + 1,
                ..off.clone()
            });
            assert!(
                !f.idle(&s, false),
                "cleaned under another table: look again"
            );
            let mut on = s.clone();
            let enabled = Ok(Config {
                enabled: true,
                ..off.clone()
            });
            if v6 {
                on.wireguard_v6 = enabled;
            } else {
                on.wireguard = enabled;
            }
            f.clean_off = Some(off);
            assert!(!f.idle(&on, false), "turned on: applied at once");
        }
    }
}
