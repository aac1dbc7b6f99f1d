//! The semantics of docs/policy.md, one test per statement, on endpoints and policies written
//! as an operator writes them.

use super::*;
use crate::resources::{
    AnyResource, EndpointPort, ObjectMeta, PolicyType, Protocol, Resource, RuleAction,
    WorkloadEndpointSpec, parse_documents,
};
use std::net::IpAddr;

const N1: &str = "192.168.0.1";
const N2: &str = "192.168.0.2";

/// A pod: namespace, name, node, address, labels.
fn pod(ns: &str, name: &str, node: &str, ip: &str, labels: &[(&str, &str)]) -> AnyResource {
    let mut w = Resource::new(
        format!("{node}-k8s-{name}-eth0"),
        WorkloadEndpointSpec {
            orchestrator: Some("k8s".into()),
            node: node.into(),
            pod: Some(name.into()),
            ip_networks: vec![format!("{ip}/32")],
            interface_name: format!("cali{name}"),
            ..Default::default()
        },
    );
    w.metadata = ObjectMeta {
        name: w.metadata.name.clone(),
        namespace: Some(ns.into()),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    };
    AnyResource::WorkloadEndpoint(w)
}

/// The standard cast: prod/web (app=web, n1, 10.0.0.1), prod/client (app=client, n1,
/// 10.0.0.2), dev/client (app=client, n2, 10.0.1.2), dev/db (app=db, n2, 10.0.1.3).
fn cast() -> Vec<AnyResource> {
    vec![
        pod("prod", "web", "n1", "10.0.0.1", &[("app", "web")]),
        pod("prod", "client", "n1", "10.0.0.2", &[("app", "client")]),
        pod("dev", "client", "n2", "10.0.1.2", &[("app", "client")]),
        pod("dev", "db", "n2", "10.0.1.3", &[("app", "db")]),
    ]
}

/// The cast, with pod `i` (in `cast`'s order) declaring one named TCP port.
fn cast_with_tcp_port(i: usize, name: &str, port: u16) -> Vec<AnyResource> {
    let mut pods = cast();
    if let AnyResource::WorkloadEndpoint(w) = &mut pods[i] {
        w.spec.ports = vec![EndpointPort {
            name: name.into(),
            protocol: Protocol::Name("TCP".into()),
            port,
            host_port: None,
            host_ip: None,
        }];
    }
    pods
}

fn model_of(mut extra: Vec<AnyResource>, yaml: &str) -> PolicyModel {
    if !yaml.trim().is_empty() {
        extra.extend(parse_documents(yaml).expect("test policies parse"));
    }
    let mut res = PolicyResources {
        hosts: vec![
            ("n1".into(), N1.parse().unwrap()),
            ("n2".into(), N2.parse().unwrap()),
        ],
        ..Default::default()
    };
    for r in extra {
        res.add(r)
            .unwrap_or_else(|other| panic!("not a policy resource: {other:?}"));
    }
    let (m, errors) = PolicyModel::build(&res);
    assert!(errors.is_empty(), "{errors:?}");
    m
}

fn model(yaml: &str) -> PolicyModel {
    model_of(cast(), yaml)
}

/// `proto` is "tcp/80", "udp/53", "icmp/8" (type), "icmp/8/0" or "sctp/9".
fn verdict(m: &PolicyModel, src: &str, dst: &str, proto: &str) -> Verdict {
    let parts: Vec<&str> = proto.split('/').collect();
    let protocol = Protocol::Name(parts[0].into()).number().expect("protocol");
    let n = |i: usize| parts.get(i).and_then(|p| p.parse::<u16>().ok());
    let (dst_port, icmp) = if protocol == 1 || protocol == 58 {
        (None, n(1).map(|t| (t as u8, n(2).unwrap_or(0) as u8)))
    } else {
        (n(1), None)
    };
    let flow = Flow {
        src: m.resolve(src.parse::<IpAddr>().unwrap()),
        dst: m.resolve(dst.parse::<IpAddr>().unwrap()),
        protocol,
        src_port: if dst_port.is_some() {
            Some(40000)
        } else {
            None
        },
        dst_port,
        icmp,
    };
    m.evaluate(&flow)
}

fn allowed(m: &PolicyModel, src: &str, dst: &str, proto: &str) -> bool {
    verdict(m, src, dst, proto).allowed
}

const WEB: &str = "10.0.0.1";
const PROD_CLIENT: &str = "10.0.0.2";
const DEV_CLIENT: &str = "10.0.1.2";
const DB: &str = "10.0.1.3";
const OUTSIDE: &str = "203.0.113.9";

#[test]
fn no_policy_allows_everything_through_the_namespace_profile() {
    let m = model("");
    let v = verdict(&m, PROD_CLIENT, WEB, "tcp/80");
    assert!(v.allowed);
    let ing = v.ingress.unwrap();
    assert_eq!(
        ing.decided_by,
        DecidedBy::Profile {
            profile: "kns.prod".into(),
            rule: 0,
            action: RuleAction::Allow
        }
    );
    assert!(allowed(&m, OUTSIDE, DB, "udp/53"));
    assert!(allowed(&m, DB, OUTSIDE, "icmp/8"));
}

#[test]
fn a_policy_selecting_an_endpoint_denies_what_it_does_not_allow() {
    let m = model(
        "apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web, namespace: prod}
spec:
  selector: app == 'web'
  ingress: [{action: Allow, protocol: TCP, destination: {ports: [80]}}]
",
    );
    assert!(allowed(&m, PROD_CLIENT, WEB, "tcp/80"));
    let v = verdict(&m, PROD_CLIENT, WEB, "tcp/81");
    assert!(!v.allowed);
    assert_eq!(
        v.ingress.unwrap().decided_by,
        DecidedBy::EndOfTier {
            tier: "default".into()
        }
    );
    // Egress is not in the policy's types: the web pod still reaches anything.
    assert!(allowed(&m, WEB, OUTSIDE, "tcp/443"));
    // Other pods are not selected.
    assert!(allowed(&m, PROD_CLIENT, DB, "tcp/5432"));
}

#[test]
fn policies_run_by_order_then_name_and_the_first_allow_or_deny_wins() {
    let m = model(
        "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: b-allow}
spec: {order: 10, selector: app == 'web', ingress: [{action: Allow}]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: a-deny}
spec: {order: 10, selector: app == 'web', ingress: [{action: Log}, {action: Deny}]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: first}
spec: {order: 5, selector: app == 'web', ingress: [{action: Allow, protocol: UDP}]}
",
    );
    let v = verdict(&m, PROD_CLIENT, WEB, "tcp/80");
    assert!(!v.allowed, "a-deny sorts before b-allow at equal order");
    let ing = v.ingress.unwrap();
    let DecidedBy::Rule(r) = &ing.decided_by else {
        panic!("{ing:?}")
    };
    assert_eq!((r.policy.name.as_str(), r.rule), ("a-deny", 1));
    assert_eq!(
        ing.trace.len(),
        2,
        "first had no match, then a Log: {:?}",
        ing.trace
    );
    assert!(matches!(ing.trace[1], Step::Logged(_)));
    assert!(allowed(&m, PROD_CLIENT, WEB, "udp/53"), "order 5 first");
}

#[test]
fn a_policy_without_order_runs_after_every_ordered_one() {
    let m = model(
        "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: a-unordered}
spec: {selector: all(), ingress: [{action: Deny}]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: z-ordered}
spec: {order: 999999, selector: all(), ingress: [{action: Allow}]}
",
    );
    assert!(allowed(&m, PROD_CLIENT, WEB, "tcp/80"));
}

#[test]
fn pass_skips_to_the_next_tier_and_the_end_of_a_tier_denies() {
    let m = model(
        "apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.quarantine}
spec:
  tier: security
  order: 1
  selector: all()
  ingress:
    - {action: Deny, source: {nets: [10.0.1.0/24]}}
    - {action: Pass, source: {selector: app == 'client'}}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web, namespace: prod}
spec:
  selector: app == 'web'
  ingress: [{action: Allow, protocol: TCP}]
",
    );
    // dev/client is in 10.0.1.0/24: denied in the security tier before default.
    let v = verdict(&m, DEV_CLIENT, WEB, "tcp/80");
    let DecidedBy::Rule(r) = &v.ingress.as_ref().unwrap().decided_by else {
        panic!()
    };
    assert_eq!((r.tier.as_str(), r.action), ("security", RuleAction::Deny));
    // prod/client passes to the default tier, where web's policy allows TCP.
    let v = verdict(&m, PROD_CLIENT, WEB, "tcp/80");
    assert!(v.allowed);
    let ing = v.ingress.unwrap();
    assert!(matches!(&ing.trace[0], Step::Passed(r) if r.tier == "security"));
    // ... and denies UDP at the end of the default tier.
    assert!(!allowed(&m, PROD_CLIENT, WEB, "udp/53"));
    // Nothing in security matches the outside: the end of the security tier denies.
    let v = verdict(&m, OUTSIDE, DB, "tcp/5432");
    assert_eq!(
        v.ingress.unwrap().decided_by,
        DecidedBy::EndOfTier {
            tier: "security".into()
        }
    );
}

#[test]
fn pass_in_the_last_tier_leaves_it_to_the_profiles() {
    let m = model(
        "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: pass-all}
spec: {selector: all(), ingress: [{action: Pass}]}
",
    );
    let v = verdict(&m, PROD_CLIENT, WEB, "tcp/80");
    assert!(v.allowed);
    assert!(matches!(
        v.ingress.unwrap().decided_by,
        DecidedBy::Profile { ref profile, .. } if profile == "kns.prod"
    ));
}

#[test]
fn a_tier_with_default_action_pass_hands_on_instead_of_denying() {
    let m = model(
        "apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: platform}
spec: {order: 10, defaultAction: Pass}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: block-db-port}
spec: {tier: platform, selector: all(), ingress: [{action: Deny, protocol: TCP, destination: {ports: [5432]}}]}
",
    );
    assert!(!allowed(&m, DEV_CLIENT, DB, "tcp/5432"));
    let v = verdict(&m, DEV_CLIENT, DB, "tcp/80");
    assert!(v.allowed);
    assert!(v.ingress.unwrap().trace.contains(&Step::TierDefaultPass {
        tier: "platform".into()
    }));
}

#[test]
fn tiers_run_by_order_and_a_tier_selecting_nothing_is_skipped() {
    let m = model(
        "apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: late}
spec: {order: 2000000}
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: early}
spec: {order: 1}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: late-allow}
spec: {tier: late, selector: all(), ingress: [{action: Allow}]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: early-deny-db}
spec: {tier: early, selector: app == 'db', ingress: [{action: Deny}]}
",
    );
    assert_eq!(
        m.tiers.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        ["early", "default", "late"]
    );
    assert!(
        !allowed(&m, DEV_CLIENT, DB, "tcp/1"),
        "early tier denies db"
    );
    assert!(
        allowed(&m, DEV_CLIENT, WEB, "tcp/1"),
        "early selects nothing for web"
    );
}

#[test]
fn a_namespaced_policy_selects_only_its_namespace_and_its_rule_selectors_too() {
    let m = model(
        "apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: clients-only, namespace: prod}
spec:
  selector: all()
  ingress: [{action: Allow, source: {selector: app == 'client'}}]
",
    );
    assert!(allowed(&m, PROD_CLIENT, WEB, "tcp/80"));
    assert!(
        !allowed(&m, DEV_CLIENT, WEB, "tcp/80"),
        "dev/client is app=client but not in prod"
    );
    assert!(
        allowed(&m, PROD_CLIENT, DB, "tcp/80"),
        "dev/db not selected"
    );
}

#[test]
fn a_rule_namespace_selector_picks_namespaces_by_their_labels() {
    let m = model(
        "apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: kns.dev}
spec: {labelsToApply: {pcns.team: data}}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: from-data, namespace: prod}
spec:
  selector: app == 'web'
  ingress:
    - {action: Allow, source: {namespaceSelector: team == 'data', selector: app == 'client'}}
    - {action: Allow, source: {namespaceSelector: projectcalico.org/name == 'prod'}}
",
    );
    assert!(allowed(&m, DEV_CLIENT, WEB, "tcp/80"));
    assert!(
        !allowed(&m, DB, WEB, "tcp/80"),
        "db is in dev but not app=client"
    );
    assert!(allowed(&m, PROD_CLIENT, WEB, "tcp/80"), "by namespace name");
    assert!(!allowed(&m, OUTSIDE, WEB, "tcp/80"));
}

#[test]
fn a_rule_with_only_nets_matches_any_address_even_in_a_namespaced_policy() {
    let m = model(
        "apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: from-net, namespace: prod}
spec:
  selector: app == 'web'
  ingress: [{action: Allow, source: {nets: [10.0.1.0/24, 203.0.113.0/24], notNets: [10.0.1.3/32]}}]
",
    );
    assert!(
        allowed(&m, DEV_CLIENT, WEB, "tcp/80"),
        "a pod of dev by address"
    );
    assert!(allowed(&m, OUTSIDE, WEB, "tcp/80"));
    assert!(!allowed(&m, DB, WEB, "tcp/80"), "notNets");
    assert!(!allowed(&m, PROD_CLIENT, WEB, "tcp/80"));
}

#[test]
fn global_policy_rules_select_across_namespaces_and_its_namespace_selector_limits_it() {
    let m = model(
        "apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: kns.dev}
spec: {labelsToApply: {pcns.env: dev}}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: dev-from-clients}
spec:
  namespaceSelector: env == 'dev'
  ingress: [{action: Allow, source: {selector: app == 'client'}}]
",
    );
    assert!(
        allowed(&m, PROD_CLIENT, DB, "tcp/5432"),
        "any namespace's client"
    );
    assert!(!allowed(&m, WEB, DB, "tcp/5432"));
    assert!(allowed(&m, DB, WEB, "tcp/80"), "prod is not selected");
}

#[test]
fn not_selector_also_matches_what_is_not_an_endpoint() {
    let m = model(
        "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: g}
spec:
  selector: app == 'db'
  ingress:
    - {action: Allow, source: {notSelector: app == 'client'}}
",
    );
    assert!(allowed(&m, OUTSIDE, DB, "tcp/1"));
    assert!(allowed(&m, WEB, DB, "tcp/1"));
    assert!(!allowed(&m, DEV_CLIENT, DB, "tcp/1"));
    // A negative expression inside selector needs an endpoint.
    let m = model(
        "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: g}
spec:
  selector: app == 'db'
  ingress:
    - {action: Allow, source: {selector: app != 'client'}}
",
    );
    assert!(!allowed(&m, OUTSIDE, DB, "tcp/1"));
    assert!(allowed(&m, WEB, DB, "tcp/1"));
}

#[test]
fn ports_ranges_named_ports_and_not_ports() {
    let pods = cast_with_tcp_port(0, "http", 8080);
    let m = model_of(
        pods,
        "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: g}
spec:
  selector: all()
  ingress:
    - {action: Allow, protocol: TCP, destination: {ports: [http, '9000:9010'], notPorts: [9005]}}
    - {action: Allow, protocol: 17, destination: {ports: [53]}}
",
    );
    assert!(
        allowed(&m, PROD_CLIENT, WEB, "tcp/8080"),
        "web's named port"
    );
    assert!(
        !allowed(&m, PROD_CLIENT, DB, "tcp/8080"),
        "db has no port http"
    );
    assert!(
        !allowed(&m, PROD_CLIENT, WEB, "udp/8080"),
        "named port is TCP"
    );
    assert!(allowed(&m, PROD_CLIENT, DB, "tcp/9000"));
    assert!(allowed(&m, PROD_CLIENT, DB, "tcp/9010"));
    assert!(!allowed(&m, PROD_CLIENT, DB, "tcp/9005"), "notPorts");
    assert!(!allowed(&m, PROD_CLIENT, DB, "tcp/9011"));
    assert!(allowed(&m, PROD_CLIENT, DB, "udp/53"), "protocol by number");
    assert!(!allowed(&m, PROD_CLIENT, DB, "sctp/53"));
}

#[test]
fn protocol_negation_icmp_type_code_and_ip_version() {
    let m = model(
        "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: g}
spec:
  selector: all()
  ingress:
    - {action: Allow, protocol: ICMP, icmp: {type: 8, code: 0}}
    - {action: Deny, protocol: ICMP}
    - {action: Allow, notProtocol: UDP, ipVersion: 4}
",
    );
    assert!(allowed(&m, PROD_CLIENT, WEB, "icmp/8/0"), "echo request");
    assert!(!allowed(&m, PROD_CLIENT, WEB, "icmp/13/0"), "timestamp");
    assert!(allowed(&m, PROD_CLIENT, WEB, "tcp/22"), "not UDP, IPv4");
    assert!(!allowed(&m, PROD_CLIENT, WEB, "udp/53"));
    let m = model(
        "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: g}
spec:
  selector: all()
  ingress: [{action: Allow, protocol: ICMP, notICMP: {type: 8}}]
",
    );
    assert!(!allowed(&m, PROD_CLIENT, WEB, "icmp/8/0"));
    assert!(allowed(&m, PROD_CLIENT, WEB, "icmp/0/0"));
    let m = model(
        "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: g}
spec: {selector: all(), ingress: [{action: Allow, ipVersion: 6}]}
",
    );
    assert!(!allowed(&m, PROD_CLIENT, WEB, "tcp/80"));
}

#[test]
fn service_accounts_in_rules_and_in_the_policy_selector() {
    let mut pods = cast();
    for (i, sa) in [(0, "frontend"), (1, "tester"), (2, "frontend")] {
        if let AnyResource::WorkloadEndpoint(w) = &mut pods[i] {
            w.spec.service_account_name = Some(sa.into());
        }
    }
    pods.extend(
        parse_documents(
            "apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {name: ksa.prod.tester}\nspec: {labelsToApply: {pcsa.role: qa}}\n",
        )
        .unwrap(),
    );
    let m = model_of(
        pods,
        "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: g}
spec:
  selector: app == 'db'
  ingress:
    - {action: Allow, source: {serviceAccounts: {names: [frontend]}}}
    - {action: Allow, source: {serviceAccounts: {selector: role == 'qa'}}}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: frontends}
spec:
  serviceAccountSelector: projectcalico.org/name == 'frontend'
  egress: [{action: Deny, destination: {nets: [203.0.113.0/24]}}, {action: Allow}]
",
    );
    assert!(allowed(&m, WEB, DB, "tcp/1"), "web runs as frontend");
    assert!(
        allowed(&m, PROD_CLIENT, DB, "tcp/1"),
        "tester has pcsa.role=qa"
    );
    assert!(!allowed(&m, OUTSIDE, DB, "tcp/1"));
    assert!(
        !allowed(&m, WEB, OUTSIDE, "tcp/443"),
        "frontends may not leave"
    );
    assert!(allowed(&m, PROD_CLIENT, OUTSIDE, "tcp/443"));
}

#[test]
fn the_node_reaches_its_own_workloads_and_workloads_reach_their_node_per_config() {
    let deny_all = "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: deny}
spec: {selector: all(), types: [Ingress, Egress]}
";
    let m = model(deny_all);
    let v = verdict(&m, N1, WEB, "tcp/8080");
    assert!(v.allowed, "kubelet probe from n1 to its own pod");
    assert_eq!(
        v.ingress.unwrap().decided_by,
        DecidedBy::HostToLocalWorkload
    );
    assert!(
        !allowed(&m, N2, WEB, "tcp/8080"),
        "another node is just an address"
    );
    // Workload to its host: egress first (denied here), then the action.
    assert!(!allowed(&m, WEB, N1, "tcp/10250"));
    let m = model("");
    let v = verdict(&m, WEB, N1, "tcp/10250");
    assert!(!v.allowed, "Calico's default Drop");
    assert!(matches!(
        v.egress.unwrap().decided_by,
        DecidedBy::EndpointToHost {
            action: EndpointToHostAction::Drop,
            ..
        }
    ));
    assert!(
        allowed(&m, WEB, N2, "tcp/10250"),
        "another node is not its host"
    );
    let m = model(
        "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\nspec: {defaultEndpointToHostAction: Accept}\n",
    );
    assert!(allowed(&m, WEB, N1, "tcp/10250"));
}

#[test]
fn a_profile_with_explicit_empty_rules_denies_and_a_missing_one_allows_nothing() {
    let m = model(
        "apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {name: kns.dev}\nspec: {ingress: [], egress: [{action: Allow}]}\n",
    );
    let v = verdict(&m, WEB, DB, "tcp/1");
    assert!(!v.allowed);
    assert_eq!(v.ingress.unwrap().decided_by, DecidedBy::NoProfileMatched);
    assert!(allowed(&m, DB, WEB, "tcp/1"));
    let mut pods = cast();
    if let AnyResource::WorkloadEndpoint(w) = &mut pods[0] {
        w.spec.profiles = vec!["nonexistent".into()];
    }
    let m = model_of(pods, "");
    assert!(!allowed(&m, PROD_CLIENT, WEB, "tcp/1"));
}

#[test]
fn endpoint_labels_merge_own_implicit_and_inherited() {
    let m = model(
        "apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {name: kns.prod}\nspec: {labelsToApply: {pcns.team: web, app: from-profile}}\n",
    );
    let web = m.endpoint("prod/n1-k8s-web-eth0").unwrap();
    assert_eq!(web.labels["app"], "web", "own labels win");
    assert_eq!(web.labels["pcns.team"], "web");
    assert_eq!(web.labels["pcns.projectcalico.org/name"], "prod");
    assert_eq!(web.labels["pcns.kubernetes.io/metadata.name"], "prod");
    assert_eq!(web.labels["projectcalico.org/namespace"], "prod");
    assert_eq!(web.labels["projectcalico.org/orchestrator"], "k8s");
}

#[test]
fn a_label_change_changes_the_verdict() {
    let policy = "apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web, namespace: prod}
spec:
  selector: app == 'web'
  ingress: [{action: Allow, source: {selector: role == 'trusted'}}]
";
    assert!(!allowed(&model(policy), PROD_CLIENT, WEB, "tcp/80"));
    let mut pods = cast();
    if let AnyResource::WorkloadEndpoint(w) = &mut pods[1] {
        w.metadata.labels.insert("role".into(), "trusted".into());
    }
    assert!(allowed(&model_of(pods, policy), PROD_CLIENT, WEB, "tcp/80"));
}

#[test]
fn egress_and_ingress_both_must_allow() {
    let m = model(
        "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: client-egress}
spec:
  selector: app == 'client'
  egress: [{action: Allow, destination: {selector: app == 'web'}}]
",
    );
    let v = verdict(&m, PROD_CLIENT, DB, "tcp/5432");
    assert!(!v.allowed);
    assert!(!v.egress.as_ref().unwrap().allowed);
    assert!(v.ingress.as_ref().unwrap().allowed);
    assert!(allowed(&m, PROD_CLIENT, WEB, "tcp/80"));
    assert!(!allowed(&m, DEV_CLIENT, OUTSIDE, "tcp/443"));
}

#[test]
fn policies_for_an_endpoint_come_tier_by_tier_in_order() {
    let m = model(
        "apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 1}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: sec}
spec: {tier: security, selector: all(), types: [Ingress, Egress]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web, namespace: prod}
spec: {order: 1, selector: app == 'web', egress: [{action: Allow}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: prod}
spec: {podSelector: {matchLabels: {app: web}}, policyTypes: [Egress]}
",
    );
    let web = m.endpoint("prod/n1-k8s-web-eth0").unwrap();
    let tiers = m.tiers_for(web, PolicyType::Egress);
    let names: Vec<(String, Vec<String>)> = tiers
        .iter()
        .map(|t| {
            (
                t.tier.name.clone(),
                t.policies.iter().map(|p| p.id.to_string()).collect(),
            )
        })
        .collect();
    assert_eq!(
        names,
        vec![
            ("security".into(), vec!["sec".into()]),
            (
                "default".into(),
                vec!["prod/web".into(), "prod/knp.default.web".into()]
            )
        ]
    );
    assert_eq!(m.tiers_for(web, PolicyType::Ingress).len(), 1);
}

// ---- Kubernetes NetworkPolicy, Kubernetes' own documented examples ----------------------

const K8S_DENY_INGRESS: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny-ingress, namespace: prod}
spec: {podSelector: {}, policyTypes: [Ingress]}
";

#[test]
fn k8s_default_deny_ingress_and_egress() {
    let m = model(K8S_DENY_INGRESS);
    assert!(!allowed(&m, PROD_CLIENT, WEB, "tcp/80"));
    assert!(!allowed(&m, DB, WEB, "icmp/8"));
    assert!(
        allowed(&m, WEB, DB, "tcp/5432"),
        "egress untouched; dev open"
    );
    let m = model(
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny-egress, namespace: prod}
spec: {podSelector: {}, policyTypes: [Egress]}
",
    );
    assert!(!allowed(&m, WEB, DB, "tcp/5432"));
    assert!(!allowed(&m, WEB, PROD_CLIENT, "udp/53"));
    assert!(allowed(&m, DB, WEB, "tcp/80"));
}

#[test]
fn k8s_allow_from_a_namespace_and_from_pods_with_a_label() {
    let m = model(&format!(
        "{K8S_DENY_INGRESS}---
apiVersion: projectcalico.org/v3
kind: Profile
metadata: {{name: kns.dev}}
spec: {{labelsToApply: {{pcns.purpose: testing}}}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: allow-from-testing, namespace: prod}}
spec:
  podSelector: {{matchLabels: {{app: web}}}}
  ingress:
    - from:
        - namespaceSelector: {{matchLabels: {{purpose: testing}}}}
          podSelector: {{matchLabels: {{app: db}}}}
        - podSelector: {{matchExpressions: [{{key: app, operator: In, values: [client]}}]}}
"
    ));
    assert!(allowed(&m, DB, WEB, "tcp/80"), "db in a testing namespace");
    assert!(
        !allowed(&m, DEV_CLIENT, WEB, "tcp/80"),
        "client, but not in prod"
    );
    assert!(allowed(&m, PROD_CLIENT, WEB, "tcp/80"), "client in prod");
    assert!(
        !allowed(&m, WEB, PROD_CLIENT, "tcp/80"),
        "default deny elsewhere"
    );
}

#[test]
fn k8s_egress_to_a_cidr_with_an_except_block() {
    let m = model(
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: egress-cidr, namespace: dev}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Egress]
  egress:
    - to: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.0.2/32]}}]
      ports: [{protocol: TCP, port: 80}]
",
    );
    assert!(allowed(&m, DB, WEB, "tcp/80"));
    assert!(!allowed(&m, DB, PROD_CLIENT, "tcp/80"), "except");
    assert!(!allowed(&m, DB, WEB, "tcp/81"));
    assert!(!allowed(&m, DB, OUTSIDE, "tcp/80"));
}

#[test]
fn k8s_named_ports_and_port_ranges() {
    let pods = cast_with_tcp_port(0, "metrics", 9100);
    let m = model_of(
        pods,
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: ports, namespace: prod}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
    - ports:
        - {port: metrics}
        - {protocol: TCP, port: 32000, endPort: 32768}
        - {protocol: UDP, port: 53}
",
    );
    assert!(allowed(&m, OUTSIDE, WEB, "tcp/9100"));
    assert!(allowed(&m, OUTSIDE, WEB, "tcp/32000"));
    assert!(allowed(&m, OUTSIDE, WEB, "tcp/32768"));
    assert!(!allowed(&m, OUTSIDE, WEB, "tcp/32769"));
    assert!(allowed(&m, OUTSIDE, WEB, "udp/53"));
    assert!(!allowed(&m, OUTSIDE, WEB, "tcp/53"));
}

#[test]
fn k8s_policies_interleave_with_calico_ones_at_order_1000() {
    let m = model(&format!(
        "{K8S_DENY_INGRESS}---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {{name: early-allow, namespace: prod}}
spec: {{order: 500, selector: all(), ingress: [{{action: Allow, protocol: UDP}}]}}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {{name: late-allow, namespace: prod}}
spec: {{order: 2000, selector: all(), ingress: [{{action: Allow}}]}}
"
    ));
    assert!(allowed(&m, OUTSIDE, WEB, "udp/53"), "order 500 before 1000");
    assert!(
        allowed(&m, OUTSIDE, WEB, "tcp/80"),
        "the k8s policy has no rule: on to order 2000"
    );
    let ids: Vec<String> = m.policies.iter().map(|p| p.id.to_string()).collect();
    assert_eq!(
        ids,
        [
            "prod/early-allow",
            "prod/knp.default.default-deny-ingress",
            "prod/late-allow"
        ]
    );
}

#[test]
fn k8s_conversion_matches_calicos() {
    let r = parse_documents(
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: np, namespace: prod}
spec:
  podSelector: {matchLabels: {app: web}, matchExpressions: [{key: tier, operator: NotIn, values: [a, b]}, {key: x, operator: DoesNotExist}]}
  ingress:
    - from: [{namespaceSelector: {}}, {ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}]
      ports: [{port: 80}, {protocol: UDP}]
  egress: [{}]
  policyTypes: [Ingress, Egress]
",
    )
    .unwrap();
    let AnyResource::K8sNetworkPolicy(np) = &r[0] else {
        panic!()
    };
    let c = k8s::to_calico(np);
    assert_eq!(c.name(), "knp.default.np");
    assert_eq!(c.metadata.namespace.as_deref(), Some("prod"));
    assert_eq!(c.spec.order, Some(1000.0));
    assert_eq!(
        c.spec.selector,
        "projectcalico.org/orchestrator == 'k8s' && app == 'web' && tier not in { 'a', 'b' } && ! has(x)"
    );
    assert_eq!(c.spec.types, vec![PolicyType::Ingress, PolicyType::Egress]);
    // One rule per (protocol, peer): TCP x 2 peers, UDP x 2 peers.
    assert_eq!(c.spec.ingress.len(), 4);
    let r0 = &c.spec.ingress[0];
    assert_eq!(r0.protocol, Some(Protocol::Name("TCP".into())));
    assert_eq!(r0.source.namespace_selector.as_deref(), Some("all()"));
    assert_eq!(
        r0.source.selector.as_deref(),
        Some("projectcalico.org/orchestrator == 'k8s'")
    );
    assert_eq!(r0.destination.ports.len(), 1);
    let r1 = &c.spec.ingress[1];
    assert_eq!(r1.source.nets, vec!["10.0.0.0/8"]);
    assert_eq!(r1.source.not_nets, vec!["10.1.0.0/16"]);
    assert!(
        c.spec.ingress[2].destination.ports.is_empty(),
        "all UDP ports"
    );
    assert_eq!(c.spec.egress.len(), 1);
    assert_eq!(c.spec.egress[0], crate::resources::Rule::default());
}

#[test]
fn the_sets_a_data_path_needs_come_from_the_same_selectors() {
    let pods = cast_with_tcp_port(3, "sql", 5432);
    let m = model_of(
        pods,
        "apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: p, namespace: dev}
spec:
  selector: all()
  ingress: [{action: Allow, protocol: TCP, source: {selector: app == 'client'}, destination: {ports: [sql]}}]
",
    );
    let p = &m.policies[0];
    let src = p.ingress[0].source.selector.as_ref().unwrap();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(m.selected_addresses(src), vec![ip(DEV_CLIENT)], "dev only");
    assert_eq!(m.named_port_members("sql", 6, None), vec![(ip(DB), 5432)]);
    assert!(m.named_port_members("sql", 17, None).is_empty());
    let web = m.endpoint("prod/n1-k8s-web-eth0").unwrap();
    assert!(m.policies_selecting(web).is_empty());
}

/// The scale (1,000 endpoints, 500 policies): the model builds and answers for every
/// endpoint in bounded time, and the verdicts stay right. Timings are printed; the tight
/// figures belong to the data path's benchmarks.
#[test]
fn a_thousand_endpoints_and_five_hundred_policies() {
    let mut rs: Vec<AnyResource> = (0..1000)
        .map(|i| {
            let app = format!("app{}", i % 100);
            pod(
                &format!("ns{}", i % 10),
                &format!("p{i}"),
                &format!("n{}", i % 20),
                &format!("10.{}.{}.{}", 1 + i / 65536, (i / 256) % 256, i % 256),
                &[("app", app.as_str())],
            )
        })
        .collect();
    let mut yaml = String::new();
    for i in 0..500 {
        yaml.push_str(&format!(
            "---\napiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {{name: p{i}, namespace: ns{}}}\nspec:\n  order: {i}\n  selector: app == 'app{}'\n  ingress: [{{action: Allow, protocol: TCP, source: {{selector: app == 'app{}'}}, destination: {{ports: [{}]}}}}]\n",
            i % 10,
            i % 100,
            (i + 10) % 100,
            8000 + i
        ));
    }
    rs.extend(parse_documents(&yaml).unwrap());
    let t0 = std::time::Instant::now();
    let m = model_of(rs, "");
    let built = t0.elapsed();
    let t1 = std::time::Instant::now();
    let applied: usize = m
        .endpoints
        .iter()
        .map(|e| {
            m.tiers_for(e, PolicyType::Ingress)
                .iter()
                .map(|t| t.policies.len())
                .sum::<usize>()
        })
        .sum();
    let per_endpoint = t1.elapsed();
    // Each of the 500 policies selects the 10 endpoints of its app (all in its namespace).
    assert_eq!(applied, 5000);
    let t2 = std::time::Instant::now();
    // p10 (ns0, app10) to p0 (ns0, app0): policy p0 lets app10 in on 8000 (p100 on 8100).
    assert!(allowed(&m, "10.1.0.10", "10.1.0.0", "tcp/8000"));
    assert!(allowed(&m, "10.1.0.10", "10.1.0.0", "tcp/8100"));
    assert!(!allowed(&m, "10.1.0.10", "10.1.0.0", "tcp/8001"));
    assert!(
        !allowed(&m, "10.1.0.1", "10.1.0.0", "tcp/8000"),
        "app1 is in ns1"
    );
    let verdicts = t2.elapsed();
    eprintln!(
        "1000 endpoints, 500 policies: build {built:?}, tiers_for on every endpoint {per_endpoint:?}, 4 verdicts {verdicts:?}"
    );
    assert!(built.as_secs() < 60 && per_endpoint.as_secs() < 60);
}
