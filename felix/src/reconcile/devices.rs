//! The tunnel devices felix owns (`vxlan.margay`, `vxlan-v6.margay`, `tunl0`), the VXLAN
//! devices' neighbour and FDB entries, and the per-interface sysctls. A device the kernel cannot create is a
//! not-ready reason, never a stop: everything else keeps being programmed.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;

use super::Reconciler;
use super::adopt::{self, CALICO_VXLAN_DEVICE, CALICO_VXLAN_V6_DEVICE};
use crate::desired::{
    IPIP_DEVICE, IPIP_OVERHEAD, IpipDevice, VXLAN_DEVICE, VXLAN_OVERHEAD, VXLAN_V6_DEVICE,
    VXLAN_V6_OVERHEAD, Vtep, VxlanDevice,
};
use crate::netlink::{FdbEntry, Link, Neighbour, NetlinkError, VxlanSpec, sysctl};

impl Reconciler {
    pub(super) fn is_tunnel(&self, name: &str) -> bool {
        [
            VXLAN_DEVICE,
            CALICO_VXLAN_DEVICE,
            VXLAN_V6_DEVICE,
            CALICO_VXLAN_V6_DEVICE,
            IPIP_DEVICE,
        ]
        .contains(&name)
    }

    /// Picks the VXLAN device of a family ([`adopt::vxlan_device`]); when that changes, every
    /// route through it is planned again.
    fn choose_vxlan_device(&mut self, v6: bool) {
        let (own, calico) = if v6 {
            (VXLAN_V6_DEVICE, CALICO_VXLAN_V6_DEVICE)
        } else {
            (VXLAN_DEVICE, CALICO_VXLAN_DEVICE)
        };
        let calico_is_vxlan = self
            .links
            .get(calico)
            .is_some_and(|l| l.kind.as_deref() == Some("vxlan"));
        let dev = adopt::vxlan_device(
            own,
            self.links.contains_key(own),
            calico,
            calico_is_vxlan,
            &self.cfg.adopt,
        );
        let slot = if v6 {
            &mut self.vxlan_v6_device
        } else {
            &mut self.vxlan_device
        };
        if dev != *slot {
            tracing::info!(
                device = dev,
                "VXLAN routes go through this device (taking over calico-node's)"
            );
            *slot = dev;
            self.mark_device(dev);
        }
    }

    /// Calico's sysctls on the host side of a workload veth, once the link exists.
    pub(super) fn workload_sysctls(&self, ifname: &str) {
        if !self.links.contains_key(ifname) {
            return;
        }
        if let Err(e) = sysctl::workload_interface(ifname) {
            self.metrics.netlink_errors.inc();
            tracing::warn!(ifname, error = %e, "cannot set workload interface sysctls");
        }
    }

    /// Creates, fixes or removes the tunnel devices the desired set calls for.
    pub(super) fn ensure_devices(&mut self) {
        self.devices_dirty = false;
        match self.desired.vxlan.clone() {
            Some(v) => {
                self.choose_vxlan_device(false);
                let vteps = self.desired.vteps.clone();
                let r = self.ensure_vxlan(&v, self.vxlan_device, &vteps, VXLAN_OVERHEAD);
                self.device_outcome("vxlan", self.vxlan_device, r);
            }
            None => self.remove_device(self.vxlan_device),
        }
        match self.desired.vxlan_v6.clone() {
            Some(v) => {
                self.choose_vxlan_device(true);
                let vteps = self.desired.vteps_v6.clone();
                let r = self.ensure_vxlan(&v, self.vxlan_v6_device, &vteps, VXLAN_V6_OVERHEAD);
                self.device_outcome("vxlan-v6", self.vxlan_v6_device, r);
            }
            None => self.remove_device(self.vxlan_v6_device),
        }
        match self.desired.ipip.clone() {
            Some(t) => {
                let r = self.ensure_ipip(&t);
                self.device_outcome("ipip", IPIP_DEVICE, r);
            }
            // tunl0 is the ipip module's own device and cannot be deleted; leave it.
            None => self.health.clear_reason("ipip"),
        }
    }

    fn device_outcome(&mut self, key: &str, name: &str, r: Result<(), NetlinkError>) {
        match r {
            Ok(()) => self.health.clear_reason(key),
            Err(e) => {
                let reason = match &e {
                    NetlinkError::Unsupported { .. } => {
                        format!("{e}; routes through {name} are not programmed, everything else is")
                    }
                    _ => format!("cannot set up {name}: {e}"),
                };
                let new = self
                    .health
                    .readiness()
                    .err()
                    .is_none_or(|rs| !rs.contains(&reason));
                if new {
                    tracing::error!(device = name, error = %e, "{reason}");
                }
                self.metrics.netlink_errors.inc();
                self.health.set_reason(key, reason);
            }
        }
    }

    fn remove_device(&mut self, name: &str) {
        if let Some(l) = self.links.get(name).cloned() {
            match self.dp.delete_link(l.index) {
                Ok(()) => {
                    tracing::info!(device = name, "removed: no pool needs it");
                    self.links.remove(name);
                }
                Err(e) => {
                    self.metrics.netlink_errors.inc();
                    tracing::warn!(device = name, error = %e, "cannot remove device");
                }
            }
        }
    }

    /// The MTU of the interface holding this node's address `node`.
    fn host_mtu(&mut self, node: IpAddr) -> Option<u32> {
        let addrs = self.dp.all_addresses().ok()?;
        let index = addrs
            .iter()
            .find(|(_, a)| a.addr() == node)
            .map(|(i, _)| *i)?;
        self.links
            .values()
            .find(|l| l.index == index)
            .map(|l| l.mtu)
    }

    fn refresh_link(&mut self, name: &str) -> Result<Link, NetlinkError> {
        let l = self.dp.link(name)?;
        self.links.insert(name.to_string(), l.clone());
        Ok(l)
    }

    /// Brings an existing device to the wanted MTU, MAC and state, and its tunnel address (a
    /// /32 or /128; other addresses of that family go, except IPv6 link-local ones).
    fn shape_device(
        &mut self,
        name: &str,
        mtu: Option<u32>,
        mac: Option<[u8; 6]>,
        tunnel_addr: Option<IpAddr>,
    ) -> Result<Link, NetlinkError> {
        let mut link = self.refresh_link(name)?;
        if let Some(m) = mtu.filter(|m| *m != link.mtu) {
            self.dp.set_mtu(link.index, m)?;
        }
        if let Some(m) = mac.filter(|m| Some(*m) != link.mac) {
            self.dp.set_mac(link.index, m)?;
        }
        if !link.up {
            self.dp.set_link_up(link.index, true)?;
        }
        link = self.refresh_link(name)?;
        if let Some(addr) = tunnel_addr {
            let want = IpNet::from(addr);
            let have = self.dp.addresses(link.index)?;
            if !have.contains(&want) {
                self.dp.add_address(link.index, want)?;
            }
            let link_local = |a: &IpNet| match a.addr() {
                IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
                IpAddr::V4(_) => false,
            };
            for stale in have
                .into_iter()
                .filter(|a| a.addr().is_ipv4() == addr.is_ipv4() && *a != want && !link_local(a))
            {
                self.dp.delete_address(link.index, stale)?;
            }
        }
        if let Err(e) = sysctl::tunnel_interface(name) {
            tracing::warn!(device = name, error = %e, "cannot set tunnel sysctls");
        }
        self.mark_device(name);
        Ok(link)
    }

    /// Makes VXLAN device `name` (either family) match `v`, with a neighbour and an FDB entry
    /// per remote VTEP; without a configured MTU it gets the underlay's less `overhead`.
    fn ensure_vxlan(
        &mut self,
        v: &VxlanDevice,
        name: &'static str,
        vteps: &[Vtep],
        overhead: u32,
    ) -> Result<(), NetlinkError> {
        let mtu = v
            .mtu
            .or_else(|| self.host_mtu(v.local).map(|m| m.saturating_sub(overhead)));
        if let Some(l) = self.links.get(name).cloned() {
            // VNI and port are fixed at creation: a device with others is made again.
            let have = self.dp.vxlan_params(name)?;
            if have != Some((v.vni, v.port)) {
                tracing::info!(
                    device = name,
                    ?have,
                    vni = v.vni,
                    port = v.port,
                    "VNI or port changed (FelixConfiguration): re-creating the device"
                );
                self.dp.delete_link(l.index)?;
                self.links.remove(name);
            }
        }
        if !self.links.contains_key(name) {
            self.dp.create_vxlan(&VxlanSpec {
                name: name.to_string(),
                vni: v.vni,
                port: v.port,
                local: v.local,
                mac: v.mac,
                mtu,
            })?;
            tracing::info!(device = name, local = %v.local, "created");
        }
        let link = self.shape_device(name, mtu, v.mac, v.tunnel_addr)?;

        let want_n: BTreeSet<Neighbour> = vteps
            .iter()
            .map(|t| Neighbour {
                ifindex: link.index,
                ip: t.tunnel_ip,
                mac: t.mac,
            })
            .collect();
        let have_n: BTreeSet<Neighbour> = self.dp.neighbours(link.index)?.into_iter().collect();
        for n in want_n.difference(&have_n) {
            self.dp.replace_neighbour(*n)?;
        }
        for n in have_n.difference(&want_n) {
            self.dp.delete_neighbour(*n)?;
        }

        let want_f: BTreeSet<FdbEntry> = vteps
            .iter()
            .map(|t| FdbEntry {
                ifindex: link.index,
                mac: t.mac,
                dst: t.node_ip,
            })
            .collect();
        let have_f: BTreeSet<FdbEntry> = self.dp.fdb(link.index)?.into_iter().collect();
        for f in want_f.difference(&have_f) {
            self.dp.replace_fdb(*f)?;
        }
        for f in have_f.difference(&want_f) {
            self.dp.delete_fdb(*f)?;
        }
        Ok(())
    }

    /// Writes the neighbour and FDB entries of the VTEPs that came or went since the last
    /// flush (a Node change: O(1) writes and no dump of the device's tables). Errs when a
    /// device is not there or a write fails: the caller redoes the devices whole.
    pub(super) fn write_vteps(&mut self) -> Result<(), NetlinkError> {
        let writes = std::mem::take(&mut self.vtep_writes);
        for (v6, changes) in [false, true].into_iter().zip(writes) {
            let (wanted, name) = if v6 {
                (self.desired.vxlan_v6.is_some(), self.vxlan_v6_device)
            } else {
                (self.desired.vxlan.is_some(), self.vxlan_device)
            };
            if changes.is_empty() || !wanted {
                continue;
            }
            let Some(ifindex) = self.links.get(name).map(|l| l.index) else {
                return Err(NetlinkError::Io {
                    context: format!("{name} is not there yet"),
                    source: std::io::Error::from(std::io::ErrorKind::NotFound),
                });
            };
            for (v, came) in changes {
                let list = if v6 {
                    &self.desired.vteps_v6
                } else {
                    &self.desired.vteps
                };
                // Another VTEP wanted with the same tunnel address (or MAC and node address)
                // keeps the entry a leaving one shared. The list is sorted by tunnel address.
                let at = list.partition_point(|x| x.tunnel_ip < v.tunnel_ip);
                let same_ip = list.get(at).filter(|x| x.tunnel_ip == v.tunnel_ip).copied();
                let same_fdb = list
                    .iter()
                    .any(|x| x.mac == v.mac && x.node_ip == v.node_ip);
                let neighbour = |mac| Neighbour {
                    ifindex,
                    ip: v.tunnel_ip,
                    mac,
                };
                let fdb = FdbEntry {
                    ifindex,
                    mac: v.mac,
                    dst: v.node_ip,
                };
                match (came, same_ip) {
                    (true, _) => self.dp.replace_neighbour(neighbour(v.mac))?,
                    (false, Some(other)) => self.dp.replace_neighbour(neighbour(other.mac))?,
                    (false, None) => self.dp.delete_neighbour(neighbour(v.mac))?,
                }
                match (came, same_fdb) {
                    (true, _) => self.dp.replace_fdb(fdb)?,
                    (false, true) => {}
                    (false, false) => self.dp.delete_fdb(fdb)?,
                }
            }
        }
        Ok(())
    }

    fn ensure_ipip(&mut self, t: &IpipDevice) -> Result<(), NetlinkError> {
        let node = self.node_address().map(IpAddr::V4);
        let mtu = t.mtu.or_else(|| {
            node.and_then(|n| self.host_mtu(n))
                .map(|m| m.saturating_sub(IPIP_OVERHEAD))
        });
        if !self.links.contains_key(IPIP_DEVICE) {
            match self.dp.create_ipip(IPIP_DEVICE) {
                Ok(()) => tracing::info!(device = IPIP_DEVICE, "created"),
                // Loading the module made the fallback tunl0 appear under us.
                Err(NetlinkError::Kernel { errno }) if errno == libc::EEXIST => {}
                Err(e) => return Err(e),
            }
        }
        self.shape_device(IPIP_DEVICE, mtu, None, t.tunnel_addr.map(IpAddr::V4))?;
        Ok(())
    }
}
