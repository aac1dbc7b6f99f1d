//! The network configuration on stdin: margay's fields, the delegated IPAM, `prevResult`,
//! `runtimeConfig` and GC's valid attachments. Unknown fields are tolerated.

use crate::error::{CniError, code};
use crate::version::SpecVersion;
use serde::Deserialize;

/// Where the plugin finds felix unless the netconf says otherwise.
pub const DEFAULT_FELIX_SOCKET: &str = "/var/run/margay/felix.sock";
/// The `ipam.type` that means margay's own IPAM, done by felix.
pub const MARGAY_IPAM: &str = "margay-ipam";

/// The parsed network configuration.
#[derive(Debug, Clone)]
pub struct NetConf {
    pub cni_version: SpecVersion,
    pub name: String,
    pub plugin_type: String,
    pub mtu: Option<u32>,
    pub ipam: Ipam,
    pub log_level: tracing::Level,
    pub log_file_path: Option<String>,
    pub felix_socket: String,
    pub nodename: String,
    pub prev_result: Option<serde_json::Value>,
    pub dns: Option<serde_json::Value>,
    /// runtimeConfig `ips` (the `ips` capability): addresses the runtime asks for.
    pub runtime_ips: Vec<String>,
    /// GC: `cni.dev/valid-attachments` as (container id, ifname).
    pub valid_attachments: Vec<(String, String)>,
    /// The pod's labels from the CNI convention `args.cni.labels`
    /// (`[{"key": "app", "value": "web"}]`), for the WorkloadEndpoint policy selects on.
    pub labels: std::collections::BTreeMap<String, String>,
}

/// Who assigns the addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ipam {
    /// `margay-ipam`: felix assigns from the IP pools.
    Margay {
        ipv4_pools: Vec<String>,
        ipv6_pools: Vec<String>,
        assign_ipv4: bool,
        assign_ipv6: bool,
    },
    /// Any other type: the plugin executes that IPAM plugin from CNI_PATH.
    Delegated { plugin: String },
}

/// The wire shape; types checked here are decode failures (code 6), values checked later are
/// configuration errors (code 7).
#[derive(Deserialize)]
struct Wire {
    #[serde(rename = "cniVersion")]
    cni_version: Option<String>,
    name: Option<String>,
    #[serde(rename = "type")]
    plugin_type: Option<String>,
    mtu: Option<u32>,
    ipam: Option<WireIpam>,
    log_level: Option<String>,
    log_file_path: Option<String>,
    felix_socket: Option<String>,
    nodename: Option<String>,
    #[serde(rename = "prevResult")]
    prev_result: Option<serde_json::Value>,
    dns: Option<serde_json::Value>,
    #[serde(rename = "ipMasq")]
    ip_masq: Option<bool>,
    #[serde(rename = "runtimeConfig")]
    runtime_config: Option<WireRuntimeConfig>,
    #[serde(rename = "cni.dev/valid-attachments")]
    valid_attachments: Option<Vec<WireAttachment>>,
    args: Option<WireArgs>,
}

/// `args`: the runtime's extra arguments; margay reads `args.cni.labels`.
#[derive(Deserialize)]
struct WireArgs {
    cni: Option<WireCniArgs>,
}

#[derive(Deserialize)]
struct WireCniArgs {
    #[serde(default)]
    labels: Vec<WireLabel>,
}

#[derive(Deserialize)]
struct WireLabel {
    key: String,
    value: String,
}

#[derive(Deserialize)]
struct WireIpam {
    #[serde(rename = "type")]
    ipam_type: Option<String>,
    #[serde(default)]
    ipv4_pools: Vec<String>,
    #[serde(default)]
    ipv6_pools: Vec<String>,
    assign_ipv4: Option<BoolOrString>,
    assign_ipv6: Option<BoolOrString>,
}

/// Calico writes `"assign_ipv6": "true"`; accept both that and a JSON bool.
#[derive(Deserialize)]
#[serde(untagged)]
enum BoolOrString {
    Bool(bool),
    Str(String),
}

#[derive(Deserialize)]
struct WireRuntimeConfig {
    #[serde(default)]
    ips: Vec<String>,
}

#[derive(Deserialize)]
struct WireAttachment {
    #[serde(rename = "containerID")]
    container_id: String,
    ifname: String,
}

impl NetConf {
    pub fn parse(stdin: &[u8]) -> Result<Self, CniError> {
        let w: Wire = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(
                code::DECODING_FAILURE,
                format!("cannot decode the network configuration on stdin: {e}"),
            )
        })?;
        let cni_version = match w.cni_version.as_deref() {
            Some(v) => SpecVersion::parse(v)?,
            None => return Err(invalid("cniVersion is missing")),
        };
        let name = w.name.ok_or_else(|| invalid("name is missing"))?;
        check_network_name(&name)?;
        let plugin_type = w.plugin_type.unwrap_or_default();
        if plugin_type.is_empty() {
            return Err(invalid("type is missing"));
        }
        if let Some(mtu) = w.mtu
            && !(68..=65535).contains(&mtu)
        {
            return Err(invalid(format!("mtu {mtu} is outside 68..65535")));
        }
        if w.ip_masq == Some(true) {
            return Err(CniError::new(
                code::UNSUPPORTED_FIELD,
                "unsupported field ipMasq=true: margay masquerades by the IP pool's natOutgoing",
            ));
        }
        let ipam = match w.ipam {
            None => Ipam::Margay {
                ipv4_pools: vec![],
                ipv6_pools: vec![],
                assign_ipv4: true,
                assign_ipv6: false,
            },
            Some(i) => match i.ipam_type.as_deref() {
                None | Some("") => return Err(invalid("ipam.type is missing")),
                Some(MARGAY_IPAM) => {
                    let assign_ipv4 = flag(i.assign_ipv4, true, "ipam.assign_ipv4")?;
                    let assign_ipv6 = flag(i.assign_ipv6, false, "ipam.assign_ipv6")?;
                    if !assign_ipv4 && !assign_ipv6 {
                        return Err(invalid("ipam assigns neither IPv4 nor IPv6"));
                    }
                    Ipam::Margay {
                        ipv4_pools: i.ipv4_pools,
                        ipv6_pools: i.ipv6_pools,
                        assign_ipv4,
                        assign_ipv6,
                    }
                }
                Some(other) => {
                    if other.contains('/') || other == "." || other == ".." {
                        return Err(invalid(format!("ipam.type {other:?} is not a plugin name")));
                    }
                    Ipam::Delegated {
                        plugin: other.to_string(),
                    }
                }
            },
        };
        let log_level = match w
            .log_level
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("") | Some("info") => tracing::Level::INFO,
            Some("trace") => tracing::Level::TRACE,
            Some("debug") => tracing::Level::DEBUG,
            Some("warn") | Some("warning") => tracing::Level::WARN,
            Some("error") => tracing::Level::ERROR,
            Some(other) => {
                return Err(invalid(format!(
                    "log_level {other:?}: expected trace, debug, info, warn or error"
                )));
            }
        };
        let mut labels = std::collections::BTreeMap::new();
        for l in w
            .args
            .and_then(|a| a.cni)
            .map(|c| c.labels)
            .unwrap_or_default()
        {
            if l.key.is_empty() || l.key.starts_with("projectcalico.org/") {
                return Err(invalid(format!(
                    "args.cni.labels: key {:?} is empty or reserved (projectcalico.org/)",
                    l.key
                )));
            }
            labels.insert(l.key, l.value);
        }
        Ok(NetConf {
            labels,
            cni_version,
            name,
            plugin_type,
            mtu: w.mtu,
            ipam,
            log_level,
            log_file_path: w.log_file_path.filter(|p| !p.is_empty()),
            felix_socket: w
                .felix_socket
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| DEFAULT_FELIX_SOCKET.to_string()),
            nodename: w.nodename.unwrap_or_default(),
            prev_result: w.prev_result.filter(|v| !v.is_null()),
            dns: w.dns.filter(|v| !v.is_null()),
            runtime_ips: w.runtime_config.map(|r| r.ips).unwrap_or_default(),
            valid_attachments: w
                .valid_attachments
                .unwrap_or_default()
                .into_iter()
                .map(|a| (a.container_id, a.ifname))
                .collect(),
        })
    }
}

/// Reads only `cniVersion`, so an early error can answer in the runtime's version.
pub fn peek_version(stdin: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct V {
        #[serde(rename = "cniVersion")]
        cni_version: Option<String>,
    }
    serde_json::from_slice::<V>(stdin).ok()?.cni_version
}

fn invalid(msg: impl std::fmt::Display) -> CniError {
    CniError::new(
        code::INVALID_NETWORK_CONFIG,
        format!("invalid network configuration: {msg}"),
    )
}

fn flag(v: Option<BoolOrString>, default: bool, field: &str) -> Result<bool, CniError> {
    match v {
        None => Ok(default),
        Some(BoolOrString::Bool(b)) => Ok(b),
        Some(BoolOrString::Str(s)) => match s.to_ascii_lowercase().as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(invalid(format!("{field} {s:?} is not true or false"))),
        },
    }
}

/// The spec: alphanumeric first, then alphanumerics, `_`, `.` and `-`.
fn check_network_name(name: &str) -> Result<(), CniError> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "name {name:?} must start with a letter or digit, then letters, digits, '_', '.' or '-'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: serde_json::Value) -> Result<NetConf, CniError> {
        NetConf::parse(v.to_string().as_bytes())
    }

    #[test]
    fn pod_labels_come_from_args_cni_labels() {
        let c = parse(serde_json::json!({
            "cniVersion": "1.0.0", "name": "n", "type": "margay",
            "ipam": {"type": "margay-ipam"},
            "args": {"cni": {"labels": [{"key": "app", "value": "web"}, {"key": "tier", "value": ""}]}}
        }))
        .unwrap();
        assert_eq!(c.labels.len(), 2);
        assert_eq!(c.labels["app"], "web");
        let e = parse(serde_json::json!({
            "cniVersion": "1.0.0", "name": "n", "type": "margay",
            "args": {"cni": {"labels": [{"key": "projectcalico.org/namespace", "value": "x"}]}}
        }))
        .unwrap_err();
        assert_eq!(e.code, code::INVALID_NETWORK_CONFIG);
        let c = parse(serde_json::json!({
            "cniVersion": "1.0.0", "name": "n", "type": "margay", "args": {"other": 1}
        }))
        .unwrap();
        assert!(c.labels.is_empty());
    }

    #[test]
    fn reads_margay_fields_and_tolerates_unknown_ones() {
        let c = parse(serde_json::json!({
            "cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "margay", "mtu": 1450,
            "ipam": {"type": "margay-ipam", "ipv4_pools": ["10.244.0.0/16"], "assign_ipv6": "true"},
            "log_level": "DEBUG", "log_file_path": "/var/log/margay/cni.log",
            "felix_socket": "/run/f.sock", "nodename": "node1",
            "policy": {"type": "k8s"}, "kubernetes": {"kubeconfig": "/x"},
            "runtimeConfig": {"ips": ["10.244.0.7"]},
        }))
        .unwrap();
        assert_eq!(c.cni_version, SpecVersion::V1_0_0);
        assert_eq!(c.name, "k8s-pod-network");
        assert_eq!(c.mtu, Some(1450));
        assert_eq!(
            c.ipam,
            Ipam::Margay {
                ipv4_pools: vec!["10.244.0.0/16".into()],
                ipv6_pools: vec![],
                assign_ipv4: true,
                assign_ipv6: true
            }
        );
        assert_eq!(c.log_level, tracing::Level::DEBUG);
        assert_eq!(c.felix_socket, "/run/f.sock");
        assert_eq!(c.nodename, "node1");
        assert_eq!(c.runtime_ips, ["10.244.0.7"]);
    }

    #[test]
    fn defaults_socket_and_margay_ipam() {
        let c = parse(serde_json::json!({"cniVersion": "0.3.1", "name": "n", "type": "margay"}))
            .unwrap();
        assert_eq!(c.felix_socket, DEFAULT_FELIX_SOCKET);
        assert!(matches!(
            c.ipam,
            Ipam::Margay {
                assign_ipv4: true,
                assign_ipv6: false,
                ..
            }
        ));
        assert_eq!(c.log_level, tracing::Level::INFO);
    }

    #[test]
    fn other_ipam_type_is_delegated() {
        let c = parse(
            serde_json::json!({"cniVersion": "0.4.0", "name": "n", "type": "margay",
            "ipam": {"type": "host-local", "subnet": "10.1.0.0/24"}}),
        )
        .unwrap();
        assert_eq!(
            c.ipam,
            Ipam::Delegated {
                plugin: "host-local".into()
            }
        );
    }

    #[test]
    fn reads_gc_valid_attachments() {
        let c = parse(
            serde_json::json!({"cniVersion": "1.1.0", "name": "n", "type": "margay",
            "cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}]}),
        )
        .unwrap();
        assert_eq!(
            c.valid_attachments,
            [("c1".to_string(), "eth0".to_string())]
        );
    }

    #[test]
    fn not_json_or_wrong_types_is_decoding_failure() {
        for bad in [
            &b"not json"[..],
            b"[1,2]",
            br#"{"cniVersion":"1.0.0","mtu":"big"}"#,
            b"",
        ] {
            assert_eq!(
                NetConf::parse(bad).unwrap_err().code,
                code::DECODING_FAILURE
            );
        }
    }

    #[test]
    fn invalid_values_are_invalid_network_config() {
        let cases = [
            serde_json::json!({"cniVersion": "1.0.0", "type": "margay"}),
            serde_json::json!({"cniVersion": "1.0.0", "name": "-bad", "type": "margay"}),
            serde_json::json!({"cniVersion": "1.0.0", "name": "n"}),
            serde_json::json!({"name": "n", "type": "margay"}),
            serde_json::json!({"cniVersion": "1.0.0", "name": "n", "type": "margay", "mtu": 20}),
            serde_json::json!({"cniVersion": "1.0.0", "name": "n", "type": "margay", "ipam": {}}),
            serde_json::json!({"cniVersion": "1.0.0", "name": "n", "type": "margay", "ipam": {"type": "../x"}}),
            serde_json::json!({"cniVersion": "1.0.0", "name": "n", "type": "margay", "log_level": "loud"}),
            serde_json::json!({"cniVersion": "1.0.0", "name": "n", "type": "margay",
                "ipam": {"type": "margay-ipam", "assign_ipv4": "false"}}),
        ];
        for c in cases {
            assert_eq!(
                parse(c.clone()).unwrap_err().code,
                code::INVALID_NETWORK_CONFIG,
                "{c}"
            );
        }
    }

    #[test]
    fn unsupported_version_is_code_1_and_ip_masq_is_code_2() {
        let e = parse(serde_json::json!({"cniVersion": "0.2.0", "name": "n", "type": "margay"}))
            .unwrap_err();
        assert_eq!(e.code, code::INCOMPATIBLE_VERSION);
        let e = parse(
            serde_json::json!({"cniVersion": "1.0.0", "name": "n", "type": "margay",
            "ipMasq": true}),
        )
        .unwrap_err();
        assert_eq!(e.code, code::UNSUPPORTED_FIELD);
        assert!(e.msg.contains("ipMasq=true"));
    }
}
