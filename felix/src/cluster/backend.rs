//! The networking backend (calico-node's `CALICO_NETWORKING_BACKEND`): `bird` runs margay-bgpd
//! beside felix and takes remote routes from BGP; `vxlan` and `none` run no BGP at all: felix
//! registers the Node itself and programs every remote block of a VXLAN pool from IPAM's block
//! affinities and the Nodes' VTEPs ([`super::ipam_routes`]), as Calico's felix does.

use std::fmt;
use std::str::FromStr;

/// The environment variable margay reads first.
pub const MARGAY_ENV: &str = "MARGAY_NETWORKING_BACKEND";
/// calico-node's variable, read when margay's is unset.
pub const CALICO_ENV: &str = "CALICO_NETWORKING_BACKEND";

/// Where remote routes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// margay-bgpd (Calico's BIRD): routes learned over BGP.
    #[default]
    Bird,
    /// No BGP: VXLAN routes from IPAM and the Nodes.
    Vxlan,
    /// No BGP (Calico's policy-only name); felix programs what it would with `vxlan`.
    None,
}

/// A backend name that is not one of the three.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("networking backend {0:?} is not bird, vxlan or none")]
pub struct BadBackend(pub String);

impl FromStr for Backend {
    type Err = BadBackend;
    fn from_str(s: &str) -> Result<Backend, BadBackend> {
        match s.trim().to_ascii_lowercase().as_str() {
            "bird" | "" => Ok(Backend::Bird),
            "vxlan" => Ok(Backend::Vxlan),
            "none" => Ok(Backend::None),
            _ => Err(BadBackend(s.to_string())),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Bird => "bird",
            Backend::Vxlan => "vxlan",
            Backend::None => "none",
        })
    }
}

impl Backend {
    /// Whether margay-bgpd runs and supplies the remote routes.
    pub fn uses_bgpd(self) -> bool {
        self == Backend::Bird
    }

    /// The backend named by `margay` (MARGAY_NETWORKING_BACKEND or the flag), else by `calico`
    /// (CALICO_NETWORKING_BACKEND), else `bird`.
    pub fn choose(margay: Option<&str>, calico: Option<&str>) -> Result<Backend, BadBackend> {
        match margay.filter(|s| !s.trim().is_empty()).or(calico) {
            Some(s) => s.parse(),
            None => Ok(Backend::Bird),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margay_variable_wins_over_calicos_and_bird_is_the_default() {
        assert_eq!(Backend::choose(None, None), Ok(Backend::Bird));
        assert_eq!(Backend::choose(None, Some("vxlan")), Ok(Backend::Vxlan));
        assert_eq!(
            Backend::choose(Some("bird"), Some("vxlan")),
            Ok(Backend::Bird)
        );
        assert_eq!(Backend::choose(Some(""), Some("none")), Ok(Backend::None));
        assert_eq!(Backend::choose(Some("VXLAN"), None), Ok(Backend::Vxlan));
        assert!(Backend::choose(Some("gobgp"), None).is_err());
        assert!(!Backend::Vxlan.uses_bgpd() && Backend::Bird.uses_bgpd());
    }
}
