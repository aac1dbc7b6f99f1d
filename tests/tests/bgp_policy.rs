//! BGP policy with real BIRD: margay-bgpd between two external BIRD routers in different ASes
//! is no transit path between them unless a `source = "remote-peers"` filter says so; filters,
//! pools and communities from the TOML file apply, and a reload (SIGHUP) changes them on the
//! live sessions, without a reset, in well under a second. IPv4 and IPv6.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use margay_lab::{
    Addrs, Bgpd, BgpdConfig, BgpdNeighbor, Bird, BirdConfig, BirdNeighbor, Lab, LabSwitch, Netns,
    Result, block4, block6, holds_for,
    live::{Sessions, external_router, never_learned, seen_within},
};

/// Time for sessions to come up and first routes to arrive.
const UP: Duration = Duration::from_secs(45);
/// A policy change must be seen on BIRD's side within this (the bound is 1 s).
const LIVE: Duration = Duration::from_millis(1000);
const CLUSTER_AS: u32 = 64512;
const T1_AS: u32 = 65101;
const T2_AS: u32 = 65102;

/// margay `m` between BIRDs `t1` and `t2` on one switch, one session per family to each.
/// Fields drop in order: the daemons before their namespaces, the lab last.
struct Rig {
    m: Bgpd,
    t1: Bird,
    t2: Bird,
    am: Addrs,
    a1: Addrs,
    a2: Addrs,
    /// What t1 and t2 originate (v4, v6).
    k1: (IpNet, IpNet),
    k2: (IpNet, IpNet),
    /// margay's pool blocks: `pool` (exported) and `hidden` (`export = false`), v4 and v6.
    pool: (IpNet, IpNet),
    hidden: IpNet,
    _namespaces: (Netns, Netns, Netns),
    _switch: LabSwitch,
    lab: Lab,
}

fn v4(a: &Addrs) -> IpAddr {
    IpAddr::V4(a.ip4())
}
fn v6(a: &Addrs) -> IpAddr {
    IpAddr::V6(a.ip6())
}

impl Rig {
    fn start(test: &str) -> Result<Rig> {
        let lab = Lab::new(test)?;
        let sw = lab.switch("sw")?;
        let (nm, n1, n2) = (lab.netns("m")?, lab.netns("t1")?, lab.netns("t2")?);
        let (am, a1, a2) = (sw.attach(&nm)?, sw.attach(&n1)?, sw.attach(&n2)?);
        let k1 = (IpNet::V4(block4()), IpNet::V6(block6()));
        let k2 = (IpNet::V4(block4()), IpNet::V6(block6()));
        let pool = (IpNet::V4(block4()), IpNet::V6(block6()));
        let hidden = IpNet::V4(block4());
        let t1 = external_router(&lab, &n1, "t1", &a1, &am, T1_AS, CLUSTER_AS, &[k1.0, k1.1])?;
        let t2 = external_router(&lab, &n2, "t2", &a2, &am, T2_AS, CLUSTER_AS, &[k2.0, k2.1])?;
        let mut rig = Rig {
            m: Bgpd::start(&lab, &nm, "m", BgpdConfig::new(am.ip4(), CLUSTER_AS))?,
            lab,
            t1,
            t2,
            am,
            a1,
            a2,
            k1,
            k2,
            pool,
            hidden,
            _namespaces: (nm, n1, n2),
            _switch: sw,
        };
        let config = rig.config(&[], &[], "", true);
        rig.m.reload(&rig.lab, config)?;
        for t in [&rig.t1, &rig.t2] {
            t.wait_established("m", UP)?;
            t.wait_established("m6", UP)?;
        }
        for k in [rig.k1.0, rig.k1.1, rig.k2.0, rig.k2.1] {
            rig.m.wait_route(k, UP, |_| Ok(()))?;
        }
        for t in [&rig.t1, &rig.t2] {
            t.wait_route(rig.pool.0, UP, |_| Ok(()))?;
            t.wait_route(rig.pool.1, UP, |_| Ok(()))?;
        }
        Ok(rig)
    }

    /// margay's file: it originates its pool blocks; `f1`/`f2` name the filters of t1's and
    /// t2's sessions (both families); `filters` holds the `[[filters]]` tables.
    fn config(&self, f1: &[&str], f2: &[&str], filters: &str, pool_export: bool) -> BgpdConfig {
        let policy = format!(
            "[[pools]]\ncidr = \"{}\"\nexport = {pool_export}\n\n\
             [[pools]]\ncidr = \"{}\"\n\n\
             [[pools]]\ncidr = \"{}\"\nexport = false\n\n\
             [[advertise]]\ncidr = \"{}\"\ncommunities = [\"65000:100\", \"65000:1:2\"]\n\n{filters}",
            self.pool.0, self.pool.1, self.hidden, self.pool.0
        );
        BgpdConfig::new(self.am.ip4(), CLUSTER_AS)
            .originate(self.pool.0)
            .originate(self.pool.1)
            .originate(self.hidden)
            .neighbor(BgpdNeighbor::new(v4(&self.a1), T1_AS).filters(f1))
            .neighbor(BgpdNeighbor::new(v6(&self.a1), T1_AS).filters(f1))
            .neighbor(BgpdNeighbor::new(v4(&self.a2), T2_AS).filters(f2))
            .neighbor(BgpdNeighbor::new(v6(&self.a2), T2_AS).filters(f2))
            .policy(&policy)
    }

    /// Reloads margay with `config` and waits until `seen` holds on BIRD's side; fails if
    /// that takes [`LIVE`] or longer, and if any session was reset. Returns the time it took.
    fn live_change(
        &mut self,
        config: BgpdConfig,
        what: &str,
        mut seen: impl FnMut(&Rig) -> Result<bool>,
    ) -> Result<Duration> {
        let before = Sessions::record(&[
            (&self.t1, "m"),
            (&self.t1, "m6"),
            (&self.t2, "m"),
            (&self.t2, "m6"),
        ])?;
        let start = Instant::now();
        self.m.reload(&self.lab, config)?;
        let took = seen_within(what, start, LIVE, &self.m, || seen(self))?;
        before.assert_not_reset()?;
        Ok(took)
    }
}

fn has(t: &Bird, prefix: IpNet) -> Result<bool> {
    Ok(!t.route(prefix)?.is_empty())
}

/// Default policy: neither BIRD learns the other's routes through margay; margay's pool block
/// carries the `[[advertise]]` communities, the `export = false` pool is never announced;
/// then a `source = "remote-peers"` accept for t2 turns transit on towards t2 only, live.
#[test]
fn no_transit_between_external_peers_until_a_remote_peers_filter_accepts() -> Result<()> {
    let mut rig = Rig::start("no_transit_between_external_peers_until_a_remote_peers_filter")?;
    let (k1, k2) = (rig.k1, rig.k2);
    never_learned(
        "no transit between t1 and t2",
        Duration::from_secs(3),
        &[
            (&rig.t1, k2.0),
            (&rig.t1, k2.1),
            (&rig.t2, k1.0),
            (&rig.t2, k1.1),
        ],
    )?;
    assert!(
        !has(&rig.t1, rig.hidden)?,
        "a pool with export = false is not announced"
    );
    let r = rig.t1.best_route(rig.pool.0)?.expect("pool block at t1");
    assert!(r.bgp.communities.contains(&(65000, 100)), "{r:?}");
    let large = r
        .bgp
        .other
        .get("large_community")
        .cloned()
        .unwrap_or_default();
    assert!(large.contains("(65000, 1, 2)"), "{r:?}");
    let r6 = rig.t1.best_route(rig.pool.1)?.expect("v6 pool block at t1");
    assert!(
        r6.bgp.communities.is_empty(),
        "the v6 pool is outside the advertisement: {r6:?}"
    );

    let transit = "[[filters]]\nname = \"transit\"\n\
                   [[filters.export-v4]]\naction = \"accept\"\nsource = \"remote-peers\"\n\
                   [[filters.export-v6]]\naction = \"accept\"\nsource = \"remote-peers\"\n";
    let config = rig.config(&[], &["transit"], transit, true);
    rig.live_change(config, "transit towards t2", |r| {
        Ok(has(&r.t2, k1.0)? && has(&r.t2, k1.1)?)
    })?;
    let r = rig.t2.best_route(k1.0)?.expect("k1 at t2");
    assert_eq!(r.bgp.as_path, vec![CLUSTER_AS, T1_AS], "{r:?}");
    holds_for(
        "still no transit towards t1",
        Duration::from_secs(2),
        &[],
        || match has(&rig.t1, k2.0) {
            Ok(false) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )?;
    Ok(())
}

/// Export and import filters, pools and IPv6 filters change live: each reload takes effect on
/// BIRD's side in under a second without resetting a session; an import change that accepts
/// again gets the routes back.
#[test]
fn filter_and_pool_changes_take_effect_live_without_a_reset() -> Result<()> {
    let mut rig = Rig::start("filter_and_pool_changes_take_effect_live_without_a_reset")?;
    let (k1, pool) = (rig.k1, rig.pool);
    let transit = "[[filters]]\nname = \"transit\"\n\
                   [[filters.export-v4]]\naction = \"accept\"\nsource = \"remote-peers\"\n\
                   [[filters.export-v6]]\naction = \"accept\"\nsource = \"remote-peers\"\n";
    let config = rig.config(&[], &["transit"], transit, true);
    rig.live_change(config, "transit on", |r| has(&r.t2, k1.0))?;

    // Export: t1 no longer gets the v4 pool block, nor the v6 one.
    let hide = format!(
        "{transit}[[filters]]\nname = \"hide\"\n\
         [[filters.export-v4]]\naction = \"reject\"\nmatch-operator = \"equal\"\ncidr = \"{}\"\n\
         [[filters.export-v6]]\naction = \"reject\"\nmatch-operator = \"in\"\ncidr = \"{}\"\n",
        pool.0, pool.1
    );
    let config = rig.config(&["hide"], &["transit"], &hide, true);
    rig.live_change(config, "export filter hides the pool from t1", |r| {
        Ok(!has(&r.t1, pool.0)? && !has(&r.t1, pool.1)?)
    })?;
    assert!(
        has(&rig.t2, pool.0)? && has(&rig.t2, pool.1)?,
        "t2 keeps them"
    );

    // Import: margay no longer accepts t1's v4 and v6 routes, so t2 loses them.
    let deny = format!(
        "{hide}[[filters]]\nname = \"deny\"\n\
         [[filters.import-v4]]\naction = \"reject\"\nmatch-operator = \"equal\"\ncidr = \"{}\"\n\
         [[filters.import-v6]]\naction = \"reject\"\nmatch-operator = \"equal\"\ncidr = \"{}\"\n",
        k1.0, k1.1
    );
    let config = rig.config(&["hide", "deny"], &["transit"], &deny, true);
    rig.live_change(config, "import filter drops t1's routes", |r| {
        Ok(!has(&r.t2, k1.0)? && !has(&r.t2, k1.1)?)
    })?;
    let p = rig.m.peer(v4(&rig.a1))?.expect("t1 peer");
    assert!(
        p.prefixes_received > p.prefixes_accepted,
        "rejected routes count as received: {p:?}"
    );

    // Import accepts again: the routes margay held as filtered come back (it also asks t1
    // for a route refresh).
    let config = rig.config(&["hide"], &["transit"], &hide, true);
    rig.live_change(
        config,
        "import filter removed: held routes accepted again",
        |r| Ok(has(&r.t2, k1.0)? && has(&r.t2, k1.1)?),
    )?;

    // The v4 pool's export turned off: withdrawn from t2 as well.
    let config = rig.config(&["hide"], &["transit"], &hide, false);
    rig.live_change(config, "pool export = false", |r| Ok(!has(&r.t2, pool.0)?))?;
    assert!(has(&rig.t2, pool.1)?, "the v6 pool stays");
    Ok(())
}

/// `local-asn`: margay (AS 64512) presents AS 65010 to a BIRD that expects 65010; the session
/// comes up and margay's route reaches BIRD with 65010 as its AS_PATH.
#[test]
fn local_asn_is_the_as_a_bird_neighbour_sees() -> Result<()> {
    let lab = Lab::new("local_asn_is_the_as_a_bird_neighbour_sees")?;
    let (nm, nt) = (lab.netns("m")?, lab.netns("tor")?);
    let link = lab.link(&nm, &nt)?;
    let (m, t) = (&link.a, &link.b);
    let block = IpNet::V4(block4());
    let tor = Bird::start(
        &lab,
        &nt,
        "tor",
        BirdConfig::new(t.ip4()).neighbor(BirdNeighbor::new("m", v4(m), T1_AS, 65010)),
    )?;
    let _m = Bgpd::start(
        &lab,
        &nm,
        "m",
        BgpdConfig::new(m.ip4(), CLUSTER_AS)
            .originate(block)
            .neighbor(BgpdNeighbor::new(v4(t), T1_AS).local_asn(65010)),
    )?;
    tor.wait_established("m", UP)?;
    let r = tor.wait_route(block, UP, |_| Ok(()))?;
    assert_eq!(r.bgp.as_path, vec![65010], "{r:?}");
    Ok(())
}
