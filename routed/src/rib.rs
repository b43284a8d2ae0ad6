//! The routing information base: every peer's Adj-RIB-In and the Loc-RIB computed from
//! them. Pure data, no I/O: every operation returns the Loc-RIB changes it caused, so the
//! kernel layer applies differences only.
//!
//! Memory is what shapes the layout. A cluster table is 100,000 prefixes with one or two
//! paths each, and a path's attributes are almost always shared (every block a node
//! announces carries the same next hop, LOCAL_PREF and AS_PATH length). So attribute
//! sets are interned and reference-counted, a path is 8 bytes (peer slot + attribute id +
//! stale bit), a prefix's first path sits in a 16-byte hash bucket beside its 5-byte IPv4
//! key and only further paths go to a side map. 100,000 IPv4 prefixes take about 3 MB.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr};

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};

use crate::bgp::wire::DEFAULT_LOCAL_PREF;

/// One path to a prefix as learned from a peer, already decoded by the BGP layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Path {
    pub prefix: IpNetwork,
    pub next_hop: IpAddr,
    /// ORIGIN: 0 IGP, 1 EGP, 2 INCOMPLETE.
    pub origin: u8,
    pub as_path_len: usize,
    pub local_pref: Option<u32>,
    pub med: Option<u32>,
    /// First AS of the AS_PATH; `None` for a path originated inside our own AS (an
    /// empty AS_PATH), which RFC 4271 9.1.2.2 treats as one more neighbour AS.
    pub neighbour_as: Option<u32>,
    pub ebgp: bool,
}

/// Identifies a peer; also the last two tie-breakers of best-path selection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerKey {
    pub address: IpAddr,
    pub router_id: Ipv4Addr,
}

/// Address family, for End-of-RIB markers which come one per family (RFC 4724 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    Ipv4,
    Ipv6,
}

/// A change of the Loc-RIB's forwarding view: what the kernel must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RibChange {
    /// Install or replace the route for `prefix`.
    Install {
        prefix: IpNetwork,
        next_hop: IpAddr,
    },
    Remove {
        prefix: IpNetwork,
    },
}

impl RibChange {
    pub fn prefix(&self) -> IpNetwork {
        match *self {
            RibChange::Install { prefix, .. } | RibChange::Remove { prefix } => prefix,
        }
    }
}

/// The attributes that best-path selection reads, interned: paths point at them by id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Attrs {
    next_hop: IpAddr,
    local_pref: u32,
    as_path_len: u32,
    /// A missing MED is the lowest possible value (RFC 4271 9.1.2.2 c).
    med: u32,
    neighbour_as: Option<u32>,
    origin: u8,
    ebgp: bool,
}

impl From<&Path> for Attrs {
    fn from(p: &Path) -> Self {
        Attrs {
            next_hop: p.next_hop,
            local_pref: p.local_pref.unwrap_or(DEFAULT_LOCAL_PREF),
            as_path_len: u32::try_from(p.as_path_len).unwrap_or(u32::MAX),
            med: p.med.unwrap_or(0),
            neighbour_as: p.neighbour_as,
            origin: p.origin,
            ebgp: p.ebgp,
        }
    }
}

/// Reference-counted attribute sets with slot reuse, so churn does not grow the table.
#[derive(Default)]
struct AttrTable {
    slots: Vec<(Attrs, u32)>,
    index: HashMap<Attrs, u32>,
    free: Vec<u32>,
}

impl AttrTable {
    fn intern(&mut self, attrs: Attrs) -> u32 {
        if let Some(&id) = self.index.get(&attrs) {
            self.slots[id as usize].1 += 1;
            return id;
        }
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = (attrs, 1);
                id
            }
            None => {
                self.slots.push((attrs, 1));
                (self.slots.len() - 1) as u32
            }
        };
        self.index.insert(attrs, id);
        id
    }

    fn release(&mut self, id: u32) {
        let slot = &mut self.slots[id as usize];
        slot.1 -= 1;
        if slot.1 == 0 {
            self.index.remove(&slot.0);
            self.free.push(id);
        }
    }

    fn get(&self, id: u32) -> &Attrs {
        &self.slots[id as usize].0
    }
}

/// One path in a prefix's candidate list: 8 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cand {
    peer: u32,
    /// Attribute id in the low 31 bits, the RFC 4724 stale flag in the top bit.
    attrs: u32,
}

const STALE: u32 = 1 << 31;

impl Cand {
    fn attrs_id(self) -> u32 {
        self.attrs & !STALE
    }
    fn is_stale(self) -> bool {
        self.attrs & STALE != 0
    }
}

#[derive(Debug)]
struct PeerSlot {
    key: PeerKey,
    routes_in: usize,
}

/// Everything a table needs besides its own map: split from the tables so a table can
/// be borrowed mutably alongside it.
#[derive(Default)]
struct Ctx {
    attrs: AttrTable,
    peers: Vec<Option<PeerSlot>>,
    peer_ids: HashMap<PeerKey, u32>,
    local: HashSet<IpNetwork>,
}

impl Ctx {
    fn peer_id(&mut self, key: PeerKey) -> u32 {
        if let Some(&id) = self.peer_ids.get(&key) {
            return id;
        }
        let slot = Some(PeerSlot { key, routes_in: 0 });
        let id = match self.peers.iter().position(Option::is_none) {
            Some(i) => {
                self.peers[i] = slot;
                i as u32
            }
            None => {
                self.peers.push(slot);
                (self.peers.len() - 1) as u32
            }
        };
        self.peer_ids.insert(key, id);
        id
    }

    fn peer(&self, id: u32) -> &PeerSlot {
        self.peers[id as usize]
            .as_ref()
            .expect("path of a removed peer")
    }

    fn count(&mut self, id: u32, delta: isize) {
        if let Some(p) = self.peers[id as usize].as_mut() {
            p.routes_in = p.routes_in.wrapping_add_signed(delta);
        }
    }

    /// Next hop of the best path, or `None` when nothing must be installed.
    fn best(&self, prefix: IpNetwork, cands: &[Cand]) -> Option<IpAddr> {
        if cands.is_empty() || self.local.contains(&prefix) {
            return None;
        }
        let best = select(self, cands);
        Some(self.attrs.get(best.attrs_id()).next_hop)
    }
}

/// Best-path selection by elimination, in RFC 4271 9.1.2.2 order, so the result does
/// not depend on the order paths arrived in (MED is not transitive across neighbour
/// ASes, a pairwise comparison would be).
fn select(ctx: &Ctx, cands: &[Cand]) -> Cand {
    if let [only] = cands {
        return *only;
    }
    let mut live: Vec<(Cand, &Attrs)> = cands
        .iter()
        .map(|&c| (c, ctx.attrs.get(c.attrs_id())))
        .collect();
    let max_pref = live.iter().map(|(_, a)| a.local_pref).max().unwrap_or(0);
    live.retain(|(_, a)| a.local_pref == max_pref);
    let min_len = live.iter().map(|(_, a)| a.as_path_len).min().unwrap_or(0);
    live.retain(|(_, a)| a.as_path_len == min_len);
    let min_origin = live.iter().map(|(_, a)| a.origin).min().unwrap_or(0);
    live.retain(|(_, a)| a.origin == min_origin);
    let snapshot = live.clone();
    live.retain(|(_, a)| {
        !snapshot
            .iter()
            .any(|(_, b)| b.neighbour_as == a.neighbour_as && b.med < a.med)
    });
    if live.iter().any(|(_, a)| a.ebgp) {
        live.retain(|(_, a)| a.ebgp);
    }
    live.into_iter()
        .map(|(c, _)| c)
        .min_by_key(|c| {
            let key = ctx.peer(c.peer).key;
            (key.router_id, key.address)
        })
        .expect("select called with no candidates")
}

/// The paths of one address family. A prefix's first path lives in `first`, any others
/// in `more`: almost every prefix has one path, and a 5-byte IPv4 key plus an 8-byte
/// path make a 16-byte bucket, where an inline-or-boxed list would make it 24.
struct Table<K> {
    first: HashMap<K, Cand>,
    more: HashMap<K, Vec<Cand>>,
}

impl<K: Copy + Eq + Hash + Into<IpNetwork>> Table<K> {
    fn new() -> Self {
        Table {
            first: HashMap::new(),
            more: HashMap::new(),
        }
    }

    /// All paths to `key`, in no particular order.
    fn load(&self, key: K) -> Vec<Cand> {
        let mut all = Vec::new();
        if let Some(&first) = self.first.get(&key) {
            all.push(first);
            all.extend(self.more.get(&key).into_iter().flatten());
        }
        all
    }

    fn store(&mut self, key: K, all: &[Cand]) {
        let Some((&first, rest)) = all.split_first() else {
            self.first.remove(&key);
            self.more.remove(&key);
            return;
        };
        self.first.insert(key, first);
        if rest.is_empty() {
            self.more.remove(&key);
        } else {
            self.more.insert(key, rest.to_vec());
        }
    }

    fn best(&self, ctx: &Ctx, key: K) -> Option<IpAddr> {
        let first = self.first.get(&key)?;
        match self.more.contains_key(&key) {
            false => ctx.best(key.into(), std::slice::from_ref(first)),
            true => ctx.best(key.into(), &self.load(key)),
        }
    }

    /// Adds or replaces `peer`'s path to `key`; a replaced stale path becomes fresh.
    fn insert(&mut self, ctx: &mut Ctx, key: K, peer: u32, attrs: Attrs) {
        let new = Cand {
            peer,
            attrs: ctx.attrs.intern(attrs),
        };
        let mut all = self.load(key);
        match all.iter_mut().find(|c| c.peer == peer) {
            Some(old) => {
                ctx.attrs.release(old.attrs_id());
                *old = new;
            }
            None => {
                all.push(new);
                ctx.count(peer, 1);
            }
        }
        self.store(key, &all);
    }

    fn remove(&mut self, ctx: &mut Ctx, key: K, peer: u32) {
        let mut all = self.load(key);
        let Some(i) = all.iter().position(|c| c.peer == peer) else {
            return;
        };
        let old = all.swap_remove(i);
        ctx.attrs.release(old.attrs_id());
        ctx.count(peer, -1);
        self.store(key, &all);
    }

    /// Drops every path for which `doomed` holds and returns the Loc-RIB changes.
    fn sweep(&mut self, ctx: &mut Ctx, doomed: impl Fn(Cand) -> bool) -> Vec<RibChange> {
        let keys: Vec<K> = self
            .first
            .iter()
            .filter(|&(k, &c)| {
                doomed(c)
                    || self
                        .more
                        .get(k)
                        .is_some_and(|m| m.iter().any(|&c| doomed(c)))
            })
            .map(|(&k, _)| k)
            .collect();
        let mut changes = Vec::new();
        for key in keys {
            let mut all = self.load(key);
            let old = ctx.best(key.into(), &all);
            all.retain(|&c| {
                if doomed(c) {
                    ctx.attrs.release(c.attrs_id());
                    ctx.count(c.peer, -1);
                }
                !doomed(c)
            });
            changes.extend(diff(key.into(), old, ctx.best(key.into(), &all)));
            self.store(key, &all);
        }
        changes
    }

    fn mark_stale(&mut self, peer: u32) {
        let more = self.more.values_mut().flatten();
        for c in self
            .first
            .values_mut()
            .chain(more)
            .filter(|c| c.peer == peer)
        {
            c.attrs |= STALE;
        }
    }

    fn installed<'a>(&'a self, ctx: &'a Ctx) -> impl Iterator<Item = (IpNetwork, IpAddr)> + 'a {
        self.first
            .keys()
            .filter_map(move |&k| Some((k.into(), self.best(ctx, k)?)))
    }

    fn len(&self) -> usize {
        self.first.len()
    }
}

fn diff(prefix: IpNetwork, old: Option<IpAddr>, new: Option<IpAddr>) -> Option<RibChange> {
    match (old, new) {
        (a, b) if a == b => None,
        (_, Some(next_hop)) => Some(RibChange::Install { prefix, next_hop }),
        (Some(_), None) => Some(RibChange::Remove { prefix }),
        (None, None) => None,
    }
}

/// Clears host bits, so `10.0.0.1/24` and `10.0.0.0/24` are one prefix.
fn normalize(prefix: IpNetwork) -> IpNetwork {
    IpNetwork::new(prefix.network(), prefix.prefix()).expect("prefix length already valid")
}

/// Per-peer Adj-RIB-In and the Loc-RIB.
pub struct Rib {
    v4: Table<Ipv4Network>,
    v6: Table<Ipv6Network>,
    ctx: Ctx,
}

impl Default for Rib {
    fn default() -> Self {
        Self::new()
    }
}

impl Rib {
    pub fn new() -> Self {
        Rib {
            v4: Table::new(),
            v6: Table::new(),
            ctx: Ctx::default(),
        }
    }

    /// Applies one UPDATE from `peer`: withdrawals first, then announcements (a path
    /// replaces the peer's previous path to the same prefix). Returns at most one change
    /// per prefix, so the changes can be applied to the kernel concurrently.
    pub fn update(
        &mut self,
        peer: PeerKey,
        announced: &[Path],
        withdrawn: &[IpNetwork],
    ) -> Vec<RibChange> {
        let id = self.ctx.peer_id(peer);
        let mut touched = Touched::default();
        for &prefix in withdrawn {
            let prefix = normalize(prefix);
            touched.note(prefix, || self.best(prefix));
            match prefix {
                IpNetwork::V4(k) => self.v4.remove(&mut self.ctx, k, id),
                IpNetwork::V6(k) => self.v6.remove(&mut self.ctx, k, id),
            }
        }
        for path in announced {
            let prefix = normalize(path.prefix);
            touched.note(prefix, || self.best(prefix));
            match prefix {
                IpNetwork::V4(k) => self.v4.insert(&mut self.ctx, k, id, path.into()),
                IpNetwork::V6(k) => self.v6.insert(&mut self.ctx, k, id, path.into()),
            }
        }
        touched.changes(|p| self.best(p))
    }

    /// The session with `peer` is gone without graceful restart: drop all its paths.
    pub fn peer_down(&mut self, peer: PeerKey) -> Vec<RibChange> {
        let Some(id) = self.ctx.peer_ids.remove(&peer) else {
            return Vec::new();
        };
        let mut changes = self.v4.sweep(&mut self.ctx, |c| c.peer == id);
        changes.extend(self.v6.sweep(&mut self.ctx, |c| c.peer == id));
        self.ctx.peers[id as usize] = None;
        changes
    }

    /// RFC 4724 receiving speaker: the restarting peer's session went down; keep its
    /// paths (and the kernel's routes) but flag them stale until it re-announces them.
    pub fn mark_stale(&mut self, peer: PeerKey) {
        if let Some(&id) = self.ctx.peer_ids.get(&peer) {
            self.v4.mark_stale(id);
            self.v6.mark_stale(id);
        }
    }

    /// End-of-RIB for `family` from `peer`: whatever it did not re-announce is gone.
    pub fn end_of_rib(&mut self, peer: PeerKey, family: Family) -> Vec<RibChange> {
        let Some(&id) = self.ctx.peer_ids.get(&peer) else {
            return Vec::new();
        };
        let stale = |c: Cand| c.peer == id && c.is_stale();
        match family {
            Family::Ipv4 => self.v4.sweep(&mut self.ctx, stale),
            Family::Ipv6 => self.v6.sweep(&mut self.ctx, stale),
        }
    }

    /// The restart (or stale-path) timer expired: drop the peer's stale paths of both
    /// families.
    pub fn sweep_stale(&mut self, peer: PeerKey) -> Vec<RibChange> {
        let mut changes = self.end_of_rib(peer, Family::Ipv4);
        changes.extend(self.end_of_rib(peer, Family::Ipv6));
        changes
    }

    /// Sets the node's own blocks. A learned route for one of them is kept in the
    /// Adj-RIB-In but never installed: the node itself owns that block (exact prefix
    /// match; a more specific learned prefix inside a block is still installed).
    pub fn local_prefixes(&mut self, set: HashSet<IpNetwork>) -> Vec<RibChange> {
        let set: HashSet<IpNetwork> = set.into_iter().map(normalize).collect();
        let mut touched = Touched::default();
        for &prefix in self.ctx.local.symmetric_difference(&set) {
            touched.note(prefix, || self.best(prefix));
        }
        self.ctx.local = set;
        touched.changes(|p| self.best(p))
    }

    /// Paths held from `peer` (the status table's "routes in"), stale ones included.
    pub fn routes_in(&self, peer: &PeerKey) -> usize {
        self.ctx
            .peer_ids
            .get(peer)
            .map_or(0, |&id| self.ctx.peer(id).routes_in)
    }

    /// Next hop of the installed route for `prefix`, if any.
    pub fn best(&self, prefix: IpNetwork) -> Option<IpAddr> {
        match normalize(prefix) {
            IpNetwork::V4(k) => self.v4.best(&self.ctx, k),
            IpNetwork::V6(k) => self.v6.best(&self.ctx, k),
        }
    }

    /// Every route the kernel should hold: the input of a full reconciliation.
    pub fn installed(&self) -> impl Iterator<Item = (IpNetwork, IpAddr)> + '_ {
        self.v4
            .installed(&self.ctx)
            .chain(self.v6.installed(&self.ctx))
    }

    /// Prefixes with at least one path (local ones included).
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Prefixes touched by one operation with their best next hop before it, in first-touch
/// order, so each yields at most one change however often the operation touched it.
#[derive(Default)]
struct Touched {
    before: Vec<(IpNetwork, Option<IpAddr>)>,
    seen: HashSet<IpNetwork>,
}

impl Touched {
    fn note(&mut self, prefix: IpNetwork, best: impl FnOnce() -> Option<IpAddr>) {
        if self.seen.insert(prefix) {
            self.before.push((prefix, best()));
        }
    }

    fn changes(self, best: impl Fn(IpNetwork) -> Option<IpAddr>) -> Vec<RibChange> {
        self.before
            .into_iter()
            .filter_map(|(p, old)| diff(p, old, best(p)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn peer(n: u8) -> PeerKey {
        PeerKey {
            address: IpAddr::from([10, 0, 0, n]),
            router_id: Ipv4Addr::new(10, 0, 0, n),
        }
    }

    /// An iBGP mesh path: empty AS_PATH, next hop the peer itself.
    fn mesh(prefix: &str, n: u8) -> Path {
        Path {
            prefix: net(prefix),
            next_hop: peer(n).address,
            origin: 0,
            as_path_len: 0,
            local_pref: Some(100),
            med: None,
            neighbour_as: None,
            ebgp: false,
        }
    }

    fn install(prefix: &str, nh: &str) -> RibChange {
        RibChange::Install {
            prefix: net(prefix),
            next_hop: ip(nh),
        }
    }

    fn remove(prefix: &str) -> RibChange {
        RibChange::Remove {
            prefix: net(prefix),
        }
    }

    /// Two peers announce one prefix with the given paths; returns the winner's next hop.
    fn winner(a: Path, b: Path) -> IpAddr {
        let mut rib = Rib::new();
        rib.update(
            peer(1),
            &[Path {
                next_hop: ip("10.0.0.1"),
                ..a
            }],
            &[],
        );
        rib.update(
            peer(2),
            &[Path {
                next_hop: ip("10.0.0.2"),
                ..b
            }],
            &[],
        );
        let forward = rib.best(a.prefix).unwrap();
        // Arrival order must not matter.
        let mut rib = Rib::new();
        rib.update(
            peer(2),
            &[Path {
                next_hop: ip("10.0.0.2"),
                ..b
            }],
            &[],
        );
        rib.update(
            peer(1),
            &[Path {
                next_hop: ip("10.0.0.1"),
                ..a
            }],
            &[],
        );
        assert_eq!(rib.best(a.prefix).unwrap(), forward);
        forward
    }

    #[test]
    fn announce_installs_and_withdraw_removes() {
        let mut rib = Rib::new();
        let c = rib.update(
            peer(1),
            &[mesh("10.244.1.0/26", 1), mesh("fd00:244::/122", 1)],
            &[],
        );
        assert_eq!(
            c,
            vec![
                install("10.244.1.0/26", "10.0.0.1"),
                install("fd00:244::/122", "10.0.0.1")
            ]
        );
        assert_eq!(rib.routes_in(&peer(1)), 2);
        let c = rib.update(peer(1), &[], &[net("10.244.1.0/26")]);
        assert_eq!(c, vec![remove("10.244.1.0/26")]);
        assert_eq!(rib.routes_in(&peer(1)), 1);
        assert_eq!(rib.best(net("10.244.1.0/26")), None);
    }

    #[test]
    fn reannouncing_the_same_path_changes_nothing() {
        let mut rib = Rib::new();
        rib.update(peer(1), &[mesh("10.244.1.0/26", 1)], &[]);
        assert!(rib
            .update(peer(1), &[mesh("10.244.1.0/26", 1)], &[])
            .is_empty());
        assert_eq!(rib.routes_in(&peer(1)), 1);
    }

    #[test]
    fn withdraw_and_reannounce_in_one_update_is_one_change_or_none() {
        let mut rib = Rib::new();
        rib.update(peer(1), &[mesh("10.244.1.0/26", 1)], &[]);
        let same = rib.update(
            peer(1),
            &[mesh("10.244.1.0/26", 1)],
            &[net("10.244.1.0/26")],
        );
        assert!(same.is_empty());
        let moved = Path {
            next_hop: ip("10.0.0.9"),
            ..mesh("10.244.1.0/26", 1)
        };
        let c = rib.update(peer(1), &[moved], &[net("10.244.1.0/26")]);
        assert_eq!(c, vec![install("10.244.1.0/26", "10.0.0.9")]);
    }

    #[test]
    fn withdrawing_an_unknown_prefix_is_harmless() {
        let mut rib = Rib::new();
        assert!(rib.update(peer(1), &[], &[net("10.9.0.0/26")]).is_empty());
        assert_eq!(rib.routes_in(&peer(1)), 0);
    }

    #[test]
    fn host_bits_are_cleared() {
        let mut rib = Rib::new();
        let c = rib.update(peer(1), &[mesh("10.244.1.5/26", 1)], &[]);
        assert_eq!(c, vec![install("10.244.1.0/26", "10.0.0.1")]);
        assert_eq!(rib.update(peer(1), &[], &[net("10.244.1.0/26")]).len(), 1);
    }

    #[test]
    fn highest_local_pref_wins() {
        let a = mesh("10.1.0.0/26", 1);
        let b = Path {
            local_pref: Some(200),
            as_path_len: 5,
            ..a
        };
        assert_eq!(winner(a, b), ip("10.0.0.2"));
    }

    #[test]
    fn missing_local_pref_counts_as_100() {
        let a = Path {
            local_pref: None,
            ..mesh("10.1.0.0/26", 1)
        };
        let b = Path {
            local_pref: Some(99),
            ..a
        };
        assert_eq!(winner(a, b), ip("10.0.0.1"));
    }

    #[test]
    fn shortest_as_path_wins() {
        let a = Path {
            as_path_len: 2,
            ..mesh("10.1.0.0/26", 1)
        };
        let b = Path {
            as_path_len: 1,
            origin: 2,
            ..a
        };
        assert_eq!(winner(a, b), ip("10.0.0.2"));
    }

    #[test]
    fn lowest_origin_wins() {
        let a = Path {
            origin: 2,
            ..mesh("10.1.0.0/26", 1)
        };
        let b = Path { origin: 0, ..a };
        assert_eq!(winner(a, b), ip("10.0.0.2"));
    }

    #[test]
    fn med_compared_only_within_one_neighbour_as() {
        let a = Path {
            as_path_len: 1,
            neighbour_as: Some(65001),
            med: Some(50),
            ebgp: true,
            ..mesh("10.1.0.0/26", 1)
        };
        let same_as = Path { med: Some(10), ..a };
        assert_eq!(winner(a, same_as), ip("10.0.0.2"));
        // A lower MED from another AS does not count: router id decides (peer 1).
        let other_as = Path {
            med: Some(10),
            neighbour_as: Some(65002),
            ..a
        };
        assert_eq!(winner(a, other_as), ip("10.0.0.1"));
        // A missing MED is the lowest.
        let none = Path { med: None, ..a };
        assert_eq!(winner(a, none), ip("10.0.0.2"));
    }

    #[test]
    fn med_elimination_does_not_depend_on_order() {
        // 1 (AS 1, MED 10) beats 3 (AS 1, MED 20); 2 (AS 2) is incomparable to both. The
        // survivors 1 and 2 go to the router id: 1 wins, in every arrival order.
        let base = Path {
            as_path_len: 1,
            ebgp: true,
            ..mesh("10.1.0.0/26", 1)
        };
        let paths = [
            (
                1,
                Path {
                    med: Some(10),
                    neighbour_as: Some(1),
                    ..base
                },
            ),
            (
                2,
                Path {
                    med: Some(5),
                    neighbour_as: Some(2),
                    ..base
                },
            ),
            (
                3,
                Path {
                    med: Some(20),
                    neighbour_as: Some(1),
                    ..base
                },
            ),
        ];
        for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0], [2, 0, 1]] {
            let mut rib = Rib::new();
            for i in order {
                let (n, p) = paths[i];
                rib.update(
                    peer(n),
                    &[Path {
                        next_hop: peer(n).address,
                        ..p
                    }],
                    &[],
                );
            }
            assert_eq!(
                rib.best(base.prefix),
                Some(ip("10.0.0.1")),
                "order {order:?}"
            );
        }
    }

    #[test]
    fn ebgp_beats_ibgp() {
        let a = mesh("10.1.0.0/26", 1);
        let b = Path { ebgp: true, ..a };
        assert_eq!(winner(a, b), ip("10.0.0.2"));
    }

    #[test]
    fn lowest_router_id_then_lowest_address_wins() {
        let mut rib = Rib::new();
        let p = mesh("10.1.0.0/26", 1);
        let hi = PeerKey {
            address: ip("10.0.0.1"),
            router_id: Ipv4Addr::new(9, 9, 9, 9),
        };
        let lo = PeerKey {
            address: ip("10.0.0.2"),
            router_id: Ipv4Addr::new(1, 1, 1, 1),
        };
        rib.update(
            hi,
            &[Path {
                next_hop: hi.address,
                ..p
            }],
            &[],
        );
        rib.update(
            lo,
            &[Path {
                next_hop: lo.address,
                ..p
            }],
            &[],
        );
        assert_eq!(rib.best(p.prefix), Some(lo.address));
        let same_id = PeerKey {
            address: ip("10.0.0.0"),
            router_id: lo.router_id,
        };
        rib.update(
            same_id,
            &[Path {
                next_hop: same_id.address,
                ..p
            }],
            &[],
        );
        assert_eq!(rib.best(p.prefix), Some(same_id.address));
    }

    #[test]
    fn losing_the_best_path_falls_back_to_the_next() {
        let mut rib = Rib::new();
        rib.update(peer(2), &[mesh("10.1.0.0/26", 2)], &[]);
        let c = rib.update(peer(1), &[mesh("10.1.0.0/26", 1)], &[]);
        assert_eq!(c, vec![install("10.1.0.0/26", "10.0.0.1")]);
        // A path that loses changes nothing.
        assert!(rib
            .update(peer(3), &[mesh("10.1.0.0/26", 3)], &[])
            .is_empty());
        let c = rib.update(peer(1), &[], &[net("10.1.0.0/26")]);
        assert_eq!(c, vec![install("10.1.0.0/26", "10.0.0.2")]);
    }

    #[test]
    fn peer_down_drops_its_paths_only() {
        let mut rib = Rib::new();
        rib.update(
            peer(1),
            &[mesh("10.1.0.0/26", 1), mesh("10.1.0.64/26", 1)],
            &[],
        );
        rib.update(
            peer(2),
            &[mesh("10.1.0.0/26", 2), mesh("10.2.0.0/26", 2)],
            &[],
        );
        let mut c = rib.peer_down(peer(1));
        c.sort_by_key(|c| c.prefix());
        assert_eq!(
            c,
            vec![install("10.1.0.0/26", "10.0.0.2"), remove("10.1.0.64/26")]
        );
        assert_eq!(rib.routes_in(&peer(1)), 0);
        assert_eq!(rib.routes_in(&peer(2)), 2);
        assert!(rib.peer_down(peer(1)).is_empty());
        assert_eq!(rib.len(), 2);
    }

    #[test]
    fn graceful_restart_keeps_stale_paths_until_end_of_rib() {
        let mut rib = Rib::new();
        let old = [
            mesh("10.1.0.0/26", 1),
            mesh("10.1.0.64/26", 1),
            mesh("fd00::/122", 1),
        ];
        rib.update(peer(1), &old, &[]);
        rib.mark_stale(peer(1));
        assert_eq!(rib.best(net("10.1.0.0/26")), Some(ip("10.0.0.1")));
        assert_eq!(rib.routes_in(&peer(1)), 3);
        // The restarted peer re-announces one prefix, unchanged: no kernel change.
        assert!(rib
            .update(peer(1), &[mesh("10.1.0.0/26", 1)], &[])
            .is_empty());
        let c = rib.end_of_rib(peer(1), Family::Ipv4);
        assert_eq!(c, vec![remove("10.1.0.64/26")]);
        // IPv6 paths wait for their own End-of-RIB or the timer.
        assert_eq!(rib.best(net("fd00::/122")), Some(ip("10.0.0.1")));
        assert_eq!(rib.sweep_stale(peer(1)), vec![remove("fd00::/122")]);
        assert_eq!(rib.routes_in(&peer(1)), 1);
        assert!(rib.sweep_stale(peer(1)).is_empty());
    }

    #[test]
    fn stale_path_yields_to_a_fresh_one_only_when_swept() {
        let mut rib = Rib::new();
        rib.update(peer(1), &[mesh("10.1.0.0/26", 1)], &[]);
        rib.update(peer(2), &[mesh("10.1.0.0/26", 2)], &[]);
        rib.mark_stale(peer(1));
        assert_eq!(rib.best(net("10.1.0.0/26")), Some(ip("10.0.0.1")));
        let c = rib.sweep_stale(peer(1));
        assert_eq!(c, vec![install("10.1.0.0/26", "10.0.0.2")]);
    }

    #[test]
    fn local_blocks_are_never_installed() {
        let mut rib = Rib::new();
        let own = HashSet::from([net("10.244.0.0/26")]);
        assert!(rib.local_prefixes(own.clone()).is_empty());
        assert!(rib
            .update(peer(1), &[mesh("10.244.0.0/26", 1)], &[])
            .is_empty());
        assert_eq!(rib.routes_in(&peer(1)), 1);
        assert_eq!(rib.installed().count(), 0);
        // More specific prefixes inside our block are someone else's.
        let c = rib.update(peer(1), &[mesh("10.244.0.8/29", 1)], &[]);
        assert_eq!(c, vec![install("10.244.0.8/29", "10.0.0.1")]);
        // Giving the block up installs the learned route; claiming one removes it.
        let c = rib.local_prefixes(HashSet::new());
        assert_eq!(c, vec![install("10.244.0.0/26", "10.0.0.1")]);
        let c = rib.local_prefixes(own);
        assert_eq!(c, vec![remove("10.244.0.0/26")]);
    }

    #[test]
    fn attribute_sets_are_shared_and_released() {
        let mut rib = Rib::new();
        let paths: Vec<Path> = (0..=255u8)
            .map(|i| mesh(&format!("10.5.{i}.0/26"), 1))
            .collect();
        rib.update(peer(1), &paths, &[]);
        assert_eq!(rib.ctx.attrs.index.len(), 1);
        rib.peer_down(peer(1));
        assert!(rib.ctx.attrs.index.is_empty());
        assert!(rib.is_empty());
    }

    #[test]
    fn layout_stays_small() {
        // 100,000 prefixes must cost a few MB: an IPv4 prefix with its one path is a
        // 16-byte hash bucket.
        assert_eq!(std::mem::size_of::<Cand>(), 8);
        assert_eq!(std::mem::size_of::<(Ipv4Network, Cand)>(), 16);
        assert!(std::mem::size_of::<Ipv4Network>() <= 5);
    }

    #[test]
    fn installed_lists_the_forwarding_view() {
        let mut rib = Rib::new();
        rib.update(
            peer(1),
            &[mesh("10.1.0.0/26", 1), mesh("fd00::/122", 1)],
            &[],
        );
        rib.update(peer(2), &[mesh("10.1.0.0/26", 2)], &[]);
        let mut all: Vec<_> = rib.installed().collect();
        all.sort();
        assert_eq!(
            all,
            vec![
                (net("10.1.0.0/26"), ip("10.0.0.1")),
                (net("fd00::/122"), ip("10.0.0.1"))
            ]
        );
    }
}
