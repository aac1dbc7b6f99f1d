//! BFD in cluster mode (issue 13 §1): a `margay.io/v1` BGPPeer with `spec.bfd`, applied with
//! margayctl to a real etcd, gives node1's bgpd a BFD session with a BIRD ToR; `margayctl node
//! status` shows it (table column and `-o json`); a new `minTx` reaches the session live, with
//! the BGP session untouched; `projectcalico.org/v3` refuses the field.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use margay_lab::{
    Bgpd, Bird, BirdConfig, BirdNeighbor, ClusterArgs, Etcd, ExportPolicy, Lab, Result, wait_for,
};
use margay_tests::bfd::bfd_settled;

const UP: Duration = Duration::from_secs(45);
const CLUSTER_AS: u32 = 64512;
const TOR_AS: u32 = 65000;

fn peer_yaml(api: &str, tor: IpAddr, min_tx: &str) -> String {
    format!(
        "apiVersion: {api}\nkind: BGPPeer\nmetadata:\n  name: tor\nspec:\n  peerIP: {tor}\n  \
         asNumber: {TOR_AS}\n  bfd:\n    enabled: true\n    minTx: {min_tx}\n    minRx: 100ms\n    \
         multiplier: 3\n"
    )
}

#[test]
fn margay_bgppeer_bfd_runs_shows_in_status_and_retimes_live() -> Result<()> {
    let lab = Lab::new("margay_bgppeer_bfd_runs_shows_in_status_and_retimes_live")?;
    let sw = lab.switch("sw")?;
    let etcd = Etcd::on_switch(&lab, &sw)?;
    let (nn, nt) = (lab.netns("n1")?, lab.netns("tor")?);
    let (an, at) = (sw.attach(&nn)?, sw.attach(&nt)?);
    let (node_ip, tor_ip) = (IpAddr::V4(an.ip4()), IpAddr::V4(at.ip4()));

    let mut n = BirdNeighbor::new("node1", node_ip, TOR_AS, CLUSTER_AS).export(ExportPolicy::None);
    n.bfd = true;
    let tor = Bird::start(
        &lab,
        &nt,
        "tor",
        BirdConfig::new(at.ip4()).bfd(100, 100, 3).neighbor(n),
    )?;
    let m = Bgpd::start_cluster(
        &lab,
        &nn,
        "node1",
        ClusterArgs::new("node1", &etcd.endpoint(), IpNet::V4(an.v4)),
    )?;

    let refused = etcd.apply(&peer_yaml("projectcalico.org/v3", tor_ip, "100ms"));
    let e = format!("{refused:?}");
    assert!(
        refused.is_err() && e.contains("spec.bfd"),
        "Calico's group has no BFD: {e}"
    );
    etcd.apply(&peer_yaml("margay.io/v1", tor_ip, "100ms"))?;
    m.wait_established(tor_ip, UP)?;
    tor.wait_established("node1", UP)?;
    bfd_settled(&m, tor_ip, Duration::from_millis(100), 3)?;

    let socket = m.config().socket.to_string_lossy().into_owned();
    let table = etcd.margayctl(&["node", "status", "--socket", &socket])?;
    assert!(
        table.contains("BFD") && table.contains("Up 100ms/300ms"),
        "{table}"
    );
    let json = etcd.margayctl(&["node", "status", "--socket", &socket, "-o", "json"])?;
    let v: serde_json::Value = serde_json::from_str(&json).expect("status json");
    let bfd = &v["ipv4_peers"][0]["bfd"];
    assert_eq!(bfd["state"], "Up", "{json}");
    assert_eq!(bfd["detection_time_ms"], 300.0, "{json}");

    // A slower minTx: BIRD then waits 3 x 200 ms for us; the BGP session stays as it was.
    let since = m.peer(tor_ip)?.expect("peer").since;
    etcd.apply(&peer_yaml("margay.io/v1", tor_ip, "200ms"))?;
    // We send every 200 ms now; we still expect BIRD's packets every 100 ms.
    let p = wait_for("the session retimed", UP, &[&m], || {
        let p = m
            .peer(tor_ip)
            .map_err(|e| e.to_string())?
            .ok_or("no peer")?;
        match &p.bfd {
            Some(b) if (b.tx_interval_us, b.detection_time_us) == (200_000, 300_000) => Ok(p),
            other => Err(format!("{other:?}")),
        }
    })?;
    assert_eq!(p.state, "Established");
    assert_eq!(p.since, since, "no session reset for a BFD change");
    let b = p.bfd.expect("bfd");
    assert_eq!(b.desired_min_tx_us, 200_000);
    assert_eq!(b.downs, 0, "{b:?}");
    Ok(())
}
