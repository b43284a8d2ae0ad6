//! One tokio task per peer: it owns the peer's FSM(s), connections, timers and
//! Adj-RIB-Out, carries out what the FSM asks, and reports to the daemon as
//! [`PeerEvent`]s. Each connection has a reader task (framing only) and a writer task
//! (bytes queued without bound, so the session never blocks on a slow peer and two
//! speakers flooding each other cannot deadlock); the session encodes, because how an
//! UPDATE is encoded depends on what the OPENs negotiated.
//!
//! Two connections exist only during a collision (RFC 4271 6.8): the second gets its
//! own FSM until one of them has the peer's BGP Identifier, then the loser is closed
//! with Cease / Connection Collision Resolution.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::StreamExt;
use ipnetwork::IpNetwork;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::codec::FramedRead;
use tracing::{debug, info, warn};

use super::adj_rib_out::{self, AdjRibOut};
use super::error::{BgpError, Cease, MessageError};
use super::fsm::{
    collision_survivor, Action, Direction, Event, Fsm, FsmConfig, Negotiated, SessionState, Timer,
};
use super::wire::{
    self, Afi, Codec, Frame, GracefulRestartCap, Message, Route, RouteRefresh, SessionContext,
    Update,
};

/// A write that makes no progress for this long means the peer is gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
const FRAME_QUEUE: usize = 256;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerConfig {
    pub address: IpAddr,
    pub port: u16,
    pub local_asn: u32,
    pub remote_asn: u32,
    pub router_id: Ipv4Addr,
    pub local_address: Option<IpAddr>,
    /// Proposed hold time in seconds (default 30).
    pub hold_time: u16,
    /// Default 5 s.
    pub connect_retry: Duration,
    /// Advertise graceful restart with this restart time; we advertise that forwarding
    /// state is preserved (the kernel keeps our routes while we restart).
    pub graceful_restart_time: Option<u16>,
    pub passive: bool,
}

impl PeerConfig {
    /// A peer with the defaults: port 179, hold time 30 s, connect retry 5 s, no
    /// graceful restart, active.
    pub fn new(address: IpAddr, local_asn: u32, remote_asn: u32, router_id: Ipv4Addr) -> Self {
        PeerConfig {
            address,
            port: wire::BGP_PORT,
            local_asn,
            remote_asn,
            router_id,
            local_address: None,
            hold_time: 30,
            connect_retry: Duration::from_secs(5),
            graceful_restart_time: None,
            passive: false,
        }
    }

    pub fn fsm_config(&self) -> FsmConfig {
        FsmConfig {
            local_asn: self.local_asn,
            remote_asn: self.remote_asn,
            router_id: self.router_id,
            hold_time: self.hold_time,
            connect_retry: self.connect_retry,
            passive: self.passive,
            graceful_restart_time: self.graceful_restart_time,
        }
    }
}

/// What a session tells the daemon. Every event names the peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerEvent {
    StateChanged {
        peer: IpAddr,
        state: SessionState,
        at: SystemTime,
    },
    Established {
        peer: IpAddr,
        peer_router_id: Ipv4Addr,
        peer_graceful_restart: Option<GracefulRestartCap>,
        families: Vec<Afi>,
    },
    Update {
        peer: IpAddr,
        announced: Vec<Route>,
        withdrawn: Vec<IpNetwork>,
    },
    EndOfRib {
        peer: IpAddr,
        afi: Afi,
    },
    Down {
        peer: IpAddr,
        reason: String,
        /// The peer negotiated graceful restart and the TCP session dropped without a
        /// NOTIFICATION or hold-timer expiry: keep its routes as stale for its restart
        /// time (RFC 4724 helper).
        graceful: bool,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerCommand {
    Announce(Vec<Route>),
    Withdraw(Vec<IpNetwork>),
    /// Ask the peer to send its routes again (RFC 2918).
    RouteRefresh,
    Stop,
}

/// The daemon's end of a peer's session task. Dropping every clone stops the session.
#[derive(Clone, Debug)]
pub struct PeerHandle {
    pub address: IpAddr,
    tx: mpsc::Sender<PeerCommand>,
    incoming: mpsc::Sender<TcpStream>,
}

impl PeerHandle {
    pub async fn send(&self, cmd: PeerCommand) -> Result<(), BgpError> {
        self.tx
            .send(cmd)
            .await
            .map_err(|_| BgpError::PeerGone(self.address))
    }

    /// Hands over a connection the peer opened to us (from the [`super::Listener`]).
    pub async fn accept(&self, stream: TcpStream) -> Result<(), BgpError> {
        self.incoming
            .send(stream)
            .await
            .map_err(|_| BgpError::PeerGone(self.address))
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// Starts the session task for `cfg` (inside a tokio runtime).
pub fn spawn_peer(cfg: PeerConfig, events: mpsc::Sender<PeerEvent>) -> PeerHandle {
    let (tx, commands) = mpsc::channel(64);
    let (incoming_tx, incoming) = mpsc::channel(4);
    let (internal_tx, internal) = mpsc::channel(FRAME_QUEUE);
    let handle = PeerHandle {
        address: cfg.address,
        tx,
        incoming: incoming_tx,
    };
    let peer = Peer {
        fsm_cfg: cfg.fsm_config(),
        primary: Slot::new(Fsm::new(cfg.fsm_config())),
        cfg,
        events,
        rib_out: AdjRibOut::new(),
        secondary: None,
        internal_tx,
        next_id: 0,
        connecting: None,
        reported: SessionState::Idle,
    };
    tokio::spawn(peer.run(commands, incoming, internal));
    handle
}

/// What the connection tasks report to the session task.
enum Internal {
    Frame(u64, Frame),
    Failed(u64, BgpError),
    Closed(u64),
    Connected(u64, std::io::Result<TcpStream>),
}

struct Conn {
    id: u64,
    direction: Direction,
    writer: mpsc::UnboundedSender<Bytes>,
    reader: JoinHandle<()>,
}

impl Drop for Conn {
    /// The writer task drains what is queued (a final NOTIFICATION) and closes.
    fn drop(&mut self) {
        self.reader.abort();
    }
}

#[derive(Default)]
struct Timers {
    connect_retry: Option<Instant>,
    hold: Option<Instant>,
    keepalive: Option<Instant>,
}

impl Timers {
    fn slot(&mut self, t: Timer) -> &mut Option<Instant> {
        match t {
            Timer::ConnectRetry => &mut self.connect_retry,
            Timer::Hold => &mut self.hold,
            Timer::Keepalive => &mut self.keepalive,
        }
    }

    fn next(&self) -> Option<Instant> {
        [self.connect_retry, self.hold, self.keepalive]
            .into_iter()
            .flatten()
            .min()
    }

    /// Clears and returns the timers that are due.
    fn expired(&mut self, now: Instant) -> Vec<Timer> {
        let mut due = Vec::new();
        for t in [Timer::Hold, Timer::Keepalive, Timer::ConnectRetry] {
            let s = self.slot(t);
            if s.is_some_and(|d| d <= now) {
                *s = None;
                due.push(t);
            }
        }
        due
    }
}

struct Slot {
    fsm: Fsm,
    conn: Option<Conn>,
    timers: Timers,
}

impl Slot {
    fn new(fsm: Fsm) -> Slot {
        Slot {
            fsm,
            conn: None,
            timers: Timers::default(),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    Primary,
    Secondary,
}

struct Peer {
    cfg: PeerConfig,
    fsm_cfg: FsmConfig,
    events: mpsc::Sender<PeerEvent>,
    rib_out: AdjRibOut,
    primary: Slot,
    secondary: Option<Slot>,
    internal_tx: mpsc::Sender<Internal>,
    next_id: u64,
    connecting: Option<(u64, JoinHandle<()>)>,
    reported: SessionState,
}

impl Peer {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<PeerCommand>,
        mut incoming: mpsc::Receiver<TcpStream>,
        mut internal: mpsc::Receiver<Internal>,
    ) {
        info!(peer = %self.cfg.address, port = self.cfg.port, "session starting");
        self.feed(Which::Primary, Event::ManualStart).await;
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(PeerCommand::Stop) | None => break,
                    Some(cmd) => self.command(cmd).await,
                },
                Some(stream) = incoming.recv() => self.incoming(stream).await,
                Some(msg) = internal.recv() => self.internal(msg).await,
                () = tokio::time::sleep_until(deadline) => self.timers_expired().await,
            }
        }
        self.stop().await;
    }

    async fn stop(&mut self) {
        if self.secondary.is_some() {
            self.feed(Which::Secondary, Event::ManualStop).await;
            self.secondary = None;
        }
        self.feed(Which::Primary, Event::ManualStop).await;
        if let Some((_, task)) = self.connecting.take() {
            task.abort();
        }
        info!(peer = %self.cfg.address, "session stopped");
    }

    fn next_deadline(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(86_400);
        let secondary = self.secondary.as_ref().and_then(|s| s.timers.next());
        [self.primary.timers.next(), secondary]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(far)
    }

    fn slot(&mut self, which: Which) -> Option<&mut Slot> {
        match which {
            Which::Primary => Some(&mut self.primary),
            Which::Secondary => self.secondary.as_mut(),
        }
    }

    fn which_conn(&self, id: u64) -> Option<Which> {
        let is = |s: &Slot| s.conn.as_ref().is_some_and(|c| c.id == id);
        if is(&self.primary) {
            Some(Which::Primary)
        } else if self.secondary.as_ref().is_some_and(is) {
            Some(Which::Secondary)
        } else {
            None
        }
    }

    /// Feeds one event to one FSM and carries out what it asks.
    async fn feed(&mut self, which: Which, event: Event) {
        let Some(slot) = self.slot(which) else { return };
        let actions = slot.fsm.handle(event);
        for action in actions {
            self.act(which, action).await;
        }
        self.resolve_collision().await;
        self.report_state().await;
    }

    async fn act(&mut self, which: Which, action: Action) {
        let address = self.cfg.address;
        match action {
            Action::Connect => self.connect(),
            Action::Send(msg) => self.send(which, &msg),
            Action::StartTimer(t, d) => {
                if let Some(s) = self.slot(which) {
                    *s.timers.slot(t) = Some(Instant::now() + d);
                }
            }
            Action::StopTimer(t) => {
                if let Some(s) = self.slot(which) {
                    *s.timers.slot(t) = None;
                }
            }
            Action::DropConnection => {
                if let Some(s) = self.slot(which) {
                    s.conn = None;
                }
                if which == Which::Primary {
                    if let Some((_, task)) = self.connecting.take() {
                        task.abort();
                    }
                }
            }
            Action::SessionUp(n) => self.session_up(n).await,
            Action::SessionDown { reason, graceful } => {
                warn!(peer = %address, %reason, graceful, "session down");
                self.emit(PeerEvent::Down {
                    peer: address,
                    reason,
                    graceful,
                })
                .await;
            }
            Action::UpdateReceived(u) => self.update_received(u).await,
            Action::RouteRefreshRequested(afi) => {
                debug!(peer = %address, ?afi, "route refresh requested");
                self.send_routes(afi);
            }
        }
    }

    async fn emit(&self, event: PeerEvent) {
        // The daemon going away ends everything anyway; nothing to do on error.
        let _ = self.events.send(event).await;
    }

    async fn report_state(&mut self) {
        let state = self.primary.fsm.state();
        if state != self.reported {
            self.reported = state;
            debug!(peer = %self.cfg.address, %state, "state changed");
            self.emit(PeerEvent::StateChanged {
                peer: self.cfg.address,
                state,
                at: SystemTime::now(),
            })
            .await;
        }
    }

    fn context(&self, which: Which) -> SessionContext {
        let slot = match which {
            Which::Primary => Some(&self.primary),
            Which::Secondary => self.secondary.as_ref(),
        };
        slot.and_then(|s| s.fsm.negotiated())
            .map(Negotiated::context)
            .unwrap_or(SessionContext {
                four_octet_as: true,
                ibgp: self.fsm_cfg.ibgp(),
            })
    }

    fn send(&mut self, which: Which, msg: &Message) {
        let ctx = self.context(which);
        let address = self.cfg.address;
        let Some(conn) = self.slot(which).and_then(|s| s.conn.as_ref()) else {
            return;
        };
        match wire::encode(msg, ctx) {
            Ok(bytes) => {
                // A closed writer shows up as a closed connection on the reader side.
                let _ = conn.writer.send(bytes);
            }
            Err(e) => warn!(peer = %address, kind = msg.kind(), error = %e, "not sent"),
        }
    }

    fn connect(&mut self) {
        if let Some((_, task)) = self.connecting.take() {
            task.abort();
        }
        self.next_id += 1;
        let id = self.next_id;
        let tx = self.internal_tx.clone();
        let remote = SocketAddr::new(self.cfg.address, self.cfg.port);
        let local = self.cfg.local_address;
        let limit = self.cfg.connect_retry;
        debug!(peer = %self.cfg.address, %remote, "connecting");
        let task = tokio::spawn(async move {
            let result = match tokio::time::timeout(limit, connect(remote, local)).await {
                Ok(r) => r,
                Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
            };
            let _ = tx.send(Internal::Connected(id, result)).await;
        });
        self.connecting = Some((id, task));
    }

    /// Starts the reader and writer tasks of a new connection.
    fn attach(&mut self, stream: TcpStream, direction: Direction) -> Conn {
        self.next_id += 1;
        let id = self.next_id;
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let (writer, queue) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(write, queue, self.cfg.address));
        let tx = self.internal_tx.clone();
        let reader = tokio::spawn(async move {
            let mut frames = FramedRead::new(read, Codec);
            loop {
                let msg = match frames.next().await {
                    Some(Ok(f)) => Internal::Frame(id, f),
                    Some(Err(e)) => Internal::Failed(id, e),
                    None => Internal::Closed(id),
                };
                let last = !matches!(msg, Internal::Frame(..));
                if tx.send(msg).await.is_err() || last {
                    break;
                }
            }
        });
        Conn {
            id,
            direction,
            writer,
            reader,
        }
    }

    async fn internal(&mut self, msg: Internal) {
        match msg {
            Internal::Connected(id, result) => {
                if self.connecting.as_ref().is_some_and(|(c, _)| *c == id) {
                    self.connecting = None;
                    self.connected(result).await;
                }
            }
            Internal::Frame(id, frame) => {
                if let Some(which) = self.which_conn(id) {
                    self.frame(which, frame).await;
                }
            }
            Internal::Failed(id, e) => {
                if let Some(which) = self.which_conn(id) {
                    let event = match e {
                        BgpError::Message(m) => Event::Malformed(m),
                        other => {
                            debug!(peer = %self.cfg.address, error = %other, "read failed");
                            Event::TcpFailed
                        }
                    };
                    self.feed(which, event).await;
                }
            }
            Internal::Closed(id) => {
                if let Some(which) = self.which_conn(id) {
                    debug!(peer = %self.cfg.address, "connection closed by peer");
                    self.feed(which, Event::TcpFailed).await;
                }
            }
        }
    }

    async fn connected(&mut self, result: std::io::Result<TcpStream>) {
        let address = self.cfg.address;
        match result {
            Err(e) => {
                debug!(peer = %address, error = %e, "connect failed");
                if self.primary.conn.is_none() {
                    self.feed(Which::Primary, Event::TcpFailed).await;
                }
            }
            Ok(stream) => self.new_connection(stream, Direction::Outgoing).await,
        }
    }

    async fn incoming(&mut self, stream: TcpStream) {
        debug!(peer = %self.cfg.address, "incoming connection");
        self.new_connection(stream, Direction::Incoming).await;
    }

    /// A connection in either direction: it becomes the primary's when that has none,
    /// and otherwise a second slot: a collision candidate while the primary is opening,
    /// or, when the Established peer negotiated graceful restart, the peer coming back
    /// after a restart (RFC 4724 4.2, decided once its OPEN arrives). Anything else is
    /// refused.
    async fn new_connection(&mut self, stream: TcpStream, direction: Direction) {
        let state = self.primary.fsm.state();
        let established = state == SessionState::Established;
        let gr = self
            .primary
            .fsm
            .negotiated()
            .is_some_and(|n| n.graceful_restart);
        if self.primary.conn.is_none() && !established {
            let conn = self.attach(stream, direction);
            self.primary.conn = Some(conn);
            self.feed(Which::Primary, Event::TcpConnected).await;
        } else if self.secondary.is_none()
            && (!established || (gr && direction == Direction::Incoming))
        {
            let conn = self.attach(stream, direction);
            let mut slot = Slot::new(Fsm::for_incoming(self.fsm_cfg.clone()));
            slot.conn = Some(conn);
            self.secondary = Some(slot);
            self.feed(Which::Secondary, Event::TcpConnected).await;
        } else {
            info!(peer = %self.cfg.address, ?direction, %state, "extra connection refused");
            tokio::spawn(refuse(stream, Cease::ConnectionCollisionResolution));
        }
    }

    /// RFC 4271 6.8, once the peer's BGP Identifier is known on either connection.
    async fn resolve_collision(&mut self) {
        let Some(sec) = &self.secondary else { return };
        if sec.conn.is_none() {
            self.secondary = None;
            return;
        }
        let primary_state = self.primary.fsm.state();
        if primary_state == SessionState::Established {
            if sec.fsm.negotiated().is_some() {
                self.peer_restarted().await;
            }
            return;
        }
        if self.primary.conn.is_none() {
            self.promote();
            return;
        }
        let remote = self
            .primary
            .fsm
            .negotiated()
            .or(sec.fsm.negotiated())
            .map(|n| n.peer_router_id);
        let Some(remote_id) = remote else { return };
        let survivor = collision_survivor(self.cfg.router_id, remote_id);
        let dir = |s: &Slot| s.conn.as_ref().map(|c| c.direction);
        let primary_loses = dir(&self.primary) != Some(survivor) && dir(sec) == Some(survivor);
        info!(peer = %self.cfg.address, %remote_id, ?survivor, "connection collision resolved");
        let loser = if primary_loses {
            Which::Primary
        } else {
            Which::Secondary
        };
        if let Some(slot) = self.slot(loser) {
            for action in slot.fsm.handle(Event::CollisionLost) {
                if matches!(action, Action::Send(_) | Action::DropConnection) {
                    self.act(loser, action).await;
                }
            }
        }
        if primary_loses {
            self.promote();
        } else {
            self.secondary = None;
        }
    }

    /// The Established peer sent an OPEN on a new connection: it restarted. The old
    /// session ends as if its TCP connection dropped (graceful when negotiated).
    async fn peer_restarted(&mut self) {
        info!(peer = %self.cfg.address, "peer reconnected: treating the old session as restarted");
        for action in self.primary.fsm.handle(Event::TcpFailed) {
            self.act(Which::Primary, action).await;
        }
        self.promote();
    }

    fn promote(&mut self) {
        if let Some(sec) = self.secondary.take() {
            self.primary = sec;
        }
    }

    async fn frame(&mut self, which: Which, frame: Frame) {
        let address = self.cfg.address;
        let event = match frame.decode(self.context(which)) {
            Ok(decoded) => {
                if let Some(r) = &decoded.revised {
                    warn!(peer = %address, action = %r.action, error = %r.error, "malformed UPDATE handled per RFC 7606");
                }
                Event::Received(decoded.message)
            }
            Err(e) => {
                warn!(peer = %address, error = %e, "malformed message");
                Event::Malformed(e)
            }
        };
        self.feed(which, event).await;
    }

    async fn timers_expired(&mut self) {
        let now = Instant::now();
        for which in [Which::Primary, Which::Secondary] {
            let due = match self.slot(which) {
                Some(s) => s.timers.expired(now),
                None => continue,
            };
            for t in due {
                let event = match t {
                    Timer::ConnectRetry => Event::ConnectRetryTimerExpired,
                    Timer::Hold => Event::HoldTimerExpired,
                    Timer::Keepalive => Event::KeepaliveTimerExpired,
                };
                self.feed(which, event).await;
            }
        }
    }

    async fn session_up(&mut self, n: Negotiated) {
        info!(peer = %self.cfg.address, router_id = %n.peer_router_id, hold = n.hold_time, families = ?n.families, "session established");
        self.emit(PeerEvent::Established {
            peer: self.cfg.address,
            peer_router_id: n.peer_router_id,
            peer_graceful_restart: n.peer_graceful_restart.clone(),
            families: n.families.clone(),
        })
        .await;
        // RFC 4724 2: everything we have, then End-of-RIB per family.
        for &afi in &n.families {
            self.send_routes(afi);
            self.send(Which::Primary, &Message::Update(Update::end_of_rib(afi)));
        }
    }

    /// Sends the Adj-RIB-Out of one family (after Established or a ROUTE-REFRESH).
    fn send_routes(&mut self, afi: Afi) {
        let ctx = self.context(Which::Primary);
        let updates = adj_rib_out::pack_announcements(self.rib_out.routes(afi), ctx);
        for u in updates {
            self.send(Which::Primary, &Message::Update(u));
        }
    }

    async fn update_received(&mut self, u: Update) {
        let peer = self.cfg.address;
        if !u.announced.is_empty() || !u.withdrawn.is_empty() {
            self.emit(PeerEvent::Update {
                peer,
                announced: u.announced,
                withdrawn: u.withdrawn,
            })
            .await;
        }
        if let Some(afi) = u.end_of_rib {
            debug!(peer = %peer, ?afi, "End-of-RIB received");
            self.emit(PeerEvent::EndOfRib { peer, afi }).await;
        }
    }

    fn established(&self) -> Option<&Negotiated> {
        match self.primary.fsm.state() {
            SessionState::Established => self.primary.fsm.negotiated(),
            _ => None,
        }
    }

    async fn command(&mut self, cmd: PeerCommand) {
        match cmd {
            PeerCommand::Announce(routes) => self.announce(routes),
            PeerCommand::Withdraw(prefixes) => self.withdraw(prefixes),
            PeerCommand::RouteRefresh => self.request_refresh(),
            PeerCommand::Stop => {}
        }
    }

    fn announce(&mut self, routes: Vec<Route>) {
        let address = self.cfg.address;
        let mut changed = Vec::new();
        for route in routes {
            if route.prefix.is_ipv4() != route.next_hop.is_ipv4() {
                warn!(peer = %address, prefix = %route.prefix, next_hop = %route.next_hop, "next hop of another family; not announced");
                continue;
            }
            let route = self.export(route);
            if self.rib_out.announce(route.clone()) {
                changed.push(route);
            }
        }
        let Some(n) = self.established() else { return };
        let (ctx, families) = (n.context(), n.families.clone());
        changed.retain(|r| families.contains(&Afi::of(&r.prefix)));
        for u in adj_rib_out::pack_announcements(&changed, ctx) {
            self.send(Which::Primary, &Message::Update(u));
        }
    }

    /// Export policy: iBGP carries LOCAL_PREF (RFC 4271 5.1.5); eBGP gets our AS
    /// prepended and no LOCAL_PREF.
    fn export(&self, mut route: Route) -> Route {
        route.prefix = adj_rib_out::canonical(route.prefix);
        if self.fsm_cfg.ibgp() {
            route.local_pref = route.local_pref.or(Some(wire::DEFAULT_LOCAL_PREF));
        } else {
            route.as_path.insert(0, self.cfg.local_asn);
            route.local_pref = None;
        }
        route
    }

    fn withdraw(&mut self, prefixes: Vec<IpNetwork>) {
        let gone: Vec<IpNetwork> = prefixes
            .into_iter()
            .filter(|p| self.rib_out.withdraw(*p))
            .collect();
        if self.established().is_none() {
            return;
        }
        for u in adj_rib_out::pack_withdrawals(gone) {
            self.send(Which::Primary, &Message::Update(u));
        }
    }

    fn request_refresh(&mut self) {
        let Some(n) = self.established() else {
            debug!(peer = %self.cfg.address, "route refresh asked while not established");
            return;
        };
        if !n.route_refresh {
            warn!(peer = %self.cfg.address, "peer does not support route refresh");
            return;
        }
        for afi in n.families.clone() {
            self.send(
                Which::Primary,
                &Message::RouteRefresh(RouteRefresh::new(afi)),
            );
        }
    }
}

async fn connect(remote: SocketAddr, local: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let socket = match remote {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(ip) = local {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    socket.connect(remote).await
}

/// Writes queued messages, coalescing whatever is queued into one flush.
async fn write_loop(half: OwnedWriteHalf, mut queue: mpsc::UnboundedReceiver<Bytes>, peer: IpAddr) {
    let mut w = BufWriter::with_capacity(64 * 1024, half);
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = queue.try_recv() {
            batch.push(more);
        }
        let write = async {
            for b in &batch {
                w.write_all(b).await?;
            }
            w.flush().await
        };
        match tokio::time::timeout(WRITE_TIMEOUT, write).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                debug!(peer = %peer, error = %e, "write failed");
                return;
            }
            Err(_) => {
                warn!(peer = %peer, "write stalled; closing the connection");
                return;
            }
        }
    }
    let _ = w.shutdown().await;
}

/// Sends one NOTIFICATION on a connection that will not become a session, and closes.
pub(crate) async fn refuse(mut stream: TcpStream, cease: Cease) {
    let n = MessageError::from(cease).notification();
    if let Ok(bytes) = wire::encode(&Message::Notification(n), SessionContext::default()) {
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(&bytes)).await;
    }
    let _ = stream.shutdown().await;
}
