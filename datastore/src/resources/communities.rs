//! BGP communities of BGPConfiguration: named values (`communities`) and the routes they are
//! attached to (`prefixAdvertisements`), checked and resolved to values for bgpd.

use super::Validator;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// One entry of `spec.communities`: a name for a community value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Community {
    #[serde(default)]
    pub name: String,
    /// `aa:nn` (standard, RFC 1997) or `aa:nn:mm` (large, RFC 8092).
    #[serde(default)]
    pub value: String,
}

/// One entry of `spec.prefixAdvertisements`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefixAdvertisement {
    #[serde(default)]
    pub cidr: String,
    /// Names from `spec.communities` or literal `aa:nn` / `aa:nn:mm` values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<String>,
}

/// A community value: standard `aa:nn` (16-bit parts) or large `aa:nn:mm` (32-bit parts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CommunityValue {
    Standard(u16, u16),
    Large(u32, u32, u32),
}

impl fmt::Display for CommunityValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommunityValue::Standard(a, n) => write!(f, "{a}:{n}"),
            CommunityValue::Large(a, n, m) => write!(f, "{a}:{n}:{m}"),
        }
    }
}

/// Why a text is not a community value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommunityError {
    #[error("'{0}' is not aa:nn or aa:nn:mm")]
    Shape(String),
    #[error("'{0}': each part of a standard community (aa:nn) is a 16-bit number")]
    Standard(String),
    #[error("'{0}': each part of a large community (aa:nn:mm) is a 32-bit number")]
    Large(String),
}

impl FromStr for CommunityValue {
    type Err = CommunityError;

    fn from_str(s: &str) -> Result<Self, CommunityError> {
        let parts: Vec<&str> = s.split(':').collect();
        let digits = |p: &&str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(digits) {
            return Err(CommunityError::Shape(s.to_string()));
        }
        if parts.len() == 2 {
            let n = |p: &str| {
                p.parse::<u16>()
                    .map_err(|_| CommunityError::Standard(s.into()))
            };
            Ok(CommunityValue::Standard(n(parts[0])?, n(parts[1])?))
        } else {
            let n = |p: &str| {
                p.parse::<u32>()
                    .map_err(|_| CommunityError::Large(s.into()))
            };
            Ok(CommunityValue::Large(
                n(parts[0])?,
                n(parts[1])?,
                n(parts[2])?,
            ))
        }
    }
}

/// Reads a word as a literal value, else looks it up by name (Calico's order).
fn resolve(word: &str, named: &[Community]) -> Option<CommunityValue> {
    match word.parse() {
        Ok(v) => Some(v),
        Err(_) => named.iter().find(|c| c.name == word)?.value.parse().ok(),
    }
}

/// The communities of each `prefixAdvertisements` entry, names resolved; entries that do not
/// check out are left out (validation reports them).
pub fn prefix_communities(
    named: &[Community],
    ads: &[PrefixAdvertisement],
) -> Vec<(ipnet::IpNet, Vec<CommunityValue>)> {
    ads.iter()
        .filter_map(|a| {
            let net = a.cidr.parse::<ipnet::IpNet>().ok()?.trunc();
            let values = a.communities.iter().filter_map(|w| resolve(w, named));
            Some((net, values.collect()))
        })
        .collect()
}

/// Calico's rules: values well formed, names unique, communities used somewhere, every word
/// of a prefixAdvertisement a literal value or else a defined name, every cidr a CIDR.
pub fn validate(v: &mut Validator, named: &[Community], ads: &[PrefixAdvertisement]) {
    for (i, c) in named.iter().enumerate() {
        if c.name.is_empty() {
            v.problem(format!("spec.communities[{i}].name"), "is required");
        } else if named[..i].iter().any(|o| o.name == c.name) {
            v.problem(
                format!("spec.communities[{i}].name"),
                format!("'{}' is defined twice", c.name),
            );
        }
        if let Err(e) = c.value.parse::<CommunityValue>() {
            v.problem(format!("spec.communities[{i}].value"), e.to_string());
        }
    }
    if !named.is_empty() && ads.is_empty() {
        v.problem(
            "spec.communities",
            "defined but not used: no spec.prefixAdvertisements",
        );
    }
    for (i, a) in ads.iter().enumerate() {
        if a.cidr.is_empty() {
            v.problem(
                format!("spec.prefixAdvertisements[{i}].cidr"),
                "is required",
            );
        } else {
            v.cidr(&format!("spec.prefixAdvertisements[{i}].cidr"), &a.cidr);
        }
        for (j, w) in a.communities.iter().enumerate() {
            let field = format!("spec.prefixAdvertisements[{i}].communities[{j}]");
            match w.parse::<CommunityValue>() {
                Ok(_) => {}
                Err(CommunityError::Shape(_)) if named.iter().any(|c| &c.name == w) => {}
                Err(CommunityError::Shape(_)) => v.problem(
                    field,
                    format!("'{w}' is neither a name from spec.communities nor aa:nn or aa:nn:mm"),
                ),
                Err(e) => v.problem(field, e.to_string()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_with_calicos_bit_widths_and_print_back() {
        assert_eq!(
            "65000:100".parse(),
            Ok(CommunityValue::Standard(65000, 100))
        );
        assert_eq!(
            "4200000000:1:2".parse(),
            Ok(CommunityValue::Large(4_200_000_000, 1, 2))
        );
        assert!(matches!(
            "70000:1".parse::<CommunityValue>(),
            Err(CommunityError::Standard(_))
        ));
        assert!(matches!(
            "1:2:4294967296".parse::<CommunityValue>(),
            Err(CommunityError::Large(_))
        ));
        for bad in ["", "1", "1:", "a:b", "1:2:3:4", "-1:2"] {
            assert!(
                matches!(bad.parse::<CommunityValue>(), Err(CommunityError::Shape(_))),
                "{bad}"
            );
        }
        assert_eq!(CommunityValue::Large(1, 2, 3).to_string(), "1:2:3");
        assert_eq!(CommunityValue::Standard(65000, 7).to_string(), "65000:7");
    }

    #[test]
    fn names_resolve_literals_pass_and_cidrs_are_truncated() {
        let named = vec![Community {
            name: "no-export-ish".into(),
            value: "65000:100".into(),
        }];
        let ads = vec![PrefixAdvertisement {
            cidr: "10.244.1.7/16".into(),
            communities: vec!["no-export-ish".into(), "1:2:3".into()],
        }];
        let mut v = Validator::default();
        validate(&mut v, &named, &ads);
        assert!(v.is_ok());
        assert_eq!(
            prefix_communities(&named, &ads),
            vec![(
                "10.244.0.0/16".parse().unwrap(),
                vec![
                    CommunityValue::Standard(65000, 100),
                    CommunityValue::Large(1, 2, 3)
                ]
            )]
        );
    }
}
