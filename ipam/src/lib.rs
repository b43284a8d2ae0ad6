//! Fjord's cluster IPAM: pools cut into node-affine blocks, one address per family for
//! each attachment (handle = container ID + interface name), kept in a pluggable store.
//!
//! The `fjord` CNI plugin calls [`Ipam`] in-process; the `fjord-ipam` binary wraps the
//! same calls as a CNI IPAM plugin. Decisions are pure ([`allocator`]); the store only
//! runs them as transactions ([`store::Store`], implemented by [`dir::DirStore`] and
//! [`etcd::EtcdStore`]).

pub mod allocator;
pub mod block;
pub mod cni;
pub mod config;
pub mod dir;
pub mod error;
pub mod etcd;
pub mod kubernetes;
pub mod pool;
pub mod registry;
pub mod store;

pub use allocator::Assigned;
pub use block::{Handle, Owner};
pub use config::{EtcdSpec, IpamConfig, StoreSpec};
pub use error::IpamError;

use allocator::{Decision, Layout, Snapshot};
use ipnetwork::IpNetwork;
use std::net::IpAddr;
use store::Store;

pub struct Ipam {
    node: String,
    layout: Layout,
    store: Box<dyn Store>,
}

impl Ipam {
    /// Opens the configured store (a `dir:` store is created if missing).
    pub fn open(config: IpamConfig) -> Result<Ipam, IpamError> {
        let store: Box<dyn Store> = match &config.store {
            StoreSpec::Dir(path) => Box::new(dir::DirStore::open(path)?),
            StoreSpec::Etcd(etcd) => Box::new(etcd::EtcdStore::open(etcd)?),
            StoreSpec::Kubernetes(dir) => {
                let store = kubernetes::KubernetesStore::open(dir, &config.node_name)?;
                let config = store.layout_config(config)?;
                return Ok(Ipam::with_store(config, Box::new(store)));
            }
        };
        Ok(Ipam::with_store(config, store))
    }

    pub fn with_store(config: IpamConfig, store: Box<dyn Store>) -> Ipam {
        Ipam {
            layout: config.layout(),
            node: config.node_name,
            store,
        }
    }

    /// One address per family of the pools, recorded under `handle` with `owner`.
    /// `requested` addresses are taken exactly (one per family at most).
    pub fn allocate(
        &self,
        handle: &Handle,
        owner: &Owner,
        requested: &[IpAddr],
    ) -> Result<Vec<Assigned>, IpamError> {
        self.store.ready_to_allocate()?;
        self.transact(|snap| {
            allocator::allocate(&self.layout, &self.node, snap, handle, owner, requested)
        })
    }

    /// Releases what `handle` holds on this node; an unknown handle gives `Ok(vec![])`.
    pub fn release(&self, handle: &Handle) -> Result<Vec<IpAddr>, IpamError> {
        self.transact(|snap| Ok(allocator::release(snap, handle)))
    }

    pub fn lookup(&self, handle: &Handle) -> Result<Vec<Assigned>, IpamError> {
        let snap = self.store.snapshot(&self.node)?;
        Ok(allocator::lookup(&snap, handle))
    }

    /// Releases every allocation of this node's blocks for `network` whose handle is not
    /// in `keep`; returns what it released.
    pub fn gc(&self, network: &str, keep: &[Handle]) -> Result<Vec<(Handle, IpAddr)>, IpamError> {
        self.transact(|snap| Ok(allocator::gc(snap, network, keep)))
    }

    /// Whether the store is reachable and writable.
    pub fn status(&self) -> Result<(), IpamError> {
        self.store.check()
    }

    /// The blocks affine to this node: what the route daemon announces.
    pub fn node_blocks(&self) -> Result<Vec<IpNetwork>, IpamError> {
        let snap = self.store.snapshot(&self.node)?;
        let mut blocks: Vec<IpNetwork> = snap.own.iter().map(|b| b.cidr).collect();
        blocks.sort();
        Ok(blocks)
    }

    pub fn node_name(&self) -> &str {
        &self.node
    }

    fn transact<T>(
        &self,
        mut decide: impl FnMut(&Snapshot) -> Result<Decision<T>, IpamError>,
    ) -> Result<T, IpamError> {
        let mut outcome = None;
        self.store.transact(&self.node, &mut |snap| {
            let decision = decide(snap)?;
            outcome = Some(decision.outcome);
            Ok(decision.changed)
        })?;
        Ok(outcome.expect("a transaction that succeeded ran its decision"))
    }
}
