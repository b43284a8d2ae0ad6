//! Entering a network namespace for the calling thread, and coming back.

use nix::sched::{setns, CloneFlags};
use std::fs::File;
use std::io;
use std::path::Path;

/// An open namespace file; holding it keeps the namespace alive.
pub struct NetnsFile(File);

impl NetnsFile {
    pub fn open(path: &Path) -> io::Result<Self> {
        File::open(path).map(NetnsFile)
    }

    /// The namespace this thread is in now.
    pub fn current() -> io::Result<Self> {
        Self::open(Path::new("/proc/thread-self/ns/net"))
    }

    pub fn file(&self) -> &File {
        &self.0
    }

    /// Runs `f` inside this namespace and always returns the thread to `home`.
    pub fn run_in<T>(&self, home: &NetnsFile, f: impl FnOnce() -> T) -> io::Result<T> {
        setns(&self.0, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        let out = f();
        setns(&home.0, CloneFlags::CLONE_NEWNET).map_err(|e| {
            // A thread stranded in the pod's namespace would configure the wrong node.
            io::Error::other(format!("could not return to the node's namespace: {e}"))
        })?;
        Ok(out)
    }
}
