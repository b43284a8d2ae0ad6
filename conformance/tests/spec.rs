//! CNI specification behaviour, run against both plugins (`fjord::*` and `reference::*`),
//! plus fjord's own datapath contract (ARCHITECTURE.md, "The pod datapath") in `fjord_datapath`.
//!
//! Where the reference plugins (ptp + host-local) depart from the spec, the test says so
//! in its name (`reference_departs_from_spec_*`) and asserts what they actually do.

mod common;

use common::{assert_node_clean, node_links_besides_lo, PAIR_GONE_WITHIN};
use fjord_conformance::plugin::{result_ipv4, with_prev_result, NETWORK_NAME};
use fjord_conformance::{poll_until, PluginUnderTest, Pod};
use ipnetwork::IpNetwork;
use serde_json::{json, Value};
use std::net::IpAddr;

const ALL_VERSIONS: [&str; 3] = ["0.3.1", "0.4.0", "1.0.0"];

fn version_lists_the_versions_runtimes_use(put: PluginUnderTest) {
    let out = put.version("1.0.0").expect_ok();
    let supported: Vec<&str> = out["supportedVersions"]
        .as_array()
        .unwrap_or_else(|| panic!("VERSION gave no supportedVersions: {out}"))
        .iter()
        .map(|v| v.as_str().expect("versions are strings"))
        .collect();
    for v in ALL_VERSIONS {
        assert!(supported.contains(&v), "{v} missing from {supported:?}");
    }
    assert!(
        out["cniVersion"].is_string(),
        "VERSION output has no cniVersion: {out}"
    );
}

/// The interface the result says is in the sandbox, its index, and that entry.
fn sandbox_interface<'a>(result: &'a Value, pod: &Pod) -> (usize, &'a Value) {
    let interfaces = result["interfaces"]
        .as_array()
        .unwrap_or_else(|| panic!("result has no interfaces: {result}"));
    let found: Vec<(usize, &Value)> = interfaces
        .iter()
        .enumerate()
        .filter(|(_, i)| i["sandbox"].as_str().is_some())
        .collect();
    assert_eq!(
        found.len(),
        1,
        "exactly one sandbox interface expected: {result}"
    );
    let (index, iface) = found[0];
    assert_eq!(
        iface["sandbox"],
        json!(pod.netns_path()),
        "sandbox path: {result}"
    );
    assert_eq!(
        iface["name"],
        json!(pod.ifname),
        "sandbox interface name: {result}"
    );
    (index, iface)
}

fn assert_mac_format(mac: &Value) {
    let mac = mac
        .as_str()
        .unwrap_or_else(|| panic!("mac is not a string: {mac}"));
    let parts: Vec<&str> = mac.split(':').collect();
    assert!(
        parts.len() == 6
            && parts
                .iter()
                .all(|p| p.len() == 2 && u8::from_str_radix(p, 16).is_ok()),
        "not a MAC: {mac}"
    );
}

/// Checks the result's shape against what `cni_version` prescribes.
fn assert_result_shape(put: &PluginUnderTest, pod: &Pod, result: &Value, cni_version: &str) {
    assert_eq!(
        result["cniVersion"],
        json!(cni_version),
        "result version: {result}"
    );
    let (sandbox_index, sandbox) = sandbox_interface(result, pod);
    assert_mac_format(&sandbox["mac"]);
    for iface in result["interfaces"].as_array().unwrap() {
        assert!(
            iface["name"].is_string(),
            "interface without name: {result}"
        );
    }
    let ips = result["ips"]
        .as_array()
        .unwrap_or_else(|| panic!("no ips: {result}"));
    assert!(!ips.is_empty(), "no ips: {result}");
    for ip in ips {
        let addr: IpNetwork = ip["address"].as_str().unwrap().parse().unwrap();
        if addr.is_ipv4() {
            assert!(
                put.pool_v4().contains(addr.ip()),
                "{addr} outside {}",
                put.pool_v4()
            );
        }
        assert_eq!(
            ip["interface"],
            json!(sandbox_index),
            "ip not on the sandbox interface"
        );
        assert!(ip["gateway"]
            .as_str()
            .is_some_and(|g| g.parse::<IpAddr>().is_ok()));
        if cni_version == "1.0.0" {
            assert!(
                ip.get("version").is_none(),
                "1.0.0 ips carry no version: {result}"
            );
        } else {
            let family = if addr.is_ipv4() { "4" } else { "6" };
            assert_eq!(
                ip["version"],
                json!(family),
                "{cni_version} ips carry version"
            );
        }
    }
    let routes = result["routes"]
        .as_array()
        .unwrap_or_else(|| panic!("no routes: {result}"));
    assert!(
        routes.iter().any(|r| r["dst"] == json!("0.0.0.0/0")),
        "no default route in the result: {result}"
    );
}

fn add_result_has_the_shape_of_each_cni_version(put: PluginUnderTest) {
    for v in ALL_VERSIONS {
        let pod = Pod::new();
        let result = put.add(&pod, v).expect_ok();
        assert_result_shape(&put, &pod, &result, v);
    }
}

fn add_puts_the_result_address_on_the_pod_interface(put: PluginUnderTest) {
    let pod = Pod::new();
    let result = put.add_ok(&pod);
    let (_, sandbox) = sandbox_interface(&result, &pod);
    let link = pod.netns.expect_link(&pod.ifname);
    assert!(link.is_up(), "pod interface is down: {link:?}");
    assert_eq!(
        json!(link.mac),
        sandbox["mac"],
        "result mac differs from the kernel"
    );
    let v4 = result_ipv4(&result);
    assert_eq!(
        pod.netns.global_addresses(&pod.ifname),
        vec![v4],
        "pod interface addresses differ from the result {result}"
    );
    assert_eq!(
        put.allocations_of(&pod.container_id)
            .iter()
            .map(|a| a.address)
            .collect::<Vec<_>>(),
        vec![v4.ip()],
        "the store does not record the address under the container"
    );
}

fn two_pods_on_one_node_ping_each_other(put: PluginUnderTest) {
    let a = Pod::new();
    let b = Pod::new();
    let ip_a = result_ipv4(&put.add_ok(&a)).ip();
    let ip_b = result_ipv4(&put.add_ok(&b)).ip();
    assert_ne!(ip_a, ip_b);
    assert!(a.netns.ping(ip_b, 2), "pod a cannot reach pod b at {ip_b}");
    assert!(b.netns.ping(ip_a, 2), "pod b cannot reach pod a at {ip_a}");
}

fn pod_reaches_the_node_address(put: PluginUnderTest) {
    let node_addr: IpAddr = "192.0.2.10".parse().unwrap();
    put.node().add_stand_in_address(node_addr);
    let pod = Pod::new();
    put.add_ok(&pod);
    assert!(
        pod.netns.ping(node_addr, 2),
        "pod cannot reach the node at {node_addr}"
    );
}

fn check_after_add_succeeds(put: PluginUnderTest) {
    for v in ["0.4.0", "1.0.0"] {
        let pod = Pod::new();
        let result = put.add(&pod, v).expect_ok();
        put.check(&pod, v, &result).expect_ok();
    }
}

fn check_is_refused_for_cni_version_0_3_1(put: PluginUnderTest) {
    let pod = Pod::new();
    let result = put.add(&pod, "0.3.1").expect_ok();
    put.check(&pod, "0.3.1", &result).expect_error(1);
}

fn del_releases_everything_once_the_netns_is_gone(put: PluginUnderTest) {
    let pod = Pod::new();
    let result = put.add_ok(&pod);
    put.del(&pod, "1.0.0", Some(&result)).expect_ok();
    pod.netns.delete();
    assert_node_clean(&put);
}

fn del_removes_the_pod_interface_while_the_netns_stays(put: PluginUnderTest) {
    let pod = Pod::new();
    put.add_ok(&pod);
    put.del_ok(&pod);
    assert_eq!(
        put.allocations(),
        vec![],
        "DEL returned before releasing the address"
    );
    poll_until(PAIR_GONE_WITHIN, "the pod interface is gone", || {
        pod.netns.link(&pod.ifname).is_none()
    });
    assert_node_clean(&put);
}

fn del_in_each_cni_version_with_prev_result(put: PluginUnderTest) {
    for v in ALL_VERSIONS {
        let pod = Pod::new();
        let result = put.add(&pod, v).expect_ok();
        let conf = with_prev_result(put.config(v), &result);
        put.call("DEL", &pod, &conf).run_in(put.node()).expect_ok();
        pod.netns.delete();
    }
    assert_node_clean(&put);
}

fn del_twice_succeeds(put: PluginUnderTest) {
    let pod = Pod::new();
    put.add_ok(&pod);
    put.del_ok(&pod);
    put.del_ok(&pod);
    pod.netns.delete();
    assert_node_clean(&put);
}

fn del_of_an_unknown_container_succeeds(put: PluginUnderTest) {
    let pod = Pod::new();
    put.del_ok(&pod);
    put.del_raw("never-added", "/var/run/netns/fjt-does-not-exist", "eth0")
        .expect_ok();
    assert_node_clean(&put);
}

fn del_after_the_netns_was_deleted_succeeds(put: PluginUnderTest) {
    let pod = Pod::new();
    put.add_ok(&pod);
    let Pod {
        netns,
        container_id,
        ifname,
    } = pod;
    let path = netns.path_str();
    netns.delete();
    put.del_raw(&container_id, &path, &ifname).expect_ok();
    assert_node_clean(&put);
}

fn del_with_an_empty_netns_path_succeeds(put: PluginUnderTest) {
    // Runtimes send CNI_NETNS="" on DEL when the sandbox is long gone.
    let pod = Pod::new();
    put.add_ok(&pod);
    let Pod {
        netns,
        container_id,
        ifname,
    } = pod;
    netns.delete();
    put.del_raw(&container_id, "", &ifname).expect_ok();
    assert_node_clean(&put);
}

fn del_after_the_pod_interface_was_removed_succeeds(put: PluginUnderTest) {
    let pod = Pod::new();
    put.add_ok(&pod);
    pod.netns.ip(&["link", "del", &pod.ifname]);
    put.del_ok(&pod);
    pod.netns.delete();
    assert_node_clean(&put);
}

fn add_accepts_kubelet_cni_args(put: PluginUnderTest) {
    let pod = Pod::new();
    let args = format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;\
         K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID=8a1f7c2e-0000-4000-8000-000000000001",
        pod.container_id
    );
    let call = put
        .call("ADD", &pod, &put.config("1.0.0"))
        .with_cni_args(&args);
    let result = call.run_in(put.node()).expect_ok();
    assert_eq!(
        pod.netns.global_addresses(&pod.ifname),
        vec![result_ipv4(&result)]
    );
}

fn add_again_after_del_of_the_same_container_works(put: PluginUnderTest) {
    let pod = Pod::new();
    put.add_ok(&pod);
    put.del_ok(&pod);
    // The old pair may still be dying (fjord deletes it asynchronously): a re-ADD must not trip on it.
    let result = put.add_ok(&pod);
    assert_eq!(
        pod.netns.global_addresses(&pod.ifname),
        vec![result_ipv4(&result)]
    );
}

for_both_plugins!(
    version_lists_the_versions_runtimes_use,
    add_result_has_the_shape_of_each_cni_version,
    add_puts_the_result_address_on_the_pod_interface,
    two_pods_on_one_node_ping_each_other,
    pod_reaches_the_node_address,
    check_after_add_succeeds,
    check_is_refused_for_cni_version_0_3_1,
    del_releases_everything_once_the_netns_is_gone,
    del_removes_the_pod_interface_while_the_netns_stays,
    del_in_each_cni_version_with_prev_result,
    del_twice_succeeds,
    del_of_an_unknown_container_succeeds,
    del_after_the_netns_was_deleted_succeeds,
    del_with_an_empty_netns_path_succeeds,
    del_after_the_pod_interface_was_removed_succeeds,
    add_accepts_kubelet_cni_args,
    add_again_after_del_of_the_same_container_works,
);

/// GC (CNI 1.1.0): what the spec asks, which fjord implements.
mod fjord_gc {
    use super::*;

    #[test]
    fn gc_releases_every_attachment_not_in_the_valid_list() {
        let put = PluginUnderTest::fjord();
        let keep = Pod::new();
        let drop = Pod::new();
        let kept_ip = result_ipv4(&put.add_ok(&keep)).ip();
        put.add_ok(&drop);
        put.gc(&[(keep.container_id.as_str(), keep.ifname.as_str())])
            .expect_ok();
        let left: Vec<(String, IpAddr)> = put
            .allocations()
            .into_iter()
            .map(|a| (a.container_id, a.address))
            .collect();
        assert_eq!(left, vec![(keep.container_id.clone(), kept_ip)]);
        assert!(
            keep.netns.link(&keep.ifname).is_some(),
            "GC touched a valid attachment"
        );
    }

    #[test]
    fn status_succeeds_with_a_writable_store() {
        let put = PluginUnderTest::fjord();
        let mut call = put.call("STATUS", &Pod::new(), &put.config("1.1.0"));
        call.container_id = None;
        call.netns = None;
        call.ifname = None;
        call.run_in(put.node()).expect_ok();
    }
}

/// Where ptp + host-local (containernetworking-plugins 1.1.1) do not do what the spec says.
mod reference_departures {
    use super::*;

    /// The spec (1.1.0) has GC release every attachment not listed. ptp and host-local
    /// 1.1.1 only speak up to 1.0.0 and do not know the verb: called as a runtime calls
    /// GC (no CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME) ptp fails (code 3, "missing
    /// containerID"), and the unlisted attachment keeps its address.
    #[test]
    fn reference_departs_from_spec_gc_does_not_release() {
        let put = PluginUnderTest::reference();
        let stale = Pod::new();
        put.add_ok(&stale);
        let out = put.gc(&[]);
        assert!(!out.succeeded(), "reference GC now succeeds: {out:?}");
        assert_eq!(put.allocations_of(&stale.container_id).len(), 1);
    }

    /// The spec makes CNI_COMMAND required; the Go skel treats its absence as a request
    /// for its human-readable about text and exits 0 with nothing on stdout.
    #[test]
    fn reference_departs_from_spec_missing_cni_command_exits_zero() {
        let put = PluginUnderTest::reference();
        let pod = Pod::new();
        let mut call = put.call("ADD", &pod, &put.config("1.0.0"));
        call.command = None;
        let out = call.run_in(put.node());
        assert!(
            out.succeeded(),
            "reference now fails without CNI_COMMAND: {out:?}"
        );
        assert_eq!(out.stdout_json, None);
        assert_eq!(put.allocations(), vec![]);
    }

    /// The spec's error object carries `cniVersion`; the Go skel prints only code/msg.
    #[test]
    fn reference_departs_from_spec_error_has_no_cni_version() {
        let put = PluginUnderTest::reference();
        let mut call = put.call("ADD", &Pod::new(), &put.config("1.0.0"));
        call.ifname = None;
        let err = call.run_in(put.node()).expect_error(4);
        assert!(
            err.get("cniVersion").is_none(),
            "reference now sends cniVersion: {err}"
        );
    }
}

/// Fjord's datapath contract (ARCHITECTURE.md, "The pod datapath").
mod fjord_datapath {
    use super::*;
    use fjord_conformance::plugin::result_ipv6;
    use fjord_conformance::{host_veth_name, Link};

    const GATEWAY_V4: &str = "169.254.1.1";
    const GATEWAY_V6: &str = "fe80::1";

    fn host_end(put: &PluginUnderTest, pod: &Pod) -> Link {
        put.node()
            .expect_link(&host_veth_name(&pod.container_id, &pod.ifname))
    }

    #[test]
    fn host_end_is_named_from_sha256_of_container_id_and_ifname() {
        let put = PluginUnderTest::fjord();
        let pod = Pod::new();
        let result = put.add_ok(&pod);
        let name = host_veth_name(&pod.container_id, &pod.ifname);
        assert_eq!(node_links_besides_lo(&put), vec![name.clone()]);
        assert_eq!(result["interfaces"][0]["name"], json!(name));
        let host = host_end(&put, &pod);
        assert_eq!(result["interfaces"][0]["mac"], json!(host.mac));
        assert_eq!(host.kind.as_deref(), Some("veth"));
    }

    #[test]
    fn host_end_is_up_without_an_ipv4_address_and_with_proxy_arp() {
        let put = PluginUnderTest::fjord();
        let pod = Pod::new();
        put.add_ok(&pod);
        let host = host_end(&put, &pod);
        assert!(host.is_up(), "host end is down: {host:?}");
        assert_eq!(put.node().global_addresses(&host.name), vec![]);
        assert_eq!(put.node().sysctl_conf("ipv4", &host.name, "proxy_arp"), "1");
        assert_eq!(put.node().sysctl("net.ipv4.ip_forward"), "1");
    }

    #[test]
    fn node_has_one_scope_link_route_per_pod_address() {
        let put = PluginUnderTest::fjord();
        let pod = Pod::new();
        let ip = result_ipv4(&put.add_ok(&pod));
        let host = host_end(&put, &pod);
        let host_route = IpNetwork::new(ip.ip(), 32).unwrap();
        let routes = put.node().routes_to(host_route);
        assert_eq!(routes.len(), 1, "routes to {host_route}: {routes:?}");
        assert_eq!(routes[0].dev.as_deref(), Some(host.name.as_str()));
        assert_eq!(routes[0].scope, "link");
        assert_eq!(routes[0].gateway, None);
    }

    #[test]
    fn pod_has_a_slash_32_and_routes_via_169_254_1_1_pinned_to_the_host_mac() {
        let put = PluginUnderTest::fjord();
        let pod = Pod::new();
        let result = put.add_ok(&pod);
        let ip = result_ipv4(&result);
        assert_eq!(ip.prefix(), 32, "pod address is not a /32: {result}");
        assert_eq!(result["ips"][0]["gateway"], json!(GATEWAY_V4));
        assert_eq!(result["ips"][0]["interface"], json!(1));
        assert!(
            result["routes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["dst"] == json!("0.0.0.0/0") && r["gw"] == json!(GATEWAY_V4)),
            "no default route via {GATEWAY_V4} in {result}"
        );
        let gw: IpAddr = GATEWAY_V4.parse().unwrap();
        let routes = pod.netns.routes_v4();
        let default = routes
            .iter()
            .find(|r| r.dst.prefix() == 0)
            .unwrap_or_else(|| panic!("pod has no default route: {routes:?}"));
        assert_eq!(default.gateway, Some(gw));
        assert_eq!(default.dev.as_deref(), Some("eth0"));
        let gw_route = routes
            .iter()
            .find(|r| r.dst == IpNetwork::new(gw, 32).unwrap())
            .unwrap_or_else(|| panic!("pod has no route to {gw}: {routes:?}"));
        assert_eq!(gw_route.scope, "link");
        let neighbour = pod
            .netns
            .neighbour("eth0", gw)
            .unwrap_or_else(|| panic!("no neighbour entry for {gw}"));
        assert!(neighbour.is_permanent(), "{neighbour:?}");
        assert_eq!(neighbour.lladdr, Some(host_end(&put, &pod).mac));
    }

    #[test]
    fn both_ends_take_the_mtu_of_the_config() {
        let put = PluginUnderTest::fjord();
        let pod = Pod::new();
        put.add_ok(&pod);
        assert_eq!(put.plugin_conf()["mtu"], json!(1400));
        assert_eq!(host_end(&put, &pod).mtu, 1400);
        assert_eq!(pod.netns.expect_link("eth0").mtu, 1400);
    }

    #[test]
    fn result_interfaces_are_host_end_then_pod_end() {
        let put = PluginUnderTest::fjord();
        let pod = Pod::new();
        let result = put.add_ok(&pod);
        let interfaces = result["interfaces"].as_array().unwrap();
        assert_eq!(interfaces.len(), 2, "{result}");
        assert!(
            interfaces[0].get("sandbox").is_none(),
            "host end has no sandbox"
        );
        assert_eq!(interfaces[1]["name"], json!("eth0"));
        assert_eq!(interfaces[1]["sandbox"], json!(pod.netns_path()));
        assert_eq!(
            interfaces[1]["mac"],
            json!(pod.netns.expect_link("eth0").mac)
        );
    }

    #[test]
    fn del_removes_host_route_and_address_before_returning() {
        let put = PluginUnderTest::fjord();
        let pod = Pod::new();
        let ip = result_ipv4(&put.add_ok(&pod));
        put.del_ok(&pod);
        assert_eq!(
            put.node().routes_to(IpNetwork::new(ip.ip(), 32).unwrap()),
            vec![]
        );
        assert_eq!(put.allocations(), vec![]);
        poll_until(PAIR_GONE_WITHIN, "the host end is gone", || {
            node_links_besides_lo(&put).is_empty()
        });
    }

    #[test]
    fn add_records_the_kubernetes_pod_with_the_allocation_and_network() {
        let put = PluginUnderTest::fjord();
        let pod = Pod::new();
        let args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cart-7";
        put.call("ADD", &pod, &put.config("1.0.0"))
            .with_cni_args(args)
            .run_in(put.node())
            .expect_ok();
        let blocks = put.store_dir().join("blocks");
        let records: Vec<Value> = std::fs::read_dir(&blocks)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
            .collect();
        let allocation = records
            .iter()
            .flat_map(|r| r["allocations"].as_array().cloned().unwrap_or_default())
            .find(|a| a["containerID"] == json!(pod.container_id))
            .unwrap_or_else(|| panic!("no allocation for the pod in {records:?}"));
        assert_eq!(allocation["podNamespace"], json!("shop"));
        assert_eq!(allocation["podName"], json!("cart-7"));
        assert_eq!(allocation["network"], json!(NETWORK_NAME));
        assert_eq!(put.allocations()[0].node.as_deref(), Some(put.node_name()));
    }

    #[test]
    fn dual_stack_pod_gets_both_families_and_reaches_another_pod_over_ipv6() {
        let put = PluginUnderTest::fjord_dual_stack();
        let a = Pod::new();
        let b = Pod::new();
        let result_a = put.add_ok(&a);
        let result_b = put.add_ok(&b);
        let v6_a = result_ipv6(&result_a);
        let v6_b = result_ipv6(&result_b);
        assert_eq!(v6_a.prefix(), 128);
        assert!("fd00:244::/56"
            .parse::<IpNetwork>()
            .unwrap()
            .contains(v6_a.ip()));
        let mut want = vec![result_ipv4(&result_a), v6_a];
        want.sort();
        let mut got = a.netns.global_addresses("eth0");
        got.sort();
        assert_eq!(got, want);
        let v6_ip = result_a["ips"]
            .as_array()
            .unwrap()
            .iter()
            .find(|ip| ip["address"] == json!(v6_a.to_string()))
            .unwrap();
        assert_eq!(v6_ip["gateway"], json!(GATEWAY_V6));
        assert!(result_a["routes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["dst"] == json!("::/0") && r["gw"] == json!(GATEWAY_V6)));

        let gw6: IpAddr = GATEWAY_V6.parse().unwrap();
        let host = host_end(&put, &a);
        let default6 = a
            .netns
            .routes_v6()
            .into_iter()
            .find(|r| r.dst.prefix() == 0);
        assert_eq!(default6.and_then(|r| r.gateway), Some(gw6));
        let neighbour = a.netns.neighbour("eth0", gw6).expect("neighbour fe80::1");
        assert!(neighbour.is_permanent());
        assert_eq!(neighbour.lladdr, Some(host.mac.clone()));
        assert!(put
            .node()
            .addresses(&host.name)
            .iter()
            .any(|x| x.addr == gw6 && x.prefix_len == 64));
        let host_route6 = put
            .node()
            .routes_to(IpNetwork::new(v6_a.ip(), 128).unwrap());
        assert_eq!(host_route6.len(), 1, "{host_route6:?}");
        assert_eq!(host_route6[0].dev.as_deref(), Some(host.name.as_str()));
        assert_eq!(put.node().sysctl("net.ipv6.conf.all.forwarding"), "1");

        assert!(
            a.netns.ping(v6_b.ip(), 2),
            "pod a cannot reach pod b at {}",
            v6_b.ip()
        );
        assert!(a.netns.ping(result_ipv4(&result_b).ip(), 2));

        put.del_ok(&a);
        put.del_ok(&b);
        a.netns.delete();
        b.netns.delete();
        assert_node_clean(&put);
    }
}
