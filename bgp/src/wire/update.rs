//! UPDATE (RFC 4271 §4.3): the withdrawn routes, the path attribute list and the NLRI, with
//! RFC 7606's error handling for the attribute list.
//!
//! ```text
//! +-----------------------------------------------------+
//! |   Withdrawn Routes Length (2 octets)                |
//! +-----------------------------------------------------+
//! |   Withdrawn Routes (variable)                       |
//! +-----------------------------------------------------+
//! |   Total Path Attribute Length (2 octets)            |
//! +-----------------------------------------------------+
//! |   Path Attributes (variable)                        |
//! +-----------------------------------------------------+
//! |   Network Layer Reachability Information (variable) |
//! +-----------------------------------------------------+
//! ```
//!
//! Errors, most severe first (RFC 7606 §3 f): a session reset returns `Err`; treat-as-withdraw
//! sets [`Update::treat_as_withdraw`] (first reason kept) with every NLRI still parsed; attribute
//! discard drops the attribute and notes it in [`Update::discarded`].

use super::as4::merge_as4;
use super::attr_codec::{
    As4Attrs, AttrHeader, Fault, decode_attribute, encode_attributes, expected_flags,
    flags_conflict, name,
};
use super::attrs::{PathAttributes, code, flag};
use super::error::{EncodeError, MessageError};
use super::message::{CodecContext, Update, notif};
use super::mp::{
    MpDecoded, decode_mp_reach, decode_mp_unreach, encode_mp_reach, encode_mp_unreach,
};
use super::nlri;
use bytes::{BufMut, Bytes, BytesMut};

fn malformed_list(reason: &str) -> MessageError {
    MessageError::update(notif::MALFORMED_ATTRIBUTE_LIST, Bytes::new(), reason)
}

fn invalid_network(reason: String) -> MessageError {
    MessageError::update(notif::INVALID_NETWORK_FIELD, Bytes::new(), reason)
}

/// Splits the next attribute off `list`. `Err` when the list ends in the middle of one
/// (RFC 7606 §4: treat-as-withdraw, the NLRI located by the Total Path Attribute Length).
fn next_attribute(list: &[u8]) -> Result<(AttrHeader<'_>, &[u8]), ()> {
    let [flags, type_code, rest @ ..] = list else {
        return Err(());
    };
    let (len, hdr) = if flags & flag::EXTENDED_LENGTH != 0 {
        match rest {
            [a, b, ..] => (u16::from_be_bytes([*a, *b]) as usize, 4),
            _ => return Err(()),
        }
    } else {
        match rest {
            [a, ..] => (*a as usize, 3),
            _ => return Err(()),
        }
    };
    if list.len() < hdr + len {
        return Err(());
    }
    Ok((
        AttrHeader {
            flags: *flags,
            type_code: *type_code,
            value: &list[hdr..hdr + len],
            raw: &list[..hdr + len],
        },
        &list[hdr + len..],
    ))
}

/// Reads an UPDATE's body (after the header).
pub fn decode_update(body: &[u8], ctx: &CodecContext) -> Result<Update, MessageError> {
    let mut u = Update::default();
    if body.len() < 4 {
        return Err(malformed_list("UPDATE shorter than its length fields"));
    }
    let wlen = u16::from_be_bytes([body[0], body[1]]) as usize;
    let withdrawn = body
        .get(2..2 + wlen)
        .ok_or_else(|| malformed_list("withdrawn routes length overruns the message"))?;
    let after = &body[2 + wlen..];
    let alen = match after {
        [a, b, ..] => u16::from_be_bytes([*a, *b]) as usize,
        _ => return Err(malformed_list("no total path attribute length")),
    };
    let list = after
        .get(2..2 + alen)
        .ok_or_else(|| malformed_list("total path attribute length overruns the message"))?;
    let nlri_field = &after[2 + alen..];

    u.withdrawn.reserve(wlen / 4);
    nlri::decode_v4(withdrawn, &mut u.withdrawn)
        .map_err(|e| invalid_network(format!("withdrawn routes: {e}")))?;

    let mut as4 = As4Attrs::default();
    let mut seen = [0u64; 4];
    let mut has_as_path = false;
    let mut rest = list;
    while !rest.is_empty() {
        let Ok((a, next)) = next_attribute(rest) else {
            withdraw(&mut u, "attribute overruns the path attribute list".into());
            break;
        };
        rest = next;
        let bit = 1u64 << (a.type_code % 64);
        let slot = &mut seen[(a.type_code / 64) as usize];
        let dup = *slot & bit != 0;
        *slot |= bit;
        if a.type_code == code::MP_REACH_NLRI || a.type_code == code::MP_UNREACH_NLRI {
            if dup {
                return Err(malformed_list(&format!(
                    "{} more than once",
                    name(a.type_code)
                )));
            }
            decode_mp(a, &mut u)?;
            continue;
        }
        if dup {
            u.discarded.push(format!(
                "{}: duplicate of type {}",
                name(a.type_code),
                a.type_code
            ));
            continue;
        }
        match decode_attribute(a, ctx, &mut u.attributes, &mut as4) {
            Ok(()) => has_as_path |= a.type_code == code::AS_PATH,
            Err(Fault::Discard(reason)) => u.discarded.push(reason),
            Err(Fault::Withdraw(reason)) => withdraw(&mut u, reason),
            Err(Fault::Reset(e)) => return Err(e),
        }
    }

    u.nlri.reserve(nlri_field.len() / 4);
    nlri::decode_v4(nlri_field, &mut u.nlri).map_err(|e| invalid_network(format!("NLRI: {e}")))?;

    if !ctx.four_octet_as {
        merge_as4(&mut u.attributes, as4, &mut u.discarded);
    }
    check_mandatory(&mut u, ctx, has_as_path);
    Ok(u)
}

/// Records a treat-as-withdraw reason; the first one wins (RFC 7606 §3 f).
fn withdraw(u: &mut Update, reason: String) {
    if u.treat_as_withdraw.is_none() {
        u.treat_as_withdraw = Some(reason);
    }
}

fn decode_mp(a: AttrHeader<'_>, u: &mut Update) -> Result<(), MessageError> {
    let expected = expected_flags(a.type_code).unwrap_or(flag::OPTIONAL);
    if flags_conflict(a.flags, expected) {
        return Err(MessageError::update(
            notif::ATTRIBUTE_FLAGS_ERROR,
            Bytes::copy_from_slice(a.raw),
            format!("{}: flags conflict with the type", name(a.type_code)),
        ));
    }
    if a.type_code == code::MP_REACH_NLRI {
        match decode_mp_reach(a.value, a.raw)? {
            MpDecoded::Known(r) => u.mp_reach = Some(r),
            MpDecoded::Unsupported { afi, safi } => u
                .discarded
                .push(format!("MP_REACH_NLRI for AFI {afi} SAFI {safi}")),
        }
    } else {
        match decode_mp_unreach(a.value, a.raw)? {
            MpDecoded::Known(r) => u.mp_unreach = Some(r),
            MpDecoded::Unsupported { afi, safi } => u
                .discarded
                .push(format!("MP_UNREACH_NLRI for AFI {afi} SAFI {safi}")),
        }
    }
    Ok(())
}

/// RFC 7606 §3 d: a missing well-known mandatory attribute withdraws what is announced.
fn check_mandatory(u: &mut Update, ctx: &CodecContext, has_as_path: bool) {
    let announces = !u.nlri.is_empty() || u.mp_reach.is_some();
    if !announces {
        return;
    }
    let a = &u.attributes;
    let missing = if a.origin.is_none() {
        Some("ORIGIN")
    } else if !has_as_path {
        Some("AS_PATH")
    } else if !u.nlri.is_empty() && a.next_hop.is_none() {
        Some("NEXT_HOP")
    } else if ctx.ibgp && a.local_pref.is_none() {
        Some("LOCAL_PREF")
    } else {
        None
    };
    if let Some(m) = missing {
        withdraw(u, format!("missing well-known attribute {m}"));
    }
}

/// Writes an UPDATE's body. MP_REACH_NLRI, then MP_UNREACH_NLRI, lead the attribute list (RFC 7606
/// §5.1 asks for them first; BIRD does the same, so its messages re-encode byte for byte).
pub fn encode_update(
    u: &Update,
    ctx: &CodecContext,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let wlen_at = out.len();
    out.put_u16(0);
    for p in &u.withdrawn {
        nlri::encode_v4(p, out);
    }
    let wlen = out.len() - wlen_at - 2;
    out[wlen_at..wlen_at + 2].copy_from_slice(&(wlen as u16).to_be_bytes());

    let alen_at = out.len();
    out.put_u16(0);
    if let Some(r) = &u.mp_reach {
        encode_mp_reach(r, out)?;
    }
    if let Some(w) = &u.mp_unreach {
        encode_mp_unreach(w, out)?;
    }
    if u.attributes != PathAttributes::default() {
        encode_attributes(&u.attributes, ctx, out)?;
    }
    let alen = out.len() - alen_at - 2;
    if alen > u16::MAX as usize {
        return Err(EncodeError::MessageTooLong {
            len: alen,
            max: u16::MAX as usize,
        });
    }
    out[alen_at..alen_at + 2].copy_from_slice(&(alen as u16).to_be_bytes());
    for p in &u.nlri {
        nlri::encode_v4(p, out);
    }
    Ok(())
}
