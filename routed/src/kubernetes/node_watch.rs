//! The Node source of the cluster view for `--store kubernetes`: a watch of every Node
//! ([`ObjectWatch`]) kept in a [`NodeCache`], a [`ClusterEvent::Nodes`] whenever what
//! the core reads of it changes, and this node's podCIDRs file for the IPAM.

use super::client;
use super::nodes::{check_own_node, NodeCache, NodeInfo};
use super::watch::{ObjectEvent, ObjectWatch};
use crate::cluster::ClusterView;
use crate::error::RoutedError;
use crate::node::ClusterEvent;
use fjord_ipam::kubernetes::{write_pod_cidrs, PodCidrs};
use ipnetwork::IpNetwork;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{info, warn};

/// A failed write of the podCIDRs file is retried this often.
const WRITE_RETRY: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// This node's name: its Node object's name.
    pub node: String,
    /// `--node-address`, checked against the Node's InternalIPs.
    pub node_addresses: Vec<IpAddr>,
    /// The AS of nodes without the AS annotation: the daemon's own `--asn`.
    pub default_asn: u32,
    /// A kubeconfig file; without it, the in-cluster service account when
    /// KUBERNETES_SERVICE_HOST is set, else KUBECONFIG or ~/.kube/config.
    pub kubeconfig: Option<PathBuf>,
    /// Where this node's podCIDRs are written: `DIR/<node>.json`.
    pub pod_cidrs_dir: PathBuf,
    /// How long [`start`] waits for the first complete list of Nodes.
    pub first_list_timeout: Duration,
}

/// Connects, waits for the first complete list of Nodes, checks this node's Node is in
/// it, writes its podCIDRs and starts following the Nodes. The view's first event is
/// that list.
pub async fn start(options: WatchOptions) -> Result<ClusterView, RoutedError> {
    let (client, server) = client::connect(options.kubeconfig.as_deref()).await?;
    info!(node = %options.node, %server, "watching Node objects");
    let mut watch = ObjectWatch::new(Api::<Node>::all(client), "Nodes");
    let waited = options.first_list_timeout;
    let mut last_error = None;
    let listed = tokio::time::timeout(waited, first_list(&mut watch, &mut last_error)).await;
    let Ok(Some(nodes)) = listed else {
        return Err(RoutedError::KubeNodes {
            server,
            waited,
            last_error: last_error.unwrap_or_else(|| "no answer".into()),
        });
    };
    let mut follower = Follower::new(options);
    follower.listed(nodes);
    check_own_node(
        &follower.cache,
        &follower.options.node,
        &follower.options.node_addresses,
    )?;
    follower.file.sync(follower.own_pod_cidrs());
    let (tx, view) = ClusterView::channel();
    let first = follower.cache.view();
    follower.sent = Some(first.clone());
    // The channel is new and empty: this cannot wait.
    let _ = tx.send(ClusterEvent::Nodes(first)).await;
    tokio::spawn(follower.run(watch, tx));
    Ok(view)
}

/// Reads events until the first complete list, keeping the last error for the message
/// when none comes.
async fn first_list(
    watch: &mut ObjectWatch<Node>,
    last_error: &mut Option<String>,
) -> Option<Vec<Node>> {
    loop {
        match watch.next().await? {
            ObjectEvent::Listed(nodes) => return Some(nodes),
            ObjectEvent::Failed(e) => *last_error = Some(e.to_string()),
            ObjectEvent::Applied(_) | ObjectEvent::Deleted(_) => {}
        }
    }
}

/// The watcher task's state.
struct Follower {
    options: WatchOptions,
    cache: NodeCache,
    file: PodCidrsFile,
    /// The last view sent to the core.
    sent: Option<fjord_ipam::registry::NodeView>,
    /// The API failed since the last event that got through.
    failing: bool,
}

impl Follower {
    fn new(options: WatchOptions) -> Follower {
        Follower {
            file: PodCidrsFile::new(&options),
            options,
            cache: NodeCache::default(),
            sent: None,
            failing: false,
        }
    }

    /// Applies watch events for the daemon's life; sends a view when what the core
    /// reads changed, one [`ClusterEvent::Unavailable`] per outage of the API, and the
    /// view again when it answers after one.
    async fn run(mut self, mut watch: ObjectWatch<Node>, tx: mpsc::Sender<ClusterEvent>) {
        let mut retry = tokio::time::interval(WRITE_RETRY);
        loop {
            let event = tokio::select! {
                event = watch.next() => event,
                _ = retry.tick(), if self.file.failed => {
                    self.file.sync(self.own_pod_cidrs());
                    continue;
                }
            };
            let Some(event) = event else { break };
            let Some(out) = self.apply(event) else {
                continue;
            };
            if tx.send(out).await.is_err() {
                return; // the daemon is stopping
            }
        }
        warn!(node = %self.options.node, "the Node watcher ended; peers and routes stay as they are");
    }

    /// One watch event into the cache (and the file); what to tell the core, if anything.
    fn apply(&mut self, event: ObjectEvent<Node>) -> Option<ClusterEvent> {
        match event {
            ObjectEvent::Failed(e) => {
                if std::mem::replace(&mut self.failing, true) {
                    return None;
                }
                return Some(ClusterEvent::Unavailable {
                    error: format!("cannot watch Node objects: {e}"),
                });
            }
            ObjectEvent::Listed(nodes) => self.listed(nodes),
            ObjectEvent::Applied(node) => self.applied(&node),
            ObjectEvent::Deleted(node) => self.deleted(&node),
        }
        let recovered = std::mem::take(&mut self.failing);
        self.file.sync(self.own_pod_cidrs());
        let view = self.cache.view();
        if !recovered && self.sent.as_ref() == Some(&view) {
            return None;
        }
        self.sent = Some(view.clone());
        Some(ClusterEvent::Nodes(view))
    }

    /// A (re-)list replaces the cache whole, so nodes deleted while the watch was down
    /// disappear.
    fn listed(&mut self, nodes: Vec<Node>) {
        let mut listed = NodeCache::default();
        for node in &nodes {
            if let Some(info) = NodeInfo::from_node(node, self.options.default_asn) {
                note_problems(Some(&info), None);
                listed.insert(info);
            }
        }
        info!(node = %self.options.node, nodes = listed.len(), "listed the Node objects");
        self.cache = listed;
    }

    fn applied(&mut self, node: &Node) {
        let Some(info) = NodeInfo::from_node(node, self.options.default_asn) else {
            return;
        };
        let before = self.cache.get(&info.name).cloned();
        if before.as_ref() != Some(&info) {
            note_problems(Some(&info), before.as_ref());
            let addresses: Vec<String> = info.addresses.iter().map(ToString::to_string).collect();
            info!(node = %self.options.node, changed = %info.name, addresses = %addresses.join(", "),
                pod_cidrs = %cidr_list(&info.pod_cidrs), asn = info.asn, "Node added or changed");
        }
        self.cache.insert(info);
    }

    fn deleted(&mut self, node: &Node) {
        if let Some(name) = node.metadata.name.as_deref() {
            if self.cache.remove(name).is_some() {
                info!(node = %self.options.node, deleted = name, "Node deleted");
            }
        }
    }

    fn own_pod_cidrs(&self) -> Option<Vec<IpNetwork>> {
        self.cache
            .get(&self.options.node)
            .map(|n| n.pod_cidrs.clone())
    }
}

fn note_problems(now: Option<&NodeInfo>, before: Option<&NodeInfo>) {
    let Some(now) = now else { return };
    if !now.problems.is_empty() && before.map(|b| &b.problems) != Some(&now.problems) {
        warn!(node = %now.name, problems = %now.problems.join("; "), "Node object partly unusable");
    }
}

/// This node's podCIDRs file, rewritten whenever its Node's podCIDRs change.
struct PodCidrsFile {
    dir: PathBuf,
    node: String,
    written: Option<Vec<IpNetwork>>,
    failed: bool,
}

impl PodCidrsFile {
    fn new(options: &WatchOptions) -> PodCidrsFile {
        PodCidrsFile {
            dir: options.pod_cidrs_dir.clone(),
            node: options.node.clone(),
            written: None,
            failed: false,
        }
    }

    /// Writes the file when the Node's podCIDRs differ from what was written. A Node
    /// without podCIDRs (not assigned yet) or gone leaves the file as it is.
    fn sync(&mut self, pod_cidrs: Option<Vec<IpNetwork>>) {
        let Some(pod_cidrs) = pod_cidrs else {
            return;
        };
        if pod_cidrs.is_empty() || self.written.as_ref() == Some(&pod_cidrs) {
            return;
        }
        let record = PodCidrs {
            node: self.node.clone(),
            pod_cidrs,
        };
        match write_pod_cidrs(&self.dir, &record) {
            Ok(()) => {
                info!(node = %self.node, pod_cidrs = %cidr_list(&record.pod_cidrs), dir = %self.dir.display(),
                    "wrote the node's podCIDRs for the IPAM");
                self.written = Some(record.pod_cidrs);
                self.failed = false;
            }
            Err(e) => {
                if !self.failed {
                    warn!(node = %self.node, error = %e, "cannot write the node's podCIDRs; retrying");
                }
                self.failed = true;
            }
        }
    }
}

/// `10.244.1.0/24, fd00:10:244:1::/64` for log lines.
fn cidr_list(cidrs: &[IpNetwork]) -> String {
    let texts: Vec<String> = cidrs.iter().map(ToString::to_string).collect();
    texts.join(", ")
}
