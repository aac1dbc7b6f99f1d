//! margayctl's library: talking to the daemons over their unix sockets, reading and writing
//! the cluster's resources and IPAM in etcd, and rendering it all the way operators know it
//! from calicoctl.

pub mod connect;
pub mod get;
pub mod ipam;
pub mod resources;
pub mod status;
