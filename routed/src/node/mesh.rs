//! Who to peer with: every other registered node (the iBGP full mesh) plus the extra
//! peers given on the command line. Pure, so the daemon only applies differences.

use super::NodeConfig;
use fjord_ipam::allocator::Claim;
use fjord_ipam::registry::NodeRecord;
use ipnetwork::IpNetwork;
use std::collections::BTreeMap;
use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerKind {
    /// Another Fjord node, found in the registry.
    Mesh { node: String },
    /// A `--peer`: a top-of-rack router, BIRD, GoBGP.
    External,
}

impl std::fmt::Display for PeerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerKind::Mesh { node } => write!(f, "mesh node {node}"),
            PeerKind::External => f.write_str("configured peer"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredPeer {
    pub address: IpAddr,
    pub asn: u32,
    pub kind: PeerKind,
}

/// The peers this node should have, keyed by address. One session per node, over its
/// IPv4 address; IPv6 routes ride on it (multiprotocol BGP) with IPv6 next hops.
pub fn desired_peers(settings: &NodeConfig, nodes: &[NodeRecord]) -> BTreeMap<IpAddr, DesiredPeer> {
    let mut peers = BTreeMap::new();
    if settings.mesh {
        for node in nodes.iter().filter(|n| n.name != settings.node_name) {
            let Some(address) = node.addresses.iter().copied().find(IpAddr::is_ipv4) else {
                continue;
            };
            if settings.addresses.contains(&address) {
                // Another name registered with our address: a stale record of this node.
                continue;
            }
            peers.insert(
                address,
                DesiredPeer {
                    address,
                    asn: node.asn,
                    kind: PeerKind::Mesh {
                        node: node.name.clone(),
                    },
                },
            );
        }
    }
    // An explicit --peer wins over a registry entry with the same address.
    for extra in &settings.peers {
        peers.insert(
            extra.address,
            DesiredPeer {
                address: extra.address,
                asn: extra.asn.unwrap_or(settings.asn),
                kind: PeerKind::External,
            },
        );
    }
    peers
}

/// The blocks the IPAM gave this node, sorted.
pub fn own_blocks(claims: &[Claim], node: &str) -> Vec<IpNetwork> {
    let mut blocks: Vec<IpNetwork> = claims
        .iter()
        .filter(|c| c.node == node)
        .map(|c| c.block)
        .collect();
    blocks.sort();
    blocks.dedup();
    blocks
}

/// What changed between two peer sets: peers to stop (gone, or whose AS or kind changed)
/// and peers to start.
pub fn peer_changes(
    current: &BTreeMap<IpAddr, DesiredPeer>,
    desired: &BTreeMap<IpAddr, DesiredPeer>,
) -> (Vec<IpAddr>, Vec<DesiredPeer>) {
    let stop = current
        .iter()
        .filter(|(a, p)| desired.get(a) != Some(p))
        .map(|(a, _)| *a)
        .collect();
    let start = desired
        .iter()
        .filter(|(a, p)| current.get(a) != Some(p))
        .map(|(_, p)| p.clone())
        .collect();
    (stop, start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ExtraPeer;
    use std::time::Duration;

    fn settings(mesh: bool, peers: Vec<ExtraPeer>) -> NodeConfig {
        NodeConfig {
            node_name: "n1".into(),
            addresses: vec!["10.0.0.1".parse().unwrap(), "fd00::1".parse().unwrap()],
            router_id: "10.0.0.1".parse().unwrap(),
            asn: 64512,
            peers,
            mesh,
            encapsulation: crate::config::Encapsulation::CrossSubnet,
            listen_port: 179,
            hold_time: 30,
            graceful_restart_time: 30,
            connect_retry: Duration::from_secs(1),
        }
    }

    fn node(name: &str, addrs: &[&str]) -> NodeRecord {
        NodeRecord {
            name: name.into(),
            addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            asn: 64512,
        }
    }

    #[test]
    fn mesh_is_every_other_node_by_its_ipv4_address() {
        let nodes = [
            node("n1", &["10.0.0.1"]),
            node("n2", &["10.0.0.2", "fd00::2"]),
            node("n3", &["10.0.0.3"]),
        ];
        let peers = desired_peers(&settings(true, vec![]), &nodes);
        let addrs: Vec<String> = peers.keys().map(ToString::to_string).collect();
        assert_eq!(addrs, ["10.0.0.2", "10.0.0.3"]);
        assert_eq!(
            peers.values().next().unwrap().kind,
            PeerKind::Mesh { node: "n2".into() }
        );
    }

    #[test]
    fn no_mesh_keeps_only_extra_peers_and_extra_peers_win() {
        let extra = vec![ExtraPeer {
            address: "10.0.0.2".parse().unwrap(),
            asn: Some(65001),
        }];
        let nodes = [node("n2", &["10.0.0.2"]), node("stale", &["10.0.0.1"])];
        let peers = desired_peers(&settings(true, extra.clone()), &nodes);
        assert_eq!(peers.len(), 1, "{peers:?}");
        assert_eq!(peers.values().next().unwrap().asn, 65001);
        assert_eq!(peers.values().next().unwrap().kind, PeerKind::External);
        assert_eq!(desired_peers(&settings(false, vec![]), &nodes).len(), 0);
    }

    #[test]
    fn changes_restart_peers_whose_as_changed() {
        let nodes = [node("n2", &["10.0.0.2"]), node("n3", &["10.0.0.3"])];
        let s = settings(true, vec![]);
        let before = desired_peers(&s, &nodes);
        let mut moved = nodes.to_vec();
        moved[0].asn = 65000;
        moved.remove(1);
        let after = desired_peers(&s, &moved);
        let (stop, start) = peer_changes(&before, &after);
        assert_eq!(stop.len(), 2);
        assert_eq!(start.len(), 1);
        assert_eq!(start[0].asn, 65000);
        assert_eq!(peer_changes(&after, &after), (vec![], vec![]));
    }

    #[test]
    fn own_blocks_are_this_nodes_claims_only() {
        let claims = vec![
            Claim {
                block: "10.244.0.64/26".parse().unwrap(),
                node: "n1".into(),
            },
            Claim {
                block: "10.244.0.0/26".parse().unwrap(),
                node: "n1".into(),
            },
            Claim {
                block: "10.244.0.128/26".parse().unwrap(),
                node: "n2".into(),
            },
        ];
        let blocks = own_blocks(&claims, "n1");
        assert_eq!(
            blocks,
            vec![
                "10.244.0.0/26".parse().unwrap(),
                "10.244.0.64/26".parse::<IpNetwork>().unwrap()
            ]
        );
    }
}
