//! ROUTE-REFRESH (RFC 2918 §3) with the message subtype of enhanced route refresh (RFC 7313 §3).
//!
//! ```text
//!  0       7      15      23      31
//! +-------+-------+-------+-------+
//! |      AFI      | Subt. | SAFI  |
//! +-------+-------+-------+-------+
//! ```
//!
//! RFC 7313 §5: any length other than 4 octets after the header is a ROUTE-REFRESH Message
//! Error / Invalid Message Length, with the whole message as data.

use super::error::MessageError;
use super::message::RouteRefresh;
use bytes::{BufMut, Bytes, BytesMut};

/// Reads a ROUTE-REFRESH; `msg` is the whole message (for the error's data), `body` the part
/// after the header.
pub fn decode_route_refresh(msg: &[u8], body: &[u8]) -> Result<RouteRefresh, MessageError> {
    match body {
        [a0, a1, subtype, safi] => Ok(RouteRefresh {
            afi: u16::from_be_bytes([*a0, *a1]),
            subtype: *subtype,
            safi: *safi,
        }),
        _ => Err(MessageError::RouteRefreshLength(Bytes::copy_from_slice(
            msg,
        ))),
    }
}

/// Writes a ROUTE-REFRESH's body.
pub fn encode_route_refresh(rr: &RouteRefresh, out: &mut BytesMut) {
    out.put_u16(rr.afi);
    out.put_u8(rr.subtype);
    out.put_u8(rr.safi);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_route_refresh_subtypes() {
        for subtype in 0..=2 {
            let rr = RouteRefresh {
                afi: 2,
                subtype,
                safi: 1,
            };
            let mut out = BytesMut::new();
            encode_route_refresh(&rr, &mut out);
            assert_eq!(decode_route_refresh(&out, &out).unwrap(), rr);
        }
    }

    #[test]
    fn rejects_wrong_length_with_invalid_message_length() {
        let msg = [0xffu8; 24];
        let err = decode_route_refresh(&msg, &msg[19..]).unwrap_err();
        let n = err.notification();
        assert_eq!((n.code, n.subcode), (7, 1));
        assert_eq!(&n.data[..], &msg[..]);
    }
}
