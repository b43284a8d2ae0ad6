//! `fjord-bench bgp [--routes 10000,100000] [--rounds N]`: injects N distinct /26
//! prefixes over one iBGP session into fjord-routed and, alternating in the same run
//! with the same injector, into BIRD 2 with kernel export, and times how long each
//! takes to get every route into its kernel, against the kernel floor (one `ip -batch`
//! of N route adds). Every measurement gets fresh namespaces.
//!
//! t0 is the instant the injector hands the first UPDATE to its socket: the one clock
//! both receivers share (their own logs differ in what and when they log), and the
//! first route reaches the receiver's socket a veth hop (microseconds) later. t1 is the
//! arrival of the kernel's notification for the Nth route of the receiver's protocol
//! ([`watch`]). Peak RSS is the receiver's VmHWM once all routes are in.
//! Build first: `cargo build --release -p fjord-routed`.

mod injector;
mod receivers;
mod watch;

use anyhow::{bail, ensure, Context, Result};
use injector::{Injection, Session};
use receivers::{Kind, Pair, Receiver, INJECTOR_ADDRESS, PROTO_FJORD, RECEIVER_ADDRESS};
use std::time::{Duration, Instant};
use watch::RouteWatch;

const USAGE: &str = "usage: fjord-bench bgp [--routes 10000,100000] [--rounds N]";
const DEFAULT_SIZES: [usize; 2] = [10_000, 100_000];
const DEFAULT_ROUNDS: usize = 3;
/// Issue 3's targets: fjord faster than BIRD, at no more peak memory than BIRD, and
/// within this factor of the kernel floor.
const FLOOR_RATIO_TARGET: f64 = 1.2;
/// How long a receiver gets from its start to an Established session.
const ESTABLISH_WITHIN: Duration = Duration::from_secs(20);

struct Args {
    sizes: Vec<usize>,
    rounds: usize,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args> {
    let mut parsed = Args {
        sizes: DEFAULT_SIZES.to_vec(),
        rounds: DEFAULT_ROUNDS,
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--routes" => {
                let list = args
                    .next()
                    .context("--routes needs a list, e.g. 10000,100000")?;
                parsed.sizes = list
                    .split(',')
                    .map(|n| n.trim().parse().with_context(|| format!("--routes {list}")))
                    .collect::<Result<_>>()?;
                ensure!(!parsed.sizes.is_empty(), "--routes needs at least one size");
            }
            "--rounds" => {
                let n = args.next().context("--rounds needs a number")?;
                parsed.rounds = n.parse().with_context(|| format!("--rounds {n}"))?;
                ensure!(parsed.rounds > 0, "--rounds must be at least 1");
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok(parsed)
}

/// Runs the benchmark; `args` are those after `bgp`.
pub fn main(args: impl Iterator<Item = String>) -> Result<()> {
    let args = parse_args(args)?;
    ensure!(
        nix::unistd::geteuid().is_root(),
        "fjord-bench bgp creates network namespaces: run it as root"
    );
    receivers::fjord_routed_binary()?;
    println!("bird         {}", receivers::bird_binary().display());
    println!(
        "fjord-routed {}",
        receivers::fjord_routed_binary()?.display()
    );
    let load_before = load_average();
    let mut sizes = Vec::new();
    for &n in &args.sizes {
        sizes.push(bench_size(n, args.rounds)?);
    }
    let load_after = load_average();
    print_table(&sizes, args.rounds);
    println!("load average before: {load_before}; after: {load_after}");
    let incomplete: Vec<String> = sizes
        .iter()
        .flat_map(|s| s.incomplete.iter().cloned())
        .collect();
    ensure!(
        incomplete.is_empty(),
        "some receivers never got all routes:\n{}",
        incomplete.join("\n")
    );
    Ok(())
}

/// The samples of one size.
struct SizeResult {
    routes: usize,
    floor: Vec<Duration>,
    fjord: Samples,
    bird: Samples,
    incomplete: Vec<String>,
}

#[derive(Default)]
struct Samples {
    seconds: Vec<Duration>,
    rss_kib: Vec<u64>,
}

fn bench_size(n: usize, rounds: usize) -> Result<SizeResult> {
    let injection = Injection::prepare(n, INJECTOR_ADDRESS)?;
    println!(
        "\n{n} routes: {} UPDATEs, {} bytes, encoded before the clock starts",
        injection.messages,
        injection.bytes()
    );
    let mut result = SizeResult {
        routes: n,
        floor: Vec::new(),
        fjord: Samples::default(),
        bird: Samples::default(),
        incomplete: Vec::new(),
    };
    for round in 0..rounds {
        let floor = measure_floor(n)?;
        result.floor.push(floor);
        let order = if round % 2 == 0 {
            [Kind::Fjord, Kind::Bird]
        } else {
            [Kind::Bird, Kind::Fjord]
        };
        let mut line = format!("round {}: floor {:.3} s", round + 1, floor.as_secs_f64());
        for kind in order {
            let samples = match kind {
                Kind::Fjord => &mut result.fjord,
                Kind::Bird => &mut result.bird,
            };
            match measure_receiver(kind, &injection)? {
                Outcome::Complete { took, rss_kib } => {
                    samples.seconds.push(took);
                    samples.rss_kib.push(rss_kib);
                    line += &format!(
                        ", {} {:.3} s {:.1} MiB",
                        kind.label(),
                        took.as_secs_f64(),
                        mib(rss_kib)
                    );
                }
                Outcome::Incomplete(why) => {
                    line += &format!(", {} INCOMPLETE", kind.label());
                    result
                        .incomplete
                        .push(format!("{n} routes, {}: {why}", kind.label()));
                }
            }
        }
        println!("{line}");
    }
    Ok(result)
}

fn watch_timeout(n: usize) -> Duration {
    Duration::from_secs(30) + Duration::from_micros(500) * n as u32
}

fn measure_floor(n: usize) -> Result<Duration> {
    let pair = Pair::new();
    let watch = RouteWatch::start(&pair.receiver.path(), PROTO_FJORD, n)?;
    let took = receivers::kernel_floor(&pair, n)?;
    let seen = watch.finish(Duration::from_secs(5))?;
    ensure!(
        seen.added == n,
        "ip -batch added {} of {n} routes",
        seen.added
    );
    watch::verify_table(pair.receiver.name(), PROTO_FJORD, n, INJECTOR_ADDRESS)?;
    Ok(took)
}

enum Outcome {
    Complete { took: Duration, rss_kib: u64 },
    Incomplete(String),
}

fn measure_receiver(kind: Kind, injection: &Injection) -> Result<Outcome> {
    let n = injection.routes;
    let pair = Pair::new();
    let mut receiver = Receiver::start(kind, &pair)?;
    let mut session = Session::establish(
        &pair.injector.path(),
        INJECTOR_ADDRESS,
        RECEIVER_ADDRESS,
        ESTABLISH_WITHIN,
    )
    .with_context(|| format!("{}'s log:\n{}", kind.label(), receiver.log_tail()))?;
    let watch = RouteWatch::start(&pair.receiver.path(), kind.protocol(), n)?;
    let t0 = session.inject(injection)?;
    let seen = watch.finish(watch_timeout(n))?;
    let finished = Instant::now();
    if let Err(e) = receiver.check_running() {
        return Ok(Outcome::Incomplete(format!("{e:#}")));
    }
    let rss_kib = receiver.peak_rss_kib()?;
    if let Some(notification) = session.notification() {
        return Ok(Outcome::Incomplete(format!(
            "it sent a NOTIFICATION: {}\n{}",
            notification.error(),
            receiver.log_tail()
        )));
    }
    let Some(t1) = seen.all else {
        return Ok(Outcome::Incomplete(format!(
            "{} of {n} routes in the kernel after {:.1} s\n{}",
            seen.added,
            (finished - t0).as_secs_f64(),
            receiver.log_tail()
        )));
    };
    watch::verify_table(pair.receiver.name(), kind.protocol(), n, INJECTOR_ADDRESS)
        .with_context(|| format!("{}'s kernel table", kind.label()))?;
    Ok(Outcome::Complete {
        took: t1.saturating_duration_since(t0),
        rss_kib,
    })
}

fn median<T: Copy + Ord>(samples: &[T]) -> Option<T> {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// The medians of one size, and whether fjord met each target.
struct Medians {
    floor: f64,
    fjord: f64,
    bird: f64,
    fjord_rss: f64,
    bird_rss: f64,
}

impl Medians {
    fn of(s: &SizeResult) -> Option<Medians> {
        let secs = |v: &[Duration]| median(v).map(|d| d.as_secs_f64());
        Some(Medians {
            floor: secs(&s.floor)?,
            fjord: secs(&s.fjord.seconds)?,
            bird: secs(&s.bird.seconds)?,
            fjord_rss: mib(median(&s.fjord.rss_kib)?),
            bird_rss: mib(median(&s.bird.rss_kib)?),
        })
    }

    fn verdicts(&self) -> [(&'static str, bool); 3] {
        [
            ("faster than BIRD", self.fjord < self.bird),
            (
                "within 1.2x of the floor",
                self.fjord <= self.floor * FLOOR_RATIO_TARGET,
            ),
            ("peak RSS <= BIRD's", self.fjord_rss <= self.bird_rss),
        ]
    }
}

fn print_table(sizes: &[SizeResult], rounds: usize) {
    println!(
        "\nBGP route injection, medians of {rounds} rounds: seconds from the first UPDATE \
         written until the receiver's kernel holds every route; peak RSS (VmHWM) of the receiver"
    );
    println!(
        "{:>8} {:>8} {:>8} {:>8} {:>11} {:>12} {:>10} {:>10} {:>9}",
        "routes",
        "floor s",
        "fjord s",
        "bird s",
        "fjord/bird",
        "fjord/floor",
        "fjord MiB",
        "bird MiB",
        "RSS f/b"
    );
    for s in sizes {
        let Some(m) = Medians::of(s) else {
            println!("{:>8} (a receiver never completed)", s.routes);
            continue;
        };
        println!(
            "{:>8} {:>8.3} {:>8.3} {:>8.3} {:>11.2} {:>12.2} {:>10.1} {:>10.1} {:>9.2}",
            s.routes,
            m.floor,
            m.fjord,
            m.bird,
            m.fjord / m.bird,
            m.fjord / m.floor,
            m.fjord_rss,
            m.bird_rss,
            m.fjord_rss / m.bird_rss
        );
    }
    for s in sizes {
        if let Some(m) = Medians::of(s) {
            let verdicts: Vec<String> = m
                .verdicts()
                .iter()
                .map(|(what, met)| format!("{what}: {}", if *met { "met" } else { "MISSED" }))
                .collect();
            println!("{} routes: {}", s.routes, verdicts.join("; "));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Args> {
        parse_args(list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn arguments_default_and_parse() {
        let a = args(&[]).unwrap();
        assert_eq!((a.sizes, a.rounds), (vec![10_000, 100_000], 3));
        let a = args(&["--routes", "500,2000", "--rounds", "5"]).unwrap();
        assert_eq!((a.sizes, a.rounds), (vec![500, 2000], 5));
        assert!(args(&["--rounds", "0"]).is_err());
        assert!(args(&["--routes", "ten"]).is_err());
        assert!(args(&["--pods", "3"]).is_err());
    }

    #[test]
    fn verdicts_compare_the_medians() {
        let m = Medians {
            floor: 1.8,
            fjord: 2.0,
            bird: 2.8,
            fjord_rss: 10.0,
            bird_rss: 12.0,
        };
        assert!(m.verdicts().iter().all(|(_, met)| *met));
        let slow = Medians { fjord: 2.3, ..m };
        let v = slow.verdicts();
        assert!(v[0].1 && !v[1].1 && v[2].1);
    }

    #[test]
    fn median_takes_the_middle_sample() {
        assert_eq!(median(&[3, 1, 2]), Some(2));
        assert_eq!(median::<u64>(&[]), None);
    }
}
