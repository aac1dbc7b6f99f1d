//! Shared helpers of felix's namespace tests: a "node" namespace with an uplink and cali veths,
//! felix started in it from a state file, and readers of `ip -j` output.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use margay_lab::{Lab, Netns, Process, wait_for};
use serde_json::Value;

/// The protocol number felix marks its routes with.
pub const PROTO: &str = "81";

/// The margay-felix binary cargo built for these tests.
pub fn felix_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_margay-felix"))
}

/// Runs `ip -n NS -j ARGS` and parses its JSON (an empty array when it prints nothing).
pub fn ip_json(ns: &Netns, args: &[&str]) -> Vec<Value> {
    ns.ip_json(args).expect("ip -j")
}

/// felix's routes in the main table, as `ip -j route show proto 81` prints them.
pub fn felix_routes(ns: &Netns) -> Vec<Value> {
    ip_json(ns, &["route", "show", "proto", PROTO])
}

/// The route to `dst` among `routes` (any protocol), if present.
pub fn route_to<'a>(routes: &'a [Value], dst: &str) -> Option<&'a Value> {
    routes.iter().find(|r| r["dst"] == dst)
}

/// A short text of routes for failure messages.
pub fn show(routes: &[Value]) -> String {
    routes
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Creates veth `host` (up, in `ns`) whose peer `peer` is in `peer_ns` (or `ns`), both up.
pub fn veth(ns: &Netns, host: &str, peer: &str, peer_ns: Option<&Netns>) {
    match peer_ns {
        Some(p) => ns
            .ip(&[
                "link",
                "add",
                host,
                "type",
                "veth",
                "peer",
                "name",
                peer,
                "netns",
                p.name(),
            ])
            .expect("veth"),
        None => ns
            .ip(&["link", "add", host, "type", "veth", "peer", "name", peer])
            .expect("veth"),
    };
    ns.ip(&["link", "set", host, "up"]).expect("up");
    match peer_ns {
        Some(p) => p.ip(&["link", "set", peer, "up"]).expect("up"),
        None => ns.ip(&["link", "set", peer, "up"]).expect("up"),
    };
}

/// felix running in a namespace from a state file in the lab directory.
pub struct Felix {
    pub proc: Process,
    pub state: PathBuf,
    pub port: u16,
}

/// Writes `state` (JSON) for node `name` and starts felix in `ns` with a 1 s resync.
pub fn start_felix(lab: &Lab, ns: &Netns, name: &str, state: &Value, tag: &str) -> Felix {
    let path = lab.dir().join(format!("{name}.state.json"));
    std::fs::write(&path, serde_json::to_string_pretty(state).unwrap()).unwrap();
    spawn_felix(lab, ns, name, path, tag, "1")
}

/// Starts felix on an existing state file, with `resync` seconds between resyncs.
pub fn spawn_felix(
    lab: &Lab,
    ns: &Netns,
    name: &str,
    state: PathBuf,
    tag: &str,
    resync: &str,
) -> Felix {
    let port = 9099;
    let proc = Process::spawn(
        ns,
        &format!("felix-{name}-{tag}"),
        felix_bin(),
        [
            "--node",
            name,
            "--state",
            state.to_str().unwrap(),
            "--http-port",
            &port.to_string(),
            "--resync-interval",
            resync,
        ],
        lab.dir(),
    )
    .expect("start felix");
    Felix { proc, state, port }
}

/// felix in cluster mode on node `name` in `ns`: etcd at `etcd`, the bgpd socket that
/// [`margay_lab::Bgpd::start_cluster`] names (`bgpd-NAME.sock` in the lab directory), the CNI
/// API on `socket`, no HTTP server, and `extra` flags.
pub fn spawn_cluster_felix(
    lab: &Lab,
    ns: &Netns,
    name: &str,
    etcd: &str,
    socket: &std::path::Path,
    extra: &[&str],
) -> Process {
    let bgpd = lab.dir().join(format!("bgpd-{name}.sock"));
    let mut args = vec![
        "--node",
        name,
        "--etcd-endpoints",
        etcd,
        "--bgpd-socket",
        bgpd.to_str().unwrap(),
        "--socket",
        socket.to_str().unwrap(),
        "--http-port",
        "0",
    ];
    args.extend_from_slice(extra);
    Process::spawn(ns, &format!("felix-{name}"), felix_bin(), args, lab.dir()).expect("start felix")
}

impl Felix {
    /// Rewrites the state file and tells felix to re-read it.
    pub fn update(&self, state: &Value) {
        std::fs::write(&self.state, serde_json::to_string_pretty(state).unwrap()).unwrap();
        // SAFETY: kill(2) on the PID of a child we started and have not reaped.
        unsafe { libc::kill(self.proc.pid() as i32, libc::SIGHUP) };
    }
}

/// `GET path` on felix's HTTP port inside `ns`: (status, body).
pub fn http_get(ns: &Netns, port: u16, path: &str) -> Result<(u16, String), String> {
    let nspath = format!("/var/run/netns/{}", ns.name());
    let path = path.to_string();
    std::thread::spawn(move || -> Result<(u16, String), String> {
        use std::io::{Read, Write};
        margay_felix::netlink::enter_netns(&nspath).map_err(|e| e.to_string())?;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok();
        write!(s, "GET {path} HTTP/1.0\r\nHost: felix\r\n\r\n").map_err(|e| e.to_string())?;
        let mut text = String::new();
        s.read_to_string(&mut text).map_err(|e| e.to_string())?;
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("no status in {text:?}"))?;
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        Ok((status, body))
    })
    .join()
    .map_err(|_| "http thread panicked".to_string())?
}

/// Waits until felix's routes satisfy `check` (which returns Err(what is missing)).
pub fn wait_routes(
    ns: &Netns,
    felix: &Felix,
    what: &str,
    check: impl Fn(&[Value]) -> Result<(), String>,
) -> Vec<Value> {
    wait_for(what, Duration::from_secs(10), &[&felix.proc], || {
        let all = ip_json(ns, &["route", "show", "table", "main"]);
        check(&all).map_err(|e| format!("{e}\nroutes:\n{}", show(&all)))?;
        Ok(all)
    })
    .unwrap_or_else(|e| panic!("{e:?}"))
}

/// A pod the way Calico wires one: host side `cali` on `node` with MAC ee:ee:ee:ee:ee:ee,
/// container side `eth0` in `pod` with `ip`/32, a link route to 169.254.1.1 and the default
/// route through it.
pub fn wire_pod(node: &Netns, pod: &Netns, cali: &str, ip: &str) {
    margay_lab::calico::wire_veth(node, pod, cali, ip.parse().expect("an IPv4 address")).unwrap();
}

/// A pod as calico-node leaves it on `node`: wired by [`wire_pod`], forwarding and proxy ARP
/// on, its `/32` device route (protocol `boot`, Calico felix's default) and its block's
/// blackhole (protocol `bird`, from Calico's BIRD).
pub fn calico_pod(node: &Netns, pod: &Netns, cali: &str, ip: &str, block: &str) {
    margay_lab::calico::wire_pod(node, pod, cali, ip.parse().expect("an IPv4 address")).unwrap();
    node.ip(&["route", "add", "blackhole", block, "proto", "bird"])
        .unwrap();
}

/// A current-thread runtime for one blocking call into felix's API.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A client of felix's CNI API (`margay.felix.v1`) on `socket`.
pub async fn cni_client(
    socket: &std::path::Path,
) -> Result<
    margay_proto::felix::v1::endpoints_client::EndpointsClient<tonic::transport::Channel>,
    String,
> {
    let ch = margay_common::uds::channel(socket, Duration::from_secs(5))
        .await
        .map_err(|e| e.to_string())?;
    Ok(margay_proto::felix::v1::endpoints_client::EndpointsClient::new(ch))
}

/// Waits until felix's CNI API answers STATUS ready (synced, etcd reachable).
pub fn wait_cni_ready(socket: &std::path::Path, felix: &Process) {
    wait_for(
        "felix STATUS ready",
        Duration::from_secs(60),
        &[felix],
        || {
            rt().block_on(async {
                let st = cni_client(socket)
                    .await?
                    .status(margay_proto::felix::v1::StatusRequest {})
                    .await
                    .map_err(|e| e.to_string())?
                    .into_inner();
                if st.ready && st.felix_synced && st.etcd_reachable {
                    Ok(())
                } else {
                    Err(format!("{st:?}"))
                }
            })
        },
    )
    .unwrap();
}

/// Runs `f` with a datastore client opened from inside `ns` (etcd at `url` is only reachable
/// from the lab's namespaces).
pub fn store_in<T, F, Fut>(ns: &Netns, url: &str, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce(margay_datastore::Store) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    let url = url.to_string();
    in_netns(ns, move || async move {
        let store = margay_datastore::Store::connect(&margay_datastore::EtcdArgs::plain([url]))
            .await
            .expect("etcd");
        f(store).await
    })
}

/// Writes the resource `v` (its JSON form, any kind) as `margayctl apply` would.
pub async fn write(store: &margay_datastore::Store, v: Value) {
    let r = margay_datastore::resources::AnyResource::from_value(v).unwrap();
    store
        .write_any(&r, margay_datastore::store::WriteMode::Apply)
        .await
        .unwrap();
}

/// Deletes the resource `v` names (its JSON form, any kind).
pub async fn remove(store: &margay_datastore::Store, v: Value) {
    let r = margay_datastore::resources::AnyResource::from_value(v).unwrap();
    store.delete_any(&r).await.unwrap();
}

/// Runs `f` on a thread inside `ns`, on a runtime of its own.
pub fn in_netns<T, F, Fut>(ns: &Netns, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    let path = format!("/var/run/netns/{}", ns.name());
    std::thread::spawn(move || {
        margay_felix::netlink::enter_netns(&path).expect("entering the namespace");
        rt().block_on(f())
    })
    .join()
    .expect("datastore thread")
}

// ---- benchmark helpers (policy_bench, policy_watch) ----

pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// `nft -f FILE` as an operator runs it, started inside the namespace (no `ip netns exec`).
pub fn nft_file(netns: &str, path: &std::path::Path) -> Duration {
    let (ns, path) = (netns.to_string(), path.to_path_buf());
    margay_lab::flows::in_netns(&ns, move || {
        let t0 = std::time::Instant::now();
        let st = std::process::Command::new("nft")
            .arg("-f")
            .arg(&path)
            .status()
            .unwrap();
        assert!(st.success(), "nft -f {}", path.display());
        t0.elapsed()
    })
    .unwrap()
}
