//! The node's underlay as the kernel sees it: which link holds the node address, and
//! its MTU, which becomes the pod MTU the `fjord` plugin reads.

use futures::TryStreamExt;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::LinkAttribute;
use rtnetlink::Handle;
use std::io;
use std::net::IpAddr;
use std::path::Path;

/// The index and MTU of the link holding `address`.
pub async fn link_of(handle: &Handle, address: IpAddr) -> io::Result<Option<(u32, u32)>> {
    let mut addrs = handle.address().get().execute();
    let mut index = None;
    while let Some(msg) = addrs.try_next().await.map_err(io::Error::other)? {
        let holds = msg.attributes.iter().any(|a| {
            matches!(a, AddressAttribute::Local(ip) | AddressAttribute::Address(ip) if *ip == address)
        });
        if holds {
            index = Some(msg.header.index);
            break;
        }
    }
    let Some(index) = index else { return Ok(None) };
    let mut links = handle.link().get().match_index(index).execute();
    while let Some(msg) = links.try_next().await.map_err(io::Error::other)? {
        for attr in &msg.attributes {
            if let LinkAttribute::Mtu(mtu) = attr {
                return Ok(Some((index, *mtu)));
            }
        }
    }
    Ok(None)
}

/// Writes the pod MTU where the plugin reads it, replacing the file atomically so a
/// plugin never reads half a number.
pub fn record_pod_mtu(path: &Path, mtu: u32) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let temp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&temp, format!("{mtu}\n"))?;
    std::fs::rename(&temp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_the_mtu_as_a_plain_number() {
        let dir = std::env::temp_dir().join(format!("fjord-mtu-{}", std::process::id()));
        let path = dir.join("run/mtu");
        record_pod_mtu(&path, 1450).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1450\n");
        record_pod_mtu(&path, 9000).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "9000\n");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
