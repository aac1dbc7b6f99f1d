//! The record of a lab left running by `up --keep` (`/run/margay-lab/state.json`): every
//! namespace, process (PID), socket and directory it made, so that `status` can report on it
//! and `down` can remove all of it from another process.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::LabCtlError;
use super::topology::{IpFamily, Mode, PoolMode};

/// Where the state file lives unless `MARGAY_LAB_STATE` says otherwise.
pub const DEFAULT_STATE_FILE: &str = "/run/margay-lab/state.json";
/// Environment variable overriding the state file's path.
pub const STATE_ENV: &str = "MARGAY_LAB_STATE";

/// The state file path: `$MARGAY_LAB_STATE`, else [`DEFAULT_STATE_FILE`].
pub fn state_path() -> PathBuf {
    std::env::var_os(STATE_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_FILE))
}

/// One node of a lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    pub name: String,
    pub netns: String,
    /// Its rack (switch), `a` or `b`.
    pub rack: char,
    /// margay-bgpd's PID.
    pub pid: u32,
    /// margay-bgpd's gRPC socket.
    pub socket: PathBuf,
    /// margay-felix's PID.
    pub felix_pid: u32,
    /// margay-felix's API socket (the CNI plugin's).
    pub felix_socket: PathBuf,
    /// The CNI network configuration list of this node.
    pub conflist: PathBuf,
    pub address4: Ipv4Addr,
    /// Its IPv6 BGP address (`--ip-family ipv6|dual`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address6: Option<Ipv6Addr>,
    /// Its address on plane b, its link to the second ToR (`--tors 2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_b: Option<Ipv4Addr>,
    pub asn: u32,
    /// Every neighbour it should have a session with.
    pub peers: Vec<IpAddr>,
    pub reflector: bool,
}

/// One pod, created through the CNI plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodState {
    /// The Kubernetes name (namespace `default`).
    pub name: String,
    /// The node it runs on.
    pub node: String,
    /// Its network namespace (`ip netns` name; the path is `/var/run/netns/NAME`).
    pub netns: String,
    pub container_id: String,
    /// Its address (from the plugin's result): the IPv4 one, or on an IPv6-only lab the
    /// IPv6 one.
    pub ip: IpAddr,
    /// Its IPv6 address beside the IPv4 one (`--ip-family dual`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    /// The host side of its veth (`cali...`), in the node's namespace.
    pub interface: String,
}

impl PodState {
    /// Every address of the pod (one per family).
    pub fn addresses(&self) -> Vec<IpAddr> {
        std::iter::once(self.ip)
            .chain(self.ip6.map(IpAddr::V6))
            .collect()
    }
}

/// The top-of-rack BIRD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TorState {
    pub name: String,
    pub netns: String,
    pub pid: u32,
    /// BIRD's control socket (for `birdc -s`).
    pub socket: PathBuf,
    pub config: PathBuf,
    /// Its address on each rack.
    pub addresses: Vec<Ipv4Addr>,
    /// Its IPv6 address on each rack (the IPv6 sessions' peer).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses6: Vec<Ipv6Addr>,
    pub asn: u32,
    /// Its BGP protocols (one per node), as `birdc show protocols` names them.
    pub protocols: Vec<String>,
}

/// A Calico node (`--calico-nodes`): calico-node's BIRD, no margay daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalicoNodeState {
    pub name: String,
    pub netns: String,
    /// BIRD's PID.
    pub pid: u32,
    /// BIRD's control socket.
    pub socket: PathBuf,
    /// The configuration confd's templates render for it.
    pub config: PathBuf,
    pub address4: Ipv4Addr,
    pub block: Ipv4Net,
    /// Its BIRD's BGP protocols (`Mesh_…`, `Global_…`).
    pub protocols: Vec<String>,
    /// `bird6`'s PID (`--ip-family dual`; 0 without).
    #[serde(default)]
    pub pid6: u32,
    /// Its IPv6 address (`--ip-family dual`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address6: Option<Ipv6Addr>,
}

/// The lab's etcd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcdState {
    pub netns: String,
    pub pid: u32,
    /// The client URL (`http://ADDR:2379`).
    pub endpoint: String,
    pub data_dir: PathBuf,
    /// etcd's gRPC proxies in front of it (`up --etcd-proxies`), in order: node k's daemons
    /// talk to proxy `(k - 1) % len`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proxies: Vec<EtcdProxyState>,
}

/// One of etcd's gRPC proxies (in etcd's namespace).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcdProxyState {
    pub pid: u32,
    /// The client URL daemons use instead of etcd's.
    pub endpoint: String,
}

impl EtcdState {
    /// The URL the daemons of the node at `index` (0-based, in the lab's order) talk to: its
    /// proxy when the lab has any, else etcd itself.
    pub fn endpoint_for(&self, index: usize) -> &str {
        match crate::etcd_proxy::proxy_for(index, self.proxies.len()) {
            Some(p) => &self.proxies[p].endpoint,
            None => &self.endpoint,
        }
    }
}

/// A whole lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabState {
    /// The tag in every name the lab made (`mg` + tag + role).
    pub tag: String,
    /// Configs, sockets, logs and etcd's data.
    pub dir: PathBuf,
    pub mode: Mode,
    pub pool_mode: PoolMode,
    /// The pods' and BGP's address families.
    #[serde(default)]
    pub ip_family: IpFamily,
    /// The switches' namespaces (bridge `br0` in each), one per rack.
    pub switches: Vec<String>,
    pub subnets: Vec<Ipv4Net>,
    pub etcd: EtcdState,
    pub nodes: Vec<NodeState>,
    pub pods: Vec<PodState>,
    pub tor: TorState,
    /// The second ToR (`--tors 2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tor2: Option<TorState>,
    /// Plane b's subnet, the second ToR's switch (`--tors 2`; the last of `switches`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plane_b: Option<Ipv4Net>,
    /// No margay-bgpd (`--no-bgp`): felix routes from IPAM, the ToR holds no pod routes.
    #[serde(default)]
    pub no_bgp: bool,
    /// Seconds since the epoch when `up` finished.
    pub created: u64,
    /// Calico nodes; their pods are among `pods`.
    #[serde(default)]
    pub calico: Vec<CalicoNodeState>,
    /// Simulated nodes (`--simulated`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simulated: Option<super::simulated::SimulatedState>,
    /// Calico nodes moved to margay (`node migrate`), as they were, for `node rollback`; each
    /// is also among `nodes` while it runs margay.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub migrated: Vec<CalicoNodeState>,
}

/// A process the lab started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessRecord {
    pub name: String,
    pub netns: String,
    pub pid: u32,
}

impl LabState {
    /// The prefix of every namespace name the lab made.
    pub fn name_prefix(&self) -> String {
        format!("mg{}", self.tag)
    }

    /// The ToRs: the first, and the second with `--tors 2`.
    pub fn tors(&self) -> impl Iterator<Item = &TorState> {
        std::iter::once(&self.tor).chain(self.tor2.as_ref())
    }

    /// Every namespace: pods, nodes, the ToR, etcd, the switches last.
    pub fn namespaces(&self) -> Vec<String> {
        let mut v: Vec<String> = self.pods.iter().map(|p| p.netns.clone()).collect();
        v.extend(self.nodes.iter().map(|n| n.netns.clone()));
        v.extend(self.calico.iter().map(|n| n.netns.clone()));
        v.extend(self.tors().map(|t| t.netns.clone()));
        v.extend(self.simulated.iter().map(|s| s.netns.clone()));
        v.push(self.etcd.netns.clone());
        v.extend(self.switches.iter().cloned());
        v
    }

    /// Every daemon the lab started: felix and bgpd per node, BIRD, etcd last.
    pub fn processes(&self) -> Vec<ProcessRecord> {
        let mut v = Vec::new();
        for n in &self.nodes {
            for (daemon, pid) in [("felix", n.felix_pid), ("bgpd", n.pid)] {
                v.push(ProcessRecord {
                    name: format!("{}-{daemon}", n.name),
                    netns: n.netns.clone(),
                    pid,
                });
            }
        }
        for c in &self.calico {
            v.push(ProcessRecord {
                name: format!("{}-bird", c.name),
                netns: c.netns.clone(),
                pid: c.pid,
            });
            if c.pid6 != 0 {
                v.push(ProcessRecord {
                    name: format!("{}-bird6", c.name),
                    netns: c.netns.clone(),
                    pid: c.pid6,
                });
            }
        }
        for t in self.tors() {
            v.push(ProcessRecord {
                name: t.name.clone(),
                netns: t.netns.clone(),
                pid: t.pid,
            });
        }
        if let Some(s) = &self.simulated {
            v.push(ProcessRecord {
                name: "simulated".into(),
                netns: s.netns.clone(),
                pid: s.pid,
            });
        }
        for (i, p) in self.etcd.proxies.iter().enumerate() {
            v.push(ProcessRecord {
                name: format!("etcd-proxy{i}"),
                netns: self.etcd.netns.clone(),
                pid: p.pid,
            });
        }
        v.push(ProcessRecord {
            name: "etcd".into(),
            netns: self.etcd.netns.clone(),
            pid: self.etcd.pid,
        });
        v
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&NodeState> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Writes the state to `path` (creating its directory), readable by root only.
    pub fn save(&self, path: &Path) -> Result<(), LabCtlError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| LabCtlError::state(path, e))?;
        }
        let text = serde_json::to_string_pretty(self).map_err(|e| LabCtlError::state(path, e))?;
        let tmp = path.with_extension("json.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| LabCtlError::state(&tmp, e))?;
        f.write_all(text.as_bytes())
            .and_then(|_| f.write_all(b"\n"))
            .map_err(|e| LabCtlError::state(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| LabCtlError::state(path, e))
    }

    /// Reads the state at `path`; `None` when there is no file (no lab kept).
    pub fn load(path: &Path) -> Result<Option<LabState>, LabCtlError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(LabCtlError::state(path, e)),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| LabCtlError::state(path, format!("unreadable ({e}); remove it by hand")))
    }

    /// Removes the state file at `path`, and its directory when that is left empty.
    pub fn remove(path: &Path) -> Result<(), LabCtlError> {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(LabCtlError::state(path, e)),
        }
        if let Some(dir) = path.parent() {
            // Fails harmlessly when something else lives there.
            let _ = std::fs::remove_dir(dir);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> LabState {
        LabState {
            tag: "ab12".into(),
            dir: "/tmp/mgab12-x".into(),
            mode: Mode::RouteReflectors,
            pool_mode: PoolMode::Vxlan,
            ip_family: IpFamily::Dual,
            switches: vec!["mgab12sw0".into()],
            subnets: vec!["10.99.1.0/24".parse().unwrap()],
            etcd: EtcdState {
                netns: "mgab12etcd".into(),
                pid: 44,
                endpoint: "http://10.99.1.3:2379".into(),
                data_dir: "/tmp/mgab12-x/etcd.data".into(),
                proxies: vec![EtcdProxyState {
                    pid: 46,
                    endpoint: "http://10.99.1.3:23790".into(),
                }],
            },
            nodes: vec![NodeState {
                name: "node1".into(),
                netns: "mgab12n1".into(),
                rack: 'a',
                pid: 42,
                socket: "/tmp/mgab12-x/node1.sock".into(),
                felix_pid: 45,
                felix_socket: "/tmp/mgab12-x/node1-felix.sock".into(),
                conflist: "/tmp/mgab12-x/node1.conflist".into(),
                address4: "10.99.1.1".parse().unwrap(),
                address6: Some("fd00:99:1::1".parse().unwrap()),
                address_b: None,
                asn: 64512,
                peers: vec!["10.99.1.2".parse().unwrap()],
                reflector: true,
            }],
            pods: vec![PodState {
                name: "web-1-1".into(),
                node: "node1".into(),
                netns: "mgab12n1p1".into(),
                container_id: "lab00000101".into(),
                ip: "10.100.3.65".parse().unwrap(),
                ip6: Some("fd00:100::41".parse().unwrap()),
                interface: "cali0123456789a".into(),
            }],
            no_bgp: false,
            tor: TorState {
                name: "tor".into(),
                netns: "mgab12tor".into(),
                pid: 43,
                socket: "/tmp/mgab12-x/tor.ctl".into(),
                config: "/tmp/mgab12-x/tor.conf".into(),
                addresses: vec!["10.99.1.2".parse().unwrap()],
                addresses6: vec!["fd00:99:1::2".parse().unwrap()],
                asn: 65000,
                protocols: vec!["node1".into()],
            },
            tor2: None,
            plane_b: None,
            created: 1,
            calico: Vec::new(),
            simulated: None,
            migrated: Vec::new(),
        }
    }

    #[test]
    fn state_survives_a_round_trip_through_its_file_and_remove_deletes_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lab").join("state.json");
        assert_eq!(LabState::load(&path).unwrap(), None);
        let s = sample();
        s.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"mode\": \"route-reflectors\""), "{text}");
        assert_eq!(LabState::load(&path).unwrap(), Some(s.clone()));
        assert_eq!(
            s.namespaces(),
            vec![
                "mgab12n1p1",
                "mgab12n1",
                "mgab12tor",
                "mgab12etcd",
                "mgab12sw0"
            ]
        );
        assert_eq!(
            s.processes().iter().map(|p| p.pid).collect::<Vec<_>>(),
            vec![45, 42, 43, 46, 44]
        );
        LabState::remove(&path).unwrap();
        assert!(!path.exists());
        assert!(!path.parent().unwrap().exists());
        LabState::remove(&path).unwrap();
    }

    #[test]
    fn unreadable_state_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, "{ not json").unwrap();
        let err = LabState::load(&path).unwrap_err().to_string();
        assert!(err.contains("state.json"), "{err}");
    }
}
