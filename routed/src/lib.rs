//! fjord-routed: a BGP-4 speaker per node (node-to-node iBGP mesh, optional external
//! peers) that announces the node's IPAM blocks and programs the routes it learns into
//! the kernel.
//!
//! Pure: [`node`] (every decision of the daemon), [`rib`], [`encap`], [`bgp::fsm`],
//! [`bgp::wire`], [`bgp::adj_rib_out`], [`kubernetes::nodes`]. At the edge: [`daemon`]
//! (the shell that carries out the core's effects), [`cluster`] and [`kubernetes`]
//! (the cluster view), [`bgp::session`] and [`bgp::listener`] (sockets), [`kernel`],
//! [`vxlan`], [`netlink_batch`] and [`underlay`] (netlink), [`status`] (the status
//! socket). See docs/node-core.md.

pub mod bfd;
pub mod bgp;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod encap;
pub mod error;
pub mod install;
pub mod kernel;
pub mod kubernetes;
pub mod netlink_batch;
pub mod node;
pub mod rib;
pub mod status;
pub mod underlay;
pub mod vxlan;
