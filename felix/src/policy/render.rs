//! Compiled policy ([`PolicyIr`]) → the contents of felix's policy table ([`Table`]): named sets,
//! two dispatch maps, one chain per policy and direction, one chain per distinct tier sequence.
//!
//! ```text
//! table inet margay-policy {
//!     map wl-in  { type ifname : verdict; }   # oifname → jump s-in-<seq>  (or accept: no policy)
//!     map wl-out { type ifname : verdict; }   # iifname → jump s-out-<seq>
//!     set a-<id>-4 { type ipv4_addr; flags interval; }                  # selector / nets members
//!     set p-<id>-4 { type ipv4_addr . inet_proto . inet_service; }      # named-port members
//!     chain p-in-<policy>  { <rules: accept | drop | pass-mark return | log> }
//!     chain s-in-<seq>     { jump s-in-<seq>-0; <clear pass>; jump s-in-<seq>-1; ...; accept }
//!     chain s-in-<seq>-0   { <clear pass>; jump p-in-A; <passed? return>; jump p-in-B; ...; drop }
//!     chain forward-out { hook forward priority filter;  workload egress: iifname vmap @wl-out }
//!     chain forward-in  { hook forward priority filter + 1; workload ingress: oifname vmap @wl-in }
//!     chain input-wl    { hook input priority filter;  workload → host: egress, then the action }
//! }
//! ```
//!
//! `Allow` is `accept`: it ends the base chain, and the packet goes on to the next base chain of
//! the hook, so a pod's egress allow still meets the destination's ingress policy. `Deny` is
//! `drop`, final everywhere. `Pass` sets a mark bit and returns; the tier chain returns to the
//! sequence chain when it sees the bit, and the next tier decides.
//!
//! Sequence chains are named by a hash of what they contain, so endpoints with the same policies
//! share them and a new pod with a known combination only adds map entries. Each rule carries a
//! comment with a hash of its text: that is how a listing of the kernel's table is compared with
//! the desired one (adoption after a restart, drift repair) without re-parsing nft's output.

use std::collections::{BTreeMap, BTreeSet};

use super::ir::{
    Action, Direction, EndpointPolicy, EndpointToHost, EntityMatch, Icmp, NamedPortMember,
    PolicyIr, PolicyRules, PortRange, Rule, TierEnd, TierSeq,
};
use crate::nat::Family;

/// felix's policy table (family `inet`: one table for IPv4 and IPv6).
pub const TABLE: &str = "margay-policy";
/// The nft family of [`TABLE`].
pub const TABLE_FAMILY: &str = "inet";
/// The packet-mark bit a `Pass` rule sets (inside Calico's default felix mark mask 0xffff0000).
pub const PASS_MARK: u32 = 0x0002_0000;
/// Host-side interfaces of workloads start with this by default (Calico's `InterfacePrefix`;
/// FelixConfiguration `interfacePrefix` sets [`PolicyIr::workload_prefixes`]).
pub const WORKLOAD_PREFIX: &str = "cali";
/// The dispatch map for traffic to a workload, keyed by the output interface.
pub const MAP_IN: &str = "wl-in";
/// The dispatch map for traffic from a workload, keyed by the input interface.
pub const MAP_OUT: &str = "wl-out";

/// A base chain's hook (always `type filter`, `policy accept`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    pub hook: String,
    pub priority: i64,
}

/// One rule: its identity (the hash in its comment) and, when rendered by felix, its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleText {
    pub id: String,
    pub text: String,
}

impl RuleText {
    fn new(text: String) -> RuleText {
        RuleText {
            id: short_hash(&text, 12),
            text,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainSpec {
    pub hook: Option<Hook>,
    pub rules: Vec<RuleText>,
}

impl ChainSpec {
    /// Same hook and the same rules in the same order (compared by their ids).
    pub fn same_as(&self, other: &ChainSpec) -> bool {
        self.hook == other.hook
            && self.rules.len() == other.rules.len()
            && self
                .rules
                .iter()
                .zip(&other.rules)
                .all(|(a, b)| a.id == b.id)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetSpec {
    /// The element type as nft writes it (`ipv4_addr`, `ipv4_addr . inet_proto . inet_service`).
    pub kind: String,
    pub interval: bool,
    /// Elements in canonical text (`10.0.0.5/32`, `10.0.0.5 . 6 . 80`).
    pub elements: BTreeSet<String>,
    /// Elements of a kernel listing felix could not read (never in a set felix wrote).
    pub odd_elements: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapSpec {
    /// Interface → verdict (`accept`, `jump s-in-...`).
    pub entries: BTreeMap<String, String>,
}

/// The table's contents, as felix wants them or as a kernel listing shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    pub sets: BTreeMap<String, SetSpec>,
    pub maps: BTreeMap<String, MapSpec>,
    pub chains: BTreeMap<String, ChainSpec>,
}

/// The first `len` hex digits of the SHA-1 of `text`.
pub fn short_hash(text: &str, len: usize) -> String {
    let mut h = sha1_smol::Sha1::new();
    h.update(text.as_bytes());
    h.digest().to_string()[..len].to_string()
}

fn fam_digit(f: Family) -> &'static str {
    match f {
        Family::V4 => "4",
        Family::V6 => "6",
    }
}

/// The nft set holding address set `id` in family `f`.
pub fn addr_set_name(id: &str, f: Family) -> String {
    format!("a-{}-{}", short_hash(id, 12), fam_digit(f))
}

/// The nft set holding named-port set `id` in family `f`.
pub fn port_set_name(id: &str, f: Family) -> String {
    format!("p-{}-{}", short_hash(id, 12), fam_digit(f))
}

/// The chain holding `policy`'s rules in `dir`: readable, and unique through a hash of the key.
pub fn policy_chain(policy: &str, dir: Direction) -> String {
    let readable: String = policy
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    format!("p-{}-{readable}-{}", dir.short(), short_hash(policy, 6))
}

/// The chain for one distinct tier sequence in `dir`.
pub fn sequence_chain(tiers: &[TierSeq], dir: Direction) -> String {
    format!(
        "s-{}-{}",
        dir.short(),
        short_hash(&format!("{tiers:?}"), 12)
    )
}

fn addr_type(f: Family) -> &'static str {
    match f {
        Family::V4 => "ipv4_addr",
        Family::V6 => "ipv6_addr",
    }
}

fn port_type(f: Family) -> String {
    format!("{} . inet_proto . inet_service", addr_type(f))
}

/// Merges overlapping and adjacent ranges (nft refuses overlapping intervals in one set).
fn merged(ports: &[PortRange]) -> Vec<PortRange> {
    let mut v = ports.to_vec();
    v.sort();
    let mut out: Vec<PortRange> = Vec::new();
    for r in v {
        match out.last_mut() {
            Some(last) if u32::from(r.first) <= u32::from(last.last) + 1 => {
                last.last = last.last.max(r.last);
            }
            _ => out.push(r),
        }
    }
    out
}

fn port_list(ports: &[PortRange]) -> String {
    let items: Vec<String> = merged(ports)
        .iter()
        .map(|r| {
            if r.first == r.last {
                r.first.to_string()
            } else {
                format!("{}-{}", r.first, r.last)
            }
        })
        .collect();
    if items.len() == 1 {
        items[0].clone()
    } else {
        format!("{{ {} }}", items.join(", "))
    }
}

/// The ICMP match in family `f`; for `notICMP` the variants are alternatives (two rules): the
/// packet is not ICMP of that family, or it is and its type/code differ.
fn icmp_matches(f: Family, icmp: &Icmp, negate: bool) -> Vec<String> {
    let (k, proto) = match f {
        Family::V4 => ("icmp", 1),
        Family::V6 => ("icmpv6", 58),
    };
    let positive = match (icmp.kind, icmp.code) {
        (None, None) => None,
        (Some(t), None) => Some((format!("{k} type"), t.to_string())),
        (None, Some(c)) => Some((format!("{k} code"), c.to_string())),
        (Some(t), Some(c)) => Some((format!("{k} type . {k} code"), format!("{{ {t} . {c} }}"))),
    };
    match (positive, negate) {
        (None, false) => vec![format!("meta l4proto {proto}")],
        (None, true) => vec![format!("meta l4proto != {proto}")],
        (Some((field, value)), false) => vec![format!("{field} {value}")],
        (Some((field, value)), true) => vec![
            format!("meta l4proto != {proto}"),
            format!("{field} != {value}"),
        ],
    }
}

/// The matches of one side of a rule, for family `fam` (`None`: the rule names no address).
/// Returns one or two variants: numeric ports and named ports are alternatives (two rules).
fn entity(fam: Option<Family>, e: &EntityMatch, side: Side) -> Vec<Vec<String>> {
    let mut common = Vec::new();
    let (addr, port) = match side {
        Side::Source => ("saddr", "sport"),
        Side::Destination => ("daddr", "dport"),
    };
    if let Some(f) = fam {
        let k = f.keyword();
        for s in &e.sets {
            common.push(format!("{k} {addr} @{}", addr_set_name(s, f)));
        }
        for s in &e.not_sets {
            common.push(format!("{k} {addr} != @{}", addr_set_name(s, f)));
        }
        if let Some(s) = &e.not_named_ports {
            common.push(format!(
                "{k} {addr} . meta l4proto . th {port} != @{}",
                port_set_name(s, f)
            ));
        }
    }
    if !e.not_ports.is_empty() {
        common.push(format!("th {port} != {}", port_list(&e.not_ports)));
    }
    let mut variants = Vec::new();
    if !e.ports.is_empty() {
        let mut v = common.clone();
        v.push(format!("th {port} {}", port_list(&e.ports)));
        variants.push(v);
    }
    if let (Some(s), Some(f)) = (&e.named_ports, fam) {
        let mut v = common.clone();
        v.push(format!(
            "{} {addr} . meta l4proto . th {port} @{}",
            f.keyword(),
            port_set_name(s, f)
        ));
        variants.push(v);
    }
    if e.ports.is_empty() && e.named_ports.is_none() {
        variants.push(common);
    }
    variants
}

#[derive(Clone, Copy)]
enum Side {
    Source,
    Destination,
}

fn verdict(action: Action, log_prefix: &str) -> String {
    match action {
        Action::Allow => "accept".into(),
        Action::Deny => "drop".into(),
        Action::Pass => format!("meta mark set meta mark | 0x{PASS_MARK:08x} return"),
        Action::Log => format!("log prefix \"{log_prefix}\""),
    }
}

/// The nft rules (text, without comment) one compiled rule becomes.
pub fn rule_texts(rule: &Rule, families: &[Family], log_prefix: &str) -> Vec<String> {
    let fams: Vec<Option<Family>> = if rule.needs_family() {
        families
            .iter()
            .copied()
            .filter(|f| rule.ip_version.is_none_or(|v| v == *f))
            .filter(|f| {
                !matches!(
                    (rule.protocol, f),
                    (Some(1), Family::V6) | (Some(58), Family::V4)
                )
            })
            .map(Some)
            .collect()
    } else {
        vec![None]
    };
    let mut out = Vec::new();
    for fam in fams {
        let mut head = Vec::new();
        if let (Some(f), true) = (fam, rule.ip_version.is_some()) {
            head.push(format!("meta nfproto {}", family_name(f)));
        }
        if let Some(p) = rule.protocol {
            head.push(format!("meta l4proto {p}"));
        }
        if let Some(p) = rule.not_protocol {
            head.push(format!("meta l4proto != {p}"));
        }
        let mut icmp_variants = vec![String::new()];
        if let Some(f) = fam {
            if let Some(i) = &rule.icmp {
                head.extend(icmp_matches(f, i, false));
            }
            if let Some(i) = &rule.not_icmp {
                icmp_variants = icmp_matches(f, i, true);
            }
        }
        for icmp in &icmp_variants {
            for src in entity(fam, &rule.source, Side::Source) {
                for dst in entity(fam, &rule.destination, Side::Destination) {
                    let mut parts = head.clone();
                    if !icmp.is_empty() {
                        parts.push(icmp.clone());
                    }
                    parts.extend(src.iter().cloned());
                    parts.extend(dst.iter().cloned());
                    parts.push(verdict(rule.action, log_prefix));
                    out.push(parts.join(" "));
                }
            }
        }
    }
    out
}

fn family_name(f: Family) -> &'static str {
    match f {
        Family::V4 => "ipv4",
        Family::V6 => "ipv6",
    }
}

fn clear_pass() -> String {
    format!("meta mark set meta mark & 0x{:08x}", !PASS_MARK)
}

fn tier_rules(tier: &TierSeq, dir: Direction) -> Vec<String> {
    let mut rules = vec![clear_pass()];
    for p in &tier.policies {
        rules.push(format!("jump {}", policy_chain(p, dir)));
        rules.push(format!(
            "meta mark & 0x{PASS_MARK:08x} == 0x{PASS_MARK:08x} return"
        ));
    }
    rules.push(
        match tier.end {
            TierEnd::Deny => "drop",
            TierEnd::Pass => "return",
        }
        .to_string(),
    );
    rules
}

fn chain(hook: Option<Hook>, rules: Vec<String>) -> ChainSpec {
    ChainSpec {
        hook,
        rules: rules.into_iter().map(RuleText::new).collect(),
    }
}

fn hook(name: &str, priority: i64) -> Option<Hook> {
    Some(Hook {
        hook: name.into(),
        priority,
    })
}

/// The base chains: workload egress, workload ingress, workload → host.
pub(crate) fn base_chains(ir: &PolicyIr) -> BTreeMap<String, ChainSpec> {
    // One prefix: `"cali*"`; several: an anonymous set of wildcards `{ "cali*", "tap*" }`.
    let names: Vec<String> = ir
        .workload_prefixes
        .iter()
        .map(|p| format!("\"{p}*\""))
        .collect();
    let wl = match names.as_slice() {
        [] => format!("\"{WORKLOAD_PREFIX}*\""),
        [one] => one.clone(),
        many => format!("{{ {} }}", many.join(", ")),
    };
    let head = |dev: &str| {
        vec![
            format!("{dev} != {wl} accept"),
            "ct state established,related accept".to_string(),
            "ct state invalid drop".to_string(),
        ]
    };
    let mut out_rules = head("iifname");
    out_rules.push(format!("iifname vmap @{MAP_OUT}"));
    out_rules.push("drop".into());
    let mut in_rules = head("oifname");
    in_rules.push(format!("oifname vmap @{MAP_IN}"));
    in_rules.push("drop".into());
    let mut host_rules = head("iifname");
    // Neighbour discovery towards the host's link-local address, as Calico allows it.
    host_rules.push(
        "meta l4proto 58 icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } accept"
            .into(),
    );
    if ir.endpoint_to_host == EndpointToHost::Accept {
        host_rules.push(format!("iifname vmap @{MAP_OUT}"));
    }
    host_rules.push("drop".into());
    BTreeMap::from([
        (
            "forward-out".to_string(),
            chain(hook("forward", 0), out_rules),
        ),
        (
            "forward-in".to_string(),
            chain(hook("forward", 1), in_rules),
        ),
        ("input-wl".to_string(), chain(hook("input", 0), host_rules)),
    ])
}

/// Address set `members` in family `f`.
pub(crate) fn addr_set(members: &BTreeSet<ipnet::IpNet>, f: Family) -> SetSpec {
    SetSpec {
        kind: addr_type(f).into(),
        interval: true,
        elements: aggregate(members.iter().copied(), f),
        odd_elements: 0,
    }
}

/// Named-port set `members` in family `f`.
pub(crate) fn port_set(members: &BTreeSet<NamedPortMember>, f: Family) -> SetSpec {
    SetSpec {
        kind: port_type(f),
        interval: false,
        elements: members
            .iter()
            .filter(|m| m.addr.is_ipv4() == (f == Family::V4))
            .map(|m| format!("{} . {} . {}", m.addr, m.protocol, m.port))
            .collect(),
        odd_elements: 0,
    }
}

/// The chain of policy `key` in `dir`, when its `types` include the direction.
pub(crate) fn policy_chain_spec(
    key: &str,
    p: &PolicyRules,
    dir: Direction,
    families: &[Family],
) -> Option<ChainSpec> {
    let rules = p.rules(dir)?;
    let prefix = log_prefix(key, dir);
    let texts = rules
        .iter()
        .flat_map(|r| rule_texts(r, families, &prefix))
        .collect();
    Some(chain(None, texts))
}

/// The tiers of `ep` in `dir` as the table enforces them: policies without rules in the
/// direction left out.
pub(crate) fn effective_tiers(ir: &PolicyIr, ep: &EndpointPolicy, dir: Direction) -> Vec<TierSeq> {
    ep.tiers(dir)
        .iter()
        .map(|tier| TierSeq {
            policies: tier
                .policies
                .iter()
                .filter(|p| ir.policies.get(*p).and_then(|r| r.rules(dir)).is_some())
                .cloned()
                .collect(),
            ..tier.clone()
        })
        .collect()
}

/// The sequence chain `seq` for `tiers` and its per-tier chains (`seq-0`, `seq-1`, ...).
pub(crate) fn sequence_chains(
    seq: &str,
    tiers: &[TierSeq],
    dir: Direction,
) -> Vec<(String, ChainSpec)> {
    let mut out = Vec::new();
    let mut rules = Vec::new();
    for (k, tier) in tiers.iter().enumerate() {
        let name = format!("{seq}-{k}");
        out.push((name.clone(), chain(None, tier_rules(tier, dir))));
        rules.push(format!("jump {name}"));
        rules.push(clear_pass());
    }
    rules.push("accept".into());
    out.push((seq.to_string(), chain(None, rules)));
    out
}

/// The map verdict for an endpoint with `tiers` (`accept`: no policy applies).
pub(crate) fn dispatch(tiers: &[TierSeq], dir: Direction) -> String {
    if tiers.is_empty() {
        "accept".into()
    } else {
        format!("jump {}", sequence_chain(tiers, dir))
    }
}

/// The dispatch map of `dir`.
pub fn map_of(dir: Direction) -> &'static str {
    match dir {
        Direction::Ingress => MAP_IN,
        Direction::Egress => MAP_OUT,
    }
}

/// The whole table for `ir`.
pub fn render(ir: &PolicyIr) -> Table {
    let mut t = Table::default();
    for f in &ir.families {
        for (id, members) in &ir.addr_sets {
            t.sets.insert(addr_set_name(id, *f), addr_set(members, *f));
        }
        for (id, members) in &ir.port_sets {
            t.sets.insert(port_set_name(id, *f), port_set(members, *f));
        }
    }
    for (key, p) in &ir.policies {
        for dir in Direction::BOTH {
            if let Some(c) = policy_chain_spec(key, p, dir, &ir.families) {
                t.chains.insert(policy_chain(key, dir), c);
            }
        }
    }
    for dir in Direction::BOTH {
        let mut map = MapSpec::default();
        for (iface, ep) in &ir.endpoints {
            let tiers = effective_tiers(ir, ep, dir);
            let verdict = dispatch(&tiers, dir);
            if let Some(seq) = verdict.strip_prefix("jump ")
                && !t.chains.contains_key(seq)
            {
                t.chains.extend(sequence_chains(seq, &tiers, dir));
            }
            map.entries.insert(iface.clone(), verdict);
        }
        t.maps.insert(map_of(dir).into(), map);
    }
    t.chains.extend(base_chains(ir));
    t
}

/// `margay <dir> <policy>: `, cut to what nft's log prefix takes.
fn log_prefix(key: &str, dir: Direction) -> String {
    let clean: String = key
        .chars()
        .filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\')
        .collect();
    let mut p = format!("margay {} {clean}: ", dir.short());
    p.truncate(120);
    p
}

/// The members of an address set in family `f`, merged into the fewest prefixes (nft refuses
/// overlapping intervals), as canonical text.
fn aggregate(members: impl Iterator<Item = ipnet::IpNet>, f: Family) -> BTreeSet<String> {
    let nets: Vec<ipnet::IpNet> = members
        .filter(|n| matches!(n, ipnet::IpNet::V4(_)) == (f == Family::V4))
        .collect();
    ipnet::IpNet::aggregate(&nets)
        .into_iter()
        .map(|n| n.to_string())
        .collect()
}
