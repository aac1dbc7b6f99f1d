//! The `IP_AUTODETECTION_METHOD` syntax of calico-node: parsing and printing.
//!
//! Lists (`interface=eth.*,ens.*`, `cidr=10.0.0.0/8,192.168.0.0/16`) are split on commas with
//! the blanks around them ignored, as calico-node splits them. Interface regexes are not anchored:
//! `eth0` matches any name that contains `eth0`; write `^eth0$` for the exact name.

use ipnet::IpNet;
use regex::Regex;
use std::fmt;
use std::str::FromStr;

/// How the node's BGP address is found (calico-node's `IP_AUTODETECTION_METHOD`).
#[derive(Debug, Clone)]
pub enum Method {
    /// The first usable address on the first interface that is not a known internal one
    /// (`cali*`, `tunl*`, `docker*`, ...).
    FirstFound,
    /// The address the kernel would use as the source towards this IP address or host name.
    CanReach(String),
    /// The first usable address on an interface whose name matches one of these regexes.
    Interface(Vec<Regex>),
    /// As [`Method::FirstFound`], also skipping interfaces whose name matches these regexes.
    SkipInterface(Vec<Regex>),
    /// The first usable address inside one of these networks.
    Cidr(Vec<IpNet>),
}

/// Why an autodetection method string was rejected.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MethodError {
    #[error(
        "unknown autodetection method '{0}': expected first-found, can-reach=DEST, \
         interface=REGEX, skip-interface=REGEX or cidr=CIDR"
    )]
    Unknown(String),
    #[error(
        "autodetection method 'kubernetes-internal-ip' needs the Kubernetes API, which \
         margay-bgpd does not read: use can-reach=DEST, interface=REGEX or cidr=CIDR"
    )]
    KubernetesInternalIp,
    #[error("autodetection method '{method}' needs a value after '=' ({what})")]
    MissingValue {
        method: &'static str,
        what: &'static str,
    },
    #[error(
        "autodetection method '{method}': '{regex}' is not a valid regular expression: {reason}"
    )]
    BadRegex {
        method: &'static str,
        regex: String,
        reason: String,
    },
    #[error(
        "autodetection method 'cidr': '{0}' is not a CIDR (expected e.g. 10.0.0.0/8 or fd00::/8)"
    )]
    BadCidr(String),
    #[error("autodetection method 'can-reach': '{0}' is neither an IP address nor a host name")]
    BadDestination(String),
}

const CAN_REACH: &str = "can-reach";
const INTERFACE: &str = "interface";
const SKIP_INTERFACE: &str = "skip-interface";
const CIDR: &str = "cidr";

impl FromStr for Method {
    type Err = MethodError;

    /// Parses calico-node's syntax; an empty string is calico-node's default, `first-found`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() || s == "first-found" {
            return Ok(Method::FirstFound);
        }
        if s == "kubernetes-internal-ip" {
            return Err(MethodError::KubernetesInternalIp);
        }
        let Some((name, value)) = s.split_once('=') else {
            return Err(MethodError::Unknown(s.to_string()));
        };
        match name.trim() {
            CAN_REACH => parse_destination(value.trim()).map(Method::CanReach),
            INTERFACE => parse_regexes(INTERFACE, value).map(Method::Interface),
            SKIP_INTERFACE => parse_regexes(SKIP_INTERFACE, value).map(Method::SkipInterface),
            CIDR => parse_cidrs(value).map(Method::Cidr),
            _ => Err(MethodError::Unknown(s.to_string())),
        }
    }
}

/// The comma-separated items of a list value, blanks around them ignored; empty items dropped.
fn items(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|i| !i.is_empty())
}

fn parse_regexes(method: &'static str, value: &str) -> Result<Vec<Regex>, MethodError> {
    let regexes = items(value)
        .map(|r| {
            Regex::new(r).map_err(|e| MethodError::BadRegex {
                method,
                regex: r.to_string(),
                // The regex crate's message spans several lines; its last one says what is wrong.
                reason: e
                    .to_string()
                    .lines()
                    .last()
                    .unwrap_or("")
                    .trim()
                    .to_string(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if regexes.is_empty() {
        return Err(MethodError::MissingValue {
            method,
            what: "one or more interface name regexes, separated by commas",
        });
    }
    Ok(regexes)
}

fn parse_cidrs(value: &str) -> Result<Vec<IpNet>, MethodError> {
    let cidrs = items(value)
        .map(|c| {
            c.parse::<IpNet>()
                .map_err(|_| MethodError::BadCidr(c.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if cidrs.is_empty() {
        return Err(MethodError::MissingValue {
            method: CIDR,
            what: "one or more CIDRs, separated by commas",
        });
    }
    Ok(cidrs)
}

/// An IP address (brackets around an IPv6 one are dropped) or something shaped like a host name.
fn parse_destination(value: &str) -> Result<String, MethodError> {
    if value.is_empty() {
        return Err(MethodError::MissingValue {
            method: CAN_REACH,
            what: "an IP address or a host name",
        });
    }
    let unbracketed = value
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or(value);
    if unbracketed.parse::<std::net::IpAddr>().is_ok() {
        return Ok(unbracketed.to_string());
    }
    let host_name = value.split('.').all(|label| {
        !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    });
    if host_name {
        Ok(value.to_string())
    } else {
        Err(MethodError::BadDestination(value.to_string()))
    }
}

/// Prints the method back in calico-node's syntax.
impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn join<T: fmt::Display>(items: impl Iterator<Item = T>) -> String {
            items.map(|i| i.to_string()).collect::<Vec<_>>().join(",")
        }
        match self {
            Method::FirstFound => f.write_str("first-found"),
            Method::CanReach(dest) => write!(f, "{CAN_REACH}={dest}"),
            Method::Interface(r) => write!(f, "{INTERFACE}={}", join(r.iter().map(Regex::as_str))),
            Method::SkipInterface(r) => {
                write!(f, "{SKIP_INTERFACE}={}", join(r.iter().map(Regex::as_str)))
            }
            Method::Cidr(c) => write!(f, "{CIDR}={}", join(c.iter())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Method, MethodError> {
        s.parse()
    }

    #[test]
    fn parses_first_found_and_empty_as_default() {
        assert!(matches!(parse("first-found"), Ok(Method::FirstFound)));
        assert!(matches!(parse(""), Ok(Method::FirstFound)));
        assert!(matches!(parse("  first-found \n"), Ok(Method::FirstFound)));
    }

    #[test]
    fn parses_can_reach_ip_and_host_name() {
        let Ok(Method::CanReach(d)) = parse("can-reach=8.8.8.8") else {
            panic!("can-reach=8.8.8.8 not parsed");
        };
        assert_eq!(d, "8.8.8.8");
        let Ok(Method::CanReach(d)) = parse("can-reach=[2001:db8::1]") else {
            panic!("bracketed IPv6 not parsed");
        };
        assert_eq!(d, "2001:db8::1");
        let Ok(Method::CanReach(d)) = parse("can-reach=2001:db8::1") else {
            panic!("bare IPv6 not parsed");
        };
        assert_eq!(d, "2001:db8::1");
        let Ok(Method::CanReach(d)) = parse("can-reach=www.example.org") else {
            panic!("host name not parsed");
        };
        assert_eq!(d, "www.example.org");
    }

    #[test]
    fn rejects_can_reach_without_or_with_bad_destination() {
        assert_eq!(
            parse("can-reach=").unwrap_err(),
            MethodError::MissingValue {
                method: "can-reach",
                what: "an IP address or a host name"
            }
        );
        assert_eq!(
            parse("can-reach=10.0.0.1:80").unwrap_err(),
            MethodError::BadDestination("10.0.0.1:80".into())
        );
        assert_eq!(
            parse("can-reach=a..b").unwrap_err(),
            MethodError::BadDestination("a..b".into())
        );
    }

    #[test]
    fn parses_interface_regex_list_with_blanks() {
        let Ok(Method::Interface(r)) = parse("interface=eth.* , ens.*") else {
            panic!("interface list not parsed");
        };
        let r: Vec<_> = r.iter().map(Regex::as_str).collect();
        assert_eq!(r, ["eth.*", "ens.*"]);
    }

    #[test]
    fn interface_regexes_are_not_anchored() {
        let Ok(Method::Interface(r)) = parse("interface=eth0") else {
            panic!("interface=eth0 not parsed");
        };
        assert!(r[0].is_match("veth0abc"));
    }

    #[test]
    fn parses_skip_interface() {
        let Ok(Method::SkipInterface(r)) = parse("skip-interface=eth1") else {
            panic!("skip-interface not parsed");
        };
        assert_eq!(r.len(), 1);
        assert!(r[0].is_match("eth1"));
        assert!(!r[0].is_match("eth0"));
    }

    #[test]
    fn rejects_bad_or_missing_regex() {
        let err = parse("interface=eth(").unwrap_err();
        let MethodError::BadRegex { method, regex, .. } = &err else {
            panic!("expected BadRegex, got {err:?}");
        };
        assert_eq!((*method, regex.as_str()), ("interface", "eth("));
        assert!(
            err.to_string()
                .contains("'eth(' is not a valid regular expression")
        );
        assert!(matches!(
            parse("skip-interface= , ").unwrap_err(),
            MethodError::MissingValue {
                method: "skip-interface",
                ..
            }
        ));
    }

    #[test]
    fn parses_cidr_list() {
        let Ok(Method::Cidr(c)) = parse("cidr=10.0.0.0/8,192.168.0.0/16, fd00::/8") else {
            panic!("cidr list not parsed");
        };
        let want: Vec<IpNet> = ["10.0.0.0/8", "192.168.0.0/16", "fd00::/8"]
            .iter()
            .map(|c| c.parse().expect("test CIDR"))
            .collect();
        assert_eq!(c, want);
    }

    #[test]
    fn rejects_bad_or_missing_cidr() {
        assert_eq!(
            parse("cidr=10.0.0.0/8,10.0.0.300/8").unwrap_err(),
            MethodError::BadCidr("10.0.0.300/8".into())
        );
        assert_eq!(
            parse("cidr=10.1.2.3").unwrap_err(),
            MethodError::BadCidr("10.1.2.3".into())
        );
        assert!(matches!(
            parse("cidr=").unwrap_err(),
            MethodError::MissingValue { method: "cidr", .. }
        ));
    }

    #[test]
    fn rejects_unknown_method_naming_the_choices() {
        let err = parse("foo").unwrap_err();
        assert_eq!(err, MethodError::Unknown("foo".into()));
        assert_eq!(
            err.to_string(),
            "unknown autodetection method 'foo': expected first-found, can-reach=DEST, \
             interface=REGEX, skip-interface=REGEX or cidr=CIDR"
        );
        assert_eq!(
            parse("first-found=eth0").unwrap_err(),
            MethodError::Unknown("first-found=eth0".into())
        );
        assert_eq!(
            parse("Interface=eth0").unwrap_err(),
            MethodError::Unknown("Interface=eth0".into())
        );
    }

    #[test]
    fn rejects_kubernetes_internal_ip_with_alternatives() {
        let err = parse("kubernetes-internal-ip").unwrap_err();
        assert_eq!(err, MethodError::KubernetesInternalIp);
        assert!(err.to_string().contains("use can-reach=DEST"));
    }

    #[test]
    fn prints_back_what_it_parsed() {
        for s in [
            "first-found",
            "can-reach=10.0.0.1",
            "can-reach=gw.example.org",
            "interface=eth.*,ens.*",
            "skip-interface=eth1",
            "cidr=10.0.0.0/8,fd00::/8",
        ] {
            assert_eq!(parse(s).expect(s).to_string(), s);
        }
    }
}
