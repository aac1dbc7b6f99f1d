//! Communities attached by prefix (Calico's `prefixAdvertisements`): standard `aa:nn`
//! (RFC 1997) and large `aa:nn:mm` (RFC 8092) values, added to every announced route inside a
//! cidr, each value once.

use crate::wire::LargeCommunity;
use ipnet::IpNet;

/// One community value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Community {
    Standard(u32),
    Large(LargeCommunity),
}

/// Why a community was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a community: use aa:nn (each 0-65535) or aa:nn:mm (each 0-4294967295)")]
pub struct BadCommunity(pub String);

impl std::str::FromStr for Community {
    type Err = BadCommunity;

    fn from_str(s: &str) -> Result<Community, BadCommunity> {
        let bad = || BadCommunity(s.to_string());
        let parts: Vec<&str> = s.split(':').collect();
        match parts.as_slice() {
            [a, n] => {
                let a: u16 = a.trim().parse().map_err(|_| bad())?;
                let n: u16 = n.trim().parse().map_err(|_| bad())?;
                Ok(Community::Standard((u32::from(a) << 16) | u32::from(n)))
            }
            [a, n, m] => {
                let p = |v: &str| v.trim().parse::<u32>().map_err(|_| bad());
                Ok(Community::Large(LargeCommunity {
                    global_admin: p(a)?,
                    local_data1: p(n)?,
                    local_data2: p(m)?,
                }))
            }
            _ => Err(bad()),
        }
    }
}

/// Communities to add to routes inside `cidr`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Advertisement {
    pub cidr: IpNet,
    pub communities: Vec<Community>,
}

/// The communities one route gets, standard and large apart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Communities {
    pub standard: Vec<u32>,
    pub large: Vec<LargeCommunity>,
}

impl Communities {
    pub fn is_empty(&self) -> bool {
        self.standard.is_empty() && self.large.is_empty()
    }

    /// Appends the values not present yet.
    pub fn add_to(&self, standard: &mut Vec<u32>, large: &mut Vec<LargeCommunity>) {
        for c in &self.standard {
            if !standard.contains(c) {
                standard.push(*c);
            }
        }
        for c in &self.large {
            if !large.contains(c) {
                large.push(*c);
            }
        }
    }
}

/// Indices of the advertisements whose cidr holds `prefix`: routes with equal indices get the
/// same communities.
pub fn matching(advertise: &[Advertisement], prefix: &IpNet) -> Vec<u16> {
    advertise
        .iter()
        .enumerate()
        .filter(|(_, a)| a.cidr.contains(prefix))
        .map(|(i, _)| i as u16)
        .collect()
}

/// The communities of the advertisements listed by [`matching`].
pub fn collect(advertise: &[Advertisement], indices: &[u16]) -> Communities {
    let mut out = Communities::default();
    for &i in indices {
        for c in advertise
            .get(usize::from(i))
            .map_or(&[][..], |a| &a.communities)
        {
            match c {
                Community::Standard(v) if !out.standard.contains(v) => out.standard.push(*v),
                Community::Large(v) if !out.large.contains(v) => out.large.push(*v),
                _ => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_standard_and_large_communities() {
        assert_eq!(
            "65000:100".parse::<Community>(),
            Ok(Community::Standard((65000 << 16) | 100))
        );
        assert_eq!(
            "4200000000:1:2".parse::<Community>(),
            Ok(Community::Large(LargeCommunity {
                global_admin: 4_200_000_000,
                local_data1: 1,
                local_data2: 2
            }))
        );
        for bad in ["65536:1", "1", "a:b", "1:2:3:4", "1:-2", ""] {
            assert!(bad.parse::<Community>().is_err(), "{bad}");
        }
    }

    #[test]
    fn every_covering_advertisement_adds_its_communities_once() {
        let adv = vec![
            Advertisement {
                cidr: "10.0.0.0/8".parse().unwrap(),
                communities: vec!["1:1".parse().unwrap(), "1:2:3".parse().unwrap()],
            },
            Advertisement {
                cidr: "10.1.0.0/16".parse().unwrap(),
                communities: vec!["1:1".parse().unwrap(), "2:2".parse().unwrap()],
            },
        ];
        let p: IpNet = "10.1.2.0/24".parse().unwrap();
        let idx = matching(&adv, &p);
        assert_eq!(idx, vec![0, 1]);
        let c = collect(&adv, &idx);
        assert_eq!(c.standard, vec![(1 << 16) | 1, (2 << 16) | 2]);
        assert_eq!(c.large.len(), 1);
        assert!(matching(&adv, &"11.0.0.0/8".parse().unwrap()).is_empty());
        let (mut std, mut large) = (vec![(1 << 16) | 1], vec![]);
        c.add_to(&mut std, &mut large);
        assert_eq!(std, vec![(1 << 16) | 1, (2 << 16) | 2]);
        assert_eq!(large.len(), 1);
    }
}
