//! What one session has announced to its peer (the Adj-RIB-Out, RFC 4271 3.2), kept so
//! it can be sent again after a reconnect or a ROUTE-REFRESH, and the packing of routes
//! into as few UPDATEs as fit in 4096 bytes: 100,000 /26 blocks with one next hop go out
//! in about 100 messages instead of 100,000.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::wire::{self, Afi, Message, Origin, Route, SessionContext, Update, MAX_MESSAGE_LEN};

/// Bytes reserved for an attribute length growing to the extended (2-byte) form.
const SLACK: usize = 2;
/// Header, withdrawn-length and attribute-length fields of an UPDATE.
const EMPTY_UPDATE_LEN: usize = wire::HEADER_LEN + 4;
/// MP_UNREACH_NLRI with extended length: flags, type, 2 length bytes, AFI, SAFI.
const MP_UNREACH_OVERHEAD: usize = 7;

#[derive(Clone, Debug, Default)]
pub struct AdjRibOut {
    routes: HashMap<IpNetwork, Route>,
}

impl AdjRibOut {
    pub fn new() -> AdjRibOut {
        AdjRibOut::default()
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Records `route`; false when the same route was already there (nothing to send).
    pub fn announce(&mut self, mut route: Route) -> bool {
        route.prefix = canonical(route.prefix);
        if self.routes.get(&route.prefix) == Some(&route) {
            return false;
        }
        self.routes.insert(route.prefix, route);
        true
    }

    /// Forgets `prefix`; false when it was not announced.
    pub fn withdraw(&mut self, prefix: IpNetwork) -> bool {
        self.routes.remove(&canonical(prefix)).is_some()
    }

    pub fn routes(&self, afi: Afi) -> impl Iterator<Item = &Route> {
        self.routes
            .values()
            .filter(move |r| Afi::of(&r.prefix) == afi)
    }
}

/// The prefix with its host bits cleared, the form it has on the wire.
pub fn canonical(p: IpNetwork) -> IpNetwork {
    IpNetwork::new(p.network(), p.prefix()).unwrap_or(p)
}

/// Octets a prefix takes in NLRI: length byte plus the significant address bytes.
fn nlri_len(p: &IpNetwork) -> usize {
    1 + usize::from(p.prefix()).div_ceil(8)
}

type AttrKey = (Afi, IpAddr, Origin, Vec<u32>, Option<u32>, Option<u32>);

/// Groups routes by family and attributes and packs each group into UPDATEs that
/// encode within 4096 bytes. Routes come out sorted by prefix inside a group.
pub fn pack_announcements<'a>(
    routes: impl IntoIterator<Item = &'a Route>,
    ctx: SessionContext,
) -> Vec<Update> {
    let mut groups: HashMap<AttrKey, Vec<&Route>> = HashMap::new();
    for r in routes {
        let key = (
            Afi::of(&r.prefix),
            r.next_hop,
            r.origin,
            r.as_path.clone(),
            r.local_pref,
            r.med,
        );
        groups.entry(key).or_default().push(r);
    }
    let mut keys: Vec<AttrKey> = groups.keys().cloned().collect();
    keys.sort();
    let mut updates = Vec::new();
    for key in keys {
        let mut group = groups.remove(&key).unwrap_or_default();
        group.sort_by_key(|r| r.prefix);
        pack_group(&group, ctx, &mut updates);
    }
    updates
}

fn pack_group(group: &[&Route], ctx: SessionContext, out: &mut Vec<Update>) {
    let Some(first) = group.first() else { return };
    // The size of an UPDATE carrying this group's attributes and no NLRI.
    let one = Update {
        announced: vec![(*first).clone()],
        ..Update::default()
    };
    let Ok(bytes) = wire::encode(&Message::Update(one), ctx) else {
        tracing::error!(prefix = %first.prefix, "route cannot be encoded; not announced");
        return;
    };
    let base = bytes.len() - nlri_len(&first.prefix);
    let mut current = Update::default();
    let mut size = base;
    for r in group {
        let n = nlri_len(&r.prefix);
        if size + n + SLACK > MAX_MESSAGE_LEN && !current.announced.is_empty() {
            out.push(std::mem::take(&mut current));
            size = base;
        }
        current.announced.push((*r).clone());
        size += n;
    }
    out.push(current);
}

/// Packs withdrawals: IPv4 in the withdrawn-routes field, IPv6 in MP_UNREACH_NLRI.
pub fn pack_withdrawals(prefixes: impl IntoIterator<Item = IpNetwork>) -> Vec<Update> {
    let (mut v4, mut v6): (Vec<IpNetwork>, Vec<IpNetwork>) = prefixes
        .into_iter()
        .map(canonical)
        .partition(|p| p.is_ipv4());
    v4.sort();
    v6.sort();
    let mut out = Vec::new();
    for (list, overhead) in [(v4, 0), (v6, MP_UNREACH_OVERHEAD)] {
        let budget = MAX_MESSAGE_LEN - EMPTY_UPDATE_LEN - overhead - SLACK;
        let mut current = Update::default();
        let mut size = 0;
        for p in list {
            let n = nlri_len(&p);
            if size + n > budget {
                out.push(std::mem::take(&mut current));
                size = 0;
            }
            current.withdrawn.push(p);
            size += n;
        }
        if !current.withdrawn.is_empty() {
            out.push(current);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use ipnetwork::{Ipv4Network, Ipv6Network};

    use super::*;

    fn v4_blocks(n: u32, next_hop: IpAddr) -> Vec<Route> {
        (0..n)
            .map(|i| Route {
                prefix: IpNetwork::V4(
                    Ipv4Network::new(Ipv4Addr::from(0x0a00_0000 + (i << 6)), 26).unwrap(),
                ),
                next_hop,
                origin: Origin::Igp,
                as_path: vec![],
                local_pref: Some(100),
                med: None,
            })
            .collect()
    }

    fn encoded_sizes(updates: &[Update]) -> Vec<usize> {
        let ctx = SessionContext::default();
        updates
            .iter()
            .map(|u| {
                wire::encode(&Message::Update(u.clone()), ctx)
                    .unwrap()
                    .len()
            })
            .collect()
    }

    #[test]
    fn hundred_thousand_blocks_fill_messages_to_the_limit() {
        let routes = v4_blocks(100_000, "10.0.0.1".parse().unwrap());
        let updates = pack_announcements(&routes, SessionContext::default());
        let sizes = encoded_sizes(&updates);
        assert!(sizes.iter().all(|&s| s <= MAX_MESSAGE_LEN), "{sizes:?}");
        // Each /26 takes 5 octets: about 810 per message.
        assert!(updates.len() <= 125, "{} updates", updates.len());
        assert!(sizes[0] > MAX_MESSAGE_LEN - 10);
        let total: usize = updates.iter().map(|u| u.announced.len()).sum();
        assert_eq!(total, 100_000);
    }

    #[test]
    fn different_attributes_never_share_an_update() {
        let mut routes = v4_blocks(10, "10.0.0.1".parse().unwrap());
        routes.extend(
            v4_blocks(10, "10.0.0.2".parse().unwrap())
                .into_iter()
                .map(|mut r| {
                    r.prefix = IpNetwork::new(r.prefix.ip(), 27).unwrap();
                    r
                }),
        );
        let updates = pack_announcements(&routes, SessionContext::default());
        assert_eq!(updates.len(), 2);
        assert!(encoded_sizes(&updates)
            .iter()
            .all(|&s| s <= MAX_MESSAGE_LEN));
    }

    #[test]
    fn ipv6_blocks_pack_into_mp_reach_within_the_limit() {
        let routes: Vec<Route> = (0..5000u128)
            .map(|i| Route {
                prefix: IpNetwork::V6(
                    Ipv6Network::new(Ipv6Addr::from((0xfd00_u128 << 112) + (i << 6)), 122).unwrap(),
                ),
                next_hop: "fd00::1".parse().unwrap(),
                origin: Origin::Igp,
                as_path: vec![],
                local_pref: Some(100),
                med: None,
            })
            .collect();
        let updates = pack_announcements(&routes, SessionContext::default());
        assert!(encoded_sizes(&updates)
            .iter()
            .all(|&s| s <= MAX_MESSAGE_LEN));
        assert!(updates.len() <= 30, "{} updates", updates.len());
    }

    #[test]
    fn withdrawals_pack_per_family_within_the_limit() {
        let mut prefixes: Vec<IpNetwork> = v4_blocks(3000, "10.0.0.1".parse().unwrap())
            .into_iter()
            .map(|r| r.prefix)
            .collect();
        prefixes.push("fd00::/122".parse().unwrap());
        let updates = pack_withdrawals(prefixes);
        assert!(encoded_sizes(&updates)
            .iter()
            .all(|&s| s <= MAX_MESSAGE_LEN));
        assert_eq!(updates.len(), 5);
        assert_eq!(
            updates.last().unwrap().withdrawn,
            vec!["fd00::/122".parse().unwrap()]
        );
    }

    #[test]
    fn adj_rib_out_tracks_changes_on_canonical_prefixes() {
        let mut rib = AdjRibOut::new();
        let mut r = v4_blocks(1, "10.0.0.1".parse().unwrap()).remove(0);
        r.prefix = "10.0.0.5/26".parse().unwrap();
        assert!(rib.announce(r.clone()));
        assert!(!rib.announce(r.clone()));
        assert_eq!(
            rib.routes(Afi::Ipv4).next().unwrap().prefix,
            "10.0.0.0/26".parse().unwrap()
        );
        assert!(rib.withdraw("10.0.0.0/26".parse().unwrap()));
        assert!(!rib.withdraw("10.0.0.0/26".parse().unwrap()));
        assert!(rib.is_empty());
    }
}
