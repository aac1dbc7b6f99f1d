//! etcd's gRPC proxy in the lab: `etcd grpc-proxy start` (the same Debian binary as etcd), run
//! in etcd's namespace on a port of its own. The proxy coalesces the watches of its clients
//! that watch the same prefix into one watch on etcd, and answers serializable reads from its
//! cache: at cluster size, many nodes' bgpd and felix point at a few proxies, and etcd serves
//! the proxies instead of every node (what Typha does for Calico on the Kubernetes API).

use std::net::IpAddr;

use crate::Result;
use crate::etcd::{CLIENT_PORT, ETCD_BINARY, Etcd, wait_health};
use crate::lab::Lab;
use crate::process::{HasLogs, Process};

/// The first proxy's port; proxy `i` listens on `FIRST_PORT + i`.
pub const FIRST_PORT: u16 = 23790;

/// One running gRPC proxy in front of the lab's etcd. Dropping it stops it (by PID).
#[derive(Debug)]
pub struct EtcdProxy {
    process: Process,
    ip: IpAddr,
    port: u16,
}

impl EtcdProxy {
    /// Starts proxy number `index` in etcd's namespace, on etcd's address and port
    /// [`FIRST_PORT`]` + index`, and waits until it reports etcd healthy through itself.
    pub fn start(lab: &Lab, etcd: &Etcd, index: u16) -> Result<EtcdProxy> {
        let ip = etcd.ip();
        let port = FIRST_PORT + index;
        let listen = format!("{ip}:{port}");
        let data_dir = lab.dir().join(format!("etcd-proxy{index}.data"));
        let args = vec![
            "grpc-proxy".to_string(),
            "start".to_string(),
            format!("--endpoints={ip}:{CLIENT_PORT}"),
            format!("--listen-addr={listen}"),
            format!("--advertise-client-url={listen}"),
            format!("--data-dir={}", data_dir.display()),
        ];
        let name = format!("etcd-proxy{index}");
        let process = Process::spawn(etcd.netns(), &name, ETCD_BINARY, &args, lab.dir())?;
        let mut proxy = EtcdProxy { process, ip, port };
        proxy.wait_healthy(etcd)?;
        Ok(proxy)
    }

    fn wait_healthy(&mut self, etcd: &Etcd) -> Result<()> {
        let command = format!(
            "{ETCD_BINARY} grpc-proxy start --listen-addr {}",
            self.endpoint()
        );
        let endpoint = self.endpoint();
        wait_health(
            &mut self.process,
            etcd.netns(),
            &endpoint,
            "etcd's gRPC proxy",
            command,
        )
    }

    /// The URL clients use instead of etcd's (`http://10.99.N.I:2379X`).
    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", self.ip, self.port)
    }

    /// The proxy's PID (for its CPU and memory).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Lets the proxy outlive this guard (a kept lab); returns its PID.
    pub fn into_kept(self) -> u32 {
        self.process.into_kept()
    }
}

impl HasLogs for EtcdProxy {
    fn log_tails(&self) -> String {
        self.process.log_tails()
    }
}

/// Which of `proxies` proxies serves the node at `node` (0-based, in the lab's order): they
/// take the nodes in turn. `None` without proxies (the node talks to etcd itself).
pub fn proxy_for(node: usize, proxies: usize) -> Option<usize> {
    (proxies > 0).then(|| node % proxies)
}

/// Starts `count` proxies in front of `etcd` (ports [`FIRST_PORT`] up).
pub fn start_proxies(lab: &Lab, etcd: &Etcd, count: u8) -> Result<Vec<EtcdProxy>> {
    (0..u16::from(count))
        .map(|i| EtcdProxy::start(lab, etcd, i))
        .collect()
}
