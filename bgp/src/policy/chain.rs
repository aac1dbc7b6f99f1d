//! A BGPFilter (its four rule lists) and a neighbour's filters in order: the first rule that
//! matches, across the filters, decides; none matching leaves the decision to what follows
//! (Calico's default export policy, or accept on import).

use super::RouteFacts;
use super::index::RuleIndex;
use super::rule::{Action, Rule};
use ipnet::IpNet;
use std::sync::Arc;

/// Export (towards the neighbour) or import (from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Export,
    Import,
}

/// One BGPFilter: rules per direction and family.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Filter {
    pub name: String,
    pub export_v4: Vec<Rule>,
    pub import_v4: Vec<Rule>,
    pub export_v6: Vec<Rule>,
    pub import_v6: Vec<Rule>,
}

impl Filter {
    /// The rules that apply to `prefix` in `direction`.
    pub fn rules(&self, direction: Direction, prefix: &IpNet) -> &[Rule] {
        match (direction, prefix) {
            (Direction::Export, IpNet::V4(_)) => &self.export_v4,
            (Direction::Export, IpNet::V6(_)) => &self.export_v6,
            (Direction::Import, IpNet::V4(_)) => &self.import_v4,
            (Direction::Import, IpNet::V6(_)) => &self.import_v6,
        }
    }

    /// Whether the filter has any rule for `direction`.
    pub fn has(&self, direction: Direction) -> bool {
        match direction {
            Direction::Export => !self.export_v4.is_empty() || !self.export_v6.is_empty(),
            Direction::Import => !self.import_v4.is_empty() || !self.import_v6.is_empty(),
        }
    }
}

/// A neighbour's filters, in the order its `filters` list names them, with their rules indexed
/// (equal chains compare equal whatever their index).
#[derive(Debug, Clone, Default)]
pub struct FilterChain {
    filters: Vec<Arc<Filter>>,
    /// Export v4, export v6, import v4, import v6.
    index: Arc<[RuleIndex; 4]>,
}

impl PartialEq for FilterChain {
    fn eq(&self, other: &FilterChain) -> bool {
        self.filters == other.filters
    }
}
impl Eq for FilterChain {}
impl std::hash::Hash for FilterChain {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.filters.hash(state);
    }
}

impl FilterChain {
    pub fn new(filters: Vec<Arc<Filter>>) -> FilterChain {
        let v4: IpNet = IpNet::V4(Default::default());
        let v6: IpNet = IpNet::V6(Default::default());
        let list = |d: Direction, p: &IpNet| {
            RuleIndex::new(filters.iter().flat_map(move |f| f.rules(d, p).iter()))
        };
        let index = [
            list(Direction::Export, &v4),
            list(Direction::Export, &v6),
            list(Direction::Import, &v4),
            list(Direction::Import, &v6),
        ];
        FilterChain {
            index: Arc::new(index),
            filters,
        }
    }

    /// The filters, in order.
    pub fn filters(&self) -> &[Arc<Filter>] {
        &self.filters
    }

    /// The action of the first matching rule, or None when no rule matches.
    pub fn decide(&self, direction: Direction, route: &RouteFacts<'_>) -> Option<Action> {
        let at = match (direction, route.prefix) {
            (Direction::Export, IpNet::V4(_)) => 0,
            (Direction::Export, IpNet::V6(_)) => 1,
            (Direction::Import, IpNet::V4(_)) => 2,
            (Direction::Import, IpNet::V6(_)) => 3,
        };
        self.index[at].decide(route, |r, f| match direction {
            Direction::Export => r.matches_export(f),
            Direction::Import => r.matches_import(f),
        })
    }

    /// Import: the first matching rule decides; no match accepts (Calico's default).
    pub fn accepts_import(&self, route: &RouteFacts<'_>) -> bool {
        self.decide(Direction::Import, route) != Some(Action::Reject)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::rule::MatchOperator;
    use crate::policy::{Role, RouteSource};

    fn rule(action: Action, cidr: &str) -> Rule {
        Rule {
            action,
            cidr: Some((MatchOperator::In, cidr.parse().unwrap())),
            prefix_length: None,
            source: None,
            interface: None,
        }
    }

    fn route(prefix: &str) -> RouteFacts<'static> {
        RouteFacts {
            prefix: prefix.parse().unwrap(),
            source: RouteSource::Peer(Role::Cluster),
            interface: None,
        }
    }

    #[test]
    fn first_match_across_filters_wins() {
        let a = Filter {
            name: "a".into(),
            export_v4: vec![rule(Action::Reject, "10.1.0.0/16")],
            ..Filter::default()
        };
        let b = Filter {
            name: "b".into(),
            export_v4: vec![
                rule(Action::Accept, "10.0.0.0/8"),
                rule(Action::Reject, "0.0.0.0/0"),
            ],
            import_v6: vec![rule(Action::Reject, "fd00::/8")],
            ..Filter::default()
        };
        let chain = FilterChain::new(vec![Arc::new(a), Arc::new(b)]);
        let ex = Direction::Export;
        assert_eq!(
            chain.decide(ex, &route("10.1.2.0/24")),
            Some(Action::Reject)
        );
        assert_eq!(
            chain.decide(ex, &route("10.2.0.0/24")),
            Some(Action::Accept)
        );
        assert_eq!(
            chain.decide(ex, &route("11.0.0.0/24")),
            Some(Action::Reject)
        );
        // IPv6 export has no rule: no decision.
        assert_eq!(chain.decide(ex, &route("fd00::/64")), None);
        assert!(!chain.accepts_import(&route("fd00::/64")));
        assert!(chain.accepts_import(&route("10.1.2.0/24")));
        assert!(chain.filters()[1].has(Direction::Import));
        assert!(!chain.filters()[0].has(Direction::Import));
    }

    #[test]
    fn an_empty_chain_decides_nothing_and_imports_everything() {
        let chain = FilterChain::default();
        assert_eq!(chain.decide(Direction::Export, &route("10.0.0.0/8")), None);
        assert!(chain.accepts_import(&route("10.0.0.0/8")));
    }
}
