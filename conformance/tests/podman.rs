//! End to end through a real container runtime: podman 4.3's CNI backend (the Go libcni)
//! loads a conflist naming the plugin, runs ADD when a container starts and DEL from its
//! cleanup when the container exits. Run against both plugins (`fjord` and `reference`).
//!
//! podman runs inside a throwaway node namespace (`nsenter --net=`, not `ip netns exec`,
//! which remounts /sys and breaks runc's cgroups), so the container's host-end veth and
//! routes land there. Everything podman writes lives in the test's temp dir
//! (CONTAINERS_CONF, CONTAINERS_STORAGE_CONF); the image is busybox imported from a rootfs
//! made here, so no registry is needed. docs/testing.md says what podman needs here.
//!
//! hostPort: the shipped conflist's chain (`fjord`, then the reference `portmap` and
//! `bandwidth` with their capabilities) under `podman run -p`: a connection from another
//! namespace to the node's port reaches the container's server.

use fjord_conformance::plugin::NETWORK_NAME;
use fjord_conformance::podman::{CniNetwork, PrivatePodman};
use fjord_conformance::{
    fjord_bin, host_veth_name, poll_until, unique_ifname, unique_name, FjordOptions, Flavor, Netns,
    PluginUnderTest,
};
use ipnetwork::IpNetwork;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
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
    /// Dropped first: its storage lives in `put`'s temp dir.
    podman: PrivatePodman,
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
        let setup = PodmanOnNode::without_conflist(flavor);
        setup.write_conflist(&setup.put.conflist("1.0.0"));
        setup
    }

    /// Everything but the conflist, which the caller writes with [`Self::write_conflist`].
    fn without_conflist(flavor: Flavor) -> PodmanOnNode {
        assert_preconditions();
        let put = PluginUnderTest::new(flavor);
        put.node().add_stand_in_address(IpAddr::V4(NODE_ADDRESS));
        let root = put.temp_dir().join("podman");
        for dir in ["cni-bin", "net.d", "rootfs/bin"] {
            std::fs::create_dir_all(root.join(dir)).expect("create podman dirs");
        }
        let network = CniNetwork {
            config_dir: root.join("net.d"),
            plugin_dirs: vec![root.join("cni-bin"), "/usr/lib/cni".into()],
        };
        let podman = PrivatePodman::new(&root, Some(&network));
        let setup = PodmanOnNode { podman, put, root };
        setup.link_plugins();
        setup.import_busybox_image();
        setup
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
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

    fn write_conflist(&self, conflist: &serde_json::Value) {
        let file = self.path("net.d").join(format!("{NETWORK_NAME}.conflist"));
        write(&file, &serde_json::to_string_pretty(conflist).unwrap());
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
            .arg("podman");
        self.podman.configure(&mut cmd);
        cmd
    }

    /// Starts `podman run -i --rm` of the test script, attached to pipes.
    fn run_container(&self, name: &str) -> RunningContainer {
        self.run_container_with(name, &[], &container_script())
    }

    /// `podman run -i --rm` of `script` with more `podman run` options (`-p`).
    fn run_container_with(&self, name: &str, options: &[&str], script: &str) -> RunningContainer {
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
        .args(options)
        .args([IMAGE, "sh", "-c", script])
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

    /// Waits for a line starting with `prefix`; panics with the output when none comes.
    fn wait_for_line(&mut self, prefix: &str) {
        let deadline = Instant::now() + CONTAINER_REPORT_WITHIN;
        while !self.stdout.iter().any(|l| l.starts_with(prefix)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.stdout.push(line),
                Err(_) => panic!("the container printed no {prefix:?}\n{}", self.output()),
            }
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

/// The node's port published with `-p`, and where the container's server listens.
const HOST_PORT: u16 = 18080;
const CONTAINER_PORT: u16 = 80;
/// The node's side of the link to the client namespace, and the client's (TEST-NET-2).
const NODE_LINK_ADDRESS: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const CLIENT_ADDRESS: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);

/// The plugins deploy/01-fjord.conflist chains after `fjord` (portmap, bandwidth).
fn shipped_chain() -> Vec<serde_json::Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/01-fjord.conflist");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let list: serde_json::Value = serde_json::from_str(&text).expect("the conflist is JSON");
    let plugins = list["plugins"].as_array().expect("plugins").clone();
    assert_eq!(plugins[0]["type"], "fjord", "{}", path.display());
    plugins[1..].to_vec()
}

/// One HTTP GET from `client` to `address`; the response, or why there is none.
fn http_get_from(client: &Netns, address: SocketAddr) -> Result<String, String> {
    let path = client.path();
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).map_err(|e| format!("open {path:?}: {e}"))?;
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("setns: {e}"))?;
        let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1))
            .map_err(|e| format!("connect {address}: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(|e| e.to_string())?;
        write!(stream, "GET / HTTP/1.0\r\n\r\n").map_err(|e| format!("send: {e}"))?;
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .map_err(|e| format!("read: {e}"))?;
        Ok(answer)
    })
    .join()
    .expect("the client thread")
}

#[test]
fn a_host_port_reaches_the_container_through_the_shipped_chain() {
    let setup = PodmanOnNode::without_conflist(Flavor::Fjord);
    let mut conflist = setup.put.conflist("1.0.0");
    let chain = shipped_chain();
    assert!(
        chain.iter().any(|p| p["type"] == "portmap"),
        "the shipped conflist chains no portmap: {chain:?}"
    );
    conflist["plugins"]
        .as_array_mut()
        .expect("plugins")
        .extend(chain);
    setup.write_conflist(&conflist);

    // A client outside the node, on a link of its own to it.
    let node = setup.put.node();
    let client = Netns::new("cl");
    let (node_end, client_end) = (unique_ifname("h"), unique_ifname("c"));
    node.ip(&[
        "link",
        "add",
        &node_end,
        "type",
        "veth",
        "peer",
        "name",
        &client_end,
        "netns",
        client.name(),
    ]);
    node.ip(&[
        "addr",
        "add",
        &format!("{NODE_LINK_ADDRESS}/24"),
        "dev",
        &node_end,
    ]);
    node.ip(&["link", "set", &node_end, "up"]);
    client.ip(&[
        "addr",
        "add",
        &format!("{CLIENT_ADDRESS}/24"),
        "dev",
        &client_end,
    ]);
    client.ip(&["link", "set", &client_end, "up"]);

    let token = format!("served-by-{}", unique_name("pod"));
    let script = format!(
        "mkdir -p /tmp/www && echo {token} > /tmp/www/index.html && \
         httpd -p {CONTAINER_PORT} -h /tmp/www && echo serving; read line; exit 0"
    );
    let publish = format!("{HOST_PORT}:{CONTAINER_PORT}");
    let name = format!("{}-hp", node.name());
    let mut container = setup.run_container_with(&name, &["-p", &publish], &script);
    container.wait_for_line("serving");
    let target = SocketAddr::from((NODE_LINK_ADDRESS, HOST_PORT));
    let deadline = Instant::now() + Duration::from_secs(10);
    let answer = loop {
        let answer = http_get_from(&client, target);
        if answer.as_ref().is_ok_and(|a| a.contains(&token)) || Instant::now() > deadline {
            break answer;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        answer.as_ref().is_ok_and(|a| a.contains(&token)),
        "{target} from the client did not reach the container's server: {answer:?}\n\
         node nat table:\n{}\n{}\nplugin log:\n{}",
        String::from_utf8_lossy(&node.run("iptables", &["-t", "nat", "-S"]).stdout),
        container.output(),
        setup.plugin_log()
    );

    // DEL runs the chain backwards: portmap's rules go, so the port answers no more.
    let status = container.finish();
    assert!(
        status.success(),
        "podman run failed: {status}\n{}",
        container.output()
    );
    poll_until(RELEASED_WITHIN, "the host port is unpublished", || {
        http_get_from(&client, target).is_err()
    });
}
