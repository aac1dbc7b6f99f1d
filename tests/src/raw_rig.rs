//! A margay-bgpd between a well-behaved BIRD peer and raw test peers, on one switch: the rig of
//! the suites that provoke one session (malformed input, faults, route refresh) and check that
//! the BIRD session, its route and the daemon's process are untouched meanwhile.
//!
//! margay is host 1 of the switch (namespace `m`), BIRD host 2 (`b`, iBGP, originating one
//! block); raw peer `i` speaks from host `100 + i` of the switch in namespace `r`, configured on
//! margay as a passive neighbour (one address each, so one case's aftermath never reaches the
//! next).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;

use crate::rawpeer::RawPeer;
use margay_lab::Result;
use margay_lab::bgpd::{Bgpd, BgpdConfig, BgpdNeighbor};
use margay_lab::bird::{Bird, BirdConfig, BirdNeighbor, ExportPolicy};
use margay_lab::lab::{Addrs, Lab, LabSwitch, block4};
use margay_lab::netns::Netns;

/// margay's and BIRD's AS (iBGP between them).
pub const RIG_AS: u32 = 64512;
/// How long the rig waits for sessions and routes to come up.
const UP: Duration = Duration::from_secs(45);

fn v4(a: Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}

/// The running rig. Fields drop in order: daemons, then namespaces, then the lab.
pub struct RawRig {
    pub m: Bgpd,
    pub bird: Bird,
    /// The raw peers' namespace.
    pub nr: Netns,
    /// margay's namespace.
    pub nm: Netns,
    _nb: Netns,
    _sw: LabSwitch,
    /// margay's addresses on the switch.
    pub am: Addrs,
    /// BIRD's addresses on the switch.
    pub ab: Addrs,
    /// Raw peer `i`'s address.
    pub raw: Vec<Ipv4Addr>,
    /// The block BIRD originates.
    pub bird_block: IpNet,
    pid: u32,
    since_margay: i64,
    since_bird: String,
    pub lab: Lab,
}

impl RawRig {
    /// Starts the rig. `bird_peer` is margay's neighbour entry for BIRD and `raws` one entry
    /// per raw peer (their addresses are filled in here; raw peers are made passive);
    /// `finish` makes the last changes to margay's configuration. Returns once BIRD's session
    /// is Established on both sides, with its route in margay's RIB.
    pub fn start(
        test: &str,
        bird_peer: BgpdNeighbor,
        raws: Vec<BgpdNeighbor>,
        finish: impl FnOnce(BgpdConfig) -> BgpdConfig,
    ) -> Result<RawRig> {
        let lab = Lab::new(test)?;
        let sw = lab.switch("sw")?;
        let (nm, nb, nr) = (lab.netns("m")?, lab.netns("b")?, lab.netns("r")?);
        let (am, ab, ar) = (sw.attach(&nm)?, sw.attach(&nb)?, sw.attach(&nr)?);
        let mut bird_peer = bird_peer;
        bird_peer.address = v4(ab.ip4());
        let mut config = BgpdConfig::new(am.ip4(), RIG_AS).neighbor(bird_peer);
        let mut raw = Vec::new();
        for (i, mut n) in raws.into_iter().enumerate() {
            let a = sw.subnet().host(100 + i as u8);
            nr.add_addr(&ar.ifname, IpNet::V4(a.v4))?;
            n.address = v4(a.ip4());
            config = config.neighbor(n.passive());
            raw.push(a.ip4());
        }
        let bird_block = IpNet::V4(block4());
        let bird = Bird::start(
            &lab,
            &nb,
            "b",
            BirdConfig::new(ab.ip4()).originate(bird_block).neighbor(
                BirdNeighbor::new("m", v4(am.ip4()), RIG_AS, RIG_AS).export(ExportPolicy::Static),
            ),
        )?;
        let m = Bgpd::start(&lab, &nm, "m", finish(config))?;
        bird.wait_established("m", UP)?;
        let peer = m.wait_established(v4(ab.ip4()), UP)?;
        m.wait_route_via(bird_block, v4(ab.ip4()), UP)?;
        let since_bird = bird.settled_since("m", Duration::from_millis(300))?;
        let pid = m.pid();
        Ok(RawRig {
            m,
            bird,
            nr,
            nm,
            _nb: nb,
            _sw: sw,
            am,
            ab,
            raw,
            bird_block,
            pid,
            since_margay: peer.since,
            since_bird,
            lab,
        })
    }

    /// margay's BGP address and port.
    pub fn margay(&self) -> SocketAddr {
        SocketAddr::new(v4(self.am.ip4()), 179)
    }

    /// A TCP connection from raw peer `i`, no OPEN sent yet.
    pub fn connect(&self, i: usize) -> Result<RawPeer> {
        RawPeer::connect(&self.nr, self.raw[i], self.margay())
    }

    /// An Established session from raw peer `i` with `open` (see [`RawPeer::session`]).
    pub fn session(&self, i: usize, open: &[u8], timeout: Duration) -> Result<RawPeer> {
        RawPeer::session(&self.nr, self.raw[i], self.margay(), open, timeout)
    }

    /// The BIRD session is untouched and the daemon is the same process: Established on both
    /// sides since the start, BIRD's route in margay's RIB via BIRD.
    pub fn assert_bird_undisturbed(&mut self) {
        assert!(
            self.m.process().is_running(),
            "margay-bgpd exited: {:?}\n{}",
            self.m.process().exit_status(),
            self.m.process().log_tail(60)
        );
        assert_eq!(self.m.pid(), self.pid, "margay-bgpd's PID changed");
        let p = self
            .m
            .peer(v4(self.ab.ip4()))
            .expect("ListPeers")
            .expect("BIRD is a peer");
        assert_eq!(p.state, "Established", "the BIRD session went down: {p:?}");
        assert_eq!(p.since, self.since_margay, "margay reset the BIRD session");
        let b = self.bird.protocol("m").expect("birdc").expect("protocol m");
        assert!(b.is_established(), "BIRD's session went down: {b:?}");
        assert!(
            b.same_session_since(&self.since_bird),
            "BIRD saw its session reset: since {}, now {}",
            self.since_bird,
            b.since
        );
        let r = self
            .m
            .best_route(self.bird_block)
            .expect("ListRoutes")
            .expect("BIRD's route is still there");
        assert_eq!(r.next_hop, self.ab.ip4().to_string());
    }
}
