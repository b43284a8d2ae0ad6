//! fjord-routed: a BGP-4 speaker per node (node-to-node iBGP mesh, optional external
//! peers) that announces the node's IPAM blocks and programs the routes it learns into
//! the kernel.

pub mod bfd;
pub mod bgp;
pub mod config;
pub mod daemon;
pub mod encap;
pub mod error;
pub mod install;
pub mod kernel;
pub mod kubernetes;
pub mod mesh;
pub mod netlink_batch;
pub mod rib;
pub mod status;
pub mod underlay;
pub mod vxlan;
