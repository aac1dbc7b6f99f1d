//! The fixed message header (RFC 4271 §4.1) and framing: finding where one message ends in a
//! stream of bytes, and the header checks of §6.1.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                                                               |
//! +                                                               +
//! |                                                               |
//! +                                                               +
//! |                           Marker                              |
//! +                                                               +
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |          Length               |      Type     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use super::error::{EncodeError, MessageError};
use super::message::{CodecContext, HEADER_LEN, msg_type};
use bytes::{BufMut, BytesMut};
use nom::Parser;
use nom::bytes::complete::take;
use nom::number::complete::{be_u8, be_u16};

/// The marker: 16 octets of ones.
pub const MARKER: [u8; 16] = [0xff; 16];

/// A decoded, checked header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Length of the whole message, header included.
    pub length: u16,
    pub msg_type: u8,
}

/// Shortest legal message of each type (RFC 4271 §4; RFC 2918 for ROUTE-REFRESH).
fn min_len(msg_type: u8) -> Option<usize> {
    match msg_type {
        msg_type::OPEN => Some(29),
        msg_type::UPDATE => Some(23),
        msg_type::NOTIFICATION => Some(21),
        msg_type::KEEPALIVE => Some(HEADER_LEN),
        // A ROUTE-REFRESH of the wrong length is RFC 7313's own error, raised by its decoder.
        msg_type::ROUTE_REFRESH => Some(HEADER_LEN),
        _ => None,
    }
}

/// Reads and checks the header at the start of `buf` (which holds at least [`HEADER_LEN`]
/// octets): marker, length within the session's limit and the type's bounds, known type.
pub fn decode_header(buf: &[u8], ctx: &CodecContext) -> Result<Header, MessageError> {
    let parsed: nom::IResult<&[u8], (&[u8], u16, u8)> = (take(16usize), be_u16, be_u8).parse(buf);
    let (_, (marker, length, msg_type)) =
        parsed.map_err(|_| MessageError::BadMessageLength(buf.len() as u16))?;
    if marker != MARKER {
        return Err(MessageError::ConnectionNotSynchronized);
    }
    let len = length as usize;
    if len < HEADER_LEN || len > ctx.max_message_len() {
        return Err(MessageError::BadMessageLength(length));
    }
    let min = min_len(msg_type).ok_or(MessageError::BadMessageType(msg_type))?;
    if len < min || (msg_type == msg_type::KEEPALIVE && len != HEADER_LEN) {
        return Err(MessageError::BadMessageLength(length));
    }
    Ok(Header { length, msg_type })
}

/// Checks the buffer holds a whole message: Ok(None) when more bytes are needed, Ok(Some(len))
/// when buf[..len] is one whole message; Err for bad marker / bad length / bad type.
pub fn frame_len(buf: &[u8], ctx: &CodecContext) -> Result<Option<usize>, MessageError> {
    if buf.len() < HEADER_LEN {
        // Fail early on a bad marker rather than waiting for bytes that cannot help.
        let seen = buf.len().min(MARKER.len());
        if buf[..seen].iter().any(|b| *b != 0xff) {
            return Err(MessageError::ConnectionNotSynchronized);
        }
        return Ok(None);
    }
    let header = decode_header(buf, ctx)?;
    let len = header.length as usize;
    Ok(if buf.len() >= len { Some(len) } else { None })
}

/// Writes a header with a zero length; [`finish_message`] fills the length in. Returns the
/// offset of the message in `out`.
pub fn begin_message(out: &mut BytesMut, msg_type: u8) -> usize {
    let start = out.len();
    out.put_slice(&MARKER);
    out.put_u16(0);
    out.put_u8(msg_type);
    start
}

/// Fills in the length of the message that starts at `start`, checking the session's limit.
pub fn finish_message(
    out: &mut BytesMut,
    start: usize,
    ctx: &CodecContext,
) -> Result<(), EncodeError> {
    let len = out.len() - start;
    let max = ctx.max_message_len();
    if len > max {
        out.truncate(start);
        return Err(EncodeError::MessageTooLong { len, max });
    }
    out[start + 16..start + 18].copy_from_slice(&(len as u16).to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(len: u16, t: u8) -> Vec<u8> {
        let mut v = MARKER.to_vec();
        v.extend_from_slice(&len.to_be_bytes());
        v.push(t);
        v
    }

    #[test]
    fn needs_more_bytes_for_partial_header_and_body() {
        let ctx = CodecContext::default();
        assert_eq!(frame_len(&MARKER[..10], &ctx), Ok(None));
        let mut buf = header(23, msg_type::ROUTE_REFRESH);
        assert_eq!(frame_len(&buf, &ctx), Ok(None));
        buf.extend_from_slice(&[0, 1, 0, 1, 0xff]);
        assert_eq!(frame_len(&buf, &ctx), Ok(Some(23)));
    }

    #[test]
    fn rejects_bad_marker_with_connection_not_synchronized() {
        let mut buf = header(19, msg_type::KEEPALIVE);
        buf[3] = 0;
        let err = frame_len(&buf, &CodecContext::default()).unwrap_err();
        assert_eq!(err, MessageError::ConnectionNotSynchronized);
        let n = err.notification();
        assert_eq!((n.code, n.subcode), (1, 1));
        // Also before the header is complete.
        assert!(frame_len(&buf[..5], &CodecContext::default()).is_err());
    }

    #[test]
    fn rejects_length_below_header_or_above_session_limit() {
        let ctx = CodecContext::default();
        for len in [0u16, 18, 4097] {
            let err = frame_len(&header(len, msg_type::UPDATE), &ctx).unwrap_err();
            let n = err.notification();
            assert_eq!((n.code, n.subcode), (1, 2));
            assert_eq!(&n.data[..], &len.to_be_bytes());
        }
        let ext = CodecContext {
            extended_message: true,
            ..CodecContext::default()
        };
        assert_eq!(frame_len(&header(4097, msg_type::UPDATE), &ext), Ok(None));
    }

    #[test]
    fn rejects_length_too_short_for_type() {
        let ctx = CodecContext::default();
        for (len, t) in [
            (28u16, msg_type::OPEN),
            (22, msg_type::UPDATE),
            (20, msg_type::NOTIFICATION),
            (20, msg_type::KEEPALIVE),
        ] {
            let err = frame_len(&header(len, t), &ctx).unwrap_err();
            assert_eq!(err, MessageError::BadMessageLength(len), "type {t}");
        }
    }

    #[test]
    fn rejects_unknown_type_with_type_as_data() {
        let err = frame_len(&header(19, 9), &CodecContext::default()).unwrap_err();
        let n = err.notification();
        assert_eq!((n.code, n.subcode, &n.data[..]), (1, 3, &[9u8][..]));
    }

    #[test]
    fn finish_message_refuses_oversized_message() {
        let mut out = BytesMut::new();
        let start = begin_message(&mut out, msg_type::UPDATE);
        out.put_bytes(0, 5000);
        let err = finish_message(&mut out, start, &CodecContext::default()).unwrap_err();
        assert_eq!(
            err,
            EncodeError::MessageTooLong {
                len: 5019,
                max: 4096
            }
        );
        assert!(out.is_empty());
    }
}
