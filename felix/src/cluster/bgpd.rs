//! The bgpd feed, over bgpd's gRPC unix socket: the routes it learned (WatchRoutes: the
//! table, SYNCED, then changes) come in; the prefixes this node originates go out
//! (SetOriginated, the whole set, again after every reconnect).
//!
//! A lost stream keeps the routes felix has (the kernel routes stay; nothing flaps while bgpd
//! restarts). After a reconnect the fresh table is collected aside and replaces the old one
//! at SYNCED; a route the old table had and the fresh one lacks is kept as *stale* (a
//! restarted bgpd syncs before its sessions are up) until every peer of bgpd has been
//! Established for [`SETTLED`], or [`STALE_GRACE`] has passed, or bgpd withdraws it. Only
//! then is it really gone.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use margay_proto::bgp::v1::bgp_client::BgpClient;
use margay_proto::bgp::v1::route_event::Kind;
use margay_proto::bgp::v1::{
    ListPeersRequest, RouteEvent, SetOriginatedRequest, WatchRoutesRequest,
};
use tokio::sync::watch;
use tonic::transport::Channel;
use tracing::{debug, info, warn};

/// Backoff between reconnects: from MIN to MAX, doubling.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long every peer must have been Established before stale routes are dropped.
pub const SETTLED: Duration = Duration::from_secs(3);
/// Longest a stale route is kept after a reconnect.
pub const STALE_GRACE: Duration = Duration::from_secs(90);
/// How often bgpd's peers are checked while stale routes are held.
const STALE_POLL: Duration = Duration::from_millis(500);

/// What felix knows from bgpd.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BgpView {
    /// A full table has been received at least once.
    pub synced: bool,
    /// Connected now: the route stream is open and bgpd has this node's originated set (the
    /// routes are bgpd's complete table only once `synced`).
    pub connected: bool,
    /// Best paths learned from peers: prefix → next hops (never empty; the best path's first,
    /// then the others of a multipath route).
    pub routes: BTreeMap<IpNet, Vec<IpAddr>>,
    /// The prefixes whose routes changed (a whole new table: everything), for readers that
    /// take only those.
    pub changes: crate::changelog::ChangeLog<IpNet>,
}

/// Why a session with bgpd ended.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error(transparent)]
    Connect(#[from] margay_common::uds::UdsError),
    #[error("{call}: {status}")]
    Rpc {
        call: &'static str,
        status: Box<tonic::Status>,
    },
    #[error("route stream ended")]
    Ended,
}

/// How long felix waits to connect to bgpd's socket.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A route event as (prefix, Some(next hops)) for an add, (prefix, None) for a withdraw;
/// `None` for what felix ignores (locally originated routes, SYNCED, unparsable input).
///
/// The next hops are `multipath_next_hops` when bgpd sends them (a multipath route; the best
/// path's first), else `next_hop` alone (a single path, or a bgpd from before multipath).
fn route_change(ev: &RouteEvent) -> Option<(IpNet, Option<Vec<IpAddr>>)> {
    let r = ev.route.as_ref()?;
    let prefix = match r.prefix.parse::<IpNet>() {
        Ok(p) => p.trunc(),
        Err(_) => {
            warn!(prefix = %r.prefix, "bgpd sent a prefix that does not parse; ignored");
            return None;
        }
    };
    match Kind::try_from(ev.kind) {
        Ok(Kind::Add) if r.local => Some((prefix, None)),
        Ok(Kind::Add) => {
            let texts: Vec<&str> = if r.multipath_next_hops.is_empty() {
                vec![r.next_hop.as_str()]
            } else {
                r.multipath_next_hops.iter().map(String::as_str).collect()
            };
            let mut hops = Vec::with_capacity(texts.len());
            for t in texts {
                match t.parse::<IpAddr>() {
                    Ok(nh) if !hops.contains(&nh) => hops.push(nh),
                    Ok(_) => {}
                    Err(_) => {
                        warn!(%prefix, next_hop = %t, "bgpd sent a next hop that does not parse; ignored")
                    }
                }
            }
            Some((prefix, (!hops.is_empty()).then_some(hops)))
        }
        Ok(Kind::Withdraw) => Some((prefix, None)),
        _ => None,
    }
}

fn apply(table: &mut BTreeMap<IpNet, Vec<IpAddr>>, change: (IpNet, Option<Vec<IpAddr>>)) {
    match change {
        (p, Some(nh)) => {
            table.insert(p, nh);
        }
        (p, None) => {
            table.remove(&p);
        }
    }
}

/// Follows bgpd at `socket` until `view`'s receivers are gone: reconnects with backoff,
/// re-sends the originated set after each reconnect and whenever it changes.
pub async fn follow(
    socket: PathBuf,
    mut originate: watch::Receiver<Option<BTreeSet<IpNet>>>,
    view: watch::Sender<BgpView>,
) {
    let mut backoff = MIN_BACKOFF;
    let mut last_error: Option<String> = None;
    loop {
        let res = session(&socket, &mut originate, &view, &mut backoff).await;
        let kept = view.borrow().routes.len();
        view.send_if_modified(|v| std::mem::replace(&mut v.connected, false));
        if view.is_closed() {
            return;
        }
        if let Err(e) = res {
            let text = e.to_string();
            if last_error.as_deref() != Some(&text) {
                warn!(error = %text, kept_routes = kept, "bgpd: no route stream; keeping the routes, reconnecting");
                last_error = Some(text);
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn set_originated(
    client: &mut BgpClient<Channel>,
    set: &BTreeSet<IpNet>,
) -> Result<(), FeedError> {
    client
        .set_originated(SetOriginatedRequest {
            prefixes: set.iter().map(|p| p.to_string()).collect(),
        })
        .await
        .map_err(|status| FeedError::Rpc {
            call: "SetOriginated",
            status: Box::new(status),
        })?;
    debug!(prefixes = set.len(), "bgpd: originated set sent");
    Ok(())
}

async fn session(
    socket: &Path,
    originate: &mut watch::Receiver<Option<BTreeSet<IpNet>>>,
    view: &watch::Sender<BgpView>,
    backoff: &mut Duration,
) -> Result<(), FeedError> {
    let channel = margay_common::uds::channel(socket, CONNECT_TIMEOUT).await?;
    let mut client = BgpClient::new(channel);
    let mut stream = client
        .watch_routes(WatchRoutesRequest {
            family: String::new(),
        })
        .await
        .map_err(|status| FeedError::Rpc {
            call: "WatchRoutes",
            status: Box::new(status),
        })?
        .into_inner();
    let current = originate.borrow_and_update().clone();
    if let Some(set) = current {
        set_originated(&mut client, &set).await?;
    }
    info!(socket = %socket.display(), "bgpd: connected");
    view.send_if_modified(|v| !std::mem::replace(&mut v.connected, true));
    *backoff = MIN_BACKOFF;
    // The table being received; replaces the published one at SYNCED. On the first connection
    // there is no published table to protect: routes go live as they come (felix keeps the
    // remote routes they lack in the kernel until SYNCED).
    let mut fresh: Option<BTreeMap<IpNet, Vec<IpAddr>>> = view.borrow().synced.then(BTreeMap::new);
    // Routes kept from before the reconnect that the fresh table lacks.
    let mut stale: BTreeSet<IpNet> = BTreeSet::new();
    let mut stale_deadline = tokio::time::Instant::now();
    let mut poll = tokio::time::interval(STALE_POLL);
    loop {
        tokio::select! {
            _ = poll.tick(), if !stale.is_empty() => {
                let settled = peers_settled(&mut client).await?;
                if settled || tokio::time::Instant::now() >= stale_deadline {
                    let gone = std::mem::take(&mut stale);
                    info!(routes = gone.len(), settled, "bgpd: dropping routes its fresh table lacks");
                    view.send_modify(|v| {
                        for p in &gone {
                            if v.routes.remove(p).is_some() {
                                v.changes.changed(*p);
                            }
                        }
                    });
                }
            }
            msg = stream.message() => {
                // The rest of a burst (a session's routes flushed at once) is already read:
                // take it too, so felix builds one model and writes one batch for the burst,
                // not one per route.
                let mut burst = vec![msg];
                while burst.len() < BURST {
                    match ready(stream.message()) {
                        Some(m) => burst.push(m),
                        None => break,
                    }
                }
                let mut live = Vec::new();
                for msg in burst {
                    let ev = match msg {
                        Ok(Some(ev)) => ev,
                        Ok(None) => {
                            publish(view, &mut live);
                            return Err(FeedError::Ended);
                        }
                        Err(status) => {
                            publish(view, &mut live);
                            return Err(FeedError::Rpc { call: "WatchRoutes", status: Box::new(status) });
                        }
                    };
                    if Kind::try_from(ev.kind) == Ok(Kind::Synced) {
                        publish(view, &mut live);
                        if let Some(mut table) = fresh.take() {
                            let old = view.borrow().routes.clone();
                            for (p, nh) in old {
                                if let std::collections::btree_map::Entry::Vacant(e) = table.entry(p) {
                                    stale.insert(p);
                                    e.insert(nh);
                                }
                            }
                            if !stale.is_empty() {
                                stale_deadline = tokio::time::Instant::now() + STALE_GRACE;
                            }
                            info!(routes = table.len(), stale = stale.len(), "bgpd: route table synced");
                            view.send_modify(|v| {
                                v.routes = table;
                                v.changes.changed_all();
                                v.synced = true;
                                v.connected = true;
                            });
                        } else if !view.borrow().synced {
                            info!(routes = view.borrow().routes.len(), "bgpd: route table complete");
                            view.send_modify(|v| v.synced = true);
                        }
                        continue;
                    }
                    let Some(change) = route_change(&ev) else { continue };
                    debug!(target: "route_path", prefix = %change.0, withdraw = change.1.is_none(), "felix: route event from bgpd");
                    stale.remove(&change.0);
                    match fresh.as_mut() {
                        Some(table) => apply(table, change),
                        None => live.push(change),
                    }
                }
                publish(view, &mut live);
            }
            changed = originate.changed() => {
                if changed.is_err() {
                    // felix is stopping.
                    return Ok(());
                }
                let current = originate.borrow_and_update().clone();
                if let Some(set) = current {
                    set_originated(&mut client, &set).await?;
                }
            }
        }
    }
}

/// Most route events taken as one burst.
const BURST: usize = 4096;

/// The stream's next message if it is already here (never waits).
fn ready<F: std::future::Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

/// Applies a burst of live changes to the view: one notification for all of them, none when
/// nothing changed.
fn publish(view: &watch::Sender<BgpView>, live: &mut Vec<(IpNet, Option<Vec<IpAddr>>)>) {
    if live.is_empty() {
        return;
    }
    let changes = std::mem::take(live);
    view.send_if_modified(|v| {
        let mut modified = false;
        for change in changes {
            let prefix = change.0;
            let before = v.routes.get(&prefix).cloned();
            apply(&mut v.routes, change);
            if before.as_ref() != v.routes.get(&prefix) {
                v.changes.changed(prefix);
                modified = true;
            }
        }
        modified
    });
}

/// Whether every peer of bgpd has been Established for at least [`SETTLED`].
async fn peers_settled(client: &mut BgpClient<Channel>) -> Result<bool, FeedError> {
    let peers = client
        .list_peers(ListPeersRequest {})
        .await
        .map_err(|status| FeedError::Rpc {
            call: "ListPeers",
            status: Box::new(status),
        })?
        .into_inner()
        .peers;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    Ok(peers
        .iter()
        .all(|p| p.state == "Established" && now - p.since >= SETTLED.as_secs() as i64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use margay_proto::bgp::v1::Route;

    fn ev(kind: Kind, prefix: &str, nh: &str, local: bool) -> RouteEvent {
        RouteEvent {
            kind: kind as i32,
            route: Some(Route {
                prefix: prefix.into(),
                next_hop: nh.into(),
                local,
                ..Default::default()
            }),
        }
    }

    #[test]
    fn adds_withdraws_and_ignores_local_routes() {
        let mut t = BTreeMap::new();
        apply(
            &mut t,
            route_change(&ev(Kind::Add, "10.244.1.0/26", "10.0.0.2", false)).unwrap(),
        );
        assert_eq!(t.len(), 1);
        // Our own block, seen through bgpd, is not a remote route.
        let local = route_change(&ev(Kind::Add, "10.244.0.0/26", "0.0.0.0", true)).unwrap();
        assert_eq!(local.1, None);
        apply(&mut t, local);
        assert_eq!(t.len(), 1);
        apply(
            &mut t,
            route_change(&ev(Kind::Withdraw, "10.244.1.0/26", "", false)).unwrap(),
        );
        assert!(t.is_empty());
        assert!(route_change(&ev(Kind::Add, "bogus", "10.0.0.2", false)).is_none());
    }

    #[test]
    fn multipath_next_hops_replace_the_single_one() {
        let mut e = ev(Kind::Add, "10.244.1.0/26", "10.0.1.1", false);
        let one = route_change(&e).unwrap();
        assert_eq!(one.1, Some(vec!["10.0.1.1".parse().unwrap()]));
        if let Some(r) = e.route.as_mut() {
            r.multipath_next_hops = vec!["10.0.1.1".into(), "10.0.2.1".into()];
        }
        let two = route_change(&e).unwrap();
        assert_eq!(
            two.1,
            Some(vec![
                "10.0.1.1".parse().unwrap(),
                "10.0.2.1".parse().unwrap()
            ])
        );
    }
}
