//! Kernel route programming over rtnetlink: installs, removes and reconciles the routes
//! fjord-routed owns in the main table, and nobody else's.
//!
//! Ownership is the route protocol number: every route Fjord writes carries
//! [`RT_PROTO_FJORD`], every dump and delete is filtered by it, so routes of other
//! protocols (static, kernel, bird, dhcp, ...) are never read as ours or removed.
//! Installs use NLM_F_REPLACE so they are idempotent; since REPLACE matches a route by
//! prefix and metric only, whatever its protocol, Fjord's routes also carry their own
//! metric, [`RT_METRIC_FJORD`], so a replace can only ever hit a Fjord route.
//!
//! Speed comes from batching: [`Kernel::apply`] writes hundreds of requests per system
//! call without asking for ACKs, on a blocking thread beside the BGP sessions
//! ([`crate::netlink_batch`]), so a large table costs about what the kernel's FIB
//! insertions cost. Dumps and reconcile's removals go through rtnetlink.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::stream::{self, StreamExt, TryStreamExt};
use ipnetwork::IpNetwork;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType, RouteVia,
};
use netlink_packet_route::AddressFamily;
use nix::sched::{setns, CloneFlags};
use rtnetlink::sys::AsyncSocket;
use thiserror::Error;

use crate::netlink_batch::{BatchSocket, Request};
use crate::node::{NextHop, RouteOp};

/// Fjord's route protocol number (`rtm_protocol`). Values above 4 are free for routing
/// daemons to claim; iproute2's table names 8-18, 42, 99 and 186-192, and 200 is in
/// nobody's list. `ip route` prints it as `proto 200` unless a file in
/// `/etc/iproute2/rt_protos.d/` names it, e.g. `fjord.conf` holding `200 fjord`.
pub const RT_PROTO_FJORD: u8 = 200;

/// Metric (`RTA_PRIORITY`) of Fjord's routes. Not 0 (IPv4's default) and above 1024
/// (IPv6's default), so a route someone adds by hand for the same prefix wins in both
/// families, and Fjord's NLM_F_REPLACE never replaces it.
pub const RT_METRIC_FJORD: u32 = 2048;

/// Requests written ahead of their ACKs by reconcile's removals. Enough to keep the kernel busy; small enough
/// that the ACKs (and error replies, which echo the request) fit the socket's receive
/// buffer.
pub const IN_FLIGHT: usize = 256;

/// Ops handed to the batch thread at once by [`Kernel::apply`].
pub const APPLY_PIECE: usize = 1024;

/// SO_RCVBUF asked for (the kernel doubles it for bookkeeping).
const RECEIVE_BUFFER: libc::c_int = 1 << 20;

/// Failed changes kept in [`KernelError::Batch`]; the rest are only counted.
const ERRORS_KEPT: usize = 16;

const ESRCH: i32 = 3;

#[derive(Debug, Error)]
pub enum KernelError {
    #[error("cannot open network namespace {netns}: {source}")]
    OpenNetns { netns: PathBuf, source: io::Error },
    #[error("cannot enter network namespace {netns}: {source}")]
    EnterNetns { netns: PathBuf, source: nix::Error },
    #[error("cannot open a route netlink socket: {0}")]
    Socket(#[source] io::Error),
    #[error("cannot install route {prefix} {next_hop}: {source}")]
    Install {
        prefix: IpNetwork,
        next_hop: NextHop,
        source: io::Error,
    },
    #[error("cannot remove route {prefix} metric {metric}: {source}")]
    Remove {
        prefix: IpNetwork,
        metric: u32,
        source: io::Error,
    },
    #[error("cannot dump {family} routes: {source}")]
    Dump {
        family: &'static str,
        source: io::Error,
    },
    #[error("cannot {action} on fjord.vxlan: {source}")]
    Vxlan { action: String, source: io::Error },
    /// Every change was attempted; these failed (the first [`ERRORS_KEPT`] are kept).
    #[error("{failed} of {attempted} route changes failed, first: {}", errors[0])]
    Batch {
        attempted: usize,
        failed: usize,
        errors: Vec<KernelError>,
    },
}

/// A route with protocol [`RT_PROTO_FJORD`] found in the kernel's main table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FjordRoute {
    pub prefix: IpNetwork,
    /// `None` for a shape Fjord never writes (no gateway, multipath): reconciliation
    /// replaces or removes it.
    pub next_hop: Option<NextHop>,
    pub metric: u32,
}

/// What [`Kernel::reconcile`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    pub kept: usize,
    pub removed: usize,
    pub installed: usize,
}

/// The kernel's routing table, seen through one rtnetlink socket (dumps, removals of
/// foreign-metric routes) and one batch socket (every [`Kernel::apply`]).
#[derive(Clone)]
pub struct Kernel {
    handle: rtnetlink::Handle,
    batch: Arc<Mutex<BatchSocket>>,
}

impl Kernel {
    /// Opens a route netlink socket in the caller's network namespace. Must run inside a
    /// tokio runtime, which drives the connection.
    pub fn connect() -> Result<Kernel, KernelError> {
        let (mut connection, handle, _) =
            rtnetlink::new_connection_with_strict_check().map_err(KernelError::Socket)?;
        // An ACK that finds the receive buffer full is dropped, and its request would
        // wait forever: room for IN_FLIGHT replies (~1 KiB each with the echoed request
        // of an error) even when the reader falls behind. The kernel caps it at rmem_max.
        let socket = connection.socket_mut().socket_mut();
        socket
            .set_rx_buf_sz(RECEIVE_BUFFER)
            .map_err(KernelError::Socket)?;
        tokio::spawn(connection);
        let batch = BatchSocket::open().map_err(KernelError::Socket)?;
        Ok(Kernel {
            handle,
            batch: Arc::new(Mutex::new(batch)),
        })
    }

    /// Opens the socket inside the network namespace at `netns` (e.g. `/run/netns/x`),
    /// leaving the caller's threads where they are: a socket belongs to the namespace
    /// it was created in, so a short-lived thread enters the namespace, creates it and
    /// exits. Must run inside a tokio runtime.
    pub fn connect_in_netns(netns: &Path) -> Result<Kernel, KernelError> {
        let file = File::open(netns).map_err(|source| KernelError::OpenNetns {
            netns: netns.to_path_buf(),
            source,
        })?;
        let runtime = tokio::runtime::Handle::current();
        let netns = netns.to_path_buf();
        std::thread::spawn(move || {
            let _entered = runtime.enter();
            setns(&file, CloneFlags::CLONE_NEWNET)
                .map_err(|source| KernelError::EnterNetns { netns, source })?;
            Kernel::connect()
        })
        .join()
        .expect("netns thread panicked")
    }

    /// Applies `ops` in batches on a blocking thread (the caller's tasks keep running),
    /// [`APPLY_PIECE`] at a time so a huge change list is never copied whole. Every op
    /// is attempted; failures are collected into one [`KernelError::Batch`].
    pub async fn apply<I>(&self, ops: I) -> Result<(), KernelError>
    where
        I: IntoIterator<Item = RouteOp>,
    {
        let mut ops = ops.into_iter();
        let mut failures = Failures::default();
        loop {
            let piece: Vec<RouteOp> = ops.by_ref().take(APPLY_PIECE).collect();
            if piece.is_empty() {
                break;
            }
            failures.attempted += piece.len();
            for e in self.apply_piece(piece).await {
                failures.note(e);
            }
        }
        failures.result()
    }

    async fn apply_piece(&self, ops: Vec<RouteOp>) -> Vec<KernelError> {
        let batch = self.batch.clone();
        let (ops, failures) = tokio::task::spawn_blocking(move || {
            let requests = ops.iter().map(|op| request_of(*op));
            let failures = batch.lock().expect("batch socket lock").apply(requests);
            (ops, failures)
        })
        .await
        .expect("the netlink batch thread panicked");
        failures
            .into_iter()
            .filter_map(|(index, source)| batch_error(index.and_then(|i| ops.get(i)), source))
            .collect()
    }

    /// Every route of protocol [`RT_PROTO_FJORD`] in the main table, both families.
    pub async fn fjord_routes(&self) -> Result<Vec<FjordRoute>, KernelError> {
        let mut routes = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            self.dump(family, |r| routes.push(r)).await?;
        }
        Ok(routes)
    }

    /// Makes Fjord's routes in the kernel exactly `desired`: removes Fjord routes not
    /// in it (or with another metric), then installs what is missing or different.
    /// Routes of any other protocol are never read, replaced or removed.
    pub async fn reconcile(
        &self,
        desired: &HashMap<IpNetwork, NextHop>,
    ) -> Result<ReconcileReport, KernelError> {
        let mut planner = Planner::new(desired);
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            self.dump(family, |r| planner.observe(r)).await?;
        }
        let plan = planner.finish();
        let report = ReconcileReport {
            kept: plan.kept,
            removed: plan.remove.len(),
            installed: plan.install.len(),
        };
        // Removals first, all acknowledged, so none races an install of its prefix.
        let removals = stream::iter(plan.remove)
            .map(|r| self.remove(r.prefix, r.metric))
            .buffer_unordered(IN_FLIGHT);
        collect_failures(removals).await?;
        self.apply(plan.install).await?;
        Ok(report)
    }

    /// Deletes Fjord's route for `prefix` with `metric`; the protocol in the request
    /// makes the kernel skip any other protocol's route for the same prefix.
    async fn remove(&self, prefix: IpNetwork, metric: u32) -> Result<(), KernelError> {
        let message = remove_message(prefix, metric);
        match self.handle.route().del(message).execute().await {
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -ESRCH => Ok(()),
            result => result.map_err(|e| KernelError::Remove {
                prefix,
                metric,
                source: to_io(e),
            }),
        }
    }

    /// Streams the family's Fjord routes into `sink`; the kernel filters by protocol and
    /// table (strict dump checking), and so does `parse_route`, for older kernels.
    async fn dump(
        &self,
        family: AddressFamily,
        mut sink: impl FnMut(FjordRoute),
    ) -> Result<(), KernelError> {
        let mut request = RouteMessage::default();
        request.header.address_family = family;
        request.header.table = RouteHeader::RT_TABLE_MAIN;
        request.header.protocol = RouteProtocol::from(RT_PROTO_FJORD);
        let mut routes = self.handle.route().get(request).execute();
        let failed = |e| KernelError::Dump {
            family: if family == AddressFamily::Inet {
                "IPv4"
            } else {
                "IPv6"
            },
            source: to_io(e),
        };
        while let Some(message) = routes.try_next().await.map_err(failed)? {
            if let Some(route) = parse_route(&message) {
                sink(route);
            }
        }
        Ok(())
    }
}

async fn collect_failures(
    mut results: impl futures::Stream<Item = Result<(), KernelError>> + Unpin,
) -> Result<(), KernelError> {
    let (mut attempted, mut failed, mut errors) = (0, 0, Vec::new());
    while let Some(result) = results.next().await {
        attempted += 1;
        if let Err(e) = result {
            failed += 1;
            if errors.len() < ERRORS_KEPT {
                errors.push(e);
            }
        }
    }
    match failed {
        0 => Ok(()),
        _ => Err(KernelError::Batch {
            attempted,
            failed,
            errors,
        }),
    }
}

/// Failed changes of one [`Kernel::apply`]: all counted, the first few kept.
#[derive(Default)]
struct Failures {
    attempted: usize,
    failed: usize,
    kept: Vec<KernelError>,
}

impl Failures {
    fn note(&mut self, e: KernelError) {
        self.failed += 1;
        if self.kept.len() < ERRORS_KEPT {
            self.kept.push(e);
        }
    }

    fn result(self) -> Result<(), KernelError> {
        match self.failed {
            0 => Ok(()),
            failed => Err(KernelError::Batch {
                attempted: self.attempted,
                failed,
                errors: self.kept,
            }),
        }
    }
}

/// The batch request for an op: the same messages rtnetlink would send.
fn request_of(op: RouteOp) -> Request {
    match op {
        RouteOp::Replace { prefix, next_hop } => {
            Request::Replace(install_message(prefix, next_hop))
        }
        RouteOp::Remove { prefix } => Request::Delete(remove_message(prefix, RT_METRIC_FJORD)),
    }
}

/// A failed batch request as the error of its op; `None` for a removal of a route
/// that was already gone (ESRCH), which is what removing wanted.
fn batch_error(op: Option<&RouteOp>, source: io::Error) -> Option<KernelError> {
    match op {
        Some(&RouteOp::Replace { prefix, next_hop }) => Some(KernelError::Install {
            prefix,
            next_hop,
            source,
        }),
        Some(RouteOp::Remove { .. }) if source.raw_os_error() == Some(ESRCH) => None,
        Some(&RouteOp::Remove { prefix }) => Some(KernelError::Remove {
            prefix,
            metric: RT_METRIC_FJORD,
            source,
        }),
        None => Some(KernelError::Socket(source)),
    }
}

/// An rtnetlink error as the errno it carries (dropping the echoed request).
fn to_io(e: rtnetlink::Error) -> io::Error {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.to_io(),
        other => io::Error::other(other.to_string()),
    }
}

/// The identity of a Fjord route: main table, our protocol, prefix, metric.
fn route_message(prefix: IpNetwork, metric: u32) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = match prefix {
        IpNetwork::V4(_) => AddressFamily::Inet,
        IpNetwork::V6(_) => AddressFamily::Inet6,
    };
    m.header.destination_prefix_length = prefix.prefix();
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::from(RT_PROTO_FJORD);
    m.header.scope = RouteScope::Universe;
    m.header.kind = RouteType::Unicast;
    m.attributes
        .push(RouteAttribute::Destination(prefix.network().into()));
    m.attributes.push(RouteAttribute::Priority(metric));
    m
}

/// The delete request for Fjord's route `prefix` at `metric`.
fn remove_message(prefix: IpNetwork, metric: u32) -> RouteMessage {
    let mut message = route_message(prefix, metric);
    // Any scope and type, as `ip route del` does: a Fjord route someone wrote by hand
    // without a gateway (scope link) must go too.
    message.header.scope = RouteScope::NoWhere;
    message.header.kind = RouteType::Unspec;
    message
}

fn install_message(prefix: IpNetwork, next_hop: NextHop) -> RouteMessage {
    let mut m = route_message(prefix, RT_METRIC_FJORD);
    let gateway = match next_hop {
        NextHop::Via(gw) => gw,
        NextHop::OnLink { gateway, ifindex } => {
            m.header.flags.insert(RouteFlags::Onlink);
            m.attributes.push(RouteAttribute::Oif(ifindex));
            gateway
        }
    };
    // An IPv4 prefix via an IPv6 next hop (RFC 8950) needs RTA_VIA; anything else is a
    // plain gateway, and a mismatch the kernel refuses is reported per route.
    m.attributes.push(match (prefix, gateway) {
        (IpNetwork::V4(_), IpAddr::V6(v6)) => RouteAttribute::Via(RouteVia::Inet6(v6)),
        (_, gw) => RouteAttribute::Gateway(gw.into()),
    });
    m
}

/// Reads a dumped route; `None` unless it is a Fjord route of the main table.
fn parse_route(m: &RouteMessage) -> Option<FjordRoute> {
    let table = m.attributes.iter().find_map(|a| match a {
        RouteAttribute::Table(t) => Some(*t),
        _ => None,
    });
    let ours = u8::from(m.header.protocol) == RT_PROTO_FJORD;
    if !ours || table.unwrap_or(u32::from(m.header.table)) != u32::from(RouteHeader::RT_TABLE_MAIN)
    {
        return None;
    }
    let (mut dst, mut gateway, mut oif, mut metric) = (None, None, None, 0);
    for attr in &m.attributes {
        match attr {
            RouteAttribute::Destination(a) => dst = address(a),
            RouteAttribute::Gateway(a) => gateway = address(a),
            RouteAttribute::Via(RouteVia::Inet6(v6)) => gateway = Some(IpAddr::V6(*v6)),
            RouteAttribute::Via(RouteVia::Inet(v4)) => gateway = Some(IpAddr::V4(*v4)),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Priority(p) => metric = *p,
            _ => {}
        }
    }
    let dst = dst.unwrap_or(match m.header.address_family {
        AddressFamily::Inet6 => IpAddr::from([0u16; 8]),
        _ => IpAddr::from([0u8; 4]),
    });
    let prefix = IpNetwork::new(dst, m.header.destination_prefix_length).ok()?;
    let onlink = m.header.flags.contains(RouteFlags::Onlink);
    let next_hop = gateway.map(|gateway| match (onlink, oif) {
        (true, Some(ifindex)) => NextHop::OnLink { gateway, ifindex },
        _ => NextHop::Via(gateway),
    });
    Some(FjordRoute {
        prefix,
        next_hop,
        metric,
    })
}

fn address(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// Reconciliation as a pure computation: fed the kernel's Fjord routes one at a time
/// (no copy of a large table is held), it decides what to keep, remove and install.
pub struct Planner<'a> {
    desired: &'a HashMap<IpNetwork, NextHop>,
    correct: HashSet<IpNetwork>,
    remove: Vec<FjordRoute>,
}

/// The outcome of a [`Planner`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReconcilePlan {
    pub kept: usize,
    /// Fjord routes to delete: not desired, or at another metric than ours.
    pub remove: Vec<FjordRoute>,
    /// Missing or different routes, to install with NLM_F_REPLACE.
    pub install: Vec<RouteOp>,
}

impl<'a> Planner<'a> {
    pub fn new(desired: &'a HashMap<IpNetwork, NextHop>) -> Self {
        Planner {
            desired,
            correct: HashSet::new(),
            remove: Vec::new(),
        }
    }

    pub fn observe(&mut self, route: FjordRoute) {
        let wanted = self.desired.get(&route.prefix);
        if route.metric != RT_METRIC_FJORD || wanted.is_none() {
            self.remove.push(route);
        } else if route.next_hop.as_ref() == wanted {
            self.correct.insert(route.prefix);
        }
        // Otherwise desired but different: the install replaces it in place.
    }

    pub fn finish(self) -> ReconcilePlan {
        let install = self
            .desired
            .iter()
            .filter(|(prefix, _)| !self.correct.contains(prefix))
            .map(|(&prefix, &next_hop)| RouteOp::Replace { prefix, next_hop })
            .collect();
        ReconcilePlan {
            kept: self.correct.len(),
            remove: self.remove,
            install,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn via(s: &str) -> NextHop {
        NextHop::Via(s.parse().unwrap())
    }

    fn ours(prefix: &str, next_hop: NextHop) -> FjordRoute {
        FjordRoute {
            prefix: net(prefix),
            next_hop: Some(next_hop),
            metric: RT_METRIC_FJORD,
        }
    }

    fn plan(desired: &HashMap<IpNetwork, NextHop>, current: &[FjordRoute]) -> ReconcilePlan {
        let mut planner = Planner::new(desired);
        current.iter().for_each(|r| planner.observe(*r));
        let mut plan = planner.finish();
        plan.install.sort_by_key(|op| match op {
            RouteOp::Replace { prefix, .. } | RouteOp::Remove { prefix } => *prefix,
        });
        plan
    }

    #[test]
    fn plan_keeps_correct_routes_and_fills_gaps() {
        let desired = HashMap::from([
            (net("10.1.0.0/26"), via("10.0.0.2")),
            (net("10.1.0.64/26"), via("10.0.0.3")),
        ]);
        let p = plan(&desired, &[ours("10.1.0.0/26", via("10.0.0.2"))]);
        assert_eq!(p.kept, 1);
        assert!(p.remove.is_empty());
        assert_eq!(
            p.install,
            vec![RouteOp::Replace {
                prefix: net("10.1.0.64/26"),
                next_hop: via("10.0.0.3")
            }]
        );
    }

    #[test]
    fn plan_removes_stale_and_replaces_different() {
        let desired = HashMap::from([(net("10.1.0.0/26"), via("10.0.0.2"))]);
        let stale = ours("10.9.0.0/26", via("10.0.0.9"));
        let p = plan(&desired, &[stale, ours("10.1.0.0/26", via("10.0.0.7"))]);
        assert_eq!(p.remove, vec![stale]);
        assert_eq!(p.kept, 0);
        assert_eq!(p.install.len(), 1);
    }

    #[test]
    fn plan_removes_fjord_routes_at_a_foreign_metric() {
        let desired = HashMap::from([(net("10.1.0.0/26"), via("10.0.0.2"))]);
        let odd = FjordRoute {
            metric: 0,
            ..ours("10.1.0.0/26", via("10.0.0.2"))
        };
        let p = plan(&desired, &[odd]);
        assert_eq!(p.remove, vec![odd]);
        assert_eq!(p.install.len(), 1);
    }

    #[test]
    fn plan_treats_onlink_and_via_as_different() {
        let onlink = NextHop::OnLink {
            gateway: "10.0.0.2".parse().unwrap(),
            ifindex: 7,
        };
        let desired = HashMap::from([(net("10.1.0.0/26"), onlink)]);
        let p = plan(&desired, &[ours("10.1.0.0/26", via("10.0.0.2"))]);
        assert_eq!(p.kept, 0);
        assert!(p.remove.is_empty());
        assert_eq!(p.install.len(), 1);
        let p = plan(&desired, &[ours("10.1.0.0/26", onlink)]);
        assert_eq!(p.kept, 1);
    }

    #[test]
    fn messages_round_trip_through_the_parser() {
        for (prefix, next_hop) in [
            (net("10.1.0.0/26"), via("10.0.0.2")),
            (net("fd00:244::/122"), via("fd00::2")),
            (
                net("10.1.0.64/26"),
                NextHop::OnLink {
                    gateway: "10.0.0.3".parse().unwrap(),
                    ifindex: 4,
                },
            ),
            (net("10.1.0.128/26"), via("fe80::1")),
        ] {
            let parsed = parse_route(&install_message(prefix, next_hop)).unwrap();
            assert_eq!(parsed, ours(&prefix.to_string(), next_hop));
        }
    }

    #[test]
    fn parser_ignores_other_protocols_and_tables() {
        let mut m = install_message(net("10.1.0.0/26"), via("10.0.0.2"));
        m.header.protocol = RouteProtocol::Static;
        assert_eq!(parse_route(&m), None);
        let mut m = install_message(net("10.1.0.0/26"), via("10.0.0.2"));
        m.header.table = 100;
        assert_eq!(parse_route(&m), None);
    }
}
