//! BGP messages (RFC 4271 §4) as values: what the codec decodes into and encodes from.

use super::attrs::PathAttributes;
use super::family::{Family, Prefix, Prefix4};
use bytes::Bytes;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Message type codes (RFC 4271 §4.1, RFC 2918).
pub mod msg_type {
    pub const OPEN: u8 = 1;
    pub const UPDATE: u8 = 2;
    pub const NOTIFICATION: u8 = 3;
    pub const KEEPALIVE: u8 = 4;
    pub const ROUTE_REFRESH: u8 = 5;
}

/// Length of the fixed header: 16-octet marker, 2-octet length, 1-octet type.
pub const HEADER_LEN: usize = 19;
/// Largest message without the extended message capability (RFC 4271 §4.1).
pub const MAX_MESSAGE_LEN: usize = 4096;
/// Largest message once both sides announced the extended message capability (RFC 8654).
pub const MAX_EXTENDED_MESSAGE_LEN: usize = 65535;

/// The AS number sent in OPEN's My Autonomous System and in AS_PATH when a 4-octet AS does not
/// fit in 2 octets (RFC 6793).
pub const AS_TRANS: u16 = 23456;

/// What the codec must know about the session to read or write a message: decided by the
/// capabilities both sides sent in their OPENs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodecContext {
    /// Both sides announced the 4-octet AS capability: AS_PATH carries 4-octet ASNs.
    pub four_octet_as: bool,
    /// Both sides announced the extended message capability: messages up to 65535 octets.
    pub extended_message: bool,
    /// The peer is in our AS (iBGP): LOCAL_PREF is mandatory, and LOCAL_PREF, ORIGINATOR_ID
    /// and CLUSTER_LIST are accepted (from an eBGP peer they are discarded, RFC 7606 §7).
    pub ibgp: bool,
}

impl Default for CodecContext {
    /// Before OPENs are exchanged: 2-octet AS_PATH, 4096-octet messages.
    fn default() -> Self {
        CodecContext {
            four_octet_as: false,
            extended_message: false,
            ibgp: false,
        }
    }
}

impl CodecContext {
    /// The largest message this session may carry.
    pub fn max_message_len(&self) -> usize {
        if self.extended_message {
            MAX_EXTENDED_MESSAGE_LEN
        } else {
            MAX_MESSAGE_LEN
        }
    }
}

/// A BGP message.
#[allow(clippy::large_enum_variant)] // UPDATEs dominate; boxing would cost an allocation each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Open(Open),
    Update(Update),
    Notification(Notification),
    Keepalive,
    RouteRefresh(RouteRefresh),
}

/// OPEN (RFC 4271 §4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// Always 4.
    pub version: u8,
    /// My Autonomous System: the 2-octet AS, or AS_TRANS when the real one needs 4 octets.
    pub my_as: u16,
    pub hold_time: u16,
    pub bgp_identifier: Ipv4Addr,
    /// Capabilities from every Capabilities optional parameter (RFC 5492), in order.
    pub capabilities: Vec<Capability>,
}

impl Open {
    /// The speaker's real AS: the 4-octet AS capability's value when present (RFC 6793).
    pub fn asn(&self) -> u32 {
        self.capabilities
            .iter()
            .find_map(|c| match c {
                Capability::FourOctetAs(asn) => Some(*asn),
                _ => None,
            })
            .unwrap_or(self.my_as as u32)
    }

    /// The families announced with the multiprotocol capability. RFC 4760 §8: a speaker that
    /// sends no multiprotocol capability at all speaks IPv4 unicast only.
    pub fn families(&self) -> Vec<Family> {
        let mp: Vec<Family> = self
            .capabilities
            .iter()
            .filter_map(|c| match c {
                Capability::Multiprotocol { afi, safi } => Family::from_afi_safi(*afi, *safi),
                _ => None,
            })
            .collect();
        let any_mp = self
            .capabilities
            .iter()
            .any(|c| matches!(c, Capability::Multiprotocol { .. }));
        if any_mp {
            mp
        } else {
            vec![Family::Ipv4Unicast]
        }
    }

    pub fn has(&self, pred: impl Fn(&Capability) -> bool) -> bool {
        self.capabilities.iter().any(pred)
    }
}

/// A capability (RFC 5492) margay knows, or the raw bytes of one it does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capability {
    /// Code 1, RFC 4760.
    Multiprotocol { afi: u16, safi: u8 },
    /// Code 2, RFC 2918.
    RouteRefresh,
    /// Code 6, RFC 8654.
    ExtendedMessage,
    /// Code 64, RFC 4724.
    GracefulRestart(GracefulRestart),
    /// Code 65, RFC 6793.
    FourOctetAs(u32),
    /// Code 70, RFC 7313.
    EnhancedRouteRefresh,
    /// Anything else, kept as received.
    Unknown { code: u8, value: Bytes },
}

/// Capability codes (IANA).
pub mod cap_code {
    pub const MULTIPROTOCOL: u8 = 1;
    pub const ROUTE_REFRESH: u8 = 2;
    pub const EXTENDED_MESSAGE: u8 = 6;
    pub const GRACEFUL_RESTART: u8 = 64;
    pub const FOUR_OCTET_AS: u8 = 65;
    pub const ENHANCED_ROUTE_REFRESH: u8 = 70;
}

/// The graceful restart capability's value (RFC 4724 §3).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GracefulRestart {
    /// R bit: the sender has restarted.
    pub restart_state: bool,
    /// N bit (RFC 8538): graceful notification supported.
    pub notification: bool,
    /// Restart Time in seconds (12 bits).
    pub restart_time: u16,
    /// Families whose forwarding state is kept, with their "forwarding state preserved" flag.
    pub families: Vec<GracefulRestartFamily>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GracefulRestartFamily {
    pub afi: u16,
    pub safi: u8,
    pub forwarding_preserved: bool,
}

/// UPDATE (RFC 4271 §4.3) with multiprotocol NLRI (RFC 4760) lifted out of the attributes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Update {
    /// IPv4 Withdrawn Routes field.
    pub withdrawn: Vec<Prefix4>,
    /// Path attributes (present when anything is announced).
    pub attributes: PathAttributes,
    /// IPv4 NLRI field.
    pub nlri: Vec<Prefix4>,
    /// MP_REACH_NLRI (RFC 4760 §3).
    pub mp_reach: Option<MpReach>,
    /// MP_UNREACH_NLRI (RFC 4760 §4).
    pub mp_unreach: Option<MpUnreach>,
    /// Set by the decoder when RFC 7606 asks that every NLRI in this UPDATE be treated as
    /// withdrawn; the reason says which attribute was at fault.
    pub treat_as_withdraw: Option<String>,
    /// Attributes the decoder discarded under RFC 7606 "attribute discard", for logging.
    pub discarded: Vec<String>,
}

impl Update {
    /// An End-of-RIB marker (RFC 4724 §2) for `family`.
    pub fn end_of_rib(family: Family) -> Update {
        match family {
            Family::Ipv4Unicast => Update::default(),
            Family::Ipv6Unicast => Update {
                mp_unreach: Some(MpUnreach {
                    family,
                    withdrawn: Vec::new(),
                }),
                ..Update::default()
            },
        }
    }

    /// The family this UPDATE is an End-of-RIB marker for, if it is one.
    pub fn end_of_rib_family(&self) -> Option<Family> {
        let no_attrs = self.attributes == PathAttributes::default();
        if self.withdrawn.is_empty() && self.nlri.is_empty() && self.mp_reach.is_none() && no_attrs
        {
            match &self.mp_unreach {
                None => Some(Family::Ipv4Unicast),
                Some(u) if u.withdrawn.is_empty() => Some(u.family),
                _ => None,
            }
        } else {
            None
        }
    }

    /// Every prefix this UPDATE withdraws (IPv4 field and MP_UNREACH), and every prefix it
    /// announces when RFC 7606 treat-as-withdraw applies.
    pub fn all_withdrawn(&self) -> Vec<Prefix> {
        let mut out: Vec<Prefix> = self.withdrawn.iter().map(|p| Prefix::V4(*p)).collect();
        if let Some(u) = &self.mp_unreach {
            out.extend(u.withdrawn.iter().copied());
        }
        if self.treat_as_withdraw.is_some() {
            out.extend(self.all_announced());
        }
        out
    }

    /// Every prefix this UPDATE announces (IPv4 field and MP_REACH), ignoring treat-as-withdraw.
    pub fn all_announced(&self) -> Vec<Prefix> {
        let mut out: Vec<Prefix> = self.nlri.iter().map(|p| Prefix::V4(*p)).collect();
        if let Some(r) = &self.mp_reach {
            out.extend(r.nlri.iter().copied());
        }
        out
    }
}

/// MP_REACH_NLRI (RFC 4760 §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpReach {
    pub family: Family,
    pub next_hop: MpNextHop,
    pub nlri: Vec<Prefix>,
}

/// The next hop of MP_REACH_NLRI: one address, or for IPv6 a global and a link-local one
/// (RFC 2545 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MpNextHop {
    V4(Ipv4Addr),
    V6 {
        global: Ipv6Addr,
        link_local: Option<Ipv6Addr>,
    },
}

impl MpNextHop {
    /// The address routes are forwarded to (the global one for IPv6).
    pub fn addr(&self) -> IpAddr {
        match self {
            MpNextHop::V4(a) => IpAddr::V4(*a),
            MpNextHop::V6 { global, .. } => IpAddr::V6(*global),
        }
    }
}

/// MP_UNREACH_NLRI (RFC 4760 §4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpUnreach {
    pub family: Family,
    pub withdrawn: Vec<Prefix>,
}

/// NOTIFICATION (RFC 4271 §4.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: Bytes,
}

impl Notification {
    pub fn new(code: u8, subcode: u8, data: impl Into<Bytes>) -> Notification {
        Notification {
            code,
            subcode,
            data: data.into(),
        }
    }
}

/// NOTIFICATION error codes and subcodes (RFC 4271 §4.5, §6; RFC 4486; RFC 7313).
pub mod notif {
    pub const MESSAGE_HEADER_ERROR: u8 = 1;
    pub const OPEN_MESSAGE_ERROR: u8 = 2;
    pub const UPDATE_MESSAGE_ERROR: u8 = 3;
    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    pub const FSM_ERROR: u8 = 5;
    pub const CEASE: u8 = 6;
    pub const ROUTE_REFRESH_MESSAGE_ERROR: u8 = 7;

    // Message Header Error subcodes
    pub const CONNECTION_NOT_SYNCHRONIZED: u8 = 1;
    pub const BAD_MESSAGE_LENGTH: u8 = 2;
    pub const BAD_MESSAGE_TYPE: u8 = 3;

    // OPEN Message Error subcodes
    pub const UNSUPPORTED_VERSION_NUMBER: u8 = 1;
    pub const BAD_PEER_AS: u8 = 2;
    pub const BAD_BGP_IDENTIFIER: u8 = 3;
    pub const UNSUPPORTED_OPTIONAL_PARAMETER: u8 = 4;
    pub const UNACCEPTABLE_HOLD_TIME: u8 = 6;
    pub const UNSUPPORTED_CAPABILITY: u8 = 7;

    // UPDATE Message Error subcodes
    pub const MALFORMED_ATTRIBUTE_LIST: u8 = 1;
    pub const UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE: u8 = 2;
    pub const MISSING_WELL_KNOWN_ATTRIBUTE: u8 = 3;
    pub const ATTRIBUTE_FLAGS_ERROR: u8 = 4;
    pub const ATTRIBUTE_LENGTH_ERROR: u8 = 5;
    pub const INVALID_ORIGIN_ATTRIBUTE: u8 = 6;
    pub const INVALID_NEXT_HOP_ATTRIBUTE: u8 = 8;
    pub const OPTIONAL_ATTRIBUTE_ERROR: u8 = 9;
    pub const INVALID_NETWORK_FIELD: u8 = 10;
    pub const MALFORMED_AS_PATH: u8 = 11;

    // Cease subcodes (RFC 4486)
    pub const MAX_PREFIXES_REACHED: u8 = 1;
    pub const ADMINISTRATIVE_SHUTDOWN: u8 = 2;
    pub const PEER_DECONFIGURED: u8 = 3;
    pub const ADMINISTRATIVE_RESET: u8 = 4;
    pub const CONNECTION_REJECTED: u8 = 5;
    pub const OTHER_CONFIGURATION_CHANGE: u8 = 6;
    pub const CONNECTION_COLLISION_RESOLUTION: u8 = 7;
    pub const OUT_OF_RESOURCES: u8 = 8;
    pub const HARD_RESET: u8 = 9;
    /// RFC 9384.
    pub const BFD_DOWN: u8 = 10;

    // ROUTE-REFRESH Message Error subcodes (RFC 7313)
    pub const INVALID_MESSAGE_LENGTH: u8 = 1;
}

/// ROUTE-REFRESH (RFC 2918), with the message subtype of enhanced route refresh (RFC 7313):
/// 0 normal request, 1 Begin-of-RR, 2 End-of-RR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRefresh {
    pub afi: u16,
    pub subtype: u8,
    pub safi: u8,
}
