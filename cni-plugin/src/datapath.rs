//! The pod datapath of ARCHITECTURE.md (Calico's model): a veth pair, /32 and /128 pod
//! addresses, a link-local gateway pinned by a permanent neighbour entry, one host route
//! per pod address.

use crate::error::PluginError;
use crate::names;
use crate::netlink::{Netlink, RouteEntry, VethEnd};
use crate::netns::NetnsFile;
use crate::{reaper, sysctl};
use ipnetwork::IpNetwork;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
pub const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

/// The attachment being wired: one container interface on one network.
pub struct Attachment<'a> {
    pub network: &'a str,
    pub container_id: &'a str,
    pub ifname: &'a str,
}

impl Attachment<'_> {
    pub fn host_name(&self) -> String {
        names::host_veth_name(self.container_id, self.ifname)
    }
}

/// What `setup` made, for the result.
pub struct Wired {
    pub host_name: String,
    pub host_mac: [u8; 6],
    pub pod_mac: [u8; 6],
    pub mtu: u32,
}

pub fn host_prefix(ip: IpAddr) -> IpNetwork {
    let len = if ip.is_ipv4() { 32 } else { 128 };
    IpNetwork::new(ip, len).expect("a host prefix length is always valid")
}

pub fn gateway_for(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(GATEWAY_V4),
        IpAddr::V6(_) => IpAddr::V6(GATEWAY_V6),
    }
}

/// Host routes to the pod's addresses through the host end.
fn host_routes(addresses: &[IpAddr], host_index: u32) -> Vec<RouteEntry> {
    addresses
        .iter()
        .map(|ip| RouteEntry {
            dst: host_prefix(*ip),
            gateway: None,
            oif: Some(host_index),
            link_scope: true,
        })
        .collect()
}

/// Creates and configures both ends. On error the pair is removed again.
pub fn setup(
    att: &Attachment,
    pod_netns: &NetnsFile,
    addresses: &[IpAddr],
    mtu: u32,
) -> Result<Wired, PluginError> {
    let mut host_nl = Netlink::open().map_err(PluginError::netlink("open netlink socket"))?;
    let host_name = att.host_name();
    let (host_mac, pod_mac) = names::veth_macs(att.container_id, att.ifname);
    let alias = names::host_alias(att.network, att.container_id, att.ifname);
    host_nl
        .create_veth(
            &VethEnd {
                name: &host_name,
                mac: host_mac,
                mtu,
            },
            &VethEnd {
                name: att.ifname,
                mac: pod_mac,
                mtu,
            },
            std::os::fd::AsRawFd::as_raw_fd(pod_netns.file()),
            &alias,
        )
        .map_err(PluginError::netlink(format!(
            "create veth pair {host_name} / {} (MTU {mtu})",
            att.ifname
        )))?;
    let wired = Wired {
        host_name,
        host_mac,
        pod_mac,
        mtu,
    };
    let configured = configure_host(&mut host_nl, &wired, addresses)
        .and_then(|()| configure_pod(pod_netns, att.ifname, &wired, addresses));
    if let Err(e) = configured {
        if let Ok(Some(link)) = host_nl.link_by_name(&wired.host_name) {
            let _ = host_nl.delete_link(link.index);
        }
        return Err(e);
    }
    Ok(wired)
}

fn configure_host(
    nl: &mut Netlink,
    wired: &Wired,
    addresses: &[IpAddr],
) -> Result<(), PluginError> {
    let name = &wired.host_name;
    let link = nl
        .link_by_name(name)
        .map_err(PluginError::netlink(format!("look up {name}")))?
        .ok_or_else(|| PluginError::Netlink {
            op: format!("look up {name}"),
            source: std::io::Error::from_raw_os_error(libc::ENODEV),
        })?;
    sysctl::set_interface_key("ipv4", name, "proxy_arp", "1").map_err(PluginError::sysctl(
        format!("net.ipv4.conf.{name}.proxy_arp"),
    ))?;
    sysctl::ensure("net.ipv4.ip_forward", "1")
        .map_err(PluginError::sysctl("net.ipv4.ip_forward"))?;
    if addresses.iter().any(IpAddr::is_ipv6) {
        sysctl::ensure("net.ipv6.conf.all.forwarding", "1")
            .map_err(PluginError::sysctl("net.ipv6.conf.all.forwarding"))?;
        let gw = IpNetwork::new(IpAddr::V6(GATEWAY_V6), 64).expect("fe80::1/64 is valid");
        nl.add_address(link.index, gw, true)
            .map_err(PluginError::netlink(format!("add {gw} to {name}")))?;
    }
    for route in host_routes(addresses, link.index) {
        nl.add_route(&route).map_err(PluginError::netlink(format!(
            "add route {} dev {name}",
            route.dst
        )))?;
    }
    Ok(())
}

fn configure_pod(
    pod_netns: &NetnsFile,
    ifname: &str,
    wired: &Wired,
    addresses: &[IpAddr],
) -> Result<(), PluginError> {
    let home = NetnsFile::current().map_err(|source| PluginError::Netns {
        path: "/proc/thread-self/ns/net".into(),
        source,
    })?;
    let mut nl = pod_netns
        .run_in(&home, Netlink::open)
        .and_then(|r| r)
        .map_err(PluginError::netlink(
            "open netlink socket in the pod namespace",
        ))?;
    let index = nl
        .link_by_name(ifname)
        .map_err(PluginError::netlink(format!("look up {ifname} in the pod")))?
        .map(|l| l.index)
        .ok_or_else(|| PluginError::Netlink {
            op: format!("look up {ifname} in the pod"),
            source: std::io::Error::from_raw_os_error(libc::ENODEV),
        })?;
    nl.set_up(index)
        .map_err(PluginError::netlink(format!("set {ifname} up in the pod")))?;
    for ip in addresses {
        let gw = gateway_for(*ip);
        let net = host_prefix(*ip);
        nl.add_address(index, net, ip.is_ipv6())
            .map_err(PluginError::netlink(format!(
                "add {net} to {ifname} in the pod"
            )))?;
        nl.add_permanent_neighbour(index, gw, wired.host_mac)
            .map_err(PluginError::netlink(format!(
                "pin neighbour {gw} on {ifname}"
            )))?;
        let mut routes = Vec::new();
        if ip.is_ipv4() {
            // IPv4 needs the gateway on-link before a route can go via it; fe80::/64
            // is on-link by itself.
            routes.push(RouteEntry {
                dst: host_prefix(gw),
                gateway: None,
                oif: Some(index),
                link_scope: true,
            });
        }
        let any = if ip.is_ipv4() { "0.0.0.0/0" } else { "::/0" };
        routes.push(RouteEntry {
            dst: any.parse().expect("a default prefix parses"),
            gateway: Some(gw),
            oif: Some(index),
            link_scope: false,
        });
        for route in routes {
            nl.add_route(&route).map_err(PluginError::netlink(format!(
                "add route {} in the pod",
                route.dst
            )))?;
        }
    }
    Ok(())
}

/// Removes what must be gone before DEL returns (the host routes; the link stops
/// carrying traffic) and hands the slow part, destroying the pair, to a detached child:
/// unregistering a device waits for RCU grace periods (docs/testing.md, "Where ADD and
/// DEL spend their time"). The pair also dies with the pod's namespace, which runtimes
/// delete right after DEL.
pub fn teardown(att: &Attachment, addresses: &[IpAddr]) -> Result<(), Vec<PluginError>> {
    let name = att.host_name();
    let mut errors = Vec::new();
    let mut nl =
        Netlink::open().map_err(|e| vec![PluginError::netlink("open netlink socket")(e)])?;
    let link = match nl.link_by_name(&name) {
        Ok(Some(link)) => link,
        Ok(None) => return Ok(()),
        Err(e) => return Err(vec![PluginError::netlink(format!("look up {name}"))(e)]),
    };
    for route in host_routes(addresses, link.index) {
        match nl.delete_route(&route) {
            Err(e) if !matches!(e.raw_os_error(), Some(libc::ESRCH) | Some(libc::ENOENT)) => errors
                .push(PluginError::netlink(format!(
                    "delete route {} dev {name}",
                    route.dst
                ))(e)),
            _ => {}
        }
    }
    if let Err(e) = nl.set_down(link.index) {
        errors.push(PluginError::netlink(format!("set {name} down"))(e));
    }
    if let Err(e) = reaper::delete_link_detached(link.index) {
        errors.push(PluginError::netlink(format!(
            "start the deletion of {name}"
        ))(e));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// A host end left by an earlier DEL whose detached deletion has not finished (it is
/// down): removed synchronously so the same attachment can be made again.
/// Returns true if an attachment with this name is up, i.e. really in use.
pub fn clear_stale_host_end(att: &Attachment) -> Result<bool, PluginError> {
    let name = att.host_name();
    let mut nl = Netlink::open().map_err(PluginError::netlink("open netlink socket"))?;
    match nl
        .link_by_name(&name)
        .map_err(PluginError::netlink(format!("look up {name}")))?
    {
        None => Ok(false),
        Some(link) if link.up => Ok(true),
        Some(link) => match nl.delete_link(link.index) {
            Ok(()) => Ok(false),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(PluginError::netlink(format!("delete stale {name}"))(e)),
        },
    }
}

/// Compares the kernel with what ADD set up for `addresses`.
pub fn check(
    att: &Attachment,
    netns_path: &Path,
    pod_netns: &NetnsFile,
    addresses: &[IpAddr],
) -> Result<(), PluginError> {
    let mismatch = |m: String| Err(PluginError::CheckMismatch(m));
    let name = att.host_name();
    let mut host_nl = Netlink::open().map_err(PluginError::netlink("open netlink socket"))?;
    let Some(host) = host_nl
        .link_by_name(&name)
        .map_err(PluginError::netlink(format!("look up {name}")))?
    else {
        return mismatch(format!("host interface {name} does not exist"));
    };
    if !host.up {
        return mismatch(format!("host interface {name} is down"));
    }
    for ip in addresses {
        let routes = host_nl
            .routes(ip.is_ipv6())
            .map_err(PluginError::netlink("dump host routes"))?;
        let want = host_prefix(*ip);
        if !routes
            .iter()
            .any(|r| r.dst == want && r.oif == Some(host.index))
        {
            return mismatch(format!("no host route {want} dev {name}"));
        }
    }
    let home = NetnsFile::current().map_err(|source| PluginError::Netns {
        path: "/proc/thread-self/ns/net".into(),
        source,
    })?;
    let mut pod_nl = pod_netns
        .run_in(&home, Netlink::open)
        .and_then(|r| r)
        .map_err(|source| PluginError::Netns {
            path: netns_path.into(),
            source,
        })?;
    let Some(pod) = pod_nl
        .link_by_name(att.ifname)
        .map_err(PluginError::netlink(format!(
            "look up {} in the pod",
            att.ifname
        )))?
    else {
        return mismatch(format!(
            "interface {} does not exist in {}",
            att.ifname,
            netns_path.display()
        ));
    };
    if pod.mtu != host.mtu {
        return mismatch(format!(
            "MTU of {} is {} but {name} has {}",
            att.ifname, pod.mtu, host.mtu
        ));
    }
    let have = pod_nl
        .addresses(pod.index)
        .map_err(PluginError::netlink("dump pod addresses"))?;
    let neighbours = pod_nl
        .neighbours(pod.index)
        .map_err(PluginError::netlink("dump pod neighbours"))?;
    for ip in addresses {
        if !have.contains(&host_prefix(*ip)) {
            return mismatch(format!(
                "{} has no address {}",
                att.ifname,
                host_prefix(*ip)
            ));
        }
        let gw = gateway_for(*ip);
        if !neighbours
            .iter()
            .any(|n| n.ip == gw && n.permanent && n.mac == host.mac)
        {
            return mismatch(format!(
                "no permanent neighbour {gw} -> {} in the pod",
                names::format_mac(&host.mac)
            ));
        }
        let routes = pod_nl
            .routes(ip.is_ipv6())
            .map_err(PluginError::netlink("dump pod routes"))?;
        if !routes
            .iter()
            .any(|r| r.dst.prefix() == 0 && r.gateway == Some(gw))
        {
            return mismatch(format!("no default route via {gw} in the pod"));
        }
    }
    Ok(())
}
