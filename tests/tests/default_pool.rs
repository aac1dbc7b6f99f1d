//! The default IPPool (calico-node's `CALICO_IPV4POOL_*`, margay's `MARGAY_IPV4POOL_*`): the
//! first margay-felix to start in an empty cluster creates it in etcd; a second node with other
//! settings changes nothing; a bad setting stops felix at once with the field named.

use std::time::Duration;

use margay_lab::{Etcd, Lab, Process, Result, felix_binary, wait_for};

const WAIT: Duration = Duration::from_secs(30);

/// `margay-felix` for `node` in `ns`, in cluster mode against `etcd`, with `extra` flags; its
/// bgpd socket does not exist, which only keeps it not ready.
fn felix(
    lab: &Lab,
    ns: &margay_lab::Netns,
    node: &str,
    etcd: &Etcd,
    extra: &[&str],
) -> Result<Process> {
    let dir = lab.dir();
    let mut args = vec![
        "--node".to_string(),
        node.to_string(),
        "--etcd-endpoints".to_string(),
        etcd.endpoint(),
        "--bgpd-socket".to_string(),
        dir.join(format!("{node}-bgpd.sock")).display().to_string(),
        "--socket".to_string(),
        dir.join(format!("{node}-felix.sock")).display().to_string(),
        "--http-port".to_string(),
        "0".to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    Process::spawn(ns, &format!("felix-{node}"), felix_binary()?, &args, dir)
}

/// Every IPPool as (name, cidr, vxlanMode), from `margayctl get ippool -o json`.
fn pools(etcd: &Etcd) -> std::result::Result<Vec<(String, String, String)>, String> {
    let out = etcd
        .margayctl(&["get", "ippool", "-o", "json"])
        .map_err(|e| e.to_string())?;
    let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))?;
    let items = v["items"]
        .as_array()
        .cloned()
        .or_else(|| v.as_array().cloned());
    Ok(items
        .unwrap_or_else(|| vec![v.clone()])
        .iter()
        .filter(|p| p["kind"] == "IPPool")
        .map(|p| {
            (
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                p["spec"]["cidr"].as_str().unwrap_or_default().to_string(),
                p["spec"]["vxlanMode"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect())
}

#[test]
fn first_felix_creates_the_default_pool_and_a_second_changes_nothing() -> Result<()> {
    let lab = Lab::new("default-pool")?;
    let sw = lab.switch("sw")?;
    let etcd = Etcd::on_switch(&lab, &sw)?;
    let (n1, n2) = (lab.netns("n1")?, lab.netns("n2")?);
    sw.attach(&n1)?;
    sw.attach(&n2)?;
    assert_eq!(pools(&etcd).expect("margayctl get ippool"), vec![]);

    let first = felix(
        &lab,
        &n1,
        "n1",
        &etcd,
        &[
            "--default-ipv4-pool-cidr",
            "10.123.0.0/16",
            "--default-ipv4-pool-vxlan",
            "Always",
        ],
    )?;
    let want = vec![(
        "default-ipv4-ippool".to_string(),
        "10.123.0.0/16".to_string(),
        "Always".to_string(),
    )];
    wait_for("felix n1 creates the default pool", WAIT, &[&first], || {
        let p = pools(&etcd)?;
        if p == want {
            Ok(())
        } else {
            Err(format!("pools: {p:?}"))
        }
    })?;

    // Another node with other settings: the pool stays as it is, and no second one appears.
    let second = felix(
        &lab,
        &n2,
        "n2",
        &etcd,
        &["--default-ipv4-pool-cidr", "10.124.0.0/16"],
    )?;
    wait_for("felix n2 sees the existing pool", WAIT, &[&second], || {
        let log = second.log_tail(200);
        if log.contains("no default pool created") {
            Ok(())
        } else {
            Err("no decision logged yet".to_string())
        }
    })?;
    assert_eq!(pools(&etcd).expect("margayctl get ippool"), want);
    Ok(())
}

#[test]
fn a_bad_default_pool_setting_stops_felix_naming_the_field() -> Result<()> {
    let lab = Lab::new("default-pool-bad")?;
    let ns = lab.netns("n1")?;
    let out = ns
        .command(felix_binary()?)
        .args([
            "--node",
            "n1",
            "--etcd-endpoints",
            "http://127.0.0.1:1",
            "--default-ipv4-pool-cidr",
            "10.123.0.0/16",
            "--default-ipv4-pool-block-size",
            "12",
        ])
        .output()
        .map_err(margay_lab::LabError::io("running margay-felix"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("spec.blockSize"), "{stderr}");
    assert!(stderr.contains("MARGAY_IPV4POOL"), "{stderr}");
    Ok(())
}
