use super::*;
use std::collections::BTreeMap;

/// An in-memory store: every block of the cluster, decisions applied as a store would.
#[derive(Default)]
struct Cluster {
    blocks: BTreeMap<IpNetwork, Block>,
}

impl Cluster {
    fn snapshot(&self, node: &str) -> Snapshot {
        Snapshot {
            claims: self
                .blocks
                .values()
                .map(|b| Claim {
                    block: b.cidr,
                    node: b.node.clone(),
                })
                .collect(),
            own: self
                .blocks
                .values()
                .filter(|b| b.node == node)
                .cloned()
                .collect(),
        }
    }

    fn apply<T>(&mut self, d: Decision<T>) -> T {
        for b in d.changed {
            self.blocks.insert(b.cidr, b);
        }
        d.outcome
    }

    fn add(&mut self, l: &Layout, node: &str, id: &str) -> Result<Vec<Assigned>, IpamError> {
        self.add_owned(l, node, &handle(id), &owner("fjord"), &[])
    }

    fn add_owned(
        &mut self,
        l: &Layout,
        node: &str,
        h: &Handle,
        o: &Owner,
        requested: &[IpAddr],
    ) -> Result<Vec<Assigned>, IpamError> {
        let d = allocate(l, node, &self.snapshot(node), h, o, requested)?;
        Ok(self.apply(d))
    }

    fn add_one(&mut self, l: &Layout, node: &str, id: &str) -> IpAddr {
        let got = self.add(l, node, id).unwrap();
        assert_eq!(got.len(), 1, "{got:?}");
        got[0].address
    }
}

fn layout(pools: &[&str], v4: u8, v6: u8) -> Layout {
    Layout {
        pools: pools.iter().map(|p| p.parse().unwrap()).collect(),
        block_size_v4: v4,
        block_size_v6: v6,
    }
}

fn handle(id: &str) -> Handle {
    Handle {
        container_id: id.into(),
        ifname: "eth0".into(),
    }
}

fn owner(network: &str) -> Owner {
    Owner {
        network: network.into(),
        ..Owner::default()
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

#[test]
fn the_first_allocation_claims_the_first_block_and_skips_ordinal_zero() {
    let l = layout(&["10.244.0.0/16"], 26, 122);
    let mut c = Cluster::default();
    let got = c.add(&l, "n1", "a").unwrap();
    assert_eq!(
        got,
        vec![Assigned {
            address: ip("10.244.0.1"),
            block: net("10.244.0.0/26"),
        }]
    );
    assert_eq!(c.blocks[&net("10.244.0.0/26")].node, "n1");
}

#[test]
fn a_full_block_makes_the_node_claim_the_next_one_then_the_pool_runs_out() {
    let l = layout(&["10.0.0.0/29"], 30, 122);
    let mut c = Cluster::default();
    let got: Vec<_> = (0..6)
        .map(|i| c.add_one(&l, "n1", &format!("c{i}")))
        .collect();
    let want: Vec<_> = [
        "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.5", "10.0.0.6", "10.0.0.7",
    ]
    .iter()
    .map(|s| ip(s))
    .collect();
    assert_eq!(got, want, "ordinals 0 (.0 and .4) are never handed out");
    let err = c.add(&l, "n1", "c6").unwrap_err();
    assert!(matches!(err, IpamError::PoolExhausted { .. }), "{err}");
    assert!(err.to_string().contains("10.0.0.0/29"), "{err}");
    assert!(err.to_string().contains("n1"), "{err}");
}

#[test]
fn the_next_pool_of_the_family_is_used_when_one_is_exhausted() {
    let l = layout(&["10.0.0.0/30", "10.1.0.0/30"], 30, 122);
    let mut c = Cluster::default();
    let got: Vec<_> = (0..4)
        .map(|i| c.add_one(&l, "n1", &format!("c{i}")))
        .collect();
    assert_eq!(got[2], ip("10.0.0.3"));
    assert_eq!(got[3], ip("10.1.0.1"));
}

#[test]
fn dual_stack_gets_one_address_per_family() {
    let l = layout(&["10.244.0.0/16", "fd00:244::/56"], 26, 122);
    let mut c = Cluster::default();
    let got = c.add(&l, "n1", "a").unwrap();
    let addrs: Vec<_> = got.iter().map(|a| a.address).collect();
    assert_eq!(addrs, vec![ip("10.244.0.1"), ip("fd00:244::1")]);
    assert_eq!(got[1].block, net("fd00:244::/122"));
    let v6_only = layout(&["fd00:244::/56"], 26, 122);
    assert_eq!(
        c.add(&v6_only, "n1", "b").unwrap()[0].address,
        ip("fd00:244::2")
    );
}

#[test]
fn a_requested_address_is_taken_exactly_and_claims_its_block() {
    let l = layout(&["10.244.0.0/16", "fd00:244::/56"], 26, 122);
    let mut c = Cluster::default();
    let got = c
        .add_owned(&l, "n1", &handle("a"), &owner("fjord"), &[ip("10.244.3.7")])
        .unwrap();
    assert_eq!(got[0].address, ip("10.244.3.7"));
    assert_eq!(got[0].block, net("10.244.3.0/26"));
    assert_eq!(
        got[1].address,
        ip("fd00:244::1"),
        "the other family is automatic"
    );
    assert_eq!(c.blocks[&net("10.244.3.0/26")].node, "n1");
    // The next automatic address comes from the node's blocks, the claimed one included.
    assert_eq!(c.add(&l, "n1", "b").unwrap()[0].address, ip("10.244.3.1"));
}

#[test]
fn a_requested_address_that_cannot_be_had_says_why() {
    let l = layout(&["10.244.0.0/16", "fd00:244::/56"], 26, 122);
    let mut c = Cluster::default();
    c.add(&l, "n1", "a").unwrap();
    let mut ask = |node: &str, id: &str, addrs: &[&str]| {
        let addrs: Vec<_> = addrs.iter().map(|s| ip(s)).collect();
        c.add_owned(&l, node, &handle(id), &owner("fjord"), &addrs)
            .unwrap_err()
            .to_string()
    };
    assert!(ask("n1", "b", &["10.244.0.1"]).contains("handle a/eth0 holds it"));
    assert!(ask("n1", "b", &["10.244.0.0"]).contains("ordinal 0"));
    assert!(ask("n2", "b", &["10.244.0.9"]).contains("belongs to node n1"));
    assert!(ask("n1", "b", &["192.168.0.1"]).contains("in no pool"));
    assert!(ask("n1", "b", &["10.244.9.1", "10.244.9.2"]).contains("one family"));
    // A failed request writes nothing: the v4 part of a failed dual request is not kept.
    assert!(ask("n1", "b", &["10.244.9.1", "fd00:244::"]).contains("ordinal 0"));
    assert!(!c.blocks.contains_key(&net("10.244.9.0/26")));
}

#[test]
fn the_same_handle_twice_is_refused_with_what_it_holds() {
    let l = layout(&["10.244.0.0/16"], 26, 122);
    let mut c = Cluster::default();
    c.add(&l, "n1", "a").unwrap();
    match c.add(&l, "n1", "a").unwrap_err() {
        IpamError::AlreadyAllocated {
            handle: h,
            addresses,
        } => {
            assert_eq!(h, handle("a"));
            assert_eq!(addresses, vec![ip("10.244.0.1")]);
        }
        other => panic!("{other}"),
    }
}

#[test]
fn release_frees_by_handle_and_an_unknown_handle_is_not_an_error() {
    let l = layout(&["10.0.0.0/30", "fd00::/126"], 30, 126);
    let mut c = Cluster::default();
    c.add(&l, "n1", "a").unwrap();
    let d = release(&c.snapshot("n1"), &handle("nobody"));
    assert!(d.outcome.is_empty() && d.changed.is_empty());
    let d = release(&c.snapshot("n1"), &handle("a"));
    assert_eq!(d.outcome, vec![ip("10.0.0.1"), ip("fd00::1")]);
    assert_eq!(d.changed.len(), 2);
    c.apply(d);
    assert!(lookup(&c.snapshot("n1"), &handle("a")).is_empty());
}

#[test]
fn gc_releases_only_this_nodes_allocations_of_this_network_not_kept() {
    let l = layout(&["10.244.0.0/16"], 26, 122);
    let mut c = Cluster::default();
    for (node, id, network) in [
        ("n1", "keep", "fjord"),
        ("n1", "stale", "fjord"),
        ("n1", "other-net", "macvlan"),
        ("n2", "other-node", "fjord"),
    ] {
        c.add_owned(&l, node, &handle(id), &owner(network), &[])
            .unwrap();
    }
    let d = gc(&c.snapshot("n1"), "fjord", &[handle("keep")]);
    assert_eq!(d.outcome, vec![(handle("stale"), ip("10.244.0.2"))]);
    c.apply(d);
    assert_eq!(lookup(&c.snapshot("n1"), &handle("keep")).len(), 1);
    assert_eq!(lookup(&c.snapshot("n1"), &handle("other-net")).len(), 1);
    assert_eq!(lookup(&c.snapshot("n2"), &handle("other-node")).len(), 1);
    assert!(lookup(&c.snapshot("n1"), &handle("stale")).is_empty());
}

#[test]
fn nodes_sharing_a_pool_never_share_a_block_or_an_address() {
    let l = layout(&["10.0.0.0/24"], 28, 122);
    let mut c = Cluster::default();
    let mut seen = BTreeSet::new();
    for i in 0..60 {
        let node = ["n1", "n2", "n3"][i % 3];
        let got = c.add(&l, node, &format!("c{i}")).unwrap();
        let block = &c.blocks[&got[0].block];
        assert_eq!(block.node, node);
        assert!(seen.insert(got[0].address), "{} twice", got[0].address);
    }
    let nodes_per_block: Vec<_> = c.blocks.values().map(|b| b.node.as_str()).collect();
    assert_eq!(
        nodes_per_block.len(),
        6,
        "3 nodes x 20 addresses / 15 per block"
    );
    for b in c.blocks.values() {
        assert!(b
            .allocations()
            .all(|(_, a)| c.snapshot(&b.node).own.contains(b)
                && lookup(&c.snapshot(&b.node), &a.handle).len() == 1));
    }
}

#[test]
fn blocks_of_an_older_block_size_are_stepped_over() {
    let mut c = Cluster::default();
    c.add(&layout(&["10.0.0.0/24"], 28, 122), "n1", "a")
        .unwrap();
    let got = c
        .add(&layout(&["10.0.0.0/24"], 26, 122), "n2", "b")
        .unwrap();
    assert_eq!(got[0].block, net("10.0.0.64/26"));
    // n1 keeps using its /28 under the new size.
    let got = c
        .add(&layout(&["10.0.0.0/24"], 26, 122), "n1", "c")
        .unwrap();
    assert_eq!(got[0].address, ip("10.0.0.2"));
}

#[test]
fn a_store_with_overlapping_blocks_is_refused() {
    let l = layout(&["10.0.0.0/24"], 26, 122);
    let snap = Snapshot {
        claims: vec![
            Claim {
                block: net("10.0.0.0/26"),
                node: "n1".into(),
            },
            Claim {
                block: net("10.0.0.0/28"),
                node: "n2".into(),
            },
        ],
        own: vec![],
    };
    let err = allocate(&l, "n3", &snap, &handle("a"), &owner("fjord"), &[]).unwrap_err();
    assert!(err.to_string().contains("overlapping blocks"), "{err}");
}
