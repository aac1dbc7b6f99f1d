//! Policy end to end: etcd, margay-bgpd and margay-felix in cluster mode in a node namespace,
//! pods made by the real CNI plugin (`margay`), policies and labels written to etcd, and real
//! TCP between the pods. Checks that a new pod's policy is in force when ADD returns, that a
//! policy apply and a label change take effect within a second, and that restarting felix
//! under a probe every 10 ms lets no denied connection through and loses no allowed one.

mod common;

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use margay_datastore::Store;
use margay_datastore::resources::WorkloadEndpointSpec;
use margay_lab::flows::{Responder, tcp_connects};
use margay_lab::{
    Bgpd, ClusterArgs, Etcd, Felix, FelixArgs, Lab, LabSwitch, Netns, margay_binary, wait_for,
};
use serde_json::{Value, json};

const POOL: &str = "10.103.0.0/16";

struct Node {
    felix: Option<Felix>,
    _bgpd: Bgpd,
    ns: Netns,
    socket: std::path::PathBuf,
    etcd: Etcd,
    _sw: LabSwitch,
}

impl Node {
    fn start(lab: &Lab) -> Node {
        let sw = lab.switch("sw").unwrap();
        let etcd = Etcd::on_switch(lab, &sw).unwrap();
        etcd.apply(&format!(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: pool1}}\n\
             spec: {{cidr: {POOL}, ipipMode: Never, vxlanMode: Never, blockSize: 24}}\n"
        ))
        .unwrap();
        let ns = lab.netns("n1").unwrap();
        let addr = sw.attach(&ns).unwrap();
        ns.ip(&["route", "add", "default", "via", &etcd.ip().to_string()])
            .unwrap();
        let bgpd = Bgpd::start_cluster(
            lab,
            &ns,
            "bgpd-n1",
            ClusterArgs::new("n1", &etcd.endpoint(), ipnet::IpNet::V4(addr.v4)),
        )
        .unwrap();
        let mut n = Node {
            felix: None,
            _bgpd: bgpd,
            ns,
            socket: lab.dir().join("felix.sock"),
            etcd,
            _sw: sw,
        };
        n.start_felix(lab);
        n
    }

    fn start_felix(&mut self, lab: &Lab) {
        let args = FelixArgs::new(
            "n1",
            &self.etcd.endpoint(),
            &lab.dir().join("bgpd-n1.sock"),
            &self.socket,
        );
        let felix = Felix::start_cluster(lab, &self.ns, "felix-n1", args).unwrap();
        self.felix = Some(felix);
        let conf = self.conf().to_string();
        wait_for(
            "felix ready (CNI STATUS)",
            Duration::from_secs(60),
            &[self.felix.as_ref().unwrap()],
            || {
                let r = plugin(&env("STATUS", "", "", ""), &conf);
                if r.0 == 0 { Ok(()) } else { Err(r.1) }
            },
        )
        .unwrap();
    }

    fn conf(&self) -> Value {
        json!({
            "cniVersion": "1.1.0", "name": "margay-pod-network", "type": "margay",
            "ipam": {"type": "margay-ipam"}, "felix_socket": self.socket.to_str().unwrap(),
            "nodename": "n1", "log_level": "warn",
        })
    }

    /// ADD through the plugin: the pod's address.
    fn add(&self, lab: &Lab, pod: &Netns, name: &str) -> IpAddr {
        let path = format!("/var/run/netns/{}", pod.name());
        let args = format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={name}");
        let container = format!("{}{name}", lab.tag());
        let (code, out) = plugin(
            &env("ADD", &container, &path, &args),
            &self.conf().to_string(),
        );
        assert_eq!(code, 0, "ADD {name}: {out}");
        let v: Value = serde_json::from_str(&out).unwrap();
        v["ips"][0]["address"]
            .as_str()
            .unwrap()
            .trim_end_matches("/32")
            .parse()
            .unwrap()
    }

    /// Runs `f` with a Store connected to etcd, from inside the node's namespace.
    fn store<T: Send + 'static, F, Fut>(&self, f: F) -> T
    where
        F: FnOnce(Store) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T>,
    {
        common::store_in(&self.ns, &self.etcd.endpoint(), f)
    }

    /// Sets the labels of pod `name`'s WorkloadEndpoint.
    fn label(&self, name: &str, labels: &[(&str, &str)]) {
        let wep = format!("n1-k8s-{name}-eth0");
        let labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.store(move |s| async move {
            let mut w = s
                .get_ns::<WorkloadEndpointSpec>(Some("default"), &wep)
                .await
                .unwrap()
                .expect("the pod's WorkloadEndpoint");
            w.metadata.labels.extend(labels);
            s.update(&w).await.unwrap();
        });
    }
}

fn env(cmd: &str, container: &str, netns: &str, args: &str) -> Vec<(String, String)> {
    [
        ("CNI_COMMAND", cmd),
        ("CNI_CONTAINERID", container),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", args),
        ("CNI_PATH", "/usr/lib/cni"),
        ("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Runs the CNI plugin: exit code and stdout (stderr appended on failure).
fn plugin(env: &[(String, String)], stdin: &str) -> (i32, String) {
    let bin = margay_binary("margay", "cargo build -p margay-cni").unwrap();
    let mut child = Command::new(bin)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        text.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    (out.status.code().unwrap_or(-1), text)
}

const T: Duration = Duration::from_millis(500);

/// Waits until `cond` holds; returns how long that took (fails after 5 s).
fn time_until(what: &str, cond: impl Fn() -> bool) -> Duration {
    let started = Instant::now();
    while !cond() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{what}: not within 5 s"
        );
    }
    started.elapsed()
}

#[test]
fn policy_from_etcd_is_in_force_at_add_on_apply_and_label_change_and_across_a_felix_restart() {
    let lab = Lab::new("policy_cluster").unwrap();
    let mut node = Node::start(&lab);
    let pods: Vec<Netns> = (0..3)
        .map(|i| lab.netns(&format!("p{i}")).unwrap())
        .collect();
    let mut ips = Vec::new();
    let mut responders = Vec::new();
    for (i, p) in pods.iter().take(2).enumerate() {
        ips.push(node.add(&lab, p, &format!("pod{i}")));
        responders.push(Responder::start(p.name(), &[80, 8080], &[]).unwrap());
    }
    let can = |from: usize, to: IpAddr, port: u16| {
        tcp_connects(pods[from].name(), SocketAddr::new(to, port), T).unwrap()
    };
    assert!(
        can(0, ips[1], 80) && can(0, ips[1], 8080),
        "no policy: open"
    );

    // Kubernetes: ingress only on TCP 80 to every pod of the namespace.
    let started = Instant::now();
    node.etcd
        .apply(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
             metadata: {name: only-80, namespace: default}\n\
             spec: {podSelector: {}, ingress: [{ports: [{protocol: TCP, port: 80}]}]}\n",
        )
        .unwrap();
    let took = time_until("policy apply in force", || !can(0, ips[1], 8080));
    println!(
        "policy apply: in force {:?} after margayctl apply began",
        took + (started.elapsed() - took)
    );
    assert!(took < Duration::from_secs(1), "policy apply took {took:?}");
    assert!(can(0, ips[1], 80));

    // A new pod: its policy holds the moment ADD returns (80 open, 8080 closed, first try).
    responders.push(Responder::start(pods[2].name(), &[80, 8080], &[]).unwrap());
    ips.push(node.add(&lab, &pods[2], "pod2"));
    assert!(
        !can(0, ips[2], 8080),
        "the new pod's 8080 was open after ADD"
    );
    assert!(can(0, ips[2], 80), "the new pod's 80 was closed after ADD");

    // A label change re-evaluates the selectors: pod0 labelled blocked loses 80 to everyone.
    node.etcd
        .apply(
            "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\n\
             metadata: {name: block-labelled}\n\
             spec: {order: 10, selector: all(), types: [Ingress], \
             ingress: [{action: Deny, source: {selector: role == 'blocked'}}]}\n",
        )
        .unwrap();
    // Wait until the GNP is programmed (it changes nothing yet: nobody is labelled).
    std::thread::sleep(Duration::from_millis(300));
    assert!(can(0, ips[1], 80));
    node.label("pod0", &[("role", "blocked")]);
    let took = time_until("label change in force", || !can(0, ips[1], 80));
    println!("label change: in force after {took:?}");
    assert!(took < Duration::from_secs(1), "label change took {took:?}");
    assert!(can(2, ips[1], 80), "an unlabelled pod still reaches 80");

    // felix restarts under a probe every 10 ms: pod2 → pod1:80 (allowed), pod2 → pod1:8080
    // and pod0 → pod1:80 (denied).
    // One thread per flow, each trying a new connection every 10 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let counts: Arc<[AtomicU64; 4]> = Arc::new(Default::default());
    let flows = [
        (pods[2].name().to_string(), 80, true),
        (pods[2].name().to_string(), 8080, false),
        (pods[0].name().to_string(), 80, false),
    ];
    let probes: Vec<_> = flows
        .into_iter()
        .map(|(ns, port, allowed)| {
            let (stop, counts, dst) = (stop.clone(), counts.clone(), ips[1]);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    let wait = if allowed {
                        Duration::from_secs(2)
                    } else {
                        Duration::from_millis(10)
                    };
                    let through = tcp_connects(&ns, SocketAddr::new(dst, port), wait).unwrap();
                    let k = match (allowed, through) {
                        (true, true) => 0,
                        (true, false) => 1,
                        (false, false) => 2,
                        (false, true) => 3,
                    };
                    counts[k].fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(10).saturating_sub(t0.elapsed()));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    node.felix.as_mut().unwrap().stop();
    std::thread::sleep(Duration::from_millis(500));
    node.start_felix(&lab);
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::Relaxed);
    for p in probes {
        p.join().unwrap();
    }
    let [allowed_ok, allowed_lost, denied_ok, denied_through] =
        [0, 1, 2, 3].map(|i| counts[i].load(Ordering::Relaxed));
    println!(
        "felix restart: allowed {allowed_ok} passed / {allowed_lost} lost; denied {denied_ok} dropped / {denied_through} through"
    );
    assert!(allowed_ok > 50 && denied_ok > 100, "the probe did not run");
    assert_eq!(
        denied_through, 0,
        "denied connections passed during the restart"
    );
    assert_eq!(
        allowed_lost, 0,
        "allowed connections lost during the restart"
    );
    drop(responders);
}
