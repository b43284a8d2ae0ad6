//! Interop with the BGP speakers operators run: BIRD 2 and GoBGP (Debian's packages) as
//! outside peers of a `fjord-routed` node through `--peer` (issue 3, "Interop").
//!
//! `bird_and_gobgp_peer_with_*` proves the test bed itself, without fjord: the two
//! runners peer with each other and routes flow both ways. The `fjord_*` tests need the
//! daemon; each checks the session reaches Established, fjord's IPAM blocks (IPv4 and
//! IPv6) reach the peer (BIRD's kernel table, GoBGP's RIB) with the node's addresses as
//! next hops, and the peer's prefixes land in fjord's kernel with protocol 200.
//! Pods then reach the peer's prefixes and the peer reaches the pods, so the routes are
//! used, not only present.
//!
//! Timers: peers and daemons run with a 9 s hold time, to keep failures quick.
//! Run `conformance/scripts/install-routing-deps.sh` first (as root).

use fjord_conformance::lab::{
    is_fjord_route, Lab, LabSpec, Machine, RoutedStatus, FJORD_ROUTE_PROTOCOLS, MESH_ASN,
    MESH_PEER_TYPE,
};
use fjord_conformance::peers::{
    own_prefixes, wait_kernel_routes, BgpPeer, BgpPeerSpec, Bird, Gobgp,
};
use ipnetwork::IpNetwork;
use std::net::IpAddr;
use std::time::Duration;

/// How long a session may take to come up (connect retry of a few seconds, plus start).
const ESTABLISHED_WITHIN: Duration = Duration::from_secs(30);
/// How long routes may take to travel once the session is up, into a RIB or a kernel.
const ROUTES_WITHIN: Duration = Duration::from_secs(15);
/// An outside AS for the eBGP cases.
const OUTSIDE_ASN: u32 = 65001;
/// Hold time of the daemons in these tests (seconds, as `--hold-time` takes it).
const HOLD_TIME: &str = "9";

fn v4(m: &Machine) -> IpAddr {
    m.address(false)
}

fn v6(m: &Machine) -> IpAddr {
    m.address(true)
}

/// Gives `host` the first address of each of its originated prefixes, so pods can ping
/// into them; returns those addresses.
fn answer_in_own_prefixes(host: &Machine, prefixes: &[IpNetwork]) -> Vec<IpAddr> {
    prefixes
        .iter()
        .map(|p| {
            let addr = match p {
                IpNetwork::V4(n) => IpAddr::V4(n.nth(1).expect("a /24 has a first host")),
                IpNetwork::V6(n) => {
                    let mut o = n.network().octets();
                    o[15] = 1;
                    IpAddr::V6(o.into())
                }
            };
            host.netns().add_stand_in_address(addr);
            addr
        })
        .collect()
}

/// The two runners peer with each other over iBGP (both in AS 64512) or eBGP.
fn bird_and_gobgp_exchange_routes(bird_asn: u32, gobgp_asn: u32) {
    let lab = Lab::new(LabSpec {
        nodes: 0,
        subnets: 1,
        hosts: 2,
    });
    let (bh, gh) = (lab.host(0), lab.host(1));
    let bird_prefixes = own_prefixes(1);
    let gobgp_prefixes = own_prefixes(2);
    let bird = Bird::start(
        bh.netns(),
        lab.dir(),
        &BgpPeerSpec::on(bh, bird_asn)
            .neighbor(gh.address_v4(), gobgp_asn)
            .originate(&bird_prefixes),
    );
    let gobgp = Gobgp::start(
        gh.netns(),
        lab.dir(),
        &BgpPeerSpec::on(gh, gobgp_asn)
            .neighbor(bh.address_v4(), bird_asn)
            .originate(&gobgp_prefixes),
    );

    bird.wait_established(v4(gh), ESTABLISHED_WITHIN);
    gobgp.wait_established(v4(bh), ESTABLISHED_WITHIN);

    // GoBGP -> BIRD: in BIRD's RIB, then in BIRD's kernel via GoBGP's addresses.
    bird.wait_learned(v4(gh), &gobgp_prefixes, &[v4(gh), v6(gh)], ROUTES_WITHIN);
    wait_kernel_routes(
        bh.netns(),
        &[(gobgp_prefixes[0], v4(gh)), (gobgp_prefixes[1], v6(gh))],
        &["bird"],
        ROUTES_WITHIN,
        "BIRD exported GoBGP's prefixes into its kernel",
    );
    // BIRD -> GoBGP: in GoBGP's Adj-RIB-In with BIRD's addresses as next hops.
    gobgp.wait_learned(v4(bh), &bird_prefixes, &[v4(bh), v6(bh)], ROUTES_WITHIN);
    // BIRD's own prefixes are blackholes in its RIB and must not be put in its kernel
    // (only BGP-learned routes are exported there).
    let kernel = bird.kernel_routes(bh.netns());
    for p in bird_prefixes {
        assert!(
            kernel.iter().all(|r| r.dst != p),
            "BIRD exported its own static {p} into its kernel: {kernel:?}"
        );
    }
    // And the routes carry traffic: the BIRD host reaches an address in GoBGP's prefix
    // (GoBGP's host answers it; it routes back over the connected underlay).
    let targets = answer_in_own_prefixes(gh, &gobgp_prefixes);
    for t in targets {
        assert!(
            bh.netns().ping(t, 1),
            "BIRD's host cannot reach {t} through the route it learned from GoBGP"
        );
    }
}

#[test]
fn bird_and_gobgp_peer_with_each_other() {
    bird_and_gobgp_exchange_routes(MESH_ASN, MESH_ASN);
}

#[test]
fn bird_and_gobgp_peer_with_each_other_over_ebgp() {
    bird_and_gobgp_exchange_routes(MESH_ASN, OUTSIDE_ASN);
}

// ---------------------------------------------------------------------------------------
// fjord-routed with an outside peer
// ---------------------------------------------------------------------------------------

/// Waits until `node`'s status lists `peer` as Established, and returns the status.
fn wait_peer_established(lab: &Lab, node: usize, peer: IpAddr) -> RoutedStatus {
    lab.wait_for_status(
        node,
        ESTABLISHED_WITHIN,
        &format!("the session with {peer} is Established"),
        |s| s.peer(peer).is_some_and(|p| p.state == "Established"),
    )
}

/// Waits until node `i`'s status lists an IPv4 and an IPv6 block covering `pod`'s
/// addresses; returns the blocks.
fn wait_blocks_covering(
    lab: &Lab,
    i: usize,
    pod: &fjord_conformance::lab::LabPod,
) -> (IpNetwork, IpNetwork) {
    let status = lab.wait_for_status(
        i,
        ROUTES_WITHIN,
        "the node's status lists the blocks of its pod",
        |s| {
            s.blocks.iter().any(|b| b.contains(pod.ipv4))
                && s.blocks.iter().any(|b| b.contains(pod.ipv6))
        },
    );
    let b4 = *status.blocks.iter().find(|b| b.contains(pod.ipv4)).unwrap();
    let b6 = *status.blocks.iter().find(|b| b.contains(pod.ipv6)).unwrap();
    assert_eq!(b4.prefix(), 26, "IPv4 blocks are /26: {status:?}");
    assert_eq!(b6.prefix(), 122, "IPv6 blocks are /122: {status:?}");
    (b4, b6)
}

/// fjord's kernel has the peer's prefixes via the peer's addresses, with fjord's
/// protocol and on the underlay interface (no encapsulation).
fn assert_fjord_installs_peer_prefixes(node: &Machine, host: &Machine, prefixes: &[IpNetwork]) {
    wait_kernel_routes(
        node.netns(),
        &[(prefixes[0], v4(host)), (prefixes[1], v6(host))],
        &FJORD_ROUTE_PROTOCOLS,
        ROUTES_WITHIN,
        &format!(
            "fjord-routed installed the peer's prefixes on {}",
            node.name()
        ),
    );
    for r in node.fjord_routes() {
        if prefixes.contains(&r.dst) {
            assert_eq!(
                r.dev.as_deref(),
                Some(fjord_conformance::lab::UPLINK),
                "route {r:?} does not leave by the underlay interface"
            );
        }
    }
}

/// A pod on node 0 and the peer's host reach each other both ways: the pod pings an
/// address inside the peer's prefix (fjord's route to the peer), which answers over
/// the peer's route to fjord's block (BIRD's kernel) or — for GoBGP, which programs no
/// kernel — only the first direction is checked by the caller.
fn assert_pod_reaches(pod: &fjord_conformance::lab::LabPod, targets: &[IpAddr]) {
    for t in targets {
        assert!(
            pod.ping_once(*t),
            "pod {} cannot reach {t} in the peer's prefix",
            pod.ipv4
        );
    }
}

#[test]
fn fjord_and_bird_exchange_routes_over_ibgp() {
    let lab = Lab::new(LabSpec {
        nodes: 1,
        subnets: 1,
        hosts: 1,
    });
    let (node, host) = (lab.node(0), lab.host(0));
    let prefixes = own_prefixes(1);
    let bird = Bird::start(
        host.netns(),
        lab.dir(),
        &BgpPeerSpec::on(host, MESH_ASN)
            .neighbor(node.address_v4(), MESH_ASN)
            .originate(&prefixes),
    );
    let pod = lab.add_pod(0);
    let peer = v4(host).to_string();
    let mut routed = lab.start_routed(0, &["--no-mesh", "--peer", &peer, "--hold-time", HOLD_TIME]);

    let status = wait_peer_established(&lab, 0, v4(host));
    bird.wait_established(v4(node), ESTABLISHED_WITHIN);
    assert_eq!(
        status.peers.len(),
        1,
        "with --no-mesh the only peer is the --peer: {status:?}"
    );
    assert_ne!(
        status.peers[0].peer_type, MESH_PEER_TYPE,
        "a --peer is not a mesh peer: {status:?}"
    );
    let (b4, b6) = wait_blocks_covering(&lab, 0, &pod);

    // fjord -> BIRD: BIRD's RIB and kernel get both blocks via the node's addresses.
    bird.wait_learned(v4(node), &[b4, b6], &[v4(node), v6(node)], ROUTES_WITHIN);
    wait_kernel_routes(
        host.netns(),
        &[(b4, v4(node)), (b6, v6(node))],
        &["bird"],
        ROUTES_WITHIN,
        "BIRD exported fjord's blocks into its kernel",
    );
    // BIRD -> fjord: the kernel of the node has BIRD's prefixes, protocol 200.
    assert_fjord_installs_peer_prefixes(node, host, &prefixes);
    // The counters agree with what was exchanged.
    let status = lab.wait_for_status(0, ROUTES_WITHIN, "routes_in 2, routes_out 2", |s| {
        s.peer(v4(host))
            .is_some_and(|p| p.routes_in == 2 && p.routes_out == 2)
    });
    assert_eq!(status.peers[0].state, "Established");

    // Both directions carry pod traffic: pod -> BIRD's prefix uses fjord's route, the
    // reply uses BIRD's kernel route to the pod's block.
    let targets = answer_in_own_prefixes(host, &prefixes);
    assert_pod_reaches(&pod, &targets);
    routed.assert_running();
}

#[test]
fn fjord_and_gobgp_exchange_routes_over_ebgp() {
    let lab = Lab::new(LabSpec {
        nodes: 1,
        subnets: 1,
        hosts: 1,
    });
    let (node, host) = (lab.node(0), lab.host(0));
    let prefixes = own_prefixes(2);
    let gobgp = Gobgp::start(
        host.netns(),
        lab.dir(),
        &BgpPeerSpec::on(host, OUTSIDE_ASN)
            .neighbor(node.address_v4(), MESH_ASN)
            .originate(&prefixes),
    );
    let pod = lab.add_pod(0);
    let peer = format!("{}:{OUTSIDE_ASN}", v4(host));
    let mut routed = lab.start_routed(0, &["--no-mesh", "--peer", &peer, "--hold-time", HOLD_TIME]);

    wait_peer_established(&lab, 0, v4(host));
    gobgp.wait_established(v4(node), ESTABLISHED_WITHIN);
    let (b4, b6) = wait_blocks_covering(&lab, 0, &pod);

    // fjord -> GoBGP: its Adj-RIB-In has both blocks, next hops the node's addresses.
    gobgp.wait_learned(v4(node), &[b4, b6], &[v4(node), v6(node)], ROUTES_WITHIN);
    // GoBGP -> fjord: the node's kernel has GoBGP's prefixes, protocol 200.
    assert_fjord_installs_peer_prefixes(node, host, &prefixes);
    let status = lab.wait_for_status(0, ROUTES_WITHIN, "routes_in 2, routes_out 2", |s| {
        s.peer(v4(host))
            .is_some_and(|p| p.routes_in == 2 && p.routes_out == 2)
    });
    assert_eq!(status.peers.len(), 1, "only the --peer: {status:?}");

    // GoBGP programs no kernel: give its host the return routes by hand (inside the lab
    // namespace), then the pod reaches GoBGP's prefixes over fjord's routes.
    host.netns().ip(&[
        "route",
        "add",
        &b4.to_string(),
        "via",
        &node.address_v4().to_string(),
    ]);
    host.netns().ip(&[
        "-6",
        "route",
        "add",
        &b6.to_string(),
        "via",
        &node.address_v6().to_string(),
    ]);
    let targets = answer_in_own_prefixes(host, &prefixes);
    assert_pod_reaches(&pod, &targets);
    routed.assert_running();
}

/// A ToR-style eBGP peer of every node while nodes 1 and 2 mesh (Calico's "global"
/// peer): each node announces its own blocks to the ToR and installs the ToR's prefixes.
/// Nodes are not transit: node 1 does not pass node 2's blocks on to the ToR.
#[test]
fn fjord_mesh_with_an_outside_bird_peer() {
    let lab = Lab::new(LabSpec {
        nodes: 2,
        subnets: 1,
        hosts: 1,
    });
    let host = lab.host(0);
    let prefixes = own_prefixes(3);
    let bird = Bird::start(
        host.netns(),
        lab.dir(),
        &BgpPeerSpec::on(host, OUTSIDE_ASN)
            .neighbor(lab.node(0).address_v4(), MESH_ASN)
            .neighbor(lab.node(1).address_v4(), MESH_ASN)
            .originate(&prefixes),
    );
    let pods = [lab.add_pod(0), lab.add_pod(1)];
    let peer = format!("{}:{OUTSIDE_ASN}", v4(host));
    let _r0 = lab.start_routed(0, &["--peer", &peer, "--hold-time", HOLD_TIME]);
    let _r1 = lab.start_routed(1, &["--peer", &peer, "--hold-time", HOLD_TIME]);

    for i in 0..2 {
        let other = v4(lab.node(1 - i));
        let s = lab.wait_for_status(
            i,
            ESTABLISHED_WITHIN,
            "the node has its mesh peer and the outside peer Established",
            |s| {
                s.peers.len() == 2
                    && s.peers.iter().all(|p| p.state == "Established")
                    && s.peer(other).is_some_and(|p| p.peer_type == MESH_PEER_TYPE)
                    && s.peer(v4(host))
                        .is_some_and(|p| p.peer_type != MESH_PEER_TYPE)
            },
        );
        assert_eq!(s.peers.len(), 2, "{s:?}");
        bird.wait_established(v4(lab.node(i)), ESTABLISHED_WITHIN);
    }

    let (a4, a6) = wait_blocks_covering(&lab, 0, &pods[0]);
    let (b4, b6) = wait_blocks_covering(&lab, 1, &pods[1]);
    // BIRD learns each node's blocks from that node, with the node's addresses as next
    // hops, and nothing from the node that does not own them.
    let (n0, n1) = (lab.node(0), lab.node(1));
    bird.wait_learned(v4(n0), &[a4, a6], &[v4(n0), v6(n0)], ROUTES_WITHIN);
    bird.wait_learned(v4(n1), &[b4, b6], &[v4(n1), v6(n1)], ROUTES_WITHIN);
    let from_n0 = bird.learned_routes(v4(n0)).expect("BIRD lists its routes");
    assert!(
        from_n0.iter().all(|r| r.prefix == a4 || r.prefix == a6),
        "node1 announced only its own blocks, not node2's: {from_n0:?}"
    );
    // Both nodes install BIRD's prefixes via BIRD's addresses.
    for node in lab.nodes() {
        assert_fjord_installs_peer_prefixes(node, host, &prefixes);
    }
    // Pods on both nodes reach BIRD's prefixes; BIRD's kernel routes them back.
    let targets = answer_in_own_prefixes(host, &prefixes);
    for pod in &pods {
        assert_pod_reaches(pod, &targets);
    }
    // No fjord route on either node leaves by anything but the underlay.
    for node in lab.nodes() {
        for r in node.fjord_routes() {
            assert!(is_fjord_route(&r));
            assert_eq!(
                r.dev.as_deref(),
                Some(fjord_conformance::lab::UPLINK),
                "{r:?} on {}",
                node.name()
            );
        }
    }
}
