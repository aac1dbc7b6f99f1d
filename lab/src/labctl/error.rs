//! What `margay-lab` fails with: the lab library's errors, plus the command's own (state file,
//! a lab already running, an interrupted run, a bad option).

use std::path::PathBuf;

use crate::LabError;

/// Every way a `margay-lab` command can fail.
#[derive(Debug, thiserror::Error)]
pub enum LabCtlError {
    /// Building, probing or removing the lab failed.
    #[error(transparent)]
    Lab(#[from] LabError),
    /// The state file could not be read, written or removed.
    #[error("state file {path}: {message}")]
    State { path: PathBuf, message: String },
    /// `up --keep` while a kept lab is still recorded.
    #[error("a lab is already running (lab {tag}, state in {path}); run `margay-lab down` first")]
    AlreadyRunning { tag: String, path: PathBuf },
    /// SIGINT or SIGTERM arrived; what was built has been removed.
    #[error("interrupted")]
    Interrupted,
    /// An option out of range.
    #[error("{0}")]
    Usage(String),
    /// A restart under traffic did not come back as it should (sessions, routes, or a window
    /// too short to see it end).
    #[error("restart: {0}")]
    Restart(String),
}

impl LabCtlError {
    /// A state-file error for `path`.
    pub fn state(path: &std::path::Path, message: impl std::fmt::Display) -> LabCtlError {
        LabCtlError::State {
            path: path.to_path_buf(),
            message: message.to_string(),
        }
    }
}
