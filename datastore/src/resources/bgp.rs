//! BGPConfiguration (cluster-wide or per-node BGP settings) and BGPPeer (sessions beyond the
//! node-to-node mesh).

use super::communities::{Community, CommunityValue, PrefixAdvertisement};
use super::validate::duration;
use super::{REDACTED, Spec, Validator};
use margay_common::Secret;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::net::IpAddr;

/// Calico's default AS for the cluster.
pub const DEFAULT_AS: u32 = 64512;
/// The BGP port.
pub const DEFAULT_LISTEN_PORT: u16 = 179;

/// An AS number: written as an integer, a decimal string, or asdot (`1.10`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AsNumber(pub u32);

impl fmt::Display for AsNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl AsNumber {
    /// Parses decimal or asdot notation.
    pub fn parse(s: &str) -> Option<AsNumber> {
        if let Some((hi, lo)) = s.split_once('.') {
            let hi: u16 = hi.parse().ok()?;
            let lo: u16 = lo.parse().ok()?;
            return Some(AsNumber((u32::from(hi) << 16) | u32::from(lo)));
        }
        s.parse().ok().map(AsNumber)
    }
}

impl Serialize for AsNumber {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.0)
    }
}

impl<'de> Deserialize<'de> for AsNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Num(n) => u32::try_from(n)
                .map(AsNumber)
                .map_err(|_| serde::de::Error::custom(format!("{n} is not an AS number"))),
            Raw::Text(t) => AsNumber::parse(&t)
                .ok_or_else(|| serde::de::Error::custom(format!("'{t}' is not an AS number"))),
        }
    }
}

/// `{cidr: ...}` entries of `serviceClusterIPs` and friends.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CidrEntry {
    pub cidr: String,
}

/// `bindMode`: where bgpd listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BindMode {
    /// Every address (Calico's default).
    None,
    /// Only the node's BGP address.
    NodeIP,
}

/// `BGPConfiguration.spec`. Absent fields take Calico's defaults through the accessors.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpConfigurationSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_severity_screen: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_to_node_mesh_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_number: Option<AsNumber>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_port: Option<u16>,
    #[serde(
        default,
        rename = "serviceClusterIPs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub service_cluster_ips: Vec<CidrEntry>,
    #[serde(
        default,
        rename = "serviceExternalIPs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub service_external_ips: Vec<CidrEntry>,
    #[serde(
        default,
        rename = "serviceLoadBalancerIPs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub service_load_balancer_ips: Vec<CidrEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_mode: Option<BindMode>,
    /// Named community values, used by `prefixAdvertisements`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<Community>,
    /// Communities attached to the routes announced inside a CIDR.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefix_advertisements: Vec<PrefixAdvertisement>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_mesh_password: Option<BgpPassword>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_mesh_max_restart_time: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored_interfaces: Vec<String>,
    #[serde(
        default,
        rename = "localWorkloadPeeringIPV4",
        skip_serializing_if = "Option::is_none"
    )]
    pub local_workload_peering_ipv4: Option<String>,
    #[serde(
        default,
        rename = "localWorkloadPeeringIPV6",
        skip_serializing_if = "Option::is_none"
    )]
    pub local_workload_peering_ipv6: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_load_balancer_aggregation: Option<EnabledDisabled>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program_cluster_routes: Option<EnabledDisabled>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_normal_route_priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_normal_route_priority: Option<u32>,
    /// BFD on the node-to-node mesh sessions; `margay.io/v1` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd: Option<BfdSpec>,
    /// Most paths of one multipath (ECMP) route learned over BGP (default 2; 1 turns
    /// multipath off); `margay.io/v1` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_paths: Option<u32>,
}

/// Calico's two-valued switches (`serviceLoadBalancerAggregation`, `programClusterRoutes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnabledDisabled {
    Enabled,
    Disabled,
}

impl BgpConfigurationSpec {
    /// Whether the node-to-node mesh is on (default true).
    pub fn mesh_enabled(&self) -> bool {
        self.node_to_node_mesh_enabled.unwrap_or(true)
    }
    /// The cluster AS (default 64512).
    pub fn as_number(&self) -> AsNumber {
        self.as_number.unwrap_or(AsNumber(DEFAULT_AS))
    }
    /// The BGP listen port (default 179).
    pub fn listen_port(&self) -> u16 {
        self.listen_port.unwrap_or(DEFAULT_LISTEN_PORT)
    }
    /// The log level (default `Info`).
    pub fn log_severity(&self) -> &str {
        self.log_severity_screen.as_deref().unwrap_or("Info")
    }
    /// What `prefixAdvertisements` asks for: each CIDR with its community values, names
    /// resolved through `communities`.
    pub fn prefix_communities(&self) -> Vec<(ipnet::IpNet, Vec<CommunityValue>)> {
        super::communities::prefix_communities(&self.communities, &self.prefix_advertisements)
    }
}

/// The most paths `spec.maxPaths` may ask for (the kernel's own bound on next hops is far
/// higher; more than this many ToRs per node is no lab's or rack's).
pub const MAX_PATHS_LIMIT: u32 = 64;

const SEVERITIES: [&str; 6] = ["Trace", "Debug", "Info", "Warning", "Error", "Fatal"];

impl Spec for BgpConfigurationSpec {
    const KIND: &'static str = "BGPConfiguration";
    const PLURAL: &'static str = "bgpconfigurations";

    fn validate(&self, v: &mut Validator) {
        if let Some(b) = &self.bfd {
            b.validate(v, "spec.bfd");
        }
        if let Some(n) = self.max_paths
            && !(1..=MAX_PATHS_LIMIT).contains(&n)
        {
            v.problem(
                "spec.maxPaths",
                format!("{n} is not between 1 and {MAX_PATHS_LIMIT}"),
            );
        }
        if let Some(s) = &self.log_severity_screen
            && !SEVERITIES.contains(&s.as_str())
        {
            v.problem(
                "spec.logSeverityScreen",
                format!("'{s}' is not one of {}", SEVERITIES.join(", ")),
            );
        }
        if self.listen_port == Some(0) {
            v.problem("spec.listenPort", "0 is not a port");
        }
        for (field, list) in [
            ("spec.serviceClusterIPs", &self.service_cluster_ips),
            ("spec.serviceExternalIPs", &self.service_external_ips),
            (
                "spec.serviceLoadBalancerIPs",
                &self.service_load_balancer_ips,
            ),
        ] {
            for (i, e) in list.iter().enumerate() {
                v.cidr(&format!("{field}[{i}].cidr"), &e.cidr);
            }
        }
        if let Some(p) = &self.node_mesh_password {
            p.validate(v, "spec.nodeMeshPassword");
        }
        if let Some(d) = &self.node_mesh_max_restart_time {
            duration(v, "spec.nodeMeshMaxRestartTime", d);
        }
        super::communities::validate(v, &self.communities, &self.prefix_advertisements);
        for (i, name) in self.ignored_interfaces.iter().enumerate() {
            if !super::validate::is_interface_pattern(name) || name == "*" {
                v.problem(
                    format!("spec.ignoredInterfaces[{i}]"),
                    format!("'{name}' is not an interface name or pattern (1 to 15 of a-z A-Z 0-9 _ . - *, not '*' alone)"),
                );
            }
        }
        for (field, addr, want_v4) in [
            (
                "spec.localWorkloadPeeringIPV4",
                &self.local_workload_peering_ipv4,
                true,
            ),
            (
                "spec.localWorkloadPeeringIPV6",
                &self.local_workload_peering_ipv6,
                false,
            ),
        ] {
            if let Some(a) = addr
                && let Some(ip) = v.ip(field, a)
                && ip.is_ipv4() != want_v4
            {
                v.problem(
                    field,
                    format!("'{a}' is not an IPv{} address", if want_v4 { 4 } else { 6 }),
                );
            }
        }
        for (field, p) in [
            (
                "spec.ipv4NormalRoutePriority",
                self.ipv4_normal_route_priority,
            ),
            (
                "spec.ipv6NormalRoutePriority",
                self.ipv6_normal_route_priority,
            ),
        ] {
            if p.is_some_and(|p| !(1..=2_147_483_646).contains(&p)) {
                v.problem(field, "must be 1 to 2147483646");
            }
        }
    }

    fn redact(&mut self) {
        if let Some(p) = &mut self.node_mesh_password {
            p.redact();
        }
    }

    fn restore_secrets(&mut self, stored: &Self) {
        if let (Some(p), Some(old)) = (&mut self.node_mesh_password, &stored.node_mesh_password) {
            p.restore(old);
        }
    }
}

/// Calico's reference to a Kubernetes secret key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretKeyRef {
    #[serde(default)]
    pub name: String,
    pub key: String,
    /// Kubernetes' "the Secret or its key may be missing".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

/// A BGP password (TCP MD5): Calico's `secretKeyRef`, or margay's inline `value`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpPassword {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
    /// margay's inline form: the password itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Secret>,
}

impl BgpPassword {
    fn validate(&self, v: &mut Validator, field: &str) {
        match (&self.secret_key_ref, &self.value) {
            (Some(_), Some(_)) => v.problem(field, "set either secretKeyRef or value, not both"),
            (None, None) => v.problem(field, "needs secretKeyRef or value"),
            (Some(r), None) if r.name.is_empty() || r.key.is_empty() => {
                v.problem(format!("{field}.secretKeyRef"), "needs both name and key")
            }
            _ => {}
        }
    }

    fn redact(&mut self) {
        if self.value.is_some() {
            self.value = Some(Secret::new(REDACTED));
        }
    }

    /// A redacted value written back (`get -o yaml` then `apply`) keeps the stored password.
    fn restore(&mut self, stored: &BgpPassword) {
        if self.value.as_ref().map(Secret::expose) == Some(REDACTED) {
            self.value = stored.value.clone();
        }
    }
}

/// `sourceAddress`: whether the session is sourced from the node's BGP address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SourceAddress {
    UseNodeIP,
    None,
}

/// `nextHopMode`: how the next hop is set on routes sent to the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NextHopMode {
    Auto,
    #[serde(rename = "Self")]
    NextHopSelf,
    Keep,
}

/// `reversePeering`: whether a peerSelector peering is also set up from the other end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReversePeering {
    Auto,
    Manual,
}

/// `BGPPeer.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpPeerSpec {
    /// Only this node peers (global peer when absent and no nodeSelector).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The nodes that peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<String>,
    /// The peer's address, with an optional port (`10.0.0.1:1790`, `[fd00::1]:1790`).
    #[serde(default, rename = "peerIP", skip_serializing_if = "Option::is_none")]
    pub peer_ip: Option<String>,
    /// Peer with the nodes this selects (instead of peerIP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_selector: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_number: Option<AsNumber>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<BgpPassword>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_original_next_hop: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_restart_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<SourceAddress>,
    /// GTSM: the number of hops the peer may be away (RFC 5082).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_security: Option<u8>,
    #[serde(
        default,
        rename = "numAllowedLocalASNumbers",
        skip_serializing_if = "Option::is_none"
    )]
    pub num_allowed_local_as_numbers: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<String>,
    /// The gateway the peer is reached through (a /32 or /128 static route is added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reachable_by: Option<String>,
    /// The AS this node presents on the session (instead of its own).
    #[serde(
        default,
        rename = "localASNumber",
        skip_serializing_if = "Option::is_none"
    )]
    pub local_as_number: Option<AsNumber>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hop_mode: Option<NextHopMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverse_peering: Option<ReversePeering>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_workload_selector: Option<String>,
    /// BFD with this peer; `margay.io/v1` only (Calico's API has no BFD field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd: Option<BfdSpec>,
}

/// `spec.bfd` of a `margay.io/v1` BGPPeer, or of BGPConfiguration for the node-to-node mesh:
/// single-hop BFD (RFC 5880/5881) coupled to the session (RFC 5882). Durations as Calico writes
/// them (`100ms`); margay's defaults 300ms, 300ms, 3 for those left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BfdSpec {
    #[serde(default)]
    pub enabled: bool,
    /// Desired min TX interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_tx: Option<String>,
    /// Required min RX interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_rx: Option<String>,
    /// Detect multiplier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiplier: Option<u8>,
}

impl BfdSpec {
    /// The intervals in whole milliseconds (when valid).
    pub fn min_tx_ms(&self) -> Option<u32> {
        self.min_tx.as_deref().and_then(millis)
    }

    pub fn min_rx_ms(&self) -> Option<u32> {
        self.min_rx.as_deref().and_then(millis)
    }

    fn validate(&self, v: &mut Validator, field: &str) {
        for (name, value) in [("minTx", &self.min_tx), ("minRx", &self.min_rx)] {
            if let Some(d) = value
                && !millis(d).is_some_and(|ms| (10..=60_000).contains(&ms))
            {
                v.problem(
                    format!("{field}.{name}"),
                    format!("'{d}' is not a duration from 10ms to 60s"),
                );
            }
        }
        if self.multiplier == Some(0) {
            v.problem(format!("{field}.multiplier"), "must be 1 to 255");
        }
    }
}

fn millis(d: &str) -> Option<u32> {
    let secs = super::validate::parse_duration(d)?;
    let ms = (secs * 1000.0).round();
    (ms >= 0.0 && ms <= f64::from(u32::MAX)).then_some(ms as u32)
}

impl BgpPeerSpec {
    /// `peerIP` split into address and optional port.
    pub fn peer_addr(&self) -> Option<(IpAddr, Option<u16>)> {
        parse_peer_ip(self.peer_ip.as_deref()?)
    }

    /// Whether every node peers (no node, no nodeSelector).
    pub fn is_global(&self) -> bool {
        self.node.is_none() && self.node_selector.is_none()
    }
}

/// Parses `IP`, `IPv4:port` or `[IPv6]:port`.
pub fn parse_peer_ip(s: &str) -> Option<(IpAddr, Option<u16>)> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some((ip, None));
    }
    let sa: std::net::SocketAddr = s.parse().ok()?;
    Some((sa.ip(), Some(sa.port())))
}

impl Spec for BgpPeerSpec {
    const KIND: &'static str = "BGPPeer";
    const PLURAL: &'static str = "bgppeers";

    fn validate(&self, v: &mut Validator) {
        if self.node.is_some() && self.node_selector.is_some() {
            v.problem("spec.node", "cannot be set together with spec.nodeSelector");
        }
        if let Some(s) = &self.node_selector {
            v.selector("spec.nodeSelector", s);
        }
        if let Some(s) = &self.peer_selector {
            v.selector("spec.peerSelector", s);
        }
        match (&self.peer_ip, &self.peer_selector) {
            (Some(_), Some(_)) => v.problem(
                "spec.peerIP",
                "cannot be set together with spec.peerSelector",
            ),
            (None, None) => v.problem("spec.peerIP", "is required unless spec.peerSelector is set"),
            (Some(ip), None) => {
                match parse_peer_ip(ip) {
                    None => v.problem("spec.peerIP", format!("'{ip}' is not an IP address")),
                    Some((_, Some(0))) => v.problem("spec.peerIP", format!("'{ip}': port 0")),
                    Some(_) => {}
                }
                if self.as_number.is_none() {
                    v.problem("spec.asNumber", "is required with spec.peerIP");
                }
            }
            (None, Some(_)) => {}
        }
        if let Some(p) = &self.password {
            p.validate(v, "spec.password");
        }
        if let Some(d) = &self.max_restart_time {
            duration(v, "spec.maxRestartTime", d);
        }
        if self.ttl_security == Some(0) {
            v.problem("spec.ttlSecurity", "must be 1 to 255 hops");
        }
        if let Some(d) = &self.keepalive_time {
            duration(v, "spec.keepaliveTime", d);
        }
        if let Some(b) = &self.bfd {
            b.validate(v, "spec.bfd");
        }
        if let Some(s) = &self.local_workload_selector {
            v.selector("spec.localWorkloadSelector", s);
        }
        if self.keep_original_next_hop && self.next_hop_mode.is_some() {
            v.problem(
                "spec.nextHopMode",
                "cannot be set together with spec.keepOriginalNextHop (use nextHopMode: Keep)",
            );
        }
        if let Some(gw) = &self.reachable_by {
            match (v.ip("spec.reachableBy", gw), self.peer_addr()) {
                (Some(_), None) if self.peer_ip.is_none() => {
                    v.problem("spec.reachableBy", "needs spec.peerIP")
                }
                (Some(g), Some((peer, _))) if g.is_ipv4() != peer.is_ipv4() => v.problem(
                    "spec.reachableBy",
                    format!("'{gw}' is not of spec.peerIP's address family"),
                ),
                _ => {}
            }
        }
        for (i, f) in self.filters.iter().enumerate() {
            super::validate::name(v, &format!("spec.filters[{i}]"), f);
        }
    }

    fn redact(&mut self) {
        if let Some(p) = &mut self.password {
            p.redact();
        }
    }

    fn restore_secrets(&mut self, stored: &Self) {
        if let (Some(p), Some(old)) = (&mut self.password, &stored.password) {
            p.restore(old);
        }
    }
}
