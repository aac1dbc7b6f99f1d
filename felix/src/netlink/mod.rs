//! The kernel interface: every use of rtnetlink / netlink-packet-route lives below this module,
//! behind the [`Dataplane`] handle and plain types ([`KernelRoute`], [`Link`], [`Neighbour`],
//! [`FdbEntry`]), so an upgrade of those crates touches nothing else.
//!
//! Namespaces: a netlink socket belongs to the network namespace of the thread that opened it,
//! and /proc/sys shows the calling thread's namespace. felix therefore runs *inside* the node's
//! namespace: the daemon is started with `ip netns exec NS margay-felix ...`, and library tests
//! run their dataplane code on a thread that `setns`es into the lab namespace first (see
//! [`enter_netns`]).

mod link;
mod monitor;
mod neigh;
mod route;
mod rule;
mod socket;
pub mod sysctl;

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

pub use link::{Link, Mac, VxlanSpec};
pub use monitor::{Event, Monitor};
pub use neigh::{FdbEntry, Neighbour};
pub use route::{
    KernelRoute, NextHop, RouteKey, RouteKind, SCOPE_LINK, SCOPE_UNIVERSE, TABLE_MAIN,
};
pub use rule::Rule;

use socket::NlSocket;

/// What talking to the kernel can fail with.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink {context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    /// The kernel refused a request with this errno.
    #[error("kernel refused: {}", std::io::Error::from_raw_os_error(*errno))]
    Kernel { errno: i32 },
    /// The kernel has no driver for a device kind (e.g. no ipip module).
    #[error("this kernel cannot create {kind} devices ({name}): {}", std::io::Error::from_raw_os_error(*errno))]
    Unsupported {
        kind: &'static str,
        name: String,
        errno: i32,
    },
    #[error("no ACK from the kernel")]
    NoAck,
    #[error("dump kept being interrupted by concurrent changes")]
    DumpInterrupted,
    /// Notifications were lost; a full resync is needed.
    #[error("netlink socket overrun (notifications lost)")]
    Overrun,
    #[error("no link named {0}")]
    NoSuchLink(String),
    #[error("sysctl {name}: {source}")]
    Sysctl {
        name: String,
        source: std::io::Error,
    },
    #[error("entering network namespace {path}: {source}")]
    Netns {
        path: String,
        source: std::io::Error,
    },
}

impl NetlinkError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> NetlinkError {
        let context = context.into();
        move |source| NetlinkError::Io { context, source }
    }

    /// The kernel's errno, if this is a refusal.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel { errno } | NetlinkError::Unsupported { errno, .. } => {
                Some(*errno)
            }
            _ => None,
        }
    }
}

/// How a route write is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteOp {
    /// Create; fails with EEXIST if any route (ours or not) holds the key.
    Create(KernelRoute),
    /// Replace the route at the key (only ever used on a key felix owns, or adopts).
    Replace(KernelRoute),
    /// Delete the route at the key if its protocol is the route's protocol.
    Delete(KernelRoute),
}

/// A handle on the kernel's routing and link tables of one network namespace.
pub struct Dataplane {
    sock: NlSocket,
}

impl Dataplane {
    /// Opens the handle in the calling thread's network namespace.
    pub fn new() -> Result<Dataplane, NetlinkError> {
        Ok(Dataplane {
            sock: NlSocket::open()?,
        })
    }

    /// Subscribes to route and link changes in the same namespace (open it on the same thread
    /// as the handle, or on one in the same namespace).
    pub fn monitor() -> Result<Monitor, NetlinkError> {
        Monitor::open()
    }

    // ----- routes -----

    /// Every IPv4 and IPv6 route, optionally only of one table and one protocol.
    pub fn routes(
        &mut self,
        table: Option<u32>,
        protocol: Option<u8>,
    ) -> Result<Vec<KernelRoute>, NetlinkError> {
        let mut out = Vec::new();
        for v6 in [false, true] {
            for msg in self.sock.dump(route::dump_request(v6))? {
                if let RouteNetlinkMessage::NewRoute(m) = msg
                    && let Some(r) = KernelRoute::from_message(&m)
                    && table.is_none_or(|t| t == r.table)
                    && protocol.is_none_or(|p| p == r.protocol)
                {
                    out.push(r);
                }
            }
        }
        Ok(out)
    }

    /// The routes of `table` and `protocol` through link `oif`, of IPv4 and/or IPv6: asked of
    /// the kernel with those filters (strict checking), so a lookup for one pod's veth reads a
    /// route or two instead of every route of the node. The handle checks requests strictly
    /// from then on (felix's dump requests pass).
    pub fn routes_via(
        &mut self,
        oif: u32,
        table: u32,
        protocol: u8,
        v4: bool,
        v6: bool,
    ) -> Result<Vec<KernelRoute>, NetlinkError> {
        self.sock.strict();
        let mut out = Vec::new();
        for fam_v6 in [false, true] {
            if (fam_v6 && !v6) || (!fam_v6 && !v4) {
                continue;
            }
            let req = route::dump_request_via(fam_v6, table, protocol, oif);
            let msgs = match self.sock.dump(req) {
                Ok(m) => m,
                // A kernel that refuses the filter: every route of the family.
                Err(NetlinkError::Kernel { .. }) => self.sock.dump(route::dump_request(fam_v6))?,
                Err(e) => return Err(e),
            };
            for msg in msgs {
                if let RouteNetlinkMessage::NewRoute(m) = msg
                    && let Some(r) = KernelRoute::from_message(&m)
                    && r.table == table
                    && r.protocol == protocol
                    && r.oif == Some(oif)
                {
                    out.push(r);
                }
            }
        }
        Ok(out)
    }

    /// Applies route writes in batches; one result per operation, in order.
    pub fn apply_routes(
        &mut self,
        ops: &[RouteOp],
    ) -> Result<Vec<Result<(), NetlinkError>>, NetlinkError> {
        let reqs = ops
            .iter()
            .map(|op| match op {
                RouteOp::Create(r) => (r.to_new_message(), NLM_F_CREATE | NLM_F_EXCL),
                RouteOp::Replace(r) => (r.to_new_message(), NLM_F_CREATE | NLM_F_REPLACE),
                RouteOp::Delete(r) => (r.to_del_message(), 0),
            })
            .collect();
        self.sock.batch(reqs)
    }

    /// Creates one route (EEXIST if the key is taken).
    pub fn add_route(&mut self, r: &KernelRoute) -> Result<(), NetlinkError> {
        self.sock
            .request(r.to_new_message(), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// Creates or replaces the route at `r`'s key.
    pub fn replace_route(&mut self, r: &KernelRoute) -> Result<(), NetlinkError> {
        self.sock
            .request(r.to_new_message(), NLM_F_CREATE | NLM_F_REPLACE)
    }

    /// Deletes the route at `r`'s key if its protocol is `r.protocol`.
    pub fn delete_route(&mut self, r: &KernelRoute) -> Result<(), NetlinkError> {
        self.sock.request(r.to_del_message(), 0)
    }

    // ----- links -----

    /// Every link of the namespace.
    pub fn links(&mut self) -> Result<Vec<Link>, NetlinkError> {
        Ok(self
            .sock
            .dump(link::dump_request())?
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Link::from_message(&l),
                _ => None,
            })
            .collect())
    }

    /// The link called `name`, asked of the kernel by name (no dump: with hundreds of pod
    /// veths a dump is slow, and interrupted again and again while pods come and go).
    pub fn link(&mut self, name: &str) -> Result<Link, NetlinkError> {
        let missing = || NetlinkError::NoSuchLink(name.to_string());
        match self.sock.get(link::get_by_name(name)) {
            Ok(RouteNetlinkMessage::NewLink(l)) => Link::from_message(&l)
                .filter(|l| l.name == name)
                .ok_or_else(missing),
            Ok(_) => Err(missing()),
            Err(e) if e.errno() == Some(libc::ENODEV) => Err(missing()),
            Err(e) => Err(e),
        }
    }

    /// The VNI and UDP port of VXLAN link `name`; `None` for another kind of link.
    pub fn vxlan_params(&mut self, name: &str) -> Result<Option<(u32, u16)>, NetlinkError> {
        match self.sock.get(link::get_by_name(name))? {
            RouteNetlinkMessage::NewLink(l) => Ok(link::vxlan_id_port(&l)),
            _ => Err(NetlinkError::NoSuchLink(name.to_string())),
        }
    }

    /// Creates a veth pair `name` / `peer` in this namespace.
    pub fn create_veth(&mut self, name: &str, peer: &str) -> Result<(), NetlinkError> {
        self.sock
            .request(link::veth(name, peer), NLM_F_CREATE | NLM_F_EXCL)
            .map_err(|e| unsupported(e, "veth", name))
    }

    /// Creates a workload veth: host side `name` here (MAC `mac`, MTU `mtu`), its peer `peer`
    /// directly inside the namespace open at `peer_netns` (same MTU). Both start down.
    pub fn create_veth_into_netns(
        &mut self,
        name: &str,
        mac: Mac,
        mtu: u32,
        peer: &str,
        peer_netns: &std::fs::File,
    ) -> Result<(), NetlinkError> {
        use std::os::fd::AsRawFd;
        self.sock
            .request(
                link::veth_into_netns(name, mac, mtu, peer, peer_netns.as_raw_fd()),
                NLM_F_CREATE | NLM_F_EXCL,
            )
            .map_err(|e| unsupported(e, "veth", name))
    }

    /// Creates the VXLAN device described by `spec` (learning off).
    pub fn create_vxlan(&mut self, spec: &VxlanSpec) -> Result<(), NetlinkError> {
        self.sock
            .request(link::vxlan(spec), NLM_F_CREATE | NLM_F_EXCL)
            .map_err(|e| unsupported(e, "vxlan", &spec.name))
    }

    /// Creates an IP-in-IP device. `tunl0` is the ipip module's fallback device, which exists
    /// as soon as the module is loaded; asking for it loads the module if the kernel can.
    pub fn create_ipip(&mut self, name: &str) -> Result<(), NetlinkError> {
        self.sock
            .request(link::ipip(name), NLM_F_CREATE | NLM_F_EXCL)
            .map_err(|e| unsupported(e, "ipip", name))
    }

    /// Creates a WireGuard device (`ip link add NAME type wireguard`); Unsupported when the
    /// kernel has no wireguard module.
    pub fn create_wireguard(&mut self, name: &str) -> Result<(), NetlinkError> {
        self.sock
            .request(link::wireguard(name), NLM_F_CREATE | NLM_F_EXCL)
            .map_err(|e| unsupported(e, "wireguard", name))
    }

    /// Deletes link `index`.
    pub fn delete_link(&mut self, index: u32) -> Result<(), NetlinkError> {
        self.sock.request(link::delete(index), 0)
    }

    /// Brings link `index` up or down.
    pub fn set_link_up(&mut self, index: u32, up: bool) -> Result<(), NetlinkError> {
        self.sock.request(link::set(index, Some(up), None, None), 0)
    }

    /// Sets the alias of link `index`: a mark the kernel keeps with the link.
    pub fn set_alias(&mut self, index: u32, alias: &str) -> Result<(), NetlinkError> {
        self.sock.request(link::set_alias(index, alias), 0)
    }

    /// Sets the MTU of link `index`.
    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<(), NetlinkError> {
        self.sock
            .request(link::set(index, None, Some(mtu), None), 0)
    }

    /// Sets the MAC address of link `index`.
    pub fn set_mac(&mut self, index: u32, mac: Mac) -> Result<(), NetlinkError> {
        self.sock
            .request(link::set(index, None, None, Some(mac)), 0)
    }

    /// Addresses of link `index`.
    pub fn addresses(&mut self, index: u32) -> Result<Vec<IpNet>, NetlinkError> {
        Ok(self
            .sock
            .dump(link::address_dump_request())?
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => link::address_of(&a),
                _ => None,
            })
            .filter(|(i, _)| *i == index)
            .map(|(_, a)| a)
            .collect())
    }

    /// Every address of the namespace, with its link index.
    pub fn all_addresses(&mut self) -> Result<Vec<(u32, IpNet)>, NetlinkError> {
        Ok(self
            .sock
            .dump(link::address_dump_request())?
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => link::address_of(&a),
                _ => None,
            })
            .collect())
    }

    /// Adds `addr` to link `index` (EEXIST if present).
    pub fn add_address(&mut self, index: u32, addr: IpNet) -> Result<(), NetlinkError> {
        self.sock
            .request(link::address(index, addr, true), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// Removes `addr` from link `index`.
    pub fn delete_address(&mut self, index: u32, addr: IpNet) -> Result<(), NetlinkError> {
        self.sock.request(link::address(index, addr, false), 0)
    }

    // ----- rules -----

    /// Every IPv4 and IPv6 routing rule.
    pub fn rules(&mut self) -> Result<Vec<Rule>, NetlinkError> {
        let mut out = Vec::new();
        for v6 in [false, true] {
            for msg in self.sock.dump(rule::dump_request(v6))? {
                if let RouteNetlinkMessage::NewRule(m) = msg
                    && let Some(r) = Rule::from_message(&m)
                {
                    out.push(r);
                }
            }
        }
        Ok(out)
    }

    /// Adds a routing rule (EEXIST if the same rule exists).
    pub fn add_rule(&mut self, r: Rule) -> Result<(), NetlinkError> {
        self.sock
            .request(r.to_new_message(), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// Deletes the routing rule that matches `r`.
    pub fn delete_rule(&mut self, r: Rule) -> Result<(), NetlinkError> {
        self.sock.request(r.to_del_message(), 0)
    }

    // ----- neighbours and FDB -----

    /// Permanent neighbours (ARP and NDP) of link `index`.
    pub fn neighbours(&mut self, index: u32) -> Result<Vec<Neighbour>, NetlinkError> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            out.extend(
                self.sock
                    .dump(neigh::dump_request(family))?
                    .into_iter()
                    .filter_map(|m| match m {
                        RouteNetlinkMessage::NewNeighbour(n) => Neighbour::from_message(&n),
                        _ => None,
                    })
                    .filter(|n| n.ifindex == index),
            );
        }
        Ok(out)
    }

    /// Adds or replaces a permanent neighbour.
    pub fn replace_neighbour(&mut self, n: Neighbour) -> Result<(), NetlinkError> {
        self.sock
            .request(n.to_message(true), NLM_F_CREATE | NLM_F_REPLACE)
    }

    /// Deletes a neighbour.
    pub fn delete_neighbour(&mut self, n: Neighbour) -> Result<(), NetlinkError> {
        self.sock.request(n.to_message(false), 0)
    }

    /// Unicast FDB entries with a remote destination on link `index`.
    pub fn fdb(&mut self, index: u32) -> Result<Vec<FdbEntry>, NetlinkError> {
        Ok(self
            .sock
            .dump(neigh::dump_request(AddressFamily::Bridge))?
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(n) => FdbEntry::from_message(&n),
                _ => None,
            })
            .filter(|f| f.ifindex == index)
            .collect())
    }

    /// Adds or replaces an FDB entry.
    pub fn replace_fdb(&mut self, f: FdbEntry) -> Result<(), NetlinkError> {
        self.sock
            .request(f.to_message(true), NLM_F_CREATE | NLM_F_REPLACE)
    }

    /// Deletes an FDB entry.
    pub fn delete_fdb(&mut self, f: FdbEntry) -> Result<(), NetlinkError> {
        self.sock.request(f.to_message(false), 0)
    }
}

/// Turns "no such device kind" refusals into [`NetlinkError::Unsupported`].
fn unsupported(e: NetlinkError, kind: &'static str, name: &str) -> NetlinkError {
    match e {
        NetlinkError::Kernel { errno }
            if errno == libc::EOPNOTSUPP
                || errno == libc::ENODEV
                || errno == libc::EAFNOSUPPORT =>
        {
            NetlinkError::Unsupported {
                kind,
                name: name.to_string(),
                errno,
            }
        }
        other => other,
    }
}

/// Opens the network namespace file at `path` (to hand its descriptor to the kernel).
pub fn open_netns(path: &str) -> Result<std::fs::File, NetlinkError> {
    std::fs::File::open(path).map_err(|source| NetlinkError::Netns {
        path: path.to_string(),
        source,
    })
}

/// Runs `f` on a dedicated thread inside the network namespace at `path` and returns what it
/// returns: a [`Dataplane`] or sysctl opened in `f` belongs to that namespace. The thread ends
/// with `f`, so no other work ever runs in the wrong namespace.
pub fn in_netns<T, F>(path: &str, f: F) -> Result<T, NetlinkError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, NetlinkError> + Send + 'static,
{
    let path = path.to_string();
    std::thread::Builder::new()
        .name("netns".into())
        .spawn(move || {
            enter_netns(&path)?;
            f()
        })
        .map_err(NetlinkError::io("starting a namespace thread"))?
        .join()
        .map_err(|_| NetlinkError::Io {
            context: "namespace thread panicked".into(),
            source: std::io::Error::other("panic"),
        })?
}

/// Moves the calling thread into the network namespace at `path` (`/var/run/netns/NAME` or
/// `/proc/PID/ns/net`). Everything this thread opens afterwards (netlink sockets, /proc/sys
/// files) belongs to that namespace. Use it on a thread of its own.
pub fn enter_netns(path: &str) -> Result<(), NetlinkError> {
    let file = std::fs::File::open(path).map_err(|source| NetlinkError::Netns {
        path: path.to_string(),
        source,
    })?;
    use std::os::fd::AsRawFd;
    // SAFETY: setns on a file descriptor we own for the duration of the call.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(NetlinkError::Netns {
            path: path.to_string(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}
