//! The ADD result, kept in the newest (1.1.0) shape and written in whichever version the
//! runtime asked for.

use crate::version::Version;
use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::net::IpAddr;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: String,
    /// Written from 1.1.0 on.
    pub mtu: Option<u32>,
    /// The netns path for the container's interface; empty for host interfaces.
    pub sandbox: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    pub address: IpNetwork,
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNetwork,
    pub gw: Option<IpAddr>,
    /// Written from 1.1.0 on.
    pub mtu: Option<u32>,
    pub scope: Option<u8>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        *self == Dns::default()
    }
}

impl CniResult {
    /// The result object as the spec's `version` shapes it.
    pub fn to_json(&self, version: Version) -> Value {
        let mut out = Map::new();
        out.insert("cniVersion".into(), json!(version.as_str()));
        if !self.interfaces.is_empty() {
            let ifaces = self.interfaces.iter().map(|i| i.to_json(version)).collect();
            out.insert("interfaces".into(), Value::Array(ifaces));
        }
        let ips = self.ips.iter().map(|ip| ip.to_json(version)).collect();
        out.insert("ips".into(), Value::Array(ips));
        if !self.routes.is_empty() {
            let routes = self.routes.iter().map(|r| r.to_json(version)).collect();
            out.insert("routes".into(), Value::Array(routes));
        }
        if !self.dns.is_empty() {
            out.insert(
                "dns".into(),
                serde_json::to_value(&self.dns).unwrap_or_default(),
            );
        }
        Value::Object(out)
    }

    /// Reads a result of any supported version (a prevResult, or what a delegated IPAM
    /// plugin printed).
    pub fn from_json(v: &Value) -> Result<Self, String> {
        let obj = v.as_object().ok_or("a result must be a JSON object")?;
        let list = |key: &str| -> Vec<Value> {
            obj.get(key)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        let interfaces = list("interfaces")
            .iter()
            .map(Interface::from_json)
            .collect::<Result<_, _>>()?;
        let ips = list("ips")
            .iter()
            .map(IpConfig::from_json)
            .collect::<Result<_, _>>()?;
        let routes = list("routes")
            .iter()
            .map(Route::from_json)
            .collect::<Result<_, _>>()?;
        let dns = match obj.get("dns") {
            Some(d) if !d.is_null() => {
                serde_json::from_value(d.clone()).map_err(|e| format!("result dns: {e}"))?
            }
            _ => Dns::default(),
        };
        Ok(CniResult {
            interfaces,
            ips,
            routes,
            dns,
        })
    }
}

impl Interface {
    fn to_json(&self, version: Version) -> Value {
        let mut v = json!({"name": self.name});
        if !self.mac.is_empty() {
            v["mac"] = json!(self.mac);
        }
        if let (Some(mtu), true) = (self.mtu, version >= Version::V1_1_0) {
            v["mtu"] = json!(mtu);
        }
        if !self.sandbox.is_empty() {
            v["sandbox"] = json!(self.sandbox);
        }
        v
    }

    fn from_json(v: &Value) -> Result<Self, String> {
        let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let name = text("name");
        if name.is_empty() {
            return Err("result interface without a name".into());
        }
        Ok(Interface {
            name,
            mac: text("mac"),
            mtu: v.get("mtu").and_then(Value::as_u64).map(|m| m as u32),
            sandbox: text("sandbox"),
        })
    }
}

impl IpConfig {
    fn to_json(&self, version: Version) -> Value {
        let mut v = json!({"address": self.address.to_string()});
        if version.ips_carry_family() {
            v["version"] = json!(if self.address.is_ipv4() { "4" } else { "6" });
        }
        if let Some(gw) = self.gateway {
            v["gateway"] = json!(gw.to_string());
        }
        if let Some(i) = self.interface {
            v["interface"] = json!(i);
        }
        v
    }

    fn from_json(v: &Value) -> Result<Self, String> {
        let address = v
            .get("address")
            .and_then(Value::as_str)
            .ok_or("result ip without an address")?;
        let address: IpNetwork = address
            .parse()
            .map_err(|e| format!("result ip address {address:?}: {e}"))?;
        Ok(IpConfig {
            address,
            gateway: parse_opt_ip(v, "gateway")?,
            interface: v
                .get("interface")
                .and_then(Value::as_u64)
                .map(|i| i as usize),
        })
    }
}

impl Route {
    fn to_json(&self, version: Version) -> Value {
        let mut v = json!({"dst": self.dst.to_string()});
        if let Some(gw) = self.gw {
            v["gw"] = json!(gw.to_string());
        }
        if version >= Version::V1_1_0 {
            if let Some(mtu) = self.mtu {
                v["mtu"] = json!(mtu);
            }
            if let Some(scope) = self.scope {
                v["scope"] = json!(scope);
            }
        }
        v
    }

    fn from_json(v: &Value) -> Result<Self, String> {
        let dst = v
            .get("dst")
            .and_then(Value::as_str)
            .ok_or("result route without dst")?;
        Ok(Route {
            dst: dst
                .parse()
                .map_err(|e| format!("result route dst {dst:?}: {e}"))?,
            gw: parse_opt_ip(v, "gw")?,
            mtu: v.get("mtu").and_then(Value::as_u64).map(|m| m as u32),
            scope: v.get("scope").and_then(Value::as_u64).map(|s| s as u8),
        })
    }
}

fn parse_opt_ip(v: &Value, key: &str) -> Result<Option<IpAddr>, String> {
    match v.get(key).and_then(Value::as_str) {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|e| format!("result {key} {s:?}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: "fj0123456789a".into(),
                    mac: "0a:00:00:00:00:01".into(),
                    mtu: Some(1500),
                    sandbox: String::new(),
                },
                Interface {
                    name: "eth0".into(),
                    mac: "0a:00:00:00:00:02".into(),
                    mtu: Some(1500),
                    sandbox: "/var/run/netns/p1".into(),
                },
            ],
            ips: vec![
                IpConfig {
                    address: "10.244.0.5/32".parse().unwrap(),
                    gateway: Some("169.254.1.1".parse().unwrap()),
                    interface: Some(1),
                },
                IpConfig {
                    address: "fd00:244::5/128".parse().unwrap(),
                    gateway: Some("fe80::1".parse().unwrap()),
                    interface: Some(1),
                },
            ],
            routes: vec![Route {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: Some("169.254.1.1".parse().unwrap()),
                mtu: None,
                scope: None,
            }],
            dns: Dns::default(),
        }
    }

    #[test]
    fn old_versions_carry_ip_family_and_no_interface_mtu() {
        let v = sample().to_json(Version::V0_3_1);
        assert_eq!(v["cniVersion"], "0.3.1");
        assert_eq!(v["ips"][0]["version"], "4");
        assert_eq!(v["ips"][1]["version"], "6");
        assert!(v["interfaces"][0].get("mtu").is_none());
        assert!(v.get("dns").is_none());
    }

    #[test]
    fn v1_drops_ip_family_and_v1_1_adds_interface_mtu() {
        let v = sample().to_json(Version::V1_0_0);
        assert!(v["ips"][0].get("version").is_none());
        assert!(v["interfaces"][1].get("mtu").is_none());
        let v = sample().to_json(Version::V1_1_0);
        assert_eq!(v["interfaces"][1]["mtu"], 1500);
        assert_eq!(v["interfaces"][1]["sandbox"], "/var/run/netns/p1");
    }

    #[test]
    fn round_trips_through_every_version() {
        for version in Version::ALL {
            let mut expected = sample();
            let back = CniResult::from_json(&sample().to_json(version)).unwrap();
            if version < Version::V1_1_0 {
                for i in &mut expected.interfaces {
                    i.mtu = None;
                }
            }
            assert_eq!(back, expected, "version {version}");
        }
    }

    #[test]
    fn rejects_results_it_cannot_use() {
        assert!(CniResult::from_json(&json!([])).is_err());
        assert!(CniResult::from_json(&json!({"ips": [{"address": "300.1.1.1/32"}]})).is_err());
        assert!(CniResult::from_json(&json!({"ips": [{"gateway": "10.0.0.1"}]})).is_err());
        assert!(CniResult::from_json(&json!({"interfaces": [{"mac": "x"}]})).is_err());
    }
}
