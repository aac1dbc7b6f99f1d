//! IPReservation (Calico's `projectcalico.org/v3` kind): addresses IPAM never hands out when
//! it assigns automatically, not by borrowing either. A pod asking for one of them by address
//! still gets it, as in Calico.

use super::{Spec, Validator};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// The IPReservation spec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpReservationSpec {
    /// Addresses (`10.0.0.5`) or networks (`10.0.0.0/28`).
    #[serde(default, rename = "reservedCIDRs")]
    pub reserved_cidrs: Vec<String>,
}

/// One entry as a network (a bare address is its /32 or /128).
pub fn parse_reserved(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .map(|n| n.trunc())
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

impl IpReservationSpec {
    /// The reserved networks (entries that do not parse are left out; validation reports them).
    pub fn nets(&self) -> Vec<IpNet> {
        self.reserved_cidrs
            .iter()
            .filter_map(|s| parse_reserved(s))
            .collect()
    }
}

impl Spec for IpReservationSpec {
    const KIND: &'static str = "IPReservation";
    const PLURAL: &'static str = "ipreservations";

    fn validate(&self, v: &mut Validator) {
        for (i, s) in self.reserved_cidrs.iter().enumerate() {
            if parse_reserved(s).is_none() {
                v.problem(
                    format!("spec.reservedCIDRs[{i}]"),
                    format!("'{s}' is neither an IP address nor a CIDR"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_networks_both_count() {
        let s = IpReservationSpec {
            reserved_cidrs: vec![
                "192.168.2.3".into(),
                "10.0.2.3/30".into(),
                "cafe:f00d::/123".into(),
            ],
        };
        let nets: Vec<String> = s.nets().iter().map(|n| n.to_string()).collect();
        assert_eq!(nets, ["192.168.2.3/32", "10.0.2.0/30", "cafe:f00d::/123"]);
        let mut v = Validator::default();
        IpReservationSpec {
            reserved_cidrs: vec!["nope".into()],
        }
        .validate(&mut v);
        assert!(!v.is_ok());
    }
}
