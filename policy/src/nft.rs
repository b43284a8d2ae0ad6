//! The shell: `nft` reads table `inet fjord` (`nft -j list table inet fjord`) and
//! applies batches (`nft -f -`, one transaction each). Why the `nft` binary and not
//! netlink from this process: docs/decisions/0003-nftables-interface.md.
//!
//! [`PolicyTable`] keeps the kernel's table equal to a desired [`Table`]: it remembers
//! what it last applied so that a change costs one diff and one small batch, and
//! [`PolicyTable::reconcile`] re-reads the kernel (at start: the table of the previous
//! daemon is adopted, not rebuilt; then periodically: a rule deleted by hand comes back).

use crate::error::PolicyError;
use crate::ruleset::{parse_listing, plan, Table, TABLE};
use std::ffi::OsString;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How often the daemon should re-read the kernel's table to repair drift: a hand edit
/// is undone within this time. A reconcile of a 1,000-pod table (6,000 rules, 13,000
/// elements) took 2.6 s of nft and parsing on a loaded 2-core machine
/// (docs/decisions/0003-nftables-interface.md); a 110-pod node's is ~10x less.
pub const DRIFT_CHECK_INTERVAL: Duration = Duration::from_secs(30);

/// How to run `nft`: the program and the arguments before nft's own (tests run it as
/// `ip netns exec NAME nft`).
#[derive(Debug, Clone)]
pub struct Nft {
    command: Vec<OsString>,
}

impl Default for Nft {
    fn default() -> Nft {
        Nft::new("nft")
    }
}

impl Nft {
    pub fn new(program: impl Into<OsString>) -> Nft {
        Nft {
            command: vec![program.into()],
        }
    }

    /// `nft` behind a wrapper, e.g. `["ip", "netns", "exec", "fjt-node", "nft"]`.
    pub fn with_command<I, S>(command: I) -> Nft
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Nft {
            command: command.into_iter().map(Into::into).collect(),
        }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.command[0]);
        cmd.args(&self.command[1..]);
        cmd
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<std::process::Output, PolicyError> {
        let mut cmd = self.command();
        cmd.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|source| PolicyError::NftMissing {
            program: self.command[0].clone().into(),
            source,
        })?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A failed write shows up as nft's own error below.
            let _ = pipe.write_all(text.as_bytes());
        }
        child
            .wait_with_output()
            .map_err(|source| PolicyError::NftMissing {
                program: self.command[0].clone().into(),
                source,
            })
    }

    /// Whether nftables works here: the binary runs and the kernel takes a (checked,
    /// never committed) transaction on table `inet fjord`. The daemon calls this at
    /// start with policy or NAT on and exits non-zero on an error.
    pub fn check(&self) -> Result<(), PolicyError> {
        let out = self.run(&["-c", "-f", "-"], Some(&format!("add table {TABLE}\n")))?;
        if out.status.success() {
            return Ok(());
        }
        Err(PolicyError::Nft {
            what: "cannot use nftables (is nf_tables in the kernel?)".into(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }

    /// The kernel's table, `None` when there is none.
    pub fn list(&self) -> Result<Option<Table>, PolicyError> {
        let out = self.run(&["-j", "list", "table", "inet", "fjord"], None)?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            if stderr.contains("No such file or directory") {
                return Ok(None);
            }
            return Err(PolicyError::Nft {
                what: "list table inet fjord".into(),
                stderr: stderr.trim().to_string(),
            });
        }
        parse_listing(&String::from_utf8_lossy(&out.stdout)).map(Some)
    }

    /// Applies `text` as one transaction: all of it or nothing.
    pub fn apply(&self, text: &str, commands: usize) -> Result<(), PolicyError> {
        let out = self.run(&["-f", "-"], Some(text))?;
        if out.status.success() {
            return Ok(());
        }
        Err(PolicyError::NftBatch {
            commands,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// What one sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// nft commands in the batch (0: the kernel already held the desired table).
    pub commands: usize,
    /// The kernel's table was read (start, drift check, or after a failed batch).
    pub read_kernel: bool,
    pub elapsed: Duration,
}

/// Keeps table `inet fjord` equal to the desired table.
#[derive(Debug)]
pub struct PolicyTable {
    nft: Nft,
    /// What the kernel holds, as far as this process knows: `None` until read.
    known: Option<Option<Table>>,
}

impl PolicyTable {
    pub fn new(nft: Nft) -> PolicyTable {
        PolicyTable { nft, known: None }
    }

    pub fn nft(&self) -> &Nft {
        &self.nft
    }

    /// Makes the kernel hold `desired`, diffing against what was last applied (read
    /// from the kernel the first time). A batch the kernel refuses (someone changed the
    /// table meanwhile) is retried once against a fresh reading.
    pub fn sync(&mut self, desired: &Table) -> Result<SyncReport, PolicyError> {
        let started = Instant::now();
        let read_kernel = self.known.is_none();
        if read_kernel {
            self.known = Some(self.nft.list()?);
        }
        match self.apply_diff(desired) {
            Ok(commands) => Ok(SyncReport {
                commands,
                read_kernel,
                elapsed: started.elapsed(),
            }),
            Err(first) if !read_kernel => {
                tracing::warn!(error = %first, "nft batch refused; re-reading table inet fjord");
                let mut report = self.reconcile(desired)?;
                report.elapsed = started.elapsed();
                Ok(report)
            }
            Err(e) => Err(e),
        }
    }

    /// Re-reads the kernel's table and repairs whatever differs from `desired` (at
    /// start, and every [`DRIFT_CHECK_INTERVAL`]).
    pub fn reconcile(&mut self, desired: &Table) -> Result<SyncReport, PolicyError> {
        let started = Instant::now();
        self.known = Some(self.nft.list()?);
        let commands = self.apply_diff(desired)?;
        if commands > 0 {
            tracing::info!(
                commands,
                "table inet fjord differed from the desired state: repaired"
            );
        }
        Ok(SyncReport {
            commands,
            read_kernel: true,
            elapsed: started.elapsed(),
        })
    }

    fn apply_diff(&mut self, desired: &Table) -> Result<usize, PolicyError> {
        let actual = self.known.as_ref().and_then(Option::as_ref);
        let batch = plan(actual, desired);
        if batch.is_empty() {
            return Ok(0);
        }
        let result = self.nft.apply(&batch.text(), batch.commands.len());
        match result {
            Ok(()) => {
                self.known = Some((!desired.is_empty()).then(|| desired.clone()));
                Ok(batch.commands.len())
            }
            Err(e) => {
                // What the kernel holds is unknown now: the next sync reads it.
                self.known = None;
                Err(e)
            }
        }
    }
}
