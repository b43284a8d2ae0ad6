//! `fjord-ipam`: the CNI IPAM plugin around the `fjord_ipam` library. It reads its
//! settings from the `ipam` object of the network configuration; stdout carries only the
//! result or the spec error.

use fjord_cni_types::skel::{self, Plugin};
use fjord_cni_types::{CniError, CniResult, Invocation, IpConfig, NetConf};
use fjord_ipam::{Handle, Ipam, IpamConfig, IpamError, Owner};
use ipnetwork::IpNetwork;
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::IpAddr;

struct FjordIpam;

impl Plugin for FjordIpam {
    fn add(&self, inv: &Invocation, conf: &NetConf) -> Result<CniResult, CniError> {
        let ipam = open(conf)?;
        let owner = Owner {
            network: conf.name.clone(),
            pod_namespace: inv.args.get("K8S_POD_NAMESPACE").map(str::to_string),
            pod_name: inv.args.get("K8S_POD_NAME").map(str::to_string),
        };
        let assigned = ipam.allocate(&handle(inv), &owner, &requested(inv, conf)?)?;
        let ips = assigned
            .iter()
            .map(|a| IpConfig {
                address: IpNetwork::from(a.address),
                gateway: None,
                interface: None,
            })
            .collect();
        Ok(CniResult {
            ips,
            ..CniResult::default()
        })
    }

    fn del(&self, inv: &Invocation, conf: &NetConf) -> Result<(), CniError> {
        open(conf)?.release(&handle(inv))?;
        Ok(())
    }

    fn check(&self, inv: &Invocation, conf: &NetConf) -> Result<(), CniError> {
        let config = config(conf)?;
        let pools = config.pools.clone();
        let handle = handle(inv);
        let held: BTreeSet<IpAddr> = Ipam::open(config)?
            .lookup(&handle)?
            .iter()
            .map(|a| a.address)
            .collect();
        if held.is_empty() {
            return Err(IpamError::NotAllocated { handle }.into());
        }
        let expected = prev_result_addresses(conf, &pools)?;
        if expected != held {
            let reason = format!("the store holds {held:?}, prevResult says {expected:?}");
            return Err(IpamError::Mismatch { handle, reason }.into());
        }
        Ok(())
    }

    fn status(&self, _: &Invocation, conf: &NetConf) -> Result<(), CniError> {
        Ok(open(conf)?.status()?)
    }

    fn gc(&self, _: &Invocation, conf: &NetConf) -> Result<(), CniError> {
        let keep: Vec<Handle> = conf
            .valid_attachments
            .iter()
            .flatten()
            .map(|a| Handle {
                container_id: a.container_id.clone(),
                ifname: a.ifname.clone(),
            })
            .collect();
        open(conf)?.gc(&conf.name, &keep)?;
        Ok(())
    }
}

fn config(conf: &NetConf) -> Result<IpamConfig, IpamError> {
    let ipam = conf.ipam.as_ref().ok_or_else(|| {
        IpamError::Config("the network configuration has no \"ipam\" object".into())
    })?;
    IpamConfig::from_json(ipam)
}

fn open(conf: &NetConf) -> Result<Ipam, IpamError> {
    Ipam::open(config(conf)?)
}

fn handle(inv: &Invocation) -> Handle {
    Handle {
        container_id: inv.container_id.clone(),
        ifname: inv.ifname.clone(),
    }
}

/// Addresses the runtime asks for: runtimeConfig `ips` (the `ips` capability) and
/// CNI_ARGS `IP=` (comma-separated); a prefix length, if given, is ignored.
fn requested(inv: &Invocation, conf: &NetConf) -> Result<Vec<IpAddr>, IpamError> {
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

/// prevResult's addresses inside this plugin's pools (other plugins' addresses are not
/// this plugin's to check).
fn prev_result_addresses(
    conf: &NetConf,
    pools: &[IpNetwork],
) -> Result<BTreeSet<IpAddr>, IpamError> {
    let Some(prev) = &conf.prev_result else {
        return Err(IpamError::Config("CHECK needs \"prevResult\"".into()));
    };
    let prev = CniResult::from_json(prev)
        .map_err(|e| IpamError::Config(format!("\"prevResult\" is malformed: {e}")))?;
    Ok(prev
        .ips
        .iter()
        .map(|ip| ip.address.ip())
        .filter(|a| pools.iter().any(|p| p.contains(*a)))
        .collect())
}

fn main() {
    let code = skel::run(
        &FjordIpam,
        |k| std::env::var(k).ok(),
        &mut std::io::stdin().lock(),
        &mut std::io::stdout().lock(),
    );
    std::process::exit(code);
}
