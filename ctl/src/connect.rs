//! gRPC channels over unix sockets (the daemons listen on nothing else).

use hyper_util::rt::TokioIo;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// The daemon's socket could not be reached.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach {path}: {reason}")]
pub struct Unreachable {
    pub path: PathBuf,
    pub reason: String,
}

/// Connects a channel to the unix socket at `path`, failing within `timeout`.
pub async fn unix_channel(path: &Path, timeout: Duration) -> Result<Channel, Unreachable> {
    let unreachable = |reason: String| Unreachable {
        path: path.to_path_buf(),
        reason,
    };
    // Connect once directly so a missing or refused socket gives the OS's own words.
    tokio::time::timeout(timeout, tokio::net::UnixStream::connect(path))
        .await
        .map_err(|_| unreachable("timed out".into()))?
        .map_err(|e| unreachable(os_reason(&e)))?;
    let socket = path.to_path_buf();
    // The URI is required by tonic but unused: every connection goes to the socket.
    Endpoint::try_from("http://[::1]:50051")
        .map_err(|e| unreachable(e.to_string()))?
        .connect_timeout(timeout)
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .map_err(|e| unreachable(e.to_string()))
}

/// "No such file or directory" rather than "No such file or directory (os error 2)".
fn os_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}
