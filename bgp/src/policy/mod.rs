//! BGP policy, pure: which routes a neighbour is sent or accepted from, and what communities
//! they carry, as Calico defines it (its default export policy, BGPFilter, prefix
//! advertisements).
//!
//! - [`rule`]: one BGPFilter rule and what it matches;
//! - [`chain`]: a filter's rule lists and a neighbour's filters in order, first match wins;
//! - [`export`]: Calico's default export policy around the chain;
//! - [`community`]: communities attached by prefix (RFC 1997 and RFC 8092);
//! - [`index`]: a chain's rules indexed by cidr, so a route meets only those that can match;
//! - [`glob`]: the interface name pattern of a rule;
//! - [`config`]: the TOML tables that configure all of it.

pub mod chain;
pub mod community;
pub mod config;
pub mod export;
pub mod glob;
pub mod index;
pub mod rule;

pub use chain::{Direction, Filter, FilterChain};
pub use community::{Advertisement, Communities, Community};
pub use export::{ExportPolicy, Pool};
pub use rule::{Action, MatchOperator, Rule, RuleSource};

use ipnet::IpNet;
use serde::Deserialize;

/// What a neighbour is to the cluster (Calico's split between its own nodes and the outside).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Another node of the cluster (mesh, reflector, reflector client): its routes are the
    /// cluster's own.
    Cluster,
    /// A router outside the cluster (a ToR, an upstream): its routes are never passed on by
    /// default.
    External,
}

/// Where a route came from, as policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteSource {
    /// Originated by this node.
    Local,
    /// Learned from a neighbour of this role.
    Peer(Role),
}

/// The facts about one route that rules match on.
#[derive(Debug, Clone, Copy)]
pub struct RouteFacts<'a> {
    pub prefix: IpNet,
    pub source: RouteSource,
    /// The interface the route was learned over (the session's), if known.
    pub interface: Option<&'a str>,
}
