//! A NetworkPolicy object, checked and compiled once into what the translation
//! evaluates: selectors compiled, CIDRs parsed, ports typed, `policyTypes` defaulted.
//!
//! The checks are the API server's (`ValidateNetworkPolicySpec`,
//! pkg/apis/networking/validation): a policy that an API server would refuse, or one
//! from a newer API this code does not know, is an error naming the policy, and nothing
//! of it is compiled; so a policy is never half-applied.

use crate::error::PolicyError;
use crate::model::ObjectKey;
use crate::ranges::{AddrSet, PortRange, Protocol};
use crate::selector::Selector;
use ipnetwork::IpNetwork;
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Direction of traffic relative to the selected pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub const BOTH: [Direction; 2] = [Direction::Ingress, Direction::Egress];
}

/// Which namespaces a pod peer is looked for in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NamespaceScope {
    /// No namespaceSelector: the policy's own namespace.
    Own,
    Matching(Selector),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Peer {
    Pods {
        namespaces: NamespaceScope,
        /// No podSelector (only a namespaceSelector): every pod of those namespaces.
        pods: Selector,
    },
    /// `ipBlock`: the CIDR minus its exceptions. It matches pod addresses too.
    Block {
        cidr: IpNetwork,
        except: Vec<IpNetwork>,
        addrs: AddrSet,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PortMatch {
    /// A protocol without a port: every port of it.
    All,
    Range(PortRange),
    /// A container port name: resolved on the destination pod.
    Named(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PortSpec {
    pub protocol: Protocol,
    pub port: PortMatch,
}

/// One `ingress` or `egress` rule. `None` is the API's empty-or-absent list: every
/// peer, or every port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CompiledRule {
    pub peers: Option<Vec<Peer>>,
    pub ports: Option<Vec<PortSpec>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledPolicy {
    pub key: ObjectKey,
    pub pod_selector: Selector,
    /// `Some` when the policy's types include Ingress: it isolates its pods for ingress
    /// and allows what the rules say (no rules: nothing).
    pub ingress: Option<Vec<CompiledRule>>,
    pub egress: Option<Vec<CompiledRule>>,
}

impl CompiledPolicy {
    pub fn rules(&self, direction: Direction) -> Option<&[CompiledRule]> {
        match direction {
            Direction::Ingress => self.ingress.as_deref(),
            Direction::Egress => self.egress.as_deref(),
        }
    }

    /// Every container-port name the policy's rules of `direction` use.
    pub fn named_ports(&self, direction: Direction) -> impl Iterator<Item = (&str, Protocol)> {
        self.rules(direction)
            .into_iter()
            .flatten()
            .flat_map(|r| r.ports.iter().flatten())
            .filter_map(|p| match &p.port {
                PortMatch::Named(name) => Some((name.as_str(), p.protocol)),
                _ => None,
            })
    }

    /// Checks and compiles `policy`. Errors name the policy.
    pub fn compile(policy: &NetworkPolicy) -> Result<CompiledPolicy, PolicyError> {
        let key = ObjectKey::new(
            policy.metadata.namespace.clone().unwrap_or_default(),
            policy.metadata.name.clone().unwrap_or_default(),
        );
        let invalid = |reason: String| PolicyError::InvalidPolicy {
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            reason,
        };
        if key.namespace.is_empty() || key.name.is_empty() {
            return Err(invalid(
                "metadata.namespace and metadata.name are required".into(),
            ));
        }
        let spec = policy.spec.clone().unwrap_or_default();
        let pod_selector = match &spec.pod_selector {
            Some(s) => Selector::compile(s).map_err(|e| invalid(format!("podSelector: {e}")))?,
            None => Selector::everything(),
        };
        let (isolates_ingress, isolates_egress) =
            policy_types(spec.policy_types.as_deref(), spec.egress.as_deref()).map_err(invalid)?;
        let mut ingress = Vec::new();
        for (i, rule) in spec.ingress.iter().flatten().enumerate() {
            let at = format!("ingress[{i}]");
            ingress.push(
                compile_rule(rule.from.as_deref(), rule.ports.as_deref(), "from")
                    .map_err(|e| invalid(format!("{at}.{e}")))?,
            );
        }
        let mut egress = Vec::new();
        for (i, rule) in spec.egress.iter().flatten().enumerate() {
            let at = format!("egress[{i}]");
            egress.push(
                compile_rule(rule.to.as_deref(), rule.ports.as_deref(), "to")
                    .map_err(|e| invalid(format!("{at}.{e}")))?,
            );
        }
        Ok(CompiledPolicy {
            key,
            pod_selector,
            // Rules of a direction the policy does not isolate are ignored, as upstream
            // does (the API server keeps them; they have no effect).
            ingress: isolates_ingress.then_some(ingress),
            egress: isolates_egress.then_some(egress),
        })
    }
}

/// `policyTypes` as the API server defaults it (SetDefaults_NetworkPolicy): Ingress
/// always, plus Egress when `spec.egress` holds at least one rule, unless the field is
/// given. Returns (ingress, egress).
fn policy_types(
    given: Option<&[String]>,
    egress_rules: Option<&[k8s_openapi::api::networking::v1::NetworkPolicyEgressRule]>,
) -> Result<(bool, bool), String> {
    let given = given.unwrap_or_default();
    if given.is_empty() {
        return Ok((true, egress_rules.is_some_and(|r| !r.is_empty())));
    }
    let (mut ingress, mut egress) = (false, false);
    for t in given {
        match t.as_str() {
            "Ingress" => ingress = true,
            "Egress" => egress = true,
            other => {
                return Err(format!(
                    "policyTypes: unknown type {other:?} (Ingress, Egress)"
                ))
            }
        }
    }
    Ok((ingress, egress))
}

fn compile_rule(
    peers: Option<&[NetworkPolicyPeer]>,
    ports: Option<&[NetworkPolicyPort]>,
    peers_field: &str,
) -> Result<CompiledRule, String> {
    let peers = match peers {
        None | Some([]) => None,
        Some(list) => Some(
            list.iter()
                .enumerate()
                .map(|(i, p)| compile_peer(p).map_err(|e| format!("{peers_field}[{i}]: {e}")))
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let ports = match ports {
        None | Some([]) => None,
        Some(list) => Some(
            list.iter()
                .enumerate()
                .map(|(i, p)| compile_port(p).map_err(|e| format!("ports[{i}]: {e}")))
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    Ok(CompiledRule { peers, ports })
}

fn compile_peer(peer: &NetworkPolicyPeer) -> Result<Peer, String> {
    if let Some(block) = &peer.ip_block {
        if peer.pod_selector.is_some() || peer.namespace_selector.is_some() {
            return Err("ipBlock may not be combined with podSelector or namespaceSelector".into());
        }
        return compile_block(block);
    }
    let namespaces = match &peer.namespace_selector {
        Some(s) => NamespaceScope::Matching(
            Selector::compile(s).map_err(|e| format!("namespaceSelector: {e}"))?,
        ),
        None => NamespaceScope::Own,
    };
    let pods = match &peer.pod_selector {
        Some(s) => Selector::compile(s).map_err(|e| format!("podSelector: {e}"))?,
        None if matches!(namespaces, NamespaceScope::Own) => {
            return Err("a peer needs a podSelector, a namespaceSelector or an ipBlock".into())
        }
        None => Selector::everything(),
    };
    Ok(Peer::Pods { namespaces, pods })
}

fn parse_cidr(text: &str, field: &str) -> Result<IpNetwork, String> {
    if !text.contains('/') {
        return Err(format!("{field} {text:?} is not a CIDR (address/length)"));
    }
    let net: IpNetwork = text
        .parse()
        .map_err(|e| format!("{field} {text:?} is not a CIDR: {e}"))?;
    // The API server accepts a host part (10.0.0.5/24) and means the network.
    IpNetwork::new(net.network(), net.prefix()).map_err(|e| format!("{field} {text:?}: {e}"))
}

fn compile_block(block: &IPBlock) -> Result<Peer, String> {
    let cidr = parse_cidr(&block.cidr, "ipBlock.cidr")?;
    let mut addrs = AddrSet::new();
    addrs.insert_net(cidr);
    let mut except = Vec::new();
    for text in block.except.iter().flatten() {
        let e = parse_cidr(text, "ipBlock.except")?;
        let inside = e.is_ipv4() == cidr.is_ipv4()
            && cidr.contains(e.network())
            && e.prefix() > cidr.prefix();
        if !inside {
            return Err(format!(
                "ipBlock.except {text:?} must be a strict subset of cidr {}",
                block.cidr
            ));
        }
        addrs.remove_net(e);
        except.push(e);
    }
    Ok(Peer::Block {
        cidr,
        except,
        addrs,
    })
}

fn compile_port(port: &NetworkPolicyPort) -> Result<PortSpec, String> {
    let name = port.protocol.as_deref().unwrap_or("TCP");
    let protocol = Protocol::from_api(name)
        .ok_or_else(|| format!("protocol {name:?} is not TCP, UDP or SCTP"))?;
    let number = |n: i32| -> Result<u16, String> {
        u16::try_from(n)
            .ok()
            .filter(|&p| p >= 1)
            .ok_or_else(|| format!("port {n} is outside 1-65535"))
    };
    let spec = match (&port.port, port.end_port) {
        (None, None) => PortMatch::All,
        (None, Some(_)) => return Err("endPort needs a numeric port".into()),
        (Some(IntOrString::Int(n)), None) => PortMatch::Range(PortRange::single(number(*n)?)),
        (Some(IntOrString::Int(n)), Some(end)) => {
            let (lo, hi) = (number(*n)?, number(end)?);
            if hi < lo {
                return Err(format!("endPort {hi} is below port {lo}"));
            }
            PortMatch::Range(PortRange { lo, hi })
        }
        (Some(IntOrString::String(s)), end) => {
            if end.is_some() {
                return Err(format!(
                    "endPort with the named port {s:?} (needs a number)"
                ));
            }
            // A number written as a string ("80") is a number, as the API server's
            // IntOrString does; anything else must be a container-port name.
            match s.parse::<i32>() {
                Ok(n) => PortMatch::Range(PortRange::single(number(n)?)),
                Err(_) if valid_port_name(s) => PortMatch::Named(s.clone()),
                Err(_) => return Err(format!("port {s:?} is neither a number nor a port name")),
            }
        }
    };
    Ok(PortSpec {
        protocol,
        port: spec,
    })
}

/// IANA service names (RFC 6335 section 5.1), as the API server checks a port name:
/// 1-15 characters of a-z, 0-9 and '-', at least one letter, no leading, trailing or
/// double hyphen.
fn valid_port_name(name: &str) -> bool {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    ok_chars
        && (1..=15).contains(&name.len())
        && name.bytes().any(|b| b.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(spec: serde_json::Value) -> NetworkPolicy {
        serde_json::from_value(json!({
            "metadata": {"namespace": "x", "name": "p"},
            "spec": spec
        }))
        .unwrap()
    }

    fn compile(spec: serde_json::Value) -> Result<CompiledPolicy, String> {
        CompiledPolicy::compile(&policy(spec)).map_err(|e| e.to_string())
    }

    #[test]
    fn policy_types_default_to_ingress_alone_without_egress_rules() {
        let p = compile(json!({"podSelector": {}})).unwrap();
        assert_eq!(
            p.ingress,
            Some(vec![]),
            "isolated for ingress, nothing allowed"
        );
        assert_eq!(p.egress, None);
        // An empty egress list does not add Egress: the API server checks len != 0.
        let p = compile(json!({"podSelector": {}, "egress": []})).unwrap();
        assert_eq!(p.egress, None);
    }

    #[test]
    fn policy_types_add_egress_when_an_egress_rule_exists() {
        let p = compile(json!({"podSelector": {}, "egress": [{}]})).unwrap();
        assert!(p.ingress.is_some(), "Ingress is always defaulted");
        assert_eq!(p.egress.as_ref().map(Vec::len), Some(1));
    }

    #[test]
    fn given_policy_types_are_taken_as_they_are() {
        let p = compile(json!({"podSelector": {}, "policyTypes": ["Egress"],
                               "ingress": [{}]}))
        .unwrap();
        assert_eq!(
            p.ingress, None,
            "ingress rules of a non-Ingress policy are ignored"
        );
        assert_eq!(
            p.egress,
            Some(vec![]),
            "Egress with no rules denies all egress"
        );
        let err = compile(json!({"podSelector": {}, "policyTypes": ["Sideways"]})).unwrap_err();
        assert!(
            err.contains("x/p") && err.contains("unknown type \"Sideways\""),
            "{err}"
        );
    }

    #[test]
    fn empty_peer_and_port_lists_mean_everything() {
        let p =
            compile(json!({"podSelector": {}, "ingress": [{"from": [], "ports": []}]})).unwrap();
        assert_eq!(
            p.ingress.unwrap()[0],
            CompiledRule {
                peers: None,
                ports: None
            }
        );
    }

    #[test]
    fn an_unknown_operator_is_an_error_naming_the_policy() {
        let err = compile(
            json!({"podSelector": {}, "ingress": [{"from": [{"podSelector":
            {"matchExpressions": [{"key": "pod", "operator": "Near", "values": ["a"]}]}}]}]}),
        )
        .unwrap_err();
        assert!(
            err.starts_with("NetworkPolicy x/p: ingress[0].from[0]: podSelector"),
            "{err}"
        );
        assert!(err.contains("unknown operator \"Near\""), "{err}");
    }

    #[test]
    fn ip_blocks_are_checked_as_the_api_server_does() {
        let block = |b: serde_json::Value| {
            compile(json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": b}]}]}))
        };
        assert!(block(json!({"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]})).is_ok());
        let e = block(json!({"cidr": "10.0.0.300/8"})).unwrap_err();
        assert!(e.contains("not a CIDR"), "{e}");
        let e = block(json!({"cidr": "10.0.0.1"})).unwrap_err();
        assert!(e.contains("not a CIDR"), "{e}");
        let e = block(json!({"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]})).unwrap_err();
        assert!(e.contains("strict subset"), "{e}");
        let e = block(json!({"cidr": "10.0.0.0/8", "except": ["10.0.0.0/8"]})).unwrap_err();
        assert!(e.contains("strict subset"), "{e}");
        let e = block(json!({"cidr": "10.0.0.0/8", "except": ["fd00::/64"]})).unwrap_err();
        assert!(e.contains("strict subset"), "{e}");
        let e = compile(json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock":
            {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}]}))
        .unwrap_err();
        assert!(e.contains("may not be combined"), "{e}");
    }

    #[test]
    fn a_host_part_in_a_cidr_means_its_network() {
        let p = compile(json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock":
            {"cidr": "10.0.0.5/24"}}]}]}))
        .unwrap();
        let Some(Peer::Block { cidr, .. }) =
            p.ingress.unwrap()[0].peers.as_ref().map(|v| v[0].clone())
        else {
            panic!("a block")
        };
        assert_eq!(cidr.to_string(), "10.0.0.0/24");
    }

    #[test]
    fn ports_by_number_name_range_and_protocol() {
        let p = compile(json!({"podSelector": {}, "ingress": [{"ports": [
            {"port": 80},
            {"port": "serve-81-udp", "protocol": "UDP"},
            {"port": 1000, "endPort": 2000, "protocol": "SCTP"},
            {"protocol": "UDP"},
            {"port": "443"}
        ]}]}))
        .unwrap();
        let ports = p.ingress.unwrap()[0].ports.clone().unwrap();
        assert_eq!(
            ports,
            vec![
                PortSpec {
                    protocol: Protocol::Tcp,
                    port: PortMatch::Range(PortRange::single(80))
                },
                PortSpec {
                    protocol: Protocol::Udp,
                    port: PortMatch::Named("serve-81-udp".into())
                },
                PortSpec {
                    protocol: Protocol::Sctp,
                    port: PortMatch::Range(PortRange { lo: 1000, hi: 2000 })
                },
                PortSpec {
                    protocol: Protocol::Udp,
                    port: PortMatch::All
                },
                PortSpec {
                    protocol: Protocol::Tcp,
                    port: PortMatch::Range(PortRange::single(443))
                },
            ]
        );
    }

    #[test]
    fn bad_ports_are_errors() {
        let port = |p: serde_json::Value| {
            compile(json!({"podSelector": {}, "ingress": [{"ports": [p]}]})).unwrap_err()
        };
        assert!(port(json!({"port": 80, "protocol": "ICMP"})).contains("not TCP, UDP or SCTP"));
        assert!(port(json!({"port": 0})).contains("outside 1-65535"));
        assert!(port(json!({"port": 70000})).contains("outside 1-65535"));
        assert!(port(json!({"port": 90, "endPort": 80})).contains("below port"));
        assert!(port(json!({"endPort": 80})).contains("needs a numeric port"));
        assert!(port(json!({"port": "http", "endPort": 80})).contains("named port"));
        assert!(port(json!({"port": "Not_A-Name"})).contains("neither a number"));
    }

    #[test]
    fn a_peer_needs_a_selector_or_a_block() {
        let e = compile(json!({"podSelector": {}, "ingress": [{"from": [{}]}]})).unwrap_err();
        assert!(e.contains("needs a podSelector"), "{e}");
    }

    #[test]
    fn a_namespace_selector_alone_selects_every_pod_there() {
        let p = compile(json!({"podSelector": {}, "ingress": [{"from": [
            {"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}))
        .unwrap();
        let peers = p.ingress.unwrap()[0].peers.clone().unwrap();
        assert!(
            matches!(&peers[0], Peer::Pods { namespaces: NamespaceScope::Matching(_), pods }
            if pods.is_everything())
        );
    }
}
