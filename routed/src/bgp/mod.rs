//! BGP: the wire format, the RFC 4271 state machine and the per-peer session tasks.
//!
//! - [`wire`]: Fjord's message types and their encoding, through the pinned
//!   `rustbgpd-wire` codec (docs/decisions/0002-bgp-codec.md); RFC 7606 outcomes.
//! - [`error`]: RFC 4271 section 6 errors, each one NOTIFICATION away.
//! - [`fsm`]: the RFC 4271 state machine as a pure value fed events.
//! - [`adj_rib_out`]: what a session announced, and packing routes into UPDATEs.
//! - [`session`]: the tokio task per peer ([`spawn_peer`], [`PeerHandle`]).
//! - [`listener`]: accepting connections and refusing unknown addresses.

pub mod adj_rib_out;
pub mod error;
pub mod fsm;
pub mod listener;
pub mod session;
pub mod wire;

pub use error::{AttrAction, BgpError, MessageError};
pub use fsm::SessionState;
pub use listener::{Listener, Peers};
pub use session::{spawn_peer, PeerCommand, PeerConfig, PeerEvent, PeerHandle};
pub use wire::{Afi, GracefulRestartCap, Origin, Route};
