//! `fjord-bench datapath [--runs N] [--seconds S]`: pod-to-pod TCP throughput (iperf3,
//! one stream) and round-trip time across two lab nodes on one underlay segment, five
//! paths measured in the same run on the same underlay:
//!
//! - `underlay`: node to node over the underlay (bare, no pods);
//! - `hand routed`: pods wired by hand as the notes' T1 (veth, /32 route, pinned gateway
//!   neighbour, `via` route to the other node's block): the ceiling for native;
//! - `fjord native`: pods attached by the real `fjord` plugin, routes by the real
//!   `fjord-routed --encapsulation never`;
//! - `hand VXLAN`: pods wired by hand, Flannel style (`flannel.1`, VNI 1, port 8472,
//!   nolearning, MTU 1450, static FDB + permanent neighbour + onlink route, block .0 as
//!   the VTEP address), built by this benchmark;
//! - `fjord VXLAN`: real plugin pods (MTU 1450), `fjord-routed --encapsulation always`.
//!
//! Each run restarts the daemons in `never`, measures underlay, hand routed and fjord
//! native in turn, restarts them in `always`, measures underlay, hand VXLAN and fjord
//! VXLAN: the pairs compared are measured seconds apart. Medians over the runs.
//!
//! The data path is the kernel's; the daemon only programs it, so the debug build is
//! fine (and unwinds, so every namespace is removed should something fail).

use anyhow::{bail, ensure, Context, Result};
use fjord_conformance::lab::{spawn_in_netns, Lab, LabSpec, RoutedProcess, UPLINK};
use fjord_conformance::{poll_until, unique_ifname, Netns};
use serde_json::Value;
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const USAGE: &str = "usage: fjord-bench datapath [--runs N] [--seconds S]";
const TARGET: f64 = 0.95;
const IPERF_PORT: &str = "5301";
const FLANNEL_DEVICE: &str = "flannel.1";

struct Args {
    runs: usize,
    seconds: u32,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args> {
    let mut parsed = Args {
        runs: 5,
        seconds: 4,
    };
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> Result<usize> {
            let n = args
                .next()
                .with_context(|| format!("{name} needs a number"))?;
            n.parse().with_context(|| format!("{name} {n}"))
        };
        match arg.as_str() {
            "--runs" => parsed.runs = number("--runs")?.max(1),
            "--seconds" => parsed.seconds = number("--seconds")?.max(1) as u32,
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok(parsed)
}

/// The paths, in the order they are printed.
const PATHS: [&str; 5] = [
    "underlay",
    "hand routed",
    "fjord native",
    "hand VXLAN",
    "fjord VXLAN",
];

#[derive(Default)]
struct Samples {
    gbits: [Vec<f64>; 5],
    rtt_ms: [Vec<f64>; 5],
    /// Per run, from measurements seconds apart: native / underlay, native / hand
    /// routed, fjord VXLAN / hand VXLAN.
    ratios: [Vec<f64>; 3],
}

/// Measures the three paths of one phase, in turn, the order reversed every other run
/// so neither side always goes first; returns this run's Gbit/s by path index.
fn phase(
    samples: &mut Samples,
    paths: &[(usize, &Netns, IpAddr); 3],
    run: usize,
    seconds: u32,
) -> Result<[f64; 5]> {
    let mut round = [f64::NAN; 5];
    let mut order: Vec<&(usize, &Netns, IpAddr)> = paths.iter().collect();
    if run.is_multiple_of(2) {
        order.reverse();
    }
    for (path, from, to) in order {
        measure(samples, *path, from, *to, seconds)?;
        round[*path] = *samples.gbits[*path].last().expect("just measured");
    }
    Ok(round)
}

pub fn main(args: impl Iterator<Item = String>) -> Result<()> {
    let args = parse(args)?;
    ensure!(
        nix::unistd::geteuid().is_root(),
        "fjord-bench datapath creates network namespaces: run it as root"
    );
    for tool in ["iperf3", "ping", "bridge"] {
        ensure!(
            Command::new(tool).arg("-V").output().is_ok(),
            "{tool} is missing: run conformance/scripts/install-routing-deps.sh"
        );
    }
    println!("load before: {}", uptime());
    let lab = Lab::new(LabSpec::nodes(2));
    let hand = HandPods::build(&lab)?;
    let mut daemons = start(&lab, "never")?;
    let native = [lab.add_pod(0), lab.add_pod(1)];
    drop(daemons);
    daemons = start(&lab, "always")?;
    let vxlan = [lab.add_pod(0), lab.add_pod(1)];
    let mut servers = Vec::new();
    for ns in [
        lab.node(1).netns(),
        hand.routed[1].netns(),
        hand.vxlan[1].netns(),
    ] {
        servers.push(IperfServer::start(ns)?);
    }
    for pod in [&native[1], &vxlan[1]] {
        servers.push(IperfServer::start(pod.netns())?);
    }
    let mut samples = Samples::default();
    let underlay = IpAddr::V4(lab.node(1).address_v4());
    let never: [(usize, &Netns, IpAddr); 3] = [
        (0, lab.node(0).netns(), underlay),
        (1, hand.routed[0].netns(), hand.routed_target()),
        (2, native[0].netns(), native[1].ipv4),
    ];
    let always: [(usize, &Netns, IpAddr); 3] = [
        (0, lab.node(0).netns(), underlay),
        (3, hand.vxlan[0].netns(), hand.vxlan_target()),
        (4, vxlan[0].netns(), vxlan[1].ipv4),
    ];
    for run in 1..=args.runs {
        drop(daemons);
        daemons = start(&lab, "never")?;
        wait_reachable(native[0].netns(), native[1].ipv4)?;
        let round = phase(&mut samples, &never, run, args.seconds)?;
        samples.ratios[0].push(round[2] / round[0]);
        samples.ratios[1].push(round[2] / round[1]);
        drop(daemons);
        daemons = start(&lab, "always")?;
        wait_reachable(vxlan[0].netns(), vxlan[1].ipv4)?;
        let round = phase(&mut samples, &always, run, args.seconds)?;
        samples.ratios[2].push(round[4] / round[3]);
        println!("run {run}/{} done; load {}", args.runs, uptime());
    }
    drop(servers);
    drop(daemons);
    report(&samples, &args);
    Ok(())
}

fn start(lab: &Lab, mode: &str) -> Result<Vec<RoutedProcess>> {
    let daemons: Vec<RoutedProcess> = (0..2)
        .map(|i| lab.start_routed(i, &["--encapsulation", mode]))
        .collect();
    for i in 0..2 {
        lab.wait_established(i, &lab.mesh_peers_of(i), Duration::from_secs(30));
        let want = if mode == "never" { 1500 } else { 1450 };
        let file = lab.mtu_file(i);
        poll_until(Duration::from_secs(10), "the MTU file is written", || {
            std::fs::read_to_string(&file).is_ok_and(|t| t.trim() == want.to_string())
        });
    }
    Ok(daemons)
}

/// Waits until the routes of the new mode carry a ping.
fn wait_reachable(from: &Netns, to: IpAddr) -> Result<()> {
    for _ in 0..100 {
        if from.ping(to, 1) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{to} unreachable from {} after the restart", from.name())
}

fn measure(
    samples: &mut Samples,
    path: usize,
    from: &Netns,
    to: IpAddr,
    seconds: u32,
) -> Result<()> {
    samples.gbits[path].push(throughput(from, to, seconds)?);
    samples.rtt_ms[path].push(rtt(from, to)?);
    Ok(())
}

fn throughput(from: &Netns, to: IpAddr, seconds: u32) -> Result<f64> {
    let target = to.to_string();
    let t = seconds.to_string();
    let limit = (seconds + 15).to_string();
    let args = [
        limit.as_str(),
        "iperf3",
        "-c",
        &target,
        "-p",
        IPERF_PORT,
        "-t",
        &t,
        "-J",
    ];
    let mut last = String::new();
    for _ in 0..10 {
        let out = from.run("timeout", &args);
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if let Some(bps) = report["end"]["sum_received"]["bits_per_second"].as_f64() {
            return Ok(bps / 1e9);
        }
        last = report["error"].to_string();
        std::thread::sleep(Duration::from_millis(300));
    }
    bail!("iperf3 {} -> {target} failed: {last}", from.name())
}

fn rtt(from: &Netns, to: IpAddr) -> Result<f64> {
    let out = from.run(
        "ping",
        &["-n", "-q", "-c", "200", "-i", "0.005", &to.to_string()],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    // rtt min/avg/max/mdev = 0.021/0.035/0.090/0.010 ms
    let avg = text
        .lines()
        .find(|l| l.contains("min/avg/max"))
        .and_then(|l| l.split('=').nth(1))
        .and_then(|v| v.trim().split('/').nth(1))
        .and_then(|v| v.parse().ok());
    avg.with_context(|| format!("ping {} -> {to}: {text}", from.name()))
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

fn report(samples: &Samples, args: &Args) {
    println!(
        "\n{} runs, iperf3 -t {} one stream, ping -c 200 -i 0.005; medians (all runs)",
        args.runs, args.seconds
    );
    println!("| path | Gbit/s | RTT avg ms | runs (Gbit/s) |");
    println!("|---|---|---|---|");
    let m: Vec<f64> = samples.gbits.iter().map(|g| median(g)).collect();
    for (i, path) in PATHS.iter().enumerate() {
        let runs: Vec<String> = samples.gbits[i].iter().map(|g| format!("{g:.2}")).collect();
        println!(
            "| {path} | {:.2} | {:.3} | {} |",
            m[i],
            median(&samples.rtt_ms[i]),
            runs.join(" ")
        );
    }
    let verdict = |r: f64| if r >= TARGET { "met" } else { "NOT met" };
    let names = [
        "fjord native / underlay   ",
        "fjord native / hand routed",
        "fjord VXLAN / hand VXLAN  ",
    ];
    println!("\nratios, median of the per-run ratios (each from one run's adjacent measurements):");
    for (name, ratios) in names.iter().zip(&samples.ratios) {
        let r = median(ratios);
        let runs: Vec<String> = ratios.iter().map(|x| format!("{x:.2}")).collect();
        println!(
            "{name} = {r:.2} (target {TARGET}: {}) runs: {}",
            verdict(r),
            runs.join(" ")
        );
    }
    println!(
        "ratio of the medians: native/underlay {:.2}, native/hand routed {:.2}, VXLAN/hand VXLAN {:.2}",
        m[2] / m[0],
        m[2] / m[1],
        m[4] / m[3]
    );
    println!("load after: {}", uptime());
}

fn uptime() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// `iperf3 -s` in a namespace, killed on drop.
struct IperfServer(Child);

impl IperfServer {
    fn start(ns: &Netns) -> Result<IperfServer> {
        let mut cmd = Command::new("iperf3");
        cmd.args(["-s", "-p", IPERF_PORT])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        Ok(IperfServer(spawn_in_netns(ns, &mut cmd)))
    }
}

impl Drop for IperfServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A hand-wired pod: its namespace and address.
struct HandPod {
    netns: Netns,
}

impl HandPod {
    fn netns(&self) -> &Netns {
        &self.netns
    }
}

/// The hand-made paths: routed pods on 10.251.N.2 (blocks 10.251.N.0/26), VXLAN pods on
/// 10.252.N.2 (blocks 10.252.N.0/26, VTEP address 10.252.N.0), N = node number.
struct HandPods {
    routed: [HandPod; 2],
    vxlan: [HandPod; 2],
}

impl HandPods {
    fn routed_target(&self) -> IpAddr {
        "10.251.2.2".parse().expect("address")
    }

    fn vxlan_target(&self) -> IpAddr {
        "10.252.2.2".parse().expect("address")
    }

    fn build(lab: &Lab) -> Result<HandPods> {
        let routed = [
            hand_pod(lab, 0, "10.251.1.2", 1500),
            hand_pod(lab, 1, "10.251.2.2", 1500),
        ];
        let vxlan = [
            hand_pod(lab, 0, "10.252.1.2", 1450),
            hand_pod(lab, 1, "10.252.2.2", 1450),
        ];
        for (i, j) in [(0, 1), (1, 0)] {
            let node = lab.node(i).netns();
            let peer = lab.node(j).address_v4().to_string();
            let n = j + 1;
            node.ip(&["route", "add", &format!("10.251.{n}.0/26"), "via", &peer]);
        }
        for i in 0..2 {
            let node = lab.node(i).netns();
            let local = lab.node(i).address_v4().to_string();
            node.ip(&[
                "link",
                "add",
                FLANNEL_DEVICE,
                "type",
                "vxlan",
                "id",
                "1",
                "dstport",
                "8472",
                "nolearning",
                "dev",
                UPLINK,
                "local",
                &local,
            ]);
            let mac = format!("66:6b:00:00:00:0{}", i + 1);
            node.ip(&[
                "link",
                "set",
                FLANNEL_DEVICE,
                "address",
                &mac,
                "mtu",
                "1450",
                "up",
            ]);
        }
        for (i, j) in [(0, 1), (1, 0)] {
            let node = lab.node(i).netns();
            let n = j + 1;
            let mac = format!("66:6b:00:00:00:0{n}");
            let peer = lab.node(j).address_v4().to_string();
            let vtep = format!("10.252.{n}.0");
            let out = node.run(
                "bridge",
                &["fdb", "add", &mac, "dev", FLANNEL_DEVICE, "dst", &peer],
            );
            ensure!(
                out.status.success(),
                "bridge fdb add: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            node.ip(&[
                "neigh",
                "add",
                &vtep,
                "lladdr",
                &mac,
                "dev",
                FLANNEL_DEVICE,
                "nud",
                "permanent",
            ]);
            node.ip(&[
                "route",
                "add",
                &format!("10.252.{n}.0/26"),
                "via",
                &vtep,
                "dev",
                FLANNEL_DEVICE,
                "onlink",
            ]);
        }
        Ok(HandPods { routed, vxlan })
    }
}

/// A pod wired as the notes' T1: veth made in place, /32 route on the node, the gateway
/// 169.254.1.1 pinned by a permanent neighbour entry.
fn hand_pod(lab: &Lab, node: usize, address: &str, mtu: u32) -> HandPod {
    let node_ns = lab.node(node).netns();
    let netns = Netns::new("hp");
    let host = unique_ifname("h");
    let mtu = mtu.to_string();
    node_ns.ip(&[
        "link",
        "add",
        &host,
        "mtu",
        &mtu,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "mtu",
        &mtu,
        "netns",
        netns.name(),
    ]);
    node_ns.ip(&["link", "set", &host, "up"]);
    node_ns.ip(&[
        "route",
        "add",
        &format!("{address}/32"),
        "dev",
        &host,
        "scope",
        "link",
    ]);
    let host_mac = node_ns.expect_link(&host).mac;
    netns.ip(&["addr", "add", &format!("{address}/32"), "dev", "eth0"]);
    netns.ip(&["link", "set", "eth0", "up"]);
    netns.ip(&["link", "set", "lo", "up"]);
    netns.ip(&[
        "route",
        "add",
        "169.254.1.1",
        "dev",
        "eth0",
        "scope",
        "link",
    ]);
    netns.ip(&[
        "route",
        "add",
        "default",
        "via",
        "169.254.1.1",
        "dev",
        "eth0",
    ]);
    netns.ip(&[
        "neigh",
        "replace",
        "169.254.1.1",
        "lladdr",
        &host_mac,
        "dev",
        "eth0",
        "nud",
        "permanent",
    ]);
    HandPod { netns }
}
