//! `--store kubernetes` end to end in a three-node lab: the stand-in API server
//! (conformance/src/fake_apiserver.rs, the real list/watch protocol with real Node JSON)
//! runs inside the lab on `host1`; every node's real `fjord-routed --store kubernetes`
//! watches it and meshes with the other Nodes' InternalIPs, announcing its Node's
//! podCIDRs; pods attached by the real `fjord` plugin with the `kubernetes` IPAM store get
//! addresses from their node's podCIDRs and reach the pods on the other nodes, IPv4 and
//! IPv6, also after the API server has gone away (the plugin never calls it). And the
//! daemon exits with a message naming the problem when its in-cluster credentials are
//! missing or no Node has its `--node-name`.

use fjord_conformance::fake_apiserver::{node_json, FakeApiServer};
use fjord_conformance::lab::{spawn_in_netns, stop_child, Lab, LabPod, LabSpec, STOP_GRACE};
use fjord_conformance::{fjord_bin, poll_until, result_ipv4, result_ipv6, CallOutcome, Netns, Pod};
use ipnetwork::IpNetwork;
use serde_json::{json, Value};
use std::fs::{File, OpenOptions};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Each node's `spec.podCIDRs`, as a controller manager with
/// `--cluster-cidr=10.244.0.0/16,fd00:244::/56` would assign them.
const POD_CIDRS: [[&str; 2]; 3] = [
    ["10.244.1.0/24", "fd00:244:0:1::/64"],
    ["10.244.2.0/24", "fd00:244:0:2::/64"],
    ["10.244.3.0/24", "fd00:244:0:3::/64"],
];
const MESH_UP_WITHIN: Duration = Duration::from_secs(40);

/// A `fjord-routed` this test started; stopped by its PID when dropped.
struct Daemon {
    child: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        stop_child(&mut self.child, STOP_GRACE);
    }
}

/// A TCP listener bound inside `ns`: only the binding thread enters the namespace, and
/// the socket stays there.
fn listener_in(ns: &Netns, address: SocketAddr) -> TcpListener {
    let path = ns.path();
    std::thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("setns into the API server's host namespace");
        TcpListener::bind(address).expect("bind the API server's port in the lab")
    })
    .join()
    .expect("binding thread")
}

fn start_daemon(lab: &Lab, i: usize, state: &Path, kubeconfig: &Path) -> Daemon {
    let node = lab.node(i);
    let log_path = lab.routed_log(i);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .unwrap_or_else(|e| panic!("open {}: {e}", log_path.display()));
    let mut cmd = Command::new(fjord_bin("fjord-routed"));
    cmd.arg("run")
        .args(["--node-name", node.name()])
        .args(["--node-address", &node.node_address_arg()])
        .arg("--store")
        .arg(format!("kubernetes:{}", state.display()))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--socket")
        .arg(lab.socket(i))
        .arg("--mtu-file")
        .arg(lab.mtu_file(i))
        .args(["--hold-time", "9", "--graceful-restart-time", "9"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup log fd"))
        .stderr(log);
    Daemon {
        child: spawn_in_netns(node.netns(), &mut cmd),
    }
}

/// The plugin's network config on node `i`: the `kubernetes` IPAM store on `state`,
/// the cluster pools only as bounds.
fn cni_config(lab: &Lab, i: usize, state: &Path) -> Value {
    let mut config = lab.cni_config(i);
    config["ipam"]["store"] = json!(format!("kubernetes:{}", state.display()));
    config
}

fn plugin(lab: &Lab, i: usize, state: &Path, command: &str, pod: &Pod) -> CallOutcome {
    lab.plugin_command(command, pod, &cni_config(lab, i, state))
        .run_in(lab.node(i).netns())
}

fn add_pod(lab: &Lab, i: usize, state: &Path) -> LabPod {
    let pod = Pod::new();
    let result = plugin(lab, i, state, "ADD", &pod).expect_ok();
    LabPod {
        ipv4: result_ipv4(&result).ip(),
        ipv6: result_ipv6(&result).ip(),
        pod,
        node: i,
        result,
    }
}

fn cidr(text: &str) -> IpNetwork {
    text.parse().unwrap()
}

/// Waits until node `i` has every other node as an Established mesh peer and its
/// blocks are exactly its Node's podCIDRs.
fn wait_ready(lab: &Lab, i: usize) {
    let mut want_peers = lab.mesh_peers_of(i);
    want_peers.sort();
    let want_blocks: Vec<IpNetwork> = POD_CIDRS[i].iter().map(|c| cidr(c)).collect();
    let deadline = Instant::now() + MESH_UP_WITHIN;
    loop {
        let status = lab.try_status_json(i);
        if let Ok(s) = &status {
            let mut peers: Vec<IpAddr> = s["peers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["state"] == "Established")
                .filter_map(|p| p["address"].as_str()?.parse().ok())
                .collect();
            peers.sort();
            let blocks: Vec<IpNetwork> = s["blocks"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|b| b.as_str()?.parse().ok())
                .collect();
            if peers == want_peers && blocks == want_blocks {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{}: peers {want_peers:?} Established and blocks {want_blocks:?} not within {MESH_UP_WITHIN:?}\nlast status: {status:?}\n--- daemon log ---\n{}",
            lab.node(i).name(),
            lab.routed_log_tail(i)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn three_nodes_mesh_from_node_objects_and_pods_in_pod_cidrs_reach_each_other() {
    let lab = Lab::new(LabSpec {
        nodes: 3,
        subnets: 1,
        hosts: 1,
    });
    let api_host = lab.host(0);
    let server = FakeApiServer::on(listener_in(
        api_host.netns(),
        SocketAddr::new(IpAddr::V4(api_host.address_v4()), 0),
    ));
    for (i, cidrs) in POD_CIDRS.iter().enumerate() {
        let node = lab.node(i);
        let v4 = node.address_v4().to_string();
        let v6 = node.address_v6().to_string();
        server.apply(node_json(node.name(), &[&v4, &v6], cidrs));
    }
    let kubeconfig = lab.dir().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig);
    let state: PathBuf = lab.dir().join("kubernetes");

    // Before fjord-routed has written the podCIDRs, ADD says so with "try again later".
    let early = Pod::new();
    plugin(&lab, 0, &state, "ADD", &early).expect_error_mentioning(
        11,
        "fjord-routed has not written the node's podCIDRs yet: is it running?",
    );
    plugin(&lab, 0, &state, "DEL", &early).expect_ok();

    let daemons: Vec<Daemon> = (0..3)
        .map(|i| start_daemon(&lab, i, &state, &kubeconfig))
        .collect();
    for i in 0..3 {
        wait_ready(&lab, i);
    }
    let listed = server.lists();
    assert!(listed >= 3, "each daemon listed the Nodes: {listed}");

    // From here on no API server: the plugin never needs one, the daemons keep their
    // peers and routes.
    drop(server);
    let pods: Vec<LabPod> = (0..3).map(|i| add_pod(&lab, i, &state)).collect();
    for (i, pod) in pods.iter().enumerate() {
        assert!(
            cidr(POD_CIDRS[i][0]).contains(pod.ipv4),
            "{} not in {}",
            pod.ipv4,
            POD_CIDRS[i][0]
        );
        assert!(
            cidr(POD_CIDRS[i][1]).contains(pod.ipv6),
            "{} not in {}",
            pod.ipv6,
            POD_CIDRS[i][1]
        );
    }
    for i in 0..3 {
        poll_until(
            Duration::from_secs(10),
            "routes to the other nodes' podCIDRs",
            || {
                let routes = lab.node(i).fjord_routes();
                (0..3).filter(|j| *j != i).all(|j| {
                    POD_CIDRS[j].iter().all(|c| {
                        routes.iter().any(|r| {
                            r.dst == cidr(c)
                                && r.gateway == Some(lab.node(j).address(cidr(c).is_ipv6()))
                        })
                    })
                })
            },
        );
    }
    for from in &pods {
        for to in pods.iter().filter(|p| p.node != from.node) {
            for v6 in [false, true] {
                let target = to.address(v6);
                poll_until(
                    Duration::from_secs(10),
                    &format!(
                        "pod on node{} reaches {target} on node{}",
                        from.node + 1,
                        to.node + 1
                    ),
                    || from.ping_once(target),
                );
            }
        }
    }
    for i in 0..3 {
        assert!(lab.try_status_json(i).is_ok(), "{}", lab.routed_log_tail(i));
    }
    for pod in &pods {
        plugin(&lab, pod.node, &state, "DEL", &pod.pod).expect_ok();
    }
    drop(daemons);
}

/// Runs `fjord-routed run ... --store kubernetes:DIR EXTRA` in `ns` with `env` until it
/// exits (it must, within 40 s); returns its stderr.
fn routed_exit(ns: &Netns, dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(fjord_bin("fjord-routed"));
    cmd.args([
        "run",
        "--node-name",
        "node-x",
        "--node-address",
        "10.251.0.1",
    ])
    .arg("--store")
    .arg(format!("kubernetes:{}", dir.join("state").display()))
    .arg("--socket")
    .arg(dir.join("routed.sock"))
    .arg("--mtu-file")
    .arg(dir.join("mtu"))
    .args(extra)
    .env_remove("KUBECONFIG")
    .env("HOME", dir)
    .envs(env.iter().copied())
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let mut child = spawn_in_netns(ns, &mut cmd);
    let deadline = Instant::now() + Duration::from_secs(40);
    while child.try_wait().expect("wait for fjord-routed").is_none() {
        if Instant::now() > deadline {
            stop_child(&mut child, STOP_GRACE);
            panic!("fjord-routed did not exit within 40 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("fjord-routed output");
    assert!(!out.status.success(), "fjord-routed exited with success");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_daemon_exits_naming_what_is_wrong_with_its_credentials_or_node_name() {
    let ns = Netns::new("k");
    let dir = fjord_conformance::TempDir::new("kube");
    // In a pod without a mounted service account token.
    let stderr = routed_exit(
        &ns,
        dir.path(),
        &[],
        &[
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
            ("KUBERNETES_SERVICE_PORT", "443"),
        ],
    );
    assert!(stderr.contains("in-cluster service account"), "{stderr}");
    // An API server that has no Node by the daemon's --node-name.
    let server = FakeApiServer::on(listener_in(&ns, "127.0.0.1:0".parse().unwrap()));
    server.apply(node_json("node-1", &["10.251.0.9"], &["10.244.1.0/24"]));
    let kubeconfig = dir.join("kubeconfig");
    server.write_kubeconfig(&kubeconfig);
    let stderr = routed_exit(
        &ns,
        dir.path(),
        &["--kubeconfig", &kubeconfig.display().to_string()],
        &[],
    );
    assert!(stderr.contains("has no Node named node-x"), "{stderr}");
    assert!(server.lists() >= 1, "it listed the Nodes first");
}
