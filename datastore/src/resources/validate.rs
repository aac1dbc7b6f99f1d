//! Field checks shared by the resource kinds, collecting every problem with its field path.

use super::ModelError;
use crate::selector::Selector;
use std::fmt;
use std::net::IpAddr;

/// One bad field: its path (`spec.peerIP`) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Collects the problems found while checking one resource.
#[derive(Debug, Default)]
pub struct Validator {
    problems: Vec<FieldProblem>,
}

impl Validator {
    /// Records a problem with `field`.
    pub fn problem(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.problems.push(FieldProblem {
            field: field.into(),
            message: message.into(),
        });
    }

    /// Whether nothing was wrong so far.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// The verdict for resource `kind` named `name`.
    pub fn into_result(self, kind: &str, name: &str) -> Result<(), ModelError> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(ModelError::Invalid {
                kind: kind.to_string(),
                name: name.to_string(),
                problems: self.problems,
            })
        }
    }

    /// `value` must be a selector.
    pub fn selector(&mut self, field: &str, value: &str) {
        if let Err(e) = Selector::parse(value) {
            self.problem(
                field,
                format!("'{value}' is not a valid selector (stops at '{}')", e.rest),
            );
        }
    }

    /// `value` must be an IP address.
    pub fn ip(&mut self, field: &str, value: &str) -> Option<IpAddr> {
        match value.parse() {
            Ok(ip) => Some(ip),
            Err(_) => {
                self.problem(field, format!("'{value}' is not an IP address"));
                None
            }
        }
    }

    /// `value` must be an address or an address with a prefix length (`10.0.0.1/24`).
    pub fn ip_or_cidr(&mut self, field: &str, value: &str) {
        if value.parse::<IpAddr>().is_err() && value.parse::<ipnet::IpNet>().is_err() {
            self.problem(field, format!("'{value}' is not an IP address or CIDR"));
        }
    }

    /// `value` must be a CIDR.
    pub fn cidr(&mut self, field: &str, value: &str) -> Option<ipnet::IpNet> {
        match value.parse::<ipnet::IpNet>() {
            Ok(n) => Some(n),
            Err(_) => {
                self.problem(field, format!("'{value}' is not a CIDR"));
                None
            }
        }
    }
}

/// Kubernetes names: lower-case alphanumerics, '-' and '.', starting and ending alphanumeric,
/// at most 253 characters.
pub fn name(v: &mut Validator, field: &str, value: &str) {
    if value.is_empty() {
        v.problem(field, "is required");
        return;
    }
    let ok_chars = value
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    let ends = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !ok_chars || !ends(value.chars().next()) || !ends(value.chars().last()) || value.len() > 253
    {
        v.problem(
            field,
            format!(
                "'{value}' is not a valid name (lower-case letters, digits, '-' and '.', \
                 starting and ending with a letter or digit)"
            ),
        );
    }
}

/// Go-style durations as Calico writes them: `120s`, `1m30s`, `2h`, `500ms`.
pub fn duration(v: &mut Validator, field: &str, value: &str) {
    if parse_duration(value).is_none() {
        v.problem(
            field,
            format!("'{value}' is not a duration (like 120s or 2m)"),
        );
    }
}

/// Parses a Go-style duration into seconds.
pub fn parse_duration(value: &str) -> Option<f64> {
    let mut rest = value.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            "ns" => 0.000_000_001,
            _ => return None,
        };
        total += n * factor;
        rest = &rest[unit_end..];
    }
    Some(total)
}

/// Calico's interface name patterns (`eth0`, `*.calico`, `cali*`): 1 to 15 of letters, digits,
/// `_`, `.`, `-` and the wildcard `*`.
pub fn is_interface_pattern(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '*'))
}
