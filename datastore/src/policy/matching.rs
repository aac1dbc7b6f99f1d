//! Whether one rule matches one flow: every match a rule sets must hold (protocol, ICMP type
//! and code, IP version, source and destination nets, selectors, ports), and every negated
//! match must not.

use super::compile::{CompiledRule, Entity, Icmp};
use super::endpoint::Endpoint;
use crate::resources::PortMatch;
use std::net::IpAddr;

/// One end of a flow: an address, the endpoint it belongs to (if any), and the node whose
/// host it is (if it is a node's own address).
#[derive(Debug, Clone, Copy)]
pub struct FlowEnd<'a> {
    pub ip: IpAddr,
    pub endpoint: Option<&'a Endpoint>,
    pub host_of: Option<&'a str>,
}

/// A packet's flow, as policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct Flow<'a> {
    pub src: FlowEnd<'a>,
    pub dst: FlowEnd<'a>,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, ...).
    pub protocol: u8,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    /// ICMP type and code.
    pub icmp: Option<(u8, u8)>,
}

fn icmp_matches(want: &Icmp, got: Option<(u8, u8)>) -> bool {
    let Some((t, c)) = got else { return false };
    want.icmp_type.is_none_or(|w| w == t) && want.code.is_none_or(|w| w == c)
}

fn port_matches(m: &PortMatch, port: u16, end: &FlowEnd<'_>, proto: u8) -> bool {
    match m {
        PortMatch::Range(a, b) => (*a..=*b).contains(&port),
        PortMatch::Named(n) => end
            .endpoint
            .and_then(|e| e.named_port(n, proto))
            .is_some_and(|p| p == port),
    }
}

fn entity_matches(e: &Entity, end: &FlowEnd<'_>, port: Option<u16>, proto: u8) -> bool {
    if !e.nets.is_empty() && !e.nets.iter().any(|n| n.contains(&end.ip)) {
        return false;
    }
    if e.not_nets.iter().any(|n| n.contains(&end.ip)) {
        return false;
    }
    if let Some(s) = &e.selector
        && !end.endpoint.is_some_and(|ep| s.matches(&ep.labels))
    {
        return false;
    }
    if let Some(s) = &e.not_selector
        && end.endpoint.is_some_and(|ep| s.matches(&ep.labels))
    {
        return false;
    }
    if !e.ports.is_empty()
        && !port.is_some_and(|p| e.ports.iter().any(|m| port_matches(m, p, end, proto)))
    {
        return false;
    }
    if let Some(p) = port
        && e.not_ports.iter().any(|m| port_matches(m, p, end, proto))
    {
        return false;
    }
    true
}

/// Whether `rule` matches `flow`.
pub fn rule_matches(rule: &CompiledRule, flow: &Flow<'_>) -> bool {
    let v = if flow.src.ip.is_ipv4() { 4 } else { 6 };
    if rule.ip_version.is_some_and(|w| w != v) {
        return false;
    }
    if rule.protocol.is_some_and(|p| p != flow.protocol) {
        return false;
    }
    if rule.not_protocol.is_some_and(|p| p == flow.protocol) {
        return false;
    }
    if let Some(i) = &rule.icmp
        && !icmp_matches(i, flow.icmp)
    {
        return false;
    }
    if let Some(i) = &rule.not_icmp
        && icmp_matches(i, flow.icmp)
    {
        return false;
    }
    entity_matches(&rule.source, &flow.src, flow.src_port, flow.protocol)
        && entity_matches(&rule.destination, &flow.dst, flow.dst_port, flow.protocol)
}
