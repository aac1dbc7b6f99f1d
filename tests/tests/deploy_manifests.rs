//! `deploy/`: every Kubernetes manifest passes the Kubernetes schemas (`kubernetes-validate
//! --strict`, from a project-local venv that `scripts/python-tools.sh` makes), the margay-node
//! DaemonSet has the properties a node agent needs, the conflist in the ConfigMap is one the CNI
//! plugin accepts, `deploy/install-cni.sh` really installs the plugin and writes that conflist,
//! and the default IPPool is one `margayctl apply` takes.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

/// CNI spec versions the `margay` plugin supports.
const PLUGIN_CNI_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/// Health ports: margay-bgpd's `--http-port` default and felix's.
const BGPD_HEALTH_PORT: u64 = 9179;
const FELIX_HEALTH_PORT: u64 = 9099;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the repository")
        .to_path_buf()
}

fn deploy() -> PathBuf {
    root().join("deploy")
}

fn shown(o: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Every YAML document of a file, as JSON values (empty documents left out).
fn documents(path: &Path) -> Vec<Value> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path:?}: {e}"));
    serde_norway::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{path:?}: bad YAML: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

/// The `*.yaml` files under deploy/.
fn manifest_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(deploy())
        .expect("reading deploy/")
        .map(|e| e.expect("deploy/ entry").path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in deploy/");
    files
}

/// margay's own resources (applied with margayctl to etcd), not Kubernetes objects.
fn is_margay_resource(doc: &Value) -> bool {
    let api = doc["apiVersion"].as_str().unwrap_or_default();
    api.starts_with("projectcalico.org/") || api.starts_with("margay.")
}

/// The one document of `kind` named `name` among deploy/'s manifests.
fn object(kind: &str, name: &str) -> Value {
    let found: Vec<Value> = manifest_files()
        .iter()
        .flat_map(|f| documents(f))
        .filter(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {kind} {name} in deploy/"
    );
    found.into_iter().next().expect("one")
}

fn daemonset() -> Value {
    object("DaemonSet", "margay-node")
}

fn config() -> Value {
    object("ConfigMap", "margay-config")
}

fn config_key(key: &str) -> String {
    config()["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("margay-config has no data key {key}"))
        .to_string()
}

fn pod_spec(ds: &Value) -> &Value {
    &ds["spec"]["template"]["spec"]
}

fn container<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn env<'a>(c: &'a Value, name: &str) -> &'a Value {
    c["env"]
        .as_array()
        .and_then(|es| es.iter().find(|e| e["name"] == name))
        .unwrap_or_else(|| panic!("container {} has no env {name}", c["name"]))
}

fn mount<'a>(c: &'a Value, volume: &str) -> &'a Value {
    c["volumeMounts"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["name"] == volume))
        .unwrap_or_else(|| panic!("container {} does not mount {volume}", c["name"]))
}

fn volume<'a>(ds: &'a Value, name: &str) -> &'a Value {
    pod_spec(ds)["volumes"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == name))
        .unwrap_or_else(|| panic!("no volume {name}"))
}

/// The kubernetes-validate command from the project venv, installed on first use.
fn validator() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = Command::new("bash")
            .arg(root().join("scripts/python-tools.sh"))
            .output()
            .expect("running scripts/python-tools.sh");
        assert!(
            out.status.success(),
            "kubernetes-validate could not be installed, so the manifests cannot be checked \
             against the Kubernetes schemas. Run scripts/install-deps.sh (python3-venv) and \
             make PyPI reachable, then scripts/python-tools.sh.\n{}",
            shown(&out)
        );
        let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        bin.join("kubernetes-validate")
    })
}

fn kubernetes_validate(file: &Path) -> Output {
    Command::new(validator())
        .args(["--strict", "--quiet"])
        .arg(file)
        .output()
        .expect("running kubernetes-validate")
}

#[test]
fn every_kubernetes_manifest_passes_the_strict_schema() {
    let mut checked = 0;
    for file in manifest_files() {
        let docs = documents(&file);
        let ours = docs.iter().filter(|d| is_margay_resource(d)).count();
        if ours == docs.len() {
            continue; // margayctl's resources: checked by default_ippool_is_one_margayctl_applies
        }
        assert_eq!(
            ours, 0,
            "{file:?} mixes Kubernetes objects with margay resources, which kubectl cannot apply"
        );
        let out = kubernetes_validate(&file);
        assert!(
            out.status.success(),
            "{file:?} fails the Kubernetes schema:\n{}",
            shown(&out)
        );
        checked += 1;
    }
    assert!(checked >= 1, "no Kubernetes manifest was validated");
}

#[test]
fn schema_validation_rejects_an_unknown_field() {
    // The check above can fail: the same validator refuses a DaemonSet with a misspelt field.
    let text = fs::read_to_string(deploy().join("margay.yaml")).expect("reading margay.yaml");
    let broken = text.replacen("hostNetwork: true", "hostNetworking: true", 1);
    assert_ne!(text, broken, "margay.yaml has no hostNetwork line to break");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("broken.yaml");
    fs::write(&file, broken).expect("writing broken.yaml");
    let out = kubernetes_validate(&file);
    assert!(
        !out.status.success(),
        "a misspelt field passed:\n{}",
        shown(&out)
    );
    assert!(
        shown(&out).contains("hostNetworking"),
        "the error does not name the field:\n{}",
        shown(&out)
    );
}

#[test]
fn daemonset_runs_privileged_on_the_host_network_of_every_node() {
    let ds = daemonset();
    assert_eq!(ds["metadata"]["namespace"], "kube-system");
    let pod = pod_spec(&ds);
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(pod["serviceAccountName"], "margay-node");
    let tolerations = pod["tolerations"].as_array().expect("tolerations");
    let tolerates = |effect: &str| {
        tolerations.iter().any(|t| {
            t["operator"] == "Exists"
                && t.get("key").is_none()
                && (t["effect"] == effect || t.get("effect").is_none())
        })
    };
    assert!(
        tolerates("NoSchedule"),
        "does not tolerate every NoSchedule taint"
    );
    assert!(
        tolerates("NoExecute"),
        "does not tolerate every NoExecute taint"
    );
    assert!(
        tolerations
            .iter()
            .any(|t| t["key"] == "CriticalAddonsOnly" && t["operator"] == "Exists"),
        "does not tolerate CriticalAddonsOnly"
    );
    let all = pod["initContainers"]
        .as_array()
        .into_iter()
        .chain(pod["containers"].as_array())
        .flatten();
    for c in all {
        assert_eq!(
            c["securityContext"]["privileged"], true,
            "{} not privileged",
            c["name"]
        );
    }
    let update = &ds["spec"]["updateStrategy"];
    assert_eq!(update["type"], "RollingUpdate");
    assert_eq!(update["rollingUpdate"]["maxUnavailable"], 1);
}

#[test]
fn install_cni_init_container_writes_to_the_host_cni_dirs() {
    let ds = daemonset();
    let init = container(&pod_spec(&ds)["initContainers"], "install-cni");
    assert_eq!(init["command"][0], "/usr/local/bin/margay-install-cni");
    for (vol, host, at) in [
        ("cni-bin-dir", "/opt/cni/bin", "/host/opt/cni/bin"),
        ("cni-net-dir", "/etc/cni/net.d", "/host/etc/cni/net.d"),
    ] {
        assert_eq!(volume(&ds, vol)["hostPath"]["path"], host);
        assert_eq!(mount(init, vol)["mountPath"], at);
    }
    assert_eq!(env(init, "CNI_BIN_DIR")["value"], "/host/opt/cni/bin");
    assert_eq!(env(init, "CNI_NET_DIR")["value"], "/host/etc/cni/net.d");
    assert_eq!(env(init, "CNI_CONF_NAME")["value"], "10-margay.conflist");
    let mtu = &env(init, "CNI_MTU")["valueFrom"]["configMapKeyRef"];
    assert_eq!(mtu["key"], "veth_mtu");
    let conf = &env(init, "CNI_NETWORK_CONFIG")["valueFrom"]["configMapKeyRef"];
    assert_eq!(conf["key"], "cni_network_config");
}

#[test]
fn every_container_gets_the_node_name_from_spec_node_name() {
    let ds = daemonset();
    let pod = pod_spec(&ds);
    for c in [
        container(&pod["initContainers"], "install-cni"),
        container(&pod["containers"], "bgpd"),
        container(&pod["containers"], "felix"),
    ] {
        assert_eq!(
            env(c, "NODENAME")["valueFrom"]["fieldRef"]["fieldPath"],
            "spec.nodeName",
            "{}",
            c["name"]
        );
    }
}

#[test]
fn daemons_probe_their_health_endpoints_on_loopback() {
    let ds = daemonset();
    for (name, port) in [("bgpd", BGPD_HEALTH_PORT), ("felix", FELIX_HEALTH_PORT)] {
        let c = container(&pod_spec(&ds)["containers"], name);
        for (probe, path) in [
            ("livenessProbe", "/liveness"),
            ("readinessProbe", "/readiness"),
        ] {
            if name == "bgpd" {
                // Through margay-bgpd-entry, which asks 127.0.0.1:PORT/PATH under bird.
                let cmd = &c[probe]["exec"]["command"];
                assert_eq!(cmd[0], "/usr/local/bin/margay-bgpd-entry", "{name} {probe}");
                assert_eq!(cmd[1], "probe", "{name} {probe}");
                assert_eq!(cmd[2], path, "{name} {probe}");
                assert_eq!(cmd[3], port.to_string(), "{name} {probe}");
                continue;
            }
            let get = &c[probe]["httpGet"];
            assert_eq!(get["host"], "127.0.0.1", "{name} {probe}");
            assert_eq!(get["path"], path, "{name} {probe}");
            assert_eq!(get["port"], port, "{name} {probe}");
        }
        let flag = format!("--http-port={port}");
        assert!(
            c["args"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| *x == flag)),
            "{name} is not started with {flag}, the port its probes use"
        );
    }
}

#[test]
fn daemons_read_datastore_and_address_settings_from_config_and_secret() {
    let ds = daemonset();
    let cm = config();
    let secret = object("Secret", "margay-etcd-tls");
    let pod = pod_spec(&ds);
    let bgpd = container(&pod["containers"], "bgpd");
    let felix = container(&pod["containers"], "felix");
    assert_eq!(env(bgpd, "MARGAY_DATASTORE")["value"], "etcd");
    assert_eq!(env(bgpd, "IP")["value"], "autodetect");
    assert_eq!(
        env(bgpd, "IP_AUTODETECTION_METHOD")["valueFrom"]["configMapKeyRef"]["key"],
        "ip_autodetection_method"
    );
    assert_eq!(
        env(felix, "MARGAY_IPV4POOL_CIDR")["valueFrom"]["configMapKeyRef"]["key"],
        "default_ipv4_pool_cidr"
    );
    assert_eq!(
        env(felix, "MARGAY_IPV4POOL_IPIP")["valueFrom"]["configMapKeyRef"]["key"],
        "default_ipv4_pool_ipip"
    );
    for c in [bgpd, felix] {
        assert_eq!(mount(c, "etcd-tls")["mountPath"], "/etc/margay/etcd-tls");
        for var in [
            "MARGAY_ETCD_ENDPOINTS",
            "MARGAY_ETCD_CA_CERT_FILE",
            "MARGAY_ETCD_CERT_FILE",
            "MARGAY_ETCD_KEY_FILE",
        ] {
            let r = &env(c, var)["valueFrom"]["configMapKeyRef"];
            assert_eq!(r["name"], "margay-config", "{var}");
            let key = r["key"].as_str().expect("key");
            let value = cm["data"][key].as_str();
            assert!(
                value.is_some(),
                "{var} refers to missing margay-config key {key}"
            );
            if var != "MARGAY_ETCD_ENDPOINTS" {
                // A TLS file: optional (absent key = no TLS), and a file the Secret provides.
                assert_eq!(r["optional"], true, "{var} must be optional");
                let file = value
                    .and_then(|v| v.strip_prefix("/etc/margay/etcd-tls/"))
                    .unwrap_or_else(|| panic!("{var} is not under the Secret's mount"));
                assert!(
                    secret["data"].get(file).is_some(),
                    "{var}: the Secret has no key {file}"
                );
            }
        }
    }
    for (k, v) in secret["data"].as_object().expect("Secret data") {
        assert_eq!(
            v, "",
            "Secret key {k} must stay an empty placeholder in git"
        );
    }
}

#[test]
fn both_daemons_read_this_nodes_ipv6_address_setting_as_calico_nodes_ip6() {
    let ds = daemonset();
    let pod = pod_spec(&ds);
    for name in ["bgpd", "felix"] {
        let c = container(&pod["containers"], name);
        for (var, key) in [
            ("IP6", "ip6"),
            ("IP6_AUTODETECTION_METHOD", "ip6_autodetection_method"),
        ] {
            let r = &env(c, var)["valueFrom"]["configMapKeyRef"];
            assert_eq!(
                (r["name"].as_str(), r["key"].as_str()),
                (Some("margay-config"), Some(key)),
                "{name}: {var}"
            );
        }
    }
    // IPv4 only by default, as calico-node without IP6; the method has calico-node's default.
    assert_eq!(config_key("ip6"), "none");
    assert_eq!(config_key("ip6_autodetection_method"), "first-found");
}

#[test]
fn daemons_share_the_margay_socket_directory_with_the_host() {
    let ds = daemonset();
    let run = volume(&ds, "var-run-margay");
    assert_eq!(run["hostPath"]["path"], "/var/run/margay");
    assert_eq!(
        volume(&ds, "lib-modules")["hostPath"]["path"],
        "/lib/modules"
    );
    assert_eq!(
        volume(&ds, "xtables-lock")["hostPath"]["path"],
        "/run/xtables.lock"
    );
    assert_eq!(
        volume(&ds, "etcd-tls")["secret"]["secretName"],
        "margay-etcd-tls"
    );
    for name in ["bgpd", "felix"] {
        let c = container(&pod_spec(&ds)["containers"], name);
        assert_eq!(mount(c, "var-run-margay")["mountPath"], "/var/run/margay");
        assert_eq!(mount(c, "lib-modules")["readOnly"], true, "{name}");
        assert_eq!(mount(c, "xtables-lock")["mountPath"], "/run/xtables.lock");
    }
    // felix's socket, where the plugin's conflist says to find it, is inside that directory.
    let felix = container(&pod_spec(&ds)["containers"], "felix");
    let socket = env(felix, "MARGAY_FELIX_SOCKET")["value"]
        .as_str()
        .expect("socket");
    assert!(socket.starts_with("/var/run/margay/"));
    let conflist = conflist_for("node-a", "1440");
    assert_eq!(conflist["plugins"][0]["felix_socket"], socket);
}

#[test]
fn daemons_request_bounded_resources_and_stop_gracefully() {
    let ds = daemonset();
    let pod = pod_spec(&ds);
    let cpu_m = |s: &str| -> u64 {
        s.strip_suffix('m')
            .and_then(|n| n.parse().ok())
            .expect("cpu in m")
    };
    let mem_mi = |s: &str| -> u64 {
        s.strip_suffix("Mi")
            .and_then(|n| n.parse().ok())
            .expect("Mi")
    };
    for name in ["bgpd", "felix"] {
        let r = &container(&pod["containers"], name)["resources"];
        let cpu = cpu_m(r["requests"]["cpu"].as_str().expect("cpu request"));
        let mem = mem_mi(r["requests"]["memory"].as_str().expect("memory request"));
        assert!((100..=250).contains(&cpu), "{name} cpu request {cpu}m");
        assert!((64..=128).contains(&mem), "{name} memory request {mem}Mi");
    }
    let bgpd = container(&pod["containers"], "bgpd");
    let pre = bgpd["lifecycle"]["preStop"]["exec"]["command"]
        .as_array()
        .expect("bgpd has an exec preStop");
    let pause: u64 = pre
        .last()
        .and_then(|s| s.as_str())
        .and_then(|s| s.parse().ok())
        .expect("preStop ends with its pause in seconds");
    let grace = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("grace period");
    assert!(
        grace >= pause + 10,
        "grace period {grace}s leaves too little after the {pause}s preStop"
    );
    // felix is never told to flush: it has no hook that could remove routes on the way out.
    let felix = container(&pod["containers"], "felix");
    assert!(
        felix["lifecycle"].is_null(),
        "felix must not run a stop hook"
    );
}

#[test]
fn every_container_runs_a_binary_the_image_ships() {
    let file = fs::read_to_string(deploy().join("Containerfile")).expect("reading Containerfile");
    let ds = daemonset();
    let pod = pod_spec(&ds);
    let all = pod["initContainers"]
        .as_array()
        .into_iter()
        .chain(pod["containers"].as_array())
        .flatten();
    let images: BTreeSet<&str> = pod["initContainers"]
        .as_array()
        .into_iter()
        .chain(pod["containers"].as_array())
        .flatten()
        .filter_map(|c| c["image"].as_str())
        .collect();
    assert_eq!(
        images.len(),
        1,
        "all containers must run the one margay-node image: {images:?}"
    );
    for c in all {
        let cmd = c["command"][0].as_str().expect("command");
        let bin = cmd
            .strip_prefix("/usr/local/bin/")
            .expect("binary in /usr/local/bin");
        let copied_binary =
            file.contains(&format!("/out/{bin} ")) || file.contains(&format!("/out/{bin}\n"));
        let copied_script = file.contains(&format!("/usr/local/bin/{bin}\n"));
        assert!(
            copied_binary || copied_script,
            "the Containerfile does not put {cmd} in the image"
        );
    }
    assert!(
        file.contains("--target x86_64-unknown-linux-musl"),
        "binaries must be static (musl)"
    );
    assert!(
        file.contains("--bin margay "),
        "the CNI plugin is not built"
    );
}

/// The ConfigMap's conflist template with the placeholders filled as install-cni fills them.
fn conflist_for(node: &str, mtu: &str) -> Value {
    let template = config_key("cni_network_config");
    let text = template
        .replace("__NODENAME__", node)
        .replace("__MTU__", mtu);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("conflist is not JSON: {e}\n{text}"))
}

/// Checks a conflist is one the margay plugin accepts, for `node` with `mtu`.
fn assert_plugin_accepts(conf: &Value, node: &str, mtu: u64) {
    let version = conf["cniVersion"].as_str().expect("cniVersion");
    assert!(
        PLUGIN_CNI_VERSIONS.contains(&version),
        "cniVersion {version} not supported"
    );
    assert!(
        conf["name"].as_str().is_some_and(|n| !n.is_empty()),
        "network has no name"
    );
    let plugins = conf["plugins"].as_array().expect("plugins list");
    assert_eq!(plugins.len(), 2, "{plugins:?}");
    assert_eq!(plugins[0]["type"], "margay");
    assert_eq!(plugins[0]["nodename"], node);
    assert_eq!(plugins[0]["mtu"], mtu);
    assert_eq!(plugins[1]["type"], "portmap");
    assert_eq!(plugins[1]["capabilities"]["portMappings"], true);
}

#[test]
fn configmap_conflist_is_one_the_plugin_accepts() {
    let mtu = config_key("veth_mtu");
    let conf = conflist_for("worker-1.example", &mtu);
    assert_plugin_accepts(
        &conf,
        "worker-1.example",
        mtu.parse().expect("veth_mtu is a number"),
    );
    // Every placeholder in the template is one install-cni fills.
    let template = config_key("cni_network_config");
    let left = template.replace("__NODENAME__", "").replace("__MTU__", "");
    assert!(
        !left.contains("__"),
        "template has a placeholder install-cni leaves: {template}"
    );
}

#[test]
fn default_ippool_is_one_margayctl_applies_and_matches_the_config() {
    use margay_datastore::resources::{AnyResource, parse_documents};
    let text = fs::read_to_string(deploy().join("ippool-default.yaml")).expect("reading");
    let resources = parse_documents(&text).expect("margayctl would reject ippool-default.yaml");
    let [AnyResource::IpPool(pool)] = resources.as_slice() else {
        panic!("ippool-default.yaml must hold one IPPool: {resources:?}");
    };
    // felix creates the same pool from the ConfigMap when the cluster has none.
    assert_eq!(pool.spec.cidr, config_key("default_ipv4_pool_cidr"));
    assert_eq!(
        format!("{:?}", pool.spec.ipip()),
        config_key("default_ipv4_pool_ipip")
    );
}

// ---- deploy/install-cni.sh, run for real ---------------------------------------------------

/// A stand-in host (`bin`, `net`) and image (`plugin`, `portmap`) for install-cni.
struct FakeNode {
    dir: tempfile::TempDir,
}

impl FakeNode {
    fn new() -> FakeNode {
        let dir = tempfile::tempdir().expect("tempdir");
        let image = dir.path().join("image");
        fs::create_dir_all(&image).expect("mkdir image");
        for (name, body) in [
            ("margay", "#!/bin/sh\necho margay-plugin\n"),
            ("portmap", "#!/bin/sh\necho image-portmap\n"),
        ] {
            let p = image.join(name);
            fs::write(&p, body).expect("writing fake binary");
            set_mode(&p, 0o755);
        }
        FakeNode { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Runs install-cni.sh with `shell` (a program and its leading arguments).
    fn run_in(&self, shell: &[&str], node: &str, mtu: &str) -> Output {
        Command::new(shell[0])
            .args(&shell[1..])
            .arg(deploy().join("install-cni.sh"))
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("NODENAME", node)
            .env("CNI_MTU", mtu)
            .env("CNI_NETWORK_CONFIG", config_key("cni_network_config"))
            .env("CNI_BIN_DIR", self.path("host/opt/cni/bin"))
            .env("CNI_NET_DIR", self.path("host/etc/cni/net.d"))
            .env("CNI_CONF_NAME", "10-margay.conflist")
            .env("MARGAY_CNI_PLUGIN", self.path("image/margay"))
            .env("PORTMAP_PLUGIN", self.path("image/portmap"))
            .output()
            .expect("running install-cni.sh")
    }

    fn run(&self, node: &str, mtu: &str) -> Output {
        self.run_in(&["/bin/sh"], node, mtu)
    }

    fn conflist(&self) -> PathBuf {
        self.path("host/etc/cni/net.d/10-margay.conflist")
    }
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).expect("chmod");
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p)
        .unwrap_or_else(|e| panic!("{p:?}: {e}"))
        .permissions()
        .mode()
        & 0o777
}

/// The POSIX shells present here: /bin/sh (dash, as in the image), and busybox's when installed.
fn shells() -> Vec<Vec<&'static str>> {
    let mut s = vec![vec!["/bin/sh"]];
    if Command::new("busybox")
        .args(["sh", "-c", "true"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        s.push(vec!["busybox", "sh"]);
    }
    s
}

#[test]
fn install_cni_installs_the_plugin_and_writes_the_conflist_for_this_node() {
    for shell in shells() {
        let node = FakeNode::new();
        let out = node.run_in(&shell, "node-b.lab", "1450");
        let shell = shell.join(" ");
        assert!(out.status.success(), "{shell}: {}", shown(&out));
        let plugin = node.path("host/opt/cni/bin/margay");
        assert_eq!(
            fs::read(&plugin).expect("plugin"),
            fs::read(node.path("image/margay")).expect("image")
        );
        assert_eq!(mode(&plugin), 0o755, "{shell}: plugin not executable");
        assert!(
            node.path("host/opt/cni/bin/portmap").exists(),
            "{shell}: portmap not installed"
        );
        let text = fs::read_to_string(node.conflist()).expect("conflist written");
        let conf: Value = serde_json::from_str(&text).expect("conflist is JSON");
        assert_plugin_accepts(&conf, "node-b.lab", 1450);
        assert_eq!(mode(&node.conflist()), 0o644);
        // No temporary files left where kubelet looks.
        for dir in ["host/opt/cni/bin", "host/etc/cni/net.d"] {
            for e in fs::read_dir(node.path(dir)).expect("read dir") {
                let name = e.expect("entry").file_name();
                assert!(
                    !name.to_string_lossy().starts_with('.'),
                    "{shell}: left {name:?} in {dir}"
                );
            }
        }
    }
}

#[test]
fn install_cni_replaces_an_old_plugin_and_keeps_the_hosts_portmap() {
    let node = FakeNode::new();
    let bin = node.path("host/opt/cni/bin");
    fs::create_dir_all(&bin).expect("mkdir");
    fs::write(bin.join("margay"), "old plugin").expect("old plugin");
    fs::write(bin.join("portmap"), "the host's portmap").expect("host portmap");
    let out = node.run("n1", "1500");
    assert!(out.status.success(), "{}", shown(&out));
    assert_eq!(
        fs::read_to_string(bin.join("margay")).expect("plugin"),
        "#!/bin/sh\necho margay-plugin\n"
    );
    assert_eq!(
        fs::read_to_string(bin.join("portmap")).expect("portmap"),
        "the host's portmap"
    );
    let first = fs::read_to_string(node.conflist()).expect("conflist");
    // A second run (the init container after a restart) gives the same result.
    let again = node.run("n1", "1500");
    assert!(again.status.success(), "{}", shown(&again));
    assert_eq!(
        fs::read_to_string(node.conflist()).expect("conflist"),
        first
    );
}

#[test]
fn install_cni_refuses_a_bad_node_name_or_mtu_and_writes_nothing() {
    for (name, mtu, says) in [
        ("Node_A", "1440", "not a valid node name"),
        ("n1/../../x", "1440", "not a valid node name"),
        ("n1\nn2", "1440", "not a valid node name"),
        ("", "1440", "NODENAME is not set"),
        ("n1", "14x0", "not a number"),
        ("n1", "70000", "outside"),
        ("n1", "", "CNI_MTU is not set"),
    ] {
        let node = FakeNode::new();
        let out = node.run(name, mtu);
        assert!(
            !out.status.success(),
            "{name:?}/{mtu:?} accepted:\n{}",
            shown(&out)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(says),
            "{name:?}/{mtu:?}: expected {says:?} in:\n{}",
            shown(&out)
        );
        assert!(
            !node.conflist().exists(),
            "{name:?}/{mtu:?}: a conflist was written"
        );
    }
}

#[test]
fn install_cni_refuses_a_template_with_an_unknown_placeholder() {
    let node = FakeNode::new();
    let out = Command::new("/bin/sh")
        .arg(deploy().join("install-cni.sh"))
        .env("NODENAME", "n1")
        .env("CNI_MTU", "1440")
        .env(
            "CNI_NETWORK_CONFIG",
            r#"{"nodename": "__NODENAME__", "x": "__KUBECONFIG__"}"#,
        )
        .env("CNI_BIN_DIR", node.path("host/opt/cni/bin"))
        .env("CNI_NET_DIR", node.path("host/etc/cni/net.d"))
        .env("MARGAY_CNI_PLUGIN", node.path("image/margay"))
        .env("PORTMAP_PLUGIN", node.path("image/portmap"))
        .output()
        .expect("running install-cni.sh");
    assert!(!out.status.success(), "{}", shown(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("__KUBECONFIG__"),
        "{}",
        shown(&out)
    );
    assert!(!node.conflist().exists());
    let left: Vec<_> = fs::read_dir(node.path("host/etc/cni/net.d"))
        .expect("net.d")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// bgpd finds Secrets named by `secretKeyRef` under its default `--secrets-dir`, one
/// directory per Secret, and the Secret is optional so a cluster without BGP passwords starts.
#[test]
fn bgpd_mounts_the_bgp_password_secret_under_its_secrets_dir() {
    let ds = daemonset();
    let bgpd = container(&pod_spec(&ds)["containers"], "bgpd");
    let m = mount(bgpd, "bgp-passwords");
    // margay-bgpd's default --secrets-dir (bgp/src/cluster/secrets.rs).
    let dir = "/etc/margay/secrets";
    let v = volume(&ds, "bgp-passwords");
    let name = v["secret"]["secretName"].as_str().expect("a secret volume");
    assert_eq!(m["mountPath"], format!("{dir}/{name}"));
    assert_eq!(m["readOnly"], true);
    assert_eq!(v["secret"]["optional"], true);
}

// ---- deploy/bgpd-entry.sh, run for real ----------------------------------------------------

/// Runs bgpd-entry.sh with `args` and the backend variables `vars`, margay-bgpd replaced by a
/// stand-in that records its arguments; returns (exit code, stand-in's record, stderr).
fn bgpd_entry(
    vars: &[(&str, &str)],
    args: &[&str],
    wait: Duration,
) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("ran");
    let fake = dir.path().join("margay-bgpd");
    fs::write(
        &fake,
        format!("#!/bin/sh\necho \"$@\" > {}\n", record.display()),
    )
    .unwrap();
    fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(deploy().join("bgpd-entry.sh"))
        .args(args)
        .env_remove("MARGAY_NETWORKING_BACKEND")
        .env_remove("CALICO_NETWORKING_BACKEND")
        .env("MARGAY_BGPD_BIN", &fake)
        .stderr(std::process::Stdio::piped());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("bash");
    let start = std::time::Instant::now();
    let code = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code();
        }
        if start.elapsed() > wait {
            // Still running (idling): SIGTERM must end it cleanly.
            // SAFETY: kill(2) on our own child's PID.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            break child.wait().unwrap().code();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    let ran = fs::read_to_string(&record).unwrap_or_default();
    (code, ran, err)
}

#[test]
fn bgpd_entry_runs_bgpd_only_under_the_bird_backend() {
    let long = Duration::from_secs(5);
    let short = Duration::from_millis(500);
    // Default and explicit bird: margay-bgpd runs with the container's arguments.
    let (code, ran, _) = bgpd_entry(&[], &["run", "--http-port=9179"], long);
    assert_eq!((code, ran.trim()), (Some(0), "--http-port=9179"));
    // vxlan (margay's variable, or calico-node's): not started; idles until SIGTERM, exit 0.
    for vars in [
        [("MARGAY_NETWORKING_BACKEND", "vxlan")],
        [("CALICO_NETWORKING_BACKEND", "vxlan")],
    ] {
        let (code, ran, err) = bgpd_entry(&vars, &["run", "--http-port=9179"], short);
        assert_eq!(code, Some(0), "{vars:?}: {err}");
        assert!(ran.is_empty(), "{vars:?}: margay-bgpd ran: {ran}");
        assert!(err.contains("not started"), "{err}");
    }
    // margay's variable wins over calico-node's.
    let (_, ran, _) = bgpd_entry(
        &[
            ("MARGAY_NETWORKING_BACKEND", "bird"),
            ("CALICO_NETWORKING_BACKEND", "vxlan"),
        ],
        &["run", "x"],
        long,
    );
    assert_eq!(ran.trim(), "x");
    // Probes pass without bgpd under vxlan and none; under bird, nothing listens: they fail.
    for b in ["vxlan", "none"] {
        let (code, _, _) = bgpd_entry(
            &[("MARGAY_NETWORKING_BACKEND", b)],
            &["probe", "/readiness", "1"],
            long,
        );
        assert_eq!(code, Some(0), "{b}");
    }
    let (code, _, _) = bgpd_entry(&[], &["probe", "/readiness", "1"], long);
    assert_ne!(code, Some(0));
    let (code, _, err) = bgpd_entry(&[("MARGAY_NETWORKING_BACKEND", "gobgp")], &["run"], long);
    assert_eq!(code, Some(2), "{err}");
}

/// The optional etcd proxies: on the host network of the labelled nodes only, etcd's own
/// binary (which the image installs) run as `grpc-proxy start`, probed on the metrics
/// address it is given, with both certificates mounted. The command's flags are given to this
/// machine's etcd (Debian's, the image's) with its variables filled in: it must stop at the
/// missing certificate files, never at a flag it does not know.
#[test]
fn etcd_proxy_daemonset_runs_etcds_grpc_proxy_on_the_labelled_nodes() {
    let ds = object("DaemonSet", "margay-etcd-proxy");
    let pod = pod_spec(&ds);
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["nodeSelector"]["margay.dev/etcd-proxy"], "true");
    let c = container(&pod["containers"], "etcd-proxy");
    let command: Vec<&str> = c["command"]
        .as_array()
        .expect("command")
        .iter()
        .map(|v| v.as_str().expect("string argument"))
        .collect();
    assert_eq!(&command[..3], &["/usr/bin/etcd", "grpc-proxy", "start"]);
    let flag = |name: &str| {
        command
            .iter()
            .find_map(|a| a.strip_prefix(&format!("--{name}=")))
            .unwrap_or_else(|| panic!("no --{name} in {command:?}"))
    };
    let port: u16 = flag("listen-addr")
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(c["ports"][0]["containerPort"], port);
    let metrics_port: u16 = flag("metrics-addr")
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(c[probe]["httpGet"]["port"], metrics_port, "{probe}");
        assert_eq!(c[probe]["httpGet"]["path"], "/health", "{probe}");
    }
    for (name, secret) in [
        ("etcd-tls", "margay-etcd-tls"),
        ("etcd-proxy-tls", "margay-etcd-proxy-tls"),
    ] {
        let at = mount(c, name)["mountPath"].as_str().unwrap().to_string();
        assert_eq!(volume(&ds, name)["secret"]["secretName"], secret);
        assert!(
            command.iter().any(|a| a.contains(&at)),
            "no flag reads {at} in {command:?}"
        );
    }
    object("Secret", "margay-etcd-proxy-tls");
    let containerfile = fs::read_to_string(deploy().join("Containerfile")).unwrap();
    assert!(
        containerfile.contains("etcd-server"),
        "the image does not install etcd-server"
    );

    // This machine's etcd takes every flag: nothing is reachable (endpoint port 1, listen on
    // loopback), and it must fail on the certificate files the pod would mount.
    let args: Vec<String> = command[1..]
        .iter()
        .map(|a| {
            a.replace("$(ETCD_ENDPOINTS)", "127.0.0.1:1")
                .replace("$(HOST_IP)", "127.0.0.1")
        })
        .collect();
    assert!(
        !args.iter().any(|a| a.contains("$(")),
        "a variable the test does not fill: {args:?}"
    );
    let out = Command::new(command[0])
        .args(&args)
        .output()
        .expect("running /usr/bin/etcd (scripts/install-deps.sh installs etcd-server)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", shown(&out));
    assert!(!err.contains("unknown flag"), "{}", shown(&out));
    assert!(err.contains("no such file"), "{}", shown(&out));
}
