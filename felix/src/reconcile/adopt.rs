//! Taking over a node another agent wired (calico-node): the route protocols whose routes
//! felix may take over. A desired route whose destination holds a route of such a protocol
//! is replaced in place (one RTM_NEWROUTE with NLM_F_REPLACE: the destination is never
//! without a route) and is felix's from then on; a route of any other protocol stays a
//! conflict, left alone. Calico's VXLAN devices (`vxlan.calico`, and `vxlan-v6.calico` on an
//! IPv6 or dual-stack node) are taken over the same way ([`vxlan_device`]): each holds the VNI
//! and port felix's own of its family would need.

use std::fmt;
use std::str::FromStr;

/// calico-node's IPv4 VXLAN device (VNI 4096, port 4789: the same as felix's own).
pub const CALICO_VXLAN_DEVICE: &str = "vxlan.calico";
/// calico-node's IPv6 VXLAN device (the same VNI and port, an IPv6 local address).
pub const CALICO_VXLAN_V6_DEVICE: &str = "vxlan-v6.calico";
/// Calico felix's own route protocol (its VXLAN and tunnel routes).
pub const CALICO_FELIX_PROTOCOL: u8 = 80;

/// The VXLAN device of one family felix uses (pure): its own (`own`), unless that does not
/// exist while calico-node's (`calico`) does and felix adopts Calico felix's routes. The kernel
/// refuses a second device of a family with the same VNI and port, and a renamed device must
/// go down first: using `vxlan.calico` (`vxlan-v6.calico`) as it is keeps its routes,
/// neighbour and FDB entries, so no packet is lost.
pub fn vxlan_device(
    own: &'static str,
    own_exists: bool,
    calico: &'static str,
    calico_is_vxlan: bool,
    adopt: &ProtocolSet,
) -> &'static str {
    if !own_exists && calico_is_vxlan && adopt.contains(CALICO_FELIX_PROTOCOL) {
        calico
    } else {
        own
    }
}

/// Route protocols felix adopts routes of (empty by default: it adopts nothing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProtocolSet([u64; 4]);

/// What calico-node leaves on a node: its felix's device routes (`boot`, Calico's
/// `deviceRouteProtocol` default), its BIRD's routes and block blackholes (`bird`), and its
/// felix's tunnel routes (80).
pub const CALICO_PROTOCOLS: &str = "boot,bird,80";

impl ProtocolSet {
    pub fn insert(&mut self, p: u8) {
        self.0[usize::from(p / 64)] |= 1 << (p % 64);
    }

    pub fn contains(&self, p: u8) -> bool {
        self.0[usize::from(p / 64)] & (1 << (p % 64)) != 0
    }

    pub fn is_empty(&self) -> bool {
        self.0 == [0; 4]
    }
}

/// A protocol's number from its number or its iproute2 name.
fn protocol(s: &str) -> Option<u8> {
    Some(match s {
        "redirect" => 1,
        "kernel" => 2,
        "boot" => 3,
        "static" => 4,
        "bird" => 12,
        "calico" => return None,
        n => return n.parse().ok(),
    })
}

impl FromStr for ProtocolSet {
    type Err = String;

    /// `boot,bird,80`; `calico` stands for [`CALICO_PROTOCOLS`]; empty: none.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut set = ProtocolSet::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if part == "calico" {
                for p in CALICO_PROTOCOLS.split(',') {
                    set.insert(protocol(p).expect("known names"));
                }
                continue;
            }
            let p = protocol(part).ok_or_else(|| {
                format!("'{part}' is not a route protocol (a number, boot, static, bird or calico)")
            })?;
            set.insert(p);
        }
        Ok(set)
    }
}

impl fmt::Display for ProtocolSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let all: Vec<String> = (0..=255u8)
            .filter(|p| self.contains(*p))
            .map(|p| p.to_string())
            .collect();
        f.write_str(&all.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_parse() {
        let s: ProtocolSet = "calico".parse().unwrap();
        assert_eq!(s.to_string(), "3,12,80");
        let s: ProtocolSet = "static, 200".parse().unwrap();
        assert!(s.contains(4) && s.contains(200) && !s.contains(3));
        assert!("".parse::<ProtocolSet>().unwrap().is_empty());
        assert!("nonsense".parse::<ProtocolSet>().is_err());
        assert!("256".parse::<ProtocolSet>().is_err());
    }

    #[test]
    fn calicos_vxlan_device_is_used_only_when_adopting_and_ours_is_absent() {
        let calico: ProtocolSet = "calico".parse().unwrap();
        let none = ProtocolSet::default();
        let own = "vxlan.margay";
        let c = CALICO_VXLAN_DEVICE;
        assert_eq!(vxlan_device(own, false, c, true, &calico), c);
        assert_eq!(vxlan_device(own, true, c, true, &calico), own);
        assert_eq!(vxlan_device(own, false, c, false, &calico), own);
        assert_eq!(vxlan_device(own, false, c, true, &none), own);
        // The IPv6 device, the same way.
        let (own6, c6) = ("vxlan-v6.margay", CALICO_VXLAN_V6_DEVICE);
        assert_eq!(vxlan_device(own6, false, c6, true, &calico), c6);
        assert_eq!(vxlan_device(own6, true, c6, true, &calico), own6);
    }
}
