//! What one family's WireGuard device and its routing table should hold, from the Nodes
//! (addresses and published keys of that family) and the routes felix programs (prefix → next
//! hop). Pure.
//!
//! A prefix of the family belongs to the node whose address (or VXLAN / IPIP tunnel address)
//! is its next hop. A node is a peer when it has an address of the family and a valid key
//! that no other node (and not this node) claims, as Calico requires; its prefixes go through
//! the device. Prefixes of
//! any other known node get a `throw` route, so a borrowed /32 of such a node inside a block
//! routed through the device still leaves unencrypted by the main table instead of reaching
//! the wrong peer.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use crate::model::RemoteRoute;

/// A node as the keeper sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    /// Its underlay address of the device's family (the peer's endpoint).
    pub address: Option<IpAddr>,
    /// Addresses routes name as next hop towards it (tunnel addresses), besides `address`.
    pub next_hops: Vec<IpAddr>,
    /// Its `status.wireguardPublicKey` (IPv6: `wireguardPublicKeyV6`), if any.
    pub public_key: Option<String>,
}

/// One peer of the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub node: String,
    pub endpoint: SocketAddr,
    pub allowed_ips: BTreeSet<IpNet>,
}

/// The device's peers and the table's routes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// By public key.
    pub peers: BTreeMap<String, Peer>,
    /// Prefixes routed through the device.
    pub via_device: BTreeSet<IpNet>,
    /// Prefixes thrown back to the main table.
    pub throw: BTreeSet<IpNet>,
    /// Nodes left out, with why (for the log).
    pub skipped: BTreeMap<String, &'static str>,
}

/// True when `key` is a WireGuard key: 32 bytes in standard base64 (44 characters).
pub fn valid_key(key: &str) -> bool {
    use base64::Engine;
    key.len() == 44
        && base64::engine::general_purpose::STANDARD
            .decode(key)
            .is_ok_and(|b| b.len() == 32)
}

/// Computes the peers and table routes of node `me`'s device of one family (IPv6 when `v6`)
/// whose own public key is `own_key`; routes and addresses of the other family are left out.
pub fn compute(
    me: &str,
    own_key: Option<&str>,
    port: u16,
    v6: bool,
    nodes: &[NodeInfo],
    routes: &[RemoteRoute],
) -> Desired {
    let mut out = Desired::default();
    let family = |a: &IpAddr| a.is_ipv6() == v6;
    let no_address = if v6 {
        "no IPv6 address"
    } else {
        "no IPv4 address"
    };
    // Who claims which key (this node's own key counts as a claim).
    let mut claims: BTreeMap<&str, usize> = BTreeMap::new();
    if let Some(k) = own_key {
        *claims.entry(k).or_default() += 1;
    }
    for n in nodes.iter().filter(|n| n.name != me) {
        if let Some(k) = n.public_key.as_deref().filter(|k| valid_key(k)) {
            *claims.entry(k).or_default() += 1;
        }
    }
    // Next hop → node.
    let mut owner: BTreeMap<IpAddr, &NodeInfo> = BTreeMap::new();
    for n in nodes.iter().filter(|n| n.name != me) {
        for a in n
            .address
            .into_iter()
            .chain(n.next_hops.iter().copied())
            .filter(family)
        {
            owner.insert(a, n);
        }
    }
    let mut prefixes: BTreeMap<&str, BTreeSet<IpNet>> = BTreeMap::new();
    for r in routes.iter().filter(|r| family(&r.prefix.addr())) {
        if let Some(n) = owner.get(&r.next_hop) {
            prefixes
                .entry(n.name.as_str())
                .or_default()
                .insert(r.prefix);
        }
    }
    for n in nodes.iter().filter(|n| n.name != me) {
        let mine = prefixes.remove(n.name.as_str()).unwrap_or_default();
        let address = n.address.filter(family);
        let why = match (&address, n.public_key.as_deref()) {
            (None, _) => Some(no_address),
            (_, None) => Some("no public key published"),
            (_, Some(k)) if !valid_key(k) => Some("its public key is not a WireGuard key"),
            (_, Some(k)) if claims.get(k).copied().unwrap_or(0) > 1 => {
                Some("its public key is claimed by another node too")
            }
            _ => None,
        };
        match (why, address, n.public_key.as_deref()) {
            (None, Some(addr), Some(key)) => {
                let mut allowed = mine.clone();
                allowed.insert(IpNet::from(addr));
                out.via_device.extend(mine);
                out.peers.insert(
                    key.to_string(),
                    Peer {
                        node: n.name.clone(),
                        endpoint: SocketAddr::new(addr, port),
                        allowed_ips: allowed,
                    },
                );
            }
            (why, _, _) => {
                out.throw.extend(mine);
                out.skipped
                    .insert(n.name.clone(), why.unwrap_or(no_address));
            }
        }
    }
    // A prefix both routed through the device and thrown (two nodes announcing it) is thrown.
    let both: Vec<IpNet> = out.via_device.intersection(&out.throw).copied().collect();
    for p in both {
        out.via_device.remove(&p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE=";
    const K2: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAI=";
    const K3: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAM=";

    fn node(name: &str, addr: &str, key: Option<&str>) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            address: Some(addr.parse().unwrap()),
            next_hops: vec![],
            public_key: key.map(str::to_string),
        }
    }

    fn route(p: &str, nh: &str) -> RemoteRoute {
        RemoteRoute {
            prefix: p.parse().unwrap(),
            next_hop: nh.parse().unwrap(),
            also_via: Vec::new(),
        }
    }

    #[test]
    fn the_ipv6_device_peers_over_ipv6_with_the_ipv6_prefixes_only() {
        let mut n2 = node("n2", "fd00::2", Some(K2));
        n2.next_hops = vec!["10.0.0.2".parse().unwrap()];
        let n3 = node("n3", "10.0.0.3", Some(K3));
        let routes = [
            route("10.244.2.0/26", "10.0.0.2"),
            route("fd10:2::/122", "fd00::2"),
            route("fd10:3::/122", "10.0.0.3"),
        ];
        let d = compute("n1", Some(K1), 51821, true, &[n2, n3], &routes);
        let p = &d.peers[K2];
        assert_eq!(p.endpoint.to_string(), "[fd00::2]:51821");
        let allowed: Vec<String> = p.allowed_ips.iter().map(|n| n.to_string()).collect();
        assert_eq!(allowed, ["fd00::2/128", "fd10:2::/122"]);
        assert_eq!(d.via_device.len(), 1);
        // n3 has no IPv6 address: not a peer of this device.
        assert_eq!(d.skipped["n3"], "no IPv6 address");
        assert!(!d.peers.contains_key(K3));
    }

    #[test]
    fn keys_are_32_bytes_of_base64() {
        assert!(valid_key(K1));
        assert!(!valid_key("AAAA"));
        assert!(!valid_key(&"A".repeat(44)));
    }

    #[test]
    fn a_node_with_a_key_is_a_peer_with_its_prefixes_and_address() {
        let nodes = [
            node("n1", "10.0.0.1", Some(K1)),
            node("n2", "10.0.0.2", Some(K2)),
        ];
        let routes = [
            route("10.244.2.0/26", "10.0.0.2"),
            route("10.244.1.7/32", "10.0.0.2"),
        ];
        let d = compute("n1", Some(K1), 51820, false, &nodes, &routes);
        let p = &d.peers[K2];
        assert_eq!(p.node, "n2");
        assert_eq!(p.endpoint.to_string(), "10.0.0.2:51820");
        let allowed: Vec<String> = p.allowed_ips.iter().map(|n| n.to_string()).collect();
        assert_eq!(allowed, ["10.0.0.2/32", "10.244.1.7/32", "10.244.2.0/26"]);
        assert_eq!(d.via_device.len(), 2);
        assert!(d.throw.is_empty());
        assert!(!d.peers.contains_key(K1), "never a peer of itself");
    }

    #[test]
    fn a_node_without_a_key_has_its_prefixes_thrown() {
        let nodes = [
            node("n2", "10.0.0.2", Some(K2)),
            node("n3", "10.0.0.3", None),
        ];
        let routes = [
            route("10.244.2.0/26", "10.0.0.2"),
            route("10.244.2.9/32", "10.0.0.3"),
        ];
        let d = compute("n1", Some(K1), 51820, false, &nodes, &routes);
        assert_eq!(d.peers.len(), 1);
        assert!(d.throw.contains(&"10.244.2.9/32".parse().unwrap()));
        assert_eq!(d.skipped["n3"], "no public key published");
    }

    #[test]
    fn a_key_two_nodes_claim_makes_neither_a_peer() {
        let nodes = [
            node("n2", "10.0.0.2", Some(K3)),
            node("n3", "10.0.0.3", Some(K3)),
        ];
        let routes = [
            route("10.244.2.0/26", "10.0.0.2"),
            route("10.244.3.0/26", "10.0.0.3"),
        ];
        let d = compute("n1", Some(K1), 51820, false, &nodes, &routes);
        assert!(d.peers.is_empty());
        assert_eq!(d.throw.len(), 2);
        // A node claiming this node's own key is not a peer either.
        let nodes = [node("n2", "10.0.0.2", Some(K1))];
        let d = compute("n1", Some(K1), 51820, false, &nodes, &routes[..1]);
        assert!(d.peers.is_empty());
    }

    #[test]
    fn tunnel_next_hops_map_to_their_node() {
        let mut n2 = node("n2", "10.0.0.2", Some(K2));
        n2.next_hops = vec!["10.244.2.0".parse().unwrap()];
        let d = compute(
            "n1",
            None,
            51820,
            false,
            &[n2],
            &[route("10.244.2.0/26", "10.244.2.0")],
        );
        assert!(d.via_device.contains(&"10.244.2.0/26".parse().unwrap()));
    }

    #[test]
    fn routes_to_unknown_next_hops_are_left_to_the_main_table() {
        let d = compute(
            "n1",
            None,
            51820,
            false,
            &[node("n2", "10.0.0.2", Some(K2))],
            &[route("192.0.2.0/24", "10.9.9.9")],
        );
        assert!(d.via_device.is_empty() && d.throw.is_empty());
    }
}
