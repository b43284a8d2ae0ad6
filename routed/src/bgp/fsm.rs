//! The RFC 4271 section 8 finite state machine for one BGP connection, as a pure value:
//! fed [`Event`]s, it returns [`Action`]s for the session task to carry out (send,
//! timers, connect, drop). No sockets, no clocks, so every transition is unit-tested.
//!
//! Automatic restart (RFC 4271 8.1.1, events 3-7) is built in: after an error the FSM
//! waits in Idle for one ConnectRetry period and starts again; only ManualStop stays down.

use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

use super::error::{Cease, FsmError, MessageError, OpenError};
use super::wire::{
    Afi, Capabilities, GracefulRestartCap, GracefulRestartFamily, Message, Notification, Open,
    SessionContext, Update,
};

/// RFC 4271 8.2.2 suggests a large hold time until the OPENs are exchanged.
pub const OPEN_HOLD_TIME: Duration = Duration::from_secs(240);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum SessionState {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

impl fmt::Display for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What the FSM needs to know about the peering.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsmConfig {
    pub local_asn: u32,
    pub remote_asn: u32,
    pub router_id: Ipv4Addr,
    /// Proposed hold time in seconds (0: no keepalives).
    pub hold_time: u16,
    pub connect_retry: Duration,
    /// Never initiate a connection; wait for the peer's.
    pub passive: bool,
    /// Advertise graceful restart with this restart time (RFC 4724).
    pub graceful_restart_time: Option<u16>,
}

impl FsmConfig {
    pub fn ibgp(&self) -> bool {
        self.local_asn == self.remote_asn
    }

    /// Our OPEN: 4-octet AS, IPv4 and IPv6 unicast, route refresh, and graceful restart
    /// with forwarding state preserved for both families (the kernel keeps its routes
    /// across a daemon restart).
    pub fn open(&self) -> Open {
        let graceful_restart = self.graceful_restart_time.map(|t| GracefulRestartCap {
            restart_time: t,
            restarting: false,
            families: Afi::ALL
                .iter()
                .map(|&afi| GracefulRestartFamily {
                    afi,
                    forwarding_preserved: true,
                })
                .collect(),
        });
        let caps = Capabilities {
            four_octet_as: None,
            multiprotocol: Afi::ALL.to_vec(),
            route_refresh: true,
            graceful_restart,
            other: vec![],
        };
        Open::new(self.local_asn, self.hold_time, self.router_id, caps)
    }
}

/// What the two OPENs agreed on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    pub peer_router_id: Ipv4Addr,
    pub peer_asn: u32,
    /// Seconds; 0 means no hold timer and no keepalives.
    pub hold_time: u16,
    pub keepalive: u16,
    pub four_octet_as: bool,
    pub ibgp: bool,
    /// Families both sides advertised.
    pub families: Vec<Afi>,
    pub route_refresh: bool,
    /// The peer's graceful restart capability, if it sent one.
    pub peer_graceful_restart: Option<GracefulRestartCap>,
    /// Both sides advertised graceful restart, so a dropped TCP session is a restart.
    pub graceful_restart: bool,
}

impl Negotiated {
    pub fn context(&self) -> SessionContext {
        SessionContext {
            four_octet_as: self.four_octet_as,
            ibgp: self.ibgp,
        }
    }
}

/// Checks a received OPEN (RFC 4271 6.2, RFC 6793, RFC 5492) and negotiates.
pub fn check_open(open: &Open, cfg: &FsmConfig) -> Result<Negotiated, MessageError> {
    if matches!(open.hold_time, 1 | 2) {
        return Err(OpenError::UnacceptableHoldTime.into());
    }
    // A 2-octet speaker peering with a 4-octet AS sends AS_TRANS and no capability:
    // `asn()` is then 23456, which cannot match, as RFC 6793 4.1 wants.
    if open.asn() != cfg.remote_asn {
        return Err(OpenError::BadPeerAs.into());
    }
    let id = open.router_id;
    let unusable = id.is_unspecified() || id.is_broadcast() || id.is_multicast();
    if unusable || (cfg.ibgp() && id == cfg.router_id) {
        return Err(OpenError::BadBgpIdentifier.into());
    }
    let caps = &open.capabilities;
    let hold_time = cfg.hold_time.min(open.hold_time);
    // No multiprotocol capability at all means IPv4 unicast only (RFC 4760 8).
    let theirs = if caps.multiprotocol.is_empty() {
        vec![Afi::Ipv4]
    } else {
        caps.multiprotocol.clone()
    };
    let families = Afi::ALL
        .into_iter()
        .filter(|a| theirs.contains(a))
        .collect();
    Ok(Negotiated {
        peer_router_id: id,
        peer_asn: open.asn(),
        hold_time,
        keepalive: hold_time / 3,
        four_octet_as: caps.four_octet_as.is_some(),
        ibgp: cfg.ibgp(),
        families,
        route_refresh: caps.route_refresh,
        peer_graceful_restart: caps.graceful_restart.clone(),
        graceful_restart: caps.graceful_restart.is_some() && cfg.graceful_restart_time.is_some(),
    })
}

/// Which side opened a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Outgoing,
    Incoming,
}

/// RFC 4271 6.8: of two connections to the same peer, the one opened by the speaker
/// with the higher BGP Identifier survives. Both sides compute the same answer, so
/// both close the same connection.
pub fn collision_survivor(local_id: Ipv4Addr, remote_id: Ipv4Addr) -> Direction {
    if u32::from(local_id) > u32::from(remote_id) {
        Direction::Outgoing
    } else {
        Direction::Incoming
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    ManualStart,
    ManualStop,
    /// A TCP connection is up, either direction (RFC events 16, 17).
    TcpConnected,
    /// The connection attempt failed or the connection closed (RFC event 18).
    TcpFailed,
    Received(Message),
    /// The peer sent something that cannot be accepted.
    Malformed(MessageError),
    ConnectRetryTimerExpired,
    HoldTimerExpired,
    KeepaliveTimerExpired,
    /// Collision detection chose the other connection (RFC 4271 6.8).
    CollisionLost,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Timer {
    ConnectRetry,
    Hold,
    Keepalive,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Start a TCP connection attempt to the peer.
    Connect,
    Send(Message),
    StartTimer(Timer, Duration),
    StopTimer(Timer),
    /// Close the TCP connection (after what was sent is flushed).
    DropConnection,
    SessionUp(Negotiated),
    /// The session left Established.
    SessionDown {
        reason: String,
        /// RFC 4724 helper: keep the peer's routes as stale for its restart time.
        graceful: bool,
    },
    UpdateReceived(Update),
    RouteRefreshRequested(Afi),
}

#[derive(Clone, Debug)]
pub struct Fsm {
    cfg: FsmConfig,
    state: SessionState,
    negotiated: Option<Negotiated>,
    /// ManualStop was given: no automatic restart.
    stopped: bool,
}

impl Fsm {
    pub fn new(cfg: FsmConfig) -> Fsm {
        Fsm {
            cfg,
            state: SessionState::Idle,
            negotiated: None,
            stopped: true,
        }
    }

    /// An FSM for a connection the peer opened while another one was already under
    /// way: it starts in Active, ready for `TcpConnected`.
    pub fn for_incoming(cfg: FsmConfig) -> Fsm {
        Fsm {
            cfg,
            state: SessionState::Active,
            negotiated: None,
            stopped: false,
        }
    }

    pub fn state(&self) -> SessionState {
        self.state
    }

    pub fn config(&self) -> &FsmConfig {
        &self.cfg
    }

    /// Known from OpenConfirm on (the peer's OPEN was accepted).
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    pub fn handle(&mut self, event: Event) -> Vec<Action> {
        use SessionState::*;
        match (self.state, event) {
            (_, Event::ManualStop) => self.stop(),
            (Idle, Event::ManualStart) => self.start(),
            (Idle, Event::ConnectRetryTimerExpired) if !self.stopped => self.start(),
            (Idle, Event::TcpConnected) if !self.stopped => self.connected(),
            (Connect | Active, Event::TcpConnected) => self.connected(),
            (Connect | Active, Event::TcpFailed) => self.wait_active(),
            (Connect | Active, Event::ConnectRetryTimerExpired) => self.retry(),
            (OpenSent | OpenConfirm | Established, e) => self.connected_event(e),
            _ => vec![],
        }
    }

    fn start(&mut self) -> Vec<Action> {
        self.stopped = false;
        let retry = Action::StartTimer(Timer::ConnectRetry, self.cfg.connect_retry);
        if self.cfg.passive {
            self.state = SessionState::Active;
            vec![]
        } else {
            self.state = SessionState::Connect;
            vec![Action::Connect, retry]
        }
    }

    fn retry(&mut self) -> Vec<Action> {
        if self.cfg.passive {
            return vec![];
        }
        self.state = SessionState::Connect;
        vec![
            Action::DropConnection,
            Action::Connect,
            Action::StartTimer(Timer::ConnectRetry, self.cfg.connect_retry),
        ]
    }

    /// RFC 4271 8.2.2, Connect/Active + TcpConnectionFails: wait and try again.
    fn wait_active(&mut self) -> Vec<Action> {
        if self.cfg.passive {
            self.state = SessionState::Active;
            return vec![Action::DropConnection];
        }
        self.state = SessionState::Active;
        vec![
            Action::DropConnection,
            Action::StartTimer(Timer::ConnectRetry, self.cfg.connect_retry),
        ]
    }

    fn connected(&mut self) -> Vec<Action> {
        self.stopped = false;
        self.state = SessionState::OpenSent;
        self.negotiated = None;
        vec![
            Action::StopTimer(Timer::ConnectRetry),
            Action::Send(Message::Open(self.cfg.open())),
            Action::StartTimer(Timer::Hold, OPEN_HOLD_TIME),
        ]
    }

    fn stop(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.has_connection() {
            let n = MessageError::from(Cease::AdministrativeShutdown).notification();
            actions.push(Action::Send(Message::Notification(n)));
        }
        actions.extend(self.go_idle("stopped", false));
        self.stopped = true;
        actions.push(Action::StopTimer(Timer::ConnectRetry));
        actions
    }

    fn has_connection(&self) -> bool {
        use SessionState::*;
        matches!(self.state, OpenSent | OpenConfirm | Established)
    }

    /// Events in OpenSent, OpenConfirm and Established.
    fn connected_event(&mut self, event: Event) -> Vec<Action> {
        match event {
            Event::Received(msg) => self.received(msg),
            Event::Malformed(e) => self.fail(e),
            Event::HoldTimerExpired => self.fail(MessageError::HoldTimerExpired),
            Event::KeepaliveTimerExpired if self.state != SessionState::OpenSent => {
                self.keepalive_sent()
            }
            Event::TcpFailed if self.state == SessionState::OpenSent => {
                // RFC 4271 8.2.2: back to Active, try again after ConnectRetry.
                self.negotiated = None;
                self.wait_active()
            }
            Event::TcpFailed => {
                let graceful = self.state == SessionState::Established
                    && self.negotiated.as_ref().is_some_and(|n| n.graceful_restart);
                self.go_idle("connection closed", graceful)
            }
            Event::CollisionLost => {
                let n = MessageError::from(Cease::ConnectionCollisionResolution).notification();
                let mut actions = vec![Action::Send(Message::Notification(n))];
                actions.extend(self.go_idle("connection collision", false));
                self.stopped = true;
                actions
            }
            Event::TcpConnected => vec![],
            _ => vec![],
        }
    }

    fn received(&mut self, msg: Message) -> Vec<Action> {
        use SessionState::*;
        match (self.state, msg) {
            (_, Message::Notification(n)) => self.notified(&n),
            (OpenSent, Message::Open(open)) => self.open_received(&open),
            (OpenConfirm, Message::Keepalive) => self.established(),
            (Established, Message::Keepalive) => self.hold_restart(),
            (Established, Message::Update(u)) => {
                let mut a = self.hold_restart();
                a.push(Action::UpdateReceived(u));
                a
            }
            (Established, Message::RouteRefresh(r)) => {
                let mut a = self.hold_restart();
                // RFC 2918 4: a family that was not negotiated is ignored.
                let negotiated = |afi| {
                    self.negotiated
                        .as_ref()
                        .is_some_and(|n| n.families.contains(&afi))
                };
                if let Some(afi) = r.family().filter(|&afi| negotiated(afi)) {
                    a.push(Action::RouteRefreshRequested(afi));
                }
                a
            }
            (OpenSent, _) => self.fail(FsmError::UnexpectedInOpenSent.into()),
            (OpenConfirm, _) => self.fail(FsmError::UnexpectedInOpenConfirm.into()),
            _ => self.fail(FsmError::UnexpectedInEstablished.into()),
        }
    }

    fn open_received(&mut self, open: &Open) -> Vec<Action> {
        let neg = match check_open(open, &self.cfg) {
            Ok(n) => n,
            Err(e) => return self.fail(e),
        };
        let mut actions = vec![Action::Send(Message::Keepalive)];
        actions.extend(self.timers_for(&neg));
        self.negotiated = Some(neg);
        self.state = SessionState::OpenConfirm;
        actions
    }

    fn timers_for(&self, neg: &Negotiated) -> Vec<Action> {
        if neg.hold_time == 0 {
            return vec![
                Action::StopTimer(Timer::Hold),
                Action::StopTimer(Timer::Keepalive),
            ];
        }
        vec![
            Action::StartTimer(Timer::Hold, secs(neg.hold_time)),
            Action::StartTimer(Timer::Keepalive, secs(neg.keepalive.max(1))),
        ]
    }

    fn established(&mut self) -> Vec<Action> {
        self.state = SessionState::Established;
        let mut actions = self.hold_restart();
        if let Some(n) = &self.negotiated {
            actions.push(Action::SessionUp(n.clone()));
        }
        actions
    }

    fn hold_restart(&self) -> Vec<Action> {
        match &self.negotiated {
            Some(n) if n.hold_time > 0 => {
                vec![Action::StartTimer(Timer::Hold, secs(n.hold_time))]
            }
            _ => vec![],
        }
    }

    fn keepalive_sent(&self) -> Vec<Action> {
        match &self.negotiated {
            Some(n) if n.hold_time > 0 => vec![
                Action::Send(Message::Keepalive),
                Action::StartTimer(Timer::Keepalive, secs(n.keepalive.max(1))),
            ],
            _ => vec![],
        }
    }

    fn notified(&mut self, n: &Notification) -> Vec<Action> {
        let reason = format!("notification received: {}", n.error());
        self.go_idle(&reason, false)
    }

    /// Send the NOTIFICATION for `e` and go down.
    fn fail(&mut self, e: MessageError) -> Vec<Action> {
        let mut actions = vec![Action::Send(Message::Notification(e.notification()))];
        actions.extend(self.go_idle(&format!("notification sent: {e}"), false));
        actions
    }

    /// Leave the connected states; restart after ConnectRetry unless stopped.
    fn go_idle(&mut self, reason: &str, graceful: bool) -> Vec<Action> {
        let mut actions = vec![
            Action::DropConnection,
            Action::StopTimer(Timer::Hold),
            Action::StopTimer(Timer::Keepalive),
        ];
        if self.state == SessionState::Established {
            actions.push(Action::SessionDown {
                reason: reason.to_string(),
                graceful,
            });
        }
        self.state = SessionState::Idle;
        self.negotiated = None;
        if !self.stopped {
            actions.push(Action::StartTimer(
                Timer::ConnectRetry,
                self.cfg.connect_retry,
            ));
        }
        actions
    }
}

fn secs(s: u16) -> Duration {
    Duration::from_secs(u64::from(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bgp::wire::RouteRefresh;

    fn cfg() -> FsmConfig {
        FsmConfig {
            local_asn: 64512,
            remote_asn: 64512,
            router_id: Ipv4Addr::new(10, 0, 0, 1),
            hold_time: 30,
            connect_retry: Duration::from_secs(1),
            passive: false,
            graceful_restart_time: Some(120),
        }
    }

    fn peer_open(hold: u16) -> Open {
        let mut c = cfg();
        c.router_id = Ipv4Addr::new(10, 0, 0, 2);
        c.hold_time = hold;
        c.open()
    }

    fn sent_notification(actions: &[Action]) -> Option<(u8, u8)> {
        actions.iter().find_map(|a| match a {
            Action::Send(Message::Notification(n)) => Some((n.code, n.subcode)),
            _ => None,
        })
    }

    fn established() -> Fsm {
        let mut f = Fsm::new(cfg());
        f.handle(Event::ManualStart);
        f.handle(Event::TcpConnected);
        f.handle(Event::Received(Message::Open(peer_open(90))));
        f.handle(Event::Received(Message::Keepalive));
        assert_eq!(f.state(), SessionState::Established);
        f
    }

    #[test]
    fn happy_path_reaches_established_with_negotiated_timers() {
        let mut f = Fsm::new(cfg());
        assert_eq!(f.handle(Event::ManualStart)[0], Action::Connect);
        assert_eq!(f.state(), SessionState::Connect);
        let a = f.handle(Event::TcpConnected);
        assert!(matches!(a[1], Action::Send(Message::Open(_))));
        assert_eq!(f.state(), SessionState::OpenSent);
        let a = f.handle(Event::Received(Message::Open(peer_open(90))));
        assert_eq!(a[0], Action::Send(Message::Keepalive));
        assert!(a.contains(&Action::StartTimer(Timer::Hold, Duration::from_secs(30))));
        assert!(a.contains(&Action::StartTimer(
            Timer::Keepalive,
            Duration::from_secs(10)
        )));
        assert_eq!(f.state(), SessionState::OpenConfirm);
        let a = f.handle(Event::Received(Message::Keepalive));
        let Some(Action::SessionUp(n)) = a.last() else {
            panic!("no SessionUp in {a:?}");
        };
        assert_eq!(n.peer_router_id, Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(n.families, vec![Afi::Ipv4, Afi::Ipv6]);
        assert!(n.graceful_restart && n.route_refresh && n.four_octet_as);
    }

    #[test]
    fn passive_start_waits_in_active_without_connecting() {
        let mut f = Fsm::new(FsmConfig {
            passive: true,
            ..cfg()
        });
        assert!(f.handle(Event::ManualStart).is_empty());
        assert_eq!(f.state(), SessionState::Active);
        assert!(f.handle(Event::ConnectRetryTimerExpired).is_empty());
        f.handle(Event::TcpConnected);
        assert_eq!(f.state(), SessionState::OpenSent);
    }

    #[test]
    fn failed_connect_goes_active_and_retries() {
        let mut f = Fsm::new(cfg());
        f.handle(Event::ManualStart);
        f.handle(Event::TcpFailed);
        assert_eq!(f.state(), SessionState::Active);
        let a = f.handle(Event::ConnectRetryTimerExpired);
        assert!(a.contains(&Action::Connect));
        assert_eq!(f.state(), SessionState::Connect);
    }

    #[test]
    fn zero_hold_time_means_no_timers() {
        let mut f = Fsm::new(cfg());
        f.handle(Event::ManualStart);
        f.handle(Event::TcpConnected);
        let a = f.handle(Event::Received(Message::Open(peer_open(0))));
        assert!(a.contains(&Action::StopTimer(Timer::Hold)));
        assert_eq!(f.negotiated().unwrap().hold_time, 0);
        assert!(f.handle(Event::KeepaliveTimerExpired).is_empty());
    }

    #[test]
    fn hold_times_one_and_two_are_refused() {
        for hold in [1, 2] {
            let mut f = Fsm::new(cfg());
            f.handle(Event::ManualStart);
            f.handle(Event::TcpConnected);
            let a = f.handle(Event::Received(Message::Open(peer_open(hold))));
            assert_eq!(sent_notification(&a), Some((2, 6)));
            assert_eq!(f.state(), SessionState::Idle);
        }
    }

    #[test]
    fn bad_peer_as_and_as_trans_without_capability_are_refused() {
        let mut open = peer_open(90);
        open.capabilities.four_octet_as = Some(64999);
        assert_eq!(check_open(&open, &cfg()), Err(OpenError::BadPeerAs.into()));
        let four = FsmConfig {
            remote_asn: 4_200_000_001,
            ..cfg()
        };
        let mut open = peer_open(90);
        open.my_as = crate::bgp::wire::AS_TRANS;
        open.capabilities.four_octet_as = None;
        assert_eq!(check_open(&open, &four), Err(OpenError::BadPeerAs.into()));
        open.capabilities.four_octet_as = Some(4_200_000_001);
        assert!(check_open(&open, &four).is_ok());
    }

    #[test]
    fn bgp_identifier_must_be_usable_and_differ_on_ibgp() {
        let mut open = peer_open(90);
        open.router_id = Ipv4Addr::UNSPECIFIED;
        assert_eq!(
            check_open(&open, &cfg()),
            Err(OpenError::BadBgpIdentifier.into())
        );
        open.router_id = cfg().router_id;
        assert_eq!(
            check_open(&open, &cfg()),
            Err(OpenError::BadBgpIdentifier.into())
        );
    }

    #[test]
    fn peer_without_multiprotocol_gets_ipv4_only() {
        let mut open = peer_open(90);
        open.capabilities.multiprotocol.clear();
        assert_eq!(check_open(&open, &cfg()).unwrap().families, vec![Afi::Ipv4]);
    }

    #[test]
    fn keepalive_timer_sends_keepalive_and_rearms() {
        let mut f = established();
        let a = f.handle(Event::KeepaliveTimerExpired);
        assert_eq!(
            a,
            vec![
                Action::Send(Message::Keepalive),
                Action::StartTimer(Timer::Keepalive, Duration::from_secs(10))
            ]
        );
    }

    #[test]
    fn hold_expiry_sends_4_0_and_is_not_graceful() {
        let mut f = established();
        let a = f.handle(Event::HoldTimerExpired);
        assert_eq!(sent_notification(&a), Some((4, 0)));
        assert!(a.contains(&Action::SessionDown {
            reason: "notification sent: hold timer expired".into(),
            graceful: false
        }));
        assert!(a.contains(&Action::StartTimer(
            Timer::ConnectRetry,
            Duration::from_secs(1)
        )));
    }

    #[test]
    fn tcp_drop_with_graceful_restart_is_graceful() {
        let mut f = established();
        let a = f.handle(Event::TcpFailed);
        assert!(a
            .iter()
            .any(|a| matches!(a, Action::SessionDown { graceful: true, .. })));
        let mut c = cfg();
        c.graceful_restart_time = None;
        let mut f = Fsm::new(c);
        f.handle(Event::ManualStart);
        f.handle(Event::TcpConnected);
        f.handle(Event::Received(Message::Open(peer_open(90))));
        f.handle(Event::Received(Message::Keepalive));
        let a = f.handle(Event::TcpFailed);
        assert!(a.iter().any(|a| matches!(
            a,
            Action::SessionDown {
                graceful: false,
                ..
            }
        )));
    }

    #[test]
    fn unexpected_messages_are_fsm_errors_per_state() {
        let mut f = Fsm::new(cfg());
        f.handle(Event::ManualStart);
        f.handle(Event::TcpConnected);
        let a = f.handle(Event::Received(Message::Keepalive));
        assert_eq!(sent_notification(&a), Some((5, 1)));
        let mut f = Fsm::new(cfg());
        f.handle(Event::ManualStart);
        f.handle(Event::TcpConnected);
        f.handle(Event::Received(Message::Open(peer_open(90))));
        let a = f.handle(Event::Received(Message::Update(Update::default())));
        assert_eq!(sent_notification(&a), Some((5, 2)));
        let mut f = established();
        let a = f.handle(Event::Received(Message::Open(peer_open(90))));
        assert_eq!(sent_notification(&a), Some((5, 3)));
    }

    #[test]
    fn established_delivers_updates_and_route_refresh_requests() {
        let mut f = established();
        let a = f.handle(Event::Received(Message::Update(Update::end_of_rib(
            Afi::Ipv6,
        ))));
        assert_eq!(
            a.last(),
            Some(&Action::UpdateReceived(Update::end_of_rib(Afi::Ipv6)))
        );
        let a = f.handle(Event::Received(Message::RouteRefresh(RouteRefresh::new(
            Afi::Ipv6,
        ))));
        assert_eq!(a.last(), Some(&Action::RouteRefreshRequested(Afi::Ipv6)));
        let odd = RouteRefresh { afi: 25, safi: 70 };
        let a = f.handle(Event::Received(Message::RouteRefresh(odd)));
        assert!(!a
            .iter()
            .any(|a| matches!(a, Action::RouteRefreshRequested(_))));
    }

    #[test]
    fn notification_received_goes_idle_and_restarts_later() {
        let mut f = established();
        let n = MessageError::from(Cease::AdministrativeShutdown).notification();
        let a = f.handle(Event::Received(Message::Notification(n)));
        assert!(a.contains(&Action::DropConnection));
        assert_eq!(f.state(), SessionState::Idle);
        assert_eq!(
            f.handle(Event::ConnectRetryTimerExpired)[0],
            Action::Connect
        );
    }

    #[test]
    fn manual_stop_sends_cease_2_and_stays_down() {
        let mut f = established();
        let a = f.handle(Event::ManualStop);
        assert_eq!(sent_notification(&a), Some((6, 2)));
        assert!(a.iter().any(|a| matches!(a, Action::SessionDown { .. })));
        assert!(f.handle(Event::ConnectRetryTimerExpired).is_empty());
        assert_eq!(f.state(), SessionState::Idle);
    }

    #[test]
    fn collision_keeps_the_connection_opened_by_the_higher_identifier() {
        let low = Ipv4Addr::new(10, 0, 0, 1);
        let high = Ipv4Addr::new(10, 0, 0, 2);
        assert_eq!(collision_survivor(high, low), Direction::Outgoing);
        assert_eq!(collision_survivor(low, high), Direction::Incoming);
        let mut f = Fsm::new(cfg());
        f.handle(Event::ManualStart);
        f.handle(Event::TcpConnected);
        f.handle(Event::Received(Message::Open(peer_open(90))));
        let a = f.handle(Event::CollisionLost);
        assert_eq!(sent_notification(&a), Some((6, 7)));
        assert_eq!(f.state(), SessionState::Idle);
        assert!(f.handle(Event::ConnectRetryTimerExpired).is_empty());
    }
}
