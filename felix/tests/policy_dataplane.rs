//! felix's policy table with the real kernel, the real `nft` and real traffic: a "node"
//! namespace with three pods behind cali veths (wired as Calico wires them), policy compiled by
//! hand into the IR, applied by the [`PolicyKeeper`], and TCP, UDP and ICMP flows between the
//! pods and the node that must pass or fail as the policy says; over IPv4, and over IPv6 in a
//! dual-stack scene (neighbour discovery with the host allowed, as Calico allows it).

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::{veth, wire_pod};
use margay_felix::nat::{Family, Nft};
use margay_felix::policy::ir::*;
use margay_felix::policy::{PolicyKeeper, Table, render};
use margay_lab::flows::{Responder, pings, tcp_connects, udp_echoes};
use margay_lab::{Lab, Netns};

const NODE_IP: &str = "192.0.2.254";
const T: Duration = Duration::from_millis(400);

struct Pod {
    ns: Netns,
    cali: String,
    ip: IpAddr,
    /// The pod's IPv6 address, in a dual-stack scene.
    ip6: Option<IpAddr>,
    _responder: Responder,
}

struct Scene {
    node: Netns,
    pods: Vec<Pod>,
}

/// The pods' IPv6 gateway: the host side's link-local address (from its MAC ee:ee:ee:ee:ee:ee).
const GATEWAY_V6: &str = "fe80::ecee:eeff:feee:eeee";

impl Scene {
    fn new(lab: &Lab, n: usize) -> Scene {
        Scene::build(lab, n, false)
    }

    /// Pods with an IPv6 address beside the IPv4 one (`fd65::<i+1>/128`), wired as Calico's
    /// CNI plugin wires them: default route via the host side's link-local address, which the
    /// node answers itself (neighbour discovery to the host).
    fn dual(lab: &Lab, n: usize) -> Scene {
        Scene::build(lab, n, true)
    }

    fn build(lab: &Lab, n: usize, v6: bool) -> Scene {
        let node = lab.netns("node").unwrap();
        node.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"])
            .unwrap();
        if v6 {
            for s in [
                "net.ipv6.conf.all.disable_ipv6=0",
                "net.ipv6.conf.default.disable_ipv6=0",
                "net.ipv6.conf.default.accept_dad=0",
                "net.ipv6.conf.all.forwarding=1",
            ] {
                node.exec("sysctl", &["-qw", s]).unwrap();
            }
        }
        // Proxy ARP answers for 169.254.1.1 only when the node routes it elsewhere.
        // (no dummy module on this kernel: a veth pair inside the node stands in for the uplink)
        veth(&node, "up0", "up0p", None);
        node.ip(&["addr", "add", &format!("{NODE_IP}/32"), "dev", "up0"])
            .unwrap();
        node.ip(&["route", "add", "default", "dev", "up0"]).unwrap();
        let mut pods = Vec::new();
        for i in 0..n {
            let ns = lab.netns(&format!("p{i}")).unwrap();
            let cali = format!("cali{}{i:07}", lab.tag());
            let ip: IpAddr = format!("10.65.0.{}", i + 1).parse().unwrap();
            if v6 {
                for s in [
                    "net.ipv6.conf.all.disable_ipv6=0",
                    "net.ipv6.conf.default.disable_ipv6=0",
                    "net.ipv6.conf.default.accept_dad=0",
                ] {
                    ns.exec("sysctl", &["-qw", s]).unwrap();
                }
            }
            wire_pod(&node, &ns, &cali, &ip.to_string());
            let ip6: Option<IpAddr> = v6.then(|| format!("fd65::{}", i + 1).parse().unwrap());
            if let Some(ip6) = ip6 {
                ns.ip(&[
                    "-6",
                    "addr",
                    "add",
                    &format!("{ip6}/128"),
                    "dev",
                    "eth0",
                    "nodad",
                ])
                .unwrap();
                ns.ip(&[
                    "-6", "route", "add", "default", "via", GATEWAY_V6, "dev", "eth0",
                ])
                .unwrap();
                node.ip(&["-6", "route", "add", &format!("{ip6}/128"), "dev", &cali])
                    .unwrap();
            }
            for sysctl in [
                format!("net.ipv4.conf.{cali}.proxy_arp=1"),
                format!("net.ipv4.neigh.{cali}.proxy_delay=0"),
            ] {
                node.exec("sysctl", &["-qw", &sysctl]).unwrap();
            }
            node.ip(&["route", "add", &format!("{ip}/32"), "dev", &cali])
                .unwrap();
            // `::` serves both families.
            let on: IpAddr = if v6 {
                "::".parse().unwrap()
            } else {
                [0u8; 4].into()
            };
            let responder = Responder::start_on(ns.name(), on, &[80, 81, 8080], &[53]).unwrap();
            pods.push(Pod {
                ns,
                cali,
                ip,
                ip6,
                _responder: responder,
            });
        }
        Scene { node, pods }
    }

    fn keeper(&self) -> PolicyKeeper {
        PolicyKeeper::new(Nft::in_netns(self.node.name()))
    }

    fn tcp(&self, from: usize, to: usize, port: u16) -> bool {
        tcp_connects(
            self.pods[from].ns.name(),
            SocketAddr::new(self.pods[to].ip, port),
            T,
        )
        .unwrap()
    }

    fn udp(&self, from: usize, to: usize, port: u16) -> bool {
        udp_echoes(
            self.pods[from].ns.name(),
            SocketAddr::new(self.pods[to].ip, port),
            T,
        )
        .unwrap()
    }

    fn ping(&self, from: usize, to: usize) -> bool {
        pings(self.pods[from].ns.name(), self.pods[to].ip, 1).unwrap()
    }

    fn ip6(&self, pod: usize) -> IpAddr {
        self.pods[pod].ip6.expect("a dual-stack scene")
    }

    fn tcp6(&self, from: usize, to: usize, port: u16) -> bool {
        tcp_connects(
            self.pods[from].ns.name(),
            SocketAddr::new(self.ip6(to), port),
            T,
        )
        .unwrap()
    }

    fn udp6(&self, from: usize, to: usize, port: u16) -> bool {
        udp_echoes(
            self.pods[from].ns.name(),
            SocketAddr::new(self.ip6(to), port),
            T,
        )
        .unwrap()
    }

    fn ping6(&self, from: usize, to: usize) -> bool {
        pings(self.pods[from].ns.name(), self.ip6(to), 1).unwrap()
    }

    /// Both addresses of each pod, as the compiler fills a selector's set.
    fn set_of_both(&self, pods: &[usize]) -> BTreeSet<ipnet::IpNet> {
        pods.iter()
            .flat_map(|i| [self.pods[*i].ip, self.ip6(*i)])
            .map(ipnet::IpNet::from)
            .collect()
    }

    /// An IR with every pod known and no policy.
    fn open(&self) -> PolicyIr {
        let mut ir = PolicyIr::default();
        for p in &self.pods {
            ir.endpoints
                .insert(p.cali.clone(), EndpointPolicy::default());
        }
        ir
    }

    /// A keeper, and the open IR (in both families for a dual-stack scene) applied with it.
    fn started(&self) -> (PolicyKeeper, PolicyIr) {
        let mut k = self.keeper();
        let mut ir = self.open();
        if self.pods.iter().any(|p| p.ip6.is_some()) {
            ir.families = vec![Family::V4, Family::V6];
        }
        apply(&mut k, &ir);
        (k, ir)
    }

    fn set_of(&self, pods: &[usize]) -> BTreeSet<ipnet::IpNet> {
        pods.iter()
            .map(|i| ipnet::IpNet::from(self.pods[*i].ip))
            .collect()
    }
}

fn tier(name: &str, policies: &[&str]) -> TierSeq {
    TierSeq {
        tier: name.into(),
        policies: policies.iter().map(|s| s.to_string()).collect(),
        end: TierEnd::Deny,
    }
}

fn ingress_only(rules: Vec<Rule>) -> PolicyRules {
    PolicyRules {
        ingress: Some(rules),
        egress: None,
    }
}

fn tcp_from(set: &str, ports: &[u16]) -> Rule {
    let mut r = Rule::any(Action::Allow);
    r.protocol = Some(6);
    r.source.sets = vec![set.into()];
    r.destination.ports = ports.iter().map(|p| PortRange::one(*p)).collect();
    r
}

/// Adds the address set of `cidr` (a rule's `nets`) and returns its id.
fn nets(ir: &mut PolicyIr, cidr: &str) -> String {
    let id = format!("nets:{cidr}");
    ir.addr_sets
        .insert(id.clone(), [cidr.parse().unwrap()].into());
    id
}

fn apply(k: &mut PolicyKeeper, ir: &PolicyIr) -> Table {
    let t = render(ir);
    k.apply(&t).unwrap();
    t
}

#[test]
fn no_policy_allows_everything_and_default_deny_ingress_denies_new_flows_only() {
    let lab = Lab::new("policy_default_deny").unwrap();
    let s = Scene::new(&lab, 2);
    let mut k = s.keeper();
    let mut ir = s.open();
    apply(&mut k, &ir);
    assert!(
        s.tcp(0, 1, 80) && s.udp(0, 1, 53) && s.ping(0, 1),
        "no policy: all open"
    );

    // Kubernetes' "default deny all ingress" on pod 1.
    ir.policies
        .insert("default/deny-ingress".into(), ingress_only(vec![]));
    ir.endpoints.get_mut(&s.pods[1].cali).unwrap().ingress =
        vec![tier("default", &["default/deny-ingress"])];
    apply(&mut k, &ir);
    assert!(!s.tcp(0, 1, 80), "tcp to the isolated pod passed");
    assert!(!s.udp(0, 1, 53), "udp to the isolated pod passed");
    assert!(!s.ping(0, 1), "icmp to the isolated pod passed");
    // Its own connections out still work: their replies are established traffic.
    assert!(s.tcp(1, 0, 80) && s.udp(1, 0, 53) && s.ping(1, 0));
    // The host's own traffic to its workloads (kubelet probes) passes.
    assert!(
        pings(s.node.name(), s.pods[1].ip, 1).unwrap(),
        "host → pod ping dropped"
    );
}

#[test]
fn allow_from_a_selector_set_on_listed_ports_and_a_new_member_takes_effect_fast() {
    let lab = Lab::new("policy_selector_set").unwrap();
    let s = Scene::new(&lab, 3);
    let mut k = s.keeper();
    let mut ir = s.open();
    ir.addr_sets
        .insert("sel:role == 'client'".into(), s.set_of(&[0]));
    ir.policies.insert(
        "default/allow-clients".into(),
        ingress_only(vec![tcp_from("sel:role == 'client'", &[80])]),
    );
    ir.endpoints.get_mut(&s.pods[1].cali).unwrap().ingress =
        vec![tier("default", &["default/allow-clients"])];
    apply(&mut k, &ir);
    assert!(s.tcp(0, 1, 80), "client → 80 denied");
    assert!(!s.tcp(0, 1, 81), "client → 81 passed");
    assert!(!s.udp(0, 1, 53), "client udp passed");
    assert!(!s.tcp(2, 1, 80), "non-client → 80 passed");

    // Pod 2 gets the label: only a set element changes, and the flow opens at once.
    ir.addr_sets
        .insert("sel:role == 'client'".into(), s.set_of(&[0, 2]));
    let started = Instant::now();
    let report = k.apply(&render(&ir)).unwrap();
    let took = started.elapsed();
    assert_eq!(report.script_lines, 1, "one element added");
    assert!(took < Duration::from_secs(1), "label change took {took:?}");
    assert!(s.tcp(2, 1, 80), "new client denied");
}

#[test]
fn tiers_pass_and_deny_in_calicos_order() {
    let lab = Lab::new("policy_tiers").unwrap();
    let s = Scene::new(&lab, 3);
    let mut k = s.keeper();
    let mut ir = s.open();
    ir.addr_sets.insert("sel:a".into(), s.set_of(&[0]));
    ir.addr_sets.insert("sel:c".into(), s.set_of(&[2]));
    // Tier security: deny pod 2 outright, pass pod 0 to the next tier; others end the tier: deny.
    let mut deny_c = Rule::any(Action::Deny);
    deny_c.source.sets = vec!["sel:c".into()];
    let mut pass_a = Rule::any(Action::Pass);
    pass_a.source.sets = vec!["sel:a".into()];
    ir.policies
        .insert("security.gate".into(), ingress_only(vec![deny_c, pass_a]));
    // Tier default: allow tcp/80 from anyone (pod 2 never gets here).
    let mut allow80 = Rule::any(Action::Allow);
    allow80.protocol = Some(6);
    allow80.destination.ports = vec![PortRange::one(80)];
    ir.policies
        .insert("default.web".into(), ingress_only(vec![allow80]));
    ir.endpoints.get_mut(&s.pods[1].cali).unwrap().ingress = vec![
        tier("security", &["security.gate"]),
        tier("default", &["default.web"]),
    ];
    apply(&mut k, &ir);
    assert!(s.tcp(0, 1, 80), "passed to the default tier, allowed there");
    assert!(
        !s.tcp(0, 1, 81),
        "passed, then the default tier's end denies"
    );
    assert!(
        !s.tcp(2, 1, 80),
        "denied in the security tier despite the later allow"
    );

    // Pass at the end of the security tier instead of deny: a tier with defaultAction Pass.
    let mut open = ir.clone();
    open.endpoints.get_mut(&s.pods[1].cali).unwrap().ingress[0].end = TierEnd::Pass;
    open.policies
        .insert("security.gate".into(), ingress_only(vec![]));
    apply(&mut k, &open);
    assert!(s.tcp(2, 1, 80), "tier end Pass: the default tier allows 80");
}

#[test]
fn egress_to_a_cidr_with_an_except_block_and_icmp() {
    let lab = Lab::new("policy_egress").unwrap();
    let s = Scene::new(&lab, 3);
    let mut k = s.keeper();
    let mut ir = s.open();
    // Kubernetes' ipBlock {cidr: 10.65.0.0/24, except: [10.65.0.3/32]} on any port.
    let mut to_block = Rule::any(Action::Allow);
    to_block.destination.sets = vec![nets(&mut ir, "10.65.0.0/24")];
    to_block.destination.not_sets = vec![nets(&mut ir, "10.65.0.3/32")];
    ir.policies.insert(
        "default/egress".into(),
        PolicyRules {
            ingress: None,
            egress: Some(vec![to_block]),
        },
    );
    ir.endpoints.get_mut(&s.pods[0].cali).unwrap().egress =
        vec![tier("default", &["default/egress"])];
    apply(&mut k, &ir);
    assert!(
        s.tcp(0, 1, 80) && s.udp(0, 1, 53) && s.ping(0, 1),
        "to the block: open"
    );
    assert!(
        !s.tcp(0, 2, 80) && !s.ping(0, 2),
        "to the except block: closed"
    );
    assert!(s.tcp(2, 0, 80), "ingress to pod 0 is not restricted");
}

#[test]
fn unknown_workload_interface_and_workload_to_host_follow_calicos_defaults() {
    let lab = Lab::new("policy_host").unwrap();
    let s = Scene::new(&lab, 2);
    let mut k = s.keeper();
    let mut ir = s.open();
    ir.endpoints.remove(&s.pods[1].cali);
    apply(&mut k, &ir);
    assert!(
        !s.ping(0, 1),
        "a cali interface felix does not know passed traffic"
    );
    assert!(
        !s.ping(1, 0),
        "traffic from an unknown cali interface passed"
    );
    let node: IpAddr = NODE_IP.parse().unwrap();
    assert!(
        !pings(s.pods[0].ns.name(), node, 1).unwrap(),
        "defaultEndpointToHostAction Drop"
    );
    ir.endpoint_to_host = EndpointToHost::Accept;
    apply(&mut k, &ir);
    assert!(
        pings(s.pods[0].ns.name(), node, 1).unwrap(),
        "defaultEndpointToHostAction Accept"
    );
}

#[test]
fn drift_is_repaired_and_a_new_keeper_adopts_the_table_in_place() {
    let lab = Lab::new("policy_drift").unwrap();
    let s = Scene::new(&lab, 2);
    let mut k = s.keeper();
    let mut ir = s.open();
    ir.policies
        .insert("default/deny-ingress".into(), ingress_only(vec![]));
    ir.endpoints.get_mut(&s.pods[1].cali).unwrap().ingress =
        vec![tier("default", &["default/deny-ingress"])];
    let want = apply(&mut k, &ir);
    assert!(!s.tcp(0, 1, 80));

    // Someone flushes the table: everything opens, until the resync puts it back.
    s.node
        .exec("nft", &["flush", "table", "inet", "margay-policy"])
        .unwrap();
    assert!(
        s.tcp(0, 1, 80),
        "a flushed table still denied (the test is not testing)"
    );
    let report = k.resync(&want).unwrap();
    assert!(report.drift);
    assert!(!s.tcp(0, 1, 80), "drift not repaired");
    // Someone deletes the pod's map entry and adds a rule: both repaired.
    s.node
        .exec(
            "nft",
            &[
                "delete",
                "element",
                "inet",
                "margay-policy",
                "wl-in",
                &format!("{{ \"{}\" }}", s.pods[1].cali),
            ],
        )
        .unwrap();
    s.node
        .exec(
            "nft",
            &[
                "insert",
                "rule",
                "inet",
                "margay-policy",
                "forward-in",
                "accept",
            ],
        )
        .unwrap();
    assert!(k.resync(&want).unwrap().drift);
    assert!(
        k.resync(&want).unwrap() == Default::default(),
        "a second resync found drift again"
    );
    assert!(!s.tcp(0, 1, 80));

    // A restarted felix (a new keeper) finds the table as it wants it: no transaction at all.
    let mut again = s.keeper();
    assert_eq!(again.apply(&want).unwrap().transactions, 0);
    // And patches only what changed.
    ir.policies.insert(
        "default/deny-ingress".into(),
        ingress_only(vec![Rule::any(Action::Allow)]),
    );
    let r = again.apply(&render(&ir)).unwrap();
    assert_eq!(r.script_lines, 2, "flush + one rule");
    assert!(s.tcp(0, 1, 80));
}

#[test]
fn ipv6_pod_traffic_follows_the_same_policy_with_neighbour_discovery_allowed() {
    let lab = Lab::new("policy_ipv6").unwrap();
    let s = Scene::dual(&lab, 3);
    let (mut k, mut ir) = s.started();
    assert!(
        s.tcp6(0, 1, 80) && s.udp6(0, 1, 53) && s.ping6(0, 1),
        "no policy: IPv6 open"
    );

    // Pod 1, ingress: tcp/80 from the clients (pod 0, both families, one selector), udp/53
    // from fd65::/64 on IPv6 only (ipVersion: 6), ICMPv6 echo requests (type 128) from anyone.
    ir.addr_sets
        .insert("sel:role == 'client'".into(), s.set_of_both(&[0]));
    let mut dns6 = Rule::any(Action::Allow);
    dns6.ip_version = Some(Family::V6);
    dns6.protocol = Some(17);
    dns6.source.sets = vec![nets(&mut ir, "fd65::/64")];
    dns6.destination.ports = vec![PortRange::one(53)];
    let mut echo6 = Rule::any(Action::Allow);
    echo6.ip_version = Some(Family::V6);
    echo6.protocol = Some(58);
    echo6.icmp = Some(Icmp {
        kind: Some(128),
        code: None,
    });
    ir.policies.insert(
        "default/web6".into(),
        ingress_only(vec![tcp_from("sel:role == 'client'", &[80]), dns6, echo6]),
    );
    ir.endpoints.get_mut(&s.pods[1].cali).unwrap().ingress =
        vec![tier("default", &["default/web6"])];
    apply(&mut k, &ir);
    assert!(s.tcp6(0, 1, 80), "client → [pod1]:80 denied");
    assert!(
        s.tcp(0, 1, 80),
        "the same selector allows the client over IPv4"
    );
    assert!(!s.tcp6(0, 1, 81), "client → [pod1]:81 passed");
    assert!(!s.tcp6(2, 1, 80), "non-client → [pod1]:80 passed");
    assert!(s.udp6(2, 1, 53), "udp/53 from fd65::/64 denied");
    assert!(!s.udp(2, 1, 53), "an ipVersion 6 rule allowed IPv4");
    assert!(s.ping6(2, 1), "ICMPv6 echo request denied");
    assert!(!s.ping(2, 1), "an ICMPv6 rule allowed ICMP");
    // Pod 1's own connections out: their replies are established IPv6 traffic.
    assert!(s.tcp6(1, 0, 80) && s.udp6(1, 2, 53));

    // Pod 0, egress: to fd65::/64 except fd65::3 (pod 2) and to the IPv4 pods.
    let mut to6 = Rule::any(Action::Allow);
    to6.destination.sets = vec![nets(&mut ir, "fd65::/64")];
    to6.destination.not_sets = vec![nets(&mut ir, "fd65::3/128")];
    let mut to4 = Rule::any(Action::Allow);
    to4.destination.sets = vec![nets(&mut ir, "10.65.0.0/24")];
    ir.policies.insert(
        "default/egress6".into(),
        PolicyRules {
            ingress: None,
            egress: Some(vec![to6, to4]),
        },
    );
    ir.endpoints.get_mut(&s.pods[0].cali).unwrap().egress =
        vec![tier("default", &["default/egress6"])];
    apply(&mut k, &ir);
    assert!(s.tcp6(0, 1, 80), "to fd65::/64: open");
    assert!(
        !s.tcp6(0, 2, 80) && !s.ping6(0, 2),
        "to the except block: closed"
    );
    assert!(s.tcp(0, 2, 80), "IPv4 to pod 2: open");

    // Neighbour discovery with the host passes under defaultEndpointToHostAction Drop: the
    // pods resolved their gateway (the host side's link-local address) to its MAC.
    for p in &s.pods {
        let neigh = p.ns.ip(&["-6", "neigh", "show", "dev", "eth0"]).unwrap();
        assert!(
            neigh.contains(GATEWAY_V6) && neigh.contains("ee:ee:ee:ee:ee:ee"),
            "{}: no resolved gateway: {neigh}",
            p.ns.name()
        );
    }
    // Default deny ingress on pod 2 holds for IPv6 too.
    ir.policies
        .insert("default/deny-ingress".into(), ingress_only(vec![]));
    ir.endpoints.get_mut(&s.pods[2].cali).unwrap().ingress =
        vec![tier("default", &["default/deny-ingress"])];
    apply(&mut k, &ir);
    assert!(!s.tcp6(1, 2, 80) && !s.udp6(1, 2, 53) && !s.ping6(1, 2));
    // ... while its own IPv6 connections out still get their replies.
    assert!(s.udp6(2, 1, 53), "pod 2's udp/53 to pod 1 lost its reply");
}
