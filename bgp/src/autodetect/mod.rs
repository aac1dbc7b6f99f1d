//! The node's BGP address, found as calico-node finds it (`IP=autodetect` with an
//! `IP_AUTODETECTION_METHOD`): [`detect`] returns the address with its interface's prefix length,
//! the interface, and a sentence that says why it was chosen.
//!
//! The rules follow calico-node:
//! - interfaces are walked highest kernel index first (calico-node reverses Go's index-ordered
//!   list "to keep the behaviour of older versions"), so a node that moves from calico-node keeps
//!   its address; within an interface, addresses come in the kernel's order;
//! - an address is usable when it is global unicast: not loopback, link-local (169.254.0.0/16,
//!   fe80::/10), multicast, unspecified or the IPv4 broadcast address;
//! - `first-found` and `skip-interface` skip the known internal interfaces of [`DEFAULT_SKIPPED`];
//!   `interface` and `cidr` apply no such list (`interface=cali.*` picks a cali interface);
//! - interface regexes are not anchored (calico-node uses Go's `MatchString`): `eth0` also matches
//!   `veth0`. The built-in list is anchored;
//! - `can-reach` takes the source address the kernel would use towards the destination (host
//!   names resolved, A records for IPv4 and AAAA for IPv6), then the interface that holds it.
//!
//! One addition to calico-node, which looks at no interface flags: interfaces that are
//! administratively down are skipped (their addresses could not carry a BGP session). The carrier
//! is not looked at: the kernel reports it up to a second after a link comes up, and a node's
//! address must not depend on that race at boot.
//!
//! Everything is read in the network namespace of the calling thread.

pub mod host;
mod method;

pub use host::HostInterface;
pub use method::{Method, MethodError};

use ipnet::IpNet;
use regex::Regex;
use std::fmt;
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::LazyLock;

/// Interfaces `first-found` and `skip-interface` never take an address from: the ones calico-node
/// skips and the devices of other container and overlay networks.
pub const DEFAULT_SKIPPED: &[&str] = &[
    "^cali.*",
    "^tunl.*",
    "^vxlan.*",
    "^docker.*",
    "^veth.*",
    "^cni.*",
    "^kube-ipvs.*",
    "^lo$",
    "^cbr.*",
    "^dummy.*",
    "^virbr.*",
    "^lxcbr.*",
    "^flannel.*",
    "^cilium.*",
    "^weave$",
    "^br-.*",
    "^vxlan-v6.*",
    r"^vxlan\.calico",
    r"^vxlan\.margay",
    "^wireguard.*",
    "^wg-v6.*",
    "^nodelocaldns.*",
    "^podman.*",
];

static DEFAULT_SKIPPED_REGEXES: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    DEFAULT_SKIPPED
        .iter()
        .map(|r| Regex::new(r).expect("built-in interface regex is valid"))
        .collect()
});

/// How many skipped interfaces a reason or an error names before it says "and N more".
const MAX_NOTES: usize = 12;

/// Which address family to detect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpVersion {
    V4,
    V6,
}

impl IpVersion {
    fn holds(self, addr: IpAddr) -> bool {
        matches!(
            (self, addr),
            (IpVersion::V4, IpAddr::V4(_)) | (IpVersion::V6, IpAddr::V6(_))
        )
    }
}

impl fmt::Display for IpVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IpVersion::V4 => "IPv4",
            IpVersion::V6 => "IPv6",
        })
    }
}

/// The address autodetection chose.
#[derive(Debug, Clone, PartialEq)]
pub struct Detected {
    /// The address with its interface's prefix length (`10.0.0.5/24`).
    pub address: IpNet,
    /// The interface that holds it.
    pub interface: String,
    /// Why this address: the method, and the interfaces skipped on the way.
    pub reason: String,
}

/// Why no address was found.
#[derive(Debug, thiserror::Error)]
pub enum AutodetectError {
    #[error("cannot list the host's interfaces and addresses: {0}")]
    Interfaces(#[source] std::io::Error),
    #[error("{method}: no usable {version} address ({tried})")]
    NotFound {
        method: String,
        version: IpVersion,
        tried: String,
    },
    #[error("{method}: cannot resolve '{dest}': {source}")]
    Resolve {
        method: String,
        dest: String,
        source: std::io::Error,
    },
    #[error("{method}: '{dest}' has no {version} address")]
    NoDestinationAddress {
        method: String,
        dest: String,
        version: IpVersion,
    },
    #[error("{method}: no route to {dest}: {source}")]
    Unreachable {
        method: String,
        dest: IpAddr,
        source: std::io::Error,
    },
    #[error(
        "{method}: the kernel's source address towards {dest} is {source_address}, which no \
         interface holds"
    )]
    SourceNotLocal {
        method: String,
        dest: IpAddr,
        source_address: IpAddr,
    },
}

/// Finds this node's address of `version` by `method`, in the calling thread's network namespace.
pub fn detect(method: &Method, version: IpVersion) -> Result<Detected, AutodetectError> {
    let interfaces = host::interfaces().map_err(AutodetectError::Interfaces)?;
    match plan(method) {
        Plan::Route(dest) => can_reach(method, dest, version, &interfaces),
        Plan::Enumerate(filter) => select(method, version, &interfaces, &filter),
    }
}

/// How a method is answered: by the kernel's routing, or by walking the interfaces.
enum Plan<'a> {
    Route(&'a str),
    Enumerate(Filter<'a>),
}

fn plan(method: &Method) -> Plan<'_> {
    let defaults = DEFAULT_SKIPPED_REGEXES.iter();
    Plan::Enumerate(match method {
        Method::CanReach(dest) => return Plan::Route(dest),
        Method::FirstFound => Filter {
            include: &[],
            exclude: defaults.collect(),
            cidrs: &[],
        },
        Method::SkipInterface(user) => Filter {
            include: &[],
            exclude: user.iter().chain(defaults).collect(),
            cidrs: &[],
        },
        Method::Interface(user) => Filter {
            include: user,
            exclude: Vec::new(),
            cidrs: &[],
        },
        Method::Cidr(cidrs) => Filter {
            include: &[],
            exclude: Vec::new(),
            cidrs,
        },
    })
}

/// Which interfaces and addresses an enumeration method (all but `can-reach`) accepts.
struct Filter<'a> {
    /// When not empty, only interfaces matching one of these.
    include: &'a [Regex],
    /// Never interfaces matching one of these.
    exclude: Vec<&'a Regex>,
    /// When not empty, only addresses inside one of these.
    cidrs: &'a [IpNet],
}

/// The first usable address that `filter` accepts, walking `interfaces` in their order.
fn select(
    method: &Method,
    version: IpVersion,
    interfaces: &[HostInterface],
    filter: &Filter<'_>,
) -> Result<Detected, AutodetectError> {
    let Filter {
        include,
        exclude,
        cidrs,
    } = filter;
    let mut notes = Notes::default();
    let mut any_included = false;
    for iface in interfaces {
        if !include.is_empty() && !include.iter().any(|r| r.is_match(&iface.name)) {
            continue;
        }
        any_included = true;
        if let Some(r) = exclude.iter().find(|r| r.is_match(&iface.name)) {
            notes.push(format!("{} matches {}", iface.name, r.as_str()));
            continue;
        }
        if !iface.up {
            notes.push(format!("{} is down", iface.name));
            continue;
        }
        let of_version: Vec<&IpNet> = iface
            .addresses
            .iter()
            .filter(|a| version.holds(a.addr()))
            .collect();
        let usable: Vec<&IpNet> = of_version
            .iter()
            .copied()
            .filter(|a| is_global_unicast(a.addr()))
            .collect();
        let chosen = usable
            .iter()
            .find(|a| cidrs.is_empty() || cidrs.iter().any(|c| c.contains(&a.addr())));
        if let Some(address) = chosen {
            return Ok(Detected {
                address: **address,
                interface: iface.name.clone(),
                reason: reason_for(method, version, address, &iface.name, &notes),
            });
        }
        notes.push(if of_version.is_empty() {
            format!("{} has no {version} address", iface.name)
        } else if usable.is_empty() {
            format!(
                "{} has only loopback or link-local {version} addresses ({})",
                iface.name,
                join(&of_version)
            )
        } else {
            format!(
                "{} has no {version} address inside {} ({})",
                iface.name,
                join(cidrs),
                join(&usable)
            )
        });
    }
    let tried = if interfaces.is_empty() {
        "the host has no interface with an address".to_string()
    } else if !any_included {
        format!(
            "no interface matches {}; interfaces: {}",
            include
                .iter()
                .map(Regex::as_str)
                .collect::<Vec<_>>()
                .join(", "),
            interfaces
                .iter()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        format!("skipped: {notes}")
    };
    Err(AutodetectError::NotFound {
        method: method.to_string(),
        version,
        tried,
    })
}

fn reason_for(
    method: &Method,
    version: IpVersion,
    address: &IpNet,
    interface: &str,
    notes: &Notes,
) -> String {
    let what = match method {
        Method::Interface(_) => format!("first usable {version} address on a matching interface"),
        Method::Cidr(cidrs) => format!("first usable {version} address inside {}", join(cidrs)),
        _ => format!("first usable {version} address"),
    };
    let mut reason = format!("{method}: {address} on {interface}, the {what}");
    if !notes.is_empty() {
        reason.push_str(&format!(" (skipped: {notes})"));
    }
    reason
}

/// `can-reach`: resolve, ask the kernel for its source address, find the interface holding it.
fn can_reach(
    method: &Method,
    dest: &str,
    version: IpVersion,
    interfaces: &[HostInterface],
) -> Result<Detected, AutodetectError> {
    let dest_addr = resolve(method, dest, version)?;
    let source =
        host::source_address_towards(dest_addr).map_err(|source| AutodetectError::Unreachable {
            method: method.to_string(),
            dest: dest_addr,
            source,
        })?;
    let holder = interfaces.iter().find_map(|iface| {
        iface
            .addresses
            .iter()
            .find(|a| a.addr() == source)
            .map(|a| (iface, a))
    });
    let Some((iface, address)) = holder else {
        return Err(AutodetectError::SourceNotLocal {
            method: method.to_string(),
            dest: dest_addr,
            source_address: source,
        });
    };
    let towards = if dest == dest_addr.to_string() {
        dest.to_string()
    } else {
        format!("{dest} ({dest_addr})")
    };
    Ok(Detected {
        address: *address,
        interface: iface.name.clone(),
        reason: format!(
            "{method}: {address} on {}, the kernel's source address towards {towards}",
            iface.name
        ),
    })
}

/// The destination as an address of `version`: parsed, or the first of its resolved addresses.
fn resolve(method: &Method, dest: &str, version: IpVersion) -> Result<IpAddr, AutodetectError> {
    let candidates: Vec<IpAddr> = match dest.parse::<IpAddr>() {
        Ok(addr) => vec![addr],
        Err(_) => (dest, 80)
            .to_socket_addrs()
            .map_err(|source| AutodetectError::Resolve {
                method: method.to_string(),
                dest: dest.to_string(),
                source,
            })?
            .map(|s| s.ip())
            .collect(),
    };
    candidates
        .into_iter()
        .find(|a| version.holds(*a))
        .ok_or_else(|| AutodetectError::NoDestinationAddress {
            method: method.to_string(),
            dest: dest.to_string(),
            version,
        })
}

/// Global unicast as Go's `net.IP.IsGlobalUnicast` (which calico-node uses) defines it.
fn is_global_unicast(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => {
            !(a.is_unspecified()
                || a.is_loopback()
                || a.is_link_local()
                || a.is_multicast()
                || a.is_broadcast())
        }
        IpAddr::V6(a) => {
            !(a.is_unspecified()
                || a.is_loopback()
                || a.is_unicast_link_local()
                || a.is_multicast())
        }
    }
}

fn join<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The interfaces skipped on the way, each with why; printed capped at [`MAX_NOTES`].
#[derive(Default)]
struct Notes(Vec<String>);

impl Notes {
    fn push(&mut self, note: String) {
        tracing::debug!(%note, "autodetection skipped an interface");
        self.0.push(note);
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Notes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = self.0.iter().take(MAX_NOTES).cloned().collect::<Vec<_>>();
        f.write_str(&shown.join(", "))?;
        if self.0.len() > MAX_NOTES {
            write!(f, " and {} more", self.0.len() - MAX_NOTES)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
