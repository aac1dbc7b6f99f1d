//! The OPEN exchange: the OPEN we send, the checks on the OPEN we receive (RFC 4271 §6.2,
//! RFC 6286, RFC 6793) and what both OPENs together decide for the session ([`Negotiated`]).

use crate::wire::{
    AS_TRANS, Capability, CodecContext, Family, GracefulRestart, Notification, Open, notif,
};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// What the local side of a session is configured to be and to offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsmConfig {
    pub local_as: u32,
    pub remote_as: u32,
    pub router_id: Ipv4Addr,
    /// Hold Time we propose, in seconds (0 or >= 3).
    pub hold_time: u16,
    /// Seconds between KEEPALIVEs; a third of the negotiated hold time when `None`.
    pub keepalive_time: Option<u16>,
    /// ConnectRetryTimer (RFC 4271 §10 suggests 120 s).
    pub connect_retry: Duration,
    /// Never initiate a connection; wait for the peer to connect.
    pub passive: bool,
    /// Families we offer with the multiprotocol capability.
    pub families: Vec<Family>,
    /// Offer the extended message capability (RFC 8654).
    pub extended_message: bool,
    /// Graceful restart capability to offer, if any (RFC 4724).
    pub graceful_restart: Option<GracefulRestart>,
    /// OPENs sent before this instant set the Restart State bit of the graceful restart
    /// capability (RFC 4724 §3: we restarted and our peers should not wait for our End-of-RIB).
    pub restarting_until: Option<Instant>,
    /// Hold timer while waiting for the peer's OPEN (RFC 4271 §8.2.2 suggests 4 minutes).
    pub open_hold_time: Duration,
    /// First back-off before an automatic restart after an error.
    pub idle_hold_time: Duration,
    /// Back-off cap: the idle hold time doubles on each failure up to this.
    pub idle_hold_max: Duration,
    /// A session that stayed Established this long resets the back-off to `idle_hold_time`.
    pub stable_time: Duration,
}

impl FsmConfig {
    /// A configuration with the defaults of RFC 4271 §10 for everything but the identities.
    pub fn new(local_as: u32, remote_as: u32, router_id: Ipv4Addr) -> FsmConfig {
        FsmConfig {
            local_as,
            remote_as,
            router_id,
            hold_time: 90,
            keepalive_time: None,
            connect_retry: Duration::from_secs(120),
            passive: false,
            families: vec![Family::Ipv4Unicast],
            extended_message: true,
            graceful_restart: None,
            restarting_until: None,
            open_hold_time: Duration::from_secs(240),
            idle_hold_time: Duration::from_secs(5),
            idle_hold_max: Duration::from_secs(120),
            stable_time: Duration::from_secs(60),
        }
    }

    /// Internal BGP: both ends in the same AS.
    pub fn is_ibgp(&self) -> bool {
        self.local_as == self.remote_as
    }

    /// The OPEN this side sends at `now`: the Restart State bit is set while
    /// `restarting_until` lies ahead.
    pub fn open_at(&self, now: Instant) -> Open {
        let mut open = self.open();
        let restarting = self.restarting_until.is_some_and(|t| now < t);
        for c in &mut open.capabilities {
            if let Capability::GracefulRestart(gr) = c {
                gr.restart_state = restarting;
            }
        }
        open
    }

    /// The OPEN this side sends, with the graceful restart capability as configured.
    pub fn open(&self) -> Open {
        let mut capabilities: Vec<Capability> = self
            .families
            .iter()
            .map(|f| {
                let (afi, safi) = f.afi_safi();
                Capability::Multiprotocol { afi, safi }
            })
            .collect();
        capabilities.push(Capability::RouteRefresh);
        capabilities.push(Capability::EnhancedRouteRefresh);
        if self.extended_message {
            capabilities.push(Capability::ExtendedMessage);
        }
        if let Some(gr) = &self.graceful_restart {
            capabilities.push(Capability::GracefulRestart(gr.clone()));
        }
        capabilities.push(Capability::FourOctetAs(self.local_as));
        Open {
            version: 4,
            my_as: u16::try_from(self.local_as).unwrap_or(AS_TRANS),
            hold_time: self.hold_time,
            bgp_identifier: self.router_id,
            capabilities,
        }
    }
}

/// Seconds between KEEPALIVEs for a negotiated `hold_time`: the configured time, else a third
/// of the hold time (as BIRD's `keepalive time`); a configured time not below the hold time
/// would let the peer's hold timer expire, so a third is used then too. None at all with a
/// hold time of 0 (RFC 4271 §4.4).
pub fn keepalive(hold_time: u16, configured: Option<u16>) -> u16 {
    match configured {
        _ if hold_time == 0 => 0,
        Some(k) if k < hold_time => k,
        _ => hold_time / 3,
    }
}

/// What both OPENs together decide for one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The smaller of both Hold Times, in seconds (0: no keepalives, no hold timer).
    pub hold_time: u16,
    /// Seconds between KEEPALIVEs: the configured time, else hold time / 3 (as BIRD); 0 when
    /// the hold time is 0 (RFC 4271 §4.4: no KEEPALIVEs then).
    pub keepalive: u16,
    /// Families both sides announced.
    pub families: Vec<Family>,
    pub four_octet_as: bool,
    pub extended_message: bool,
    pub route_refresh: bool,
    pub enhanced_route_refresh: bool,
    /// The peer's graceful restart capability, as it sent it.
    pub graceful_restart: Option<GracefulRestart>,
    pub peer_asn: u32,
    pub peer_router_id: Ipv4Addr,
    /// The peer is in our AS.
    pub ibgp: bool,
}

impl Negotiated {
    /// What the codec needs to know for this session.
    pub fn codec_context(&self) -> CodecContext {
        CodecContext {
            four_octet_as: self.four_octet_as,
            extended_message: self.extended_message,
            ibgp: self.ibgp,
        }
    }
}

/// Why a received OPEN was refused: the NOTIFICATION to send and the operator's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text}")]
pub struct OpenError {
    pub notification: Notification,
    pub text: String,
}

impl OpenError {
    fn new(subcode: u8, data: Vec<u8>, text: String) -> OpenError {
        OpenError {
            notification: Notification::new(notif::OPEN_MESSAGE_ERROR, subcode, data),
            text,
        }
    }
}

/// Checks the peer's OPEN in the order of RFC 4271 §6.2 and negotiates the session.
pub fn negotiate(config: &FsmConfig, open: &Open) -> Result<Negotiated, OpenError> {
    if open.version != 4 {
        return Err(OpenError::new(
            notif::UNSUPPORTED_VERSION_NUMBER,
            vec![0, 4],
            format!("Unsupported version number: {}", open.version),
        ));
    }
    let peer_asn = open.asn();
    let four_octet_as = open.has(|c| matches!(c, Capability::FourOctetAs(_)));
    if peer_asn != config.remote_as {
        return Err(OpenError::new(
            notif::BAD_PEER_AS,
            open.my_as.to_be_bytes().to_vec(),
            format!("Bad peer AS: {peer_asn}"),
        ));
    }
    if open.hold_time == 1 || open.hold_time == 2 {
        return Err(OpenError::new(
            notif::UNACCEPTABLE_HOLD_TIME,
            Vec::new(),
            format!("Unacceptable hold time: {}", open.hold_time),
        ));
    }
    let id = open.bgp_identifier;
    if id.is_unspecified() || (config.is_ibgp() && id == config.router_id) {
        return Err(OpenError::new(
            notif::BAD_BGP_IDENTIFIER,
            id.octets().to_vec(),
            format!("Bad BGP identifier: {id}"),
        ));
    }
    let hold_time = config.hold_time.min(open.hold_time);
    let peer_families = open.families();
    let families = config
        .families
        .iter()
        .copied()
        .filter(|f| peer_families.contains(f))
        .collect();
    Ok(Negotiated {
        hold_time,
        keepalive: keepalive(hold_time, config.keepalive_time),
        families,
        four_octet_as,
        extended_message: config.extended_message
            && open.has(|c| matches!(c, Capability::ExtendedMessage)),
        route_refresh: open.has(|c| matches!(c, Capability::RouteRefresh)),
        enhanced_route_refresh: open.has(|c| matches!(c, Capability::EnhancedRouteRefresh)),
        graceful_restart: open.capabilities.iter().find_map(|c| match c {
            Capability::GracefulRestart(gr) => Some(gr.clone()),
            _ => None,
        }),
        peer_asn,
        peer_router_id: id,
        ibgp: config.is_ibgp(),
    })
}

/// The text operators know for a NOTIFICATION's code and subcode (as BIRD prints them).
pub fn describe(n: &Notification) -> String {
    use notif::*;
    let code = match n.code {
        MESSAGE_HEADER_ERROR => "Invalid message header",
        OPEN_MESSAGE_ERROR => "Invalid OPEN message",
        UPDATE_MESSAGE_ERROR => "Invalid UPDATE message",
        HOLD_TIMER_EXPIRED => return "Hold timer expired".to_string(),
        FSM_ERROR => "Finite state machine error",
        CEASE => "Cease",
        ROUTE_REFRESH_MESSAGE_ERROR => "Invalid ROUTE-REFRESH message",
        _ => return format!("Error code {} / {}", n.code, n.subcode),
    };
    let sub = match (n.code, n.subcode) {
        (_, 0) => None,
        (MESSAGE_HEADER_ERROR, CONNECTION_NOT_SYNCHRONIZED) => Some("Connection not synchronized"),
        (MESSAGE_HEADER_ERROR, BAD_MESSAGE_LENGTH) => Some("Bad message length"),
        (MESSAGE_HEADER_ERROR, BAD_MESSAGE_TYPE) => Some("Bad message type"),
        (OPEN_MESSAGE_ERROR, UNSUPPORTED_VERSION_NUMBER) => Some("Unsupported version number"),
        (OPEN_MESSAGE_ERROR, BAD_PEER_AS) => Some("Bad peer AS"),
        (OPEN_MESSAGE_ERROR, BAD_BGP_IDENTIFIER) => Some("Bad BGP identifier"),
        (OPEN_MESSAGE_ERROR, UNSUPPORTED_OPTIONAL_PARAMETER) => {
            Some("Unsupported optional parameter")
        }
        (OPEN_MESSAGE_ERROR, UNACCEPTABLE_HOLD_TIME) => Some("Unacceptable hold time"),
        (OPEN_MESSAGE_ERROR, UNSUPPORTED_CAPABILITY) => Some("Unsupported capability"),
        (UPDATE_MESSAGE_ERROR, MALFORMED_ATTRIBUTE_LIST) => Some("Malformed attribute list"),
        (UPDATE_MESSAGE_ERROR, UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE) => {
            Some("Unrecognized well-known attribute")
        }
        (UPDATE_MESSAGE_ERROR, MISSING_WELL_KNOWN_ATTRIBUTE) => Some("Missing mandatory attribute"),
        (UPDATE_MESSAGE_ERROR, ATTRIBUTE_FLAGS_ERROR) => Some("Attribute flags error"),
        (UPDATE_MESSAGE_ERROR, ATTRIBUTE_LENGTH_ERROR) => Some("Attribute length error"),
        (UPDATE_MESSAGE_ERROR, INVALID_ORIGIN_ATTRIBUTE) => Some("Invalid ORIGIN attribute"),
        (UPDATE_MESSAGE_ERROR, INVALID_NEXT_HOP_ATTRIBUTE) => Some("Invalid NEXT_HOP attribute"),
        (UPDATE_MESSAGE_ERROR, OPTIONAL_ATTRIBUTE_ERROR) => Some("Optional attribute error"),
        (UPDATE_MESSAGE_ERROR, INVALID_NETWORK_FIELD) => Some("Invalid network field"),
        (UPDATE_MESSAGE_ERROR, MALFORMED_AS_PATH) => Some("Malformed AS_PATH"),
        (FSM_ERROR, 1) => Some("Unexpected message in OpenSent state"),
        (FSM_ERROR, 2) => Some("Unexpected message in OpenConfirm state"),
        (FSM_ERROR, 3) => Some("Unexpected message in Established state"),
        (CEASE, MAX_PREFIXES_REACHED) => Some("Maximum number of prefixes reached"),
        (CEASE, ADMINISTRATIVE_SHUTDOWN) => Some("Administrative shutdown"),
        (CEASE, PEER_DECONFIGURED) => Some("Peer de-configured"),
        (CEASE, ADMINISTRATIVE_RESET) => Some("Administrative reset"),
        (CEASE, CONNECTION_REJECTED) => Some("Connection rejected"),
        (CEASE, OTHER_CONFIGURATION_CHANGE) => Some("Configuration change"),
        (CEASE, CONNECTION_COLLISION_RESOLUTION) => Some("Connection collision resolution"),
        (CEASE, OUT_OF_RESOURCES) => Some("Out of Resources"),
        (CEASE, HARD_RESET) => Some("Hard reset"),
        (CEASE, BFD_DOWN) => Some("BFD Down"),
        (ROUTE_REFRESH_MESSAGE_ERROR, INVALID_MESSAGE_LENGTH) => Some("Invalid message length"),
        _ => None,
    };
    match sub {
        Some(s) => format!("{code} / {s}"),
        None if n.subcode == 0 => code.to_string(),
        None => format!("{code} / subcode {}", n.subcode),
    }
}
