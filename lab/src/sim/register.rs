//! Simulated nodes in the cluster model, written with margay's own datastore code: a Node with
//! its BGP address, and its IPAM block claimed for it (the block record and the node's
//! affinity to it, in one transaction), as felix's IPAM would leave them.

use ipnet::IpNet;
use margay_datastore::ipam::records::{affinity_key, block_key};
use margay_datastore::ipam::{Affinity, Block};
use margay_datastore::resources::{NodeBgpSpec, NodeSpec, Resource};
use margay_datastore::{CasWrite, Store, StoreError};

use super::speaker::SimNode;

/// How many registrations are in flight at once.
const IN_FLIGHT: usize = 32;

/// The block and affinity records of `node` owning `block`, in one transaction.
pub async fn claim_block(store: &Store, node: &str, block: IpNet) -> Result<(), StoreError> {
    let (bk, ak) = (block_key(&block), affinity_key(node, &block));
    let b = Block::new(block, Some(node.to_string()));
    let a = Affinity {
        node: node.to_string(),
        cidr: block,
    };
    store
        .put_json_all(&[CasWrite::json(&bk, &b, None), CasWrite::json(&ak, &a, None)])
        .await?;
    Ok(())
}

/// Registers one simulated node: its Node (address `addr/prefix_len`, the cluster's AS), then
/// its block.
pub async fn register(store: &Store, node: &SimNode, prefix_len: u8) -> Result<(), StoreError> {
    let spec = NodeSpec {
        bgp: Some(NodeBgpSpec {
            ipv4_address: Some(format!("{}/{prefix_len}", node.addr)),
            ..NodeBgpSpec::default()
        }),
        ..NodeSpec::default()
    };
    store
        .create(&Resource::new(node.name.clone(), spec))
        .await?;
    claim_block(store, &node.name, IpNet::V4(node.block)).await
}

/// Removes one simulated node: its Node, then its block and affinity.
pub async fn unregister(store: &Store, node: &SimNode) -> Result<(), StoreError> {
    store.delete::<NodeSpec>(None, &node.name, None).await?;
    let block = IpNet::V4(node.block);
    store
        .delete_raw(&affinity_key(&node.name, &block), None)
        .await?;
    store.delete_raw(&block_key(&block), None).await
}

/// Registers every node, a few dozen at a time.
pub async fn register_all(
    store: &Store,
    nodes: &[SimNode],
    prefix_len: u8,
) -> Result<(), StoreError> {
    for chunk in nodes.chunks(IN_FLIGHT) {
        let mut set = tokio::task::JoinSet::new();
        for n in chunk {
            let (store, n) = (store.clone(), n.clone());
            set.spawn(async move { register(&store, &n, prefix_len).await });
        }
        while let Some(r) = set.join_next().await {
            r.map_err(|e| StoreError::Config(format!("registration task: {e}")))??;
        }
    }
    Ok(())
}
