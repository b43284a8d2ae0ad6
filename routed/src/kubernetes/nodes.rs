//! Node objects as the daemon needs them, and the cache the watcher keeps. Pure: no
//! client, no I/O.

use crate::error::RoutedError;
use fjord_ipam::allocator::Claim;
use fjord_ipam::kubernetes::parse_pod_cidr;
use fjord_ipam::registry::{NodeRecord, NodeView};
use ipnetwork::IpNetwork;
use k8s_openapi::api::core::v1::Node;
use std::collections::BTreeMap;
use std::net::IpAddr;
use tracing::warn;

/// A Node annotation giving the node's BGP AS when nodes do not all share the daemon's
/// `--asn` (e.g. one AS per rack). It must equal that node's own `--asn`.
pub const ASN_ANNOTATION: &str = "fjord.dev/asn";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    /// The first IPv4 and the first IPv6 InternalIP, IPv4 first.
    pub addresses: Vec<IpAddr>,
    /// `spec.podCIDRs`, else `spec.podCIDR`; unparsable entries left out (see `problems`).
    pub pod_cidrs: Vec<IpNetwork>,
    pub asn: u32,
    /// What was wrong with the object, for one log line.
    pub problems: Vec<String>,
}

impl NodeInfo {
    pub fn from_node(node: &Node, default_asn: u32) -> Option<NodeInfo> {
        let name = node.metadata.name.clone()?;
        let mut problems = Vec::new();
        let mut info = NodeInfo {
            addresses: internal_ips(node, &mut problems),
            pod_cidrs: pod_cidrs(node, &mut problems),
            asn: asn(node, default_asn, &mut problems),
            name,
            problems,
        };
        if info.addresses.is_empty() {
            info.problems
                .push("no InternalIP in status.addresses: not a peer".into());
        }
        Some(info)
    }
}

fn internal_ips(node: &Node, problems: &mut Vec<String>) -> Vec<IpAddr> {
    let listed = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut found: Vec<IpAddr> = Vec::new();
    for entry in listed.iter().filter(|a| a.type_ == "InternalIP") {
        match entry.address.parse::<IpAddr>() {
            Ok(ip) if !found.iter().any(|f| f.is_ipv6() == ip.is_ipv6()) => found.push(ip),
            Ok(_) => {}
            Err(_) => problems.push(format!("InternalIP {:?} is not an address", entry.address)),
        }
    }
    found.sort_by_key(IpAddr::is_ipv6);
    found
}

fn pod_cidrs(node: &Node, problems: &mut Vec<String>) -> Vec<IpNetwork> {
    let Some(spec) = node.spec.as_ref() else {
        return Vec::new();
    };
    let texts: Vec<String> = match (&spec.pod_cidrs, &spec.pod_cidr) {
        (Some(list), _) if !list.is_empty() => list.clone(),
        (_, Some(one)) if !one.is_empty() => vec![one.clone()],
        _ => Vec::new(),
    };
    let mut cidrs = Vec::new();
    for text in &texts {
        match parse_pod_cidr(text) {
            Ok(cidr)
                if !cidrs
                    .iter()
                    .any(|c: &IpNetwork| c.is_ipv6() == cidr.is_ipv6()) =>
            {
                cidrs.push(cidr)
            }
            Ok(cidr) => problems.push(format!("second podCIDR {cidr} of one family ignored")),
            Err(e) => problems.push(e),
        }
    }
    cidrs
}

fn asn(node: &Node, default_asn: u32, problems: &mut Vec<String>) -> u32 {
    let annotation = node
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ASN_ANNOTATION));
    match annotation.map(|text| text.parse::<u32>()) {
        None => default_asn,
        Some(Ok(asn)) if asn != 0 => asn,
        Some(_) => {
            problems.push(format!(
                "annotation {ASN_ANNOTATION}={:?} is not an AS number; using {default_asn}",
                annotation.expect("matched Some")
            ));
            default_asn
        }
    }
}

/// Every Node the watcher knows, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeCache {
    nodes: BTreeMap<String, NodeInfo>,
}

impl NodeCache {
    pub fn insert(&mut self, info: NodeInfo) {
        self.nodes.insert(info.name.clone(), info);
    }

    pub fn remove(&mut self, name: &str) -> Option<NodeInfo> {
        self.nodes.remove(name)
    }

    pub fn get(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.get(name)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Nodes with an address, as registry records, sorted by name.
    pub fn records(&self) -> Vec<NodeRecord> {
        self.nodes
            .values()
            .filter(|n| !n.addresses.is_empty())
            .map(|n| NodeRecord {
                name: n.name.clone(),
                addresses: n.addresses.clone(),
                asn: n.asn,
            })
            .collect()
    }

    /// What the node core reads: the records and the claims.
    pub fn view(&self) -> NodeView {
        NodeView {
            nodes: self.records(),
            claims: self.claims(),
        }
    }

    /// Each node's podCIDRs as its block claims.
    pub fn claims(&self) -> Vec<Claim> {
        self.nodes
            .values()
            .flat_map(|n| {
                n.pod_cidrs.iter().map(|cidr| Claim {
                    block: *cidr,
                    node: n.name.clone(),
                })
            })
            .collect()
    }
}

/// Kubelet owns Node objects: "registering" this node is finding its Node, and warning
/// when `--node-address` is none of its InternalIPs (the others peer with those).
pub fn check_own_node(
    cache: &NodeCache,
    node: &str,
    addresses: &[IpAddr],
) -> Result<(), RoutedError> {
    let Some(found) = cache.get(node) else {
        return Err(RoutedError::NoSuchNode { node: node.into() });
    };
    if !addresses.iter().any(|a| found.addresses.contains(a)) {
        let given: Vec<String> = addresses.iter().map(ToString::to_string).collect();
        let internal: Vec<String> = found.addresses.iter().map(ToString::to_string).collect();
        warn!(%node, node_address = %given.join(", "), internal_ips = %internal.join(", "),
            "--node-address is none of the Node's InternalIPs: the other nodes will peer with the InternalIP");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(v: serde_json::Value) -> Node {
        serde_json::from_value(v).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_dual_stack_node_gives_its_internal_ips_and_pod_cidrs() {
        let n = node(json!({
            "metadata": {"name": "node-1"},
            "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24", "fd00:10:244:1::/64"]},
            "status": {"addresses": [
                {"type": "Hostname", "address": "node-1"},
                {"type": "ExternalIP", "address": "203.0.113.7"},
                {"type": "InternalIP", "address": "fd00::11"},
                {"type": "InternalIP", "address": "192.168.1.11"},
                {"type": "InternalIP", "address": "192.168.2.11"}
            ]}
        }));
        let info = NodeInfo::from_node(&n, 64512).unwrap();
        assert_eq!(info.addresses, vec![ip("192.168.1.11"), ip("fd00::11")]);
        assert_eq!(
            info.pod_cidrs,
            vec![
                "10.244.1.0/24".parse().unwrap(),
                "fd00:10:244:1::/64".parse().unwrap()
            ]
        );
        assert_eq!(info.asn, 64512);
        assert!(info.problems.is_empty(), "{:?}", info.problems);
    }

    #[test]
    fn the_single_pod_cidr_field_is_the_fallback_and_bad_values_are_reported() {
        let n = node(json!({
            "metadata": {"name": "old", "annotations": {ASN_ANNOTATION: "65010"}},
            "spec": {"podCIDR": "10.244.9.0/24"},
            "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.9"}]}
        }));
        let info = NodeInfo::from_node(&n, 64512).unwrap();
        assert_eq!(info.pod_cidrs, vec!["10.244.9.0/24".parse().unwrap()]);
        assert_eq!(info.asn, 65010);
        let n = node(json!({
            "metadata": {"name": "bad", "annotations": {ASN_ANNOTATION: "rack-7"}},
            "spec": {"podCIDRs": ["10.244.9.1/24"]},
            "status": {"addresses": [{"type": "InternalIP", "address": "nope"}]}
        }));
        let info = NodeInfo::from_node(&n, 64512).unwrap();
        assert!(info.pod_cidrs.is_empty() && info.addresses.is_empty());
        assert_eq!(info.asn, 64512);
        let all = info.problems.join("; ");
        for needle in ["host bits", "\"nope\"", "rack-7", "not a peer"] {
            assert!(all.contains(needle), "{needle} missing from {all}");
        }
    }

    #[test]
    fn the_cache_gives_records_with_addresses_and_every_claim() {
        let mut cache = NodeCache::default();
        for (name, addr, cidr) in [
            ("b", Some("10.0.0.2"), Some("10.244.2.0/24")),
            ("a", Some("10.0.0.1"), None),
            ("c", None, Some("10.244.3.0/24")),
        ] {
            cache.insert(NodeInfo {
                name: name.into(),
                addresses: addr.into_iter().map(ip).collect(),
                pod_cidrs: cidr.into_iter().map(|c| c.parse().unwrap()).collect(),
                asn: 64512,
                problems: vec![],
            });
        }
        let names: Vec<String> = cache.records().into_iter().map(|r| r.name).collect();
        assert_eq!(names, vec!["a", "b"]);
        let claims: Vec<(String, String)> = cache
            .claims()
            .into_iter()
            .map(|c| (c.node, c.block.to_string()))
            .collect();
        assert_eq!(
            claims,
            vec![
                ("b".to_string(), "10.244.2.0/24".to_string()),
                ("c".to_string(), "10.244.3.0/24".to_string())
            ]
        );
        assert!(cache.remove("b").is_some());
        assert_eq!(cache.len(), 2);
    }
}
