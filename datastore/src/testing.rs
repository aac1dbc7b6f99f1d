//! A real etcd for tests: Debian's `/usr/bin/etcd` on a free loopback port pair with a
//! temporary data dir (on /dev/shm when present, for fast fsync), optionally with TLS client
//! certificates made by `openssl` at test time. Dropping it (also while panicking) kills the
//! process and removes the data dir; the child also gets SIGKILL if the test process dies.

use crate::args::EtcdArgs;
use crate::store::Store;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's etcd-server package installs etcd.
pub const ETCD_BINARY: &str = "/usr/bin/etcd";

/// Client certificate files for a TLS etcd.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

/// A running etcd owned by a test.
pub struct EtcdServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    tls: Option<TlsFiles>,
    starts: u32,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding a loopback port for etcd")
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is missing: run scripts/install-deps.sh");
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A fresh test CA in `dir` with a server certificate (for 127.0.0.1 and localhost) and a client
/// certificate signed by it, made by `openssl`.
pub fn make_certs(dir: &Path) -> TlsFiles {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=margay-test-ca",
    ]);
    openssl(dir, &ca);
    for (who, cn, usage) in [
        ("server", "localhost", "serverAuth,clientAuth"),
        ("client", "margay-client", "clientAuth"),
    ] {
        let ext = format!(
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n"
        );
        std::fs::write(dir.join(format!("{who}.ext")), ext).expect("writing cert extensions");
        let key = format!("{who}.key");
        let csr = format!("{who}.csr");
        let subj = format!("/CN={cn}");
        let mut req = vec!["req"];
        req.extend(ec);
        req.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &req);
        let pem = format!("{who}.pem");
        let extfile = format!("{who}.ext");
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &extfile,
            ],
        );
    }
    TlsFiles {
        ca: dir.join("ca.pem"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
    }
}

impl EtcdServer {
    /// Starts a plain-HTTP etcd and waits until it serves clients.
    pub fn start() -> EtcdServer {
        EtcdServer::launch(false)
    }

    /// Starts an etcd that requires TLS client certificates (signed by a fresh test CA).
    pub fn start_tls() -> EtcdServer {
        EtcdServer::launch(true)
    }

    fn launch(tls: bool) -> EtcdServer {
        assert!(
            Path::new(ETCD_BINARY).exists(),
            "{ETCD_BINARY} is missing: run scripts/install-deps.sh (package etcd-server)"
        );
        let base = if Path::new("/dev/shm").is_dir() {
            tempfile::Builder::new()
                .prefix("margay-etcd-")
                .tempdir_in("/dev/shm")
        } else {
            tempfile::Builder::new().prefix("margay-etcd-").tempdir()
        }
        .expect("creating the etcd data dir");
        let tls = tls.then(|| make_certs(base.path()));
        let mut server = EtcdServer {
            child: None,
            dir: base,
            client_port: free_port(),
            peer_port: free_port(),
            tls,
            starts: 0,
        };
        server.start_again();
        server
    }

    /// The client URL (`http://127.0.0.1:PORT` or `https://...`).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// The TLS files, for a TLS server.
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// Connection flags for this server (with the client certificate when TLS).
    pub fn args(&self) -> EtcdArgs {
        let mut a = EtcdArgs::plain([self.endpoint()]);
        if let Some(t) = &self.tls {
            a.ca = Some(t.ca.clone());
            a.cert = Some(t.client_cert.clone());
            a.key = Some(t.client_key.clone());
        }
        a
    }

    /// A connected store.
    pub async fn store(&self) -> Store {
        Store::connect(&self.args())
            .await
            .expect("connecting to the test etcd")
    }

    /// Kills etcd (SIGKILL, as a crash) and waits for it; the data dir stays.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts etcd (again) on the same data dir and ports, and waits until it is ready.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "etcd is already running");
        self.starts += 1;
        let data = self.dir.path().join("data");
        let log = self.dir.path().join(format!("etcd-{}.log", self.starts));
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut cmd = Command::new(ETCD_BINARY);
        cmd.arg("--name=test")
            .arg(format!("--data-dir={}", data.display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .arg("--logger=zap")
            .arg(format!("--log-outputs={}", log.display()));
        if let Some(t) = &self.tls {
            cmd.arg(format!("--cert-file={}", t.server_cert.display()))
                .arg(format!("--key-file={}", t.server_key.display()))
                .arg(format!("--trusted-ca-file={}", t.ca.display()))
                .arg("--client-cert-auth");
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to kill the child when
        // the thread that spawned it exits, so no etcd outlives a crashed test.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawning etcd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("serving client traffic")
                || text.contains("ready to serve client requests")
            {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("etcd exited with {status} before it was ready:\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "etcd was not ready within 20 s:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Compacts the history up to the current revision (etcd's `compact`), physically.
    pub async fn compact(&self, store: &Store) -> i64 {
        let rev = store.revision().await.expect("reading the revision");
        store
            .client()
            .compact(
                rev,
                Some(etcd_client::CompactionOptions::new().with_physical()),
            )
            .await
            .expect("compacting");
        rev
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// etcd's gRPC proxy (`etcd grpc-proxy start`) in front of a plain [`EtcdServer`], on a free
/// loopback port; dropping it kills it.
pub struct EtcdProxyServer {
    child: Child,
    port: u16,
}

impl EtcdServer {
    /// Starts a gRPC proxy in front of this (plain) etcd and waits until it answers `/health`
    /// with etcd healthy behind it.
    pub fn start_proxy(&self) -> EtcdProxyServer {
        assert!(self.tls.is_none(), "the test proxy speaks plain HTTP");
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let log = self.dir.path().join(format!("proxy-{port}.log"));
        let out = std::fs::File::create(&log).expect("creating the proxy's log");
        let mut cmd = Command::new(ETCD_BINARY);
        cmd.args(["grpc-proxy", "start"])
            .arg(format!("--endpoints=127.0.0.1:{}", self.client_port))
            .arg(format!("--listen-addr={listen}"))
            .arg(format!("--advertise-client-url={listen}"))
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join(format!("proxy-{port}")).display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(out);
        // SAFETY: as for etcd itself (start_again): only asks for SIGKILL when the spawning
        // thread exits.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("spawning etcd's gRPC proxy");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if health_ok(port) {
                return EtcdProxyServer { child, port };
            }
            if let Ok(Some(status)) = child.try_wait() {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("etcd's gRPC proxy exited with {status}:\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "etcd's gRPC proxy did not answer /health within 20 s:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Whether `GET /health` on loopback `port` says etcd is healthy (a bare HTTP/1.0 request).
fn health_ok(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET /health HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}

impl EtcdProxyServer {
    /// The proxy's client URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A store connected to the proxy.
    pub async fn store(&self) -> Store {
        Store::connect(&EtcdArgs::plain([self.endpoint()]))
            .await
            .expect("connecting to etcd's gRPC proxy")
    }
}

impl Drop for EtcdProxyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
