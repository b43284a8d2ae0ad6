//! `fjord-lab status` and `fjord-lab exec`: read the state file, look into the lab.

use crate::teardown::alive;
use crate::Place;
use anyhow::{bail, Context, Result};
use fjord_conformance::fjord_bin;
use fjord_conformance::lab::process_start_time;
use fjord_conformance::labstate::{LabState, NodeRecord, Phase};
use fjord_conformance::netns::NETNS_DIR;
use std::fs::File;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// The running lab's state, or an error saying there is none.
fn running(place: &Place) -> Result<LabState> {
    place.load()?.with_context(|| {
        format!(
            "no lab is up ({} does not exist); start one with `fjord-lab up`",
            place.state_file().display()
        )
    })
}

/// Whether the daemon recorded for node `name` runs (same pid, same start time).
fn daemon_pid(state: &LabState, node: &str) -> Option<u32> {
    let role = format!("fjord-routed {node}");
    state
        .processes
        .iter()
        .rev()
        .find(|p| p.role == role)
        .filter(|p| alive(p.pid) && process_start_time(p.pid) == Some(p.start_time))
        .map(|p| p.pid)
}

/// `fjord-lab status`: exit 0 when every node's daemon runs.
pub fn status(place: &Place) -> Result<i32> {
    let state = running(place)?;
    let phase = match state.phase {
        Phase::Building => "being built (or its `up` died: `fjord-lab down` removes it)",
        Phase::Up => "up",
    };
    println!(
        "lab {}: {phase}; {} nodes, {} pods, {} subnet(s), encapsulation {}, store {}",
        state.prefix,
        state.nodes.len(),
        state.pods.len(),
        state.request.subnets,
        state.request.encapsulation,
        state.store
    );
    println!(
        "directory {} (daemon logs: NODE.routed.log)",
        state.dir.display()
    );
    let mut all_alive = true;
    println!("\nnodes:");
    for node in &state.nodes {
        let daemon = match daemon_pid(&state, &node.name) {
            Some(pid) => format!("fjord-routed pid {pid}"),
            None => {
                all_alive = false;
                "fjord-routed NOT RUNNING".to_string()
            }
        };
        println!(
            "  {:<8} netns {:<16} {} {} (subnet {})  {daemon}",
            node.name, node.netns, node.address_v4, node.address_v6, node.subnet
        );
    }
    for p in state
        .processes
        .iter()
        .filter(|p| !p.role.starts_with("fjord-routed"))
    {
        let running = alive(p.pid) && process_start_time(p.pid) == Some(p.start_time);
        all_alive &= running;
        let how = if running { "running" } else { "NOT RUNNING" };
        println!("  {} in {}: pid {} {how}", p.role, p.netns, p.pid);
    }
    for node in &state.nodes {
        println!("\n{} peers:", node.name);
        match peer_table(node) {
            Ok(table) => print!("{table}"),
            Err(e) => {
                all_alive = false;
                println!("  {e:#}");
            }
        }
    }
    println!("\npods:");
    let mut pods: Vec<_> = state.pods.iter().collect();
    // node1-pod2 before node1-pod10: by node, then by the pod's number.
    pods.sort_by_key(|p| (p.node, p.name.len(), p.name.clone()));
    for pod in pods {
        let show = |a: Option<std::net::IpAddr>| a.map(|a| a.to_string()).unwrap_or("-".into());
        println!(
            "  {:<14} on {:<8} {:<15} {}",
            pod.name,
            state
                .nodes
                .get(pod.node)
                .map(|n| n.name.as_str())
                .unwrap_or("?"),
            show(pod.ipv4),
            show(pod.ipv6)
        );
    }
    Ok(if all_alive { 0 } else { 1 })
}

/// `fjord-routed status --socket SOCKET` run in the node's namespace: the peer table.
pub fn peer_table(node: &NodeRecord) -> Result<String> {
    let mut cmd = Command::new(fjord_bin("fjord-routed"));
    cmd.arg("status")
        .arg("--socket")
        .arg(&node.socket)
        .stdin(Stdio::null());
    let out = in_netns(&node.netns, &mut cmd)?
        .output()
        .with_context(|| format!("run fjord-routed status on {}", node.name))?;
    if !out.status.success() {
        bail!(
            "fjord-routed status on {} failed ({}): {}",
            node.name,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Makes `cmd` enter the namespace `/run/netns/NETNS` between fork and exec; the
/// returned guard keeps the namespace file open until the command is spawned.
fn in_netns<'a>(netns: &str, cmd: &'a mut Command) -> Result<&'a mut Command> {
    let path = Path::new(NETNS_DIR).join(netns);
    let file = File::open(&path).with_context(|| format!("open {}", path.display()))?;
    // SAFETY: setns is one async-signal-safe system call; `file` moves into the closure,
    // so its fd stays open for as long as the command can be spawned.
    unsafe {
        cmd.pre_exec(move || {
            nix::sched::setns(
                BorrowedFd::borrow_raw(file.as_raw_fd()),
                nix::sched::CloneFlags::CLONE_NEWNET,
            )
            .map_err(std::io::Error::from)
        });
    }
    Ok(cmd)
}

/// `fjord-lab exec TARGET -- CMD…`: the command's exit code.
pub fn exec(place: &Place, target: &str, command: &[String]) -> Result<i32> {
    let state = running(place)?;
    let netns = if let Some(pod) = state.pod(target) {
        pod.netns.clone()
    } else if let Some(node) = state.nodes.iter().find(|n| n.name == target) {
        node.netns.clone()
    } else {
        let pods: Vec<&str> = state.pods.iter().map(|p| p.name.as_str()).take(6).collect();
        bail!(
            "no pod or node {target:?} in the lab (pods are named like {}; `fjord-lab status` lists them)",
            pods.join(", ")
        );
    };
    let (program, args) = command.split_first().context("no command given")?;
    let mut cmd = Command::new(program);
    cmd.args(args);
    let status = in_netns(&netns, &mut cmd)?
        .status()
        .with_context(|| format!("run {program} in {netns}"))?;
    Ok(status.code().unwrap_or(128 + 9))
}
