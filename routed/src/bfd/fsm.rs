//! One BFD session of RFC 5880 (asynchronous mode, section 6.8) as a pure value: fed
//! [`Event`]s (a packet received, a timer fired, an administrative change), it returns
//! [`Action`]s for the shell to carry out (send this packet, arm or stop this timer,
//! the state changed). No socket and no clock: timers are relative durations the shell
//! arms, and the transmission jitter comes from a generator seeded by the shell, so
//! every transition is unit-tested.
//!
//! The state variables are those of 6.8.1 (`bfd.SessionState`, `bfd.RemoteDiscr`, …).
//! Interval changes follow 6.8.3: while the session is not Up, Desired Min TX is at
//! least one second; a change while Up starts a Poll Sequence, an increase of our
//! transmit interval and a decrease of our Required Min RX take effect only when the
//! Final comes back.

use std::time::Duration;

use super::packet::{ControlPacket, Diagnostic, State};

/// 6.8.3: the Desired Min TX a session that is not Up must not go below.
pub const SLOW_TX_US: u32 = 1_000_000;

/// The timers a session asks for (RFC 5880 6.8.1's bfd.DesiredMinTxInterval,
/// bfd.RequiredMinRxInterval and bfd.DetectMult while Up).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timers {
    pub desired_min_tx: Duration,
    pub required_min_rx: Duration,
    pub detect_mult: u8,
}

impl Default for Timers {
    /// 300 ms x 3: a failure is seen in at most 900 ms.
    fn default() -> Timers {
        Timers {
            desired_min_tx: Duration::from_millis(300),
            required_min_rx: Duration::from_millis(300),
            detect_mult: 3,
        }
    }
}

impl Timers {
    /// Refuses what the wire cannot carry: a zero multiplier, or an interval below 1 ms
    /// (nothing sends that fast from a tokio task) or above the 32-bit microsecond field.
    pub fn validate(&self) -> Result<(), String> {
        if self.detect_mult == 0 {
            return Err("the BFD detect multiplier must be at least 1".into());
        }
        for (name, d) in [
            ("desired minimum transmit", self.desired_min_tx),
            ("required minimum receive", self.required_min_rx),
        ] {
            if d < Duration::from_millis(1) || d.as_micros() > u128::from(u32::MAX) {
                return Err(format!(
                    "the BFD {name} interval {d:?} is outside 1 ms to 4294 s"
                ));
            }
        }
        Ok(())
    }
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

fn from_micros(us: u64) -> Duration {
    Duration::from_micros(us)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// bfd.LocalDiscr: nonzero and unique on this system (6.8.1); the shell picks it.
    pub local_discriminator: u32,
    pub timers: Timers,
    /// Seeds the transmission jitter (6.8.7).
    pub jitter_seed: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A packet demultiplexed to this session (it passed
    /// [`ControlPacket::check_received`]; the session checks again).
    Received(ControlPacket),
    TimerExpired(Timer),
    /// 6.8.16: take the session down on purpose; the peer is told (AdminDown).
    AdminDown,
    AdminUp,
    SetTimers(Timers),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// The next periodic Control packet (6.8.7).
    Transmit,
    /// The Detection Time since the last packet received (6.8.4).
    Detection,
}

/// A change of bfd.SessionState.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub from: State,
    pub to: State,
    /// bfd.LocalDiag after the change: why the session left Up.
    pub diagnostic: Diagnostic,
    /// The state the peer last sent: AdminDown means it went down on purpose, which
    /// RFC 5882 3.2 says is not a path failure.
    pub remote_state: State,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Send(ControlPacket),
    /// Arm (or re-arm, replacing the previous deadline) the timer to fire after this long.
    ArmTimer(Timer, Duration),
    StopTimer(Timer),
    StateChanged(Transition),
}

/// What a session looks like from outside, for `status` and logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub state: State,
    pub remote_state: State,
    pub local_diagnostic: Diagnostic,
    pub remote_diagnostic: Diagnostic,
    pub local_discriminator: u32,
    pub remote_discriminator: u32,
    /// The interval packets leave at before jitter; None when the peer asked for none.
    pub transmit_interval: Option<Duration>,
    /// How long without a packet takes the session down; None before the first packet.
    pub detection_time: Option<Duration>,
    pub remote_timers: Option<Timers>,
    pub poll_in_progress: bool,
}

#[derive(Clone, Debug)]
pub struct Session {
    local_discriminator: u32,
    timers: Timers,
    state: State,
    remote_state: State,
    remote_discriminator: u32,
    local_diagnostic: Diagnostic,
    remote_diagnostic: Diagnostic,
    /// bfd.DesiredMinTxInterval and bfd.RequiredMinRxInterval as sent.
    advertised_tx_us: u32,
    advertised_rx_us: u32,
    /// The values in force for our transmit rate and for the detection time; they lag
    /// the advertised ones during a Poll Sequence (6.8.3).
    tx_in_use_us: u32,
    rx_in_use_us: u32,
    remote_min_rx_us: u32,
    remote_desired_tx_us: u32,
    remote_detect_mult: u8,
    remote_demand: bool,
    polling: bool,
    /// The transmit interval last armed, to re-arm only when it changes.
    armed_interval_us: Option<u32>,
    rng: u64,
}

impl Session {
    /// A session in Down, sending at the slow rate until the peer answers.
    pub fn new(cfg: SessionConfig) -> Session {
        let slow_tx = micros(cfg.timers.desired_min_tx).max(SLOW_TX_US);
        let rx = micros(cfg.timers.required_min_rx);
        Session {
            local_discriminator: cfg.local_discriminator,
            timers: cfg.timers,
            state: State::Down,
            remote_state: State::Down,
            remote_discriminator: 0,
            local_diagnostic: Diagnostic::None,
            remote_diagnostic: Diagnostic::None,
            advertised_tx_us: slow_tx,
            advertised_rx_us: rx,
            tx_in_use_us: slow_tx,
            rx_in_use_us: rx,
            // 6.8.1: bfd.RemoteMinRxInterval starts at 1 (microsecond).
            remote_min_rx_us: 1,
            remote_desired_tx_us: 0,
            remote_detect_mult: 0,
            remote_demand: false,
            polling: false,
            armed_interval_us: None,
            rng: cfg.jitter_seed | 1,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn local_discriminator(&self) -> u32 {
        self.local_discriminator
    }

    /// The first packet and the transmit timer.
    pub fn start(&mut self) -> Vec<Action> {
        let mut actions = vec![Action::Send(self.packet(false))];
        self.rearm_transmit(&mut actions, true);
        actions
    }

    pub fn handle(&mut self, event: Event) -> Vec<Action> {
        match event {
            Event::Received(packet) => self.received(&packet),
            Event::TimerExpired(Timer::Transmit) => self.transmit(),
            Event::TimerExpired(Timer::Detection) => self.detection_expired(),
            Event::AdminDown => self.admin_down(),
            Event::AdminUp => self.admin_up(),
            Event::SetTimers(timers) => self.set_timers(timers),
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        let remote_timers = (self.remote_detect_mult != 0).then(|| Timers {
            desired_min_tx: from_micros(self.remote_desired_tx_us.into()),
            required_min_rx: from_micros(self.remote_min_rx_us.into()),
            detect_mult: self.remote_detect_mult,
        });
        Snapshot {
            state: self.state,
            remote_state: self.remote_state,
            local_diagnostic: self.local_diagnostic,
            remote_diagnostic: self.remote_diagnostic,
            local_discriminator: self.local_discriminator,
            remote_discriminator: self.remote_discriminator,
            transmit_interval: self.transmit_interval_us().map(|us| from_micros(us.into())),
            detection_time: self.detection_time(),
            remote_timers,
            poll_in_progress: self.polling,
        }
    }

    /// The packet this session sends now; `final_` answers a Poll.
    pub fn packet(&self, final_: bool) -> ControlPacket {
        ControlPacket {
            diagnostic: self.local_diagnostic,
            state: self.state,
            poll: self.polling && !final_,
            final_,
            // Fjord's BFD runs in the routing daemon and shares its fate (RFC 5880 4.1).
            control_plane_independent: false,
            demand: false,
            multipoint: false,
            detect_mult: self.timers.detect_mult,
            my_discriminator: self.local_discriminator,
            your_discriminator: self.remote_discriminator,
            desired_min_tx_us: self.advertised_tx_us,
            required_min_rx_us: self.advertised_rx_us,
            required_min_echo_rx_us: 0,
            authentication: None,
        }
    }

    /// 6.8.7: the larger of our Desired Min TX in force and the peer's Required Min RX;
    /// None when the peer asked for no packets or runs Demand mode with us both Up.
    fn transmit_interval_us(&self) -> Option<u32> {
        let demand_quiet =
            self.remote_demand && self.state == State::Up && self.remote_state == State::Up;
        if self.remote_min_rx_us == 0 || demand_quiet {
            return None;
        }
        Some(self.tx_in_use_us.max(self.remote_min_rx_us))
    }

    /// 6.8.4, asynchronous mode: the peer's Detect Mult times the larger of our
    /// Required Min RX in force and the peer's Desired Min TX.
    fn detection_time(&self) -> Option<Duration> {
        if self.remote_detect_mult == 0 {
            return None;
        }
        let interval = self.rx_in_use_us.max(self.remote_desired_tx_us);
        Some(from_micros(
            u64::from(self.remote_detect_mult) * u64::from(interval),
        ))
    }

    /// 6.8.6, from "set bfd.RemoteDiscr" on (demultiplexing is the shell's).
    fn received(&mut self, p: &ControlPacket) -> Vec<Action> {
        if p.check_received().is_err() {
            return vec![];
        }
        self.remote_discriminator = p.my_discriminator;
        self.remote_state = p.state;
        self.remote_diagnostic = p.diagnostic;
        self.remote_demand = p.demand;
        self.remote_min_rx_us = p.required_min_rx_us;
        self.remote_desired_tx_us = p.desired_min_tx_us;
        self.remote_detect_mult = p.detect_mult;
        if p.final_ && self.polling {
            self.finish_poll();
        }
        if self.state == State::AdminDown {
            return vec![];
        }
        let mut actions = Vec::new();
        if let Some(detect) = self.detection_time() {
            actions.push(Action::ArmTimer(Timer::Detection, detect));
        }
        let next = match (self.state, p.state) {
            (State::Down, _) if p.state == State::AdminDown => None,
            (_, State::AdminDown) => Some((State::Down, Diagnostic::NeighborSignaledSessionDown)),
            (State::Down, State::Down) => Some((State::Init, self.local_diagnostic)),
            (State::Down, State::Init) | (State::Init, State::Init | State::Up) => {
                Some((State::Up, Diagnostic::None))
            }
            (State::Up, State::Down) => {
                Some((State::Down, Diagnostic::NeighborSignaledSessionDown))
            }
            _ => None,
        };
        match next {
            Some((to, diagnostic)) => actions.extend(self.change_state(to, diagnostic)),
            None => self.rearm_transmit(&mut actions, false),
        }
        if p.poll {
            // 6.8.6: the Final goes out at once, whatever the transmit timer says, and
            // with the state this packet brought.
            actions.push(Action::Send(self.packet(true)));
        }
        actions
    }

    fn transmit(&mut self) -> Vec<Action> {
        self.armed_interval_us = None;
        let mut actions = Vec::new();
        if self.transmit_interval_us().is_some() {
            actions.push(Action::Send(self.packet(false)));
        }
        self.rearm_transmit(&mut actions, true);
        actions
    }

    /// 6.8.4 and 6.8.1: no packet for a Detection Time takes an Init or Up session down
    /// and forgets the peer's discriminator.
    fn detection_expired(&mut self) -> Vec<Action> {
        if self.state == State::AdminDown {
            return vec![];
        }
        self.remote_discriminator = 0;
        self.remote_state = State::Down;
        self.remote_demand = false;
        self.remote_min_rx_us = 1;
        self.remote_desired_tx_us = 0;
        self.remote_detect_mult = 0;
        if matches!(self.state, State::Init | State::Up) {
            self.change_state(State::Down, Diagnostic::ControlDetectionTimeExpired)
        } else {
            let mut actions = Vec::new();
            self.rearm_transmit(&mut actions, false);
            actions
        }
    }

    /// 6.8.16: AdminDown is sent (periodically, at the slow rate) so the peer knows it
    /// was on purpose; detection stops.
    fn admin_down(&mut self) -> Vec<Action> {
        if self.state == State::AdminDown {
            return vec![];
        }
        let mut actions = vec![Action::StopTimer(Timer::Detection)];
        actions.extend(self.change_state(State::AdminDown, Diagnostic::AdministrativelyDown));
        actions
    }

    fn admin_up(&mut self) -> Vec<Action> {
        if self.state != State::AdminDown {
            return vec![];
        }
        self.remote_discriminator = 0;
        self.remote_state = State::Down;
        self.change_state(State::Down, Diagnostic::None)
    }

    fn set_timers(&mut self, timers: Timers) -> Vec<Action> {
        self.timers = timers;
        let mut actions = Vec::new();
        if self.update_advertised() {
            // 6.8.3: the peer hears of the change at once, with the Poll bit.
            actions.push(Action::Send(self.packet(false)));
        }
        self.rearm_transmit(&mut actions, false);
        actions
    }

    fn change_state(&mut self, to: State, diagnostic: Diagnostic) -> Vec<Action> {
        let from = self.state;
        self.state = to;
        self.local_diagnostic = diagnostic;
        if to != State::Up {
            self.polling = false;
        }
        self.update_advertised();
        let mut actions = vec![Action::StateChanged(Transition {
            from,
            to,
            diagnostic,
            remote_state: self.remote_state,
        })];
        // The peer learns of the change now rather than at the next (slow) tick.
        actions.push(Action::Send(self.packet(false)));
        self.rearm_transmit(&mut actions, true);
        actions
    }

    /// Recomputes the advertised intervals for the state and the configured timers.
    /// A change while Up starts a Poll Sequence; returns whether anything changed.
    fn update_advertised(&mut self) -> bool {
        let configured_tx = micros(self.timers.desired_min_tx);
        let tx = if self.state == State::Up {
            configured_tx
        } else {
            configured_tx.max(SLOW_TX_US)
        };
        let rx = micros(self.timers.required_min_rx);
        let changed = tx != self.advertised_tx_us || rx != self.advertised_rx_us;
        self.advertised_tx_us = tx;
        self.advertised_rx_us = rx;
        if self.state == State::Up {
            // 6.8.3: a slower transmit rate and a shorter detection time wait for the
            // Final; the other directions are safe at once.
            self.tx_in_use_us = self.tx_in_use_us.min(tx);
            self.rx_in_use_us = self.rx_in_use_us.max(rx);
            if changed {
                self.polling = true;
            }
        } else {
            self.tx_in_use_us = tx;
            self.rx_in_use_us = rx;
        }
        changed
    }

    fn finish_poll(&mut self) {
        self.polling = false;
        self.tx_in_use_us = self.advertised_tx_us;
        self.rx_in_use_us = self.advertised_rx_us;
    }

    /// Arms the transmit timer when `always` or when the interval changed; stops it
    /// when no periodic packets may be sent.
    fn rearm_transmit(&mut self, actions: &mut Vec<Action>, always: bool) {
        match self.transmit_interval_us() {
            None => {
                if self.armed_interval_us.take().is_some() || always {
                    actions.push(Action::StopTimer(Timer::Transmit));
                }
            }
            Some(us) if always || self.armed_interval_us != Some(us) => {
                self.armed_interval_us = Some(us);
                let random = self.next_random();
                let delay = jitter(from_micros(us.into()), self.timers.detect_mult, random);
                actions.push(Action::ArmTimer(Timer::Transmit, delay));
            }
            Some(_) => {}
        }
    }

    /// xorshift64*: enough to spread transmissions, not for secrets.
    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// 6.8.7: the interval reduced by a random 0-25 % (so 75-100 % of it), or to 75-90 %
/// when Detect Mult is 1, so that packets of many sessions do not synchronise and a
/// multiplier of one still gets a packet in before the peer's detection time.
pub fn jitter(interval: Duration, detect_mult: u8, random: u64) -> Duration {
    let (low, span) = if detect_mult == 1 {
        (7_500, 1_501)
    } else {
        (7_500, 2_500)
    };
    let per_10k = low + random % span;
    let us = interval.as_micros() as u64 * per_10k / 10_000;
    Duration::from_micros(us)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: u32 = 0x1111_1111;
    const REMOTE: u32 = 0x2222_2222;

    fn session() -> Session {
        Session::new(SessionConfig {
            local_discriminator: LOCAL,
            timers: Timers::default(),
            jitter_seed: 42,
        })
    }

    /// What a peer at 300 ms x 3 sends in `state`.
    fn peer(state: State) -> ControlPacket {
        ControlPacket {
            diagnostic: Diagnostic::None,
            state,
            poll: false,
            final_: false,
            control_plane_independent: false,
            demand: false,
            multipoint: false,
            detect_mult: 3,
            my_discriminator: REMOTE,
            your_discriminator: if state == State::Down { 0 } else { LOCAL },
            desired_min_tx_us: 300_000,
            required_min_rx_us: 300_000,
            required_min_echo_rx_us: 0,
            authentication: None,
        }
    }

    fn sent(actions: &[Action]) -> Vec<&ControlPacket> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(p) => Some(p),
                _ => None,
            })
            .collect()
    }

    fn transition(actions: &[Action]) -> Option<Transition> {
        actions.iter().find_map(|a| match a {
            Action::StateChanged(t) => Some(*t),
            _ => None,
        })
    }

    fn armed(actions: &[Action], timer: Timer) -> Option<Duration> {
        actions.iter().find_map(|a| match a {
            Action::ArmTimer(t, d) if *t == timer => Some(*d),
            _ => None,
        })
    }

    /// Through the three-way handshake to Up, answering our Poll.
    fn up() -> Session {
        let mut s = session();
        s.start();
        s.handle(Event::Received(peer(State::Init)));
        assert_eq!(s.state(), State::Up);
        let mut fin = peer(State::Up);
        fin.final_ = true;
        s.handle(Event::Received(fin));
        assert!(!s.snapshot().poll_in_progress);
        s
    }

    #[test]
    fn starts_down_at_the_slow_rate_of_one_second() {
        let mut s = session();
        let a = s.start();
        let first = sent(&a)[0];
        assert_eq!(first.state, State::Down);
        assert_eq!(first.your_discriminator, 0);
        assert_eq!(first.my_discriminator, LOCAL);
        assert_eq!(first.desired_min_tx_us, 1_000_000);
        assert_eq!(first.required_min_rx_us, 300_000);
        assert_eq!(first.detect_mult, 3);
        assert!(!first.control_plane_independent);
        let tx = armed(&a, Timer::Transmit).unwrap();
        assert!(tx >= Duration::from_millis(750) && tx <= Duration::from_secs(1));
    }

    #[test]
    fn three_way_handshake_down_init_up() {
        let mut s = session();
        s.start();
        let a = s.handle(Event::Received(peer(State::Down)));
        let t = transition(&a).unwrap();
        assert_eq!((t.from, t.to), (State::Down, State::Init));
        let p = sent(&a)[0];
        assert_eq!((p.state, p.your_discriminator), (State::Init, REMOTE));
        let a = s.handle(Event::Received(peer(State::Up)));
        let t = transition(&a).unwrap();
        assert_eq!(
            (t.from, t.to, t.diagnostic),
            (State::Init, State::Up, Diagnostic::None)
        );
        assert_eq!(s.state(), State::Up);
    }

    #[test]
    fn down_goes_straight_up_when_the_peer_is_in_init() {
        let mut s = session();
        s.start();
        let a = s.handle(Event::Received(peer(State::Init)));
        assert_eq!(transition(&a).unwrap().to, State::Up);
        // A peer still Up from before our restart is not a handshake: we stay Down.
        let mut s = session();
        s.start();
        let a = s.handle(Event::Received(peer(State::Up)));
        assert_eq!(transition(&a), None);
        assert_eq!(s.state(), State::Down);
    }

    #[test]
    fn going_up_polls_for_the_fast_rate_and_the_final_ends_it() {
        let mut s = session();
        s.start();
        let a = s.handle(Event::Received(peer(State::Init)));
        let p = sent(&a)[0];
        assert_eq!(p.state, State::Up);
        assert!(p.poll, "the change from 1 s to 300 ms is announced with P");
        assert_eq!(p.desired_min_tx_us, 300_000);
        // A decrease of our transmit interval takes effect at once.
        assert_eq!(
            s.snapshot().transmit_interval,
            Some(Duration::from_millis(300))
        );
        let tx = armed(&a, Timer::Transmit).unwrap();
        assert!(tx >= Duration::from_millis(225) && tx < Duration::from_millis(300));
        let a = s.handle(Event::TimerExpired(Timer::Transmit));
        assert!(sent(&a)[0].poll, "P stays set until the Final");
        let mut fin = peer(State::Up);
        fin.final_ = true;
        s.handle(Event::Received(fin));
        let a = s.handle(Event::TimerExpired(Timer::Transmit));
        assert!(!sent(&a)[0].poll);
    }

    #[test]
    fn detection_time_is_remote_mult_times_the_agreed_interval() {
        let mut s = up();
        let mut p = peer(State::Up);
        p.detect_mult = 5;
        p.desired_min_tx_us = 500_000;
        let a = s.handle(Event::Received(p));
        // max(our Required Min RX 300 ms, their Desired Min TX 500 ms) x their 5.
        assert_eq!(
            armed(&a, Timer::Detection),
            Some(Duration::from_millis(2_500))
        );
        let mut p = peer(State::Up);
        p.desired_min_tx_us = 100_000;
        let a = s.handle(Event::Received(p));
        assert_eq!(
            armed(&a, Timer::Detection),
            Some(Duration::from_millis(900))
        );
    }

    #[test]
    fn transmit_interval_honours_the_peers_required_min_rx() {
        let mut s = up();
        let mut p = peer(State::Up);
        p.required_min_rx_us = 2_000_000;
        let a = s.handle(Event::Received(p));
        let tx = armed(&a, Timer::Transmit).expect("re-armed for the slower interval");
        assert!(tx >= Duration::from_millis(1_500) && tx < Duration::from_secs(2));
        assert_eq!(s.snapshot().transmit_interval, Some(Duration::from_secs(2)));
        // Required Min RX zero: no periodic packets at all (6.8.7).
        let mut p = peer(State::Up);
        p.required_min_rx_us = 0;
        let a = s.handle(Event::Received(p));
        assert!(a.contains(&Action::StopTimer(Timer::Transmit)));
        assert!(sent(&s.handle(Event::TimerExpired(Timer::Transmit))).is_empty());
    }

    #[test]
    fn detection_timeout_takes_up_down_with_diag_1_and_forgets_the_peer() {
        let mut s = up();
        let a = s.handle(Event::TimerExpired(Timer::Detection));
        let t = transition(&a).unwrap();
        assert_eq!(
            (t.from, t.to, t.diagnostic),
            (
                State::Up,
                State::Down,
                Diagnostic::ControlDetectionTimeExpired
            )
        );
        let p = sent(&a)[0];
        assert_eq!(p.diagnostic, Diagnostic::ControlDetectionTimeExpired);
        assert_eq!(p.your_discriminator, 0, "6.8.1: RemoteDiscr reset");
        assert_eq!(p.desired_min_tx_us, 1_000_000, "back to the slow rate");
        assert!(!p.poll);
        // In Down, a further timeout changes nothing.
        assert_eq!(
            transition(&s.handle(Event::TimerExpired(Timer::Detection))),
            None
        );
    }

    #[test]
    fn init_times_out_too() {
        let mut s = session();
        s.start();
        s.handle(Event::Received(peer(State::Down)));
        let a = s.handle(Event::TimerExpired(Timer::Detection));
        assert_eq!(
            transition(&a).map(|t| (t.from, t.to)),
            Some((State::Init, State::Down))
        );
    }

    #[test]
    fn peer_down_or_admin_down_takes_up_down_with_diag_3() {
        for remote in [State::Down, State::AdminDown] {
            let mut s = up();
            let a = s.handle(Event::Received(peer(remote)));
            let t = transition(&a).unwrap();
            assert_eq!(
                (t.to, t.diagnostic, t.remote_state),
                (State::Down, Diagnostic::NeighborSignaledSessionDown, remote)
            );
        }
        // AdminDown from the peer while we are Down is no change.
        let mut s = session();
        s.start();
        assert_eq!(
            transition(&s.handle(Event::Received(peer(State::AdminDown)))),
            None
        );
    }

    #[test]
    fn admin_down_tells_the_peer_and_ignores_packets_until_admin_up() {
        let mut s = up();
        let a = s.handle(Event::AdminDown);
        assert!(a.contains(&Action::StopTimer(Timer::Detection)));
        let t = transition(&a).unwrap();
        assert_eq!(
            (t.to, t.diagnostic),
            (State::AdminDown, Diagnostic::AdministrativelyDown)
        );
        let p = sent(&a)[0];
        assert_eq!(
            (p.state, p.diagnostic),
            (State::AdminDown, Diagnostic::AdministrativelyDown)
        );
        // Packets keep going out (6.8.16), and nothing received moves the session.
        assert_eq!(
            sent(&s.handle(Event::TimerExpired(Timer::Transmit))).len(),
            1
        );
        assert!(s.handle(Event::Received(peer(State::Init))).is_empty());
        assert!(s.handle(Event::TimerExpired(Timer::Detection)).is_empty());
        let a = s.handle(Event::AdminUp);
        assert_eq!(transition(&a).map(|t| t.to), Some(State::Down));
        s.handle(Event::Received(peer(State::Init)));
        assert_eq!(s.state(), State::Up);
    }

    #[test]
    fn a_poll_is_answered_at_once_with_final_and_no_poll() {
        let mut s = up();
        let mut p = peer(State::Up);
        p.poll = true;
        p.desired_min_tx_us = 1_000_000;
        let a = s.handle(Event::Received(p));
        let f = sent(&a)[0];
        assert!(f.final_ && !f.poll);
        assert_eq!(f.state, State::Up);
        // Their slower transmit rate lengthens our detection time at once.
        assert_eq!(armed(&a, Timer::Detection), Some(Duration::from_secs(3)));
    }

    #[test]
    fn slower_transmit_waits_for_the_final_and_shorter_rx_waits_too() {
        let mut s = up();
        let slower = Timers {
            desired_min_tx: Duration::from_millis(600),
            required_min_rx: Duration::from_millis(100),
            detect_mult: 3,
        };
        let a = s.handle(Event::SetTimers(slower));
        let p = sent(&a)[0];
        assert!(p.poll);
        assert_eq!(
            (p.desired_min_tx_us, p.required_min_rx_us),
            (600_000, 100_000)
        );
        let snap = s.snapshot();
        assert_eq!(snap.transmit_interval, Some(Duration::from_millis(300)));
        assert_eq!(snap.detection_time, Some(Duration::from_millis(900)));
        let mut fin = peer(State::Up);
        fin.final_ = true;
        fin.desired_min_tx_us = 100_000;
        fin.required_min_rx_us = 100_000;
        s.handle(Event::Received(fin));
        let snap = s.snapshot();
        assert!(!snap.poll_in_progress);
        assert_eq!(snap.transmit_interval, Some(Duration::from_millis(600)));
        assert_eq!(snap.detection_time, Some(Duration::from_millis(300)));
    }

    #[test]
    fn faster_transmit_and_longer_rx_apply_at_once() {
        let mut s = up();
        let faster = Timers {
            desired_min_tx: Duration::from_millis(100),
            required_min_rx: Duration::from_millis(600),
            detect_mult: 3,
        };
        s.handle(Event::SetTimers(faster));
        let snap = s.snapshot();
        assert!(snap.poll_in_progress);
        // Transmit is still bounded by the peer's 300 ms Required Min RX.
        assert_eq!(snap.transmit_interval, Some(Duration::from_millis(300)));
        assert_eq!(snap.detection_time, Some(Duration::from_millis(1_800)));
    }

    #[test]
    fn final_without_a_poll_is_ignored_and_a_final_while_down_changes_nothing() {
        let mut s = up();
        let mut fin = peer(State::Up);
        fin.final_ = true;
        let a = s.handle(Event::Received(fin));
        assert_eq!(transition(&a), None);
        assert!(sent(&a).is_empty());
    }

    #[test]
    fn demand_mode_peer_silences_periodic_transmission_while_both_up() {
        let mut s = up();
        let mut p = peer(State::Up);
        p.demand = true;
        let a = s.handle(Event::Received(p));
        assert!(a.contains(&Action::StopTimer(Timer::Transmit)));
        assert_eq!(s.snapshot().transmit_interval, None);
        let a = s.handle(Event::Received(peer(State::Up)));
        assert!(armed(&a, Timer::Transmit).is_some());
    }

    #[test]
    fn packets_failing_the_reception_checks_are_discarded() {
        let mut s = up();
        let mut bad = peer(State::Down);
        bad.detect_mult = 0;
        assert!(s.handle(Event::Received(bad)).is_empty());
        assert_eq!(s.state(), State::Up);
    }

    #[test]
    fn jitter_is_75_to_100_percent_or_75_to_90_with_mult_1() {
        let interval = Duration::from_millis(300);
        let mut seen = (Duration::MAX, Duration::ZERO);
        for r in 0..10_000u64 {
            let d = jitter(interval, 3, r.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            assert!(d >= Duration::from_millis(225) && d < interval, "{d:?}");
            seen = (seen.0.min(d), seen.1.max(d));
            let one = jitter(interval, 1, r.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            assert!(one >= Duration::from_millis(225) && one <= Duration::from_millis(270));
        }
        assert!(seen.0 < Duration::from_millis(230) && seen.1 > Duration::from_millis(295));
    }

    /// Two sessions wired to each other through a simulated clock and a 1 ms link:
    /// `run` advances time, delivering packets and firing timers in order.
    struct Pair {
        sessions: [Session; 2],
        now: Duration,
        timers: [[Option<Duration>; 2]; 2],
        in_flight: Vec<(Duration, usize, ControlPacket)>,
        sent: [usize; 2],
        cut: bool,
    }

    impl Pair {
        fn new() -> Pair {
            let make = |d, seed| {
                Session::new(SessionConfig {
                    local_discriminator: d,
                    timers: Timers::default(),
                    jitter_seed: seed,
                })
            };
            let mut pair = Pair {
                sessions: [make(LOCAL, 1), make(REMOTE, 2)],
                now: Duration::ZERO,
                timers: [[None; 2]; 2],
                in_flight: Vec::new(),
                sent: [0; 2],
                cut: false,
            };
            for side in 0..2 {
                let a = pair.sessions[side].start();
                pair.apply(side, a);
            }
            pair
        }

        fn apply(&mut self, side: usize, actions: Vec<Action>) {
            for a in actions {
                match a {
                    Action::Send(p) => {
                        self.sent[side] += 1;
                        if !self.cut {
                            let at = self.now + Duration::from_millis(1);
                            self.in_flight.push((at, 1 - side, p));
                        }
                    }
                    Action::ArmTimer(t, d) => self.timers[side][t as usize] = Some(self.now + d),
                    Action::StopTimer(t) => self.timers[side][t as usize] = None,
                    Action::StateChanged(_) => {}
                }
            }
        }

        fn run(&mut self, until: Duration) {
            loop {
                let packet = self.in_flight.iter().map(|(at, _, _)| *at).min();
                let timer = self.timers.iter().flatten().flatten().min().copied();
                let Some(next) = packet.into_iter().chain(timer).min() else {
                    return;
                };
                if next > until {
                    self.now = until;
                    return;
                }
                self.now = next;
                if let Some(i) = self.in_flight.iter().position(|(at, _, _)| *at == next) {
                    let (_, side, p) = self.in_flight.remove(i);
                    let a = self.sessions[side].handle(Event::Received(p));
                    self.apply(side, a);
                    continue;
                }
                for side in 0..2 {
                    for (i, timer) in [Timer::Transmit, Timer::Detection].into_iter().enumerate() {
                        if self.timers[side][i] == Some(next) {
                            self.timers[side][i] = None;
                            let a = self.sessions[side].handle(Event::TimerExpired(timer));
                            self.apply(side, a);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn two_sessions_come_up_settle_at_the_negotiated_rate_and_detect_a_cut() {
        let mut pair = Pair::new();
        pair.run(Duration::from_secs(5));
        for s in &pair.sessions {
            let snap = s.snapshot();
            assert_eq!(snap.state, State::Up);
            assert!(!snap.poll_in_progress);
            assert_eq!(snap.transmit_interval, Some(Duration::from_millis(300)));
            assert_eq!(snap.detection_time, Some(Duration::from_millis(900)));
        }
        // 20 s Up: one packet per 225-300 ms each, nothing more (6.8.7).
        let before = pair.sent;
        pair.run(Duration::from_secs(25));
        for (side, (after, before)) in pair.sent.iter().zip(before).enumerate() {
            let n = after - before;
            assert!(
                (66..=89).contains(&n),
                "side {side} sent {n} packets in 20 s"
            );
        }
        pair.cut = true;
        let cut_at = pair.now;
        // The last packet before the cut came at most one interval (300 ms) earlier.
        pair.run(cut_at + Duration::from_millis(590));
        assert!(pair.sessions.iter().all(|s| s.state() == State::Up));
        pair.run(cut_at + Duration::from_millis(901));
        assert!(pair.sessions.iter().all(|s| s.state() == State::Down));
    }

    #[test]
    fn random_events_keep_the_rfc_invariants() {
        // 20,000 events drawn from every kind, packets with random fields: the session
        // never sends P and F together, never goes below 1 s while not Up (6.8.3),
        // sends Up only with the peer's discriminator, and never sends in AdminDown
        // anything but AdminDown.
        let mut s = session();
        s.start();
        let mut r: u64 = 0x1234_5678;
        let mut next = || {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            r
        };
        for _ in 0..20_000 {
            let event = match next() % 7 {
                0 => Event::TimerExpired(Timer::Transmit),
                1 => Event::TimerExpired(Timer::Detection),
                2 if next() % 20 == 0 => Event::AdminDown,
                3 => Event::AdminUp,
                4 if next() % 10 == 0 => Event::SetTimers(Timers {
                    desired_min_tx: Duration::from_millis(50 + next() % 2_000),
                    required_min_rx: Duration::from_millis(50 + next() % 2_000),
                    detect_mult: 1 + (next() % 5) as u8,
                }),
                _ => {
                    let states = [State::AdminDown, State::Down, State::Init, State::Up];
                    let mut p = peer(states[(next() % 4) as usize]);
                    p.poll = next() % 4 == 0;
                    p.final_ = next() % 4 == 0;
                    p.demand = next() % 8 == 0;
                    p.required_min_rx_us = (next() % 3) as u32 * 150_000;
                    p.desired_min_tx_us = 1 + (next() % 2_000_000) as u32;
                    p.your_discriminator = [0, LOCAL][(next() % 2) as usize];
                    Event::Received(p)
                }
            };
            for packet in sent(&s.handle(event)) {
                assert!(!(packet.poll && packet.final_), "{packet:?}");
                if packet.state != State::Up {
                    assert!(packet.desired_min_tx_us >= SLOW_TX_US, "{packet:?}");
                }
                if packet.state == State::Up {
                    assert_eq!(packet.your_discriminator, REMOTE);
                }
                assert_eq!(packet.my_discriminator, LOCAL);
                assert_eq!(packet.state, s.state());
            }
        }
    }

    #[test]
    fn timers_validate_the_wire_range() {
        assert!(Timers::default().validate().is_ok());
        let zero_mult = Timers {
            detect_mult: 0,
            ..Timers::default()
        };
        assert!(zero_mult.validate().is_err());
        let too_fast = Timers {
            desired_min_tx: Duration::from_micros(10),
            ..Timers::default()
        };
        assert!(too_fast.validate().is_err());
    }
}
