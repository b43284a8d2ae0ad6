//! Helpers shared by the integration tests: throwaway store directories and configs.
#![allow(dead_code)] // each test file uses a different part

use fjord_ipam::{Handle, Ipam, IpamConfig, Owner};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// A unique directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static SERIAL: AtomicU32 = AtomicU32::new(0);
        let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "fjord-ipam-test-{}-{serial}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn store(&self) -> PathBuf {
        self.0.join("ipam")
    }

    pub fn blocks(&self) -> PathBuf {
        self.store().join("blocks")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn ipam_json(store: &Path, node: &str, pools: &[&str], block: u8) -> Value {
    json!({
        "type": "fjord-ipam",
        "nodeName": node,
        "store": format!("dir:{}", store.display()),
        "pools": pools,
        "blockSize": block,
        "blockSizeV6": 122,
    })
}

pub fn open(store: &Path, node: &str, pools: &[&str], block: u8) -> Ipam {
    let v = ipam_json(store, node, pools, block);
    Ipam::open(IpamConfig::from_json(v.as_object().unwrap()).unwrap()).unwrap()
}

pub fn handle(id: &str) -> Handle {
    Handle {
        container_id: id.into(),
        ifname: "eth0".into(),
    }
}

pub fn owner() -> Owner {
    Owner {
        network: "fjord".into(),
        pod_namespace: Some("default".into()),
        pod_name: Some("web-0".into()),
    }
}

/// The block files of a store, by name.
pub fn block_files(dir: &TempDir) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.blocks())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
