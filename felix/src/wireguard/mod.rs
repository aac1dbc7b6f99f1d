//! WireGuard between nodes (FelixConfiguration `wireguardEnabled`): pod traffic to another
//! node's pods leaves encrypted through the device `wg.margay`.
//!
//! How it is laid out, as Calico's felix lays it out:
//! - one device per node, holding the node's private key (generated when the device has none);
//!   its public key is published in the Node as `status.wireguardPublicKey`;
//! - one peer per other node that publishes a key: endpoint = the node's address and the
//!   listening port, allowed IPs = the prefixes routed to that node (its blocks and borrowed
//!   /32s, from the routes felix programs) plus the node's own address;
//! - a routing table of its own (default 1) with one route per such prefix through the device,
//!   and a `throw` route for prefixes of nodes that cannot be reached encrypted (no key, or a
//!   key two nodes claim), so they fall back to the main table;
//! - one rule, `not fwmark MARK/MARK lookup TABLE` at `wireguardRoutingRulePriority` (99):
//!   every packet consults the table except WireGuard's own UDP, which the device marks.
//!
//! Key rotation: when the Node's published key is removed (by an operator), felix generates a
//! new key pair and publishes the new public key; every other node replaces the peer.
//!
//! The pure parts are [`config`] (FelixConfiguration → [`Config`]), [`desired`] (nodes and
//! routes → peers and table routes) and the text formats of [`wg`]; the edges are [`wg::Wg`]
//! (Debian's `wg` tool) and [`keeper`] (the cluster-mode task that applies it all and repairs
//! drift).

pub mod config;
pub mod desired;
pub mod keeper;
pub mod wg;

pub use config::Config;
pub use desired::{Desired, NodeInfo, Peer};
