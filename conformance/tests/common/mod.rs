//! Helpers shared by the conformance test files.
#![allow(dead_code)]

use fjord_conformance::{poll_until, PluginUnderTest};
use std::time::Duration;

/// How long a DEL may take to make the veth pair vanish (fjord destroys it asynchronously).
pub const PAIR_GONE_WITHIN: Duration = Duration::from_secs(3);

/// Generates `mod fjord { #[test] fn NAME() }` and `mod reference { ... }` for each
/// `fn NAME(put: PluginUnderTest)` listed, so `cargo test -- reference` runs one plugin.
#[macro_export]
macro_rules! for_both_plugins {
    ($($name:ident),* $(,)?) => {
        mod fjord {
            $(
                #[test]
                fn $name() {
                    super::$name(fjord_conformance::PluginUnderTest::fjord());
                }
            )*
        }
        mod reference {
            $(
                #[test]
                fn $name() {
                    super::$name(fjord_conformance::PluginUnderTest::reference());
                }
            )*
        }
    };
}

/// Names of the node's links other than `lo`.
pub fn node_links_besides_lo(put: &PluginUnderTest) -> Vec<String> {
    put.node()
        .links()
        .into_iter()
        .map(|l| l.name)
        .filter(|n| n != "lo")
        .collect()
}

/// Routes of the node other than those of `lo` (IPv6 keeps `::1 dev lo` there).
pub fn node_routes_besides_lo(put: &PluginUnderTest) -> Vec<String> {
    put.node()
        .routes()
        .into_iter()
        .filter(|r| r.dev.as_deref() != Some("lo"))
        .map(|r| format!("{} dev {:?} via {:?}", r.dst, r.dev, r.gateway))
        .collect()
}

/// Asserts the node holds nothing of any pod: no links but `lo` (polled for
/// [`PAIR_GONE_WITHIN`]), no routes, and no allocation in the IPAM store.
pub fn assert_node_clean(put: &PluginUnderTest) {
    poll_until(PAIR_GONE_WITHIN, "the node has no links but lo", || {
        node_links_besides_lo(put).is_empty()
    });
    assert_eq!(
        node_routes_besides_lo(put),
        Vec::<String>::new(),
        "routes left on the node"
    );
    assert_eq!(put.allocations(), vec![], "allocations left in the store");
}
