//! The runtime's environment: `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`,
//! `CNI_ARGS` and `CNI_PATH`, validated per command.

use crate::error::{CniError, code};
use std::collections::BTreeMap;

/// The CNI command (`CNI_COMMAND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Gc,
    Status,
    Version,
}

impl Command {
    pub fn parse(s: &str) -> Result<Self, CniError> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            "VERSION" => Command::Version,
            other => {
                return Err(CniError::new(
                    code::INVALID_ENVIRONMENT,
                    format!(
                        "invalid CNI_COMMAND {other:?}: expected ADD, DEL, CHECK, GC, STATUS or VERSION"
                    ),
                ));
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Gc => "GC",
            Command::Status => "STATUS",
            Command::Version => "VERSION",
        }
    }
}

/// The runtime's request, as far as the environment tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    pub command: Command,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: CniArgs,
    /// `CNI_PATH` split on `:`.
    pub path: Vec<String>,
    /// Every variable as given, for executing a delegated IPAM plugin with the same environment.
    pub raw: BTreeMap<String, String>,
}

/// `CNI_ARGS`: `K8S_POD_NAMESPACE=..;K8S_POD_NAME=..;IgnoreUnknown=1`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pub pod_namespace: String,
    pub pod_name: String,
    /// `IP=10.244.0.9,fd00::9`: addresses the runtime asks for.
    pub ips: Vec<String>,
}

/// Keys margay reads or knowingly ignores.
const KNOWN_ARGS: [&str; 6] = [
    "K8S_POD_NAMESPACE",
    "K8S_POD_NAME",
    "K8S_POD_INFRA_CONTAINER_ID",
    "K8S_POD_UID",
    "IgnoreUnknown",
    "IP",
];

impl CniArgs {
    /// Parses `CNI_ARGS`. An unknown key is an error unless `IgnoreUnknown` is `1` or `true`.
    pub fn parse(s: &str) -> Result<Self, CniError> {
        let invalid = |why: String| {
            CniError::new(
                code::INVALID_ENVIRONMENT,
                format!("invalid CNI_ARGS: {why}"),
            )
        };
        let mut pairs = Vec::new();
        for part in s.split(';').filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| invalid(format!("{part:?} is not KEY=VALUE")))?;
            pairs.push((k, v));
        }
        let ignore_unknown = pairs.iter().any(|(k, v)| {
            *k == "IgnoreUnknown" && matches!(v.to_ascii_lowercase().as_str(), "1" | "true")
        });
        let mut args = CniArgs::default();
        for (k, v) in pairs {
            match k {
                "K8S_POD_NAMESPACE" => args.pod_namespace = v.to_string(),
                "K8S_POD_NAME" => args.pod_name = v.to_string(),
                "IP" => {
                    args.ips = v
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect()
                }
                k if KNOWN_ARGS.contains(&k) || ignore_unknown => {}
                k => {
                    return Err(invalid(format!(
                        "unknown key {k}={v} (add IgnoreUnknown=1 to ignore it)"
                    )));
                }
            }
        }
        Ok(args)
    }
}

impl Environment {
    /// Reads and validates the variables `command` needs from `vars`.
    pub fn from_vars(vars: BTreeMap<String, String>) -> Result<Self, CniError> {
        let get = |k: &str| vars.get(k).cloned().unwrap_or_default();
        let command = match vars.get("CNI_COMMAND") {
            Some(c) => Command::parse(c)?,
            None => return Err(missing("CNI_COMMAND")),
        };
        let needs_attachment = matches!(command, Command::Add | Command::Del | Command::Check);
        let container_id = get("CNI_CONTAINERID");
        let ifname = get("CNI_IFNAME");
        let netns = get("CNI_NETNS");
        if needs_attachment {
            if container_id.is_empty() {
                return Err(missing("CNI_CONTAINERID"));
            }
            check_container_id(&container_id)?;
            if ifname.is_empty() {
                return Err(missing("CNI_IFNAME"));
            }
            check_ifname(&ifname)?;
        }
        // DEL may come after the namespace is gone: CNI_NETNS is optional there.
        if matches!(command, Command::Add | Command::Check) && netns.is_empty() {
            return Err(missing("CNI_NETNS"));
        }
        let args = if needs_attachment {
            CniArgs::parse(&get("CNI_ARGS"))?
        } else {
            CniArgs::default()
        };
        let path = get("CNI_PATH")
            .split(':')
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect();
        Ok(Environment {
            command,
            container_id,
            netns,
            ifname,
            args,
            path,
            raw: vars,
        })
    }
}

fn missing(var: &str) -> CniError {
    CniError::new(
        code::INVALID_ENVIRONMENT,
        format!("required environment variable {var} is not set"),
    )
}

/// The spec: alphanumeric first, then alphanumerics, `_`, `.` and `-`.
fn check_container_id(id: &str) -> Result<(), CniError> {
    let mut chars = id.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        Ok(())
    } else {
        Err(CniError::new(
            code::INVALID_ENVIRONMENT,
            format!(
                "invalid CNI_CONTAINERID {id:?}: must start with a letter or digit, then letters, digits, '_', '.' or '-'"
            ),
        ))
    }
}

/// A Linux interface name: 1 to 15 bytes, not `.` or `..`, no `/`, `:` or whitespace.
fn check_ifname(name: &str) -> Result<(), CniError> {
    let bad = name.len() > 15
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if bad {
        Err(CniError::new(
            code::INVALID_ENVIRONMENT,
            format!(
                "invalid CNI_IFNAME {name:?}: an interface name has 1 to 15 characters, not '/', ':' or spaces"
            ),
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reads_kubelet_cni_args() {
        let a = CniArgs::parse(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u1",
        )
        .unwrap();
        assert_eq!(a.pod_namespace, "default");
        assert_eq!(a.pod_name, "web-0");
        assert!(a.ips.is_empty());
    }

    #[test]
    fn reads_requested_ips_from_cni_args() {
        let a = CniArgs::parse("IP=10.244.0.9,fd00::9").unwrap();
        assert_eq!(a.ips, ["10.244.0.9", "fd00::9"]);
    }

    #[test]
    fn unknown_cni_arg_is_error_without_ignore_unknown() {
        let e = CniArgs::parse("K8S_POD_NAME=a;FOO=bar").unwrap_err();
        assert_eq!(e.code, code::INVALID_ENVIRONMENT);
        assert!(e.msg.contains("FOO=bar"), "{}", e.msg);
        assert!(CniArgs::parse("FOO=bar;IgnoreUnknown=true").is_ok());
        assert!(CniArgs::parse("FOO=bar;IgnoreUnknown=0").is_err());
    }

    #[test]
    fn cni_args_without_equals_is_invalid() {
        assert_eq!(
            CniArgs::parse("K8S_POD_NAME").unwrap_err().code,
            code::INVALID_ENVIRONMENT
        );
        assert_eq!(CniArgs::parse("").unwrap(), CniArgs::default());
    }

    #[test]
    fn add_needs_container_id_netns_and_ifname() {
        let full = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/var/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
        ];
        let env = Environment::from_vars(vars(&full)).unwrap();
        assert_eq!(env.path, ["/opt/cni/bin", "/usr/lib/cni"]);
        for drop in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_COMMAND"] {
            let partial: Vec<_> = full.iter().copied().filter(|(k, _)| *k != drop).collect();
            let e = Environment::from_vars(vars(&partial)).unwrap_err();
            assert_eq!(e.code, code::INVALID_ENVIRONMENT);
            assert!(e.msg.contains(drop), "{}", e.msg);
        }
    }

    #[test]
    fn del_does_not_need_netns() {
        let env = Environment::from_vars(vars(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
        ]))
        .unwrap();
        assert_eq!(env.command, Command::Del);
        assert!(env.netns.is_empty());
    }

    #[test]
    fn rejects_bad_container_id_ifname_and_command() {
        let base = |id: &'static str, ifname: &'static str, cmd: &'static str| {
            Environment::from_vars(vars(&[
                ("CNI_COMMAND", cmd),
                ("CNI_CONTAINERID", id),
                ("CNI_NETNS", "/n"),
                ("CNI_IFNAME", ifname),
            ]))
        };
        assert!(
            base("-abc", "eth0", "ADD")
                .unwrap_err()
                .msg
                .contains("CNI_CONTAINERID")
        );
        assert!(
            base("a/b", "eth0", "ADD")
                .unwrap_err()
                .msg
                .contains("CNI_CONTAINERID")
        );
        assert!(
            base("abc", "averyveryverylongname", "ADD")
                .unwrap_err()
                .msg
                .contains("CNI_IFNAME")
        );
        assert!(
            base("abc", "eth/0", "ADD")
                .unwrap_err()
                .msg
                .contains("CNI_IFNAME")
        );
        assert!(
            base("abc", "eth0", "ATTACH")
                .unwrap_err()
                .msg
                .contains("CNI_COMMAND")
        );
    }

    #[test]
    fn gc_and_status_need_no_attachment() {
        for cmd in ["GC", "STATUS", "VERSION"] {
            assert!(
                Environment::from_vars(vars(&[("CNI_COMMAND", cmd)])).is_ok(),
                "{cmd}"
            );
        }
    }
}
