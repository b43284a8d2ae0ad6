//! What a node refuses to install from a peer (RFC 4271 9.1.2; issue 17 items 9, 10, 15),
//! against a real GoBGP in AS 64512 announcing to a real `fjord-routed` over iBGP:
//!
//! - a route whose NEXT_HOP is one of the node's own addresses (RFC 4271 5.1.3: the
//!   node would route the prefix to itself),
//! - a route whose AS_PATH holds the node's own AS (loop detection, RFC 4271 9.1.2),
//! - the node's own block, or a prefix inside it (a peer would take the node's pods).
//!
//! Each case is announced for both families where it has one, and a legitimate route
//! from the same peer is announced after them: once that is in the kernel, the bad ones
//! have been read, and the kernel must never hold them. `status --json` counts the
//! rejections per reason.
//!
//! Run `conformance/scripts/install-routing-deps.sh` first (as root).

use fjord_conformance::lab::{Lab, LabSpec, Machine, FJORD_ROUTE_PROTOCOLS, MESH_ASN};
use fjord_conformance::peers::{own_prefixes, wait_kernel_routes, BgpPeer, BgpPeerSpec, Gobgp};
use ipnetwork::IpNetwork;
use std::net::IpAddr;
use std::time::Duration;

const ESTABLISHED_WITHIN: Duration = Duration::from_secs(30);
const ROUTES_WITHIN: Duration = Duration::from_secs(15);
/// How long the kernel is watched after the legitimate routes arrived: a rejected
/// route must not turn up later either.
const STILL_ABSENT_FOR: Duration = Duration::from_secs(2);

fn v4(m: &Machine) -> IpAddr {
    m.address(false)
}

fn v6(m: &Machine) -> IpAddr {
    m.address(true)
}

fn net(s: &str) -> IpNetwork {
    s.parse().expect("a prefix")
}

/// The first half of `block`: a more-specific inside it.
fn inside(block: IpNetwork) -> IpNetwork {
    IpNetwork::new(block.network(), block.prefix() + 1).expect("a shorter block")
}

/// `gobgp global rib add PREFIX nexthop NH [aspath PATH]`.
fn announce(gobgp: &Gobgp, prefix: IpNetwork, next_hop: IpAddr, as_path: Option<&str>) {
    let family = if prefix.is_ipv4() { "ipv4" } else { "ipv6" };
    let (p, nh) = (prefix.to_string(), next_hop.to_string());
    let mut args = vec!["global", "rib", "-a", family, "add", &p, "nexthop", &nh];
    if let Some(path) = as_path {
        args.extend(["aspath", path]);
    }
    if let Err(e) = gobgp.cli(&args) {
        panic!("gobgp could not announce {prefix}: {e}");
    }
}

/// Every route of the node's main tables to one of `prefixes`, whatever its protocol.
fn routes_to_any(node: &Machine, prefixes: &[IpNetwork]) -> Vec<String> {
    node.netns()
        .routes()
        .into_iter()
        .filter(|r| prefixes.contains(&r.dst))
        .map(|r| format!("{} via {:?} proto {}", r.dst, r.gateway, r.protocol))
        .collect()
}

#[test]
fn a_peer_cannot_make_the_node_install_its_own_next_hop_a_looped_path_or_its_own_block() {
    let lab = Lab::new(LabSpec {
        nodes: 1,
        subnets: 1,
        hosts: 1,
    });
    let (node, host) = (lab.node(0), lab.host(0));
    let legitimate = own_prefixes(2);
    let gobgp = Gobgp::start(
        host.netns(),
        lab.dir(),
        &BgpPeerSpec::on(host, MESH_ASN)
            .neighbor(node.address_v4(), MESH_ASN)
            .originate(&legitimate),
    );
    let pod = lab.add_pod(0);
    let peer = v4(host).to_string();
    let mut routed = lab.start_routed(0, &["--no-mesh", "--peer", &peer, "--hold-time", "9"]);
    lab.wait_for_status(0, ESTABLISHED_WITHIN, "the GoBGP session is up", |s| {
        s.peer(v4(host)).is_some_and(|p| p.state == "Established")
    });
    gobgp.wait_established(v4(node), ESTABLISHED_WITHIN);
    let status = lab.wait_for_status(0, ROUTES_WITHIN, "the pod's blocks are listed", |s| {
        s.blocks.iter().any(|b| b.contains(pod.ipv4))
            && s.blocks.iter().any(|b| b.contains(pod.ipv6))
    });
    let b4 = *status.blocks.iter().find(|b| b.contains(pod.ipv4)).unwrap();
    let b6 = *status.blocks.iter().find(|b| b.contains(pod.ipv6)).unwrap();

    // Issue 17 item 9: the node's own addresses as next hop.
    let own_next_hop = [net("10.98.1.0/24"), net("fd00:98:1::/64")];
    announce(&gobgp, own_next_hop[0], v4(node), None);
    announce(&gobgp, own_next_hop[1], v6(node), None);
    // Item 10: the node's AS in the AS_PATH, alone and behind another AS.
    let looped = [net("10.98.2.0/24"), net("fd00:98:2::/64")];
    announce(&gobgp, looped[0], v4(host), Some("64512"));
    announce(&gobgp, looped[1], v6(host), Some("65010 64512"));
    // Item 15: the node's own blocks and prefixes inside them.
    let own_blocks = [b4, inside(b4), b6, inside(b6)];
    for block in own_blocks {
        let next_hop = if block.is_ipv4() { v4(host) } else { v6(host) };
        announce(&gobgp, block, next_hop, None);
    }
    // Last, from the same peer: a route that must be installed.
    let late = net("10.97.0.0/24");
    announce(&gobgp, late, v4(host), None);

    wait_kernel_routes(
        node.netns(),
        &[
            (legitimate[0], v4(host)),
            (legitimate[1], v6(host)),
            (late, v4(host)),
        ],
        &FJORD_ROUTE_PROTOCOLS,
        ROUTES_WITHIN,
        "the peer's legitimate routes are installed",
    );
    let rejected: Vec<IpNetwork> = own_next_hop
        .iter()
        .chain(&looped)
        .chain(&own_blocks)
        .copied()
        .collect();
    let deadline = std::time::Instant::now() + STILL_ABSENT_FOR;
    while std::time::Instant::now() < deadline {
        let held = routes_to_any(node, &rejected);
        assert!(
            held.is_empty(),
            "the node's kernel holds routes it must refuse: {held:#?}\n--- daemon log ---\n{}",
            lab.routed_log_tail(0)
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Counted per peer and reason; only the legitimate routes are routes in.
    let status = lab.status_json(0);
    let row = status["peers"]
        .as_array()
        .and_then(|peers| peers.iter().find(|p| p["address"] == peer))
        .unwrap_or_else(|| panic!("no row for {peer}: {status}"))
        .clone();
    assert_eq!(row["routes_in"], 3, "routes in: {row}");
    for (reason, count) in [("own_next_hop", 2), ("as_path_loop", 2), ("own_block", 4)] {
        assert_eq!(
            row["rejected"][reason], count,
            "rejected {reason} of {peer}: {row}"
        );
    }
    // One warning per peer and prefix names both.
    let log = lab.routed_log_tail(0);
    for prefix in &rejected {
        let needle = format!("prefix={prefix}");
        assert!(
            log.lines()
                .any(|l| l.contains("WARN") && l.contains(&needle) && l.contains(&peer)),
            "no warning naming {prefix} and {peer}:\n{log}"
        );
    }
    routed.assert_running();
    drop(gobgp);
}
