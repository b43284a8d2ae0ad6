//! `fjord-bench bfd [--trials N] [--peer fjord|frr|bird] [--hold-time S] [--hold-trials N]`:
//! failure detection with BFD against the BGP hold time, the same cut for both (the
//! peer's packets dropped on arrival by an nftables table in the detecting namespace).
//!
//! - BFD: Fjord's BFD (300 ms x 3, IPv4 and IPv6 sessions) one veth hop from the peer;
//!   per trial, the cut to Fjord's Down (its detection timer), then restore and wait Up.
//! - Hold time (BFD off): two real `fjord-routed` daemons in a two-node lab with
//!   `--hold-time S` (default 30, the daemon's default); per trial, the cut of node2's
//!   packets at node1 to node1's session leaving Established, polled from `status`.
//!
//! - Cost (`--sessions N`, default 200): N sessions in one service to peers that do not
//!   answer (Down, one packet a second each): the process's resident memory before and
//!   after, and the service thread's CPU time and wakeups (context switches) over 10 s.
//!
//! Prints every trial, the medians, and BFD's median as a fraction of the hold time's.
//! Build first: `cargo build --release --workspace --bins`; run as root.

use crate::bfd_detection::{fjord_detects, wait_all_up, Trial};
use crate::bfd_link::{median, ms, BfdLink, FjordBfd, InputDrop, A_V4, A_V6, B_V4, B_V6};
use crate::bfd_peers::{BfdNeighbor, BfdPeer, BirdBfd, FrrBfdd};
use crate::lab::{Lab, LabSpec};
use anyhow::{bail, ensure, Context, Result};
use fjord_routed::bfd::Timers;
use std::net::IpAddr;
use std::time::{Duration, Instant};

const USAGE: &str =
    "usage: fjord-bench bfd [--trials N] [--peer fjord|frr|bird] [--hold-time S] [--hold-trials N]";

struct Args {
    trials: usize,
    peer: String,
    hold_time: u16,
    hold_trials: usize,
    sessions: usize,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args> {
    let mut parsed = Args {
        trials: 10,
        peer: "fjord".into(),
        hold_time: 30,
        hold_trials: 3,
        sessions: 200,
    };
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--trials" => parsed.trials = value("--trials")?.parse().context("--trials")?,
            "--peer" => parsed.peer = value("--peer")?,
            "--hold-time" => {
                parsed.hold_time = value("--hold-time")?.parse().context("--hold-time")?
            }
            "--hold-trials" => {
                parsed.hold_trials = value("--hold-trials")?.parse().context("--hold-trials")?
            }
            "--sessions" => parsed.sessions = value("--sessions")?.parse().context("--sessions")?,
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    ensure!(parsed.trials > 0, "--trials must be at least 1");
    ensure!(
        matches!(parsed.peer.as_str(), "fjord" | "frr" | "bird"),
        "--peer {}: one of fjord, frr, bird",
        parsed.peer
    );
    ensure!(
        parsed.hold_time >= 3,
        "--hold-time must be at least 3 (RFC 4271)"
    );
    Ok(parsed)
}

pub fn main(args: impl Iterator<Item = String>) -> Result<()> {
    let args = parse(args)?;
    ensure!(
        nix::unistd::geteuid().is_root(),
        "fjord-bench bfd creates network namespaces: run it as root"
    );
    let bfd = bfd_trials(&args);
    let hold = if args.hold_trials == 0 {
        Vec::new()
    } else {
        hold_time_trials(args.hold_time, args.hold_trials)
    };
    summary(&args, &bfd, &hold);
    if args.sessions > 0 {
        cost(args.sessions)?;
    }
    Ok(())
}

/// A field of `/proc/self/status` (or a task's), in its unit (kB for memory).
fn proc_status(path: &str, field: &str) -> Result<u64> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {path}"))?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .with_context(|| format!("{field} in {path}"))
}

/// utime + stime of a thread, in clock ticks.
fn thread_cpu_ticks(tid: i32) -> Result<u64> {
    let path = format!("/proc/self/task/{tid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("stat format")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11).context("utime")?.parse()?;
    let stime: u64 = fields.get(12).context("stime")?.parse()?;
    Ok(utime + stime)
}

fn cost(sessions: usize) -> Result<()> {
    let link = BfdLink::new();
    link.a
        .ip(&["route", "add", "10.77.1.0/24", "dev", &link.a_ifname]);
    let fjord = FjordBfd::start(&link.a);
    std::thread::sleep(Duration::from_secs(1));
    let rss_before = proc_status("/proc/self/status", "VmRSS:")?;
    for i in 0..sessions {
        let peer = IpAddr::from([10, 77, 1, (i + 1) as u8]);
        fjord.add(peer, A_V4.into(), Timers::default());
    }
    std::thread::sleep(Duration::from_secs(2));
    let rss_after = proc_status("/proc/self/status", "VmRSS:")?;
    let tid = fjord.thread_id();
    let task = format!("/proc/self/task/{tid}/status");
    let switches = |t: &str| -> Result<u64> {
        Ok(proc_status(t, "voluntary_ctxt_switches:")?
            + proc_status(t, "nonvoluntary_ctxt_switches:")?)
    };
    let (cpu0, sw0, t0) = (thread_cpu_ticks(tid)?, switches(&task)?, Instant::now());
    std::thread::sleep(Duration::from_secs(10));
    let (cpu1, sw1, elapsed) = (thread_cpu_ticks(tid)?, switches(&task)?, t0.elapsed());
    // SAFETY: sysconf only reads a constant of the system.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu = (cpu1 - cpu0) as f64 / ticks_per_second;
    let secs = elapsed.as_secs_f64();
    let grown_kib = rss_after.saturating_sub(rss_before);
    println!("cost of {sessions} Down sessions (1 packet/s each, to peers that do not answer):");
    println!(
        "  resident memory {rss_before} KiB -> {rss_after} KiB: +{grown_kib} KiB, {:.0} bytes a session",
        grown_kib as f64 * 1024.0 / sessions as f64
    );
    println!(
        "  service thread: {:.1} wakeups/s for {sessions} packets/s, CPU {:.2} % of one core",
        (sw1 - sw0) as f64 / secs,
        cpu / secs * 100.0
    );
    Ok(())
}

fn bfd_trials(args: &Args) -> Vec<Duration> {
    let link = BfdLink::new();
    let peers: [IpAddr; 2] = [B_V4.into(), B_V6.into()];
    let ours: [IpAddr; 2] = [A_V4.into(), A_V6.into()];
    let neighbors: Vec<BfdNeighbor> = ours
        .iter()
        .zip(peers)
        .map(|(&address, local)| BfdNeighbor { address, local })
        .collect();
    let peer: Box<dyn BfdPeer> = match args.peer.as_str() {
        "frr" => Box::new(FrrBfdd::start(&link.b, &neighbors, Timers::default())),
        "bird" => Box::new(BirdBfd::start(
            &link.b,
            B_V4.into(),
            &neighbors,
            Timers::default(),
        )),
        _ => {
            let b = FjordBfd::start(&link.b);
            for (local, peer) in peers.iter().zip(ours) {
                b.add(peer, *local, Timers::default());
            }
            Box::new(b)
        }
    };
    let fjord = FjordBfd::start(&link.a);
    for (peer, local) in peers.iter().zip(ours) {
        fjord.add(*peer, local, Timers::default());
    }
    wait_all_up(
        &fjord,
        &peers,
        peer.as_ref(),
        &ours,
        Duration::from_secs(20),
    );
    println!(
        "BFD 300 ms x 3, fjord <- {} over one veth hop, {} trials (IPv4 and IPv6 sessions each):",
        args.peer, args.trials
    );
    let mut all = Vec::new();
    for i in 0..args.trials {
        let Trial {
            detected, back_up, ..
        } = fjord_detects(&link, &fjord, &peers, peer.as_ref(), &ours);
        println!(
            "  trial {:2}: IPv4 {:4.0} ms  IPv6 {:4.0} ms  (back Up {:.0} ms after restore)",
            i + 1,
            ms(detected[0]),
            ms(detected[1]),
            ms(back_up)
        );
        all.extend(detected);
    }
    all
}

/// Two real daemons, BFD off: a cut is noticed when the hold timer expires.
fn hold_time_trials(hold_time: u16, trials: usize) -> Vec<Duration> {
    let lab = Lab::new(LabSpec::nodes(2));
    let hold = hold_time.to_string();
    let extra = ["--hold-time", hold.as_str(), "--connect-retry", "1"];
    let _node1 = lab.start_routed(0, &extra);
    let _node2 = lab.start_routed(1, &extra);
    let peer = lab.mesh_peers_of(0);
    let node2 = lab.node(1).address(false);
    let established_within = Duration::from_secs(60);
    lab.wait_established(0, &peer, established_within);
    println!("BGP hold time {hold_time} s (BFD off), node1 <- node2, {trials} trials:");
    let mut all = Vec::new();
    for i in 0..trials {
        let cut = InputDrop::cut(lab.node(0).netns(), &format!("ip saddr {node2}"));
        let cut_at = Instant::now();
        lab.wait_for_status(
            0,
            Duration::from_secs(u64::from(hold_time) + 10),
            "the session with node2 leaves Established",
            |s| s.peers.iter().all(|p| p.state != "Established"),
        );
        let detected = cut_at.elapsed();
        cut.restore();
        lab.wait_established(0, &peer, established_within);
        println!("  trial {:2}: {:6.0} ms", i + 1, ms(detected));
        all.push(detected);
    }
    all
}

fn summary(args: &Args, bfd: &[Duration], hold: &[Duration]) {
    let bfd_median = median(bfd);
    let bfd_max = bfd.iter().max().copied().unwrap_or_default();
    println!(
        "BFD (fjord <- {}): median {:.0} ms, max {:.0} ms over {} detections",
        args.peer,
        ms(bfd_median),
        ms(bfd_max),
        bfd.len()
    );
    if hold.is_empty() {
        return;
    }
    let hold_median = median(hold);
    println!(
        "hold time {} s: median {:.0} ms over {} trials",
        args.hold_time,
        ms(hold_median),
        hold.len()
    );
    println!(
        "BFD / hold time (medians): {:.3}",
        bfd_median.as_secs_f64() / hold_median.as_secs_f64()
    );
}
