//! Interoperability of margay-bgpd with BIRD 2: real daemons in namespaces, one test per
//! behaviour. Each test builds its own lab (unique namespaces, addresses and blocks), so they
//! run in parallel.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use ipnet::IpNet;
use margay_lab::{
    Bgpd, BgpdConfig, BgpdNeighbor, Bird, BirdConfig, BirdNeighbor, ExportPolicy, Lab, LinkAddrs,
    Netns, Result, block4, block6, holds_for,
};

/// Time for a session to come up and a route to arrive.
const UP: Duration = Duration::from_secs(45);
/// How long a session must stay down to count as "never established".
const NEVER: Duration = Duration::from_secs(10);
/// The AS of the cluster's nodes.
const CLUSTER_AS: u32 = 64512;
/// The AS of the top-of-rack router.
const TOR_AS: u32 = 65100;

fn v4(a: Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}

/// RFC 4271 §9 and RFC 4456 §8 do not apply inside a full mesh: every node learns every other
/// node's block with the originator's address as next hop, and loses it when that node stops.
#[test]
fn ibgp_full_mesh_with_bird_learns_every_block_and_withdraws_stopped_node() -> Result<()> {
    let lab = Lab::new("ibgp_full_mesh_with_bird_learns_every_block_and_withdraws_stopped_node")?;
    let sw = lab.switch("sw")?;
    let (n1, n2, n3) = (lab.netns("m1")?, lab.netns("m2")?, lab.netns("b3")?);
    let (a1, a2, a3) = (sw.attach(&n1)?, sw.attach(&n2)?, sw.attach(&n3)?);
    let (k1, k2, k3) = (
        IpNet::V4(block4()),
        IpNet::V4(block4()),
        IpNet::V4(block4()),
    );

    let mut bird = Bird::start(
        &lab,
        &n3,
        "b3",
        BirdConfig::new(a3.ip4())
            .originate(k3)
            .neighbor(
                BirdNeighbor::new("m1", v4(a1.ip4()), CLUSTER_AS, CLUSTER_AS)
                    .export(ExportPolicy::Static),
            )
            .neighbor(
                BirdNeighbor::new("m2", v4(a2.ip4()), CLUSTER_AS, CLUSTER_AS)
                    .export(ExportPolicy::Static),
            ),
    )?;
    let margay = |ns, name, me: Ipv4Addr, block, others: [Ipv4Addr; 2]| {
        let mut c = BgpdConfig::new(me, CLUSTER_AS).originate(block);
        for o in others {
            c = c.neighbor(BgpdNeighbor::new(v4(o), CLUSTER_AS));
        }
        Bgpd::start(&lab, ns, name, c)
    };
    let mut m1 = margay(&n1, "m1", a1.ip4(), k1, [a2.ip4(), a3.ip4()])?;
    let m2 = margay(&n2, "m2", a2.ip4(), k2, [a1.ip4(), a3.ip4()])?;

    bird.wait_established("m1", UP)?;
    bird.wait_established("m2", UP)?;
    m1.wait_established(v4(a2.ip4()), UP)?;
    m1.wait_established(v4(a3.ip4()), UP)?;
    m2.wait_established(v4(a3.ip4()), UP)?;

    let r = bird.wait_bgp_route_via(k1, v4(a1.ip4()), UP)?;
    assert!(r.bgp.as_path.is_empty(), "iBGP adds no AS: {r:?}");
    bird.wait_bgp_route_via(k2, v4(a2.ip4()), UP)?;
    m1.wait_route_via(k2, v4(a2.ip4()), UP)?;
    m1.wait_route_via(k3, v4(a3.ip4()), UP)?;
    m2.wait_route_via(k1, v4(a1.ip4()), UP)?;
    let r = m2.wait_route_via(k3, v4(a3.ip4()), UP)?;
    assert!(r.as_path.is_empty(), "iBGP adds no AS: {r:?}");

    // A node that goes away for good (SIGINT: Cease to everyone); SIGTERM would be a
    // graceful restart, and m2 would keep k1 for the restart time (tests/graceful_restart.rs).
    m1.stop_with_cease();
    bird.wait_no_route(k1, UP)?;
    m2.wait_no_route(k1, UP)?;

    bird.stop();
    m2.wait_no_route(k3, UP)?;
    Ok(())
}

/// RFC 4456 §8: margay reflects a client's route to the other client and to a non-client,
/// adding ORIGINATOR_ID (the originating client) and its CLUSTER_ID to CLUSTER_LIST; the
/// next hop is left as the originator's.
#[test]
fn margay_reflector_passes_client_routes_with_originator_id_and_cluster_list() -> Result<()> {
    let lab =
        Lab::new("margay_reflector_passes_client_routes_with_originator_id_and_cluster_list")?;
    let sw = lab.switch("sw")?;
    let (nr, nc1, nc2, nn) = (
        lab.netns("rr")?,
        lab.netns("c1")?,
        lab.netns("c2")?,
        lab.netns("nc")?,
    );
    let (ar, ac1, ac2, an) = (
        sw.attach(&nr)?,
        sw.attach(&nc1)?,
        sw.attach(&nc2)?,
        sw.attach(&nn)?,
    );
    let (k1, k2) = (IpNet::V4(block4()), IpNet::V4(block4()));
    let cluster: Ipv4Addr = "10.255.0.1".parse().expect("address");

    let to_rr = |name| {
        BirdNeighbor::new(name, v4(ar.ip4()), CLUSTER_AS, CLUSTER_AS).export(ExportPolicy::Static)
    };
    let c1 = Bird::start(
        &lab,
        &nc1,
        "c1",
        BirdConfig::new(ac1.ip4())
            .originate(k1)
            .neighbor(to_rr("refl")),
    )?;
    let c2 = Bird::start(
        &lab,
        &nc2,
        "c2",
        BirdConfig::new(ac2.ip4())
            .originate(k2)
            .neighbor(to_rr("refl")),
    )?;
    let nonclient = Bird::start(
        &lab,
        &nn,
        "nc",
        BirdConfig::new(an.ip4()).neighbor(to_rr("refl")),
    )?;

    let rr = Bgpd::start(
        &lab,
        &nr,
        "rr",
        BgpdConfig::new(ar.ip4(), CLUSTER_AS)
            .cluster_id(cluster)
            .neighbor(BgpdNeighbor::new(v4(ac1.ip4()), CLUSTER_AS).rr_client())
            .neighbor(BgpdNeighbor::new(v4(ac2.ip4()), CLUSTER_AS).rr_client())
            .neighbor(BgpdNeighbor::new(v4(an.ip4()), CLUSTER_AS)),
    )?;
    for b in [&c1, &c2, &nonclient] {
        b.wait_established("refl", UP)?;
    }
    rr.wait_route_via(k1, v4(ac1.ip4()), UP)?;
    rr.wait_route_via(k2, v4(ac2.ip4()), UP)?;

    let at_c2 = c2.wait_bgp_route_via(k1, v4(ac1.ip4()), UP)?;
    assert_eq!(at_c2.bgp.originator_id, Some(ac1.ip4()), "{at_c2:?}");
    assert_eq!(at_c2.bgp.cluster_list, vec![cluster], "{at_c2:?}");
    let at_c1 = c1.wait_bgp_route_via(k2, v4(ac2.ip4()), UP)?;
    assert_eq!(at_c1.bgp.originator_id, Some(ac2.ip4()), "{at_c1:?}");
    assert_eq!(at_c1.bgp.cluster_list, vec![cluster], "{at_c1:?}");

    for (k, from) in [(k1, &ac1), (k2, &ac2)] {
        let r = nonclient.wait_bgp_route_via(k, v4(from.ip4()), UP)?;
        assert_eq!(r.bgp.originator_id, Some(from.ip4()), "{r:?}");
        assert_eq!(r.bgp.cluster_list, vec![cluster], "{r:?}");
    }
    Ok(())
}

/// RFC 4456 with BIRD as the reflector: each margay client learns the other's block with the
/// other's next hop, ORIGINATOR_ID and BIRD's CLUSTER_ID.
#[test]
fn bird_reflector_passes_routes_between_margay_clients() -> Result<()> {
    let lab = Lab::new("bird_reflector_passes_routes_between_margay_clients")?;
    let sw = lab.switch("sw")?;
    let (nr, n1, n2) = (lab.netns("rr")?, lab.netns("m1")?, lab.netns("m2")?);
    let (ar, a1, a2) = (sw.attach(&nr)?, sw.attach(&n1)?, sw.attach(&n2)?);
    let (k1, k2) = (IpNet::V4(block4()), IpNet::V4(block4()));
    let cluster: Ipv4Addr = "10.255.0.2".parse().expect("address");

    let client = |name, a: Ipv4Addr| {
        BirdNeighbor::new(name, v4(a), CLUSTER_AS, CLUSTER_AS)
            .rr_client()
            .rr_cluster_id(cluster)
    };
    let rr = Bird::start(
        &lab,
        &nr,
        "rr",
        BirdConfig::new(ar.ip4())
            .neighbor(client("m1", a1.ip4()))
            .neighbor(client("m2", a2.ip4())),
    )?;
    let margay = |ns, name, me: Ipv4Addr, block| {
        Bgpd::start(
            &lab,
            ns,
            name,
            BgpdConfig::new(me, CLUSTER_AS)
                .originate(block)
                .neighbor(BgpdNeighbor::new(v4(ar.ip4()), CLUSTER_AS)),
        )
    };
    let m1 = margay(&n1, "m1", a1.ip4(), k1)?;
    let m2 = margay(&n2, "m2", a2.ip4(), k2)?;
    rr.wait_established("m1", UP)?;
    rr.wait_established("m2", UP)?;
    rr.wait_bgp_route_via(k1, v4(a1.ip4()), UP)?;
    rr.wait_bgp_route_via(k2, v4(a2.ip4()), UP)?;

    let r = m1.wait_route_via(k2, v4(a2.ip4()), UP)?;
    assert_eq!(r.originator_id, a2.ip4().to_string(), "{r:?}");
    assert_eq!(r.cluster_list, vec![cluster.to_string()], "{r:?}");
    let r = m2.wait_route_via(k1, v4(a1.ip4()), UP)?;
    assert_eq!(r.originator_id, a1.ip4().to_string(), "{r:?}");
    assert_eq!(r.cluster_list, vec![cluster.to_string()], "{r:?}");
    Ok(())
}

/// RFC 4271 §5.1.2/§5.1.3 and RFC 4760: eBGP to a top-of-rack BIRD in another AS over IPv4
/// and IPv6 sessions; each side sees the other's AS prepended and its address as next hop.
#[test]
fn ebgp_with_bird_tor_exchanges_ipv4_and_ipv6_blocks() -> Result<()> {
    let lab = Lab::new("ebgp_with_bird_tor_exchanges_ipv4_and_ipv6_blocks")?;
    let (nm, nt) = (lab.netns("m1")?, lab.netns("tor")?);
    let link = lab.link(&nm, &nt)?;
    let (m, t) = (&link.a, &link.b);
    let (m4, m6) = (IpNet::V4(block4()), IpNet::V6(block6()));
    let (t4, t6) = (IpNet::V4(block4()), IpNet::V6(block6()));

    let tor = Bird::start(
        &lab,
        &nt,
        "tor",
        BirdConfig::new(t.ip4())
            .originate(t4)
            .originate(t6)
            .neighbor(BirdNeighbor::new("m1v4", v4(m.ip4()), TOR_AS, CLUSTER_AS))
            .neighbor(BirdNeighbor::new(
                "m1v6",
                IpAddr::V6(m.ip6()),
                TOR_AS,
                CLUSTER_AS,
            )),
    )?;
    let margay = Bgpd::start(
        &lab,
        &nm,
        "m1",
        BgpdConfig::new(m.ip4(), CLUSTER_AS)
            .originate(m4)
            .originate(m6)
            .neighbor(BgpdNeighbor::new(v4(t.ip4()), TOR_AS).description("tor v4"))
            .neighbor(BgpdNeighbor::new(IpAddr::V6(t.ip6()), TOR_AS).description("tor v6")),
    )?;
    tor.wait_established("m1v4", UP)?;
    tor.wait_established("m1v6", UP)?;
    margay.wait_established(v4(t.ip4()), UP)?;
    margay.wait_established(IpAddr::V6(t.ip6()), UP)?;

    let r = tor.wait_bgp_route_via(m4, v4(m.ip4()), UP)?;
    assert_eq!(r.bgp.as_path, vec![CLUSTER_AS], "{r:?}");
    let r = tor.wait_bgp_route_via(m6, IpAddr::V6(m.ip6()), UP)?;
    assert_eq!(r.bgp.as_path, vec![CLUSTER_AS], "{r:?}");

    let r = margay.wait_route_via(t4, v4(t.ip4()), UP)?;
    assert_eq!(r.as_path, vec![TOR_AS], "{r:?}");
    assert_eq!(r.peer_asn, TOR_AS, "{r:?}");
    let r = margay.wait_route_via(t6, IpAddr::V6(t.ip6()), UP)?;
    assert_eq!(r.as_path, vec![TOR_AS], "{r:?}");
    Ok(())
}

/// A margay host `m1` and a ToR BIRD (AS `TOR_AS`) on one link; the ToR's session to `m1`
/// uses TCP-MD5 with `password`. Returns both namespaces, the link and the running ToR.
fn tor_with_md5(lab: &Lab, password: &str) -> Result<(Netns, Netns, LinkAddrs, Bird)> {
    let (nm, nt) = (lab.netns("m1")?, lab.netns("tor")?);
    let link = lab.link(&nm, &nt)?;
    let tor = Bird::start(
        lab,
        &nt,
        "tor",
        BirdConfig::new(link.b.ip4())
            .originate(IpNet::V4(block4()))
            .neighbor(
                BirdNeighbor::new("m1", v4(link.a.ip4()), TOR_AS, CLUSTER_AS).password(password),
            ),
    )?;
    Ok((nm, nt, link, tor))
}

/// RFC 2385: with the same TCP-MD5 password on both sides the session establishes.
#[test]
fn tcp_md5_session_with_matching_password_establishes() -> Result<()> {
    let lab = Lab::new("tcp_md5_session_with_matching_password_establishes")?;
    let (nm, _nt, link, tor) = tor_with_md5(&lab, "margay-md5-ok")?;
    let margay = Bgpd::start(
        &lab,
        &nm,
        "m1",
        BgpdConfig::new(link.a.ip4(), CLUSTER_AS)
            .neighbor(BgpdNeighbor::new(v4(link.b.ip4()), TOR_AS).password("margay-md5-ok")),
    )?;
    tor.wait_established("m1", UP)?;
    margay.wait_established(v4(link.b.ip4()), UP)?;
    Ok(())
}

/// RFC 2385: with different passwords the kernel drops every segment, so neither BIRD nor
/// margay ever reaches Established.
#[test]
fn tcp_md5_session_with_wrong_password_never_establishes() -> Result<()> {
    let lab = Lab::new("tcp_md5_session_with_wrong_password_never_establishes")?;
    let (nm, _nt, link, tor) = tor_with_md5(&lab, "margay-md5-right")?;
    let margay = Bgpd::start(
        &lab,
        &nm,
        "m1",
        BgpdConfig::new(link.a.ip4(), CLUSTER_AS)
            .neighbor(BgpdNeighbor::new(v4(link.b.ip4()), TOR_AS).password("margay-md5-wrong")),
    )?;
    let tor_addr = v4(link.b.ip4());
    holds_for(
        "neither BIRD nor margay reports the session Established",
        NEVER,
        &[&tor, &margay],
        || {
            match tor.protocol("m1") {
                Ok(Some(p)) if p.is_established() => return Err(format!("BIRD: {p:?}")),
                Ok(Some(_)) => {}
                other => return Err(format!("BIRD: {other:?}")),
            }
            match margay.peer(tor_addr) {
                Ok(Some(p)) if p.state == "Established" => Err(format!("margay: {p:?}")),
                Ok(Some(_)) => Ok(()),
                other => Err(format!("margay: {other:?}")),
            }
        },
    )
}
