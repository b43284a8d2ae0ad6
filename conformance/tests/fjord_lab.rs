//! The real `fjord-lab` binary, end to end (issue 6, "fjord-lab: the main job"):
//! `up` (small), `status`, `exec`, a second `up` refused, `down`, and nothing left
//! behind; `up` interrupted by SIGINT (it cleans up itself) and by SIGKILL (`down`
//! cleans up) and by a `down` run meanwhile; and the in-process probe reporting the pairs of a cut-off pod as failed.
//!
//! Each test gives its lab a directory in its own temp dir and a namespace prefix
//! `fjt<pid>L<n>-`, so tests (and a lab an operator runs, `fjl-`) never meet.

use fjord_conformance::lab::{Lab, LabSpec};
use fjord_conformance::labstate::{LabState, STATE_FILE};
use fjord_conformance::netns::NETNS_DIR;
use fjord_conformance::reach::{probe_all, ProbePod};
use fjord_conformance::{unique_name, TempDir};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A lab of one test: its directory and prefix.
struct TestLab {
    _home: TempDir,
    dir: PathBuf,
    prefix: String,
}

impl TestLab {
    fn new() -> TestLab {
        let home = TempDir::new("lab");
        let dir = home.join("lab");
        TestLab {
            _home: home,
            dir,
            prefix: format!("{}-", unique_name("L")),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fjord-lab"));
        cmd.arg("--dir")
            .arg(&self.dir)
            .arg("--prefix")
            .arg(&self.prefix)
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run fjord-lab")
    }

    fn state(&self) -> Option<LabState> {
        LabState::load(&self.dir.join(STATE_FILE)).ok()
    }

    /// The processes the state file records; it is written before anything is started
    /// and outlives a killed `up`.
    fn pids(&self) -> Vec<u32> {
        let state = self
            .state()
            .expect("a state file once up has started a daemon");
        state.processes.iter().map(|p| p.pid).collect()
    }

    fn namespaces(&self) -> Vec<String> {
        std::fs::read_dir(NETNS_DIR)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&self.prefix))
            .collect()
    }

    /// Nothing of the lab is left: no namespace, no daemon, no directory.
    fn assert_gone(&self, pids: &[u32]) {
        assert_eq!(self.namespaces(), Vec::<String>::new(), "namespaces left");
        for pid in pids {
            assert!(!alive(*pid), "process {pid} of the lab still runs");
        }
        assert!(!self.dir.exists(), "{} is still there", self.dir.display());
    }
}

impl Drop for TestLab {
    fn drop(&mut self) {
        // A failed test must not leave its lab running.
        if self.dir.exists() || !self.namespaces().is_empty() {
            let _ = self.run(&["down"]);
        }
    }
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(|st| st != "Z"))
        })
        .unwrap_or(false)
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// No route into the pod pools or the lab underlay in the root namespace, and no link
/// named with the lab's prefix there.
fn assert_root_namespace_clean(prefix: &str) {
    for family in ["-4", "-6"] {
        let out = Command::new("ip")
            .args([family, "route", "show"])
            .output()
            .unwrap();
        let routes = String::from_utf8_lossy(&out.stdout);
        for line in routes.lines() {
            assert!(
                !line.starts_with("10.244.")
                    && !line.starts_with("10.250.")
                    && !line.starts_with("fd00:244")
                    && !line.starts_with("fd00:250")
                    && !line.contains("proto 200"),
                "a lab route in the root namespace: {line}"
            );
        }
    }
    let out = Command::new("ip").args(["-o", "link"]).output().unwrap();
    let links = String::from_utf8_lossy(&out.stdout);
    assert!(!links.contains(prefix), "a lab link in the root namespace");
}

#[test]
fn up_status_exec_second_up_down_leave_nothing_behind() {
    let lab = TestLab::new();
    let out = lab.run(&["up", "--nodes", "2", "--pods-per-node", "2"]);
    let up = text(&out);
    assert!(out.status.success(), "fjord-lab up failed:\n{up}");
    // 4 pods: 12 ordered pairs; the peer tables show the mesh.
    assert!(up.contains("12 of 12 pod pairs reach each other"), "{up}");
    assert!(up.contains("node1 -> node2:"), "{up}");
    assert!(up.contains("4/4 tcp6"), "{up}");
    assert!(
        up.contains("| 10.250.0.2   | node-to-node mesh | Established"),
        "{up}"
    );
    let state = lab.state().expect("a state file after up");
    let pids: Vec<u32> = state.processes.iter().map(|p| p.pid).collect();
    assert_eq!(pids.len(), 2, "one fjord-routed per node: {state:?}");
    assert!(pids.iter().all(|p| alive(*p)), "daemons run after up exits");
    assert_eq!(lab.namespaces().len(), 1 + 2 + 4, "{:?}", lab.namespaces());
    assert_root_namespace_clean(&lab.prefix);

    let out = lab.run(&["status"]);
    let status = text(&out);
    assert!(out.status.success(), "{status}");
    assert!(status.contains("node2-pod2"), "{status}");
    assert!(status.contains("Established"), "{status}");

    // exec: a pod on node2 pings a pod on node1; exit codes come through.
    let target = state.pod("node1-pod1").unwrap().ipv4.unwrap().to_string();
    let out = lab.run(&[
        "exec",
        "node2-pod1",
        "--",
        "ping",
        "-c",
        "1",
        "-W",
        "2",
        &target,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let out = lab.run(&["exec", "node1-pod2", "--", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let out = lab.run(&["exec", "node9-pod9", "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("no pod or node"), "{}", text(&out));

    // A second up refuses, and leaves the running lab alone.
    let out = lab.run(&["up", "--nodes", "2", "--pods-per-node", "2"]);
    let second = text(&out);
    assert!(!out.status.success(), "a second up succeeded:\n{second}");
    assert!(second.contains("already up"), "{second}");
    // The hint is the exact command for this lab.
    let down_hint = format!("--prefix {} down", lab.prefix);
    assert!(second.contains(&down_hint), "{second}");
    assert!(
        pids.iter().all(|p| alive(*p)),
        "the second up disturbed the daemons"
    );
    assert_eq!(lab.state().unwrap().pods.len(), 4);

    let out = lab.run(&["down"]);
    assert!(out.status.success(), "{}", text(&out));
    lab.assert_gone(&pids);
    let out = lab.run(&["down"]);
    assert!(out.status.success());
    assert!(text(&out).contains("no lab to tear down"), "{}", text(&out));
}

/// Starts `up` and waits until its state file records a daemon (mid-build: pods are
/// still to come); returns the child.
fn start_up_and_wait_for_a_daemon(lab: &TestLab) -> std::process::Child {
    let mut child = lab
        .command(&["up", "--nodes", "3", "--pods-per-node", "4"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn fjord-lab up");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if lab.state().is_some_and(|s| !s.processes.is_empty()) {
            return child;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("fjord-lab up exited ({status}) before it started a daemon");
        }
        assert!(Instant::now() < deadline, "up started no daemon in 60 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_exit(child: &mut std::process::Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "fjord-lab up did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn up_interrupted_by_sigint_cleans_up_and_by_sigkill_down_does() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;

    // SIGINT (Ctrl-C): up removes everything itself and exits 130.
    let lab = TestLab::new();
    let mut child = start_up_and_wait_for_a_daemon(&lab);
    let pids = lab.pids();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(60));
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("removing what was built"), "{stderr}");
    lab.assert_gone(&pids);

    // SIGKILL: nothing runs up's cleanup; down removes what it left.
    let lab = TestLab::new();
    let mut child = start_up_and_wait_for_a_daemon(&lab);
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
    wait_exit(&mut child, Duration::from_secs(10));
    let pids = lab.pids();
    assert!(
        !lab.namespaces().is_empty(),
        "a killed up left nothing to test down with"
    );
    let out = lab.run(&["up"]);
    assert!(
        text(&out).contains("did not finish") && text(&out).contains(" down`"),
        "up over a crashed lab: {}",
        text(&out)
    );
    let out = lab.run(&["down"]);
    assert!(out.status.success(), "{}", text(&out));
    lab.assert_gone(&pids);

    // `down` while `up` is still building: up is stopped first, nothing is left.
    let lab = TestLab::new();
    let mut child = start_up_and_wait_for_a_daemon(&lab);
    let pids = lab.pids();
    let out = lab.run(&["down"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("still running; stopping it first"),
        "{}",
        text(&out)
    );
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(130));
    lab.assert_gone(&pids);
}

#[test]
fn the_probe_reports_the_pairs_of_a_cut_off_pod_as_failed() {
    let lab = Lab::new(LabSpec::nodes(2));
    let _daemons: Vec<_> = (0..2).map(|i| lab.start_routed(i, &[])).collect();
    for i in 0..2 {
        lab.wait_established(i, &lab.mesh_peers_of(i), Duration::from_secs(30));
    }
    let pods = [lab.add_pod(0), lab.add_pod(0), lab.add_pod(1)];
    let probe_pods: Vec<ProbePod> = pods.iter().map(ProbePod::from).collect();
    // Wait for the routes to node 1's pod (so only the cut below can fail).
    let deadline = Instant::now() + Duration::from_secs(20);
    while !pods[0].ping_once(pods[2].ipv4) {
        assert!(Instant::now() < deadline, "pods never reached each other");
    }
    // Cut pod 1 (on node 0) off: its interface down.
    pods[1].netns().ip(&["link", "set", "eth0", "down"]);
    let results = probe_all(&probe_pods, 2, &|_, _| {}).expect("probe runs");
    assert_eq!(results.len(), 6);
    for r in &results {
        let involves_cut = r.from == 1 || r.to == 1;
        if involves_cut {
            assert_eq!(
                r.ok, [false; 4],
                "a pair with the cut-off pod passed: {r:?}"
            );
        } else {
            assert!(r.all_ok(), "a healthy pair failed: {r:?}");
        }
    }
}

/// The lab's options together: nodes on two subnets (cross-subnet pairs through VXLAN) on
/// an etcd store that lives on a host of subnet 0, so nodes of subnet 1 reach it only
/// through the router (and the host must route its answers back the same way).
#[test]
fn two_subnets_cross_subnet_on_etcd_reach_every_pod() {
    let lab = TestLab::new();
    let out = lab.run(&[
        "up",
        "--nodes",
        "4",
        "--subnets",
        "2",
        "--pods-per-node",
        "1",
        "--encapsulation",
        "cross-subnet",
        "--store",
        "etcd",
    ]);
    let up = text(&out);
    assert!(out.status.success(), "fjord-lab up failed:\n{up}");
    assert!(up.contains("12 of 12 pod pairs reach each other"), "{up}");
    let state = lab.state().expect("a state file after up");
    // Four daemons and the etcd member.
    assert_eq!(state.processes.len(), 5, "{state:?}");
    let pids: Vec<u32> = state.processes.iter().map(|p| p.pid).collect();
    let out = lab.run(&["down"]);
    assert!(out.status.success(), "{}", text(&out));
    lab.assert_gone(&pids);
}
