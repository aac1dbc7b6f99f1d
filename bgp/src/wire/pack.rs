//! Packing many prefixes into as few UPDATEs as the session's message size allows: the hot path
//! of route reflection. The path attributes are encoded once; each message then gets a copy of
//! those bytes and as many prefixes as fit. IPv4 uses NEXT_HOP and the NLRI / Withdrawn Routes
//! fields; IPv6 uses MP_REACH_NLRI / MP_UNREACH_NLRI (first in the attribute list, as
//! [`super::update::encode_update`] writes them, so both give the same bytes).

use super::attr_codec::{encode_attributes, put_attr_header};
use super::attrs::{PathAttributes, code, flag};
use super::error::EncodeError;
use super::family::{Family, Prefix};
use super::header::{begin_message, finish_message};
use super::message::{CodecContext, HEADER_LEN, MpNextHop, msg_type};
use super::mp::{next_hop_len, put_mp_reach_head};
use super::nlri;
use bytes::{BufMut, Bytes, BytesMut};

/// Withdrawn Routes Length and Total Path Attribute Length.
const UPDATE_FIXED: usize = 4;
/// Longest prefix on the wire (an IPv6 /128).
const LONGEST_PREFIX: usize = 17;

fn check(p: &Prefix, family: Family) -> Result<(), EncodeError> {
    if Family::of(p) == family {
        Ok(())
    } else {
        Err(EncodeError::FamilyMismatch {
            what: "prefix",
            family,
        })
    }
}

/// How many of `prefixes` fit in `room` octets, and the octets they take.
fn fit(prefixes: &[Prefix], family: Family, room: usize) -> Result<(usize, usize), EncodeError> {
    let mut used = 0;
    for (i, p) in prefixes.iter().enumerate() {
        check(p, family)?;
        let len = nlri::encoded_len(p);
        if used + len > room {
            return Ok((i, used));
        }
        used += len;
    }
    Ok((prefixes.len(), used))
}

/// UPDATEs announcing `prefixes` with `attrs` and `next_hop`, split across as many messages as
/// needed. IPv4: NEXT_HOP attribute + NLRI field (`next_hop` must be [`MpNextHop::V4`]);
/// IPv6: MP_REACH_NLRI. `attrs.next_hop` is ignored: `next_hop` is the one sent.
pub fn pack_announcements(
    attrs: &PathAttributes,
    next_hop: &MpNextHop,
    family: Family,
    prefixes: &[Prefix],
    ctx: &CodecContext,
) -> Result<Vec<Bytes>, EncodeError> {
    let max = ctx.max_message_len();
    let mut attr_buf = BytesMut::with_capacity(256);
    let mut own = attrs.clone();
    own.next_hop = match (family, next_hop) {
        (Family::Ipv4Unicast, MpNextHop::V4(a)) => Some(*a),
        (Family::Ipv4Unicast, _) => {
            return Err(EncodeError::FamilyMismatch {
                what: "next hop",
                family,
            });
        }
        (Family::Ipv6Unicast, _) => None,
    };
    encode_attributes(&own, ctx, &mut attr_buf)?;
    // MP_REACH_NLRI's header (always with a 2-octet length) and fixed part.
    let mp_fixed = match family {
        Family::Ipv4Unicast => 0,
        Family::Ipv6Unicast => 4 + 5 + next_hop_len(next_hop),
    };
    let base = HEADER_LEN + UPDATE_FIXED + attr_buf.len() + mp_fixed;
    if base + LONGEST_PREFIX > max {
        return Err(EncodeError::AttributesTooLarge {
            len: attr_buf.len() + mp_fixed,
        });
    }
    let room = max - base;
    let mut out = Vec::with_capacity(1 + prefixes.len() * 4 / room.max(1));
    let mut buf = BytesMut::new();
    let mut rest = prefixes;
    while !rest.is_empty() {
        let (n, used) = fit(rest, family, room)?;
        buf.reserve(base + used);
        let start = begin_message(&mut buf, msg_type::UPDATE);
        buf.put_u16(0);
        buf.put_u16((attr_buf.len() + mp_fixed + if mp_fixed > 0 { used } else { 0 }) as u16);
        if family == Family::Ipv6Unicast {
            buf.put_u8(flag::OPTIONAL | flag::EXTENDED_LENGTH);
            buf.put_u8(code::MP_REACH_NLRI);
            buf.put_u16((mp_fixed - 4 + used) as u16);
            put_mp_reach_head(family, next_hop, &mut buf);
            for p in &rest[..n] {
                nlri::encode(p, &mut buf);
            }
            buf.put_slice(&attr_buf);
        } else {
            buf.put_slice(&attr_buf);
            for p in &rest[..n] {
                nlri::encode(p, &mut buf);
            }
        }
        finish_message(&mut buf, start, ctx)?;
        out.push(buf.split().freeze());
        rest = &rest[n..];
    }
    Ok(out)
}

/// UPDATEs withdrawing `prefixes`, split across as many messages as needed: the Withdrawn
/// Routes field for IPv4, MP_UNREACH_NLRI for IPv6.
pub fn pack_withdrawals(
    family: Family,
    prefixes: &[Prefix],
    ctx: &CodecContext,
) -> Result<Vec<Bytes>, EncodeError> {
    let max = ctx.max_message_len();
    // MP_UNREACH_NLRI: header with a 2-octet length at most, AFI and SAFI.
    let mp_fixed = match family {
        Family::Ipv4Unicast => 0,
        Family::Ipv6Unicast => 4 + 3,
    };
    let room = max - HEADER_LEN - UPDATE_FIXED - mp_fixed;
    let mut out = Vec::new();
    let mut buf = BytesMut::new();
    let mut rest = prefixes;
    while !rest.is_empty() {
        let (n, used) = fit(rest, family, room)?;
        buf.reserve(max.min(HEADER_LEN + UPDATE_FIXED + mp_fixed + used));
        let start = begin_message(&mut buf, msg_type::UPDATE);
        match family {
            Family::Ipv4Unicast => {
                buf.put_u16(used as u16);
                for p in &rest[..n] {
                    nlri::encode(p, &mut buf);
                }
                buf.put_u16(0);
            }
            Family::Ipv6Unicast => {
                buf.put_u16(0);
                let alen_at = buf.len();
                buf.put_u16(0);
                put_attr_header(&mut buf, flag::OPTIONAL, code::MP_UNREACH_NLRI, 3 + used)?;
                let (afi, safi) = family.afi_safi();
                buf.put_u16(afi);
                buf.put_u8(safi);
                for p in &rest[..n] {
                    nlri::encode(p, &mut buf);
                }
                let alen = (buf.len() - alen_at - 2) as u16;
                buf[alen_at..alen_at + 2].copy_from_slice(&alen.to_be_bytes());
            }
        }
        finish_message(&mut buf, start, ctx)?;
        out.push(buf.split().freeze());
        rest = &rest[n..];
    }
    Ok(out)
}
