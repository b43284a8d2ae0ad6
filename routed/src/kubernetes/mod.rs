//! `--store kubernetes[:DIR]`: Node objects are the node registry. A watch of Nodes
//! ([`watch::ObjectWatch`]: list, then watch from the list's resourceVersion, resumed
//! after disconnects, re-listed on 410 Gone) feeds the cluster view
//! ([`crate::cluster`]): peers from each Node's InternalIP addresses, blocks from its
//! `spec.podCIDRs`. This node's podCIDRs are written to `DIR/<node>.json` for the IPAM
//! (ipam/src/kubernetes.rs), so the plugin never calls the API server. See
//! docs/kubernetes.md.
//!
//! - [`client`]: credentials and the client every watch shares.
//! - [`watch`]: one watch of one kind of object, complete lists and single changes. The
//!   watches of the next issues (Pods, Namespaces, NetworkPolicies, Services,
//!   EndpointSlices) are each an `ObjectWatch<K>` and a source module beside
//!   [`node_watch`] that turns its events into cluster-view events.
//! - [`nodes`]: Node objects as the daemon needs them (pure).
//! - [`node_watch`]: the Node source.

pub mod client;
pub mod node_watch;
pub mod nodes;
pub mod watch;

pub use node_watch::{start, WatchOptions};
pub use nodes::{check_own_node, NodeCache, NodeInfo, ASN_ANNOTATION};
