//! The lab's report, as an operator would gather it by hand: for every node `margayctl node
//! status` run inside its namespace and the kernel routes felix programmed there (`ip route
//! show proto 81`), then the ToR's `birdc show protocols` and `birdc show route`, then the
//! BGP policy at work, then the pods, then IPAM's leak collection (the configuration with the
//! elected collector, and what each felix's collectors released, from its /metrics). Each block
//! starts with the command line that produced it. The ping matrix is [`super::ping`]'s.

use std::ffi::OsStr;
use std::fmt::Write;
use std::path::PathBuf;
use std::process::Command;

use super::pods::POD_NAMESPACE;
use super::state::{CalicoNodeState, LabState, NodeState, TorState};
use super::topology::{POOL_CIDR, POOL_COMMUNITY, PoolMode, TOR_FILTER, TOR_PREFIX};
use crate::Result;
use crate::bgpd::margay_binary;

/// The route protocol felix marks its routes with (its default).
pub const FELIX_PROTOCOL: &str = "81";

/// The programs the report runs.
#[derive(Debug, Clone)]
pub struct Tools {
    pub margayctl: PathBuf,
}

impl Tools {
    /// Finds `margayctl` (`$MARGAY_BIN_DIR`, else next to this binary).
    pub fn locate() -> Result<Tools> {
        Ok(Tools {
            margayctl: margay_binary(
                "margayctl",
                "`cargo build -p margay-ctl`, or `scripts/lab.sh` builds everything",
            )?,
        })
    }
}

/// Runs `cmd` and returns its output; a failure is shown as what it printed and its status.
fn output_of(cmd: &mut Command) -> String {
    match cmd.output() {
        Ok(out) => {
            let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&out.stderr));
            if !out.status.success() {
                let _ = writeln!(s, "({})", out.status);
            }
            s
        }
        Err(e) => format!("(could not run {:?}: {e})\n", cmd.get_program()),
    }
}

/// Runs margayctl inside `node`'s namespace; the line shown names the program without its
/// directory, as an operator types it.
fn margayctl(out: &mut String, tools: &Tools, node: &NodeState, args: &[&str]) {
    let socket = node.socket.display().to_string();
    let _ = writeln!(
        out,
        "$ ip netns exec {} margayctl {} --socket {socket}",
        node.netns,
        args.join(" ")
    );
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &node.netns])
        .arg(&tools.margayctl)
        .args(args)
        .arg("--socket")
        .arg(&node.socket);
    out.push_str(&output_of(&mut cmd));
}

/// Runs margayctl against the lab's etcd, inside etcd's namespace.
fn etcd_margayctl(out: &mut String, state: &LabState, tools: &Tools, args: &[&str]) {
    let _ = writeln!(
        out,
        "$ ip netns exec {} margayctl {} --etcd-endpoints {}",
        state.etcd.netns,
        args.join(" "),
        state.etcd.endpoint
    );
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &state.etcd.netns])
        .arg(&tools.margayctl)
        .args(args)
        .arg("--etcd-endpoints")
        .arg(&state.etcd.endpoint);
    out.push_str(&output_of(&mut cmd));
}

fn birdc(out: &mut String, state: &LabState, args: &[&str]) {
    birdc_on(out, &state.tor, args);
}

fn birdc_on(out: &mut String, tor: &TorState, args: &[&str]) {
    let socket = tor.socket.display().to_string();
    let _ = writeln!(out, "$ birdc -s {socket} {}", args.join(" "));
    let mut cmd = Command::new("birdc");
    cmd.arg("-s").arg(OsStr::new(&tor.socket)).args(args);
    out.push_str(&output_of(&mut cmd));
}

/// The kernel routes felix programmed in `node`'s namespace (its own route protocol), the
/// IPv6 ones too on a node with an IPv6 address.
fn felix_routes(out: &mut String, node: &NodeState) {
    let _ = writeln!(
        out,
        "$ ip -n {} route show proto {FELIX_PROTOCOL}",
        node.netns
    );
    let mut cmd = Command::new("ip");
    cmd.args(["-n", &node.netns, "route", "show", "proto", FELIX_PROTOCOL]);
    out.push_str(&output_of(&mut cmd));
    if node.address6.is_some() {
        let _ = writeln!(
            out,
            "$ ip -n {} -6 route show proto {FELIX_PROTOCOL}",
            node.netns
        );
        let mut cmd = Command::new("ip");
        cmd.args([
            "-n",
            &node.netns,
            "-6",
            "route",
            "show",
            "proto",
            FELIX_PROTOCOL,
        ]);
        out.push_str(&output_of(&mut cmd));
    }
}

/// A Calico node's section: its BIRD's sessions and the routes in its kernel to the pool.
fn calico_section(out: &mut String, c: &CalicoNodeState) {
    let _ = writeln!(
        out,
        "\n==== {} (Calico node: BIRD on confd's configuration {}): netns {}, {}, block {} ====",
        c.name,
        c.config.display(),
        c.netns,
        c.address4,
        c.block
    );
    let _ = writeln!(out, "$ birdc -s {} show protocols", c.socket.display());
    let mut cmd = Command::new("birdc");
    cmd.arg("-s").arg(&c.socket).args(["show", "protocols"]);
    out.push_str(&output_of(&mut cmd));
    let _ = writeln!(out, "$ ip -n {} route show proto bird", c.netns);
    let mut cmd = Command::new("ip");
    cmd.args(["-n", &c.netns, "route", "show", "proto", "bird"]);
    out.push_str(&output_of(&mut cmd));
}

/// Without bgpd: felix's routes and the VXLAN devices' neighbours and FDB (their VTEPs).
fn vxlan_view(out: &mut String, node: &NodeState, v4: bool, v6: bool) {
    felix_routes(out, node);
    vxlan_devices(out, node, v4, v6);
}

/// The VXLAN device of each family asked for (`vxlan.margay`, `vxlan-v6.margay`): its
/// neighbours (ARP / NDP), its link details and its FDB.
fn vxlan_devices(out: &mut String, node: &NodeState, v4: bool, v6: bool) {
    let devices = [(v4, "vxlan.margay"), (v6, "vxlan-v6.margay")];
    for (_, dev) in devices.into_iter().filter(|(on, _)| *on) {
        for args in [["neigh", "show", "dev", dev], ["-d", "link", "show", dev]] {
            let _ = writeln!(out, "$ ip -n {} {}", node.netns, args.join(" "));
            let mut cmd = Command::new("ip");
            cmd.args(["-n", &node.netns]).args(args);
            out.push_str(&output_of(&mut cmd));
        }
        let _ = writeln!(out, "$ bridge -n {} fdb show dev {dev}", node.netns);
        let mut cmd = Command::new("bridge");
        cmd.args(["-n", &node.netns, "fdb", "show", "dev", dev]);
        out.push_str(&output_of(&mut cmd));
    }
}

/// The header line of a node's section.
fn node_header(node: &NodeState) -> String {
    let role = if node.reflector {
        " (route reflector)"
    } else {
        ""
    };
    let v6 = node
        .address6
        .map(|a| format!(" and {a}"))
        .unwrap_or_default();
    let plane_b = node
        .address_b
        .map(|a| format!(", plane b {a}"))
        .unwrap_or_default();
    format!(
        "==== {}{role}: netns {}, rack {}, {}{v6}{plane_b}, AS {} ====",
        node.name, node.netns, node.rack, node.address4, node.asn
    )
}

/// The policy the lab applies, seen from both sides: the ToR holds the pool's routes with the
/// prefixAdvertisement's community; a node holds the ToR's prefix (the only one the BGPFilter
/// imports) on one path, from the ToR, because no node passes an external route on; and the
/// ToR's own prefix comes back from no node.
fn policy_section(out: &mut String, state: &LabState, tools: &Tools) {
    let _ = writeln!(
        out,
        "\n==== policy: BGPFilter '{TOR_FILTER}' on the ToR's BGPPeers (import {TOR_PREFIX} only, \
         export {POOL_CIDR}); community {POOL_COMMUNITY} on {POOL_CIDR}; routes from the ToR go \
         back out to no one ===="
    );
    let pool = format!("[ {POOL_CIDR}+ ]");
    birdc(
        out,
        state,
        &["show", "route", "where", "net", "~", &pool, "all"],
    );
    birdc(out, state, &["show", "route", TOR_PREFIX, "all"]);
    if let Some(node) = state.nodes.first() {
        margayctl(out, tools, node, &["node", "routes", "--all"]);
    }
}

/// The FelixConfigurations in etcd and what felix made of them in each node's kernel: its NAT
/// table (`natOutgoingAddress` / `natPortRange` show in its rules), while the routes above
/// show `deviceRouteSourceAddress` as their `src` and `interfacePrefix` in their devices.
fn felix_settings_section(out: &mut String, state: &LabState, tools: &Tools) {
    let _ = writeln!(
        out,
        "\n==== felix settings: FelixConfiguration (default, node.<name>) and felix's NAT table ===="
    );
    etcd_margayctl(
        out,
        state,
        tools,
        &["get", "felixconfigurations", "-o", "yaml"],
    );
    for node in &state.nodes {
        let _ = writeln!(
            out,
            "$ ip netns exec {} nft list table ip margay",
            node.netns
        );
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &node.netns,
            "nft",
            "list",
            "table",
            "ip",
            "margay",
        ]);
        out.push_str(&output_of(&mut cmd));
    }
}

/// `--tors 2`: every node's multipath routes (a remote block over both ToRs) and its BFD
/// sessions, counted, with the routes as the kernel holds them.
fn multipath_section(out: &mut String, state: &LabState) {
    let _ = writeln!(
        out,
        "\n==== ECMP over both ToRs: each node's multipath routes (nexthop via tor, nexthop via \
         tor2) ===="
    );
    for node in &state.nodes {
        let text = Command::new("ip")
            .args(["-n", &node.netns, "route", "show", "proto", FELIX_PROTOCOL])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let multipath = multipath_routes(&text);
        let _ = writeln!(
            out,
            "{}: {} multipath route(s): {}",
            node.name,
            multipath.len(),
            multipath.join("; ")
        );
    }
}

/// The multipath routes of `ip route show` output, one line each (`dst via A, B`).
pub fn multipath_routes(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut current: Option<(String, Vec<String>)> = None;
    let flush = |c: Option<(String, Vec<String>)>, out: &mut Vec<String>| {
        if let Some((dst, hops)) = c.filter(|(_, h)| h.len() > 1) {
            out.push(format!("{dst} via {}", hops.join(", ")));
        }
    };
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if line.starts_with(char::is_whitespace) {
            if let (Some((_, hops)), Some(i)) =
                (current.as_mut(), words.iter().position(|w| *w == "via"))
                && let Some(gw) = words.get(i + 1)
            {
                hops.push((*gw).to_string());
            }
        } else {
            flush(current.take(), &mut out);
            current = words.first().map(|d| (d.to_string(), Vec::new()));
        }
    }
    flush(current, &mut out);
    out
}

/// The pods, one line each.
fn pods_table(out: &mut String, state: &LabState) {
    let _ = writeln!(
        out,
        "\n==== pods: created by the CNI plugin, namespace {POD_NAMESPACE} ===="
    );
    let _ = writeln!(
        out,
        "{:<10} {:<8} {:<15} {:<16} {:<15}",
        "POD", "NODE", "IP", "NETNS", "HOST VETH"
    );
    for p in &state.pods {
        let _ = writeln!(
            out,
            "{:<10} {:<8} {:<15} {:<16} {:<15}",
            p.name, p.node, p.ip, p.netns, p.interface
        );
        if let Some(ip6) = p.ip6 {
            let _ = writeln!(out, "{:<10} {:<8} {ip6}", "", "");
        }
    }
}

/// What one felix's /metrics says about IPAM leak collection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CollectionMetrics {
    /// It is the elected cluster-wide collector.
    pub elected: bool,
    /// Addresses released, by reason.
    pub released: std::collections::BTreeMap<String, u64>,
    pub empty_blocks: u64,
}

/// Reads the IPAM collection series out of felix's Prometheus text (pure).
pub fn collection_metrics(text: &str) -> CollectionMetrics {
    let mut m = CollectionMetrics::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let v: u64 = value.trim().parse::<f64>().map(|f| f as u64).unwrap_or(0);
        if series == "margay_felix_ipam_collector_elected" {
            m.elected = v == 1;
        } else if series == "margay_felix_ipam_empty_blocks_released_total" {
            m.empty_blocks = v;
        } else if let Some(rest) =
            series.strip_prefix("margay_felix_ipam_released_addresses_total{reason=\"")
        {
            let reason = rest.trim_end_matches("\"}").to_string();
            *m.released.entry(reason).or_default() += v;
        }
    }
    m
}

/// The /metrics text of the felix in namespace `netns` (empty when it does not answer).
pub(super) fn felix_metrics_text(netns: &str) -> String {
    metrics_text(
        netns,
        &format!("http://127.0.0.1:{}", super::health::FELIX_HTTP_PORT),
    )
}

/// `curl BASE/metrics` inside namespace `netns` (empty when nothing answers).
pub(super) fn metrics_text(netns: &str, base: &str) -> String {
    let url = format!("{base}/metrics");
    Command::new("ip")
        .args([
            "netns",
            "exec",
            netns,
            "curl",
            "-s",
            "--max-time",
            "2",
            &url,
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// The IPAM section: the configuration and the elected collector, then one line per node of
/// what its collectors released.
fn ipam_collection(out: &mut String, state: &LabState, tools: &Tools) {
    let _ = writeln!(out, "\n==== IPAM: leak collection ====");
    etcd_margayctl(out, state, tools, &["ipam", "show", "--show-configuration"]);
    let mut collector = None;
    let mut total = 0u64;
    let mut empty = 0u64;
    for node in &state.nodes {
        let m = collection_metrics(&felix_metrics_text(&node.netns));
        if m.elected {
            collector = Some(node.name.clone());
        }
        total += m.released.values().sum::<u64>();
        empty += m.empty_blocks;
        let by: Vec<String> = m.released.iter().map(|(r, n)| format!("{r} {n}")).collect();
        let _ = writeln!(
            out,
            "{}: collector {}, released {}",
            node.name,
            if m.elected { "(elected)" } else { "-" },
            if by.is_empty() {
                "nothing".to_string()
            } else {
                by.join(", ")
            }
        );
    }
    let _ = writeln!(
        out,
        "IPAM collector elected: {}; leaks released: {total} address(es), {empty} empty block(s)",
        collector.as_deref().unwrap_or("none")
    );
}

/// The whole report (without the ping matrix).
pub fn render(state: &LabState, tools: &Tools) -> String {
    let mut out = String::new();
    for node in &state.nodes {
        let _ = writeln!(out, "\n{}", node_header(node));
        let family = state.ip_family;
        if state.no_bgp {
            vxlan_view(&mut out, node, family.has_v4(), family.has_v6());
            continue;
        }
        if state.simulated.is_some() {
            // A thousand simulated peers and routes: those rows are counted below instead.
            let mut status = String::new();
            margayctl(&mut status, tools, node, &["node", "status"]);
            out.push_str(&super::simulated::without_simulated_rows(&status));
            continue;
        }
        margayctl(&mut out, tools, node, &["node", "status"]);
        felix_routes(&mut out, node);
        if state.pool_mode != PoolMode::Never && family.has_v6() {
            // IPv6 VXLAN: the IPv6 device's VTEPs beside the routes through it.
            vxlan_devices(&mut out, node, false, true);
        }
    }
    if let Some(sim) = &state.simulated {
        super::simulated::report_section(&mut out, state, sim);
    }
    if state.no_bgp {
        let _ = writeln!(
            out,
            "\n==== no BGP (networking backend vxlan): no margay-bgpd; felix routes every block \
             from IPAM through the nodes' VTEPs; the ToR only routes between the nodes ===="
        );
        pods_table(&mut out, state);
        ipam_collection(&mut out, state, tools);
        felix_settings_section(&mut out, state, tools);
        super::etcd_section::render(&mut out, state);
        return out;
    }
    for c in &state.calico {
        calico_section(&mut out, c);
    }
    for tor in state.tors() {
        let addrs: Vec<String> = tor.addresses.iter().map(|a| a.to_string()).collect();
        let _ = writeln!(
            out,
            "\n==== {} (BIRD): netns {}, {}, AS {} ====",
            tor.name,
            tor.netns,
            addrs.join(", "),
            tor.asn
        );
        birdc_on(&mut out, tor, &["show", "protocols"]);
        if state.simulated.is_some() {
            birdc_on(&mut out, tor, &["show", "route", "count"]);
            continue;
        }
        birdc_on(&mut out, tor, &["show", "route"]);
        if state.tor2.is_some() {
            birdc_on(&mut out, tor, &["show", "bfd", "sessions"]);
        }
    }
    if state.tor2.is_some() {
        multipath_section(&mut out, state);
    }
    policy_section(&mut out, state, tools);
    pods_table(&mut out, state);
    ipam_collection(&mut out, state, tools);
    felix_settings_section(&mut out, state, tools);
    super::etcd_section::render(&mut out, state);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipath_routes_are_read_from_ip_route_show() {
        let text = "10.100.1.0/26 proto 81 \n\tnexthop via 10.99.1.4 dev eth0 weight 1 \n\tnexthop via 10.99.2.4 dev eth1 weight 1 \n10.100.2.0/26 via 10.99.1.4 dev eth0 proto 81 \nblackhole 10.100.0.0/26 proto 81 \n";
        assert_eq!(
            multipath_routes(text),
            vec!["10.100.1.0/26 via 10.99.1.4, 10.99.2.4".to_string()]
        );
    }

    #[test]
    fn collection_metrics_are_read_from_felix_text() {
        let text = "# HELP margay_felix_ipam_collector_elected 1 while elected.\n\
margay_felix_ipam_collector_elected 1\n\
margay_felix_ipam_released_addresses_total{reason=\"leaked\"} 2\n\
margay_felix_ipam_released_addresses_total{reason=\"deleted_node\"} 3\n\
margay_felix_ipam_empty_blocks_released_total 1\n";
        let m = collection_metrics(text);
        assert!(m.elected);
        assert_eq!(m.released["leaked"], 2);
        assert_eq!(m.released["deleted_node"], 3);
        assert_eq!(m.empty_blocks, 1);
    }
}
