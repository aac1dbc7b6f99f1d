//! What the kernel says about this host: its interfaces with their addresses (`getifaddrs`) and
//! the source address it would pick towards a destination (a connected UDP socket, no packet
//! sent). Everything is read in the network namespace of the calling thread.

use ipnet::IpNet;
use std::ffi::CStr;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

/// One network interface and its addresses, as the kernel lists them.
#[derive(Debug, Clone, PartialEq)]
pub struct HostInterface {
    pub name: String,
    /// The kernel's interface index (0 when the interface vanished while being read).
    pub index: u32,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// The addresses with the interface's prefix length, in the kernel's order.
    pub addresses: Vec<IpNet>,
}

/// Every interface of the calling thread's network namespace that has an address, highest kernel
/// index first: the order in which calico-node walks them (it reverses Go's index-ordered list).
pub fn interfaces() -> io::Result<Vec<HostInterface>> {
    let mut list = IfAddrs::read()?.collect_interfaces();
    for iface in &mut list {
        iface.index = index_of(&iface.name);
    }
    list.sort_by(|a, b| b.index.cmp(&a.index).then_with(|| a.name.cmp(&b.name)));
    Ok(list)
}

/// The source address the kernel would use to send to `dest`: the address a UDP socket gets
/// when it is connected there. Connecting a UDP socket only looks up the route; nothing is sent.
pub fn source_address_towards(dest: IpAddr) -> io::Result<IpAddr> {
    let unspecified: IpAddr = match dest {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind(SocketAddr::new(unspecified, 0))?;
    // Port 80 as calico-node uses; any non-zero port does (connect() to port 0 is refused).
    socket.connect(SocketAddr::new(dest, 80))?;
    Ok(socket.local_addr()?.ip())
}

/// The kernel's index of an interface; 0 if there is none by that name (any more).
fn index_of(name: &str) -> u32 {
    let Ok(c_name) = std::ffi::CString::new(name) else {
        return 0;
    };
    // SAFETY: c_name is a valid NUL-terminated string for the duration of the call.
    unsafe { libc::if_nametoindex(c_name.as_ptr()) }
}

/// The list `getifaddrs(3)` returns, freed on drop.
struct IfAddrs(*mut libc::ifaddrs);

impl IfAddrs {
    fn read() -> io::Result<Self> {
        let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
        // SAFETY: getifaddrs writes a list head we own until freeifaddrs.
        if unsafe { libc::getifaddrs(&mut head) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(IfAddrs(head))
    }

    /// Groups the IPv4 and IPv6 entries by interface, keeping the kernel's order in each.
    fn collect_interfaces(&self) -> Vec<HostInterface> {
        let mut list: Vec<HostInterface> = Vec::new();
        let mut entry = self.0;
        while !entry.is_null() {
            // SAFETY: entry is a non-null node of the list getifaddrs built; it lives until drop.
            let ifa = unsafe { &*entry };
            entry = ifa.ifa_next;
            // SAFETY: ifa_addr and ifa_netmask are null or point at a sockaddr of the family
            // named by ifa_addr's sa_family, as getifaddrs(3) documents.
            let Some(address) = (unsafe { address_of(ifa) }) else {
                continue;
            };
            // SAFETY: ifa_name is a NUL-terminated string in the list.
            let label = unsafe { CStr::from_ptr(ifa.ifa_name) }.to_string_lossy();
            // IPv4 addresses come under their label ("eth0:1"); a device name never has ':'.
            let name = label.split(':').next().unwrap_or_default();
            let flags = ifa.ifa_flags;
            let pos = match list.iter().position(|i| i.name == name) {
                Some(pos) => pos,
                None => {
                    list.push(HostInterface {
                        name: name.to_string(),
                        index: 0,
                        up: flags & libc::IFF_UP as u32 != 0,
                        addresses: Vec::new(),
                    });
                    list.len() - 1
                }
            };
            list[pos].addresses.push(address);
        }
        list
    }
}

impl Drop for IfAddrs {
    fn drop(&mut self) {
        // SAFETY: self.0 came from a successful getifaddrs and is freed once.
        unsafe { libc::freeifaddrs(self.0) }
    }
}

/// The IPv4 or IPv6 address of a `getifaddrs` entry with its prefix length; `None` for other
/// families (`AF_PACKET`, ...) and entries without an address.
///
/// # Safety
/// `ifa.ifa_addr` and `ifa.ifa_netmask` must be null or point at valid socket addresses whose
/// layout matches the family in `ifa.ifa_addr`.
unsafe fn address_of(ifa: &libc::ifaddrs) -> Option<IpNet> {
    if ifa.ifa_addr.is_null() {
        return None;
    }
    // SAFETY: non-null, valid by the caller's contract.
    let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
    let mask = ifa.ifa_netmask;
    match family {
        libc::AF_INET => {
            // SAFETY: an AF_INET entry's address and mask are sockaddr_in.
            let addr = unsafe { *(ifa.ifa_addr as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(addr.sin_addr.s_addr.to_ne_bytes());
            let prefix = if mask.is_null() {
                32
            } else {
                // SAFETY: as above.
                let m = unsafe { *(mask as *const libc::sockaddr_in) };
                u32::from_be_bytes(m.sin_addr.s_addr.to_ne_bytes()).count_ones() as u8
            };
            IpNet::new(ip.into(), prefix).ok()
        }
        libc::AF_INET6 => {
            // SAFETY: an AF_INET6 entry's address and mask are sockaddr_in6.
            let addr = unsafe { *(ifa.ifa_addr as *const libc::sockaddr_in6) };
            let ip = Ipv6Addr::from(addr.sin6_addr.s6_addr);
            let prefix = if mask.is_null() {
                128
            } else {
                // SAFETY: as above.
                let m = unsafe { *(mask as *const libc::sockaddr_in6) };
                u128::from_be_bytes(m.sin6_addr.s6_addr).count_ones() as u8
            };
            IpNet::new(ip.into(), prefix).ok()
        }
        _ => None,
    }
}
