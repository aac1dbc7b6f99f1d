//! The TOML tables of policy: `[[pools]]`, `[[advertise]]`, `[[filters]]` (with their
//! `export-v4`, `import-v4`, `export-v6`, `import-v6` rule lists), checked and turned into the
//! policy types. Errors name the table, the rule index and the field.

use super::chain::Filter;
use super::community::{Advertisement, Community};
use super::export::Pool;
use super::rule::{Action, MatchOperator, Rule, RuleSource};
use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

/// One `[[pools]]` table (a Calico IPPool).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PoolConfig {
    pub cidr: Spanned<IpNet>,
    /// False: nothing inside is announced (IPPool `disableBGPExport: true`).
    #[serde(default = "yes")]
    pub export: bool,
}

/// One `[[advertise]]` table (a prefixAdvertisement).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AdvertiseConfig {
    pub cidr: Spanned<IpNet>,
    /// `aa:nn` (standard) or `aa:nn:mm` (large).
    pub communities: Vec<Spanned<String>>,
}

/// `prefix-length = { min = 24, max = 32 }`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PrefixLength {
    pub min: Option<u8>,
    pub max: Option<u8>,
}

/// One rule of a filter.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RuleConfig {
    pub action: Spanned<Action>,
    pub match_operator: Option<MatchOperator>,
    pub cidr: Option<Spanned<IpNet>>,
    pub prefix_length: Option<PrefixLength>,
    pub source: Option<RuleSource>,
    pub interface: Option<String>,
}

/// One `[[filters]]` table (a BGPFilter).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FilterConfig {
    pub name: Spanned<String>,
    #[serde(default)]
    pub export_v4: Vec<RuleConfig>,
    #[serde(default)]
    pub import_v4: Vec<RuleConfig>,
    #[serde(default)]
    pub export_v6: Vec<RuleConfig>,
    #[serde(default)]
    pub import_v6: Vec<RuleConfig>,
}

fn yes() -> bool {
    true
}

/// A validation error: the byte offset it points at and the message after the field name.
pub struct Invalid {
    pub at: usize,
    pub field: String,
    pub message: String,
}

fn invalid(at: usize, field: String, message: impl Into<String>) -> Invalid {
    Invalid {
        at,
        field,
        message: message.into(),
    }
}

impl PoolConfig {
    pub fn check(&self, i: usize) -> Result<Pool, Invalid> {
        let cidr = *self.cidr.get_ref();
        if cidr != cidr.trunc() {
            return Err(invalid(
                self.cidr.span().start,
                format!("pools[{i}].cidr"),
                format!("{cidr} has host bits set; did you mean {}?", cidr.trunc()),
            ));
        }
        Ok(Pool {
            cidr,
            export: self.export,
        })
    }
}

impl AdvertiseConfig {
    pub fn check(&self, i: usize) -> Result<Advertisement, Invalid> {
        let cidr = *self.cidr.get_ref();
        if self.communities.is_empty() {
            return Err(invalid(
                self.cidr.span().start,
                format!("advertise[{i}].communities"),
                "lists no community",
            ));
        }
        let communities = self
            .communities
            .iter()
            .map(|c| {
                c.get_ref().parse::<Community>().map_err(|e| {
                    invalid(
                        c.span().start,
                        format!("advertise[{i}].communities"),
                        e.to_string(),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Advertisement {
            cidr: cidr.trunc(),
            communities,
        })
    }
}

impl RuleConfig {
    fn check(&self, field: &str, v6: bool) -> Result<Rule, Invalid> {
        let at = self.action.span().start;
        let cidr = match (&self.cidr, self.match_operator) {
            (Some(c), Some(op)) => {
                let net = *c.get_ref();
                if net.addr().is_ipv6() != v6 {
                    return Err(invalid(
                        c.span().start,
                        format!("{field}.cidr"),
                        format!("{net} is not an {} cidr", if v6 { "IPv6" } else { "IPv4" }),
                    ));
                }
                Some((op, net.trunc()))
            }
            (Some(c), None) => {
                return Err(invalid(
                    c.span().start,
                    format!("{field}.match-operator"),
                    "is needed with cidr (equal, not-equal, in, not-in)",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    at,
                    format!("{field}.cidr"),
                    "is needed with match-operator",
                ));
            }
            (None, None) => None,
        };
        let max_len = if v6 { 128 } else { 32 };
        let prefix_length = match self.prefix_length {
            None => None,
            Some(PrefixLength { min, max }) => {
                let lo = min.unwrap_or_else(|| cidr.map_or(0, |(_, c)| c.prefix_len()));
                let hi = max.unwrap_or(max_len);
                if hi > max_len || lo > hi {
                    return Err(invalid(
                        at,
                        format!("{field}.prefix-length"),
                        format!("min {lo} and max {hi} must satisfy min <= max <= {max_len}"),
                    ));
                }
                Some((lo, hi))
            }
        };
        if let Some(i) = &self.interface
            && i.is_empty()
        {
            return Err(invalid(
                at,
                format!("{field}.interface"),
                "must not be empty",
            ));
        }
        Ok(Rule {
            action: *self.action.get_ref(),
            cidr,
            prefix_length,
            source: self.source,
            interface: self.interface.clone(),
        })
    }
}

impl FilterConfig {
    pub fn check(&self, i: usize) -> Result<Filter, Invalid> {
        if self.name.get_ref().is_empty() {
            return Err(invalid(
                self.name.span().start,
                format!("filters[{i}].name"),
                "must not be empty",
            ));
        }
        let list = |rules: &[RuleConfig], key: &str, v6: bool| {
            rules
                .iter()
                .enumerate()
                .map(|(j, r)| r.check(&format!("filters[{i}].{key}[{j}]"), v6))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Filter {
            name: self.name.get_ref().clone(),
            export_v4: list(&self.export_v4, "export-v4", false)?,
            import_v4: list(&self.import_v4, "import-v4", false)?,
            export_v6: list(&self.export_v6, "export-v6", true)?,
            import_v6: list(&self.import_v6, "import-v6", true)?,
        })
    }
}
