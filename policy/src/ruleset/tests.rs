use super::*;
use crate::model::{NamespaceInfo, ObjectKey, PodInfo};
use crate::translate::{ClusterView, LocalPod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::json;

/// The table as `parse_listing` would return it after applying `t`: rules known by
/// comment only.
fn as_listed(t: &Table) -> Table {
    let mut out = t.clone();
    for c in out.chains.values_mut() {
        for r in &mut c.rules {
            r.text.clear();
        }
    }
    out
}

fn view_with_pods() -> (ClusterView, Vec<LocalPod>) {
    let mut view = ClusterView::new();
    view.upsert_namespace(NamespaceInfo::new("x", Default::default()));
    let mut local = Vec::new();
    for (i, name) in ["a", "b"].iter().enumerate() {
        let ip: IpAddr = format!("10.244.0.{}", 10 + i).parse().unwrap();
        view.upsert_pod(PodInfo {
            key: ObjectKey::new("x", *name),
            labels: [("pod".to_string(), name.to_string())].into(),
            ips: vec![ip],
            named_ports: vec![],
            host_network: false,
            terminal: false,
        });
        local.push(LocalPod {
            key: ObjectKey::new("x", *name),
            interface: format!("fj0000000000{i}"),
            ips: vec![ip],
        });
    }
    (view, local)
}

fn policy(name: &str, spec: serde_json::Value) -> NetworkPolicy {
    serde_json::from_value(json!({"metadata": {"namespace": "x", "name": name}, "spec": spec}))
        .unwrap()
}

fn nat() -> NatConfig {
    NatConfig {
        enabled: true,
        pools: vec!["10.244.0.0/16".parse().unwrap()],
        node_addresses: vec!["10.250.0.1".parse().unwrap()],
        exempt: vec![],
    }
}

#[test]
fn nothing_on_means_no_table_and_deleting_a_left_over_one() {
    let desired = desired_table(None, &NatConfig::disabled());
    assert!(desired.is_empty());
    assert!(plan(None, &desired).is_empty());
    let old = desired_table(None, &nat());
    assert_eq!(
        plan(Some(&as_listed(&old)), &desired).commands,
        ["delete table inet fjord"]
    );
}

#[test]
fn a_new_table_is_one_batch_in_dependency_order() {
    let (view, local) = view_with_pods();
    let desired = desired_table(Some(&view.desired(&local)), &nat());
    let batch = plan(None, &desired);
    let text = batch.text();
    assert!(text.starts_with("add table inet fjord\n"), "{text}");
    let pos = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("{needle} in {text}"))
    };
    assert!(pos("add map inet fjord pod_egress") < pos("add rule inet fjord from_pod"));
    assert!(pos("add chain inet fjord forward") < pos("add element inet fjord pod_egress"));
    assert!(
        text.contains("\"fj00000000000\" : return"),
        "not isolated: egress returns"
    );
    assert!(
        text.contains("\"fj00000000000\" : accept"),
        "not isolated: ingress accepted"
    );
    assert!(text.contains("masquerade"));
}

#[test]
fn an_unchanged_table_needs_no_batch() {
    let (mut view, local) = view_with_pods();
    view.upsert_policy(&policy(
        "p",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{"podSelector": {}}], "ports": [{"port": 80}]}]}),
    ))
    .unwrap();
    let desired = desired_table(Some(&view.desired(&local)), &nat());
    assert!(plan(Some(&as_listed(&desired)), &desired).is_empty());
}

#[test]
fn a_new_peer_is_one_element_added() {
    let (mut view, mut local) = view_with_pods();
    view.upsert_policy(&policy(
        "p",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{"podSelector": {}}]}]}),
    ))
    .unwrap();
    let before = desired_table(Some(&view.desired(&local)), &nat());
    view.upsert_pod(PodInfo {
        key: ObjectKey::new("x", "c"),
        labels: [("pod".to_string(), "c".to_string())].into(),
        ips: vec!["10.244.0.99".parse().unwrap()],
        named_ports: vec![],
        host_network: false,
        terminal: false,
    });
    let after_view = view.desired(&local);
    let after = desired_table(Some(&after_view), &nat());
    let batch = plan(Some(&as_listed(&before)), &after);
    assert_eq!(batch.commands.len(), 1, "{:?}", batch.commands);
    assert!(batch.commands[0].starts_with("add element inet fjord ingress_"));
    assert!(batch.commands[0].ends_with("_peers4 { 10.244.0.99/32 }"));
    // The new pod is not local: no chain or map entry changes.
    local.truncate(2);
}

#[test]
fn a_pod_becoming_isolated_changes_its_map_entry_and_adds_its_chain() {
    let (mut view, local) = view_with_pods();
    let before = desired_table(Some(&view.desired(&local)), &NatConfig::disabled());
    view.upsert_policy(&policy(
        "deny",
        json!({"podSelector": {"matchLabels": {"pod": "b"}}}),
    ))
    .unwrap();
    let after = desired_table(Some(&view.desired(&local)), &NatConfig::disabled());
    let text = plan(Some(&as_listed(&before)), &after).text();
    let pos = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("{needle} in {text}"))
    };
    assert!(pos("delete element inet fjord pod_ingress { \"fj00000000001\" }") < pos("add chain"));
    assert!(pos("add chain inet fjord ingress_fj00000000001") < pos("add element inet fjord pod_ingress { \"fj00000000001\" : goto ingress_fj00000000001 }"));
    assert!(
        !text.contains("fj00000000000"),
        "the other pod is untouched: {text}"
    );
}

#[test]
fn a_hand_deleted_rule_rewrites_that_chain_only() {
    let (view, local) = view_with_pods();
    let desired = desired_table(Some(&view.desired(&local)), &nat());
    let mut listed = as_listed(&desired);
    listed.chains.get_mut("forward").unwrap().rules.remove(1);
    let batch = plan(Some(&listed), &desired);
    assert_eq!(batch.commands[0], "flush chain inet fjord forward");
    assert_eq!(batch.commands.len(), 4, "{:?}", batch.commands);
    assert!(batch.commands[1..]
        .iter()
        .all(|c| c.starts_with("add rule inet fjord forward ")));
}

#[test]
fn a_set_of_another_type_rebuilds_the_table_in_the_same_batch() {
    let desired = desired_table(None, &nat());
    let mut listed = as_listed(&desired);
    listed.sets.get_mut("nat_pools4").unwrap().kind = SetKind::Addr6;
    let batch = plan(Some(&listed), &desired);
    assert_eq!(batch.commands[0], "delete table inet fjord");
    assert_eq!(batch.commands[1], "add table inet fjord");
}

#[test]
fn fingerprints_change_with_the_rule_text() {
    let a = Rule::new("ip saddr { 10.0.0.1 } accept", "x/a: its own addresses");
    let b = Rule::new("ip saddr { 10.0.0.2 } accept", "x/a: its own addresses");
    assert_ne!(a.comment, b.comment);
    assert!(a.comment.starts_with("x/a: its own addresses #"));
}

#[test]
fn parses_nfts_listing() {
    // nft 1.0.6's `nft -j list table inet fjord` (trimmed to one of each kind).
    let listing = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
      {"table": {"family": "inet", "name": "fjord", "handle": 1}},
      {"map": {"family": "inet", "name": "pod_egress", "table": "fjord", "type": "ifname",
               "handle": 5, "map": "verdict",
               "elem": [["fjabc", {"goto": {"target": "egress_fjabc"}}], ["fjdef", {"return": null}]]}},
      {"set": {"family": "inet", "name": "pp", "table": "fjord",
               "type": ["ipv4_addr", "inet_proto", "inet_service"], "handle": 6, "flags": ["interval"],
               "elem": [{"concat": [{"prefix": {"addr": "10.0.0.0", "len": 24}}, "tcp", {"range": [80, 81]}]},
                        {"concat": ["10.0.1.1", "sctp", 80]}]}},
      {"set": {"family": "inet", "name": "a4", "table": "fjord", "type": "ipv4_addr",
               "handle": 7, "flags": ["interval"],
               "elem": [{"prefix": {"addr": "10.0.0.0", "len": 24}}, "10.9.9.9",
                        {"range": ["10.1.0.1", "10.1.0.5"]}]}},
      {"chain": {"family": "inet", "table": "fjord", "name": "forward", "handle": 2,
                 "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}},
      {"chain": {"family": "inet", "table": "fjord", "name": "egress_fjabc", "handle": 3}},
      {"rule": {"family": "inet", "table": "fjord", "chain": "egress_fjabc", "handle": 8,
                "comment": "r1 #00000000", "expr": [{"drop": null}]}},
      {"rule": {"family": "inet", "table": "fjord", "chain": "egress_fjabc", "handle": 9,
                "expr": [{"accept": null}]}}]}"#;
    let t = parse_listing(listing).unwrap();
    let map = &t.sets["pod_egress"];
    assert_eq!(map.kind, SetKind::InterfaceVerdict);
    assert!(map.elements.contains(&Element::Verdict(
        "fjabc".into(),
        Verdict::Goto("egress_fjabc".into())
    )));
    assert!(map
        .elements
        .contains(&Element::Verdict("fjdef".into(), Verdict::Return)));
    let pp = &t.sets["pp"];
    assert_eq!(pp.kind, SetKind::AddrPort4);
    assert!(pp.elements.contains(&Element::NetPort(
        "10.0.0.0/24".parse().unwrap(),
        Protocol::Tcp,
        PortRange { lo: 80, hi: 81 }
    )));
    assert!(pp.elements.contains(&Element::NetPort(
        "10.0.1.1/32".parse().unwrap(),
        Protocol::Sctp,
        PortRange::single(80)
    )));
    let a4 = &t.sets["a4"];
    assert!(a4
        .elements
        .contains(&Element::Net("10.9.9.9/32".parse().unwrap())));
    assert!(a4
        .elements
        .contains(&Element::Foreign("10.1.0.1-10.1.0.5".into())));
    assert_eq!(
        t.chains["forward"].hook,
        Some(Hook {
            kind: "filter",
            hook: "forward",
            priority: 0
        })
    );
    let rules: Vec<&str> = t.chains["egress_fjabc"]
        .rules
        .iter()
        .map(|r| r.comment.as_str())
        .collect();
    assert_eq!(
        rules,
        ["r1 #00000000", ""],
        "a rule without a comment is a foreign rule"
    );
}
