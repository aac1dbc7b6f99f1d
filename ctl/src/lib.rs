//! margayctl's library: reading and writing the cluster's resources and IPAM in etcd, and
//! rendering them and the daemons' answers the way operators know it from calicoctl (the
//! channel to the daemons' sockets is `margay_common::uds`).

pub mod explain;
pub mod get;
pub mod ipam;
pub mod label;
pub mod matrix;
pub mod migrate;
pub mod resources;
pub mod status;
