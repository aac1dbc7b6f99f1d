//! The WireGuard device's configuration through Debian's `wg` tool (wireguard-tools): the
//! text it reads ([`render`], for `wg syncconf`) and the table it prints ([`parse_dump`], from
//! `wg show DEV dump`), both pure, and [`Wg`], which runs it.
//!
//! Why `wg` and not a crate for the WireGuard generic-netlink family: `wg syncconf` applies a
//! whole desired configuration as a difference against the device, so peers whose settings did
//! not change keep their sessions and an update never passes through an empty peer list, and
//! `wg show dump` is a stable, tab-separated format. The netlink crates for this family are
//! young and would have us re-implement that diff; the device itself is still created through
//! felix's one rtnetlink module. This is the same choice felix made for nftables (`nft -f`).

use std::collections::BTreeSet;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use ipnet::IpNet;

use super::desired::Peer;

/// What the device holds now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceState {
    pub private_key: Option<String>,
    pub public_key: Option<String>,
    pub listen_port: u16,
    pub fwmark: u32,
    pub peers: Vec<PeerState>,
}

/// One peer as the device reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerState {
    pub public_key: String,
    pub endpoint: Option<SocketAddr>,
    pub allowed_ips: BTreeSet<IpNet>,
    /// Seconds since the epoch of the last handshake; 0 = never.
    pub latest_handshake: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub keepalive: Option<u16>,
}

/// What the device should hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConfig {
    pub private_key: String,
    pub listen_port: u16,
    pub fwmark: u32,
    pub peers: Vec<(String, Peer)>,
    pub keepalive: Option<Duration>,
}

/// Running `wg` failed.
#[derive(Debug, thiserror::Error)]
pub enum WgError {
    #[error("running {cmd}: {source} (is Debian's wireguard-tools installed?)")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("{cmd} failed: {stderr}")]
    Failed { cmd: String, stderr: String },
    #[error("cannot read `wg show dump` line {line}: {text:?}")]
    Dump { line: usize, text: String },
}

fn none_if(s: &str, none: &str) -> Option<String> {
    (s != none && !s.is_empty()).then(|| s.to_string())
}

/// Parses `wg show DEV dump`: the device line (private key, public key, listen port, fwmark),
/// then one line per peer (public key, preshared key, endpoint, allowed ips, latest
/// handshake, rx bytes, tx bytes, persistent keepalive).
pub fn parse_dump(text: &str) -> Result<DeviceState, WgError> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let bad = |line: usize, text: &str| WgError::Dump {
        line: line + 1,
        text: text.to_string(),
    };
    let Some((i, first)) = lines.next() else {
        return Err(bad(0, ""));
    };
    let f: Vec<&str> = first.split('\t').collect();
    if f.len() != 4 {
        return Err(bad(i, first));
    }
    let mut dev = DeviceState {
        private_key: none_if(f[0], "(none)"),
        public_key: none_if(f[1], "(none)"),
        listen_port: f[2].parse().map_err(|_| bad(i, first))?,
        fwmark: if f[3] == "off" {
            0
        } else {
            u32::from_str_radix(f[3].trim_start_matches("0x"), 16).map_err(|_| bad(i, first))?
        },
        peers: Vec::new(),
    };
    for (i, line) in lines {
        let p: Vec<&str> = line.split('\t').collect();
        if p.len() != 8 {
            return Err(bad(i, line));
        }
        let allowed_ips = if p[3] == "(none)" {
            BTreeSet::new()
        } else {
            p[3].split(',')
                .map(|s| s.trim().parse::<IpNet>())
                .collect::<Result<_, _>>()
                .map_err(|_| bad(i, line))?
        };
        dev.peers.push(PeerState {
            public_key: p[0].to_string(),
            endpoint: none_if(p[2], "(none)").and_then(|e| e.parse().ok()),
            allowed_ips,
            latest_handshake: p[4].parse().map_err(|_| bad(i, line))?,
            rx_bytes: p[5].parse().map_err(|_| bad(i, line))?,
            tx_bytes: p[6].parse().map_err(|_| bad(i, line))?,
            keepalive: if p[7] == "off" {
                None
            } else {
                Some(p[7].parse().map_err(|_| bad(i, line))?)
            },
        });
    }
    Ok(dev)
}

/// The configuration text `wg syncconf` reads.
pub fn render(c: &DeviceConfig) -> String {
    let mut out = format!(
        "[Interface]\nPrivateKey = {}\nListenPort = {}\nFwMark = {:#x}\n",
        c.private_key, c.listen_port, c.fwmark
    );
    for (key, p) in &c.peers {
        let ips: Vec<String> = p.allowed_ips.iter().map(|n| n.to_string()).collect();
        out.push_str(&format!(
            "\n[Peer]\n# {}\nPublicKey = {key}\nEndpoint = {}\nAllowedIPs = {}\n",
            p.node,
            p.endpoint,
            ips.join(", ")
        ));
        if let Some(k) = c.keepalive {
            out.push_str(&format!("PersistentKeepalive = {}\n", k.as_secs().max(1)));
        }
    }
    out
}

/// True when the device already holds exactly `c` (keys, port, mark, every peer's endpoint,
/// allowed IPs and keepalive), so no `syncconf` is needed.
pub fn matches(dev: &DeviceState, c: &DeviceConfig) -> bool {
    let keepalive = c.keepalive.map(|k| k.as_secs().max(1) as u16);
    dev.private_key.as_deref() == Some(c.private_key.as_str())
        && dev.listen_port == c.listen_port
        && dev.fwmark == c.fwmark
        && dev.peers.len() == c.peers.len()
        && c.peers.iter().all(|(key, p)| {
            dev.peers.iter().any(|d| {
                &d.public_key == key
                    && d.endpoint == Some(p.endpoint)
                    && d.allowed_ips == p.allowed_ips
                    && d.keepalive == keepalive
            })
        })
}

/// Runs Debian's `wg`.
#[derive(Debug, Clone)]
pub struct Wg {
    pub binary: String,
}

impl Default for Wg {
    fn default() -> Self {
        Wg {
            binary: "wg".into(),
        }
    }
}

impl Wg {
    fn run(&self, args: &[&str], input: Option<&str>) -> Result<String, WgError> {
        let cmd = format!("{} {}", self.binary, args.join(" "));
        let mut child = Command::new(&self.binary)
            .args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| WgError::Spawn {
                cmd: cmd.clone(),
                source,
            })?;
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin
                .write_all(text.as_bytes())
                .map_err(|source| WgError::Spawn {
                    cmd: cmd.clone(),
                    source,
                })?;
        }
        let out = child.wait_with_output().map_err(|source| WgError::Spawn {
            cmd: cmd.clone(),
            source,
        })?;
        if !out.status.success() {
            return Err(WgError::Failed {
                cmd,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `wg show DEV dump`.
    pub fn show(&self, dev: &str) -> Result<DeviceState, WgError> {
        parse_dump(&self.run(&["show", dev, "dump"], None)?)
    }

    /// `wg syncconf DEV /proc/self/fd/0`: the device is made to hold `c`, changing only what
    /// differs. The configuration (with the private key) goes through a pipe, never a file;
    /// `/proc/self/fd/0` rather than `/dev/stdin`, which minimal root filesystems lack.
    pub fn syncconf(&self, dev: &str, c: &DeviceConfig) -> Result<(), WgError> {
        self.run(&["syncconf", dev, "/proc/self/fd/0"], Some(&render(c)))
            .map(|_| ())
    }

    /// A new private key (`wg genkey`).
    pub fn genkey(&self) -> Result<String, WgError> {
        Ok(self.run(&["genkey"], None)?.trim().to_string())
    }

    /// The public key of `private` (`wg pubkey`).
    pub fn pubkey(&self, private: &str) -> Result<String, WgError> {
        Ok(self.run(&["pubkey"], Some(private))?.trim().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "cHJpdmF0ZWtleXByaXZhdGVrZXlwcml2YXRla2V5cHI=\tcHVibGlja2V5cHVibGlja2V5cHVibGlja2V5cHVibGk=\t51820\t0x100000\n\
AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAI=\t(none)\t10.0.0.2:51820\t10.0.0.2/32,10.244.2.0/26\t1733500000\t1024\t2048\toff\n\
AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAM=\t(none)\t(none)\t(none)\t0\t0\t0\t25\n";

    #[test]
    fn reads_the_dump_of_a_device_with_two_peers() {
        let d = parse_dump(DUMP).unwrap();
        assert_eq!(d.listen_port, 51820);
        assert_eq!(d.fwmark, 0x100000);
        assert_eq!(d.peers.len(), 2);
        assert_eq!(d.peers[0].endpoint.unwrap().to_string(), "10.0.0.2:51820");
        assert_eq!(d.peers[0].allowed_ips.len(), 2);
        assert_eq!((d.peers[0].rx_bytes, d.peers[0].tx_bytes), (1024, 2048));
        assert_eq!(d.peers[1].endpoint, None);
        assert_eq!(d.peers[1].keepalive, Some(25));
    }

    #[test]
    fn a_fresh_device_has_no_keys_and_no_mark() {
        let d = parse_dump("(none)\t(none)\t0\toff\n").unwrap();
        assert_eq!((d.private_key, d.public_key, d.fwmark), (None, None, 0));
    }

    #[test]
    fn a_garbled_dump_names_its_line() {
        let e = parse_dump("a\tb\t1\toff\nshort line\n").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
    }

    #[test]
    fn the_rendered_config_matches_what_the_device_reports() {
        let d = parse_dump(DUMP).unwrap();
        let peer = Peer {
            node: "n2".into(),
            endpoint: "10.0.0.2:51820".parse().unwrap(),
            allowed_ips: ["10.0.0.2/32", "10.244.2.0/26"]
                .iter()
                .map(|s| s.parse().unwrap())
                .collect(),
        };
        let mut c = DeviceConfig {
            private_key: d.private_key.clone().unwrap(),
            listen_port: 51820,
            fwmark: 0x100000,
            peers: vec![(d.peers[0].public_key.clone(), peer)],
            keepalive: None,
        };
        let text = render(&c);
        assert!(
            text.contains("AllowedIPs = 10.0.0.2/32, 10.244.2.0/26\n"),
            "{text}"
        );
        assert!(text.contains("FwMark = 0x100000\n"), "{text}");
        let one = DeviceState {
            peers: d.peers[..1].to_vec(),
            ..d.clone()
        };
        assert!(matches(&one, &c));
        c.listen_port = 5000;
        assert!(!matches(&one, &c));
    }
}
