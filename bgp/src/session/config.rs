//! One peer's configuration, and what it means for the FSM and the transport.

use crate::fsm::FsmConfig;
use crate::transport::{self, ConnectOptions, TtlMode};
use crate::wire::{Family, GracefulRestart};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

/// One peer as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub address: IpAddr,
    /// The peer's port (179).
    pub port: u16,
    pub local_as: u32,
    pub remote_as: u32,
    pub router_id: Ipv4Addr,
    /// Hold Time we propose (90).
    pub hold_time: u16,
    /// Seconds between KEEPALIVEs; a third of the negotiated hold time when `None`.
    pub keepalive_time: Option<u16>,
    pub connect_retry: Duration,
    /// Only accept connections from the peer, never connect.
    pub passive: bool,
    /// TCP-MD5 password (RFC 2385).
    pub password: Option<margay_common::Secret>,
    /// GTSM (RFC 5082): the peer is at most this many hops away.
    pub ttl_security: Option<u8>,
    /// eBGP multihop: send with this TTL.
    pub multihop: Option<u8>,
    pub source_address: Option<IpAddr>,
    pub families: Vec<Family>,
    pub description: Option<String>,
    /// The graceful restart capability we offer (RFC 4724); none when off.
    pub graceful_restart: Option<GracefulRestart>,
    /// OPENs before this instant carry the Restart State bit.
    pub restarting_until: Option<Instant>,
}

impl PeerConfig {
    /// A peer with the defaults: port 179, hold time 90 s, connect retry 120 s, IPv4 unicast
    /// (plus IPv6 unicast when the peer's address is IPv6).
    pub fn new(address: IpAddr, local_as: u32, remote_as: u32, router_id: Ipv4Addr) -> Self {
        let families = match address {
            IpAddr::V4(_) => vec![Family::Ipv4Unicast],
            IpAddr::V6(_) => vec![Family::Ipv4Unicast, Family::Ipv6Unicast],
        };
        PeerConfig {
            address,
            port: transport::BGP_PORT,
            local_as,
            remote_as,
            router_id,
            hold_time: 90,
            keepalive_time: None,
            connect_retry: Duration::from_secs(120),
            passive: false,
            password: None,
            ttl_security: None,
            multihop: None,
            source_address: None,
            families,
            description: None,
            graceful_restart: None,
            restarting_until: None,
        }
    }

    /// The state machine's configuration. The first back-off after an error is the connect
    /// retry time, at most 5 s; it doubles up to 2 minutes.
    pub fn fsm_config(&self) -> FsmConfig {
        let mut c = FsmConfig::new(self.local_as, self.remote_as, self.router_id);
        c.hold_time = self.hold_time;
        c.keepalive_time = self.keepalive_time;
        c.connect_retry = self.connect_retry;
        c.passive = self.passive;
        c.families = self.families.clone();
        c.idle_hold_time = self.connect_retry.min(Duration::from_secs(5));
        c.graceful_restart = self.graceful_restart.clone();
        c.restarting_until = self.restarting_until;
        c
    }

    /// GTSM wins over multihop when both are set.
    pub fn ttl_mode(&self) -> TtlMode {
        match (self.ttl_security, self.multihop) {
            (Some(hops), _) => TtlMode::Security(hops),
            (None, Some(ttl)) => TtlMode::Multihop(ttl),
            (None, None) => TtlMode::Default,
        }
    }

    pub fn connect_options(&self) -> ConnectOptions {
        let mut o = ConnectOptions::new(SocketAddr::new(self.address, self.port));
        o.source = self.source_address;
        o.password = self.password.clone();
        o.ttl = self.ttl_mode();
        // Shorter than the ConnectRetryTimer, so a timeout is reported before the next try.
        o.timeout =
            (self.connect_retry * 3 / 4).clamp(Duration::from_millis(500), Duration::from_secs(30));
        o
    }
}
