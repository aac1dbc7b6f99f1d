//! margay's cluster model and its etcd backend.
//!
//! - [`resources`]: Node, BGPConfiguration, BGPPeer, IPPool, WorkloadEndpoint,
//!   FelixConfiguration in the shapes of Calico's `projectcalico.org/v3` API (also accepted as
//!   `margay.io/v1`), their defaults and validation.
//! - [`selector`]: Calico's label selector language.
//! - [`store`]: the etcd client: get, list, create, update and delete with compare-and-swap on
//!   revisions, and [`watch`]es that survive compaction and etcd restarts.
//! - [`ipam`]: address blocks claimed by node affinity, handles, borrowing, leak checks.
//! - [`args`]: the `--etcd-endpoints` / TLS flags every binary flattens in.
//! - [`migrate`]: importing a Calico etcd datastore (key layout, record translation, plan).
//! - [`liveness`]: node liveness leases and the election of the one IPAM collector.
//! - [`probe`]: whether etcd answers now, for the daemons' readiness.
//!
//! # Key layout in etcd
//!
//! Values are JSON. Every key lives under `/margay/`:
//!
//! ```text
//! /margay/resources/v1/<plural>/<name>                  cluster-scoped resources
//!        e.g. /margay/resources/v1/nodes/node-1
//!             /margay/resources/v1/bgppeers/tor1
//!             /margay/resources/v1/bgpconfigurations/default
//!             /margay/resources/v1/ippools/default-ipv4-ippool
//!             /margay/resources/v1/felixconfigurations/default
//! /margay/resources/v1/workloadendpoints/<namespace>/<name>
//! /margay/ipam/v1/blocks/<block cidr, '/' written '-'>  e.g. .../blocks/10.244.0.64-26
//! /margay/ipam/v1/affinities/<node>/<block cidr>        one per block a node claimed
//! /margay/ipam/v1/handles/<handle id>                   one per container
//! /margay/ipam/v1/config                                the IPAM configuration
//! /margay/ipam/v1/liveness/<node>                       leased: felix alive on the node
//! /margay/ipam/v1/nodes-seen/<node>                     felix ran on the node once
//! /margay/election/ipam-collector/...                   the collector's election
//! ```
//!
//! A resource's `metadata.resourceVersion` is the key's etcd `mod_revision`; an update with
//! it set is a compare-and-swap against it.

pub mod args;
pub mod ipam;
pub mod liveness;
pub mod migrate;
pub mod policy;
pub mod probe;
pub mod resources;
pub mod selector;
pub mod store;
pub mod watch;

#[cfg(feature = "testing")]
pub mod testing;

pub use args::{EtcdArgs, EtcdArgsError};
pub use store::{CasWrite, Store, StoreError, Versioned};
pub use watch::{Watch, WatchEvent};
