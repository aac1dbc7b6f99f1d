//! The BGP-4 wire codec: message types, and their decoding (nom) and encoding (bytes).
//!
//! Everything here is pure: bytes in, values out, and back. The model types live in
//! [`message`], [`attrs`] and [`family`]; the codec for each message type lives in its own module:
//! [`header`] (framing), [`open`] and [`capability`], [`update`] with [`attr_codec`], [`as4`],
//! [`mp`] and [`nlri`], [`notification`], [`route_refresh`]; [`pack`] builds UPDATEs for many
//! prefixes at once. [`decode`] and [`Message::encode`] are the entry points.

pub mod as4;
pub mod attr_codec;
pub mod attrs;
pub mod capability;
pub mod error;
pub mod family;
pub mod header;
pub mod message;
pub mod mp;
pub mod nlri;
pub mod notification;
pub mod open;
pub mod pack;
pub mod route_refresh;
pub mod update;

pub use attrs::*;
pub use error::{EncodeError, MessageError};
pub use family::*;
pub use header::frame_len;
pub use message::*;
pub use pack::{pack_announcements, pack_withdrawals};

use bytes::{Bytes, BytesMut};

/// Decodes one whole message (buf is exactly the message, header included).
pub fn decode(buf: &[u8], ctx: &CodecContext) -> Result<Message, MessageError> {
    if buf.len() < HEADER_LEN {
        return Err(MessageError::BadMessageLength(buf.len() as u16));
    }
    let h = header::decode_header(buf, ctx)?;
    if h.length as usize != buf.len() {
        return Err(MessageError::BadMessageLength(h.length));
    }
    let body = &buf[HEADER_LEN..];
    Ok(match h.msg_type {
        msg_type::OPEN => Message::Open(open::decode_open(body)?),
        msg_type::UPDATE => Message::Update(update::decode_update(body, ctx)?),
        msg_type::NOTIFICATION => Message::Notification(notification::decode_notification(body)?),
        msg_type::KEEPALIVE => Message::Keepalive,
        msg_type::ROUTE_REFRESH => {
            Message::RouteRefresh(route_refresh::decode_route_refresh(buf, body)?)
        }
        t => return Err(MessageError::BadMessageType(t)),
    })
}

impl Message {
    /// The message type code.
    pub fn msg_type(&self) -> u8 {
        match self {
            Message::Open(_) => msg_type::OPEN,
            Message::Update(_) => msg_type::UPDATE,
            Message::Notification(_) => msg_type::NOTIFICATION,
            Message::Keepalive => msg_type::KEEPALIVE,
            Message::RouteRefresh(_) => msg_type::ROUTE_REFRESH,
        }
    }

    /// Appends the message, header included, to `out`; on error `out` is left as it was.
    pub fn encode(&self, ctx: &CodecContext, out: &mut BytesMut) -> Result<(), EncodeError> {
        let start = header::begin_message(out, self.msg_type());
        let body = match self {
            Message::Open(o) => open::encode_open(o, out),
            Message::Update(u) => update::encode_update(u, ctx, out),
            Message::Notification(n) => {
                notification::encode_notification(n, out);
                Ok(())
            }
            Message::Keepalive => Ok(()),
            Message::RouteRefresh(r) => {
                route_refresh::encode_route_refresh(r, out);
                Ok(())
            }
        };
        if let Err(e) = body {
            out.truncate(start);
            return Err(e);
        }
        header::finish_message(out, start, ctx)
    }

    /// The message as one buffer.
    pub fn to_bytes(&self, ctx: &CodecContext) -> Result<Bytes, EncodeError> {
        let mut out = BytesMut::with_capacity(64);
        self.encode(ctx, &mut out)?;
        Ok(out.freeze())
    }
}

/// The fuzz target's body (`bgp/fuzz`, target `decode_message`): frames and decodes arbitrary
/// bytes under a 2-octet eBGP and a 4-octet iBGP context, and for every UPDATE that decodes,
/// encodes it again and checks the second decode keeps its routes (and, for a 4-octet session
/// without unknown attributes, its attributes). Panics on any broken invariant.
#[doc(hidden)]
pub fn fuzz_one(data: &[u8]) {
    let contexts = [
        CodecContext::default(),
        CodecContext {
            four_octet_as: true,
            extended_message: true,
            ibgp: true,
        },
    ];
    for ctx in &contexts {
        let Ok(Some(len)) = frame_len(data, ctx) else {
            continue;
        };
        let Ok(msg) = decode(&data[..len], ctx) else {
            continue;
        };
        let Message::Update(u) = &msg else {
            continue;
        };
        let bytes = match msg.to_bytes(ctx) {
            Ok(b) => b,
            Err(EncodeError::MessageTooLong { .. }) => continue,
            Err(e) => panic!("decoded UPDATE does not encode: {e}"),
        };
        let again = match decode(&bytes, ctx) {
            Ok(Message::Update(u2)) => u2,
            other => panic!("re-encoded UPDATE does not decode: {other:?}"),
        };
        assert_eq!(again.withdrawn, u.withdrawn);
        assert_eq!(again.nlri, u.nlri);
        assert_eq!(again.mp_reach, u.mp_reach);
        assert_eq!(again.mp_unreach, u.mp_unreach);
        if ctx.four_octet_as && u.attributes.unknown.is_empty() {
            assert_eq!(again.attributes, u.attributes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bird_fixtures() -> Vec<Vec<u8>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bird");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).expect("fixtures") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "hex") {
                let text = std::fs::read_to_string(&path).expect("fixture");
                out.push(hex::decode(text.trim()).expect("hex"));
            }
        }
        out
    }

    #[test]
    fn fuzz_target_accepts_every_bird_fixture() {
        let fixtures = bird_fixtures();
        assert!(fixtures.len() >= 40);
        for f in &fixtures {
            fuzz_one(f);
        }
    }

    #[test]
    fn decode_checks_keepalive_and_route_refresh_lengths() {
        let mut keepalive = header::MARKER.to_vec();
        keepalive.extend_from_slice(&[0, 20, msg_type::KEEPALIVE, 0]);
        let n = decode(&keepalive, &CodecContext::default())
            .unwrap_err()
            .notification();
        assert_eq!((n.code, n.subcode, &n.data[..]), (1, 2, &[0u8, 20][..]));

        let mut rr = header::MARKER.to_vec();
        rr.extend_from_slice(&[0, 22, msg_type::ROUTE_REFRESH, 0, 1, 0]);
        let n = decode(&rr, &CodecContext::default())
            .unwrap_err()
            .notification();
        assert_eq!((n.code, n.subcode), (7, 1));
        assert_eq!(&n.data[..], &rr[..]);
    }

    #[test]
    fn encode_leaves_buffer_untouched_on_error() {
        let mut out = BytesMut::from(&b"prefix"[..]);
        let too_big = Message::Notification(Notification::new(6, 0, vec![0u8; 5000]));
        assert!(too_big.encode(&CodecContext::default(), &mut out).is_err());
        assert_eq!(&out[..], b"prefix");
    }
}
