//! Path attributes (RFC 4271 §4.3 and §5, and the extensions margay speaks).
//!
//! [`PathAttributes`] is the set the RIB interns and shares between routes: it holds every
//! attribute except MP_REACH_NLRI and MP_UNREACH_NLRI, which carry NLRI and so belong to the
//! [`crate::wire::Update`] itself. AS numbers are always 4 octets here; the codec converts to
//! and from 2-octet AS_PATH plus AS4_PATH / AS4_AGGREGATOR when the peer is a 2-octet speaker.

use bytes::Bytes;
use std::net::Ipv4Addr;

/// Attribute type codes (IANA "BGP Path Attributes").
pub mod code {
    pub const ORIGIN: u8 = 1;
    pub const AS_PATH: u8 = 2;
    pub const NEXT_HOP: u8 = 3;
    pub const MULTI_EXIT_DISC: u8 = 4;
    pub const LOCAL_PREF: u8 = 5;
    pub const ATOMIC_AGGREGATE: u8 = 6;
    pub const AGGREGATOR: u8 = 7;
    pub const COMMUNITIES: u8 = 8;
    pub const ORIGINATOR_ID: u8 = 9;
    pub const CLUSTER_LIST: u8 = 10;
    pub const MP_REACH_NLRI: u8 = 14;
    pub const MP_UNREACH_NLRI: u8 = 15;
    pub const AS4_PATH: u8 = 17;
    pub const AS4_AGGREGATOR: u8 = 18;
    pub const LARGE_COMMUNITY: u8 = 32;
}

/// Attribute flag bits (RFC 4271 §4.3).
pub mod flag {
    pub const OPTIONAL: u8 = 0x80;
    pub const TRANSITIVE: u8 = 0x40;
    pub const PARTIAL: u8 = 0x20;
    pub const EXTENDED_LENGTH: u8 = 0x10;
}

/// ORIGIN (RFC 4271 §5.1.1). Ordered as the decision process prefers: IGP < EGP < INCOMPLETE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Origin {
    Igp = 0,
    Egp = 1,
    Incomplete = 2,
}

/// One AS_PATH segment (RFC 4271 §4.3; confederation segments of RFC 5065 are kept as such).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AsSegment {
    Sequence(Vec<u32>),
    Set(Vec<u32>),
    ConfedSequence(Vec<u32>),
    ConfedSet(Vec<u32>),
}

/// AS_PATH with 4-octet AS numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct AsPath {
    pub segments: Vec<AsSegment>,
}

impl AsPath {
    /// Path length as the decision process counts it (RFC 4271 §9.1.2.2 a): an AS_SET counts
    /// as 1, confederation segments count 0.
    pub fn len(&self) -> usize {
        self.segments
            .iter()
            .map(|s| match s {
                AsSegment::Sequence(v) => v.len(),
                AsSegment::Set(_) => 1,
                AsSegment::ConfedSequence(_) | AsSegment::ConfedSet(_) => 0,
            })
            .sum()
    }

    /// True when the path has no AS at all (a route from an iBGP peer that originated it).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `asn` appears anywhere in the path (eBGP loop detection, RFC 4271 §9.1.2).
    pub fn contains(&self, asn: u32) -> bool {
        self.segments.iter().any(|s| match s {
            AsSegment::Sequence(v)
            | AsSegment::Set(v)
            | AsSegment::ConfedSequence(v)
            | AsSegment::ConfedSet(v) => v.contains(&asn),
        })
    }

    /// How many times `asn` appears in the path (allowas-in counts them).
    pub fn count(&self, asn: u32) -> usize {
        self.segments
            .iter()
            .map(|s| match s {
                AsSegment::Sequence(v)
                | AsSegment::Set(v)
                | AsSegment::ConfedSequence(v)
                | AsSegment::ConfedSet(v) => v.iter().filter(|a| **a == asn).count(),
            })
            .sum()
    }

    /// The neighbouring AS: the first AS of the leading AS_SEQUENCE (used for MED comparison).
    pub fn neighbor_as(&self) -> Option<u32> {
        match self.segments.first() {
            Some(AsSegment::Sequence(v)) => v.first().copied(),
            _ => None,
        }
    }

    /// A copy with `asn` prepended, as an eBGP speaker does on export (RFC 4271 §5.1.2).
    pub fn prepended(&self, asn: u32) -> AsPath {
        let mut segments = self.segments.clone();
        match segments.first_mut() {
            Some(AsSegment::Sequence(v)) if v.len() < 255 => v.insert(0, asn),
            _ => segments.insert(0, AsSegment::Sequence(vec![asn])),
        }
        AsPath { segments }
    }
}

impl std::fmt::Display for AsPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for seg in &self.segments {
            let (open, close, v) = match seg {
                AsSegment::Sequence(v) => ("", "", v),
                AsSegment::Set(v) => ("{", "}", v),
                AsSegment::ConfedSequence(v) => ("(", ")", v),
                AsSegment::ConfedSet(v) => ("[", "]", v),
            };
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            let list: Vec<String> = v.iter().map(|a| a.to_string()).collect();
            write!(f, "{open}{}{close}", list.join(" "))?;
        }
        Ok(())
    }
}

/// AGGREGATOR (RFC 4271 §5.1.7), with a 4-octet AS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Aggregator {
    pub asn: u32,
    pub address: Ipv4Addr,
}

/// A LARGE_COMMUNITY value (RFC 8092).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LargeCommunity {
    pub global_admin: u32,
    pub local_data1: u32,
    pub local_data2: u32,
}

/// An attribute margay does not interpret, kept to be passed on (optional transitive ones, with
/// the PARTIAL bit set on export, RFC 4271 §5) or dropped (optional non-transitive ones).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RawAttribute {
    pub flags: u8,
    pub type_code: u8,
    pub value: Bytes,
}

/// The path attributes of a route, without the NLRI-carrying MP_REACH / MP_UNREACH.
///
/// Values are kept in canonical form (communities sorted and deduplicated are NOT assumed:
/// the order received is the order passed on) so that two equal sets hash equal and intern once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PathAttributes {
    pub origin: Option<Origin>,
    pub as_path: AsPath,
    /// The NEXT_HOP attribute (IPv4 NLRI); IPv6 next hops travel in MP_REACH_NLRI.
    pub next_hop: Option<Ipv4Addr>,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    pub atomic_aggregate: bool,
    pub aggregator: Option<Aggregator>,
    pub communities: Vec<u32>,
    pub large_communities: Vec<LargeCommunity>,
    pub originator_id: Option<Ipv4Addr>,
    pub cluster_list: Vec<Ipv4Addr>,
    /// Unrecognised optional attributes, in the order received.
    pub unknown: Vec<RawAttribute>,
}
