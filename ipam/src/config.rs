//! The `ipam` object of a network configuration, checked once so the rest of the crate
//! can trust it.

use crate::allocator::Layout;
use crate::error::IpamError;
use crate::pool;
use ipnetwork::IpNetwork;
use serde_json::{Map, Value};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
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
    /// `etcd:URL[,URL...]`: an etcd v3 cluster, by its client URLs (`http://host:port`
    /// or `https://host:port`), with the TLS files for `https://`.
    Etcd(EtcdSpec),
}

/// An etcd cluster: its client URLs, all `http://` or all `https://`, and for `https://`
/// the files TLS needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdSpec {
    pub endpoints: Vec<String>,
    pub tls: Option<EtcdTls>,
}

/// PEM files for an `https://` etcd cluster: the CA that signed the members' server
/// certificates, and the client certificate and key when etcd asks for one
/// (`--client-cert-auth`, what real clusters run with).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdTls {
    pub ca_cert_file: PathBuf,
    pub client: Option<ClientIdentity>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientIdentity {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// The three TLS settings as given, before they are checked against the store; `names`
/// are what the operator wrote them as (conflist keys or daemon flags), for errors.
#[derive(Clone, Debug, Default)]
pub struct EtcdTlsFiles {
    pub ca_cert_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// How the TLS settings are spelled where they come from.
pub struct TlsSettingNames {
    pub ca_cert_file: &'static str,
    pub cert_file: &'static str,
    pub key_file: &'static str,
}

/// The `ipam` keys of a network configuration (Calico's `etcd_ca_cert_file`, ... in
/// this file's camelCase).
pub const CONFLIST_TLS_KEYS: TlsSettingNames = TlsSettingNames {
    ca_cert_file: "etcdCACertFile",
    cert_file: "etcdCertFile",
    key_file: "etcdKeyFile",
};

impl EtcdSpec {
    pub fn uses_https(&self) -> bool {
        self.endpoints.iter().any(|e| e.starts_with("https://"))
    }
}

impl StoreSpec {
    /// Attaches the etcd TLS files to an `etcd:https://` store. Refuses what cannot
    /// work: `https://` without a CA, a certificate without its key (or the reverse),
    /// relative paths, and TLS files given for a store that would never read them.
    pub fn with_etcd_tls(
        self,
        files: &EtcdTlsFiles,
        names: &TlsSettingNames,
    ) -> Result<StoreSpec, IpamError> {
        let given = [
            (names.ca_cert_file, &files.ca_cert_file),
            (names.cert_file, &files.cert_file),
            (names.key_file, &files.key_file),
        ];
        for (name, path) in given {
            if path.as_ref().is_some_and(|p| !p.is_absolute()) {
                return Err(IpamError::Config(format!(
                    "{name} {:?} must be an absolute path",
                    path.as_deref().unwrap_or(Path::new(""))
                )));
            }
        }
        let first_given = given.iter().find(|(_, p)| p.is_some()).map(|(n, _)| *n);
        let mut etcd = match self {
            StoreSpec::Etcd(etcd) if etcd.uses_https() => etcd,
            other => {
                return match first_given {
                    None => Ok(other),
                    Some(name) => Err(IpamError::Config(format!(
                        "{name} is set, but the store is not etcd:https://...: only an https:// \
                         etcd cluster uses TLS files"
                    ))),
                };
            }
        };
        let ca_cert_file = files.ca_cert_file.clone().ok_or_else(|| {
            IpamError::Config(format!(
                "the etcd store {} uses https:// and needs {}, the CA certificate (PEM) that \
                 signed the members' server certificates",
                etcd.endpoints.join(","),
                names.ca_cert_file
            ))
        })?;
        let client = match (&files.cert_file, &files.key_file) {
            (Some(cert_file), Some(key_file)) => Some(ClientIdentity {
                cert_file: cert_file.clone(),
                key_file: key_file.clone(),
            }),
            (None, None) => None,
            (Some(_), None) | (None, Some(_)) => {
                return Err(IpamError::Config(format!(
                    "{} and {} go together: the client certificate and its private key",
                    names.cert_file, names.key_file
                )))
            }
        };
        etcd.tls = Some(EtcdTls {
            ca_cert_file,
            client,
        });
        Ok(StoreSpec::Etcd(etcd))
    }

    /// The same store seen without its TLS files: what two configs must agree on to
    /// read and write the same records.
    pub fn location(&self) -> StoreSpec {
        match self {
            StoreSpec::Etcd(etcd) => StoreSpec::Etcd(EtcdSpec {
                endpoints: etcd.endpoints.clone(),
                tls: None,
            }),
            other => other.clone(),
        }
    }
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
            let endpoints = parse_etcd_endpoints(s, urls)?;
            return Ok(StoreSpec::Etcd(EtcdSpec {
                endpoints,
                tls: None,
            }));
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

/// `http://host:port` or `https://host:port` client URLs, checked here so a typo fails
/// with the URL named instead of as an unreachable cluster.
fn parse_etcd_endpoints(spec: &str, urls: &str) -> Result<Vec<String>, IpamError> {
    let bad = |url: &str, why: &str| {
        IpamError::Config(format!("\"store\" {spec:?}: etcd endpoint {url:?} {why}"))
    };
    let mut endpoints = Vec::new();
    let mut schemes = Vec::new();
    for url in urls.split(',') {
        let Some((scheme, authority)) = ["http://", "https://"]
            .into_iter()
            .find_map(|scheme| Some((scheme, url.strip_prefix(scheme)?)))
        else {
            return Err(bad(url, "must be http://host:port or https://host:port"));
        };
        schemes.push(scheme);
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
        endpoints.push(format!("{scheme}{authority}"));
    }
    if schemes.iter().any(|s| *s != schemes[0]) {
        return Err(IpamError::Config(format!(
            "\"store\" {spec:?}: the etcd endpoints mix http:// and https://; one cluster \
             speaks one of them"
        )));
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
            .parse::<StoreSpec>()?
            .with_etcd_tls(&tls_files(ipam)?, &CONFLIST_TLS_KEYS)?;
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

fn tls_files(ipam: &Map<String, Value>) -> Result<EtcdTlsFiles, IpamError> {
    let path = |key: &str| Ok::<_, IpamError>(optional_str(ipam, key)?.map(PathBuf::from));
    Ok(EtcdTlsFiles {
        ca_cert_file: path(CONFLIST_TLS_KEYS.ca_cert_file)?,
        cert_file: path(CONFLIST_TLS_KEYS.cert_file)?,
        key_file: path(CONFLIST_TLS_KEYS.key_file)?,
    })
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
        let plain = |endpoints: &[&str]| {
            StoreSpec::Etcd(EtcdSpec {
                endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
                tls: None,
            })
        };
        assert_eq!(
            ok("etcd:http://10.0.0.1:2379,http://[fd00::1]:2379/"),
            plain(&["http://10.0.0.1:2379", "http://[fd00::1]:2379"])
        );
        assert_eq!(
            ok("etcd:http://etcd-0.example:2379"),
            plain(&["http://etcd-0.example:2379"])
        );
        assert_eq!(
            ok("etcd:https://10.0.0.1:2379,https://[fd00::1]:2379"),
            plain(&["https://10.0.0.1:2379", "https://[fd00::1]:2379"])
        );
        let bad = |s: &str| s.parse::<StoreSpec>().unwrap_err().to_string();
        assert!(bad("etcd:").contains("must be http://host:port"));
        assert!(bad("etcd:10.0.0.1:2379").contains("\"10.0.0.1:2379\" must be http://"));
        assert!(bad("etcd:https://e:2379,http://f:2379").contains("mix http:// and https://"));
        assert!(bad("etcd:http://e").contains("no port"));
        assert!(bad("etcd:http://e:99999").contains("valid port"));
        assert!(bad("etcd:http://:2379").contains("no usable host"));
        assert!(bad("etcd:http://fd00::1:2379").contains("brackets"));
        assert!(bad("etcd:http://e:2379,").contains("\"\""));
        assert!(bad("etcd:http://e:2379/v3").contains("valid port"));
    }

    #[test]
    fn https_etcd_takes_the_tls_files_from_the_ipam_keys() {
        let c = parse(json!({
            "pools": ["10.0.0.0/8"],
            "store": "etcd:https://10.0.0.1:2379",
            "etcdCACertFile": "/etc/fjord/etcd/ca.crt",
            "etcdCertFile": "/etc/fjord/etcd/client.crt",
            "etcdKeyFile": "/etc/fjord/etcd/client.key",
        }))
        .unwrap();
        let StoreSpec::Etcd(etcd) = &c.store else {
            panic!("{:?}", c.store)
        };
        assert_eq!(
            etcd.tls,
            Some(EtcdTls {
                ca_cert_file: "/etc/fjord/etcd/ca.crt".into(),
                client: Some(ClientIdentity {
                    cert_file: "/etc/fjord/etcd/client.crt".into(),
                    key_file: "/etc/fjord/etcd/client.key".into(),
                }),
            })
        );
        assert_eq!(
            c.store.location(),
            "etcd:https://10.0.0.1:2379".parse().unwrap()
        );
        // Server authentication only: a CA and no client certificate.
        let c = parse(
            json!({"pools": ["10.0.0.0/8"], "store": "etcd:https://e:2379",
            "etcdCACertFile": "/ca.pem"}),
        )
        .unwrap();
        assert!(
            matches!(&c.store, StoreSpec::Etcd(EtcdSpec { tls: Some(t), .. }) if t.client.is_none())
        );
    }

    #[test]
    fn tls_settings_that_cannot_work_are_refused_by_name() {
        let with = |extra: Value| {
            let mut conf = json!({"pools": ["10.0.0.0/8"], "store": "etcd:https://e:2379"});
            for (k, v) in extra.as_object().unwrap() {
                conf[k] = v.clone();
            }
            error(conf)
        };
        assert!(with(json!({})).contains("needs etcdCACertFile"));
        assert!(with(json!({"etcdCACertFile": "ca.pem"})).contains("absolute"));
        assert!(with(json!({"etcdCACertFile": "/ca", "etcdCertFile": "/c"}))
            .contains("etcdCertFile and etcdKeyFile go together"));
        let plain = error(
            json!({"pools": ["10.0.0.0/8"], "store": "etcd:http://e:2379",
            "etcdCACertFile": "/ca"}),
        );
        assert!(
            plain.contains("etcdCACertFile is set, but the store is not etcd:https://"),
            "{plain}"
        );
        let dir = error(json!({"pools": ["10.0.0.0/8"], "etcdKeyFile": "/k"}));
        assert!(dir.contains("etcdKeyFile is set"), "{dir}");
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
