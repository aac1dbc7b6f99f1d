//! BIRD's IPv6 configuration as calico-node's confd renders it for one node, from Calico's
//! templates `bird6.cfg.template`, `bird6_aggr.cfg.template` and `bird6_ipam.cfg.template`
//! (`confd/etc/calico/confd/templates/` in projectcalico/calico). calico-node runs it as a
//! second daemon, `bird6`, beside `bird`; the lab does the same with a second BIRD 2 whose
//! channels are all `ipv6`:
//!
//! - `router id` is the node's IPv4 address (the template: "router id is 4 octets, even in
//!   MP-BGP"); `protocol kernel`, `device` and `direct` as in [`super::confd`], in IPv6.
//!   `metric 0` matters more here: BIRD 1 sends no metric, so the kernel gives its IPv6
//!   routes 1024, and the metric is part of an IPv6 route's identity. With BIRD 2's default
//!   (32) a taker-over writing Calico's routes at 1024 would add a second route beside each.
//! - `protocol static`: a blackhole for each IPv6 block of the node, and `calico_aggr`.
//! - `calico_export_to_bgp_peers`: disabled pools rejected, `calico_aggr`, then any route
//!   inside an IPv6 pool; `calico_kernel_programming`: VXLAN pools out of the kernel, the rest
//!   in (no IP-in-IP for IPv6).
//! - A `Mesh_fd00_99_1__3` session per other node with an `ip_addr_v6` (the address's `:`
//!   replaced by `_`), from the node's IPv6 address, `passive on` towards a greater address
//!   *as a string*, as the template's `gt`.

use std::fmt::Write;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::Ipv6Net;

/// What confd reads for one node's `bird6.cfg`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confd6Input {
    /// The node's IPv4 address: BIRD's router id.
    pub router_id: Ipv4Addr,
    /// `/host/NODE/ip_addr_v6`.
    pub node_ip6: Ipv6Addr,
    pub as_num: u32,
    pub mesh: bool,
    /// Every node's `ip_addr_v6` (this one's is skipped).
    pub nodes: Vec<Ipv6Addr>,
    /// This node's confirmed IPv6 blocks.
    pub blocks: Vec<Ipv6Net>,
    /// IPv6 pools: CIDR and whether its `vxlanMode` is not `Never`.
    pub pools: Vec<(Ipv6Net, bool)>,
    /// Global BGPPeers with an IPv6 `peerIP` (`/global/peer_v6/...`): address and AS.
    pub peers: Vec<(Ipv6Addr, u32)>,
}

/// The whole `bird6.cfg` (with its two includes inlined) for `input`.
pub fn render6(input: &Confd6Input) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Generated as Calico's confd renders bird6.cfg (BIRD 2 syntax)\nlog stderr all;\n\
         function apply_communities ()\n{{\n}}\n"
    );
    // bird6_aggr.cfg
    let _ = writeln!(
        s,
        "protocol static {{\n  ipv6;\n  # IP blocks for this host."
    );
    for b in &input.blocks {
        let _ = writeln!(s, "  route {b} blackhole;");
    }
    let _ = writeln!(s, "}}\n\nfunction calico_aggr ()\n{{");
    for b in &input.blocks {
        let _ = writeln!(
            s,
            "  # Block {b} is confirmed\n  if ( net = {b} ) then {{ accept; }}\n  if ( net ~ {b} ) then {{ reject; }}"
        );
    }
    // bird6_ipam.cfg
    let _ = writeln!(
        s,
        "}}\n\nfilter calico_export_to_bgp_peers {{\n  apply_communities();\n  calico_aggr();"
    );
    for (cidr, _) in &input.pools {
        let _ = writeln!(s, "  if ( net ~ {cidr} ) then {{\n    accept;\n  }}");
    }
    let _ = writeln!(
        s,
        "  reject;\n}}\n\nfilter calico_kernel_programming {{\n  \
         # BIRD 1 never exports device routes to the kernel.\n  if ( source = RTS_DEVICE ) then {{ reject; }}"
    );
    for (cidr, _) in input.pools.iter().filter(|(_, vxlan)| *vxlan) {
        let _ = writeln!(
            s,
            "  if ( net ~ {cidr} ) then {{\n    # Don't program VXLAN routes into the kernel - these are handled by Felix.\n    reject;\n  }}"
        );
    }
    let _ = writeln!(s, "  accept;\n}}\n");
    // bird6.cfg
    let _ = writeln!(
        s,
        "router id {};  # Use IPv4 address since router id is 4 octets, even in MP-BGP\n\n\
         protocol kernel {{\n  learn;\n  persist;\n  scan time 2;\n  graceful restart;\n  \
         merge paths on;\n  metric 0;\n  ipv6 {{ import all; export filter calico_kernel_programming; }};\n}}\n\n\
         protocol device {{\n  debug {{ states }};\n  scan time 2;\n}}\n\n\
         protocol direct {{\n  debug {{ states }};\n  interface -\"cali*\", -\"kube-ipvs*\", \"*\";\n  ipv6;\n}}\n\n\
         template bgp bgp_template {{\n  debug {{ states }};\n  description \"Connection to BGP peer\";\n  \
         local as {};\n  multihop;\n  ipv6 {{\n    gateway recursive;\n    import all;\n    \
         export filter calico_export_to_bgp_peers;\n    add paths on;\n  }};\n  graceful restart;\n  \
         connect delay time 2;\n  connect retry time 5;\n  error wait time 5,30;\n}}\n\n\
         # ------------- Node-to-node mesh -------------",
        input.router_id, input.as_num
    );
    let me = input.node_ip6.to_string();
    for (ip, asn) in &input.peers {
        let _ = writeln!(
            s,
            "protocol bgp Global_{} from bgp_template {{\n  neighbor {ip} as {asn};\n}}",
            ip.to_string().replace(':', "_")
        );
    }
    if !input.mesh {
        let _ = writeln!(s, "# Node-to-node mesh disabled");
        return s;
    }
    for ip in input.nodes.iter().map(Ipv6Addr::to_string) {
        if ip == me {
            let _ = writeln!(s, "# Skipping ourselves ({me})");
            continue;
        }
        let passive = if ip > me {
            "\n  passive on; # Mesh is unidirectional, peer will connect to us."
        } else {
            ""
        };
        let _ = writeln!(
            s,
            "protocol bgp {} from bgp_template {{\n  neighbor {ip} as {};\n  \
             source address {me};{passive}\n}}",
            mesh6_proto(&ip),
            input.as_num
        );
    }
    s
}

/// BIRD's name for the IPv6 mesh session with `ip` (`Mesh_fd00_99_1__3`).
pub fn mesh6_proto(ip: &str) -> String {
    format!("Mesh_{}", ip.replace(':', "_"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> Confd6Input {
        Confd6Input {
            router_id: "10.99.0.3".parse().unwrap(),
            node_ip6: "fd00:99::3".parse().unwrap(),
            as_num: 64512,
            mesh: true,
            nodes: ["fd00:99::2", "fd00:99::3", "fd00:99::a"]
                .iter()
                .map(|a| a.parse().unwrap())
                .collect(),
            blocks: vec!["fd00:102::40/122".parse().unwrap()],
            pools: vec![
                ("fd00:102::/112".parse().unwrap(), false),
                ("fd00:103::/112".parse().unwrap(), true),
            ],
            peers: vec![("fd00:99::fe".parse().unwrap(), 65000)],
        }
    }

    #[test]
    fn renders_the_ipv6_mesh_with_the_ipv4_router_id() {
        let c = render6(&input());
        assert!(c.contains("router id 10.99.0.3;"));
        assert!(c.contains(
            "  metric 0;\n  ipv6 { import all; export filter calico_kernel_programming; };"
        ));
        assert!(c.contains("# Skipping ourselves (fd00:99::3)"));
        assert!(c.contains(
            "protocol bgp Mesh_fd00_99__2 from bgp_template {\n  neighbor fd00:99::2 as 64512;\n  \
             source address fd00:99::3;\n}"
        ));
        // "fd00:99::a" > "fd00:99::3" as strings: it connects to us.
        assert!(c.contains(
            "neighbor fd00:99::a as 64512;\n  source address fd00:99::3;\n  passive on;"
        ));
        assert!(c.contains(
            "protocol bgp Global_fd00_99__fe from bgp_template {\n  neighbor fd00:99::fe as 65000;\n}"
        ));
        assert!(c.contains("  route fd00:102::40/122 blackhole;"));
        assert!(c.contains("if ( net = fd00:102::40/122 ) then { accept; }"));
        assert!(c.contains("  if ( net ~ fd00:103::/112 ) then {\n    # Don't program VXLAN"));
    }

    #[test]
    fn bird_2_parses_the_ipv6_configuration() {
        super::super::assert_bird_parses(&render6(&input()));
    }
}
