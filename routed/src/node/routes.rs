//! What the kernel must hold for the RIB: the route shapes ([`NextHop`], [`RouteOp`]),
//! the native-or-VXLAN choice applied to RIB changes and to the whole RIB, and the
//! VXLAN routes that `fjord.vxlan`'s FDB and neighbour entries follow. Pure: the shell
//! carries the ops out through [`crate::kernel`].

use crate::encap::{self, Datapath, Encap, RouteChoice};
use crate::rib::{Rib, RibChange};
use fjord_ipam::registry::NodeRecord;
use ipnetwork::IpNetwork;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use tracing::debug;

/// How a route reaches its next hop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NextHop {
    /// `via GATEWAY`: the kernel finds the device; the gateway must be on a connected
    /// subnet (native routing).
    Via(IpAddr),
    /// `via GATEWAY dev IFINDEX onlink`: the gateway is taken as reachable on the device
    /// even without a connected subnet (VXLAN: the remote VTEP's address).
    OnLink { gateway: IpAddr, ifindex: u32 },
}

impl fmt::Display for NextHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NextHop::Via(gw) => write!(f, "via {gw}"),
            NextHop::OnLink { gateway, ifindex } => {
                write!(f, "via {gateway} dev #{ifindex} onlink")
            }
        }
    }
}

/// One change to apply. Changes in one [`crate::kernel::Kernel::apply`] call run
/// concurrently: give at most one per prefix (the core's batches do).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteOp {
    /// Install, or replace Fjord's route for the prefix.
    Replace {
        prefix: IpNetwork,
        next_hop: NextHop,
    },
    /// Remove Fjord's route for the prefix; absent is fine.
    Remove { prefix: IpNetwork },
}

impl RouteOp {
    pub fn prefix(&self) -> IpNetwork {
        match *self {
            RouteOp::Replace { prefix, .. } | RouteOp::Remove { prefix } => prefix,
        }
    }
}

impl From<RibChange> for RouteOp {
    /// A RIB change as a native route; VXLAN peers map to [`NextHop::OnLink`] instead.
    fn from(change: RibChange) -> Self {
        match change {
            RibChange::Install { prefix, next_hop } => RouteOp::Replace {
                prefix,
                next_hop: NextHop::Via(next_hop),
            },
            RibChange::Remove { prefix } => RouteOp::Remove { prefix },
        }
    }
}

/// RIB changes gathered over one batch of inputs, at most one per prefix (the last
/// wins), in first-seen order: the kernel gets one op per prefix per batch.
#[derive(Debug, Default)]
pub struct PendingChanges {
    changes: Vec<RibChange>,
    index: HashMap<IpNetwork, usize>,
}

impl PendingChanges {
    pub fn extend(&mut self, changes: impl IntoIterator<Item = RibChange>) {
        for change in changes {
            match self.index.get(&change.prefix()) {
                Some(&i) => self.changes[i] = change,
                None => {
                    self.index.insert(change.prefix(), self.changes.len());
                    self.changes.push(change);
                }
            }
        }
    }

    pub fn take(&mut self) -> Vec<RibChange> {
        self.index.clear();
        std::mem::take(&mut self.changes)
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// RIB changes as kernel ops.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Programmed {
    /// Removals that must be done before `ops` ([`encap::must_clear_before`]).
    pub clear_first: Vec<RouteOp>,
    pub ops: Vec<RouteOp>,
    /// Whether the VXLAN routes (hence the FDB and neighbour entries) changed.
    pub vxlan_changed: bool,
}

/// The routes installed through `fjord.vxlan`: block -> the node (IPv4) behind it. The
/// FDB and neighbour entries are derived from it ([`encap::vtep_entries`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VxlanRoutes(pub BTreeMap<IpNetwork, Ipv4Addr>);

impl VxlanRoutes {
    /// `changes` as kernel ops, keeping the VXLAN routes up to date.
    pub fn program(&mut self, changes: Vec<RibChange>, encap: &Encap, node: &str) -> Programmed {
        let mut out = Programmed {
            ops: Vec::with_capacity(changes.len()),
            ..Programmed::default()
        };
        for change in changes {
            let was_vxlan = self.0.contains_key(&change.prefix());
            let op = self.op(change, encap, node, &mut out.vxlan_changed);
            // A route that was not through VXLAN may be native in the kernel (or absent,
            // when removing it is a no-op).
            if let RouteOp::Replace { prefix, next_hop } = op {
                let current = (!was_vxlan).then_some(NextHop::Via(prefix.network()));
                if encap::must_clear_before(prefix, current, next_hop) {
                    out.clear_first.push(RouteOp::Remove { prefix });
                }
            }
            out.ops.push(op);
        }
        out
    }

    /// One RIB change as a kernel op.
    fn op(&mut self, change: RibChange, encap: &Encap, node: &str, changed: &mut bool) -> RouteOp {
        let (prefix, choice) = match change {
            RibChange::Remove { prefix } => (prefix, None),
            RibChange::Install { prefix, next_hop } => {
                (prefix, Some(encap.choose(prefix, next_hop)))
            }
        };
        let previous = self.0.remove(&prefix);
        let op = match choice {
            Some(RouteChoice::Install(next_hop)) => RouteOp::Replace { prefix, next_hop },
            Some(RouteChoice::InstallVxlan { next_hop, vtep }) => {
                self.0.insert(prefix, vtep);
                *changed |= previous != Some(vtep);
                RouteOp::Replace { prefix, next_hop }
            }
            Some(RouteChoice::Skip(datapath)) => {
                skipped(node, prefix, datapath);
                RouteOp::Remove { prefix }
            }
            None => RouteOp::Remove { prefix },
        };
        *changed |= previous.is_some() && !self.0.contains_key(&prefix);
        op
    }
}

/// What the kernel must hold for the whole RIB, and which of it goes through VXLAN.
pub fn desired_routes(rib: &Rib, encap: &Encap) -> (HashMap<IpNetwork, NextHop>, VxlanRoutes) {
    let mut desired = HashMap::new();
    let mut vxlan = BTreeMap::new();
    for (prefix, via) in rib.installed() {
        match encap.choose(prefix, via) {
            RouteChoice::Install(next_hop) => {
                desired.insert(prefix, next_hop);
            }
            RouteChoice::InstallVxlan { next_hop, vtep } => {
                desired.insert(prefix, next_hop);
                vxlan.insert(prefix, vtep);
            }
            RouteChoice::Skip(_) => {}
        }
    }
    (desired, VxlanRoutes(vxlan))
}

/// Of Fjord's routes in the kernel (`current`), those `desired` turns onlink while the
/// kernel holds them otherwise: they are removed before a reconcile or a re-choice
/// installs them ([`encap::must_clear_before`]).
pub fn clear_before_onlink(
    current: impl IntoIterator<Item = (IpNetwork, Option<NextHop>)>,
    desired: &HashMap<IpNetwork, NextHop>,
) -> Vec<RouteOp> {
    current
        .into_iter()
        .filter(|(prefix, now)| {
            desired
                .get(prefix)
                .is_some_and(|wanted| encap::must_clear_before(*prefix, *now, *wanted))
        })
        .map(|(prefix, _)| RouteOp::Remove { prefix })
        .collect()
}

/// Every address of every other node -> its IPv4 address (the VTEP's underlay end).
pub fn node_addresses(nodes: &[NodeRecord], own: &str) -> HashMap<IpAddr, Ipv4Addr> {
    let mut map = HashMap::new();
    for node in nodes.iter().filter(|n| n.name != own) {
        let Some(v4) = node.addresses.iter().find_map(|a| match a {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        }) else {
            continue;
        };
        for address in &node.addresses {
            map.insert(*address, v4);
        }
    }
    map
}

fn skipped(node: &str, prefix: IpNetwork, datapath: Datapath) {
    match datapath {
        Datapath::Unreachable => debug!(%node, %prefix,
            "encapsulation never and the next hop is not on a connected subnet: not installed"),
        _ => debug!(%node, %prefix, "VXLAN route while fjord.vxlan is missing: not installed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Encapsulation;
    use crate::node::tests::{ip, net};

    #[test]
    fn rib_changes_become_native_routes() {
        let change = RibChange::Install {
            prefix: net("10.1.0.0/26"),
            next_hop: ip("10.0.0.2"),
        };
        assert_eq!(
            RouteOp::from(change),
            RouteOp::Replace {
                prefix: net("10.1.0.0/26"),
                next_hop: NextHop::Via(ip("10.0.0.2"))
            }
        );
    }

    #[test]
    fn node_addresses_map_both_families_to_the_ipv4_address() {
        let nodes = vec![
            NodeRecord {
                name: "n1".into(),
                addresses: vec![ip("10.0.0.1")],
                asn: 64512,
            },
            NodeRecord {
                name: "n2".into(),
                addresses: vec![ip("10.0.1.2"), ip("fd00::2")],
                asn: 64512,
            },
        ];
        let map = node_addresses(&nodes, "n1");
        let v4: Ipv4Addr = "10.0.1.2".parse().unwrap();
        assert_eq!(map.len(), 2);
        assert_eq!(map[&ip("fd00::2")], v4);
        assert_eq!(map[&IpAddr::V4(v4)], v4);
    }

    #[test]
    fn pending_changes_keep_the_last_change_per_prefix_in_first_seen_order() {
        let mut pending = PendingChanges::default();
        let install = |p: &str, nh: &str| RibChange::Install {
            prefix: net(p),
            next_hop: ip(nh),
        };
        pending.extend([
            install("10.1.0.0/26", "10.0.0.2"),
            install("10.2.0.0/26", "10.0.0.3"),
        ]);
        pending.extend([RibChange::Remove {
            prefix: net("10.1.0.0/26"),
        }]);
        assert_eq!(
            pending.take(),
            vec![
                RibChange::Remove {
                    prefix: net("10.1.0.0/26")
                },
                install("10.2.0.0/26", "10.0.0.3")
            ]
        );
        assert!(pending.is_empty());
    }

    #[test]
    fn an_ipv6_block_turning_onlink_is_cleared_first_and_ipv4_is_replaced_in_place() {
        let mut encap = Encap::new(Encapsulation::Always);
        encap.device = Some(9);
        encap.nodes = HashMap::from([
            (ip("10.0.1.2"), "10.0.1.2".parse().unwrap()),
            (ip("fd00::2"), "10.0.1.2".parse().unwrap()),
        ]);
        let mut vxlan = VxlanRoutes::default();
        let changes = vec![
            RibChange::Install {
                prefix: net("10.1.0.0/26"),
                next_hop: ip("10.0.1.2"),
            },
            RibChange::Install {
                prefix: net("fd00:1::/122"),
                next_hop: ip("fd00::2"),
            },
        ];
        let out = vxlan.program(changes, &encap, "n1");
        assert!(out.vxlan_changed);
        assert_eq!(
            out.clear_first,
            vec![RouteOp::Remove {
                prefix: net("fd00:1::/122")
            }]
        );
        assert_eq!(out.ops.len(), 2);
        assert_eq!(vxlan.0.len(), 2);
        let current = [
            (net("fd00:1::/122"), Some(NextHop::Via(ip("fd00::2")))),
            (net("10.1.0.0/26"), Some(NextHop::Via(ip("10.0.1.2")))),
        ];
        let desired = HashMap::from([
            (
                net("fd00:1::/122"),
                NextHop::OnLink {
                    gateway: ip("fd00:1::"),
                    ifindex: 9,
                },
            ),
            (
                net("10.1.0.0/26"),
                NextHop::OnLink {
                    gateway: ip("10.1.0.0"),
                    ifindex: 9,
                },
            ),
        ]);
        assert_eq!(
            clear_before_onlink(current, &desired),
            vec![RouteOp::Remove {
                prefix: net("fd00:1::/122")
            }]
        );
    }
}
