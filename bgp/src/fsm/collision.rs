//! Connection collision detection (RFC 4271 §6.8, RFC 6286 §2.3): when both speakers opened a
//! connection to each other, which one survives.

use std::net::Ipv4Addr;

/// Which side opened a TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// We connected to the peer.
    Outbound,
    /// The peer connected to us.
    Inbound,
}

impl Direction {
    pub fn other(self) -> Direction {
        match self {
            Direction::Outbound => Direction::Inbound,
            Direction::Inbound => Direction::Outbound,
        }
    }
}

/// Which of two colliding connections to keep: the one opened by the speaker with the higher
/// BGP Identifier. When both identifiers are equal (allowed between ASes by RFC 6286), the one
/// opened by the speaker with the higher AS number.
pub fn collision_winner(
    local_id: Ipv4Addr,
    remote_id: Ipv4Addr,
    local_as: u32,
    remote_as: u32,
) -> Direction {
    let local_higher = match u32::from(local_id).cmp(&u32::from(remote_id)) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => local_as > remote_as,
    };
    if local_higher {
        Direction::Outbound
    } else {
        Direction::Inbound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_outbound_when_local_identifier_is_higher() {
        let w = collision_winner(
            Ipv4Addr::new(10, 0, 0, 2),
            Ipv4Addr::new(10, 0, 0, 1),
            65000,
            65000,
        );
        assert_eq!(w, Direction::Outbound);
    }

    #[test]
    fn keeps_inbound_when_remote_identifier_is_higher() {
        let w = collision_winner(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            65000,
            65000,
        );
        assert_eq!(w, Direction::Inbound);
    }

    #[test]
    fn identifiers_compare_as_unsigned_integers() {
        // 128.0.0.1 > 1.0.0.1 as a 32-bit unsigned number.
        let w = collision_winner(Ipv4Addr::new(128, 0, 0, 1), Ipv4Addr::new(1, 0, 0, 1), 1, 2);
        assert_eq!(w, Direction::Outbound);
    }

    #[test]
    fn equal_identifiers_fall_back_to_the_higher_as() {
        let id = Ipv4Addr::new(10, 0, 0, 1);
        assert_eq!(collision_winner(id, id, 65002, 65001), Direction::Outbound);
        assert_eq!(collision_winner(id, id, 65001, 65002), Direction::Inbound);
    }

    #[test]
    fn both_ends_agree_on_the_same_connection() {
        let a = Ipv4Addr::new(192, 168, 1, 1);
        let b = Ipv4Addr::new(192, 168, 1, 9);
        // A keeps its inbound (opened by B) exactly when B keeps its outbound.
        let at_a = collision_winner(a, b, 65000, 65000);
        let at_b = collision_winner(b, a, 65000, 65000);
        assert_eq!(at_a, at_b.other());
    }
}
