//! Logs: `tracing` to stderr, or appended to `log_file_path`. Never to stdout, which carries
//! only the result.

use crate::error::{CniError, code};
use std::fs::OpenOptions;
use std::sync::Mutex;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

/// Installs the subscriber for this run; a log file that cannot be opened is an I/O failure.
pub fn init(level: tracing::Level, file: Option<&str>) -> Result<(), CniError> {
    let writer = match file {
        Some(path) => {
            if let Some(dir) = std::path::Path::new(path).parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir).map_err(|e| io_failure(path, &e))?;
            }
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| io_failure(path, &e))?;
            BoxMakeWriter::new(Mutex::new(f))
        }
        None => BoxMakeWriter::new(std::io::stderr),
    };
    // A second init (tests calling `run` twice) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(writer)
        .with_ansi(false)
        .try_init();
    Ok(())
}

fn io_failure(path: &str, e: &std::io::Error) -> CniError {
    CniError::new(
        code::IO_FAILURE,
        format!("cannot open log file {path}: {e}"),
    )
}
