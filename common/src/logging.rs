//! Logs for the daemons and margayctl: the `--log-format text|json` and `--log-level` flags and
//! the one `tracing` subscriber they install, always on stderr (stdout belongs to the command's
//! output).

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// How each log line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, target, fields).
    Json,
}

/// The log flags every margay daemon (and margayctl) flattens into its command line.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct LogArgs {
    /// Log format: `text` or `json` (one JSON object per line).
    #[arg(
        long = "log-format",
        env = "MARGAY_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub format: LogFormat,
    /// Log filter with RUST_LOG's syntax: a level (`error`, `warn`, `info`, `debug`, `trace`)
    /// or per-module directives (`info,margay_bgp=debug`). Unset: RUST_LOG, then `info`.
    #[arg(
        long = "log-level",
        env = "MARGAY_LOG_LEVEL",
        value_parser = parse_filter,
        global = true
    )]
    pub level: Option<String>,
}

/// A log filter that tracing's `EnvFilter` does not accept.
#[derive(Debug, thiserror::Error)]
#[error("invalid log filter {filter:?}: {reason}")]
pub struct FilterError {
    filter: String,
    reason: String,
}

fn parse_filter(s: &str) -> Result<String, FilterError> {
    EnvFilter::try_new(s).map_err(|e| FilterError {
        filter: s.to_string(),
        reason: e.to_string(),
    })?;
    Ok(s.to_string())
}

impl LogArgs {
    /// The filter these flags ask for: `--log-level`, else RUST_LOG, else `default`.
    pub fn filter(&self, default: &str) -> Result<EnvFilter, FilterError> {
        let text = match &self.level {
            Some(l) => l.clone(),
            None => std::env::var("RUST_LOG")
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| default.to_string()),
        };
        EnvFilter::try_new(&text).map_err(|e| FilterError {
            filter: text,
            reason: e.to_string(),
        })
    }

    /// Installs the process's subscriber (stderr; colours only at a terminal). A second call
    /// keeps the first subscriber.
    pub fn init(&self, default: &str) -> Result<(), FilterError> {
        let filter = self.filter(default)?;
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal());
        let _ = match self.format {
            LogFormat::Json => builder.json().try_init(),
            LogFormat::Text => builder.try_init(),
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        log: LogArgs,
    }

    #[test]
    fn json_format_and_directives_parse() {
        let cli = Cli::try_parse_from(["x", "--log-format", "json", "--log-level", "info,a=debug"])
            .expect("valid flags");
        assert_eq!(cli.log.format, LogFormat::Json);
        assert_eq!(cli.log.level.as_deref(), Some("info,a=debug"));
    }

    #[test]
    fn invalid_filter_is_refused_naming_the_flag() {
        let err = Cli::try_parse_from(["x", "--log-level", "a=[["])
            .err()
            .expect("an invalid filter is refused");
        assert!(err.to_string().contains("--log-level"), "{err}");
    }
}
