//! Kernel route programming against a real kernel. Each test builds its own network
//! namespace with a veth pair as the underlay (10.0.0.1/24, fd00::1/64), programs it
//! through a `Kernel` whose socket lives in that namespace, and checks the result with
//! `ip -n NS -j route`. Needs root; never touches the root namespace, sends no packets.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;

use fjord_routed::kernel::{Kernel, KernelError, RT_METRIC_FJORD};
use fjord_routed::node::{NextHop, RouteOp};
use ipnetwork::IpNetwork;
use serde_json::Value;

/// A throwaway namespace, deleted on drop (also when the test panics).
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        let ns = Netns {
            name: format!("fjk-{tag}-{}", std::process::id()),
        };
        ip(&["netns", "add", &ns.name]);
        for args in [
            "link set lo up",
            "link add u0 type veth peer name u1",
            "addr add 10.0.0.1/24 dev u0",
            "addr add fd00::1/64 dev u0 nodad",
            "link set u1 up",
            "link set u0 up",
        ] {
            ns.ip(args);
        }
        ns
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    fn ip(&self, args: &str) -> String {
        let mut all = vec!["-n", &self.name];
        all.extend(args.split_whitespace());
        ip(&all)
    }

    /// `ip -j route show ARGS` in the namespace, both families unless ARGS says.
    fn routes(&self, family: &str, args: &str) -> Vec<Value> {
        let out = self.ip(&format!("-j {family} route show {args}"));
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("ip -j output {out:?}: {e}"))
    }

    /// Fjord's routes as (dst, gateway) pairs, sorted.
    fn fjord(&self, family: &str) -> Vec<(String, String)> {
        let mut v: Vec<_> = self
            .routes(family, "proto 200")
            .iter()
            .map(|r| (str_of(r, "dst"), str_of(r, "gateway")))
            .collect();
        v.sort();
        v
    }

    async fn kernel(&self) -> Kernel {
        Kernel::connect_in_netns(&self.path()).expect("netlink socket in the test namespace")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn str_of(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_string()
}

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

fn via(s: &str) -> NextHop {
    NextHop::Via(s.parse::<IpAddr>().unwrap())
}

fn replace(prefix: &str, next_hop: NextHop) -> RouteOp {
    RouteOp::Replace {
        prefix: net(prefix),
        next_hop,
    }
}

fn pair(dst: &str, gw: &str) -> (String, String) {
    (dst.to_string(), gw.to_string())
}

#[tokio::test]
async fn install_replace_remove_ipv4() {
    let ns = Netns::new("v4");
    let k = ns.kernel().await;
    k.apply([replace("10.244.1.0/26", via("10.0.0.2"))])
        .await
        .unwrap();
    let routes = ns.routes("-4", "proto 200");
    assert_eq!(routes.len(), 1, "{routes:?}");
    assert_eq!(str_of(&routes[0], "dst"), "10.244.1.0/26");
    assert_eq!(str_of(&routes[0], "gateway"), "10.0.0.2");
    assert_eq!(str_of(&routes[0], "dev"), "u0");
    assert_eq!(routes[0]["metric"], u64::from(RT_METRIC_FJORD));

    // Replace moves the route; installing the same route again is harmless.
    for _ in 0..2 {
        k.apply([replace("10.244.1.0/26", via("10.0.0.3"))])
            .await
            .unwrap();
        assert_eq!(ns.fjord("-4"), vec![pair("10.244.1.0/26", "10.0.0.3")]);
    }

    let remove = RouteOp::Remove {
        prefix: net("10.244.1.0/26"),
    };
    k.apply([remove]).await.unwrap();
    assert!(ns.fjord("-4").is_empty());
    // Removing what is gone is success.
    k.apply([remove]).await.unwrap();
}

#[tokio::test]
async fn install_replace_remove_ipv6() {
    let ns = Netns::new("v6");
    let k = ns.kernel().await;
    k.apply([replace("fd00:244::/122", via("fd00::2"))])
        .await
        .unwrap();
    assert_eq!(ns.fjord("-6"), vec![pair("fd00:244::/122", "fd00::2")]);
    k.apply([replace("fd00:244::/122", via("fd00::3"))])
        .await
        .unwrap();
    assert_eq!(ns.fjord("-6"), vec![pair("fd00:244::/122", "fd00::3")]);
    k.apply([RouteOp::Remove {
        prefix: net("fd00:244::/122"),
    }])
    .await
    .unwrap();
    assert!(ns.fjord("-6").is_empty());
}

#[tokio::test]
async fn onlink_route_reaches_a_gateway_off_every_subnet() {
    let ns = Netns::new("onlink");
    let k = ns.kernel().await;
    let ifindex: u32 = ns.routes("", "10.0.0.0/24")[0]["dev"]
        .as_str()
        .map(|dev| ns.ip(&format!("-j link show {dev}")))
        .map(|j| {
            serde_json::from_str::<Value>(&j).unwrap()[0]["ifindex"]
                .as_u64()
                .unwrap()
        })
        .unwrap() as u32;
    let onlink = NextHop::OnLink {
        gateway: "192.168.99.1".parse().unwrap(),
        ifindex,
    };
    k.apply([replace("10.244.2.0/26", onlink)]).await.unwrap();
    let routes = ns.routes("-4", "proto 200");
    assert_eq!(str_of(&routes[0], "gateway"), "192.168.99.1");
    assert_eq!(routes[0]["flags"], serde_json::json!(["onlink"]));
    let listed = k.fjord_routes().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].next_hop, Some(onlink));
}

#[tokio::test]
async fn failed_routes_are_reported_and_the_rest_installed() {
    let ns = Netns::new("fail");
    let k = ns.kernel().await;
    let err = k
        .apply([
            replace("10.244.3.0/26", via("192.0.2.1")),
            replace("10.244.4.0/26", via("10.0.0.2")),
        ])
        .await
        .unwrap_err();
    match &err {
        KernelError::Batch {
            attempted: 2,
            failed: 1,
            errors,
        } => assert!(
            err.to_string().contains("10.244.3.0/26"),
            "{err}: {errors:?}"
        ),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(ns.fjord("-4"), vec![pair("10.244.4.0/26", "10.0.0.2")]);
}

#[tokio::test]
async fn reconcile_touches_fjord_routes_only() {
    let ns = Netns::new("rec");
    // Somebody else's routes, one for a prefix Fjord also wants.
    ns.ip("route add 10.50.0.0/26 via 10.0.0.2 proto static");
    ns.ip("route add 10.70.0.0/26 via 10.0.0.3 proto static");
    ns.ip("-6 route add fd00:50::/122 via fd00::2 proto static");
    // Leftovers of an earlier Fjord run: stale, wrong next hop, wrong metric, no gateway.
    ns.ip("route add 10.60.0.0/26 via 10.0.0.2 proto 200 metric 2048");
    ns.ip("route add 10.80.0.0/26 via 10.0.0.9 proto 200 metric 2048");
    ns.ip("route add 10.90.0.0/26 via 10.0.0.2 proto 200");
    ns.ip("route add 10.95.0.0/26 dev u0 proto 200 metric 2048");
    ns.ip("-6 route add fd00:60::/122 via fd00::2 proto 200 metric 2048");
    let others = |ns: &Netns| {
        let mut v = ns.routes("-4", "");
        v.extend(ns.routes("-6", ""));
        v.retain(|r| str_of(r, "protocol") != "200");
        v
    };
    let before = others(&ns);

    let desired = HashMap::from([
        (net("10.70.0.0/26"), via("10.0.0.2")),
        (net("10.80.0.0/26"), via("10.0.0.2")),
        (net("10.90.0.0/26"), via("10.0.0.2")),
        (net("fd00:80::/122"), via("fd00::2")),
    ]);
    let k = ns.kernel().await;
    let report = k.reconcile(&desired).await.unwrap();
    assert_eq!((report.kept, report.removed, report.installed), (0, 4, 4));

    assert_eq!(
        ns.fjord("-4"),
        vec![
            pair("10.70.0.0/26", "10.0.0.2"),
            pair("10.80.0.0/26", "10.0.0.2"),
            pair("10.90.0.0/26", "10.0.0.2"),
        ]
    );
    assert_eq!(ns.fjord("-6"), vec![pair("fd00:80::/122", "fd00::2")]);
    assert!(ns
        .routes("-4", "proto 200")
        .iter()
        .all(|r| r["metric"] == 2048));
    // The static routes (including the one for 10.70.0.0/26) and the kernel's connected
    // routes are exactly as they were.
    assert_eq!(others(&ns), before);
    assert!(before.iter().any(|r| str_of(r, "protocol") == "kernel"));

    let again = k.reconcile(&desired).await.unwrap();
    assert_eq!((again.kept, again.removed, again.installed), (4, 0, 0));
    assert_eq!(k.fjord_routes().await.unwrap().len(), 4);

    // An empty table removes every Fjord route and nothing else.
    k.reconcile(&HashMap::new()).await.unwrap();
    assert!(k.fjord_routes().await.unwrap().is_empty());
    assert_eq!(others(&ns), before);
}

#[tokio::test]
async fn ten_thousand_routes_install_completely() {
    let ns = Netns::new("10k");
    let k = ns.kernel().await;
    let ops: Vec<RouteOp> = (0..10_000u32)
        .map(|i| RouteOp::Replace {
            prefix: IpNetwork::new(IpAddr::from((0x0a80_0000 + i * 64).to_be_bytes()), 26).unwrap(),
            next_hop: via("10.0.0.2"),
        })
        .collect();
    k.apply(ops.iter().copied()).await.unwrap();
    let lines = ns.ip("-4 route show proto 200");
    assert_eq!(lines.lines().count(), 10_000);
    assert_eq!(k.fjord_routes().await.unwrap().len(), 10_000);
    // The same batch again replaces in place: still 10,000.
    k.apply(ops).await.unwrap();
    assert_eq!(ns.ip("-4 route show proto 200").lines().count(), 10_000);
}

/// Failures spread over several batch buffers and apply pieces are each reported
/// against their own route, the routes around them go in, and removing absent routes is no failure.
#[tokio::test]
async fn failures_in_a_large_batch_name_their_routes_and_spare_the_rest() {
    let ns = Netns::new("bfail");
    let k = ns.kernel().await;
    let prefix =
        |i: u32| IpNetwork::new(IpAddr::from((0x0a90_0000 + i * 64).to_be_bytes()), 26).unwrap();
    let ops: Vec<RouteOp> = (0..5_000u32)
        .map(|i| RouteOp::Replace {
            prefix: prefix(i),
            // 192.0.2.1 is on no connected subnet: the kernel refuses it.
            next_hop: via(if i % 1_000 == 7 {
                "192.0.2.1"
            } else {
                "10.0.0.2"
            }),
        })
        .collect();
    let err = k.apply(ops).await.unwrap_err();
    match &err {
        KernelError::Batch {
            attempted: 5_000,
            failed: 5,
            errors,
        } => {
            let named: Vec<String> = errors.iter().map(ToString::to_string).collect();
            for i in [7, 1_007, 2_007, 3_007, 4_007] {
                let p = prefix(i).to_string();
                assert!(named.iter().any(|e| e.contains(&p)), "{p} not in {named:?}");
            }
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(ns.ip("-4 route show proto 200").lines().count(), 4_995);
    let removals = (0..5_000u32).map(|i| RouteOp::Remove { prefix: prefix(i) });
    k.apply(removals).await.unwrap();
    assert_eq!(ns.ip("-4 route show proto 200").lines().count(), 0);
}

#[tokio::test]
async fn a_missing_namespace_is_named_in_the_error() {
    let err = Kernel::connect_in_netns("/run/netns/fjk-no-such-ns".as_ref())
        .err()
        .expect("no such namespace");
    assert!(err.to_string().contains("fjk-no-such-ns"), "{err}");
}
