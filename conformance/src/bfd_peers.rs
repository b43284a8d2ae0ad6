//! Real BFD speakers from Debian's packages as peers of Fjord's BFD: FRR's `bfdd`
//! ([`FrrBfdd`]) and BIRD 2's BFD protocol ([`BirdBfd`]), behind one trait
//! ([`BfdPeer`]) so a test runs the same checks against either.
//!
//! Each is a private instance in the given namespace with its own config, control
//! socket, pid file and log in a temp dir of its own, run in the foreground (`setns`
//! between fork and exec) and stopped (SIGTERM, then SIGKILL) on drop. FRR runs bfdd
//! alone (no zebra, no watchfrr), as the user `frr` (its vty group is compiled in).

use crate::lab::{spawn_in_netns, stop_child, tail, STOP_GRACE};
use crate::netns::Netns;
use crate::peers::{routing_command, CONTROL_READY_WITHIN};
use crate::tempdir::TempDir;
use fjord_routed::bfd::Timers;
use serde_json::Value;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// One single-hop session a peer is configured with.
#[derive(Clone, Copy, Debug)]
pub struct BfdNeighbor {
    /// Fjord's address.
    pub address: IpAddr,
    /// The peer's own address on the link.
    pub local: IpAddr,
}

/// What a test reads from either peer.
pub trait BfdPeer {
    /// `frr` or `bird`, for messages.
    fn kind(&self) -> &'static str;

    /// The session state with `neighbor`, lower case (`up`, `down`, `init`,
    /// `admindown`), or why it cannot be read.
    fn state(&self, neighbor: IpAddr) -> Result<String, String>;

    fn log_tail(&self) -> String;

    /// The states of several neighbors from one look (one CLI call where the peer
    /// allows it, so polling them together costs one round).
    fn states(&self, neighbors: &[IpAddr]) -> Vec<Result<String, String>> {
        neighbors.iter().map(|n| self.state(*n)).collect()
    }

    /// When the peer's log says the session with `neighbor` went from up to down, the
    /// first time at or after `since`; None where the peer's log does not say.
    fn logged_down(&self, _neighbor: IpAddr, _since: SystemTime) -> Option<SystemTime> {
        None
    }

    fn is_up(&self, neighbor: IpAddr) -> bool {
        self.state(neighbor).is_ok_and(|s| s == "up")
    }

    /// Polls every 5 ms until `is(state)`; returns when it was seen, or panics after
    /// `timeout` with the last state and the log.
    fn wait_state(
        &self,
        neighbor: IpAddr,
        timeout: Duration,
        is: &dyn Fn(&str) -> bool,
    ) -> Instant {
        let deadline = Instant::now() + timeout;
        loop {
            let state = self.state(neighbor);
            if state.as_deref().is_ok_and(is) {
                return Instant::now();
            }
            if Instant::now() >= deadline {
                panic!(
                    "{}: the BFD session with {neighbor} did not reach the state wanted within \
                     {timeout:?} (last: {state:?})\n--- {} log ---\n{}",
                    self.kind(),
                    self.kind(),
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn output_of(program: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run {}: {e}", program.display()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{} {} exited with {}: {}{}",
            program.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        ))
    }
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

// ---------------------------------------------------------------------------------------
// FRR bfdd
// ---------------------------------------------------------------------------------------

/// FRR's bfdd: `bfdd -f CONF --vty_socket DIR -i PID --bfdctl SOCK -u frr -g frr`.
pub struct FrrBfdd {
    child: Child,
    dir: TempDir,
    vtysh: PathBuf,
}

/// Where Debian puts FRR's daemons (not on any PATH).
const FRR_DAEMONS: &str = "/usr/lib/frr";

impl FrrBfdd {
    /// Its config: one `peer` block per neighbor with the given timers.
    pub fn config(neighbors: &[BfdNeighbor], timers: Timers, log: &Path) -> String {
        // Millisecond timestamps and state changes in the log: a peer's detection time
        // is read from there, not from polling its CLI.
        let mut c = String::from("! Written by fjord's conformance suite (bfd_peers.rs).\n");
        let _ = writeln!(c, "log file {} debugging", log.display());
        c.push_str("log timestamp precision 3\ndebug bfd peer\nbfd\n");
        for n in neighbors {
            let _ = writeln!(c, " peer {} local-address {}", n.address, n.local);
            let _ = writeln!(c, "  detect-multiplier {}", timers.detect_mult);
            let _ = writeln!(c, "  receive-interval {}", ms(timers.required_min_rx));
            let _ = writeln!(c, "  transmit-interval {}", ms(timers.desired_min_tx));
            let _ = writeln!(c, " !");
        }
        c.push_str("!\n");
        c
    }

    pub fn start(ns: &Netns, neighbors: &[BfdNeighbor], timers: Timers) -> FrrBfdd {
        let bfdd = Path::new(FRR_DAEMONS).join("bfdd");
        assert!(
            bfdd.is_file(),
            "{} is not installed: run conformance/scripts/install-routing-deps.sh (Debian's frr)",
            bfdd.display()
        );
        let vtysh = routing_command("vtysh");
        let dir = TempDir::new("frr");
        // bfdd drops to the user frr and makes its sockets here.
        let chown = Command::new("chown")
            .args(["frr:frr", &dir.path().to_string_lossy()])
            .status();
        assert!(
            chown.is_ok_and(|s| s.success()),
            "chown frr:frr {} (does the user frr exist? install Debian's frr)",
            dir.path().display()
        );
        let conf = dir.join("bfdd.conf");
        let log = dir.join("bfdd.log");
        std::fs::write(&conf, FrrBfdd::config(neighbors, timers, &log)).expect("write bfdd.conf");
        let mut cmd = Command::new(&bfdd);
        cmd.arg("-f")
            .arg(&conf)
            .arg("--vty_socket")
            .arg(dir.path())
            .arg("-i")
            .arg(dir.join("bfdd.pid"))
            .arg("--bfdctl")
            .arg(dir.join("bfdd.sock"))
            .arg("-z")
            .arg(dir.join("zserv.api"))
            .args(["-u", "frr", "-g", "frr"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr")).expect("stderr file"));
        let child = spawn_in_netns(ns, &mut cmd);
        let mut frr = FrrBfdd { child, dir, vtysh };
        frr.wait_ready();
        frr
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + CONTROL_READY_WITHIN;
        loop {
            if self.peers_json().is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("bfdd exited with {status} at start:\n{}", self.log_tail());
            }
            assert!(
                Instant::now() < deadline,
                "bfdd does not answer on its vty within {CONTROL_READY_WITHIN:?}:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn peers_json(&self) -> Result<Value, String> {
        let dir = self.dir.path().to_string_lossy().into_owned();
        let text = output_of(
            &self.vtysh,
            &[
                "--vty_socket",
                &dir,
                "-d",
                "bfdd",
                "-c",
                "show bfd peers json",
            ],
        )?;
        serde_json::from_str(&text).map_err(|e| format!("bfdd's JSON ({e}): {text}"))
    }

    /// `shutdown` (or `no shutdown`) of one peer through the vty: bfdd takes the session
    /// AdminDown and tells the peer so.
    pub fn set_shutdown(&self, neighbor: &BfdNeighbor, shutdown: bool) -> Result<(), String> {
        let dir = self.dir.path().to_string_lossy().into_owned();
        let peer = format!("peer {} local-address {}", neighbor.address, neighbor.local);
        let command = if shutdown { "shutdown" } else { "no shutdown" };
        output_of(
            &self.vtysh,
            &[
                "--vty_socket",
                &dir,
                "-d",
                "bfdd",
                "-c",
                "configure terminal",
                "-c",
                "bfd",
                "-c",
                &peer,
                "-c",
                command,
            ],
        )
        .map(|_| ())
    }

    /// The full JSON object bfdd shows for `neighbor`.
    pub fn peer(&self, neighbor: IpAddr) -> Result<Value, String> {
        let all = self.peers_json()?;
        frr_peer_of(&all, neighbor)
            .cloned()
            .ok_or_else(|| format!("bfdd has no peer {neighbor}: {all}"))
    }
}

/// bfdd's status word, lower case; it says "shutdown" for a session it holds AdminDown.
fn frr_state(peer: &Value) -> String {
    match peer["status"].as_str().unwrap_or("unknown") {
        "shutdown" => "admindown".to_string(),
        other => other.to_ascii_lowercase(),
    }
}

fn frr_peer_of(all: &Value, neighbor: IpAddr) -> Option<&Value> {
    all.as_array().into_iter().flatten().find(|p| {
        p["peer"]
            .as_str()
            .and_then(|s| s.parse::<IpAddr>().ok())
            .is_some_and(|a| a == neighbor)
    })
}

impl BfdPeer for FrrBfdd {
    fn kind(&self) -> &'static str {
        "frr"
    }

    fn state(&self, neighbor: IpAddr) -> Result<String, String> {
        Ok(frr_state(&self.peer(neighbor)?))
    }

    fn states(&self, neighbors: &[IpAddr]) -> Vec<Result<String, String>> {
        let all = self.peers_json();
        neighbors
            .iter()
            .map(|n| match &all {
                Ok(all) => frr_peer_of(all, *n)
                    .map(frr_state)
                    .ok_or_else(|| format!("bfdd has no peer {n}")),
                Err(e) => Err(e.clone()),
            })
            .collect()
    }

    fn log_tail(&self) -> String {
        format!(
            "{}{}",
            tail(&self.dir.join("stderr"), 2_000),
            tail(&self.dir.join("bfdd.log"), 6_000)
        )
    }

    /// `2026/12/07 23:55:53.688 BFD: [..] state-change: [mhop:no peer:ADDR local:..] up -> down ..`
    fn logged_down(&self, neighbor: IpAddr, since: SystemTime) -> Option<SystemTime> {
        let text = std::fs::read_to_string(self.dir.join("bfdd.log")).ok()?;
        let peer = format!("peer:{neighbor} ");
        text.lines()
            .filter(|l| {
                l.contains("state-change:") && l.contains(&peer) && l.contains("up -> down")
            })
            .filter_map(log_time)
            .find(|t| *t >= since)
    }
}

impl Drop for FrrBfdd {
    fn drop(&mut self) {
        stop_child(&mut self.child, STOP_GRACE);
    }
}

// ---------------------------------------------------------------------------------------
// BIRD 2
// ---------------------------------------------------------------------------------------

/// BIRD 2 with only a device and a BFD protocol: `bird -f -c CONF -s SOCK -P PIDFILE`.
pub struct BirdBfd {
    child: Child,
    dir: TempDir,
    birdc: PathBuf,
}

impl BirdBfd {
    /// `neighbor` lines need no client protocol: BIRD keeps such sessions up on its own.
    pub fn config(
        router_id: IpAddr,
        neighbors: &[BfdNeighbor],
        timers: Timers,
        log: &Path,
    ) -> String {
        let mut c = String::from("# Written by fjord's conformance suite (bfd_peers.rs).\n");
        let _ = writeln!(c, "router id {router_id};");
        let _ = writeln!(c, "log \"{}\" all;", log.display());
        let _ = writeln!(c, "timeformat log \"%F %T.%3f\";");
        let _ = writeln!(c, "debug protocols {{ states, events }};");
        let _ = writeln!(c, "protocol device {{ scan time 1; }}");
        let _ = writeln!(c, "protocol bfd fjord_test {{");
        let _ = writeln!(c, "  debug {{ states, events }};");
        let _ = writeln!(
            c,
            "  interface \"*\" {{ min rx interval {} ms; min tx interval {} ms; \
             idle tx interval 1000 ms; multiplier {}; }};",
            ms(timers.required_min_rx),
            ms(timers.desired_min_tx),
            timers.detect_mult
        );
        for n in neighbors {
            let _ = writeln!(c, "  neighbor {} local {};", n.address, n.local);
        }
        let _ = writeln!(c, "}}");
        c
    }

    /// `router_id` must be IPv4 (BIRD's router id).
    pub fn start(
        ns: &Netns,
        router_id: IpAddr,
        neighbors: &[BfdNeighbor],
        timers: Timers,
    ) -> BirdBfd {
        let bird = routing_command("bird");
        let birdc = routing_command("birdc");
        let dir = TempDir::new("bird");
        let log = dir.join("bird.log");
        let conf = dir.join("bird.conf");
        std::fs::write(&conf, BirdBfd::config(router_id, neighbors, timers, &log))
            .expect("write bird.conf");
        let mut cmd = Command::new(bird);
        cmd.arg("-f")
            .arg("-c")
            .arg(&conf)
            .arg("-s")
            .arg(dir.join("bird.ctl"))
            .arg("-P")
            .arg(dir.join("bird.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr")).expect("stderr file"));
        let child = spawn_in_netns(ns, &mut cmd);
        let mut bird = BirdBfd { child, dir, birdc };
        bird.wait_ready();
        bird
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + CONTROL_READY_WITHIN;
        loop {
            if self.sessions().is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("bird exited with {status} at start:\n{}", self.log_tail());
            }
            assert!(
                Instant::now() < deadline,
                "bird does not answer on its socket within {CONTROL_READY_WITHIN:?}:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn sessions(&self) -> Result<String, String> {
        let sock = self.dir.join("bird.ctl");
        output_of(
            &self.birdc,
            &["-s", &sock.to_string_lossy(), "show", "bfd", "sessions"],
        )
    }
}

impl BfdPeer for BirdBfd {
    fn kind(&self) -> &'static str {
        "bird"
    }

    fn state(&self, neighbor: IpAddr) -> Result<String, String> {
        self.states(&[neighbor]).remove(0)
    }

    fn states(&self, neighbors: &[IpAddr]) -> Vec<Result<String, String>> {
        match self.sessions() {
            Ok(text) => neighbors.iter().map(|n| bird_state(&text, *n)).collect(),
            Err(e) => neighbors.iter().map(|_| Err(e.clone())).collect(),
        }
    }

    fn log_tail(&self) -> String {
        format!(
            "{}{}",
            tail(&self.dir.join("stderr"), 2_000),
            tail(&self.dir.join("bird.log"), 6_000)
        )
    }

    /// `2026-12-07 23:56:57.358 <TRACE> fjord_test: Session to ADDR changed state from Up to Down`
    fn logged_down(&self, neighbor: IpAddr, since: SystemTime) -> Option<SystemTime> {
        let text = std::fs::read_to_string(self.dir.join("bird.log")).ok()?;
        let change = format!("Session to {neighbor} changed state from Up to Down");
        text.lines()
            .filter(|l| l.contains(&change))
            .filter_map(log_time)
            .find(|t| *t >= since)
    }
}

/// The local time a log line starts with, `YYYY-MM-DD HH:MM:SS.mmm` (FRR writes `/`
/// between the date's parts), to the millisecond.
fn log_time(line: &str) -> Option<SystemTime> {
    let stamp = line.get(..23)?;
    let num = |range: std::ops::Range<usize>| stamp.get(range)?.parse::<i32>().ok();
    // SAFETY: tm is a plain C struct for which all zeroes is a valid value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    tm.tm_year = num(0..4)? - 1900;
    tm.tm_mon = num(5..7)? - 1;
    tm.tm_mday = num(8..10)?;
    tm.tm_hour = num(11..13)?;
    tm.tm_min = num(14..16)?;
    tm.tm_sec = num(17..19)?;
    tm.tm_isdst = -1;
    let millis = num(20..23)?;
    // SAFETY: mktime reads and normalises the tm it is given, which lives on this stack.
    let secs = unsafe { libc::mktime(&mut tm) };
    if secs < 0 {
        return None;
    }
    Some(
        SystemTime::UNIX_EPOCH
            + Duration::from_secs(secs as u64)
            + Duration::from_millis(millis as u64),
    )
}

/// From `show bfd sessions`: `IP  Interface  State  Since  Interval  Timeout`.
fn bird_state(text: &str, neighbor: IpAddr) -> Result<String, String> {
    text.lines()
        .find_map(|line| {
            let mut cols = line.split_whitespace();
            let ip: IpAddr = cols.next()?.parse().ok()?;
            (ip == neighbor).then(|| cols.nth(1).map(str::to_ascii_lowercase))?
        })
        .ok_or_else(|| format!("bird shows no BFD session with {neighbor}:\n{text}"))
}

impl Drop for BirdBfd {
    fn drop(&mut self) {
        stop_child(&mut self.child, STOP_GRACE);
    }
}

// ---------------------------------------------------------------------------------------
// Fjord itself, as the peer of another Fjord
// ---------------------------------------------------------------------------------------

impl BfdPeer for crate::bfd_link::FjordBfd {
    fn kind(&self) -> &'static str {
        "fjord"
    }

    fn state(&self, neighbor: IpAddr) -> Result<String, String> {
        self.status_of(neighbor)
            .map(|s| s.state.to_string().to_ascii_lowercase())
            .ok_or_else(|| format!("no Fjord BFD session with {neighbor}"))
    }

    fn log_tail(&self) -> String {
        format!("(in-process; sessions: {:?})", self.status())
    }
}
