//! natOutgoing: traffic from a pool with `natOutgoing: true` to a destination outside every
//! pool leaves the node masqueraded to the node's address.
//!
//! felix owns one nftables table per family, `table ip margay` (and `table ip6 margay` when an
//! IPv6 pool needs it), and nothing else: other tables in the namespace (Calico's, iptables-nft's,
//! an operator's) are never read, written or flushed. The table holds two interval sets and one
//! rule in a source-NAT chain:
//!
//! ```text
//! table ip margay {
//!     set masq-pools { type ipv4_addr; flags interval; elements = { <pools with natOutgoing> } }
//!     set all-pools  { type ipv4_addr; flags interval; elements = { <every pool> } }
//!     chain nat {
//!         type nat hook postrouting priority srcnat; policy accept;
//!         ip saddr @masq-pools ip daddr != @all-pools masquerade fully-random
//!     }
//! }
//! ```
//!
//! Which pools count: a disabled pool only stops new allocations; its pods keep their addresses,
//! so it stays in both sets (as Calico's felix does). Nested pools are merged into the fewest
//! prefixes (nftables refuses overlapping intervals); a source inside any natOutgoing pool is
//! masqueraded. A family whose pools need no NAT has no table at all.
//!
//! The pure part is [`desired`] (pools → [`DesiredNat`]), [`script`] (the nft text that sets a
//! family's table) and [`parse_listing`] (`nft -j list table` → [`TableView`]). The edge is
//! [`Nft`], which runs the `nft` binary, and [`NatKeeper`] applies changes and repairs drift.
//!
//! Why the `nft` binary and not a netlink crate: the `nftnl` crate binds the C libraries
//! libnftnl and libmnl (a build dependency on every node image), and `rustables` speaks raw
//! nf_tables expressions, which would have us re-implement what `nft` already compiles (interval
//! sets with their end markers, the `srcnat` priority). Debian's `nftables` package is small, and
//! `nft -f -` applies a whole script as one kernel transaction: the table is replaced atomically,
//! so there is never a moment without the rule.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde_json::{Value, json};

use crate::health::Health;
use crate::model::IpPool;

/// The table felix owns in each family.
pub const TABLE: &str = "margay";
/// Its source-NAT chain.
pub const CHAIN: &str = "nat";
/// The set of pools with natOutgoing.
pub const MASQ_SET: &str = "masq-pools";
/// The set of every pool.
pub const ALL_SET: &str = "all-pools";
/// nftables' `srcnat` priority (NF_IP_PRI_NAT_SRC), as `nft -j` prints it.
const SRCNAT_PRIORITY: i64 = 100;
/// The readiness reason key NAT problems are filed under.
const HEALTH_KEY: &str = "nat";

/// An nftables address family felix programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    /// The nft family keyword (`ip`, `ip6`); also the payload protocol of its address match.
    pub fn keyword(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }

    fn addr_type(self) -> &'static str {
        match self {
            Family::V4 => "ipv4_addr",
            Family::V6 => "ipv6_addr",
        }
    }
}

/// One family's table as felix wants it. Both sets are aggregated (no overlaps, sorted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatTable {
    pub family: Family,
    /// Pools whose pods' traffic is masqueraded when it leaves every pool.
    pub masq_pools: Vec<IpNet>,
    /// Every pool: destinations that are never masqueraded.
    pub all_pools: Vec<IpNet>,
    /// How the source is rewritten (FelixConfiguration `natOutgoingAddress`, `natPortRange`).
    pub action: NatAction,
}

/// The source rewrite of natOutgoing traffic, as Calico's felix renders it: masquerade to the
/// outgoing interface's address, or SNAT to `natOutgoingAddress` (IPv4 only); with
/// `natPortRange`, TCP and UDP get their source port from the range (one rule each, before the
/// rule for every other protocol, which has no ports).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NatAction {
    pub to_address: Option<std::net::IpAddr>,
    pub ports: Option<(u16, u16)>,
}

impl NatAction {
    /// The NAT statement for one rule, with the port range or without.
    fn statement(&self, family: Family, with_ports: bool) -> String {
        let ports = self
            .ports
            .filter(|_| with_ports)
            .map(|(lo, hi)| format!(":{lo}-{hi}"));
        match (self.to_address, ports) {
            (Some(a), p) => format!(
                "snat {} to {a}{} fully-random",
                family.keyword(),
                p.unwrap_or_default()
            ),
            (None, Some(p)) => format!("masquerade to {p} fully-random"),
            (None, None) => "masquerade fully-random".to_string(),
        }
    }

    /// The same statement as `nft -j` (1.0) lists it: the address, the range (a range even
    /// of one port, as written), the flag.
    fn statement_json(&self, with_ports: bool) -> Value {
        let mut m = serde_json::Map::new();
        if let Some(a) = self.to_address {
            m.insert("addr".into(), json!(a.to_string()));
        }
        if let Some((lo, hi)) = self.ports.filter(|_| with_ports) {
            m.insert("port".into(), json!({"range": [lo, hi]}));
        }
        m.insert("flags".into(), json!("fully-random"));
        let verb = if self.to_address.is_some() {
            "snat"
        } else {
            "masquerade"
        };
        json!({ verb: Value::Object(m) })
    }

    /// The rules' protocols: TCP and UDP with the port range first when there is one, then
    /// every protocol (`None`).
    fn protocols(&self) -> Vec<Option<&'static str>> {
        match self.ports {
            Some(_) => vec![Some("tcp"), Some("udp"), None],
            None => vec![None],
        }
    }
}

/// The desired NAT state: per family, the table, or `None` when the table must not exist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredNat {
    pub v4: Option<NatTable>,
    pub v6: Option<NatTable>,
}

impl DesiredNat {
    /// The table wanted in `family`, if any.
    pub fn table(&self, family: Family) -> Option<&NatTable> {
        match family {
            Family::V4 => self.v4.as_ref(),
            Family::V6 => self.v6.as_ref(),
        }
    }
}

/// The NAT tables the pools call for, with FelixConfiguration's source rewrite: SNAT to
/// `natOutgoingAddress` (IPv4 only, as Calico) and `natPortRange`.
pub fn desired_with(pools: &[IpPool], settings: &crate::settings::DataplaneSettings) -> DesiredNat {
    let mut d = desired(pools);
    if let Some(t) = d.v4.as_mut() {
        t.action = NatAction {
            to_address: settings.nat_outgoing_address.map(std::net::IpAddr::V4),
            ports: settings.nat_port_range,
        };
    }
    if let Some(t) = d.v6.as_mut() {
        t.action.ports = settings.nat_port_range;
    }
    d
}

/// The NAT tables the pools call for (masquerade, no port range).
pub fn desired(pools: &[IpPool]) -> DesiredNat {
    let v4 = |nat_only: bool| {
        let nets: Vec<Ipv4Net> = pools
            .iter()
            .filter(|p| !nat_only || p.nat_outgoing)
            .filter_map(|p| match p.cidr {
                IpNet::V4(n) => Some(n),
                IpNet::V6(_) => None,
            })
            .collect();
        Ipv4Net::aggregate(&nets)
            .into_iter()
            .map(IpNet::V4)
            .collect::<Vec<_>>()
    };
    let v6 = |nat_only: bool| {
        let nets: Vec<Ipv6Net> = pools
            .iter()
            .filter(|p| !nat_only || p.nat_outgoing)
            .filter_map(|p| match p.cidr {
                IpNet::V6(n) => Some(n),
                IpNet::V4(_) => None,
            })
            .collect();
        Ipv6Net::aggregate(&nets)
            .into_iter()
            .map(IpNet::V6)
            .collect::<Vec<_>>()
    };
    let table = |family, masq_pools: Vec<IpNet>, all_pools| {
        (!masq_pools.is_empty()).then_some(NatTable {
            family,
            masq_pools,
            all_pools,
            action: NatAction::default(),
        })
    };
    DesiredNat {
        v4: table(Family::V4, v4(true), v4(false)),
        v6: table(Family::V6, v6(true), v6(false)),
    }
}

/// The nft script that makes `family`'s table `want`, or removes it when `want` is `None`.
///
/// It declares the table (a no-op if it exists), deletes it, and recreates it: `nft -f` runs the
/// whole script as one transaction, so the old rules hold until the new ones take over.
pub fn script(family: Family, want: Option<&NatTable>) -> String {
    let fam = family.keyword();
    let mut s = format!("add table {fam} {TABLE}\ndelete table {fam} {TABLE}\n");
    if let Some(t) = want {
        let set = |name: &str, nets: &[IpNet]| {
            let elements = nets
                .iter()
                .map(IpNet::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            format!(
                "    set {name} {{\n        type {}; flags interval;\n        elements = {{ {elements} }}\n    }}\n",
                family.addr_type()
            )
        };
        s.push_str(&format!("table {fam} {TABLE} {{\n"));
        s.push_str(&set(MASQ_SET, &t.masq_pools));
        s.push_str(&set(ALL_SET, &t.all_pools));
        s.push_str(&format!(
            "    chain {CHAIN} {{\n        type nat hook postrouting priority srcnat; policy accept;\n"
        ));
        for proto in t.action.protocols() {
            let l4 = proto
                .map(|p| format!("meta l4proto {p} "))
                .unwrap_or_default();
            s.push_str(&format!(
                "        {fam} saddr @{MASQ_SET} {fam} daddr != @{ALL_SET} {l4}{}\n",
                t.action.statement(family, proto.is_some())
            ));
        }
        s.push_str("    }\n}\n");
    }
    s
}

/// What a table holds, in the terms felix compares: sets with their elements, chains with their
/// hook and rules (each rule's expressions as nft's JSON prints them). Handles are left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableView {
    pub sets: BTreeMap<String, SetView>,
    pub chains: BTreeMap<String, ChainView>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetView {
    pub addr_type: String,
    pub flags: BTreeSet<String>,
    pub elements: BTreeSet<IpNet>,
    /// Elements that are not a prefix (ranges): never in a table felix wrote.
    pub other_elements: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainView {
    pub kind: Option<String>,
    pub hook: Option<String>,
    pub priority: Option<i64>,
    pub policy: Option<String>,
    pub rules: Vec<Value>,
}

impl NatTable {
    /// The view `nft -j list table` gives of this table once applied.
    pub fn view(&self) -> TableView {
        let fam = self.family.keyword();
        let set = |nets: &[IpNet]| SetView {
            addr_type: self.family.addr_type().to_string(),
            flags: BTreeSet::from(["interval".to_string()]),
            elements: nets.iter().copied().collect(),
            other_elements: 0,
        };
        let field = |f: &str| json!({"payload": {"protocol": fam, "field": f}});
        let rules = self
            .action
            .protocols()
            .into_iter()
            .map(|proto| {
                let mut r = vec![
                    json!({"match": {"op": "==", "left": field("saddr"), "right": format!("@{MASQ_SET}")}}),
                    json!({"match": {"op": "!=", "left": field("daddr"), "right": format!("@{ALL_SET}")}}),
                ];
                if let Some(p) = proto {
                    r.push(json!({"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": p}}));
                }
                r.push(self.action.statement_json(proto.is_some()));
                Value::Array(r)
            })
            .collect();
        TableView {
            sets: BTreeMap::from([
                (MASQ_SET.to_string(), set(&self.masq_pools)),
                (ALL_SET.to_string(), set(&self.all_pools)),
            ]),
            chains: BTreeMap::from([(
                CHAIN.to_string(),
                ChainView {
                    kind: Some("nat".into()),
                    hook: Some("postrouting".into()),
                    priority: Some(SRCNAT_PRIORITY),
                    policy: Some("accept".into()),
                    rules,
                },
            )]),
        }
    }
}

/// Reads `nft -j list table FAMILY margay` output into a [`TableView`].
pub fn parse_listing(text: &str) -> Result<TableView, NatError> {
    let bad = |what: &str| NatError::BadListing(what.to_string());
    let doc: Value = serde_json::from_str(text).map_err(|e| bad(&e.to_string()))?;
    let items = doc["nftables"]
        .as_array()
        .ok_or_else(|| bad("no \"nftables\" array"))?;
    let mut view = TableView::default();
    let str_of = |v: &Value| v.as_str().map(str::to_string);
    for item in items {
        if let Some(s) = item.get("set") {
            let name = str_of(&s["name"]).ok_or_else(|| bad("a set without a name"))?;
            let mut sv = SetView {
                addr_type: str_of(&s["type"]).unwrap_or_default(),
                ..SetView::default()
            };
            match &s["flags"] {
                Value::String(f) => {
                    sv.flags.insert(f.clone());
                }
                Value::Array(fs) => sv.flags.extend(fs.iter().filter_map(str_of)),
                _ => {}
            }
            for e in s["elem"].as_array().map(Vec::as_slice).unwrap_or_default() {
                match element(e) {
                    Some(net) => {
                        sv.elements.insert(net);
                    }
                    None => sv.other_elements += 1,
                }
            }
            view.sets.insert(name, sv);
        } else if let Some(c) = item.get("chain") {
            let name = str_of(&c["name"]).ok_or_else(|| bad("a chain without a name"))?;
            let cv = view.chains.entry(name).or_default();
            cv.kind = str_of(&c["type"]);
            cv.hook = str_of(&c["hook"]);
            cv.priority = c["prio"].as_i64();
            cv.policy = str_of(&c["policy"]);
        } else if let Some(r) = item.get("rule") {
            let chain = str_of(&r["chain"]).ok_or_else(|| bad("a rule without a chain"))?;
            view.chains
                .entry(chain)
                .or_default()
                .rules
                .push(normalize_expr(r["expr"].clone()));
        }
    }
    Ok(view)
}

/// A set element as a prefix: `"10.1.2.3"` (a host) or `{"prefix": {"addr", "len"}}`.
fn element(e: &Value) -> Option<IpNet> {
    if let Some(s) = e.as_str() {
        let addr: std::net::IpAddr = s.parse().ok()?;
        return Some(IpNet::from(addr));
    }
    let p = e.get("prefix")?;
    let addr: std::net::IpAddr = p["addr"].as_str()?.parse().ok()?;
    IpNet::new(addr, u8::try_from(p["len"].as_u64()?).ok()?).ok()
}

/// nft prints a statement's single flag as a string and several as an array; make one flag a
/// string either way, so the comparison does not depend on that choice.
fn normalize_expr(mut expr: Value) -> Value {
    if let Some(stmts) = expr.as_array_mut() {
        for st in stmts {
            for verb in ["masquerade", "snat"] {
                if let Some(flags) = st.get_mut(verb).and_then(|m| m.get_mut("flags"))
                    && let Some([one]) = flags.as_array().map(Vec::as_slice)
                {
                    *flags = one.clone();
                }
            }
        }
    }
    expr
}

/// Why NAT could not be programmed.
#[derive(Debug, thiserror::Error)]
pub enum NatError {
    #[error(
        "the nft binary ({0}) was not found (install Debian's nftables package); \
         natOutgoing pools are not masqueraded"
    )]
    NftMissing(String),
    #[error("running {binary}: {source}")]
    Spawn {
        binary: String,
        source: std::io::Error,
    },
    #[error("nft {args} failed ({status}): {stderr}")]
    Failed {
        args: String,
        status: String,
        stderr: String,
    },
    #[error("cannot read nft's listing: {0}")]
    BadListing(String),
}

/// The `nft` command-line tool, run inside the calling process's network namespace.
#[derive(Debug, Clone)]
pub struct Nft {
    binary: PathBuf,
    /// When set, `nft` runs through `ip netns exec NAME` (tests and the lab drive a namespace's
    /// tables from outside it).
    netns: Option<String>,
}

impl Default for Nft {
    fn default() -> Self {
        Nft::new()
    }
}

impl Nft {
    /// `nft` from `PATH`.
    pub fn new() -> Nft {
        Nft::with_binary("nft")
    }

    /// A specific `nft` binary.
    pub fn with_binary(binary: impl AsRef<Path>) -> Nft {
        Nft {
            binary: binary.as_ref().to_path_buf(),
            netns: None,
        }
    }

    /// `nft` from `PATH`, run inside the named network namespace (`ip netns exec NAME nft`).
    pub fn in_netns(name: &str) -> Nft {
        Nft {
            binary: PathBuf::from("nft"),
            netns: Some(name.to_string()),
        }
    }

    /// The network namespace `nft` runs in (`None`: the caller's own).
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    /// `nft -j list table FAMILY NAME` as text, or `None` when the table does not exist.
    pub fn list_json(&self, family: &str, table: &str) -> Result<Option<String>, NatError> {
        match self.run(&["-j", "list", "table", family, table], None) {
            Ok(out) => Ok(Some(out)),
            Err(NatError::Failed { stderr, .. })
                if stderr.contains("No such file or directory") =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Runs `script` as one transaction (`nft -f -`).
    pub fn apply(&self, script: &str) -> Result<(), NatError> {
        self.run(&["-f", "-"], Some(script)).map(|_| ())
    }

    /// felix's table in `family` as the kernel has it, or `None` when there is none.
    pub fn list_table(&self, family: Family) -> Result<Option<TableView>, NatError> {
        match self.list_json(family.keyword(), TABLE)? {
            Some(out) => parse_listing(&out).map(Some),
            None => Ok(None),
        }
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String, NatError> {
        let binary = self.binary.display().to_string();
        let spawn_err = |source: std::io::Error| {
            if source.kind() == std::io::ErrorKind::NotFound {
                NatError::NftMissing(binary.clone())
            } else {
                NatError::Spawn {
                    binary: binary.clone(),
                    source,
                }
            }
        };
        let mut command = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.binary);
                c
            }
            None => Command::new(&self.binary),
        };
        let mut child = command
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_err)?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes()).map_err(spawn_err)?;
        }
        let out = child.wait_with_output().map_err(spawn_err)?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(NatError::Failed {
                args: args.join(" "),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }
}

/// What one NAT pass changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NatReport {
    /// Tables (re)written.
    pub applied: usize,
    /// Tables removed.
    pub removed: usize,
    pub errors: usize,
}

/// Keeps the kernel's NAT tables equal to the desired ones: applies a change once, and at each
/// resync compares the kernel's tables with the desired ones and rewrites what drifted. Errors
/// are logged and filed as a readiness reason; they never stop the rest of the dataplane.
#[derive(Debug)]
pub struct NatKeeper {
    nft: Nft,
    health: Arc<Health>,
    /// Per family, the table last written successfully (`Some(None)`: known absent).
    applied: BTreeMap<Family, Option<NatTable>>,
    /// The desired state a flush failed to apply; flushes wait for the next resync to retry it.
    failed: Option<DesiredNat>,
}

impl NatKeeper {
    pub fn new(nft: Nft, health: Arc<Health>) -> NatKeeper {
        NatKeeper {
            nft,
            health,
            applied: BTreeMap::new(),
            failed: None,
        }
    }

    /// Applies the families whose desired table changed since the last write (no nft call when
    /// nothing changed).
    pub fn flush(&mut self, want: &DesiredNat) -> NatReport {
        if self.failed.as_ref() == Some(want) {
            return NatReport::default();
        }
        let mut report = NatReport::default();
        for family in Family::ALL {
            let w = want.table(family);
            if self.applied.get(&family).map(Option::as_ref) == Some(w) {
                continue;
            }
            self.write(family, w, &mut report);
        }
        self.settle(want, report)
    }

    /// Reads the kernel's tables, and rewrites (or removes) each one that differs from `want`.
    pub fn resync(&mut self, want: &DesiredNat) -> NatReport {
        let mut report = NatReport::default();
        for family in Family::ALL {
            let w = want.table(family);
            let live = match self.nft.list_table(family) {
                Ok(live) => live,
                Err(e) if w.is_none() => {
                    // No table wanted in this family, and nft cannot read the kernel's (no nft
                    // binary, or a kernel without nf_tables): nothing of ours can be there
                    // either, so there is nothing to remove and nothing to report.
                    tracing::debug!(family = family.keyword(), error = %e, "nftables unavailable; no NAT table wanted");
                    self.applied.insert(family, None);
                    continue;
                }
                Err(e) => {
                    self.failure(family, &e, &mut report);
                    continue;
                }
            };
            let ok = match (&live, w) {
                (None, None) => true,
                (Some(have), Some(w)) => *have == w.view(),
                _ => false,
            };
            if ok {
                self.applied.insert(family, w.cloned());
            } else {
                if live.is_some() {
                    tracing::info!(
                        family = family.keyword(),
                        "NAT table differs from the pools; rewriting it"
                    );
                }
                self.write(family, w, &mut report);
            }
        }
        self.settle(want, report)
    }

    fn write(&mut self, family: Family, want: Option<&NatTable>, report: &mut NatReport) {
        match self.nft.apply(&script(family, want)) {
            Ok(()) => {
                match want {
                    Some(t) => {
                        report.applied += 1;
                        tracing::info!(
                            family = family.keyword(),
                            masq = ?t.masq_pools,
                            pools = ?t.all_pools,
                            "NAT table written"
                        );
                    }
                    None if self.applied.get(&family) != Some(&None) => {
                        report.removed += 1;
                        tracing::info!(family = family.keyword(), "NAT table removed");
                    }
                    None => {}
                }
                self.applied.insert(family, want.cloned());
            }
            Err(e) => self.failure(family, &e, report),
        }
    }

    fn failure(&mut self, family: Family, e: &NatError, report: &mut NatReport) {
        report.errors += 1;
        self.applied.remove(&family);
        tracing::warn!(family = family.keyword(), error = %e, "NAT table not programmed");
        self.health.set_reason(
            HEALTH_KEY,
            format!("natOutgoing ({}): {e}", family.keyword()),
        );
    }

    fn settle(&mut self, want: &DesiredNat, report: NatReport) -> NatReport {
        if report.errors == 0 {
            self.failed = None;
            self.health.clear_reason(HEALTH_KEY);
        } else {
            self.failed = Some(want.clone());
        }
        report
    }
}

#[cfg(test)]
#[path = "nat_tests.rs"]
mod tests;
