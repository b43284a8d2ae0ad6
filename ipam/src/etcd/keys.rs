//! The etcd key layout. Claims are kept apart from block records so a snapshot reads
//! every claim (small values: a node name) but only the deciding node's block records.
//!
//! ```text
//! /fjord/claims/<network>_<prefix>         -> node name     (one per claimed block)
//! /fjord/blocks/<node>/<network>_<prefix>  -> block JSON    (allocations, handles)
//! /fjord/nodes/<node>                      -> node record JSON (the registry)
//! /fjord/status                            -> written by STATUS to prove quorum
//! ```
//!
//! Node names cannot hold `/` (config checks them), so `<node>/` ends a node's prefix.

use crate::allocator::Claim;
use ipnetwork::IpNetwork;

pub const CLAIMS: &str = "/fjord/claims/";
pub const BLOCKS: &str = "/fjord/blocks/";
pub const NODES: &str = "/fjord/nodes/";
pub const STATUS: &str = "/fjord/status";

/// `10.244.0.64_26`: the block as a key segment (no `/`).
fn segment(cidr: &IpNetwork) -> String {
    format!("{}_{}", cidr.network(), cidr.prefix())
}

fn parse_segment(segment: &str) -> Option<IpNetwork> {
    let (ip, prefix) = segment.split_once('_')?;
    let block = IpNetwork::new(ip.parse().ok()?, prefix.parse().ok()?).ok()?;
    crate::pool::is_aligned(block).then_some(block)
}

pub fn claim_key(cidr: &IpNetwork) -> String {
    format!("{CLAIMS}{}", segment(cidr))
}

pub fn node_blocks_prefix(node: &str) -> String {
    format!("{BLOCKS}{node}/")
}

pub fn block_key(node: &str, cidr: &IpNetwork) -> String {
    format!("{}{}", node_blocks_prefix(node), segment(cidr))
}

pub fn node_key(name: &str) -> String {
    format!("{NODES}{name}")
}

/// A claim from its key and value (the node name); `None` if either is malformed.
pub fn parse_claim(key: &[u8], value: &[u8]) -> Option<Claim> {
    let key = std::str::from_utf8(key).ok()?;
    let block = parse_segment(key.strip_prefix(CLAIMS)?)?;
    let node = std::str::from_utf8(value).ok()?;
    (!node.is_empty() && !node.contains('/')).then(|| Claim {
        block,
        node: node.to_string(),
    })
}

/// The block a block record's key names, if the key is under `node`'s prefix.
pub fn parse_block_key(node: &str, key: &[u8]) -> Option<IpNetwork> {
    let key = std::str::from_utf8(key).ok()?;
    parse_segment(key.strip_prefix(&node_blocks_prefix(node))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_block_and_node_both_ways() {
        for cidr in ["10.244.0.64/26", "fd00:244::40/122"] {
            let cidr: IpNetwork = cidr.parse().unwrap();
            let claim = parse_claim(claim_key(&cidr).as_bytes(), b"node-1").unwrap();
            assert_eq!((claim.block, claim.node.as_str()), (cidr, "node-1"));
            assert_eq!(
                parse_block_key("node-1", block_key("node-1", &cidr).as_bytes()),
                Some(cidr)
            );
        }
        let cidr: IpNetwork = "10.0.0.0/26".parse().unwrap();
        assert_eq!(claim_key(&cidr), "/fjord/claims/10.0.0.0_26");
        assert_eq!(block_key("n", &cidr), "/fjord/blocks/n/10.0.0.0_26");
        assert_eq!(node_key("n"), "/fjord/nodes/n");
    }

    #[test]
    fn malformed_keys_and_values_are_refused() {
        assert_eq!(
            parse_claim(b"/fjord/claims/10.0.0.1_26", b"n"),
            None,
            "host bits"
        );
        assert_eq!(parse_claim(b"/fjord/claims/10.0.0.0-26", b"n"), None);
        assert_eq!(parse_claim(b"/fjord/claims/10.0.0.0_26", b""), None);
        assert_eq!(parse_claim(b"/fjord/claims/10.0.0.0_26", b"a/b"), None);
        assert_eq!(parse_claim(b"/fjord/other/10.0.0.0_26", b"n"), None);
        assert_eq!(parse_block_key("n", b"/fjord/blocks/m/10.0.0.0_26"), None);
        assert_eq!(parse_block_key("n", b"/fjord/blocks/n/garbage"), None);
        // One node's prefix is not a prefix of another's: "n/" vs "n2/".
        assert!(
            !block_key("n2", &"10.0.0.0/26".parse().unwrap()).starts_with(&node_blocks_prefix("n"))
        );
    }
}
