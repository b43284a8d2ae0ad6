//! What a CNI invocation means to the IPAM: the handle, the owner, requested addresses
//! and the attachments GC keeps. Shared by the `fjord-ipam` binary and the `fjord`
//! plugin, which calls the library in-process.

use crate::block::{Handle, Owner};
use crate::error::IpamError;
use fjord_cni_types::{Invocation, NetConf};
use serde_json::Value;
use std::net::IpAddr;

pub fn handle(inv: &Invocation) -> Handle {
    Handle {
        container_id: inv.container_id.clone(),
        ifname: inv.ifname.clone(),
    }
}

/// The network, and the pod when the runtime names it (kubelet's runtimes do).
pub fn owner(inv: &Invocation, conf: &NetConf) -> Owner {
    Owner {
        network: conf.name.clone(),
        pod_namespace: inv.args.get("K8S_POD_NAMESPACE").map(str::to_string),
        pod_name: inv.args.get("K8S_POD_NAME").map(str::to_string),
    }
}

/// Addresses the runtime asks for: runtimeConfig `ips` (the `ips` capability) and
/// CNI_ARGS `IP=` (comma-separated); a prefix length, if given, is ignored.
pub fn requested_addresses(inv: &Invocation, conf: &NetConf) -> Result<Vec<IpAddr>, IpamError> {
    let mut texts: Vec<&str> = Vec::new();
    if let Some(Value::Array(ips)) = conf.runtime_config_key("ips") {
        texts.extend(ips.iter().filter_map(Value::as_str));
    }
    if let Some(arg) = inv.args.get("IP") {
        texts.extend(arg.split(',').filter(|t| !t.is_empty()));
    }
    texts
        .iter()
        .map(|t| {
            let bare = t.split('/').next().unwrap_or(t);
            bare.parse().map_err(|_| {
                IpamError::Config(format!("requested address {t:?} is not an IP address"))
            })
        })
        .collect()
}

/// The handles of `cni.dev/valid-attachments`: what GC must keep.
pub fn valid_handles(conf: &NetConf) -> Vec<Handle> {
    conf.valid_attachments
        .iter()
        .flatten()
        .map(|a| Handle {
            container_id: a.container_id.clone(),
            ifname: a.ifname.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn call(args: &str, conf: &str) -> (Invocation, NetConf) {
        let env: HashMap<&str, String> = [
            ("CNI_COMMAND", "ADD".to_string()),
            ("CNI_CONTAINERID", "c1".into()),
            ("CNI_NETNS", "/var/run/netns/x".into()),
            ("CNI_IFNAME", "eth0".into()),
            ("CNI_ARGS", args.into()),
        ]
        .into();
        let inv = Invocation::from_env(|k| env.get(k).cloned()).unwrap();
        (inv, NetConf::parse(conf.as_bytes()).unwrap())
    }

    const CONF: &str = r#"{"cniVersion":"1.0.0","name":"net","type":"fjord",
        "runtimeConfig":{"IPs":["10.244.0.9/32"]},
        "cni.dev/valid-attachments":[{"containerID":"c9","ifname":"eth1"}]}"#;

    #[test]
    fn reads_owner_requests_and_keepers() {
        let (inv, conf) = call("K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web;IP=fd00::9", CONF);
        assert_eq!(handle(&inv).to_string(), "c1/eth0");
        let o = owner(&inv, &conf);
        assert_eq!(
            (o.network.as_str(), o.pod_name.as_deref()),
            ("net", Some("web"))
        );
        let wanted: Vec<IpAddr> = vec!["10.244.0.9".parse().unwrap(), "fd00::9".parse().unwrap()];
        assert_eq!(requested_addresses(&inv, &conf).unwrap(), wanted);
        assert_eq!(valid_handles(&conf)[0].ifname, "eth1");
    }

    #[test]
    fn a_requested_address_that_is_not_one_is_a_config_error() {
        let (inv, conf) = call("IP=ten.one", CONF);
        let err = requested_addresses(&inv, &conf).unwrap_err();
        assert!(err.to_string().contains("ten.one"), "{err}");
    }
}
