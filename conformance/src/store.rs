//! Who holds which address, read straight from an IPAM plugin's files: fjord-ipam's
//! `dir:` store (`ROOT/blocks/*.json`, one pretty-JSON record per block) and host-local's
//! `dataDir` (`DIR/<network>/<ip>` files holding `containerID\r\nifname`).
//!
//! Reading the files rather than linking the allocator keeps these checks independent of
//! the code under test: a record the plugin forgot to write or to remove shows up here.

use std::net::IpAddr;
use std::path::Path;

/// One allocation as a store records it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct StoreAllocation {
    pub address: IpAddr,
    pub container_id: String,
    pub ifname: String,
    /// The node whose block holds it (fjord-ipam only).
    pub node: Option<String>,
}

/// Every allocation in a fjord-ipam `dir:` store rooted at `root` (the path after `dir:`).
/// A store that does not exist yet holds nothing.
pub fn fjord_dir_allocations(root: &Path) -> Vec<StoreAllocation> {
    let blocks = root.join("blocks");
    let Ok(entries) = std::fs::read_dir(&blocks) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry.expect("read store dir entry").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let record: serde_json::Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("block record {} is not JSON: {e}", path.display()));
        let node = record["node"].as_str().map(String::from);
        for a in record["allocations"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            out.push(StoreAllocation {
                address: a["address"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("allocation without address in {}", path.display())),
                container_id: a["containerID"].as_str().unwrap_or_default().to_string(),
                ifname: a["ifname"].as_str().unwrap_or_default().to_string(),
                node: node.clone(),
            });
        }
    }
    out.sort();
    out
}

/// Every reservation host-local keeps for network `network` under `data_dir`.
pub fn host_local_allocations(data_dir: &Path, network: &str) -> Vec<StoreAllocation> {
    let dir = data_dir.join(network);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry.expect("read dataDir entry").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Ok(address) = name.parse::<IpAddr>() else {
            continue; // lock, last_reserved_ip.0, ...
        };
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let mut lines = text.split(['\r', '\n']).filter(|l| !l.is_empty());
        out.push(StoreAllocation {
            address,
            container_id: lines.next().unwrap_or_default().to_string(),
            ifname: lines.next().unwrap_or_default().to_string(),
            node: None,
        });
    }
    out.sort();
    out
}
