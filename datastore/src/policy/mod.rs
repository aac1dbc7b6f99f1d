//! Calico's policy semantics, pure: which policies apply to an endpoint and in what order,
//! whether a rule matches a flow, and the verdict for a flow with the tier, policy and rule
//! that decided it. felix programs the data path from the same model; `margayctl policy
//! explain` prints its verdicts. docs/policy.md is the written semantics these follow.
//!
//! - [`k8s`]: Kubernetes NetworkPolicy → Calico NetworkPolicy `knp.default.<name>`.

pub mod k8s;
