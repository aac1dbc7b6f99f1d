//! The registry walked whole: a fixture with every field parses, each document reports exactly
//! the not-acted fields it sets, and the README lists exactly the not-acted fields.

use super::*;
use crate::resources::{KINDS, parse_documents};
use std::collections::BTreeMap;

const FIXTURE: &str = include_str!("every_field.yaml");
const README: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"));

/// The kinds the registry covers.
const COVERED: [&str; 5] = ["BGPConfiguration", "BGPPeer", "BGPFilter", "IPPool", "Node"];

fn registry(kind: &str) -> BTreeSet<String> {
    FIELDS
        .iter()
        .filter(|f| f.kind == kind)
        .map(|f| f.path.to_string())
        .collect()
}

#[test]
fn fixture_sets_every_registered_field_and_nothing_else() {
    let rs = parse_documents(FIXTURE).expect("the fixture parses and validates");
    let mut seen: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for r in &rs {
        let mut paths = BTreeSet::new();
        leaf_paths(&r.to_value()["spec"], "spec", &mut paths);
        seen.entry(r.info().kind).or_default().extend(paths);
    }
    for kind in COVERED {
        assert_eq!(
            seen.get(kind).cloned().unwrap_or_default(),
            registry(kind),
            "{kind}: fixture fields (left) vs registry (right)"
        );
    }
    assert!(COVERED.iter().all(|k| KINDS.iter().any(|i| i.kind == *k)));
}

#[test]
fn each_document_reports_exactly_its_not_acted_fields() {
    let rs = parse_documents(FIXTURE).unwrap();
    let mut reported: BTreeSet<(&str, &str)> = BTreeSet::new();
    for r in &rs {
        let mut paths = BTreeSet::new();
        leaf_paths(&r.to_value()["spec"], "spec", &mut paths);
        // FelixConfiguration registers top-level fields: a set leaf sets every field above it.
        let above: Vec<String> = paths
            .iter()
            .flat_map(|p| {
                p.match_indices(['.', '['])
                    .map(|(i, _)| p[..i].to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        paths.extend(above);
        let want: Vec<&str> = FIELDS
            .iter()
            .filter(|f| f.kind == r.info().kind && matches!(f.status, NotActed(_)))
            .filter(|f| paths.contains(f.path))
            .map(|f| f.path)
            .collect();
        let got: Vec<&str> = not_acted(r).iter().map(|n| n.field).collect();
        assert_eq!(got, want, "{} '{}'", r.info().kind, r.name());
        reported.extend(got.into_iter().map(|p| (r.info().kind, p)));
    }
    let all: BTreeSet<(&str, &str)> = FIELDS
        .iter()
        .filter(|f| matches!(f.status, NotActed(_)))
        .map(|f| (f.kind, f.path))
        .collect();
    assert_eq!(reported, all, "every not-acted field is reported somewhere");
}

#[test]
fn warning_line_names_kind_resource_field_and_reason() {
    let rs = parse_documents(FIXTURE).unwrap();
    let line = not_acted(&rs[0])
        .iter()
        .find(|n| n.field == "spec.localWorkloadPeeringIPV4")
        .expect("reported")
        .to_string();
    assert!(
        line.starts_with("BGPConfiguration 'default': spec.localWorkloadPeeringIPV4 is accepted but not acted on: "),
        "{line}"
    );
    let plain = parse_documents(
        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: p}\nspec: {peerIP: 10.0.0.1, asNumber: 65001}\n",
    )
    .unwrap();
    assert!(not_acted(&plain[0]).is_empty());
}

/// The README's "accepted but not acted on" list: lines `- `Kind` `spec.path`: reason`.
fn readme_list() -> BTreeSet<(String, String)> {
    let start = README
        .find("<!-- not-acted:start -->")
        .expect("README has the not-acted list");
    let end = README.find("<!-- not-acted:end -->").expect("list end");
    README[start..end]
        .lines()
        .filter_map(|l| {
            let l = l.strip_prefix("- `")?;
            let (kind, rest) = l.split_once("` `")?;
            let (path, _) = rest.split_once('`')?;
            Some((kind.to_string(), path.to_string()))
        })
        .collect()
}

#[test]
fn readme_lists_exactly_the_not_acted_fields() {
    let want: BTreeSet<(String, String)> = FIELDS
        .iter()
        .filter(|f| matches!(f.status, NotActed(_)))
        .map(|f| (f.kind.to_string(), f.path.to_string()))
        .collect();
    assert_eq!(readme_list(), want, "README (left) vs registry (right)");
}

#[test]
fn is_set_walks_lists_and_ignores_null() {
    let v = serde_json::json!({"a": [{"b": 1}, {"c": null}], "d": null, "e": {"f": false}});
    assert!(is_set(&v, "a[].b"));
    assert!(!is_set(&v, "a[].c"));
    assert!(!is_set(&v, "d"));
    assert!(is_set(&v, "e.f"));
    assert!(!is_set(&v, "x"));
}

#[test]
fn typed_resources_report_the_same_as_any() {
    let rs = parse_documents(FIXTURE).unwrap();
    for r in &rs {
        let typed = match r {
            AnyResource::BgpConfiguration(x) => x.not_acted(),
            AnyResource::BgpPeer(x) => x.not_acted(),
            AnyResource::BgpFilter(x) => x.not_acted(),
            AnyResource::IpPool(x) => x.not_acted(),
            AnyResource::Node(x) => x.not_acted(),
            _ => continue,
        };
        assert_eq!(typed, not_acted(r));
        // The first read logs each field once; the same fields read again log nothing.
        assert_eq!(log_not_acted_once(r), typed.len(), "{}", r.name());
        assert_eq!(log_not_acted_once(r), 0);
    }
}

#[test]
fn felix_configuration_fixture_sets_every_registered_top_level_field() {
    let rs = parse_documents(FIXTURE).unwrap();
    let felix: Vec<&AnyResource> = rs
        .iter()
        .filter(|r| r.info().kind == "FelixConfiguration")
        .collect();
    assert_eq!(felix.len(), 1);
    let spec = felix[0].to_value()["spec"].clone();
    let keys: BTreeSet<String> = spec
        .as_object()
        .unwrap()
        .keys()
        .map(|k| format!("spec.{k}"))
        .collect();
    assert_eq!(
        keys,
        registry("FelixConfiguration"),
        "fixture (left) vs registry (right)"
    );
    // One warning line per field, naming it.
    let line = not_acted(felix[0])
        .iter()
        .find(|n| n.field == "spec.bpfEnabled")
        .expect("reported")
        .to_string();
    assert!(
        line.starts_with(
            "FelixConfiguration 'default': spec.bpfEnabled is accepted but not acted on: "
        ),
        "{line}"
    );
}
