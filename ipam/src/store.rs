//! Where blocks live. The allocator decides; a store only keeps blocks and runs each
//! decision as one transaction: read the blocks, decide, write the changed blocks. The
//! shape fits both a directory (a lock around plain reads and atomic writes) and etcd
//! (reads at a revision, then a compare-and-swap commit, retried on conflict).

use crate::allocator::Snapshot;
use crate::block::Block;
use crate::error::IpamError;

/// A transaction's decision: the blocks to write. An error writes nothing.
pub type Decide<'a> = dyn FnMut(&Snapshot) -> Result<Vec<Block>, IpamError> + 'a;

pub trait Store: Send + Sync {
    /// Every claim in the store, and the full records of `node`'s blocks. No lock is
    /// needed for this: each record is replaced atomically.
    fn snapshot(&self, node: &str) -> Result<Snapshot, IpamError>;

    /// Runs `decide` on a snapshot no other transaction changes before the blocks it
    /// returns are durably written. `decide` may run more than once (a store that commits
    /// optimistically retries on conflict); only the last run's blocks are written.
    fn transact(&self, node: &str, decide: &mut Decide<'_>) -> Result<(), IpamError>;

    /// Whether the store can be reached and written, as STATUS asks.
    fn check(&self) -> Result<(), IpamError>;

    /// Whether addresses can be handed out now. Releasing never waits for this: the
    /// kubernetes store can release before fjord-routed has written the podCIDRs.
    fn ready_to_allocate(&self) -> Result<(), IpamError> {
        Ok(())
    }
}
