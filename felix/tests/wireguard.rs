//! WireGuard on this machine's kernel, which has no wireguard module: everything that does not
//! need the device (the VM test, wireguard_vm.rs, runs the rest). A real etcd and a dual-stack
//! node namespace running margay-felix:
//! - the Node's keys: felix's publisher writes `status.wireguardPublicKeyV6` beside
//!   `status.wireguardPublicKey` (and other status fields) in etcd, and clears one without
//!   touching the other;
//! - the missing module: with `wireguardEnabledV6` (and then `wireguardEnabled`) felix says why
//!   it cannot encrypt, in its readiness and its log, creates no rule and publishes no key, and
//!   is ready again once the FelixConfiguration turns WireGuard off. On a kernel that has the
//!   module the same steps check the other side instead: the device is made and its key
//!   published (the VM test checks the traffic).

mod common;

use std::time::Duration;

use common::{http_get, ip_json, store_in};
use ipnet::IpNet;
use margay_datastore::resources::{NodeSpec, Resource};
use margay_felix::wireguard::keeper::{STATUS_KEY, STATUS_KEY_V6, publish, published_key};
use margay_lab::{Etcd, Felix, FelixArgs, HasLogs, Lab, Netns, wait_for};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);
const K4: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE=";
const K6: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAI=";

fn status(etcd: &Etcd, node: &str) -> Value {
    let node = node.to_string();
    store_in(etcd.netns(), &etcd.endpoint(), move |s| async move {
        s.get::<NodeSpec>(&node)
            .await
            .unwrap()
            .and_then(|r| r.status)
            .unwrap_or(Value::Null)
    })
}

#[test]
fn the_ipv6_key_is_published_beside_the_ipv4_key_in_etcd() {
    let lab = Lab::new("the_ipv6_key_is_published_beside_the_ipv4_key_in_etcd").unwrap();
    let sw = lab.switch("sw").unwrap();
    let etcd = Etcd::on_switch(&lab, &sw).unwrap();
    let mut node = Resource::new("n1", NodeSpec::default());
    node.status = Some(json!({STATUS_KEY: K4, "podCIDRs": ["10.1.0.0/24"]}));
    let url = etcd.endpoint();
    store_in(etcd.netns(), &url, move |s| async move {
        s.create(&node).await.unwrap();
        assert!(publish(&s, "n1", true, Some(K6)).await.unwrap());
        // Publishing the same key again is a no-op that succeeds.
        assert!(publish(&s, "n1", true, Some(K6)).await.unwrap());
        // A Node that does not exist is reported, not created.
        assert!(!publish(&s, "nobody", true, Some(K6)).await.unwrap());
        assert!(s.get::<NodeSpec>("nobody").await.unwrap().is_none());
    });
    let st = status(&etcd, "n1");
    assert_eq!(st[STATUS_KEY_V6], K6, "{st}");
    assert_eq!(st[STATUS_KEY], K4, "the IPv4 key stays: {st}");
    assert_eq!(
        st["podCIDRs"][0], "10.1.0.0/24",
        "other status fields stay: {st}"
    );
    let got = store_in(etcd.netns(), &url, |s| async move {
        let r = s.get::<NodeSpec>("n1").await.unwrap().unwrap();
        (published_key(&r, false), published_key(&r, true))
    });
    assert_eq!(got, (Some(K4.to_string()), Some(K6.to_string())));
    // Clearing the IPv6 key (IPv6 WireGuard turned off) leaves the IPv4 one.
    store_in(etcd.netns(), &url, |s| async move {
        assert!(publish(&s, "n1", true, None).await.unwrap());
    });
    let st = status(&etcd, "n1");
    assert!(st.get(STATUS_KEY_V6).is_none(), "{st}");
    assert_eq!(st[STATUS_KEY], K4, "{st}");
}

/// `/readiness` of felix in `ns`: (status code, body).
fn readiness(ns: &Netns) -> Result<(u16, String), String> {
    http_get(ns, 9099, "/readiness")
}

fn wg_rules(ns: &Netns) -> Vec<Value> {
    let mut all = ip_json(ns, &["-4", "rule", "show"]);
    all.extend(ip_json(ns, &["-6", "rule", "show"]));
    all.into_iter().filter(|r| r["priority"] == 99).collect()
}

#[test]
fn without_the_wireguard_module_felix_says_why_and_encrypts_nothing() {
    let lab = Lab::new("without_the_wireguard_module_felix_says_why_and_encrypts_nothing").unwrap();
    let probe = lab.netns("probe").unwrap();
    let has_module = probe
        .ip(&["link", "add", "wgprobe", "type", "wireguard"])
        .is_ok();
    eprintln!(
        "this kernel {} wireguard devices: checking the {} path",
        if has_module { "makes" } else { "cannot make" },
        if has_module {
            "working"
        } else {
            "missing-module"
        }
    );
    let sw = lab.switch("sw").unwrap();
    let etcd = Etcd::on_switch(&lab, &sw).unwrap();
    etcd.apply(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pool4}\n\
         spec: {cidr: 10.104.0.0/16, vxlanMode: Always}\n---\n\
         apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pool6}\n\
         spec: {cidr: 'fd00:104::/48', blockSize: 122, vxlanMode: Always}\n",
    )
    .unwrap();
    let ns = lab.netns("n1").unwrap();
    let addr = sw.attach(&ns).unwrap();
    ns.ip(&["route", "add", "default", "via", &etcd.ip().to_string()])
        .unwrap();
    let args = FelixArgs::new(
        "n1",
        &etcd.endpoint(),
        &lab.dir().join("n1-no-bgpd.sock"),
        &lab.dir().join("n1-felix.sock"),
    )
    .without_bgp_dual(Some(IpNet::V4(addr.v4)), IpNet::V6(addr.v6));
    let mut args = args;
    args.resync_interval = 1;
    let mut felix =
        Felix::start_cluster(&lab, &ns, "felix-n1", args).unwrap_or_else(|e| panic!("{e}"));
    let log_paths = {
        let (out, err) = felix.process().log_paths();
        [out.to_path_buf(), err.to_path_buf()]
    };
    let log = || {
        log_paths
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .collect::<String>()
    };
    let logs: Vec<&dyn HasLogs> = vec![&felix, &etcd];

    for (field, device, family) in [
        ("wireguardEnabledV6", "wg-v6.margay", "IPv6"),
        ("wireguardEnabled", "wg.margay", "IPv4"),
    ] {
        etcd.apply(&format!(
            "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\n\
             metadata: {{name: default}}\nspec: {{{field}: true}}\n"
        ))
        .unwrap();
        if has_module {
            let key = if family == "IPv6" {
                STATUS_KEY_V6
            } else {
                STATUS_KEY
            };
            wait_for(
                &format!("{device} made, {key} published"),
                WAIT,
                &logs,
                || {
                    let st = status(&etcd, "n1");
                    // `ip link show DEV` fails until the device exists.
                    let links = ns.ip_json(&["link", "show", device]).unwrap_or_default();
                    match (st.get(key), links.len()) {
                        (Some(_), 1) => Ok(()),
                        _ => Err(format!("status {st}, links {links:?}")),
                    }
                },
            )
            .unwrap_or_else(|e| panic!("{e}"));
            continue;
        }
        let body = wait_for(
            &format!("felix reports the missing module for {device}"),
            WAIT,
            &logs,
            || match readiness(&ns)? {
                (503, body) if body.contains(device) => Ok(body),
                (code, body) => Err(format!("{code}: {body}")),
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let want = format!(
            "wireguard ({family}): cannot create {device}: this kernel has no wireguard module"
        );
        assert!(body.contains(&want), "readiness lacks {want:?}: {body}");
        assert!(body.contains("modprobe wireguard"), "{body}");
        let text = log();
        assert!(
            text.contains("this kernel has no wireguard module") && text.contains(family),
            "felix's log does not say it:\n{text}"
        );
        // Nothing half made: no rule sends traffic to an empty table, no key is published.
        assert!(wg_rules(&ns).is_empty(), "rules: {:?}", wg_rules(&ns));
        let links = ip_json(&ns, &["link", "show"]);
        assert!(
            !links.iter().any(|l| l["ifname"] == device),
            "{device} exists: {links:?}"
        );
        let st = status(&etcd, "n1");
        assert!(
            st.get(STATUS_KEY_V6).is_none() && st.get(STATUS_KEY).is_none(),
            "a key was published: {st}"
        );
    }
    // Off again: the reasons go, felix is ready.
    etcd.apply(
        "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\n\
         spec: {wireguardEnabled: false, wireguardEnabledV6: false}\n",
    )
    .unwrap();
    wait_for(
        "felix ready with WireGuard off",
        WAIT,
        &logs,
        || match readiness(&ns)? {
            (200, _) => Ok(()),
            (code, body) => Err(format!("{code}: {body}")),
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
}
