//! `fjord-bench cni --store etcd [--pods N]`: the `fjord` plugin on a `dir:` store
//! against the same plugin on an `etcd:` store, alternating pod by pod so both meet the
//! same machine noise. A lab of two nodes and one host: node 1 uses the `dir:` store,
//! node 2 the etcd member running in the host (reached over the lab underlay, data dir
//! on tmpfs), with the same network config otherwise. One warm-up ADD per side claims
//! the blocks first, so the timed ADDs are steady state (a free address in an owned
//! block). The etcd member's own metrics give the Txn RPCs per ADD and per DEL. The
//! `dir:` store and the etcd data dir are both on tmpfs (`/dev/shm`), so neither pays
//! for a disk the other does not.

use super::{check_interrupted, ms, run_timed, summarize, CNI_VERSION};
use anyhow::{ensure, Context, Result};
use fjord_conformance::bins::REFERENCE_PLUGIN_DIR;
use fjord_conformance::etcd::EtcdCluster;
use fjord_conformance::lab::{Lab, LabSpec};
use fjord_conformance::plugin::with_prev_result;
use fjord_conformance::{fjord_bin, fjord_bin_dir, result_ips, PluginCall, Pod};
use fjord_ipam::etcd::EtcdStore;
use fjord_ipam::store::Store;
use serde_json::{json, Value};
use std::time::Duration;

struct Side {
    label: &'static str,
    node: usize,
    conf: Value,
    add: Vec<Duration>,
    del: Vec<Duration>,
}

pub fn run(pods: usize) -> Result<()> {
    let lab = Lab::new(LabSpec {
        nodes: 2,
        subnets: 1,
        hosts: 1,
    });
    let cluster = EtcdCluster::start(&lab, &[0]);
    // Both stores on tmpfs: the figures compare code paths and round trips, not disks.
    let dir_store = format!("dir:{}", cluster.scratch_dir("dir-store").display());
    let mut sides = [
        side("fjord(dir)", &lab, 0, &dir_store),
        side("fjord(etcd)", &lab, 1, &cluster.store_arg()),
    ];
    for s in &sides {
        println!(
            "{:<12} node{} store {}",
            s.label,
            s.node + 1,
            s.conf["ipam"]["store"]
        );
    }
    let cni_path = format!("{}:{REFERENCE_PLUGIN_DIR}", fjord_bin_dir().display());
    let call = Caller {
        lab: &lab,
        cni_path: &cni_path,
    };
    let warm_up: Vec<(Pod, Value)> = sides
        .iter()
        .map(|s| add(s, &call).map(|(pod, result, _)| (pod, result)))
        .collect::<Result<_>>()?;

    println!("{pods} pods per store, alternating; timing ADD ...");
    let txns_before = cluster.txn_count(0);
    let mut attached: [Vec<(Pod, Value)>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..pods {
        for (s, held) in sides.iter_mut().zip(&mut attached) {
            check_interrupted()?;
            let (pod, result, wall) = add(s, &call)?;
            s.add.push(wall);
            held.push((pod, result));
        }
    }
    let txns_per_add = (cluster.txn_count(0) - txns_before) as f64 / pods as f64;
    println!("timing DEL ...");
    let txns_before = cluster.txn_count(0);
    let mut detaching = attached.map(Vec::into_iter);
    for _ in 0..pods {
        for (s, held) in sides.iter_mut().zip(&mut detaching) {
            check_interrupted()?;
            let (pod, result) = held.next().expect("one attached pod per DEL");
            let wall = del(s, &call, pod, &result)?;
            s.del.push(wall);
        }
    }
    let txns_per_del = (cluster.txn_count(0) - txns_before) as f64 / pods as f64;
    for (s, (pod, result)) in sides.iter().zip(warm_up) {
        del(s, &call, pod, &result)?;
    }
    let left = etcd_allocations(&cluster, lab.node(1).name())?;
    ensure!(left == 0, "the etcd store still holds {left} allocations");

    print_report(pods, &sides);
    println!("\netcd Txn RPCs (member metrics, grpc_server_handled_total OK) per steady-state ADD: {txns_per_add:.2}, per DEL: {txns_per_del:.2}");
    println!("(each = one read-only txn reading the claims and the node's blocks + one compare-and-swap commit)");
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        println!("load average at the end: {}", load.trim());
    }
    Ok(())
}

fn side(label: &'static str, lab: &Lab, node: usize, store: &str) -> Side {
    let mut conf = lab.cni_config(node);
    conf["ipam"]["store"] = json!(store);
    conf["cniVersion"] = json!(CNI_VERSION);
    Side {
        label,
        node,
        conf,
        add: Vec::new(),
        del: Vec::new(),
    }
}

/// Makes the plugin calls of one side, run in its node's namespace.
struct Caller<'a> {
    lab: &'a Lab,
    cni_path: &'a str,
}

impl Caller<'_> {
    fn run(&self, s: &Side, verb: &str, pod: &Pod, conf: &Value) -> Result<super::TimedRun> {
        let plugin = PluginCall::new(
            fjord_bin("fjord"),
            verb,
            &pod.container_id,
            &pod.netns_path(),
            &pod.ifname,
            self.cni_path,
            conf,
        );
        run_timed(&plugin, self.lab.node(s.node).netns())
    }
}

fn add(s: &Side, call: &Caller<'_>) -> Result<(Pod, Value, Duration)> {
    let pod = Pod::new();
    let run = call.run(s, "ADD", &pod, &s.conf)?;
    check_interrupted()?;
    let result = run.expect_success(s.label)?;
    ensure!(
        !result_ips(&result).is_empty(),
        "{} ADD gave a result without an IP: {result}",
        s.label
    );
    Ok((pod, result, run.wall))
}

fn del(s: &Side, call: &Caller<'_>, pod: Pod, result: &Value) -> Result<Duration> {
    let conf = with_prev_result(s.conf.clone(), result);
    let run = call.run(s, "DEL", &pod, &conf)?;
    check_interrupted()?;
    run.expect_success(s.label)?;
    pod.netns.delete();
    Ok(run.wall)
}

fn etcd_allocations(cluster: &EtcdCluster, node: &str) -> Result<usize> {
    let endpoints = cluster.endpoints();
    cluster.in_member_netns(0, || {
        let spec = fjord_ipam::EtcdSpec {
            endpoints,
            tls: None,
        };
        let store = EtcdStore::open(&spec).context("open the etcd store")?;
        let snapshot = store.snapshot(node).context("read the etcd store")?;
        Ok(snapshot.own.iter().map(|b| b.allocations().count()).sum())
    })
}

fn print_report(pods: usize, sides: &[Side; 2]) {
    let [a, b] = sides;
    println!("\nCNI wall time per fjord process, {pods} pods per store (ms)");
    println!(
        "{:<5} {:<12} {:>8} {:>8} {:>8}",
        "verb", "store", "median", "p99", "min"
    );
    for (verb, of_a, of_b) in [("ADD", &a.add, &b.add), ("DEL", &a.del, &b.del)] {
        let (sa, sb) = (summarize(of_a), summarize(of_b));
        for (s, sum) in [(a, &sa), (b, &sb)] {
            let row = [sum.median, sum.p99, sum.min].map(ms);
            println!(
                "{verb:<5} {:<12} {:>8.2} {:>8.2} {:>8.2}",
                s.label, row[0], row[1], row[2]
            );
        }
        let ratio = [(sb.median, sa.median), (sb.p99, sa.p99), (sb.min, sa.min)]
            .map(|(x, y)| ms(x) / ms(y));
        println!(
            "{verb:<5} {:<12} {:>8.2} {:>8.2} {:>8.2}",
            "etcd/dir", ratio[0], ratio[1], ratio[2]
        );
    }
}
