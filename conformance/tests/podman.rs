//! End to end through a real container runtime: podman 4.3's CNI backend (the Go libcni)
//! loads a conflist naming the plugin, runs ADD when a container starts and DEL from its
//! cleanup when the container exits. Run against both plugins (`fjord` and `reference`).
//!
//! podman runs inside a throwaway node namespace (`nsenter --net=`, not `ip netns exec`,
//! which remounts /sys and breaks runc's cgroups), so the container's host-end veth and
//! routes land there. Everything podman writes lives in the test's temp dir
//! (CONTAINERS_CONF, CONTAINERS_STORAGE_CONF); the image is busybox imported from a rootfs
//! made here, so no registry is needed. Notes: ../shared/notes/podman-cni.md.

use fjord_conformance::plugin::NETWORK_NAME;
use fjord_conformance::{
    fjord_bin, host_veth_name, poll_until, FjordOptions, Flavor, PluginUnderTest,
};
use ipnetwork::IpNetwork;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

const INSTALL_HINT: &str = "conformance/scripts/install-test-deps.sh installs it";
const BUSYBOX: &str = "/bin/busybox";
const IMAGE: &str = "localhost/fjord-test-busybox";
/// The node's own address (TEST-NET-1: never routed anywhere), held by a bridge in the
/// node namespace; the container pings it.
const NODE_ADDRESS: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// How long the container may take to print its address and ping result.
const CONTAINER_REPORT_WITHIN: Duration = Duration::from_secs(60);
/// How long podman may take to exit once the container's stdin closes.
const PODMAN_EXIT_WITHIN: Duration = Duration::from_secs(60);
/// How long podman's cleanup may take to run DEL after the container exited.
const RELEASED_WITHIN: Duration = Duration::from_secs(15);

/// What the container runs: prints its eth0 address and MTU, pings the node, reports the
/// ping's exit status, then waits for stdin to close so the test can look at the node
/// while the container is alive.
fn container_script() -> String {
    format!(
        "ip -4 -o addr show eth0; echo mtu=$(cat /sys/class/net/eth0/mtu); \
         ping -c1 -W2 {NODE_ADDRESS}; echo ping-exit=$?; read line; exit 0"
    )
}

/// A plugin set up on a node namespace, with a private podman configured to run it.
/// Dropping it resets podman's storage, unmounts what is left and removes the temp dir
/// and the node namespace.
struct PodmanOnNode {
    put: PluginUnderTest,
    /// `<temp dir>/podman`: configs, storage, rootfs, CNI bin and conf dirs.
    root: PathBuf,
}

fn assert_preconditions() {
    for cmd in ["podman", "runc", "conmon", "nsenter"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {cmd}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(found, "`{cmd}` is not installed: {INSTALL_HINT}");
    }
    assert!(
        Path::new(BUSYBOX).is_file(),
        "{BUSYBOX} is missing (package busybox-static): {INSTALL_HINT}"
    );
}

impl PodmanOnNode {
    fn new(flavor: Flavor) -> PodmanOnNode {
        assert_preconditions();
        let put = PluginUnderTest::new(flavor);
        put.node().add_stand_in_address(IpAddr::V4(NODE_ADDRESS));
        let root = put.temp_dir().join("podman");
        let setup = PodmanOnNode { put, root };
        setup.write_configs();
        setup.link_plugins();
        setup.write_conflist();
        setup.import_busybox_image();
        setup
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn write_configs(&self) {
        for dir in ["cni-bin", "net.d", "graph", "run", "tmp", "rootfs/bin"] {
            std::fs::create_dir_all(self.path(dir)).expect("create podman dirs");
        }
        let containers_conf = format!(
            r#"[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
netns = "private"

[network]
network_backend = "cni"
network_config_dir = "{net}"
cni_plugin_dirs = ["{bin}", "/usr/lib/cni"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{root}/events.log"
tmp_dir = "{root}/tmp"
"#,
            net = self.path("net.d").display(),
            bin = self.path("cni-bin").display(),
            root = self.root.display(),
        );
        let storage_conf = format!(
            "[storage]\ndriver = \"overlay\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
            self.path("graph").display(),
            self.path("run").display(),
        );
        write(&self.path("containers.conf"), &containers_conf);
        write(&self.path("storage.conf"), &storage_conf);
    }

    /// Links the workspace's `fjord` and `fjord-ipam` into the CNI bin dir podman searches
    /// first (the reference plugins come from /usr/lib/cni, the second dir).
    fn link_plugins(&self) {
        if self.put.flavor != Flavor::Fjord {
            return;
        }
        for name in ["fjord", "fjord-ipam"] {
            std::os::unix::fs::symlink(fjord_bin(name), self.path("cni-bin").join(name))
                .expect("link plugin into the CNI bin dir");
        }
    }

    fn write_conflist(&self) {
        let conflist = self.put.conflist("1.0.0");
        let file = self.path("net.d").join(format!("{NETWORK_NAME}.conflist"));
        write(&file, &serde_json::to_string_pretty(&conflist).unwrap());
    }

    /// `localhost/fjord-test-busybox`: busybox-static and its applet links, imported.
    fn import_busybox_image(&self) {
        let bin = self.path("rootfs/bin");
        std::fs::copy(BUSYBOX, bin.join("busybox")).expect("copy busybox into the rootfs");
        let applets = run_ok(Command::new(BUSYBOX).arg("--list"));
        for applet in String::from_utf8_lossy(&applets.stdout).lines() {
            if applet != "busybox" {
                std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("applet link");
            }
        }
        let mut tar = Command::new("tar")
            .arg("-C")
            .arg(self.path("rootfs"))
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn tar");
        let mut import = self.podman();
        import
            .args(["import", "--change", "CMD [\"/bin/sh\"]", "--change"])
            .args(["ENV PATH=/bin", "-", IMAGE])
            .stdin(tar.stdout.take().expect("tar stdout"));
        run_ok(&mut import);
        assert!(tar.wait().expect("wait for tar").success(), "tar failed");
    }

    /// `podman` with this setup's configs, inside the node namespace.
    fn podman(&self) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.put.node().path_str()))
            .arg("podman")
            .env("CONTAINERS_CONF", self.path("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.path("storage.conf"));
        cmd
    }

    /// Starts `podman run -i --rm` of the test script, attached to pipes.
    fn run_container(&self, name: &str) -> RunningContainer {
        let stderr_file = self.path(&format!("{name}.stderr"));
        let mut cmd = self.podman();
        cmd.args([
            "run",
            "-i",
            "--rm",
            "--name",
            name,
            "--network",
            NETWORK_NAME,
        ])
        .args([IMAGE, "sh", "-c", &container_script()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_file).expect("podman stderr file"));
        let mut child = cmd.spawn().expect("spawn podman run");
        let stdin = child.stdin.take();
        let lines = lines_of(child.stdout.take().expect("podman stdout"));
        RunningContainer {
            child,
            stdin,
            lines,
            stdout: Vec::new(),
            stderr_file,
        }
    }

    fn container_id(&self, name: &str) -> String {
        let mut cmd = self.podman();
        cmd.args(["inspect", "--format", "{{.Id}}", name]);
        String::from_utf8_lossy(&run_ok(&mut cmd).stdout)
            .trim()
            .to_string()
    }

    /// The tail of fjord's log, for failure messages.
    fn plugin_log(&self) -> String {
        let text = std::fs::read_to_string(self.put.log_file()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for PodmanOnNode {
    fn drop(&mut self) {
        let _ = self
            .podman()
            .args(["system", "reset", "--force"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        unmount_everything_under(&self.root);
    }
}

/// Lazily unmounts every mount point below `dir` (overlay layers podman left), deepest
/// first, so the temp dir can be removed.
fn unmount_everything_under(dir: &Path) {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = format!("{}/", dir.display());
    let mut points: Vec<&str> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|point| point.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        let _ = Command::new("umount").args(["-l", point]).status();
    }
}

/// A `podman run` in progress; killed on drop if it is still running.
struct RunningContainer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stdout: Vec<String>,
    stderr_file: PathBuf,
}

/// What the container reported about itself.
struct ContainerReport {
    address: IpNetwork,
    mtu: u32,
    ping_exit: i32,
}

impl RunningContainer {
    /// Reads the container's output until its ping result; panics with everything it
    /// printed (and podman's stderr) if that does not come.
    fn report(&mut self) -> ContainerReport {
        let deadline = Instant::now() + CONTAINER_REPORT_WITHIN;
        while !self.stdout.iter().any(|l| l.starts_with("ping-exit=")) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.stdout.push(line),
                Err(_) => panic!("the container did not report its ping\n{}", self.output()),
            }
        }
        let value = |key: &str| -> String {
            self.stdout
                .iter()
                .find_map(|l| l.strip_prefix(key))
                .unwrap_or_else(|| panic!("no {key} in the output\n{}", self.output()))
                .trim()
                .to_string()
        };
        ContainerReport {
            address: self.eth0_address(),
            mtu: value("mtu=").parse().expect("mtu is a number"),
            ping_exit: value("ping-exit=").parse().expect("exit code is a number"),
        }
    }

    /// The address in `ip -4 -o addr show eth0`: `2: eth0 inet 10.0.0.5/32 scope ...`.
    fn eth0_address(&self) -> IpNetwork {
        self.stdout
            .iter()
            .find_map(|l| {
                let mut words = l.split_whitespace();
                words.find(|w| *w == "inet")?;
                words.next()?.parse().ok()
            })
            .unwrap_or_else(|| panic!("the container printed no IPv4 address\n{}", self.output()))
    }

    /// Closes the container's stdin (its script ends) and waits for podman to exit.
    fn finish(&mut self) -> std::process::ExitStatus {
        drop(self.stdin.take());
        let deadline = Instant::now() + PODMAN_EXIT_WITHIN;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for podman") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "podman run did not exit within {PODMAN_EXIT_WITHIN:?} after stdin closed\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn output(&self) -> String {
        let stderr = std::fs::read_to_string(&self.stderr_file).unwrap_or_default();
        format!(
            "container stdout:\n{}\npodman stderr:\n{stderr}",
            self.stdout.join("\n")
        )
    }
}

impl Drop for RunningContainer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The lines a reader produces, delivered through a channel by a thread of their own.
fn lines_of(reader: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Runs `cmd`, panicking with its exact output when it cannot start or fails.
fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} ({INSTALL_HINT})"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn container_gets_a_pool_address_reaches_the_node_and_is_released(flavor: Flavor) {
    let setup = PodmanOnNode::new(flavor);
    let name = format!("{}-c", setup.put.node().name());
    let mut container = setup.run_container(&name);
    let report = container.report();
    let id = setup.container_id(&name);
    let host_end = assert_attached(&setup, &container, &report, &id);

    let status = container.finish();
    assert!(
        status.success(),
        "podman run failed: {status}\n{}",
        container.output()
    );
    assert_released(&setup.put, &id, report.address.ip(), &host_end);
}

/// Checks the running container against the store and the node: its address comes from
/// the pool and is recorded under its ID, it reached the node, and the node routes its
/// address to the host end. Returns the host end's name.
fn assert_attached(
    setup: &PodmanOnNode,
    container: &RunningContainer,
    report: &ContainerReport,
    id: &str,
) -> String {
    let (put, node, pod_ip) = (&setup.put, setup.put.node(), report.address.ip());
    let context = || {
        format!(
            "{}\nplugin log:\n{}",
            container.output(),
            setup.plugin_log()
        )
    };
    assert!(
        put.pool_v4().contains(pod_ip),
        "address {pod_ip} is outside the pool {}\n{}",
        put.pool_v4(),
        context()
    );
    let held: Vec<(IpAddr, String)> = put
        .allocations_of(id)
        .into_iter()
        .map(|a| (a.address, a.ifname))
        .collect();
    assert_eq!(
        held,
        vec![(pod_ip, "eth0".to_string())],
        "the IPAM store does not hold the container's address under its ID {id}\n{}",
        context()
    );
    let pinged = report.ping_exit == 0;
    assert!(
        pinged,
        "the container could not ping the node at {NODE_ADDRESS}\n{}",
        context()
    );
    let routes = node.routes_to(IpNetwork::new(pod_ip, 32).unwrap());
    assert_eq!(routes.len(), 1, "node routes to {pod_ip}: {routes:?}");
    let host_end = routes[0].dev.clone().expect("the pod route names a device");
    node.expect_link(&host_end);
    if put.flavor == Flavor::Fjord {
        assert_eq!(
            host_end,
            host_veth_name(id, "eth0"),
            "fjord's host-end name"
        );
        let conflist_mtu = FjordOptions::default().mtu;
        assert_eq!(
            report.mtu, conflist_mtu,
            "eth0's MTU is not the conflist's mtu"
        );
    }
    host_end
}

/// Waits for podman's DEL to have released the address and removed the host end and its
/// route.
fn assert_released(put: &PluginUnderTest, id: &str, pod_ip: IpAddr, host_end: &str) {
    let node = put.node();
    let host_route = IpNetwork::new(pod_ip, 32).unwrap();
    poll_until(RELEASED_WITHIN, "podman's DEL released the address", || {
        put.allocations_of(id).is_empty()
    });
    poll_until(
        RELEASED_WITHIN,
        "the host end and its route are gone",
        || node.routes_to(host_route).is_empty() && node.link(host_end).is_none(),
    );
}

#[test]
fn fjord_container_gets_a_pool_address_reaches_the_node_and_is_released() {
    container_gets_a_pool_address_reaches_the_node_and_is_released(Flavor::Fjord);
}

#[test]
fn reference_container_gets_a_pool_address_reaches_the_node_and_is_released() {
    container_gets_a_pool_address_reaches_the_node_and_is_released(Flavor::Reference);
}
