//! The watch fan-out benchmark at a reduced size (100 watchers, each with its own connection
//! and margay's own watch code, real etcd): every watcher sees every write, both when the
//! watchers talk to etcd and when they talk to two of etcd's gRPC proxies; and the proxies, not
//! etcd, then carry the deliveries. Functional facts only, never timing. Needs root
//! (namespaces) and Debian's etcd (scripts/install-deps.sh).

use std::time::Duration;

use margay_bench::sim::watchfan;

const WATCHERS: usize = 100;
const WRITES: usize = 5;

#[test]
fn every_watcher_sees_every_write_directly_and_through_grpc_proxies() {
    for proxies in [0u8, 2] {
        let r = watchfan::run(WATCHERS, proxies, WRITES, Duration::from_millis(50), |s| {
            eprintln!("watchfan (proxies={proxies}): {s}")
        })
        .unwrap_or_else(|e| panic!("fan-out run with {proxies} proxies: {e:#}"));
        assert_eq!(r.watchers, WATCHERS);
        assert_eq!(r.missing, 0, "deliveries missing with {proxies} proxies");
        assert_eq!(r.each.len(), WATCHERS * WRITES);
        assert_eq!(r.to_all.len(), WRITES);
        if proxies == 0 {
            assert_eq!(r.proxies.peak_rss_kib, 0, "no proxy should have run");
        } else {
            assert!(
                r.proxies.peak_rss_kib > 0,
                "the proxies' cost was not read: {:?}",
                r.proxies
            );
        }
    }
}
