//! The allocation decisions, made on a snapshot of the store and returned as the blocks
//! to write. No I/O: a store runs these inside its transaction.

use crate::block::{Allocation, Block, Handle, Owner, Refusal};
use crate::error::IpamError;
use crate::pool::{self, ClaimIndex};
use ipnetwork::IpNetwork;
use std::collections::BTreeSet;
use std::net::IpAddr;

/// How the address space is cut: the configured pools and block lengths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub pools: Vec<IpNetwork>,
    pub block_size_v4: u8,
    pub block_size_v6: u8,
}

impl Layout {
    fn block_size(&self, v6: bool) -> u8 {
        if v6 {
            self.block_size_v6
        } else {
            self.block_size_v4
        }
    }

    fn pools_of(&self, v6: bool) -> Vec<IpNetwork> {
        self.pools
            .iter()
            .copied()
            .filter(|p| p.is_ipv6() == v6)
            .collect()
    }
}

/// A block's existence and affinity, without its allocations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub block: IpNetwork,
    pub node: String,
}

/// What a decision is made on: every claim in the store, and the full records of the
/// deciding node's blocks (a node has few; the rest of the cluster is only claims).
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub claims: Vec<Claim>,
    pub own: Vec<Block>,
}

/// A decision's outcome and the blocks to write for it (new claims included).
#[derive(Debug)]
pub struct Decision<T> {
    pub outcome: T,
    pub changed: Vec<Block>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assigned {
    pub address: IpAddr,
    pub block: IpNetwork,
}

/// One address per family present in the pools, for `handle`. A requested address
/// replaces the automatic choice for its family.
pub fn allocate(
    layout: &Layout,
    node: &str,
    snap: &Snapshot,
    handle: &Handle,
    owner: &Owner,
    requested: &[IpAddr],
) -> Result<Decision<Vec<Assigned>>, IpamError> {
    let held = lookup(snap, handle);
    if !held.is_empty() {
        return Err(IpamError::AlreadyAllocated {
            handle: handle.clone(),
            addresses: held.into_iter().map(|a| a.address).collect(),
        });
    }
    check_requested(layout, requested)?;
    let mut work = Work::new(node, snap)?;
    let allocation = Allocation {
        handle: handle.clone(),
        owner: owner.clone(),
    };
    let mut assigned = Vec::new();
    for v6 in [false, true] {
        let pools = layout.pools_of(v6);
        if pools.is_empty() {
            continue;
        }
        let a = match requested.iter().find(|a| a.is_ipv6() == v6) {
            Some(&address) => work.take_exact(layout, address, &allocation)?,
            None => work.take_any(layout, &pools, &allocation)?,
        };
        assigned.push(a);
    }
    Ok(work.finish(assigned))
}

/// Releases every address `handle` holds on this node; an unknown handle releases nothing.
pub fn release(snap: &Snapshot, handle: &Handle) -> Decision<Vec<IpAddr>> {
    let decision = release_where(snap, |a| a.handle == *handle);
    Decision {
        outcome: decision.outcome.into_iter().map(|(_, ip)| ip).collect(),
        changed: decision.changed,
    }
}

/// Releases this node's allocations of `network` whose handle is not in `keep`.
pub fn gc(snap: &Snapshot, network: &str, keep: &[Handle]) -> Decision<Vec<(Handle, IpAddr)>> {
    release_where(snap, |a| {
        a.owner.network == network && !keep.contains(&a.handle)
    })
}

pub fn lookup(snap: &Snapshot, handle: &Handle) -> Vec<Assigned> {
    snap.own
        .iter()
        .flat_map(|b| {
            b.held_by(handle).map(|address| Assigned {
                address,
                block: b.cidr,
            })
        })
        .collect()
}

fn release_where(
    snap: &Snapshot,
    mut drop: impl FnMut(&Allocation) -> bool,
) -> Decision<Vec<(Handle, IpAddr)>> {
    let mut outcome = Vec::new();
    let mut changed = Vec::new();
    for block in &snap.own {
        let mut block = block.clone();
        let released = block.release_where(&mut drop);
        if !released.is_empty() {
            outcome.extend(released);
            changed.push(block);
        }
    }
    Decision { outcome, changed }
}

fn check_requested(layout: &Layout, requested: &[IpAddr]) -> Result<(), IpamError> {
    for (i, address) in requested.iter().enumerate() {
        if !layout.pools.iter().any(|p| p.contains(*address)) {
            return Err(IpamError::NotInPool {
                address: *address,
                pools: layout.pools.clone(),
            });
        }
        if let Some(other) = requested[..i]
            .iter()
            .find(|o| o.is_ipv6() == address.is_ipv6())
        {
            return Err(IpamError::Config(format!(
                "requested addresses {other} and {address} are of one family; an attachment gets one address per family"
            )));
        }
    }
    Ok(())
}

/// A transaction's working copy of the node's blocks and the store's claims.
struct Work<'a> {
    node: &'a str,
    claims: ClaimIndex,
    own: Vec<Block>,
    changed: BTreeSet<usize>,
}

impl<'a> Work<'a> {
    fn new(node: &'a str, snap: &Snapshot) -> Result<Self, IpamError> {
        let claims = ClaimIndex::new(snap.claims.iter().map(|c| (c.block, c.node.as_str())))
            .map_err(|(a, b)| {
                IpamError::Config(format!(
                    "the store holds overlapping blocks {a} and {b}; remove one by hand"
                ))
            })?;
        let mut own = snap.own.clone();
        own.sort_by_key(|b| b.cidr);
        Ok(Work {
            node,
            claims,
            own,
            changed: BTreeSet::new(),
        })
    }

    /// An address from the node's blocks in `pools`, in pool order, claiming the next
    /// free block of a pool when the node's blocks in it are full.
    fn take_any(
        &mut self,
        layout: &Layout,
        pools: &[IpNetwork],
        allocation: &Allocation,
    ) -> Result<Assigned, IpamError> {
        for &pool in pools {
            let has_room = (0..self.own.len())
                .find(|&i| pool::covers(pool, self.own[i].cidr) && !self.own[i].is_full());
            let index = match has_room {
                Some(i) => i,
                None => match self
                    .claims
                    .first_free(pool, layout.block_size(pool.is_ipv6()))
                {
                    Some(cidr) => self.claim(cidr),
                    None => continue,
                },
            };
            let address = self.own[index]
                .take_next(allocation.clone())
                .expect("a block with room or a fresh block");
            self.changed.insert(index);
            return Ok(Assigned {
                address,
                block: self.own[index].cidr,
            });
        }
        Err(IpamError::PoolExhausted {
            node: self.node.to_string(),
            pools: pools.to_vec(),
        })
    }

    /// Exactly `address`: from the node's block holding it, or from its block claimed now.
    fn take_exact(
        &mut self,
        layout: &Layout,
        address: IpAddr,
        allocation: &Allocation,
    ) -> Result<Assigned, IpamError> {
        let unavailable = |reason: String| IpamError::AddressUnavailable { address, reason };
        let index = match self.own.iter().position(|b| b.cidr.contains(address)) {
            Some(i) => i,
            None => {
                let cidr = pool::enclosing(address, layout.block_size(address.is_ipv6()));
                if let Some((block, node)) = self.claims.holder(cidr) {
                    return Err(unavailable(format!(
                        "its block {block} belongs to node {node}, not {}",
                        self.node
                    )));
                }
                self.claim(cidr)
            }
        };
        let block = &mut self.own[index];
        match block.take(address, allocation.clone()) {
            Ok(()) => {}
            Err(Refusal::Reserved) => {
                return Err(unavailable(format!(
                    "it is ordinal 0 of block {}, kept for the node",
                    block.cidr
                )))
            }
            Err(Refusal::InUse(holder)) => {
                return Err(unavailable(format!("handle {holder} holds it")))
            }
        }
        self.changed.insert(index);
        Ok(Assigned {
            address,
            block: block.cidr,
        })
    }

    fn claim(&mut self, cidr: IpNetwork) -> usize {
        self.claims.insert(cidr, self.node);
        self.own.push(Block::new(cidr, self.node));
        self.own.len() - 1
    }

    fn finish<T>(self, outcome: T) -> Decision<T> {
        let changed = self.changed.iter().map(|&i| self.own[i].clone()).collect();
        Decision { outcome, changed }
    }
}

#[cfg(test)]
mod tests;
