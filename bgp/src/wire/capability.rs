//! Capabilities (RFC 5492) inside the OPEN's Capabilities optional parameter.
//!
//! ```text
//! +------------------------------+
//! | Capability Code (1 octet)    |
//! +------------------------------+
//! | Capability Length (1 octet)  |
//! +------------------------------+
//! | Capability Value (variable)  |
//! ~                              ~
//! +------------------------------+
//! ```
//!
//! Values margay reads: multiprotocol (RFC 4760 §8: AFI 2, Reserved 1, SAFI 1), route refresh
//! (RFC 2918, empty), extended message (RFC 8654, empty), 4-octet AS (RFC 6793, the AS),
//! enhanced route refresh (RFC 7313, empty) and graceful restart (RFC 4724 §3):
//!
//! ```text
//! +--------------------------------------------------+
//! | Restart Flags (4 bits)                           |
//! +--------------------------------------------------+
//! | Restart Time in seconds (12 bits)                |
//! +--------------------------------------------------+
//! | Address Family Identifier (16 bits)              |
//! +--------------------------------------------------+
//! | Subsequent Address Family Identifier (8 bits)    |
//! +--------------------------------------------------+
//! | Flags for Address Family (8 bits)                |
//! +--------------------------------------------------+
//! | ...                                              |
//! +--------------------------------------------------+
//! ```
//!
//! Any other capability, or a known one whose value has the wrong length, is kept raw.

use super::error::EncodeError;
use super::message::{Capability, GracefulRestart, GracefulRestartFamily, cap_code};
use bytes::{BufMut, Bytes, BytesMut};

const GR_RESTART_STATE: u16 = 0x8000;
const GR_NOTIFICATION: u16 = 0x4000;
const GR_TIME_MASK: u16 = 0x0fff;
const GR_FORWARDING_PRESERVED: u8 = 0x80;

/// Reads one capability's value.
pub fn decode_capability(code: u8, value: &[u8]) -> Capability {
    let raw = || Capability::Unknown {
        code,
        value: Bytes::copy_from_slice(value),
    };
    match (code, value.len()) {
        (cap_code::MULTIPROTOCOL, 4) => Capability::Multiprotocol {
            afi: u16::from_be_bytes([value[0], value[1]]),
            safi: value[3],
        },
        (cap_code::ROUTE_REFRESH, 0) => Capability::RouteRefresh,
        (cap_code::EXTENDED_MESSAGE, 0) => Capability::ExtendedMessage,
        (cap_code::ENHANCED_ROUTE_REFRESH, 0) => Capability::EnhancedRouteRefresh,
        (cap_code::FOUR_OCTET_AS, 4) => {
            Capability::FourOctetAs(u32::from_be_bytes([value[0], value[1], value[2], value[3]]))
        }
        (cap_code::GRACEFUL_RESTART, n) if n >= 2 && (n - 2).is_multiple_of(4) => {
            let head = u16::from_be_bytes([value[0], value[1]]);
            let families = value[2..]
                .chunks_exact(4)
                .map(|c| GracefulRestartFamily {
                    afi: u16::from_be_bytes([c[0], c[1]]),
                    safi: c[2],
                    forwarding_preserved: c[3] & GR_FORWARDING_PRESERVED != 0,
                })
                .collect();
            Capability::GracefulRestart(GracefulRestart {
                restart_state: head & GR_RESTART_STATE != 0,
                notification: head & GR_NOTIFICATION != 0,
                restart_time: head & GR_TIME_MASK,
                families,
            })
        }
        _ => raw(),
    }
}

/// Writes one capability: code, length, value.
pub fn encode_capability(cap: &Capability, out: &mut BytesMut) -> Result<(), EncodeError> {
    match cap {
        Capability::Multiprotocol { afi, safi } => {
            out.put_slice(&[cap_code::MULTIPROTOCOL, 4]);
            out.put_u16(*afi);
            out.put_u8(0);
            out.put_u8(*safi);
        }
        Capability::RouteRefresh => out.put_slice(&[cap_code::ROUTE_REFRESH, 0]),
        Capability::ExtendedMessage => out.put_slice(&[cap_code::EXTENDED_MESSAGE, 0]),
        Capability::EnhancedRouteRefresh => out.put_slice(&[cap_code::ENHANCED_ROUTE_REFRESH, 0]),
        Capability::FourOctetAs(asn) => {
            out.put_slice(&[cap_code::FOUR_OCTET_AS, 4]);
            out.put_u32(*asn);
        }
        Capability::GracefulRestart(gr) => {
            let len = 2 + 4 * gr.families.len();
            if len > 255 {
                return Err(EncodeError::CapabilityTooLong {
                    code: cap_code::GRACEFUL_RESTART,
                    len,
                });
            }
            out.put_slice(&[cap_code::GRACEFUL_RESTART, len as u8]);
            let mut head = gr.restart_time & GR_TIME_MASK;
            if gr.restart_state {
                head |= GR_RESTART_STATE;
            }
            if gr.notification {
                head |= GR_NOTIFICATION;
            }
            out.put_u16(head);
            for f in &gr.families {
                out.put_u16(f.afi);
                out.put_u8(f.safi);
                out.put_u8(if f.forwarding_preserved {
                    GR_FORWARDING_PRESERVED
                } else {
                    0
                });
            }
        }
        Capability::Unknown { code, value } => {
            if value.len() > 255 {
                return Err(EncodeError::CapabilityTooLong {
                    code: *code,
                    len: value.len(),
                });
            }
            out.put_u8(*code);
            out.put_u8(value.len() as u8);
            out.put_slice(value);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(cap: Capability) {
        let mut out = BytesMut::new();
        encode_capability(&cap, &mut out).unwrap();
        assert_eq!(out[1] as usize, out.len() - 2);
        assert_eq!(decode_capability(out[0], &out[2..]), cap);
    }

    #[test]
    fn round_trips_every_known_capability() {
        round_trip(Capability::Multiprotocol { afi: 2, safi: 1 });
        round_trip(Capability::RouteRefresh);
        round_trip(Capability::ExtendedMessage);
        round_trip(Capability::EnhancedRouteRefresh);
        round_trip(Capability::FourOctetAs(4_200_000_001));
        round_trip(Capability::GracefulRestart(GracefulRestart {
            restart_state: true,
            notification: true,
            restart_time: 120,
            families: vec![
                GracefulRestartFamily {
                    afi: 1,
                    safi: 1,
                    forwarding_preserved: true,
                },
                GracefulRestartFamily {
                    afi: 2,
                    safi: 1,
                    forwarding_preserved: false,
                },
            ],
        }));
        round_trip(Capability::Unknown {
            code: 73,
            value: Bytes::from_static(b"\x04node"),
        });
    }

    #[test]
    fn keeps_known_capability_with_wrong_length_raw() {
        let cap = decode_capability(cap_code::FOUR_OCTET_AS, &[0, 1]);
        assert_eq!(
            cap,
            Capability::Unknown {
                code: cap_code::FOUR_OCTET_AS,
                value: Bytes::from_static(&[0, 1])
            }
        );
    }
}
