//! Fjord's conformance harness: throwaway network namespaces, CNI plugin invocations made
//! exactly as a runtime makes them, and readers of kernel and IPAM-store state to assert on.
//!
//! Every namespace, interface and directory a test makes here carries a unique `fjt` name
//! (see [`names`]) and is removed when its guard drops, also when the test panics.
//! Plugins never run in the root namespace: a [`PluginCall`] enters a node [`Netns`]
//! before it executes the plugin.

pub mod bfd_bench;
pub mod bfd_detection;
pub mod bfd_link;
pub mod bfd_peers;
pub mod bins;
pub mod etcd;
pub mod fake_apiserver;
pub mod kernel;
pub mod lab;
pub mod labstate;
pub mod names;
pub mod netns;
pub mod peers;
pub mod plugin;
pub mod podman;
pub mod reach;
pub mod store;
pub mod tempdir;

pub use bins::{fjord_bin, fjord_bin_dir, reference_plugin, reference_plugin_dir};
pub use kernel::{poll_until, Addr, Link, Neighbour, Route};
pub use names::{host_veth_name, unique_container_id, unique_ifname, unique_name};
pub use netns::Netns;
pub use plugin::{
    result_ips, result_ipv4, result_ipv6, with_prev_result, CallOutcome, FjordOptions, Flavor,
    PluginCall, PluginUnderTest, Pod, RunningCall,
};
pub use store::StoreAllocation;
pub use tempdir::TempDir;
