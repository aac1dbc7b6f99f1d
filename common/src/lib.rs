//! What every margay daemon and margayctl share beyond the datastore: the `--log-format` /
//! `--log-level` flags and the subscriber they install, the `Secret` newtype that keeps
//! passwords and keys out of logs, the peer-credential check on the gRPC unix sockets (feature
//! `daemon`), and the client channel over those sockets (feature `uds`, all the CNI plugin takes).

#[cfg(feature = "daemon")]
pub mod logging;
#[cfg(feature = "daemon")]
pub mod peer_cred;
#[cfg(feature = "daemon")]
pub mod secret;
#[cfg(feature = "uds")]
pub mod uds;

#[cfg(feature = "daemon")]
pub use logging::{LogArgs, LogFormat};
#[cfg(feature = "daemon")]
pub use peer_cred::{AuthorizedIncoming, SocketAccess};
#[cfg(feature = "daemon")]
pub use secret::Secret;
