//! The daemon's shell around the node core ([`crate::node`]): it opens the cluster view,
//! the kernel's sockets, the BGP listener and the status socket, feeds the core what
//! happens (cluster events, BGP events, timer expiries, kernel results) and carries out
//! the effects the core returns. Every decision is the core's; this module owns the
//! sockets, the session tasks, the timers and netlink.

use crate::bgp::{self, PeerCommand, PeerEvent, PeerHandle};
use crate::cluster::{self, ClusterView};
use crate::config::{Encapsulation, Settings};
use crate::encap::{self, VtepEntries};
use crate::error::RoutedError;
use crate::kernel::Kernel;
use crate::node::counters::KernelWork;
use crate::node::{
    routes, Effect, Input, KernelResult, NextHop, NodeCore, RouteOp, StartFacts, Timer,
};
use crate::status::{self, StatusReport};
use crate::underlay;
use crate::vxlan::{DeviceSpec, Vxlan};
use ipnetwork::IpNetwork;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::SystemTime;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep_until, Instant};
use tracing::{debug, info, warn};

/// Routes gathered from queued BGP events before the core is fed them as one batch
/// (and the kernel updated once for all of them): large tables go in as a few big
/// batches.
const MAX_BATCH: usize = 1024;
/// BGP events queued for the daemon. Small, so a session that floods UPDATEs waits
/// (TCP holds the rest) instead of piling decoded routes up in memory while the
/// kernel is being programmed.
const EVENT_QUEUE: usize = 4;
/// Status requests waiting for the event loop.
const STATUS_QUERIES: usize = 8;

/// A status request: the event loop answers it with the core's report.
type StatusQuery = oneshot::Sender<StatusReport>;

/// Runs the daemon until SIGTERM or SIGINT. The kernel routes stay when it exits: a
/// restarted daemon finds them, and peers keep forwarding meanwhile (graceful restart).
pub async fn run(settings: Settings) -> Result<(), RoutedError> {
    let cluster = cluster::open(&settings).await?;
    let kernel = Kernel::connect()?;
    let underlay = record_pod_mtu(&settings).await?;
    let vxlan = Vxlan::connect()?;
    let (device, connected) = start_encap(&settings, &vxlan).await?;
    let device_spec = underlay.map(|(index, mtu)| DeviceSpec {
        underlay: index,
        local: settings.router_id,
        mtu: encap::vxlan_mtu(mtu),
        mac: encap::vtep_mac(settings.router_id),
    });
    let inherited_routes = kernel.fjord_routes().await?.len();
    let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
    let accepted = bgp::Peers::new();
    start_listener(settings.listen_port, accepted.clone()).await?;
    let (queries_tx, queries) = mpsc::channel(STATUS_QUERIES);
    spawn_status_server(&settings, queries_tx);
    let facts = StartFacts {
        inherited_routes,
        device,
        connected,
        device_spec,
    };
    let (core, effects) = NodeCore::start(settings.node_config(), facts);
    let mut shell = Shell {
        settings,
        core,
        kernel,
        vxlan,
        accepted,
        sessions: HashMap::new(),
        events_tx,
        timers: Timers::default(),
    };
    shell.execute(effects).await;
    shell.event_loop(cluster, events, queries).await
}

struct Shell {
    settings: Settings,
    core: NodeCore,
    kernel: Kernel,
    vxlan: Vxlan,
    /// The listener's view of who may connect; kept equal to `sessions`' keys.
    accepted: bgp::Peers,
    sessions: HashMap<IpAddr, PeerHandle>,
    events_tx: mpsc::Sender<PeerEvent>,
    timers: Timers,
}

impl Shell {
    async fn event_loop(
        &mut self,
        mut cluster: ClusterView,
        mut events: mpsc::Receiver<PeerEvent>,
        mut queries: mpsc::Receiver<StatusQuery>,
    ) -> Result<(), RoutedError> {
        let mut terminate = signal(SignalKind::terminate()).map_err(RoutedError::Signal)?;
        let mut interrupt = signal(SignalKind::interrupt()).map_err(RoutedError::Signal)?;
        loop {
            let deadline = self.timers.next();
            tokio::select! {
                Some(event) = cluster.recv() => self.feed(vec![Input::Cluster(event)]).await,
                Some(event) = events.recv() => {
                    let batch = gather(event, &mut events);
                    self.feed(batch).await;
                }
                () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    let due = self.timers.expired(Instant::now());
                    self.feed(due.into_iter().map(Input::Timer).collect()).await;
                }
                Some(reply) = queries.recv() => {
                    // A client that gave up is no error.
                    let _ = reply.send(self.core.status(SystemTime::now()));
                }
                _ = terminate.recv() => break,
                _ = interrupt.recv() => break,
            }
        }
        info!(node = %self.settings.node_name, "stopping; kernel routes stay for the next start (graceful restart)");
        let _ = std::fs::remove_file(&self.settings.socket);
        Ok(())
    }

    async fn feed(&mut self, inputs: Vec<Input>) {
        let effects = self.core.handle_all(inputs);
        self.execute(effects).await;
    }

    /// Carries out `effects` in order. An effect's result goes to the core at once, but
    /// the effects it causes join the end of the queue: a full reconcile caused by a
    /// result is applied after every route op that was computed before it.
    async fn execute(&mut self, effects: Vec<Effect>) {
        let mut queue: VecDeque<Effect> = effects.into();
        while let Some(effect) = queue.pop_front() {
            if let Some(result) = self.carry_out(effect).await {
                queue.extend(self.core.handle(Input::Kernel(result)));
            }
        }
    }

    async fn carry_out(&mut self, effect: Effect) -> Option<KernelResult> {
        match effect {
            Effect::StartSession(config) => {
                let address = config.address;
                let handle = bgp::spawn_peer(config, self.events_tx.clone());
                self.accepted.insert(handle.clone());
                self.sessions.insert(address, handle);
                None
            }
            Effect::Session { peer, command } => {
                if let Some(handle) = self.sessions.get(&peer) {
                    send(handle, command).await;
                }
                None
            }
            Effect::StopSession { peer } => {
                self.accepted.remove(peer);
                if let Some(handle) = self.sessions.remove(&peer) {
                    send(&handle, PeerCommand::Stop).await;
                }
                None
            }
            Effect::EnsureDevice(spec) => {
                Some(KernelResult::DeviceEnsured(self.vxlan.ensure(&spec).await))
            }
            Effect::RemoveDevice => Some(KernelResult::DeviceRemoved(self.vxlan.remove().await)),
            Effect::ReadConnected { device } => {
                Some(KernelResult::Connected(self.vxlan.connected(device).await))
            }
            Effect::Vteps {
                device,
                entries,
                keep_stale,
            } => self.sync_vteps(device, &entries, keep_stale).await,
            Effect::Routes { clear_first, ops } => Some(self.apply_routes(clear_first, ops).await),
            Effect::ReplaceAll { desired } => Some(self.replace_all(desired).await),
            Effect::Reconcile { desired } => Some(self.reconcile(&desired).await),
            Effect::SetTimer { timer, after } => {
                self.timers.set(timer, Instant::now() + after);
                None
            }
            Effect::CancelTimer(timer) => {
                self.timers.cancel(timer);
                None
            }
        }
    }

    async fn apply_routes(&self, clear: Vec<RouteOp>, ops: Vec<RouteOp>) -> KernelResult {
        let node = &self.settings.node_name;
        let started = std::time::Instant::now();
        self.remove_first(clear).await;
        let count = ops.len();
        let result = self.kernel.apply(ops).await;
        let elapsed = started.elapsed();
        match &result {
            Ok(()) => {
                info!(%node, routes = count, millis = elapsed.as_millis() as u64, "kernel routes updated")
            }
            Err(e) => warn!(%node, error = %e,
                "some kernel routes could not be programmed; the next reconcile retries"),
        }
        applied(KernelWork::Routes, elapsed, result.is_err())
    }

    async fn reconcile(&self, desired: &HashMap<IpNetwork, NextHop>) -> KernelResult {
        let node = &self.settings.node_name;
        let started = std::time::Instant::now();
        self.clear_before_onlink(desired).await;
        let result = self.kernel.reconcile(desired).await;
        match &result {
            Ok(report) if report.removed + report.installed > 0 => {
                info!(%node, removed = report.removed, installed = report.installed,
                    kept = report.kept, "kernel reconciled");
            }
            Ok(_) => {}
            Err(e) => warn!(%node, error = %e, "kernel reconcile failed; retrying later"),
        }
        applied(KernelWork::Reconcile, started.elapsed(), result.is_err())
    }

    /// Every route replaced, none removed (the restart window's re-choice).
    async fn replace_all(&self, desired: HashMap<IpNetwork, NextHop>) -> KernelResult {
        let started = std::time::Instant::now();
        self.clear_before_onlink(&desired).await;
        let ops = desired
            .into_iter()
            .map(|(prefix, next_hop)| RouteOp::Replace { prefix, next_hop });
        let result = self.kernel.apply(ops).await;
        if let Err(e) = &result {
            warn!(node = %self.settings.node_name, error = %e,
                "some routes could not be re-chosen; the next reconcile retries");
        }
        applied(KernelWork::Reconcile, started.elapsed(), result.is_err())
    }

    /// Removes Fjord's IPv6 routes that `desired` turns onlink and the kernel holds
    /// otherwise ([`routes::clear_before_onlink`]).
    async fn clear_before_onlink(&self, desired: &HashMap<IpNetwork, NextHop>) {
        let current = match self.kernel.fjord_routes().await {
            Ok(routes) => routes,
            Err(e) => {
                warn!(node = %self.settings.node_name, error = %e, "cannot read the routes to re-choose");
                return;
            }
        };
        let current = current.into_iter().map(|r| (r.prefix, r.next_hop));
        self.remove_first(routes::clear_before_onlink(current, desired))
            .await;
    }

    async fn remove_first(&self, clear: Vec<RouteOp>) {
        if clear.is_empty() {
            return;
        }
        let node = &self.settings.node_name;
        let count = clear.len();
        match self.kernel.apply(clear).await {
            Ok(()) => debug!(%node, routes = count, "removed IPv6 routes that turn onlink"),
            Err(e) => warn!(%node, error = %e, "cannot remove IPv6 routes that turn onlink"),
        }
    }

    /// Makes the device's FDB and neighbour entries `desired`; nothing to count when
    /// they already are.
    async fn sync_vteps(
        &self,
        device: u32,
        desired: &VtepEntries,
        keep_stale: bool,
    ) -> Option<KernelResult> {
        let node = &self.settings.node_name;
        let started = std::time::Instant::now();
        let current = match self.vxlan.entries(device).await {
            Ok(current) => current,
            Err(e) => {
                warn!(%node, error = %e, "cannot read fjord.vxlan's entries; the next reconcile retries");
                return Some(applied(KernelWork::Vteps, started.elapsed(), true));
            }
        };
        let plan = encap::plan_vteps(&current, desired, keep_stale);
        if plan.is_empty() {
            return None;
        }
        let result = self.vxlan.apply(device, &plan).await;
        match &result {
            Ok(()) => info!(%node,
                fdb_added = plan.add_fdb.len(), fdb_removed = plan.remove_fdb.len(),
                neighbours_added = plan.add_neighbours.len(),
                neighbours_removed = plan.remove_neighbours.len(), "fjord.vxlan entries updated"),
            Err(e) => warn!(%node, error = %e,
                "some fjord.vxlan entries could not be programmed; the next reconcile retries"),
        }
        Some(applied(
            KernelWork::Vteps,
            started.elapsed(),
            result.is_err(),
        ))
    }
}

fn applied(work: KernelWork, elapsed: std::time::Duration, failed: bool) -> KernelResult {
    KernelResult::Applied {
        work,
        elapsed,
        failed,
    }
}

/// `first` and whatever else is queued, up to about [`MAX_BATCH`] routes.
fn gather(first: PeerEvent, events: &mut mpsc::Receiver<PeerEvent>) -> Vec<Input> {
    let routes = |e: &PeerEvent| match e {
        PeerEvent::Update {
            announced,
            withdrawn,
            ..
        } => (announced.len() + withdrawn.len()).max(1),
        _ => 1,
    };
    let mut count = routes(&first);
    let mut batch = vec![Input::Peer(first)];
    while count < MAX_BATCH {
        let Ok(more) = events.try_recv() else { break };
        count += routes(&more);
        batch.push(Input::Peer(more));
    }
    batch
}

/// The core's timers by deadline.
#[derive(Default)]
struct Timers {
    deadlines: BTreeMap<Timer, Instant>,
}

impl Timers {
    fn set(&mut self, timer: Timer, at: Instant) {
        self.deadlines.insert(timer, at);
    }

    fn cancel(&mut self, timer: Timer) {
        self.deadlines.remove(&timer);
    }

    fn next(&self) -> Option<Instant> {
        self.deadlines.values().min().copied()
    }

    /// Removes and returns the timers due at `now`.
    fn expired(&mut self, now: Instant) -> Vec<Timer> {
        let due: Vec<Timer> = self
            .deadlines
            .iter()
            .filter(|(_, &at)| at <= now)
            .map(|(&t, _)| t)
            .collect();
        for t in &due {
            self.deadlines.remove(t);
        }
        due
    }
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

/// Commands go to a session task that may just have ended (its Down event is queued);
/// that is not an error for the caller, the cluster view restarts it if needed.
async fn send(handle: &PeerHandle, command: PeerCommand) {
    if let Err(e) = handle.send(command).await {
        debug!(peer = %handle.address, error = %e, "session task gone; command dropped");
    }
}

/// The status socket's server; each request is answered by the event loop.
fn spawn_status_server(settings: &Settings, queries: mpsc::Sender<StatusQuery>) {
    let path = settings.socket.clone();
    tokio::spawn(async move {
        let report = move || {
            let queries = queries.clone();
            async move {
                let (reply, answer) = oneshot::channel();
                queries.send(reply).await.ok()?;
                answer.await.ok()
            }
        };
        if let Err(source) = status::serve(&path, report).await {
            let e = RoutedError::StatusSocket { path, source };
            warn!(error = %e, "status socket stopped");
        }
    });
}

/// Pods get the underlay's MTU, less the VXLAN headers when any route may be
/// encapsulated (docs/encapsulation.md). Returns the underlay's index and MTU.
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

/// The encapsulation state at start: the device's index and the connected subnets. In
/// `never` a `fjord.vxlan` left by an earlier run in another mode goes now, with every
/// route, FDB and neighbour entry on it.
async fn start_encap(
    settings: &Settings,
    vxlan: &Vxlan,
) -> Result<(Option<u32>, Vec<IpNetwork>), RoutedError> {
    let device = if settings.encapsulation == Encapsulation::Never {
        if vxlan.remove().await? {
            info!(node = %settings.node_name, "encapsulation never: removed the fjord.vxlan device of an earlier run");
        }
        None
    } else {
        vxlan.index().await?
    };
    let connected = vxlan.connected(device).await?;
    let subnets: Vec<String> = connected.iter().map(ToString::to_string).collect();
    info!(node = %settings.node_name, mode = %settings.encapsulation,
        connected = %subnets.join(", "), "encapsulation");
    Ok((device, connected))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timers_fire_once_each_and_a_set_moves_the_deadline() {
        let mut timers = Timers::default();
        let t0 = Instant::now();
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        timers.set(Timer::StaleRoutes(peer), t0 + Duration::from_secs(30));
        timers.set(Timer::Reconcile, t0 + Duration::from_secs(60));
        timers.set(Timer::StaleRoutes(peer), t0 + Duration::from_secs(40));
        assert_eq!(timers.next(), Some(t0 + Duration::from_secs(40)));
        assert!(timers.expired(t0 + Duration::from_secs(35)).is_empty());
        assert_eq!(
            timers.expired(t0 + Duration::from_secs(60)),
            vec![Timer::Reconcile, Timer::StaleRoutes(peer)]
        );
        assert_eq!(timers.next(), None);
        timers.set(Timer::DeviceCheck, t0);
        timers.cancel(Timer::DeviceCheck);
        assert_eq!(timers.next(), None);
    }
}
