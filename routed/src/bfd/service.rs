//! The BFD shell: one tokio task for every session of the node. It owns the two
//! receiving sockets, one sending socket per session and one deadline heap for all
//! session timers, feeds each session's [`fsm::Session`](super::fsm::Session) and carries
//! out what it returns. The daemon talks to it through a [`BfdHandle`] and learns of
//! state changes through a [`BfdWatch`] per peer.
//!
//! Cost, because the daemon is measured against BIRD for memory and wakeups: no task or
//! thread per session, one heap entry per armed timer, and a wakeup only for a packet or
//! a deadline (at 300 ms about 3.7 transmissions and 3.7 receptions a second a session).
//!
//! Demultiplexing is RFC 5880 6.8.6's: by Your Discriminator when it is set (and the
//! source must then be the session's peer), else by the source address. RFC 5881 5's
//! GTSM: anything that arrives with a TTL or hop limit other than 255 is dropped before
//! it is parsed.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::failure::BfdDown;
use super::fsm::{Action, Event, Session, SessionConfig, Snapshot, Timer, Timers, Transition};
use super::packet::{ControlPacket, Diagnostic, State};
use super::socket::{self, CONTROL_PORT, GTSM_TTL};
use super::BfdError;

/// Commands queued from the daemon; it awaits each, so a few are enough.
const COMMAND_QUEUE: usize = 16;
/// Longer than any Control packet (Length is one byte), so oversize shows as such.
const RECEIVE_BUFFER: usize = 256;

/// One BFD session the daemon asks for: single hop, from `local` to `peer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionSpec {
    pub peer: IpAddr,
    /// Our address on the link towards the peer (the BGP session's local address).
    pub local: IpAddr,
    pub timers: Timers,
}

/// A change of a session as the daemon sees it: Up, or left Up (with why).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BfdChange {
    Up,
    Down(BfdDown),
}

/// The latest state of one session, published to its watchers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchedState {
    pub state: State,
    /// Times the session reached Up, and times it left Up: a watcher that wakes late
    /// still sees that a Down happened in between.
    pub ups: u64,
    pub downs: u64,
    pub last_down: Option<BfdDown>,
}

/// The changes of one peer's session, without loss of a Down: see [`BfdWatch::next`].
#[derive(Debug)]
pub struct BfdWatch {
    receiver: watch::Receiver<WatchedState>,
    believed_up: bool,
    seen_downs: u64,
}

impl BfdWatch {
    fn new(receiver: watch::Receiver<WatchedState>) -> BfdWatch {
        let seen_downs = receiver.borrow().downs;
        BfdWatch {
            receiver,
            believed_up: false,
            seen_downs,
        }
    }

    pub fn current(&self) -> WatchedState {
        *self.receiver.borrow()
    }

    /// The next change: Up when the session is Up and the watcher has not said so yet,
    /// Down when it left Up since (also when it came back Up before this call: the
    /// Down comes first, then the Up). None once the session is removed.
    pub async fn next(&mut self) -> Option<BfdChange> {
        loop {
            let now = *self.receiver.borrow_and_update();
            if self.believed_up && now.downs > self.seen_downs {
                self.believed_up = false;
                self.seen_downs = now.downs;
                let down = now.last_down.unwrap_or(BfdDown {
                    diagnostic: Diagnostic::None,
                    remote_state: State::Down,
                });
                return Some(BfdChange::Down(down));
            }
            if !self.believed_up && now.state == State::Up {
                self.believed_up = true;
                self.seen_downs = now.downs;
                return Some(BfdChange::Up);
            }
            if self.receiver.changed().await.is_err() {
                return None;
            }
        }
    }
}

/// A session as `status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PeerStatus {
    pub peer: IpAddr,
    pub local: IpAddr,
    pub state: State,
    pub remote_state: State,
    pub local_diagnostic: Diagnostic,
    pub remote_diagnostic: Diagnostic,
    pub local_discriminator: u32,
    pub remote_discriminator: u32,
    pub desired_min_tx_ms: u64,
    pub required_min_rx_ms: u64,
    pub detect_mult: u8,
    /// The negotiated transmit interval, before jitter.
    pub transmit_interval_ms: Option<u64>,
    pub detection_time_ms: Option<u64>,
    /// When the state last changed.
    pub since_unix: u64,
    /// Packets that could not be sent (link down, no route): the last error in words.
    pub send_error: Option<String>,
}

enum Command {
    Add(SessionSpec, oneshot::Sender<Result<BfdWatch, BfdError>>),
    Watch(IpAddr, oneshot::Sender<Option<BfdWatch>>),
    Remove(IpAddr, oneshot::Sender<()>),
    Status(oneshot::Sender<Vec<PeerStatus>>),
    Shutdown(oneshot::Sender<()>),
}

/// The daemon's side of the BFD task. Cheap to clone.
#[derive(Clone, Debug)]
pub struct BfdHandle {
    commands: mpsc::Sender<Command>,
}

impl BfdHandle {
    /// Binds UDP 3784 for both families (IPv6 is skipped where the namespace has none)
    /// and starts the task on the current tokio runtime (it must be called from inside
    /// one, like `tokio::spawn`), in the network namespace of the calling thread.
    pub fn spawn() -> Result<BfdHandle, BfdError> {
        let v4 = Some(into_tokio(socket::receiver(IpAddr::V4(
            Ipv4Addr::UNSPECIFIED,
        ))?)?);
        let v6 = match socket::receiver(IpAddr::V6(Ipv6Addr::UNSPECIFIED)) {
            Ok(s) => Some(into_tokio(s)?),
            Err(e) if e.is_family_unsupported() => {
                warn!(error = %e, "no IPv6 in this network namespace: BFD runs over IPv4 only");
                None
            }
            Err(e) => return Err(e),
        };
        let (commands, queue) = mpsc::channel(COMMAND_QUEUE);
        let service = Service {
            receivers: [v4, v6],
            queue,
            sessions: HashMap::new(),
            by_peer: HashMap::new(),
            deadlines: BinaryHeap::new(),
            rng: super::random_seed(),
        };
        tokio::spawn(service.run());
        Ok(BfdHandle { commands })
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, BfdError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(make(reply))
            .await
            .map_err(|_| BfdError::Stopped)?;
        answer.await.map_err(|_| BfdError::Stopped)
    }

    /// Starts a session to `spec.peer` (or returns a watch of the one that exists; new
    /// timers are applied to it through a Poll Sequence).
    pub async fn add(&self, spec: SessionSpec) -> Result<BfdWatch, BfdError> {
        spec.timers.validate().map_err(BfdError::InvalidTimers)?;
        if spec.peer.is_ipv4() != spec.local.is_ipv4() {
            return Err(BfdError::FamilyMismatch {
                peer: spec.peer,
                local: spec.local,
            });
        }
        self.ask(|reply| Command::Add(spec, reply)).await?
    }

    /// A watch of the session to `peer`, if there is one.
    pub async fn watch(&self, peer: IpAddr) -> Result<Option<BfdWatch>, BfdError> {
        self.ask(|reply| Command::Watch(peer, reply)).await
    }

    /// Ends the session to `peer`: AdminDown is sent first, so the peer does not read
    /// it as a failure (RFC 5880 6.8.16).
    pub async fn remove(&self, peer: IpAddr) -> Result<(), BfdError> {
        self.ask(|reply| Command::Remove(peer, reply)).await
    }

    pub async fn status(&self) -> Result<Vec<PeerStatus>, BfdError> {
        self.ask(Command::Status).await
    }

    /// Every session goes AdminDown (sent Detect Mult times at once, not waited out)
    /// and the task ends. The daemon calls this when it stops on purpose, so that its
    /// peers see an administrative down rather than a failure (docs/bfd.md).
    pub async fn shutdown(&self) -> Result<(), BfdError> {
        self.ask(Command::Shutdown).await
    }
}

fn into_tokio(socket: StdUdpSocket) -> Result<UdpSocket, BfdError> {
    UdpSocket::from_std(socket).map_err(BfdError::Runtime)
}

struct Entry {
    spec: SessionSpec,
    fsm: Session,
    sender: StdUdpSocket,
    /// The deadline in force per timer; heap entries that differ are stale.
    armed: [Option<Instant>; 2],
    watchers: watch::Sender<WatchedState>,
    since: SystemTime,
    send_error: Option<String>,
}

impl Entry {
    fn send(&mut self, packet: &ControlPacket) {
        let to = SocketAddr::new(self.spec.peer, CONTROL_PORT);
        match self.sender.send_to(&packet.encode(), to) {
            Ok(_) => {
                if self.send_error.take().is_some() {
                    info!(peer = %self.spec.peer, "BFD packets leave again");
                }
            }
            Err(e) => {
                if self.send_error.is_none() {
                    warn!(peer = %self.spec.peer, error = %e, "cannot send BFD packets");
                }
                self.send_error = Some(e.to_string());
            }
        }
    }

    fn status(&self) -> PeerStatus {
        let snap: Snapshot = self.fsm.snapshot();
        let ms = |d: Duration| d.as_millis() as u64;
        PeerStatus {
            peer: self.spec.peer,
            local: self.spec.local,
            state: snap.state,
            remote_state: snap.remote_state,
            local_diagnostic: snap.local_diagnostic,
            remote_diagnostic: snap.remote_diagnostic,
            local_discriminator: snap.local_discriminator,
            remote_discriminator: snap.remote_discriminator,
            desired_min_tx_ms: ms(self.spec.timers.desired_min_tx),
            required_min_rx_ms: ms(self.spec.timers.required_min_rx),
            detect_mult: self.spec.timers.detect_mult,
            transmit_interval_ms: snap.transmit_interval.map(ms),
            detection_time_ms: snap.detection_time.map(ms),
            since_unix: self
                .since
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            send_error: self.send_error.clone(),
        }
    }

    fn publish(&mut self, t: &Transition) {
        self.since = SystemTime::now();
        let down = BfdDown {
            diagnostic: t.diagnostic,
            remote_state: t.remote_state,
        };
        self.watchers.send_modify(|w| {
            w.state = t.to;
            if t.to == State::Up {
                w.ups += 1;
            } else if t.from == State::Up {
                w.downs += 1;
                w.last_down = Some(down);
            }
        });
    }
}

fn timer_index(timer: Timer) -> usize {
    match timer {
        Timer::Transmit => 0,
        Timer::Detection => 1,
    }
}

struct Service {
    receivers: [Option<UdpSocket>; 2],
    queue: mpsc::Receiver<Command>,
    /// By local discriminator.
    sessions: HashMap<u32, Entry>,
    by_peer: HashMap<IpAddr, u32>,
    deadlines: BinaryHeap<Reverse<(Instant, u32, Timer)>>,
    rng: u64,
}

/// Waits for a datagram on `socket` (forever when the family is absent).
async fn readable(socket: &Option<UdpSocket>, buf: &mut [u8]) -> std::io::Result<socket::Datagram> {
    match socket {
        Some(s) => {
            s.async_io(Interest::READABLE, || socket::receive(s, buf))
                .await
        }
        None => std::future::pending().await,
    }
}

impl Service {
    async fn run(mut self) {
        let mut buf4 = [0u8; RECEIVE_BUFFER];
        let mut buf6 = [0u8; RECEIVE_BUFFER];
        loop {
            let next = self.next_deadline();
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                command = self.queue.recv() => {
                    let Some(command) = command else {
                        // Every handle dropped: the daemon is going away.
                        self.shutdown();
                        return;
                    };
                    if let Err(done) = self.command(command) {
                        self.shutdown();
                        let _ = done.send(());
                        return;
                    }
                }
                got = readable(&self.receivers[0], &mut buf4) => self.datagram(got, &buf4),
                got = readable(&self.receivers[1], &mut buf6) => self.datagram(got, &buf6),
                () = sleep => self.fire_due(Instant::now()),
            }
        }
    }

    /// Carries out one command; a Shutdown comes back as `Err` with its reply, for
    /// `run` to stop after.
    fn command(&mut self, command: Command) -> Result<(), oneshot::Sender<()>> {
        match command {
            Command::Add(spec, reply) => {
                let _ = reply.send(self.add(spec));
            }
            Command::Watch(peer, reply) => {
                let watch = self
                    .by_peer
                    .get(&peer)
                    .and_then(|d| self.sessions.get(d))
                    .map(|e| BfdWatch::new(e.watchers.subscribe()));
                let _ = reply.send(watch);
            }
            Command::Remove(peer, reply) => {
                if let Some(discriminator) = self.by_peer.get(&peer).copied() {
                    self.admin_down(discriminator);
                    self.sessions.remove(&discriminator);
                    self.by_peer.remove(&peer);
                    info!(%peer, "BFD session removed");
                }
                let _ = reply.send(());
            }
            Command::Status(reply) => {
                let mut all: Vec<PeerStatus> = self.sessions.values().map(Entry::status).collect();
                all.sort_by_key(|s| s.peer);
                let _ = reply.send(all);
            }
            Command::Shutdown(done) => return Err(done),
        }
        Ok(())
    }

    fn add(&mut self, spec: SessionSpec) -> Result<BfdWatch, BfdError> {
        if let Some(&discriminator) = self.by_peer.get(&spec.peer) {
            let entry = self
                .sessions
                .get_mut(&discriminator)
                .ok_or(BfdError::Stopped)?;
            if entry.spec.local == spec.local {
                let watch = BfdWatch::new(entry.watchers.subscribe());
                if entry.spec.timers != spec.timers {
                    entry.spec.timers = spec.timers;
                    let actions = entry.fsm.handle(Event::SetTimers(spec.timers));
                    self.apply(discriminator, actions);
                }
                return Ok(watch);
            }
            self.admin_down(discriminator);
            self.sessions.remove(&discriminator);
        }
        let sender = socket::sender(spec.local, self.random())?;
        let discriminator = self.free_discriminator();
        let mut fsm = Session::new(SessionConfig {
            local_discriminator: discriminator,
            timers: spec.timers,
            jitter_seed: self.random(),
        });
        let (watchers, receiver) = watch::channel(WatchedState {
            state: State::Down,
            ups: 0,
            downs: 0,
            last_down: None,
        });
        let start = fsm.start();
        self.sessions.insert(
            discriminator,
            Entry {
                spec,
                fsm,
                sender,
                armed: [None, None],
                watchers,
                since: SystemTime::now(),
                send_error: None,
            },
        );
        self.by_peer.insert(spec.peer, discriminator);
        info!(peer = %spec.peer, local = %spec.local, discriminator, "BFD session started");
        self.apply(discriminator, start);
        Ok(BfdWatch::new(receiver))
    }

    /// Takes a session AdminDown and sends that Detect Mult times at once, for a peer
    /// that loses one packet; used when the session or the daemon goes away.
    fn admin_down(&mut self, discriminator: u32) {
        let Some(entry) = self.sessions.get_mut(&discriminator) else {
            return;
        };
        let actions = entry.fsm.handle(Event::AdminDown);
        self.apply(discriminator, actions);
        if let Some(entry) = self.sessions.get_mut(&discriminator) {
            let packet = entry.fsm.packet(false);
            for _ in 1..entry.spec.timers.detect_mult {
                entry.send(&packet);
            }
        }
    }

    fn shutdown(&mut self) {
        let all: Vec<u32> = self.sessions.keys().copied().collect();
        for discriminator in all {
            self.admin_down(discriminator);
        }
        info!(
            sessions = self.sessions.len(),
            "BFD stopped: AdminDown sent to every peer"
        );
        self.sessions.clear();
        self.by_peer.clear();
    }

    fn datagram(&mut self, got: std::io::Result<socket::Datagram>, buf: &[u8]) {
        let datagram = match got {
            Ok(d) => d,
            Err(e) => {
                debug!(error = %e, "BFD receive failed");
                return;
            }
        };
        let from = datagram.from.ip();
        if datagram.ttl != Some(GTSM_TTL) {
            debug!(%from, ttl = ?datagram.ttl, "BFD packet dropped: TTL is not 255 (RFC 5881 5)");
            return;
        }
        let packet = match ControlPacket::receive(&buf[..datagram.len]) {
            Ok(p) => p,
            Err(e) => {
                debug!(%from, error = %e, "BFD packet discarded");
                return;
            }
        };
        let Some(discriminator) = self.demultiplex(&packet, from) else {
            debug!(%from, your_discriminator = packet.your_discriminator, "BFD packet for no session");
            return;
        };
        if let Some(entry) = self.sessions.get_mut(&discriminator) {
            let actions = entry.fsm.handle(Event::Received(packet));
            self.apply(discriminator, actions);
        }
    }

    /// RFC 5880 6.8.6: by Your Discriminator when set, else by the source address.
    fn demultiplex(&self, packet: &ControlPacket, from: IpAddr) -> Option<u32> {
        if packet.your_discriminator != 0 {
            let entry = self.sessions.get(&packet.your_discriminator)?;
            return (entry.spec.peer == from).then_some(packet.your_discriminator);
        }
        self.by_peer.get(&from).copied()
    }

    fn apply(&mut self, discriminator: u32, actions: Vec<Action>) {
        let Some(entry) = self.sessions.get_mut(&discriminator) else {
            return;
        };
        for action in actions {
            match action {
                Action::Send(packet) => entry.send(&packet),
                Action::ArmTimer(timer, after) => {
                    let at = Instant::now() + after;
                    entry.armed[timer_index(timer)] = Some(at);
                    self.deadlines.push(Reverse((at, discriminator, timer)));
                }
                Action::StopTimer(timer) => entry.armed[timer_index(timer)] = None,
                Action::StateChanged(t) => {
                    info!(
                        peer = %entry.spec.peer,
                        from = %t.from,
                        to = %t.to,
                        diagnostic = %t.diagnostic,
                        remote_state = %t.remote_state,
                        "BFD session state changed"
                    );
                    entry.publish(&t);
                }
            }
        }
    }

    /// The earliest deadline still in force; stale heap entries are dropped here.
    fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, discriminator, timer))) = self.deadlines.peek().copied() {
            let live = self
                .sessions
                .get(&discriminator)
                .is_some_and(|e| e.armed[timer_index(timer)] == Some(at));
            if live {
                return Some(at);
            }
            self.deadlines.pop();
        }
        None
    }

    fn fire_due(&mut self, now: Instant) {
        while let Some(at) = self.next_deadline() {
            if at > now {
                break;
            }
            let Some(Reverse((_, discriminator, timer))) = self.deadlines.pop() else {
                break;
            };
            let Some(entry) = self.sessions.get_mut(&discriminator) else {
                continue;
            };
            entry.armed[timer_index(timer)] = None;
            let actions = entry.fsm.handle(Event::TimerExpired(timer));
            self.apply(discriminator, actions);
        }
    }

    fn random(&mut self) -> u64 {
        // splitmix64 over the seed from the kernel.
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// 6.8.1: nonzero, unique on the system, random.
    fn free_discriminator(&mut self) -> u32 {
        loop {
            let d = self.random() as u32;
            if d != 0 && !self.sessions.contains_key(&d) {
                return d;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(state: State, ups: u64, downs: u64) -> WatchedState {
        WatchedState {
            state,
            ups,
            downs,
            last_down: (downs > 0).then_some(BfdDown {
                diagnostic: Diagnostic::ControlDetectionTimeExpired,
                remote_state: State::Up,
            }),
        }
    }

    fn now<T>(f: impl std::future::Future<Output = T>) -> Option<T> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        rt.block_on(async {
            tokio::time::timeout(Duration::from_millis(50), f)
                .await
                .ok()
        })
    }

    #[test]
    fn a_watch_reports_up_then_down_with_the_diagnostic() {
        let (tx, rx) = watch::channel(state(State::Down, 0, 0));
        let mut w = BfdWatch::new(rx);
        assert_eq!(now(w.next()), None, "nothing to report while Down");
        tx.send_replace(state(State::Up, 1, 0));
        assert_eq!(now(w.next()), Some(Some(BfdChange::Up)));
        tx.send_replace(state(State::Down, 1, 1));
        let Some(Some(BfdChange::Down(down))) = now(w.next()) else {
            panic!("no Down");
        };
        assert_eq!(down.diagnostic, Diagnostic::ControlDetectionTimeExpired);
    }

    #[test]
    fn a_flap_between_two_looks_is_still_a_down_then_an_up() {
        let (tx, rx) = watch::channel(state(State::Up, 1, 0));
        let mut w = BfdWatch::new(rx);
        assert_eq!(now(w.next()), Some(Some(BfdChange::Up)));
        // Down and back Up before the watcher looks again.
        tx.send_replace(state(State::Down, 1, 1));
        tx.send_replace(state(State::Up, 2, 1));
        assert!(matches!(now(w.next()), Some(Some(BfdChange::Down(_)))));
        assert_eq!(now(w.next()), Some(Some(BfdChange::Up)));
        assert_eq!(now(w.next()), None);
    }

    #[test]
    fn a_removed_session_ends_the_watch() {
        let (tx, rx) = watch::channel(state(State::Down, 0, 0));
        let mut w = BfdWatch::new(rx);
        drop(tx);
        assert_eq!(now(w.next()), Some(None));
    }
}
