//! The `fjord` plugin's own configuration keys.

use crate::error::PluginError;
use fjord_cni_types::NetConf;
use serde_json::Value;
use std::path::PathBuf;

/// Where `fjord-routed` records the node's pod MTU (underlay MTU, or less when it
/// encapsulates); the plugin reads it when the conflist sets no `mtu`.
pub const DEFAULT_MTU_FILE: &str = "/run/fjord/mtu";

/// The MTU used when nothing says otherwise and the node has no default route.
pub const FALLBACK_MTU: u32 = 1500;

/// Below 576 TCP barely works (every IPv4 host must accept 576-byte datagrams); above
/// 65535 no link type goes.
pub const MTU_RANGE: std::ops::RangeInclusive<u64> = 576..=65535;

/// IPv6 needs links of at least 1280 bytes; the kernel turns IPv6 off on smaller ones.
pub const IPV6_MIN_MTU: u32 = 1280;

#[derive(Debug, Clone)]
pub struct PluginConfig {
    pub mtu: Option<u32>,
    pub mtu_file: PathBuf,
    pub log_file: Option<PathBuf>,
}

impl PluginConfig {
    pub fn from_netconf(conf: &NetConf) -> Result<Self, PluginError> {
        let raw = &conf.raw;
        let mtu = match raw.get("mtu") {
            None | Some(Value::Null) => None,
            Some(v) => Some(parse_mtu(v)?),
        };
        Ok(PluginConfig {
            mtu,
            mtu_file: optional_path(raw.get("mtuFile"), "mtuFile")?
                .unwrap_or_else(|| PathBuf::from(DEFAULT_MTU_FILE)),
            log_file: optional_path(raw.get("logFile"), "logFile")?,
        })
    }
}

fn parse_mtu(v: &Value) -> Result<u32, PluginError> {
    let n = v
        .as_u64()
        .ok_or_else(|| PluginError::Config(format!("\"mtu\" must be a whole number, got {v}")))?;
    if !MTU_RANGE.contains(&n) {
        return Err(PluginError::Config(format!(
            "\"mtu\" {n} is out of range {}..={} (576 is the smallest datagram every IPv4 host must accept)",
            MTU_RANGE.start(),
            MTU_RANGE.end()
        )));
    }
    Ok(n as u32)
}

fn optional_path(v: Option<&Value>, key: &str) -> Result<Option<PathBuf>, PluginError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(PathBuf::from(s))),
        Some(other) => Err(PluginError::Config(format!(
            "\"{key}\" must be a path string, got {other}"
        ))),
    }
}

/// Reads the MTU `fjord-routed` recorded, if the file exists and makes sense.
pub fn recorded_mtu(path: &std::path::Path) -> Option<u32> {
    let text = std::fs::read_to_string(path).ok()?;
    let n: u32 = text.trim().parse().ok()?;
    MTU_RANGE.contains(&u64::from(n)).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(extra: &str) -> NetConf {
        NetConf::parse(
            format!(r#"{{"cniVersion":"1.0.0","name":"n","type":"fjord"{extra}}}"#).as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn reads_mtu_and_paths_with_defaults() {
        let c = PluginConfig::from_netconf(&conf(r#","mtu":1450,"logFile":"/tmp/l""#)).unwrap();
        assert_eq!(c.mtu, Some(1450));
        assert_eq!(c.log_file, Some(PathBuf::from("/tmp/l")));
        assert_eq!(c.mtu_file, PathBuf::from(DEFAULT_MTU_FILE));
        let c = PluginConfig::from_netconf(&conf("")).unwrap();
        assert_eq!(c.mtu, None);
        assert_eq!(c.log_file, None);
    }

    #[test]
    fn rejects_mtus_no_link_can_have() {
        for bad in [
            r#","mtu":67"#,
            r#","mtu":70000"#,
            r#","mtu":"1500""#,
            r#","mtu":-1"#,
        ] {
            let err = PluginConfig::from_netconf(&conf(bad)).unwrap_err();
            assert!(err.to_string().contains("mtu"), "{err}");
        }
    }

    #[test]
    fn recorded_mtu_ignores_garbage() {
        let dir = std::env::temp_dir().join(format!("fjord-mtu-test-{}", std::process::id()));
        std::fs::write(&dir, "1450\n").unwrap();
        assert_eq!(recorded_mtu(&dir), Some(1450));
        std::fs::write(&dir, "huge").unwrap();
        assert_eq!(recorded_mtu(&dir), None);
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(recorded_mtu(&dir), None);
    }
}
