//! Measures the nft interface on this machine (docs/decisions/0003-nftables-interface.md):
//!
//! - one change to a 10,000-element set (a pod joins / leaves a namespace that a policy
//!   allows), through the real path: translation, diff, one `nft -f` batch;
//! - loading the full table for 1,000 local pods (one policy each: 4,000+ rules) as text
//!   (`nft -f`, Fjord's choice) and as JSON (`nft -j -f`, the `nftables` crate's path);
//! - listing it back as JSON (what reconcile reads);
//! - the floor: an `nft -f` batch that changes nothing (process start, cache fill);
//! - peak memory of the nft processes and of this process's caches.
//!
//! Runs in a throwaway network namespace, never the root one:
//! `sudo cargo run --release -p fjord-policy --example nft_interface [-- CHANGES]`

use fjord_policy::model::{NamespaceInfo, ObjectKey, PodInfo};
use fjord_policy::nat::NatConfig;
use fjord_policy::nft::{Nft, PolicyTable};
use fjord_policy::ruleset::desired_table;
use fjord_policy::translate::{ClusterView, LocalPod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

/// Moves this (single-threaded) process into a network namespace of its own: every
/// `nft` it runs works there, with no `ip netns exec` in the timings, and the namespace
/// and its table go away with the process.
fn enter_private_netns() {
    // SAFETY: unshare only changes this process's namespace membership.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "unshare(CLONE_NEWNET): {} (run as root)",
        std::io::Error::last_os_error()
    );
}

fn pod(ns: &str, i: u32, labels: &[(&str, &str)]) -> PodInfo {
    // Every other address: 10,000 pods are 10,000 set elements, not a few merged ranges.
    let ip = IpAddr::from((0x0af4_0000u32 + 2 * i).to_be_bytes());
    PodInfo {
        key: ObjectKey::new(ns, format!("p{i}")),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ips: vec![ip],
        named_ports: vec![],
        host_network: false,
        terminal: false,
    }
}

fn policy(ns: &str, name: &str, spec: serde_json::Value) -> NetworkPolicy {
    serde_json::from_value(serde_json::json!({
        "metadata": {"namespace": ns, "name": name}, "spec": spec}))
    .expect("policy")
}

fn summary(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let n = samples.len();
    let p99 = samples[((n as f64 * 0.99).ceil() as usize).max(1) - 1];
    println!(
        "{label:<58} n={n:<4} median {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms",
        ms(samples[n / 2]),
        ms(p99),
        ms(samples[n - 1])
    );
}

fn children_max_rss_kib() -> i64 {
    // SAFETY: rusage is plain data; getrusage only writes into it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage we own.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    usage.ru_maxrss
}

fn main() {
    let changes: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    enter_private_netns();
    let nft = Nft::default();
    nft.check().expect("nftables works in the namespace");
    println!("load before: {}", load());

    // 1. A 10,000-element set: namespace "big" has 10,000 pods, and a policy lets the
    //    one local pod receive from all of them.
    let mut view = ClusterView::new();
    view.upsert_namespace(NamespaceInfo::new("big", Default::default()));
    view.upsert_namespace(NamespaceInfo::new("app", Default::default()));
    for i in 0..10_000 {
        view.upsert_pod(pod("big", i, &[("role", "client")]));
    }
    view.upsert_pod(pod("app", 60_000, &[("app", "server")]));
    view.upsert_policy(&policy("app", "from-big", serde_json::json!({
        "podSelector": {"matchLabels": {"app": "server"}},
        "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"role": "client"}}}]}]})))
    .expect("policy compiles");
    let local = vec![LocalPod {
        key: ObjectKey::new("app", "p60000"),
        interface: "fj0000000000a".into(),
        ips: vec![],
    }];
    let mut table = PolicyTable::new(nft.clone());
    let started = Instant::now();
    let desired = desired_table(Some(&view.desired(&local)), &NatConfig::disabled());
    let report = table.sync(&desired).expect("first load");
    println!(
        "first load of a 10,000-element set: {:.1} ms, {} commands, {} elements",
        started.elapsed().as_secs_f64() * 1000.0,
        report.commands,
        desired.element_count()
    );
    let (mut translate, mut apply, mut total) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..changes {
        let i = 20_000 + (round as u32 / 2);
        let t0 = Instant::now();
        if round % 2 == 0 {
            view.upsert_pod(pod("big", i, &[("role", "client")]));
        } else {
            view.remove_pod(&ObjectKey::new("big", format!("p{i}")));
        }
        let desired = desired_table(Some(&view.desired(&local)), &NatConfig::disabled());
        let t1 = Instant::now();
        let report = table.sync(&desired).expect("change applies");
        assert_eq!(report.commands, 1, "one element added or removed");
        translate.push(t1 - t0);
        apply.push(t1.elapsed());
        total.push(t0.elapsed());
    }
    summary("10k set, +-1 element: translation + diff", translate);
    summary("10k set, +-1 element: nft -f of the batch", apply);
    summary("10k set, +-1 element: API change -> kernel (both)", total);
    let mut floor = Vec::new();
    for _ in 0..50 {
        let t0 = Instant::now();
        nft.apply("add table inet fjord\n", 1).expect("no-op batch");
        floor.push(t0.elapsed());
    }
    summary("floor: nft -f of a batch that changes nothing", floor);

    // 2. 1,000 local pods, one policy each (ingress from 10 peers on TCP 80, egress to
    //    a /24): the full table as text, then as JSON.
    let mut view = ClusterView::new();
    view.upsert_namespace(NamespaceInfo::new("app", Default::default()));
    let mut local: Vec<LocalPod> = Vec::new();
    for i in 0..1_000u32 {
        let p = pod(
            "app",
            i,
            &[("app", &format!("a{i}")), ("peer", &format!("g{}", i / 10))],
        );
        local.push(LocalPod {
            key: p.key.clone(),
            interface: format!("fj{i:011x}"),
            ips: vec![],
        });
        view.upsert_pod(p);
        view.upsert_policy(&policy("app", &format!("p{i}"), serde_json::json!({
            "podSelector": {"matchLabels": {"app": format!("a{i}")}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"peer": format!("g{}", i / 10)}}}],
                         "ports": [{"port": 80}]}],
            "egress": [{"to": [{"ipBlock": {"cidr": format!("10.{}.{}.0/24", 100 + i / 256, i % 256)}}]}]})))
        .expect("policy compiles");
    }
    let nat = NatConfig {
        enabled: true,
        pools: vec!["10.244.0.0/16".parse().expect("pool")],
        node_addresses: vec!["10.250.0.1".parse().expect("address")],
        exempt: vec![],
    };
    let t0 = Instant::now();
    let desired = desired_table(Some(&view.desired(&local)), &nat);
    let translate_ms = t0.elapsed().as_secs_f64() * 1000.0;
    nft.apply("delete table inet fjord\n", 1).expect("clean");
    let mut fresh = PolicyTable::new(nft.clone());
    let t0 = Instant::now();
    let report = fresh.sync(&desired).expect("full load");
    println!(
        "full table, 1,000 pods: translation {translate_ms:.0} ms; nft -f {:.0} ms \
         ({} commands, {} rules, {} elements, {} chains)",
        t0.elapsed().as_secs_f64() * 1000.0,
        report.commands,
        desired.rule_count(),
        desired.element_count(),
        desired.chains.len()
    );
    let t0 = Instant::now();
    let listed = Command::new("nft")
        .args(["-j", "list", "table", "inet", "fjord"])
        .output()
        .expect("list");
    println!(
        "nft -j list table inet fjord (reconcile's read): {:.0} ms, {} KiB of JSON",
        t0.elapsed().as_secs_f64() * 1000.0,
        listed.stdout.len() / 1024
    );
    let t0 = Instant::now();
    let reconcile = fresh.reconcile(&desired).expect("reconcile");
    println!(
        "reconcile of the unchanged table (list + parse + diff): {:.0} ms, {} commands",
        t0.elapsed().as_secs_f64() * 1000.0,
        reconcile.commands
    );
    let json_file = format!("/tmp/fjt-nftif-{}.json", std::process::id());
    std::fs::write(&json_file, &listed.stdout).expect("write JSON");
    nft.apply("delete table inet fjord\n", 1).expect("clean");
    let t0 = Instant::now();
    let out = Command::new("nft")
        .args(["-j", "-f", &json_file])
        .output()
        .expect("nft -j -f");
    let json_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let _ = std::fs::remove_file(&json_file);
    println!(
        "same table loaded as JSON (nft -j -f, the nftables crate's path): {json_ms:.0} ms ({})",
        if out.status.success() {
            "ok".to_string()
        } else {
            String::from_utf8_lossy(&out.stderr).into_owned()
        }
    );
    println!(
        "peak RSS of any nft process: {} KiB",
        children_max_rss_kib()
    );
    println!("load after: {}", load());
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
