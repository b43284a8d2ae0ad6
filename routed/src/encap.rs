//! Encapsulation, decided per peer (ARCHITECTURE.md, "The route daemon"): which other nodes'
//! blocks go natively `via` the node address and which through `fjord.vxlan`, and every
//! VXLAN entry (VTEP MAC, VTEP address, FDB, neighbour) derived from what BGP already
//! carries: a block and its next hop. Pure; the kernel side is [`crate::vxlan`].
//!
//! The derivation (docs/encapsulation.md):
//! - VTEP MAC of a node: `66:6a` followed by the four octets of its IPv4 node address
//!   (`10.250.1.2` -> `66:6a:0a:fa:01:02`): locally administered, unicast, and the same
//!   on every node without asking anyone.
//! - VTEP address of a block: the block's first address (`10.244.0.64/26` ->
//!   `10.244.0.64`, `fd00:244::40/122` -> `fd00:244::40`). The IPAM never hands ordinal 0
//!   of a block to a pod (ipam/src/block.rs), so it cannot collide with one.
//! - Underlay destination of a VTEP: the IPv4 address of the registered node whose
//!   address (IPv4 or IPv6) is the route's next hop; IPv6 blocks ride the IPv4 underlay.

use crate::config::Encapsulation;
use crate::node::NextHop;
use ipnetwork::IpNetwork;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

pub const VXLAN_DEVICE: &str = "fjord.vxlan";
pub const VXLAN_VNI: u32 = 4096;
pub const VXLAN_PORT: u16 = 4789;
/// Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14) headers.
pub const VXLAN_OVERHEAD: u32 = 50;
/// The first two octets of every VTEP MAC Fjord derives: it marks Fjord's own FDB and
/// neighbour entries on the device.
pub const VTEP_MAC_PREFIX: [u8; 2] = [0x66, 0x6a];

pub type Mac = [u8; 6];

/// How the blocks behind one next hop are reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Datapath {
    /// `via NODE-ADDRESS`, straight over the underlay.
    Native,
    /// `via VTEP-ADDRESS dev fjord.vxlan onlink`.
    Vxlan,
    /// `never` and the next hop is not on a directly connected subnet: no route.
    Unreachable,
}

impl fmt::Display for Datapath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Datapath::Native => "native",
            Datapath::Vxlan => "vxlan",
            Datapath::Unreachable => "unreachable",
        })
    }
}

pub fn vtep_mac(node: Ipv4Addr) -> Mac {
    let [a, b, c, d] = node.octets();
    [VTEP_MAC_PREFIX[0], VTEP_MAC_PREFIX[1], a, b, c, d]
}

pub fn is_vtep_mac(mac: &[u8]) -> bool {
    mac.len() == 6 && mac[..2] == VTEP_MAC_PREFIX
}

pub fn vtep_address(block: IpNetwork) -> IpAddr {
    block.network()
}

pub fn format_mac(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Whether `address` is on one of the node's directly connected subnets.
pub fn is_connected(address: IpAddr, connected: &[IpNetwork]) -> bool {
    connected.iter().any(|net| net.contains(address))
}

/// The datapath towards a node whose address (the route's next hop) is `next_hop`.
pub fn datapath(mode: Encapsulation, next_hop: IpAddr, connected: &[IpNetwork]) -> Datapath {
    match (mode, is_connected(next_hop, connected)) {
        (Encapsulation::Always, _) => Datapath::Vxlan,
        (_, true) => Datapath::Native,
        (Encapsulation::CrossSubnet, false) => Datapath::Vxlan,
        (Encapsulation::Never, false) => Datapath::Unreachable,
    }
}

/// The pod MTU: the underlay's, less the VXLAN headers whenever any route may be
/// encapsulated (pods keep their MTU for life, whichever peers join later).
pub fn pod_mtu(mode: Encapsulation, underlay_mtu: u32) -> u32 {
    match mode {
        Encapsulation::Never => underlay_mtu,
        Encapsulation::Always | Encapsulation::CrossSubnet => vxlan_mtu(underlay_mtu),
    }
}

pub fn vxlan_mtu(underlay_mtu: u32) -> u32 {
    underlay_mtu.saturating_sub(VXLAN_OVERHEAD)
}

/// Whether `fjord.vxlan` must exist: `always`, or `cross-subnet` with some other node
/// off the connected subnets. A single-segment cluster in `cross-subnet` has none.
pub fn device_needed(
    mode: Encapsulation,
    peers: impl IntoIterator<Item = IpAddr>,
    connected: &[IpNetwork],
) -> bool {
    match mode {
        Encapsulation::Never => false,
        Encapsulation::Always => true,
        Encapsulation::CrossSubnet => peers.into_iter().any(|p| !is_connected(p, connected)),
    }
}

/// What the route decision needs to know about the node and the cluster.
#[derive(Clone, Debug)]
pub struct Encap {
    pub mode: Encapsulation,
    /// The node's directly connected subnets (not `fjord.vxlan`'s).
    pub connected: Vec<IpNetwork>,
    /// Every address of every other registered node -> that node's IPv4 address.
    pub nodes: HashMap<IpAddr, Ipv4Addr>,
    /// `fjord.vxlan`'s index while it exists.
    pub device: Option<u32>,
}

/// The kernel route for one RIB entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteChoice {
    Install(NextHop),
    /// Through VXLAN, with the VTEP to program before the route.
    InstallVxlan {
        next_hop: NextHop,
        vtep: Ipv4Addr,
    },
    /// Not installed (and removed if it was): `never` towards an unreachable node, or
    /// VXLAN wanted while the device is missing.
    Skip(Datapath),
}

impl Encap {
    pub fn new(mode: Encapsulation) -> Encap {
        Encap {
            mode,
            connected: Vec::new(),
            nodes: HashMap::new(),
            device: None,
        }
    }

    /// How `prefix` learned with `next_hop` goes into the kernel. Next hops that are no
    /// registered node (a ToR, an outside peer) are always native.
    pub fn choose(&self, prefix: IpNetwork, next_hop: IpAddr) -> RouteChoice {
        let Some(&node) = self.nodes.get(&next_hop) else {
            return RouteChoice::Install(NextHop::Via(next_hop));
        };
        match (datapath(self.mode, next_hop, &self.connected), self.device) {
            (Datapath::Native, _) => RouteChoice::Install(NextHop::Via(next_hop)),
            (Datapath::Vxlan, Some(ifindex)) => RouteChoice::InstallVxlan {
                next_hop: NextHop::OnLink {
                    gateway: vtep_address(prefix),
                    ifindex,
                },
                vtep: node,
            },
            (Datapath::Vxlan, None) => RouteChoice::Skip(Datapath::Vxlan),
            (Datapath::Unreachable, _) => RouteChoice::Skip(Datapath::Unreachable),
        }
    }

    /// The datapath of a peer, by its session address (a node's IPv4 address); peers that
    /// are no registered node are native.
    pub fn peer_datapath(&self, address: IpAddr) -> Datapath {
        if !self.nodes.contains_key(&address) {
            return Datapath::Native;
        }
        datapath(self.mode, address, &self.connected)
    }
}

/// Whether Fjord's route for `prefix`, now `current`, must be removed before `wanted` can
/// be installed. IPv6 checks an onlink gateway against the table as it stands and
/// refuses (EINVAL) one that falls inside a route on another device: the block's own
/// native route holds its VTEP address, so a native -> VXLAN change of an IPv6 block
/// is a remove and an add. IPv4 replaces in place.
pub fn must_clear_before(prefix: IpNetwork, current: Option<NextHop>, wanted: NextHop) -> bool {
    prefix.is_ipv6()
        && matches!(wanted, NextHop::OnLink { .. })
        && current.is_some_and(|c| c != wanted)
}

/// The FDB and neighbour entries `fjord.vxlan` must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VtepEntries {
    /// VTEP MAC -> the remote node's IPv4 address (`bridge fdb ... dst`).
    pub fdb: BTreeMap<Mac, Ipv4Addr>,
    /// VTEP address -> VTEP MAC (`ip neigh ... nud permanent`).
    pub neighbours: BTreeMap<IpAddr, Mac>,
}

/// The entries for a set of VXLAN routes: block -> the node (IPv4) behind it.
pub fn vtep_entries<'a>(
    routes: impl IntoIterator<Item = (&'a IpNetwork, &'a Ipv4Addr)>,
) -> VtepEntries {
    let mut entries = VtepEntries::default();
    for (block, node) in routes {
        let mac = vtep_mac(*node);
        entries.fdb.insert(mac, *node);
        entries.neighbours.insert(vtep_address(*block), mac);
    }
    entries
}

/// What to change to turn `current` into `desired`. `keep_stale` (during a restart
/// window) leaves entries nobody wants yet, as routes are left then.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VtepPlan {
    pub add_fdb: Vec<(Mac, Ipv4Addr)>,
    pub remove_fdb: Vec<(Mac, Ipv4Addr)>,
    pub add_neighbours: Vec<(IpAddr, Mac)>,
    pub remove_neighbours: Vec<(IpAddr, Mac)>,
}

impl VtepPlan {
    pub fn is_empty(&self) -> bool {
        self.add_fdb.is_empty()
            && self.remove_fdb.is_empty()
            && self.add_neighbours.is_empty()
            && self.remove_neighbours.is_empty()
    }
}

/// `current` holds Fjord's entries only (MACs with [`VTEP_MAC_PREFIX`]); an FDB entry
/// can exist once per (MAC, destination), so a wrong destination is removed and added.
pub fn plan_vteps(current: &VtepEntries, desired: &VtepEntries, keep_stale: bool) -> VtepPlan {
    let mut plan = VtepPlan::default();
    for (mac, dst) in &desired.fdb {
        if current.fdb.get(mac) != Some(dst) {
            plan.add_fdb.push((*mac, *dst));
        }
    }
    for (address, mac) in &desired.neighbours {
        if current.neighbours.get(address) != Some(mac) {
            plan.add_neighbours.push((*address, *mac));
        }
    }
    for (mac, dst) in &current.fdb {
        let wanted = desired.fdb.get(mac);
        if wanted.is_some_and(|w| w != dst) || (wanted.is_none() && !keep_stale) {
            plan.remove_fdb.push((*mac, *dst));
        }
    }
    if !keep_stale {
        for (address, mac) in &current.neighbours {
            if !desired.neighbours.contains_key(address) {
                plan.remove_neighbours.push((*address, *mac));
            }
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use Encapsulation::{Always, CrossSubnet, Never};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn lab_node() -> Encap {
        // On 10.250.0.0/24 + fd00:250::/64; peers .2 (same subnet) and 10.250.1.2 (not).
        let mut e = Encap::new(CrossSubnet);
        e.connected = vec![net("10.250.0.1/24"), net("fd00:250::1/64")];
        for (addrs, v4) in [
            (["10.250.0.2", "fd00:250::2"], "10.250.0.2"),
            (["10.250.1.2", "fd00:250:0:1::2"], "10.250.1.2"),
        ] {
            for a in addrs {
                e.nodes.insert(ip(a), v4.parse().unwrap());
            }
        }
        e.device = Some(9);
        e
    }

    #[test]
    fn only_ipv6_routes_turning_onlink_are_cleared_first() {
        let onlink = NextHop::OnLink {
            gateway: ip("fd00:244::40"),
            ifindex: 9,
        };
        let native = NextHop::Via(ip("fd00:250::2"));
        let v6 = net("fd00:244::40/122");
        assert!(must_clear_before(v6, Some(native), onlink));
        assert!(!must_clear_before(v6, Some(onlink), onlink));
        assert!(!must_clear_before(v6, None, onlink));
        assert!(!must_clear_before(v6, Some(onlink), native));
        let v4_onlink = NextHop::OnLink {
            gateway: ip("10.244.0.64"),
            ifindex: 9,
        };
        assert!(!must_clear_before(
            net("10.244.0.64/26"),
            Some(NextHop::Via(ip("10.250.0.2"))),
            v4_onlink
        ));
    }

    #[test]
    fn mac_is_the_prefix_and_the_ipv4_octets() {
        let mac = vtep_mac("10.250.1.2".parse().unwrap());
        assert_eq!(format_mac(&mac), "66:6a:0a:fa:01:02");
        assert!(is_vtep_mac(&mac));
        assert_eq!(mac[0] & 0b11, 0b10, "locally administered unicast");
        assert!(!is_vtep_mac(&[0x66, 0x6b, 0, 0, 0, 1]));
    }

    #[test]
    fn vtep_address_is_the_blocks_first_address() {
        assert_eq!(vtep_address(net("10.244.0.64/26")), ip("10.244.0.64"));
        assert_eq!(vtep_address(net("fd00:244::40/122")), ip("fd00:244::40"));
    }

    #[test]
    fn the_ipam_never_hands_a_vtep_address_to_a_pod() {
        use fjord_ipam::block::{Allocation, Block, Refusal};
        use fjord_ipam::{Handle, Owner};
        let alloc = |i: u32| Allocation {
            handle: Handle {
                container_id: format!("c{i}"),
                ifname: "eth0".into(),
            },
            owner: Owner::default(),
        };
        for cidr in ["10.244.0.64/26", "fd00:244::40/122"] {
            let mut block = Block::new(net(cidr), "n1");
            let vtep = vtep_address(net(cidr));
            assert_eq!(block.take(vtep, alloc(0)), Err(Refusal::Reserved));
            let mut handed = 0;
            while let Some(address) = block.take_next(alloc(handed + 1)) {
                assert_ne!(address, vtep, "{cidr}: a pod got the VTEP address");
                handed += 1;
            }
            assert_eq!(handed, 63, "{cidr}: every other address is handed out");
        }
    }

    #[test]
    fn each_mode_decides_by_connectedness() {
        let connected = [net("10.250.0.0/24")];
        let (near, far) = (ip("10.250.0.2"), ip("10.250.1.2"));
        assert_eq!(datapath(CrossSubnet, near, &connected), Datapath::Native);
        assert_eq!(datapath(CrossSubnet, far, &connected), Datapath::Vxlan);
        assert_eq!(datapath(Always, near, &connected), Datapath::Vxlan);
        assert_eq!(datapath(Always, far, &connected), Datapath::Vxlan);
        assert_eq!(datapath(Never, near, &connected), Datapath::Native);
        assert_eq!(datapath(Never, far, &connected), Datapath::Unreachable);
    }

    #[test]
    fn pod_mtu_leaves_room_for_vxlan_unless_never() {
        assert_eq!(pod_mtu(Never, 1500), 1500);
        assert_eq!(pod_mtu(CrossSubnet, 1500), 1450);
        assert_eq!(pod_mtu(Always, 9000), 8950);
        assert_eq!(pod_mtu(Always, 1400), 1350);
    }

    #[test]
    fn the_device_exists_only_when_some_route_can_use_it() {
        let connected = [net("10.250.0.0/24")];
        let near = [ip("10.250.0.2")];
        let mixed = [ip("10.250.0.2"), ip("10.250.1.2")];
        assert!(!device_needed(CrossSubnet, near, &connected));
        assert!(device_needed(CrossSubnet, mixed, &connected));
        assert!(device_needed(Always, [], &connected));
        assert!(!device_needed(Never, mixed, &connected));
    }

    #[test]
    fn cross_subnet_routes_native_near_and_onlink_far_in_both_families() {
        let e = lab_node();
        assert_eq!(
            e.choose(net("10.244.0.64/26"), ip("10.250.0.2")),
            RouteChoice::Install(NextHop::Via(ip("10.250.0.2")))
        );
        assert_eq!(
            e.choose(net("fd00:244::80/122"), ip("fd00:250:0:1::2")),
            RouteChoice::InstallVxlan {
                next_hop: NextHop::OnLink {
                    gateway: ip("fd00:244::80"),
                    ifindex: 9
                },
                vtep: "10.250.1.2".parse().unwrap(),
            }
        );
    }

    #[test]
    fn never_skips_far_nodes_and_outside_next_hops_stay_native() {
        let mut e = lab_node();
        e.mode = Never;
        assert_eq!(
            e.choose(net("10.244.0.128/26"), ip("10.250.1.2")),
            RouteChoice::Skip(Datapath::Unreachable)
        );
        assert_eq!(e.peer_datapath(ip("10.250.1.2")), Datapath::Unreachable);
        e.mode = Always;
        assert_eq!(
            e.choose(net("192.168.9.0/24"), ip("10.250.0.101")),
            RouteChoice::Install(NextHop::Via(ip("10.250.0.101")))
        );
        assert_eq!(e.peer_datapath(ip("10.250.0.101")), Datapath::Native);
        e.device = None;
        assert_eq!(
            e.choose(net("10.244.0.64/26"), ip("10.250.0.2")),
            RouteChoice::Skip(Datapath::Vxlan)
        );
    }

    #[test]
    fn entries_derive_one_fdb_per_node_and_one_neighbour_per_block() {
        let n2: Ipv4Addr = "10.250.1.2".parse().unwrap();
        let routes = BTreeMap::from([
            (net("10.244.0.64/26"), n2),
            (net("10.244.0.128/26"), n2),
            (net("fd00:244::40/122"), n2),
        ]);
        let entries = vtep_entries(&routes);
        assert_eq!(entries.fdb, BTreeMap::from([(vtep_mac(n2), n2)]));
        assert_eq!(entries.neighbours.len(), 3);
        assert_eq!(entries.neighbours[&ip("fd00:244::40")], vtep_mac(n2));
    }

    #[test]
    fn plan_adds_missing_removes_stale_and_fixes_wrong_destinations() {
        let (n2, n3, n4) = (
            "10.250.1.2".parse().unwrap(),
            "10.250.1.3".parse().unwrap(),
            "10.250.1.4".parse().unwrap(),
        );
        let desired = vtep_entries(&BTreeMap::from([
            (net("10.244.0.64/26"), n2),
            (net("10.244.0.128/26"), n3),
        ]));
        let mut current = vtep_entries(&BTreeMap::from([(net("10.244.1.0/26"), n4)]));
        current.fdb.insert(vtep_mac(n3), n4);
        let plan = plan_vteps(&current, &desired, false);
        assert_eq!(plan.add_fdb, vec![(vtep_mac(n2), n2), (vtep_mac(n3), n3)]);
        assert_eq!(
            plan.remove_fdb,
            vec![(vtep_mac(n3), n4), (vtep_mac(n4), n4)]
        );
        assert_eq!(plan.add_neighbours.len(), 2);
        assert_eq!(
            plan.remove_neighbours,
            vec![(ip("10.244.1.0"), vtep_mac(n4))]
        );
        let kept = plan_vteps(&current, &desired, true);
        assert_eq!(kept.remove_fdb, vec![(vtep_mac(n3), n4)]);
        assert!(kept.remove_neighbours.is_empty());
        assert!(plan_vteps(&desired, &desired, false).is_empty());
    }
}
