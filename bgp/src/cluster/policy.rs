//! Calico's BGP policy resources as bgpd's policy tables: IPPools become `[[pools]]`,
//! BGPFilters `[[filters]]`, BGPConfiguration `prefixAdvertisements` `[[advertise]]`, and a
//! BGPPeer's `filters` the neighbour's filter list. Pure: the model in, tables and notes out.
//!
//! A BGPPeer naming a BGPFilter that does not exist peers without it, with a note: Calico's
//! confd does the same (it leaves out a filter it cannot read when it builds the peer's import
//! and export functions), silently.

use super::peerings::Model;
use crate::policy::config::{
    AdvertiseConfig, FilterConfig, PoolConfig, PrefixLength as PrefixLengthConfig, RuleConfig,
};
use crate::policy::{Action, MatchOperator, RuleSource};
use margay_datastore::resources::{
    BgpConfigurationSpec, BgpFilterRule, BgpFilterSpec, FilterAction, MatchOperator as CalicoOp,
    MatchSource,
};
use std::collections::BTreeSet;
use toml::Spanned;

fn bare<T>(v: T) -> Spanned<T> {
    Spanned::new(0..0, v)
}

/// Every IPPool with a CIDR, disabled ones included (their blocks are still the cluster's);
/// `export` is `!disableBGPExport`. Sorted by CIDR, so the result does not depend on names.
pub fn pools(model: &Model, notes: &mut BTreeSet<String>) -> Vec<PoolConfig> {
    let mut out = BTreeSet::new();
    for p in model.pools.values() {
        match p.spec.net() {
            Some(net) => {
                out.insert((net, !p.spec.disable_bgp_export));
            }
            None => {
                notes.insert(format!(
                    "IPPool '{}': cidr '{}' is not a CIDR; not a pool for BGP",
                    p.name(),
                    p.spec.cidr
                ));
            }
        }
    }
    out.into_iter()
        .map(|(net, export)| PoolConfig {
            cidr: bare(net),
            export,
        })
        .collect()
}

/// `prefixAdvertisements`, names resolved through `communities`; an entry without any
/// community that resolves is left out.
pub fn advertise(bgp: &BgpConfigurationSpec) -> Vec<AdvertiseConfig> {
    bgp.prefix_communities()
        .into_iter()
        .filter(|(_, values)| !values.is_empty())
        .map(|(cidr, values)| AdvertiseConfig {
            cidr: bare(cidr),
            communities: values.iter().map(|v| bare(v.to_string())).collect(),
        })
        .collect()
}

fn rule(r: &BgpFilterRule) -> Option<RuleConfig> {
    let byte = |x: Option<i32>| x.and_then(|x| u8::try_from(x).ok());
    Some(RuleConfig {
        action: bare(match r.action {
            FilterAction::Accept => Action::Accept,
            FilterAction::Reject => Action::Reject,
        }),
        match_operator: r.match_operator.map(|op| match op {
            CalicoOp::Equal => MatchOperator::Equal,
            CalicoOp::NotEqual => MatchOperator::NotEqual,
            CalicoOp::In => MatchOperator::In,
            CalicoOp::NotIn => MatchOperator::NotIn,
        }),
        cidr: match &r.cidr {
            Some(_) => Some(bare(r.net()?)),
            None => None,
        },
        prefix_length: r.prefix_length.map(|p| PrefixLengthConfig {
            min: byte(p.min),
            max: byte(p.max),
        }),
        source: r
            .source
            .map(|MatchSource::RemotePeers| RuleSource::RemotePeers),
        interface: r.interface.clone(),
    })
}

/// One BGPFilter as a `[[filters]]` table, if every rule converts and checks.
fn filter(name: &str, spec: &BgpFilterSpec) -> Option<FilterConfig> {
    let list = |rules: &[BgpFilterRule]| rules.iter().map(rule).collect::<Option<Vec<_>>>();
    let f = FilterConfig {
        name: bare(name.to_string()),
        export_v4: list(&spec.export_v4)?,
        import_v4: list(&spec.import_v4)?,
        export_v6: list(&spec.export_v6)?,
        import_v6: list(&spec.import_v6)?,
    };
    f.check(0).ok().map(|_| f)
}

/// Every BGPFilter bgpd can apply, by name; one that does not check (the datastore validates
/// them, so only a hand-written key could) is left out with a note.
pub fn filters(model: &Model, notes: &mut BTreeSet<String>) -> Vec<FilterConfig> {
    model
        .filters
        .values()
        .filter_map(|f| {
            let out = filter(f.name(), &f.spec);
            if out.is_none() {
                notes.insert(format!(
                    "BGPFilter '{}' has a rule bgpd cannot apply; peers that name it run without it",
                    f.name()
                ));
            }
            out
        })
        .collect()
}

/// A BGPPeer's `filters`, in order, keeping only those in `known`; each missing one is a note
/// naming both.
pub fn peer_filters(
    peer: &str,
    names: &[String],
    known: &BTreeSet<String>,
    notes: &mut BTreeSet<String>,
) -> Vec<Spanned<String>> {
    names
        .iter()
        .filter(|n| {
            let ok = known.contains(n.as_str());
            if !ok {
                notes.insert(format!(
                    "BGPPeer '{peer}' names BGPFilter '{n}', which does not exist: its sessions run without it (as Calico's)"
                ));
            }
            ok
        })
        .map(|n| bare(n.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use margay_datastore::resources::{AnyResource, parse_documents};

    fn model(yaml: &str) -> Model {
        let mut m = Model::default();
        for r in parse_documents(yaml).expect("manifests parse") {
            match r {
                AnyResource::IpPool(p) => {
                    m.pools.insert(p.name().to_string(), p);
                }
                AnyResource::BgpFilter(f) => {
                    m.filters.insert(f.name().to_string(), f);
                }
                AnyResource::BgpConfiguration(c) => m.bgp = Some(c.spec),
                other => panic!("unexpected {other:?}"),
            }
        }
        m
    }

    #[test]
    fn pools_export_unless_disable_bgp_export_and_disabled_pools_count() {
        let m = model(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: a}\nspec: {cidr: 10.244.0.0/16}\n---\n\
             apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: b}\nspec: {cidr: 10.96.0.0/16, disableBGPExport: true}\n---\n\
             apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: c}\nspec: {cidr: 'fd00::/48', disabled: true}\n",
        );
        let mut notes = BTreeSet::new();
        let p = pools(&m, &mut notes);
        let got: Vec<(String, bool)> = p
            .iter()
            .map(|p| (p.cidr.get_ref().to_string(), p.export))
            .collect();
        assert_eq!(
            got,
            [
                ("10.96.0.0/16".to_string(), false),
                ("10.244.0.0/16".to_string(), true),
                ("fd00::/48".to_string(), true),
            ]
        );
        assert!(notes.is_empty());
        assert!(p.iter().enumerate().all(|(i, p)| p.check(i).is_ok()));
    }

    #[test]
    fn prefix_advertisements_resolve_names_to_values() {
        let m = model(
            "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\nspec:\n  \
             communities: [{name: ours, value: '65000:100'}]\n  \
             prefixAdvertisements:\n  - cidr: 10.244.0.0/16\n    communities: [ours, '65000:1:2']\n",
        );
        let a = advertise(m.bgp.as_ref().unwrap());
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].cidr.get_ref().to_string(), "10.244.0.0/16");
        let values: Vec<&str> = a[0]
            .communities
            .iter()
            .map(|c| c.get_ref().as_str())
            .collect();
        assert_eq!(values, ["65000:100", "65000:1:2"]);
        assert!(a[0].check(0).is_ok());
    }

    #[test]
    fn a_bgp_filter_becomes_a_filters_table_that_checks() {
        let m = model(
            "apiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata: {name: tor}\nspec:\n  \
             exportV4:\n  - {action: Accept, source: RemotePeers}\n  \
             - {action: Reject, matchOperator: In, cidr: 10.0.0.0/8, prefixLength: {min: 24}}\n  \
             importV6:\n  - {action: Reject, matchOperator: Equal, cidr: 'fd00:1::/64'}\n  \
             - {action: Accept, interface: 'eth*'}\n",
        );
        let mut notes = BTreeSet::new();
        let f = filters(&m, &mut notes);
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(f.len(), 1);
        let checked = f[0].check(0).map_err(|e| e.message).unwrap();
        assert_eq!(checked.name, "tor");
        assert_eq!(checked.export_v4.len(), 2);
        assert_eq!(checked.export_v4[0].source, Some(RuleSource::RemotePeers));
        assert_eq!(checked.export_v4[1].prefix_length, Some((24, 32)));
        assert_eq!(
            checked.import_v6[0].cidr,
            Some((MatchOperator::Equal, "fd00:1::/64".parse().unwrap()))
        );
        assert_eq!(checked.import_v6[1].interface.as_deref(), Some("eth*"));
    }

    #[test]
    fn a_missing_filter_is_left_out_with_a_note_naming_both() {
        let known: BTreeSet<String> = ["a".to_string()].into();
        let mut notes = BTreeSet::new();
        let got = peer_filters(
            "tor",
            &["a".into(), "nope".into(), "a".into()],
            &known,
            &mut notes,
        );
        let got: Vec<&str> = got.iter().map(|s| s.get_ref().as_str()).collect();
        assert_eq!(got, ["a", "a"]);
        let note = notes.iter().next().unwrap();
        assert!(
            note.contains("BGPPeer 'tor'") && note.contains("BGPFilter 'nope'"),
            "{note}"
        );
    }
}
