//! margay-felix: the node agent's dataplane. A pure core computes the desired kernel state from
//! the model ([`model`] → [`desired`]); the [`reconcile`] loop makes the kernel match it through
//! the [`netlink`] handle, and [`health`] holds what /liveness, /readiness and /metrics serve.

pub mod agent;
pub mod desired;
pub mod health;
pub mod model;
pub mod nat;
pub mod netlink;
pub mod reconcile;
