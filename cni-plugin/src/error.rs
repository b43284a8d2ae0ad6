//! The plugin's one error type, and the one place errors become spec codes.

use fjord_cni_types::{CniError, ErrorCode};
use fjord_ipam::IpamError;
use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("invalid plugin configuration: {0}")]
    Config(String),
    #[error("network namespace {path} does not exist")]
    NetnsMissing { path: PathBuf },
    #[error("cannot enter network namespace {path}: {source}")]
    Netns { path: PathBuf, source: io::Error },
    #[error("{op} failed: {source}")]
    Netlink { op: String, source: io::Error },
    #[error("sysctl {key} could not be set: {source}")]
    Sysctl { key: String, source: io::Error },
    #[error("cannot open log file {path}: {source}")]
    LogFile { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error("IPAM plugin {plugin:?} not found in CNI_PATH ({searched})")]
    DelegateNotFound { plugin: String, searched: String },
    #[error("IPAM plugin {plugin:?} failed: {error}")]
    Delegate { plugin: String, error: CniError },
    #[error("IPAM plugin {plugin:?} could not be run: {reason}")]
    DelegateRun { plugin: String, reason: String },
    #[error("nothing is attached for container {container_id} interface {ifname}")]
    NotAttached {
        container_id: String,
        ifname: String,
    },
    #[error("CHECK: {0}")]
    CheckMismatch(String),
    #[error("container {container_id} is already attached as {ifname} (holding {addresses})")]
    AlreadyAttached {
        container_id: String,
        ifname: String,
        addresses: String,
    },
}

impl PluginError {
    pub fn netlink(op: impl Into<String>) -> impl FnOnce(io::Error) -> PluginError {
        let op = op.into();
        move |source| PluginError::Netlink { op, source }
    }

    pub fn sysctl(key: impl Into<String>) -> impl FnOnce(io::Error) -> PluginError {
        let key = key.into();
        move |source| PluginError::Sysctl { key, source }
    }
}

impl From<PluginError> for CniError {
    fn from(e: PluginError) -> CniError {
        let code = match &e {
            PluginError::Config(_) | PluginError::DelegateNotFound { .. } => {
                ErrorCode::InvalidConfig
            }
            PluginError::NetnsMissing { .. } | PluginError::NotAttached { .. } => {
                ErrorCode::UnknownContainer
            }
            PluginError::Netns { .. }
            | PluginError::Sysctl { .. }
            | PluginError::LogFile { .. }
            | PluginError::DelegateRun { .. } => ErrorCode::IoFailure,
            PluginError::Netlink { .. } => ErrorCode::Netlink,
            PluginError::CheckMismatch(_) => ErrorCode::CheckFailed,
            PluginError::AlreadyAttached { .. } => ErrorCode::AlreadyAttached,
            PluginError::Ipam(_) => {
                let PluginError::Ipam(inner) = e else {
                    unreachable!()
                };
                return inner.into();
            }
            PluginError::Delegate { error, .. } => {
                return CniError {
                    msg: e.to_string(),
                    ..error.clone()
                }
            }
        };
        CniError::new(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unusable_cluster_store_is_try_again_later_naming_the_endpoints() {
        let e = PluginError::from(IpamError::StoreUnavailable {
            endpoints: "http://10.0.0.11:2379,http://10.0.0.12:2379".into(),
            reason: "etcdserver: no leader".into(),
        });
        let cni = CniError::from(e);
        assert_eq!(cni.code, 11);
        assert!(
            cni.msg
                .contains("http://10.0.0.11:2379,http://10.0.0.12:2379"),
            "{}",
            cni.msg
        );
        assert!(cni.msg.contains("no leader"), "{}", cni.msg);
    }
}
