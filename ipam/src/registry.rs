//! The node registry: which nodes exist, at which addresses and AS. `fjord-routed`
//! registers its node and peers with every other registered node; it reads block claims
//! from the same store to announce its node's blocks. The daemon does not call this
//! interface from its event loop: it polls [`Registry::view`] on a blocking thread and
//! follows the answers as a stream (routed/src/cluster.rs), beside the Kubernetes Node
//! watcher that gives the same [`NodeView`] for `--store kubernetes`.

use crate::allocator::Claim;
use crate::error::IpamError;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: String,
    /// The node's underlay addresses (BGP peering and next hops), IPv4 first.
    pub addresses: Vec<IpAddr>,
    pub asn: u32,
}

impl NodeRecord {
    pub fn to_json(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("a node record serializes");
        bytes.push(b'\n');
        bytes
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("not a node record: {e}"))
    }
}

/// Every registered node and every block claim, as one read saw them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeView {
    /// Sorted by name.
    pub nodes: Vec<NodeRecord>,
    pub claims: Vec<Claim>,
}

pub trait Registry: Send + Sync {
    /// Writes (or rewrites) this node's record.
    fn register(&self, node: &NodeRecord) -> Result<(), IpamError>;
    /// Removes a node's record; an unknown node is not an error.
    fn deregister(&self, name: &str) -> Result<(), IpamError>;
    /// Every registered node, sorted by name.
    fn nodes(&self) -> Result<Vec<NodeRecord>, IpamError>;
    /// Every block claim (block and node) in the store.
    fn claims(&self) -> Result<Vec<Claim>, IpamError>;
    /// Nodes and claims in one read, for a caller that polls: a store that can be
    /// unreachable answers with its error at once instead of retrying (the next poll is
    /// the retry), and reads both at one revision where it can.
    fn view(&self) -> Result<NodeView, IpamError> {
        Ok(NodeView {
            nodes: self.nodes()?,
            claims: self.claims()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_store(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("fjord-registry-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn nodes_register_list_and_leave() {
        let dir = temp_store("nodes");
        let reg = crate::dir::DirStore::open(&dir).unwrap();
        assert!(reg.nodes().unwrap().is_empty());
        let a = NodeRecord {
            name: "node-b".into(),
            addresses: vec!["10.0.0.2".parse().unwrap(), "fd00::2".parse().unwrap()],
            asn: 64512,
        };
        let b = NodeRecord {
            name: "node-a".into(),
            addresses: vec!["10.0.0.1".parse().unwrap()],
            asn: 64512,
        };
        reg.register(&a).unwrap();
        reg.register(&b).unwrap();
        assert_eq!(reg.nodes().unwrap(), vec![b.clone(), a.clone()]);
        reg.deregister("node-b").unwrap();
        reg.deregister("never-there").unwrap();
        assert_eq!(reg.nodes().unwrap(), vec![b.clone()]);
        assert_eq!(reg.view().unwrap().nodes, vec![b]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_corrupt_record_is_reported_with_its_path() {
        let dir = temp_store("corrupt");
        let reg = crate::dir::DirStore::open(&dir).unwrap();
        std::fs::create_dir_all(dir.join("nodes")).unwrap();
        std::fs::write(dir.join("nodes/bad.json"), b"{ nope").unwrap();
        let err = reg.nodes().unwrap_err().to_string();
        assert!(err.contains("bad.json"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
