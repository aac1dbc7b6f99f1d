//! WorkloadEndpoint (a pod's interface, written by felix) and FelixConfiguration.

use super::{Spec, Validator};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `WorkloadEndpoint.spec` (namespaced).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEndpointSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orchestrator: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    #[serde(default)]
    pub node: String,
    /// The container whose IPAM handle holds this endpoint's addresses.
    #[serde(default, rename = "containerID")]
    pub container_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// The pod's addresses (`10.0.0.5/32`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_networks: Vec<String>,
    #[serde(default, rename = "ipNATs", skip_serializing_if = "Vec::is_empty")]
    pub ip_nats: Vec<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
    #[serde(default)]
    pub interface_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Named ports (`http` → TCP 8080) that policy rules can name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<EndpointPort>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_spoofed_source_prefixes: Vec<String>,
}

/// One named port of a WorkloadEndpoint (`spec.ports[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointPort {
    pub name: String,
    pub protocol: super::Protocol,
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    #[serde(default, rename = "hostIP", skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
}

impl Spec for WorkloadEndpointSpec {
    const KIND: &'static str = "WorkloadEndpoint";
    const PLURAL: &'static str = "workloadendpoints";
    const NAMESPACED: bool = true;

    fn validate(&self, v: &mut Validator) {
        if self.node.is_empty() {
            v.problem("spec.node", "is required");
        }
        for (i, n) in self.ip_networks.iter().enumerate() {
            v.ip_or_cidr(&format!("spec.ipNetworks[{i}]"), n);
        }
        for (i, p) in self.ports.iter().enumerate() {
            if p.protocol.number().is_none() {
                v.problem(
                    format!("spec.ports[{i}].protocol"),
                    format!("'{}' is not a protocol", p.protocol),
                );
            }
        }
        for (field, gw) in [
            ("spec.ipv4Gateway", &self.ipv4_gateway),
            ("spec.ipv6Gateway", &self.ipv6_gateway),
        ] {
            if let Some(g) = gw {
                v.ip(field, g);
            }
        }
    }
}

/// `FelixConfiguration.spec`: the options margay's felix reads, and every other field kept.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FelixConfigurationSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_severity_screen: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipip_enabled: Option<bool>,
    #[serde(default, rename = "ipipMTU", skip_serializing_if = "Option::is_none")]
    pub ipip_mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan_enabled: Option<bool>,
    #[serde(default, rename = "vxlanMTU", skip_serializing_if = "Option::is_none")]
    pub vxlan_mtu: Option<u32>,
    #[serde(default, rename = "vxlanVNI", skip_serializing_if = "Option::is_none")]
    pub vxlan_vni: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_refresh_interval: Option<String>,
    /// Felix options margay does not implement, kept as given.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

impl Spec for FelixConfigurationSpec {
    const KIND: &'static str = "FelixConfiguration";
    const PLURAL: &'static str = "felixconfigurations";

    fn validate(&self, v: &mut Validator) {
        if self.vxlan_vni.is_some_and(|n| n == 0 || n >= 1 << 24) {
            v.problem("spec.vxlanVNI", "must be 1 to 16777215");
        }
        if let Some(a) = self.other.get("defaultEndpointToHostAction")
            && a.as_str()
                .and_then(crate::policy::EndpointToHostAction::parse)
                .is_none()
        {
            v.problem(
                "spec.defaultEndpointToHostAction",
                format!("{a} is not Drop, Return or Accept"),
            );
        }
        if let Some(d) = &self.route_refresh_interval {
            super::validate::duration(v, "spec.routeRefreshInterval", d);
        }
    }
}
