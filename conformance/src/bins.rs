//! Where the binaries under test are: the workspace's own build output, and the
//! reference CNI plugins from Debian's `containernetworking-plugins`.

use std::path::PathBuf;

/// Directory of the reference plugins (ptp, host-local, ...).
pub const REFERENCE_PLUGIN_DIR: &str = "/usr/lib/cni";

/// The workspace's binary directory: `$FJORD_BIN_DIR` if set, else `target/<profile>/`,
/// found from the running test executable (`target/<profile>/deps/<test>`).
pub fn fjord_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FJORD_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe
        .parent()
        .expect("test executable has a directory")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// The path of a workspace binary (`fjord`, `fjord-ipam`, ...); panics with what to do
/// when it is not built.
pub fn fjord_bin(name: &str) -> PathBuf {
    let path = fjord_bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} does not exist: run `cargo build --workspace --bins` first \
         (or point FJORD_BIN_DIR at the directory holding {name})",
        path.display()
    );
    path
}

/// The reference plugins' directory; panics with what to do when they are not installed.
pub fn reference_plugin_dir() -> PathBuf {
    let dir = PathBuf::from(REFERENCE_PLUGIN_DIR);
    for plugin in ["ptp", "host-local"] {
        assert!(
            dir.join(plugin).is_file(),
            "{}/{plugin} does not exist: the reference CNI plugins are missing; \
             `conformance/scripts/install-test-deps.sh` installs them \
             (Debian package containernetworking-plugins)",
            dir.display()
        );
    }
    dir
}

/// The path of one reference plugin, e.g. `reference_plugin("ptp")`.
pub fn reference_plugin(name: &str) -> PathBuf {
    let path = reference_plugin_dir().join(name);
    assert!(
        path.is_file(),
        "{} does not exist: `conformance/scripts/install-test-deps.sh` installs the \
         reference CNI plugins",
        path.display()
    );
    path
}
