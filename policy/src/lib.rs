//! fjord-policy: Kubernetes NetworkPolicy and egress NAT for one Fjord node.
//!
//! Two halves, as the rest of Fjord is built (docs/policy.md):
//! - pure: [`model`] and [`compile`] take the API's objects, [`translate`] turns the
//!   cluster and this node's pods into a [`translate::DesiredPolicy`], [`nat`] holds the
//!   egress NAT inputs, and [`ruleset`] renders both into the desired content of
//!   nftables table `inet fjord` and diffs it against what the kernel holds;
//! - the shell, [`nft`]: runs `nft` to read the table and to apply one atomic batch.
//!
//! Fjord owns table `inet fjord` and nothing else: no other table is read or written.

pub mod compile;
pub mod error;
pub mod model;
pub mod nat;
pub mod nft;
pub mod ranges;
pub mod ruleset;
pub mod selector;
pub mod translate;

pub use error::PolicyError;
