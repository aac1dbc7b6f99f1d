//! A filter chain's rules of one direction and family, indexed by cidr: a route is checked only
//! against the rules that can match it, in chain order, so the first match is the same as a
//! linear scan's at a fraction of the cost when a chain holds many cidr rules.
//!
//! Rules with `equal` or `in` can only match a prefix inside their cidr: they are filed under
//! (cidr length, cidr bits) and found by looking up each filed length at or below the prefix's.
//! Every other rule (`not-equal`, `not-in`, no cidr) is a candidate for every route.

use super::RouteFacts;
use super::rule::{Action, MatchOperator, Rule};
use ipnet::IpNet;
use std::collections::HashMap;

/// The bits of a network, left-aligned in its family's width.
fn bits(net: &IpNet) -> u128 {
    match net {
        IpNet::V4(n) => u128::from(u32::from(n.network())),
        IpNet::V6(n) => u128::from(n.network()),
    }
}

/// `bits` kept to its first `len` bits, for a family `width` bits wide.
fn masked(bits: u128, len: u8, width: u8) -> u128 {
    if len == 0 {
        0
    } else {
        let shift = u32::from(width - len);
        (bits >> shift) << shift
    }
}

/// The rules of one direction and family, in chain order, with their index.
#[derive(Debug, Default)]
pub struct RuleIndex {
    rules: Vec<Rule>,
    /// Positions of `equal`/`in` rules by (cidr length, cidr bits).
    by_cidr: HashMap<(u8, u128), Vec<u32>>,
    /// The distinct cidr lengths filed in `by_cidr`, ascending.
    lengths: Vec<u8>,
    /// Positions of the rules every route must be checked against.
    always: Vec<u32>,
}

impl RuleIndex {
    pub fn new<'a>(rules: impl Iterator<Item = &'a Rule>) -> RuleIndex {
        let mut index = RuleIndex::default();
        for (i, rule) in rules.enumerate() {
            let at = i as u32;
            match rule.cidr {
                Some((MatchOperator::Equal | MatchOperator::In, cidr)) => {
                    let len = cidr.prefix_len();
                    index
                        .by_cidr
                        .entry((len, bits(&cidr)))
                        .or_default()
                        .push(at);
                    if let Err(p) = index.lengths.binary_search(&len) {
                        index.lengths.insert(p, len);
                    }
                }
                _ => index.always.push(at),
            }
            index.rules.push(rule.clone());
        }
        index
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The action of the first rule that matches (`matches` says whether one does).
    pub fn decide(
        &self,
        route: &RouteFacts<'_>,
        matches: impl Fn(&Rule, &RouteFacts<'_>) -> bool,
    ) -> Option<Action> {
        if self.rules.is_empty() {
            return None;
        }
        let p = route.prefix;
        let (width, prefix_bits) = (p.max_prefix_len(), bits(&p));
        let mut first: Option<u32> = None;
        // Each list is in chain order: its first match before `first` is the new first.
        let scan = |list: &[u32], first: &mut Option<u32>| {
            for &at in list {
                if first.is_some_and(|f| at > f) {
                    return;
                }
                if matches(&self.rules[at as usize], route) {
                    *first = Some(at);
                    return;
                }
            }
        };
        for &len in self.lengths.iter().take_while(|l| **l <= p.prefix_len()) {
            if let Some(list) = self.by_cidr.get(&(len, masked(prefix_bits, len, width))) {
                scan(list, &mut first);
            }
        }
        scan(&self.always, &mut first);
        first.map(|at| self.rules[at as usize].action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::rule::RuleSource;
    use crate::policy::{Role, RouteSource};

    /// A small deterministic generator (xorshift), enough to vary rule sets.
    struct Gen(u64);
    impl Gen {
        fn next(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
        fn net(&mut self, v6: bool) -> IpNet {
            if v6 {
                let a = 0xfd00u16 | self.next(4) as u16;
                let net = format!("{a:x}:{:x}::/{}", self.next(4), 14 + self.next(20));
                net.parse::<IpNet>().unwrap().trunc()
            } else {
                let net = format!(
                    "10.{}.{}.0/{}",
                    self.next(4),
                    self.next(8),
                    6 + self.next(27)
                );
                net.parse::<IpNet>().unwrap().trunc()
            }
        }
    }

    #[test]
    fn the_index_finds_what_a_linear_scan_finds() {
        let mut g = Gen(0x9e37_79b9_7f4a_7c15);
        for round in 0..200 {
            let v6 = round % 2 == 1;
            let rules: Vec<Rule> = (0..1 + g.next(30))
                .map(|_| Rule {
                    action: if g.next(2) == 0 {
                        Action::Accept
                    } else {
                        Action::Reject
                    },
                    cidr: match g.next(5) {
                        0 => None,
                        1 => Some((MatchOperator::Equal, g.net(v6))),
                        2 => Some((MatchOperator::NotEqual, g.net(v6))),
                        3 => Some((MatchOperator::NotIn, g.net(v6))),
                        _ => Some((MatchOperator::In, g.net(v6))),
                    },
                    prefix_length: (g.next(4) == 0)
                        .then(|| (g.next(20) as u8, 16 + g.next(17) as u8)),
                    source: (g.next(3) == 0).then_some(RuleSource::RemotePeers),
                    interface: None,
                })
                .collect();
            let index = RuleIndex::new(rules.iter());
            for _ in 0..50 {
                let route = RouteFacts {
                    prefix: g.net(v6),
                    source: if g.next(2) == 0 {
                        RouteSource::Local
                    } else {
                        RouteSource::Peer(Role::External)
                    },
                    interface: None,
                };
                let linear = rules
                    .iter()
                    .find(|r| r.matches_export(&route))
                    .map(|r| r.action);
                let indexed = index.decide(&route, |r, f| r.matches_export(f));
                assert_eq!(
                    indexed, linear,
                    "round {round}: {route:?} against {rules:?}"
                );
            }
        }
    }
}
