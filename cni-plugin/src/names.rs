//! Names and MAC addresses derived from the attachment, so DEL and CHECK find what ADD
//! made without any state of their own.

use sha2::{Digest, Sha256};

/// Host-end veth name prefix (ARCHITECTURE.md): `fj` + 11 hex characters = 13 bytes.
pub const HOST_PREFIX: &str = "fj";

fn digest(container_id: &str, ifname: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(container_id.as_bytes());
    h.update(ifname.as_bytes());
    h.finalize().into()
}

/// `fj` + the first 11 hex characters of sha256(containerID + ifname).
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    let d = digest(container_id, ifname);
    let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
    format!("{HOST_PREFIX}{}", &hex[..11])
}

/// MACs for both ends, set at creation so ADD needs no round trip to learn them.
/// Locally administered unicast (first octet 0x0a / 0x0e); every veth is its own L2
/// segment, so a collision between pods would be harmless.
pub fn veth_macs(container_id: &str, ifname: &str) -> ([u8; 6], [u8; 6]) {
    let d = digest(container_id, ifname);
    let host = [0x0e, d[16], d[17], d[18], d[19], d[20]];
    let pod = [0x0a, d[21], d[22], d[23], d[24], d[25]];
    (host, pod)
}

/// The alias written on the host end, so an operator (and GC) can tell which
/// attachment of which network it belongs to.
pub fn host_alias(network: &str, container_id: &str, ifname: &str) -> String {
    format!("fjord:{network}:{container_id}:{ifname}")
}

pub fn format_mac(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_name_is_stable_short_and_prefixed() {
        let a = host_veth_name("abc123", "eth0");
        assert_eq!(a, host_veth_name("abc123", "eth0"));
        assert_eq!(a.len(), 13);
        assert!(a.starts_with("fj"));
        assert!(a[2..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, host_veth_name("abc123", "eth1"));
    }

    #[test]
    fn host_name_matches_the_design_formula() {
        let expected = {
            let d = Sha256::digest(b"c1eth0");
            let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
            format!("fj{}", &hex[..11])
        };
        assert_eq!(host_veth_name("c1", "eth0"), expected);
    }

    #[test]
    fn macs_are_locally_administered_unicast_and_differ() {
        let (h, p) = veth_macs("c1", "eth0");
        for mac in [h, p] {
            assert_eq!(mac[0] & 0x01, 0, "unicast");
            assert_eq!(mac[0] & 0x02, 0x02, "locally administered");
        }
        assert_ne!(h, p);
        assert_eq!(format_mac(&[0x0e, 1, 2, 0xab, 4, 5]), "0e:01:02:ab:04:05");
    }
}
