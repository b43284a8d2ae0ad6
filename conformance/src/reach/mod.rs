//! The all-pairs reachability probe, in-process: no process per pair (`fjord-lab up`
//! runs it over 200 pods, ~40k pairs).
//!
//! Sockets belong to the network namespace of the thread that creates them. So a TCP
//! listener is opened inside each pod's namespace (by a short-lived thread that enters
//! it), one thread accepts on all of them, and a few worker threads each enter one
//! source pod at a time and, from there, send ICMP echo requests on raw sockets (root
//! has CAP_NET_RAW; ICMP datagram sockets would need `ping_group_range` changed in every
//! pod) and open non-blocking TCP connections to every other pod, both families.

pub mod icmp;
pub mod matrix;

use matrix::PairResult;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The port every pod listens on during the probe (inside its own namespace).
pub const PROBE_PORT: u16 = 7777;
/// Rounds of echo requests / connection attempts before a pair counts as unreachable.
const ROUNDS: usize = 3;
/// How long one round waits for replies / connections.
const ROUND_WAIT: Duration = Duration::from_millis(1500);
/// Connections in flight per worker (file descriptors: workers x this); a lab of 200
/// pods needs 398 per source (both families), so a source takes one batch per round.
const CONNECT_BATCH: usize = 400;

/// A pod to probe from and to.
#[derive(Clone, Debug)]
pub struct ProbePod {
    pub netns_path: PathBuf,
    pub v4: IpAddr,
    pub v6: IpAddr,
}

impl From<&crate::lab::LabPod> for ProbePod {
    fn from(pod: &crate::lab::LabPod) -> Self {
        ProbePod {
            netns_path: pod.netns().path(),
            v4: pod.ipv4,
            v6: pod.ipv6,
        }
    }
}

impl ProbePod {
    fn address(&self, v6: bool) -> IpAddr {
        if v6 {
            self.v6
        } else {
            self.v4
        }
    }
}

/// Runs `f` on a thread whose network namespace is `netns` (the caller's threads stay
/// where they are).
fn in_netns<T: Send>(netns: &PathBuf, f: impl FnOnce() -> T + Send) -> std::io::Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                enter(netns)?;
                Ok(f())
            })
            .join()
            .expect("probe thread panicked")
    })
}

/// Moves the calling thread into the network namespace at `netns`.
fn enter(netns: &PathBuf) -> std::io::Result<()> {
    let file = File::open(netns)?;
    nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(std::io::Error::from)
}

/// A dual-stack listener on `[::]:PROBE_PORT` in the current namespace.
fn listener() -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_only_v6(false)?;
    socket.set_reuse_address(true)?;
    let addr: SocketAddr = (std::net::Ipv6Addr::UNSPECIFIED, PROBE_PORT).into();
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// Opens a listener in every pod, `threads` at a time.
fn open_listeners(pods: &[ProbePod], threads: usize) -> Result<Vec<Socket>, String> {
    let slots: Vec<Mutex<Option<Result<Socket, String>>>> =
        pods.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(pod) = pods.get(i) else { break };
                let made = in_netns(&pod.netns_path, listener)
                    .and_then(|r| r)
                    .map_err(|e| {
                        format!(
                            "open a TCP listener on port {PROBE_PORT} in {}: {e}",
                            pod.netns_path.display()
                        )
                    });
                *slots[i].lock().expect("slot") = Some(made);
            });
        }
    });
    slots
        .into_iter()
        .map(|s| s.into_inner().expect("slot").expect("every pod visited"))
        .collect()
}

/// Accepts (and closes) connections on every listener until `stop` is set.
fn accept_until(listeners: &[Socket], stop: &AtomicBool) {
    let mut fds: Vec<libc::pollfd> = listeners
        .iter()
        .map(|l| libc::pollfd {
            fd: l.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: `fds` is a valid array of pollfd for its length.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
        if ready <= 0 {
            continue;
        }
        for (fd, listener) in fds.iter_mut().zip(listeners) {
            if fd.revents & libc::POLLIN != 0 {
                while let Ok((conn, _)) = listener.accept() {
                    drop(conn);
                }
            }
            fd.revents = 0;
        }
    }
}

/// One probe of one target: which pod, over which family.
#[derive(Clone, Copy, Debug)]
struct Attempt {
    target: usize,
    v6: bool,
}

/// Every target of `targets` over both families, in [`PairResult::ok`]'s order within
/// each protocol: all IPv4 first, then all IPv6.
fn attempts(targets: &[usize]) -> Vec<Attempt> {
    [false, true]
        .iter()
        .flat_map(|v6| {
            targets.iter().map(move |t| Attempt {
                target: *t,
                v6: *v6,
            })
        })
        .collect()
}

/// Waits up to 100 ms for `events` on `fds`; fills their `revents`.
fn poll(fds: &mut [libc::pollfd]) {
    // SAFETY: `fds` is a valid array of pollfd for its length.
    unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
}

/// Pings every attempt from the current namespace, both families in the same round:
/// which were answered. `id` tells our replies from anything else arriving at the pod.
fn ping_all(pods: &[ProbePod], tries: &[Attempt], id: u16) -> std::io::Result<Vec<bool>> {
    let v4 = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))?;
    let v6 = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
    v4.set_nonblocking(true)?;
    v6.set_nonblocking(true)?;
    let mut answered = vec![false; tries.len()];
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 1500];
    for _ in 0..ROUNDS {
        for (k, a) in tries.iter().enumerate() {
            if !answered[k] {
                let socket = if a.v6 { &v6 } else { &v4 };
                let to: SockAddr = SocketAddr::new(pods[a.target].address(a.v6), 0).into();
                // A full send buffer or an unreachable route is a lost echo; retried.
                let _ = socket.send_to(&icmp::echo_request(a.v6, id, k as u16), &to);
            }
        }
        let deadline = Instant::now() + ROUND_WAIT;
        while answered.contains(&false) && Instant::now() < deadline {
            let mut fds = [v4.as_raw_fd(), v6.as_raw_fd()].map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            });
            poll(&mut fds);
            for (socket, is_v6) in [(&v4, false), (&v6, true)] {
                while let Ok((len, from)) = socket.recv_from(&mut buf) {
                    // SAFETY: recv_from initialised the first `len` bytes.
                    let datagram: &[u8] =
                        unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), len) };
                    let Some((reply_id, seq)) = icmp::echo_reply(is_v6, datagram) else {
                        continue;
                    };
                    let source = if is_v6 {
                        from.as_socket().map(|a| a.ip())
                    } else {
                        icmp::ipv4_source(datagram)
                    };
                    let k = usize::from(seq);
                    if reply_id == id
                        && tries.get(k).is_some_and(|a| {
                            a.v6 == is_v6 && source == Some(pods[a.target].address(is_v6))
                        })
                    {
                        answered[k] = true;
                    }
                }
            }
        }
        if !answered.contains(&false) {
            break;
        }
    }
    Ok(answered)
}

/// Opens a TCP connection for every attempt from the current namespace, up to
/// [`CONNECT_BATCH`] at once: which connected.
fn connect_all(pods: &[ProbePod], tries: &[Attempt]) -> Vec<bool> {
    let mut connected = vec![false; tries.len()];
    for _ in 0..ROUNDS {
        let missing: Vec<usize> = (0..tries.len()).filter(|k| !connected[*k]).collect();
        for batch in missing.chunks(CONNECT_BATCH) {
            let addrs: Vec<SocketAddr> = batch
                .iter()
                .map(|k| {
                    let a = tries[*k];
                    SocketAddr::new(pods[a.target].address(a.v6), PROBE_PORT)
                })
                .collect();
            for (k, ok) in batch.iter().zip(connect_batch(&addrs)) {
                connected[*k] = ok;
            }
        }
        if !connected.contains(&false) {
            break;
        }
    }
    connected
}

/// Non-blocking connects to `addrs`, waiting up to [`ROUND_WAIT`] for all of them.
fn connect_batch(addrs: &[SocketAddr]) -> Vec<bool> {
    let mut result = vec![false; addrs.len()];
    let mut pending: Vec<(usize, Socket)> = Vec::new();
    for (k, addr) in addrs.iter().enumerate() {
        let Ok(socket) = Socket::new(Domain::for_address(*addr), Type::STREAM, None) else {
            continue;
        };
        if socket.set_nonblocking(true).is_err() {
            continue;
        }
        match socket.connect(&(*addr).into()) {
            Ok(()) => result[k] = true,
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => pending.push((k, socket)),
            Err(_) => {}
        }
    }
    let deadline = Instant::now() + ROUND_WAIT;
    while !pending.is_empty() && Instant::now() < deadline {
        let mut fds: Vec<libc::pollfd> = pending
            .iter()
            .map(|(_, s)| libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            })
            .collect();
        poll(&mut fds);
        let mut still = Vec::new();
        for ((k, socket), fd) in pending.into_iter().zip(&fds) {
            if fd.revents == 0 {
                still.push((k, socket));
            } else {
                result[k] = matches!(socket.take_error(), Ok(None))
                    && fd.revents & (libc::POLLERR | libc::POLLHUP) == 0;
            }
        }
        pending = still;
    }
    result
}

/// Probes one source pod to every other pod, from inside the source's namespace.
fn probe_from(pods: &[ProbePod], from: usize) -> std::io::Result<Vec<PairResult>> {
    enter(&pods[from].netns_path)?;
    let targets: Vec<usize> = (0..pods.len()).filter(|t| *t != from).collect();
    let tries = attempts(&targets);
    let id = from as u16 ^ 0xf100;
    let ping = ping_all(pods, &tries, id)?;
    let tcp = connect_all(pods, &tries);
    let n = targets.len();
    Ok(targets
        .iter()
        .enumerate()
        .map(|(k, to)| PairResult {
            from,
            to: *to,
            ok: [ping[k], ping[n + k], tcp[k], tcp[n + k]],
        })
        .collect())
}

/// Raises this process's open-file limit to its hard limit and returns how many
/// workers fit in it: each holds up to [`CONNECT_BATCH`] sockets, the listeners one per
/// pod. A socket that cannot be opened would count as an unreachable pair, so the
/// worker count gives way instead.
fn workers_that_fit(pods: usize, wanted: usize) -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the one struct passed.
    let soft = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1;
        }
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            raised.rlim_cur
        } else {
            limit.rlim_cur
        }
    };
    let spare = (soft as usize).saturating_sub(pods + 256);
    wanted.clamp(1, (spare / (CONNECT_BATCH + 4)).max(1))
}

/// Probes every ordered pair of `pods` with up to `threads` workers (fewer when the
/// open-file limit is low); `progress(done, total)` is called from the workers as
/// source pods finish.
pub fn probe_all(
    pods: &[ProbePod],
    threads: usize,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Vec<PairResult>, String> {
    let threads = workers_that_fit(pods.len(), threads);
    let listeners = open_listeners(pods, threads)?;
    let stop = Arc::new(AtomicBool::new(false));
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let results: Mutex<Vec<PairResult>> = Mutex::new(Vec::new());
    let errors: Mutex<Vec<String>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        scope.spawn(|| accept_until(&listeners, &stop));
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| {
                scope.spawn(|| loop {
                    let from = next.fetch_add(1, Ordering::Relaxed);
                    if from >= pods.len() {
                        break;
                    }
                    match probe_from(pods, from) {
                        Ok(r) => results.lock().expect("results").extend(r),
                        Err(e) => errors.lock().expect("errors").push(format!(
                            "probe from {}: {e}",
                            pods[from].netns_path.display()
                        )),
                    }
                    progress(done.fetch_add(1, Ordering::Relaxed) + 1, pods.len());
                })
            })
            .collect();
        for w in workers {
            let _ = w.join();
        }
        stop.store(true, Ordering::Relaxed);
    });
    let errors = errors.into_inner().expect("errors");
    if !errors.is_empty() {
        return Err(errors.join("; "));
    }
    let mut results = results.into_inner().expect("results");
    results.sort_by_key(|r| (r.from, r.to));
    Ok(results)
}
