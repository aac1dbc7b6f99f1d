//! The cross-process suites' own helpers, on top of the lab ([`margay_lab`]): a raw BGP peer that
//! sends exactly the bytes a test gives it ([`RawPeer`]), and the rig that puts margay-bgpd
//! between a well-behaved BIRD and such raw peers ([`RawRig`]).

pub mod bfd;
pub mod ecmp;
pub mod raw_rig;
pub mod rawpeer;

pub use raw_rig::{RIG_AS, RawRig};
pub use rawpeer::{RawNotification, RawPeer, Reply};
