//! `fjord-lab up`: build the lab, start the daemons, attach the pods, wait for BGP and
//! routes, print the peer tables and the reachability matrix.

use crate::{etcd, show, teardown, Encapsulation, Place, Store, UpArgs};
use anyhow::{bail, Context, Result};
use fjord_conformance::fjord_bin_dir;
use fjord_conformance::lab::{process_start_time, Lab, LabPod, LabSpec, Persistence};
use fjord_conformance::labstate::{Journal, LabRequest, LabState, Phase};
use fjord_conformance::reach::matrix::summarize;
use fjord_conformance::reach::{probe_all, ProbePod};
use nix::sys::signal::{SigSet, Signal};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Set by the signal thread when it starts tearing the lab down: from then on it alone
/// may end the process (see [`park_if_tearing_down`]).
static TEARING_DOWN: AtomicBool = AtomicBool::new(false);

/// Blocks the calling thread for good while the signal thread tears the lab down. The
/// builder's steps fail once their namespaces vanish; a panic or an early exit of the
/// main thread would otherwise end the process before the teardown is done.
pub fn park_if_tearing_down() {
    while TEARING_DOWN.load(Ordering::SeqCst) {
        std::thread::park_timeout(Duration::from_secs(60));
    }
}

/// How long every pod route may take to reach every node after the pods are attached.
const ROUTES_WITHIN: Duration = Duration::from_secs(60);

/// Progress lines go to stderr: `[3/7] pods attached by fjord: 12/20`.
struct Steps {
    total: usize,
    current: usize,
    started: Instant,
}

impl Steps {
    fn step(&mut self, what: &str) {
        self.current += 1;
        eprintln!(
            "[{}/{}] {what} ({:.1} s)",
            self.current,
            self.total,
            self.started.elapsed().as_secs_f64()
        );
    }
}

/// Prints `  what: done/total`, at most ~10 times per count (every item for small ones).
fn count(what: &str, done: usize, total: usize) {
    let every = (total / 10).max(1);
    if done == total || done.is_multiple_of(every) {
        eprintln!("      {what}: {done}/{total}");
    }
}

pub fn up(place: &Place, args: &UpArgs) -> Result<i32> {
    if args.subnets > 1 && args.encapsulation == Encapsulation::Never {
        bail!(
            "--subnets {} with --encapsulation never cannot work: a node's route to a pod on \
             another subnet would go via that node's address, which is not on a connected \
             subnet; use --encapsulation cross-subnet (native within a subnet, VXLAN across) \
             or always",
            args.subnets
        );
    }
    check_binaries()?;
    refuse_if_running(place)?;
    let started = Instant::now();
    std::fs::create_dir_all(&place.dir)
        .with_context(|| format!("create the lab directory {}", place.dir.display()))?;
    let journal = Arc::new(create_journal(place, args)?);
    handle_signals(place, journal.clone())?;
    set_panic_message(place);
    build_and_probe(place, args, &journal, started).map_err(|e| {
        anyhow::anyhow!(
            "{e:#}\n\nWhat was built is left for inspection (logs in {}); remove all of it \
             with: {} down",
            place.dir.display(),
            place.invocation()
        )
    })
}

/// Everything after the state file exists: see the module documentation.
fn build_and_probe(
    place: &Place,
    args: &UpArgs,
    journal: &Arc<Journal>,
    started: Instant,
) -> Result<i32> {
    let mut steps = Steps {
        total: if args.store == Store::Etcd { 8 } else { 7 },
        current: 0,
        started,
    };
    let nodes = usize::from(args.nodes);
    let spec = LabSpec {
        nodes,
        subnets: usize::from(args.subnets),
        hosts: usize::from(args.store == Store::Etcd),
    };
    steps.step(&format!(
        "namespaces: underlay{}, {nodes} nodes on {} subnet(s)",
        if spec.subnets > 1 { ", router" } else { "" },
        spec.subnets
    ));
    let persistence = Persistence {
        prefix: place.prefix.clone(),
        dir: place.dir.clone(),
        journal: journal.clone(),
    };
    let mut made = 0;
    let mut lab = Lab::persistent(spec, persistence, &mut |name| {
        if name.starts_with("node") {
            made += 1;
            count("nodes", made, nodes);
        }
    });
    if args.store == Store::Etcd {
        steps.step("etcd in host1 (the cluster store)");
        let store = etcd::start(&lab)?;
        eprintln!("      store {store}");
        lab.use_store(store);
    } else {
        journal.record(|s| s.store = lab.store_arg());
    }
    steps.step(&format!(
        "fjord-routed on every node (--encapsulation {})",
        args.encapsulation.arg()
    ));
    for i in 0..nodes {
        lab.start_routed(i, &["--encapsulation", args.encapsulation.arg()])
            .detach();
        count("started", i + 1, nodes);
    }
    steps.step("BGP: every node's mesh sessions Established");
    let timeout = Duration::from_secs(args.bgp_timeout);
    for i in 0..nodes {
        lab.wait_established(i, &lab.mesh_peers_of(i), timeout);
        count("nodes with all sessions Established", i + 1, nodes);
    }
    let per_node = usize::from(args.pods_per_node);
    steps.step(&format!(
        "pods attached by fjord + fjord-ipam ({per_node} per node, {} at a time)",
        args.parallel
    ));
    let pods = attach_pods(&lab, per_node, usize::from(args.parallel));
    steps.step("routes: every node's kernel routes every other node's pods");
    wait_routes(&lab, &pods);
    steps.step("peer tables (fjord-routed status on each node)");
    let state = journal.snapshot();
    for node in &state.nodes {
        println!("{} ({}, {}):", node.name, node.address_v4, node.address_v6);
        print!("{}", show::peer_table(node)?);
    }
    steps.step("reachability: every pod to every other pod (ping, tcp; IPv4, IPv6)");
    let reachable = probe_and_print(&lab, &pods, usize::from(args.parallel))?;
    journal.record(|s| s.phase = Phase::Up);
    let secs = started.elapsed().as_secs_f64();
    let me = place.invocation();
    println!(
        "\nlab {} is up in {secs:.1} s: {nodes} nodes, {} pods. Try:\n  {me} status\n  \
         {me} exec node1-pod1 -- ping -c 2 {}\n  {me} down",
        place.prefix,
        pods.len(),
        pods.last().map(|p| p.ipv4.to_string()).unwrap_or_default()
    );
    if reachable {
        Ok(0)
    } else {
        eprintln!(
            "fjord-lab: some pods cannot reach others (see FAILED above); the lab is left up \
             for inspection (daemon logs in {}); remove it with `{} down`",
            place.dir.display(),
            place.invocation()
        );
        Ok(1)
    }
}

/// The three binaries, next to fjord-lab (or in FJORD_BIN_DIR).
fn check_binaries() -> Result<()> {
    let dir = fjord_bin_dir();
    for name in ["fjord", "fjord-ipam", "fjord-routed"] {
        if !dir.join(name).is_file() {
            bail!(
                "{} is missing: build the binaries first (`conformance/scripts/lab.sh` builds \
                 and runs the lab; or `cargo build --release --workspace --bins`), or point \
                 FJORD_BIN_DIR at the directory holding them",
                dir.join(name).display()
            );
        }
    }
    Ok(())
}

/// A second `up` over a running (or crashed) lab says so instead of building over it.
fn refuse_if_running(place: &Place) -> Result<()> {
    if let Some(state) = place.load()? {
        bail!(
            "a lab is already {} ({} nodes, {} pods; state file {}). Look at it with \
             `{me} status`; remove it with `{me} down`",
            if state.phase == Phase::Up {
                "up"
            } else {
                "there (its `up` did not finish)"
            },
            state.nodes.len(),
            state.pods.len(),
            place.state_file().display(),
            me = place.invocation()
        );
    }
    let leftovers = teardown::namespaces_with_prefix(&place.prefix);
    if !leftovers.is_empty() {
        bail!(
            "namespaces of an earlier lab are still there ({}…); remove them with `{} down`",
            leftovers[..leftovers.len().min(3)].join(", "),
            place.invocation()
        );
    }
    Ok(())
}

fn create_journal(place: &Place, args: &UpArgs) -> Result<Journal> {
    let me = std::process::id();
    let state = LabState {
        prefix: place.prefix.clone(),
        dir: place.dir.clone(),
        builder_pid: me,
        builder_start_time: process_start_time(me).unwrap_or(0),
        request: LabRequest {
            nodes: usize::from(args.nodes),
            pods_per_node: usize::from(args.pods_per_node),
            subnets: usize::from(args.subnets),
            encapsulation: args.encapsulation.arg().into(),
            store: format!("{:?}", args.store).to_lowercase(),
        },
        ..LabState::default()
    };
    Journal::create(&place.state_file(), state).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow::anyhow!(
                "another `fjord-lab up` just created {}; see `fjord-lab status`",
                place.state_file().display()
            )
        } else {
            anyhow::anyhow!("create {}: {e}", place.state_file().display())
        }
    })
}

/// SIGINT, SIGTERM, SIGHUP: blocked in every thread and taken by one, which freezes the
/// journal (the step in progress finishes, no other starts), removes everything the
/// journal names, and exits 130.
fn handle_signals(place: &Place, journal: Arc<Journal>) -> Result<()> {
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    set.thread_block().context("block signals")?;
    let place = place.clone();
    std::thread::spawn(move || {
        let Ok(signal) = set.wait() else { return };
        TEARING_DOWN.store(true, Ordering::SeqCst);
        eprintln!("\nfjord-lab: {signal:?}: stopping and removing what was built");
        let state = journal.freeze();
        let removed = teardown::teardown(Some(&state), &place.prefix, &place.dir);
        eprintln!(
            "fjord-lab: removed {} processes, {} namespaces and {}",
            removed.processes,
            removed.namespaces,
            place.dir.display()
        );
        for p in &removed.problems {
            eprintln!(
                "fjord-lab: could not remove: {p} (run `{} down`)",
                place.invocation()
            );
        }
        let _ = std::io::stdout().flush();
        std::process::exit(130);
    });
    Ok(())
}

/// Failures inside the lab library are panics with a message; say it once, plainly,
/// with how to clean up.
fn set_panic_message(place: &Place) {
    let dir = place.dir.clone();
    let me = place.invocation();
    std::panic::set_hook(Box::new(move |info| {
        park_if_tearing_down();
        let message = info
            .payload()
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown failure".into());
        eprintln!(
            "\nfjord-lab up failed: {message}\n\nWhat was built is left for inspection (logs in \
             {}); remove all of it with: {me} down",
            dir.display()
        );
    }));
}

/// Attaches `per_node` pods to every node, `parallel` plugin calls at a time.
fn attach_pods(lab: &Lab, per_node: usize, parallel: usize) -> Vec<LabPod> {
    let jobs: Vec<(usize, usize)> = (0..lab.node_count())
        .flat_map(|i| (1..=per_node).map(move |k| (i, k)))
        .collect();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<LabPod>>> = jobs.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..parallel.max(1) {
            scope.spawn(|| loop {
                let j = next.fetch_add(1, Ordering::Relaxed);
                let Some((i, k)) = jobs.get(j).copied() else {
                    break;
                };
                let pod = lab.add_numbered_pod(i, k);
                *slots[j].lock().expect("slot") = Some(pod);
                count("pods", done.fetch_add(1, Ordering::Relaxed) + 1, jobs.len());
            });
        }
    });
    slots
        .into_iter()
        .map(|s| s.into_inner().expect("slot").expect("every pod attached"))
        .collect()
}

/// Waits until every node's kernel has a fjord route covering each pod on another node
/// (both families).
fn wait_routes(lab: &Lab, pods: &[LabPod]) {
    let deadline = Instant::now() + ROUTES_WITHIN;
    for i in 0..lab.node_count() {
        loop {
            let routes = lab.node(i).fjord_routes();
            let missing: Vec<std::net::IpAddr> = pods
                .iter()
                .filter(|p| p.node != i)
                .flat_map(|p| [p.ipv4, p.ipv6])
                .filter(|a| !routes.iter().any(|r| r.dst.contains(*a)))
                .collect();
            if missing.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{}: after {ROUTES_WITHIN:?} no fjord route covers {} pod address(es) of \
                     other nodes, e.g. {:?}\n--- daemon log ---\n{}",
                    lab.node(i).name(),
                    missing.len(),
                    &missing[..missing.len().min(4)],
                    lab.routed_log_tail(i)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        count("nodes routing every remote pod", i + 1, lab.node_count());
    }
}

/// Probes every pod pair and prints the node x node matrix; whether all pairs passed.
fn probe_and_print(lab: &Lab, pods: &[LabPod], parallel: usize) -> Result<bool> {
    let probe_pods: Vec<ProbePod> = pods.iter().map(ProbePod::from).collect();
    // Probe workers mostly wait for answers: more of them than plugin calls at a time.
    let workers = (parallel * 4).min(32);
    let results = probe_all(&probe_pods, workers, &|done, total| {
        count("source pods probed", done, total)
    })
    .map_err(anyhow::Error::msg)?;
    let node_of: Vec<usize> = pods.iter().map(|p| p.node).collect();
    let matrix = summarize(&results, &node_of);
    let node_names: Vec<String> = lab.nodes().iter().map(|n| n.name().to_string()).collect();
    let pod_names: Vec<String> = pods
        .iter()
        .map(|p| {
            let base = p.netns().name();
            base.strip_prefix(
                &lab.persistence()
                    .map(|x| x.prefix.clone())
                    .unwrap_or_default(),
            )
            .unwrap_or(base)
            .to_string()
        })
        .collect();
    println!("\nreachability, node -> node (pod pairs that answered / pod pairs):");
    print!("{}", matrix.render(&node_names, &pod_names, 20));
    let ok = matrix.all_reachable();
    println!(
        "{} of {} pod pairs reach each other by ping and tcp, IPv4 and IPv6",
        matrix.pairs - matrix.failed.len(),
        matrix.pairs
    );
    Ok(ok)
}
