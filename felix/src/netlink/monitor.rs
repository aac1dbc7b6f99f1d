//! Change notifications: a socket joined to the link and IPv4/IPv6 route multicast groups,
//! decoded into [`Event`]s.

use std::time::Duration;

use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::RouteNetlinkMessage;

use super::NetlinkError;
use super::link::Link;
use super::route::KernelRoute;
use super::socket::NlSocket;

const RTNLGRP_LINK: u32 = 1;
const RTNLGRP_IPV4_ROUTE: u32 = 7;
const RTNLGRP_IPV6_ROUTE: u32 = 11;

/// One change the kernel told us about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    RouteAdded(KernelRoute),
    RouteDeleted(KernelRoute),
    LinkChanged(Link),
    LinkDeleted(Link),
    /// The kernel dropped notifications (our socket buffer was full): only a full resync
    /// brings the cached view back in line.
    Overrun,
}

/// A subscription to route and link changes in the namespace it was opened in.
pub struct Monitor {
    sock: NlSocket,
}

impl Monitor {
    pub(crate) fn open() -> Result<Monitor, NetlinkError> {
        Ok(Monitor {
            sock: NlSocket::subscribe(&[RTNLGRP_LINK, RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV6_ROUTE])?,
        })
    }

    /// Waits up to `timeout` for notifications; returns those of one datagram (maybe none).
    pub fn next(&mut self, timeout: Duration) -> Result<Vec<Event>, NetlinkError> {
        let mut pfd = libc::pollfd {
            fd: self.sock.raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd for the duration of the call.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc <= 0 {
            return Ok(Vec::new());
        }
        let msgs = match self.sock.recv_notifications() {
            Ok(m) => m,
            Err(NetlinkError::Overrun) => return Ok(vec![Event::Overrun]),
            Err(e) => return Err(e),
        };
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m.payload {
                NetlinkPayload::InnerMessage(inner) => decode(inner),
                _ => None,
            })
            .collect())
    }
}

fn decode(msg: RouteNetlinkMessage) -> Option<Event> {
    match msg {
        RouteNetlinkMessage::NewRoute(r) => KernelRoute::from_message(&r).map(Event::RouteAdded),
        RouteNetlinkMessage::DelRoute(r) => KernelRoute::from_message(&r).map(Event::RouteDeleted),
        RouteNetlinkMessage::NewLink(l) => Link::from_message(&l).map(Event::LinkChanged),
        RouteNetlinkMessage::DelLink(l) => Link::from_message(&l).map(Event::LinkDeleted),
        _ => None,
    }
}
