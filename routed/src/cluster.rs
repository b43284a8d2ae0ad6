//! The cluster view: what the node core learns about the cluster, as one stream of
//! [`ClusterEvent`]s whatever the store. Every `--store` is matched here and only here
//! ([`open`]), and each source registers the node before its first event:
//!
//! - `dir:` and `etcd:`: the store's [`Registry`], read every [`REGISTRY_POLL`] on the
//!   blocking pool (a read that hangs on an unreachable etcd never holds up the event
//!   loop, and so never BGP keepalives). An event goes out when what it reads changes,
//!   when it cannot be read (once per outage), and when it can again.
//! - `kubernetes`: the Node watcher ([`crate::kubernetes`]), which sends an event when
//!   the API server reports a change that matters to the node.
//!
//! The watches of the next issues (Pods, Namespaces, NetworkPolicies, Services,
//! EndpointSlices) send their own [`ClusterEvent`] variants into the same view, from
//! tasks built on [`crate::kubernetes::watch::ObjectWatch`].

use crate::config::Settings;
use crate::error::RoutedError;
use crate::kubernetes;
use crate::node::ClusterEvent;
use fjord_ipam::dir::DirStore;
use fjord_ipam::etcd::EtcdStore;
use fjord_ipam::registry::{NodeRecord, NodeView, Registry};
use fjord_ipam::StoreSpec;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{interval, MissedTickBehavior};

/// How often a `dir:` or `etcd:` registry is read: a block the IPAM claims is announced
/// within this, well inside the second the design asks for.
pub const REGISTRY_POLL: Duration = Duration::from_millis(250);
/// A DaemonSet pod that cannot list Nodes within this exits, and is restarted.
pub const KUBE_FIRST_LIST_TIMEOUT: Duration = Duration::from_secs(30);
/// Events queued for the core. Each is a complete view, so a source that gets ahead
/// only waits.
const QUEUE: usize = 4;

/// The receiving end: what the shell's event loop reads.
pub struct ClusterView {
    events: mpsc::Receiver<ClusterEvent>,
}

impl ClusterView {
    /// A view and the sender its sources feed.
    pub fn channel() -> (mpsc::Sender<ClusterEvent>, ClusterView) {
        let (tx, events) = mpsc::channel(QUEUE);
        (tx, ClusterView { events })
    }

    /// The next event; `None` once every source has ended.
    pub async fn recv(&mut self) -> Option<ClusterEvent> {
        self.events.recv().await
    }
}

/// Registers the node with the store `settings` names and starts following it.
pub async fn open(settings: &Settings) -> Result<ClusterView, RoutedError> {
    let record = NodeRecord {
        name: settings.node_name.clone(),
        addresses: settings.addresses.clone(),
        asn: settings.asn,
    };
    match &settings.store {
        StoreSpec::Dir(path) => poll(Arc::new(DirStore::open(path)?), &record),
        StoreSpec::Etcd(endpoints) => poll(Arc::new(EtcdStore::open(endpoints)?), &record),
        StoreSpec::Kubernetes(dir) => {
            kubernetes::start(kubernetes::WatchOptions {
                node: settings.node_name.clone(),
                node_addresses: settings.addresses.clone(),
                default_asn: settings.asn,
                kubeconfig: settings.kubeconfig.clone(),
                pod_cidrs_dir: dir.clone(),
                first_list_timeout: KUBE_FIRST_LIST_TIMEOUT,
            })
            .await
        }
    }
}

/// Registers the node, then polls the registry for the daemon's life.
fn poll(registry: Arc<dyn Registry>, record: &NodeRecord) -> Result<ClusterView, RoutedError> {
    registry.register(record)?;
    let (tx, view) = ClusterView::channel();
    tokio::spawn(poll_registry(registry, tx));
    Ok(view)
}

async fn poll_registry(registry: Arc<dyn Registry>, tx: mpsc::Sender<ClusterEvent>) {
    let mut tick = interval(REGISTRY_POLL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut poller = Poller::default();
    loop {
        tick.tick().await;
        let reader = registry.clone();
        let read = match tokio::task::spawn_blocking(move || reader.view()).await {
            Ok(read) => read.map_err(|e| e.to_string()),
            Err(e) => Err(format!("the registry read did not finish: {e}")),
        };
        let Some(event) = poller.event(read) else {
            continue;
        };
        if tx.send(event).await.is_err() {
            return; // the daemon is stopping
        }
    }
}

/// What a poll result means for the stream: only changes, one error per outage, and
/// the view again (even unchanged) once it is readable after one.
#[derive(Debug, Default)]
struct Poller {
    last: Option<NodeView>,
    failing: bool,
}

impl Poller {
    fn event(&mut self, read: Result<NodeView, String>) -> Option<ClusterEvent> {
        match read {
            Ok(view) => {
                let recovered = std::mem::take(&mut self.failing);
                if !recovered && self.last.as_ref() == Some(&view) {
                    return None;
                }
                self.last = Some(view.clone());
                Some(ClusterEvent::Nodes(view))
            }
            Err(_) if self.failing => None,
            Err(error) => {
                self.failing = true;
                Some(ClusterEvent::Unavailable { error })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(names: &[&str]) -> NodeView {
        NodeView {
            nodes: names
                .iter()
                .map(|n| NodeRecord {
                    name: n.to_string(),
                    addresses: vec![],
                    asn: 64512,
                })
                .collect(),
            claims: vec![],
        }
    }

    #[test]
    fn the_poller_sends_changes_one_error_per_outage_and_the_view_after_it() {
        let mut p = Poller::default();
        assert_eq!(
            p.event(Ok(view(&["a"]))),
            Some(ClusterEvent::Nodes(view(&["a"])))
        );
        assert_eq!(p.event(Ok(view(&["a"]))), None);
        assert_eq!(
            p.event(Ok(view(&["a", "b"]))),
            Some(ClusterEvent::Nodes(view(&["a", "b"])))
        );
        let down = ClusterEvent::Unavailable {
            error: "etcd away".into(),
        };
        assert_eq!(p.event(Err("etcd away".into())), Some(down));
        assert_eq!(p.event(Err("still away".into())), None);
        assert_eq!(
            p.event(Ok(view(&["a", "b"]))),
            Some(ClusterEvent::Nodes(view(&["a", "b"])))
        );
        assert_eq!(p.event(Ok(view(&["a", "b"]))), None);
    }

    #[tokio::test]
    async fn a_dir_store_registers_the_node_and_streams_its_view() {
        let dir = std::env::temp_dir().join(format!("fjord-cluster-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Arc::new(DirStore::open(&dir).unwrap());
        let record = NodeRecord {
            name: "n1".into(),
            addresses: vec!["10.0.0.1".parse().unwrap()],
            asn: 64512,
        };
        let mut view = poll(store.clone(), &record).unwrap();
        let Some(ClusterEvent::Nodes(first)) = view.recv().await else {
            panic!("no first view");
        };
        assert_eq!(first.nodes, vec![record.clone()]);
        let other = NodeRecord {
            name: "n2".into(),
            ..record.clone()
        };
        store.register(&other).unwrap();
        let Some(ClusterEvent::Nodes(second)) = view.recv().await else {
            panic!("no second view");
        };
        assert_eq!(second.nodes, vec![record, other]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
