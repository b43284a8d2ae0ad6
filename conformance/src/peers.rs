//! Real BGP speakers from Debian's packages as peers inside lab namespaces: BIRD 2
//! ([`Bird`]) and GoBGP ([`Gobgp`]), behind one small trait ([`BgpPeer`]) so a test can
//! run the same checks against either.
//!
//! Each runner writes its config, control socket, pid file and logs into its own folder
//! of the lab's temp dir, runs the daemon in the foreground inside the given namespace
//! (`setns` between fork and exec), and stops it (SIGTERM, then SIGKILL) on drop.
//! BIRD exports what it learns over BGP into its namespace's kernel (protocol `bird`);
//! GoBGP programs no kernel, so its routes are read from its RIB.
//!
//! Every peer originates prefixes of its own ([`own_prefixes`]: `10.99.X.0/24` and
//! `fd00:99:X::/64`), with next hops its own underlay addresses, and imports everything.

use crate::kernel::Route;
use crate::lab::{spawn_in_netns, stop_child, tail, Machine, STOP_GRACE};
use crate::netns::Netns;
use ipnetwork::IpNetwork;
use serde_json::Value;
use std::fmt::Write as _;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the tests look for the peers' programs besides `PATH` (bird lives in /usr/sbin,
/// which a test runner's `PATH` may lack).
const SEARCH_DIRS: [&str; 4] = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/// How long a started daemon gets to answer on its control socket.
pub const CONTROL_READY_WITHIN: Duration = Duration::from_secs(15);

/// The full path of `name`; panics telling how to install it when it is missing.
pub fn routing_command(name: &str) -> PathBuf {
    let path_dirs = std::env::var("PATH").unwrap_or_default();
    let found = path_dirs
        .split(':')
        .filter(|d| !d.is_empty())
        .chain(SEARCH_DIRS)
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not installed: run conformance/scripts/install-routing-deps.sh \
                 (as root; installs Debian's bird2 and gobgpd)"
            )
        });
    found
}

/// `10.99.X.0/24` and `fd00:99:X::/64`: the prefixes a peer numbered `x` originates.
pub fn own_prefixes(x: u8) -> [IpNetwork; 2] {
    [
        format!("10.99.{x}.0/24").parse().unwrap(),
        format!("fd00:99:{x:x}::/64").parse().unwrap(),
    ]
}

/// A BGP neighbor of a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbor {
    pub address: IpAddr,
    pub asn: u32,
}

/// What a peer is: its identity, its neighbors, and what it originates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BgpPeerSpec {
    pub router_id: Ipv4Addr,
    pub asn: u32,
    /// The session's local address, and the next hop of originated IPv4 prefixes.
    pub address_v4: Ipv4Addr,
    /// The next hop of originated IPv6 prefixes.
    pub address_v6: Ipv6Addr,
    pub neighbors: Vec<Neighbor>,
    pub prefixes: Vec<IpNetwork>,
    /// Proposed hold time, seconds.
    pub hold_time: u16,
    /// Advertise graceful restart with restart state (BIRD: `graceful restart on`,
    /// GoBGP: graceful-restart enabled); otherwise BIRD is merely GR-aware.
    pub graceful_restart: bool,
}

impl BgpPeerSpec {
    /// A peer on lab machine `host` in AS `asn`, router id = its IPv4 address, no
    /// neighbors or prefixes yet, hold time 9 s.
    pub fn on(host: &Machine, asn: u32) -> BgpPeerSpec {
        BgpPeerSpec {
            router_id: host.address_v4(),
            asn,
            address_v4: host.address_v4(),
            address_v6: host.address_v6(),
            neighbors: Vec::new(),
            prefixes: Vec::new(),
            hold_time: 9,
            graceful_restart: false,
        }
    }

    pub fn neighbor(mut self, address: impl Into<IpAddr>, asn: u32) -> BgpPeerSpec {
        self.neighbors.push(Neighbor {
            address: address.into(),
            asn,
        });
        self
    }

    pub fn originate(mut self, prefixes: &[IpNetwork]) -> BgpPeerSpec {
        self.prefixes.extend_from_slice(prefixes);
        self
    }

    fn prefixes_of(&self, v6: bool) -> Vec<IpNetwork> {
        self.prefixes
            .iter()
            .copied()
            .filter(|p| p.is_ipv6() == v6)
            .collect()
    }
}

/// A route a peer holds, learned from a neighbor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LearnedRoute {
    pub prefix: IpNetwork,
    pub next_hop: Option<IpAddr>,
}

/// The checks tests make on either peer.
pub trait BgpPeer {
    /// `bird` or `gobgp`, for messages.
    fn kind(&self) -> &'static str;

    /// The namespace it runs in.
    fn netns_name(&self) -> &str;

    /// The session state with `neighbor` (`Established`, `Active`, `Idle`, …), or why
    /// it cannot be read.
    fn session_state(&self, neighbor: IpAddr) -> Result<String, String>;

    /// Routes it accepted from `neighbor`, both families.
    fn learned_routes(&self, neighbor: IpAddr) -> Result<Vec<LearnedRoute>, String>;

    /// The end of its log, for failure messages.
    fn log_tail(&self) -> String;

    fn is_established(&self, neighbor: IpAddr) -> bool {
        self.session_state(neighbor)
            .is_ok_and(|s| s.eq_ignore_ascii_case("established"))
    }

    /// Waits until the session with `neighbor` is Established; panics after `timeout`
    /// with the last state and the peer's log.
    fn wait_established(&self, neighbor: IpAddr, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let state = self.session_state(neighbor);
            if state
                .as_ref()
                .is_ok_and(|s| s.eq_ignore_ascii_case("established"))
            {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} in {}: the session with {neighbor} is not Established after {timeout:?} \
                     (last state: {state:?})\n--- {} log ---\n{}",
                    self.kind(),
                    self.netns_name(),
                    self.kind(),
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until every prefix in `want` was learned from `neighbor`, with a next hop
    /// in `next_hops` when that is not empty; returns all learned routes.
    fn wait_learned(
        &self,
        neighbor: IpAddr,
        want: &[IpNetwork],
        next_hops: &[IpAddr],
        timeout: Duration,
    ) -> Vec<LearnedRoute> {
        let deadline = Instant::now() + timeout;
        loop {
            let routes = self.learned_routes(neighbor);
            if let Ok(routes) = &routes {
                let ok = want.iter().all(|p| {
                    routes.iter().any(|r| {
                        r.prefix == *p
                            && (next_hops.is_empty()
                                || r.next_hop.is_some_and(|nh| next_hops.contains(&nh)))
                    })
                });
                if ok {
                    return routes.clone();
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} in {}: did not learn {want:?} (next hop in {next_hops:?}) from {neighbor} \
                     within {timeout:?}; it holds {routes:?}\n--- {} log ---\n{}",
                    self.kind(),
                    self.netns_name(),
                    self.kind(),
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Runs `program args` and returns stdout, or stderr as the error.
fn output_of(program: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run {}: {e}", program.display()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{} {} exited with {}: {}{}",
            program.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        ))
    }
}

fn write_file(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn create_dir(base: &Path, name: &str) -> PathBuf {
    let dir = base.join(name);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

// ---------------------------------------------------------------------------------------
// BIRD 2
// ---------------------------------------------------------------------------------------

/// BIRD 2 running in a namespace: `bird -f -c CONF -s SOCK -P PIDFILE`.
#[derive(Debug)]
pub struct Bird {
    child: Child,
    netns_name: String,
    dir: PathBuf,
    birdc: PathBuf,
    spec: BgpPeerSpec,
}

/// The BIRD protocol name of neighbor number `index`.
fn bird_protocol(index: usize) -> String {
    format!("peer{index}")
}

impl Bird {
    /// Its config: device, static (the originated prefixes as blackholes), kernel
    /// (exports BGP-learned routes into the namespace's main table, both families), one
    /// BGP protocol per neighbor with IPv4 and IPv6 channels, import all, export the
    /// static prefixes with next hop self (our underlay addresses).
    pub fn config(spec: &BgpPeerSpec, log: &Path) -> String {
        let mut c = String::new();
        let _ = writeln!(c, "# Written by fjord's conformance lab (peers.rs).");
        let _ = writeln!(c, "router id {};", spec.router_id);
        let _ = writeln!(c, "log \"{}\" all;", log.display());
        let _ = writeln!(c, "debug protocols {{ states, events }};");
        let _ = writeln!(c, "protocol device {{ scan time 1; }}");
        for (v6, family) in [(false, "ipv4"), (true, "ipv6")] {
            let prefixes = spec.prefixes_of(v6);
            if !prefixes.is_empty() {
                let _ = writeln!(c, "protocol static static_{family} {{");
                let _ = writeln!(c, "  {family};");
                for p in prefixes {
                    let _ = writeln!(c, "  route {p} blackhole;");
                }
                let _ = writeln!(c, "}}");
            }
            let _ = writeln!(c, "protocol kernel kernel_{family} {{");
            let _ = writeln!(c, "  scan time 2;");
            let _ = writeln!(
                c,
                "  {family} {{ import none; export where source = RTS_BGP; }};"
            );
            let _ = writeln!(c, "}}");
        }
        for (i, n) in spec.neighbors.iter().enumerate() {
            let ibgp = n.asn == spec.asn;
            let local = if n.address.is_ipv4() {
                IpAddr::V4(spec.address_v4)
            } else {
                IpAddr::V6(spec.address_v6)
            };
            let _ = writeln!(c, "protocol bgp {} {{", bird_protocol(i));
            let _ = writeln!(c, "  local {local} as {};", spec.asn);
            let _ = writeln!(c, "  neighbor {} as {};", n.address, n.asn);
            if ibgp {
                // One hop away on the underlay segment: next hops resolve directly.
                let _ = writeln!(c, "  direct;");
            }
            let _ = writeln!(c, "  hold time {};", spec.hold_time);
            let _ = writeln!(c, "  keepalive time {};", (spec.hold_time / 3).max(1));
            let _ = writeln!(c, "  connect delay time 1;");
            let _ = writeln!(c, "  connect retry time 2;");
            let _ = writeln!(c, "  error wait time 1, 10;");
            let gr = if spec.graceful_restart { "on" } else { "aware" };
            let _ = writeln!(c, "  graceful restart {gr};");
            let _ = writeln!(
                c,
                "  ipv4 {{ import all; export where source = RTS_STATIC; next hop self; }};"
            );
            let _ = writeln!(
                c,
                "  ipv6 {{ import all; export where source = RTS_STATIC; next hop self; \
                 next hop address {}; }};",
                spec.address_v6
            );
            let _ = writeln!(c, "}}");
        }
        c
    }

    /// Writes the config into `base/bird-<router id>/`, checks it (`bird -p`), starts
    /// BIRD in `netns` and waits until `birdc` answers. Panics with BIRD's words when
    /// it refuses.
    pub fn start(netns: &Netns, base: &Path, spec: &BgpPeerSpec) -> Bird {
        let bird = routing_command("bird");
        let birdc = routing_command("birdc");
        let dir = create_dir(base, &format!("bird-{}", spec.router_id));
        let conf = dir.join("bird.conf");
        write_file(&conf, &Bird::config(spec, &dir.join("bird.log")));
        let conf_s = conf.display().to_string();
        if let Err(e) = output_of(&bird, &["-p", "-c", &conf_s]) {
            panic!(
                "BIRD rejects the config it was given: {e}\n{}",
                Bird::config(spec, &dir.join("bird.log"))
            );
        }
        let stderr = File::create(dir.join("bird.stderr")).expect("create bird.stderr");
        let mut cmd = Command::new(&bird);
        cmd.args(["-f", "-c", &conf_s, "-s"])
            .arg(dir.join("bird.ctl"))
            .arg("-P")
            .arg(dir.join("bird.pid"))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(stderr.try_clone().expect("dup"))
            .stderr(stderr);
        let child = spawn_in_netns(netns, &mut cmd);
        let mut b = Bird {
            child,
            netns_name: netns.name().to_string(),
            dir,
            birdc,
            spec: spec.clone(),
        };
        let deadline = Instant::now() + CONTROL_READY_WITHIN;
        loop {
            if b.birdc(&["show", "status"]).is_ok() {
                break;
            }
            if let Ok(Some(status)) = b.child.try_wait() {
                panic!(
                    "bird exited at start ({status})\n--- bird log ---\n{}",
                    b.log_tail()
                );
            }
            assert!(
                Instant::now() < deadline,
                "birdc got no answer within {CONTROL_READY_WITHIN:?}\n{}",
                b.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        b
    }

    /// Runs `birdc -s SOCK ARGS` and returns what it printed.
    pub fn birdc(&self, args: &[&str]) -> Result<String, String> {
        let sock = self.dir.join("bird.ctl").display().to_string();
        let mut full = vec!["-s", sock.as_str()];
        full.extend_from_slice(args);
        output_of(&self.birdc, &full)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn spec(&self) -> &BgpPeerSpec {
        &self.spec
    }

    fn protocol_of(&self, neighbor: IpAddr) -> Result<String, String> {
        self.spec
            .neighbors
            .iter()
            .position(|n| n.address == neighbor)
            .map(bird_protocol)
            .ok_or_else(|| format!("{neighbor} is not a neighbor in this BIRD's config"))
    }

    /// Routes BIRD exported into its namespace's kernel (`proto bird`).
    pub fn kernel_routes(&self, netns: &Netns) -> Vec<Route> {
        netns
            .routes()
            .into_iter()
            .filter(|r| r.protocol == "bird")
            .collect()
    }
}

/// Parses `birdc show route` output: a line starting with a prefix opens a route, an
/// indented `via ADDR` line gives its next hop.
pub fn parse_bird_routes(text: &str) -> Vec<LearnedRoute> {
    let mut routes: Vec<LearnedRoute> = Vec::new();
    for line in text.lines() {
        let starts_indented = line.starts_with(char::is_whitespace);
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else { continue };
        if !starts_indented {
            if let Ok(prefix) = first.parse::<IpNetwork>() {
                routes.push(LearnedRoute {
                    prefix,
                    next_hop: None,
                });
            }
        } else if first == "via" {
            if let (Some(addr), Some(last)) = (words.next(), routes.last_mut()) {
                if last.next_hop.is_none() {
                    last.next_hop = addr.parse().ok();
                }
            }
        }
    }
    routes
}

impl BgpPeer for Bird {
    fn kind(&self) -> &'static str {
        "bird"
    }

    fn netns_name(&self) -> &str {
        &self.netns_name
    }

    fn session_state(&self, neighbor: IpAddr) -> Result<String, String> {
        let proto = self.protocol_of(neighbor)?;
        let text = self.birdc(&["show", "protocols", "all", &proto])?;
        text.lines()
            .find_map(|l| l.trim().strip_prefix("BGP state:"))
            .map(|s| s.trim().to_string())
            .ok_or_else(|| format!("no BGP state in birdc's answer: {text}"))
    }

    fn learned_routes(&self, neighbor: IpAddr) -> Result<Vec<LearnedRoute>, String> {
        let proto = self.protocol_of(neighbor)?;
        let text = self.birdc(&["show", "route", "protocol", &proto])?;
        Ok(parse_bird_routes(&text))
    }

    fn log_tail(&self) -> String {
        format!(
            "{}{}",
            tail(&self.dir.join("bird.log"), 4000),
            tail(&self.dir.join("bird.stderr"), 1000)
        )
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        stop_child(&mut self.child, STOP_GRACE);
    }
}

// ---------------------------------------------------------------------------------------
// GoBGP
// ---------------------------------------------------------------------------------------

/// gobgpd running in a namespace, its gRPC API on a Unix socket in its folder.
#[derive(Debug)]
pub struct Gobgp {
    child: Child,
    netns_name: String,
    dir: PathBuf,
    gobgp: PathBuf,
    spec: BgpPeerSpec,
}

impl Gobgp {
    /// Its TOML config: global AS and router id, one neighbor block per neighbor with
    /// the ipv4-unicast and ipv6-unicast afi-safis and short timers. (Originated
    /// prefixes are added through the API after start: gobgpd's config has no static
    /// routes.)
    pub fn config(spec: &BgpPeerSpec) -> String {
        let mut c = String::new();
        let _ = writeln!(c, "# Written by fjord's conformance lab (peers.rs).");
        let _ = writeln!(c, "[global.config]");
        let _ = writeln!(c, "  as = {}", spec.asn);
        let _ = writeln!(c, "  router-id = \"{}\"", spec.router_id);
        let _ = writeln!(c, "  port = 179");
        for n in &spec.neighbors {
            let _ = writeln!(c, "\n[[neighbors]]");
            let _ = writeln!(c, "  [neighbors.config]");
            let _ = writeln!(c, "    neighbor-address = \"{}\"", n.address);
            let _ = writeln!(c, "    peer-as = {}", n.asn);
            let _ = writeln!(c, "  [neighbors.timers.config]");
            let _ = writeln!(c, "    connect-retry = 1");
            let _ = writeln!(c, "    hold-time = {}", spec.hold_time);
            let _ = writeln!(
                c,
                "    keepalive-interval = {}",
                (spec.hold_time / 3).max(1)
            );
            let _ = writeln!(c, "    idle-hold-time-after-reset = 1");
            if spec.graceful_restart {
                let _ = writeln!(c, "  [neighbors.graceful-restart.config]");
                let _ = writeln!(c, "    enabled = true");
                let _ = writeln!(c, "    restart-time = {}", spec.hold_time);
            }
            for family in ["ipv4-unicast", "ipv6-unicast"] {
                let _ = writeln!(c, "  [[neighbors.afi-safis]]");
                let _ = writeln!(c, "    [neighbors.afi-safis.config]");
                let _ = writeln!(c, "      afi-safi-name = \"{family}\"");
                if spec.graceful_restart {
                    let _ = writeln!(c, "    [neighbors.afi-safis.mp-graceful-restart.config]");
                    let _ = writeln!(c, "      enabled = true");
                }
            }
        }
        c
    }

    /// Writes the config into `base/gobgp-<router id>/`, checks it (`gobgpd -d`),
    /// starts gobgpd in `netns`, waits for its API, and originates the spec's prefixes
    /// (`gobgp global rib add PREFIX nexthop OUR-ADDRESS`).
    pub fn start(netns: &Netns, base: &Path, spec: &BgpPeerSpec) -> Gobgp {
        let gobgpd = routing_command("gobgpd");
        let gobgp = routing_command("gobgp");
        let dir = create_dir(base, &format!("gobgp-{}", spec.router_id));
        let conf = dir.join("gobgpd.toml");
        write_file(&conf, &Gobgp::config(spec));
        let conf_s = conf.display().to_string();
        if let Err(e) = output_of(&gobgpd, &["-d", "-t", "toml", "-f", &conf_s]) {
            panic!(
                "gobgpd rejects the config it was given: {e}\n{}",
                Gobgp::config(spec)
            );
        }
        let log = File::create(dir.join("gobgpd.log")).expect("create gobgpd.log");
        let api = format!("unix://{}", dir.join("api.sock").display());
        let mut cmd = Command::new(&gobgpd);
        cmd.args([
            "-f",
            &conf_s,
            "-t",
            "toml",
            "-p",
            "--pprof-disable",
            "--api-hosts",
            &api,
        ])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup"))
        .stderr(log);
        let child = spawn_in_netns(netns, &mut cmd);
        let mut g = Gobgp {
            child,
            netns_name: netns.name().to_string(),
            dir,
            gobgp,
            spec: spec.clone(),
        };
        let deadline = Instant::now() + CONTROL_READY_WITHIN;
        loop {
            if g.cli(&["global"]).is_ok() {
                break;
            }
            if let Ok(Some(status)) = g.child.try_wait() {
                panic!(
                    "gobgpd exited at start ({status})\n--- gobgpd log ---\n{}",
                    g.log_tail()
                );
            }
            assert!(
                Instant::now() < deadline,
                "gobgp got no answer from gobgpd within {CONTROL_READY_WITHIN:?}\n{}",
                g.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        for prefix in spec.prefixes.clone() {
            g.originate(prefix);
        }
        g
    }

    /// `gobgp --target unix://SOCK ARGS`.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        let target = format!("unix://{}", self.dir.join("api.sock").display());
        let mut full = vec!["--target", target.as_str()];
        full.extend_from_slice(args);
        output_of(&self.gobgp, &full)
    }

    /// `gobgp ARGS -j`, parsed; an empty answer is `null`.
    pub fn cli_json(&self, args: &[&str]) -> Result<Value, String> {
        let mut full = args.to_vec();
        full.push("-j");
        let text = self.cli(&full)?;
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(text.trim())
            .map_err(|e| format!("gobgp {} printed no JSON ({e}): {text}", full.join(" ")))
    }

    /// Adds `prefix` to the global RIB with our address of its family as next hop.
    pub fn originate(&self, prefix: IpNetwork) {
        let (family, nh) = if prefix.is_ipv4() {
            ("ipv4", self.spec.address_v4.to_string())
        } else {
            ("ipv6", self.spec.address_v6.to_string())
        };
        let p = prefix.to_string();
        if let Err(e) = self.cli(&["global", "rib", "-a", family, "add", &p, "nexthop", &nh]) {
            panic!("gobgp could not originate {prefix}: {e}");
        }
    }

    /// The global RIB (best and other paths) of both families.
    pub fn global_rib(&self) -> Result<Vec<LearnedRoute>, String> {
        let mut out = parse_gobgp_rib(&self.cli_json(&["global", "rib", "-a", "ipv4"])?);
        out.extend(parse_gobgp_rib(
            &self.cli_json(&["global", "rib", "-a", "ipv6"])?,
        ));
        Ok(out)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn spec(&self) -> &BgpPeerSpec {
        &self.spec
    }
}

/// Reads `gobgp … rib -j` / `adj-in -j` output: `{"PREFIX": [path, …], …}`, each path's
/// next hop in attribute 3 (NEXT_HOP) or 14 (MP_REACH_NLRI).
pub fn parse_gobgp_rib(v: &Value) -> Vec<LearnedRoute> {
    let Some(map) = v.as_object() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (prefix, paths) in map {
        let Ok(prefix) = prefix.parse::<IpNetwork>() else {
            continue;
        };
        for path in paths.as_array().cloned().unwrap_or_default() {
            let next_hop = path["attrs"].as_array().and_then(|attrs| {
                attrs
                    .iter()
                    .filter(|a| a["type"] == 3 || a["type"] == 14)
                    .find_map(|a| a["nexthop"].as_str().and_then(|s| s.parse().ok()))
            });
            out.push(LearnedRoute { prefix, next_hop });
        }
    }
    out
}

/// GoBGP's `session_state` (a number in its JSON, or a name) as RFC 4271 names it.
pub fn gobgp_state_name(v: &Value) -> String {
    match v {
        Value::Number(n) => match n.as_u64() {
            Some(1) => "Idle",
            Some(2) => "Connect",
            Some(3) => "Active",
            Some(4) => "OpenSent",
            Some(5) => "OpenConfirm",
            Some(6) => "Established",
            _ => "Unknown",
        }
        .to_string(),
        Value::String(s) => s.clone(),
        Value::Null => "Idle".to_string(),
        other => other.to_string(),
    }
}

impl BgpPeer for Gobgp {
    fn kind(&self) -> &'static str {
        "gobgp"
    }

    fn netns_name(&self) -> &str {
        &self.netns_name
    }

    fn session_state(&self, neighbor: IpAddr) -> Result<String, String> {
        let v = self.cli_json(&["neighbor"])?;
        let want = neighbor.to_string();
        v.as_array()
            .into_iter()
            .flatten()
            .find(|p| {
                p["conf"]["neighbor_address"].as_str() == Some(&want)
                    || p["state"]["neighbor_address"].as_str() == Some(&want)
            })
            .map(|p| gobgp_state_name(&p["state"]["session_state"]))
            .ok_or_else(|| format!("gobgp has no neighbor {neighbor}: {v}"))
    }

    fn learned_routes(&self, neighbor: IpAddr) -> Result<Vec<LearnedRoute>, String> {
        let n = neighbor.to_string();
        let mut out = Vec::new();
        for family in ["ipv4", "ipv6"] {
            let v = self.cli_json(&["neighbor", &n, "adj-in", "-a", family])?;
            out.extend(parse_gobgp_rib(&v));
        }
        Ok(out)
    }

    fn log_tail(&self) -> String {
        tail(&self.dir.join("gobgpd.log"), 4000)
    }
}

impl Drop for Gobgp {
    fn drop(&mut self) {
        stop_child(&mut self.child, STOP_GRACE);
    }
}

/// Waits until `netns`'s main table has a route to every prefix of `want` via one of
/// `gateways` (any protocol in `protocols`, or any protocol when empty).
pub fn wait_kernel_routes(
    netns: &Netns,
    want: &[(IpNetwork, IpAddr)],
    protocols: &[&str],
    timeout: Duration,
    what: &str,
) {
    let has_all = || {
        let routes = netns.routes();
        want.iter().all(|(dst, gw)| {
            routes.iter().any(|r| {
                r.dst == *dst
                    && r.gateway == Some(*gw)
                    && (protocols.is_empty() || protocols.contains(&r.protocol.as_str()))
            })
        })
    };
    let deadline = Instant::now() + timeout;
    while !has_all() {
        if Instant::now() >= deadline {
            let routes: Vec<String> = netns
                .routes()
                .iter()
                .map(|r| format!("{} via {:?} proto {}", r.dst, r.gateway, r.protocol))
                .collect();
            panic!(
                "timed out after {timeout:?} waiting until {what}: {} lacks one of {want:?} \
                 (protocol in {protocols:?}); it has {routes:#?}",
                netns.name()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bird_route_listing_is_parsed() {
        let text = "BIRD 2.0.12 ready.\nTable master4:\n\
            10.99.2.0/24         unicast [peer0 08:23:55.633] * (100) [?]\n\
            \tvia 10.77.0.2 on e0\n\nTable master6:\n\
            fd00:99:2::/64       unicast [peer0 08:23:55.633 from 10.77.0.2] * (100) [?]\n\
            \tvia fd77::2 on e0\n";
        let routes = parse_bird_routes(text);
        assert_eq!(
            routes,
            vec![
                LearnedRoute {
                    prefix: "10.99.2.0/24".parse().unwrap(),
                    next_hop: Some("10.77.0.2".parse().unwrap()),
                },
                LearnedRoute {
                    prefix: "fd00:99:2::/64".parse().unwrap(),
                    next_hop: Some("fd77::2".parse().unwrap()),
                },
            ]
        );
    }

    #[test]
    fn gobgp_rib_json_is_parsed() {
        let v = json!({
            "10.99.1.0/24": [{"attrs": [{"type": 1, "value": 0}, {"type": 3, "nexthop": "10.77.0.1"}]}],
            "fd00:99:1::/64": [{"attrs": [{"type": 14, "nexthop": "fd77::1", "afi": 2}]}]
        });
        let mut routes = parse_gobgp_rib(&v);
        routes.sort_by_key(|r| r.prefix.to_string());
        assert_eq!(routes[0].next_hop, Some("10.77.0.1".parse().unwrap()));
        assert_eq!(routes[1].next_hop, Some("fd77::1".parse().unwrap()));
        assert_eq!(gobgp_state_name(&json!(6)), "Established");
        assert_eq!(parse_gobgp_rib(&Value::Null), vec![]);
    }

    #[test]
    fn own_prefixes_are_distinct_per_peer() {
        assert_eq!(own_prefixes(1)[0].to_string(), "10.99.1.0/24");
        assert_eq!(own_prefixes(10)[1].to_string(), "fd00:99:a::/64");
    }
}
