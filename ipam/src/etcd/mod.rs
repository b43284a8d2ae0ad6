//! The `etcd:URL[,URL...]` store: blocks, claims and the node registry in an etcd v3
//! cluster (key layout in [`keys`]).
//!
//! A transaction is optimistic: one read-only etcd transaction fetches every claim and
//! this node's block records at one revision; the allocator decides; one commit
//! transaction writes the changed blocks only if none of them (and, when a block is
//! claimed, no claim at all) changed since that revision. A lost race is retried from
//! the read with a jittered backoff. So in steady state an ADD costs two round trips,
//! one of them a write: the read and the commit.
//!
//! Every request is bounded ([`CONNECT_TIMEOUT`], [`REQUEST_TIMEOUT`]) and a failing
//! cluster is retried for at most [`UNAVAILABLE_BUDGET`]: an ADD against an unreachable
//! cluster or one without quorum fails fast with [`IpamError::StoreUnavailable`] (CNI
//! code 11), naming the endpoints.
//!
//! `https://` clusters are reached over TLS (rustls, through tonic): the CA file is the
//! only trust anchor (no system roots: an etcd cluster has a CA of its own), and the
//! client certificate and key, when given, answer etcd's `--client-cert-auth`. A TLS
//! failure (a server certificate of another CA, a refused client certificate) is the
//! same code 11, with the TLS error's own words in the message.

mod keys;
mod runtime;
mod tls;

pub use keys::{block_key, claim_key, node_key, BLOCKS, CLAIMS, NODES, STATUS};

use crate::allocator::{Claim, Snapshot};
use crate::block::Block;
use crate::config::EtcdSpec;
use crate::error::IpamError;
use crate::registry::{NodeRecord, NodeView, Registry};
use crate::store::{Decide, Store};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, KeyValue, Txn, TxnOp, TxnOpResponse,
    TxnResponse,
};
use ipnetwork::IpNetwork;
use runtime::Background;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Per endpoint: a member that does not accept a TCP connection in this long is down.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// One request, connection included; a healthy cluster answers in milliseconds.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one operation keeps retrying a failing cluster (a member just killed, a
/// leader election) before giving up with code 11.
pub const UNAVAILABLE_BUDGET: Duration = Duration::from_secs(3);
/// How long a transaction keeps retrying after losing compare-and-swap races. Matches
/// the `dir:` store's lock wait.
pub const CONFLICT_BUDGET: Duration = Duration::from_secs(10);
const RETRY_PAUSE: Duration = Duration::from_millis(100);

pub struct EtcdStore {
    endpoints: String,
    /// Appended to every "cannot be used" reason: what the configuration itself may be
    /// missing (empty when nothing is).
    hint: &'static str,
    client: Client,
    // Declared last: dropped after the client, stopping the runtime the client used.
    background: Background,
}

/// What the read of a transaction saw: the snapshot and each own block's revision.
struct Read {
    revision: i64,
    snapshot: Snapshot,
    mod_revisions: HashMap<IpNetwork, i64>,
}

impl EtcdStore {
    /// Builds the client; connections are made by the first request, so an unreachable
    /// cluster is reported by the operation that needs it, not here. The TLS files are
    /// read here: one that cannot be read or is not PEM is a configuration error.
    pub fn open(spec: &EtcdSpec) -> Result<EtcdStore, IpamError> {
        let joined = spec.endpoints.join(",");
        let hint = tls::hint(spec.tls.as_ref());
        let unavailable = |reason: String| IpamError::StoreUnavailable {
            endpoints: joined.clone(),
            reason: format!("{reason}{hint}"),
        };
        let mut options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            .with_require_leader(true);
        if let Some(files) = &spec.tls {
            options = options.with_tls(tls::client_config(files)?);
        }
        let background = Background::start()
            .map_err(|e| unavailable(format!("cannot start the etcd client thread: {e}")))?;
        let urls = spec.endpoints.clone();
        let client = background
            .run(async move {
                tokio::time::timeout(REQUEST_TIMEOUT, Client::connect(urls, Some(options))).await
            })
            .map_err(|_| unavailable(format!("no connection within {REQUEST_TIMEOUT:?}")))?
            .map_err(|e| unavailable(tls::error_chain(&e)))?;
        Ok(EtcdStore {
            endpoints: joined,
            hint,
            client,
            background,
        })
    }

    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }

    fn unavailable(&self, reason: String) -> IpamError {
        IpamError::StoreUnavailable {
            endpoints: self.endpoints.clone(),
            reason: format!("{reason}{}", self.hint),
        }
    }

    /// One request, bounded by `limit`; the error says what went wrong.
    fn request(&self, txn: Txn, limit: Duration) -> Result<TxnResponse, String> {
        self.background.run(send(self.client.clone(), txn, limit))
    }

    /// An idempotent request (a read, a blind put), retried while the cluster fails,
    /// for at most [`UNAVAILABLE_BUDGET`] in all.
    /// The error names the first failure (a TLS or connection error says more than the
    /// timeouts of the tries after it) and the last one when it differs.
    fn request_retrying(&self, make: impl Fn() -> Txn) -> Result<TxnResponse, IpamError> {
        let started = Instant::now();
        let mut first: Option<String> = None;
        loop {
            let left = UNAVAILABLE_BUDGET.saturating_sub(started.elapsed());
            let reason = match self.request(make(), left.min(REQUEST_TIMEOUT)) {
                Ok(response) => return Ok(response),
                Err(reason) => reason,
            };
            let first = first.get_or_insert_with(|| reason.clone());
            if started.elapsed() + RETRY_PAUSE >= UNAVAILABLE_BUDGET {
                let then = if reason == *first {
                    String::new()
                } else {
                    format!("; last: {reason}")
                };
                return Err(self.unavailable(format!(
                    "{first}{then} (retried for {:?})",
                    started.elapsed()
                )));
            }
            std::thread::sleep(RETRY_PAUSE);
        }
    }

    fn read(&self, node: &str) -> Result<Read, IpamError> {
        let prefix = keys::node_blocks_prefix(node);
        let response = self.request_retrying(|| {
            Txn::new().and_then(vec![
                TxnOp::get(CLAIMS, Some(GetOptions::new().with_prefix())),
                TxnOp::get(prefix.as_str(), Some(GetOptions::new().with_prefix())),
            ])
        })?;
        let revision = response.header().map_or(0, |h| h.revision());
        let mut ranges = ranges(&response).into_iter();
        let claims = parse_claims(&ranges.next().unwrap_or_default())?;
        let mut own = Vec::new();
        let mut mod_revisions = HashMap::new();
        for kv in ranges.next().unwrap_or_default() {
            let block = parse_block(node, &kv)?;
            mod_revisions.insert(block.cidr, kv.mod_revision());
            own.push(block);
        }
        Ok(Read {
            revision,
            snapshot: Snapshot { claims, own },
            mod_revisions,
        })
    }

    /// Whether an answerless commit landed: every key holds what it would have written.
    fn landed(&self, written: &[(String, Vec<u8>)]) -> Result<bool, IpamError> {
        let response = self.request_retrying(|| {
            Txn::new().and_then(
                written
                    .iter()
                    .map(|(key, _)| TxnOp::get(key.as_str(), None))
                    .collect::<Vec<_>>(),
            )
        })?;
        let ranges = ranges(&response);
        Ok(ranges.len() == written.len()
            && ranges.iter().zip(written).all(|(kvs, (_, value))| {
                kvs.first().is_some_and(|kv| kv.value() == value.as_slice())
            }))
    }

    /// Every node and claim in one read-only transaction.
    pub fn listing(&self) -> Result<NodeView, IpamError> {
        let response = self.request_retrying(listing_txn)?;
        parse_listing(&response)
    }
}

impl Store for EtcdStore {
    fn snapshot(&self, node: &str) -> Result<Snapshot, IpamError> {
        Ok(self.read(node)?.snapshot)
    }

    fn transact(&self, node: &str, decide: &mut Decide<'_>) -> Result<(), IpamError> {
        let started = Instant::now();
        let mut attempts = 0;
        loop {
            let read = self.read(node)?;
            let changed = decide(&read.snapshot)?;
            if changed.is_empty() {
                return Ok(());
            }
            let (txn, written) = commit_txn(&read, node, &changed);
            attempts += 1;
            match self.request(txn, REQUEST_TIMEOUT) {
                Ok(response) if response.succeeded() => return Ok(()),
                Ok(_) => {} // another writer was first: decide again on fresh data
                Err(_) if self.landed(&written)? => return Ok(()),
                Err(_) => {}
            }
            if started.elapsed() >= CONFLICT_BUDGET {
                return Err(IpamError::StoreContended {
                    endpoints: self.endpoints.clone(),
                    attempts,
                    waited: started.elapsed(),
                });
            }
            std::thread::sleep(backoff(attempts));
        }
    }

    /// A write needs a quorum, so a successful one proves the store usable.
    fn check(&self) -> Result<(), IpamError> {
        self.request_retrying(|| Txn::new().and_then(vec![TxnOp::put(STATUS, "ok", None)]))
            .map(drop)
    }
}

/// The blocking registry calls. `fjord-routed` polls [`Registry::view`] from a blocking
/// thread, never from its event loop, so a hung etcd delays only the next poll.
impl Registry for EtcdStore {
    fn register(&self, node: &NodeRecord) -> Result<(), IpamError> {
        let key = keys::node_key(&node.name);
        let value = node.to_json();
        self.request_retrying(|| {
            Txn::new().and_then(vec![TxnOp::put(key.as_str(), value.clone(), None)])
        })
        .map(drop)
    }

    fn deregister(&self, name: &str) -> Result<(), IpamError> {
        let key = keys::node_key(name);
        self.request_retrying(|| Txn::new().and_then(vec![TxnOp::delete(key.as_str(), None)]))
            .map(drop)
    }

    fn nodes(&self) -> Result<Vec<NodeRecord>, IpamError> {
        Ok(self.listing()?.nodes)
    }

    fn claims(&self) -> Result<Vec<Claim>, IpamError> {
        Ok(self.listing()?.claims)
    }

    /// One request bounded by [`REQUEST_TIMEOUT`], not retried: an etcd that went away
    /// is reported by the next poll, not after [`UNAVAILABLE_BUDGET`].
    fn view(&self) -> Result<NodeView, IpamError> {
        let response = self
            .request(listing_txn(), REQUEST_TIMEOUT)
            .map_err(|reason| self.unavailable(reason))?;
        parse_listing(&response)
    }
}

async fn send(mut client: Client, txn: Txn, limit: Duration) -> Result<TxnResponse, String> {
    match tokio::time::timeout(limit, client.txn(txn)).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(e)) => Err(tls::error_chain(&e)),
        Err(_) => Err(format!("no answer within {limit:?}")),
    }
}

/// Writes `changed` if nothing it was decided on has changed since `read`: each existing
/// block is unmodified, each new block and its claim do not exist, and (when claiming)
/// no claim at all was made since. Returns the transaction and what it writes.
fn commit_txn(read: &Read, node: &str, changed: &[Block]) -> (Txn, Vec<(String, Vec<u8>)>) {
    let mut compares = Vec::new();
    let mut written = Vec::new();
    let mut claims = false;
    for block in changed {
        let key = keys::block_key(node, &block.cidr);
        match read.mod_revisions.get(&block.cidr) {
            Some(&revision) => compares.push(Compare::mod_revision(
                key.as_str(),
                CompareOp::Equal,
                revision,
            )),
            None => {
                let claim = keys::claim_key(&block.cidr);
                compares.push(Compare::create_revision(
                    claim.as_str(),
                    CompareOp::Equal,
                    0,
                ));
                compares.push(Compare::create_revision(key.as_str(), CompareOp::Equal, 0));
                written.push((claim, node.as_bytes().to_vec()));
                claims = true;
            }
        }
        written.push((key, block.to_json()));
    }
    if claims {
        // Blocks of another size could overlap the new one under other keys: the
        // decision holds only if the claims it saw are still all there are.
        compares
            .push(Compare::mod_revision(CLAIMS, CompareOp::Less, read.revision + 1).with_prefix());
    }
    let puts: Vec<TxnOp> = written
        .iter()
        .map(|(key, value)| TxnOp::put(key.as_str(), value.clone(), None))
        .collect();
    (Txn::new().when(compares).and_then(puts), written)
}

fn listing_txn() -> Txn {
    Txn::new().and_then(vec![
        TxnOp::get(NODES, Some(GetOptions::new().with_prefix())),
        TxnOp::get(CLAIMS, Some(GetOptions::new().with_prefix())),
    ])
}

fn parse_listing(response: &TxnResponse) -> Result<NodeView, IpamError> {
    let mut ranges = ranges(response).into_iter();
    let mut nodes = Vec::new();
    for kv in ranges.next().unwrap_or_default() {
        let node = NodeRecord::from_json(kv.value()).map_err(|reason| corrupt(&kv, reason))?;
        nodes.push(node);
    }
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let claims = parse_claims(&ranges.next().unwrap_or_default())?;
    Ok(NodeView { nodes, claims })
}

/// The key-values of each range read in a transaction, in order.
fn ranges(response: &TxnResponse) -> Vec<Vec<KeyValue>> {
    response
        .op_responses()
        .into_iter()
        .filter_map(|op| match op {
            TxnOpResponse::Get(mut get) => Some(get.take_kvs()),
            _ => None,
        })
        .collect()
}

fn parse_claims(kvs: &[KeyValue]) -> Result<Vec<Claim>, IpamError> {
    kvs.iter()
        .map(|kv| {
            keys::parse_claim(kv.key(), kv.value()).ok_or_else(|| {
                corrupt(
                    kv,
                    "not a claim: the key must be <network>_<prefix>, the value a node name".into(),
                )
            })
        })
        .collect()
}

fn parse_block(node: &str, kv: &KeyValue) -> Result<Block, IpamError> {
    let cidr = keys::parse_block_key(node, kv.key())
        .ok_or_else(|| corrupt(kv, "the key is not <node>/<network>_<prefix>".into()))?;
    let block = Block::from_json(kv.value()).map_err(|reason| corrupt(kv, reason))?;
    if block.cidr != cidr || block.node != node {
        return Err(corrupt(
            kv,
            format!(
                "it holds block {} of node {}, its key says {cidr} of {node}",
                block.cidr, block.node
            ),
        ));
    }
    Ok(block)
}

fn corrupt(kv: &KeyValue, reason: String) -> IpamError {
    IpamError::CorruptRecord {
        path: PathBuf::from(String::from_utf8_lossy(kv.key()).into_owned()),
        reason,
    }
}

/// A random pause growing with the attempts (0.5 ms .. 64 ms), so racing writers spread.
fn backoff(attempts: u32) -> Duration {
    let ceiling_us = 1000u64 << attempts.min(6);
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    Duration::from_micros(500 + random % ceiling_us)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_bounded() {
        for attempts in [1, 3, 6, 40] {
            let pause = backoff(attempts);
            assert!(pause >= Duration::from_micros(500), "{pause:?}");
            assert!(
                pause < Duration::from_micros(500 + (1000 << attempts.min(6))),
                "{pause:?}"
            );
        }
    }
}
