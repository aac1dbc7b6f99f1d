//! Delegated IPAM with the reference `host-local` plugin (Debian's containernetworking-plugins,
//! /usr/lib/cni): the plugin executes it, host-local really allocates in its data dir, and the
//! address reaches felix (the gRPC double).

mod common;

use common::felix_double::{FelixDouble, Recorded};
use common::{attachment_env, run_plugin};
use serde_json::json;
use std::path::Path;

const HOST_LOCAL: &str = "/usr/lib/cni/host-local";
const NETNS: &str = "/var/run/netns/cni-test-2";

fn conf(version: &str, felix: &FelixDouble, data_dir: &Path) -> serde_json::Value {
    assert!(
        Path::new(HOST_LOCAL).exists(),
        "{HOST_LOCAL} missing: run scripts/install-deps.sh (containernetworking-plugins)"
    );
    json!({
        "cniVersion": version,
        "name": "delegated-net",
        "type": "margay",
        "felix_socket": felix.socket().to_str().unwrap(),
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": "10.77.0.0/24", "rangeStart": "10.77.0.10", "rangeEnd": "10.77.0.20"}]],
            "dataDir": data_dir.to_str().unwrap(),
        },
    })
}

/// host-local's record of `ip`: a file named after it holding the container id.
fn allocation(data_dir: &Path, ip: &str) -> Option<String> {
    std::fs::read_to_string(data_dir.join("delegated-net").join(ip)).ok()
}

#[test]
fn add_allocates_with_host_local_and_passes_the_address_to_felix() {
    for version in ["0.4.0", "1.0.0"] {
        let felix = FelixDouble::start();
        let data = tempfile::tempdir().unwrap();
        let c = conf(version, &felix, data.path()).to_string();
        let r = run_plugin(&attachment_env("ADD", "ctr-hl", NETNS), &c);
        r.assert_ok();
        // host-local allocated the first address of the range, on disk.
        let owner = allocation(data.path(), "10.77.0.10").expect("host-local allocation file");
        assert!(owner.starts_with("ctr-hl"), "{owner}");
        // felix got it as a delegated address.
        let add = felix
            .requests()
            .into_iter()
            .find_map(|r| match r {
                Recorded::Add(a) => Some(a),
                _ => None,
            })
            .unwrap();
        match add.ipam {
            Some(margay_proto::felix::v1::add_endpoint_request::Ipam::Delegated(d)) => {
                assert_eq!(d.plugin, "host-local");
                assert_eq!(d.ips.len(), 1);
                assert_eq!(d.ips[0].address, "10.77.0.10/24");
                assert_eq!(d.ips[0].gateway, "10.77.0.1");
            }
            other => panic!("expected delegated IPAM, got {other:?}"),
        }
        assert_eq!(r.json()["ips"][0]["address"], "10.77.0.10/32", "{version}");

        // DEL tells felix not to release, and releases through host-local.
        run_plugin(&attachment_env("DEL", "ctr-hl", NETNS), &c).assert_ok();
        assert_eq!(allocation(data.path(), "10.77.0.10"), None);
        let del = felix
            .requests()
            .into_iter()
            .find_map(|r| match r {
                Recorded::Delete(d) => Some(d),
                _ => None,
            })
            .unwrap();
        assert!(del.delegated_ipam);
    }
}

#[test]
fn failed_felix_add_gives_the_delegated_address_back() {
    let felix = FelixDouble::start();
    felix.state.lock().unwrap().fail_add =
        Some((tonic::Code::Internal, "creating veth: File exists".into()));
    let data = tempfile::tempdir().unwrap();
    let c = conf("1.0.0", &felix, data.path()).to_string();
    let r = run_plugin(&attachment_env("ADD", "ctr-fail", NETNS), &c);
    assert_eq!(r.error_code(), 103);
    // host-local did allocate (felix was offered its address) and the address was released.
    assert!(
        felix
            .requests()
            .iter()
            .any(|r| matches!(r, Recorded::Add(_)))
    );
    assert!(
        data.path()
            .join("delegated-net")
            .join("last_reserved_ip.0")
            .exists()
    );
    assert_eq!(allocation(data.path(), "10.77.0.10"), None);
}

#[test]
fn host_local_errors_are_passed_on() {
    let felix = FelixDouble::start();
    let data = tempfile::tempdir().unwrap();
    let mut c = conf("1.0.0", &felix, data.path());
    // A range host-local refuses: its own error JSON comes back to the runtime.
    c["ipam"]["ranges"] = json!([[{"subnet": "not-a-subnet"}]]);
    let r = run_plugin(&attachment_env("ADD", "ctr-bad", NETNS), &c.to_string());
    assert_ne!(r.code, 0);
    assert!(r.msg().starts_with("IPAM plugin host-local"), "{r:?}");
    assert!(
        felix.requests().is_empty(),
        "felix must not be asked: {:?}",
        felix.requests()
    );
}

#[test]
fn missing_ipam_plugin_is_code_105() {
    let felix = FelixDouble::start();
    let data = tempfile::tempdir().unwrap();
    let mut c = conf("1.0.0", &felix, data.path());
    c["ipam"]["type"] = json!("no-such-ipam");
    let r = run_plugin(&attachment_env("ADD", "ctr-x", NETNS), &c.to_string());
    assert_eq!(r.error_code(), 105);
    assert!(r.msg().contains("no-such-ipam"), "{r:?}");
}
