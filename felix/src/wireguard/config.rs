//! The WireGuard settings of each family, read from FelixConfiguration with Calico's
//! precedence: a field of `node.<name>` overrides the same field of `default`; what neither
//! sets takes Calico's default (except the device names, `wg.margay` and `wg-v6.margay`).
//!
//! IPv4 and IPv6 are two devices as in Calico's felix, each with its own switch
//! (`wireguardEnabled`, `wireguardEnabledV6`), port, device name, MTU and routing table; the
//! rule priority, the firewall mark and the keepalive are shared.

use std::collections::BTreeMap;
use std::time::Duration;

use margay_datastore::resources::FelixConfigurationSpec;

/// The device felix makes (Calico's is `wireguard.cali`). `wireguard.margay` would be 16
/// characters, one more than the kernel takes (IFNAMSIZ 16 with the terminating NUL): the
/// kernel refuses it with ERANGE.
pub const DEFAULT_INTERFACE: &str = "wg.margay";
/// The IPv6 device (Calico's is `wg-v6.cali`).
pub const DEFAULT_INTERFACE_V6: &str = "wg-v6.margay";
/// Calico's default listening port.
pub const DEFAULT_PORT: u16 = 51820;
/// Calico's default listening port of the IPv6 device.
pub const DEFAULT_PORT_V6: u16 = 51821;
/// Calico's default priority of the routing rule.
pub const DEFAULT_RULE_PRIORITY: u32 = 99;
/// The routing table the device's routes live in when `routeTableRange(s)` is not set (the
/// lowest index of Calico's default range 1-250); otherwise the lowest usable index in them.
pub const DEFAULT_TABLE: u32 = 1;
/// The IPv6 device's table: the next usable index after the IPv4 one (Calico's felix takes
/// both from its route table allocator, 1 and 2 by default).
pub const DEFAULT_TABLE_V6: u32 = 2;
/// The firewall mark the device puts on its own UDP packets (Calico's default mark bit).
pub const DEFAULT_FWMARK: u32 = 0x0010_0000;
/// Bytes WireGuard adds over IPv4 (IP 20 + UDP 8 + WireGuard 32): Calico's auto MTU is the
/// uplink's less this.
pub const OVERHEAD_V4: u32 = 60;
/// Bytes WireGuard adds over IPv6 (IP 40 + UDP 8 + WireGuard 32).
pub const OVERHEAD_V6: u32 = 80;

/// FelixConfiguration fields this module acts on.
pub const ACTED: &[&str] = &[
    "wireguardEnabled",
    "wireguardListeningPort",
    "wireguardRoutingRulePriority",
    "wireguardInterfaceName",
    "wireguardMTU",
    "wireguardKeepAlive",
    "wireguardEnabledV6",
    "wireguardListeningPortV6",
    "wireguardInterfaceNameV6",
    "wireguardMTUV6",
];

/// FelixConfiguration WireGuard fields accepted but not acted on, with why.
pub const NOT_ACTED: &[(&str, &str)] = &[
    (
        "wireguardHostEncryptionEnabled",
        "host-network traffic is not encrypted (Calico marks this experimental)",
    ),
    (
        "wireguardThreadingEnabled",
        "the kernel's default threading is kept",
    ),
];

/// What the WireGuard keeper programs for one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// IPv6 (`wg-v6.margay`, IPv6 peers, routes and rule) rather than IPv4.
    pub v6: bool,
    pub enabled: bool,
    pub interface: String,
    pub port: u16,
    pub rule_priority: u32,
    pub table: u32,
    pub fwmark: u32,
    /// Device MTU; `None` = the uplink's MTU less [`Config::overhead`].
    pub mtu: Option<u32>,
    /// `PersistentKeepalive` for every peer; `None` = off.
    pub keepalive: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            v6: false,
            enabled: false,
            interface: DEFAULT_INTERFACE.to_string(),
            port: DEFAULT_PORT,
            rule_priority: DEFAULT_RULE_PRIORITY,
            table: DEFAULT_TABLE,
            fwmark: DEFAULT_FWMARK,
            mtu: None,
            keepalive: None,
        }
    }
}

/// A field that does not hold what its name promises.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("FelixConfiguration {config}: spec.{field}: {problem}")]
pub struct ConfigError {
    pub config: String,
    pub field: &'static str,
    pub problem: String,
}

/// The merged view of the two FelixConfigurations: the node's field wins.
fn field<'a>(
    global: Option<&'a FelixConfigurationSpec>,
    node: Option<&'a FelixConfigurationSpec>,
    name: &'static str,
) -> Option<(&'a serde_json::Value, &'static str)> {
    node.and_then(|n| n.other.get(name).map(|v| (v, "node")))
        .or_else(|| global.and_then(|g| g.other.get(name).map(|v| (v, "default"))))
}

/// The FelixConfiguration field names of one family's own settings.
struct Names {
    enabled: &'static str,
    port: &'static str,
    interface: &'static str,
    mtu: &'static str,
}

const V4: Names = Names {
    enabled: "wireguardEnabled",
    port: "wireguardListeningPort",
    interface: "wireguardInterfaceName",
    mtu: "wireguardMTU",
};

const V6: Names = Names {
    enabled: "wireguardEnabledV6",
    port: "wireguardListeningPortV6",
    interface: "wireguardInterfaceNameV6",
    mtu: "wireguardMTUV6",
};

impl Config {
    /// The IPv6 defaults: `wg-v6.margay`, port 51821, table 2.
    pub fn default_v6() -> Config {
        Config {
            v6: true,
            interface: DEFAULT_INTERFACE_V6.to_string(),
            port: DEFAULT_PORT_V6,
            table: DEFAULT_TABLE_V6,
            ..Config::default()
        }
    }

    /// Bytes the device adds to a packet: [`OVERHEAD_V4`] or [`OVERHEAD_V6`].
    pub fn overhead(&self) -> u32 {
        if self.v6 { OVERHEAD_V6 } else { OVERHEAD_V4 }
    }

    /// The IPv4 settings from the global `default` and this node's `node.<name>`
    /// configuration.
    pub fn resolve(
        global: Option<&FelixConfigurationSpec>,
        node: Option<&FelixConfigurationSpec>,
    ) -> Result<Config, ConfigError> {
        Self::resolve_family(global, node, false)
    }

    /// The IPv6 settings (`wireguardEnabledV6`, `...PortV6`, `...InterfaceNameV6`,
    /// `...MTUV6`, and the shared priority, keepalive and route tables).
    pub fn resolve_v6(
        global: Option<&FelixConfigurationSpec>,
        node: Option<&FelixConfigurationSpec>,
    ) -> Result<Config, ConfigError> {
        Self::resolve_family(global, node, true)
    }

    fn resolve_family(
        global: Option<&FelixConfigurationSpec>,
        node: Option<&FelixConfigurationSpec>,
        v6: bool,
    ) -> Result<Config, ConfigError> {
        let (mut c, names) = if v6 {
            (Config::default_v6(), V6)
        } else {
            (Config::default(), V4)
        };
        let bad = |which: &str, field: &'static str, problem: &str| ConfigError {
            config: which.to_string(),
            field,
            problem: problem.to_string(),
        };
        if let Some((v, w)) = field(global, node, names.enabled) {
            c.enabled = v
                .as_bool()
                .ok_or_else(|| bad(w, names.enabled, "must be true or false"))?;
        }
        if let Some((v, w)) = field(global, node, names.port) {
            c.port = v
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p != 0)
                .ok_or_else(|| bad(w, names.port, "must be 1 to 65535"))?;
        }
        if let Some((v, w)) = field(global, node, "wireguardRoutingRulePriority") {
            c.rule_priority = v
                .as_u64()
                .and_then(|p| u32::try_from(p).ok())
                .filter(|p| (1..=32765).contains(p))
                .ok_or_else(|| bad(w, "wireguardRoutingRulePriority", "must be 1 to 32765"))?;
        }
        if let Some((v, w)) = field(global, node, names.interface) {
            let name = v
                .as_str()
                .filter(|s| !s.is_empty() && s.len() <= 15 && !s.contains(['/', ' ']))
                .ok_or_else(|| {
                    bad(
                        w,
                        names.interface,
                        "must be an interface name (1 to 15 characters, no '/' or space)",
                    )
                })?;
            c.interface = name.to_string();
        }
        if let Some((v, w)) = field(global, node, names.mtu) {
            let mtu = v
                .as_u64()
                .and_then(|m| u32::try_from(m).ok())
                .filter(|m| *m == 0 || (1280..=65535).contains(m))
                .ok_or_else(|| bad(w, names.mtu, "must be 0 (auto) or 1280 to 65535"))?;
            c.mtu = (mtu != 0).then_some(mtu);
        }
        if let Some((v, w)) = field(global, node, "wireguardKeepAlive") {
            let d = v.as_str().and_then(parse_duration).ok_or_else(|| {
                bad(
                    w,
                    "wireguardKeepAlive",
                    "must be a duration such as 25s or 0",
                )
            })?;
            c.keepalive = (!d.is_zero()).then_some(d);
        }
        // routeTableRanges (else routeTableRange): the IPv4 device's table is the lowest usable
        // index in them and the IPv6 device's the next, as Calico's felix allocates them;
        // felix uses no table outside them.
        let ranges = [(node, "node"), (global, "default")]
            .into_iter()
            .find_map(|(spec, w)| {
                let r = spec?.route_tables();
                (!r.is_empty()).then_some((r, w))
            });
        if let Some((ranges, w)) = ranges {
            let ranges: Vec<(u32, u32)> = ranges.iter().map(|r| (r.min, r.max)).collect();
            let skip = usize::from(v6);
            c.table = crate::settings::nth_route_table(&ranges, skip).ok_or_else(|| {
                bad(
                    w,
                    "routeTableRanges",
                    if v6 {
                        "holds fewer than two usable tables (1 to 252, or above 255): IPv6 WireGuard needs the second"
                    } else {
                        "holds no usable table (1 to 252, or above 255)"
                    },
                )
            })?;
        }
        Ok(c)
    }

    /// The not-acted WireGuard fields set in either configuration, for the warning felix logs
    /// once per field.
    pub fn not_acted_set(
        global: Option<&FelixConfigurationSpec>,
        node: Option<&FelixConfigurationSpec>,
    ) -> BTreeMap<&'static str, &'static str> {
        NOT_ACTED
            .iter()
            .filter(|(f, _)| field(global, node, f).is_some())
            .map(|(f, why)| (*f, *why))
            .collect()
    }
}

/// A Go-style duration as Calico writes it ("25s", "1m30s", "500ms", "0").
fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let d = match &rest[..unit] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n * 60),
            "h" => Duration::from_secs(n * 3600),
            _ => return None,
        };
        total += d;
        rest = &rest[unit..];
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> FelixConfigurationSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn defaults_are_calicos_with_margays_device() {
        let c = Config::resolve(None, None).unwrap();
        assert!(!c.enabled);
        assert_eq!(c.interface, "wg.margay");
        assert_eq!((c.port, c.rule_priority, c.table), (51820, 99, 1));
        assert_eq!(c.mtu, None);
    }

    #[test]
    fn the_table_is_the_lowest_usable_index_of_the_route_table_ranges() {
        let g = spec(json!({"routeTableRange": {"min": 10, "max": 20}}));
        assert_eq!(Config::resolve(Some(&g), None).unwrap().table, 10);
        // routeTableRanges wins over the deprecated field; the node's over the global one;
        // the kernel's own tables (253-255) are never taken.
        let n =
            spec(json!({"routeTableRanges": [{"min": 300, "max": 400}, {"min": 253, "max": 260}]}));
        assert_eq!(Config::resolve(Some(&g), Some(&n)).unwrap().table, 256);
        let bad = spec(json!({"routeTableRanges": [{"min": 253, "max": 255}]}));
        let e = Config::resolve(Some(&bad), None).unwrap_err();
        assert_eq!(e.field, "routeTableRanges");
    }

    #[test]
    fn the_nodes_field_wins_field_by_field() {
        let g = spec(json!({"wireguardEnabled": true, "wireguardListeningPort": 5000}));
        let n = spec(json!({"wireguardListeningPort": 6000, "wireguardMTU": 1400}));
        let c = Config::resolve(Some(&g), Some(&n)).unwrap();
        assert!(c.enabled);
        assert_eq!(c.port, 6000);
        assert_eq!(c.mtu, Some(1400));
        let n = spec(json!({"wireguardEnabled": false}));
        assert!(!Config::resolve(Some(&g), Some(&n)).unwrap().enabled);
    }

    #[test]
    fn a_bad_field_is_named_with_its_configuration() {
        let g = spec(json!({"wireguardListeningPort": 70000}));
        let e = Config::resolve(Some(&g), None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "FelixConfiguration default: spec.wireguardListeningPort: must be 1 to 65535"
        );
        let n = spec(json!({"wireguardKeepAlive": "soon"}));
        let e = Config::resolve(None, Some(&n)).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("FelixConfiguration node: spec.wireguardKeepAlive")
        );
    }

    #[test]
    fn keepalive_durations_as_calico_writes_them() {
        assert_eq!(parse_duration("25s"), Some(Duration::from_secs(25)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("5x"), None);
    }

    #[test]
    fn not_acted_fields_are_listed_when_set() {
        let g = spec(json!({
            "wireguardEnabledV6": true,
            "wireguardEnabled": true,
            "wireguardHostEncryptionEnabled": true
        }));
        let set = Config::not_acted_set(Some(&g), None);
        assert_eq!(
            set.keys().copied().collect::<Vec<_>>(),
            ["wireguardHostEncryptionEnabled"]
        );
    }

    #[test]
    fn the_ipv6_device_has_calicos_v6_defaults_with_margays_name() {
        let c = Config::resolve_v6(None, None).unwrap();
        assert!(c.v6 && !c.enabled);
        assert_eq!(c.interface, "wg-v6.margay");
        assert_eq!((c.port, c.rule_priority, c.table), (51821, 99, 2));
        assert_eq!((c.fwmark, c.overhead()), (DEFAULT_FWMARK, 80));
        assert_eq!(Config::resolve(None, None).unwrap().overhead(), 60);
    }

    #[test]
    fn the_v6_fields_set_the_ipv6_device_only() {
        let g = spec(json!({
            "wireguardEnabledV6": true,
            "wireguardListeningPortV6": 5001,
            "wireguardInterfaceNameV6": "wg6",
            "wireguardMTUV6": 1380,
            "wireguardRoutingRulePriority": 120,
            "wireguardKeepAlive": "25s"
        }));
        let n = spec(json!({"wireguardMTUV6": 1400}));
        let v6 = Config::resolve_v6(Some(&g), Some(&n)).unwrap();
        assert!(v6.enabled);
        assert_eq!((v6.port, v6.interface.as_str()), (5001, "wg6"));
        assert_eq!(v6.mtu, Some(1400), "the node's field wins");
        // Shared with IPv4: the rule priority and the keepalive.
        assert_eq!(v6.rule_priority, 120);
        assert_eq!(v6.keepalive, Some(Duration::from_secs(25)));
        let v4 = Config::resolve(Some(&g), Some(&n)).unwrap();
        assert!(!v4.enabled);
        assert_eq!(
            (v4.port, v4.interface.as_str(), v4.mtu),
            (51820, "wg.margay", None)
        );
        assert_eq!(v4.rule_priority, 120);
    }

    #[test]
    fn the_ipv6_table_is_the_second_usable_index() {
        let g = spec(json!({"routeTableRanges": [{"min": 252, "max": 256}]}));
        assert_eq!(Config::resolve(Some(&g), None).unwrap().table, 252);
        assert_eq!(Config::resolve_v6(Some(&g), None).unwrap().table, 256);
        let one = spec(json!({"routeTableRange": {"min": 7, "max": 7}}));
        assert_eq!(Config::resolve(Some(&one), None).unwrap().table, 7);
        let e = Config::resolve_v6(Some(&one), None).unwrap_err();
        assert_eq!(e.field, "routeTableRanges");
        assert!(e.problem.contains("second"), "{e}");
    }

    #[test]
    fn a_bad_v6_field_is_named() {
        let g = spec(json!({"wireguardListeningPortV6": 0}));
        let e = Config::resolve_v6(Some(&g), None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "FelixConfiguration default: spec.wireguardListeningPortV6: must be 1 to 65535"
        );
        // The IPv4 device does not read it.
        assert!(Config::resolve(Some(&g), None).is_ok());
    }
}
