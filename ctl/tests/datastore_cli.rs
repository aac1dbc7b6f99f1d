//! `margayctl` resource and IPAM commands end to end: the built binary against a real etcd.

use margay_datastore::ipam::{Ipam, handle_for_container};
use margay_datastore::resources::{
    BgpPeerSpec, IpPool, IpPoolSpec, Node, NodeSpec, Resource, Spec,
};
use margay_datastore::testing::EtcdServer;
use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn ctl(etcd: &EtcdServer, args: &[&str], stdin: Option<&str>) -> Out {
    let mut child = Command::new(env!("CARGO_BIN_EXE_margayctl"))
        .args(args)
        .env("MARGAY_ETCD_ENDPOINTS", etcd.endpoint())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running margayctl");
    let mut pipe = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        pipe.write_all(text.as_bytes()).expect("writing stdin");
    }
    drop(pipe);
    let out = child.wait_with_output().expect("waiting for margayctl");
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn file(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, text).expect("writing a test file");
    p.display().to_string()
}

const PEERS: &str = r#"
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata:
  name: tor1
spec:
  peerIP: 192.0.2.1
  asNumber: 65001
  password:
    value: hunter2-secret
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata:
  name: rack1-rr
spec:
  nodeSelector: "rack == 'r1'"
  peerSelector: has(route-reflector)
"#;

#[test]
fn apply_get_create_replace_delete_bgp_peers() {
    let etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let f = file(&dir, "peers.yaml", PEERS);

    let o = ctl(&etcd, &["apply", "-f", &f], None);
    assert!(o.ok, "{}", o.stderr);
    assert_eq!(o.stdout, "Successfully applied 2 'BGPPeer' resource(s)\n");

    let o = ctl(&etcd, &["get", "bgppeers"], None);
    assert!(o.ok, "{}", o.stderr);
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", o.stdout);
    let cols: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(cols, ["NAME", "PEERIP", "NODE", "ASN"]);
    let tor: Vec<&str> = lines
        .iter()
        .find(|l| l.starts_with("tor1"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(tor, ["tor1", "192.0.2.1", "(global)", "65001"]);

    // The password never leaves the datastore through get.
    for fmt in ["yaml", "json"] {
        let o = ctl(&etcd, &["get", "bgppeer", "tor1", "-o", fmt], None);
        assert!(o.ok, "{}", o.stderr);
        assert!(!o.stdout.contains("hunter2"), "{}", o.stdout);
        assert!(o.stdout.contains("<redacted>"), "{}", o.stdout);
        assert!(o.stdout.contains("192.0.2.1"));
    }
    let o = ctl(&etcd, &["get", "bgppeers", "-o", "yaml"], None);
    assert!(o.stdout.contains("kind: BGPPeerList"), "{}", o.stdout);
    assert!(!o.stdout.contains("hunter2"));

    // Writing back what get printed keeps the stored password, not the redaction marker.
    let printed = ctl(&etcd, &["get", "bgppeers", "-o", "yaml"], None).stdout;
    let o = ctl(&etcd, &["apply", "-f", "-"], Some(&printed));
    assert!(o.ok, "{}", o.stderr);
    assert_eq!(o.stdout, "Successfully applied 2 'BGPPeer' resource(s)\n");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let stored = rt.block_on(async {
        let store = etcd.store().await;
        store.get::<BgpPeerSpec>("tor1").await.unwrap().unwrap()
    });
    assert_eq!(
        stored
            .spec
            .password
            .unwrap()
            .value
            .as_ref()
            .map(margay_common::Secret::expose),
        Some("hunter2-secret")
    );

    let o = ctl(&etcd, &["create", "-f", &f], None);
    assert!(!o.ok);
    assert!(
        o.stderr.contains(
            "Failed to create 'BGPPeer' resource: resource already exists: BGPPeer(tor1)"
        ),
        "{}",
        o.stderr
    );

    let changed = file(&dir, "changed.yaml", &PEERS.replace("65001", "65009"));
    let o = ctl(&etcd, &["replace", "-f", &changed], None);
    assert!(o.ok, "{}", o.stderr);
    assert_eq!(o.stdout, "Successfully replaced 2 'BGPPeer' resource(s)\n");
    let o = ctl(&etcd, &["get", "bgppeers", "tor1"], None);
    assert!(o.stdout.contains("65009"), "{}", o.stdout);

    let o = ctl(&etcd, &["delete", "-f", &f], None);
    assert!(o.ok, "{}", o.stderr);
    assert_eq!(o.stdout, "Successfully deleted 2 'BGPPeer' resource(s)\n");
    let o = ctl(&etcd, &["get", "bgppeers"], None);
    assert_eq!(o.stdout.lines().count(), 1, "only the header: {}", o.stdout);

    let o = ctl(&etcd, &["get", "bgppeer", "tor1"], None);
    assert!(!o.ok);
    assert!(
        o.stderr.contains("resource does not exist: BGPPeer(tor1)"),
        "{}",
        o.stderr
    );
    let o = ctl(&etcd, &["replace", "-f", &f], None);
    assert!(!o.ok);
    assert!(o.stderr.contains("resource does not exist"), "{}", o.stderr);
}

#[test]
fn apply_json_list_from_stdin_and_ippool_tables() {
    let etcd = EtcdServer::start();
    let list = r#"{"apiVersion":"v1","kind":"List","items":[
      {"apiVersion":"projectcalico.org/v3","kind":"IPPool","metadata":{"name":"pool4"},
       "spec":{"cidr":"10.244.0.0/16","ipipMode":"CrossSubnet","natOutgoing":true}},
      {"apiVersion":"margay.io/v1","kind":"Node","metadata":{"name":"node-1"},
       "spec":{"bgp":{"ipv4Address":"10.0.0.1/24","asNumber":65000}}}]}"#;
    let o = ctl(&etcd, &["apply", "-f", "-"], Some(list));
    assert!(o.ok, "{}", o.stderr);
    assert_eq!(o.stdout, "Successfully applied 2 resource(s)\n");

    let o = ctl(&etcd, &["get", "ippools"], None);
    let lines: Vec<Vec<&str>> = o
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines,
        [
            vec!["NAME", "CIDR", "SELECTOR"],
            vec!["pool4", "10.244.0.0/16", "all()"]
        ]
    );

    let o = ctl(&etcd, &["get", "ippool", "-o", "wide"], None);
    let lines: Vec<Vec<&str>> = o
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0][..5],
        ["NAME", "CIDR", "NAT", "IPIPMODE", "VXLANMODE"]
    );
    assert_eq!(
        lines[1][..5],
        ["pool4", "10.244.0.0/16", "true", "CrossSubnet", "Never"]
    );

    let o = ctl(&etcd, &["get", "ippools", "-o", "json"], None);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).expect("json output");
    assert_eq!(v["kind"], "IPPoolList");
    assert_eq!(v["items"][0]["spec"]["blockSize"], 26);

    let o = ctl(&etcd, &["get", "nodes", "-o", "wide"], None);
    let lines: Vec<Vec<&str>> = o
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[1], ["node-1", "65000", "10.0.0.1/24"]);

    let o = ctl(&etcd, &["delete", "ippool", "pool4"], None);
    assert!(o.ok, "{}", o.stderr);
    assert_eq!(o.stdout, "Successfully deleted 1 'IPPool' resource(s)\n");
}

#[test]
fn invalid_file_is_rejected_with_resource_field_and_cause() {
    let etcd = EtcdServer::start();
    let bad = PEERS.replace("192.0.2.1", "10.0.0.300");
    let o = ctl(&etcd, &["apply", "-f", "-"], Some(&bad));
    assert!(!o.ok);
    assert!(
        o.stderr
            .contains("BGPPeer 'tor1': spec.peerIP: '10.0.0.300' is not an IP address"),
        "{}",
        o.stderr
    );
    let o = ctl(&etcd, &["get", "bgppeers"], None);
    assert_eq!(o.stdout.lines().count(), 1, "nothing was written");

    let o = ctl(&etcd, &["get", "frobnicators"], None);
    assert!(!o.ok);
    assert!(
        o.stderr.contains("unknown resource kind 'frobnicators'"),
        "{}",
        o.stderr
    );
}

const FILTERS: &str = r#"
apiVersion: projectcalico.org/v3
kind: BGPFilter
metadata:
  name: tor-out
spec:
  exportV4:
    - action: Accept
      matchOperator: In
      cidr: 10.244.0.0/16
      prefixLength: {min: 24, max: 32}
    - action: Accept
      source: RemotePeers
      matchOperator: Equal
      cidr: 0.0.0.0/0
    - action: Reject
      interface: "eth*"
  importV6:
    - action: Reject
      matchOperator: NotIn
      cidr: "fd00::/48"
"#;

#[test]
fn apply_get_round_trip_and_delete_bgp_filters() {
    let etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let f = file(&dir, "filters.yaml", FILTERS);

    let o = ctl(&etcd, &["apply", "-f", &f], None);
    assert!(o.ok, "{}", o.stderr);
    assert_eq!(o.stdout, "Successfully applied 1 'BGPFilter' resource(s)\n");
    assert_eq!(
        o.stderr, "",
        "every BGPFilter field is acted on: no warning"
    );

    // calicoctl's names for the kind all work; the table counts each list's rules.
    for kind in ["bgpfilters", "bgpfilter", "BGPFilter", "bgpf"] {
        let o = ctl(&etcd, &["get", kind], None);
        assert!(o.ok, "{kind}: {}", o.stderr);
        let rows: Vec<Vec<&str>> = o
            .stdout
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            rows,
            [
                vec!["NAME", "EXPORTV4", "IMPORTV4", "EXPORTV6", "IMPORTV6"],
                vec!["tor-out", "3", "0", "0", "1"]
            ],
            "{kind}"
        );
    }

    // get -o yaml prints what apply takes back unchanged.
    let printed = ctl(&etcd, &["get", "bgpfilter", "tor-out", "-o", "yaml"], None);
    assert!(printed.ok, "{}", printed.stderr);
    let want: serde_json::Value = serde_norway::from_str(FILTERS).unwrap();
    let got: serde_json::Value = serde_norway::from_str(&printed.stdout).unwrap();
    assert_eq!(got["spec"], want["spec"], "{}", printed.stdout);
    let o = ctl(&etcd, &["apply", "-f", "-"], Some(&printed.stdout));
    assert!(o.ok, "{}", o.stderr);
    let again = ctl(&etcd, &["get", "bgpfilter", "tor-out", "-o", "json"], None);
    let again: serde_json::Value = serde_json::from_str(&again.stdout).unwrap();
    assert_eq!(again["spec"], want["spec"]);

    let o = ctl(&etcd, &["delete", "bgpfilter", "tor-out"], None);
    assert!(o.ok, "{}", o.stderr);
    assert_eq!(o.stdout, "Successfully deleted 1 'BGPFilter' resource(s)\n");
    let o = ctl(&etcd, &["get", "bgpfilters"], None);
    assert_eq!(o.stdout.lines().count(), 1, "only the header: {}", o.stdout);
}

#[test]
fn bad_bgp_filter_is_rejected_naming_rule_index_and_field() {
    let etcd = EtcdServer::start();
    let bad = FILTERS.replace("cidr: 0.0.0.0/0", "cidr: 10.0.0.0/33");
    let o = ctl(&etcd, &["apply", "-f", "-"], Some(&bad));
    assert!(!o.ok);
    assert!(
        o.stderr.contains(
            "BGPFilter 'tor-out': spec.exportV4[1].cidr: '10.0.0.0/33' is not an IPv4 CIDR"
        ),
        "{}",
        o.stderr
    );
    let bad = FILTERS.replace("cidr: \"fd00::/48\"", "cidr: 10.0.0.0/8");
    let o = ctl(&etcd, &["apply", "-f", "-"], Some(&bad));
    assert!(!o.ok);
    assert!(
        o.stderr
            .contains("spec.importV6[0].cidr: '10.0.0.0/8' is not an IPv6 CIDR"),
        "{}",
        o.stderr
    );
    let o = ctl(&etcd, &["get", "bgpfilters"], None);
    assert_eq!(o.stdout.lines().count(), 1, "nothing was written");
}

#[test]
fn apply_warns_once_per_field_that_is_accepted_but_not_acted_on() {
    let etcd = EtcdServer::start();
    let text = r#"
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec:
  asNumber: 64513
  localWorkloadPeeringIPV4: 169.254.0.179
  programClusterRoutes: Enabled
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: tor}
spec: {peerIP: 192.0.2.1, asNumber: 65001, keepaliveTime: 20s, nextHopMode: Keep}
"#;
    let o = ctl(&etcd, &["apply", "-f", "-"], Some(text));
    assert!(o.ok, "{}", o.stderr);
    assert_eq!(o.stdout, "Successfully applied 2 resource(s)\n");
    let warnings: Vec<&str> = o.stderr.lines().collect();
    assert_eq!(warnings.len(), 3, "{}", o.stderr);
    assert!(warnings[0].starts_with(
        "warning: BGPConfiguration 'default': spec.localWorkloadPeeringIPV4 is accepted but not acted on: "
    ));
    assert!(warnings[1].starts_with(
        "warning: BGPConfiguration 'default': spec.programClusterRoutes is accepted but not acted on: "
    ));
    assert!(
        warnings[2]
            .starts_with("warning: BGPPeer 'tor': spec.nextHopMode is accepted but not acted on: ")
    );
    // The fields are stored as written.
    let o = ctl(&etcd, &["get", "bgpconfig", "default", "-o", "yaml"], None);
    assert!(
        o.stdout.contains("localWorkloadPeeringIPV4: 169.254.0.179"),
        "{}",
        o.stdout
    );
}

#[test]
fn unreachable_etcd_exits_nonzero_with_the_cause() {
    let o = Command::new(env!("CARGO_BIN_EXE_margayctl"))
        .args(["get", "nodes", "--etcd-endpoints", "http://127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("etcd"), "{err}");
}

#[test]
fn ipam_show_check_and_release() {
    let etcd = EtcdServer::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (leaked, kept) = rt.block_on(async {
        let store = etcd.store().await;
        let mut spec = IpPoolSpec {
            cidr: "10.50.0.0/24".into(),
            ..IpPoolSpec::default()
        };
        spec.apply_defaults();
        let p: IpPool = Resource::new("p", spec);
        store.create(&p).await.unwrap();
        let n: Node = Resource::new("n1", NodeSpec::default());
        store.create(&n).await.unwrap();
        let ipam = Ipam::new(store);
        let attrs = BTreeMap::new();
        let leaked = ipam
            .auto_assign(&handle_for_container("dead"), "n1", &attrs, 2, 0, &[])
            .await
            .unwrap();
        let kept = ipam
            .assign_ip(
                "10.50.0.200".parse().unwrap(),
                "ipip-tunnel-addr-n1",
                "n1",
                &attrs,
            )
            .await
            .map(|_| "10.50.0.200".to_string())
            .unwrap();
        (leaked.v4, kept)
    });

    let o = ctl(&etcd, &["ipam", "show", "--show-blocks"], None);
    assert!(o.ok, "{}", o.stderr);
    assert!(o.stdout.contains("GROUPING"), "{}", o.stdout);
    let pool_row = o
        .stdout
        .lines()
        .find(|l| l.contains("10.50.0.0/24"))
        .unwrap();
    assert!(
        pool_row.contains("IP Pool") && pool_row.contains("256") && pool_row.contains("3 (1%)"),
        "{pool_row}"
    );
    assert!(
        o.stdout.lines().filter(|l| l.contains("| Block")).count() >= 2,
        "{}",
        o.stdout
    );

    let o = ctl(&etcd, &["ipam", "check"], None);
    assert!(o.ok, "{}", o.stderr);
    let handle = handle_for_container("dead");
    assert!(
        o.stdout
            .contains(&format!("handle without endpoint: {handle}")),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("Found 1 problem(s)."), "{}", o.stdout);

    let o = ctl(&etcd, &["ipam", "release", "--handle", &handle], None);
    assert!(o.ok, "{}", o.stderr);
    assert!(o.stdout.contains("2 address(es)"), "{}", o.stdout);
    for ip in &leaked {
        assert!(o.stdout.contains(&ip.to_string()));
    }
    let o = ctl(&etcd, &["ipam", "check", "--json"], None);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["addresses_in_use"], 1);
    assert_eq!(v["handles_without_endpoint"].as_array().unwrap().len(), 0);

    let o = ctl(&etcd, &["ipam", "release", "--ip", &kept], None);
    assert!(o.ok, "{}", o.stderr);
    assert_eq!(
        o.stdout,
        format!("Successfully released IP address {kept}\n")
    );
    let o = ctl(&etcd, &["ipam", "release", "--ip", &kept], None);
    assert!(!o.ok);
    assert!(
        o.stderr
            .contains(&format!("IP address {kept} is not assigned")),
        "{}",
        o.stderr
    );
    let o = ctl(&etcd, &["ipam", "release"], None);
    assert!(!o.ok, "release needs a target");
}

#[test]
fn ipam_configure_split_and_show_borrowed() {
    let etcd = EtcdServer::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let borrowed_ip = rt.block_on(async {
        let store = etcd.store().await;
        let mut spec = IpPoolSpec {
            cidr: "10.60.0.0/29".into(),
            block_size: Some(30),
            nat_outgoing: true,
            ..IpPoolSpec::default()
        };
        spec.apply_defaults();
        let p: IpPool = Resource::new("small", spec);
        store.create(&p).await.unwrap();
        for n in ["n1", "n2"] {
            let node: Node = Resource::new(n, NodeSpec::default());
            store.create(&node).await.unwrap();
        }
        let ipam = Ipam::new(store);
        let attrs = |n: &str| -> BTreeMap<String, String> { [("node".into(), n.into())].into() };
        // n1 and n2 take a block each; n2's fifth address is borrowed from n1's block.
        ipam.auto_assign(&handle_for_container("a"), "n1", &attrs("n1"), 1, 0, &[])
            .await
            .unwrap();
        let mut last = None;
        for i in 0..5 {
            last = Some(
                ipam.auto_assign(
                    &handle_for_container(&format!("b{i}")),
                    "n2",
                    &attrs("n2"),
                    1,
                    0,
                    &[],
                )
                .await
                .unwrap()
                .v4[0],
            );
        }
        last.unwrap().to_string()
    });

    let o = ctl(&etcd, &["ipam", "show", "--show-borrowed"], None);
    assert!(o.ok, "{}", o.stderr);
    assert!(
        o.stdout.contains(&borrowed_ip) && o.stdout.contains("n2") && o.stdout.contains("n1"),
        "{}",
        o.stdout
    );

    let o = ctl(
        &etcd,
        &[
            "ipam",
            "configure",
            "--strictaffinity=true",
            "--max-blocks-per-host",
            "2",
            "--leak-grace-period",
            "90s",
        ],
        None,
    );
    assert!(o.ok, "{}", o.stderr);
    let o = ctl(&etcd, &["ipam", "show", "--show-configuration"], None);
    assert!(o.ok, "{}", o.stderr);
    for row in [
        "StrictAffinity",
        "true",
        "MaxBlocksPerHost",
        "LeakGracePeriod",
        "90s",
        "Collector",
        "(none elected)",
    ] {
        assert!(o.stdout.contains(row), "{row}: {}", o.stdout);
    }
    let o = ctl(
        &etcd,
        &["ipam", "configure", "--node-grace-period", "soon"],
        None,
    );
    assert!(
        !o.ok && o.stderr.contains("--node-grace-period"),
        "{}",
        o.stderr
    );

    // Split the /29 into two /30 pools; the addresses in use stay, each in its new pool.
    let o = ctl(&etcd, &["ipam", "split", "10.60.0.0/29", "2"], None);
    assert!(o.ok, "{}", o.stderr);
    let o = ctl(&etcd, &["get", "ippools", "-o", "yaml"], None);
    assert!(o.ok, "{}", o.stderr);
    assert!(!o.stdout.contains("name: small\n"), "{}", o.stdout);
    for want in [
        "split-small-1",
        "10.60.0.0/30",
        "split-small-2",
        "10.60.0.4/30",
        "natOutgoing: true",
    ] {
        assert!(o.stdout.contains(want), "{want}: {}", o.stdout);
    }
    let o = ctl(&etcd, &["ipam", "check", "--json"], None);
    assert!(o.stdout.contains("\"addresses_in_use\": 6"), "{}", o.stdout);
    let o = ctl(&etcd, &["ipam", "split", "10.60.0.0/30", "2"], None);
    assert!(!o.ok && o.stderr.contains("smaller than"), "{}", o.stderr);
}

/// Calico's IPAMConfiguration manifest, as Calico writes it, applied with `margayctl apply`:
/// the IPAM acts on it, `ipam show --show-configuration` and `get` show it, `ipam configure`
/// changes the same record (a grace period moves it to margay's group), and a second name
/// or a margay-only field under Calico's group are refused.
#[test]
fn ipam_configuration_manifest_applies_and_is_the_ipam_configure_record() {
    let etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let manifest = file(
        &dir,
        "ipamconfig.yaml",
        "apiVersion: projectcalico.org/v3\nkind: IPAMConfiguration\nmetadata:\n  name: default\n\
         spec:\n  strictAffinity: true\n  maxBlocksPerHost: 3\n  autoAllocateBlocks: true\n",
    );
    let o = ctl(&etcd, &["apply", "-f", &manifest], None);
    assert!(o.ok, "{}", o.stderr);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cfg = rt.block_on(async { Ipam::new(etcd.store().await).config().await.unwrap() });
    assert!(cfg.strict_affinity);
    assert_eq!(cfg.max_blocks_per_host, 3);

    let o = ctl(&etcd, &["get", "ipamconfig"], None);
    assert!(o.ok, "{}", o.stderr);
    assert!(
        o.stdout.contains("STRICTAFFINITY") && o.stdout.contains("default"),
        "{}",
        o.stdout
    );
    let o = ctl(&etcd, &["ipam", "show", "--show-configuration"], None);
    assert!(o.stdout.contains("MaxBlocksPerHost"), "{}", o.stdout);
    assert!(o.stdout.contains("| 3 "), "{}", o.stdout);

    let o = ctl(
        &etcd,
        &[
            "ipam",
            "configure",
            "--max-blocks-per-host",
            "5",
            "--leak-grace-period",
            "2m",
        ],
        None,
    );
    assert!(o.ok, "{}", o.stderr);
    let o = ctl(
        &etcd,
        &["get", "ipamconfigurations", "default", "-o", "yaml"],
        None,
    );
    assert!(o.ok, "{}", o.stderr);
    for want in [
        "apiVersion: margay.io/v1",
        "strictAffinity: true",
        "maxBlocksPerHost: 5",
        "leakGracePeriod: 120s",
    ] {
        assert!(o.stdout.contains(want), "{want}: {}", o.stdout);
    }
    // What get printed applies again unchanged.
    let again = file(&dir, "again.yaml", &o.stdout);
    let o = ctl(&etcd, &["apply", "-f", &again], None);
    assert!(o.ok, "{}", o.stderr);

    let other = file(
        &dir,
        "other.yaml",
        "apiVersion: projectcalico.org/v3\nkind: IPAMConfiguration\nmetadata: {name: mine}\n\
         spec: {strictAffinity: false}\n",
    );
    let o = ctl(&etcd, &["apply", "-f", &other], None);
    assert!(
        !o.ok && o.stderr.contains("must be 'default'"),
        "{}",
        o.stderr
    );
    let mixed = file(
        &dir,
        "mixed.yaml",
        "apiVersion: projectcalico.org/v3\nkind: IPAMConfiguration\nmetadata: {name: default}\n\
         spec: {strictAffinity: false, nodeGracePeriod: 10m}\n",
    );
    let o = ctl(&etcd, &["apply", "-f", &mixed], None);
    assert!(!o.ok && o.stderr.contains("margay.io/v1"), "{}", o.stderr);

    // Deleted: the defaults again.
    let o = ctl(&etcd, &["delete", "ipamconfiguration", "default"], None);
    assert!(o.ok, "{}", o.stderr);
    let cfg = rt.block_on(async { Ipam::new(etcd.store().await).config().await.unwrap() });
    assert_eq!(cfg, margay_datastore::ipam::IpamConfig::default());
}
