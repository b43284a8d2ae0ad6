//! The Node watcher of `--store kubernetes` against a stand-in API server that speaks
//! the real list/watch protocol with real Node JSON (conformance/src/fake_apiserver.rs):
//! the initial list, ADDED/MODIFIED/DELETED, bookmarks, a dropped connection resumed
//! from the last resourceVersion, 410 Gone forcing a re-list, the last view kept while
//! the API server is away, paged lists, and the podCIDRs file the IPAM reads. The
//! watcher's output is the cluster view the node core reads: each test follows it.

#[allow(dead_code)] // the lab test uses the rest
#[path = "../../conformance/src/fake_apiserver.rs"]
mod fake_apiserver;

use fake_apiserver::{node_json, FakeApiServer, Request, TOKEN};
use fjord_ipam::kubernetes::read_pod_cidrs;
use fjord_ipam::registry::{NodeRecord, NodeView};
use fjord_routed::cluster::ClusterView;
use fjord_routed::error::RoutedError;
use fjord_routed::kubernetes::{start, WatchOptions};
use fjord_routed::node::ClusterEvent;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(20);

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let path =
            std::env::temp_dir().join(format!("fjord-kube-watch-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Dir(path)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn options(server: &FakeApiServer, dir: &Dir, node: &str) -> WatchOptions {
    let kubeconfig = dir.0.join("kubeconfig");
    server.write_kubeconfig(&kubeconfig);
    WatchOptions {
        node: node.into(),
        node_addresses: vec![],
        default_asn: 64512,
        kubeconfig: Some(kubeconfig),
        pod_cidrs_dir: dir.0.join("state"),
        first_list_timeout: Duration::from_secs(10),
    }
}

fn two_nodes() -> FakeApiServer {
    let server = FakeApiServer::start();
    server.apply(node_json(
        "node-1",
        &["192.168.50.1", "fd00:50::1"],
        &["10.244.1.0/24", "fd00:10:244:1::/64"],
    ));
    server.apply(node_json("node-2", &["192.168.50.2"], &["10.244.2.0/24"]));
    server
}

/// The cluster view as the core sees it: the last complete view sent.
struct Follow {
    view: ClusterView,
    latest: NodeView,
    unavailable: usize,
}

impl Follow {
    /// Starts following; the first event is the first list.
    async fn start(options: WatchOptions) -> Follow {
        let mut view = start(options).await.unwrap();
        let first = tokio::time::timeout(WAIT, view.recv()).await;
        let Ok(Some(ClusterEvent::Nodes(latest))) = first else {
            panic!("the first event is not the list: {first:?}");
        };
        Follow {
            view,
            latest,
            unavailable: 0,
        }
    }

    /// Takes whatever the watcher sent within `wait`.
    async fn drain(&mut self, wait: Duration) {
        while let Ok(Some(event)) = tokio::time::timeout(wait, self.view.recv()).await {
            self.take(event);
        }
    }

    fn take(&mut self, event: ClusterEvent) {
        match event {
            ClusterEvent::Nodes(view) => self.latest = view,
            ClusterEvent::Unavailable { .. } => self.unavailable += 1,
        }
    }

    fn names(&self) -> Vec<String> {
        names(&self.latest)
    }
}

fn names(view: &NodeView) -> Vec<String> {
    view.nodes.iter().map(|n| n.name.clone()).collect()
}

/// Follows the view until `check` accepts it.
async fn eventually(what: &str, follow: &mut Follow, check: impl Fn(&NodeView) -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check(&follow.latest) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, follow.view.recv()).await {
            Ok(Some(event)) => follow.take(event),
            _ => panic!(
                "{what}: not within {WAIT:?}; the view holds {:?}",
                follow.latest
            ),
        }
    }
}

/// The same from a blocking thread, for waits on the server.
async fn server_request(server: &FakeApiServer, pred: impl Fn(&Request) -> bool) -> Request {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(r) = server.requests().into_iter().find(|r| pred(r)) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "no such request; got {:#?}",
            server.requests()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_then_follows_added_modified_deleted_and_writes_the_pod_cidrs() {
    let server = two_nodes();
    let dir = Dir::new("follow");
    // Starting checks that this node's Node exists (kubelet registered it).
    let mut follow = Follow::start(options(&server, &dir, "node-1")).await;
    // The list: peers from InternalIPs, blocks from spec.podCIDRs.
    assert_eq!(
        follow.latest.nodes,
        vec![
            NodeRecord {
                name: "node-1".into(),
                addresses: vec![ip("192.168.50.1"), ip("fd00:50::1")],
                asn: 64512
            },
            NodeRecord {
                name: "node-2".into(),
                addresses: vec![ip("192.168.50.2")],
                asn: 64512
            },
        ]
    );
    let claims: Vec<String> = follow
        .latest
        .claims
        .iter()
        .map(|c| format!("{}@{}", c.block, c.node))
        .collect();
    assert_eq!(
        claims,
        [
            "10.244.1.0/24@node-1",
            "fd00:10:244:1::/64@node-1",
            "10.244.2.0/24@node-2"
        ]
    );
    let list = server.requests().into_iter().next().unwrap();
    assert!(!list.is_watch());
    assert_eq!(
        list.authorization.as_deref(),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    // The watch starts from the list's resourceVersion and asks for bookmarks.
    let listed_rv = server.resource_version().to_string();
    let first_watch = server_request(&server, Request::is_watch).await;
    assert_eq!(first_watch.resource_version(), Some(listed_rv.as_str()));
    assert_eq!(
        first_watch
            .query
            .get("allowWatchBookmarks")
            .map(String::as_str),
        Some("true")
    );
    // The file the IPAM reads holds exactly this node's podCIDRs.
    let state = dir.0.join("state");
    let file = read_pod_cidrs(&state, "node-1")
        .unwrap()
        .expect("podCIDRs file");
    assert_eq!(
        file.pod_cidrs,
        vec![
            "10.244.1.0/24".parse().unwrap(),
            "fd00:10:244:1::/64".parse().unwrap()
        ]
    );

    server.apply(node_json("node-3", &["192.168.50.3"], &["10.244.3.0/24"]));
    eventually("ADDED node-3", &mut follow, |v| {
        names(v).contains(&"node-3".into())
    })
    .await;
    let mut moved = node_json("node-2", &["192.168.60.2"], &["10.244.2.0/24"]);
    moved["metadata"]["annotations"][fjord_routed::kubernetes::ASN_ANNOTATION] = "65002".into();
    server.apply(moved);
    eventually("MODIFIED node-2", &mut follow, |v| {
        v.nodes.iter().any(|n| {
            n.name == "node-2" && n.addresses == vec![ip("192.168.60.2")] && n.asn == 65002
        })
    })
    .await;
    server.delete("node-3");
    eventually("DELETED node-3", &mut follow, |v| {
        !names(v).contains(&"node-3".into())
    })
    .await;
    // This node's podCIDRs change (the Node was re-created with another range).
    server.apply(node_json("node-1", &["192.168.50.1"], &["10.244.9.0/24"]));
    let deadline = Instant::now() + WAIT;
    loop {
        let file = read_pod_cidrs(&state, "node-1").unwrap().unwrap();
        if file.pod_cidrs == vec!["10.244.9.0/24".parse().unwrap()] {
            break;
        }
        assert!(Instant::now() < deadline, "file not rewritten: {file:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        server.lists(),
        1,
        "no re-list without a 410: {:#?}",
        server.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_resumes_from_the_last_bookmark_without_a_list() {
    let server = two_nodes();
    let dir = Dir::new("resume");
    let mut follow = Follow::start(options(&server, &dir, "node-1")).await;
    server_request(&server, Request::is_watch).await;
    // A bookmark moves the watcher's resourceVersion past every Node event.
    let bookmark_rv = server.bookmark().to_string();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The connection dies; while the watcher reconnects, Nodes change.
    server.hold_watches(true);
    server.drop_watches();
    let resumed = server_request(&server, |r| {
        r.is_watch() && r.resource_version() == Some(bookmark_rv.as_str())
    })
    .await;
    assert!(resumed.is_watch());
    server.apply(node_json("node-4", &["192.168.50.4"], &["10.244.4.0/24"]));
    server.delete("node-2");
    server.hold_watches(false);
    // The resumed watch delivers what happened meanwhile.
    eventually("changes during the disconnection", &mut follow, |v| {
        names(v) == ["node-1", "node-4"]
    })
    .await;
    assert_eq!(
        server.lists(),
        1,
        "resumed, not re-listed: {:#?}",
        server.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_410_forces_a_relist_that_drops_nodes_deleted_meanwhile() {
    let server = two_nodes();
    let dir = Dir::new("gone");
    let mut follow = Follow::start(options(&server, &dir, "node-1")).await;
    server_request(&server, Request::is_watch).await;
    // Disconnected while history is compacted: the resume gets 410 and must re-list.
    server.hold_watches(true);
    server.drop_watches();
    server.apply(node_json("node-5", &["192.168.50.5"], &["10.244.5.0/24"]));
    server.delete("node-2");
    server.compact();
    server.hold_watches(false);
    eventually("re-listed after 410", &mut follow, |v| {
        names(v) == ["node-1", "node-5"]
    })
    .await;
    assert_eq!(server.lists(), 2, "one re-list: {:#?}", server.requests());
    // A 410 ERROR event on a live watch does the same.
    server_request(&server, |r| {
        r.is_watch() && r.resource_version() == Some(&*server.resource_version().to_string())
    })
    .await;
    // The live watch ends with 410 after a deletion and a compaction: one re-list.
    server.hold_watches(true);
    server.delete("node-5");
    server.compact();
    server.expire_watches();
    server.hold_watches(false);
    let relisted = server_request(&server, |r| {
        r.is_watch() && r.resource_version() == Some(&*server.resource_version().to_string())
    });
    relisted.await;
    assert_eq!(server.lists(), 3, "{:#?}", server.requests());
    eventually("re-listed after the 410 event", &mut follow, |v| {
        names(v) == ["node-1"]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_stays_while_the_api_server_is_away() {
    let server = two_nodes();
    let dir = Dir::new("away");
    let unknown = start(options(&server, &dir, "node-9")).await;
    assert!(
        unknown
            .as_ref()
            .is_err_and(|e| matches!(e, RoutedError::NoSuchNode { .. })),
        "{:?}",
        unknown.err()
    );
    let mut follow = Follow::start(options(&server, &dir, "node-2")).await;
    drop(server);
    follow.drain(Duration::from_secs(2)).await;
    assert_eq!(follow.names(), ["node-1", "node-2"]);
    assert_eq!(follow.latest.claims.len(), 3);
    assert_eq!(follow.unavailable, 1, "one outage, reported once");
    let file = read_pod_cidrs(&dir.0.join("state"), "node-2")
        .unwrap()
        .unwrap();
    assert_eq!(file.pod_cidrs, vec!["10.244.2.0/24".parse().unwrap()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_api_server_fails_start_naming_the_server_and_the_error() {
    let server = FakeApiServer::start();
    let dir = Dir::new("none");
    let mut opts = options(&server, &dir, "node-1");
    let url = server.url();
    drop(server);
    tokio::time::sleep(Duration::from_millis(100)).await;
    opts.first_list_timeout = Duration::from_secs(2);
    let e = start(opts)
        .await
        .err()
        .expect("start without an API server");
    assert!(matches!(e, RoutedError::KubeNodes { .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains(url.trim_start_matches("http://")), "{text}");
    assert!(text.contains("initial object list"), "{text}");
    let mut missing = WatchOptions {
        kubeconfig: Some(dir.0.join("no-such-kubeconfig")),
        ..options(&FakeApiServer::start(), &dir, "node-1")
    };
    missing.first_list_timeout = Duration::from_secs(1);
    let e = start(missing).await.err().unwrap().to_string();
    assert!(e.contains("no-such-kubeconfig"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_larger_than_one_page_is_listed_in_pages() {
    let server = FakeApiServer::start();
    for n in 0..1100u32 {
        let address = format!("10.100.{}.{}", n / 256, n % 256);
        let cidr = format!("10.{}.{}.0/24", 200 + n / 256, n % 256);
        server.apply(node_json(&format!("node-{n:04}"), &[&address], &[&cidr]));
    }
    let dir = Dir::new("pages");
    let follow = Follow::start(options(&server, &dir, "node-0001")).await;
    assert_eq!(follow.latest.nodes.len(), 1100);
    assert_eq!(follow.latest.claims.len(), 1100);
    let pages: Vec<Request> = server
        .requests()
        .into_iter()
        .filter(|r| !r.is_watch())
        .collect();
    assert_eq!(pages.len(), 3, "limit 500: three pages, {pages:#?}");
    assert_eq!(pages[0].query.get("limit").map(String::as_str), Some("500"));
    assert_eq!(
        pages[1].query.get("continue").map(String::as_str),
        Some("500")
    );
    assert_eq!(
        pages[2].query.get("continue").map(String::as_str),
        Some("1000")
    );
}
