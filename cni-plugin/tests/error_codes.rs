//! The binary run as a runtime runs it, with no felix listening: VERSION, and every CNI error
//! code the plugin can give without felix (1, 2, 4, 5, 6, 7, 11, 50).

mod common;

use common::{attachment_env, netconf, run_plugin};
use serde_json::json;
use std::path::Path;

fn no_felix() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("felix.sock");
    (dir, socket)
}

#[test]
fn version_lists_supported_versions() {
    let r = run_plugin(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion": "0.4.0"}"#);
    r.assert_ok();
    let v = r.json();
    assert_eq!(v["cniVersion"], "0.4.0");
    assert_eq!(
        v["supportedVersions"],
        json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );
    // Without a version on stdin (or with one margay does not speak) it answers in its newest.
    let r = run_plugin(&[("CNI_COMMAND", "VERSION")], "");
    r.assert_ok();
    assert_eq!(r.json()["cniVersion"], "1.1.0");
}

#[test]
fn unsupported_cni_version_is_code_1() {
    let (_d, socket) = no_felix();
    let mut conf = netconf("0.2.0", &socket);
    conf["cniVersion"] = json!("0.2.0");
    let r = run_plugin(
        &attachment_env("ADD", "c1", "/var/run/netns/x"),
        &conf.to_string(),
    );
    assert_eq!(r.error_code(), 1);
    assert!(r.msg().contains("0.2.0"), "{r:?}");
}

#[test]
fn check_before_0_4_0_and_gc_status_before_1_1_0_are_code_1() {
    let (_d, socket) = no_felix();
    let r = run_plugin(
        &attachment_env("CHECK", "c1", "/var/run/netns/x"),
        &netconf("0.3.1", &socket).to_string(),
    );
    assert_eq!(r.error_code(), 1);
    assert_eq!(r.json()["cniVersion"], "0.3.1");
    for cmd in ["GC", "STATUS"] {
        let r = run_plugin(
            &[("CNI_COMMAND", cmd), ("CNI_PATH", "/usr/lib/cni")],
            &netconf("1.0.0", &socket).to_string(),
        );
        assert_eq!(r.error_code(), 1, "{cmd}");
        assert!(r.msg().contains("1.1.0"), "{r:?}");
    }
}

#[test]
fn ip_masq_is_unsupported_field_code_2() {
    let (_d, socket) = no_felix();
    let mut conf = netconf("1.0.0", &socket);
    conf["ipMasq"] = json!(true);
    let r = run_plugin(
        &attachment_env("ADD", "c1", "/var/run/netns/x"),
        &conf.to_string(),
    );
    assert_eq!(r.error_code(), 2);
    assert!(r.msg().contains("ipMasq=true"), "{r:?}");
}

#[test]
fn missing_or_invalid_environment_is_code_4_naming_the_variable() {
    let (_d, socket) = no_felix();
    let conf = netconf("1.0.0", &socket).to_string();
    for var in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_COMMAND"] {
        let env: Vec<_> = attachment_env("ADD", "c1", "/var/run/netns/x")
            .into_iter()
            .filter(|(k, _)| *k != var)
            .collect();
        let r = run_plugin(&env, &conf);
        assert_eq!(r.error_code(), 4, "{var}");
        assert!(r.msg().contains(var), "{r:?}");
    }
    let mut env = attachment_env("ADD", "c1", "/var/run/netns/x");
    env.retain(|(k, _)| *k != "CNI_ARGS");
    env.push(("CNI_ARGS", "K8S_POD_NAME=web-0;COLOUR=blue"));
    let r = run_plugin(&env, &conf);
    assert_eq!(r.error_code(), 4);
    assert!(r.msg().contains("COLOUR=blue"), "{r:?}");
    let r = run_plugin(&attachment_env("ATTACH", "c1", "/var/run/netns/x"), &conf);
    assert_eq!(r.error_code(), 4);
    assert!(r.msg().contains("CNI_COMMAND"), "{r:?}");
}

#[test]
fn unwritable_log_file_is_io_failure_code_5() {
    let (dir, socket) = no_felix();
    // A regular file where the log's directory should be.
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, "x").unwrap();
    let mut conf = netconf("1.0.0", &socket);
    conf["log_file_path"] = json!(blocker.join("cni.log").to_str().unwrap());
    let r = run_plugin(
        &attachment_env("ADD", "c1", "/var/run/netns/x"),
        &conf.to_string(),
    );
    assert_eq!(r.error_code(), 5);
    assert!(r.msg().contains("log file"), "{r:?}");
}

#[test]
fn undecodable_stdin_is_code_6() {
    for stdin in [
        "",
        "{not json",
        r#"["a list"]"#,
        r#"{"cniVersion":"1.0.0","name":"n","type":"margay","mtu":"big"}"#,
    ] {
        let r = run_plugin(&attachment_env("ADD", "c1", "/var/run/netns/x"), stdin);
        assert_eq!(r.error_code(), 6, "{stdin}");
    }
}

#[test]
fn invalid_network_config_is_code_7() {
    let (_d, socket) = no_felix();
    let mut conf = netconf("1.0.0", &socket);
    conf["name"] = json!("has space");
    let r = run_plugin(
        &attachment_env("ADD", "c1", "/var/run/netns/x"),
        &conf.to_string(),
    );
    assert_eq!(r.error_code(), 7);
    assert!(r.msg().contains("name"), "{r:?}");
    let mut conf = netconf("1.0.0", &socket);
    conf["mtu"] = json!(10);
    let r = run_plugin(
        &attachment_env("ADD", "c1", "/var/run/netns/x"),
        &conf.to_string(),
    );
    assert_eq!(r.error_code(), 7);
    // CHECK without the result of ADD.
    let r = run_plugin(
        &attachment_env("CHECK", "c1", "/var/run/netns/x"),
        &netconf("1.0.0", &socket).to_string(),
    );
    assert_eq!(r.error_code(), 7);
    assert!(r.msg().contains("prevResult"), "{r:?}");
}

#[test]
fn no_felix_listening_is_try_again_later_code_11() {
    let (_d, socket) = no_felix();
    for (cmd, version) in [("ADD", "0.3.0"), ("DEL", "0.4.0"), ("ADD", "1.1.0")] {
        let r = run_plugin(
            &attachment_env(cmd, "c1", "/var/run/netns/x"),
            &netconf(version, &socket).to_string(),
        );
        assert_eq!(r.error_code(), 11, "{cmd}");
        assert_eq!(r.json()["cniVersion"], version);
        assert!(r.msg().contains("felix is unreachable"), "{r:?}");
        assert!(r.msg().contains(socket.to_str().unwrap()), "{r:?}");
    }
}

#[test]
fn socket_nobody_listens_on_is_code_11() {
    let (_d, socket) = no_felix();
    // A socket file left behind by a felix that died: connect is refused.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(Path::new(&socket).exists());
    let r = run_plugin(
        &attachment_env("ADD", "c1", "/var/run/netns/x"),
        &netconf("1.0.0", &socket).to_string(),
    );
    assert_eq!(r.error_code(), 11);
    assert!(r.msg().contains("refused"), "{r:?}");
}

#[test]
fn status_without_felix_is_not_available_code_50() {
    let (_d, socket) = no_felix();
    let r = run_plugin(
        &[("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/usr/lib/cni")],
        &netconf("1.1.0", &socket).to_string(),
    );
    assert_eq!(r.error_code(), 50);
}

#[test]
fn stdout_holds_only_the_error_json_and_logs_go_to_stderr() {
    let (_d, socket) = no_felix();
    let r = run_plugin(
        &attachment_env("ADD", "c1", "/var/run/netns/x"),
        &netconf("1.0.0", &socket).to_string(),
    );
    // One JSON document on stdout, nothing else; the log line is on stderr.
    assert_eq!(r.stdout.trim().lines().count(), 1, "{r:?}");
    r.json();
    assert!(r.stderr.contains("CNI request failed"), "{r:?}");
}

#[test]
fn logs_go_to_the_log_file_when_configured() {
    let (dir, socket) = no_felix();
    let log = dir.path().join("log").join("cni.log");
    let mut conf = netconf("1.0.0", &socket);
    conf["log_file_path"] = json!(log.to_str().unwrap());
    let r = run_plugin(
        &attachment_env("ADD", "c1", "/var/run/netns/x"),
        &conf.to_string(),
    );
    assert_eq!(r.error_code(), 11);
    assert!(!r.stderr.contains("CNI request failed"), "{r:?}");
    let written = std::fs::read_to_string(&log).unwrap();
    assert!(written.contains("felix is unreachable"), "{written}");
}
