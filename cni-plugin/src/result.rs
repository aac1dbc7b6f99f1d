//! The CNI result: one model, rendered in the shape of each spec version (0.3.x/0.4.0 carry
//! `ips[].version`; 1.1.0 adds interface MTU), and read back from `prevResult` or an IPAM plugin.

use crate::error::{CniError, code};
use crate::version::SpecVersion;
use ipnet::IpNet;
use serde_json::{Map, Value, json};
use std::net::IpAddr;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: String,
    /// Netns path; empty for a host-side interface.
    pub sandbox: String,
    pub mtu: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// Index into `interfaces`.
    pub interface: Option<usize>,
    pub address: IpNet,
    pub gateway: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dns {
    pub nameservers: Vec<String>,
    pub domain: String,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_empty()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

impl CniResult {
    /// The result JSON in `version`'s shape.
    pub fn render(&self, version: SpecVersion) -> Value {
        let mut out = Map::new();
        out.insert("cniVersion".into(), json!(version.as_str()));
        if !self.interfaces.is_empty() {
            let ifs: Vec<Value> = self
                .interfaces
                .iter()
                .map(|i| {
                    let mut m = Map::new();
                    m.insert("name".into(), json!(i.name));
                    if !i.mac.is_empty() {
                        m.insert("mac".into(), json!(i.mac));
                    }
                    if let Some(mtu) = i.mtu.filter(|_| version.interfaces_carry_mtu()) {
                        m.insert("mtu".into(), json!(mtu));
                    }
                    if !i.sandbox.is_empty() {
                        m.insert("sandbox".into(), json!(i.sandbox));
                    }
                    Value::Object(m)
                })
                .collect();
            out.insert("interfaces".into(), Value::Array(ifs));
        }
        // 0.3.x and 0.4.0 require `ips` (possibly empty); 1.0.0 makes it optional.
        if !self.ips.is_empty() || version.ips_carry_version() {
            let ips: Vec<Value> = self
                .ips
                .iter()
                .map(|ip| {
                    let mut m = Map::new();
                    if version.ips_carry_version() {
                        let v = if ip.address.addr().is_ipv4() {
                            "4"
                        } else {
                            "6"
                        };
                        m.insert("version".into(), json!(v));
                    }
                    if let Some(i) = ip.interface {
                        m.insert("interface".into(), json!(i));
                    }
                    m.insert("address".into(), json!(ip.address.to_string()));
                    if let Some(gw) = ip.gateway {
                        m.insert("gateway".into(), json!(gw.to_string()));
                    }
                    Value::Object(m)
                })
                .collect();
            out.insert("ips".into(), Value::Array(ips));
        }
        if !self.routes.is_empty() {
            let routes: Vec<Value> = self
                .routes
                .iter()
                .map(|r| match r.gw {
                    Some(gw) => json!({"dst": r.dst.to_string(), "gw": gw.to_string()}),
                    None => json!({"dst": r.dst.to_string()}),
                })
                .collect();
            out.insert("routes".into(), Value::Array(routes));
        }
        let mut dns = Map::new();
        if !self.dns.nameservers.is_empty() {
            dns.insert("nameservers".into(), json!(self.dns.nameservers));
        }
        if !self.dns.domain.is_empty() {
            dns.insert("domain".into(), json!(self.dns.domain));
        }
        if !self.dns.search.is_empty() {
            dns.insert("search".into(), json!(self.dns.search));
        }
        if !self.dns.options.is_empty() {
            dns.insert("options".into(), json!(self.dns.options));
        }
        // 0.3.x and 0.4.0 results always had a `dns` object; keep it there for old consumers.
        if !dns.is_empty() || version.ips_carry_version() {
            out.insert("dns".into(), Value::Object(dns));
        }
        Value::Object(out)
    }

    /// Reads a result of any supported version (a `prevResult`, an IPAM plugin's output).
    pub fn parse(v: &Value) -> Result<Self, CniError> {
        let bad = |what: String| {
            CniError::new(
                code::DECODING_FAILURE,
                format!("cannot decode a CNI result: {what}"),
            )
        };
        let obj = v
            .as_object()
            .ok_or_else(|| bad("not a JSON object".into()))?;
        let str_field = |m: &Map<String, Value>, k: &str| -> Result<String, CniError> {
            match m.get(k) {
                None | Some(Value::Null) => Ok(String::new()),
                Some(Value::String(s)) => Ok(s.clone()),
                Some(other) => Err(bad(format!("{k} is {other}, not a string"))),
            }
        };
        let list = |k: &str| -> Result<Vec<Map<String, Value>>, CniError> {
            match obj.get(k) {
                None | Some(Value::Null) => Ok(vec![]),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|e| {
                        e.as_object()
                            .cloned()
                            .ok_or_else(|| bad(format!("{k} has a non-object entry")))
                    })
                    .collect(),
                Some(_) => Err(bad(format!("{k} is not a list"))),
            }
        };
        let mut r = CniResult::default();
        for m in list("interfaces")? {
            r.interfaces.push(Interface {
                name: str_field(&m, "name")?,
                mac: str_field(&m, "mac")?,
                sandbox: str_field(&m, "sandbox")?,
                mtu: m
                    .get("mtu")
                    .and_then(Value::as_u64)
                    .and_then(|n| u32::try_from(n).ok()),
            });
        }
        for m in list("ips")? {
            let address = str_field(&m, "address")?;
            let address: IpNet = address
                .parse()
                .map_err(|_| bad(format!("address {address:?} is not ADDR/LEN")))?;
            let gateway = parse_opt_ip(&str_field(&m, "gateway")?).map_err(bad)?;
            let interface = match m.get("interface") {
                None | Some(Value::Null) => None,
                Some(v) => Some(
                    v.as_u64()
                        .and_then(|n| usize::try_from(n).ok())
                        .ok_or_else(|| bad(format!("interface index {v} is not a number")))?,
                ),
            };
            r.ips.push(IpConfig {
                interface,
                address,
                gateway,
            });
        }
        for m in list("routes")? {
            let dst = str_field(&m, "dst")?;
            let dst: IpNet = dst
                .parse()
                .map_err(|_| bad(format!("route dst {dst:?} is not a CIDR")))?;
            let gw = parse_opt_ip(&str_field(&m, "gw")?).map_err(bad)?;
            r.routes.push(Route { dst, gw });
        }
        if let Some(Value::Object(d)) = obj.get("dns") {
            let strings = |k: &str| -> Vec<String> {
                d.get(k)
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            r.dns = Dns {
                nameservers: strings("nameservers"),
                domain: d
                    .get("domain")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                search: strings("search"),
                options: strings("options"),
            };
        }
        Ok(r)
    }

    /// Chaining: this plugin's result appended to the previous plugin's, interface indices
    /// shifted past the previous interfaces; the previous DNS wins when it has any.
    pub fn appended_to(self, prev: CniResult) -> CniResult {
        let shift = prev.interfaces.len();
        let mut out = prev;
        out.interfaces.extend(self.interfaces);
        out.ips.extend(self.ips.into_iter().map(|mut ip| {
            ip.interface = ip.interface.map(|i| i + shift);
            ip
        }));
        out.routes.extend(self.routes);
        if out.dns.is_empty() {
            out.dns = self.dns;
        }
        out
    }
}

/// Reads a netconf `dns` object.
pub fn dns_from_netconf(v: &Value) -> Dns {
    CniResult::parse(&json!({ "dns": v }))
        .map(|r| r.dns)
        .unwrap_or_default()
}

fn parse_opt_ip(s: &str) -> Result<Option<IpAddr>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|_| format!("{s:?} is not an IP address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn margay_result() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: "cali1234567890a".into(),
                    mac: "ee:ee:ee:ee:ee:ee".into(),
                    sandbox: String::new(),
                    mtu: Some(1450),
                },
                Interface {
                    name: "eth0".into(),
                    mac: "02:42:0a:f4:00:05".into(),
                    sandbox: "/var/run/netns/p1".into(),
                    mtu: Some(1450),
                },
            ],
            ips: vec![
                IpConfig {
                    interface: Some(1),
                    address: "10.244.0.5/32".parse().unwrap(),
                    gateway: Some("169.254.1.1".parse().unwrap()),
                },
                IpConfig {
                    interface: Some(1),
                    address: "fd00::5/128".parse().unwrap(),
                    gateway: None,
                },
            ],
            routes: vec![Route {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: Some("169.254.1.1".parse().unwrap()),
            }],
            dns: Dns {
                nameservers: vec!["10.96.0.10".into()],
                search: vec!["svc.cluster.local".into()],
                ..Dns::default()
            },
        }
    }

    #[test]
    fn renders_0_4_0_with_ip_versions_and_interface_indices() {
        let v = margay_result().render(SpecVersion::V0_4_0);
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(
            v["ips"][0],
            json!({"version": "4", "interface": 1, "address": "10.244.0.5/32", "gateway": "169.254.1.1"})
        );
        assert_eq!(v["ips"][1]["version"], "6");
        assert!(v["interfaces"][0].get("mtu").is_none());
        assert!(v["interfaces"][0].get("sandbox").is_none());
        assert_eq!(v["interfaces"][1]["sandbox"], "/var/run/netns/p1");
        assert_eq!(
            v["routes"][0],
            json!({"dst": "0.0.0.0/0", "gw": "169.254.1.1"})
        );
        assert_eq!(v["dns"]["nameservers"], json!(["10.96.0.10"]));
    }

    #[test]
    fn renders_1_0_0_without_ip_version() {
        let v = margay_result().render(SpecVersion::V1_0_0);
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(
            v["ips"][0],
            json!({"interface": 1, "address": "10.244.0.5/32", "gateway": "169.254.1.1"})
        );
        assert!(v["interfaces"][1].get("mtu").is_none());
    }

    #[test]
    fn renders_interface_mtu_only_in_1_1_0() {
        let v = margay_result().render(SpecVersion::V1_1_0);
        assert_eq!(v["interfaces"][1]["mtu"], 1450);
        assert!(v["ips"][0].get("version").is_none());
    }

    #[test]
    fn empty_result_keeps_ips_and_dns_for_old_versions_only() {
        let v = CniResult::default().render(SpecVersion::V0_3_1);
        assert_eq!(v, json!({"cniVersion": "0.3.1", "ips": [], "dns": {}}));
        let v = CniResult::default().render(SpecVersion::V1_0_0);
        assert_eq!(v, json!({"cniVersion": "1.0.0"}));
    }

    #[test]
    fn parses_what_it_renders_in_every_version() {
        for version in crate::version::SUPPORTED {
            let mut expected = margay_result();
            if !version.interfaces_carry_mtu() {
                expected.interfaces.iter_mut().for_each(|i| i.mtu = None);
            }
            assert_eq!(
                CniResult::parse(&margay_result().render(version)).unwrap(),
                expected,
                "{version:?}"
            );
        }
    }

    #[test]
    fn rejects_results_with_bad_addresses() {
        for bad in [
            json!({"ips": [{"address": "10.0.0.1"}]}),
            json!({"ips": [{"address": "10.0.0.1/24", "gateway": "nope"}]}),
            json!({"routes": [{"dst": "default"}]}),
            json!({"interfaces": "eth0"}),
            json!("x"),
        ] {
            assert_eq!(
                CniResult::parse(&bad).unwrap_err().code,
                code::DECODING_FAILURE,
                "{bad}"
            );
        }
    }

    #[test]
    fn chained_result_shifts_interface_indices_and_keeps_previous() {
        let prev = CniResult::parse(&json!({
            "interfaces": [{"name": "lo", "sandbox": "/n"}],
            "ips": [{"version": "4", "interface": 0, "address": "127.0.0.1/8"}],
        }))
        .unwrap();
        let merged = margay_result().appended_to(prev);
        assert_eq!(merged.interfaces.len(), 3);
        assert_eq!(merged.interfaces[0].name, "lo");
        assert_eq!(merged.ips[0].interface, Some(0));
        assert_eq!(merged.ips[1].interface, Some(2));
        assert_eq!(merged.dns.nameservers, ["10.96.0.10"]);
    }
}
