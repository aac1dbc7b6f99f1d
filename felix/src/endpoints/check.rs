//! CHECK: the kernel (container interface, its addresses and routes, the host side and its
//! /32 routes) and the WorkloadEndpoint compared with what ADD made; each difference named.

use std::net::IpAddr;

use ipnet::IpNet;
use margay_datastore::resources::WorkloadEndpointSpec;
use margay_proto::felix::v1 as pb;
use tonic::Status;

use super::ops::{ANN_CONTAINER_MAC, Target};
use super::plumbing::{self, ContainerView};
use super::{EndpointService, store_status};
use crate::netlink::{KernelRoute, NetlinkError};

fn diff(
    subject: impl Into<String>,
    expected: impl Into<String>,
    actual: impl Into<String>,
) -> pb::Difference {
    pb::Difference {
        subject: subject.into(),
        expected: expected.into(),
        actual: actual.into(),
    }
}

fn describe(r: &KernelRoute, ifname: &str) -> String {
    let mut s = r.dst.to_string();
    if let Some(gw) = r.gateway {
        s.push_str(&format!(" via {gw}"));
    }
    s.push_str(&format!(" dev {ifname}"));
    if r.scope == crate::netlink::SCOPE_LINK {
        s.push_str(" scope link");
    }
    s
}

/// The differences between the container end and what ADD made for `addrs` with `mtu`.
pub fn compare_container(
    ifname: &str,
    view: &ContainerView,
    addrs: &[IpNet],
    mtu: u32,
    mac: Option<&str>,
) -> Vec<pb::Difference> {
    let mut out = Vec::new();
    let Some(link) = &view.link else {
        out.push(diff(format!("interface {ifname}"), "present", ""));
        return out;
    };
    if !link.up {
        out.push(diff(format!("interface {ifname}"), "up", "down"));
    }
    if mtu != 0 && link.mtu != mtu {
        out.push(diff(
            format!("interface {ifname} mtu"),
            mtu.to_string(),
            link.mtu.to_string(),
        ));
    }
    if let (Some(want), Some(have)) = (mac.filter(|m| !m.is_empty()), link.mac) {
        let have = plumbing::mac_string(&have);
        if !want.eq_ignore_ascii_case(&have) {
            out.push(diff(format!("interface {ifname} mac"), want, have));
        }
    }
    for a in addrs {
        if !view.addresses.contains(a) {
            let same_ip: Vec<String> = view
                .addresses
                .iter()
                .filter(|h| h.addr() == a.addr())
                .map(|h| h.to_string())
                .collect();
            out.push(diff(
                format!("address {a}"),
                a.to_string(),
                same_ip.join(", "),
            ));
        }
    }
    for want in plumbing::container_routes(addrs, link.index) {
        let have = view.routes.iter().find(|r| r.dst == want.dst);
        let ok = have.is_some_and(|h| {
            h.gateway == want.gateway && h.scope == want.scope && h.kind == want.kind
        });
        if !ok {
            out.push(diff(
                format!("route {}", want.dst),
                describe(&want, ifname),
                have.map(|h| describe(h, ifname)).unwrap_or_default(),
            ));
        }
    }
    out
}

/// CNI CHECK.
pub async fn check(
    svc: &EndpointService,
    req: pb::CheckEndpointRequest,
) -> Result<pb::CheckEndpointResponse, Status> {
    let t = Target::new(svc, req.attachment.as_ref(), req.workload.as_ref())?;
    let (store, _) = svc.datastore().await?;
    let wep = store
        .get_ns::<WorkloadEndpointSpec>(Some(&t.wep_ns), &t.wep_name)
        .await
        .map_err(|e| store_status("reading the WorkloadEndpoint", &e))?
        .filter(|w| w.spec.container_id == t.container_id)
        .ok_or_else(|| {
            Status::not_found(format!(
                "no endpoint for container {} interface {}",
                t.container_id, t.ifname
            ))
        })?;
    if req.netns.is_empty() || !std::path::Path::new(&req.netns).exists() {
        return Err(Status::not_found(format!(
            "netns {}: no such file",
            req.netns
        )));
    }
    let addrs: Vec<IpNet> = wep
        .spec
        .ip_networks
        .iter()
        .filter_map(|s| {
            s.parse::<IpNet>()
                .ok()
                .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
        })
        .collect();
    let mut differences = Vec::new();

    // What the runtime was told (prevResult): our entries must match the endpoint.
    let expected = req.expected.unwrap_or_default();
    let ours: Option<usize> = expected
        .interfaces
        .iter()
        .position(|i| i.name == t.ifname && i.sandbox == req.netns);
    let mut expected_mac = wep.metadata.annotations.get(ANN_CONTAINER_MAC).cloned();
    if let Some(i) = ours {
        let mac = &expected.interfaces[i].mac;
        if !mac.is_empty() {
            expected_mac = Some(mac.clone());
        }
        for ip in &expected.ips {
            if ip.interface.map(|x| x as usize) != Some(i) {
                continue;
            }
            match ip.address.parse::<IpNet>() {
                Ok(a) if addrs.contains(&a) => {}
                _ => differences.push(diff(
                    format!("address {}", ip.address),
                    ip.address.clone(),
                    format!("WorkloadEndpoint has {}", wep.spec.ip_networks.join(", ")),
                )),
            }
        }
    } else {
        differences.push(diff(
            format!("interface {}", t.ifname),
            format!("in prevResult with sandbox {}", req.netns),
            "",
        ));
    }

    let (netns, ifname, host_ifname) = (
        req.netns.clone(),
        t.ifname.clone(),
        wep.spec.interface_name.clone(),
    );
    let protocol = svc.cfg().protocol;
    let views = tokio::task::spawn_blocking(move || -> Result<_, NetlinkError> {
        let c = plumbing::read_container(&netns, &ifname)?;
        let h = plumbing::read_host(&host_ifname, protocol)?;
        Ok((c, h))
    })
    .await
    .map_err(|_| Status::internal("CHECK task panicked"))?
    .map_err(|e| Status::internal(format!("reading the endpoint's interfaces: {e}")))?;
    let (container, (host, host_routes)) = views;
    differences.extend(compare_container(
        &t.ifname,
        &container,
        &addrs,
        req.mtu,
        expected_mac.as_deref(),
    ));
    let host_ifname = &wep.spec.interface_name;
    match host {
        None => differences.push(diff(format!("interface {host_ifname}"), "present", "")),
        Some(h) => {
            if !h.up {
                differences.push(diff(format!("interface {host_ifname}"), "up", "down"));
            }
            for a in &addrs {
                if !host_routes.iter().any(|r| r.dst == *a) {
                    differences.push(diff(
                        format!("host route {a}"),
                        format!("{a} dev {host_ifname} scope link"),
                        "",
                    ));
                }
            }
        }
    }
    Ok(pb::CheckEndpointResponse { differences })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::Link;

    fn view(addrs: &[&str], routes: Vec<KernelRoute>) -> ContainerView {
        ContainerView {
            link: Some(Link {
                index: 2,
                name: "eth0".into(),
                kind: Some("veth".into()),
                mtu: 1450,
                up: true,
                mac: Some([2, 0, 0, 0, 0, 1]),
                alias: None,
            }),
            addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            routes,
        }
    }

    #[test]
    fn reports_nothing_when_container_matches_add() {
        let a: Vec<IpNet> = vec!["10.244.0.5/32".parse().unwrap()];
        let v = view(&["10.244.0.5/32"], plumbing::container_routes(&a, 2));
        assert!(compare_container("eth0", &v, &a, 1450, Some("02:00:00:00:00:01")).is_empty());
    }

    #[test]
    fn reports_missing_default_route_wrong_mtu_and_address() {
        let a: Vec<IpNet> = vec!["10.244.0.5/32".parse().unwrap()];
        let mut routes = plumbing::container_routes(&a, 2);
        routes.retain(|r| r.dst.prefix_len() != 0);
        let v = view(&["10.244.0.6/32"], routes);
        let d = compare_container("eth0", &v, &a, 1500, None);
        let subjects: Vec<&str> = d.iter().map(|d| d.subject.as_str()).collect();
        assert_eq!(
            subjects,
            vec![
                "interface eth0 mtu",
                "address 10.244.0.5/32",
                "route 0.0.0.0/0"
            ]
        );
        assert_eq!(d[2].expected, "0.0.0.0/0 via 169.254.1.1 dev eth0");
        assert_eq!(d[2].actual, "");
    }
}
