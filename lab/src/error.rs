//! The lab's error type: what failed, with enough context (command, stderr, logs) to debug it.

use std::path::PathBuf;
use std::time::Duration;

/// Everything the lab can fail with.
///
/// `Debug` prints the same text as `Display`: a test returning `Result` shows its error with
/// `{:?}`, and the logs in it should read as lines, not as an escaped string.
#[derive(thiserror::Error)]
pub enum LabError {
    /// Namespaces need root (CAP_SYS_ADMIN, CAP_NET_ADMIN).
    #[error("the namespace lab must run as root (sudo scripts/test.sh); running as uid {uid}")]
    NotRoot { uid: u32 },
    /// A helper command (`ip`, `birdc`, ...) exited non-zero.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    /// A binary the test needs is not where we looked.
    #[error("{what} not found at {path}: {hint}")]
    MissingBinary {
        what: String,
        path: PathBuf,
        hint: String,
    },
    /// `wait_for` ran out of time.
    #[error(
        "timed out after {:.1}s waiting for {what}\nlast observation: {last}\n{logs}",
        waited.as_secs_f64()
    )]
    Timeout {
        what: String,
        waited: Duration,
        last: String,
        logs: String,
    },
    /// `holds_for` saw its condition break.
    #[error("{what} stopped holding after {:.1}s\nobserved: {seen}\n{logs}", after.as_secs_f64())]
    Violated {
        what: String,
        after: Duration,
        seen: String,
        logs: String,
    },
    /// Text from birdc we could not read.
    #[error("cannot parse birdc output ({what}): {line:?}")]
    Parse { what: String, line: String },
    /// A gRPC call to margay-bgpd failed.
    #[error("gRPC {call} on {socket}: {status}")]
    Rpc {
        call: String,
        socket: PathBuf,
        status: Box<tonic::Status>,
    },
    /// Connecting to margay-bgpd's socket failed.
    #[error(transparent)]
    Connect(#[from] margay_common::uds::UdsError),
    /// Rendering a config failed.
    #[error("rendering config: {0}")]
    Render(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl LabError {
    /// Wraps an I/O error with what we were doing.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> LabError {
        let context = context.into();
        move |source| LabError::Io { context, source }
    }
}

impl std::fmt::Debug for LabError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}
