//! The BFD Control packet (RFC 5880 §4.1): encoding, and decoding with the reception checks of
//! §6.8.6 that need no session (version, length, multiplier, multipoint, discriminators).
//! Authentication is not supported: a packet with the A bit is refused.

use std::fmt;
use std::time::Duration;

/// Length of the mandatory section, the whole packet without authentication.
pub const PACKET_LEN: usize = 24;
/// The protocol version we speak.
pub const VERSION: u8 = 1;

/// `bfd.SessionState` and the packet's State field (RFC 5880 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionState {
    AdminDown = 0,
    Down = 1,
    Init = 2,
    Up = 3,
}

impl SessionState {
    fn from_bits(b: u8) -> SessionState {
        match b & 3 {
            0 => SessionState::AdminDown,
            1 => SessionState::Down,
            2 => SessionState::Init,
            _ => SessionState::Up,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::AdminDown => "AdminDown",
            SessionState::Down => "Down",
            SessionState::Init => "Init",
            SessionState::Up => "Up",
        }
    }
}

impl fmt::Display for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The Diagnostic field (RFC 5880 §4.1): why the session last left Up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Diagnostic(pub u8);

impl Diagnostic {
    pub const NONE: Diagnostic = Diagnostic(0);
    pub const DETECTION_TIME_EXPIRED: Diagnostic = Diagnostic(1);
    pub const ECHO_FAILED: Diagnostic = Diagnostic(2);
    pub const NEIGHBOR_SIGNALED_DOWN: Diagnostic = Diagnostic(3);
    pub const FORWARDING_PLANE_RESET: Diagnostic = Diagnostic(4);
    pub const PATH_DOWN: Diagnostic = Diagnostic(5);
    pub const CONCATENATED_PATH_DOWN: Diagnostic = Diagnostic(6);
    pub const ADMINISTRATIVELY_DOWN: Diagnostic = Diagnostic(7);
    pub const REVERSE_CONCATENATED_PATH_DOWN: Diagnostic = Diagnostic(8);

    pub fn as_str(self) -> &'static str {
        match self.0 {
            0 => "No Diagnostic",
            1 => "Control Detection Time Expired",
            2 => "Echo Function Failed",
            3 => "Neighbor Signaled Session Down",
            4 => "Forwarding Plane Reset",
            5 => "Path Down",
            6 => "Concatenated Path Down",
            7 => "Administratively Down",
            8 => "Reverse Concatenated Path Down",
            _ => "Reserved",
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One Control packet, intervals in microseconds as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlPacket {
    pub diag: Diagnostic,
    pub state: SessionState,
    pub poll: bool,
    pub fin: bool,
    /// Control Plane Independent.
    pub cpi: bool,
    pub demand: bool,
    pub detect_mult: u8,
    pub my_discr: u32,
    pub your_discr: u32,
    pub desired_min_tx_us: u32,
    pub required_min_rx_us: u32,
    pub required_min_echo_rx_us: u32,
}

/// Why a received packet was discarded (RFC 5880 §6.8.6).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("packet of {0} octets is shorter than 24")]
    Short(usize),
    #[error("version {0}, not 1")]
    Version(u8),
    #[error("length field {field} does not fit the {received} octets received")]
    Length { field: u8, received: usize },
    #[error("detect multiplier is zero")]
    ZeroMultiplier,
    #[error("multipoint bit set")]
    Multipoint,
    #[error("My Discriminator is zero")]
    ZeroMyDiscriminator,
    #[error("Your Discriminator is zero in state {0}")]
    ZeroYourDiscriminator(SessionState),
    #[error("authentication is not configured")]
    Authentication,
}

const POLL: u8 = 0x20;
const FINAL: u8 = 0x10;
const CPI: u8 = 0x08;
const AUTH: u8 = 0x04;
const DEMAND: u8 = 0x02;
const MULTIPOINT: u8 = 0x01;

impl ControlPacket {
    pub fn encode(&self) -> [u8; PACKET_LEN] {
        let mut b = [0u8; PACKET_LEN];
        b[0] = (VERSION << 5) | (self.diag.0 & 0x1f);
        b[1] = ((self.state as u8) << 6)
            | if self.poll { POLL } else { 0 }
            | if self.fin { FINAL } else { 0 }
            | if self.cpi { CPI } else { 0 }
            | if self.demand { DEMAND } else { 0 };
        b[2] = self.detect_mult;
        b[3] = PACKET_LEN as u8;
        b[4..8].copy_from_slice(&self.my_discr.to_be_bytes());
        b[8..12].copy_from_slice(&self.your_discr.to_be_bytes());
        b[12..16].copy_from_slice(&self.desired_min_tx_us.to_be_bytes());
        b[16..20].copy_from_slice(&self.required_min_rx_us.to_be_bytes());
        b[20..24].copy_from_slice(&self.required_min_echo_rx_us.to_be_bytes());
        b
    }

    /// Decodes and checks one packet as received in a UDP datagram.
    pub fn decode(b: &[u8]) -> Result<ControlPacket, PacketError> {
        if b.len() < PACKET_LEN {
            return Err(PacketError::Short(b.len()));
        }
        let version = b[0] >> 5;
        if version != VERSION {
            return Err(PacketError::Version(version));
        }
        let flags = b[1];
        let length = b[3];
        let min = if flags & AUTH != 0 { 26 } else { PACKET_LEN };
        if usize::from(length) < min || usize::from(length) > b.len() {
            return Err(PacketError::Length {
                field: length,
                received: b.len(),
            });
        }
        if b[2] == 0 {
            return Err(PacketError::ZeroMultiplier);
        }
        if flags & MULTIPOINT != 0 {
            return Err(PacketError::Multipoint);
        }
        let word = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let p = ControlPacket {
            diag: Diagnostic(b[0] & 0x1f),
            state: SessionState::from_bits(flags >> 6),
            poll: flags & POLL != 0,
            fin: flags & FINAL != 0,
            cpi: flags & CPI != 0,
            demand: flags & DEMAND != 0,
            detect_mult: b[2],
            my_discr: word(4),
            your_discr: word(8),
            desired_min_tx_us: word(12),
            required_min_rx_us: word(16),
            required_min_echo_rx_us: word(20),
        };
        if p.my_discr == 0 {
            return Err(PacketError::ZeroMyDiscriminator);
        }
        if p.your_discr == 0 && !matches!(p.state, SessionState::Down | SessionState::AdminDown) {
            return Err(PacketError::ZeroYourDiscriminator(p.state));
        }
        if flags & AUTH != 0 {
            return Err(PacketError::Authentication);
        }
        Ok(p)
    }

    pub fn desired_min_tx(&self) -> Duration {
        Duration::from_micros(u64::from(self.desired_min_tx_us))
    }

    pub fn required_min_rx(&self) -> Duration {
        Duration::from_micros(u64::from(self.required_min_rx_us))
    }
}

/// A duration as the packet's 32-bit microseconds, saturating.
pub fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ControlPacket {
        ControlPacket {
            diag: Diagnostic::DETECTION_TIME_EXPIRED,
            state: SessionState::Up,
            poll: true,
            fin: false,
            cpi: false,
            demand: false,
            detect_mult: 3,
            my_discr: 0x0102_0304,
            your_discr: 0x0a0b_0c0d,
            desired_min_tx_us: 300_000,
            required_min_rx_us: 100_000,
            required_min_echo_rx_us: 0,
        }
    }

    #[test]
    fn encodes_the_rfc_layout() {
        let b = sample().encode();
        assert_eq!(
            b,
            [
                0x21, 0xe0, 3, 24, 1, 2, 3, 4, 0x0a, 0x0b, 0x0c, 0x0d, 0x00, 0x04, 0x93, 0xe0,
                0x00, 0x01, 0x86, 0xa0, 0, 0, 0, 0
            ]
        );
    }

    #[test]
    fn round_trips_every_state_and_flag() {
        for state in [SessionState::Down, SessionState::Init, SessionState::Up] {
            for (poll, fin) in [(false, false), (true, false), (false, true)] {
                let p = ControlPacket {
                    state,
                    poll,
                    fin,
                    cpi: fin,
                    ..sample()
                };
                assert_eq!(ControlPacket::decode(&p.encode()), Ok(p));
            }
        }
    }

    #[test]
    fn refuses_what_section_6_8_6_discards() {
        let good = sample().encode();
        let mut b = good;
        b[0] = 0x41;
        assert_eq!(ControlPacket::decode(&b), Err(PacketError::Version(2)));
        assert_eq!(
            ControlPacket::decode(&good[..20]),
            Err(PacketError::Short(20))
        );
        let mut b = good;
        b[3] = 30;
        assert!(matches!(
            ControlPacket::decode(&b),
            Err(PacketError::Length { .. })
        ));
        let mut b = good;
        b[2] = 0;
        assert_eq!(ControlPacket::decode(&b), Err(PacketError::ZeroMultiplier));
        let mut b = good;
        b[1] |= MULTIPOINT;
        assert_eq!(ControlPacket::decode(&b), Err(PacketError::Multipoint));
        let mut b = good;
        b[4..8].fill(0);
        assert_eq!(
            ControlPacket::decode(&b),
            Err(PacketError::ZeroMyDiscriminator)
        );
        let mut b = good;
        b[8..12].fill(0);
        assert_eq!(
            ControlPacket::decode(&b),
            Err(PacketError::ZeroYourDiscriminator(SessionState::Up))
        );
        let mut b = good;
        b[1] = (SessionState::Down as u8) << 6;
        b[8..12].fill(0);
        assert!(
            ControlPacket::decode(&b).is_ok(),
            "Down may not know the peer yet"
        );
        let mut b = [0u8; 26];
        b[..24].copy_from_slice(&good);
        b[1] |= AUTH;
        b[3] = 26;
        assert_eq!(ControlPacket::decode(&b), Err(PacketError::Authentication));
    }
}
