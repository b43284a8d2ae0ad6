//! Destroying a veth pair without making the runtime wait for it.
//!
//! Unregistering a device waits for RCU grace periods (~25 ms here), longer than the
//! rest of DEL together. A detached child does it; the runtime sees DEL return as soon
//! as the routes and the address are gone.

use crate::netlink::Netlink;
use nix::unistd::{fork, setsid, ForkResult};
use std::io;
use std::os::fd::AsRawFd;

/// Deletes link `index` of the current namespace from a detached child process. The
/// index, not the name, is used so that a pair re-created under the same name by a
/// quick re-ADD is never the one deleted.
pub fn delete_link_detached(index: u32) -> io::Result<()> {
    // SAFETY: the plugin is single-threaded, so the child may allocate and make
    // syscalls freely; it leaves through `_exit` and never returns into the parent's
    // code.
    match unsafe { fork() }.map_err(io::Error::from)? {
        ForkResult::Parent { .. } => Ok(()),
        ForkResult::Child => {
            detach_from_caller();
            let status = match Netlink::open().and_then(|mut nl| nl.delete_link(index)) {
                Ok(()) => 0,
                Err(e) if e.raw_os_error() == Some(libc::ENODEV) => 0,
                Err(_) => 1,
            };
            // SAFETY: ends the child without running the parent's atexit handlers or
            // flushing its buffers a second time.
            unsafe { libc::_exit(status) }
        }
    }
}

/// The runtime reads the plugin's stdout until every writer has closed it: the child
/// must let go of stdin/stdout/stderr at once, or DEL would still wait for it.
fn detach_from_caller() {
    let _ = setsid();
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..=2 {
            // SAFETY: dup2 onto the standard descriptors of this child only.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}
