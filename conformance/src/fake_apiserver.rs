//! A stand-in Kubernetes API server for Node objects, speaking the real list/watch
//! protocol over HTTP/1.1 (no API server can run on the test machines):
//!
//! - `GET /api/v1/nodes?limit=N[&continue=T]` answers a `NodeList` page whose
//!   `metadata.resourceVersion` is the server's current one, with a `continue` token
//!   while more Nodes remain;
//! - `GET /api/v1/nodes?watch=true&resourceVersion=RV` streams, chunked, one JSON watch
//!   event per line (`ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK`, `ERROR`) for every change
//!   after RV (`BOOKMARK` only with `allowWatchBookmarks=true`); an RV older than the last compaction gets `ERROR` with a 410 `Status`
//!   ("too old resource version"), as a real API server sends it.
//!
//! The test drives it: change Nodes, send bookmarks, drop the open watch connections
//! (without the closing chunk, as a dying load balancer does), hold new watches while it
//! changes things, compact history. It records every request for assertions. Plain std
//! (threads, blocking sockets) so both async and sync tests can use it; the routed tests
//! include this file by `#[path]`.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// The bearer token the kubeconfig from [`FakeApiServer::write_kubeconfig`] carries.
pub const TOKEN: &str = "fjord-test-token";

/// One request as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub authorization: Option<String>,
}

impl Request {
    pub fn is_watch(&self) -> bool {
        self.query
            .get("watch")
            .is_some_and(|v| v == "true" || v == "1")
    }

    pub fn resource_version(&self) -> Option<&str> {
        self.query.get("resourceVersion").map(String::as_str)
    }
}

#[derive(Clone, Debug)]
struct Change {
    resource_version: u64,
    kind: &'static str,
    object: Value,
}

#[derive(Default)]
struct State {
    resource_version: u64,
    nodes: BTreeMap<String, Value>,
    history: Vec<Change>,
    /// Watches from a resourceVersion below this get 410 Gone.
    compacted_below: u64,
    /// Bumped to drop every open watch connection mid-stream.
    drop_generation: u64,
    /// Bumped to end every open watch with an ERROR 410 event.
    expire_generation: u64,
    hold_watches: bool,
    requests: Vec<Request>,
}

pub struct FakeApiServer {
    address: SocketAddr,
    shared: Arc<(Mutex<State>, Condvar)>,
    stop: Arc<AtomicBool>,
}

impl FakeApiServer {
    /// Listens on a free loopback port.
    pub fn start() -> FakeApiServer {
        FakeApiServer::on(TcpListener::bind("127.0.0.1:0").expect("bind a loopback port"))
    }

    /// Serves on `listener` (e.g. one bound inside a lab namespace).
    pub fn on(listener: TcpListener) -> FakeApiServer {
        let address = listener.local_addr().expect("listener address");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let server = FakeApiServer {
            address,
            shared: Arc::new((
                Mutex::new(State {
                    resource_version: 100,
                    ..State::default()
                }),
                Condvar::new(),
            )),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (shared, stop) = (server.shared.clone(), server.stop.clone());
        thread::spawn(move || accept_loop(listener, shared, stop));
        server
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// A kubeconfig for this server with a bearer token (JSON is valid YAML).
    pub fn write_kubeconfig(&self, path: &Path) {
        let config = json!({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url()}}],
            "users": [{"name": "fjord", "user": {"token": TOKEN}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fjord"}}],
        });
        std::fs::write(path, serde_json::to_vec_pretty(&config).unwrap())
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.0.lock().expect("fake API server state")
    }

    fn changed(&self, state: MutexGuard<'_, State>) {
        drop(state);
        self.shared.1.notify_all();
    }

    /// Adds or replaces a Node (ADDED or MODIFIED); returns its new resourceVersion.
    pub fn apply(&self, mut node: Value) -> u64 {
        let mut state = self.state();
        state.resource_version += 1;
        let rv = state.resource_version;
        node["metadata"]["resourceVersion"] = json!(rv.to_string());
        let name = node["metadata"]["name"]
            .as_str()
            .expect("a Node name")
            .to_string();
        let kind = if state.nodes.contains_key(&name) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        state.nodes.insert(name, node.clone());
        state.history.push(Change {
            resource_version: rv,
            kind,
            object: node,
        });
        self.changed(state);
        rv
    }

    /// Deletes a Node (DELETED carries its last state at the deletion's resourceVersion).
    pub fn delete(&self, name: &str) -> u64 {
        let mut state = self.state();
        let mut node = state
            .nodes
            .remove(name)
            .expect("deleting a Node that exists");
        state.resource_version += 1;
        let rv = state.resource_version;
        node["metadata"]["resourceVersion"] = json!(rv.to_string());
        state.history.push(Change {
            resource_version: rv,
            kind: "DELETED",
            object: node,
        });
        self.changed(state);
        rv
    }

    /// Other objects changed (resourceVersions are cluster-wide) and open watches get a
    /// BOOKMARK with the new resourceVersion; returns it.
    pub fn bookmark(&self) -> u64 {
        let mut state = self.state();
        state.resource_version += 7;
        let rv = state.resource_version;
        state.history.push(Change {
            resource_version: rv,
            kind: "BOOKMARK",
            object: json!({"kind": "Node", "apiVersion": "v1",
                "metadata": {"resourceVersion": rv.to_string()}}),
        });
        self.changed(state);
        rv
    }

    /// Forgets history: watches from an older resourceVersion get 410 Gone.
    pub fn compact(&self) {
        let mut state = self.state();
        state.compacted_below = state.resource_version;
        state.history.clear();
        self.changed(state);
    }

    /// Cuts every open watch connection without the closing chunk.
    pub fn drop_watches(&self) {
        let mut state = self.state();
        state.drop_generation += 1;
        self.changed(state);
    }

    /// Ends every open watch with an ERROR 410 event, as after etcd compaction.
    pub fn expire_watches(&self) {
        let mut state = self.state();
        state.expire_generation += 1;
        self.changed(state);
    }

    /// While held, watch requests are received (and recorded) but not answered.
    pub fn hold_watches(&self, hold: bool) {
        let mut state = self.state();
        state.hold_watches = hold;
        self.changed(state);
    }

    pub fn resource_version(&self) -> u64 {
        self.state().resource_version
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state().requests.clone()
    }

    pub fn lists(&self) -> usize {
        self.requests().iter().filter(|r| !r.is_watch()).count()
    }

    pub fn watches(&self) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(Request::is_watch)
            .collect()
    }

    /// Waits until a request matching `pred` has been received.
    pub fn wait_for_request(&self, timeout: Duration, pred: impl Fn(&Request) -> bool) -> Request {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(r) = self.requests().into_iter().find(|r| pred(r)) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "no matching request within {timeout:?}; got {:#?}",
                self.requests()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.drop_watches();
    }
}

/// A Node as a kubeadm cluster shows it: InternalIP addresses, podCIDR(s), conditions.
pub fn node_json(name: &str, internal_ips: &[&str], pod_cidrs: &[&str]) -> Value {
    let mut addresses: Vec<Value> = internal_ips
        .iter()
        .map(|a| json!({"type": "InternalIP", "address": a}))
        .collect();
    addresses.push(json!({"type": "Hostname", "address": name}));
    let mut spec = json!({});
    if let Some(first) = pod_cidrs.first() {
        spec = json!({"podCIDR": first, "podCIDRs": pod_cidrs});
    }
    json!({
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "uid": format!("5b1c7e2a-0000-4000-8000-{:012x}", name.len()),
            "creationTimestamp": "2026-12-01T08:00:00Z",
            "labels": {
                "kubernetes.io/arch": "amd64", "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux", "node-role.kubernetes.io/worker": ""
            },
            "annotations": {"node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true"}
        },
        "spec": spec,
        "status": {
            "addresses": addresses,
            "capacity": {"cpu": "2", "memory": "4025836Ki", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "kubelet is posting ready status",
                "lastHeartbeatTime": "2026-12-01T08:05:00Z",
                "lastTransitionTime": "2026-12-01T08:00:30Z"}],
            "nodeInfo": {"kubeletVersion": "v1.35.0", "containerRuntimeVersion": "containerd://2.1.0",
                "kernelVersion": "6.1.0-40-amd64", "osImage": "Debian GNU/Linux 12 (bookworm)",
                "operatingSystem": "linux", "architecture": "amd64", "machineID": "0",
                "systemUUID": "0", "bootID": "0", "kubeProxyVersion": ""}
        }
    })
}

fn accept_loop(listener: TcpListener, shared: Arc<(Mutex<State>, Condvar)>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let (shared, stop) = (shared.clone(), stop.clone());
                thread::spawn(move || {
                    let _ = serve(stream, &shared, &stop);
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(10));
            }
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn read_request(stream: &TcpStream) -> std::io::Result<Option<Request>> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut authorization = None;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" || header == "\n" {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("authorization") {
                authorization = Some(value.trim().to_string());
            }
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let query = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_string(), v.to_string())
        })
        .collect();
    Ok(Some(Request {
        path: path.to_string(),
        query,
        authorization,
    }))
}

fn serve(
    mut stream: TcpStream,
    shared: &(Mutex<State>, Condvar),
    stop: &AtomicBool,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    let Some(request) = read_request(&stream)? else {
        return Ok(());
    };
    shared.0.lock().unwrap().requests.push(request.clone());
    shared.1.notify_all();
    if request.path != "/api/v1/nodes" {
        let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": format!("the server could not find the requested resource {}", request.path),
            "reason": "NotFound", "code": 404});
        return respond(&mut stream, "404 Not Found", &status);
    }
    if request.authorization.as_deref() != Some(&format!("Bearer {TOKEN}")) {
        let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": "Unauthorized", "reason": "Unauthorized", "code": 401});
        return respond(&mut stream, "401 Unauthorized", &status);
    }
    if !request.is_watch() {
        let state = shared.0.lock().unwrap();
        // As kube-apiserver does, list items carry no kind/apiVersion of their own.
        let items: Vec<Value> = state
            .nodes
            .values()
            .map(|node| {
                let mut item = node.clone();
                if let Some(fields) = item.as_object_mut() {
                    fields.remove("kind");
                    fields.remove("apiVersion");
                }
                item
            })
            .collect();
        let list = page(&request, items, state.resource_version);
        drop(state);
        return respond(&mut stream, "200 OK", &list);
    }
    watch(stream, &request, shared, stop)
}

/// A `NodeList` page: `limit` items from the `continue` offset, with a `continue` token
/// while more remain (the token is the offset: the tests change nothing mid-list).
fn page(request: &Request, items: Vec<Value>, resource_version: u64) -> Value {
    let start: usize = request
        .query
        .get("continue")
        .and_then(|token| token.parse().ok())
        .unwrap_or(0);
    let limit: usize = request
        .query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let total = items.len();
    let end = start.saturating_add(limit).min(total);
    let mut metadata = json!({"resourceVersion": resource_version.to_string()});
    if end < total {
        metadata["continue"] = json!(end.to_string());
        metadata["remainingItemCount"] = json!(total - end);
    }
    let items: Vec<Value> = items.into_iter().skip(start).take(end - start).collect();
    json!({"kind": "NodeList", "apiVersion": "v1", "metadata": metadata, "items": items})
}

fn respond(stream: &mut TcpStream, status: &str, body: &Value) -> std::io::Result<()> {
    let body = serde_json::to_vec(body).unwrap();
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(&body)?;
    stream.flush()
}

fn chunk(stream: &mut TcpStream, event: &Value) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(event).unwrap();
    line.push(b'\n');
    write!(stream, "{:x}\r\n", line.len())?;
    stream.write_all(&line)?;
    stream.write_all(b"\r\n")?;
    stream.flush()
}

fn gone(resource_version: &str) -> Value {
    json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "reason": "Expired", "code": 410,
        "message": format!("too old resource version: {resource_version}")}})
}

/// Streams changes after the requested resourceVersion until the test drops or expires
/// the watch, or the server stops.
fn watch(
    mut stream: TcpStream,
    request: &Request,
    shared: &(Mutex<State>, Condvar),
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let (lock, wake) = shared;
    let mut state = lock.lock().unwrap();
    while state.hold_watches && !stop.load(Ordering::SeqCst) {
        state = wake
            .wait_timeout(state, Duration::from_millis(100))
            .unwrap()
            .0;
    }
    let requested = request.resource_version().unwrap_or("0").to_string();
    let from: u64 = requested.parse().unwrap_or(0);
    let (drops, expiries) = (state.drop_generation, state.expire_generation);
    stream.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    )?;
    if from != 0 && from < state.compacted_below {
        drop(state);
        chunk(&mut stream, &gone(&requested))?;
        return stream.write_all(b"0\r\n\r\n");
    }
    let bookmarks = request
        .query
        .get("allowWatchBookmarks")
        .is_some_and(|v| v == "true");
    let mut sent_up_to = from;
    loop {
        let pending: Vec<Change> = state
            .history
            .iter()
            .filter(|c| c.resource_version > sent_up_to)
            .cloned()
            .collect();
        if state.drop_generation != drops || stop.load(Ordering::SeqCst) {
            return stream.shutdown(Shutdown::Both);
        }
        let expired = state.expire_generation != expiries;
        drop(state);
        for change in &pending {
            // Bookmarks go only to watches that asked (allowWatchBookmarks=true).
            if change.kind != "BOOKMARK" || bookmarks {
                let event = json!({"type": change.kind, "object": change.object});
                chunk(&mut stream, &event)?;
            }
            sent_up_to = change.resource_version;
        }
        if expired {
            chunk(&mut stream, &gone(&sent_up_to.to_string()))?;
            return stream.write_all(b"0\r\n\r\n");
        }
        state = lock.lock().unwrap();
        if state
            .history
            .iter()
            .all(|c| c.resource_version <= sent_up_to)
            && state.drop_generation == drops
            && state.expire_generation == expiries
        {
            state = wake
                .wait_timeout(state, Duration::from_millis(200))
                .unwrap()
                .0;
        }
    }
}
