//! Sysctls through /proc/sys, the way Calico sets them for a node and its workload interfaces.
//!
//! /proc/sys/net shows the network namespace of the *calling thread*, so these must be called
//! from a thread inside the namespace the [`super::Dataplane`] was opened in.

use std::path::PathBuf;

use super::NetlinkError;

/// Writes `value` to the sysctl `name` (dotted, as `sysctl` spells it; an interface name in it
/// may contain dots, so pass it through [`iface_key`]).
pub fn set(name: &str, value: &str) -> Result<(), NetlinkError> {
    let path = path_of(name);
    if std::fs::read_to_string(&path)
        .map(|v| v.trim() == value)
        .unwrap_or(false)
    {
        return Ok(());
    }
    std::fs::write(&path, value).map_err(|source| NetlinkError::Sysctl {
        name: name.to_string(),
        source,
    })
}

/// Reads the sysctl `name`.
pub fn get(name: &str) -> Result<String, NetlinkError> {
    std::fs::read_to_string(path_of(name))
        .map(|v| v.trim().to_string())
        .map_err(|source| NetlinkError::Sysctl {
            name: name.to_string(),
            source,
        })
}

/// Turns an interface name into one sysctl path component (`vxlan.margay` → `vxlan/margay`
/// is what `sysctl` does with dots; in a path we keep the name and use slashes elsewhere).
pub fn iface_key(prefix: &str, ifname: &str, leaf: &str) -> String {
    format!("{prefix}/{ifname}/{leaf}")
}

fn path_of(name: &str) -> PathBuf {
    // Names built by iface_key already use '/'; dotted names have no interface in them.
    if name.contains('/') {
        PathBuf::from("/proc/sys").join(name)
    } else {
        PathBuf::from("/proc/sys").join(name.replace('.', "/"))
    }
}

/// Node-wide: forward IPv4.
pub fn enable_forwarding() -> Result<(), NetlinkError> {
    set("net.ipv4.ip_forward", "1")
}

/// Node-wide: forward IPv6 (once the node routes IPv6 pods; a kernel without IPv6 has no
/// such file, which is no error).
pub fn enable_forwarding_v6() -> Result<(), NetlinkError> {
    if !ipv6_enabled() {
        return Ok(());
    }
    set("net.ipv6.conf.all.forwarding", "1")
}

/// Whether this namespace has IPv6 at all (`/proc/sys/net/ipv6` exists).
pub fn ipv6_enabled() -> bool {
    path_of("net/ipv6/conf/all").exists()
}

/// The host side of a workload veth, as Calico sets it: forwarding on, strict reverse-path
/// filtering, proxy ARP answering for the gateway 169.254.1.1 at once (proxy_delay 0); and
/// for IPv6, where the kernel has it: IPv6 on (the pods' IPv6 gateway is this side's
/// link-local address), forwarding and proxy NDP on, router advertisements ignored, and no
/// duplicate address detection (the link-local address is usable as soon as the link is up).
pub fn workload_interface(ifname: &str) -> Result<(), NetlinkError> {
    set(&iface_key("net/ipv4/conf", ifname, "forwarding"), "1")?;
    set(&iface_key("net/ipv4/conf", ifname, "rp_filter"), "1")?;
    set(&iface_key("net/ipv4/conf", ifname, "route_localnet"), "1")?;
    set(&iface_key("net/ipv4/conf", ifname, "proxy_arp"), "1")?;
    set(&iface_key("net/ipv4/neigh", ifname, "proxy_delay"), "0")?;
    if path_of(&iface_key("net/ipv6/conf", ifname, "")).exists() {
        set(&iface_key("net/ipv6/conf", ifname, "disable_ipv6"), "0")?;
        set(&iface_key("net/ipv6/conf", ifname, "accept_dad"), "0")?;
        set(&iface_key("net/ipv6/conf", ifname, "accept_ra"), "0")?;
        set(&iface_key("net/ipv6/conf", ifname, "forwarding"), "1")?;
        set(&iface_key("net/ipv6/conf", ifname, "proxy_ndp"), "1")?;
    }
    Ok(())
}

/// The container side of a pod with an IPv6 address (called inside its namespace): IPv6 on
/// (a namespace may start with it off) and no duplicate address detection on `ifname`, so the
/// pod's address and default route work at once, as Calico's CNI plugin sets them.
pub fn container_ipv6(ifname: &str) -> Result<(), NetlinkError> {
    for scope in ["all", "default", "lo"] {
        set(&iface_key("net/ipv6/conf", scope, "disable_ipv6"), "0")?;
    }
    set(&iface_key("net/ipv6/conf", ifname, "disable_ipv6"), "0")?;
    set(&iface_key("net/ipv6/conf", ifname, "accept_dad"), "0")
}

/// A tunnel device (tunl0, vxlan.margay): reverse-path filtering loose enough that decapsulated
/// traffic from remote pods is accepted.
pub fn tunnel_interface(ifname: &str) -> Result<(), NetlinkError> {
    set(&iface_key("net/ipv4/conf", ifname, "rp_filter"), "2")?;
    set(&iface_key("net/ipv4/conf", ifname, "forwarding"), "1")
}
