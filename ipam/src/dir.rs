//! The `dir:PATH` store: one JSON file per block in `PATH/blocks/`, named
//! `<network>_<prefix>@<node>.json` so one directory listing gives every claim and its
//! node without opening a file. Transactions hold an exclusive `flock` on `PATH/.lock`;
//! each block is replaced by write-to-temp, fsync, rename, fsync of the directory, so a
//! crash leaves the old record or the new one, never a torn one. Temp files start with
//! `.tmp-`: readers skip them and the next transaction removes them.

use crate::allocator::{Claim, Snapshot};
use crate::block::Block;
use crate::error::IpamError;
use crate::registry::{NodeRecord, Registry};
use crate::store::{Decide, Store};
use ipnetwork::IpNetwork;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const LOCK_FILE: &str = ".lock";
const BLOCKS_DIR: &str = "blocks";
const NODES_DIR: &str = "nodes";
const TEMP_PREFIX: &str = ".tmp-";
/// Long enough for any sane transaction queue, short enough that a wedged holder turns
/// into "try again later" before the runtime's own timeout.
const LOCK_WAIT: Duration = Duration::from_secs(10);

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

#[derive(Debug)]
pub struct DirStore {
    root: PathBuf,
    blocks: PathBuf,
    lock_wait: Duration,
}

impl DirStore {
    /// Opens the store at `root`, creating it if missing.
    pub fn open(root: impl Into<PathBuf>) -> Result<DirStore, IpamError> {
        let root = root.into();
        let blocks = root.join(BLOCKS_DIR);
        fs::create_dir_all(&blocks)
            .map_err(IpamError::io(&blocks, "create the store directory"))?;
        Ok(DirStore {
            root,
            blocks,
            lock_wait: LOCK_WAIT,
        })
    }

    /// How long a transaction waits for the lock before giving up with `StoreBusy`.
    pub fn with_lock_wait(mut self, wait: Duration) -> DirStore {
        self.lock_wait = wait;
        self
    }

    fn lock(&self) -> Result<Flock<File>, IpamError> {
        let path = self.root.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&path)
            .map_err(IpamError::io(&path, "open the lock file"))?;
        let started = Instant::now();
        let mut pause = Duration::from_micros(50);
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(locked) => return Ok(locked),
                Err((f, Errno::EWOULDBLOCK | Errno::EINTR)) => file = f,
                Err((_, errno)) => {
                    return Err(IpamError::io(&path, "lock the store")(errno.into()));
                }
            }
            if started.elapsed() > self.lock_wait {
                return Err(IpamError::StoreBusy {
                    path,
                    waited: started.elapsed(),
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(2));
        }
    }

    /// Every block file as (claim, path); with `sweep`, removes leftover temp files,
    /// which only a crashed writer can leave since writers hold the lock.
    fn list(&self, sweep: bool) -> Result<Vec<(Claim, PathBuf)>, IpamError> {
        let entries = fs::read_dir(&self.blocks).map_err(IpamError::io(&self.blocks, "list"))?;
        let mut claims = Vec::new();
        for entry in entries {
            let entry = entry.map_err(IpamError::io(&self.blocks, "list"))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let path = entry.path();
            if name.starts_with(TEMP_PREFIX) {
                if sweep {
                    // A leftover that cannot be removed is harmless: it is never read.
                    let _ = fs::remove_file(&path);
                }
                continue;
            }
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            let claim = parse_file_name(name).ok_or_else(|| IpamError::CorruptRecord {
                path: path.clone(),
                reason: "the name is not <network>_<prefix>@<node>.json".into(),
            })?;
            claims.push((claim, path));
        }
        Ok(claims)
    }

    fn read_snapshot(&self, node: &str, sweep: bool) -> Result<Snapshot, IpamError> {
        let listed = self.list(sweep)?;
        let mut own = Vec::new();
        for (claim, path) in &listed {
            if claim.node == node {
                own.push(read_block(path, claim)?);
            }
        }
        let claims = listed.into_iter().map(|(c, _)| c).collect();
        Ok(Snapshot { claims, own })
    }

    fn write_block(&self, block: &Block) -> Result<(), IpamError> {
        let name = file_name(&block.cidr, &block.node);
        write_atomically(&self.blocks, &name, &block.to_json())
    }

    fn nodes_dir(&self) -> PathBuf {
        self.root.join(NODES_DIR)
    }
}

/// Replaces `dir/name` by write-to-temp, fsync, rename: readers see the old record or
/// the new one. The caller syncs the directory once for a batch.
pub(crate) fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), IpamError> {
    let serial = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let temp = dir.join(format!(
        "{TEMP_PREFIX}{}-{serial}-{name}",
        std::process::id()
    ));
    let written = write_synced(&temp, bytes).and_then(|()| {
        fs::rename(&temp, dir.join(name)).map_err(IpamError::io(&temp, "rename into place"))
    });
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), IpamError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(IpamError::io(dir, "sync the directory"))
}

/// Each node writes only its own record, so the registry needs no lock.
impl Registry for DirStore {
    fn register(&self, node: &NodeRecord) -> Result<(), IpamError> {
        let dir = self.nodes_dir();
        fs::create_dir_all(&dir).map_err(IpamError::io(&dir, "create the node registry"))?;
        write_atomically(&dir, &format!("{}.json", node.name), &node.to_json())?;
        sync_dir(&dir)
    }

    fn deregister(&self, name: &str) -> Result<(), IpamError> {
        let path = self.nodes_dir().join(format!("{name}.json"));
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(IpamError::io(&path, "remove the node record")(e))
            }
            _ => Ok(()),
        }
    }

    fn nodes(&self) -> Result<Vec<NodeRecord>, IpamError> {
        let dir = self.nodes_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(IpamError::io(&dir, "list")(e)),
        };
        let mut nodes = Vec::new();
        for entry in entries {
            let path = entry.map_err(IpamError::io(&dir, "list"))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            let bytes = fs::read(&path).map_err(IpamError::io(&path, "read"))?;
            let record =
                NodeRecord::from_json(&bytes).map_err(|reason| IpamError::CorruptRecord {
                    path: path.clone(),
                    reason,
                })?;
            nodes.push(record);
        }
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(nodes)
    }

    fn claims(&self) -> Result<Vec<Claim>, IpamError> {
        Ok(self.list(false)?.into_iter().map(|(c, _)| c).collect())
    }
}

impl Store for DirStore {
    fn snapshot(&self, node: &str) -> Result<Snapshot, IpamError> {
        self.read_snapshot(node, false)
    }

    fn transact(&self, node: &str, decide: &mut Decide<'_>) -> Result<(), IpamError> {
        let _lock = self.lock()?;
        let snapshot = self.read_snapshot(node, true)?;
        let changed = decide(&snapshot)?;
        if changed.is_empty() {
            return Ok(());
        }
        for block in &changed {
            self.write_block(block)?;
        }
        sync_dir(&self.blocks)
    }

    fn check(&self) -> Result<(), IpamError> {
        let _lock = self.lock()?;
        self.list(true)?;
        let probe = self
            .blocks
            .join(format!("{TEMP_PREFIX}status-{}", std::process::id()));
        write_synced(&probe, b"{}\n")?;
        fs::remove_file(&probe).map_err(IpamError::io(&probe, "remove the probe file"))
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), IpamError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .map_err(IpamError::io(path, "create a file"))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_data())
        .map_err(IpamError::io(path, "write"))
}

fn read_block(path: &Path, claim: &Claim) -> Result<Block, IpamError> {
    let bytes = fs::read(path).map_err(IpamError::io(path, "read"))?;
    let corrupt = |reason: String| IpamError::CorruptRecord {
        path: path.to_path_buf(),
        reason,
    };
    let block = Block::from_json(&bytes).map_err(corrupt)?;
    if block.cidr != claim.block || block.node != claim.node {
        return Err(corrupt(format!(
            "it holds block {} of node {}, its name says {} of {}",
            block.cidr, block.node, claim.block, claim.node
        )));
    }
    Ok(block)
}

/// `10.244.0.64_26@node-1.json`; node names cannot hold `/` or `@` (config checks them).
pub fn file_name(cidr: &IpNetwork, node: &str) -> String {
    format!("{}_{}@{node}.json", cidr.network(), cidr.prefix())
}

fn parse_file_name(name: &str) -> Option<Claim> {
    let (cidr, node) = name.strip_suffix(".json")?.split_once('@')?;
    let (ip, prefix) = cidr.split_once('_')?;
    let block = IpNetwork::new(ip.parse().ok()?, prefix.parse().ok()?).ok()?;
    (!node.is_empty() && crate::pool::is_aligned(block)).then(|| Claim {
        block,
        node: node.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_carry_the_claim_both_ways() {
        for (cidr, node) in [
            ("10.244.0.64/26", "node-1"),
            ("fd00:244::40/122", "n.example"),
        ] {
            let cidr: IpNetwork = cidr.parse().unwrap();
            let name = file_name(&cidr, node);
            assert_eq!(
                parse_file_name(&name),
                Some(Claim {
                    block: cidr,
                    node: node.into()
                })
            );
        }
        assert_eq!(
            file_name(&"10.0.0.0/26".parse().unwrap(), "n"),
            "10.0.0.0_26@n.json"
        );
        assert_eq!(parse_file_name("10.0.0.1_26@n.json"), None, "host bits");
        assert_eq!(parse_file_name("10.0.0.0_26@.json"), None);
        assert_eq!(parse_file_name("10.0.0.0-26@n.json"), None);
    }
}
