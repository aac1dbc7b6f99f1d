//! Network policy in the data path: Calico's tiers, policies and rules, compiled for this node's
//! workloads ([`ir`]), rendered as felix's own nftables table ([`render`]), and kept in the
//! kernel by [`keeper::PolicyKeeper`] through incremental transactions ([`script`]) checked
//! against the kernel's listing ([`listing`]).
//!
//! Why a table of its own (`table inet margay-policy`) beside the NAT table (`table ip margay`):
//! the NAT table is small and replaced whole on every change, per family; the policy table is
//! large, changed in place element by element, and one `inet` table serves IPv4 and IPv6 with
//! the same chains. Apart, a failed or repaired policy transaction never touches NAT and the NAT
//! keeper's whole-table rewrite never drops a policy chain. Both are felix's; nothing else in
//! netfilter is read or written.

pub mod compile;
pub mod incremental;
pub mod ir;
pub mod keeper;
pub mod listing;
pub mod live;
pub mod render;
pub mod script;

pub use incremental::{Rendered, Touched};
pub use ir::PolicyIr;
pub use keeper::{PolicyError, PolicyKeeper, PolicyReport};
pub use live::{Changes, LivePolicy};
pub use render::{Table, render};

#[cfg(test)]
mod live_tests;
#[cfg(test)]
mod tests;
