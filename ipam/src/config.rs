//! The `ipam` object of a network configuration, checked once so the rest of the crate
//! can trust it.

use crate::allocator::Layout;
use crate::error::IpamError;
use crate::pool;
use ipnetwork::IpNetwork;
use serde_json::{Map, Value};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::str::FromStr;

pub const DEFAULT_STORE: &str = "dir:/var/lib/fjord/ipam";
/// Where `kubernetes` (without `:DIR`) keeps the node's podCIDRs file and allocations.
pub const DEFAULT_KUBERNETES_DIR: &str = "/var/lib/fjord/kubernetes";
pub const DEFAULT_BLOCK_SIZE_V4: u8 = 26;
pub const DEFAULT_BLOCK_SIZE_V6: u8 = 122;
/// Block lengths a cluster can live with: big enough to keep the route count near the
/// node count, small enough not to strand thousands of addresses on one node.
pub const BLOCK_SIZES_V4: RangeInclusive<u8> = 20..=30;
pub const BLOCK_SIZES_V6: RangeInclusive<u8> = 116..=126;
const NODE_NAME_MAX: usize = 253;

/// Where blocks are kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreSpec {
    /// `dir:PATH`: a local directory, shareable by processes on one machine.
    Dir(PathBuf),
    /// `kubernetes[:DIR]`: the node's blocks are its Node's podCIDRs, which fjord-routed
    /// writes to `DIR/<node>.json`; allocations inside them are kept in `DIR/ipam`
    /// (ipam/src/kubernetes.rs). DIR defaults to [`DEFAULT_KUBERNETES_DIR`].
    Kubernetes(PathBuf),
    /// `etcd:URL[,URL...]`: an etcd v3 cluster, by its client URLs (`http://host:port`).
    Etcd(Vec<String>),
}

impl FromStr for StoreSpec {
    type Err = IpamError;

    fn from_str(s: &str) -> Result<Self, IpamError> {
        if let Some(path) = s.strip_prefix("dir:") {
            if !path.starts_with('/') {
                return Err(IpamError::Config(format!(
                    "\"store\" {s:?}: the directory must be an absolute path"
                )));
            }
            return Ok(StoreSpec::Dir(PathBuf::from(path)));
        }
        if let Some(urls) = s.strip_prefix("etcd:") {
            return parse_etcd_endpoints(s, urls).map(StoreSpec::Etcd);
        }
        if s == "kubernetes" {
            return Ok(StoreSpec::Kubernetes(PathBuf::from(DEFAULT_KUBERNETES_DIR)));
        }
        if let Some(path) = s.strip_prefix("kubernetes:") {
            if !path.starts_with('/') {
                return Err(IpamError::Config(format!(
                    "\"store\" {s:?}: the directory must be an absolute path"
                )));
            }
            return Ok(StoreSpec::Kubernetes(PathBuf::from(path)));
        }
        Err(IpamError::Config(format!(
            "\"store\" {s:?} is not dir:PATH, etcd:URL[,URL...] or kubernetes[:DIR]"
        )))
    }
}

/// `http://host:port` client URLs, checked here so a typo fails with the URL named
/// instead of as an unreachable cluster.
fn parse_etcd_endpoints(spec: &str, urls: &str) -> Result<Vec<String>, IpamError> {
    let bad = |url: &str, why: &str| {
        IpamError::Config(format!("\"store\" {spec:?}: etcd endpoint {url:?} {why}"))
    };
    let mut endpoints = Vec::new();
    for url in urls.split(',') {
        if url.starts_with("https://") {
            return Err(bad(
                url,
                "uses TLS, which this build does not support; use http://",
            ));
        }
        let Some(authority) = url.strip_prefix("http://") else {
            return Err(bad(url, "must be http://host:port"));
        };
        let authority = authority.strip_suffix('/').unwrap_or(authority);
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or_else(|| bad(url, "has no port (http://host:port)"))?;
        let host_ok = !host.is_empty()
            && !host.contains(['/', '@', '?', '#'])
            && (!host.contains(':') || (host.starts_with('[') && host.ends_with(']')));
        if !host_ok {
            return Err(bad(url, "has no usable host (IPv6 goes in brackets)"));
        }
        if !port.parse::<u16>().is_ok_and(|p| p != 0) {
            return Err(bad(url, "has no valid port (1-65535)"));
        }
        endpoints.push(format!("http://{authority}"));
    }
    Ok(endpoints)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpamConfig {
    pub node_name: String,
    pub store: StoreSpec,
    pub pools: Vec<IpNetwork>,
    pub block_size_v4: u8,
    pub block_size_v6: u8,
}

impl IpamConfig {
    /// Reads the `ipam` object; unknown keys (`type`, other plugins' keys) are ignored.
    pub fn from_json(ipam: &Map<String, Value>) -> Result<Self, IpamError> {
        let node_name = match optional_str(ipam, "nodeName")? {
            Some(name) => check_node_name(name, "\"nodeName\"")?,
            None => host_name()?,
        };
        let store = optional_str(ipam, "store")?
            .unwrap_or(DEFAULT_STORE)
            .parse()?;
        // With the kubernetes store the node's podCIDRs are its pools; "pools", if given,
        // only bounds them (a podCIDR outside every pool is refused when the IPAM opens).
        let pools = match (&store, ipam.get("pools")) {
            (StoreSpec::Kubernetes(_), None | Some(Value::Null)) => Vec::new(),
            _ => pools(ipam)?,
        };
        let config = IpamConfig {
            node_name,
            store,
            pools,
            block_size_v4: block_size(ipam, "blockSize", DEFAULT_BLOCK_SIZE_V4, BLOCK_SIZES_V4)?,
            block_size_v6: block_size(ipam, "blockSizeV6", DEFAULT_BLOCK_SIZE_V6, BLOCK_SIZES_V6)?,
        };
        config.check_blocks_fit()?;
        Ok(config)
    }

    pub fn layout(&self) -> Layout {
        Layout {
            pools: self.pools.clone(),
            block_size_v4: self.block_size_v4,
            block_size_v6: self.block_size_v6,
        }
    }

    fn check_blocks_fit(&self) -> Result<(), IpamError> {
        for pool in &self.pools {
            let (key, size) = if pool.is_ipv6() {
                ("blockSizeV6", self.block_size_v6)
            } else {
                ("blockSize", self.block_size_v4)
            };
            if size < pool.prefix() {
                return Err(IpamError::Config(format!(
                    "pool {pool} is smaller than one block (\"{key}\" {size}); use a block size of at least {}",
                    pool.prefix()
                )));
            }
        }
        Ok(())
    }
}

fn optional_str<'a>(ipam: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, IpamError> {
    match ipam.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s)),
        Some(_) => Err(IpamError::Config(format!(
            "\"{key}\" must be a non-empty string"
        ))),
    }
}

fn pools(ipam: &Map<String, Value>) -> Result<Vec<IpNetwork>, IpamError> {
    let bad = |msg: String| IpamError::Config(msg);
    let list = match ipam.get("pools") {
        Some(Value::Array(list)) if !list.is_empty() => list,
        _ => return Err(bad("\"pools\" must be a non-empty list of CIDRs".into())),
    };
    let mut pools: Vec<IpNetwork> = Vec::new();
    for item in list {
        let text = item
            .as_str()
            .ok_or_else(|| bad(format!("pool {item} must be a CIDR string")))?;
        let pool: IpNetwork = text
            .parse()
            .map_err(|e| bad(format!("pool {text:?} is not a CIDR: {e}")))?;
        if !pool::is_aligned(pool) {
            let network = pool::enclosing(pool.ip(), pool.prefix());
            return Err(bad(format!(
                "pool {text} has host bits set; did you mean {network}?"
            )));
        }
        if let Some(other) = pools.iter().find(|p| pool::overlaps(**p, pool)) {
            return Err(bad(format!("pools {other} and {pool} overlap")));
        }
        pools.push(pool);
    }
    Ok(pools)
}

fn block_size(
    ipam: &Map<String, Value>,
    key: &str,
    default: u8,
    sane: RangeInclusive<u8>,
) -> Result<u8, IpamError> {
    let Some(value) = ipam.get(key).filter(|v| !v.is_null()) else {
        return Ok(default);
    };
    value
        .as_u64()
        .and_then(|n| u8::try_from(n).ok())
        .filter(|n| sane.contains(n))
        .ok_or_else(|| {
            IpamError::Config(format!(
                "\"{key}\" {value} must be a prefix length from {} to {}",
                sane.start(),
                sane.end()
            ))
        })
}

/// Kubelet lowercases the host name into the Node name; doing the same keeps a default
/// node name equal to the Node object's.
fn host_name() -> Result<String, IpamError> {
    let name = nix::unistd::gethostname().map_err(|e| {
        IpamError::Config(format!(
            "\"nodeName\" is not set and the host name cannot be read: {e}"
        ))
    })?;
    let name = name.to_string_lossy().to_lowercase();
    check_node_name(&name, "the host name (set \"nodeName\")")
}

/// Node names become store file names, so they are held to a host name's characters.
fn check_node_name(name: &str, what: &str) -> Result<String, IpamError> {
    let mut chars = name.chars();
    let valid = name.len() <= NODE_NAME_MAX
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
    if valid {
        Ok(name.to_string())
    } else {
        Err(IpamError::Config(format!(
            "{what} {name:?} must be letters, digits, '-', '.' or '_', start with a letter or digit, and be at most {NODE_NAME_MAX} characters"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<IpamConfig, IpamError> {
        IpamConfig::from_json(v.as_object().unwrap())
    }

    fn error(v: Value) -> String {
        parse(v).unwrap_err().to_string()
    }

    #[test]
    fn reads_the_design_example_and_ignores_unknown_keys() {
        let c = parse(json!({
            "type": "fjord-ipam", "nodeName": "node-1", "store": "dir:/var/lib/fjord/ipam",
            "pools": ["10.244.0.0/16", "fd00:244::/56"], "blockSize": 26, "blockSizeV6": 122,
            "somethingElse": {"x": 1}
        }))
        .unwrap();
        assert_eq!(c.node_name, "node-1");
        assert_eq!(c.store, StoreSpec::Dir("/var/lib/fjord/ipam".into()));
        assert_eq!(c.pools.len(), 2);
        assert_eq!((c.block_size_v4, c.block_size_v6), (26, 122));
    }

    #[test]
    fn defaults_fill_what_is_left_out() {
        let c = parse(json!({"pools": ["10.244.0.0/16"]})).unwrap();
        assert_eq!(c.store, DEFAULT_STORE.parse().unwrap());
        assert_eq!((c.block_size_v4, c.block_size_v6), (26, 122));
        let host = nix::unistd::gethostname().unwrap();
        assert_eq!(c.node_name, host.to_string_lossy().to_lowercase());
    }

    #[test]
    fn pools_are_checked_and_named_in_errors() {
        assert!(error(json!({})).contains("\"pools\""));
        assert!(error(json!({"pools": []})).contains("non-empty"));
        assert!(error(json!({"pools": ["10.244.0.0/33"]})).contains("10.244.0.0/33"));
        assert!(error(json!({"pools": [7]})).contains("pool 7"));
        assert!(error(json!({"pools": ["10.244.1.0/16"]})).contains("did you mean 10.244.0.0/16"));
        assert!(error(json!({"pools": ["10.0.0.0/8", "10.1.0.0/16"]})).contains("overlap"));
        assert!(error(json!({"pools": ["10.0.0.0/28"]})).contains("smaller than one block"));
        assert!(error(json!({"pools": ["fd00::/126"]})).contains("\"blockSizeV6\" 122"));
        assert!(parse(json!({"pools": ["10.0.0.0/29"], "blockSize": 30})).is_ok());
    }

    #[test]
    fn block_sizes_must_be_sane() {
        let with = |k: &str, v: Value| error(json!({"pools": ["10.0.0.0/8"], k: v}));
        assert!(with("blockSize", json!(31)).contains("from 20 to 30"));
        assert!(with("blockSize", json!(19)).contains("\"blockSize\" 19"));
        assert!(with("blockSize", json!("26")).contains("\"blockSize\""));
        assert!(with("blockSizeV6", json!(127)).contains("from 116 to 126"));
    }

    #[test]
    fn unknown_or_malformed_stores_are_refused_clearly() {
        let with = |s: &str| parse(json!({"pools": ["10.0.0.0/8"], "store": s})).unwrap_err();
        assert!(with("dir:relative/path").to_string().contains("absolute"));
        assert!(with("s3://bucket").to_string().contains("is not dir:PATH"));
    }

    #[test]
    fn kubernetes_store_takes_an_optional_directory_and_no_pools() {
        let c = parse(json!({"store": "kubernetes", "nodeName": "n1"})).unwrap();
        assert_eq!(
            c.store,
            StoreSpec::Kubernetes(DEFAULT_KUBERNETES_DIR.into())
        );
        assert!(c.pools.is_empty());
        let c = parse(json!({"store": "kubernetes:/run/k", "pools": ["10.244.0.0/16"]})).unwrap();
        assert_eq!(c.store, StoreSpec::Kubernetes("/run/k".into()));
        assert_eq!(c.pools.len(), 1);
        let e = parse(json!({"store": "kubernetes:rel"})).unwrap_err();
        assert!(e.to_string().contains("absolute"), "{e}");
        assert!(
            parse(json!({"store": "dir:/x"})).is_err(),
            "dir still needs pools"
        );
        assert!(parse(json!({"store": "kubernetes", "pools": []})).is_err());
    }

    #[test]
    fn etcd_endpoints_are_parsed_and_bad_ones_named() {
        let ok = |s: &str| s.parse::<StoreSpec>().unwrap();
        assert_eq!(
            ok("etcd:http://10.0.0.1:2379,http://[fd00::1]:2379/"),
            StoreSpec::Etcd(vec![
                "http://10.0.0.1:2379".into(),
                "http://[fd00::1]:2379".into()
            ])
        );
        assert_eq!(
            ok("etcd:http://etcd-0.example:2379"),
            StoreSpec::Etcd(vec!["http://etcd-0.example:2379".into()])
        );
        let bad = |s: &str| s.parse::<StoreSpec>().unwrap_err().to_string();
        assert!(bad("etcd:").contains("must be http://host:port"));
        assert!(bad("etcd:10.0.0.1:2379").contains("\"10.0.0.1:2379\" must be http://"));
        assert!(bad("etcd:https://e:2379").contains("TLS"));
        assert!(bad("etcd:http://e").contains("no port"));
        assert!(bad("etcd:http://e:99999").contains("valid port"));
        assert!(bad("etcd:http://:2379").contains("no usable host"));
        assert!(bad("etcd:http://fd00::1:2379").contains("brackets"));
        assert!(bad("etcd:http://e:2379,").contains("\"\""));
        assert!(bad("etcd:http://e:2379/v3").contains("valid port"));
    }

    #[test]
    fn node_names_must_be_file_name_safe() {
        let with = |n: &str| parse(json!({"pools": ["10.0.0.0/8"], "nodeName": n}));
        assert!(with("node-1.example").is_ok());
        for bad in ["../etc", "a/b", "n@x", "-lead", ""] {
            assert!(with(bad).is_err(), "{bad:?} accepted");
        }
    }
}
