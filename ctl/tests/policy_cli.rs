//! `margayctl` and network policy end to end, the built binary against a real etcd: applying
//! the policy kinds (Calico's and Kubernetes'), `get`/`delete` with `-n`/`-A`, the tier rules,
//! `label`, and `policy explain` whose verdict follows a label change.

use margay_datastore::testing::EtcdServer;
use std::process::Command;

struct Out {
    ok: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn ctl(etcd: &EtcdServer, args: &[&str]) -> Out {
    let out = Command::new(env!("CARGO_BIN_EXE_margayctl"))
        .args(args)
        .env("MARGAY_ETCD_ENDPOINTS", etcd.endpoint())
        .output()
        .expect("running margayctl");
    Out {
        ok: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `margayctl policy explain` with `args` split at spaces.
fn explain(etcd: &EtcdServer, args: &str) -> Out {
    let mut all = vec!["policy", "explain"];
    all.extend(args.split_whitespace());
    ctl(etcd, &all)
}

fn ok(etcd: &EtcdServer, args: &[&str]) -> String {
    let o = ctl(etcd, args);
    assert!(o.ok, "margayctl {args:?}: {}{}", o.stdout, o.stderr);
    o.stdout
}

fn apply(
    etcd: &EtcdServer,
    dir: &tempfile::TempDir,
    name: &str,
    text: &str,
    extra: &[&str],
) -> Out {
    let p = dir.path().join(name);
    std::fs::write(&p, text).expect("writing a test file");
    let path = p.display().to_string();
    let mut args = vec!["apply", "-f", path.as_str()];
    args.extend_from_slice(extra);
    ctl(etcd, &args)
}

/// Two pods as felix writes them: prod/web (10.0.0.1, app=web) and dev/client (10.0.1.2,
/// app=client), both on node n1.
const PODS: &str = "
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: n1-k8s-web-eth0
  namespace: prod
  labels: {app: web, projectcalico.org/namespace: prod, projectcalico.org/orchestrator: k8s}
spec: {node: n1, orchestrator: k8s, pod: web, endpoint: eth0, interfaceName: caliweb, ipNetworks: [10.0.0.1/32], ports: [{name: http, protocol: TCP, port: 8080}]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: n1-k8s-client-eth0
  namespace: dev
  labels: {app: client, projectcalico.org/namespace: dev, projectcalico.org/orchestrator: k8s}
spec: {node: n1, orchestrator: k8s, pod: client, endpoint: eth0, interfaceName: caliclient, ipNetworks: [10.0.1.2/32]}
";

const POLICIES: &str = "
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.block-outside}
spec:
  tier: security
  selector: all()
  ingress:
    - {action: Deny, source: {nets: [203.0.113.0/24]}}
    - {action: Pass}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-trusted, namespace: prod}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
    - from: [{namespaceSelector: {}, podSelector: {matchLabels: {role: trusted}}}]
      ports: [{port: http}]
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web-metrics}
spec:
  order: 2000
  selector: app == 'web'
  ingress: [{action: Allow, protocol: TCP, destination: {ports: [9100]}}]
";

#[test]
fn policies_apply_list_by_namespace_and_explain_a_flow_that_a_label_opens() {
    let etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let o = apply(&etcd, &dir, "pods.yaml", PODS, &[]);
    assert!(o.ok, "{}", o.stderr);
    let o = apply(&etcd, &dir, "policies.yaml", POLICIES, &["-n", "prod"]);
    assert!(o.ok, "{}", o.stderr);
    assert_eq!(o.stdout, "Successfully applied 4 resource(s)\n");

    // -n defaults to `default`; -n and -A pick namespaces.
    assert_eq!(
        ok(&etcd, &["get", "networkpolicies"]),
        "NAMESPACE  NAME  TIER  ORDER  SELECTOR\n"
    );
    let t = ok(&etcd, &["get", "networkpolicy", "-n", "prod"]);
    assert!(
        t.contains("prod       web-metrics  default  2000   app == 'web'"),
        "{t}"
    );
    let t = ok(&etcd, &["get", "knp", "-A"]);
    assert!(t.contains("prod       web-from-trusted  app=web"), "{t}");
    let t = ok(&etcd, &["get", "wep", "-A"]);
    assert!(t.contains("dev") && t.contains("prod"), "{t}");
    assert!(!ok(&etcd, &["get", "wep", "-n", "dev"]).contains("prod"));
    let t = ok(&etcd, &["get", "gnp"]);
    assert!(
        t.contains("security.block-outside  security  -      all()"),
        "{t}"
    );
    let y = ok(
        &etcd,
        &[
            "get",
            "networkpolicy.networking.k8s.io",
            "web-from-trusted",
            "-n",
            "prod",
            "-o",
            "yaml",
        ],
    );
    assert!(y.contains("apiVersion: networking.k8s.io/v1"), "{y}");

    // dev/client is not trusted: denied at the end of the default tier (the k8s policy
    // selected web; web-metrics only opens 9100).
    let o = explain(
        &etcd,
        "--from dev/client --to prod/web --port 8080/tcp --exit-code",
    );
    assert_eq!(o.code, Some(1), "{}{}", o.stdout, o.stderr);
    for line in [
        "  - no rule of prod/knp.default.web-from-trusted (tier 'default') matched\n",
        "  - no rule of prod/web-metrics (tier 'default') matched\n",
        "policies selecting the destination: security:security.block-outside, \
         default:prod/knp.default.web-from-trusted, default:prod/web-metrics\n",
    ] {
        assert!(o.stdout.contains(line), "{line}in\n{}", o.stdout);
    }
    assert!(
        o.stdout.starts_with(
            "dev/n1-k8s-client-eth0 (10.0.1.2) -> prod/n1-k8s-web-eth0 (10.0.0.1) 8080/tcp: DENIED"
        ),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout
            .contains("ingress at prod/n1-k8s-web-eth0: Deny at the end of tier 'default'"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout
            .contains("passed tier 'security' at security.block-outside ingress rule 2"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout
            .contains("egress at dev/n1-k8s-client-eth0: Allow by profile kns.dev rule 1"),
        "{}",
        o.stdout
    );

    // Label the client trusted: the k8s policy's named port rule now allows it.
    assert_eq!(
        ok(
            &etcd,
            &["label", "wep", "client", "role=trusted", "-n", "dev"]
        ),
        "Successfully labelled WorkloadEndpoint(dev/n1-k8s-client-eth0)\n"
    );
    let j = ok(
        &etcd,
        &[
            "policy", "explain", "--from", "client", "-n", "dev", "--to", "10.0.0.1", "--port",
            "8080/tcp", "-o", "json",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&j).unwrap();
    assert_eq!(v["verdict"]["allowed"], true, "{j}");
    let by = &v["verdict"]["ingress"]["decidedBy"];
    assert_eq!(by["by"], "rule", "{j}");
    assert_eq!(by["tier"], "default");
    assert_eq!(by["policy"]["name"], "knp.default.web-from-trusted");
    assert_eq!(by["policy"]["kind"], "KubernetesNetworkPolicy");
    assert_eq!(by["rule"], 0);
    // The truth table on the named port: web's own traffic to itself is not trusted.
    assert_eq!(
        ok(&etcd, &["policy", "matrix", "-A", "--port", "8080/tcp"]),
        "from \\ to     1  2\n1 dev/client  .  .\n2 prod/web    .  X\n"
    );
    // Port 9090 is neither the named port nor 9100.
    let o = explain(&etcd, "--from dev/client --to prod/web --port 9090");
    assert!(o.stdout.contains("DENIED"), "{}", o.stdout);
    // The outside is denied in the security tier.
    let o = explain(&etcd, "--from 203.0.113.7 --to prod/web --port 9100/tcp");
    assert!(
        o.stdout.contains("DENIED")
            && o.stdout
                .contains("Deny by tier 'security', policy security.block-outside ingress rule 1"),
        "{}",
        o.stdout
    );

    // Changing a label to another value needs --overwrite; removing it closes the flow again.
    let o = ctl(
        &etcd,
        &["label", "wep", "client", "role=other", "-n", "dev"],
    );
    assert!(
        !o.ok && o.stderr.contains("use --overwrite"),
        "{}",
        o.stderr
    );
    ok(&etcd, &["label", "wep", "client", "role-", "-n", "dev"]);
    let o = explain(
        &etcd,
        "--from dev/client --to prod/web --port 8080/tcp --exit-code",
    );
    assert_eq!(o.code, Some(1), "{}", o.stdout);
}

#[test]
fn namespace_labels_feed_namespace_selectors() {
    let etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    assert!(apply(&etcd, &dir, "pods.yaml", PODS, &[]).ok);
    let o = apply(
        &etcd,
        &dir,
        "np.yaml",
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-team-a}
spec:
  podSelector: {}
  ingress: [{from: [{namespaceSelector: {matchLabels: {team: a}}}]}]
",
        &["-n", "prod"],
    );
    assert!(o.ok, "{}", o.stderr);
    let ping = || explain(&etcd, "--from dev/client --to prod/web --port icmp").stdout;
    assert!(ping().contains("DENIED"));
    assert_eq!(
        ok(&etcd, &["label", "namespace", "dev", "team=a"]),
        "Successfully labelled Profile(kns.dev)\n"
    );
    assert!(ok(&etcd, &["get", "profiles"]).contains("kns.dev  pcns.team=a"));
    assert!(ping().contains("ALLOWED"), "{}", ping());
}

#[test]
fn tiers_are_checked_and_not_acted_fields_warned() {
    let etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let gnp = "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: g}
spec: {tier: missing, selector: all(), ingress: [{action: Allow}]}
";
    let o = apply(&etcd, &dir, "g.yaml", gnp, &[]);
    assert!(!o.ok);
    assert!(
        o.stderr.contains("tier 'missing' does not exist"),
        "{}",
        o.stderr
    );
    let with_tier = format!(
        "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {{name: missing}}\nspec: {{order: 5}}\n---\n{gnp}"
    );
    assert!(apply(&etcd, &dir, "g.yaml", &with_tier, &[]).ok);
    let o = ctl(&etcd, &["delete", "tier", "missing"]);
    assert!(
        !o.ok
            && o.stderr
                .contains("still has policies: GlobalNetworkPolicy(g)"),
        "{}",
        o.stderr
    );
    ok(&etcd, &["delete", "gnp", "g"]);
    ok(&etcd, &["delete", "tier", "missing"]);

    let o = apply(
        &etcd,
        &dir,
        "dnt.yaml",
        "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: untracked}
spec: {doNotTrack: true, applyOnForward: true, selector: all(), ingress: [{action: Allow}]}
",
        &[],
    );
    assert!(o.ok, "{}", o.stderr);
    assert!(
        o.stderr.contains(
            "warning: GlobalNetworkPolicy 'untracked': spec.doNotTrack is accepted but not acted on"
        ),
        "{}",
        o.stderr
    );
    // A namespaced resource applied with -n lands there; delete takes -n too.
    let np = "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p}\nspec: {selector: all()}\n";
    assert!(apply(&etcd, &dir, "p.yaml", np, &["-n", "team-b"]).ok);
    assert!(ok(&etcd, &["get", "networkpolicies", "-A"]).contains("team-b"));
    ok(&etcd, &["delete", "networkpolicy", "p", "-n", "team-b"]);
    assert!(!ok(&etcd, &["get", "networkpolicies", "-A"]).contains("team-b"));
}
