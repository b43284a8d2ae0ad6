//! Logging to the conflist's `logFile`: stdout belongs to the spec, and runtimes drop
//! stderr, so a file is where an operator looks.

use crate::error::PluginError;
use std::fs::OpenOptions;
use std::path::Path;

/// Starts logging to `path` (appending). Without a path nothing is logged.
pub fn init(path: Option<&Path>) -> Result<(), PluginError> {
    let Some(path) = path else {
        return Ok(());
    };
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| PluginError::LogFile {
            path: path.to_path_buf(),
            source,
        })?;
    let subscriber = tracing_subscriber::fmt()
        .with_writer(std::sync::Mutex::new(file))
        .with_ansi(false)
        .with_target(false)
        .finish();
    // Only fails if a subscriber is already set, which cannot happen in a one-verb process.
    let _ = tracing::subscriber::set_global_default(subscriber);
    Ok(())
}
