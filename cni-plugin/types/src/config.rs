//! The network configuration a runtime passes on stdin.

use crate::error::{CniError, ErrorCode};
use crate::result::Dns;
use crate::version::Version;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One entry of `cni.dev/valid-attachments` (GC).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// The parts of a plugin's configuration every plugin reads; the whole object stays in
/// `raw` for plugin-specific keys and for delegation.
#[derive(Debug, Clone)]
pub struct NetConf {
    pub cni_version: Version,
    pub name: String,
    pub plugin_type: String,
    pub ipam: Option<Map<String, Value>>,
    pub dns: Dns,
    pub prev_result: Option<Value>,
    pub runtime_config: Map<String, Value>,
    pub valid_attachments: Option<Vec<Attachment>>,
    pub raw: Map<String, Value>,
}

impl NetConf {
    /// The `cniVersion` string of a request, if it can be read at all: errors are
    /// written in the version the runtime asked for.
    pub fn requested_version(stdin: &[u8]) -> Option<String> {
        let v: Value = serde_json::from_slice(stdin).ok()?;
        v.get("cniVersion")?.as_str().map(str::to_string)
    }

    pub fn parse(stdin: &[u8]) -> Result<Self, CniError> {
        let value: Value = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(
                ErrorCode::DecodeFailure,
                format!("network configuration on stdin is not valid JSON: {e}"),
            )
        })?;
        let Value::Object(raw) = value else {
            return Err(CniError::new(
                ErrorCode::DecodeFailure,
                "network configuration on stdin must be a JSON object",
            ));
        };
        let cni_version = parse_version(&raw)?;
        let name = required_str(&raw, "name")?;
        let plugin_type = required_str(&raw, "type")?;
        let ipam = match raw.get("ipam") {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m.clone()),
            Some(_) => return Err(invalid("\"ipam\" must be an object")),
        };
        let dns = match raw.get("dns") {
            None | Some(Value::Null) => Dns::default(),
            Some(d) => serde_json::from_value(d.clone())
                .map_err(|e| invalid(format!("\"dns\" is malformed: {e}")))?,
        };
        let runtime_config = match raw.get("runtimeConfig") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => return Err(invalid("\"runtimeConfig\" must be an object")),
        };
        let valid_attachments = match raw.get("cni.dev/valid-attachments") {
            None | Some(Value::Null) => None,
            Some(v) => Some(serde_json::from_value(v.clone()).map_err(|e| {
                invalid(format!("\"cni.dev/valid-attachments\" is malformed: {e}"))
            })?),
        };
        Ok(NetConf {
            cni_version,
            name,
            plugin_type,
            ipam,
            dns,
            prev_result: raw.get("prevResult").filter(|v| !v.is_null()).cloned(),
            runtime_config,
            valid_attachments,
            raw,
        })
    }

    /// A `runtimeConfig` key, matched case-insensitively: runtimes built on Go send Go
    /// field names (`HostPort`) where the conventions document `hostPort`.
    pub fn runtime_config_key(&self, key: &str) -> Option<&Value> {
        self.runtime_config
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    }

    /// The `ipam.type`, if any.
    pub fn ipam_type(&self) -> Option<&str> {
        self.ipam.as_ref()?.get("type")?.as_str()
    }
}

fn parse_version(raw: &Map<String, Value>) -> Result<Version, CniError> {
    let Some(v) = raw.get("cniVersion") else {
        return Err(invalid("\"cniVersion\" is missing"));
    };
    let s = v
        .as_str()
        .ok_or_else(|| invalid("\"cniVersion\" must be a string"))?;
    s.parse::<Version>().map_err(|_| {
        let supported: Vec<_> = Version::ALL.iter().map(|v| v.as_str()).collect();
        CniError::new(
            ErrorCode::IncompatibleVersion,
            format!(
                "cniVersion {s:?} is not supported; supported versions: {}",
                supported.join(", ")
            ),
        )
    })
}

fn required_str(raw: &Map<String, Value>, key: &str) -> Result<String, CniError> {
    match raw.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::String(_)) | None => Err(invalid(format!("\"{key}\" is missing or empty"))),
        Some(_) => Err(invalid(format!("\"{key}\" must be a string"))),
    }
}

fn invalid(msg: impl Into<String>) -> CniError {
    CniError::new(ErrorCode::InvalidConfig, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<NetConf, CniError> {
        NetConf::parse(s.as_bytes())
    }

    #[test]
    fn reads_the_common_keys() {
        let c = parse(
            r#"{"cniVersion":"1.0.0","name":"fjord","type":"fjord","mtu":1450,
                "ipam":{"type":"fjord-ipam"},
                "runtimeConfig":{"portMappings":[{"HostPort":80}]},
                "cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}"#,
        )
        .unwrap();
        assert_eq!(c.cni_version, Version::V1_0_0);
        assert_eq!(c.ipam_type(), Some("fjord-ipam"));
        assert!(c.runtime_config_key("PORTMAPPINGS").is_some());
        assert_eq!(c.raw["mtu"], 1450);
        assert_eq!(c.valid_attachments.unwrap()[0].container_id, "a");
    }

    #[test]
    fn each_defect_gets_its_spec_code() {
        let code = |s: &str| parse(s).unwrap_err().code;
        assert_eq!(code("{not json"), 6);
        assert_eq!(code("[1]"), 6);
        assert_eq!(code(r#"{"name":"n","type":"t"}"#), 7);
        assert_eq!(code(r#"{"cniVersion":"9.9.9","name":"n","type":"t"}"#), 1);
        assert_eq!(code(r#"{"cniVersion":"1.0.0","type":"t"}"#), 7);
        assert_eq!(code(r#"{"cniVersion":"1.0.0","name":"n"}"#), 7);
        assert_eq!(
            code(r#"{"cniVersion":"1.0.0","name":"n","type":"t","ipam":3}"#),
            7
        );
    }

    #[test]
    fn requested_version_survives_an_unsupported_one() {
        let s = br#"{"cniVersion":"0.2.0","name":"n","type":"t"}"#;
        assert_eq!(NetConf::requested_version(s).as_deref(), Some("0.2.0"));
        assert_eq!(NetConf::requested_version(b"garbage"), None);
    }
}
