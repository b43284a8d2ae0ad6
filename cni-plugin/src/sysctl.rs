//! /proc/sys writes. /proc/sys/net resolves to the opening thread's network namespace.

use std::fs;
use std::io;

fn path(key: &str) -> String {
    format!("/proc/sys/{}", key.replace('.', "/"))
}

/// Writes `value` unless the key already holds it (writing `forwarding` resets
/// per-interface settings in the kernel, so an idempotent write matters).
pub fn ensure(key: &str, value: &str) -> io::Result<()> {
    let p = path(key);
    if fs::read_to_string(&p).is_ok_and(|cur| cur.trim() == value) {
        return Ok(());
    }
    fs::write(&p, value)
}

/// Sets a per-interface key such as `net/ipv4/conf/IF/proxy_arp` (interface names can
/// contain dots, so these are given with slashes).
pub fn set_interface_key(family: &str, ifname: &str, key: &str, value: &str) -> io::Result<()> {
    fs::write(format!("/proc/sys/net/{family}/conf/{ifname}/{key}"), value)
}
