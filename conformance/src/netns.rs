//! A named network namespace (`/var/run/netns/NAME`, as runtimes make them), deleted on drop.

use crate::names::{unique_ifname, unique_name};
use serde_json::Value;
use std::ffi::OsStr;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Output};

/// Where `ip netns add` puts namespaces, and where runtimes point `CNI_NETNS`.
pub const NETNS_DIR: &str = "/var/run/netns";

#[derive(Debug)]
pub struct Netns {
    name: String,
    deleted: bool,
}

/// Runs `ip ARGS`, panicking with its stderr when it fails.
pub fn ip(args: &[&str]) -> Output {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run ip {args:?}: {e}"));
    assert!(
        out.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The pid in a harness name `fjt<pid><role><n>`, if `name` is one.
fn debris_pid(name: &str) -> Option<u32> {
    let digits: String = name
        .strip_prefix("fjt")?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Removes namespaces and temp dirs left by test processes that no longer run (a test
/// binary killed by a timeout cannot run its guards' drops). Names of live processes are
/// left alone, so parallel test binaries do not disturb each other.
pub fn sweep_debris() {
    let dead = |name: &str| {
        debris_pid(name).is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
    };
    for entry in std::fs::read_dir(NETNS_DIR).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if dead(&name) {
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
        }
    }
    for entry in std::fs::read_dir(std::env::temp_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if dead(&name) && entry.path().is_dir() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

static SWEEP: std::sync::Once = std::sync::Once::new();

impl Netns {
    /// Creates `fjt<pid><role><n>` with `ip netns add` and brings its `lo` up. The first
    /// call in a process sweeps debris of dead test processes ([`sweep_debris`]).
    pub fn new(role: &str) -> Netns {
        SWEEP.call_once(sweep_debris);
        let name = unique_name(role);
        ip(&["netns", "add", &name]);
        let ns = Netns {
            name,
            deleted: false,
        };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Creates a namespace with exactly this name (a persistent lab's, e.g. `fjl-node1`)
    /// and brings its `lo` up. Deleted on drop unless [`Netns::keep`] is called.
    pub fn create_named(name: &str) -> Netns {
        ip(&["netns", "add", name]);
        let ns = Netns {
            name: name.to_string(),
            deleted: false,
        };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// A handle on a namespace that already exists; never deleted on drop.
    pub fn existing(name: &str) -> Netns {
        Netns {
            name: name.to_string(),
            deleted: true,
        }
    }

    /// Leaves the namespace in place when this handle drops (a persistent lab outlives
    /// the process that built it; `fjord-lab down` removes it).
    pub fn keep(mut self) -> Netns {
        self.deleted = true;
        self
    }

    /// `/var/run/netns/NAME`, what a runtime passes as `CNI_NETNS`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(NETNS_DIR).join(&self.name)
    }

    /// `path()` as a string, for environment variables and JSON.
    pub fn path_str(&self) -> String {
        self.path().to_string_lossy().into_owned()
    }

    /// Runs `ip -n NAME ARGS`, panicking when it fails.
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// Runs `ip -n NAME ARGS` and returns whether it succeeded (for things that may fail).
    pub fn try_ip(&self, args: &[&str]) -> bool {
        Command::new("ip")
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// Runs `ip -n NAME -j ARGS` and parses its JSON (an empty output is `[]`).
    pub fn ip_json(&self, args: &[&str]) -> Value {
        let mut full = vec!["-n", self.name.as_str(), "-j"];
        full.extend_from_slice(args);
        let out = ip(&full);
        let text = String::from_utf8_lossy(&out.stdout);
        if text.trim().is_empty() {
            return Value::Array(vec![]);
        }
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("ip {} gave unparsable JSON ({e}): {text}", full.join(" ")))
    }

    /// Runs a command inside the namespace (`ip netns exec NAME CMD ARGS`); does not
    /// check its exit status.
    pub fn run<S: AsRef<OsStr>>(&self, cmd: &str, args: &[S]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, cmd])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {cmd} in {}: {e}", self.name))
    }

    /// Reads a sysctl as the namespace sees it, e.g. `net.ipv4.ip_forward`; the value
    /// trimmed. Panics if the key does not exist there.
    pub fn sysctl(&self, key: &str) -> String {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        let out = self.run("cat", &[&path]);
        assert!(
            out.status.success(),
            "sysctl {key} in {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Like [`Netns::sysctl`] for a per-interface key whose interface name may contain
    /// dots: `sysctl_conf("ipv4", "fj0123456789a", "proxy_arp")`.
    pub fn sysctl_conf(&self, family: &str, ifname: &str, key: &str) -> String {
        let path = format!("/proc/sys/net/{family}/conf/{ifname}/{key}");
        let out = self.run("cat", &[&path]);
        assert!(
            out.status.success(),
            "read {path} in {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Pings `addr` from inside this namespace: `count` echoes, each waiting up to 2 s.
    /// Returns whether all were answered.
    pub fn ping(&self, addr: IpAddr, count: u32) -> bool {
        let count = count.to_string();
        let target = addr.to_string();
        let out = self.run(
            "ping",
            &["-n", "-q", "-c", &count, "-i", "0.2", "-W", "2", &target],
        );
        out.status.success()
    }

    /// Gives this (node) namespace an address of its own on a port-less bridge, as a
    /// stand-in for the node's underlay address (dummy devices do not exist on these
    /// kernels). Returns the bridge's name; it dies with the namespace.
    pub fn add_stand_in_address(&self, addr: IpAddr) -> String {
        let bridge = unique_ifname("b");
        self.ip(&["link", "add", &bridge, "type", "bridge"]);
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        let cidr = format!("{addr}/{prefix}");
        let mut args = vec!["addr", "add", cidr.as_str(), "dev", bridge.as_str()];
        if addr.is_ipv6() {
            args.push("nodad");
        }
        self.ip(&args);
        self.ip(&["link", "set", &bridge, "up"]);
        bridge
    }

    /// Deletes the namespace now (e.g. to test DEL after the runtime removed it).
    pub fn delete(mut self) {
        self.deleted = true;
        ip(&["netns", "del", &self.name]);
    }

    /// Whether `/var/run/netns/NAME` still exists.
    pub fn exists(&self) -> bool {
        self.path().exists()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.deleted {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.name])
                .output();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debris_pid_reads_the_pid_of_harness_names_only() {
        assert_eq!(debris_pid("fjt4242n17"), Some(4242));
        assert_eq!(debris_pid("fjt-no-such-netns"), None);
        assert_eq!(debris_pid("fjm-node"), None);
    }
}
