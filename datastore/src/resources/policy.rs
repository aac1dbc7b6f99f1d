//! The policy kinds in Calico's v3 shapes: NetworkPolicy (namespaced), GlobalNetworkPolicy,
//! Tier and Profile, with Calico's defaults (tier `default`, `types` from the rules present)
//! and its validation rules.

use super::rule::{PolicyType, Rule, check_rules, check_selector, default_types};
use super::{Spec, Validator};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The tier every policy without `tier` belongs to; it exists without being created.
pub const DEFAULT_TIER: &str = "default";
/// The order of the `default` tier (Calico's `DefaultTierOrder`); it cannot be changed.
pub const DEFAULT_TIER_ORDER: f64 = 1_000_000.0;
/// Names of NetworkPolicies converted from Kubernetes NetworkPolicies start with this; Calico
/// reserves it.
pub const K8S_POLICY_PREFIX: &str = "knp.default.";
/// Profiles named after a namespace (`kns.<namespace>`) carry its labels.
pub const NAMESPACE_PROFILE_PREFIX: &str = "kns.";

/// `NetworkPolicy.spec` (`projectcalico.org/v3`, namespaced).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicySpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tier: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<Rule>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub selector: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<PolicyType>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_account_selector: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub performance_hints: Vec<String>,
}

/// `GlobalNetworkPolicy.spec`: a NetworkPolicy for every namespace, with a namespace selector
/// and the host-endpoint options.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GlobalNetworkPolicySpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tier: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<Rule>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub selector: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<PolicyType>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub do_not_track: bool,
    #[serde(
        default,
        rename = "preDNAT",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub pre_dnat: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub apply_on_forward: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_account_selector: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace_selector: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub performance_hints: Vec<String>,
}

/// What a tier does with a packet that reached its end after a policy of the tier selected
/// the endpoint (Calico 3.30's `defaultAction`; `Deny` when left out).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TierDefaultAction {
    #[default]
    Deny,
    Pass,
}

/// `Tier.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TierSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_action: Option<TierDefaultAction>,
}

/// `Profile.spec`: rules applied to endpoints no policy decided for, and labels the endpoints
/// listing the profile inherit. A `kns.<namespace>` profile is the namespace: its
/// `labelsToApply` are `pcns.<label>`s and its rules, when left out, allow everything (as the
/// profile Calico makes from a Kubernetes Namespace).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProfileSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Vec<Rule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Vec<Rule>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels_to_apply: BTreeMap<String, String>,
}

fn check_order(v: &mut Validator, order: Option<f64>) {
    if order.is_some_and(|o| !o.is_finite()) {
        v.problem("spec.order", "must be a finite number");
    }
}

fn check_tier_name(v: &mut Validator, tier: &str) {
    if !tier.is_empty() {
        super::validate::name(v, "spec.tier", tier);
    }
}

fn check_hints(v: &mut Validator, hints: &[String]) {
    for (i, h) in hints.iter().enumerate() {
        if h != "AssumeNeededOnEveryNode" {
            v.problem(
                format!("spec.performanceHints[{i}]"),
                format!("'{h}' is not AssumeNeededOnEveryNode"),
            );
        }
    }
}

/// The fields NetworkPolicy and GlobalNetworkPolicy share, borrowed for checking.
struct Common<'a> {
    tier: &'a str,
    order: Option<f64>,
    hints: &'a [String],
    selector: &'a str,
    sa_selector: &'a str,
    ingress: &'a [Rule],
    egress: &'a [Rule],
    types: &'a [PolicyType],
}

/// Calico's defaults: tier `default`, `types` from the rules present.
fn fill_defaults(
    tier: &mut String,
    types: &mut Vec<PolicyType>,
    ingress: &[Rule],
    egress: &[Rule],
) {
    if tier.is_empty() {
        *tier = DEFAULT_TIER.to_string();
    }
    if types.is_empty() {
        *types = default_types(ingress, egress);
    }
}

fn check_common(v: &mut Validator, c: Common<'_>) {
    check_tier_name(v, c.tier);
    check_order(v, c.order);
    check_hints(v, c.hints);
    check_selector(v, "spec.selector", &Some(c.selector.to_string()));
    check_selector(
        v,
        "spec.serviceAccountSelector",
        &Some(c.sa_selector.to_string()),
    );
    check_rules(v, "spec.ingress", c.ingress);
    check_rules(v, "spec.egress", c.egress);
    let mut seen = Vec::new();
    for t in c.types {
        if seen.contains(t) {
            v.problem("spec.types", format!("{t:?} is listed twice"));
        }
        seen.push(*t);
    }
    for (rules, t, field) in [
        (c.ingress, PolicyType::Ingress, "spec.ingress"),
        (c.egress, PolicyType::Egress, "spec.egress"),
    ] {
        if !rules.is_empty() && !c.types.is_empty() && !c.types.contains(&t) {
            v.problem(field, format!("rules are set but spec.types lacks {t:?}"));
        }
    }
}

impl Spec for NetworkPolicySpec {
    const KIND: &'static str = "NetworkPolicy";
    const PLURAL: &'static str = "networkpolicies";
    const NAMESPACED: bool = true;

    fn apply_defaults(&mut self) {
        fill_defaults(&mut self.tier, &mut self.types, &self.ingress, &self.egress);
    }

    fn validate(&self, v: &mut Validator) {
        check_common(
            v,
            Common {
                tier: &self.tier,
                order: self.order,
                hints: &self.performance_hints,
                selector: &self.selector,
                sa_selector: &self.service_account_selector,
                ingress: &self.ingress,
                egress: &self.egress,
                types: &self.types,
            },
        );
    }

    fn validate_name(&self, name: &str, v: &mut Validator) {
        if name.starts_with(K8S_POLICY_PREFIX) {
            v.problem(
                "metadata.name",
                format!(
                    "names starting with '{K8S_POLICY_PREFIX}' are reserved for Kubernetes \
                     NetworkPolicies"
                ),
            );
        }
    }
}

impl Spec for GlobalNetworkPolicySpec {
    const KIND: &'static str = "GlobalNetworkPolicy";
    const PLURAL: &'static str = "globalnetworkpolicies";

    fn apply_defaults(&mut self) {
        fill_defaults(&mut self.tier, &mut self.types, &self.ingress, &self.egress);
    }

    fn validate(&self, v: &mut Validator) {
        check_common(
            v,
            Common {
                tier: &self.tier,
                order: self.order,
                hints: &self.performance_hints,
                selector: &self.selector,
                sa_selector: &self.service_account_selector,
                ingress: &self.ingress,
                egress: &self.egress,
                types: &self.types,
            },
        );
        check_selector(
            v,
            "spec.namespaceSelector",
            &Some(self.namespace_selector.clone()),
        );
        // Calico's rules for the host-endpoint options.
        if self.do_not_track && self.pre_dnat {
            v.problem(
                "spec.preDNAT",
                "cannot be set together with spec.doNotTrack",
            );
        }
        if (self.do_not_track || self.pre_dnat) && !self.apply_on_forward {
            v.problem(
                "spec.applyOnForward",
                "must be true when spec.doNotTrack or spec.preDNAT is set",
            );
        }
        if self.pre_dnat && (!self.egress.is_empty() || self.types.contains(&PolicyType::Egress)) {
            v.problem("spec.egress", "a preDNAT policy has ingress rules only");
        }
    }
}

impl Spec for TierSpec {
    const KIND: &'static str = "Tier";
    const PLURAL: &'static str = "tiers";

    fn validate(&self, v: &mut Validator) {
        check_order(v, self.order);
    }

    fn validate_name(&self, name: &str, v: &mut Validator) {
        if name == DEFAULT_TIER && self.order.is_some_and(|o| o != DEFAULT_TIER_ORDER) {
            v.problem(
                "spec.order",
                format!("the default tier's order is {DEFAULT_TIER_ORDER} and cannot change"),
            );
        }
    }
}

impl Spec for ProfileSpec {
    const KIND: &'static str = "Profile";
    const PLURAL: &'static str = "profiles";

    fn validate(&self, v: &mut Validator) {
        check_rules(
            v,
            "spec.ingress",
            self.ingress.as_deref().unwrap_or_default(),
        );
        check_rules(v, "spec.egress", self.egress.as_deref().unwrap_or_default());
    }
}

#[cfg(test)]
mod tests {
    use crate::resources::*;

    fn one(text: &str) -> AnyResource {
        let mut rs = parse_documents(text).unwrap();
        assert_eq!(rs.len(), 1);
        rs.remove(0)
    }

    fn err(text: &str) -> String {
        parse_documents(text).unwrap_err().to_string()
    }

    #[test]
    fn calico_network_policy_parses_with_every_rule_field_and_defaults() {
        let r = one(r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web, namespace: prod}
spec:
  order: 100
  selector: app == 'web'
  serviceAccountSelector: role == 'fe'
  ingress:
    - action: Allow
      protocol: TCP
      ipVersion: 4
      source:
        selector: app == 'client'
        notSelector: bad == 'yes'
        namespaceSelector: team == 'a'
        nets: [10.0.0.0/8]
        notNets: [10.1.0.0/16]
        serviceAccounts: {names: [fe], selector: "has(x)"}
        ports: [1024:65535]
        notPorts: [2000]
      destination: {ports: [80, http, "8080:8090"], notPorts: ["81"]}
    - action: Deny
      protocol: ICMP
      icmp: {type: 8, code: 0}
    - action: Log
      notProtocol: 17
      notICMP: {type: 3}
      protocol: ICMP
    - {action: Pass}
"#);
        let AnyResource::NetworkPolicy(p) = r else {
            panic!()
        };
        assert_eq!(p.spec.tier, "default", "tier defaults to default");
        assert_eq!(p.spec.types, vec![PolicyType::Ingress]);
        let dst = &p.spec.ingress[0].destination;
        assert_eq!(
            dst.ports
                .iter()
                .map(|p| p.parse().unwrap())
                .collect::<Vec<_>>(),
            vec![
                PortMatch::Range(80, 80),
                PortMatch::Named("http".into()),
                PortMatch::Range(8080, 8090)
            ]
        );
        assert_eq!(
            p.spec.ingress[2].not_protocol.as_ref().unwrap().number(),
            Some(17)
        );
    }

    #[test]
    fn types_default_from_the_rules_present() {
        let doc = |spec: &str| {
            format!(
                "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: g}}\nspec: {spec}\n"
            )
        };
        let types = |spec: &str| match one(&doc(spec)) {
            AnyResource::GlobalNetworkPolicy(p) => p.spec.types,
            _ => panic!(),
        };
        assert_eq!(types("{}"), vec![PolicyType::Ingress]);
        assert_eq!(
            types("{egress: [{action: Allow}]}"),
            vec![PolicyType::Egress]
        );
        assert_eq!(
            types("{ingress: [{action: Deny}], egress: [{action: Allow}]}"),
            vec![PolicyType::Ingress, PolicyType::Egress]
        );
        assert_eq!(types("{types: [Egress]}"), vec![PolicyType::Egress]);
    }

    #[test]
    fn bad_rules_are_reported_with_their_paths() {
        let e = err(r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: g}
spec:
  selector: "app =="
  ingress:
    - action: Allow
      destination: {ports: [80]}
    - action: Allow
      protocol: TCP
      icmp: {type: 8}
      source: {nets: [10.0.0.0/33], ports: ["90:80"]}
    - {action: Allow, protocol: bogus, ipVersion: 5}
  egress: [{action: Allow}]
  types: [Ingress]
"#);
        for want in [
            "spec.selector: 'app ==' is not a valid selector",
            "spec.ingress[0].destination.ports: need protocol TCP, UDP, SCTP or UDPLite",
            "spec.ingress[1].icmp: needs protocol ICMP or ICMPv6",
            "spec.ingress[1].source.nets[0]: '10.0.0.0/33' is not an IP address or CIDR",
            "spec.ingress[1].source.ports[0]: '90:80' is not a port",
            "spec.ingress[2].ipVersion: must be 4 or 6",
            "spec.ingress[2].protocol: 'bogus' is not a protocol",
            "spec.egress: rules are set but spec.types lacks Egress",
        ] {
            assert!(e.contains(want), "{want}\n in {e}");
        }
        let e = err(
            "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p, namespace: a}\nspec: {ingress: [{action: Reject}]}\n",
        );
        assert!(
            e.contains("spec.ingress[0].action: unknown variant `Reject`"),
            "{e}"
        );
    }

    #[test]
    fn host_endpoint_options_follow_calicos_rules() {
        let e = err(
            "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: g}\nspec: {preDNAT: true, doNotTrack: true, egress: [{action: Allow}]}\n",
        );
        assert!(
            e.contains("spec.preDNAT: cannot be set together with spec.doNotTrack"),
            "{e}"
        );
        assert!(e.contains("spec.applyOnForward: must be true"), "{e}");
        assert!(
            e.contains("spec.egress: a preDNAT policy has ingress rules only"),
            "{e}"
        );
    }

    #[test]
    fn namespaced_policy_needs_a_namespace_and_knp_names_are_reserved() {
        let e = err(
            "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: knp.default.x, namespace: a}\n",
        );
        assert!(
            e.contains("metadata.name: names starting with 'knp.default.' are reserved"),
            "{e}"
        );
        let e = err("apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: x}\n");
        assert!(e.contains("metadata.namespace: is required"), "{e}");
    }

    #[test]
    fn tiers_and_profiles_parse_and_default_tier_order_is_fixed() {
        let r = one(
            "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: security}\nspec: {order: 100, defaultAction: Pass}\n",
        );
        let AnyResource::Tier(t) = r else { panic!() };
        assert_eq!(t.spec.order, Some(100.0));
        assert_eq!(t.spec.default_action, Some(TierDefaultAction::Pass));
        let e = err(
            "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: default}\nspec: {order: 5}\n",
        );
        assert!(e.contains("the default tier's order is 1000000"), "{e}");
        let r = one(
            "apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {name: kns.prod}\nspec: {labelsToApply: {pcns.team: a}}\n",
        );
        let AnyResource::Profile(p) = r else { panic!() };
        assert_eq!(
            p.spec.ingress, None,
            "left out: the namespace profile allows"
        );
        assert_eq!(p.spec.labels_to_apply["pcns.team"], "a");
    }

    #[test]
    fn kubernetes_network_policy_is_its_own_kind_by_api_version() {
        let r = one(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-web, namespace: prod}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress, Egress]
  ingress:
    - from:
        - namespaceSelector: {matchLabels: {team: a}}
          podSelector: {matchExpressions: [{key: role, operator: In, values: [fe]}]}
        - ipBlock: {cidr: 172.17.0.0/16, except: [172.17.1.0/24]}
      ports: [{protocol: TCP, port: 80}, {port: 8000, endPort: 8080}, {port: http}]
  egress:
    - to: [{ipBlock: {cidr: 10.0.0.0/24}}]
"#);
        assert_eq!(r.info().plural, "k8snetworkpolicies");
        let AnyResource::K8sNetworkPolicy(p) = &r else {
            panic!()
        };
        assert_eq!(p.spec.ingress[0].from.len(), 2);
        assert_eq!(r.to_value()["apiVersion"], "networking.k8s.io/v1");
        let e = err(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad, namespace: prod}
spec:
  podSelector: {matchExpressions: [{key: a, operator: Is}]}
  ingress:
    - from: [{ipBlock: {cidr: 10.0.0.0/24, except: [10.1.0.0/24]}}, {}]
      ports: [{protocol: ICMP}, {port: 90, endPort: 80}]
"#);
        for want in [
            "spec.podSelector.matchExpressions[0].operator: 'Is' is not In",
            "spec.ingress[0].from[0].ipBlock.except[0]: '10.1.0.0/24' is not inside",
            "spec.ingress[0].from[1]: needs one of podSelector",
            "spec.ingress[0].ports[0].protocol: 'ICMP' is not TCP, UDP or SCTP",
            "spec.ingress[0].ports[1].endPort: must be at least port",
        ] {
            assert!(e.contains(want), "{want}\n in {e}");
        }
        let e = err(
            "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: t}\nspec: {podSelector: {}}\n",
        );
        assert!(e.contains("unknown field `podSelector`"), "{e}");
    }

    #[test]
    fn kind_names_resolve_to_the_policy_kinds() {
        assert_eq!(
            KindInfo::lookup("networkpolicy").unwrap().plural,
            "networkpolicies"
        );
        assert_eq!(
            KindInfo::lookup("gnp").unwrap().plural,
            "globalnetworkpolicies"
        );
        assert_eq!(KindInfo::lookup("tiers").unwrap().plural, "tiers");
        assert_eq!(KindInfo::lookup("Profile").unwrap().plural, "profiles");
        assert_eq!(
            KindInfo::lookup("networkpolicies.networking.k8s.io")
                .unwrap()
                .plural,
            "k8snetworkpolicies"
        );
    }
}
