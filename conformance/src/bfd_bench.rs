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
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args> {
    let mut parsed = Args {
        trials: 10,
        peer: "fjord".into(),
        hold_time: 30,
        hold_trials: 3,
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
        let Trial { detected, back_up } =
            fjord_detects(&link, &fjord, &peers, peer.as_ref(), &ours);
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
