//! What every margay daemon and margayctl share beyond the datastore: the `--log-format` /
//! `--log-level` flags and the subscriber they install, the `Secret` newtype that keeps
//! passwords and keys out of logs, and the peer-credential check on the gRPC unix sockets.

pub mod logging;
pub mod peer_cred;
pub mod secret;

pub use logging::{LogArgs, LogFormat};
pub use peer_cred::{AuthorizedIncoming, SocketAccess};
pub use secret::Secret;
