//! The `etcd:` store against real etcd members (Debian's etcd-server) started by each
//! test inside lab host namespaces (issue 5, "etcd"):
//!
//! - two nodes x 50 concurrent ADDs (each its own `fjord-ipam` process) on one member:
//!   100 distinct addresses, all recorded; a steady-state ADD costs 2 Txn RPCs (one
//!   read-only, one compare-and-swap commit), counted by etcd's own metrics;
//! - three members, the leader killed (SIGKILL) while ADDs are in flight: every ADD of
//!   the run completes;
//! - quorum lost: the real `fjord` plugin's ADD fails fast with code 11 naming the
//!   endpoints, leaves no veth and writes nothing (the `fjord-ipam` binary too, and an
//!   endpoint nobody answers on fails as fast); after the members return, ADD works
//!   without restarting anything;
//! - a three-node lab with `fjord-routed --store etcd:` gives full pod-to-pod
//!   reachability, keeps its routes while etcd is down, and after etcd returns routes a
//!   block claimed then;
//! - `https://` with client certificates (made by openssl here; etcd with
//!   `--client-cert-auth`): two daemons mesh and pods on both nodes reach each other; a
//!   wrong CA or a missing client certificate fails the plugin's ADD with code 11 naming
//!   the cause, and the daemon's start.

use fjord_conformance::etcd::{EtcdCluster, TestPki};
use fjord_conformance::lab::{Lab, LabPod, LabSpec, LAB_POOL_V4, LAB_POOL_V6};
use fjord_conformance::plugin::{result_ipv4, result_ipv6};
use fjord_conformance::{fjord_bin, host_veth_name, unique_container_id, PluginCall, Pod};
use fjord_ipam::etcd::EtcdStore;
use fjord_ipam::store::Store;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// An ADD against a cluster without quorum must fail within this (the store gives up
/// after 3 s; process start and veth rollback fit in the rest).
const FAILS_WITHIN: Duration = Duration::from_secs(6);

fn lab_with_hosts(nodes: usize, hosts: usize) -> Lab {
    Lab::new(LabSpec {
        nodes,
        subnets: 1,
        hosts,
    })
}

fn ipam_conf(lab: &Lab, i: usize, store: &str) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "fjord-etcd",
        "type": "fjord-ipam",
        "ipam": {
            "type": "fjord-ipam",
            "nodeName": lab.node(i).name(),
            "store": store,
            "pools": [LAB_POOL_V4, LAB_POOL_V6],
        },
    })
}

/// A `fjord-ipam` call for `container_id` on node `i` (run inside the node namespace).
fn ipam_call(lab: &Lab, i: usize, store: &str, command: &str, container_id: &str) -> PluginCall {
    let node = lab.node(i).netns();
    PluginCall::new(
        fjord_bin("fjord-ipam"),
        command,
        container_id,
        &node.path_str(),
        "eth0",
        "/nonexistent",
        &ipam_conf(lab, i, store),
    )
}

/// Every (container ID, address) the store records for `nodes`, read from member `k`.
fn recorded(cluster: &EtcdCluster, k: usize, nodes: &[String]) -> BTreeSet<(String, IpAddr)> {
    let endpoints = cluster.endpoints();
    cluster.in_member_netns(k, || {
        let spec = fjord_ipam::EtcdSpec {
            endpoints,
            tls: None,
        };
        let store = EtcdStore::open(&spec).expect("open the store");
        let mut all = BTreeSet::new();
        for node in nodes {
            for block in store.snapshot(node).expect("read the store").own {
                for (address, allocation) in block.allocations() {
                    all.insert((allocation.handle.container_id.clone(), address));
                }
            }
        }
        all
    })
}

/// Starts ADDs for `per_node` new containers on each of `nodes` nodes at once; returns
/// the running calls with their container IDs.
fn spawn_adds(
    lab: &Lab,
    store: &str,
    nodes: usize,
    per_node: usize,
) -> Vec<(String, fjord_conformance::RunningCall)> {
    let mut running = Vec::new();
    for _ in 0..per_node {
        for i in 0..nodes {
            let id = unique_container_id();
            let call = ipam_call(lab, i, store, "ADD", &id).spawn_in(lab.node(i).netns());
            running.push((id, call));
        }
    }
    running
}

/// Waits for the calls; asserts each succeeded, the addresses are distinct and the
/// store records exactly them.
fn assert_all_added(
    cluster: &EtcdCluster,
    reader: usize,
    lab: &Lab,
    running: Vec<(String, fjord_conformance::RunningCall)>,
) {
    let count = running.len();
    let results: Vec<(String, IpAddr)> = running
        .into_iter()
        .map(|(id, call)| (id, result_ipv4(&call.wait().expect_ok()).ip()))
        .collect();
    let distinct: BTreeSet<IpAddr> = results.iter().map(|(_, a)| *a).collect();
    assert_eq!(
        distinct.len(),
        count,
        "addresses handed out twice: {results:?}"
    );
    let nodes: Vec<String> = lab.nodes().iter().map(|m| m.name().to_string()).collect();
    let stored: BTreeSet<(String, IpAddr)> = recorded(cluster, reader, &nodes)
        .into_iter()
        .filter(|(_, a)| a.is_ipv4())
        .collect();
    let expected: BTreeSet<(String, IpAddr)> = results.into_iter().collect();
    assert!(
        expected.is_subset(&stored),
        "the store lacks results: {:?}",
        expected.difference(&stored).collect::<Vec<_>>()
    );
}

/// Whether `pid` is alive and not yet a zombie.
fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    })
}

#[test]
fn two_nodes_fifty_concurrent_adds_each_get_distinct_recorded_addresses() {
    let lab = lab_with_hosts(2, 1);
    let cluster = EtcdCluster::start(&lab, &[0]);
    let store = cluster.store_arg();

    // Steady state: node 1 owns a block with room; each ADD and DEL is one read-only
    // transaction and one compare-and-swap commit.
    ipam_call(&lab, 0, &store, "ADD", &unique_container_id())
        .run_in(lab.node(0).netns())
        .expect_ok();
    let before = cluster.txn_count(0);
    let ids: Vec<String> = (0..5).map(|_| unique_container_id()).collect();
    for id in &ids {
        ipam_call(&lab, 0, &store, "ADD", id)
            .run_in(lab.node(0).netns())
            .expect_ok();
    }
    let per_add = (cluster.txn_count(0) - before) as f64 / ids.len() as f64;
    assert_eq!(per_add, 2.0, "Txn RPCs per steady-state ADD");
    let before = cluster.txn_count(0);
    for id in &ids {
        ipam_call(&lab, 0, &store, "DEL", id)
            .run_in(lab.node(0).netns())
            .expect_ok();
    }
    let per_del = (cluster.txn_count(0) - before) as f64 / ids.len() as f64;
    assert_eq!(per_del, 2.0, "Txn RPCs per DEL");

    let running = spawn_adds(&lab, &store, 2, 50);
    assert_all_added(&cluster, 0, &lab, running);
}

#[test]
fn three_members_leader_killed_mid_run_the_run_completes() {
    let lab = lab_with_hosts(2, 3);
    let mut cluster = EtcdCluster::start(&lab, &[0, 1, 2]);
    let store = cluster.store_arg();
    let leader = cluster.leader().expect("a healthy cluster has a leader");
    let mut running = spawn_adds(&lab, &store, 2, 15);
    let in_flight = running
        .iter()
        .filter(|(_, call)| is_running(call.pid()))
        .count();
    // The leader, so the run also rides out an election.
    cluster.kill_member(leader);
    assert!(
        in_flight > 0,
        "every ADD finished before the member was killed"
    );
    eprintln!("{in_flight} of 30 ADDs in flight when the leader was killed");
    running.extend(spawn_adds(&lab, &store, 2, 15));
    let survivor = (leader + 1) % cluster.member_count();
    assert_all_added(&cluster, survivor, &lab, running);
}

#[test]
fn quorum_lost_add_fails_fast_with_code_11_and_recovers_without_restart() {
    let mut lab = lab_with_hosts(1, 3);
    let mut cluster = EtcdCluster::start(&lab, &[0, 1, 2]);
    lab.use_store(cluster.store_arg());
    let nodes = vec![lab.node(0).name().to_string()];
    let first = lab.add_pod(0);
    let before = recorded(&cluster, 0, &nodes);

    cluster.kill_member(1);
    cluster.kill_member(2);
    let pod = Pod::new();
    let started = Instant::now();
    let outcome = lab.plugin_call(0, "ADD", &pod);
    let took = started.elapsed();
    eprintln!("ADD without quorum: {took:?}: {}", outcome.stdout.trim());
    outcome.expect_error_mentioning(11, &cluster.endpoints()[0]);
    outcome.expect_error_mentioning(11, "try again later");
    assert!(took < FAILS_WITHIN, "ADD without quorum took {took:?}");
    // The fjord-ipam binary's error path: the same code and message.
    let store = cluster.store_arg();
    let started = Instant::now();
    let outcome =
        ipam_call(&lab, 0, &store, "ADD", &unique_container_id()).run_in(lab.node(0).netns());
    outcome.expect_error_mentioning(11, &cluster.endpoints()[2]);
    assert!(
        started.elapsed() < FAILS_WITHIN,
        "fjord-ipam ADD without quorum took {:?}",
        started.elapsed()
    );
    // Nobody at the address (no ARP answer on the segment): the connect timeout bounds it.
    let nobody = "etcd:http://10.250.0.199:2379";
    let started = Instant::now();
    ipam_call(&lab, 0, nobody, "ADD", &unique_container_id())
        .run_in(lab.node(0).netns())
        .expect_error_mentioning(11, "http://10.250.0.199:2379");
    assert!(
        started.elapsed() < FAILS_WITHIN,
        "ADD against nobody took {:?}",
        started.elapsed()
    );
    let veth = host_veth_name(&pod.container_id, &pod.ifname);
    assert!(
        !lab.node(0).netns().try_ip(&["link", "show", &veth]),
        "the failed ADD left its veth {veth}"
    );

    cluster.start_member(1);
    cluster.start_member(2);
    cluster.wait_healthy(fjord_conformance::etcd::HEALTHY_WITHIN);
    assert_eq!(
        recorded(&cluster, 0, &nodes),
        before,
        "the failed ADD changed the store"
    );
    let second = lab.add_pod(0);
    assert_ne!(second.ipv4, first.ipv4);
    assert!(recorded(&cluster, 0, &nodes).contains(&(second.pod.container_id.clone(), second.ipv4)));
    lab.del_pod(&second);
    lab.del_pod(&first);
    assert!(
        recorded(&cluster, 0, &nodes).is_empty(),
        "DEL left allocations"
    );
}

/// Waits until every node's kernel has a fjord route covering each pod on other nodes.
fn wait_pod_routes(lab: &Lab, pods: &[LabPod]) {
    for i in 0..lab.node_count() {
        fjord_conformance::poll_until(
            ROUTES_WITHIN,
            &format!("node{} routes every other node's pods", i + 1),
            || {
                let routes = lab.node(i).fjord_routes();
                pods.iter().filter(|p| p.node != i).all(|p| {
                    [p.ipv4, p.ipv6]
                        .iter()
                        .all(|a| routes.iter().any(|r| r.dst.contains(*a)))
                })
            },
        );
    }
}

/// Every pod pings every pod on the other nodes, IPv4 and IPv6. A pair gets three
/// tries: the first echo after a route appears can be lost to neighbour resolution on a
/// loaded machine; a pair that is not routed fails all three.
fn assert_pods_reach_each_other(pods: &[LabPod]) {
    let mut failures = Vec::new();
    for a in pods {
        for b in pods.iter().filter(|b| b.node != a.node) {
            for v6 in [false, true] {
                if !(0..3).any(|_| a.ping_once(b.address(v6))) {
                    failures.push(format!("{} -> {}", a.address(v6), b.address(v6)));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "pod pings failed:\n{}",
        failures.join("\n")
    );
}

const ROUTES_WITHIN: Duration = Duration::from_secs(15);
/// In the lab pool, far from the blocks claimed in order from its start.
const NEW_BLOCK_ADDRESS: &str = "10.244.200.5";

/// A pod on node `i` whose IPv4 address is requested (CNI_ARGS `IP=`), so its block is
/// claimed by this ADD.
fn add_pod_with_ipv4(lab: &Lab, i: usize, ipv4: &str) -> LabPod {
    let pod = Pod::new();
    let result = lab
        .plugin_command("ADD", &pod, &lab.cni_config(i))
        .with_cni_args(&format!("IP={ipv4}"))
        .run_in(lab.node(i).netns())
        .expect_ok();
    let pod = LabPod {
        pod,
        node: i,
        ipv4: result_ipv4(&result).ip(),
        ipv6: result_ipv6(&result).ip(),
        result,
    };
    assert_eq!(
        pod.ipv4.to_string(),
        ipv4,
        "the requested address was not given"
    );
    pod
}
const TIMERS: [&str; 4] = ["--hold-time", "9", "--graceful-restart-time", "9"];

#[test]
fn three_node_lab_on_etcd_reaches_every_pod_and_rides_out_an_etcd_outage() {
    let mut lab = lab_with_hosts(3, 1);
    let mut cluster = EtcdCluster::start(&lab, &[0]);
    lab.use_store(cluster.store_arg());
    let mut daemons: Vec<_> = (0..3).map(|i| lab.start_routed(i, &TIMERS)).collect();
    for i in 0..3 {
        lab.wait_established(i, &lab.mesh_peers_of(i), ROUTES_WITHIN);
    }
    let mut pods: Vec<_> = (0..3).map(|i| lab.add_pod(i)).collect();
    wait_pod_routes(&lab, &pods);
    assert_pods_reach_each_other(&pods);

    // etcd away: the daemons keep their peers and kernel routes.
    let routes_before: Vec<_> = (0..3).map(|i| lab.node(i).fjord_routes()).collect();
    cluster.kill_member(0);
    std::thread::sleep(Duration::from_secs(3));
    for (i, before) in routes_before.iter().enumerate() {
        assert_eq!(
            &lab.node(i).fjord_routes(),
            before,
            "node{} changed its routes while etcd was away\n{}",
            i + 1,
            lab.routed_log_tail(i)
        );
        assert!(
            lab.routed_log_tail(i)
                .contains("cannot read the node registry"),
            "node{} did not notice etcd going away\n{}",
            i + 1,
            lab.routed_log_tail(i)
        );
    }
    assert_pods_reach_each_other(&pods);

    // etcd back: the daemons read the registry again and a new pod is reachable.
    cluster.start_member(0);
    cluster.wait_healthy(fjord_conformance::etcd::HEALTHY_WITHIN);
    for i in 0..3 {
        fjord_conformance::poll_until(
            ROUTES_WITHIN,
            &format!("node{} reads the registry again", i + 1),
            || lab.routed_log_tail(i).contains("readable again"),
        );
    }
    // A block claimed now (a requested address outside node3's block) must reach the
    // other nodes' kernels: the daemons are announcing from the store again.
    pods.push(add_pod_with_ipv4(&lab, 2, NEW_BLOCK_ADDRESS));
    assert!(
        routes_before[0]
            .iter()
            .all(|r| !r.dst.contains(pods[3].ipv4)),
        "the new block was routed before it was claimed"
    );
    wait_pod_routes(&lab, &pods);
    assert_pods_reach_each_other(&pods);
    for d in &mut daemons {
        d.assert_running();
    }
}

/// A two-node lab on an `https://` etcd member that requires client certificates, with
/// certificates made by openssl for this test.
struct TlsSetup {
    lab: Lab,
    cluster: EtcdCluster,
    pki: TestPki,
}

impl TlsSetup {
    fn new() -> TlsSetup {
        let mut lab = lab_with_hosts(2, 1);
        let pki_dir = lab.dir().join("pki");
        std::fs::create_dir_all(&pki_dir).unwrap();
        let pki = TestPki::make(&pki_dir, &[lab.host(0).address_v4()]);
        let cluster = EtcdCluster::start_tls(&lab, &[0], pki.server());
        lab.use_store(cluster.store_arg());
        assert!(cluster.store_arg().starts_with("etcd:https://"));
        TlsSetup { lab, cluster, pki }
    }

    /// The daemon's flags for the CA `ca` and, when `client`, the client certificate.
    fn routed_flags(&self, ca: &str, client: bool) -> Vec<String> {
        let mut flags = vec![
            "--etcd-ca-cert-file".to_string(),
            self.pki.path(ca).display().to_string(),
        ];
        if client {
            for (flag, file) in [
                ("--etcd-cert-file", "client.crt"),
                ("--etcd-key-file", "client.key"),
            ] {
                flags.push(flag.into());
                flags.push(self.pki.path(file).display().to_string());
            }
        }
        flags.extend(TIMERS.iter().map(|s| s.to_string()));
        flags
    }

    /// The lab's plugin config for node `i` with the conflist's TLS keys.
    fn cni_config(&self, i: usize, ca: &str, client: bool) -> Value {
        let mut conf = self.lab.cni_config(i);
        conf["ipam"]["etcdCACertFile"] = json!(self.pki.path(ca));
        if client {
            conf["ipam"]["etcdCertFile"] = json!(self.pki.path("client.crt"));
            conf["ipam"]["etcdKeyFile"] = json!(self.pki.path("client.key"));
        }
        conf
    }

    fn add_pod(&self, i: usize) -> LabPod {
        let pod = Pod::new();
        let result = self
            .lab
            .plugin_command("ADD", &pod, &self.cni_config(i, "ca.crt", true))
            .run_in(self.lab.node(i).netns())
            .expect_ok();
        LabPod {
            pod,
            node: i,
            ipv4: result_ipv4(&result).ip(),
            ipv6: result_ipv6(&result).ip(),
            result,
        }
    }

    fn del_pod(&self, pod: &LabPod) {
        self.lab
            .plugin_command("DEL", &pod.pod, &self.cni_config(pod.node, "ca.crt", true))
            .run_in(self.lab.node(pod.node).netns())
            .expect_ok();
    }
}

#[test]
fn https_etcd_with_client_certificates_serves_the_daemons_and_the_plugin() {
    let setup = TlsSetup::new();
    let lab = &setup.lab;
    let flags = setup.routed_flags("ca.crt", true);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let _daemons: Vec<_> = (0..2).map(|i| lab.start_routed(i, &flags)).collect();
    for i in 0..2 {
        lab.wait_established(i, &lab.mesh_peers_of(i), ROUTES_WITHIN);
    }
    let pods: Vec<_> = (0..2).map(|i| setup.add_pod(i)).collect();
    wait_pod_routes(lab, &pods);
    assert_pods_reach_each_other(&pods);

    // The records are in etcd, read back over TLS with the same files.
    let nodes: Vec<String> = (0..2).map(|i| lab.node(i).name().to_string()).collect();
    let spec = match setup.cluster.store_arg().parse::<fjord_ipam::StoreSpec>() {
        Ok(fjord_ipam::StoreSpec::Etcd(mut spec)) => {
            spec.tls = Some(fjord_ipam::config::EtcdTls {
                ca_cert_file: setup.pki.path("ca.crt"),
                client: Some(fjord_ipam::config::ClientIdentity {
                    cert_file: setup.pki.path("client.crt"),
                    key_file: setup.pki.path("client.key"),
                }),
            });
            spec
        }
        other => panic!("{other:?}"),
    };
    let held: BTreeSet<(String, IpAddr)> = setup.cluster.in_member_netns(0, || {
        let store = EtcdStore::open(&spec).expect("open the store over TLS");
        let mut all = BTreeSet::new();
        for node in &nodes {
            for block in store.snapshot(node).expect("read the store").own {
                for (address, allocation) in block.allocations() {
                    all.insert((allocation.handle.container_id.clone(), address));
                }
            }
        }
        all
    });
    for pod in &pods {
        assert!(
            held.contains(&(pod.pod.container_id.clone(), pod.ipv4)),
            "{held:?}"
        );
    }
    for pod in &pods {
        setup.del_pod(pod);
    }
}

#[test]
fn a_wrong_ca_or_a_missing_client_certificate_fails_with_code_11_naming_the_cause() {
    let setup = TlsSetup::new();
    let lab = &setup.lab;
    let endpoint = setup.cluster.endpoints()[0].clone();
    // The server's certificate is not signed by the CA the plugin trusts.
    let pod = Pod::new();
    let started = Instant::now();
    let answer = lab
        .plugin_command("ADD", &pod, &setup.cni_config(0, "wrong-ca.crt", true))
        .run_in(lab.node(0).netns())
        .expect_error_mentioning(11, &endpoint);
    let msg = answer["msg"].as_str().unwrap_or_default().to_string();
    assert!(
        msg.contains("invalid peer certificate") && msg.contains("UnknownIssuer"),
        "the message does not say the server's certificate is of another CA: {msg}"
    );
    assert!(
        started.elapsed() < FAILS_WITHIN,
        "took {:?}",
        started.elapsed()
    );
    let veth = host_veth_name(&pod.container_id, &pod.ifname);
    assert!(
        !lab.node(0).netns().try_ip(&["link", "show", &veth]),
        "the failed ADD left its veth {veth}"
    );
    // The right CA but no client certificate: etcd's --client-cert-auth refuses it.
    let pod = Pod::new();
    let answer = lab
        .plugin_command("ADD", &pod, &setup.cni_config(0, "ca.crt", false))
        .run_in(lab.node(0).netns())
        .expect_error_mentioning(11, &endpoint);
    let msg = answer["msg"].as_str().unwrap_or_default().to_string();
    assert!(msg.contains("no client certificate is configured"), "{msg}");
    // An https:// store without a CA file is a configuration error (code 7).
    let mut conf = lab.cni_config(0);
    conf["ipam"]["etcdCertFile"] = json!(setup.pki.path("client.crt"));
    conf["ipam"]["etcdKeyFile"] = json!(setup.pki.path("client.key"));
    lab.plugin_command("ADD", &Pod::new(), &conf)
        .run_in(lab.node(0).netns())
        .expect_error_mentioning(7, "needs etcdCACertFile");

    // The daemon with the wrong CA cannot register its node: it exits naming the cause.
    let flags = setup.routed_flags("wrong-ca.crt", true);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let _daemon = lab.start_routed(0, &flags);
    fjord_conformance::poll_until(Duration::from_secs(15), "fjord-routed exits", || {
        !lab.routed_alive(0)
    });
    let log = lab.routed_log_tail(0);
    assert!(
        log.contains("UnknownIssuer") && log.contains(&endpoint),
        "{log}"
    );
}
