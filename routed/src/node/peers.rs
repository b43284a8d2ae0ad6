//! The core's sessions: which to start and stop, what each is told to announce, and
//! what their events mean for the RIB (import, graceful restart, End-of-RIB).

use super::device::list;
use super::import::covers;
use super::mesh::{DesiredPeer, PeerKind};
use super::{Effect, NodeCore, Timer};
use crate::bgp::wire::DEFAULT_LOCAL_PREF;
use crate::bgp::{self, PeerCommand, PeerEvent, Route, SessionState};
use crate::rib::{Family, Path, PeerKey};
use crate::status::{self, PeerStatus};
use ipnetwork::IpNetwork;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::SystemTime;
use tracing::{debug, info, warn};

/// One peer as the core keeps it.
pub(super) struct PeerEntry {
    pub(super) desired: DesiredPeer,
    state: SessionState,
    /// The last state change; `None` before the session reported one.
    since: Option<SystemTime>,
    /// The BGP Identifier of its last Established session.
    router_id: Option<Ipv4Addr>,
    /// A graceful restart is under way: its stale routes go at [`Timer::StaleRoutes`].
    stale_timer: bool,
    /// What the session was told to announce.
    exported: BTreeMap<IpNetwork, Route>,
}

impl PeerEntry {
    fn key(&self) -> Option<PeerKey> {
        self.router_id.map(|router_id| PeerKey {
            address: self.desired.address,
            router_id,
        })
    }
}

impl NodeCore {
    /// The node's blocks changed: every peer announces the new set, and the RIB never
    /// installs a route for one of them.
    pub(super) fn set_blocks(&mut self, blocks: Vec<IpNetwork>) {
        if blocks == self.blocks {
            return;
        }
        let added: Vec<IpNetwork> = blocks
            .iter()
            .filter(|b| !self.blocks.contains(b))
            .copied()
            .collect();
        let removed: Vec<IpNetwork> = self
            .blocks
            .iter()
            .filter(|b| !blocks.contains(b))
            .copied()
            .collect();
        info!(node = %self.config.node_name, added = %list(&added), removed = %list(&removed),
            "the node's blocks changed");
        self.import.set_blocks(&blocks);
        self.blocks = blocks;
        let addresses: Vec<IpAddr> = self.peers.keys().copied().collect();
        for address in addresses {
            self.export_to(address);
        }
        let local = self.blocks.iter().copied().collect();
        let changes = self.rib.local_prefixes(local);
        self.pending.extend(changes);
        self.withdraw_inside(&added);
    }

    /// Routes learned inside a block before this node claimed it: from now on they
    /// would take part of its pods (the RIB itself hides only the exact block), so every
    /// peer's path to them is withdrawn, as [`super::import`] rejects them from now on.
    fn withdraw_inside(&mut self, added: &[IpNetwork]) {
        let inside: Vec<IpNetwork> = self
            .rib
            .installed()
            .map(|(prefix, _)| prefix)
            .filter(|p| added.iter().any(|b| b != p && covers(*b, *p)))
            .collect();
        if inside.is_empty() {
            return;
        }
        warn!(node = %self.config.node_name, prefixes = %list(&inside),
            "routes learned inside a block this node now owns: withdrawn");
        let keys: Vec<PeerKey> = self.peers.values().filter_map(PeerEntry::key).collect();
        for key in keys {
            let changes = self.rib.update(key, &[], &inside);
            self.pending.extend(changes);
        }
    }

    pub(super) fn start_peer(&mut self, desired: DesiredPeer) {
        info!(peer = %desired.address, asn = desired.asn, kind = %desired.kind, "starting session");
        let config = &self.config;
        let session = bgp::PeerConfig {
            port: config.listen_port,
            hold_time: config.hold_time,
            connect_retry: config.connect_retry,
            graceful_restart_time: (config.graceful_restart_time > 0)
                .then_some(config.graceful_restart_time),
            ..bgp::PeerConfig::new(desired.address, config.asn, desired.asn, config.router_id)
        };
        self.effects.push(Effect::StartSession(session));
        let address = desired.address;
        self.peers.insert(
            address,
            PeerEntry {
                desired,
                state: SessionState::Idle,
                since: None,
                router_id: None,
                stale_timer: false,
                exported: BTreeMap::new(),
            },
        );
        self.export_to(address);
    }

    pub(super) fn stop_peer(&mut self, address: IpAddr) {
        let Some(peer) = self.peers.remove(&address) else {
            return;
        };
        info!(peer = %address, "stopping session: the peer left the registry or the configuration");
        self.effects.push(Effect::StopSession { peer: address });
        if peer.stale_timer {
            self.effects
                .push(Effect::CancelTimer(Timer::StaleRoutes(address)));
        }
        self.rejections.forget(address);
        if let Some(key) = peer.key() {
            let changes = self.rib.peer_down(key);
            self.pending.extend(changes);
        }
    }

    /// What this node announces to a peer: its blocks, next hop its address of the
    /// block's family. Issue 14 adds Service addresses for external peers here, and the
    /// peers file's `export`.
    fn exports_for(&self, _peer: &PeerEntry) -> BTreeMap<IpNetwork, Route> {
        self.blocks
            .iter()
            .filter_map(|&block| {
                let next_hop = if block.is_ipv4() {
                    IpAddr::V4(self.config.router_id)
                } else {
                    self.config.address_v6()?
                };
                Some((block, originated(block, next_hop)))
            })
            .collect()
    }

    /// Tells the session what changed in its exports: new routes, then withdrawals.
    fn export_to(&mut self, address: IpAddr) {
        let Some(peer) = self.peers.get(&address) else {
            return;
        };
        let want = self.exports_for(peer);
        let announce: Vec<Route> = want
            .values()
            .filter(|r| peer.exported.get(&r.prefix) != Some(r))
            .cloned()
            .collect();
        let withdraw: Vec<IpNetwork> = peer
            .exported
            .keys()
            .filter(|p| !want.contains_key(p))
            .copied()
            .collect();
        if !announce.is_empty() {
            self.tell(address, PeerCommand::Announce(announce));
        }
        if !withdraw.is_empty() {
            self.tell(address, PeerCommand::Withdraw(withdraw));
        }
        if let Some(peer) = self.peers.get_mut(&address) {
            peer.exported = want;
        }
    }

    fn tell(&mut self, peer: IpAddr, command: PeerCommand) {
        self.effects.push(Effect::Session { peer, command });
    }

    pub(super) fn peer_event(&mut self, event: PeerEvent) {
        match event {
            PeerEvent::StateChanged { peer, state, at } => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    debug!(%peer, %state, "session state");
                    p.state = state;
                    p.since = Some(at);
                }
            }
            PeerEvent::Established {
                peer,
                peer_router_id,
                families,
                ..
            } => self.established(peer, peer_router_id, &families),
            PeerEvent::Update {
                peer,
                announced,
                withdrawn,
            } => self.update(peer, announced, withdrawn),
            PeerEvent::EndOfRib { peer, afi } => {
                let Some((key, _)) = self.peer_key(peer) else {
                    return;
                };
                let family = match afi {
                    bgp::Afi::Ipv4 => Family::Ipv4,
                    bgp::Afi::Ipv6 => Family::Ipv6,
                };
                let changes = self.rib.end_of_rib(key, family);
                self.pending.extend(changes);
            }
            PeerEvent::Down {
                peer,
                reason,
                graceful,
            } => self.peer_down(peer, &reason, graceful),
        }
    }

    fn established(&mut self, address: IpAddr, router_id: Ipv4Addr, families: &[bgp::Afi]) {
        let Some(peer) = self.peers.get_mut(&address) else {
            return;
        };
        let families: Vec<String> = families.iter().map(|f| format!("{f:?}")).collect();
        info!(peer = %address, %router_id, families = %families.join(", "), "session established");
        let previous = peer.key();
        peer.router_id = Some(router_id);
        // Its stale routes now go with its End-of-RIB (RFC 4724 4.2), not by the timer.
        if std::mem::take(&mut peer.stale_timer) {
            self.effects
                .push(Effect::CancelTimer(Timer::StaleRoutes(address)));
        }
        // The peer came back under another identity: its old paths are not stale paths
        // of this session and nothing would sweep them otherwise.
        if let Some(old) = previous.filter(|old| old.router_id != router_id) {
            let changes = self.rib.peer_down(old);
            self.pending.extend(changes);
        }
    }

    /// An UPDATE: each announced route judged ([`super::import`]); a rejected one is
    /// counted, logged once, and withdraws whatever the peer announced for its prefix.
    fn update(&mut self, address: IpAddr, announced: Vec<Route>, mut withdrawn: Vec<IpNetwork>) {
        let Some((key, ebgp)) = self.peer_key(address) else {
            return;
        };
        let mut paths = Vec::with_capacity(announced.len());
        for route in &announced {
            match self.import.judge(route) {
                Ok(()) => paths.push(to_path(route, ebgp)),
                Err(reason) => {
                    self.counters.reject(address, reason);
                    self.rejections.note(address, route, reason);
                    withdrawn.push(route.prefix);
                }
            }
        }
        let changes = self.rib.update(key, &paths, &withdrawn);
        self.pending.extend(changes);
    }

    fn peer_key(&self, address: IpAddr) -> Option<(PeerKey, bool)> {
        let peer = self.peers.get(&address)?;
        Some((peer.key()?, peer.desired.asn != self.config.asn))
    }

    /// A session ended. A peer that negotiated graceful restart and only lost its TCP
    /// session keeps its routes (stale) for the restart time (RFC 4724, receiving side).
    fn peer_down(&mut self, address: IpAddr, reason: &str, graceful: bool) {
        let restart = self.config.restart_time();
        let Some(peer) = self.peers.get_mut(&address) else {
            return;
        };
        let Some(key) = peer.key() else {
            return;
        };
        if !graceful || restart.is_zero() {
            warn!(peer = %address, reason, "session down: withdrawing its routes");
            let changes = self.rib.peer_down(key);
            self.pending.extend(changes);
            return;
        }
        warn!(peer = %address, reason, seconds = restart.as_secs(),
            "session down, peer may be restarting: keeping its routes as stale");
        peer.stale_timer = true;
        self.rib.mark_stale(key);
        self.set_timer(Timer::StaleRoutes(address), restart);
    }

    pub(super) fn stale_expired(&mut self, address: IpAddr) {
        let Some(peer) = self.peers.get_mut(&address) else {
            return;
        };
        // A timer of a restart the peer has come back from since is void.
        if !std::mem::take(&mut peer.stale_timer) {
            return;
        }
        let Some(key) = peer.key() else {
            return;
        };
        warn!(peer = %address, "peer did not come back within the restart time: withdrawing its stale routes");
        let changes = self.rib.sweep_stale(key);
        self.pending.extend(changes);
    }

    pub(super) fn peer_status(&self, peer: &PeerEntry, now: SystemTime) -> PeerStatus {
        let (peer_type, node) = match &peer.desired.kind {
            PeerKind::Mesh { node } => (status::MESH_PEER, Some(node.clone())),
            PeerKind::External => (status::EXTERNAL_PEER, None),
        };
        let address = peer.desired.address;
        let established = peer.state == SessionState::Established;
        PeerStatus {
            address,
            peer_type: peer_type.into(),
            node,
            asn: peer.desired.asn,
            state: peer.state.to_string(),
            since: peer
                .since
                .map_or_else(|| "-".into(), |at| status::since_text(at, now)),
            since_unix: peer.since.map_or(0, status::unix_seconds),
            datapath: self.encap.peer_datapath(address).to_string(),
            routes_in: peer.key().map_or(0, |k| self.rib.routes_in(&k)),
            routes_out: if established { peer.exported.len() } else { 0 },
            rejected: self
                .counters
                .rejected_of(address)
                .into_iter()
                .map(|(reason, n)| (reason.name().to_string(), n))
                .collect(),
        }
    }
}

/// A route this node originates: one of its blocks.
fn originated(prefix: IpNetwork, next_hop: IpAddr) -> Route {
    Route {
        prefix,
        next_hop,
        origin: bgp::Origin::Igp,
        as_path: Vec::new(),
        local_pref: Some(DEFAULT_LOCAL_PREF),
        med: None,
    }
}

/// A received route as the RIB's path: only what best-path selection reads.
pub(super) fn to_path(route: &Route, ebgp: bool) -> Path {
    Path {
        prefix: route.prefix,
        next_hop: route.next_hop,
        origin: match route.origin {
            bgp::Origin::Igp => 0,
            bgp::Origin::Egp => 1,
            bgp::Origin::Incomplete => 2,
        },
        as_path_len: route.as_path.len(),
        local_pref: route.local_pref,
        med: route.med,
        neighbour_as: route.as_path.first().copied(),
        ebgp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn received_paths_keep_what_best_path_reads() {
        let route = Route {
            prefix: "10.1.0.0/26".parse().unwrap(),
            next_hop: "10.0.0.2".parse().unwrap(),
            origin: bgp::Origin::Incomplete,
            as_path: vec![65001, 65002],
            local_pref: None,
            med: Some(5),
        };
        let path = to_path(&route, true);
        assert_eq!((path.origin, path.as_path_len), (2, 2));
        assert_eq!(path.neighbour_as, Some(65001));
        assert_eq!(path.med, Some(5));
        assert!(path.ebgp);
    }
}
