//! One BGPFilter rule: its conditions (cidr with a match operator, prefix length, source,
//! interface) and its action. Calico renders a rule as one BIRD `if ... then { accept|reject; }`;
//! this is the same test, evaluated directly.

use super::{RouteFacts, RouteSource, glob};
use ipnet::IpNet;
use serde::Deserialize;

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Accept,
    Reject,
}

/// How the route's prefix is compared with the rule's `cidr` (BIRD's `=`, `!=`, `~`, `!~`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MatchOperator {
    /// The prefix is the cidr.
    Equal,
    /// The prefix is not the cidr.
    NotEqual,
    /// The prefix lies inside the cidr (the cidr itself included).
    In,
    /// The prefix does not lie inside the cidr.
    NotIn,
}

/// Calico's `source` condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuleSource {
    /// Routes learned from a BGP neighbour.
    RemotePeers,
}

/// One rule; every condition that is set must hold.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    pub action: Action,
    pub cidr: Option<(MatchOperator, IpNet)>,
    /// Inclusive bounds on the prefix length.
    pub prefix_length: Option<(u8, u8)>,
    pub source: Option<RuleSource>,
    /// An interface name pattern (`eth*`).
    pub interface: Option<String>,
}

impl Rule {
    /// Whether the rule matches a route being exported. A rule without `source` matches only
    /// the cluster's own routes (local, or learned from a cluster neighbour): a route of an
    /// external neighbour is passed on only by a `source: RemotePeers` rule.
    pub fn matches_export(&self, route: &RouteFacts<'_>) -> bool {
        let source_ok = match self.source {
            Some(RuleSource::RemotePeers) => matches!(route.source, RouteSource::Peer(_)),
            None => route.source != RouteSource::Peer(super::Role::External),
        };
        source_ok && self.matches_route(route)
    }

    /// Whether the rule matches a received route (always learned from a neighbour, so a
    /// `source` condition holds).
    pub fn matches_import(&self, route: &RouteFacts<'_>) -> bool {
        self.matches_route(route)
    }

    fn matches_route(&self, route: &RouteFacts<'_>) -> bool {
        let p = route.prefix;
        if let Some((op, cidr)) = self.cidr {
            let inside = cidr.contains(&p);
            let hit = match op {
                MatchOperator::Equal => p == cidr,
                MatchOperator::NotEqual => p != cidr,
                MatchOperator::In => inside,
                MatchOperator::NotIn => !inside,
            };
            if !hit {
                return false;
            }
        }
        if let Some((min, max)) = self.prefix_length
            && !(min..=max).contains(&p.prefix_len())
        {
            return false;
        }
        if let Some(pattern) = &self.interface {
            match route.interface {
                Some(name) if glob::matches(pattern, name) => {}
                _ => return false,
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Role;

    fn facts(prefix: &str, source: RouteSource) -> RouteFacts<'static> {
        RouteFacts {
            prefix: prefix.parse().unwrap(),
            source,
            interface: Some("eth0"),
        }
    }

    fn rule(op: MatchOperator, cidr: &str) -> Rule {
        Rule {
            action: Action::Accept,
            cidr: Some((op, cidr.parse().unwrap())),
            prefix_length: None,
            source: None,
            interface: None,
        }
    }

    #[test]
    fn match_operators_compare_as_bird_does() {
        let local = RouteSource::Local;
        let eq = rule(MatchOperator::Equal, "10.0.0.0/8");
        assert!(eq.matches_export(&facts("10.0.0.0/8", local)));
        assert!(!eq.matches_export(&facts("10.1.0.0/16", local)));
        let ne = rule(MatchOperator::NotEqual, "10.0.0.0/8");
        assert!(ne.matches_export(&facts("10.1.0.0/16", local)));
        assert!(!ne.matches_export(&facts("10.0.0.0/8", local)));
        let inside = rule(MatchOperator::In, "10.0.0.0/8");
        assert!(inside.matches_export(&facts("10.0.0.0/8", local)));
        assert!(inside.matches_export(&facts("10.1.2.0/24", local)));
        assert!(!inside.matches_export(&facts("11.0.0.0/24", local)));
        assert!(!inside.matches_export(&facts("0.0.0.0/0", local)));
        let outside = rule(MatchOperator::NotIn, "10.0.0.0/8");
        assert!(outside.matches_export(&facts("11.0.0.0/24", local)));
        assert!(!outside.matches_export(&facts("10.9.0.0/16", local)));
        let v6 = rule(MatchOperator::In, "fd00::/8");
        assert!(v6.matches_export(&facts("fd00:1::/64", local)));
        assert!(!v6.matches_export(&facts("10.0.0.0/8", local)));
    }

    #[test]
    fn prefix_length_bounds_are_inclusive() {
        let mut r = rule(MatchOperator::In, "10.0.0.0/8");
        r.prefix_length = Some((24, 26));
        assert!(!r.matches_export(&facts("10.0.0.0/23", RouteSource::Local)));
        assert!(r.matches_export(&facts("10.0.0.0/24", RouteSource::Local)));
        assert!(r.matches_export(&facts("10.0.0.0/26", RouteSource::Local)));
        assert!(!r.matches_export(&facts("10.0.0.0/27", RouteSource::Local)));
    }

    #[test]
    fn a_rule_without_source_never_matches_an_external_route_on_export() {
        let plain = rule(MatchOperator::In, "0.0.0.0/0");
        let ext = facts("10.0.0.0/24", RouteSource::Peer(Role::External));
        let cluster = facts("10.0.0.0/24", RouteSource::Peer(Role::Cluster));
        assert!(!plain.matches_export(&ext));
        assert!(plain.matches_export(&cluster));
        assert!(plain.matches_import(&ext));
        let mut remote = plain.clone();
        remote.source = Some(RuleSource::RemotePeers);
        assert!(remote.matches_export(&ext));
        assert!(remote.matches_export(&cluster));
        assert!(!remote.matches_export(&facts("10.0.0.0/24", RouteSource::Local)));
    }

    #[test]
    fn interface_pattern_needs_a_known_interface() {
        let mut r = rule(MatchOperator::In, "0.0.0.0/0");
        r.interface = Some("eth*".into());
        assert!(r.matches_export(&facts("10.0.0.0/24", RouteSource::Local)));
        let mut f = facts("10.0.0.0/24", RouteSource::Local);
        f.interface = Some("ens3");
        assert!(!r.matches_export(&f));
        f.interface = None;
        assert!(!r.matches_export(&f));
    }
}
