//! margay-bgpd in cluster mode (issue 3 §5-6): a 4-node lab on one switch with a real etcd,
//! each node's bgpd started with only its name and address; its sessions come from the
//! datastore, which the test changes with the real `margayctl`. One test per behaviour; each
//! builds its own lab (namespaces, addresses, etcd), so they run in parallel.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use margay_lab::{
    Addrs, Bgpd, Bird, BirdConfig, BirdNeighbor, ClusterArgs, Etcd, ExportPolicy, HasLogs, Lab,
    LabSwitch, Netns, Result, block4, holds_for, wait_for, yaml_scalar,
};
use margay_proto::bgp::v1::{Peer, PeerType};

/// Time for sessions to come up and routes to travel.
const UP: Duration = Duration::from_secs(45);
/// How long a removed session must stay removed.
const STAYS: Duration = Duration::from_secs(3);
/// How soon every node must have a new Node's peer configured (the issue asks for 1 s; the
/// slack covers the 200 ms polls and a loaded 2-core machine running the suites in parallel).
const LIVE: Duration = Duration::from_secs(3);
/// The cluster's AS (Calico's default, from BGPConfiguration).
const CLUSTER_AS: u32 = 64512;
/// The top-of-rack router's AS.
const TOR_AS: u32 = 65000;
/// The CLUSTER_ID of the route reflectors.
const RR_CLUSTER_ID: &str = "244.0.0.1";

/// One lab host that may run a node's bgpd. Fields drop in order: the daemon, then its
/// namespace.
struct Host {
    name: String,
    bgpd: Option<Bgpd>,
    ns: Netns,
    addrs: Addrs,
}

impl Host {
    fn ip(&self) -> IpAddr {
        IpAddr::V4(self.addrs.ip4())
    }

    fn bgpd(&self) -> &Bgpd {
        self.bgpd
            .as_ref()
            .unwrap_or_else(|| panic!("{}'s bgpd is not running", self.name))
    }
}

/// etcd and `n` hosts (`node1`..) on one switch. Fields drop in order: the daemons and their
/// namespaces, etcd, the switch, and the lab (its directory) last.
struct Cluster {
    hosts: Vec<Host>,
    etcd: Etcd,
    sw: LabSwitch,
    lab: Lab,
}

impl Cluster {
    /// The lab, etcd, and `n` host namespaces attached to the switch; no bgpd yet.
    fn new(test: &str, n: usize) -> Result<Cluster> {
        let lab = Lab::new(test)?;
        let sw = lab.switch("sw")?;
        let etcd = Etcd::on_switch(&lab, &sw)?;
        let mut hosts = Vec::new();
        for i in 1..=n {
            let ns = lab.netns(&format!("n{i}"))?;
            let addrs = sw.attach(&ns)?;
            hosts.push(Host {
                name: format!("node{i}"),
                bgpd: None,
                ns,
                addrs,
            });
        }
        Ok(Cluster {
            hosts,
            etcd,
            sw,
            lab,
        })
    }

    /// Host `i` (1-based, as in its name).
    fn host(&self, i: usize) -> &Host {
        &self.hosts[i - 1]
    }

    fn bgpd(&self, i: usize) -> &Bgpd {
        self.host(i).bgpd()
    }

    fn ip(&self, i: usize) -> IpAddr {
        self.host(i).ip()
    }

    /// Starts node `i`'s bgpd with only its name, etcd and `--ip ADDR/LEN`.
    fn start(&mut self, i: usize) -> Result<()> {
        self.start_with(i, |a| a)
    }

    /// [`Cluster::start`], with more arguments.
    fn start_with(
        &mut self,
        i: usize,
        more: impl FnOnce(ClusterArgs) -> ClusterArgs,
    ) -> Result<()> {
        let h = &self.hosts[i - 1];
        let args = more(ClusterArgs::new(
            &h.name,
            &self.etcd.endpoint(),
            IpNet::V4(h.addrs.v4),
        ));
        let bgpd = Bgpd::start_cluster(&self.lab, &h.ns, &h.name, args)?;
        self.hosts[i - 1].bgpd = Some(bgpd);
        Ok(())
    }

    fn start_all(&mut self) -> Result<()> {
        for i in 1..=self.hosts.len() {
            self.start(i)?;
        }
        Ok(())
    }

    /// Waits until node `i`'s peers are exactly `expected` (address → type), all Established.
    fn wait_sessions(&self, i: usize, expected: &[(IpAddr, PeerType)]) -> Result<Vec<Peer>> {
        let bgpd = self.bgpd(i);
        let want: BTreeMap<IpAddr, PeerType> = expected.iter().copied().collect();
        wait_for(
            &format!("{}: Established sessions {want:?}", self.host(i).name),
            UP,
            &[bgpd, &self.etcd],
            || {
                let peers = bgpd.peers().map_err(|e| e.to_string())?;
                let seen = describe(&peers);
                let got: BTreeMap<IpAddr, PeerType> = peers
                    .iter()
                    .filter_map(|p| Some((peer_ip(p)?, p.r#type())))
                    .collect();
                if got != want {
                    return Err(format!("peers {seen}"));
                }
                if peers.iter().all(|p| p.state == "Established") {
                    Ok(peers)
                } else {
                    Err(format!("not all Established: {seen}"))
                }
            },
        )
    }

    /// Waits for the full mesh among `nodes`: each has exactly the others as NODE_MESH peers.
    fn wait_mesh(&self, nodes: &[usize]) -> Result<()> {
        self.wait_mesh_and(nodes, &[])
    }

    /// Waits until each of `nodes` has exactly the others as NODE_MESH peers, plus `extra`.
    fn wait_mesh_and(&self, nodes: &[usize], extra: &[(IpAddr, PeerType)]) -> Result<()> {
        for &i in nodes {
            let mut expected: Vec<(IpAddr, PeerType)> = nodes
                .iter()
                .filter(|&&j| j != i)
                .map(|&j| (self.ip(j), PeerType::NodeMesh))
                .collect();
            expected.extend_from_slice(extra);
            self.wait_sessions(i, &expected)?;
        }
        Ok(())
    }

    /// `(pid, since of each peer)` of node `i`: what a restart or a reset would change.
    fn fingerprint(&self, i: usize) -> Result<(u32, BTreeMap<IpAddr, i64>)> {
        let bgpd = self.bgpd(i);
        let since = bgpd
            .peers()?
            .iter()
            .filter_map(|p| Some((peer_ip(p)?, p.since)))
            .collect();
        Ok((bgpd.pid(), since))
    }

    /// Waits until node `i` has a peer at `addr` configured (in any state).
    fn wait_peer_configured(&self, i: usize, addr: IpAddr) -> Result<()> {
        let bgpd = self.bgpd(i);
        wait_for(
            &format!("{}: peer {addr}", self.host(i).name),
            UP,
            &[bgpd],
            || match bgpd.peer(addr) {
                Ok(Some(_)) => Ok(()),
                Ok(None) => Err("no peer".into()),
                Err(e) => Err(e.to_string()),
            },
        )
    }

    /// Waits until node `i` has no peer at `gone` at all, then checks that it stays so.
    fn wait_peer_removed(&self, i: usize, gone: IpAddr) -> Result<()> {
        let bgpd = self.bgpd(i);
        let absent = || match bgpd.peer(gone) {
            Ok(None) => Ok(()),
            Ok(Some(p)) => Err(format!("still has {p:?}")),
            Err(e) => Err(e.to_string()),
        };
        let what = format!("{}: no peer {gone}", self.host(i).name);
        wait_for(&what, UP, &[bgpd], absent)?;
        holds_for(&what, STAYS, &[bgpd], absent)
    }
}

fn peer_ip(p: &Peer) -> Option<IpAddr> {
    p.address.parse().ok()
}

/// `address type state` of each peer, for failure messages.
fn describe(peers: &[Peer]) -> String {
    let parts: Vec<String> = peers
        .iter()
        .map(|p| {
            format!(
                "{} {:?} {} ({})",
                p.address,
                p.r#type(),
                p.state,
                p.last_error
            )
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

/// A Node as an operator applies it over the one bgpd wrote: same name and address, plus the
/// route reflector's cluster id and label.
fn rr_node_yaml(name: &str, addr: &Addrs) -> String {
    format!(
        "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: {name}\n  labels:\n    \
         route-reflector: \"true\"\nspec:\n  bgp:\n    ipv4Address: {}\n    \
         routeReflectorClusterID: {RR_CLUSTER_ID}\n",
        addr.v4
    )
}

/// The ToR as a global BGPPeer.
fn tor_peer_yaml(ip: IpAddr) -> String {
    format!(
        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor\nspec:\n  \
         peerIP: {ip}\n  asNumber: {TOR_AS}\n"
    )
}

/// BIRD as the rack's router: one eBGP session per node, learning only.
fn start_tor(c: &Cluster, ns: &Netns, me: &Addrs) -> Result<Bird> {
    start_tor_with(c, ns, me, None)
}

/// [`start_tor`], with a TCP-MD5 password on every session when `password` is set.
fn start_tor_with(c: &Cluster, ns: &Netns, me: &Addrs, password: Option<&str>) -> Result<Bird> {
    let mut conf = BirdConfig::new(me.ip4());
    for h in &c.hosts {
        let mut n =
            BirdNeighbor::new(&h.name, h.ip(), TOR_AS, CLUSTER_AS).export(ExportPolicy::None);
        if let Some(p) = password {
            n = n.password(p);
        }
        conf = conf.neighbor(n);
    }
    Bird::start(&c.lab, ns, "tor", conf)
}

/// A one-node cluster (node1 not started yet) and a ToR BIRD with one session to node1,
/// learning only, shaped further by `neighbor`. Bound in this order, they drop the ToR first.
fn node_and_tor(
    test: &str,
    neighbor: impl FnOnce(BirdNeighbor) -> BirdNeighbor,
) -> Result<(Cluster, Netns, IpAddr, Bird)> {
    let c = Cluster::new(test, 1)?;
    let (tor_ns, tor_addrs) = tor_host(&c)?;
    let n = BirdNeighbor::new("node1", c.ip(1), TOR_AS, CLUSTER_AS).export(ExportPolicy::None);
    let tor = Bird::start(
        &c.lab,
        &tor_ns,
        "tor",
        BirdConfig::new(tor_addrs.ip4()).neighbor(neighbor(n)),
    )?;
    Ok((c, tor_ns, IpAddr::V4(tor_addrs.ip4()), tor))
}

/// A ToR namespace on the cluster's switch, with its address.
fn tor_host(c: &Cluster) -> Result<(Netns, Addrs)> {
    let ns = c.lab.netns("tor")?;
    let addrs = c.sw.attach(&ns)?;
    Ok((ns, addrs))
}

/// Waits until the ToR holds a path for `block` learned on its session with `node` (a BIRD
/// protocol named after the node), with that node's address as next hop and the cluster's AS
/// as AS path. Every node re-advertises its mesh peers' blocks to the ToR with itself as next
/// hop (Calico's default for eBGP peers without `keepOriginalNextHop`), so the ToR's best path
/// may be any node's; the originator's own path is the one that must be there.
fn wait_tor_path(tor: &Bird, block: IpNet, node: &str, ip: IpAddr) -> Result<()> {
    wait_for(
        &format!("tor: {block} from {node} via {ip}"),
        UP,
        &[tor],
        || {
            let paths = tor.route(block).map_err(|e| e.to_string())?;
            let ok = paths.iter().any(|r| {
                r.is_bgp()
                    && r.protocol == node
                    && r.gateway == Some(ip)
                    && r.bgp.as_path == vec![CLUSTER_AS]
            });
            if ok {
                Ok(())
            } else {
                Err(format!("paths {paths:?}"))
            }
        },
    )
}

/// §5 mesh: four nodes started with only a name and an address find each other through etcd
/// and build the full node-to-node mesh; each wrote its address into its Node.
#[test]
fn mesh_comes_up_from_the_datastore_alone() -> Result<()> {
    let mut c = Cluster::new("mesh_comes_up_from_the_datastore_alone", 4)?;
    c.start_all()?;
    c.wait_mesh(&[1, 2, 3, 4])?;
    for h in &c.hosts {
        let yaml = c.etcd.get_yaml("node", &h.name)?;
        assert_eq!(
            yaml_scalar(&yaml, "ipv4Address"),
            Some(h.addrs.v4.to_string()),
            "{}'s Node:\n{yaml}",
            h.name
        );
    }
    Ok(())
}

/// §5 live changes: a node that starts later joins the mesh without restarting or resetting
/// anyone; deleting its Node removes its sessions everywhere, again resetting nothing else.
#[test]
fn new_node_sessions_come_up_live_and_deleted_node_sessions_go() -> Result<()> {
    let mut c = Cluster::new(
        "new_node_sessions_come_up_live_and_deleted_node_sessions_go",
        4,
    )?;
    for i in 1..=3 {
        c.start(i)?;
    }
    c.wait_mesh(&[1, 2, 3])?;
    let before: Vec<_> = (1..=3).map(|i| c.fingerprint(i)).collect::<Result<_>>()?;

    c.start(4)?;
    // From the moment node4's Node exists, every node must have it as a peer within LIVE.
    let appeared = wait_for("node4's Node in etcd", UP, &[c.bgpd(4)], || {
        c.etcd
            .get_yaml("node", "node4")
            .map(|_| Instant::now())
            .map_err(|e| e.to_string())
    })?;
    let n4 = c.ip(4);
    for i in 1..=3 {
        c.wait_peer_configured(i, n4)?;
    }
    let took = appeared.elapsed();
    assert!(
        took <= LIVE,
        "node4's sessions were configured {:.1}s after its Node appeared",
        took.as_secs_f64()
    );
    c.wait_mesh(&[1, 2, 3, 4])?;
    for (i, (pid, since)) in (1..=3).zip(&before) {
        let (now_pid, now_since) = c.fingerprint(i)?;
        assert_eq!(now_pid, *pid, "node{i}'s bgpd restarted");
        for (addr, t) in since {
            assert_eq!(
                now_since.get(addr),
                Some(t),
                "node{i}'s session to {addr} was reset when node4 joined"
            );
        }
    }
    let joined: Vec<_> = (1..=3).map(|i| c.fingerprint(i)).collect::<Result<_>>()?;

    c.etcd.delete("node", "node4")?;
    for i in 1..=3 {
        c.wait_peer_removed(i, n4)?;
    }
    for (i, (pid, since)) in (1..=3).zip(&joined) {
        let (now_pid, now_since) = c.fingerprint(i)?;
        assert_eq!(now_pid, *pid, "node{i}'s bgpd restarted");
        for (addr, t) in since.iter().filter(|(a, _)| **a != n4) {
            assert_eq!(
                now_since.get(addr),
                Some(t),
                "node{i}'s session to {addr} was reset when node4 was deleted"
            );
        }
        c.wait_sessions(
            i,
            &(1..=3)
                .filter(|&j| j != i)
                .map(|j| (c.ip(j), PeerType::NodeMesh))
                .collect::<Vec<_>>(),
        )?;
    }
    Ok(())
}

/// §5 route reflectors: two nodes become reflectors (cluster id, label), a BGPPeer makes every
/// node peer with them, and the mesh is turned off: the mesh sessions go, clients keep only
/// their reflectors, and a client's prefix reaches another client reflected (RFC 4456).
#[test]
fn route_reflectors_replace_the_mesh() -> Result<()> {
    let mut c = Cluster::new("route_reflectors_replace_the_mesh", 4)?;
    c.start_all()?;
    c.wait_mesh(&[1, 2, 3, 4])?;

    for i in [1, 2] {
        let h = c.host(i);
        c.etcd.apply(&rr_node_yaml(&h.name, &h.addrs))?;
    }
    c.etcd.apply(
        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: peer-with-rrs\n\
         spec:\n  nodeSelector: all()\n  peerSelector: route-reflector == 'true'\n",
    )?;
    c.etcd.apply(
        "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\n\
         spec:\n  nodeToNodeMeshEnabled: false\n",
    )?;

    let (rr1, rr2) = (c.ip(1), c.ip(2));
    for client in [3, 4] {
        c.wait_sessions(
            client,
            &[
                (rr1, PeerType::RouteReflector),
                (rr2, PeerType::RouteReflector),
            ],
        )?;
    }
    for (rr, other) in [(1, 2), (2, 1)] {
        let bgpd = c.bgpd(rr);
        wait_for(
            &format!("node{rr}: clients node3 and node4, reflector node{other}"),
            UP,
            &[bgpd],
            || {
                let peers = bgpd.peers().map_err(|e| e.to_string())?;
                let seen = describe(&peers);
                let find = |ip| peers.iter().find(|p| peer_ip(p) == Some(ip));
                let ok = peers.len() == 3
                    && [3, 4].iter().all(|&j| {
                        find(c.ip(j)).is_some_and(|p| {
                            p.r#type() == PeerType::RouteReflectorClient && p.state == "Established"
                        })
                    })
                    && find(c.ip(other)).is_some_and(|p| p.state == "Established");
                if ok { Ok(()) } else { Err(seen) }
            },
        )?;
    }
    // The operator's Node kept the address bgpd wrote, and bgpd kept the operator's fields.
    let yaml = c.etcd.get_yaml("node", "node1")?;
    assert_eq!(
        yaml_scalar(&yaml, "ipv4Address"),
        Some(c.host(1).addrs.v4.to_string())
    );
    assert_eq!(
        yaml_scalar(&yaml, "routeReflectorClusterID").as_deref(),
        Some(RR_CLUSTER_ID)
    );

    let block = IpNet::V4(block4());
    c.bgpd(3).originate(&[block])?;
    let r = c.bgpd(4).wait_route_via(block, c.ip(3), UP)?;
    let from: Option<IpAddr> = r.peer.parse().ok();
    assert!(
        from == Some(rr1) || from == Some(rr2),
        "node4 learned {block} from {from:?}, not from a reflector: {r:?}"
    );
    assert!(
        !r.cluster_list.is_empty(),
        "a reflected route carries a CLUSTER_LIST: {r:?}"
    );
    assert_eq!(
        r.originator_id,
        c.ip(3).to_string(),
        "ORIGINATOR_ID is node3's router id: {r:?}"
    );
    // Still no session between the two clients, now that routes flow.
    holds_for(
        "node3 and node4 not peering",
        STAYS,
        &[c.bgpd(3)],
        || match c.bgpd(3).peer(c.ip(4)) {
            Ok(None) => Ok(()),
            Ok(Some(p)) => Err(format!("{p:?}")),
            Err(e) => Err(e.to_string()),
        },
    )?;
    Ok(())
}

/// §5 global peers: a BIRD ToR defined once as a global BGPPeer peers with every node and
/// learns each node's block (originated through bgpd's API, as felix does) via that node.
#[test]
fn bird_tor_as_global_peer_learns_every_node_prefix() -> Result<()> {
    let mut c = Cluster::new("bird_tor_as_global_peer_learns_every_node_prefix", 4)?;
    let tor_ns = c.lab.netns("tor")?;
    let tor_addrs = c.sw.attach(&tor_ns)?;
    let tor_ip = IpAddr::V4(tor_addrs.ip4());
    let tor = start_tor(&c, &tor_ns, &tor_addrs)?;
    c.start_all()?;
    c.wait_mesh(&[1, 2, 3, 4])?;

    c.etcd.apply(&tor_peer_yaml(tor_ip))?;
    c.wait_mesh_and(&[1, 2, 3, 4], &[(tor_ip, PeerType::Global)])?;
    let blocks: Vec<IpNet> = (0..4).map(|_| IpNet::V4(block4())).collect();
    for i in 1..=4 {
        tor.wait_established(&c.host(i).name, UP)?;
        c.bgpd(i).originate(&[blocks[i - 1]])?;
    }
    for (i, block) in (1..=4).zip(&blocks) {
        wait_tor_path(&tor, *block, &c.host(i).name, c.ip(i))?;
    }

    // `margayctl node status` labels each session with where it comes from.
    let socket = c.bgpd(1).config().socket.to_string_lossy().into_owned();
    let table = c.etcd.margayctl(&["node", "status", "--socket", &socket])?;
    for (ip, label) in [
        (c.ip(2), "node-to-node mesh"),
        (c.ip(3), "node-to-node mesh"),
        (c.ip(4), "node-to-node mesh"),
        (tor_ip, "global"),
    ] {
        let row = table
            .lines()
            .find(|l| l.split('|').any(|cell| cell.trim() == ip.to_string()));
        assert!(
            row.is_some_and(|r| r.split('|').any(|cell| cell.trim() == label)),
            "node status has no {label:?} row for {ip}:\n{table}"
        );
    }
    Ok(())
}

/// §5 next-hop mode: with `keepOriginalNextHop`, a node passes its mesh peers' blocks to the
/// ToR with the originator's address, so every path the ToR holds for a block points at the
/// node that owns it.
#[test]
fn global_peer_with_keep_original_next_hop_gets_the_originators_address() -> Result<()> {
    let mut c = Cluster::new(
        "global_peer_with_keep_original_next_hop_gets_the_originators_address",
        4,
    )?;
    let (tor_ns, tor_addrs) = tor_host(&c)?;
    let tor_ip = IpAddr::V4(tor_addrs.ip4());
    let tor = start_tor(&c, &tor_ns, &tor_addrs)?;
    c.etcd.apply(&format!(
        "{}  keepOriginalNextHop: true\n",
        tor_peer_yaml(tor_ip)
    ))?;
    c.start_all()?;
    c.wait_mesh_and(&[1, 2, 3, 4], &[(tor_ip, PeerType::Global)])?;
    let blocks: Vec<IpNet> = (0..4).map(|_| IpNet::V4(block4())).collect();
    for (i, block) in (1..=4).zip(&blocks) {
        c.bgpd(i).originate(&[*block])?;
    }
    for (i, block) in (1..=4).zip(&blocks) {
        let owner = c.ip(i);
        wait_for(
            &format!("tor: every path for {block} via {owner}, from all 4 nodes"),
            UP,
            &[&tor],
            || {
                let paths = tor.route(*block).map_err(|e| e.to_string())?;
                if paths.len() == 4 && paths.iter().all(|r| r.gateway == Some(owner)) {
                    Ok(())
                } else {
                    Err(format!("paths {paths:?}"))
                }
            },
        )?;
    }
    Ok(())
}

/// §5 node-specific peers: a BGPPeer with `node` peers only that node, with the password from
/// the resource (TCP-MD5, RFC 2385); the other nodes have no session to it.
#[test]
fn node_specific_peer_with_password_peers_only_that_node() -> Result<()> {
    let mut c = Cluster::new("node_specific_peer_with_password_peers_only_that_node", 4)?;
    let (tor_ns, tor_addrs) = tor_host(&c)?;
    let tor_ip = IpAddr::V4(tor_addrs.ip4());
    let tor = start_tor_with(&c, &tor_ns, &tor_addrs, Some("rack-s3cret"))?;
    c.start_all()?;
    c.wait_mesh(&[1, 2, 3, 4])?;
    c.etcd.apply(&format!(
        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: node2-tor\nspec:\n  \
         node: node2\n  peerIP: {tor_ip}\n  asNumber: {TOR_AS}\n  password:\n    value: \
         rack-s3cret\n"
    ))?;
    let mut expected: Vec<(IpAddr, PeerType)> = [1, 3, 4]
        .iter()
        .map(|&j| (c.ip(j), PeerType::NodeMesh))
        .collect();
    expected.push((tor_ip, PeerType::NodeSpecific));
    c.wait_sessions(2, &expected)?;
    tor.wait_established("node2", UP)?;
    let block = IpNet::V4(block4());
    c.bgpd(2).originate(&[block])?;
    wait_tor_path(&tor, block, "node2", c.ip(2))?;
    for i in [1, 3, 4] {
        holds_for(
            &format!("node{i} has no session to the ToR"),
            STAYS,
            &[c.bgpd(i)],
            || match c.bgpd(i).peer(tor_ip) {
                Ok(None) => Ok(()),
                Ok(Some(p)) => Err(format!("{p:?}")),
                Err(e) => Err(e.to_string()),
            },
        )?;
        tor.never_established(&c.host(i).name, Duration::from_secs(1))?;
    }
    Ok(())
}

/// §6: a node that goes away (bgpd stopped, Node deleted) takes its block with it, from every
/// other node and from the ToR; its sessions are gone too.
#[test]
fn deleting_a_node_withdraws_its_prefix_everywhere() -> Result<()> {
    let mut c = Cluster::new("deleting_a_node_withdraws_its_prefix_everywhere", 4)?;
    let tor_ns = c.lab.netns("tor")?;
    let tor_addrs = c.sw.attach(&tor_ns)?;
    let tor_ip = IpAddr::V4(tor_addrs.ip4());
    let tor = start_tor(&c, &tor_ns, &tor_addrs)?;
    c.etcd.apply(&tor_peer_yaml(tor_ip))?;
    c.start_all()?;
    c.wait_mesh_and(&[1, 2, 3, 4], &[(tor_ip, PeerType::Global)])?;

    let block = IpNet::V4(block4());
    let n4 = c.ip(4);
    c.bgpd(4).originate(&[block])?;
    for i in 1..=3 {
        c.bgpd(i).wait_route_via(block, n4, UP)?;
    }
    tor.wait_established("node4", UP)?;
    wait_tor_path(&tor, block, "node4", n4)?;

    if let Some(b) = c.hosts[3].bgpd.as_mut() {
        b.stop();
    }
    c.etcd.delete("node", "node4")?;
    for i in 1..=3 {
        c.bgpd(i).wait_no_route(block, UP)?;
        c.wait_peer_removed(i, n4)?;
    }
    tor.wait_no_route(block, UP)?;
    let logs: [&dyn HasLogs; 1] = [&tor];
    holds_for(
        "the ToR has no route to node4's block",
        STAYS,
        &logs,
        || match tor.route(block) {
            Ok(r) if r.is_empty() => Ok(()),
            Ok(r) => Err(format!("{r:?}")),
            Err(e) => Err(e.to_string()),
        },
    )?;
    Ok(())
}

/// Issue 11, peerings as Calico computes them: with the mesh still on, a node that becomes a
/// route reflector leaves the mesh, while its clients keep meshing with each other; routes
/// between clients go over the mesh directly, not reflected.
#[test]
fn reflector_clients_keep_the_mesh_while_it_is_on() -> Result<()> {
    let mut c = Cluster::new("reflector_clients_keep_the_mesh_while_it_is_on", 4)?;
    c.start_all()?;
    c.wait_mesh(&[1, 2, 3, 4])?;
    let h = c.host(1);
    c.etcd.apply(&rr_node_yaml(&h.name, &h.addrs))?;
    c.etcd.apply(
        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: peer-with-rrs\n\
         spec:\n  nodeSelector: all()\n  peerSelector: route-reflector == 'true'\n",
    )?;
    let rr = c.ip(1);
    c.wait_mesh_and(&[2, 3, 4], &[(rr, PeerType::RouteReflector)])?;
    c.wait_sessions(
        1,
        &[2, 3, 4]
            .iter()
            .map(|&j| (c.ip(j), PeerType::RouteReflectorClient))
            .collect::<Vec<_>>(),
    )?;
    let block = IpNet::V4(block4());
    c.bgpd(3).originate(&[block])?;
    let n4 = c.bgpd(4);
    wait_for(
        "node4: best path from node3 over the mesh",
        UP,
        &[n4],
        || match n4.best_route(block) {
            Ok(Some(r)) if r.peer == c.ip(3).to_string() => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )?;
    // The reflector has it from its client and reflects it (node4 holds both paths).
    c.bgpd(1).wait_route_via(block, c.ip(3), UP)?;
    Ok(())
}

/// Issue 11 §3: `serviceClusterIPs`, `serviceExternalIPs` and `serviceLoadBalancerIPs` are
/// announced by every node, and a CIDR removed from the BGPConfiguration is withdrawn live.
#[test]
fn service_cidrs_are_announced_by_every_node_and_follow_the_configuration() -> Result<()> {
    let mut c = Cluster::new(
        "service_cidrs_are_announced_by_every_node_and_follow_the_configuration",
        3,
    )?;
    let (tor_ns, tor_addrs) = tor_host(&c)?;
    let tor_ip = IpAddr::V4(tor_addrs.ip4());
    let tor = start_tor(&c, &tor_ns, &tor_addrs)?;
    c.etcd.apply(&tor_peer_yaml(tor_ip))?;
    c.start_all()?;
    c.wait_mesh_and(&[1, 2, 3], &[(tor_ip, PeerType::Global)])?;
    let (cluster_ips, external, lb): (IpNet, IpNet, IpNet) = (
        "10.96.0.0/12".parse().unwrap(),
        "192.0.2.0/24".parse().unwrap(),
        "198.51.100.0/26".parse().unwrap(),
    );
    let config = |with_external: bool| {
        let ext = if with_external {
            format!("  serviceExternalIPs:\n  - cidr: {external}\n")
        } else {
            String::new()
        };
        format!(
            "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\n\
             spec:\n  serviceClusterIPs:\n  - cidr: {cluster_ips}\n{ext}  serviceLoadBalancerIPs:\n  \
             - cidr: {lb}\n"
        )
    };
    c.etcd.apply(&config(true))?;
    for cidr in [cluster_ips, external, lb] {
        for i in 1..=3 {
            wait_tor_path(&tor, cidr, &c.host(i).name, c.ip(i))?;
        }
    }
    c.etcd.apply(&config(false))?;
    tor.wait_no_route(external, UP)?;
    for i in 1..=3 {
        c.bgpd(i).wait_no_route(external, UP)?;
        wait_tor_path(&tor, cluster_ips, &c.host(i).name, c.ip(i))?;
    }
    Ok(())
}

/// Issue 11 §4 `ttlSecurity` (GTSM, RFC 5082), against BIRD's `ttl security on`: a peer two
/// hops away (behind a router namespace) does not come up while the BGPPeer allows one hop,
/// and comes up once it allows two.
#[test]
fn ttl_security_admits_a_peer_only_within_its_hops() -> Result<()> {
    let mut c = Cluster::new("ttl_security_admits_a_peer_only_within_its_hops", 1)?;
    // node1 -- switch -- router -- far (BIRD)
    let rt = c.lab.netns("rt")?;
    let rt_sw = c.sw.attach(&rt)?;
    let far = c.lab.netns("far")?;
    let link = c.lab.link(&rt, &far)?;
    let far_ip = IpAddr::V4(link.b.ip4());
    rt.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
    c.host(1).ns.exec(
        "ip",
        &[
            "route",
            "add",
            &format!("{far_ip}/32"),
            "via",
            &rt_sw.ip4().to_string(),
        ],
    )?;
    far.exec(
        "ip",
        &[
            "route",
            "add",
            &format!("{}/32", c.ip(1)),
            "via",
            &link.a.ip4().to_string(),
        ],
    )?;
    let bird = Bird::start(
        &c.lab,
        &far,
        "far",
        BirdConfig::new(link.b.ip4()).neighbor(
            BirdNeighbor::new("node1", c.ip(1), TOR_AS, CLUSTER_AS)
                .ttl_security(2)
                .export(ExportPolicy::None),
        ),
    )?;
    let peer = |hops: u8| {
        format!(
            "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: far\nspec:\n  \
             peerIP: {far_ip}\n  asNumber: {TOR_AS}\n  ttlSecurity: {hops}\n"
        )
    };
    c.etcd.apply(&peer(1))?;
    c.start(1)?;
    c.wait_peer_configured(1, far_ip)?;
    let bgpd = c.bgpd(1);
    bgpd.never_established(far_ip, Duration::from_secs(6))?;
    bird.never_established("node1", Duration::from_secs(1))?;

    c.etcd.apply(&peer(2))?;
    bgpd.wait_established(far_ip, UP)?;
    bird.wait_established("node1", UP)?;
    let block = IpNet::V4(block4());
    bgpd.originate(&[block])?;
    // Two hops away BIRD has no route to resolve the next hop by (no IGP here): the path
    // itself, with node1's address as NEXT_HOP, is what must arrive.
    wait_for(&format!("far: {block} from node1"), UP, &[&bird], || {
        let paths = bird.route(block).map_err(|e| e.to_string())?;
        paths
            .iter()
            .any(|r| r.protocol == "node1" && r.bgp.next_hop == vec![c.ip(1)])
            .then_some(())
            .ok_or(format!("paths {paths:?}"))
    })?;
    Ok(())
}

/// Issue 11 §4 `password.secretKeyRef`: bgpd reads the key from the Secret mounted under
/// `--secrets-dir` (`DIR/NAME/KEY`), and reads it again while it runs: with the file absent
/// the password-protected BIRD refuses the session; once the file appears it comes up.
#[test]
fn password_from_a_mounted_secret_reaches_the_session() -> Result<()> {
    let mut c = Cluster::new("password_from_a_mounted_secret_reaches_the_session", 1)?;
    let (tor_ns, tor_addrs) = tor_host(&c)?;
    let tor_ip = IpAddr::V4(tor_addrs.ip4());
    let tor = start_tor_with(&c, &tor_ns, &tor_addrs, Some("from-a-secret"))?;
    let secrets = c.lab.dir().join("secrets");
    std::fs::create_dir_all(secrets.join("bgp-passwords")).expect("secrets dir");
    c.etcd.apply(&format!(
        "{}  password:\n    secretKeyRef:\n      name: bgp-passwords\n      key: tor\n",
        tor_peer_yaml(tor_ip)
    ))?;
    c.start_with(1, |a| a.secrets_dir(&secrets))?;
    c.wait_peer_configured(1, tor_ip)?;
    let bgpd = c.bgpd(1);
    tor.never_established("node1", Duration::from_secs(3))?;
    std::fs::write(secrets.join("bgp-passwords/tor"), "from-a-secret").expect("write secret");
    tor.wait_established("node1", UP)?;
    bgpd.wait_established(tor_ip, UP)?;
    Ok(())
}

/// Issue 11 §4 BGPConfiguration `listenPort` and `bindMode: NodeIP`: every node listens on the
/// port, only on its own address, and connects to the other nodes on that port, so the mesh
/// comes up on it.
#[test]
fn listen_port_and_bind_mode_apply_to_the_listener_and_the_mesh() -> Result<()> {
    let mut c = Cluster::new(
        "listen_port_and_bind_mode_apply_to_the_listener_and_the_mesh",
        2,
    )?;
    c.etcd.apply(
        "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\n\
         spec:\n  listenPort: 1791\n  bindMode: NodeIP\n",
    )?;
    c.start_all()?;
    c.wait_mesh(&[1, 2])?;
    for (i, other) in [(1, 2), (2, 1)] {
        let p = c.bgpd(i).peer(c.ip(other))?.expect("the mesh peer");
        assert_eq!(p.port, 1791, "node{i} reaches node{other} on listenPort");
        let listening = c.host(i).ns.exec("ss", &["-Hltn", "sport", "= :1791"])?;
        let want = format!("{}:1791", c.ip(i));
        assert!(
            listening.split_whitespace().any(|w| w == want),
            "node{i} listens on {want} only:\n{listening}"
        );
        assert!(
            !listening.contains("*:1791") && !listening.contains("[::]:1791"),
            "node{i} listens on every address:\n{listening}"
        );
    }
    Ok(())
}

/// Issue 11 §4 `nodeMeshPassword` from a Secret: the mesh sessions carry it (TCP-MD5), so
/// two nodes whose mounted Secrets differ do not peer, and do once the Secret agrees.
#[test]
fn node_mesh_password_from_a_secret_protects_the_mesh() -> Result<()> {
    let mut c = Cluster::new("node_mesh_password_from_a_secret_protects_the_mesh", 2)?;
    c.etcd.apply(
        "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\n\
         spec:\n  nodeMeshPassword:\n    secretKeyRef:\n      name: mesh\n      key: password\n",
    )?;
    let dirs: Vec<std::path::PathBuf> = (1..=2)
        .map(|i| c.lab.dir().join(format!("secrets-{i}")))
        .collect();
    for (dir, pw) in dirs.iter().zip(["same-for-all", "a-different-one"]) {
        std::fs::create_dir_all(dir.join("mesh")).expect("secrets dir");
        std::fs::write(dir.join("mesh/password"), pw).expect("write secret");
    }
    for i in 1..=2 {
        let dir = dirs[i - 1].clone();
        c.start_with(i, |a| a.secrets_dir(&dir))?;
    }
    c.wait_peer_configured(1, c.ip(2))?;
    c.bgpd(1)
        .never_established(c.ip(2), Duration::from_secs(3))?;
    std::fs::write(dirs[1].join("mesh/password"), "same-for-all").expect("write secret");
    c.wait_mesh(&[1, 2])?;
    Ok(())
}

/// Issue 11 §4 `maxRestartTime`: the graceful restart time bgpd announces on that session
/// (RFC 4724's Restart Time), as BIRD sees it; other sessions keep bgpd's default.
#[test]
fn max_restart_time_is_the_restart_time_announced_to_the_peer() -> Result<()> {
    let (mut c, _tor_ns, tor_ip, tor) = node_and_tor(
        "max_restart_time_is_the_restart_time_announced_to_the_peer",
        |n| n.graceful_restart(None),
    )?;
    c.etcd.apply(&format!(
        "{}  maxRestartTime: 2m30s\n",
        tor_peer_yaml(tor_ip)
    ))?;
    c.start(1)?;
    tor.wait_established("node1", UP)?;
    let all = tor.birdc(&["show", "protocols", "all", "node1"])?;
    let neighbor_caps = all
        .split("Neighbor capabilities")
        .nth(1)
        .unwrap_or_else(|| panic!("no neighbor capabilities:\n{all}"));
    let restart = neighbor_caps
        .lines()
        .find_map(|l| l.trim().strip_prefix("Restart time:"))
        .map(str::trim);
    assert_eq!(restart, Some("150"), "BIRD's view of node1:\n{all}");
    Ok(())
}

/// The lowest remaining time of BIRD's hold timer for `proto` over `period` (sampled every
/// 100 ms): how long BIRD waits at most between two messages from its peer, less the hold time.
fn lowest_hold_timer(tor: &Bird, proto: &str, period: Duration) -> Result<f64> {
    let end = Instant::now() + period;
    let mut lowest = f64::MAX;
    while Instant::now() < end {
        let all = tor.birdc(&["show", "protocols", "all", proto])?;
        let left = all
            .lines()
            .find_map(|l| l.trim().strip_prefix("Hold timer:"))
            .and_then(|t| t.trim().split('/').next()?.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no hold timer:\n{all}"));
        lowest = lowest.min(left);
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(lowest)
}

/// BGPPeer `keepaliveTime` is how often the node sends KEEPALIVEs (BIRD's `keepalive time`).
/// BIRD proposes a 30 s hold time and restarts its hold timer at 22.5 to 30 s on each message
/// (RFC 4271 §10's jitter): with the default keepalive (10 s) the timer runs down to 20 s or
/// less between messages; with `keepaliveTime: 1s` it never falls below 21.5 s.
#[test]
fn keepalive_time_is_how_often_the_peer_hears_from_the_node() -> Result<()> {
    let (mut c, _tor_ns, tor_ip, tor) = node_and_tor(
        "keepalive_time_is_how_often_the_peer_hears_from_the_node",
        |mut n| {
            n.hold_time = 30;
            n
        },
    )?;
    c.etcd.apply(&tor_peer_yaml(tor_ip))?;
    c.start(1)?;
    tor.wait_established("node1", UP)?;
    let default = lowest_hold_timer(&tor, "node1", Duration::from_secs(11))?;
    assert!(default < 21.0, "default keepalive (10 s): lowest {default}");

    c.etcd
        .apply(&format!("{}  keepaliveTime: 1s\n", tor_peer_yaml(tor_ip)))?;
    // The session restarts with the new timer; wait until it is up again and settled.
    let since = tor.protocol("node1")?.expect("protocol").since;
    wait_for(
        "node1's session restarted",
        UP,
        &[&tor, c.bgpd(1)],
        || match tor.protocol("node1").map_err(|e| e.to_string())? {
            Some(p) if p.is_established() && !p.same_session_since(&since) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )?;
    let fast = lowest_hold_timer(&tor, "node1", Duration::from_secs(5))?;
    assert!(fast >= 21.0, "keepaliveTime 1s: lowest {fast}");
    Ok(())
}

/// A node's bgpd stops on SIGTERM also while etcd hangs (frozen: its sockets open, nothing
/// answered), which is when a DaemonSet pod is most likely to be restarted: the stop never
/// waits on the datastore.
#[test]
fn sigterm_stops_bgpd_while_etcd_hangs() -> Result<()> {
    let mut c = Cluster::new("sigterm_stops_bgpd_while_etcd_hangs", 2)?;
    c.start_all()?;
    c.wait_mesh(&[1, 2])?;
    c.etcd.process().pause();
    let mut bgpd = c.hosts[0].bgpd.take().expect("node1's bgpd");
    // SAFETY: kill(2) on our own child's PID, not yet reaped (the guard reaps it).
    unsafe { libc::kill(bgpd.pid() as i32, libc::SIGTERM) };
    let stopped = bgpd.process().wait_exit(
        "node1's bgpd to exit after SIGTERM while etcd is frozen",
        Duration::from_secs(40),
    );
    c.etcd.process().resume();
    let status = stopped?;
    assert!(status.contains("exit status: 0"), "{status}");
    Ok(())
}
