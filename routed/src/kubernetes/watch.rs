//! One watch of one kind of object, for every kind the daemon follows (Nodes today;
//! Pods, Namespaces, NetworkPolicies, Services and EndpointSlices in the next issues).
//! kube-runtime's watcher does the protocol: a paged list, a watch from the list's
//! resourceVersion with bookmarks, a resumed watch from the last resourceVersion seen
//! after a dropped connection, a fresh list after 410 Gone; its default backoff spaces
//! out retries while the API server is away. [`ObjectWatch`] turns its events into
//! complete lists and single changes, so a consumer never sees half a re-list.

use futures::{Stream, StreamExt};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::pin::Pin;
use tracing::info;

/// What a watch says, in the order the API server said it.
#[derive(Debug)]
pub enum ObjectEvent<K> {
    /// Every object there is (at start, after 410 Gone, after a watch that could not
    /// resume): replaces whatever the consumer knew.
    Listed(Vec<K>),
    /// Added or changed.
    Applied(K),
    Deleted(K),
    /// The API cannot be listed or watched now; the watcher retries with backoff, and
    /// what the consumer knows stays true until the next event.
    Failed(watcher::Error),
}

type Events<K> = Pin<Box<dyn Stream<Item = Result<Event<K>, watcher::Error>> + Send>>;

pub struct ObjectWatch<K> {
    events: Events<K>,
    /// The objects of a (re-)list under way.
    relist: Option<Vec<K>>,
    /// The kind's plural name, for log lines (`Nodes`).
    kind: &'static str,
}

impl<K> ObjectWatch<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    pub fn new(api: Api<K>, kind: &'static str) -> ObjectWatch<K> {
        let events = watcher::watcher(api, watcher::Config::default()).default_backoff();
        ObjectWatch {
            events: Box::pin(events),
            relist: None,
            kind,
        }
    }

    /// The next event; `None` when the watch has ended (it does not, short of a bug).
    pub async fn next(&mut self) -> Option<ObjectEvent<K>> {
        loop {
            match self.events.next().await? {
                Ok(Event::Init) => self.relist = Some(Vec::new()),
                Ok(Event::InitApply(object)) => {
                    if let Some(list) = self.relist.as_mut() {
                        list.push(object);
                    }
                }
                Ok(Event::InitDone) => {
                    return Some(ObjectEvent::Listed(self.relist.take().unwrap_or_default()))
                }
                Ok(Event::Apply(object)) => return Some(ObjectEvent::Applied(object)),
                Ok(Event::Delete(object)) => return Some(ObjectEvent::Deleted(object)),
                // The normal end of an old watch: only the re-list it causes is news.
                Err(watcher::Error::WatchError(status)) if status.code == 410 => {
                    info!(
                        kind = self.kind,
                        "watch resourceVersion too old (410 Gone): listing the {} again", self.kind
                    );
                }
                Err(e) => return Some(ObjectEvent::Failed(e)),
            }
        }
    }
}
