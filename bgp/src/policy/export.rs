//! Calico's export policy towards one neighbour, in Calico's order: routes inside a pool with
//! BGP export disabled are never announced; then the neighbour's filters, first match wins;
//! then the default: what this node originates, and routes learned from cluster neighbours that
//! lie inside a pool (or an originated service cidr, or anywhere when no pool is configured).
//! A route learned from an external neighbour goes on only by a `source: RemotePeers` accept.

use super::chain::{Direction, FilterChain};
use super::community::{self, Advertisement, Communities};
use super::rule::Action;
use super::{Role, RouteFacts, RouteSource};
use ipnet::IpNet;

/// An IP pool (Calico's IPPool) as export sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pool {
    pub cidr: IpNet,
    /// False for `disableBGPExport: true`.
    pub export: bool,
}

/// Everything that decides what one neighbour is sent. Neighbours with equal policies share an
/// update group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ExportPolicy {
    pub pools: Vec<Pool>,
    /// Prefixes this node originates from its configuration (service cidrs): learned routes
    /// inside them are cluster routes too.
    pub services: Vec<IpNet>,
    pub advertise: Vec<Advertisement>,
    /// The neighbour's filters.
    pub chain: FilterChain,
}

impl ExportPolicy {
    /// Whether the route may be announced to the neighbour.
    pub fn accepts(&self, route: &RouteFacts<'_>) -> bool {
        let p = &route.prefix;
        if self
            .pools
            .iter()
            .any(|pool| !pool.export && pool.cidr.contains(p))
        {
            return false;
        }
        if let Some(action) = self.chain.decide(Direction::Export, route) {
            return action == Action::Accept;
        }
        match route.source {
            RouteSource::Local => true,
            RouteSource::Peer(Role::External) => false,
            RouteSource::Peer(Role::Cluster) => {
                self.pools.is_empty()
                    || self.pools.iter().any(|pool| pool.cidr.contains(p))
                    || self.services.iter().any(|s| s.contains(p))
            }
        }
    }

    /// Which advertisements apply to `prefix` (equal keys mean equal communities).
    pub fn communities_key(&self, prefix: &IpNet) -> Vec<u16> {
        if self.advertise.is_empty() {
            return Vec::new();
        }
        community::matching(&self.advertise, prefix)
    }

    /// The communities for a key from [`ExportPolicy::communities_key`].
    pub fn communities(&self, key: &[u16]) -> Communities {
        community::collect(&self.advertise, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::chain::Filter;
    use crate::policy::rule::{MatchOperator, Rule, RuleSource};
    use std::sync::Arc;

    fn facts(prefix: &str, source: RouteSource) -> RouteFacts<'static> {
        RouteFacts {
            prefix: prefix.parse().unwrap(),
            source,
            interface: None,
        }
    }

    const CLUSTER: RouteSource = RouteSource::Peer(Role::Cluster);
    const EXTERNAL: RouteSource = RouteSource::Peer(Role::External);

    fn pools() -> Vec<Pool> {
        vec![
            Pool {
                cidr: "10.244.0.0/16".parse().unwrap(),
                export: true,
            },
            Pool {
                cidr: "10.99.0.0/16".parse().unwrap(),
                export: false,
            },
        ]
    }

    #[test]
    fn default_policy_announces_only_what_the_cluster_owns() {
        let p = ExportPolicy {
            pools: pools(),
            services: vec!["10.96.0.0/12".parse().unwrap()],
            ..ExportPolicy::default()
        };
        assert!(p.accepts(&facts("10.244.1.0/26", RouteSource::Local)));
        assert!(p.accepts(&facts("192.0.2.0/24", RouteSource::Local)));
        assert!(!p.accepts(&facts("10.99.1.0/26", RouteSource::Local)));
        assert!(p.accepts(&facts("10.244.2.0/26", CLUSTER)));
        assert!(p.accepts(&facts("10.96.0.0/12", CLUSTER)));
        assert!(!p.accepts(&facts("192.0.2.0/24", CLUSTER)));
        assert!(!p.accepts(&facts("10.99.2.0/26", CLUSTER)));
        assert!(!p.accepts(&facts("10.244.3.0/26", EXTERNAL)));
        assert!(!p.accepts(&facts("0.0.0.0/0", EXTERNAL)));
        // Without pools every cluster route is the cluster's.
        let open = ExportPolicy::default();
        assert!(open.accepts(&facts("192.0.2.0/24", CLUSTER)));
        assert!(!open.accepts(&facts("192.0.2.0/24", EXTERNAL)));
    }

    #[test]
    fn filters_come_before_the_default_but_after_disabled_pools() {
        let transit = Filter {
            name: "transit".into(),
            export_v4: vec![Rule {
                action: Action::Accept,
                cidr: None,
                prefix_length: None,
                source: Some(RuleSource::RemotePeers),
                interface: None,
            }],
            ..Filter::default()
        };
        let hide = Filter {
            name: "hide".into(),
            export_v4: vec![Rule {
                action: Action::Reject,
                cidr: Some((MatchOperator::Equal, "10.244.1.0/26".parse().unwrap())),
                prefix_length: None,
                source: None,
                interface: None,
            }],
            ..Filter::default()
        };
        let p = ExportPolicy {
            pools: pools(),
            chain: FilterChain::new(vec![Arc::new(hide), Arc::new(transit)]),
            ..ExportPolicy::default()
        };
        assert!(p.accepts(&facts("198.51.100.0/24", EXTERNAL)));
        assert!(p.accepts(&facts("198.51.100.0/24", CLUSTER)));
        assert!(!p.accepts(&facts("10.99.0.0/24", EXTERNAL)));
        assert!(!p.accepts(&facts("10.244.1.0/26", RouteSource::Local)));
        assert!(p.accepts(&facts("10.244.2.0/26", RouteSource::Local)));
        // IPv6 has no rule: the default decides.
        assert!(!p.accepts(&facts("2001:db8::/64", EXTERNAL)));
    }
}
