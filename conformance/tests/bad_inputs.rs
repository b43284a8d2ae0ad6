//! Bad inputs to the fjord plugin, one test each: the exact CNI error code, a message that
//! names the problem, and nothing left behind (node links, node routes, pod interfaces
//! and the IPAM store are exactly as they were before the bad call).
//!
//! Each case is `name: code, "substring of msg or details", |put, pod| -> (call, keep)`:
//! the closure sets the scene (it may ADD other pods first; `keep` holds whatever must
//! stay alive) and returns the bad call. The state is captured after the closure, so a
//! failed call that tears down an earlier, valid attachment fails the test too.

mod common;

use fjord_conformance::plugin::{result_ipv4, with_prev_result, FjordOptions};
use fjord_conformance::{PluginCall, PluginUnderTest, Pod, StoreAllocation};
use serde_json::{json, Value};
use std::any::Any;

/// What a bad call must not change.
#[derive(Debug, PartialEq)]
struct Footprint {
    node_links: Vec<(String, String, u32)>,
    node_routes: Vec<String>,
    pod_links: Vec<(String, Vec<String>)>,
    allocations: Vec<StoreAllocation>,
}

fn footprint(put: &PluginUnderTest, pod: &Pod) -> Footprint {
    let pod_links = if pod.netns.exists() {
        pod.netns
            .links()
            .into_iter()
            .map(|l| {
                let addrs = pod
                    .netns
                    .global_addresses(&l.name)
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                (l.name, addrs)
            })
            .collect()
    } else {
        Vec::new()
    };
    Footprint {
        node_links: put
            .node()
            .links()
            .into_iter()
            .map(|l| (l.name, l.mac, l.mtu))
            .collect(),
        node_routes: common::node_routes_besides_lo(put),
        pod_links,
        allocations: put.allocations(),
    }
}

/// Runs one case: scene, footprint, bad call, expected error, same footprint.
fn run_case(
    put: &PluginUnderTest,
    pod: &Pod,
    code: u64,
    needle: &str,
    scene: impl FnOnce(&PluginUnderTest, &Pod) -> (PluginCall, Box<dyn Any>),
) {
    let (call, _keep) = scene(put, pod);
    let before = footprint(put, pod);
    let out = call.run_in(put.node());
    out.expect_error_mentioning(code, needle);
    let after = footprint(put, pod);
    assert_eq!(
        after, before,
        "the failed call changed the node, pod or store"
    );
}

/// A plain ADD of `pod` in 1.0.0.
fn add(put: &PluginUnderTest, pod: &Pod) -> PluginCall {
    put.call("ADD", pod, &put.config("1.0.0"))
}

/// An ADD with `edit` applied to the 1.0.0 config.
fn add_with(put: &PluginUnderTest, pod: &Pod, edit: impl FnOnce(&mut Value)) -> PluginCall {
    let mut conf = put.config("1.0.0");
    edit(&mut conf);
    put.call("ADD", pod, &conf)
}

fn nothing() -> Box<dyn Any> {
    Box::new(())
}

/// Hands the plugin a config whose IPAM store is `dir:<regular file>/ipam`.
fn store_under_a_regular_file(put: &PluginUnderTest, pod: &Pod) -> (PluginCall, Box<dyn Any>) {
    let file = put.temp_dir().join("not-a-directory");
    std::fs::write(&file, b"x").unwrap();
    let store = format!("dir:{}/ipam", file.display());
    (
        add_with(put, pod, |c| c["ipam"]["store"] = json!(store)),
        nothing(),
    )
}

/// ADDs pods until the tiny pool refuses one; the bad call is one more ADD.
fn exhausted_pool(put: &PluginUnderTest, pod: &Pod) -> (PluginCall, Box<dyn Any>) {
    let mut held = Vec::new();
    loop {
        let other = Pod::new();
        let out = put.add(&other, "1.0.0");
        if !out.succeeded() {
            out.expect_error(100);
            break;
        }
        held.push(other);
        assert!(
            held.len() <= 16,
            "a /28 pool handed out more than 16 addresses"
        );
    }
    assert!(!held.is_empty(), "the tiny pool gave no address at all");
    (add(put, pod), Box::new(held))
}

macro_rules! bad_inputs {
    ($($name:ident: $code:expr, $needle:expr, |$put:ident, $pod:ident| $scene:expr;)*) => {
        $(
            #[test]
            fn $name() {
                let put = PluginUnderTest::fjord();
                let pod = Pod::new();
                let ($put, $pod) = (&put, &pod);
                let needle = $needle.to_string();
                run_case($put, $pod, $code, &needle, |$put, $pod| $scene);
            }
        )*
    };
}

bad_inputs! {
    malformed_json_is_a_decode_failure: 6, "json",
        |put, pod| (add(put, pod).with_raw_stdin(b"{\"cniVersion\": \"1.0.0\", \"name\": "), nothing());
    empty_stdin_is_a_decode_failure: 6, "json",
        |put, pod| (add(put, pod).with_raw_stdin(b""), nothing());
    missing_cni_command_is_invalid_environment: 4, "CNI_COMMAND",
        |put, pod| (PluginCall { command: None, ..add(put, pod) }, nothing());
    missing_cni_containerid_is_invalid_environment: 4, "CNI_CONTAINERID",
        |put, pod| (PluginCall { container_id: None, ..add(put, pod) }, nothing());
    missing_cni_netns_is_invalid_environment: 4, "CNI_NETNS",
        |put, pod| (PluginCall { netns: None, ..add(put, pod) }, nothing());
    missing_cni_ifname_is_invalid_environment: 4, "CNI_IFNAME",
        |put, pod| (PluginCall { ifname: None, ..add(put, pod) }, nothing());
    ifname_over_15_characters_is_invalid_environment: 4, "eth0123456789abc",
        |put, pod| (PluginCall { ifname: Some("eth0123456789abc".into()), ..add(put, pod) }, nothing());
    ifname_with_a_slash_is_invalid_environment: 4, "eth/0",
        |put, pod| (PluginCall { ifname: Some("eth/0".into()), ..add(put, pod) }, nothing());
    unknown_cni_command_is_invalid_environment: 4, "FROB",
        |put, pod| (PluginCall { command: Some("FROB".into()), ..add(put, pod) }, nothing());
    malformed_cni_args_is_invalid_environment: 4, "CNI_ARGS",
        |put, pod| (add(put, pod).with_cni_args("K8S_POD_NAME"), nothing());
    netns_path_that_does_not_exist_is_an_unknown_container: 3, "/var/run/netns/fjt-no-such-netns",
        |put, pod| (PluginCall { netns: Some("/var/run/netns/fjt-no-such-netns".into()), ..add(put, pod) }, nothing());
    unsupported_cni_version_is_incompatible: 1, "9.9.9",
        |put, pod| (add_with(put, pod, |c| c["cniVersion"] = json!("9.9.9")), nothing());
    check_in_0_3_1_is_not_allowed: 1, "CHECK",
        |put, pod| {
            let result = put.add(pod, "0.3.1").expect_ok();
            (put.call("CHECK", pod, &with_prev_result(put.config("0.3.1"), &result)), nothing())
        };
    gc_in_1_0_0_is_not_allowed: 1, "GC",
        |put, pod| {
            let mut conf = put.config("1.0.0");
            conf["cni.dev/valid-attachments"] = json!([]);
            (PluginCall { container_id: None, netns: None, ifname: None, ..put.call("GC", pod, &conf) }, nothing())
        };
    status_in_1_0_0_is_not_allowed: 1, "STATUS",
        |put, pod| (PluginCall { container_id: None, netns: None, ifname: None, ..put.call("STATUS", pod, &put.config("1.0.0")) }, nothing());
    missing_ipam_is_invalid_config: 7, "ipam",
        |put, pod| (add_with(put, pod, |c| { c.as_object_mut().unwrap().remove("ipam"); }), nothing());
    unknown_ipam_type_is_invalid_config: 7, "fjt-no-such-ipam",
        |put, pod| (add_with(put, pod, |c| c["ipam"]["type"] = json!("fjt-no-such-ipam")), nothing());
    invalid_pool_cidr_is_invalid_config: 7, "10.244.0.0/33",
        |put, pod| (add_with(put, pod, |c| c["ipam"]["pools"] = json!(["10.244.0.0/33"])), nothing());
    pool_that_is_not_a_cidr_is_invalid_config: 7, "ten-dot-something",
        |put, pod| (add_with(put, pod, |c| c["ipam"]["pools"] = json!(["ten-dot-something"])), nothing());
    empty_pool_list_is_invalid_config: 7, "pools",
        |put, pod| (add_with(put, pod, |c| c["ipam"]["pools"] = json!([])), nothing());
    missing_network_name_is_invalid_config: 7, "name",
        |put, pod| (add_with(put, pod, |c| { c.as_object_mut().unwrap().remove("name"); }), nothing());
    mtu_of_100_is_invalid_config: 7, "mtu",
        |put, pod| (add_with(put, pod, |c| c["mtu"] = json!(100)), nothing());
    mtu_of_70000_is_invalid_config: 7, "mtu",
        |put, pod| (add_with(put, pod, |c| c["mtu"] = json!(70000)), nothing());
    mtu_as_a_string_is_invalid_config: 7, "mtu",
        |put, pod| (add_with(put, pod, |c| c["mtu"] = json!("1500")), nothing());
    store_path_under_a_regular_file_is_an_io_failure: 5, "not-a-directory",
        |put, pod| store_under_a_regular_file(put, pod);
    same_container_added_twice_keeps_the_first_attachment: 102, pod.container_id,
        |put, pod| {
            put.add_ok(pod);
            (add(put, pod), nothing())
        };
    check_without_a_prior_add_is_an_unknown_container: 3, pod.container_id,
        |put, pod| {
            let prev = json!({
                "cniVersion": "1.0.0",
                "interfaces": [{"name": "eth0", "sandbox": pod.netns_path()}],
                "ips": [{"address": "10.244.0.5/32", "gateway": "169.254.1.1", "interface": 0}],
            });
            (put.call("CHECK", pod, &with_prev_result(put.config("1.0.0"), &prev)), nothing())
        };
    check_with_a_prev_result_address_the_kernel_lacks_is_a_mismatch: 101, "10.244.255.254",
        |put, pod| {
            let mut result = put.add_ok(pod);
            assert_ne!(result_ipv4(&result).ip().to_string(), "10.244.255.254");
            result["ips"][0]["address"] = json!("10.244.255.254/32");
            (put.call("CHECK", pod, &with_prev_result(put.config("1.0.0"), &result)), nothing())
        };
    check_after_the_pod_address_was_removed_is_a_mismatch: 101, "eth0",
        |put, pod| {
            let result = put.add_ok(pod);
            let addr = result_ipv4(&result).to_string();
            pod.netns.ip(&["addr", "del", &addr, "dev", "eth0"]);
            (put.call("CHECK", pod, &with_prev_result(put.config("1.0.0"), &result)), nothing())
        };
    check_after_the_host_end_vanished_is_a_mismatch: 101, "fj",
        |put, pod| {
            let result = put.add_ok(pod);
            pod.netns.ip(&["link", "del", "eth0"]);
            (put.call("CHECK", pod, &with_prev_result(put.config("1.0.0"), &result)), nothing())
        };
}

/// The pool is a /28 cut into one /28 block: after it is full, ADD fails with 100
/// and takes nothing.
#[test]
fn exhausted_pool_is_code_100() {
    let put = PluginUnderTest::fjord_with(FjordOptions {
        pools: vec!["10.244.7.0/28".into()],
        block_size: Some(28),
        ..FjordOptions::default()
    });
    let pod = Pod::new();
    run_case(&put, &pod, 100, "10.244.7.0/28", exhausted_pool);
}
