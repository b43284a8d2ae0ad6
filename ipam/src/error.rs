//! IPAM's one error type, and the one place IPAM errors become CNI spec codes.

use crate::block::Handle;
use fjord_cni_types::{CniError, ErrorCode};
use ipnetwork::IpNetwork;
use std::fmt::Display;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("invalid IPAM configuration: {0}")]
    Config(String),
    #[error(
        "pool exhausted: no free address for node {node} in {}: every block is claimed and the node's own blocks are full",
        list(.pools)
    )]
    PoolExhausted { node: String, pools: Vec<IpNetwork> },
    #[error("handle {handle} already holds {}", list(.addresses))]
    AlreadyAllocated {
        handle: Handle,
        addresses: Vec<IpAddr>,
    },
    #[error("requested address {address} is in no pool ({})", list(.pools))]
    NotInPool {
        address: IpAddr,
        pools: Vec<IpNetwork>,
    },
    #[error("requested address {address} is not available: {reason}")]
    AddressUnavailable { address: IpAddr, reason: String },
    #[error("handle {handle} holds no address")]
    NotAllocated { handle: Handle },
    #[error("handle {handle}: {reason}")]
    Mismatch { handle: Handle, reason: String },
    #[error("IPAM store {}: cannot {op}: {source}", .path.display())]
    StoreIo {
        path: PathBuf,
        op: &'static str,
        source: io::Error,
    },
    #[error("IPAM store {}: still locked by another process after {waited:?}", .path.display())]
    StoreBusy { path: PathBuf, waited: Duration },
    #[error("IPAM store record {} is unusable: {reason}", .path.display())]
    CorruptRecord { path: PathBuf, reason: String },
    #[error(
        "fjord-routed has not written the node's podCIDRs yet: is it running? (node {node}, file {}; fjord-routed --store kubernetes writes it once it sees the Node's spec.podCIDRs)",
        .path.display()
    )]
    PodCidrsNotWritten { node: String, path: PathBuf },
    #[error("IPAM store etcd:{endpoints} cannot be used (unreachable or without quorum): {reason}; try again later")]
    StoreUnavailable { endpoints: String, reason: String },
    #[error("IPAM store etcd:{endpoints}: {attempts} transactions lost to concurrent writers within {waited:?}; try again later")]
    StoreContended {
        endpoints: String,
        attempts: u32,
        waited: Duration,
    },
}

impl IpamError {
    /// Wraps an I/O error with the path and the operation that failed.
    pub fn io(path: impl Into<PathBuf>, op: &'static str) -> impl FnOnce(io::Error) -> IpamError {
        let path = path.into();
        move |source| IpamError::StoreIo { path, op, source }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            IpamError::Config(_)
            | IpamError::NotInPool { .. }
            | IpamError::AddressUnavailable { .. } => ErrorCode::InvalidConfig,
            IpamError::PoolExhausted { .. } => ErrorCode::AddressExhausted,
            IpamError::AlreadyAllocated { .. } => ErrorCode::AlreadyAttached,
            IpamError::NotAllocated { .. } => ErrorCode::UnknownContainer,
            IpamError::Mismatch { .. } => ErrorCode::CheckFailed,
            IpamError::StoreIo { .. } | IpamError::CorruptRecord { .. } => ErrorCode::IoFailure,
            IpamError::StoreBusy { .. }
            | IpamError::StoreUnavailable { .. }
            | IpamError::StoreContended { .. }
            | IpamError::PodCidrsNotWritten { .. } => ErrorCode::TryAgainLater,
        }
    }
}

impl From<IpamError> for CniError {
    fn from(e: IpamError) -> CniError {
        CniError::new(e.code(), e.to_string())
    }
}

fn list<T: Display>(items: &[T]) -> String {
    let texts: Vec<String> = items.iter().map(T::to_string).collect();
    texts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle() -> Handle {
        Handle {
            container_id: "c1".into(),
            ifname: "eth0".into(),
        }
    }

    #[test]
    fn each_failure_gets_its_spec_code() {
        let cases: Vec<(IpamError, u32)> = vec![
            (IpamError::Config("x".into()), 7),
            (
                IpamError::PoolExhausted {
                    node: "n".into(),
                    pools: vec![],
                },
                100,
            ),
            (
                IpamError::AlreadyAllocated {
                    handle: handle(),
                    addresses: vec![],
                },
                102,
            ),
            (IpamError::NotAllocated { handle: handle() }, 3),
            (
                IpamError::StoreIo {
                    path: "/x".into(),
                    op: "write",
                    source: io::Error::from(io::ErrorKind::PermissionDenied),
                },
                5,
            ),
            (
                IpamError::StoreBusy {
                    path: "/x".into(),
                    waited: Duration::from_secs(1),
                },
                11,
            ),
            (
                IpamError::PodCidrsNotWritten {
                    node: "n".into(),
                    path: "/var/lib/fjord/kubernetes/n.json".into(),
                },
                11,
            ),
            (
                IpamError::StoreUnavailable {
                    endpoints: "http://127.0.0.1:2379".into(),
                    reason: "timed out".into(),
                },
                11,
            ),
            (
                IpamError::StoreContended {
                    endpoints: "http://127.0.0.1:2379".into(),
                    attempts: 9,
                    waited: Duration::from_secs(10),
                },
                11,
            ),
        ];
        for (e, code) in cases {
            assert_eq!(CniError::from(e).code, code);
        }
    }

    #[test]
    fn messages_name_what_failed_on_what() {
        let e = IpamError::PoolExhausted {
            node: "node-1".into(),
            pools: vec![
                "10.0.0.0/29".parse().unwrap(),
                "10.1.0.0/29".parse().unwrap(),
            ],
        };
        let msg = CniError::from(e).msg;
        assert!(msg.contains("10.0.0.0/29, 10.1.0.0/29"), "{msg}");
        assert!(msg.contains("node-1"), "{msg}");
        let e = IpamError::AlreadyAllocated {
            handle: handle(),
            addresses: vec!["10.0.0.1".parse().unwrap()],
        };
        assert_eq!(e.to_string(), "handle c1/eth0 already holds 10.0.0.1");
        let e = IpamError::io("/var/lib/fjord/ipam", "create the store directory")(
            io::Error::from(io::ErrorKind::NotFound),
        );
        assert!(e.to_string().contains("/var/lib/fjord/ipam"), "{e}");
    }
}
