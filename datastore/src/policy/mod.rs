//! Calico's policy semantics, pure: which policies apply to an endpoint and in what order,
//! whether a rule matches a flow, and the verdict for a flow with the tier, policy and rule
//! that decided it. felix programs the data path from the same model; `margayctl policy
//! explain` prints its verdicts. docs/policy.md is the written semantics these follow.
//!
//! - [`endpoint`]: an endpoint's labels (own, implicit, inherited from its profiles).
//! - [`k8s`]: Kubernetes NetworkPolicy → Calico NetworkPolicy `knp.default.<name>`.
//! - [`compile`]: policies and rules read, namespace scoping folded into selectors.
//! - [`matching`]: whether a rule matches a flow.
//! - [`model`]: tiers, ordering, the evaluator and its explanation.
//! - [`load`]: reading everything the model needs from the datastore (the I/O edge).
//!
//! For a data path: [`load::load`] then [`PolicyModel::build`]; per local endpoint and
//! direction, [`PolicyModel::tiers_for`] gives the tiers and policies in order; each
//! [`CompiledRule`]'s `source`/`destination` [`Entity`] has the nets, the selectors with
//! namespace scoping already folded in (their members: [`PolicyModel::selected_addresses`]),
//! and the ports (named ones: [`PolicyModel::named_port_members`]); after the tiers, the
//! endpoint's `profiles` ([`PolicyModel::profiles`]). [`PolicyModel::evaluate`] is the oracle
//! to test a data path against. Rebuild on any change of [`load::watched_kinds`]; call
//! `log_not_acted_once` on each policy resource read.

pub mod compile;
pub mod endpoint;
pub mod k8s;
pub mod load;
pub mod matching;
pub mod model;

pub use compile::{CompileError, CompiledPolicy, CompiledRule, Entity, PolicyId, PolicyKind};
pub use endpoint::Endpoint;
pub use matching::{Flow, FlowEnd, rule_matches};
pub use model::{
    AppliedTier, DecidedBy, Decision, EndpointToHostAction, PolicyConfig, PolicyModel,
    PolicyResources, RuleRef, Step, TierInfo, Verdict,
};

#[cfg(test)]
mod tests;
