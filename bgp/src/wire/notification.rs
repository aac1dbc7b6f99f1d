//! NOTIFICATION (RFC 4271 §4.5).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | Error code    | Error subcode |   Data (variable)             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! The header check guarantees the two fixed octets (length at least 21).

use super::error::MessageError;
use super::message::Notification;
use bytes::{BufMut, Bytes, BytesMut};

/// Reads a NOTIFICATION's body (after the header).
pub fn decode_notification(body: &[u8]) -> Result<Notification, MessageError> {
    match body {
        [code, subcode, data @ ..] => Ok(Notification::new(
            *code,
            *subcode,
            Bytes::copy_from_slice(data),
        )),
        _ => Err(MessageError::BadMessageLength((body.len() + 19) as u16)),
    }
}

/// Writes a NOTIFICATION's body.
pub fn encode_notification(n: &Notification, out: &mut BytesMut) {
    out.put_u8(n.code);
    out.put_u8(n.subcode);
    out.put_slice(&n.data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_notification_with_data() {
        let n = Notification::new(6, 2, Bytes::from_static(b"\x08shutdown"));
        let mut out = BytesMut::new();
        encode_notification(&n, &mut out);
        assert_eq!(decode_notification(&out).unwrap(), n);
    }

    #[test]
    fn rejects_notification_without_subcode() {
        let err = decode_notification(&[6]).unwrap_err();
        assert_eq!(err, MessageError::BadMessageLength(20));
    }
}
