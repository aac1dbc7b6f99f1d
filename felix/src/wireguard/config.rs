//! The WireGuard settings, read from FelixConfiguration with Calico's precedence: a field of
//! `node.<name>` overrides the same field of `default`; what neither sets takes Calico's
//! default (except the device name, `wg.margay`).

use std::collections::BTreeMap;
use std::time::Duration;

use margay_datastore::resources::FelixConfigurationSpec;

/// The device felix makes (Calico's is `wireguard.cali`). `wireguard.margay` would be 16
/// characters, one more than the kernel takes (IFNAMSIZ 16 with the terminating NUL): the
/// kernel refuses it with ERANGE.
pub const DEFAULT_INTERFACE: &str = "wg.margay";
/// Calico's default listening port.
pub const DEFAULT_PORT: u16 = 51820;
/// Calico's default priority of the routing rule.
pub const DEFAULT_RULE_PRIORITY: u32 = 99;
/// The routing table the device's routes live in when `routeTableRange(s)` is not set (the
/// lowest index of Calico's default range 1-250); otherwise the lowest usable index in them.
pub const DEFAULT_TABLE: u32 = 1;
/// The firewall mark the device puts on its own UDP packets (Calico's default mark bit).
pub const DEFAULT_FWMARK: u32 = 0x0010_0000;
/// Bytes WireGuard adds over IPv4 (IP 20 + UDP 8 + WireGuard 32): Calico's auto MTU is the
/// uplink's less this.
pub const OVERHEAD_V4: u32 = 60;

/// FelixConfiguration fields this module acts on.
pub const ACTED: &[&str] = &[
    "wireguardEnabled",
    "wireguardListeningPort",
    "wireguardRoutingRulePriority",
    "wireguardInterfaceName",
    "wireguardMTU",
    "wireguardKeepAlive",
];

/// FelixConfiguration WireGuard fields accepted but not acted on, with why.
pub const NOT_ACTED: &[(&str, &str)] = &[
    ("wireguardEnabledV6", "IPv6 WireGuard is not built yet"),
    (
        "wireguardListeningPortV6",
        "IPv6 WireGuard is not built yet",
    ),
    (
        "wireguardInterfaceNameV6",
        "IPv6 WireGuard is not built yet",
    ),
    ("wireguardMTUV6", "IPv6 WireGuard is not built yet"),
    (
        "wireguardHostEncryptionEnabled",
        "host-network traffic is not encrypted (Calico marks this experimental)",
    ),
    (
        "wireguardThreadingEnabled",
        "the kernel's default threading is kept",
    ),
];

/// What the WireGuard keeper programs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub enabled: bool,
    pub interface: String,
    pub port: u16,
    pub rule_priority: u32,
    pub table: u32,
    pub fwmark: u32,
    /// Device MTU; `None` = the uplink's MTU less [`OVERHEAD_V4`].
    pub mtu: Option<u32>,
    /// `PersistentKeepalive` for every peer; `None` = off.
    pub keepalive: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
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

impl Config {
    /// The settings from the global `default` and this node's `node.<name>` configuration.
    pub fn resolve(
        global: Option<&FelixConfigurationSpec>,
        node: Option<&FelixConfigurationSpec>,
    ) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        let bad = |which: &str, field: &'static str, problem: &str| ConfigError {
            config: which.to_string(),
            field,
            problem: problem.to_string(),
        };
        if let Some((v, w)) = field(global, node, "wireguardEnabled") {
            c.enabled = v
                .as_bool()
                .ok_or_else(|| bad(w, "wireguardEnabled", "must be true or false"))?;
        }
        if let Some((v, w)) = field(global, node, "wireguardListeningPort") {
            c.port = v
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p != 0)
                .ok_or_else(|| bad(w, "wireguardListeningPort", "must be 1 to 65535"))?;
        }
        if let Some((v, w)) = field(global, node, "wireguardRoutingRulePriority") {
            c.rule_priority = v
                .as_u64()
                .and_then(|p| u32::try_from(p).ok())
                .filter(|p| (1..=32765).contains(p))
                .ok_or_else(|| bad(w, "wireguardRoutingRulePriority", "must be 1 to 32765"))?;
        }
        if let Some((v, w)) = field(global, node, "wireguardInterfaceName") {
            let name = v
                .as_str()
                .filter(|s| !s.is_empty() && s.len() <= 15 && !s.contains(['/', ' ']))
                .ok_or_else(|| {
                    bad(
                        w,
                        "wireguardInterfaceName",
                        "must be an interface name (1 to 15 characters, no '/' or space)",
                    )
                })?;
            c.interface = name.to_string();
        }
        if let Some((v, w)) = field(global, node, "wireguardMTU") {
            let mtu = v
                .as_u64()
                .and_then(|m| u32::try_from(m).ok())
                .filter(|m| *m == 0 || (1280..=65535).contains(m))
                .ok_or_else(|| bad(w, "wireguardMTU", "must be 0 (auto) or 1280 to 65535"))?;
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
        // routeTableRanges (else routeTableRange): the device's table is the lowest usable
        // index in them, as Calico's felix allocates it; felix uses no table outside them.
        let ranges = [(node, "node"), (global, "default")]
            .into_iter()
            .find_map(|(spec, w)| {
                let r = spec?.route_tables();
                (!r.is_empty()).then_some((r, w))
            });
        if let Some((ranges, w)) = ranges {
            let ranges: Vec<(u32, u32)> = ranges.iter().map(|r| (r.min, r.max)).collect();
            c.table = crate::settings::first_route_table(&ranges).ok_or_else(|| {
                bad(
                    w,
                    "routeTableRanges",
                    "holds no usable table (1 to 252, or above 255)",
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
        let g = spec(json!({"wireguardEnabledV6": true, "wireguardEnabled": true}));
        let set = Config::not_acted_set(Some(&g), None);
        assert_eq!(
            set.keys().copied().collect::<Vec<_>>(),
            ["wireguardEnabledV6"]
        );
    }
}
