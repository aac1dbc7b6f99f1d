//! The etcd connection flags every margay binary flattens into its command line.

use std::path::PathBuf;

/// `--etcd-endpoints` (or `MARGAY_ETCD_ENDPOINTS`) and the TLS client certificate files.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct EtcdArgs {
    /// etcd endpoints, comma separated (`https://10.0.0.1:2379,https://10.0.0.2:2379`).
    #[arg(
        long = "etcd-endpoints",
        env = "MARGAY_ETCD_ENDPOINTS",
        global = true,
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379"
    )]
    pub endpoints: Vec<String>,
    /// CA certificate (PEM) that signed etcd's server certificate.
    #[arg(
        long = "etcd-ca-cert-file",
        global = true,
        env = "MARGAY_ETCD_CA_CERT_FILE"
    )]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM).
    #[arg(long = "etcd-cert-file", global = true, env = "MARGAY_ETCD_CERT_FILE")]
    pub cert: Option<PathBuf>,
    /// Client private key (PEM).
    #[arg(long = "etcd-key-file", global = true, env = "MARGAY_ETCD_KEY_FILE")]
    pub key: Option<PathBuf>,
}

impl EtcdArgs {
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
}
