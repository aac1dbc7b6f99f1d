//! IPPool: a range pods take addresses from, carved into blocks, with its encapsulation mode.

use super::{Spec, Validator};
use serde::{Deserialize, Serialize};

/// IPIP / VXLAN encapsulation mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum EncapMode {
    #[default]
    Never,
    Always,
    CrossSubnet,
}

/// What a pool's addresses may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AllowedUse {
    Workload,
    Tunnel,
    LoadBalancer,
}

/// `assignmentMode`: whether IPAM picks the pool by itself or only when it is asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum AssignmentMode {
    #[default]
    Automatic,
    Manual,
}

/// `IPPool.spec`. `apply_defaults` fills Calico's defaults, which are stored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpPoolSpec {
    pub cidr: String,
    /// Prefix length of the blocks (26 for IPv4, 122 for IPv6 by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u8>,
    #[serde(default, rename = "ipipMode", skip_serializing_if = "Option::is_none")]
    pub ipip_mode: Option<EncapMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan_mode: Option<EncapMode>,
    #[serde(default)]
    pub nat_outgoing: bool,
    #[serde(default)]
    pub disabled: bool,
    #[serde(default, rename = "disableBGPExport")]
    pub disable_bgp_export: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_uses: Vec<AllowedUse>,
    /// Manual: IPAM uses the pool only when a request names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment_mode: Option<AssignmentMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<String>,
}

impl IpPoolSpec {
    /// The pool's network, if `cidr` parses.
    pub fn net(&self) -> Option<ipnet::IpNet> {
        self.cidr.parse::<ipnet::IpNet>().ok().map(|n| n.trunc())
    }

    /// The block prefix length (defaults applied).
    pub fn block_prefix(&self) -> u8 {
        self.block_size.unwrap_or(match self.net() {
            Some(ipnet::IpNet::V6(_)) => 122,
            _ => 26,
        })
    }

    /// The node selector (default `all()`).
    pub fn node_selector(&self) -> &str {
        self.node_selector.as_deref().unwrap_or("all()")
    }

    /// IPIP mode (default Never).
    pub fn ipip(&self) -> EncapMode {
        self.ipip_mode.unwrap_or_default()
    }

    /// VXLAN mode (default Never).
    pub fn vxlan(&self) -> EncapMode {
        self.vxlan_mode.unwrap_or_default()
    }

    /// Assignment mode (default Automatic).
    pub fn assignment(&self) -> AssignmentMode {
        self.assignment_mode.unwrap_or_default()
    }

    /// Whether the pool's addresses may be used for `u` (Workload and Tunnel when unset).
    pub fn allows(&self, u: AllowedUse) -> bool {
        if self.allowed_uses.is_empty() {
            return matches!(u, AllowedUse::Workload | AllowedUse::Tunnel);
        }
        self.allowed_uses.contains(&u)
    }
}

impl Spec for IpPoolSpec {
    const KIND: &'static str = "IPPool";
    const PLURAL: &'static str = "ippools";

    fn apply_defaults(&mut self) {
        if let Some(n) = self.net() {
            self.cidr = n.to_string();
        }
        self.block_size = Some(self.block_prefix());
        self.ipip_mode = Some(self.ipip());
        self.vxlan_mode = Some(self.vxlan());
        self.node_selector = Some(self.node_selector().to_string());
        if self.allowed_uses.is_empty() {
            self.allowed_uses = vec![AllowedUse::Workload, AllowedUse::Tunnel];
        }
    }

    fn validate(&self, v: &mut Validator) {
        let net = if self.cidr.is_empty() {
            v.problem("spec.cidr", "is required");
            None
        } else {
            v.cidr("spec.cidr", &self.cidr)
        };
        if let Some(net) = net {
            let bs = self.block_prefix();
            let (lo, hi) = match net {
                ipnet::IpNet::V4(_) => (20, 32),
                ipnet::IpNet::V6(_) => (116, 128),
            };
            if bs < lo || bs > hi {
                v.problem(
                    "spec.blockSize",
                    format!("{bs} is outside {lo}..{hi} for this address family"),
                );
            } else if bs < net.prefix_len() {
                v.problem(
                    "spec.blockSize",
                    format!("{bs} is larger than the pool {net} (blocks must fit inside it)"),
                );
            }
            if matches!(net, ipnet::IpNet::V6(_)) && self.ipip() != EncapMode::Never {
                v.problem(
                    "spec.ipipMode",
                    "IPIP is IPv4 only; use Never for an IPv6 pool",
                );
            }
        }
        if self.ipip() != EncapMode::Never && self.vxlan() != EncapMode::Never {
            v.problem(
                "spec.vxlanMode",
                "cannot be enabled together with spec.ipipMode",
            );
        }
        if let Some(s) = &self.node_selector {
            v.selector("spec.nodeSelector", s);
        }
        if let Some(s) = &self.namespace_selector {
            v.selector("spec.namespaceSelector", s);
            if self.allows(AllowedUse::Tunnel) {
                v.problem(
                    "spec.namespaceSelector",
                    "cannot be set on a pool allowed for Tunnel addresses",
                );
            }
        }
        if self.allows(AllowedUse::LoadBalancer)
            && (self.allows(AllowedUse::Workload) || self.allows(AllowedUse::Tunnel))
        {
            v.problem(
                "spec.allowedUses",
                "LoadBalancer cannot be combined with Workload or Tunnel",
            );
        }
    }
}
