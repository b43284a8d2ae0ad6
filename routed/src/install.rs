//! `fjord-routed install-cni`: what the DaemonSet's init container runs to put the `fjord`
//! and `fjord-ipam` binaries into the node's CNI bin directory and the conflist into its
//! CNI config directory.
//!
//! Every file is written atomically: to a temporary name in the target directory, synced,
//! then renamed over the old one, and the directory synced. The kubelet and the runtime
//! never see a half-written conflist, and a pod starting during an upgrade runs either the
//! old `fjord` or the new one, never a truncated file (a running old binary keeps its
//! inode). The binaries go first and the conflist last: a conflist is what tells the
//! runtime the network is ready, so it must not appear before the plugins it names.
//!
//! Runtimes (containerd, CRI-O, podman's libcni) use the first network config of the
//! directory in lexical order, so an earlier network's config (`10-calico.conflist`)
//! would keep serving pods. In exclusive mode, the default as in Cilium's, every other
//! config is moved aside once Fjord's is in place: renamed with the suffix
//! [`DISABLED_SUFFIX`], which no runtime reads, and named in the report, so renaming it
//! back undoes it.

use crate::error::RoutedError;
use fjord_ipam::{IpamConfig, StoreSpec};
use serde_json::Value;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The binaries the init container installs, in this order.
pub const CNI_BINARIES: [&str; 2] = ["fjord", "fjord-ipam"];
/// Replaced by the node's name (the downward API's `spec.nodeName`).
pub const NODE_NAME_PLACEHOLDER: &str = "__FJORD_NODE_NAME__";
/// Replaced by the store the daemon uses, so the plugin and the daemon agree on it.
pub const STORE_PLACEHOLDER: &str = "__FJORD_STORE__";
/// Prefix of the temporary files; leftovers of a killed run are removed by the next one.
const TEMP_PREFIX: &str = ".fjord-install-";
/// The installed conflist's name: `01-` sorts before every other network's usual name
/// (`05-cilium`, `10-calico`, `10-flannel`, `10-containerd-net`, `10-weave`,
/// `10-kuberouter`, `87-podman`) and after `00-multus.conf`, the meta-plugin that is
/// meant to come first and delegate to the next config.
pub const DEFAULT_CONFLIST_NAME: &str = "01-fjord.conflist";
/// What a config moved aside is renamed to: its name plus this (plus `.N` when that
/// name is taken by an earlier move).
pub const DISABLED_SUFFIX: &str = ".fjord-disabled";

/// What to install where.
#[derive(Debug, Clone)]
pub struct InstallPlan {
    /// Directory holding `fjord` and `fjord-ipam` (in the image).
    pub source_bin_dir: PathBuf,
    /// The node's CNI bin directory (`/opt/cni/bin`, mounted from the host).
    pub cni_bin_dir: PathBuf,
    /// The node's CNI config directory (`/etc/cni/net.d`, mounted from the host).
    pub cni_conf_dir: PathBuf,
    /// File name of the conflist in `cni_conf_dir`.
    pub conflist_name: String,
    /// The conflist with placeholders, as the ConfigMap holds it.
    pub template: String,
    pub node_name: String,
    pub store: String,
    /// Move every other network config aside (see the module documentation).
    pub exclusive: bool,
}

/// One file the installer looked after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub path: PathBuf,
    pub bytes: usize,
    /// False when the file already held exactly these bytes and mode.
    pub changed: bool,
}

/// A network config renamed so that no runtime reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovedAside {
    pub from: String,
    pub to: String,
    /// Why: another network's config (exclusive mode), or a Fjord conflist of an
    /// earlier release under another name.
    pub reason: MoveReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveReason {
    Exclusive,
    OldFjordConflist,
}

/// What `install` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallReport {
    pub files: Vec<Installed>,
    /// Configs renamed with [`DISABLED_SUFFIX`], in name order.
    pub moved_aside: Vec<MovedAside>,
    /// Other network configs left in place that sort before ours: the runtime uses the
    /// first one, so these shadow Fjord (only without exclusive mode).
    pub shadowing_configs: Vec<String>,
}

/// Fills the placeholders of a conflist template and checks that the result is a conflist
/// Fjord can run: JSON, `cniVersion`, `name`, a `plugins` list whose entries have a `type`,
/// a `fjord` entry, and an IPAM section `fjord-ipam` accepts whose node and store are the
/// daemon's (`node_name`, `store`).
pub fn render_conflist(
    template: &str,
    node_name: &str,
    store: &str,
) -> Result<String, RoutedError> {
    for (what, value) in [("node name", node_name), ("store", store)] {
        if value.is_empty()
            || value
                .chars()
                .any(|c| c == '"' || c == '\\' || c.is_control())
        {
            return Err(conflist_error(format!(
                "the {what} {value:?} cannot go into the conflist: it must be non-empty, \
                 without quotes, backslashes or control characters"
            )));
        }
    }
    let rendered = template
        .replace(NODE_NAME_PLACEHOLDER, node_name)
        .replace(STORE_PLACEHOLDER, store);
    if let Some(at) = rendered.find("__FJORD_") {
        let rest: String = rendered[at..].chars().take(40).collect();
        return Err(conflist_error(format!(
            "unknown placeholder at {rest:?}; the known ones are {NODE_NAME_PLACEHOLDER} and {STORE_PLACEHOLDER}"
        )));
    }
    check_conflist(&rendered, node_name, store)?;
    Ok(rendered)
}

fn conflist_error(reason: String) -> RoutedError {
    RoutedError::Conflist { reason }
}

fn check_conflist(text: &str, node_name: &str, store: &str) -> Result<(), RoutedError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| conflist_error(format!("not JSON after filling placeholders: {e}")))?;
    for key in ["cniVersion", "name"] {
        let non_empty = value
            .get(key)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty());
        if !non_empty {
            return Err(conflist_error(format!(
                "\"{key}\" must be a non-empty string"
            )));
        }
    }
    let plugins = match value.get("plugins") {
        Some(Value::Array(list)) if !list.is_empty() => list,
        _ => {
            return Err(conflist_error(
                "\"plugins\" must be a non-empty list".into(),
            ))
        }
    };
    for (i, plugin) in plugins.iter().enumerate() {
        if !plugin.get("type").is_some_and(Value::is_string) {
            return Err(conflist_error(format!("plugins[{i}] has no \"type\"")));
        }
    }
    let fjord = plugins
        .iter()
        .find(|p| p["type"] == "fjord")
        .ok_or_else(|| conflist_error("no plugin of \"type\": \"fjord\"".into()))?;
    let ipam = fjord
        .get("ipam")
        .and_then(Value::as_object)
        .ok_or_else(|| conflist_error("the fjord plugin has no \"ipam\" object".into()))?;
    if ipam.get("type").and_then(Value::as_str) == Some("fjord-ipam") {
        let config = IpamConfig::from_json(ipam)
            .map_err(|e| conflist_error(format!("the fjord plugin's ipam: {e}")))?;
        let plugin_store = ipam
            .get("store")
            .and_then(Value::as_str)
            .unwrap_or("(default)");
        check_agrees_with_daemon(&config, plugin_store, node_name, store)?;
    }
    Ok(())
}

/// The plugin must allocate as the node the daemon runs for, from the store the daemon
/// fills: with the `kubernetes` store a different directory or node name means the
/// plugin waits forever for a podCIDRs file nobody writes (code 11 on every ADD).
/// A template that spells them out instead of using the placeholders must still agree.
fn check_agrees_with_daemon(
    config: &IpamConfig,
    plugin_store: &str,
    node_name: &str,
    store: &str,
) -> Result<(), RoutedError> {
    let daemon_store: StoreSpec = store
        .parse()
        .map_err(|e| conflist_error(format!("the daemon's store {store:?} (FJORD_STORE): {e}")))?;
    // The TLS files are the plugin's own (paths on the host); the store is the same.
    if config.store.location() != daemon_store.location() {
        return Err(conflist_error(format!(
            "the fjord plugin's ipam store {plugin_store:?} is not the daemon's store {store:?} \
             (FJORD_STORE): the plugin would not see the blocks the daemon keeps; \
             use \"store\": \"{STORE_PLACEHOLDER}\""
        )));
    }
    if config.node_name != node_name {
        return Err(conflist_error(format!(
            "the fjord plugin's ipam node {:?} is not this node {node_name:?} \
             (FJORD_NODE_NAME); use \"nodeName\": \"{NODE_NAME_PLACEHOLDER}\"",
            config.node_name
        )));
    }
    Ok(())
}

/// Installs the binaries, then the rendered conflist.
pub fn install(plan: &InstallPlan) -> Result<InstallReport, RoutedError> {
    check_conflist_name(&plan.conflist_name)?;
    let conflist = render_conflist(&plan.template, &plan.node_name, &plan.store)?;
    // Read every source before writing anything: a missing binary installs nothing.
    let binaries = CNI_BINARIES
        .iter()
        .map(|name| {
            let source = plan.source_bin_dir.join(name);
            fs::read(&source)
                .map(|bytes| (*name, bytes))
                .map_err(RoutedError::install(&source, "read"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    check_chained_plugins(&conflist, &plan.cni_bin_dir)?;
    let mut files = Vec::new();
    for (name, bytes) in &binaries {
        files.push(install_file(&plan.cni_bin_dir, name, bytes, 0o755)?);
    }
    files.push(install_file(
        &plan.cni_conf_dir,
        &plan.conflist_name,
        conflist.as_bytes(),
        0o644,
    )?);
    let moved_aside = move_others_aside(&plan.cni_conf_dir, &plan.conflist_name, plan.exclusive)?;
    Ok(InstallReport {
        files,
        moved_aside,
        shadowing_configs: shadowing_configs(&plan.cni_conf_dir, &plan.conflist_name)?,
    })
}

/// The plugins the conflist chains after `fjord` (`portmap`, `bandwidth`) come from the
/// node's CNI bin directory, not from the image: without them every pod's ADD would
/// fail, so the installer refuses to install a conflist naming one that is not there.
fn check_chained_plugins(conflist: &str, cni_bin_dir: &Path) -> Result<(), RoutedError> {
    let value: Value = serde_json::from_str(conflist)
        .map_err(|e| conflist_error(format!("not JSON after filling placeholders: {e}")))?;
    let types = value["plugins"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["type"].as_str());
    for plugin in types.filter(|t| !CNI_BINARIES.contains(t)) {
        let path = cni_bin_dir.join(plugin);
        let executable =
            fs::metadata(&path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        if !executable {
            return Err(conflist_error(format!(
                "it chains the plugin {plugin:?}, which is not an executable in {}: install the \
                 CNI reference plugins on the node (kubeadm's kubernetes-cni package, Debian's \
                 containernetworking-plugins) or remove {plugin:?} from the conflist",
                cni_bin_dir.display()
            )));
        }
    }
    Ok(())
}

/// Renames the network configs in `dir` that are not `ours` out of every runtime's
/// sight: Fjord conflists of an earlier release always, other networks' configs in
/// exclusive mode.
fn move_others_aside(
    dir: &Path,
    ours: &str,
    exclusive: bool,
) -> Result<Vec<MovedAside>, RoutedError> {
    let mut moved = Vec::new();
    for name in network_configs(dir)? {
        if name == ours {
            continue;
        }
        let path = dir.join(&name);
        let reason = if is_fjord_config(&path) {
            MoveReason::OldFjordConflist
        } else if exclusive {
            MoveReason::Exclusive
        } else {
            continue;
        };
        let to = free_disabled_name(dir, &name);
        fs::rename(&path, dir.join(&to)).map_err(RoutedError::install(&path, "move aside"))?;
        moved.push(MovedAside {
            from: name,
            to,
            reason,
        });
    }
    if !moved.is_empty() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(RoutedError::install(dir, "sync directory"))?;
    }
    Ok(moved)
}

/// `NAME.fjord-disabled`, or `NAME.fjord-disabled.N` when an earlier move took it.
fn free_disabled_name(dir: &Path, name: &str) -> String {
    let first = format!("{name}{DISABLED_SUFFIX}");
    if !dir.join(&first).exists() {
        return first;
    }
    (1..)
        .map(|n| format!("{first}.{n}"))
        .find(|candidate| !dir.join(candidate).exists())
        .expect("some numbered name is free")
}

/// A conflist (or single-plugin `.conf`) whose plugins include `fjord`.
fn is_fjord_config(path: &Path) -> bool {
    let Some(value) = fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
    else {
        return false;
    };
    value["type"] == "fjord"
        || value["plugins"]
            .as_array()
            .is_some_and(|plugins| plugins.iter().any(|p| p["type"] == "fjord"))
}

/// Runtimes read only `.conflist` (and `.conf`, `.json`) files directly in the config
/// directory: any other name would be installed and never used.
fn check_conflist_name(name: &str) -> Result<(), RoutedError> {
    let plain = !name.contains('/') && !name.starts_with('.');
    if plain && name.len() > ".conflist".len() && name.ends_with(".conflist") {
        return Ok(());
    }
    Err(conflist_error(format!(
        "the conflist name {name:?} must be a file name ending in .conflist, such as 01-fjord.conflist"
    )))
}

/// Writes `bytes` to `dir/name` with `mode`, atomically; leaves an identical file alone.
pub fn install_file(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    mode: u32,
) -> Result<Installed, RoutedError> {
    fs::create_dir_all(dir).map_err(RoutedError::install(dir, "create directory"))?;
    remove_leftovers(dir, name)?;
    let path = dir.join(name);
    if holds_exactly(&path, bytes, mode) {
        return Ok(Installed {
            path,
            bytes: bytes.len(),
            changed: false,
        });
    }
    let temp = dir.join(format!("{TEMP_PREFIX}{name}.{}", std::process::id()));
    let written = write_synced(&temp, bytes, mode).and_then(|()| {
        fs::rename(&temp, &path).map_err(RoutedError::install(&path, "rename into place"))
    });
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(RoutedError::install(dir, "sync directory"))?;
    Ok(Installed {
        path,
        bytes: bytes.len(),
        changed: true,
    })
}

fn write_synced(temp: &Path, bytes: &[u8], mode: u32) -> Result<(), RoutedError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(temp)
        .map_err(RoutedError::install(temp, "create"))?;
    file.write_all(bytes)
        .map_err(RoutedError::install(temp, "write"))?;
    // The umask may have narrowed the mode given to open.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(RoutedError::install(temp, "set the mode of"))?;
    file.sync_all().map_err(RoutedError::install(temp, "sync"))
}

fn holds_exactly(path: &Path, bytes: &[u8], mode: u32) -> bool {
    let same_mode = fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o7777 == mode)
        .unwrap_or(false);
    same_mode && fs::read(path).is_ok_and(|old| old == bytes)
}

/// Removes temporary files of `name` that a killed earlier run left behind.
fn remove_leftovers(dir: &Path, name: &str) -> Result<(), RoutedError> {
    let prefix = format!("{TEMP_PREFIX}{name}.");
    let entries = fs::read_dir(dir).map_err(RoutedError::install(dir, "list"))?;
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let path = entry.path();
            fs::remove_file(&path).map_err(RoutedError::install(&path, "remove leftover"))?;
        }
    }
    Ok(())
}

/// Network configs in `dir` that a runtime would pick before `ours` (it takes the first
/// `.conf`, `.conflist` or `.json` in lexical order).
pub fn shadowing_configs(dir: &Path, ours: &str) -> Result<Vec<String>, RoutedError> {
    let mut before = network_configs(dir)?;
    before.retain(|n| n.as_str() < ours);
    Ok(before)
}

/// The files in `dir` a runtime would read as network configs, sorted by name.
fn network_configs(dir: &Path) -> Result<Vec<String>, RoutedError> {
    let entries = fs::read_dir(dir).map_err(RoutedError::install(dir, "list"))?;
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file() || t.is_symlink()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| is_network_config(n))
        .collect();
    names.sort();
    Ok(names)
}

fn is_network_config(name: &str) -> bool {
    !name.starts_with('.')
        && [".conf", ".conflist", ".json"]
            .iter()
            .any(|ext| name.ends_with(ext))
}

#[cfg(test)]
mod tests;
