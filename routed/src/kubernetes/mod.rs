//! `--store kubernetes[:DIR]`: Node objects are the node registry. A watcher of Nodes
//! (list, then watch from the list's resourceVersion, resumed after disconnects,
//! re-listed on 410 Gone) keeps an in-memory cache the daemon reads through the
//! [`Registry`](fjord_ipam::registry::Registry) trait: peers from each Node's InternalIP
//! addresses, blocks from its `spec.podCIDRs`. This node's podCIDRs are written to
//! `DIR/<node>.json` for the IPAM (ipam/src/kubernetes.rs), so the plugin never calls
//! the API server. See docs/kubernetes.md.

pub mod nodes;
pub mod watch;

pub use nodes::{NodeCache, NodeInfo, ASN_ANNOTATION};
pub use watch::{start, KubeRegistry, WatchOptions};
