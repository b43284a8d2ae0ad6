//! Encapsulation (issue 4) in a four-node lab on two underlay subnets joined by a router
//! that holds no pod routes: node1 and node3 on 10.250.0.0/24, node2 and node4 on
//! 10.250.1.0/24, one pod per node, the real `fjord-routed` and `fjord` plugin.
//!
//! - `cross-subnet`: same-subnet pairs route natively (`via` the node address, out of
//!   eth0), cross-subnet pairs through `fjord.vxlan` (`via` the block's first address,
//!   `onlink`), with exactly the FDB and permanent neighbour entries the blocks imply on
//!   every node; status says `native` / `vxlan` per peer; every pod reaches every pod by
//!   ping (IPv4 and IPv6) and by a 20 MiB TCP transfer in both directions.
//! - `always`: every route through `fjord.vxlan`; `never`: no device, cross-subnet peers
//!   `unreachable` in status and no route to their blocks, same-subnet traffic works.
//! - Every switch is a restart with another mode, and each converges to exactly the new
//!   mode's state (no device, FDB, neighbour or route of the previous one); a node that
//!   leaves takes its routes, FDB and neighbour entries with it.
//! - A `fjord.vxlan` deleted by hand comes back with all its entries and routes.
//! - An underlay at MTU 1400 (9000) gives 1350 (8950) everywhere: pod, `fjord.vxlan`,
//!   MTU file, and a full-size unfragmentable datagram crosses.
//!
//! Every node drops outgoing ICMP "fragmentation needed" / "packet too big", as networks
//! that filter ICMP do: a pod MTU too large for the path then black-holes the TCP
//! transfers instead of being rescued by path-MTU discovery.

use fjord_conformance::lab::{spawn_in_netns, Lab, LabPod, LabSpec, RoutedProcess, UPLINK};
use fjord_conformance::poll_until;
use ipnetwork::IpNetwork;
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const VXLAN: &str = "fjord.vxlan";
/// Short restart window, so a mode switch sweeps the old mode's state quickly.
const TIMERS: [&str; 4] = ["--hold-time", "9", "--graceful-restart-time", "3"];
const MESH_UP_WITHIN: Duration = Duration::from_secs(30);
/// Restart window (3 s) plus a reconcile and a loaded machine.
const CONVERGE_WITHIN: Duration = Duration::from_secs(20);
const TRANSFER: &str = "20M";
const TRANSFER_BYTES: u64 = 20 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Never,
    Always,
    CrossSubnet,
}

impl Mode {
    fn arg(self) -> &'static str {
        match self {
            Mode::Never => "never",
            Mode::Always => "always",
            Mode::CrossSubnet => "cross-subnet",
        }
    }

    /// The datapath node `i` must use towards node `j`.
    fn datapath(self, lab: &Lab, i: usize, j: usize) -> &'static str {
        let same = lab.node(i).subnet() == lab.node(j).subnet();
        match (self, same) {
            (Mode::Always, _) => "vxlan",
            (_, true) => "native",
            (Mode::CrossSubnet, false) => "vxlan",
            (Mode::Never, false) => "unreachable",
        }
    }
}

/// A route as the assertions compare it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Hop {
    /// `via NODE dev eth0`, no onlink.
    Native(IpAddr),
    /// `via VTEP dev fjord.vxlan onlink`.
    Vxlan(IpAddr),
    Other(String),
}

/// The kernel state of one node that encapsulation owns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct NodeState {
    routes: BTreeSet<(IpNetwork, Hop)>,
    device_mtu: Option<u32>,
    /// (MAC, destination) of Fjord's FDB entries on fjord.vxlan.
    fdb: BTreeSet<(String, IpAddr)>,
    /// (VTEP address, MAC) of permanent neighbours on fjord.vxlan.
    neighbours: BTreeSet<(IpAddr, String)>,
}

fn vtep_mac(lab: &Lab, j: usize) -> String {
    let [a, b, c, d] = lab.node(j).address_v4().octets();
    format!("66:6a:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

/// What node `i` must hold in `mode` with nodes `alive` up, `blocks[j]` being node j's.
fn expected(
    lab: &Lab,
    mode: Mode,
    i: usize,
    alive: &[usize],
    blocks: &[Vec<IpNetwork>],
) -> NodeState {
    let mut want = NodeState::default();
    for &j in alive.iter().filter(|&&j| j != i) {
        let path = mode.datapath(lab, i, j);
        for b in &blocks[j] {
            match path {
                "native" => {
                    want.routes
                        .insert((*b, Hop::Native(lab.node(j).address(b.is_ipv6()))));
                }
                "vxlan" => {
                    want.routes.insert((*b, Hop::Vxlan(b.network())));
                    want.neighbours.insert((b.network(), vtep_mac(lab, j)));
                    want.fdb
                        .insert((vtep_mac(lab, j), IpAddr::V4(lab.node(j).address_v4())));
                }
                _ => {}
            }
        }
    }
    let needs_device = alive
        .iter()
        .any(|&j| j != i && mode.datapath(lab, i, j) == "vxlan");
    if needs_device {
        want.device_mtu = Some(underlay_mtu(lab, i) - 50);
    }
    want
}

fn underlay_mtu(lab: &Lab, i: usize) -> u32 {
    lab.node(i).netns().expect_link(UPLINK).mtu
}

fn observe(lab: &Lab, i: usize) -> NodeState {
    let ns = lab.node(i).netns();
    let routes = lab
        .node(i)
        .fjord_routes()
        .into_iter()
        .map(|r| {
            let onlink = r.raw.to_string().contains("onlink");
            let hop = match (r.gateway, r.dev.as_deref(), onlink) {
                (Some(g), Some(UPLINK), false) => Hop::Native(g),
                (Some(g), Some(VXLAN), true) => Hop::Vxlan(g),
                _ => Hop::Other(r.raw.to_string()),
            };
            (r.dst, hop)
        })
        .collect();
    let device_mtu = ns.link(VXLAN).map(|l| l.mtu);
    let mut state = NodeState {
        routes,
        device_mtu,
        ..NodeState::default()
    };
    if device_mtu.is_none() {
        return state;
    }
    let out = ns.run("bridge", &["-j", "fdb", "show", "dev", VXLAN]);
    let fdb: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Array(vec![]));
    for e in fdb.as_array().into_iter().flatten() {
        let mac = e["mac"].as_str().unwrap_or_default().to_string();
        if let Some(dst) = e["dst"].as_str().and_then(|d| d.parse().ok()) {
            state.fdb.insert((mac, dst));
        }
    }
    for n in ns.neighbours().into_iter().filter(|n| n.dev == VXLAN) {
        assert!(n.is_permanent(), "node{}: {n:?} is not permanent", i + 1);
        state
            .neighbours
            .insert((n.dst, n.lladdr.clone().unwrap_or_default()));
    }
    state
}

/// Waits until every node in `alive` holds exactly what `mode` implies.
fn wait_converged(lab: &Lab, mode: Mode, alive: &[usize], blocks: &[Vec<IpNetwork>]) {
    let deadline = Instant::now() + CONVERGE_WITHIN;
    for &i in alive {
        let want = expected(lab, mode, i, alive, blocks);
        loop {
            let have = observe(lab, i);
            if have == want {
                break;
            }
            if Instant::now() >= deadline {
                panic!(
                    "node{} in {mode:?} after {CONVERGE_WITHIN:?}:\nhave {have:#?}\nwant {want:#?}\n--- log ---\n{}",
                    i + 1,
                    lab.routed_log_tail(i)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn start(lab: &Lab, mode: Mode, nodes: &[usize]) -> Vec<RoutedProcess> {
    let mut args = TIMERS.to_vec();
    args.extend(["--encapsulation", mode.arg()]);
    nodes.iter().map(|&i| lab.start_routed(i, &args)).collect()
}

fn wait_mesh(lab: &Lab, nodes: &[usize]) {
    for &i in nodes {
        let peers: Vec<IpAddr> = nodes
            .iter()
            .filter(|&&j| j != i)
            .map(|&j| IpAddr::V4(lab.node(j).address_v4()))
            .collect();
        lab.wait_established(i, &peers, MESH_UP_WITHIN);
    }
}

/// The pod MTU node `i`'s daemon recorded.
fn wait_mtu_file(lab: &Lab, i: usize, want: u32) {
    let path = lab.mtu_file(i);
    poll_until(
        Duration::from_secs(10),
        &format!("{} holds {want}", path.display()),
        || std::fs::read_to_string(&path).is_ok_and(|t| t.trim() == want.to_string()),
    );
}

fn drop_icmp_too_big(lab: &Lab) {
    for node in lab.nodes() {
        for (cmd, args) in [
            (
                "iptables",
                ["-p", "icmp", "--icmp-type", "fragmentation-needed"],
            ),
            (
                "ip6tables",
                ["-p", "icmpv6", "--icmpv6-type", "packet-too-big"],
            ),
        ] {
            let mut full = vec!["-A", "OUTPUT"];
            full.extend(args);
            full.extend(["-j", "DROP"]);
            let out = node.netns().run(cmd, &full);
            assert!(
                out.status.success(),
                "{cmd} in {}: {} (install iptables: conformance/scripts/install-routing-deps.sh)",
                node.name(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Node `i`'s blocks, once its status lists blocks covering its pod.
fn blocks_of(lab: &Lab, i: usize, pod: &LabPod) -> Vec<IpNetwork> {
    lab.wait_for_status(
        i,
        Duration::from_secs(10),
        "its blocks cover its pod",
        |s| {
            s.blocks.iter().any(|b| b.contains(pod.ipv4))
                && s.blocks.iter().any(|b| b.contains(pod.ipv6))
        },
    )
    .blocks
}

fn assert_status_datapaths(lab: &Lab, mode: Mode, alive: &[usize]) {
    for &i in alive {
        let status = lab.status_json(i);
        assert_eq!(
            status["encapsulation"],
            mode.arg(),
            "node{}: {status}",
            i + 1
        );
        for &j in alive.iter().filter(|&&j| j != i) {
            let address = lab.node(j).address_v4().to_string();
            let peer = status["peers"]
                .as_array()
                .and_then(|ps| ps.iter().find(|p| p["address"] == address.as_str()))
                .unwrap_or_else(|| panic!("node{} lists no peer {address}: {status}", i + 1));
            assert_eq!(
                peer["datapath"],
                mode.datapath(lab, i, j),
                "node{} -> node{} in {mode:?}: {status}",
                i + 1,
                j + 1
            );
        }
    }
}

/// `fjord-routed status` as the table, for the unreachable column.
fn status_table(lab: &Lab, i: usize) -> String {
    let mut cmd = Command::new(fjord_conformance::fjord_bin("fjord-routed"));
    cmd.args(["status", "--socket"])
        .arg(lab.socket(i))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = spawn_in_netns(lab.node(i).netns(), &mut cmd)
        .wait_with_output()
        .expect("fjord-routed status");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `iperf3 -s` in a pod, killed on drop.
struct IperfServer(Child);

impl IperfServer {
    fn start(pod: &LabPod) -> IperfServer {
        let mut cmd = Command::new("iperf3");
        cmd.args(["-s", "-p", "5201"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        IperfServer(spawn_in_netns(pod.netns(), &mut cmd))
    }
}

impl Drop for IperfServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A 20 MiB TCP transfer from `from` to `to` and one back (`-R`), over `v6` or IPv4.
fn transfer_both_ways(from: &LabPod, to: &LabPod, v6: bool) {
    let target = to.address(v6).to_string();
    for reverse in [false, true] {
        let mut args = vec![
            "30",
            "iperf3",
            "-c",
            &target,
            "-p",
            "5201",
            "-n",
            TRANSFER,
            "-J",
            "--connect-timeout",
            "5000",
        ];
        if reverse {
            args.push("-R");
        }
        let mut out = from.netns().run("timeout", &args);
        for _ in 0..20 {
            // The server may not listen yet, or still be finishing the previous test:
            // that fails at once. A stalled transfer (timeout's 124) is not retried.
            let refused = !out.status.success() && out.status.code() != Some(124);
            if !refused || !String::from_utf8_lossy(&out.stdout).contains("connect") {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
            out = from.netns().run("timeout", &args);
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let report: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        // The sender must write all 20 MiB into its socket, and it cannot get more than
        // one send buffer (tcp_wmem's max, 4 MiB) ahead of what the receiver has
        // acknowledged: a black hole stalls it at once and `timeout` ends it. The
        // receiver's own count stops when the sender is done and misses what is still
        // in flight, so it is only required to be non-zero.
        let sent = report["end"]["sum_sent"]["bytes"].as_u64().unwrap_or(0);
        let bytes = report["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
        assert!(
            out.status.success() && sent >= TRANSFER_BYTES && bytes > 0,
            "{TRANSFER} TCP {} {} -> {target} (reverse {reverse}) failed ({}), sent {sent}, received {bytes} bytes: {}",
            from.ipv4,
            if v6 { "IPv6" } else { "IPv4" },
            out.status,
            report["error"]
        );
    }
}

fn assert_ping(from: &LabPod, to: &LabPod, reachable: bool) {
    for v6 in [false, true] {
        let target = to.address(v6);
        let answered = if reachable {
            // A first echo may race the last route of a convergence.
            (0..5).any(|_| from.ping_once(target))
        } else {
            from.ping_once(target)
        };
        assert_eq!(
            answered,
            reachable,
            "ping {} -> {target}: answered {answered}, expected {reachable}",
            from.address(v6)
        );
    }
}

fn pairs(nodes: &[usize]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for (k, &a) in nodes.iter().enumerate() {
        for &b in &nodes[k + 1..] {
            out.push((a, b));
        }
    }
    out
}

fn assert_pod_mtu(lab: &Lab, pod: &LabPod, want: u32) {
    let mtu = pod.netns().expect_link("eth0").mtu;
    assert_eq!(mtu, want, "pod on node{}: eth0 MTU", pod.node + 1);
    let _ = lab;
}

#[test]
fn four_nodes_two_subnets_in_every_mode_with_switches_and_a_node_leaving() {
    let lab = Lab::new(LabSpec {
        nodes: 4,
        subnets: 2,
        hosts: 0,
    });
    assert_eq!(
        lab.nodes().iter().map(|n| n.subnet()).collect::<Vec<_>>(),
        [0, 1, 0, 1]
    );
    drop_icmp_too_big(&lab);
    let all = [0, 1, 2, 3];

    // cross-subnet (the default, given explicitly here).
    let daemons = start(&lab, Mode::CrossSubnet, &all);
    for i in all {
        wait_mtu_file(&lab, i, 1450);
    }
    let pods: Vec<LabPod> = all.iter().map(|&i| lab.add_pod(i)).collect();
    for pod in &pods {
        assert_pod_mtu(&lab, pod, 1450);
    }
    let servers: Vec<IperfServer> = pods.iter().map(IperfServer::start).collect();
    wait_mesh(&lab, &all);
    let blocks: Vec<Vec<IpNetwork>> = all.iter().map(|&i| blocks_of(&lab, i, &pods[i])).collect();
    wait_converged(&lab, Mode::CrossSubnet, &all, &blocks);
    assert_status_datapaths(&lab, Mode::CrossSubnet, &all);
    for (a, b) in pairs(&all) {
        assert_ping(&pods[a], &pods[b], true);
        assert_ping(&pods[b], &pods[a], true);
        for v6 in [false, true] {
            transfer_both_ways(&pods[a], &pods[b], v6);
        }
    }

    // Someone deletes node1's device: the next registry poll recreates it and a
    // reconcile restores its FDB and neighbour entries and the routes through it.
    let old_index = lab.node(0).netns().expect_link(VXLAN).ifindex;
    lab.node(0).netns().ip(&["link", "del", VXLAN]);
    poll_until(
        Duration::from_secs(10),
        "node1 has a new fjord.vxlan",
        || {
            lab.node(0)
                .netns()
                .link(VXLAN)
                .is_some_and(|l| l.ifindex != old_index)
        },
    );
    wait_converged(&lab, Mode::CrossSubnet, &all, &blocks);
    assert_ping(&pods[0], &pods[1], true);

    // never: cross-subnet peers unreachable, no device, same-subnet traffic works.
    drop(daemons);
    let daemons = start(&lab, Mode::Never, &all);
    wait_mesh(&lab, &all);
    wait_converged(&lab, Mode::Never, &all, &blocks);
    for i in all {
        wait_mtu_file(&lab, i, 1500);
    }
    assert_status_datapaths(&lab, Mode::Never, &all);
    let table = status_table(&lab, 0);
    assert!(
        table.contains("unreachable") && table.contains("DATAPATH"),
        "node1's status table does not show node2 unreachable:\n{table}"
    );
    assert_ping(&pods[0], &pods[2], true);
    assert_ping(&pods[1], &pods[3], true);
    transfer_both_ways(&pods[0], &pods[2], false);
    assert_ping(&pods[0], &pods[1], false);

    // always: every route through fjord.vxlan.
    drop(daemons);
    let daemons = start(&lab, Mode::Always, &all);
    wait_mesh(&lab, &all);
    wait_converged(&lab, Mode::Always, &all, &blocks);
    assert_status_datapaths(&lab, Mode::Always, &all);
    for (a, b) in pairs(&all) {
        assert_ping(&pods[a], &pods[b], true);
    }
    transfer_both_ways(&pods[0], &pods[2], false);
    transfer_both_ways(&pods[1], &pods[0], true);

    // Back to cross-subnet: the same-subnet FDB/neighbour entries and onlink routes of
    // `always` are gone, exactly the first state again.
    drop(daemons);
    let mut daemons = start(&lab, Mode::CrossSubnet, &all);
    wait_mesh(&lab, &all);
    wait_converged(&lab, Mode::CrossSubnet, &all, &blocks);
    assert_ping(&pods[0], &pods[3], true);

    // node4 leaves: daemon stopped, node record removed. Its routes, FDB and neighbour
    // entries go from every other node.
    drop(daemons.remove(3));
    std::fs::remove_file(lab.store_dir().join("nodes/node4.json")).expect("remove node4's record");
    let rest = [0, 1, 2];
    wait_converged(&lab, Mode::CrossSubnet, &rest, &blocks);
    assert_ping(&pods[0], &pods[1], true);
    drop(servers);
}

#[test]
fn an_underlay_at_mtu_1400_gives_1350_to_pods_and_the_vxlan_device() {
    underlay_mtu_carries_through(1400);
}

#[test]
fn an_underlay_at_mtu_9000_gives_8950_to_pods_and_the_vxlan_device() {
    underlay_mtu_carries_through(9000);
}

/// Two nodes on two subnets in `cross-subnet`, the whole underlay at `mtu`: the MTU file,
/// the pods and `fjord.vxlan` get `mtu - 50`, a full-size DF datagram crosses (and one
/// byte more does not leave the pod), and TCP carries 20 MiB both ways in both families.
fn underlay_mtu_carries_through(mtu: u32) {
    let pod_mtu = mtu - 50;
    let lab = Lab::new(LabSpec {
        nodes: 2,
        subnets: 2,
        hosts: 0,
    });
    lab.set_underlay_mtu(mtu);
    drop_icmp_too_big(&lab);
    let both = [0, 1];
    let _daemons = start(&lab, Mode::CrossSubnet, &both);
    for i in both {
        wait_mtu_file(&lab, i, pod_mtu);
    }
    let pods: Vec<LabPod> = both.iter().map(|&i| lab.add_pod(i)).collect();
    for pod in &pods {
        assert_pod_mtu(&lab, pod, pod_mtu);
    }
    let _servers: Vec<IperfServer> = pods.iter().map(IperfServer::start).collect();
    wait_mesh(&lab, &both);
    let blocks: Vec<Vec<IpNetwork>> = both.iter().map(|&i| blocks_of(&lab, i, &pods[i])).collect();
    wait_converged(&lab, Mode::CrossSubnet, &both, &blocks);
    for i in both {
        assert_eq!(observe(&lab, i).device_mtu, Some(pod_mtu), "node{}", i + 1);
    }
    let target = pods[1].ipv4.to_string();
    let ping = |payload: u32| {
        let size = payload.to_string();
        pods[0]
            .netns()
            .run(
                "ping",
                &[
                    "-n", "-q", "-c", "1", "-W", "2", "-M", "do", "-s", &size, &target,
                ],
            )
            .status
            .success()
    };
    // IPv4 (20) + ICMP (8) headers around the payload.
    assert!(
        ping(pod_mtu - 28),
        "a {pod_mtu}-byte DF packet does not cross"
    );
    assert!(
        !ping(pod_mtu - 27),
        "a {}-byte DF packet left a {pod_mtu}-MTU pod",
        pod_mtu + 1
    );
    for v6 in [false, true] {
        transfer_both_ways(&pods[0], &pods[1], v6);
    }
}
