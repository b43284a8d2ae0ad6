//! Address and port sets as sorted, disjoint ranges, and their minimal prefix covers.
//!
//! nftables interval sets refuse overlapping elements ("interval overlaps with an
//! existing one", also for concatenations: measured on nft 1.0.6 / kernel 6.18), so
//! everything Fjord writes into a set is first normalised here: an ipBlock minus its
//! `except` list, the union of every peer of every policy, split into the fewest
//! non-overlapping prefixes.

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A set of integers as sorted, disjoint, non-adjacent inclusive ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RangeSet {
    ranges: Vec<(u128, u128)>,
}

impl RangeSet {
    pub fn new() -> RangeSet {
        RangeSet::default()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn ranges(&self) -> &[(u128, u128)] {
        &self.ranges
    }

    /// Adds `lo..=hi`, merging with what it overlaps or touches.
    pub fn insert(&mut self, lo: u128, hi: u128) {
        debug_assert!(lo <= hi);
        let mut lo = lo;
        let mut hi = hi;
        // The first range that could touch [lo, hi]: its end + 1 >= lo.
        let start = self
            .ranges
            .partition_point(|&(_, end)| end.saturating_add(1) < lo);
        let mut end = start;
        while end < self.ranges.len() && self.ranges[end].0 <= hi.saturating_add(1) {
            lo = lo.min(self.ranges[end].0);
            hi = hi.max(self.ranges[end].1);
            end += 1;
        }
        self.ranges.splice(start..end, [(lo, hi)]);
    }

    /// Builds a set from ranges in any order, overlapping or not: one sort, one pass.
    pub fn from_ranges(mut ranges: Vec<(u128, u128)>) -> RangeSet {
        ranges.sort_unstable();
        let mut merged: Vec<(u128, u128)> = Vec::with_capacity(ranges.len());
        for (lo, hi) in ranges {
            match merged.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        RangeSet { ranges: merged }
    }

    /// Adds every range of `other`, in one linear merge.
    pub fn union(&mut self, other: &RangeSet) {
        if other.ranges.is_empty() {
            return;
        }
        if self.ranges.is_empty() {
            self.ranges = other.ranges.clone();
            return;
        }
        let mut all = Vec::with_capacity(self.ranges.len() + other.ranges.len());
        all.extend_from_slice(&self.ranges);
        all.extend_from_slice(&other.ranges);
        *self = RangeSet::from_ranges(all);
    }

    /// Removes `lo..=hi`.
    pub fn remove(&mut self, lo: u128, hi: u128) {
        let mut kept = Vec::with_capacity(self.ranges.len() + 1);
        for &(a, b) in &self.ranges {
            if b < lo || a > hi {
                kept.push((a, b));
                continue;
            }
            if a < lo {
                kept.push((a, lo - 1));
            }
            if b > hi {
                kept.push((hi + 1, b));
            }
        }
        self.ranges = kept;
    }

    pub fn contains(&self, value: u128) -> bool {
        let i = self.ranges.partition_point(|&(_, end)| end < value);
        i < self.ranges.len() && self.ranges[i].0 <= value
    }

    /// The fewest aligned blocks (start, prefix length) covering exactly this set,
    /// for a space of `bits` bits.
    pub fn prefixes(&self, bits: u32) -> Vec<(u128, u8)> {
        let mut out = Vec::new();
        for &(lo, hi) in &self.ranges {
            let mut start = lo;
            loop {
                // The largest block aligned at `start` that stays within `hi`.
                let align = if start == 0 {
                    bits
                } else {
                    start.trailing_zeros().min(bits)
                };
                let mut size_log = align;
                while size_log > 0 && block_end(start, size_log) > hi {
                    size_log -= 1;
                }
                out.push((start, (bits - size_log) as u8));
                let end = block_end(start, size_log);
                if end >= hi {
                    break;
                }
                start = end + 1;
            }
        }
        out
    }
}

/// The last value of the block of 2^size_log values starting at `start`.
fn block_end(start: u128, size_log: u32) -> u128 {
    if size_log >= 128 {
        u128::MAX
    } else {
        start.saturating_add((1u128 << size_log) - 1)
    }
}

/// Addresses of both families.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AddrSet {
    pub v4: RangeSet,
    pub v6: RangeSet,
}

impl AddrSet {
    pub fn new() -> AddrSet {
        AddrSet::default()
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    pub fn insert_addr(&mut self, addr: IpAddr) {
        match addr {
            IpAddr::V4(a) => {
                let v = u32::from(a) as u128;
                self.v4.insert(v, v)
            }
            IpAddr::V6(a) => {
                let v = u128::from(a);
                self.v6.insert(v, v)
            }
        }
    }

    pub fn insert_net(&mut self, net: IpNetwork) {
        let (set, lo, hi) = self.span(net);
        set.insert(lo, hi);
    }

    pub fn remove_net(&mut self, net: IpNetwork) {
        let (set, lo, hi) = self.span(net);
        set.remove(lo, hi);
    }

    fn span(&mut self, net: IpNetwork) -> (&mut RangeSet, u128, u128) {
        match net {
            IpNetwork::V4(n) => {
                let lo = u32::from(n.network()) as u128;
                let hi = u32::from(n.broadcast()) as u128;
                (&mut self.v4, lo, hi)
            }
            IpNetwork::V6(n) => {
                let lo = u128::from(n.network());
                let len = n.prefix() as u32;
                let hi = lo
                    | if len == 0 {
                        u128::MAX
                    } else {
                        (1u128 << (128 - len)) - 1
                    };
                (&mut self.v6, lo, if len == 128 { lo } else { hi })
            }
        }
    }

    pub fn union(&mut self, other: &AddrSet) {
        self.v4.union(&other.v4);
        self.v6.union(&other.v6);
    }

    /// The set of these addresses, in one sort.
    pub fn from_addrs<'a>(addrs: impl IntoIterator<Item = &'a IpAddr>) -> AddrSet {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for addr in addrs {
            match addr {
                IpAddr::V4(a) => {
                    let v = u32::from(*a) as u128;
                    v4.push((v, v))
                }
                IpAddr::V6(a) => {
                    let v = u128::from(*a);
                    v6.push((v, v))
                }
            }
        }
        AddrSet {
            v4: RangeSet::from_ranges(v4),
            v6: RangeSet::from_ranges(v6),
        }
    }

    pub fn contains(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(a) => self.v4.contains(u32::from(a) as u128),
            IpAddr::V6(a) => self.v6.contains(u128::from(a)),
        }
    }

    /// The fewest non-overlapping IPv4 prefixes covering exactly the IPv4 part.
    pub fn prefixes_v4(&self) -> Vec<IpNetwork> {
        self.v4
            .prefixes(32)
            .into_iter()
            .filter_map(|(start, len)| {
                Ipv4Network::new(Ipv4Addr::from(start as u32), len)
                    .ok()
                    .map(IpNetwork::V4)
            })
            .collect()
    }

    /// The fewest non-overlapping IPv6 prefixes covering exactly the IPv6 part.
    pub fn prefixes_v6(&self) -> Vec<IpNetwork> {
        self.v6
            .prefixes(128)
            .into_iter()
            .filter_map(|(start, len)| {
                Ipv6Network::new(Ipv6Addr::from(start), len)
                    .ok()
                    .map(IpNetwork::V6)
            })
            .collect()
    }
}

/// The transport protocols a NetworkPolicyPort names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// The API's spelling (`TCP`, `UDP`, `SCTP`); anything else is `None`.
    pub fn from_api(name: &str) -> Option<Protocol> {
        match name {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// nftables' name of the protocol (`meta l4proto tcp`).
    pub fn nft_name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }

    pub fn from_nft(name: &str) -> Option<Protocol> {
        match name {
            "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            "sctp" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

/// An inclusive port range (a single port is `lo == hi`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub const ALL: PortRange = PortRange { lo: 0, hi: 65535 };

    pub fn single(port: u16) -> PortRange {
        PortRange { lo: port, hi: port }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

/// Peers with ports, normalised so that no two cells overlap: per protocol, the port
/// axis is cut at every range boundary, each piece holds the union of the addresses of
/// every entry covering it, and neighbouring pieces with equal addresses are merged again.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PeerPortTable {
    /// Entries merged by their exact port range, so that thousands of peers on a few
    /// ports cost a few ranges when cut.
    raw: BTreeMap<(Protocol, PortRange), AddrSet>,
}

impl PeerPortTable {
    pub fn insert(&mut self, protocol: Protocol, ports: PortRange, addrs: &AddrSet) {
        if !addrs.is_empty() {
            self.raw.entry((protocol, ports)).or_default().union(addrs);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// Disjoint cells `(protocol, ports, addresses)`, sorted.
    pub fn cells(&self) -> Vec<(Protocol, PortRange, AddrSet)> {
        let mut by_protocol: BTreeMap<Protocol, Vec<(PortRange, &AddrSet)>> = BTreeMap::new();
        for ((protocol, range), addrs) in &self.raw {
            by_protocol
                .entry(*protocol)
                .or_default()
                .push((*range, addrs));
        }
        let mut out = Vec::new();
        for (protocol, entries) in by_protocol {
            // Cut points: every range start, and every range end + 1.
            let mut cuts: Vec<u32> = entries
                .iter()
                .flat_map(|(r, _)| [r.lo as u32, r.hi as u32 + 1])
                .collect();
            cuts.sort_unstable();
            cuts.dedup();
            let mut pieces: Vec<(PortRange, AddrSet)> = Vec::new();
            for w in cuts.windows(2) {
                let piece = PortRange {
                    lo: w[0] as u16,
                    hi: (w[1] - 1) as u16,
                };
                let mut addrs = AddrSet::new();
                for (r, a) in &entries {
                    if r.lo <= piece.lo && piece.hi <= r.hi {
                        addrs.union(a);
                    }
                }
                if addrs.is_empty() {
                    continue;
                }
                match pieces.last_mut() {
                    Some((last, last_addrs))
                        if last.hi as u32 + 1 == piece.lo as u32 && *last_addrs == addrs =>
                    {
                        last.hi = piece.hi
                    }
                    _ => pieces.push((piece, addrs)),
                }
            }
            out.extend(pieces.into_iter().map(|(r, a)| (protocol, r, a)));
        }
        out
    }
}

/// Port ranges per protocol, merged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PortSet {
    by_protocol: BTreeMap<Protocol, RangeSet>,
}

impl PortSet {
    pub fn insert(&mut self, protocol: Protocol, ports: PortRange) {
        self.by_protocol
            .entry(protocol)
            .or_default()
            .insert(ports.lo as u128, ports.hi as u128);
    }

    pub fn is_empty(&self) -> bool {
        self.by_protocol.is_empty()
    }

    /// Disjoint `(protocol, ports)` pairs, sorted.
    pub fn ranges(&self) -> Vec<(Protocol, PortRange)> {
        let mut out = Vec::new();
        for (protocol, set) in &self.by_protocol {
            for &(lo, hi) in set.ranges() {
                out.push((
                    *protocol,
                    PortRange {
                        lo: lo as u16,
                        hi: hi as u16,
                    },
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn strings(nets: Vec<IpNetwork>) -> Vec<String> {
        nets.into_iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn a_block_minus_its_exceptions_is_the_fewest_prefixes() {
        let mut set = AddrSet::new();
        set.insert_net(net("10.0.0.0/24"));
        set.remove_net(net("10.0.0.128/25"));
        set.remove_net(net("10.0.0.5/32"));
        assert_eq!(
            strings(set.prefixes_v4()),
            [
                "10.0.0.0/30",
                "10.0.0.4/32",
                "10.0.0.6/31",
                "10.0.0.8/29",
                "10.0.0.16/28",
                "10.0.0.32/27",
                "10.0.0.64/26"
            ]
        );
    }

    #[test]
    fn overlapping_and_touching_prefixes_merge() {
        let mut set = AddrSet::new();
        for n in ["10.0.0.0/25", "10.0.0.128/25", "10.0.0.7/32", "10.0.1.0/24"] {
            set.insert_net(net(n));
        }
        assert_eq!(strings(set.prefixes_v4()), ["10.0.0.0/23"]);
    }

    #[test]
    fn the_whole_space_is_one_prefix_in_both_families() {
        let mut set = AddrSet::new();
        set.insert_net(net("0.0.0.0/0"));
        set.insert_net(net("::/0"));
        assert_eq!(strings(set.prefixes_v4()), ["0.0.0.0/0"]);
        assert_eq!(strings(set.prefixes_v6()), ["::/0"]);
        set.remove_net(net("::/1"));
        assert_eq!(strings(set.prefixes_v6()), ["8000::/1"]);
    }

    #[test]
    fn ipv6_hosts_and_prefixes() {
        let mut set = AddrSet::new();
        set.insert_addr("fd00::5".parse().unwrap());
        set.insert_net(net("fd00:1::/64"));
        assert_eq!(strings(set.prefixes_v6()), ["fd00::5/128", "fd00:1::/64"]);
        assert!(set.contains("fd00:1::99".parse().unwrap()));
        assert!(!set.contains("fd00::6".parse().unwrap()));
    }

    #[test]
    fn peer_port_cells_never_overlap() {
        let mut a = AddrSet::new();
        a.insert_net(net("10.0.0.0/24"));
        let mut b = AddrSet::new();
        b.insert_addr("10.0.0.5".parse().unwrap());
        b.insert_addr("10.0.9.9".parse().unwrap());
        let mut table = PeerPortTable::default();
        table.insert(Protocol::Tcp, PortRange { lo: 80, hi: 90 }, &a);
        table.insert(Protocol::Tcp, PortRange { lo: 85, hi: 95 }, &b);
        table.insert(Protocol::Udp, PortRange::single(53), &b);
        let cells: Vec<(Protocol, String, Vec<String>)> = table
            .cells()
            .into_iter()
            .map(|(p, r, a)| (p, r.to_string(), strings(a.prefixes_v4())))
            .collect();
        assert_eq!(
            cells,
            [
                (Protocol::Tcp, "80-84".into(), vec!["10.0.0.0/24".into()]),
                (
                    Protocol::Tcp,
                    "85-90".into(),
                    vec!["10.0.0.0/24".into(), "10.0.9.9/32".into()]
                ),
                (
                    Protocol::Tcp,
                    "91-95".into(),
                    vec!["10.0.0.5/32".into(), "10.0.9.9/32".into()]
                ),
                (
                    Protocol::Udp,
                    "53".into(),
                    vec!["10.0.0.5/32".into(), "10.0.9.9/32".into()]
                ),
            ]
        );
    }

    #[test]
    fn equal_neighbouring_port_pieces_merge() {
        let mut a = AddrSet::new();
        a.insert_addr("10.0.0.1".parse().unwrap());
        let mut table = PeerPortTable::default();
        table.insert(Protocol::Tcp, PortRange { lo: 80, hi: 85 }, &a);
        table.insert(Protocol::Tcp, PortRange { lo: 86, hi: 90 }, &a);
        table.insert(Protocol::Tcp, PortRange { lo: 83, hi: 84 }, &a);
        let cells = table.cells();
        assert_eq!(cells.len(), 1);
        assert_eq!(cells[0].1, PortRange { lo: 80, hi: 90 });
    }

    #[test]
    fn port_sets_merge_per_protocol() {
        let mut ports = PortSet::default();
        ports.insert(Protocol::Tcp, PortRange::single(80));
        ports.insert(Protocol::Tcp, PortRange::single(81));
        ports.insert(Protocol::Udp, PortRange::single(81));
        ports.insert(Protocol::Tcp, PortRange { lo: 100, hi: 200 });
        assert_eq!(
            ports.ranges(),
            [
                (Protocol::Tcp, PortRange { lo: 80, hi: 81 }),
                (Protocol::Tcp, PortRange { lo: 100, hi: 200 }),
                (Protocol::Udp, PortRange::single(81)),
            ]
        );
    }
}
