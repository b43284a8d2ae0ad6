//! Replays of what a node lives through, input by input, asserting the effects: no
//! root, no sockets, no clock.

use super::*;
use crate::bgp::{Afi, Origin, PeerConfig, Route, SessionState};
use crate::encap::{vtep_mac, VtepEntries};
use fjord_ipam::allocator::Claim;
use fjord_ipam::registry::NodeRecord;

const N1: &str = "10.0.0.1";
/// On n1's subnet.
const N2: &str = "10.0.0.2";
/// On another subnet.
const N3: &str = "10.0.1.3";
const N1_BLOCK: &str = "10.244.0.0/26";
const N2_BLOCK: &str = "10.244.0.64/26";
const N3_BLOCK: &str = "10.244.0.128/26";
const DEVICE: u32 = 7;

pub(super) fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub(super) fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

fn config(mode: Encapsulation) -> NodeConfig {
    NodeConfig {
        node_name: "n1".into(),
        addresses: vec![ip(N1), ip("fd00::1")],
        router_id: N1.parse().unwrap(),
        asn: 64512,
        peers: vec![],
        mesh: true,
        encapsulation: mode,
        listen_port: 179,
        hold_time: 30,
        graceful_restart_time: 30,
        connect_retry: Duration::from_secs(5),
    }
}

fn spec() -> DeviceSpec {
    DeviceSpec {
        underlay: 2,
        local: N1.parse().unwrap(),
        mtu: 1450,
        mac: vtep_mac(N1.parse().unwrap()),
    }
}

fn connected() -> Vec<IpNetwork> {
    vec![net("10.0.0.0/24"), net("fd00::/64")]
}

fn facts(inherited_routes: usize) -> StartFacts {
    StartFacts {
        inherited_routes,
        device: None,
        connected: connected(),
        device_spec: Some(spec()),
    }
}

fn record(name: &str, address: &str) -> NodeRecord {
    NodeRecord {
        name: name.into(),
        addresses: vec![ip(address)],
        asn: 64512,
    }
}

fn claim(block: &str, node: &str) -> Claim {
    Claim {
        block: net(block),
        node: node.into(),
    }
}

fn nodes(records: &[(&str, &str)], claims: &[(&str, &str)]) -> Input {
    Input::Cluster(ClusterEvent::Nodes(NodeView {
        nodes: records.iter().map(|(n, a)| record(n, a)).collect(),
        claims: claims.iter().map(|(b, n)| claim(b, n)).collect(),
    }))
}

fn route(prefix: &str, next_hop: &str, as_path: &[u32]) -> Route {
    Route {
        prefix: net(prefix),
        next_hop: ip(next_hop),
        origin: Origin::Igp,
        as_path: as_path.to_vec(),
        local_pref: Some(100),
        med: None,
    }
}

fn established(peer: &str) -> Input {
    Input::Peer(PeerEvent::Established {
        peer: ip(peer),
        peer_router_id: peer.parse().unwrap(),
        peer_graceful_restart: None,
        families: vec![Afi::Ipv4, Afi::Ipv6],
    })
}

fn state(peer: &str, state: SessionState) -> Input {
    Input::Peer(PeerEvent::StateChanged {
        peer: ip(peer),
        state,
        at: SystemTime::UNIX_EPOCH + Duration::from_secs(86_400 * 100 + 3600),
    })
}

fn announce(peer: &str, routes: Vec<Route>) -> Input {
    Input::Peer(PeerEvent::Update {
        peer: ip(peer),
        announced: routes,
        withdrawn: vec![],
    })
}

fn down(peer: &str, graceful: bool) -> Input {
    Input::Peer(PeerEvent::Down {
        peer: ip(peer),
        reason: "connection closed".into(),
        graceful,
    })
}

fn end_of_rib(peer: &str) -> Input {
    Input::Peer(PeerEvent::EndOfRib {
        peer: ip(peer),
        afi: Afi::Ipv4,
    })
}

fn kernel(result: KernelResult) -> Input {
    Input::Kernel(result)
}

fn via(prefix: &str, gateway: &str) -> RouteOp {
    RouteOp::Replace {
        prefix: net(prefix),
        next_hop: NextHop::Via(ip(gateway)),
    }
}

fn remove(prefix: &str) -> RouteOp {
    RouteOp::Remove {
        prefix: net(prefix),
    }
}

/// The route ops of every [`Effect::Routes`] among `effects`.
fn ops(effects: &[Effect]) -> Vec<RouteOp> {
    effects
        .iter()
        .flat_map(|e| match e {
            Effect::Routes { ops, .. } => ops.clone(),
            _ => vec![],
        })
        .collect()
}

fn timers_set(effects: &[Effect]) -> Vec<(Timer, Duration)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::SetTimer { timer, after } => Some((*timer, *after)),
            _ => None,
        })
        .collect()
}

fn commands_to(effects: &[Effect], peer: &str) -> Vec<PeerCommand> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Session { peer: p, command } if *p == ip(peer) => Some(command.clone()),
            _ => None,
        })
        .collect()
}

/// What the [`Effect::Reconcile`] among `effects` makes the kernel hold.
fn reconciled(effects: &[Effect]) -> &HashMap<IpNetwork, NextHop> {
    effects
        .iter()
        .find_map(|e| match e {
            Effect::Reconcile { desired } => Some(desired),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no reconcile: {effects:?}"))
}

fn originated(prefix: &str, next_hop: &str) -> Route {
    route(prefix, next_hop, &[])
}

/// A core past its start: the first reconcile done, n1 and n2 registered, n1 owning
/// its block, the session with n2 Established.
fn meshed_with_n2() -> NodeCore {
    let (mut core, _) = NodeCore::start(config(Encapsulation::CrossSubnet), facts(0));
    core.handle(kernel(KernelResult::Connected(Ok(connected()))));
    core.handle(nodes(&[("n1", N1), ("n2", N2)], &[(N1_BLOCK, "n1")]));
    core.handle_all([state(N2, SessionState::Established), established(N2)]);
    core
}

#[test]
fn start_without_inherited_routes_reconciles_at_once_and_then_every_minute() {
    let (mut core, effects) = NodeCore::start(config(Encapsulation::CrossSubnet), facts(0));
    assert_eq!(
        effects,
        vec![
            Effect::ReadConnected { device: None },
            Effect::SetTimer {
                timer: Timer::DeviceCheck,
                after: DEVICE_CHECK_EVERY
            },
        ]
    );
    let effects = core.handle(kernel(KernelResult::Connected(Ok(connected()))));
    assert_eq!(
        effects,
        vec![
            Effect::Reconcile {
                desired: HashMap::new()
            },
            Effect::SetTimer {
                timer: Timer::Reconcile,
                after: RECONCILE_EVERY
            },
        ]
    );
    let effects = core.handle(Input::Timer(Timer::Reconcile));
    assert_eq!(effects, vec![Effect::ReadConnected { device: None }]);
}

#[test]
fn a_registered_node_gets_a_session_that_announces_the_nodes_blocks() {
    let (mut core, _) = NodeCore::start(config(Encapsulation::CrossSubnet), facts(0));
    let effects = core.handle(nodes(
        &[("n1", N1), ("n2", N2)],
        &[(N1_BLOCK, "n1"), (N2_BLOCK, "n2")],
    ));
    let session = PeerConfig {
        port: 179,
        hold_time: 30,
        connect_retry: Duration::from_secs(5),
        graceful_restart_time: Some(30),
        ..PeerConfig::new(ip(N2), 64512, 64512, N1.parse().unwrap())
    };
    assert_eq!(
        effects,
        vec![
            Effect::StartSession(session),
            Effect::Session {
                peer: ip(N2),
                command: PeerCommand::Announce(vec![originated(N1_BLOCK, N1)])
            },
        ]
    );
    // The same view again changes nothing.
    let again = core.handle(nodes(
        &[("n1", N1), ("n2", N2)],
        &[(N1_BLOCK, "n1"), (N2_BLOCK, "n2")],
    ));
    assert_eq!(again, vec![]);
}

#[test]
fn peer_up_installs_its_routes_and_peer_down_removes_them() {
    let mut core = meshed_with_n2();
    let effects = core.handle(announce(N2, vec![route(N2_BLOCK, N2, &[])]));
    assert_eq!(ops(&effects), vec![via(N2_BLOCK, N2)]);
    let status = core.status(SystemTime::UNIX_EPOCH + Duration::from_secs(86_400 * 100 + 7200));
    let peer = &status.peers[0];
    assert_eq!(
        (peer.state.as_str(), peer.routes_in, peer.routes_out),
        ("Established", 1, 1)
    );
    assert_eq!(peer.since, "01:00:00");
    assert_eq!(peer.datapath, "native");
    // No graceful restart: withdrawn at once, no timer.
    let effects = core.handle(down(N2, false));
    assert_eq!(ops(&effects), vec![remove(N2_BLOCK)]);
    assert!(timers_set(&effects).is_empty());
}

#[test]
fn a_graceful_restart_keeps_routes_as_stale_until_the_restart_time_runs_out() {
    let mut core = meshed_with_n2();
    core.handle(announce(N2, vec![route(N2_BLOCK, N2, &[])]));
    let effects = core.handle(down(N2, true));
    assert_eq!(ops(&effects), vec![], "kept while the peer restarts");
    assert_eq!(
        timers_set(&effects),
        vec![(Timer::StaleRoutes(ip(N2)), Duration::from_secs(30))]
    );
    let effects = core.handle(Input::Timer(Timer::StaleRoutes(ip(N2))));
    assert_eq!(ops(&effects), vec![remove(N2_BLOCK)]);
}

#[test]
fn a_peer_restarting_twice_inside_one_window_loses_only_what_it_did_not_reannounce() {
    let mut core = meshed_with_n2();
    let other = "10.244.1.0/26";
    core.handle(announce(
        N2,
        vec![route(N2_BLOCK, N2, &[]), route(other, N2, &[])],
    ));
    // First restart: both kept, a timer.
    core.handle(down(N2, true));
    // Back: the timer is void, the stale routes wait for End-of-RIB.
    let effects = core.handle(established(N2));
    assert_eq!(
        effects,
        vec![Effect::CancelTimer(Timer::StaleRoutes(ip(N2)))]
    );
    core.handle(announce(N2, vec![route(N2_BLOCK, N2, &[])]));
    // A late expiry of the first restart's timer does nothing.
    assert_eq!(
        core.handle(Input::Timer(Timer::StaleRoutes(ip(N2)))),
        vec![]
    );
    // Second restart before End-of-RIB: a new timer, still nothing removed.
    let effects = core.handle(down(N2, true));
    assert_eq!(ops(&effects), vec![]);
    assert_eq!(
        timers_set(&effects),
        vec![(Timer::StaleRoutes(ip(N2)), Duration::from_secs(30))]
    );
    // Back again, re-announces its block (the kernel's route stays as it is),
    // End-of-RIB: the prefix it did not re-announce goes.
    core.handle(established(N2));
    let effects = core.handle_all([announce(N2, vec![route(N2_BLOCK, N2, &[])]), end_of_rib(N2)]);
    assert_eq!(ops(&effects), vec![remove(other)]);
}

#[test]
fn encapsulation_is_chosen_per_peer_native_on_the_subnet_vxlan_across() {
    let (mut core, _) = NodeCore::start(config(Encapsulation::CrossSubnet), facts(0));
    core.handle(kernel(KernelResult::Connected(Ok(connected()))));
    // n3 is on another subnet: the device is needed.
    let effects = core.handle(nodes(&[("n1", N1), ("n2", N2), ("n3", N3)], &[]));
    assert_eq!(effects[0], Effect::EnsureDevice(spec()));
    let effects = core.handle(kernel(KernelResult::DeviceEnsured(Ok((DEVICE, true)))));
    assert_eq!(
        effects,
        vec![Effect::ReadConnected {
            device: Some(DEVICE)
        }]
    );
    let effects = core.handle(kernel(KernelResult::Connected(Ok(connected()))));
    assert!(matches!(effects[0], Effect::Vteps { device: DEVICE, .. }));
    assert!(matches!(effects[1], Effect::Reconcile { .. }));
    core.handle_all([established(N2), established(N3)]);
    let effects = core.handle_all([
        announce(N2, vec![route(N2_BLOCK, N2, &[])]),
        announce(N3, vec![route(N3_BLOCK, N3, &[])]),
    ]);
    let n3_mac = vtep_mac(N3.parse().unwrap());
    let entries = VtepEntries {
        fdb: [(n3_mac, N3.parse().unwrap())].into(),
        neighbours: [(ip("10.244.0.128"), n3_mac)].into(),
    };
    assert_eq!(
        effects,
        vec![
            Effect::Vteps {
                device: DEVICE,
                entries,
                keep_stale: false
            },
            Effect::Routes {
                clear_first: vec![],
                ops: vec![
                    via(N2_BLOCK, N2),
                    RouteOp::Replace {
                        prefix: net(N3_BLOCK),
                        next_hop: NextHop::OnLink {
                            gateway: ip("10.244.0.128"),
                            ifindex: DEVICE
                        }
                    }
                ]
            }
        ]
    );
    let status = core.status(SystemTime::UNIX_EPOCH);
    let datapaths: Vec<&str> = status.peers.iter().map(|p| p.datapath.as_str()).collect();
    assert_eq!(datapaths, ["native", "vxlan"]);
}

#[test]
fn encapsulation_never_installs_no_route_to_a_node_on_another_subnet() {
    let (mut core, effects) = NodeCore::start(config(Encapsulation::Never), facts(0));
    assert_eq!(
        effects,
        vec![Effect::ReadConnected { device: None }],
        "no device checks"
    );
    core.handle(nodes(&[("n1", N1), ("n3", N3)], &[]));
    core.handle(established(N3));
    let effects = core.handle(announce(N3, vec![route(N3_BLOCK, N3, &[])]));
    assert_eq!(ops(&effects), vec![remove(N3_BLOCK)]);
    assert_eq!(
        core.status(SystemTime::UNIX_EPOCH).peers[0].datapath,
        "unreachable"
    );
}

#[test]
fn the_device_goes_when_the_last_node_across_subnets_leaves() {
    let (mut core, _) = NodeCore::start(config(Encapsulation::CrossSubnet), facts(0));
    core.handle(nodes(&[("n1", N1), ("n3", N3)], &[]));
    core.handle(kernel(KernelResult::DeviceEnsured(Ok((DEVICE, true)))));
    core.handle(kernel(KernelResult::Connected(Ok(connected()))));
    let effects = core.handle(nodes(&[("n1", N1), ("n2", N2)], &[]));
    assert_eq!(effects[0], Effect::RemoveDevice);
    assert!(effects.contains(&Effect::StopSession { peer: ip(N3) }));
    let effects = core.handle(kernel(KernelResult::DeviceRemoved(Ok(true))));
    assert_eq!(effects, vec![Effect::ReadConnected { device: None }]);
    // A periodic check finds nothing to do.
    let effects = core.handle(Input::Timer(Timer::DeviceCheck));
    assert_eq!(
        effects,
        vec![Effect::SetTimer {
            timer: Timer::DeviceCheck,
            after: DEVICE_CHECK_EVERY
        }]
    );
}

#[test]
fn a_block_claimed_is_announced_and_a_block_released_is_withdrawn() {
    let mut core = meshed_with_n2();
    let v6_block = "fd00:244::/122";
    let effects = core.handle(nodes(
        &[("n1", N1), ("n2", N2)],
        &[(N1_BLOCK, "n1"), ("10.244.1.0/26", "n1"), (v6_block, "n1")],
    ));
    assert_eq!(
        commands_to(&effects, N2),
        vec![PeerCommand::Announce(vec![
            originated("10.244.1.0/26", N1),
            originated(v6_block, "fd00::1")
        ])]
    );
    let effects = core.handle(nodes(
        &[("n1", N1), ("n2", N2)],
        &[("10.244.1.0/26", "n1"), (v6_block, "n1")],
    ));
    assert_eq!(
        commands_to(&effects, N2),
        vec![PeerCommand::Withdraw(vec![net(N1_BLOCK)])]
    );
    let status = core.status(SystemTime::UNIX_EPOCH);
    assert_eq!(status.blocks, ["10.244.1.0/26", v6_block]);
    assert_eq!(status.peers[0].routes_out, 2);
}

#[test]
fn a_registry_that_disappears_and_comes_back_keeps_sessions_and_routes() {
    let mut core = meshed_with_n2();
    core.handle(announce(N2, vec![route(N2_BLOCK, N2, &[])]));
    let effects = core.handle(Input::Cluster(ClusterEvent::Unavailable {
        error: "etcd: no answer within 2s".into(),
    }));
    assert_eq!(effects, vec![], "nothing stops, nothing is withdrawn");
    assert_eq!(
        core.handle(Input::Cluster(ClusterEvent::Unavailable {
            error: "still".into()
        })),
        vec![]
    );
    // Back with the same view: nothing to do.
    let effects = core.handle(nodes(&[("n1", N1), ("n2", N2)], &[(N1_BLOCK, "n1")]));
    assert_eq!(effects, vec![]);
    assert_eq!(core.status(SystemTime::UNIX_EPOCH).peers[0].routes_in, 1);
}

#[test]
fn a_restart_window_adopts_inherited_routes_and_sweeps_only_when_it_ends() {
    let (mut core, effects) = NodeCore::start(config(Encapsulation::CrossSubnet), facts(12));
    assert_eq!(
        timers_set(&effects),
        vec![
            (Timer::RestartWindow, Duration::from_secs(30)),
            (Timer::DeviceCheck, DEVICE_CHECK_EVERY)
        ]
    );
    assert!(!effects
        .iter()
        .any(|e| matches!(e, Effect::ReadConnected { .. })));
    // The periodic reconcile waits for the window.
    assert_eq!(core.handle(Input::Timer(Timer::Reconcile)), vec![]);
    core.handle(nodes(&[("n1", N1), ("n2", N2), ("n3", N3)], &[]));
    // The device arrives inside the window: every route replaced, none swept.
    core.handle(kernel(KernelResult::DeviceEnsured(Ok((DEVICE, false)))));
    let effects = core.handle(kernel(KernelResult::Connected(Ok(connected()))));
    assert!(matches!(
        effects[0],
        Effect::Vteps {
            keep_stale: true,
            ..
        }
    ));
    assert!(matches!(effects[1], Effect::ReplaceAll { .. }));
    core.handle_all([established(N3)]);
    let effects = core.handle(announce(N3, vec![route(N3_BLOCK, N3, &[])]));
    assert!(matches!(
        effects[0],
        Effect::Vteps {
            keep_stale: true,
            ..
        }
    ));
    // The window ends: a full reconcile of what the RIB holds now.
    let effects = core.handle(Input::Timer(Timer::RestartWindow));
    assert_eq!(
        effects,
        vec![Effect::ReadConnected {
            device: Some(DEVICE)
        }]
    );
    let effects = core.handle(kernel(KernelResult::Connected(Ok(connected()))));
    let desired = reconciled(&effects);
    assert_eq!(desired.keys().collect::<Vec<_>>(), [&net(N3_BLOCK)]);
    assert!(matches!(
        effects[0],
        Effect::Vteps {
            keep_stale: false,
            ..
        }
    ));
    assert_eq!(
        timers_set(&effects),
        vec![(Timer::Reconcile, RECONCILE_EVERY)]
    );
}

#[test]
fn rejected_routes_are_counted_never_installed_and_withdraw_an_earlier_path() {
    let mut core = meshed_with_n2();
    let effects = core.handle(announce(
        N2,
        vec![
            route("10.98.1.0/24", N1, &[]),
            route("fd00:98:1::/64", "fd00::1", &[]),
            route("10.98.2.0/24", N2, &[65010, 64512]),
            route(N1_BLOCK, N2, &[]),
            route("10.244.0.0/27", N2, &[]),
            route(N2_BLOCK, N2, &[]),
        ],
    ));
    assert_eq!(
        ops(&effects),
        vec![via(N2_BLOCK, N2)],
        "only the legitimate route"
    );
    let status = core.status(SystemTime::UNIX_EPOCH);
    let peer = &status.peers[0];
    assert_eq!(peer.routes_in, 1);
    let rejected: Vec<(&str, u64)> = peer
        .rejected
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    assert_eq!(
        rejected,
        [("as_path_loop", 1), ("own_block", 2), ("own_next_hop", 2)]
    );
    // An accepted route announced again with a looped path is withdrawn.
    let effects = core.handle(announce(N2, vec![route(N2_BLOCK, N2, &[64512])]));
    assert_eq!(ops(&effects), vec![remove(N2_BLOCK)]);
    let counted: u64 = core.counters().rejected().map(|(_, _, n)| n).sum();
    assert_eq!(counted, 6);
}

#[test]
fn a_block_claimed_later_stops_a_peer_announcing_it() {
    let mut core = meshed_with_n2();
    let later = "10.244.2.0/26";
    let effects = core.handle(announce(N2, vec![route(later, N2, &[])]));
    assert_eq!(ops(&effects), vec![via(later, N2)]);
    let effects = core.handle(nodes(
        &[("n1", N1), ("n2", N2)],
        &[(N1_BLOCK, "n1"), (later, "n1")],
    ));
    assert_eq!(
        ops(&effects),
        vec![remove(later)],
        "the node's own block now"
    );
    // Announced again: rejected, counted.
    let effects = core.handle(announce(N2, vec![route(later, N2, &[])]));
    assert_eq!(ops(&effects), vec![]);
    let status = core.status(SystemTime::UNIX_EPOCH);
    assert_eq!(status.peers[0].rejected["own_block"], 1);
}

#[test]
fn a_node_leaving_stops_its_session_and_removes_its_routes() {
    let mut core = meshed_with_n2();
    core.handle(announce(N2, vec![route(N2_BLOCK, N2, &[])]));
    core.handle(down(N2, true));
    let effects = core.handle(nodes(&[("n1", N1)], &[(N1_BLOCK, "n1")]));
    assert_eq!(
        effects,
        vec![
            Effect::StopSession { peer: ip(N2) },
            Effect::CancelTimer(Timer::StaleRoutes(ip(N2))),
            Effect::Routes {
                clear_first: vec![],
                ops: vec![remove(N2_BLOCK)]
            }
        ]
    );
    assert!(core.status(SystemTime::UNIX_EPOCH).peers.is_empty());
}

#[test]
fn kernel_apply_times_are_counted_per_kind() {
    let mut core = meshed_with_n2();
    core.handle(kernel(KernelResult::Applied {
        work: KernelWork::Routes,
        elapsed: Duration::from_millis(3),
        failed: false,
    }));
    core.handle(kernel(KernelResult::Applied {
        work: KernelWork::Routes,
        elapsed: Duration::from_millis(300),
        failed: true,
    }));
    let routes = core.counters().apply_seconds(KernelWork::Routes).unwrap();
    assert_eq!(routes.count, 2);
    assert_eq!(core.counters().apply_failures(KernelWork::Routes), 1);
    assert!(core.counters().apply_seconds(KernelWork::Vteps).is_none());
}

#[test]
fn a_device_that_cannot_be_set_up_is_tried_again_at_every_check() {
    let (mut core, _) = NodeCore::start(config(Encapsulation::Always), facts(0));
    let effects = core.handle(nodes(&[("n1", N1), ("n2", N2)], &[]));
    assert_eq!(effects[0], Effect::EnsureDevice(spec()));
    let failed = || {
        kernel(KernelResult::DeviceEnsured(Err(KernelError::Vxlan {
            action: "create the device".into(),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        })))
    };
    assert_eq!(
        core.handle(failed()),
        vec![],
        "no device, nothing to re-choose"
    );
    core.handle(established(N2));
    // VXLAN routes wait for the device.
    let effects = core.handle(announce(N2, vec![route(N2_BLOCK, N2, &[])]));
    assert_eq!(ops(&effects), vec![remove(N2_BLOCK)]);
    let effects = core.handle(Input::Timer(Timer::DeviceCheck));
    assert_eq!(effects[0], Effect::EnsureDevice(spec()));
    assert_eq!(core.handle(failed()), vec![]);
    // It works: every route is chosen again, through the device.
    core.handle(Input::Timer(Timer::DeviceCheck));
    core.handle(kernel(KernelResult::DeviceEnsured(Ok((DEVICE, true)))));
    let effects = core.handle(kernel(KernelResult::Connected(Ok(connected()))));
    let desired = reconciled(&effects);
    assert!(matches!(
        desired[&net(N2_BLOCK)],
        NextHop::OnLink {
            ifindex: DEVICE,
            ..
        }
    ));
}
