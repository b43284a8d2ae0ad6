//! The client side of `--store kubernetes`: credentials, the Node watcher task, and the
//! podCIDRs file for the IPAM. kube-runtime's watcher does the protocol: a paged list,
//! a watch from the list's resourceVersion with bookmarks, a resumed watch from the last
//! resourceVersion seen after a dropped connection, a fresh list after 410 Gone; its
//! default backoff spaces out retries while the API server is away.

use super::nodes::{NodeCache, NodeInfo};
use crate::error::RoutedError;
use fjord_ipam::allocator::Claim;
use fjord_ipam::kubernetes::{write_pod_cidrs, PodCidrs};
use fjord_ipam::registry::{NodeRecord, Registry};
use fjord_ipam::IpamError;
use futures::StreamExt;
use ipnetwork::IpNetwork;
use k8s_openapi::api::core::v1::Node;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch as signal;
use tracing::{info, warn};

/// A failed write of the podCIDRs file is retried this often.
const WRITE_RETRY: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// This node's name: its Node object's name.
    pub node: String,
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

/// The watcher's cache, read by the daemon as its node registry.
#[derive(Clone)]
pub struct KubeRegistry {
    cache: Arc<Mutex<NodeCache>>,
}

impl KubeRegistry {
    /// A copy of what the watcher knows now.
    pub fn snapshot(&self) -> NodeCache {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, NodeCache> {
        self.cache.lock().expect("node cache lock")
    }
}

/// Kubelet owns Node objects: registering only checks that ours exists, leaving does
/// nothing.
impl Registry for KubeRegistry {
    fn register(&self, node: &NodeRecord) -> Result<(), IpamError> {
        let cache = self.lock();
        let Some(found) = cache.get(&node.name) else {
            return Err(IpamError::NoSuchNode {
                node: node.name.clone(),
            });
        };
        if !node.addresses.iter().any(|a| found.addresses.contains(a)) {
            warn!(node = %node.name, node_address = ?node.addresses, internal_ips = ?found.addresses,
                "--node-address is none of the Node's InternalIPs: the other nodes will peer with the InternalIP");
        }
        Ok(())
    }

    fn deregister(&self, _name: &str) -> Result<(), IpamError> {
        Ok(())
    }

    fn nodes(&self) -> Result<Vec<NodeRecord>, IpamError> {
        Ok(self.lock().records())
    }

    fn claims(&self) -> Result<Vec<Claim>, IpamError> {
        Ok(self.lock().claims())
    }
}

/// Where the watcher is: whether it has listed once, and its last error.
#[derive(Clone, Debug, Default)]
struct Progress {
    listed: bool,
    last_error: Option<String>,
}

/// Connects, starts the watcher task and waits for its first complete list of Nodes.
pub async fn start(options: WatchOptions) -> Result<KubeRegistry, RoutedError> {
    let config = client_config(options.kubeconfig.as_deref()).await?;
    let server = config.cluster_url.to_string();
    let client = kube::Client::try_from(config)
        .map_err(|e| RoutedError::KubeConfig(format!("cannot build a client for {server}: {e}")))?;
    let registry = KubeRegistry {
        cache: Arc::new(Mutex::new(NodeCache::default())),
    };
    let (progress_tx, mut progress) = signal::channel(Progress::default());
    let waited = options.first_list_timeout;
    info!(node = %options.node, %server, "watching Node objects");
    tokio::spawn(watch_nodes(
        Api::all(client),
        registry.clone(),
        options,
        progress_tx,
    ));
    let listed = tokio::time::timeout(waited, progress.wait_for(|p| p.listed))
        .await
        .is_ok_and(|r| r.is_ok());
    if listed {
        return Ok(registry);
    }
    let last_error = progress.borrow().last_error.clone();
    Err(RoutedError::KubeNodes {
        server,
        waited,
        last_error: last_error.unwrap_or_else(|| "no answer".into()),
    })
}

/// Credentials: `--kubeconfig`, else the in-cluster service account (token and CA under
/// /var/run/secrets/kubernetes.io/serviceaccount), else KUBECONFIG or ~/.kube/config.
async fn client_config(kubeconfig: Option<&Path>) -> Result<kube::Config, RoutedError> {
    if let Some(path) = kubeconfig {
        let bad = |e: String| RoutedError::KubeConfig(format!("{}: {e}", path.display()));
        let file = Kubeconfig::read_from(path).map_err(|e| bad(e.to_string()))?;
        return kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
            .await
            .map_err(|e| bad(e.to_string()));
    }
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        return kube::Config::incluster().map_err(|e| {
            RoutedError::KubeConfig(format!(
                "in-cluster service account (KUBERNETES_SERVICE_HOST/PORT, /var/run/secrets/kubernetes.io/serviceaccount): {e}"
            ))
        });
    }
    kube::Config::infer().await.map_err(|e| {
        RoutedError::KubeConfig(format!(
            "no --kubeconfig, not in a pod, and KUBECONFIG or ~/.kube/config: {e}"
        ))
    })
}

/// The watcher task: applies list and watch events to the cache and keeps the podCIDRs
/// file equal to this node's Node. Runs for the daemon's life.
async fn watch_nodes(
    api: Api<Node>,
    registry: KubeRegistry,
    options: WatchOptions,
    progress: signal::Sender<Progress>,
) {
    let mut events =
        std::pin::pin!(watcher::watcher(api, watcher::Config::default()).default_backoff());
    let mut file = PodCidrsFile::new(&options);
    let mut relist: Option<NodeCache> = None;
    let mut healthy = true;
    let mut retry = tokio::time::interval(WRITE_RETRY);
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            _ = retry.tick(), if file.failed => {
                file.sync(own_pod_cidrs(&registry, &options.node));
                continue;
            }
        };
        let Some(event) = event else { break };
        match event {
            Ok(event) => {
                if !healthy {
                    info!(node = %options.node, "the Kubernetes API answers again");
                    healthy = true;
                }
                apply(&registry, &options, &mut relist, event, &progress);
            }
            Err(e) => {
                report_error(&options.node, &e, &mut healthy);
                progress.send_modify(|p| p.last_error = Some(e.to_string()));
            }
        }
        file.sync(own_pod_cidrs(&registry, &options.node));
    }
    warn!(node = %options.node, "the Node watcher ended; peers and routes stay as they are");
}

/// This node's podCIDRs as the cache has them; the lock is not held while the file is
/// written.
fn own_pod_cidrs(registry: &KubeRegistry, node: &str) -> Option<Vec<IpNetwork>> {
    registry.lock().get(node).map(|n| n.pod_cidrs.clone())
}

/// One watcher event into the cache. A (re-)list is gathered aside and replaces the
/// cache whole at its end, so nodes deleted while the watch was down disappear.
fn apply(
    registry: &KubeRegistry,
    options: &WatchOptions,
    relist: &mut Option<NodeCache>,
    event: Event<Node>,
    progress: &signal::Sender<Progress>,
) {
    let info = |node: &Node| NodeInfo::from_node(node, options.default_asn);
    match event {
        Event::Init => *relist = Some(NodeCache::default()),
        Event::InitApply(node) => {
            if let (Some(cache), Some(info)) = (relist.as_mut(), info(&node)) {
                cache.insert(info);
            }
        }
        Event::InitDone => {
            let listed = relist.take().unwrap_or_default();
            for node in listed.records() {
                note_problems(listed.get(&node.name), None);
            }
            info!(node = %options.node, nodes = listed.len(), "listed the Node objects");
            *registry.lock() = listed;
            progress.send_modify(|p| p.listed = true);
        }
        Event::Apply(node) => {
            if let Some(info) = info(&node) {
                let mut cache = registry.lock();
                let before = cache.get(&info.name).cloned();
                if before.as_ref() != Some(&info) {
                    note_problems(Some(&info), before.as_ref());
                    info!(node = %options.node, changed = %info.name, addresses = ?info.addresses,
                        pod_cidrs = %cidr_list(&info.pod_cidrs), asn = info.asn, "Node added or changed");
                }
                cache.insert(info);
            }
        }
        Event::Delete(node) => {
            if let Some(name) = node.metadata.name.as_deref() {
                if registry.lock().remove(name).is_some() {
                    info!(node = %options.node, deleted = name, "Node deleted");
                }
            }
        }
    }
}

fn note_problems(now: Option<&NodeInfo>, before: Option<&NodeInfo>) {
    let Some(now) = now else { return };
    if !now.problems.is_empty() && before.map(|b| &b.problems) != Some(&now.problems) {
        warn!(node = %now.name, problems = ?now.problems, "Node object partly unusable");
    }
}

/// One warning when the API goes away, then quiet until it answers again; a 410 is the
/// normal end of an old watch and only logged as the re-list it causes.
fn report_error(node: &str, error: &watcher::Error, healthy: &mut bool) {
    if let watcher::Error::WatchError(status) = error {
        if status.code == 410 {
            info!(
                node,
                "watch resourceVersion too old (410 Gone): listing the Nodes again"
            );
            return;
        }
    }
    if *healthy {
        warn!(%node, error = %error,
            "cannot watch Node objects; keeping the current peers and routes, retrying with backoff");
        *healthy = false;
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
