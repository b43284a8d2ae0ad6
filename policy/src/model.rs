//! The cluster as policy sees it: a lean copy of what the Pod and Namespace watches
//! deliver, without the rest of the API objects (a Pod object is ~10 KiB as JSON; what
//! policy needs of it is its labels, addresses and named container ports).

use crate::ranges::Protocol;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

pub type Labels = BTreeMap<String, String>;

/// The label the API server puts on every Namespace (Kubernetes 1.22+).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// A namespaced object's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> ObjectKey {
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A container port with a name: what a NetworkPolicy's named port resolves to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NamedPort {
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
}

/// What policy needs of a Pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub key: ObjectKey,
    pub labels: Labels,
    /// `status.podIPs` (one per family at most).
    pub ips: Vec<IpAddr>,
    pub named_ports: Vec<NamedPort>,
    /// A host-network pod's address is its node's: selectors never pick it as a peer
    /// (its traffic is the node's), as in Calico and Cilium.
    pub host_network: bool,
    /// Succeeded or Failed: its address may already belong to a new pod, so it is no
    /// peer any more (upstream kube-proxy and Calico drop terminal pods too).
    pub terminal: bool,
}

impl PodInfo {
    /// From the watched object; `None` without a namespace or name.
    pub fn from_api(pod: &Pod) -> Option<PodInfo> {
        let key = ObjectKey::new(pod.metadata.namespace.clone()?, pod.metadata.name.clone()?);
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();
        let mut ips: Vec<IpAddr> = status
            .and_then(|s| s.pod_ips.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|ip| ip.ip.parse().ok())
            .collect();
        if ips.is_empty() {
            ips.extend(status.and_then(|s| s.pod_ip.as_ref()?.parse::<IpAddr>().ok()));
        }
        let named_ports = spec
            .into_iter()
            .flat_map(|s| {
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
            })
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                let port = u16::try_from(p.container_port).ok()?;
                let protocol = Protocol::from_api(p.protocol.as_deref().unwrap_or("TCP"))?;
                Some(NamedPort {
                    name: p.name.clone()?,
                    protocol,
                    port,
                })
            })
            .collect();
        let phase = status.and_then(|s| s.phase.as_deref());
        Some(PodInfo {
            key,
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            ips,
            named_ports,
            host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
            terminal: matches!(phase, Some("Succeeded" | "Failed")),
        })
    }

    /// The port this pod names `name` for `protocol`, if any.
    pub fn named_port(&self, name: &str, protocol: Protocol) -> Option<u16> {
        self.named_ports
            .iter()
            .find(|p| p.name == name && p.protocol == protocol)
            .map(|p| p.port)
    }

    /// Whether selectors may pick it as a peer.
    pub fn is_peer(&self) -> bool {
        !self.host_network && !self.terminal && !self.ips.is_empty()
    }
}

/// What policy needs of a Namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceInfo {
    pub name: String,
    pub labels: Labels,
}

impl NamespaceInfo {
    /// From the watched object; `None` without a name. The name label is added when
    /// absent, as the API server does for every namespace.
    pub fn from_api(namespace: &Namespace) -> Option<NamespaceInfo> {
        let name = namespace.metadata.name.clone()?;
        let labels = namespace.metadata.labels.clone().unwrap_or_default();
        Some(NamespaceInfo::new(name, labels))
    }

    pub fn new(name: impl Into<String>, mut labels: Labels) -> NamespaceInfo {
        let name = name.into();
        labels
            .entry(NAMESPACE_NAME_LABEL.to_string())
            .or_insert_with(|| name.clone());
        NamespaceInfo { name, labels }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_from_the_api_keeps_what_policy_needs() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "x", "name": "a", "labels": {"pod": "a"}},
            "spec": {"containers": [{"name": "c", "ports": [
                {"name": "serve-80-tcp", "containerPort": 80},
                {"name": "serve-80-udp", "containerPort": 80, "protocol": "UDP"},
                {"containerPort": 9000}
            ]}]},
            "status": {"phase": "Running", "podIP": "10.244.0.5",
                       "podIPs": [{"ip": "10.244.0.5"}, {"ip": "fd00:244::5"}]}
        }))
        .unwrap();
        let info = PodInfo::from_api(&pod).unwrap();
        assert_eq!(info.key.to_string(), "x/a");
        assert_eq!(info.ips.len(), 2);
        assert_eq!(info.named_port("serve-80-tcp", Protocol::Tcp), Some(80));
        assert_eq!(info.named_port("serve-80-udp", Protocol::Udp), Some(80));
        assert_eq!(info.named_port("serve-80-udp", Protocol::Tcp), None);
        assert_eq!(
            info.named_ports.len(),
            2,
            "unnamed ports are not named ports"
        );
        assert!(info.is_peer());
    }

    #[test]
    fn terminal_and_host_network_pods_are_no_peers() {
        let pod = |phase: &str, host: bool| -> PodInfo {
            let pod: Pod = serde_json::from_value(serde_json::json!({
                "metadata": {"namespace": "x", "name": "a"},
                "spec": {"hostNetwork": host, "containers": []},
                "status": {"phase": phase, "podIP": "10.244.0.5"}
            }))
            .unwrap();
            PodInfo::from_api(&pod).unwrap()
        };
        assert!(!pod("Succeeded", false).is_peer());
        assert!(!pod("Failed", false).is_peer());
        assert!(!pod("Running", true).is_peer());
        assert!(pod("Pending", false).is_peer());
    }

    #[test]
    fn namespaces_carry_their_name_label() {
        let ns = NamespaceInfo::new("x", Labels::new());
        assert_eq!(ns.labels[NAMESPACE_NAME_LABEL], "x");
    }
}
