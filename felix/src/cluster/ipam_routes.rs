//! Remote routes without BGP (the `vxlan` and `none` backends), as Calico's felix computes them
//! from IPAM (its L3 route resolver and VXLAN resolver): every block affine to another node
//! leads to that node, and so does every address a pod on another node borrowed from a block
//! that is not affine to it (a /32). Only blocks and addresses of enabled VXLAN pools count: a
//! pool without VXLAN needs BGP to be routed. The result has the shape of bgpd's table (prefix →
//! the node's address of the prefix's family), so the dataplane resolves it through the node's
//! VTEP (IPv4 or IPv6) as it does a route learned over BGP. Pure: no I/O.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use margay_datastore::resources::{self as res, IpPoolSpec};

use super::state::ClusterState;

/// The enabled VXLAN pool (most specific) holding `prefix`.
pub(super) fn vxlan_pool<'a>(
    pools: &'a BTreeMap<String, IpPoolSpec>,
    prefix: &IpNet,
) -> Option<&'a IpPoolSpec> {
    pools
        .values()
        .filter(|p| !p.disabled)
        .filter_map(|p| Some((p.net()?, p)))
        .filter(|(net, _)| net.contains(prefix))
        .max_by_key(|(net, _)| net.prefix_len())
        .map(|(_, p)| p)
        .filter(|p| p.vxlan() != res::EncapMode::Never)
}

/// Node `name`'s address of the IPv6 (`v6`) or IPv4 family, if it has one.
pub(super) fn node_ip(state: &ClusterState, name: &str, v6: bool) -> Option<IpAddr> {
    let bgp = state.nodes.get(name)?.bgp.as_ref()?;
    if v6 {
        bgp.ipv6().map(IpAddr::V6)
    } else {
        bgp.ipv4().map(IpAddr::V4)
    }
}

/// 4 or 6.
pub(super) fn family(ip: IpAddr) -> u8 {
    if ip.is_ipv6() { 6 } else { 4 }
}

/// The problems of the nodes without an address of a family: `missing` counts, by node and
/// family, the blocks and pod addresses left unrouted.
pub(super) fn problems<'a>(
    missing: impl IntoIterator<Item = ((&'a str, u8), usize)>,
) -> Vec<String> {
    missing
        .into_iter()
        .map(|((node, family), n)| {
            let field = if family == 6 {
                "ipv6Address"
            } else {
                "ipv4Address"
            };
            format!(
                "Node {node}: no IPv{family} address (spec.bgp.{field}): {n} of its IPv{family} \
                 blocks or pod addresses are not routed"
            )
        })
        .collect()
}

/// Every remote block and borrowed address of a VXLAN pool, with the address (of the same
/// family) of the node it lives on. Nodes without an address of that family are left out and
/// listed in the second value. [`super::ipam_incremental`] keeps the same answer change by
/// change; this is the whole computation it is checked against.
pub fn remote_routes(state: &ClusterState) -> (BTreeMap<IpNet, IpAddr>, Vec<String>) {
    let mut routes = BTreeMap::new();
    let node_ip = |name: &str, v6: bool| node_ip(state, name, v6);
    // Blocks by node, for telling borrowed addresses apart.
    let mut blocks_of: BTreeMap<&str, Vec<IpNet>> = BTreeMap::new();
    for a in state.block_affinities.values() {
        blocks_of.entry(a.node.as_str()).or_default().push(a.cidr);
    }
    let mut missing: BTreeMap<(&str, u8), usize> = BTreeMap::new();
    for a in state.block_affinities.values() {
        if a.node == state.node {
            continue;
        }
        if vxlan_pool(&state.pools, &a.cidr).is_none() {
            continue;
        }
        match node_ip(&a.node, a.cidr.addr().is_ipv6()) {
            Some(ip) => {
                routes.insert(a.cidr.trunc(), ip);
            }
            // A deleted Node's blocks wait for the IPAM collector; nothing to say.
            None if !state.nodes.contains_key(&a.node) => {}
            None => {
                *missing
                    .entry((a.node.as_str(), family(a.cidr.addr())))
                    .or_default() += 1
            }
        }
    }
    for ep in state.remote_endpoints.values() {
        if ep.node == state.node {
            continue;
        }
        let own = blocks_of.get(ep.node.as_str());
        for ip in &ep.ips {
            let host = IpNet::from(*ip);
            if own.is_some_and(|bs| bs.iter().any(|b| b.contains(ip))) {
                continue;
            }
            if vxlan_pool(&state.pools, &host).is_none() {
                continue;
            }
            match node_ip(&ep.node, ip.is_ipv6()) {
                Some(nip) => {
                    routes.insert(host, nip);
                }
                None if !state.nodes.contains_key(&ep.node) => {}
                None => *missing.entry((ep.node.as_str(), family(*ip))).or_default() += 1,
            }
        }
    }
    (routes, problems(missing))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::state::RemoteEndpoint;
    use margay_datastore::ipam::Affinity;
    use margay_datastore::resources::{NodeBgpSpec, NodeSpec};

    fn node(addr: Option<&str>) -> NodeSpec {
        NodeSpec {
            bgp: addr.map(|a| NodeBgpSpec {
                ipv4_address: Some(a.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pool(cidr: &str, vxlan: res::EncapMode) -> IpPoolSpec {
        IpPoolSpec {
            cidr: cidr.into(),
            vxlan_mode: Some(vxlan),
            ..Default::default()
        }
    }

    fn affinity(s: &mut ClusterState, node: &str, cidr: &str) {
        let cidr: IpNet = cidr.parse().unwrap();
        s.block_affinities.insert(
            format!("{node}/{cidr}"),
            Affinity {
                node: node.into(),
                cidr,
            },
        );
    }

    fn state() -> ClusterState {
        let mut s = ClusterState::new("n1");
        s.nodes.insert("n1".into(), node(Some("10.0.0.1/24")));
        s.nodes.insert("n2".into(), node(Some("10.0.0.2/24")));
        s.nodes.insert("n3".into(), node(None));
        s.pools
            .insert("v".into(), pool("10.244.0.0/16", res::EncapMode::Always));
        s.pools
            .insert("plain".into(), pool("10.250.0.0/16", res::EncapMode::Never));
        affinity(&mut s, "n1", "10.244.0.0/26");
        affinity(&mut s, "n2", "10.244.0.64/26");
        affinity(&mut s, "n2", "10.250.0.0/26");
        affinity(&mut s, "n3", "10.244.0.128/26");
        s
    }

    fn route(r: &BTreeMap<IpNet, IpAddr>, p: &str) -> Option<String> {
        r.get(&p.parse().unwrap()).map(|a| a.to_string())
    }

    #[test]
    fn remote_blocks_of_vxlan_pools_lead_to_their_node() {
        let (r, problems) = remote_routes(&state());
        assert_eq!(route(&r, "10.244.0.64/26").as_deref(), Some("10.0.0.2"));
        // This node's own block, and a block of a pool without VXLAN (BGP's job), are not here.
        assert_eq!(route(&r, "10.244.0.0/26"), None);
        assert_eq!(route(&r, "10.250.0.0/26"), None);
        // n3 has no address: left out, and said.
        assert_eq!(route(&r, "10.244.0.128/26"), None);
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(problems[0].starts_with("Node n3:"), "{problems:?}");
        // A deleted Node's blocks are not routed, and not a problem.
        let mut s = state();
        s.nodes.remove("n3");
        let (r, problems) = remote_routes(&s);
        assert_eq!(route(&r, "10.244.0.128/26"), None);
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn ipv6_blocks_of_vxlan_pools_lead_to_the_nodes_ipv6_address() {
        let mut s = state();
        s.nodes
            .get_mut("n2")
            .unwrap()
            .bgp
            .as_mut()
            .unwrap()
            .ipv6_address = Some("fd00::2/64".into());
        s.pools
            .insert("v6".into(), pool("fd00:244::/48", res::EncapMode::Always));
        s.pools.insert(
            "plain6".into(),
            pool("fd00:250::/48", res::EncapMode::Never),
        );
        affinity(&mut s, "n2", "fd00:244::/122");
        affinity(&mut s, "n2", "fd00:250::/122");
        affinity(&mut s, "n3", "fd00:244::40/122");
        s.remote_endpoints.insert(
            "default/six".into(),
            RemoteEndpoint {
                node: "n2".into(),
                ips: vec!["fd00:244::1:5".parse().unwrap()],
            },
        );
        let (r, problems) = remote_routes(&s);
        assert_eq!(route(&r, "fd00:244::/122").as_deref(), Some("fd00::2"));
        assert_eq!(route(&r, "fd00:244::1:5/128").as_deref(), Some("fd00::2"));
        assert_eq!(route(&r, "fd00:250::/122"), None);
        // The IPv4 block still goes to n2's IPv4 address.
        assert_eq!(route(&r, "10.244.0.64/26").as_deref(), Some("10.0.0.2"));
        // n3 has neither family: both said, apart.
        assert!(
            problems.iter().any(|p| p.contains("n3: no IPv6 address")),
            "{problems:?}"
        );
    }

    #[test]
    fn borrowed_addresses_are_host_routes_to_the_borrower() {
        let mut s = state();
        // A pod on n2 with an address from n1's block (borrowed), one from its own block, and
        // one from a disabled pool.
        s.remote_endpoints.insert(
            "default/web".into(),
            RemoteEndpoint {
                node: "n2".into(),
                ips: vec![
                    "10.244.0.9".parse().unwrap(),
                    "10.244.0.70".parse().unwrap(),
                ],
            },
        );
        s.remote_endpoints.insert(
            "default/mine".into(),
            RemoteEndpoint {
                node: "n1".into(),
                ips: vec!["10.244.0.200".parse().unwrap()],
            },
        );
        let (r, _) = remote_routes(&s);
        assert_eq!(route(&r, "10.244.0.9/32").as_deref(), Some("10.0.0.2"));
        assert_eq!(route(&r, "10.244.0.70/32"), None);
        assert_eq!(route(&r, "10.244.0.200/32"), None);
        // The dataplane keeps the /32 inside n1's own block (it is more specific than the
        // blackhole), and sends it through n2's VTEP.
        s.pools.get_mut("v").unwrap().disabled = true;
        assert!(remote_routes(&s).0.is_empty());
    }
}
