//! One test's lab: a unique name tag, a logs directory, and address blocks that no other test
//! in this process uses.
//!
//! Names are `mg` + a 4-character tag + a role (`mg3k9xr1`), so parallel tests and parallel
//! test processes never collide. Addresses come from 10.99.0.0/16 and fd00:99::/32 (private
//! ranges), only ever configured inside our namespaces.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::netns::{MAX_NAME_LEN, Netns, Switch, require_root};
use crate::{LabError, Result};

static LABS: AtomicU32 = AtomicU32::new(0);
static SUBNETS: AtomicU32 = AtomicU32::new(0);
static BLOCKS: AtomicU32 = AtomicU32::new(0);

/// A test's lab context. Declare it first in a test so it is dropped last.
#[derive(Debug)]
pub struct Lab {
    test: String,
    tag: String,
    dir: Option<tempfile::TempDir>,
}

impl Lab {
    /// Starts a lab for the test `test` (its name, used in messages). Fails unless root.
    pub fn new(test: &str) -> Result<Lab> {
        require_root()?;
        let tag = unique_tag();
        let dir = tempfile::Builder::new()
            .prefix(&format!("mg{tag}-"))
            .tempdir()
            .map_err(LabError::io("creating the lab directory"))?;
        std::fs::write(dir.path().join("TEST"), format!("{test}\n"))
            .map_err(LabError::io("writing the lab directory's TEST file"))?;
        Ok(Lab {
            test: test.to_string(),
            tag,
            dir: Some(dir),
        })
    }

    /// The tag in every name this lab creates.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Where configs, sockets and logs of this test live.
    pub fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .map(|d| d.path())
            .unwrap_or(Path::new("/tmp"))
    }

    /// Lets the lab's directory outlive this guard (it is otherwise removed on drop); returns
    /// its path.
    pub fn into_kept(mut self) -> PathBuf {
        match self.dir.take() {
            Some(dir) => dir.keep(),
            None => PathBuf::from("/tmp"),
        }
    }

    /// The namespace name for `role`: `mg` + tag + role, at most 15 characters.
    pub fn name(&self, role: &str) -> Result<String> {
        let name = format!("mg{}{role}", self.tag);
        if name.len() > MAX_NAME_LEN || !role.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(LabError::Render(format!(
                "role {role:?} must be ASCII letters/digits and at most {} characters",
                MAX_NAME_LEN - 2 - self.tag.len()
            )));
        }
        Ok(name)
    }

    /// Creates a host namespace for `role`.
    pub fn netns(&self, role: &str) -> Result<Netns> {
        Netns::create(&self.name(role)?)
    }

    /// Creates a switch (an L2 segment) for `role` with its own subnet.
    pub fn switch(&self, role: &str) -> Result<LabSwitch> {
        Ok(LabSwitch {
            switch: Switch::create(&self.name(role)?)?,
            subnet: Subnet::allocate(),
            next_host: AtomicU32::new(1),
        })
    }

    /// Joins `a` and `b` with a veth pair on a fresh subnet: `a` gets host 1, `b` host 2.
    pub fn link(&self, a: &Netns, b: &Netns) -> Result<LinkAddrs> {
        let subnet = Subnet::allocate();
        let (mut aa, mut ba) = (subnet.host(1), subnet.host(2));
        let (ai, bi) = a.veth(b, &aa.nets(), &ba.nets())?;
        aa.ifname = ai;
        ba.ifname = bi;
        Ok(LinkAddrs { a: aa, b: ba })
    }
}

/// The next IPv4 /26 "pod block" no other test of this process originates (10.100.0.0/16).
pub fn block4() -> Ipv4Net {
    let n = BLOCKS.fetch_add(1, Ordering::Relaxed) % 1024;
    Ipv4Net::new(
        Ipv4Addr::new(10, 100, (n / 4) as u8, (n % 4 * 64) as u8),
        26,
    )
    .expect("26 is a valid length")
}

/// The next IPv6 /122 block no other test of this process originates (fd00:100::/64).
pub fn block6() -> Ipv6Net {
    let n = BLOCKS.fetch_add(1, Ordering::Relaxed) % 65536;
    Ipv6Net::new(Ipv6Addr::new(0xfd00, 0x100, 0, 0, 0, 0, n as u16, 0), 122)
        .expect("122 is a valid length")
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(dir) = self.dir.take()
        {
            let kept: PathBuf = dir.keep();
            eprintln!(
                "lab: test {} failed; its logs are in {}",
                self.test,
                kept.display()
            );
        }
    }
}

/// A 4-character base-36 tag from the PID, the clock and a counter.
fn unique_tag() -> String {
    let n = LABS.fetch_add(1, Ordering::Relaxed) as u64;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    let mut x = (std::process::id() as u64)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(nanos.wrapping_mul(0xBF58_476D_1CE4_E5B9))
        .wrapping_add(n.wrapping_mul(0x94D0_49BB_1331_11EB));
    x ^= x >> 31;
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    (0..4)
        .map(|_| {
            let d = DIGITS[(x % 36) as usize] as char;
            x /= 36;
            d
        })
        .collect()
}

/// A /24 and a /64 for one segment: `10.99.N.0/24` and `fd00:99:N::/64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub v4: Ipv4Net,
    pub v6: Ipv6Net,
}

impl Subnet {
    /// The next subnet no other segment of this process uses (N cycles through 1..=250).
    pub fn allocate() -> Subnet {
        let n = (SUBNETS.fetch_add(1, Ordering::Relaxed) % 250 + 1) as u8;
        Subnet {
            v4: Ipv4Net::new(Ipv4Addr::new(10, 99, n, 0), 24).expect("24 is a valid length"),
            v6: Ipv6Net::new(Ipv6Addr::new(0xfd00, 0x99, n as u16, 0, 0, 0, 0, 0), 64)
                .expect("64 is a valid length"),
        }
    }

    /// Host `i` of the subnet (10.99.N.i/24, fd00:99:N::i/64), not yet on an interface.
    pub fn host(&self, i: u8) -> Addrs {
        let [a, b, c, _] = self.v4.network().octets();
        let mut v6 = self.v6.network().segments();
        v6[7] = i as u16;
        Addrs {
            ifname: String::new(),
            v4: Ipv4Net::new(Ipv4Addr::new(a, b, c, i), 24).expect("valid length"),
            v6: Ipv6Net::new(Ipv6Addr::from(v6), 64).expect("valid length"),
        }
    }
}

/// One end of a link: its interface and addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addrs {
    pub ifname: String,
    pub v4: Ipv4Net,
    pub v6: Ipv6Net,
}

impl Addrs {
    /// The IPv4 address without its length.
    pub fn ip4(&self) -> Ipv4Addr {
        self.v4.addr()
    }
    /// The IPv6 address without its length.
    pub fn ip6(&self) -> Ipv6Addr {
        self.v6.addr()
    }
    fn nets(&self) -> [IpNet; 2] {
        [IpNet::V4(self.v4), IpNet::V6(self.v6)]
    }
}

/// Both ends of a veth link made by [`Lab::link`].
#[derive(Debug, Clone)]
pub struct LinkAddrs {
    pub a: Addrs,
    pub b: Addrs,
}

/// A [`Switch`] with its subnet: each attached host gets the next address.
#[derive(Debug)]
pub struct LabSwitch {
    switch: Switch,
    subnet: Subnet,
    next_host: AtomicU32,
}

impl LabSwitch {
    /// Plugs `host` in and gives it the next host address of the segment.
    pub fn attach(&self, host: &Netns) -> Result<Addrs> {
        let i = self.next_host.fetch_add(1, Ordering::Relaxed);
        let i = u8::try_from(i)
            .map_err(|_| LabError::Render("more than 255 hosts on one switch".into()))?;
        let mut addrs = self.subnet.host(i);
        addrs.ifname = self.switch.attach(host, &addrs.nets())?;
        Ok(addrs)
    }

    /// The segment's subnet.
    pub fn subnet(&self) -> Subnet {
        self.subnet
    }

    /// The underlying switch namespace.
    pub fn switch(&self) -> &Switch {
        &self.switch
    }

    /// Lets the switch outlive this guard (see [`Netns::into_kept`]); returns its namespace.
    pub fn into_kept(self) -> String {
        self.switch.into_kept()
    }
}
