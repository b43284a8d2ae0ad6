//! Unique names for everything a test creates, and the names the fjord plugin derives.
//!
//! A test's names are `fjt` + the test process's pid + a role + a counter, so parallel
//! tests (and parallel test binaries) never collide, and anything a killed test leaves
//! behind is recognisable as test debris by its `fjt` prefix.

use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU32, Ordering};

/// The kernel's interface name limit (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn next() -> u32 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// `fjt<pid><role><n>`: a name no other test of any process uses (namespaces, files).
pub fn unique_name(role: &str) -> String {
    format!("fjt{}{}{}", std::process::id(), role, next())
}

/// As [`unique_name`], for interfaces: panics if the name would exceed 15 characters,
/// so keep `role` to a letter or two.
pub fn unique_ifname(role: &str) -> String {
    let name = unique_name(role);
    assert!(
        name.len() <= IFNAME_MAX,
        "interface name {name:?} is longer than {IFNAME_MAX} characters; use a shorter role"
    );
    name
}

/// A container ID as runtimes make them (hex-ish, unique), prefixed so debris is findable.
pub fn unique_container_id() -> String {
    let n = next();
    let mut h = Sha256::new();
    h.update(format!("{}-{n}", std::process::id()).as_bytes());
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("fjt{}-{n}-{}", std::process::id(), &hex[..32])
}

/// The fjord plugin's host-end veth name: `fj` + the first 11 hex characters of
/// sha256(containerID + ifname) (ARCHITECTURE.md, "The pod datapath").
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    let mut h = Sha256::new();
    h.update(container_id.as_bytes());
    h.update(ifname.as_bytes());
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("fj{}", &hex[..11])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_veth_name_is_fj_plus_eleven_hex_characters() {
        let name = host_veth_name("abc", "eth0");
        assert_eq!(name.len(), 13);
        assert!(name.starts_with("fj"));
        // sha256("abceth0") starts with these 11 characters (computed with sha256sum).
        assert_eq!(name, format!("fj{}", &EXPECTED_ABC_ETH0[..11]));
    }

    const EXPECTED_ABC_ETH0: &str =
        "a06d7003e199c63c53f1dc2955ae55ab64731fa3ac31f5e4c39f1ef8ba27ee02";

    #[test]
    fn unique_ifnames_fit_the_kernel_limit_and_differ() {
        let a = unique_ifname("b");
        let b = unique_ifname("b");
        assert_ne!(a, b);
        assert!(a.len() <= IFNAME_MAX);
    }
}
