//! What the injector talks to: a fresh pair of namespaces per measurement (receiver and
//! injector, joined by a veth), and the receivers run in the receiver namespace:
//! fjord-routed with the injector as its `--peer`, or BIRD 2 with a kernel protocol
//! exporting everything into the main table. The kernel floor (`ip -batch`) runs in a
//! pair of its own.

use anyhow::{bail, ensure, Context, Result};
use fjord_conformance::lab::{spawn_in_netns, stop_child, tail};
use fjord_conformance::peers::routing_command;
use fjord_conformance::{fjord_bin_dir, unique_ifname, Netns, TempDir};
use std::fmt::Write as _;
use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::injector::{self, ASN, HOLD_TIME};

/// The receiver's and the injector's veth addresses (a /30 of their own).
pub const RECEIVER_ADDRESS: Ipv4Addr = Ipv4Addr::new(192, 168, 255, 1);
pub const INJECTOR_ADDRESS: Ipv4Addr = Ipv4Addr::new(192, 168, 255, 2);
/// fjord-routed's route protocol (routed/src/kernel.rs) and BIRD's (RTPROT_BIRD).
pub const PROTO_FJORD: u8 = 200;
pub const PROTO_BIRD: u8 = 12;
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A receiver namespace and an injector namespace joined by a veth; both are deleted
/// on drop, with everything in them.
pub struct Pair {
    pub receiver: Netns,
    pub injector: Netns,
    pub dir: TempDir,
}

impl Pair {
    pub fn new() -> Pair {
        let receiver = Netns::new("r");
        let injector = Netns::new("i");
        let (a, b) = (unique_ifname("v"), unique_ifname("v"));
        fjord_conformance::netns::ip(&[
            "link",
            "add",
            &a,
            "netns",
            receiver.name(),
            "type",
            "veth",
            "peer",
            "name",
            &b,
            "netns",
            injector.name(),
        ]);
        for (ns, dev, addr) in [
            (&receiver, &a, RECEIVER_ADDRESS),
            (&injector, &b, INJECTOR_ADDRESS),
        ] {
            ns.ip(&["addr", "add", &format!("{addr}/30"), "dev", dev]);
            ns.ip(&["link", "set", dev, "up"]);
        }
        Pair {
            receiver,
            injector,
            dir: TempDir::new("bgp"),
        }
    }
}

/// The release build of fjord-routed next to this binary.
pub fn fjord_routed_binary() -> Result<PathBuf> {
    let path = fjord_bin_dir().join("fjord-routed");
    ensure!(
        path.is_file(),
        "{} does not exist: run `cargo build --release -p fjord-routed` first",
        path.display()
    );
    Ok(path)
}

/// Checks BIRD is installed before anything is set up (the lookup panics with the
/// install command when it is not).
pub fn bird_binary() -> PathBuf {
    routing_command("bird")
}

/// The floor: one `ip -batch` of `n` `route add` lines, as fjord-routed would write
/// them, in the receiver namespace. Returns ip's wall time.
pub fn kernel_floor(pair: &Pair, n: usize) -> Result<Duration> {
    let batch = pair.dir.join("routes.batch");
    let mut text = String::with_capacity(n * 64);
    for i in 0..n {
        let _ = writeln!(
            text,
            "route add {} via {INJECTOR_ADDRESS} proto {PROTO_FJORD} metric 2048",
            injector::prefix(i)
        );
    }
    std::fs::write(&batch, text).with_context(|| format!("write {}", batch.display()))?;
    let started = std::time::Instant::now();
    let out = Command::new("ip")
        .args(["-n", pair.receiver.name(), "-batch"])
        .arg(&batch)
        .output()
        .context("run ip -batch")?;
    let took = started.elapsed();
    ensure!(
        out.status.success(),
        "ip -batch failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(took)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Fjord,
    Bird,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Fjord => "fjord",
            Kind::Bird => "bird",
        }
    }

    pub fn protocol(self) -> u8 {
        match self {
            Kind::Fjord => PROTO_FJORD,
            Kind::Bird => PROTO_BIRD,
        }
    }
}

/// A running receiver; stopped (SIGTERM, then SIGKILL) and reaped on drop.
pub struct Receiver {
    pub kind: Kind,
    child: Child,
    log: PathBuf,
}

impl Receiver {
    pub fn start(kind: Kind, pair: &Pair) -> Result<Receiver> {
        // fjord-routed logs to stderr; BIRD to the log file its config names.
        let stderr = pair.dir.join(format!("{}.stderr", kind.label()));
        let (mut cmd, log) = match kind {
            Kind::Fjord => (fjord_command(pair.dir.path())?, stderr.clone()),
            Kind::Bird => {
                let log = pair.dir.join("bird.log");
                (bird_command(pair.dir.path(), &log)?, log)
            }
        };
        let out = File::create(&stderr).with_context(|| format!("create {}", stderr.display()))?;
        cmd.current_dir(pair.dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let child = spawn_in_netns(&pair.receiver, &mut cmd);
        Ok(Receiver { kind, child, log })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails with the end of its log if it has exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status})\n--- log ---\n{}",
                self.kind.label(),
                self.log_tail()
            );
        }
        Ok(())
    }

    pub fn log_tail(&self) -> String {
        tail(&self.log, 3000)
    }

    /// VmHWM: the peak resident set so far, KiB.
    pub fn peak_rss_kib(&self) -> Result<u64> {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
        vm_hwm_kib(&status).with_context(|| format!("no VmHWM in {path}"))
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        stop_child(&mut self.child, STOP_GRACE);
    }
}

/// `VmHWM:    12345 kB` from /proc/PID/status.
pub fn vm_hwm_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

fn fjord_command(dir: &Path) -> Result<Command> {
    let mut cmd = Command::new(fjord_routed_binary()?);
    cmd.args(["run", "--node-name", "bgpbench", "--node-address"])
        .arg(RECEIVER_ADDRESS.to_string())
        .arg("--store")
        .arg(format!("dir:{}", dir.join("store").display()))
        .arg("--peer")
        .arg(INJECTOR_ADDRESS.to_string())
        .arg("--no-mesh")
        .arg("--socket")
        .arg(dir.join("routed.sock"))
        .arg("--mtu-file")
        .arg(dir.join("mtu"))
        .args(["--hold-time", &HOLD_TIME.to_string()])
        .env("RUST_LOG", "info");
    Ok(cmd)
}

/// BIRD's config: the kernel protocol exports every route into the main table (scan
/// time left at its default), one iBGP neighbor, the injector, directly connected.
pub fn bird_config(log: &Path) -> String {
    format!(
        "# Written by fjord-bench bgp.\n\
         router id {RECEIVER_ADDRESS};\n\
         log \"{}\" {{ info, warning, error, fatal }};\n\
         protocol device {{ }}\n\
         protocol kernel {{\n  ipv4 {{ import none; export all; }};\n}}\n\
         protocol bgp injector {{\n  local {RECEIVER_ADDRESS} as {ASN};\n  \
         neighbor {INJECTOR_ADDRESS} as {ASN};\n  direct;\n  hold time {HOLD_TIME};\n  \
         ipv4 {{ import all; export none; }};\n}}\n",
        log.display()
    )
}

fn bird_command(dir: &Path, log: &Path) -> Result<Command> {
    let conf = dir.join("bird.conf");
    std::fs::write(&conf, bird_config(log))?;
    let mut cmd = Command::new(bird_binary());
    cmd.arg("-f")
        .arg("-c")
        .arg(&conf)
        .arg("-s")
        .arg(dir.join("bird.ctl"))
        .arg("-P")
        .arg(dir.join("bird.pid"));
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_hwm_is_read_in_kib() {
        let status = "Name:\tbird\nVmPeak:\t  20000 kB\nVmHWM:\t   12288 kB\nVmRSS:\t 9000 kB\n";
        assert_eq!(vm_hwm_kib(status), Some(12288));
        assert_eq!(vm_hwm_kib("Name:\tx\n"), None);
    }

    #[test]
    fn bird_exports_everything_to_the_kernel_from_one_ibgp_neighbor() {
        let c = bird_config(Path::new("/tmp/x.log"));
        assert!(c.contains("export all;"));
        assert!(c.contains("neighbor 192.168.255.2 as 64512;"));
        assert!(c.contains("local 192.168.255.1 as 64512;"));
    }
}
