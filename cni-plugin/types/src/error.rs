//! The spec's error object and its well-known codes.

use serde_json::{json, Value};
use std::fmt;

/// Error codes from the CNI spec ("Error" section); 100 and up are Fjord's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    IncompatibleVersion = 1,
    UnsupportedField = 2,
    UnknownContainer = 3,
    InvalidEnvironment = 4,
    IoFailure = 5,
    DecodeFailure = 6,
    InvalidConfig = 7,
    TryAgainLater = 11,
    PluginNotAvailable = 50,
    PluginNotAvailableLimitedConnectivity = 51,
    /// IPAM could not hand out an address (pool exhausted, no free block).
    AddressExhausted = 100,
    /// CHECK found the kernel or the store different from what ADD set up.
    CheckFailed = 101,
    /// The container is already attached with this interface name.
    AlreadyAttached = 102,
    /// A netlink request failed.
    Netlink = 103,
    /// A delegated plugin failed in a way that carried no spec error.
    DelegateFailed = 104,
}

impl ErrorCode {
    pub fn as_u32(self) -> u32 {
        self as u32
    }
}

/// An error as the spec shapes it: code, message, details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: ErrorCode, msg: impl Into<String>) -> Self {
        CniError {
            code: code.as_u32(),
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// The error object written to stdout; `cniVersion` is whatever the runtime asked
    /// for, or the latest version when the request could not be read that far.
    pub fn to_json(&self, cni_version: &str) -> Value {
        let mut v = json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
        });
        if !self.details.is_empty() {
            v["details"] = Value::String(self.details.clone());
        }
        v
    }

    /// Reads an error object a delegated plugin printed.
    pub fn from_json(v: &Value) -> Option<Self> {
        let code = v.get("code")?.as_u64()?;
        Some(CniError {
            code: u32::try_from(code).ok()?,
            msg: v
                .get("msg")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            details: v
                .get("details")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        })
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CNI error {}: {}", self.code, self.msg)?;
        if !self.details.is_empty() {
            write!(f, " ({})", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_in_the_spec_shape() {
        let e = CniError::new(ErrorCode::InvalidEnvironment, "CNI_NETNS is not set");
        assert_eq!(
            e.to_json("1.0.0"),
            json!({"cniVersion": "1.0.0", "code": 4, "msg": "CNI_NETNS is not set"})
        );
        let e = e.with_details("needed by ADD");
        assert_eq!(e.to_json("1.0.0")["details"], "needed by ADD");
    }

    #[test]
    fn reads_back_what_it_writes() {
        let e = CniError::new(ErrorCode::TryAgainLater, "etcd away").with_details("x");
        assert_eq!(CniError::from_json(&e.to_json("1.1.0")), Some(e));
        assert_eq!(CniError::from_json(&json!({"msg": "no code"})), None);
    }
}
