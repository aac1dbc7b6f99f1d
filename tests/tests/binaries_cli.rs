//! Every margay binary as an operator meets it: `--help` names the environment variable of each
//! flag, a bad value or an unreadable file ends with a message naming it and a non-zero exit
//! (never a panic), `--log-format json` writes JSON lines, the daemons' health endpoints answer
//! where the flags say, and SIGTERM removes their sockets and closes BGP sessions with a
//! NOTIFICATION under the N bit of RFC 8538. Real binaries, real namespaces, real etcd.

mod daemons;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use ipnet::IpNet;
use margay_lab::{
    Bgpd, BgpdConfig, BgpdNeighbor, Etcd, HasLogs, Lab, Netns, Process, Result, bgpd_binary,
    block4, holds_for, margay_binary, wait_for,
};

const UP: Duration = Duration::from_secs(45);
const AS: u32 = 64512;

fn felix_binary() -> PathBuf {
    margay_binary(
        "margay-felix",
        "`cargo build -p margay-felix --bin margay-felix`",
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn ctl_binary() -> PathBuf {
    margay_binary("margayctl", "`cargo build -p margay-ctl --bin margayctl`")
        .unwrap_or_else(|e| panic!("{e}"))
}

fn bgpd() -> PathBuf {
    bgpd_binary().unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `cmd` to completion: (exit code, stdout, stderr). A signal death is code -1.
fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A command for `program` with none of the environment variables margay reads, so the
/// machine's environment cannot change what a test sees.
fn clean(program: &PathBuf) -> Command {
    let mut cmd = Command::new(program);
    for (k, _) in std::env::vars() {
        if k.starts_with("MARGAY_")
            || k.starts_with("ETCD_")
            || ["NODENAME", "IP", "IP6", "AS", "RUST_LOG"].contains(&k.as_str())
            || k.ends_with("_AUTODETECTION_METHOD")
        {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// The long flags of a `--help` text, each with the text that describes it.
fn help_flags(help: &str) -> BTreeMap<String, String> {
    let mut flags = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in help.lines() {
        let trimmed = line.trim_start();
        let indented = line.len() > trimmed.len();
        let flag_line = indented
            && trimmed.starts_with('-')
            && (trimmed.starts_with("--") || trimmed.get(2..4) == Some(", "));
        if flag_line {
            let long = trimmed
                .split_whitespace()
                .find(|w| w.starts_with("--"))
                .map(|w| w.trim_end_matches(',').to_string());
            current = long.clone();
            if let Some(l) = long {
                flags.insert(l, trimmed.to_string());
            }
        } else if !indented && !trimmed.is_empty() {
            // A section header ("Options:", "Commands:") ends the flag before it.
            current = None;
        } else if let Some(c) = &current {
            let text = flags.entry(c.clone()).or_default();
            text.push('\n');
            text.push_str(trimmed);
        }
    }
    flags
}

/// Flags for which an environment variable makes no sense: clap's own, and per-invocation
/// choices of a command (what to print, which file to apply).
const NO_ENV: [&str; 5] = ["--help", "--version", "--check", "--output", "--family"];

#[test]
fn every_long_flag_in_help_names_its_environment_variable() {
    let ctl = ctl_binary();
    let cases: Vec<(String, PathBuf, Vec<&str>, Vec<&str>)> = vec![
        ("margay-bgpd".into(), bgpd(), vec!["--help"], vec![]),
        (
            "margay-felix".into(),
            felix_binary(),
            vec!["--help"],
            vec![],
        ),
        ("margayctl".into(), ctl.clone(), vec!["--help"], vec![]),
        (
            "margayctl node status".into(),
            ctl.clone(),
            vec!["node", "status", "--help"],
            vec![],
        ),
        (
            "margayctl node routes".into(),
            ctl.clone(),
            vec!["node", "routes", "--help"],
            vec!["--all"],
        ),
    ];
    let mut missing = Vec::new();
    for (name, program, args, also_exempt) in cases {
        let (code, out, err) = run(clean(&program).args(&args));
        assert_eq!(code, 0, "{name} --help: {err}");
        let flags = help_flags(&out);
        assert!(
            flags.contains_key("--log-format") && flags.contains_key("--log-level"),
            "{name} has the shared log flags: {flags:?}"
        );
        for (flag, text) in &flags {
            let exempt = NO_ENV.contains(&flag.as_str()) || also_exempt.contains(&flag.as_str());
            if !exempt && !text.contains("[env: ") {
                missing.push(format!("{name} {flag}: {text}"));
            }
            if exempt {
                continue;
            }
            // The explanation is more than the flag's name.
            let words = text.lines().skip(1).collect::<String>();
            let inline = text.lines().next().unwrap_or("").contains("  ");
            assert!(
                inline || words.split_whitespace().count() > 2,
                "{name} {flag} is explained: {text}"
            );
        }
    }
    assert!(
        missing.is_empty(),
        "flags without an environment variable:\n{}",
        missing.join("\n")
    );
}

/// A run that must have failed with a message for a person: a non-zero exit that is not a
/// panic's, saying `says`, and no Debug dump of an error value.
fn assert_refused(what: &str, code: i32, err: &str, says: &str) {
    assert!(
        code != 0 && code != 101,
        "{what} exits non-zero, not by panic: {code} {err}"
    );
    assert!(
        err.contains(says),
        "{what}: the message says {says:?}: {err}"
    );
    assert!(!err.contains("panicked"), "{what}: {err}");
    assert!(
        !err.contains("Os {") && !err.contains("kind: "),
        "{what}: {err}"
    );
}

/// A binary, its arguments, its environment, and the flag the error must name.
type BadValue<'a> = (&'a PathBuf, Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);

#[test]
fn bad_flag_values_exit_non_zero_with_a_message_naming_the_flag() {
    let (bgpd, felix, ctl) = (bgpd(), felix_binary(), ctl_binary());
    let cases: Vec<BadValue> = vec![
        (&bgpd, vec!["--http-port", "x"], vec![], "--http-port"),
        (&bgpd, vec!["--log-format", "xml"], vec![], "--log-format"),
        (&bgpd, vec!["--log-level", "a=[["], vec![], "--log-level"),
        (
            &bgpd,
            vec!["--listen-address", "nowhere"],
            vec![],
            "--listen-address",
        ),
        (
            &bgpd,
            vec![],
            vec![("MARGAY_LOG_FORMAT", "xml")],
            "--log-format",
        ),
        (
            &bgpd,
            vec![],
            vec![("MARGAY_BGPD_HTTP_PORT", "70000")],
            "--http-port",
        ),
        (
            &felix,
            vec!["--node", "n", "--http-port", "99999"],
            vec![],
            "--http-port",
        ),
        (
            &felix,
            vec!["--node", "n", "--route-protocol", "300"],
            vec![],
            "--route-protocol",
        ),
        (
            &felix,
            vec!["--node", "n", "--log-format", "xml"],
            vec![],
            "--log-format",
        ),
        (
            &felix,
            vec!["--node", "n"],
            vec![("MARGAY_LOG_LEVEL", "a=[[")],
            "--log-level",
        ),
        (
            &ctl,
            vec!["--log-format", "xml", "get", "nodes"],
            vec![],
            "--log-format",
        ),
        (
            &ctl,
            vec!["node", "status", "-o", "xml"],
            vec![],
            "--output",
        ),
    ];
    for (program, args, env, flag) in cases {
        let (code, out, err) = run(clean(program).args(&args).envs(env.clone()));
        assert_refused(&format!("{program:?} {args:?} {env:?}"), code, &err, flag);
        assert!(out.is_empty(), "nothing on stdout: {out}");
    }
}

#[test]
fn unreadable_files_and_unreachable_etcd_end_with_a_message_not_a_panic() {
    let (bgpd, felix, ctl) = (bgpd(), felix_binary(), ctl_binary());
    let dir = tempfile::tempdir().expect("temp dir");
    let bad_toml = dir.path().join("bad.toml");
    std::fs::write(&bad_toml, "router-id = \"1.2.3\"\nasn = 1\n").expect("write");
    let nowhere = "/nonexistent/margay/file";
    let cases: Vec<(&PathBuf, Vec<&str>, &str)> = vec![
        (&bgpd, vec!["--config", nowhere], nowhere),
        (
            &bgpd,
            vec!["--config", bad_toml.to_str().unwrap_or_default()],
            "line 1",
        ),
        (&felix, vec!["--node", "n", "--state", nowhere], nowhere),
        (
            &ctl,
            vec!["--etcd-endpoints", "http://127.0.0.1:1", "get", "nodes"],
            "connecting to etcd at http://127.0.0.1:1",
        ),
        (
            &ctl,
            vec![
                "--etcd-endpoints",
                "https://127.0.0.1:1",
                "--etcd-cert-file",
                nowhere,
                "--etcd-key-file",
                nowhere,
                "get",
                "nodes",
            ],
            nowhere,
        ),
        (
            &ctl,
            vec!["node", "status", "--socket", nowhere],
            "margay-bgpd is not running",
        ),
    ];
    for (program, args, says) in cases {
        let (code, _, err) = run(clean(program).args(&args));
        assert_refused(&format!("{program:?} {args:?}"), code, &err, says);
    }
    // The daemons check the TLS files at start (an unreachable etcd they wait for, a missing
    // key is a mistake), here named by Calico's variables.
    let calico_tls = [("ETCD_CERT_FILE", nowhere), ("ETCD_KEY_FILE", nowhere)];
    let daemons: [(&PathBuf, Vec<&str>); 2] = [
        (
            &bgpd,
            vec!["--datastore", "etcd", "--node", "n1", "--ip", "10.0.0.1/24"],
        ),
        (&felix, vec!["--node", "n1"]),
    ];
    for (program, args) in daemons {
        let (code, _, err) = run(clean(program).args(&args).envs(calico_tls));
        let what = format!("{program:?} {args:?} with ETCD_CERT_FILE and ETCD_KEY_FILE");
        assert_refused(&what, code, &err, &format!("--etcd-cert-file {nowhere}"));
    }
    let (code, _, err) = run(clean(&ctl)
        .args(["get", "nodes"])
        .env("ETCD_ENDPOINTS", "http://127.0.0.1:1"));
    assert_refused(
        "margayctl with Calico's ETCD_ENDPOINTS",
        code,
        &err,
        "connecting to etcd at http://127.0.0.1:1",
    );
}

/// Every non-empty line of `text` is a JSON object with a level and fields.
fn all_json_lines(text: &str) -> std::result::Result<usize, String> {
    let mut n = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("not JSON ({e}): {line}"))?;
        if v.get("level").is_none() || v.get("fields").is_none() {
            return Err(format!("no level or fields: {line}"));
        }
        n += 1;
    }
    Ok(n)
}

fn stderr_of(p: &Process) -> String {
    std::fs::read_to_string(p.log_paths().1).unwrap_or_default()
}

/// A standalone felix model for node `name` at `addr`.
fn felix_state(lab: &Lab, name: &str, addr: &str) -> PathBuf {
    let path = lab.dir().join(format!("{name}.state.json"));
    let state = serde_json::json!({"node": {"name": name, "address": addr}});
    std::fs::write(&path, state.to_string()).expect("writing felix's state");
    path
}

#[test]
fn log_format_json_writes_one_json_object_per_line() -> Result<()> {
    let lab = Lab::new("log_format_json_writes_one_json_object_per_line")?;
    let ns = lab.netns("m")?;
    let conf = lab.dir().join("m.toml");
    let socket = lab.dir().join("m.sock");
    let mut config = BgpdConfig::new(Ipv4Addr::new(10, 0, 0, 1), AS);
    config.socket = socket.clone();
    std::fs::write(&conf, config.render()?).expect("writing the config");
    let bgpd = Process::spawn(
        &ns,
        "bgpd",
        bgpd(),
        [
            "--config",
            conf.to_str().unwrap_or_default(),
            "--log-format",
            "json",
            "--log-level",
            "debug",
        ],
        lab.dir(),
    )?;
    wait_for("margay-bgpd to log its API socket", UP, &[&bgpd], || {
        let log = stderr_of(&bgpd);
        if log.contains("gRPC API listening") {
            Ok(())
        } else {
            Err(log)
        }
    })?;
    // margayctl logs as JSON too (on stderr; stdout stays the table).
    let (code, out, err) = run(ns
        .command(ctl_binary())
        .args([
            "--log-format",
            "json",
            "--log-level",
            "debug",
            "node",
            "status",
            "--socket",
        ])
        .arg(&socket));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("BGP summary") || out.contains("router") || !out.is_empty(),
        "{out}"
    );
    all_json_lines(&err).unwrap_or_else(|e| panic!("margayctl stderr: {e}"));

    let state = felix_state(&lab, "n1", "10.0.0.1/24");
    // felix's format from the environment this time.
    let felix = Process::spawn(
        &ns,
        "felix",
        "env",
        [
            "MARGAY_LOG_FORMAT=json".to_string(),
            felix_binary().display().to_string(),
            "--node".into(),
            "n1".into(),
            "--state".into(),
            state.display().to_string(),
            "--http-port".into(),
            "0".into(),
        ],
        lab.dir(),
    )?;
    wait_for("margay-felix to log its start", UP, &[&felix], || {
        let log = stderr_of(&felix);
        if log.contains("margay-felix started") {
            Ok(())
        } else {
            Err(log)
        }
    })?;
    drop(felix);
    drop(bgpd);
    for name in ["bgpd", "felix"] {
        let log = std::fs::read_to_string(lab.dir().join(format!("{name}.stderr")))
            .expect("reading the log");
        let n = all_json_lines(&log).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(n >= 2, "{name} logged {n} lines: {log}");
    }
    Ok(())
}

/// `GET http://addr:port/path` from inside `ns`: (HTTP code, body); code "000" when nothing
/// answers.
fn curl(ns: &Netns, addr: IpAddr, port: u16, path: &str) -> (String, String) {
    let url = format!("http://{addr}:{port}{path}");
    let out = ns
        .command("curl")
        .args([
            "-s",
            "--max-time",
            "2",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            &url,
        ])
        .output()
        .unwrap_or_else(|e| panic!("curl {url}: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text
        .trim_end()
        .rsplit_once('\n')
        .unwrap_or(("", text.trim()));
    (code.to_string(), body.to_string())
}

#[test]
fn health_endpoints_answer_on_the_address_and_port_the_flags_choose() -> Result<()> {
    let lab = Lab::new("health_endpoints_answer_on_the_address_and_port_the_flags_choose")?;
    let sw = lab.switch("sw")?;
    let ns = lab.netns("m")?;
    let addr = sw.attach(&ns)?.ip4();
    let conf = lab.dir().join("m.toml");
    let mut config = BgpdConfig::new(addr, AS);
    config.socket = lab.dir().join("m.sock");
    std::fs::write(&conf, config.render()?).expect("writing the config");
    let _bgpd = Process::spawn(
        &ns,
        "bgpd",
        bgpd(),
        [
            "--config",
            conf.to_str().unwrap_or_default(),
            "--http-address",
            &addr.to_string(),
            "--http-port",
            "19179",
        ],
        lab.dir(),
    )?;
    let state = felix_state(&lab, "n1", &format!("{addr}/24"));
    let _felix = Process::spawn(
        &ns,
        "felix",
        "env",
        [
            "MARGAY_FELIX_HTTP_PORT=19099".to_string(),
            format!("MARGAY_FELIX_HTTP_ADDRESS={addr}"),
            felix_binary().display().to_string(),
            "--node".into(),
            "n1".into(),
            "--state".into(),
            state.display().to_string(),
        ],
        lab.dir(),
    )?;
    let a = IpAddr::V4(addr);
    for (who, port) in [("margay-bgpd", 19179), ("margay-felix", 19099)] {
        wait_for(
            &format!("{who} /liveness on {a}:{port}"),
            UP,
            &[],
            || match curl(&ns, a, port, "/liveness") {
                (c, _) if c == "200" => Ok(()),
                other => Err(format!("{other:?}")),
            },
        )?;
        let (code, _) = curl(&ns, a, port, "/readiness");
        assert!(
            code == "200" || code == "503",
            "{who} /readiness answers: {code}"
        );
        let (code, metrics) = curl(&ns, a, port, "/metrics");
        assert_eq!(code, "200", "{who} /metrics");
        assert!(
            metrics.contains("# TYPE"),
            "{who} /metrics is Prometheus text: {metrics}"
        );
        // Not on the default address: the flags moved it.
        let (code, _) = curl(&ns, IpAddr::V4(Ipv4Addr::LOCALHOST), port, "/liveness");
        assert_eq!(code, "000", "{who} does not listen on 127.0.0.1:{port}");
    }
    Ok(())
}

/// Sends `sig` to `p` and waits for its exit status.
fn signal_and_wait(p: &mut Process, sig: i32) -> String {
    // SAFETY: kill(2) on the PID of a child we started and have not reaped.
    unsafe { libc::kill(p.pid() as i32, sig) };
    let status = wait_for("the process to exit", Duration::from_secs(15), &[], || {
        p.exit_status().ok_or_else(|| "still running".to_string())
    });
    status.unwrap_or_else(|e| panic!("{e}\n{}", p.log_tail(30)))
}

#[test]
fn sigterm_removes_felix_socket_and_exits_cleanly() -> Result<()> {
    let lab = Lab::new("sigterm_removes_felix_socket_and_exits_cleanly")?;
    let sw = lab.switch("sw")?;
    let etcd = Etcd::on_switch(&lab, &sw)?;
    let ns = lab.netns("n1")?;
    sw.attach(&ns)?;
    let socket = lab.dir().join("felix.sock");
    let mut felix = daemons::cluster_felix(&lab, &ns, &etcd.endpoint(), &socket)?;
    let status = signal_and_wait(&mut felix, libc::SIGTERM);
    assert!(
        status.contains("exit status: 0"),
        "SIGTERM is a clean exit: {status}\n{}",
        felix.log_tail(30)
    );
    assert!(!socket.exists(), "felix removes its socket on SIGTERM");
    Ok(())
}

/// Two margay-bgpds on one segment, `a` originating a block that `b` has learned. The
/// namespaces and the switch live as long as this (dropping a namespace ends its processes).
struct TwoSpeakers {
    a: Bgpd,
    b: Bgpd,
    a_addr: Ipv4Addr,
    block: IpNet,
    _namespaces: (margay_lab::LabSwitch, Netns, Netns),
}

fn two_speakers(lab: &Lab) -> Result<TwoSpeakers> {
    let sw = lab.switch("sw")?;
    let (na, nb) = (lab.netns("a")?, lab.netns("b")?);
    let (aa, ab) = (sw.attach(&na)?.ip4(), sw.attach(&nb)?.ip4());
    let block = IpNet::V4(block4());
    let a = Bgpd::start(
        lab,
        &na,
        "a",
        BgpdConfig::new(aa, AS)
            .originate(block)
            .neighbor(BgpdNeighbor::new(IpAddr::V4(ab), AS)),
    )?;
    let b = Bgpd::start(
        lab,
        &nb,
        "b",
        BgpdConfig::new(ab, AS).neighbor(BgpdNeighbor::new(IpAddr::V4(aa), AS)),
    )?;
    b.wait_route_via(block, IpAddr::V4(aa), UP)?;
    Ok(TwoSpeakers {
        a,
        b,
        a_addr: aa,
        block,
        _namespaces: (sw, na, nb),
    })
}

/// RFC 8538: both margay speakers set the N bit, so SIGTERM closes the session with a Cease
/// and the peer keeps the routes as stale; SIGINT (a final stop) sends a Hard Reset and the
/// peer drops them at once.
#[test]
fn sigterm_sends_cease_and_an_n_bit_peer_keeps_our_routes_sigint_hard_resets() -> Result<()> {
    let lab =
        Lab::new("sigterm_sends_cease_and_an_n_bit_peer_keeps_our_routes_sigint_hard_resets")?;
    let TwoSpeakers {
        mut a,
        b,
        a_addr: aa,
        block,
        _namespaces,
    } = two_speakers(&lab)?;
    let socket = a.config().socket.clone();
    let status = signal_and_wait(a.process(), libc::SIGTERM);
    assert!(status.contains("exit status: 0"), "{status}");
    assert!(!socket.exists(), "the API socket is removed on SIGTERM");
    wait_for(
        "b to receive the Cease and keep a's routes as stale",
        UP,
        &[&b],
        || {
            let log = b.log_tails();
            match b.peer(IpAddr::V4(aa)) {
                Ok(Some(p))
                    if p.last_error.contains("stale")
                        && log.contains("notification=Cease / Administrative shutdown") =>
                {
                    Ok(())
                }
                other => Err(format!("{other:?}")),
            }
        },
    )?;
    holds_for(
        "b keeps a's block as stale",
        Duration::from_secs(3),
        &[&b],
        || match b.best_route(block) {
            Ok(Some(_)) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )?;
    drop((a, b, _namespaces));

    let lab2 = Lab::new("sigint_hard_resets")?;
    let TwoSpeakers {
        mut a,
        b,
        a_addr: aa,
        block,
        _namespaces,
    } = two_speakers(&lab2)?;
    let status = signal_and_wait(a.process(), libc::SIGINT);
    assert!(status.contains("exit status: 0"), "{status}");
    b.wait_no_route(block, Duration::from_secs(10))?;
    let p = b.peer(IpAddr::V4(aa))?.expect("peer a");
    assert!(p.last_error.contains("Hard reset"), "{p:?}");
    Ok(())
}
