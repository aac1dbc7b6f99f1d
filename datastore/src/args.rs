//! The etcd connection flags every margay binary flattens into its command line, with Calico's
//! variable names (`ETCD_ENDPOINTS`, `ETCD_CA_CERT_FILE`, `ETCD_CERT_FILE`, `ETCD_KEY_FILE`)
//! read when neither the flag nor the `MARGAY_` variable is set.

use std::path::{Path, PathBuf};

/// A TLS file named by the etcd flags that cannot be used: a configuration error, reported at
/// start instead of retried forever.
#[derive(Debug, thiserror::Error)]
pub enum EtcdArgsError {
    #[error("{flag} {path}: cannot read it: {source}")]
    Unreadable {
        flag: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--etcd-cert-file and --etcd-key-file go together: give both or neither")]
    HalfIdentity,
}

/// `--etcd-endpoints` (or `MARGAY_ETCD_ENDPOINTS`) and the TLS client certificate files.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct EtcdArgs {
    /// etcd endpoints, comma separated (`https://10.0.0.1:2379,https://10.0.0.2:2379`);
    /// Calico's ETCD_ENDPOINTS when neither this nor its variable is set.
    #[arg(
        long = "etcd-endpoints",
        env = "MARGAY_ETCD_ENDPOINTS",
        global = true,
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379"
    )]
    pub endpoints: Vec<String>,
    /// CA certificate (PEM) that signed etcd's server certificate (or Calico's
    /// ETCD_CA_CERT_FILE).
    #[arg(
        long = "etcd-ca-cert-file",
        global = true,
        env = "MARGAY_ETCD_CA_CERT_FILE"
    )]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM), with --etcd-key-file (or Calico's ETCD_CERT_FILE).
    #[arg(long = "etcd-cert-file", global = true, env = "MARGAY_ETCD_CERT_FILE")]
    pub cert: Option<PathBuf>,
    /// Client private key (PEM), with --etcd-cert-file (or Calico's ETCD_KEY_FILE). Only its
    /// path is ever logged.
    #[arg(long = "etcd-key-file", global = true, env = "MARGAY_ETCD_KEY_FILE")]
    pub key: Option<PathBuf>,
}

impl EtcdArgs {
    /// Fills what the command line and the `MARGAY_ETCD_*` variables left unset from Calico's
    /// variables. `matches` are the parsed arguments these came from (to tell a defaulted
    /// endpoint list from a chosen one).
    pub fn apply_calico_env(&mut self, matches: &clap::ArgMatches) {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        if matches.value_source("endpoints") == Some(clap::parser::ValueSource::DefaultValue)
            && let Some(v) = var("ETCD_ENDPOINTS")
        {
            self.endpoints = v.split(',').map(|e| e.trim().to_string()).collect();
        }
        for (field, name) in [
            (&mut self.ca, "ETCD_CA_CERT_FILE"),
            (&mut self.cert, "ETCD_CERT_FILE"),
            (&mut self.key, "ETCD_KEY_FILE"),
        ] {
            if field.is_none() {
                *field = var(name).map(PathBuf::from);
            }
        }
    }

    /// Checks that the TLS files named can be read (and that a client certificate comes with
    /// its key), so a typo stops a daemon at start with the flag named.
    pub fn check_files(&self) -> Result<(), EtcdArgsError> {
        if self.cert.is_some() != self.key.is_some() {
            return Err(EtcdArgsError::HalfIdentity);
        }
        let files: [(&'static str, Option<&Path>); 3] = [
            ("--etcd-ca-cert-file", self.ca.as_deref()),
            ("--etcd-cert-file", self.cert.as_deref()),
            ("--etcd-key-file", self.key.as_deref()),
        ];
        for (flag, path) in files {
            if let Some(path) = path {
                std::fs::File::open(path).map_err(|source| EtcdArgsError::Unreadable {
                    flag,
                    path: path.to_path_buf(),
                    source,
                })?;
            }
        }
        Ok(())
    }

    /// Plain endpoints, no TLS.
    pub fn plain(endpoints: impl IntoIterator<Item = impl Into<String>>) -> EtcdArgs {
        EtcdArgs {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ..EtcdArgs::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        etcd: EtcdArgs,
    }

    #[test]
    fn endpoints_split_on_commas_and_tls_files_parse() {
        let cli = Cli::parse_from([
            "x",
            "--etcd-endpoints",
            "https://a:2379,https://b:2379",
            "--etcd-ca-cert-file",
            "/ca.pem",
            "--etcd-cert-file",
            "/c.pem",
            "--etcd-key-file",
            "/k.pem",
        ]);
        assert_eq!(cli.etcd.endpoints, ["https://a:2379", "https://b:2379"]);
        assert_eq!(cli.etcd.ca, Some(PathBuf::from("/ca.pem")));
        assert_eq!(cli.etcd.key, Some(PathBuf::from("/k.pem")));
    }

    #[test]
    fn unreadable_or_half_tls_files_are_refused_naming_the_flag() {
        let mut args = EtcdArgs::plain(["https://a:2379"]);
        args.cert = Some("/nonexistent/c.pem".into());
        assert!(matches!(
            args.check_files(),
            Err(EtcdArgsError::HalfIdentity)
        ));
        args.key = Some("/nonexistent/k.pem".into());
        let e = args.check_files().expect_err("missing files");
        assert!(
            e.to_string()
                .starts_with("--etcd-cert-file /nonexistent/c.pem"),
            "{e}"
        );
        assert!(EtcdArgs::plain(["http://a:2379"]).check_files().is_ok());
    }
}
