//! Unit tests of the pure policy modules: rendering, deltas, listings.

use std::collections::{BTreeMap, BTreeSet};

use super::ir::*;
use super::render::*;
use super::script;
use crate::nat::Family;

fn tier(name: &str, policies: &[&str]) -> TierSeq {
    TierSeq {
        tier: name.into(),
        policies: policies.iter().map(|s| s.to_string()).collect(),
        end: TierEnd::Deny,
    }
}

fn allow_from(set: &str, port: u16) -> Rule {
    let mut r = Rule::any(Action::Allow);
    r.protocol = Some(6);
    r.source.sets = vec![set.into()];
    r.destination.ports = vec![PortRange::one(port)];
    r
}

fn sample() -> PolicyIr {
    let mut ir = PolicyIr::default();
    ir.policies.insert(
        "default/allow-web".into(),
        PolicyRules {
            ingress: Some(vec![allow_from("sel:app == 'client'", 80)]),
            egress: None,
        },
    );
    ir.addr_sets.insert(
        "sel:app == 'client'".into(),
        BTreeSet::from(["10.0.0.1/32".parse().unwrap()]),
    );
    ir.endpoints.insert(
        "cali1".into(),
        EndpointPolicy {
            ingress: vec![tier("default", &["default/allow-web"])],
            egress: vec![],
        },
    );
    ir.endpoints
        .insert("cali2".into(), EndpointPolicy::default());
    ir
}

#[test]
fn endpoint_without_policy_is_accepted_by_its_map_entry() {
    let t = render(&sample());
    assert_eq!(t.maps[MAP_IN].entries["cali2"], "accept");
    assert_eq!(t.maps[MAP_OUT].entries["cali1"], "accept");
    assert!(t.maps[MAP_IN].entries["cali1"].starts_with("jump s-in-"));
}

#[test]
fn allow_rule_names_its_selector_set_and_port() {
    let t = render(&sample());
    let chain = &t.chains[&policy_chain("default/allow-web", Direction::Ingress)];
    let set = addr_set_name("sel:app == 'client'", Family::V4);
    assert_eq!(
        chain.rules[0].text,
        format!("meta l4proto 6 ip saddr @{set} th dport 80 accept")
    );
}

#[test]
fn endpoints_with_the_same_policies_share_one_sequence_chain() {
    let mut ir = sample();
    let ep = ir.endpoints["cali1"].clone();
    ir.endpoints.insert("cali3".into(), ep);
    let t = render(&ir);
    assert_eq!(
        t.maps[MAP_IN].entries["cali1"],
        t.maps[MAP_IN].entries["cali3"]
    );
    let seqs = t.chains.keys().filter(|k| k.starts_with("s-in-")).count();
    assert_eq!(seqs, 2, "one sequence chain and its one tier chain");
}

#[test]
fn new_pod_with_known_policies_changes_only_map_and_set_elements() {
    let before = render(&sample());
    let mut ir = sample();
    let ep = ir.endpoints["cali1"].clone();
    ir.endpoints.insert("cali3".into(), ep);
    ir.addr_sets
        .get_mut("sel:app == 'client'")
        .unwrap()
        .insert("10.0.0.9/32".parse().unwrap());
    let text = script::delta(Some(&before), &render(&ir));
    for line in text.lines() {
        assert!(line.starts_with("add element"), "unexpected line: {line}");
    }
    assert_eq!(text.lines().count(), 3, "{text}");
}

#[test]
fn policy_change_rewrites_only_its_own_chain() {
    let before = render(&sample());
    let mut ir = sample();
    ir.policies.get_mut("default/allow-web").unwrap().ingress =
        Some(vec![allow_from("sel:app == 'client'", 8080)]);
    let text = script::delta(Some(&before), &render(&ir));
    let chain = policy_chain("default/allow-web", Direction::Ingress);
    assert!(
        text.starts_with(&format!("flush chain inet margay-policy {chain}\n")),
        "{text}"
    );
    assert_eq!(text.lines().count(), 2, "{text}");
}

#[test]
fn unchanged_table_needs_no_transaction() {
    let t = render(&sample());
    assert_eq!(script::delta(Some(&t), &t), "");
}

#[test]
fn pass_sets_the_mark_and_tiers_return_on_it() {
    let mut ir = sample();
    ir.policies.insert(
        "sec".into(),
        PolicyRules {
            ingress: Some(vec![Rule::any(Action::Pass)]),
            egress: None,
        },
    );
    ir.endpoints.get_mut("cali1").unwrap().ingress = vec![
        tier("security", &["sec"]),
        tier("default", &["default/allow-web"]),
    ];
    let t = render(&ir);
    assert_eq!(
        t.chains[&policy_chain("sec", Direction::Ingress)].rules[0].text,
        "meta mark set meta mark | 0x00020000 return"
    );
    let seq = t.maps[MAP_IN].entries["cali1"]
        .trim_start_matches("jump ")
        .to_string();
    let tier0: Vec<&str> = t.chains[&format!("{seq}-0")]
        .rules
        .iter()
        .map(|r| r.text.as_str())
        .collect();
    assert_eq!(tier0[2], "meta mark & 0x00020000 == 0x00020000 return");
    assert_eq!(tier0.last(), Some(&"drop"));
}

#[test]
fn numeric_and_named_ports_become_two_rules() {
    let mut r = Rule::any(Action::Allow);
    r.protocol = Some(6);
    r.destination.ports = vec![
        PortRange {
            first: 80,
            last: 81,
        },
        PortRange::one(82),
    ];
    r.destination.named_ports = Some("np:http".into());
    let texts = rule_texts(&r, &[Family::V4], "x");
    assert_eq!(texts.len(), 2);
    assert_eq!(texts[0], "meta l4proto 6 th dport 80-82 accept");
    assert!(texts[1].contains("ip daddr . meta l4proto . th dport @p-"));
}

#[test]
fn listing_reads_back_what_felix_writes() {
    let json = r#"{"nftables": [
      {"map": {"family": "inet", "name": "wl-in", "table": "margay-policy", "type": "ifname", "map": "verdict",
               "elem": [["cali1", {"jump": {"target": "s-in-x"}}], ["cali2", {"accept": null}]]}},
      {"set": {"family": "inet", "name": "a-1-4", "table": "margay-policy", "type": "ipv4_addr", "flags": ["interval"],
               "elem": [{"prefix": {"addr": "10.0.0.0", "len": 31}}, "10.0.0.5"]}},
      {"set": {"family": "inet", "name": "p-1-4", "table": "margay-policy", "type": ["ipv4_addr", "inet_proto", "inet_service"],
               "elem": [{"concat": ["10.0.0.1", "tcp", 80]}]}},
      {"chain": {"family": "inet", "table": "margay-policy", "name": "forward-in", "type": "filter", "hook": "forward", "prio": 1, "policy": "accept"}},
      {"rule": {"family": "inet", "table": "margay-policy", "chain": "forward-in", "comment": "abc", "expr": []}}
    ]}"#;
    let t = super::listing::parse(json).unwrap();
    assert_eq!(t.maps["wl-in"].entries["cali1"], "jump s-in-x");
    assert_eq!(t.maps["wl-in"].entries["cali2"], "accept");
    assert_eq!(
        t.sets["a-1-4"].elements,
        BTreeSet::from(["10.0.0.0/31".to_string(), "10.0.0.5/32".to_string()])
    );
    assert_eq!(
        t.sets["p-1-4"].kind,
        "ipv4_addr . inet_proto . inet_service"
    );
    assert!(t.sets["p-1-4"].elements.contains("10.0.0.1 . 6 . 80"));
    let c = &t.chains["forward-in"];
    assert_eq!(
        c.hook,
        Some(Hook {
            hook: "forward".into(),
            priority: 1
        })
    );
    assert_eq!(c.rules[0].id, "abc");
    let _ = BTreeMap::<u8, u8>::new();
}

/// Steps through changes of every kind; after each, the kept table equals a whole render, and
/// the touched-only delta equals the whole-table delta.
#[test]
fn incremental_render_equals_a_whole_render_after_every_kind_of_change() {
    use super::incremental::Rendered;
    let mut steps = vec![sample()];
    let mut ir = sample();
    // A new pod with the same policy (shares the sequence chain).
    ir.endpoints
        .insert("cali3".into(), ir.endpoints["cali1"].clone());
    steps.push(ir.clone());
    // A label change: a member leaves one set and joins another.
    ir.addr_sets
        .get_mut("sel:app == 'client'")
        .unwrap()
        .insert("10.0.0.9/32".parse().unwrap());
    steps.push(ir.clone());
    // A new policy with egress only, selecting cali1: a new sequence for cali1 alone.
    ir.policies.insert(
        "default/egress".into(),
        PolicyRules {
            ingress: None,
            egress: Some(vec![Rule::any(Action::Deny)]),
        },
    );
    ir.endpoints.get_mut("cali1").unwrap().egress = vec![tier("default", &["default/egress"])];
    steps.push(ir.clone());
    // The policy's types change (ingress too): endpoints' sequences change with it.
    ir.policies.get_mut("default/egress").unwrap().ingress = Some(vec![]);
    ir.endpoints.get_mut("cali1").unwrap().ingress =
        vec![tier("default", &["default/allow-web", "default/egress"])];
    steps.push(ir.clone());
    // A rule change of a policy only.
    ir.policies.get_mut("default/allow-web").unwrap().ingress =
        Some(vec![allow_from("sel:app == 'client'", 8080)]);
    steps.push(ir.clone());
    // A pod goes; a policy and its set go.
    ir.endpoints.remove("cali3");
    ir.endpoints.remove("cali1");
    ir.policies.remove("default/egress");
    ir.addr_sets.remove("sel:app == 'client'");
    ir.policies.remove("default/allow-web");
    steps.push(ir.clone());
    // IPv6 appears: everything is rendered again.
    ir.families = vec![Family::V4, Family::V6];
    steps.push(ir.clone());
    steps.push(sample());

    let mut kept = Rendered::new(steps[0].clone());
    for (n, next) in steps.iter().enumerate().skip(1) {
        let before = kept.table().clone();
        let touched = kept.update(next.clone());
        let whole = render(next);
        assert_eq!(kept.table(), &whole, "step {n}: kept table differs");
        assert_eq!(
            script::delta_touched(&before, &whole, &touched),
            script::delta(Some(&before), &whole),
            "step {n}: touched delta differs"
        );
        assert!(!touched.is_empty(), "step {n} changed something");
    }
    assert!(
        kept.update(sample()).is_empty(),
        "no change touches nothing"
    );
}
