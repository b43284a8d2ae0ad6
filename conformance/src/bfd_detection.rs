//! Failure detection measured: how long after the path to a peer is cut (its packets
//! dropped on arrival, [`InputDrop`]) a side declares the session down. Used by the BFD
//! interop tests (conformance/tests/bfd.rs) and by `fjord-bench bfd`.

use crate::bfd_link::{BfdLink, FjordBfd, InputDrop};
use crate::bfd_peers::BfdPeer;
use fjord_routed::bfd::{BfdChange, Diagnostic};
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

/// A cut is seen within this: 300 ms x 3 is 900 ms after the last packet, plus the
/// scheduling of a shared, loaded machine.
pub const DETECTED_WITHIN: Duration = Duration::from_secs(3);
/// Back Up after a restore: a Down session sends at 1 s (RFC 5880 6.8.3), then the
/// three-way handshake.
pub const BACK_UP_WITHIN: Duration = Duration::from_secs(10);

/// One cut and restore.
#[derive(Clone, Debug)]
pub struct Trial {
    /// Per session, in the order the addresses were given: cut to down (for a polled
    /// peer, to the end of the first poll that showed it down).
    pub detected: Vec<Duration>,
    /// Per session, when it was last seen still up: the detection happened after this.
    /// The same as `detected` where the change is reported, not polled (Fjord's side).
    pub still_up_at: Vec<Duration>,
    /// Restore to every session Up on both sides.
    pub back_up: Duration,
}

/// Waits 0.5-1 s, differently each time: a trial that cut right after the session
/// came Up would cut just after a packet arrived (the one that brought it Up), and
/// every figure would sit near the full 900 ms. A failure comes at any moment.
fn settle() {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    std::thread::sleep(Duration::from_millis(500 + u64::from(nanos % 500)));
}

fn is_down(c: &BfdChange) -> bool {
    matches!(c, BfdChange::Down(_))
}

fn is_up(c: &BfdChange) -> bool {
    matches!(c, BfdChange::Up)
}

/// Waits until Fjord has every session in `fjord_peers` Up and `peer` has every one of
/// `peer_neighbors` up.
pub fn wait_all_up(
    fjord: &FjordBfd,
    fjord_peers: &[IpAddr],
    peer: &dyn BfdPeer,
    peer_neighbors: &[IpAddr],
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    for &p in fjord_peers {
        let left = deadline.saturating_duration_since(Instant::now());
        if fjord
            .status_of(p)
            .is_some_and(|s| s.state.to_string() == "Up")
        {
            continue;
        }
        fjord.wait_for(p, left, is_up);
    }
    for &n in peer_neighbors {
        let left = deadline.saturating_duration_since(Instant::now());
        peer.wait_state(n, left, &|s| s == "up");
    }
}

/// Fjord (side A) detects the cut: BFD arriving at A is dropped, and A's detection
/// timer must expire (diagnostic 1) for each of `fjord_peers`.
pub fn fjord_detects(
    link: &BfdLink,
    fjord: &FjordBfd,
    fjord_peers: &[IpAddr],
    peer: &dyn BfdPeer,
    peer_neighbors: &[IpAddr],
) -> Trial {
    settle();
    fjord.drain();
    let cut = InputDrop::bfd(&link.a);
    let cut_at = Instant::now();
    let downs = fjord.wait_for_each(fjord_peers, DETECTED_WITHIN, is_down);
    for d in &downs {
        let BfdChange::Down(down) = d.change else {
            unreachable!()
        };
        assert_eq!(
            down.diagnostic,
            Diagnostic::ControlDetectionTimeExpired,
            "Fjord's session to {} went down for another reason than its detection time",
            d.peer
        );
    }
    let detected: Vec<Duration> = downs.iter().map(|d| d.at - cut_at).collect();
    let restored_at = Instant::now();
    cut.restore();
    wait_all_up(fjord, fjord_peers, peer, peer_neighbors, BACK_UP_WITHIN);
    Trial {
        still_up_at: detected.clone(),
        detected,
        back_up: restored_at.elapsed(),
    }
}

/// The peer (side B) detects the cut: BFD arriving at B is dropped; polled through the
/// peer's own CLI, so each detection is known to lie between the start of the last poll
/// that still said up and the end of the first that did not (a CLI call takes tens of
/// milliseconds on a loaded machine). Fjord must then hear the peer's Down (diag 3).
pub fn peer_detects(
    link: &BfdLink,
    fjord: &FjordBfd,
    fjord_peers: &[IpAddr],
    peer: &dyn BfdPeer,
    peer_neighbors: &[IpAddr],
) -> Trial {
    settle();
    fjord.drain();
    let cut = InputDrop::bfd(&link.b);
    let cut_at = Instant::now();
    let cut_wall = SystemTime::now();
    let mut seen: Vec<Option<Duration>> = vec![None; peer_neighbors.len()];
    let mut still_up_at = vec![Duration::ZERO; peer_neighbors.len()];
    while seen.iter().any(Option::is_none) {
        let poll_start = cut_at.elapsed();
        let states = peer.states(peer_neighbors);
        let poll_end = cut_at.elapsed();
        for ((slot, up_at), state) in seen.iter_mut().zip(&mut still_up_at).zip(states) {
            match state {
                Ok(s) if s == "up" => *up_at = poll_start,
                Ok(_) if slot.is_none() => *slot = Some(poll_end),
                _ => {}
            }
        }
        assert!(
            cut_at.elapsed() < DETECTED_WITHIN,
            "{} did not see the cut within {DETECTED_WITHIN:?}: {:?}\n{}",
            peer.kind(),
            peer_neighbors
                .iter()
                .map(|n| peer.state(*n))
                .collect::<Vec<_>>(),
            peer.log_tail()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let told = fjord.wait_for_each(fjord_peers, DETECTED_WITHIN, is_down);
    for d in &told {
        let BfdChange::Down(down) = d.change else {
            unreachable!()
        };
        assert_eq!(
            down.diagnostic,
            Diagnostic::NeighborSignaledSessionDown,
            "Fjord's session to {} should have heard the peer's Down",
            d.peer
        );
    }
    let restored_at = Instant::now();
    cut.restore();
    wait_all_up(fjord, fjord_peers, peer, peer_neighbors, BACK_UP_WITHIN);
    let mut detected: Vec<Duration> = seen.into_iter().flatten().collect();
    // The peer's own log, to the millisecond, where it says when: better than the poll.
    for (i, &n) in peer_neighbors.iter().enumerate() {
        let logged = peer.logged_down(n, cut_wall);
        if let Some(exact) = logged.and_then(|t| t.duration_since(cut_wall).ok()) {
            if exact >= still_up_at[i] && exact <= detected[i] {
                detected[i] = exact;
                still_up_at[i] = exact;
            }
        }
    }
    Trial {
        detected,
        still_up_at,
        back_up: restored_at.elapsed(),
    }
}
