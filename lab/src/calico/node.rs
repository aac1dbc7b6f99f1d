//! A node as calico-node runs it, for the lab: its pods wired as Calico's CNI plugin and felix
//! wire them (host side `cali…` veth with MAC `ee:ee:ee:ee:ee:ee`, proxy ARP and forwarding
//! on, the pod's `/32` device route with protocol `boot`, Calico felix's default; in the pod
//! `eth0` with the `/32`, `169.254.1.1` on link and the default route through it), BIRD on
//! confd's configuration ([`super::confd`]) and, in VXLAN mode, what Calico's felix programs:
//! `vxlan.calico` (VNI 4096, port 4789, the Node's MAC and tunnel address) with a route,
//! a permanent ARP entry and an FDB entry per remote VTEP (routes with protocol 80).

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::Ipv4Net;

use super::confd::{ConfdInput, render};
use super::confd6::{Confd6Input, render6};
use super::keys::{NodeKeys, PodKeys};
use crate::Result;
use crate::bird::Bird;
use crate::lab::{Addrs, Lab};
use crate::netns::Netns;

/// Calico's VXLAN device, VNI and port.
pub const CALICO_VXLAN_DEVICE: &str = "vxlan.calico";
pub const CALICO_VXLAN_VNI: u32 = 4096;
pub const CALICO_VXLAN_PORT: u16 = 4789;
/// The route protocol of Calico felix's own routes.
pub const CALICO_FELIX_PROTOCOL: &str = "80";

/// The runbook's way back, on a node margay-node has left: margay's routes but the pods'
/// handed to BIRD in place (protocol `bird`), IPv4 and IPv6, so calico-node's BIRD and bird6,
/// started with `-R`, take them for their own instead of failing to add their routes over
/// them ("File exists"). (`ip route show proto 81` leaves the protocol out of what it prints.)
pub const HANDOVER_TO_BIRD: &str = "for f in -4 -6; do ip $f route show proto 81 | grep -v ' dev cali' | \
                                    while read -r r; do ip $f route replace $r proto bird; done; done";

/// What is left of margay's routes once calico-node is back, both families.
pub const FLUSH_MARGAY: &str = "ip -4 route flush proto 81; ip -6 route flush proto 81";

/// A pod on a Calico node.
#[derive(Debug)]
pub struct CalicoPod {
    pub ns: Netns,
    pub keys: PodKeys,
}

/// A remote VXLAN tunnel endpoint as Calico's felix learns it from the datastore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteVtep {
    pub block: Ipv4Net,
    pub node_ip: Ipv4Addr,
    pub tunnel_ip: Ipv4Addr,
    pub mac: String,
}

/// A Calico node in the lab.
#[derive(Debug)]
pub struct CalicoNode {
    // Field order is drop order: BIRD stops before the namespaces go.
    bird: Option<Bird>,
    /// `bird6`, on a dual-stack node.
    bird6: Option<Bird>,
    pub pods: Vec<CalicoPod>,
    pub ns: Netns,
    pub name: String,
    pub addrs: Addrs,
    pub keys: NodeKeys,
}

/// The veth as Calico makes it: `cali` on `host` with MAC ee:ee:ee:ee:ee:ee, `eth0` in `pod`
/// with `ip`/32, a link route to 169.254.1.1 and the default route through it.
pub fn wire_veth(host: &Netns, pod: &Netns, cali: &str, ip: Ipv4Addr) -> Result<()> {
    host.ip(&[
        "link",
        "add",
        cali,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        pod.name(),
    ])?;
    host.ip(&["link", "set", cali, "address", "ee:ee:ee:ee:ee:ee"])?;
    host.ip(&["link", "set", cali, "up"])?;
    pod.ip(&["addr", "add", &format!("{ip}/32"), "dev", "eth0"])?;
    pod.ip(&["link", "set", "eth0", "up"])?;
    pod.ip(&[
        "route",
        "add",
        "169.254.1.1",
        "dev",
        "eth0",
        "scope",
        "link",
    ])?;
    pod.ip(&[
        "route",
        "add",
        "default",
        "via",
        "169.254.1.1",
        "dev",
        "eth0",
    ])?;
    Ok(())
}

/// The IPv6 side of a pod as Calico wires it (after [`wire_pod`]): the host side with IPv6
/// on, forwarding and proxy NDP (its link-local address from MAC ee:ee:ee:ee:ee:ee,
/// `fe80::ecee:eeff:feee:eeee`, is the pod's gateway); in the pod
/// `ip6/128` and the default route through that gateway; on the host `ip6/128 dev cali`
/// with protocol `boot`.
pub fn wire_pod6(host: &Netns, pod: &Netns, cali: &str, ip6: Ipv6Addr) -> Result<()> {
    host.exec("sysctl", &["-qw", "net.ipv6.conf.all.forwarding=1"])?;
    for knob in [
        "disable_ipv6=0",
        "accept_dad=0",
        "accept_ra=0",
        "proxy_ndp=1",
    ] {
        host.exec("sysctl", &["-qw", &format!("net.ipv6.conf.{cali}.{knob}")])?;
    }
    // (Not down and up again to skip DAD on the link-local address: that would delete the
    // pod's IPv4 route. DAD ends within a second or two, before any BIRD session is up.)
    pod.exec("sysctl", &["-qw", "net.ipv6.conf.eth0.accept_dad=0"])?;
    pod.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{ip6}/128"),
        "dev",
        "eth0",
        "nodad",
    ])?;
    pod.ip(&[
        "-6",
        "route",
        "add",
        "default",
        "via",
        "fe80::ecee:eeff:feee:eeee",
        "dev",
        "eth0",
    ])?;
    host.ip(&[
        "-6",
        "route",
        "add",
        &format!("{ip6}/128"),
        "dev",
        cali,
        "proto",
        "boot",
    ])?;
    Ok(())
}

/// A pod as calico-node leaves it: [`wire_veth`], forwarding, proxy ARP without delay on the
/// host side, and the pod's `/32` device route with protocol `boot` (Calico felix's
/// `deviceRouteProtocol` default).
pub fn wire_pod(host: &Netns, pod: &Netns, cali: &str, ip: Ipv4Addr) -> Result<()> {
    wire_veth(host, pod, cali, ip)?;
    host.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
    for knob in [
        format!("net.ipv4.conf.{cali}.proxy_arp=1"),
        format!("net.ipv4.neigh.{cali}.proxy_delay=0"),
    ] {
        host.exec("sysctl", &["-qw", &knob])?;
    }
    let pod32 = format!("{ip}/32");
    host.ip(&[
        "route", "add", &pod32, "dev", cali, "scope", "link", "proto", "boot",
    ])?;
    Ok(())
}

impl CalicoNode {
    /// The node in `ns`, attached at `addrs` (`keys.ip` must be that address), a default route
    /// through `gateway` (proxy ARP answers for 169.254.1.1 only when the host routes it), and
    /// its pods wired, each in a namespace of role `<role>p1`, `<role>p2`, ... (`role` at most 7
    /// characters).
    pub fn create(
        lab: &Lab,
        ns: Netns,
        role: &str,
        addrs: Addrs,
        gateway: Ipv4Addr,
        keys: NodeKeys,
    ) -> Result<CalicoNode> {
        ns.ip(&["route", "add", "default", "via", &gateway.to_string()])?;
        let mut pods = Vec::new();
        for (k, p) in keys.pods.iter().enumerate() {
            let pod_ns = lab.netns(&format!("{role}p{}", k + 1))?;
            wire_pod(&ns, &pod_ns, &p.interface, p.ip)?;
            if let Some(ip6) = p.ip6 {
                wire_pod6(&ns, &pod_ns, &p.interface, ip6)?;
            }
            pods.push(CalicoPod {
                ns: pod_ns,
                keys: p.clone(),
            });
        }
        Ok(CalicoNode {
            name: keys.name.clone(),
            ns,
            addrs,
            keys,
            pods,
            bird: None,
            bird6: None,
        })
    }

    /// Starts BIRD on confd's configuration for `input` (`bird -f`, as calico-node runs it).
    pub fn start_bird(&mut self, lab: &Lab, input: &ConfdInput) -> Result<()> {
        let text = render(input);
        let bird = Bird::start_text(
            lab,
            &self.ns,
            &format!("bird-{}", self.name),
            input.node_ip,
            &text,
            false,
        )?;
        self.bird = Some(bird);
        Ok(())
    }

    /// Starts `bird6` on confd's IPv6 configuration for `input`, as calico-node runs it
    /// beside `bird`.
    pub fn start_bird6(&mut self, lab: &Lab, input: &Confd6Input) -> Result<()> {
        let bird = Bird::start_text(
            lab,
            &self.ns,
            &format!("bird6-{}", self.name),
            input.router_id,
            &render6(input),
            false,
        )?;
        self.bird6 = Some(bird);
        Ok(())
    }

    /// Its `bird6`, while it runs.
    pub fn bird6(&self) -> Option<&Bird> {
        self.bird6.as_ref()
    }

    /// calico-node back on the node (the runbook's way back): Calico felix writes its pods'
    /// `/32` routes again (`replace`, protocol `boot`, over whatever holds them) and BIRD
    /// starts as calico-node's runit service starts it, `bird -R` (graceful restart
    /// recovery: its peers keep the node's routes until it has sent them again).
    pub fn return_calico(&mut self, lab: &Lab, input: &ConfdInput) -> Result<()> {
        for p in &self.pods {
            self.ns.ip(&[
                "route",
                "replace",
                &format!("{}/32", p.keys.ip),
                "dev",
                &p.keys.interface,
                "scope",
                "link",
                "proto",
                "boot",
            ])?;
        }
        let bird = Bird::start_text(
            lab,
            &self.ns,
            &format!("bird-{}-back", self.name),
            input.node_ip,
            &render(input),
            true,
        )?;
        self.bird = Some(bird);
        Ok(())
    }

    /// Lets BIRD and the namespaces outlive this guard (a kept lab); returns BIRD's PID.
    pub fn into_kept(self) -> Option<u32> {
        let CalicoNode {
            bird,
            bird6,
            pods,
            ns,
            ..
        } = self;
        if let Some(b) = bird6 {
            b.into_kept();
        }
        for p in pods {
            p.ns.into_kept();
        }
        ns.into_kept();
        bird.map(Bird::into_kept)
    }

    /// Its BIRD, while it runs.
    pub fn bird(&self) -> Option<&Bird> {
        self.bird.as_ref()
    }

    /// Kills BIRD (SIGKILL, as deleting the calico-node pod does at the end of its grace):
    /// no NOTIFICATION, so peers that negotiated graceful restart keep its routes, and its
    /// kernel routes stay (BIRD removes nothing when killed).
    pub fn kill_bird(&mut self) {
        for mut b in [self.bird.take(), self.bird6.take()].into_iter().flatten() {
            b.kill();
        }
    }

    /// Programs what Calico's felix does in VXLAN mode: the device with this node's VTEP,
    /// and a route, ARP and FDB entry per remote VTEP.
    pub fn program_vxlan(&self, remotes: &[RemoteVtep]) -> Result<()> {
        let Some((addr, mac)) = &self.keys.vtep else {
            return Ok(());
        };
        let ns = &self.ns;
        let local = self.addrs.ip4().to_string();
        ns.ip(&[
            "link",
            "add",
            CALICO_VXLAN_DEVICE,
            "type",
            "vxlan",
            "id",
            &CALICO_VXLAN_VNI.to_string(),
            "local",
            &local,
            "dstport",
            &CALICO_VXLAN_PORT.to_string(),
            "nolearning",
        ])?;
        ns.ip(&["link", "set", CALICO_VXLAN_DEVICE, "address", mac])?;
        ns.ip(&["link", "set", CALICO_VXLAN_DEVICE, "mtu", "1450"])?;
        ns.ip(&[
            "addr",
            "add",
            &format!("{addr}/32"),
            "dev",
            CALICO_VXLAN_DEVICE,
        ])?;
        ns.ip(&["link", "set", CALICO_VXLAN_DEVICE, "up"])?;
        for r in remotes {
            let tunnel = r.tunnel_ip.to_string();
            ns.ip(&[
                "neigh",
                "replace",
                &tunnel,
                "lladdr",
                &r.mac,
                "dev",
                CALICO_VXLAN_DEVICE,
                "nud",
                "permanent",
            ])?;
            ns.exec(
                "bridge",
                &[
                    "fdb",
                    "replace",
                    &r.mac,
                    "dev",
                    CALICO_VXLAN_DEVICE,
                    "dst",
                    &r.node_ip.to_string(),
                    "self",
                    "permanent",
                ],
            )?;
            ns.ip(&[
                "route",
                "replace",
                &r.block.to_string(),
                "via",
                &tunnel,
                "dev",
                CALICO_VXLAN_DEVICE,
                "onlink",
                "proto",
                CALICO_FELIX_PROTOCOL,
            ])?;
        }
        Ok(())
    }
}
