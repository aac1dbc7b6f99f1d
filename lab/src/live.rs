//! Live changes under test: that a change shows within a time limit, and that the BGP sessions
//! it must leave alone were not reset (BIRD's `since` of each stays the same).

use std::time::{Duration, Instant};

use crate::Result;
use crate::bird::Bird;
use crate::process::HasLogs;

/// The sessions a change must not reset, as BIRD saw them before it: (BIRD, protocol, since).
pub struct Sessions<'a> {
    before: Vec<(&'a Bird, &'a str, String)>,
}

impl<'a> Sessions<'a> {
    /// Records the `since` of each BIRD protocol in `sessions` (each must exist).
    pub fn record(sessions: &[(&'a Bird, &'a str)]) -> Result<Sessions<'a>> {
        let mut before = Vec::new();
        for &(bird, proto) in sessions {
            let p = bird.protocol(proto)?.unwrap_or_else(|| {
                panic!("{}: no protocol {proto}", bird.name());
            });
            before.push((bird, proto, p.since));
        }
        Ok(Sessions { before })
    }

    /// Panics naming the first session that is no longer Established since the same time.
    pub fn assert_not_reset(&self) -> Result<()> {
        for (bird, proto, since) in &self.before {
            let now = bird
                .protocol(proto)?
                .unwrap_or_else(|| panic!("{}: protocol {proto} is gone", bird.name()));
            assert!(
                now.is_established() && now.same_session_since(since),
                "{} {proto} was reset: since {since}, now {now:?}",
                bird.name()
            );
        }
        Ok(())
    }
}

/// Polls `seen` every 10 ms until it holds and returns how long that took; panics, with `logs`,
/// once `limit` has passed (measured from `start`, when the change was made).
pub fn seen_within(
    what: &str,
    start: Instant,
    limit: Duration,
    logs: &dyn HasLogs,
    mut seen: impl FnMut() -> Result<bool>,
) -> Result<Duration> {
    loop {
        if seen()? {
            let took = start.elapsed();
            eprintln!("{what}: {took:?}");
            return Ok(took);
        }
        assert!(
            start.elapsed() < limit,
            "{what}: not seen within {limit:?}\n{}",
            logs.log_tails()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Checks for `period` that none of the BIRDs holds its prefix in `absent` (a route that policy
/// must keep from it).
pub fn never_learned(what: &str, period: Duration, absent: &[(&Bird, ipnet::IpNet)]) -> Result<()> {
    crate::process::holds_for(what, period, &[], || {
        for (bird, prefix) in absent {
            if !bird.route(*prefix).map_err(|e| e.to_string())?.is_empty() {
                return Err(format!("{} learned {prefix}", bird.name()));
            }
        }
        Ok(())
    })
}

/// The external router of the policy suites: BIRD at `me` in AS `asn`, originating `prefixes`,
/// peered with `peer` (AS `peer_as`) over IPv4 (protocol `m`) and IPv6 (protocol `m6`).
#[allow(clippy::too_many_arguments)]
pub fn external_router(
    lab: &crate::Lab,
    ns: &crate::Netns,
    name: &str,
    me: &crate::Addrs,
    peer: &crate::Addrs,
    asn: u32,
    peer_as: u32,
    prefixes: &[ipnet::IpNet],
) -> Result<Bird> {
    use std::net::IpAddr;
    let mut config = crate::BirdConfig::new(me.ip4())
        .neighbor(crate::BirdNeighbor::new(
            "m",
            IpAddr::V4(peer.ip4()),
            asn,
            peer_as,
        ))
        .neighbor(crate::BirdNeighbor::new(
            "m6",
            IpAddr::V6(peer.ip6()),
            asn,
            peer_as,
        ));
    for p in prefixes {
        config = config.originate(*p);
    }
    Bird::start(lab, ns, name, config)
}
