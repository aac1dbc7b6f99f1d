//! Codec errors: what went wrong reading a peer's message (and the NOTIFICATION it calls for,
//! RFC 4271 §6), and what can go wrong writing one.

use super::message::{Notification, notif};
use bytes::Bytes;

/// A received message the session must answer with a NOTIFICATION and close (RFC 4271 §6,
/// RFC 7606 "session reset"). [`MessageError::notification`] gives the code, subcode and data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// §6.1: the marker is not all ones.
    #[error("message header: marker is not all ones")]
    ConnectionNotSynchronized,
    /// §6.1: the length field is out of range for the session or for the message type.
    #[error("message header: bad message length {0}")]
    BadMessageLength(u16),
    /// §6.1: unknown message type.
    #[error("message header: bad message type {0}")]
    BadMessageType(u8),
    /// §6.2: an OPEN error; `subcode` from [`notif`], `data` as §6.2 asks.
    #[error("OPEN: {reason}")]
    Open {
        subcode: u8,
        data: Bytes,
        reason: String,
    },
    /// §6.3 / RFC 7606 session reset: an UPDATE error.
    #[error("UPDATE: {reason}")]
    Update {
        subcode: u8,
        data: Bytes,
        reason: String,
    },
    /// RFC 7313 §5: a ROUTE-REFRESH of the wrong length; data is the whole message.
    #[error("ROUTE-REFRESH: invalid message length")]
    RouteRefreshLength(Bytes),
}

impl MessageError {
    /// The NOTIFICATION to send for this error (RFC 4271 §6).
    pub fn notification(&self) -> Notification {
        match self {
            MessageError::ConnectionNotSynchronized => Notification::new(
                notif::MESSAGE_HEADER_ERROR,
                notif::CONNECTION_NOT_SYNCHRONIZED,
                Bytes::new(),
            ),
            MessageError::BadMessageLength(len) => Notification::new(
                notif::MESSAGE_HEADER_ERROR,
                notif::BAD_MESSAGE_LENGTH,
                Bytes::copy_from_slice(&len.to_be_bytes()),
            ),
            MessageError::BadMessageType(t) => Notification::new(
                notif::MESSAGE_HEADER_ERROR,
                notif::BAD_MESSAGE_TYPE,
                Bytes::copy_from_slice(&[*t]),
            ),
            MessageError::Open { subcode, data, .. } => {
                Notification::new(notif::OPEN_MESSAGE_ERROR, *subcode, data.clone())
            }
            MessageError::Update { subcode, data, .. } => {
                Notification::new(notif::UPDATE_MESSAGE_ERROR, *subcode, data.clone())
            }
            MessageError::RouteRefreshLength(msg) => Notification::new(
                notif::ROUTE_REFRESH_MESSAGE_ERROR,
                notif::INVALID_MESSAGE_LENGTH,
                msg.clone(),
            ),
        }
    }

    pub(crate) fn open(subcode: u8, data: impl Into<Bytes>, reason: impl Into<String>) -> Self {
        MessageError::Open {
            subcode,
            data: data.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn update(subcode: u8, data: impl Into<Bytes>, reason: impl Into<String>) -> Self {
        MessageError::Update {
            subcode,
            data: data.into(),
            reason: reason.into(),
        }
    }
}

/// A message that cannot be written as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The message would be longer than the session allows.
    #[error("message of {len} octets exceeds the maximum of {max}")]
    MessageTooLong { len: usize, max: usize },
    /// One attribute's value is longer than 65535 octets.
    #[error("attribute {type_code} of {len} octets is too long")]
    AttributeTooLong { type_code: u8, len: usize },
    /// The path attributes alone leave no room for a single prefix.
    #[error("path attributes of {len} octets leave no room for NLRI")]
    AttributesTooLarge { len: usize },
    /// The OPEN's optional parameters exceed 255 octets.
    #[error("OPEN optional parameters of {0} octets exceed 255")]
    OptionalParametersTooLong(usize),
    /// A capability's value exceeds 255 octets.
    #[error("capability {code} of {len} octets is too long")]
    CapabilityTooLong { code: u8, len: usize },
    /// The next hop or a prefix does not belong to the family being encoded.
    #[error("{what} does not belong to {family}")]
    FamilyMismatch {
        what: &'static str,
        family: super::family::Family,
    },
}
