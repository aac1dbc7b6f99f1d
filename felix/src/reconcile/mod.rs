//! The reconciler: makes the kernel's routes match the [`Desired`] set, and keeps them so.
//!
//! Ownership: felix's routes carry its own protocol number ([`DEFAULT_PROTOCOL`], 81; 80 is
//! Calico's felix, so routes a Calico install left behind are neither ours nor touched). A
//! route of any other protocol is never replaced or deleted: a desired route whose key holds a
//! foreign route is reported as a conflict and left out, unless its protocol is one felix was
//! told to adopt ([`adopt`]: taking over a node calico-node wired). Deletes name our protocol,
//! so even a stale cache cannot make the kernel delete someone else's route. The one exception
//! is Calico's `removeExternalRoutes` (FelixConfiguration, default true): a route of another
//! protocol through a workload interface (an `interfacePrefix` name) is removed, or replaced
//! when felix wants its destination; `false` leaves those alone as well.
//!
//! Cost: a cached view of the managed table (one entry per destination) is kept current from
//! netlink notifications; a change to the model or a notification marks destinations dirty, and
//! [`Reconciler::flush`] only looks at those. A full dump happens at [`Reconciler::resync`]
//! (start, periodically, and after a notification overrun).
//!
//! Zero churn: at start the dump is compared with the desired set field by field (type, scope,
//! gateway, onlink, device when we name one); a route already right is left as it is. While
//! the remote table is incomplete ([`Reconciler::hold_stale_remote`]), a route of ours through
//! a gateway that the desired set lacks is kept: it is a remote route still on its way.

pub mod adopt;
mod devices;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

use ipnet::IpNet;

use crate::desired::{
    Desired, DesiredRoute, RouteClass, Target, VXLAN_DEVICE, VXLAN_V6_DEVICE, Vtep,
};
use crate::health::{Health, KindLabel, Metrics};
use crate::incremental::DesiredDelta;
use crate::netlink::{
    Dataplane, Event, KernelRoute, Link, NetlinkError, NextHop, RouteKind, RouteOp, SCOPE_LINK,
    SCOPE_UNIVERSE, TABLE_MAIN,
};

/// felix's route protocol number (not in /etc/iproute2/rt_protos; Calico's felix uses 80).
pub const DEFAULT_PROTOCOL: u8 = 81;

/// How the reconciler marks and places its routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconcileConfig {
    /// rtm_protocol of felix's routes.
    pub protocol: u8,
    /// The routing table felix manages.
    pub table: u32,
    /// Protocols whose routes at a desired destination felix replaces with its own.
    pub adopt: adopt::ProtocolSet,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        ReconcileConfig {
            protocol: DEFAULT_PROTOCOL,
            table: TABLE_MAIN,
            adopt: adopt::ProtocolSet::default(),
        }
    }
}

/// What one flush or resync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub created: usize,
    pub replaced: usize,
    pub deleted: usize,
    /// Desired routes held back because their key holds another protocol's route.
    pub conflicts: usize,
    /// Desired routes waiting for their device (missing or down).
    pub pending: usize,
    pub errors: usize,
}

/// The reconciler. Lives on a thread inside the node's network namespace.
pub struct Reconciler {
    dp: Dataplane,
    cfg: ReconcileConfig,
    desired: Desired,
    /// Desired destinations by the device their route names.
    by_device: HashMap<String, BTreeSet<IpNet>>,
    /// The kernel's routes of the managed table with metric 0, by destination (any protocol).
    kernel: HashMap<IpNet, KernelRoute>,
    links: HashMap<String, Link>,
    dirty: BTreeSet<IpNet>,
    devices_dirty: bool,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    /// Conflicts already logged (so a standing conflict logs once).
    logged_conflicts: BTreeSet<IpNet>,
    /// The natOutgoing tables (nftables; its errors never stop the routes).
    nat: crate::nat::NatKeeper,
    /// Keep our gateway routes the desired set lacks (the remote table is incomplete).
    hold_stale_remote: bool,
    /// Such routes kept at the last flush.
    held: BTreeSet<IpNet>,
    /// The device routes through [`VXLAN_DEVICE`] go out of: that one, or calico-node's when
    /// adopting it ([`adopt::vxlan_device`]).
    vxlan_device: &'static str,
    /// The same for [`VXLAN_V6_DEVICE`] (calico-node's `vxlan-v6.calico` when adopting it).
    vxlan_v6_device: &'static str,
    /// VTEPs that came (true) or went (false) since the last flush, by family (IPv4, IPv6):
    /// written one by one unless the devices are redone whole.
    vtep_writes: [Vec<(Vtep, bool)>; 2],
    /// The class each destination is counted under in the routes gauge (desired and in the
    /// kernel as ours), and the counts: kept per flushed destination, not recounted.
    counted: HashMap<IpNet, RouteClass>,
    route_counts: BTreeMap<RouteClass, i64>,
}

impl Reconciler {
    /// A reconciler with an empty desired set; call [`Reconciler::set_desired`] and
    /// [`Reconciler::resync`] next.
    pub fn new(
        dp: Dataplane,
        cfg: ReconcileConfig,
        health: Arc<Health>,
        metrics: Arc<Metrics>,
    ) -> Reconciler {
        Reconciler {
            dp,
            cfg,
            desired: Desired::default(),
            by_device: HashMap::new(),
            kernel: HashMap::new(),
            links: HashMap::new(),
            dirty: BTreeSet::new(),
            devices_dirty: true,
            nat: crate::nat::NatKeeper::new(crate::nat::Nft::new(), health.clone()),
            health,
            metrics,
            logged_conflicts: BTreeSet::new(),
            hold_stale_remote: false,
            held: BTreeSet::new(),
            vxlan_device: VXLAN_DEVICE,
            vxlan_v6_device: VXLAN_V6_DEVICE,
            vtep_writes: [Vec::new(), Vec::new()],
            counted: HashMap::new(),
            route_counts: BTreeMap::new(),
        }
    }

    /// Keeps (true) or lets go (false) our routes through a gateway that the desired set lacks:
    /// remote routes whose table is still coming in. Letting go marks the kept ones, so the
    /// next flush removes those still missing.
    pub fn hold_stale_remote(&mut self, hold: bool) {
        self.hold_stale_remote = hold;
        if !hold {
            let held = std::mem::take(&mut self.held);
            if !held.is_empty() {
                tracing::info!(
                    routes = held.len(),
                    "remote table complete: removing the remote routes it lacks"
                );
            }
            self.dirty.extend(held);
        }
    }

    /// The current desired set.
    pub fn desired(&self) -> &Desired {
        &self.desired
    }

    /// The prefixes this node originates (for bgpd).
    pub fn originate(&self) -> &BTreeSet<IpNet> {
        &self.desired.originate
    }

    /// Replaces the desired set; marks exactly the destinations whose route changed.
    pub fn set_desired(&mut self, new: Desired) {
        for (dst, r) in &new.routes {
            if self.desired.routes.get(dst) != Some(r) {
                self.dirty.insert(*dst);
            }
        }
        for dst in self.desired.routes.keys() {
            if !new.routes.contains_key(dst) {
                self.dirty.insert(*dst);
            }
        }
        if new.vxlan != self.desired.vxlan
            || new.ipip != self.desired.ipip
            || new.vteps != self.desired.vteps
            || new.node_address != self.desired.node_address
            || new.vxlan_v6 != self.desired.vxlan_v6
            || new.vteps_v6 != self.desired.vteps_v6
            || new.node_address_v6 != self.desired.node_address_v6
        {
            self.devices_dirty = true;
        }
        if new.remove_external_routes != self.desired.remove_external_routes
            || new.workload_prefixes != self.desired.workload_prefixes
        {
            // What counts as an external route to remove changed: look at every route again.
            self.dirty.extend(self.kernel.keys().copied());
        }
        let new_ifaces: Vec<String> = new
            .workload_interfaces
            .difference(&self.desired.workload_interfaces)
            .cloned()
            .collect();
        for p in &new.problems {
            tracing::warn!(problem = %p, "input left out");
        }
        for dst in new.shadowed.difference(&self.desired.shadowed) {
            tracing::warn!(route = %dst, "a route learned from BGP is this node's own workload address or block: not programmed");
        }
        self.metrics.shadowed_routes.set(new.shadowed.len() as i64);
        self.by_device.clear();
        for (dst, r) in &new.routes {
            for dev in r.target.devices() {
                self.by_device
                    .entry(dev.to_string())
                    .or_default()
                    .insert(*dst);
            }
        }
        self.desired = new;
        self.ipv6_forwarding();
        for ifname in new_ifaces {
            self.workload_sysctls(&ifname);
        }
    }

    /// Applies a change of the desired set ([`crate::incremental`]): marks the destinations
    /// whose route changed and queues the VTEP entries that came or went. Costs what the delta
    /// holds, whatever the size of the desired set.
    pub fn apply_delta(&mut self, delta: DesiredDelta) {
        let mut ipv6 = false;
        for (dst, new) in &delta.routes {
            let old = self.desired.routes.get(dst);
            if old == new.as_ref() {
                continue;
            }
            if let Some(old) = old {
                for dev in old.target.devices() {
                    if let Some(dsts) = self.by_device.get_mut(dev) {
                        dsts.remove(dst);
                    }
                }
            }
            if let Some(new) = new {
                for dev in new.target.devices() {
                    self.by_device
                        .entry(dev.to_string())
                        .or_default()
                        .insert(*dst);
                }
            }
            ipv6 |= dst.addr().is_ipv6() && new.is_some();
            self.dirty.insert(*dst);
        }
        if let Some(problems) = &delta.problems {
            for p in problems
                .iter()
                .filter(|p| !self.desired.problems.contains(p))
            {
                tracing::warn!(problem = %p, "input left out");
            }
        }
        for (dst, _) in delta.shadowed.iter().filter(|(_, s)| *s) {
            tracing::warn!(route = %dst, "a route learned from BGP is this node's own workload address or block: not programmed");
        }
        self.vtep_writes[0].extend(delta.vteps.iter().copied());
        self.vtep_writes[1].extend(delta.vteps_v6.iter().copied());
        delta.apply_to(&mut self.desired);
        self.metrics
            .shadowed_routes
            .set(self.desired.shadowed.len() as i64);
        if ipv6 {
            self.ipv6_forwarding();
        }
    }

    /// Full resync: re-reads links and routes, fixes devices, then every destination.
    pub fn resync(&mut self) -> Result<Report, NetlinkError> {
        let start = Instant::now();
        self.nat.resync(&self.desired.nat);
        self.reload_links()?;
        self.devices_dirty = true;
        self.ensure_devices();
        if let Err(e) = crate::netlink::sysctl::enable_forwarding() {
            tracing::warn!(error = %e, "cannot enable IPv4 forwarding");
        }
        self.ipv6_forwarding();
        let ifaces: Vec<String> = self.desired.workload_interfaces.iter().cloned().collect();
        for ifname in ifaces {
            self.workload_sysctls(&ifname);
        }
        self.kernel = self
            .dp
            .routes(Some(self.cfg.table), None)?
            .into_iter()
            .filter(|r| r.priority == 0)
            .map(|r| (r.dst, r))
            .collect();
        self.dirty.extend(self.desired.routes.keys().copied());
        let ours: Vec<IpNet> = self
            .kernel
            .values()
            .filter(|r| r.protocol == self.cfg.protocol || self.is_external(r))
            .map(|r| r.dst)
            .collect();
        self.dirty.extend(ours);
        let report = self.flush()?;
        self.metrics
            .resync_seconds
            .observe(start.elapsed().as_secs_f64());
        self.health.set_synced();
        tracing::debug!(?report, elapsed = ?start.elapsed(), "resync done");
        Ok(report)
    }

    /// Takes one kernel notification into the cached view and marks what it affects.
    pub fn handle_event(&mut self, ev: Event) {
        match ev {
            Event::RouteAdded(r) => {
                if r.table == self.cfg.table && r.priority == 0 {
                    self.dirty.insert(r.dst);
                    self.kernel.insert(r.dst, r);
                }
            }
            Event::RouteDeleted(r) => {
                if r.table == self.cfg.table && r.priority == 0 {
                    self.dirty.insert(r.dst);
                    if self
                        .kernel
                        .get(&r.dst)
                        .is_some_and(|k| k.protocol == r.protocol && k.kind == r.kind)
                    {
                        self.kernel.remove(&r.dst);
                    }
                }
            }
            Event::LinkChanged(l) => self.link_changed(l),
            Event::LinkDeleted(l) => {
                self.links.remove(&l.name);
                self.forget_routes_on(l.index);
                self.mark_device(&l.name);
                if self.is_tunnel(&l.name) {
                    self.devices_dirty = true;
                }
            }
            // The caller resyncs on overrun.
            Event::Overrun => {}
        }
    }

    /// Programs every dirty destination (and devices, if they changed), in batches.
    pub fn flush(&mut self) -> Result<Report, NetlinkError> {
        self.nat.flush(&self.desired.nat);
        if !self.devices_dirty && self.vtep_writes.iter().any(|w| !w.is_empty()) {
            // One VTEP's entries, not the device's whole tables; any doubt redoes them whole.
            if let Err(e) = self.write_vteps() {
                tracing::debug!(error = %e, "VTEP entries: redoing the device's tables");
                self.devices_dirty = true;
            }
        }
        if self.devices_dirty {
            self.vtep_writes = [Vec::new(), Vec::new()];
            self.ensure_devices();
        }
        let mut report = Report::default();
        let dirty: Vec<IpNet> = std::mem::take(&mut self.dirty).into_iter().collect();
        let mut ops = Vec::new();
        for dst in &dirty {
            if let Some(op) = self.plan(*dst, &mut report) {
                ops.push(op);
            }
        }
        let result = if ops.is_empty() {
            Ok(())
        } else {
            self.dp.apply_routes(&ops).map(|results| {
                for (op, res) in ops.into_iter().zip(results) {
                    self.record(op, res, &mut report);
                }
            })
        };
        for dst in dirty {
            self.recount(dst);
        }
        self.update_route_gauges();
        result.map(|()| report)
    }

    /// What to do at `dst`, if anything.
    fn plan(&mut self, dst: IpNet, report: &mut Report) -> Option<RouteOp> {
        let want = self.desired.routes.get(&dst);
        let have = self.kernel.get(&dst);
        let ours = have.is_some_and(|h| h.protocol == self.cfg.protocol);
        let external = have.is_some_and(|h| self.is_external(h));
        let Some(want) = want else {
            self.logged_conflicts.remove(&dst);
            if external {
                let h = have.cloned().expect("external implies present");
                tracing::info!(%dst, protocol = h.protocol, "removing a route through a workload interface that felix did not program (removeExternalRoutes)");
                return Some(RouteOp::Delete(h));
            }
            if ours
                && self.hold_stale_remote
                && have.is_some_and(|h| h.gateway.is_some() || !h.multipath.is_empty())
            {
                self.held.insert(dst);
                return None;
            }
            self.held.remove(&dst);
            return ours.then(|| RouteOp::Delete(have.cloned().expect("ours implies present")));
        };
        self.held.remove(&dst);
        let Some(kr) = self.to_kernel(want) else {
            report.pending += 1;
            // Its device is gone: a route of ours still there is stale.
            return ours.then(|| RouteOp::Delete(have.cloned().expect("ours implies present")));
        };
        match have {
            None => Some(RouteOp::Create(kr)),
            Some(h) if ours => (!satisfies(h, &kr)).then_some(RouteOp::Replace(kr)),
            Some(h) if external => {
                tracing::info!(%dst, protocol = h.protocol, "replacing a route through a workload interface that felix did not program (removeExternalRoutes)");
                Some(RouteOp::Replace(kr))
            }
            Some(h) if self.cfg.adopt.contains(h.protocol) => {
                tracing::info!(%dst, protocol = h.protocol, "adopting the route (replaced in place)");
                Some(RouteOp::Replace(kr))
            }
            Some(h) => {
                report.conflicts += 1;
                self.metrics.route_conflicts.inc();
                if self.logged_conflicts.insert(dst) {
                    tracing::warn!(
                        %dst, protocol = h.protocol,
                        "a route of another protocol holds this destination; leaving it alone"
                    );
                }
                None
            }
        }
    }

    /// Takes the kernel's answer to one write into the cached view.
    fn record(&mut self, op: RouteOp, res: Result<(), NetlinkError>, report: &mut Report) {
        let errno = res.as_ref().err().and_then(NetlinkError::errno);
        match (op, res) {
            (RouteOp::Create(r), Ok(())) => {
                report.created += 1;
                self.metrics.wrote("create");
                self.kernel.insert(r.dst, r);
            }
            (RouteOp::Replace(r), Ok(())) => {
                report.replaced += 1;
                self.metrics.wrote("replace");
                self.kernel.insert(r.dst, r);
            }
            (RouteOp::Delete(r), Ok(())) => {
                report.deleted += 1;
                self.metrics.wrote("delete");
                self.kernel.remove(&r.dst);
            }
            (RouteOp::Delete(r), Err(_)) if errno == Some(libc::ESRCH) => {
                // Already gone (a stale notification told us otherwise).
                self.kernel.remove(&r.dst);
            }
            (RouteOp::Create(r), Err(_)) if errno == Some(libc::EEXIST) => {
                // Our view was behind; the notification for that route is on its way.
                tracing::debug!(dst = %r.dst, "route already present; waiting for its notification");
            }
            (op, Err(_)) if errno == Some(libc::ENETDOWN) || errno == Some(libc::ENODEV) => {
                report.pending += 1;
                tracing::debug!(?op, "device not ready; retried when it changes");
            }
            (op, Err(e)) => {
                report.errors += 1;
                self.metrics.netlink_errors.inc();
                tracing::warn!(?op, error = %e, "route write failed");
            }
        }
    }

    /// The kernel route for a desired route, with devices resolved; `None` while a device it
    /// names is missing or down.
    fn to_kernel(&self, r: &DesiredRoute) -> Option<KernelRoute> {
        let mut k = KernelRoute {
            dst: r.dst,
            table: self.cfg.table,
            protocol: self.cfg.protocol,
            kind: RouteKind::Unicast,
            scope: SCOPE_UNIVERSE,
            gateway: None,
            oif: None,
            onlink: false,
            priority: 0,
            multipath: Vec::new(),
            src: r.src,
        };
        match &r.target {
            Target::Blackhole => k.kind = RouteKind::Blackhole,
            Target::Device { ifname } => {
                // IPv6 routes have no scope in the kernel (it reports every one as universe).
                if r.dst.addr().is_ipv4() {
                    k.scope = SCOPE_LINK;
                }
                k.oif = Some(self.usable_link(ifname)?);
            }
            Target::Gateway { via, dev, onlink } => {
                k.gateway = Some(*via);
                k.onlink = *onlink;
                if let Some(dev) = dev {
                    k.oif = Some(self.usable_link(dev)?);
                }
            }
            Target::Multipath { hops } => {
                for h in hops {
                    let oif = match &h.dev {
                        Some(dev) => Some(self.usable_link(dev)?),
                        None => None,
                    };
                    k.multipath.push(NextHop {
                        gateway: h.via,
                        oif,
                        onlink: h.onlink,
                    });
                }
            }
        }
        Some(k)
    }

    /// Whether `r` is another program's route through a workload interface that felix is to
    /// remove (FelixConfiguration `removeExternalRoutes`, Calico's default true): any protocol
    /// but felix's own, on an interface whose name starts with an `interfacePrefix`.
    fn is_external(&self, r: &KernelRoute) -> bool {
        if !self.desired.remove_external_routes || r.protocol == self.cfg.protocol {
            return false;
        }
        let Some(oif) = r.oif else {
            return false;
        };
        self.links.values().any(|l| {
            l.index == oif
                && crate::settings::is_workload_interface(&self.desired.workload_prefixes, &l.name)
        })
    }

    fn usable_link(&self, name: &str) -> Option<u32> {
        let name = match name {
            VXLAN_DEVICE => self.vxlan_device,
            VXLAN_V6_DEVICE => self.vxlan_v6_device,
            _ => name,
        };
        self.links.get(name).filter(|l| l.up).map(|l| l.index)
    }

    fn reload_links(&mut self) -> Result<(), NetlinkError> {
        self.links = self
            .dp
            .links()?
            .into_iter()
            .map(|l| (l.name.clone(), l))
            .collect();
        Ok(())
    }

    fn link_changed(&mut self, l: Link) {
        let old = self.links.insert(l.name.clone(), l.clone());
        let changed = old
            .as_ref()
            .is_none_or(|o| o.index != l.index || o.up != l.up);
        if !changed {
            return;
        }
        if let Some(o) = old.filter(|o| o.up && (!l.up || o.index != l.index)) {
            // IPv4 drops routes through a device going down without telling anyone.
            self.forget_routes_on(o.index);
        }
        self.mark_device(&l.name);
        if self.desired.workload_interfaces.contains(&l.name) {
            self.workload_sysctls(&l.name);
        }
        if self.is_tunnel(&l.name) {
            self.devices_dirty = true;
        }
    }

    /// Drops cached routes through link `index` and marks their destinations.
    fn forget_routes_on(&mut self, index: u32) {
        let gone: Vec<IpNet> = self
            .kernel
            .values()
            .filter(|r| {
                r.kind == RouteKind::Unicast
                    && (r.oif == Some(index) || r.multipath.iter().any(|h| h.oif == Some(index)))
            })
            .map(|r| r.dst)
            .collect();
        for dst in gone {
            self.kernel.remove(&dst);
            self.dirty.insert(dst);
        }
    }

    fn mark_device(&mut self, name: &str) {
        // Desired routes name felix's VXLAN devices, whichever devices carry them.
        let name = if name == self.vxlan_device {
            VXLAN_DEVICE
        } else if name == self.vxlan_v6_device {
            VXLAN_V6_DEVICE
        } else {
            name
        };
        if let Some(dsts) = self.by_device.get(name) {
            self.dirty.extend(dsts.iter().copied());
        }
    }

    /// Counts `dst` in the routes gauge again: under its class when felix wants a route
    /// there and the kernel has felix's (every change to either marks `dst` for a flush).
    fn recount(&mut self, dst: IpNet) {
        let now = self
            .desired
            .routes
            .get(&dst)
            .filter(|_| {
                self.kernel
                    .get(&dst)
                    .is_some_and(|k| k.protocol == self.cfg.protocol)
            })
            .map(|r| r.class);
        let before = match now {
            Some(class) => self.counted.insert(dst, class),
            None => self.counted.remove(&dst),
        };
        if before != now {
            if let Some(c) = before {
                *self.route_counts.entry(c).or_default() -= 1;
            }
            if let Some(c) = now {
                *self.route_counts.entry(c).or_default() += 1;
            }
        }
    }

    fn update_route_gauges(&self) {
        for class in RouteClass::ALL {
            self.metrics
                .routes
                .get_or_create(&KindLabel {
                    kind: class.as_str().to_string(),
                })
                .set(self.route_counts.get(&class).copied().unwrap_or(0));
        }
    }

    /// IPv6 forwarding on, once any route felix wants is IPv6 (a dual-stack or IPv6 node).
    fn ipv6_forwarding(&self) {
        if self.desired.routes.keys().any(|d| d.addr().is_ipv6())
            && let Err(e) = crate::netlink::sysctl::enable_forwarding_v6()
        {
            tracing::warn!(error = %e, "cannot enable IPv6 forwarding");
        }
    }

    fn node_address(&self) -> Option<Ipv4Addr> {
        self.desired.node_address
    }
}

/// Whether the kernel's route `have` already does what `want` asks (the device only counts
/// when `want` names one: the kernel fills it in for a plain `via`).
fn satisfies(have: &KernelRoute, want: &KernelRoute) -> bool {
    have.protocol == want.protocol
        && have.kind == want.kind
        && have.scope == want.scope
        && have.gateway == want.gateway
        && have.onlink == want.onlink
        && have.src == want.src
        && (want.oif.is_none() || have.oif == want.oif)
        && have.multipath.len() == want.multipath.len()
        && want.multipath.iter().all(|w| {
            have.multipath.iter().any(|h| {
                h.gateway == w.gateway
                    && h.onlink == w.onlink
                    && (w.oif.is_none() || h.oif == w.oif)
            })
        })
}
