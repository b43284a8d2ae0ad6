//! `--store etcd`: Debian's etcd (package etcd-server) run in the lab's host1 namespace,
//! listening on host1's underlay address, its data in the lab's directory.

use anyhow::{bail, Context, Result};
use fjord_conformance::lab::{tail, Lab};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const CLIENT_PORT: u16 = 2379;
const HEALTHY_WITHIN: Duration = Duration::from_secs(30);

/// The `etcd` binary, or what to install.
fn etcd_binary() -> Result<PathBuf> {
    for dir in ["/usr/bin", "/usr/local/bin"] {
        let path = PathBuf::from(dir).join("etcd");
        if path.is_file() {
            return Ok(path);
        }
    }
    bail!(
        "etcd is not installed: `apt-get install etcd-server` \
         (conformance/scripts/install-test-deps.sh installs it)"
    )
}

/// Starts etcd in host 0 of `lab`, waits until it answers /health, and returns the
/// store argument (`etcd:http://ADDR:2379`). The process is recorded in the journal
/// and outlives `up`.
pub fn start(lab: &Lab) -> Result<String> {
    let binary = etcd_binary()?;
    let host = lab.host(0);
    let addr = host.address_v4();
    let client = format!("http://{addr}:{CLIENT_PORT}");
    // Peers are not wanted (one member): the peer URL stays on the host's loopback.
    let peer = "http://127.0.0.1:2380";
    let data = lab.dir().join("etcd");
    let log_path = lab.dir().join("etcd.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("create {}", log_path.display()))?;
    let mut cmd = Command::new(binary);
    cmd.arg("--name")
        .arg("fjord-lab")
        .arg("--data-dir")
        .arg(&data)
        .arg("--listen-client-urls")
        .arg(&client)
        .arg("--advertise-client-urls")
        .arg(&client)
        .arg("--listen-peer-urls")
        .arg(peer)
        .arg("--initial-advertise-peer-urls")
        .arg(peer)
        .arg("--initial-cluster")
        .arg(format!("fjord-lab={peer}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let mut child = lab.spawn_service("etcd", host.netns(), &mut cmd);
    let target = SocketAddr::new(addr.into(), CLIENT_PORT);
    let deadline = Instant::now() + HEALTHY_WITHIN;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            bail!(
                "etcd exited ({status}) before it was healthy; its log ({}):\n{}",
                log_path.display(),
                tail(&log_path, 3000)
            );
        }
        if healthy(host.netns().path(), target) {
            return Ok(format!("etcd:{client}"));
        }
        if Instant::now() >= deadline {
            bail!(
                "etcd at {client} did not report healthy within {HEALTHY_WITHIN:?}; log {}:\n{}",
                log_path.display(),
                tail(&log_path, 3000)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `GET /health` from inside the host's namespace answers `"health":"true"`.
fn healthy(netns: PathBuf, target: SocketAddr) -> bool {
    std::thread::spawn(move || -> Option<bool> {
        let file = std::fs::File::open(netns).ok()?;
        nix::sched::setns(
            std::os::fd::AsFd::as_fd(&file),
            nix::sched::CloneFlags::CLONE_NEWNET,
        )
        .ok()?;
        let mut conn = TcpStream::connect_timeout(&target, Duration::from_secs(1)).ok()?;
        conn.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        conn.write_all(b"GET /health HTTP/1.0\r\n\r\n").ok()?;
        let mut body = String::new();
        let _ = conn.read_to_string(&mut body);
        Some(body.contains("\"health\":\"true\""))
    })
    .join()
    .ok()
    .flatten()
    .unwrap_or(false)
}
