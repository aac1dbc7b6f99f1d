//! What `binaries_cli.rs` and `security.rs` both start: margay-felix in cluster mode with its
//! socket where the test wants it, and the wait for a daemon's socket file.

use std::path::Path;
use std::time::Duration;

use margay_lab::{Lab, Netns, Process, Result, margay_binary, wait_for};

/// How long a daemon gets to create its socket.
const SOCKET_WAIT: Duration = Duration::from_secs(45);

/// margay-felix in cluster mode in `ns` against `etcd`, serving the CNI API on `socket` (no
/// bgpd, no HTTP server); returns once the socket exists.
pub fn cluster_felix(lab: &Lab, ns: &Netns, etcd: &str, socket: &Path) -> Result<Process> {
    let binary = margay_binary("margay-felix", "`cargo build -p margay-felix`")?;
    let felix = Process::spawn(
        ns,
        "felix",
        binary,
        [
            "--node".to_string(),
            "n1".into(),
            "--etcd-endpoints".into(),
            etcd.to_string(),
            "--socket".into(),
            socket.display().to_string(),
            "--bgpd-socket".into(),
            lab.dir().join("no-bgpd.sock").display().to_string(),
            "--http-port".into(),
            "0".into(),
        ],
        lab.dir(),
    )?;
    wait_for_socket(&felix, socket)?;
    Ok(felix)
}

/// Waits until `daemon` has created `socket`.
pub fn wait_for_socket(daemon: &Process, socket: &Path) -> Result<()> {
    wait_for(
        &format!("{} to create {socket:?}", daemon.name()),
        SOCKET_WAIT,
        &[daemon],
        || {
            if socket.exists() {
                Ok(())
            } else {
                Err("no socket yet".into())
            }
        },
    )
}
