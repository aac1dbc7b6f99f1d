//! "Calico nodes" in the lab, for the mixed cluster and the migration from Calico: BIRD
//! configured as calico-node's confd renders it ([`confd`]), Calico's etcd keys written from
//! the documented JSON of each kind ([`keys`]), and a node's pods wired as Calico wires them,
//! with Calico felix's VXLAN device in VXLAN mode ([`node`]).

pub mod confd;
pub mod confd6;
pub mod keys;
pub mod node;

pub use confd::{ConfdInput, ConfdIpip, ConfdPeer, ConfdPool, IPIP_DEVICE};
pub use confd6::{Confd6Input, mesh6_proto, render6};
pub use keys::{ClusterKeys, NodeKeys, PodKeys, cali_name, cluster_keys, wep_name};
pub use node::{
    CalicoNode, CalicoPod, FLUSH_MARGAY, HANDOVER_TO_BIRD, RemoteVtep, wire_pod, wire_veth,
};

use crate::etcd::Etcd;
use crate::lab::Lab;
use crate::{LabError, Result};

/// confd's view of `c` for node `i`: every node's address, this node's blocks, the pool.
pub fn confd_input(c: &ClusterKeys, i: usize) -> ConfdInput {
    let me = &c.nodes[i];
    ConfdInput {
        node_ip: me.ip.addr(),
        as_num: c.as_num,
        mesh: true,
        nodes: c.nodes.iter().map(|n| n.ip.addr()).collect(),
        blocks: vec![(me.block, "confirmed".to_string())],
        pools: vec![ConfdPool {
            cidr: c.pool,
            vxlan: c.vxlan,
            disable_bgp_export: false,
            ipip: c.ipip,
        }],
        peers: Vec::new(),
        network: Some(me.ip.trunc()),
    }
}

/// confd's view of `c` for node `i`'s `bird6.cfg`, when the cluster has an IPv6 pool and the
/// node an IPv6 address: every node's IPv6 address, this node's IPv6 block, the pool.
pub fn confd6_input(c: &ClusterKeys, i: usize) -> Option<Confd6Input> {
    let me = &c.nodes[i];
    let ((ip6, block6), pool6) = (me.v6?, c.pool6?);
    Some(Confd6Input {
        router_id: me.ip.addr(),
        node_ip6: ip6.addr(),
        as_num: c.as_num,
        mesh: true,
        nodes: c
            .nodes
            .iter()
            .filter_map(|n| n.v6)
            .map(|(a, _)| a.addr())
            .collect(),
        blocks: vec![block6],
        pools: vec![(pool6, false)],
        peers: Vec::new(),
    })
}

/// The VTEPs of every node but `i`, as Calico's felix programs them on node `i`.
pub fn remote_vteps(c: &ClusterKeys, i: usize) -> Vec<RemoteVtep> {
    c.nodes
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != i)
        .filter_map(|(_, n)| {
            n.vtep.as_ref().map(|(addr, mac)| RemoteVtep {
                block: n.block,
                node_ip: n.ip.addr(),
                tunnel_ip: *addr,
                mac: mac.clone(),
            })
        })
        .collect()
}

/// Writes `kvs` into `etcd` as Calico's backend would, 100 keys to a transaction, through
/// etcd's JSON gateway (`curl` in etcd's namespace).
pub fn write_keys(lab: &Lab, etcd: &Etcd, kvs: &[(String, serde_json::Value)]) -> Result<()> {
    for (n, batch) in kvs.chunks(100).enumerate() {
        let path = lab.dir().join(format!("calico-keys-{n}.json"));
        std::fs::write(&path, keys::txn_body(batch))
            .map_err(LabError::io(format!("writing {path:?}")))?;
        let url = format!("{}/v3/kv/txn", etcd.endpoint());
        let out = etcd.netns().exec(
            "curl",
            &[
                "-sS",
                "--max-time",
                "10",
                "-X",
                "POST",
                &url,
                "--data-binary",
                &format!("@{}", path.display()),
            ],
        )?;
        if !out.contains("\"succeeded\":true") {
            return Err(LabError::Command {
                command: format!("curl -X POST {url} (Calico's keys)"),
                status: "answered".into(),
                stderr: out,
            });
        }
    }
    Ok(())
}

/// `bird -p` (Debian's bird2) on `text`: panics with BIRD's words unless it parses.
#[cfg(test)]
fn assert_bird_parses(text: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bird.cfg");
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new("bird")
        .arg("-p")
        .arg("-c")
        .arg(&path)
        .output()
        .expect("running bird -p (Debian's bird2)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
