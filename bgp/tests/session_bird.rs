//! A margay session against a real BIRD 2 on loopback: the OPEN exchange, routes both ways,
//! TCP-MD5 and the NOTIFICATION on shutdown, as BIRD sees them.
//!
//! Each test runs its own `bird` (foreground, own control socket and addresses) and stops it
//! by its PID when done, also when the test fails.

use margay_bgp::fsm::State;
use margay_bgp::session::{self, PeerConfig, SessionEvent};
use margay_bgp::wire::{AsPath, AsSegment, Message, Origin, PathAttributes, Prefix4, Update};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout_at};

const BIRD: &str = "/usr/sbin/bird";
const BIRDC: &str = "/usr/sbin/birdc";

/// A running BIRD, stopped (by PID) and cleaned up on drop.
struct Bird {
    child: Child,
    dir: PathBuf,
}

impl Bird {
    fn start(name: &str, config: &str) -> Bird {
        let dir =
            std::env::temp_dir().join(format!("margay-session-bird-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("bird.conf"), config).expect("write config");
        let log = std::fs::File::create(dir.join("bird.log")).expect("log file");
        let child = Command::new(BIRD)
            .arg("-f")
            .arg("-c")
            .arg(dir.join("bird.conf"))
            .arg("-s")
            .arg(dir.join("bird.ctl"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start bird");
        Bird { child, dir }
    }

    fn birdc(&self, cmd: &str) -> String {
        let out = Command::new(BIRDC)
            .arg("-s")
            .arg(self.dir.join("bird.ctl"))
            .args(cmd.split_whitespace())
            .output()
            .expect("run birdc");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Polls `birdc cmd` until its output contains every one of `needles`.
    async fn wait_for_output(&self, cmd: &str, needles: &[&str], within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let out = self.birdc(cmd);
            if needles.iter().all(|n| out.contains(n)) || Instant::now() > deadline {
                return out;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("BIRD files kept in {}", self.dir.display());
        }
    }
}

fn bird_config(bird: u8, margay: u8, port: u16, password: Option<&str>) -> String {
    let password = password
        .map(|p| format!("  password \"{p}\";\n"))
        .unwrap_or_default();
    format!(
        "router id 10.0.0.{bird};
log stderr all;
protocol device {{}}
protocol static s4 {{ ipv4; route 10.99.0.0/24 blackhole; }}
protocol bgp margay {{
  local 127.0.0.{bird} port {port} as 65091;
  neighbor 127.0.0.{margay} as 65092;
  multihop;
  hold time 9;
  connect retry time 1;
  passive on;
{password}  ipv4 {{ import all; export all; next hop self; }};
}}
"
    )
}

fn margay_config(margay: u8, bird: u8, port: u16) -> PeerConfig {
    let mut c = PeerConfig::new(
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, bird)),
        65092,
        65091,
        Ipv4Addr::new(10, 0, 0, margay),
    );
    c.port = port;
    c.source_address = Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, margay)));
    c.connect_retry = Duration::from_secs(1);
    c
}

async fn next_event(
    events: &mut mpsc::Receiver<SessionEvent>,
    deadline: Instant,
    mut pick: impl FnMut(&SessionEvent) -> bool,
) -> SessionEvent {
    loop {
        let ev = timeout_at(deadline, events.recv())
            .await
            .expect("event in time")
            .expect("session alive");
        if pick(&ev) {
            return ev;
        }
    }
}

fn have_bird() -> bool {
    let ok = Path::new(BIRD).exists() && Path::new(BIRDC).exists();
    if !ok {
        eprintln!("bird2 is not installed; skipping");
    }
    ok
}

#[tokio::test]
async fn exchanges_routes_with_bird_and_bird_sees_our_shutdown() {
    if !have_bird() {
        return;
    }
    let bird = Bird::start("routes", &bird_config(91, 92, 17991, None));
    let (tx, mut events) = mpsc::channel(1024);
    let handle = session::spawn(1, margay_config(92, 91, 17991), tx);
    let deadline = Instant::now() + Duration::from_secs(15);

    let SessionEvent::Established {
        negotiated, ctx, ..
    } = next_event(&mut events, deadline, |e| {
        matches!(e, SessionEvent::Established { .. })
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(negotiated.hold_time, 9, "BIRD's hold time is the smaller");
    assert_eq!(negotiated.keepalive, 3);
    assert_eq!(negotiated.peer_asn, 65091);
    assert_eq!(negotiated.peer_router_id, Ipv4Addr::new(10, 0, 0, 91));
    assert!(negotiated.four_octet_as && negotiated.route_refresh);

    // BIRD's static route arrives with BIRD's AS in the path.
    let want: Prefix4 = "10.99.0.0/24".parse().unwrap();
    let SessionEvent::Update { update, .. } = next_event(
        &mut events,
        deadline,
        |e| matches!(e, SessionEvent::Update { update, .. } if update.nlri.contains(&want)),
    )
    .await
    else {
        unreachable!()
    };
    assert_eq!(update.attributes.as_path.neighbor_as(), Some(65091));

    // Ours arrives at BIRD.
    let ours = Update {
        attributes: PathAttributes {
            origin: Some(Origin::Igp),
            as_path: AsPath {
                segments: vec![AsSegment::Sequence(vec![65092])],
            },
            next_hop: Some(Ipv4Addr::new(127, 0, 0, 92)),
            ..PathAttributes::default()
        },
        nlri: vec!["10.98.0.0/24".parse().unwrap()],
        ..Update::default()
    };
    let bytes = Message::Update(ours).to_bytes(&ctx).expect("encode");
    handle.send(bytes).await.expect("queued");
    let out = bird
        .wait_for_output(
            "show route 10.98.0.0/24 all",
            &["10.98.0.0/24", "65092"],
            Duration::from_secs(5),
        )
        .await;
    assert!(out.contains("BGP.as_path: 65092"), "BIRD's view:\n{out}");

    // BIRD sees the session up, then our Cease.
    let out = bird.birdc("show protocols margay");
    assert!(out.contains("Established"), "{out}");
    handle.shutdown(None).await;
    let out = bird
        .wait_for_output(
            "show protocols all margay",
            &["Administrative shutdown"],
            Duration::from_secs(5),
        )
        .await;
    assert!(
        out.contains("Received: Administrative shutdown"),
        "BIRD's view:\n{out}"
    );
}

#[tokio::test]
async fn establishes_with_bird_over_tcp_md5() {
    if !have_bird() {
        return;
    }
    let _bird = Bird::start("md5", &bird_config(93, 94, 17993, Some("kitty")));
    let (tx, mut events) = mpsc::channel(1024);
    let mut cfg = margay_config(94, 93, 17993);
    cfg.password = Some("kitty".into());
    let handle = session::spawn(2, cfg, tx);
    let deadline = Instant::now() + Duration::from_secs(15);
    next_event(&mut events, deadline, |e| {
        matches!(e, SessionEvent::Established { .. })
    })
    .await;
    assert_eq!(handle.state(), State::Established);
}

#[tokio::test]
async fn bird_with_another_md5_password_never_establishes() {
    if !have_bird() {
        return;
    }
    let bird = Bird::start("md5-wrong", &bird_config(95, 96, 17995, Some("kitty")));
    let (tx, mut events) = mpsc::channel(1024);
    let mut cfg = margay_config(96, 95, 17995);
    cfg.password = Some("puppy".into());
    let handle = session::spawn(3, cfg, tx);
    let deadline = Instant::now() + Duration::from_secs(4);
    while let Ok(Some(ev)) = timeout_at(deadline, events.recv()).await {
        assert!(
            !matches!(ev, SessionEvent::Established { .. }),
            "established with a wrong key"
        );
    }
    assert_ne!(handle.state(), State::Established);
    let out = bird.birdc("show protocols margay");
    assert!(!out.contains("Established"), "{out}");
}
