//! The `dir:` store on a real file system: persistence, concurrency, crash leftovers and
//! unusable directories.

mod common;

use common::{block_files, handle, ipam_json, open, owner, TempDir};
use fjord_cni_types::CniError;
use fjord_ipam::dir::DirStore;
use fjord_ipam::{Ipam, IpamConfig, IpamError};
use nix::fcntl::{Flock, FlockArg};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

const DUAL: [&str; 2] = ["10.244.0.0/16", "fd00:244::/56"];

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn allocations_survive_reopening_and_read_like_the_readme() {
    let dir = TempDir::new("persist");
    let got = open(&dir.store(), "node-1", &DUAL, 26)
        .allocate(&handle("c1"), &owner(), &[])
        .unwrap();
    let ipam = open(&dir.store(), "node-1", &DUAL, 26);
    assert_eq!(ipam.lookup(&handle("c1")).unwrap(), got);
    assert_eq!(
        ipam.node_blocks().unwrap(),
        vec![
            "10.244.0.0/26".parse().unwrap(),
            "fd00:244::/122".parse().unwrap()
        ]
    );
    assert_eq!(
        block_files(&dir),
        vec!["10.244.0.0_26@node-1.json", "fd00:244::_122@node-1.json"]
    );
    let text = std::fs::read_to_string(dir.blocks().join("10.244.0.0_26@node-1.json")).unwrap();
    for needle in [
        "\"10.244.0.1\"",
        "\"containerID\": \"c1\"",
        "\"podName\": \"web-0\"",
    ] {
        assert!(text.contains(needle), "{needle} missing from {text}");
    }
    assert_eq!(ipam.release(&handle("c1")).unwrap().len(), 2);
    let reopened = open(&dir.store(), "node-1", &DUAL, 26);
    assert!(reopened.lookup(&handle("c1")).unwrap().is_empty());
    assert_eq!(
        reopened.release(&handle("c1")).unwrap(),
        Vec::<IpAddr>::new()
    );
}

#[test]
fn fifty_threads_on_three_nodes_get_distinct_recorded_addresses() {
    let dir = TempDir::new("threads");
    let results: Vec<(String, IpAddr)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..50)
            .map(|i| {
                let store = dir.store();
                s.spawn(move || {
                    let node = format!("node-{}", i % 3);
                    let ipam = open(&store, &node, &["10.0.0.0/24"], 28);
                    let got = ipam
                        .allocate(&handle(&format!("c{i}")), &owner(), &[])
                        .unwrap();
                    (node, got[0].address)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let distinct: BTreeSet<IpAddr> = results.iter().map(|(_, a)| *a).collect();
    assert_eq!(distinct.len(), 50, "an address was handed out twice");
    for (i, (node, address)) in results.iter().enumerate() {
        let ipam = open(&dir.store(), node, &["10.0.0.0/24"], 28);
        let held = ipam.lookup(&handle(&format!("c{i}"))).unwrap();
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].address, *address);
        assert!(ipam.node_blocks().unwrap().contains(&held[0].block));
    }
}

#[test]
fn leftover_and_torn_temp_files_are_ignored_then_swept() {
    let dir = TempDir::new("crash");
    let ipam = open(&dir.store(), "node-1", &["10.0.0.0/24"], 26);
    ipam.allocate(&handle("c1"), &owner(), &[]).unwrap();
    let record = dir.blocks().join("10.0.0.0_26@node-1.json");
    let before = std::fs::read(&record).unwrap();
    // What a writer killed before its rename leaves: half of the next record, and junk.
    let torn = &before[..before.len() / 2];
    std::fs::write(
        dir.blocks().join(".tmp-4242-0-10.0.0.0_26@node-1.json"),
        torn,
    )
    .unwrap();
    std::fs::write(dir.blocks().join(".tmp-4242-1-x"), b"").unwrap();

    let ipam = open(&dir.store(), "node-1", &["10.0.0.0/24"], 26);
    assert_eq!(
        ipam.lookup(&handle("c1")).unwrap()[0].address,
        ip("10.0.0.1")
    );
    assert_eq!(
        std::fs::read(&record).unwrap(),
        before,
        "the record is intact"
    );
    assert_eq!(ipam.node_blocks().unwrap().len(), 1);

    ipam.allocate(&handle("c2"), &owner(), &[]).unwrap();
    assert_eq!(
        block_files(&dir),
        vec!["10.0.0.0_26@node-1.json"],
        "temps swept"
    );
    assert_eq!(
        ipam.lookup(&handle("c2")).unwrap()[0].address,
        ip("10.0.0.2")
    );
}

#[test]
fn a_corrupt_record_is_an_io_error_naming_the_file() {
    let dir = TempDir::new("corrupt");
    let ipam = open(&dir.store(), "node-1", &["10.0.0.0/24"], 26);
    ipam.allocate(&handle("c1"), &owner(), &[]).unwrap();
    let record = dir.blocks().join("10.0.0.0_26@node-1.json");
    std::fs::write(&record, b"{\"cidr\": \"10.0.0.0/26\", \"node\": ").unwrap();
    let err = ipam.allocate(&handle("c2"), &owner(), &[]).unwrap_err();
    assert!(matches!(err, IpamError::CorruptRecord { .. }), "{err}");
    assert!(err.to_string().contains("10.0.0.0_26@node-1.json"), "{err}");
    assert_eq!(CniError::from(err).code, 5);
}

#[test]
fn a_store_that_cannot_be_created_is_an_io_error_naming_the_path() {
    let dir = TempDir::new("unwritable");
    // A path below a regular file cannot be created, even by root.
    let file = dir.0.join("plain-file");
    std::fs::write(&file, b"").unwrap();
    let v = ipam_json(&file.join("ipam"), "node-1", &["10.0.0.0/24"], 26);
    let err = Ipam::open(IpamConfig::from_json(v.as_object().unwrap()).unwrap())
        .err()
        .expect("open must fail");
    assert!(err.to_string().contains("plain-file/ipam"), "{err}");
    assert_eq!(CniError::from(err).code, 5);
}

#[test]
fn an_unusable_lock_file_fails_transactions_and_status_with_io_errors() {
    let dir = TempDir::new("nolock");
    let ipam = open(&dir.store(), "node-1", &["10.0.0.0/24"], 26);
    ipam.status().unwrap();
    assert_eq!(
        block_files(&dir),
        Vec::<String>::new(),
        "status leaves no probe behind"
    );
    // A directory where the lock file should be: opening it for writing fails for root too.
    std::fs::remove_file(dir.store().join(".lock")).unwrap();
    std::fs::create_dir(dir.store().join(".lock")).unwrap();
    for err in [
        ipam.status().unwrap_err(),
        ipam.allocate(&handle("c1"), &owner(), &[]).unwrap_err(),
    ] {
        assert!(err.to_string().contains(".lock"), "{err}");
        assert_eq!(CniError::from(err).code, 5);
    }
}

#[test]
fn a_held_lock_turns_into_try_again_later() {
    let dir = TempDir::new("busy");
    let v = ipam_json(&dir.store(), "node-1", &["10.0.0.0/24"], 26);
    let config = IpamConfig::from_json(v.as_object().unwrap()).unwrap();
    let store = DirStore::open(dir.store())
        .unwrap()
        .with_lock_wait(Duration::from_millis(100));
    let ipam = Ipam::with_store(config, Box::new(store));
    ipam.status().unwrap();
    let lock = std::fs::File::open(dir.store().join(".lock")).unwrap();
    let held = Flock::lock(lock, FlockArg::LockExclusive).unwrap();
    let err = ipam.allocate(&handle("c1"), &owner(), &[]).unwrap_err();
    assert!(matches!(err, IpamError::StoreBusy { .. }), "{err}");
    assert_eq!(CniError::from(err).code, 11);
    drop(held);
    assert_eq!(
        ipam.allocate(&handle("c1"), &owner(), &[]).unwrap().len(),
        1
    );
}

/// Run with `cargo test -p fjord-ipam --test dir_store -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check; run by hand"]
fn time_allocate_and_release() {
    for pools in [&DUAL[..1], &DUAL[..]] {
        let dir = TempDir::new("timing");
        let ipam = open(&dir.store(), "node-1", pools, 26);
        // Pre-fill so the block files have a realistic size.
        for i in 0..40 {
            ipam.allocate(&handle(&format!("fill{i}")), &owner(), &[])
                .unwrap();
        }
        let rounds = 200u32;
        let (mut add, mut del) = (Duration::ZERO, Duration::ZERO);
        for i in 0..rounds {
            let h = handle(&format!("t{i}"));
            let t = Instant::now();
            assert_eq!(ipam.allocate(&h, &owner(), &[]).unwrap().len(), pools.len());
            add += t.elapsed();
            let t = Instant::now();
            assert_eq!(ipam.release(&h).unwrap().len(), pools.len());
            del += t.elapsed();
        }
        println!(
            "pools {pools:?}: allocate {:?} per call, release {:?} per call ({rounds} rounds)",
            add / rounds,
            del / rounds
        );
    }
}
