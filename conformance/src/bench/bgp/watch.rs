//! Seeing routes arrive in a receiver's kernel without asking the receiver: a netlink
//! socket in the receiver's namespace joined to the IPv4 route notification group counts
//! RTM_NEWROUTE messages of one route protocol and notes when the last expected one came
//! (t1). The kernel sends a notification as it inserts each route, so nothing is polled
//! and the receiver is not disturbed beyond the notification itself, which every
//! contender (the `ip -batch` floor too) pays alike. A full table read (`ip route show`)
//! afterwards checks the count, the prefixes and the next hop.

use anyhow::{bail, ensure, Context, Result};
use ipnetwork::Ipv4Network;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket};
use nix::sched::{setns, CloneFlags};
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::injector::prefix_index;

/// RTNLGRP_IPV4_ROUTE (linux/rtnetlink.h).
const RTNLGRP_IPV4_ROUTE: u32 = 7;
/// Room for every notification of a large table even if this thread falls behind
/// (about 1 KiB of kernel memory each); root may exceed rmem_max (SO_RCVBUFFORCE).
const RECEIVE_BUFFER: libc::c_int = 256 << 20;
/// How often the watching thread looks at its stop flag when nothing arrives.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// What the watcher saw.
#[derive(Clone, Copy, Debug)]
pub struct Watched {
    /// RTM_NEWROUTE notifications of the protocol.
    pub added: usize,
    pub first: Option<Instant>,
    /// When the `want`th arrived.
    pub all: Option<Instant>,
}

/// A watcher thread; [`RouteWatch::finish`] collects what it saw.
pub struct RouteWatch {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<Watched>>,
}

impl RouteWatch {
    /// Starts counting routes of `protocol` added in the namespace at `netns`; returns
    /// once the socket is subscribed, so nothing added afterwards is missed.
    pub fn start(netns: &Path, protocol: u8, want: usize) -> Result<RouteWatch> {
        let ns = File::open(netns).with_context(|| format!("open {}", netns.display()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready) = mpsc::sync_channel(1);
        let stopped = stop.clone();
        let path = netns.to_path_buf();
        let thread = std::thread::spawn(move || {
            let socket = match subscribe(&ns, &path) {
                Ok(s) => {
                    let _ = ready_tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("{e:#}")));
                    return Err(e);
                }
            };
            count(&socket, protocol, want, &stopped)
        });
        match ready.recv() {
            Ok(Ok(())) => Ok(RouteWatch { stop, thread }),
            Ok(Err(e)) => bail!("route watcher: {e}"),
            Err(_) => bail!("the route watcher thread ended before subscribing"),
        }
    }

    /// Waits until every wanted route was seen or `timeout` passed, then stops.
    pub fn finish(self, timeout: Duration) -> Result<Watched> {
        let deadline = Instant::now() + timeout;
        while !self.thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("route watcher panicked")
    }
}

fn subscribe(ns: &File, path: &Path) -> Result<Socket> {
    setns(ns, CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("enter namespace {}", path.display()))?;
    let mut socket = Socket::new(NETLINK_ROUTE).context("open a netlink socket")?;
    socket.bind_auto().context("bind the netlink socket")?;
    let fd = socket.as_raw_fd();
    set_option(fd, libc::SO_RCVBUFFORCE, &RECEIVE_BUFFER).context("SO_RCVBUFFORCE")?;
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: STOP_CHECK.as_micros() as libc::suseconds_t,
    };
    set_option(fd, libc::SO_RCVTIMEO, &timeout).context("SO_RCVTIMEO")?;
    socket
        .add_membership(RTNLGRP_IPV4_ROUTE)
        .context("join RTNLGRP_IPV4_ROUTE")?;
    Ok(socket)
}

fn set_option<T>(fd: libc::c_int, option: libc::c_int, value: &T) -> std::io::Result<()> {
    // SAFETY: `value` points to a live T of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn count(socket: &Socket, protocol: u8, want: usize, stop: &AtomicBool) -> Result<Watched> {
    let mut seen = Watched {
        added: 0,
        first: None,
        all: None,
    };
    let mut buf = vec![0u8; 1 << 16];
    while !stop.load(Ordering::SeqCst) {
        // SAFETY: buf is valid for writes of its length.
        let n = unsafe { libc::recv(socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        let now = Instant::now();
        if n < 0 {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN | libc::EINTR) => continue,
                Some(libc::ENOBUFS) => bail!(
                    "route notifications overflowed the watcher's socket after {} routes",
                    seen.added
                ),
                _ => return Err(e).context("read route notifications"),
            }
        }
        let added = count_added(&buf[..n as usize], protocol);
        if added > 0 {
            seen.first.get_or_insert(now);
            seen.added += added;
            if seen.added >= want {
                seen.all = Some(now);
                break;
            }
        }
    }
    Ok(seen)
}

/// RTM_NEWROUTE messages of `protocol` in one datagram.
fn count_added(mut datagram: &[u8], protocol: u8) -> usize {
    let mut added = 0;
    while datagram.len() >= 16 {
        let len = u32::from_ne_bytes(datagram[..4].try_into().expect("4 bytes")) as usize;
        if len < 16 || len > datagram.len() {
            break;
        }
        if let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&datagram[..len]) {
            if let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(r)) = msg.payload {
                if u8::from(r.header.protocol) == protocol {
                    added += 1;
                }
            }
        }
        let aligned = (len + 3) & !3;
        datagram = &datagram[aligned.min(datagram.len())..];
    }
    added
}

/// Reads the namespace's IPv4 routes of `protocol` and checks they are exactly the `n`
/// injected prefixes, each via `next_hop`.
pub fn verify_table(netns: &str, protocol: u8, n: usize, next_hop: Ipv4Addr) -> Result<()> {
    let out = Command::new("ip")
        .args(["-n", netns, "-4", "route", "show", "proto"])
        .arg(protocol.to_string())
        .output()
        .context("run ip route show")?;
    ensure!(
        out.status.success(),
        "ip -n {netns} route show failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_routes(&String::from_utf8_lossy(&out.stdout), n, next_hop)
}

/// `ip route show` text: one `PREFIX via NEXT_HOP dev ...` line per route.
fn check_routes(text: &str, n: usize, next_hop: Ipv4Addr) -> Result<()> {
    let mut present = vec![false; n];
    let (mut lines, mut wrong) = (0usize, Vec::new());
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        lines += 1;
        let mut words = line.split_whitespace();
        let index = words
            .next()
            .and_then(|p| p.parse::<Ipv4Network>().ok())
            .and_then(|p| prefix_index(p, n));
        let via = words.next() == Some("via")
            && words.next().and_then(|a| a.parse::<Ipv4Addr>().ok()) == Some(next_hop);
        match index {
            Some(i) if via && !present[i] => present[i] = true,
            _ if wrong.len() < 3 => wrong.push(line.to_string()),
            _ => {}
        }
    }
    let missing = present.iter().filter(|p| !**p).count();
    ensure!(
        missing == 0 && lines == n,
        "the kernel holds {lines} routes; {missing} of the {n} injected prefixes are missing \
         or not via {next_hop}; unexpected: {wrong:?}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::injector::prefix;
    use super::*;

    #[test]
    fn a_table_of_exactly_the_injected_routes_passes() {
        let nh: Ipv4Addr = "192.168.255.2".parse().unwrap();
        let text: String = (0..3)
            .map(|i| format!("{} via {nh} dev v1 proto bird metric 32\n", prefix(i)))
            .collect();
        check_routes(&text, 3, nh).unwrap();
    }

    #[test]
    fn missing_duplicate_foreign_or_misrouted_routes_fail() {
        let nh: Ipv4Addr = "192.168.255.2".parse().unwrap();
        let line = |i: usize, via: &str| format!("{} via {via} dev v1\n", prefix(i));
        let missing = line(0, "192.168.255.2");
        assert!(check_routes(&missing, 2, nh).is_err());
        let misrouted = line(0, "192.168.255.2") + &line(1, "192.168.255.9");
        assert!(check_routes(&misrouted, 2, nh).is_err());
        let extra =
            line(0, "192.168.255.2") + &line(1, "192.168.255.2") + &line(2, "192.168.255.2");
        assert!(check_routes(&extra, 2, nh).is_err());
        let doubled = line(0, "192.168.255.2") + &line(0, "192.168.255.2");
        assert!(check_routes(&doubled, 2, nh).is_err());
    }

    #[test]
    fn only_new_routes_of_the_protocol_are_counted() {
        use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};
        use netlink_packet_route::route::{RouteMessage, RouteProtocol};
        let message = |protocol: u8, new: bool| {
            let mut r = RouteMessage::default();
            r.header.protocol = RouteProtocol::from(protocol);
            let inner = if new {
                RouteNetlinkMessage::NewRoute(r)
            } else {
                RouteNetlinkMessage::DelRoute(r)
            };
            let mut m = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(inner));
            m.finalize();
            let mut buf = vec![0; m.buffer_len()];
            m.serialize(&mut buf);
            buf
        };
        let mut datagram = message(200, true);
        datagram.extend(message(12, true));
        datagram.extend(message(200, false));
        datagram.extend(message(200, true));
        assert_eq!(count_added(&datagram, 200), 2);
        assert_eq!(count_added(&datagram, 12), 1);
    }
}
