//! BIRD 2 configuration as a small struct, rendered to `bird.conf` text.
//!
//! No kernel protocol unless asked ([`BirdConfig::program_kernel`], the lab's ToR that routes
//! packets): otherwise BIRD never touches the namespace's FIB, routes stay in its tables where
//! birdc shows them. Originated prefixes are static blackhole routes. iBGP sessions without
//! multihop are marked `direct`, so next hops on the shared segment resolve without an IGP.

use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;

/// The whole daemon's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BirdConfig {
    pub router_id: Ipv4Addr,
    /// Prefixes to originate (static blackhole routes, exported by `ExportPolicy::Static`).
    pub originate: Vec<IpNet>,
    pub neighbors: Vec<BirdNeighbor>,
    /// Export the best routes into the namespace's kernel table (a kernel protocol).
    pub kernel: bool,
    /// The kernel protocols take part in graceful restart recovery (`bird -R`): they leave the
    /// kernel table alone until every BGP peer has sent End-of-RIB, so a restarted BIRD does
    /// not flush the routes it left behind.
    pub kernel_graceful_restart: bool,
    /// `protocol bfd` with these timers on every interface (min rx ms, min tx ms, multiplier);
    /// sessions are those of neighbours with [`BirdNeighbor::bfd`].
    pub bfd: Option<(u32, u32, u8)>,
    /// BFD sessions of their own (`neighbor A;` in `protocol bfd`), without a BGP session.
    pub bfd_neighbors: Vec<IpAddr>,
}

/// Which routes a channel exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportPolicy {
    /// `export all;`
    All,
    /// `export where source = RTS_STATIC;` (only what this daemon originates)
    Static,
    /// `export none;`
    None,
}

/// The channel's next-hop handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextHop {
    /// BIRD's default for the session type.
    Default,
    /// `next hop self;`
    MySelf,
    /// `next hop keep;`
    Keep,
}

/// An address family channel (`ipv4 { ... }` or `ipv6 { ... }`), always `import all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Channel {
    pub export: ExportPolicy,
    pub next_hop: NextHop,
}

impl Default for Channel {
    fn default() -> Self {
        Channel {
            export: ExportPolicy::All,
            next_hop: NextHop::Default,
        }
    }
}

/// One `protocol bgp NAME { ... }` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BirdNeighbor {
    /// The protocol's name in birdc (`show protocols`): letters, digits and `_`, and not a
    /// BIRD keyword (`rr`, `bgp`, `direct`, `static`, ... fail to parse).
    pub name: String,
    pub address: IpAddr,
    pub local_address: Option<IpAddr>,
    pub local_as: u32,
    pub neighbor_as: u32,
    pub passive: bool,
    pub rr_client: bool,
    pub rr_cluster_id: Option<Ipv4Addr>,
    pub password: Option<String>,
    /// `multihop N;` when set; otherwise the session is direct.
    pub multihop: Option<u8>,
    /// `ttl security on;` (GTSM, RFC 5082): BIRD sends with TTL 255 and accepts only packets
    /// at most `multihop` hops away (1 when direct).
    pub ttl_security: bool,
    pub ipv4: Option<Channel>,
    pub ipv6: Option<Channel>,
    pub graceful_restart: bool,
    /// `graceful restart time N;`: how long BIRD keeps the peer's routes while it restarts
    /// (BIRD's default 120 s when unset).
    pub graceful_restart_time: Option<u16>,
    pub hold_time: u16,
    pub connect_retry: u16,
    /// Non-standard neighbour port (margay-bgpd on another port).
    pub port: Option<u16>,
    /// A listen range instead of one address (BIRD 2's dynamic BGP: `neighbor range P as N;`):
    /// any router connecting from `P` gets a session of its own, spawned from this protocol
    /// and named `dynamic_name` + a number. Passive by nature.
    pub range: Option<IpNet>,
    /// The name stem of the sessions a listen range spawns (`dynamic name "...";`).
    pub dynamic_name: Option<String>,
    /// `bfd on;`: the session follows its BFD session (needs [`BirdConfig::bfd`]).
    pub bfd: bool,
    /// `bfd graceful;` instead: a BFD Down is handled as a graceful restart of the peer.
    pub bfd_graceful: bool,
}

impl BirdNeighbor {
    /// A session to `address`: the address's family's channel with `export all`, hold time
    /// 9 s, connect retry 1 s, graceful restart off.
    pub fn new(name: &str, address: IpAddr, local_as: u32, neighbor_as: u32) -> BirdNeighbor {
        let (ipv4, ipv6) = match address {
            IpAddr::V4(_) => (Some(Channel::default()), None),
            IpAddr::V6(_) => (None, Some(Channel::default())),
        };
        BirdNeighbor {
            name: name.to_string(),
            address,
            local_address: None,
            local_as,
            neighbor_as,
            passive: false,
            rr_client: false,
            rr_cluster_id: None,
            password: None,
            multihop: None,
            ttl_security: false,
            ipv4,
            ipv6,
            graceful_restart: false,
            graceful_restart_time: None,
            hold_time: 9,
            connect_retry: 1,
            port: None,
            range: None,
            dynamic_name: None,
            bfd: false,
            bfd_graceful: false,
        }
    }

    /// A listen range: sessions with any router that connects from `range` (BIRD 2's dynamic
    /// BGP), spawned as `stem1`, `stem2`, ...; otherwise as [`BirdNeighbor::new`].
    pub fn listen_range(
        name: &str,
        range: IpNet,
        stem: &str,
        local_as: u32,
        neighbor_as: u32,
    ) -> BirdNeighbor {
        let mut n = BirdNeighbor::new(name, range.network(), local_as, neighbor_as);
        n.range = Some(range);
        n.dynamic_name = Some(stem.to_string());
        n
    }

    /// GTSM with a peer `hops` away: `ttl security on; multihop HOPS;`, as Calico's BIRD
    /// configuration writes a BGPPeer's `ttlSecurity`.
    pub fn ttl_security(mut self, hops: u8) -> Self {
        self.ttl_security = true;
        self.multihop = Some(hops);
        self
    }

    /// Sets the export policy of every channel.
    pub fn export(mut self, policy: ExportPolicy) -> Self {
        for ch in [&mut self.ipv4, &mut self.ipv6].into_iter().flatten() {
            ch.export = policy;
        }
        self
    }

    /// Sets the next-hop mode of every channel.
    pub fn next_hop(mut self, mode: NextHop) -> Self {
        for ch in [&mut self.ipv4, &mut self.ipv6].into_iter().flatten() {
            ch.next_hop = mode;
        }
        self
    }

    /// Turns graceful restart on (RFC 4724), with restart time `time` (BIRD's default if None).
    pub fn graceful_restart(mut self, time: Option<u16>) -> Self {
        self.graceful_restart = true;
        self.graceful_restart_time = time;
        self
    }

    /// Marks the neighbour a route reflector client.
    pub fn rr_client(mut self) -> Self {
        self.rr_client = true;
        self
    }

    /// Sets the route reflector cluster id.
    pub fn rr_cluster_id(mut self, id: Ipv4Addr) -> Self {
        self.rr_cluster_id = Some(id);
        self
    }

    /// TCP-MD5 password (RFC 2385).
    pub fn password(mut self, password: &str) -> Self {
        self.password = Some(password.to_string());
        self
    }

    /// Waits for the neighbour to connect.
    pub fn passive(mut self) -> Self {
        self.passive = true;
        self
    }

    /// Enables both the IPv4 and IPv6 channels (the same policy for both).
    pub fn dual_stack(mut self) -> Self {
        let ch = self.ipv4.or(self.ipv6).unwrap_or_default();
        self.ipv4 = Some(ch);
        self.ipv6 = Some(ch);
        self
    }

    fn is_ibgp(&self) -> bool {
        self.local_as == self.neighbor_as
    }
}

impl BirdConfig {
    /// A daemon with router id `router_id`, nothing originated, no neighbours.
    pub fn new(router_id: Ipv4Addr) -> BirdConfig {
        BirdConfig {
            router_id,
            originate: Vec::new(),
            neighbors: Vec::new(),
            kernel: false,
            kernel_graceful_restart: false,
            bfd: None,
            bfd_neighbors: Vec::new(),
        }
    }

    /// Runs BFD (`protocol bfd`) at these timers for the neighbours with `bfd on`.
    pub fn bfd(mut self, min_rx_ms: u32, min_tx_ms: u32, multiplier: u8) -> Self {
        self.bfd = Some((min_rx_ms, min_tx_ms, multiplier));
        self
    }

    /// Adds a prefix to originate.
    pub fn originate(mut self, prefix: IpNet) -> Self {
        self.originate.push(prefix);
        self
    }

    /// Adds a neighbour.
    pub fn neighbor(mut self, n: BirdNeighbor) -> Self {
        self.neighbors.push(n);
        self
    }

    /// Installs the best routes in the kernel, so the namespace forwards along them.
    pub fn program_kernel(mut self) -> Self {
        self.kernel = true;
        self
    }

    /// Lets the kernel protocols wait for graceful restart recovery (see
    /// [`BirdConfig::kernel_graceful_restart`]).
    pub fn kernel_graceful_restart(mut self) -> Self {
        self.kernel_graceful_restart = true;
        self
    }

    /// The `bird.conf` text.
    pub fn render(&self) -> String {
        let mut s = String::new();
        // Writing into a String cannot fail; `let _ =` keeps the template readable.
        let _ = writeln!(s, "# rendered by margay-lab");
        let _ = writeln!(s, "router id {};", self.router_id);
        let _ = writeln!(s, "log stderr all;");
        let _ = writeln!(s, "debug protocols {{ states, events }};");
        let _ = writeln!(s, "protocol device {{ }}");
        if self.kernel {
            let gr = if self.kernel_graceful_restart {
                " graceful restart on;"
            } else {
                ""
            };
            let _ = writeln!(
                s,
                "protocol kernel kernel4 {{ ipv4 {{ export all; }};{gr} }}"
            );
            let _ = writeln!(
                s,
                "protocol kernel kernel6 {{ ipv6 {{ export all; }};{gr} }}"
            );
        }
        for (name, v4) in [("static4", true), ("static6", false)] {
            let routes: Vec<&IpNet> = self
                .originate
                .iter()
                .filter(|p| matches!(p, IpNet::V4(_)) == v4)
                .collect();
            if routes.is_empty() {
                continue;
            }
            let _ = writeln!(
                s,
                "protocol static {name} {{\n  {};",
                if v4 { "ipv4" } else { "ipv6" }
            );
            for r in routes {
                let _ = writeln!(s, "  route {r} blackhole;");
            }
            let _ = writeln!(s, "}}");
        }
        if let Some((rx, tx, mult)) = self.bfd {
            let _ = writeln!(
                s,
                "protocol bfd {{ interface \"*\" {{ min rx interval {rx} ms; min tx interval {tx} ms; idle tx interval 1000 ms; multiplier {mult}; }};"
            );
            for n in &self.bfd_neighbors {
                let _ = writeln!(s, "  neighbor {n};");
            }
            let _ = writeln!(s, "}}");
        }
        for n in &self.neighbors {
            render_neighbor(&mut s, n);
        }
        s
    }
}

fn render_neighbor(s: &mut String, n: &BirdNeighbor) {
    let _ = writeln!(s, "protocol bgp {} {{", n.name);
    match n.local_address {
        Some(a) => _ = writeln!(s, "  local {a} as {};", n.local_as),
        None => _ = writeln!(s, "  local as {};", n.local_as),
    }
    match (n.range, n.port) {
        (Some(r), _) => _ = writeln!(s, "  neighbor range {r} as {};", n.neighbor_as),
        (None, Some(p)) => {
            _ = writeln!(s, "  neighbor {} port {p} as {};", n.address, n.neighbor_as)
        }
        (None, None) => _ = writeln!(s, "  neighbor {} as {};", n.address, n.neighbor_as),
    }
    if let Some(stem) = &n.dynamic_name {
        let _ = writeln!(s, "  dynamic name \"{stem}\";");
    }
    match n.multihop {
        Some(h) => _ = writeln!(s, "  multihop {h};"),
        None if n.is_ibgp() => _ = writeln!(s, "  direct;"),
        None => {}
    }
    if n.ttl_security {
        let _ = writeln!(s, "  ttl security on;");
    }
    if n.bfd_graceful {
        let _ = writeln!(s, "  bfd graceful;");
    } else if n.bfd {
        let _ = writeln!(s, "  bfd on;");
    }
    if n.passive {
        let _ = writeln!(s, "  passive on;");
    }
    if n.rr_client {
        let _ = writeln!(s, "  rr client;");
    }
    if let Some(id) = n.rr_cluster_id {
        let _ = writeln!(s, "  rr cluster id {id};");
    }
    if let Some(p) = &n.password {
        let _ = writeln!(
            s,
            "  password \"{}\";",
            p.replace('\\', "\\\\").replace('"', "\\\"")
        );
    }
    let _ = writeln!(
        s,
        "  graceful restart {};",
        if n.graceful_restart { "on" } else { "off" }
    );
    if let Some(t) = n.graceful_restart_time {
        let _ = writeln!(s, "  graceful restart time {t};");
    }
    let _ = writeln!(s, "  hold time {};", n.hold_time);
    let _ = writeln!(s, "  connect retry time {};", n.connect_retry);
    // Retry fast after a failed attempt or an error, so a restarted peer comes back in seconds.
    let _ = writeln!(s, "  connect delay time 1;");
    let _ = writeln!(s, "  error wait time 1, 5;");
    for (fam, ch) in [("ipv4", n.ipv4), ("ipv6", n.ipv6)] {
        let Some(ch) = ch else { continue };
        let export = match ch.export {
            ExportPolicy::All => "export all;",
            ExportPolicy::Static => "export where source = RTS_STATIC;",
            ExportPolicy::None => "export none;",
        };
        let nh = match ch.next_hop {
            NextHop::Default => "",
            NextHop::MySelf => " next hop self;",
            NextHop::Keep => " next hop keep;",
        };
        let _ = writeln!(s, "  {fam} {{ import all; {export}{nh} }};");
    }
    let _ = writeln!(s, "}}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_ibgp_reflector_client_as_direct_session() {
        let conf = BirdConfig::new("10.99.1.1".parse().unwrap())
            .originate("10.1.1.0/26".parse().unwrap())
            .neighbor(
                BirdNeighbor::new("c1", "10.99.1.2".parse().unwrap(), 65000, 65000)
                    .rr_client()
                    .rr_cluster_id("1.1.1.1".parse().unwrap())
                    .export(ExportPolicy::Static)
                    .next_hop(NextHop::MySelf),
            )
            .render();
        assert!(conf.contains("router id 10.99.1.1;"));
        assert!(
            conf.contains("protocol static static4 {\n  ipv4;\n  route 10.1.1.0/26 blackhole;\n}")
        );
        assert!(!conf.contains("static6"));
        assert!(!conf.contains("protocol kernel"));
        assert!(conf.contains("  neighbor 10.99.1.2 as 65000;\n  direct;\n"));
        assert!(conf.contains("  rr client;\n  rr cluster id 1.1.1.1;\n"));
        assert!(
            conf.contains(
                "  ipv4 { import all; export where source = RTS_STATIC; next hop self; };"
            )
        );
        assert!(conf.contains("  connect retry time 1;"));
        assert!(!conf.contains("ipv6 {"));
    }

    #[test]
    fn renders_ebgp_with_password_and_both_families() {
        let conf = BirdConfig::new("10.99.1.1".parse().unwrap())
            .originate("fd00:1:1::/122".parse().unwrap())
            .neighbor(
                BirdNeighbor::new("tor", "fd00:99:1::2".parse().unwrap(), 65100, 65000)
                    .password("s\"ecret")
                    .passive()
                    .dual_stack(),
            )
            .render();
        assert!(
            conf.contains("protocol static static6 {\n  ipv6;\n  route fd00:1:1::/122 blackhole;")
        );
        assert!(conf.contains("  neighbor fd00:99:1::2 as 65000;\n  passive on;\n"));
        assert!(!conf.contains("direct;"));
        assert!(conf.contains("  password \"s\\\"ecret\";"));
        assert!(conf.contains("  ipv4 { import all; export all; };"));
        assert!(conf.contains("  ipv6 { import all; export all; };"));
        assert!(conf.contains("  graceful restart off;"));
    }

    #[test]
    fn renders_a_listen_range_as_dynamic_bgp() {
        let conf = BirdConfig::new("10.99.1.1".parse().unwrap())
            .neighbor(BirdNeighbor::listen_range(
                "joiners_a",
                "10.99.1.0/24".parse().unwrap(),
                "joined",
                65100,
                64512,
            ))
            .render();
        assert!(
            conf.contains("  neighbor range 10.99.1.0/24 as 64512;\n  dynamic name \"joined\";\n"),
            "{conf}"
        );
    }
}
