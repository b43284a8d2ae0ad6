//! A BFD test bed: two namespaces joined by one veth (a single IP hop, both families),
//! Fjord's BFD running in one of them in-process ([`FjordBfd`]: a thread that enters
//! the namespace and runs a current-thread tokio runtime, as the daemon does), and a
//! way to cut the path that a test can undo ([`InputDrop`]: an nftables table of the
//! test's own that drops UDP 3784 arriving in one namespace).
//!
//! Fjord's BFD is not wired into `fjord-routed` yet, so the sessions here are made
//! through `fjord_routed::bfd::BfdHandle`, exactly the API the daemon will use.

use crate::names::unique_ifname;
use crate::netns::Netns;
use crate::tempdir::TempDir;
use fjord_routed::bfd::{BfdChange, BfdHandle, PeerStatus, SessionSpec, Timers};
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// The two ends' addresses: `.1` / `::1` on side A, `.2` / `::2` on side B.
pub const A_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
pub const B_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
pub const A_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 1);
pub const B_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 2);

/// Two namespaces and the veth between them; removed on drop (the veth dies with them).
#[derive(Debug)]
pub struct BfdLink {
    pub a: Netns,
    pub b: Netns,
    pub a_ifname: String,
    pub b_ifname: String,
}

impl BfdLink {
    pub fn new() -> BfdLink {
        let a = Netns::new("ba");
        let b = Netns::new("bb");
        let a_ifname = unique_ifname("va");
        let b_ifname = unique_ifname("vb");
        crate::netns::ip(&[
            "link",
            "add",
            &a_ifname,
            "netns",
            a.name(),
            "type",
            "veth",
            "peer",
            "name",
            &b_ifname,
            "netns",
            b.name(),
        ]);
        for (ns, ifname, v4, v6) in [(&a, &a_ifname, A_V4, A_V6), (&b, &b_ifname, B_V4, B_V6)] {
            ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", ifname]);
            ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", ifname, "nodad"]);
            ns.ip(&["link", "set", ifname, "up"]);
        }
        BfdLink {
            a,
            b,
            a_ifname,
            b_ifname,
        }
    }

    /// Side A's and side B's address of one family.
    pub fn addresses(&self, v6: bool) -> (IpAddr, IpAddr) {
        if v6 {
            (A_V6.into(), B_V6.into())
        } else {
            (A_V4.into(), B_V4.into())
        }
    }
}

impl Default for BfdLink {
    fn default() -> Self {
        BfdLink::new()
    }
}

/// Runs `nft ARGS` in `ns`, panicking with its stderr when it fails.
fn nft(ns: &Netns, args: &[&str]) {
    let out = ns.run("nft", args);
    assert!(
        out.status.success(),
        "nft {} in {} failed: {} (install nftables: conformance/scripts/install-test-deps.sh)",
        args.join(" "),
        ns.name(),
        String::from_utf8_lossy(&out.stderr)
    );
}

const DROP_TABLE: &str = "fjord_test_bfd_cut";

/// What [`InputDrop::bfd`] drops: BFD Control packets of every family.
pub const BFD_CONTROL: &str = "udp dport 3784";

/// Packets matching an nftables expression dropped on input in one namespace (the
/// test's own table, nothing else touched); undone by [`InputDrop::restore`] or on drop.
#[derive(Debug)]
pub struct InputDrop {
    netns: String,
    _rules: TempDir,
    active: bool,
}

impl InputDrop {
    /// BFD Control packets arriving in `ns` are dropped.
    pub fn bfd(ns: &Netns) -> InputDrop {
        InputDrop::cut(ns, BFD_CONTROL)
    }

    /// Loads a table dropping what `matches` (an nftables match, e.g. `ip saddr
    /// 10.250.0.2`) with one `nft -f`, so the cut takes effect when one command returns;
    /// returns when it is in force.
    pub fn cut(ns: &Netns, matches: &str) -> InputDrop {
        let dir = TempDir::new("nft");
        let file = dir.join("cut.nft");
        let rules = format!(
            "table inet {DROP_TABLE} {{\n  chain input {{\n    type filter hook input priority -10;\n    {matches} drop\n  }}\n}}\n"
        );
        std::fs::write(&file, rules).expect("write the nftables rules");
        nft(ns, &["-f", &file.to_string_lossy()]);
        InputDrop {
            netns: ns.name().to_string(),
            _rules: dir,
            active: true,
        }
    }

    pub fn restore(mut self) {
        if self.active {
            self.active = false;
            nft(
                &Netns::existing(&self.netns),
                &["delete", "table", "inet", DROP_TABLE],
            );
        }
    }
}

impl Drop for InputDrop {
    fn drop(&mut self) {
        if self.active {
            self.active = false;
            let ns = Netns::existing(&self.netns);
            let _ = ns.run("nft", &["delete", "table", "inet", DROP_TABLE]);
        }
    }
}

/// A change of a Fjord session, stamped when the watcher saw it.
#[derive(Clone, Copy, Debug)]
pub struct SeenChange {
    pub at: Instant,
    pub peer: IpAddr,
    pub change: BfdChange,
}

enum Request {
    Add(SessionSpec, oneshot::Sender<Result<(), String>>),
    Status(oneshot::Sender<Vec<PeerStatus>>),
}

/// Fjord's BFD service in a namespace, on its own thread and current-thread runtime.
/// Dropping it shuts the service down (AdminDown to every peer) and joins the thread.
pub struct FjordBfd {
    requests: Option<mpsc::UnboundedSender<Request>>,
    changes: std_mpsc::Receiver<SeenChange>,
    thread: Option<JoinHandle<()>>,
    /// The kernel's id of the service thread, for its CPU time and wakeups in /proc.
    tid: i32,
}

impl FjordBfd {
    pub fn start(ns: &Netns) -> FjordBfd {
        let path = ns.path();
        let (requests, queue) = mpsc::unbounded_channel();
        let (changes_tx, changes) = std_mpsc::channel();
        let (ready_tx, ready) = std_mpsc::channel();
        let thread = std::thread::spawn(move || serve(path, queue, changes_tx, ready_tx));
        let tid = match ready.recv() {
            Ok(Ok(tid)) => tid,
            Ok(Err(e)) => panic!("Fjord's BFD did not start in {}: {e}", ns.name()),
            Err(_) => panic!("Fjord's BFD thread died at start in {}", ns.name()),
        };
        FjordBfd {
            requests: Some(requests),
            changes,
            thread: Some(thread),
            tid,
        }
    }

    fn request<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Request) -> T {
        let (reply, answer) = oneshot::channel();
        self.requests
            .as_ref()
            .expect("running")
            .send(make(reply))
            .expect("the BFD thread is gone");
        answer
            .blocking_recv()
            .expect("the BFD thread dropped a request")
    }

    /// Starts a session; its changes arrive in [`FjordBfd::next_change`].
    pub fn add(&self, peer: IpAddr, local: IpAddr, timers: Timers) {
        let spec = SessionSpec {
            peer,
            local,
            timers,
        };
        if let Err(e) = self.request(|reply| Request::Add(spec, reply)) {
            panic!("add the BFD session to {peer}: {e}");
        }
    }

    pub fn status(&self) -> Vec<PeerStatus> {
        self.request(Request::Status)
    }

    pub fn status_of(&self, peer: IpAddr) -> Option<PeerStatus> {
        self.status().into_iter().find(|s| s.peer == peer)
    }

    /// The next change of any session, or None after `timeout`.
    pub fn next_change(&self, timeout: Duration) -> Option<SeenChange> {
        self.changes.recv_timeout(timeout).ok()
    }

    /// Waits for `want` on `peer`, skipping other changes; panics after `timeout`.
    pub fn wait_for(
        &self,
        peer: IpAddr,
        timeout: Duration,
        want: impl Fn(&BfdChange) -> bool,
    ) -> SeenChange {
        self.wait_for_each(&[peer], timeout, want)[0]
    }

    /// Waits until every one of `peers` showed a change that is `want`; returns them in
    /// the order of `peers`. Other changes are skipped; panics after `timeout`.
    pub fn wait_for_each(
        &self,
        peers: &[IpAddr],
        timeout: Duration,
        want: impl Fn(&BfdChange) -> bool,
    ) -> Vec<SeenChange> {
        let deadline = Instant::now() + timeout;
        let mut seen: Vec<Option<SeenChange>> = vec![None; peers.len()];
        while seen.iter().any(Option::is_none) {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(c) = self.next_change(left) else {
                let missing: Vec<_> = peers
                    .iter()
                    .zip(&seen)
                    .filter(|(_, s)| s.is_none())
                    .map(|(p, _)| (*p, self.status_of(*p)))
                    .collect();
                panic!("Fjord's BFD: no such change within {timeout:?} for {missing:?}");
            };
            if let Some(i) = peers.iter().position(|p| *p == c.peer) {
                if seen[i].is_none() && want(&c.change) {
                    seen[i] = Some(c);
                }
            }
        }
        seen.into_iter().flatten().collect()
    }

    /// The service thread's kernel id (`/proc/self/task/TID`).
    pub fn thread_id(&self) -> i32 {
        self.tid
    }

    /// Throws away changes seen so far.
    pub fn drain(&self) {
        while self.changes.try_recv().is_ok() {}
    }
}

impl Drop for FjordBfd {
    fn drop(&mut self) {
        // Closing the queue shuts the service down: AdminDown to every peer.
        self.requests.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The thread of a [`FjordBfd`]: enter the namespace, run the service until the
/// request queue closes, then shut it down.
fn serve(
    netns: PathBuf,
    mut queue: mpsc::UnboundedReceiver<Request>,
    changes: std_mpsc::Sender<SeenChange>,
    ready: std_mpsc::Sender<Result<i32, String>>,
) {
    let entered = File::open(&netns)
        .map_err(|e| format!("open {}: {e}", netns.display()))
        .and_then(|f| {
            nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("enter {}: {e}", netns.display()))
        });
    if let Err(e) = entered {
        let _ = ready.send(Err(e));
        return;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send(Err(format!("tokio runtime: {e}")));
            return;
        }
    };
    runtime.block_on(async move {
        let handle = match BfdHandle::spawn() {
            Ok(h) => h,
            Err(e) => {
                let _ = ready.send(Err(e.to_string()));
                return;
            }
        };
        let _ = ready.send(Ok(nix::unistd::gettid().as_raw()));
        while let Some(request) = queue.recv().await {
            match request {
                Request::Add(spec, reply) => {
                    let added = handle.add(spec).await.map_err(|e| e.to_string());
                    if let Ok(mut watch) = added {
                        let changes = changes.clone();
                        tokio::spawn(async move {
                            while let Some(change) = watch.next().await {
                                let seen = SeenChange {
                                    at: Instant::now(),
                                    peer: spec.peer,
                                    change,
                                };
                                if changes.send(seen).is_err() {
                                    break;
                                }
                            }
                        });
                        let _ = reply.send(Ok(()));
                    } else if let Err(e) = added {
                        let _ = reply.send(Err(e));
                    }
                }
                Request::Status(reply) => {
                    let _ = reply.send(handle.status().await.unwrap_or_default());
                }
            }
        }
        let _ = handle.shutdown().await;
    });
}

/// Milliseconds, for reports.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The median of some durations (the mean of the middle two for an even count).
pub fn median(values: &[Duration]) -> Duration {
    let mut v = values.to_vec();
    v.sort();
    match v.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2,
    }
}
