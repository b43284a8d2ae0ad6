//! `fjord-ipam`: the CNI IPAM plugin around the `fjord_ipam` library. It reads its
//! settings from the `ipam` object of the network configuration; stdout carries only the
//! result or the spec error.

use fjord_cni_types::skel::{self, Plugin};
use fjord_cni_types::{CniError, CniResult, Invocation, IpConfig, NetConf};
use fjord_ipam::{cni, Ipam, IpamConfig, IpamError};
use ipnetwork::IpNetwork;
use std::collections::BTreeSet;
use std::net::IpAddr;

struct FjordIpam;

impl Plugin for FjordIpam {
    fn add(&self, inv: &Invocation, conf: &NetConf) -> Result<CniResult, CniError> {
        let ipam = open(conf)?;
        let requested = cni::requested_addresses(inv, conf)?;
        let assigned = ipam.allocate(&cni::handle(inv), &cni::owner(inv, conf), &requested)?;
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
        open(conf)?.release(&cni::handle(inv))?;
        Ok(())
    }

    fn check(&self, inv: &Invocation, conf: &NetConf) -> Result<(), CniError> {
        let config = config(conf)?;
        let pools = config.pools.clone();
        let handle = cni::handle(inv);
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
        open(conf)?.gc(&conf.name, &cni::valid_handles(conf))?;
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
