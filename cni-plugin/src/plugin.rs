//! The CNI verbs of `fjord`, as plain functions behind the spec dispatcher.

use crate::config::{self, PluginConfig, FALLBACK_MTU};
use crate::datapath::{self, Attachment};
use crate::error::PluginError;
use crate::ipam::Addressing;
use crate::names;
use crate::netlink::Netlink;
use crate::netns::NetnsFile;
use crate::{log, reaper};
use fjord_cni_types::{
    CniError, CniResult, Interface, Invocation, IpConfig, NetConf, Plugin, Route,
};
use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;

pub struct Fjord;

impl Plugin for Fjord {
    fn add(&self, inv: &Invocation, conf: &NetConf) -> Result<CniResult, CniError> {
        let cfg = start(inv, conf)?;
        traced(inv, "ADD", || add(inv, conf, &cfg))
    }

    fn del(&self, inv: &Invocation, conf: &NetConf) -> Result<(), CniError> {
        start(inv, conf)?;
        traced(inv, "DEL", || del(inv, conf))
    }

    fn check(&self, inv: &Invocation, conf: &NetConf) -> Result<(), CniError> {
        start(inv, conf)?;
        traced(inv, "CHECK", || check(inv, conf))
    }

    fn status(&self, inv: &Invocation, conf: &NetConf) -> Result<(), CniError> {
        start(inv, conf)?;
        traced(inv, "STATUS", || {
            let addressing = Addressing::from_conf(inv, conf)?;
            addressing.status(conf)
        })
        .map_err(|e| CniError {
            code: fjord_cni_types::ErrorCode::PluginNotAvailable.as_u32(),
            ..e
        })
    }

    fn gc(&self, inv: &Invocation, conf: &NetConf) -> Result<(), CniError> {
        start(inv, conf)?;
        traced(inv, "GC", || gc(inv, conf))
    }
}

fn start(_inv: &Invocation, conf: &NetConf) -> Result<PluginConfig, CniError> {
    let cfg = PluginConfig::from_netconf(conf)?;
    log::init(cfg.log_file.as_deref())?;
    Ok(cfg)
}

/// Runs a verb inside a span carrying the container ID, so every log line names it.
fn traced<T>(
    inv: &Invocation,
    verb: &str,
    f: impl FnOnce() -> Result<T, PluginError>,
) -> Result<T, CniError> {
    let id = if inv.container_id.is_empty() {
        "-"
    } else {
        &inv.container_id
    };
    let span = tracing::info_span!("cni", container_id = %id, verb, ifname = %inv.ifname);
    let _entered = span.enter();
    let started = std::time::Instant::now();
    let outcome = f();
    match &outcome {
        Ok(_) => tracing::info!(elapsed_us = started.elapsed().as_micros() as u64, "done"),
        Err(e) => tracing::error!(error = %e, "failed"),
    }
    outcome.map_err(CniError::from)
}

fn open_pod_netns(inv: &Invocation) -> Result<NetnsFile, PluginError> {
    let path = Path::new(&inv.netns);
    NetnsFile::open(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => PluginError::NetnsMissing { path: path.into() },
        _ => PluginError::Netns {
            path: path.into(),
            source,
        },
    })
}

fn attachment<'a>(inv: &'a Invocation, conf: &'a NetConf) -> Attachment<'a> {
    Attachment {
        network: &conf.name,
        container_id: &inv.container_id,
        ifname: &inv.ifname,
    }
}

fn add(inv: &Invocation, conf: &NetConf, cfg: &PluginConfig) -> Result<CniResult, PluginError> {
    let att = attachment(inv, conf);
    let pod_netns = open_pod_netns(inv)?;
    let addressing = Addressing::from_conf(inv, conf)?;
    if datapath::clear_stale_host_end(&att)? {
        return Err(PluginError::AlreadyAttached {
            container_id: inv.container_id.clone(),
            ifname: inv.ifname.clone(),
            addresses: format!("host interface {}", att.host_name()),
        });
    }
    let mtu = pod_mtu(cfg)?;
    let addresses = addressing.allocate(inv, conf)?;
    let wired = check_mtu_fits(mtu, &addresses)
        .and_then(|()| datapath::setup(&att, &pod_netns, &addresses, mtu));
    let wired = match wired {
        Ok(w) => w,
        Err(e) => {
            // Give the addresses back: a failed ADD leaves nothing behind.
            if let Err(release) = addressing.release(inv, conf) {
                tracing::error!(error = %release, "releasing addresses after a failed ADD");
            }
            return Err(e);
        }
    };
    tracing::info!(host = %wired.host_name, ?addresses, mtu = wired.mtu, "attached");
    Ok(build_result(inv, conf, &wired, &addresses))
}

fn check_mtu_fits(mtu: u32, addresses: &[IpAddr]) -> Result<(), PluginError> {
    if mtu < config::IPV6_MIN_MTU && addresses.iter().any(IpAddr::is_ipv6) {
        return Err(PluginError::Config(format!(
            "MTU {mtu} is below {}, the least IPv6 works with, and the pod gets an IPv6 address",
            config::IPV6_MIN_MTU
        )));
    }
    Ok(())
}

/// Conflist `mtu`, else what fjord-routed recorded, else the default route's link.
fn pod_mtu(cfg: &PluginConfig) -> Result<u32, PluginError> {
    if let Some(mtu) = cfg.mtu {
        return Ok(mtu);
    }
    if let Some(mtu) = config::recorded_mtu(&cfg.mtu_file) {
        return Ok(mtu);
    }
    let mut nl = Netlink::open().map_err(PluginError::netlink("open netlink socket"))?;
    let routes = nl
        .routes(false)
        .map_err(PluginError::netlink("dump routes"))?;
    let Some(oif) = routes
        .iter()
        .find(|r| r.dst.prefix() == 0)
        .and_then(|r| r.oif)
    else {
        return Ok(FALLBACK_MTU);
    };
    let links = nl.links().map_err(PluginError::netlink("dump links"))?;
    Ok(links
        .iter()
        .find(|l| l.index == oif)
        .map_or(FALLBACK_MTU, |l| l.mtu))
}

fn build_result(
    inv: &Invocation,
    conf: &NetConf,
    wired: &datapath::Wired,
    addresses: &[IpAddr],
) -> CniResult {
    // A plugin earlier in the chain keeps its interfaces; ours follow them.
    let mut result = conf
        .prev_result
        .as_ref()
        .and_then(|p| CniResult::from_json(p).ok())
        .unwrap_or_default();
    let host_index = result.interfaces.len();
    result.interfaces.push(Interface {
        name: wired.host_name.clone(),
        mac: names::format_mac(&wired.host_mac),
        mtu: Some(wired.mtu),
        sandbox: String::new(),
    });
    result.interfaces.push(Interface {
        name: inv.ifname.clone(),
        mac: names::format_mac(&wired.pod_mac),
        mtu: Some(wired.mtu),
        sandbox: inv.netns.clone(),
    });
    for ip in addresses {
        let gw = datapath::gateway_for(*ip);
        result.ips.push(IpConfig {
            address: datapath::host_prefix(*ip),
            gateway: Some(gw),
            interface: Some(host_index + 1),
        });
        let any = if ip.is_ipv4() { "0.0.0.0/0" } else { "::/0" };
        result.routes.push(Route {
            dst: any.parse().expect("a default prefix parses"),
            gw: Some(gw),
            mtu: None,
            scope: None,
        });
    }
    if result.dns.is_empty() {
        result.dns = conf.dns.clone();
    }
    result
}

fn del(inv: &Invocation, conf: &NetConf) -> Result<(), PluginError> {
    let att = attachment(inv, conf);
    let mut errors = Vec::new();
    let mut addresses = prev_addresses(conf);
    match Addressing::from_conf(inv, conf).and_then(|a| a.release(inv, conf)) {
        Ok(released) => addresses.extend(released),
        Err(e) => errors.push(e),
    }
    addresses.sort();
    addresses.dedup();
    if let Err(mut e) = datapath::teardown(&att, &addresses) {
        errors.append(&mut e);
    }
    tracing::info!(?addresses, errors = errors.len(), "detached");
    collect(errors)
}

/// DEL goes on after an error and reports every one at the end (netavark's lesson).
fn collect(mut errors: Vec<PluginError>) -> Result<(), PluginError> {
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => {
            let first = errors.remove(0);
            let rest: Vec<String> = errors.iter().map(ToString::to_string).collect();
            tracing::error!(others = ?rest, "DEL had several errors");
            Err(match first {
                PluginError::Netlink { op, source } => PluginError::Netlink {
                    op: format!("{op} (and: {})", rest.join("; ")),
                    source,
                },
                other => other,
            })
        }
    }
}

fn prev_addresses(conf: &NetConf) -> Vec<IpAddr> {
    conf.prev_result
        .as_ref()
        .and_then(|p| CniResult::from_json(p).ok())
        .map(|r| r.ips.iter().map(|ip| ip.address.ip()).collect())
        .unwrap_or_default()
}

fn check(inv: &Invocation, conf: &NetConf) -> Result<(), PluginError> {
    let prev = conf
        .prev_result
        .as_ref()
        .ok_or_else(|| PluginError::Config("CHECK needs \"prevResult\"".into()))?;
    let prev = CniResult::from_json(prev)
        .map_err(|e| PluginError::Config(format!("\"prevResult\" is malformed: {e}")))?;
    let addresses: Vec<IpAddr> = prev.ips.iter().map(|ip| ip.address.ip()).collect();
    let addressing = Addressing::from_conf(inv, conf)?;
    addressing.check(inv, conf, &addresses)?;
    let pod_netns = open_pod_netns(inv)?;
    let att = attachment(inv, conf);
    if let Some(iface) = prev.interfaces.iter().find(|i| i.name == att.host_name()) {
        let (host_mac, _) = names::veth_macs(&inv.container_id, &inv.ifname);
        if iface.mac != names::format_mac(&host_mac) {
            return Err(PluginError::CheckMismatch(format!(
                "prevResult gives {} the MAC {}, fjord made {}",
                iface.name,
                iface.mac,
                names::format_mac(&host_mac)
            )));
        }
    }
    datapath::check(&att, Path::new(&inv.netns), &pod_netns, &addresses)
}

fn gc(inv: &Invocation, conf: &NetConf) -> Result<(), PluginError> {
    let addressing = Addressing::from_conf(inv, conf)?;
    addressing.gc(conf)?;
    remove_stale_host_ends(conf)
}

/// Host ends of this network whose attachment the runtime no longer lists: left by a
/// DEL that never came. Found by the alias ADD wrote on them.
fn remove_stale_host_ends(conf: &NetConf) -> Result<(), PluginError> {
    let valid: HashSet<String> = conf
        .valid_attachments
        .iter()
        .flatten()
        .map(|a| names::host_alias(&conf.name, &a.container_id, &a.ifname))
        .collect();
    let prefix = names::host_alias(&conf.name, "", "");
    let prefix = prefix.trim_end_matches(':');
    let mut nl = Netlink::open().map_err(PluginError::netlink("open netlink socket"))?;
    for link in nl.links().map_err(PluginError::netlink("dump links"))? {
        let Some(alias) = &link.alias else { continue };
        let ours = link.name.starts_with(names::HOST_PREFIX) && alias.starts_with(prefix);
        if ours && !valid.contains(alias) {
            tracing::info!(link = %link.name, %alias, "GC removes a stale host end");
            let _ = nl.set_down(link.index);
            reaper::delete_link_detached(link.index)
                .map_err(PluginError::netlink(format!("delete {}", link.name)))?;
        }
    }
    Ok(())
}
