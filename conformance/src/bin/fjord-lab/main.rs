//! `fjord-lab`: a virtual Fjord cluster of network namespaces on one machine, with the
//! real `fjord`, `fjord-ipam` and `fjord-routed` (docs/lab.md).
//!
//! ```text
//! fjord-lab up [--nodes N] [--pods-per-node M] [--encapsulation never|always|cross-subnet]
//!              [--subnets K] [--store dir|etcd]
//! fjord-lab status
//! fjord-lab exec POD -- CMD [ARG]...
//! fjord-lab down
//! ```

mod etcd;
mod show;
mod teardown;
mod up;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use fjord_conformance::labstate::{LabState, STATE_FILE};
use std::path::PathBuf;

/// Where a lab keeps its state file, store, sockets and logs.
pub const DEFAULT_DIR: &str = "/run/fjord-lab";
/// What every namespace of the lab is named with.
pub const DEFAULT_PREFIX: &str = "fjl-";

#[derive(Parser, Debug)]
#[command(
    name = "fjord-lab",
    about = "A virtual Fjord cluster of network namespaces on this machine, running the real \
             fjord plugin, fjord-ipam and fjord-routed"
)]
struct Cli {
    /// The lab's directory: state file, IPAM store, daemon sockets and logs.
    #[arg(long, global = true, env = "FJORD_LAB_DIR", default_value = DEFAULT_DIR)]
    dir: PathBuf,
    /// Prefix of every namespace the lab makes (`fjl-node1`, `fjl-node1-pod1`, …).
    #[arg(long, global = true, env = "FJORD_LAB_PREFIX", default_value = DEFAULT_PREFIX)]
    prefix: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build the cluster, wait for BGP, probe every pod pair; exit 1 if a pair fails.
    Up(UpArgs),
    /// Nodes, daemons, peer tables and pods of the running lab.
    Status,
    /// Run a command in a pod's (or a node's) network namespace.
    Exec {
        /// A pod (`node1-pod1`) or a node (`node1`).
        target: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Remove every namespace, process and file of the lab (also after a crashed `up`).
    Down,
}

#[derive(clap::Args, Debug, Clone)]
pub struct UpArgs {
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=99))]
    pub nodes: u16,
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=60))]
    pub pods_per_node: u16,
    /// Passed to every fjord-routed.
    #[arg(long, value_enum, default_value_t = Encapsulation::Never)]
    pub encapsulation: Encapsulation,
    /// Underlay subnets (a router joins them when there are several).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=50))]
    pub subnets: u16,
    #[arg(long, value_enum, default_value_t = Store::Dir)]
    pub store: Store,
    /// Threads attaching pods and probing (bounded: this is a small machine).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub parallel: u16,
    /// How long to wait for every BGP session to be Established, in seconds.
    #[arg(long, default_value_t = 120)]
    pub bgp_timeout: u64,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encapsulation {
    Never,
    Always,
    CrossSubnet,
}

impl Encapsulation {
    pub fn arg(self) -> &'static str {
        match self {
            Encapsulation::Never => "never",
            Encapsulation::Always => "always",
            Encapsulation::CrossSubnet => "cross-subnet",
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    /// A directory in the lab's dir, shared by all nodes.
    Dir,
    /// Debian's etcd, run in a lab namespace (host1).
    Etcd,
}

/// The lab's paths and names.
#[derive(Clone, Debug)]
pub struct Place {
    pub dir: PathBuf,
    pub prefix: String,
}

impl Place {
    /// How to call fjord-lab for this lab, for hints: the program as it was called,
    /// with `--dir`/`--prefix` when they are not the defaults.
    pub fn invocation(&self) -> String {
        let program = std::env::args()
            .next()
            .unwrap_or_else(|| "fjord-lab".into());
        let mut call = program;
        if self.dir != std::path::Path::new(DEFAULT_DIR) {
            call.push_str(&format!(" --dir {}", self.dir.display()));
        }
        if self.prefix != DEFAULT_PREFIX {
            call.push_str(&format!(" --prefix {}", self.prefix));
        }
        call
    }

    pub fn state_file(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// The running lab's state, `None` when there is no state file.
    pub fn load(&self) -> Result<Option<LabState>> {
        let path = self.state_file();
        if !path.exists() {
            return Ok(None);
        }
        LabState::load(&path).map(Some).map_err(anyhow::Error::msg)
    }
}

fn main() {
    // `fjord-lab status | head` ends quietly, as other command-line tools do.
    // SAFETY: setting a signal's disposition to the default before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let place = Place {
        dir: cli.dir.clone(),
        prefix: cli.prefix.clone(),
    };
    let outcome = (|| -> Result<i32> {
        if !nix::unistd::geteuid().is_root() {
            bail!("fjord-lab needs root: it creates network namespaces");
        }
        if place.prefix.is_empty() || place.prefix.contains('/') {
            bail!("--prefix must be a non-empty name without '/'");
        }
        match cli.command {
            Command::Up(args) => up::up(&place, &args),
            Command::Status => show::status(&place),
            Command::Exec { target, command } => show::exec(&place, &target, &command),
            Command::Down => down(&place),
        }
    })();
    up::park_if_tearing_down();
    match outcome {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("fjord-lab: error: {e:#}");
            std::process::exit(1);
        }
    }
}

/// `fjord-lab down`.
fn down(place: &Place) -> Result<i32> {
    let state = match place.load() {
        Ok(state) => state,
        Err(e) => {
            eprintln!("fjord-lab: {e:#}; sweeping by prefix {:?}", place.prefix);
            None
        }
    };
    let builder_stopped = match &state {
        Some(state) => stop_builder(state)?,
        None => false,
    };
    let removed = teardown::teardown(state.as_ref(), &place.prefix, &place.dir);
    let nothing = removed.namespaces == 0 && removed.processes == 0 && removed.dir.is_none();
    if builder_stopped && nothing {
        println!("fjord-lab: the interrupted `up` removed its lab; nothing else was left");
        return Ok(0);
    }
    if state.is_none() && nothing {
        println!(
            "fjord-lab: no lab to tear down (no {}, no {}* namespaces)",
            place.state_file().display(),
            place.prefix
        );
        return Ok(0);
    }
    println!(
        "fjord-lab: removed {} processes, {} namespaces{}",
        removed.processes,
        removed.namespaces,
        removed
            .dir
            .map(|d| format!(", {}", d.display()))
            .unwrap_or_default()
    );
    if removed.problems.is_empty() {
        Ok(0)
    } else {
        for p in &removed.problems {
            eprintln!("fjord-lab: could not remove: {p}");
        }
        Ok(1)
    }
}

/// An `up` still building the lab is asked to stop (SIGTERM: it tears down what it
/// built) before `down` sweeps, so the two do not race.
/// Returns whether there was one.
fn stop_builder(state: &LabState) -> Result<bool> {
    let pid = state.builder_pid;
    if pid == std::process::id()
        || !teardown::alive(pid)
        || fjord_conformance::lab::process_start_time(pid) != Some(state.builder_start_time)
    {
        return Ok(false);
    }
    eprintln!("fjord-lab: `fjord-lab up` (pid {pid}) is still running; stopping it first");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .with_context(|| format!("signal fjord-lab up (pid {pid})"))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while teardown::alive(pid) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Ok(true)
}
