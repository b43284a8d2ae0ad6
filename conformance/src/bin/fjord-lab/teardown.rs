//! `fjord-lab down`: removes every process, namespace and file a lab made, from its
//! state file and, for what the state file may have missed (a crash between two
//! records), by the lab's name prefix: every namespace `PREFIX*` in /run/netns and every
//! process whose network namespace is one of them.

use fjord_conformance::lab::process_start_time;
use fjord_conformance::labstate::LabState;
use fjord_conformance::netns::NETNS_DIR;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long processes get to exit after SIGTERM before SIGKILL.
const GRACE: Duration = Duration::from_secs(5);

/// What a teardown removed, and what it could not.
#[derive(Debug, Default)]
pub struct Removed {
    pub processes: usize,
    pub namespaces: usize,
    pub dir: Option<PathBuf>,
    pub problems: Vec<String>,
}

/// Namespaces in /run/netns whose name starts with `prefix`.
pub fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(NETNS_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names
}

/// Whether `pid` runs (exists and is not a zombie).
pub fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|state| state != "Z" && state != "X")
}

/// Pids (other than ours) whose network namespace is one of `namespaces`.
pub fn processes_in(namespaces: &[String]) -> Vec<u32> {
    let inodes: Vec<u64> = namespaces
        .iter()
        .filter_map(|n| std::fs::metadata(Path::new(NETNS_DIR).join(n)).ok())
        .map(|m| m.ino())
        .collect();
    if inodes.is_empty() {
        return Vec::new();
    }
    let me = std::process::id();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        if let Ok(meta) = std::fs::metadata(entry.path().join("ns/net")) {
            if inodes.contains(&meta.ino()) && alive(pid) {
                pids.push(pid);
            }
        }
    }
    pids
}

/// SIGTERM to each, SIGKILL to those still alive after [`GRACE`]; returns how many
/// were signalled.
fn stop(pids: &[u32]) -> usize {
    for pid in pids {
        let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGTERM);
    }
    let deadline = Instant::now() + GRACE;
    while pids.iter().any(|p| alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for pid in pids.iter().filter(|p| alive(**p)) {
        let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
    }
    let deadline = Instant::now() + GRACE;
    while pids.iter().any(|p| alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    pids.len()
}

/// Removes the lab described by `state` (if any) and everything named `prefix*`;
/// `dir` is the lab's directory (removed whole).
pub fn teardown(state: Option<&LabState>, prefix: &str, dir: &Path) -> Removed {
    let mut removed = Removed::default();
    let mut namespaces = namespaces_with_prefix(prefix);
    let mut pids: Vec<u32> = Vec::new();
    if let Some(state) = state {
        for ns in &state.namespaces {
            if !namespaces.contains(ns) && Path::new(NETNS_DIR).join(ns).exists() {
                namespaces.push(ns.clone());
            }
        }
        // Recorded processes, unless their pid now belongs to someone else.
        for p in &state.processes {
            if alive(p.pid) && process_start_time(p.pid) == Some(p.start_time) {
                pids.push(p.pid);
            }
        }
    }
    for pid in processes_in(&namespaces) {
        if !pids.contains(&pid) {
            pids.push(pid);
        }
    }
    removed.processes = stop(&pids);
    for pid in pids.iter().filter(|p| alive(**p)) {
        removed
            .problems
            .push(format!("process {pid} is still running after SIGKILL"));
    }
    // Pods first, then nodes, the router and the underlay: the reverse of creation.
    namespaces.sort_by_key(|n| std::cmp::Reverse(n.contains("-pod")));
    for ns in &namespaces {
        let out = std::process::Command::new("ip")
            .args(["netns", "del", ns])
            .output();
        match out {
            Ok(o) if o.status.success() => removed.namespaces += 1,
            Ok(o) => removed.problems.push(format!(
                "ip netns del {ns}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => removed.problems.push(format!("run ip netns del {ns}: {e}")),
        }
    }
    if dir.exists() {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => removed.dir = Some(dir.to_path_buf()),
            Err(e) => removed
                .problems
                .push(format!("remove {}: {e}", dir.display())),
        }
    }
    removed
}
