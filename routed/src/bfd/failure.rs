//! Failure or restart: what a BGP peer's routes become when its TCP session closes or
//! its BFD session goes down, as one pure function ([`route_fate`]).
//!
//! The rule (RFC 5882 section 4.3, and the distinction BIRD's `bfd graceful` switch
//! makes by configuration; Fjord makes it from the order of events):
//!
//! - A daemon that restarts is a process that exits: its kernel closes the TCP
//!   connection at once (FIN, or RST with unread data), while its BFD packets merely stop
//!   and the peer notices only after the Detection Time (900 ms at 300 ms x 3). So the
//!   TCP session closes *first*: graceful restart (RFC 4724) keeps the routes as stale,
//!   and the BFD down that follows changes nothing.
//! - A node or link that fails closes nothing: BFD goes down while the BGP session is
//!   still Established. That is a forwarding failure: every route is withdrawn at once,
//!   graceful restart negotiated or not (restarting would keep routes into a black hole
//!   for the restart time).
//! - A BFD session the peer took down on purpose (it sent AdminDown, RFC 5880 6.8.16)
//!   or that we took down ourselves is no failure of the path (RFC 5882 3.2): nothing
//!   changes, and the TCP session decides as usual. Fjord's daemon sends AdminDown when
//!   it stops on SIGTERM, so peers that follow 3.2 (FRR, BIRD) do not read its restart
//!   as a failure even before its TCP close arrives.
//! - BFD that never came Up (the peer runs none: BFD configured on one side only)
//!   never goes down, so it never reaches this function: the session runs on its hold
//!   timer alone.

use super::packet::{Diagnostic, State};

/// Where the BGP session with the peer stands when the signal arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BgpPhase {
    /// Established: the peer's routes are in use.
    Established,
    /// The TCP session closed and graceful restart keeps the peer's routes as stale
    /// until its restart time or End-of-RIB.
    Restarting,
    /// No session and no routes from the peer.
    Down,
}

/// How a BFD session left Up (see [`crate::bfd::BfdChange`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BfdDown {
    /// bfd.LocalDiag: why our side went down.
    pub diagnostic: Diagnostic,
    /// The state the peer last sent.
    pub remote_state: State,
}

impl BfdDown {
    /// Whether this down says the path failed: not when either side took the session
    /// down administratively (RFC 5882 3.2).
    pub fn is_path_failure(&self) -> bool {
        self.remote_state != State::AdminDown && self.diagnostic != Diagnostic::AdministrativelyDown
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// The peer's TCP connection closed (FIN or RST) with the BGP session Established.
    TcpClosed {
        graceful_restart_negotiated: bool,
    },
    BfdDown(BfdDown),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteFate {
    /// Withdraw every route learned from the peer now and close its BGP session (not
    /// as a graceful restart).
    WithdrawNow,
    /// Keep the peer's routes as stale and run the restart timer (RFC 4724 helper).
    KeepStale,
    /// Nothing changes.
    Unchanged,
}

pub fn route_fate(phase: BgpPhase, signal: Signal) -> RouteFate {
    match (phase, signal) {
        (
            BgpPhase::Established,
            Signal::TcpClosed {
                graceful_restart_negotiated: true,
            },
        ) => RouteFate::KeepStale,
        (BgpPhase::Established, Signal::TcpClosed { .. }) => RouteFate::WithdrawNow,
        (BgpPhase::Established, Signal::BfdDown(down)) if down.is_path_failure() => {
            RouteFate::WithdrawNow
        }
        // The TCP session closed first: a restart, whatever BFD says afterwards.
        (BgpPhase::Restarting, _) => RouteFate::KeepStale,
        _ => RouteFate::Unchanged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn down(diagnostic: Diagnostic, remote_state: State) -> Signal {
        Signal::BfdDown(BfdDown {
            diagnostic,
            remote_state,
        })
    }

    const TIMEOUT: Diagnostic = Diagnostic::ControlDetectionTimeExpired;
    const SIGNALED: Diagnostic = Diagnostic::NeighborSignaledSessionDown;

    #[test]
    fn bfd_down_first_is_a_failure_and_withdraws_even_with_graceful_restart() {
        // Node dead or link cut: our detection timer expires, or the peer saw it first
        // and tells us Down.
        assert_eq!(
            route_fate(BgpPhase::Established, down(TIMEOUT, State::Down)),
            RouteFate::WithdrawNow
        );
        assert_eq!(
            route_fate(BgpPhase::Established, down(SIGNALED, State::Down)),
            RouteFate::WithdrawNow
        );
    }

    #[test]
    fn tcp_closed_first_is_a_restart_and_bfd_down_afterwards_keeps_it_one() {
        let closed = Signal::TcpClosed {
            graceful_restart_negotiated: true,
        };
        assert_eq!(
            route_fate(BgpPhase::Established, closed),
            RouteFate::KeepStale
        );
        for later in [
            down(TIMEOUT, State::Down),
            down(SIGNALED, State::Down),
            down(SIGNALED, State::AdminDown),
        ] {
            assert_eq!(
                route_fate(BgpPhase::Restarting, later),
                RouteFate::KeepStale
            );
        }
    }

    #[test]
    fn tcp_closed_without_graceful_restart_withdraws() {
        let closed = Signal::TcpClosed {
            graceful_restart_negotiated: false,
        };
        assert_eq!(
            route_fate(BgpPhase::Established, closed),
            RouteFate::WithdrawNow
        );
    }

    #[test]
    fn admin_down_from_either_side_is_not_a_failure() {
        // The peer's daemon stops and says AdminDown before its TCP close arrives.
        assert_eq!(
            route_fate(BgpPhase::Established, down(SIGNALED, State::AdminDown)),
            RouteFate::Unchanged
        );
        // We took BFD down ourselves (BFD turned off for the peer).
        assert_eq!(
            route_fate(
                BgpPhase::Established,
                down(Diagnostic::AdministrativelyDown, State::Up)
            ),
            RouteFate::Unchanged
        );
    }

    #[test]
    fn nothing_to_do_without_a_session() {
        assert_eq!(
            route_fate(BgpPhase::Down, down(TIMEOUT, State::Down)),
            RouteFate::Unchanged
        );
    }
}
