//! FelixConfiguration, applied: the global `default` and this node's `node.<name>` resources
//! merged with Calico's precedence (a field set per node wins over the global one, which wins
//! over felix's default; a flag given on the command line or in the environment wins over both,
//! as Calico's environment variables do), into the [`Settings`] felix runs with. Pure: the
//! datastore feed brings the resources, cluster mode hands the result to the dataplane (the
//! [`DataplaneSettings`] ride in the model), the resync timer and the pod MTU.
//!
//! A field felix does not apply is warned about once by the field registry; a value that does
//! not parse (a bad regex) is a problem, and the default stays.

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
}

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
    /// `interfacePrefix` (comma separated): the first names new pod veths.
    pub interface_prefixes: Vec<String>,
    /// `healthHost` / `healthPort`: where /liveness, /readiness and /metrics are served
    /// (`None`: felix's flags).
    pub health: Option<HttpAddr>,
    /// `prometheusMetricsEnabled` with `prometheusMetricsHost` / `prometheusMetricsPort`
    /// (Calico's 9091): a second server with /metrics only.
    pub prometheus: Option<HttpAddr>,
}

/// Where an HTTP server listens: a host name or address and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAddr {
    pub host: String,
    pub port: u16,
}

/// Calico's `prometheusMetricsPort` default.
pub const DEFAULT_PROMETHEUS_PORT: u16 = 9091;

impl Default for Settings {
    fn default() -> Self {
        Settings {
            dataplane: DataplaneSettings::default(),
            route_refresh: DEFAULT_ROUTE_REFRESH,
            mtu_iface_pattern: DEFAULT_MTU_IFACE_PATTERN.to_string(),
            interface_prefixes: vec!["cali".to_string()],
            health: None,
            prometheus: None,
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
        s.interface_prefixes = p.split(',').map(|x| x.trim().to_string()).collect();
    }
    (s, problems)
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
        assert_eq!(got.interface_prefixes, vec!["tap", "cali"]);
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
}
