//! FelixConfiguration, applied: the global `default` and this node's `node.<name>` resources
//! merged with Calico's precedence (a field set per node wins over the global one, which wins
//! over felix's default; a flag given on the command line or in the environment wins over both,
//! as Calico's environment variables do), into the [`Settings`] felix runs with. Pure: the
//! datastore feed brings the resources, cluster mode hands the result to the dataplane (the
//! [`DataplaneSettings`] ride in the model), the resync timer and the pod MTU.
//!
//! A field felix does not apply is warned about once by the field registry; a value that does
//! not parse (a bad regex) is a problem, and the default stays.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use margay_datastore::resources::{FelixConfigurationSpec, parse_duration};
use serde::{Deserialize, Serialize};

use crate::desired::{VXLAN_PORT, VXLAN_VNI};

/// The FelixConfiguration every node reads.
pub const GLOBAL: &str = "default";

/// The name of `node`'s own FelixConfiguration.
pub fn node_config_name(node: &str) -> String {
    format!("node.{node}")
}

/// Calico's default `mtuIfacePattern`: the usual names of physical and virtual NICs.
pub const DEFAULT_MTU_IFACE_PATTERN: &str = r"^((en|wl|ww|sl|ib)[Pcopsvx].*|(eth|wlan|wwan).*)";
/// Calico's default `routeRefreshInterval`.
pub const DEFAULT_ROUTE_REFRESH: Duration = Duration::from_secs(90);

/// What the dataplane loop applies (part of the model).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DataplaneSettings {
    /// `vxlanVNI` of `vxlan.margay` (a change re-creates the device).
    pub vxlan_vni: u32,
    /// `vxlanPort`: its UDP port (a change re-creates the device).
    pub vxlan_port: u16,
    /// `vxlanMTU`; `None`: the underlay interface's MTU less 50.
    pub vxlan_mtu: Option<u32>,
    /// `ipipMTU`; `None`: the underlay interface's MTU less 20.
    pub ipip_mtu: Option<u32>,
    /// `vxlanMTUV6`: the IPv6 VXLAN device's MTU; `None`: the IPv6 underlay interface's MTU
    /// less 70.
    #[serde(rename = "vxlanMTUV6")]
    pub vxlan_mtu_v6: Option<u32>,
    /// `vxlanEnabled` / `ipipEnabled`: force the device on or off; `None`: as the pools need.
    pub vxlan_enabled: Option<bool>,
    pub ipip_enabled: Option<bool>,
    /// `natPortRange` (first, last): the source ports natOutgoing maps TCP and UDP to
    /// (Calico: `MASQUERADE --to-ports`, or `SNAT --to-source ADDR:PORTS`).
    pub nat_port_range: Option<(u16, u16)>,
    /// `natOutgoingAddress`: IPv4 natOutgoing traffic is SNATed to this address instead of
    /// masqueraded to the outgoing interface's.
    pub nat_outgoing_address: Option<Ipv4Addr>,
    /// `deviceRouteSourceAddress` / `deviceRouteSourceAddressIPv6`: the `src` of every route
    /// felix programs through a device (pods' `dev caliX` routes, tunnel routes).
    pub device_route_source: Option<Ipv4Addr>,
    pub device_route_source_v6: Option<Ipv6Addr>,
    /// `removeExternalRoutes` (Calico's default true): routes through a workload interface
    /// that felix did not program are removed; false leaves them alone.
    pub remove_external_routes: bool,
    /// `interfacePrefix` (comma separated, `cali` by default): interfaces whose name starts
    /// with any of them are workloads'; the first names new pod veths.
    pub interface_prefixes: Vec<String>,
}

impl DataplaneSettings {
    /// `deviceRouteSourceAddress(IPv6)` for a route to an address of `ip`'s family.
    pub fn device_route_source_for(&self, ip: IpAddr) -> Option<IpAddr> {
        match ip {
            IpAddr::V4(_) => self.device_route_source.map(IpAddr::V4),
            IpAddr::V6(_) => self.device_route_source_v6.map(IpAddr::V6),
        }
    }

    /// Whether `ifname` is a workload's interface (it starts with an `interfacePrefix`).
    pub fn is_workload_interface(&self, ifname: &str) -> bool {
        is_workload_interface(&self.interface_prefixes, ifname)
    }
}

/// Whether `ifname` starts with one of `prefixes` (Calico's workload interface test).
pub fn is_workload_interface(prefixes: &[String], ifname: &str) -> bool {
    prefixes
        .iter()
        .any(|p| !p.is_empty() && ifname.starts_with(p.as_str()))
}

/// Calico's default `interfacePrefix`.
pub const DEFAULT_INTERFACE_PREFIX: &str = "cali";

impl Default for DataplaneSettings {
    fn default() -> Self {
        DataplaneSettings {
            vxlan_vni: VXLAN_VNI,
            vxlan_port: VXLAN_PORT,
            vxlan_mtu: None,
            ipip_mtu: None,
            vxlan_mtu_v6: None,
            vxlan_enabled: None,
            ipip_enabled: None,
            nat_port_range: None,
            nat_outgoing_address: None,
            device_route_source: None,
            device_route_source_v6: None,
            remove_external_routes: true,
            interface_prefixes: vec![DEFAULT_INTERFACE_PREFIX.to_string()],
        }
    }
}

/// Everything felix applies from FelixConfiguration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub dataplane: DataplaneSettings,
    /// `routeRefreshInterval`: time between full resyncs of the kernel (0 in Calico turns the
    /// refresh off; felix then resyncs hourly).
    pub route_refresh: Duration,
    /// `mtuIfacePattern`: the host interfaces whose smallest MTU, less the encapsulation, is
    /// the pod MTU a CNI request without one gets.
    pub mtu_iface_pattern: String,
    /// `routeTableRanges` (else `routeTableRange`, else Calico's 1-250): the routing tables
    /// felix may use (WireGuard's is the first free index in them).
    pub route_tables: Vec<(u32, u32)>,
    /// `healthHost` / `healthPort`: where /liveness, /readiness and /metrics are served
    /// (`None`: felix's flags).
    pub health: Option<HttpAddr>,
    /// `prometheusMetricsEnabled` with `prometheusMetricsHost` / `prometheusMetricsPort`
    /// (Calico's 9091): a second server with /metrics only.
    pub prometheus: Option<HttpAddr>,
    /// `wireguard*` and the table from `routeTableRanges`, or why they cannot be used (the
    /// keeper then keeps the previous ones).
    pub wireguard: Result<crate::wireguard::config::Config, crate::wireguard::config::ConfigError>,
    /// `wireguard*V6` (the IPv6 device), the same way.
    pub wireguard_v6:
        Result<crate::wireguard::config::Config, crate::wireguard::config::ConfigError>,
}

/// Where an HTTP server listens: a host name or address and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAddr {
    pub host: String,
    pub port: u16,
}

/// Calico's default `routeTableRange`.
pub const DEFAULT_ROUTE_TABLES: (u32, u32) = (1, 250);

/// Calico's `prometheusMetricsPort` default.
pub const DEFAULT_PROMETHEUS_PORT: u16 = 9091;

impl Default for Settings {
    fn default() -> Self {
        Settings {
            dataplane: DataplaneSettings::default(),
            route_refresh: DEFAULT_ROUTE_REFRESH,
            mtu_iface_pattern: DEFAULT_MTU_IFACE_PATTERN.to_string(),
            route_tables: vec![DEFAULT_ROUTE_TABLES],
            health: None,
            prometheus: None,
            wireguard: Ok(crate::wireguard::config::Config::default()),
            wireguard_v6: Ok(crate::wireguard::config::Config::default_v6()),
        }
    }
}

/// Settings a flag pinned (given on the command line or in the environment).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pinned {
    pub route_refresh: Option<Duration>,
    /// `--http-port` / `--http-address` given: FelixConfiguration's health server settings
    /// are not applied.
    pub health: bool,
}

/// The first value set: this node's, else the global one.
fn pick<T>(
    node: Option<&FelixConfigurationSpec>,
    global: Option<&FelixConfigurationSpec>,
    get: impl Fn(&FelixConfigurationSpec) -> Option<T>,
) -> Option<T> {
    node.and_then(&get).or_else(|| global.and_then(&get))
}

/// Merges the global and per-node FelixConfiguration over felix's defaults and under the
/// pinned flags. Values that cannot be used are left at the default and listed.
pub fn merge(
    global: Option<&FelixConfigurationSpec>,
    node: Option<&FelixConfigurationSpec>,
    pinned: &Pinned,
) -> (Settings, Vec<String>) {
    let mut s = Settings::default();
    let mut problems = Vec::new();
    let d = &mut s.dataplane;
    if let Some(v) = pick(node, global, |c| c.vxlan_vni) {
        d.vxlan_vni = v;
    }
    if let Some(p) = pick(node, global, |c| c.vxlan_port) {
        d.vxlan_port = p;
    }
    // 0 is Calico's "auto-detect".
    d.vxlan_mtu = pick(node, global, |c| c.vxlan_mtu).filter(|m| *m != 0);
    d.ipip_mtu = pick(node, global, |c| c.ipip_mtu).filter(|m| *m != 0);
    d.vxlan_mtu_v6 = pick(node, global, |c| c.vxlan_mtu_v6).filter(|m| *m != 0);
    d.vxlan_enabled = pick(node, global, |c| c.vxlan_enabled);
    d.ipip_enabled = pick(node, global, |c| c.ipip_enabled);
    if let Some(text) = pick(node, global, |c| c.route_refresh_interval.clone()) {
        match parse_duration(&text) {
            Some(0.0) => s.route_refresh = Duration::from_secs(3600),
            Some(secs) => s.route_refresh = Duration::from_secs_f64(secs.max(1.0)),
            None => problems.push(format!("routeRefreshInterval {text:?} is not a duration")),
        }
    }
    if let Some(r) = pinned.route_refresh {
        s.route_refresh = r;
    }
    if let Some(p) = pick(node, global, |c| c.mtu_iface_pattern.clone()) {
        match regex::Regex::new(&p) {
            Ok(_) => s.mtu_iface_pattern = p,
            Err(e) => problems.push(format!("mtuIfacePattern {p:?}: {e}")),
        }
    }
    let health_port = pick(node, global, |c| c.health_port);
    let health_host = pick(node, global, |c| c.health_host.clone());
    if !pinned.health && (health_port.is_some() || health_host.is_some()) {
        s.health = Some(HttpAddr {
            host: health_host.unwrap_or_else(|| "localhost".into()),
            port: health_port.unwrap_or(9099),
        });
    }
    if pick(node, global, |c| c.prometheus_metrics_enabled) == Some(true) {
        s.prometheus = Some(HttpAddr {
            // Calico's empty host: every address.
            host: pick(node, global, |c| c.prometheus_metrics_host.clone())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "0.0.0.0".into()),
            port: pick(node, global, |c| c.prometheus_metrics_port)
                .unwrap_or(DEFAULT_PROMETHEUS_PORT),
        });
    }
    if let Some(p) = pick(node, global, |c| c.interface_prefix.clone()) {
        let prefixes: Vec<String> = p.split(',').map(|x| x.trim().to_string()).collect();
        if prefixes.iter().all(|x| !x.is_empty()) {
            s.dataplane.interface_prefixes = prefixes;
        } else {
            problems.push(format!("interfacePrefix {p:?} has an empty name"));
        }
    }
    s.wireguard = crate::wireguard::config::Config::resolve(global, node);
    s.wireguard_v6 = crate::wireguard::config::Config::resolve_v6(global, node);
    apply_nat(&mut s.dataplane, node, global, &mut problems);
    apply_routes(&mut s, node, global, &mut problems);
    (s, problems)
}

/// `natPortRange` and `natOutgoingAddress`.
fn apply_nat(
    d: &mut DataplaneSettings,
    node: Option<&FelixConfigurationSpec>,
    global: Option<&FelixConfigurationSpec>,
    problems: &mut Vec<String>,
) {
    match pick(node, global, |c| c.nat_ports()) {
        Some(Ok(r)) => d.nat_port_range = Some(r),
        Some(Err(e)) => problems.push(format!("natPortRange: {e}")),
        None => {}
    }
    if let Some(a) = pick(node, global, |c| c.nat_outgoing_address.clone()) {
        match a.parse::<Ipv4Addr>() {
            Ok(a) => d.nat_outgoing_address = Some(a),
            Err(_) => problems.push(format!("natOutgoingAddress {a:?} is not an IPv4 address")),
        }
    }
}

/// `deviceRouteSourceAddress(IPv6)`, `removeExternalRoutes` and the route table ranges.
fn apply_routes(
    s: &mut Settings,
    node: Option<&FelixConfigurationSpec>,
    global: Option<&FelixConfigurationSpec>,
    problems: &mut Vec<String>,
) {
    let d = &mut s.dataplane;
    if let Some(a) = pick(node, global, |c| c.device_route_source_address.clone()) {
        match a.parse::<Ipv4Addr>() {
            Ok(a) => d.device_route_source = Some(a),
            Err(_) => problems.push(format!(
                "deviceRouteSourceAddress {a:?} is not an IPv4 address"
            )),
        }
    }
    if let Some(a) = pick(node, global, |c| c.device_route_source_address_ipv6.clone()) {
        match a.parse::<Ipv6Addr>() {
            Ok(a) => d.device_route_source_v6 = Some(a),
            Err(_) => problems.push(format!(
                "deviceRouteSourceAddressIPv6 {a:?} is not an IPv6 address"
            )),
        }
    }
    if let Some(r) = pick(node, global, |c| c.remove_external_routes) {
        d.remove_external_routes = r;
    }
    let ranges = pick(node, global, |c| {
        let r = c.route_tables();
        (!r.is_empty()).then_some(r)
    });
    if let Some(ranges) = ranges {
        let ranges: Vec<(u32, u32)> = ranges.iter().map(|r| (r.min, r.max)).collect();
        match first_route_table(&ranges) {
            Some(_) => s.route_tables = ranges,
            None => problems.push(format!(
                "routeTableRanges {ranges:?} hold no usable table (1 to 252 or above 255)"
            )),
        }
    }
}

/// The tables the kernel reserves (unspec, default, main, local): never felix's.
const RESERVED_TABLES: [u32; 4] = [0, 253, 254, 255];

/// The lowest table index in `ranges` that is not reserved: the one Calico's felix takes for
/// its WireGuard routing table (its index allocator hands out the lowest free index first).
pub fn first_route_table(ranges: &[(u32, u32)]) -> Option<u32> {
    ranges
        .iter()
        .filter(|(lo, hi)| lo <= hi)
        .flat_map(|&(lo, hi)| (lo..=hi).find(|t| !RESERVED_TABLES.contains(t)).into_iter())
        .min()
}

/// The `n`-th (from 0) lowest table index in `ranges` that is not reserved: 0 is the IPv4
/// WireGuard table, 1 the IPv6 one (Calico's allocator hands them out in that order).
pub fn nth_route_table(ranges: &[(u32, u32)], n: usize) -> Option<u32> {
    let mut usable: Vec<u32> = ranges
        .iter()
        .filter(|(lo, hi)| lo <= hi)
        .flat_map(|&(lo, hi)| {
            (lo..=hi)
                .filter(|t| !RESERVED_TABLES.contains(t))
                .take(n + 1)
        })
        .collect();
    usable.sort_unstable();
    usable.dedup();
    usable.get(n).copied()
}

/// Whether table `t` lies in `ranges`.
pub fn table_in_ranges(ranges: &[(u32, u32)], t: u32) -> bool {
    ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&t))
}

/// Bytes the encapsulation in use takes from the pod MTU (Calico's rule: IPv6 VXLAN 70, VXLAN
/// 50, IP-in-IP 20, none 0; the largest that applies, so a dual-stack pod fits both tunnels).
pub fn encap_overhead(vxlan: bool, ipip: bool, vxlan_v6: bool) -> u32 {
    if vxlan_v6 {
        crate::desired::VXLAN_V6_OVERHEAD
    } else if vxlan {
        crate::desired::VXLAN_OVERHEAD
    } else if ipip {
        crate::desired::IPIP_OVERHEAD
    } else {
        0
    }
}

/// What the enabled WireGuard devices take from the pod MTU, by Calico's rule (each enabled
/// device's MTU is a candidate: the configured one, else the uplink's less 60 for IPv4 or 80
/// for IPv6; the pod MTU is the smallest candidate): the largest overhead of the enabled
/// devices without a configured MTU, and the smallest configured MTU of the others.
pub fn wireguard_mtu_limits(s: &Settings) -> (u32, Option<u32>) {
    let mut overhead = 0;
    let mut cap: Option<u32> = None;
    for c in [&s.wireguard, &s.wireguard_v6].into_iter().flatten() {
        if !c.enabled {
            continue;
        }
        match c.mtu {
            Some(m) => cap = Some(cap.map_or(m, |x| x.min(m))),
            None => overhead = overhead.max(c.overhead()),
        }
    }
    (overhead, cap)
}

/// The pod MTU from the host's interfaces (`(name, mtu)`): the smallest MTU of those matching
/// `pattern`, less `overhead`. `None` when none matches (or the pattern does not parse).
pub fn pod_mtu<'a>(
    links: impl IntoIterator<Item = (&'a str, u32)>,
    pattern: &str,
    overhead: u32,
) -> Option<u32> {
    let re = regex::Regex::new(pattern).ok()?;
    links
        .into_iter()
        .filter(|(name, mtu)| *mtu > 0 && re.is_match(name))
        .map(|(_, mtu)| mtu)
        .min()
        .map(|m| m.saturating_sub(overhead))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(f: impl FnOnce(&mut FelixConfigurationSpec)) -> FelixConfigurationSpec {
        let mut s = FelixConfigurationSpec::default();
        f(&mut s);
        s
    }

    #[test]
    fn node_config_wins_over_global_which_wins_over_defaults() {
        let global = spec(|s| {
            s.vxlan_vni = Some(5000);
            s.vxlan_port = Some(8472);
            s.vxlan_mtu = Some(1400);
            s.vxlan_mtu_v6 = Some(1380);
        });
        let node = spec(|s| s.vxlan_vni = Some(6000));
        let (got, problems) = merge(Some(&global), Some(&node), &Pinned::default());
        assert!(problems.is_empty());
        assert_eq!(got.dataplane.vxlan_vni, 6000);
        assert_eq!(got.dataplane.vxlan_port, 8472);
        assert_eq!(got.dataplane.vxlan_mtu, Some(1400));
        assert_eq!(got.dataplane.vxlan_mtu_v6, Some(1380));
        // Nothing set: Calico's defaults.
        let (d, _) = merge(None, None, &Pinned::default());
        assert_eq!(d, Settings::default());
        assert_eq!(
            (d.dataplane.vxlan_vni, d.dataplane.vxlan_port),
            (4096, 4789)
        );
        // 0 is auto-detect.
        let (z, _) = merge(
            Some(&spec(|s| s.ipip_mtu = Some(0))),
            None,
            &Pinned::default(),
        );
        assert_eq!(z.dataplane.ipip_mtu, None);
    }

    #[test]
    fn a_pinned_flag_wins_and_bad_values_keep_the_default() {
        let global = spec(|s| {
            s.route_refresh_interval = Some("10s".into());
            s.mtu_iface_pattern = Some("(".into());
            s.interface_prefix = Some("tap,cali".into());
        });
        let (got, problems) = merge(Some(&global), None, &Pinned::default());
        assert_eq!(got.route_refresh, Duration::from_secs(10));
        assert_eq!(got.mtu_iface_pattern, DEFAULT_MTU_IFACE_PATTERN);
        assert_eq!(got.dataplane.interface_prefixes, vec!["tap", "cali"]);
        assert!(problems[0].starts_with("mtuIfacePattern"), "{problems:?}");
        let pinned = Pinned {
            route_refresh: Some(Duration::from_secs(5)),
            health: true,
        };
        assert_eq!(
            merge(Some(&global), None, &pinned).0.route_refresh,
            Duration::from_secs(5)
        );
    }

    #[test]
    fn health_and_prometheus_servers_follow_calicos_fields() {
        let global = spec(|s| {
            s.health_port = Some(9199);
            s.prometheus_metrics_enabled = Some(true);
        });
        let (got, _) = merge(Some(&global), None, &Pinned::default());
        assert_eq!(
            got.health,
            Some(HttpAddr {
                host: "localhost".into(),
                port: 9199
            })
        );
        assert_eq!(
            got.prometheus.map(|p| p.port),
            Some(DEFAULT_PROMETHEUS_PORT)
        );
        let pinned = Pinned {
            health: true,
            ..Pinned::default()
        };
        assert_eq!(merge(Some(&global), None, &pinned).0.health, None);
        assert_eq!(merge(None, None, &Pinned::default()).0.prometheus, None);
    }

    #[test]
    fn route_nat_and_interface_fields_merge_with_calicos_meaning() {
        let global = spec(|s| {
            s.nat_port_range = Some(serde_json::json!("40000:40100"));
            s.nat_outgoing_address = Some("192.0.2.7".into());
            s.device_route_source_address = Some("192.0.2.1".into());
            s.device_route_source_address_ipv6 = Some("fd00::1".into());
            s.remove_external_routes = Some(false);
            s.route_table_range =
                Some(margay_datastore::resources::RouteTableRange { min: 1, max: 250 });
        });
        let node = spec(|s| {
            s.route_table_ranges = Some(vec![margay_datastore::resources::RouteTableRange {
                min: 253,
                max: 300,
            }]);
        });
        let (got, problems) = merge(Some(&global), Some(&node), &Pinned::default());
        assert!(problems.is_empty(), "{problems:?}");
        let d = &got.dataplane;
        assert_eq!(d.nat_port_range, Some((40000, 40100)));
        assert_eq!(d.nat_outgoing_address, Some("192.0.2.7".parse().unwrap()));
        assert_eq!(
            d.device_route_source_for("10.0.0.1".parse().unwrap()),
            Some("192.0.2.1".parse().unwrap())
        );
        assert_eq!(
            d.device_route_source_for("fd00::9".parse().unwrap()),
            Some("fd00::1".parse().unwrap())
        );
        assert!(!d.remove_external_routes);
        // The node's ranges win; the kernel's tables are skipped.
        assert_eq!(got.route_tables, vec![(253, 300)]);
        assert_eq!(first_route_table(&got.route_tables), Some(256));
        // Calico's defaults.
        let (def, _) = merge(None, None, &Pinned::default());
        assert!(def.dataplane.remove_external_routes);
        assert_eq!(first_route_table(&def.route_tables), Some(1));
        assert!(def.dataplane.is_workload_interface("cali0123456789a"));
        assert!(!def.dataplane.is_workload_interface("tap0123456789a"));
        // A range of kernel tables only, or an IPv6 natOutgoingAddress: a problem, the default.
        let bad = spec(|s| {
            s.route_table_ranges = Some(vec![margay_datastore::resources::RouteTableRange {
                min: 253,
                max: 255,
            }]);
            s.nat_outgoing_address = Some("fd00::7".into());
        });
        let (b, problems) = merge(Some(&bad), None, &Pinned::default());
        assert_eq!(b.route_tables, vec![DEFAULT_ROUTE_TABLES]);
        assert_eq!(b.dataplane.nat_outgoing_address, None);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(table_in_ranges(&[(1, 250)], 250) && !table_in_ranges(&[(1, 250)], 251));
    }

    #[test]
    fn pod_mtu_is_the_smallest_matching_interface_less_the_encapsulation() {
        let links = [
            ("lo", 65536),
            ("eth0", 9000),
            ("eth1", 1500),
            ("cali123", 1440),
        ];
        let p = DEFAULT_MTU_IFACE_PATTERN;
        assert_eq!(
            pod_mtu(links, p, encap_overhead(true, false, false)),
            Some(1450)
        );
        assert_eq!(
            pod_mtu(links, p, encap_overhead(false, true, false)),
            Some(1480)
        );
        // IPv6 VXLAN (alone or beside IPv4's): Calico's 70 bytes.
        assert_eq!(
            pod_mtu(links, p, encap_overhead(true, false, true)),
            Some(1430)
        );
        assert_eq!(
            pod_mtu(links, p, encap_overhead(false, false, true)),
            Some(1430)
        );
        assert_eq!(pod_mtu(links, "^eth0$", 0), Some(9000));
        assert_eq!(pod_mtu(links, "^ens", 0), None);
    }

    #[test]
    fn wireguard_devices_count_in_the_pod_mtu_as_in_calico() {
        let on = |v: serde_json::Value| {
            let spec: FelixConfigurationSpec = serde_json::from_value(v).unwrap();
            merge(Some(&spec), None, &Pinned::default()).0
        };
        assert_eq!(wireguard_mtu_limits(&Settings::default()), (0, None));
        let s = on(serde_json::json!({"wireguardEnabled": true}));
        assert_eq!(wireguard_mtu_limits(&s), (60, None));
        let s = on(serde_json::json!({"wireguardEnabled": true, "wireguardEnabledV6": true}));
        assert_eq!(wireguard_mtu_limits(&s), (80, None));
        // A configured MTU is the device's candidate as it stands; a disabled device's counts
        // for nothing.
        let s = on(serde_json::json!({
            "wireguardEnabled": true,
            "wireguardEnabledV6": true,
            "wireguardMTUV6": 1300,
            "wireguardMTU": 1290
        }));
        assert_eq!(wireguard_mtu_limits(&s), (0, Some(1290)));
        let s = on(serde_json::json!({"wireguardEnabledV6": true, "wireguardMTU": 1290}));
        assert_eq!(wireguard_mtu_limits(&s), (80, None));
    }

    #[test]
    fn the_nth_route_table_skips_the_kernels_tables() {
        assert_eq!(nth_route_table(&[(1, 250)], 0), Some(1));
        assert_eq!(nth_route_table(&[(1, 250)], 1), Some(2));
        assert_eq!(nth_route_table(&[(300, 400), (252, 256)], 1), Some(256));
        assert_eq!(nth_route_table(&[(253, 255)], 0), None);
        assert_eq!(nth_route_table(&[(9, 9)], 1), None);
    }
}
