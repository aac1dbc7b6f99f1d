//! Calico's etcd (v3 datastore) layout, as libcalico-go's backend model writes it: which record
//! a key names, and the JSON of its IPAM records.
//!
//! ```text
//! /calico/resources/v3/projectcalico.org/<plural>/<name>              cluster-scoped resources
//! /calico/resources/v3/projectcalico.org/<plural>/<namespace>/<name>  WorkloadEndpoints, ...
//! /calico/ipam/v2/assignment/ipv<4|6>/block/<cidr, '/' as '-'>        AllocationBlock
//! /calico/ipam/v2/host/<node>/ipv<4|6>/block/<cidr>                   BlockAffinity (also
//!                                                                     `virtual/` in newer ones)
//! /calico/ipam/v2/handle/<handle id>                                  IPAMHandle
//! /calico/ipam/v2/config                                              IPAMConfig
//! ```

use ipnet::IpNet;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Where Calico keeps everything in etcd.
pub const CALICO_ROOT: &str = "/calico/";
const RESOURCES: &str = "/calico/resources/v3/projectcalico.org/";
const IPAM: &str = "/calico/ipam/v2/";

/// Calico's resource kinds by their key's plural, whether they are namespaced, and the kind.
pub const CALICO_KINDS: &[(&str, &str, bool)] = &[
    ("bgpconfigurations", "BGPConfiguration", false),
    ("bgpfilters", "BGPFilter", false),
    ("bgppeers", "BGPPeer", false),
    ("caliconodestatuses", "CalicoNodeStatus", false),
    ("clusterinformations", "ClusterInformation", false),
    ("felixconfigurations", "FelixConfiguration", false),
    ("globalnetworkpolicies", "GlobalNetworkPolicy", false),
    ("globalnetworksets", "GlobalNetworkSet", false),
    ("hostendpoints", "HostEndpoint", false),
    ("ipamconfigs", "IPAMConfig", false),
    ("ippools", "IPPool", false),
    ("ipreservations", "IPReservation", false),
    (
        "kubecontrollersconfigurations",
        "KubeControllersConfiguration",
        false,
    ),
    ("kubernetesnetworkpolicies", "KubernetesNetworkPolicy", true),
    ("networkpolicies", "NetworkPolicy", true),
    ("networksets", "NetworkSet", true),
    ("nodes", "Node", false),
    ("profiles", "Profile", false),
    (
        "stagedglobalnetworkpolicies",
        "StagedGlobalNetworkPolicy",
        false,
    ),
    (
        "stagedkubernetesnetworkpolicies",
        "StagedKubernetesNetworkPolicy",
        true,
    ),
    ("stagednetworkpolicies", "StagedNetworkPolicy", true),
    ("tiers", "Tier", false),
    ("workloadendpoints", "WorkloadEndpoint", true),
];

/// What a key under `/calico/` is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CalicoKey {
    /// A v3 resource of a kind Calico has.
    Resource {
        kind: &'static str,
        namespace: Option<String>,
        name: String,
    },
    /// A v3 resource key whose plural is no Calico kind.
    UnknownKind {
        plural: String,
    },
    Block {
        cidr: IpNet,
    },
    Affinity {
        /// `host` (or `virtual`).
        affinity_type: String,
        node: String,
        cidr: IpNet,
    },
    Handle {
        id: String,
    },
    IpamConfig,
    /// Anything else under `/calico/` (felix status reports, confd's v1 data): not part of
    /// the v3 model, rebuilt by the daemons.
    Other,
    /// A key under `/calico/ipam/v2/` or the resources that does not parse.
    Malformed(String),
}

/// `10.0.0.64-26` → `10.0.0.64/26`, as the key writes it.
fn key_cidr(part: &str) -> Option<IpNet> {
    let (addr, len) = part.rsplit_once('-')?;
    let net: IpNet = format!("{addr}/{len}").parse().ok()?;
    (net.trunc() == net).then_some(net)
}

fn family_matches(seg: &str, cidr: &IpNet) -> bool {
    matches!((seg, cidr), ("ipv4", IpNet::V4(_)) | ("ipv6", IpNet::V6(_)))
}

/// Names the record behind a key under `/calico/`.
pub fn parse_key(key: &str) -> CalicoKey {
    if let Some(rest) = key.strip_prefix(RESOURCES) {
        let parts: Vec<&str> = rest.split('/').collect();
        let Some(&(_, kind, namespaced)) = CALICO_KINDS.iter().find(|(p, _, _)| *p == parts[0])
        else {
            return CalicoKey::UnknownKind {
                plural: parts[0].to_string(),
            };
        };
        return match (namespaced, parts.as_slice()) {
            (false, [_, name]) if !name.is_empty() => CalicoKey::Resource {
                kind,
                namespace: None,
                name: name.to_string(),
            },
            (true, [_, ns, name]) if !ns.is_empty() && !name.is_empty() => CalicoKey::Resource {
                kind,
                namespace: Some(ns.to_string()),
                name: name.to_string(),
            },
            _ => CalicoKey::Malformed(format!("not a {kind} key")),
        };
    }
    let Some(rest) = key.strip_prefix(IPAM) else {
        return CalicoKey::Other;
    };
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        ["config"] => CalicoKey::IpamConfig,
        ["handle", id] if !id.is_empty() => CalicoKey::Handle { id: id.to_string() },
        ["assignment", fam, "block", c] => match key_cidr(c) {
            Some(cidr) if family_matches(fam, &cidr) => CalicoKey::Block { cidr },
            _ => CalicoKey::Malformed(format!("'{c}' is not a block CIDR of {fam}")),
        },
        [t @ ("host" | "virtual"), node, fam, "block", c] if !node.is_empty() => {
            match key_cidr(c) {
                Some(cidr) if family_matches(fam, &cidr) => CalicoKey::Affinity {
                    affinity_type: t.to_string(),
                    node: node.to_string(),
                    cidr,
                },
                _ => CalicoKey::Malformed(format!("'{c}' is not a block CIDR of {fam}")),
            }
        }
        _ => CalicoKey::Malformed("not an IPAM key Calico writes".into()),
    }
}

/// One allocation's attributes (`AllocationAttribute`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct AllocationAttribute {
    #[serde(default)]
    pub handle_id: Option<String>,
    /// The owner's attributes (pod, namespace, node, type, timestamp).
    #[serde(default)]
    pub secondary: Option<BTreeMap<String, String>>,
    /// The previous or next owner's, during a live migration.
    #[serde(default)]
    pub alternate: Option<BTreeMap<String, String>>,
}

/// `AllocationBlock`: `allocations[ordinal]` is an index into `attributes`, null when free.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AllocationBlock {
    pub cidr: IpNet,
    /// `host:<node>` (or `virtual:<name>`); null when no node holds it.
    #[serde(default)]
    pub affinity: Option<String>,
    /// The deprecated form of `affinity`: the bare node name.
    #[serde(default, rename = "hostAffinity")]
    pub host_affinity: Option<String>,
    #[serde(default)]
    pub allocations: Vec<Option<usize>>,
    #[serde(default)]
    pub unallocated: Vec<u32>,
    #[serde(default)]
    pub attributes: Vec<AllocationAttribute>,
    #[serde(default)]
    pub deleted: bool,
}

/// `BlockAffinity`: `confirmed`, `pending` (a claim under way) or `pendingDeletion`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BlockAffinity {
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub deleted: bool,
}

/// `IPAMHandle`: block CIDR → how many addresses the handle holds there.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct IpamHandle {
    #[serde(default)]
    pub block: BTreeMap<String, u32>,
    #[serde(default)]
    pub deleted: bool,
}

/// `IPAMConfig` (`/calico/ipam/v2/config`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct IpamConfig {
    #[serde(default)]
    pub strict_affinity: bool,
    #[serde(default)]
    pub auto_allocate_blocks: bool,
    #[serde(default, rename = "maxBlocksPerHost")]
    pub max_blocks_per_host: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_records() {
        assert_eq!(
            parse_key("/calico/ipam/v2/assignment/ipv4/block/10.244.0.64-26"),
            CalicoKey::Block {
                cidr: "10.244.0.64/26".parse().unwrap()
            }
        );
        assert_eq!(
            parse_key("/calico/ipam/v2/assignment/ipv6/block/fd00::40-122"),
            CalicoKey::Block {
                cidr: "fd00::40/122".parse().unwrap()
            }
        );
        assert_eq!(
            parse_key("/calico/ipam/v2/host/node-1/ipv4/block/10.244.0.64-26"),
            CalicoKey::Affinity {
                affinity_type: "host".into(),
                node: "node-1".into(),
                cidr: "10.244.0.64/26".parse().unwrap()
            }
        );
        assert_eq!(
            parse_key("/calico/ipam/v2/handle/k8s-pod-network.abc"),
            CalicoKey::Handle {
                id: "k8s-pod-network.abc".into()
            }
        );
        assert_eq!(parse_key("/calico/ipam/v2/config"), CalicoKey::IpamConfig);
        assert_eq!(
            parse_key("/calico/resources/v3/projectcalico.org/workloadendpoints/ns1/n1-k8s-p-eth0"),
            CalicoKey::Resource {
                kind: "WorkloadEndpoint",
                namespace: Some("ns1".into()),
                name: "n1-k8s-p-eth0".into()
            }
        );
        assert_eq!(
            parse_key("/calico/resources/v3/projectcalico.org/ippools/default-ipv4-ippool"),
            CalicoKey::Resource {
                kind: "IPPool",
                namespace: None,
                name: "default-ipv4-ippool".into()
            }
        );
        assert_eq!(
            parse_key("/calico/resources/v3/projectcalico.org/frobnicators/x"),
            CalicoKey::UnknownKind {
                plural: "frobnicators".into()
            }
        );
        assert_eq!(
            parse_key("/calico/felix/v2/no-region/host/n1/status"),
            CalicoKey::Other
        );
    }

    #[test]
    fn malformed_ipam_keys_are_told_apart() {
        for k in [
            "/calico/ipam/v2/assignment/ipv4/block/10.244.0.65-26",
            "/calico/ipam/v2/assignment/ipv6/block/10.244.0.64-26",
            "/calico/ipam/v2/assignment/ipv4/block/garbage",
            "/calico/ipam/v2/something/else",
            "/calico/resources/v3/projectcalico.org/ippools/a/b",
        ] {
            assert!(
                matches!(parse_key(k), CalicoKey::Malformed(_)),
                "{k}: {:?}",
                parse_key(k)
            );
        }
    }

    #[test]
    fn a_block_decodes_from_calicos_json() {
        let b: AllocationBlock = serde_json::from_str(
            r#"{"cidr":"10.0.0.0/30","affinity":"host:n1","allocations":[0,null,1,null],
                "unallocated":[1,3],"attributes":[{"handle_id":"h1","secondary":{"pod":"p"}},
                {"handle_id":"ipip-tunnel-addr-n1","secondary":{"node":"n1","type":"ipipTunnelAddress"}}],
                "sequenceNumber":3,"sequenceNumberForAllocation":{"0":1,"2":2},"deleted":false}"#,
        )
        .unwrap();
        assert_eq!(b.allocations, vec![Some(0), None, Some(1), None]);
        assert_eq!(
            b.attributes[1].handle_id.as_deref(),
            Some("ipip-tunnel-addr-n1")
        );
    }
}
