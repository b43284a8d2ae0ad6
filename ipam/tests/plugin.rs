//! The `fjord-ipam` binary as a runtime runs it: environment + stdin in, one JSON
//! document (or nothing) out, including many copies running at once on one store.

mod common;

use common::{handle, ipam_json, open, TempDir};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

struct Call<'a> {
    verb: &'a str,
    container: &'a str,
    args: &'a str,
    conf: Value,
}

fn spawn(c: &Call) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fjord-ipam"))
        .env_clear()
        .env("CNI_COMMAND", c.verb)
        .env("CNI_CONTAINERID", c.container)
        .env("CNI_NETNS", "/var/run/netns/test")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_ARGS", c.args)
        .env("CNI_PATH", "/opt/cni/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = serde_json::to_vec(&c.conf).unwrap();
    child.stdin.take().unwrap().write_all(&stdin).unwrap();
    child
}

/// Exit success, and stdout parsed (None when empty).
fn finish(child: Child) -> (bool, Option<Value>) {
    let Output { status, stdout, .. } = child.wait_with_output().unwrap();
    let parsed = (!stdout.is_empty()).then(|| {
        serde_json::from_slice(&stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {stdout:?}"))
    });
    (status.success(), parsed)
}

fn call(verb: &str, container: &str, conf: &Value) -> (bool, Option<Value>) {
    finish(spawn(&Call {
        verb,
        container,
        args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0",
        conf: conf.clone(),
    }))
}

fn netconf(version: &str, store: &Path, node: &str, pools: &[&str], block: u8) -> Value {
    json!({
        "cniVersion": version,
        "name": "fjord",
        "type": "fjord",
        "ipam": ipam_json(store, node, pools, block),
    })
}

fn error_code(out: &(bool, Option<Value>)) -> u64 {
    assert!(!out.0, "expected a failure, got {:?}", out.1);
    out.1.as_ref().unwrap()["code"].as_u64().unwrap()
}

#[test]
fn add_check_del_round_trip() {
    let dir = TempDir::new("bin-roundtrip");
    let conf = netconf(
        "1.0.0",
        &dir.store(),
        "node-1",
        &["10.244.0.0/16", "fd00:244::/56"],
        26,
    );
    let (ok, result) = call("ADD", "c1", &conf);
    let result = result.unwrap();
    assert!(ok, "{result}");
    assert_eq!(
        result,
        json!({"cniVersion": "1.0.0", "ips": [
            {"address": "10.244.0.1/32"}, {"address": "fd00:244::1/128"}]})
    );
    let record = std::fs::read_to_string(dir.blocks().join("10.244.0.0_26@node-1.json")).unwrap();
    assert!(record.contains("\"podNamespace\": \"default\""), "{record}");

    let mut checked = conf.clone();
    checked["prevResult"] = result.clone();
    assert_eq!(call("CHECK", "c1", &checked), (true, None));
    checked["prevResult"]["ips"][0]["address"] = json!("10.244.0.9/32");
    assert_eq!(error_code(&call("CHECK", "c1", &checked)), 101);

    assert_eq!(
        error_code(&call("ADD", "c1", &conf)),
        102,
        "same container twice"
    );
    assert_eq!(call("DEL", "c1", &conf), (true, None));
    assert_eq!(call("DEL", "c1", &conf), (true, None), "DEL is idempotent");
    checked["prevResult"] = result;
    assert_eq!(error_code(&call("CHECK", "c1", &checked)), 3);
}

#[test]
fn exhaustion_and_bad_stores_get_their_codes() {
    let dir = TempDir::new("bin-codes");
    let conf = netconf("1.0.0", &dir.store(), "node-1", &["10.0.0.0/29"], 30);
    for i in 0..6 {
        assert!(call("ADD", &format!("c{i}"), &conf).0);
    }
    let out = call("ADD", "c6", &conf);
    assert_eq!(error_code(&out), 100);
    assert!(out.1.unwrap()["msg"]
        .as_str()
        .unwrap()
        .contains("10.0.0.0/29"));

    let mut etcd = conf.clone();
    etcd["ipam"]["store"] = json!("etcd:127.0.0.1:2379");
    let out = call("ADD", "c7", &etcd);
    assert_eq!(error_code(&out), 7);
    assert!(out.1.unwrap()["msg"]
        .as_str()
        .unwrap()
        .contains("\"127.0.0.1:2379\" must be http://host:port"));

    let file = dir.0.join("plain-file");
    std::fs::write(&file, b"").unwrap();
    let broken = netconf("1.1.0", &file.join("ipam"), "node-1", &["10.0.0.0/29"], 30);
    let out = call("STATUS", "", &broken);
    assert_eq!(error_code(&out), 5);
    assert!(out.1.unwrap()["msg"]
        .as_str()
        .unwrap()
        .contains("plain-file/ipam"));
    let healthy = netconf("1.1.0", &dir.store(), "node-1", &["10.0.0.0/29"], 30);
    assert_eq!(call("STATUS", "", &healthy), (true, None));
}

#[test]
fn requested_addresses_and_gc() {
    let dir = TempDir::new("bin-gc");
    let mut conf = netconf("1.1.0", &dir.store(), "node-1", &["10.244.0.0/16"], 26);
    conf["runtimeConfig"] = json!({"ips": ["10.244.7.7/24"]});
    let (ok, result) = call("ADD", "wanted", &conf);
    assert!(ok);
    assert_eq!(result.unwrap()["ips"][0]["address"], "10.244.7.7/32");
    conf.as_object_mut().unwrap().remove("runtimeConfig");
    assert!(call("ADD", "stale", &conf).0);

    conf["cni.dev/valid-attachments"] = json!([{"containerID": "wanted", "ifname": "eth0"}]);
    assert_eq!(call("GC", "", &conf), (true, None));
    let ipam = open(&dir.store(), "node-1", &["10.244.0.0/16"], 26);
    assert_eq!(ipam.lookup(&handle("wanted")).unwrap().len(), 1);
    assert!(ipam.lookup(&handle("stale")).unwrap().is_empty());
}

#[test]
fn many_processes_on_two_nodes_get_distinct_recorded_addresses() {
    let dir = TempDir::new("bin-concurrent");
    let pools = ["10.0.0.0/24"];
    let conf = |node: &str| netconf("1.0.0", &dir.store(), node, &pools, 28);
    let children: Vec<_> = (0..24)
        .map(|i| {
            let node = format!("node-{}", i % 2);
            let id = format!("c{i}");
            let child = spawn(&Call {
                verb: "ADD",
                container: &id,
                args: "",
                conf: conf(&node),
            });
            (node, id, child)
        })
        .collect();
    let mut seen = BTreeSet::new();
    for (node, id, child) in children {
        let (ok, out) = finish(child);
        let out = out.unwrap();
        assert!(ok, "{out}");
        let address = out["ips"][0]["address"].as_str().unwrap().to_string();
        assert!(seen.insert(address.clone()), "{address} handed out twice");
        let held = open(&dir.store(), &node, &pools, 28)
            .lookup(&handle(&id))
            .unwrap();
        assert_eq!(format!("{}/32", held[0].address), address);
    }
    assert_eq!(seen.len(), 24);
}
