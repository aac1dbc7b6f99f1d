//! A resource of any kind, for tools that handle files of mixed kinds (`margayctl apply`).

use super::*;

/// A resource of one of the known kinds.
#[derive(Debug, Clone, PartialEq)]
pub enum AnyResource {
    Node(Node),
    BgpConfiguration(BgpConfiguration),
    BgpPeer(BgpPeer),
    BgpFilter(BgpFilter),
    IpPool(IpPool),
    WorkloadEndpoint(WorkloadEndpoint),
    FelixConfiguration(FelixConfiguration),
    IpReservation(IpReservation),
    NetworkPolicy(NetworkPolicy),
    GlobalNetworkPolicy(GlobalNetworkPolicy),
    Tier(Tier),
    Profile(Profile),
    K8sNetworkPolicy(K8sNetworkPolicy),
    IpamConfiguration(IpamConfiguration),
}

/// Names of a kind: how it is written in `kind`, stored, and asked for on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindInfo {
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
}

const fn info<S: Spec>() -> KindInfo {
    KindInfo {
        kind: S::KIND,
        plural: S::PLURAL,
        namespaced: S::NAMESPACED,
    }
}

/// Every kind, in the order `margayctl` lists them.
pub const KINDS: [KindInfo; 14] = [
    info::<NodeSpec>(),
    info::<BgpConfigurationSpec>(),
    info::<BgpPeerSpec>(),
    info::<BgpFilterSpec>(),
    info::<IpPoolSpec>(),
    info::<WorkloadEndpointSpec>(),
    info::<FelixConfigurationSpec>(),
    info::<IpReservationSpec>(),
    info::<NetworkPolicySpec>(),
    info::<GlobalNetworkPolicySpec>(),
    info::<TierSpec>(),
    info::<ProfileSpec>(),
    info::<K8sNetworkPolicySpec>(),
    info::<IpamConfigurationSpec>(),
];

impl KindInfo {
    /// Resolves what an operator types: `IPPool`, `ippool`, `ippools`, or calicoctl's short
    /// names (`ipp`, `bgpconfig`, `wep`, ...), case-insensitive.
    pub fn lookup(name: &str) -> Option<KindInfo> {
        let n = name.to_ascii_lowercase();
        let short = match n.as_str() {
            "no" => "nodes",
            "bgpconfig" | "bgpconfigs" | "bgpc" => "bgpconfigurations",
            "bgpp" => "bgppeers",
            "bgpf" | "bgpfs" => "bgpfilters",
            "ipp" => "ippools",
            "wep" | "weps" => "workloadendpoints",
            "felixconfig" | "felixconfigs" | "fc" => "felixconfigurations",
            "ipr" | "ipres" | "ipreservation" => "ipreservations",
            "netpol" | "netpols" | "np" | "nps" | "policy" | "policies" => "networkpolicies",
            "gnp" | "gnps" | "globalpolicy" | "globalpolicies" => "globalnetworkpolicies",
            "pro" | "profile" => "profiles",
            "knp"
            | "knps"
            | "k8snetworkpolicy"
            | "networkpolicy.networking.k8s.io"
            | "networkpolicies.networking.k8s.io" => "k8snetworkpolicies",
            "ipamconfig" | "ipamconfigs" => "ipamconfigurations",
            _ => "",
        };
        KINDS.iter().copied().find(|k| {
            k.kind.to_ascii_lowercase() == n
                || k.plural == n
                || k.plural == short
                || format!("{}s", k.kind.to_ascii_lowercase()) == n
        })
    }
}

macro_rules! each {
    ($self:expr, $r:ident => $e:expr) => {
        match $self {
            AnyResource::Node($r) => $e,
            AnyResource::BgpConfiguration($r) => $e,
            AnyResource::BgpPeer($r) => $e,
            AnyResource::BgpFilter($r) => $e,
            AnyResource::IpPool($r) => $e,
            AnyResource::WorkloadEndpoint($r) => $e,
            AnyResource::FelixConfiguration($r) => $e,
            AnyResource::IpReservation($r) => $e,
            AnyResource::NetworkPolicy($r) => $e,
            AnyResource::GlobalNetworkPolicy($r) => $e,
            AnyResource::Tier($r) => $e,
            AnyResource::Profile($r) => $e,
            AnyResource::K8sNetworkPolicy($r) => $e,
            AnyResource::IpamConfiguration($r) => $e,
        }
    };
}

fn typed<S: Spec>(
    value: serde_json::Value,
    wrap: fn(Resource<S>) -> AnyResource,
) -> Result<AnyResource, String> {
    let mut r: Resource<S> =
        serde_path_to_error::deserialize(value).map_err(|e| match e.path().to_string() {
            p if p == "." => e.inner().to_string(),
            p => format!("{p}: {}", e.inner()),
        })?;
    r.spec.apply_defaults();
    Ok(wrap(r))
}

impl AnyResource {
    /// Builds a resource from one JSON document; the message names the bad field's path.
    pub fn from_value(value: serde_json::Value) -> Result<AnyResource, String> {
        let kind = value
            .get("kind")
            .and_then(|k| k.as_str())
            .ok_or("kind: is required")?
            .to_string();
        let k8s_networking = value
            .get("apiVersion")
            .and_then(|v| v.as_str())
            .is_some_and(|v| v.starts_with("networking.k8s.io/"));
        match kind.as_str() {
            "NetworkPolicy" if k8s_networking => typed(value, AnyResource::K8sNetworkPolicy),
            "NetworkPolicy" => typed(value, AnyResource::NetworkPolicy),
            "GlobalNetworkPolicy" => typed(value, AnyResource::GlobalNetworkPolicy),
            "Tier" => typed(value, AnyResource::Tier),
            "Profile" => typed(value, AnyResource::Profile),
            "Node" => typed(value, AnyResource::Node),
            "BGPConfiguration" => typed(value, AnyResource::BgpConfiguration),
            "BGPPeer" => typed(value, AnyResource::BgpPeer),
            "BGPFilter" => typed(value, AnyResource::BgpFilter),
            "IPPool" => typed(value, AnyResource::IpPool),
            "WorkloadEndpoint" => typed(value, AnyResource::WorkloadEndpoint),
            "FelixConfiguration" => typed(value, AnyResource::FelixConfiguration),
            "IPReservation" => typed(value, AnyResource::IpReservation),
            "IPAMConfiguration" => typed(value, AnyResource::IpamConfiguration),
            other => Err(format!(
                "kind: '{other}' is not a known kind ({})",
                KINDS.iter().map(|k| k.kind).collect::<Vec<_>>().join(", ")
            )),
        }
    }

    /// The kind's names.
    pub fn info(&self) -> KindInfo {
        match self {
            AnyResource::Node(_) => KINDS[0],
            AnyResource::BgpConfiguration(_) => KINDS[1],
            AnyResource::BgpPeer(_) => KINDS[2],
            AnyResource::BgpFilter(_) => KINDS[3],
            AnyResource::IpPool(_) => KINDS[4],
            AnyResource::WorkloadEndpoint(_) => KINDS[5],
            AnyResource::FelixConfiguration(_) => KINDS[6],
            AnyResource::IpReservation(_) => KINDS[7],
            AnyResource::NetworkPolicy(_) => KINDS[8],
            AnyResource::GlobalNetworkPolicy(_) => KINDS[9],
            AnyResource::Tier(_) => KINDS[10],
            AnyResource::Profile(_) => KINDS[11],
            AnyResource::K8sNetworkPolicy(_) => KINDS[12],
            AnyResource::IpamConfiguration(_) => KINDS[13],
        }
    }

    /// `metadata`.
    pub fn metadata(&self) -> &ObjectMeta {
        each!(self, r => &r.metadata)
    }

    /// `metadata`, to change.
    pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
        each!(self, r => &mut r.metadata)
    }

    /// `metadata.name`.
    pub fn name(&self) -> &str {
        &self.metadata().name
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), ModelError> {
        each!(self, r => r.validate())
    }

    /// A copy with secrets hidden.
    pub fn redacted(&self) -> AnyResource {
        let mut r = self.clone();
        each!(&mut r, x => x.spec.redact());
        r
    }

    /// Puts back redacted secrets from the stored copy of the same resource.
    pub fn restore_secrets(&mut self, stored: &AnyResource) {
        match (self, stored) {
            (AnyResource::BgpPeer(r), AnyResource::BgpPeer(s)) => r.spec.restore_secrets(&s.spec),
            (AnyResource::BgpConfiguration(r), AnyResource::BgpConfiguration(s)) => {
                r.spec.restore_secrets(&s.spec)
            }
            _ => {}
        }
    }

    /// The resource as JSON.
    pub fn to_value(&self) -> serde_json::Value {
        each!(self, r => serde_json::to_value(r).unwrap_or(serde_json::Value::Null))
    }
}
