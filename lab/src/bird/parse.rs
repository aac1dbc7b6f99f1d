//! Parsers for birdc's text: `show route all`, `show protocols`, `show status` (BIRD 2.0).
//!
//! The shapes were read off the real birdc; the samples in `lab/testdata/birdc/` are what
//! the unit tests below parse.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;

use crate::{LabError, Result};

/// One route as `show route all` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BirdRoute {
    pub prefix: IpNet,
    /// `unicast`, `blackhole`, `unreachable`, ...
    pub kind: String,
    /// The protocol it came from (`static1`, the BGP protocol's name).
    pub protocol: String,
    /// The neighbour it came from when BIRD says so (`[a 09:31:46.801 from 10.99.200.1]`).
    pub from: Option<IpAddr>,
    /// The best route for its prefix (`*`).
    pub primary: bool,
    pub preference: u32,
    /// The first `via` line's gateway.
    pub gateway: Option<IpAddr>,
    pub interface: Option<String>,
    /// `Type:` line, e.g. `BGP univ`, `static univ`.
    pub route_type: String,
    pub bgp: BgpAttrs,
}

/// The BGP attributes of a route (`BGP.*` lines).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BgpAttrs {
    /// `IGP`, `EGP` or `Incomplete`.
    pub origin: Option<String>,
    /// Every AS number in the AS_PATH, in order (set brackets dropped).
    pub as_path: Vec<u32>,
    /// The AS_PATH as BIRD prints it; `None` when the route has no AS_PATH line.
    pub as_path_text: Option<String>,
    /// `BGP.next_hop` (an IPv6 route may carry a global and a link-local address).
    pub next_hop: Vec<IpAddr>,
    pub local_pref: Option<u32>,
    pub med: Option<u32>,
    pub originator_id: Option<Ipv4Addr>,
    pub cluster_list: Vec<Ipv4Addr>,
    /// RFC 1997 communities as (AS, value).
    pub communities: Vec<(u16, u16)>,
    /// Every other `BGP.*` line, by name without the `BGP.` prefix.
    pub other: BTreeMap<String, String>,
}

impl BirdRoute {
    /// Whether it came from BGP.
    pub fn is_bgp(&self) -> bool {
        self.route_type.starts_with("BGP")
    }
}

fn parse_err(what: &str, line: &str) -> LabError {
    LabError::Parse {
        what: what.to_string(),
        line: line.to_string(),
    }
}

fn is_banner(line: &str) -> bool {
    line.starts_with("BIRD ") && line.ends_with(" ready.")
}

/// Parses `show route all [table T] [PREFIX]` output.
pub fn parse_routes(text: &str) -> Result<Vec<BirdRoute>> {
    let mut routes: Vec<BirdRoute> = Vec::new();
    let mut last_prefix: Option<IpNet> = None;
    for line in text.lines() {
        if let Some(attr) = line.strip_prefix('\t') {
            let route = routes
                .last_mut()
                .ok_or_else(|| parse_err("attribute before any route", line))?;
            parse_attr_line(route, attr)?;
            continue;
        }
        let trimmed = line.trim();
        if trimmed.is_empty()
            || is_banner(trimmed)
            || (trimmed.starts_with("Table ") && trimmed.ends_with(':'))
            || trimmed == "Network not found"
        {
            continue;
        }
        let (prefix, rest) = if line.starts_with(' ') {
            let p = last_prefix.ok_or_else(|| parse_err("continuation before a prefix", line))?;
            (p, trimmed)
        } else {
            let (p, rest) = trimmed
                .split_once(char::is_whitespace)
                .ok_or_else(|| parse_err("route header", line))?;
            let p: IpNet = p.parse().map_err(|_| parse_err("route prefix", line))?;
            (p, rest.trim_start())
        };
        last_prefix = Some(prefix);
        routes.push(parse_route_header(prefix, rest, line)?);
    }
    Ok(routes)
}

/// `unicast [proto 09:31:46.801 from 10.99.200.1] * (100) [AS65100i]`
fn parse_route_header(prefix: IpNet, rest: &str, line: &str) -> Result<BirdRoute> {
    let (kind, rest) = rest
        .split_once(" [")
        .ok_or_else(|| parse_err("route kind", line))?;
    let (src, rest) = rest
        .split_once(']')
        .ok_or_else(|| parse_err("route source", line))?;
    let mut src_words = src.split_whitespace();
    let protocol = src_words
        .next()
        .ok_or_else(|| parse_err("route protocol", line))?
        .to_string();
    let mut from = None;
    while let Some(w) = src_words.next() {
        if w == "from" {
            let a = src_words
                .next()
                .ok_or_else(|| parse_err("route from", line))?;
            from = Some(
                a.parse()
                    .map_err(|_| parse_err("route from address", line))?,
            );
        }
    }
    let rest = rest.trim_start();
    let (primary, rest) = match rest.strip_prefix('*') {
        Some(r) => (true, r.trim_start()),
        None => (false, rest),
    };
    let preference = rest
        .strip_prefix('(')
        .and_then(|r| r.split_once(')'))
        .and_then(|(n, _)| n.parse().ok())
        .ok_or_else(|| parse_err("route preference", line))?;
    Ok(BirdRoute {
        prefix,
        kind: kind.trim().to_string(),
        protocol,
        from,
        primary,
        preference,
        gateway: None,
        interface: None,
        route_type: String::new(),
        bgp: BgpAttrs::default(),
    })
}

fn parse_attr_line(route: &mut BirdRoute, attr: &str) -> Result<()> {
    if let Some(via) = attr.strip_prefix("via ") {
        if route.gateway.is_none() {
            let mut w = via.split_whitespace();
            let gw = w.next().ok_or_else(|| parse_err("via gateway", attr))?;
            route.gateway = Some(gw.parse().map_err(|_| parse_err("via gateway", attr))?);
            if w.next() == Some("on") {
                route.interface = w.next().map(str::to_string);
            }
        }
        return Ok(());
    }
    if let Some(dev) = attr.strip_prefix("dev ") {
        route
            .interface
            .get_or_insert_with(|| dev.trim().to_string());
        return Ok(());
    }
    let (key, value) = match attr.split_once(": ") {
        Some((k, v)) => (k, v.trim()),
        None => match attr.trim_end().strip_suffix(':') {
            Some(k) => (k, ""),
            None => return Err(parse_err("route attribute", attr)),
        },
    };
    if key == "Type" {
        route.route_type = value.to_string();
        return Ok(());
    }
    let Some(name) = key.strip_prefix("BGP.") else {
        return Ok(()); // other protocols' attributes (OSPF.metric1, ...) are not ours to read
    };
    let bgp = &mut route.bgp;
    let num = |v: &str| v.parse::<u32>().map_err(|_| parse_err(name, attr));
    match name {
        "origin" => bgp.origin = Some(value.to_string()),
        "as_path" => {
            bgp.as_path_text = Some(value.to_string());
            bgp.as_path = value
                .split(|c: char| c.is_whitespace() || "{}()[]".contains(c))
                .filter(|w| !w.is_empty())
                .map(num)
                .collect::<Result<_>>()?;
        }
        "next_hop" => {
            bgp.next_hop = value
                .split_whitespace()
                .map(|a| a.parse().map_err(|_| parse_err("next_hop", attr)))
                .collect::<Result<_>>()?;
        }
        "local_pref" => bgp.local_pref = Some(num(value)?),
        "med" => bgp.med = Some(num(value)?),
        "originator_id" => {
            bgp.originator_id = Some(value.parse().map_err(|_| parse_err(name, attr))?)
        }
        "cluster_list" => {
            bgp.cluster_list = value
                .split_whitespace()
                .map(|a| a.parse().map_err(|_| parse_err(name, attr)))
                .collect::<Result<_>>()?;
        }
        "community" => bgp.communities = parse_communities(value, attr)?,
        _ => {
            bgp.other.insert(name.to_string(), value.to_string());
        }
    }
    Ok(())
}

/// `(65000,100) (65000,200)`
fn parse_communities(value: &str, line: &str) -> Result<Vec<(u16, u16)>> {
    value
        .split_whitespace()
        .map(|c| {
            let inner = c
                .strip_prefix('(')
                .and_then(|c| c.strip_suffix(')'))
                .ok_or_else(|| parse_err("community", line))?;
            let (a, v) = inner
                .split_once(',')
                .ok_or_else(|| parse_err("community", line))?;
            Ok((
                a.trim().parse().map_err(|_| parse_err("community", line))?,
                v.trim().parse().map_err(|_| parse_err("community", line))?,
            ))
        })
        .collect()
}

/// One row of `show protocols`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BirdProtocol {
    pub name: String,
    /// `BGP`, `Static`, `Device`, ...
    pub proto: String,
    pub table: String,
    /// `up`, `start`, `down`, ...
    pub state: String,
    pub since: String,
    /// The Info column, whitespace collapsed: `Established`, `Active Socket: Connection refused`.
    pub info: String,
}

impl BirdProtocol {
    /// The BGP state, the first word of Info (`Established`, `Active`, `Connect`, `Passive`).
    pub fn bgp_state(&self) -> &str {
        self.info.split_whitespace().next().unwrap_or("")
    }

    /// Whether this BGP session is up.
    pub fn is_established(&self) -> bool {
        self.state == "up" && self.bgp_state() == "Established"
    }

    /// Whether this is still the session whose `since` was `earlier`. BIRD derives the wall
    /// time it prints from a monotonic stamp, so the same state change can print a
    /// millisecond apart from one `show protocols` to the next; a reset moves it by far more.
    pub fn same_session_since(&self, earlier: &str) -> bool {
        match (millis_of_day(&self.since), millis_of_day(earlier)) {
            (Some(a), Some(b)) => a.abs_diff(b) <= SINCE_JITTER_MS,
            _ => self.since == earlier,
        }
    }
}

/// How far BIRD's printed `since` of one state change may wander (see
/// [`BirdProtocol::same_session_since`]).
const SINCE_JITTER_MS: u64 = 20;

/// `HH:MM:SS.mmm` (or `HH:MM:SS`) as milliseconds of the day.
fn millis_of_day(t: &str) -> Option<u64> {
    let (hms, frac) = t.split_once('.').unwrap_or((t, "0"));
    let mut parts = hms.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, s) = (parts.next()??, parts.next()??, parts.next()??);
    let ms: u64 = format!("{frac:0<3}").get(..3)?.parse().ok()?;
    Some(((h * 60 + m) * 60 + s) * 1000 + ms)
}

fn looks_like_time(w: &str) -> bool {
    let b = w.as_bytes();
    b.len() >= 5 && b[2] == b':' && b[..2].iter().all(u8::is_ascii_digit)
}

/// Parses `show protocols` output.
pub fn parse_protocols(text: &str) -> Result<Vec<BirdProtocol>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || is_banner(trimmed) || trimmed.starts_with("Name ") {
            continue;
        }
        let words: Vec<&str> = trimmed.split_whitespace().collect();
        if words.len() < 5 {
            return Err(parse_err("protocol row", line));
        }
        // `Since` is a time, or a date and a time with some timeformat settings.
        let mut info_at = 5;
        let mut since = words[4].to_string();
        if words.len() > 5 && looks_like_time(words[5]) && !looks_like_time(words[4]) {
            since = format!("{} {}", words[4], words[5]);
            info_at = 6;
        }
        out.push(BirdProtocol {
            name: words[0].to_string(),
            proto: words[1].to_string(),
            table: words[2].to_string(),
            state: words[3].to_string(),
            since,
            info: words[info_at..].join(" "),
        });
    }
    Ok(out)
}

/// What `show status` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BirdStatus {
    pub version: String,
    pub router_id: Ipv4Addr,
    /// "Daemon is up and running".
    pub running: bool,
}

/// Parses `show status` output.
pub fn parse_status(text: &str) -> Result<BirdStatus> {
    let mut version = None;
    let mut router_id = None;
    let mut running = false;
    for line in text.lines().map(str::trim) {
        if is_banner(line) {
            continue;
        } else if let Some(v) = line.strip_prefix("BIRD ") {
            version = Some(v.to_string());
        } else if let Some(id) = line.strip_prefix("Router ID is ") {
            router_id = Some(id.parse().map_err(|_| parse_err("router id", line))?);
        } else if line == "Daemon is up and running" {
            running = true;
        }
    }
    Ok(BirdStatus {
        version: version.ok_or_else(|| parse_err("status without version", text))?,
        router_id: router_id.ok_or_else(|| parse_err("status without router id", text))?,
        running,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str) -> String {
        let path = format!("{}/testdata/birdc/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
    }

    fn find<'a>(routes: &'a [BirdRoute], prefix: &str) -> Vec<&'a BirdRoute> {
        let p: IpNet = prefix.parse().unwrap();
        routes.iter().filter(|r| r.prefix == p).collect()
    }

    #[test]
    fn reads_reflected_route_with_originator_and_cluster_list() {
        let routes = parse_routes(&sample("rr_client_show_route_all.txt")).unwrap();
        assert_eq!(routes.len(), 4);
        let r = find(&routes, "10.1.2.0/26")[0];
        assert_eq!(r.kind, "unicast");
        assert_eq!(r.protocol, "a");
        assert_eq!(r.from, Some("10.99.200.1".parse().unwrap()));
        assert!(r.primary);
        assert_eq!(r.preference, 100);
        assert_eq!(r.gateway, Some("10.99.200.2".parse().unwrap()));
        assert_eq!(r.interface.as_deref(), Some("eth0"));
        assert!(r.is_bgp());
        assert_eq!(r.bgp.origin.as_deref(), Some("IGP"));
        assert_eq!(r.bgp.as_path, Vec::<u32>::new());
        assert_eq!(r.bgp.as_path_text.as_deref(), Some(""));
        assert_eq!(
            r.bgp.next_hop,
            vec!["10.99.200.2".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(r.bgp.med, Some(50));
        assert_eq!(r.bgp.local_pref, Some(200));
        assert_eq!(r.bgp.communities, vec![(65000, 100), (65000, 200)]);
        assert_eq!(r.bgp.originator_id, Some(Ipv4Addr::new(10, 99, 200, 2)));
        assert_eq!(r.bgp.cluster_list, vec![Ipv4Addr::new(1, 1, 1, 1)]);
    }

    #[test]
    fn reads_static_blackhole_without_gateway() {
        let routes = parse_routes(&sample("rr_client_show_route_all.txt")).unwrap();
        let r = find(&routes, "10.1.3.0/26")[0];
        assert_eq!(r.kind, "blackhole");
        assert_eq!(r.protocol, "s4");
        assert_eq!(r.preference, 200);
        assert_eq!(r.gateway, None);
        assert_eq!(r.route_type, "static univ");
        assert!(!r.is_bgp());
        assert_eq!(r.bgp, BgpAttrs::default());
    }

    #[test]
    fn reads_ebgp_as_path() {
        let routes = parse_routes(&sample("ebgp_show_route_all.txt")).unwrap();
        let r = find(&routes, "10.1.1.0/26")[0];
        assert_eq!(r.bgp.as_path, vec![65000]);
        assert_eq!(r.bgp.as_path_text.as_deref(), Some("65000"));
        assert_eq!(r.from, None);
        assert_eq!(r.gateway, Some("10.99.200.1".parse().unwrap()));
        // The IPv6 table of the same output holds the static /64.
        let v6 = find(&routes, "fd00:2:4::/64");
        assert_eq!(v6.len(), 1);
        assert_eq!(v6[0].kind, "blackhole");
    }

    #[test]
    fn reads_second_path_of_same_prefix_and_ipv6_next_hops() {
        let routes = parse_routes(&sample("ipv6_show_route_all.txt")).unwrap();
        assert_eq!(routes.len(), 2);
        assert!(
            routes
                .iter()
                .all(|r| r.prefix == "fd00:2:4::/64".parse().unwrap())
        );
        assert!(routes[0].primary);
        assert!(!routes[1].primary);
        assert_eq!(routes[0].protocol, "d");
        assert_eq!(routes[1].protocol, "d6");
        assert_eq!(routes[1].gateway, Some("fd00:99:200::4".parse().unwrap()));
        assert_eq!(
            routes[1].bgp.next_hop,
            vec![
                "fd00:99:200::4".parse::<IpAddr>().unwrap(),
                "fe80::dc43:fbff:fe4f:77ab".parse().unwrap()
            ]
        );
        assert_eq!(routes[1].bgp.as_path, vec![65100]);
    }

    #[test]
    fn reads_every_route_of_reflector_table() {
        let routes = parse_routes(&sample("rr_show_route_all.txt")).unwrap();
        let prefixes: Vec<String> = routes.iter().map(|r| r.prefix.to_string()).collect();
        assert_eq!(
            prefixes,
            [
                "10.1.3.0/26",
                "10.1.2.0/26",
                "10.1.1.0/26",
                "10.2.4.0/26",
                "fd00:2:4::/64",
                "fd00:2:4::/64"
            ]
        );
        assert_eq!(routes[3].bgp.as_path, vec![65100]);
    }

    #[test]
    fn reads_not_found_as_no_routes() {
        assert!(
            parse_routes(&sample("no_route_show_route_all.txt"))
                .unwrap()
                .is_empty()
        );
        let one = parse_routes(&sample("for_prefix_show_route_all.txt")).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].protocol, "b");
        assert_eq!(one[0].bgp.med, Some(50));
        assert!(one[0].bgp.cluster_list.is_empty());
        assert_eq!(one[0].bgp.originator_id, None);
    }

    #[test]
    fn rejects_garbage_route_lines() {
        assert!(
            parse_routes("BIRD 2.0.12 ready.\nsyntax error, unexpected CF_SYM_UNDEFINED\n")
                .is_err()
        );
        assert!(parse_routes("\tBGP.origin: IGP\n").is_err());
        assert!(
            parse_routes("10.0.0.0/8 unicast [x 10:00:00.000] * (100)\n\tBGP.med: lots\n").is_err()
        );
    }

    #[test]
    fn reads_established_and_passive_protocols() {
        let p = parse_protocols(&sample("show_protocols.txt")).unwrap();
        let names: Vec<&str> = p.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["device1", "s4", "s6", "a", "a6", "wrong"]);
        assert!(p[3].is_established());
        assert_eq!(p[3].proto, "BGP");
        assert_eq!(p[3].table, "---");
        assert_eq!(p[3].since, "09:31:42.213");
        assert_eq!(p[5].state, "start");
        assert_eq!(p[5].bgp_state(), "Passive");
        assert!(!p[5].is_established());
        assert_eq!(p[0].info, "");
        assert_eq!(p[1].table, "master4");
    }

    #[test]
    fn reads_protocol_last_error() {
        let p = parse_protocols(&sample("show_protocols_peer_down.txt")).unwrap();
        let b = p.iter().find(|p| p.name == "b").unwrap();
        assert_eq!(b.state, "start");
        assert_eq!(b.bgp_state(), "Active");
        assert_eq!(b.info, "Active Received: Administrative shutdown");
        assert!(!b.is_established());
    }

    #[test]
    fn reads_status() {
        let s = parse_status(&sample("show_status.txt")).unwrap();
        assert_eq!(s.version, "2.0.12");
        assert_eq!(s.router_id, Ipv4Addr::new(10, 99, 200, 4));
        assert!(s.running);
    }
}

#[cfg(test)]
mod since_tests {
    use super::*;

    fn proto(since: &str) -> BirdProtocol {
        BirdProtocol {
            name: "m".into(),
            proto: "BGP".into(),
            table: "---".into(),
            state: "up".into(),
            since: since.into(),
            info: "Established".into(),
        }
    }

    #[test]
    fn since_a_millisecond_apart_is_the_same_session_and_seconds_apart_is_not() {
        assert!(proto("13:41:50.592").same_session_since("13:41:50.593"));
        assert!(!proto("13:41:51.592").same_session_since("13:41:50.593"));
        assert!(proto("2026-11-25").same_session_since("2026-11-25"));
        assert_eq!(millis_of_day("01:00:00.5"), Some(3_600_500));
    }
}
