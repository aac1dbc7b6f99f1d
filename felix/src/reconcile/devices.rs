//! The tunnel devices felix owns (`vxlan.margay`, `tunl0`), the VXLAN device's neighbour and
//! FDB entries, and the per-interface sysctls. A device the kernel cannot create is a
//! not-ready reason, never a stop: everything else keeps being programmed.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::{IpNet, Ipv4Net};

use super::Reconciler;
use super::adopt::{self, CALICO_VXLAN_DEVICE};
use crate::desired::{
    IPIP_DEVICE, IPIP_OVERHEAD, IpipDevice, VXLAN_DEVICE, VXLAN_OVERHEAD, VxlanDevice,
};
use crate::netlink::{FdbEntry, Link, Neighbour, NetlinkError, VxlanSpec, sysctl};

impl Reconciler {
    pub(super) fn is_tunnel(&self, name: &str) -> bool {
        name == VXLAN_DEVICE || name == CALICO_VXLAN_DEVICE || name == IPIP_DEVICE
    }

    /// Picks the VXLAN device ([`adopt::vxlan_device`]); when that changes, every route
    /// through it is planned again.
    fn choose_vxlan_device(&mut self) {
        let calico_is_vxlan = self
            .links
            .get(CALICO_VXLAN_DEVICE)
            .is_some_and(|l| l.kind.as_deref() == Some("vxlan"));
        let dev = adopt::vxlan_device(
            VXLAN_DEVICE,
            self.links.contains_key(VXLAN_DEVICE),
            calico_is_vxlan,
            &self.cfg.adopt,
        );
        if dev != self.vxlan_device {
            tracing::info!(
                device = dev,
                "VXLAN routes go through this device (taking over calico-node's)"
            );
            self.vxlan_device = dev;
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
                self.choose_vxlan_device();
                let r = self.ensure_vxlan(&v);
                self.device_outcome("vxlan", self.vxlan_device, r);
            }
            None => self.remove_device(self.vxlan_device),
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

    /// The MTU of the interface holding this node's address.
    fn host_mtu(&mut self) -> Option<u32> {
        let node = self.node_address()?;
        let addrs = self.dp.all_addresses().ok()?;
        let index = addrs
            .iter()
            .find(|(_, a)| a.addr() == std::net::IpAddr::V4(node))
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

    /// Brings an existing device to the wanted MTU, MAC and state, and its tunnel address.
    fn shape_device(
        &mut self,
        name: &str,
        mtu: Option<u32>,
        mac: Option<[u8; 6]>,
        tunnel_addr: Option<Ipv4Addr>,
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
            let want = IpNet::V4(Ipv4Net::new(addr, 32).expect("32 is a valid length"));
            let have = self.dp.addresses(link.index)?;
            if !have.contains(&want) {
                self.dp.add_address(link.index, want)?;
            }
            for stale in have
                .into_iter()
                .filter(|a| a.addr().is_ipv4() && *a != want)
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

    fn ensure_vxlan(&mut self, v: &VxlanDevice) -> Result<(), NetlinkError> {
        let mtu = v
            .mtu
            .or_else(|| self.host_mtu().map(|m| m.saturating_sub(VXLAN_OVERHEAD)));
        let name = self.vxlan_device;
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

        let want_n: BTreeSet<Neighbour> = self
            .desired
            .vteps
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

        let want_f: BTreeSet<FdbEntry> = self
            .desired
            .vteps
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

    fn ensure_ipip(&mut self, t: &IpipDevice) -> Result<(), NetlinkError> {
        let mtu = t
            .mtu
            .or_else(|| self.host_mtu().map(|m| m.saturating_sub(IPIP_OVERHEAD)));
        if !self.links.contains_key(IPIP_DEVICE) {
            match self.dp.create_ipip(IPIP_DEVICE) {
                Ok(()) => tracing::info!(device = IPIP_DEVICE, "created"),
                // Loading the module made the fallback tunl0 appear under us.
                Err(NetlinkError::Kernel { errno }) if errno == libc::EEXIST => {}
                Err(e) => return Err(e),
            }
        }
        self.shape_device(IPIP_DEVICE, mtu, None, t.tunnel_addr)?;
        Ok(())
    }
}
