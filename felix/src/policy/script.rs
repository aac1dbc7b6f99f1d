//! nft scripts that take the policy table from one [`Table`] to another: the incremental
//! transaction felix applies on every change, and the full load (replace the whole table) used
//! when the kernel's table cannot be patched and as the benchmark's baseline.
//!
//! Both are one `nft -f -` run, which the kernel commits as one transaction: the old rules hold
//! until the new ones take over, and a script that fails changes nothing.
//!
//! The incremental script's order matters within the transaction: sets and their elements first,
//! then new chains (declared empty, so chains can jump to each other in any order), then the
//! rules of new and changed chains, then the dispatch maps, and last the chains and sets nothing
//! refers to any more.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use super::incremental::Touched;
use super::render::{ChainSpec, MAP_IN, MAP_OUT, MapSpec, SetSpec, TABLE, TABLE_FAMILY, Table};

fn qualified(name: &str) -> String {
    format!("{TABLE_FAMILY} {TABLE} {name}")
}

fn set_decl(name: &str, s: &SetSpec) -> String {
    let flags = if s.interval { " flags interval;" } else { "" };
    format!(
        "add set {} {{ type {};{flags} }}\n",
        qualified(name),
        s.kind
    )
}

fn chain_decl(name: &str, c: &ChainSpec) -> String {
    match &c.hook {
        Some(h) => format!(
            "add chain {} {{ type filter hook {} priority {}; policy accept; }}\n",
            qualified(name),
            h.hook,
            h.priority
        ),
        None => format!("add chain {}\n", qualified(name)),
    }
}

fn rules(out: &mut String, name: &str, c: &ChainSpec) {
    for r in &c.rules {
        let _ = writeln!(
            out,
            "add rule {} {} comment \"{}\"",
            qualified(name),
            r.text,
            r.id
        );
    }
}

/// Elements as nft's `{ a, b }` list, in chunks (one very long line slows nft's parser down).
fn elements<'a>(out: &mut String, verb: &str, name: &str, items: impl Iterator<Item = &'a String>) {
    let items: Vec<&String> = items.collect();
    for chunk in items.chunks(500) {
        let list: Vec<&str> = chunk.iter().map(|s| s.as_str()).collect();
        let _ = writeln!(
            out,
            "{verb} element {} {{ {} }}",
            qualified(name),
            list.join(", ")
        );
    }
}

fn map_entries(out: &mut String, verb: &str, name: &str, entries: &[(&String, &String)]) {
    for chunk in entries.chunks(500) {
        let list: Vec<String> = chunk
            .iter()
            .map(|(k, v)| {
                if verb == "delete" {
                    format!("\"{k}\"")
                } else {
                    format!("\"{k}\" : {v}")
                }
            })
            .collect();
        let _ = writeln!(
            out,
            "{verb} element {} {{ {} }}",
            qualified(name),
            list.join(", ")
        );
    }
}

/// The script that loads `want` from scratch, replacing whatever table is there.
pub fn full(want: &Table) -> String {
    let mut s = format!(
        "add table {TABLE_FAMILY} {TABLE}\ndelete table {TABLE_FAMILY} {TABLE}\nadd table {TABLE_FAMILY} {TABLE}\n"
    );
    s.push_str(&body(want));
    s
}

fn body(want: &Table) -> String {
    let mut s = String::new();
    for (name, set) in &want.sets {
        s.push_str(&set_decl(name, set));
        elements(&mut s, "add", name, set.elements.iter());
    }
    for name in want.maps.keys() {
        let _ = writeln!(
            s,
            "add map {} {{ type ifname : verdict; }}",
            qualified(name)
        );
    }
    for (name, c) in &want.chains {
        s.push_str(&chain_decl(name, c));
    }
    for (name, c) in &want.chains {
        rules(&mut s, name, c);
    }
    for (name, m) in &want.maps {
        let entries: Vec<_> = m.entries.iter().collect();
        map_entries(&mut s, "add", name, &entries);
    }
    s
}

/// The names a delta looks at: those a change touched, or (`None`) every name of both tables.
fn names<'a, V>(
    have: &'a BTreeMap<String, V>,
    want: &'a BTreeMap<String, V>,
    touched: Option<&'a BTreeSet<String>>,
) -> Vec<&'a String> {
    match touched {
        Some(t) => t.iter().collect(),
        None => have
            .keys()
            .chain(want.keys())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
    }
}

/// Whether `have` can be patched into `want` (looking at `sets` and `chains`): same set types,
/// base chains with the same hooks, both dispatch maps present.
fn patchable(have: &Table, want: &Table, sets: &[&String], chains: &[&String]) -> bool {
    let sets_ok = sets
        .iter()
        .all(|name| match (have.sets.get(*name), want.sets.get(*name)) {
            (Some(h), Some(w)) => h.kind == w.kind && h.interval == w.interval,
            _ => true,
        });
    let chains_ok =
        chains.iter().all(
            |name| match (have.chains.get(*name), want.chains.get(*name)) {
                (Some(h), Some(w)) => h.hook == w.hook,
                _ => true,
            },
        );
    let maps_ok = [MAP_IN, MAP_OUT]
        .iter()
        .all(|m| have.maps.contains_key(*m) == want.maps.contains_key(*m));
    sets_ok && chains_ok && maps_ok
}

/// The transaction that turns `have` (the table felix last wrote, or the kernel's listing) into
/// `want`; `have == None` means there is no table. Empty when nothing differs.
pub fn delta(have: Option<&Table>, want: &Table) -> String {
    match have {
        None => format!("add table {TABLE_FAMILY} {TABLE}\n{}", body(want)),
        Some(have) => delta_in(have, want, None),
    }
}

/// [`delta`] looking only at the names a change touched (`have` being what felix last wrote).
pub fn delta_touched(have: &Table, want: &Table, touched: &Touched) -> String {
    delta_in(have, want, (!touched.all).then_some(touched))
}

fn delta_in(have: &Table, want: &Table, touched: Option<&Touched>) -> String {
    let sets = names(&have.sets, &want.sets, touched.map(|t| &t.sets));
    let chains = names(&have.chains, &want.chains, touched.map(|t| &t.chains));
    if !patchable(have, want, &sets, &chains) {
        return full(want);
    }
    let mut s = String::new();
    // Sets: new ones, then element changes of existing ones.
    for name in &sets {
        let Some(w) = want.sets.get(*name) else {
            continue;
        };
        match have.sets.get(*name) {
            None => {
                s.push_str(&set_decl(name, w));
                elements(&mut s, "add", name, w.elements.iter());
            }
            Some(h) if h.odd_elements > 0 => {
                let _ = writeln!(s, "flush set {}", qualified(name));
                elements(&mut s, "add", name, w.elements.iter());
            }
            Some(h) => {
                elements(&mut s, "delete", name, h.elements.difference(&w.elements));
                elements(&mut s, "add", name, w.elements.difference(&h.elements));
            }
        }
    }
    // Chains: declare the new ones, then (re)write the rules of new and changed ones.
    for name in &chains {
        if let (None, Some(w)) = (have.chains.get(*name), want.chains.get(*name)) {
            s.push_str(&chain_decl(name, w));
        }
    }
    for name in &chains {
        let Some(w) = want.chains.get(*name) else {
            continue;
        };
        match have.chains.get(*name) {
            None => rules(&mut s, name, w),
            Some(h) if !h.same_as(w) => {
                let _ = writeln!(s, "flush chain {}", qualified(name));
                rules(&mut s, name, w);
            }
            Some(_) => {}
        }
    }
    // Dispatch maps: removed and changed entries out, then new and changed ones in.
    let empty_map = MapSpec::default();
    let empty_keys = BTreeSet::new();
    for (name, w) in &want.maps {
        let h = have.maps.get(name).unwrap_or(&empty_map);
        let keys: Vec<&String> = match touched {
            Some(t) => t.entries.get(name).unwrap_or(&empty_keys).iter().collect(),
            None => names(&h.entries, &w.entries, None),
        };
        let gone: Vec<_> = keys
            .iter()
            .filter_map(|k| h.entries.get_key_value(*k))
            .filter(|(k, v)| w.entries.get(*k) != Some(*v))
            .collect();
        map_entries(&mut s, "delete", name, &gone);
        let new: Vec<_> = keys
            .iter()
            .filter_map(|k| w.entries.get_key_value(*k))
            .filter(|(k, v)| h.entries.get(*k) != Some(*v))
            .collect();
        map_entries(&mut s, "add", name, &new);
    }
    // What nothing refers to any more: chains (flushed first, as they may jump to each other),
    // then sets and maps.
    let stale: Vec<&&String> = chains
        .iter()
        .filter(|n| have.chains.contains_key(**n) && !want.chains.contains_key(**n))
        .collect();
    for name in &stale {
        let _ = writeln!(s, "flush chain {}", qualified(name));
    }
    for name in &stale {
        let _ = writeln!(s, "delete chain {}", qualified(name));
    }
    for name in sets
        .iter()
        .filter(|n| have.sets.contains_key(**n) && !want.sets.contains_key(**n))
    {
        let _ = writeln!(s, "delete set {}", qualified(name));
    }
    for name in have.maps.keys().filter(|n| !want.maps.contains_key(*n)) {
        let _ = writeln!(s, "delete map {}", qualified(name));
    }
    s
}
