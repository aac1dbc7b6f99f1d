//! The `margay-bgpd --config FILE` TOML file: parsing, defaults and validation.
//!
//! A bad file is rejected with the line and the field at fault: syntax and type errors come from
//! the TOML parser with their span; semantic checks (duplicate neighbours, hold times, a
//! password on a passive-less ...) carry the span of the offending value.

use crate::policy::config::{AdvertiseConfig, FilterConfig, Invalid, PoolConfig};
use crate::policy::{ExportPolicy, Filter, FilterChain, Role};
use ipnet::IpNet;
use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use toml::Spanned;

/// Default path of the gRPC unix socket.
pub const DEFAULT_SOCKET: &str = "/var/run/margay/bgpd.sock";

/// Why a configuration was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

/// The daemon's configuration.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    /// BGP identifier (RFC 4271 §4.2), conventionally the node's IPv4 address.
    pub router_id: Spanned<Ipv4Addr>,
    /// Our autonomous system.
    pub asn: Spanned<u32>,
    /// Address to accept BGP connections on; `::` accepts IPv4 and IPv6.
    #[serde(default = "default_listen_address")]
    pub listen_address: IpAddr,
    /// TCP port to accept BGP connections on (0: accept none, only connect out).
    #[serde(default = "default_listen_port")]
    pub listen_port: u16,
    /// UDP port of single-hop BFD, ours and the peers' (3784, RFC 5881; tests change it).
    #[serde(default = "default_bfd_port")]
    pub bfd_port: u16,
    /// The `margay.bgp.v1` gRPC unix socket.
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    /// Route reflector cluster id (RFC 4456); set on a node that reflects for its clients.
    #[serde(default)]
    pub cluster_id: Option<Spanned<Ipv4Addr>>,
    /// Address the health and metrics HTTP server listens on.
    #[serde(default = "default_http_address")]
    pub http_address: IpAddr,
    /// Port of the health (`/liveness`, `/readiness`) and metrics (`/metrics`) server; 0 turns it off.
    #[serde(default = "default_http_port")]
    pub http_port: u16,
    /// Prefixes this speaker originates.
    #[serde(default)]
    pub originate: Vec<Spanned<IpNet>>,
    /// Offer graceful restart (RFC 4724) to every neighbour unless it says otherwise: peers keep
    /// our routes while we restart, and we keep theirs while they do.
    #[serde(default = "default_true")]
    pub graceful_restart: bool,
    /// Seconds our peers keep our routes while we restart (at most 4095).
    #[serde(default = "default_restart_time")]
    pub restart_time: Spanned<u16>,
    /// Most paths one multipath (ECMP) route may use: learned paths equal up to the router id
    /// and peer address tie breaks, eBGP and iBGP alike (1 turns multipath off; at most 64).
    #[serde(default = "default_max_paths")]
    pub max_paths: Spanned<u32>,
    /// The BGP neighbours.
    #[serde(default)]
    pub neighbors: Vec<Neighbor>,
    /// The cluster's IP pools: Calico's default export policy announces learned cluster routes
    /// inside them, and nothing inside a pool with `export = false`.
    #[serde(default)]
    pub pools: Vec<PoolConfig>,
    /// Communities attached to every announced route inside a cidr.
    #[serde(default)]
    pub advertise: Vec<AdvertiseConfig>,
    /// BGP filters, applied to the neighbours that name them in `filters`.
    #[serde(default)]
    pub filters: Vec<FilterConfig>,
    /// Whether an API client (felix) sets what this node originates, so End-of-RIB waits for
    /// it after start (`speaker::eor`). Set by cluster mode; a configuration file originates
    /// its own prefixes and sends End-of-RIB at once.
    #[serde(skip)]
    pub await_originator: bool,
    /// Longest End-of-RIB waits after start for an API client (felix) to set what this node
    /// originates (`speaker::eor`), in seconds; 0 sends it at once. Set in a file, End-of-RIB
    /// waits for such a client in file mode too. Default in cluster mode:
    /// [`crate::speaker::DEFAULT_ORIGINATE_WAIT`].
    #[serde(default)]
    pub originate_wait: Option<Spanned<u16>>,
}

/// How a neighbour appears in `margayctl node status` (Calico's peer types).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum PeerType {
    /// `node-to-node mesh`
    Mesh,
    /// `global`: a BGPPeer without a node selector
    Global,
    /// `node specific`: a BGPPeer for this node
    NodeSpecific,
    /// `route reflector client`
    RouteReflectorClient,
    /// `route reflector`: a reflector this node is a client of
    RouteReflector,
}

impl PeerType {
    /// The label operators know from `calicoctl node status`.
    pub fn label(self) -> &'static str {
        match self {
            PeerType::Mesh => "node-to-node mesh",
            PeerType::Global => "global",
            PeerType::NodeSpecific => "node specific",
            PeerType::RouteReflectorClient => "route reflector client",
            PeerType::RouteReflector => "route reflector",
        }
    }
}

/// What NEXT_HOP a neighbour receives.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum NextHop {
    /// Our own address on the session.
    #[serde(rename = "self")]
    SelfAddr,
    /// The next hop as received.
    Keep,
}

/// One `[[neighbors]]` table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Neighbor {
    pub address: Spanned<IpAddr>,
    pub asn: u32,
    #[serde(default = "default_peer_port")]
    pub port: u16,
    /// Wait for the neighbour to connect; never connect out.
    #[serde(default)]
    pub passive: bool,
    /// TCP-MD5 password (RFC 2385).
    #[serde(default)]
    pub password: Option<margay_common::Secret>,
    #[serde(default)]
    pub route_reflector_client: bool,
    #[serde(default)]
    pub next_hop: Option<NextHop>,
    /// Proposed hold time in seconds: 0 (no keepalives) or at least 3.
    #[serde(default = "default_hold_time")]
    pub hold_time: Spanned<u16>,
    /// Seconds between KEEPALIVEs (Calico's BGPPeer `keepaliveTime`); a third of the
    /// negotiated hold time by default.
    #[serde(default)]
    pub keepalive_time: Option<Spanned<u16>>,
    /// Seconds between connection attempts.
    #[serde(default = "default_connect_retry")]
    pub connect_retry: Spanned<u16>,
    /// eBGP multihop: the TTL of our packets.
    #[serde(default)]
    pub multihop: Option<Spanned<u8>>,
    /// GTSM (RFC 5082): accept only packets at most this many hops away.
    #[serde(default)]
    pub ttl_security: Option<Spanned<u8>>,
    /// Source address for the connection.
    #[serde(default)]
    pub source_address: Option<IpAddr>,
    #[serde(default)]
    pub description: Option<String>,
    /// Address families the session carries: `ipv4`, `ipv6`. By default the family of the
    /// neighbour's address only, as Calico runs one BIRD session per family: an IPv6 route
    /// over an IPv4 session could only carry an IPv4-mapped next hop, which no kernel forwards to.
    #[serde(default)]
    pub families: Option<Vec<AddressFamily>>,
    /// Label for `node status`; by default derived from the session (see [`Neighbor::peer_type`]).
    #[serde(default, rename = "type")]
    pub peer_type: Option<PeerType>,
    /// Graceful restart with this neighbour; the file's `graceful-restart` by default.
    #[serde(default)]
    pub graceful_restart: Option<bool>,
    /// Restart time offered to this neighbour; the file's `restart-time` by default.
    #[serde(default)]
    pub restart_time: Option<Spanned<u16>>,
    /// Most prefixes accepted from the neighbour in each address family of the session
    /// (counted separately per family); no limit by default.
    #[serde(default)]
    pub max_prefixes: Option<Spanned<u32>>,
    /// What exceeding `max-prefixes` does: `warn` (log and count, keep the session) or `cease`.
    #[serde(default)]
    pub max_prefix_action: Option<Spanned<MaxPrefixAction>>,
    /// After a `cease` for too many prefixes, seconds before the session may start again.
    #[serde(default)]
    pub max_prefix_restart: Option<Spanned<u16>>,
    /// Names of `[[filters]]` applied to this neighbour, in order (first match wins).
    #[serde(default)]
    pub filters: Vec<Spanned<String>>,
    /// `cluster` or `external`; by default cluster for iBGP (same asn), external for eBGP.
    #[serde(default)]
    pub role: Option<Role>,
    /// The AS presented to this neighbour instead of `asn` (Calico's `localASNumber`).
    #[serde(default)]
    pub local_asn: Option<Spanned<u32>>,
    /// How often our own AS may appear in a received AS_PATH (allowas-in).
    #[serde(default)]
    pub allow_own_as: Option<Spanned<u8>>,
    /// BFD with this neighbour (RFC 5880/5881, single hop): when its session goes down, the
    /// BGP session closes at once and its routes are withdrawn (RFC 5882).
    #[serde(default)]
    pub bfd: bool,
    /// BFD desired min TX interval in milliseconds (300).
    #[serde(default)]
    pub bfd_min_tx_ms: Option<u32>,
    /// BFD required min RX interval in milliseconds (300).
    #[serde(default)]
    pub bfd_min_rx_ms: Option<u32>,
    /// BFD detect multiplier (3).
    #[serde(default)]
    pub bfd_multiplier: Option<u8>,
}

/// What the speaker does when a neighbour sends more prefixes than `max-prefixes`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum MaxPrefixAction {
    /// Log a warning and count it in the metrics; the session stays up.
    Warn,
    /// Close the session with Cease / Maximum Number of Prefixes Reached (RFC 4486) and drop
    /// its routes; it starts again after `max-prefix-restart` seconds.
    Cease,
}

/// A neighbour's prefix limit, as the speaker applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixLimit {
    /// Most prefixes per address family.
    pub max: u32,
    pub action: MaxPrefixAction,
    /// Delay before a session closed by the limit starts again.
    pub restart: std::time::Duration,
}

/// Seconds a session closed by the prefix limit waits before starting again, by default.
pub const DEFAULT_MAX_PREFIX_RESTART: u16 = 60;

/// An address family as the configuration names it.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum AddressFamily {
    Ipv4,
    Ipv6,
}

impl Neighbor {
    /// The BFD timers when BFD is on.
    pub fn bfd_timers(&self) -> Option<crate::bfd::Timers> {
        let d = crate::bfd::Timers::default();
        let ms = |v: Option<u32>, default: Duration| {
            v.map_or(default, |v| Duration::from_millis(u64::from(v)))
        };
        self.bfd.then(|| crate::bfd::Timers {
            desired_min_tx: ms(self.bfd_min_tx_ms, d.desired_min_tx),
            required_min_rx: ms(self.bfd_min_rx_ms, d.required_min_rx),
            detect_mult: self.bfd_multiplier.unwrap_or(d.detect_mult),
        })
    }

    fn bfd_error(&self) -> Option<&'static str> {
        let bad_ms = |v: Option<u32>| v.is_some_and(|v| !(10..=60_000).contains(&v));
        if bad_ms(self.bfd_min_tx_ms) || bad_ms(self.bfd_min_rx_ms) {
            Some("bfd-min-tx-ms and bfd-min-rx-ms must be 10 to 60000")
        } else if self.bfd_multiplier == Some(0) {
            Some("bfd-multiplier must be 1 to 255")
        } else {
            None
        }
    }

    /// The prefix limit, if `max-prefixes` is set (`cease` by default, as BIRD's `import limit`
    /// defaults to disabling the session).
    pub fn prefix_limit(&self) -> Option<PrefixLimit> {
        let max = *self.max_prefixes.as_ref()?.get_ref();
        Some(PrefixLimit {
            max,
            action: self
                .max_prefix_action
                .as_ref()
                .map_or(MaxPrefixAction::Cease, |a| *a.get_ref()),
            restart: std::time::Duration::from_secs(u64::from(
                self.max_prefix_restart
                    .as_ref()
                    .map_or(DEFAULT_MAX_PREFIX_RESTART, |r| *r.get_ref()),
            )),
        })
    }

    /// The families the session offers: the configured ones, else the address's own.
    pub fn families(&self) -> Vec<crate::wire::Family> {
        use crate::wire::Family;
        match &self.families {
            Some(list) => list
                .iter()
                .map(|f| match f {
                    AddressFamily::Ipv4 => Family::Ipv4Unicast,
                    AddressFamily::Ipv6 => Family::Ipv6Unicast,
                })
                .collect(),
            None => match self.address.get_ref() {
                IpAddr::V4(_) => vec![Family::Ipv4Unicast],
                IpAddr::V6(_) => vec![Family::Ipv6Unicast],
            },
        }
    }

    /// The neighbour's role: the configured one, else cluster when it is in our AS (as
    /// presented on this session) and external otherwise.
    pub fn role(&self, local_asn: u32) -> Role {
        self.role
            .unwrap_or(if self.asn == self.local_asn(local_asn) {
                Role::Cluster
            } else {
                Role::External
            })
    }

    /// The AS presented on this session.
    pub fn local_asn(&self, local_asn: u32) -> u32 {
        self.local_asn.as_ref().map_or(local_asn, |a| *a.get_ref())
    }

    /// How often our AS may appear in a received AS_PATH (0: never).
    pub fn allow_own_as(&self) -> u8 {
        self.allow_own_as.as_ref().map_or(0, |a| *a.get_ref())
    }

    /// The label shown in `node status`: the configured one, else route reflector client, else
    /// node-to-node mesh for an iBGP peer and global for an eBGP one.
    pub fn peer_type(&self, local_asn: u32) -> PeerType {
        if let Some(t) = self.peer_type {
            t
        } else if self.route_reflector_client {
            PeerType::RouteReflectorClient
        } else if self.asn == self.local_asn(local_asn) {
            PeerType::Mesh
        } else {
            PeerType::Global
        }
    }
}

fn default_listen_address() -> IpAddr {
    IpAddr::V6(Ipv6Addr::UNSPECIFIED)
}
fn default_bfd_port() -> u16 {
    crate::bfd::udp::CONTROL_PORT
}

fn default_listen_port() -> u16 {
    179
}
fn default_socket() -> PathBuf {
    PathBuf::from(DEFAULT_SOCKET)
}
fn default_http_address() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}
fn default_true() -> bool {
    true
}
/// Default of `max-paths`: two ToRs per node.
pub const DEFAULT_MAX_PATHS: u32 = 2;
fn default_max_paths() -> Spanned<u32> {
    Spanned::new(0..0, DEFAULT_MAX_PATHS)
}
fn default_restart_time() -> Spanned<u16> {
    Spanned::new(0..0, 120)
}
fn default_http_port() -> u16 {
    9179
}
fn default_peer_port() -> u16 {
    179
}
fn default_hold_time() -> Spanned<u16> {
    Spanned::new(0..0, 90)
}
fn default_connect_retry() -> Spanned<u16> {
    Spanned::new(0..0, 5)
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses and validates configuration text; the error names the line and the field.
    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| describe_toml_error(text, &e))?;
        config.validate(text)?;
        Ok(config)
    }

    fn validate(&self, text: &str) -> Result<(), String> {
        let at = |span: std::ops::Range<usize>, field: &str, msg: String| {
            format!("line {}: {field}: {msg}", line_of(text, span.start))
        };
        if *self.asn.get_ref() == 0 {
            return Err(at(self.asn.span(), "asn", "must not be 0".into()));
        }
        if self.router_id.get_ref().is_unspecified() {
            return Err(at(
                self.router_id.span(),
                "router-id",
                "must not be 0.0.0.0".into(),
            ));
        }
        let too_long = |t: &Spanned<u16>, field: &str| {
            (*t.get_ref() > 4095).then(|| {
                at(
                    t.span(),
                    field,
                    format!(
                        "{} is over 4095 s (a 12-bit field, RFC 4724 §3)",
                        t.get_ref()
                    ),
                )
            })
        };
        if let Some(e) = too_long(&self.restart_time, "restart-time") {
            return Err(e);
        }
        if let Some(w) = &self.originate_wait
            && *w.get_ref() > 4095
        {
            return Err(at(
                w.span(),
                "originate-wait",
                format!(
                    "{} is over 4095 s (End-of-RIB waits at most a restart time)",
                    w.get_ref()
                ),
            ));
        }
        let max_paths = *self.max_paths.get_ref();
        if !(1..=64).contains(&max_paths) {
            return Err(at(
                self.max_paths.span(),
                "max-paths",
                format!("{max_paths} is not between 1 and 64"),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, n) in self.neighbors.iter().enumerate() {
            let field = |f: &str| format!("neighbors[{i}].{f}");
            let addr = *n.address.get_ref();
            if !seen.insert(addr) {
                return Err(at(
                    n.address.span(),
                    &field("address"),
                    format!("{addr} is configured twice"),
                ));
            }
            if addr.is_unspecified() || addr.is_multicast() {
                return Err(at(
                    n.address.span(),
                    &field("address"),
                    format!("{addr} is not a unicast address"),
                ));
            }
            if n.asn == 0 {
                return Err(at(n.address.span(), &field("asn"), "must not be 0".into()));
            }
            let hold = *n.hold_time.get_ref();
            if hold == 1 || hold == 2 {
                return Err(at(
                    n.hold_time.span(),
                    &field("hold-time"),
                    format!("{hold} is not allowed: use 0 or at least 3 seconds (RFC 4271 §4.2)"),
                ));
            }
            if let Some(k) = &n.keepalive_time
                && *k.get_ref() == 0
            {
                return Err(at(
                    k.span(),
                    &field("keepalive-time"),
                    "must be at least 1 second (leave it out for a third of the hold time)".into(),
                ));
            }
            if let Some(e) = n.bfd_error() {
                return Err(at(n.address.span(), &field("bfd"), e.into()));
            }
            if *n.connect_retry.get_ref() == 0 {
                return Err(at(
                    n.connect_retry.span(),
                    &field("connect-retry"),
                    "must be at least 1 second".into(),
                ));
            }
            if let (Some(m), Some(_)) = (&n.multihop, &n.ttl_security) {
                return Err(at(
                    m.span(),
                    &field("multihop"),
                    "multihop and ttl-security exclude each other".into(),
                ));
            }
            for (name, v) in [("multihop", &n.multihop), ("ttl-security", &n.ttl_security)] {
                if let Some(v) = v
                    && *v.get_ref() == 0
                {
                    return Err(at(
                        v.span(),
                        &field(name),
                        "must be between 1 and 255".into(),
                    ));
                }
            }
            if let Some(p) = &n.password
                && (p.expose().is_empty() || p.expose().len() > 80)
            {
                return Err(at(
                    n.address.span(),
                    &field("password"),
                    "must be 1 to 80 characters (TCP-MD5 key limit)".into(),
                ));
            }
            if let Some(e) = n
                .restart_time
                .as_ref()
                .and_then(|t| too_long(t, &field("restart-time")))
            {
                return Err(e);
            }
            if n.families.as_ref().is_some_and(|f| f.is_empty()) {
                return Err(at(
                    n.address.span(),
                    &field("families"),
                    "lists no family: use ipv4, ipv6 or both".into(),
                ));
            }
            if let Some(m) = &n.max_prefixes
                && *m.get_ref() == 0
            {
                return Err(at(
                    m.span(),
                    &field("max-prefixes"),
                    "must be at least 1 (leave it out for no limit)".into(),
                ));
            }
            let needs_limit = [
                (
                    "max-prefix-action",
                    n.max_prefix_action.as_ref().map(|v| v.span()),
                ),
                (
                    "max-prefix-restart",
                    n.max_prefix_restart.as_ref().map(|v| v.span()),
                ),
            ];
            for (name, span) in needs_limit {
                if let Some(span) = span
                    && n.max_prefixes.is_none()
                {
                    return Err(at(span, &field(name), "needs max-prefixes".into()));
                }
            }
            if let Some(r) = &n.max_prefix_restart
                && *r.get_ref() == 0
            {
                return Err(at(
                    r.span(),
                    &field("max-prefix-restart"),
                    "must be at least 1 second".into(),
                ));
            }
            if n.route_reflector_client && n.asn != n.local_asn(*self.asn.get_ref()) {
                return Err(at(
                    n.address.span(),
                    &field("route-reflector-client"),
                    "only iBGP neighbours (same asn) can be route reflector clients".into(),
                ));
            }
        }
        self.validate_policy(text)?;
        for p in &self.originate {
            let net = *p.get_ref();
            if net != net.trunc() {
                return Err(at(
                    p.span(),
                    "originate",
                    format!("{net} has host bits set; did you mean {}?", net.trunc()),
                ));
            }
        }
        Ok(())
    }

    /// Checks pools, advertisements, filters and the neighbours' references to filters.
    fn validate_policy(&self, text: &str) -> Result<(), String> {
        let at = |e: Invalid| format!("line {}: {}: {}", line_of(text, e.at), e.field, e.message);
        for (i, p) in self.pools.iter().enumerate() {
            p.check(i).map_err(at)?;
        }
        for (i, a) in self.advertise.iter().enumerate() {
            a.check(i).map_err(at)?;
        }
        let mut names = std::collections::HashSet::new();
        for (i, f) in self.filters.iter().enumerate() {
            f.check(i).map_err(at)?;
            if !names.insert(f.name.get_ref().as_str()) {
                return Err(format!(
                    "line {}: filters[{i}].name: {:?} is defined twice",
                    line_of(text, f.name.span().start),
                    f.name.get_ref()
                ));
            }
        }
        for (i, n) in self.neighbors.iter().enumerate() {
            for f in &n.filters {
                if !names.contains(f.get_ref().as_str()) {
                    return Err(format!(
                        "line {}: neighbors[{i}].filters: no [[filters]] named {:?}",
                        line_of(text, f.span().start),
                        f.get_ref()
                    ));
                }
            }
            if let Some(a) = &n.local_asn
                && *a.get_ref() == 0
            {
                return Err(format!(
                    "line {}: neighbors[{i}].local-asn: must not be 0",
                    line_of(text, a.span().start)
                ));
            }
        }
        Ok(())
    }

    /// The filters by name (the file is valid: every check passed).
    fn filters_by_name(&self) -> std::collections::HashMap<&str, Arc<Filter>> {
        self.filters
            .iter()
            .enumerate()
            .filter_map(|(i, f)| Some((f.name.get_ref().as_str(), Arc::new(f.check(i).ok()?))))
            .collect()
    }

    /// The filters `n` names, in order.
    fn chain_for(&self, n: &Neighbor) -> FilterChain {
        let by_name = self.filters_by_name();
        FilterChain::new(
            n.filters
                .iter()
                .filter_map(|f| by_name.get(f.get_ref().as_str()).cloned())
                .collect(),
        )
    }

    /// What decides the routes announced to `n`.
    pub fn export_policy(&self, n: &Neighbor) -> ExportPolicy {
        ExportPolicy {
            pools: self
                .pools
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.check(i).ok())
                .collect(),
            services: self.originated(),
            advertise: self
                .advertise
                .iter()
                .enumerate()
                .filter_map(|(i, a)| a.check(i).ok())
                .collect(),
            chain: self.chain_for(n),
        }
    }

    /// The filters whose import rules decide what is accepted from `n`.
    pub fn import_chain(&self, n: &Neighbor) -> FilterChain {
        let chain = self.chain_for(n);
        FilterChain::new(
            chain
                .filters()
                .iter()
                .filter(|f| f.has(crate::policy::Direction::Import))
                .cloned()
                .collect(),
        )
    }

    pub fn router_id(&self) -> Ipv4Addr {
        *self.router_id.get_ref()
    }
    pub fn asn(&self) -> u32 {
        *self.asn.get_ref()
    }
    pub fn cluster_id(&self) -> Option<Ipv4Addr> {
        self.cluster_id.as_ref().map(|c| *c.get_ref())
    }
    /// Whether graceful restart is offered to `n`.
    pub fn graceful_restart_for(&self, n: &Neighbor) -> bool {
        n.graceful_restart.unwrap_or(self.graceful_restart)
    }
    /// The restart time offered to `n`, in seconds.
    pub fn restart_time_for(&self, n: &Neighbor) -> u16 {
        n.restart_time
            .as_ref()
            .map_or(*self.restart_time.get_ref(), |t| *t.get_ref())
    }
    pub fn originated(&self) -> Vec<IpNet> {
        self.originate.iter().map(|p| *p.get_ref()).collect()
    }
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

/// The parser's message on one line, prefixed with the line number.
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let line = e.span().map(|s| line_of(text, s.start));
    let msg = e.message().trim().to_string();
    match line {
        Some(l) => format!("line {l}: {msg}"),
        None => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
router-id = "10.0.0.1"
asn = 64512
cluster-id = "1.1.1.1"
originate = ["10.1.0.0/26", "fd00:1::/122"]

[[neighbors]]
address = "10.0.0.2"
asn = 64512
route-reflector-client = true
hold-time = 30

[[neighbors]]
address = "10.0.0.254"
asn = 65000
password = "s3cret"
next-hop = "self"
description = "tor"
"#;

    #[test]
    fn parses_a_full_file_with_defaults() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.router_id(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(c.asn(), 64512);
        assert_eq!(c.listen_port, 179);
        assert_eq!(c.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(c.originated().len(), 2);
        assert_eq!(c.neighbors.len(), 2);
        assert_eq!(*c.neighbors[0].hold_time.get_ref(), 30);
        assert_eq!(*c.neighbors[1].hold_time.get_ref(), 90);
        assert_eq!(c.neighbors[1].next_hop, Some(NextHop::SelfAddr));
        assert_eq!(
            c.neighbors[0].peer_type(64512),
            PeerType::RouteReflectorClient
        );
        assert_eq!(c.neighbors[1].peer_type(64512), PeerType::Global);
    }

    #[test]
    fn rejects_bad_address_with_line_and_field() {
        let text =
            "router-id = \"10.0.0.1\"\nasn = 1\n[[neighbors]]\naddress = \"10.0.0.300\"\nasn = 2\n";
        let err = Config::parse(text).unwrap_err();
        assert!(err.starts_with("line 4:"), "{err}");
        assert!(err.contains("invalid IP address syntax"), "{err}");
    }

    #[test]
    fn rejects_unknown_field_naming_it() {
        let text = "router-id = \"10.0.0.1\"\nasn = 1\nlisten-prot = 179\n";
        let err = Config::parse(text).unwrap_err();
        assert!(err.starts_with("line 3:"), "{err}");
        assert!(err.contains("listen-prot"), "{err}");
    }

    #[test]
    fn rejects_hold_time_of_two_seconds() {
        let text = "router-id = \"10.0.0.1\"\nasn = 1\n[[neighbors]]\naddress = \"10.0.0.2\"\nasn = 1\nhold-time = 2\n";
        let err = Config::parse(text).unwrap_err();
        assert!(err.starts_with("line 6: neighbors[0].hold-time"), "{err}");
    }

    #[test]
    fn rejects_duplicate_neighbor() {
        let text = "router-id = \"10.0.0.1\"\nasn = 1\n[[neighbors]]\naddress = \"10.0.0.2\"\nasn = 1\n[[neighbors]]\naddress = \"10.0.0.2\"\nasn = 1\n";
        let err = Config::parse(text).unwrap_err();
        assert!(err.starts_with("line 7: neighbors[1].address"), "{err}");
        assert!(err.contains("configured twice"), "{err}");
    }

    #[test]
    fn rejects_originated_prefix_with_host_bits() {
        let text = "router-id = \"10.0.0.1\"\nasn = 1\noriginate = [\"10.1.0.1/26\"]\n";
        let err = Config::parse(text).unwrap_err();
        assert!(
            err.contains("line 3: originate: 10.1.0.1/26 has host bits set"),
            "{err}"
        );
    }

    #[test]
    fn a_session_carries_its_address_family_unless_told_otherwise() {
        use crate::wire::Family;
        let text = "router-id = \"10.0.0.1\"\nasn = 1\n[[neighbors]]\naddress = \"10.0.0.2\"\nasn = 1\n\
                    [[neighbors]]\naddress = \"fd00::2\"\nasn = 1\n\
                    [[neighbors]]\naddress = \"10.0.0.3\"\nasn = 1\nfamilies = [\"ipv4\", \"ipv6\"]\n";
        let c = Config::parse(text).unwrap();
        assert_eq!(c.neighbors[0].families(), vec![Family::Ipv4Unicast]);
        assert_eq!(c.neighbors[1].families(), vec![Family::Ipv6Unicast]);
        assert_eq!(
            c.neighbors[2].families(),
            vec![Family::Ipv4Unicast, Family::Ipv6Unicast]
        );
        let bad = "router-id = \"10.0.0.1\"\nasn = 1\n[[neighbors]]\naddress = \"10.0.0.2\"\nasn = 1\nfamilies = [\"ipv5\"]\n";
        let err = Config::parse(bad).unwrap_err();
        assert!(err.starts_with("line 6:") && err.contains("ipv5"), "{err}");
    }

    /// The README's example is the reference operators copy: it must be a valid file.
    #[test]
    fn the_readme_example_is_a_valid_file() {
        let readme = include_str!("../../README.md");
        let start = readme.find("```toml\n").expect("README has a toml example") + 8;
        let end = start + readme[start..].find("```").expect("the example ends");
        let c =
            Config::parse(&readme[start..end]).unwrap_or_else(|e| panic!("README example: {e}"));
        assert_eq!(c.neighbors.len(), 1);
        assert_eq!(
            c.neighbors[0].multihop.as_ref().map(|m| *m.get_ref()),
            Some(2)
        );
    }

    #[test]
    fn graceful_restart_is_on_by_default_and_set_per_neighbor() {
        let text = "router-id = \"10.0.0.1\"\nasn = 1\nrestart-time = 90\n\
                    [[neighbors]]\naddress = \"10.0.0.2\"\nasn = 1\n\
                    [[neighbors]]\naddress = \"10.0.0.3\"\nasn = 1\ngraceful-restart = false\nrestart-time = 30\n";
        let c = Config::parse(text).unwrap();
        assert!(c.graceful_restart);
        assert!(c.graceful_restart_for(&c.neighbors[0]));
        assert_eq!(c.restart_time_for(&c.neighbors[0]), 90);
        assert!(!c.graceful_restart_for(&c.neighbors[1]));
        assert_eq!(c.restart_time_for(&c.neighbors[1]), 30);
        let plain = Config::parse("router-id = \"10.0.0.1\"\nasn = 1\n").unwrap();
        assert_eq!(*plain.restart_time.get_ref(), 120);
    }

    #[test]
    fn rejects_restart_time_over_twelve_bits() {
        let text = "router-id = \"10.0.0.1\"\nasn = 1\n[[neighbors]]\naddress = \"10.0.0.2\"\nasn = 1\nrestart-time = 5000\n";
        let err = Config::parse(text).unwrap_err();
        assert!(
            err.starts_with("line 6: neighbors[0].restart-time"),
            "{err}"
        );
    }

    #[test]
    fn originate_wait_is_read_and_bounded() {
        let c = Config::parse("router-id = \"10.0.0.1\"\nasn = 1\noriginate-wait = 45\n").unwrap();
        assert_eq!(c.originate_wait.map(|w| *w.get_ref()), Some(45));
        let plain = Config::parse("router-id = \"10.0.0.1\"\nasn = 1\n").unwrap();
        assert_eq!(plain.originate_wait, None);
        let err = Config::parse("router-id = \"10.0.0.1\"\nasn = 1\noriginate-wait = 5000\n")
            .unwrap_err();
        assert!(err.starts_with("line 3: originate-wait"), "{err}");
    }

    #[test]
    fn rejects_missing_router_id() {
        let err = Config::parse("asn = 1\n").unwrap_err();
        assert!(err.contains("router-id"), "{err}");
    }

    #[test]
    fn max_prefixes_defaults_to_cease_with_a_restart_delay() {
        let text = "router-id = \"10.0.0.1\"\nasn = 1\n\
                    [[neighbors]]\naddress = \"10.0.0.2\"\nasn = 2\nmax-prefixes = 100\n\
                    [[neighbors]]\naddress = \"10.0.0.3\"\nasn = 2\nmax-prefixes = 5\n\
                    max-prefix-action = \"warn\"\nmax-prefix-restart = 10\n\
                    [[neighbors]]\naddress = \"10.0.0.4\"\nasn = 2\n";
        let c = Config::parse(text).unwrap();
        let first = c.neighbors[0].prefix_limit().unwrap();
        assert_eq!(first.max, 100);
        assert_eq!(first.action, MaxPrefixAction::Cease);
        assert_eq!(
            first.restart,
            std::time::Duration::from_secs(u64::from(DEFAULT_MAX_PREFIX_RESTART))
        );
        let second = c.neighbors[1].prefix_limit().unwrap();
        assert_eq!(second.action, MaxPrefixAction::Warn);
        assert_eq!(second.restart, std::time::Duration::from_secs(10));
        assert_eq!(c.neighbors[2].prefix_limit(), None);
    }

    #[test]
    fn rejects_bad_max_prefix_settings_with_line_and_field() {
        let base =
            "router-id = \"10.0.0.1\"\nasn = 1\n[[neighbors]]\naddress = \"10.0.0.2\"\nasn = 2\n";
        let cases = [
            ("max-prefixes = 0\n", "line 6: neighbors[0].max-prefixes"),
            (
                "max-prefix-action = \"warn\"\n",
                "line 6: neighbors[0].max-prefix-action: needs max-prefixes",
            ),
            (
                "max-prefixes = 3\nmax-prefix-restart = 0\n",
                "line 7: neighbors[0].max-prefix-restart",
            ),
            (
                "max-prefixes = 3\nmax-prefix-action = \"drop\"\n",
                "line 7:",
            ),
            ("max-prefixes = -1\n", "line 6:"),
        ];
        for (extra, want) in cases {
            let err = Config::parse(&format!("{base}{extra}")).unwrap_err();
            assert!(err.starts_with(want), "{extra:?}: {err}");
        }
    }

    #[test]
    fn rejects_ebgp_route_reflector_client() {
        let text = "router-id = \"10.0.0.1\"\nasn = 1\n[[neighbors]]\naddress = \"10.0.0.2\"\nasn = 2\nroute-reflector-client = true\n";
        let err = Config::parse(text).unwrap_err();
        assert!(err.contains("route-reflector-client"), "{err}");
    }

    const POLICY: &str = r#"
router-id = "10.0.0.1"
asn = 64512
originate = ["10.96.0.0/12"]

[[neighbors]]
address = "10.0.0.2"
asn = 65000
filters = ["tor", "v6"]
allow-own-as = 1

[[neighbors]]
address = "10.0.0.3"
asn = 64512
role = "external"

[[pools]]
cidr = "10.244.0.0/16"

[[pools]]
cidr = "10.99.0.0/16"
export = false

[[advertise]]
cidr = "10.244.0.0/16"
communities = ["65000:100", "65000:1:2"]

[[filters]]
name = "tor"
  [[filters.export-v4]]
  action = "accept"
  match-operator = "in"
  cidr = "10.0.0.0/8"
  prefix-length = { min = 24, max = 32 }
  source = "remote-peers"
  interface = "eth*"
  [[filters.import-v4]]
  action = "reject"
  match-operator = "equal"
  cidr = "0.0.0.0/0"

[[filters]]
name = "v6"
  [[filters.export-v6]]
  action = "reject"
  match-operator = "not-in"
  cidr = "fd00::/8"
"#;

    #[test]
    fn policy_tables_parse_into_each_neighbours_policy() {
        use crate::policy::{Action, MatchOperator, RuleSource};
        let c = Config::parse(POLICY).unwrap();
        let tor = &c.neighbors[0];
        assert_eq!(tor.role(c.asn()), Role::External);
        assert_eq!(c.neighbors[1].role(c.asn()), Role::External);
        assert_eq!(tor.allow_own_as(), 1);
        let p = c.export_policy(tor);
        assert_eq!(p.pools.len(), 2);
        assert!(!p.pools[1].export);
        assert_eq!(p.services, vec!["10.96.0.0/12".parse::<IpNet>().unwrap()]);
        assert_eq!(p.advertise[0].communities.len(), 2);
        assert_eq!(p.chain.filters().len(), 2);
        let r = &p.chain.filters()[0].export_v4[0];
        assert_eq!(r.action, Action::Accept);
        assert_eq!(
            r.cidr,
            Some((MatchOperator::In, "10.0.0.0/8".parse().unwrap()))
        );
        assert_eq!(r.prefix_length, Some((24, 32)));
        assert_eq!(r.source, Some(RuleSource::RemotePeers));
        assert_eq!(r.interface.as_deref(), Some("eth*"));
        // Only filters with import rules make up the import chain.
        assert_eq!(c.import_chain(tor).filters().len(), 1);
        assert!(c.export_policy(&c.neighbors[1]).chain.filters().is_empty());
    }

    #[test]
    fn rejects_bad_policy_with_line_and_field() {
        let cases = [
            (
                "match-operator = \"in\"\n",
                "is needed with match-operator",
                "filters[0].export-v4[0].cidr",
            ),
            (
                "cidr = \"10.0.0.0/8\"\n",
                "is needed with cidr",
                "filters[0].export-v4[0].match-operator",
            ),
            (
                "match-operator = \"in\"\ncidr = \"fd00::/8\"\n",
                "not an IPv4",
                "filters[0].export-v4[0].cidr",
            ),
            (
                "prefix-length = { min = 30, max = 24 }\n",
                "min <= max",
                "filters[0].export-v4[0].prefix-length",
            ),
        ];
        for (extra, want, field) in cases {
            let text = format!(
                "router-id = \"10.0.0.1\"\nasn = 1\n[[filters]]\nname = \"f\"\n[[filters.export-v4]]\naction = \"accept\"\n{extra}"
            );
            let err = Config::parse(&text).unwrap_err();
            assert!(err.contains(field), "{extra:?}: {err}");
            assert!(err.starts_with("line ") && err.contains(want), "{err}");
        }
        let unknown = "router-id = \"10.0.0.1\"\nasn = 1\n[[neighbors]]\naddress = \"10.0.0.2\"\nasn = 2\nfilters = [\"nope\"]\n";
        let err = Config::parse(unknown).unwrap_err();
        assert!(
            err.starts_with("line 6: neighbors[0].filters: no [[filters]] named \"nope\""),
            "{err}"
        );
        let bad = "router-id = \"10.0.0.1\"\nasn = 1\n[[advertise]]\ncidr = \"10.0.0.0/8\"\ncommunities = [\"70000:1\"]\n";
        let err = Config::parse(bad).unwrap_err();
        assert!(err.starts_with("line 5: advertise[0].communities"), "{err}");
        let twice = "router-id = \"10.0.0.1\"\nasn = 1\n[[filters]]\nname = \"f\"\n[[filters]]\nname = \"f\"\n";
        let err = Config::parse(twice).unwrap_err();
        assert!(err.starts_with("line 6: filters[1].name"), "{err}");
        let act = "router-id = \"10.0.0.1\"\nasn = 1\n[[filters]]\nname = \"f\"\n[[filters.import-v6]]\naction = \"drop\"\n";
        let err = Config::parse(act).unwrap_err();
        assert!(err.starts_with("line 6:") && err.contains("drop"), "{err}");
    }

    #[test]
    fn bfd_keys_give_the_timers_with_defaults_and_are_checked() {
        let text = format!("{GOOD}bfd = true\nbfd-min-tx-ms = 100\nbfd-multiplier = 5\n");
        let c = Config::parse(&text).unwrap();
        assert_eq!(c.neighbors[0].bfd_timers(), None, "off by default");
        let t = c.neighbors[1].bfd_timers().expect("on");
        assert_eq!(t.desired_min_tx, Duration::from_millis(100));
        assert_eq!(t.required_min_rx, Duration::from_millis(300));
        assert_eq!(t.detect_mult, 5);
        assert_eq!(c.bfd_port, 3784);
        for bad in [
            "bfd-min-rx-ms = 5",
            "bfd-min-tx-ms = 70000",
            "bfd-multiplier = 0",
        ] {
            let e = Config::parse(&format!("{GOOD}bfd = true\n{bad}\n")).unwrap_err();
            assert!(e.contains("bfd"), "{bad}: {e}");
        }
    }

    #[test]
    fn max_paths_defaults_to_two_and_is_checked() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(*c.max_paths.get_ref(), 2);
        let c = Config::parse(&format!("max-paths = 4\n{GOOD}")).unwrap();
        assert_eq!(*c.max_paths.get_ref(), 4);
        for bad in ["max-paths = 0", "max-paths = 65"] {
            let e = Config::parse(&format!("{bad}\n{GOOD}")).unwrap_err();
            assert!(e.starts_with("line 1: max-paths"), "{bad}: {e}");
        }
    }
}
