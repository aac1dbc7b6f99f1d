//! Prefixes on the wire (RFC 4271 §4.3, RFC 4760 §5): the NLRI and Withdrawn Routes fields and
//! the NLRI inside MP_REACH_NLRI / MP_UNREACH_NLRI, for IPv4 and IPv6.
//!
//! ```text
//! +---------------------------+
//! |   Length (1 octet)        |
//! +---------------------------+
//! |   Prefix (variable)       |
//! +---------------------------+
//! ```
//!
//! Length is in bits; Prefix holds just enough octets for them, and any bits past Length are
//! ignored (cleared here, so equal routes compare equal).

use super::family::{Family, Prefix, Prefix4, Prefix6};
use bytes::{BufMut, BytesMut};
use std::net::{Ipv4Addr, Ipv6Addr};

/// Why a prefix field could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NlriError {
    #[error("prefix length {0} too long for the family")]
    LengthTooLong(u8),
    #[error("prefix truncated")]
    Truncated,
}

/// Splits one prefix off `buf`: (length in bits, address octets zero-padded and masked, rest).
#[inline]
fn split_prefix<const N: usize>(buf: &[u8]) -> Result<(u8, [u8; N], &[u8]), NlriError> {
    let (&bits, rest) = buf.split_first().ok_or(NlriError::Truncated)?;
    if bits as usize > N * 8 {
        return Err(NlriError::LengthTooLong(bits));
    }
    let octets = (bits as usize).div_ceil(8);
    if rest.len() < octets {
        return Err(NlriError::Truncated);
    }
    let mut addr = [0u8; N];
    addr[..octets].copy_from_slice(&rest[..octets]);
    let spare = (octets * 8 - bits as usize) as u32;
    if spare > 0 {
        addr[octets - 1] &= 0xffu8.checked_shl(spare).unwrap_or(0);
    }
    Ok((bits, addr, &rest[octets..]))
}

/// Reads a field of IPv4 prefixes into `out`.
pub fn decode_v4(mut buf: &[u8], out: &mut Vec<Prefix4>) -> Result<(), NlriError> {
    while !buf.is_empty() {
        let (bits, addr, rest) = split_prefix::<4>(buf)?;
        let p =
            Prefix4::new(Ipv4Addr::from(addr), bits).map_err(|_| NlriError::LengthTooLong(bits))?;
        out.push(p);
        buf = rest;
    }
    Ok(())
}

/// Reads a field of prefixes of `family` into `out`.
pub fn decode(family: Family, mut buf: &[u8], out: &mut Vec<Prefix>) -> Result<(), NlriError> {
    while !buf.is_empty() {
        match family {
            Family::Ipv4Unicast => {
                let (bits, addr, rest) = split_prefix::<4>(buf)?;
                let p = Prefix4::new(Ipv4Addr::from(addr), bits)
                    .map_err(|_| NlriError::LengthTooLong(bits))?;
                out.push(Prefix::V4(p));
                buf = rest;
            }
            Family::Ipv6Unicast => {
                let (bits, addr, rest) = split_prefix::<16>(buf)?;
                let p = Prefix6::new(Ipv6Addr::from(addr), bits)
                    .map_err(|_| NlriError::LengthTooLong(bits))?;
                out.push(Prefix::V6(p));
                buf = rest;
            }
        }
    }
    Ok(())
}

/// Octets one prefix takes on the wire.
#[inline]
pub fn encoded_len(p: &Prefix) -> usize {
    1 + (p.prefix_len() as usize).div_ceil(8)
}

/// Writes one IPv4 prefix.
#[inline]
pub fn encode_v4(p: &Prefix4, out: &mut BytesMut) {
    let bits = p.prefix_len();
    out.put_u8(bits);
    out.put_slice(&p.network().octets()[..(bits as usize).div_ceil(8)]);
}

/// Writes one prefix of either family.
#[inline]
pub fn encode(p: &Prefix, out: &mut BytesMut) {
    match p {
        Prefix::V4(p) => encode_v4(p, out),
        Prefix::V6(p) => {
            let bits = p.prefix_len();
            out.put_u8(bits);
            out.put_slice(&p.network().octets()[..(bits as usize).div_ceil(8)]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_ipv4_prefixes_and_clears_host_bits() {
        let mut out = Vec::new();
        decode_v4(&[0, 8, 10, 25, 10, 1, 2, 0xff, 32, 1, 2, 3, 4], &mut out).unwrap();
        let want: Vec<Prefix4> = ["0.0.0.0/0", "10.0.0.0/8", "10.1.2.128/25", "1.2.3.4/32"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(out, want);
    }

    #[test]
    fn rejects_ipv4_prefix_longer_than_32() {
        let mut out = Vec::new();
        assert_eq!(
            decode_v4(&[33, 1, 2, 3, 4, 5], &mut out),
            Err(NlriError::LengthTooLong(33))
        );
    }

    #[test]
    fn rejects_truncated_prefix() {
        let mut out = Vec::new();
        assert_eq!(decode_v4(&[24, 10, 0], &mut out), Err(NlriError::Truncated));
        assert_eq!(
            decode(Family::Ipv6Unicast, &[64, 0xfd, 0, 0, 0], &mut Vec::new()),
            Err(NlriError::Truncated)
        );
    }

    #[test]
    fn rejects_ipv6_prefix_longer_than_128() {
        let mut buf = vec![129];
        buf.extend_from_slice(&[0xff; 17]);
        assert_eq!(
            decode(Family::Ipv6Unicast, &buf, &mut Vec::new()),
            Err(NlriError::LengthTooLong(129))
        );
    }

    #[test]
    fn round_trips_ipv6_prefixes() {
        let prefixes: Vec<Prefix> = [
            "fd00:200::/64",
            "::/0",
            "fd00:200:2::5/128",
            "2001:db8::/33",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let mut buf = BytesMut::new();
        for p in &prefixes {
            encode(p, &mut buf);
        }
        assert_eq!(buf.len(), prefixes.iter().map(encoded_len).sum::<usize>());
        let mut out = Vec::new();
        decode(Family::Ipv6Unicast, &buf, &mut out).unwrap();
        assert_eq!(out, prefixes);
    }
}
