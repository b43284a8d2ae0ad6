//! The daemon's error type: what failed, on what.

use crate::kernel::KernelError;
use fjord_ipam::IpamError;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RoutedError {
    #[error("node registry: {0}")]
    Registry(#[from] IpamError),
    #[error("kernel routes: {0}")]
    Kernel(#[from] KernelError),
    #[error("cannot listen for BGP on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("status socket {path}: {source}")]
    StatusSocket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the underlay interface of {address}: {source}")]
    Underlay {
        address: IpAddr,
        source: std::io::Error,
    },
    #[error("cannot record the pod MTU in {path}: {source}")]
    MtuFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("Kubernetes client configuration: {0}")]
    KubeConfig(String),
    #[error("the Kubernetes API has no Node named {node}: check --node-name (kubelet creates the Node when it registers)")]
    NoSuchNode { node: String },
    #[error("no complete list of Node objects from the Kubernetes API at {server} within {waited:?}: {last_error}")]
    KubeNodes {
        server: String,
        waited: std::time::Duration,
        last_error: String,
    },
    #[error("cannot install the signal handler: {0}")]
    Signal(std::io::Error),
    #[error("install-cni: cannot {op} {}: {source}", .path.display())]
    Install {
        path: PathBuf,
        op: &'static str,
        source: std::io::Error,
    },
    #[error("install-cni: the conflist template is unusable: {reason}")]
    Conflist { reason: String },
}

impl RoutedError {
    /// Wraps an I/O error of the installer with the path and what it was doing.
    pub fn install(
        path: impl Into<PathBuf>,
        op: &'static str,
    ) -> impl FnOnce(std::io::Error) -> RoutedError {
        let path = path.into();
        move |source| RoutedError::Install { path, op, source }
    }
}
