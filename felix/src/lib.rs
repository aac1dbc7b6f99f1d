//! margay-felix: the node agent's dataplane. A pure core computes the desired kernel state from
//! the model ([`model`] → [`desired`]); the [`reconcile`] loop makes the kernel match it through
//! the [`netlink`] handle, and [`health`] holds what /liveness, /readiness and /metrics serve.
//! In [`cluster`] mode the model is assembled from the datastore and bgpd; standalone, it is
//! read from a file.

pub mod agent;
pub mod changelog;
pub mod cluster;
pub mod desired;
pub mod endpoints;
pub mod health;
pub mod incremental;
pub mod model;
pub mod nat;
pub mod netlink;
pub mod nftlib;
pub mod policy;
pub mod reconcile;
pub mod settings;
#[cfg(test)]
mod test_rng;
pub mod wireguard;
