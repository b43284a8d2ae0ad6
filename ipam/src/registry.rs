//! The node registry: which nodes exist, at which addresses and AS. `fjord-routed`
//! registers its node and peers with every other registered node (ARCHITECTURE.md, "The route
//! daemon"); it reads block claims from the same store to announce its node's blocks.

use crate::allocator::Claim;
use crate::config::StoreSpec;
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

pub trait Registry: Send + Sync {
    /// Writes (or rewrites) this node's record.
    fn register(&self, node: &NodeRecord) -> Result<(), IpamError>;
    /// Removes a node's record; an unknown node is not an error.
    fn deregister(&self, name: &str) -> Result<(), IpamError>;
    /// Every registered node, sorted by name.
    fn nodes(&self) -> Result<Vec<NodeRecord>, IpamError>;
    /// Every block claim (block and node) in the store.
    fn claims(&self) -> Result<Vec<Claim>, IpamError>;
}

/// Opens the registry of the store `spec` names (a `dir:` store is created if missing).
pub fn open(spec: &StoreSpec) -> Result<Box<dyn Registry>, IpamError> {
    match spec {
        StoreSpec::Dir(path) => Ok(Box::new(crate::dir::DirStore::open(path)?)),
        StoreSpec::Etcd(etcd) => Ok(Box::new(crate::etcd::EtcdRegistry::open(etcd)?)),
        // Nodes and podCIDRs come from the API server; only fjord-routed watches it.
        StoreSpec::Kubernetes(_) => Err(IpamError::Config(
            "the kubernetes store's node registry is fjord-routed's watcher of Node objects; it cannot be opened from the IPAM".into(),
        )),
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
        let reg = open(&StoreSpec::Dir(dir.clone())).unwrap();
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
        assert_eq!(reg.nodes().unwrap(), vec![b]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_corrupt_record_is_reported_with_its_path() {
        let dir = temp_store("corrupt");
        let reg = open(&StoreSpec::Dir(dir.clone())).unwrap();
        std::fs::create_dir_all(dir.join("nodes")).unwrap();
        std::fs::write(dir.join("nodes/bad.json"), b"{ nope").unwrap();
        let err = reg.nodes().unwrap_err().to_string();
        assert!(err.contains("bad.json"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
