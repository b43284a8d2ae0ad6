//! The import decision: whether a route a peer announced may enter the RIB (and so the
//! kernel), or why not. Pure; the core counts each rejection per peer and reason and
//! logs it once per peer and prefix ([`RejectionLog`]). A rejected route is never
//! installed, and it replaces what the peer announced before for its prefix (so it
//! also withdraws an earlier, acceptable path).
//!
//! Checked in this order, the first that fails names the reason:
//! 1. NEXT_HOP is one of this node's own addresses: RFC 4271 5.1.3 forbids sending
//!    such a route, and 9.1.2 excludes a route whose next hop cannot be resolved
//!    through another router; installed, it would route the prefix to the node itself.
//! 2. AS_PATH holds this node's AS: loop detection (RFC 4271 9.1.2). An empty AS_PATH
//!    (a route originated inside our AS, iBGP) holds no AS at all and passes.
//! 3. The prefix is one of this node's blocks, or inside one: a peer announcing it would
//!    take (part of) the node's own pods.
//!
//! Issue 14 adds to this module, with a per-peer argument to [`ImportPolicy::judge`]:
//! "a mesh node may announce only the blocks the store says it owns" (the store's claims
//! of the peer's node, a new [`Rejection`]) and the peers file's `accept` lists
//! (`PREFIX le N`, RFC 8212 for eBGP). A maximum prefix count is a session reset, not a
//! rejection, and belongs to the session.

use crate::bgp::Route;
use ipnetwork::IpNetwork;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use tracing::warn;

/// Why a received route is not installed. [`Rejection::name`] is the `reason` label of
/// `fjord_rejected_announcements_total{peer,reason}` and the key in `status --json`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rejection {
    /// NEXT_HOP is one of this node's addresses.
    OwnNextHop,
    /// AS_PATH holds this node's AS.
    AsPathLoop,
    /// The prefix is one of this node's blocks or inside one.
    OwnBlock,
}

impl Rejection {
    pub const ALL: [Rejection; 3] = [
        Rejection::OwnNextHop,
        Rejection::AsPathLoop,
        Rejection::OwnBlock,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Rejection::OwnNextHop => "own_next_hop",
            Rejection::AsPathLoop => "as_path_loop",
            Rejection::OwnBlock => "own_block",
        }
    }

    fn explanation(self) -> &'static str {
        match self {
            Rejection::OwnNextHop => "its next hop is this node's own address (RFC 4271 5.1.3)",
            Rejection::AsPathLoop => "its AS_PATH holds this node's AS: a loop (RFC 4271 9.1.2)",
            Rejection::OwnBlock => "it is this node's own block or inside one",
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the node knows about itself when it judges a route.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportPolicy {
    addresses: Vec<IpAddr>,
    asn: u32,
    blocks: Vec<IpNetwork>,
}

impl ImportPolicy {
    pub fn new(addresses: Vec<IpAddr>, asn: u32) -> ImportPolicy {
        ImportPolicy {
            addresses,
            asn,
            blocks: Vec::new(),
        }
    }

    /// The node's blocks changed (claimed or released).
    pub fn set_blocks(&mut self, blocks: &[IpNetwork]) {
        self.blocks = blocks.to_vec();
    }

    /// Accept, or reject with the reason.
    pub fn judge(&self, route: &Route) -> Result<(), Rejection> {
        if self.addresses.contains(&route.next_hop.to_canonical()) {
            return Err(Rejection::OwnNextHop);
        }
        if route.as_path.contains(&self.asn) {
            return Err(Rejection::AsPathLoop);
        }
        if self.blocks.iter().any(|b| covers(*b, route.prefix)) {
            return Err(Rejection::OwnBlock);
        }
        Ok(())
    }
}

/// Whether `prefix` is `block` or inside it.
pub(super) fn covers(block: IpNetwork, prefix: IpNetwork) -> bool {
    block.is_ipv4() == prefix.is_ipv4()
        && block.prefix() <= prefix.prefix()
        && block.contains(prefix.network())
}

/// Prefixes logged per peer at most: a peer announcing a million bad routes gets them
/// counted, not a million log lines or a million remembered prefixes.
pub const LOGGED_PER_PEER: usize = 1024;

/// Which rejections were logged already: one warning per peer and prefix.
#[derive(Debug, Default)]
pub struct RejectionLog {
    logged: HashMap<IpAddr, HashSet<IpNetwork>>,
}

impl RejectionLog {
    /// Logs the rejection the first time this peer sends this prefix.
    pub fn note(&mut self, peer: IpAddr, route: &Route, reason: Rejection) {
        let seen = self.logged.entry(peer).or_default();
        if seen.len() > LOGGED_PER_PEER || !seen.insert(route.prefix) {
            return;
        }
        if seen.len() > LOGGED_PER_PEER {
            warn!(%peer, limit = LOGGED_PER_PEER,
                "more rejected prefixes from this peer: they are counted, no longer logged");
            return;
        }
        warn!(%peer, prefix = %route.prefix, next_hop = %route.next_hop, reason = reason.name(),
            "route not installed: {}", reason.explanation());
    }

    /// The peer is gone: a new session with it logs its rejections again.
    pub fn forget(&mut self, peer: IpAddr) {
        self.logged.remove(&peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bgp::Origin;

    fn route(prefix: &str, next_hop: &str, as_path: &[u32]) -> Route {
        Route {
            prefix: prefix.parse().unwrap(),
            next_hop: next_hop.parse().unwrap(),
            origin: Origin::Igp,
            as_path: as_path.to_vec(),
            local_pref: None,
            med: None,
        }
    }

    fn node() -> ImportPolicy {
        let mut policy = ImportPolicy::new(
            vec!["10.0.0.1".parse().unwrap(), "fd00::1".parse().unwrap()],
            64512,
        );
        policy.set_blocks(&[
            "10.244.0.0/26".parse().unwrap(),
            "fd00:244::/122".parse().unwrap(),
        ]);
        policy
    }

    #[test]
    fn legitimate_routes_of_both_families_are_accepted() {
        let policy = node();
        assert_eq!(
            policy.judge(&route("10.244.0.64/26", "10.0.0.2", &[])),
            Ok(())
        );
        assert_eq!(
            policy.judge(&route("fd00:244::40/122", "fd00::2", &[])),
            Ok(())
        );
        assert_eq!(
            policy.judge(&route("198.51.100.0/24", "10.0.0.254", &[65001, 65002])),
            Ok(())
        );
        // A covering prefix (the whole pool) is not inside a block.
        assert_eq!(
            policy.judge(&route("10.244.0.0/16", "10.0.0.254", &[65001])),
            Ok(())
        );
    }

    #[test]
    fn the_nodes_own_addresses_as_next_hop_are_rejected() {
        let policy = node();
        assert_eq!(
            policy.judge(&route("10.98.1.0/24", "10.0.0.1", &[])),
            Err(Rejection::OwnNextHop)
        );
        assert_eq!(
            policy.judge(&route("fd00:98:1::/64", "fd00::1", &[])),
            Err(Rejection::OwnNextHop)
        );
        // An IPv4-mapped IPv6 next hop of the node is the node too.
        assert_eq!(
            policy.judge(&route("fd00:98:2::/64", "::ffff:10.0.0.1", &[])),
            Err(Rejection::OwnNextHop)
        );
    }

    #[test]
    fn the_nodes_own_as_anywhere_in_the_path_is_a_loop() {
        let policy = node();
        for path in [&[64512][..], &[65010, 64512], &[65010, 64512, 65020]] {
            assert_eq!(
                policy.judge(&route("10.98.2.0/24", "10.0.0.9", path)),
                Err(Rejection::AsPathLoop),
                "{path:?}"
            );
        }
        // iBGP-originated: an empty path is no loop.
        assert_eq!(
            policy.judge(&route("10.98.2.0/24", "10.0.0.9", &[])),
            Ok(())
        );
    }

    #[test]
    fn the_nodes_blocks_and_prefixes_inside_them_are_rejected() {
        let policy = node();
        for prefix in [
            "10.244.0.0/26",
            "10.244.0.0/27",
            "10.244.0.32/28",
            "10.244.0.63/32",
            "fd00:244::/122",
            "fd00:244::20/123",
        ] {
            assert_eq!(
                policy.judge(&route(prefix, "10.0.0.9", &[])),
                Err(Rejection::OwnBlock),
                "{prefix}"
            );
        }
        let mut released = node();
        released.set_blocks(&[]);
        assert_eq!(
            released.judge(&route("10.244.0.0/27", "10.0.0.9", &[])),
            Ok(())
        );
    }

    #[test]
    fn the_next_hop_is_judged_before_the_path_and_the_path_before_the_prefix() {
        let policy = node();
        assert_eq!(
            policy.judge(&route("10.244.0.0/27", "10.0.0.1", &[64512])),
            Err(Rejection::OwnNextHop)
        );
        assert_eq!(
            policy.judge(&route("10.244.0.0/27", "10.0.0.9", &[64512])),
            Err(Rejection::AsPathLoop)
        );
    }

    #[test]
    fn reasons_have_the_metric_label_names() {
        let names: Vec<&str> = Rejection::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(names, ["own_next_hop", "as_path_loop", "own_block"]);
    }

    #[test]
    fn the_log_remembers_a_bounded_number_of_prefixes_per_peer() {
        let mut log = RejectionLog::default();
        let peer: IpAddr = "10.0.0.9".parse().unwrap();
        for i in 0..(LOGGED_PER_PEER as u32 + 100) {
            let prefix = format!("10.{}.{}.0/24", i / 256, i % 256);
            log.note(peer, &route(&prefix, "10.0.0.9", &[]), Rejection::OwnBlock);
        }
        assert_eq!(log.logged[&peer].len(), LOGGED_PER_PEER + 1);
        log.forget(peer);
        assert!(log.logged.is_empty());
    }
}
