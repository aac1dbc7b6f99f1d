//! MP_REACH_NLRI and MP_UNREACH_NLRI (RFC 4760 §3, §4), with the IPv6 next hop of RFC 2545 §3:
//! a global address, optionally followed by a link-local one (length 16 or 32).
//!
//! MP_REACH_NLRI:
//!
//! ```text
//! +---------------------------------------------------------+
//! | Address Family Identifier (2 octets)                    |
//! +---------------------------------------------------------+
//! | Subsequent Address Family Identifier (1 octet)          |
//! +---------------------------------------------------------+
//! | Length of Next Hop Network Address (1 octet)            |
//! +---------------------------------------------------------+
//! | Network Address of Next Hop (variable)                  |
//! +---------------------------------------------------------+
//! | Reserved (1 octet)                                      |
//! +---------------------------------------------------------+
//! | Network Layer Reachability Information (variable)       |
//! +---------------------------------------------------------+
//! ```
//!
//! MP_UNREACH_NLRI:
//!
//! ```text
//! +---------------------------------------------------------+
//! | Address Family Identifier (2 octets)                    |
//! +---------------------------------------------------------+
//! | Subsequent Address Family Identifier (1 octet)          |
//! +---------------------------------------------------------+
//! | Withdrawn Routes (variable)                             |
//! +---------------------------------------------------------+
//! ```
//!
//! RFC 7606 §5.3 / §7.11: a malformed MP attribute means the NLRI cannot be trusted, so the
//! session is reset (Optional Attribute Error, the attribute as data).

use super::attr_codec::put_attr_header;
use super::attrs::{code, flag};
use super::error::{EncodeError, MessageError};
use super::family::Family;
use super::message::{MpNextHop, MpReach, MpUnreach, notif};
use super::nlri;
use bytes::{BufMut, Bytes, BytesMut};
use std::net::{Ipv4Addr, Ipv6Addr};

fn reset(raw: &[u8], reason: String) -> MessageError {
    MessageError::update(
        notif::OPTIONAL_ATTRIBUTE_ERROR,
        Bytes::copy_from_slice(raw),
        reason,
    )
}

/// Result of reading an MP attribute: the value, or the AFI/SAFI when margay does not route it.
pub enum MpDecoded<T> {
    Known(T),
    Unsupported { afi: u16, safi: u8 },
}

fn afi_safi(v: &[u8], raw: &[u8], what: &str) -> Result<(u16, u8), MessageError> {
    match v {
        [a0, a1, safi, ..] => Ok((u16::from_be_bytes([*a0, *a1]), *safi)),
        _ => Err(reset(raw, format!("{what}: shorter than 3 octets"))),
    }
}

/// Reads MP_REACH_NLRI's value; `raw` is the whole attribute, for the NOTIFICATION.
pub fn decode_mp_reach(v: &[u8], raw: &[u8]) -> Result<MpDecoded<MpReach>, MessageError> {
    let (afi, safi) = afi_safi(v, raw, "MP_REACH_NLRI")?;
    let Some(family) = Family::from_afi_safi(afi, safi) else {
        return Ok(MpDecoded::Unsupported { afi, safi });
    };
    let nh_len = *v
        .get(3)
        .ok_or_else(|| reset(raw, "MP_REACH_NLRI: no next hop length".into()))?
        as usize;
    let nh = v
        .get(4..4 + nh_len)
        .ok_or_else(|| reset(raw, "MP_REACH_NLRI: next hop overruns the attribute".into()))?;
    // Skip the Reserved octet.
    let nlri_field = v
        .get(4 + nh_len + 1..)
        .ok_or_else(|| reset(raw, "MP_REACH_NLRI: no reserved octet".into()))?;
    let next_hop = match (family, nh.len()) {
        (Family::Ipv4Unicast, 4) => MpNextHop::V4(Ipv4Addr::new(nh[0], nh[1], nh[2], nh[3])),
        (_, 16) | (_, 32) => {
            let mut g = [0u8; 16];
            g.copy_from_slice(&nh[..16]);
            let link_local = (nh.len() == 32).then(|| {
                let mut l = [0u8; 16];
                l.copy_from_slice(&nh[16..32]);
                Ipv6Addr::from(l)
            });
            MpNextHop::V6 {
                global: Ipv6Addr::from(g),
                link_local,
            }
        }
        (_, n) => {
            return Err(reset(
                raw,
                format!("MP_REACH_NLRI: next hop length {n} for {family}"),
            ));
        }
    };
    let mut prefixes = Vec::with_capacity(nlri_field.len() / 4);
    nlri::decode(family, nlri_field, &mut prefixes)
        .map_err(|e| reset(raw, format!("MP_REACH_NLRI: {e}")))?;
    Ok(MpDecoded::Known(MpReach {
        family,
        next_hop,
        nlri: prefixes,
    }))
}

/// Reads MP_UNREACH_NLRI's value; `raw` is the whole attribute, for the NOTIFICATION.
pub fn decode_mp_unreach(v: &[u8], raw: &[u8]) -> Result<MpDecoded<MpUnreach>, MessageError> {
    let (afi, safi) = afi_safi(v, raw, "MP_UNREACH_NLRI")?;
    let Some(family) = Family::from_afi_safi(afi, safi) else {
        return Ok(MpDecoded::Unsupported { afi, safi });
    };
    let mut withdrawn = Vec::with_capacity((v.len() - 3) / 4);
    nlri::decode(family, &v[3..], &mut withdrawn)
        .map_err(|e| reset(raw, format!("MP_UNREACH_NLRI: {e}")))?;
    Ok(MpDecoded::Known(MpUnreach { family, withdrawn }))
}

/// Octets of the next hop field for `nh`.
pub fn next_hop_len(nh: &MpNextHop) -> usize {
    match nh {
        MpNextHop::V4(_) => 4,
        MpNextHop::V6 {
            link_local: None, ..
        } => 16,
        MpNextHop::V6 {
            link_local: Some(_),
            ..
        } => 32,
    }
}

/// Writes the MP_REACH_NLRI value up to and including the Reserved octet.
pub fn put_mp_reach_head(family: Family, nh: &MpNextHop, out: &mut BytesMut) {
    let (afi, safi) = family.afi_safi();
    out.put_u16(afi);
    out.put_u8(safi);
    out.put_u8(next_hop_len(nh) as u8);
    match nh {
        MpNextHop::V4(a) => out.put_slice(&a.octets()),
        MpNextHop::V6 { global, link_local } => {
            out.put_slice(&global.octets());
            if let Some(l) = link_local {
                out.put_slice(&l.octets());
            }
        }
    }
    out.put_u8(0);
}

fn check_family(family: Family, prefixes: &[super::family::Prefix]) -> Result<(), EncodeError> {
    if prefixes.iter().any(|p| Family::of(p) != family) {
        return Err(EncodeError::FamilyMismatch {
            what: "prefix",
            family,
        });
    }
    Ok(())
}

/// Writes the whole MP_REACH_NLRI attribute. Like BIRD, always with the Extended Length bit.
pub fn encode_mp_reach(r: &MpReach, out: &mut BytesMut) -> Result<(), EncodeError> {
    check_family(r.family, &r.nlri)?;
    let len = 5 + next_hop_len(&r.next_hop) + r.nlri.iter().map(nlri::encoded_len).sum::<usize>();
    if len > u16::MAX as usize {
        return Err(EncodeError::AttributeTooLong {
            type_code: code::MP_REACH_NLRI,
            len,
        });
    }
    out.put_u8(flag::OPTIONAL | flag::EXTENDED_LENGTH);
    out.put_u8(code::MP_REACH_NLRI);
    out.put_u16(len as u16);
    put_mp_reach_head(r.family, &r.next_hop, out);
    for p in &r.nlri {
        nlri::encode(p, out);
    }
    Ok(())
}

/// Writes the whole MP_UNREACH_NLRI attribute.
pub fn encode_mp_unreach(u: &MpUnreach, out: &mut BytesMut) -> Result<(), EncodeError> {
    check_family(u.family, &u.withdrawn)?;
    let len = 3 + u.withdrawn.iter().map(nlri::encoded_len).sum::<usize>();
    put_attr_header(out, flag::OPTIONAL, code::MP_UNREACH_NLRI, len)?;
    let (afi, safi) = u.family.afi_safi();
    out.put_u16(afi);
    out.put_u8(safi);
    for p in &u.withdrawn {
        nlri::encode(p, out);
    }
    Ok(())
}
