//! Kernel programming speed against the kernel floor, measured once by hand (root):
//!
//! ```text
//! cargo run --release -p fjord-routed --example kernel_bench [-- ROUTES]
//! ```
//!
//! Per round, in fresh network namespaces: `ip -batch` of ROUTES `route add` lines (the
//! floor: one process, one request per route), then the same routes learned by a `Rib`
//! from one peer (UPDATEs of 500) and written by `Kernel::apply`, once as the whole table
//! and once with one `apply` per UPDATE. Prints each round, the medians of 3,
//! and peak RSS of `ip` and of this process (RIB + change list + apply included).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fjord_routed::kernel::{Kernel, RT_METRIC_FJORD, RT_PROTO_FJORD};
use fjord_routed::node::{NextHop, RouteOp};
use fjord_routed::rib::{Path, PeerKey, Rib, RibChange};
use ipnetwork::IpNetwork;

const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

struct Netns(String);

impl Netns {
    fn new(name: String) -> Netns {
        run(&["netns", "add", &name]);
        for args in [
            "link add u0 type veth peer name u1",
            "addr add 10.0.0.1/24 dev u0",
            "link set u1 up",
            "link set u0 up",
        ] {
            let mut all = vec!["-n", &name];
            all.extend(args.split_whitespace());
            run(&all);
        }
        Netns(name)
    }

    fn path(&self) -> String {
        format!("/run/netns/{}", self.0)
    }

    /// Fjord routes in the namespace, counted from a pipe: holding `ip`'s 6 MB of
    /// output would distort this process's peak RSS.
    fn count(&self) -> usize {
        let mut child = Command::new("ip")
            .args([
                "-n",
                &self.0,
                "route",
                "show",
                "proto",
                &RT_PROTO_FJORD.to_string(),
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("ip route show");
        let mut out = child.stdout.take().unwrap();
        let (mut lines, mut buf) = (0, [0u8; 8192]);
        loop {
            match out.read(&mut buf).expect("read ip output") {
                0 => break,
                n => lines += buf[..n].iter().filter(|&&b| b == b'\n').count(),
            }
        }
        assert!(child.wait().unwrap().success());
        lines
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn run(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("run ip");
    assert!(status.success(), "ip {args:?}");
}

/// The i-th /26 of 10.128.0.0/9 (room for 131,072 of them).
fn block(i: u32) -> IpNetwork {
    IpNetwork::new(IpAddr::from((0x0a80_0000 + i * 64).to_be_bytes()), 26).unwrap()
}

fn ip_batch(routes: u32, round: usize) -> Duration {
    let file = std::env::temp_dir().join(format!("fjord-bench-{}.batch", std::process::id()));
    let mut w = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
    for i in 0..routes {
        writeln!(
            w,
            "route add {} via {GATEWAY} proto {RT_PROTO_FJORD} metric {RT_METRIC_FJORD}",
            block(i)
        )
        .unwrap();
    }
    drop(w);
    let ns = Netns::new(format!("fjb-ip{round}-{}", std::process::id()));
    let start = Instant::now();
    run(&["-n", &ns.0, "-batch", file.to_str().unwrap()]);
    let took = start.elapsed();
    assert_eq!(ns.count(), routes as usize);
    std::fs::remove_file(file).unwrap();
    took
}

const PEER: PeerKey = PeerKey {
    address: IpAddr::V4(GATEWAY),
    router_id: GATEWAY,
};

/// Routes arrive as a BGP session delivers them: UPDATEs of 500 prefixes from one peer.
const PER_UPDATE: u32 = 500;

/// Feeds `rib` the UPDATE that starts at route `first`; returns its change list.
fn update(rib: &mut Rib, first: u32, routes: u32) -> Vec<RibChange> {
    let paths: Vec<Path> = (first..routes.min(first + PER_UPDATE))
        .map(|i| Path {
            prefix: block(i),
            next_hop: GATEWAY.into(),
            origin: 0,
            as_path_len: 0,
            local_pref: Some(100),
            med: None,
            neighbour_as: None,
            ebgp: false,
        })
        .collect();
    rib.update(PEER, &paths, &[])
}

/// The whole table in one `apply`, straight from the loaded RIB (no change list held).
async fn fjord_table(routes: u32, round: usize) -> Duration {
    let ns = Netns::new(format!("fjb-ft{round}-{}", std::process::id()));
    let kernel = Kernel::connect_in_netns(ns.path().as_ref()).unwrap();
    let mut rib = Rib::new();
    for first in (0..routes).step_by(PER_UPDATE as usize) {
        update(&mut rib, first, routes);
    }
    if round == 0 {
        println!("RSS with the RIB loaded: {} KiB", kib("VmRSS:"));
    }
    let ops = rib.installed().map(|(prefix, next_hop)| RouteOp::Replace {
        prefix,
        next_hop: NextHop::Via(next_hop),
    });
    let start = Instant::now();
    kernel.apply(ops).await.unwrap();
    let took = start.elapsed();
    assert_eq!(ns.count(), routes as usize);
    took
}

/// One `apply` per UPDATE, as the daemon can do while the session is still delivering:
/// the clock includes the RIB work, and the pipeline drains after every UPDATE.
async fn fjord_per_update(routes: u32, round: usize) -> Duration {
    let ns = Netns::new(format!("fjb-fu{round}-{}", std::process::id()));
    let kernel = Kernel::connect_in_netns(ns.path().as_ref()).unwrap();
    let mut rib = Rib::new();
    let start = Instant::now();
    for first in (0..routes).step_by(PER_UPDATE as usize) {
        let changes = update(&mut rib, first, routes);
        kernel
            .apply(changes.into_iter().map(RouteOp::from))
            .await
            .unwrap();
    }
    let took = start.elapsed();
    assert_eq!(ns.count(), routes as usize);
    took
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A `kB` field of /proc/self/status.
fn kib(status_field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(status_field))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or(0)
}

fn children_peak_rss_kib() -> i64 {
    // SAFETY: getrusage only writes into the struct we pass.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage.ru_maxrss
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let routes: u32 = std::env::args()
        .nth(1)
        .map_or(100_000, |s| s.parse().unwrap());
    let (mut floor, mut table, mut streamed) = (Vec::new(), Vec::new(), Vec::new());
    println!("RSS before any work: {} KiB", kib("VmRSS:"));
    for round in 0..3 {
        floor.push(ip_batch(routes, round));
        table.push(fjord_table(routes, round).await);
        streamed.push(fjord_per_update(routes, round).await);
        println!(
            "round {round}: ip -batch {:.3} s, apply(table) {:.3} s, apply per UPDATE {:.3} s",
            floor[round].as_secs_f64(),
            table[round].as_secs_f64(),
            streamed[round].as_secs_f64()
        );
    }
    let f = median(floor).as_secs_f64();
    let (t, u) = (median(table).as_secs_f64(), median(streamed).as_secs_f64());
    println!("{routes} routes, medians of 3:");
    println!("  ip -batch          {f:.3} s");
    println!("  apply(table)       {t:.3} s  {:.2}x the floor", t / f);
    println!("  apply per UPDATE   {u:.3} s  {:.2}x the floor", u / f);
    println!(
        "peak RSS: this process {} KiB, largest `ip` child {} KiB",
        kib("VmHWM:"),
        children_peak_rss_kib()
    );
}
