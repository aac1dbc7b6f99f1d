//! The default IPPool, as calico-node makes it from `CALICO_IPV4POOL_*`: when felix starts in
//! cluster mode with `--default-ipv4-pool-cidr` and the cluster has no IPPool at all, it creates
//! `default-ipv4-ippool`. Any existing pool (one made by hand, or by another node a moment
//! earlier) means there is nothing to do: the pool is created at most once, never updated, so a
//! DaemonSet's setting cannot rewrite a pool an operator changed.

use clap::Args;
use ipnet::IpNet;
use margay_datastore::resources::{EncapMode, IpPool, IpPoolSpec, Resource};
use margay_datastore::{Store, StoreError};

/// Calico's name for the pool it creates.
pub const NAME: &str = "default-ipv4-ippool";

/// What the default pool is made of (flags and environment, as calico-node reads them).
#[derive(Debug, Clone, Args)]
pub struct DefaultPoolArgs {
    /// Create this IPv4 pool at startup when the cluster has no IPPool (calico-node's
    /// CALICO_IPV4POOL_CIDR). Unset: no pool is created.
    #[arg(long = "default-ipv4-pool-cidr", env = "MARGAY_IPV4POOL_CIDR")]
    pub cidr: Option<ipnet::Ipv4Net>,
    /// Its block prefix length, 20..=32.
    #[arg(
        long = "default-ipv4-pool-block-size",
        env = "MARGAY_IPV4POOL_BLOCK_SIZE",
        default_value_t = 26
    )]
    pub block_size: u8,
    /// Its IP-in-IP mode: Never, Always or CrossSubnet.
    #[arg(
        long = "default-ipv4-pool-ipip",
        env = "MARGAY_IPV4POOL_IPIP",
        default_value = "Never",
        value_parser = parse_mode
    )]
    pub ipip: EncapMode,
    /// Its VXLAN mode: Never, Always or CrossSubnet (not together with IP-in-IP).
    #[arg(
        long = "default-ipv4-pool-vxlan",
        env = "MARGAY_IPV4POOL_VXLAN",
        default_value = "Never",
        value_parser = parse_mode
    )]
    pub vxlan: EncapMode,
    /// Whether pods' traffic to outside the pools is masqueraded.
    #[arg(
        long = "default-ipv4-pool-nat-outgoing",
        env = "MARGAY_IPV4POOL_NAT_OUTGOING",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub nat_outgoing: bool,
}

/// Reads an encapsulation mode as Calico spells it (case-insensitive).
fn parse_mode(s: &str) -> Result<EncapMode, String> {
    match s.to_ascii_lowercase().as_str() {
        "never" => Ok(EncapMode::Never),
        "always" => Ok(EncapMode::Always),
        "crosssubnet" | "cross-subnet" => Ok(EncapMode::CrossSubnet),
        _ => Err(format!("{s:?}: use Never, Always or CrossSubnet")),
    }
}

impl DefaultPoolArgs {
    /// The pool to create, checked as `margayctl apply` would check it; `None` without a CIDR.
    /// The error names the field at fault.
    pub fn resource(&self) -> Result<Option<IpPool>, String> {
        let Some(cidr) = self.cidr else {
            return Ok(None);
        };
        let spec = IpPoolSpec {
            cidr: IpNet::V4(cidr.trunc()).to_string(),
            block_size: Some(self.block_size),
            ipip_mode: Some(self.ipip),
            vxlan_mode: Some(self.vxlan),
            nat_outgoing: self.nat_outgoing,
            ..IpPoolSpec::default()
        };
        let pool = Resource::new(NAME, spec);
        pool.validate().map_err(|e| e.to_string())?;
        Ok(Some(pool))
    }
}

/// What [`ensure`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The pool was created by this call.
    Created,
    /// The cluster already has these pools; nothing was written.
    Exists(Vec<String>),
}

/// Creates `pool` unless the cluster has any IPPool (a concurrent creation by another node
/// counts as existing).
pub async fn ensure(store: &Store, pool: &IpPool) -> Result<Outcome, StoreError> {
    let (pools, _) = store.list::<IpPoolSpec>().await?;
    if !pools.is_empty() {
        return Ok(Outcome::Exists(
            pools.iter().map(|p| p.metadata.name.clone()).collect(),
        ));
    }
    match store.create(pool).await {
        Ok(_) => Ok(Outcome::Created),
        Err(StoreError::AlreadyExists { .. }) => Ok(Outcome::Exists(vec![NAME.to_string()])),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(cidr: Option<&str>) -> DefaultPoolArgs {
        DefaultPoolArgs {
            cidr: cidr.map(|c| c.parse().expect("test CIDR")),
            block_size: 26,
            ipip: EncapMode::Never,
            vxlan: EncapMode::Never,
            nat_outgoing: true,
        }
    }

    #[test]
    fn no_cidr_means_no_pool() {
        assert_eq!(args(None).resource(), Ok(None));
    }

    #[test]
    fn builds_calicos_default_pool_from_the_settings() {
        let mut a = args(Some("10.123.4.5/16"));
        a.vxlan = EncapMode::CrossSubnet;
        let pool = a.resource().expect("valid").expect("a pool");
        assert_eq!(pool.metadata.name, NAME);
        assert_eq!(pool.spec.cidr, "10.123.0.0/16");
        assert_eq!(pool.spec.vxlan(), EncapMode::CrossSubnet);
        assert!(pool.spec.nat_outgoing);
    }

    #[test]
    fn a_bad_setting_names_the_field() {
        let mut a = args(Some("10.123.0.0/16"));
        a.block_size = 12;
        let e = a.resource().expect_err("block size 12 is refused");
        assert!(e.contains("spec.blockSize"), "{e}");
        let mut a = args(Some("10.123.0.0/16"));
        a.ipip = EncapMode::Always;
        a.vxlan = EncapMode::Always;
        let e = a.resource().expect_err("both encapsulations are refused");
        assert!(e.contains("spec.vxlanMode"), "{e}");
    }

    #[test]
    fn modes_parse_as_calico_spells_them() {
        assert_eq!(parse_mode("CrossSubnet"), Ok(EncapMode::CrossSubnet));
        assert_eq!(parse_mode("always"), Ok(EncapMode::Always));
        assert!(parse_mode("sometimes").is_err());
    }
}
