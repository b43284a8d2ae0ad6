//! Running a CNI plugin exactly as a runtime does, and the two plugins under test.
//!
//! A [`PluginCall`] is a subprocess whose network namespace is a node [`Netns`]: the
//! namespace file is opened before the spawn and entered with `setns` between fork and
//! exec (not `ip netns exec`, which also remounts `/sys`), and whose environment holds
//! nothing but the `CNI_*` variables and `PATH`, as in podman's cleanup processes.

use crate::bins::{fjord_bin, fjord_bin_dir, reference_plugin, reference_plugin_dir};
use crate::names::unique_container_id;
use crate::netns::Netns;
use crate::store::{fjord_dir_allocations, host_local_allocations, StoreAllocation};
use crate::tempdir::TempDir;
use ipnetwork::IpNetwork;
use nix::sched::CloneFlags;
use serde_json::{json, Value};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// `PATH` given to plugins: enough for a plugin that shells out, nothing else.
pub const PLUGIN_PATH_ENV: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A plugin that has not exited after this long is killed and the test fails.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// One invocation. `None` leaves the variable out of the environment entirely.
#[derive(Clone, Debug)]
pub struct PluginCall {
    pub binary: PathBuf,
    pub command: Option<String>,
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    pub cni_args: Option<String>,
    pub cni_path: Option<String>,
    /// Extra variables, e.g. to set one of the above to an odd value.
    pub extra_env: Vec<(String, String)>,
    pub stdin: Vec<u8>,
}

impl PluginCall {
    /// A call with every variable set; adjust fields to break it.
    pub fn new(
        binary: impl Into<PathBuf>,
        command: &str,
        container_id: &str,
        netns: &str,
        ifname: &str,
        cni_path: &str,
        stdin: &Value,
    ) -> PluginCall {
        PluginCall {
            binary: binary.into(),
            command: Some(command.into()),
            container_id: Some(container_id.into()),
            netns: Some(netns.into()),
            ifname: Some(ifname.into()),
            cni_args: None,
            cni_path: Some(cni_path.into()),
            extra_env: Vec::new(),
            stdin: serde_json::to_vec(stdin).expect("config serializes"),
        }
    }

    /// Replaces stdin with raw bytes (for malformed JSON).
    pub fn with_raw_stdin(mut self, bytes: &[u8]) -> PluginCall {
        self.stdin = bytes.to_vec();
        self
    }

    pub fn with_cni_args(mut self, args: &str) -> PluginCall {
        self.cni_args = Some(args.into());
        self
    }

    /// The environment the plugin gets, in order.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![("PATH".to_string(), PLUGIN_PATH_ENV.to_string())];
        let vars = [
            ("CNI_COMMAND", &self.command),
            ("CNI_CONTAINERID", &self.container_id),
            ("CNI_NETNS", &self.netns),
            ("CNI_IFNAME", &self.ifname),
            ("CNI_ARGS", &self.cni_args),
            ("CNI_PATH", &self.cni_path),
        ];
        for (key, value) in vars {
            if let Some(v) = value {
                env.push((key.to_string(), v.clone()));
            }
        }
        env.extend(self.extra_env.iter().cloned());
        env
    }

    fn describe(&self) -> String {
        let env: Vec<String> = self.env().iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!(
            "{} {} <<< {}",
            env.join(" "),
            self.binary.display(),
            String::from_utf8_lossy(&self.stdin)
        )
    }

    /// The plugin's command with its environment and piped stdio, made to enter the
    /// network namespace open as `node_ns` between fork and exec; `node_ns` must stay open
    /// until the command is spawned.
    pub fn command_in(&self, node_ns: &File) -> Command {
        let ns_fd = node_ns.as_raw_fd();
        let mut cmd = Command::new(&self.binary);
        cmd.env_clear()
            .envs(self.env())
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: setns is a single async-signal-safe system call; the fd stays open in
        // the parent until spawn returns, and the child inherited it across fork.
        unsafe {
            cmd.pre_exec(move || {
                nix::sched::setns(BorrowedFd::borrow_raw(ns_fd), CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)
            });
        }
        cmd
    }

    /// Starts the plugin inside `node`'s network namespace and feeds it stdin.
    pub fn spawn_in(&self, node: &Netns) -> RunningCall {
        let ns_file = File::open(node.path())
            .unwrap_or_else(|e| panic!("open node netns {}: {e}", node.path().display()));
        let mut cmd = self.command_in(&ns_file);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.binary.display()));
        drop(ns_file);
        let mut stdin = child.stdin.take().expect("piped stdin");
        // A plugin may exit before reading stdin (bad env): a broken pipe is its answer.
        let _ = stdin.write_all(&self.stdin);
        drop(stdin);
        RunningCall {
            child,
            description: self.describe(),
        }
    }

    /// Runs the plugin inside `node`'s network namespace and waits for it.
    pub fn run_in(&self, node: &Netns) -> CallOutcome {
        self.spawn_in(node).wait()
    }
}

/// A plugin process that has been started.
#[derive(Debug)]
pub struct RunningCall {
    child: Child,
    description: String,
}

impl RunningCall {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the plugin to exit (killing it and panicking after [`CALL_TIMEOUT`]).
    pub fn wait(self) -> CallOutcome {
        let pid = self.child.id();
        let description = self.description;
        let child = self.child;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let output = match rx.recv_timeout(CALL_TIMEOUT) {
            Ok(out) => out.unwrap_or_else(|e| panic!("wait for {description}: {e}")),
            Err(_) => {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                panic!("plugin did not exit within {CALL_TIMEOUT:?}: {description}");
            }
        };
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stdout_json = serde_json::from_str(stdout.trim()).ok();
        CallOutcome {
            exit_code: output.status.code().unwrap_or(-1),
            stdout,
            stdout_json,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            description,
        }
    }
}

/// What a plugin did: exit code, stdout (parsed when it is JSON) and stderr.
#[derive(Clone, Debug)]
pub struct CallOutcome {
    /// -1 when killed by a signal.
    pub exit_code: i32,
    pub stdout: String,
    pub stdout_json: Option<Value>,
    pub stderr: String,
    /// The invocation, for failure messages.
    pub description: String,
}

impl CallOutcome {
    pub fn succeeded(&self) -> bool {
        self.exit_code == 0
    }

    fn report(&self) -> String {
        format!(
            "call: {}\nexit code: {}\nstdout: {}\nstderr: {}",
            self.description, self.exit_code, self.stdout, self.stderr
        )
    }

    /// Asserts success; returns stdout's JSON, or `Value::Null` when stdout is empty
    /// (DEL, CHECK and GC print nothing on success).
    pub fn expect_ok(&self) -> Value {
        assert!(self.succeeded(), "plugin failed\n{}", self.report());
        if self.stdout.trim().is_empty() {
            return Value::Null;
        }
        self.stdout_json
            .clone()
            .unwrap_or_else(|| panic!("plugin succeeded but stdout is not JSON\n{}", self.report()))
    }

    /// Asserts failure with the spec's error JSON on stdout carrying `code` and a
    /// non-empty `msg`; returns that JSON.
    pub fn expect_error(&self, code: u64) -> Value {
        assert!(
            !self.succeeded(),
            "plugin succeeded, expected error code {code}\n{}",
            self.report()
        );
        let err = self.stdout_json.clone().unwrap_or_else(|| {
            panic!(
                "plugin failed without an error JSON on stdout\n{}",
                self.report()
            )
        });
        assert_eq!(
            err["code"].as_u64(),
            Some(code),
            "wrong error code\n{}",
            self.report()
        );
        assert!(
            err["msg"].as_str().is_some_and(|m| !m.is_empty()),
            "error has no msg\n{}",
            self.report()
        );
        err
    }

    /// Asserts failure with `code` and that `msg` or `details` contains `needle`
    /// (case-insensitive); returns the error JSON.
    pub fn expect_error_mentioning(&self, code: u64, needle: &str) -> Value {
        let err = self.expect_error(code);
        let text = format!(
            "{} {}",
            err["msg"].as_str().unwrap_or_default(),
            err["details"].as_str().unwrap_or_default()
        )
        .to_lowercase();
        assert!(
            text.contains(&needle.to_lowercase()),
            "error message does not mention {needle:?}\n{}",
            self.report()
        );
        err
    }
}

/// A pod sandbox: its network namespace, container ID and interface name.
#[derive(Debug)]
pub struct Pod {
    pub netns: Netns,
    pub container_id: String,
    pub ifname: String,
}

impl Pod {
    /// A fresh pod namespace with interface `eth0`.
    pub fn new() -> Pod {
        Pod::with_ifname("eth0")
    }

    pub fn with_ifname(ifname: &str) -> Pod {
        Pod {
            netns: Netns::new("p"),
            container_id: unique_container_id(),
            ifname: ifname.into(),
        }
    }

    pub fn netns_path(&self) -> String {
        self.netns.path_str()
    }
}

impl Default for Pod {
    fn default() -> Self {
        Pod::new()
    }
}

/// Which plugin a [`PluginUnderTest`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// `fjord` with `fjord-ipam` (dir store in the test's temp dir).
    Fjord,
    /// The reference `ptp` with `host-local` from /usr/lib/cni.
    Reference,
}

/// Settings of the fjord flavor.
#[derive(Clone, Debug)]
pub struct FjordOptions {
    pub mtu: u32,
    pub pools: Vec<String>,
    /// `blockSize` for IPv4, if set.
    pub block_size: Option<u8>,
}

impl Default for FjordOptions {
    fn default() -> Self {
        FjordOptions {
            // Not the veth default, so a test sees whether the plugin applied it.
            mtu: 1400,
            pools: vec![FJORD_POOL_V4.into()],
            block_size: None,
        }
    }
}

pub const FJORD_POOL_V4: &str = "10.244.0.0/16";
pub const FJORD_POOL_V6: &str = "fd00:244::/56";
pub const REFERENCE_SUBNET: &str = "10.245.0.0/16";
/// The network name in every config the harness makes.
pub const NETWORK_NAME: &str = "fjordtest";

/// One plugin set up on one node: the node namespace it runs in, a temp dir for its store,
/// data dir and log, and the network config a runtime would hand it.
#[derive(Debug)]
pub struct PluginUnderTest {
    pub flavor: Flavor,
    node: Netns,
    dir: TempDir,
    binary: PathBuf,
    cni_path: String,
    node_name: String,
    /// The plugin's config without `cniVersion` and `name`.
    plugin_conf: Value,
}

impl PluginUnderTest {
    pub fn new(flavor: Flavor) -> PluginUnderTest {
        match flavor {
            Flavor::Fjord => PluginUnderTest::fjord(),
            Flavor::Reference => PluginUnderTest::reference(),
        }
    }

    /// fjord + fjord-ipam with the IPv4 pool 10.244.0.0/16 and MTU 1400.
    pub fn fjord() -> PluginUnderTest {
        PluginUnderTest::fjord_with(FjordOptions::default())
    }

    /// fjord + fjord-ipam with pools 10.244.0.0/16 and fd00:244::/56.
    pub fn fjord_dual_stack() -> PluginUnderTest {
        PluginUnderTest::fjord_with(FjordOptions {
            pools: vec![FJORD_POOL_V4.into(), FJORD_POOL_V6.into()],
            ..FjordOptions::default()
        })
    }

    pub fn fjord_with(opts: FjordOptions) -> PluginUnderTest {
        let binary = fjord_bin("fjord");
        let bin_dir = fjord_bin_dir();
        fjord_bin("fjord-ipam");
        let dir = TempDir::new("d");
        let node = Netns::new("n");
        let node_name = node.name().to_string();
        let mut ipam = json!({
            "type": "fjord-ipam",
            "nodeName": node_name,
            "store": format!("dir:{}", dir.join("ipam").display()),
            "pools": opts.pools,
        });
        if let Some(b) = opts.block_size {
            ipam["blockSize"] = json!(b);
        }
        let plugin_conf = json!({
            "type": "fjord",
            "mtu": opts.mtu,
            "logFile": dir.join("cni.log").display().to_string(),
            "ipam": ipam,
        });
        PluginUnderTest {
            flavor: Flavor::Fjord,
            node,
            cni_path: format!(
                "{}:{}",
                bin_dir.display(),
                crate::bins::REFERENCE_PLUGIN_DIR
            ),
            dir,
            binary,
            node_name,
            plugin_conf,
        }
    }

    /// The reference ptp + host-local (10.245.0.0/16, default route via the gateway).
    pub fn reference() -> PluginUnderTest {
        let binary = reference_plugin("ptp");
        let dir = TempDir::new("d");
        let node = Netns::new("n");
        let node_name = node.name().to_string();
        let plugin_conf = json!({
            "type": "ptp",
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": REFERENCE_SUBNET}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": dir.join("host-local").display().to_string(),
            },
        });
        PluginUnderTest {
            flavor: Flavor::Reference,
            node,
            cni_path: reference_plugin_dir().display().to_string(),
            dir,
            binary,
            node_name,
            plugin_conf,
        }
    }

    /// The node namespace the plugin runs in.
    pub fn node(&self) -> &Netns {
        &self.node
    }

    /// fjord-ipam's `nodeName` (the node namespace's name).
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    pub fn cni_path(&self) -> &str {
        &self.cni_path
    }

    pub fn temp_dir(&self) -> &Path {
        self.dir.path()
    }

    /// fjord-ipam's store directory (the path after `dir:`).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.join("ipam")
    }

    /// fjord's log file.
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("cni.log")
    }

    /// The plugin's config without `cniVersion` and `name` (to copy into a conflist).
    pub fn plugin_conf(&self) -> &Value {
        &self.plugin_conf
    }

    /// The network config a runtime passes on stdin for `cni_version`.
    pub fn config(&self, cni_version: &str) -> Value {
        let mut conf = self.plugin_conf.clone();
        conf["cniVersion"] = json!(cni_version);
        conf["name"] = json!(NETWORK_NAME);
        conf
    }

    /// A conflist with this plugin alone, as a runtime's config directory would hold it.
    pub fn conflist(&self, cni_version: &str) -> Value {
        json!({
            "cniVersion": cni_version,
            "name": NETWORK_NAME,
            "plugins": [self.plugin_conf.clone()],
        })
    }

    /// The IPv4 range addresses come from.
    pub fn pool_v4(&self) -> IpNetwork {
        match self.flavor {
            Flavor::Fjord => FJORD_POOL_V4.parse().unwrap(),
            Flavor::Reference => REFERENCE_SUBNET.parse().unwrap(),
        }
    }

    /// A call of `command` for `pod` with `stdin`; change fields to break it.
    pub fn call(&self, command: &str, pod: &Pod, stdin: &Value) -> PluginCall {
        PluginCall::new(
            &self.binary,
            command,
            &pod.container_id,
            &pod.netns_path(),
            &pod.ifname,
            &self.cni_path,
            stdin,
        )
    }

    /// ADD `pod` with the config in `cni_version`.
    pub fn add(&self, pod: &Pod, cni_version: &str) -> CallOutcome {
        self.call("ADD", pod, &self.config(cni_version))
            .run_in(&self.node)
    }

    /// ADD `pod` in 1.0.0, asserting success; the result.
    pub fn add_ok(&self, pod: &Pod) -> Value {
        self.add(pod, "1.0.0").expect_ok()
    }

    /// CHECK `pod` against `prev_result`.
    pub fn check(&self, pod: &Pod, cni_version: &str, prev_result: &Value) -> CallOutcome {
        self.call(
            "CHECK",
            pod,
            &with_prev_result(self.config(cni_version), prev_result),
        )
        .run_in(&self.node)
    }

    /// DEL `pod` (with `prev_result` when given, as 0.4.0+ runtimes send it).
    pub fn del(&self, pod: &Pod, cni_version: &str, prev_result: Option<&Value>) -> CallOutcome {
        let mut conf = self.config(cni_version);
        if let Some(prev) = prev_result {
            conf = with_prev_result(conf, prev);
        }
        self.call("DEL", pod, &conf).run_in(&self.node)
    }

    /// DEL `pod` in 1.0.0 without prevResult, asserting success.
    pub fn del_ok(&self, pod: &Pod) {
        self.del(pod, "1.0.0", None).expect_ok();
    }

    /// DEL by raw identifiers (for containers and namespaces that never existed).
    pub fn del_raw(&self, container_id: &str, netns: &str, ifname: &str) -> CallOutcome {
        PluginCall::new(
            &self.binary,
            "DEL",
            container_id,
            netns,
            ifname,
            &self.cni_path,
            &self.config("1.0.0"),
        )
        .run_in(&self.node)
    }

    /// GC (1.1.0) keeping only `valid` (container ID, ifname) attachments.
    pub fn gc(&self, valid: &[(&str, &str)]) -> CallOutcome {
        let mut conf = self.config("1.1.0");
        conf["cni.dev/valid-attachments"] = valid
            .iter()
            .map(|(id, ifname)| json!({"containerID": id, "ifname": ifname}))
            .collect();
        let mut call = PluginCall::new(&self.binary, "GC", "", "", "", &self.cni_path, &conf);
        call.container_id = None;
        call.netns = None;
        call.ifname = None;
        call.run_in(&self.node)
    }

    /// VERSION with `{"cniVersion": cni_version}` on stdin and only CNI_COMMAND set.
    pub fn version(&self, cni_version: &str) -> CallOutcome {
        let mut call = PluginCall::new(
            &self.binary,
            "VERSION",
            "",
            "",
            "",
            &self.cni_path,
            &json!({"cniVersion": cni_version}),
        );
        call.container_id = None;
        call.netns = None;
        call.ifname = None;
        call.run_in(&self.node)
    }

    /// Every allocation the plugin's IPAM records (fjord-ipam's dir store, host-local's
    /// dataDir).
    pub fn allocations(&self) -> Vec<StoreAllocation> {
        match self.flavor {
            Flavor::Fjord => fjord_dir_allocations(&self.store_dir()),
            Flavor::Reference => host_local_allocations(&self.dir.join("host-local"), NETWORK_NAME),
        }
    }

    /// The allocations held by `container_id`.
    pub fn allocations_of(&self, container_id: &str) -> Vec<StoreAllocation> {
        self.allocations()
            .into_iter()
            .filter(|a| a.container_id == container_id)
            .collect()
    }
}

/// `conf` with `prevResult` set (CHECK, and DEL from 0.4.0 on).
pub fn with_prev_result(mut conf: Value, prev_result: &Value) -> Value {
    conf["prevResult"] = prev_result.clone();
    conf
}

/// The addresses (`ips[].address`) of a result, as CIDRs.
pub fn result_ips(result: &Value) -> Vec<IpNetwork> {
    result["ips"]
        .as_array()
        .map(|ips| {
            ips.iter()
                .map(|ip| {
                    ip["address"]
                        .as_str()
                        .and_then(|a| a.parse().ok())
                        .unwrap_or_else(|| panic!("result ip without a CIDR address: {ip}"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The first IPv4 address of a result.
pub fn result_ipv4(result: &Value) -> IpNetwork {
    result_ips(result)
        .into_iter()
        .find(IpNetwork::is_ipv4)
        .unwrap_or_else(|| panic!("result has no IPv4 address: {result}"))
}

/// The first IPv6 address of a result.
pub fn result_ipv6(result: &Value) -> IpNetwork {
    result_ips(result)
        .into_iter()
        .find(IpNetwork::is_ipv6)
        .unwrap_or_else(|| panic!("result has no IPv6 address: {result}"))
}
