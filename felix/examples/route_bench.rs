//! Route-programming benchmark of felix's reconciler (driven by `bench/felix-routes.sh`).
//!
//! Run inside a prepared namespace (`ip netns exec NS route_bench VETHS WORKLOADS REMOTE
//! CHANGES GW_PREFIX`): it programs WORKLOADS /32 device routes spread over the veths
//! `bcali0..` and REMOTE remote /26 blocks via `GW_PREFIX.2` into an empty table, then applies
//! CHANGES changes (half the remote blocks move to `GW_PREFIX.3`, a quarter of the workloads go
//! away, as many new ones arrive), and prints the timings as one line of JSON.
//!
//! With a sixth argument `dual` the node is dual-stack: every workload also has an IPv6 /128
//! (`fd00:100::` + i) and as many IPv6 /122 blocks (`fd00:200::` + 64 i) go via
//! `fd00:99::2` (then `fd00:99::3`), so each figure covers both families.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use margay_felix::desired;
use margay_felix::health::{Health, Metrics};
use margay_felix::model::{EncapMode, IpPool, Model, NodeInfo, RemoteRoute, WorkloadEndpoint};
use margay_felix::netlink::Dataplane;
use margay_felix::reconcile::{ReconcileConfig, Reconciler};

fn arg(i: usize, default: &str) -> String {
    std::env::args()
        .nth(i)
        .unwrap_or_else(|| default.to_string())
}

fn v6(base: Ipv6Addr, offset: u32) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(base) + u128::from(offset))
}

fn workload(i: u32, veths: u32, dual: bool) -> WorkloadEndpoint {
    let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 100, 0, 0)) + i);
    let mut ips = vec![IpNet::V4(Ipv4Net::new(ip, 32).expect("32 is valid"))];
    if dual {
        let ip6 = v6("fd00:100::".parse().expect("literal"), i);
        ips.push(IpNet::V6(Ipv6Net::new(ip6, 128).expect("128 is valid")));
    }
    WorkloadEndpoint {
        name: format!("bench/w{i}"),
        interface: format!("bcali{}", i % veths),
        ips,
    }
}

fn remote(i: u32, gw: Ipv4Addr) -> RemoteRoute {
    let net = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 200, 0, 0)) + i * 64);
    RemoteRoute {
        prefix: IpNet::V4(Ipv4Net::new(net, 26).expect("26 is valid")),
        next_hop: gw.into(),
        also_via: Vec::new(),
    }
}

fn remote6(i: u32, gw: Ipv6Addr) -> RemoteRoute {
    let net = v6("fd00:200::".parse().expect("literal"), i * 64);
    RemoteRoute {
        prefix: IpNet::V6(Ipv6Net::new(net, 122).expect("122 is valid")),
        next_hop: gw.into(),
        also_via: Vec::new(),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() -> anyhow::Result<()> {
    let veths: u32 = arg(1, "100").parse()?;
    let workloads: u32 = arg(2, "10000").parse()?;
    let remotes: u32 = arg(3, "1000").parse()?;
    let changes: u32 = arg(4, "1000").parse()?;
    let gw_prefix = arg(5, "10.99.0");
    let gw2: Ipv4Addr = format!("{gw_prefix}.2").parse()?;
    let gw3: Ipv4Addr = format!("{gw_prefix}.3").parse()?;
    let dual = arg(6, "ipv4") == "dual";
    let (gw6_2, gw6_3): (Ipv6Addr, Ipv6Addr) = ("fd00:99::2".parse()?, "fd00:99::3".parse()?);

    let mut model = Model {
        node: NodeInfo {
            name: "bench".into(),
            address: Some(format!("{gw_prefix}.1/24").parse()?),
            address_v6: if dual {
                Some("fd00:99::1/64".parse()?)
            } else {
                None
            },
            vxlan_tunnel_addr: None,
            vxlan_tunnel_mac: None,
            ipip_tunnel_addr: None,
            mtu: None,
            ..Default::default()
        },
        pools: vec![
            IpPool {
                cidr: "10.0.0.0/8".parse()?,
                ipip_mode: EncapMode::Never,
                vxlan_mode: EncapMode::Never,
                disabled: false,
                nat_outgoing: false,
            },
            IpPool {
                cidr: "fd00::/8".parse()?,
                ipip_mode: EncapMode::Never,
                vxlan_mode: EncapMode::Never,
                disabled: false,
                nat_outgoing: false,
            },
        ],
        endpoints: (0..workloads).map(|i| workload(i, veths, dual)).collect(),
        affine_blocks: Vec::new(),
        remote_routes: (0..remotes)
            .map(|i| remote(i, gw2))
            .chain((0..if dual { remotes } else { 0 }).map(|i| remote6(i, gw6_2)))
            .collect(),
        vteps: Vec::new(),
        peer_routes: Vec::new(),
        settings: Default::default(),
    };

    let health = Arc::new(Health::new(Duration::from_secs(60)));
    let metrics = Arc::new(Metrics::new());
    let mut rec = Reconciler::new(
        Dataplane::new()?,
        ReconcileConfig::default(),
        health,
        metrics,
    );

    // From empty: compute the desired set and run the first full resync.
    let t0 = Instant::now();
    let d = desired::compute(&model);
    let compute_initial = t0.elapsed();
    rec.set_desired(d);
    let initial = rec.resync()?;
    let initial_total = t0.elapsed();

    // CHANGES changes: half re-pointed remote blocks, a quarter removed and a quarter new pods.
    let moved = (changes / 2).min(remotes);
    let removed = (changes - moved) / 2;
    let added = changes - moved - removed;
    for r in model.remote_routes.iter_mut().take(moved as usize) {
        r.next_hop = gw3.into();
    }
    for r in model
        .remote_routes
        .iter_mut()
        .skip(remotes as usize)
        .take(moved as usize)
    {
        r.next_hop = gw6_3.into();
    }
    model.endpoints.drain(..removed as usize);
    model
        .endpoints
        .extend((workloads..workloads + added).map(|i| workload(i, veths, dual)));
    let t1 = Instant::now();
    let d = desired::compute(&model);
    let compute_changes = t1.elapsed();
    rec.set_desired(d);
    let update = rec.flush()?;
    let changes_total = t1.elapsed();

    // A second resync with nothing changed: what a periodic resync costs (zero writes).
    let t2 = Instant::now();
    let idle = rec.resync()?;
    let idle_resync = t2.elapsed();

    println!(
        "{{\"initial_ms\":{:.1},\"initial_compute_ms\":{:.1},\"initial_created\":{},\"initial_errors\":{},\
         \"changes_ms\":{:.1},\"changes_compute_ms\":{:.1},\"changes_created\":{},\"changes_replaced\":{},\
         \"changes_deleted\":{},\"changes_errors\":{},\"idle_resync_ms\":{:.1},\"idle_writes\":{}}}",
        ms(initial_total),
        ms(compute_initial),
        initial.created,
        initial.errors + initial.pending,
        ms(changes_total),
        ms(compute_changes),
        update.created,
        update.replaced,
        update.deleted,
        update.errors + update.pending,
        ms(idle_resync),
        idle.created + idle.replaced + idle.deleted,
    );
    Ok(())
}
