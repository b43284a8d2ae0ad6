//! The `kubernetes[:DIR]` store. The controller manager assigns each Node its podCIDRs
//! (`spec.podCIDRs`, kubeadm `--pod-network-cidr`); fjord-routed watches its Node and
//! writes them to `DIR/<node>.json` ([`write_pod_cidrs`]), so the plugin never calls the
//! API server while a pod starts. The node's blocks are exactly those podCIDRs (nothing
//! is claimed); the allocations inside them are kept in a `dir` store at `DIR/ipam`.
//!
//! A podCIDR wider than 2^16 addresses (an IPv6 /64, the Kubernetes default) hands out
//! addresses from its first 2^16 only ([`allocation_range`]): a block record holds at
//! most that many, and no node runs more pods. The route still covers the whole podCIDR.

use crate::allocator::{Claim, Snapshot};
use crate::block::Block;
use crate::config::IpamConfig;
use crate::dir::{self, DirStore};
use crate::error::IpamError;
use crate::pool;
use crate::store::{Decide, Store};
use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// Where, under DIR, the allocations inside the podCIDRs are kept.
pub const ALLOCATIONS_DIR: &str = "ipam";
/// Host bits of the widest range one block record is used for.
const MAX_HOST_BITS: u8 = 16;

/// What fjord-routed writes for the plugin: the Node's name and its podCIDRs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodCidrs {
    pub node: String,
    pub pod_cidrs: Vec<IpNetwork>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodCidrsRecord {
    node: String,
    #[serde(rename = "podCIDRs")]
    pod_cidrs: Vec<String>,
}

impl PodCidrs {
    pub fn to_json(&self) -> Vec<u8> {
        let record = PodCidrsRecord {
            node: self.node.clone(),
            pod_cidrs: self.pod_cidrs.iter().map(ToString::to_string).collect(),
        };
        let mut bytes = serde_json::to_vec_pretty(&record).expect("a podCIDRs record serializes");
        bytes.push(b'\n');
        bytes
    }

    /// Parses and checks a record: aligned CIDRs, at most one per family (as Kubernetes
    /// itself allows on a Node).
    pub fn from_json(bytes: &[u8]) -> Result<PodCidrs, String> {
        let record: PodCidrsRecord =
            serde_json::from_slice(bytes).map_err(|e| format!("not a podCIDRs record: {e}"))?;
        let pod_cidrs = record
            .pod_cidrs
            .iter()
            .map(|text| parse_pod_cidr(text))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PodCidrs {
            node: record.node,
            pod_cidrs,
        })
        .and_then(PodCidrs::checked)
    }

    fn checked(self) -> Result<PodCidrs, String> {
        for family_v6 in [false, true] {
            let of_family: Vec<_> = self
                .pod_cidrs
                .iter()
                .filter(|c| c.is_ipv6() == family_v6)
                .collect();
            if of_family.len() > 1 {
                return Err(format!(
                    "podCIDRs {} and {} are of one family; a Node has at most one per family",
                    of_family[0], of_family[1]
                ));
            }
        }
        Ok(self)
    }
}

/// A podCIDR as Kubernetes writes it: `10.244.1.0/24`, `fd00:10:244:1::/64`.
pub fn parse_pod_cidr(text: &str) -> Result<IpNetwork, String> {
    let cidr: IpNetwork = text
        .parse()
        .map_err(|e| format!("podCIDR {text:?} is not a CIDR: {e}"))?;
    if !pool::is_aligned(cidr) {
        return Err(format!("podCIDR {text} has host bits set"));
    }
    Ok(cidr)
}

/// `DIR/<node>.json`.
pub fn pod_cidrs_path(dir: &Path, node: &str) -> PathBuf {
    dir.join(pod_cidrs_file_name(node))
}

fn pod_cidrs_file_name(node: &str) -> String {
    format!("{node}.json")
}

/// Writes `DIR/<node>.json` by write-to-temp, fsync, rename, fsync of the directory: the
/// plugin reads the old record or the new one, never a torn one.
pub fn write_pod_cidrs(dir: &Path, record: &PodCidrs) -> Result<(), IpamError> {
    fs::create_dir_all(dir).map_err(IpamError::io(dir, "create the podCIDRs directory"))?;
    let name = pod_cidrs_file_name(&record.node);
    dir::write_atomically(dir, &name, &record.to_json())?;
    dir::sync_dir(dir)
}

/// The node's record, or `None` when fjord-routed has not written it yet.
pub fn read_pod_cidrs(dir: &Path, node: &str) -> Result<Option<PodCidrs>, IpamError> {
    let path = pod_cidrs_path(dir, node);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(IpamError::io(&path, "read")(e)),
    };
    let corrupt = |reason: String| IpamError::CorruptRecord {
        path: path.clone(),
        reason,
    };
    let record = PodCidrs::from_json(&bytes).map_err(corrupt)?;
    if record.node != node {
        return Err(corrupt(format!(
            "it holds the podCIDRs of node {}, not {node}",
            record.node
        )));
    }
    Ok(Some(record))
}

/// The part of a podCIDR addresses are handed out from: all of it, or its first 2^16
/// addresses when it is wider.
pub fn allocation_range(pod_cidr: IpNetwork) -> IpNetwork {
    let bits = pool::family_bits(pod_cidr.is_ipv6());
    let prefix = pod_cidr.prefix().max(bits - MAX_HOST_BITS);
    IpNetwork::new(pod_cidr.network(), prefix).expect("a longer prefix of a valid network")
}

pub struct KubernetesStore {
    allocations: DirStore,
    pod_cidrs_file: PathBuf,
    node: String,
    /// The allocation ranges of the node's podCIDRs; `None` until fjord-routed wrote them.
    ranges: Option<Vec<IpNetwork>>,
}

impl KubernetesStore {
    /// Reads the node's podCIDRs (a missing file is not an error here: releasing still
    /// works without it) and opens the allocations' `dir` store.
    pub fn open(dir: &Path, node: &str) -> Result<KubernetesStore, IpamError> {
        let record = read_pod_cidrs(dir, node)?;
        let ranges = record.map(|r| {
            let mut ranges: Vec<IpNetwork> =
                r.pod_cidrs.into_iter().map(allocation_range).collect();
            ranges.sort();
            ranges
        });
        Ok(KubernetesStore {
            allocations: DirStore::open(dir.join(ALLOCATIONS_DIR))?,
            pod_cidrs_file: pod_cidrs_path(dir, node),
            node: node.to_string(),
            ranges,
        })
    }

    /// The configuration the allocator works with: the node's allocation ranges are the
    /// pools and each is one block. Configured pools, if any, must hold every range.
    pub fn layout_config(&self, mut config: IpamConfig) -> Result<IpamConfig, IpamError> {
        let Some(ranges) = &self.ranges else {
            return Ok(config);
        };
        if !config.pools.is_empty() {
            if let Some(outside) = ranges
                .iter()
                .find(|r| !config.pools.iter().any(|p| pool::covers(*p, **r)))
            {
                return Err(IpamError::Config(format!(
                    "podCIDR {outside} of node {} (from {}) is in none of the configured pools; fix \"pools\" or the cluster's --pod-network-cidr",
                    self.node,
                    self.pod_cidrs_file.display()
                )));
            }
        }
        for range in ranges {
            if range.is_ipv6() {
                config.block_size_v6 = range.prefix();
            } else {
                config.block_size_v4 = range.prefix();
            }
        }
        config.pools = ranges.clone();
        Ok(config)
    }

    fn not_written(&self) -> IpamError {
        IpamError::PodCidrsNotWritten {
            node: self.node.clone(),
            path: self.pod_cidrs_file.clone(),
        }
    }

    /// The stored blocks plus an empty block for each range nothing was allocated from
    /// yet, all claimed by this node, so the allocator never claims anything else.
    fn with_ranges(&self, mut snap: Snapshot, node: &str) -> Snapshot {
        for range in self.ranges.iter().flatten() {
            if !snap.own.iter().any(|b| b.cidr == *range) {
                snap.own.push(Block::new(*range, node));
                snap.claims.push(Claim {
                    block: *range,
                    node: node.to_string(),
                });
            }
        }
        snap.own.sort_by_key(|b| b.cidr);
        snap
    }
}

impl Store for KubernetesStore {
    fn snapshot(&self, node: &str) -> Result<Snapshot, IpamError> {
        Ok(self.with_ranges(self.allocations.snapshot(node)?, node))
    }

    fn transact(&self, node: &str, decide: &mut Decide<'_>) -> Result<(), IpamError> {
        self.allocations.transact(node, &mut |snap| {
            decide(&self.with_ranges(snap.clone(), node))
        })
    }

    fn check(&self) -> Result<(), IpamError> {
        self.ready_to_allocate()?;
        self.allocations.check()
    }

    fn ready_to_allocate(&self) -> Result<(), IpamError> {
        match self.ranges {
            Some(_) => Ok(()),
            None => Err(self.not_written()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn records_round_trip_in_the_documented_shape() {
        let record = PodCidrs {
            node: "node-1".into(),
            pod_cidrs: vec![net("10.244.1.0/24"), net("fd00:10:244:1::/64")],
        };
        let json: serde_json::Value = serde_json::from_slice(&record.to_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"node": "node-1", "podCIDRs": ["10.244.1.0/24", "fd00:10:244:1::/64"]})
        );
        assert_eq!(PodCidrs::from_json(&record.to_json()).unwrap(), record);
    }

    #[test]
    fn bad_records_are_refused_with_the_reason() {
        let with = |cidrs: &str| {
            PodCidrs::from_json(format!(r#"{{"node":"n","podCIDRs":{cidrs}}}"#).as_bytes())
                .unwrap_err()
        };
        assert!(with(r#"["10.244.1.1/24"]"#).contains("host bits"));
        assert!(with(r#"["10.244.1.0/33"]"#).contains("not a CIDR"));
        assert!(with(r#"["10.244.1.0/24","10.244.2.0/24"]"#).contains("one family"));
        assert!(PodCidrs::from_json(b"{")
            .unwrap_err()
            .contains("not a podCIDRs record"));
    }

    #[test]
    fn wide_pod_cidrs_allocate_from_their_first_two_to_the_sixteen() {
        assert_eq!(allocation_range(net("10.244.1.0/24")), net("10.244.1.0/24"));
        assert_eq!(allocation_range(net("10.0.0.0/16")), net("10.0.0.0/16"));
        assert_eq!(allocation_range(net("10.0.0.0/12")), net("10.0.0.0/16"));
        assert_eq!(
            allocation_range(net("fd00:10:244:1::/64")),
            net("fd00:10:244:1::/112")
        );
        assert_eq!(allocation_range(net("fd00::/120")), net("fd00::/120"));
    }
}
