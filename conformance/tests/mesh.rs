//! The node-to-node mesh in a three-node lab (issue 3, "A three-node lab"): the real
//! `fjord-routed` on every node, pods attached by the real `fjord` plugin, all nodes on
//! one underlay segment (10.250.0.N/24, fd00:250::N/64).
//!
//! - every pod reaches every pod on the other nodes, IPv4 and IPv6, over native routes
//!   (`<block> via <node address> proto 200`, out of the underlay interface, no VXLAN);
//! - `fjord-routed status --json` shows 2 Established mesh peers per node with the
//!   routes in and out that the blocks imply;
//! - a daemon killed (SIGKILL) and restarted with graceful restart loses no packet of a
//!   continuous ping between a pod on its node and a pod on another node, keeps its
//!   kernel routes throughout, and sweeps a stale route of its own after the window;
//! - a daemon killed for good: its routes vanish from the others within the hold time.
//!
//! Timers used here: `--hold-time 9 --graceful-restart-time 9` on every daemon (the
//! daemon keeps the restart time at most the hold time).

use fjord_conformance::lab::{
    is_fjord_route, Lab, LabPod, LabSpec, RoutedProcess, RoutedStatus, MESH_PEER_TYPE, UPLINK,
};
use fjord_conformance::poll_until;
use ipnetwork::IpNetwork;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

const HOLD_TIME_S: u64 = 9;
const TIMERS: [&str; 4] = ["--hold-time", "9", "--graceful-restart-time", "9"];
/// How long the mesh may take to come up (start, connect, exchange).
const MESH_UP_WITHIN: Duration = Duration::from_secs(30);
/// How long a learned block may take to reach a kernel; a claimed block is announced
/// within a second (issue 3), this leaves room for a loaded machine.
const ROUTES_WITHIN: Duration = Duration::from_secs(10);
/// Slack over the hold time for "within the hold time" (polling, process exit).
const SLACK: Duration = Duration::from_secs(3);

fn start_all(lab: &Lab) -> Vec<RoutedProcess> {
    (0..lab.node_count())
        .map(|i| lab.start_routed(i, &TIMERS))
        .collect()
}

/// Waits until every node has all other nodes as Established mesh peers.
fn wait_mesh(lab: &Lab) -> Vec<RoutedStatus> {
    (0..lab.node_count())
        .map(|i| lab.wait_established(i, &lab.mesh_peers_of(i), MESH_UP_WITHIN))
        .collect()
}

/// Waits until node `i`'s status lists blocks covering all of `pods` (those on node
/// `i`); returns the node's blocks.
fn wait_blocks(lab: &Lab, i: usize, pods: &[&LabPod]) -> Vec<IpNetwork> {
    let status = lab.wait_for_status(
        i,
        ROUTES_WITHIN,
        "its status lists blocks covering its pods' addresses",
        |s| {
            pods.iter().all(|p| {
                s.blocks.iter().any(|b| b.contains(p.ipv4))
                    && s.blocks.iter().any(|b| b.contains(p.ipv6))
            })
        },
    );
    for b in &status.blocks {
        let want = if b.is_ipv4() { 26 } else { 122 };
        assert_eq!(b.prefix(), want, "block {b} of {}: {status:?}", status.node);
    }
    status.blocks
}

/// What node `i`'s kernel must hold: every block of every other node, via that node's
/// address of the block's family.
fn expected_routes(
    lab: &Lab,
    i: usize,
    blocks: &[Vec<IpNetwork>],
) -> BTreeSet<(IpNetwork, IpAddr)> {
    let mut want = BTreeSet::new();
    for (j, bs) in blocks.iter().enumerate() {
        if j == i {
            continue;
        }
        for b in bs {
            want.insert((*b, lab.node(j).address(b.is_ipv6())));
        }
    }
    want
}

/// Node `i`'s fjord routes as (dst, gateway) pairs.
fn fjord_routes_of(lab: &Lab, i: usize) -> BTreeSet<(IpNetwork, IpAddr)> {
    lab.node(i)
        .fjord_routes()
        .into_iter()
        .filter_map(|r| r.gateway.map(|g| (r.dst, g)))
        .collect()
}

/// Waits until node `i`'s fjord routes are exactly `want`.
fn wait_routes_exactly(
    lab: &Lab,
    i: usize,
    want: &BTreeSet<(IpNetwork, IpAddr)>,
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let have = fjord_routes_of(lab, i);
        if &have == want {
            return;
        }
        if Instant::now() >= deadline {
            panic!(
                "{}: after {timeout:?} the proto-200 routes are {have:#?}, expected {want:#?}\n\
                 all routes: {:#?}\n--- daemon log ---\n{}",
                lab.node(i).name(),
                lab.node(i).netns().routes(),
                lab.routed_log_tail(i)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every fjord route on every node is native: a unicast route via a node address out of
/// the underlay interface, and no VXLAN device exists.
fn assert_native_routes(lab: &Lab) {
    let node_addresses: Vec<IpAddr> = lab
        .nodes()
        .iter()
        .flat_map(|n| [n.address(false), n.address(true)])
        .collect();
    for node in lab.nodes() {
        for r in node.fjord_routes() {
            assert_eq!(r.route_type, "unicast", "{}: {r:?}", node.name());
            assert_eq!(r.dev.as_deref(), Some(UPLINK), "{}: {r:?}", node.name());
            assert!(
                r.gateway.is_some_and(|g| node_addresses.contains(&g)),
                "{}: {r:?} is not via a node address",
                node.name()
            );
            assert!(
                !r.raw.to_string().contains("onlink"),
                "{}: a native route needs no onlink: {r:?}",
                node.name()
            );
        }
        let encap: Vec<String> = node
            .netns()
            .links()
            .into_iter()
            .filter(|l| l.kind.as_deref() == Some("vxlan"))
            .map(|l| l.name)
            .collect();
        assert!(
            encap.is_empty(),
            "{} has VXLAN devices {encap:?} on a single segment",
            node.name()
        );
    }
}

/// Nothing of the lab in the root namespace: no route into the pod pools or the
/// underlay, no fjord route, no `fjt` link.
fn assert_root_namespace_untouched() {
    let pools: [IpNetwork; 4] = [
        "10.244.0.0/16".parse().unwrap(),
        "fd00:244::/56".parse().unwrap(),
        "10.250.0.0/16".parse().unwrap(),
        "fd00:250::/48".parse().unwrap(),
    ];
    for args in [
        &["-j", "route", "show"][..],
        &["-j", "-6", "route", "show"][..],
    ] {
        let out = std::process::Command::new("ip")
            .args(args)
            .output()
            .unwrap();
        let routes: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        for r in routes.as_array().into_iter().flatten() {
            let dst = r["dst"].as_str().unwrap_or("");
            let proto = r["protocol"].as_str().unwrap_or("");
            assert!(
                proto != "200" && proto != "fjord",
                "a fjord route in the root namespace: {r}"
            );
            if let Ok(net) = dst.parse::<IpNetwork>() {
                assert!(
                    !pools.iter().any(|p| p.contains(net.network())),
                    "a lab route in the root namespace: {r}"
                );
            }
        }
    }
    let out = std::process::Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    let links = String::from_utf8_lossy(&out.stdout);
    let prefix = format!("fjt{}", std::process::id());
    assert!(
        !links.contains(&prefix),
        "a lab link in the root namespace: {links}"
    );
}

/// Every pod pings every pod on the other nodes, IPv4 and IPv6; collects failures.
fn assert_all_pods_reach_each_other(pods: &[LabPod]) {
    let mut failures = Vec::new();
    for a in pods {
        for b in pods.iter().filter(|b| b.node != a.node) {
            for v6 in [false, true] {
                let (from, to) = (a.address(v6), b.address(v6));
                if !a.ping_once(to) {
                    failures.push(format!(
                        "node{} pod {from} -> node{} pod {to}",
                        a.node + 1,
                        b.node + 1
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} pings between pods on different nodes failed:\n{}",
        failures.len(),
        pods.len() * (pods.len() - 2) * 2,
        failures.join("\n")
    );
}

#[test]
fn three_nodes_route_pod_traffic_natively() {
    let lab = Lab::new(LabSpec::nodes(3));
    // Nodes 1 and 2 get their pods (and blocks) before the daemons start, node 3 after:
    // both the blocks present at start and a block claimed later must be announced.
    let mut pods = vec![
        lab.add_pod(0),
        lab.add_pod(0),
        lab.add_pod(1),
        lab.add_pod(1),
    ];
    let mut daemons = start_all(&lab);
    wait_mesh(&lab);
    pods.push(lab.add_pod(2));
    let claimed = Instant::now();
    let new_pod = pods[4].ipv4;
    poll_until(
        ROUTES_WITHIN,
        "node1's kernel routes node3's new block",
        || {
            lab.node(0)
                .fjord_routes()
                .iter()
                .any(|r| r.dst.contains(new_pod))
        },
    );
    // Issue 3 asks for a claimed block to be announced within a second; the figure is
    // printed for the record (timing assertions belong in benchmarks).
    println!(
        "block of {new_pod} claimed on node3 reached node1's kernel in {} ms",
        claimed.elapsed().as_millis()
    );
    pods.push(lab.add_pod(2));

    let blocks: Vec<Vec<IpNetwork>> = (0..3)
        .map(|i| {
            let mine: Vec<&LabPod> = pods.iter().filter(|p| p.node == i).collect();
            wait_blocks(&lab, i, &mine)
        })
        .collect();
    for (i, bs) in blocks.iter().enumerate() {
        assert!(
            bs.iter().any(|b| b.is_ipv4()) && bs.iter().any(|b| b.is_ipv6()),
            "node{} announces no dual-stack blocks: {bs:?}",
            i + 1
        );
    }

    // Kernels: exactly the other nodes' blocks, via their node addresses, proto 200.
    for i in 0..3 {
        wait_routes_exactly(&lab, i, &expected_routes(&lab, i, &blocks), ROUTES_WITHIN);
    }
    assert_native_routes(&lab);

    // Status: two Established mesh peers per node, routes in = the peer's blocks,
    // routes out = ours.
    for i in 0..3 {
        let status = lab.wait_for_status(
            i,
            ROUTES_WITHIN,
            "every peer's routes_in/routes_out match the blocks",
            |s| {
                s.peers.len() == 2
                    && s.peers.iter().all(|p| {
                        let j = (0..3)
                            .find(|j| lab.node(*j).address(false) == p.address)
                            .unwrap_or(usize::MAX);
                        j != usize::MAX
                            && p.routes_in as usize == blocks[j].len()
                            && p.routes_out as usize == blocks[i].len()
                    })
            },
        );
        assert_eq!(status.node, lab.node(i).name(), "status of the wrong node");
        for p in &status.peers {
            assert_eq!(p.state, "Established", "node{}: {p:?}", i + 1);
            assert_eq!(p.peer_type, MESH_PEER_TYPE, "node{}: {p:?}", i + 1);
            assert!(!p.since.is_empty(), "node{}: no since: {p:?}", i + 1);
        }
    }

    assert_all_pods_reach_each_other(&pods);
    for d in &mut daemons {
        d.assert_running();
    }
    assert_root_namespace_untouched();
}

#[test]
fn restarted_daemon_loses_no_packet_and_sweeps_stale_routes() {
    let lab = Lab::new(LabSpec::nodes(3));
    let pods = [lab.add_pod(0), lab.add_pod(1), lab.add_pod(2)];
    let mut daemons = start_all(&lab);
    wait_mesh(&lab);
    let blocks: Vec<Vec<IpNetwork>> = (0..3).map(|i| wait_blocks(&lab, i, &[&pods[i]])).collect();
    let want0 = expected_routes(&lab, 0, &blocks);
    for i in 0..3 {
        wait_routes_exactly(&lab, i, &expected_routes(&lab, i, &blocks), ROUTES_WITHIN);
    }
    assert!(
        pods[0].ping_once(pods[1].ipv4),
        "no traffic before the restart"
    );

    // 20 ms apart for 30 s, both families, between the restarted node (node1) and node2.
    let interval = Duration::from_millis(20);
    let count = 1500;
    let ping4 = pods[0].start_ping(pods[1].ipv4, interval, count);
    let ping6 = pods[0].start_ping(pods[1].ipv6, interval, count);
    let window_start = Instant::now();

    // Crash node1's daemon: no NOTIFICATION, its kernel routes stay where they are.
    assert_eq!(lab.kill_routed(0), 1, "node1's daemon was not running");
    let old = daemons.remove(0);
    drop(old); // reaps it
               // A stale fjord route on node1 that no peer announces: the restarted daemon must
               // remove it once the restart is over (reconciling against what it learned).
    let node1 = lab.node(0);
    let gw4 = lab.node(1).address_v4().to_string();
    let gw6 = lab.node(1).address_v6().to_string();
    let stale4: IpNetwork = "10.244.255.192/26".parse().unwrap();
    let stale6: IpNetwork = "fd00:244:0:ff::/122".parse().unwrap();
    node1.netns().ip(&[
        "route",
        "add",
        &stale4.to_string(),
        "via",
        &gw4,
        "proto",
        "200",
    ]);
    node1.netns().ip(&[
        "-6",
        "route",
        "add",
        &stale6.to_string(),
        "via",
        &gw6,
        "proto",
        "200",
    ]);
    daemons.insert(0, lab.start_routed(0, &TIMERS));

    // While it comes back, node1's kernel never loses a route to the other nodes'
    // blocks, and the others never lose their routes to node1's blocks.
    let want_on = |i: usize| expected_routes(&lab, i, &blocks);
    let (want1, want2) = (want_on(1), want_on(2));
    let until = Instant::now() + Duration::from_secs(HOLD_TIME_S) + SLACK;
    let mut swept_at = None;
    while Instant::now() < until || swept_at.is_none() {
        let r0 = fjord_routes_of(&lab, 0);
        for w in &want0 {
            assert!(
                r0.contains(w),
                "node1 lost {w:?} during its restart ({:?} in): {r0:?}\n--- daemon log ---\n{}",
                window_start.elapsed(),
                lab.routed_log_tail(0)
            );
        }
        for (i, want) in [(1, &want1), (2, &want2)] {
            let have = fjord_routes_of(&lab, i);
            assert!(
                want.is_subset(&have),
                "node{} lost routes to node1's blocks during node1's restart ({:?} in): \
                 has {have:?}, wants {want:?}\n--- node1's daemon log ---\n{}",
                i + 1,
                window_start.elapsed(),
                lab.routed_log_tail(0)
            );
        }
        if swept_at.is_none() && !r0.iter().any(|(d, _)| *d == stale4 || *d == stale6) {
            swept_at = Some(window_start.elapsed());
        }
        assert!(
            window_start.elapsed() < Duration::from_secs(2 * HOLD_TIME_S) + 2 * SLACK,
            "node1 did not sweep its stale routes {stale4} and {stale6} within the restart \
             window ({HOLD_TIME_S} s + slack)\n--- daemon log ---\n{}",
            lab.routed_log_tail(0)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = lab.wait_established(0, &lab.mesh_peers_of(0), MESH_UP_WITHIN);
    assert_eq!(status.peers.len(), 2, "{status:?}");
    wait_routes_exactly(&lab, 0, &want0, ROUTES_WITHIN);

    let s4 = ping4.finish();
    let s6 = ping6.finish();
    assert!(
        s4.transmitted >= u64::from(count) - 1 && s6.transmitted >= u64::from(count) - 1,
        "the pings did not run their window: {s4:?} {s6:?}"
    );
    assert_eq!(
        (s4.lost(), s6.lost()),
        (0, 0),
        "packets lost across node1's restart (IPv4 {s4:?}, IPv6 {s6:?}); stale routes swept \
         at {swept_at:?}"
    );
    for d in &mut daemons {
        d.assert_running();
    }
}

#[test]
fn dead_daemon_routes_vanish_within_the_hold_time() {
    let lab = Lab::new(LabSpec::nodes(3));
    let pods = [lab.add_pod(0), lab.add_pod(1), lab.add_pod(2)];
    let mut daemons = start_all(&lab);
    wait_mesh(&lab);
    let blocks: Vec<Vec<IpNetwork>> = (0..3).map(|i| wait_blocks(&lab, i, &[&pods[i]])).collect();
    for i in 0..3 {
        wait_routes_exactly(&lab, i, &expected_routes(&lab, i, &blocks), ROUTES_WITHIN);
    }

    // node3 dies for good.
    assert_eq!(lab.kill_routed(2), 1);
    let killed_at = Instant::now();
    drop(daemons.remove(2));

    // Nodes 1 and 2 drop node3's blocks within the hold time, and keep each other's.
    let gone: Vec<IpNetwork> = blocks[2].clone();
    poll_until(
        Duration::from_secs(HOLD_TIME_S) + SLACK,
        "nodes 1 and 2 have no route to node3's blocks",
        || {
            (0..2).all(|i| {
                lab.node(i)
                    .fjord_routes()
                    .iter()
                    .all(|r| !gone.contains(&r.dst))
            })
        },
    );
    let elapsed = killed_at.elapsed();
    assert!(
        elapsed <= Duration::from_secs(HOLD_TIME_S) + SLACK,
        "node3's routes took {elapsed:?}, the hold time is {HOLD_TIME_S} s"
    );
    let only = |i: usize| -> BTreeSet<(IpNetwork, IpAddr)> {
        let mut bs = blocks.clone();
        bs[2].clear();
        expected_routes(&lab, i, &bs)
    };
    for i in 0..2 {
        wait_routes_exactly(&lab, i, &only(i), ROUTES_WITHIN);
        let status = lab.status(i);
        let dead = status
            .peer(lab.node(2).address(false))
            .unwrap_or_else(|| panic!("node{} forgot its peer node3: {status:?}", i + 1));
        assert_ne!(dead.state, "Established", "node{}: {dead:?}", i + 1);
        assert_eq!(dead.routes_in, 0, "node{}: {dead:?}", i + 1);
        let other = lab.node(1 - i).address(false);
        assert_eq!(
            status.peer(other).map(|p| p.state.as_str()),
            Some("Established"),
            "node{}: the surviving mesh session broke: {status:?}",
            i + 1
        );
    }
    // The survivors' pods still reach each other; none reaches node3's pod.
    assert!(pods[0].ping_once(pods[1].ipv4) && pods[0].ping_once(pods[1].ipv6));
    assert!(
        !pods[0].ping_once(pods[2].ipv4),
        "node1's pod still reaches the dead node's pod: a route was left behind"
    );
    for r in lab.node(0).fjord_routes() {
        assert!(is_fjord_route(&r));
    }
    for d in &mut daemons {
        d.assert_running();
    }
}

/// The test bed alone (no daemon): a two-subnet underlay joins nodes through the router,
/// which holds nothing but its connected subnets, and the root namespace stays untouched.
#[test]
fn lab_underlay_joins_subnets_through_a_router_without_pod_routes() {
    let lab = Lab::new(LabSpec {
        nodes: 3,
        subnets: 2,
        hosts: 0,
    });
    assert_eq!(
        (
            lab.node(0).subnet(),
            lab.node(1).subnet(),
            lab.node(2).subnet()
        ),
        (0, 1, 0)
    );
    assert_eq!(lab.node(1).address_v4().to_string(), "10.250.1.2");
    for v6 in [false, true] {
        for (a, b) in [(0, 1), (0, 2), (1, 2)] {
            let to = lab.node(b).address(v6);
            assert!(
                lab.node(a).netns().ping(to, 1),
                "{} cannot reach {} at {to} over the underlay",
                lab.node(a).name(),
                lab.node(b).name()
            );
        }
    }
    let router = lab.router().expect("two subnets have a router");
    assert_eq!(router.sysctl("net.ipv4.ip_forward"), "1");
    let pod_pools: [IpNetwork; 2] = [
        "10.244.0.0/16".parse().unwrap(),
        "fd00:244::/56".parse().unwrap(),
    ];
    for r in router.routes() {
        assert!(
            !pod_pools.iter().any(|p| p.contains(r.dst.network())) && r.dst.prefix() != 0,
            "the router holds a pod or default route: {r:?}"
        );
    }
    for node in lab.nodes() {
        assert_eq!(node.netns().sysctl("net.ipv6.conf.all.forwarding"), "1");
        assert!(node.fjord_routes().is_empty(), "{}", node.name());
    }
    assert_root_namespace_untouched();
}
