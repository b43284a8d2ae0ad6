//! What the kernel holds in a namespace, read from `ip -j` and shaped for assertions.

use crate::netns::Netns;
use ipnetwork::IpNetwork;
use serde_json::Value;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// One network interface (`ip -d link show`).
#[derive(Clone, Debug, PartialEq)]
pub struct Link {
    pub name: String,
    pub ifindex: u64,
    pub mtu: u32,
    /// Lower-case `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// `UP`, `DOWN`, `LOWERLAYERDOWN`, `UNKNOWN`, ...
    pub operstate: String,
    /// `UP`, `LOWER_UP`, `NOARP`, ...
    pub flags: Vec<String>,
    /// `veth`, `bridge`, ... (`None` for lo).
    pub kind: Option<String>,
    pub raw: Value,
}

impl Link {
    /// Administratively up (the `UP` flag).
    pub fn is_up(&self) -> bool {
        self.flags.iter().any(|f| f == "UP")
    }
}

/// One address of an interface (`ip addr show dev X`).
#[derive(Clone, Debug, PartialEq)]
pub struct Addr {
    pub addr: IpAddr,
    pub prefix_len: u8,
    /// `global`, `link`, `host`.
    pub scope: String,
    pub raw: Value,
}

impl Addr {
    pub fn network(&self) -> IpNetwork {
        IpNetwork::new(self.addr, self.prefix_len).expect("kernel prefix lengths are valid")
    }
}

/// One route of the main table (`ip route show` / `ip -6 route show`).
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    /// Always a CIDR: `default` becomes `0.0.0.0/0` or `::/0`, a bare host gets /32 or /128.
    pub dst: IpNetwork,
    pub gateway: Option<IpAddr>,
    pub dev: Option<String>,
    /// `link`, `host`, or `global` when `ip` prints no scope.
    pub scope: String,
    /// `kernel`, `static`, ... or `boot` when `ip` prints none.
    pub protocol: String,
    /// `unreachable`, `local`, ... or `unicast` when `ip` prints none.
    pub route_type: String,
    pub raw: Value,
}

/// One neighbour entry (`ip neigh show`).
#[derive(Clone, Debug, PartialEq)]
pub struct Neighbour {
    pub dst: IpAddr,
    pub dev: String,
    pub lladdr: Option<String>,
    /// `PERMANENT`, `REACHABLE`, `STALE`, ...
    pub state: Vec<String>,
    pub raw: Value,
}

impl Neighbour {
    pub fn is_permanent(&self) -> bool {
        self.state.iter().any(|s| s == "PERMANENT")
    }
}

fn str_field(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

fn array(v: Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items,
        other => panic!("ip -j gave a non-array: {other}"),
    }
}

fn parse_link(v: Value) -> Link {
    Link {
        name: str_field(&v, "ifname").expect("link has ifname"),
        ifindex: v["ifindex"].as_u64().expect("link has ifindex"),
        mtu: v["mtu"].as_u64().expect("link has mtu") as u32,
        mac: str_field(&v, "address").unwrap_or_default().to_lowercase(),
        operstate: str_field(&v, "operstate").unwrap_or_default(),
        flags: v["flags"]
            .as_array()
            .map(|f| {
                f.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
        kind: v
            .get("linkinfo")
            .and_then(|li| li.get("info_kind"))
            .and_then(Value::as_str)
            .map(String::from),
        raw: v,
    }
}

fn parse_dst(text: &str, v6: bool) -> IpNetwork {
    if text == "default" {
        return if v6 { "::/0" } else { "0.0.0.0/0" }.parse().unwrap();
    }
    text.parse::<IpNetwork>()
        .unwrap_or_else(|e| panic!("route dst {text:?}: {e}"))
}

fn parse_route(v: Value, v6: bool) -> Route {
    Route {
        dst: parse_dst(&str_field(&v, "dst").expect("route has dst"), v6),
        gateway: str_field(&v, "gateway").map(|g| g.parse().expect("gateway is an address")),
        dev: str_field(&v, "dev"),
        scope: str_field(&v, "scope").unwrap_or_else(|| "global".into()),
        protocol: str_field(&v, "protocol").unwrap_or_else(|| "boot".into()),
        route_type: str_field(&v, "type").unwrap_or_else(|| "unicast".into()),
        raw: v,
    }
}

impl Netns {
    /// Every interface in the namespace.
    pub fn links(&self) -> Vec<Link> {
        array(self.ip_json(&["-d", "link", "show"]))
            .into_iter()
            .map(parse_link)
            .collect()
    }

    /// The interface called `name`, if there is one.
    pub fn link(&self, name: &str) -> Option<Link> {
        self.links().into_iter().find(|l| l.name == name)
    }

    /// The interface called `name`; panics with the namespace's link list if absent.
    pub fn expect_link(&self, name: &str) -> Link {
        let links = self.links();
        let names: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
        links
            .iter()
            .find(|l| l.name == name)
            .cloned()
            .unwrap_or_else(|| panic!("no link {name:?} in {}; links: {names:?}", self.name()))
    }

    /// Names of the interfaces starting with `prefix` (`"fj"` for fjord host ends).
    pub fn link_names_with_prefix(&self, prefix: &str) -> Vec<String> {
        self.links()
            .into_iter()
            .map(|l| l.name)
            .filter(|n| n.starts_with(prefix))
            .collect()
    }

    /// Addresses of interface `dev`, both families, every scope.
    pub fn addresses(&self, dev: &str) -> Vec<Addr> {
        let mut out = Vec::new();
        for link in array(self.ip_json(&["addr", "show", "dev", dev])) {
            for a in link["addr_info"].as_array().cloned().unwrap_or_default() {
                out.push(Addr {
                    addr: str_field(&a, "local")
                        .expect("address has local")
                        .parse()
                        .expect("local is an address"),
                    prefix_len: a["prefixlen"].as_u64().expect("prefixlen") as u8,
                    scope: str_field(&a, "scope").unwrap_or_default(),
                    raw: a,
                });
            }
        }
        out
    }

    /// Addresses of `dev` other than IPv6 link-local ones (what IPAM gave it).
    pub fn global_addresses(&self, dev: &str) -> Vec<IpNetwork> {
        self.addresses(dev)
            .into_iter()
            .filter(|a| a.scope != "link")
            .map(|a| a.network())
            .collect()
    }

    /// IPv4 routes of the main table.
    pub fn routes_v4(&self) -> Vec<Route> {
        array(self.ip_json(&["-4", "route", "show"]))
            .into_iter()
            .map(|v| parse_route(v, false))
            .collect()
    }

    /// IPv6 routes of the main table.
    pub fn routes_v6(&self) -> Vec<Route> {
        array(self.ip_json(&["-6", "route", "show"]))
            .into_iter()
            .map(|v| parse_route(v, true))
            .collect()
    }

    /// Both families' routes of the main table.
    pub fn routes(&self) -> Vec<Route> {
        let mut all = self.routes_v4();
        all.extend(self.routes_v6());
        all
    }

    /// Routes whose destination is `dst` exactly.
    pub fn routes_to(&self, dst: IpNetwork) -> Vec<Route> {
        self.routes().into_iter().filter(|r| r.dst == dst).collect()
    }

    /// Routes that go out of interface `dev`.
    pub fn routes_via_dev(&self, dev: &str) -> Vec<Route> {
        self.routes()
            .into_iter()
            .filter(|r| r.dev.as_deref() == Some(dev))
            .collect()
    }

    /// Neighbour entries, both families.
    pub fn neighbours(&self) -> Vec<Neighbour> {
        let mut out = Vec::new();
        for family in ["-4", "-6"] {
            for v in array(self.ip_json(&[family, "neigh", "show"])) {
                out.push(Neighbour {
                    dst: str_field(&v, "dst")
                        .expect("neighbour has dst")
                        .parse()
                        .expect("neighbour dst is an address"),
                    dev: str_field(&v, "dev").unwrap_or_default(),
                    lladdr: str_field(&v, "lladdr").map(|m| m.to_lowercase()),
                    state: v["state"]
                        .as_array()
                        .map(|s| {
                            s.iter()
                                .filter_map(|x| x.as_str().map(String::from))
                                .collect()
                        })
                        .unwrap_or_default(),
                    raw: v,
                });
            }
        }
        out
    }

    /// The neighbour entry for `dst` on `dev`, if any.
    pub fn neighbour(&self, dev: &str, dst: IpAddr) -> Option<Neighbour> {
        self.neighbours()
            .into_iter()
            .find(|n| n.dev == dev && n.dst == dst)
    }
}

/// Calls `check` every 20 ms until it returns true; panics naming `what` if `timeout`
/// passes first.
pub fn poll_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
