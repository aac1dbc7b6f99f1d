//! The network-namespace lab: real daemons (BIRD, margay-bgpd) in throwaway namespaces.
//!
//! A test builds its topology from a [`Lab`]: namespaces ([`Netns`]) joined by veth pairs or a
//! switch (a bridge in its own namespace), processes started inside them ([`Process`]), and the
//! drivers for the daemons under test ([`Bird`], [`Bgpd`], [`Felix`], [`Etcd`]). Everything is removed on drop, also
//! when the test panics; a failing test keeps its logs directory and says where it is. Each
//! guard also has an `into_kept` that lets its part outlive it, for [`labctl`] (the
//! `margay-lab` command), which can leave a lab running.

pub mod bgpd;
pub mod bird;
pub mod calico;
pub mod error;
pub mod etcd;
pub mod etcd_proxy;
pub mod felix;
pub mod flows;
pub mod lab;
pub mod labctl;
pub mod live;
pub mod netns;
pub mod process;
pub mod sim;

pub use bgpd::{
    Bgpd, BgpdConfig, BgpdNeighbor, BgpdPeerType, ClusterArgs, NextHopMode, bgpd_binary,
    margay_binary,
};
pub use bird::{Bird, BirdConfig, BirdNeighbor, BirdProtocol, BirdRoute, Channel, ExportPolicy};
pub use error::LabError;
pub use etcd::{Etcd, yaml_scalar};
pub use etcd_proxy::{EtcdProxy, start_proxies};
pub use felix::{Felix, FelixArgs, felix_binary};
pub use lab::{Addrs, Lab, LabSwitch, LinkAddrs, Subnet, block4, block6};
pub use netns::{Netns, Switch, list_namespaces};
pub use process::{
    HasLogs, Process, holds_for, wait_for, wait_for_every, wait_for_no_route, wait_for_route,
};

/// The lab's result type.
pub type Result<T, E = LabError> = std::result::Result<T, E>;
