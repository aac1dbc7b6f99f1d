//! The speaker's record of one configured peer: its settings, session handle and status.

use super::handle::PeerStatus;
use super::limits::LimitState;
use crate::config::{Neighbor, PeerType};
use crate::fsm::State;
use crate::rib::PeerCounters;
use crate::session::SessionHandle;
use crate::wire::{Family, GracefulRestart};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Instant, SystemTime};

pub(crate) struct PeerSlot {
    pub neighbor: Neighbor,
    pub handle: SessionHandle,
    pub peer_type: PeerType,
    pub state: State,
    pub since: SystemTime,
    pub last_error: Option<String>,
    pub router_id: Option<Ipv4Addr>,
    pub hold_time: u16,
    pub local_port: Option<u16>,
    pub updates_received: u64,
    pub updates_sent: u64,
    /// The current session negotiated enhanced route refresh (RFC 7313).
    pub enhanced_route_refresh: bool,
    /// The peer offered route refresh (RFC 2918): it re-sends its routes when asked.
    pub route_refresh: bool,
    /// Graceful restart state of this peer (both roles).
    pub gr: GrState,
    /// Prefix limit state (`max-prefixes`).
    pub limit: LimitState,
}

/// What graceful restart tracks for one peer.
#[derive(Debug, Default)]
pub(crate) struct GrState {
    /// The peer's graceful restart capability on the current (or last) session, when we offered
    /// ours too.
    pub peer_cap: Option<GracefulRestart>,
    /// When the current session reached Established.
    pub established_at: Option<Instant>,
    /// Families of the current session whose End-of-RIB has not arrived yet.
    pub eor_pending: Vec<Family>,
    /// Families whose stale paths we hold, and when they go if not refreshed: the peer's
    /// restart time while it is down, the stale timer once it is back.
    pub stale: Vec<Family>,
    pub stale_deadline: Option<Instant>,
}

impl PeerSlot {
    pub fn new(neighbor: Neighbor, handle: SessionHandle, local_asn: u32) -> PeerSlot {
        PeerSlot {
            peer_type: neighbor.peer_type(local_asn),
            hold_time: *neighbor.hold_time.get_ref(),
            neighbor,
            handle,
            state: State::Idle,
            since: SystemTime::now(),
            last_error: None,
            router_id: None,
            local_port: None,
            updates_received: 0,
            updates_sent: 0,
            enhanced_route_refresh: false,
            route_refresh: false,
            gr: GrState::default(),
            limit: LimitState::default(),
        }
    }

    pub fn address(&self) -> IpAddr {
        *self.neighbor.address.get_ref()
    }

    /// Records a state change; `since` moves only when the state really changes.
    pub fn set_state(&mut self, state: State, last_error: Option<String>) {
        if state != self.state {
            self.state = state;
            self.since = SystemTime::now();
        }
        if last_error.is_some() {
            self.last_error = last_error;
        }
    }

    /// Whether a reload with `n` can leave this session untouched.
    pub fn same_settings(&self, n: &Neighbor) -> bool {
        // Spans differ when lines move; compare values only.
        fn bare<T: Clone>(v: &toml::Spanned<T>) -> toml::Spanned<T> {
            toml::Spanned::new(0..0, v.get_ref().clone())
        }
        let strip = |n: &Neighbor| {
            let mut n = n.clone();
            n.address = bare(&n.address);
            n.hold_time = bare(&n.hold_time);
            n.keepalive_time = n.keepalive_time.as_ref().map(bare);
            n.connect_retry = bare(&n.connect_retry);
            n.multihop = n.multihop.as_ref().map(bare);
            n.restart_time = n.restart_time.as_ref().map(bare);
            n.ttl_security = n.ttl_security.as_ref().map(bare);
            n.max_prefixes = n.max_prefixes.as_ref().map(bare);
            n.max_prefix_action = n.max_prefix_action.as_ref().map(bare);
            n.max_prefix_restart = n.max_prefix_restart.as_ref().map(bare);
            n.local_asn = n.local_asn.as_ref().map(bare);
            n.allow_own_as = n.allow_own_as.as_ref().map(bare);
            // Filters change on a live session (see `Speaker::apply_policy`), BFD too.
            n.filters = Vec::new();
            (n.bfd, n.bfd_min_tx_ms, n.bfd_min_rx_ms, n.bfd_multiplier) = (false, None, None, None);
            n
        };
        strip(&self.neighbor) == strip(n)
    }

    pub fn status(&self, counters: PeerCounters) -> PeerStatus {
        PeerStatus {
            address: self.address(),
            port: self.neighbor.port,
            asn: self.neighbor.asn,
            peer_type: self.peer_type,
            state: self.state,
            since: self.since,
            last_error: self.last_error.clone(),
            description: self.neighbor.description.clone(),
            router_id: self.router_id,
            hold_time: self.hold_time,
            rr_client: self.neighbor.route_reflector_client,
            prefixes_received: counters.received,
            prefixes_accepted: counters.accepted,
            prefixes_advertised: counters.advertised,
            updates_received: self.updates_received,
            updates_sent: self.updates_sent,
            local_port: self.local_port,
            prefix_limit_exceeded: self.limit.exceeded,
            bfd: None,
        }
    }
}
