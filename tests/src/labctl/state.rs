//! The record of a lab left running by `up --keep` (`/run/margay-lab/state.json`): every
//! namespace, process (PID), socket and directory it made, so that `status` can report on it
//! and `down` can remove all of it from another process.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use super::LabCtlError;
use super::topology::Mode;

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
    /// margay-bgpd's PID.
    pub pid: u32,
    /// margay-bgpd's gRPC socket.
    pub socket: PathBuf,
    pub config: PathBuf,
    pub address4: Ipv4Addr,
    pub address6: Option<Ipv6Addr>,
    pub asn: u32,
    pub block4: Ipv4Net,
    pub block6: Option<Ipv6Net>,
    /// Every neighbour it is configured with.
    pub peers: Vec<IpAddr>,
    pub reflector: bool,
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
    pub address4: Ipv4Addr,
    pub address6: Option<Ipv6Addr>,
    pub asn: u32,
    /// Its BGP protocols (one per node and family), as `birdc show protocols` names them.
    pub protocols: Vec<String>,
}

/// A whole lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabState {
    /// The tag in every name the lab made (`mg` + tag + role).
    pub tag: String,
    /// Configs, sockets and logs.
    pub dir: PathBuf,
    pub mode: Mode,
    pub ipv6: bool,
    /// The switch's namespace (bridge `br0`).
    pub switch: String,
    pub subnet4: Ipv4Net,
    pub subnet6: Ipv6Net,
    pub nodes: Vec<NodeState>,
    pub tor: TorState,
    /// Seconds since the epoch when `up` finished.
    pub created: u64,
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

    /// Every namespace, hosts first, the switch last.
    pub fn namespaces(&self) -> Vec<String> {
        let mut v: Vec<String> = self.nodes.iter().map(|n| n.netns.clone()).collect();
        v.push(self.tor.netns.clone());
        v.push(self.switch.clone());
        v
    }

    /// Every daemon the lab started.
    pub fn processes(&self) -> Vec<ProcessRecord> {
        let mut v: Vec<ProcessRecord> = self
            .nodes
            .iter()
            .map(|n| ProcessRecord {
                name: n.name.clone(),
                netns: n.netns.clone(),
                pid: n.pid,
            })
            .collect();
        v.push(ProcessRecord {
            name: self.tor.name.clone(),
            netns: self.tor.netns.clone(),
            pid: self.tor.pid,
        });
        v
    }

    /// Every node's IPv4 and IPv6 blocks.
    pub fn blocks(&self) -> Vec<ipnet::IpNet> {
        self.nodes
            .iter()
            .flat_map(|n| std::iter::once(n.block4.into()).chain(n.block6.map(ipnet::IpNet::from)))
            .collect()
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
            ipv6: true,
            switch: "mgab12sw".into(),
            subnet4: "10.99.1.0/24".parse().unwrap(),
            subnet6: "fd00:99:1::/64".parse().unwrap(),
            nodes: vec![NodeState {
                name: "node1".into(),
                netns: "mgab12n1".into(),
                pid: 42,
                socket: "/tmp/mgab12-x/node1.sock".into(),
                config: "/tmp/mgab12-x/node1.toml".into(),
                address4: "10.99.1.1".parse().unwrap(),
                address6: Some("fd00:99:1::1".parse().unwrap()),
                asn: 64512,
                block4: "10.100.1.0/26".parse().unwrap(),
                block6: Some("fd00:100::1:0/122".parse().unwrap()),
                peers: vec!["10.99.1.2".parse().unwrap()],
                reflector: true,
            }],
            tor: TorState {
                name: "tor".into(),
                netns: "mgab12tor".into(),
                pid: 43,
                socket: "/tmp/mgab12-x/tor.ctl".into(),
                config: "/tmp/mgab12-x/tor.conf".into(),
                address4: "10.99.1.2".parse().unwrap(),
                address6: None,
                asn: 65000,
                protocols: vec!["node1".into()],
            },
            created: 1,
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
        assert_eq!(s.namespaces(), vec!["mgab12n1", "mgab12tor", "mgab12sw"]);
        assert_eq!(
            s.processes().iter().map(|p| p.pid).collect::<Vec<_>>(),
            vec![42, 43]
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
