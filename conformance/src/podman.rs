//! A private podman 4.3 (Debian's) for one test: its containers.conf and storage.conf,
//! storage and run state all in a directory of the test, so nothing of the machine's own
//! podman is read or touched. What it needs here (runc, cgroupfs, file events, fixed
//! ulimits) is written down in docs/testing.md.
//!
//! Dropping it resets its storage and lazily unmounts whatever overlay layers are left,
//! so the directory can be removed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// podman's CNI backend, for tests that attach containers to a network.
pub struct CniNetwork {
    /// The conflist directory (`network_config_dir`).
    pub config_dir: PathBuf,
    /// Searched in order for the plugins (`cni_plugin_dirs`).
    pub plugin_dirs: Vec<PathBuf>,
}

pub struct PrivatePodman {
    root: PathBuf,
}

impl PrivatePodman {
    /// Writes the configs under `root` (created); `network` sets up the CNI backend.
    pub fn new(root: &Path, network: Option<&CniNetwork>) -> PrivatePodman {
        for dir in ["graph", "run", "tmp"] {
            std::fs::create_dir_all(root.join(dir))
                .unwrap_or_else(|e| panic!("create {}: {e}", root.join(dir).display()));
        }
        let network_section = network.map_or(String::new(), |n| {
            let dirs: Vec<String> = n
                .plugin_dirs
                .iter()
                .map(|d| format!("\"{}\"", d.display()))
                .collect();
            format!(
                "\n[network]\nnetwork_backend = \"cni\"\nnetwork_config_dir = \"{}\"\ncni_plugin_dirs = [{}]\n",
                n.config_dir.display(),
                dirs.join(", ")
            )
        });
        let containers_conf = format!(
            r#"[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
netns = "private"
{network_section}
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{root}/events.log"
tmp_dir = "{root}/tmp"
"#,
            root = root.display(),
        );
        let storage_conf = format!(
            "[storage]\ndriver = \"overlay\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
            root.join("graph").display(),
            root.join("run").display(),
        );
        write(&root.join("containers.conf"), &containers_conf);
        write(&root.join("storage.conf"), &storage_conf);
        PrivatePodman {
            root: root.to_path_buf(),
        }
    }

    /// `podman` with this setup's configs, in the caller's namespaces.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new("podman");
        self.configure(&mut cmd);
        cmd
    }

    /// Points `cmd` (podman itself, or `nsenter ... podman`) at this setup's configs.
    pub fn configure(&self, cmd: &mut Command) {
        cmd.env("CONTAINERS_CONF", self.root.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.root.join("storage.conf"));
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl Drop for PrivatePodman {
    fn drop(&mut self) {
        let _ = self
            .command()
            .args(["system", "reset", "--force"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        unmount_everything_under(&self.root);
    }
}

/// Lazily unmounts every mount point below `dir` (overlay layers podman left), deepest
/// first, so the directory can be removed.
pub fn unmount_everything_under(dir: &Path) {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = format!("{}/", dir.display());
    let mut points: Vec<&str> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|point| point.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        let _ = Command::new("umount").args(["-l", point]).status();
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}
