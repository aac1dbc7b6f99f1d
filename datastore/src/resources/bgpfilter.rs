//! BGPFilter: ordered accept/reject rules on the routes exchanged with the BGP peers whose
//! `filters` name it (first match wins; no match accepts).

use super::validate::is_interface_pattern;
use super::{Spec, Validator};
use serde::{Deserialize, Serialize};

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FilterAction {
    Accept,
    Reject,
}

/// How a route's prefix is compared with the rule's `cidr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MatchOperator {
    Equal,
    NotEqual,
    In,
    NotIn,
}

/// `source`: which routes a rule looks at (only `RemotePeers`: routes learned over BGP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MatchSource {
    RemotePeers,
}

/// `prefixLength`: bounds on the route's prefix length.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefixLength {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<i32>,
}

/// One rule of `exportV4`, `importV4`, `exportV6` or `importV6`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpFilterRule {
    pub action: FilterAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_operator: Option<MatchOperator>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_length: Option<PrefixLength>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<MatchSource>,
    /// Interface name or pattern (`eth*`, `*.calico`) the route's next hop is reached by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
}

impl BgpFilterRule {
    /// The rule's network, when `cidr` is set and parses (a bare address is its /32 or /128,
    /// as Calico reads it).
    pub fn net(&self) -> Option<ipnet::IpNet> {
        cidr_or_ip(self.cidr.as_deref()?)
    }
}

fn cidr_or_ip(s: &str) -> Option<ipnet::IpNet> {
    s.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

/// `BGPFilter.spec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BgpFilterSpec {
    #[serde(default, rename = "exportV4", skip_serializing_if = "Vec::is_empty")]
    pub export_v4: Vec<BgpFilterRule>,
    #[serde(default, rename = "importV4", skip_serializing_if = "Vec::is_empty")]
    pub import_v4: Vec<BgpFilterRule>,
    #[serde(default, rename = "exportV6", skip_serializing_if = "Vec::is_empty")]
    pub export_v6: Vec<BgpFilterRule>,
    #[serde(default, rename = "importV6", skip_serializing_if = "Vec::is_empty")]
    pub import_v6: Vec<BgpFilterRule>,
}

/// The address family of a rule list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterFamily {
    V4,
    V6,
}

impl FilterFamily {
    fn bits(self) -> i32 {
        match self {
            FilterFamily::V4 => 32,
            FilterFamily::V6 => 128,
        }
    }
    fn name(self) -> &'static str {
        match self {
            FilterFamily::V4 => "IPv4",
            FilterFamily::V6 => "IPv6",
        }
    }
}

impl BgpFilterSpec {
    /// The four rule lists with their field names and families.
    pub fn lists(&self) -> [(&'static str, FilterFamily, &[BgpFilterRule]); 4] {
        [
            ("exportV4", FilterFamily::V4, &self.export_v4),
            ("importV4", FilterFamily::V4, &self.import_v4),
            ("exportV6", FilterFamily::V6, &self.export_v6),
            ("importV6", FilterFamily::V6, &self.import_v6),
        ]
    }
}

/// Calico's rules for one rule: `cidr` of the list's family and set together with
/// `matchOperator`; `prefixLength` only with a `cidr`, within the family's bits and min <= max
/// (a min below the cidr's own length is allowed, as BIRD's `net ~ [a/l{min,max}]` allows it);
/// `interface` a name or pattern.
fn validate_rule(v: &mut Validator, at: &str, fam: FilterFamily, r: &BgpFilterRule) {
    if let Some(c) = &r.cidr {
        match cidr_or_ip(c) {
            Some(n) if (fam == FilterFamily::V4) == matches!(n, ipnet::IpNet::V4(_)) => {
                if n.trunc() != n {
                    v.problem(
                        format!("{at}.cidr"),
                        format!("'{c}' has host bits set (the network is {})", n.trunc()),
                    );
                }
            }
            _ => v.problem(
                format!("{at}.cidr"),
                format!("'{c}' is not an {} CIDR", fam.name()),
            ),
        }
    }
    match (&r.cidr, &r.match_operator) {
        (Some(_), None) => v.problem(
            format!("{at}.matchOperator"),
            "is required with cidr (Equal, NotEqual, In or NotIn)",
        ),
        (None, Some(_)) => v.problem(format!("{at}.cidr"), "is required with matchOperator"),
        _ => {}
    }
    if let Some(pl) = &r.prefix_length {
        if r.cidr.is_none() {
            v.problem(format!("{at}.prefixLength"), "needs cidr");
        }
        let bits = fam.bits();
        for (f, x) in [("min", pl.min), ("max", pl.max)] {
            if let Some(x) = x
                && !(0..=bits).contains(&x)
            {
                v.problem(
                    format!("{at}.prefixLength.{f}"),
                    format!("{x} is outside 0..{bits}"),
                );
            }
        }
        if let (Some(lo), Some(hi)) = (pl.min, pl.max)
            && lo > hi
        {
            v.problem(
                format!("{at}.prefixLength"),
                format!("min {lo} is larger than max {hi}"),
            );
        }
    }
    if let Some(i) = &r.interface
        && !is_interface_pattern(i)
    {
        v.problem(
            format!("{at}.interface"),
            format!("'{i}' is not an interface name or pattern (1 to 15 of a-z A-Z 0-9 _ . - *)"),
        );
    }
}

impl Spec for BgpFilterSpec {
    const KIND: &'static str = "BGPFilter";
    const PLURAL: &'static str = "bgpfilters";

    fn validate(&self, v: &mut Validator) {
        for (field, fam, rules) in self.lists() {
            for (i, r) in rules.iter().enumerate() {
                validate_rule(v, &format!("spec.{field}[{i}]"), fam, r);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::resources::parse_documents;

    fn err(spec: &str) -> String {
        parse_documents(&format!(
            "apiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata: {{name: f}}\nspec: {spec}\n"
        ))
        .unwrap_err()
        .to_string()
    }

    #[test]
    fn rule_problems_name_the_list_index_and_field() {
        let e = err(
            "{exportV4: [{action: Accept}, {action: Reject}, {action: Accept, matchOperator: In, cidr: 10.0.0.0/33}]}",
        );
        assert_eq!(
            e,
            "BGPFilter 'f': spec.exportV4[2].cidr: '10.0.0.0/33' is not an IPv4 CIDR"
        );
        let e = err("{importV6: [{action: Accept, matchOperator: In, cidr: 10.0.0.0/8}]}");
        assert_eq!(
            e,
            "BGPFilter 'f': spec.importV6[0].cidr: '10.0.0.0/8' is not an IPv6 CIDR"
        );
        let e = err("{importV4: [{action: Accept, cidr: 10.0.0.0/8}]}");
        assert!(
            e.contains("spec.importV4[0].matchOperator: is required with cidr"),
            "{e}"
        );
        let e = err("{importV4: [{action: Accept, matchOperator: Equal}]}");
        assert!(
            e.contains("spec.importV4[0].cidr: is required with matchOperator"),
            "{e}"
        );
        let e = err("{exportV4: [{action: Accept, prefixLength: {min: 8}}]}");
        assert!(
            e.contains("spec.exportV4[0].prefixLength: needs cidr"),
            "{e}"
        );
        let e = err(
            "{exportV6: [{action: Accept, matchOperator: In, cidr: 'fd00::/64', prefixLength: {min: 48, max: 129}}]}",
        );
        assert!(
            e.contains("spec.exportV6[0].prefixLength.max: 129 is outside 0..128"),
            "{e}"
        );
        let e = err(
            "{exportV4: [{action: Accept, matchOperator: In, cidr: 10.0.0.0/8, prefixLength: {min: 24, max: 16}}]}",
        );
        assert!(
            e.contains("spec.exportV4[0].prefixLength: min 24 is larger than max 16"),
            "{e}"
        );
        let e = err("{exportV4: [{action: Accept, matchOperator: In, cidr: 10.1.0.0/8}]}");
        assert!(
            e.contains("has host bits set (the network is 10.0.0.0/8)"),
            "{e}"
        );
        let e = err("{exportV4: [{action: Accept, interface: 'eth0 tap'}]}");
        assert!(
            e.contains("spec.exportV4[0].interface: 'eth0 tap' is not an interface"),
            "{e}"
        );
    }

    #[test]
    fn action_and_source_are_calicos_enums() {
        let e = err("{exportV4: [{action: Drop}]}");
        assert!(
            e.contains("spec.exportV4[0].action: unknown variant `Drop`"),
            "{e}"
        );
        let e = err("{exportV4: [{matchOperator: In, cidr: 10.0.0.0/8}]}");
        assert!(
            e.contains("spec.exportV4[0]: missing field `action`"),
            "{e}"
        );
        let e = err("{exportV4: [{action: Accept, source: LocalPeers}]}");
        assert!(
            e.contains("spec.exportV4[0].source: unknown variant `LocalPeers`"),
            "{e}"
        );
        let e = err("{exportV4: [{action: Accept, cidrs: 10.0.0.0/8}]}");
        assert!(e.contains("unknown field `cidrs`"), "{e}");
    }

    #[test]
    fn calicos_documented_example_parses() {
        let rs = parse_documents(
            r#"
apiVersion: projectcalico.org/v3
kind: BGPFilter
metadata:
  name: my-filter
spec:
  exportV4:
    - action: Accept
      matchOperator: In
      cidr: 77.0.0.0/16
      source: RemotePeers
    - action: Reject
      interface: '*.calico'
  importV4:
    - action: Accept
      matchOperator: In
      cidr: 55.0.0.0/16
      prefixLength:
        min: 30
    - action: Reject
      matchOperator: NotIn
      cidr: 44.0.0.0/16
  exportV6:
    - action: Reject
      source: RemotePeers
  importV6:
    - action: Accept
      matchOperator: Equal
      cidr: 5000::0/64
    - action: Reject
"#,
        )
        .unwrap();
        let crate::resources::AnyResource::BgpFilter(f) = &rs[0] else {
            panic!("not a filter")
        };
        assert_eq!(f.spec.export_v4.len(), 2);
        assert_eq!(f.spec.import_v6[1].action, super::FilterAction::Reject);
        assert_eq!(
            f.spec.import_v4[0].net(),
            Some("55.0.0.0/16".parse().unwrap())
        );
    }
}
