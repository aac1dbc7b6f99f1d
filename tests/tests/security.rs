//! Issue 7 §4, what the other suites do not already hold: the daemons' gRPC sockets refuse a
//! client that is not root even after someone opens the file's mode (peer credentials are
//! checked on every connection), and no secret (a BGP password from the TOML file or from a
//! BGPPeer, an etcd TLS client key) reaches a log at trace level, `/metrics`, `margayctl get`
//! output or `node status -o json`. Unknown peers, TCP-MD5 and GTSM are held by
//! `interop_bird.rs` and `bgpd_daemon.rs`.

mod daemons;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use margay_lab::{
    BgpdConfig, BgpdNeighbor, Etcd, Lab, Netns, Process, Result, bgpd_binary, margay_binary,
    wait_for,
};

const UP: Duration = Duration::from_secs(45);
/// The uid of `nobody`: the unprivileged client.
const NOBODY: u32 = 65534;

fn binary(name: &str) -> PathBuf {
    margay_binary(name, "`cargo build --workspace --bins`").unwrap_or_else(|e| panic!("{e}"))
}

/// A directory every user may enter (the lab's own is root's alone, which would refuse an
/// unprivileged client before the socket is even reached), holding copies of the client
/// binaries so `nobody` can run them wherever the target dir lives.
fn open_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("mgsec-")
        .tempdir()
        .expect("creating a socket directory");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod 0755");
    for name in ["margayctl", "margay"] {
        let to = dir.path().join(name);
        std::fs::copy(binary(name), &to).expect("copying a client binary");
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    dir
}

/// Runs `cmd` (as `uid`), feeding `stdin`: (exit code, stdout + stderr).
fn run_as(cmd: &mut Command, uid: u32, stdin: &str) -> (i32, String) {
    use std::io::Write;
    cmd.uid(uid)
        .gid(uid)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(stdin.as_bytes());
    }
    let out = child.wait_with_output().expect("waiting for the client");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn stderr_of(p: &Process) -> String {
    std::fs::read_to_string(p.log_paths().1).unwrap_or_default()
}

/// How many lines of `p`'s log report a refused socket client with `uid`.
fn refusals(p: &Process, uid: u32) -> usize {
    stderr_of(p)
        .lines()
        .filter(|l| l.contains("unix socket client refused") && l.contains(&format!("uid={uid}")))
        .count()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

#[test]
fn bgpd_socket_refuses_an_unprivileged_client_even_after_chmod() -> Result<()> {
    let lab = Lab::new("bgpd_socket_refuses_an_unprivileged_client_even_after_chmod")?;
    let ns = lab.netns("m")?;
    let dir = open_dir();
    let socket = dir.path().join("bgpd.sock");
    let mut config = BgpdConfig::new(std::net::Ipv4Addr::new(10, 0, 0, 1), 64512);
    config.socket = socket.clone();
    let conf = lab.dir().join("m.toml");
    std::fs::write(&conf, config.render()?).expect("writing the config");
    let bgpd = Process::spawn(
        &ns,
        "bgpd",
        bgpd_binary()?,
        ["--config".as_ref(), conf.as_os_str()],
        lab.dir(),
    )?;
    daemons::wait_for_socket(&bgpd, &socket)?;
    assert_eq!(mode(&socket), 0o600);
    let status = || {
        let mut cmd = Command::new(dir.path().join("margayctl"));
        cmd.args(["node", "status", "-o", "json", "--socket"])
            .arg(&socket);
        cmd
    };
    wait_for("root to be served", UP, &[&bgpd], || {
        match run_as(&mut status(), 0, "") {
            (0, _) => Ok(()),
            (c, out) => Err(format!("{c}: {out}")),
        }
    })?;
    let (code, out) = run_as(&mut status(), NOBODY, "");
    assert_ne!(code, 0, "the file's mode refuses nobody: {out}");
    assert!(out.to_lowercase().contains("permission denied"), "{out}");

    // Opening the file's mode does not open the API: the peer credentials are checked.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    for _ in 0..2 {
        let (code, out) = run_as(&mut status(), NOBODY, "");
        assert_ne!(code, 0, "nobody is refused after chmod 0666: {out}");
    }
    assert_eq!(
        refusals(&bgpd, NOBODY),
        1,
        "the refusal is logged once, with the uid: {}",
        stderr_of(&bgpd)
    );
    assert!(stderr_of(&bgpd).contains("pid="), "{}", stderr_of(&bgpd));
    let (code, out) = run_as(&mut status(), 0, "");
    assert_eq!(code, 0, "root is still served: {out}");
    Ok(())
}

#[test]
fn felix_socket_refuses_an_unprivileged_client_even_after_chmod() -> Result<()> {
    let lab = Lab::new("felix_socket_refuses_an_unprivileged_client_even_after_chmod")?;
    let sw = lab.switch("sw")?;
    let etcd = Etcd::on_switch(&lab, &sw)?;
    let ns = lab.netns("n1")?;
    sw.attach(&ns)?;
    let dir = open_dir();
    let socket = dir.path().join("felix.sock");
    let felix = daemons::cluster_felix(&lab, &ns, &etcd.endpoint(), &socket)?;
    assert_eq!(mode(&socket), 0o600);
    let netconf = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "k8s-pod-network",
        "type": "margay",
        "felix_socket": socket.display().to_string(),
        "nodename": "n1",
    })
    .to_string();
    // CNI DEL of a container felix never saw: felix answers success, so only the socket
    // decides the outcome.
    let del = || {
        let mut cmd = Command::new(dir.path().join("margay"));
        cmd.env_clear().envs([
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "sec-test"),
            ("CNI_NETNS", "/var/run/netns/none"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=p"),
            ("CNI_PATH", "/usr/lib/cni"),
        ]);
        cmd
    };
    wait_for(
        "root's CNI DEL to succeed",
        UP,
        &[&felix],
        || match run_as(&mut del(), 0, &netconf) {
            (0, _) => Ok(()),
            (c, out) => Err(format!("{c}: {out}")),
        },
    )?;
    let (code, out) = run_as(&mut del(), NOBODY, &netconf);
    assert_ne!(code, 0, "the file's mode refuses nobody: {out}");
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    for _ in 0..2 {
        let (code, out) = run_as(&mut del(), NOBODY, &netconf);
        assert_ne!(code, 0, "nobody is refused after chmod 0666: {out}");
    }
    assert_eq!(
        refusals(&felix, NOBODY),
        1,
        "the refusal is logged once, with the uid: {}",
        stderr_of(&felix)
    );
    let (code, out) = run_as(&mut del(), 0, &netconf);
    assert_eq!(code, 0, "root is still served: {out}");
    Ok(())
}

/// etcd with TLS client authentication on 127.0.0.1 inside `ns` (its certificate is for
/// 127.0.0.1), certificates in `dir`.
fn tls_etcd(
    lab: &Lab,
    ns: &Netns,
    dir: &Path,
) -> Result<(Process, margay_datastore::testing::TlsFiles)> {
    let tls = margay_datastore::testing::make_certs(dir);
    let data = lab.dir().join("etcd.data");
    let args = [
        "--name=sec".to_string(),
        format!("--data-dir={}", data.display()),
        "--listen-client-urls=https://127.0.0.1:2379".into(),
        "--advertise-client-urls=https://127.0.0.1:2379".into(),
        "--listen-peer-urls=http://127.0.0.1:2380".into(),
        "--initial-advertise-peer-urls=http://127.0.0.1:2380".into(),
        "--initial-cluster=sec=http://127.0.0.1:2380".into(),
        format!("--cert-file={}", tls.server_cert.display()),
        format!("--key-file={}", tls.server_key.display()),
        format!("--trusted-ca-file={}", tls.ca.display()),
        "--client-cert-auth".into(),
    ];
    let etcd = Process::spawn(
        ns,
        "etcd",
        margay_datastore::testing::ETCD_BINARY,
        &args,
        lab.dir(),
    )?;
    Ok((etcd, tls))
}

/// The etcd flags for the TLS etcd in the namespace.
fn tls_flags(tls: &margay_datastore::testing::TlsFiles) -> Vec<String> {
    vec![
        "--etcd-endpoints".into(),
        "https://127.0.0.1:2379".into(),
        "--etcd-ca-cert-file".into(),
        tls.ca.display().to_string(),
        "--etcd-cert-file".into(),
        tls.client_cert.display().to_string(),
        "--etcd-key-file".into(),
        tls.client_key.display().to_string(),
    ]
}

/// `margayctl` in `ns` against the TLS etcd, at trace level: (exit code, stdout + stderr).
fn ctl(ns: &Netns, tls: &margay_datastore::testing::TlsFiles, args: &[&str]) -> (i32, String) {
    let out = ns
        .command(binary("margayctl"))
        .args(tls_flags(tls))
        .args(["--log-level", "trace"])
        .args(args)
        .output()
        .expect("running margayctl");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn curl(ns: &Netns, port: u16, path: &str) -> String {
    ns.exec(
        "curl",
        &[
            "-s",
            "--max-time",
            "2",
            &format!("http://127.0.0.1:{port}{path}"),
        ],
    )
    .unwrap_or_default()
}

#[test]
fn no_secret_in_logs_metrics_get_output_or_node_status() -> Result<()> {
    const TOML_PASSWORD: &str = "toml-md5-Vq8wRt";
    const PEER_PASSWORD: &str = "bgppeer-md5-Zx4kLp";
    let lab = Lab::new("no_secret_in_logs_metrics_get_output_or_node_status")?;
    let ns = lab.netns("n")?;
    let certs = tempfile::tempdir().expect("certificate dir");
    let (etcd, tls) = tls_etcd(&lab, &ns, certs.path())?;
    wait_for(
        "the TLS etcd to serve margayctl",
        UP,
        &[&etcd],
        || match ctl(&ns, &tls, &["get", "nodes"]) {
            (0, _) => Ok(()),
            (c, out) => Err(format!("{c}: {out}")),
        },
    )?;
    let mut seen = String::new();

    let peer = lab.dir().join("peer.yaml");
    std::fs::write(
        &peer,
        format!(
            "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {{name: tor}}\n\
             spec: {{peerIP: 10.0.0.2, asNumber: 64512, password: {{value: {PEER_PASSWORD}}}}}\n"
        ),
    )
    .expect("writing the BGPPeer");
    let (code, out) = ctl(
        &ns,
        &tls,
        &["apply", "-f", peer.to_str().unwrap_or_default()],
    );
    assert_eq!(code, 0, "{out}");
    seen.push_str(&out);
    for output in ["yaml", "json", "wide", "ps"] {
        let (code, out) = ctl(&ns, &tls, &["get", "bgppeers", "-o", output]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("tor"), "{out}");
        seen.push_str(&out);
    }

    // Cluster mode: the BGPPeer's password is configured for TCP-MD5, at trace level.
    let cluster_socket = lab.dir().join("cluster.sock");
    let mut cluster_args = tls_flags(&tls);
    cluster_args.extend(
        [
            "--datastore",
            "etcd",
            "--node",
            "n1",
            "--ip",
            "10.0.0.1/24",
            "--as",
            "64512",
            "--http-port",
            "19179",
            "--log-level",
            "trace",
            "--socket",
        ]
        .map(String::from),
    );
    cluster_args.push(cluster_socket.display().to_string());
    let cluster = Process::spawn(
        &ns,
        "bgpd-cluster",
        bgpd_binary()?,
        &cluster_args,
        lab.dir(),
    )?;

    // File mode: the TOML password, on another listen port.
    let mut config = BgpdConfig::new(std::net::Ipv4Addr::new(10, 0, 0, 3), 64512).neighbor(
        BgpdNeighbor::new("10.0.0.4".parse().expect("addr"), 64512).password(TOML_PASSWORD),
    );
    config.listen_port = 1179;
    config.http_port = Some(19180);
    config.socket = lab.dir().join("file.sock");
    let conf = lab.dir().join("file.toml");
    std::fs::write(&conf, config.render()?).expect("writing the config");
    let file = Process::spawn(
        &ns,
        "bgpd-file",
        bgpd_binary()?,
        [
            "--config".as_ref(),
            conf.as_os_str(),
            "--log-level".as_ref(),
            "trace".as_ref(),
        ],
        lab.dir(),
    )?;

    let mut felix_args = tls_flags(&tls);
    felix_args.extend(
        [
            "--node",
            "n1",
            "--http-port",
            "19099",
            "--log-level",
            "trace",
            "--socket",
        ]
        .map(String::from),
    );
    felix_args.push(lab.dir().join("felix.sock").display().to_string());
    felix_args.push("--bgpd-socket".into());
    felix_args.push(cluster_socket.display().to_string());
    let felix = Process::spawn(&ns, "felix", binary("margay-felix"), &felix_args, lab.dir())?;

    wait_for(
        "cluster bgpd to configure the BGPPeer",
        UP,
        &[&cluster],
        || {
            let log = stderr_of(&cluster);
            if log.contains("10.0.0.2") && cluster_socket.exists() {
                Ok(())
            } else {
                Err("not yet".into())
            }
        },
    )?;
    wait_for("file bgpd to configure its neighbour", UP, &[&file], || {
        let log = stderr_of(&file);
        if log.contains("10.0.0.4") {
            Ok(())
        } else {
            Err("not yet".into())
        }
    })?;
    wait_for("felix to serve /metrics", UP, &[&felix], || {
        let m = curl(&ns, 19099, "/metrics");
        if m.contains("# TYPE") { Ok(()) } else { Err(m) }
    })?;
    for port in [19179, 19180, 19099] {
        seen.push_str(&curl(&ns, port, "/metrics"));
    }
    for socket in [&cluster_socket, &lab.dir().join("file.sock")] {
        let out = ns
            .command(binary("margayctl"))
            .args(["node", "status", "-o", "json", "--socket"])
            .arg(socket)
            .output()
            .expect("node status");
        assert!(out.status.success(), "{out:?}");
        seen.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    // Let the daemons run their loops at trace level for a moment, then stop them.
    std::thread::sleep(Duration::from_secs(2));
    let mut procs = [felix, cluster, file];
    for p in &mut procs {
        p.stop();
        seen.push_str(&stderr_of(p));
        seen.push_str(&std::fs::read_to_string(p.log_paths().0).unwrap_or_default());
    }
    assert!(
        seen.contains("trace") || seen.contains("TRACE"),
        "trace logs were written"
    );

    let key = std::fs::read_to_string(&tls.client_key).expect("reading the client key");
    let key_lines: Vec<&str> = key
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .collect();
    assert!(!key_lines.is_empty(), "the key has a body");
    for secret in [TOML_PASSWORD, PEER_PASSWORD, "PRIVATE KEY"]
        .into_iter()
        .chain(key_lines)
    {
        if let Some(at) = seen.find(secret) {
            let start = seen[..at].rfind('\n').unwrap_or(0);
            let end = seen[at..].find('\n').map_or(seen.len(), |e| at + e);
            panic!("secret {secret:?} leaked: {}", &seen[start..end]);
        }
    }
    drop(etcd);
    Ok(())
}
