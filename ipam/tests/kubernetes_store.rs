//! The `kubernetes[:DIR]` store on a real file system: addresses come from exactly the
//! podCIDRs fjord-routed wrote, a missing file is error 11 naming it, releasing works
//! without it, and nothing outside the podCIDRs is ever claimed.

mod common;

use common::{handle, owner, TempDir};
use fjord_cni_types::CniError;
use fjord_ipam::kubernetes::{self, PodCidrs};
use fjord_ipam::{Ipam, IpamConfig, IpamError};
use serde_json::{json, Value};
use std::net::IpAddr;
use std::path::Path;

fn open_with(dir: &Path, node: &str, extra: Value) -> Result<Ipam, IpamError> {
    let mut v = json!({"type": "fjord-ipam", "nodeName": node,
        "store": format!("kubernetes:{}", dir.display())});
    for (k, val) in extra.as_object().unwrap() {
        v[k] = val.clone();
    }
    Ipam::open(IpamConfig::from_json(v.as_object().unwrap())?)
}

fn open(dir: &Path, node: &str) -> Ipam {
    open_with(dir, node, json!({})).unwrap()
}

fn write(dir: &Path, node: &str, cidrs: &[&str]) {
    let record = PodCidrs {
        node: node.into(),
        pod_cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
    };
    kubernetes::write_pod_cidrs(dir, &record).unwrap();
}

#[test]
fn addresses_come_from_the_nodes_pod_cidrs() {
    let dir = TempDir::new("k8s-addr");
    write(&dir.0, "node-1", &["10.244.1.0/24", "fd00:10:244:1::/64"]);
    write(&dir.0, "node-2", &["10.244.2.0/24"]);
    let one = open(&dir.0, "node-1")
        .allocate(&handle("a"), &owner(), &[])
        .unwrap();
    let addresses: Vec<IpAddr> = one.iter().map(|a| a.address).collect();
    assert_eq!(
        addresses,
        vec![
            "10.244.1.1".parse::<IpAddr>().unwrap(),
            "fd00:10:244:1::1".parse().unwrap()
        ]
    );
    assert_eq!(one[1].block, "fd00:10:244:1::/112".parse().unwrap());
    let two = open(&dir.0, "node-2")
        .allocate(&handle("b"), &owner(), &[])
        .unwrap();
    assert_eq!(two.len(), 1);
    assert_eq!(two[0].address, "10.244.2.1".parse::<IpAddr>().unwrap());
    // Allocations persist in DIR/ipam and are found again by a new process.
    let again = open(&dir.0, "node-1");
    assert_eq!(again.lookup(&handle("a")).unwrap(), one);
    assert!(dir
        .0
        .join("ipam/blocks/10.244.1.0_24@node-1.json")
        .is_file());
}

#[test]
fn a_missing_file_is_try_again_later_and_names_it_but_release_works() {
    let dir = TempDir::new("k8s-missing");
    let ipam = open(&dir.0, "node-1");
    let e = ipam.allocate(&handle("a"), &owner(), &[]).unwrap_err();
    let cni = CniError::from(e);
    assert_eq!(cni.code, 11);
    assert!(
        cni.msg
            .contains("fjord-routed has not written the node's podCIDRs yet: is it running?"),
        "{}",
        cni.msg
    );
    assert!(
        cni.msg
            .contains(&dir.0.join("node-1.json").display().to_string()),
        "{}",
        cni.msg
    );
    assert_eq!(ipam.status().unwrap_err().code().as_u32(), 11);
    assert_eq!(ipam.release(&handle("a")).unwrap(), Vec::<IpAddr>::new());
    // Once the file appears, a fresh plugin process allocates.
    write(&dir.0, "node-1", &["10.244.7.0/24"]);
    let got = open(&dir.0, "node-1")
        .allocate(&handle("a"), &owner(), &[])
        .unwrap();
    assert_eq!(got[0].address, "10.244.7.1".parse::<IpAddr>().unwrap());
    assert!(open(&dir.0, "node-1").status().is_ok());
    // Even without the file, what was allocated can be released.
    std::fs::remove_file(dir.0.join("node-1.json")).unwrap();
    let released = open(&dir.0, "node-1").release(&handle("a")).unwrap();
    assert_eq!(released, vec!["10.244.7.1".parse::<IpAddr>().unwrap()]);
}

#[test]
fn a_full_pod_cidr_is_exhausted_and_nothing_else_is_claimed() {
    let dir = TempDir::new("k8s-full");
    write(&dir.0, "node-1", &["10.244.3.0/30"]);
    let ipam = open(&dir.0, "node-1");
    // A /30 holds ordinals 1..=3 (0 is kept for the node).
    for id in ["a", "b", "c"] {
        ipam.allocate(&handle(id), &owner(), &[]).unwrap();
    }
    let e = ipam.allocate(&handle("d"), &owner(), &[]).unwrap_err();
    assert!(matches!(e, IpamError::PoolExhausted { .. }), "{e}");
    let files: Vec<_> = std::fs::read_dir(dir.0.join("ipam/blocks"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(files, vec!["10.244.3.0_30@node-1.json".to_string()]);
}

#[test]
fn requested_addresses_must_lie_in_the_pod_cidr() {
    let dir = TempDir::new("k8s-request");
    write(&dir.0, "node-1", &["10.244.4.0/24"]);
    let ipam = open(&dir.0, "node-1");
    let inside: IpAddr = "10.244.4.77".parse().unwrap();
    let got = ipam.allocate(&handle("a"), &owner(), &[inside]).unwrap();
    assert_eq!(got[0].address, inside);
    let outside: IpAddr = "10.244.5.1".parse().unwrap();
    let e = ipam
        .allocate(&handle("b"), &owner(), &[outside])
        .unwrap_err();
    assert!(matches!(e, IpamError::NotInPool { .. }), "{e}");
}

#[test]
fn configured_pools_bound_the_pod_cidrs_and_bad_files_are_named() {
    let dir = TempDir::new("k8s-bounds");
    write(&dir.0, "node-1", &["10.99.0.0/24"]);
    let e = open_with(&dir.0, "node-1", json!({"pools": ["10.244.0.0/16"]}))
        .err()
        .unwrap();
    assert!(e.to_string().contains("10.99.0.0/24"), "{e}");
    assert!(
        e.to_string().contains("none of the configured pools"),
        "{e}"
    );
    assert!(open_with(&dir.0, "node-1", json!({"pools": ["10.0.0.0/8"]})).is_ok());
    std::fs::write(
        dir.0.join("node-2.json"),
        b"{\"node\": \"node-3\", \"podCIDRs\": []}",
    )
    .unwrap();
    let e = open_with(&dir.0, "node-2", json!({})).err().unwrap();
    assert!(e.to_string().contains("node-2.json"), "{e}");
    assert!(e.to_string().contains("node-3"), "{e}");
}
