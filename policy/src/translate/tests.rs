//! The translation against upstream's e2e cases (test/e2e/network/netpol/
//! network_policy.go, kubernetes/kubernetes): the same model (namespaces x, y, z; pods
//! a, b, c; ports 80 and 81, TCP and UDP, named `serve-<port>-<proto>`), the same
//! policies, and the whole truth table checked for each, evaluated on the desired
//! state exactly as the kernel's chains evaluate it (egress of the sender, then
//! ingress of the receiver; a pod always reaches itself). Upstream's helpers
//! `SetSpecIngressRules` / `SetSpecEgressRules` also add their type to `policyTypes`, so
//! the egress-only cases here name `"policyTypes": ["Egress"]` as the e2e objects do.

use super::*;
use crate::model::{Labels, NamedPort, NamespaceInfo, PodInfo};
use crate::ranges::Protocol;
use serde_json::{json, Value};

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];

/// The e2e model: every pod of every namespace on this node, dual stack.
struct Model {
    view: ClusterView,
    local: Vec<LocalPod>,
}

fn pod_index(ns: &str, pod: &str) -> u8 {
    let n = NAMESPACES.iter().position(|x| *x == ns).unwrap() as u8;
    let p = PODS.iter().position(|x| *x == pod).unwrap() as u8;
    n * 3 + p + 10
}

fn pod_ipv4(ns: &str, pod: &str) -> IpAddr {
    IpAddr::from([10, 244, 0, pod_index(ns, pod)])
}

fn pod_ipv6(ns: &str, pod: &str) -> IpAddr {
    format!("fd00:244::{:x}", pod_index(ns, pod))
        .parse()
        .unwrap()
}

fn model_pod(ns: &str, pod: &str, labels: &[(&str, &str)]) -> PodInfo {
    let mut named_ports = Vec::new();
    for port in [80u16, 81] {
        for (protocol, name) in [(Protocol::Tcp, "tcp"), (Protocol::Udp, "udp")] {
            named_ports.push(NamedPort {
                name: format!("serve-{port}-{name}"),
                protocol,
                port,
            });
        }
    }
    let mut all: Labels = [("pod".to_string(), pod.to_string())].into();
    all.extend(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    PodInfo {
        key: ObjectKey::new(ns, pod),
        labels: all,
        ips: vec![pod_ipv4(ns, pod), pod_ipv6(ns, pod)],
        named_ports,
        host_network: false,
        terminal: false,
    }
}

impl Model {
    fn new() -> Model {
        let mut view = ClusterView::new();
        let mut local = Vec::new();
        for ns in NAMESPACES {
            view.upsert_namespace(NamespaceInfo::new(ns, [("ns".into(), ns.into())].into()));
            for pod in PODS {
                view.upsert_pod(model_pod(ns, pod, &[]));
                local.push(LocalPod {
                    key: ObjectKey::new(ns, pod),
                    interface: format!("fj{ns}{pod}"),
                    ips: vec![],
                });
            }
        }
        Model { view, local }
    }

    fn apply(&mut self, ns: &str, name: &str, spec: Value) {
        let policy: NetworkPolicy = serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": name}, "spec": spec
        }))
        .unwrap();
        self.view.upsert_policy(&policy).unwrap();
    }

    fn delete(&mut self, ns: &str, name: &str) {
        self.view.remove_policy(&ObjectKey::new(ns, name));
    }

    fn label_pod(&mut self, ns: &str, pod: &str, labels: &[(&str, &str)]) {
        self.view.upsert_pod(model_pod(ns, pod, labels));
    }

    fn label_namespace(&mut self, ns: &str, labels: &[(&str, &str)]) {
        let mut all: Labels = [("ns".to_string(), ns.to_string())].into();
        all.extend(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self.view.upsert_namespace(NamespaceInfo::new(ns, all));
    }

    /// The truth table for one port and protocol, over one address family.
    fn probe(&self, port: u16, protocol: Protocol, family: u8) -> Reach {
        let desired = self.view.desired(&self.local);
        let mut reach = Reach::new(true);
        for (fns, fpod) in all_pods() {
            for (tns, tpod) in all_pods() {
                let (from, to) = if family == 4 {
                    (pod_ipv4(fns, fpod), pod_ipv4(tns, tpod))
                } else {
                    (pod_ipv6(fns, fpod), pod_ipv6(tns, tpod))
                };
                let sender = &desired.pods[&format!("fj{fns}{fpod}")];
                let receiver = &desired.pods[&format!("fj{tns}{tpod}")];
                let ok = passes(&desired, sender, sender.egress.as_ref(), to, protocol, port)
                    && passes(
                        &desired,
                        receiver,
                        receiver.ingress.as_ref(),
                        from,
                        protocol,
                        port,
                    );
                reach.set((fns, fpod), (tns, tpod), ok);
            }
        }
        reach
    }

    /// Checks the table on `port`/`protocol` in both families.
    fn check(&self, port: u16, protocol: Protocol, want: &Reach) {
        for family in [4, 6] {
            let got = self.probe(port, protocol, family);
            // Upstream ignores loopback (kubernetes#95879); Fjord defines it: a pod
            // always reaches itself.
            for (ns, pod) in all_pods() {
                assert!(
                    got.get((ns, pod), (ns, pod)),
                    "{ns}/{pod} must reach itself"
                );
            }
            let diff = got.diff(want);
            assert!(
                diff.is_empty(),
                "{protocol}/{port} IPv{family}: wrong verdicts (from -> to: got):\n{}",
                diff.join("\n")
            );
        }
    }
}

/// A verdict of one pod chain, as the kernel takes it: the pod's own addresses, then
/// the class's elements; not isolated passes everything.
fn passes(
    desired: &DesiredPolicy,
    pod: &PodRules,
    class: Option<&ClassId>,
    peer: IpAddr,
    protocol: Protocol,
    port: u16,
) -> bool {
    let Some(class) = class else { return true };
    if pod.own.contains(&peer) {
        return true;
    }
    let list = &desired.classes[class];
    let port_in = |r: &PortRange| r.lo <= port && port <= r.hi;
    list.any
        || list.peers.contains(peer)
        || list
            .ports
            .ranges()
            .iter()
            .any(|(p, r)| *p == protocol && port_in(r))
        || list
            .peer_ports
            .cells()
            .iter()
            .any(|(p, r, a)| *p == protocol && port_in(r) && a.contains(peer))
}

fn all_pods() -> impl Iterator<Item = (&'static str, &'static str)> {
    NAMESPACES
        .iter()
        .flat_map(|ns| PODS.iter().map(move |p| (*ns, *p)))
}

/// Upstream's `Reachability`: a full pod x pod table with its helpers.
#[derive(Clone)]
struct Reach {
    table: BTreeMap<(String, String), bool>,
}

type PodRef<'a> = (&'a str, &'a str);

impl Reach {
    fn new(default: bool) -> Reach {
        let mut table = BTreeMap::new();
        for f in all_pods() {
            for t in all_pods() {
                table.insert(
                    (format!("{}/{}", f.0, f.1), format!("{}/{}", t.0, t.1)),
                    default,
                );
            }
        }
        Reach { table }
    }

    fn set(&mut self, from: PodRef, to: PodRef, ok: bool) {
        self.table.insert(
            (
                format!("{}/{}", from.0, from.1),
                format!("{}/{}", to.0, to.1),
            ),
            ok,
        );
    }

    fn get(&self, from: PodRef, to: PodRef) -> bool {
        self.table[&(
            format!("{}/{}", from.0, from.1),
            format!("{}/{}", to.0, to.1),
        )]
    }

    /// `ExpectPeer`: every pair whose ends match the (namespace, pod) patterns; `None`
    /// matches anything.
    fn peer(
        &mut self,
        from: (Option<&str>, Option<&str>),
        to: (Option<&str>, Option<&str>),
        ok: bool,
    ) {
        let fits = |p: PodRef, pat: (Option<&str>, Option<&str>)| {
            pat.0.is_none_or(|n| n == p.0) && pat.1.is_none_or(|n| n == p.1)
        };
        for f in all_pods() {
            for t in all_pods() {
                if fits(f, from) && fits(t, to) {
                    self.set(f, t, ok);
                }
            }
        }
    }

    fn all_ingress(&mut self, to: PodRef, ok: bool) {
        self.peer((None, None), (Some(to.0), Some(to.1)), ok);
    }

    fn all_egress(&mut self, from: PodRef, ok: bool) {
        self.peer((Some(from.0), Some(from.1)), (None, None), ok);
    }

    /// Pairs that differ from `want`, loopback left out.
    fn diff(&self, want: &Reach) -> Vec<String> {
        self.table
            .iter()
            .filter(|((f, t), ok)| f != t && want.table[&(f.clone(), t.clone())] != **ok)
            .map(|((f, t), ok)| format!("  {f} -> {t}: {ok}"))
            .collect()
    }
}

const TCP: Protocol = Protocol::Tcp;
const UDP: Protocol = Protocol::Udp;

fn ns_is(ns: &str) -> Value {
    json!({"matchLabels": {"kubernetes.io/metadata.name": ns}})
}

#[test]
fn should_support_a_default_deny_ingress_policy() {
    let mut m = Model::new();
    m.apply(
        "x",
        "deny-ingress",
        json!({"podSelector": {}, "ingress": []}),
    );
    let mut want = Reach::new(true);
    want.peer((None, None), (Some("x"), None), false);
    m.check(80, TCP, &want);
    m.check(80, UDP, &want);
}

#[test]
fn should_support_a_default_deny_all_policy() {
    let mut m = Model::new();
    m.apply(
        "x",
        "deny-all",
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
    );
    let mut want = Reach::new(true);
    want.peer((None, None), (Some("x"), None), false);
    want.peer((Some("x"), None), (None, None), false);
    m.check(80, TCP, &want);
}

#[test]
fn should_enforce_policy_to_allow_traffic_from_pods_within_server_namespace_based_on_pod_selector()
{
    let mut m = Model::new();
    m.apply(
        "x",
        "x-a-allows-x-b",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
    );
    let mut want = Reach::new(true);
    want.all_ingress(("x", "a"), false);
    want.set(("x", "b"), ("x", "a"), true);
    m.check(80, TCP, &want);
}

#[test]
fn should_enforce_policy_to_allow_ingress_traffic_for_a_target() {
    let mut m = Model::new();
    m.apply("x", "deny-all", json!({"podSelector": {}, "ingress": []}));
    m.apply(
        "x",
        "allow-all-to-a",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{"podSelector": {}, "namespaceSelector": {}}]}]}),
    );
    let mut want = Reach::new(true);
    want.all_ingress(("x", "b"), false);
    want.all_ingress(("x", "c"), false);
    m.check(80, TCP, &want);
}

#[test]
fn should_enforce_policy_to_allow_traffic_only_from_a_different_namespace_based_on_namespace_selector(
) {
    let mut m = Model::new();
    m.apply(
        "x",
        "allow-client-a-via-ns-selector",
        json!({
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{"namespaceSelector": ns_is("y")}]}]}),
    );
    let mut want = Reach::new(true);
    want.peer((Some("x"), None), (Some("x"), Some("a")), false);
    want.peer((Some("z"), None), (Some("x"), Some("a")), false);
    m.check(80, TCP, &want);
}

#[test]
fn should_enforce_policy_based_on_namespace_selector_with_match_expressions() {
    let mut m = Model::new();
    m.apply(
        "x",
        "allow-ns-y-match-selector",
        json!({
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["y"]}]}}]}]}),
    );
    let mut want = Reach::new(true);
    want.peer((Some("x"), None), (Some("x"), Some("a")), false);
    want.peer((Some("z"), None), (Some("x"), Some("a")), false);
    m.check(80, TCP, &want);
}

#[test]
fn should_enforce_policy_based_on_pod_selector_or_namespace_selector() {
    let mut m = Model::new();
    m.apply(
        "x",
        "allow-ns-y-match-selector",
        json!({
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [
            {"namespaceSelector": {"matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["x"]}]}},
            {"podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
    );
    let mut want = Reach::new(true);
    want.set(("x", "c"), ("x", "a"), false);
    m.check(80, TCP, &want);
}

#[test]
fn should_enforce_policy_based_on_pod_selector_and_namespace_selector() {
    let mut m = Model::new();
    m.apply(
        "x",
        "allow-ns-y-podselector-and-nsselector",
        json!({
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{
            "namespaceSelector": {"matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["x"]}]},
            "podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
    );
    let mut want = Reach::new(true);
    want.all_ingress(("x", "a"), false);
    want.set(("y", "b"), ("x", "a"), true);
    want.set(("z", "b"), ("x", "a"), true);
    m.check(80, TCP, &want);
}

#[test]
fn should_enforce_policy_based_on_multiple_pod_selectors_and_namespace_selectors() {
    let mut m = Model::new();
    m.apply(
        "x",
        "allow-ns-y-z-pod-b-c",
        json!({
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{
            "namespaceSelector": {"matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["x"]}]},
            "podSelector": {"matchExpressions": [
                {"key": "pod", "operator": "In", "values": ["b", "c"]}]}}]}]}),
    );
    let mut want = Reach::new(true);
    want.peer((Some("x"), None), (Some("x"), Some("a")), false);
    want.peer((None, Some("a")), (Some("x"), Some("a")), false);
    m.check(80, TCP, &want);
}

#[test]
fn should_enforce_policy_based_on_ports() {
    let mut m = Model::new();
    m.apply(
        "x",
        "allow-client-a-via-ns-selector",
        json!({
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{"namespaceSelector": ns_is("y")}],
                     "ports": [{"port": 81, "protocol": "TCP"}]}]}),
    );
    let mut want81 = Reach::new(true);
    want81.peer((Some("x"), None), (Some("x"), Some("a")), false);
    want81.peer((Some("z"), None), (Some("x"), Some("a")), false);
    m.check(81, TCP, &want81);
    let mut deny = Reach::new(true);
    deny.all_ingress(("x", "a"), false);
    m.check(80, TCP, &deny);
    m.check(81, UDP, &deny);
}

#[test]
fn should_enforce_multiple_stacked_policies_with_overlapping_pod_selectors() {
    let mut m = Model::new();
    let rule = |port: u16| {
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{"namespaceSelector": ns_is("y")}],
                     "ports": [{"port": port, "protocol": "TCP"}]}]})
    };
    m.apply("x", "allow-client-a-via-ns-selector", rule(81));
    let mut allow = Reach::new(true);
    allow.peer((Some("x"), None), (Some("x"), Some("a")), false);
    allow.peer((Some("z"), None), (Some("x"), Some("a")), false);
    let mut deny = Reach::new(true);
    deny.all_ingress(("x", "a"), false);
    m.check(81, TCP, &allow);
    m.check(80, TCP, &deny);
    m.apply("x", "allow-client-a-via-ns-selector-80", rule(80));
    m.check(80, TCP, &allow);
    m.check(81, TCP, &allow);
}

#[test]
fn should_allow_ingress_access_on_one_named_port() {
    let mut m = Model::new();
    m.apply(
        "x",
        "allow-all",
        json!({"podSelector": {},
        "ingress": [{"ports": [{"port": "serve-81-tcp"}]}]}),
    );
    m.check(81, TCP, &Reach::new(true));
    let mut deny = Reach::new(true);
    deny.peer((None, None), (Some("x"), None), false);
    m.check(80, TCP, &deny);
    // serve-81-tcp names a TCP port: UDP 81 is not allowed by it.
    m.check(81, UDP, &deny);
}

#[test]
fn should_allow_ingress_access_from_namespace_on_one_named_port() {
    let mut m = Model::new();
    m.apply(
        "x",
        "allow-client-a-via-ns-selector-80",
        json!({
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{"namespaceSelector": ns_is("y")}],
                     "ports": [{"port": "serve-80-tcp", "protocol": "TCP"}]}]}),
    );
    let mut want = Reach::new(true);
    want.peer((Some("x"), None), (Some("x"), Some("a")), false);
    want.peer((Some("z"), None), (Some("x"), Some("a")), false);
    m.check(80, TCP, &want);
    let mut deny = Reach::new(true);
    deny.all_ingress(("x", "a"), false);
    m.check(81, TCP, &deny);
}

#[test]
fn should_allow_egress_access_on_one_named_port() {
    let mut m = Model::new();
    m.apply(
        "x",
        "allow-egress",
        json!({"podSelector": {},
        "egress": [{"ports": [{"port": "serve-80-tcp"}]}], "policyTypes": ["Egress"]}),
    );
    m.check(80, TCP, &Reach::new(true));
    let mut deny = Reach::new(true);
    deny.peer((Some("x"), None), (None, None), false);
    m.check(81, TCP, &deny);
}

#[test]
fn a_named_egress_port_resolves_on_each_destination_pod() {
    // y/b names its port 81 "web", every other pod names nothing "web": egress to
    // "web" reaches y/b on 81 and no one on 80.
    let mut m = Model::new();
    let mut yb = model_pod("y", "b", &[]);
    yb.named_ports.push(NamedPort {
        name: "web".into(),
        protocol: TCP,
        port: 81,
    });
    m.view.upsert_pod(yb);
    m.apply(
        "x",
        "egress-web",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
        "egress": [{"ports": [{"port": "web"}]}], "policyTypes": ["Egress"]}),
    );
    let mut want81 = Reach::new(true);
    want81.all_egress(("x", "a"), false);
    want81.set(("x", "a"), ("y", "b"), true);
    m.check(81, TCP, &want81);
    let mut want80 = Reach::new(true);
    want80.all_egress(("x", "a"), false);
    m.check(80, TCP, &want80);
}

#[test]
fn a_named_ingress_port_resolves_on_the_selected_pod_itself() {
    // x/a names 80 "web", x/b names 81 "web": one policy on both allows 80 into x/a
    // and 81 into x/b, and the two pods get different classes.
    let mut m = Model::new();
    for (pod, port) in [("a", 80), ("b", 81)] {
        let mut p = model_pod("x", pod, &[]);
        p.named_ports.push(NamedPort {
            name: "web".into(),
            protocol: TCP,
            port,
        });
        m.view.upsert_pod(p);
    }
    m.apply(
        "x",
        "web",
        json!({"podSelector": {"matchExpressions": [
        {"key": "pod", "operator": "In", "values": ["a", "b"]}]},
        "ingress": [{"ports": [{"port": "web"}]}]}),
    );
    let mut want80 = Reach::new(true);
    want80.all_ingress(("x", "b"), false);
    m.check(80, TCP, &want80);
    let mut want81 = Reach::new(true);
    want81.all_ingress(("x", "a"), false);
    m.check(81, TCP, &want81);
    let desired = m.view.desired(&m.local);
    assert_ne!(desired.pods["fjxa"].ingress, desired.pods["fjxb"].ingress);
}

#[test]
fn should_enforce_updated_policy() {
    let mut m = Model::new();
    m.apply(
        "x",
        "allow-all-mutate-to-deny-all",
        json!({"podSelector": {}, "ingress": [{}]}),
    );
    m.check(81, TCP, &Reach::new(true));
    m.apply(
        "x",
        "allow-all-mutate-to-deny-all",
        json!({"podSelector": {}, "ingress": []}),
    );
    let mut deny = Reach::new(true);
    deny.peer((None, None), (Some("x"), None), false);
    m.check(81, TCP, &deny);
}

#[test]
fn should_allow_ingress_access_from_updated_namespace() {
    let mut m = Model::new();
    m.apply(
        "x",
        "allow-client-a-via-ns-selector",
        json!({
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns2": "updated"}}}]}]}),
    );
    let mut want = Reach::new(true);
    want.all_ingress(("x", "a"), false);
    m.check(80, TCP, &want);
    m.label_namespace("y", &[("ns2", "updated")]);
    want.peer((Some("y"), None), (None, None), true);
    m.check(80, TCP, &want);
}

#[test]
fn should_allow_ingress_access_from_updated_pod() {
    let mut m = Model::new();
    m.apply("x", "allow-client-a-via-pod-selector", json!({
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b", "pod2": "updated"}}}]}]}));
    let mut want = Reach::new(true);
    want.all_ingress(("x", "a"), false);
    m.check(80, TCP, &want);
    m.label_pod("x", "b", &[("pod2", "updated")]);
    want.set(("x", "b"), ("x", "a"), true);
    m.check(80, TCP, &want);
}

#[test]
fn should_deny_ingress_from_pods_on_other_namespaces() {
    let mut m = Model::new();
    m.apply(
        "x",
        "deny-empty-policy",
        json!({"podSelector": {},
        "ingress": [{"from": [{"podSelector": {}}]}]}),
    );
    let mut want = Reach::new(true);
    want.peer((Some("y"), None), (Some("x"), None), false);
    want.peer((Some("z"), None), (Some("x"), None), false);
    m.check(80, TCP, &want);
}

#[test]
fn should_deny_ingress_access_to_updated_pod() {
    let mut m = Model::new();
    m.apply(
        "x",
        "deny-ingress-via-label-selector",
        json!({
        "podSelector": {"matchLabels": {"target": "isolated"}}, "ingress": []}),
    );
    m.check(80, TCP, &Reach::new(true));
    m.label_pod("x", "a", &[("target", "isolated")]);
    let mut want = Reach::new(true);
    want.all_ingress(("x", "a"), false);
    m.check(80, TCP, &want);
}

#[test]
fn should_deny_egress_from_pods_based_on_pod_selector() {
    let mut m = Model::new();
    m.apply(
        "x",
        "deny-egress-pod-a",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
        "policyTypes": ["Egress"]}),
    );
    let mut want = Reach::new(true);
    want.all_egress(("x", "a"), false);
    m.check(80, TCP, &want);
}

#[test]
fn should_work_with_ingress_egress_specified_together() {
    let mut m = Model::new();
    m.apply(
        "x",
        "allow-client-a-via-pod-selector",
        json!({
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}],
        "egress": [{"ports": [{"port": 80}]}],
        "policyTypes": ["Egress", "Ingress"]}),
    );
    let mut want80 = Reach::new(true);
    want80.all_ingress(("x", "a"), false);
    want80.set(("x", "b"), ("x", "a"), true);
    m.check(80, TCP, &want80);
    let mut want81 = want80.clone();
    want81.all_egress(("x", "a"), false);
    m.check(81, TCP, &want81);
}

#[test]
fn should_support_denying_of_egress_traffic_on_the_client_side() {
    let mut m = Model::new();
    m.apply(
        "x",
        "allow-to-ns-y-pod-a",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
        "egress": [{"to": [{"namespaceSelector": ns_is("y"),
                            "podSelector": {"matchLabels": {"pod": "a"}}}]}],
        "policyTypes": ["Egress"]}),
    );
    let from_xa = json!([{"namespaceSelector": ns_is("x"),
                          "podSelector": {"matchLabels": {"pod": "a"}}}]);
    for (name, pod) in [
        ("allow-from-xa-on-ya-match-selector", "a"),
        ("allow-from-xa-on-yb-match-selector", "b"),
    ] {
        m.apply(
            "y",
            name,
            json!({"podSelector": {"matchLabels": {"pod": pod}},
            "ingress": [{"from": from_xa.clone()}]}),
        );
    }
    let mut want = Reach::new(true);
    want.all_egress(("x", "a"), false);
    want.all_ingress(("y", "a"), false);
    want.set(("x", "a"), ("y", "a"), true);
    want.all_ingress(("y", "b"), false);
    m.check(80, TCP, &want);
}

#[test]
fn should_enforce_ingress_policy_allowing_any_port_traffic_to_a_server_on_a_specific_protocol() {
    let mut m = Model::new();
    m.apply(
        "x",
        "allow-ingress-by-proto",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"ports": [{"protocol": "TCP"}]}]}),
    );
    m.check(80, TCP, &Reach::new(true));
    m.check(81, TCP, &Reach::new(true));
    let mut want = Reach::new(true);
    want.all_ingress(("x", "a"), false);
    m.check(80, UDP, &want);
}

#[test]
fn should_enforce_multiple_ingress_policies_with_ingress_allow_all_policy_taking_precedence() {
    let mut m = Model::new();
    m.apply(
        "x",
        "allow-ingress-port-80",
        json!({"podSelector": {},
        "ingress": [{"ports": [{"port": 80}]}]}),
    );
    let mut want = Reach::new(true);
    want.peer((None, None), (Some("x"), None), false);
    m.check(81, TCP, &want);
    m.apply(
        "x",
        "allow-ingress",
        json!({"podSelector": {}, "ingress": [{}]}),
    );
    m.check(81, TCP, &Reach::new(true));
    let desired = m.view.desired(&m.local);
    let class = desired.pods["fjxa"].ingress.as_ref().unwrap();
    assert!(
        desired.classes[class].any,
        "allow-all swallows the narrower rules"
    );
}

#[test]
fn should_enforce_multiple_egress_policies_with_egress_allow_all_policy_taking_precedence() {
    let mut m = Model::new();
    m.apply(
        "x",
        "allow-egress-port-80",
        json!({"podSelector": {},
        "egress": [{"ports": [{"port": 80}]}], "policyTypes": ["Egress"]}),
    );
    let mut want = Reach::new(true);
    want.peer((Some("x"), None), (None, None), false);
    m.check(81, TCP, &want);
    m.apply(
        "x",
        "allow-egress",
        json!({"podSelector": {}, "egress": [{}],
        "policyTypes": ["Egress"]}),
    );
    m.check(81, TCP, &Reach::new(true));
}

#[test]
fn should_stop_enforcing_policies_after_they_are_deleted() {
    let mut m = Model::new();
    m.apply(
        "x",
        "deny-all",
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
    );
    let mut want = Reach::new(true);
    want.peer((Some("x"), None), (None, None), false);
    want.peer((None, None), (Some("x"), None), false);
    m.check(80, TCP, &want);
    m.delete("x", "deny-all");
    m.check(80, TCP, &Reach::new(true));
    let desired = m.view.desired(&m.local);
    assert!(desired.classes.is_empty());
}

#[test]
fn should_allow_egress_access_to_server_in_cidr_block() {
    let mut m = Model::new();
    m.apply(
        "x",
        "allow-client-a-via-cidr-egress-rule",
        json!({
        "podSelector": {"matchLabels": {"pod": "a"}},
        "egress": [{"to": [{"ipBlock": {"cidr": format!("{}/32", pod_ipv4("y", "b"))}},
                           {"ipBlock": {"cidr": format!("{}/128", pod_ipv6("y", "b"))}}]}],
        "policyTypes": ["Egress"]}),
    );
    let mut want = Reach::new(true);
    want.all_egress(("x", "a"), false);
    want.set(("x", "a"), ("y", "b"), true);
    m.check(80, TCP, &want);
}

#[test]
fn should_enforce_except_clause_while_egress_access_to_server_in_cidr_block() {
    let mut m = Model::new();
    m.apply("x", "allow-client-a-via-cidr-egress-rule", json!({
        "podSelector": {"matchLabels": {"pod": "a"}},
        "egress": [{"to": [
            {"ipBlock": {"cidr": "10.244.0.0/24", "except": [format!("{}/32", pod_ipv4("x", "b"))]}},
            {"ipBlock": {"cidr": "fd00:244::/64", "except": [format!("{}/128", pod_ipv6("x", "b"))]}}
        ]}],
        "policyTypes": ["Egress"]}));
    let mut want = Reach::new(true);
    want.set(("x", "a"), ("x", "b"), false);
    m.check(80, TCP, &want);
}

#[test]
fn should_ensure_an_ip_overlapping_both_ipblock_cidr_and_ipblock_except_is_allowed() {
    let mut m = Model::new();
    let xb4 = format!("{}/32", pod_ipv4("x", "b"));
    let xb6 = format!("{}/128", pod_ipv6("x", "b"));
    m.apply(
        "x",
        "allow-client-a-via-cidr-egress-rule",
        json!({
        "podSelector": {"matchLabels": {"pod": "a"}},
        "egress": [{"to": [
            {"ipBlock": {"cidr": "10.244.0.0/24", "except": [xb4]}},
            {"ipBlock": {"cidr": "fd00:244::/64", "except": [xb6]}}]}],
        "policyTypes": ["Egress"]}),
    );
    let mut want = Reach::new(true);
    want.set(("x", "a"), ("x", "b"), false);
    m.check(80, TCP, &want);
    // Upstream replaces the policy (same name) with one that allows x/b alone.
    m.apply(
        "x",
        "allow-client-a-via-cidr-egress-rule",
        json!({
        "podSelector": {"matchLabels": {"pod": "a"}},
        "egress": [{"to": [{"ipBlock": {"cidr": xb4}}, {"ipBlock": {"cidr": xb6}}]}],
        "policyTypes": ["Egress"]}),
    );
    let mut want = Reach::new(true);
    want.all_egress(("x", "a"), false);
    want.set(("x", "a"), ("x", "b"), true);
    m.check(80, TCP, &want);
}

#[test]
fn an_ip_in_one_policys_except_and_another_policys_cidr_is_allowed() {
    let mut m = Model::new();
    m.apply(
        "x",
        "wide",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"ipBlock": {"cidr": "10.244.0.0/24",
                                        "except": [format!("{}/32", pod_ipv4("x", "b"))]}}]}]}),
    );
    m.apply(
        "x",
        "narrow",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"ipBlock": {"cidr": format!("{}/32", pod_ipv4("x", "b"))}}]}]}),
    );
    let got = m.probe(80, TCP, 4);
    assert!(
        got.get(("x", "a"), ("x", "b")),
        "the union of policies allows x/b"
    );
}

#[test]
fn should_enforce_policies_to_check_ingress_and_egress_policies_can_be_controlled_independently() {
    let mut m = Model::new();
    m.apply(
        "x",
        "allow-egress-for-target",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
        "egress": [{}], "policyTypes": ["Egress"]}),
    );
    m.check(80, TCP, &Reach::new(true));
    m.apply(
        "x",
        "deny-ingress-via-label-selector",
        json!({
        "podSelector": {"matchLabels": {"pod": "a"}}, "ingress": []}),
    );
    let mut want = Reach::new(true);
    want.all_ingress(("x", "a"), false);
    m.check(80, TCP, &want);
}

#[test]
fn should_not_mistakenly_treat_protocol_sctp_as_protocol_tcp() {
    let mut m = Model::new();
    m.apply(
        "x",
        "deny-ingress",
        json!({"podSelector": {}, "ingress": []}),
    );
    m.apply(
        "x",
        "allow-only-sctp-ingress-on-port-81",
        json!({
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"ports": [{"port": 81, "protocol": "SCTP"}]}]}),
    );
    let mut want = Reach::new(true);
    want.peer((None, None), (Some("x"), None), false);
    m.check(81, TCP, &want);
    // The SCTP rule is translated, not dropped: SCTP 81 into x/a is allowed.
    m.check(81, Protocol::Sctp, &{
        let mut w = want.clone();
        w.all_ingress(("x", "a"), true);
        w
    });
}

#[test]
fn should_properly_isolate_pods_that_are_selected_by_a_policy_allowing_sctp() {
    let mut m = Model::new();
    m.apply(
        "x",
        "allow-only-sctp-ingress-on-port-80",
        json!({
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"ports": [{"port": 80, "protocol": "SCTP"}]}]}),
    );
    let mut want = Reach::new(true);
    want.all_ingress(("x", "a"), false);
    m.check(81, TCP, &want);
    m.check(80, TCP, &want);
}

#[test]
fn should_not_allow_access_by_tcp_when_a_policy_specifies_only_udp() {
    let mut m = Model::new();
    m.apply(
        "x",
        "allow-only-udp-ingress-on-port-81",
        json!({
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"ports": [{"port": 81, "protocol": "UDP"}]}]}),
    );
    let mut want = Reach::new(true);
    want.all_ingress(("x", "a"), false);
    m.check(81, TCP, &want);
    m.check(81, UDP, &Reach::new(true));
}

#[test]
fn should_enforce_policy_based_on_namespace_selector_with_match_expressions_using_default_ns_label()
{
    let mut m = Model::new();
    m.apply(
        "x",
        "allow-ns-y-match-selector-for-immutable-ns-label",
        json!({
        "podSelector": {"matchLabels": {"pod": "a"}},
        "egress": [{"to": [{"namespaceSelector": {"matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["y"]}]}}]}],
        "policyTypes": ["Egress"]}),
    );
    let mut want = Reach::new(true);
    want.peer((Some("x"), Some("a")), (Some("y"), None), false);
    m.check(80, TCP, &want);
}

#[test]
fn end_port_allows_the_whole_range_and_nothing_beyond() {
    let mut m = Model::new();
    m.apply(
        "x",
        "range",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{"namespaceSelector": ns_is("y")}],
                     "ports": [{"port": 79, "endPort": 80}]}]}),
    );
    let mut want = Reach::new(true);
    want.all_ingress(("x", "a"), false);
    want.peer((Some("y"), None), (Some("x"), Some("a")), true);
    m.check(80, TCP, &want);
    let mut deny = Reach::new(true);
    deny.all_ingress(("x", "a"), false);
    m.check(81, TCP, &deny);
}

#[test]
fn an_ip_block_matches_pod_addresses_too() {
    let mut m = Model::new();
    m.apply(
        "x",
        "from-y-b-by-address",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{"ipBlock": {"cidr": format!("{}/32", pod_ipv4("y", "b"))}}]}]}),
    );
    let got = m.probe(80, TCP, 4);
    assert!(got.get(("y", "b"), ("x", "a")));
    assert!(!got.get(("y", "a"), ("x", "a")));
    // The block names an IPv4 address only: over IPv6 y/b is not allowed.
    assert!(!m.probe(80, TCP, 6).get(("y", "b"), ("x", "a")));
}

#[test]
fn a_bad_policy_is_reported_and_the_others_keep_working() {
    let mut m = Model::new();
    m.apply(
        "x",
        "deny-ingress",
        json!({"podSelector": {}, "ingress": []}),
    );
    let bad: NetworkPolicy = serde_json::from_value(json!({
        "metadata": {"namespace": "x", "name": "broken"},
        "spec": {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]}
    }))
    .unwrap();
    let err = m.view.upsert_policy(&bad).unwrap_err().to_string();
    assert!(err.starts_with("NetworkPolicy x/broken: "), "{err}");
    let rejected: Vec<_> = m.view.rejected().map(|(k, _)| k.to_string()).collect();
    assert_eq!(rejected, ["x/broken"]);
    let mut want = Reach::new(true);
    want.peer((None, None), (Some("x"), None), false);
    m.check(80, TCP, &want);
}

#[test]
fn a_bad_update_keeps_the_version_in_force() {
    let mut m = Model::new();
    m.apply("x", "p", json!({"podSelector": {}, "ingress": []}));
    let bad: NetworkPolicy = serde_json::from_value(json!({
        "metadata": {"namespace": "x", "name": "p"},
        "spec": {"podSelector": {"matchExpressions": [{"key": "a", "operator": "Bogus"}]}}
    }))
    .unwrap();
    assert!(m.view.upsert_policy(&bad).is_err());
    let mut want = Reach::new(true);
    want.peer((None, None), (Some("x"), None), false);
    m.check(80, TCP, &want);
    // A good version clears the report.
    m.apply("x", "p", json!({"podSelector": {}, "ingress": [{}]}));
    assert_eq!(m.view.rejected().count(), 0);
    m.check(80, TCP, &Reach::new(true));
}

#[test]
fn pods_selected_by_the_same_policies_share_one_class() {
    let mut m = Model::new();
    m.apply(
        "x",
        "deny-ingress",
        json!({"podSelector": {}, "ingress": []}),
    );
    let desired = m.view.desired(&m.local);
    let classes: BTreeSet<_> = ["fjxa", "fjxb", "fjxc"]
        .iter()
        .map(|i| desired.pods[*i].ingress.clone().unwrap())
        .collect();
    assert_eq!(classes.len(), 1);
    assert_eq!(desired.classes.len(), 1);
    assert!(desired.pods["fjya"].ingress.is_none());
}

#[test]
fn a_local_pod_the_api_has_not_shown_is_waiting() {
    let m = Model::new();
    let mut local = m.local.clone();
    local.push(LocalPod {
        key: ObjectKey::new("x", "new"),
        interface: "fjnew".into(),
        ips: vec!["10.244.0.99".parse().unwrap()],
    });
    let desired = m.view.desired(&local);
    assert!(!desired.pods.contains_key("fjnew"));
    assert_eq!(desired.waiting.len(), 1);
}

#[test]
fn host_network_and_finished_pods_are_never_peers() {
    let mut m = Model::new();
    let mut host = model_pod("y", "b", &[]);
    host.host_network = true;
    m.view.upsert_pod(host);
    let mut done = model_pod("y", "c", &[]);
    done.terminal = true;
    m.view.upsert_pod(done);
    m.apply(
        "x",
        "from-y",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{"namespaceSelector": ns_is("y")}]}]}),
    );
    let desired = m.view.desired(&m.local);
    let class = desired.pods["fjxa"].ingress.as_ref().unwrap();
    let peers = &desired.classes[class].peers;
    assert!(peers.contains(pod_ipv4("y", "a")));
    assert!(!peers.contains(pod_ipv4("y", "b")));
    assert!(!peers.contains(pod_ipv4("y", "c")));
}

#[test]
fn unmatched_named_ports_are_reported_per_policy() {
    let mut m = Model::new();
    m.apply(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": "nope"}]}]}),
    );
    assert_eq!(
        m.view.unmatched_named_ports(),
        [(ObjectKey::new("x", "p"), "TCP port \"nope\"".to_string())]
    );
}
