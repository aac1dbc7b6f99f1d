//! Taking over the pod veths another agent made (calico-node, before a migration): a `cali*`
//! veth that a WorkloadEndpoint of this node names is that pod's, whoever created it, so
//! felix gives it its [`ENDPOINT_ALIAS`] at start and treats it as its own from then on (its
//! DEL removes it, the orphan sweep sees it). Veths no endpoint names stay unmarked and
//! untouched.

use std::collections::HashMap;

use crate::netlink::{Dataplane, Link, NetlinkError};

use super::ClusterState;
use super::orphans::ENDPOINT_ALIAS;

/// Pod veths an endpoint of `state` names that lack felix's mark (pure), in endpoint order.
pub fn unmarked_endpoint_veths<'a>(links: &'a [Link], state: &ClusterState) -> Vec<&'a Link> {
    let by_name: HashMap<&str, &Link> = links.iter().map(|l| (l.name.as_str(), l)).collect();
    let prefixes = super::orphans::workload_prefixes(state);
    let unmarked = |l: &&Link| {
        l.kind.as_deref() == Some("veth")
            && crate::settings::is_workload_interface(&prefixes, &l.name)
            && l.alias.as_deref() != Some(ENDPOINT_ALIAS)
    };
    state
        .endpoints
        .values()
        .filter_map(|e| by_name.get(e.interface_name.as_str()).copied())
        .filter(unmarked)
        .collect()
}

/// Marks every such veth as felix's; returns their names (a veth gone meanwhile is skipped).
/// Blocking (netlink).
pub fn mark_endpoint_veths(state: &ClusterState) -> Result<Vec<String>, NetlinkError> {
    let mut dp = Dataplane::new()?;
    let links = dp.links()?;
    let todo = unmarked_endpoint_veths(&links, state);
    let mut marked = Vec::with_capacity(todo.len());
    for l in todo {
        let res = dp.set_alias(l.index, ENDPOINT_ALIAS);
        if res.as_ref().err().and_then(NetlinkError::errno) == Some(libc::ENODEV) {
            continue;
        }
        res?;
        marked.push(l.name.clone());
    }
    Ok(marked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use margay_datastore::resources::WorkloadEndpointSpec;

    fn link(name: &str, kind: &str, alias: Option<&str>) -> Link {
        Link {
            index: 1,
            name: name.into(),
            kind: Some(kind.into()),
            mtu: 1500,
            up: true,
            mac: None,
            alias: alias.map(str::to_string),
        }
    }

    #[test]
    fn only_unmarked_veths_of_this_nodes_endpoints_are_taken_over() {
        let mut state = ClusterState::new("n1");
        for (wep, cali) in [
            ("default/a", "cali0000000000a"),
            ("default/b", "cali0000000000b"),
        ] {
            state.endpoints.insert(
                wep.into(),
                WorkloadEndpointSpec {
                    interface_name: cali.into(),
                    ..Default::default()
                },
            );
        }
        let links = [
            link("cali0000000000a", "veth", None),
            link("cali0000000000b", "veth", Some(ENDPOINT_ALIAS)),
            link("cali0000000000c", "veth", None),
            link("eth0", "veth", None),
        ];
        let names: Vec<&str> = unmarked_endpoint_veths(&links, &state)
            .iter()
            .map(|l| l.name.as_str())
            .collect();
        assert_eq!(names, ["cali0000000000a"]);
    }
}
