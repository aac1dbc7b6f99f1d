//! Where Calico's etcd is (its own flags, Calico's `ETCD_*` variables, or margay's etcd when
//! they share one), and reading a whole key prefix in pages at one revision.

use margay_datastore::store::prefix_end;
use margay_datastore::{EtcdArgs, Store, StoreError};
use std::path::PathBuf;

/// Keys read per etcd request at first (a Calico cluster of 50,000 pods is far above gRPC's
/// default message size of 4 MiB when read in one answer). A page whose answer is still too
/// large (1,000 full /26 blocks are 10 MiB) is asked for again at half the size.
const PAGE: i64 = 1000;

/// Calico's etcd connection. (Their clap ids differ from [`EtcdArgs`]'s: margay's flags
/// are global, and a global flag's value reaches every argument with its id.)
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CalicoEtcdArgs {
    /// Calico's etcd endpoints, comma separated; Calico's ETCD_ENDPOINTS when unset, then
    /// margay's own etcd (Calico and margay sharing one).
    #[arg(
        id = "calico_endpoints",
        long = "calico-etcd-endpoints",
        value_delimiter = ','
    )]
    pub endpoints: Vec<String>,
    /// CA certificate of Calico's etcd (or ETCD_CA_CERT_FILE).
    #[arg(id = "calico_ca_cert_file", long = "calico-etcd-ca-cert-file")]
    pub ca: Option<PathBuf>,
    /// Client certificate for Calico's etcd (or ETCD_CERT_FILE).
    #[arg(id = "calico_cert_file", long = "calico-etcd-cert-file")]
    pub cert: Option<PathBuf>,
    /// Client key for Calico's etcd (or ETCD_KEY_FILE).
    #[arg(id = "calico_key_file", long = "calico-etcd-key-file")]
    pub key: Option<PathBuf>,
}

impl CalicoEtcdArgs {
    /// The connection to use: these flags, else Calico's variables, else `margay`'s (all of
    /// it, TLS files included, when no Calico endpoint is named anywhere).
    pub fn resolve(&self, margay: &EtcdArgs) -> EtcdArgs {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let endpoints = if !self.endpoints.is_empty() {
            self.endpoints.clone()
        } else if let Some(v) = var("ETCD_ENDPOINTS") {
            v.split(',').map(|e| e.trim().to_string()).collect()
        } else {
            return EtcdArgs {
                endpoints: margay.endpoints.clone(),
                ca: self.ca.clone().or_else(|| margay.ca.clone()),
                cert: self.cert.clone().or_else(|| margay.cert.clone()),
                key: self.key.clone().or_else(|| margay.key.clone()),
            };
        };
        let file = |given: &Option<PathBuf>, name: &str| {
            given.clone().or_else(|| var(name).map(PathBuf::from))
        };
        EtcdArgs {
            endpoints,
            ca: file(&self.ca, "ETCD_CA_CERT_FILE"),
            cert: file(&self.cert, "ETCD_CERT_FILE"),
            key: file(&self.key, "ETCD_KEY_FILE"),
        }
    }
}

/// Every key and value under `prefix`, read in pages at the revision of the first page;
/// `progress` is called with the running count after each page.
pub async fn read_prefix(
    store: &Store,
    prefix: &str,
    mut progress: impl FnMut(usize),
) -> Result<Vec<(String, Vec<u8>, i64)>, StoreError> {
    let mut kv = store.client().kv_client();
    let end = prefix_end(prefix);
    let mut from = prefix.as_bytes().to_vec();
    let mut revision = 0;
    let mut page = PAGE;
    let mut out = Vec::new();
    loop {
        let mut opts = etcd_client::GetOptions::new()
            .with_range(end.clone())
            .with_limit(page);
        if revision != 0 {
            opts = opts.with_revision(revision);
        }
        let resp = match kv.get(from.clone(), Some(opts)).await {
            Err(etcd_client::Error::GRpcStatus(s))
                if s.code() == tonic::Code::OutOfRange && page > 1 =>
            {
                page /= 2;
                continue;
            }
            r => r?,
        };
        if revision == 0 {
            revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        }
        for item in resp.kvs() {
            out.push((
                String::from_utf8_lossy(item.key()).into_owned(),
                item.value().to_vec(),
                item.mod_revision(),
            ));
        }
        progress(out.len());
        match resp.kvs().last() {
            Some(last) if resp.more() => {
                from = last.key().to_vec();
                from.push(0);
            }
            _ => return Ok(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_ends_after_the_prefix() {
        assert_eq!(prefix_end("/calico/"), b"/calico0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
    }
}
