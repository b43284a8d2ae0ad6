//! Real etcd members (Debian's `etcd-server`) for the `etcd:` store tests and benchmark.
//!
//! Each member runs inside a lab host's namespace on its underlay address, so the node
//! namespaces the plugins and daemons run in reach it over the lab underlay, and the
//! root namespace never binds a port. Data dirs live on tmpfs (`/dev/shm`) so raft's
//! fsyncs do not measure the disk other tests share. Members are killed by PID on drop.

use crate::lab::Lab;
use crate::names::unique_name;
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ETCD_BINARY: &str = "etcd";
pub const CLIENT_PORT: u16 = 2379;
pub const PEER_PORT: u16 = 2380;
/// Where a TLS member serves /health and /metrics in plain HTTP (`--listen-metrics-urls`),
/// so the tests can watch it without a client certificate.
pub const METRICS_PORT: u16 = 2381;
/// How long a fresh or restarted cluster may take to elect a leader and answer.
pub const HEALTHY_WITHIN: Duration = Duration::from_secs(20);

struct Member {
    name: String,
    netns: PathBuf,
    address: Ipv4Addr,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

pub struct EtcdCluster {
    members: Vec<Member>,
    initial_cluster: String,
    token: String,
    root: PathBuf,
    tls: Option<ServerTls>,
}

/// A member's TLS files: its server certificate and key, and the CA its clients'
/// certificates must be signed by (`--client-cert-auth`).
#[derive(Clone, Debug)]
pub struct ServerTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_ca_file: PathBuf,
}

/// Certificates made with `openssl` for one test: a CA, a server certificate for the
/// given addresses, a client certificate, and a second, unrelated CA (the wrong one).
pub struct TestPki {
    pub dir: PathBuf,
}

impl TestPki {
    /// Makes the certificates in `dir` (which must exist). Panics naming the command when
    /// openssl fails or is missing.
    pub fn make(dir: &Path, server_addresses: &[Ipv4Addr]) -> TestPki {
        let pki = TestPki {
            dir: dir.to_path_buf(),
        };
        for ca in ["ca", "wrong-ca"] {
            pki.openssl(&[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN=fjord test {ca}"),
                "-keyout",
                &pki.path_str(&format!("{ca}.key")),
                "-out",
                &pki.path_str(&format!("{ca}.crt")),
            ]);
        }
        let sans: Vec<String> = server_addresses.iter().map(|a| format!("IP:{a}")).collect();
        pki.signed(
            "server",
            &format!(
                "subjectAltName={}\nextendedKeyUsage=serverAuth",
                sans.join(",")
            ),
        );
        pki.signed("client", "extendedKeyUsage=clientAuth");
        pki
    }

    /// A key and a certificate signed by `ca.key` with the extensions `ext`.
    fn signed(&self, name: &str, ext: &str) {
        let ext_file = self.dir.join(format!("{name}.ext"));
        std::fs::write(&ext_file, format!("{ext}\n")).expect("write the extensions file");
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            &format!("/CN=fjord test {name}"),
            "-keyout",
            &self.path_str(&format!("{name}.key")),
            "-out",
            &self.path_str(&format!("{name}.csr")),
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-days",
            "2",
            "-CA",
            &self.path_str("ca.crt"),
            "-CAkey",
            &self.path_str("ca.key"),
            "-CAcreateserial",
            "-in",
            &self.path_str(&format!("{name}.csr")),
            "-extfile",
            &ext_file.display().to_string(),
            "-out",
            &self.path_str(&format!("{name}.crt")),
        ]);
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run openssl (Debian package openssl): {e}"));
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn path_str(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// What a member serves with: the server pair, clients checked against `ca.crt`.
    pub fn server(&self) -> ServerTls {
        ServerTls {
            cert_file: self.path("server.crt"),
            key_file: self.path("server.key"),
            client_ca_file: self.path("ca.crt"),
        }
    }
}

impl EtcdCluster {
    /// Starts one member in each of the lab's hosts `hosts` and waits until the cluster
    /// is healthy. Panics naming the package when `etcd` is missing.
    pub fn start(lab: &Lab, hosts: &[usize]) -> EtcdCluster {
        EtcdCluster::start_with(lab, hosts, None)
    }

    /// As [`EtcdCluster::start`], with `https://` client URLs served with `tls` and client
    /// certificates required (`--client-cert-auth`), as real clusters run.
    pub fn start_tls(lab: &Lab, hosts: &[usize], tls: ServerTls) -> EtcdCluster {
        EtcdCluster::start_with(lab, hosts, Some(tls))
    }

    fn start_with(lab: &Lab, hosts: &[usize], tls: Option<ServerTls>) -> EtcdCluster {
        assert!(
            Command::new(ETCD_BINARY).arg("--version").output().is_ok(),
            "`etcd` is not on PATH: install Debian's etcd-server (conformance/scripts/install-test-deps.sh)"
        );
        let token = unique_name("etcd");
        let root = PathBuf::from("/dev/shm").join(&token);
        std::fs::create_dir_all(&root).unwrap_or_else(|e| panic!("create {}: {e}", root.display()));
        let members: Vec<Member> = hosts
            .iter()
            .map(|&k| {
                let host = lab.host(k);
                Member {
                    name: host.name().to_string(),
                    netns: host.netns().path(),
                    address: host.address_v4(),
                    data_dir: root.join(format!("{}.data", host.name())),
                    log: lab.dir().join(format!("etcd-{}.log", host.name())),
                    child: None,
                }
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://{}:{PEER_PORT}", m.name, m.address))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = EtcdCluster {
            members,
            initial_cluster,
            token,
            root,
            tls,
        };
        for k in 0..cluster.members.len() {
            cluster.start_member(k);
        }
        cluster.wait_healthy(HEALTHY_WITHIN);
        cluster
    }

    /// `http://A:2379` (`https://` with TLS) of every member, killed ones included (as
    /// an operator lists them).
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| self.client_url(m)).collect()
    }

    fn client_url(&self, m: &Member) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}:{CLIENT_PORT}", m.address)
    }

    /// `etcd:URL,URL,…`, what `store` and `--store` take.
    pub fn store_arg(&self) -> String {
        format!("etcd:{}", self.endpoints().join(","))
    }

    /// A directory on the same tmpfs as the members' data, removed with the cluster (a
    /// `dir:` store to compare with on equal storage).
    pub fn scratch_dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Starts (or restarts, on its existing data dir) member `k`.
    pub fn start_member(&mut self, k: usize) {
        let m = &self.members[k];
        assert!(
            m.child.is_none(),
            "etcd member {} is already running",
            m.name
        );
        let client = self.client_url(m);
        let peer = format!("http://{}:{PEER_PORT}", m.address);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .unwrap_or_else(|e| panic!("open {}: {e}", m.log.display()));
        let mut cmd = Command::new(ETCD_BINARY);
        cmd.args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &self.token])
            // Lab timers: a dead leader is replaced within about a second.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"]);
        if let Some(tls) = &self.tls {
            let metrics = format!("http://{}:{METRICS_PORT}", m.address);
            cmd.arg("--cert-file")
                .arg(&tls.cert_file)
                .arg("--key-file")
                .arg(&tls.key_file)
                .arg("--trusted-ca-file")
                .arg(&tls.client_ca_file)
                .arg("--client-cert-auth")
                .args(["--listen-metrics-urls", &metrics]);
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log file"))
            .stderr(log);
        let child = crate::lab::spawn_in_netns_path(&m.netns, &mut cmd);
        self.members[k].child = Some(child);
    }

    /// SIGKILL to member `k`, by PID; reaps it.
    pub fn kill_member(&mut self, k: usize) {
        if let Some(mut child) = self.members[k].child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
    }

    /// Waits until every running member reports `{"health":"true"}` (it has a leader
    /// and a quorum read works).
    pub fn wait_healthy(&self, within: Duration) {
        let deadline = Instant::now() + within;
        for k in (0..self.members.len()).filter(|&k| self.members[k].child.is_some()) {
            loop {
                let answer = self.http_get(k, "/health");
                if answer
                    .as_deref()
                    .is_ok_and(|a| a.contains("\"health\":\"true\""))
                {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "etcd member {} not healthy within {within:?}: {answer:?}\n{}",
                    self.members[k].name,
                    self.log_tail(k)
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// Successful Txn RPCs member `k` has served (its Prometheus metrics): what one ADD
    /// costs is the difference across it, when all clients use that member.
    pub fn txn_count(&self, k: usize) -> u64 {
        let metrics = self
            .http_get(k, "/metrics")
            .unwrap_or_else(|e| panic!("read etcd metrics: {e}"));
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("grpc_server_handled_total{")
                    && l.contains("grpc_method=\"Txn\"")
                    && l.contains("grpc_code=\"OK\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// The running member that is the raft leader now, if one is.
    pub fn leader(&self) -> Option<usize> {
        (0..self.members.len())
            .filter(|&k| self.members[k].child.is_some())
            .find(|&k| {
                self.http_get(k, "/metrics")
                    .is_ok_and(|m| m.lines().any(|l| l == "etcd_server_is_leader 1"))
            })
    }

    /// A plain HTTP/1.0 GET to member `k`'s client port (its metrics port with TLS),
    /// from inside its namespace.
    pub fn http_get(&self, k: usize, path: &str) -> Result<String, String> {
        let m = &self.members[k];
        let port = if self.tls.is_some() {
            METRICS_PORT
        } else {
            CLIENT_PORT
        };
        let address = SocketAddr::from((m.address, port));
        in_netns(&m.netns, || {
            let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1))
                .map_err(|e| format!("connect {address}: {e}"))?;
            stream
                .set_read_timeout(Some(Duration::from_secs(2)))
                .map_err(|e| e.to_string())?;
            write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n")
                .map_err(|e| format!("send to {address}: {e}"))?;
            let mut answer = String::new();
            stream
                .read_to_string(&mut answer)
                .map_err(|e| format!("read from {address}: {e}"))?;
            Ok(answer)
        })
    }

    pub fn log_tail(&self, k: usize) -> String {
        crate::lab::tail(&self.members[k].log, 3000)
    }

    /// Runs `work` on a thread inside member `k`'s namespace (e.g. an etcd client that
    /// reads what the plugins wrote; threads it starts stay in that namespace).
    pub fn in_member_netns<T: Send>(&self, k: usize, work: impl FnOnce() -> T + Send) -> T {
        in_netns(&self.members[k].netns, work)
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for k in 0..self.members.len() {
            self.kill_member(k);
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Runs `work` on a new thread whose network namespace is `netns`.
pub fn in_netns<T: Send>(netns: &Path, work: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let file = File::open(netns)
                    .unwrap_or_else(|e| panic!("open netns {}: {e}", netns.display()));
                nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("enter netns {}: {e}", netns.display()));
                work()
            })
            .join()
            .expect("the thread in the namespace panicked")
    })
}
