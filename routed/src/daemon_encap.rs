//! The daemon's encapsulation work: keeps `fjord.vxlan` present exactly when a route may
//! need it, turns RIB changes into native or VXLAN routes, and keeps the device's FDB
//! and neighbour entries equal to what the VXLAN routes imply.

use super::Daemon;
use crate::encap::{self, Datapath, RouteChoice};
use crate::kernel::{NextHop, RouteOp};
use crate::rib::RibChange;
use fjord_ipam::registry::NodeRecord;
use ipnetwork::IpNetwork;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use tracing::{debug, info, warn};

impl Daemon {
    /// Called on every registry poll: learns the other nodes' addresses and creates or
    /// removes the device as the mode and the nodes' subnets require. When the device
    /// comes, goes or is replaced, every route is chosen again.
    pub(super) async fn sync_encap(&mut self, nodes: &[NodeRecord]) {
        self.encap.nodes = node_addresses(nodes, &self.settings.node_name);
        let peers: Vec<IpAddr> = nodes
            .iter()
            .filter(|n| n.name != self.settings.node_name)
            .filter_map(|n| n.addresses.iter().copied().find(IpAddr::is_ipv4))
            .collect();
        let needed =
            encap::device_needed(self.settings.encapsulation, peers, &self.encap.connected);
        let device = match (needed, self.vxlan_spec) {
            (true, Some(spec)) => match self.vxlan.ensure(&spec).await {
                Ok((index, created)) => {
                    if created {
                        info!(node = %self.settings.node_name, index, mtu = spec.mtu,
                            underlay = spec.underlay, local = %spec.local,
                            mac = %encap::format_mac(&spec.mac), "created fjord.vxlan");
                    }
                    Some(index)
                }
                Err(e) => {
                    warn!(node = %self.settings.node_name, error = %e, "cannot set up fjord.vxlan; VXLAN routes wait");
                    None
                }
            },
            (true, None) => None,
            (false, _) => self.remove_device().await,
        };
        if device != self.encap.device {
            self.encap.device = device;
            self.encap.connected = self.connected_or_keep().await;
            self.choose_all_again().await;
        }
    }

    /// Removes the device when no peer needs it; `None` once it is gone (or `Some` of the
    /// old index when removing failed, to try again next poll).
    async fn remove_device(&mut self) -> Option<u32> {
        let old = self.encap.device?;
        match self.vxlan.remove().await {
            Ok(_) => {
                info!(node = %self.settings.node_name, "no peer needs VXLAN: removed fjord.vxlan");
                None
            }
            Err(e) => {
                warn!(node = %self.settings.node_name, error = %e, "cannot remove fjord.vxlan");
                Some(old)
            }
        }
    }

    async fn connected_or_keep(&self) -> Vec<IpNetwork> {
        match self.vxlan.connected(self.encap.device).await {
            Ok(connected) => connected,
            Err(e) => {
                warn!(node = %self.settings.node_name, error = %e, "cannot read the connected subnets; keeping the last ones");
                self.encap.connected.clone()
            }
        }
    }

    pub(super) async fn refresh_connected(&mut self) {
        let connected = self.connected_or_keep().await;
        if connected != self.encap.connected {
            info!(node = %self.settings.node_name, ?connected, "the connected subnets changed");
            self.encap.connected = connected;
        }
    }

    /// Re-decides every installed route (the device changed). Inside a restart window
    /// nothing is swept, as everywhere else then; outside, a full reconcile.
    async fn choose_all_again(&mut self) {
        if self.restart_window.is_none() {
            self.reconcile().await;
            return;
        }
        let (desired, vxlan_routes) = self.desired_routes();
        self.vxlan_routes = vxlan_routes;
        self.sync_vteps(true).await;
        self.clear_before_onlink(&desired).await;
        let ops = desired
            .into_iter()
            .map(|(prefix, next_hop)| RouteOp::Replace { prefix, next_hop });
        if let Err(e) = self.kernel.apply(ops).await {
            warn!(node = %self.settings.node_name, error = %e, "some routes could not be re-chosen; the next reconcile retries");
        }
    }

    /// RIB changes as kernel ops, keeping `vxlan_routes` up to date: the removals that
    /// must go first ([`encap::must_clear_before`]), the ops, and whether the VXLAN
    /// routes (hence the FDB and neighbour entries) changed.
    pub(super) fn route_ops(
        &mut self,
        changes: Vec<RibChange>,
    ) -> (Vec<RouteOp>, Vec<RouteOp>, bool) {
        let mut vxlan_changed = false;
        let mut clear = Vec::new();
        let mut ops = Vec::with_capacity(changes.len());
        for change in changes {
            let was_vxlan = self.vxlan_routes.contains_key(&change.prefix());
            let op = self.route_op(change, &mut vxlan_changed);
            // A route that was not through VXLAN may be native in the kernel (or absent,
            // when removing it is a no-op).
            if let RouteOp::Replace { prefix, next_hop } = op {
                let current = (!was_vxlan).then_some(NextHop::Via(prefix.network()));
                if encap::must_clear_before(prefix, current, next_hop) {
                    clear.push(RouteOp::Remove { prefix });
                }
            }
            ops.push(op);
        }
        (clear, ops, vxlan_changed)
    }

    /// Removes Fjord's IPv6 routes that `desired` turns onlink and the kernel holds
    /// otherwise ([`encap::must_clear_before`]), before a reconcile or re-choice
    /// installs them.
    pub(super) async fn clear_before_onlink(&self, desired: &HashMap<IpNetwork, NextHop>) {
        let current = match self.kernel.fjord_routes().await {
            Ok(routes) => routes,
            Err(e) => {
                warn!(node = %self.settings.node_name, error = %e, "cannot read the routes to re-choose");
                return;
            }
        };
        let clear: Vec<RouteOp> = current
            .into_iter()
            .filter(|r| {
                desired
                    .get(&r.prefix)
                    .is_some_and(|wanted| encap::must_clear_before(r.prefix, r.next_hop, *wanted))
            })
            .map(|r| RouteOp::Remove { prefix: r.prefix })
            .collect();
        self.remove_first(clear).await;
    }

    pub(super) async fn remove_first(&self, clear: Vec<RouteOp>) {
        if clear.is_empty() {
            return;
        }
        let count = clear.len();
        match self.kernel.apply(clear).await {
            Ok(()) => {
                debug!(node = %self.settings.node_name, routes = count, "removed IPv6 routes that turn onlink")
            }
            Err(e) => {
                warn!(node = %self.settings.node_name, error = %e, "cannot remove IPv6 routes that turn onlink")
            }
        }
    }

    /// One RIB change as a kernel op, keeping `vxlan_routes` up to date.
    fn route_op(&mut self, change: RibChange, vxlan_changed: &mut bool) -> RouteOp {
        let (prefix, choice) = match change {
            RibChange::Remove { prefix } => (prefix, None),
            RibChange::Install { prefix, next_hop } => {
                (prefix, Some(self.encap.choose(prefix, next_hop)))
            }
        };
        let previous = self.vxlan_routes.remove(&prefix);
        let op = match choice {
            Some(RouteChoice::Install(next_hop)) => RouteOp::Replace { prefix, next_hop },
            Some(RouteChoice::InstallVxlan { next_hop, vtep }) => {
                self.vxlan_routes.insert(prefix, vtep);
                *vxlan_changed |= previous != Some(vtep);
                RouteOp::Replace { prefix, next_hop }
            }
            Some(RouteChoice::Skip(datapath)) => {
                skipped(&self.settings.node_name, prefix, datapath);
                RouteOp::Remove { prefix }
            }
            None => RouteOp::Remove { prefix },
        };
        *vxlan_changed |= previous.is_some() && !self.vxlan_routes.contains_key(&prefix);
        op
    }

    /// What the kernel must hold for the whole RIB, and which of it goes through VXLAN.
    pub(super) fn desired_routes(
        &self,
    ) -> (HashMap<IpNetwork, NextHop>, BTreeMap<IpNetwork, Ipv4Addr>) {
        let mut desired = HashMap::new();
        let mut vxlan_routes = BTreeMap::new();
        for (prefix, via) in self.rib.installed() {
            match self.encap.choose(prefix, via) {
                RouteChoice::Install(next_hop) => {
                    desired.insert(prefix, next_hop);
                }
                RouteChoice::InstallVxlan { next_hop, vtep } => {
                    desired.insert(prefix, next_hop);
                    vxlan_routes.insert(prefix, vtep);
                }
                RouteChoice::Skip(_) => {}
            }
        }
        (desired, vxlan_routes)
    }

    /// Makes the device's FDB and neighbour entries what `vxlan_routes` implies.
    /// `keep_stale` (restart window): add what is missing, remove nothing yet.
    pub(super) async fn sync_vteps(&mut self, keep_stale: bool) {
        let Some(index) = self.encap.device else {
            return;
        };
        let current = match self.vxlan.entries(index).await {
            Ok(current) => current,
            Err(e) => {
                warn!(node = %self.settings.node_name, error = %e, "cannot read fjord.vxlan's entries; the next reconcile retries");
                return;
            }
        };
        let desired = encap::vtep_entries(&self.vxlan_routes);
        let plan = encap::plan_vteps(&current, &desired, keep_stale);
        if plan.is_empty() {
            return;
        }
        match self.vxlan.apply(index, &plan).await {
            Ok(()) => info!(node = %self.settings.node_name,
                fdb_added = plan.add_fdb.len(), fdb_removed = plan.remove_fdb.len(),
                neighbours_added = plan.add_neighbours.len(),
                neighbours_removed = plan.remove_neighbours.len(), "fjord.vxlan entries updated"),
            Err(e) => warn!(node = %self.settings.node_name, error = %e,
                "some fjord.vxlan entries could not be programmed; the next reconcile retries"),
        }
    }
}

/// Every address of every other node -> its IPv4 address (the VTEP's underlay end).
fn node_addresses(nodes: &[NodeRecord], own: &str) -> HashMap<IpAddr, Ipv4Addr> {
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

    #[test]
    fn node_addresses_map_both_families_to_the_ipv4_address() {
        let nodes = vec![
            NodeRecord {
                name: "n1".into(),
                addresses: vec!["10.0.0.1".parse().unwrap()],
                asn: 64512,
            },
            NodeRecord {
                name: "n2".into(),
                addresses: vec!["10.0.1.2".parse().unwrap(), "fd00::2".parse().unwrap()],
                asn: 64512,
            },
        ];
        let map = node_addresses(&nodes, "n1");
        let v4: Ipv4Addr = "10.0.1.2".parse().unwrap();
        assert_eq!(map.len(), 2);
        assert_eq!(map[&"fd00::2".parse::<IpAddr>().unwrap()], v4);
        assert_eq!(map[&IpAddr::V4(v4)], v4);
    }
}
