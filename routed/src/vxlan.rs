//! The `fjord.vxlan` device and its FDB and neighbour entries, over rtnetlink. Thin: what
//! to program is decided in [`crate::encap`].
//!
//! Ownership: the device is Fjord's (by name); on it, Fjord's entries are the permanent
//! ones whose MAC starts with [`VTEP_MAC_PREFIX`], and only those are read or removed.

use crate::encap::{
    format_mac, is_vtep_mac, Mac, VtepEntries, VtepPlan, VTEP_MAC_PREFIX, VXLAN_DEVICE, VXLAN_PORT,
    VXLAN_VNI,
};
use crate::kernel::KernelError;
use futures::TryStreamExt;
use ipnetwork::IpNetwork;
use netlink_packet_route::address::{AddressAttribute, AddressScope};
use netlink_packet_route::link::{InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkInfo};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::AddressFamily;
use rtnetlink::{Handle, LinkUnspec, LinkVxlan};
use std::io;
use std::net::{IpAddr, Ipv4Addr};

const ENODEV: i32 = 19;
const ENOENT: i32 = 2;

/// What `fjord.vxlan` must look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceSpec {
    /// The underlay interface (the one holding the node address).
    pub underlay: u32,
    pub local: Ipv4Addr,
    pub mtu: u32,
    pub mac: Mac,
}

/// The device as found in the kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Found {
    index: u32,
    mtu: Option<u32>,
    mac: Option<Vec<u8>>,
    vni: Option<u32>,
    port: Option<u16>,
    underlay: Option<u32>,
    local: Option<Ipv4Addr>,
    learning: Option<bool>,
    up: bool,
}

impl Found {
    fn matches(&self, spec: &DeviceSpec) -> bool {
        self.mtu == Some(spec.mtu)
            && self.mac.as_deref() == Some(&spec.mac[..])
            && self.vni == Some(VXLAN_VNI)
            && self.port == Some(VXLAN_PORT)
            && self.underlay == Some(spec.underlay)
            && self.local == Some(spec.local)
            && self.learning == Some(false)
    }
}

#[derive(Clone)]
pub struct Vxlan {
    handle: Handle,
}

fn failed(action: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> KernelError {
    let action = action.into();
    move |e| KernelError::Vxlan {
        action,
        source: to_io(e),
    }
}

fn to_io(e: rtnetlink::Error) -> io::Error {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.to_io(),
        other => io::Error::other(other.to_string()),
    }
}

fn is_errno(e: &rtnetlink::Error, errno: i32) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -errno)
}

impl Vxlan {
    /// A netlink socket in the caller's namespace; must run inside a tokio runtime.
    pub fn connect() -> Result<Vxlan, KernelError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(KernelError::Socket)?;
        tokio::spawn(connection);
        Ok(Vxlan { handle })
    }

    /// The device's index, if it exists.
    pub async fn index(&self) -> Result<Option<u32>, KernelError> {
        Ok(self.find().await?.map(|f| f.index))
    }

    async fn find(&self) -> Result<Option<Found>, KernelError> {
        let mut links = self.handle.link().get().match_name(VXLAN_DEVICE).execute();
        match links.try_next().await {
            Ok(Some(message)) => Ok(Some(parse_link(&message))),
            Ok(None) => Ok(None),
            Err(e) if is_errno(&e, ENODEV) => Ok(None),
            Err(e) => Err(failed("read the device")(e)),
        }
    }

    /// Makes the device exist as `spec` says and be up; returns its index. A device that
    /// already matches is kept (forwarding goes on across a restart); one that differs
    /// (another underlay, MTU, address, VNI) is replaced.
    pub async fn ensure(&self, spec: &DeviceSpec) -> Result<(u32, bool), KernelError> {
        if let Some(found) = self.find().await? {
            if found.matches(spec) {
                if !found.up {
                    let message = LinkUnspec::new_with_index(found.index).up().build();
                    self.handle
                        .link()
                        .set(message)
                        .execute()
                        .await
                        .map_err(failed("set the device up"))?;
                }
                return Ok((found.index, false));
            }
            self.delete(found.index).await?;
        }
        let message = LinkVxlan::new(VXLAN_DEVICE, VXLAN_VNI)
            .dev(spec.underlay)
            .port(VXLAN_PORT)
            .local(spec.local)
            .learning(false)
            .mtu(spec.mtu)
            .address(spec.mac.to_vec())
            .up()
            .build();
        self.handle
            .link()
            .add(message)
            .execute()
            .await
            .map_err(failed("create the device"))?;
        let index = self.index().await?.ok_or_else(|| KernelError::Vxlan {
            action: "find the device just created".into(),
            source: io::Error::from(io::ErrorKind::NotFound),
        })?;
        Ok((index, true))
    }

    /// Deletes the device (with every route, FDB and neighbour entry on it); whether it
    /// existed.
    pub async fn remove(&self) -> Result<bool, KernelError> {
        match self.find().await? {
            Some(found) => self.delete(found.index).await.map(|()| true),
            None => Ok(false),
        }
    }

    async fn delete(&self, index: u32) -> Result<(), KernelError> {
        match self.handle.link().del(index).execute().await {
            Err(e) if is_errno(&e, ENODEV) => Ok(()),
            result => result.map_err(failed("delete the device")),
        }
    }

    /// The node's directly connected subnets: every address's network, but not those on
    /// the device itself or of host scope (loopback).
    pub async fn connected(&self, device: Option<u32>) -> Result<Vec<IpNetwork>, KernelError> {
        let mut addresses = self.handle.address().get().execute();
        let mut networks = Vec::new();
        while let Some(message) = addresses
            .try_next()
            .await
            .map_err(failed("read the node's addresses"))?
        {
            if Some(message.header.index) == device || message.header.scope == AddressScope::Host {
                continue;
            }
            let address = message.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            });
            if let Some(net) =
                address.and_then(|ip| IpNetwork::new(ip, message.header.prefix_len).ok())
            {
                let network = IpNetwork::new(net.network(), net.prefix()).unwrap_or(net);
                if !networks.contains(&network) {
                    networks.push(network);
                }
            }
        }
        Ok(networks)
    }

    /// Fjord's FDB and neighbour entries on the device.
    pub async fn entries(&self, index: u32) -> Result<VtepEntries, KernelError> {
        let mut entries = VtepEntries::default();
        let mut fdb = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge)
            .execute();
        while let Some(m) = fdb.try_next().await.map_err(failed("read the FDB"))? {
            if let (true, Some(mac), Some(IpAddr::V4(dst))) =
                (m.header.ifindex == index, lladdr(&m), destination(&m))
            {
                entries.fdb.insert(mac, dst);
            }
        }
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut neighbours = self
                .handle
                .neighbours()
                .get()
                .set_address_family(family)
                .execute();
            while let Some(m) = neighbours
                .try_next()
                .await
                .map_err(failed("read the neighbours"))?
            {
                let permanent = m.header.state == NeighbourState::Permanent;
                if let (true, true, Some(mac), Some(ip)) = (
                    m.header.ifindex == index,
                    permanent,
                    lladdr(&m),
                    destination(&m),
                ) {
                    entries.neighbours.insert(ip, mac);
                }
            }
        }
        Ok(entries)
    }

    /// Applies `plan`: removals first (a wrong FDB destination goes before the right
    /// one is added). Every change is attempted; the first failure is returned.
    pub async fn apply(&self, index: u32, plan: &VtepPlan) -> Result<(), KernelError> {
        let mut first_error = None;
        let mut note = |r: Result<(), KernelError>| {
            if let Err(e) = r {
                first_error.get_or_insert(e);
            }
        };
        for (mac, dst) in &plan.remove_fdb {
            note(self.remove_fdb(index, mac, *dst).await);
        }
        for (ip, mac) in &plan.remove_neighbours {
            note(self.remove_neighbour(index, *ip, mac).await);
        }
        for (mac, dst) in &plan.add_fdb {
            let mut request = self
                .handle
                .neighbours()
                .add_bridge(index, mac)
                .flags(NeighbourFlags::Own)
                .replace();
            request
                .message_mut()
                .attributes
                .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                    *dst,
                )));
            note(request.execute().await.map_err(failed(format!(
                "add FDB entry {} dst {dst}",
                format_mac(mac)
            ))));
        }
        for (ip, mac) in &plan.add_neighbours {
            let request = self
                .handle
                .neighbours()
                .add(index, *ip)
                .link_layer_address(mac)
                .state(NeighbourState::Permanent)
                .replace();
            note(request.execute().await.map_err(failed(format!(
                "add neighbour {ip} lladdr {}",
                format_mac(mac)
            ))));
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn remove_fdb(&self, index: u32, mac: &Mac, dst: Ipv4Addr) -> Result<(), KernelError> {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Bridge;
        m.header.ifindex = index;
        m.header.flags = NeighbourFlags::Own;
        m.header.state = NeighbourState::Permanent;
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(dst)));
        let action = format!("remove FDB entry {} dst {dst}", format_mac(mac));
        self.delete_neighbour(m, action).await
    }

    async fn remove_neighbour(&self, index: u32, ip: IpAddr, mac: &Mac) -> Result<(), KernelError> {
        let mut m = NeighbourMessage::default();
        m.header.family = match ip {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        m.header.ifindex = index;
        m.attributes.push(NeighbourAttribute::Destination(match ip {
            IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
            IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
        }));
        let action = format!("remove neighbour {ip} lladdr {}", format_mac(mac));
        self.delete_neighbour(m, action).await
    }

    async fn delete_neighbour(
        &self,
        m: NeighbourMessage,
        action: String,
    ) -> Result<(), KernelError> {
        match self.handle.neighbours().del(m).execute().await {
            Err(e) if is_errno(&e, ENOENT) => Ok(()),
            result => result.map_err(failed(action)),
        }
    }
}

/// The MAC of a neighbour or FDB entry, if it is one of Fjord's.
fn lladdr(m: &NeighbourMessage) -> Option<Mac> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(mac) if is_vtep_mac(mac) => {
            mac.as_slice().try_into().ok()
        }
        _ => None,
    })
}

fn destination(m: &NeighbourMessage) -> Option<IpAddr> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
        // An FDB entry (family AF_BRIDGE) carries its IPv4 destination as raw bytes.
        NeighbourAttribute::Destination(NeighbourAddress::Other(raw)) => {
            <[u8; 4]>::try_from(raw.as_slice()).ok().map(IpAddr::from)
        }
        _ => None,
    })
}

fn parse_link(message: &netlink_packet_route::link::LinkMessage) -> Found {
    let mut found = Found {
        index: message.header.index,
        up: message
            .header
            .flags
            .contains(netlink_packet_route::link::LinkFlags::Up),
        ..Found::default()
    };
    for attr in &message.attributes {
        match attr {
            LinkAttribute::Mtu(mtu) => found.mtu = Some(*mtu),
            LinkAttribute::Address(mac) => found.mac = Some(mac.clone()),
            LinkAttribute::LinkInfo(infos) => parse_info(infos, &mut found),
            _ => {}
        }
    }
    found
}

fn parse_info(infos: &[LinkInfo], found: &mut Found) {
    let is_vxlan = infos
        .iter()
        .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Vxlan)));
    if !is_vxlan {
        // Someone else's device under our name: never matches, so it is replaced.
        found.vni = None;
        return;
    }
    for info in infos {
        let LinkInfo::Data(InfoData::Vxlan(data)) = info else {
            continue;
        };
        for d in data {
            match d {
                InfoVxlan::Id(vni) => found.vni = Some(*vni),
                InfoVxlan::Port(port) => found.port = Some(*port),
                InfoVxlan::Link(link) => found.underlay = Some(*link),
                InfoVxlan::Local(local) => found.local = Some(*local),
                InfoVxlan::Learning(l) => found.learning = Some(*l),
                _ => {}
            }
        }
    }
}

/// `VTEP_MAC_PREFIX` is what marks Fjord's entries; keep the two in one place.
const _: () = assert!(VTEP_MAC_PREFIX[0] & 0b11 == 0b10);
