//! `fjord-bench cni [--pods N] [--reference-vs-reference]`: times CNI ADD and DEL of
//! `fjord` + `fjord-ipam` against the reference `ptp` + `host-local`, as a runtime sees
//! them (wall time from spawn to exit of the plugin process), alternating the two plugins
//! pod by pod so both meet the same machine noise.
//!
//! Each plugin runs inside its own throwaway node namespace (entered with setns between
//! fork and exec). Pod namespaces are made before the timer starts and removed after DEL
//! is timed, as runtimes do. Build first: `cargo build --release --workspace --bins`.

#[path = "../bench/bgp/mod.rs"]
mod bgp;

use anyhow::{bail, ensure, Context, Result};
use fjord_conformance::plugin::with_prev_result;
use fjord_conformance::{result_ips, Netns, PluginCall, PluginUnderTest, Pod};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use serde_json::Value;
use std::fs::File;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[path = "../bench/etcd_store.rs"]
mod etcd_store;

const USAGE: &str = "usage: fjord-bench cni [--pods N] [--reference-vs-reference | --store etcd]";
const DEFAULT_PODS: usize = 200;
/// The goal for fjord's median ADD and DEL, as a fraction of the reference's.
const TARGET_RATIO: f64 = 0.5;
const CNI_VERSION: &str = "1.0.0";

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

struct Args {
    pods: usize,
    /// Benchmarks the reference against itself: the spread this machine's noise alone gives.
    reference_vs_reference: bool,
    /// `--store etcd`: fjord on a `dir:` store against fjord on an `etcd:` store.
    etcd_store: bool,
}

fn parse_args() -> Result<Args> {
    let mut args = std::env::args().skip(1);
    ensure!(args.next().as_deref() == Some("cni"), "{USAGE}");
    let mut parsed = Args {
        pods: DEFAULT_PODS,
        reference_vs_reference: false,
        etcd_store: false,
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--pods" => {
                let n = args.next().context("--pods needs a number")?;
                parsed.pods = n.parse().with_context(|| format!("--pods {n}"))?;
                ensure!(parsed.pods > 0, "--pods must be at least 1");
            }
            "--reference-vs-reference" => parsed.reference_vs_reference = true,
            "--store" => {
                let store = args.next().context("--store needs a store kind")?;
                ensure!(
                    store == "etcd",
                    "--store {store}: only etcd is compared with dir"
                );
                parsed.etcd_store = true;
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok(parsed)
}

#[path = "../bench/datapath.rs"]
mod datapath;

#[path = "../bench/policy.rs"]
mod policy;

/// A benchmark other than `cni`, run with the process's arguments.
type Subcommand = fn(std::env::Args) -> Result<()>;

fn main() {
    // `fjord-bench datapath|bgp|policy|bfd ...`: their own modules (conformance/src/bench/,
    // conformance/src/bfd_bench.rs).
    let subcommand = std::env::args().nth(1);
    let other: Option<(&str, Subcommand)> = match subcommand.as_deref() {
        Some("datapath") => Some(("datapath", |args| datapath::main(args.skip(2)))),
        Some("bgp") => Some(("bgp", |args| bgp::main(args.skip(2)))),
        Some("policy") => Some(("policy", |args| policy::main(args.skip(2)))),
        Some("bfd") => Some(("bfd", |args| {
            fjord_conformance::bfd_bench::main(args.skip(2))
        })),
        _ => None,
    };
    if let Some((name, run)) = other {
        if let Err(e) = run(std::env::args()) {
            eprintln!("fjord-bench {name}: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    let result = parse_args().and_then(|args| {
        ensure!(
            nix::unistd::geteuid().is_root(),
            "fjord-bench creates network namespaces: run it as root"
        );
        catch_ctrl_c()?;
        if args.etcd_store {
            return etcd_store::run(args.pods);
        }
        run_cni_bench(&args)
    });
    // Every guard (namespaces, temp dirs) has dropped by now: errors are returned, not
    // panicked, because the release profile aborts on panic.
    if let Err(e) = result {
        eprintln!("fjord-bench: {e:#}");
        std::process::exit(1);
    }
}

/// Ctrl-C stops the run after the current plugin call; the guards then clean up.
fn catch_ctrl_c() -> Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(on_interrupt),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe { sigaction(Signal::SIGINT, &action) }.context("install the SIGINT handler")?;
    Ok(())
}

fn check_interrupted() -> Result<()> {
    ensure!(
        !INTERRUPTED.load(Ordering::SeqCst),
        "interrupted; cleaned up"
    );
    Ok(())
}

/// One plugin under benchmark and what was measured of it.
struct Contender {
    label: &'static str,
    put: PluginUnderTest,
    add: Vec<Duration>,
    del: Vec<Duration>,
    add_max_rss_kib: Vec<u64>,
}

impl Contender {
    fn new(label: &'static str, put: PluginUnderTest) -> Contender {
        Contender {
            label,
            put,
            add: Vec::new(),
            del: Vec::new(),
            add_max_rss_kib: Vec::new(),
        }
    }
}

fn run_cni_bench(args: &Args) -> Result<()> {
    let mut contenders = if args.reference_vs_reference {
        [
            Contender::new("reference A", PluginUnderTest::reference()),
            Contender::new("reference B", PluginUnderTest::reference()),
        ]
    } else {
        [
            Contender::new("fjord", PluginUnderTest::fjord()),
            Contender::new("reference", PluginUnderTest::reference()),
        ]
    };
    for c in &contenders {
        println!("{:<12} {}", c.label, c.put.binary().display());
    }
    println!("{} pods per plugin, alternating; timing ADD ...", args.pods);
    let mut attached: [Vec<(Pod, Value)>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..args.pods {
        for (c, pods) in contenders.iter_mut().zip(&mut attached) {
            check_interrupted()?;
            pods.push(time_add(c)?);
        }
    }
    println!("timing DEL ...");
    let mut detaching = attached.map(Vec::into_iter);
    for _ in 0..args.pods {
        for (c, pods) in contenders.iter_mut().zip(&mut detaching) {
            check_interrupted()?;
            let (pod, result) = pods.next().expect("one attached pod per DEL");
            time_del(c, pod, &result)?;
        }
    }
    for c in &contenders {
        let left = c.put.allocations();
        ensure!(left.is_empty(), "{} left allocations: {left:?}", c.label);
    }
    print_report(args.pods, &contenders);
    if !args.reference_vs_reference {
        print_verdict(&contenders);
    }
    Ok(())
}

/// ADDs a fresh pod (its namespace made before the timer starts); checks the result
/// holds an address.
fn time_add(c: &mut Contender) -> Result<(Pod, Value)> {
    let pod = Pod::new();
    let call = c.put.call("ADD", &pod, &c.put.config(CNI_VERSION));
    let run = run_timed(&call, c.put.node())?;
    check_interrupted()?; // Ctrl-C reaches the plugin too: its failure is not news.
    let result = run.expect_success(c.label)?;
    ensure!(
        !result_ips(&result).is_empty(),
        "{} ADD gave a result without an IP: {result}",
        c.label
    );
    c.add.push(run.wall);
    c.add_max_rss_kib.push(run.max_rss_kib);
    Ok((pod, result))
}

/// DELs `pod` with its prevResult while its namespace still exists, then removes the
/// namespace (not timed), as runtimes do.
fn time_del(c: &mut Contender, pod: Pod, prev_result: &Value) -> Result<()> {
    let conf = with_prev_result(c.put.config(CNI_VERSION), prev_result);
    let call = c.put.call("DEL", &pod, &conf);
    let run = run_timed(&call, c.put.node())?;
    check_interrupted()?;
    run.expect_success(c.label)?;
    c.del.push(run.wall);
    pod.netns.delete();
    Ok(())
}

/// A finished plugin process: how long it ran, its peak memory and its output.
struct TimedRun {
    wall: Duration,
    /// `ru_maxrss` from wait4: the largest resident set of the plugin or any child it
    /// waited for (ptp's host-local, for one).
    max_rss_kib: u64,
    exit_code: Option<i32>,
    stdout: String,
    stderr: String,
    description: String,
}

impl TimedRun {
    /// The result JSON (Null for an empty stdout), or an error with everything known.
    fn expect_success(&self, label: &str) -> Result<Value> {
        ensure!(
            self.exit_code == Some(0),
            "{label} failed (exit {:?})\ncall: {}\nstdout: {}\nstderr: {}",
            self.exit_code,
            self.description,
            self.stdout,
            self.stderr
        );
        if self.stdout.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&self.stdout)
            .with_context(|| format!("{label} printed a result that is not JSON: {}", self.stdout))
    }
}

/// Runs `call` inside `node`'s namespace, timing spawn to exit. The harness's
/// `PluginCall::spawn_in` reaps through std, which gives no rusage: this one reaps with
/// wait4 to read the child's peak memory.
fn run_timed(call: &PluginCall, node: &Netns) -> Result<TimedRun> {
    let ns = File::open(node.path()).with_context(|| format!("open {}", node.path_str()))?;
    let mut cmd = call.command_in(&ns);
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("spawn {}", call.binary.display()))?;
    // A plugin may exit before reading stdin: a broken pipe is its answer, not ours.
    let _ = child.stdin.take().expect("piped").write_all(&call.stdin);
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .expect("piped")
        .read_to_string(&mut stdout)?;
    child
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut stderr)?;
    let (exit_code, max_rss_kib) = wait4(child.id())?;
    Ok(TimedRun {
        wall: started.elapsed(),
        max_rss_kib,
        exit_code,
        stdout,
        stderr,
        description: format!("{} {:?}", call.binary.display(), call.env()),
    })
}

/// Reaps `pid`: its exit code (None when a signal killed it) and `ru_maxrss` in KiB.
fn wait4(pid: u32) -> Result<(Option<i32>, u64)> {
    let mut status = 0;
    // SAFETY: rusage is plain data; zero is a valid value for every field.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: pid is our own unreaped child; both pointers are valid for writes.
        let rc = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage) };
        if rc >= 0 {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err).context("wait4");
        }
    }
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    Ok((code, usage.ru_maxrss as u64))
}

/// Median, 99th percentile (nearest rank) and minimum of some samples.
struct Summary {
    median: Duration,
    p99: Duration,
    min: Duration,
}

fn summarize(samples: &[Duration]) -> Summary {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2
    };
    let p99_rank = ((n as f64) * 0.99).ceil() as usize;
    Summary {
        median,
        p99: sorted[p99_rank.max(1) - 1],
        min: sorted[0],
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn print_report(pods: usize, contenders: &[Contender; 2]) {
    let [a, b] = contenders;
    println!("\nCNI wall time per plugin process, {pods} pods each (ms)");
    println!(
        "{:<5} {:<12} {:>8} {:>8} {:>8}",
        "verb", "plugin", "median", "p99", "min"
    );
    for (verb, of_a, of_b) in [("ADD", &a.add, &b.add), ("DEL", &a.del, &b.del)] {
        let (sa, sb) = (summarize(of_a), summarize(of_b));
        for (c, s) in [(a, &sa), (b, &sb)] {
            let row = [s.median, s.p99, s.min].map(ms);
            println!(
                "{verb:<5} {:<12} {:>8.2} {:>8.2} {:>8.2}",
                c.label, row[0], row[1], row[2]
            );
        }
        let ratio = [(sa.median, sb.median), (sa.p99, sb.p99), (sa.min, sb.min)]
            .map(|(x, y)| ms(x) / ms(y));
        println!(
            "{verb:<5} {:<12} {:>8.2} {:>8.2} {:>8.2}",
            "ratio", ratio[0], ratio[1], ratio[2]
        );
    }
    println!("\npeak memory of one ADD (ru_maxrss, median over the ADDs)");
    for c in contenders {
        let mut rss = c.add_max_rss_kib.clone();
        rss.sort();
        println!("{:<12} {:>8} KiB", c.label, rss[rss.len() / 2]);
    }
}

/// Whether fjord's medians meet [`TARGET_RATIO`] of the reference's.
fn print_verdict(contenders: &[Contender; 2]) {
    let [a, b] = contenders;
    let median = |samples: &[Duration]| ms(summarize(samples).median);
    let ratios = [
        ("ADD", median(&a.add) / median(&b.add)),
        ("DEL", median(&a.del) / median(&b.del)),
    ];
    for (verb, ratio) in ratios {
        let verdict = if ratio <= TARGET_RATIO {
            "met"
        } else {
            "MISSED"
        };
        println!(
            "median {verb} {}/{} = {ratio:.2} (target <= {TARGET_RATIO}): {verdict}",
            a.label, b.label
        );
    }
}
