//! fjord-policy's nftables shell against a real kernel: a throwaway node namespace with
//! pods on `fj…` veths wired as the plugin wires them, an "outside" host beyond an
//! uplink, real TCP and UDP packets (dual stack), and table `inet fjord` programmed
//! through `PolicyTable` (never the root namespace's ruleset).
//!
//! - rules accept and drop real connections per policy, replies pass, the node reaches
//!   an isolated pod (kubelet probes);
//! - an `fj…` interface the layer does not know is dropped both ways until its rules are in;
//! - egress NAT: a server outside sees the node's address; with NAT off the pod's; pod to
//!   pod is never NATed;
//! - a hand-deleted rule is repaired by reconcile; a restarted shell adopts the table;
//! - policy and NAT off: no table at all.
//!
//! Needs root, iproute2, nftables and python3 (conformance/scripts/install-test-deps.sh).

use fjord_conformance::Netns;
use fjord_policy::model::{NamedPort, NamespaceInfo, ObjectKey, PodInfo};
use fjord_policy::nat::NatConfig;
use fjord_policy::nft::{Nft, PolicyTable};
use fjord_policy::ranges::Protocol;
use fjord_policy::ruleset::desired_table;
use fjord_policy::translate::{ClusterView, LocalPod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::json;
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const NODE_V4: &str = "198.18.0.254";
const NODE_V6: &str = "fd00:198::fe";
const OUTSIDE_V4: &str = "198.18.0.1";
const OUTSIDE_V6: &str = "fd00:198::1";

/// Echo servers on TCP and UDP 80 and 81, both families: each answers with the address
/// it saw the client come from.
const SERVER: &str = r#"
import socket, threading
def serve(kind, port):
    s = socket.socket(socket.AF_INET6, kind)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", port))
    if kind == socket.SOCK_STREAM:
        s.listen(64)
        while True:
            c, a = s.accept()
            c.sendall((a[0] + "\n").encode())
            c.close()
    while True:
        d, a = s.recvfrom(100)
        s.sendto((a[0] + "\n").encode(), a)
for port in (80, 81):
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        threading.Thread(target=serve, args=(kind, port), daemon=True).start()
threading.Event().wait()
"#;

/// One try: prints what the server saw as our address, or exits 1 (1 s timeout).
const CLIENT: &str = r#"
import socket, sys
proto, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
s.settimeout(1.0)
try:
    if proto == "tcp":
        s.connect((addr, port))
    else:
        s.sendto(b"x", (addr, port))
    print(s.recv(100).decode().strip().removeprefix("::ffff:"))
except OSError:
    sys.exit(1)
"#;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(ns: &Netns) -> Server {
    let child = Command::new("ip")
        .args(["netns", "exec", ns.name(), "python3", "-c", SERVER])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the echo server (python3: run install-test-deps.sh)");
    Server(child)
}

/// A pod: its namespace, host interface and addresses.
struct TestPod {
    netns: Netns,
    interface: String,
    v4: IpAddr,
    v6: IpAddr,
    _server: Server,
}

/// The node, its pods and the outside host.
struct Node {
    netns: Netns,
    _outside: Netns,
    pods: Vec<TestPod>,
    _outside_server: Server,
}

fn attach(node: &Netns, n: u8) -> TestPod {
    let netns = Netns::new("pp");
    let interface = format!("fj{n:011x}");
    node.ip(&[
        "link",
        "add",
        &interface,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        netns.name(),
    ]);
    node.ip(&["link", "set", &interface, "up"]);
    node.ip(&["addr", "add", "fe80::1/64", "dev", &interface, "nodad"]);
    let v4: IpAddr = format!("10.244.0.{n}").parse().unwrap();
    let v6: IpAddr = format!("fd00:244::{n:x}").parse().unwrap();
    node.ip(&[
        "route",
        "add",
        &format!("{v4}/32"),
        "dev",
        &interface,
        "scope",
        "link",
    ]);
    node.ip(&[
        "-6",
        "route",
        "add",
        &format!("{v6}/128"),
        "dev",
        &interface,
    ]);
    let mac = node.expect_link(&interface).mac;
    netns.ip(&["link", "set", "eth0", "up"]);
    netns.ip(&["addr", "add", &format!("{v4}/32"), "dev", "eth0"]);
    netns.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{v6}/128"),
        "dev",
        "eth0",
        "nodad",
    ]);
    netns.ip(&[
        "route",
        "add",
        "169.254.1.1",
        "dev",
        "eth0",
        "scope",
        "link",
    ]);
    netns.ip(&[
        "route",
        "add",
        "default",
        "via",
        "169.254.1.1",
        "dev",
        "eth0",
    ]);
    netns.ip(&[
        "neigh",
        "replace",
        "169.254.1.1",
        "lladdr",
        &mac,
        "dev",
        "eth0",
        "nud",
        "permanent",
    ]);
    netns.ip(&[
        "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0",
    ]);
    let server = serve(&netns);
    TestPod {
        netns,
        interface,
        v4,
        v6,
        _server: server,
    }
}

impl Node {
    /// A node with `pods` pods (10.244.0.11, .12, ...) and an outside host on an
    /// uplink (198.18.0.0/24, fd00:198::/64). `route_pods_back`: the outside host routes
    /// the pod range to the node (so that un-NATed replies can come back).
    fn new(pods: u8, route_pods_back: bool) -> Node {
        let netns = Netns::new("pn");
        for key in ["net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"] {
            netns.run("sysctl", &["-qw", &format!("{key}=1")]);
        }
        let outside = Netns::new("po");
        netns.ip(&[
            "link",
            "add",
            "up0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            outside.name(),
        ]);
        netns.ip(&["link", "set", "up0", "up"]);
        netns.ip(&["addr", "add", &format!("{NODE_V4}/24"), "dev", "up0"]);
        netns.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{NODE_V6}/64"),
            "dev",
            "up0",
            "nodad",
        ]);
        outside.ip(&["link", "set", "eth0", "up"]);
        outside.ip(&["addr", "add", &format!("{OUTSIDE_V4}/24"), "dev", "eth0"]);
        outside.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{OUTSIDE_V6}/64"),
            "dev",
            "eth0",
            "nodad",
        ]);
        if route_pods_back {
            outside.ip(&["route", "add", "10.244.0.0/24", "via", NODE_V4]);
            outside.ip(&["-6", "route", "add", "fd00:244::/64", "via", NODE_V6]);
        }
        let outside_server = serve(&outside);
        let pods = (0..pods).map(|i| attach(&netns, 11 + i)).collect();
        let node = Node {
            netns,
            _outside: outside,
            pods,
            _outside_server: outside_server,
        };
        // Servers up and the datapath working before any rule.
        for pod in &node.pods {
            let ok = (0..50).any(|_| {
                let up = node.reach_from_node(pod.v4, "tcp", 80).is_some();
                if !up {
                    std::thread::sleep(Duration::from_millis(100));
                }
                up
            });
            assert!(ok, "pod {} does not answer before any rule", pod.v4);
        }
        node
    }

    fn nft(&self) -> Nft {
        Nft::with_command(["ip", "netns", "exec", self.netns.name(), "nft"])
    }

    fn local(&self, keys: &[(&str, &str)]) -> Vec<LocalPod> {
        keys.iter()
            .zip(&self.pods)
            .map(|((ns, name), pod)| LocalPod {
                key: ObjectKey::new(*ns, *name),
                interface: pod.interface.clone(),
                ips: vec![pod.v4, pod.v6],
            })
            .collect()
    }

    /// What the server at `to` saw as the client's address, `None` if it did not answer.
    fn reach(&self, from: &Netns, to: IpAddr, proto: &str, port: u16) -> Option<String> {
        for _ in 0..2 {
            let out = from.run(
                "python3",
                &["-c", CLIENT, proto, &to.to_string(), &port.to_string()],
            );
            if out.status.success() {
                return Some(String::from_utf8_lossy(&out.stdout).trim().to_string());
            }
        }
        None
    }

    fn reach_from_node(&self, to: IpAddr, proto: &str, port: u16) -> Option<String> {
        self.reach(&self.netns, to, proto, port)
    }
}

/// The cluster view of the test pods: x/a, x/b, y/c, ... with labels `pod=<name>` and
/// the e2e model's named ports.
fn view(node: &Node, keys: &[(&str, &str)]) -> ClusterView {
    let mut view = ClusterView::new();
    for ns in ["x", "y"] {
        view.upsert_namespace(NamespaceInfo::new(ns, Default::default()));
    }
    for ((ns, name), pod) in keys.iter().zip(&node.pods) {
        view.upsert_pod(PodInfo {
            key: ObjectKey::new(*ns, *name),
            labels: [("pod".to_string(), name.to_string())].into(),
            ips: vec![pod.v4, pod.v6],
            named_ports: vec![NamedPort {
                name: "serve-80-tcp".into(),
                protocol: Protocol::Tcp,
                port: 80,
            }],
            host_network: false,
            terminal: false,
        });
    }
    view
}

fn policy(ns: &str, name: &str, spec: serde_json::Value) -> NetworkPolicy {
    serde_json::from_value(json!({"metadata": {"namespace": ns, "name": name}, "spec": spec}))
        .unwrap()
}

fn nat(on: bool) -> NatConfig {
    NatConfig {
        enabled: on,
        pools: vec![
            "10.244.0.0/16".parse().unwrap(),
            "fd00:244::/56".parse().unwrap(),
        ],
        node_addresses: vec![NODE_V4.parse().unwrap(), NODE_V6.parse().unwrap()],
        exempt: vec![],
    }
}

const PODS: [(&str, &str); 3] = [("x", "a"), ("x", "b"), ("y", "c")];

/// x/a: ingress from x/b on TCP 80 (by name) and UDP 81 only; egress denied entirely.
fn isolate_a(view: &mut ClusterView) {
    view.upsert_policy(&policy(
        "x",
        "a-in",
        json!({
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}],
                     "ports": [{"port": "serve-80-tcp"}, {"port": 81, "protocol": "UDP"}]}]}),
    ))
    .unwrap();
    view.upsert_policy(&policy(
        "x",
        "a-out",
        json!({
        "podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"]}),
    ))
    .unwrap();
}

#[test]
fn rules_accept_and_drop_real_tcp_and_udp_in_both_families_and_replies_pass() {
    let node = Node::new(3, false);
    let mut view = view(&node, &PODS);
    isolate_a(&mut view);
    let local = node.local(&PODS);
    let mut table = PolicyTable::new(node.nft());
    table
        .sync(&desired_table(Some(&view.desired(&local)), &nat(false)))
        .unwrap();
    let [a, b, c] = [&node.pods[0], &node.pods[1], &node.pods[2]];
    for (a_addr, b_addr, c_addr) in [(a.v4, b.v4, c.v4), (a.v6, b.v6, c.v6)] {
        let from =
            |p: &TestPod, to: IpAddr, proto: &str, port: u16| node.reach(&p.netns, to, proto, port);
        // Allowed: x/b to x/a on TCP 80 (the reply crosses x/a's egress: conntrack) and
        // UDP 81 (the echo is a reply too). The server sees x/b's own address.
        assert_eq!(
            from(b, a_addr, "tcp", 80),
            Some(b_addr.to_string()),
            "b -> a tcp 80"
        );
        assert_eq!(
            from(b, a_addr, "udp", 81),
            Some(b_addr.to_string()),
            "b -> a udp 81"
        );
        // Dropped: other ports and protocols, other pods, and x/a's own egress.
        assert_eq!(from(b, a_addr, "tcp", 81), None, "b -> a tcp 81");
        assert_eq!(from(b, a_addr, "udp", 80), None, "b -> a udp 80");
        assert_eq!(from(c, a_addr, "tcp", 80), None, "c -> a tcp 80");
        assert_eq!(
            from(a, b_addr, "tcp", 80),
            None,
            "a -> b (a's egress is denied)"
        );
        assert_eq!(
            from(a, c_addr, "udp", 80),
            None,
            "a -> c udp (a's egress is denied)"
        );
        // Not isolated: b and c reach each other.
        assert!(from(c, b_addr, "tcp", 81).is_some(), "c -> b");
        assert!(from(b, c_addr, "udp", 80).is_some(), "b -> c");
        // The node reaches the isolated pod (kubelet probes).
        assert!(
            node.reach_from_node(a_addr, "tcp", 81).is_some(),
            "node -> a"
        );
        // A pod reaches itself.
        assert!(from(a, a_addr, "tcp", 81).is_some(), "a -> a");
    }
}

#[test]
fn an_unknown_pod_interface_is_dropped_both_ways_until_its_rules_are_in() {
    let node = Node::new(3, true);
    let view = view(&node, &PODS);
    // x/a and x/b are known; the third interface (y/c) is not (its ADD just happened).
    let known = node.local(&PODS[..2]);
    let mut table = PolicyTable::new(node.nft());
    table
        .sync(&desired_table(Some(&view.desired(&known)), &nat(true)))
        .unwrap();
    let [a, b, c] = [&node.pods[0], &node.pods[1], &node.pods[2]];
    assert!(
        node.reach(&a.netns, b.v4, "tcp", 80).is_some(),
        "known pods are not isolated"
    );
    assert_eq!(
        node.reach(&a.netns, c.v4, "tcp", 80),
        None,
        "to the unknown pod"
    );
    assert_eq!(
        node.reach(&c.netns, a.v4, "tcp", 80),
        None,
        "from the unknown pod"
    );
    assert_eq!(
        node.reach(&c.netns, a.v6, "udp", 80),
        None,
        "from the unknown pod, v6"
    );
    let outside: IpAddr = OUTSIDE_V4.parse().unwrap();
    assert_eq!(
        node.reach(&c.netns, outside, "tcp", 80),
        None,
        "unknown pod to outside"
    );
    // Its rules are in: it is reachable.
    let all = node.local(&PODS);
    let report = table
        .sync(&desired_table(Some(&view.desired(&all)), &nat(true)))
        .unwrap();
    assert!(report.commands > 0 && !report.read_kernel);
    assert!(node.reach(&a.netns, c.v4, "tcp", 80).is_some());
    assert!(node.reach(&c.netns, a.v6, "udp", 80).is_some());
}

#[test]
fn egress_nat_shows_the_node_address_outside_and_never_inside() {
    let node = Node::new(2, true);
    let view = view(&node, &PODS[..2]);
    let local = node.local(&PODS[..2]);
    let mut table = PolicyTable::new(node.nft());
    let [a, b] = [&node.pods[0], &node.pods[1]];
    let outside_v4: IpAddr = OUTSIDE_V4.parse().unwrap();
    let outside_v6: IpAddr = OUTSIDE_V6.parse().unwrap();
    // NAT only (policy off): the outside server sees the node, in both families.
    table.sync(&desired_table(None, &nat(true))).unwrap();
    assert_eq!(
        node.reach(&a.netns, outside_v4, "tcp", 80).as_deref(),
        Some(NODE_V4)
    );
    assert_eq!(
        node.reach(&a.netns, outside_v6, "tcp", 80).as_deref(),
        Some(NODE_V6)
    );
    assert_eq!(
        node.reach(&a.netns, outside_v4, "udp", 81).as_deref(),
        Some(NODE_V4)
    );
    // Pod to pod keeps the pod's address.
    assert_eq!(
        node.reach(&a.netns, b.v4, "tcp", 80),
        Some(a.v4.to_string())
    );
    assert_eq!(
        node.reach(&a.netns, b.v6, "tcp", 80),
        Some(a.v6.to_string())
    );
    // With policy on as well, the same.
    table
        .sync(&desired_table(Some(&view.desired(&local)), &nat(true)))
        .unwrap();
    assert_eq!(
        node.reach(&a.netns, outside_v4, "tcp", 81).as_deref(),
        Some(NODE_V4)
    );
    // An exempt destination keeps the pod's address.
    let mut exempt = nat(true);
    exempt.exempt.push("198.18.0.0/24".parse().unwrap());
    table
        .sync(&desired_table(Some(&view.desired(&local)), &exempt))
        .unwrap();
    assert_eq!(
        node.reach(&a.netns, outside_v4, "tcp", 80),
        Some(a.v4.to_string())
    );
    assert_eq!(
        node.reach(&a.netns, outside_v6, "tcp", 80).as_deref(),
        Some(NODE_V6)
    );
    // NAT off: the pod's own address (the outside host routes the pool back).
    table
        .sync(&desired_table(Some(&view.desired(&local)), &nat(false)))
        .unwrap();
    assert_eq!(
        node.reach(&a.netns, outside_v4, "tcp", 80),
        Some(a.v4.to_string())
    );
    assert_eq!(
        node.reach(&a.netns, outside_v6, "udp", 80),
        Some(a.v6.to_string())
    );
}

#[test]
fn reconcile_repairs_a_hand_deleted_rule_and_a_restarted_shell_adopts_the_table() {
    let node = Node::new(3, false);
    let mut view = view(&node, &PODS);
    isolate_a(&mut view);
    let local = node.local(&PODS);
    let desired = desired_table(Some(&view.desired(&local)), &nat(true));
    let mut table = PolicyTable::new(node.nft());
    table.sync(&desired).unwrap();
    let [a, b] = [&node.pods[0], &node.pods[1]];
    assert!(node.reach(&b.netns, a.v4, "tcp", 80).is_some());
    // Delete by hand the rule that lets x/b in (the peers-on-ports lookup).
    let chain = format!("ingress_{}", a.interface);
    let listing = node
        .netns
        .run("nft", &["-a", "list", "chain", "inet", "fjord", &chain]);
    let text = String::from_utf8_lossy(&listing.stdout).to_string();
    let handle = text
        .lines()
        .find(|l| l.contains("ip saddr . meta l4proto . th dport"))
        .and_then(|l| l.rsplit("# handle ").next())
        .unwrap_or_else(|| panic!("the peer rule in {text}"))
        .trim()
        .to_string();
    let out = node.netns.run(
        "nft",
        &["delete", "rule", "inet", "fjord", &chain, "handle", &handle],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        node.reach(&b.netns, a.v4, "tcp", 80),
        None,
        "the rule is gone"
    );
    // A sync from memory does not see it; a reconcile does, and repairs that chain.
    assert_eq!(table.sync(&desired).unwrap().commands, 0);
    let report = table.reconcile(&desired).unwrap();
    assert!(report.commands > 0, "reconcile rewrote the chain");
    assert!(
        node.reach(&b.netns, a.v4, "tcp", 80).is_some(),
        "the rule is back"
    );
    // A new shell (the daemon restarted) adopts the table: nothing to change.
    let mut restarted = PolicyTable::new(node.nft());
    let report = restarted.sync(&desired).unwrap();
    assert!(report.read_kernel);
    assert_eq!(report.commands, 0, "adopted, not rebuilt");
}

#[test]
fn policy_and_nat_off_install_nothing_and_remove_a_left_over_table() {
    let node = Node::new(1, false);
    let nft = node.nft();
    let mut table = PolicyTable::new(nft.clone());
    table
        .sync(&desired_table(None, &NatConfig::disabled()))
        .unwrap();
    assert!(
        nft.list().unwrap().is_none(),
        "no table with policy and NAT off"
    );
    table.sync(&desired_table(None, &nat(true))).unwrap();
    assert!(nft.list().unwrap().is_some());
    table
        .sync(&desired_table(None, &NatConfig::disabled()))
        .unwrap();
    assert!(
        nft.list().unwrap().is_none(),
        "the table is gone when both are turned off"
    );
    let listing = node.netns.run("nft", &["list", "ruleset"]);
    assert!(
        String::from_utf8_lossy(&listing.stdout).trim().is_empty(),
        "nothing else was created"
    );
}
