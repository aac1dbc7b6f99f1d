//! Who may talk to a daemon's gRPC unix socket. The file is mode 0600, and on top of that every
//! accepted connection's peer credentials (SO_PEERCRED) are checked, so a `chmod` of the socket
//! does not open the API: root, or the one uid an operator allowed, and nobody else.

use std::collections::HashSet;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::net::{UnixListener, UnixStream};
use tracing::{debug, warn};

/// Which clients a socket accepts: uid 0 always, plus `allowed_uid` when set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SocketAccess {
    pub allowed_uid: Option<u32>,
}

impl SocketAccess {
    /// Whether a client running as `uid` may use the socket.
    pub fn allows(&self, uid: u32) -> bool {
        uid == 0 || self.allowed_uid == Some(uid)
    }
}

/// The accepted connections of a listener that pass the peer-credential check; the others are
/// closed at once, and each refused uid is logged at warn the first time (debug after, so a
/// client retrying in a loop does not flood the log).
pub struct AuthorizedIncoming {
    listener: UnixListener,
    access: SocketAccess,
    refused: HashSet<u32>,
}

impl AuthorizedIncoming {
    pub fn new(listener: UnixListener, access: SocketAccess) -> AuthorizedIncoming {
        AuthorizedIncoming {
            listener,
            access,
            refused: HashSet::new(),
        }
    }

    /// Whether this connection may stay, logging the refusal when not.
    fn admit(&mut self, stream: &UnixStream) -> bool {
        let cred = match stream.peer_cred() {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "unix socket client refused: its credentials cannot be read");
                return false;
            }
        };
        if self.access.allows(cred.uid()) {
            return true;
        }
        let (uid, pid) = (cred.uid(), cred.pid());
        if self.refused.insert(uid) {
            warn!(
                uid,
                pid, "unix socket client refused: only root (or --socket-allowed-uid) may connect"
            );
        } else {
            debug!(uid, pid, "unix socket client refused again");
        }
        false
    }
}

impl tokio_stream::Stream for AuthorizedIncoming {
    type Item = std::io::Result<UnixStream>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match self.listener.poll_accept(cx) {
                Poll::Ready(Ok((stream, _))) => {
                    if self.admit(&stream) {
                        return Poll::Ready(Some(Ok(stream)));
                    }
                    // Dropping the stream closes the refused connection; wait for the next.
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_always_and_only_the_allowed_uid_besides() {
        let only_root = SocketAccess::default();
        assert!(only_root.allows(0));
        assert!(!only_root.allows(1000));
        let with = SocketAccess {
            allowed_uid: Some(1000),
        };
        assert!(with.allows(0) && with.allows(1000) && !with.allows(65534));
    }
}
