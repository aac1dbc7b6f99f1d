//! margay-bgp: a BGP-4 speaker for Kubernetes nodes.

pub mod config;
pub mod fsm;
pub mod rib;
pub mod session;
pub mod transport;
pub mod wire;
