//! BIRD's configuration as calico-node's confd renders it for one node, from Calico's
//! templates `bird.cfg.template`, `bird_aggr.cfg.template` and `bird_ipam.cfg.template`
//! (`confd/etc/calico/confd/templates/` in projectcalico/calico), for the lab's "Calico
//! nodes". Calico runs its own BIRD 1 fork; the lab runs Debian's BIRD 2, so each directive is
//! written in BIRD 2's syntax (import and export live in an `ipv4` channel) with the same
//! meaning:
//!
//! - `router id` is the node's IPv4 address; `protocol kernel` learns alien routes, persists
//!   its routes when BIRD stops, scans every 2 s, takes part in graceful restart and exports
//!   through `calico_kernel_programming`, with metric 0 (BIRD 1's routes carry none; BIRD 2's
//!   default is 32). BIRD 1 never exports device routes to the kernel (`device routes` is
//!   off): BIRD 2 needs that said, as the filter's first line.
//! - `protocol static`: a blackhole for each block the node holds (`bird_aggr`), and
//!   `calico_aggr`: a confirmed block is exported, nothing beneath it.
//! - `calico_export_to_bgp_peers`: pools with BGP export disabled rejected, then
//!   `calico_aggr`, then any route inside a pool, nothing else.
//! - `calico_kernel_programming`: routes inside a VXLAN pool are not programmed (Calico's
//!   felix does it). Inside an IP-in-IP pool Calico's BIRD sets `krt_tunnel = "tunl0"` (a
//!   patch of its fork: the kernel route leaves through tunl0, its gateway onlink); BIRD 2
//!   has no `krt_tunnel`, but its filters may write `ifname` (since 2.0.4) and `onlink`
//!   (since 2.0.12), so the same route is rendered as: keep the gateway, `onlink = true`,
//!   `ifname = "tunl0"`, gateway again, for routes learned by BGP (`bgp_next_hop` defined;
//!   Calico's patch only acts on routes with a gateway). In CrossSubnet mode a next hop
//!   inside the node's own subnet (`network_v4`) keeps its plain route, as the template's
//!   `krt_tunnel = ""`. As in the template, pool branches are rendered only when the node's
//!   subnet is known.
//! - `bgp_template`: `local as`, `multihop`, `gateway recursive`, `import all`, `add paths on`,
//!   `graceful restart`, connect delay 2 s, retry 5 s, error wait 5-30 s; a `Mesh_A_B_C_D`
//!   session per other node with `source address` the node's, `passive on` towards a peer
//!   whose address is greater *as a string* (the template's `gt` on strings), and BGPPeers as
//!   `Global_A_B_C_D` / `Node_A_B_C_D`.

use std::fmt::Write;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// An IPPool as confd reads it (`/v1/ipam/v4/pool/...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfdPool {
    pub cidr: Ipv4Net,
    /// `vxlanMode` is not `Never`.
    pub vxlan: bool,
    pub disable_bgp_export: bool,
    /// `ipipMode` (`ipip_mode` and the `ipip` device name `tunl0` in confd's view); `None`
    /// for `Never`.
    pub ipip: Option<ConfdIpip>,
}

/// An IPPool's `ipipMode` when it is not `Never`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfdIpip {
    Always,
    CrossSubnet,
}

/// The IP-in-IP device, Calico's and margay's.
pub const IPIP_DEVICE: &str = "tunl0";

/// A BGPPeer that applies to this node (`/global/peer_v4/...` or `/host/NODE/peer_v4/...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfdPeer {
    pub ip: Ipv4Addr,
    pub as_num: u32,
    /// A node-specific peer (`Node_`), else global (`Global_`).
    pub node_specific: bool,
}

/// What confd reads from the datastore for one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfdInput {
    pub node_ip: Ipv4Addr,
    /// The cluster's AS (`/global/as_num`), or the node's own.
    pub as_num: u32,
    /// `nodeToNodeMeshEnabled`.
    pub mesh: bool,
    /// Every node's `ip_addr_v4` (this one's is skipped, as the template does).
    pub nodes: Vec<Ipv4Addr>,
    /// This node's block affinities and their state (`confirmed`, `pending`, ...).
    pub blocks: Vec<(Ipv4Net, String)>,
    pub pools: Vec<ConfdPool>,
    pub peers: Vec<ConfdPeer>,
    /// The node's subnet (`/bgp/v1/host/NODE/network_v4`: its address with the prefix
    /// length); without it the kernel filter has no pool branches, as in the template.
    pub network: Option<Ipv4Net>,
}

/// `10.0.0.1` → `10_0_0_1`, as the template names protocols.
fn proto_id(ip: Ipv4Addr) -> String {
    ip.to_string().replace('.', "_")
}

/// The whole `bird.cfg` (with its two includes inlined) for `input`.
pub fn render(input: &ConfdInput) -> String {
    let mut s = String::new();
    // Writing into a String cannot fail; `let _ =` keeps the template readable.
    let _ = writeln!(
        s,
        "# Generated as Calico's confd renders bird.cfg (BIRD 2 syntax)"
    );
    let _ = writeln!(s, "log stderr all;");
    let _ = writeln!(s, "function apply_communities ()\n{{\n}}\n");
    render_aggr(&mut s, input);
    render_ipam(&mut s, input);
    let _ = writeln!(s, "router id {};\n", input.node_ip);
    let _ = writeln!(
        s,
        "protocol kernel {{\n  learn;\n  persist;\n  scan time 2;\n  graceful restart;\n  \
         merge paths on;\n  metric 0;\n  ipv4 {{ import all; export filter calico_kernel_programming; }};\n}}\n"
    );
    let _ = writeln!(
        s,
        "protocol device {{\n  debug {{ states }};\n  scan time 2;\n}}\n"
    );
    let _ = writeln!(
        s,
        "protocol direct {{\n  debug {{ states }};\n  interface -\"cali*\", -\"kube-ipvs*\", \"*\";\n  ipv4;\n}}\n"
    );
    let _ = writeln!(
        s,
        "template bgp bgp_template {{\n  debug {{ states }};\n  description \"Connection to BGP peer\";\n  \
         local as {};\n  multihop;\n  ipv4 {{\n    gateway recursive;\n    import all;\n    \
         export filter calico_export_to_bgp_peers;\n    add paths on;\n  }};\n  graceful restart;\n  \
         connect delay time 2;\n  connect retry time 5;\n  error wait time 5,30;\n}}\n",
        input.as_num
    );
    let _ = writeln!(s, "# ------------- Node-to-node mesh -------------");
    if input.mesh {
        for ip in &input.nodes {
            if *ip == input.node_ip {
                let _ = writeln!(s, "# Skipping ourselves ({ip})");
                continue;
            }
            let _ = writeln!(
                s,
                "protocol bgp Mesh_{} from bgp_template {{\n  neighbor {ip} as {};\n  source address {};",
                proto_id(*ip),
                input.as_num,
                input.node_ip
            );
            if ip.to_string() > input.node_ip.to_string() {
                let _ = writeln!(
                    s,
                    "  passive on; # Mesh is unidirectional, peer will connect to us."
                );
            }
            let _ = writeln!(s, "}}");
        }
    } else {
        let _ = writeln!(s, "# Node-to-node mesh disabled");
    }
    for p in input.peers.iter().filter(|p| p.ip != input.node_ip) {
        let kind = if p.node_specific { "Node" } else { "Global" };
        let _ = writeln!(
            s,
            "protocol bgp {kind}_{} from bgp_template {{\n  neighbor {} as {};\n}}",
            proto_id(p.ip),
            p.ip,
            p.as_num
        );
    }
    s
}

/// `bird_aggr.cfg`: the blocks' blackholes and `calico_aggr`.
fn render_aggr(s: &mut String, input: &ConfdInput) {
    if input.blocks.is_empty() {
        let _ = writeln!(s, "# No IP blocks or static routes for this host.");
    } else {
        let _ = writeln!(
            s,
            "protocol static {{\n  ipv4;\n  # IP blocks for this host."
        );
        for (b, _) in input.blocks.iter().filter(|(b, _)| b.prefix_len() != 32) {
            let _ = writeln!(s, "  route {b} blackhole;");
        }
        let _ = writeln!(s, "}}");
    }
    let _ = writeln!(s, "\nfunction calico_aggr ()\n{{");
    for (b, state) in &input.blocks {
        let _ = writeln!(s, "  # Block {b} is {state}");
        if state == "confirmed" || state.is_empty() {
            let _ = writeln!(
                s,
                "  if ( net = {b} ) then {{ accept; }}\n  if ( net ~ {b} ) then {{ reject; }}"
            );
        }
    }
    let _ = writeln!(s, "}}\n");
}

/// `bird_ipam.cfg`: the export filter towards peers and the kernel programming filter.
fn render_ipam(s: &mut String, input: &ConfdInput) {
    let _ = writeln!(s, "function reject_disabled_pools ()\n{{");
    for p in input.pools.iter().filter(|p| p.disable_bgp_export) {
        let _ = writeln!(s, "  if ( net ~ {} ) then {{ reject; }}", p.cidr);
    }
    let _ = writeln!(s, "}}\n");
    let _ = writeln!(
        s,
        "filter calico_export_to_bgp_peers {{\n  reject_disabled_pools();\n  apply_communities();\n  calico_aggr();"
    );
    for p in &input.pools {
        if p.disable_bgp_export {
            let _ = writeln!(s, "  # Skip {} as BGP export is disabled for it", p.cidr);
        } else {
            let _ = writeln!(s, "  if ( net ~ {} ) then {{\n    accept;\n  }}", p.cidr);
        }
    }
    let _ = writeln!(s, "  reject;\n}}\n");
    let _ = writeln!(
        s,
        "filter calico_kernel_programming\nip nh;\n{{\n  # BIRD 1 never exports device routes to the kernel.\n  if ( source = RTS_DEVICE ) then {{ reject; }}"
    );
    let Some(network) = input.network else {
        let _ = writeln!(s, "  accept;\n}}\n");
        return;
    };
    for p in &input.pools {
        let _ = writeln!(s, "  if ( net ~ {} ) then {{", p.cidr);
        match (p.vxlan, p.ipip) {
            (true, _) => {
                let _ = writeln!(
                    s,
                    "    # Don't program VXLAN routes into the kernel - these are handled by Felix.\n    reject;\n  }}"
                );
            }
            (false, Some(mode)) => {
                // Calico's fork: `krt_tunnel = "tunl0"`. BIRD 2: the same route written
                // through tunl0, onlink, for routes with a BGP next hop.
                let cond = match mode {
                    ConfdIpip::Always => "defined(bgp_next_hop)".to_string(),
                    ConfdIpip::CrossSubnet => {
                        format!("defined(bgp_next_hop) && !( bgp_next_hop ~ {network} )")
                    }
                };
                let _ = writeln!(
                    s,
                    "    if {cond} then {{\n      # krt_tunnel = \"{IPIP_DEVICE}\" in Calico's BIRD.\n      \
                     nh = gw;\n      onlink = true;\n      ifname = \"{IPIP_DEVICE}\";\n      gw = nh;\n    }}\n    accept;\n  }}"
                );
            }
            (false, None) => {
                let _ = writeln!(s, "    accept;\n  }}");
            }
        }
    }
    let _ = writeln!(s, "  accept;\n}}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> ConfdInput {
        ConfdInput {
            node_ip: "10.99.0.3".parse().unwrap(),
            as_num: 64512,
            mesh: true,
            nodes: ["10.99.0.2", "10.99.0.3", "10.99.0.10"]
                .iter()
                .map(|a| a.parse().unwrap())
                .collect(),
            blocks: vec![
                ("10.102.0.64/26".parse().unwrap(), "confirmed".into()),
                ("10.102.0.128/26".parse().unwrap(), "pending".into()),
            ],
            pools: vec![
                ConfdPool {
                    cidr: "10.102.0.0/16".parse().unwrap(),
                    vxlan: false,
                    disable_bgp_export: false,
                    ipip: None,
                },
                ConfdPool {
                    cidr: "10.103.0.0/16".parse().unwrap(),
                    vxlan: true,
                    disable_bgp_export: true,
                    ipip: None,
                },
                ConfdPool {
                    cidr: "10.104.0.0/16".parse().unwrap(),
                    vxlan: false,
                    disable_bgp_export: false,
                    ipip: Some(ConfdIpip::CrossSubnet),
                },
                ConfdPool {
                    cidr: "10.105.0.0/16".parse().unwrap(),
                    vxlan: false,
                    disable_bgp_export: false,
                    ipip: Some(ConfdIpip::Always),
                },
            ],
            peers: vec![ConfdPeer {
                ip: "10.99.0.254".parse().unwrap(),
                as_num: 65000,
                node_specific: false,
            }],
            network: Some("10.99.0.0/24".parse().unwrap()),
        }
    }

    #[test]
    fn renders_calicos_mesh_with_the_string_order_for_passive() {
        let c = render(&input());
        assert!(c.contains("router id 10.99.0.3;"));
        assert!(c.contains("# Skipping ourselves (10.99.0.3)"));
        // "10.99.0.2" > "10.99.0.3" is false: this node connects to it.
        assert!(c.contains(
            "protocol bgp Mesh_10_99_0_2 from bgp_template {\n  neighbor 10.99.0.2 as 64512;\n  source address 10.99.0.3;\n}"
        ));
        // "10.99.0.10" < "10.99.0.3" as strings: also active, as the template's `gt` makes it.
        assert!(c.contains("neighbor 10.99.0.10 as 64512;\n  source address 10.99.0.3;\n}"));
        assert!(c.contains("protocol bgp Global_10_99_0_254 from bgp_template"));
        assert!(c.contains("  graceful restart;\n  connect delay time 2;"));
    }

    #[test]
    fn only_confirmed_blocks_are_aggregated_and_vxlan_pools_stay_out_of_the_kernel() {
        let c = render(&input());
        assert!(
            c.contains("  route 10.102.0.64/26 blackhole;\n  route 10.102.0.128/26 blackhole;")
        );
        assert!(c.contains("if ( net = 10.102.0.64/26 ) then { accept; }"));
        assert!(!c.contains("if ( net = 10.102.0.128/26 )"));
        assert!(c.contains("  if ( net ~ 10.103.0.0/16 ) then { reject; }\n}"));
        assert!(c.contains("# Skip 10.103.0.0/16 as BGP export is disabled for it"));
        assert!(c.contains("  if ( net ~ 10.103.0.0/16 ) then {\n    # Don't program VXLAN"));
    }

    #[test]
    fn ipip_pools_route_bgp_routes_through_tunl0_onlink() {
        let c = render(&input());
        assert!(c.contains("filter calico_kernel_programming\nip nh;\n{"));
        assert!(c.contains(
            "  if ( net ~ 10.105.0.0/16 ) then {\n    if defined(bgp_next_hop) then {\n      \
             # krt_tunnel = \"tunl0\" in Calico's BIRD.\n      nh = gw;\n      onlink = true;\n      \
             ifname = \"tunl0\";\n      gw = nh;\n    }\n    accept;\n  }"
        ));
        // CrossSubnet: a next hop in the node's own subnet keeps the plain route.
        assert!(c.contains(
            "  if ( net ~ 10.104.0.0/16 ) then {\n    if defined(bgp_next_hop) && !( bgp_next_hop ~ 10.99.0.0/24 ) then {"
        ));
        assert!(c.contains("  if ( net ~ 10.102.0.0/16 ) then {\n    accept;\n  }"));
        // Without the node's subnet, no pool branch (as the template's `exists $network_key`).
        let c = render(&ConfdInput {
            network: None,
            ..input()
        });
        assert!(!c.contains("if ( net ~ 10.105.0.0/16 ) then {\n    if"));
    }

    #[test]
    fn bird_2_parses_what_is_rendered() {
        super::super::assert_bird_parses(&render(&input()));
    }
}
