//! The crate's error type: which policy, which nft command, and why.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A NetworkPolicy that cannot be enforced as written. Nothing of it is applied; the
    /// version that was in force before (if any) stays.
    #[error("NetworkPolicy {namespace}/{name}: {reason}")]
    InvalidPolicy {
        namespace: String,
        name: String,
        reason: String,
    },
    #[error("cannot run {}: {source} (install the nftables package: the policy layer needs the nft binary)", .program.display())]
    NftMissing {
        program: PathBuf,
        source: std::io::Error,
    },
    #[error("nft rejected the batch ({commands} commands): {stderr}")]
    NftBatch { commands: usize, stderr: String },
    #[error("nft {what}: {stderr}")]
    Nft { what: String, stderr: String },
    #[error("cannot read table inet fjord from nft's JSON: {0}")]
    NftJson(String),
    #[error("{0}")]
    Interface(String),
}
