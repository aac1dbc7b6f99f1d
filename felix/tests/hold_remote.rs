//! felix's dataplane loop while the remote table is still coming in (cluster mode's bring-up),
//! with the real kernel in a lab namespace: the model's local routes are programmed at once,
//! a remote route of felix's that the model lacks stays while removals are held, and goes once
//! they are not; a local route the model drops goes at once either way.

use std::sync::Arc;
use std::time::Duration;

use margay_felix::agent::{Agent, AgentConfig};
use margay_felix::health::{Health, Metrics};
use margay_felix::model::{IpPool, Model, NodeInfo, RemoteRoute};
use margay_felix::reconcile::ReconcileConfig;
use margay_lab::{Lab, block4, holds_for, wait_for};

fn felix_routes(ns: &str) -> String {
    let out = std::process::Command::new("ip")
        .args(["-n", ns, "-4", "route", "show", "proto", "81"])
        .output()
        .expect("ip route");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn remote_routes_the_model_lacks_stay_until_the_table_is_complete() {
    let lab = Lab::new("hold_remote").unwrap();
    let ns = lab.netns("node").unwrap();
    let gw = lab.netns("gw").unwrap();
    let link = lab.link(&ns, &gw).unwrap();
    let [a, b, c, _] = link.a.ip4().octets();
    let remote_nh: std::net::IpAddr = format!("{a}.{b}.{c}.7").parse().unwrap();
    let (own, remote) = (block4(), block4());
    let pool = IpPool {
        cidr: "10.0.0.0/8".parse().unwrap(),
        ipip_mode: Default::default(),
        vxlan_mode: Default::default(),
        disabled: false,
        nat_outgoing: false,
    };
    let mut model = Model {
        node: NodeInfo {
            name: "node1".into(),
            address: Some(link.a.v4),
            address_v6: None,
            vxlan_tunnel_addr: None,
            vxlan_tunnel_mac: None,
            ipip_tunnel_addr: None,
            mtu: None,
            ..Default::default()
        },
        pools: vec![pool],
        endpoints: vec![],
        affine_blocks: vec![own.into()],
        remote_routes: vec![RemoteRoute {
            prefix: remote.into(),
            next_hop: remote_nh,
            also_via: Vec::new(),
        }],
        vteps: vec![],
        peer_routes: vec![],
        settings: Default::default(),
    };
    let agent = Agent::spawn(
        AgentConfig {
            reconcile: ReconcileConfig::default(),
            resync_interval: Duration::from_secs(3600),
            netns: Some(format!("/var/run/netns/{}", ns.name())),
        },
        Arc::new(Health::new(Duration::from_secs(10))),
        Arc::new(Metrics::new()),
    )
    .unwrap();
    agent.update(model.clone());
    let name = ns.name().to_string();
    let remote_route = format!("{remote} via {remote_nh}");
    // Until felix's routes contain `want` (or, with `present` false, no longer do).
    let until = |what: &str, want: &str, present: bool| {
        wait_for(what, Duration::from_secs(5), &[], || {
            let r = felix_routes(&name);
            if r.contains(want) == present {
                Ok(())
            } else {
                Err(r)
            }
        })
        .unwrap()
    };
    until("the remote route", &remote_route, true);

    // A restarted felix's view: the table is coming in again, without that route yet, and
    // this node's block moved on.
    agent.hold_stale_remote(true);
    let other_block = block4();
    model.remote_routes.clear();
    model.affine_blocks = vec![other_block.into()];
    agent.update(model.clone());
    until(
        "the new local block",
        &format!("blackhole {other_block}"),
        true,
    );
    until(
        "the old local block gone",
        &format!("blackhole {own}"),
        false,
    );
    holds_for(
        "the remote route kept while held",
        Duration::from_secs(1),
        &[],
        || {
            let r = felix_routes(&name);
            if r.contains(&remote_route) {
                Ok(())
            } else {
                Err(r)
            }
        },
    )
    .unwrap();

    // The table is complete: what it lacks goes.
    agent.hold_stale_remote(false);
    agent.update(model);
    until("the remote route gone", &remote.to_string(), false);
    agent.stop().unwrap();
}
