//! Address autodetection against a real kernel: each test builds a node in its own network
//! namespace, with the interfaces a Kubernetes node has, and runs `detect` inside it.
//!
//! How `detect` runs inside the namespace: it reads interfaces (`getifaddrs`) and asks for the
//! route's source address (a connected UDP socket) in the network namespace of the *calling
//! thread*. Each check therefore runs on a fresh thread that first enters the namespace with
//! `setns(open("/var/run/netns/NAME"), CLONE_NEWNET)`; the thread ends with the check, so no
//! other code ever runs in the namespace by accident.
//!
//! The node (`mgad-<pid>-<test>-n`), interfaces in creation order, so in kernel index order:
//!
//! | interface  | state       | addresses                          |
//! |------------|-------------|------------------------------------|
//! | `lo`       | up          | 127.0.0.1/8, ::1                   |
//! | `eth0`     | up          | 10.70.0.2/24, fd70::2/64           |
//! | `eth1`     | up          | 10.71.0.2/24, fd71::2/64           |
//! | `eth3`     | down        | 10.73.0.2/24, fd73::2/64           |
//! | `eth2`     | up          | 169.254.10.1/16, fe80::10/64 only  |
//! | `cali1234` | up          | 10.72.0.1/24, fd72::1/64           |
//! | `docker0`  | up          | 172.17.0.1/16, fd17::1/64          |
//!
//! Each is one end of a veth pair whose other end is up in a peer namespace
//! (`mgad-<pid>-<test>-p`); `eth3` alone is set down. Routes: 10.99.0.0/16 and
//! fd99::/16 via eth0, the IPv4 default via eth1, no IPv6 default. calico-node walks interfaces
//! highest index first, so `first-found` must pass over docker0, cali1234 (names), eth2
//! (link-local only) and eth3 (down) and take eth1.

use ipnet::IpNet;
use margay_bgp::autodetect::{AutodetectError, Detected, IpVersion, Method, detect};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;

/// A node namespace and its peer namespace, deleted on drop (also when a test fails).
struct Lab {
    node: String,
    peer: String,
}

impl Lab {
    fn new(test: &str) -> Lab {
        let tag = format!("mgad-{}-{test}", std::process::id());
        let lab = Lab {
            node: format!("{tag}-n"),
            peer: format!("{tag}-p"),
        };
        ip(&["netns", "add", &lab.node]);
        ip(&["netns", "add", &lab.peer]);
        lab.node_ip(&["link", "set", "lo", "up"]);
        let interfaces: [(&str, &str, &[&str]); 6] = [
            ("eth0", "p-eth0", &["10.70.0.2/24", "fd70::2/64"]),
            ("eth1", "p-eth1", &["10.71.0.2/24", "fd71::2/64"]),
            ("eth3", "p-eth3", &["10.73.0.2/24", "fd73::2/64"]),
            ("eth2", "p-eth2", &["169.254.10.1/16", "fe80::10/64"]),
            ("cali1234", "p-cali", &["10.72.0.1/24", "fd72::1/64"]),
            ("docker0", "p-docker", &["172.17.0.1/16", "fd17::1/64"]),
        ];
        for (name, peer_end, addresses) in interfaces {
            lab.node_ip(&[
                "link", "add", name, "type", "veth", "peer", "name", peer_end, "netns", &lab.peer,
            ]);
            ip(&["-n", &lab.peer, "link", "set", peer_end, "up"]);
            for address in addresses {
                let mut args = vec!["addr", "add", address, "dev", name];
                if address.contains(':') {
                    args.push("nodad");
                }
                lab.node_ip(&args);
            }
            if name != "eth3" {
                lab.node_ip(&["link", "set", name, "up"]);
            }
        }
        lab.node_ip(&["route", "add", "10.99.0.0/16", "via", "10.70.0.1"]);
        lab.node_ip(&["route", "add", "default", "via", "10.71.0.1"]);
        lab.node_ip(&[
            "-6",
            "route",
            "add",
            "fd99::/16",
            "via",
            "fd70::1",
            "dev",
            "eth0",
        ]);
        lab
    }

    fn node_ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.node.as_str()];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// Runs `detect` on a thread that has entered the node's network namespace.
    fn detect(&self, method: &str, version: IpVersion) -> Result<Detected, AutodetectError> {
        let method: Method = method.parse().expect("valid method");
        let path = format!("/var/run/netns/{}", self.node);
        std::thread::spawn(move || {
            let netns = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            // SAFETY: setns on a valid namespace fd; it changes only this thread's namespace.
            let rc = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            detect(&method, version)
        })
        .join()
        .expect("detect thread")
    }

    fn detected(&self, method: &str, version: IpVersion) -> Detected {
        self.detect(method, version)
            .unwrap_or_else(|e| panic!("{method} found nothing: {e}"))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.node, &self.peer] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn net(s: &str) -> IpNet {
    s.parse().expect("test network")
}

fn assert_reason_has(d: &Detected, parts: &[&str]) {
    for part in parts {
        assert!(
            d.reason.contains(part),
            "reason lacks '{part}': {}",
            d.reason
        );
    }
}

/// The checks, under a name that `cargo test -p margay-bgp autodetect` selects.
mod autodetect {
    use super::*;

    #[test]
    fn first_found_skips_internal_link_local_and_down_interfaces() {
        let lab = Lab::new("ff");
        let d = lab.detected("first-found", IpVersion::V4);
        assert_eq!(
            (d.address, d.interface.as_str()),
            (net("10.71.0.2/24"), "eth1")
        );
        assert!(
            d.reason.starts_with("first-found: 10.71.0.2/24 on eth1"),
            "{}",
            d.reason
        );
        assert_reason_has(
            &d,
            &[
                "docker0 matches ^docker.*",
                "cali1234 matches ^cali.*",
                "eth2 has only loopback or link-local IPv4 addresses (169.254.10.1/16)",
                "eth3 is down",
            ],
        );

        let d = lab.detected("first-found", IpVersion::V6);
        assert_eq!(
            (d.address, d.interface.as_str()),
            (net("fd71::2/64"), "eth1")
        );
        assert_reason_has(
            &d,
            &[
                "eth2 has only loopback or link-local IPv6 addresses",
                "eth3 is down",
            ],
        );
    }

    #[test]
    fn skip_interface_passes_over_the_named_interface() {
        let lab = Lab::new("skip");
        let d = lab.detected("skip-interface=eth1", IpVersion::V4);
        assert_eq!(
            (d.address, d.interface.as_str()),
            (net("10.70.0.2/24"), "eth0")
        );
        assert_reason_has(
            &d,
            &[
                "skip-interface=eth1: ",
                "eth1 matches eth1",
                "cali1234 matches ^cali.*",
            ],
        );

        let d = lab.detected("skip-interface=eth1", IpVersion::V6);
        assert_eq!(
            (d.address, d.interface.as_str()),
            (net("fd70::2/64"), "eth0")
        );

        let err = lab
            .detect("skip-interface=eth0,eth1", IpVersion::V4)
            .expect_err("nothing usable is left");
        let msg = err.to_string();
        assert!(msg.contains("no usable IPv4 address"), "{msg}");
        assert!(msg.contains("eth0 matches eth0"), "{msg}");
    }

    #[test]
    fn interface_regex_picks_the_matching_interface() {
        let lab = Lab::new("if");
        let d = lab.detected("interface=eth0", IpVersion::V4);
        assert_eq!(
            (d.address, d.interface.as_str()),
            (net("10.70.0.2/24"), "eth0")
        );
        assert_reason_has(
            &d,
            &["interface=eth0: 10.70.0.2/24 on eth0", "matching interface"],
        );

        // No built-in skips with interface=, as calico-node.
        let d = lab.detected("interface=cali.*", IpVersion::V6);
        assert_eq!(
            (d.address, d.interface.as_str()),
            (net("fd72::1/64"), "cali1234")
        );

        // Several matches: the first in calico-node's order, eth3 being down.
        let d = lab.detected("interface=eth[03]", IpVersion::V4);
        assert_eq!(d.interface, "eth0");
        assert_reason_has(&d, &["eth3 is down"]);

        let err = lab
            .detect("interface=eth3", IpVersion::V4)
            .expect_err("eth3 is down");
        assert!(err.to_string().contains("eth3 is down"), "{err}");
        let err = lab
            .detect("interface=eth2", IpVersion::V6)
            .expect_err("link-local only");
        assert!(
            err.to_string()
                .contains("eth2 has only loopback or link-local IPv6"),
            "{err}"
        );
        let err = lab
            .detect("interface=ens.*", IpVersion::V4)
            .expect_err("no such interface");
        assert!(
            err.to_string().contains("no interface matches ens.*"),
            "{err}"
        );
    }

    #[test]
    fn cidr_picks_the_address_inside() {
        let lab = Lab::new("cidr");
        let d = lab.detected("cidr=192.168.0.0/16,10.70.0.0/16", IpVersion::V4);
        assert_eq!(
            (d.address, d.interface.as_str()),
            (net("10.70.0.2/24"), "eth0")
        );
        assert_reason_has(&d, &["inside 192.168.0.0/16, 10.70.0.0/16"]);

        let d = lab.detected("cidr=fd72::/16", IpVersion::V6);
        assert_eq!(
            (d.address, d.interface.as_str()),
            (net("fd72::1/64"), "cali1234")
        );

        let err = lab
            .detect("cidr=10.73.0.0/16", IpVersion::V4)
            .expect_err("only on a down interface");
        assert!(err.to_string().contains("eth3 is down"), "{err}");
        let err = lab
            .detect("cidr=169.254.0.0/16", IpVersion::V4)
            .expect_err("link-local");
        assert!(
            err.to_string()
                .contains("eth2 has only loopback or link-local"),
            "{err}"
        );
    }

    #[test]
    fn can_reach_picks_the_interface_of_the_route() {
        let lab = Lab::new("reach");
        let d = lab.detected("can-reach=10.99.1.1", IpVersion::V4);
        assert_eq!(
            (d.address, d.interface.as_str()),
            (net("10.70.0.2/24"), "eth0")
        );
        assert_eq!(
            d.reason,
            "can-reach=10.99.1.1: 10.70.0.2/24 on eth0, the kernel's source address towards 10.99.1.1"
        );

        // The default route goes out of eth1.
        let d = lab.detected("can-reach=198.51.100.7", IpVersion::V4);
        assert_eq!(
            (d.address, d.interface.as_str()),
            (net("10.71.0.2/24"), "eth1")
        );

        // A destination on a connected subnet.
        let d = lab.detected("can-reach=10.72.0.9", IpVersion::V4);
        assert_eq!(d.interface, "cali1234");

        let d = lab.detected("can-reach=fd99::1", IpVersion::V6);
        assert_eq!(
            (d.address, d.interface.as_str()),
            (net("fd70::2/64"), "eth0")
        );

        // No IPv6 default route: the kernel has no source address to give.
        let err = lab
            .detect("can-reach=2001:db8::1", IpVersion::V6)
            .expect_err("no IPv6 route");
        assert!(matches!(err, AutodetectError::Unreachable { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with("can-reach=2001:db8::1: no route to 2001:db8::1"),
            "{err}"
        );
    }

    #[test]
    fn can_reach_resolves_host_names() {
        let lab = Lab::new("name");
        let d = lab.detected("can-reach=localhost", IpVersion::V4);
        assert_eq!(
            (d.address, d.interface.as_str()),
            (net("127.0.0.1/8"), "lo")
        );
        assert_reason_has(&d, &["towards localhost (127.0.0.1)"]);
    }
}
