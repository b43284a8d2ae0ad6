//! The translation: the cluster (Namespaces, Pods, NetworkPolicies) and the pods of this
//! node in, the node's desired policy out. No I/O.
//!
//! Per local pod and direction the result is either "not isolated" or an allow-list.
//! Every policy that selects the pod contributes its rules to one allow-list (the union
//! of policies), compiled into four kinds of element (any peer; peers on any port; ports
//! from anywhere; peers on ports) so that the kernel checks a packet with a fixed number
//! of set lookups, however many policies and peers there are.
//!
//! Pods that the same policies select share one allow-list (a *class*): the pods of a
//! Deployment carry the same labels, so 100 pods allowed from a 10,000-pod namespace
//! cost the kernel one set of 10,000 addresses, not 100.

use crate::compile::{CompiledPolicy, CompiledRule, Direction, NamespaceScope, Peer, PortMatch};
use crate::error::PolicyError;
use crate::model::{NamespaceInfo, ObjectKey, PodInfo};
use crate::ranges::{AddrSet, PeerPortTable, PortRange, PortSet, Protocol};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

/// A pod attached on this node: its identity in the API, the host end of its veth
/// (`fj…`), and its addresses as the plugin assigned them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalPod {
    pub key: ObjectKey,
    pub interface: String,
    pub ips: Vec<IpAddr>,
}

/// What a pod may receive (ingress) or send (egress) when a policy isolates it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct AllowList {
    /// A rule with no peers and no ports: everything.
    pub any: bool,
    /// Peers on every port.
    pub peers: AddrSet,
    /// Ports from (ingress) or to (egress) any address.
    pub ports: PortSet,
    /// Peers on some ports.
    pub peer_ports: PeerPortTable,
}

/// The name of a shared allow-list: direction and a digest of what defines it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClassId {
    pub direction: Direction,
    /// 10 hex characters of the SHA-256 of the class's signature (the policies that
    /// select its pods, and the pods' resolution of the named ports those use).
    pub tag: String,
}

/// One local pod's rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRules {
    pub key: ObjectKey,
    /// The pod's own addresses: a pod always reaches itself.
    pub own: Vec<IpAddr>,
    /// `None`: not isolated for ingress.
    pub ingress: Option<ClassId>,
    pub egress: Option<ClassId>,
}

/// The node's desired policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredPolicy {
    /// By host interface name.
    pub pods: BTreeMap<String, PodRules>,
    pub classes: BTreeMap<ClassId, AllowList>,
    /// Local pods the API has not shown yet: their interfaces stay unknown to the
    /// kernel, so their traffic is dropped (the no-window rule) until it does.
    pub waiting: Vec<LocalPod>,
}

/// The cluster as the watches show it, with every policy compiled.
#[derive(Debug, Default)]
pub struct ClusterView {
    namespaces: HashMap<String, NamespaceInfo>,
    pods: HashMap<ObjectKey, PodInfo>,
    pods_by_namespace: HashMap<String, BTreeSet<String>>,
    policies: BTreeMap<ObjectKey, CompiledPolicy>,
    /// Policies whose latest version could not be compiled, with the reason. Their
    /// previous version (if any) stays in `policies`.
    rejected: BTreeMap<ObjectKey, String>,
}

impl ClusterView {
    pub fn new() -> ClusterView {
        ClusterView::default()
    }

    pub fn upsert_namespace(&mut self, namespace: NamespaceInfo) {
        self.namespaces.insert(namespace.name.clone(), namespace);
    }

    pub fn remove_namespace(&mut self, name: &str) {
        self.namespaces.remove(name);
    }

    pub fn upsert_pod(&mut self, pod: PodInfo) {
        self.pods_by_namespace
            .entry(pod.key.namespace.clone())
            .or_default()
            .insert(pod.key.name.clone());
        self.pods.insert(pod.key.clone(), pod);
    }

    pub fn remove_pod(&mut self, key: &ObjectKey) {
        self.pods.remove(key);
        if let Some(names) = self.pods_by_namespace.get_mut(&key.namespace) {
            names.remove(&key.name);
            if names.is_empty() {
                self.pods_by_namespace.remove(&key.namespace);
            }
        }
    }

    pub fn pod(&self, key: &ObjectKey) -> Option<&PodInfo> {
        self.pods.get(key)
    }

    /// Compiles and adopts `policy`. On an error the policy's previous version (if any)
    /// stays in force, the error is kept for `rejected()` and returned.
    pub fn upsert_policy(&mut self, policy: &NetworkPolicy) -> Result<(), PolicyError> {
        match CompiledPolicy::compile(policy) {
            Ok(compiled) => {
                self.rejected.remove(&compiled.key);
                self.policies.insert(compiled.key.clone(), compiled);
                Ok(())
            }
            Err(e) => {
                let key = ObjectKey::new(
                    policy.metadata.namespace.clone().unwrap_or_default(),
                    policy.metadata.name.clone().unwrap_or_default(),
                );
                self.rejected.insert(key, e.to_string());
                Err(e)
            }
        }
    }

    pub fn remove_policy(&mut self, key: &ObjectKey) {
        self.policies.remove(key);
        self.rejected.remove(key);
    }

    /// Policies whose latest version was refused, with the error.
    pub fn rejected(&self) -> impl Iterator<Item = (&ObjectKey, &str)> {
        self.rejected.iter().map(|(k, v)| (k, v.as_str()))
    }

    pub fn policies(&self) -> impl Iterator<Item = &CompiledPolicy> {
        self.policies.values()
    }

    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }

    /// The policies of the pod's namespace that select it and isolate `direction`.
    pub fn selecting<'a>(
        &'a self,
        pod: &'a PodInfo,
        direction: Direction,
    ) -> impl Iterator<Item = &'a CompiledPolicy> + 'a {
        let namespace = pod.key.namespace.as_str();
        let start = ObjectKey::new(namespace, "");
        self.policies
            .range(start..)
            .take_while(move |(k, _)| k.namespace == namespace)
            .map(|(_, p)| p)
            .filter(move |p| p.rules(direction).is_some() && p.pod_selector.matches(&pod.labels))
    }

    /// The node's desired policy for `local` pods.
    pub fn desired(&self, local: &[LocalPod]) -> DesiredPolicy {
        let mut out = DesiredPolicy::default();
        let mut class_of: HashMap<String, ClassId> = HashMap::new();
        for pod in local {
            let Some(info) = self.pods.get(&pod.key) else {
                out.waiting.push(pod.clone());
                continue;
            };
            let own = if pod.ips.is_empty() {
                info.ips.clone()
            } else {
                pod.ips.clone()
            };
            let mut rules = PodRules {
                key: pod.key.clone(),
                own,
                ingress: None,
                egress: None,
            };
            for direction in Direction::BOTH {
                let policies: Vec<&CompiledPolicy> = self.selecting(info, direction).collect();
                if policies.is_empty() {
                    continue;
                }
                let signature = signature(direction, &policies, info);
                let id = class_of
                    .entry(signature.clone())
                    .or_insert_with(|| ClassId {
                        direction,
                        tag: digest(&signature),
                    })
                    .clone();
                if !out.classes.contains_key(&id) {
                    let list = self.allow_list(direction, &policies, info);
                    out.classes.insert(id.clone(), list);
                }
                match direction {
                    Direction::Ingress => rules.ingress = Some(id),
                    Direction::Egress => rules.egress = Some(id),
                }
            }
            out.pods.insert(pod.interface.clone(), rules);
        }
        out
    }

    /// The union of `policies`' rules of `direction` for `target`.
    pub fn allow_list(
        &self,
        direction: Direction,
        policies: &[&CompiledPolicy],
        target: &PodInfo,
    ) -> AllowList {
        let mut list = AllowList::default();
        for policy in policies {
            for rule in policy.rules(direction).into_iter().flatten() {
                self.add_rule(&mut list, direction, policy, rule, target);
                if list.any {
                    // Everything is allowed: the rest adds nothing.
                    return AllowList {
                        any: true,
                        ..AllowList::default()
                    };
                }
            }
        }
        list
    }

    fn add_rule(
        &self,
        list: &mut AllowList,
        direction: Direction,
        policy: &CompiledPolicy,
        rule: &CompiledRule,
        target: &PodInfo,
    ) {
        let addrs = rule
            .peers
            .as_ref()
            .map(|peers| self.peer_addrs(&policy.key.namespace, peers));
        let Some(ports) = &rule.ports else {
            match addrs {
                None => list.any = true,
                Some(a) => list.peers.union(&a),
            }
            return;
        };
        for port in ports {
            let range = match &port.port {
                PortMatch::All => PortRange::ALL,
                PortMatch::Range(r) => *r,
                PortMatch::Named(name) if direction == Direction::Ingress => {
                    // Ingress ports are the selected pod's own: the name resolves on it.
                    match target.named_port(name, port.protocol) {
                        Some(p) => PortRange::single(p),
                        None => continue,
                    }
                }
                PortMatch::Named(name) => {
                    // Egress ports are the destination's: each peer pod's own port of
                    // that name (upstream semantics); a destination that is no pod, or
                    // has no such port, is not allowed by this entry.
                    self.add_named_egress(list, policy, rule, name, port.protocol);
                    continue;
                }
            };
            match &addrs {
                None => list.ports.insert(port.protocol, range),
                Some(a) => list.peer_ports.insert(port.protocol, range, a),
            }
        }
    }

    fn add_named_egress(
        &self,
        list: &mut AllowList,
        policy: &CompiledPolicy,
        rule: &CompiledRule,
        name: &str,
        protocol: Protocol,
    ) {
        let mut by_port: BTreeMap<u16, Vec<IpAddr>> = BTreeMap::new();
        let mut add = |pod: &PodInfo, within: Option<&AddrSet>| {
            if let Some(port) = pod.named_port(name, protocol) {
                let ips = pod
                    .ips
                    .iter()
                    .filter(|ip| within.is_none_or(|w| w.contains(**ip)));
                by_port.entry(port).or_default().extend(ips);
            }
        };
        match &rule.peers {
            None => self
                .pods
                .values()
                .filter(|p| p.is_peer())
                .for_each(|p| add(p, None)),
            Some(peers) => {
                for peer in peers {
                    match peer {
                        Peer::Block { addrs, .. } => self
                            .pods
                            .values()
                            .filter(|p| p.is_peer() && p.ips.iter().any(|ip| addrs.contains(*ip)))
                            .for_each(|p| add(p, Some(addrs))),
                        Peer::Pods { .. } => self
                            .peer_pods(&policy.key.namespace, peer)
                            .for_each(|p| add(p, None)),
                    }
                }
            }
        }
        for (port, ips) in by_port {
            list.peer_ports.insert(
                protocol,
                PortRange::single(port),
                &AddrSet::from_addrs(&ips),
            );
        }
    }

    /// Every address the peers stand for.
    fn peer_addrs(&self, policy_namespace: &str, peers: &[Peer]) -> AddrSet {
        let mut out = AddrSet::new();
        let mut ips: Vec<IpAddr> = Vec::new();
        for peer in peers {
            match peer {
                Peer::Block { addrs, .. } => out.union(addrs),
                Peer::Pods { .. } => {
                    for pod in self.peer_pods(policy_namespace, peer) {
                        ips.extend(pod.ips.iter().copied());
                    }
                }
            }
        }
        out.union(&AddrSet::from_addrs(&ips));
        out
    }

    /// The pods a pod peer selects (never host-network or terminal pods).
    pub fn peer_pods<'a>(
        &'a self,
        policy_namespace: &'a str,
        peer: &'a Peer,
    ) -> Box<dyn Iterator<Item = &'a PodInfo> + 'a> {
        let Peer::Pods { namespaces, pods } = peer else {
            return Box::new(std::iter::empty());
        };
        let in_namespace = move |ns: &'a str| {
            self.pods_by_namespace
                .get(ns)
                .into_iter()
                .flatten()
                .filter_map(move |name| self.pods.get(&ObjectKey::new(ns, name.as_str())))
                .filter(move |p| p.is_peer() && pods.matches(&p.labels))
        };
        match namespaces {
            NamespaceScope::Own => Box::new(in_namespace(policy_namespace)),
            NamespaceScope::Matching(selector) => Box::new(
                self.pods_by_namespace
                    .keys()
                    .filter(move |ns| self.namespace_matches(ns, selector))
                    .flat_map(move |ns| in_namespace(ns.as_str())),
            ),
        }
    }

    fn namespace_matches(&self, name: &str, selector: &crate::selector::Selector) -> bool {
        match self.namespaces.get(name) {
            Some(ns) => selector.matches(&ns.labels),
            // A namespace the watch has not delivered yet still has its name label.
            None => selector.matches(&NamespaceInfo::new(name, Default::default()).labels),
        }
    }

    /// Named ports that policies use and no pod of the cluster has: not an error (the
    /// entry matches nothing, as upstream), but worth a warning naming the policy.
    pub fn unmatched_named_ports(&self) -> Vec<(ObjectKey, String)> {
        let known: BTreeSet<(&str, Protocol)> = self
            .pods
            .values()
            .flat_map(|p| p.named_ports.iter().map(|n| (n.name.as_str(), n.protocol)))
            .collect();
        let mut out = Vec::new();
        for policy in self.policies.values() {
            for direction in Direction::BOTH {
                for (name, protocol) in policy.named_ports(direction) {
                    if !known.contains(&(name, protocol)) {
                        out.push((policy.key.clone(), format!("{protocol} port {name:?}")));
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

/// What makes two pods' allow-lists of `direction` equal: the same policies, and (for
/// ingress, where named ports resolve on the pod itself) the same resolution of the
/// names those policies use.
fn signature(direction: Direction, policies: &[&CompiledPolicy], pod: &PodInfo) -> String {
    let mut s = format!("{direction:?}");
    for p in policies {
        s.push('|');
        s.push_str(&p.key.to_string());
    }
    if direction == Direction::Ingress {
        let mut names: Vec<(&str, Protocol)> = policies
            .iter()
            .flat_map(|p| p.named_ports(direction))
            .collect();
        names.sort();
        names.dedup();
        for (name, protocol) in names {
            let port = pod.named_port(name, protocol);
            s.push_str(&format!("|{name}/{protocol}={port:?}"));
        }
    }
    s
}

fn digest(signature: &str) -> String {
    let hash = Sha256::digest(signature.as_bytes());
    hash.iter().take(5).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
