//! Memory and time of the translation's caches at the scale: 10,000 pods (100
//! namespaces of 100, five labels, dual stack, four named ports each), 1,000 policies
//! (ten per namespace, mixing pod, namespace and both selectors, ipBlocks and named
//! ports), and the desired table for 110 local pods (kubelet's default max-pods).
//!
//! `cargo run --release -p fjord-policy --example policy_memory` (no root needed).

use fjord_policy::model::{NamedPort, NamespaceInfo, ObjectKey, PodInfo};
use fjord_policy::nat::NatConfig;
use fjord_policy::ranges::Protocol;
use fjord_policy::ruleset::desired_table;
use fjord_policy::translate::{ClusterView, LocalPod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use std::net::IpAddr;
use std::time::Instant;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn pod(ns: usize, i: usize) -> PodInfo {
    let n = (ns * 100 + i) as u32;
    let v4 = IpAddr::from((0x0af4_0000u32 + n).to_be_bytes());
    let v6: IpAddr = format!("fd00:244::{n:x}").parse().expect("v6");
    let labels = [
        ("app", format!("app{}", i % 10)),
        ("tier", ["web", "db", "cache"][i % 3].to_string()),
        ("pod-template-hash", format!("{:010x}", n * 7919)),
        ("version", format!("v{}", i % 4)),
        ("team", format!("team{}", ns % 7)),
    ];
    let named_ports = ["http", "metrics", "grpc", "admin"]
        .iter()
        .enumerate()
        .map(|(k, name)| NamedPort {
            name: name.to_string(),
            protocol: Protocol::Tcp,
            port: 8080 + k as u16,
        })
        .collect();
    PodInfo {
        key: ObjectKey::new(format!("ns{ns}"), format!("pod-{i}-{n:x}")),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        ips: vec![v4, v6],
        named_ports,
        host_network: false,
        terminal: false,
    }
}

fn policy(ns: usize, k: usize) -> NetworkPolicy {
    let peer = match k % 4 {
        0 => serde_json::json!({"podSelector": {"matchLabels": {"tier": "web"}}}),
        1 => {
            serde_json::json!({"namespaceSelector": {"matchLabels": {"team": format!("team{}", ns % 7)}}})
        }
        2 => serde_json::json!({"namespaceSelector": {}, "podSelector": {"matchExpressions": [
            {"key": "app", "operator": "In", "values": ["app1", "app2"]}]}}),
        _ => serde_json::json!({"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.244.0.0/16"]}}),
    };
    serde_json::from_value(serde_json::json!({
        "metadata": {"namespace": format!("ns{ns}"), "name": format!("policy-{k}")},
        "spec": {
            "podSelector": {"matchLabels": {"app": format!("app{k}")}},
            "ingress": [{"from": [peer], "ports": [{"port": "http"}, {"port": 9000, "endPort": 9100}]}],
            "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"team": "team1"}}}],
                        "ports": [{"port": "grpc"}]}]
        }
    }))
    .expect("policy")
}

fn main() {
    let before = rss_kib();
    let t0 = Instant::now();
    let mut view = ClusterView::new();
    for ns in 0..100 {
        let labels = [("team".to_string(), format!("team{}", ns % 7))].into();
        view.upsert_namespace(NamespaceInfo::new(format!("ns{ns}"), labels));
        for i in 0..100 {
            view.upsert_pod(pod(ns, i));
        }
        for k in 0..10 {
            view.upsert_policy(&policy(ns, k)).expect("policy compiles");
        }
    }
    let load_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let cached = rss_kib();
    // This node's pods: 110 of namespace ns3..ns4.
    let local: Vec<LocalPod> = (0..110)
        .map(|i| {
            let p = pod(3 + i / 100, i % 100);
            LocalPod {
                key: p.key.clone(),
                interface: format!("fj{i:011x}"),
                ips: vec![],
            }
        })
        .collect();
    let t0 = Instant::now();
    let desired = view.desired(&local);
    let table = desired_table(Some(&desired), &NatConfig::disabled());
    let translate_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let after = rss_kib();
    println!(
        "{} pods, {} policies: loaded in {load_ms:.0} ms; RSS {} KiB -> {} KiB with the view \
         (+{} KiB)",
        view.pod_count(),
        view.policies().count(),
        before,
        cached,
        cached.saturating_sub(before)
    );
    println!(
        "desired state for {} local pods: {translate_ms:.0} ms; {} classes, {} chains, {} rules, \
         {} set elements; RSS {} KiB (+{} KiB for the desired state and table)",
        local.len(),
        desired.classes.len(),
        table.chains.len(),
        table.rule_count(),
        table.element_count(),
        after,
        after.saturating_sub(cached)
    );
    println!("target: <= 51200 KiB for the whole daemon");
}
