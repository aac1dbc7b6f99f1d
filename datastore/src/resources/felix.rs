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
    /// The IPv6 VXLAN device's MTU (0: auto-detect).
    #[serde(
        default,
        rename = "vxlanMTUV6",
        skip_serializing_if = "Option::is_none"
    )]
    pub vxlan_mtu_v6: Option<u32>,
    #[serde(default, rename = "vxlanVNI", skip_serializing_if = "Option::is_none")]
    pub vxlan_vni: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_refresh_interval: Option<String>,
    /// A regex of the host interfaces whose smallest MTU is the base of the pod MTU.
    #[serde(
        default,
        rename = "mtuIfacePattern",
        skip_serializing_if = "Option::is_none"
    )]
    pub mtu_iface_pattern: Option<String>,
    /// Deprecated by `routeTableRanges` (which wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_table_range: Option<RouteTableRange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_table_ranges: Option<Vec<RouteTableRange>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove_external_routes: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_route_source_address: Option<String>,
    #[serde(
        default,
        rename = "deviceRouteSourceAddressIPv6",
        skip_serializing_if = "Option::is_none"
    )]
    pub device_route_source_address_ipv6: Option<String>,
    /// Calico's numorstring.Port: `32768:65535`, or one port as a number or a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat_port_range: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat_outgoing_address: Option<String>,
    /// Prefixes of workload interface names, comma separated; the first names new veths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_metrics_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_metrics_host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_metrics_port: Option<u16>,
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
        for (field, mtu) in [
            ("spec.vxlanMTU", self.vxlan_mtu),
            ("spec.ipipMTU", self.ipip_mtu),
            ("spec.vxlanMTUV6", self.vxlan_mtu_v6),
        ] {
            if mtu.is_some_and(|m| m != 0 && !(68..=65535).contains(&m)) {
                v.problem(field, "must be 0 (auto-detect) or 68 to 65535");
            }
        }
        if self.vxlan_port == Some(0) {
            v.problem("spec.vxlanPort", "must be 1 to 65535");
        }
        for (i, r) in self.route_tables().iter().enumerate() {
            if r.min == 0 || r.min > r.max || r.max > 0xffff_fff0 {
                v.problem(
                    format!("spec.routeTableRanges[{i}]"),
                    format!("{}-{} is not a range of table indices", r.min, r.max),
                );
            }
        }
        if let Some(a) = &self.device_route_source_address
            && v.ip("spec.deviceRouteSourceAddress", a)
                .is_some_and(|a| !a.is_ipv4())
        {
            v.problem("spec.deviceRouteSourceAddress", "must be an IPv4 address");
        }
        if let Some(a) = &self.device_route_source_address_ipv6
            && v.ip("spec.deviceRouteSourceAddressIPv6", a)
                .is_some_and(|a| !a.is_ipv6())
        {
            v.problem(
                "spec.deviceRouteSourceAddressIPv6",
                "must be an IPv6 address",
            );
        }
        if let Some(a) = &self.nat_outgoing_address
            && v.ip("spec.natOutgoingAddress", a)
                .is_some_and(|a| !a.is_ipv4())
        {
            v.problem("spec.natOutgoingAddress", "must be an IPv4 address");
        }
        if let Some(Err(e)) = self.nat_ports() {
            v.problem("spec.natPortRange", e);
        }
        if let Some(p) = &self.interface_prefix
            && (p.is_empty() || p.split(',').any(|x| x.is_empty() || x.len() > 12))
        {
            v.problem(
                "spec.interfacePrefix",
                "must be names of 1 to 12 characters, comma separated",
            );
        } else if let Some(first) = self
            .interface_prefix
            .as_deref()
            .and_then(|p| p.split(',').next())
            && first.len() > 4
        {
            // New veths are named the first prefix + 11 hex characters; Linux takes 15.
            v.problem(
                "spec.interfacePrefix",
                "the first name must be 1 to 4 characters: it names new veths with 11 more",
            );
        }
    }
}

/// One range of routing table indices (`{min: 1, max: 250}`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteTableRange {
    pub min: u32,
    pub max: u32,
}

impl FelixConfigurationSpec {
    /// The table ranges set: `routeTableRanges`, else `routeTableRange`, else none.
    pub fn route_tables(&self) -> Vec<RouteTableRange> {
        match (&self.route_table_ranges, self.route_table_range) {
            (Some(rs), _) => rs.clone(),
            (None, Some(r)) => vec![r],
            (None, None) => Vec::new(),
        }
    }

    /// `natPortRange` as (first, last), if set.
    pub fn nat_ports(&self) -> Option<Result<(u16, u16), String>> {
        let v = self.nat_port_range.as_ref()?;
        let text = match v {
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::String(s) => s.clone(),
            other => return Some(Err(format!("{other} is not a port or a range"))),
        };
        let port = |s: &str| s.trim().parse::<u16>().ok().filter(|p| *p > 0);
        let r = match text.split_once(':') {
            Some((a, b)) => port(a).zip(port(b)).filter(|(a, b)| a <= b),
            None => port(&text).map(|p| (p, p)),
        };
        Some(r.ok_or_else(|| format!("{text:?} is not a port or a range FIRST:LAST of ports")))
    }
}
