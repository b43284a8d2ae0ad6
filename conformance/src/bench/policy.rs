//! `fjord-bench policy [--runs N] [--seconds S]`: the per-packet cost of policy. Two
//! pods on one node (wired as the plugin wires them); the node holds 0, 100, 1,000 and
//! 10,000 policy rules that select *other* pods, and the pair's TCP throughput (iperf3,
//! one stream) and RTT (ping) are measured for
//!
//! - `fjord`: table `inet fjord` from fjord-policy (the server pod is isolated and
//!   allows the client; the other rules belong to other pods' chains behind the verdict
//!   map), and
//! - `linear`: a hand-made iptables chain of the classic approach, one rule per peer
//!   and port (`-s PEER -d POD -p tcp --dport P -j ACCEPT`) in FORWARD, as kube-router
//!   and Calico's iptables mode grow. The model has no conntrack shortcut in front, so
//!   every packet walks the chain: that is what the first packet of every connection
//!   pays in those systems, and every packet where the shortcut sits after the list.
//!
//! Both are measured at every size in the same run, alternating; medians over the runs.

use anyhow::{bail, ensure, Context, Result};
use fjord_conformance::lab::spawn_in_netns;
use fjord_conformance::Netns;
use fjord_policy::model::{NamespaceInfo, ObjectKey, PodInfo};
use fjord_policy::nat::NatConfig;
use fjord_policy::nft::{Nft, PolicyTable};
use fjord_policy::ruleset::desired_table;
use fjord_policy::translate::{ClusterView, LocalPod};
use serde_json::Value;
use std::io::Write;
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const USAGE: &str = "usage: fjord-bench policy [--runs N] [--seconds S]";
const SIZES: [usize; 4] = [0, 100, 1_000, 10_000];
const IPERF_PORT: &str = "5301";
const CLIENT: &str = "10.244.0.11";
const SERVER: &str = "10.244.0.12";
/// Fjord's targets at 10,000 rules against its own 0.
const THROUGHPUT_TARGET: f64 = 0.95;
const RTT_TARGET: f64 = 1.05;

pub fn main(mut args: impl Iterator<Item = String>) -> Result<()> {
    let (mut runs, mut seconds) = (3usize, 3u32);
    while let Some(arg) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{arg} needs a number\n{USAGE}"))?;
        match arg.as_str() {
            "--runs" => runs = value.parse::<usize>().context("--runs")?.max(1),
            "--seconds" => seconds = value.parse::<u32>().context("--seconds")?.max(1),
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    ensure!(
        nix::unistd::geteuid().is_root(),
        "fjord-bench policy creates namespaces: run it as root"
    );
    for tool in ["iperf3", "ping", "nft", "iptables-restore"] {
        ensure!(
            Command::new("sh").args(["-c", &format!("command -v {tool}")]).output()?.status.success(),
            "{tool} is missing: run conformance/scripts/install-routing-deps.sh and install-test-deps.sh"
        );
    }
    println!("load before: {}", load());
    let node = Netns::new("bn");
    node.run("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
    let client = pod(&node, CLIENT, "fj0000000000b");
    let server = pod(&node, SERVER, "fj0000000000c");
    let mut iperf = Command::new("iperf3");
    iperf
        .args(["-s", "-p", IPERF_PORT])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _server = Killed(spawn_in_netns(&server, &mut iperf));
    std::thread::sleep(Duration::from_millis(300));
    // [model][size] -> samples
    let mut gbits = vec![vec![Vec::new(); SIZES.len()]; 2];
    let mut rtt = vec![vec![Vec::new(); SIZES.len()]; 2];
    for run in 1..=runs {
        for (s, &size) in SIZES.iter().enumerate() {
            for model in [0, 1] {
                let model = if run % 2 == 0 { 1 - model } else { model };
                clear(&node)?;
                let rules = if model == 0 {
                    fjord(&node, size)?
                } else {
                    linear(&node, size)?
                };
                let target: IpAddr = SERVER.parse()?;
                gbits[model][s].push(throughput(&client, target, seconds)?);
                rtt[model][s].push(ping(&client, target)?);
                println!(
                    "run {run}/{runs} {:<6} {size:>6} policy rules ({rules} in the kernel): {:.2} Gbit/s, {:.3} ms",
                    ["fjord", "linear"][model],
                    gbits[model][s].last().expect("measured"),
                    rtt[model][s].last().expect("measured")
                );
            }
        }
    }
    clear(&node)?;
    report(&gbits, &rtt, runs, seconds);
    drop(client);
    drop(server);
    Ok(())
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A pod on `node` as the plugin wires one: veth `interface` <-> eth0, /32 route, the
/// pinned 169.254.1.1 gateway.
fn pod(node: &Netns, address: &str, interface: &str) -> Netns {
    let ns = Netns::new("bp");
    node.ip(&[
        "link",
        "add",
        interface,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        ns.name(),
    ]);
    node.ip(&["link", "set", interface, "up"]);
    node.ip(&[
        "route",
        "add",
        &format!("{address}/32"),
        "dev",
        interface,
        "scope",
        "link",
    ]);
    let mac = node.expect_link(interface).mac;
    ns.ip(&["addr", "add", &format!("{address}/32"), "dev", "eth0"]);
    ns.ip(&["link", "set", "eth0", "up"]);
    ns.ip(&[
        "route",
        "add",
        "169.254.1.1",
        "dev",
        "eth0",
        "scope",
        "link",
    ]);
    ns.ip(&[
        "route",
        "add",
        "default",
        "via",
        "169.254.1.1",
        "dev",
        "eth0",
    ]);
    ns.ip(&[
        "neigh",
        "replace",
        "169.254.1.1",
        "lladdr",
        &mac,
        "dev",
        "eth0",
        "nud",
        "permanent",
    ]);
    ns
}

/// Removes both models' state from the node (only what this benchmark made there).
fn clear(node: &Netns) -> Result<()> {
    node.run("nft", &["delete", "table", "inet", "fjord"]);
    node.run("nft", &["delete", "table", "ip", "filter"]);
    Ok(())
}

fn other_pod(i: usize) -> (String, IpAddr) {
    let n = i as u32;
    (
        format!("fj{:011x}", 0x100 + n),
        IpAddr::from((0x0af5_0000u32 + n).to_be_bytes()),
    )
}

/// Fjord's table: the server isolated and allowing the client; `size` more rules in the
/// chains of other (absent) pods, one policy each: own address, peers on a port, drop.
fn fjord(node: &Netns, size: usize) -> Result<usize> {
    let mut view = ClusterView::new();
    view.upsert_namespace(NamespaceInfo::new("bench", Default::default()));
    let mut local = Vec::new();
    let mut add = |view: &mut ClusterView, name: String, ip: IpAddr, interface: String| {
        view.upsert_pod(PodInfo {
            key: ObjectKey::new("bench", name.as_str()),
            labels: [("app".to_string(), name.clone())].into(),
            ips: vec![ip],
            named_ports: vec![],
            host_network: false,
            terminal: false,
        });
        local.push(LocalPod {
            key: ObjectKey::new("bench", name),
            interface,
            ips: vec![ip],
        });
    };
    add(
        &mut view,
        "client".into(),
        CLIENT.parse()?,
        "fj0000000000b".into(),
    );
    add(
        &mut view,
        "server".into(),
        SERVER.parse()?,
        "fj0000000000c".into(),
    );
    let policy =
        |name: &str, spec: Value| -> Result<k8s_openapi::api::networking::v1::NetworkPolicy> {
            Ok(serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "bench", "name": name}, "spec": spec}))?)
        };
    view.upsert_policy(&policy(
        "server",
        serde_json::json!({
        "podSelector": {"matchLabels": {"app": "server"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}]}),
    )?)
    .map_err(anyhow::Error::from)?;
    for i in 0..size.div_ceil(3) {
        let (interface, ip) = other_pod(i);
        let name = format!("other{i}");
        add(&mut view, name.clone(), ip, interface);
        view.upsert_policy(&policy(&name, serde_json::json!({
            "podSelector": {"matchLabels": {"app": name}},
            "ingress": [{"from": [{"ipBlock": {"cidr": format!("10.200.{}.{}/32", i / 256, i % 256)}}],
                         "ports": [{"port": 80}]}]}))?)
            .map_err(anyhow::Error::from)?;
    }
    let table = desired_table(Some(&view.desired(&local)), &NatConfig::disabled());
    let nft = Nft::with_command(["ip", "netns", "exec", node.name(), "nft"]);
    PolicyTable::new(nft)
        .sync(&table)
        .map_err(anyhow::Error::from)?;
    Ok(table.rule_count())
}

/// The classic model: `size` non-matching rules, then the client's ACCEPT, in FORWARD.
fn linear(node: &Netns, size: usize) -> Result<usize> {
    let mut text = String::from(
        "*filter\n:FORWARD ACCEPT [0:0]\n:FJ-LINEAR - [0:0]\n-A FORWARD -j FJ-LINEAR\n",
    );
    for i in 0..size {
        let (_, ip) = other_pod(i);
        text.push_str(&format!(
            "-A FJ-LINEAR -s 10.200.{}.{}/32 -d {ip}/32 -p tcp -m tcp --dport 80 -j ACCEPT\n",
            i / 256,
            i % 256
        ));
    }
    text.push_str(&format!(
        "-A FJ-LINEAR -s {CLIENT}/32 -d {SERVER}/32 -j ACCEPT\n"
    ));
    text.push_str(&format!(
        "-A FJ-LINEAR -s {SERVER}/32 -d {CLIENT}/32 -j ACCEPT\n-A FJ-LINEAR -j DROP\nCOMMIT\n"
    ));
    let mut child = Command::new("ip")
        .args(["netns", "exec", node.name(), "iptables-restore"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "iptables-restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(size + 3)
}

fn throughput(from: &Netns, to: IpAddr, seconds: u32) -> Result<f64> {
    let (t, target) = (seconds.to_string(), to.to_string());
    let mut last = String::new();
    for _ in 0..5 {
        let out = from.run(
            "timeout",
            &[
                "30", "iperf3", "-c", &target, "-p", IPERF_PORT, "-t", &t, "-J",
            ],
        );
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if let Some(bps) = report["end"]["sum_received"]["bits_per_second"].as_f64() {
            return Ok(bps / 1e9);
        }
        last = report["error"].to_string();
        std::thread::sleep(Duration::from_millis(300));
    }
    bail!("iperf3 {} -> {target}: {last}", from.name())
}

fn ping(from: &Netns, to: IpAddr) -> Result<f64> {
    let out = from.run(
        "ping",
        &["-n", "-q", "-c", "200", "-i", "0.005", &to.to_string()],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.contains("min/avg/max"))
        .and_then(|l| l.split('=').nth(1))
        .and_then(|v| v.trim().split('/').nth(1))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("ping {} -> {to}: {text}", from.name()))
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn report(gbits: &[Vec<Vec<f64>>], rtt: &[Vec<Vec<f64>>], runs: usize, seconds: u32) {
    println!("\n{runs} runs, iperf3 -t {seconds} one stream, ping -c 200 -i 0.005; medians");
    println!("| rules | fjord Gbit/s | fjord RTT ms | fjord vs 0 (tput, RTT) | linear Gbit/s | linear RTT ms | linear vs 0 (tput, RTT) |");
    println!("|---|---|---|---|---|---|---|");
    let m = |v: &Vec<Vec<f64>>, s: usize| median(&v[s]);
    for (s, size) in SIZES.iter().enumerate() {
        let (fg, fr, lg, lr) = (
            m(&gbits[0], s),
            m(&rtt[0], s),
            m(&gbits[1], s),
            m(&rtt[1], s),
        );
        println!(
            "| {size} | {fg:.2} | {fr:.3} | {:.2}x, {:.2}x | {lg:.2} | {lr:.3} | {:.2}x, {:.2}x |",
            fg / m(&gbits[0], 0),
            fr / m(&rtt[0], 0),
            lg / m(&gbits[1], 0),
            lr / m(&rtt[1], 0)
        );
    }
    let last = SIZES.len() - 1;
    let t = m(&gbits[0], last) / m(&gbits[0], 0);
    let r = m(&rtt[0], last) / m(&rtt[0], 0);
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "fjord at 10,000 rules: throughput {t:.2}x its 0 (target >= {THROUGHPUT_TARGET}: {}), RTT {r:.2}x (target <= {RTT_TARGET}: {})",
        verdict(t >= THROUGHPUT_TARGET),
        verdict(r <= RTT_TARGET)
    );
    println!("load after: {}", load());
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
