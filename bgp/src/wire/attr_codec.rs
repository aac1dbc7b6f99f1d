//! Path attributes one by one (RFC 4271 §4.3, §5): their values on the wire, the flag checks,
//! and what RFC 7606 §7 says to do when one is malformed.
//!
//! Every attribute starts with the same header:
//!
//! ```text
//!  0                   1
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5
//! +---------------+---------------+
//! |  Attr. Flags  |Attr. Type Code|
//! +---------------+---------------+
//!  O T P E 0 0 0 0
//! ```
//!
//! followed by a 1-octet length, or 2 octets when E (Extended Length) is set. AS_PATH (and
//! AS4_PATH, RFC 6793) is a list of segments:
//!
//! ```text
//! +------------------------------+
//! | Path Segment Type (1 octet)  |   1 AS_SET, 2 AS_SEQUENCE,
//! +------------------------------+   3 AS_CONFED_SEQUENCE, 4 AS_CONFED_SET
//! | Path Segment Length (1)      |   number of ASes
//! +------------------------------+
//! | Path Segment Value           |   2 or 4 octets per AS
//! +------------------------------+
//! ```
//!
//! The fixed-size values: ORIGIN 1 octet; NEXT_HOP, MED, LOCAL_PREF, ORIGINATOR_ID 4 octets;
//! ATOMIC_AGGREGATE empty; AGGREGATOR AS (2 or 4) + IPv4 address; AS4_AGGREGATOR 4 + 4;
//! COMMUNITIES n×4; CLUSTER_LIST n×4; LARGE_COMMUNITY n×12 (RFC 8092).

use super::attrs::{
    Aggregator, AsPath, AsSegment, LargeCommunity, Origin, PathAttributes, RawAttribute, code, flag,
};
use super::error::{EncodeError, MessageError};
use super::message::{AS_TRANS, CodecContext, notif};
use bytes::{BufMut, Bytes, BytesMut};
use std::net::Ipv4Addr;

/// AS_PATH segment type codes.
pub mod segment {
    pub const AS_SET: u8 = 1;
    pub const AS_SEQUENCE: u8 = 2;
    pub const AS_CONFED_SEQUENCE: u8 = 3;
    pub const AS_CONFED_SET: u8 = 4;
}

/// The RFC 7606 approach for a bad attribute, least to most severe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Attribute discard: drop this attribute, keep the route.
    Discard(String),
    /// Treat-as-withdraw: every NLRI in the UPDATE is withdrawn.
    Withdraw(String),
    /// Session reset: NOTIFICATION and close.
    Reset(MessageError),
}

/// One attribute as it appeared in the list.
#[derive(Debug, Clone, Copy)]
pub struct AttrHeader<'a> {
    pub flags: u8,
    pub type_code: u8,
    pub value: &'a [u8],
    /// The whole attribute (header and value), for NOTIFICATION data.
    pub raw: &'a [u8],
}

/// The attribute's name, for logs and reasons.
pub fn name(type_code: u8) -> &'static str {
    match type_code {
        code::ORIGIN => "ORIGIN",
        code::AS_PATH => "AS_PATH",
        code::NEXT_HOP => "NEXT_HOP",
        code::MULTI_EXIT_DISC => "MULTI_EXIT_DISC",
        code::LOCAL_PREF => "LOCAL_PREF",
        code::ATOMIC_AGGREGATE => "ATOMIC_AGGREGATE",
        code::AGGREGATOR => "AGGREGATOR",
        code::COMMUNITIES => "COMMUNITIES",
        code::ORIGINATOR_ID => "ORIGINATOR_ID",
        code::CLUSTER_LIST => "CLUSTER_LIST",
        code::MP_REACH_NLRI => "MP_REACH_NLRI",
        code::MP_UNREACH_NLRI => "MP_UNREACH_NLRI",
        code::AS4_PATH => "AS4_PATH",
        code::AS4_AGGREGATOR => "AS4_AGGREGATOR",
        code::LARGE_COMMUNITY => "LARGE_COMMUNITY",
        _ => "unknown attribute",
    }
}

const WELL_KNOWN: u8 = flag::TRANSITIVE;
const OPT_TRANS: u8 = flag::OPTIONAL | flag::TRANSITIVE;
const OPT_NON_TRANS: u8 = flag::OPTIONAL;

/// The Optional and Transitive bits a known attribute must carry.
pub fn expected_flags(type_code: u8) -> Option<u8> {
    Some(match type_code {
        code::ORIGIN
        | code::AS_PATH
        | code::NEXT_HOP
        | code::LOCAL_PREF
        | code::ATOMIC_AGGREGATE => WELL_KNOWN,
        code::AGGREGATOR
        | code::COMMUNITIES
        | code::AS4_PATH
        | code::AS4_AGGREGATOR
        | code::LARGE_COMMUNITY => OPT_TRANS,
        code::MULTI_EXIT_DISC
        | code::ORIGINATOR_ID
        | code::CLUSTER_LIST
        | code::MP_REACH_NLRI
        | code::MP_UNREACH_NLRI => OPT_NON_TRANS,
        _ => return None,
    })
}

/// Whether the flags conflict with the attribute's type (RFC 7606 §3 c; RFC 4271 §4.3: the
/// Partial bit is 0 for well-known and optional non-transitive attributes).
pub fn flags_conflict(flags: u8, expected: u8) -> bool {
    let ot = flags & (flag::OPTIONAL | flag::TRANSITIVE);
    ot != expected || (expected != OPT_TRANS && flags & flag::PARTIAL != 0)
}

/// What decoding an attribute list gathers beside the [`PathAttributes`]: the AS4 attributes
/// that only make sense once the whole list is read.
#[derive(Debug, Default)]
pub struct As4Attrs {
    pub as4_path: Option<AsPath>,
    pub as4_aggregator: Option<Aggregator>,
}

/// RFC 7606's approach for a malformed instance of each attribute (§7), applied also to
/// flag conflicts.
fn malformed(type_code: u8, why: &str) -> Fault {
    let reason = format!("{}: {why}", name(type_code));
    match type_code {
        code::ATOMIC_AGGREGATE | code::AGGREGATOR | code::AS4_PATH | code::AS4_AGGREGATOR => {
            Fault::Discard(reason)
        }
        _ => Fault::Withdraw(reason),
    }
}

/// Decodes one attribute other than MP_REACH_NLRI / MP_UNREACH_NLRI into `attrs` (or `as4`).
pub fn decode_attribute(
    a: AttrHeader<'_>,
    ctx: &CodecContext,
    attrs: &mut PathAttributes,
    as4: &mut As4Attrs,
) -> Result<(), Fault> {
    let v = a.value;
    let Some(expected) = expected_flags(a.type_code) else {
        return decode_unknown(a, attrs);
    };
    // RFC 7606 §7.5, §7.9, §7.10: these mean nothing from an eBGP peer and are dropped first.
    if !ctx.ibgp
        && matches!(
            a.type_code,
            code::LOCAL_PREF | code::ORIGINATOR_ID | code::CLUSTER_LIST
        )
    {
        return Err(Fault::Discard(format!(
            "{} from an eBGP peer",
            name(a.type_code)
        )));
    }
    if flags_conflict(a.flags, expected) {
        return Err(malformed(a.type_code, "flags conflict with the type"));
    }
    match a.type_code {
        code::ORIGIN => {
            attrs.origin = Some(match v {
                [0] => Origin::Igp,
                [1] => Origin::Egp,
                [2] => Origin::Incomplete,
                [_] => return Err(malformed(a.type_code, "undefined value")),
                _ => return Err(malformed(a.type_code, "length is not 1")),
            });
        }
        code::AS_PATH => {
            attrs.as_path =
                decode_as_path(v, ctx.four_octet_as).map_err(|e| malformed(a.type_code, e))?;
        }
        code::NEXT_HOP => {
            let addr =
                Ipv4Addr::from(u32_of(v).ok_or_else(|| malformed(a.type_code, "length is not 4"))?);
            // RFC 4271 §6.3 / RFC 7606 §7.3: a next hop that is no host address is
            // semantically wrong; the route cannot be used.
            if addr.is_unspecified() || addr.is_multicast() || addr.is_broadcast() {
                return Err(malformed(a.type_code, "not a unicast host address"));
            }
            attrs.next_hop = Some(addr);
        }
        code::MULTI_EXIT_DISC => {
            attrs.med = Some(u32_of(v).ok_or_else(|| malformed(a.type_code, "length is not 4"))?);
        }
        code::LOCAL_PREF => {
            attrs.local_pref =
                Some(u32_of(v).ok_or_else(|| malformed(a.type_code, "length is not 4"))?);
        }
        code::ATOMIC_AGGREGATE => {
            if !v.is_empty() {
                return Err(malformed(a.type_code, "length is not 0"));
            }
            attrs.atomic_aggregate = true;
        }
        code::AGGREGATOR => {
            attrs.aggregator = Some(match (v.len(), ctx.four_octet_as) {
                (8, true) => Aggregator {
                    asn: u32::from_be_bytes([v[0], v[1], v[2], v[3]]),
                    address: Ipv4Addr::new(v[4], v[5], v[6], v[7]),
                },
                (6, false) => Aggregator {
                    asn: u16::from_be_bytes([v[0], v[1]]) as u32,
                    address: Ipv4Addr::new(v[2], v[3], v[4], v[5]),
                },
                _ => return Err(malformed(a.type_code, "wrong length")),
            });
        }
        code::COMMUNITIES => {
            if v.is_empty() || !v.len().is_multiple_of(4) {
                return Err(malformed(
                    a.type_code,
                    "length is not a non-zero multiple of 4",
                ));
            }
            attrs.communities = v
                .chunks_exact(4)
                .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
        }
        code::ORIGINATOR_ID => {
            attrs.originator_id = Some(Ipv4Addr::from(
                u32_of(v).ok_or_else(|| malformed(a.type_code, "length is not 4"))?,
            ));
        }
        code::CLUSTER_LIST => {
            if v.is_empty() || !v.len().is_multiple_of(4) {
                return Err(malformed(
                    a.type_code,
                    "length is not a non-zero multiple of 4",
                ));
            }
            attrs.cluster_list = v
                .chunks_exact(4)
                .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
                .collect();
        }
        code::LARGE_COMMUNITY => {
            if v.is_empty() || !v.len().is_multiple_of(12) {
                return Err(malformed(
                    a.type_code,
                    "length is not a non-zero multiple of 12",
                ));
            }
            attrs.large_communities = v
                .chunks_exact(12)
                .map(|c| LargeCommunity {
                    global_admin: u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
                    local_data1: u32::from_be_bytes([c[4], c[5], c[6], c[7]]),
                    local_data2: u32::from_be_bytes([c[8], c[9], c[10], c[11]]),
                })
                .collect();
        }
        code::AS4_PATH => {
            // RFC 6793 §4.1: a NEW speaker ignores AS4_PATH from another NEW speaker.
            if ctx.four_octet_as {
                return Err(Fault::Discard("AS4_PATH from a 4-octet AS peer".into()));
            }
            let path = decode_as_path(v, true).map_err(|e| malformed(a.type_code, e))?;
            let confed = path
                .segments
                .iter()
                .any(|s| matches!(s, AsSegment::ConfedSequence(_) | AsSegment::ConfedSet(_)));
            if confed {
                return Err(malformed(a.type_code, "confederation segment"));
            }
            as4.as4_path = Some(path);
        }
        code::AS4_AGGREGATOR => {
            if ctx.four_octet_as {
                return Err(Fault::Discard(
                    "AS4_AGGREGATOR from a 4-octet AS peer".into(),
                ));
            }
            if v.len() != 8 {
                return Err(malformed(a.type_code, "length is not 8"));
            }
            as4.as4_aggregator = Some(Aggregator {
                asn: u32::from_be_bytes([v[0], v[1], v[2], v[3]]),
                address: Ipv4Addr::new(v[4], v[5], v[6], v[7]),
            });
        }
        _ => return decode_unknown(a, attrs),
    }
    Ok(())
}

/// An attribute margay does not know: keep it if optional transitive, drop it if optional
/// non-transitive, and reset the session for an unrecognized well-known one (RFC 4271 §6.3).
fn decode_unknown(a: AttrHeader<'_>, attrs: &mut PathAttributes) -> Result<(), Fault> {
    if a.flags & flag::OPTIONAL == 0 {
        return Err(Fault::Reset(MessageError::update(
            notif::UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE,
            Bytes::copy_from_slice(a.raw),
            format!("unrecognized well-known attribute {}", a.type_code),
        )));
    }
    if a.flags & flag::TRANSITIVE != 0 {
        attrs.unknown.push(RawAttribute {
            flags: a.flags & !flag::EXTENDED_LENGTH,
            type_code: a.type_code,
            value: Bytes::copy_from_slice(a.value),
        });
    }
    Ok(())
}

fn u32_of(v: &[u8]) -> Option<u32> {
    match v {
        [a, b, c, d] => Some(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => None,
    }
}

/// Reads AS_PATH segments with 2- or 4-octet ASes (RFC 7606 §7.2 says what is malformed).
pub fn decode_as_path(mut v: &[u8], four_octet: bool) -> Result<AsPath, &'static str> {
    let size = if four_octet { 4 } else { 2 };
    let mut segments = Vec::new();
    while !v.is_empty() {
        let [stype, count, rest @ ..] = v else {
            return Err("segment header truncated");
        };
        if *count == 0 {
            return Err("segment of length 0");
        }
        let n = *count as usize * size;
        if rest.len() < n {
            return Err("segment overruns the attribute");
        }
        let asns: Vec<u32> = if four_octet {
            rest[..n]
                .chunks_exact(4)
                .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        } else {
            rest[..n]
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]) as u32)
                .collect()
        };
        segments.push(match *stype {
            segment::AS_SET => AsSegment::Set(asns),
            segment::AS_SEQUENCE => AsSegment::Sequence(asns),
            segment::AS_CONFED_SEQUENCE => AsSegment::ConfedSequence(asns),
            segment::AS_CONFED_SET => AsSegment::ConfedSet(asns),
            _ => return Err("unknown segment type"),
        });
        v = &rest[n..];
    }
    Ok(AsPath { segments })
}

/// Writes an attribute header; the Extended Length bit is set when `len` needs it.
pub fn put_attr_header(
    out: &mut BytesMut,
    flags: u8,
    type_code: u8,
    len: usize,
) -> Result<(), EncodeError> {
    if len > u16::MAX as usize {
        return Err(EncodeError::AttributeTooLong { type_code, len });
    }
    if len > 255 {
        out.put_u8(flags | flag::EXTENDED_LENGTH);
        out.put_u8(type_code);
        out.put_u16(len as u16);
    } else {
        out.put_u8(flags & !flag::EXTENDED_LENGTH);
        out.put_u8(type_code);
        out.put_u8(len as u8);
    }
    Ok(())
}

fn segment_parts(seg: &AsSegment) -> (u8, &[u32]) {
    match seg {
        AsSegment::Set(v) => (segment::AS_SET, v),
        AsSegment::Sequence(v) => (segment::AS_SEQUENCE, v),
        AsSegment::ConfedSequence(v) => (segment::AS_CONFED_SEQUENCE, v),
        AsSegment::ConfedSet(v) => (segment::AS_CONFED_SET, v),
    }
}

/// The segments as written: empty ones left out, long ones split at 255 ASes.
fn wire_segments<'a>(
    path: &'a AsPath,
    skip_confed: bool,
) -> impl Iterator<Item = (u8, &'a [u32])> + 'a {
    path.segments
        .iter()
        .map(segment_parts)
        .filter(move |(t, _)| {
            !(skip_confed && (*t == segment::AS_CONFED_SEQUENCE || *t == segment::AS_CONFED_SET))
        })
        .flat_map(|(t, v)| v.chunks(255).map(move |c| (t, c)))
}

fn encode_as_path(
    out: &mut BytesMut,
    type_code: u8,
    path: &AsPath,
    four_octet: bool,
    skip_confed: bool,
) -> Result<(), EncodeError> {
    let size = if four_octet { 4 } else { 2 };
    let len: usize = wire_segments(path, skip_confed)
        .map(|(_, v)| 2 + v.len() * size)
        .sum();
    let flags = if type_code == code::AS_PATH {
        WELL_KNOWN
    } else {
        OPT_TRANS
    };
    put_attr_header(out, flags, type_code, len)?;
    for (t, v) in wire_segments(path, skip_confed) {
        out.put_u8(t);
        out.put_u8(v.len() as u8);
        for asn in v {
            if four_octet {
                out.put_u32(*asn);
            } else {
                out.put_u16(u16::try_from(*asn).unwrap_or(AS_TRANS));
            }
        }
    }
    Ok(())
}

fn put_u32_attr(out: &mut BytesMut, flags: u8, type_code: u8, v: u32) -> Result<(), EncodeError> {
    put_attr_header(out, flags, type_code, 4)?;
    out.put_u32(v);
    Ok(())
}

/// Writes every attribute of `attrs` in type code order (unknown ones last), converting AS
/// numbers for a 2-octet AS peer (RFC 6793 §4.2.2: AS_TRANS in AS_PATH and AGGREGATOR, the
/// real values in AS4_PATH and AS4_AGGREGATOR).
pub fn encode_attributes(
    attrs: &PathAttributes,
    ctx: &CodecContext,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    if let Some(origin) = attrs.origin {
        put_attr_header(out, WELL_KNOWN, code::ORIGIN, 1)?;
        out.put_u8(origin as u8);
    }
    if attrs.origin.is_some() || !attrs.as_path.segments.is_empty() {
        encode_as_path(out, code::AS_PATH, &attrs.as_path, ctx.four_octet_as, false)?;
    }
    if let Some(nh) = attrs.next_hop {
        put_u32_attr(out, WELL_KNOWN, code::NEXT_HOP, nh.to_bits())?;
    }
    if let Some(med) = attrs.med {
        put_u32_attr(out, OPT_NON_TRANS, code::MULTI_EXIT_DISC, med)?;
    }
    if let Some(lp) = attrs.local_pref {
        put_u32_attr(out, WELL_KNOWN, code::LOCAL_PREF, lp)?;
    }
    if attrs.atomic_aggregate {
        put_attr_header(out, WELL_KNOWN, code::ATOMIC_AGGREGATE, 0)?;
    }
    if let Some(agg) = attrs.aggregator {
        if ctx.four_octet_as {
            put_attr_header(out, OPT_TRANS, code::AGGREGATOR, 8)?;
            out.put_u32(agg.asn);
        } else {
            put_attr_header(out, OPT_TRANS, code::AGGREGATOR, 6)?;
            out.put_u16(u16::try_from(agg.asn).unwrap_or(AS_TRANS));
        }
        out.put_slice(&agg.address.octets());
    }
    if !attrs.communities.is_empty() {
        put_attr_header(
            out,
            OPT_TRANS,
            code::COMMUNITIES,
            attrs.communities.len() * 4,
        )?;
        for c in &attrs.communities {
            out.put_u32(*c);
        }
    }
    if let Some(id) = attrs.originator_id {
        put_u32_attr(out, OPT_NON_TRANS, code::ORIGINATOR_ID, id.to_bits())?;
    }
    if !attrs.cluster_list.is_empty() {
        put_attr_header(
            out,
            OPT_NON_TRANS,
            code::CLUSTER_LIST,
            attrs.cluster_list.len() * 4,
        )?;
        for id in &attrs.cluster_list {
            out.put_slice(&id.octets());
        }
    }
    if !ctx.four_octet_as {
        if attrs.as_path.segments.iter().any(|s| {
            let (t, v) = segment_parts(s);
            t != segment::AS_CONFED_SEQUENCE
                && t != segment::AS_CONFED_SET
                && v.iter().any(|a| *a > u16::MAX as u32)
        }) {
            encode_as_path(out, code::AS4_PATH, &attrs.as_path, true, true)?;
        }
        if let Some(agg) = attrs.aggregator.filter(|a| a.asn > u16::MAX as u32) {
            put_attr_header(out, OPT_TRANS, code::AS4_AGGREGATOR, 8)?;
            out.put_u32(agg.asn);
            out.put_slice(&agg.address.octets());
        }
    }
    if !attrs.large_communities.is_empty() {
        put_attr_header(
            out,
            OPT_TRANS,
            code::LARGE_COMMUNITY,
            attrs.large_communities.len() * 12,
        )?;
        for c in &attrs.large_communities {
            out.put_u32(c.global_admin);
            out.put_u32(c.local_data1);
            out.put_u32(c.local_data2);
        }
    }
    for raw in &attrs.unknown {
        // RFC 4271 §5: an unrecognized optional transitive attribute is passed on with the
        // Partial bit set; a non-transitive one is not passed on.
        if raw.flags & OPT_TRANS == OPT_TRANS {
            put_attr_header(
                out,
                raw.flags | flag::PARTIAL,
                raw.type_code,
                raw.value.len(),
            )?;
            out.put_slice(&raw.value);
        }
    }
    Ok(())
}
