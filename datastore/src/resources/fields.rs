//! The field registry: every spec field of Calico 3.32's BGPConfiguration, BGPPeer, BGPFilter,
//! IPPool and Node (plus margay's own `password.value`), and every top-level field of its
//! FelixConfiguration (what felix applies is in margay-felix's `settings`), each marked acted on by margay or
//! accepted-but-not-acted with the reason. `margayctl apply` warns about, and the daemons log
//! once, each not-acted field set in a resource: no field is ever silently ignored.
//!
//! To change a field's status, change its line in [`FIELDS`]; the README's list is checked
//! against it by a test.

use super::{AnyResource, Resource, Spec};
use serde_json::Value;
use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::sync::{Mutex, OnceLock};

/// Whether margay does what a field asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldStatus {
    Acted,
    /// Accepted and stored, but margay does not act on it; the text says why.
    NotActed(&'static str),
}

/// One spec field of a kind: its path (`spec.exportV4[].cidr`; `[]` is every list element).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldInfo {
    pub kind: &'static str,
    pub path: &'static str,
    pub status: FieldStatus,
}

use FieldStatus::{Acted, NotActed};

const fn f(kind: &'static str, path: &'static str, status: FieldStatus) -> FieldInfo {
    FieldInfo { kind, path, status }
}

const BGPC: &str = "BGPConfiguration";
const PEER: &str = "BGPPeer";
const FILTER: &str = "BGPFilter";
const POOL: &str = "IPPool";
const NODE: &str = "Node";
const FELIX: &str = "FelixConfiguration";

const NO_OPTIONAL: FieldStatus = NotActed(
    "margay reads the mounted Secret key and reports a missing one; 'optional' is not consulted",
);

const WORKLOAD_PEERING: FieldStatus =
    NotActed("peering with local workloads (BGP from pods) is not implemented");
const ROUTE_PRIORITY: FieldStatus = NotActed(
    "workload route metrics are fixed; live-migration route priorities are not implemented",
);
const NODE_ADDRESSES: FieldStatus =
    NotActed("the BGP address (spec.bgp) is the node's address for margay");
const ORCH_REFS: FieldStatus =
    NotActed("margay names nodes itself; orchestrator references are kept, not used");
const WIREGUARD: FieldStatus = NotActed(
    "WireGuard runs without an interface address: host-network traffic to pods is not encrypted",
);

const NP: &str = "NetworkPolicy";
const GNP: &str = "GlobalNetworkPolicy";
const HOST_ENDPOINTS: FieldStatus =
    NotActed("host endpoints are not implemented: margay enforces policy on workloads only");
const L7: FieldStatus =
    NotActed("HTTP (L7) matches need an application-layer proxy; not implemented");
const SERVICES: FieldStatus =
    NotActed("rules naming Kubernetes Services need Service objects; margay has none");
const HINTS: FieldStatus =
    NotActed("a hint to Calico's policy engine; margay computes every policy anyway");

const FC_BPF: FieldStatus =
    NotActed("there is no BPF dataplane: felix programs netlink routes and one nftables table");
const FC_IPTABLES: FieldStatus =
    NotActed("felix writes nftables itself; iptables, ipset and XDP options do not apply");
const FC_NFT: FieldStatus = NotActed(
    "felix's nftables table is its own and fixed (natOutgoing and policy); its modes and marks are not configurable",
);
const FC_FLOWLOGS: FieldStatus = NotActed("flow logs are not implemented");
const FC_DEBUG: FieldStatus = NotActed("Calico felix's debugging hooks are not implemented");
const FC_LOG: FieldStatus = NotActed("felix logs to stderr at its --log-level (MARGAY_LOG_LEVEL)");
const FC_OPENSTACK: FieldStatus =
    NotActed("OpenStack, status reporting and external policy integrations are not implemented");
const FC_USAGE: FieldStatus = NotActed("margay sends no usage reports");
const FC_GO: FieldStatus = NotActed("Go runtime settings and metrics: felix is not a Go program");
const FC_PLATFORM: FieldStatus = NotActed("Windows and AWS integrations are not implemented");
const FC_HOSTPOL: FieldStatus = NotActed(
    "host endpoints, failsafe ports and workload traffic rules of Calico's policy chains are not implemented",
);

/// Every field, kind by kind, with its status.
pub const FIELDS: &[FieldInfo] = &[
    // BGPConfiguration
    f(BGPC, "spec.logSeverityScreen", Acted),
    f(BGPC, "spec.nodeToNodeMeshEnabled", Acted),
    f(BGPC, "spec.bfd.enabled", Acted),
    f(BGPC, "spec.bfd.minTx", Acted),
    f(BGPC, "spec.bfd.minRx", Acted),
    f(BGPC, "spec.bfd.multiplier", Acted),
    f(BGPC, "spec.maxPaths", Acted),
    f(BGPC, "spec.asNumber", Acted),
    f(BGPC, "spec.listenPort", Acted),
    f(BGPC, "spec.bindMode", Acted),
    f(BGPC, "spec.serviceClusterIPs[].cidr", Acted),
    f(BGPC, "spec.serviceExternalIPs[].cidr", Acted),
    f(BGPC, "spec.serviceLoadBalancerIPs[].cidr", Acted),
    f(BGPC, "spec.communities[].name", Acted),
    f(BGPC, "spec.communities[].value", Acted),
    f(BGPC, "spec.prefixAdvertisements[].cidr", Acted),
    f(BGPC, "spec.prefixAdvertisements[].communities", Acted),
    f(BGPC, "spec.nodeMeshPassword.secretKeyRef.name", Acted),
    f(BGPC, "spec.nodeMeshPassword.secretKeyRef.key", Acted),
    f(
        BGPC,
        "spec.nodeMeshPassword.secretKeyRef.optional",
        NO_OPTIONAL,
    ),
    f(BGPC, "spec.nodeMeshPassword.value", Acted),
    f(BGPC, "spec.nodeMeshMaxRestartTime", Acted),
    f(BGPC, "spec.ignoredInterfaces", Acted),
    f(BGPC, "spec.localWorkloadPeeringIPV4", WORKLOAD_PEERING),
    f(BGPC, "spec.localWorkloadPeeringIPV6", WORKLOAD_PEERING),
    f(
        BGPC,
        "spec.serviceLoadBalancerAggregation",
        NotActed(
            "margay always announces the whole serviceLoadBalancerIPs CIDRs (Enabled); \
             per-Service /32s need Service objects",
        ),
    ),
    f(
        BGPC,
        "spec.programClusterRoutes",
        NotActed("margay's split is fixed: bgpd learns the routes, felix programs them"),
    ),
    f(BGPC, "spec.ipv4NormalRoutePriority", ROUTE_PRIORITY),
    f(BGPC, "spec.ipv6NormalRoutePriority", ROUTE_PRIORITY),
    // BGPPeer
    f(PEER, "spec.node", Acted),
    f(PEER, "spec.nodeSelector", Acted),
    f(PEER, "spec.peerIP", Acted),
    f(PEER, "spec.asNumber", Acted),
    f(PEER, "spec.peerSelector", Acted),
    f(PEER, "spec.keepOriginalNextHop", Acted),
    f(PEER, "spec.password.secretKeyRef.name", Acted),
    f(PEER, "spec.password.secretKeyRef.key", Acted),
    f(PEER, "spec.password.secretKeyRef.optional", NO_OPTIONAL),
    f(PEER, "spec.password.value", Acted),
    f(PEER, "spec.sourceAddress", Acted),
    f(PEER, "spec.maxRestartTime", Acted),
    f(PEER, "spec.numAllowedLocalASNumbers", Acted),
    f(PEER, "spec.ttlSecurity", Acted),
    f(PEER, "spec.filters", Acted),
    f(PEER, "spec.reachableBy", Acted),
    f(PEER, "spec.localASNumber", Acted),
    f(PEER, "spec.keepaliveTime", Acted),
    f(PEER, "spec.bfd.enabled", Acted),
    f(PEER, "spec.bfd.minTx", Acted),
    f(PEER, "spec.bfd.minRx", Acted),
    f(PEER, "spec.bfd.multiplier", Acted),
    f(
        PEER,
        "spec.nextHopMode",
        NotActed("next hop is self, or kept with keepOriginalNextHop; nextHopMode is not read"),
    ),
    f(
        PEER,
        "spec.reversePeering",
        NotActed("peerSelector peerings are always set up from both ends (Auto)"),
    ),
    f(PEER, "spec.localWorkloadSelector", WORKLOAD_PEERING),
    // BGPFilter
    f(FILTER, "spec.exportV4[].action", Acted),
    f(FILTER, "spec.exportV4[].matchOperator", Acted),
    f(FILTER, "spec.exportV4[].cidr", Acted),
    f(FILTER, "spec.exportV4[].prefixLength.min", Acted),
    f(FILTER, "spec.exportV4[].prefixLength.max", Acted),
    f(FILTER, "spec.exportV4[].source", Acted),
    f(FILTER, "spec.exportV4[].interface", Acted),
    f(FILTER, "spec.importV4[].action", Acted),
    f(FILTER, "spec.importV4[].matchOperator", Acted),
    f(FILTER, "spec.importV4[].cidr", Acted),
    f(FILTER, "spec.importV4[].prefixLength.min", Acted),
    f(FILTER, "spec.importV4[].prefixLength.max", Acted),
    f(FILTER, "spec.importV4[].source", Acted),
    f(FILTER, "spec.importV4[].interface", Acted),
    f(FILTER, "spec.exportV6[].action", Acted),
    f(FILTER, "spec.exportV6[].matchOperator", Acted),
    f(FILTER, "spec.exportV6[].cidr", Acted),
    f(FILTER, "spec.exportV6[].prefixLength.min", Acted),
    f(FILTER, "spec.exportV6[].prefixLength.max", Acted),
    f(FILTER, "spec.exportV6[].source", Acted),
    f(FILTER, "spec.exportV6[].interface", Acted),
    f(FILTER, "spec.importV6[].action", Acted),
    f(FILTER, "spec.importV6[].matchOperator", Acted),
    f(FILTER, "spec.importV6[].cidr", Acted),
    f(FILTER, "spec.importV6[].prefixLength.min", Acted),
    f(FILTER, "spec.importV6[].prefixLength.max", Acted),
    f(FILTER, "spec.importV6[].source", Acted),
    f(FILTER, "spec.importV6[].interface", Acted),
    // IPPool
    f(POOL, "spec.cidr", Acted),
    f(POOL, "spec.blockSize", Acted),
    f(POOL, "spec.ipipMode", Acted),
    f(POOL, "spec.vxlanMode", Acted),
    f(POOL, "spec.natOutgoing", Acted),
    f(POOL, "spec.disabled", Acted),
    f(POOL, "spec.disableBGPExport", Acted),
    f(POOL, "spec.nodeSelector", Acted),
    f(POOL, "spec.allowedUses", Acted),
    f(POOL, "spec.assignmentMode", Acted),
    f(
        POOL,
        "spec.namespaceSelector",
        NotActed("IPAM does not read pod namespaces' labels (no Kubernetes API)"),
    ),
    // Node
    f(NODE, "spec.bgp.asNumber", Acted),
    f(NODE, "spec.bgp.ipv4Address", Acted),
    f(NODE, "spec.bgp.ipv6Address", Acted),
    f(NODE, "spec.bgp.ipv4IPIPTunnelAddr", Acted),
    f(NODE, "spec.bgp.routeReflectorClusterID", Acted),
    f(NODE, "spec.ipv4VXLANTunnelAddr", Acted),
    f(NODE, "spec.vxlanTunnelMACAddr", Acted),
    f(NODE, "spec.ipv6VXLANTunnelAddr", Acted),
    f(NODE, "spec.vxlanTunnelMACAddrV6", Acted),
    f(NODE, "spec.addresses[].address", NODE_ADDRESSES),
    f(NODE, "spec.addresses[].type", NODE_ADDRESSES),
    f(NODE, "spec.orchRefs[].nodeName", ORCH_REFS),
    f(NODE, "spec.orchRefs[].orchestrator", ORCH_REFS),
    f(NODE, "spec.wireguard.interfaceIPv4Address", WIREGUARD),
    f(NODE, "spec.wireguard.interfaceIPv6Address", WIREGUARD),
    // NetworkPolicy and GlobalNetworkPolicy: the fields not acted on (every other field of
    // Calico's policy and rule shapes is enforced; see docs/policy.md).
    f(NP, "spec.performanceHints", HINTS),
    f(NP, "spec.ingress[].http.methods", L7),
    f(NP, "spec.ingress[].http.paths[].exact", L7),
    f(NP, "spec.ingress[].http.paths[].prefix", L7),
    f(NP, "spec.egress[].http.methods", L7),
    f(NP, "spec.egress[].http.paths[].exact", L7),
    f(NP, "spec.egress[].http.paths[].prefix", L7),
    f(NP, "spec.ingress[].source.services.name", SERVICES),
    f(NP, "spec.ingress[].source.services.namespace", SERVICES),
    f(NP, "spec.ingress[].destination.services.name", SERVICES),
    f(
        NP,
        "spec.ingress[].destination.services.namespace",
        SERVICES,
    ),
    f(NP, "spec.egress[].source.services.name", SERVICES),
    f(NP, "spec.egress[].source.services.namespace", SERVICES),
    f(NP, "spec.egress[].destination.services.name", SERVICES),
    f(NP, "spec.egress[].destination.services.namespace", SERVICES),
    f(GNP, "spec.doNotTrack", HOST_ENDPOINTS),
    f(GNP, "spec.preDNAT", HOST_ENDPOINTS),
    f(GNP, "spec.applyOnForward", HOST_ENDPOINTS),
    f(GNP, "spec.performanceHints", HINTS),
    f(GNP, "spec.ingress[].http.methods", L7),
    f(GNP, "spec.ingress[].http.paths[].exact", L7),
    f(GNP, "spec.ingress[].http.paths[].prefix", L7),
    f(GNP, "spec.egress[].http.methods", L7),
    f(GNP, "spec.egress[].http.paths[].exact", L7),
    f(GNP, "spec.egress[].http.paths[].prefix", L7),
    f(GNP, "spec.ingress[].source.services.name", SERVICES),
    f(GNP, "spec.ingress[].source.services.namespace", SERVICES),
    f(GNP, "spec.ingress[].destination.services.name", SERVICES),
    f(
        GNP,
        "spec.ingress[].destination.services.namespace",
        SERVICES,
    ),
    f(GNP, "spec.egress[].source.services.name", SERVICES),
    f(GNP, "spec.egress[].source.services.namespace", SERVICES),
    f(GNP, "spec.egress[].destination.services.name", SERVICES),
    f(
        GNP,
        "spec.egress[].destination.services.namespace",
        SERVICES,
    ),
    // FelixConfiguration (every field of Calico's FelixConfigurationSpec)
    f(
        FELIX,
        "spec.useInternalDataplaneDriver",
        NotActed("felix has one dataplane, its own; no external driver"),
    ),
    f(
        FELIX,
        "spec.dataplaneDriver",
        NotActed("felix has one dataplane, its own; no external driver"),
    ),
    f(
        FELIX,
        "spec.dataplaneWatchdogTimeout",
        NotActed("felix's liveness has its own fixed timeout"),
    ),
    f(
        FELIX,
        "spec.ipv6Support",
        NotActed("IPv6 support follows the pools (dual-stack, issue 14 section 1)"),
    ),
    f(FELIX, "spec.routeRefreshInterval", Acted),
    f(
        FELIX,
        "spec.interfaceRefreshInterval",
        NotActed("felix follows interfaces by netlink notifications and its resync"),
    ),
    f(FELIX, "spec.iptablesRefreshInterval", FC_IPTABLES),
    f(FELIX, "spec.iptablesPostWriteCheckInterval", FC_IPTABLES),
    f(FELIX, "spec.iptablesLockFilePath", FC_IPTABLES),
    f(FELIX, "spec.iptablesLockTimeout", FC_IPTABLES),
    f(FELIX, "spec.iptablesLockProbeInterval", FC_IPTABLES),
    f(FELIX, "spec.featureDetectOverride", FC_IPTABLES),
    f(
        FELIX,
        "spec.featureGates",
        NotActed("Calico tech-preview feature gates do not apply"),
    ),
    f(FELIX, "spec.ipsetsRefreshInterval", FC_IPTABLES),
    f(FELIX, "spec.maxIpsetSize", FC_IPTABLES),
    f(FELIX, "spec.iptablesBackend", FC_IPTABLES),
    f(FELIX, "spec.xdpRefreshInterval", FC_IPTABLES),
    f(
        FELIX,
        "spec.netlinkTimeout",
        NotActed("felix's netlink requests have a fixed timeout"),
    ),
    f(FELIX, "spec.metadataAddr", FC_OPENSTACK),
    f(FELIX, "spec.metadataPort", FC_OPENSTACK),
    f(FELIX, "spec.openstackRegion", FC_OPENSTACK),
    f(FELIX, "spec.interfacePrefix", Acted),
    f(FELIX, "spec.interfaceExclude", FC_HOSTPOL),
    f(FELIX, "spec.chainInsertMode", FC_IPTABLES),
    f(FELIX, "spec.defaultEndpointToHostAction", FC_HOSTPOL),
    f(FELIX, "spec.iptablesFilterAllowAction", FC_IPTABLES),
    f(FELIX, "spec.iptablesMangleAllowAction", FC_IPTABLES),
    f(FELIX, "spec.iptablesFilterDenyAction", FC_IPTABLES),
    f(FELIX, "spec.logPrefix", FC_LOG),
    f(FELIX, "spec.logFilePath", FC_LOG),
    f(FELIX, "spec.logSeverityFile", FC_LOG),
    f(FELIX, "spec.logSeverityScreen", FC_LOG),
    f(FELIX, "spec.logSeveritySys", FC_LOG),
    f(FELIX, "spec.logDebugFilenameRegex", FC_LOG),
    f(FELIX, "spec.ipipEnabled", Acted),
    f(FELIX, "spec.ipipMTU", Acted),
    f(FELIX, "spec.vxlanEnabled", Acted),
    f(FELIX, "spec.vxlanMTU", Acted),
    f(FELIX, "spec.vxlanMTUV6", Acted),
    f(FELIX, "spec.vxlanPort", Acted),
    f(FELIX, "spec.vxlanVNI", Acted),
    f(FELIX, "spec.allowVXLANPacketsFromWorkloads", FC_HOSTPOL),
    f(FELIX, "spec.allowIPIPPacketsFromWorkloads", FC_HOSTPOL),
    f(FELIX, "spec.reportingInterval", FC_OPENSTACK),
    f(FELIX, "spec.reportingTTL", FC_OPENSTACK),
    f(FELIX, "spec.endpointReportingEnabled", FC_OPENSTACK),
    f(FELIX, "spec.endpointReportingDelay", FC_OPENSTACK),
    f(FELIX, "spec.endpointStatusPathPrefix", FC_OPENSTACK),
    f(FELIX, "spec.iptablesMarkMask", FC_IPTABLES),
    f(FELIX, "spec.disableConntrackInvalidCheck", FC_HOSTPOL),
    f(
        FELIX,
        "spec.healthEnabled",
        NotActed("the health server runs unless --http-port 0"),
    ),
    f(FELIX, "spec.healthHost", Acted),
    f(FELIX, "spec.healthPort", Acted),
    f(
        FELIX,
        "spec.healthTimeoutOverrides",
        NotActed("felix's liveness has its own fixed timeout"),
    ),
    f(FELIX, "spec.prometheusMetricsEnabled", Acted),
    f(FELIX, "spec.prometheusMetricsHost", Acted),
    f(FELIX, "spec.prometheusMetricsPort", Acted),
    f(FELIX, "spec.prometheusGoMetricsEnabled", FC_GO),
    f(FELIX, "spec.prometheusProcessMetricsEnabled", FC_GO),
    f(
        FELIX,
        "spec.prometheusWireGuardMetricsEnabled",
        NotActed("per-peer WireGuard metrics are not exported; felix exports its peer count"),
    ),
    f(FELIX, "spec.failsafeInboundHostPorts", FC_HOSTPOL),
    f(FELIX, "spec.failsafeOutboundHostPorts", FC_HOSTPOL),
    f(FELIX, "spec.kubeNodePortRanges", FC_HOSTPOL),
    f(FELIX, "spec.policySyncPathPrefix", FC_OPENSTACK),
    f(FELIX, "spec.usageReportingEnabled", FC_USAGE),
    f(FELIX, "spec.usageReportingInitialDelay", FC_USAGE),
    f(FELIX, "spec.usageReportingInterval", FC_USAGE),
    f(FELIX, "spec.natPortRange", Acted),
    f(FELIX, "spec.natOutgoingAddress", Acted),
    f(
        FELIX,
        "spec.natOutgoingExclusions",
        NotActed("natOutgoing excludes every pool (IPPoolsOnly)"),
    ),
    f(FELIX, "spec.deviceRouteSourceAddress", Acted),
    f(FELIX, "spec.deviceRouteSourceAddressIPv6", Acted),
    f(
        FELIX,
        "spec.deviceRouteProtocol",
        NotActed("felix's route protocol is its --route-protocol flag"),
    ),
    f(FELIX, "spec.removeExternalRoutes", Acted),
    f(
        FELIX,
        "spec.programClusterRoutes",
        NotActed(
            "the split is fixed: bgpd learns the routes (or IPAM without BGP), felix programs them",
        ),
    ),
    f(
        FELIX,
        "spec.ipForwarding",
        NotActed("felix always enables IPv4 forwarding"),
    ),
    f(FELIX, "spec.externalNodesList", FC_HOSTPOL),
    f(FELIX, "spec.debugMemoryProfilePath", FC_DEBUG),
    f(FELIX, "spec.debugDisableLogDropping", FC_DEBUG),
    f(FELIX, "spec.debugSimulateCalcGraphHangAfter", FC_DEBUG),
    f(FELIX, "spec.debugSimulateDataplaneHangAfter", FC_DEBUG),
    f(FELIX, "spec.debugSimulateDataplaneApplyDelay", FC_DEBUG),
    f(FELIX, "spec.debugHost", FC_DEBUG),
    f(FELIX, "spec.debugPort", FC_DEBUG),
    f(
        FELIX,
        "spec.iptablesNATOutgoingInterfaceFilter",
        FC_IPTABLES,
    ),
    f(FELIX, "spec.sidecarAccelerationEnabled", FC_OPENSTACK),
    f(FELIX, "spec.xdpEnabled", FC_IPTABLES),
    f(FELIX, "spec.genericXDPEnabled", FC_IPTABLES),
    f(FELIX, "spec.nftablesMode", FC_NFT),
    f(FELIX, "spec.nftablesRefreshInterval", FC_NFT),
    f(FELIX, "spec.nftablesFilterAllowAction", FC_NFT),
    f(FELIX, "spec.nftablesMangleAllowAction", FC_NFT),
    f(FELIX, "spec.nftablesFilterDenyAction", FC_NFT),
    f(FELIX, "spec.nftablesMarkMask", FC_NFT),
    f(FELIX, "spec.bpfEnabled", FC_BPF),
    f(FELIX, "spec.bpfDisableUnprivileged", FC_BPF),
    f(FELIX, "spec.bpfLogLevel", FC_BPF),
    f(FELIX, "spec.bpfConntrackLogLevel", FC_BPF),
    f(FELIX, "spec.bpfConntrackMode", FC_BPF),
    f(FELIX, "spec.bpfConntrackTimeouts", FC_BPF),
    f(FELIX, "spec.bpfLogFilters", FC_BPF),
    f(FELIX, "spec.bpfCTLBLogFilter", FC_BPF),
    f(FELIX, "spec.bpfDataIfacePattern", FC_BPF),
    f(FELIX, "spec.bpfL3IfacePattern", FC_BPF),
    f(FELIX, "spec.bpfConnectTimeLoadBalancingEnabled", FC_BPF),
    f(FELIX, "spec.bpfConnectTimeLoadBalancing", FC_BPF),
    f(FELIX, "spec.bpfHostNetworkedNATWithoutCTLB", FC_BPF),
    f(FELIX, "spec.bpfExternalServiceMode", FC_BPF),
    f(FELIX, "spec.bpfDSROptoutCIDRs", FC_BPF),
    f(FELIX, "spec.bpfExtToServiceConnmark", FC_BPF),
    f(FELIX, "spec.bpfKubeProxyIptablesCleanupEnabled", FC_BPF),
    f(FELIX, "spec.bpfKubeProxyMinSyncPeriod", FC_BPF),
    f(FELIX, "spec.bpfKubeProxyEndpointSlicesEnabled", FC_BPF),
    f(FELIX, "spec.bpfPSNATPorts", FC_BPF),
    f(FELIX, "spec.bpfMapSizeNATFrontend", FC_BPF),
    f(FELIX, "spec.bpfMapSizeNATBackend", FC_BPF),
    f(FELIX, "spec.bpfMapSizeNATAffinity", FC_BPF),
    f(FELIX, "spec.bpfMapSizeRoute", FC_BPF),
    f(FELIX, "spec.bpfMapSizeConntrack", FC_BPF),
    f(FELIX, "spec.bpfMapSizePerCpuConntrack", FC_BPF),
    f(FELIX, "spec.bpfMapSizeConntrackScaling", FC_BPF),
    f(FELIX, "spec.bpfMapSizeConntrackCleanupQueue", FC_BPF),
    f(FELIX, "spec.bpfMapSizeIPSets", FC_BPF),
    f(FELIX, "spec.bpfMapSizeIfState", FC_BPF),
    f(FELIX, "spec.bpfHostConntrackBypass", FC_BPF),
    f(FELIX, "spec.bpfEnforceRPF", FC_BPF),
    f(FELIX, "spec.bpfPolicyDebugEnabled", FC_BPF),
    f(FELIX, "spec.bpfForceTrackPacketsFromIfaces", FC_BPF),
    f(FELIX, "spec.bpfDisableGROForIfaces", FC_BPF),
    f(FELIX, "spec.bpfExcludeCIDRsFromNAT", FC_BPF),
    f(FELIX, "spec.bpfExportBufferSizeMB", FC_BPF),
    f(FELIX, "spec.flowLogsPolicyEvaluationMode", FC_FLOWLOGS),
    f(FELIX, "spec.bpfRedirectToPeer", FC_BPF),
    f(FELIX, "spec.flowLogsFlushInterval", FC_FLOWLOGS),
    f(FELIX, "spec.flowLogsCollectorDebugTrace", FC_FLOWLOGS),
    f(FELIX, "spec.flowLogsGoldmaneServer", FC_FLOWLOGS),
    f(FELIX, "spec.flowLogsLocalReporter", FC_FLOWLOGS),
    f(FELIX, "spec.bpfProfiling", FC_BPF),
    f(
        FELIX,
        "spec.routeSource",
        NotActed("routes come from IPAM and the WorkloadEndpoints (CalicoIPAM)"),
    ),
    f(FELIX, "spec.routeTableRanges", Acted),
    f(FELIX, "spec.routeTableRange", Acted),
    f(
        FELIX,
        "spec.routeSyncDisabled",
        NotActed("felix always programs routes"),
    ),
    f(FELIX, "spec.wireguardEnabled", Acted),
    f(FELIX, "spec.wireguardEnabledV6", Acted),
    f(
        FELIX,
        "spec.wireguardThreadingEnabled",
        NotActed("the kernel's default WireGuard threading is kept"),
    ),
    f(FELIX, "spec.wireguardListeningPort", Acted),
    f(FELIX, "spec.wireguardListeningPortV6", Acted),
    f(FELIX, "spec.wireguardRoutingRulePriority", Acted),
    f(FELIX, "spec.wireguardInterfaceName", Acted),
    f(FELIX, "spec.wireguardInterfaceNameV6", Acted),
    f(FELIX, "spec.wireguardMTU", Acted),
    f(FELIX, "spec.wireguardMTUV6", Acted),
    f(
        FELIX,
        "spec.wireguardHostEncryptionEnabled",
        NotActed("host-network traffic is not encrypted (Calico marks this experimental)"),
    ),
    f(FELIX, "spec.wireguardKeepAlive", Acted),
    f(FELIX, "spec.awsSrcDstCheck", FC_PLATFORM),
    f(FELIX, "spec.serviceLoopPrevention", FC_HOSTPOL),
    f(FELIX, "spec.workloadSourceSpoofing", FC_HOSTPOL),
    f(FELIX, "spec.mtuIfacePattern", Acted),
    f(FELIX, "spec.floatingIPs", FC_OPENSTACK),
    f(FELIX, "spec.windowsManageFirewallRules", FC_PLATFORM),
    f(FELIX, "spec.goGCThreshold", FC_GO),
    f(FELIX, "spec.goMemoryLimitMB", FC_GO),
    f(FELIX, "spec.goMaxProcs", FC_GO),
    f(
        FELIX,
        "spec.requireMTUFile",
        NotActed("felix detects the MTU itself; there is no MTU file"),
    ),
];

/// A not-acted field set in a resource.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnactedField {
    pub kind: &'static str,
    pub name: String,
    pub field: &'static str,
    pub reason: &'static str,
}

impl fmt::Display for UnactedField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} '{}': {} is accepted but not acted on: {}",
            self.kind, self.name, self.field, self.reason
        )
    }
}

/// Whether `path` (below `spec.`) holds a value in `v`: present, not null, and for `[]` in
/// at least one element.
fn is_set(v: &Value, path: &str) -> bool {
    let Some((head, rest)) = path
        .split_once('.')
        .map(|(h, r)| (h, Some(r)))
        .or(Some((path, None)))
    else {
        return false;
    };
    let (name, each) = match head.strip_suffix("[]") {
        Some(n) => (n, true),
        None => (head, false),
    };
    let Some(x) = v.get(name).filter(|x| !x.is_null()) else {
        return false;
    };
    match (each, rest) {
        (true, rest) => x
            .as_array()
            .is_some_and(|items| items.iter().any(|i| rest.is_none_or(|r| is_set(i, r)))),
        (false, Some(r)) => is_set(x, r),
        (false, None) => true,
    }
}

/// The not-acted fields that are set in `r`, in registry order.
pub fn not_acted(r: &AnyResource) -> Vec<UnactedField> {
    let value = r.to_value();
    let spec = value.get("spec").unwrap_or(&Value::Null);
    not_acted_in(r.info().kind, r.name(), spec)
}

/// The not-acted fields set in the spec (as JSON) of the `kind` resource `name`.
fn not_acted_in(kind: &str, name: &str, spec: &Value) -> Vec<UnactedField> {
    FIELDS
        .iter()
        .filter(|fi| fi.kind == kind)
        .filter_map(|fi| match fi.status {
            NotActed(reason) => {
                let below = fi.path.strip_prefix("spec.")?;
                is_set(spec, below).then(|| UnactedField {
                    kind: fi.kind,
                    name: name.to_string(),
                    field: fi.path,
                    reason,
                })
            }
            Acted => None,
        })
        .collect()
}

impl<S: Spec> Resource<S> {
    /// The not-acted fields set in this resource (see [`not_acted`]).
    pub fn not_acted(&self) -> Vec<UnactedField> {
        let spec = serde_json::to_value(&self.spec).unwrap_or(Value::Null);
        not_acted_in(S::KIND, self.name(), &spec)
    }

    /// Logs each not-acted field set in this resource as a warning, once per (kind, name,
    /// field) for the life of the process: for the daemons, on every resource they read.
    /// Returns how many warnings were new.
    pub fn log_not_acted_once(&self) -> usize {
        log_once(self.not_acted())
    }
}

/// [`Resource::log_not_acted_once`] for a resource of any kind.
pub fn log_not_acted_once(r: &AnyResource) -> usize {
    log_once(not_acted(r))
}

fn log_once(fields: Vec<UnactedField>) -> usize {
    static SEEN: OnceLock<Mutex<HashSet<UnactedField>>> = OnceLock::new();
    let seen = SEEN.get_or_init(Default::default);
    let mut logged = 0;
    for n in fields {
        let fresh = seen.lock().map(|mut s| s.insert(n.clone())).unwrap_or(true);
        if fresh {
            tracing::warn!(kind = n.kind, name = %n.name, field = n.field, "{n}");
            logged += 1;
        }
    }
    logged
}

/// The leaf paths of a spec value, in the registry's notation (for the completeness test).
pub fn leaf_paths(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                leaf_paths(x, &format!("{prefix}.{k}"), out);
            }
        }
        Value::Array(items) if items.iter().any(Value::is_object) => {
            for x in items {
                leaf_paths(x, &format!("{prefix}[]"), out);
            }
        }
        _ => {
            out.insert(prefix.to_string());
        }
    }
}

#[cfg(test)]
mod tests;
