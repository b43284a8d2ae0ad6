//! The state file of a persistent lab (`fjord-lab`): everything it made, written down
//! BEFORE each thing is made, so `fjord-lab down` can remove all of it after a crash,
//! a Ctrl-C or a SIGKILL of `fjord-lab up`.
//!
//! The file is rewritten whole (write to a temp file, fsync, rename) on every record,
//! under one lock; that lock is also what makes an interrupted `up` safe to tear down:
//! the signal handler takes it and never gives it back ([`Journal::freeze`]), so the
//! step in progress finishes creating its thing (already recorded) and no later step
//! starts.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// The file name of the state file inside the lab's directory.
pub const STATE_FILE: &str = "state.json";

/// What `fjord-lab up` was asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabRequest {
    pub nodes: usize,
    pub pods_per_node: usize,
    pub subnets: usize,
    pub encapsulation: String,
    /// `dir` or `etcd`.
    pub store: String,
}

/// Where a lab is in its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// `up` is building it (or died while building it).
    #[default]
    Building,
    /// `up` finished building it (the reachability check may still have failed).
    Up,
}

/// A process the lab started (a daemon that outlives `up`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    /// `fjord-routed node1`, `etcd`.
    pub role: String,
    /// The namespace it runs in.
    pub netns: String,
    pub pid: u32,
    /// Field 22 of `/proc/PID/stat` at start: tells the process from a later one that
    /// reuses its pid.
    pub start_time: u64,
}

/// A lab node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: String,
    pub netns: String,
    pub subnet: usize,
    pub address_v4: IpAddr,
    pub address_v6: IpAddr,
    /// `fjord-routed status --socket` of the node's daemon.
    pub socket: PathBuf,
    pub log: PathBuf,
}

/// A pod attached by the `fjord` plugin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRecord {
    /// `node1-pod1`.
    pub name: String,
    /// Index of its node in [`LabState::nodes`].
    pub node: usize,
    pub netns: String,
    pub container_id: String,
    pub ipv4: Option<IpAddr>,
    pub ipv6: Option<IpAddr>,
}

/// Everything a persistent lab made, in the order it made it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabState {
    /// Every name the lab gives a namespace starts with it (`fjl-`).
    pub prefix: String,
    /// The lab's directory (this file, the store, sockets, logs).
    pub dir: PathBuf,
    /// The pid of the `fjord-lab up` that built it.
    pub builder_pid: u32,
    /// Its start time (see [`ProcessRecord::start_time`]).
    pub builder_start_time: u64,
    pub phase: Phase,
    pub request: LabRequest,
    /// Network namespaces, recorded before each was created (so one may be missing).
    pub namespaces: Vec<String>,
    pub processes: Vec<ProcessRecord>,
    pub nodes: Vec<NodeRecord>,
    pub pods: Vec<PodRecord>,
    /// The store every node's daemon and plugin use (`dir:PATH`, `etcd:URL`).
    pub store: String,
}

impl LabState {
    pub fn pod(&self, name: &str) -> Option<&PodRecord> {
        self.pods.iter().find(|p| p.name == name)
    }

    /// Reads a state file.
    pub fn load(path: &Path) -> Result<LabState, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| {
            format!(
                "{} is not a fjord-lab state file ({e}); remove it by hand if nothing of \
                 the lab is left",
                path.display()
            )
        })
    }
}

/// The state file of a lab that is being built, and the lock every record takes.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    state: Mutex<LabState>,
}

/// Held while the recorded thing is created; see the module documentation.
type JournalGuard<'a> = MutexGuard<'a, LabState>;

impl Journal {
    /// Creates the state file; fails when one exists already (a lab is up, or was not
    /// torn down), so two `up`s cannot both build over the same names.
    pub fn create(path: &Path, state: LabState) -> std::io::Result<Journal> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)?;
        file.write_all(&serde_json::to_vec_pretty(&state).expect("state serializes"))?;
        file.sync_all()?;
        Ok(Journal {
            path: path.to_path_buf(),
            state: Mutex::new(state),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Applies `change` and writes the file.
    pub fn record(&self, change: impl FnOnce(&mut LabState)) {
        let mut state = self.lock();
        change(&mut state);
        self.write(&state);
    }

    /// Records `before`, runs `create` under the lock (so a teardown that freezes the
    /// journal waits for it), then records `after` with what `create` returned.
    pub fn around<T>(
        &self,
        before: impl FnOnce(&mut LabState),
        create: impl FnOnce() -> T,
        after: impl FnOnce(&mut LabState, &T),
    ) -> T {
        let mut state = self.lock();
        before(&mut state);
        self.write(&state);
        let made = create();
        after(&mut state, &made);
        self.write(&state);
        made
    }

    fn lock(&self) -> JournalGuard<'_> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self, state: &LabState) {
        if let Err(e) = write_atomically(&self.path, state) {
            panic!("write the lab's state file {}: {e}", self.path.display());
        }
    }

    /// A copy of the state as recorded so far.
    pub fn snapshot(&self) -> LabState {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Takes the lock for good: no record (and so no creation) happens after this
    /// returns. Returns the state as it stands.
    pub fn freeze(&self) -> LabState {
        let guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let state = guard.clone();
        std::mem::forget(guard);
        state
    }
}

/// Write to `PATH.tmp`, fsync, rename over `PATH`: a reader sees the old or the new
/// state, never half of one.
fn write_atomically(path: &Path, state: &LabState) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&serde_json::to_vec_pretty(state).expect("state serializes"))?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> PathBuf {
        let dir = crate::tempdir::TempDir::new("st");
        let path = dir.join(name);
        std::mem::forget(dir); // removed below
        path
    }

    #[test]
    fn a_second_journal_on_the_same_file_is_refused_and_records_are_on_disk() {
        let path = temp_path(STATE_FILE);
        let journal = Journal::create(
            &path,
            LabState {
                prefix: "fjl-".into(),
                ..LabState::default()
            },
        )
        .unwrap();
        journal.record(|s| s.namespaces.push("fjl-underlay".into()));
        let err = Journal::create(&path, LabState::default()).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
        let on_disk = LabState::load(&path).unwrap();
        assert_eq!(on_disk.namespaces, vec!["fjl-underlay".to_string()]);
        assert_eq!(on_disk, journal.snapshot());
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_frozen_journal_takes_no_more_records() {
        let path = temp_path(STATE_FILE);
        let journal = std::sync::Arc::new(Journal::create(&path, LabState::default()).unwrap());
        let frozen = journal.freeze();
        assert!(frozen.namespaces.is_empty());
        let j = journal.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            j.record(|s| s.namespaces.push("late".into()));
            let _ = tx.send(());
        });
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(300))
            .is_err());
        assert!(LabState::load(&path).unwrap().namespaces.is_empty());
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_file_that_is_not_a_state_file_is_reported() {
        let path = temp_path("junk.json");
        std::fs::write(&path, "{not json").unwrap();
        let err = LabState::load(&path).unwrap_err();
        assert!(err.contains("not a fjord-lab state file"), "{err}");
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}
