//! felix's start-up clean-up of endpoints left half-made: a workload veth (an
//! `interfacePrefix` name, `cali*` by default) felix made (it carries
//! [`ENDPOINT_ALIAS`]) that no WorkloadEndpoint of this node names is what an ADD cut short (felix killed between creating
//! the veth and writing the endpoint) leaves behind. It holds no address anyone owns, so it
//! goes before the first dataplane update, while no ADD can be running (ADD waits for
//! readiness, which needs that update).
//!
//! An allocation whose handle has no endpoint is not removed here: the runtime's DEL for the
//! failed ADD releases it by handle, and `margayctl ipam check` reports any left.

use std::collections::BTreeSet;

use crate::netlink::{Dataplane, Link, NetlinkError};

use super::ClusterState;

/// This node's FelixConfiguration `interfacePrefix` (its `node.<name>` over `default`): the
/// host sides of pods' veths start with one of them.
pub fn workload_prefixes(state: &ClusterState) -> Vec<String> {
    let (s, _) = crate::settings::merge(
        state.felix_configs.get(crate::settings::GLOBAL),
        state
            .felix_configs
            .get(&crate::settings::node_config_name(&state.node)),
        &Default::default(),
    );
    s.dataplane.interface_prefixes
}
/// The alias felix's ADD gives the host side of every veth it makes. Only veths with it are
/// ever swept: a `cali*` veth someone else made (Calico's, before a migration, or an
/// operator's) is left alone.
pub const ENDPOINT_ALIAS: &str = "margay-endpoint";

/// The links that are pod veths with no endpoint of `state` naming them (pure).
pub fn orphan_veths<'a>(links: &'a [Link], state: &ClusterState) -> Vec<&'a Link> {
    let owned: BTreeSet<&str> = state
        .endpoints
        .values()
        .map(|e| e.interface_name.as_str())
        .collect();
    let prefixes = workload_prefixes(state);
    links
        .iter()
        .filter(|l| {
            l.kind.as_deref() == Some("veth")
                && l.alias.as_deref() == Some(ENDPOINT_ALIAS)
                && crate::settings::is_workload_interface(&prefixes, &l.name)
                && !owned.contains(l.name.as_str())
        })
        .collect()
}

/// Deletes every orphan veth in felix's namespace; returns their names. Blocking (netlink).
pub fn remove_orphan_veths(state: &ClusterState) -> Result<Vec<String>, NetlinkError> {
    let mut dp = Dataplane::new()?;
    let links = dp.links()?;
    let mut removed = Vec::new();
    for l in orphan_veths(&links, state) {
        match dp.delete_link(l.index) {
            Ok(()) => removed.push(l.name.clone()),
            // Gone meanwhile (a DEL of the same pod).
            Err(e) if e.errno() == Some(libc::ENODEV) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use margay_datastore::resources::WorkloadEndpointSpec;

    /// A link with felix's endpoint mark.
    fn link(name: &str, kind: &str) -> Link {
        Link {
            index: 1,
            name: name.into(),
            kind: Some(kind.into()),
            mtu: 1500,
            up: true,
            mac: None,
            alias: Some(ENDPOINT_ALIAS.into()),
        }
    }

    #[test]
    fn only_pod_veths_without_an_endpoint_are_orphans() {
        let mut state = ClusterState::new("n1");
        state.endpoints.insert(
            "default/n1-k8s-web-eth0".into(),
            WorkloadEndpointSpec {
                interface_name: "cali0123456789a".into(),
                ..Default::default()
            },
        );
        let links = [
            link("cali0123456789a", "veth"),
            link("calibbbbbbbbbbb", "veth"),
            link("calinotaveth", "dummy"),
            link("eth0", "veth"),
            Link {
                alias: None,
                ..link("calicccccccccccc", "veth")
            },
        ];
        let names: Vec<&str> = orphan_veths(&links, &state)
            .iter()
            .map(|l| l.name.as_str())
            .collect();
        assert_eq!(
            names,
            ["calibbbbbbbbbbb"],
            "a veth felix did not make is left alone"
        );
    }
}
