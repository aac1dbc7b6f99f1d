//! The IPAM records stored in etcd: blocks (with their allocations), block affinities and
//! handles, their keys, and the address arithmetic of a block.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Prefix of block records.
pub const BLOCKS: &str = "/margay/ipam/v1/blocks/";
/// Prefix of affinity records (`<AFFINITIES><node>/<block>`).
pub const AFFINITIES: &str = "/margay/ipam/v1/affinities/";
/// Prefix of handle records.
pub const HANDLES: &str = "/margay/ipam/v1/handles/";

/// Handles of pod addresses are `margay-pod-network.<containerID>`.
pub const POD_HANDLE_PREFIX: &str = "margay-pod-network.";
/// Handles of a node's IPIP tunnel address are `ipip-tunnel-addr-<node>`.
pub const IPIP_HANDLE_PREFIX: &str = "ipip-tunnel-addr-";
/// Handles of a node's VXLAN tunnel address are `vxlan-tunnel-addr-<node>`.
pub const VXLAN_HANDLE_PREFIX: &str = "vxlan-tunnel-addr-";
/// Handles of a node's IPv6 VXLAN tunnel address are `vxlan-v6-tunnel-addr-<node>` (Calico's).
pub const VXLAN_V6_HANDLE_PREFIX: &str = "vxlan-v6-tunnel-addr-";
/// Every tunnel handle prefix.
pub const TUNNEL_HANDLE_PREFIXES: [&str; 3] = [
    IPIP_HANDLE_PREFIX,
    VXLAN_HANDLE_PREFIX,
    VXLAN_V6_HANDLE_PREFIX,
];

/// The handle of a container's addresses on the default network.
pub fn handle_for_container(container_id: &str) -> String {
    format!("{POD_HANDLE_PREFIX}{container_id}")
}

/// The network a WorkloadEndpoint belongs to (its CNI network name), as felix records it.
pub const ANN_NETWORK: &str = "margay.io/network";
/// Which IPAM gave a WorkloadEndpoint its addresses, as felix records it.
pub const ANN_IPAM: &str = "margay.io/ipam";
/// [`ANN_IPAM`]'s value for addresses from margay's own IPAM (anything else: a delegated IPAM
/// plugin, which keeps no handle here).
pub const MARGAY_IPAM: &str = "margay-ipam";

/// The handle of a WorkloadEndpoint's addresses: `<network>.<containerID>` (the network from
/// [`ANN_NETWORK`], `margay-pod-network` when absent); `None` for an endpoint whose addresses
/// come from a delegated IPAM plugin, or that has no container id.
pub fn endpoint_handle(
    spec: &crate::resources::WorkloadEndpointSpec,
    annotations: &std::collections::BTreeMap<String, String>,
) -> Option<String> {
    if spec.container_id.is_empty() {
        return None;
    }
    if annotations.get(ANN_IPAM).is_some_and(|i| i != MARGAY_IPAM) {
        return None;
    }
    Some(match annotations.get(ANN_NETWORK) {
        Some(network) => format!("{network}.{}", spec.container_id),
        None => handle_for_container(&spec.container_id),
    })
}

/// Whether a handle id names a node's tunnel address (every other handle is a container's).
pub fn is_tunnel_handle(id: &str) -> bool {
    tunnel_handle_node(id).is_some()
}

/// The node a tunnel handle belongs to (`None` for a container's handle).
pub fn tunnel_handle_node(id: &str) -> Option<&str> {
    TUNNEL_HANDLE_PREFIXES
        .iter()
        .find_map(|p| id.strip_prefix(p))
}

fn cidr_key_part(cidr: &IpNet) -> String {
    cidr.to_string().replace('/', "-")
}

/// The key of a block.
pub fn block_key(cidr: &IpNet) -> String {
    format!("{BLOCKS}{}", cidr_key_part(cidr))
}

/// The key of a node's affinity to a block.
pub fn affinity_key(node: &str, cidr: &IpNet) -> String {
    format!("{AFFINITIES}{node}/{}", cidr_key_part(cidr))
}

/// The prefix of a node's affinities.
pub fn node_affinities(node: &str) -> String {
    format!("{AFFINITIES}{node}/")
}

/// The key of a handle.
pub fn handle_key(handle: &str) -> String {
    format!("{HANDLES}{handle}")
}

/// One address in use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub handle_id: String,
    /// Free-form attributes (pod namespace and name, node, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attrs: BTreeMap<String, String>,
}

/// A block of addresses carved from a pool, affine to at most one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub cidr: IpNet,
    /// The node that claimed the block; `None` once the node released it.
    #[serde(default)]
    pub affinity: Option<String>,
    /// Addresses in use, by ordinal (offset from the block's first address).
    #[serde(default)]
    pub allocations: BTreeMap<u32, Allocation>,
}

/// A block claimed by a node: the index that finds a node's blocks without reading them all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Affinity {
    pub node: String,
    pub cidr: IpNet,
}

/// A container's (or tunnel's) addresses: how many it holds in each block.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handle {
    pub handle_id: String,
    /// Block CIDR → number of addresses this handle holds there.
    #[serde(default)]
    pub blocks: BTreeMap<IpNet, u32>,
}

impl Handle {
    /// Total addresses held.
    pub fn total(&self) -> u32 {
        self.blocks.values().sum()
    }
}

pub(crate) fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

pub(crate) fn from_u128(v6: bool, v: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(v))
    } else {
        IpAddr::V4(Ipv4Addr::from(v as u32))
    }
}

/// The `index`-th block of prefix length `block_prefix` inside `pool`.
pub fn nth_block(pool: &IpNet, block_prefix: u8, index: u128) -> Option<IpNet> {
    let bits = pool.max_prefix_len();
    let span = 1u128.checked_shl(u32::from(bits - block_prefix))?;
    let start = to_u128(pool.network()).checked_add(index.checked_mul(span)?)?;
    let net = IpNet::new(from_u128(bits == 128, start), block_prefix).ok()?;
    pool.contains(&net).then_some(net)
}

/// How many blocks of `block_prefix` fit in `pool`.
pub fn block_count(pool: &IpNet, block_prefix: u8) -> u128 {
    1u128
        .checked_shl(u32::from(block_prefix.saturating_sub(pool.prefix_len())))
        .unwrap_or(u128::MAX)
}

impl Block {
    /// An empty block claimed by `node`.
    pub fn new(cidr: IpNet, node: Option<String>) -> Block {
        Block {
            cidr,
            affinity: node,
            allocations: BTreeMap::new(),
        }
    }

    /// Number of addresses in the block.
    pub fn size(&self) -> u128 {
        1u128 << (self.cidr.max_prefix_len() - self.cidr.prefix_len())
    }

    /// The address at `ordinal`.
    pub fn addr(&self, ordinal: u32) -> IpAddr {
        from_u128(
            self.cidr.max_prefix_len() == 128,
            to_u128(self.cidr.network()) + u128::from(ordinal),
        )
    }

    /// The ordinal of `addr`, if it is in the block.
    pub fn ordinal(&self, addr: IpAddr) -> Option<u32> {
        if !self.cidr.contains(&addr) {
            return None;
        }
        u32::try_from(to_u128(addr) - to_u128(self.cidr.network())).ok()
    }

    /// The lowest free ordinal.
    pub fn free_ordinal(&self) -> Option<u32> {
        let size = u32::try_from(self.size()).unwrap_or(u32::MAX);
        (0..size).find(|o| !self.allocations.contains_key(o))
    }

    /// The lowest free ordinal whose address no reserved network holds.
    pub fn free_ordinal_except(&self, reserved: &[IpNet]) -> Option<u32> {
        if reserved.is_empty() {
            return self.free_ordinal();
        }
        let reserved: Vec<&IpNet> = reserved
            .iter()
            .filter(|r| r.contains(&self.cidr.network()) || self.cidr.contains(*r))
            .collect();
        let size = u32::try_from(self.size()).unwrap_or(u32::MAX);
        (0..size).find(|o| {
            !self.allocations.contains_key(o)
                && !reserved.iter().any(|r| r.contains(&self.addr(*o)))
        })
    }

    /// Free addresses.
    pub fn free_count(&self) -> u128 {
        self.size() - self.allocations.len() as u128
    }

    /// How many addresses `handle` holds here.
    pub fn count_for(&self, handle: &str) -> u32 {
        self.allocations
            .values()
            .filter(|a| a.handle_id == handle)
            .count() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnel_handles_of_every_kind_name_their_node() {
        assert_eq!(tunnel_handle_node("ipip-tunnel-addr-n1"), Some("n1"));
        assert_eq!(tunnel_handle_node("vxlan-tunnel-addr-n2"), Some("n2"));
        // Calico's IPv6 VXLAN handle, which the IPv4 prefix does not match.
        assert_eq!(tunnel_handle_node("vxlan-v6-tunnel-addr-n3"), Some("n3"));
        assert_eq!(tunnel_handle_node("margay-pod-network.abc"), None);
        assert!(is_tunnel_handle("vxlan-v6-tunnel-addr-n3"));
    }

    #[test]
    fn blocks_of_a_pool_are_consecutive_and_inside_it() {
        let pool: IpNet = "10.244.0.0/24".parse().unwrap();
        assert_eq!(block_count(&pool, 26), 4);
        assert_eq!(
            nth_block(&pool, 26, 0).unwrap().to_string(),
            "10.244.0.0/26"
        );
        assert_eq!(
            nth_block(&pool, 26, 3).unwrap().to_string(),
            "10.244.0.192/26"
        );
        assert_eq!(nth_block(&pool, 26, 4), None);
        let pool6: IpNet = "fd00::/120".parse().unwrap();
        assert_eq!(
            nth_block(&pool6, 122, 1).unwrap().to_string(),
            "fd00::40/122"
        );
    }

    #[test]
    fn block_ordinals_map_to_addresses_and_back() {
        let mut b = Block::new("10.0.0.64/26".parse().unwrap(), None);
        assert_eq!(b.size(), 64);
        assert_eq!(b.addr(5), "10.0.0.69".parse::<IpAddr>().unwrap());
        assert_eq!(b.ordinal("10.0.0.69".parse().unwrap()), Some(5));
        assert_eq!(b.ordinal("10.0.0.128".parse().unwrap()), None);
        b.allocations.insert(
            0,
            Allocation {
                handle_id: "h".into(),
                attrs: BTreeMap::new(),
            },
        );
        assert_eq!(b.free_ordinal(), Some(1));
        let reserved: Vec<IpNet> = vec![
            "10.0.0.65/32".parse().unwrap(),
            "10.0.0.66/31".parse().unwrap(),
        ];
        assert_eq!(b.free_ordinal_except(&reserved), Some(4));
        let all: Vec<IpNet> = vec!["10.0.0.0/24".parse().unwrap()];
        assert_eq!(b.free_ordinal_except(&all), None);
        assert_eq!(b.free_count(), 63);
        assert_eq!(b.count_for("h"), 1);
    }

    #[test]
    fn keys_write_the_prefix_length_with_a_dash() {
        let c: IpNet = "10.0.0.64/26".parse().unwrap();
        assert_eq!(block_key(&c), "/margay/ipam/v1/blocks/10.0.0.64-26");
        assert_eq!(
            affinity_key("n1", &c),
            "/margay/ipam/v1/affinities/n1/10.0.0.64-26"
        );
    }
}
