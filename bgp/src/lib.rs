//! margay-bgp: a BGP-4 speaker for Kubernetes nodes.
//!
//! The crate is split along the seam between pure logic and I/O:
//! - [`wire`]: the message codec (RFC 4271, 4760, 6793, 4456, 1997, 8092, 2918, 7313, 4724, 8654,
//!   7606), pure, no sockets;
//! - [`fsm`]: the session state machine of RFC 4271 §8, pure: events and a clock in, actions out;
//! - [`rib`]: Adj-RIB-In, Loc-RIB, the decision process, route reflection and export, pure;
//! - [`transport`] and [`session`]: the I/O edges that drive one peer over TCP;
//! - [`policy`]: Calico's export policy, BGP filters and communities, pure;
//! - [`speaker`]: the task that owns the RIB and the sessions;
//! - [`config`], [`api`] (gRPC on a unix socket) and [`http`] (health and metrics): the daemon's
//!   faces.

pub mod api;
pub mod autodetect;
pub mod bfd;
pub mod cluster;
pub mod config;
pub mod fsm;
pub mod http;
pub mod policy;
pub mod rib;
pub mod session;
pub mod speaker;
pub mod transport;
pub mod wire;
