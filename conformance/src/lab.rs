//! A virtual cluster on one machine: node namespaces on a shared underlay, the real
//! `fjord-routed` running in each node, pods attached with the real `fjord` plugin, and
//! extra hosts for outside BGP peers (BIRD, GoBGP: [`crate::peers`]).
//!
//! Topology of `Lab::new(LabSpec { nodes: 3, subnets: 1, hosts: 1 })`:
//!
//! ```text
//!   underlay namespace: bridge u0 ── veth ── node1 (eth0 10.250.0.1/24, fd00:250::1/64)
//!                                  ├─ veth ── node2 (eth0 10.250.0.2/24, fd00:250::2/64)
//!                                  ├─ veth ── node3 (eth0 10.250.0.3/24, fd00:250::3/64)
//!                                  └─ veth ── host1 (eth0 10.250.0.101/24, fd00:250::101/64)
//! ```
//!
//! Node `i` (0-based index) is named `node{i+1}` and has host number `i+1`; host `k` is
//! `host{k+1}` with host number `101+k`. With several subnets, subnet `s` is
//! `10.250.s.0/24` + `fd00:250:0:s::/64`, a bridge of its own in the underlay namespace;
//! node `i` sits on subnet `i % subnets`, hosts on subnet 0; a router namespace has
//! `.254` / `::254` on every subnet, forwards, and holds nothing but the connected
//! underlay routes (no pod routes, no default route). Nodes on a multi-subnet underlay
//! and hosts get `10.250.0.0/16` and `fd00:250::/48` via their subnet's router, and nothing more.
//!
//! Two lives, one topology: a test's lab ([`Lab::new`]) names everything `fjt<pid>…`,
//! keeps its files in a temp dir and removes it all when the guards drop; a persistent lab
//! ([`Lab::persistent`], what `fjord-lab up` builds) names everything `PREFIX…` (`fjl-`),
//! keeps its files in a directory it is given, writes each namespace and process into a
//! [`Journal`] before making it, and outlives the process that built it (`fjord-lab down`
//! removes it).
//!
//! Every namespace is a [`Netns`], with `forwarding=1` for both families.
//! Nothing is created in the root namespace: veth pairs are made inside the underlay
//! namespace with their far end placed straight into the node, and processes enter their
//! namespace with `setns` between fork and exec. Daemons, namespaces and the temp dir go
//! away when the [`Lab`] and the guards it hands out drop, also when a test panics.

use crate::bins::{fjord_bin, fjord_bin_dir, REFERENCE_PLUGIN_DIR};
use crate::kernel::Route;
use crate::labstate::{Journal, LabState, NodeRecord, PodRecord, ProcessRecord};
use crate::netns::Netns;
use crate::plugin::{result_ipv4, result_ipv6, CallOutcome, PluginCall, Pod};
use crate::tempdir::TempDir;
use ipnetwork::IpNetwork;
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Deserialize;
use serde_json::{json, Value};
use std::fs::{File, OpenOptions};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The cluster pools every lab node's IPAM uses (ARCHITECTURE.md's conflist).
pub const LAB_POOL_V4: &str = "10.244.0.0/16";
pub const LAB_POOL_V6: &str = "fd00:244::/56";
/// The iBGP AS of the node mesh (`fjord-routed`'s default).
pub const MESH_ASN: u32 = 64512;
/// The interface that joins a node or host to the underlay, in every lab namespace.
pub const UPLINK: &str = "eth0";
/// `ip route`'s `protocol` for routes `fjord-routed` installs: the number, or the name a
/// file in `/etc/iproute2/rt_protos.d/` may give it.
pub const FJORD_ROUTE_PROTOCOLS: [&str; 2] = ["200", "fjord"];
/// The peer type `fjord-routed status` gives mesh peers.
pub const MESH_PEER_TYPE: &str = "node-to-node mesh";
/// How long a daemon gets to exit after SIGTERM before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// What to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LabSpec {
    /// Fjord nodes (`node1`, `node2`, …).
    pub nodes: usize,
    /// Underlay subnets; 1 puts every node on one L2 segment.
    pub subnets: usize,
    /// Plain hosts on subnet 0 for outside peers (BIRD, GoBGP, a ToR stand-in).
    pub hosts: usize,
}

impl LabSpec {
    /// `nodes` nodes on one segment, no extra hosts.
    pub fn nodes(nodes: usize) -> LabSpec {
        LabSpec {
            nodes,
            subnets: 1,
            hosts: 0,
        }
    }
}

impl Default for LabSpec {
    fn default() -> Self {
        LabSpec::nodes(3)
    }
}

/// A node or a host: a namespace with an underlay address in each family.
#[derive(Debug)]
pub struct Machine {
    name: String,
    netns: Netns,
    subnet: usize,
    v4: Ipv4Addr,
    v6: Ipv6Addr,
}

impl Machine {
    /// `node1`, `host1`, …: the node name the store and the daemon use.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// Which underlay subnet it is on (0 on a single segment).
    pub fn subnet(&self) -> usize {
        self.subnet
    }

    pub fn address_v4(&self) -> Ipv4Addr {
        self.v4
    }

    pub fn address_v6(&self) -> Ipv6Addr {
        self.v6
    }

    /// The address of `family` (`true` for IPv6).
    pub fn address(&self, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(self.v6)
        } else {
            IpAddr::V4(self.v4)
        }
    }

    /// `A4,A6`, as `--node-address` takes it.
    pub fn node_address_arg(&self) -> String {
        format!("{},{}", self.v4, self.v6)
    }

    /// Routes `fjord-routed` installed in this namespace's main table (both families).
    pub fn fjord_routes(&self) -> Vec<Route> {
        self.netns
            .routes()
            .into_iter()
            .filter(is_fjord_route)
            .collect()
    }
}

/// Whether `route` carries fjord's route protocol (200).
pub fn is_fjord_route(route: &Route) -> bool {
    FJORD_ROUTE_PROTOCOLS.contains(&route.protocol.as_str())
}

/// `10.250.s.n`.
pub fn underlay_v4(subnet: usize, host: u16) -> Ipv4Addr {
    assert!(
        subnet < 250 && (1..255).contains(&host),
        "no such lab address"
    );
    Ipv4Addr::new(10, 250, subnet as u8, host as u8)
}

/// `fd00:250:0:s::n`, with `n` written in hex digits that read as the decimal host
/// number (host 101 is `::101`, as the IPv4 address ends in `.101`).
pub fn underlay_v6(subnet: usize, host: u16) -> Ipv6Addr {
    let n = u16::from_str_radix(&host.to_string(), 16).expect("decimal digits are hex digits");
    Ipv6Addr::new(0xfd00, 0x250, 0, subnet as u16, 0, 0, 0, n)
}

/// Process ids of the daemons a lab started, by node, until their guard reaps them.
type Registry = Arc<Mutex<Vec<(usize, u32)>>>;

/// Where a lab keeps its files.
#[derive(Debug)]
enum LabHome {
    /// A test's: removed on drop.
    Temp(TempDir),
    /// A persistent lab's (`/run/fjord-lab`): left for `fjord-lab down`.
    Kept(PathBuf),
}

impl LabHome {
    fn path(&self) -> &Path {
        match self {
            LabHome::Temp(dir) => dir.path(),
            LabHome::Kept(path) => path,
        }
    }
}

/// How a persistent lab names and records what it makes.
#[derive(Debug, Clone)]
pub struct Persistence {
    /// Every namespace name starts with it: `fjl-` gives `fjl-node1`, `fjl-node1-pod1`.
    pub prefix: String,
    /// The lab's directory: store, sockets, logs, the state file.
    pub dir: PathBuf,
    pub journal: Arc<Journal>,
}

/// A virtual cluster; see the module documentation.
#[derive(Debug)]
pub struct Lab {
    running: Registry,
    nodes: Vec<Machine>,
    hosts: Vec<Machine>,
    router: Option<Netns>,
    underlay: Netns,
    /// Shared: the IPAM/node-registry store, sockets, logs, MTU files, peer configs.
    dir: LabHome,
    /// A store other than the shared `dir:` one (see [`Lab::use_store`]).
    store_override: Option<String>,
    /// Set for a persistent lab.
    persistence: Option<Persistence>,
    /// Veth ports made so far in the underlay namespace (their names, persistent labs).
    ports: std::sync::atomic::AtomicUsize,
}

impl Lab {
    /// Builds the namespaces and the underlay of a test's lab. Panics (cleaning up what
    /// exists) when the kernel refuses something.
    pub fn new(spec: LabSpec) -> Lab {
        Lab::build(spec, None, &mut |_| {})
    }

    /// Builds a persistent lab (see the module documentation): names from
    /// `persistence.prefix`, files in `persistence.dir`, every namespace recorded in the
    /// journal before it is made. `progress` hears of each machine made.
    pub fn persistent(
        spec: LabSpec,
        persistence: Persistence,
        progress: &mut dyn FnMut(&str),
    ) -> Lab {
        Lab::build(spec, Some(persistence), progress)
    }

    fn build(
        spec: LabSpec,
        persistence: Option<Persistence>,
        progress: &mut dyn FnMut(&str),
    ) -> Lab {
        assert!(spec.subnets >= 1, "a lab needs at least one subnet");
        assert!(spec.subnets < 250 && spec.nodes < 100 && spec.hosts < 100);
        let dir = match &persistence {
            None => LabHome::Temp(TempDir::new("lab")),
            Some(p) => LabHome::Kept(p.dir.clone()),
        };
        std::fs::create_dir_all(dir.path().join("store")).expect("create the lab store");
        let underlay = make_netns(persistence.as_ref(), "u", "underlay");
        disable_dad(&underlay);
        let mut lab = Lab {
            running: Arc::new(Mutex::new(Vec::new())),
            nodes: Vec::new(),
            hosts: Vec::new(),
            router: None,
            underlay,
            dir,
            store_override: None,
            persistence,
            ports: std::sync::atomic::AtomicUsize::new(0),
        };
        for s in 0..spec.subnets {
            let br = bridge_name(s);
            // No multicast snooping: without an MLD querier on the segment it drops
            // neighbour solicitations once some port has reported a group.
            lab.underlay
                .ip(&["link", "add", &br, "type", "bridge", "mcast_snooping", "0"]);
            lab.underlay.ip(&["link", "set", &br, "up"]);
        }
        if spec.subnets > 1 {
            let router = lab.make_netns("r", "router");
            enable_forwarding(&router);
            for s in 0..spec.subnets {
                let ifname = format!("eth{s}");
                lab.plug(
                    &router,
                    s,
                    &ifname,
                    underlay_v4(s, 254),
                    underlay_v6(s, 254),
                );
            }
            lab.router = Some(router);
            progress("router");
        }
        for i in 0..spec.nodes {
            let subnet = i % spec.subnets;
            let host = (i + 1) as u16;
            let machine = lab.machine(format!("node{}", i + 1), "n", subnet, host);
            if spec.subnets > 1 {
                route_underlay_via_router(&machine);
            }
            lab.record_node(&machine);
            progress(&machine.name);
            lab.nodes.push(machine);
        }
        for k in 0..spec.hosts {
            let machine = lab.machine(format!("host{}", k + 1), "h", 0, 101 + k as u16);
            // A host serves every node (etcd, an API server, a BGP peer): it needs the
            // way back to nodes on the other subnets as much as they need the way to it.
            if spec.subnets > 1 {
                route_underlay_via_router(&machine);
            }
            progress(&machine.name);
            lab.hosts.push(machine);
        }
        lab
    }

    /// A namespace for `role` (test labs: `fjt<pid><role><n>`) or named `PREFIX` +
    /// `name` (persistent labs: recorded first, kept when the handle drops).
    fn make_netns(&self, role: &str, name: &str) -> Netns {
        make_netns(self.persistence.as_ref(), role, name)
    }

    /// Writes a persistent lab's node into the state file (status and exec read it).
    fn record_node(&self, machine: &Machine) {
        let Some(p) = &self.persistence else { return };
        let i = self.nodes.len();
        let record = NodeRecord {
            name: machine.name.clone(),
            netns: machine.netns.name().to_string(),
            subnet: machine.subnet,
            address_v4: IpAddr::V4(machine.v4),
            address_v6: IpAddr::V6(machine.v6),
            socket: self.dir.path().join(format!("{}.sock", machine.name)),
            log: self.dir.path().join(format!("{}.routed.log", machine.name)),
        };
        debug_assert_eq!(i, p.journal.snapshot().nodes.len());
        p.journal.record(|s| s.nodes.push(record));
    }

    /// The persistent lab's settings, `None` for a test's lab.
    pub fn persistence(&self) -> Option<&Persistence> {
        self.persistence.as_ref()
    }

    /// Makes daemons and plugins started from now on use `spec` (e.g. `etcd:URL,…`)
    /// instead of the shared `dir:` store; a persistent lab records it.
    pub fn use_store(&mut self, spec: impl Into<String>) {
        let spec = spec.into();
        if let Some(p) = &self.persistence {
            p.journal.record(|s| s.store = spec.clone());
        }
        self.store_override = Some(spec);
    }

    /// A namespace plugged into subnet `subnet` with host number `host`, forwarding on.
    fn machine(&self, name: String, role: &str, subnet: usize, host: u16) -> Machine {
        let netns = self.make_netns(role, &name);
        enable_forwarding(&netns);
        let v4 = underlay_v4(subnet, host);
        let v6 = underlay_v6(subnet, host);
        self.plug(&netns, subnet, UPLINK, v4, v6);
        Machine {
            name,
            netns,
            subnet,
            v4,
            v6,
        }
    }

    /// A veth from subnet `subnet`'s bridge to `ifname` in `ns`, with the two addresses.
    /// Made inside the underlay namespace, so the root namespace never sees it.
    fn plug(&self, ns: &Netns, subnet: usize, ifname: &str, v4: Ipv4Addr, v6: Ipv6Addr) {
        // Ports live only in the underlay namespace: a counter names them uniquely there.
        let port = match &self.persistence {
            None => crate::names::unique_ifname("p"),
            Some(_) => format!(
                "p{}",
                self.ports
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ),
        };
        self.underlay.ip(&[
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            ifname,
            "netns",
            ns.name(),
        ]);
        self.underlay
            .ip(&["link", "set", &port, "master", &bridge_name(subnet)]);
        self.underlay.ip(&["link", "set", &port, "up"]);
        ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", ifname]);
        ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", ifname, "nodad"]);
        ns.ip(&["link", "set", ifname, "up"]);
    }

    /// Sets the MTU of the whole underlay: every bridge port and bridge in the underlay
    /// namespace, every node's and host's uplink, every router interface. Call it before
    /// starting daemons (they read the MTU at start).
    pub fn set_underlay_mtu(&self, mtu: u32) {
        let mtu = mtu.to_string();
        let set_all = |ns: &Netns| {
            let mut links = ns.links();
            // Ports before bridges: a bridge takes no MTU above its ports'.
            links.sort_by_key(|l| l.kind.as_deref() == Some("bridge"));
            for link in links.iter().filter(|l| l.kind.is_some()) {
                ns.ip(&["link", "set", &link.name, "mtu", &mtu]);
            }
        };
        set_all(&self.underlay);
        if let Some(router) = &self.router {
            set_all(router);
        }
        for machine in self.nodes.iter().chain(&self.hosts) {
            machine.netns.ip(&["link", "set", UPLINK, "mtu", &mtu]);
        }
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Node `i` (0-based; named `node{i+1}`).
    pub fn node(&self, i: usize) -> &Machine {
        self.nodes
            .get(i)
            .unwrap_or_else(|| panic!("the lab has {} nodes, no node {i}", self.nodes.len()))
    }

    pub fn nodes(&self) -> &[Machine] {
        &self.nodes
    }

    /// Extra host `k` (0-based; named `host{k+1}`, address `.{101+k}`).
    pub fn host(&self, k: usize) -> &Machine {
        self.hosts
            .get(k)
            .unwrap_or_else(|| panic!("the lab has {} hosts, no host {k}", self.hosts.len()))
    }

    /// The namespace holding the underlay bridges.
    pub fn underlay(&self) -> &Netns {
        &self.underlay
    }

    /// The router between subnets, when there are several.
    pub fn router(&self) -> Option<&Netns> {
        self.router.as_ref()
    }

    /// The lab's temp dir (store, sockets, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The lab's temp dir (store, sockets, logs); kept for `fjord-lab down` in a
    /// persistent lab.
    fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The shared store root; `--store` and the plugin's `store` are `dir:` + this.
    pub fn store_dir(&self) -> PathBuf {
        self.join("store")
    }

    pub fn store_arg(&self) -> String {
        if let Some(spec) = &self.store_override {
            return spec.clone();
        }
        format!("dir:{}", self.store_dir().display())
    }

    /// `fjord-routed status` socket of node `i`.
    pub fn socket(&self, i: usize) -> PathBuf {
        self.join(format!("{}.sock", self.node(i).name))
    }

    /// Where node `i`'s daemon writes stdout and stderr (appended across restarts).
    pub fn routed_log(&self, i: usize) -> PathBuf {
        self.join(format!("{}.routed.log", self.node(i).name))
    }

    /// Where node `i`'s daemon records the pod MTU for the plugin (not /run/fjord/mtu,
    /// which all lab nodes would share).
    pub fn mtu_file(&self, i: usize) -> PathBuf {
        self.join(format!("{}.mtu", self.node(i).name))
    }

    /// The last `bytes` of node `i`'s daemon log, for failure messages.
    pub fn routed_log_tail(&self, i: usize) -> String {
        tail(&self.routed_log(i), 4000)
    }

    /// The arguments [`Lab::start_routed`] passes before `extra`.
    pub fn routed_args(&self, i: usize) -> Vec<String> {
        let node = self.node(i);
        vec![
            "run".into(),
            "--node-name".into(),
            node.name.clone(),
            "--node-address".into(),
            node.node_address_arg(),
            "--store".into(),
            self.store_arg(),
            "--socket".into(),
            self.socket(i).display().to_string(),
            "--mtu-file".into(),
            self.mtu_file(i).display().to_string(),
            "--listen-port".into(),
            "179".into(),
        ]
    }

    /// Starts `fjord-routed run --node-name nodeI --node-address A4,A6 --store dir:STORE
    /// --socket DIR/nodeI.sock --mtu-file DIR/nodeI.mtu --listen-port 179 EXTRA…` inside
    /// node `i`'s namespace, stdout and stderr appended to [`Lab::routed_log`]. The guard
    /// stops it (SIGTERM, then SIGKILL after [`STOP_GRACE`]) when dropped.
    pub fn start_routed(&self, i: usize, extra: &[&str]) -> RoutedProcess {
        let binary = fjord_bin("fjord-routed");
        let log_path = self.routed_log(i);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap_or_else(|e| panic!("open {}: {e}", log_path.display()));
        let mut args = self.routed_args(i);
        args.extend(extra.iter().map(|s| s.to_string()));
        {
            use std::io::Write;
            let mut header = &log;
            let _ = writeln!(header, "==== lab: {} {}", binary.display(), args.join(" "));
        }
        let mut cmd = Command::new(&binary);
        cmd.args(&args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or("info".into()),
            )
            .env("RUST_BACKTRACE", "1")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log fd"))
            .stderr(log);
        let netns = self.node(i).netns();
        let child = match &self.persistence {
            None => spawn_in_netns(netns, &mut cmd),
            Some(p) => spawn_recorded(
                &p.journal,
                &format!("fjord-routed {}", self.node(i).name),
                netns,
                &mut cmd,
            ),
        };
        self.running
            .lock()
            .expect("registry lock")
            .push((i, child.id()));
        RoutedProcess {
            child,
            node: i,
            log: log_path,
            registry: self.running.clone(),
            description: format!("{} {}", binary.display(), args.join(" ")),
            detached: false,
        }
    }

    /// SIGKILLs every daemon of node `i` the lab started that is not reaped yet (a
    /// crash: no NOTIFICATION, kernel routes left as they are). Returns how many.
    /// The guard of a killed daemon still reaps it when dropped.
    pub fn kill_routed(&self, i: usize) -> usize {
        let pids: Vec<u32> = self
            .running
            .lock()
            .expect("registry lock")
            .iter()
            .filter(|(node, _)| *node == i)
            .map(|(_, pid)| *pid)
            .collect();
        for pid in &pids {
            // The pid cannot have been reused: only the guard reaps it, and it is still
            // registered, so its guard has not.
            let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
        }
        pids.len()
    }

    /// Whether a daemon the lab started on node `i` is still running (not exited,
    /// whether or not its guard has reaped it yet).
    pub fn routed_alive(&self, i: usize) -> bool {
        let running = self.running.lock().expect("registry lock");
        running.iter().filter(|(n, _)| *n == i).any(|(_, pid)| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    // `PID (COMM) STATE …`; COMM may hold spaces and parentheses.
                    let after = stat.rsplit_once(')')?.1;
                    after
                        .split_whitespace()
                        .next()
                        .map(|st| st != "Z" && st != "X")
                })
                .unwrap_or(false)
        })
    }

    /// `fjord-routed status --socket DIR/nodeI.sock --json`, run inside node `i`: the
    /// parsed JSON, or why there is none.
    pub fn try_status_json(&self, i: usize) -> Result<Value, String> {
        let binary = fjord_bin("fjord-routed");
        let socket = self.socket(i);
        let mut cmd = Command::new(&binary);
        cmd.args(["status", "--socket"])
            .arg(&socket)
            .arg("--json")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = spawn_in_netns(self.node(i).netns(), &mut cmd)
            .wait_with_output()
            .map_err(|e| format!("wait for fjord-routed status: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "fjord-routed status --socket {} --json exited with {}: {}",
                socket.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(text.trim())
            .map_err(|e| format!("fjord-routed status --json printed no JSON ({e}): {text}"))
    }

    /// As [`Lab::try_status_json`], panicking with the daemon's log when it fails.
    pub fn status_json(&self, i: usize) -> Value {
        self.try_status_json(i).unwrap_or_else(|e| {
            panic!(
                "status of {}: {e}\n--- daemon log ---\n{}",
                self.node(i).name,
                self.routed_log_tail(i)
            )
        })
    }

    /// The status parsed into [`RoutedStatus`].
    pub fn status(&self, i: usize) -> RoutedStatus {
        let v = self.status_json(i);
        serde_json::from_value(v.clone()).unwrap_or_else(|e| {
            panic!(
                "status of {} does not have the documented shape ({e}): {v}",
                self.node(i).name
            )
        })
    }

    /// Polls node `i`'s status until `check` accepts it; panics after `timeout` with
    /// `what`, the last status (or error) and the daemon's log. Returns the status.
    pub fn wait_for_status(
        &self,
        i: usize,
        timeout: Duration,
        what: &str,
        mut check: impl FnMut(&RoutedStatus) -> bool,
    ) -> RoutedStatus {
        let deadline = Instant::now() + timeout;
        loop {
            let last = self.try_status_json(i).and_then(|v| {
                serde_json::from_value::<RoutedStatus>(v.clone())
                    .map_err(|e| format!("status without the documented shape ({e}): {v}"))
            });
            if let Ok(status) = &last {
                if check(status) {
                    return status.clone();
                }
            }
            if !self.routed_alive(i) {
                panic!(
                    "fjord-routed on {} is not running (it exited or was never started) \
                     while waiting until {what}\nlast status: {last:?}\n--- daemon log ---\n{}",
                    self.node(i).name(),
                    self.routed_log_tail(i)
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting until {what} on {}\nlast status: {last:?}\n--- daemon log ---\n{}",
                    self.node(i).name,
                    self.routed_log_tail(i)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until node `i` has exactly the peers `peers` (by address), all Established.
    pub fn wait_established(&self, i: usize, peers: &[IpAddr], timeout: Duration) -> RoutedStatus {
        let mut want: Vec<IpAddr> = peers.to_vec();
        want.sort();
        self.wait_for_status(
            i,
            timeout,
            &format!("peers {want:?} are all Established"),
            |s| {
                let mut have: Vec<IpAddr> = s.peers.iter().map(|p| p.address).collect();
                have.sort();
                have == want && s.peers.iter().all(|p| p.state == "Established")
            },
        )
    }

    /// The IPv4 addresses of every node but `i`: its mesh peers.
    pub fn mesh_peers_of(&self, i: usize) -> Vec<IpAddr> {
        (0..self.nodes.len())
            .filter(|j| *j != i)
            .map(|j| IpAddr::V4(self.node(j).v4))
            .collect()
    }

    /// The network config the `fjord` plugin gets on node `i`: `fjord-ipam` on the
    /// lab's shared store, nodeName = the node's name, both lab pools, MTU from the
    /// node's daemon (its MTU file), else the underlay's 1500.
    pub fn cni_config(&self, i: usize) -> Value {
        let node = self.node(i);
        json!({
            "cniVersion": "1.0.0",
            "name": "fjord-lab",
            "type": "fjord",
            "logFile": self.join(format!("{}.cni.log", node.name)).display().to_string(),
            "mtuFile": self.mtu_file(i).display().to_string(),
            "ipam": {
                "type": "fjord-ipam",
                "nodeName": node.name,
                "store": self.store_arg(),
                "pools": [LAB_POOL_V4, LAB_POOL_V6],
            },
        })
    }

    /// Runs the `fjord` plugin `command` for `pod` on node `i`.
    pub fn plugin_call(&self, i: usize, command: &str, pod: &Pod) -> CallOutcome {
        self.plugin_command(command, pod, &self.cni_config(i))
            .run_in(self.node(i).netns())
    }

    /// The `fjord` plugin `command` for `pod` with network config `config`, as the
    /// lab's nodes run it (CNI_PATH: the fjord binaries, then the reference plugins);
    /// not run yet, so a caller can add CNI_ARGS, then `run_in` a node.
    pub fn plugin_command(&self, command: &str, pod: &Pod, config: &Value) -> PluginCall {
        fjord_bin("fjord-ipam");
        PluginCall::new(
            fjord_bin("fjord"),
            command,
            &pod.container_id,
            &pod.netns_path(),
            &pod.ifname,
            &format!("{}:{}", fjord_bin_dir().display(), REFERENCE_PLUGIN_DIR),
            config,
        )
    }

    /// A new pod on node `i`, attached by the real `fjord` plugin (ADD, CNI 1.0.0).
    pub fn add_pod(&self, i: usize) -> LabPod {
        self.add_pod_as(i, Pod::new())
    }

    /// Pod number `number` (from 1) of node `i`: in a persistent lab its namespace is
    /// `PREFIX` + `nodeI-podN`, recorded before it is made, and the pod (name, addresses)
    /// is recorded once attached; in a test's lab it is [`Lab::add_pod`].
    pub fn add_numbered_pod(&self, i: usize, number: usize) -> LabPod {
        let Some(p) = &self.persistence else {
            return self.add_pod(i);
        };
        let name = format!("{}-pod{number}", self.node(i).name);
        let netns = make_netns(Some(p), "p", &name);
        let container_id = format!("fjord-lab-{}{name}", p.prefix);
        p.journal.record(|s| {
            s.pods.push(PodRecord {
                name: name.clone(),
                node: i,
                netns: netns.name().to_string(),
                container_id: container_id.clone(),
                ipv4: None,
                ipv6: None,
            })
        });
        let pod = self.add_pod_as(
            i,
            Pod {
                netns,
                container_id,
                ifname: "eth0".into(),
            },
        );
        p.journal.record(|s| {
            if let Some(record) = s.pods.iter_mut().find(|r| r.name == name) {
                record.ipv4 = Some(pod.ipv4);
                record.ipv6 = Some(pod.ipv6);
            }
        });
        pod
    }

    /// Attaches `pod` (its namespace made) to node `i` with the plugin's ADD.
    fn add_pod_as(&self, i: usize, pod: Pod) -> LabPod {
        let result = self.plugin_call(i, "ADD", &pod).expect_ok();
        let v4 = result_ipv4(&result).ip();
        let v6 = result_ipv6(&result).ip();
        LabPod {
            pod,
            node: i,
            ipv4: v4,
            ipv6: v6,
            result,
        }
    }

    /// Starts `cmd` in `ns` as a process of the lab: in a persistent lab it gets a
    /// session of its own (a Ctrl-C at the terminal is `fjord-lab`'s to handle) and is
    /// recorded in the journal as `role`; the caller owns the child.
    pub fn spawn_service(&self, role: &str, ns: &Netns, cmd: &mut Command) -> Child {
        match &self.persistence {
            None => spawn_in_netns(ns, cmd),
            Some(p) => spawn_recorded(&p.journal, role, ns, cmd),
        }
    }

    /// DEL of `pod` on its node, asserting success.
    pub fn del_pod(&self, pod: &LabPod) {
        self.plugin_call(pod.node, "DEL", &pod.pod).expect_ok();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.persistence.is_some() {
            // A persistent lab's daemons outlive the process that built it.
            return;
        }
        // Daemons whose guards outlive the lab lose their namespaces' names now; kill
        // them rather than leave them running. Their guards still reap them.
        if let Ok(running) = self.running.lock() {
            for (_, pid) in running.iter() {
                let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
            }
        }
    }
}

/// See [`Lab::make_netns`].
fn make_netns(persistence: Option<&Persistence>, role: &str, name: &str) -> Netns {
    let Some(p) = persistence else {
        return Netns::new(role);
    };
    let full = format!("{}{name}", p.prefix);
    p.journal.around(
        |s| s.namespaces.push(full.clone()),
        || Netns::create_named(&full).keep(),
        |_, _| {},
    )
}

/// Spawns `cmd` in `ns` in a session of its own, recording it as `role` in `journal`
/// (under the journal's lock, so a teardown cannot miss it).
fn spawn_recorded(journal: &Journal, role: &str, ns: &Netns, cmd: &mut Command) -> Child {
    // SAFETY: setsid and sigprocmask are async-signal-safe system calls. The builder
    // blocks SIGINT/SIGTERM in all its threads to handle them in one; its daemons must
    // not inherit that mask, or `fjord-lab down`'s SIGTERM would never reach them.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            nix::sys::signal::SigSet::all()
                .thread_unblock()
                .map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    journal.around(
        |_| {},
        || spawn_in_netns(ns, cmd),
        |s: &mut LabState, child: &Child| {
            s.processes.push(ProcessRecord {
                role: role.to_string(),
                netns: ns.name().to_string(),
                pid: child.id(),
                start_time: process_start_time(child.id()).unwrap_or(0),
            })
        },
    )
}

/// Field 22 of `/proc/PID/stat` (start time in clock ticks since boot), `None` when the
/// process is gone.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `PID (COMM) STATE …`: fields after COMM start at 3; COMM may hold spaces.
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(19)?.parse().ok()
}

/// The whole lab underlay (every subnet) via the router on `machine`'s own subnet.
fn route_underlay_via_router(machine: &Machine) {
    let gw4 = underlay_v4(machine.subnet, 254).to_string();
    let gw6 = underlay_v6(machine.subnet, 254).to_string();
    machine
        .netns
        .ip(&["route", "add", "10.250.0.0/16", "via", &gw4]);
    machine
        .netns
        .ip(&["-6", "route", "add", "fd00:250::/48", "via", &gw6]);
}

/// `u0`, `u1`, …: the bridge of each subnet, inside the underlay namespace.
fn bridge_name(subnet: usize) -> String {
    format!("u{subnet}")
}

/// Forwarding on (both families) and IPv6 duplicate address detection off, before any
/// interface exists: with DAD, fresh link-local addresses stay tentative for a second
/// and the first neighbour solicitations across the router go unanswered.
fn enable_forwarding(ns: &Netns) {
    set_sysctls(
        ns,
        &[
            "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1",
            "net.ipv6.conf.default.forwarding=1",
        ],
    );
    disable_dad(ns);
}

fn disable_dad(ns: &Netns) {
    set_sysctls(
        ns,
        &[
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
        ],
    );
}

fn set_sysctls(ns: &Netns, keys: &[&str]) {
    for key in keys {
        let out = ns.run("sysctl", &["-q", "-w", key]);
        assert!(
            out.status.success(),
            "sysctl -w {key} in {}: {}",
            ns.name(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The last `max` bytes of a text file ("" when absent).
pub fn tail(path: &Path, max: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let start = text.len().saturating_sub(max);
    String::from_utf8_lossy(&text[start..]).into_owned()
}

/// Spawns `cmd` with its network namespace switched to `ns` between fork and exec (as
/// [`PluginCall::command_in`] does; not `ip netns exec`, which also remounts `/sys`).
pub fn spawn_in_netns(ns: &Netns, cmd: &mut Command) -> Child {
    spawn_in_netns_path(&ns.path(), cmd)
}

/// As [`spawn_in_netns`], for a namespace known by its path (`/run/netns/NAME`).
pub fn spawn_in_netns_path(netns: &Path, cmd: &mut Command) -> Child {
    let ns_file =
        File::open(netns).unwrap_or_else(|e| panic!("open netns {}: {e}", netns.display()));
    let fd = ns_file.as_raw_fd();
    // SAFETY: setns is one async-signal-safe system call; the fd stays open in the
    // parent until spawn returns, and the child inherited it across fork.
    unsafe {
        cmd.pre_exec(move || {
            nix::sched::setns(BorrowedFd::borrow_raw(fd), CloneFlags::CLONE_NEWNET)
                .map_err(std::io::Error::from)
        });
    }
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {:?} in {}: {e}", cmd.get_program(), netns.display()));
    drop(ns_file);
    child
}

/// Stops a child: SIGTERM, up to `grace` to exit, then SIGKILL; always reaps it.
pub fn stop_child(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait().ok()
}

/// A running `fjord-routed`; stopped (SIGTERM, then SIGKILL) and reaped on drop.
#[derive(Debug)]
pub struct RoutedProcess {
    child: Child,
    node: usize,
    log: PathBuf,
    registry: Registry,
    description: String,
    /// Left running on drop (a persistent lab's daemon).
    detached: bool,
}

impl RoutedProcess {
    /// Lets the daemon run on after this guard and the lab drop (a persistent lab's:
    /// `fjord-lab down` stops it by the pid in the state file). Returns its pid.
    /// It stays in the lab's registry, so [`Lab::routed_alive`] and [`Lab::kill_routed`]
    /// still see it (a persistent lab's drop kills nothing).
    pub fn detach(mut self) -> u32 {
        self.detached = true;
        self.child.id()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The lab node it runs on.
    pub fn node(&self) -> usize {
        self.node
    }

    pub fn log_file(&self) -> &Path {
        &self.log
    }

    /// The command line it was started with.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Its exit status if it has exited (reaping it), `None` while it runs.
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn is_running(&mut self) -> bool {
        self.try_exit_status().is_none()
    }

    /// Panics with the log if the daemon has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.try_exit_status() {
            panic!(
                "fjord-routed on node index {} exited ({status}): {}\n--- log ---\n{}",
                self.node,
                self.description,
                tail(&self.log, 4000)
            );
        }
    }

    /// SIGTERM (a clean shutdown) and wait; returns the exit status.
    pub fn stop(mut self) -> Option<ExitStatus> {
        self.stop_now()
    }

    fn stop_now(&mut self) -> Option<ExitStatus> {
        let status = stop_child(&mut self.child, STOP_GRACE);
        let pid = self.child.id();
        if let Ok(mut running) = self.registry.lock() {
            running.retain(|(_, p)| *p != pid);
        }
        status
    }
}

impl Drop for RoutedProcess {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        self.stop_now();
    }
}

/// A pod attached by the lab's `fjord` plugin on node `node`.
#[derive(Debug)]
pub struct LabPod {
    pub pod: Pod,
    pub node: usize,
    pub ipv4: IpAddr,
    pub ipv6: IpAddr,
    /// The plugin's ADD result.
    pub result: Value,
}

impl LabPod {
    pub fn netns(&self) -> &Netns {
        &self.pod.netns
    }

    /// The pod's address of a family (`true` for IPv6).
    pub fn address(&self, v6: bool) -> IpAddr {
        if v6 {
            self.ipv6
        } else {
            self.ipv4
        }
    }

    /// One echo to `addr`, waiting up to 2 s: whether it was answered.
    pub fn ping_once(&self, addr: IpAddr) -> bool {
        let out = self.pod.netns.run(
            "ping",
            &["-n", "-q", "-c", "1", "-W", "2", &addr.to_string()],
        );
        out.status.success()
    }

    /// Starts `ping -i INTERVAL -c COUNT -W 2 ADDR` in the pod, for a loss count over a
    /// window of `interval * count`.
    pub fn start_ping(&self, addr: IpAddr, interval: Duration, count: u32) -> ContinuousPing {
        let mut cmd = Command::new("ping");
        cmd.args([
            "-n",
            "-q",
            "-i",
            &format!("{:.3}", interval.as_secs_f64()),
            "-c",
            &count.to_string(),
            "-W",
            "2",
            &addr.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let child = spawn_in_netns(&self.pod.netns, &mut cmd);
        ContinuousPing {
            child: Some(child),
            target: addr,
            window: interval * count,
        }
    }
}

/// What a ping run counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PingStats {
    pub transmitted: u64,
    pub received: u64,
}

impl PingStats {
    pub fn lost(&self) -> u64 {
        self.transmitted.saturating_sub(self.received)
    }
}

/// A `ping` running in a pod; killed on drop if not finished.
#[derive(Debug)]
pub struct ContinuousPing {
    child: Option<Child>,
    target: IpAddr,
    window: Duration,
}

impl ContinuousPing {
    pub fn target(&self) -> IpAddr {
        self.target
    }

    /// Waits for the ping to send all its echoes (and the last replies), and returns
    /// its counts; panics if it runs 30 s past its window or prints no summary.
    pub fn finish(mut self) -> PingStats {
        let mut child = self.child.take().expect("finish once");
        let deadline = Instant::now() + self.window + Duration::from_secs(30);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("ping {} did not finish its window", self.target);
                }
            }
        }
        let out = child.wait_with_output().expect("ping output");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        parse_ping_summary(&text).unwrap_or_else(|| {
            panic!(
                "ping {} printed no summary: {text} {}",
                self.target,
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }
}

impl Drop for ContinuousPing {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Reads `N packets transmitted, M received` from ping's summary.
pub fn parse_ping_summary(text: &str) -> Option<PingStats> {
    let line = text.lines().find(|l| l.contains("packets transmitted"))?;
    let mut numbers = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u64>().ok());
    let transmitted = numbers.next()??;
    let received = numbers.next()??;
    Some(PingStats {
        transmitted,
        received,
    })
}

/// `fjord-routed status --json`, the fields the tests read (others are ignored).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct RoutedStatus {
    pub node: String,
    /// The node's IPAM blocks, both families.
    #[serde(deserialize_with = "networks")]
    pub blocks: Vec<IpNetwork>,
    pub peers: Vec<RoutedPeer>,
}

fn networks<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<IpNetwork>, D::Error> {
    let texts = Vec::<String>::deserialize(d)?;
    texts
        .iter()
        .map(|t| t.parse().map_err(serde::de::Error::custom))
        .collect()
}

/// One row of the peer table.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct RoutedPeer {
    pub address: IpAddr,
    /// `node-to-node mesh` for mesh peers.
    #[serde(rename = "type")]
    pub peer_type: String,
    /// `Established`, `Active`, `Connect`, `Idle`, …
    pub state: String,
    pub since: String,
    pub routes_in: u64,
    pub routes_out: u64,
}

impl RoutedStatus {
    pub fn peer(&self, address: IpAddr) -> Option<&RoutedPeer> {
        self.peers.iter().find(|p| p.address == address)
    }

    pub fn blocks_v4(&self) -> Vec<IpNetwork> {
        self.blocks
            .iter()
            .copied()
            .filter(|b| b.is_ipv4())
            .collect()
    }

    pub fn blocks_v6(&self) -> Vec<IpNetwork> {
        self.blocks
            .iter()
            .copied()
            .filter(|b| b.is_ipv6())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn underlay_addresses_read_like_their_host_numbers() {
        assert_eq!(underlay_v4(0, 3).to_string(), "10.250.0.3");
        assert_eq!(underlay_v6(0, 3).to_string(), "fd00:250::3");
        assert_eq!(underlay_v6(0, 101).to_string(), "fd00:250::101");
        assert_eq!(underlay_v6(2, 254).to_string(), "fd00:250:0:2::254");
    }

    #[test]
    fn ping_summary_is_parsed() {
        let text = "--- 10.244.0.2 ping statistics ---\n\
                    400 packets transmitted, 398 received, 0.5% packet loss, time 20012ms\n";
        let stats = parse_ping_summary(text).unwrap();
        assert_eq!(
            (stats.transmitted, stats.received, stats.lost()),
            (400, 398, 2)
        );
        assert_eq!(parse_ping_summary("nothing"), None);
    }

    #[test]
    fn status_json_of_the_design_parses() {
        let v = json!({
            "node": "node1", "asn": 64512, "blocks": ["10.244.0.0/26", "fd00:244::/122"],
            "peers": [{"address": "10.250.0.2", "type": "node-to-node mesh",
                       "state": "Established", "since": "10:23:14",
                       "routes_in": 2, "routes_out": 2}]
        });
        let s: RoutedStatus = serde_json::from_value(v).unwrap();
        assert_eq!(s.blocks_v6(), vec!["fd00:244::/122".parse().unwrap()]);
        assert_eq!(s.peer("10.250.0.2".parse().unwrap()).unwrap().routes_in, 2);
    }
}
