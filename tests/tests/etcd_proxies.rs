//! margay's daemons behind etcd's gRPC proxies (issue 12 §3, etcd's watch fan-out): nodes'
//! bgpd talk to `etcd grpc-proxy` instead of etcd, and the proxy serves every node's watches on
//! a prefix from one watch of its own on etcd. The mesh comes up through the proxies, a node
//! that joins through a proxy adds no watcher on etcd once its watches line up with the
//! proxy's, and after etcd crashes and comes back every change still reaches every node.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use margay_lab::labctl::etcd_section::sample;
use margay_lab::{
    Bgpd, ClusterArgs, Etcd, EtcdProxy, HasLogs, Lab, Netns, Result, block4, start_proxies,
    wait_for,
};
use margay_proto::bgp::v1::PeerType;

/// Time for sessions to come up and routes to travel (a loaded 2-core machine).
const UP: Duration = Duration::from_secs(45);
/// etcd's gauge of the watchers it serves.
const WATCHERS: &str = "etcd_debugging_mvcc_watcher_total";

struct Host {
    name: String,
    bgpd: Option<Bgpd>,
    ns: Netns,
    ip: IpAddr,
    net: IpNet,
}

/// Fields drop in order: daemons, proxies, etcd, the lab.
struct Cluster {
    hosts: Vec<Host>,
    proxies: Vec<EtcdProxy>,
    etcd: Etcd,
    _sw: margay_lab::LabSwitch,
    lab: Lab,
}

impl Cluster {
    fn new(test: &str, nodes: usize, proxies: u8) -> Result<Cluster> {
        let lab = Lab::new(test)?;
        let sw = lab.switch("sw")?;
        let etcd = Etcd::on_switch(&lab, &sw)?;
        let proxies = start_proxies(&lab, &etcd, proxies)?;
        let mut hosts = Vec::new();
        for i in 1..=nodes {
            let ns = lab.netns(&format!("n{i}"))?;
            let addrs = sw.attach(&ns)?;
            hosts.push(Host {
                name: format!("node{i}"),
                bgpd: None,
                ns,
                ip: IpAddr::V4(addrs.ip4()),
                net: IpNet::V4(addrs.v4),
            });
        }
        Ok(Cluster {
            hosts,
            proxies,
            etcd,
            _sw: sw,
            lab,
        })
    }

    /// Starts node `i`'s bgpd (1-based) talking to proxy `proxy`.
    fn start(&mut self, i: usize, proxy: usize) -> Result<()> {
        let endpoint = self.proxies[proxy].endpoint();
        let h = &self.hosts[i - 1];
        let args = ClusterArgs::new(&h.name, &endpoint, h.net);
        let bgpd = Bgpd::start_cluster(&self.lab, &h.ns, &h.name, args)?;
        self.hosts[i - 1].bgpd = Some(bgpd);
        Ok(())
    }

    fn bgpd(&self, i: usize) -> &Bgpd {
        self.hosts[i - 1].bgpd.as_ref().expect("bgpd started")
    }

    /// Waits until each of `nodes` has exactly the others as Established mesh peers.
    fn wait_mesh(&self, nodes: &[usize]) -> Result<()> {
        for &i in nodes {
            let want: Vec<IpAddr> = nodes
                .iter()
                .filter(|&&j| j != i)
                .map(|&j| self.hosts[j - 1].ip)
                .collect();
            let bgpd = self.bgpd(i);
            let logs: Vec<&dyn HasLogs> = vec![bgpd, &self.etcd, &self.proxies[0]];
            wait_for(
                &format!("node{i}: Established mesh sessions with {want:?}"),
                UP,
                &logs,
                || {
                    let peers = bgpd.peers().map_err(|e| e.to_string())?;
                    let mut got: Vec<IpAddr> = peers
                        .iter()
                        .filter(|p| p.r#type() == PeerType::NodeMesh && p.state == "Established")
                        .filter_map(|p| p.address.parse().ok())
                        .collect();
                    got.sort();
                    let mut w = want.clone();
                    w.sort();
                    if got == w && peers.len() == want.len() {
                        Ok(())
                    } else {
                        Err(format!("peers {peers:?}"))
                    }
                },
            )?;
        }
        Ok(())
    }

    /// The watchers etcd serves now, from its `/metrics`.
    fn etcd_watchers(&self) -> std::result::Result<u64, String> {
        let url = format!("{}/metrics", self.etcd.endpoint());
        let text = self
            .etcd
            .netns()
            .exec("curl", &["-s", "--max-time", "2", &url])
            .map_err(|e| e.to_string())?;
        sample(&text, WATCHERS)
            .map(|v| v as u64)
            .ok_or_else(|| format!("no {WATCHERS} in {url}"))
    }
}

#[test]
fn the_mesh_runs_through_grpc_proxies_which_coalesce_watches_and_survive_an_etcd_restart()
-> Result<()> {
    let mut c = Cluster::new("etcd_proxies_mesh", 4, 2)?;
    // node1 and node3 on proxy 0, node2 on proxy 1.
    c.start(1, 0)?;
    c.start(2, 1)?;
    c.wait_mesh(&[1, 2])?;
    let before = c.etcd_watchers().map_err(margay_lab::LabError::Render)?;

    // A node whose daemon watches the same prefixes through proxy 0, which already watches
    // them: once its watches have caught up with the proxy's, etcd serves no more watchers
    // than before it joined.
    c.start(3, 0)?;
    c.wait_mesh(&[1, 2, 3])?;
    let logs: Vec<&dyn HasLogs> = vec![&c.proxies[0], &c.etcd];
    wait_for(
        &format!("etcd to serve {before} watchers again, node3's coalesced into proxy 0's"),
        UP,
        &logs,
        || match c.etcd_watchers() {
            Ok(n) if n == before => Ok(()),
            Ok(n) => Err(format!(
                "etcd serves {n} watchers, {before} before node3 joined"
            )),
            Err(e) => Err(e),
        },
    )?;

    // etcd crashes and comes back on the same data; the proxies reconnect and the daemons'
    // watches through them resume: a Node deleted and a node joining after the restart reach
    // everyone.
    c.etcd.restart(&c.lab)?;
    c.etcd.delete("node", "node2")?;
    if let Some(b) = c.hosts[1].bgpd.as_mut() {
        b.stop();
    }
    c.start(4, 1)?;
    c.wait_mesh(&[1, 3, 4])?;

    // Routes flow as always: node4's block reaches node1 and node3.
    let block = IpNet::V4(block4());
    let n4 = c.hosts[3].ip;
    c.bgpd(4).originate(&[block])?;
    for i in [1, 3] {
        c.bgpd(i).wait_route_via(block, n4, UP)?;
    }
    Ok(())
}
