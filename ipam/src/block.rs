//! One block: a slice of a pool affine to one node, and the allocations made in it. Its
//! JSON record is what a store keeps, and the only record of who holds which address.
//!
//! Ordinal 0 (the block's first address) is never handed to a pod: it is kept for the node
//! itself, e.g. the address of a future VXLAN tunnel device, so that device can take an
//! address from the node's own block without asking the store.

use crate::pool;
use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

/// An attachment holding addresses: the CNI runtime's container ID and interface name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Handle {
    pub container_id: String,
    pub ifname: String,
}

impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.container_id, self.ifname)
    }
}

/// Who an allocation is for, so an operator reading a block can tell which pod holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Owner {
    pub network: String,
    pub pod_namespace: Option<String>,
    pub pod_name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocation {
    pub handle: Handle,
    pub owner: Owner,
}

/// Why a specific address cannot be taken.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    Reserved,
    InUse(Handle),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub cidr: IpNetwork,
    pub node: String,
    /// Where the search for a free address starts: addresses are handed out round-robin so
    /// a just-released one is not reused at once (stale neighbour and conntrack entries).
    next: u32,
    allocations: BTreeMap<u32, Allocation>,
}

impl Block {
    pub fn new(cidr: IpNetwork, node: &str) -> Block {
        Block {
            cidr,
            node: node.to_string(),
            next: 1,
            allocations: BTreeMap::new(),
        }
    }

    /// Number of addresses, ordinal 0 included.
    pub fn capacity(&self) -> u32 {
        let host_bits = pool::family_bits(self.cidr.is_ipv6()) - self.cidr.prefix();
        1u32 << host_bits
    }

    pub fn address(&self, ordinal: u32) -> IpAddr {
        let first = pool::to_u128(self.cidr.network());
        pool::from_u128(first + u128::from(ordinal), self.cidr.is_ipv6())
    }

    pub fn ordinal(&self, addr: IpAddr) -> Option<u32> {
        if !self.cidr.contains(addr) {
            return None;
        }
        let first = pool::to_u128(self.cidr.network());
        u32::try_from(pool::to_u128(addr) - first).ok()
    }

    pub fn is_full(&self) -> bool {
        self.allocations.len() as u32 >= self.capacity() - 1
    }

    /// Takes the next free address after the last one handed out, wrapping around.
    pub fn take_next(&mut self, allocation: Allocation) -> Option<IpAddr> {
        let usable = self.capacity() - 1;
        let ordinal = (0..usable)
            .map(|i| 1 + (self.next - 1 + i) % usable)
            .find(|o| !self.allocations.contains_key(o))?;
        self.allocations.insert(ordinal, allocation);
        self.next = 1 + ordinal % usable;
        Some(self.address(ordinal))
    }

    /// Takes exactly `addr`, which must lie in this block.
    pub fn take(&mut self, addr: IpAddr, allocation: Allocation) -> Result<(), Refusal> {
        match self.ordinal(addr) {
            None => panic!("{addr} is not in block {}", self.cidr),
            Some(0) => Err(Refusal::Reserved),
            Some(o) => match self.allocations.get(&o) {
                Some(held) => Err(Refusal::InUse(held.handle.clone())),
                None => {
                    self.allocations.insert(o, allocation);
                    Ok(())
                }
            },
        }
    }

    pub fn held_by<'a>(&'a self, handle: &'a Handle) -> impl Iterator<Item = IpAddr> + 'a {
        self.allocations
            .iter()
            .filter(move |(_, a)| a.handle == *handle)
            .map(|(o, _)| self.address(*o))
    }

    /// Releases every allocation `drop` selects; returns what it released.
    pub fn release_where(
        &mut self,
        mut drop: impl FnMut(&Allocation) -> bool,
    ) -> Vec<(Handle, IpAddr)> {
        let doomed: Vec<u32> = self
            .allocations
            .iter()
            .filter(|(_, a)| drop(a))
            .map(|(o, _)| *o)
            .collect();
        doomed
            .into_iter()
            .map(|o| {
                let a = self.allocations.remove(&o).expect("listed above");
                (a.handle, self.address(o))
            })
            .collect()
    }

    pub fn allocations(&self) -> impl Iterator<Item = (IpAddr, &Allocation)> + '_ {
        self.allocations.iter().map(|(o, a)| (self.address(*o), a))
    }

    /// The record a store keeps: pretty JSON an operator can read with `cat`.
    pub fn to_json(&self) -> Vec<u8> {
        let record = BlockRecord {
            cidr: self.cidr.to_string(),
            node: self.node.clone(),
            next_address: self.address(self.next).to_string(),
            allocations: self
                .allocations()
                .map(|(addr, a)| AllocationRecord::new(addr, a))
                .collect(),
        };
        let mut out = serde_json::to_vec_pretty(&record).expect("records serialize");
        out.push(b'\n');
        out
    }

    pub fn from_json(bytes: &[u8]) -> Result<Block, String> {
        let record: BlockRecord = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let cidr: IpNetwork = record
            .cidr
            .parse()
            .map_err(|e| format!("cidr {:?}: {e}", record.cidr))?;
        if !pool::is_aligned(cidr) {
            return Err(format!("cidr {cidr} has host bits set"));
        }
        let mut block = Block::new(cidr, &record.node);
        let next = parse_addr(&record.next_address, "nextAddress")?;
        block.next = match block.ordinal(next) {
            Some(o) if o > 0 => o,
            _ => {
                return Err(format!(
                    "nextAddress {next} is not a usable address of {cidr}"
                ))
            }
        };
        for a in record.allocations {
            let addr = parse_addr(&a.address, "address")?;
            let (addr, allocation) = (addr, a.into_allocation());
            match block.ordinal(addr) {
                Some(_) => block
                    .take(addr, allocation)
                    .map_err(|r| format!("allocation {addr} cannot be held: {r:?}"))?,
                None => return Err(format!("allocation {addr} is outside {cidr}")),
            }
        }
        Ok(block)
    }
}

fn parse_addr(text: &str, key: &str) -> Result<IpAddr, String> {
    text.parse()
        .map_err(|e| format!("{key} {text:?} is not an IP address: {e}"))
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlockRecord {
    cidr: String,
    node: String,
    next_address: String,
    allocations: Vec<AllocationRecord>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AllocationRecord {
    address: String,
    #[serde(rename = "containerID")]
    container_id: String,
    ifname: String,
    network: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pod_namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pod_name: Option<String>,
}

impl AllocationRecord {
    fn new(addr: IpAddr, a: &Allocation) -> Self {
        AllocationRecord {
            address: addr.to_string(),
            container_id: a.handle.container_id.clone(),
            ifname: a.handle.ifname.clone(),
            network: a.owner.network.clone(),
            pod_namespace: a.owner.pod_namespace.clone(),
            pod_name: a.owner.pod_name.clone(),
        }
    }

    fn into_allocation(self) -> Allocation {
        Allocation {
            handle: Handle {
                container_id: self.container_id,
                ifname: self.ifname,
            },
            owner: Owner {
                network: self.network,
                pod_namespace: self.pod_namespace,
                pod_name: self.pod_name,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc(id: &str) -> Allocation {
        Allocation {
            handle: Handle {
                container_id: id.into(),
                ifname: "eth0".into(),
            },
            owner: Owner {
                network: "fjord".into(),
                pod_namespace: Some("default".into()),
                pod_name: Some(format!("pod-{id}")),
            },
        }
    }

    fn block(cidr: &str) -> Block {
        Block::new(cidr.parse().unwrap(), "node-1")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ordinal_zero_is_never_handed_out() {
        let mut b = block("10.0.0.0/30");
        let got: Vec<_> = (0..4).map(|i| b.take_next(alloc(&i.to_string()))).collect();
        assert_eq!(
            got,
            vec![
                Some(ip("10.0.0.1")),
                Some(ip("10.0.0.2")),
                Some(ip("10.0.0.3")),
                None
            ]
        );
        assert!(b.is_full());
        assert_eq!(b.take(ip("10.0.0.0"), alloc("x")), Err(Refusal::Reserved));
    }

    #[test]
    fn released_addresses_are_reused_only_after_a_full_round() {
        let mut b = block("10.0.0.0/29");
        let first = b.take_next(alloc("a")).unwrap();
        b.take_next(alloc("b")).unwrap();
        let released = b.release_where(|a| a.handle.container_id == "a");
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].1, first);
        let next: Vec<_> = (0..6)
            .map(|i| b.take_next(alloc(&format!("c{i}"))))
            .collect();
        assert_eq!(next[0], Some(ip("10.0.0.3")));
        assert_eq!(next[4], Some(ip("10.0.0.7")));
        assert_eq!(next[5], Some(first), "wraps around to the released address");
    }

    #[test]
    fn taking_a_held_address_names_the_holder() {
        let mut b = block("fd00::/126");
        b.take(ip("fd00::2"), alloc("a")).unwrap();
        assert_eq!(
            b.take(ip("fd00::2"), alloc("b")),
            Err(Refusal::InUse(alloc("a").handle))
        );
        let held: Vec<_> = b.held_by(&alloc("a").handle).collect();
        assert_eq!(held, vec![ip("fd00::2")]);
    }

    #[test]
    fn the_record_round_trips_and_reads_like_the_readme() {
        let mut b = block("10.244.0.0/26");
        b.take_next(alloc("c1")).unwrap();
        let mut bare = alloc("c2");
        bare.owner.pod_name = None;
        bare.owner.pod_namespace = None;
        b.take_next(bare).unwrap();
        let json = b.to_json();
        assert_eq!(Block::from_json(&json).unwrap(), b);
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["cidr"], "10.244.0.0/26");
        assert_eq!(v["nextAddress"], "10.244.0.3");
        assert_eq!(v["allocations"][0]["address"], "10.244.0.1");
        assert_eq!(v["allocations"][0]["containerID"], "c1");
        assert_eq!(v["allocations"][0]["podName"], "pod-c1");
        assert!(v["allocations"][1].get("podName").is_none());
    }

    #[test]
    fn records_that_cannot_be_true_are_refused() {
        let bad = |s: &str| Block::from_json(s.as_bytes()).unwrap_err();
        let base = r#""node":"n","nextAddress":"10.0.0.1""#;
        assert!(bad("{").contains("EOF"));
        assert!(bad(&format!(
            r#"{{"cidr":"10.0.0.1/30",{base},"allocations":[]}}"#
        ))
        .contains("host bits"));
        let reserved = format!(
            r#"{{"cidr":"10.0.0.0/30",{base},"allocations":[{{"address":"10.0.0.0",
                "containerID":"c","ifname":"eth0","network":"n"}}]}}"#
        );
        assert!(bad(&reserved).contains("Reserved"));
        let outside = reserved.replace("\"10.0.0.0\",", "\"10.0.0.9\",");
        assert!(bad(&outside).contains("outside"));
        let twice = format!(
            r#"{{"cidr":"10.0.0.0/30",{base},"allocations":[
                {{"address":"10.0.0.1","containerID":"c","ifname":"eth0","network":"n"}},
                {{"address":"10.0.0.1","containerID":"d","ifname":"eth0","network":"n"}}]}}"#
        );
        assert!(bad(&twice).contains("InUse"));
    }
}
