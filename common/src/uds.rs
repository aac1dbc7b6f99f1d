//! A gRPC client channel over a unix socket: every margay daemon listens on nothing else, so
//! margayctl, the CNI plugin, felix (towards bgpd) and the test lab all connect this way.
//!
//! The socket is tried once directly first, so a missing or refused socket fails at once and
//! in the OS's own words; then tonic gets a connector that dials the socket for every
//! connection it makes (the endpoint URI is a placeholder tonic requires).

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

/// Why the socket could not be reached, for callers that answer each case differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdsFailure {
    /// No socket file at the path: the daemon is not running (or never was).
    Missing,
    /// A socket file nobody accepts on: the daemon died and left it.
    Refused,
    /// No connection within the timeout: the daemon is stuck or overloaded.
    TimedOut,
    /// Anything else (permissions, a path that is not a socket, an HTTP/2 handshake failure).
    Other,
}

/// The socket at `path` could not be reached; `reason` is in the OS's words.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach {}: {reason}", path.display())]
pub struct UdsError {
    pub path: PathBuf,
    pub failure: UdsFailure,
    pub reason: String,
}

/// Connects a channel to the unix socket at `path`, failing within `timeout`.
pub async fn channel(path: &Path, timeout: Duration) -> Result<Channel, UdsError> {
    connect(path, timeout, None).await
}

/// As [`channel`], and every request on the channel fails (status CANCELLED) once it has
/// taken `request_timeout`: for a client that must answer its own caller in bounded time.
pub async fn channel_with_request_timeout(
    path: &Path,
    timeout: Duration,
    request_timeout: Duration,
) -> Result<Channel, UdsError> {
    connect(path, timeout, Some(request_timeout)).await
}

async fn connect(
    path: &Path,
    timeout: Duration,
    request_timeout: Option<Duration>,
) -> Result<Channel, UdsError> {
    let fail = |failure: UdsFailure, reason: String| UdsError {
        path: path.to_path_buf(),
        failure,
        reason,
    };
    match tokio::time::timeout(timeout, tokio::net::UnixStream::connect(path)).await {
        Err(_) => {
            return Err(fail(
                UdsFailure::TimedOut,
                format!("timed out after {timeout:?}"),
            ));
        }
        Ok(Err(e)) => {
            let failure = match e.kind() {
                std::io::ErrorKind::NotFound => UdsFailure::Missing,
                std::io::ErrorKind::ConnectionRefused => UdsFailure::Refused,
                _ => UdsFailure::Other,
            };
            return Err(fail(failure, os_reason(&e)));
        }
        Ok(Ok(_probe)) => {}
    }
    let socket = path.to_path_buf();
    let mut endpoint = Endpoint::from_static("http://margay.invalid").connect_timeout(timeout);
    if let Some(t) = request_timeout {
        endpoint = endpoint.timeout(t);
    }
    endpoint
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .map_err(|e| fail(UdsFailure::Other, e.to_string()))
}

/// "No such file or directory" rather than "No such file or directory (os error 2)".
fn os_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn missing_socket_is_missing_and_names_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("absent.sock");
        let e = channel(&path, Duration::from_secs(1)).await.unwrap_err();
        assert_eq!(e.failure, UdsFailure::Missing);
        assert_eq!(
            e.to_string(),
            format!("cannot reach {}: No such file or directory", path.display())
        );
    }

    #[tokio::test]
    async fn socket_nobody_accepts_on_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("dead.sock");
        // A bound socket whose listener is gone leaves the file: what a killed daemon leaves.
        drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
        let e = channel(&path, Duration::from_secs(1)).await.unwrap_err();
        assert_eq!(e.failure, UdsFailure::Refused, "{e}");
        assert!(e.to_string().contains("Connection refused"), "{e}");
    }

    #[tokio::test]
    async fn listening_socket_gives_a_channel() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("live.sock");
        let listener = tokio::net::UnixListener::bind(&path).expect("bind");
        // Accept and hold connections; tonic connects lazily after the probe, so the
        // handshake is not needed for the channel to be made.
        let accept = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let r = channel(&path, Duration::from_secs(2)).await;
        accept.abort();
        assert!(r.is_ok(), "{:?}", r.err());
    }
}
