//! 50 pods attached and detached at once on one node, each by its own plugin process, as
//! a runtime starting a burst of pods does: every pod gets its own address, the store and
//! the kernel agree, and after the DELs nothing is left.

mod common;

use common::assert_node_clean;
use fjord_conformance::plugin::result_ipv4;
use fjord_conformance::{PluginUnderTest, Pod};
use ipnetwork::IpNetwork;
use std::collections::BTreeSet;
use std::net::IpAddr;

const PODS: usize = 50;

fn fifty_concurrent_adds_then_dels_leave_nothing(put: PluginUnderTest) {
    let pods: Vec<Pod> = (0..PODS).map(|_| Pod::new()).collect();
    let conf = put.config("1.0.0");

    let running: Vec<_> = pods
        .iter()
        .map(|pod| put.call("ADD", pod, &conf).spawn_in(put.node()))
        .collect();
    let results: Vec<_> = running.into_iter().map(|r| r.wait().expect_ok()).collect();

    let addresses: Vec<IpNetwork> = results.iter().map(result_ipv4).collect();
    let distinct: BTreeSet<IpAddr> = addresses.iter().map(|a| a.ip()).collect();
    assert_eq!(
        distinct.len(),
        PODS,
        "addresses handed out twice: {addresses:?}"
    );

    let recorded: BTreeSet<(String, IpAddr)> = put
        .allocations()
        .into_iter()
        .map(|a| (a.container_id, a.address))
        .collect();
    let expected: BTreeSet<(String, IpAddr)> = pods
        .iter()
        .zip(&addresses)
        .map(|(pod, addr)| (pod.container_id.clone(), addr.ip()))
        .collect();
    assert_eq!(recorded, expected, "the store disagrees with the results");

    let node_routes = put.node().routes_v4();
    for (pod, addr) in pods.iter().zip(&addresses) {
        assert_eq!(
            pod.netns.global_addresses(&pod.ifname),
            vec![*addr],
            "pod {} lacks its address",
            pod.container_id
        );
        assert!(
            node_routes
                .iter()
                .any(|r| r.dst == IpNetwork::new(addr.ip(), 32).unwrap()),
            "the node has no route to {addr}"
        );
    }

    let running: Vec<_> = pods
        .iter()
        .map(|pod| put.call("DEL", pod, &conf).spawn_in(put.node()))
        .collect();
    for r in running {
        r.wait().expect_ok();
    }
    assert_eq!(
        put.allocations(),
        vec![],
        "allocations left after DEL returned"
    );
    for pod in pods {
        pod.netns.delete();
    }
    assert_node_clean(&put);
}

for_both_plugins!(fifty_concurrent_adds_then_dels_leave_nothing);
