//! The VXLAN-without-BGP join benchmark behind `bench/vxlan-join.sh` (issue 14 §5): a real etcd
//! and three nodes on one switch with a VXLAN (Always) pool; a fourth node joins and leaves
//! TRIALS times. A join is timed from the start of the node's daemons until its block is routed
//! through `vxlan.margay` in all three other kernels (polled every 5 ms); a leave (daemons
//! stopped, Node deleted) until it is gone from all three. Run once with the `vxlan` backend
//! (felix alone, routes from IPAM) and once with `bird` (margay-bgpd beside every felix, the
//! node-to-node mesh), in the same run. Each trial also claims a block for the joined node
//! (a pool of /32 blocks, so every claim is a new block and a new affinity) and times IPAM's
//! write until the block is routed in the other three kernels: the propagation alone, without
//! the daemons' start.
//!
//! Usage: `vxlan_join_bench [TRIALS]` (as root; default 100).

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv4Net};
use margay_datastore::ipam::{Ipam, Want};
use margay_datastore::resources::{AllowedUse, NodeSpec};
use margay_datastore::{EtcdArgs, Store};
use margay_lab::{Addrs, Bgpd, ClusterArgs, Etcd, Felix, FelixArgs, Lab, Netns};

const TIMEOUT: Duration = Duration::from_secs(60);

struct Node {
    name: String,
    ns: Netns,
    addr: Addrs,
    bgpd: Option<Bgpd>,
    felix: Option<Felix>,
}

fn start(lab: &Lab, etcd: &Etcd, n: &mut Node, bgp: bool) {
    let felix_sock = lab.dir().join(format!("{}-felix.sock", n.name));
    let bgpd_name = format!("{}-bgpd", n.name);
    let bgpd_sock = lab.dir().join(format!("{bgpd_name}.sock"));
    let mut fargs = FelixArgs::new(&n.name, &etcd.endpoint(), &bgpd_sock, &felix_sock);
    if bgp {
        let args = ClusterArgs::new(&n.name, &etcd.endpoint(), IpNet::V4(n.addr.v4));
        n.bgpd = Some(Bgpd::start_cluster(lab, &n.ns, &bgpd_name, args).expect("bgpd"));
    } else {
        fargs = fargs.without_bgp(IpNet::V4(n.addr.v4));
    }
    n.felix =
        Some(Felix::start_cluster(lab, &n.ns, &format!("{}-felix", n.name), fargs).expect("felix"));
}

fn stop(n: &mut Node) {
    n.felix.take();
    if let Some(mut b) = n.bgpd.take() {
        b.stop();
    }
}

/// A datastore call from inside etcd's namespace.
fn with_store<T: Send + 'static>(
    etcd: &Etcd,
    f: impl FnOnce(Store) -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>
    + Send
    + 'static,
) -> T {
    let path = format!("/var/run/netns/{}", etcd.netns().name());
    let url = etcd.endpoint();
    std::thread::spawn(move || {
        margay_felix::netlink::enter_netns(&path).expect("netns");
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let s = Store::connect(&EtcdArgs::plain([url])).await.expect("etcd");
                f(s).await
            })
    })
    .join()
    .unwrap()
}

/// The /26 of node `name`'s VXLAN tunnel address, once recorded.
fn tunnel_block(etcd: &Etcd, name: &str) -> Option<String> {
    let name = name.to_string();
    let addr: Option<Ipv4Addr> = with_store(etcd, move |s| {
        Box::pin(async move {
            s.get::<NodeSpec>(&name)
                .await
                .ok()
                .flatten()
                .and_then(|r| r.spec.ipv4_vxlan_tunnel_addr)
                .and_then(|a| a.parse().ok())
        })
    });
    addr.map(|a| Ipv4Net::new(a, 26).unwrap().trunc().to_string())
}

/// Whether the kernel of `ns` routes `dst` through vxlan.margay.
fn routed(ns: &Netns, dst: &str) -> bool {
    let out = Command::new("ip")
        .args(["-n", ns.name(), "-4", "route", "show", dst])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.contains("vxlan.margay")
}

/// Polls until `pred` holds on every one of `others`; the time since `t0`.
fn until(others: &[Node], t0: Instant, pred: impl Fn(&Netns) -> bool) -> Duration {
    while t0.elapsed() < TIMEOUT {
        if others.iter().all(|n| pred(&n.ns)) {
            return t0.elapsed();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("not reached within {TIMEOUT:?}");
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

fn report(what: &str, mut v: Vec<Duration>) {
    v.sort();
    println!(
        "{what:<34} n={:<4} p50 {:>7.1} ms  p90 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms",
        v.len(),
        percentile(&v, 0.50),
        percentile(&v, 0.90),
        percentile(&v, 0.99),
        percentile(&v, 1.0),
    );
}

fn run(bgp: bool, trials: usize) {
    let backend = if bgp { "bird" } else { "vxlan" };
    let lab = Lab::new(&format!("vxlan_join_bench_{backend}")).unwrap();
    let sw = lab.switch("sw").unwrap();
    let etcd = Etcd::on_switch(&lab, &sw).unwrap();
    etcd.apply(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pool1}\n\
         spec: {cidr: 10.104.0.0/16, vxlanMode: Always}\n---\n\
         apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: claims}\n\
         spec: {cidr: 10.105.0.0/16, blockSize: 32, vxlanMode: Always, allowedUses: [Workload]}\n",
    )
    .unwrap();
    let mut nodes: Vec<Node> = ["n1", "n2", "n3", "joiner"]
        .iter()
        .map(|name| {
            let ns = lab.netns(name).unwrap();
            let addr = sw.attach(&ns).unwrap();
            Node {
                name: name.to_string(),
                ns,
                addr,
                bgpd: None,
                felix: None,
            }
        })
        .collect();
    for n in nodes.iter_mut().take(3) {
        start(&lab, &etcd, n, bgp);
    }
    let mut joiner = nodes.pop().unwrap();
    let (mut joins, mut claims, mut leaves) = (Vec::new(), Vec::new(), Vec::new());
    for trial in 0..trials {
        let t0 = Instant::now();
        start(&lab, &etcd, &mut joiner, bgp);
        let block = loop {
            if let Some(b) = tunnel_block(&etcd, &joiner.name) {
                break b;
            }
            assert!(t0.elapsed() < TIMEOUT, "no tunnel address");
            std::thread::sleep(Duration::from_millis(5));
        };
        joins.push(until(&nodes, t0, |ns| routed(ns, &block)));
        let handle = format!("bench-claim-{trial}");
        let claimed: std::net::IpAddr = with_store(&etcd, move |s| {
            Box::pin(async move {
                let want = Want {
                    usage: AllowedUse::Workload,
                    num_v4: 1,
                    num_v6: 0,
                };
                let got = Ipam::new(s)
                    .auto_assign_for(
                        want,
                        &handle,
                        "joiner",
                        &Default::default(),
                        &["claims".into()],
                    )
                    .await
                    .expect("claim");
                got.v4[0]
            })
        });
        let t_claim = Instant::now();
        let dst = claimed.to_string();
        claims.push(until(&nodes, t_claim, |ns| routed(ns, &dst)));
        stop(&mut joiner);
        let t1 = Instant::now();
        with_store(&etcd, |s| {
            Box::pin(async move {
                s.delete::<NodeSpec>(None, "joiner", None).await.unwrap();
            })
        });
        leaves.push(until(&nodes, t1, |ns| {
            !routed(ns, &block) && !routed(ns, &dst)
        }));
        if trial % 10 == 9 {
            eprintln!("{backend}: {} trials", trial + 1);
        }
    }
    report(&format!("{backend}: join -> block in 3 kernels"), joins);
    report(&format!("{backend}: block claimed -> in 3 kernels"), claims);
    report(&format!("{backend}: Node deleted -> gone from 3"), leaves);
    for n in nodes.iter_mut() {
        stop(n);
    }
    drop(sw);
}

fn main() {
    let trials = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100);
    run(false, trials);
    run(true, trials);
}
