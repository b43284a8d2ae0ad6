//! The content of table `inet fjord` as data: rendered from the desired policy and NAT,
//! read back from the kernel (nft's JSON), and diffed into one nft batch that changes
//! only what differs. No I/O here; [`crate::nft`] runs the batches.
//!
//! Layout (docs/policy.md explains it for operators):
//!
//! ```text
//! forward  (filter, forward hook)   ct established,related accept
//!                                   iifname "fj*" jump from_pod   (egress of the sender)
//!                                   oifname "fj*" jump to_pod     (ingress of the receiver)
//! input    (filter, input hook)     ct established,related accept; NDP with the host end
//!                                   iifname "fj*" jump from_pod
//! from_pod                          iifname vmap @pod_egress;  drop (unknown pod interface)
//! to_pod                            oifname vmap @pod_ingress; drop (unknown pod interface)
//! egress_fjXXXXXXXXXXX / ingress_fj…   own addresses; @<class>_peers4/6, _peerports4/6,
//!                                   _ports; drop
//! postrouting (nat)                 ip saddr @nat_pools4 ip daddr != @nat_inside4 masquerade
//! ```
//!
//! Every rule carries a comment ending in `#` and 8 hex digits: a fingerprint of the
//! rule's text. Comparing fingerprints is how a hand-edited or deleted rule is found.

use crate::compile::Direction;
use crate::error::PolicyError;
use crate::nat::NatConfig;
use crate::ranges::{AddrSet, PortRange, Protocol};
use crate::translate::{AllowList, ClassId, DesiredPolicy, PodRules};
use ipnetwork::IpNetwork;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

/// The table's family and name.
pub const TABLE: &str = "inet fjord";
/// The host end of every pod veth starts so (`fj` + 11 hex, the plugin's naming).
pub const POD_INTERFACE_PREFIX: &str = "fj";
pub const INGRESS_MAP: &str = "pod_ingress";
pub const EGRESS_MAP: &str = "pod_egress";

/// What a set holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SetKind {
    Addr4,
    Addr6,
    AddrPort4,
    AddrPort6,
    Port,
    /// A verdict map from interface name.
    InterfaceVerdict,
}

impl SetKind {
    fn declaration(self) -> &'static str {
        match self {
            SetKind::Addr4 => "type ipv4_addr; flags interval;",
            SetKind::Addr6 => "type ipv6_addr; flags interval;",
            SetKind::AddrPort4 => "type ipv4_addr . inet_proto . inet_service; flags interval;",
            SetKind::AddrPort6 => "type ipv6_addr . inet_proto . inet_service; flags interval;",
            SetKind::Port => "type inet_proto . inet_service; flags interval;",
            SetKind::InterfaceVerdict => "type ifname : verdict;",
        }
    }

    fn is_map(self) -> bool {
        self == SetKind::InterfaceVerdict
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    Accept,
    Drop,
    Return,
    Goto(String),
}

impl Verdict {
    fn render(&self) -> String {
        match self {
            Verdict::Accept => "accept".into(),
            Verdict::Drop => "drop".into(),
            Verdict::Return => "return".into(),
            Verdict::Goto(chain) => format!("goto {chain}"),
        }
    }
}

/// One element of a set or map.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Element {
    Net(IpNetwork),
    NetPort(IpNetwork, Protocol, PortRange),
    Port(Protocol, PortRange),
    Verdict(String, Verdict),
    /// Something in the kernel this code would not have written (an address range
    /// added by hand): kept in nft's syntax so that it can be deleted.
    Foreign(String),
}

fn render_ports(r: &PortRange) -> String {
    r.to_string()
}

impl Element {
    /// The element in nft's syntax, as in `add element`.
    pub fn render(&self) -> String {
        match self {
            Element::Net(n) => n.to_string(),
            Element::NetPort(n, p, r) => format!("{n} . {} . {}", p.nft_name(), render_ports(r)),
            Element::Port(p, r) => format!("{} . {}", p.nft_name(), render_ports(r)),
            Element::Verdict(name, v) => format!("\"{name}\" : {}", v.render()),
            Element::Foreign(text) => text.clone(),
        }
    }

    /// What `delete element` names: a map's key alone.
    fn render_key(&self) -> String {
        match self {
            Element::Verdict(name, _) => format!("\"{name}\""),
            other => other.render(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    pub kind: SetKind,
    pub elements: BTreeSet<Element>,
}

/// A base chain's hook, as nft lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    pub kind: &'static str,
    pub hook: &'static str,
    pub priority: i64,
}

impl Hook {
    fn render(&self) -> String {
        let priority = match (self.kind, self.priority) {
            ("filter", 0) => "filter".to_string(),
            ("nat", 100) => "srcnat".to_string(),
            (_, p) => p.to_string(),
        };
        format!(
            "type {} hook {} priority {priority}; policy accept;",
            self.kind, self.hook
        )
    }
}

/// A rule: its text, the purpose shown in its comment, and the fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub text: String,
    pub comment: String,
}

impl Rule {
    pub fn new(text: impl Into<String>, purpose: &str) -> Rule {
        let text = text.into();
        let hash = Sha256::digest(text.as_bytes());
        let fingerprint: String = hash.iter().take(4).map(|b| format!("{b:02x}")).collect();
        Rule {
            comment: format!("{purpose} #{fingerprint}"),
            text,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub hook: Option<Hook>,
    pub rules: Vec<Rule>,
}

/// The content of the table, desired or as read from the kernel. For a table read
/// back, a rule is known by its comment alone (`Rule::text` is empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    pub sets: BTreeMap<String, Set>,
    pub chains: BTreeMap<String, Chain>,
}

impl Table {
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty() && self.chains.is_empty()
    }

    /// Rules and set elements: what `fjord_policy_rules` counts.
    pub fn rule_count(&self) -> usize {
        self.chains.values().map(|c| c.rules.len()).sum()
    }

    pub fn element_count(&self) -> usize {
        self.sets.values().map(|s| s.elements.len()).sum()
    }
}

// ---------------------------------------------------------------------------
// Rendering the desired table.

/// The desired table: the policy part when policy is on (`Some`, even with no policy
/// at all: pod interfaces are then dispatched to "not isolated"), the NAT part when NAT
/// is active. Both off: the empty table, which the diff turns into deleting it.
pub fn desired_table(policy: Option<&DesiredPolicy>, nat: &NatConfig) -> Table {
    let mut table = Table::default();
    if let Some(policy) = policy {
        add_policy(&mut table, policy);
    }
    if nat.active() {
        add_nat(&mut table, nat);
    }
    table
}

fn chain(hook: Option<Hook>, rules: Vec<Rule>) -> Chain {
    Chain { hook, rules }
}

fn add_policy(table: &mut Table, policy: &DesiredPolicy) {
    let pod_if = format!("\"{POD_INTERFACE_PREFIX}*\"");
    let established = Rule::new(
        "ct state established,related accept",
        "replies of allowed connections",
    );
    table.chains.insert(
        "forward".into(),
        chain(
            Some(Hook {
                kind: "filter",
                hook: "forward",
                priority: 0,
            }),
            vec![
                established.clone(),
                Rule::new(
                    format!("iifname {pod_if} jump from_pod"),
                    "egress of the sending pod",
                ),
                Rule::new(
                    format!("oifname {pod_if} jump to_pod"),
                    "ingress of the receiving pod",
                ),
            ],
        ),
    );
    table.chains.insert(
        "input".into(),
        chain(
            Some(Hook {
                kind: "filter",
                hook: "input",
                priority: 0,
            }),
            vec![
                established,
                Rule::new(
                    format!(
                        "iifname {pod_if} icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert, \
                         nd-router-solicit }} accept"
                    ),
                    "neighbour discovery with the host end",
                ),
                Rule::new(
                    format!("iifname {pod_if} jump from_pod"),
                    "egress of the pod to this node",
                ),
            ],
        ),
    );
    let unknown = "drop a pod interface with no rules yet";
    table.chains.insert(
        "from_pod".into(),
        chain(
            None,
            vec![
                Rule::new(
                    format!("iifname vmap @{EGRESS_MAP}"),
                    "dispatch by pod interface",
                ),
                Rule::new("drop", unknown),
            ],
        ),
    );
    table.chains.insert(
        "to_pod".into(),
        chain(
            None,
            vec![
                Rule::new(
                    format!("oifname vmap @{INGRESS_MAP}"),
                    "dispatch by pod interface",
                ),
                Rule::new("drop", unknown),
            ],
        ),
    );
    let mut ingress_map = BTreeSet::new();
    let mut egress_map = BTreeSet::new();
    for (interface, pod) in &policy.pods {
        for direction in Direction::BOTH {
            let (class, map, open) = match direction {
                Direction::Ingress => (&pod.ingress, &mut ingress_map, Verdict::Accept),
                Direction::Egress => (&pod.egress, &mut egress_map, Verdict::Return),
            };
            let verdict = match class {
                None => open,
                Some(class) => {
                    let name = pod_chain(direction, interface);
                    let rules = pod_rules(direction, pod, class, &policy.classes[class]);
                    table.chains.insert(name.clone(), chain(None, rules));
                    Verdict::Goto(name)
                }
            };
            map.insert(Element::Verdict(interface.clone(), verdict));
        }
    }
    for (name, elements) in [(INGRESS_MAP, ingress_map), (EGRESS_MAP, egress_map)] {
        table.sets.insert(
            name.into(),
            Set {
                kind: SetKind::InterfaceVerdict,
                elements,
            },
        );
    }
    for (class, list) in &policy.classes {
        if list.any {
            continue;
        }
        add_class_sets(table, class, list);
    }
}

/// `ingress_fj0123456789a`: the chain of one pod and direction.
pub fn pod_chain(direction: Direction, interface: &str) -> String {
    match direction {
        Direction::Ingress => format!("ingress_{interface}"),
        Direction::Egress => format!("egress_{interface}"),
    }
}

/// `ingress_3fa2c19b0e`: the prefix of a class's sets.
pub fn class_prefix(class: &ClassId) -> String {
    match class.direction {
        Direction::Ingress => format!("ingress_{}", class.tag),
        Direction::Egress => format!("egress_{}", class.tag),
    }
}

fn pod_rules(direction: Direction, pod: &PodRules, class: &ClassId, list: &AllowList) -> Vec<Rule> {
    let (peer, verdict) = match direction {
        Direction::Ingress => ("saddr", "accept"),
        Direction::Egress => ("daddr", "return"),
    };
    let mut rules = Vec::new();
    let v4: Vec<String> = pod
        .own
        .iter()
        .filter(|a| a.is_ipv4())
        .map(IpAddr::to_string)
        .collect();
    let v6: Vec<String> = pod
        .own
        .iter()
        .filter(|a| a.is_ipv6())
        .map(IpAddr::to_string)
        .collect();
    for (family, addrs) in [("ip", v4), ("ip6", v6)] {
        if !addrs.is_empty() {
            rules.push(Rule::new(
                format!("{family} {peer} {{ {} }} {verdict}", addrs.join(", ")),
                &format!("{}: its own addresses", pod.key),
            ));
        }
    }
    if list.any {
        rules.push(Rule::new(verdict, "a policy allows everything"));
        return rules;
    }
    // Only the kinds of element the class has: an empty set would cost a rule per
    // packet and a set in the kernel for nothing (nft resolves set names per rule, so
    // thousands of idle sets slow every listing: 0003-nftables-interface.md).
    let prefix = class_prefix(class);
    for (suffix, kind, _) in class_sets(list) {
        let (text, purpose) = match kind {
            SetKind::Addr4 => (
                format!("ip {peer} @{prefix}_{suffix} {verdict}"),
                "allowed peers, every port",
            ),
            SetKind::Addr6 => (
                format!("ip6 {peer} @{prefix}_{suffix} {verdict}"),
                "allowed peers, every port",
            ),
            SetKind::AddrPort4 => (
                format!("ip {peer} . meta l4proto . th dport @{prefix}_{suffix} {verdict}"),
                "allowed peers on ports",
            ),
            SetKind::AddrPort6 => (
                format!("ip6 {peer} . meta l4proto . th dport @{prefix}_{suffix} {verdict}"),
                "allowed peers on ports",
            ),
            SetKind::Port | SetKind::InterfaceVerdict => (
                format!("meta l4proto . th dport @{prefix}_{suffix} {verdict}"),
                "allowed ports, any peer",
            ),
        };
        rules.push(Rule::new(text, purpose));
    }
    rules.push(Rule::new(
        "drop",
        &format!("{}: not allowed by its policies", pod.key),
    ));
    rules
}

fn nets(addrs: &AddrSet) -> (Vec<IpNetwork>, Vec<IpNetwork>) {
    (addrs.prefixes_v4(), addrs.prefixes_v6())
}

/// The non-empty sets of a class: (name suffix, kind, elements).
fn class_sets(list: &AllowList) -> Vec<(&'static str, SetKind, BTreeSet<Element>)> {
    let (p4, p6) = nets(&list.peers);
    let mut pp4 = BTreeSet::new();
    let mut pp6 = BTreeSet::new();
    for (protocol, ports, addrs) in list.peer_ports.cells() {
        let (a4, a6) = nets(&addrs);
        pp4.extend(a4.into_iter().map(|n| Element::NetPort(n, protocol, ports)));
        pp6.extend(a6.into_iter().map(|n| Element::NetPort(n, protocol, ports)));
    }
    let ports: BTreeSet<Element> = list
        .ports
        .ranges()
        .into_iter()
        .map(|(p, r)| Element::Port(p, r))
        .collect();
    let sets = [
        (
            "peers4",
            SetKind::Addr4,
            p4.into_iter().map(Element::Net).collect(),
        ),
        (
            "peers6",
            SetKind::Addr6,
            p6.into_iter().map(Element::Net).collect(),
        ),
        ("peerports4", SetKind::AddrPort4, pp4),
        ("peerports6", SetKind::AddrPort6, pp6),
        ("ports", SetKind::Port, ports),
    ];
    sets.into_iter()
        .filter(|(_, _, e): &(&str, SetKind, BTreeSet<Element>)| !e.is_empty())
        .collect()
}

fn add_class_sets(table: &mut Table, class: &ClassId, list: &AllowList) {
    let prefix = class_prefix(class);
    for (suffix, kind, elements) in class_sets(list) {
        table
            .sets
            .insert(format!("{prefix}_{suffix}"), Set { kind, elements });
    }
}

fn add_nat(table: &mut Table, nat: &NatConfig) {
    let (src4, src6) = nets(&nat.sources());
    let (in4, in6) = nets(&nat.inside());
    let sets = [
        ("nat_pools4", SetKind::Addr4, src4),
        ("nat_pools6", SetKind::Addr6, src6),
        ("nat_inside4", SetKind::Addr4, in4),
        ("nat_inside6", SetKind::Addr6, in6),
    ];
    for (name, kind, elements) in sets {
        table.sets.insert(
            name.into(),
            Set {
                kind,
                elements: elements.into_iter().map(Element::Net).collect(),
            },
        );
    }
    let purpose = "egress NAT: pod to outside the cluster";
    table.chains.insert(
        "postrouting".into(),
        chain(
            Some(Hook {
                kind: "nat",
                hook: "postrouting",
                priority: 100,
            }),
            vec![
                Rule::new(
                    "ip saddr @nat_pools4 ip daddr != @nat_inside4 masquerade",
                    purpose,
                ),
                Rule::new(
                    "ip6 saddr @nat_pools6 ip6 daddr != @nat_inside6 masquerade",
                    purpose,
                ),
            ],
        ),
    );
}

// ---------------------------------------------------------------------------
// The diff: one batch from what the kernel holds to what is desired.

/// A batch of nft commands, applied atomically by one `nft -f`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub commands: Vec<String>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    pub fn text(&self) -> String {
        let mut out = String::new();
        for c in &self.commands {
            out.push_str(c);
            out.push('\n');
        }
        out
    }

    fn push(&mut self, command: String) {
        self.commands.push(command);
    }

    fn elements(&mut self, verb: &str, set: &str, elements: Vec<String>) {
        // nft takes any number per command; chunks keep each line readable in logs and
        // each netlink message well below the socket buffer.
        for chunk in elements.chunks(2000) {
            self.push(format!(
                "{verb} element {TABLE} {set} {{ {} }}",
                chunk.join(", ")
            ));
        }
    }
}

/// The batch that turns `actual` (`None`: no table) into `desired`.
pub fn plan(actual: Option<&Table>, desired: &Table) -> Batch {
    let mut batch = Batch::default();
    match actual {
        None if desired.is_empty() => {}
        None => create(&mut batch, desired),
        Some(_) if desired.is_empty() => batch.push(format!("delete table {TABLE}")),
        Some(actual) if !compatible(actual, desired) => {
            // A set of another type or a base chain on another hook (an older Fjord, a
            // hand edit): rebuilt in the same atomic batch, so no packet sees it empty.
            batch.push(format!("delete table {TABLE}"));
            create(&mut batch, desired);
        }
        Some(actual) => update(&mut batch, actual, desired),
    }
    batch
}

fn compatible(actual: &Table, desired: &Table) -> bool {
    let sets = desired
        .sets
        .iter()
        .all(|(name, set)| actual.sets.get(name).is_none_or(|a| a.kind == set.kind));
    let chains = desired
        .chains
        .iter()
        .all(|(name, c)| actual.chains.get(name).is_none_or(|a| a.hook == c.hook));
    // A stray chain of the kernel's that hooks where desired has none is dropped
    // chain by chain below; a stray set of a kind we never make likewise.
    sets && chains
}

fn create(batch: &mut Batch, desired: &Table) {
    batch.push(format!("add table {TABLE}"));
    add_sets(batch, desired, |_| true);
    for (name, c) in &desired.chains {
        add_chain(batch, name, c);
    }
    for (name, c) in &desired.chains {
        add_rules(batch, name, c);
    }
    for (name, set) in &desired.sets {
        if set.kind.is_map() {
            batch.elements(
                "add",
                name,
                set.elements.iter().map(Element::render).collect(),
            );
        }
    }
}

/// Declares the sets `which` picks, with their elements (maps: empty; their elements
/// name chains, which come later).
fn add_sets(batch: &mut Batch, desired: &Table, which: impl Fn(&str) -> bool) {
    for (name, set) in &desired.sets {
        if !which(name) {
            continue;
        }
        let flavour = if set.kind.is_map() { "map" } else { "set" };
        batch.push(format!(
            "add {flavour} {TABLE} {name} {{ {} }}",
            set.kind.declaration()
        ));
        if !set.kind.is_map() && !set.elements.is_empty() {
            batch.elements(
                "add",
                name,
                set.elements.iter().map(Element::render).collect(),
            );
        }
    }
}

fn add_chain(batch: &mut Batch, name: &str, c: &Chain) {
    match &c.hook {
        Some(hook) => batch.push(format!("add chain {TABLE} {name} {{ {} }}", hook.render())),
        None => batch.push(format!("add chain {TABLE} {name}")),
    }
}

fn add_rules(batch: &mut Batch, name: &str, c: &Chain) {
    for rule in &c.rules {
        batch.push(format!(
            "add rule {TABLE} {name} {} comment \"{}\"",
            rule.text, rule.comment
        ));
    }
}

fn same_rules(actual: &Chain, desired: &Chain) -> bool {
    actual.rules.len() == desired.rules.len()
        && actual
            .rules
            .iter()
            .zip(&desired.rules)
            .all(|(a, d)| a.comment == d.comment)
}

fn update(batch: &mut Batch, actual: &Table, desired: &Table) {
    // 1. Map entries that go or change (their chains may be deleted below).
    for (name, set) in &desired.sets {
        if let (true, Some(have)) = (set.kind.is_map(), actual.sets.get(name)) {
            let gone: Vec<String> = have
                .elements
                .difference(&set.elements)
                .map(Element::render_key)
                .collect();
            batch.elements("delete", name, gone);
        }
    }
    // 2. Chains that change are flushed; chains that go are flushed, then deleted.
    let rewrite: Vec<&String> = desired
        .chains
        .iter()
        .filter(|(n, c)| actual.chains.get(*n).is_some_and(|a| !same_rules(a, c)))
        .map(|(n, _)| n)
        .collect();
    let removed: Vec<&String> = actual
        .chains
        .keys()
        .filter(|n| !desired.chains.contains_key(*n))
        .collect();
    for name in rewrite.iter().chain(&removed) {
        batch.push(format!("flush chain {TABLE} {name}"));
    }
    for name in &removed {
        batch.push(format!("delete chain {TABLE} {name}"));
    }
    // 3. Sets: elements out, then sets that go (nothing refers to them any more).
    for (name, set) in &desired.sets {
        if let (false, Some(have)) = (set.kind.is_map(), actual.sets.get(name)) {
            let gone: Vec<String> = have
                .elements
                .difference(&set.elements)
                .map(Element::render_key)
                .collect();
            batch.elements("delete", name, gone);
        }
    }
    for (name, set) in &actual.sets {
        if !desired.sets.contains_key(name) {
            let flavour = if set.kind.is_map() { "map" } else { "set" };
            batch.push(format!("delete {flavour} {TABLE} {name}"));
        }
    }
    // 4. New sets with their elements; new elements of the others.
    add_sets(batch, desired, |name| !actual.sets.contains_key(name));
    for (name, set) in &desired.sets {
        if let (false, Some(have)) = (set.kind.is_map(), actual.sets.get(name)) {
            let new: Vec<String> = set
                .elements
                .difference(&have.elements)
                .map(Element::render)
                .collect();
            batch.elements("add", name, new);
        }
    }
    // 5. New chains, then the rules of new and rewritten chains.
    for (name, c) in &desired.chains {
        if !actual.chains.contains_key(name) {
            add_chain(batch, name, c);
        }
    }
    for (name, c) in &desired.chains {
        if !actual.chains.contains_key(name) || rewrite.contains(&name) {
            add_rules(batch, name, c);
        }
    }
    // 6. Map entries that are new or changed, now that their chains exist.
    for (name, set) in &desired.sets {
        if set.kind.is_map() {
            let have = actual.sets.get(name).map(|s| &s.elements);
            let new: Vec<String> = set
                .elements
                .iter()
                .filter(|e| have.is_none_or(|h| !h.contains(*e)))
                .map(Element::render)
                .collect();
            batch.elements("add", name, new);
        }
    }
}

// ---------------------------------------------------------------------------
// Reading the kernel's table back from `nft -j list table inet fjord`.

/// The table in nft's JSON listing.
pub fn parse_listing(json: &str) -> Result<Table, PolicyError> {
    let bad = |what: &str| PolicyError::NftJson(what.to_string());
    let root: Value = serde_json::from_str(json).map_err(|e| bad(&e.to_string()))?;
    let objects = root["nftables"]
        .as_array()
        .ok_or_else(|| bad("no \"nftables\" array"))?;
    let mut table = Table::default();
    for object in objects {
        if let Some(c) = object.get("chain") {
            let name = c["name"]
                .as_str()
                .ok_or_else(|| bad("a chain without a name"))?;
            table.chains.insert(
                name.to_string(),
                Chain {
                    hook: parse_hook(c),
                    rules: vec![],
                },
            );
        } else if let Some(r) = object.get("rule") {
            let name = r["chain"]
                .as_str()
                .ok_or_else(|| bad("a rule without a chain"))?;
            let comment = r["comment"].as_str().unwrap_or_default().to_string();
            if let Some(c) = table.chains.get_mut(name) {
                c.rules.push(Rule {
                    text: String::new(),
                    comment,
                });
            }
        } else if let Some(s) = object.get("set").or_else(|| object.get("map")) {
            let name = s["name"]
                .as_str()
                .ok_or_else(|| bad("a set without a name"))?;
            let kind = parse_kind(s);
            let elements = s["elem"]
                .as_array()
                .map(|elems| elems.iter().map(|e| parse_element(kind, e)).collect())
                .unwrap_or_default();
            // A set of a shape Fjord never makes is listed as Port-kind with foreign
            // elements; `compatible` then rebuilds the table.
            table.sets.insert(
                name.to_string(),
                Set {
                    kind: kind.unwrap_or(SetKind::Port),
                    elements,
                },
            );
        }
    }
    Ok(table)
}

fn parse_hook(c: &Value) -> Option<Hook> {
    let kind = match c["type"].as_str()? {
        "filter" => "filter",
        "nat" => "nat",
        _ => "other",
    };
    let hook = match c["hook"].as_str()? {
        "forward" => "forward",
        "input" => "input",
        "postrouting" => "postrouting",
        _ => "other",
    };
    Some(Hook {
        kind,
        hook,
        priority: c["prio"].as_i64().unwrap_or(i64::MIN),
    })
}

fn parse_kind(s: &Value) -> Option<SetKind> {
    let types: Vec<&str> = match &s["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => return None,
    };
    let is_map = s.get("map").is_some();
    let interval = s["flags"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x == "interval"));
    match (types.as_slice(), is_map, interval) {
        (["ifname"], true, _) if s["map"] == "verdict" => Some(SetKind::InterfaceVerdict),
        (["ipv4_addr"], false, true) => Some(SetKind::Addr4),
        (["ipv6_addr"], false, true) => Some(SetKind::Addr6),
        (["ipv4_addr", "inet_proto", "inet_service"], false, true) => Some(SetKind::AddrPort4),
        (["ipv6_addr", "inet_proto", "inet_service"], false, true) => Some(SetKind::AddrPort6),
        (["inet_proto", "inet_service"], false, true) => Some(SetKind::Port),
        _ => None,
    }
}

fn parse_element(kind: Option<SetKind>, e: &Value) -> Element {
    // Elements with a timeout or comment come wrapped as {"elem": {"val": ...}}.
    let e = e.get("elem").and_then(|x| x.get("val")).unwrap_or(e);
    let parsed = match kind {
        Some(SetKind::Addr4 | SetKind::Addr6) => parse_net(e).map(Element::Net),
        Some(SetKind::AddrPort4 | SetKind::AddrPort6) => match e["concat"].as_array() {
            Some(parts) if parts.len() == 3 => (|| {
                Some(Element::NetPort(
                    parse_net(&parts[0])?,
                    Protocol::from_nft(parts[1].as_str()?)?,
                    parse_ports(&parts[2])?,
                ))
            })(),
            _ => None,
        },
        Some(SetKind::Port) => match e["concat"].as_array() {
            Some(parts) if parts.len() == 2 => (|| {
                Some(Element::Port(
                    Protocol::from_nft(parts[0].as_str()?)?,
                    parse_ports(&parts[1])?,
                ))
            })(),
            _ => None,
        },
        Some(SetKind::InterfaceVerdict) => parse_map_entry(e),
        None => None,
    };
    parsed.unwrap_or_else(|| Element::Foreign(render_foreign(e)))
}

fn parse_net(v: &Value) -> Option<IpNetwork> {
    match v {
        Value::String(s) => {
            let addr: IpAddr = s.parse().ok()?;
            IpNetwork::new(addr, if addr.is_ipv4() { 32 } else { 128 }).ok()
        }
        _ => {
            let p = v.get("prefix")?;
            let addr: IpAddr = p["addr"].as_str()?.parse().ok()?;
            IpNetwork::new(addr, p["len"].as_u64()? as u8).ok()
        }
    }
}

fn parse_ports(v: &Value) -> Option<PortRange> {
    match v {
        Value::Number(n) => Some(PortRange::single(u16::try_from(n.as_u64()?).ok()?)),
        _ => {
            let r = v.get("range")?.as_array()?;
            Some(PortRange {
                lo: u16::try_from(r.first()?.as_u64()?).ok()?,
                hi: u16::try_from(r.get(1)?.as_u64()?).ok()?,
            })
        }
    }
}

fn parse_map_entry(e: &Value) -> Option<Element> {
    let pair = e.as_array()?;
    let key = pair.first()?.as_str()?.to_string();
    let v = pair.get(1)?;
    let verdict = if v.get("accept").is_some() {
        Verdict::Accept
    } else if v.get("drop").is_some() {
        Verdict::Drop
    } else if v.get("return").is_some() {
        Verdict::Return
    } else {
        Verdict::Goto(v.get("goto")?.get("target")?.as_str()?.to_string())
    };
    Some(Element::Verdict(key, verdict))
}

/// An element Fjord did not write, in nft's syntax so that `delete element` takes it:
/// an address range `a-b`, or the listing's text as a last resort.
fn render_foreign(e: &Value) -> String {
    if let Some([lo, hi]) = e.get("range").and_then(Value::as_array).map(Vec::as_slice) {
        let mut s = String::new();
        let _ = write!(
            s,
            "{}-{}",
            lo.as_str().unwrap_or("?"),
            hi.as_str().unwrap_or("?")
        );
        return s;
    }
    if let Some(key) = e.as_array().and_then(|p| p.first()).and_then(Value::as_str) {
        return format!("\"{key}\"");
    }
    e.to_string()
}

#[cfg(test)]
mod tests;
