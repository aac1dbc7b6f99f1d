//! Pods made the way a container runtime makes them: a network namespace per pod, then the CNI
//! plugin `margay` exec'd with the CNI environment (`CNI_COMMAND`, `CNI_CONTAINERID`,
//! `CNI_NETNS`, `CNI_IFNAME`, `CNI_ARGS` with the pod's namespace and name, `CNI_PATH`) and
//! the network configuration on stdin, derived from the node's conflist as libcni derives it
//! (the plugin's entry plus the list's `name` and `cniVersion`).

use std::io::Write;
use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use super::LabCtlError;
use crate::bgpd::margay_binary;

/// The network's name in every conflist (Calico's).
pub const NETWORK: &str = "k8s-pod-network";
/// The CNI spec version the conflists declare.
pub const CNI_VERSION: &str = "1.0.0";
/// The Kubernetes namespace of the lab's pods.
pub const POD_NAMESPACE: &str = "default";

/// Where the CNI plugin `margay` is (`$MARGAY_BIN_DIR`, else the cargo target dir).
pub fn plugin_binary() -> Result<PathBuf, LabCtlError> {
    Ok(margay_binary(
        "margay",
        "`cargo build -p margay-cni --bin margay`, or `scripts/lab.sh` builds it",
    )?)
}

/// `node`'s conflist, as an installer writes it into `/etc/cni/net.d` (IPv4 only).
pub fn conflist(node: &str, felix_socket: &Path, mtu: u32) -> Value {
    conflist_for(node, felix_socket, mtu, true, false)
}

/// `node`'s conflist for the families `v4` / `v6` (Calico's `assign_ipv4` / `assign_ipv6`).
pub fn conflist_for(node: &str, felix_socket: &Path, mtu: u32, v4: bool, v6: bool) -> Value {
    json!({
        "cniVersion": CNI_VERSION,
        "name": NETWORK,
        "plugins": [{
            "type": "margay",
            "mtu": mtu,
            "nodename": node,
            "felix_socket": felix_socket,
            "ipam": {
                "type": "margay-ipam",
                "assign_ipv4": v4.to_string(),
                "assign_ipv6": v6.to_string(),
            },
            "log_level": "warn",
        }],
    })
}

/// The configuration a runtime passes the list's first plugin on stdin.
pub fn plugin_config(conflist: &Value) -> Result<Value, LabCtlError> {
    let mut conf = conflist["plugins"][0].clone();
    let Some(obj) = conf.as_object_mut() else {
        return Err(LabCtlError::Usage(format!(
            "conflist has no plugins: {conflist}"
        )));
    };
    obj.insert("cniVersion".into(), conflist["cniVersion"].clone());
    obj.insert("name".into(), conflist["name"].clone());
    Ok(conf)
}

/// What a runtime knows about one pod's sandbox.
#[derive(Debug, Clone)]
pub struct Sandbox<'a> {
    pub pod: &'a str,
    pub container_id: &'a str,
    /// The `ip netns` name of the pod's namespace.
    pub netns: &'a str,
}

/// What ADD returned that the lab keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    /// The IPv4 address, or the IPv6 one when the pod has no IPv4.
    pub ip: IpAddr,
    /// The IPv6 address beside an IPv4 one.
    pub ip6: Option<Ipv6Addr>,
    /// The host side of the veth.
    pub interface: String,
}

/// Runs the plugin once: `command` (ADD, DEL, CHECK) for `sandbox` with `conflist` (a file).
/// Returns its stdout; a non-zero exit is an error with the CNI error it printed.
pub fn run_plugin(
    plugin: &Path,
    command: &str,
    conflist_path: &Path,
    sandbox: &Sandbox,
) -> Result<String, LabCtlError> {
    let text =
        std::fs::read_to_string(conflist_path).map_err(|e| LabCtlError::state(conflist_path, e))?;
    let list: Value = serde_json::from_str(&text)
        .map_err(|e| LabCtlError::state(conflist_path, format!("not JSON: {e}")))?;
    let stdin = plugin_config(&list)?.to_string();
    let cni_path = plugin
        .parent()
        .map(|d| format!("{}:/opt/cni/bin:/usr/lib/cni", d.display()))
        .unwrap_or_default();
    let mut child = Command::new(plugin)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", sandbox.container_id)
        .env("CNI_NETNS", format!("/var/run/netns/{}", sandbox.netns))
        .env("CNI_IFNAME", "eth0")
        .env(
            "CNI_ARGS",
            format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE={POD_NAMESPACE};K8S_POD_NAME={};\
                 K8S_POD_INFRA_CONTAINER_ID={}",
                sandbox.pod, sandbox.container_id
            ),
        )
        .env("CNI_PATH", cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| LabCtlError::Usage(format!("running {}: {e}", plugin.display())))?;
    if let Some(mut input) = child.stdin.take() {
        // A plugin that exits early closes the pipe; its exit status says why.
        let _ = input.write_all(stdin.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| LabCtlError::Usage(format!("waiting for {}: {e}", plugin.display())))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(LabCtlError::Usage(format!(
            "CNI {command} of pod {} ({}): {}: {} {}",
            sandbox.pod,
            sandbox.netns,
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// CNI ADD; returns the pod's addresses and the host side of its veth.
pub fn add(plugin: &Path, conflist_path: &Path, sandbox: &Sandbox) -> Result<Added, LabCtlError> {
    let out = run_plugin(plugin, "ADD", conflist_path, sandbox)?;
    parse_add_result(&out).map_err(|e| {
        LabCtlError::Usage(format!(
            "CNI ADD of pod {}: {e} in its result {out}",
            sandbox.pod
        ))
    })
}

/// Reads the addresses (the first of each family) and the first (host) interface of an ADD
/// result.
pub fn parse_add_result(text: &str) -> Result<Added, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON ({e})"))?;
    let all: Vec<IpAddr> = v["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["address"].as_str())
        .filter_map(|a| a.split('/').next()?.parse::<IpAddr>().ok())
        .collect();
    let v4 = all.iter().copied().find(IpAddr::is_ipv4);
    let v6 = all.iter().find_map(|a| match a {
        IpAddr::V6(a) => Some(*a),
        IpAddr::V4(_) => None,
    });
    let (ip, ip6) = match (v4, v6) {
        (Some(a), b) => (a, b),
        (None, Some(b)) => (IpAddr::V6(b), None),
        (None, None) => return Err("no address".into()),
    };
    let interface = v["interfaces"][0]["name"]
        .as_str()
        .ok_or("no interface")?
        .to_string();
    Ok(Added { ip, ip6, interface })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_config_is_the_first_plugin_with_the_lists_name_and_version() {
        let list = conflist("node2", Path::new("/tmp/x/felix.sock"), 1450);
        let c = plugin_config(&list).unwrap();
        assert_eq!(c["type"], "margay");
        assert_eq!(c["name"], NETWORK);
        assert_eq!(c["cniVersion"], CNI_VERSION);
        assert_eq!(c["nodename"], "node2");
        assert_eq!(c["mtu"], 1450);
        assert_eq!(c["felix_socket"], "/tmp/x/felix.sock");
        assert!(plugin_config(&json!({"plugins": []})).is_err());
    }

    #[test]
    fn add_result_gives_the_address_and_host_interface() {
        let text = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"cali1234567890a",
            "mac":"ee:ee:ee:ee:ee:ee"},{"name":"eth0","sandbox":"/var/run/netns/p"}],
            "ips":[{"address":"10.100.7.66/32","interface":1}]}"#;
        assert_eq!(
            parse_add_result(text).unwrap(),
            Added {
                ip: "10.100.7.66".parse().unwrap(),
                ip6: None,
                interface: "cali1234567890a".into()
            }
        );
        let dual = r#"{"interfaces":[{"name":"cali1"}],"ips":[{"address":"fd00:100::5/128"},
            {"address":"10.100.7.66/32"}]}"#;
        let a = parse_add_result(dual).unwrap();
        assert_eq!(a.ip.to_string(), "10.100.7.66");
        assert_eq!(a.ip6, Some("fd00:100::5".parse().unwrap()));
        let v6 = r#"{"interfaces":[{"name":"cali1"}],"ips":[{"address":"fd00:100::5/128"}]}"#;
        assert_eq!(parse_add_result(v6).unwrap().ip.to_string(), "fd00:100::5");
        assert!(parse_add_result(r#"{"ips":[]}"#).is_err());
    }
}
