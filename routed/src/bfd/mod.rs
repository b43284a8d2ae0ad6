//! BFD (RFC 5880 asynchronous mode, RFC 5881 single hop): sub-second detection that a
//! peer or the path to it failed, for the BGP sessions of the mesh and of outside peers.
//!
//! - [`packet`]: the Control packet, encode/decode, and RFC 5880 6.8.6's reception checks.
//! - [`fsm`]: one session's state machine, a pure value fed events (the model is
//!   `bgp/fsm.rs`): the three-way handshake, detection time, Poll/Final, jitter.
//! - [`failure`]: failure or restart, what a peer's routes become when BFD goes down or
//!   TCP closes (RFC 5882 4.3), as one pure function.
//! - [`socket`]: the UDP sockets of RFC 5881 (port 3784, TTL 255 both ways).
//! - [`service`]: the one tokio task that runs every session ([`BfdHandle`],
//!   [`BfdWatch`]).
//!
//! docs/bfd.md is the operator's view: timers, states, FRR and BIRD configurations.
//!
//! How the daemon uses it (one handle for the node, one watch per peer):
//!
//! 1. At start, on its runtime: `let bfd = BfdHandle::spawn()?` (binds UDP 3784; fails
//!    when another BFD daemon holds it).
//! 2. For each peer with BFD on (every mesh peer on a connected subnet, as single hop
//!    BFD needs; an outside peer with `bfd: true`):
//!    `let watch = bfd.add(SessionSpec { peer, local, timers: Timers::default() }).await?`,
//!    `local` being the BGP session's local address. `add` is idempotent and applies
//!    new timers to a running session; `bfd.remove(peer)` when the peer goes away.
//! 3. Beside the peer's BGP events: `watch.next().await` yields `BfdChange::Up` and
//!    `BfdChange::Down(down)`; feed `Signal::BfdDown(down)` and the TCP close
//!    (`Signal::TcpClosed { graceful_restart_negotiated }`) to [`route_fate`] with the
//!    peer's [`BgpPhase`]: `WithdrawNow` ends the BGP session as not graceful (as a hold
//!    timer expiry does), `KeepStale` is graceful restart, `Unchanged` is nothing.
//! 4. `bfd.status().await` gives each session's [`PeerStatus`] for `status --json`.
//! 5. On SIGTERM, before exiting: `bfd.shutdown().await` (AdminDown to every peer).

pub mod failure;
pub mod fsm;
pub mod packet;
pub mod service;
pub mod socket;

use std::net::{IpAddr, SocketAddr};

pub use failure::{route_fate, BfdDown, BgpPhase, RouteFate, Signal};
pub use fsm::Timers;
pub use packet::{ControlPacket, Diagnostic, PacketError, State};
pub use service::{BfdChange, BfdHandle, BfdWatch, PeerStatus, SessionSpec, WatchedState};

/// Errors of the BFD shell (packet errors are [`PacketError`]: they discard a packet,
/// they never fail a call).
#[derive(Debug, thiserror::Error)]
pub enum BfdError {
    #[error("cannot open the BFD socket on {address}: {source} (is another BFD daemon, such as FRR's bfdd or BIRD, running on this node?)")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot register the BFD socket with the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("invalid BFD timers: {0}")]
    InvalidTimers(String),
    #[error("BFD peer {peer} and local address {local} are of different families")]
    FamilyMismatch { peer: IpAddr, local: IpAddr },
    #[error("the BFD task has stopped")]
    Stopped,
}

impl BfdError {
    /// The address family is not there at all (IPv6 disabled in the namespace).
    pub fn is_family_unsupported(&self) -> bool {
        matches!(self, BfdError::Bind { source, .. }
            if source.raw_os_error() == Some(libc::EAFNOSUPPORT))
    }
}

/// A seed from the kernel's random source for discriminators and jitter (RFC 5880
/// 6.8.1 wants discriminators random); the clock if getrandom fails.
fn random_seed() -> u64 {
    let mut seed = [0u8; 8];
    // SAFETY: getrandom writes at most `seed.len()` bytes into the buffer it is given,
    // which lives for the whole call.
    let got = unsafe { libc::getrandom(seed.as_mut_ptr().cast(), seed.len(), 0) };
    if got == seed.len() as isize {
        return u64::from_ne_bytes(seed);
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0x5eed, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id())
}
