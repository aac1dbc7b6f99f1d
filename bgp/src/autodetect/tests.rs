//! The selection rules over interface lists written out by hand; the same rules against a real
//! kernel are in `bgp/tests/autodetect_netns.rs`.

use super::*;

fn iface(name: &str, index: u32, addresses: &[&str]) -> HostInterface {
    HostInterface {
        name: name.to_string(),
        index,
        up: true,
        addresses: addresses
            .iter()
            .map(|a| a.parse().expect("test address"))
            .collect(),
    }
}

/// Runs an enumeration method over `interfaces` (already in calico-node's order).
fn pick(
    method: &str,
    version: IpVersion,
    interfaces: &[HostInterface],
) -> Result<Detected, AutodetectError> {
    let method: Method = method.parse().expect("test method");
    let Plan::Enumerate(filter) = plan(&method) else {
        panic!("{method} is not an enumeration method");
    };
    select(&method, version, interfaces, &filter)
}

fn node() -> Vec<HostInterface> {
    vec![
        iface("docker0", 9, &["172.17.0.1/16"]),
        iface(
            "cali0123456789a",
            8,
            &["169.254.1.1/32", "fe80::ecee:eeff:feee:eeee/64"],
        ),
        iface("tunl0", 7, &["10.244.0.1/32"]),
        iface("eth1", 3, &["fe80::1/64", "10.1.0.5/24", "fd01::5/64"]),
        iface("eth0", 2, &["192.168.0.5/24", "fd00::5/64"]),
        iface("lo", 1, &["127.0.0.1/8", "::1/128"]),
    ]
}

#[test]
fn first_found_skips_internal_interfaces_and_link_local() {
    let d = pick("first-found", IpVersion::V4, &node()).expect("detected");
    assert_eq!(d.address, "10.1.0.5/24".parse::<IpNet>().expect("net"));
    assert_eq!(d.interface, "eth1");
    assert!(
        d.reason.starts_with("first-found: 10.1.0.5/24 on eth1"),
        "{}",
        d.reason
    );
    assert!(
        d.reason.contains("docker0 matches ^docker.*"),
        "{}",
        d.reason
    );
    assert!(
        d.reason.contains("cali0123456789a matches ^cali.*"),
        "{}",
        d.reason
    );
    assert!(d.reason.contains("tunl0 matches ^tunl.*"), "{}", d.reason);
}

#[test]
fn first_found_ipv6_passes_over_link_local_on_the_same_interface() {
    let d = pick("first-found", IpVersion::V6, &node()).expect("detected");
    assert_eq!(d.address.to_string(), "fd01::5/64");
    assert_eq!(d.interface, "eth1");
}

#[test]
fn first_found_skips_down_interfaces() {
    let mut list = node();
    list[3].up = false;
    let d = pick("first-found", IpVersion::V4, &list).expect("detected");
    assert_eq!(d.interface, "eth0");
    assert!(d.reason.contains("eth1 is down"), "{}", d.reason);
}

#[test]
fn first_found_never_takes_loopback() {
    let list = vec![
        iface("eth0", 2, &["fe80::1/64"]),
        iface("lo", 1, &["127.0.0.1/8"]),
    ];
    let err = pick("first-found", IpVersion::V4, &list).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("first-found: no usable IPv4 address"),
        "{msg}"
    );
    assert!(msg.contains("eth0 has no IPv4 address"), "{msg}");
    assert!(msg.contains("lo matches ^lo$"), "{msg}");
}

#[test]
fn loopback_named_otherwise_is_not_usable() {
    let list = vec![iface("lo0", 2, &["127.0.0.2/8", "169.254.3.3/16"])];
    let err = pick("first-found", IpVersion::V4, &list).unwrap_err();
    assert!(
        err.to_string().contains(
            "lo0 has only loopback or link-local IPv4 addresses (127.0.0.2/8, 169.254.3.3/16)"
        ),
        "{err}"
    );
}

#[test]
fn skip_interface_adds_to_the_built_in_list() {
    let d = pick("skip-interface=eth1", IpVersion::V4, &node()).expect("detected");
    assert_eq!(d.interface, "eth0");
    assert!(
        d.reason
            .starts_with("skip-interface=eth1: 192.168.0.5/24 on eth0"),
        "{}",
        d.reason
    );
    assert!(d.reason.contains("eth1 matches eth1"), "{}", d.reason);
    assert!(
        d.reason.contains("docker0 matches ^docker.*"),
        "{}",
        d.reason
    );
}

#[test]
fn interface_takes_the_first_matching_interface_in_order() {
    let d = pick("interface=eth.*", IpVersion::V4, &node()).expect("detected");
    assert_eq!(d.interface, "eth1");
    let d = pick("interface=eth0,ens.*", IpVersion::V4, &node()).expect("detected");
    assert_eq!(d.interface, "eth0");
    assert!(d.reason.contains("on a matching interface"), "{}", d.reason);
}

#[test]
fn interface_applies_no_built_in_skips() {
    let d = pick("interface=docker.*", IpVersion::V4, &node()).expect("detected");
    assert_eq!(d.interface, "docker0");
}

#[test]
fn interface_without_match_lists_the_interfaces() {
    let err = pick("interface=ens.*", IpVersion::V4, &node()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("no interface matches ens.*"), "{msg}");
    assert!(msg.contains("eth0"), "{msg}");
}

#[test]
fn cidr_takes_the_first_address_inside() {
    let d = pick("cidr=192.168.0.0/16,10.99.0.0/16", IpVersion::V4, &node()).expect("detected");
    assert_eq!(d.address.to_string(), "192.168.0.5/24");
    assert_eq!(d.interface, "eth0");
    assert!(
        d.reason.contains("inside 192.168.0.0/16, 10.99.0.0/16"),
        "{}",
        d.reason
    );
    // No built-in skips, as calico-node: a cidr can name the docker bridge.
    let d = pick("cidr=172.16.0.0/12", IpVersion::V4, &node()).expect("detected");
    assert_eq!(d.interface, "docker0");
}

#[test]
fn cidr_never_takes_link_local_even_when_asked() {
    let err = pick("cidr=169.254.0.0/16", IpVersion::V4, &node()).unwrap_err();
    assert!(
        err.to_string()
            .contains("cali0123456789a has only loopback or link-local"),
        "{err}"
    );
}

#[test]
fn cidr_of_the_other_family_finds_nothing() {
    let err = pick("cidr=10.0.0.0/8", IpVersion::V6, &node()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cidr=10.0.0.0/8: no usable IPv6 address"),
        "{err}"
    );
}

#[test]
fn long_skip_lists_are_capped() {
    let mut list: Vec<_> = (0..30)
        .map(|i| iface(&format!("cali{i:02}"), 100 - i, &["169.254.1.1/32"]))
        .collect();
    list.push(iface("eth0", 2, &["10.0.0.2/24"]));
    let d = pick("first-found", IpVersion::V4, &list).expect("detected");
    assert!(d.reason.ends_with(" and 18 more)"), "{}", d.reason);
}

#[test]
fn global_unicast_follows_go() {
    for a in [
        "10.0.0.1",
        "192.168.1.1",
        "fd00::1",
        "2001:db8::1",
        "100.64.0.1",
    ] {
        assert!(is_global_unicast(a.parse().expect("addr")), "{a}");
    }
    for a in [
        "0.0.0.0",
        "127.0.0.1",
        "169.254.0.1",
        "224.0.0.5",
        "255.255.255.255",
        "::",
        "::1",
        "fe80::1",
        "febf::1",
        "ff02::1",
    ] {
        assert!(!is_global_unicast(a.parse().expect("addr")), "{a}");
    }
}

#[test]
fn resolves_ip_literal_of_the_wanted_family_only() {
    let m = Method::CanReach("10.0.0.1".into());
    assert_eq!(
        resolve(&m, "10.0.0.1", IpVersion::V4).expect("v4"),
        "10.0.0.1".parse::<IpAddr>().expect("addr")
    );
    let err = resolve(&m, "10.0.0.1", IpVersion::V6).unwrap_err();
    assert_eq!(
        err.to_string(),
        "can-reach=10.0.0.1: '10.0.0.1' has no IPv6 address"
    );
}
