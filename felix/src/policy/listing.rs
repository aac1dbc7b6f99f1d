//! Reads `nft -j list table inet margay-policy` into a [`Table`], in the terms felix compares:
//! set elements as canonical text, map entries as verdict text, and each chain's rules by the id
//! in their comment (a rule without felix's comment has an empty id, so it always differs).

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::Value;

use super::render::{ChainSpec, Hook, MapSpec, RuleText, SetSpec, Table};

/// The listing could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read nft's listing of the policy table: {0}")]
pub struct ListingError(pub String);

fn str_of(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

/// Protocol names nft prints for `inet_proto` values felix writes as numbers.
fn proto_number(v: &Value) -> Option<u8> {
    if let Some(n) = v.as_u64() {
        return u8::try_from(n).ok();
    }
    match v.as_str()? {
        "tcp" => Some(6),
        "udp" => Some(17),
        "sctp" => Some(132),
        "icmp" => Some(1),
        "ipv6-icmp" | "icmpv6" => Some(58),
        other => other.parse().ok(),
    }
}

/// An address-set element as canonical text (`10.0.0.5/32`), or `None` for a range.
fn addr_element(e: &Value) -> Option<String> {
    if let Some(s) = e.as_str() {
        let addr: IpAddr = s.parse().ok()?;
        return Some(IpNet::from(addr).to_string());
    }
    let p = e.get("prefix")?;
    let addr: IpAddr = p["addr"].as_str()?.parse().ok()?;
    Some(
        IpNet::new(addr, u8::try_from(p["len"].as_u64()?).ok()?)
            .ok()?
            .to_string(),
    )
}

/// A named-port element (`{"concat": [addr, proto, port]}`) as `addr . proto . port`.
fn port_element(e: &Value) -> Option<String> {
    let parts = e.get("concat")?.as_array()?;
    let [addr, proto, port] = parts.as_slice() else {
        return None;
    };
    let addr: IpAddr = addr.as_str()?.parse().ok()?;
    Some(format!(
        "{addr} . {} . {}",
        proto_number(proto)?,
        port.as_u64()?
    ))
}

/// A map's verdict as felix writes it (`accept`, `drop`, `jump X`, `goto X`).
fn verdict(v: &Value) -> Option<String> {
    let obj = v.as_object()?;
    let (k, inner) = obj.iter().next()?;
    match k.as_str() {
        "accept" | "drop" | "return" | "continue" => Some(k.clone()),
        "jump" | "goto" => Some(format!("{k} {}", inner["target"].as_str()?)),
        _ => None,
    }
}

/// Parses the JSON listing of the policy table.
pub fn parse(text: &str) -> Result<Table, ListingError> {
    let bad = |what: &str| ListingError(what.to_string());
    let doc: Value = serde_json::from_str(text).map_err(|e| bad(&e.to_string()))?;
    let items = doc["nftables"]
        .as_array()
        .ok_or_else(|| bad("no \"nftables\" array"))?;
    let mut t = Table::default();
    for item in items {
        if let Some(m) = item.get("map") {
            let name = str_of(&m["name"]).ok_or_else(|| bad("a map without a name"))?;
            let mut spec = MapSpec::default();
            for e in m["elem"].as_array().map(Vec::as_slice).unwrap_or_default() {
                let pair = e.as_array().map(Vec::as_slice).unwrap_or_default();
                if let [k, v] = pair
                    && let (Some(k), Some(v)) = (k.as_str(), verdict(v))
                {
                    spec.entries.insert(k.to_string(), v);
                } else {
                    // An entry felix cannot read: mark it so the map differs from any wanted one.
                    spec.entries.insert(format!("?{e}"), String::new());
                }
            }
            t.maps.insert(name, spec);
        } else if let Some(s) = item.get("set") {
            let name = str_of(&s["name"]).ok_or_else(|| bad("a set without a name"))?;
            let kind = match &s["type"] {
                Value::String(k) => k.clone(),
                Value::Array(ks) => ks
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" . "),
                _ => String::new(),
            };
            let flags: BTreeSet<String> = match &s["flags"] {
                Value::String(f) => BTreeSet::from([f.clone()]),
                Value::Array(fs) => fs.iter().filter_map(str_of).collect(),
                _ => BTreeSet::new(),
            };
            let mut spec = SetSpec {
                interval: flags.contains("interval"),
                ..SetSpec::default()
            };
            let concat = kind.contains(" . ");
            for e in s["elem"].as_array().map(Vec::as_slice).unwrap_or_default() {
                let text = if concat {
                    port_element(e)
                } else {
                    addr_element(e)
                };
                match text {
                    Some(x) => {
                        spec.elements.insert(x);
                    }
                    None => spec.odd_elements += 1,
                }
            }
            spec.kind = kind;
            t.sets.insert(name, spec);
        } else if let Some(c) = item.get("chain") {
            let name = str_of(&c["name"]).ok_or_else(|| bad("a chain without a name"))?;
            let spec = t.chains.entry(name).or_insert_with(ChainSpec::default);
            if let (Some(hook), Some(prio)) = (str_of(&c["hook"]), c["prio"].as_i64()) {
                let plain = str_of(&c["type"]).as_deref() == Some("filter")
                    && str_of(&c["policy"]).as_deref() == Some("accept");
                spec.hook = Some(Hook {
                    // A base chain of another type or policy never equals one felix wants.
                    hook: if plain { hook } else { format!("?{hook}") },
                    priority: prio,
                });
            }
        } else if let Some(r) = item.get("rule") {
            let chain = str_of(&r["chain"]).ok_or_else(|| bad("a rule without a chain"))?;
            t.chains.entry(chain).or_default().rules.push(RuleText {
                id: str_of(&r["comment"]).unwrap_or_default(),
                text: String::new(),
            });
        }
    }
    Ok(t)
}
