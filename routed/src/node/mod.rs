//! The node core: every decision `fjord-routed` makes, as a pure value fed [`Input`]s
//! that returns [`Effect`]s, in the shape of [`crate::bgp::fsm`]. No socket, no netlink,
//! no task and no clock: timers are effects ([`Effect::SetTimer`]) whose expiry comes
//! back as an input, kernel work is an effect whose result comes back as an input, and
//! the wall-clock time a status report needs is an argument. So the node's behaviour is
//! tested without root by replaying inputs and asserting effects (`node/tests.rs`).
//! The shell ([`crate::daemon`]) owns the sockets, the timers, netlink and the session
//! tasks, and carries the effects out in order.
//!
//! What goes in:
//! - [`ClusterEvent`]s from the cluster view ([`crate::cluster`]): nodes and block
//!   claims, and a source that cannot be read.
//! - [`PeerEvent`]s from the BGP sessions.
//! - [`Timer`] expiries.
//! - [`KernelResult`]s: the outcome of the effects that read or change the kernel.
//!
//! What comes out: sessions to start, stop and tell (announce, withdraw), route ops,
//! `fjord.vxlan` and its FDB/neighbour entries, full reconciles, timers. Status and
//! counters are read, not fed: [`NodeCore::status`], [`NodeCore::counters`].
//!
//! The modules:
//! - [`mesh`]: who to peer with (pure).
//! - [`import`]: whether a received route may be installed, or why not.
//! - [`routes`]: RIB changes as kernel route ops, native or VXLAN.
//! - [`counters`]: what a metrics endpoint reads.
//! - `peers`, `device`: the core's handling of sessions and of the encapsulation device.
//!
//! Where the next capabilities go (each a new input or effect variant, a field of
//! [`NodeCore`], and a module here; the shell only learns to carry the effect out):
//! - NetworkPolicy (issue 13): Pods, Namespaces and NetworkPolicies arrive as new
//!   [`ClusterEvent`] variants from watches built on [`crate::kubernetes::watch`]; the
//!   core keeps the pods and policies, calls the pure half of the `fjord-policy` crate
//!   (`translate`, `ruleset`) and emits `Effect::Policy(..)` carrying the table diff,
//!   which the shell applies through its `nft` half; the result returns as a
//!   [`KernelResult`] variant.
//! - Services and EndpointSlices (issue 14): new [`ClusterEvent`] variants; the extra
//!   prefixes join what `peers::exports_for` gives external peers only. The peers file
//!   becomes an input (`Input::PeersFile`) replacing [`NodeConfig::peers`]; its import
//!   side (`accept` lists, blocks a mesh node may announce) goes into [`import`], its
//!   export side (`export: [blocks, services]`) into `exports_for`.
//! - Route reflection (issue 15): [`mesh::desired_peers`] decides who peers with whom
//!   (clients only with reflectors); a reflector re-announces what it learned, from
//!   the RIB's best paths, with ORIGINATOR_ID/CLUSTER_LIST (RFC 4456) in `exports_for`.
//! - BFD (issue 15): a BFD session's state is a peer input (`Input::Bfd { peer, up }`);
//!   down is handled as a non-graceful [`PeerEvent::Down`] (withdraw at once), and the
//!   core emits the commands that start and stop BFD sessions beside the BGP ones.
//! - Metrics (issue 16): [`counters`] and [`NodeCore::status`] are what the endpoint
//!   reads; a session's last error arrives with [`PeerEvent::Down`].

pub mod counters;
mod device;
pub mod import;
pub mod mesh;
mod peers;
pub mod routes;
#[cfg(test)]
mod tests;

pub use routes::{NextHop, RouteOp};

use crate::bgp::{PeerCommand, PeerConfig, PeerEvent};
use crate::config::{Encapsulation, ExtraPeer};
use crate::encap::{Encap, VtepEntries};
use crate::kernel::KernelError;
use crate::rib::Rib;
use crate::status::StatusReport;
use crate::vxlan::DeviceSpec;
use counters::{Counters, KernelWork};
use fjord_ipam::registry::NodeView;
use import::{ImportPolicy, RejectionLog};
use ipnetwork::IpNetwork;
use peers::PeerEntry;
use routes::{PendingChanges, VxlanRoutes};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, SystemTime};
use tracing::{info, warn};

/// A full kernel reconcile repairs routes someone else removed or changed.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(60);
/// How often `fjord.vxlan` is checked (a link lookup by name) while the mode may need
/// it: a device someone deleted is back, with its routes, within this.
pub const DEVICE_CHECK_EVERY: Duration = Duration::from_secs(1);

/// What the core needs of the daemon's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    pub node_name: String,
    /// The node's underlay addresses, IPv4 first.
    pub addresses: Vec<IpAddr>,
    pub router_id: Ipv4Addr,
    pub asn: u32,
    /// `--peer`s.
    pub peers: Vec<ExtraPeer>,
    pub mesh: bool,
    pub encapsulation: Encapsulation,
    pub listen_port: u16,
    pub hold_time: u16,
    /// Seconds; 0 turns graceful restart off.
    pub graceful_restart_time: u16,
    pub connect_retry: Duration,
}

impl NodeConfig {
    pub fn address_v6(&self) -> Option<IpAddr> {
        self.addresses.iter().copied().find(IpAddr::is_ipv6)
    }

    fn restart_time(&self) -> Duration {
        Duration::from_secs(u64::from(self.graceful_restart_time))
    }
}

/// What the shell found in the kernel before the core starts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StartFacts {
    /// Fjord's routes already in the kernel: a restart (graceful restart window).
    pub inherited_routes: usize,
    /// `fjord.vxlan`'s index, if it exists (the shell removed it in mode `never`).
    pub device: Option<u32>,
    /// The node's directly connected subnets.
    pub connected: Vec<IpNetwork>,
    /// What `fjord.vxlan` is created as; `None` when the underlay was not found.
    pub device_spec: Option<DeviceSpec>,
}

/// What the core is fed.
#[derive(Debug)]
pub enum Input {
    Cluster(ClusterEvent),
    Peer(PeerEvent),
    Timer(Timer),
    Kernel(KernelResult),
}

/// What the cluster view says. Every source (the dir/etcd poller, the Kubernetes Node
/// watcher) sends the same events; the next issues' watches add variants here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterEvent {
    /// Every registered node and every block claim, complete: sent at start, whenever
    /// it changes, and when the source is readable again after [`Self::Unavailable`].
    Nodes(NodeView),
    /// The source cannot be read; the peers and routes stay as they are.
    Unavailable { error: String },
}

/// The outcome of an effect that reads or changes the kernel.
#[derive(Debug)]
pub enum KernelResult {
    /// [`Effect::EnsureDevice`]: the device's index and whether it was created.
    DeviceEnsured(Result<(u32, bool), KernelError>),
    /// [`Effect::RemoveDevice`]: whether there was a device.
    DeviceRemoved(Result<bool, KernelError>),
    /// [`Effect::ReadConnected`]: the node's directly connected subnets.
    Connected(Result<Vec<IpNetwork>, KernelError>),
    /// A route, reconcile or VXLAN entry change was applied (for the counters).
    Applied {
        work: KernelWork,
        elapsed: Duration,
        failed: bool,
    },
}

/// The core's timers; one of each at a time (setting one again moves its deadline).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timer {
    /// The graceful restart window at start is over: sweep what nobody re-announced.
    RestartWindow,
    Reconcile,
    DeviceCheck,
    /// A peer that went down gracefully did not come back within its restart time.
    StaleRoutes(IpAddr),
}

/// What the shell carries out, in order. Effects that report back do so with an
/// [`Input::Kernel`] after the shell has carried out the rest of the batch they came in
/// (so a full reconcile they cause is applied after every route op before it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Start the session task and let the listener hand it the peer's connections.
    StartSession(PeerConfig),
    /// Tell a running session to announce, withdraw or ask for a refresh.
    Session {
        peer: IpAddr,
        command: PeerCommand,
    },
    /// End the session and refuse the peer's connections from now on.
    StopSession {
        peer: IpAddr,
    },
    /// Create or repair `fjord.vxlan`; answered by [`KernelResult::DeviceEnsured`].
    EnsureDevice(DeviceSpec),
    /// Delete `fjord.vxlan`; answered by [`KernelResult::DeviceRemoved`].
    RemoveDevice,
    /// Read the connected subnets (not those of `device`); answered by
    /// [`KernelResult::Connected`], after which every route is chosen again.
    ReadConnected {
        device: Option<u32>,
    },
    /// Make `fjord.vxlan`'s FDB and neighbour entries `entries`; with `keep_stale`
    /// (restart window) only add what is missing.
    Vteps {
        device: u32,
        entries: VtepEntries,
        keep_stale: bool,
    },
    /// Route changes: `clear_first` removed (and acknowledged) before `ops`.
    Routes {
        clear_first: Vec<RouteOp>,
        ops: Vec<RouteOp>,
    },
    /// Inside the restart window: replace every route with `desired`, removing only
    /// those that must go before they turn onlink; nothing is swept.
    ReplaceAll {
        desired: HashMap<IpNetwork, NextHop>,
    },
    /// Make Fjord's routes in the kernel exactly `desired` (removing first those that
    /// must go before they turn onlink).
    Reconcile {
        desired: HashMap<IpNetwork, NextHop>,
    },
    SetTimer {
        timer: Timer,
        after: Duration,
    },
    CancelTimer(Timer),
}

pub struct NodeCore {
    config: NodeConfig,
    rib: Rib,
    peers: BTreeMap<IpAddr, PeerEntry>,
    /// The node's blocks, sorted: announced to every peer, never installed.
    blocks: Vec<IpNetwork>,
    import: ImportPolicy,
    rejections: RejectionLog,
    counters: Counters,
    registry_readable: bool,
    /// Until [`Timer::RestartWindow`] the kernel keeps routes from before a restart
    /// that nobody has re-announced yet (graceful restart); then a reconcile sweeps them.
    restart_window: bool,
    /// Per-peer encapsulation: the mode, connected subnets, node addresses, device.
    encap: Encap,
    device_spec: Option<DeviceSpec>,
    /// The last attempt to set the device up failed (logged once until it works).
    device_failing: bool,
    /// The other registered nodes' IPv4 addresses: whether `fjord.vxlan` is needed.
    other_nodes: Vec<IpAddr>,
    vxlan: VxlanRoutes,
    /// RIB changes of the inputs handled so far in this batch.
    pending: PendingChanges,
    effects: Vec<Effect>,
}

impl NodeCore {
    /// The core before any input, and what to do first: inside a restart window (the
    /// kernel holds Fjord routes from a previous run) keep them and wait; otherwise
    /// reconcile at once.
    pub fn start(config: NodeConfig, facts: StartFacts) -> (NodeCore, Vec<Effect>) {
        let mut encap = Encap::new(config.encapsulation);
        encap.device = facts.device;
        encap.connected = facts.connected;
        let mut core = NodeCore {
            import: ImportPolicy::new(config.addresses.clone(), config.asn),
            config,
            rib: Rib::new(),
            peers: BTreeMap::new(),
            blocks: Vec::new(),
            rejections: RejectionLog::default(),
            counters: Counters::default(),
            registry_readable: true,
            restart_window: facts.inherited_routes > 0,
            encap,
            device_spec: facts.device_spec,
            device_failing: false,
            other_nodes: Vec::new(),
            vxlan: VxlanRoutes::default(),
            pending: PendingChanges::default(),
            effects: Vec::new(),
        };
        if core.restart_window {
            let after = core.config.restart_time();
            info!(node = %core.config.node_name, routes = facts.inherited_routes, seconds = after.as_secs(),
                "restarting: keeping the kernel's routes until peers have re-announced theirs");
            core.set_timer(Timer::RestartWindow, after);
        } else {
            core.read_connected();
        }
        if core.config.encapsulation != Encapsulation::Never {
            core.set_timer(Timer::DeviceCheck, DEVICE_CHECK_EVERY);
        }
        let effects = std::mem::take(&mut core.effects);
        (core, effects)
    }

    pub fn handle(&mut self, input: Input) -> Vec<Effect> {
        self.handle_all([input])
    }

    /// Handles `inputs` in order and programs the kernel once for all of them: queued
    /// BGP events go in as one batch, so a large table costs a few big kernel batches.
    pub fn handle_all(&mut self, inputs: impl IntoIterator<Item = Input>) -> Vec<Effect> {
        for input in inputs {
            match input {
                Input::Cluster(event) => self.cluster(event),
                Input::Peer(event) => self.peer_event(event),
                Input::Timer(timer) => self.timer(timer),
                Input::Kernel(result) => self.kernel_result(result),
            }
        }
        self.program();
        std::mem::take(&mut self.effects)
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The peer table as `fjord-routed status` shows it; `now` places the times.
    pub fn status(&self, now: SystemTime) -> StatusReport {
        StatusReport {
            node: self.config.node_name.clone(),
            asn: self.config.asn,
            router_id: self.config.router_id.to_string(),
            addresses: self.config.addresses.clone(),
            encapsulation: self.config.encapsulation.to_string(),
            blocks: self.blocks.iter().map(ToString::to_string).collect(),
            peers: self
                .peers
                .values()
                .map(|p| self.peer_status(p, now))
                .collect(),
        }
    }

    fn cluster(&mut self, event: ClusterEvent) {
        match event {
            ClusterEvent::Nodes(view) => self.nodes(view),
            ClusterEvent::Unavailable { error } => {
                // The kernel keeps what it has while the store is away; one line per
                // outage.
                if self.registry_readable {
                    warn!(node = %self.config.node_name, %error,
                        "cannot read the node registry; keeping the current peers and routes");
                }
                self.registry_readable = false;
            }
        }
    }

    /// Nodes and block claims: the encapsulation's view of the nodes, the node's own
    /// blocks, and the sessions to start and stop.
    fn nodes(&mut self, view: NodeView) {
        if !self.registry_readable {
            info!(node = %self.config.node_name, "the node registry is readable again");
            self.registry_readable = true;
        }
        let own = self.config.node_name.clone();
        self.encap.nodes = routes::node_addresses(&view.nodes, &own);
        self.other_nodes = view
            .nodes
            .iter()
            .filter(|n| n.name != own)
            .filter_map(|n| n.addresses.iter().copied().find(IpAddr::is_ipv4))
            .collect();
        self.check_device();
        self.set_blocks(mesh::own_blocks(&view.claims, &own));
        let current = self
            .peers
            .iter()
            .map(|(address, peer)| (*address, peer.desired.clone()))
            .collect();
        let desired = mesh::desired_peers(&self.config, &view.nodes);
        let (stop, start) = mesh::peer_changes(&current, &desired);
        for address in stop {
            self.stop_peer(address);
        }
        for peer in start {
            self.start_peer(peer);
        }
    }

    fn timer(&mut self, timer: Timer) {
        match timer {
            Timer::RestartWindow => {
                self.restart_window = false;
                info!(node = %self.config.node_name,
                    "restart window over: sweeping routes nobody re-announced");
                self.read_connected();
            }
            Timer::Reconcile if !self.restart_window => self.read_connected(),
            Timer::Reconcile => {}
            Timer::DeviceCheck => {
                self.check_device();
                self.set_timer(Timer::DeviceCheck, DEVICE_CHECK_EVERY);
            }
            Timer::StaleRoutes(peer) => self.stale_expired(peer),
        }
    }

    fn kernel_result(&mut self, result: KernelResult) {
        match result {
            KernelResult::DeviceEnsured(result) => self.device_ensured(result),
            KernelResult::DeviceRemoved(result) => self.device_removed(result),
            KernelResult::Connected(result) => self.connected(result),
            KernelResult::Applied {
                work,
                elapsed,
                failed,
            } => self.counters.applied(work, elapsed, failed),
        }
    }

    /// The batch's RIB changes as one set of kernel ops, VXLAN entries first.
    fn program(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let changes = self.pending.take();
        let programmed = self
            .vxlan
            .program(changes, &self.encap, &self.config.node_name);
        if programmed.vxlan_changed {
            self.sync_vteps(self.restart_window);
        }
        self.effects.push(Effect::Routes {
            clear_first: programmed.clear_first,
            ops: programmed.ops,
        });
    }

    /// The device's FDB and neighbour entries as the VXLAN routes imply.
    fn sync_vteps(&mut self, keep_stale: bool) {
        if let Some(device) = self.encap.device {
            self.effects.push(Effect::Vteps {
                device,
                entries: crate::encap::vtep_entries(&self.vxlan.0),
                keep_stale,
            });
        }
    }

    fn set_timer(&mut self, timer: Timer, after: Duration) {
        self.effects.push(Effect::SetTimer { timer, after });
    }
}
