//! OPEN (RFC 4271 §4.2) and its checks (§6.2); capabilities in [`super::capability`].
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+
//! |    Version    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     My Autonomous System      |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |           Hold Time           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                         BGP Identifier                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | Opt Parm Len  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |             Optional Parameters (variable)                    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! Each optional parameter is Parm. Type (1), Parm. Length (1), Parm. Value; margay knows
//! type 2, Capabilities (RFC 5492). The extended form of RFC 9072 (Opt Parm Len 255, then a
//! type of 255 and a 2-octet length; each parameter's length 2 octets) is read too.
//! Checking My Autonomous System against the configured peer AS is the FSM's job.

use super::capability::{decode_capability, encode_capability};
use super::error::{EncodeError, MessageError};
use super::message::{Open, notif};
use bytes::{BufMut, Bytes, BytesMut};
use nom::Parser;
use nom::number::complete::{be_u8, be_u16, be_u32};
use std::net::Ipv4Addr;

/// Optional parameter type: Capabilities (RFC 5492).
pub const PARAM_CAPABILITIES: u8 = 2;
/// RFC 9072: Opt Parm Len and Parm Type value that announce the extended encoding.
const PARAM_EXTENDED: u8 = 255;

fn malformed(reason: &str) -> MessageError {
    // No subcode fits a malformed parameter list; 0 is "unspecific" (RFC 4271 §4.5).
    MessageError::open(
        0,
        Bytes::new(),
        format!("malformed optional parameters: {reason}"),
    )
}

/// Reads an OPEN's body (after the header).
pub fn decode_open(body: &[u8]) -> Result<Open, MessageError> {
    let parsed: nom::IResult<&[u8], (u8, u16, u16, u32, u8)> =
        (be_u8, be_u16, be_u16, be_u32, be_u8).parse(body);
    let (rest, (version, my_as, hold_time, id, opt_len)) =
        parsed.map_err(|_| malformed("truncated"))?;
    if version != 4 {
        return Err(MessageError::open(
            notif::UNSUPPORTED_VERSION_NUMBER,
            Bytes::from_static(&[0, 4]),
            format!("unsupported version {version}"),
        ));
    }
    if hold_time == 1 || hold_time == 2 {
        return Err(MessageError::open(
            notif::UNACCEPTABLE_HOLD_TIME,
            Bytes::new(),
            format!("unacceptable hold time {hold_time}"),
        ));
    }
    let bgp_identifier = Ipv4Addr::from(id);
    if bgp_identifier.is_unspecified() {
        return Err(MessageError::open(
            notif::BAD_BGP_IDENTIFIER,
            Bytes::new(),
            "BGP identifier 0.0.0.0",
        ));
    }
    // RFC 9072 extended form: Opt Parm Len 255 followed by a Parm Type of 255.
    let extended = opt_len == PARAM_EXTENDED && rest.first() == Some(&PARAM_EXTENDED);
    let (params, len_octets) = if extended {
        if rest.len() < 3 {
            return Err(malformed("truncated extended length"));
        }
        let len = u16::from_be_bytes([rest[1], rest[2]]) as usize;
        (&rest[3..], len)
    } else {
        (rest, opt_len as usize)
    };
    if params.len() != len_octets {
        return Err(malformed("length does not match the message"));
    }
    let mut capabilities = Vec::new();
    let mut p = params;
    while !p.is_empty() {
        let (ptype, plen, value_start) = if extended {
            if p.len() < 3 {
                return Err(malformed("truncated parameter"));
            }
            (p[0], u16::from_be_bytes([p[1], p[2]]) as usize, 3)
        } else {
            if p.len() < 2 {
                return Err(malformed("truncated parameter"));
            }
            (p[0], p[1] as usize, 2)
        };
        let value = p
            .get(value_start..value_start + plen)
            .ok_or_else(|| malformed("parameter overruns the list"))?;
        if ptype != PARAM_CAPABILITIES {
            return Err(MessageError::open(
                notif::UNSUPPORTED_OPTIONAL_PARAMETER,
                Bytes::new(),
                format!("unsupported optional parameter {ptype}"),
            ));
        }
        let mut c = value;
        while !c.is_empty() {
            if c.len() < 2 || c.len() < 2 + c[1] as usize {
                return Err(malformed("capability overruns its parameter"));
            }
            let len = c[1] as usize;
            capabilities.push(decode_capability(c[0], &c[2..2 + len]));
            c = &c[2 + len..];
        }
        p = &p[value_start + plen..];
    }
    Ok(Open {
        version,
        my_as,
        hold_time,
        bgp_identifier,
        capabilities,
    })
}

/// Writes an OPEN's body: every capability in one Capabilities parameter.
pub fn encode_open(open: &Open, out: &mut BytesMut) -> Result<(), EncodeError> {
    out.put_u8(open.version);
    out.put_u16(open.my_as);
    out.put_u16(open.hold_time);
    out.put_slice(&open.bgp_identifier.octets());
    if open.capabilities.is_empty() {
        out.put_u8(0);
        return Ok(());
    }
    let mut caps = BytesMut::with_capacity(64);
    for cap in &open.capabilities {
        encode_capability(cap, &mut caps)?;
    }
    if caps.len() > 253 {
        return Err(EncodeError::OptionalParametersTooLong(caps.len() + 2));
    }
    out.put_u8(caps.len() as u8 + 2);
    out.put_u8(PARAM_CAPABILITIES);
    out.put_u8(caps.len() as u8);
    out.put_slice(&caps);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::message::Capability;

    fn body(version: u8, hold: u16, id: [u8; 4], params: &[u8]) -> Vec<u8> {
        let mut v = vec![version, 0xfd, 0xe8];
        v.extend_from_slice(&hold.to_be_bytes());
        v.extend_from_slice(&id);
        v.push(params.len() as u8);
        v.extend_from_slice(params);
        v
    }

    fn code(e: MessageError) -> (u8, u8, Vec<u8>) {
        let n = e.notification();
        (n.code, n.subcode, n.data.to_vec())
    }

    #[test]
    fn rejects_version_3_with_supported_version_as_data() {
        let err = decode_open(&body(3, 90, [1, 2, 3, 4], &[])).unwrap_err();
        assert_eq!(code(err), (2, 1, vec![0, 4]));
    }

    #[test]
    fn rejects_hold_time_one_and_two() {
        for hold in [1, 2] {
            let err = decode_open(&body(4, hold, [1, 2, 3, 4], &[])).unwrap_err();
            assert_eq!(code(err), (2, 6, vec![]));
        }
        assert!(decode_open(&body(4, 0, [1, 2, 3, 4], &[])).is_ok());
        assert!(decode_open(&body(4, 3, [1, 2, 3, 4], &[])).is_ok());
    }

    #[test]
    fn rejects_zero_bgp_identifier() {
        let err = decode_open(&body(4, 90, [0, 0, 0, 0], &[])).unwrap_err();
        assert_eq!(code(err), (2, 3, vec![]));
    }

    #[test]
    fn rejects_unsupported_optional_parameter() {
        let err = decode_open(&body(4, 90, [1, 2, 3, 4], &[1, 1, 0])).unwrap_err();
        assert_eq!(code(err), (2, 4, vec![]));
    }

    #[test]
    fn rejects_capability_overrunning_its_parameter() {
        let err = decode_open(&body(4, 90, [1, 2, 3, 4], &[2, 3, 65, 4, 0])).unwrap_err();
        assert_eq!(code(err).0, 2);
    }

    #[test]
    fn rejects_parameter_length_beyond_message() {
        let mut b = body(4, 90, [1, 2, 3, 4], &[2, 2, 2, 0]);
        b[9] = 10;
        assert!(decode_open(&b).is_err());
    }

    #[test]
    fn reads_capabilities_from_several_parameters() {
        let open = decode_open(&body(
            4,
            90,
            [1, 2, 3, 4],
            &[2, 6, 1, 4, 0, 2, 0, 1, 2, 2, 2, 0],
        ))
        .unwrap();
        assert_eq!(
            open.capabilities,
            vec![
                Capability::Multiprotocol { afi: 2, safi: 1 },
                Capability::RouteRefresh
            ]
        );
    }

    #[test]
    fn reads_rfc9072_extended_parameters() {
        // Opt Parm Len 255, type 255, length 5; one parameter: type 2, length 2, RR capability.
        let mut b = body(4, 90, [1, 2, 3, 4], &[]);
        b.pop();
        b.extend_from_slice(&[255, 255, 0, 5, 2, 0, 2, 2, 0]);
        let open = decode_open(&b).unwrap();
        assert_eq!(open.capabilities, vec![Capability::RouteRefresh]);
    }
}
