//! The registry `fjord-routed` uses on an etcd store. Its event loop polls the registry
//! synchronously every 250 ms; a call that waited on an unreachable etcd would stall
//! BGP keepalives with it. So the nodes and claims are read by a task on the store's own
//! runtime thread every [`REFRESH_EVERY`], and `nodes()`/`claims()` answer at once from
//! the last read: its result if it is recent, an error if it failed or is stale.

use super::{listing_txn, parse_listing, send, EtcdStore, Listing, REQUEST_TIMEOUT};
use crate::allocator::Claim;
use crate::config::EtcdSpec;
use crate::error::IpamError;
use crate::registry::{NodeRecord, Registry};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const REFRESH_EVERY: Duration = Duration::from_millis(100);
/// A view older than this means reads hang (e.g. a partitioned member): the store is
/// reported unreachable rather than trusted.
pub const STALE_AFTER: Duration = Duration::from_millis(1500);

struct View {
    at: Instant,
    result: Result<Listing, IpamError>,
}

type Shared = Arc<Mutex<Option<View>>>;

pub struct EtcdRegistry {
    view: Shared,
    store: EtcdStore,
}

impl EtcdRegistry {
    /// Opens the store, reads the registry once (so the first poll has an answer) and
    /// starts the background refresh.
    pub fn open(spec: &EtcdSpec) -> Result<EtcdRegistry, IpamError> {
        let store = EtcdStore::open(spec)?;
        let view: Shared = Arc::default();
        let registry = EtcdRegistry { view, store };
        registry.refresh_now();
        let (client, view) = (registry.store.client.clone(), registry.view.clone());
        registry.store.background.spawn(async move {
            loop {
                tokio::time::sleep(REFRESH_EVERY).await;
                let result = match send(client.clone(), listing_txn(), REQUEST_TIMEOUT).await {
                    Ok(response) => parse_listing(&response),
                    Err(reason) => Err(IpamError::StoreUnavailable {
                        // Filled in by `reissue` when a caller gets the error.
                        endpoints: String::new(),
                        reason,
                    }),
                };
                *view.lock().expect("view lock") = Some(View {
                    at: Instant::now(),
                    result,
                });
            }
        });
        Ok(registry)
    }

    /// A blocking read, so a change this process made is seen by its next poll.
    fn refresh_now(&self) {
        let result = self.store.listing();
        *self.view.lock().expect("view lock") = Some(View {
            at: Instant::now(),
            result,
        });
    }

    fn current(&self) -> Result<Listing, IpamError> {
        let view = self.view.lock().expect("view lock");
        let unavailable = |reason: String| self.store.unavailable(reason);
        match &*view {
            None => Err(unavailable("not read yet".into())),
            Some(view) if view.at.elapsed() > STALE_AFTER => Err(unavailable(format!(
                "no answer for {:?}",
                view.at.elapsed()
            ))),
            Some(View {
                result: Ok(listing),
                ..
            }) => Ok(listing.clone()),
            Some(View { result: Err(e), .. }) => Err(reissue(e, self.store.endpoints())),
        }
    }
}

/// The view keeps one error; each caller gets its own copy.
fn reissue(e: &IpamError, endpoints: &str) -> IpamError {
    match e {
        IpamError::CorruptRecord { path, reason } => IpamError::CorruptRecord {
            path: path.clone(),
            reason: reason.clone(),
        },
        IpamError::StoreUnavailable { reason, .. } => IpamError::StoreUnavailable {
            endpoints: endpoints.to_string(),
            reason: reason.clone(),
        },
        other => IpamError::StoreUnavailable {
            endpoints: endpoints.to_string(),
            reason: other.to_string(),
        },
    }
}

impl Registry for EtcdRegistry {
    fn register(&self, node: &NodeRecord) -> Result<(), IpamError> {
        self.store.register(node)?;
        self.refresh_now();
        Ok(())
    }

    fn deregister(&self, name: &str) -> Result<(), IpamError> {
        self.store.deregister(name)?;
        self.refresh_now();
        Ok(())
    }

    fn nodes(&self) -> Result<Vec<NodeRecord>, IpamError> {
        Ok(self.current()?.nodes)
    }

    fn claims(&self) -> Result<Vec<Claim>, IpamError> {
        Ok(self.current()?.claims)
    }
}
