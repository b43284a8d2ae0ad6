//! Address arithmetic over pools: how a pool is cut into blocks, and which parts of the
//! address space are already claimed. Both families are handled as `u128` offsets so the
//! same code serves IPv4 and IPv6.

use ipnetwork::IpNetwork;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub fn to_u128(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The address `n` of a family; `n` must fit the family (callers derive it from one).
pub fn from_u128(n: u128, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(n))
    } else {
        IpAddr::V4(Ipv4Addr::from(n as u32))
    }
}

pub fn family_bits(v6: bool) -> u8 {
    if v6 {
        128
    } else {
        32
    }
}

/// First and last address of a network, as offsets.
pub fn span(net: IpNetwork) -> (u128, u128) {
    let host_bits = u32::from(family_bits(net.is_ipv6()) - net.prefix());
    let first = to_u128(net.network());
    let last = match 1u128.checked_shl(host_bits) {
        Some(size) => first + (size - 1),
        None => u128::MAX, // ::/0
    };
    (first, last)
}

/// The network of length `prefix` holding `addr`.
pub fn enclosing(addr: IpAddr, prefix: u8) -> IpNetwork {
    let net = IpNetwork::new(addr, prefix).expect("prefix fits the family");
    IpNetwork::new(net.network(), prefix).expect("same prefix")
}

/// Whether `net` is written as its own network address (no host bits set).
pub fn is_aligned(net: IpNetwork) -> bool {
    net.ip() == net.network()
}

/// Whether `inner` lies entirely inside `outer`.
pub fn covers(outer: IpNetwork, inner: IpNetwork) -> bool {
    outer.is_ipv6() == inner.is_ipv6()
        && inner.prefix() >= outer.prefix()
        && outer.contains(inner.network())
}

pub fn overlaps(a: IpNetwork, b: IpNetwork) -> bool {
    covers(a, b) || covers(b, a)
}

/// The claimed blocks of a store, indexed by first address for fast "is this range free"
/// questions. Claims never overlap: a store whose claims do is refused when indexed, since
/// handing out an address of a doubly claimed range would give two nodes the same route.
#[derive(Debug, Clone, Default)]
pub struct ClaimIndex {
    v4: BTreeMap<u128, Claimed>,
    v6: BTreeMap<u128, Claimed>,
}

#[derive(Debug, Clone)]
struct Claimed {
    block: IpNetwork,
    last: u128,
    node: String,
}

impl ClaimIndex {
    /// Indexes `claims`; on overlap, returns the two overlapping blocks.
    pub fn new<'a>(
        claims: impl IntoIterator<Item = (IpNetwork, &'a str)>,
    ) -> Result<Self, (IpNetwork, IpNetwork)> {
        let mut index = ClaimIndex::default();
        for (block, node) in claims {
            if let Some((other, _)) = index.holder(block) {
                return Err((other, block));
            }
            index.insert(block, node);
        }
        Ok(index)
    }

    pub fn insert(&mut self, block: IpNetwork, node: &str) {
        let (first, last) = span(block);
        let claimed = Claimed {
            block,
            last,
            node: node.to_string(),
        };
        self.family_mut(block.is_ipv6()).insert(first, claimed);
    }

    /// A claimed block overlapping `range`, with its node.
    pub fn holder(&self, range: IpNetwork) -> Option<(IpNetwork, &str)> {
        let (first, last) = span(range);
        let c = self.overlapping(range.is_ipv6(), first, last)?;
        Some((c.block, c.node.as_str()))
    }

    /// The first block of length `prefix` in `pool` that no claim overlaps.
    pub fn first_free(&self, pool: IpNetwork, prefix: u8) -> Option<IpNetwork> {
        let v6 = pool.is_ipv6();
        let (pool_first, pool_last) = span(pool);
        let size = 1u128 << (family_bits(v6) - prefix);
        let mut candidate = pool_first;
        loop {
            let last = candidate.checked_add(size - 1)?;
            if last > pool_last {
                return None;
            }
            let Some(claim) = self.overlapping(v6, candidate, last) else {
                return Some(IpNetwork::new(from_u128(candidate, v6), prefix).expect("fits"));
            };
            // Jump past the claim to the next block boundary instead of stepping one
            // block at a time: a big pool may hold thousands of claims.
            let past = claim.last.checked_add(1)?;
            let offset = (past - pool_first).div_ceil(size) * size;
            candidate = pool_first.checked_add(offset)?;
        }
    }

    // Claims are disjoint, so sorted by first address they are also sorted by last: the
    // claim starting last at or before `last` is the only one that can reach `first`.
    fn overlapping(&self, v6: bool, first: u128, last: u128) -> Option<&Claimed> {
        let map = if v6 { &self.v6 } else { &self.v4 };
        let (_, c) = map.range(..=last).next_back()?;
        (c.last >= first).then_some(c)
    }

    fn family_mut(&mut self, v6: bool) -> &mut BTreeMap<u128, Claimed> {
        if v6 {
            &mut self.v6
        } else {
            &mut self.v4
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn spans_cover_both_families_and_the_whole_space() {
        assert_eq!(
            span(net("10.0.0.0/30")),
            (
                to_u128("10.0.0.0".parse().unwrap()),
                to_u128("10.0.0.3".parse().unwrap())
            )
        );
        assert_eq!(span(net("::/0")), (0, u128::MAX));
        assert_eq!(span(net("fd00::/127")).1 - span(net("fd00::/127")).0, 1);
    }

    #[test]
    fn enclosing_masks_the_host_bits() {
        assert_eq!(
            enclosing("10.244.1.77".parse().unwrap(), 26),
            net("10.244.1.64/26")
        );
        assert_eq!(
            enclosing("fd00::1:ff".parse().unwrap(), 122),
            net("fd00::1:c0/122")
        );
        assert!(!is_aligned(net("10.0.0.1/24")));
        assert!(is_aligned(net("10.0.0.0/24")));
    }

    #[test]
    fn covers_and_overlaps_respect_family_and_length() {
        assert!(covers(net("10.0.0.0/16"), net("10.0.4.0/26")));
        assert!(!covers(net("10.0.4.0/26"), net("10.0.0.0/16")));
        assert!(overlaps(net("10.0.4.0/26"), net("10.0.0.0/16")));
        assert!(!overlaps(net("10.0.0.0/26"), net("10.0.0.64/26")));
        assert!(!covers(net("::/0"), net("10.0.0.0/8")));
    }

    #[test]
    fn first_free_skips_claims_of_any_size() {
        let pool = net("10.0.0.0/24");
        let claims = ClaimIndex::new([
            (net("10.0.0.0/26"), "a"),
            // A block from an older, smaller blockSize: its whole /26 is unusable.
            (net("10.0.0.64/28"), "b"),
        ])
        .unwrap();
        assert_eq!(claims.first_free(pool, 26), Some(net("10.0.0.128/26")));
        assert_eq!(claims.first_free(pool, 28), Some(net("10.0.0.80/28")));
        assert_eq!(
            claims.holder(net("10.0.0.70/32")),
            Some((net("10.0.0.64/28"), "b"))
        );
        assert_eq!(claims.holder(net("10.0.0.80/32")), None);
    }

    #[test]
    fn first_free_is_none_when_the_pool_is_claimed_out() {
        let mut claims = ClaimIndex::default();
        let pool = net("10.0.0.0/29");
        let a = claims.first_free(pool, 30).unwrap();
        claims.insert(a, "n1");
        let b = claims.first_free(pool, 30).unwrap();
        claims.insert(b, "n2");
        assert_eq!((a, b), (net("10.0.0.0/30"), net("10.0.0.4/30")));
        assert_eq!(claims.first_free(pool, 30), None);
        // The top of the IPv6 space must not overflow.
        let top = net("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00/120");
        let mut claims = ClaimIndex::default();
        claims.insert(net("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffc0/122"), "n");
        assert_eq!(
            claims.first_free(top, 122),
            Some(net("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00/122"))
        );
        claims.insert(net("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00/122"), "n");
        claims.insert(net("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff40/122"), "n");
        claims.insert(net("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff80/122"), "n");
        assert_eq!(claims.first_free(top, 122), None);
    }

    #[test]
    fn overlapping_claims_are_refused() {
        let err =
            ClaimIndex::new([(net("10.0.0.0/24"), "a"), (net("10.0.0.64/26"), "b")]).unwrap_err();
        assert_eq!(err, (net("10.0.0.0/24"), net("10.0.0.64/26")));
        assert!(ClaimIndex::new([(net("10.0.0.0/26"), "a"), (net("fd00::/122"), "a")]).is_ok());
    }
}
