//! The daemon: one task that owns the node's view (peers, RIB, blocks) and turns
//! registry changes and BGP events into sessions, announcements and kernel routes.

use crate::bgp::{self, PeerCommand, PeerEvent, PeerHandle, SessionState};
use crate::config::{Encapsulation, Settings};
use crate::encap::{self, Encap};
use crate::error::RoutedError;
use crate::kernel::Kernel;
use crate::kubernetes;
use crate::mesh::{self, DesiredPeer, PeerKind};
use crate::rib::{Family, Path, PeerKey, Rib, RibChange};
use crate::status::{self, PeerStatus, StatusReport};
use crate::underlay;
use crate::vxlan::{DeviceSpec, Vxlan};
use fjord_ipam::registry::{self, NodeRecord, Registry};
use fjord_ipam::StoreSpec;
use ipnetwork::IpNetwork;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::time::{interval, sleep_until, Instant, MissedTickBehavior};
use tracing::{debug, info, warn};

// The encapsulation half of the daemon (VXLAN device, FDB and neighbour entries, the
// route choice per peer), in its own file.
#[path = "daemon_encap.rs"]
mod daemon_encap;

/// How often the registry (nodes, block claims) is read: a block the IPAM claims is
/// announced within this, well inside the second the design asks for.
const REGISTRY_POLL: Duration = Duration::from_millis(250);
/// A DaemonSet pod that cannot list Nodes within this exits, and is restarted.
const KUBE_FIRST_LIST_TIMEOUT: Duration = Duration::from_secs(30);
/// A full kernel reconcile repairs routes someone else removed or changed.
const RECONCILE_EVERY: Duration = Duration::from_secs(60);
/// RIB changes gathered from queued BGP events before the kernel is updated once for
/// all of them: large tables go in as a few big batches.
const MAX_BATCH: usize = 1024;
/// BGP events queued for the daemon. Small, so a session that floods UPDATEs waits
/// (TCP holds the rest) instead of piling decoded routes up in memory while the
/// kernel is being programmed.
const EVENT_QUEUE: usize = 4;

struct Peer {
    desired: DesiredPeer,
    handle: PeerHandle,
    state: SessionState,
    since: SystemTime,
    router_id: Option<Ipv4Addr>,
    /// Bumped whenever the peer's stale routes get a new deadline, so an old timer
    /// cannot sweep routes the peer has re-announced since.
    stale_generation: u64,
}

impl Peer {
    fn key(&self) -> Option<PeerKey> {
        self.router_id.map(|router_id| PeerKey {
            address: self.desired.address,
            router_id,
        })
    }
}

/// A peer that went down gracefully and did not come back within its restart time.
struct StaleExpired {
    peer: IpAddr,
    generation: u64,
}

pub struct Daemon {
    settings: Settings,
    registry: Box<dyn Registry>,
    kernel: Kernel,
    rib: Rib,
    peers: BTreeMap<IpAddr, Peer>,
    /// The listener's view of who may connect; kept equal to `peers`' keys.
    accepted: bgp::Peers,
    blocks: Vec<IpNetwork>,
    events_tx: mpsc::Sender<PeerEvent>,
    stale_tx: mpsc::Sender<StaleExpired>,
    status: Arc<Mutex<StatusReport>>,
    /// Until this instant the kernel keeps routes from before a restart that nobody has
    /// re-announced yet (graceful restart); then a reconcile sweeps them.
    restart_window: Option<Instant>,
    store_reachable: bool,
    /// Per-peer encapsulation: the mode, connected subnets, node addresses, device.
    encap: Encap,
    vxlan: Vxlan,
    /// What `fjord.vxlan` is created as; `None` when the underlay was not found.
    vxlan_spec: Option<DeviceSpec>,
    /// The routes installed through VXLAN: block -> the node (IPv4) behind it. The FDB
    /// and neighbour entries are derived from it.
    vxlan_routes: BTreeMap<IpNetwork, Ipv4Addr>,
}

/// Runs the daemon until SIGTERM or SIGINT. The kernel routes stay when it exits: a
/// restarted daemon finds them, and peers keep forwarding meanwhile (graceful restart).
pub async fn run(settings: Settings) -> Result<(), RoutedError> {
    let registry = open_registry(&settings).await?;
    registry.register(&NodeRecord {
        name: settings.node_name.clone(),
        addresses: settings.addresses.clone(),
        asn: settings.asn,
    })?;
    let kernel = Kernel::connect()?;
    let underlay = record_pod_mtu(&settings).await?;
    let vxlan = Vxlan::connect()?;
    let encap = start_encap(&settings, &vxlan).await?;
    let vxlan_spec = underlay.map(|(index, mtu)| DeviceSpec {
        underlay: index,
        local: settings.router_id,
        mtu: encap::vxlan_mtu(mtu),
        mac: encap::vtep_mac(settings.router_id),
    });
    let restart_window = restart_window(&kernel, &settings).await?;
    let (events_tx, mut events) = mpsc::channel(EVENT_QUEUE);
    let (stale_tx, mut stale) = mpsc::channel(64);
    let accepted = bgp::Peers::new();
    start_listener(settings.listen_port, accepted.clone()).await?;
    let status = Arc::new(Mutex::new(empty_report(&settings)));
    spawn_status_server(&settings, status.clone());
    let mut daemon = Daemon {
        settings,
        registry,
        kernel,
        rib: Rib::new(),
        peers: BTreeMap::new(),
        accepted,
        blocks: Vec::new(),
        events_tx,
        stale_tx,
        status,
        restart_window,
        store_reachable: true,
        encap,
        vxlan,
        vxlan_spec,
        vxlan_routes: BTreeMap::new(),
    };
    daemon.event_loop(&mut events, &mut stale).await
}

/// The store's node registry; for `kubernetes`, the Node watcher after its first list.
async fn open_registry(settings: &Settings) -> Result<Box<dyn Registry>, RoutedError> {
    match &settings.store {
        StoreSpec::Kubernetes(dir) => {
            let registry = kubernetes::start(kubernetes::WatchOptions {
                node: settings.node_name.clone(),
                default_asn: settings.asn,
                kubeconfig: settings.kubeconfig.clone(),
                pod_cidrs_dir: dir.clone(),
                first_list_timeout: KUBE_FIRST_LIST_TIMEOUT,
            })
            .await?;
            Ok(Box::new(registry))
        }
        other => Ok(registry::open(other)?),
    }
}

/// Routes left by a previous run mean this is a restart: keep them for the restart
/// time so forwarding never stops, then sweep what nobody re-announced.
async fn restart_window(
    kernel: &Kernel,
    settings: &Settings,
) -> Result<Option<Instant>, RoutedError> {
    let inherited = kernel.fjord_routes().await?.len();
    if inherited == 0 {
        return Ok(None);
    }
    let seconds = u64::from(settings.graceful_restart_time);
    info!(node = %settings.node_name, routes = inherited, seconds,
        "restarting: keeping the kernel's routes until peers have re-announced theirs");
    Ok(Some(Instant::now() + Duration::from_secs(seconds)))
}

async fn start_listener(port: u16, accepted: bgp::Peers) -> Result<(), RoutedError> {
    // `[::]` with IPV6_V6ONLY off takes IPv4 peers too.
    let address = SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
    let listener = bgp::Listener::bind(address)
        .await
        .map_err(|source| RoutedError::Listen { address, source })?;
    info!(%address, "listening for BGP");
    tokio::spawn(listener.run(accepted));
    Ok(())
}

impl Daemon {
    async fn event_loop(
        &mut self,
        events: &mut mpsc::Receiver<PeerEvent>,
        stale: &mut mpsc::Receiver<StaleExpired>,
    ) -> Result<(), RoutedError> {
        let mut poll = interval(REGISTRY_POLL);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut reconcile = interval(RECONCILE_EVERY);
        reconcile.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut terminate = signal(SignalKind::terminate()).map_err(RoutedError::Signal)?;
        let mut interrupt = signal(SignalKind::interrupt()).map_err(RoutedError::Signal)?;
        loop {
            let window = self.restart_window;
            tokio::select! {
                _ = poll.tick() => {
                    let changes = self.sync_registry().await;
                    self.program(changes).await;
                }
                Some(event) = events.recv() => {
                    let mut changes = self.handle(event).await;
                    while changes.len() < MAX_BATCH {
                        let Ok(more) = events.try_recv() else { break };
                        changes.extend(self.handle(more).await);
                    }
                    self.program(changes).await;
                }
                Some(expired) = stale.recv() => {
                    let changes = self.on_stale_expired(expired);
                    self.program(changes).await;
                }
                _ = sleep_until(window.unwrap_or_else(Instant::now)), if window.is_some() => {
                    self.restart_window = None;
                    info!(node = %self.settings.node_name, "restart window over: sweeping routes nobody re-announced");
                    self.reconcile().await;
                }
                _ = reconcile.tick(), if self.restart_window.is_none() => self.reconcile().await,
                _ = terminate.recv() => break,
                _ = interrupt.recv() => break,
            }
            self.publish_status();
        }
        info!(node = %self.settings.node_name, "stopping; kernel routes stay for the next start (graceful restart)");
        let _ = std::fs::remove_file(&self.settings.socket);
        Ok(())
    }

    /// Reads nodes and block claims; starts and stops sessions; announces block changes.
    async fn sync_registry(&mut self) -> Vec<RibChange> {
        let (nodes, claims) = match (self.registry.nodes(), self.registry.claims()) {
            (Ok(nodes), Ok(claims)) => (nodes, claims),
            (Err(e), _) | (_, Err(e)) => {
                // The kernel keeps what it has while the store is away; one line, not
                // four a second.
                if self.store_reachable {
                    warn!(node = %self.settings.node_name, error = %e,
                        "cannot read the node registry; keeping the current peers and routes");
                }
                self.store_reachable = false;
                return Vec::new();
            }
        };
        if !self.store_reachable {
            info!(node = %self.settings.node_name, "the node registry is readable again");
            self.store_reachable = true;
        }
        self.sync_encap(&nodes).await;
        let blocks = mesh::own_blocks(&claims, &self.settings.node_name);
        let mut changes = self.sync_blocks(blocks).await;
        let current: BTreeMap<IpAddr, DesiredPeer> = self
            .peers
            .iter()
            .map(|(address, peer)| (*address, peer.desired.clone()))
            .collect();
        let desired = mesh::desired_peers(&self.settings, &nodes);
        let (stop, start) = mesh::peer_changes(&current, &desired);
        for address in stop {
            changes.extend(self.stop_peer(address).await);
        }
        for peer in start {
            self.start_peer(peer).await;
        }
        changes
    }

    async fn sync_blocks(&mut self, blocks: Vec<IpNetwork>) -> Vec<RibChange> {
        if blocks == self.blocks {
            return Vec::new();
        }
        let added: Vec<IpNetwork> = blocks
            .iter()
            .filter(|b| !self.blocks.contains(b))
            .copied()
            .collect();
        let removed: Vec<IpNetwork> = self
            .blocks
            .iter()
            .filter(|b| !blocks.contains(b))
            .copied()
            .collect();
        info!(node = %self.settings.node_name, ?added, ?removed, "the node's blocks changed");
        let announce = self.routes_for(&added);
        for peer in self.peers.values() {
            if !announce.is_empty() {
                send(&peer.handle, PeerCommand::Announce(announce.clone())).await;
            }
            if !removed.is_empty() {
                send(&peer.handle, PeerCommand::Withdraw(removed.clone())).await;
            }
        }
        self.blocks = blocks;
        self.rib
            .local_prefixes(self.blocks.iter().copied().collect())
    }

    /// Our blocks as BGP routes: next hop the node's address of the block's family.
    fn routes_for(&self, blocks: &[IpNetwork]) -> Vec<bgp::Route> {
        blocks
            .iter()
            .filter_map(|block| {
                let next_hop = if block.is_ipv4() {
                    IpAddr::V4(self.settings.router_id)
                } else {
                    self.settings.address_v6()?
                };
                Some(originated(*block, next_hop))
            })
            .collect()
    }

    async fn start_peer(&mut self, desired: DesiredPeer) {
        info!(peer = %desired.address, asn = desired.asn, kind = ?desired.kind, "starting session");
        let config = bgp::PeerConfig {
            port: self.settings.listen_port,
            hold_time: self.settings.hold_time,
            connect_retry: self.settings.connect_retry,
            graceful_restart_time: (self.settings.graceful_restart_time > 0)
                .then_some(self.settings.graceful_restart_time),
            ..bgp::PeerConfig::new(
                desired.address,
                self.settings.asn,
                desired.asn,
                self.settings.router_id,
            )
        };
        let handle = bgp::spawn_peer(config, self.events_tx.clone());
        self.accepted.insert(handle.clone());
        let announce = self.routes_for(&self.blocks);
        if !announce.is_empty() {
            send(&handle, PeerCommand::Announce(announce)).await;
        }
        let peer = Peer {
            desired,
            handle,
            state: SessionState::Idle,
            since: SystemTime::now(),
            router_id: None,
            stale_generation: 0,
        };
        self.peers.insert(peer.desired.address, peer);
    }

    async fn stop_peer(&mut self, address: IpAddr) -> Vec<RibChange> {
        let Some(peer) = self.peers.remove(&address) else {
            return Vec::new();
        };
        info!(peer = %address, "stopping session: the peer left the registry or the configuration");
        self.accepted.remove(address);
        send(&peer.handle, PeerCommand::Stop).await;
        peer.key()
            .map(|k| self.rib.peer_down(k))
            .unwrap_or_default()
    }

    async fn handle(&mut self, event: PeerEvent) -> Vec<RibChange> {
        match event {
            PeerEvent::StateChanged { peer, state, at } => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    debug!(peer = %peer, ?state, "session state");
                    p.state = state;
                    p.since = at;
                }
                Vec::new()
            }
            PeerEvent::Established {
                peer,
                peer_router_id,
                families,
                ..
            } => self.on_established(peer, peer_router_id, &families),
            PeerEvent::Update {
                peer,
                announced,
                withdrawn,
            } => {
                let Some((key, ebgp)) = self.peer_key(peer) else {
                    return Vec::new();
                };
                let paths: Vec<Path> = announced.iter().map(|r| to_path(r, ebgp)).collect();
                self.rib.update(key, &paths, &withdrawn)
            }
            PeerEvent::EndOfRib { peer, afi } => {
                let Some((key, _)) = self.peer_key(peer) else {
                    return Vec::new();
                };
                let family = match afi {
                    bgp::Afi::Ipv4 => Family::Ipv4,
                    bgp::Afi::Ipv6 => Family::Ipv6,
                };
                self.rib.end_of_rib(key, family)
            }
            PeerEvent::Down {
                peer,
                reason,
                graceful,
            } => self.peer_down(peer, &reason, graceful),
        }
    }

    fn on_established(
        &mut self,
        address: IpAddr,
        router_id: Ipv4Addr,
        families: &[bgp::Afi],
    ) -> Vec<RibChange> {
        let Some(peer) = self.peers.get_mut(&address) else {
            return Vec::new();
        };
        info!(peer = %address, %router_id, ?families, "session established");
        let previous = peer.key();
        peer.router_id = Some(router_id);
        peer.stale_generation += 1;
        match previous {
            // The peer came back under another identity: its old paths are not stale
            // paths of this session and nothing will sweep them otherwise.
            Some(old) if old.router_id != router_id => self.rib.peer_down(old),
            _ => Vec::new(),
        }
    }

    fn peer_key(&self, address: IpAddr) -> Option<(PeerKey, bool)> {
        let peer = self.peers.get(&address)?;
        Some((peer.key()?, peer.desired.asn != self.settings.asn))
    }

    /// A session ended. A peer that negotiated graceful restart and only lost its TCP
    /// session keeps its routes (stale) for the restart time (RFC 4724, receiving side).
    fn peer_down(&mut self, address: IpAddr, reason: &str, graceful: bool) -> Vec<RibChange> {
        let restart = Duration::from_secs(u64::from(self.settings.graceful_restart_time));
        let Some(peer) = self.peers.get_mut(&address) else {
            return Vec::new();
        };
        let Some(key) = peer.key() else {
            return Vec::new();
        };
        if !graceful || restart.is_zero() {
            warn!(peer = %address, reason, "session down: withdrawing its routes");
            return self.rib.peer_down(key);
        }
        peer.stale_generation += 1;
        let expired = StaleExpired {
            peer: address,
            generation: peer.stale_generation,
        };
        warn!(peer = %address, reason, seconds = restart.as_secs(),
            "session down, peer may be restarting: keeping its routes as stale");
        self.rib.mark_stale(key);
        let stale_tx = self.stale_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(restart).await;
            let _ = stale_tx.send(expired).await;
        });
        Vec::new()
    }

    fn on_stale_expired(&mut self, expired: StaleExpired) -> Vec<RibChange> {
        let Some(peer) = self.peers.get(&expired.peer) else {
            return Vec::new();
        };
        if peer.stale_generation != expired.generation {
            return Vec::new();
        }
        let Some(key) = peer.key() else {
            return Vec::new();
        };
        warn!(peer = %expired.peer, "peer did not come back within the restart time: withdrawing its stale routes");
        self.rib.sweep_stale(key)
    }

    async fn program(&mut self, changes: Vec<RibChange>) {
        if changes.is_empty() {
            return;
        }
        let count = changes.len();
        let started = std::time::Instant::now();
        let (clear, ops, vxlan_changed) = self.route_ops(changes);
        if vxlan_changed {
            self.sync_vteps(self.restart_window.is_some()).await;
        }
        self.remove_first(clear).await;
        match self.kernel.apply(ops).await {
            Ok(()) => info!(node = %self.settings.node_name, routes = count,
                millis = started.elapsed().as_millis() as u64, "kernel routes updated"),
            Err(e) => warn!(node = %self.settings.node_name, error = %e,
                "some kernel routes could not be programmed; the next reconcile retries"),
        }
    }

    async fn reconcile(&mut self) {
        self.refresh_connected().await;
        let (desired, vxlan_routes) = self.desired_routes();
        self.vxlan_routes = vxlan_routes;
        self.sync_vteps(false).await;
        self.clear_before_onlink(&desired).await;
        match self.kernel.reconcile(&desired).await {
            Ok(report) if report.removed + report.installed > 0 => {
                info!(node = %self.settings.node_name, removed = report.removed,
                    installed = report.installed, kept = report.kept, "kernel reconciled");
            }
            Ok(_) => {}
            Err(e) => {
                warn!(node = %self.settings.node_name, error = %e, "kernel reconcile failed; retrying later")
            }
        }
    }

    fn publish_status(&self) {
        let peers = self.peers.values().map(|p| self.peer_status(p)).collect();
        let blocks = self.blocks.iter().map(ToString::to_string).collect();
        let mut report = self.status.lock().expect("status lock");
        report.blocks = blocks;
        report.peers = peers;
    }

    fn peer_status(&self, peer: &Peer) -> PeerStatus {
        let (peer_type, node) = match &peer.desired.kind {
            PeerKind::Mesh { node } => (status::MESH_PEER, Some(node.clone())),
            PeerKind::External => (status::EXTERNAL_PEER, None),
        };
        let established = peer.state == SessionState::Established;
        PeerStatus {
            address: peer.desired.address,
            peer_type: peer_type.into(),
            node,
            asn: peer.desired.asn,
            state: peer.state.to_string(),
            since: clock_time(peer.since),
            since_unix: peer
                .since
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            datapath: self.encap.peer_datapath(peer.desired.address).to_string(),
            routes_in: peer.key().map_or(0, |k| self.rib.routes_in(&k)),
            routes_out: if established {
                self.routes_for(&self.blocks).len()
            } else {
                0
            },
        }
    }
}

/// Commands go to a session task that may just have ended (its Down event is queued);
/// that is not an error for the caller, the registry poll restarts it if needed.
async fn send(handle: &PeerHandle, command: PeerCommand) {
    if let Err(e) = handle.send(command).await {
        debug!(peer = %handle.address, error = %e, "session task gone; command dropped");
    }
}

/// A route this node originates: one of its blocks.
fn originated(prefix: IpNetwork, next_hop: IpAddr) -> bgp::Route {
    bgp::Route {
        prefix,
        next_hop,
        origin: bgp::Origin::Igp,
        as_path: Vec::new(),
        local_pref: Some(crate::rib::DEFAULT_LOCAL_PREF),
        med: None,
    }
}

/// A received route as the RIB's path: only what best-path selection reads.
fn to_path(route: &bgp::Route, ebgp: bool) -> Path {
    Path {
        prefix: route.prefix,
        next_hop: route.next_hop,
        origin: match route.origin {
            bgp::Origin::Igp => 0,
            bgp::Origin::Egp => 1,
            bgp::Origin::Incomplete => 2,
        },
        as_path_len: route.as_path.len(),
        local_pref: route.local_pref,
        med: route.med,
        neighbour_as: route.as_path.first().copied(),
        ebgp,
    }
}

fn empty_report(settings: &Settings) -> StatusReport {
    StatusReport {
        node: settings.node_name.clone(),
        asn: settings.asn,
        router_id: settings.router_id.to_string(),
        addresses: settings.addresses.clone(),
        encapsulation: settings.encapsulation.to_string(),
        blocks: Vec::new(),
        peers: Vec::new(),
    }
}

/// HH:MM:SS in UTC, as the status table shows it.
fn clock_time(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        % 86_400;
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

fn spawn_status_server(settings: &Settings, status: Arc<Mutex<StatusReport>>) {
    let path = settings.socket.clone();
    tokio::spawn(async move {
        let report = move || status.lock().expect("status lock").clone();
        if let Err(source) = status::serve(&path, report).await {
            let e = RoutedError::StatusSocket { path, source };
            warn!(error = %e, "status socket stopped");
        }
    });
}

/// Pods get the underlay's MTU, less the VXLAN headers when any route may be
/// encapsulated (ARCHITECTURE.md, "The pod datapath"). Returns the underlay's index and MTU.
async fn record_pod_mtu(settings: &Settings) -> Result<Option<(u32, u32)>, RoutedError> {
    let address = IpAddr::V4(settings.router_id);
    let underlay_error = |source| RoutedError::Underlay { address, source };
    let (connection, handle, _) = rtnetlink::new_connection().map_err(underlay_error)?;
    tokio::spawn(connection);
    let Some((index, underlay_mtu)) = underlay::link_of(&handle, address)
        .await
        .map_err(underlay_error)?
    else {
        warn!(%address, "no interface holds the node address; not recording a pod MTU");
        return Ok(None);
    };
    let mtu = encap::pod_mtu(settings.encapsulation, underlay_mtu);
    let path = &settings.mtu_file;
    underlay::record_pod_mtu(path, mtu).map_err(|source| RoutedError::MtuFile {
        path: path.clone(),
        source,
    })?;
    info!(node = %settings.node_name, mtu, underlay_mtu, file = %path.display(), "recorded the pod MTU");
    Ok(Some((index, underlay_mtu)))
}

/// The encapsulation state at start. In `never` a `fjord.vxlan` left by an earlier run
/// in another mode goes now, with every route, FDB and neighbour entry on it.
async fn start_encap(settings: &Settings, vxlan: &Vxlan) -> Result<Encap, RoutedError> {
    let mut encap = Encap::new(settings.encapsulation);
    if settings.encapsulation == Encapsulation::Never {
        if vxlan.remove().await? {
            info!(node = %settings.node_name, "encapsulation never: removed the fjord.vxlan device of an earlier run");
        }
    } else {
        encap.device = vxlan.index().await?;
    }
    encap.connected = vxlan.connected(encap.device).await?;
    info!(node = %settings.node_name, mode = %settings.encapsulation.to_string(),
        connected = ?encap.connected, "encapsulation");
    Ok(encap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_time_is_hours_minutes_seconds() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(86_400 * 3 + 10 * 3600 + 23 * 60 + 14);
        assert_eq!(clock_time(t), "10:23:14");
    }

    #[test]
    fn received_paths_keep_what_best_path_reads() {
        let route = bgp::Route {
            prefix: "10.1.0.0/26".parse().unwrap(),
            next_hop: "10.0.0.2".parse().unwrap(),
            origin: bgp::Origin::Incomplete,
            as_path: vec![65001, 65002],
            local_pref: None,
            med: Some(5),
        };
        let path = to_path(&route, true);
        assert_eq!((path.origin, path.as_path_len), (2, 2));
        assert_eq!(path.neighbour_as, Some(65001));
        assert_eq!(path.med, Some(5));
        assert!(path.ebgp);
    }
}
