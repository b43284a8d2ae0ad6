//! Egress NAT (Calico's `natOutgoing`): what it needs to know. Pod traffic from a
//! cluster pool to a destination outside every pool, every node address and every
//! exemption is masqueraded to the node's address on the way out; nothing inside the
//! cluster is ever rewritten (pod to pod keeps its source, also across VXLAN).

use crate::ranges::AddrSet;
use ipnetwork::IpNetwork;
use std::net::IpAddr;

/// The inputs of egress NAT. The daemon fills it from its flags (`--nat-outgoing`,
/// `--no-nat-cidr`), the IPAM pools and the node registry, and hands it to
/// [`crate::ruleset::desired_table`] with every change of either.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatConfig {
    /// `--nat-outgoing` (default true).
    pub enabled: bool,
    /// Every cluster pool (both families): the sources that are pods.
    pub pools: Vec<IpNetwork>,
    /// Every node's addresses (InternalIPs, underlay addresses), this node's included.
    pub node_addresses: Vec<IpAddr>,
    /// `--no-nat-cidr`: destinations that keep the pod's source address.
    pub exempt: Vec<IpNetwork>,
}

impl NatConfig {
    /// NAT off (`--nat-outgoing=false`).
    pub fn disabled() -> NatConfig {
        NatConfig {
            enabled: false,
            pools: Vec::new(),
            node_addresses: Vec::new(),
            exempt: Vec::new(),
        }
    }

    /// The sources that are masqueraded: the pools.
    pub fn sources(&self) -> AddrSet {
        let mut set = AddrSet::new();
        for pool in &self.pools {
            set.insert_net(*pool);
        }
        set
    }

    /// Destinations that are never masqueraded: pools, node addresses, exemptions.
    pub fn inside(&self) -> AddrSet {
        let mut set = self.sources();
        set.union(&AddrSet::from_addrs(&self.node_addresses));
        for net in &self.exempt {
            set.insert_net(*net);
        }
        set
    }

    /// Whether NAT has anything to do: on, with at least one pool.
    pub fn active(&self) -> bool {
        self.enabled && !self.pools.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inside_is_pools_nodes_and_exemptions() {
        let nat = NatConfig {
            enabled: true,
            pools: vec![
                "10.244.0.0/16".parse().unwrap(),
                "fd00:244::/56".parse().unwrap(),
            ],
            node_addresses: vec![
                "10.250.0.1".parse().unwrap(),
                "fd00:250::1".parse().unwrap(),
            ],
            exempt: vec!["192.0.2.0/24".parse().unwrap()],
        };
        let inside = nat.inside();
        for a in [
            "10.244.3.4",
            "10.250.0.1",
            "192.0.2.9",
            "fd00:244::5",
            "fd00:250::1",
        ] {
            assert!(inside.contains(a.parse().unwrap()), "{a}");
        }
        for a in ["198.18.0.1", "10.250.0.2", "2001:db8::1"] {
            assert!(!inside.contains(a.parse().unwrap()), "{a}");
        }
        assert!(nat.active());
        assert!(!NatConfig::disabled().active());
    }
}
