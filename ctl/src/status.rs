//! `margayctl node status`: the peer table, as operators know it from `calicoctl node status`.

use chrono::{DateTime, Local};
use comfy_table::{CellAlignment, ContentLineStyle, LineStyle, Table, TableStyle};
use margay_proto::bgp::v1 as pb;
use serde::Serialize;

/// One row of the peer table.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PeerRow {
    pub peer_address: String,
    pub peer_type: String,
    pub state: String,
    pub since: String,
    pub info: String,
    pub asn: u32,
    pub prefixes_received: u64,
    pub prefixes_accepted: u64,
    pub prefixes_advertised: u64,
    /// The BFD session, when the neighbour has BFD on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bfd: Option<BfdRow>,
}

/// A peer's BFD session: state, negotiated timing, last diagnostics.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BfdRow {
    pub state: String,
    pub remote_state: String,
    /// The interval we send at, negotiated (ms).
    pub tx_interval_ms: f64,
    /// How long without a packet before the session goes Down (ms).
    pub detection_time_ms: f64,
    pub local_diagnostic: String,
    pub remote_diagnostic: String,
    /// Times the session went from Up to Down.
    pub downs: u64,
}

impl BfdRow {
    fn from_pb(b: &pb::Bfd) -> BfdRow {
        BfdRow {
            state: b.state.clone(),
            remote_state: b.remote_state.clone(),
            tx_interval_ms: f64::from(b.tx_interval_us) / 1000.0,
            detection_time_ms: f64::from(b.detection_time_us) / 1000.0,
            local_diagnostic: b.local_diagnostic.clone(),
            remote_diagnostic: b.remote_diagnostic.clone(),
            downs: b.downs,
        }
    }

    /// The BFD column: `Up 100ms/300ms`, or the state and why it last went down.
    fn cell(&self) -> String {
        if self.state == "Up" {
            format!("Up {}ms/{}ms", self.tx_interval_ms, self.detection_time_ms)
        } else if self.local_diagnostic == "No Diagnostic" {
            self.state.clone()
        } else {
            format!("{} ({})", self.state, self.local_diagnostic)
        }
    }
}

/// What `node status -o json|yaml` prints.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    pub running: bool,
    pub router_id: String,
    pub asn: u32,
    pub ipv4_peers: Vec<PeerRow>,
    pub ipv6_peers: Vec<PeerRow>,
}

/// Calico's label for a peer type.
pub fn peer_type_label(t: i32) -> &'static str {
    match pb::PeerType::try_from(t).unwrap_or(pb::PeerType::Unspecified) {
        pb::PeerType::NodeMesh => "node-to-node mesh",
        pb::PeerType::Global => "global",
        pb::PeerType::NodeSpecific => "node specific",
        pb::PeerType::RouteReflectorClient => "route reflector client",
        pb::PeerType::RouteReflector => "route reflector",
        pb::PeerType::Unspecified => "unknown",
    }
}

/// `HH:MM:SS` when `since` is today (local time), else `YYYY-MM-DD`.
pub fn format_since(since: i64, now: DateTime<Local>) -> String {
    let Some(t) = DateTime::from_timestamp(since, 0) else {
        return "-".into();
    };
    let t = t.with_timezone(&Local);
    if t.date_naive() == now.date_naive() {
        t.format("%H:%M:%S").to_string()
    } else {
        t.format("%Y-%m-%d").to_string()
    }
}

/// Builds a row: STATE is `up` when Established, else `start` (trying); INFO is the FSM state
/// followed by the last error when not Established.
pub fn row(p: &pb::Peer, now: DateTime<Local>) -> PeerRow {
    let established = p.state == "Established";
    let info = if established || p.last_error.is_empty() {
        p.state.clone()
    } else {
        format!("{} {}", p.state, p.last_error)
    };
    PeerRow {
        peer_address: p.address.clone(),
        peer_type: peer_type_label(p.r#type).to_string(),
        state: if established { "up" } else { "start" }.to_string(),
        since: format_since(p.since, now),
        info,
        asn: p.asn,
        prefixes_received: p.prefixes_received,
        prefixes_accepted: p.prefixes_accepted,
        prefixes_advertised: p.prefixes_advertised,
        bfd: p.bfd.as_ref().map(BfdRow::from_pb),
    }
}

/// Splits the peers by address family, in address order.
pub fn build(info: &pb::Info, peers: &[pb::Peer], now: DateTime<Local>) -> NodeStatus {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for p in peers {
        let r = row(p, now);
        if p.address.contains(':') {
            v6.push(r)
        } else {
            v4.push(r)
        }
    }
    NodeStatus {
        running: true,
        router_id: info.router_id.clone(),
        asn: info.asn,
        ipv4_peers: v4,
        ipv6_peers: v6,
    }
}

/// calicoctl's table look: ASCII borders, a rule under the header, none between rows.
const STYLE: TableStyle = TableStyle::new()
    .top_border(LineStyle::new('+', '-', '+', '+'))
    .header_lines(ContentLineStyle::new('|', '|', '|'))
    .header_separator(LineStyle::new('+', '-', '+', '+'))
    .content_lines(ContentLineStyle::new('|', '|', '|'))
    .bottom_border(LineStyle::new('+', '-', '+', '+'));

fn table(rows: &[PeerRow]) -> String {
    // The BFD column only when some peer has BFD: otherwise calicoctl's table, unchanged.
    let with_bfd = rows.iter().any(|r| r.bfd.is_some());
    let mut header = vec!["PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO"];
    if with_bfd {
        header.push("BFD");
    }
    let bfd: Vec<String> = rows
        .iter()
        .map(|r| r.bfd.as_ref().map_or_else(|| "-".to_string(), BfdRow::cell))
        .collect();
    let cells: Vec<Vec<&str>> = rows
        .iter()
        .zip(&bfd)
        .map(|(r, b)| {
            let mut c = vec![
                &r.peer_address[..],
                &r.peer_type,
                &r.state,
                &r.since,
                &r.info,
            ];
            if with_bfd {
                c.push(b);
            }
            c
        })
        .collect();
    // Headers centred with the odd space on the right, as calicoctl prints them.
    let centred: Vec<String> = header
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let width = cells
                .iter()
                .map(|c| c[i].chars().count())
                .chain([h.len()])
                .max()
                .unwrap_or(0);
            let left = (width - h.len()) / 2;
            format!(
                "{}{h}{}",
                " ".repeat(left),
                " ".repeat(width - h.len() - left)
            )
        })
        .collect();
    let mut t = Table::new();
    t.load_style(STYLE);
    t.set_header(centred);
    for c in t.column_iter_mut() {
        c.set_cell_alignment(CellAlignment::Left);
    }
    for c in cells {
        t.add_row(c);
    }
    t.to_string()
}

/// The human-readable report.
pub fn render_text(s: &NodeStatus) -> String {
    let mut out = String::from("margay-bgpd is running.\n\nIPv4 BGP status\n");
    if s.ipv4_peers.is_empty() {
        out.push_str("No IPv4 peers found.\n");
    } else {
        out.push_str(&table(&s.ipv4_peers));
        out.push('\n');
    }
    out.push_str("\nIPv6 BGP status\n");
    if s.ipv6_peers.is_empty() {
        out.push_str("No IPv6 peers found.\n");
    } else {
        out.push_str(&table(&s.ipv6_peers));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn peer(addr: &str, state: &str, err: &str, t: pb::PeerType, since: i64) -> pb::Peer {
        pb::Peer {
            address: addr.into(),
            state: state.into(),
            last_error: err.into(),
            r#type: t as i32,
            since,
            ..Default::default()
        }
    }

    #[test]
    fn renders_the_calico_peer_table() {
        let now = Local.with_ymd_and_hms(2026, 11, 25, 10, 0, 0).unwrap();
        let since = Local
            .with_ymd_and_hms(2026, 11, 25, 9, 15, 2)
            .unwrap()
            .timestamp();
        let info = pb::Info {
            router_id: "10.0.0.1".into(),
            asn: 64512,
            ..Default::default()
        };
        let s = build(
            &info,
            &[peer(
                "10.0.0.2",
                "Established",
                "",
                pb::PeerType::NodeMesh,
                since,
            )],
            now,
        );
        let text = render_text(&s);
        let expected = "\
margay-bgpd is running.

IPv4 BGP status
+--------------+-------------------+-------+----------+-------------+
| PEER ADDRESS |     PEER TYPE     | STATE |  SINCE   |    INFO     |
+--------------+-------------------+-------+----------+-------------+
| 10.0.0.2     | node-to-node mesh | up    | 09:15:02 | Established |
+--------------+-------------------+-------+----------+-------------+

IPv6 BGP status
No IPv6 peers found.
";
        assert_eq!(text, expected);
    }

    #[test]
    fn local_routes_show_self_as_next_hop() {
        let local = pb::Route {
            prefix: "10.244.1.0/26".into(),
            next_hop: "0.0.0.0".into(),
            local: true,
            ..Default::default()
        };
        let learned = pb::Route {
            prefix: "10.244.2.0/26".into(),
            next_hop: "10.0.0.2".into(),
            peer: "10.0.0.2".into(),
            ..Default::default()
        };
        let rows = route_rows(&[local, learned]);
        assert_eq!(
            (rows[0].next_hop.as_str(), rows[0].from.as_str()),
            ("self", "local")
        );
        assert_eq!(rows[1].next_hop, "10.0.0.2");
    }

    #[test]
    fn multipath_routes_show_every_next_hop() {
        let r = pb::Route {
            prefix: "10.244.2.0/26".into(),
            next_hop: "10.0.1.1".into(),
            peer: "10.0.1.1".into(),
            best: true,
            multipath_next_hops: vec!["10.0.1.1".into(), "10.0.2.1".into()],
            ..Default::default()
        };
        let text = render_routes(&[r]);
        assert!(text.contains("10.0.1.1, 10.0.2.1 (ECMP)"), "{text}");
    }

    #[test]
    fn shows_state_and_last_error_when_not_established() {
        let now = Local.with_ymd_and_hms(2026, 11, 25, 10, 0, 0).unwrap();
        let since = Local
            .with_ymd_and_hms(2026, 11, 20, 9, 0, 0)
            .unwrap()
            .timestamp();
        let r = row(
            &peer(
                "fd00::2",
                "Active",
                "Socket: Connection refused",
                pb::PeerType::Global,
                since,
            ),
            now,
        );
        assert_eq!(r.state, "start");
        assert_eq!(r.info, "Active Socket: Connection refused");
        assert_eq!(r.since, "2026-11-20");
        assert_eq!(r.peer_type, "global");
        let s = build(
            &pb::Info::default(),
            &[peer("fd00::2", "Active", "", pb::PeerType::Global, since)],
            now,
        );
        assert!(s.ipv4_peers.is_empty());
        assert_eq!(s.ipv6_peers.len(), 1);
    }
    #[test]
    fn bfd_adds_a_column_and_json_fields_only_where_configured() {
        let now = Local.with_ymd_and_hms(2026, 11, 25, 10, 0, 0).unwrap();
        let info = pb::Info::default();
        let mut a = peer("10.0.0.2", "Established", "", pb::PeerType::Global, 0);
        a.bfd = Some(pb::Bfd {
            state: "Up".into(),
            local_diagnostic: "No Diagnostic".into(),
            tx_interval_us: 100_000,
            detection_time_us: 300_000,
            ..Default::default()
        });
        let mut b = peer(
            "10.0.0.3",
            "Idle",
            "BFD session down",
            pb::PeerType::Global,
            0,
        );
        b.bfd = Some(pb::Bfd {
            state: "Down".into(),
            local_diagnostic: "Control Detection Time Expired".into(),
            downs: 1,
            ..Default::default()
        });
        let c = peer("10.0.0.4", "Established", "", pb::PeerType::Global, 0);
        let text = render_text(&build(&info, &[a.clone(), b, c.clone()], now));
        assert!(text.contains("BFD"), "{text}");
        assert!(text.contains("Up 100ms/300ms"), "{text}");
        assert!(
            text.contains("Down (Control Detection Time Expired)"),
            "{text}"
        );
        let json = serde_json::to_value(build(&info, &[a, c.clone()], now)).unwrap();
        assert_eq!(json["ipv4_peers"][0]["bfd"]["detection_time_ms"], 300.0);
        assert!(json["ipv4_peers"][1].get("bfd").is_none());
        let plain = render_text(&build(&info, &[c], now));
        assert!(!plain.contains("BFD"), "no column without BFD: {plain}");
    }
}

/// One route as `node routes` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct RouteRow {
    pub prefix: String,
    pub next_hop: String,
    /// Every next hop of a multipath (ECMP) route, the best path's first; empty for one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub multipath: Vec<String>,
    pub as_path: String,
    pub from: String,
    pub best: bool,
    pub local_pref: u32,
    pub origin: String,
}

pub fn route_rows(routes: &[pb::Route]) -> Vec<RouteRow> {
    routes
        .iter()
        .map(|r| RouteRow {
            prefix: r.prefix.clone(),
            // A route this node originates has no next hop of its own: each session gets ours.
            next_hop: if r.local {
                "self".into()
            } else {
                r.next_hop.clone()
            },
            multipath: r.multipath_next_hops.clone(),
            as_path: r.as_path_text.clone(),
            from: if r.local {
                "local".into()
            } else {
                r.peer.clone()
            },
            best: r.best,
            local_pref: r.local_pref,
            origin: r.origin.clone(),
        })
        .collect()
}

/// The RIB as a table.
pub fn render_routes(routes: &[pb::Route]) -> String {
    if routes.is_empty() {
        return "No routes.\n".into();
    }
    let mut t = Table::new();
    t.load_style(STYLE);
    t.set_header(vec![
        "PREFIX",
        "NEXT HOP",
        "AS PATH",
        "FROM",
        "BEST",
        "LOCAL PREF",
        "ORIGIN",
    ]);
    for r in route_rows(routes) {
        let next_hop = if r.multipath.is_empty() {
            r.next_hop
        } else {
            format!("{} (ECMP)", r.multipath.join(", "))
        };
        t.add_row(vec![
            r.prefix,
            next_hop,
            r.as_path,
            r.from,
            if r.best { "*".into() } else { String::new() },
            r.local_pref.to_string(),
            r.origin,
        ]);
    }
    format!("{t}\n")
}
